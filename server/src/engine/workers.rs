//! apalis workers of this process: each pulls attempts from the queue and hands them to the
//! engine. A worker that dies on a database error is restarted; shutdown stops fetching, lets
//! in-flight attempts finish within the grace period and hands back the rest.
use std::time::Duration;

use apalis::prelude::*;
use apalis_core::backend::ext::poll_strategy::Strategy;
use tokio_util::sync::CancellationToken;

use super::{
    Engine, StopReason,
    queue::{Queue, RunTask},
};

async fn handle(task: RunTask, engine: Data<Engine>) -> Result<(), BoxDynError> {
    // Executed on its own task so that apalis dropping this future at shutdown cannot cut an
    // attempt short: the engine finishes or hands it back itself.
    let engine: Engine = (*engine).clone();
    tokio::spawn(async move { engine.execute(task).await }).await?;
    Ok(())
}

/// Runs `count` workers until `stop` fires, then drains.
pub async fn run(engine: Engine, count: usize, stop: CancellationToken) {
    let mut handles = Vec::new();
    for index in 0..count {
        handles.push(tokio::spawn(supervise(engine.clone(), index, stop.clone())));
    }
    stop.cancelled().await;
    engine.stop_accepting();
    let grace = engine.settings().shutdown_grace();
    let deadline = tokio::time::Instant::now() + grace;
    while engine.busy_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if engine.inflight_count() > 0 {
        tracing::info!(
            runs = engine.inflight_count(),
            "grace period over: handing in-flight runs back"
        );
        engine.stop_all(StopReason::Shutdown);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while engine.busy_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
}

async fn supervise(engine: Engine, index: usize, stop: CancellationToken) {
    let mut restarts = 0u32;
    loop {
        let name = format!("{}-w{index}-r{restarts}", engine.owner());
        let result = run_one(&engine, &name, stop.clone()).await;
        if stop.is_cancelled() {
            return;
        }
        restarts += 1;
        tracing::warn!(worker = %name, error = ?result.err(), "worker stopped; restarting");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn run_one(engine: &Engine, name: &str, stop: CancellationToken) -> Result<(), WorkerError> {
    let strategy = Strategy::new().stream(engine.waker().stream(engine.settings().poll()));
    let concurrency = engine.settings().concurrency.max(1);
    // Stop fetching as soon as shutdown starts; in-flight attempts are drained by `run`.
    let signal = async move {
        stop.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    match engine.queue().clone() {
        Queue::Sqlite(storage) => {
            WorkerBuilder::new(name)
                .backend(storage.poll_with_strategy(strategy))
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle)
                .run_until(signal)
                .await
        }
        Queue::Postgres(storage, _) => {
            WorkerBuilder::new(name)
                .backend(storage.poll_with_strategy(strategy))
                .data(engine.clone())
                .concurrency(concurrency)
                .build(handle)
                .run_until(signal)
                .await
        }
    }
}
