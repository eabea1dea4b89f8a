//! Operator authentication and authorization for every request (one middleware), the sign-in
//! and sign-out endpoints of the pages, and `GET /api/audit-logs`.
//!
//! The middleware asks `domain::auth::rule_for` which scope a request needs (the table covers
//! every write endpoint of api.md and the pages' server functions that write), takes the
//! token from `Authorization: Bearer` or the sign-in cookie, answers 401 `missing_token` /
//! `invalid_token` or 403 `forbidden`, refuses cross-site cookie-authenticated writes, and
//! records an audit entry for every rejection and every accepted write. It puts the
//! `Principal` and the pages' `Viewer` into the request's extensions.
use std::{collections::HashMap, net::SocketAddr};

use app::{
    auth_pages::{AuditEntry, Viewer},
    wire::ListMeta,
};
use axum::{
    Json,
    body::{Body, Bytes},
    extract::{ConnectInfo, Query, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AppState, error::ApiError};
use crate::{
    domain::{
        Problems,
        auth::{
            Matched, Principal, Scope, always_open, cookie_decode, cookie_encode, rule_for,
            safe_next, same_origin, token_hash_prefix,
        },
    },
    store::{AuditFilter, AuditRecord, Store},
};

/// The sign-in cookie (HttpOnly, SameSite=Strict, Path=/): the token, percent-encoded.
pub const COOKIE_NAME: &str = "switchyard_token";

/// Largest body buffered to name an audited resource (the body limit still applies after).
const BUFFER_LIMIT: usize = 16 * 1024 * 1024;

struct Credential {
    token: String,
    via_cookie: bool,
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

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| cookie_decode(value))
        .filter(|t| !t.is_empty())
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    match bearer(headers) {
        Some(token) => Some(Credential {
            token,
            via_cookie: false,
        }),
        None => cookie_token(headers).map(|token| Credential {
            token,
            via_cookie: true,
        }),
    }
}

fn client_ip(req: &Request) -> Option<String> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
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

enum Identity {
    Valid(Principal),
    /// A token was presented that matches none; its hash prefix.
    Invalid(String),
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

/// What an audit entry of this request says besides its outcome.
struct AuditBase {
    store: Store,
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
        let record = AuditRecord {
            subject,
            token_hash_prefix: hash,
            action: action.to_string(),
            resource,
            status: status.to_string(),
            status_code: Some(i32::from(code.as_u16())),
            ip: self.ip.clone(),
            details,
        };
        if let Err(e) = self.store.insert_audit_log(record).await {
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
pub async fn authorize(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = s.auth.clone();
    let open = auth.is_open();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let matched = rule_for(method.as_str(), &path);
    let cred = credential(req.headers());
    let base = AuditBase {
        store: s.jobs.store().clone(),
        ip: client_ip(&req),
        method: method.to_string(),
        path: path.clone(),
    };
    let identity = if open {
        Identity::Valid(Principal::local())
    } else {
        match &cred {
            None => Identity::Missing,
            Some(c) => match auth.tokens.authenticate(&c.token) {
                Some(p) => Identity::Valid(p),
                None => Identity::Invalid(token_hash_prefix(&c.token)),
            },
        }
    };
    let action = matched.as_ref().map(|m| m.rule.action).unwrap_or(
        if method == Method::GET || method == Method::HEAD {
            "read"
        } else {
            "request"
        },
    );
    let resource = matched
        .as_ref()
        .and_then(resource_of)
        .or_else(|| Some(path.clone()));
    let (subject, hash) = match &identity {
        Identity::Valid(p) => (Some(p.subject.clone()), p.token_hash_prefix.clone()),
        Identity::Invalid(h) => (None, Some(h.clone())),
        Identity::Missing => (None, None),
    };

    // Cross-site request forgery: a write carried by the cookie (or the sign-in form itself)
    // must come from this site; in open local mode a write naming another origin is refused.
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let cookie_based =
            cred.as_ref().is_some_and(|c| c.via_cookie) || path.starts_with("/auth/");
        let host = host_of(req.headers());
        let ok = match origin_of(req.headers()) {
            Some(origin) => same_origin(&origin, &host),
            None => !cookie_based,
        };
        if !ok {
            let message = "cross-site request refused: a browser (cookie) request that changes something must carry an Origin or Referer header of this site";
            base.record(
                subject,
                hash,
                action,
                resource,
                "forbidden",
                StatusCode::FORBIDDEN,
                json!({"reason": "csrf", "origin": origin_of(req.headers())}),
            )
            .await;
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
        }
    }

    let needed: Option<Option<Scope>> = match &matched {
        Some(m) => Some(Some(m.rule.scope)),
        None if auth.protect_reads && !open && !always_open(&path) => Some(None),
        None => None,
    };
    req.extensions_mut()
        .insert(viewer_of(open, auth.protect_reads, &identity));
    let Some(scope) = needed else {
        if let Identity::Valid(p) = identity {
            req.extensions_mut().insert(p);
        }
        return next.run(req).await;
    };
    let is_page = !path.starts_with("/api/") && !path.starts_with("/_sf/");
    let rejection = match &identity {
        Identity::Missing => Some((
            StatusCode::UNAUTHORIZED,
            "missing_token",
            match scope {
                Some(sc) => format!(
                    "this request needs a token with scope {}: send Authorization: Bearer <token>",
                    sc.as_str()
                ),
                None => "reads are protected on this server: send Authorization: Bearer <token>"
                    .to_string(),
            },
        )),
        Identity::Invalid(_) => Some((
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token matches no configured operator token".to_string(),
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
    };
    if let Some((code, error, message)) = rejection {
        let redirect = is_page && method == Method::GET && code == StatusCode::UNAUTHORIZED;
        base.record(
            subject,
            hash,
            action,
            resource,
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
            let target = req
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &target)
                .append_pair(
                    "error",
                    if error == "missing_token" {
                        "sign_in"
                    } else {
                        error
                    },
                )
                .finish();
            return see_other(&format!("/sign-in?{query}"), None);
        }
        let mut res = ApiError::new(code, error, message).into_response();
        if code == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard\""),
            );
        }
        return res;
    }
    let Identity::Valid(principal) = identity else {
        unreachable!("rejected above")
    };
    req.extensions_mut().insert(principal.clone());
    let Some(m) = matched.filter(|m| m.rule.audit_accepted) else {
        return next.run(req).await;
    };

    // An accepted write: name its resource (path parameter, form field or response field),
    // run it, and record the outcome.
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
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

fn cookie_attributes(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if https {
        "; HttpOnly; SameSite=Strict; Path=/; Secure"
    } else {
        "; HttpOnly; SameSite=Strict; Path=/"
    }
}

/// `POST /auth/sign-in` (form `token`, `next`): a valid token is kept in the HttpOnly cookie and
/// the browser goes to `next`; an invalid one goes back to `/sign-in` with the error. Both
/// are audited (`auth.sign_in`).
pub async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let ip = client_ip(&req);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let form: HashMap<String, String> = url::form_urlencoded::parse(&bytes).into_owned().collect();
    let next = safe_next(form.get("next").map(String::as_str));
    let token = form
        .get("token")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let base = AuditBase {
        store: s.jobs.store().clone(),
        ip,
        method: "POST".into(),
        path: "/auth/sign-in".into(),
    };
    if s.auth.is_open() {
        return see_other(&next, None);
    }
    let back = |error: &str| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("error", error)
            .append_pair("next", &next)
            .finish();
        see_other(&format!("/sign-in?{q}"), None)
    };
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
        return back("missing_token");
    }
    match s.auth.tokens.authenticate(&token) {
        None => {
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
            back("invalid_token")
        }
        Some(p) => {
            base.record(
                Some(p.subject.clone()),
                p.token_hash_prefix.clone(),
                "auth.sign_in",
                None,
                "ok",
                StatusCode::SEE_OTHER,
                json!({}),
            )
            .await;
            let cookie = format!(
                "{COOKIE_NAME}={}{}",
                cookie_encode(&token),
                cookie_attributes(&parts.headers)
            );
            see_other(&next, Some(cookie))
        }
    }
}

/// `POST /auth/sign-out`: clears the cookie.
pub async fn sign_out(req: Request) -> Response {
    let cookie = format!(
        "{COOKIE_NAME}={}; Max-Age=0",
        cookie_attributes(req.headers())
    );
    see_other("/", Some(cookie))
}

/// `GET /api/audit-logs` (scope `admin`): newest first, filtered, keyset pages.
#[utoipa::path(get, path = "/api/audit-logs", tag = "operations", params(
        ("action" = Option<String>, Query, description = "comma-separated actions, e.g. job.run,workflow.update"),
        ("subject" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "comma-separated: ok, missing_token, invalid_token, forbidden, or another error code"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<u64>, Query, description = "1..100, default 20"),
        ("cursor" = Option<String>, Query, description = "meta.nextCursor of the previous page")),
    responses((status = 200, body = Vec<AuditEntry>, description = "{\"data\": [entry], \"meta\": {limit, offset, total: null, nextCursor}}"),
              (status = 400, body = app::wire::ErrorBody), (status = 401, body = app::wire::ErrorBody),
              (status = 403, body = app::wire::ErrorBody)))]
pub async fn list_audit_logs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = audit_filter(&q).map_err(ApiError::invalid_request)?;
    let page = s
        .jobs
        .store()
        .list_audit_logs(&f)
        .await
        .map_err(|e| ApiError::from(crate::service::ServiceError::from(e)))?;
    let meta = ListMeta {
        limit: f.limit,
        offset: 0,
        total: None,
        next_cursor: page.next_cursor,
    };
    Ok((
        StatusCode::OK,
        Json(json!({"data": page.entries, "meta": meta})),
    )
        .into_response())
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
    let (limit, _, cursor) = super::jobs::paging(q, &mut p);
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
                    .description(Some("An operator token (SWITCHYARD_OPERATOR_TOKENS or a token file), or the pages' sign-in cookie. Scopes: jobs:write, jobs:run, workflows:write, workflows:run, services:write, secrets:write, admin (implies all). Listing secrets (GET /api/secrets, key names only) needs secrets:write too; GET /api/audit-logs needs admin. Other reads are open unless SWITCHYARD_PROTECT_READS=true, then any valid token. With no tokens configured the server runs in open local mode (no token needed, loopback only)."))
                    .build(),
            ),
        );
        for rule in crate::domain::auth::RULES {
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
