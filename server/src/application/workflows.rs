//! The workflow-definition and service-registry use cases behind the REST API: validate (with
//! a catalog of the jobs and services that exist), store, publish. Nothing here knows HTTP.
use std::collections::HashSet;

use chrono::Utc;
use serde_json::Value;
use wire::{
    Service, WorkflowDefinition, WorkflowDefinitionVersion, WorkflowRun, WorkflowRunWithSteps,
    WorkflowWithRuns,
};

use super::versioned::{self, Versioned};
use crate::application::orchestrator::WorkflowRunRequest;
use crate::application::providers::Manager;
use crate::application::{AppError, AppResult, refused_definition};
use crate::entrypoints;
use crate::events::Event;
use crate::{
    application::secrets::ServiceCredentials,
    events::EventBus,
    store::{Store, WorkflowRunFilter},
};
use domain::{
    auth::Principal,
    authority::{self, StepJob},
    jobs::Slug,
    workflow::{Catalog, StepAction, WorkflowSpec, parse_workflow_spec},
};

/// The jobs and services that exist, read once per validation.
struct DbCatalog {
    jobs: HashSet<String>,
    services: HashSet<String>,
    providers: Vec<String>,
}

impl Catalog for DbCatalog {
    fn job_exists(&self, slug: &str) -> bool {
        self.jobs.contains(slug)
    }

    fn service_exists(&self, slug: &str) -> bool {
        self.services.contains(slug)
    }

    fn providers(&self) -> Vec<String> {
        self.providers.clone()
    }
}

pub(super) use super::jobs::not_found;
pub(super) use super::versioned::merge_patch;

/// Start a run of a workflow: `POST /api/workflows/:slug/run`, the launch form.
#[derive(Debug, Clone)]
pub struct StartWorkflowRun {
    pub slug: String,
    pub request: WorkflowRunRequest,
}

#[derive(Clone)]
pub struct WorkflowService {
    pub(super) store: Store,
    pub(super) bus: EventBus,
    pub(super) manager: Manager,
    pub(super) credentials: ServiceCredentials,
}

impl WorkflowService {
    pub fn new(
        store: Store,
        bus: EventBus,
        manager: Manager,
        credentials: ServiceCredentials,
    ) -> Self {
        WorkflowService {
            store,
            bus,
            manager,
            credentials,
        }
    }

    // ---- workflow runs ----

    /// Starts a run for a caller ([`StartWorkflowRun`], parsed at the edge); `false`: the
    /// idempotency key's earlier run.
    pub async fn run_workflow(
        &self,
        cmd: StartWorkflowRun,
        who: &Principal,
    ) -> AppResult<(WorkflowRun, bool)> {
        let workflow = self.get_workflow(&cmd.slug).await?;
        authority::check_workflow_run_parameters(&cmd.request.parameters, who)
            .map_err(refused_definition)?;
        self.manager.start_request(&workflow, cmd.request).await
    }

    /// Starts a run a trigger fired (parameters written by the workflow's author, or the
    /// event's), with a trigger object only the server writes.
    pub async fn run_triggered(
        &self,
        slug: &str,
        request: crate::application::orchestrator::WorkflowRunRequest,
    ) -> AppResult<(WorkflowRun, bool)> {
        let workflow = self.get_workflow(slug).await?;
        self.manager.start_request(&workflow, request).await
    }

    pub async fn get_workflow_run(&self, id: &str) -> AppResult<WorkflowRun> {
        self.manager.get(id).await
    }

    pub async fn workflow_run_steps(&self, id: &str) -> AppResult<WorkflowRunWithSteps> {
        self.manager.with_steps(id).await
    }

    /// Lists runs, of one workflow (`slug`) or of all, newest first.
    pub async fn list_workflow_runs(
        &self,
        slug: Option<&str>,
        filter: WorkflowRunFilter,
    ) -> AppResult<(Vec<WorkflowRun>, u64, Option<String>)> {
        let mut filter = filter;
        if let Some(slug) = slug {
            filter.workflow_slug = Some(self.get_workflow(slug).await?.slug);
        }
        self.manager.list(&filter).await
    }

    /// Applies a PATCH: only `{"status": "canceled"}` is supported.
    pub async fn patch_workflow_run(&self, id: &str, body: &Value) -> AppResult<WorkflowRun> {
        let p = domain::jobs::cancel_patch_problems(body);
        if !p.is_empty() {
            self.manager.get(id).await?;
            return Err(AppError::InvalidRequest(p));
        }
        self.cancel_workflow_run(id).await
    }

    /// Cancels a pending or running run and its unfinished steps (409 once finished).
    pub async fn cancel_workflow_run(&self, id: &str) -> AppResult<WorkflowRun> {
        self.manager.cancel(id).await
    }

    /// Resumes a failed or canceled run; its parameters resolve again, so secret references
    /// in them need `secrets:use` from the one asking, as for a new run.
    pub async fn retry_workflow_run(&self, id: &str, who: &Principal) -> AppResult<WorkflowRun> {
        let run = self.manager.get(id).await?;
        authority::check_workflow_run_parameters(&run.parameters, who)
            .map_err(refused_definition)?;
        self.manager.resume(id).await
    }

    /// A new run with the same parameters; secret references in them need `secrets:use`
    /// from the one asking, as for a new run.
    pub async fn rerun_workflow_run(&self, id: &str, who: &Principal) -> AppResult<WorkflowRun> {
        let run = self.manager.get(id).await?;
        authority::check_workflow_run_parameters(&run.parameters, who)
            .map_err(refused_definition)?;
        self.manager.rerun(id).await
    }

    /// A path slug that cannot be valid cannot exist either.
    pub(super) fn slug(input: &str, what: &str) -> AppResult<String> {
        Slug::parse(input)
            .map(|s| s.as_str().to_string())
            .map_err(|_| not_found(what, input))
    }

    async fn catalog(&self) -> AppResult<DbCatalog> {
        Ok(DbCatalog {
            jobs: self.store.job_slugs().await?,
            services: self.store.service_slugs().await?,
            providers: self.manager.registry().names(),
        })
    }

    // ---- workflow definitions ----

    pub async fn get_workflow(&self, slug: &str) -> AppResult<WorkflowDefinition> {
        let slug = Self::slug(slug, "workflow")?;
        self.store
            .get_workflow(&slug)
            .await?
            .ok_or_else(|| not_found("workflow", &slug))
    }

    /// The definition and its recent runs (none until workflow runs exist).
    pub async fn workflow_with_runs(&self, slug: &str) -> AppResult<WorkflowWithRuns> {
        let workflow = self.get_workflow(slug).await?;
        let filter = WorkflowRunFilter {
            workflow_slug: Some(workflow.slug.clone()),
            limit: 20,
            ..Default::default()
        };
        let (runs, _, _) = self.manager.list(&filter).await?;
        Ok(WorkflowWithRuns { workflow, runs })
    }

    pub async fn list_workflows(&self) -> AppResult<Vec<WorkflowDefinition>> {
        Ok(self.store.list_workflows().await?)
    }

    /// A page of workflow definitions, newest first (`GET /api/workflows`).
    pub async fn page_workflows(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> AppResult<crate::store::Page<WorkflowDefinition>> {
        Ok(self.store.page_workflows(filter).await?)
    }

    /// A page of services, newest first (`GET /api/services`).
    pub async fn page_services(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> AppResult<crate::store::Page<Service>> {
        Ok(self.store.page_services(filter).await?)
    }

    /// A page of a workflow's versions, newest first (`GET /api/workflows/:slug/versions`).
    pub async fn page_workflow_versions(
        &self,
        slug: &str,
        page: &crate::store::PageRequest,
    ) -> AppResult<crate::store::Page<WorkflowDefinitionVersion>> {
        let workflow = self.get_workflow(slug).await?;
        Ok(self
            .store
            .page_workflow_versions(&workflow.slug, page)
            .await?)
    }

    pub async fn workflow_versions(&self, slug: &str) -> AppResult<Vec<WorkflowDefinitionVersion>> {
        let workflow = self.get_workflow(slug).await?;
        Ok(self.store.workflow_versions(&workflow.slug).await?)
    }

    /// Who may write this definition: steps that set definition-only parameters need
    /// `jobs:exec`, secret references need `secrets:use` (see `domain::authority`).
    async fn check_workflow_write(
        &self,
        doc: &Value,
        spec: &WorkflowSpec,
        who: &Principal,
    ) -> AppResult<()> {
        let jobs: std::collections::HashMap<String, wire::JobDefinition> = self
            .store
            .list_jobs()
            .await?
            .into_iter()
            .map(|j| (j.slug.clone(), j))
            .collect();
        let steps: Vec<StepJob<'_>> = spec
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, step)| {
                let StepAction::Job(j) = &step.action else {
                    return None;
                };
                let job = jobs.get(j.job_slug.as_str())?;
                Some(StepJob {
                    at: format!("/steps/{i}"),
                    step_id: &step.id,
                    parameters: &j.parameters,
                    entry_point: &job.entry_point,
                    job_defaults: &job.default_parameters,
                })
            })
            .collect();
        authority::check_workflow_write(doc, &steps, &entrypoints::rules, who)
            .map_err(refused_definition)
    }

    /// Creates or replaces (same or higher version) a definition. Returns it and whether it
    /// was created.
    pub async fn save_workflow(
        &self,
        body: &Value,
        who: &Principal,
    ) -> AppResult<(WorkflowDefinition, bool)> {
        versioned::apply(self, &self.bus, body, None, who).await
    }

    /// Updates the given fields; the result is validated like a full definition.
    pub async fn patch_workflow(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> AppResult<WorkflowDefinition> {
        let current = self.get_workflow(slug).await?;
        versioned::patch(self, &self.bus, current, patch, who).await
    }

    pub async fn delete_workflow(&self, slug: &str) -> AppResult<()> {
        let workflow = self.get_workflow(slug).await?;
        let active = self.store.count_active_workflow_runs(&workflow.id).await?;
        if active > 0 {
            return Err(AppError::Conflict(format!(
                "workflow {} has {active} unfinished run(s); cancel them first",
                workflow.slug
            )));
        }
        self.store
            .delete_workflow(&workflow.id, &workflow.slug)
            .await?;
        versioned::deleted(self, &self.bus, &workflow).await;
        Ok(())
    }
}

/// Workflow definitions are versioned definitions.
#[async_trait::async_trait]
impl Versioned for WorkflowService {
    type Spec = WorkflowSpec;
    type Stored = WorkflowDefinition;
    const WHAT: &'static str = "workflow";

    fn event(stored: &WorkflowDefinition, deleted: bool) -> Event {
        Event::WorkflowDefinition {
            workflow: stored.clone(),
            deleted,
        }
    }

    fn slug(stored: &WorkflowDefinition) -> &str {
        &stored.slug
    }
    fn version(stored: &WorkflowDefinition) -> i32 {
        stored.version
    }
    fn spec_slug(spec: &WorkflowSpec) -> &str {
        spec.slug.as_str()
    }
    fn spec_version(spec: &WorkflowSpec) -> i32 {
        spec.version
    }

    async fn parse(&self, doc: &Value) -> AppResult<WorkflowSpec> {
        let catalog = self.catalog().await?;
        let spec = parse_workflow_spec(doc, &catalog).map_err(AppError::InvalidDefinition)?;
        // What the engine the definition names cannot do.
        let problems = self.manager.validate(&spec);
        if !problems.is_empty() {
            return Err(AppError::InvalidDefinition(problems));
        }
        Ok(spec)
    }

    async fn get(&self, slug: &str) -> AppResult<Option<WorkflowDefinition>> {
        Ok(self.store.get_workflow(slug).await?)
    }

    async fn check_write(
        &self,
        doc: &Value,
        spec: &WorkflowSpec,
        _existing: Option<&WorkflowDefinition>,
        who: &Principal,
    ) -> AppResult<()> {
        self.check_workflow_write(doc, spec, who).await
    }

    async fn save(
        &self,
        spec: &WorkflowSpec,
        existing: Option<&WorkflowDefinition>,
    ) -> AppResult<WorkflowDefinition> {
        Ok(self.store.save_workflow(spec, existing, Utc::now()).await?)
    }
}
