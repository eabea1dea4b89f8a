//! Secret store endpoints (api.md "Secrets"). Responses carry metadata only, never a value.
use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use wire::{Data, ErrorResponse, ListMeta, Page, SecretInput, SecretMetadata};

use super::{
    AppState, ListReply, Reply,
    error::{ApiError, ApiJson},
    jobs::paging,
    openapi::{OffsetPaging, Search},
    reply,
};
use domain::Problems;

/// `GET /api/secrets`: keys, current versions and timestamps, most recently changed first.
#[utoipa::path(get, path = "/api/secrets", tag = "secrets", params(OffsetPaging, Search),
    responses((status = 200, body = Page<SecretMetadata>, description = "metadata only, never values")))]
pub async fn list_secrets(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<SecretMetadata> {
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
    Ok(Json(Page {
        data: page.secrets,
        meta,
    }))
}

/// `PUT /api/secrets/:key`: 201 for a new key, 200 for a new version of an existing one.
#[utoipa::path(put, path = "/api/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")),
    request_body(content = SecretInput),
    responses((status = 201, body = Data<SecretMetadata>, description = "created; metadata only"),
              (status = 200, body = Data<SecretMetadata>, description = "new version; metadata only"),
              (status = 400, body = ErrorResponse, description = "invalid_request: the key (`/key`) or the body, every problem with its pointer"),
              (status = 409, body = ErrorResponse, description = "conflict: the version is not above the current one")))]
pub async fn put_secret(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<SecretMetadata> {
    let (secret, created) = s.secrets.put(&key, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, secret))
}

/// `GET /api/secrets/:key`: metadata and versions, never the value.
#[utoipa::path(get, path = "/api/secrets/{key}", tag = "secrets", params(("key" = String, Path)),
    responses((status = 200, body = Data<SecretMetadata>), (status = 404, body = ErrorResponse)))]
pub async fn get_secret(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Reply<SecretMetadata> {
    Ok(reply(StatusCode::OK, s.secrets.get(&key).await?))
}

/// `DELETE /api/secrets/:key`: the key with every version; 204 like the other deletes.
#[utoipa::path(delete, path = "/api/secrets/{key}", tag = "secrets", params(("key" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorResponse)))]
pub async fn delete_secret(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.secrets.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}
