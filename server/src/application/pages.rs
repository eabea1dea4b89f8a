//! The pages' backend (`app::data::Backend`): the same use cases as the REST API.

use app::auth_pages::Viewer;
use wire::JobRun;

use crate::store::RunFilter;
use domain::{Problems, auth::Principal};

use wire::{ErrorKind, PageError};

use super::{
    AppError, AppResult, JobService,
    orchestrator::WorkflowRunRequest,
    runs::{RunJob, caller_part},
    workflows::StartWorkflowRun,
};

#[async_trait::async_trait]
impl app::data::Backend for JobService {
    async fn job_summaries(&self) -> Result<Vec<wire::JobSummary>, PageError> {
        JobService::job_summaries(self).await.map_err(page_error)
    }

    async fn services(&self) -> Result<Vec<wire::Service>, PageError> {
        let services = self
            .workflow_service()
            .list_services()
            .await
            .map_err(page_error)?;
        Ok(services)
    }

    async fn service_detail(&self, slug: &str) -> Result<wire::ServiceDetail, PageError> {
        storable(&[("slug", slug)])?;
        let workflows = self.workflow_service();
        let service = workflows.get_service(slug).await.map_err(page_error)?;
        let users = workflows
            .list_workflows()
            .await
            .map_err(page_error)?
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

    async fn workflow_summaries(&self) -> Result<Vec<wire::WorkflowSummary>, PageError> {
        use wire::WorkflowRunStatus;
        let stats = self.store.workflow_run_stats().await.map_err(page_error)?;
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
            .map_err(page_error)?
            .into_iter()
            .map(|r| (r.workflow_slug.clone(), r))
            .collect();
        let list = self
            .workflow_service()
            .list_workflows()
            .await
            .map_err(page_error)?;
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

    async fn job_slugs(&self) -> Result<Vec<String>, PageError> {
        let mut slugs: Vec<String> = self
            .list_jobs()
            .await
            .map_err(page_error)?
            .into_iter()
            .map(|j| j.slug)
            .collect();
        slugs.sort();
        Ok(slugs)
    }

    async fn list_runs(&self, q: wire::RunQuery) -> Result<wire::RunList, PageError> {
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
            .map_err(page_error)?;
        Ok(wire::RunList {
            runs: page.runs,
            total: page.total,
            next_cursor: page.next_cursor,
        })
    }

    async fn get_run(&self, id: &str) -> Result<JobRun, PageError> {
        storable(&[("id", id)])?;
        JobService::get_run(self, id).await.map_err(page_error)
    }

    async fn run_log_tail(&self, id: &str, lines: u64) -> Result<wire::LogTail, PageError> {
        storable(&[("id", id)])?;
        JobService::run_log_tail(self, id, lines, app::data::LOG_TAIL_BYTES)
            .await
            .map_err(page_error)
    }

    async fn cancel_run(&self, id: &str) -> Result<JobRun, PageError> {
        storable(&[("id", id)])?;
        JobService::cancel_run(self, id).await.map_err(page_error)
    }

    async fn retry_run(&self, viewer: &Viewer, id: &str) -> Result<JobRun, PageError> {
        storable(&[("id", id)])?;
        JobService::retry_run(self, id, &principal_of(viewer))
            .await
            .map_err(page_error)
    }

    async fn job_detail(&self, slug: &str) -> Result<wire::JobDetail, PageError> {
        storable(&[("slug", slug)])?;
        let job = self.get_job(slug).await.map_err(page_error)?;
        let versions = self
            .store
            .job_versions(&job.slug)
            .await
            .map_err(page_error)?;
        Ok(wire::JobDetail { job, versions })
    }

    async fn launch(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<wire::LaunchOutcome, PageError> {
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
        let cmd = RunJob {
            slug: slug.to_string(),
            request: domain::jobs::RunRequest::manual(parameters),
        };
        let (run, problems) = launched(self.run_job(cmd, &principal_of(viewer)).await)?;
        Ok(wire::LaunchOutcome { run, problems })
    }

    async fn dashboard(&self) -> Result<wire::Dashboard, PageError> {
        JobService::dashboard(self).await.map_err(page_error)
    }

    async fn workflow_detail(&self, slug: &str) -> Result<wire::WorkflowPageData, PageError> {
        storable(&[("slug", slug)])?;
        let workflows = self.workflow_service();
        let with_runs = workflows
            .workflow_with_runs(slug)
            .await
            .map_err(page_error)?;
        let versions = workflows
            .workflow_versions(&with_runs.workflow.slug)
            .await
            .map_err(page_error)?;
        let latest_steps = match with_runs.runs.first() {
            Some(run) => Some(
                workflows
                    .workflow_run_steps(&run.id)
                    .await
                    .map_err(page_error)?
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

    async fn workflow_runs(&self) -> Result<Vec<wire::WorkflowRun>, PageError> {
        let filter = crate::store::WorkflowRunFilter {
            limit: 25,
            ..Default::default()
        };
        let (runs, _, _) = self
            .workflow_service()
            .list_workflow_runs(None, filter)
            .await
            .map_err(page_error)?;
        Ok(runs)
    }

    async fn workflow_run(&self, id: &str) -> Result<wire::WorkflowRunWithSteps, PageError> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .workflow_run_steps(id)
            .await
            .map_err(page_error)
    }

    async fn launch_workflow(
        &self,
        viewer: &Viewer,
        slug: &str,
        parameters: serde_json::Value,
    ) -> Result<wire::WorkflowLaunchOutcome, PageError> {
        storable(&[("slug", slug)])?;
        if let Err(problems) = storable_parameters(&parameters) {
            return Ok(wire::WorkflowLaunchOutcome {
                run: None,
                problems,
            });
        }
        let cmd = StartWorkflowRun {
            slug: slug.to_string(),
            request: WorkflowRunRequest::manual(parameters),
        };
        let started = self
            .workflow_service()
            .run_workflow(cmd, &principal_of(viewer))
            .await;
        let (run, problems) = launched(started)?;
        Ok(wire::WorkflowLaunchOutcome { run, problems })
    }

    async fn cancel_workflow_run(&self, id: &str) -> Result<wire::WorkflowRun, PageError> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .cancel_workflow_run(id)
            .await
            .map_err(page_error)
    }

    async fn retry_workflow_run(
        &self,
        viewer: &Viewer,
        id: &str,
    ) -> Result<wire::WorkflowRun, PageError> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .retry_workflow_run(id, &principal_of(viewer))
            .await
            .map_err(page_error)
    }

    async fn rerun_workflow_run(
        &self,
        viewer: &Viewer,
        id: &str,
    ) -> Result<wire::WorkflowRun, PageError> {
        storable(&[("id", id)])?;
        self.workflow_service()
            .rerun_workflow_run(id, &principal_of(viewer))
            .await
            .map_err(page_error)
    }

    async fn audit_logs(&self, query: wire::AuditQuery) -> Result<wire::AuditList, PageError> {
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
            .map_err(page_error)?;
        Ok(wire::AuditList {
            entries: page.entries,
            next_cursor: page.next_cursor,
        })
    }
}

/// Page input (a server function's arguments) holding U+0000, which no database stores or
/// matches, is refused before any query sees it, naming the fields (the REST API refuses it
/// in `http::input` and `ApiJson`).
fn storable(fields: &[(&str, &str)]) -> Result<(), PageError> {
    let refused: Vec<String> = fields
        .iter()
        .filter(|(_, value)| domain::problems::has_nul(value))
        .map(|(name, _)| format!("{name} {}", domain::problems::NUL_MESSAGE))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(PageError {
            kind: ErrorKind::Invalid,
            message: format!("invalid input: {}", refused.join("; ")),
        })
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

/// What a launch form shows after starting a run: the run, or the problems of what it sent
/// (invalid parameters or request); any other failure is the page's error.
fn launched<R>(
    started: AppResult<(R, bool)>,
) -> Result<(Option<R>, Vec<wire::ErrorDetail>), PageError> {
    match started {
        Ok((run, _)) => Ok((Some(run), Vec::new())),
        Err(AppError::InvalidParameters(p) | AppError::InvalidRequest(p)) => {
            Ok((None, p.into_vec()))
        }
        Err(e) => Err(page_error(e)),
    }
}

/// A use case's error as a page shows it: its kind and a message fit to show. A dependency's
/// failure is logged here with its cause and shown without it.
fn page_error(e: impl Into<AppError>) -> PageError {
    let e: AppError = e.into();
    let message = match &e {
        AppError::Unavailable(cause) => {
            tracing::error!(error = %cause, "a page's data request failed");
            "the server could not answer; its log says why".to_string()
        }
        AppError::InvalidDefinition(p)
        | AppError::InvalidParameters(p)
        | AppError::InvalidRequest(p) => {
            let listed: Vec<String> = p
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
            format!("{e}: {}", listed.join("; "))
        }
        _ => e.to_string(),
    };
    PageError {
        kind: e.kind(),
        message,
    }
}
