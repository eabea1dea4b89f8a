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
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::{JobDefinition, JobRun, Service, WorkflowDefinition, WorkflowRun, WorkflowRunStatus};

/// An event as stored and as the bus carries it (type, id, the `{"type", "data"}` payload).
pub use crate::store::StoredEvent;
use crate::{db::Pool, store::Store};

/// How long the reader waits for a missing id before skipping it.
const GAP_GRACE: Duration = Duration::from_secs(2);
/// How long the writer retries a batch of events the database refuses before dropping it.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(30);

/// Every event the system publishes: its type (`job.run.succeeded`, ...) and data are derived
/// from it in one place ([`Event::event_type`], [`Event::data`]), and consumers read stored
/// events back as it ([`Event::decode`]) instead of walking JSON paths.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `job.run.<status>`: a job run was accepted or changed state.
    JobRun(JobRun),
    /// `workflow.run.<change>`: `pending` (created), `updated` (its steps moved) or its new
    /// status.
    WorkflowRun {
        run: WorkflowRun,
        change: WorkflowRunChange,
    },
    /// `job.definition.updated`: saved, or deleted.
    JobDefinition { job: JobDefinition, deleted: bool },
    /// `workflow.definition.updated`: saved, or deleted.
    WorkflowDefinition {
        workflow: WorkflowDefinition,
        deleted: bool,
    },
    /// `service.updated`: registered, changed, or its health changed.
    Service(Service),
}

/// What happened to a workflow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowRunChange {
    /// Its steps moved on (a step started or ended) without a change of the run's status.
    Updated,
    /// It has this status now (`pending` when it was created).
    Status(WorkflowRunStatus),
}

impl Event {
    /// The event's type, as stored and as the event stream names it.
    pub fn event_type(&self) -> String {
        match self {
            Event::JobRun(run) => format!("job.run.{}", run.status),
            Event::WorkflowRun { change, .. } => match change {
                WorkflowRunChange::Updated => "workflow.run.updated".to_string(),
                WorkflowRunChange::Status(status) => format!("workflow.run.{status}"),
            },
            Event::JobDefinition { .. } => "job.definition.updated".to_string(),
            Event::WorkflowDefinition { .. } => "workflow.definition.updated".to_string(),
            Event::Service(_) => "service.updated".to_string(),
        }
    }

    /// The event's `data` (api.md "Events").
    pub fn data(&self) -> Value {
        let with_deleted = |key: &str, value: Value, deleted: bool| {
            let mut data = serde_json::Map::new();
            data.insert(key.to_string(), value);
            if deleted {
                data.insert("deleted".to_string(), Value::Bool(true));
            }
            Value::Object(data)
        };
        match self {
            Event::JobRun(run) => json!({ "run": run }),
            Event::WorkflowRun { run, .. } => json!({ "run": run }),
            Event::JobDefinition { job, deleted } => with_deleted(
                "job",
                serde_json::to_value(job).unwrap_or_default(),
                *deleted,
            ),
            Event::WorkflowDefinition { workflow, deleted } => with_deleted(
                "workflow",
                serde_json::to_value(workflow).unwrap_or_default(),
                *deleted,
            ),
            Event::Service(service) => json!({ "service": service }),
        }
    }

    /// A stored event read back; None for a type this version does not know or data it cannot
    /// read (an event written by a newer version).
    pub fn decode(ev: &StoredEvent) -> Option<Event> {
        let data = ev.payload.get("data")?;
        let field = |key: &str| data.get(key);
        let deleted = data
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let t = ev.event_type.as_str();
        if t.starts_with("job.run.") {
            return JobRun::deserialize(field("run")?).ok().map(Event::JobRun);
        }
        if let Some(what) = t.strip_prefix("workflow.run.") {
            let run = WorkflowRun::deserialize(field("run")?).ok()?;
            let change = match what {
                "updated" => WorkflowRunChange::Updated,
                status => WorkflowRunChange::Status(WorkflowRunStatus::parse(status)?),
            };
            return Some(Event::WorkflowRun { run, change });
        }
        match t {
            "job.definition.updated" => Some(Event::JobDefinition {
                job: JobDefinition::deserialize(field("job")?).ok()?,
                deleted,
            }),
            "workflow.definition.updated" => Some(Event::WorkflowDefinition {
                workflow: WorkflowDefinition::deserialize(field("workflow")?).ok()?,
                deleted,
            }),
            "service.updated" => Service::deserialize(field("service")?)
                .ok()
                .map(Event::Service),
            _ => None,
        }
    }

    /// The job run or workflow run the event is about, if any.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Event::JobRun(run) => Some(&run.id),
            Event::WorkflowRun { run, .. } => Some(&run.id),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct EventBus {
    store: Store,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    wake: Arc<Notify>,
    /// Asks the PostgreSQL notify pump to announce new events to other processes.
    announce: Arc<Notify>,
    writer: mpsc::Sender<WriterMsg>,
    /// Highest id the reader has delivered: every event up to it is settled (no gap can fill
    /// in below it any more), so replay never reads past it.
    delivered: Arc<AtomicI64>,
}

impl EventBus {
    pub fn new(store: Store) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let (writer, rx) = mpsc::channel(10_000);
        let wake = Arc::new(Notify::new());
        let announce = Arc::new(Notify::new());
        tokio::spawn(write_events(
            store.clone(),
            rx,
            wake.clone(),
            announce.clone(),
        ));
        EventBus {
            store,
            tx,
            wake,
            announce,
            writer,
            delivered: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// Appends `event` to the log as `{"type", "data"}`. The write is batched with others by
    /// the writer task (one insert, one commit for many events); failures are logged, not
    /// returned: the state change the event reports has already been committed.
    pub async fn publish(&self, event: Event) {
        let event_type = event.event_type();
        let data = event.data();
        let event_type = event_type.as_str();
        let msg = WriterMsg::Event(
            event_type.to_string(),
            envelope(event_type, data),
            Utc::now(),
        );
        if self.writer.send(msg).await.is_err() {
            tracing::error!(event_type, "event writer gone; event dropped");
        }
    }

    /// Returns once every event published before the call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriterMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The id of the newest stored event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64, sea_orm::DbErr> {
        self.store.last_event_id().await
    }

    /// When more than `max` events follow event `after`: the id after which the newest `max`
    /// of them begin. `None` when `max` or fewer follow.
    pub async fn replay_start(&self, after: i64, max: u64) -> Result<Option<i64>, sea_orm::DbErr> {
        self.store.replay_start(after, max).await
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
        }
    }
}

/// An event's stored payload: `{"type", "data"}`.
pub fn envelope(event_type: &str, data: Value) -> Value {
    json!({"type": event_type, "data": data})
}

enum WriterMsg {
    Event(String, Value, chrono::DateTime<Utc>),
    Flush(oneshot::Sender<()>),
}

/// Stores published events in batches, in publish order, then wakes the local reader and the
/// announcer. Ends when every bus handle is gone.
async fn write_events(
    store: Store,
    mut rx: mpsc::Receiver<WriterMsg>,
    wake: Arc<Notify>,
    announce: Arc<Notify>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Event(t, p, at) => batch.push((t, p, at)),
                WriterMsg::Flush(done) => flushes.push(done),
            }
            if batch.len() < 500 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // A database that restarts is away for seconds: retried for a while (publishers
            // wait once the channel is full) before events are given up.
            let give_up = Instant::now() + WRITE_RETRY_FOR;
            let mut pause = Duration::from_millis(50);
            let mut stored = false;
            for attempt in 0.. {
                match store.insert_events(&batch).await {
                    Ok(()) => {
                        stored = true;
                        break;
                    }
                    Err(e) if Instant::now() < give_up => {
                        tracing::warn!(error = %e, attempt, "could not record events; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "could not record events");
                        break;
                    }
                }
            }
            if !stored {
                tracing::error!(
                    events = batch.len(),
                    "dropped events after repeated failures"
                );
            }
            wake.notify_one();
            announce.notify_one();
        }
        for done in flushes {
            let _ = done.send(());
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

/// Hands every event from `rx` to `handle`, in order, until `stop` fires or the bus closes.
/// Events dropped because this receiver fell behind are logged with `missed`, which says
/// what the follower could not do for them.
pub async fn follow<F, Fut>(
    mut rx: broadcast::Receiver<Arc<StoredEvent>>,
    stop: CancellationToken,
    missed: &'static str,
    mut handle: F,
) where
    F: FnMut(Arc<StoredEvent>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(ev) => handle(ev).await,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "event bus lagged: {missed}")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
