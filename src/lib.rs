//! replscope: a transparent proxy for the Redis/Valkey replication link that explains, with evidence, why
//! replicas drop.
//!
//! This crate is layered as the project's design describes (README, "Architecture"):
//! - [`wire`]: sans-IO decoders, bytes in, events out;
//! - [`link`]: the per-connection story (phases, facts, timings) built from those events;
//! - [`observe`]: renderings of that story;
//! - [`time`]: time as a value, passed in by the driver;
//! - [`recording`]: reading recorded links and replaying them into the core.
//!
//! - [`fault`]: fault injection decided from the link model (bandwidth, latency, stall, cut, limit);
//! - [`proxy`]: the tokio driver, the only code that touches sockets and clocks;
//! - [`introspect`]: sans-IO questions to the master (its settings, its replicas' output buffers) and their answers;
//! - [`config`]: the configuration file of several routes, and the values flags and file share.
//!
//! `wire` and `link` touch no socket and read no clock.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod fault;
pub mod introspect;
pub mod label;
pub mod link;
pub mod observe;
pub mod proxy;
pub mod recording;
pub mod size;
pub mod time;
pub mod wire;
