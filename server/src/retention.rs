//! Retention: the database does not grow forever. Every `serve` process runs a [`Pruner`];
//! one of them at a time does a pass (PostgreSQL: a transaction-scoped advisory lock held for
//! the pass, released if its process or connection dies; SQLite: an exclusive `flock` on
//! `<data-dir>/retention.lock`, the database being a file on this machine). A pass deletes, in
//! small batches (`store/retention.rs`), finished runs older than `--retain-runs-days` or beyond
//! the newest `--retain-runs-per-definition` of their job or workflow, events older than
//! `--retain-events-days`, audit entries older than `--retain-audit-days`, and alert deliveries
//! as old as runs; then, on SQLite, gives the freed pages back to the file system.
use std::{path::PathBuf, time::Duration};

use chrono::TimeDelta;
use sea_orm::DbErr;
use tokio_util::sync::CancellationToken;

use crate::{
    db::Pool,
    settings::RetentionSettings,
    store::{DeletedRuns, Store, StoreResult},
};

/// Job runs per batch (each with its log lines, deleted a few thousand per statement).
const RUN_BATCH: u64 = 200;
/// Workflow runs per batch (each with its steps and their job runs).
const WORKFLOW_BATCH: u64 = 50;
/// Events, audit entries or alert deliveries per statement.
const ROW_BATCH: u64 = 1000;
/// Between batches: other writers get the database in between.
const PAUSE: Duration = Duration::from_millis(10);
/// The PostgreSQL advisory lock key of the pruner ("SWPRUNER").
pub const ADVISORY_KEY: i64 = 0x5357_5052_554e_4552;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: DeletedRuns,
    pub events: u64,
    pub audit_entries: u64,
    pub alert_deliveries: u64,
    /// SQLite: the database's page count before and after giving freed pages back.
    pub pages: Option<(i64, i64)>,
}

impl Pruned {
    fn deleted_anything(&self) -> bool {
        self.runs != DeletedRuns::default()
            || self.events > 0
            || self.audit_entries > 0
            || self.alert_deliveries > 0
    }
}

#[derive(Clone)]
pub struct Pruner {
    store: Store,
    settings: RetentionSettings,
    lock_path: PathBuf,
}

fn days(n: u32) -> Option<TimeDelta> {
    (n > 0).then(|| TimeDelta::days(i64::from(n)))
}

impl Pruner {
    pub fn new(store: Store, settings: RetentionSettings, data_dir: &std::path::Path) -> Pruner {
        Pruner {
            store,
            settings,
            lock_path: data_dir.join("retention.lock"),
        }
    }

    /// Prunes every `--prune-interval-ms` until `stop` (the first pass soon after start).
    pub async fn run(self, stop: CancellationToken) {
        if self.settings.prune_interval_ms == 0 {
            return;
        }
        let every = Duration::from_millis(self.settings.prune_interval_ms.max(100));
        let mut wait = every.min(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = every;
            match self.pass_if_first().await {
                Ok(Some(p)) if p.deleted_anything() => tracing::info!(
                    job_runs = p.runs.job_runs,
                    workflow_runs = p.runs.workflow_runs,
                    log_lines = p.runs.log_lines,
                    events = p.events,
                    audit_entries = p.audit_entries,
                    alert_deliveries = p.alert_deliveries,
                    pages_before = p.pages.map(|(b, _)| b),
                    pages_after = p.pages.map(|(_, a)| a),
                    "retention: pruned"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention: pruning failed; trying again next time")
                }
            }
        }
    }

    /// One pass, unless another process is doing one (None).
    pub async fn pass_if_first(&self) -> StoreResult<Option<Pruned>> {
        match &self.store.database().pool {
            Pool::Postgres(pool) => {
                let err = |e: sqlx::Error| DbErr::Custom(format!("retention lock: {e}"));
                // Held until this transaction ends: committed after the pass, rolled back
                // when it is dropped, released by PostgreSQL when the connection dies.
                let mut lock = pool.begin().await.map_err(err)?;
                let first: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(ADVISORY_KEY)
                    .fetch_one(&mut *lock)
                    .await
                    .map_err(err)?;
                if !first {
                    return Ok(None);
                }
                let pruned = self.pass().await;
                let _ = lock.commit().await;
                pruned.map(Some)
            }
            Pool::Sqlite(_) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&self.lock_path)
                    .map_err(|e| DbErr::Custom(format!("{}: {e}", self.lock_path.display())))?;
                let _held = match nix::fcntl::Flock::lock(
                    file,
                    nix::fcntl::FlockArg::LockExclusiveNonblock,
                ) {
                    Ok(held) => held,
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                    Err((_, e)) => {
                        return Err(DbErr::Custom(format!("{}: {e}", self.lock_path.display())));
                    }
                };
                self.pass().await.map(Some)
            }
        }
    }

    /// Deletes whatever retention no longer keeps, batch by batch.
    async fn pass(&self) -> StoreResult<Pruned> {
        let store = &self.store;
        let now = store.clock().now();
        let mut p = Pruned::default();
        if let Some(age) = days(self.settings.retain_runs_days) {
            let before = now - age;
            loop {
                let ids = store.job_runs_ended_before(before, RUN_BATCH).await?;
                let d = store.delete_job_runs(&ids).await?;
                p.runs += d;
                if ids.is_empty() || d.job_runs == 0 {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
            // Runs whose steps' job runs are still busy are skipped, not waited for.
            let mut skip = 0;
            loop {
                let ids = store
                    .workflow_runs_ended_before(before, skip, WORKFLOW_BATCH)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let d = store.delete_workflow_runs(&ids).await?;
                skip += ids.len() as u64 - d.workflow_runs;
                p.runs += d;
                tokio::time::sleep(PAUSE).await;
            }
            loop {
                let n = store.prune_alert_deliveries(before, ROW_BATCH).await?;
                p.alert_deliveries += n;
                if n < ROW_BATCH {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
        let keep = self.settings.retain_runs_per_definition;
        if keep > 0 {
            loop {
                let ids = store.job_runs_beyond(keep, RUN_BATCH).await?;
                let d = store.delete_job_runs(&ids).await?;
                p.runs += d;
                if ids.is_empty() || d.job_runs == 0 {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
            loop {
                let ids = store.workflow_runs_beyond(keep, WORKFLOW_BATCH).await?;
                let d = store.delete_workflow_runs(&ids).await?;
                p.runs += d;
                if ids.is_empty() || d.workflow_runs == 0 {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
        if let Some(age) = days(self.settings.retain_events_days) {
            loop {
                let n = store.prune_events(now - age, ROW_BATCH).await?;
                p.events += n;
                if n < ROW_BATCH {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
        if let Some(age) = days(self.settings.retain_audit_days) {
            loop {
                let n = store.prune_audit_logs(now - age, ROW_BATCH).await?;
                p.audit_entries += n;
                if n < ROW_BATCH {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
        if p.deleted_anything() {
            p.pages = store.reclaim_space().await?;
        }
        Ok(p)
    }
}
