//! Workflow definition and service registry endpoints (api.md "Workflow definitions",
//! "Services").
use std::collections::HashMap;

use app::wire::{
    Service, ServiceStatus, WorkflowDefinition, WorkflowDefinitionVersion, WorkflowRun,
    WorkflowRunStatus, WorkflowRunWithSteps, WorkflowWithRuns,
};
use axum::{
    Json,
    extract::{Extension, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    domain::{Problems, auth::Principal},
    store::WorkflowRunFilter,
};

use super::{
    AppState,
    error::{ApiError, ApiJson},
    lists::{catalog_filter, list_page, version_paging},
};

type ApiResult = Result<Response, ApiError>;

fn data<T: serde::Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(json!({"data": value}))).into_response()
}

/// `GET /api/workflows`
#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    responses((status = 200, description = "All workflow definitions, by slug", body = Vec<WorkflowDefinition>)))]
pub async fn list_workflows(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = catalog_filter(&q, None)?;
    Ok(list_page(s.workflows().page_workflows(&f).await?, &f.page))
}

/// `POST /api/workflows`: create (201) or replace with the same or a higher version (200); a
/// lower version is a 409. Steps may only name jobs and services that exist.
#[utoipa::path(post, path = "/api/workflows", tag = "workflows",
    request_body(content = Object, description = "Workflow definition (api.md)"),
    responses((status = 201, body = WorkflowDefinition), (status = 200, body = WorkflowDefinition, description = "replaced"),
              (status = 400, body = app::wire::ErrorBody, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = app::wire::ErrorBody)))]
pub async fn create_workflow(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    let (workflow, created) = s.workflows().save_workflow(&body, &who).await?;
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
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().patch_workflow(&slug, &body, &who).await?,
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
pub async fn workflow_versions(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let page = version_paging(&q)?;
    Ok(list_page(
        s.workflows().page_workflow_versions(&slug, &page).await?,
        &page,
    ))
}

/// `GET /api/services`
#[utoipa::path(get, path = "/api/services", tag = "services",
    responses((status = 200, description = "All registered services, by slug", body = Vec<Service>)))]
pub async fn list_services(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let statuses: Vec<&str> = ServiceStatus::ALL.iter().map(|s| s.as_str()).collect();
    let f = catalog_filter(&q, Some((&statuses, ServiceStatus::expected())))?;
    Ok(list_page(s.workflows().page_services(&f).await?, &f.page))
}

/// `POST /api/services`: registers a service (201). Re-posting an existing slug is a 409
/// (services have no versions; change one with `PATCH`).
#[utoipa::path(post, path = "/api/services", tag = "services",
    request_body(content = Object, description = "{slug, displayName, kind, baseUrl, healthPath?, headers?, metadata?, status?}"),
    responses((status = 201, body = Service),
              (status = 400, body = app::wire::ErrorBody, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = app::wire::ErrorBody, description = "the slug is taken")))]
pub async fn create_service(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::CREATED,
        s.workflows().create_service(&body, &who).await?,
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
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().patch_service(&slug, &body, &who).await?,
    ))
}

// ---- workflow runs ----

/// Parses workflow run list query parameters: limit, offset, cursor, status, q, workflow.
fn workflow_run_filter(q: &HashMap<String, String>) -> Result<WorkflowRunFilter, ApiError> {
    let mut p = Problems::new();
    let mut f = WorkflowRunFilter {
        limit: 20,
        ..Default::default()
    };
    for key in q.keys() {
        if !["limit", "offset", "cursor", "status", "q", "workflow"].contains(&key.as_str()) {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    (f.limit, f.offset, f.cursor) = super::lists::paging(q, &mut p);
    if let Some(v) = q.get("status") {
        for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match WorkflowRunStatus::parse(part) {
                Some(s) => f.statuses.push(s),
                None => p.add(
                    "/query/status",
                    format!(
                        "unknown status {part:?}; expected {}",
                        WorkflowRunStatus::expected()
                    ),
                ),
            }
        }
    }
    f.q = q.get("q").cloned();
    if let Some(v) = q.get("workflow").filter(|v| !v.is_empty()) {
        f.workflow_slug = Some(v.to_ascii_lowercase());
    }
    p.finish(f).map_err(ApiError::invalid_request)
}

fn run_list(
    runs: Vec<WorkflowRun>,
    total: u64,
    next: Option<String>,
    f: &WorkflowRunFilter,
) -> Response {
    let items = crate::store::Page {
        items: runs,
        total,
        next_cursor: next,
    };
    list_page(
        items,
        &crate::store::PageRequest {
            limit: f.limit,
            offset: f.offset,
            cursor: f.cursor.clone(),
        },
    )
}

/// `POST /api/workflows/:slug/run`: 202 with the new run; a repeated idempotency key answers
/// with the original run.
#[utoipa::path(post, path = "/api/workflows/{slug}/run", tag = "workflow-runs", params(("slug" = String, Path),
        ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "{parameters, triggeredBy?, trigger?, idempotencyKey?}"),
    responses((status = 202, body = WorkflowRun), (status = 400, body = app::wire::ErrorBody), (status = 404, body = app::wire::ErrorBody)))]
pub async fn run_workflow(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> ApiResult {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let (run, _) = s.workflows().run_workflow(&slug, &body, key, &who).await?;
    Ok(data(StatusCode::ACCEPTED, run))
}

/// `GET /api/workflows/:slug/runs`
#[utoipa::path(get, path = "/api/workflows/{slug}/runs", tag = "workflow-runs", params(("slug" = String, Path),
        ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query), ("cursor" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "comma-separated statuses")),
    responses((status = 200, body = Vec<WorkflowRun>), (status = 404, body = app::wire::ErrorBody)))]
pub async fn workflow_runs(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = workflow_run_filter(&q)?;
    let (runs, total, next) = s
        .workflows()
        .list_workflow_runs(Some(&slug), f.clone())
        .await?;
    Ok(run_list(runs, total, next, &f))
}

/// `GET /api/workflow-runs`: runs of every workflow (`?workflow=slug` narrows).
#[utoipa::path(get, path = "/api/workflow-runs", tag = "workflow-runs", params(
        ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query), ("cursor" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "comma-separated statuses"), ("workflow" = Option<String>, Query)),
    responses((status = 200, body = Vec<WorkflowRun>)))]
pub async fn all_workflow_runs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = workflow_run_filter(&q)?;
    let (runs, total, next) = s.workflows().list_workflow_runs(None, f.clone()).await?;
    Ok(run_list(runs, total, next, &f))
}

/// `GET /api/workflow-runs/:id`
#[utoipa::path(get, path = "/api/workflow-runs/{id}", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_workflow_run(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().get_workflow_run(&id).await?,
    ))
}

/// `GET /api/workflow-runs/:id/steps`
#[utoipa::path(get, path = "/api/workflow-runs/{id}/steps", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 200, body = WorkflowRunWithSteps), (status = 404, body = app::wire::ErrorBody)))]
pub async fn workflow_run_steps(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().workflow_run_steps(&id).await?,
    ))
}

/// `PATCH /api/workflow-runs/:id` `{"status": "canceled"}`: cancels the run and its
/// unfinished steps (409 once finished).
#[utoipa::path(patch, path = "/api/workflow-runs/{id}", tag = "workflow-runs", params(("id" = String, Path)),
    request_body(content = Object, description = "{\"status\": \"canceled\"}"),
    responses((status = 200, body = WorkflowRun), (status = 400, body = app::wire::ErrorBody),
              (status = 404, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn patch_workflow_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.workflows().patch_workflow_run(&id, &body).await?,
    ))
}

/// `POST /api/workflow-runs/:id/retry`: resumes a failed or canceled run from the steps that
/// did not succeed (same run id; 409 otherwise).
#[utoipa::path(post, path = "/api/workflow-runs/{id}/retry", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 202, body = WorkflowRun), (status = 404, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn retry_workflow_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(data(
        StatusCode::ACCEPTED,
        s.workflows().retry_workflow_run(&id, &who).await?,
    ))
}

/// `POST /api/workflow-runs/:id/rerun`: a new run with the same parameters.
#[utoipa::path(post, path = "/api/workflow-runs/{id}/rerun", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 202, body = WorkflowRun), (status = 404, body = app::wire::ErrorBody)))]
pub async fn rerun_workflow_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(data(
        StatusCode::ACCEPTED,
        s.workflows().rerun_workflow_run(&id, &who).await?,
    ))
}
