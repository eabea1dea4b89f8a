//! Workflow definition and service registry endpoints (api.md "Workflow definitions",
//! "Services").
use std::collections::HashMap;

use axum::{
    Json,
    extract::{Extension, Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use wire::{
    CancelRequest, Data, ErrorResponse, Page, Service, ServiceInput, ServiceStatus,
    WorkflowDefinition, WorkflowDefinitionInput, WorkflowDefinitionVersion, WorkflowRun,
    WorkflowRunRequest, WorkflowRunStatus, WorkflowRunWithSteps, WorkflowWithRuns,
};

use crate::application::{orchestrator::parse_workflow_run_request, workflows::StartWorkflowRun};
use domain::listing::WorkflowRunFilter;
use domain::{Problems, auth::Principal};

use super::{
    AppState, ListReply, Reply,
    error::{ApiError, ApiJson},
    lists::{catalog_filter, list_page, version_paging},
    openapi::{Paging, Search, ServiceStatusFilter, VersionPaging, WorkflowRunStatusFilter},
    reply,
};

/// `GET /api/workflows`: workflow definitions, newest first; `q` searches slugs and names.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows", params(Paging, Search),
    responses((status = 200, description = "Workflow definitions, newest first", body = Page<WorkflowDefinition>)))]
pub async fn list_workflows(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<WorkflowDefinition> {
    let f = catalog_filter(&q, None)?;
    Ok(list_page(s.workflows().page_workflows(&f).await?, &f.page))
}

/// `POST /api/workflows`: create (201) or replace with the same or a higher version (200); a
/// lower version is a 409. Steps may only name jobs and services that exist.
#[utoipa::path(post, path = "/api/workflows", tag = "workflows",
    request_body(content = WorkflowDefinitionInput, description = "Workflow definition (api.md)"),
    responses((status = 201, body = Data<WorkflowDefinition>, description = "created"),
              (status = 200, body = Data<WorkflowDefinition>, description = "replaced (same or higher version)"),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = ErrorResponse, description = "conflict: the stored version is higher")))]
pub async fn create_workflow(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> Reply<WorkflowDefinition> {
    let (workflow, created) = s.workflows().save_workflow(&body, &who).await?;
    Ok(reply(
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
    responses((status = 200, body = Data<WorkflowWithRuns>), (status = 404, body = ErrorResponse)))]
pub async fn get_workflow(
    State(s): State<AppState>,
    Path(slug): Path<String>,
) -> Reply<WorkflowWithRuns> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().workflow_with_runs(&slug).await?,
    ))
}

/// `PATCH /api/workflows/:slug`: updates the given fields; the result is validated like a
/// full definition.
#[utoipa::path(patch, path = "/api/workflows/{slug}", tag = "workflows", params(("slug" = String, Path)),
    request_body(content = Object, description = "Any fields of a workflow definition (WorkflowDefinitionInput)"),
    responses((status = 200, body = Data<WorkflowDefinition>),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn patch_workflow(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<WorkflowDefinition> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().patch_workflow(&slug, &body, &who).await?,
    ))
}

/// `DELETE /api/workflows/:slug`: the definition and its version history.
#[utoipa::path(delete, path = "/api/workflows/{slug}", tag = "workflows", params(("slug" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: the workflow has unfinished runs")))]
pub async fn delete_workflow(
    State(s): State<AppState>,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.workflows().delete_workflow(&slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/workflows/:slug/versions`: every stored version, newest first.
#[utoipa::path(get, path = "/api/workflows/{slug}/versions", tag = "workflows", params(("slug" = String, Path), VersionPaging),
    responses((status = 200, body = Page<WorkflowDefinitionVersion>), (status = 404, body = ErrorResponse)))]
pub async fn workflow_versions(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<WorkflowDefinitionVersion> {
    let page = version_paging(&q)?;
    Ok(list_page(
        s.workflows().page_workflow_versions(&slug, &page).await?,
        &page,
    ))
}

/// `GET /api/services`: registered services, newest first; `q` searches slugs and display
/// names, `status` narrows to health statuses.
#[utoipa::path(get, path = "/api/services", tag = "services", params(Paging, Search, ServiceStatusFilter),
    responses((status = 200, description = "Registered services, newest first", body = Page<Service>)))]
pub async fn list_services(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<Service> {
    let statuses: Vec<&str> = ServiceStatus::ALL.iter().map(|s| s.as_str()).collect();
    let f = catalog_filter(&q, Some((&statuses, ServiceStatus::expected())))?;
    Ok(list_page(s.workflows().page_services(&f).await?, &f.page))
}

/// `POST /api/services`: registers a service (201). Re-posting an existing slug is a 409
/// (services have no versions; change one with `PATCH`).
#[utoipa::path(post, path = "/api/services", tag = "services",
    request_body(content = ServiceInput),
    responses((status = 201, body = Data<Service>),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = ErrorResponse, description = "the slug is taken")))]
pub async fn create_service(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> Reply<Service> {
    Ok(reply(
        StatusCode::CREATED,
        s.workflows().create_service(&body, &who).await?,
    ))
}

/// `GET /api/services/:slug`
#[utoipa::path(get, path = "/api/services/{slug}", tag = "services", params(("slug" = String, Path)),
    responses((status = 200, body = Data<Service>), (status = 404, body = ErrorResponse)))]
pub async fn get_service(State(s): State<AppState>, Path(slug): Path<String>) -> Reply<Service> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().get_service(&slug).await?,
    ))
}

/// `PATCH /api/services/:slug`: updates the given fields (e.g. `{"status": "degraded"}`),
/// validated like a new registration.
#[utoipa::path(patch, path = "/api/services/{slug}", tag = "services", params(("slug" = String, Path)),
    request_body(content = Object, description = "Any fields of a service registration (ServiceInput)"),
    responses((status = 200, body = Data<Service>),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 404, body = ErrorResponse)))]
pub async fn patch_service(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<Service> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().patch_service(&slug, &body, &who).await?,
    ))
}

// ---- workflow runs ----

/// Parses workflow run list query parameters: limit, offset, cursor, status.
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
) -> Json<Page<WorkflowRun>> {
    let items = domain::listing::Page {
        items: runs,
        total,
        next_cursor: next,
    };
    list_page(
        items,
        &domain::listing::PageRequest {
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
    request_body(content = Option<WorkflowRunRequest>, description = "Run options; an empty body runs with the defaults"),
    responses((status = 202, body = Data<WorkflowRun>, description = "the new run (or, for a repeated idempotency key, the original one)"),
              (status = 400, body = ErrorResponse, description = "invalid_request (the body) or invalid_parameters (the parameters against the workflow's schema): every problem, each with a JSON pointer"),
              (status = 404, body = ErrorResponse)))]
pub async fn run_workflow(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Reply<WorkflowRun> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let service = s.workflows();
    let request = match parse_workflow_run_request(&body, key) {
        Ok(request) => request,
        Err(problems) => {
            // Existence first: a run of an unknown workflow is a 404 whatever the body.
            service.get_workflow(&slug).await?;
            return Err(ApiError::invalid_request(problems));
        }
    };
    let (run, _) = service
        .run_workflow(StartWorkflowRun { slug, request }, &who)
        .await?;
    Ok(reply(StatusCode::ACCEPTED, run))
}

/// `GET /api/workflows/:slug/runs`: the workflow's runs, newest first.
#[utoipa::path(get, path = "/api/workflows/{slug}/runs", tag = "workflow-runs", params(("slug" = String, Path),
        Paging, WorkflowRunStatusFilter, Search),
    responses((status = 200, body = Page<WorkflowRun>), (status = 404, body = ErrorResponse)))]
pub async fn workflow_runs(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<WorkflowRun> {
    let f = workflow_run_filter(&q)?;
    let (runs, total, next) = s
        .workflows()
        .list_workflow_runs(Some(&slug), f.clone())
        .await?;
    Ok(run_list(runs, total, next, &f))
}

/// `GET /api/workflow-runs`: runs of every workflow (`?workflow=slug` narrows).
#[utoipa::path(get, path = "/api/workflow-runs", tag = "workflow-runs", params(
        Paging, WorkflowRunStatusFilter, Search, ("workflow" = Option<String>, Query, description = "a workflow slug")),
    responses((status = 200, body = Page<WorkflowRun>)))]
pub async fn all_workflow_runs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<WorkflowRun> {
    let f = workflow_run_filter(&q)?;
    let (runs, total, next) = s.workflows().list_workflow_runs(None, f.clone()).await?;
    Ok(run_list(runs, total, next, &f))
}

/// `GET /api/workflow-runs/:id`
#[utoipa::path(get, path = "/api/workflow-runs/{id}", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 200, body = Data<WorkflowRun>), (status = 404, body = ErrorResponse)))]
pub async fn get_workflow_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Reply<WorkflowRun> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().get_workflow_run(&id).await?,
    ))
}

/// `GET /api/workflow-runs/:id/steps`
#[utoipa::path(get, path = "/api/workflow-runs/{id}/steps", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 200, body = Data<WorkflowRunWithSteps>), (status = 404, body = ErrorResponse)))]
pub async fn workflow_run_steps(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Reply<WorkflowRunWithSteps> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().workflow_run_steps(&id).await?,
    ))
}

/// `PATCH /api/workflow-runs/:id` `{"status": "canceled"}`: cancels the run and its
/// unfinished steps (409 once finished).
#[utoipa::path(patch, path = "/api/workflow-runs/{id}", tag = "workflow-runs", params(("id" = String, Path)),
    request_body(content = CancelRequest),
    responses((status = 200, body = Data<WorkflowRun>), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: the run has finished")))]
pub async fn patch_workflow_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<WorkflowRun> {
    Ok(reply(
        StatusCode::OK,
        s.workflows().patch_workflow_run(&id, &body).await?,
    ))
}

/// `POST /api/workflow-runs/:id/retry`: resumes a failed or canceled run from the steps that
/// did not succeed (same run id; 409 otherwise).
#[utoipa::path(post, path = "/api/workflow-runs/{id}/retry", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 202, body = Data<WorkflowRun>, description = "the resumed run"), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: the run is neither failed nor canceled")))]
pub async fn retry_workflow_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<WorkflowRun> {
    Ok(reply(
        StatusCode::ACCEPTED,
        s.workflows().retry_workflow_run(&id, &who).await?,
    ))
}

/// `POST /api/workflow-runs/:id/rerun`: a new run with the same parameters.
#[utoipa::path(post, path = "/api/workflow-runs/{id}/rerun", tag = "workflow-runs", params(("id" = String, Path)),
    responses((status = 202, body = Data<WorkflowRun>, description = "the new run"), (status = 404, body = ErrorResponse)))]
pub async fn rerun_workflow_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<WorkflowRun> {
    Ok(reply(
        StatusCode::ACCEPTED,
        s.workflows().rerun_workflow_run(&id, &who).await?,
    ))
}
