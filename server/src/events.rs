//! The event log and bus. Every state change appends an event row (the durable, replayable
//! log); one reader task per process follows the table and fans new rows out to local
//! subscribers (SSE clients, the engine). Events written by other processes arrive through
//! LISTEN/NOTIFY on PostgreSQL and through polling on SQLite.
//!
//! Architecture invariant: subscribers see events in id order, each at most once. Ids come
//! from a sequence, and on PostgreSQL a lower id may commit after a higher one, so the reader
//! holds back at a gap until the missing id appears or a grace period shows it never will
//! (a rolled-back transaction).
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    db::Pool,
    store::{Store, StoredEvent},
};

/// How long the reader waits for a missing id before skipping it.
const GAP_GRACE: Duration = Duration::from_secs(2);
/// Events kept for replay.
const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

#[derive(Clone)]
pub struct EventBus {
    store: Store,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    wake: Arc<Notify>,
    /// Asks the PostgreSQL notify pump to announce new events to other processes.
    announce: Arc<Notify>,
    /// Highest id the reader has delivered: every event up to it is settled (no gap can fill
    /// in below it any more), so replay never reads past it.
    delivered: Arc<AtomicI64>,
}

impl EventBus {
    pub fn new(store: Store) -> Self {
        let (tx, _) = broadcast::channel(4096);
        EventBus {
            store,
            tx,
            wake: Arc::new(Notify::new()),
            announce: Arc::new(Notify::new()),
            delivered: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// Appends an event `{"type", "data"}` to the log. Failures are logged, not returned: the
    /// state change it reports has already been committed.
    pub async fn publish(&self, event_type: &str, data: Value) {
        let payload = json!({"type": event_type, "data": data});
        if let Err(e) = self
            .store
            .insert_event(event_type, &payload, Utc::now())
            .await
        {
            tracing::error!(error = %e, event_type, "could not record event");
        }
        self.wake.notify_one();
        self.announce.notify_one();
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tx.subscribe()
    }

    /// Stored events after `after_id` that the reader has already delivered live, for replay.
    /// Anything newer reaches a subscriber through the broadcast, in order.
    pub async fn replay(
        &self,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<StoredEvent>, sea_orm::DbErr> {
        let settled = self.delivered.load(Ordering::Acquire);
        let mut batch = self.store.events_after(after_id, limit).await?;
        batch.retain(|e| e.id <= settled);
        Ok(batch)
    }

    /// Follows the event table after event `after` until `stop` fires. The caller reads
    /// `after` (the last event id) before it publishes or serves anything: a reader that looked
    /// it up itself, later, silently skipped whatever was written in between.
    pub async fn run_reader(self, after: i64, stop: CancellationToken) {
        let mut cursor = after;
        self.delivered.store(cursor, Ordering::Release);
        let notified = Arc::new(Notify::new());
        let idle = if let Pool::Postgres(pool) = &self.store.database().pool {
            tokio::spawn(listen_postgres(
                pool.clone(),
                notified.clone(),
                stop.clone(),
            ));
            tokio::spawn(notify_pump(
                pool.clone(),
                self.announce.clone(),
                stop.clone(),
            ));
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        };
        let mut gap_since: Option<Instant> = None;
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = notified.notified() => {}
                _ = tokio::time::sleep(if gap_since.is_some() { Duration::from_millis(50) } else { idle }) => {}
            }
            loop {
                let batch = match self.store.events_after(cursor, 500).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "event reader: query failed");
                        break;
                    }
                };
                let full = batch.len() == 500;
                let mut stalled = false;
                for ev in batch {
                    if ev.id != cursor + 1 {
                        let since = *gap_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < GAP_GRACE {
                            stalled = true;
                            break;
                        }
                    }
                    gap_since = None;
                    cursor = ev.id;
                    self.delivered.store(cursor, Ordering::Release);
                    let _ = self.tx.send(Arc::new(ev));
                }
                if stalled || !full {
                    break;
                }
            }
            // Under load, let events accumulate a little so one query carries many of them.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = Instant::now();
                if let Err(e) = self.store.prune_events(Utc::now() - RETENTION).await {
                    tracing::warn!(error = %e, "event reader: pruning failed");
                }
            }
        }
    }
}

/// Announces new events to the other processes with one `NOTIFY` per burst. A NOTIFY per
/// event would serialize every committing transaction on PostgreSQL's notification lock.
async fn notify_pump(pool: sqlx::PgPool, announce: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = announce.notified() => {}
        }
        if let Err(e) = sqlx::query("SELECT pg_notify('switchyard_events', '')")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "could not announce new events");
        }
        // Coalesce: events published meanwhile ride on the next announcement.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn listen_postgres(pool: sqlx::PgPool, notified: Arc<Notify>, stop: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event listener: cannot connect");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen("switchyard_events").await {
            tracing::warn!(error = %e, "event listener: LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = listener.recv() => match msg {
                    Ok(_) => notified.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener: connection lost, reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
