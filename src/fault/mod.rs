//! `fault`: reproducing replica drops on purpose. Bandwidth caps, latency, stalls, cuts and data limits,
//! each in a direction, aimed at a route or a replica, and triggered by what the link is doing (a phase,
//! how far the RDB got, time in a phase). The decisions are made here from the link model and the time;
//! the driver only carries them out.

pub mod bucket;
pub mod delay;
pub mod engine;
pub mod spec;

pub use engine::{Cut, Fault, Faults, Plan, Touch};
pub use spec::{FaultDirection, FaultKind, FaultRequest, FaultSpec, Scope, SpecError, Trigger};
