//! Operator authentication and authorization for every request (one middleware), the sign-in
//! and sign-out endpoints of the pages, and `GET /api/audit-logs`.
//!
//! The middleware asks `domain::auth::rule_for` which scope a request needs (the table covers
//! every write endpoint of api.md and the pages' server functions that write), takes the
//! token from `Authorization: Bearer`, or resolves the sign-in session cookie to its token
//! (`sessions.rs`: one primary-key read), answers 401 `missing_token` / `invalid_token` or 403
//! `forbidden`, refuses cross-site cookie-authenticated writes, and records an audit entry for
//! every rejection and every accepted write. It puts the `Principal` and the pages' `Viewer`
//! into the request's extensions. The `Host` was checked before (`http::check_host`).
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use crate::application::audit::AuditLog;
use app::auth_pages::Viewer;
use axum::{
    Json,
    body::{Body, Bytes},
    extract::{ConnectInfo, Query, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use domain::{audit::AuditRecord, listing::AuditFilter};
use serde_json::{Value, json};
use wire::AuditEntry;
use wire::{ListMeta, Page};

use super::{AppState, error::ApiError};
use crate::{
    sessions::{SECURE_SESSION_COOKIE, SESSION_COOKIE},
    settings::AuthSettings,
};
use domain::{
    Problems,
    auth::{
        Matched, Principal, Scope, always_open, rule_for, safe_next, same_origin, token_hash_prefix,
    },
    hosts::HostName,
    problems::{escape_nul, escape_nul_json},
};

/// Largest body buffered to name an audited resource (the body limit still applies after).
const BUFFER_LIMIT: usize = 16 * 1024 * 1024;

/// What a request presents to prove who sends it.
enum Credential {
    /// `Authorization: Bearer <token>` (anything else in that header counts as a bad token).
    Bearer(String),
    /// The sign-in session cookie's secret.
    Session(String),
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
    // Anything but a bearer token is presented but invalid.
    Some(match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim().to_string(),
        _ => text,
    })
}

/// The session cookie's secret (either cookie name), if the request carries one.
fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SECURE_SESSION_COOKIE || *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    match bearer(headers) {
        Some(token) => Some(Credential::Bearer(token)),
        None => session_secret(headers).map(Credential::Session),
    }
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn client_ip(req: &Request) -> Option<String> {
    peer_ip(req).map(|ip| ip.to_string())
}

/// The `Origin` header, else the `Referer`.
fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn host_of(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Static files (the wasm bundle, styles, icons): they need nobody's identity, so their
/// requests cost no session lookup.
fn is_static_file(path: &str) -> bool {
    !path.starts_with("/api/")
        && !path.starts_with("/_sf/")
        && (path.starts_with("/pkg/") || path.rsplit('/').next().is_some_and(|l| l.contains('.')))
}

enum Identity {
    Valid(Principal),
    /// The credential matches no configured token, or the session cookie no live session.
    Invalid {
        /// The hash prefix of the token presented (or remembered by the session), if known.
        hash: Option<String>,
        /// A session cookie that has expired, was revoked, or whose token is gone.
        session: bool,
    },
    Missing,
}

fn viewer_of(open: bool, protect_reads: bool, identity: &Identity) -> Viewer {
    match identity {
        Identity::Valid(p) => Viewer {
            open,
            subject: Some(p.subject.clone()),
            scopes: p.scope_names(),
            protect_reads,
        },
        _ => Viewer {
            open,
            subject: None,
            scopes: Vec::new(),
            protect_reads,
        },
    }
}

/// Who presents `cred`: the token's principal, or that of the live session's token.
async fn identify(s: &AppState, cred: Option<&Credential>) -> Result<Identity, ApiError> {
    Ok(match cred {
        None => Identity::Missing,
        Some(Credential::Bearer(token)) => match s.auth.tokens.authenticate(token) {
            Some(p) => Identity::Valid(p),
            None => Identity::Invalid {
                hash: Some(token_hash_prefix(token)),
                session: false,
            },
        },
        Some(Credential::Session(secret)) => {
            let session = s.sessions.resolve(secret).await.map_err(|e| {
                tracing::error!(error = %e, "could not read the sessions table");
                ApiError::internal()
            })?;
            match session {
                Some(row) => match s.auth.tokens.by_hash(&row.token_hash) {
                    Some(p) => Identity::Valid(p),
                    // Its token was removed from the configuration.
                    None => Identity::Invalid {
                        hash: row.token_hash.get(..12).map(str::to_string),
                        session: true,
                    },
                },
                None => Identity::Invalid {
                    hash: None,
                    session: true,
                },
            }
        }
    })
}

/// What an audit entry of this request says besides its outcome.
struct AuditBase {
    audit: AuditLog,
    ip: Option<String>,
    method: String,
    path: String,
}

impl AuditBase {
    // One audit row's columns, in order; a struct here would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        subject: Option<String>,
        hash: Option<String>,
        action: &str,
        resource: Option<String>,
        status: &str,
        code: StatusCode,
        mut details: Value,
    ) {
        if let Some(obj) = details.as_object_mut() {
            obj.insert("method".into(), json!(self.method));
            obj.insert("path".into(), json!(self.path));
        }
        // A refused request is recorded as it named things (a path parameter is decoded):
        // U+0000, which no database stores, is written `%00`.
        let record = AuditRecord {
            subject: subject.map(|s| escape_nul(&s)),
            token_hash_prefix: hash,
            action: action.to_string(),
            resource: resource.map(|r| escape_nul(&r)),
            status: status.to_string(),
            status_code: Some(i32::from(code.as_u16())),
            ip: self.ip.clone(),
            details: escape_nul_json(details),
        };
        if let Err(e) = self.audit.record(record).await {
            tracing::error!(error = %e, action, "could not write the audit log");
        }
    }
}

fn resource_of(m: &Matched) -> Option<String> {
    m.param
        .as_ref()
        .map(|p| format!("{}/{}", m.rule.collection, p))
}

/// The one auth middleware (see the module docs).
pub async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let cred = match credential(req.headers()) {
        Some(Credential::Session(_)) if is_static_file(path) => None,
        c => c,
    };
    let identity = if s.auth.is_open() {
        Identity::Valid(Principal::local())
    } else {
        match identify(&s, cred.as_ref()).await {
            Ok(i) => i,
            Err(e) => return e.into_response(),
        }
    };
    let stale_session = matches!(identity, Identity::Invalid { session: true, .. });
    let https = is_https(req.headers(), &s.auth);
    let mut res = authorize_identified(s, req, next, cred, identity).await;
    // A session that is over: the browser may drop its cookie (unless this response just set
    // a new one, as a sign-in does).
    let sets_session = res.headers().get_all(header::SET_COOKIE).iter().any(|v| {
        v.as_bytes().starts_with(SESSION_COOKIE.as_bytes())
            || v.as_bytes().starts_with(SECURE_SESSION_COOKIE.as_bytes())
    });
    if stale_session && !sets_session {
        for cookie in clear_session_cookies(https) {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    res
}

/// Authorizes a request whose sender was identified: refuses cross-site writes, answers
/// requests that lack the credential or scope they need, and runs the rest (an accepted
/// audited write through [`run_accepted_write`]).
async fn authorize_identified(
    s: AppState,
    mut req: Request,
    next: Next,
    cred: Option<Credential>,
    identity: Identity,
) -> Response {
    let auth = s.auth.clone();
    let open = auth.is_open();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let matched = rule_for(method.as_str(), &path);
    let audit = RequestAudit::new(&s, &req, &path, &method, matched.as_ref(), &identity);

    if is_cross_site_write(&req, &method, &path, cred.as_ref()) {
        return refuse_cross_site(audit, req.headers()).await;
    }

    let needed: Option<Option<Scope>> = match &matched {
        Some(m) => Some(Some(m.rule.scope)),
        None if auth.protects_reads() && !always_open(&path) => Some(None),
        None => None,
    };
    req.extensions_mut()
        .insert(viewer_of(open, auth.protects_reads(), &identity));
    let Some(scope) = needed else {
        if let Identity::Valid(p) = identity {
            req.extensions_mut().insert(p);
        }
        return next.run(req).await;
    };
    let is_page = !path.starts_with("/api/") && !path.starts_with("/_sf/");
    if let Some(rejection) = rejection_of(&identity, scope) {
        let redirect = is_page && method == Method::GET && rejection.0 == StatusCode::UNAUTHORIZED;
        return reject(audit, req.uri(), &identity, scope, redirect, rejection).await;
    }
    let Identity::Valid(principal) = identity else {
        unreachable!("rejected above")
    };
    req.extensions_mut().insert(principal.clone());
    let Some(m) = matched.filter(|m| m.rule.audit_accepted) else {
        return next.run(req).await;
    };
    run_accepted_write(next, req, audit.base, m, principal, &path).await
}

/// A request's audit entry as far as it is known before the request is authorized: who sends
/// it, and what it would do to which resource.
struct RequestAudit {
    base: AuditBase,
    subject: Option<String>,
    hash: Option<String>,
    action: &'static str,
    resource: Option<String>,
}

impl RequestAudit {
    /// The entry of `req` (`method` on `path`, matching the rule `matched`) sent by `identity`.
    fn new(
        s: &AppState,
        req: &Request,
        path: &str,
        method: &Method,
        matched: Option<&Matched>,
        identity: &Identity,
    ) -> RequestAudit {
        let base = AuditBase {
            audit: s.jobs.audit(),
            ip: client_ip(req),
            method: method.to_string(),
            path: path.to_string(),
        };
        let action = matched.map(|m| m.rule.action).unwrap_or(
            if method == Method::GET || method == Method::HEAD {
                "read"
            } else {
                "request"
            },
        );
        let resource = matched
            .and_then(resource_of)
            .or_else(|| Some(path.to_string()));
        let (subject, hash) = match identity {
            Identity::Valid(p) => (Some(p.subject.clone()), p.token_hash_prefix.clone()),
            Identity::Invalid { hash, .. } => (None, hash.clone()),
            Identity::Missing => (None, None),
        };
        RequestAudit {
            base,
            subject,
            hash,
            action,
            resource,
        }
    }

    /// Records that the request was refused: `status` (the error code), answered `code`.
    async fn refused(self, status: &str, code: StatusCode, details: Value) {
        self.base
            .record(
                self.subject,
                self.hash,
                self.action,
                self.resource,
                status,
                code,
                details,
            )
            .await;
    }
}

/// Cross-site request forgery: a write carried by the cookie (or the sign-in form itself)
/// must come from this site; in open local mode a write naming another origin is refused.
/// True when `req` is a write to refuse for that.
fn is_cross_site_write(
    req: &Request,
    method: &Method,
    path: &str,
    cred: Option<&Credential>,
) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        return false;
    }
    let cookie_based = matches!(cred, Some(Credential::Session(_))) || path.starts_with("/auth/");
    let host = host_of(req.headers());
    let ok = match origin_of(req.headers()) {
        Some(origin) => same_origin(&origin, &host),
        None => !cookie_based,
    };
    !ok
}

/// Records and answers (403 `forbidden`) a cross-site write (whose headers are `headers`).
async fn refuse_cross_site(audit: RequestAudit, headers: &HeaderMap) -> Response {
    let message = "cross-site request refused: a browser (cookie) request that changes something must carry an Origin or Referer header of this site";
    audit
        .refused(
            "forbidden",
            StatusCode::FORBIDDEN,
            json!({"reason": "csrf", "origin": origin_of(headers)}),
        )
        .await;
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// Why a request is refused: its status, error code and message.
type Rejection = (StatusCode, &'static str, String);

/// Why `identity` may not send a request that needs `scope` (`None`: any valid token, for a
/// protected read); None when it may.
fn rejection_of(identity: &Identity, scope: Option<Scope>) -> Option<Rejection> {
    match identity {
        Identity::Missing => Some((
            StatusCode::UNAUTHORIZED,
            "missing_token",
            match scope {
                Some(sc) => format!(
                    "this request needs a token with scope {}: send Authorization: Bearer <token>",
                    sc.as_str()
                ),
                None => "reads need a token on this server (any configured token; the operator may open them with --public-reads): send Authorization: Bearer <token>"
                    .to_string(),
            },
        )),
        Identity::Invalid { session: false, .. } => Some((
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token matches no configured operator token".to_string(),
        )),
        Identity::Invalid { session: true, .. } => Some((
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the sign-in session has expired or was ended (signed out, or its token is no longer configured): sign in again".to_string(),
        )),
        Identity::Valid(p) => match scope {
            Some(sc) if !p.allows(sc) => Some((
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this request needs scope {}; the token of {} has {}",
                    sc.as_str(),
                    p.subject,
                    p.scope_names().join(", ")
                ),
            )),
            _ => None,
        },
    }
}

/// Records and answers a refused request (to `uri`): with `redirect` (a page's `GET` without
/// a valid credential) a 303 to the sign-in page, else the error (a 401 with
/// `WWW-Authenticate`).
async fn reject(
    audit: RequestAudit,
    uri: &Uri,
    identity: &Identity,
    scope: Option<Scope>,
    redirect: bool,
    (code, error, message): Rejection,
) -> Response {
    audit
        .refused(
            error,
            if redirect {
                StatusCode::SEE_OTHER
            } else {
                code
            },
            json!({"reason": message, "neededScope": scope.map(Scope::as_str)}),
        )
        .await;
    if redirect {
        return sign_in_redirect(uri, identity, error);
    }
    let mut res = ApiError::new(code, error, message).into_response();
    if code == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"switchyard\""),
        );
    }
    res
}

/// The 303 to the sign-in page for a page request (to `uri`) refused with `error`; the sign-in
/// goes back to `uri`'s path afterwards.
fn sign_in_redirect(uri: &Uri, identity: &Identity, error: &str) -> Response {
    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &target)
        .append_pair(
            "error",
            match (identity, error) {
                (Identity::Invalid { session: true, .. }, _) => "session_expired",
                (_, "missing_token") => "sign_in",
                (_, e) => e,
            },
        )
        .finish();
    see_other(&format!("/sign-in?{query}"), None)
}

/// An accepted write: names its resource (path parameter, or for a server function the form
/// field the rule names), runs it, and records the outcome.
async fn run_accepted_write(
    next: Next,
    mut req: Request,
    base: AuditBase,
    m: Matched,
    principal: Principal,
    path: &str,
) -> Response {
    let mut resource = resource_of(&m);
    if resource.is_none()
        && path.starts_with("/_sf/")
        && let Some(field) = m.rule.name_field
    {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, BUFFER_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                )
                .into_response();
            }
        };
        resource = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == field)
            .map(|(_, v)| format!("{}/{}", m.rule.collection, v.to_lowercase_if_slug(field)));
        req = Request::from_parts(parts, Body::from(bytes));
    }
    // The write and its audit entry run on a task of their own: a client that disconnects
    // (axum then drops this future) cannot leave a committed write without its entry, nor a
    // write cut short between its commit and what follows it.
    let done = tokio::spawn(run_and_audit(next, req, base, m, resource, principal));
    match done.await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => ApiError::internal().into_response(),
    }
}

/// Runs an accepted write and records its outcome in the audit log.
async fn run_and_audit(
    next: Next,
    req: Request,
    base: AuditBase,
    m: Matched,
    mut resource: Option<String>,
    principal: Principal,
) -> Response {
    let res = next.run(req).await;
    let code = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let (res, body) = if is_json {
        let (parts, body) = res.into_parts();
        match axum::body::to_bytes(body, BUFFER_LIMIT).await {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (Response::from_parts(parts, Body::from(bytes)), v)
            }
            Err(_) => (ApiError::internal().into_response(), Value::Null),
        }
    } else {
        (res, Value::Null)
    };
    let data = body.get("data").unwrap_or(&body);
    let status = if !code.is_success() {
        body.pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| ApiError::for_status(code).code.to_string())
    } else if data
        .get("problems")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        "invalid_parameters".to_string()
    } else {
        "ok".to_string()
    };
    if resource.is_none()
        && let Some(field) = m.rule.name_field
        && let Some(name) = data.get(field).and_then(Value::as_str)
    {
        resource = Some(format!("{}/{}", m.rule.collection, name));
    }
    let id = data
        .pointer("/run/id")
        .or_else(|| data.get("id"))
        .and_then(Value::as_str);
    let mut details = json!({});
    if let Some(id) = id {
        details["id"] = json!(id);
    }
    base.record(
        Some(principal.subject.clone()),
        principal.token_hash_prefix.clone(),
        m.rule.action,
        resource,
        &status,
        code,
        details,
    )
    .await;
    res
}

/// Slugs are case-insensitive (stored lower-case); ids and keys keep their case.
trait SlugCase {
    fn to_lowercase_if_slug(&self, field: &str) -> String;
}

impl SlugCase for std::borrow::Cow<'_, str> {
    fn to_lowercase_if_slug(&self, field: &str) -> String {
        if field == "slug" {
            self.to_lowercase()
        } else {
            self.to_string()
        }
    }
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// Whether the browser reached this server over HTTPS: `X-Forwarded-Proto` (of the proxy in
/// front) when present, else whether the request is addressed to an `https` `--public-url`'s
/// host (a proxy that keeps the Host header).
fn is_https(headers: &HeaderMap, auth: &AuthSettings) -> bool {
    if let Some(proto) = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        // The first hop's protocol, for a list of them.
        let first = proto.split(',').next().unwrap_or("").trim();
        return first.eq_ignore_ascii_case("https");
    }
    auth.https_public_host()
        .is_some_and(|public| HostName::parse(&host_of(headers)) == Some(public))
}

/// The session cookie: `__Host-` prefixed and `Secure` over HTTPS; always HttpOnly,
/// SameSite=Strict, Path=/, no Domain.
fn session_cookie(https: bool, value: &str, max_age_s: u64) -> String {
    let name = if https {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    };
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}")
}

/// Set-Cookie values that delete the session cookie, under both names (a `__Host-` cookie
/// can only be replaced by a `Secure` one).
fn clear_session_cookies(https: bool) -> Vec<HeaderValue> {
    let mut out = vec![session_cookie(false, "", 0)];
    if https {
        out.push(session_cookie(true, "", 0));
    }
    out.into_iter()
        .filter_map(|c| HeaderValue::from_str(&c).ok())
        .collect()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// `POST /auth/sign-in` (form `token`, `next`): a valid token opens a session (its secret in
/// the HttpOnly cookie, never the token) and the browser goes to `next` (a path on this site,
/// else `/`); an invalid one goes back to `/sign-in` with the error. Attempts are limited per
/// client address (`sessions::SIGN_IN_PER_MINUTE`): beyond it a 429 `rate_limited` with
/// `Retry-After`, or for a browser's form the sign-in page saying how long to wait. Every
/// attempt is audited (`auth.sign_in`).
pub async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let peer = peer_ip(&req);
    let (parts, body) = req.into_parts();
    let (next, token) = sign_in_form(body).await;
    let base = AuditBase {
        audit: s.jobs.audit(),
        ip: peer.map(|ip| ip.to_string()),
        method: "POST".into(),
        path: "/auth/sign-in".into(),
    };
    if s.auth.is_open() {
        return see_other(&next, None);
    }
    if let Err(wait) = s.sessions.sign_in_attempt(peer) {
        return sign_in_rate_limited(&base, &parts.headers, &token, &next, wait).await;
    }
    if token.is_empty() {
        base.record(
            None,
            None,
            "auth.sign_in",
            None,
            "missing_token",
            StatusCode::UNAUTHORIZED,
            json!({}),
        )
        .await;
        return back_to_sign_in("missing_token", None, &next);
    }
    let Some(p) = s.auth.tokens.authenticate(&token) else {
        base.record(
            None,
            Some(token_hash_prefix(&token)),
            "auth.sign_in",
            None,
            "invalid_token",
            StatusCode::UNAUTHORIZED,
            json!({}),
        )
        .await;
        return back_to_sign_in("invalid_token", None, &next);
    };
    open_session(&s, &base, &parts.headers, &p, &token, &next).await
}

/// The sign-in form's `next` (made safe, see [`safe_next`]) and `token` (trimmed; empty when
/// missing). A body that cannot be read counts as empty.
async fn sign_in_form(body: Body) -> (String, String) {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let form: HashMap<String, String> = url::form_urlencoded::parse(&bytes).into_owned().collect();
    // Neither field reaches the database as written, so U+0000 cannot either: `next` only
    // through `safe_next` (no control characters), the token only as its hash.
    let next = safe_next(form.get("next").map(String::as_str));
    let token = form
        .get("token")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    (next, token)
}

/// The 303 back to the sign-in page showing `error` (and `extra`), which then goes on to
/// `next`.
fn back_to_sign_in(error: &str, extra: Option<(&str, String)>, next: &str) -> Response {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("error", error);
    if let Some((k, v)) = extra {
        q.append_pair(k, &v);
    }
    q.append_pair("next", next);
    see_other(&format!("/sign-in?{}", q.finish()), None)
}

/// Records and answers a sign-in attempt beyond the client's limit, which may try again after
/// `wait`: a 429 `rate_limited`, or for a browser the sign-in page saying how long to wait;
/// either with `Retry-After`.
async fn sign_in_rate_limited(
    base: &AuditBase,
    headers: &HeaderMap,
    token: &str,
    next: &str,
    wait: std::time::Duration,
) -> Response {
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after = retry_after.max(1);
    base.record(
        None,
        (!token.is_empty()).then(|| token_hash_prefix(token)),
        "auth.sign_in",
        None,
        "rate_limited",
        StatusCode::TOO_MANY_REQUESTS,
        json!({"retryAfterS": retry_after}),
    )
    .await;
    let mut res = if wants_html(headers) {
        back_to_sign_in(
            "rate_limited",
            Some(("retry_after", retry_after.to_string())),
            next,
        )
    } else {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many sign-in attempts from this address ({} a minute): try again in {retry_after} s",
                crate::sessions::SIGN_IN_PER_MINUTE
            ),
        )
        .into_response()
    };
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
}

/// Opens a session for `p`, who signed in with `token` (revoking the one the browser had),
/// records the sign-in, and sends the browser to `next` with the session cookie.
async fn open_session(
    s: &AppState,
    base: &AuditBase,
    headers: &HeaderMap,
    p: &Principal,
    token: &str,
    next: &str,
) -> Response {
    let secret = match s.sessions.open(&p.subject, token).await {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(error = %e, "could not store a sign-in session");
            return ApiError::internal().into_response();
        }
    };
    // Signing in again replaces the browser's previous session.
    if let Some(old) = session_secret(headers)
        && let Err(e) = s.sessions.revoke(&old).await
    {
        tracing::warn!(error = %e, "could not revoke the replaced session");
    }
    let ttl = s.sessions.ttl();
    base.record(
        Some(p.subject.clone()),
        p.token_hash_prefix.clone(),
        "auth.sign_in",
        None,
        "ok",
        StatusCode::SEE_OTHER,
        json!({"sessionTtlS": ttl.as_secs()}),
    )
    .await;
    let https = is_https(headers, &s.auth);
    see_other(next, Some(session_cookie(https, &secret, ttl.as_secs())))
}

/// `POST /auth/sign-out`: ends the session (its row is deleted, so the same cookie no longer
/// signs anyone in) and clears the cookie. Audited (`auth.sign_out`).
pub async fn sign_out(State(s): State<AppState>, req: Request) -> Response {
    let https = is_https(req.headers(), &s.auth);
    let mut res = see_other("/", None);
    for cookie in clear_session_cookies(https) {
        res.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if s.auth.is_open() {
        return res;
    }
    let Some(secret) = session_secret(req.headers()) else {
        return res;
    };
    let principal = req.extensions().get::<Principal>().cloned();
    let base = AuditBase {
        audit: s.jobs.audit(),
        ip: client_ip(&req),
        method: "POST".into(),
        path: "/auth/sign-out".into(),
    };
    let revoked = match s.sessions.revoke(&secret).await {
        Ok(revoked) => revoked,
        Err(e) => {
            tracing::error!(error = %e, "could not revoke a sign-in session");
            return ApiError::internal().into_response();
        }
    };
    base.record(
        principal.as_ref().map(|p| p.subject.clone()),
        principal.and_then(|p| p.token_hash_prefix),
        "auth.sign_out",
        None,
        if revoked { "ok" } else { "not_found" },
        StatusCode::SEE_OTHER,
        json!({}),
    )
    .await;
    res
}

/// `GET /api/audit-logs` (scope `admin`): newest first, filtered, keyset pages.
#[utoipa::path(get, path = "/api/audit-logs", tag = "operations", params(
        ("action" = Option<String>, Query, description = "comma-separated actions, e.g. job.run,workflow.update"),
        ("subject" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "comma-separated: ok, missing_token, invalid_token, forbidden, or another error code"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "1..100, default 20"),
        ("cursor" = Option<uuid::Uuid>, Query, description = "meta.nextCursor of the previous page")),
    responses((status = 200, body = Page<AuditEntry>, description = "newest first; meta.total is null (the log is not counted)")))]
pub async fn list_audit_logs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> super::ListReply<AuditEntry> {
    let f = audit_filter(&q).map_err(ApiError::invalid_request)?;
    let page = s.jobs.audit().page(&f).await?;
    let meta = ListMeta {
        limit: f.limit,
        offset: 0,
        total: None,
        next_cursor: page.next_cursor,
    };
    Ok(Json(Page {
        data: page.entries,
        meta,
    }))
}

fn audit_filter(q: &HashMap<String, String>) -> Result<AuditFilter, Problems> {
    let mut p = Problems::new();
    let list = |v: Option<&String>| -> Vec<String> {
        v.map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
    };
    for key in q.keys() {
        if ![
            "action", "subject", "status", "since", "until", "limit", "cursor",
        ]
        .contains(&key.as_str())
        {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    let mut time = |key: &str| {
        q.get(key)
            .and_then(|v| match chrono::DateTime::parse_from_rfc3339(v.trim()) {
                Ok(t) => Some(t.with_timezone(&chrono::Utc)),
                Err(e) => {
                    p.add(
                        format!("/query/{key}"),
                        format!("not an RFC 3339 time: {e}"),
                    );
                    None
                }
            })
    };
    let since = time("since");
    let until = time("until");
    // The audit log pages by keyset only: `offset` is reported above as unknown.
    let (limit, _, cursor) = super::lists::paging(q, &mut p);
    p.finish(AuditFilter {
        actions: list(q.get("action")),
        subject: q
            .get("subject")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        statuses: list(q.get("status")),
        since,
        until,
        cursor,
        limit,
    })
}

/// Marks every operation of the table in the OpenAPI document with the bearer scheme and the
/// scope it needs.
pub struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An operator token (SWITCHYARD_OPERATOR_TOKENS or a token file; at least 32 characters), or the pages' sign-in session cookie (switchyard_session, or __Host-switchyard_session over HTTPS: a server-side session opened by POST /auth/sign-in, never the token itself; it expires after SWITCHYARD_SESSION_TTL_MS, 12 h by default, and POST /auth/sign-out ends it). Sign-in attempts are limited per client address (429 rate_limited with Retry-After). Scopes: jobs:write, jobs:run, jobs:exec, workflows:write, workflows:run, services:write, secrets:write, secrets:use, admin (implies all). jobs:exec and secrets:use are checked from a request's content on top of the route's scope (403 forbidden naming them): jobs:exec for job definitions that execute commands and for definition-only parameters (repository-build's command, env, checkout) in workflow steps; secrets:use for secret references in a caller's run parameters, definitions carrying secret references, a changed destination of a job whose defaults carry secrets, and a service's baseUrl or headers. Listing secrets (GET /api/secrets, key names only) needs secrets:write too; GET /api/audit-logs needs admin. Other reads need any valid token when tokens are configured, unless the server runs with SWITCHYARD_PUBLIC_READS=true (--public-reads), which opens them. With no tokens configured the server runs in open local mode (no token needed, loopback only)."))
                    .build(),
            ),
        );
        for rule in domain::auth::RULES {
            let Some(item) = openapi.paths.paths.get_mut(rule.pattern) else {
                continue;
            };
            let op = match rule.method {
                "GET" => item.get.as_mut(),
                "POST" => item.post.as_mut(),
                "PUT" => item.put.as_mut(),
                "PATCH" => item.patch.as_mut(),
                "DELETE" => item.delete.as_mut(),
                _ => None,
            };
            if let Some(op) = op {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    [rule.scope.as_str()],
                )]);
                let note = format!("Requires scope `{}` (or `admin`).", rule.scope.as_str());
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                    _ => note,
                });
            }
        }
    }
}
