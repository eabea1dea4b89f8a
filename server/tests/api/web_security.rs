//! The browser cannot be turned against the server (issue 14): the Host allow-list (DNS
//! rebinding), server-side sign-in sessions, the sign-in rate limit, `next=` and the token
//! configuration's checks, on the real app and on both databases.
use std::time::Duration;

use domain::{auth::OperatorTokens, hosts::HostName};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use server::{Settings, settings::AuthSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    auth::{
        ADMIN, BAD, RUNNER, audit, call, no_redirects, prefix, run_binary, sign_in, tokens_json,
        urlencode,
    },
    helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings},
};

fn secured(db: &TestDb, tweak: impl FnOnce(&mut AuthSettings)) -> Settings {
    let mut settings = test_settings(db);
    settings.auth = AuthSettings {
        tokens: OperatorTokens::parse(&tokens_json()).expect("token config"),
        ..AuthSettings::default()
    };
    tweak(&mut settings.auth);
    settings
}

async fn spawn_secured_with(tweak: impl FnOnce(&mut AuthSettings)) -> TestApp {
    let db = TestDb::new().await;
    let settings = secured(&db, tweak);
    spawn_app_with(db, settings).await
}

fn port(app: &TestApp) -> u16 {
    app.address.rsplit(':').next().unwrap().parse().unwrap()
}

/// `GET path` sent to the app (127.0.0.1) naming `host` in the Host header.
async fn get_as(app: &TestApp, host: &str, path: &str) -> reqwest::Response {
    no_redirects()
        .get(app.url(path))
        .header(header::HOST, host)
        .send()
        .await
        .unwrap()
}

async fn assert_refused_host(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{what}");
    let v: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "host_not_allowed", "{what}: {v}");
    assert_eq!(v["error"]["details"], json!([]), "{what}: {v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--allowed-hosts")
            && message.contains("SWITCHYARD_ALLOWED_HOSTS")
            && message.contains("--public-url"),
        "{what}: {message}"
    );
}

/// Sends raw HTTP/1.0 without a Host header; the status line.
async fn status_without_host(app: &TestApp, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port(app)))
        .await
        .unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_requests_are_refused_before_any_handler() {
    // Open local mode: the case a rebinding page goes for.
    let app = spawn_app().await;
    let p = port(&app);
    let evil = format!("rebind.evil.test:{p}");
    let res = app
        .client
        .post(app.url("/api/jobs"))
        .header(header::HOST, &evil)
        .header(header::ORIGIN, format!("http://{evil}"))
        .json(&json!({"slug": "rebound", "name": "R", "entryPoint": "builtin:noop"}))
        .send()
        .await
        .unwrap();
    assert_refused_host(res, "POST /api/jobs").await;
    let (status, v) = app.get_json("/api/jobs/rebound").await;
    assert_eq!(status, 404, "no job was created: {v}");

    // Pages, the event stream, server functions, logs, health and static files alike.
    for path in [
        "/",
        "/runs",
        "/sign-in",
        "/api/events",
        "/api/health",
        "/api/jobs",
        "/api/job-runs/x/logs?follow=true",
        "/metrics",
        "/pkg/switchyard.js",
    ] {
        assert_refused_host(get_as(&app, &evil, path).await, path).await;
    }
    let res = no_redirects()
        .post(app.url("/_sf/whoami"))
        .header(header::HOST, &evil)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_refused_host(res, "/_sf/whoami").await;
    for bad in [
        "",
        "rebind.evil.test:3000, 127.0.0.1",
        "user@127.0.0.1",
        "10.0.0.1",
    ] {
        assert_refused_host(get_as(&app, bad, "/api/health").await, bad).await;
    }
    let line = status_without_host(&app, "/api/health").await;
    assert!(line.contains(" 421"), "no Host at all: {line}");

    // Loopback names and addresses, with or without the port.
    for host in [
        format!("localhost:{p}"),
        format!("127.0.0.1:{p}"),
        format!("[::1]:{p}"),
        "localhost".to_string(),
        "127.0.0.2".to_string(),
    ] {
        let res = get_as(&app, &host, "/api/health").await;
        assert_eq!(res.status(), 200, "{host}");
        let res = get_as(&app, &host, "/runs").await;
        assert_eq!(res.status(), 200, "page via {host}");
    }
    let res = get_as(&app, &format!("localhost:{p}"), "/api/events").await;
    assert_eq!(res.status(), 200);
    drop(res);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_and_the_public_url_host_are_answered() {
    let app = spawn_secured_with(|auth| {
        auth.allowed_hosts = vec![HostName::parse("switchyard.lan").unwrap()];
        auth.public_url = Some("https://ops.example.com/".parse().unwrap());
    })
    .await;
    let p = port(&app);
    for host in [
        format!("switchyard.lan:{p}"),
        "SWITCHYARD.LAN".to_string(),
        "ops.example.com".to_string(),
        format!("ops.example.com:{p}"),
    ] {
        assert_eq!(
            get_as(&app, &host, "/api/health").await.status(),
            200,
            "{host}"
        );
    }
    for host in ["other.lan", "evil.switchyard.lan", "example.com"] {
        assert_refused_host(get_as(&app, host, "/api/health").await, host).await;
    }
}

/// The session cookie a sign-in set, as `name=value`, and the whole Set-Cookie header.
async fn sign_in_cookie(app: &TestApp, token: &str) -> (String, String) {
    let res = sign_in(app, token, Some(&app.address)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set_cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    (
        set_cookie.split(';').next().unwrap().to_string(),
        set_cookie,
    )
}

/// Who the pages' `whoami` server function says the cookie belongs to.
async fn whoami(app: &TestApp, cookie: &str) -> Value {
    let res = app
        .client
        .post(app.url("/_sf/whoami"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header::ORIGIN, &app.address)
        .header(header::COOKIE, cookie)
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The pages' launch form, posted with the cookie from this site: the HTTP status.
async fn launch(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.client
        .post(app.url("/_sf/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header::ORIGIN, &app.address)
        .header(header::COOKIE, cookie)
        .body("slug=session-job&parameters=%7B%7D")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_holds_no_token_and_sign_out_revokes_it() {
    let app = spawn_secured_with(|_| {}).await;
    app.client
        .post(app.url("/api/jobs"))
        .bearer_auth(ADMIN)
        .json(&json!({"slug": "session-job", "name": "S", "entryPoint": "builtin:noop"}))
        .send()
        .await
        .unwrap();
    let (cookie, set_cookie) = sign_in_cookie(&app, RUNNER).await;
    assert!(
        set_cookie.starts_with("switchyard_session="),
        "{set_cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert!(!set_cookie.contains(RUNNER), "the token is in the cookie");
    assert!(!set_cookie.contains(&urlencode(RUNNER)));
    assert!(!set_cookie.contains(&prefix(RUNNER)));
    let secret = cookie.split_once('=').unwrap().1;
    assert_eq!(secret.len(), 43, "32 random bytes, base64url: {secret}");

    // The session works for server functions and pages.
    assert_eq!(whoami(&app, &cookie).await["subject"], "runner");
    assert_eq!(launch(&app, &cookie).await.status(), 200);
    let html = app
        .client
        .get(app.url("/runs"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("signed in as"), "the page knows the operator");
    // Two sign-ins are two sessions.
    let (other, _) = sign_in_cookie(&app, RUNNER).await;
    assert_ne!(other, cookie);

    // The token itself is no cookie (the old `switchyard_token` cookie is gone).
    for old in [
        format!("switchyard_token={RUNNER}"),
        format!("switchyard_session={RUNNER}"),
    ] {
        assert!(whoami(&app, &old).await["subject"].is_null(), "{old}");
        assert_eq!(launch(&app, &old).await.status(), 401, "{old}");
    }

    // Sign-out ends the session: the same cookie is refused afterwards.
    let res = no_redirects()
        .post(app.url("/auth/sign-out"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cleared = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("switchyard_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(whoami(&app, &cookie).await["subject"].is_null());
    let res = launch(&app, &cookie).await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().contains("Max-Age=0")),
        "a stale cookie is cleared"
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_token", "{v}");
    // The other session is untouched.
    assert_eq!(whoami(&app, &other).await["subject"], "runner");

    let entries = audit(&app, "?action=auth.sign_out").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["subject"], "runner");
    assert_eq!(entries[0]["status"], "ok");
    assert_eq!(entries[0]["tokenHashPrefix"], prefix(RUNNER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused() {
    let app = spawn_secured_with(|auth| {
        auth.session_ttl = Duration::from_secs(1);
    })
    .await;
    let page = |cookie: String| {
        let req = no_redirects()
            .get(app.url("/runs"))
            .header(header::COOKIE, cookie);
        async move { req.send().await.unwrap() }
    };
    let (cookie, set_cookie) = sign_in_cookie(&app, RUNNER).await;
    assert!(set_cookie.contains("Max-Age=1"), "{set_cookie}");
    assert_eq!(page(cookie.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let res = page(cookie.clone()).await;
    assert_eq!(
        res.status(),
        303,
        "the page sends the browser to sign in again"
    );
    assert_eq!(
        res.headers()[header::LOCATION],
        "/sign-in?next=%2Fruns&error=session_expired"
    );
    assert!(
        res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "the ended session's cookie is cleared"
    );
    let res = launch(&app, &cookie).await;
    assert_eq!(res.status(), 401);
    let html = app
        .get("/sign-in?next=%2Fruns&error=session_expired")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Your session has ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_leaves_the_configuration() {
    let db = TestDb::new().await;
    let settings = secured(&db, |_| {});
    let app = spawn_app_with(db, settings).await;
    let (runner, _) = sign_in_cookie(&app, RUNNER).await;
    let (admin, _) = sign_in_cookie(&app, ADMIN).await;
    let db = app.shutdown().await;
    // Restart with the runner's token removed.
    let mut settings = secured(&db, |_| {});
    settings.auth.tokens = OperatorTokens::parse(
        &json!([{"subject": "ada", "token": ADMIN, "scopes": ["admin"]}]).to_string(),
    )
    .unwrap();
    let app = spawn_app_with(db, settings).await;
    assert!(whoami(&app, &runner).await["subject"].is_null());
    assert_eq!(whoami(&app, &admin).await["subject"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_cookie_is_host_prefixed_and_secure() {
    let app = spawn_secured_with(|auth| {
        auth.public_url = Some("https://ops.example.com".parse().unwrap());
    })
    .await;
    let form = format!("token={}&next=%2F", urlencode(RUNNER));
    let post = |host: Option<String>, proto: Option<&'static str>| {
        let mut req = no_redirects()
            .post(app.url("/auth/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        let origin = match &host {
            Some(h) => format!("https://{h}"),
            None => app.address.clone(),
        };
        req = req.header(header::ORIGIN, origin);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 303);
            res.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    // Behind a TLS proxy that says so.
    let set_cookie = post(None, Some("https")).await;
    assert!(
        set_cookie.starts_with("__Host-switchyard_session="),
        "{set_cookie}"
    );
    for attr in ["; Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
    assert!(!set_cookie.contains(RUNNER));
    // The `__Host-` cookie signs in as well.
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert_eq!(whoami(&app, &cookie).await["subject"], "runner");
    // Addressed to the https public URL's host.
    let set_cookie = post(Some("ops.example.com".into()), None).await;
    assert!(
        set_cookie.starts_with("__Host-switchyard_session=") && set_cookie.contains("; Secure"),
        "{set_cookie}"
    );
    // Plain HTTP to the loopback address, or a proxy that says http.
    for proto in [None, Some("http")] {
        let set_cookie = post(None, proto).await;
        assert!(
            set_cookie.starts_with("switchyard_session=") && !set_cookie.contains("Secure"),
            "{proto:?}: {set_cookie}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_rate_limited_per_client() {
    let app = spawn_secured_with(|_| {}).await;
    for i in 0..10 {
        let res = sign_in(&app, BAD, Some(&app.address)).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "attempt {}", i + 1);
    }
    // The 11th, even with a good token.
    let res = sign_in(&app, RUNNER, Some(&app.address)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry_after), "{retry_after}");
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    // A browser's form goes back to the sign-in page, which says how long to wait.
    let res = no_redirects()
        .post(app.url("/auth/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .header(header::ORIGIN, &app.address)
        .body(format!("token={}&next=%2Fruns", urlencode(RUNNER)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers().get(header::RETRY_AFTER).is_some());
    let location = res.headers()[header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with("/sign-in?error=rate_limited&retry_after="),
        "{location}"
    );
    let html = app.get(location).await.text().await.unwrap();
    assert!(
        html.contains("Too many sign-in attempts"),
        "the page says so"
    );
    // Bearer requests are not sign-ins: still served.
    let (status, _) = call(&app, Method::GET, "/api/audit-logs", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let limited = audit(&app, "?action=auth.sign_in&status=rate_limited").await;
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert_eq!(limited[0]["statusCode"], 429);
    assert!(limited[0]["ip"].as_str().unwrap().starts_with("127."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_accepts_only_same_origin_paths() {
    let app = spawn_secured_with(|_| {}).await;
    for (next, expected) in [
        ("/%09/evil.test", "/"),
        ("%2F%09%2Fevil.test", "/"),
        ("//evil.test", "/"),
        ("/%5Cevil.test", "/"),
        ("https://evil.test", "/"),
        ("/%0A/evil.test", "/"),
        ("/runs%3Fstatus%3Dfailed", "/runs?status=failed"),
    ] {
        let res = no_redirects()
            .post(app.url("/auth/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(header::ORIGIN, &app.address)
            .body(format!("token={}&next={next}", urlencode(ADMIN)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(res.headers()[header::LOCATION], expected, "{next}");
    }
    // The sign-in page does not carry the bad value into its form either.
    let html = app
        .get("/sign-in?next=%2F%09%2Fevil.test")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("evil.test"), "the page kept the bad next");
    assert!(
        html.contains(r#"name="next" value="/""#),
        "the hidden field says /"
    );
    let html = app.get("/sign-in?next=%2Fruns").await.text().await.unwrap();
    assert!(html.contains(r#"name="next" value="/runs""#));
}

#[test]
fn serve_refuses_short_tokens_empty_token_lists_and_bad_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ["serve", "--workers", "0", "--bind", "127.0.0.1:0"];
    let short = "short-token-31-characters-long!";
    assert_eq!(short.len(), 31);
    let config = json!([{"subject": "a", "token": short, "scopes": ["admin"]}]).to_string();
    let (ok, err) = run_binary(
        dir.path(),
        &serve,
        &[("SWITCHYARD_OPERATOR_TOKENS", &config)],
    );
    assert!(!ok);
    assert!(
        err.contains("/0/token: too short") && err.contains("at least 32 characters"),
        "{err}"
    );
    assert!(!err.contains(short), "the token is not echoed: {err}");

    for empty in ["", "  ", "[]"] {
        let (ok, err) = run_binary(dir.path(), &serve, &[("SWITCHYARD_OPERATOR_TOKENS", empty)]);
        assert!(!ok, "{empty:?} started the server");
        assert!(
            err.contains("SWITCHYARD_OPERATOR_TOKENS") && err.contains("open local mode"),
            "{empty:?}: {err}"
        );
    }
    let file = dir.path().join("tokens.json");
    std::fs::write(&file, "[]").unwrap();
    let (ok, err) = run_binary(
        dir.path(),
        &serve,
        &[("SWITCHYARD_OPERATOR_TOKENS_FILE", file.to_str().unwrap())],
    );
    assert!(!ok);
    assert!(
        err.contains("tokens.json") && err.contains("empty list"),
        "{err}"
    );

    let (ok, err) = run_binary(
        dir.path(),
        &serve,
        &[("SWITCHYARD_ALLOWED_HOSTS", "ok.example,not a host")],
    );
    assert!(!ok);
    assert!(
        err.contains("SWITCHYARD_ALLOWED_HOSTS") && err.contains("\"not a host\""),
        "{err}"
    );
    let (ok, err) = run_binary(
        dir.path(),
        &serve,
        &[("SWITCHYARD_PUBLIC_URL", "ftp://ops.example.com")],
    );
    assert!(!ok);
    assert!(err.contains("scheme must be http or https"), "{err}");
}
