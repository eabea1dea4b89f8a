//! HTTP: the REST API under `/api`, the event stream, the OpenAPI document and the pages.
//! Architecture invariant: handlers only extract, call the service and map the result.
pub mod assets;
pub mod auth;
pub mod error;
pub mod input;
pub mod jobs;
pub mod limits;
pub mod lists;
pub mod metrics;
pub mod openapi;
pub mod secrets;
pub mod stream;
pub mod workflows;

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRef, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use leptos::prelude::LeptosOptions;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::application::JobService;
use crate::application::workflows::WorkflowService;
use crate::{db::Database, events::EventBus};
use domain::hosts::HostPolicy;
use error::ApiError;
use wire::{Data, ErrorResponse, Health, Page, Readiness};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub jobs: JobService,
    pub bus: EventBus,
    pub db: Database,
    pub leptos: LeptosOptions,
    /// Operator tokens (hashes) and read protection, for the auth middleware.
    pub auth: std::sync::Arc<crate::settings::AuthSettings>,
    /// The secret store (`/api/secrets`).
    pub secrets: crate::application::secrets::SecretService,
    pub metrics: crate::metrics::Metrics,
    /// Sign-in sessions and the sign-in rate limit.
    pub sessions: crate::sessions::Sessions,
    /// Connection limits, list offsets and the request timeout (`http::limits`).
    pub limits: std::sync::Arc<limits::Limits>,
}

impl AppState {
    /// Workflow definitions and services, over the same store and bus as the jobs.
    pub fn workflows(&self) -> WorkflowService {
        self.jobs.workflow_service()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos.clone()
    }
}

/// A `{"data": T}` answer with the status its handler chose (200, 201, 202). Handlers return
/// this type, and their OpenAPI annotation names the same `Data<T>`.
pub type Reply<T> = Result<(StatusCode, Json<Data<T>>), ApiError>;

/// A `{"data": [T], "meta": ListMeta}` answer (200).
pub type ListReply<T> = Result<Json<Page<T>>, ApiError>;

/// `{"data": value}` with `status`.
pub fn reply<T>(status: StatusCode, value: T) -> (StatusCode, Json<Data<T>>) {
    (status, Json(Data::new(value)))
}

/// `GET /api/health`: the process is up.
#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, body = Data<Health>)))]
pub async fn health() -> Reply<Health> {
    Ok(reply(
        StatusCode::OK,
        Health {
            status: "ok".into(),
        },
    ))
}

/// `GET /api/ready`: the database answers and migrations are applied.
#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, body = Data<Readiness>),
              (status = 503, body = ErrorResponse, description = "not_ready: the database does not answer or migrations are missing; or timeout (the request timeout)")))]
pub async fn ready(State(s): State<AppState>) -> Reply<Readiness> {
    match s.db.ready().await {
        Ok(()) => Ok(reply(
            StatusCode::OK,
            Readiness {
                status: "ready".into(),
                database: if s.db.is_postgres() {
                    "postgres"
                } else {
                    "sqlite"
                }
                .into(),
            },
        )),
        Err(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            why,
        )),
    }
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

/// Turns any bare error response under `/api` (405 from the router, 413 from a layer, ...)
/// into the API's JSON error format.
async fn json_errors(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api");
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_api && (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut out = ApiError::for_status(status).into_response();
        if let Some(allow) = res.headers().get(header::ALLOW) {
            out.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return out;
    }
    res
}

/// Refuses a request whose `Host` (and URI authority, for HTTP/2 or an absolute-form target)
/// this server does not answer to, before any handler, page, stream or static file (DNS
/// rebinding; see `domain::hosts`). A missing or unparsable Host is refused too.
async fn check_host(
    State(hosts): State<std::sync::Arc<HostPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers().get_all(header::HOST);
    let mut named: Vec<&str> = Vec::new();
    let mut ok = true;
    for value in headers {
        match value.to_str() {
            Ok(v) => named.push(v),
            Err(_) => ok = false,
        }
    }
    if let Some(authority) = req.uri().authority() {
        named.push(authority.as_str());
    }
    ok &= !named.is_empty() && named.iter().all(|h| hosts.allows(h));
    if ok {
        return next.run(req).await;
    }
    let shown: String = named
        .first()
        .copied()
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    tracing::info!(host = %shown, path = %req.uri().path(), "request for a host this server does not answer to refused");
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "this server does not answer to Host {shown:?}: it answers to localhost, loopback addresses and the address it is bound to; to reach it under another name, add that name to --allowed-hosts (SWITCHYARD_ALLOWED_HOSTS, comma-separated) or set --public-url (SWITCHYARD_PUBLIC_URL)"
        ),
    )
    .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// The pages' routes, generated once per process. Generating them renders the app with
/// resource loading suppressed by a process-global flag in leptos_server, and a page render
/// whose resource is first polled meanwhile never finishes (leptos-rs/leptos#4773): a second
/// app built in the same process (tests, the bench) could hang a page request of the first.
fn route_list() -> Vec<leptos_axum::AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> =
        std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(app::App)).clone()
}

/// The whole HTTP surface. `hosts`: the `Host` names requests may carry (checked first).
pub fn router(state: AppState, max_body_bytes: usize, hosts: HostPolicy) -> Router {
    let site = site_routes(&state, api_routes(&state));
    with_layers(site, &state, max_body_bytes, hosts).with_state(state)
}

/// The REST API (nested under `/api`), with its fallback and the layers of the API alone.
fn api_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(operation_routes())
        .merge(job_routes())
        .merge(workflow_routes())
        .merge(service_routes())
        .merge(secret_routes())
        .fallback(api_not_found)
        // Lists page by cursor past the offset bound.
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            limits::bound_offset,
        ))
        // U+0000 in a path parameter or the query: a 400 before any handler reads it.
        .layer(middleware::from_fn(input::refuse_nul))
}

/// The API's operations routes: health, readiness, OpenAPI document, metrics, the event
/// stream and the audit log.
fn operation_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::api_metrics))
        .route("/events", get(stream::events))
        .route("/audit-logs", get(auth::list_audit_logs))
}

/// The API's routes of jobs and their runs.
fn job_routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(jobs::list_jobs).post(jobs::create_job))
        .route(
            "/jobs/{slug}",
            get(jobs::get_job)
                .patch(jobs::patch_job)
                .delete(jobs::delete_job),
        )
        .route("/jobs/{slug}/versions", get(jobs::job_versions))
        .route("/jobs/{slug}/run", post(jobs::run_job))
        .route("/jobs/{slug}/runs", get(jobs::job_runs))
        .route("/job-runs", get(jobs::all_runs))
        .route("/job-runs/{id}", get(jobs::get_run).patch(jobs::patch_run))
        .route("/job-runs/{id}/logs", get(stream::logs))
        .route("/job-runs/{id}/retry", post(jobs::retry_run))
}

/// The API's routes of workflows and their runs.
fn workflow_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/workflows",
            get(workflows::list_workflows).post(workflows::create_workflow),
        )
        .route(
            "/workflows/{slug}",
            get(workflows::get_workflow)
                .patch(workflows::patch_workflow)
                .delete(workflows::delete_workflow),
        )
        .route(
            "/workflows/{slug}/versions",
            get(workflows::workflow_versions),
        )
        .route("/workflows/{slug}/run", post(workflows::run_workflow))
        .route("/workflows/{slug}/runs", get(workflows::workflow_runs))
        .route("/workflow-runs", get(workflows::all_workflow_runs))
        .route(
            "/workflow-runs/{id}",
            get(workflows::get_workflow_run).patch(workflows::patch_workflow_run),
        )
        .route(
            "/workflow-runs/{id}/steps",
            get(workflows::workflow_run_steps),
        )
        .route(
            "/workflow-runs/{id}/retry",
            post(workflows::retry_workflow_run),
        )
        .route(
            "/workflow-runs/{id}/rerun",
            post(workflows::rerun_workflow_run),
        )
}

/// The API's routes of services.
fn service_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/services",
            get(workflows::list_services).post(workflows::create_service),
        )
        .route(
            "/services/{slug}",
            get(workflows::get_service).patch(workflows::patch_service),
        )
}

/// The API's routes of secrets.
fn secret_routes() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(secrets::list_secrets))
        .route(
            "/secrets/{key}",
            get(secrets::get_secret)
                .put(secrets::put_secret)
                .delete(secrets::delete_secret),
        )
}

/// Everything the server answers, unlayered: `api` under `/api`, the static bundle under
/// `/pkg`, the pages (and their server functions) with their fallback, and sign-in/out.
fn site_routes(state: &AppState, api: Router<AppState>) -> Router<AppState> {
    let leptos_options = state.leptos.clone();
    let metrics_page = app::metrics_page::MetricsHandle(std::sync::Arc::new(state.metrics.clone()));
    let routes = route_list();
    let site_root = std::path::PathBuf::from(leptos_options.site_root.as_ref());
    Router::new()
        .nest("/api", api)
        .nest("/pkg", assets::pkg_routes(&site_root))
        .leptos_routes_with_context(
            state,
            routes,
            {
                // Pages and their server functions read through the same service as the API.
                let backend = app::data::BackendHandle(std::sync::Arc::new(state.jobs.clone()));
                move || {
                    leptos::prelude::provide_context(backend.clone());
                    leptos::prelude::provide_context(metrics_page.clone());
                }
            },
            {
                let options = leptos_options.clone();
                move || app::shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ))
        // Sign-in for the pages, and the one auth middleware in front of everything.
        .route("/auth/sign-in", post(auth::sign_in))
        .route("/auth/sign-out", post(auth::sign_out))
}

/// `site` wrapped in the layers every request passes, innermost first: the metrics scrape,
/// authorization, JSON errors, the body limit, panics, the request timeout, the `Host` check,
/// connection closing, compression and tracing.
fn with_layers(
    site: Router<AppState>,
    state: &AppState,
    max_body_bytes: usize,
    hosts: HostPolicy,
) -> Router<AppState> {
    site
        // Inside `authorize`: the scrape endpoint is a read like any other.
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::prometheus_unless_html,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        // Every request must start its response in time (streams then go on).
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            limits::request_timeout,
        ))
        // Outermost but for tracing: a request for a foreign Host reaches nothing else.
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(hosts),
            check_host,
        ))
        // Around every answer, early refusals included: one that leaves the request's body
        // unread ends its connection openly (`Connection: close`).
        .layer(middleware::from_fn(input::close_unless_body_read))
        .layer(assets::compression())
        .layer(TraceLayer::new_for_http())
}
