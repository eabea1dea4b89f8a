//! The workflow orchestrator. A workflow run's steps execute as job runs (trigger `workflow`)
//! on the apalis workers of the job engine, so they get its claims, leases, timeouts, retries
//! with durable backoff, cancellation and crash recovery. This module decides what happens
//! next:
//!
//! * [`plan`] is pure: from a run's stored state, the job runs its steps point at and the job
//!   definitions, it derives every step's status (attempts, results, errors), applies
//!   `onFailure` (halt: fail the run and cancel the rest; continue: skip the dependents),
//!   renders the templates of the steps that became ready and builds their job runs, and
//!   aggregates the run (status, context with shared values, current step, metrics).
//! * [`Orchestrator::reconcile`] reads, plans and writes the result in one transaction that is
//!   conditional on the run's revision (the loser of a race re-reads and re-plans), then
//!   enqueues the new job runs, cancels what a halt stopped and publishes `workflow.run.*`.
//!
//! Reconciling is idempotent, so it is called whenever anything may have changed: when a run
//! starts, after every transition of a step's job run (by the engine, in whichever process ran
//! it), on cancel and resume, and by the recovery sweep for every unfinished run: a process
//! killed between a job run's end and the next step's start loses nothing.
use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use wire::{JobRun, RunStatus, StepRunStatus, WorkflowRun, WorkflowRunStatus};

use crate::application::launcher::RunLauncher;
use crate::application::{AppError, AppResult};
use crate::{
    engine::LocalSlots,
    events::EventBus,
    store::{RunChanges, Store, WorkflowRunState},
};

mod planner;
mod reconcile;

pub use domain::requests::{
    EVENT_TRIGGERED_BY, SCHEDULE_TRIGGERED_BY, WorkflowRunRequest, parse_workflow_run_request,
};
pub use planner::{
    DrivenBy, ParameterCheck, Plan, RunState, context_of, deadline, finish_step, metrics_of, plan,
    stop,
};

/// How long a started step's workflow run waits before it is reconciled to show the step running.
const STARTED_STEP_NUDGE_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// The job that executes service steps (seeded at first start).
pub const SERVICE_CALL_JOB: &str = "service-call";

/// How many times a reconciliation re-reads after losing a race before giving up (the sweep
/// comes back to the run later).
const MAX_RACES: usize = 50;

#[derive(Clone)]
pub struct Orchestrator {
    store: Store,
    bus: EventBus,
    /// Checks, stores (with the reconcile's write), announces and starts the steps' job runs.
    launcher: RunLauncher,
    /// Runs being reconciled in the background by this process (see [`Orchestrator::nudge`]),
    /// each with whether another nudge arrived meanwhile.
    nudged: Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// Runs with a deferred nudge waiting (see [`Orchestrator::nudge_soon`]).
    deferred: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Orchestrator {
    pub fn new(store: Store, bus: EventBus, launcher: RunLauncher) -> Self {
        Orchestrator {
            store,
            bus,
            launcher,
            nudged: Default::default(),
            deferred: Default::default(),
        }
    }

    /// A nudge that waits `after` first and is dropped when another nudge of the run comes
    /// sooner (that reconcile sees everything this one would). For a step that just started:
    /// most no-op and short steps finish within the delay, and then the run is reconciled once
    /// per step instead of twice (running, then finished) on the critical path of the next step.
    pub fn nudge_soon(&self, run_id: &str, after: std::time::Duration) {
        match self.deferred.lock() {
            Ok(mut deferred) => {
                if !deferred.insert(run_id.to_string()) {
                    return;
                }
            }
            Err(_) => return self.nudge(run_id),
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let still = this
                .deferred
                .lock()
                .map(|mut d| d.remove(&run_id))
                .unwrap_or(false);
            if still {
                this.nudge(&run_id);
            }
        });
    }

    /// Asks for a reconcile of `run_id` without waiting for it (a step's job run changed).
    /// Nudges coalesce: while one reconcile of a run is under way in this process, further
    /// nudges only mark it dirty and it runs once more when done, so the 50 completions of a
    /// fan-out cost a handful of reconciles instead of 50 racing ones, and the worker that
    /// finished a step is free at once. Correctness never depends on a nudge: every reconcile
    /// re-reads the run, and the recovery sweep reconciles unfinished runs a nudge missed
    /// (a crash between a step's end and its nudge).
    pub fn nudge(&self, run_id: &str) {
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.remove(run_id);
        }
        {
            let Ok(mut nudged) = self.nudged.lock() else {
                return;
            };
            if let Some(dirty) = nudged.get_mut(run_id) {
                *dirty = true;
                return;
            }
            nudged.insert(run_id.to_string(), false);
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.reconcile(&run_id).await {
                    tracing::warn!(workflow_run_id = %run_id, error = %e, "could not advance the workflow run; the recovery sweep will");
                }
                let Ok(mut nudged) = this.nudged.lock() else {
                    return;
                };
                if nudged.get(&run_id) == Some(&true) {
                    nudged.insert(run_id.clone(), false);
                    continue;
                }
                nudged.remove(&run_id);
                return;
            }
        });
    }

    /// Reconciles `run_id` again when its workflow timeout runs out, if it has one (the
    /// recovery sweep does too, after a restart).
    pub fn watch_deadline(&self, run: &WorkflowRun, definition: &serde_json::Value) {
        let Some(at) = deadline(definition, run.started_at) else {
            return;
        };
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        let (this, run_id) = (self.clone(), run.id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            this.nudge(&run_id);
        });
    }

    /// Cancels a pending or running run and its unfinished steps (409 once finished), on a
    /// task of its own: the steps' job runs are canceled even when the caller goes away.
    pub async fn cancel(&self, run_id: &str) -> AppResult<WorkflowRun> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.cancel_here(&run_id).await }).await
    }

    async fn cancel_here(&self, run_id: &str) -> AppResult<WorkflowRun> {
        for _ in 0..MAX_RACES {
            let state = self.state(run_id).await?;
            if state.run.status.is_terminal() {
                return Err(AppError::Conflict(format!(
                    "workflow run {run_id} already ended as {}",
                    state.run.status
                )));
            }
            let now = Utc::now();
            let spec = steps_of(&state.definition)?;
            let why = "canceled by operator";
            let plan = stop(&state, &spec, now, WorkflowRunStatus::Canceled, why);
            let Some(run) = plan.changes.run.clone() else {
                continue;
            };
            if self
                .store
                .apply_workflow_changes(run_id, state.revision, &plan.changes, now)
                .await?
            {
                self.after_apply(&run, plan, &mut LocalSlots::none()).await;
                return Ok(run);
            }
        }
        Err(AppError::Conflict(format!(
            "workflow run {run_id} is changing too fast; try again"
        )))
    }

    /// Resumes a failed or canceled run from the steps that did not succeed (same run id), on
    /// a task of its own.
    pub async fn resume(&self, run_id: &str) -> AppResult<WorkflowRun> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.resume_here(&run_id).await }).await
    }

    async fn resume_here(&self, run_id: &str) -> AppResult<WorkflowRun> {
        for _ in 0..MAX_RACES {
            let state = self.state(run_id).await?;
            let now = Utc::now();
            let Some(changes) = resume_changes(&state, now) else {
                return Err(AppError::Conflict(format!(
                    "workflow run {run_id} is {}; only failed or canceled runs can be retried",
                    state.run.status
                )));
            };
            if self
                .store
                .apply_workflow_changes(run_id, state.revision, &changes, now)
                .await?
            {
                return Ok(self.reconcile_here(run_id).await?.unwrap_or(state.run));
            }
        }
        Err(AppError::Conflict(format!(
            "workflow run {run_id} is changing too fast; try again"
        )))
    }

    async fn state(&self, run_id: &str) -> AppResult<WorkflowRunState> {
        self.store
            .workflow_run_state(run_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("workflow run {run_id:?} not found")))
    }
}

/// The engine reports workflow steps' transitions here: the orchestrator moves their runs on,
/// in the background of whichever process ran the step.
#[async_trait::async_trait]
impl crate::engine::RunObserver for Orchestrator {
    async fn step_run_changed(&self, run: &JobRun) {
        let Some(workflow_run_id) = &run.workflow_run_id else {
            return;
        };
        if run.status == RunStatus::Pending && run.attempt > 1 {
            // A failed attempt's error lives on the job run only until the next claim: record
            // it in the step's attempt history now (retries are rare; no hurry elsewhere).
            if let Err(e) = self.reconcile(workflow_run_id).await {
                tracing::warn!(workflow_run_id, error = %e, "could not advance the workflow run; the recovery sweep will");
            }
        } else if run.status == RunStatus::Running {
            // Shown as running a moment later, unless it is done by then (one reconcile).
            self.nudge_soon(workflow_run_id, STARTED_STEP_NUDGE_DELAY);
        } else {
            self.nudge(workflow_run_id);
        }
    }

    async fn sweep(&self) {
        // Workflow runs a crash left between a step's end and the next step's start.
        if let Err(e) = Orchestrator::sweep(self).await {
            tracing::warn!(error = %e, "reconciling unfinished workflow runs failed");
        }
    }
}

/// A failed or canceled run's reset for a resume: its unsucceeded steps pending again (their
/// attempt counts kept), the run running. None when the run is in another state.
pub fn resume_changes(state: &WorkflowRunState, now: chrono::DateTime<Utc>) -> Option<RunChanges> {
    if !matches!(
        state.run.status,
        WorkflowRunStatus::Failed | WorkflowRunStatus::Canceled
    ) {
        return None;
    }
    let mut changes = RunChanges::default();
    for s in &state.steps {
        if s.status == StepRunStatus::Succeeded {
            continue;
        }
        let mut s = s.clone();
        s.status = StepRunStatus::Pending;
        s.job_run_id = None;
        s.error_message = None;
        s.output = None;
        s.completed_at = None;
        s.updated_at = now;
        changes.steps.push(s);
    }
    let mut run = state.run.clone();
    run.status = WorkflowRunStatus::Running;
    run.error_message = None;
    // A resumed run starts again (its workflow timeout counts from now): the planner sets the
    // start when it plans the resumed run.
    run.started_at = None;
    run.completed_at = None;
    run.duration_ms = None;
    run.updated_at = now;
    changes.run = Some(run);
    Some(changes)
}

pub(crate) use crate::application::providers::steps_of;
