//! The durable queue: apalis storage in the same database (SQLite or PostgreSQL). A queue task
//! only says "attempt N of run X is due"; the run's state lives in our tables, so a lost,
//! duplicated or stale task is harmless (claims are conditional).
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use futures::channel::mpsc;
use serde::{Deserialize, Serialize};

use crate::db::{Database, Pool};

/// Name of the apalis queue carrying job-run attempts.
pub const RUN_QUEUE: &str = "switchyard.job-runs";

/// Payload of a queue task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTask {
    pub run_id: String,
    pub attempt: i32,
}

#[derive(Clone)]
pub enum Queue {
    Sqlite(SqliteStorage<RunTask>),
    /// The pool is the storage's own: pushes go straight to apalis' insert (see `push`).
    Postgres(PostgresStorage<RunTask>, sqlx::PgPool),
}

/// One attempt's task; apalis' own retries stay off (the engine decides about attempts).
fn task_builder(task: RunTask) -> TaskBuilder<RunTask> {
    TaskBuilder::new(task).max_attempts(1)
}

impl Queue {
    /// `heartbeat`: how often apalis workers report liveness (its orphan recovery is a second
    /// line behind our own leases).
    pub fn new(db: &Database, heartbeat: Duration) -> Self {
        match &db.pool {
            Pool::Sqlite(pool) => Queue::Sqlite(
                SqliteStorage::new(pool).with_config(
                    apalis_sqlite::Config::default()
                        .queue(RUN_QUEUE)
                        .batch_size(50)
                        .heartbeat_interval(heartbeat)
                        .missed_heartbeats(3)
                        .persist_results(false)
                        // Our conditional claims already keep an attempt to one worker; apalis' own
                        // lock would cost every task another UPDATE and transaction.
                        .lock_tasks(false),
                ),
            ),
            Pool::Postgres(pool) => Queue::Postgres(
                PostgresStorage::new(pool).with_config(
                    apalis_postgres::Config::default()
                        .queue(RUN_QUEUE)
                        .batch_size(50)
                        .heartbeat_interval(heartbeat)
                        .missed_heartbeats(3)
                        .persist_results(false)
                        // Our conditional claims already keep an attempt to one worker; apalis' own
                        // lock would cost every task another UPDATE and transaction.
                        .lock_tasks(false),
                ),
                pool.clone(),
            ),
        }
    }

    /// Enqueues an attempt due after `delay`.
    pub async fn push(&self, task: RunTask, delay: Duration) -> Result<(), BoxDynError> {
        self.push_all(vec![task], delay).await
    }

    /// Enqueues attempts due after `delay` (apalis' own retries stay off: the engine decides
    /// about further attempts), in one statement (PostgreSQL) or one transaction
    /// (SQLite): a fan-out's 50 steps are one write, not 50.
    pub async fn push_all(&self, tasks: Vec<RunTask>, delay: Duration) -> Result<(), BoxDynError> {
        if tasks.is_empty() {
            return Ok(());
        }
        // apalis keeps `run_at` in whole seconds and its `run_after` rounds down, which made
        // sub-second backoffs (and the fraction of longer delays) fire early. Round up
        // instead: an attempt may start up to a second late, never before it is due.
        let due_secs = (!delay.is_zero()).then(|| {
            let due = std::time::SystemTime::now() + delay;
            let since_epoch = due
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0)
        });
        let built = tasks.into_iter().map(|t| {
            let builder = task_builder(t);
            match due_secs {
                Some(secs) => builder.run_at_timestamp(secs).build(),
                None => builder.build(),
            }
        });
        self.push_built(built.collect()).await
    }

    async fn push_built(&self, tasks: Vec<Task<RunTask>>) -> Result<(), BoxDynError> {
        match self {
            Queue::Sqlite(s) => s.clone().push_all(futures::stream::iter(tasks)).await?,
            // apalis' own push wraps its one INSERT in BEGIN/COMMIT: two more round trips per
            // run, and a transaction held open while this process is busy. The same INSERT on
            // its own commits alone.
            Queue::Postgres(_, pool) => {
                let tasks = tasks
                    .into_iter()
                    .map(|t| t.try_map_args(|args| serde_json::to_vec(&args)))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut conn = pool.acquire().await?;
                apalis_postgres::queries::push_tasks(&mut *conn, RUN_QUEUE, tasks).await?;
            }
        }
        Ok(())
    }
}

/// Wakes this process' idle workers at once when a task is pushed (locally, or elsewhere as
/// seen on the event bus), instead of waiting for the next poll.
#[derive(Clone, Default)]
pub struct WorkerWaker {
    senders: std::sync::Arc<std::sync::Mutex<Vec<mpsc::Sender<()>>>>,
}

impl WorkerWaker {
    /// A worker's poll trigger: wake-ups from [`WorkerWaker::wake`] (bursts coalesce into one)
    /// and a tick every `poll`.
    pub fn stream(&self, poll: Duration) -> WakeStream {
        let (tx, rx) = mpsc::channel(1);
        if let Ok(mut s) = self.senders.lock() {
            s.push(tx);
        }
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        WakeStream { rx, tick }
    }

    pub fn wake(&self) {
        if let Ok(mut senders) = self.senders.lock() {
            senders.retain(|tx| !tx.is_closed());
            for tx in senders.iter_mut() {
                let _ = tx.try_send(());
            }
        }
    }
}

/// When an apalis worker should look for tasks. It is the worker's only poll strategy, and it
/// is never left without a registered wake-up: every poll drains both sources until both are
/// pending. (apalis' own interval strategy re-arms its timer without polling it, and its
/// combined strategy stops at the first ready source; a wake-up consumed while a fetch was
/// already under way, one that could not see the new task, then left the worker asleep until
/// some later push: tasks pushed in a burst waited for the recovery sweep, ~30 s.)
pub struct WakeStream {
    rx: mpsc::Receiver<()>,
    tick: tokio::time::Interval,
}

impl futures::Stream for WakeStream {
    type Item = ();

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        use std::task::Poll;
        let mut due = false;
        while self.tick.poll_tick(cx).is_ready() {
            due = true;
        }
        // Until pending (or closed: every waker dropped, which the engine never does; ticks go on).
        while let Poll::Ready(Some(())) = futures::StreamExt::poll_next_unpin(&mut self.rx, cx) {
            due = true;
        }
        if due {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Context, Poll},
        time::Duration,
    };

    use futures::{Stream as _, task::ArcWake};

    use super::WorkerWaker;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// After every ready poll both sources are armed again: the worker is woken by the next
    /// tick and by the next wake-up without being polled in between (apalis polls its strategy
    /// once and then parks until woken).
    #[tokio::test]
    async fn wake_stream_rearms_after_every_ready_poll() {
        let waker = WorkerWaker::default();
        let mut stream = waker.stream(Duration::from_millis(50));
        let count = Arc::new(Count::default());
        let task_waker = futures::task::waker(count.clone());
        let mut cx = Context::from_waker(&task_waker);

        // The first poll arms the tick; the tick wakes the task and is ready.
        let _ = std::pin::Pin::new(&mut stream).poll_next(&mut cx);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            count.0.load(Ordering::SeqCst) >= 1,
            "the tick never woke the task"
        );
        assert_eq!(
            std::pin::Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Ready(Some(()))
        );
        // Not polled again: the next tick must still wake the task.
        let before = count.0.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            count.0.load(Ordering::SeqCst) > before,
            "the tick was not re-armed"
        );
        // Drain the ticks that came meanwhile.
        let _ = std::pin::Pin::new(&mut stream).poll_next(&mut cx);

        // A wake-up is ready at once, and the one after it wakes the task again.
        waker.wake();
        assert_eq!(
            std::pin::Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Ready(Some(()))
        );
        let before = count.0.load(Ordering::SeqCst);
        waker.wake();
        assert!(
            count.0.load(Ordering::SeqCst) > before,
            "the wake-up channel was not re-armed"
        );
        // Coalesced: one ready poll for any number of wake-ups, then pending until the next.
        waker.wake();
        assert_eq!(
            std::pin::Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Ready(Some(()))
        );
        assert_eq!(
            std::pin::Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Pending
        );
    }
}
