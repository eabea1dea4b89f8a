//! Secret store endpoints (api.md "Secrets"). Responses carry metadata only, never a value.
use std::collections::HashMap;

use app::wire::{ListMeta, SecretMetadata};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    AppState,
    error::{ApiError, ApiJson},
    jobs::paging,
};
use crate::domain::Problems;

type ApiResult = Result<Response, ApiError>;

fn data<T: serde::Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(json!({"data": value}))).into_response()
}

/// `GET /api/secrets`: keys, current versions and timestamps, most recently changed first.
#[utoipa::path(get, path = "/api/secrets", tag = "secrets", params(
        ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query),
        ("q" = Option<String>, Query, description = "substring of the key")),
    responses((status = 200, body = Vec<SecretMetadata>, description = "metadata only, never values"),
              (status = 400, body = app::wire::ErrorBody)))]
pub async fn list_secrets(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let mut p = Problems::new();
    for key in q.keys() {
        if !["limit", "offset", "q"].contains(&key.as_str()) {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    let (limit, offset, _) = paging(&q, &mut p);
    p.finish(()).map_err(ApiError::invalid_request)?;
    let page = s
        .secrets
        .list(q.get("q").map(String::as_str), limit, offset)
        .await?;
    let meta = ListMeta {
        limit,
        offset,
        total: Some(page.total),
        next_cursor: None,
    };
    Ok((
        StatusCode::OK,
        Json(json!({"data": page.secrets, "meta": meta})),
    )
        .into_response())
}

/// `PUT /api/secrets/:key`: 201 for a new key, 200 for a new version of an existing one.
#[utoipa::path(put, path = "/api/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, description = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")),
    request_body(content = Object, description = "{\"value\": string (1 byte to 64 KiB), \"version\"?: integer greater than the current version (default: current + 1)}"),
    responses((status = 201, body = SecretMetadata, description = "created; metadata only"),
              (status = 200, body = SecretMetadata, description = "new version; metadata only"),
              (status = 400, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn put_secret(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    let (secret, created) = s.secrets.put(&key, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(data(status, secret))
}

/// `GET /api/secrets/:key`: metadata and versions, never the value.
#[utoipa::path(get, path = "/api/secrets/{key}", tag = "secrets", params(("key" = String, Path)),
    responses((status = 200, body = SecretMetadata), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_secret(State(s): State<AppState>, Path(key): Path<String>) -> ApiResult {
    Ok(data(StatusCode::OK, s.secrets.get(&key).await?))
}

/// `DELETE /api/secrets/:key`: the key with every version; 204 like the other deletes.
#[utoipa::path(delete, path = "/api/secrets/{key}", tag = "secrets", params(("key" = String, Path)),
    responses((status = 204), (status = 404, body = app::wire::ErrorBody)))]
pub async fn delete_secret(State(s): State<AppState>, Path(key): Path<String>) -> ApiResult {
    s.secrets.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
