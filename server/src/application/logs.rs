//! Reading a run's log (the plain-text log endpoint and its follow mode).
use domain::logs::LogLine;
use wire::RunStatus;

use super::AppResult;
use crate::store::Store;

#[derive(Clone)]
pub struct RunLogs {
    store: Store,
}

impl RunLogs {
    pub fn new(store: Store) -> RunLogs {
        RunLogs { store }
    }

    /// Where the last `lines` lines after line `after` begin.
    pub async fn tail_start(&self, run_id: &str, after: i64, lines: u64) -> AppResult<i64> {
        Ok(self.store.log_tail_start(run_id, after, lines).await?)
    }

    /// The id of the run's newest line (0 when it has none).
    pub async fn last_id(&self, run_id: &str) -> AppResult<i64> {
        Ok(self.store.last_log_id(run_id).await?)
    }

    /// Up to `limit` lines after line `after`, oldest first.
    pub async fn read(&self, run_id: &str, after: i64, limit: u64) -> AppResult<Vec<LogLine>> {
        Ok(self.store.read_logs(run_id, after, limit).await?)
    }

    /// The run's status now; None once the run is gone.
    pub async fn status(&self, run_id: &str) -> AppResult<Option<RunStatus>> {
        Ok(self.store.get_run(run_id).await?.map(|r| r.status))
    }
}
