//! Workflow definition and service registry endpoints (api.md "Workflow definitions",
//! "Services").
use app::wire::{Service, WorkflowDefinition, WorkflowDefinitionVersion, WorkflowWithRuns};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    AppState,
    error::{ApiError, ApiJson},
};

type ApiResult = Result<Response, ApiError>;

fn data<T: serde::Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(json!({"data": value}))).into_response()
}

/// `GET /api/workflows`
#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    responses((status = 200, description = "All workflow definitions, by slug", body = Vec<WorkflowDefinition>)))]
pub async fn list_workflows(State(s): State<AppState>) -> ApiResult {
    Ok(data(StatusCode::OK, s.workflows().list_workflows().await?))
}

/// `POST /api/workflows`: create (201) or replace with the same or a higher version (200); a
/// lower version is a 409. Steps may only name jobs and services that exist.
#[utoipa::path(post, path = "/api/workflows", tag = "workflows",
    request_body(content = Object, description = "Workflow definition (api.md)"),
    responses((status = 201, body = WorkflowDefinition), (status = 200, body = WorkflowDefinition, description = "replaced"),
              (status = 400, body = app::wire::ErrorBody, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = app::wire::ErrorBody)))]
pub async fn create_workflow(State(s): State<AppState>, ApiJson(body): ApiJson) -> ApiResult {
    let (workflow, created) = s.workflows().save_workflow(&body).await?;
    Ok(data(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        workflow,
    ))
}

/// `GET /api/workflows/:slug`
#[utoipa::path(get, path = "/api/workflows/{slug}", tag = "workflows", params(("slug" = String, Path)),
    responses((status = 200, body = WorkflowWithRuns), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_workflow(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().workflow_with_runs(&slug).await?,
    ))
}

/// `PATCH /api/workflows/:slug`: updates the given fields; the result is validated like a
/// full definition.
#[utoipa::path(patch, path = "/api/workflows/{slug}", tag = "workflows", params(("slug" = String, Path)),
    request_body(content = Object),
    responses((status = 200, body = WorkflowDefinition), (status = 400, body = app::wire::ErrorBody),
              (status = 404, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn patch_workflow(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().patch_workflow(&slug, &body).await?,
    ))
}

/// `DELETE /api/workflows/:slug`: the definition and its version history.
#[utoipa::path(delete, path = "/api/workflows/{slug}", tag = "workflows", params(("slug" = String, Path)),
    responses((status = 204), (status = 404, body = app::wire::ErrorBody)))]
pub async fn delete_workflow(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    s.workflows().delete_workflow(&slug).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/workflows/:slug/versions`: every stored version, newest first.
#[utoipa::path(get, path = "/api/workflows/{slug}/versions", tag = "workflows", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<WorkflowDefinitionVersion>), (status = 404, body = app::wire::ErrorBody)))]
pub async fn workflow_versions(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().workflow_versions(&slug).await?,
    ))
}

/// `GET /api/services`
#[utoipa::path(get, path = "/api/services", tag = "services",
    responses((status = 200, description = "All registered services, by slug", body = Vec<Service>)))]
pub async fn list_services(State(s): State<AppState>) -> ApiResult {
    Ok(data(StatusCode::OK, s.workflows().list_services().await?))
}

/// `POST /api/services`: registers a service (201). Re-posting an existing slug is a 409
/// (services have no versions; change one with `PATCH`).
#[utoipa::path(post, path = "/api/services", tag = "services",
    request_body(content = Object, description = "{slug, displayName, kind, baseUrl, healthPath?, headers?, metadata?, status?}"),
    responses((status = 201, body = Service),
              (status = 400, body = app::wire::ErrorBody, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = app::wire::ErrorBody, description = "the slug is taken")))]
pub async fn create_service(State(s): State<AppState>, ApiJson(body): ApiJson) -> ApiResult {
    Ok(data(
        StatusCode::CREATED,
        s.workflows().create_service(&body).await?,
    ))
}

/// `GET /api/services/:slug`
#[utoipa::path(get, path = "/api/services/{slug}", tag = "services", params(("slug" = String, Path)),
    responses((status = 200, body = Service), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_service(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().get_service(&slug).await?,
    ))
}

/// `PATCH /api/services/:slug`: updates the given fields (e.g. `{"status": "degraded"}`),
/// validated like a new registration.
#[utoipa::path(patch, path = "/api/services/{slug}", tag = "services", params(("slug" = String, Path)),
    request_body(content = Object),
    responses((status = 200, body = Service), (status = 400, body = app::wire::ErrorBody),
              (status = 404, body = app::wire::ErrorBody)))]
pub async fn patch_service(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().patch_service(&slug, &body).await?,
    ))
}
