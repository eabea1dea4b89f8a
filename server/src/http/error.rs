//! The HTTP layer's one error type and the JSON body extractor. Every failure answers in the
//! api.md format `{"error": {"code", "message", "details"}}` (`wire::ErrorResponse`, the
//! type the OpenAPI document describes); 5xx bodies are opaque (the cause is logged, not
//! leaked).
use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use wire::{ErrorBody, ErrorDetail, ErrorResponse};

use crate::application::AppError;
use domain::{Problems, problems};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_problems(
        status: StatusCode,
        code: &'static str,
        message: &str,
        problems: Problems,
    ) -> Self {
        let details = problems.into_vec();
        let message = match details.len() {
            1 => format!("{message}: {} {}", details[0].path, details[0].message),
            n => format!("{message}: {n} problems"),
        };
        ApiError {
            status,
            code,
            message,
            details,
        }
    }

    pub fn invalid_request(problems: Problems) -> Self {
        Self::with_problems(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid request",
            problems,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the server log",
        )
    }

    /// The default error for a bare status produced outside our handlers (405, 413, ...).
    pub fn for_status(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => "invalid_request",
            StatusCode::UNAUTHORIZED => "missing_token",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            s if s.is_client_error() => "invalid_request",
            _ => "internal_error",
        };
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(m) => ApiError::not_found(m),
            AppError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            AppError::InvalidDefinition(p) => ApiError::with_problems(
                StatusCode::BAD_REQUEST,
                "invalid_definition",
                "invalid definition",
                p,
            ),
            AppError::InvalidParameters(p) => ApiError::with_problems(
                StatusCode::BAD_REQUEST,
                "invalid_parameters",
                "invalid parameters",
                p,
            ),
            AppError::InvalidRequest(p) => ApiError::invalid_request(p),
            AppError::Unavailable(cause) => {
                tracing::error!(error = %cause, "a use case failed");
                ApiError::internal()
            }
        }
    }
}

/// A JSON request body. An empty body reads as `null` (endpoints where a body is optional
/// treat that as "no options"); anything else must be `application/json`, parse, and hold no
/// U+0000 in any string or key (a 400 `invalid_request` naming each by JSON pointer).
pub struct ApiJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_ascii_lowercase());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "payload_too_large", "request body too large")
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("could not read the body: {rejection}"),
                )
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJson(Value::Null));
        }
        let is_json = content_type.as_deref().is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let mut p = Problems::new();
            p.add(
                "",
                format!(
                    "malformed JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            );
            ApiError::with_problems(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "malformed JSON",
                p,
            )
        })?;
        // No database stores U+0000 (see `domain::problems::NUL_MESSAGE`): every string and
        // key holding it is refused here, before any use case sees the body.
        let mut p = Problems::new();
        problems::check_json("", &value, &mut p);
        p.finish(ApiJson(value)).map_err(ApiError::invalid_request)
    }
}
