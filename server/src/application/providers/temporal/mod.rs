//! `temporal`: workflows with `"provider": "temporal"` run on a Temporal cluster
//! (`--temporal-address`, `--temporal-namespace`, `--temporal-task-queue`). The provider starts,
//! describes and cancels executions with the Temporal client; every `serve` or `worker`
//! process with workers also runs a Temporal worker in process, on a thread of its own (the
//! SDK's worker runs its workflows on a local task set), polling the task queue for the
//! workflow and activities of [`workflow`]. One execution per start or resume of a run: its
//! workflow id is `switchyard-<run id>-<revision>`, so a start is idempotent (the same id
//! attaches to the running execution) and a resume is a new execution of the same run.
pub mod workflow;

use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowCancelOptions,
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowStartOptions,
};
use tokio_util::sync::CancellationToken;
use wire::WorkflowRun;

use super::activities::{Activities, StepActivities};
use super::interpreter::ExecutionInput;
use super::{
    Capabilities, ExecutionState, Failure, ProviderError, ProviderResult, WorkflowProvider,
    steps_of,
};
use crate::application::orchestrator::DrivenBy;
use crate::settings::ProviderSettings;
use crate::store::WorkflowRunState;
use workflow::RunWorkflow;

pub const NAME: &str = "temporal";

/// Where the cluster is.
#[derive(Debug, Clone)]
pub struct TemporalSettings {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
    /// The web UI, for links to executions.
    pub ui_url: Option<String>,
}

impl TemporalSettings {
    pub fn from(settings: &ProviderSettings) -> Option<TemporalSettings> {
        Some(TemporalSettings {
            address: settings.temporal_address.clone()?,
            namespace: settings.temporal_namespace.clone(),
            task_queue: settings.temporal_task_queue.clone(),
            ui_url: settings.temporal_ui_url.clone(),
        })
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let address = if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        };
        let url = url::Url::parse(&address)
            .map_err(|e| anyhow::anyhow!("--temporal-address {:?}: {e}", self.address))?;
        let connection = Connection::connect(
            ConnectionOptions::new(url)
                .identity(format!("switchyard@{}", crate::engine::worker_identity()))
                .build(),
        )
        .await?;
        Ok(Client::new(
            connection,
            ClientOptions::new(self.namespace.clone()).build(),
        )?)
    }
}

pub struct Temporal {
    client: Client,
    settings: TemporalSettings,
    activities: Activities,
}

impl Temporal {
    /// Connects to the cluster (the provider's own client, on this runtime).
    pub async fn connect(
        settings: TemporalSettings,
        activities: Activities,
    ) -> anyhow::Result<Temporal> {
        let client = settings.client().await?;
        Ok(Temporal {
            client,
            settings,
            activities,
        })
    }

    fn failed(action: &'static str, run_id: &str, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(NAME, action, run_id, Failure::Unavailable(e.to_string()))
    }

    async fn execute(
        &self,
        state: &WorkflowRunState,
        action: &'static str,
    ) -> ProviderResult<Option<String>> {
        let run_id = &state.run.id;
        let workflow_id = format!("switchyard-{run_id}-{}", state.revision);
        let spec = steps_of(&state.definition).map_err(|e| Self::failed(action, run_id, e))?;
        let jobs = self
            .activities
            .jobs(&spec)
            .await
            .map_err(|e| Self::failed(action, run_id, e))?;
        let driven = DrivenBy {
            provider: NAME.to_string(),
            execution: workflow_id.clone(),
        };
        let input = ExecutionInput::new(state, jobs, driven);
        let options = WorkflowStartOptions::new(self.settings.task_queue.clone(), &workflow_id)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        self.client
            .start_workflow(RunWorkflow::run, input, options)
            .await
            .map_err(|e| Self::failed(action, run_id, e))?;
        Ok(Some(workflow_id))
    }

    fn execution_of<'a>(run: &'a WorkflowRun, action: &'static str) -> ProviderResult<&'a str> {
        run.execution_id.as_deref().ok_or_else(|| {
            ProviderError::new(
                NAME,
                action,
                &run.id,
                Failure::Conflict("the run has no Temporal execution yet".into()),
            )
        })
    }
}

#[async_trait::async_trait]
impl WorkflowProvider for Temporal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        // A resume is a new execution of the run from its stored state.
        Capabilities {
            cancel: true,
            resume: true,
        }
    }

    async fn start(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        self.execute(run, "start").await
    }

    async fn describe(&self, run: &WorkflowRun) -> ProviderResult<Option<ExecutionState>> {
        let Some(id) = run.execution_id.as_deref() else {
            return Ok(None);
        };
        let handle = self.client.get_workflow_handle::<RunWorkflow>(id);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| Self::failed("describe", &run.id, e))?;
        Ok(Some(match description.status() {
            WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Unspecified => {
                ExecutionState::Running
            }
            WorkflowExecutionStatus::Completed => ExecutionState::of_run(run),
            WorkflowExecutionStatus::Canceled => ExecutionState::Canceled,
            WorkflowExecutionStatus::TimedOut => ExecutionState::TimedOut,
            _ => ExecutionState::Failed,
        }))
    }

    fn execution_url(&self, run: &WorkflowRun) -> Option<String> {
        let ui = self.settings.ui_url.as_deref()?.trim_end_matches('/');
        let id = run.execution_id.as_deref()?;
        let mut url = url::Url::parse(ui).ok()?;
        url.path_segments_mut().ok()?.extend([
            "namespaces",
            self.settings.namespace.as_str(),
            "workflows",
            id,
        ]);
        Some(url.to_string())
    }

    async fn cancel(&self, run: &WorkflowRun) -> ProviderResult<()> {
        let id = Self::execution_of(run, "cancel")?;
        self.client
            .get_workflow_handle::<RunWorkflow>(id)
            .cancel(WorkflowCancelOptions::default())
            .await
            .map_err(|e| Self::failed("cancel", &run.id, e))
    }

    async fn resume(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        self.execute(run, "resume").await
    }
}

/// Runs a Temporal worker for the `temporal` provider's workflow and activities on a thread
/// of its own until `stop`; its activities execute on this (the calling) runtime.
pub fn spawn_worker(
    settings: TemporalSettings,
    activities: Activities,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let main = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not start the Temporal worker's runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            if let Err(e) = run_worker(settings, activities, main, stop).await {
                tracing::error!(error = %e, "the Temporal worker stopped");
            }
        });
    })
}

async fn run_worker(
    settings: TemporalSettings,
    activities: Activities,
    main: tokio::runtime::Handle,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use temporalio_sdk::{Runtime, Worker, WorkerOptions};
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let client = settings.client().await?;
    let options = WorkerOptions::new(settings.task_queue.clone())
        .register_workflow::<RunWorkflow>()?
        .register_activities(workflow::SwitchyardActivities { activities, main })
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;
    let shutdown = worker.shutdown_handle();
    tokio::task::spawn_local(async move {
        stop.cancelled().await;
        shutdown();
    });
    tracing::info!(task_queue = %settings.task_queue, namespace = %settings.namespace, "Temporal worker polling");
    worker.run().await?;
    Ok(())
}
