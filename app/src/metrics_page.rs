//! `/metrics`: the figures of `GET /api/metrics` as charts drawn in SVG on the server (runs by
//! status, failure rates, duration percentiles and histograms, queue depth); refreshed on live
//! events once hydrated. `GET /metrics` without a browser's `Accept` is the Prometheus text.
use leptos::prelude::*;
use leptos_meta::Title;

use crate::live::use_live;
use wire::{DurationSummary, MetricsReport, RunMetrics};

/// Where the page's figures come from; implemented by the server's metrics.
#[cfg(feature = "ssr")]
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    async fn metrics_report(&self) -> Result<MetricsReport, String>;
}

/// The metrics source as put into the Leptos context.
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct MetricsHandle(pub std::sync::Arc<dyn MetricsSource>);

#[server(prefix = "/_sf", endpoint = "metrics")]
pub async fn fetch_metrics() -> Result<MetricsReport, ServerFnError> {
    let source = use_context::<MetricsHandle>()
        .ok_or_else(|| ServerFnError::new("no metrics source in context"))?;
    source.0.metrics_report().await.map_err(ServerFnError::new)
}

/// A percentage with one decimal.
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// Milliseconds for people: "850 ms", "2.5 s", "3.2 min".
pub fn ms_label(ms: Option<f64>) -> String {
    match ms {
        None => "–".to_string(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) if ms < 120_000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) => format!("{:.1} min", ms / 60_000.0),
    }
}

#[component]
pub fn MetricsPage() -> impl IntoView {
    let live = use_live();
    let report = Resource::new(move || live.tick.get(), |_| fetch_metrics());
    view! {
        <Title text="Metrics · Switchyard"/>
        <h1>"Metrics"</h1>
        <p class="hint">"Scrapers read the same figures at " <code>"GET /metrics"</code>
            " (Prometheus text) and " <code>"GET /api/metrics"</code> " (JSON)."</p>
        <Transition fallback=|| view! { <p>"Loading metrics…"</p> }>
            {move || Suspend::new(async move {
                match report.await {
                    Err(e) => view! { <p class="error">"Could not load the metrics: " {e.to_string()}</p> }.into_any(),
                    Ok(r) => view! { <Report report=r/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn Report(report: MetricsReport) -> impl IntoView {
    let window_min = report.jobs.window_ms / 60_000;
    let d = report.durations.clone();
    let q = report.queue_depth.clone();
    view! {
        <section aria-labelledby="rates-title">
            <h2 id="rates-title">"Failure rates (runs that ended in the last " {window_min} " min)"</h2>
            <svg id="failure-rates" role="img" aria-label="Failure rates of jobs and workflows"
                viewBox="0 0 480 70" width="100%" height="90">
                <RateBar y=5.0 label="jobs" metrics=report.jobs.clone()/>
                <RateBar y=40.0 label="workflows" metrics=report.workflows.clone()/>
            </svg>
            <ul class="counts">
                <li id="jobs-failure-rate" data-rate=report.jobs.failure_rate.to_string()>
                    "Jobs: " <strong>{percent(report.jobs.failure_rate)}</strong>
                    {format!(" ({} of {})", report.jobs.window_failed, report.jobs.window_terminal)}
                </li>
                <li id="workflows-failure-rate" data-rate=report.workflows.failure_rate.to_string()>
                    "Workflows: " <strong>{percent(report.workflows.failure_rate)}</strong>
                    {format!(" ({} of {})", report.workflows.window_failed, report.workflows.window_terminal)}
                </li>
            </ul>
        </section>
        <section aria-labelledby="status-title">
            <h2 id="status-title">"Runs by status"</h2>
            <h3>"Job runs: " <span id="jobs-total">{report.jobs.total}</span></h3>
            <StatusBars id="jobs-by-status" metrics=report.jobs.clone()/>
            <h3>"Workflow runs: " <span id="workflows-total">{report.workflows.total}</span></h3>
            <StatusBars id="workflows-by-status" metrics=report.workflows.clone()/>
        </section>
        <section aria-labelledby="queue-title">
            <h2 id="queue-title">"Queue depth"</h2>
            <Bars id="queue-depth" label="Pending job runs due and delayed, and running runs"
                bars=vec![("due".into(), q.due, "fill-pending".into()), ("delayed".into(), q.delayed, "fill-canceled".into()),
                          ("running".into(), q.running, "fill-running".into())]/>
        </section>
        <section aria-labelledby="durations-title">
            <h2 id="durations-title">"Durations"</h2>
            <p class="hint">"Observed by this server since " {d.since.format("%Y-%m-%d %H:%M UTC").to_string()}
                "; percentiles estimated from the histogram buckets."</p>
            <table id="duration-percentiles">
                <thead><tr><th>"Kind"</th><th>"Runs"</th><th>"mean"</th><th>"p50"</th><th>"p90"</th><th>"p99"</th></tr></thead>
                <tbody>
                    <PercentileRow id="job-runs" label="Job runs" s=d.job_runs.clone()/>
                    <PercentileRow id="workflow-runs" label="Workflow runs" s=d.workflow_runs.clone()/>
                    <PercentileRow id="steps" label="Workflow steps" s=d.steps.clone()/>
                </tbody>
            </table>
            <h3>"Job run durations"</h3>
            <Histogram id="durations-job-runs" s=d.job_runs/>
            <h3>"Workflow run durations"</h3>
            <Histogram id="durations-workflow-runs" s=d.workflow_runs/>
            <h3>"Step latency"</h3>
            <Histogram id="durations-steps" s=d.steps/>
        </section>
        <section aria-labelledby="slugs-title">
            <h2 id="slugs-title">"By job and workflow"</h2>
            <SlugTable id="jobs-table" kind="Job" metrics=report.jobs/>
            <SlugTable id="workflows-table" kind="Workflow" metrics=report.workflows/>
        </section>
    }
}

/// A failure-rate bar: the failed share in red over the rest.
#[component]
fn RateBar(y: f64, label: &'static str, metrics: RunMetrics) -> impl IntoView {
    let (x0, w) = (90.0, 380.0);
    let failed = metrics.failure_rate.clamp(0.0, 1.0) * w;
    let title = format!(
        "{label}: {} failed ({} of {} ended)",
        percent(metrics.failure_rate),
        metrics.window_failed,
        metrics.window_terminal
    );
    view! {
        <g>
            <title>{title}</title>
            <text x="0" y=y + 17.0>{label}</text>
            <rect class="fill-succeeded" x=x0 y=y width=w height="25" opacity="0.35"/>
            <rect class="fill-failed" x=x0 y=y width=failed height="25"/>
            <text x=x0 + 5.0 y=y + 17.0>{percent(metrics.failure_rate)}</text>
        </g>
    }
}

/// Horizontal bars, one per status, coloured by status.
#[component]
fn StatusBars(id: &'static str, metrics: RunMetrics) -> impl IntoView {
    let bars = metrics
        .by_status
        .iter()
        .map(|(s, n)| (s.clone(), *n, format!("fill-{s}")))
        .collect::<Vec<_>>();
    view! { <Bars id=id label="Runs by status" bars=bars/> }
}

/// Horizontal labelled bars scaled to the largest value.
#[component]
fn Bars(id: &'static str, label: &'static str, bars: Vec<(String, u64, String)>) -> impl IntoView {
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let row = 22.0;
    let height = row * bars.len() as f64 + 4.0;
    let rows = bars
        .into_iter()
        .enumerate()
        .map(|(i, (name, n, class))| {
            let y = i as f64 * row + 2.0;
            let w = n as f64 / max * 300.0;
            view! {
                <g data-name=name.clone() data-value=n>
                    <title>{format!("{name}: {n}")}</title>
                    <text x="0" y=y + 15.0>{name.clone()}</text>
                    <rect class=class x="90" y=y width=w height=row - 6.0/>
                    <text x=95.0 + w y=y + 15.0>{n}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg id=id role="img" aria-label=label viewBox=format!("0 0 480 {height}") width="100%"
            height=format!("{}", height * 1.2)>
            {rows}
        </svg>
    }
}

#[component]
fn PercentileRow(id: &'static str, label: &'static str, s: DurationSummary) -> impl IntoView {
    view! {
        <tr id=format!("percentiles-{id}") data-count=s.count>
            <td>{label}</td><td>{s.count}</td><td>{ms_label(s.mean_ms)}</td>
            <td>{ms_label(s.p50_ms)}</td><td>{ms_label(s.p90_ms)}</td><td>{ms_label(s.p99_ms)}</td>
        </tr>
    }
}

/// Vertical bars, one per histogram bucket (runs whose duration falls in it).
#[component]
fn Histogram(id: &'static str, s: DurationSummary) -> impl IntoView {
    let max = s.buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let n = s.buckets.len().max(1) as f64;
    let (w, h) = (480.0, 100.0);
    let bar = w / n;
    let bars = s
        .buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let height = b.count as f64 / max * (h - 15.0);
            let le = b
                .le_ms
                .map(|ms| format!("≤ {}", ms_label(Some(ms))))
                .unwrap_or_else(|| "> 60 min".to_string());
            view! {
                <g>
                    <title>{format!("{le}: {}", b.count)}</title>
                    <rect class="fill-running" data-count=b.count x=i as f64 * bar + 1.0 y=h - 15.0 - height
                        width=bar - 2.0 height=height/>
                </g>
            }
        })
        .collect_view();
    view! {
        <svg id=id class="histogram" role="img" aria-label=format!("{} durations in buckets from 5 ms to 60 min", s.count)
            viewBox=format!("0 0 {w} {h}") width="100%">
            {bars}
            <text x="0" y=h - 2.0 font-size="10">"5 ms"</text>
            <text x=w y=h - 2.0 font-size="10" text-anchor="end">"60 min+"</text>
        </svg>
    }
}

#[component]
fn SlugTable(id: &'static str, kind: &'static str, metrics: RunMetrics) -> impl IntoView {
    let statuses: Vec<String> = metrics.by_status.keys().cloned().collect();
    let head = statuses.clone();
    view! {
        <table id=id>
            <thead><tr><th>{kind}</th><th>"total"</th>
                {head.into_iter().map(|s| view! { <th>{s}</th> }).collect_view()}</tr></thead>
            <tbody>
                {metrics.by_slug.into_iter().map(|row| {
                    let cells = statuses.iter().map(|s| view! { <td>{row.by_status.get(s).copied().unwrap_or(0)}</td> }).collect_view();
                    view! { <tr data-slug=row.slug.clone()><td>{row.slug.clone()}</td><td>{row.total}</td>{cells}</tr> }
                }).collect_view()}
            </tbody>
        </table>
    }
}
