//! Switchyard's core: domain rules as plain code. Parsing and validating definitions and run
//! requests, templates, retry delays, parameter merging, the workflow graph and the planner.
//! The crate boundary is the invariant: this crate cannot import tokio, sea-orm, axum, apalis
//! or leptos (they are not among its dependencies), and every function is testable without I/O.
//!
//! Without the default `rules` feature only what the pages need compiles (the graph, the value
//! types, problems, templates): that part builds for wasm32 too.
pub mod audit;
pub mod auth;
pub mod graph;
pub mod hosts;
pub mod listing;
pub mod logs;
pub mod problems;
pub mod retry;
pub mod template;
pub mod values;

#[cfg(feature = "rules")]
pub mod authority;
#[cfg(feature = "rules")]
pub mod jobs;
#[cfg(feature = "rules")]
pub mod requests;
#[cfg(feature = "rules")]
pub mod secrets;
#[cfg(feature = "rules")]
pub mod services;
#[cfg(feature = "rules")]
pub mod workflow;

pub use problems::Problems;
