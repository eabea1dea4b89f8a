//! Job definition and job run endpoints (api.md "Job definitions", "Job runs").
use std::collections::HashMap;

use axum::{
    Json,
    extract::{Extension, Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use wire::{
    CancelRequest, Data, ErrorResponse, JobDefinition, JobDefinitionInput, JobDefinitionVersion,
    JobRun, JobRunRequest, JobWithRuns, Page, RunStatus,
};

use super::{
    AppState, ListReply, Reply,
    error::{ApiError, ApiJson},
    lists::{catalog_filter, list_page, version_paging},
    openapi::{Paging, RunStatusFilter, Search, VersionPaging},
    reply,
};
use crate::application::runs::RunJob;
use domain::listing::RunFilter;
use domain::{Problems, auth::Principal};

/// `GET /api/jobs`: job definitions, newest first; `q` searches slugs and names.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(Paging, Search),
    responses((status = 200, description = "Job definitions, newest first", body = Page<JobDefinition>)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<JobDefinition> {
    let f = catalog_filter(&q, None)?;
    Ok(list_page(s.jobs.page_jobs(&f).await?, &f.page))
}

/// `POST /api/jobs`: create (201) or replace with the same or a higher version (200).
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body(content = JobDefinitionInput, description = "Job definition (api.md)"),
    responses((status = 201, body = Data<JobDefinition>, description = "created"),
              (status = 200, body = Data<JobDefinition>, description = "replaced (same or higher version)"),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 409, body = ErrorResponse, description = "conflict: the stored version is higher")))]
pub async fn create_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> Reply<JobDefinition> {
    let (job, created) = s.jobs.save_job(&body, &who).await?;
    Ok(reply(
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
    params(("slug" = String, Path)), responses((status = 200, body = Data<JobWithRuns>), (status = 404, body = ErrorResponse)))]
pub async fn get_job(State(s): State<AppState>, Path(slug): Path<String>) -> Reply<JobWithRuns> {
    Ok(reply(StatusCode::OK, s.jobs.job_with_runs(&slug).await?))
}

/// `PATCH /api/jobs/:slug`
#[utoipa::path(patch, path = "/api/jobs/{slug}", tag = "jobs", params(("slug" = String, Path)),
    request_body(content = Object, description = "Any fields of a job definition (JobDefinitionInput); the result is validated like a full definition"),
    responses((status = 200, body = Data<JobDefinition>),
              (status = 400, body = ErrorResponse, description = "invalid_definition: every problem, each with a JSON pointer"),
              (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn patch_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<JobDefinition> {
    Ok(reply(
        StatusCode::OK,
        s.jobs.patch_job(&slug, &body, &who).await?,
    ))
}

/// `DELETE /api/jobs/:slug`
#[utoipa::path(delete, path = "/api/jobs/{slug}", tag = "jobs", params(("slug" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: a workflow references the job, or it has pending or running runs")))]
pub async fn delete_job(
    State(s): State<AppState>,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.jobs.delete_job(&slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/jobs/:slug/versions`
#[utoipa::path(get, path = "/api/jobs/{slug}/versions", tag = "jobs", params(("slug" = String, Path), VersionPaging),
    responses((status = 200, body = Page<JobDefinitionVersion>, description = "stored versions, newest first"),
              (status = 404, body = ErrorResponse)))]
pub async fn job_versions(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<JobDefinitionVersion> {
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
    request_body(content = Option<JobRunRequest>, description = "Run options; an empty body runs with the defaults"),
    responses((status = 202, body = Data<JobRun>, description = "the new run (or, for a repeated idempotency key, the original one)"),
              (status = 400, body = ErrorResponse, description = "invalid_request (the body) or invalid_parameters (the parameters against the job's schema): every problem, each with a JSON pointer"),
              (status = 404, body = ErrorResponse)))]
pub async fn run_job(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Reply<JobRun> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let request = match domain::jobs::parse_run_request(&body, key) {
        Ok(request) => request,
        Err(problems) => {
            // Existence first: a run of an unknown job is a 404 whatever the body.
            s.jobs.get_job(&slug).await?;
            return Err(ApiError::invalid_request(problems));
        }
    };
    let (run, _) = s.jobs.run_job(RunJob { slug, request }, &who).await?;
    Ok(reply(StatusCode::ACCEPTED, run))
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

fn run_page(page: domain::listing::RunPage<JobRun>, f: &RunFilter) -> Json<Page<JobRun>> {
    let items = domain::listing::Page {
        items: page.runs,
        total: page.total,
        next_cursor: page.next_cursor,
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

/// `GET /api/jobs/:slug/runs`: the job's runs, newest first.
#[utoipa::path(get, path = "/api/jobs/{slug}/runs", tag = "runs", params(("slug" = String, Path),
        Paging, RunStatusFilter, Search),
    responses((status = 200, body = Page<JobRun>), (status = 404, body = ErrorResponse)))]
pub async fn job_runs(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<JobRun> {
    let f = run_filter(&q)?;
    let page = s.jobs.list_runs(Some(&slug), f.clone()).await?;
    Ok(run_page(page, &f))
}

/// `GET /api/job-runs`: runs of every job, newest first; `?job=slug` narrows to one job.
#[utoipa::path(get, path = "/api/job-runs", tag = "runs", params(
        Paging, RunStatusFilter, Search, ("job" = Option<String>, Query, description = "a job slug: only that job's runs")),
    responses((status = 200, body = Page<JobRun>),
              (status = 404, body = ErrorResponse, description = "not_found: no job has the slug given as `job`")))]
pub async fn all_runs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ListReply<JobRun> {
    let f = run_filter(&q)?;
    let page = s
        .jobs
        .list_runs(
            q.get("job").map(String::as_str).filter(|j| !j.is_empty()),
            f.clone(),
        )
        .await?;
    Ok(run_page(page, &f))
}

/// `GET /api/job-runs/:id`
#[utoipa::path(get, path = "/api/job-runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Data<JobRun>), (status = 404, body = ErrorResponse)))]
pub async fn get_run(State(s): State<AppState>, Path(id): Path<String>) -> Reply<JobRun> {
    Ok(reply(StatusCode::OK, s.jobs.get_run(&id).await?))
}

/// `PATCH /api/job-runs/:id` with `{"status": "canceled"}`
#[utoipa::path(patch, path = "/api/job-runs/{id}", tag = "runs", params(("id" = String, Path)),
    request_body(content = CancelRequest),
    responses((status = 200, body = Data<JobRun>), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: the run has finished")))]
pub async fn patch_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson,
) -> Reply<JobRun> {
    Ok(reply(StatusCode::OK, s.jobs.patch_run(&id, &body).await?))
}

/// `POST /api/job-runs/:id/retry`: a new run with the same parameters.
#[utoipa::path(post, path = "/api/job-runs/{id}/retry", tag = "runs", params(("id" = String, Path)),
    responses((status = 202, body = Data<JobRun>, description = "the new run"), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse, description = "conflict: the run is still pending or running")))]
pub async fn retry_run(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<JobRun> {
    Ok(reply(
        StatusCode::ACCEPTED,
        s.jobs.retry_run(&id, &who).await?,
    ))
}
