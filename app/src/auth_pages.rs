//! Operator sign-in on the pages: who is viewing (`Viewer`, set per request by the server's
//! auth middleware), the header badge, the `/sign-in` page (a plain HTML form posting to
//! `/auth/sign-in`, which works without wasm), permission reasons for buttons, and the `/audit`
//! page (its wire types are in the `wire` crate).
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
pub use wire::{AuditEntry, AuditList, AuditQuery};

/// Audit entries per page on `/audit`.
pub const AUDIT_PER_PAGE: u64 = 50;

/// A comma-separated filter as its values (used by the server function's body, on the server).
#[cfg(feature = "ssr")]
fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub use wire::Viewer;

/// The viewer of the current request (the server puts it into the request's extensions).
#[server(prefix = "/_sf", endpoint = "whoami")]
pub async fn whoami() -> Result<Viewer, ServerFnError> {
    Ok(use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
        .unwrap_or_default())
}

/// The viewer resource shared by the header and the pages' buttons.
#[derive(Clone, Copy)]
pub struct ViewerResource(pub Resource<Result<Viewer, ServerFnError>>);

/// Creates the viewer resource once, in the app's root.
pub fn provide_viewer() -> ViewerResource {
    let r = ViewerResource(Resource::new(|| (), |_| whoami()));
    provide_context(r);
    r
}

/// The current viewer (awaits the shared resource); a failed lookup counts as signed out.
pub async fn current_viewer() -> Viewer {
    match use_context::<ViewerResource>() {
        Some(r) => r.0.await.unwrap_or_default(),
        None => Viewer::default(),
    }
}

/// The header's part: who is signed in and their scopes, "open local mode", or a sign-in link.
#[component]
pub fn SessionBadge() -> impl IntoView {
    let viewer = use_context::<ViewerResource>().expect("viewer resource");
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let v = viewer.0.await.unwrap_or_default();
                let audit = v.allows("admin").then(|| view! { " · " <a id="audit-link" href="/audit">"Audit"</a> });
                let who = if v.open {
                    view! { <span id="session" data-mode="open" title="No operator tokens are configured: every action is allowed on this loopback server">"open local mode"</span> }.into_any()
                } else if let Some(subject) = v.subject.clone() {
                    view! {
                        <span id="session" data-mode="signed-in">"signed in as " <strong id="session-subject">{subject}</strong>
                            " (" <span id="session-scopes">{v.scopes.join(", ")}</span> ") "
                            <form class="inline" method="post" action="/auth/sign-out">
                                <button id="sign-out" type="submit">"Sign out"</button>
                            </form>
                        </span>
                    }.into_any()
                } else {
                    view! { <span id="session" data-mode="signed-out"><a id="sign-in-link" href="/sign-in">"Sign in"</a></span> }.into_any()
                };
                view! { {audit} " · " {who} }
            })}
        </Transition>
    }
}

pub use domain::auth::safe_next;

/// `/sign-in`: a token field posting to `/auth/sign-in` (HTML form, no script needed).
#[component]
pub fn SignInPage() -> impl IntoView {
    let query = use_query_map();
    let error = move || query.with(|q| q.get("error"));
    // Only a path on this site goes into the form (the server checks it again).
    let next = move || query.with(|q| safe_next(q.get("next").as_deref()));
    view! {
        <Title text="Sign in · Switchyard"/>
        <h1>"Sign in"</h1>
        {move || error().map(|e| view! {
            <p id="sign-in-error" class="error" role="alert">{match e.as_str() {
                "invalid_token" => "That token is not valid.".to_string(),
                "missing_token" => "Enter a token.".to_string(),
                "session_expired" => "Your session has ended: sign in again.".to_string(),
                "sign_in" => "This server shows its jobs and runs to operators only: sign in with your token.".to_string(),
                "rate_limited" => format!(
                    "Too many sign-in attempts from this address: try again in {} s.",
                    query.with(|q| q.get("retry_after")).unwrap_or_else(|| "60".into())
                ),
                other => format!("Sign-in failed: {other}"),
            }}</p>
        })}
        <p>"Paste an operator token. The server opens a session for it: this site's HttpOnly cookie holds the session, never the token."</p>
        <form id="sign-in-form" method="post" action="/auth/sign-in">
            <input type="hidden" name="next" value=next/>
            <label for="token">"Token "</label>
            <input id="token" name="token" type="password" autocomplete="off" required/>
            " "
            <button id="sign-in-submit" type="submit">"Sign in"</button>
        </form>
    }
}

/// One page of the audit log for `/audit` (admin only: the server's auth table says so).
#[server(prefix = "/_sf", endpoint = "audit-logs")]
pub async fn fetch_audit_logs(
    action: Option<String>,
    subject: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
) -> Result<AuditList, ServerFnError> {
    // Page renders call this in-process (no HTTP, so no middleware): check here too.
    if !whoami().await?.allows("admin") {
        return Err(ServerFnError::new(
            "forbidden: the audit log needs scope admin",
        ));
    }
    let some = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let query = AuditQuery {
        actions: list(action),
        subject: some(subject),
        statuses: list(status),
        cursor: some(cursor),
        limit: AUDIT_PER_PAGE,
        ..Default::default()
    };
    let backend = use_context::<crate::data::BackendHandle>()
        .ok_or_else(|| ServerFnError::new("no backend in context"))?;
    backend
        .0
        .audit_logs(query)
        .await
        .map_err(crate::data::failed)
}

const AUDIT_FILTERS: [&str; 3] = ["action", "subject", "status"];

/// `/audit`: the audit log, newest first; filters and the page cursor live in the URL query
/// (a plain GET form). Shown to viewers with the `admin` scope (everyone in open local mode).
#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let param = move |k: &str| query.with(|q| q.get(k)).unwrap_or_default();
    let entries = Resource::new(
        move || {
            (
                param("action"),
                param("subject"),
                param("status"),
                param("cursor"),
            )
        },
        |(a, s, st, c)| fetch_audit_logs(Some(a), Some(s), Some(st), Some(c)),
    );
    let link = move |cursor: Option<String>| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for k in AUDIT_FILTERS {
            let v = param(k);
            if !v.is_empty() {
                ser.append_pair(k, &v);
            }
        }
        if let Some(c) = cursor {
            ser.append_pair("cursor", &c);
        }
        let q = ser.finish();
        if q.is_empty() {
            "/audit".to_string()
        } else {
            format!("/audit?{q}")
        }
    };
    view! {
        <Title text="Audit log · Switchyard"/>
        <h1>"Audit log"</h1>
        <Transition fallback=|| view! { <p>"Checking access…"</p> }>
            {move || Suspend::new(async move {
                let viewer = current_viewer().await;
                if let Some(reason) = viewer.denied("admin") {
                    return view! { <p id="audit-denied" class="error" role="alert">"The audit log " {reason} "."</p> }.into_any();
                }
                let table = match entries.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load the audit log: " {e.to_string()}</p> }.into_any(),
                    Ok(page) if page.entries.is_empty() => view! { <p class="empty" id="audit-empty">"No audit entries match."</p> }.into_any(),
                    Ok(page) => {
                        let older = page.next_cursor.clone().map(|c| link(Some(c)));
                        let newest = (!param("cursor").is_empty()).then(|| link(None));
                        view! {
                            <table id="audit">
                                <caption class="visually-hidden">"Audit entries, newest first"</caption>
                                <thead><tr><th scope="col">"Time"</th><th scope="col">"Subject"</th><th scope="col">"Token"</th>
                                    <th scope="col">"Action"</th><th scope="col">"Resource"</th><th scope="col">"Status"</th>
                                    <th scope="col">"IP"</th><th scope="col">"Details"</th></tr></thead>
                                <tbody>
                                    {page.entries.into_iter().map(|e| view! {
                                        <tr data-action=e.action.clone() data-status=e.status.clone()>
                                            <td><crate::format::When t=e.created_at/></td>
                                            <td>{e.subject.clone().unwrap_or_else(|| "—".into())}</td>
                                            <td><code>{e.token_hash_prefix.clone().unwrap_or_default()}</code></td>
                                            <td><code>{e.action.clone()}</code></td>
                                            <td>{e.resource.clone().unwrap_or_default()}</td>
                                            <td class=format!("audit-status audit-{}", if e.status == "ok" { "ok" } else { "rejected" })>
                                                {e.status.clone()} {e.status_code.map(|c| format!(" ({c})"))}</td>
                                            <td>{e.ip.clone().unwrap_or_default()}</td>
                                            <td><code class="details">{e.details.to_string()}</code></td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            <nav class="pager" aria-label="Pages of audit entries">
                                {newest.map(|h| view! { <a class="newest" href=h>"← Newest"</a> " " })}
                                {older.map(|h| view! { <a class="older" rel="next" href=h>"Older →"</a> })}
                            </nav>
                        }.into_any()
                    }
                };
                view! {
                    <form class="filters" role="search" method="get" action="/audit" aria-controls="audit">
                        <label>"Action " <input id="audit-action" name="action" placeholder="job.run,workflow.run" value=param("action")/></label>
                        " "
                        <label>"Subject " <input id="audit-subject" name="subject" value=param("subject")/></label>
                        " "
                        <label>"Status " <input id="audit-status" name="status" placeholder="ok,forbidden" value=param("status")/></label>
                        " "
                        <button id="audit-filter" type="submit">"Filter"</button>
                    </form>
                    {table}
                }.into_any()
            })}
        </Transition>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_for_disabled_buttons() {
        let open = Viewer {
            open: true,
            ..Default::default()
        };
        assert!(open.allows("admin"));
        let bob = Viewer {
            subject: Some("bob".into()),
            scopes: vec!["jobs:run".into()],
            ..Default::default()
        };
        assert_eq!(bob.denied("jobs:run"), None);
        assert_eq!(
            bob.denied("workflows:run").as_deref(),
            Some("needs scope workflows:run")
        );
        let admin = Viewer {
            subject: Some("a".into()),
            scopes: vec!["admin".into()],
            ..Default::default()
        };
        assert!(admin.allows("secrets:write"));
        assert!(
            Viewer::default()
                .denied("jobs:run")
                .unwrap()
                .contains("sign in")
        );
    }
}
