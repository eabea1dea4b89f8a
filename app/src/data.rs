//! Server functions the pages read through. On the server they call the `Backend` the server
//! provides in the Leptos context (the same service layer as the REST API); in the browser
//! they are HTTP calls to `/_sf/...` (kept out of `/api`, which is the REST API's).
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use wire::Viewer;
use wire::{
    Dashboard, ErrorKind, JobDetail, JobRun, JobSummary, LaunchOutcome, LogTail, PageError,
    RunList, Service, ServiceDetail, WorkflowLaunchOutcome, WorkflowPageData, WorkflowRun,
    WorkflowRunWithSteps, WorkflowSummary,
};

/// What the pages need from the server; implemented by the server's job service.
#[cfg(feature = "ssr")]
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn job_summaries(&self) -> Result<Vec<JobSummary>, PageError>;
    /// The service registry, by slug.
    async fn services(&self) -> Result<Vec<Service>, PageError>;
    /// `/services/:slug`: the service with its header values masked, and the workflows whose
    /// steps call it.
    async fn service_detail(&self, slug: &str) -> Result<ServiceDetail, PageError>;
    /// Every workflow definition, by slug, with its last run and run counts.
    async fn workflow_summaries(&self) -> Result<Vec<WorkflowSummary>, PageError>;
    /// Every job's slug, sorted (for the run list's job filter).
    async fn job_slugs(&self) -> Result<Vec<String>, PageError>;
    /// Newest runs first, filtered, one keyset page.
    async fn list_runs(&self, query: wire::RunQuery) -> Result<RunList, PageError>;
    async fn get_run(&self, id: &str) -> Result<JobRun, PageError>;
    /// The last lines of a run's log (at most `lines` lines and [`LOG_TAIL_BYTES`] bytes).
    async fn run_log_tail(&self, id: &str, lines: u64) -> Result<LogTail, PageError>;
    async fn cancel_run(&self, id: &str) -> Result<JobRun, PageError>;
    /// A new run with the same parameters; `viewer` must be allowed to give them.
    async fn retry_run(&self, viewer: &Viewer, id: &str) -> Result<JobRun, PageError>;
    async fn job_detail(&self, slug: &str) -> Result<JobDetail, PageError>;
    async fn dashboard(&self) -> Result<Dashboard, PageError>;
    /// Starts a run from the launch form, as `viewer` (whose scopes decide what parameters
    /// it may give); invalid parameters come back as problems.
    async fn launch(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<LaunchOutcome, PageError>;
    /// `/workflows/:slug`: definition, versions, latest runs and the latest run's steps.
    async fn workflow_detail(&self, slug: &str) -> Result<WorkflowPageData, PageError>;
    /// Newest workflow runs first, of every workflow.
    async fn workflow_runs(&self) -> Result<Vec<WorkflowRun>, PageError>;
    async fn workflow_run(&self, id: &str) -> Result<WorkflowRunWithSteps, PageError>;
    /// Starts a workflow run from the launch form, as `viewer`; invalid parameters come back
    /// as problems.
    async fn launch_workflow(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<WorkflowLaunchOutcome, PageError>;
    async fn cancel_workflow_run(&self, id: &str) -> Result<WorkflowRun, PageError>;
    /// Resumes a failed or canceled run: its failed steps run again.
    async fn retry_workflow_run(&self, viewer: &Viewer, id: &str)
    -> Result<WorkflowRun, PageError>;
    /// A new run with the same parameters, as `viewer`.
    async fn rerun_workflow_run(&self, viewer: &Viewer, id: &str)
    -> Result<WorkflowRun, PageError>;
    /// `/audit`: one page of the audit log, newest first.
    async fn audit_logs(&self, query: wire::AuditQuery) -> Result<wire::AuditList, PageError>;
}

/// The backend as put into the Leptos context.
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct BackendHandle(pub std::sync::Arc<dyn Backend>);

#[cfg(feature = "ssr")]
fn backend() -> Result<BackendHandle, ServerFnError> {
    use_context::<BackendHandle>().ok_or_else(|| ServerFnError::new("no backend in context"))
}

/// A backend failure as a server function's error: its kind travels with it, as JSON, so the
/// page can tell "not found" from "unavailable" ([`failure`]).
#[cfg(feature = "ssr")]
pub fn failed(e: PageError) -> ServerFnError {
    ServerFnError::ServerError(serde_json::to_string(&e).unwrap_or(e.message))
}

/// What a page's server function failed with: the kind and message the server sent, or
/// "unavailable" for a failure the server did not describe (the network, a crash).
pub fn failure(e: &ServerFnError) -> PageError {
    if let ServerFnError::ServerError(text) = e
        && let Ok(described) = serde_json::from_str::<PageError>(text)
    {
        return described;
    }
    PageError {
        kind: ErrorKind::Unavailable,
        message: e.to_string(),
    }
}

/// What a page shows when its data could not be read: "<what> not found" for a missing one,
/// else that it could not be loaded, with the server's message (never database text: the
/// server sends none).
pub fn failure_view(what: &'static str, error: &ServerFnError) -> impl IntoView + use<> {
    let failure = failure(error);
    let heading = match failure.kind {
        ErrorKind::NotFound => format!("{what} not found"),
        ErrorKind::Invalid => format!("{what}: invalid request"),
        ErrorKind::Forbidden => format!("{what}: not allowed"),
        ErrorKind::Conflict | ErrorKind::Unavailable => format!("{what} could not be loaded"),
    };
    view! { <h1>{heading}</h1><p class="error">{failure.message}</p> }
}

/// Who sent the current server-function request (the auth middleware's `Viewer`).
#[cfg(feature = "ssr")]
fn viewer() -> Viewer {
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
        .unwrap_or_default()
}

#[server(prefix = "/_sf", endpoint = "job-summaries")]
pub async fn job_summaries() -> Result<Vec<JobSummary>, ServerFnError> {
    backend()?.0.job_summaries().await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "job-slugs")]
pub async fn job_slugs() -> Result<Vec<String>, ServerFnError> {
    backend()?.0.job_slugs().await.map_err(failed)
}

/// Runs per page on the list pages.
pub const RUNS_PER_PAGE: u64 = 25;

/// One page of runs, newest first. Every argument is optional; empty strings mean "any".
#[server(prefix = "/_sf", endpoint = "runs")]
pub async fn fetch_runs(
    status: Option<String>,
    job: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
) -> Result<RunList, ServerFnError> {
    let some = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let status = match some(status) {
        None => None,
        Some(s) => Some(
            wire::RunStatus::parse(&s)
                .ok_or_else(|| ServerFnError::new(format!("unknown status {s}")))?,
        ),
    };
    let query = wire::RunQuery {
        status,
        job: some(job),
        q: some(q),
        cursor: some(cursor),
        limit: RUNS_PER_PAGE,
    };
    backend()?.0.list_runs(query).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "get-run")]
pub async fn get_run(id: String) -> Result<JobRun, ServerFnError> {
    backend()?.0.get_run(&id).await.map_err(failed)
}

/// Lines of a run's log the run page shows at first (it then appends what follows).
pub const LOG_TAIL_LINES: u64 = 1000;

/// Bytes of a run's log the run page shows at most (the oldest lines go first).
pub const LOG_TAIL_BYTES: usize = 256 * 1024;

/// The end of a run's log (the run page's first view of it).
#[server(prefix = "/_sf", endpoint = "run-log-tail")]
pub async fn run_log_tail(id: String) -> Result<LogTail, ServerFnError> {
    backend()?
        .0
        .run_log_tail(&id, LOG_TAIL_LINES)
        .await
        .map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "cancel-run")]
pub async fn cancel_run(id: String) -> Result<JobRun, ServerFnError> {
    backend()?.0.cancel_run(&id).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "retry-run")]
pub async fn retry_run(id: String) -> Result<JobRun, ServerFnError> {
    backend()?.0.retry_run(&viewer(), &id).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "job-detail")]
pub async fn fetch_job_detail(slug: String) -> Result<JobDetail, ServerFnError> {
    backend()?.0.job_detail(&slug).await.map_err(failed)
}

/// `parameters` is the form's JSON document (a string keeps the wire encoding simple).
#[server(prefix = "/_sf", endpoint = "launch")]
pub async fn launch(slug: String, parameters: String) -> Result<LaunchOutcome, ServerFnError> {
    let parameters: serde_json::Value = serde_json::from_str(&parameters)
        .map_err(|e| ServerFnError::new(format!("parameters: {e}")))?;
    backend()?
        .0
        .launch(&viewer(), &slug, parameters)
        .await
        .map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "dashboard")]
pub async fn fetch_dashboard() -> Result<Dashboard, ServerFnError> {
    backend()?.0.dashboard().await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "services")]
pub async fn fetch_services() -> Result<Vec<Service>, ServerFnError> {
    backend()?.0.services().await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "service-detail")]
pub async fn fetch_service_detail(slug: String) -> Result<ServiceDetail, ServerFnError> {
    backend()?.0.service_detail(&slug).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "workflow-summaries")]
pub async fn fetch_workflow_summaries() -> Result<Vec<WorkflowSummary>, ServerFnError> {
    backend()?.0.workflow_summaries().await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "workflow-detail")]
pub async fn fetch_workflow_detail(slug: String) -> Result<WorkflowPageData, ServerFnError> {
    backend()?.0.workflow_detail(&slug).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "workflow-runs")]
pub async fn fetch_workflow_runs() -> Result<Vec<WorkflowRun>, ServerFnError> {
    backend()?.0.workflow_runs().await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "workflow-run")]
pub async fn fetch_workflow_run(id: String) -> Result<WorkflowRunWithSteps, ServerFnError> {
    backend()?.0.workflow_run(&id).await.map_err(failed)
}

/// `parameters` is the form's JSON document (a string keeps the wire encoding simple).
#[server(prefix = "/_sf", endpoint = "launch-workflow")]
pub async fn launch_workflow(
    slug: String,
    parameters: String,
) -> Result<WorkflowLaunchOutcome, ServerFnError> {
    let parameters: serde_json::Value = serde_json::from_str(&parameters)
        .map_err(|e| ServerFnError::new(format!("parameters: {e}")))?;
    backend()?
        .0
        .launch_workflow(&viewer(), &slug, parameters)
        .await
        .map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "cancel-workflow-run")]
pub async fn cancel_workflow_run(id: String) -> Result<WorkflowRun, ServerFnError> {
    backend()?.0.cancel_workflow_run(&id).await.map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "retry-workflow-run")]
pub async fn retry_workflow_run(id: String) -> Result<WorkflowRun, ServerFnError> {
    backend()?
        .0
        .retry_workflow_run(&viewer(), &id)
        .await
        .map_err(failed)
}

#[server(prefix = "/_sf", endpoint = "rerun-workflow-run")]
pub async fn rerun_workflow_run(id: String) -> Result<WorkflowRun, ServerFnError> {
    backend()?
        .0
        .rerun_workflow_run(&viewer(), &id)
        .await
        .map_err(failed)
}
