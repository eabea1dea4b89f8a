//! Reconcile: read a run's state, plan, write the result conditionally on the run's revision
//! (the loser of a race re-reads and re-plans), then start or enqueue the new job runs, cancel
//! what a halt stopped and publish `workflow.run.*`. Idempotent, so it runs whenever anything
//! may have changed, and the recovery sweep runs it for every unfinished run.
use std::collections::HashMap;

use chrono::Utc;
use wire::{JobRun, StepRunStatus, WorkflowRun};

use crate::application::AppResult;
use crate::engine::{LocalSlots, publish_run};
use domain::workflow::{Provider, StepAction};

use super::{
    MAX_RACES, Orchestrator, SERVICE_CALL_JOB,
    planner::{Plan, RunState, plan},
    steps_of,
};
use crate::application::launcher::{Started, claimed};
use crate::events::{Event, WorkflowRunChange};
use std::time::Duration;

impl Orchestrator {
    /// Brings a run up to date (see the module documentation). Returns the run as it now is.
    /// On a task of its own: steps committed already claimed by this process are started (and
    /// the rest enqueued) even when the caller goes away right after the commit.
    pub async fn reconcile(&self, run_id: &str) -> AppResult<Option<WorkflowRun>> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.reconcile_here(&run_id).await }).await
    }

    pub(super) async fn reconcile_here(&self, run_id: &str) -> AppResult<Option<WorkflowRun>> {
        for _ in 0..MAX_RACES {
            // The run, its steps and their job runs in one consistent read.
            let Some((state, job_runs)) = self.store.workflow_run_snapshot(run_id).await? else {
                return Ok(None);
            };
            // Another engine's run: its provider moves it on (see `providers`).
            if state.run.status.is_terminal() || state.run.provider != Provider::NATIVE {
                return Ok(Some(state.run));
            }
            let spec = steps_of(&state.definition)?;
            let mut slugs: Vec<String> = Vec::new();
            for (i, s) in state.steps.iter().enumerate() {
                if s.status != StepRunStatus::Pending || s.job_run_id.is_some() {
                    continue;
                }
                let slug = match spec.get(i).map(|st| &st.action) {
                    Some(StepAction::Job(j)) => j.job_slug.as_str().to_string(),
                    Some(StepAction::Service(_)) => SERVICE_CALL_JOB.to_string(),
                    None => continue,
                };
                if !slugs.contains(&slug) {
                    slugs.push(slug);
                }
            }
            // Definitions of jobs that may start: usually cached; the misses are read together.
            let defs = futures::future::join_all(
                slugs
                    .iter()
                    .map(|slug| self.launcher.definitions().get(slug)),
            )
            .await;
            let job_runs: HashMap<String, JobRun> =
                job_runs.into_iter().map(|r| (r.id.clone(), r)).collect();
            let mut jobs = HashMap::new();
            for (slug, def) in slugs.into_iter().zip(defs) {
                if let Some(job) = def? {
                    jobs.insert(slug, job);
                }
            }
            let now = Utc::now();
            let run_state = RunState {
                stored: &state,
                spec: &spec,
                job_runs: &job_runs,
                jobs: &jobs,
                now,
                driven: None,
            };
            let mut plan = plan(&run_state, &self.launcher);
            let Some(run) = plan.changes.run.clone() else {
                return Ok(Some(state.run));
            };
            // Steps that start now and fit on this process's idle workers are stored claimed.
            let mut slots = self.launcher.reserve(plan.changes.job_runs.len());
            if let Some(claim) = slots.claim(now) {
                for jr in plan.changes.job_runs.iter_mut().take(slots.available()) {
                    claimed(jr, claim.clone());
                }
            }
            if !self
                .store
                .apply_workflow_changes(run_id, state.revision, &plan.changes, now)
                .await?
            {
                tokio::task::yield_now().await;
                continue;
            }
            self.after_apply(&run, plan, &mut slots).await;
            return Ok(Some(run));
        }
        tracing::warn!(
            run_id,
            "workflow run changed too often to reconcile; the sweep retries"
        );
        Ok(self.store.get_workflow_run(run_id).await?)
    }

    pub(super) async fn after_apply(&self, run: &WorkflowRun, plan: Plan, slots: &mut LocalSlots) {
        let started = plan.changes.job_runs.iter().map(Started::from).collect();
        let what = format!("the steps' job runs of workflow run {}", run.id);
        self.launcher
            .dispatch(started, slots, Duration::ZERO, &what)
            .await;
        for id in &plan.cancel_job_runs {
            self.cancel_job_run(id).await;
        }
        if plan.steps_changed {
            self.publish(run, WorkflowRunChange::Updated).await;
        }
        if plan.status_changed {
            self.publish(run, WorkflowRunChange::Status(run.status))
                .await;
        }
    }

    async fn cancel_job_run(&self, id: &str) {
        match self.store.cancel(id, Utc::now()).await {
            // Workers (in any process) see the event and stop the attempt.
            Ok(Some(canceled)) => publish_run(&self.bus, &canceled).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_run_id = id, error = %e, "could not cancel a step's job run")
            }
        }
    }

    pub(super) async fn publish(&self, run: &WorkflowRun, change: WorkflowRunChange) {
        if let WorkflowRunChange::Status(status) = change {
            tracing::info!(run_id = %run.id, workflow = %run.workflow_slug, status = %status, "workflow run {status}");
        }
        self.bus
            .publish(Event::WorkflowRun {
                run: run.clone(),
                change,
            })
            .await;
    }

    pub async fn sweep(&self) -> AppResult<()> {
        for id in self.store.active_workflow_run_ids(500).await? {
            self.reconcile_here(&id).await?;
        }
        Ok(())
    }
}
