//! What an external engine's execution does in a Switchyard process (a Temporal workflow's
//! activities; the memory provider calls them directly): read the jobs a run's steps use,
//! write the interpreter's records to the run's rows, and execute a step's attempt on this
//! process's engine, with the same logs, redaction, secrets and results as any attempt.
use std::collections::HashMap;

use chrono::Utc;
use wire::{JobDefinition, JobRun};

use super::interpreter::Record;
use crate::application::orchestrator::SERVICE_CALL_JOB;
use crate::application::{AppError, AppResult, launcher::RunLauncher};
use crate::engine::{Engine, StopReason, publish_run};
use crate::events::{Event, EventBus, WorkflowRunChange};
use crate::store::{Store, WorkflowRunState};
use domain::workflow::{StepAction, StepSpec};

/// The outcome of executing one attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempted {
    /// False: the run did not take this attempt (it ended, or a later attempt holds it).
    pub executed: bool,
    /// The job run as the attempt left it: finished, or pending for its next attempt.
    pub run: JobRun,
}

/// The I/O an engine's execution needs, so that the engine itself is testable without a
/// database ([`super::memory`]'s tests fake it).
#[async_trait::async_trait]
pub trait StepActivities: Send + Sync {
    /// The definitions of the jobs `spec`'s steps use, by slug (missing ones left out: the
    /// step fails when it would start, as on the native engine).
    async fn jobs(&self, spec: &[StepSpec]) -> AppResult<HashMap<String, JobDefinition>>;
    /// Writes `record` (idempotent: a record already written is not written again).
    async fn record(&self, driver: &str, record: &Record) -> AppResult<()>;
    /// Executes attempt `attempt` of the step job run `job_run_id` here.
    async fn attempt(&self, job_run_id: &str, attempt: i32) -> AppResult<Attempted>;
}

/// [`StepActivities`] on this process's store, bus and engine.
#[derive(Clone)]
pub struct Activities {
    store: Store,
    bus: EventBus,
    launcher: RunLauncher,
    /// None: this process executes no runs (it can still start, describe and cancel).
    engine: Option<Engine>,
}

impl Activities {
    pub fn new(store: Store, bus: EventBus, launcher: RunLauncher, engine: Option<Engine>) -> Self {
        Activities {
            store,
            bus,
            launcher,
            engine,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn executes_runs(&self) -> bool {
        self.engine.is_some()
    }

    /// Fails a step's job run whose attempts were all lost (their workers died), and returns
    /// it as it is then.
    pub async fn give_up(&self, job_run_id: &str, error: &str) -> AppResult<JobRun> {
        let run = self
            .store
            .fail_driven(job_run_id, error.to_string(), Utc::now())
            .await?;
        if let Some(run) = &run {
            publish_run(&self.bus, run).await;
        }
        match run {
            Some(run) => Ok(run),
            None => self
                .store
                .get_run(job_run_id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("job run {job_run_id:?} not found"))),
        }
    }

    /// The run's state as stored (None: no such run).
    pub async fn state(&self, run_id: &str) -> AppResult<Option<WorkflowRunState>> {
        Ok(self.store.workflow_run_state(run_id).await?)
    }

    async fn cancel_job_run(&self, id: &str) {
        match self.store.cancel(id, Utc::now()).await {
            Ok(Some(canceled)) => {
                // Here at once; workers of other processes see the event.
                if let Some(engine) = &self.engine {
                    engine.stop_run(id, StopReason::Canceled);
                }
                publish_run(&self.bus, &canceled).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_run_id = id, error = %e, "could not cancel a step's job run")
            }
        }
    }
}

/// The slugs of the jobs `spec`'s steps run as.
pub fn job_slugs(spec: &[StepSpec]) -> Vec<String> {
    let mut slugs: Vec<String> = Vec::new();
    for s in spec {
        let slug = match &s.action {
            StepAction::Job(j) => j.job_slug.as_str().to_string(),
            StepAction::Service(_) => SERVICE_CALL_JOB.to_string(),
        };
        if !slugs.contains(&slug) {
            slugs.push(slug);
        }
    }
    slugs
}

#[async_trait::async_trait]
impl StepActivities for Activities {
    async fn jobs(&self, spec: &[StepSpec]) -> AppResult<HashMap<String, JobDefinition>> {
        let mut jobs = HashMap::new();
        for slug in job_slugs(spec) {
            if let Some(job) = self.launcher.definitions().get(&slug).await? {
                jobs.insert(slug, job);
            }
        }
        Ok(jobs)
    }

    async fn record(&self, driver: &str, record: &Record) -> AppResult<()> {
        let now = Utc::now();
        let changes = record.changes(driver);
        let written = self
            .store
            .apply_workflow_changes(&record.run_id, record.revision, &changes, now)
            .await?;
        if !written {
            // Written before (an activity retried after its worker died, perhaps before it
            // canceled what the record stops: that is done again, it is idempotent), or
            // someone else changed the run: only the first is fine.
            let stored = self.store.workflow_run_state(&record.run_id).await?;
            return match stored {
                Some(s) if s.revision > record.revision => {
                    for id in &record.cancel_job_runs {
                        self.cancel_job_run(id).await;
                    }
                    Ok(())
                }
                Some(_) => Err(AppError::Conflict(format!(
                    "workflow run {} changed under its engine's execution",
                    record.run_id
                ))),
                None => Err(AppError::NotFound(format!(
                    "workflow run {:?} not found",
                    record.run_id
                ))),
            };
        }
        for id in &record.cancel_job_runs {
            self.cancel_job_run(id).await;
        }
        let Some(run) = &record.run else {
            return Ok(());
        };
        for j in &record.job_runs {
            publish_run(&self.bus, &j.run).await;
        }
        if record.steps_changed {
            self.bus
                .publish(Event::WorkflowRun {
                    run: run.clone(),
                    change: WorkflowRunChange::Updated,
                })
                .await;
        }
        if record.status_changed {
            tracing::info!(run_id = %run.id, workflow = %run.workflow_slug, status = %run.status, provider = %driver, "workflow run {}", run.status);
            self.bus
                .publish(Event::WorkflowRun {
                    run: run.clone(),
                    change: WorkflowRunChange::Status(run.status),
                })
                .await;
        }
        Ok(())
    }

    async fn attempt(&self, job_run_id: &str, attempt: i32) -> AppResult<Attempted> {
        let Some(engine) = &self.engine else {
            return Err(AppError::Conflict(
                "this process executes no runs (--workers 0)".into(),
            ));
        };
        let (executed, run) = engine.execute_driven(job_run_id, attempt).await?;
        let run =
            run.ok_or_else(|| AppError::NotFound(format!("job run {job_run_id:?} not found")))?;
        Ok(Attempted { executed, run })
    }
}
