//! Recovery loops run by every process with workers: runs whose worker died (lease expired)
//! get a new attempt or fail with a clear error, and pending runs whose queue task was lost
//! (a crash between insert and push) are enqueued again.
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Engine;

/// A pending run this overdue without having been (re)dispatched gets another queue task.
const OVERDUE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// Finished queue tasks are kept this long (for looking into the queue), then deleted.
const QUEUE_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub async fn run(engine: Engine, stop: CancellationToken) {
    let every = (engine.settings().lease() / 2).max(Duration::from_millis(500));
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = sweep(&engine).await {
            tracing::warn!(error = %e, "recovery sweep failed");
        }
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            last_prune = Some(tokio::time::Instant::now());
            match engine
                .store()
                .prune_queue(super::queue::RUN_QUEUE, Utc::now() - QUEUE_RETENTION)
                .await
            {
                Ok(n) if n > 0 => tracing::info!(tasks = n, "pruned finished queue tasks"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the queue failed"),
            }
        }
    }
}

/// One pass of both recoveries.
pub async fn sweep(engine: &Engine) -> Result<(), sea_orm::DbErr> {
    let store = engine.store();
    // Leases were written by the database's clock, whichever machine wrote them.
    let now = store.clock().now();
    for run in store.expired_leases(now, 100).await? {
        let lost = format!(
            "worker lost during attempt {} (no heartbeat for {} ms)",
            run.attempt,
            engine.settings().lease().as_millis()
        );
        if run.attempt < run.max_attempts {
            if let Some(next) = store
                .requeue(
                    &run.id,
                    run.attempt,
                    None,
                    run.attempt + 1,
                    now,
                    Some(lost.clone()),
                    now,
                )
                .await?
            {
                tracing::warn!(run_id = %run.id, attempt = run.attempt, "worker lost; retrying the run");
                store
                    .append_logs(
                        vec![(
                            run.id.clone(),
                            run.attempt,
                            "system".into(),
                            format!("{lost}; retrying as attempt {}", next.attempt),
                        )],
                        now,
                    )
                    .await?;
                engine.run_changed(&next).await;
                engine
                    .dispatch(&next.id, next.attempt, Duration::ZERO)
                    .await;
            }
        } else {
            let msg = format!("{lost}; no attempts left");
            // The line goes in before the run turns terminal: log followers stop reading once
            // it has ended, and must not miss why it did.
            store
                .append_logs(
                    vec![(run.id.clone(), run.attempt, "system".into(), msg.clone())],
                    now,
                )
                .await?;
            if let Some(failed) = store
                .fail_expired_lease(&run.id, run.attempt, msg, now)
                .await?
            {
                tracing::warn!(run_id = %run.id, "worker lost; run failed");
                engine.run_changed(&failed).await;
            }
        }
    }
    for (run_id, attempt) in store
        .overdue_pending(now - OVERDUE, now - OVERDUE, 200)
        .await?
    {
        store.mark_dispatched(&run_id, now).await?;
        engine.dispatch(&run_id, attempt, Duration::ZERO).await;
    }
    // Workflow runs a crash left between a step's end and the next step's start.
    engine.sweep_observed().await;
    Ok(())
}
