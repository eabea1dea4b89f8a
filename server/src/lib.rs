//! Switchyard server: HTTP API and pages, storage, the engine and the composition root. See
//! ARCHITECTURE.md for the code map.
pub mod alerts;
pub mod application;
pub mod db;
pub mod detach;
pub mod egress;
pub mod engine;
pub mod entrypoints;
pub mod events;
pub mod health;
pub mod http;
pub mod metrics;
pub mod retention;
pub mod sandbox;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod triggers;

pub use settings::Settings;
pub use startup::Application;
