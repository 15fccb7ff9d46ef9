//! `observe`: renders the link model for people and programs (metrics, logs, text, JSON). Reads links,
//! never changes them.

pub mod api;
pub mod explain;
pub mod log;
pub mod metrics;
pub mod table;
pub mod text;
