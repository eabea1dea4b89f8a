//! A seeded fuzz of the whole REST API (issue 15: "no request, however malformed, yields a 5xx
//! or drops the connection"), on whichever database the suite runs on. A fixed-seed generator
//! sends a few thousand requests across every route and method of `http::router`, in open mode
//! so writes are reached: hostile bodies (wrong types, huge numbers, deep nesting, U+0000, lone
//! surrogate escapes, invalid UTF-8, very long strings, unknown fields, empty bodies, wrong
//! content types), hostile path segments and query values. Every answer must come (no dropped
//! connection), be below 500, and every error must be the API's JSON `{"error": {...}}`.
//!
//! A failure prints the request that caused it; the same seed replays the same requests.
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with, test_settings};

/// Requests per run: a few seconds on either database.
const REQUESTS: usize = 1500;
/// Requests in flight at once.
const CONCURRENCY: usize = 4;
const SEED: u64 = 0x5717_c4a2_d000_0015;

/// The seed and the number of requests; `FUZZ_SEED` and `FUZZ_REQUESTS` explore further
/// (the suite runs the fixed ones).
fn plan() -> (u64, usize) {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (
        env("FUZZ_SEED").unwrap_or(SEED),
        env("FUZZ_REQUESTS").unwrap_or(REQUESTS as u64) as usize,
    )
}

/// SplitMix64: small, deterministic across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Route templates of `http::router` with the methods each answers.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/health", &["GET"]),
    ("/api/ready", &["GET"]),
    ("/api/openapi.json", &["GET"]),
    ("/api/metrics", &["GET"]),
    ("/api/events", &["GET"]),
    ("/api/jobs", &["GET", "POST"]),
    ("/api/jobs/{slug}", &["GET", "PATCH", "DELETE"]),
    ("/api/jobs/{slug}/versions", &["GET"]),
    ("/api/jobs/{slug}/run", &["POST"]),
    ("/api/jobs/{slug}/runs", &["GET"]),
    ("/api/job-runs", &["GET"]),
    ("/api/job-runs/{id}", &["GET", "PATCH"]),
    ("/api/job-runs/{id}/logs", &["GET"]),
    ("/api/job-runs/{id}/retry", &["POST"]),
    ("/api/workflows", &["GET", "POST"]),
    ("/api/workflows/{wslug}", &["GET", "PATCH", "DELETE"]),
    ("/api/workflows/{wslug}/versions", &["GET"]),
    ("/api/workflows/{wslug}/run", &["POST"]),
    ("/api/workflows/{wslug}/runs", &["GET"]),
    ("/api/workflow-runs", &["GET"]),
    ("/api/workflow-runs/{wid}", &["GET", "PATCH"]),
    ("/api/workflow-runs/{wid}/steps", &["GET"]),
    ("/api/workflow-runs/{wid}/retry", &["POST"]),
    ("/api/workflow-runs/{wid}/rerun", &["POST"]),
    ("/api/services", &["GET", "POST"]),
    ("/api/services/{sslug}", &["GET", "PATCH"]),
    ("/api/audit-logs", &["GET"]),
    ("/api/secrets", &["GET"]),
    ("/api/secrets/{key}", &["GET", "PUT", "DELETE"]),
    ("/metrics", &["GET"]),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Path segments no route expects.
const HOSTILE_SEGMENTS: &[&str] = &[
    "%00",
    "a%00b",
    "%ff",
    "%C0%80",
    "%ED%A0%80",
    "%",
    "%zz",
    "..",
    "%2e%2e",
    "a%2Fb",
    "%20",
    "UPPER",
    "-",
    "_",
    "%F0%9F%92%A5",
    "\u{00fc}ber",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "0190b0a0-0000-7000-8000-00000000000",
    "0190b0a0-0000-7000-8000-0000000000000",
    "not-a-uuid",
    "1",
    "-1",
    "99999999999999999999999",
    "%0A",
    "%0D%0A",
    "%09",
    "%22",
    "%27%3B--",
    "%5C",
];

/// Query parameter names: every list's, and some no list takes.
const QUERY_NAMES: &[&str] = &[
    "limit", "offset", "cursor", "status", "q", "job", "workflow", "follow", "tail", "after",
    "topics", "action", "subject", "since", "until", "nope", "",
];

const QUERY_VALUES: &[&str] = &[
    "%00",
    "a%00",
    "%ff",
    "%ED%A0%80",
    "",
    "0",
    "1",
    "-1",
    "100",
    "101",
    "1.5",
    "1e3",
    "NaN",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "true",
    "false",
    "yes",
    "succeeded,failed",
    "running,,",
    "canceled%2C%00",
    "nope",
    "job.run.*",
    "*",
    "%25",
    "%2500",
    "2024-01-01T00:00:00Z",
    "2024-13-45T99:99:99Z",
    "00000000-0000-0000-0000-000000000000",
    "not-a-cursor",
    "%F0%9F%92%A5",
    "+",
    "%2B",
    "%26",
    "%3D",
    "repository-ingest",
];

/// Values of the wrong shape or out of range, for any field.
fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(24) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(i64::MAX),
        5 => json!(i64::MIN),
        6 => json!(u64::MAX),
        7 => json!(1e308),
        8 => json!(-1e308),
        9 => json!(1.5),
        10 => json!(""),
        11 => json!("\u{0}"),
        12 => json!("a\u{0}b"),
        13 => json!("x".repeat(10_000)),
        14 => json!([]),
        15 => json!({}),
        16 => json!([1, "two", null, {"three": [3]}]),
        17 => json!({"\u{0}": "\u{0}"}),
        18 => nested(rng.below(120) + 1),
        19 => json!("{{ steps.nope.result }}"),
        20 => json!({"secret": {"source": "store", "key": "NOPE"}}),
        21 => json!("\u{fffd}\u{1F4A5}\u{202e}"),
        22 => json!("99999999999999999999999999999"),
        _ => json!(["\u{0}", {"k\u{0}": 1}]),
    }
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..depth {
        // Built by hand: `json!` with an expression serializes it again, recursively.
        v = if i % 2 == 0 {
            Value::Array(vec![v])
        } else {
            Value::Object([("d".to_string(), v)].into_iter().collect())
        };
    }
    v
}

/// A plausible body for `route`, which the mutations below then spoil.
fn plausible_body(rng: &mut Rng, route: &str, method: &str) -> Value {
    let slug = format!("fz-{}", rng.below(6));
    match (route, method) {
        ("/api/jobs", "POST") | ("/api/jobs/{slug}", "PATCH") => json!({
            "slug": slug, "name": "Fuzz", "version": rng.below(4),
            "type": *rng.pick(&["batch", "manual", "service-triggered", "nope"]),
            "entryPoint": *rng.pick(&["builtin:noop", "builtin:fail", "builtin:sleep", "builtin:nope"]),
            "parametersSchema": {"type": "object", "properties": {"x": {"type": "string"}}},
            "defaultParameters": {"x": "d"}, "timeoutMs": 5000,
            "retryPolicy": {"maxAttempts": 1, "strategy": "none"},
            "metadata": {"tags": ["fuzz"]}
        }),
        ("/api/jobs/{slug}/run", _) => json!({
            "parameters": {"x": "p", "durationMs": 10, "message": "m"},
            "timeoutMs": 5000, "maxAttempts": 1, "context": {"c": 1},
            "idempotencyKey": format!("k{}", rng.below(20)), "delayMs": 0
        }),
        ("/api/job-runs/{id}", "PATCH")
        | ("/api/workflow-runs/{wid}", "PATCH")
        | ("/api/services/{sslug}", "PATCH") => {
            json!({"status": *rng.pick(&["canceled", "running", "healthy", "degraded", "nope"])})
        }
        ("/api/workflows", "POST") | ("/api/workflows/{wslug}", "PATCH") => json!({
            "slug": format!("fw-{}", rng.below(6)), "name": "Fuzz flow", "version": 1,
            "description": "d", "parametersSchema": {"type": "object"},
            "defaultParameters": {}, "metadata": {},
            "steps": [
                {"id": "a", "name": "A", "jobSlug": "fz-noop", "parameters": {"x": "{{ parameters.x }}"}},
                {"id": "b", "jobSlug": "fz-noop", "dependsOn": ["a"], "onFailure": "continue",
                 "retryPolicy": {"maxAttempts": 2}, "timeoutMs": 5000,
                 "parameters": {"y": "{{ steps.a.result.x }}"}},
                {"id": "c", "type": "service", "serviceSlug": "fz-svc", "dependsOn": ["b"],
                 "requireHealthy": false, "captureResponse": true, "storeResponseAs": "r",
                 "request": {"method": "GET", "path": "/x", "query": {}, "headers": {}, "body": null}}
            ],
            "triggers": [{"type": "manual"}],
            "provider": "native"
        }),
        ("/api/workflows/{wslug}/run", _) => json!({
            "parameters": {"x": "p"}, "triggeredBy": "fuzz", "trigger": {"type": "manual"},
            "idempotencyKey": format!("w{}", rng.below(20))
        }),
        ("/api/services", "POST") => json!({
            "slug": format!("fs-{}", rng.below(6)), "displayName": "Fuzz", "kind": "http",
            "baseUrl": "http://127.0.0.1:9", "healthPath": "/health",
            "headers": {"X-Token": "t"}, "metadata": {}
        }),
        ("/api/secrets/{key}", "PUT") => json!({"value": "v", "version": rng.below(3)}),
        _ => json!({}),
    }
}

/// Spoils a body: a field gets a hostile value, goes missing, or gains a stranger.
fn mutate(rng: &mut Rng, body: &mut Value) {
    for _ in 0..=rng.below(3) {
        // A random object or array inside the body, by JSON pointer.
        let mut pointer = String::new();
        let mut at = &*body;
        for _ in 0..rng.below(4) {
            let next = match at {
                Value::Object(m) if !m.is_empty() => {
                    let (k, v) = m.iter().nth(rng.below(m.len())).unwrap();
                    Some((k.replace('~', "~0").replace('/', "~1"), v))
                }
                Value::Array(a) if !a.is_empty() => {
                    let i = rng.below(a.len());
                    Some((i.to_string(), &a[i]))
                }
                _ => None,
            };
            match next {
                Some((segment, v)) if v.is_object() || v.is_array() => {
                    pointer = format!("{pointer}/{segment}");
                    at = v;
                }
                _ => break,
            }
        }
        let Some(target) = body.pointer_mut(&pointer) else {
            continue;
        };
        match target {
            Value::Object(m) => match rng.below(3) {
                0 if !m.is_empty() => {
                    let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
                    m.insert(k, hostile_value(rng));
                }
                1 if !m.is_empty() => {
                    let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
                    m.remove(&k);
                }
                _ => {
                    let k = *rng.pick(&["unknown", "\u{0}", "id", "createdAt", "x\u{0}y", ""]);
                    m.insert(k.to_string(), hostile_value(rng));
                }
            },
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a[i] = hostile_value(rng);
            }
            other => *other = hostile_value(rng),
        }
    }
}

/// Raw bodies no JSON parser accepts, or only just.
fn raw_body(rng: &mut Rng) -> Vec<u8> {
    let raw: &[&[u8]] = &[
        b"",
        b"   \n\t",
        b"{",
        b"}",
        b"[",
        b"{\"slug\": \"x\",}",
        b"{\"name\": \"\\ud800\"}",
        b"{\"name\": \"\\udc00\\ud800\"}",
        b"{\"name\": \"\\ud83d\"}",
        b"{\"name\": \"\\u0000\"}",
        b"{\"\\u0000\": \"\\u0000\"}",
        b"{\"parameters\": {\"a\": \"\\u0000\"}}",
        b"{\"name\": \"\xff\xfe\"}",
        b"\xef\xbb\xbf{}",
        b"\xc0\x80",
        b"{\"value\": \"\xed\xa0\x80\"}",
        b"NaN",
        b"{\"timeoutMs\": NaN}",
        b"{\"timeoutMs\": 1e400}",
        b"{\"version\": 123456789012345678901234567890}",
        b"{\"version\": -0}",
        b"null",
        b"true",
        b"\"just a string\"",
        b"12",
        b"[1,2,3]",
        b"{\"a\":1,\"a\":2}",
        b"{\"slug\": \"x\"} trailing",
        b"\x00\x00\x00",
    ];
    match rng.below(raw.len() + 3) {
        n if n < raw.len() => raw[n].to_vec(),
        n if n == raw.len() => {
            // Nesting beyond the parser's depth limit.
            let depth = 200 + rng.below(2000);
            let mut s = "[".repeat(depth).into_bytes();
            s.extend("]".repeat(depth).into_bytes());
            s
        }
        n if n == raw.len() + 1 => {
            // Past the body limit (64 KiB in tests).
            let mut s = b"{\"name\": \"".to_vec();
            s.extend(std::iter::repeat_n(b'x', 70 * 1024));
            s.extend(b"\"}");
            s
        }
        _ => {
            // Random bytes.
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        }
    }
}

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/merge-patch+json"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("application/json; charset=latin1"),
    Some("a/b/c"),
    Some(""),
    None,
];

/// Headers the handlers read, with values they do not expect.
const HEADERS: &[(&str, &str)] = &[
    ("idempotency-key", ""),
    ("idempotency-key", "switchyard:schedule:x"),
    ("idempotency-key", "k1"),
    ("last-event-id", "0"),
    ("last-event-id", "-1"),
    ("last-event-id", "abc"),
    ("last-event-id", "99999999999999999999999"),
    ("accept", "text/html"),
    ("accept", "text/plain"),
    ("accept", "*/*;q=nope"),
    ("accept-encoding", "br, gzip"),
    ("accept-encoding", "identity;q=0"),
    ("if-none-match", "\"x\""),
    ("range", "bytes=5-1"),
    ("cookie", "switchyard_session=nope"),
    ("authorization", "Bearer nope"),
    ("authorization", "Basic Zm9vOmJhcg=="),
    ("origin", "http://evil.example"),
    ("x-forwarded-proto", "https"),
];

/// One request to send.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
}

/// The fixtures' names, filled into route templates.
struct Names {
    run_ids: Vec<String>,
    workflow_run_ids: Vec<String>,
}

fn segment(rng: &mut Rng, kind: &str, names: &Names) -> String {
    if rng.chance(35) {
        let s = *rng.pick(HOSTILE_SEGMENTS);
        return if rng.chance(5) {
            // A very long segment.
            s.repeat(500)
        } else {
            s.to_string()
        };
    }
    match kind {
        "{slug}" => rng
            .pick(&["fz-noop", "fz-sleep", "fz-0", "fz-1", "FZ-NOOP", "nope"])
            .to_string(),
        "{wslug}" => rng.pick(&["fz-flow", "fw-0", "fw-1", "nope"]).to_string(),
        "{sslug}" => rng.pick(&["fz-svc", "fs-0", "nope"]).to_string(),
        "{key}" => rng.pick(&["FZ_KEY", "fz.key-2", "NOPE"]).to_string(),
        "{id}" => rng.pick(&names.run_ids).clone(),
        "{wid}" => rng.pick(&names.workflow_run_ids).clone(),
        _ => unreachable!("{kind}"),
    }
}

fn generate(rng: &mut Rng, names: &Names) -> Req {
    let (route, methods) = *rng.pick(ROUTES);
    let method = if rng.chance(8) {
        *rng.pick(METHODS)
    } else {
        *rng.pick(methods)
    };
    let mut path = String::new();
    for part in route.split('/').skip(1) {
        path.push('/');
        if part.starts_with('{') {
            path.push_str(&segment(rng, part, names));
        } else {
            path.push_str(part);
        }
    }
    if rng.chance(40) {
        let mut pairs = Vec::new();
        for _ in 0..=rng.below(4) {
            let name = *rng.pick(QUERY_NAMES);
            let value = if rng.chance(3) {
                "%00".repeat(1000)
            } else {
                rng.pick(QUERY_VALUES).to_string()
            };
            pairs.push(format!("{name}={value}"));
        }
        path.push('?');
        path.push_str(&pairs.join("&"));
    }
    let writes = !matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE");
    let body = if writes || rng.chance(5) {
        Some(if rng.chance(25) {
            raw_body(rng)
        } else {
            let mut body = plausible_body(rng, route, method);
            if rng.chance(80) {
                mutate(rng, &mut body);
            }
            serde_json::to_vec(&body).unwrap()
        })
    } else {
        None
    };
    let content_type = match body {
        Some(_) => *rng.pick(CONTENT_TYPES),
        None => None,
    };
    let mut headers = Vec::new();
    if rng.chance(20) {
        let (name, value) = *rng.pick(HEADERS);
        headers.push((name, value.to_string()));
    }
    if rng.chance(2) {
        headers.push(("idempotency-key", "k".repeat(300)));
    }
    Req {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        content_type,
        headers,
        body,
    }
}

/// Sends one request and checks its answer; `Err` says what was wrong.
async fn check(client: &reqwest::Client, base: &str, req: &Req) -> Result<u16, String> {
    let mut builder = client
        .request(req.method.clone(), format!("{base}{}", req.path))
        .timeout(Duration::from_secs(20));
    if let Some(ct) = req.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    for (name, value) in &req.headers {
        builder = builder.header(*name, value);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let res = builder
        .send()
        .await
        .map_err(|e| format!("no answer (connection dropped?): {e:?}"))?;
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let streams = content_type.starts_with("text/event-stream")
        || res
            .headers()
            .get(header::CACHE_CONTROL)
            .is_some_and(|v| v.to_str().unwrap_or_default().contains("no-transform"));
    if status.is_server_error() {
        let body = res.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    if streams && status.is_success() {
        // An event stream or a log follow: the headers came; hang up.
        return Ok(status.as_u16());
    }
    let encoded = res.headers().contains_key(header::CONTENT_ENCODING);
    let body = tokio::time::timeout(Duration::from_secs(20), res.bytes())
        .await
        .map_err(|_| "the body never ended".to_string())?
        .map_err(|e| format!("{status}: the body broke off: {e:?}"))?;
    if status.is_client_error() && req.method != Method::HEAD && req.path.starts_with("/api") {
        if !content_type.starts_with("application/json") {
            return Err(format!(
                "{status} is not JSON ({content_type:?}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if encoded {
            // Asked for with `Accept-Encoding`: compressed (this client does not inflate).
            return Ok(status.as_u16());
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{status}: body is not JSON ({e}): {body:?}"))?;
        let e = &v["error"];
        let shaped = e["code"].is_string()
            && e["message"].is_string()
            && e["details"].as_array().is_some_and(|d| {
                d.iter()
                    .all(|d| d["path"].is_string() && d["message"].is_string())
            });
        if !shaped {
            return Err(format!("{status}: not an error body: {v}"));
        }
    }
    Ok(status.as_u16())
}

/// Jobs, a workflow, a service, a secret and a few runs for the routes to name.
async fn fixtures(app: &TestApp) -> Names {
    app.job("fz-noop", "builtin:noop", json!({})).await;
    app.job("fz-sleep", "builtin:sleep", json!({"timeoutMs": 5000}))
        .await;
    let ok = |what: &str, (status, v): (u16, Value)| {
        assert!(status < 300, "fixture {what}: {status} {v}");
        v["data"].clone()
    };
    ok(
        "service",
        app.post_json(
            "/api/services",
            &json!({"slug": "fz-svc", "displayName": "S", "kind": "http", "baseUrl": "http://127.0.0.1:9"}),
        )
        .await,
    );
    ok(
        "workflow",
        app.post_json(
            "/api/workflows",
            &json!({"slug": "fz-flow", "name": "F", "steps": [
                {"id": "a", "jobSlug": "fz-noop"},
                {"id": "b", "jobSlug": "fz-sleep", "dependsOn": ["a"], "parameters": {"durationMs": 50}}]}),
        )
        .await,
    );
    ok(
        "secret",
        app.send_json(Method::PUT, "/api/secrets/FZ_KEY", &json!({"value": "v"}))
            .await,
    );
    let mut run_ids = Vec::new();
    for body in [
        json!({}),
        json!({"delayMs": 3_600_000}),
        json!({"parameters": {"durationMs": 60_000}}),
    ] {
        let slug = if body.get("parameters").is_some() {
            "fz-sleep"
        } else {
            "fz-noop"
        };
        run_ids.push(
            app.run(slug, body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut workflow_run_ids = Vec::new();
    for _ in 0..2 {
        let run = ok(
            "workflow run",
            app.post_json("/api/workflows/fz-flow/run", &json!({}))
                .await,
        );
        workflow_run_ids.push(run["id"].as_str().unwrap().to_string());
    }
    Names {
        run_ids,
        workflow_run_ids,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_every_route_no_5xx_and_json_errors() {
    let db = crate::helpers::TestDb::new().await;
    let mut settings = test_settings(&db);
    // Runs the fuzz starts execute, but keep the machine for the requests.
    settings.worker.concurrency = 4;
    let app = spawn_app_with(db, settings).await;
    let names = fixtures(&app).await;

    let (seed, count) = plan();
    let mut rng = Rng(seed);
    let requests: Vec<Req> = (0..count).map(|_| generate(&mut rng, &names)).collect();
    let started = std::time::Instant::now();
    let client = app.client.clone();
    let base = app.address.clone();
    let outcomes: Vec<(usize, Result<u16, String>)> =
        futures::stream::iter(requests.iter().enumerate())
            .map(|(i, req)| {
                let client = client.clone();
                let base = base.clone();
                async move { (i, check(&client, &base, req).await) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    let mut failures = Vec::new();
    for (i, outcome) in outcomes {
        match outcome {
            Ok(status) => *by_status.entry(status).or_default() += 1,
            Err(why) => {
                let req = &requests[i];
                let body = req
                    .body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned());
                failures.push(format!(
                    "#{i} {} {} (content-type {:?}, headers {:?}) body {:?}\n    -> {why}",
                    req.method,
                    &req.path[..req.path.len().min(300)],
                    req.content_type,
                    req.headers,
                    body
                ));
            }
        }
    }
    eprintln!(
        "fuzz: {count} requests (seed {seed:#x}) in {:?} on {}; answers by status: {by_status:?}",
        started.elapsed(),
        if app.db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    assert!(
        failures.is_empty(),
        "{} of {count} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The server still answers, and the fuzz reached the writes.
    let (status, _) = app.get_json("/api/health").await;
    assert_eq!(status, 200);
    for ok in [200, 201, 202] {
        assert!(
            by_status.contains_key(&ok),
            "no {ok} answer: the fuzz never got that far: {by_status:?}"
        );
    }
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `conn`: the head.
async fn read_response(conn: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(head);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// hyper closes a connection after answering a request whose body was not read (unless all of
/// it had arrived), so such an answer must say `Connection: close`, else a client reusing the
/// connection loses its next request (the fuzz saw that as a broken pipe). An answer that read
/// the body keeps the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_ends_its_connection_openly() {
    use tokio::io::AsyncWriteExt;
    let app = crate::helpers::spawn_app().await;
    let authority = app.address.trim_start_matches("http://").to_string();
    let job = r#"{"slug": "keep", "name": "K", "entryPoint": "builtin:noop"}"#;
    for (method, path, body, kept) in [
        ("DELETE", "/api/jobs/%00", "{}", false),
        ("DELETE", "/api/health", "{}", false),
        ("POST", "/api/nope", "{}", false),
        ("GET", "/api/jobs?limit=%00", "{}", false),
        ("POST", "/api/jobs", job, true),
        ("GET", "/api/health", "", true),
    ] {
        let what = format!("{method} {path} {body:?}");
        let mut conn = tokio::net::TcpStream::connect(&authority).await.unwrap();
        conn.set_nodelay(true).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // The body comes later, as it may from any client: the server may answer first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = conn.write_all(body.as_bytes()).await;
        let first = read_response(&mut conn)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        let closes = first.lines().any(|l| l == "connection: close");
        if kept {
            assert!(!closes, "{what}: {first}");
            let again = format!("GET /api/health HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            conn.write_all(again.as_bytes()).await.unwrap();
            let second = read_response(&mut conn).await;
            assert!(
                second.is_some_and(|h| h.starts_with("http/1.1 200")),
                "{what}: the connection was kept for the next request"
            );
        } else {
            assert!(
                closes,
                "{what}: the answer says the connection ends: {first}"
            );
        }
    }
}
