//! Read models of the pages: job summaries and the dashboard.

use chrono::Utc;
use wire::RunStatus;

use crate::store::RunFilter;

use super::{AppResult, JobService};

impl JobService {
    /// Every job with its last run status and success rate (finished runs that succeeded),
    /// from one grouped query over the runs.
    pub async fn job_summaries(&self) -> AppResult<Vec<wire::JobSummary>> {
        let stats = self.store.run_stats_by_job().await?;
        let mut out = Vec::new();
        for job in self.store.list_jobs().await? {
            let (mut total, mut finished, mut succeeded) = (0u64, 0u64, 0u64);
            let mut last: Option<(&str, RunStatus)> = None;
            for st in stats.iter().filter(|st| st.job_definition_id == job.id) {
                total += st.count;
                if st.status.is_terminal() {
                    finished += st.count;
                }
                if st.status == RunStatus::Succeeded {
                    succeeded += st.count;
                }
                if last.is_none_or(|(id, _)| st.newest_run_id.as_str() > id) {
                    last = Some((&st.newest_run_id, st.status));
                }
            }
            out.push(wire::JobSummary {
                job,
                last_run_status: last.map(|(_, status)| status),
                success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                run_count: total,
            });
        }
        Ok(out)
    }

    /// The dashboard: runs of the last 24 hours by status and by hour (counted by the
    /// database), and the latest failures.
    pub async fn dashboard(&self) -> AppResult<wire::Dashboard> {
        use chrono::{DurationRound, TimeDelta};
        let now = Utc::now();
        let first_hour = (now - TimeDelta::hours(23))
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(now);
        let slot = |status: RunStatus| RunStatus::ALL.iter().position(|x| *x == status);
        let mut counts = vec![0u64; RunStatus::ALL.len()];
        let mut hourly = vec![vec![0u64; RunStatus::ALL.len()]; 24];
        for (hour, status, n) in self.store.hourly_counts(first_hour).await? {
            let (Some(s), h) = (slot(status), (hour - first_hour).num_hours()) else {
                continue;
            };
            counts[s] += n;
            hourly[h.clamp(0, 23) as usize][s] += n;
        }
        let by_status = |c: &[u64]| {
            RunStatus::ALL
                .iter()
                .copied()
                .zip(c.iter().copied())
                .collect::<Vec<_>>()
        };
        let failures = RunFilter {
            statuses: vec![RunStatus::Failed, RunStatus::Expired],
            limit: 5,
            ..Default::default()
        };
        Ok(wire::Dashboard {
            counts: by_status(&counts),
            hourly: hourly
                .iter()
                .enumerate()
                .map(|(i, c)| (first_hour + TimeDelta::hours(i as i64), by_status(c)))
                .collect(),
            latest_failures: self.store.list_runs(&failures).await?.runs,
        })
    }
}
