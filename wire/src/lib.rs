//! Wire types: the JSON shapes of `../shared/api.md`, shared by the REST API, server functions
//! and the pages. They compile on both sides (server and wasm); storage entities are converted
//! into these, never serialized directly.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

// The domain's value types are part of the contract: defined once, in the domain crate.
pub use domain::problems::ErrorDetail;
pub use domain::values::{
    Jitter, JobType, RetryPolicy, RetryStrategy, RunStatus, ServiceStatus, StepRunStatus, Trigger,
    WorkflowRunStatus,
};

/// A job definition as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobDefinition {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub version: i32,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub entry_point: String,
    /// A JSON Schema: an object, or `true` / `false`.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub parameters_schema: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub default_parameters: Value,
    pub timeout_ms: i64,
    pub retry_policy: RetryPolicy,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One stored version of a job definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobDefinitionVersion {
    pub version: i32,
    pub definition: JobDefinition,
    pub created_at: DateTime<Utc>,
}

/// A job run (one logical run; `attempt` counts its executions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub id: String,
    pub job_definition_id: String,
    pub job_slug: String,
    pub job_version: i32,
    pub status: RunStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Value>,
    pub error_message: Option<String>,
    pub logs_url: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metrics: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub context: Option<Value>,
    pub timeout_ms: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    pub trigger: Trigger,
    pub workflow_run_id: Option<String>,
    pub workflow_step_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The end of a run's log, as the run page first shows it (the page then appends what a
/// follow of the log streams after `last_line_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    pub text: String,
    /// The id of the last line in `text` (0: none yet); lines after it are new.
    pub last_line_id: i64,
    /// Earlier lines exist that `text` leaves out.
    pub omitted: bool,
}

/// `GET /api/jobs/:slug`: the definition and its most recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobWithRuns {
    pub job: JobDefinition,
    pub runs: Vec<JobRun>,
}

// ---- Envelopes: every JSON body of the API is one of these three (api.md "Conventions") ----
//
// The handlers return them and the OpenAPI document is derived from them (utoipa names a
// generic instance after its argument: `Data_JobRun`, `Page_JobRun`), so the document and
// the bytes on the wire come from one type.

/// A success body: `{"data": T}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Data<T> {
    pub data: T,
}

impl<T> Data<T> {
    pub fn new(data: T) -> Self {
        Data { data }
    }
}

/// A list body: `{"data": [T], "meta": {limit, offset, total, nextCursor}}`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: ListMeta,
}

/// An error body: `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// Paging information of a list response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// Rows asked for (`?limit=`, default 20, at most 100).
    pub limit: u64,
    /// Rows skipped (`?offset=`; 0 when the page was asked for by `cursor`).
    pub offset: u64,
    /// Rows matching the filters over all pages; `null` where counting is not offered.
    pub total: Option<u64>,
    /// Pass as `?cursor=` to get the next page; stable while new rows arrive. `null` on the
    /// last page.
    pub next_cursor: Option<String>,
}

/// What `error` of an [`ErrorResponse`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// `invalid_request`, `invalid_parameters`, `invalid_definition`, `missing_token`,
    /// `invalid_token`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `host_not_allowed`, `rate_limited`,
    /// `overloaded`, `timeout`, `not_ready` or `internal_error`.
    pub code: String,
    pub message: String,
    /// Every problem found (empty when the message says it all).
    pub details: Vec<ErrorDetail>,
}

/// `GET /api/health`: the process is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /api/ready`: the database answers and migrations are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
}

/// An event as carried by `GET /api/events` (`data:` of each SSE message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventMessage {
    #[serde(rename = "type")]
    pub event_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
}

/// A job definition with its run statistics, for the catalog page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub job: JobDefinition,
    pub last_run_status: Option<RunStatus>,
    /// Succeeded / finished runs, 0..1; null before any run has finished.
    pub success_rate: Option<f64>,
    pub run_count: u64,
}

/// `/jobs/:slug` page data: the definition and its versions (its runs are paged separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    pub job: JobDefinition,
    pub versions: Vec<JobDefinitionVersion>,
}

/// What a launch from the form produced: the run, or every problem with its pointer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchOutcome {
    pub run: Option<JobRun>,
    pub problems: Vec<ErrorDetail>,
}

/// Run counts by status.
pub type StatusCounts = Vec<(RunStatus, u64)>;

/// One hour of the dashboard chart: its start and the runs created in it, by status.
pub type HourBucket = (DateTime<Utc>, StatusCounts);

/// Dashboard figures for the last 24 hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    /// Runs created in the last 24 h, by status.
    pub counts: StatusCounts,
    /// 24 hourly buckets, oldest first: start of the hour and runs created in it, by status.
    pub hourly: Vec<HourBucket>,
    pub latest_failures: Vec<JobRun>,
}

/// Which runs a list page shows: the page's filters and its keyset cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    /// A job slug.
    pub job: Option<String>,
    /// Text searched in the run id, job slug and error message.
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: u64,
}

/// A page of runs for the list pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub runs: Vec<JobRun>,
    /// Runs matching the filters, over all pages.
    pub total: u64,
    pub next_cursor: Option<String>,
}

/// A workflow definition as returned by the API (api.md "Workflow definitions"). `steps` and
/// `triggers` are the validated documents in their normalized form (every optional field
/// present, `null` when unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDefinition {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub version: i32,
    pub description: Option<String>,
    /// A JSON Schema: an object, or `true` / `false`.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub parameters_schema: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub default_parameters: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    /// `[{"id", "name", "type": "job" | "service", "dependsOn", ...}]`
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub steps: Value,
    /// `[{"type": "manual" | "schedule" | "event", "options"?}]`
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub triggers: Value,
    /// The workflow engine that runs it: `native` (default) or another the server runs
    /// (`temporal`).
    pub provider: String,
    /// How long a run may take from its start (1000 to 86400000 ms); past it the run fails as
    /// timed out. Null: no limit.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One stored version of a workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDefinitionVersion {
    pub version: i32,
    pub definition: WorkflowDefinition,
    pub created_at: DateTime<Utc>,
}

/// `GET /api/workflows/:slug`: the definition and its most recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkflowWithRuns {
    pub workflow: WorkflowDefinition,
    pub runs: Vec<WorkflowRun>,
}

/// A registered service (api.md "Services").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    pub slug: String,
    pub display_name: String,
    /// A lower-case label such as `http` or `notifier`: `^[a-z0-9][a-z0-9_.-]{0,99}$`.
    pub kind: String,
    /// Absolute http(s) URL.
    pub base_url: String,
    /// Starts with `/`; `null`: not polled.
    pub health_path: Option<String>,
    /// Header name -> value, sent with every request to the service.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub headers: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    pub status: ServiceStatus,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A workflow run (api.md "Workflow runs").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRun {
    pub id: String,
    pub workflow_definition_id: String,
    pub workflow_slug: String,
    pub workflow_version: i32,
    pub status: WorkflowRunStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    /// `{"steps": {"<id>": {"status", "jobRunId", "result"}}, "shared": {}}`
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub context: Value,
    pub error_message: Option<String>,
    pub current_step_id: Option<String>,
    pub current_step_index: Option<i32>,
    /// `{"totalSteps", "completedSteps"}` (completed: steps in a terminal state).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metrics: Value,
    pub triggered_by: Option<String>,
    /// `{"type": "manual" | "schedule" | "event" | "rerun", ...}`
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub trigger: Value,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The workflow engine that runs it: `native` or another registered provider
    /// (`temporal`).
    #[serde(default = "native_provider")]
    pub provider: String,
    /// The engine's handle of the execution (the Temporal workflow id); null for native runs.
    #[serde(default)]
    pub execution_id: Option<String>,
    /// Where the engine shows the execution (the Temporal UI, when the server knows it).
    #[serde(default)]
    pub execution_url: Option<String>,
}

fn native_provider() -> String {
    "native".to_string()
}

/// One attempt of a step, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StepAttempt {
    pub attempt: i32,
    pub job_run_id: Option<String>,
    pub status: StepRunStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
}

/// One step of a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunStep {
    pub id: String,
    pub workflow_run_id: String,
    pub step_id: String,
    pub status: StepRunStatus,
    /// Attempts used so far over every resume (0 before the step first starts).
    pub attempt: i32,
    pub job_run_id: Option<String>,
    /// The rendered parameters (job steps) or request (service steps).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output: Option<Value>,
    pub error_message: Option<String>,
    pub logs_url: Option<String>,
    /// `{"attempts": [StepAttempt], ...}` plus what the step's handler reported.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metrics: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/workflow-runs/:id/steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WorkflowRunWithSteps {
    pub run: WorkflowRun,
    pub steps: Vec<WorkflowRunStep>,
}

/// `/workflows/:slug` page data: the definition, its versions, its latest runs (newest first)
/// and the steps of the latest run, if any (they colour the graph).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowPageData {
    pub workflow: WorkflowDefinition,
    pub versions: Vec<WorkflowDefinitionVersion>,
    pub runs: Vec<WorkflowRun>,
    pub latest_steps: Option<Vec<WorkflowRunStep>>,
}

/// What a workflow launch from the form produced: the run, or every problem with its pointer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowLaunchOutcome {
    pub run: Option<WorkflowRun>,
    pub problems: Vec<ErrorDetail>,
}

/// A row of the `/workflows` catalog: the definition, its last run and its run counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSummary {
    pub workflow: WorkflowDefinition,
    pub last_run_status: Option<WorkflowRunStatus>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub runs: u64,
    pub succeeded: u64,
    /// Succeeded / finished runs; `None` when no run has finished.
    pub success_rate: Option<f64>,
}

/// `/services/:slug`: the service (header values masked, they may be secrets) and the
/// workflows whose steps call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDetail {
    pub service: Service,
    pub workflows: Vec<WorkflowDefinition>,
}

/// A secret's metadata as the API shows it (`/api/secrets`): never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretMetadata {
    pub key: String,
    /// The current version: what references without `version` resolve to.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every stored version, newest first.
    pub versions: Vec<SecretVersionInfo>,
}

/// One stored version of a secret (its value stays encrypted in the database).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretVersionInfo {
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

// ---- Operations: `GET /api/metrics` and the `/metrics` page ----

/// Runs of one job or workflow, by status (every status present, 0 when none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SlugStatusCounts {
    pub slug: String,
    pub total: u64,
    pub by_status: std::collections::BTreeMap<String, u64>,
}

/// Run figures of all jobs or all workflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunMetrics {
    /// Every stored run.
    pub total: u64,
    /// Every stored run, by status (every status present).
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// `windowFailed / windowTerminal`: failed (and, for jobs, expired) runs over all runs that
    /// ended (succeeded, failed, expired, canceled) within the last `windowMs`; 0 when none ended.
    pub failure_rate: f64,
    pub window_ms: i64,
    /// Runs that ended within the window.
    pub window_terminal: u64,
    /// Of those, the failed (and expired) ones.
    pub window_failed: u64,
    /// Per job or workflow slug, by slug.
    pub by_slug: Vec<SlugStatusCounts>,
}

/// Pending job runs: `due` may start now, `delayed` wait for their `scheduledAt` (a retry's
/// backoff or a `delayMs`); `running` are executing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    pub due: u64,
    pub delayed: u64,
    pub running: u64,
}

/// One histogram bucket: observations above the previous bound up to `leMs` (`null`: +Inf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DurationBucket {
    pub le_ms: Option<f64>,
    pub count: u64,
}

/// A duration distribution; percentiles are estimated from the buckets (linear within one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DurationSummary {
    pub count: u64,
    pub sum_ms: f64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub buckets: Vec<DurationBucket>,
}

/// Durations observed by this server since `since` (from the event bus, all processes' runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DurationMetrics {
    pub since: DateTime<Utc>,
    pub job_runs: DurationSummary,
    pub workflow_runs: DurationSummary,
    /// A step's latency: the duration of its job run.
    pub steps: DurationSummary,
}

/// `GET /api/metrics`: the figures of `GET /metrics` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    pub generated_at: DateTime<Utc>,
    pub jobs: RunMetrics,
    pub workflows: RunMetrics,
    pub queue_depth: QueueDepth,
    pub durations: DurationMetrics,
}

// ---- Request bodies, as the OpenAPI document describes them ----
//
// The server validates bodies itself (the `domain` crate: every problem with its pointer),
// so these types only document what it accepts; `null` stands for an absent field.

/// `POST /api/jobs`: a job definition (api.md "Job definitions"). `id`, `createdAt` and
/// `updatedAt` echoed back from a GET are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobDefinitionInput {
    /// `^[a-z0-9][a-z0-9_-]{0,99}$`, case-insensitive (stored lower-case).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    )]
    pub slug: String,
    /// 1 to 200 characters.
    pub name: String,
    /// Default 1; re-posting a slug with a lower version than the stored one is a 409.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: Option<i32>,
    #[serde(rename = "type")]
    pub job_type: Option<JobType>,
    /// A handler compiled into the server: `builtin:noop`, `builtin:sleep`, `builtin:fail`,
    /// `builtin:http`, `builtin:repository-ingest`, `builtin:repository-build`,
    /// `builtin:service-call`.
    pub entry_point: String,
    /// A JSON Schema (an object, or `true` / `false`); default `{"type": "object"}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Value, required = false))]
    pub parameters_schema: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub default_parameters: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    pub timeout_ms: Option<i64>,
    /// `{"maxAttempts" (1..10), "strategy", "initialDelayMs", "maxDelayMs", "jitter"}`, each
    /// optional.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub retry_policy: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
}

/// `POST /api/workflows`: a workflow definition (api.md "Workflow definitions"); steps and
/// triggers are validated as a whole (400 `invalid_definition` listing every problem).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDefinitionInput {
    /// `^[a-z0-9][a-z0-9_-]{0,99}$`, case-insensitive (stored lower-case).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    )]
    pub slug: String,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: Option<i32>,
    pub description: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Value, required = false))]
    pub parameters_schema: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub default_parameters: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// `[{"id", "name"?, "type"?: "job" | "service", "dependsOn"?, "jobSlug", "parameters"?,
    /// ...}]`: see api.md.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub steps: Value,
    /// `[{"type": "manual" | "schedule" | "event", "options"?}]`
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub triggers: Option<Value>,
    /// The workflow engine: `native` (default) or another the server runs (`temporal`).
    pub provider: Option<String>,
    /// How long a run may take from its start, 1000 to 86400000 ms (null: no limit).
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    pub timeout_ms: Option<i64>,
}

/// `POST /api/jobs/:slug/run`; an empty body runs with the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRunRequest {
    /// Merged over the job's `defaultParameters`, then validated against its
    /// `parametersSchema` (400 `invalid_parameters`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    pub timeout_ms: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<i32>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub context: Option<Value>,
    /// 1 to 255 characters, not starting with `switchyard:`; a repeated key returns the
    /// original run. Also accepted as the `Idempotency-Key` header.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
    /// Start no earlier than this many ms from now (at most 30 days).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2592000000_i64))]
    pub delay_ms: Option<i64>,
}

/// `POST /api/workflows/:slug/run`; an empty body runs with the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowRunRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
    /// Who started it (1 to 255 characters; `scheduler` and `event:...` are the server's).
    pub triggered_by: Option<String>,
    /// `"manual"` or `{"type": "manual", ...}`: callers start manual runs only.
    #[cfg_attr(feature = "openapi", schema(value_type = Value, required = false))]
    pub trigger: Option<Value>,
    /// 1 to 255 bytes, not starting with `switchyard:`; a repeated key returns the original
    /// run. Also accepted as the `Idempotency-Key` header.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
}

/// `PATCH /api/job-runs/:id` and `PATCH /api/workflow-runs/:id`: the only change a caller can
/// make to a run is to cancel it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Only `canceled`.
    pub status: String,
}

/// `PUT /api/secrets/:key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// 1 byte to 64 KiB; stored encrypted, never shown again.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub value: String,
    /// Greater than the current version (default: current + 1); not greater is a 409.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: Option<i32>,
}

/// `POST /api/services`: a service registration (api.md "Services").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceInput {
    /// `^[a-z0-9][a-z0-9_-]{0,99}$`, case-insensitive (stored lower-case).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    )]
    pub slug: String,
    pub display_name: String,
    /// A lower-case label, e.g. `http`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,99}$"))]
    pub kind: String,
    /// An absolute http(s) URL without query or fragment.
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub base_url: String,
    /// Polled for the service's status.
    #[cfg_attr(feature = "openapi", schema(pattern = "^/"))]
    pub health_path: Option<String>,
    /// Header name -> value or secret reference, sent with every request to the service.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub headers: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    pub status: Option<ServiceStatus>,
}

/// One audit log entry (api.md "Operations": `GET /api/audit-logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    /// The token's subject, `local` in open local mode, `null` when no valid token was given.
    pub subject: Option<String>,
    /// First 12 hex characters of the SHA-256 of the presented token (never the token).
    pub token_hash_prefix: Option<String>,
    /// e.g. `job.run`, `workflow.update`, `secret.write`, `auth.sign_in`.
    pub action: String,
    /// e.g. `jobs/build-app`, `workflow-runs/<id>`.
    pub resource: Option<String>,
    /// `ok`, or the error code (`missing_token`, `invalid_token`, `forbidden`, `conflict`, ...).
    pub status: String,
    pub status_code: Option<i32>,
    pub ip: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// Filters of the audit list; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actions: Vec<String>,
    pub subject: Option<String>,
    pub statuses: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: u64,
}

/// One page of audit entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// What kind of failure a page's data request met (`application::error::AppError::kind`):
/// the pages say "not found", list the problems, explain a conflict or a refusal, or say the
/// server is unavailable; database text never reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Invalid,
    Conflict,
    Forbidden,
    Unavailable,
}

/// A page's data request failed: the kind and a message fit to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Who is looking at a page, as the server's auth middleware saw the request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Viewer {
    /// No operator tokens are configured: everything is allowed (subject `local`).
    pub open: bool,
    /// The signed-in operator, if any.
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    /// Reads need a token on this server (tokens configured, no `--public-reads`).
    pub protect_reads: bool,
}

impl Viewer {
    pub fn allows(&self, scope: &str) -> bool {
        self.open || self.scopes.iter().any(|s| s == "admin" || s == scope)
    }

    /// Why a button needing `scope` is disabled, or `None` when the viewer may use it.
    pub fn denied(&self, scope: &str) -> Option<String> {
        if self.allows(scope) {
            None
        } else if self.subject.is_none() {
            Some(format!("sign in with a token that has scope {scope}"))
        } else {
            Some(format!("needs scope {scope}"))
        }
    }
}
