//! `observe`: renders the link model for people and programs (metrics, logs, text, JSON). Reads links,
//! never changes them; the [`observer::Observer`] reacts to the model's changes as they are drained.

pub mod api;
pub mod explain;
pub mod log;
pub mod metrics;
pub mod observer;
pub mod process;
pub mod series;
pub mod table;
pub mod text;
pub mod words;
