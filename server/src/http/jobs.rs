//! Job definition and job run endpoints (api.md "Job definitions", "Job runs").
use std::collections::HashMap;

use app::wire::{JobDefinition, JobDefinitionVersion, JobRun, JobWithRuns, RunStatus};
use axum::{
    Json,
    extract::{Extension, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    AppState,
    error::{ApiError, ApiJson},
    lists::{catalog_filter, list_page, version_paging},
};
use crate::{
    domain::{Problems, auth::Principal},
    store::RunFilter,
};

type ApiResult = Result<Response, ApiError>;

fn data<T: serde::Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(json!({"data": value}))).into_response()
}

/// `GET /api/jobs`
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    responses((status = 200, description = "All job definitions, by slug", body = Vec<JobDefinition>)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = catalog_filter(&q, None)?;
    Ok(list_page(s.jobs.page_jobs(&f).await?, &f.page))
}

/// `POST /api/jobs`: create (201) or replace with the same or a higher version (200).
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body(content = Object, description = "Job definition (api.md)"),
    responses((status = 201, body = JobDefinition), (status = 200, body = JobDefinition, description = "replaced"),
              (status = 400, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn create_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    let (job, created) = s.jobs.save_job(&body, &who).await?;
    Ok(data(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        job,
    ))
}

/// `GET /api/jobs/:slug`
#[utoipa::path(get, path = "/api/jobs/{slug}", tag = "jobs",
    params(("slug" = String, Path)), responses((status = 200, body = JobWithRuns), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_job(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    Ok(data(StatusCode::OK, s.jobs.job_with_runs(&slug).await?))
}

/// `PATCH /api/jobs/:slug`
#[utoipa::path(patch, path = "/api/jobs/{slug}", tag = "jobs", params(("slug" = String, Path)),
    request_body(content = Object), responses((status = 200, body = JobDefinition), (status = 400, body = app::wire::ErrorBody)))]
pub async fn patch_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(
        StatusCode::OK,
        s.jobs.patch_job(&slug, &body, &who).await?,
    ))
}

/// `DELETE /api/jobs/:slug`
#[utoipa::path(delete, path = "/api/jobs/{slug}", tag = "jobs", params(("slug" = String, Path)),
    responses((status = 204), (status = 404, body = app::wire::ErrorBody), (status = 409, body = app::wire::ErrorBody)))]
pub async fn delete_job(State(s): State<AppState>, Path(slug): Path<String>) -> ApiResult {
    s.jobs.delete_job(&slug).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/jobs/:slug/versions`
#[utoipa::path(get, path = "/api/jobs/{slug}/versions", tag = "jobs", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<JobDefinitionVersion>)))]
pub async fn job_versions(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let page = version_paging(&q)?;
    Ok(list_page(
        s.jobs.page_job_versions(&slug, &page).await?,
        &page,
    ))
}

/// `POST /api/jobs/:slug/run`: 202 with the new run; a repeated idempotency key answers with
/// the original run (also 202).
#[utoipa::path(post, path = "/api/jobs/{slug}/run", tag = "runs", params(("slug" = String, Path),
        ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "{parameters, timeoutMs?, maxAttempts?, context?, idempotencyKey?, delayMs?}"),
    responses((status = 202, body = JobRun), (status = 400, body = app::wire::ErrorBody), (status = 404, body = app::wire::ErrorBody)))]
pub async fn run_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> ApiResult {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let (run, _) = s.jobs.run_job(&slug, &body, key, &who).await?;
    Ok(data(StatusCode::ACCEPTED, run))
}

pub use super::lists::paging;

/// Parses list query parameters: limit, offset, cursor, status, q.
pub fn run_filter(q: &HashMap<String, String>) -> Result<RunFilter, ApiError> {
    let mut p = Problems::new();
    let mut f = RunFilter {
        limit: 20,
        ..Default::default()
    };
    for key in q.keys() {
        if !["limit", "offset", "cursor", "status", "q", "job"].contains(&key.as_str()) {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    (f.limit, f.offset, f.cursor) = paging(q, &mut p);
    if let Some(v) = q.get("status") {
        for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match RunStatus::parse(part) {
                Some(s) => f.statuses.push(s),
                None => p.add(
                    "/query/status",
                    format!(
                        "unknown status {part:?}; expected {}",
                        RunStatus::expected()
                    ),
                ),
            }
        }
    }
    f.q = q.get("q").cloned();
    p.finish(f).map_err(ApiError::invalid_request)
}

fn run_page(page: crate::store::RunPage, f: &RunFilter) -> Response {
    let items = crate::store::Page {
        items: page.runs,
        total: page.total,
        next_cursor: page.next_cursor,
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

/// `GET /api/jobs/:slug/runs`
#[utoipa::path(get, path = "/api/jobs/{slug}/runs", tag = "runs", params(("slug" = String, Path),
        ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query), ("cursor" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "comma-separated statuses"), ("q" = Option<String>, Query)),
    responses((status = 200, body = Vec<JobRun>)))]
pub async fn job_runs(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = run_filter(&q)?;
    let page = s.jobs.list_runs(Some(&slug), f.clone()).await?;
    Ok(run_page(page, &f))
}

/// `GET /api/job-runs`: runs of every job, newest first; `?job=slug` narrows to one job.
#[utoipa::path(get, path = "/api/job-runs", tag = "runs", params(
        ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query), ("cursor" = Option<String>, Query),
        ("status" = Option<String>, Query), ("q" = Option<String>, Query), ("job" = Option<String>, Query)),
    responses((status = 200, body = Vec<JobRun>)))]
pub async fn all_runs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = run_filter(&q)?;
    let page = s
        .jobs
        .list_runs(q.get("job").map(String::as_str), f.clone())
        .await?;
    Ok(run_page(page, &f))
}

/// `GET /api/job-runs/:id`
#[utoipa::path(get, path = "/api/job-runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = JobRun), (status = 404, body = app::wire::ErrorBody)))]
pub async fn get_run(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(data(StatusCode::OK, s.jobs.get_run(&id).await?))
}

/// `PATCH /api/job-runs/:id` with `{"status": "canceled"}`
#[utoipa::path(patch, path = "/api/job-runs/{id}", tag = "runs", params(("id" = String, Path)),
    request_body(content = Object, description = "{\"status\": \"canceled\"}"),
    responses((status = 200, body = JobRun), (status = 409, body = app::wire::ErrorBody)))]
pub async fn patch_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson,
) -> ApiResult {
    Ok(data(StatusCode::OK, s.jobs.patch_run(&id, &body).await?))
}

/// `POST /api/job-runs/:id/retry`: a new run with the same parameters.
#[utoipa::path(post, path = "/api/job-runs/{id}/retry", tag = "runs", params(("id" = String, Path)),
    responses((status = 202, body = JobRun), (status = 409, body = app::wire::ErrorBody)))]
pub async fn retry_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(data(
        StatusCode::ACCEPTED,
        s.jobs.retry_run(&id, &who).await?,
    ))
}
