//! What goes wrong in a use case. The edges map it once each: `http::error` to statuses and
//! the api.md error body, `application::pages` to what a page shows ([`ErrorKind`]). A failure
//! of the database (or of any dependency) is [`AppError::Unavailable`]: its cause is logged
//! where it is mapped and never shown, so database text cannot reach a client or a browser.
use std::fmt;

use domain::{Problems, authority::Refusal};

/// What went wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid definition")]
    InvalidDefinition(Problems),
    #[error("invalid parameters")]
    InvalidParameters(Problems),
    #[error("invalid request")]
    InvalidRequest(Problems),
    /// The caller's token lacks a scope the request's content needs (`domain::authority`).
    #[error("{0}")]
    Forbidden(String),
    /// A dependency failed (the database did not answer, a stored value could not be read).
    #[error("the service is unavailable")]
    Unavailable(#[source] Cause),
}

/// What kind of failure an error is, for the pages (they show each differently).
pub use wire::ErrorKind;

impl AppError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::NotFound(_) => ErrorKind::NotFound,
            AppError::Conflict(_) => ErrorKind::Conflict,
            AppError::InvalidDefinition(_)
            | AppError::InvalidParameters(_)
            | AppError::InvalidRequest(_) => ErrorKind::Invalid,
            AppError::Forbidden(_) => ErrorKind::Forbidden,
            AppError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }

    /// A dependency's failure; `cause` is for the log only.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
        AppError::Unavailable(Cause(cause.into()))
    }
}

/// The cause of an [`AppError::Unavailable`]: logged, never shown.
pub struct Cause(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> AppError {
        AppError::unavailable(e)
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// The run request's refusal as an error: definition-only problems are invalid parameters.
pub(crate) fn refused_parameters(r: Refusal) -> AppError {
    match r {
        Refusal::Invalid(p) => AppError::InvalidParameters(p),
        Refusal::Forbidden(m) => AppError::Forbidden(m),
    }
}

/// A definition write's refusal as an error.
pub(crate) fn refused_definition(r: Refusal) -> AppError {
    match r {
        Refusal::Invalid(p) => AppError::InvalidDefinition(p),
        Refusal::Forbidden(m) => AppError::Forbidden(m),
    }
}
