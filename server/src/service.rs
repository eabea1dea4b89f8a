//! The job service: the use cases behind the REST API and the pages (one layer, no duplicated
//! queries). Handlers call these and map the result; nothing here knows HTTP.
use std::{sync::Arc, time::Duration};

use wire::{JobDefinition, JobDefinitionVersion, JobRun, JobWithRuns, RunStatus, Trigger};
use app::{auth_pages::Viewer};
use chrono::Utc;
use serde_json::{Value, json};

use domain::{
        Problems,
        auth::Principal,
        authority::{self, JobShape, Refusal},
        jobs::{
            Slug, compile_parameters_schema, merge_parameters, parse_job_spec, parse_run_request,
            validate_parameters,
        },
    };
use crate::{definitions::DefinitionCache, engine::{
        Engine, LocalSlots, StopReason, as_accepted, publish_run,
        queue::{Queue, RunTask, WorkerWaker},
    }, events::EventBus, handlers::{self, Registry}, store::{ClaimedRun, Inserted, NewRun, RunFilter, RunPage, Store, new_id}};

/// What went wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid definition")]
    InvalidDefinition(Problems),
    #[error("invalid parameters")]
    InvalidParameters(Problems),
    #[error("invalid request")]
    InvalidRequest(Problems),
    /// The caller's token lacks a scope the request's content needs (`domain::authority`).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

#[derive(Clone)]
pub struct JobService {
    store: Store,
    bus: EventBus,
    queue: Queue,
    waker: WorkerWaker,
    registry: Arc<Registry>,
    /// Present when this process executes runs: lets a cancel stop a local attempt at once.
    engine: Option<Engine>,
    /// Compiled parameter schemas by definition id, valid while `updatedAt` is unchanged.
    validators: Arc<std::sync::Mutex<ValidatorCache>>,
    /// Definitions as starting a run reads them (shared with the orchestrator).
    definitions: DefinitionCache,
    orchestrator: crate::orchestrator::Orchestrator,
    /// Seals and opens service headers (the workflow service's registry use cases).
    credentials: crate::secrets::ServiceCredentials,
}

type ValidatorCache =
    std::collections::HashMap<String, (chrono::DateTime<Utc>, Arc<jsonschema::Validator>)>;

fn not_found(what: &str, key: &str) -> ServiceError {
    ServiceError::NotFound(format!("{what} {key:?} not found"))
}

impl JobService {
    pub fn new(
        store: Store,
        bus: EventBus,
        queue: Queue,
        waker: WorkerWaker,
        registry: Arc<Registry>,
        engine: Option<Engine>,
        credentials: crate::secrets::ServiceCredentials,
    ) -> Self {
        let orchestrator = match &engine {
            Some(e) => e.orchestrator().clone(),
            None => crate::orchestrator::Orchestrator::new(
                store.clone(),
                bus.clone(),
                queue.clone(),
                waker.clone(),
            ),
        };
        JobService {
            definitions: orchestrator.definitions().clone(),
            store,
            bus,
            queue,
            waker,
            registry,
            engine,
            validators: Default::default(),
            orchestrator,
            credentials,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn slug(input: &str) -> ServiceResult<String> {
        // A path slug that cannot be valid cannot exist either.
        Slug::parse(input)
            .map(|s| s.as_str().to_string())
            .map_err(|_| not_found("job", input))
    }

    pub async fn get_job(&self, slug: &str) -> ServiceResult<JobDefinition> {
        let slug = Self::slug(slug)?;
        self.store
            .get_job(&slug)
            .await?
            .ok_or_else(|| not_found("job", &slug))
    }

    pub async fn job_with_runs(&self, slug: &str) -> ServiceResult<JobWithRuns> {
        let job = self.get_job(slug).await?;
        let runs = self.store.recent_runs(&job.id, 10).await?;
        Ok(JobWithRuns { job, runs })
    }

    pub async fn list_jobs(&self) -> ServiceResult<Vec<JobDefinition>> {
        Ok(self.store.list_jobs().await?)
    }

    /// A page of job definitions, newest first (`GET /api/jobs`).
    pub async fn page_jobs(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> ServiceResult<crate::store::Page<JobDefinition>> {
        Ok(self.store.page_jobs(filter).await?)
    }

    /// A page of a job's versions, newest first (`GET /api/jobs/:slug/versions`).
    pub async fn page_job_versions(
        &self,
        slug: &str,
        page: &crate::store::PageRequest,
    ) -> ServiceResult<crate::store::Page<JobDefinitionVersion>> {
        let job = self.get_job(slug).await?;
        Ok(self.store.page_job_versions(&job.slug, page).await?)
    }

    pub async fn job_versions(&self, slug: &str) -> ServiceResult<Vec<JobDefinitionVersion>> {
        let job = self.get_job(slug).await?;
        Ok(self.store.job_versions(&job.slug).await?)
    }

    /// Creates or replaces (same or higher version) a definition. Returns it and whether it
    /// was created.
    pub async fn save_job(
        &self,
        body: &Value,
        who: &Principal,
    ) -> ServiceResult<(JobDefinition, bool)> {
        let names = self.registry.names();
        let spec = parse_job_spec(body, &names).map_err(ServiceError::InvalidDefinition)?;
        let existing = self.store.get_job(spec.slug.as_str()).await?;
        if let Some(e) = &existing
            && spec.version < e.version
        {
            return Err(ServiceError::Conflict(format!(
                "job {:?} is at version {}; version {} is lower",
                e.slug, e.version, spec.version
            )));
        }
        check_job_write(existing.as_ref(), &spec, who)?;
        let created = existing.is_none();
        let saved = self
            .store
            .save_job(&spec, existing.as_ref(), Utc::now())
            .await?;
        self.evict_definition(&saved.slug);
        self.bus
            .publish("job.definition.updated", json!({"job": saved}))
            .await;
        Ok((saved, created))
    }

    /// Updates the given fields; the result is validated like a full definition.
    pub async fn patch_job(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> ServiceResult<JobDefinition> {
        let current = self.get_job(slug).await?;
        let Some(patch_obj) = patch.as_object() else {
            let mut p = Problems::new();
            p.add("", "the body must be a JSON object");
            return Err(ServiceError::InvalidDefinition(p));
        };
        if let Some(s) = patch_obj.get("slug")
            && s.as_str().map(str::to_ascii_lowercase).as_deref() != Some(current.slug.as_str())
        {
            let mut p = Problems::new();
            p.add("/slug", "cannot be changed");
            return Err(ServiceError::InvalidDefinition(p));
        }
        let mut doc = serde_json::to_value(&current).unwrap_or(Value::Null);
        if let Some(obj) = doc.as_object_mut() {
            for key in ["id", "createdAt", "updatedAt"] {
                obj.remove(key);
            }
            for (k, v) in patch_obj {
                obj.insert(k.clone(), v.clone());
            }
        }
        let names = self.registry.names();
        let spec = parse_job_spec(&doc, &names).map_err(ServiceError::InvalidDefinition)?;
        if spec.version < current.version {
            return Err(ServiceError::Conflict(format!(
                "job {:?} is at version {}; version {} is lower",
                current.slug, current.version, spec.version
            )));
        }
        check_job_write(Some(&current), &spec, who)?;
        let saved = self
            .store
            .save_job(&spec, Some(&current), Utc::now())
            .await?;
        self.evict_definition(&saved.slug);
        self.bus
            .publish("job.definition.updated", json!({"job": saved}))
            .await;
        Ok(saved)
    }

    pub async fn delete_job(&self, slug: &str) -> ServiceResult<()> {
        let job = self.get_job(slug).await?;
        let active = self.store.count_active_runs(&job.id).await?;
        if active > 0 {
            return Err(ServiceError::Conflict(format!(
                "job {:?} has {active} pending or running run(s); cancel them first",
                job.slug
            )));
        }
        let users: Vec<String> = self
            .store
            .list_workflows()
            .await?
            .into_iter()
            .filter(|w| {
                w.steps.as_array().is_some_and(|steps| {
                    steps.iter().any(|step| {
                        step.get("jobSlug")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s.eq_ignore_ascii_case(&job.slug))
                            // Service steps execute as runs of the service-call job.
                            || (job.slug == crate::orchestrator::SERVICE_CALL_JOB
                                && step.get("type").and_then(Value::as_str) == Some("service"))
                    })
                })
            })
            .map(|w| w.slug)
            .collect();
        if !users.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "job {:?} is a step of workflow(s) {}; change or delete them first",
                job.slug,
                users.join(", ")
            )));
        }
        self.store.delete_job(&job.id, &job.slug).await?;
        self.evict_definition(&job.slug);
        self.bus
            .publish(
                "job.definition.updated",
                json!({"job": job, "deleted": true}),
            )
            .await;
        Ok(())
    }

    /// Every job with its last run status and success rate (finished runs that succeeded),
    /// from one grouped query over the runs.
    pub async fn job_summaries(&self) -> ServiceResult<Vec<wire::JobSummary>> {
        let stats = self.store.run_stats_by_job().await?;
        let mut out = Vec::new();
        for job in self.store.list_jobs().await? {
            let (mut total, mut finished, mut succeeded) = (0u64, 0u64, 0u64);
            let mut last: Option<(&str, RunStatus)> = None;
            for st in stats.iter().filter(|st| st.job_definition_id == job.id) {
                total += st.count;
                if st.status.is_terminal() {
                    finished += st.count;
                }
                if st.status == RunStatus::Succeeded {
                    succeeded += st.count;
                }
                if last.is_none_or(|(id, _)| st.newest_run_id.as_str() > id) {
                    last = Some((&st.newest_run_id, st.status));
                }
            }
            out.push(wire::JobSummary {
                job,
                last_run_status: last.map(|(_, status)| status),
                success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                run_count: total,
            });
        }
        Ok(out)
    }

    /// The dashboard: runs of the last 24 hours by status and by hour (counted by the
    /// database), and the latest failures.
    pub async fn dashboard(&self) -> ServiceResult<wire::Dashboard> {
        use chrono::{DurationRound, TimeDelta};
        let now = Utc::now();
        let first_hour = (now - TimeDelta::hours(23))
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(now);
        let slot = |status: RunStatus| RunStatus::ALL.iter().position(|x| *x == status);
        let mut counts = vec![0u64; RunStatus::ALL.len()];
        let mut hourly = vec![vec![0u64; RunStatus::ALL.len()]; 24];
        for (hour, status, n) in self.store.hourly_counts(first_hour).await? {
            let (Some(s), h) = (slot(status), (hour - first_hour).num_hours()) else {
                continue;
            };
            counts[s] += n;
            hourly[h.clamp(0, 23) as usize][s] += n;
        }
        let by_status = |c: &[u64]| {
            RunStatus::ALL
                .iter()
                .copied()
                .zip(c.iter().copied())
                .collect::<Vec<_>>()
        };
        let failures = RunFilter {
            statuses: vec![RunStatus::Failed, RunStatus::Expired],
            limit: 5,
            ..Default::default()
        };
        Ok(wire::Dashboard {
            counts: by_status(&counts),
            hourly: hourly
                .iter()
                .enumerate()
                .map(|(i, c)| (first_hour + TimeDelta::hours(i as i64), by_status(c)))
                .collect(),
            latest_failures: self.store.list_runs(&failures).await?.runs,
        })
    }

    /// Starts a run. Returns the run and whether it is new (false: idempotent replay).
    pub async fn run_job(
        &self,
        slug: &str,
        body: &Value,
        idempotency_header: Option<&str>,
        who: &Principal,
    ) -> ServiceResult<(JobRun, bool)> {
        let job = self.definition_for_run(slug).await?;
        let req =
            parse_run_request(body, idempotency_header).map_err(ServiceError::InvalidRequest)?;
        authority::check_run_parameters(
            &job.entry_point,
            &handlers::rules(&job.entry_point),
            &job.default_parameters,
            &req.parameters,
            who,
        )
        .map_err(refused_parameters)?;
        let parameters = merge_parameters(&job.default_parameters, &req.parameters);
        // Secret references are checked as the strings they will resolve to.
        let (checked, reference_problems) =
            domain::secrets::with_placeholders(&parameters, "/parameters");
        let mut problems = match self.validator(&job) {
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
            for (path, message) in handlers::parameter_problems(&job.entry_point, &checked) {
                problems.add(format!("/parameters{path}"), message);
            }
        }
        if !problems.is_empty() {
            return Err(ServiceError::InvalidParameters(problems));
        }
        self.create_run(
            job,
            parameters,
            req.timeout_ms,
            req.max_attempts,
            req.context,
            req.idempotency_key,
            req.delay_ms,
            req.trigger,
        )
        .await
    }

    /// The compiled parameter schema of `job`, compiled at most once per definition version.
    /// The workflow and service use cases, on the same store and bus (for the pages).
    pub fn workflow_service(&self) -> crate::workflows::WorkflowService {
        crate::workflows::WorkflowService::new(
            self.store.clone(),
            self.bus.clone(),
            self.orchestrator.clone(),
            self.credentials.clone(),
        )
    }

    /// The definition a new run uses: from the cache when it is fresh, else from the database.
    /// Starting runs is the hot path; a definition changes rarely, and every change evicts it.
    async fn definition_for_run(&self, slug: &str) -> ServiceResult<JobDefinition> {
        let slug = Self::slug(slug)?;
        self.definitions
            .get(&slug)
            .await?
            .ok_or_else(|| not_found("job", &slug))
    }

    /// Forgets a cached definition at once (a change made by this process).
    fn evict_definition(&self, slug: &str) {
        self.definitions.evict(slug);
    }

    fn validator(&self, job: &JobDefinition) -> Result<Arc<jsonschema::Validator>, String> {
        if let Ok(cache) = self.validators.lock()
            && let Some((updated_at, v)) = cache.get(&job.id)
            && *updated_at == job.updated_at
        {
            return Ok(v.clone());
        }
        let compiled = Arc::new(compile_parameters_schema(&job.parameters_schema)?);
        if let Ok(mut cache) = self.validators.lock() {
            cache.insert(job.id.clone(), (job.updated_at, compiled.clone()));
        }
        Ok(compiled)
    }

    /// Stores a new run and starts or enqueues it, on a task of its own: once the insert is
    /// sent, a caller that goes away (a client that disconnects) cannot leave a run committed
    /// already claimed by this process but never started, nor an unannounced one.
    #[allow(clippy::too_many_arguments)]
    async fn create_run(
        &self,
        job: JobDefinition,
        parameters: Value,
        timeout_ms: Option<i64>,
        max_attempts: Option<i32>,
        context: Option<Value>,
        idempotency_key: Option<String>,
        delay_ms: i64,
        trigger: Trigger,
    ) -> ServiceResult<(JobRun, bool)> {
        let this = self.clone();
        crate::detach::uncancellable(async move {
            this.store_and_start_run(
                job,
                parameters,
                timeout_ms,
                max_attempts,
                context,
                idempotency_key,
                delay_ms,
                trigger,
            )
            .await
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_and_start_run(
        &self,
        job: JobDefinition,
        parameters: Value,
        timeout_ms: Option<i64>,
        max_attempts: Option<i32>,
        context: Option<Value>,
        idempotency_key: Option<String>,
        delay_ms: i64,
        trigger: Trigger,
    ) -> ServiceResult<(JobRun, bool)> {
        let now = Utc::now();
        let delay = Duration::from_millis(delay_ms.max(0) as u64);
        // Due now and this process has an idle worker: the run is stored claimed by it and
        // starts here at once (the queue's push, a worker's fetch, its ack and the claim are
        // four writes on every run's path). Crash-safe like any claimed run: if this process
        // dies, the lease expires and the reaper retries the run.
        let mut slots = match &self.engine {
            Some(engine) if delay.is_zero() => engine.reserve(1),
            _ => LocalSlots::none(),
        };
        let entry_point = job.entry_point.clone();
        let retry_policy = job.retry_policy.clone();
        let claim = slots.claim(now);
        let lease_until = claim.as_ref().map_or(now, |c| c.lease_until);
        let new = NewRun {
            id: new_id(),
            parameters,
            context,
            timeout_ms: timeout_ms.unwrap_or(job.timeout_ms),
            max_attempts: max_attempts.unwrap_or(job.retry_policy.max_attempts as i32),
            retry_policy: job.retry_policy.clone(),
            trigger,
            idempotency_key,
            scheduled_at: now + chrono::Duration::milliseconds(delay_ms.max(0)),
            now,
            claim,
            definition: job,
        };
        match self.store.insert_run(new).await? {
            Inserted::Existing(run) => Ok((run, false)),
            Inserted::New(run) => {
                // Answered and announced as accepted; `running` follows when the attempt starts.
                let accepted = as_accepted(&run);
                publish_run(&self.bus, &accepted).await;
                if run.status == RunStatus::Running {
                    slots.start(ClaimedRun {
                        run,
                        entry_point,
                        retry_policy,
                        lease_until,
                    });
                    return Ok((accepted, true));
                }
                let task = RunTask {
                    run_id: run.id.clone(),
                    attempt: run.attempt,
                };
                if let Err(e) = self.queue.push(task, delay).await {
                    tracing::error!(run_id = %run.id, error = %e, "could not enqueue the run; the recovery sweep will");
                }
                if delay.is_zero() {
                    self.waker.wake();
                }
                Ok((run, true))
            }
        }
    }

    pub async fn get_run(&self, id: &str) -> ServiceResult<JobRun> {
        self.store
            .get_run(id)
            .await?
            .ok_or_else(|| not_found("job run", id))
    }

    pub async fn list_runs(
        &self,
        slug: Option<&str>,
        mut filter: RunFilter,
    ) -> ServiceResult<RunPage> {
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
    ) -> ServiceResult<wire::LogTail> {
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
    pub async fn cancel_run(&self, id: &str) -> ServiceResult<JobRun> {
        let this = self.clone();
        let id = id.to_string();
        crate::detach::uncancellable(async move { this.cancel_run_here(&id).await }).await
    }

    async fn cancel_run_here(&self, id: &str) -> ServiceResult<JobRun> {
        let run = self.get_run(id).await?;
        if run.status.is_terminal() {
            return Err(ServiceError::Conflict(format!(
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
                Err(ServiceError::Conflict(format!(
                    "run {id} already ended as {}",
                    now.status
                )))
            }
        }
    }

    /// Applies a PATCH to a run: only `{"status": "canceled"}` is supported.
    pub async fn patch_run(&self, id: &str, body: &Value) -> ServiceResult<JobRun> {
        let p = domain::jobs::cancel_patch_problems(body);
        if !p.is_empty() {
            // Existence first: a PATCH on an unknown run is a 404 whatever the body.
            self.get_run(id).await?;
            return Err(ServiceError::InvalidRequest(p));
        }
        self.cancel_run(id).await
    }

    /// A new run with the same parameters as a finished one. Definition-only parameters come
    /// from the job's current definition, never from the old run; secret references the old
    /// run's caller added (not the definition's) need `secrets:use` again.
    pub async fn retry_run(&self, id: &str, who: &Principal) -> ServiceResult<JobRun> {
        let run = self.get_run(id).await?;
        if !run.status.is_terminal() {
            return Err(ServiceError::Conflict(format!(
                "run {id} is still {}; retry it once it has ended",
                run.status
            )));
        }
        let job = self.store.get_job(&run.job_slug).await?.ok_or_else(|| {
            ServiceError::Conflict(format!("job {:?} no longer exists", run.job_slug))
        })?;
        let parameters = retried_parameters(&job, run.parameters, who)?;
        let (new_run, _) = self
            .create_run(
                job,
                parameters,
                Some(run.timeout_ms),
                Some(run.max_attempts),
                run.context,
                None,
                0,
                run.trigger,
            )
            .await?;
        Ok(new_run)
    }

    /// Inserts each default definition once in the life of the database: a seeded job an
    /// operator deleted stays deleted (`seed_markers` remembers what was seeded). A database
    /// from before the markers gets them for the jobs it has; a `repository-build` still
    /// exactly as the old seed left it (taking its command from callers) is replaced by the
    /// current seed, which builds with the command its definition sets.
    pub async fn seed_defaults(&self) -> ServiceResult<()> {
        let seeder = Principal::internal("system:seed");
        for doc in default_definitions() {
            let slug = doc["slug"].as_str().unwrap_or_default().to_string();
            let marker = format!("job:{slug}");
            if self.store.is_seeded(&marker).await? {
                continue;
            }
            match self.store.get_job(&slug).await? {
                Some(job) if is_old_build_seed(&job) => {
                    let mut doc = doc.clone();
                    doc["version"] = json!(job.version + 1);
                    self.save_job(&doc, &seeder).await?;
                    tracing::info!(
                        slug,
                        "replaced the old seeded definition, which took its command from callers"
                    );
                }
                Some(_) => {}
                None => match self.save_job(&doc, &seeder).await {
                    Ok(_) => tracing::info!(slug, "seeded default job definition"),
                    // Another process seeding at the same moment won the unique slug.
                    Err(ServiceError::Database(e)) => {
                        tracing::debug!(slug, error = %e, "seed skipped")
                    }
                    Err(e) => return Err(e),
                },
            }
            // Remembered after the job exists: a crash in between seeds it again next time.
            self.store.mark_seeded(&marker, Utc::now()).await?;
        }
        Ok(())
    }
}

/// The repository-build definition seeded before definition-only parameters existed: no
/// command of its own, so every caller chose one.
fn is_old_build_seed(job: &JobDefinition) -> bool {
    job.slug == "repository-build"
        && job.version == 1
        && job.entry_point == handlers::REPOSITORY_BUILD
        && job.default_parameters == json!({})
        && job.metadata.get("seeded") == Some(&json!(true))
        && job.parameters_schema.pointer("/required") == Some(&json!(["command"]))
}

/// The run request's refusal as an error: definition-only problems are invalid parameters.
fn refused_parameters(r: Refusal) -> ServiceError {
    match r {
        Refusal::Invalid(p) => ServiceError::InvalidParameters(p),
        Refusal::Forbidden(m) => ServiceError::Forbidden(m),
    }
}

/// A definition write's refusal as an error.
pub(crate) fn refused_definition(r: Refusal) -> ServiceError {
    match r {
        Refusal::Invalid(p) => ServiceError::InvalidDefinition(p),
        Refusal::Forbidden(m) => ServiceError::Forbidden(m),
    }
}

/// Who may write this job definition over `existing` (see `domain::authority`).
fn check_job_write(
    existing: Option<&JobDefinition>,
    spec: &domain::jobs::JobSpec,
    who: &Principal,
) -> ServiceResult<()> {
    let old = existing.map(|e| JobShape {
        slug: &e.slug,
        entry_point: &e.entry_point,
        defaults: &e.default_parameters,
    });
    let new = JobShape {
        slug: spec.slug.as_str(),
        entry_point: &spec.entry_point,
        defaults: &spec.default_parameters,
    };
    authority::check_job_write(old, new, &handlers::rules, who).map_err(refused_definition)
}

/// The parameters of a retry: the old run's, with definition-only parameters taken from the
/// job's current definition. What differs from the current defaults was a caller's: the one
/// retrying must be allowed to give it (secret references need `secrets:use`).
fn retried_parameters(job: &JobDefinition, old: Value, who: &Principal) -> ServiceResult<Value> {
    let rules = handlers::rules(&job.entry_point);
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
fn caller_part(defaults: &Value, merged: &Value) -> Value {
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

fn default_definitions() -> Vec<Value> {
    vec![
        json!({
            "slug": "repository-ingest", "name": "Repository ingestion", "version": 1, "type": "batch",
            "entryPoint": "builtin:repository-ingest",
            "parametersSchema": {"type": "object", "required": ["repoUrl"], "properties": {
                "repoUrl": {"type": "string", "description": "Local path, file:// or http(s) URL of a git repository"},
                "ref": {"type": "string", "description": "Branch, tag or commit (default: the remote's HEAD)"}}},
            "defaultParameters": {}, "timeoutMs": 600000,
            "retryPolicy": {"maxAttempts": 3, "strategy": "exponential", "initialDelayMs": 1000, "maxDelayMs": 60000, "jitter": "full"},
            "metadata": {"tags": ["ingest"], "seeded": true}
        }),
        // Callers choose the repository; the definition chooses what runs (definition-only
        // command, env and checkout: change them with a token holding jobs:exec).
        json!({
            "slug": "repository-build", "name": "Repository build", "version": 1, "type": "batch",
            "entryPoint": "builtin:repository-build",
            "parametersSchema": {"type": "object", "required": ["repoUrl"], "properties": {
                "repoUrl": {"type": "string", "description": "Local path, file:// or http(s) URL of the git repository to build"},
                "ref": {"type": "string", "description": "Branch, tag or commit (default: the remote's HEAD)"}}},
            "defaultParameters": {"command": ["make"]}, "timeoutMs": 1800000,
            "retryPolicy": {"maxAttempts": 1, "strategy": "none"},
            "metadata": {"tags": ["build"], "seeded": true,
                "description": "Ingests repoUrl into <data-dir>/checkouts and runs `make` there as the build user; the command and environment are the definition's"}
        }),
    ]
}

#[async_trait::async_trait]
impl app::data::Backend for JobService {
    async fn job_summaries(&self) -> Result<Vec<wire::JobSummary>, String> {
        JobService::job_summaries(self)
            .await
            .map_err(|e| e.to_string())
    }

    async fn services(&self) -> Result<Vec<wire::Service>, String> {
        let services = self
            .workflow_service()
            .list_services()
            .await
            .map_err(|e| e.to_string())?;
        Ok(services)
    }

    async fn service_detail(&self, slug: &str) -> Result<wire::ServiceDetail, String> {
        storable(&[("slug", slug)])?;
        let workflows = self.workflow_service();
        let service = workflows
            .get_service(slug)
            .await
            .map_err(|e| e.to_string())?;
        let users = workflows
            .list_workflows()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|w| {
                w.steps.as_array().is_some_and(|steps| {
                    steps.iter().any(|s| {
                        s["type"] == "service" && s["serviceSlug"].as_str() == Some(&service.slug)
                    })
                })
            })
            .collect();
        Ok(wire::ServiceDetail {
            service,
            workflows: users,
        })
    }

    async fn workflow_summaries(&self) -> Result<Vec<wire::WorkflowSummary>, String> {
        use wire::WorkflowRunStatus;
        let stats = self
            .store
            .workflow_run_stats()
            .await
            .map_err(|e| e.to_string())?;
        // The newest run of each workflow: the greatest newest id over its statuses.
        let mut newest: std::collections::HashMap<&str, &str> = Default::default();
        for st in &stats {
            let entry = newest.entry(st.workflow_slug.as_str()).or_insert("");
            if st.newest_run_id.as_str() > *entry {
                *entry = st.newest_run_id.as_str();
            }
        }
        let last_runs: std::collections::HashMap<String, wire::WorkflowRun> = self
            .store
            .workflow_runs_by_ids(newest.values().map(|id| id.to_string()).collect())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| (r.workflow_slug.clone(), r))
            .collect();
        let list = self
            .workflow_service()
            .list_workflows()
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .map(|workflow| {
                let (mut runs, mut finished, mut succeeded) = (0u64, 0u64, 0u64);
                for st in stats.iter().filter(|st| st.workflow_slug == workflow.slug) {
                    runs += st.count;
                    if st.status.is_terminal() {
                        finished += st.count;
                    }
                    if st.status == WorkflowRunStatus::Succeeded {
                        succeeded += st.count;
                    }
                }
                let last = last_runs.get(&workflow.slug);
                wire::WorkflowSummary {
                    last_run_status: last.map(|r| r.status),
                    last_run_at: last.map(|r| r.created_at),
                    runs,
                    succeeded,
                    success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                    workflow,
                }
            })
            .collect())
    }

    async fn job_slugs(&self) -> Result<Vec<String>, String> {
        let mut slugs: Vec<String> = self
            .list_jobs()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|j| j.slug)
            .collect();
        slugs.sort();
        Ok(slugs)
    }

    async fn list_runs(&self, q: wire::RunQuery) -> Result<wire::RunList, String> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        storable(&[
            ("job", &text(&q.job)),
            ("q", &text(&q.q)),
            ("cursor", &text(&q.cursor)),
        ])?;
        let filter = RunFilter {
            statuses: q.status.into_iter().collect(),
            q: q.q,
            cursor: q.cursor,
            limit: q.limit.clamp(1, 100),
            ..Default::default()
        };
        let page = JobService::list_runs(self, q.job.as_deref(), filter)
            .await
            .map_err(|e| e.to_string())?;
        Ok(wire::RunList {
            runs: page.runs,
            total: page.total,
            next_cursor: page.next_cursor,
        })
    }

    async fn get_run(&self, id: &str) -> Result<JobRun, String> {
        storable(&[("id", id)])?;
        JobService::get_run(self, id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn run_log_tail(&self, id: &str, lines: u64) -> Result<wire::LogTail, String> {
        storable(&[("id", id)])?;
        JobService::run_log_tail(self, id, lines, app::data::LOG_TAIL_BYTES)
            .await
            .map_err(|e| e.to_string())
    }

    async fn cancel_run(&self, id: &str) -> Result<JobRun, String> {
        storable(&[("id", id)])?;
        JobService::cancel_run(self, id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn retry_run(&self, viewer: &Viewer, id: &str) -> Result<JobRun, String> {
        storable(&[("id", id)])?;
        JobService::retry_run(self, id, &principal_of(viewer))
            .await
            .map_err(|e| e.to_string())
    }

    async fn job_detail(&self, slug: &str) -> Result<wire::JobDetail, String> {
        storable(&[("slug", slug)])?;
        let job = self.get_job(slug).await.map_err(|e| e.to_string())?;
        let versions = self
            .store
            .job_versions(&job.slug)
            .await
            .map_err(|e| e.to_string())?;
        Ok(wire::JobDetail { job, versions })
    }

    async fn launch(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<wire::LaunchOutcome, String> {
        storable(&[("slug", slug)])?;
        if let Err(problems) = storable_parameters(&parameters) {
            return Ok(wire::LaunchOutcome {
                run: None,
                problems,
            });
        }
        // The form shows the job's defaults and sends them back: only what the operator
        // changed is theirs (a definition-only value left as shown is not an override).
        let parameters = match self.definition_for_run(slug).await {
            Ok(job) => caller_part(&job.default_parameters, &parameters),
            Err(_) => parameters,
        };
        let body = serde_json::json!({ "parameters": parameters });
        match self.run_job(slug, &body, None, &principal_of(viewer)).await {
            Ok((run, _)) => Ok(wire::LaunchOutcome {
                run: Some(run),
                problems: Vec::new(),
            }),
            Err(ServiceError::InvalidParameters(p) | ServiceError::InvalidRequest(p)) => {
                Ok(wire::LaunchOutcome {
                    run: None,
                    problems: p.into_vec(),
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn dashboard(&self) -> Result<wire::Dashboard, String> {
        JobService::dashboard(self).await.map_err(|e| e.to_string())
    }

    async fn workflow_detail(&self, slug: &str) -> Result<wire::WorkflowPageData, String> {
        storable(&[("slug", slug)])?;
        let workflows = self.workflow_service();
        let with_runs = workflows
            .workflow_with_runs(slug)
            .await
            .map_err(|e| e.to_string())?;
        let versions = workflows
            .workflow_versions(&with_runs.workflow.slug)
            .await
            .map_err(|e| e.to_string())?;
        let latest_steps = match with_runs.runs.first() {
            Some(run) => Some(
                workflows
                    .workflow_run_steps(&run.id)
                    .await
                    .map_err(|e| e.to_string())?
                    .steps,
            ),
            None => None,
        };
        Ok(wire::WorkflowPageData {
            workflow: with_runs.workflow,
            versions,
            runs: with_runs.runs,
            latest_steps,
        })
    }

    async fn workflow_runs(&self) -> Result<Vec<wire::WorkflowRun>, String> {
        let filter = crate::store::WorkflowRunFilter {
            limit: 25,
            ..Default::default()
        };
        let (runs, _, _) = self
            .workflow_service()
            .list_workflow_runs(None, filter)
            .await
            .map_err(|e| e.to_string())?;
        Ok(runs)
    }

    async fn workflow_run(&self, id: &str) -> Result<wire::WorkflowRunWithSteps, String> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .workflow_run_steps(id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn launch_workflow(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<wire::WorkflowLaunchOutcome, String> {
        storable(&[("slug", slug)])?;
        if let Err(problems) = storable_parameters(&parameters) {
            return Ok(wire::WorkflowLaunchOutcome {
                run: None,
                problems,
            });
        }
        let body = serde_json::json!({ "parameters": parameters });
        match self
            .workflow_service()
            .run_workflow(slug, &body, None, &principal_of(viewer))
            .await
        {
            Ok((run, _)) => Ok(wire::WorkflowLaunchOutcome {
                run: Some(run),
                problems: Vec::new(),
            }),
            Err(ServiceError::InvalidParameters(p) | ServiceError::InvalidRequest(p)) => {
                Ok(wire::WorkflowLaunchOutcome {
                    run: None,
                    problems: p.into_vec(),
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn cancel_workflow_run(&self, id: &str) -> Result<wire::WorkflowRun, String> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .patch_workflow_run(id, &serde_json::json!({ "status": "canceled" }))
            .await
            .map_err(|e| e.to_string())
    }

    async fn retry_workflow_run(
        &self,
        viewer: &Viewer,
        id: &str,
    ) -> Result<wire::WorkflowRun, String> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .retry_workflow_run(id, &principal_of(viewer))
            .await
            .map_err(|e| e.to_string())
    }

    async fn rerun_workflow_run(
        &self,
        viewer: &Viewer,
        id: &str,
    ) -> Result<wire::WorkflowRun, String> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .rerun_workflow_run(id, &principal_of(viewer))
            .await
            .map_err(|e| e.to_string())
    }

    async fn audit_logs(
        &self,
        query: wire::AuditQuery,
    ) -> Result<wire::AuditList, String> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        storable(&[
            ("action", &query.actions.join(",")),
            ("subject", &text(&query.subject)),
            ("status", &query.statuses.join(",")),
            ("cursor", &text(&query.cursor)),
        ])?;
        let page = self
            .store()
            .list_audit_logs(&crate::store::AuditFilter {
                actions: query.actions,
                subject: query.subject,
                statuses: query.statuses,
                since: query.since,
                until: query.until,
                cursor: query.cursor,
                limit: query.limit,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(wire::AuditList {
            entries: page.entries,
            next_cursor: page.next_cursor,
        })
    }
}

/// Page input (a server function's arguments) holding U+0000, which no database stores or
/// matches, is refused before any query sees it, naming the fields (the REST API refuses it
/// in `http::input` and `ApiJson`).
fn storable(fields: &[(&str, &str)]) -> Result<(), String> {
    let refused: Vec<String> = fields
        .iter()
        .filter(|(_, value)| domain::problems::has_nul(value))
        .map(|(name, _)| format!("{name} {}", domain::problems::NUL_MESSAGE))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid input: {}", refused.join("; ")))
    }
}

/// A launch form's parameters holding U+0000: one problem for each such string or key.
fn storable_parameters(parameters: &serde_json::Value) -> Result<(), Vec<wire::ErrorDetail>> {
    let mut p = Problems::new();
    domain::problems::check_json("/parameters", parameters, &mut p);
    p.finish(()).map_err(Problems::into_vec)
}

/// The principal behind a page's server-function call, as the auth middleware saw it.
fn principal_of(viewer: &Viewer) -> Principal {
    if viewer.open {
        return Principal::local();
    }
    Principal {
        subject: viewer
            .subject
            .clone()
            .unwrap_or_else(|| "anonymous".to_string()),
        scopes: viewer
            .scopes
            .iter()
            .filter_map(|s| domain::auth::Scope::parse(s))
            .collect(),
        token_hash_prefix: None,
    }
}
