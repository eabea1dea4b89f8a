//! The one way a job run starts, whoever asks: a job's `POST /run`, a workflow step (the
//! planner builds its run, the reconcile stores it with the step), a trigger, a retry. The
//! launcher checks parameters (one compiled-schema cache for jobs and workflows), builds the
//! `job_runs` row, stores it (or hands it to a caller's transaction), announces it and starts
//! it on this process's idle workers or enqueues it.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use domain::{
    Problems,
    jobs::{compile_parameters_schema, validate_parameters},
};
use serde_json::Value;
use wire::{JobDefinition, JobRun, RetryPolicy, RunStatus, Trigger};

use super::{AppResult, definitions::DefinitionCache};
use crate::{
    engine::{
        Engine, LocalSlots, as_accepted, publish_run,
        queue::{Queue, RunTask, WorkerWaker},
    },
    entrypoints,
    events::EventBus,
    store::{ClaimedRun, Inserted, NewRun, RunClaim, Store, new_id},
};

/// Compiled parameter schemas by definition id, valid while the definition's `updatedAt` is.
type ValidatorCache = HashMap<String, (DateTime<Utc>, Arc<jsonschema::Validator>)>;

/// What a new run is made of besides its job's definition.
#[derive(Debug, Clone)]
pub struct RunParts {
    /// Already merged with the job's defaults and checked ([`RunLauncher::check_parameters`]).
    pub parameters: Value,
    pub context: Option<Value>,
    pub timeout_ms: i64,
    /// The attempt it starts at (a resumed workflow step continues its count).
    pub attempt: i32,
    pub max_attempts: i32,
    pub retry_policy: RetryPolicy,
    pub trigger: Trigger,
    /// The workflow run and step it executes, for a step's run.
    pub step: Option<(String, String)>,
    pub idempotency_key: Option<String>,
    pub scheduled_at: DateTime<Utc>,
}

/// The `job_runs` row of a new run of `job`, `pending` (see [`claimed`] for one stored
/// already claimed by this process).
pub fn new_run(job: &JobDefinition, parts: RunParts, now: DateTime<Utc>) -> NewRun {
    let id = new_id();
    let (workflow_run_id, workflow_step_id) = parts.step.unzip();
    NewRun {
        run: JobRun {
            logs_url: format!("/api/job-runs/{id}/logs"),
            id,
            job_definition_id: job.id.clone(),
            job_slug: job.slug.clone(),
            job_version: job.version,
            status: RunStatus::Pending,
            parameters: parts.parameters,
            result: None,
            error_message: None,
            metrics: None,
            context: parts.context,
            timeout_ms: parts.timeout_ms,
            attempt: parts.attempt,
            max_attempts: parts.max_attempts,
            trigger: parts.trigger,
            workflow_run_id,
            workflow_step_id,
            duration_ms: None,
            scheduled_at: parts.scheduled_at,
            started_at: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
        },
        entry_point: job.entry_point.clone(),
        retry_policy: parts.retry_policy,
        idempotency_key: parts.idempotency_key,
        claim: None,
        driver: None,
    }
}

/// `new` stored already claimed by this process: `running` from the claim on.
pub fn claimed(new: &mut NewRun, claim: RunClaim) {
    new.run.status = RunStatus::Running;
    new.run.started_at = Some(claim.at);
    new.claim = Some(claim);
}

#[derive(Clone)]
pub struct RunLauncher {
    store: Store,
    bus: EventBus,
    queue: Queue,
    waker: WorkerWaker,
    /// Present when this process executes runs: a run due now may start on an idle worker.
    engine: Option<Engine>,
    validators: Arc<Mutex<ValidatorCache>>,
    definitions: DefinitionCache,
}

impl RunLauncher {
    pub fn new(
        store: Store,
        bus: EventBus,
        queue: Queue,
        waker: WorkerWaker,
        engine: Option<Engine>,
    ) -> RunLauncher {
        RunLauncher {
            definitions: DefinitionCache::new(store.clone(), &bus),
            store,
            bus,
            queue,
            waker,
            engine,
            validators: Default::default(),
        }
    }

    /// Job definitions as starting a run reads them (cached; see `definitions`).
    pub fn definitions(&self) -> &DefinitionCache {
        &self.definitions
    }

    /// The compiled schema of a definition (`id`, `updated_at`), compiled at most once per
    /// version of it.
    pub fn validator(
        &self,
        id: &str,
        updated_at: DateTime<Utc>,
        schema: &Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        if let Ok(cache) = self.validators.lock()
            && let Some((at, v)) = cache.get(id)
            && *at == updated_at
        {
            return Ok(v.clone());
        }
        let v = Arc::new(compile_parameters_schema(schema)?);
        if let Ok(mut cache) = self.validators.lock() {
            cache.insert(id.to_string(), (updated_at, v.clone()));
        }
        Ok(v)
    }

    /// Every problem of `parameters` (already merged with the defaults) for a run of `job`:
    /// the job's schema, secret references (checked as the strings they will resolve to), and
    /// its entry point's own check.
    pub fn check_parameters(&self, job: &JobDefinition, parameters: &Value) -> Problems {
        let (checked, reference_problems) =
            domain::secrets::with_placeholders(parameters, "/parameters");
        let mut problems = match self.validator(&job.id, job.updated_at, &job.parameters_schema) {
            Ok(validator) => validate_parameters(&validator, &checked),
            Err(message) => {
                let mut p = Problems::new();
                p.add("/parameters", message);
                p
            }
        };
        for d in reference_problems.into_vec() {
            problems.add(d.path, d.message);
        }
        if problems.is_empty() {
            for (path, message) in entrypoints::parameter_problems(&job.entry_point, &checked) {
                problems.add(format!("/parameters{path}"), message);
            }
        }
        problems
    }

    /// Up to `want` of this process's idle worker slots, for runs stored already claimed.
    pub fn reserve(&self, want: usize) -> LocalSlots {
        match &self.engine {
            Some(engine) if want > 0 => engine.reserve(want),
            _ => LocalSlots::none(),
        }
    }

    /// Stores `new`, announces it and starts or enqueues it, on a task of its own: once the
    /// insert is sent, a caller that goes away (a client that disconnects) cannot leave a run
    /// committed already claimed by this process but never started, nor an unannounced one.
    /// Returns the run as accepted and whether it is new (false: the idempotency key's run).
    pub async fn launch(&self, new: NewRun, delay: Duration) -> AppResult<(JobRun, bool)> {
        let this = self.clone();
        crate::detach::uncancellable(async move { this.launch_here(new, delay).await }).await
    }

    async fn launch_here(&self, mut new: NewRun, delay: Duration) -> AppResult<(JobRun, bool)> {
        // Due now and this process has an idle worker: the run is stored claimed by it and
        // starts here at once (the queue's push, a worker's fetch, its ack and the claim are
        // four writes on every run's path). Crash-safe like any claimed run: if this process
        // dies, the lease expires and the reaper retries the run.
        let mut slots = if delay.is_zero() {
            self.reserve(1)
        } else {
            LocalSlots::none()
        };
        if let Some(claim) = slots.claim(new.run.created_at) {
            claimed(&mut new, claim);
        }
        let (entry_point, retry_policy, claim) = (
            new.entry_point.clone(),
            new.retry_policy.clone(),
            new.claim.clone(),
        );
        match self.store.insert_run(new).await? {
            Inserted::Existing(run) => Ok((run, false)),
            Inserted::New(run) => {
                let accepted = as_accepted(&run);
                let started = Started {
                    run,
                    entry_point,
                    retry_policy,
                    claim,
                };
                self.dispatch(vec![started], &mut slots, delay, "the run")
                    .await;
                Ok((accepted, true))
            }
        }
    }

    /// Announces runs just committed (as accepted: `running` follows when an attempt starts),
    /// then starts those stored claimed on `slots` and enqueues the rest, due after `delay`.
    /// A failed enqueue is logged: the recovery sweep pushes overdue pending runs again.
    pub async fn dispatch(
        &self,
        runs: Vec<Started>,
        slots: &mut LocalSlots,
        delay: Duration,
        what: &str,
    ) {
        // Announced first, so that no worker's `running` overtakes `pending`.
        for s in &runs {
            publish_run(&self.bus, &as_accepted(&s.run)).await;
        }
        let mut tasks = Vec::new();
        for s in runs {
            match s.claim {
                Some(claim) => slots.start(ClaimedRun {
                    run: s.run,
                    entry_point: s.entry_point,
                    retry_policy: s.retry_policy,
                    lease_until: claim.lease_until,
                }),
                None => tasks.push(RunTask {
                    run_id: s.run.id,
                    attempt: s.run.attempt,
                }),
            }
        }
        if tasks.is_empty() {
            return;
        }
        if let Err(e) = self.queue.push_all(tasks, delay).await {
            tracing::error!(error = %e, "could not enqueue {what}; the recovery sweep will");
        }
        if delay.is_zero() {
            self.waker.wake();
        }
    }
}

/// A run just committed, ready to be announced and started or enqueued.
#[derive(Debug, Clone)]
pub struct Started {
    pub run: JobRun,
    pub entry_point: String,
    pub retry_policy: RetryPolicy,
    pub claim: Option<RunClaim>,
}

impl From<&NewRun> for Started {
    fn from(new: &NewRun) -> Started {
        Started {
            run: new.run.clone(),
            entry_point: new.entry_point.clone(),
            retry_policy: new.retry_policy.clone(),
            claim: new.claim.clone(),
        }
    }
}
