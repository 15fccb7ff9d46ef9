//! `observe`: renders the link model for people and programs. Reads links, never changes them.

pub mod text;
