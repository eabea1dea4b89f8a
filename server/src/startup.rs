//! Building and running the process: `Application` (API + pages + event stream + workers, the
//! `serve` command and every integration test) and `run_worker` (the `worker` command).
use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context as _;
use leptos::prelude::LeptosOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::application::{
    JobService,
    launcher::RunLauncher,
    orchestrator::Orchestrator,
    secrets::{EngineSecrets, SecretService, ServiceCredentials},
};
use crate::entrypoints::Registry;
use crate::events::Event;
use crate::{
    db::Database,
    egress::{EgressClient, EgressPolicy, Redirects},
    engine::{
        Engine, StopReason,
        queue::{Queue, WorkerWaker},
    },
    events::EventBus,
    http::{AppState, router},
    sandbox::BuildSandbox,
    secrets::SecretCipher,
    sessions::Sessions,
    settings::{SecretKeyText, Settings, WorkerSettings},
    store::Store,
};
use domain::hosts::HostPolicy;

/// The parts shared by `serve` and `worker`.
struct Core {
    db: Database,
    bus: EventBus,
    service: JobService,
    secrets: SecretService,
    credentials: ServiceCredentials,
    /// Outbound HTTP of handlers and the health poller (same-origin redirects).
    http: EgressClient,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts what `serve` and `worker` share: checks the data directory, the build sandbox and
/// the secret key, connects and migrates the database, builds the job service (with an engine
/// when `worker` runs any), seeds the default jobs and starts the background tasks (event
/// reader, database clock, and the engine's workers, reaper and bus follower).
async fn start_core(
    data_dir: &Path,
    database_url: Option<&str>,
    worker: &WorkerSettings,
    secret_key: Option<&SecretKeyText>,
    secret_key_file: Option<&Path>,
    egress: &Arc<EgressPolicy>,
    stop: &CancellationToken,
) -> anyhow::Result<Core> {
    let (sandbox, cipher, http) = preflight(data_dir, worker, secret_key, secret_key_file, egress)?;
    let (db, store, secrets, credentials) = open_store(data_dir, database_url, cipher).await?;
    let bus = EventBus::new(store.clone());
    let queue = Queue::new(&db, worker.lease().max(std::time::Duration::from_secs(2)));
    let waker = WorkerWaker::default();
    let registry = Arc::new(Registry::builtin(Arc::new(sandbox)));
    // Where the event reader starts: read now, before this process publishes or serves.
    let last_event = store
        .last_event_id()
        .await
        .context("reading the event log")?;
    let mut tasks = vec![
        tokio::spawn(bus.clone().run_reader(last_event, stop.clone())),
        tokio::spawn(store.clone().run_clock(stop.clone())),
    ];
    let engine = (worker.workers > 0).then(|| {
        Engine::new(
            store.clone(),
            bus.clone(),
            queue.clone(),
            waker.clone(),
            registry.clone(),
            worker.clone(),
            data_dir.to_path_buf(),
            Arc::new(EngineSecrets::new(
                secrets.clone(),
                worker.secret_env_allow.clone(),
            )),
            Arc::new(credentials.clone()),
            http.clone(),
        )
    });
    let service = job_service(
        store,
        &bus,
        queue,
        &waker,
        registry,
        engine.clone(),
        &credentials,
    );
    seed(&service).await?;
    tasks.extend(register_providers(&service, &worker.providers, stop).await?);
    // Start-up events are in the log before anyone can connect and ask for "what is new".
    bus.flush().await;
    if let Some(engine) = engine {
        tasks.extend(spawn_engine_tasks(engine, worker.workers, stop));
    }
    Ok(Core {
        db,
        bus,
        service,
        secrets,
        credentials,
        http,
        tasks,
    })
}

/// Registers the workflow engines besides the native one that `settings` enable; a Temporal
/// worker runs in this process when it executes runs (the returned task ends with it).
async fn register_providers(
    service: &JobService,
    settings: &crate::settings::ProviderSettings,
    stop: &CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    use crate::application::providers::{memory::Memory, temporal};
    let registry = service.workflow_runs().registry();
    let activities = service.provider_activities();
    if settings.enable_memory_provider {
        if activities.executes_runs() {
            registry.register(Arc::new(Memory::new(Arc::new(activities.clone()))));
        } else {
            tracing::warn!("the memory workflow engine needs workers in this process; not enabled");
        }
    }
    let Some(temporal_settings) = temporal::TemporalSettings::from(settings) else {
        return Ok(None);
    };
    let provider = temporal::Temporal::connect(temporal_settings.clone(), activities.clone())
        .await
        .with_context(|| {
            format!(
                "connecting to Temporal at {} (--temporal-address)",
                temporal_settings.address
            )
        })?;
    registry.register(Arc::new(provider));
    if !activities.executes_runs() {
        return Ok(None);
    }
    let thread = temporal::spawn_worker(temporal_settings, activities, stop.clone());
    Ok(Some(tokio::task::spawn_blocking(move || {
        let _ = thread.join();
    })))
}

/// What is checked before anything runs: the data directory's modes, the build sandbox (a
/// process that executes nothing runs no builds), the secret key, and the outbound HTTP
/// client.
fn preflight(
    data_dir: &Path,
    worker: &WorkerSettings,
    secret_key: Option<&SecretKeyText>,
    secret_key_file: Option<&Path>,
    egress: &Arc<EgressPolicy>,
) -> anyhow::Result<(BuildSandbox, Arc<SecretCipher>, EgressClient)> {
    // First: modes that keep the data directory's secrets from builds, then a bad key or a
    // missing build user are clear start-up errors, before anything runs.
    crate::sandbox::protect_data_dir(data_dir)?;
    // A process that executes nothing runs no builds: no build user needed.
    let sandbox = if worker.workers > 0 {
        BuildSandbox::resolve(&worker.build)?
    } else {
        BuildSandbox::unconfined()
    };
    let cipher = Arc::new(SecretCipher::load(secret_key, secret_key_file, data_dir)?);
    let http = EgressClient::build(egress.clone(), Redirects::SameOrigin)?;
    tracing::info!(egress = %egress, "outbound calls");
    Ok((sandbox, cipher, http))
}

/// Connects to and migrates the database, measures its clock, and opens the secret store and
/// the services' credentials (sealing headers still stored in plain text).
async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
    cipher: Arc<SecretCipher>,
) -> anyhow::Result<(Database, Store, SecretService, ServiceCredentials)> {
    let db = Database::connect_and_migrate(data_dir, database_url).await?;
    let store = Store::new(db.clone());
    // Leases are written and judged by the database's clock: measured before any claim.
    store
        .sync_clock()
        .await
        .context("reading the database's clock")?;
    let secrets = SecretService::new(store.clone(), cipher.clone());
    let credentials = ServiceCredentials::new(store.clone(), cipher);
    credentials
        .seal_plain_headers()
        .await
        .context("sealing service headers stored in plain text")?;
    Ok((db, store, secrets, credentials))
}

/// The job service over `store`, with its run launcher and workflow orchestrator (which the
/// engine, if any, reports steps' transitions to).
fn job_service(
    store: Store,
    bus: &EventBus,
    queue: Queue,
    waker: &WorkerWaker,
    registry: Arc<Registry>,
    engine: Option<Engine>,
    credentials: &ServiceCredentials,
) -> JobService {
    // The engine reports steps' transitions to the orchestrator (`engine::RunObserver`); the
    // launcher starts runs on the engine's idle workers: built in this order, no cycle.
    let launcher = RunLauncher::new(
        store.clone(),
        bus.clone(),
        queue,
        waker.clone(),
        engine.clone(),
    );
    let orchestrator = Orchestrator::new(store.clone(), bus.clone(), launcher.clone());
    if let Some(engine) = &engine {
        engine.observe(Arc::new(orchestrator.clone()));
    }
    JobService::new(
        store,
        bus.clone(),
        registry,
        engine,
        launcher,
        orchestrator,
        credentials.clone(),
    )
}

/// Seeds the default job definitions and the service-call job (which workflows' service
/// steps execute as), unless it exists.
async fn seed(service: &JobService) -> anyhow::Result<()> {
    service
        .seed_defaults()
        .await
        .context("seeding default job definitions")?;
    // The job workflow service steps execute as.
    if service
        .store()
        .get_job(crate::application::orchestrator::SERVICE_CALL_JOB)
        .await?
        .is_none()
        && let Err(e) = service
            .save_job(
                &crate::application::seeds::service_call_definition(),
                &domain::auth::Principal::internal("system:seed"),
            )
            .await
    {
        // Another process seeding at the same moment won the unique slug.
        tracing::debug!(error = %e, "service-call seed skipped");
    }
    Ok(())
}

/// Starts the engine's tasks: the bus follower, the reaper and `workers` workers.
fn spawn_engine_tasks(
    engine: Engine,
    workers: usize,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(follow_bus(engine.clone(), stop.clone())),
        tokio::spawn(crate::engine::reaper::run(engine.clone(), stop.clone())),
        tokio::spawn(crate::engine::workers::run(engine, workers, stop.clone())),
    ]
}

/// Reacts to events from every process: cancels stop local attempts, new pending runs wake
/// idle workers.
async fn follow_bus(engine: Engine, stop: CancellationToken) {
    let mut rx = engine.bus().subscribe();
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(ev) => match ev.event_type.as_str() {
                "job.run.canceled" => {
                    if let Some(Event::JobRun(run)) = Event::decode(&ev) {
                        engine.stop_run(&run.id, StopReason::Canceled);
                    }
                }
                "job.run.pending" => engine.waker().wake(),
                _ => {}
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => engine.waker().wake(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A running server.
pub struct Application {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    db: Database,
    bus: EventBus,
}

impl Application {
    /// Connects, migrates, seeds, starts workers and binds the listener (port 0 picks one).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        refuse_open_non_loopback(&settings)?;
        let stop = CancellationToken::new();
        let egress = Arc::new(settings.egress.clone());
        let mut core = start_core(
            &settings.data_dir,
            settings.database_url.as_deref(),
            &settings.worker,
            settings.secret_key.as_ref(),
            settings.secret_key_file.as_deref(),
            &egress,
            &stop,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let addr = listener.local_addr()?;
        let mut tasks = std::mem::take(&mut core.tasks);
        let state = app_state(&settings, &core, addr, &egress, &stop, &mut tasks)?;
        // Host names requests may carry: loopback, the bound address, --allowed-hosts and the
        // public URL's host.
        let hosts = HostPolicy::new(addr.ip(), settings.auth.extra_hosts());
        let app = router(state, settings.max_body_bytes, hosts);
        let server = serve(listener, app, stop.clone());
        tasks.extend(spawn_serve_tasks(&settings, &core, &stop));
        tracing::info!(%addr, database = if core.db.is_postgres() { "postgres" } else { "sqlite" }, workers = settings.worker.workers, "switchyard serving");
        Ok(Application {
            addr,
            stop,
            server,
            tasks,
            bus: core.bus.clone(),
            db: core.db,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A token that stops the application when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs until the stop token fires, then shuts down gracefully (in-flight runs finish or are
    /// handed back).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            bus,
            stop,
            server,
            tasks,
            db,
            ..
        } = self;
        stop.cancelled().await;
        // SSE streams never end by themselves: do not let them hold the shutdown.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        for t in tasks {
            let _ = t.await;
        }
        // Events of the last state changes (hand-backs) must reach the log before we exit.
        bus.flush().await;
        db.close(std::time::Duration::from_secs(5)).await;
        Ok(())
    }
}

/// Refuses open local mode (no operator tokens) on an address other than a loopback one.
fn refuse_open_non_loopback(settings: &Settings) -> anyhow::Result<()> {
    if settings.auth.is_open() && !settings.bind.ip().is_loopback() {
        anyhow::bail!(
            "refusing to bind {}: no operator tokens are configured (open local mode), so only a loopback address such as 127.0.0.1 may be bound; configure SWITCHYARD_OPERATOR_TOKENS or --operator-tokens-file to listen on {}",
            settings.bind,
            settings.bind.ip()
        );
    }
    Ok(())
}

/// What the HTTP handlers of a server bound to `addr` reach. Starts, into `tasks`, the
/// sessions' pruner and the metrics and alerts that follow the bus.
fn app_state(
    settings: &Settings,
    core: &Core,
    addr: SocketAddr,
    egress: &Arc<EgressPolicy>,
    stop: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<AppState> {
    let leptos = LeptosOptions::builder()
        .output_name(crate::http::assets::output_name(&settings.site_root))
        .site_root(settings.site_root.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    // Metrics and alerts follow every process's run events (subscribed before serving).
    let metrics = crate::metrics::Metrics::new(core.service.store().clone());
    // A webhook's 3xx is an answer, not a hop: a POST must not turn into a GET.
    let alerts = crate::alerts::Alerts::new(
        core.service.store().clone(),
        settings.alerts.clone(),
        EgressClient::build(egress.clone(), Redirects::None)?,
    );
    let sessions = Sessions::new(core.service.store().clone(), settings.auth.session_ttl);
    tasks.push(tokio::spawn(sessions.clone().run_pruner(stop.clone())));
    tasks.push(tokio::spawn(
        metrics.clone().follow(core.bus.subscribe(), stop.clone()),
    ));
    tasks.push(tokio::spawn(
        alerts.follow(core.bus.subscribe(), stop.clone()),
    ));
    Ok(AppState {
        jobs: core.service.clone(),
        bus: core.bus.clone(),
        db: core.db.clone(),
        leptos,
        auth: std::sync::Arc::new(settings.auth.clone()),
        secrets: core.secrets.clone(),
        metrics,
        sessions: sessions.clone(),
        limits: std::sync::Arc::new(crate::http::limits::Limits::new(settings.limits.clone())),
    })
}

/// Serves `app` on `listener`, on a task of its own, until `shutdown` is canceled (then
/// gracefully).
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    // Pages stream in several writes: without TCP_NODELAY, Nagle's algorithm holds the later
    // ones until the client's delayed ACK (about 40 ms per page).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    })
}

/// Starts the tasks only a serving process runs: the services' health poller (unless its
/// interval is zero), retention and the workflow triggers.
fn spawn_serve_tasks(
    settings: &Settings,
    core: &Core,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !settings.health_interval.is_zero() {
        tasks.push(tokio::spawn(crate::health::run(
            core.service.store().clone(),
            core.credentials.clone(),
            core.bus.clone(),
            core.http.clone(),
            settings.health_interval,
            stop.clone(),
        )));
    }
    // Retention: one serve process of the cluster prunes at a time.
    tasks.push(tokio::spawn(
        crate::retention::Pruner::new(
            core.service.store().clone(),
            settings.retention.clone(),
            &settings.data_dir,
        )
        .run(stop.clone()),
    ));
    tasks.push(tokio::spawn(crate::triggers::run(
        core.service.workflow_service(),
        core.bus.clone(),
        stop.clone(),
    )));
    tasks
}

/// The `worker` command: executes runs, serves nothing.
pub async fn run_worker(
    data_dir: &Path,
    database_url: Option<&str>,
    worker: WorkerSettings,
    secret_key: Option<&SecretKeyText>,
    egress: EgressPolicy,
    secret_key_file: Option<&Path>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let worker = WorkerSettings {
        workers: worker.workers.max(1),
        ..worker
    };
    let core = start_core(
        data_dir,
        database_url,
        &worker,
        secret_key,
        secret_key_file,
        &Arc::new(egress),
        &stop,
    )
    .await?;
    tracing::info!(workers = worker.workers, "switchyard worker started");
    stop.cancelled().await;
    for t in core.tasks {
        let _ = t.await;
    }
    core.bus.flush().await;
    core.db.close(std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// Cancels `stop` on SIGINT or SIGTERM.
pub fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    stop.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        stop.cancel();
    });
}
