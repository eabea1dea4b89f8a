//! The job service: the use cases behind the REST API and the pages (one layer, no duplicated
//! queries). Handlers call these and map the result; nothing here knows HTTP.
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use wire::{JobDefinition, JobDefinitionVersion, JobWithRuns};

use super::versioned::{self, Versioned};
use crate::application::{
    AppError, AppResult, launcher::RunLauncher, orchestrator::Orchestrator, refused_definition,
    secrets::ServiceCredentials,
};
use crate::entrypoints::{self, Registry};
use crate::events::Event;
use crate::{engine::Engine, events::EventBus, store::Store};
use domain::jobs::JobSpec;
use domain::{
    auth::Principal,
    authority::{self, JobShape},
    jobs::{Slug, parse_job_spec},
};

#[derive(Clone)]
pub struct JobService {
    pub(super) store: Store,
    pub(super) bus: EventBus,
    pub(super) registry: Arc<Registry>,
    /// Present when this process executes runs: lets a cancel stop a local attempt at once.
    pub(super) engine: Option<Engine>,
    /// Checks, stores, announces and starts runs (shared with the orchestrator).
    pub(super) launcher: RunLauncher,
    pub(super) orchestrator: Orchestrator,
    /// Workflow runs, whichever engine runs them.
    pub(super) manager: crate::application::providers::Manager,
    /// Seals and opens service headers (the workflow service's registry use cases).
    pub(super) credentials: ServiceCredentials,
}

pub(super) fn not_found(what: &str, key: &str) -> AppError {
    AppError::NotFound(format!("{what} {key:?} not found"))
}

impl JobService {
    pub fn new(
        store: Store,
        bus: EventBus,
        registry: Arc<Registry>,
        engine: Option<Engine>,
        launcher: RunLauncher,
        orchestrator: Orchestrator,
        credentials: ServiceCredentials,
    ) -> Self {
        let manager = crate::application::providers::Manager::new(
            store.clone(),
            bus.clone(),
            launcher.clone(),
            orchestrator.clone(),
        );
        JobService {
            store,
            bus,
            registry,
            engine,
            launcher,
            orchestrator,
            manager,
            credentials,
        }
    }

    /// Workflow runs, whichever engine runs them (register further engines here).
    pub fn workflow_runs(&self) -> &crate::application::providers::Manager {
        &self.manager
    }

    /// What other workflow engines' executions do in this process.
    pub fn provider_activities(&self) -> crate::application::providers::activities::Activities {
        crate::application::providers::activities::Activities::new(
            self.store.clone(),
            self.bus.clone(),
            self.launcher.clone(),
            self.engine.clone(),
        )
    }

    /// Runs' logs, over the same store.
    pub fn logs(&self) -> super::logs::RunLogs {
        super::logs::RunLogs::new(self.store.clone())
    }

    /// The audit log, over the same store.
    pub fn audit(&self) -> super::audit::AuditLog {
        super::audit::AuditLog::new(self.store.clone())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn slug(input: &str) -> AppResult<String> {
        // A path slug that cannot be valid cannot exist either.
        Slug::parse(input)
            .map(|s| s.as_str().to_string())
            .map_err(|_| not_found("job", input))
    }

    pub async fn get_job(&self, slug: &str) -> AppResult<JobDefinition> {
        let slug = Self::slug(slug)?;
        self.store
            .get_job(&slug)
            .await?
            .ok_or_else(|| not_found("job", &slug))
    }

    pub async fn job_with_runs(&self, slug: &str) -> AppResult<JobWithRuns> {
        let job = self.get_job(slug).await?;
        let runs = self.store.recent_runs(&job.id, 10).await?;
        Ok(JobWithRuns { job, runs })
    }

    pub async fn list_jobs(&self) -> AppResult<Vec<JobDefinition>> {
        Ok(self.store.list_jobs().await?)
    }

    /// A page of job definitions, newest first (`GET /api/jobs`).
    pub async fn page_jobs(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> AppResult<crate::store::Page<JobDefinition>> {
        Ok(self.store.page_jobs(filter).await?)
    }

    /// A page of a job's versions, newest first (`GET /api/jobs/:slug/versions`).
    pub async fn page_job_versions(
        &self,
        slug: &str,
        page: &crate::store::PageRequest,
    ) -> AppResult<crate::store::Page<JobDefinitionVersion>> {
        let job = self.get_job(slug).await?;
        Ok(self.store.page_job_versions(&job.slug, page).await?)
    }

    pub async fn job_versions(&self, slug: &str) -> AppResult<Vec<JobDefinitionVersion>> {
        let job = self.get_job(slug).await?;
        Ok(self.store.job_versions(&job.slug).await?)
    }

    /// Creates or replaces (same or higher version) a definition. Returns it and whether it
    /// was created.
    pub async fn save_job(
        &self,
        body: &Value,
        who: &Principal,
    ) -> AppResult<(JobDefinition, bool)> {
        versioned::apply(self, &self.bus, body, None, who).await
    }

    /// Updates the given fields; the result is validated like a full definition.
    pub async fn patch_job(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> AppResult<JobDefinition> {
        let current = self.get_job(slug).await?;
        versioned::patch(self, &self.bus, current, patch, who).await
    }

    pub async fn delete_job(&self, slug: &str) -> AppResult<()> {
        let job = self.get_job(slug).await?;
        let active = self.store.count_active_runs(&job.id).await?;
        if active > 0 {
            return Err(AppError::Conflict(format!(
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
                            || (job.slug == crate::application::orchestrator::SERVICE_CALL_JOB
                                && step.get("type").and_then(Value::as_str) == Some("service"))
                    })
                })
            })
            .map(|w| w.slug)
            .collect();
        if !users.is_empty() {
            return Err(AppError::Conflict(format!(
                "job {:?} is a step of workflow(s) {}; change or delete them first",
                job.slug,
                users.join(", ")
            )));
        }
        self.store.delete_job(&job.id, &job.slug).await?;
        versioned::deleted(self, &self.bus, &job).await;
        Ok(())
    }
}

/// Who may write this job definition over `existing` (see `domain::authority`).
fn check_job_write(
    existing: Option<&JobDefinition>,
    spec: &domain::jobs::JobSpec,
    who: &Principal,
) -> AppResult<()> {
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
    authority::check_job_write(old, new, &entrypoints::rules, who).map_err(refused_definition)
}

/// Job definitions are versioned definitions.
#[async_trait::async_trait]
impl Versioned for JobService {
    type Spec = JobSpec;
    type Stored = JobDefinition;
    const WHAT: &'static str = "job";

    fn event(stored: &JobDefinition, deleted: bool) -> Event {
        Event::JobDefinition {
            job: stored.clone(),
            deleted,
        }
    }

    fn slug(stored: &JobDefinition) -> &str {
        &stored.slug
    }
    fn version(stored: &JobDefinition) -> i32 {
        stored.version
    }
    fn spec_slug(spec: &JobSpec) -> &str {
        spec.slug.as_str()
    }
    fn spec_version(spec: &JobSpec) -> i32 {
        spec.version
    }

    async fn parse(&self, doc: &Value) -> AppResult<JobSpec> {
        parse_job_spec(doc, &self.registry.names()).map_err(AppError::InvalidDefinition)
    }

    async fn get(&self, slug: &str) -> AppResult<Option<JobDefinition>> {
        Ok(self.store.get_job(slug).await?)
    }

    async fn check_write(
        &self,
        _doc: &Value,
        spec: &JobSpec,
        existing: Option<&JobDefinition>,
        who: &Principal,
    ) -> AppResult<()> {
        check_job_write(existing, spec, who)
    }

    async fn save(
        &self,
        spec: &JobSpec,
        existing: Option<&JobDefinition>,
    ) -> AppResult<JobDefinition> {
        Ok(self.store.save_job(spec, existing, Utc::now()).await?)
    }

    fn changed(&self, slug: &str) {
        // Runs start from the cache: this process forgets the old definition at once (others
        // on the event).
        self.launcher.definitions().evict(slug);
    }
}
