//! Batches run-log lines into the database off the handlers' hot path.
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::{handlers::LogLine, store::Store};

/// Handle to the log writer task.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<LogLine>,
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
}

impl LogWriter {
    pub fn spawn(store: Store) -> LogWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        let (flush_tx, mut flush_rx) = mpsc::channel::<oneshot::Sender<()>>(64);
        tokio::spawn(async move {
            let mut buf: Vec<LogLine> = Vec::new();
            loop {
                let mut waiters = Vec::new();
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) => buf.push(line),
                        None => { write(&store, &mut buf).await; return; }
                    },
                    Some(w) = flush_rx.recv() => waiters.push(w),
                    _ = tokio::time::sleep(Duration::from_millis(100)), if !buf.is_empty() => {
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
                while let Ok(w) = flush_rx.try_recv() {
                    waiters.push(w);
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

    pub fn sender(&self) -> mpsc::UnboundedSender<LogLine> {
        self.tx.clone()
    }

    /// Returns once every line sent before the call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flush_tx.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write(store: &Store, buf: &mut Vec<LogLine>) {
    if buf.is_empty() {
        return;
    }
    let lines: Vec<_> = buf
        .drain(..)
        .map(|l| {
            (
                l.run_id,
                l.attempt,
                l.stream.as_str().to_string(),
                l.message,
            )
        })
        .collect();
    for attempt in 0..3 {
        match store.append_logs(lines.clone(), Utc::now()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "could not store run log lines");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    tracing::error!(
        lines = lines.len(),
        "dropped run log lines after repeated failures"
    );
}
