//! The workflow-definition and service-registry use cases behind the REST API: validate (with
//! a catalog of the jobs and services that exist), store, publish. Nothing here knows HTTP.
use std::collections::HashSet;

use wire::{
    Service, WorkflowDefinition, WorkflowDefinitionVersion, WorkflowRun, WorkflowRunWithSteps,
    WorkflowWithRuns,
};
use chrono::Utc;
use serde_json::{Map, Value, json};

use domain::{
        Problems,
        auth::Principal,
        authority::{self, MASKED, StepJob},
        jobs::Slug,
        services::parse_service_spec,
        workflow::{Catalog, StepAction, WorkflowSpec, parse_workflow_spec},
    };
use crate::{events::EventBus, handlers, orchestrator::Orchestrator, secrets::ServiceCredentials, service::{ServiceError, ServiceResult, refused_definition}, store::{Store, WorkflowRunFilter}};

/// The jobs and services that exist, read once per validation.
struct DbCatalog {
    jobs: HashSet<String>,
    services: HashSet<String>,
}

impl Catalog for DbCatalog {
    fn job_exists(&self, slug: &str) -> bool {
        self.jobs.contains(slug)
    }

    fn service_exists(&self, slug: &str) -> bool {
        self.services.contains(slug)
    }
}

fn not_found(what: &str, key: &str) -> ServiceError {
    ServiceError::NotFound(format!("{what} {key:?} not found"))
}

fn invalid(path: &str, message: &str) -> ServiceError {
    let mut p = Problems::new();
    p.add(path, message);
    ServiceError::InvalidDefinition(p)
}

/// `current` (as returned by the API, without `read_only` fields) with the fields of `patch`
/// laid over it. The slug cannot change.
fn merge_patch(
    current: Value,
    slug: &str,
    patch: &Value,
    read_only: &[&str],
) -> ServiceResult<Value> {
    let Some(patch) = patch.as_object() else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    if let Some(s) = patch.get("slug")
        && s.as_str().map(str::to_ascii_lowercase).as_deref() != Some(slug)
    {
        return Err(invalid("/slug", "cannot be changed"));
    }
    let mut doc = match current {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    for key in read_only {
        doc.remove(*key);
    }
    for (k, v) in patch {
        doc.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(doc))
}

#[derive(Clone)]
pub struct WorkflowService {
    store: Store,
    bus: EventBus,
    orchestrator: Orchestrator,
    credentials: ServiceCredentials,
}

impl WorkflowService {
    pub fn new(
        store: Store,
        bus: EventBus,
        orchestrator: Orchestrator,
        credentials: ServiceCredentials,
    ) -> Self {
        WorkflowService {
            store,
            bus,
            orchestrator,
            credentials,
        }
    }

    // ---- workflow runs ----

    /// Starts a run (202); `false`: an idempotent replay of an earlier request.
    pub async fn run_workflow(
        &self,
        slug: &str,
        body: &Value,
        idempotency_header: Option<&str>,
        who: &Principal,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let workflow = self.get_workflow(slug).await?;
        self.orchestrator
            .start(&workflow, body, idempotency_header, who)
            .await
    }

    /// Starts a run a trigger fired (parameters written by the workflow's author, or the
    /// event's), with a trigger object only the server writes.
    pub async fn run_triggered(
        &self,
        slug: &str,
        request: crate::orchestrator::WorkflowRunRequest,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let workflow = self.get_workflow(slug).await?;
        self.orchestrator.start_request(&workflow, request).await
    }

    pub async fn get_workflow_run(&self, id: &str) -> ServiceResult<WorkflowRun> {
        self.orchestrator.get(id).await
    }

    pub async fn workflow_run_steps(&self, id: &str) -> ServiceResult<WorkflowRunWithSteps> {
        self.orchestrator.with_steps(id).await
    }

    /// Lists runs, of one workflow (`slug`) or of all, newest first.
    pub async fn list_workflow_runs(
        &self,
        slug: Option<&str>,
        filter: WorkflowRunFilter,
    ) -> ServiceResult<(Vec<WorkflowRun>, u64, Option<String>)> {
        let mut filter = filter;
        if let Some(slug) = slug {
            filter.workflow_slug = Some(self.get_workflow(slug).await?.slug);
        }
        self.orchestrator.list(&filter).await
    }

    /// Applies a PATCH: only `{"status": "canceled"}` is supported.
    pub async fn patch_workflow_run(&self, id: &str, body: &Value) -> ServiceResult<WorkflowRun> {
        let p = domain::jobs::cancel_patch_problems(body);
        if !p.is_empty() {
            self.orchestrator.get(id).await?;
            return Err(ServiceError::InvalidRequest(p));
        }
        self.orchestrator.cancel(id).await
    }

    /// Resumes a failed or canceled run; its parameters resolve again, so secret references
    /// in them need `secrets:use` from the one asking, as for a new run.
    pub async fn retry_workflow_run(
        &self,
        id: &str,
        who: &Principal,
    ) -> ServiceResult<WorkflowRun> {
        let run = self.orchestrator.get(id).await?;
        authority::check_workflow_run_parameters(&run.parameters, who)
            .map_err(refused_definition)?;
        self.orchestrator.resume(id).await
    }

    /// A new run with the same parameters; secret references in them need `secrets:use`
    /// from the one asking, as for a new run.
    pub async fn rerun_workflow_run(
        &self,
        id: &str,
        who: &Principal,
    ) -> ServiceResult<WorkflowRun> {
        let run = self.orchestrator.get(id).await?;
        authority::check_workflow_run_parameters(&run.parameters, who)
            .map_err(refused_definition)?;
        self.orchestrator.rerun(id).await
    }

    /// A path slug that cannot be valid cannot exist either.
    fn slug(input: &str, what: &str) -> ServiceResult<String> {
        Slug::parse(input)
            .map(|s| s.as_str().to_string())
            .map_err(|_| not_found(what, input))
    }

    async fn catalog(&self) -> ServiceResult<DbCatalog> {
        Ok(DbCatalog {
            jobs: self.store.job_slugs().await?,
            services: self.store.service_slugs().await?,
        })
    }

    // ---- workflow definitions ----

    pub async fn get_workflow(&self, slug: &str) -> ServiceResult<WorkflowDefinition> {
        let slug = Self::slug(slug, "workflow")?;
        self.store
            .get_workflow(&slug)
            .await?
            .ok_or_else(|| not_found("workflow", &slug))
    }

    /// The definition and its recent runs (none until workflow runs exist).
    pub async fn workflow_with_runs(&self, slug: &str) -> ServiceResult<WorkflowWithRuns> {
        let workflow = self.get_workflow(slug).await?;
        let filter = WorkflowRunFilter {
            workflow_slug: Some(workflow.slug.clone()),
            limit: 20,
            ..Default::default()
        };
        let (runs, _, _) = self.orchestrator.list(&filter).await?;
        Ok(WorkflowWithRuns { workflow, runs })
    }

    pub async fn list_workflows(&self) -> ServiceResult<Vec<WorkflowDefinition>> {
        Ok(self.store.list_workflows().await?)
    }

    /// A page of workflow definitions, newest first (`GET /api/workflows`).
    pub async fn page_workflows(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> ServiceResult<crate::store::Page<WorkflowDefinition>> {
        Ok(self.store.page_workflows(filter).await?)
    }

    /// A page of services, newest first (`GET /api/services`).
    pub async fn page_services(
        &self,
        filter: &crate::store::CatalogFilter,
    ) -> ServiceResult<crate::store::Page<Service>> {
        Ok(self.store.page_services(filter).await?)
    }

    /// A page of a workflow's versions, newest first (`GET /api/workflows/:slug/versions`).
    pub async fn page_workflow_versions(
        &self,
        slug: &str,
        page: &crate::store::PageRequest,
    ) -> ServiceResult<crate::store::Page<WorkflowDefinitionVersion>> {
        let workflow = self.get_workflow(slug).await?;
        Ok(self
            .store
            .page_workflow_versions(&workflow.slug, page)
            .await?)
    }

    pub async fn workflow_versions(
        &self,
        slug: &str,
    ) -> ServiceResult<Vec<WorkflowDefinitionVersion>> {
        let workflow = self.get_workflow(slug).await?;
        Ok(self.store.workflow_versions(&workflow.slug).await?)
    }

    /// Validates `doc` and stores it over `existing` when its version is not lower.
    async fn store_workflow(
        &self,
        doc: &Value,
        existing: Option<&WorkflowDefinition>,
        who: &Principal,
    ) -> ServiceResult<WorkflowDefinition> {
        let catalog = self.catalog().await?;
        let spec = parse_workflow_spec(doc, &catalog).map_err(ServiceError::InvalidDefinition)?;
        self.check_workflow_write(doc, &spec, who).await?;
        let existing = match existing {
            Some(e) => Some(e.clone()),
            None => self.store.get_workflow(spec.slug.as_str()).await?,
        };
        if let Some(e) = &existing
            && spec.version < e.version
        {
            return Err(ServiceError::Conflict(format!(
                "workflow {:?} is at version {}; version {} is lower",
                e.slug, e.version, spec.version
            )));
        }
        let saved = self
            .store
            .save_workflow(&spec, existing.as_ref(), Utc::now())
            .await?;
        self.bus
            .publish("workflow.definition.updated", json!({"workflow": saved}))
            .await;
        Ok(saved)
    }

    /// Who may write this definition: steps that set definition-only parameters need
    /// `jobs:exec`, secret references need `secrets:use` (see `domain::authority`).
    async fn check_workflow_write(
        &self,
        doc: &Value,
        spec: &WorkflowSpec,
        who: &Principal,
    ) -> ServiceResult<()> {
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
        authority::check_workflow_write(doc, &steps, &handlers::rules, who)
            .map_err(refused_definition)
    }

    /// Creates or replaces (same or higher version) a definition. Returns it and whether it
    /// was created.
    pub async fn save_workflow(
        &self,
        body: &Value,
        who: &Principal,
    ) -> ServiceResult<(WorkflowDefinition, bool)> {
        let existed = match body.get("slug").and_then(Value::as_str).map(Slug::parse) {
            Some(Ok(slug)) => self.store.get_workflow(slug.as_str()).await?.is_some(),
            _ => false,
        };
        let saved = self.store_workflow(body, None, who).await?;
        Ok((saved, !existed))
    }

    /// Updates the given fields; the result is validated like a full definition.
    pub async fn patch_workflow(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> ServiceResult<WorkflowDefinition> {
        let current = self.get_workflow(slug).await?;
        let doc = merge_patch(
            serde_json::to_value(&current).unwrap_or(Value::Null),
            &current.slug,
            patch,
            &["id", "createdAt", "updatedAt"],
        )?;
        self.store_workflow(&doc, Some(&current), who).await
    }

    pub async fn delete_workflow(&self, slug: &str) -> ServiceResult<()> {
        let workflow = self.get_workflow(slug).await?;
        let active = self.store.count_active_workflow_runs(&workflow.id).await?;
        if active > 0 {
            return Err(ServiceError::Conflict(format!(
                "workflow {} has {active} unfinished run(s); cancel them first",
                workflow.slug
            )));
        }
        self.store
            .delete_workflow(&workflow.id, &workflow.slug)
            .await?;
        self.bus
            .publish(
                "workflow.definition.updated",
                json!({"workflow": workflow, "deleted": true}),
            )
            .await;
        Ok(())
    }

    // ---- services ----

    pub async fn get_service(&self, slug: &str) -> ServiceResult<Service> {
        let slug = Self::slug(slug, "service")?;
        self.store
            .get_service(&slug)
            .await?
            .ok_or_else(|| not_found("service", &slug))
    }

    pub async fn list_services(&self) -> ServiceResult<Vec<Service>> {
        Ok(self.store.list_services().await?)
    }

    /// Registers a new service; an existing slug is a conflict (change it with a PATCH).
    /// Plain header values are stored sealed; headers and later `baseUrl` changes need
    /// `secrets:use` (they decide where credentials go).
    pub async fn create_service(&self, body: &Value, who: &Principal) -> ServiceResult<Service> {
        let spec = parse_service_spec(body).map_err(ServiceError::InvalidDefinition)?;
        let conflict = || {
            ServiceError::Conflict(format!(
                "service {:?} already exists; change it with PATCH /api/services/{}",
                spec.slug.as_str(),
                spec.slug.as_str()
            ))
        };
        let masked: Vec<&String> = spec
            .headers
            .iter()
            .filter(|(_, v)| v.as_str() == Some(MASKED))
            .map(|(k, _)| k)
            .collect();
        if !masked.is_empty() {
            let mut p = Problems::new();
            for name in masked {
                p.add(
                    format!(
                        "/headers/{}",
                        domain::problems::pointer_segment(name)
                    ),
                    format!("{MASKED} is how stored values are shown; give the value itself"),
                );
            }
            return Err(ServiceError::InvalidDefinition(p));
        }
        authority::check_service_write(None, &spec.base_url, &spec.headers, who)
            .map_err(refused_definition)?;
        if self.store.get_service(spec.slug.as_str()).await?.is_some() {
            return Err(conflict());
        }
        let mut stored = spec.clone();
        stored.headers = self
            .credentials
            .seal_headers(spec.slug.as_str(), &spec.headers)?;
        let saved = match self.store.save_service(&stored, None, Utc::now()).await {
            Ok(saved) => saved,
            // A concurrent registration of the same slug won the unique index.
            Err(e) => {
                if self.store.get_service(spec.slug.as_str()).await?.is_some() {
                    return Err(conflict());
                }
                return Err(e.into());
            }
        };
        self.bus
            .publish("service.updated", json!({"service": saved}))
            .await;
        Ok(saved)
    }

    /// Updates the given fields (e.g. `status`); the result is validated like a new entry. A
    /// header sent back as `***` (its masked form) keeps its stored value.
    pub async fn patch_service(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> ServiceResult<Service> {
        let slug = Self::slug(slug, "service")?;
        let (current, stored) = self
            .store
            .get_service_with_headers(&slug)
            .await?
            .ok_or_else(|| not_found("service", &slug))?;
        let doc = merge_patch(
            serde_json::to_value(&current).unwrap_or(Value::Null),
            &current.slug,
            patch,
            &["id", "createdAt", "updatedAt", "lastCheckedAt", "lastError"],
        )?;
        let spec = parse_service_spec(&doc).map_err(ServiceError::InvalidDefinition)?;
        let old_headers = current.headers.as_object().cloned().unwrap_or_default();
        let stored = stored.as_object().cloned().unwrap_or_default();
        let mut p = Problems::new();
        for (name, value) in &spec.headers {
            if value.as_str() == Some(MASKED) && !stored.contains_key(name) {
                p.add(
                    format!(
                        "/headers/{}",
                        domain::problems::pointer_segment(name)
                    ),
                    format!("{MASKED} keeps a stored value, and this service has no header {name}"),
                );
            }
        }
        if !p.is_empty() {
            return Err(ServiceError::InvalidDefinition(p));
        }
        authority::check_service_write(
            Some((&current.base_url, &old_headers)),
            &spec.base_url,
            &spec.headers,
            who,
        )
        .map_err(refused_definition)?;
        let mut next = spec.clone();
        let mut headers = Map::new();
        for (name, value) in &spec.headers {
            let kept = match value.as_str() {
                Some(MASKED) => stored.get(name).cloned(),
                _ => None,
            };
            let value = match kept {
                Some(sealed) => sealed,
                None => {
                    let one = Map::from_iter([(name.clone(), value.clone())]);
                    self.credentials
                        .seal_headers(spec.slug.as_str(), &one)?
                        .remove(name)
                        .unwrap_or(Value::Null)
                }
            };
            headers.insert(name.clone(), value);
        }
        next.headers = headers;
        let saved = self
            .store
            .save_service(&next, Some(&current), Utc::now())
            .await?;
        self.bus
            .publish("service.updated", json!({"service": saved}))
            .await;
        Ok(saved)
    }
}
