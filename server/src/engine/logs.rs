//! Batches run-log lines into the database off the handlers' hot path.
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::entrypoints::{LogLine, LogRoom, LogSender};
use crate::store::Store;

/// The longest a line waits in the writer before it is stored (readers of a live log see it
/// by then).
const WRITE_DELAY: Duration = Duration::from_millis(100);
/// How long a batch of lines the database refuses is retried before it is dropped.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(30);

/// Bytes of log lines a process holds before they are stored (the channel and the writer's
/// buffer together); producers of output wait beyond it (`LogSender::send`).
pub const LOG_BUFFER_BYTES: u32 = 8 * 1024 * 1024;

/// Handle to the log writer task.
#[derive(Clone)]
pub struct LogWriter {
    tx: LogSender,
    flush_tx: mpsc::Sender<Request>,
}

/// What the writer is asked for besides lines.
enum Request {
    /// Answer once every line sent before is stored.
    Flush(oneshot::Sender<()>),
    /// Hand back (instead of storing) the lines of this run not stored yet, once every line
    /// of it sent before is either stored or handed back.
    Take(String, oneshot::Sender<Vec<LogLine>>),
}

impl LogWriter {
    pub fn spawn(store: Store) -> LogWriter {
        Self::spawn_with_buffer(store, LOG_BUFFER_BYTES)
    }

    /// A writer whose producers wait once `buffer_bytes` of lines are waiting to be stored.
    pub fn spawn_with_buffer(store: Store, buffer_bytes: u32) -> LogWriter {
        let (raw_tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        // The task holds the room, not a sender: the channel closes when the last sender goes.
        let room = LogRoom::new(buffer_bytes);
        let tx = LogSender::new(raw_tx, room.clone());
        let (flush_tx, mut flush_rx) = mpsc::channel::<Request>(64);
        tokio::spawn(async move {
            let store = Stored { store, room };
            let mut buf: Vec<LogLine> = Vec::new();
            // When the oldest unstored line must be written: set by the first line after a
            // write, so a steady trickle of lines is still written every `WRITE_DELAY`.
            let mut due: Option<tokio::time::Instant> = None;
            loop {
                let mut requests = Vec::new();
                if buf.is_empty() {
                    due = None;
                } else if due.is_none() {
                    due = Some(tokio::time::Instant::now() + WRITE_DELAY);
                }
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => buf.push(line),
                        None => { write(&store, &mut buf).await; return; }
                    },
                    Some(r) = flush_rx.recv() => requests.push(r),
                    _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                        write(&store, &mut buf).await;
                        continue;
                    }
                }
                // Take whatever else is already queued, so one insert carries many lines.
                while let Ok(line) = rx.try_recv() {
                    buf.push(line);
                    if buf.len() >= 500 {
                        write(&store, &mut buf).await;
                    }
                }
                while let Ok(r) = flush_rx.try_recv() {
                    requests.push(r);
                }
                let mut waiters = Vec::new();
                for r in requests {
                    match r {
                        Request::Flush(w) => waiters.push(w),
                        Request::Take(run_id, reply) => {
                            let (mut taken, rest): (Vec<_>, Vec<_>) =
                                buf.drain(..).partition(|l| l.run_id == run_id);
                            buf = rest;
                            // Out of the buffer: the finish holds them now.
                            store.room.release(taken.iter_mut());
                            let _ = reply.send(taken);
                        }
                    }
                }
                if !waiters.is_empty() || buf.len() >= 500 {
                    write(&store, &mut buf).await;
                }
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        LogWriter { tx, flush_tx }
    }

    /// The lines of `run_id` sent before the call and not stored yet, for the caller to store
    /// with the run's outcome in one write (then a finished run never lacks a line of its log,
    /// at the cost of one commit instead of two).
    pub async fn take(&self, run_id: &str) -> Vec<LogLine> {
        let (tx, rx) = oneshot::channel();
        if self
            .flush_tx
            .send(Request::Take(run_id.to_string(), tx))
            .await
            .is_ok()
        {
            return rx.await.unwrap_or_default();
        }
        Vec::new()
    }

    pub fn sender(&self) -> LogSender {
        self.tx.clone()
    }

    /// Returns once every line sent before the call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flush_tx.send(Request::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Gives back the written lines' room when dropped.
struct Release<'a>(&'a LogRoom, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release_bytes(self.1);
    }
}

/// The store, and the buffer's room to give back once lines are stored.
struct Stored {
    store: Store,
    room: LogRoom,
}

async fn write(stored: &Stored, buf: &mut Vec<LogLine>) {
    if buf.is_empty() {
        return;
    }
    let reserved: usize = buf.iter().map(|l| l.reserved as usize).sum();
    let lines: Vec<_> = buf.drain(..).map(LogLine::into_row).collect();
    // Stored or dropped below: either way the room is given back after, so the lines being
    // written count against the buffer too.
    let _release = Release(&stored.room, reserved);
    // A database that restarts is away for seconds: retried for a while before lines are lost.
    let give_up = tokio::time::Instant::now() + WRITE_RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    for attempt in 0.. {
        match stored.store.append_logs(lines.clone(), Utc::now()).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, attempt, "could not store run log lines; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "could not store run log lines");
                break;
            }
        }
    }
    tracing::error!(
        lines = lines.len(),
        "dropped run log lines after repeated failures"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LogWriter;
    use crate::entrypoints::{LogLine, LogStream};
    use crate::{db::Database, store::Store};

    /// A line every 20 ms must not hold back the writing (the delay counts from the oldest
    /// unstored line, not from the newest).
    #[tokio::test]
    async fn a_steady_trickle_of_lines_is_stored_while_it_lasts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            Database::connect_and_migrate(dir.path(), None)
                .await
                .unwrap(),
        );
        let writer = LogWriter::spawn(store.clone());
        let tx = writer.sender();
        for i in 0..30 {
            tx.send_now(LogLine::new(
                "r".into(),
                1,
                LogStream::Stdout,
                format!("line {i}"),
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 600 ms of lines, no flush: the first ones have been due for ~500 ms.
        let stored = store.read_logs("r", 0, 100).await.unwrap();
        assert!(!stored.is_empty(), "nothing stored while lines kept coming");
        writer.flush().await;
        assert_eq!(store.read_logs("r", 0, 100).await.unwrap().len(), 30);
    }

    /// Room taken by sent lines comes back once they are stored or taken: the buffer does not
    /// shrink over time, and a producer of more than the buffer holds still gets it all stored.
    #[tokio::test]
    async fn stored_and_taken_lines_give_their_room_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            Database::connect_and_migrate(dir.path(), None)
                .await
                .unwrap(),
        );
        let writer = LogWriter::spawn_with_buffer(store.clone(), 4096);
        let tx = writer.sender();
        // 1 MiB through a 4 KiB buffer.
        for i in 0..1024 {
            tx.send(LogLine::new(
                "big".into(),
                1,
                LogStream::Stdout,
                format!("{i:04}{}", "x".repeat(1019)),
            ))
            .await;
        }
        writer.flush().await;
        assert_eq!(store.log_bytes("big").await.unwrap(), 1024 * 1024);
        assert_eq!(tx.room().available(), 4096);
        tx.send(LogLine::new(
            "t".into(),
            1,
            LogStream::Stdout,
            "taken".into(),
        ))
        .await;
        assert_eq!(writer.take("t").await.len(), 1);
        assert_eq!(tx.room().available(), 4096);
    }
}
