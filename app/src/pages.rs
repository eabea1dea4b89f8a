//! Operator pages: the job catalog and the run list, rendered on the server and kept live by
//! the event stream once hydrated.
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::{
    data::{
        cancel_run, fetch_job_detail, fetch_runs, get_run, job_slugs, job_summaries, launch,
        retry_run, run_log_tail,
    },
    format::{Duration, MaybeWhen, When},
    live::use_live,
    schema_form::SchemaForm,
};
use wire::{JobType, RunList, RunStatus};

/// A run status as a coloured badge (one colour per state everywhere).
#[component]
pub fn StatusBadge(status: RunStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

/// The colour legend of run states.
#[component]
pub fn Legend() -> impl IntoView {
    view! {
        <p class="legend" aria-label="Status colours">
            {RunStatus::ALL.iter().map(|s| view! { <StatusBadge status=*s/> " " }).collect_view()}
        </p>
    }
}

/// `/jobs`: every job with its last run and success rate; search and type filter.
#[component]
pub fn JobsPage() -> impl IntoView {
    let live = use_live();
    let jobs = Resource::new(move || live.tick.get(), |_| job_summaries());
    let (query, set_query) = signal(String::new());
    let (kind, set_kind) = signal(String::new());
    view! {
        <Title text="Jobs · Switchyard"/>
        <h1>"Jobs"</h1>
        <form class="filters" role="search" on:submit=|ev| ev.prevent_default()>
            <label>"Search " <input id="job-search" type="search" placeholder="name or slug"
                on:input=move |ev| set_query.set(event_target_value(&ev))/></label>
            <label>"Type "
                <select id="job-type" on:change=move |ev| set_kind.set(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {JobType::ALL.iter().map(|t| view! { <option value=t.as_str()>{t.as_str()}</option> }).collect_view()}
                </select>
            </label>
        </form>
        <Legend/>
        <Transition fallback=|| view! { <p>"Loading jobs…"</p> }>
            {move || Suspend::new(async move {
                match jobs.await {
                    Err(e) => view! { <p class="error">"Could not load jobs: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">"No jobs yet. Register one with "
                            <code>"POST /api/jobs"</code>" (see "<a href="/api/openapi.json">"the API"</a>")."</p>
                    }.into_any(),
                    Ok(list) => {
                        let rows = move || {
                            let q = query.get().to_lowercase();
                            let k = kind.get();
                            list.iter()
                                .filter(|s| q.is_empty() || s.job.slug.contains(&q) || s.job.name.to_lowercase().contains(&q))
                                .filter(|s| k.is_empty() || s.job.job_type.as_str() == k)
                                .map(|s| view! {
                                    <tr data-slug=s.job.slug.clone()>
                                        <td>{s.job.name.clone()}</td>
                                        <td><a href=format!("/jobs/{}", s.job.slug)><code>{s.job.slug.clone()}</code></a></td>
                                        <td>{s.job.job_type.as_str()}</td>
                                        <td><code>{s.job.entry_point.clone()}</code></td>
                                        <td>{s.job.version}</td>
                                        <td>{match s.last_run_status {
                                            Some(st) => view! { <StatusBadge status=st/> }.into_any(),
                                            None => view! { <span class="muted">"never run"</span> }.into_any(),
                                        }}</td>
                                        <td>{s.success_rate.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "–".into())}
                                            " (" {s.run_count} " runs)"</td>
                                    </tr>
                                })
                                .collect_view()
                        };
                        view! {
                            <table id="jobs">
                                <thead><tr><th>"Name"</th><th>"Slug"</th><th>"Type"</th><th>"Entry point"</th>
                                    <th>"Version"</th><th>"Last run"</th><th>"Success rate"</th></tr></thead>
                                <tbody>{rows}</tbody>
                            </table>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// A link to a list page with the given query pairs (empty values left out).
pub fn list_href(base: &str, pairs: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{q}")
    }
}

/// The filters a run list keeps in its URL.
const RUN_FILTERS: [&str; 3] = ["status", "job", "q"];

/// A run list with its filters and keyset paging, all held in the URL's query (`status`,
/// `job`, `q`, `cursor`), so a filtered page can be linked and reloaded, and works without
/// JavaScript (the filter form is a plain GET form). The first page stays live; older pages
/// keep their rows while new runs arrive (the cursor is the last run id shown).
#[component]
pub fn RunHistory(
    /// The page's own path: `/runs` or `/jobs/:slug`.
    #[prop(into)]
    base: Signal<String>,
    /// A fixed job (the job page); without one the list offers a job filter.
    #[prop(into)]
    job: Signal<Option<String>>,
    /// The table's element id; the filter controls' ids start with it.
    table_id: &'static str,
) -> impl IntoView {
    let live = use_live();
    let url = RunListUrl {
        query: use_query_map(),
        base,
    };
    let runs = Resource::new(
        move || {
            (
                live.tick.get(),
                url.param("status"),
                job.get().unwrap_or_else(|| url.param("job")),
                url.param("q"),
                url.param("cursor"),
            )
        },
        |(_, status, job, q, cursor)| fetch_runs(Some(status), Some(job), Some(q), Some(cursor)),
    );
    // Only a list without a fixed job offers the job filter.
    let jobs = Resource::new(
        move || job.get().is_none(),
        |wanted| async move {
            if wanted {
                job_slugs().await
            } else {
                Ok(Vec::new())
            }
        },
    );
    let navigate = use_navigate();
    // A changed filter starts again from the newest page.
    let go = move |key: &str, value: String| {
        let pairs: Vec<(&str, String)> = RUN_FILTERS
            .into_iter()
            .map(|k| {
                (
                    k,
                    if k == key {
                        value.clone()
                    } else {
                        url.param(k)
                    },
                )
            })
            .collect();
        navigate(
            &list_href(&base.get_untracked(), &pairs),
            Default::default(),
        );
    };
    view! {
        {run_filter_form(url, job, jobs, go, table_id)}
        {run_list(url, job, runs, table_id)}
    }
}

/// Where a run list is: its page's path and the URL query holding its filters and cursor.
#[derive(Clone, Copy)]
struct RunListUrl {
    query: Memo<leptos_router::params::ParamsMap>,
    base: Signal<String>,
}

impl RunListUrl {
    /// A query parameter, empty when absent.
    fn param(self, k: &str) -> String {
        self.query.read().get(k).unwrap_or_default()
    }

    /// Whether any filter is set.
    fn filtered(self) -> bool {
        RUN_FILTERS.iter().any(|k| !self.param(k).is_empty())
    }

    /// The list with the current filters, at `cursor` (the newest page without one).
    fn page_link(self, cursor: Option<String>) -> String {
        let pairs: Vec<(&str, String)> = RUN_FILTERS
            .into_iter()
            .map(|k| (k, self.param(k)))
            .chain(cursor.map(|c| ("cursor", c)))
            .collect();
        list_href(&self.base.get(), &pairs)
    }
}

/// The filter form of a run list: status, job (when the list has no fixed job) and search;
/// `go(key, value)` shows the list with one filter changed.
fn run_filter_form(
    url: RunListUrl,
    job: Signal<Option<String>>,
    jobs: Resource<Result<Vec<String>, ServerFnError>>,
    go: impl Fn(&str, String) + Clone + Send + Sync + 'static,
    table_id: &'static str,
) -> impl IntoView {
    let go_status = go.clone();
    let go_job = go.clone();
    let (text, set_text) = signal(String::new());
    Effect::new(move |_| set_text.set(url.param("q")));
    view! {
        <form class="filters" role="search" method="get" action=move || url.base.get()
            aria-controls=table_id
            on:submit=move |ev| { ev.prevent_default(); go("q", text.get_untracked()); }>
            <label>"Status "
                <select id=format!("{table_id}-status") name="status"
                    on:change=move |ev| go_status("status", event_target_value(&ev))>
                    <option value="" selected=move || url.param("status").is_empty()>"all"</option>
                    {RunStatus::ALL.iter().map(|s| {
                        let v = s.as_str();
                        view! { <option value=v selected=move || url.param("status") == v>{v}</option> }
                    }).collect_view()}
                </select>
            </label>
            {move || job.get().is_none().then(|| job_filter(url, jobs, go_job.clone(), table_id))}
            <label>"Search "
                <input id=format!("{table_id}-search") type="search" name="q" placeholder="run id, job or error"
                    prop:value=move || text.get()
                    on:input=move |ev| set_text.set(event_target_value(&ev))/>
            </label>
            " "
            <button type="submit">"Filter"</button>
        </form>
    }
}

/// The job filter of a run list without a fixed job: every job's slug, and the current
/// filter's even when that job no longer exists.
fn job_filter(
    url: RunListUrl,
    jobs: Resource<Result<Vec<String>, ServerFnError>>,
    go_job: impl Fn(&str, String) + Clone + Send + Sync + 'static,
    table_id: &'static str,
) -> impl IntoView {
    view! {
        <Transition>
            {move || {
                let go_job = go_job.clone();
                Suspend::new(async move {
                    let mut slugs: Vec<String> = jobs.await.unwrap_or_default();
                    // A filter on a deleted job still shows as selected.
                    let current = url.param("job");
                    if !current.is_empty() && !slugs.contains(&current) {
                        slugs.push(current.clone());
                    }
                    view! {
                        <label>"Job "
                            <select id=format!("{table_id}-job") name="job"
                                on:change=move |ev| go_job("job", event_target_value(&ev))>
                                <option value="" selected=current.is_empty()>"all jobs"</option>
                                {slugs.into_iter().map(|slug| {
                                    let selected = current == slug;
                                    let label = slug.clone();
                                    view! { <option value=slug selected=selected>{label}</option> }
                                }).collect_view()}
                            </select>
                        </label>
                    }
                })
            }}
        </Transition>
    }
}

/// The runs of the current page (or why there are none) and the pager.
fn run_list(
    url: RunListUrl,
    job: Signal<Option<String>>,
    runs: Resource<Result<RunList, ServerFnError>>,
    table_id: &'static str,
) -> impl IntoView {
    view! {
        <Transition fallback=|| view! { <p>"Loading runs…"</p> }>
            {move || Suspend::new(async move {
                match runs.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load runs: " {e.to_string()}</p> }.into_any(),
                    Ok(page) if page.runs.is_empty() => view! {
                        <p class="empty">
                            {if url.filtered() { "No runs match these filters. " } else { "No runs yet: start one from a job's page, or with POST /api/jobs/:slug/run. " }}
                            {url.filtered().then(|| view! { <a href=url.base.get()>"Clear the filters"</a> })}
                        </p>
                    }.into_any(),
                    Ok(page) => run_table(url, job.get().is_none(), page, table_id).into_any(),
                }
            })}
        </Transition>
    }
}

/// One page of runs as a table (with a job column when `show_job`), and the pager.
fn run_table(
    url: RunListUrl,
    show_job: bool,
    page: RunList,
    table_id: &'static str,
) -> impl IntoView {
    let shown = page.runs.len();
    let older = page.next_cursor.clone().map(|c| url.page_link(Some(c)));
    let newest = (!url.param("cursor").is_empty()).then(|| url.page_link(None));
    view! {
        <table id=table_id>
            <caption class="visually-hidden">"Job runs, newest first"</caption>
            <thead><tr><th scope="col">"Run"</th>
                {show_job.then(|| view! { <th scope="col">"Job"</th> })}
                <th scope="col">"Status"</th><th scope="col">"Attempt"</th>
                <th scope="col">"Created"</th><th scope="col">"Duration"</th><th scope="col">"Error"</th></tr></thead>
            <tbody>
                {page.runs.into_iter().map(|r| view! {
                    <tr data-run-id=r.id.clone()>
                        <td class="run-id"><a href=format!("/runs/jobs/{}", r.id) title=r.id.clone()><code>{short_id(&r.id)}</code></a></td>
                        {show_job.then(|| view! { <td><a href=format!("/jobs/{}", r.job_slug)>{r.job_slug.clone()}</a></td> })}
                        <td><StatusBadge status=r.status/></td>
                        <td>{r.attempt} "/" {r.max_attempts}</td>
                        <td><When t=r.created_at/></td>
                        <td><Duration ms=r.duration_ms/></td>
                        <td class="error-cell">{r.error_message.clone().unwrap_or_default()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        <nav class="pager" aria-label="Pages of runs">
            <span class="count">{format!("{shown} of {} run(s)", page.total)}</span>
            {newest.map(|h| view! { " " <a class="newest" href=h>"← Newest"</a> })}
            {older.map(|h| view! { " " <a class="older" rel="next" href=h>"Older →"</a> })}
        </nav>
    }
}

/// `/runs`: every job run, newest first, with filters and paging, live.
#[component]
pub fn RunsPage() -> impl IntoView {
    view! {
        <Title text="Runs · Switchyard"/>
        <h1>"Runs"</h1>
        <Legend/>
        <RunHistory base="/runs".to_string() job=None table_id="runs"/>
    }
}

/// The distinguishing tail of a run id (UUIDv7 ids share their time prefix), for lists;
/// the full id is in the link's title and target.
pub fn short_id(id: &str) -> String {
    match id.rsplit_once('-') {
        Some((_, tail)) => format!("…{tail}"),
        None => id.to_string(),
    }
}

/// A retry policy in words.
fn retry_text(p: &wire::RetryPolicy) -> String {
    if p.max_attempts <= 1 {
        return "no retries (1 attempt)".into();
    }
    format!(
        "up to {} attempts, {} backoff from {} up to {}, jitter {}",
        p.max_attempts,
        p.strategy,
        crate::format::duration(p.initial_delay_ms as i64),
        crate::format::duration(p.max_delay_ms as i64),
        p.jitter
    )
}

fn pretty(v: &Option<serde_json::Value>) -> String {
    match v {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "null".into(),
    }
}

/// `/runs/jobs/:id`: one run: status, attempts, timings, parameters, result, error and the
/// log, which follows the run while it is going; Cancel and Retry where they apply. The log
/// is its last lines as the server rendered them, then (once hydrated) whatever a follow of
/// `GET /api/job-runs/:id/logs?follow=true&after=<last line>` streams, appended: no refetch.
#[component]
pub fn RunPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let run = Resource::new(move || (live.tick.get(), id()), |(_, id)| get_run(id));
    let log = Resource::new(id, run_log_tail);
    let follow = LogFollow::new();
    // Once the log's end is loaded (in the browser), follow the log from its last line.
    Effect::new(move |_| {
        let Some(Ok(tail)) = log.get() else { return };
        let ended = run
            .get_untracked()
            .and_then(Result::ok)
            .is_some_and(|r| r.status.is_terminal());
        follow.start(id(), tail.last_line_id, ended, move || log.refetch());
    });
    on_cleanup(move || follow.stop());
    let cancel = Action::new(|id: &String| cancel_run(id.clone()));
    let retry = Action::new(|id: &String| retry_run(id.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(new_run)) = retry.value().get() {
            navigate(&format!("/runs/jobs/{}", new_run.id), Default::default());
        }
    });
    view! {
        <Title text=move || format!("Run {} · Switchyard", id())/>
        <Transition fallback=|| view! { <p>"Loading run…"</p> }>
            {move || Suspend::new(async move {
                let denied = crate::auth_pages::current_viewer().await.denied("jobs:run");
                match run.await {
                    Err(e) => crate::data::failure_view("Run", &e).into_any(),
                    Ok(r) => {
                        let rid = r.id.clone();
                        let rid2 = r.id.clone();
                        let active = !r.status.is_terminal();
                        view! {
                            <h1 id="run-title">"Run of " <a href=format!("/jobs/{}", r.job_slug)>{r.job_slug.clone()}</a></h1>
                            <p>"Status: " <span id="run-status"><StatusBadge status=r.status/></span>
                                " · attempt " <span id="run-attempt">{r.attempt}</span> " of " {r.max_attempts}
                                " · trigger " {r.trigger.as_str()}</p>
                            <p class="actions">
                                <button id="cancel-run" disabled=!active || denied.is_some()
                                    title=denied.clone().unwrap_or_else(|| if active { "Cancel this run" } else { "The run has ended" }.into())
                                    on:click=move |_| { cancel.dispatch(rid.clone()); }>"Cancel"</button>
                                " "
                                <button id="retry-run" disabled=active || denied.is_some()
                                    title=denied.clone().unwrap_or_else(|| if active { "Retry is possible once the run has ended" } else { "Start a new run with the same parameters" }.into())
                                    on:click=move |_| { retry.dispatch(rid2.clone()); }>"Retry"</button>
                            </p>
                            <dl>
                                <dt>"Run id"</dt><dd><code>{r.id.clone()}</code></dd>
                                <dt>"Job version"</dt><dd>{r.job_version}</dd>
                                <dt>"Created"</dt><dd><When t=r.created_at/></dd>
                                <dt>"Scheduled for"</dt><dd><When t=r.scheduled_at/></dd>
                                <dt>"Started"</dt><dd><MaybeWhen t=r.started_at/></dd>
                                <dt>"Completed"</dt><dd><MaybeWhen t=r.completed_at/></dd>
                                <dt>"Duration"</dt><dd><Duration ms=r.duration_ms/></dd>
                                <dt>"Timeout"</dt><dd><Duration ms=Some(r.timeout_ms)/></dd>
                            </dl>
                            {r.error_message.clone().map(|e| view! { <p id="run-error" class="error" role="alert">"Error: " {e}</p> })}
                            <h2>"Parameters"</h2>
                            <pre id="run-parameters">{pretty(&Some(r.parameters.clone()))}</pre>
                            <h2>"Result"</h2>
                            <pre id="run-result">{pretty(&r.result)}</pre>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Log"</h2>
        <Transition fallback=|| view! { <p>"Loading log…"</p> }>
            {move || Suspend::new(async move {
                let tail = log.await.unwrap_or_default();
                let whole = format!("/api/job-runs/{}/logs", id());
                let omitted = tail.omitted;
                view! {
                    <Show when=move || omitted || follow.trimmed.get()>
                        <p id="log-omitted" class="hint">"Only the end of the log is shown: "
                            <a href=whole.clone()>"the whole log"</a></p>
                    </Show>
                    <pre id="run-log">
                        {move || (!follow.trimmed.get()).then(|| tail.text.clone())}
                        {move || follow.appended.get()}
                    </pre>
                }
            })}
        </Transition>
    }
}

/// The run page's follow of a run log: one streaming request at a time, its text appended to
/// `appended` (at most a few times [`crate::data::LOG_TAIL_BYTES`]: the oldest text goes, and `trimmed`
/// says so). It ends with the run; when it breaks (network, a limit's 429/503) while the run
/// goes on, the page reloads the log's end after a pause and follows again from there.
#[derive(Clone, Copy)]
struct LogFollow {
    appended: RwSignal<String>,
    trimmed: RwSignal<bool>,
    /// The run followed and the log line it started after; a new pair starts a new follow.
    current: StoredValue<Option<(String, i64)>>,
    /// Bumped by every start and stop: chunks of an older follow are ignored.
    generation: StoredValue<u64>,
    #[cfg(feature = "hydrate")]
    abort: StoredValue<Option<web_sys::AbortController>, LocalStorage>,
}

impl LogFollow {
    fn new() -> Self {
        LogFollow {
            appended: RwSignal::new(String::new()),
            trimmed: RwSignal::new(false),
            current: StoredValue::new(None),
            generation: StoredValue::new(0),
            #[cfg(feature = "hydrate")]
            abort: StoredValue::new_local(None),
        }
    }

    fn stop(&self) {
        self.generation.update_value(|g| *g += 1);
        #[cfg(feature = "hydrate")]
        if let Some(Some(abort)) = self.abort.try_update_value(Option::take) {
            abort.abort();
        }
    }

    /// Follows run `run_id` after line `after` unless that is what it does already (or the
    /// run has ended: then the log's end is all there is). `reload` reloads the log's end.
    fn start(
        self,
        run_id: String,
        after: i64,
        ended: bool,
        reload: impl Fn() + Send + Sync + 'static,
    ) {
        let key = Some((run_id.clone(), after));
        if self.current.with_value(|c| *c == key) {
            return;
        }
        self.stop();
        self.current.set_value(key);
        self.appended.set(String::new());
        self.trimmed.set(false);
        if !ended {
            self.follow(run_id, after, reload);
        }
    }

    /// Rendering on the server: nothing to follow.
    #[cfg(not(feature = "hydrate"))]
    fn follow(self, _run_id: String, _after: i64, _reload: impl Fn() + Send + Sync + 'static) {}

    /// The streaming request (in the browser).
    #[cfg(feature = "hydrate")]
    fn follow(self, run_id: String, after: i64, reload: impl Fn() + Send + Sync + 'static) {
        {
            let generation = self.generation.get_value();
            let Ok(abort) = web_sys::AbortController::new() else {
                return;
            };
            let signal = abort.signal();
            self.abort.set_value(Some(abort));
            let url = format!("/api/job-runs/{run_id}/logs?follow=true&after={after}");
            let this = self;
            leptos::task::spawn_local(async move {
                let current = move || this.generation.try_get_value() == Some(generation);
                let outcome = crate::live::stream_text(&url, &signal, |chunk| {
                    if !current() {
                        return;
                    }
                    this.appended.update(|text| {
                        text.push_str(&chunk);
                        if text.len() > 4 * crate::data::LOG_TAIL_BYTES {
                            let mut cut = text.len() - 2 * crate::data::LOG_TAIL_BYTES;
                            while !text.is_char_boundary(cut) {
                                cut += 1;
                            }
                            let cut = text[cut..].find('\n').map_or(cut, |i| cut + i + 1);
                            text.drain(..cut);
                            this.trimmed.set(true);
                        }
                    });
                })
                .await;
                if outcome.is_err() && current() {
                    // Broken while the run may go on: reload the end, which follows again.
                    sleep(std::time::Duration::from_secs(5)).await;
                    if current() {
                        this.current.set_value(None);
                        reload();
                    }
                }
            });
        }
    }
}

/// Waits in the browser (a timer; nothing blocks).
#[cfg(feature = "hydrate")]
async fn sleep(duration: std::time::Duration) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    set_timeout(
        move || {
            let _ = tx.send(());
        },
        duration,
    );
    let _ = rx.await;
}

/// `/jobs/:slug`: the definition, its versions, recent runs and the launch form generated from
/// the parameters schema.
#[component]
pub fn JobPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let detail = Resource::new(
        move || (live.tick.get(), slug()),
        |(_, s)| fetch_job_detail(s),
    );
    let (server_problems, set_server_problems) =
        signal(std::collections::BTreeMap::<String, String>::new());
    let (form_error, set_form_error) = signal(None::<String>);
    let start = Action::new(|(slug, doc): &(String, String)| launch(slug.clone(), doc.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| match start.value().get() {
        Some(Ok(outcome)) => match outcome.run {
            Some(run) => navigate(&format!("/runs/jobs/{}", run.id), Default::default()),
            None => {
                let mut by_field = std::collections::BTreeMap::new();
                let mut other = Vec::new();
                for p in outcome.problems {
                    match p.path.strip_prefix("/parameters") {
                        Some(rest) if !rest.is_empty() => {
                            by_field.insert(rest.to_string(), p.message);
                        }
                        _ => other.push(p.message),
                    }
                }
                set_server_problems.set(by_field);
                set_form_error.set((!other.is_empty()).then(|| other.join("; ")));
            }
        },
        Some(Err(e)) => set_form_error.set(Some(e.to_string())),
        None => {}
    });
    // The form is built once per job (not on every live refresh, which would reset typing).
    let form_job = Resource::new(slug, fetch_job_detail);
    view! {
        <Title text=move || format!("{} · Jobs · Switchyard", slug())/>
        <Transition fallback=|| view! { <p>"Loading job…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => crate::data::failure_view("Job", &e).into_any(),
                    Ok(d) => {
                        let j = d.job.clone();
                        view! {
                            <h1>{j.name.clone()} " " <small><code>{j.slug.clone()}</code></small></h1>
                            <dl>
                                <dt>"Type"</dt><dd>{j.job_type.as_str()}</dd>
                                <dt>"Entry point"</dt><dd><code>{j.entry_point.clone()}</code></dd>
                                <dt>"Version"</dt><dd>{j.version}</dd>
                                <dt>"Timeout"</dt><dd><Duration ms=Some(j.timeout_ms)/></dd>
                                <dt>"Retry policy"</dt><dd id="job-retry">{retry_text(&j.retry_policy)}</dd>
                                <dt>"Updated"</dt><dd><When t=j.updated_at/></dd>
                            </dl>
                            <h2>"Parameters schema"</h2>
                            <pre id="job-schema">{serde_json::to_string_pretty(&j.parameters_schema).unwrap_or_default()}</pre>
                            <h2>"Versions"</h2>
                            <ul id="job-versions">
                                {d.versions.iter().map(|v| view! { <li>"v" {v.version} " · " <When t=v.created_at/></li> }).collect_view()}
                            </ul>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <h2 id="history-title">"Run history"</h2>
        <RunHistory base=Signal::derive(move || format!("/jobs/{}", slug()))
            job=Signal::derive(move || Some(slug())) table_id="job-runs"/>
        <h2>"Run"</h2>
        <Transition fallback=|| view! { <p>"Loading form…"</p> }>
            {move || Suspend::new(async move {
                let denied = crate::auth_pages::current_viewer().await.denied("jobs:run");
                match form_job.await {
                    Err(_) => ().into_any(),
                    Ok(d) => {
                        let job_slug = d.job.slug.clone();
                        let submit = Callback::new(move |doc: serde_json::Value| {
                            set_form_error.set(None);
                            start.dispatch((job_slug.clone(), doc.to_string()));
                        });
                        view! {
                            {move || form_error.get().map(|e| view! { <p class="error" role="alert" id="launch-error">{e}</p> })}
                            <SchemaForm schema=d.job.parameters_schema.clone() defaults=d.job.default_parameters.clone()
                                server_problems=server_problems on_submit=submit denied=denied.clone()/>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
