//! Workflow engines behind one contract (issue 17; `shared/seeds/provider-framework-proposal.md`).
//!
//! A workflow definition names its engine (`"provider"`). The [`Manager`] is the one way the
//! rest of the application starts, cancels, resumes and reruns workflow runs: it stores the
//! run's rows, then hands the execution to the [`WorkflowProvider`] the run names, found in the
//! [`Registry`]. Whatever the engine, the run's rows (run, steps, the steps' job runs and their
//! logs) and its `workflow.run.*` events are Switchyard's: the API, the pages, the metrics and
//! the CLI read those, so they look the same whichever engine ran the workflow.
//!
//! * [`native`]: the built-in orchestrator (`orchestrator`), unchanged.
//! * [`memory`]: an in-memory engine driving the [`interpreter`] on a task of this process,
//!   with the time of tokio's clock (paused in unit tests: deterministic). For tests only:
//!   its executions do not survive the process.
//! * [`temporal`]: a Temporal cluster runs the [`interpreter`] as a deterministic workflow
//!   whose activities ([`activities`]) write the run's rows and execute the steps' attempts.
pub mod activities;
pub mod interpreter;
pub mod memory;
pub mod native;
pub mod temporal;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::{Value, json};
use wire::{
    StepRunStatus, WorkflowDefinition, WorkflowRun, WorkflowRunStatus, WorkflowRunStep,
    WorkflowRunWithSteps,
};

use crate::application::orchestrator::{Orchestrator, WorkflowRunRequest};
use crate::application::{AppError, AppResult, launcher::RunLauncher};
use crate::events::{Event, EventBus, WorkflowRunChange};
use crate::store::{
    InsertedWorkflowRun, NewWorkflowRun, Store, WorkflowRunFilter, WorkflowRunState, new_id,
};
use domain::{
    Problems,
    jobs::{merge_parameters, validate_parameters},
    workflow::{Provider, StepSpec, WorkflowSpec},
};

/// The state of an execution, as every engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// The workflow's or a step's time ran out (the run shows `failed`, saying so).
    TimedOut,
    Canceled,
}

impl ExecutionState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionState::Pending | ExecutionState::Running)
    }

    /// The state the run's row shows.
    pub fn of_run(run: &WorkflowRun) -> ExecutionState {
        match run.status {
            WorkflowRunStatus::Pending => ExecutionState::Pending,
            WorkflowRunStatus::Running => ExecutionState::Running,
            WorkflowRunStatus::Succeeded => ExecutionState::Succeeded,
            WorkflowRunStatus::Canceled => ExecutionState::Canceled,
            WorkflowRunStatus::Failed if timed_out(run.error_message.as_deref()) => {
                ExecutionState::TimedOut
            }
            WorkflowRunStatus::Failed => ExecutionState::Failed,
        }
    }
}

fn timed_out(error: Option<&str>) -> bool {
    error.is_some_and(|e| e.contains("timed out"))
}

/// The state of one step of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Canceled,
}

impl StepState {
    pub fn of_step(step: &WorkflowRunStep) -> StepState {
        match step.status {
            StepRunStatus::Pending => StepState::Pending,
            StepRunStatus::Running => StepState::Running,
            StepRunStatus::Succeeded => StepState::Succeeded,
            StepRunStatus::Skipped => StepState::Skipped,
            StepRunStatus::Canceled => StepState::Canceled,
            StepRunStatus::Failed if timed_out(step.error_message.as_deref()) => {
                StepState::TimedOut
            }
            StepRunStatus::Failed => StepState::Failed,
        }
    }
}

/// One step of an execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepExecution {
    pub step_id: String,
    pub state: StepState,
    pub attempt: i32,
    pub job_run_id: Option<String>,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// An execution as the contract describes it: the run's rows, and the state the engine itself
/// reports (the same once the rows have caught up with the engine).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Execution {
    pub run_id: String,
    pub provider: String,
    pub execution_id: Option<String>,
    pub state: ExecutionState,
    pub engine_state: Option<ExecutionState>,
    pub error: Option<String>,
    pub shared: Value,
    pub steps: Vec<StepExecution>,
}

/// What an engine can do besides starting and describing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub cancel: bool,
    /// Retry-from-failure: a finished run continues from its unsucceeded steps.
    pub resume: bool,
}

/// Why a provider could not do what it was asked, with the context to find out more.
#[derive(Debug, thiserror::Error)]
#[error("{provider} could not {action} workflow run {run_id}: {failure}")]
pub struct ProviderError {
    pub provider: String,
    pub action: &'static str,
    pub run_id: String,
    pub failure: Failure,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The engine cannot do this (409).
    #[error("{0}")]
    Unsupported(String),
    /// The run is in a state that does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The engine did not answer or failed (503; the cause is logged, not shown).
    #[error("{0}")]
    Unavailable(String),
}

impl ProviderError {
    pub fn new(provider: &str, action: &'static str, run_id: &str, failure: Failure) -> Self {
        ProviderError {
            provider: provider.to_string(),
            action,
            run_id: run_id.to_string(),
            failure,
        }
    }
}

impl From<ProviderError> for AppError {
    fn from(e: ProviderError) -> AppError {
        match &e.failure {
            Failure::Unsupported(_) | Failure::Conflict(_) => AppError::Conflict(e.to_string()),
            Failure::Unavailable(_) => AppError::unavailable(e),
        }
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// A workflow engine. The [`Manager`] stores a run's rows first (pending, every step pending)
/// and then calls the provider; the provider (or the engine, through it) keeps the rows
/// current as the execution goes on.
#[async_trait::async_trait]
pub trait WorkflowProvider: Send + Sync {
    /// The name definitions use (`"provider"`).
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// What in `spec` this engine cannot do, found when the definition is saved.
    fn validate(&self, _spec: &WorkflowSpec) -> Problems {
        Problems::new()
    }

    /// Starts executing `run` (stored, not finished). Idempotent by the run's id: starting a
    /// run that already executes changes nothing. Returns the engine's execution handle.
    async fn start(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>>;

    /// The state the engine reports for `run` (None: it has no record of it).
    async fn describe(&self, run: &WorkflowRun) -> ProviderResult<Option<ExecutionState>>;

    /// Asks the engine to cancel `run` and its unfinished steps.
    async fn cancel(&self, run: &WorkflowRun) -> ProviderResult<()>;

    /// Where the engine shows `run`'s execution to operators, if it has a UI the server knows.
    fn execution_url(&self, _run: &WorkflowRun) -> Option<String> {
        None
    }

    /// Continues a failed or canceled run from the steps that did not succeed: `run` has been
    /// reset already (those steps pending again, the run running).
    async fn resume(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>>;
}

/// The engines this server runs, by name (thread-safe; filled at start-up).
#[derive(Clone, Default)]
pub struct Registry {
    providers: Arc<std::sync::RwLock<HashMap<&'static str, Arc<dyn WorkflowProvider>>>>,
}

impl Registry {
    pub fn register(&self, provider: Arc<dyn WorkflowProvider>) {
        if let Ok(mut map) = self.providers.write() {
            map.insert(provider.name(), provider);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn WorkflowProvider>> {
        self.providers.read().ok()?.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .providers
            .read()
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn provider(&self, name: &str) -> AppResult<Arc<dyn WorkflowProvider>> {
        self.get(name).ok_or_else(|| {
            AppError::Conflict(format!(
                "the workflow engine {name:?} is not enabled on this server"
            ))
        })
    }
}

/// How long cancel waits for an engine to record the cancellation before it answers with the
/// run as it is.
const CANCEL_SETTLE: Duration = Duration::from_secs(10);

/// The facade the application uses for workflow runs, whichever engine runs them.
#[derive(Clone)]
pub struct Manager {
    store: Store,
    bus: EventBus,
    launcher: RunLauncher,
    registry: Registry,
    /// The built-in engine, also called directly for what it answers precisely (cancel and
    /// resume return the run as they leave it).
    native: Orchestrator,
}

impl Manager {
    /// A manager with the native engine registered.
    pub fn new(store: Store, bus: EventBus, launcher: RunLauncher, native: Orchestrator) -> Self {
        let registry = Registry::default();
        registry.register(Arc::new(native::Native::new(native.clone())));
        Manager {
            store,
            bus,
            launcher,
            registry,
            native,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What the provider `spec` names cannot do with it (an unknown provider is the
    /// definition parser's problem).
    pub fn validate(&self, spec: &WorkflowSpec) -> Problems {
        match self.registry.get(spec.provider.as_str()) {
            Some(p) => p.validate(spec),
            None => Problems::new(),
        }
    }

    /// Starts a run from a parsed request (a caller's, checked, or a trigger's).
    pub async fn start_request(
        &self,
        workflow: &WorkflowDefinition,
        req: WorkflowRunRequest,
    ) -> AppResult<(WorkflowRun, bool)> {
        let parameters = merge_parameters(&workflow.default_parameters, &req.parameters);
        let problems = match self.launcher.validator(
            &workflow.id,
            workflow.updated_at,
            &workflow.parameters_schema,
        ) {
            Ok(v) => validate_parameters(&v, &parameters),
            Err(m) => {
                let mut p = Problems::new();
                p.add("/parameters", m.replace("job's", "workflow's"));
                p
            }
        };
        if !problems.is_empty() {
            return Err(AppError::InvalidParameters(problems));
        }
        let start = Start {
            parameters,
            triggered_by: req.triggered_by,
            trigger: req.trigger,
            idempotency_key: req.idempotency_key,
        };
        self.start(workflow, start).await
    }

    /// Stores a new run and hands it to its engine, on a task of its own (see
    /// `crate::detach`): a caller that goes away cannot cut the work after the commit short.
    async fn start(
        &self,
        workflow: &WorkflowDefinition,
        start: Start,
    ) -> AppResult<(WorkflowRun, bool)> {
        let this = self.clone();
        let workflow = workflow.clone();
        crate::detach::uncancellable(async move { this.start_here(&workflow, start).await }).await
    }

    async fn start_here(
        &self,
        workflow: &WorkflowDefinition,
        start: Start,
    ) -> AppResult<(WorkflowRun, bool)> {
        let provider = self.registry.provider(&workflow.provider)?;
        let new = new_workflow_run(workflow, start)?;
        let id = new.run.id.clone();
        match self.store.insert_workflow_run(new).await? {
            InsertedWorkflowRun::Existing(run) => Ok((run, false)),
            InsertedWorkflowRun::New(state) => {
                let created = WorkflowRunChange::Status(WorkflowRunStatus::Pending);
                self.bus
                    .publish(Event::WorkflowRun {
                        run: state.run.clone(),
                        change: created,
                    })
                    .await;
                if let Some(execution) = provider.start(&state).await? {
                    self.store.set_execution_id(&id, &execution).await?;
                }
                Ok((self.get(&id).await?, true))
            }
        }
    }

    /// Cancels a pending or running run and its unfinished steps (409 once finished).
    pub async fn cancel(&self, run_id: &str) -> AppResult<WorkflowRun> {
        let run = self.get(run_id).await?;
        if run.status.is_terminal() {
            return Err(AppError::Conflict(format!(
                "workflow run {run_id} already ended as {}",
                run.status
            )));
        }
        if run.provider == Provider::NATIVE {
            return self.native.cancel(run_id).await;
        }
        let provider = self.registry.provider(&run.provider)?;
        provider.cancel(&run).await?;
        self.settled(run_id, CANCEL_SETTLE).await
    }

    /// The run once it has ended, or as it is after `patience`.
    async fn settled(&self, run_id: &str, patience: Duration) -> AppResult<WorkflowRun> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let run = self.get(run_id).await?;
            if run.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Resumes a failed or canceled run from the steps that did not succeed (same run id).
    pub async fn resume(&self, run_id: &str) -> AppResult<WorkflowRun> {
        let run = self.get(run_id).await?;
        if run.provider == Provider::NATIVE {
            let resumed = self.native.resume(run_id).await?;
            let state = self.state(run_id).await?;
            self.native.watch_deadline(&resumed, &state.definition);
            return Ok(resumed);
        }
        let provider = self.registry.provider(&run.provider)?;
        if !provider.capabilities().resume {
            return Err(AppError::Conflict(format!(
                "workflow run {run_id} ran on {}, which cannot resume a run; rerun it instead",
                run.provider
            )));
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move {
            let state = this.reset_for_resume(&run_id).await?;
            if let Some(execution) = provider.resume(&state).await? {
                this.store.set_execution_id(&run_id, &execution).await?;
            }
            this.get(&run_id).await
        })
        .await
    }

    /// Puts a failed or canceled run's unsucceeded steps back to pending and the run to
    /// running (the same reset the native engine makes), conditionally on its revision.
    async fn reset_for_resume(&self, run_id: &str) -> AppResult<WorkflowRunState> {
        for _ in 0..50 {
            let state = self.state(run_id).await?;
            let Some(changes) =
                crate::application::orchestrator::resume_changes(&state, Utc::now())
            else {
                return Err(AppError::Conflict(format!(
                    "workflow run {run_id} is {}; only failed or canceled runs can be retried",
                    state.run.status
                )));
            };
            if self
                .store
                .apply_workflow_changes(run_id, state.revision, &changes, Utc::now())
                .await?
            {
                let state = self.state(run_id).await?;
                self.bus
                    .publish(Event::WorkflowRun {
                        run: state.run.clone(),
                        change: WorkflowRunChange::Status(state.run.status),
                    })
                    .await;
                return Ok(state);
            }
        }
        Err(AppError::Conflict(format!(
            "workflow run {run_id} is changing too fast; try again"
        )))
    }

    /// A new run of the same definition with the same parameters, on the same engine.
    pub async fn rerun(&self, run_id: &str) -> AppResult<WorkflowRun> {
        let state = self.state(run_id).await?;
        let workflow: WorkflowDefinition = serde_json::from_value(state.definition.clone())
            .map_err(|e| AppError::Conflict(format!("the run's definition is unreadable: {e}")))?;
        let start = Start {
            parameters: state.run.parameters.clone(),
            triggered_by: state.run.triggered_by.clone(),
            trigger: json!({"type": "manual", "rerunOf": run_id}),
            idempotency_key: None,
        };
        let (run, _) = self.start(&workflow, start).await?;
        Ok(run)
    }

    /// The contract's view of a run: its rows, and the state its engine reports.
    pub async fn describe(&self, run_id: &str) -> AppResult<Execution> {
        let state = self.state(run_id).await?;
        let provider = self.registry.provider(&state.run.provider)?;
        let engine_state = provider.describe(&state.run).await?;
        let run = &state.run;
        Ok(Execution {
            run_id: run.id.clone(),
            provider: run.provider.clone(),
            execution_id: run.execution_id.clone(),
            state: ExecutionState::of_run(run),
            engine_state,
            error: run.error_message.clone(),
            shared: run.context.get("shared").cloned().unwrap_or(Value::Null),
            steps: state
                .steps
                .iter()
                .map(|s| StepExecution {
                    step_id: s.step_id.clone(),
                    state: StepState::of_step(s),
                    attempt: s.attempt,
                    job_run_id: s.job_run_id.clone(),
                    output: s.output.clone(),
                    error: s.error_message.clone(),
                })
                .collect(),
        })
    }

    async fn state(&self, run_id: &str) -> AppResult<WorkflowRunState> {
        self.store
            .workflow_run_state(run_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("workflow run {run_id:?} not found")))
    }

    /// `run` with the link to its execution in its engine's UI, if any.
    fn shown(&self, mut run: WorkflowRun) -> WorkflowRun {
        if run.execution_id.is_some()
            && let Some(p) = self.registry.get(&run.provider)
        {
            run.execution_url = p.execution_url(&run);
        }
        run
    }

    pub async fn get(&self, run_id: &str) -> AppResult<WorkflowRun> {
        Ok(self.shown(self.state(run_id).await?.run))
    }

    pub async fn with_steps(&self, run_id: &str) -> AppResult<WorkflowRunWithSteps> {
        let state = self.state(run_id).await?;
        Ok(WorkflowRunWithSteps {
            run: self.shown(state.run),
            steps: state.steps,
        })
    }

    pub async fn list(
        &self,
        filter: &WorkflowRunFilter,
    ) -> AppResult<(Vec<WorkflowRun>, u64, Option<String>)> {
        let (runs, total, next) = self.store.list_workflow_runs(filter).await?;
        let runs = runs.into_iter().map(|r| self.shown(r)).collect();
        Ok((runs, total, next))
    }
}

/// What a new run starts with.
pub(super) struct Start {
    pub(super) parameters: Value,
    pub(super) triggered_by: Option<String>,
    pub(super) trigger: Value,
    pub(super) idempotency_key: Option<String>,
}

/// The rows of a new run of `workflow`: the run and its steps, all pending.
pub(super) fn new_workflow_run(
    workflow: &WorkflowDefinition,
    start: Start,
) -> AppResult<NewWorkflowRun> {
    let definition = serde_json::to_value(workflow).unwrap_or(Value::Null);
    let spec = steps_of(&definition)?;
    let now = Utc::now();
    let id = new_id();
    let steps: Vec<WorkflowRunStep> = spec
        .iter()
        .map(|s| WorkflowRunStep {
            id: new_id(),
            workflow_run_id: id.clone(),
            step_id: s.id.clone(),
            status: StepRunStatus::Pending,
            attempt: 0,
            job_run_id: None,
            input: None,
            output: None,
            error_message: None,
            logs_url: None,
            metrics: None,
            started_at: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let run = WorkflowRun {
        id: id.clone(),
        workflow_definition_id: workflow.id.clone(),
        workflow_slug: workflow.slug.clone(),
        workflow_version: workflow.version,
        status: WorkflowRunStatus::Pending,
        parameters: start.parameters,
        context: crate::application::orchestrator::context_of(&spec, &steps),
        error_message: None,
        current_step_id: None,
        current_step_index: None,
        metrics: crate::application::orchestrator::metrics_of(&steps),
        triggered_by: start.triggered_by,
        trigger: start.trigger,
        started_at: None,
        completed_at: None,
        duration_ms: None,
        created_at: now,
        updated_at: now,
        provider: workflow.provider.clone(),
        execution_id: None,
        execution_url: None,
    };
    Ok(NewWorkflowRun {
        run,
        definition,
        idempotency_key: start.idempotency_key,
        steps,
    })
}

/// The steps of a stored definition (a wire `WorkflowDefinition` as JSON).
pub(crate) fn steps_of(definition: &Value) -> AppResult<Vec<StepSpec>> {
    serde_json::from_value(definition.get("steps").cloned().unwrap_or(Value::Null)).map_err(|e| {
        AppError::Conflict(format!(
            "the workflow definition's steps are unreadable: {e}"
        ))
    })
}
