//! The application layer: one module per use case, behind the REST API, the pages and the
//! triggers. Nothing here knows HTTP or HTML; errors are [`AppError`], whose kinds (not found,
//! invalid, conflict, forbidden, unavailable) the edges map once each (`http::error`, `pages`).
pub mod audit;
pub mod definitions;
pub mod error;
pub mod jobs;
pub mod launcher;
pub mod logs;
pub mod orchestrator;
pub mod pages;
pub mod providers;
pub mod runs;
pub mod secrets;
pub mod seeds;
pub mod services;
pub mod summaries;
pub mod versioned;
pub mod workflows;

pub use error::{AppError, AppResult, ErrorKind};
pub(crate) use error::{refused_definition, refused_parameters};
pub use jobs::JobService;
pub use workflows::WorkflowService;
