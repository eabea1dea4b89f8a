//! Operational metrics: `GET /metrics` (Prometheus text), `GET /api/metrics` (JSON) and the
//! `/metrics` page read the same figures from here.
//!
//! Runs execute in any process (`serve` and `switchyard worker` processes share the database),
//! so an in-process counter would only see this process's share. Hence:
//! - counters and gauges (runs by status, failure rates, queue depth) are read from the database
//!   at scrape time with grouped counts, cached for [`CACHE_TTL`] so a burst of scrapes costs one
//!   set of queries;
//! - duration histograms are fed from the event bus, which every `serve` process receives for
//!   the runs of all processes (`job.run.<terminal>` and `workflow.run.<terminal>` carry the run
//!   with its `durationMs`). They start empty when the server starts; with several servers each
//!   one observes every run (aggregate across instances with `max`, not `sum`).
//!
//! Failure rates: failed (jobs: failed + expired) runs over all runs that ended (succeeded,
//! failed, expired, canceled) within the last [`FAILURE_WINDOW`], by completion time; 0 when
//! none ended.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wire::{
    DurationBucket, DurationMetrics, DurationSummary, MetricsReport, QueueDepth, RunMetrics,
    RunStatus, SlugStatusCounts, WorkflowRunStatus,
};

use crate::events::{Event, WorkflowRunChange};
use crate::store::{SlugStatusCount, Store, StoreResult, StoredEvent};
use wire::{JobRun, WorkflowRun};

/// How long one set of database figures answers scrapes.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// The window of the failure rates.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(3600);
/// Histogram bucket bounds in seconds (the JSON shows them in ms).
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Workflow run id -> slug entries kept for labelling step latencies.
const SLUG_CACHE: usize = 10_000;

const JOB_TERMINAL: [&str; 4] = ["succeeded", "failed", "canceled", "expired"];
const JOB_FAILED: [&str; 2] = ["failed", "expired"];
const WORKFLOW_TERMINAL: [&str; 3] = ["succeeded", "failed", "canceled"];
const WORKFLOW_FAILED: [&str; 1] = ["failed"];

/// Figures read from the database at scrape time.
#[derive(Debug)]
struct DbFigures {
    jobs: Vec<SlugStatusCount>,
    workflows: Vec<SlugStatusCount>,
    jobs_window: Vec<(String, u64)>,
    workflows_window: Vec<(String, u64)>,
    due: u64,
    delayed: u64,
}

/// A duration distribution with the histograms' buckets, for the JSON summaries.
#[derive(Debug, Clone)]
struct Distribution {
    /// Per bucket (last: +Inf), not cumulative.
    counts: Vec<u64>,
    sum_ms: f64,
    count: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            counts: vec![0; BUCKETS_SECONDS.len() + 1],
            sum_ms: 0.0,
            count: 0,
        }
    }
}

impl Distribution {
    fn observe(&mut self, ms: f64) {
        let secs = ms / 1000.0;
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    /// The `q` quantile, linear within its bucket (Prometheus' `histogram_quantile`); the +Inf
    /// bucket answers with the highest finite bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = q * self.count as f64;
        let mut below = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            if *n > 0 && (below + n) as f64 >= target {
                let lo = if i == 0 {
                    0.0
                } else {
                    BUCKETS_SECONDS[i - 1] * 1000.0
                };
                let Some(hi) = BUCKETS_SECONDS.get(i).map(|b| b * 1000.0) else {
                    return Some(lo);
                };
                let within = ((target - below as f64) / *n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * within);
            }
            below += n;
        }
        None
    }

    fn summary(&self) -> DurationSummary {
        DurationSummary {
            count: self.count,
            sum_ms: self.sum_ms,
            mean_ms: (self.count > 0).then(|| self.sum_ms / self.count as f64),
            p50_ms: self.quantile(0.5),
            p90_ms: self.quantile(0.9),
            p99_ms: self.quantile(0.99),
            buckets: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, n)| DurationBucket {
                    le_ms: BUCKETS_SECONDS.get(i).map(|b| b * 1000.0),
                    count: *n,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Distributions {
    job_runs: Distribution,
    workflow_runs: Distribution,
    steps: Distribution,
}

/// The metrics of this server; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    job_runs: HistogramVec,
    workflow_runs: HistogramVec,
    steps: HistogramVec,
    distributions: Mutex<Distributions>,
    since: DateTime<Utc>,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<DbFigures>)>>,
    workflow_slugs: Mutex<HashMap<String, String>>,
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS_SECONDS.to_vec()),
        labels,
    )
    .expect("static histogram options are valid")
}

impl Metrics {
    pub fn new(store: Store) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                store,
                job_runs: histogram(
                    "switchyard_job_run_duration_seconds",
                    "Duration of finished job runs (startedAt to completedAt of the last attempt), observed by this server from the event bus",
                    &["job", "status"],
                ),
                workflow_runs: histogram(
                    "switchyard_workflow_run_duration_seconds",
                    "Duration of finished workflow runs, observed by this server from the event bus",
                    &["workflow", "status"],
                ),
                steps: histogram(
                    "switchyard_workflow_step_duration_seconds",
                    "Step latency: the duration of a workflow step's job run",
                    &["workflow", "step"],
                ),
                distributions: Mutex::new(Distributions::default()),
                since: Utc::now(),
                cache: tokio::sync::Mutex::new(None),
                workflow_slugs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Observes finished runs from the bus until `stop`. Subscribe before the runs of interest
    /// can end (at start-up), so none is missed.
    pub async fn follow(self, rx: broadcast::Receiver<Arc<StoredEvent>>, stop: CancellationToken) {
        let missed = "metrics: some durations were not observed";
        crate::events::follow(rx, stop, missed, |ev| {
            let this = self.clone();
            async move { this.observe(&ev).await }
        })
        .await
    }

    async fn observe(&self, ev: &StoredEvent) {
        // Only finished job runs and workflow runs count, and their type says so: the rest (most
        // of the bus: accepted and started runs) is not decoded.
        let finished_job_run = ev
            .event_type
            .strip_prefix("job.run.")
            .is_some_and(|status| JOB_TERMINAL.contains(&status));
        if !(finished_job_run || ev.event_type.starts_with("workflow.run.")) {
            return;
        }
        match Event::decode(ev) {
            Some(Event::JobRun(run)) => self.observe_job_run(&run).await,
            Some(Event::WorkflowRun { run, change }) => self.observe_workflow_run(&run, change),
            _ => {}
        }
    }

    /// A finished job run's duration (and its step's, for a workflow step).
    async fn observe_job_run(&self, run: &JobRun) {
        let status = run.status.as_str();
        let (Some(ms), true) = (run.duration_ms, JOB_TERMINAL.contains(&status)) else {
            return;
        };
        let ms = ms.max(0) as f64;
        self.inner
            .job_runs
            .with_label_values(&[run.job_slug.as_str(), status])
            .observe(ms / 1000.0);
        self.with_distributions(|d| d.job_runs.observe(ms));
        if let (Some(workflow_run), Some(step)) = (&run.workflow_run_id, &run.workflow_step_id) {
            let workflow = self.workflow_slug(workflow_run).await;
            self.inner
                .steps
                .with_label_values(&[workflow.as_str(), step.as_str()])
                .observe(ms / 1000.0);
            self.with_distributions(|d| d.steps.observe(ms));
        }
    }

    /// A workflow run's slug (for its steps' labels) and, when it finished, its duration
    /// (once: on the event of its final status, not on the `updated` beside it).
    fn observe_workflow_run(&self, run: &WorkflowRun, change: WorkflowRunChange) {
        let (id, slug) = (run.id.as_str(), run.workflow_slug.as_str());
        if let Ok(mut slugs) = self.inner.workflow_slugs.lock() {
            if slugs.len() >= SLUG_CACHE {
                slugs.clear();
            }
            slugs.insert(id.to_string(), slug.to_string());
        }
        let WorkflowRunChange::Status(status) = change else {
            return;
        };
        let status = status.as_str();
        if let (Some(ms), true) = (run.duration_ms, WORKFLOW_TERMINAL.contains(&status)) {
            let ms = ms.max(0) as f64;
            self.inner
                .workflow_runs
                .with_label_values(&[slug, status])
                .observe(ms / 1000.0);
            self.with_distributions(|d| d.workflow_runs.observe(ms));
        }
    }

    fn with_distributions(&self, f: impl FnOnce(&mut Distributions)) {
        if let Ok(mut d) = self.inner.distributions.lock() {
            f(&mut d);
        }
    }

    /// The slug of a workflow run: from its events seen so far, else from the database.
    async fn workflow_slug(&self, run_id: &str) -> String {
        if let Some(slug) = self
            .inner
            .workflow_slugs
            .lock()
            .ok()
            .and_then(|s| s.get(run_id).cloned())
        {
            return slug;
        }
        match self.inner.store.get_workflow_run(run_id).await {
            Ok(Some(run)) => run.workflow_slug,
            _ => "unknown".to_string(),
        }
    }

    /// The database figures, at most [`CACHE_TTL`] old.
    async fn figures(&self) -> StoreResult<Arc<DbFigures>> {
        let mut cache = self.inner.cache.lock().await;
        if let Some((at, figures)) = cache.as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(figures.clone());
        }
        let store = &self.inner.store;
        let now = Utc::now();
        let since = now - chrono::TimeDelta::from_std(FAILURE_WINDOW).unwrap_or_default();
        let (due, delayed) = store.pending_depth(now).await?;
        let figures = Arc::new(DbFigures {
            jobs: store.job_run_counts().await?,
            workflows: store.workflow_run_counts().await?,
            jobs_window: store.job_runs_ended_since(since).await?,
            workflows_window: store.workflow_runs_ended_since(since).await?,
            due,
            delayed,
        });
        *cache = Some((Instant::now(), figures.clone()));
        Ok(figures)
    }

    /// `GET /api/metrics` and the page.
    pub async fn report(&self) -> StoreResult<MetricsReport> {
        let db = self.figures().await?;
        let all_job: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        let all_workflow: Vec<&str> = WorkflowRunStatus::ALL.iter().map(|s| s.as_str()).collect();
        let d = self
            .inner
            .distributions
            .lock()
            .map(|d| {
                (
                    d.job_runs.summary(),
                    d.workflow_runs.summary(),
                    d.steps.summary(),
                )
            })
            .unwrap_or_else(|_| {
                let empty = Distribution::default().summary();
                (empty.clone(), empty.clone(), empty)
            });
        let running = db
            .jobs
            .iter()
            .filter(|c| c.status == "running")
            .map(|c| c.count)
            .sum();
        Ok(MetricsReport {
            generated_at: Utc::now(),
            jobs: run_metrics(&db.jobs, &db.jobs_window, &all_job, &JOB_FAILED),
            workflows: run_metrics(
                &db.workflows,
                &db.workflows_window,
                &all_workflow,
                &WORKFLOW_FAILED,
            ),
            queue_depth: QueueDepth {
                due: db.due,
                delayed: db.delayed,
                running,
            },
            durations: DurationMetrics {
                since: self.inner.since,
                job_runs: d.0,
                workflow_runs: d.1,
                steps: d.2,
            },
        })
    }

    /// `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
    pub async fn prometheus_text(&self) -> anyhow::Result<String> {
        let db = self.figures().await?;
        let registry = Registry::new();
        let job_total = IntCounterVec::new(
            Opts::new(
                "switchyard_job_runs_total",
                "Job runs that ended, by job and final status (all stored runs)",
            ),
            &["job", "status"],
        )?;
        let job_active = IntGaugeVec::new(
            Opts::new(
                "switchyard_job_runs_in_progress",
                "Job runs pending or running, by job and status",
            ),
            &["job", "status"],
        )?;
        fill(&db.jobs, &JOB_TERMINAL, &job_total, &job_active);
        let workflow_total = IntCounterVec::new(
            Opts::new(
                "switchyard_workflow_runs_total",
                "Workflow runs that ended, by workflow and final status (all stored runs)",
            ),
            &["workflow", "status"],
        )?;
        let workflow_active = IntGaugeVec::new(
            Opts::new(
                "switchyard_workflow_runs_in_progress",
                "Workflow runs pending or running, by workflow and status",
            ),
            &["workflow", "status"],
        )?;
        fill(
            &db.workflows,
            &WORKFLOW_TERMINAL,
            &workflow_total,
            &workflow_active,
        );
        let queue = IntGaugeVec::new(
            Opts::new(
                "switchyard_queue_depth",
                "Pending job runs: due (may start now) or delayed (retry backoff, delayMs)",
            ),
            &["state"],
        )?;
        queue.with_label_values(&["due"]).set(db.due as i64);
        queue.with_label_values(&["delayed"]).set(db.delayed as i64);
        let window = FAILURE_WINDOW.as_secs();
        let jobs_rate = Gauge::new(
            "jobs_failure_rate",
            format!(
                "Failed and expired job runs over all job runs that ended in the last {window} s (0 when none ended)"
            ),
        )?;
        jobs_rate.set(failure_rate(&db.jobs_window, &JOB_FAILED).0);
        let workflows_rate = Gauge::new(
            "workflows_failure_rate",
            format!(
                "Failed workflow runs over all workflow runs that ended in the last {window} s (0 when none ended)"
            ),
        )?;
        workflows_rate.set(failure_rate(&db.workflows_window, &WORKFLOW_FAILED).0);
        let window_gauge = Gauge::new(
            "switchyard_failure_rate_window_seconds",
            "The window of jobs_failure_rate and workflows_failure_rate",
        )?;
        window_gauge.set(window as f64);
        registry.register(Box::new(job_total))?;
        registry.register(Box::new(job_active))?;
        registry.register(Box::new(workflow_total))?;
        registry.register(Box::new(workflow_active))?;
        registry.register(Box::new(queue))?;
        registry.register(Box::new(jobs_rate))?;
        registry.register(Box::new(workflows_rate))?;
        registry.register(Box::new(window_gauge))?;
        registry.register(Box::new(self.inner.job_runs.clone()))?;
        registry.register(Box::new(self.inner.workflow_runs.clone()))?;
        registry.register(Box::new(self.inner.steps.clone()))?;
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}

#[async_trait::async_trait]
impl app::metrics_page::MetricsSource for Metrics {
    async fn metrics_report(&self) -> Result<MetricsReport, String> {
        self.report().await.map_err(|e| e.to_string())
    }
}

/// Terminal statuses into the counter (every terminal status present for a slug, 0 when none),
/// the others into the gauge.
fn fill(
    counts: &[SlugStatusCount],
    terminal: &[&str],
    total: &IntCounterVec,
    active: &IntGaugeVec,
) {
    for c in counts {
        if terminal.contains(&c.status.as_str()) {
            for t in terminal {
                total.with_label_values(&[c.slug.as_str(), t]);
            }
            total
                .with_label_values(&[c.slug.as_str(), c.status.as_str()])
                .inc_by(c.count);
        } else {
            active
                .with_label_values(&[c.slug.as_str(), c.status.as_str()])
                .set(c.count as i64);
        }
    }
}

/// (rate, failed, ended) of the runs that ended in the window.
fn failure_rate(window: &[(String, u64)], failed: &[&str]) -> (f64, u64, u64) {
    let ended: u64 = window.iter().map(|(_, n)| n).sum();
    let bad: u64 = window
        .iter()
        .filter(|(s, _)| failed.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    let rate = if ended == 0 {
        0.0
    } else {
        bad as f64 / ended as f64
    };
    (rate, bad, ended)
}

fn run_metrics(
    counts: &[SlugStatusCount],
    window: &[(String, u64)],
    statuses: &[&str],
    failed: &[&str],
) -> RunMetrics {
    let zero =
        || -> BTreeMap<String, u64> { statuses.iter().map(|s| (s.to_string(), 0)).collect() };
    let mut by_status = zero();
    let mut by_slug: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for c in counts {
        *by_status.entry(c.status.clone()).or_default() += c.count;
        *by_slug
            .entry(c.slug.clone())
            .or_insert_with(zero)
            .entry(c.status.clone())
            .or_default() += c.count;
    }
    let (failure_rate, window_failed, window_terminal) = failure_rate(window, failed);
    RunMetrics {
        total: by_status.values().sum(),
        by_status,
        failure_rate,
        window_ms: FAILURE_WINDOW.as_millis() as i64,
        window_terminal,
        window_failed,
        by_slug: by_slug
            .into_iter()
            .map(|(slug, by_status)| SlugStatusCounts {
                slug,
                total: by_status.values().sum(),
                by_status,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut d = Distribution::default();
        assert_eq!(d.quantile(0.5), None);
        for _ in 0..10 {
            d.observe(7.0); // (5, 10] ms bucket
        }
        let p50 = d.quantile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&p50), "{p50}");
        d.observe(10_000_000.0); // beyond the last bound
        assert_eq!(d.counts.last(), Some(&1));
        assert_eq!(d.quantile(1.0), Some(3_600_000.0));
        assert_eq!(d.summary().count, 11);
    }

    #[test]
    fn failure_rate_counts_failed_and_expired_over_ended() {
        let w = vec![
            ("succeeded".to_string(), 2),
            ("failed".to_string(), 1),
            ("expired".to_string(), 1),
        ];
        assert_eq!(failure_rate(&w, &JOB_FAILED), (0.5, 2, 4));
        assert_eq!(failure_rate(&[], &JOB_FAILED), (0.0, 0, 0));
    }
}
