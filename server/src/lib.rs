//! Switchyard server: API, event stream, engine, workers and CLI. See ARCHITECTURE.md.
pub mod alerts;
pub mod bench;
pub mod cli;
pub mod db;
pub mod definitions;
pub mod domain;
pub mod egress;
pub mod engine;
pub mod events;
pub mod handlers;
pub mod health;
pub mod http;
pub mod metrics;
pub mod orchestrator;
pub mod sandbox;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod triggers;
pub mod workflows;

pub use settings::Settings;
pub use startup::Application;
