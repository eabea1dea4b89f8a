//! Job runs: start, read, cancel, retry.
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use wire::{JobDefinition, JobRun};

use crate::entrypoints::{self};
use crate::{
    engine::{StopReason, publish_run},
    store::{RunFilter, RunPage},
};
use domain::{
    auth::Principal,
    authority::{self},
    jobs::merge_parameters,
};

use super::{
    AppError, AppResult, JobService,
    jobs::not_found,
    launcher::{RunParts, new_run},
    refused_parameters,
};

/// Start a run of a job: `POST /api/jobs/:slug/run`, the launch form, a retry.
#[derive(Debug, Clone)]
pub struct RunJob {
    pub slug: String,
    pub request: RunRequest,
}

use domain::jobs::RunRequest;

impl JobService {
    /// Starts a run ([`RunJob`], parsed at the edge). Returns the run and whether it is new
    /// (false: the idempotency key's earlier run).
    pub async fn run_job(&self, cmd: RunJob, who: &Principal) -> AppResult<(JobRun, bool)> {
        let job = self.definition_for_run(&cmd.slug).await?;
        let req = cmd.request;
        authority::check_run_parameters(
            &job.entry_point,
            &entrypoints::rules(&job.entry_point),
            &job.default_parameters,
            &req.parameters,
            who,
        )
        .map_err(refused_parameters)?;
        let parameters = merge_parameters(&job.default_parameters, &req.parameters);
        let problems = self.launcher.check_parameters(&job, &parameters);
        if !problems.is_empty() {
            return Err(AppError::InvalidParameters(problems));
        }
        self.start(&job, parameters, req).await
    }

    /// Stores, announces and starts or enqueues a run of `job` with checked `parameters` and
    /// the request's options (the definition's where the request has none).
    async fn start(
        &self,
        job: &JobDefinition,
        parameters: Value,
        req: RunRequest,
    ) -> AppResult<(JobRun, bool)> {
        let now = Utc::now();
        let delay_ms = req.delay_ms.max(0);
        let parts = RunParts {
            parameters,
            context: req.context,
            timeout_ms: req.timeout_ms.unwrap_or(job.timeout_ms),
            attempt: 1,
            max_attempts: req
                .max_attempts
                .unwrap_or(job.retry_policy.max_attempts as i32),
            retry_policy: job.retry_policy.clone(),
            trigger: req.trigger,
            step: None,
            idempotency_key: req.idempotency_key,
            scheduled_at: now + chrono::Duration::milliseconds(delay_ms),
        };
        let delay = Duration::from_millis(delay_ms as u64);
        self.launcher.launch(new_run(job, parts, now), delay).await
    }

    /// The workflow and service use cases, on the same store and bus (for the pages).
    pub fn workflow_service(&self) -> crate::application::workflows::WorkflowService {
        crate::application::workflows::WorkflowService::new(
            self.store.clone(),
            self.bus.clone(),
            self.manager.clone(),
            self.credentials.clone(),
        )
    }

    /// The definition a new run uses: from the cache when it is fresh, else from the database.
    /// Starting runs is the hot path; a definition changes rarely, and every change evicts it.
    pub(super) async fn definition_for_run(&self, slug: &str) -> AppResult<JobDefinition> {
        let slug = Self::slug(slug)?;
        self.launcher
            .definitions()
            .get(&slug)
            .await?
            .ok_or_else(|| not_found("job", &slug))
    }

    pub async fn get_run(&self, id: &str) -> AppResult<JobRun> {
        self.store
            .get_run(id)
            .await?
            .ok_or_else(|| not_found("job run", id))
    }

    pub async fn list_runs(&self, slug: Option<&str>, mut filter: RunFilter) -> AppResult<RunPage> {
        if let Some(slug) = slug {
            filter.job_definition_id = Some(self.get_job(slug).await?.id);
        }
        Ok(self.store.list_runs(&filter).await?)
    }

    /// The last `lines` lines of a run's log as text (engine lines prefixed `[switchyard]`),
    /// at most `max_bytes` of them (the oldest go first), and the id of the last one.
    pub async fn run_log_tail(
        &self,
        id: &str,
        lines: u64,
        max_bytes: usize,
    ) -> AppResult<wire::LogTail> {
        let run = self.get_run(id).await?;
        let last = self.store.last_log_id(&run.id).await?;
        let start = self.store.log_tail_start(&run.id, 0, lines).await?;
        let mut shown: std::collections::VecDeque<String> = Default::default();
        let mut bytes = 0;
        let mut omitted = start > 0;
        let mut after = start;
        while after < last {
            let batch = self.store.read_logs(&run.id, after, 1000).await?;
            let Some(newest) = batch.last() else { break };
            after = newest.id;
            for line in batch.iter().filter(|l| l.id <= last) {
                let text = crate::store::format_log_line(line);
                bytes += text.len();
                shown.push_back(text);
                while bytes > max_bytes {
                    let Some(old) = shown.pop_front() else { break };
                    bytes -= old.len();
                    omitted = true;
                }
            }
        }
        Ok(wire::LogTail {
            text: shown.into_iter().collect(),
            last_line_id: last,
            omitted,
        })
    }

    /// Cancels a pending or running run (409 once finished). On a task of its own: a caller
    /// that goes away cannot leave the run canceled but its attempt still executing.
    pub async fn cancel_run(&self, id: &str) -> AppResult<JobRun> {
        let this = self.clone();
        let id = id.to_string();
        crate::detach::uncancellable(async move { this.cancel_run_here(&id).await }).await
    }

    async fn cancel_run_here(&self, id: &str) -> AppResult<JobRun> {
        let run = self.get_run(id).await?;
        if run.status.is_terminal() {
            return Err(AppError::Conflict(format!(
                "run {id} already ended as {}",
                run.status
            )));
        }
        // Logged before the status flips: log followers stop reading once the run has ended.
        let _ = self
            .store
            .append_logs(
                vec![(
                    id.to_string(),
                    run.attempt,
                    "system".into(),
                    "cancel requested by operator".into(),
                )],
                Utc::now(),
            )
            .await;
        match self.store.cancel(id, Utc::now()).await? {
            Some(canceled) => {
                if let Some(engine) = &self.engine {
                    engine.stop_run(id, StopReason::Canceled);
                }
                // Workers in other processes see this event and stop the attempt.
                publish_run(&self.bus, &canceled).await;
                if let Some(workflow_run_id) = &canceled.workflow_run_id {
                    self.orchestrator.reconcile(workflow_run_id).await?;
                }
                Ok(canceled)
            }
            None => {
                let now = self.get_run(id).await?;
                Err(AppError::Conflict(format!(
                    "run {id} already ended as {}",
                    now.status
                )))
            }
        }
    }

    /// Applies a PATCH to a run: only `{"status": "canceled"}` is supported.
    pub async fn patch_run(&self, id: &str, body: &Value) -> AppResult<JobRun> {
        let p = domain::jobs::cancel_patch_problems(body);
        if !p.is_empty() {
            // Existence first: a PATCH on an unknown run is a 404 whatever the body.
            self.get_run(id).await?;
            return Err(AppError::InvalidRequest(p));
        }
        self.cancel_run(id).await
    }

    /// A new run with the same parameters as a finished one. Definition-only parameters come
    /// from the job's current definition, never from the old run; secret references the old
    /// run's caller added (not the definition's) need `secrets:use` again.
    pub async fn retry_run(&self, id: &str, who: &Principal) -> AppResult<JobRun> {
        let run = self.get_run(id).await?;
        if !run.status.is_terminal() {
            return Err(AppError::Conflict(format!(
                "run {id} is still {}; retry it once it has ended",
                run.status
            )));
        }
        let job = self.store.get_job(&run.job_slug).await?.ok_or_else(|| {
            AppError::Conflict(format!("job {:?} no longer exists", run.job_slug))
        })?;
        let parameters = retried_parameters(&job, run.parameters, who)?;
        let options = RunRequest {
            parameters: Value::Null,
            timeout_ms: Some(run.timeout_ms),
            max_attempts: Some(run.max_attempts),
            context: run.context,
            idempotency_key: None,
            delay_ms: 0,
            trigger: run.trigger,
        };
        let (retried, _) = self.start(&job, parameters, options).await?;
        Ok(retried)
    }
}

/// The parameters of a retry: the old run's, with definition-only parameters taken from the
/// job's current definition. What differs from the current defaults was a caller's: the one
/// retrying must be allowed to give it (secret references need `secrets:use`).
fn retried_parameters(job: &JobDefinition, old: Value, who: &Principal) -> AppResult<Value> {
    let rules = entrypoints::rules(&job.entry_point);
    let mut given = caller_part(&job.default_parameters, &old);
    if let Some(obj) = given.as_object_mut() {
        for key in rules.definition_only {
            obj.remove(*key);
        }
    }
    authority::check_run_parameters(
        &job.entry_point,
        &rules,
        &job.default_parameters,
        &given,
        who,
    )
    .map_err(refused_parameters)?;
    Ok(merge_parameters(&job.default_parameters, &given))
}

/// What `merged` adds to or changes in `defaults` (the inverse of `merge_parameters` for
/// objects): entries equal to the default's are left out.
pub(super) fn caller_part(defaults: &Value, merged: &Value) -> Value {
    match (defaults, merged) {
        (Value::Object(d), Value::Object(m)) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| match d.get(k) {
                    Some(dv) if dv == v => None,
                    Some(dv) => Some((k.clone(), caller_part(dv, v))),
                    None => Some((k.clone(), v.clone())),
                })
                .collect(),
        ),
        (_, m) => m.clone(),
    }
}
