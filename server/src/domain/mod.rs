//! Domain rules as plain code: parsing and validating definitions and run requests, retry
//! delays, parameter merging. Architecture invariant: nothing here imports axum, sea-orm or
//! apalis; every function is testable without I/O.
pub mod auth;
pub mod authority;
pub mod hosts;
pub mod jobs;
pub mod problems;
pub mod retry;
pub mod secrets;
pub mod services;
pub mod template;
pub mod workflow;

pub use problems::Problems;
