//! `native`: the built-in orchestrator (`application::orchestrator`) behind the contract. A
//! native run's execution is its rows: steps run as job runs on Switchyard's own workers, and
//! the orchestrator's reconcile moves the run on (see its module documentation).
use crate::application::{AppError, orchestrator::Orchestrator};
use crate::store::WorkflowRunState;
use domain::workflow::Provider;
use wire::WorkflowRun;

use super::{
    Capabilities, ExecutionState, Failure, ProviderError, ProviderResult, WorkflowProvider,
};

pub(super) struct Native {
    orchestrator: Orchestrator,
}

impl Native {
    pub(super) fn new(orchestrator: Orchestrator) -> Native {
        Native { orchestrator }
    }
}

fn failed(action: &'static str, run_id: &str, e: AppError) -> ProviderError {
    let failure = match e {
        AppError::Conflict(m) | AppError::NotFound(m) => Failure::Conflict(m),
        other => Failure::Unavailable(other.to_string()),
    };
    ProviderError::new(Provider::NATIVE, action, run_id, failure)
}

#[async_trait::async_trait]
impl WorkflowProvider for Native {
    fn name(&self) -> &'static str {
        Provider::NATIVE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            resume: true,
        }
    }

    async fn start(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        let started = self
            .orchestrator
            .reconcile(&run.run.id)
            .await
            .map_err(|e| failed("start", &run.run.id, e))?;
        if let Some(started) = started {
            self.orchestrator.watch_deadline(&started, &run.definition);
        }
        Ok(None)
    }

    async fn describe(&self, run: &WorkflowRun) -> ProviderResult<Option<ExecutionState>> {
        // The rows are the execution.
        Ok(Some(ExecutionState::of_run(run)))
    }

    async fn cancel(&self, run: &WorkflowRun) -> ProviderResult<()> {
        self.orchestrator
            .cancel(&run.id)
            .await
            .map_err(|e| failed("cancel", &run.id, e))?;
        Ok(())
    }

    async fn resume(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        // The manager has reset the run; reconciling starts its pending steps.
        let resumed = self
            .orchestrator
            .reconcile(&run.run.id)
            .await
            .map_err(|e| failed("resume", &run.run.id, e))?;
        if let Some(resumed) = resumed {
            self.orchestrator.watch_deadline(&resumed, &run.definition);
        }
        Ok(None)
    }
}
