//! API contract tests (api.md "Conventions", "Job definitions", "Job runs", "Events",
//! "Operations"): definitions, runs, validation, errors, paging, events, OpenAPI.
use std::{collections::HashSet, pin::Pin, time::Duration};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use reqwest::{Method, header};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{TestApp, spawn_app};

const JOB_KEYS: &[&str] = &[
    "id",
    "slug",
    "name",
    "version",
    "type",
    "entryPoint",
    "parametersSchema",
    "defaultParameters",
    "timeoutMs",
    "retryPolicy",
    "metadata",
    "createdAt",
    "updatedAt",
];

const RUN_KEYS: &[&str] = &[
    "id",
    "jobDefinitionId",
    "jobSlug",
    "jobVersion",
    "status",
    "parameters",
    "result",
    "errorMessage",
    "logsUrl",
    "metrics",
    "context",
    "timeoutMs",
    "attempt",
    "maxAttempts",
    "trigger",
    "workflowRunId",
    "workflowStepId",
    "durationMs",
    "scheduledAt",
    "startedAt",
    "completedAt",
    "createdAt",
    "updatedAt",
];

// ---------------------------------------------------------------------------------------------
// helpers

/// Asserts the object has exactly `keys`.
fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let got: HashSet<&str> = obj.keys().map(String::as_str).collect();
    let want: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(got, want, "fields of {v}");
}

/// A timestamp field: RFC 3339, UTC.
fn ts(v: &Value) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {v}"));
    assert!(s.ends_with('Z'), "timestamp not in UTC: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
        .with_timezone(&Utc)
}

fn assert_uuid(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("id expected, got {v}"));
    uuid::Uuid::parse_str(s).unwrap_or_else(|e| panic!("not a UUID {s}: {e}"));
}

/// Checks the api.md error shape: `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
fn assert_error_shape(body: &Value) {
    let err = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert!(
        err["code"].as_str().is_some_and(|c| !c.is_empty()),
        "code: {body}"
    );
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    let details = err["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details must be an array: {body}"));
    for d in details {
        let path = d["path"]
            .as_str()
            .unwrap_or_else(|| panic!("detail without path: {body}"));
        assert!(
            path.is_empty() || path.starts_with('/'),
            "not a JSON pointer: {path:?}"
        );
        assert!(
            d["message"].as_str().is_some_and(|m| !m.is_empty()),
            "detail without message: {body}"
        );
    }
}

/// Asserts an error response and returns the pointers of its details.
#[track_caller]
fn expect_error(status: u16, body: &Value, want_status: u16, want_code: &str) -> Vec<String> {
    assert_eq!(status, want_status, "{body}");
    assert_error_shape(body);
    assert_eq!(body["error"]["code"], want_code, "{body}");
    paths(body)
}

fn paths(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn assert_has_paths(got: &[String], want: &[&str]) {
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w} in {got:?}");
    }
}

/// Sends a request with a raw body; returns status, headers and the body parsed as JSON (or
/// `Value::String` when it is not JSON).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.request(method, app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: the connection failed: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res
        .text()
        .await
        .unwrap_or_else(|e| panic!("{path}: reading the body failed: {e}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app
        .client
        .delete(app.url(path))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

/// Starts a run with the Idempotency-Key header.
async fn run_with_header(app: &TestApp, slug: &str, key: &str, body: &Value) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(&format!("/api/jobs/{slug}/run")))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: Option<i64>,
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn id(&self) -> i64 {
        self.id
            .unwrap_or_else(|| panic!("event without id: {self:?}"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {self:?}"))
    }

    fn run_id(&self) -> Option<String> {
        self.json()["data"]["run"]["id"]
            .as_str()
            .map(str::to_string)
    }
}

/// A minimal SSE reader over a streamed response body: blocks are separated by a blank line,
/// fields are `id:`, `event:`, `data:` (several data lines join with `\n`), `:` starts a comment.
struct SseReader {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buf: Vec<u8>,
}

impl SseReader {
    async fn connect(app: &TestApp, path: &str, last_event_id: Option<i64>) -> SseReader {
        let mut req = app
            .client
            .get(app.url(path))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("the event stream answers")
            .expect("request");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ct.starts_with("text/event-stream"), "content type {ct:?}");
        SseReader {
            body: Box::pin(res.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: Vec::new(),
        }
    }

    fn parse_block(block: &str) -> Option<SseEvent> {
        let mut ev = SseEvent {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut has_data = false;
        for line in block.split('\n') {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => {
                    ev.id = Some(
                        value
                            .parse()
                            .unwrap_or_else(|_| panic!("non-numeric id {value:?}")),
                    )
                }
                "event" => ev.event = Some(value.to_string()),
                "data" => {
                    if has_data {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        (has_data || ev.event.is_some()).then_some(ev)
    }

    /// The next event; panics once `deadline` passes.
    async fn next(&mut self, deadline: Instant) -> SseEvent {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 event stream");
                if let Some(ev) = Self::parse_block(&text) {
                    return ev;
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no complete event before the deadline; buffered: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                });
            match chunk {
                Some(Ok(bytes)) => self.buf.extend(bytes.into_iter().filter(|b| *b != b'\r')),
                Some(Err(e)) => panic!("event stream failed: {e}"),
                None => panic!("event stream ended"),
            }
        }
    }

    /// Reads events until `done` holds for one; returns all of them (that one included).
    /// Checks on the way that ids increase and that `data` is `{"type" = event, "data"}`.
    async fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<SseEvent> = Vec::new();
        loop {
            let ev = self.next(deadline).await;
            if let Some(prev) = out.last() {
                assert!(
                    ev.id() > prev.id(),
                    "ids must increase: {prev:?} then {ev:?}"
                );
            }
            let data = ev.json();
            assert_eq!(
                data["type"].as_str(),
                ev.event.as_deref(),
                "type and event line differ: {ev:?}"
            );
            assert!(
                data["data"].is_object(),
                "data.data must be an object: {ev:?}"
            );
            let stop = done(&ev);
            out.push(ev);
            if stop {
                return out;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// job definitions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_echoes_every_field() {
    let app = spawn_app().await;
    let body = json!({
        "slug": "full-job", "name": "Full job", "version": 3, "type": "manual",
        "entryPoint": "builtin:noop",
        "parametersSchema": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
        "defaultParameters": {"a": 1}, "timeoutMs": 5000,
        "retryPolicy": {"maxAttempts": 3, "strategy": "fixed", "initialDelayMs": 100, "maxDelayMs": 1000, "jitter": "equal"},
        "metadata": {"tags": ["x"], "owner": "ops"}
    });
    let (status, v) = app.post_json("/api/jobs", &body).await;
    assert_eq!(status, 201, "{v}");
    let job = &v["data"];
    assert_keys(job, JOB_KEYS);
    for (k, want) in body.as_object().unwrap() {
        assert_eq!(&job[k], want, "field {k}");
    }
    assert_uuid(&job["id"]);
    let created = ts(&job["createdAt"]);
    assert_eq!(created, ts(&job["updatedAt"]));
    assert!(
        (Utc::now() - created).num_seconds().abs() < 60,
        "createdAt {created}"
    );

    // Reads return the same document.
    let (status, got) = app.get_json("/api/jobs/full-job").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(&got["data"]["job"], job);
    let (status, list) = app.get_json("/api/jobs").await;
    assert_eq!(status, 200);
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["slug"] == "full-job")
        .cloned();
    assert_eq!(listed.as_ref(), Some(job));

    // A minimal definition gets every field too, with its defaults.
    let (status, v) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "tiny", "name": "Tiny", "entryPoint": "builtin:noop"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let tiny = &v["data"];
    assert_keys(tiny, JOB_KEYS);
    for k in JOB_KEYS {
        assert!(!tiny[k].is_null(), "{k} is null in {tiny}");
    }
    assert_eq!(tiny["version"], 1);
    assert_eq!(tiny["type"], "batch");
    assert_eq!(tiny["timeoutMs"], 600_000);
    assert_eq!(tiny["defaultParameters"], json!({}));
    assert_eq!(tiny["metadata"], json!({}));
    assert!(tiny["parametersSchema"].is_object(), "{tiny}");
    assert_keys(
        &tiny["retryPolicy"],
        &[
            "maxAttempts",
            "strategy",
            "initialDelayMs",
            "maxDelayMs",
            "jitter",
        ],
    );
    assert_eq!(tiny["retryPolicy"]["maxAttempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slugs_are_case_insensitive() {
    let app = spawn_app().await;
    let (status, v) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "MyJob", "name": "Mine", "entryPoint": "builtin:noop"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["slug"], "myjob");
    let id = id_of(&v["data"]);

    for path in ["/api/jobs/MYJOB", "/api/jobs/myjob", "/api/jobs/MyJoB"] {
        let (status, got) = app.get_json(path).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got["data"]["job"]["id"], id.as_str());
    }
    let (status, versions) = app.get_json("/api/jobs/MYJOB/versions").await;
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions["data"].as_array().unwrap().len(), 1);

    // Re-posting in another case is the same job: a replace, not a second definition.
    let (status, v) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "MYJOB", "name": "Mine again", "entryPoint": "builtin:noop"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["id"], id.as_str());
    let (_, list) = app.get_json("/api/jobs").await;
    let count = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["slug"] == "myjob")
        .count();
    assert_eq!(count, 1, "{list}");

    let run = app.run("MyJoB", json!({})).await;
    assert_eq!(run["jobSlug"], "myjob");
    let (status, runs) = app.get_json("/api/jobs/MYJOB/runs").await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(ids(&runs["data"]), vec![id_of(&run)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_replace_and_conflict() {
    let app = spawn_app().await;
    let def = |version: i64, name: &str| json!({"slug": "versioned", "name": name, "version": version, "entryPoint": "builtin:noop"});
    let (status, v1) = app.post_json("/api/jobs", &def(1, "One")).await;
    assert_eq!(status, 201, "{v1}");
    let id = id_of(&v1["data"]);
    let created = ts(&v1["data"]["createdAt"]);

    // Same version: replaced.
    let (status, again) = app.post_json("/api/jobs", &def(1, "One again")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["name"], "One again");
    assert_eq!(again["data"]["id"], id.as_str());
    assert_eq!(ts(&again["data"]["createdAt"]), created);
    assert!(ts(&again["data"]["updatedAt"]) >= ts(&v1["data"]["updatedAt"]));

    // Higher version: replaced.
    let (status, v2) = app.post_json("/api/jobs", &def(2, "Two")).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["data"]["version"], 2);
    assert_eq!(v2["data"]["id"], id.as_str());
    // A run started right after a change uses the new version (definitions are cached for
    // starting runs, and a change evicts them at once).
    let run_v1 = app.run("versioned", json!({})).await;
    assert_eq!(run_v1["jobVersion"], 2);
    let (status, _) = app.post_json("/api/jobs", &def(3, "Three")).await;
    assert_eq!(status, 200);
    let run_v3 = app.run("versioned", json!({})).await;
    assert_eq!(run_v3["jobVersion"], 3, "{run_v3}");

    // Lower version: conflict, and nothing changes.
    let (status, lower) = app.post_json("/api/jobs", &def(1, "Back to one")).await;
    expect_error(status, &lower, 409, "conflict");
    let (_, current) = app.get_json("/api/jobs/versioned").await;
    assert_eq!(current["data"]["job"]["version"], 3);
    assert_eq!(current["data"]["job"]["name"], "Three");

    // Every version stays readable, newest first.
    let (status, versions) = app.get_json("/api/jobs/versioned/versions").await;
    assert_eq!(status, 200, "{versions}");
    let list = versions["data"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{versions}");
    assert_eq!(list[0]["version"], 3);
    assert_eq!(list[1]["version"], 2);
    assert_eq!(list[1]["definition"]["name"], "Two");
    assert_eq!(list[1]["definition"]["version"], 2);
    assert_eq!(list[2]["version"], 1);
    assert_eq!(list[2]["definition"]["name"], "One again");
    assert_eq!(list[2]["definition"]["version"], 1);
    for v in list {
        ts(&v["createdAt"]);
        assert_keys(&v["definition"], JOB_KEYS);
    }

    let (status, body) = app.get_json("/api/jobs/unknown-job/versions").await;
    expect_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_definitions_list_every_problem() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/api/jobs",
            &json!({
                "slug": "-Bad slug", "name": "", "version": 0, "type": "cron",
                "entryPoint": "builtin:does-not-exist",
                "parametersSchema": {"type": "objekt"}, "defaultParameters": [1], "timeoutMs": 5,
                "retryPolicy": {"maxAttempts": 11, "strategy": "linear", "jitter": "some"},
                "metadata": "x", "colour": "blue"
            }),
        )
        .await;
    let got = expect_error(status, &body, 400, "invalid_definition");
    assert_has_paths(
        &got,
        &[
            "/slug",
            "/name",
            "/version",
            "/type",
            "/entryPoint",
            "/defaultParameters",
            "/timeoutMs",
            "/retryPolicy/maxAttempts",
            "/retryPolicy/strategy",
            "/retryPolicy/jitter",
            "/metadata",
            "/colour",
        ],
    );
    assert!(
        got.iter().any(|p| p.starts_with("/parametersSchema")),
        "{got:?}"
    );

    // Only an unknown entry point.
    let (status, body) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "ep", "name": "ep", "entryPoint": "builtin:nope"}),
        )
        .await;
    assert_eq!(
        expect_error(status, &body, 400, "invalid_definition"),
        vec!["/entryPoint"]
    );
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("builtin:noop"),
        "{body}"
    );

    // Only an invalid JSON Schema, pointing into the schema.
    let (status, body) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "schema", "name": "schema", "entryPoint": "builtin:noop",
                    "parametersSchema": {"type": "object", "properties": {"a": {"type": "strin"}}, "required": "a"}}),
        )
        .await;
    let got = expect_error(status, &body, 400, "invalid_definition");
    assert!(
        !got.is_empty() && got.iter().all(|p| p.starts_with("/parametersSchema")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("/parametersSchema/properties/a")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|p| p == "/parametersSchema/required"),
        "{got:?}"
    );
    let (status, body) = app
        .post_json("/api/jobs", &json!({"slug": "schema", "name": "schema", "entryPoint": "builtin:noop", "parametersSchema": 7}))
        .await;
    assert_eq!(
        expect_error(status, &body, 400, "invalid_definition"),
        vec!["/parametersSchema"]
    );

    // Missing required fields and non-object bodies.
    let (status, body) = app.post_json("/api/jobs", &json!({})).await;
    assert_has_paths(
        &expect_error(status, &body, 400, "invalid_definition"),
        &["/slug", "/name", "/entryPoint"],
    );
    let (status, body) = app.post_json("/api/jobs", &json!([1, 2])).await;
    expect_error(status, &body, 400, "invalid_definition");

    // None of these were stored.
    let (_, list) = app.get_json("/api/jobs").await;
    let slugs: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["slug"].as_str())
        .collect();
    for s in ["ep", "schema", "-bad slug"] {
        assert!(!slugs.contains(&s), "{s} stored: {slugs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_updates_given_fields_only() {
    let app = spawn_app().await;
    let original = app
        .job(
            "patchable",
            "builtin:noop",
            json!({"version": 2, "type": "manual", "parametersSchema": {"type": "object", "properties": {"x": {"type": "integer"}}},
                   "defaultParameters": {"x": 1}, "timeoutMs": 30000,
                   "retryPolicy": {"maxAttempts": 4, "strategy": "fixed", "initialDelayMs": 10, "maxDelayMs": 20, "jitter": "none"},
                   "metadata": {"tags": ["a"]}}),
        )
        .await;

    let (status, v) = app
        .patch_json(
            "/api/jobs/PATCHABLE",
            &json!({"name": "Renamed", "timeoutMs": 120000}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let patched = &v["data"];
    assert_keys(patched, JOB_KEYS);
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["timeoutMs"], 120000);
    for k in [
        "id",
        "slug",
        "version",
        "type",
        "entryPoint",
        "parametersSchema",
        "defaultParameters",
        "retryPolicy",
        "metadata",
        "createdAt",
    ] {
        assert_eq!(patched[k], original[k], "{k} changed");
    }
    assert!(ts(&patched["updatedAt"]) >= ts(&original["updatedAt"]));
    let (_, got) = app.get_json("/api/jobs/patchable").await;
    assert_eq!(&got["data"]["job"], patched);

    // Bad values: every problem, nothing stored.
    let (status, body) = app
        .patch_json(
            "/api/jobs/patchable",
            &json!({"timeoutMs": 5, "retryPolicy": {"maxAttempts": 0}, "entryPoint": "builtin:nope", "name": 3}),
        )
        .await;
    let got = expect_error(status, &body, 400, "invalid_definition");
    assert_has_paths(
        &got,
        &[
            "/timeoutMs",
            "/retryPolicy/maxAttempts",
            "/entryPoint",
            "/name",
        ],
    );
    let (status, body) = app
        .patch_json("/api/jobs/patchable", &json!({"slug": "other"}))
        .await;
    assert_has_paths(
        &expect_error(status, &body, 400, "invalid_definition"),
        &["/slug"],
    );
    let (status, body) = app
        .patch_json("/api/jobs/patchable", &json!({"version": 1}))
        .await;
    expect_error(status, &body, 409, "conflict");
    let (_, after) = app.get_json("/api/jobs/patchable").await;
    assert_eq!(&after["data"]["job"], patched);

    let (status, body) = app
        .patch_json("/api/jobs/no-such-job", &json!({"name": "x"}))
        .await;
    expect_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_job_and_conflict_while_runs_are_active() {
    let app = spawn_app().await;
    app.job("doomed", "builtin:noop", json!({})).await;
    let finished = app.run("doomed", json!({})).await;
    app.wait_terminal(&id_of(&finished)).await;
    let (status, body) = delete(&app, "/api/jobs/DOOMED").await;
    assert_eq!(status, 204, "{body}");
    // Starting a run of the deleted job (cached a moment ago) is refused.
    let (status, body) = app.post_json("/api/jobs/doomed/run", &json!({})).await;
    expect_error(status, &body, 404, "not_found");
    let (status, body) = app.get_json("/api/jobs/doomed").await;
    expect_error(status, &body, 404, "not_found");
    let (status, body) = delete(&app, "/api/jobs/doomed").await;
    expect_error(status, &body, 404, "not_found");
    let (status, body) = app.get_json("/api/jobs/doomed/versions").await;
    expect_error(status, &body, 404, "not_found");
    // The finished run stays readable (history).
    let (status, body) = app
        .get_json(&format!("/api/job-runs/{}", id_of(&finished)))
        .await;
    assert_eq!(status, 200, "{body}");

    // A job with a pending or running run cannot go.
    app.job("busy", "builtin:sleep", json!({})).await;
    let run = app
        .run("busy", json!({"parameters": {"durationMs": 600000}}))
        .await;
    let id = id_of(&run);
    let (status, body) = delete(&app, "/api/jobs/busy").await;
    expect_error(status, &body, 409, "conflict");
    let (status, _) = app.get_json("/api/jobs/busy").await;
    assert_eq!(status, 200);
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = delete(&app, "/api/jobs/busy").await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = app.get_json("/api/jobs/busy").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_job_returns_job_and_recent_runs() {
    let app = spawn_app().await;
    let job = app.job("with-runs", "builtin:noop", json!({})).await;
    app.job("other", "builtin:noop", json!({})).await;
    let (status, v) = app.get_json("/api/jobs/with-runs").await;
    assert_eq!(status, 200, "{v}");
    assert_keys(&v["data"], &["job", "runs"]);
    assert_eq!(v["data"]["runs"], json!([]));

    let first = app.run("with-runs", json!({"parameters": {"n": 1}})).await;
    let second = app.run("with-runs", json!({"parameters": {"n": 2}})).await;
    app.run("other", json!({})).await;
    app.wait_terminal(&id_of(&second)).await;
    let (status, v) = app.get_json("/api/jobs/with-runs").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["job"], job);
    assert_eq!(ids(&v["data"]["runs"]), vec![id_of(&second), id_of(&first)]);
    for r in v["data"]["runs"].as_array().unwrap() {
        assert_keys(r, RUN_KEYS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_definitions_exist_at_first_start() {
    let app = spawn_app().await;
    let (status, list) = app.get_json("/api/jobs").await;
    assert_eq!(status, 200, "{list}");
    let slugs: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["slug"].as_str())
        .collect();
    for slug in ["repository-ingest", "repository-build"] {
        assert!(slugs.contains(&slug), "{slug} not seeded: {slugs:?}");
        let (status, v) = app.get_json(&format!("/api/jobs/{slug}")).await;
        assert_eq!(status, 200, "{v}");
        let job = &v["data"]["job"];
        assert_keys(job, JOB_KEYS);
        assert_eq!(job["entryPoint"], format!("builtin:{slug}"));
        assert_eq!(job["version"], 1);
    }
    // The ingest job requires repoUrl.
    let (status, body) = app
        .post_json(
            "/api/jobs/repository-ingest/run",
            &json!({"parameters": {}}),
        )
        .await;
    expect_error(status, &body, 400, "invalid_parameters");
}

// ---------------------------------------------------------------------------------------------
// runs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_merges_parameters_and_validates_them() {
    let app = spawn_app().await;
    let job = app
        .job(
            "merge",
            "builtin:noop",
            json!({"defaultParameters": {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]},
                   "retryPolicy": {"maxAttempts": 2}, "timeoutMs": 45000}),
        )
        .await;
    let (status, v) = app
        .post_json(
            "/api/jobs/merge/run",
            &json!({"parameters": {"nested": {"y": 3}, "list": [9], "b": true}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let run = &v["data"];
    assert_keys(run, RUN_KEYS);
    let want = json!({"a": 1, "nested": {"x": 1, "y": 3}, "list": [9], "b": true});
    assert_eq!(run["parameters"], want);
    assert_eq!(run["status"], "pending");
    assert_eq!(run["jobSlug"], "merge");
    assert_eq!(run["jobDefinitionId"], job["id"]);
    assert_eq!(run["jobVersion"], 1);
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["maxAttempts"], 2);
    assert_eq!(run["timeoutMs"], 45000);
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["logsUrl"], format!("/api/job-runs/{}/logs", id_of(run)));
    for k in [
        "result",
        "errorMessage",
        "metrics",
        "context",
        "workflowRunId",
        "workflowStepId",
        "durationMs",
        "startedAt",
        "completedAt",
    ] {
        assert!(run[k].is_null(), "{k} should be null: {run}");
    }
    assert_uuid(&run["id"]);
    ts(&run["scheduledAt"]);
    ts(&run["createdAt"]);
    ts(&run["updatedAt"]);
    let done = app.wait_terminal(&id_of(run)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], want);
    assert!(
        done["durationMs"].as_i64().is_some_and(|d| d >= 0),
        "{done}"
    );
    ts(&done["startedAt"]);
    ts(&done["completedAt"]);

    // Per-run overrides and an empty body (the defaults).
    let over = app
        .run(
            "merge",
            json!({"timeoutMs": 2000, "maxAttempts": 5, "context": {"by": "test"}}),
        )
        .await;
    assert_eq!(over["timeoutMs"], 2000);
    assert_eq!(over["maxAttempts"], 5);
    assert_eq!(over["context"], json!({"by": "test"}));
    let (status, _, empty) = raw(&app, Method::POST, "/api/jobs/merge/run", None, Vec::new()).await;
    assert_eq!(status, 202, "{empty}");
    assert_eq!(
        empty["data"]["parameters"],
        json!({"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]})
    );

    // Schema violations: every one, each with its pointer.
    app.job(
        "strict",
        "builtin:noop",
        json!({"parametersSchema": {"type": "object", "required": ["repoUrl", "branch"],
               "properties": {"repoUrl": {"type": "string"}, "branch": {"type": "string"}, "depth": {"type": "integer", "minimum": 1}}}}),
    )
    .await;
    let (status, body) = app
        .post_json("/api/jobs/strict/run", &json!({"parameters": {"depth": 0}}))
        .await;
    let got = expect_error(status, &body, 400, "invalid_parameters");
    assert_has_paths(
        &got,
        &[
            "/parameters/depth",
            "/parameters/repoUrl",
            "/parameters/branch",
        ],
    );
    assert_eq!(got.len(), 3, "{body}");
    let (status, body) = app
        .post_json(
            "/api/jobs/strict/run",
            &json!({"parameters": {"repoUrl": 5, "branch": "main", "depth": "deep"}}),
        )
        .await;
    let got = expect_error(status, &body, 400, "invalid_parameters");
    assert_has_paths(&got, &["/parameters/repoUrl", "/parameters/depth"]);
    let ok = app
        .run(
            "strict",
            json!({"parameters": {"repoUrl": "x", "branch": "main", "depth": 1}}),
        )
        .await;
    assert_eq!(ok["status"], "pending");

    // Unknown job; a body with wrong types.
    let (status, body) = app.post_json("/api/jobs/no-such-job/run", &json!({})).await;
    expect_error(status, &body, 404, "not_found");
    let (status, body) = app
        .post_json(
            "/api/jobs/merge/run",
            &json!({"parameters": "x", "timeoutMs": "soon", "maxAttempts": 0, "delayMs": -1, "context": [], "idempotencyKey": 5, "extra": 1}),
        )
        .await;
    let got = expect_error(status, &body, 400, "invalid_request");
    assert_has_paths(
        &got,
        &[
            "/parameters",
            "/timeoutMs",
            "/maxAttempts",
            "/delayMs",
            "/context",
            "/idempotencyKey",
            "/extra",
        ],
    );
    let (status, body) = app.post_json("/api/jobs/merge/run", &json!([1])).await;
    expect_error(status, &body, 400, "invalid_request");

    // Nothing was started by the rejected requests.
    let (_, runs) = app.get_json("/api/jobs/merge/runs").await;
    assert_eq!(runs["meta"]["total"], 3, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_original_run() {
    let app = spawn_app().await;
    app.job("idem", "builtin:noop", json!({})).await;
    app.job("idem-other", "builtin:noop", json!({})).await;

    let first = app
        .run(
            "idem",
            json!({"parameters": {"n": 1}, "idempotencyKey": "key-1"}),
        )
        .await;
    let again = app
        .run(
            "idem",
            json!({"parameters": {"n": 2}, "idempotencyKey": "key-1"}),
        )
        .await;
    assert_eq!(id_of(&again), id_of(&first));
    assert_eq!(again["parameters"], json!({"n": 1}));

    let (status, h1) =
        run_with_header(&app, "idem", "key-2", &json!({"parameters": {"n": 3}})).await;
    assert_eq!(status, 202, "{h1}");
    let (status, h2) = run_with_header(&app, "idem", "key-2", &json!({})).await;
    assert_eq!(status, 202, "{h2}");
    assert_eq!(id_of(&h2["data"]), id_of(&h1["data"]));
    assert_ne!(id_of(&h1["data"]), id_of(&first));

    // The body key and the header key name the same thing.
    let (status, h3) = run_with_header(&app, "idem", "key-1", &json!({})).await;
    assert_eq!(status, 202, "{h3}");
    assert_eq!(id_of(&h3["data"]), id_of(&first));

    let third = app.run("idem", json!({"idempotencyKey": "key-3"})).await;
    let plain_a = app.run("idem", json!({})).await;
    let plain_b = app.run("idem", json!({})).await;
    let all: HashSet<String> = [&first, &h1["data"], &third, &plain_a, &plain_b]
        .iter()
        .map(|r| id_of(r))
        .collect();
    assert_eq!(all.len(), 5, "different keys (or none) make different runs");

    // Keys belong to a job.
    let elsewhere = app
        .run("idem-other", json!({"idempotencyKey": "key-1"}))
        .await;
    assert_ne!(id_of(&elsewhere), id_of(&first));
    assert_eq!(elsewhere["jobSlug"], "idem-other");

    let (_, runs) = app.get_json("/api/jobs/idem/runs").await;
    assert_eq!(runs["meta"]["total"], 5, "{runs}");

    // Concurrent requests with one key make one run.
    let race_body = json!({"idempotencyKey": "race"});
    let posts = (0..6).map(|_| app.post_json("/api/jobs/idem/run", &race_body));
    let results = futures::future::join_all(posts).await;
    let race_ids: HashSet<String> = results
        .iter()
        .map(|(status, v)| {
            assert_eq!(*status, 202, "{v}");
            id_of(&v["data"])
        })
        .collect();
    assert_eq!(race_ids.len(), 1, "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_run_waits_until_scheduled() {
    let app = spawn_app().await;
    app.job("later", "builtin:noop", json!({})).await;
    let before = Instant::now();
    let run = app.run("later", json!({"delayMs": 1500})).await;
    let id = id_of(&run);
    assert_eq!(run["status"], "pending");
    let created = ts(&run["createdAt"]);
    let scheduled = ts(&run["scheduledAt"]);
    let gap = (scheduled - created).num_milliseconds();
    assert!(
        (1495..=1505).contains(&gap),
        "scheduledAt - createdAt = {gap} ms"
    );

    // Any read answered within the first second must see it still pending.
    loop {
        let r = app.get_run(&id).await;
        if before.elapsed() >= Duration::from_millis(1000) {
            break;
        }
        assert_eq!(r["status"], "pending", "started before its time: {r}");
        assert!(r["startedAt"].is_null(), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let started = ts(&done["startedAt"]);
    assert!(
        started >= ts(&done["scheduledAt"]),
        "started {started} before scheduledAt {}",
        done["scheduledAt"]
    );
    assert!(
        (started - created).num_milliseconds() >= 1495,
        "started {started}, created {created}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_filter_page_and_sort() {
    let app = spawn_app().await;
    app.job("lst-alpha", "builtin:noop", json!({})).await;
    app.job("lst-beta", "builtin:sleep", json!({})).await;
    let mut alpha = Vec::new();
    for n in 0..3 {
        alpha.push(id_of(
            &app.run("lst-alpha", json!({"parameters": {"n": n}})).await,
        ));
    }
    let pending = id_of(
        &app.run(
            "lst-beta",
            json!({"parameters": {"durationMs": 1}, "delayMs": 600000}),
        )
        .await,
    );
    let canceled = id_of(
        &app.run(
            "lst-beta",
            json!({"parameters": {"durationMs": 1}, "delayMs": 600000}),
        )
        .await,
    );
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{canceled}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for id in &alpha {
        assert_eq!(app.wait_terminal(id).await["status"], "succeeded");
    }
    let alpha_desc: Vec<String> = alpha.iter().rev().cloned().collect();

    let (status, all) = app.get_json("/api/job-runs").await;
    assert_eq!(status, 200, "{all}");
    assert_keys(&all["meta"], &["limit", "offset", "total", "nextCursor"]);
    assert_eq!(all["meta"]["limit"], 20);
    assert_eq!(all["meta"]["offset"], 0);
    assert_eq!(all["meta"]["total"], 5);
    assert!(all["meta"]["nextCursor"].is_null(), "{all}");
    let mut want_all = vec![canceled.clone(), pending.clone()];
    want_all.extend(alpha_desc.clone());
    assert_eq!(ids(&all["data"]), want_all, "newest first");
    for r in all["data"].as_array().unwrap() {
        assert_keys(r, RUN_KEYS);
    }

    let (status, v) = app.get_json("/api/job-runs?status=pending,canceled").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(&v["data"]), vec![canceled.clone(), pending.clone()]);
    assert_eq!(v["meta"]["total"], 2);
    let (_, v) = app.get_json("/api/job-runs?status=succeeded").await;
    assert_eq!(ids(&v["data"]), alpha_desc);
    let (_, v) = app
        .get_json("/api/jobs/lst-beta/runs?status=canceled")
        .await;
    assert_eq!(ids(&v["data"]), vec![canceled.clone()]);
    let (_, v) = app
        .get_json("/api/jobs/lst-alpha/runs?status=canceled,failed")
        .await;
    assert_eq!(ids(&v["data"]), Vec::<String>::new());
    assert_eq!(v["meta"]["total"], 0);
    let (status, body) = app.get_json("/api/job-runs?status=pending,sleeping").await;
    assert_has_paths(
        &expect_error(status, &body, 400, "invalid_request"),
        &["/query/status"],
    );

    let (_, v) = app.get_json("/api/job-runs?q=alpha").await;
    assert_eq!(ids(&v["data"]), alpha_desc);
    assert_eq!(v["meta"]["total"], 3);
    let (_, v) = app.get_json("/api/job-runs?q=BETA&status=pending").await;
    assert_eq!(ids(&v["data"]), vec![pending.clone()]);
    let (_, v) = app.get_json("/api/job-runs?q=zzz-nothing").await;
    assert_eq!(ids(&v["data"]), Vec::<String>::new());
    let (_, v) = app.get_json("/api/jobs/lst-alpha/runs").await;
    assert_eq!(ids(&v["data"]), alpha_desc);
    assert_eq!(v["meta"]["total"], 3);
    let (status, body) = app.get_json("/api/jobs/no-such-job/runs").await;
    expect_error(status, &body, 404, "not_found");
    // `?job=` narrows to one job; empty, it is no filter; a slug no job has is a 404.
    let (_, v) = app.get_json("/api/job-runs?job=lst-alpha").await;
    assert_eq!(ids(&v["data"]), alpha_desc);
    let (status, v) = app.get_json("/api/job-runs?job=").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["meta"]["total"], 5);
    let (status, body) = app.get_json("/api/job-runs?job=no-such-job").await;
    expect_error(status, &body, 404, "not_found");

    // `q` is a literal search: LIKE wildcards in it match only themselves.
    app.job("a_b", "builtin:noop", json!({})).await;
    app.job("axb", "builtin:noop", json!({})).await;
    let ab = id_of(&app.run("a_b", json!({})).await);
    app.run("axb", json!({})).await;
    let (_, v) = app.get_json("/api/job-runs?q=a_b").await;
    assert_eq!(ids(&v["data"]), vec![ab.clone()], "{v}");
    let (_, v) = app.get_json("/api/job-runs?q=%25").await;
    assert_eq!(ids(&v["data"]), Vec::<String>::new(), "{v}");

    // Limits: default 20, max 100; offset paging.
    for _ in 0..18 {
        app.run("lst-alpha", json!({})).await;
    }
    let (_, v) = app.get_json("/api/job-runs").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 20);
    assert_eq!(v["meta"]["total"], 25);
    assert!(v["meta"]["nextCursor"].is_string(), "{v}");
    let first_page = ids(&v["data"]);
    let (_, v) = app.get_json("/api/job-runs?limit=100").await;
    assert_eq!(v["meta"]["limit"], 100);
    let everything = ids(&v["data"]);
    assert_eq!(everything.len(), 25);
    assert!(v["meta"]["nextCursor"].is_null(), "{v}");
    assert_eq!(&everything[..20], &first_page[..]);
    let mut sorted = everything.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(everything, sorted, "ids newest first");
    let created: Vec<DateTime<Utc>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ts(&r["createdAt"]))
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "createdAt newest first"
    );
    let (_, v) = app.get_json("/api/job-runs?limit=5&offset=5").await;
    assert_eq!(v["meta"]["offset"], 5);
    assert_eq!(ids(&v["data"]), everything[5..10].to_vec());
    for bad in ["limit=101", "limit=0", "limit=ten", "limit=-1"] {
        let (status, body) = app.get_json(&format!("/api/job-runs?{bad}")).await;
        assert_eq!(
            expect_error(status, &body, 400, "invalid_request"),
            vec!["/query/limit"],
            "{bad}"
        );
        let (status, body) = app
            .get_json(&format!("/api/jobs/lst-alpha/runs?{bad}"))
            .await;
        assert_eq!(
            expect_error(status, &body, 400, "invalid_request"),
            vec!["/query/limit"],
            "{bad}"
        );
    }
    let (status, body) = app.get_json("/api/job-runs?offset=x&cursor=nope").await;
    assert_has_paths(
        &expect_error(status, &body, 400, "invalid_request"),
        &["/query/offset", "/query/cursor"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_paging_is_stable_while_runs_arrive() {
    let app = spawn_app().await;
    app.job("paged", "builtin:noop", json!({})).await;
    let mut created = Vec::new();
    for n in 0..12 {
        created.push(id_of(
            &app.run("paged", json!({"parameters": {"n": n}})).await,
        ));
    }
    let desc: Vec<String> = created.iter().rev().cloned().collect();

    for base in ["/api/jobs/paged/runs", "/api/job-runs"] {
        let (_, snapshot) = app.get_json(&format!("{base}?limit=100")).await;
        let snapshot = ids(&snapshot["data"]);
        let (status, p1) = app.get_json(&format!("{base}?limit=5")).await;
        assert_eq!(status, 200, "{p1}");
        let mut walked = ids(&p1["data"]);
        assert_eq!(walked, snapshot[..5].to_vec(), "{base}");
        let mut cursor = p1["meta"]["nextCursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no cursor: {p1}"))
            .to_string();

        // New runs arrive between the pages.
        for _ in 0..4 {
            app.run("paged", json!({})).await;
        }

        loop {
            let (status, page) = app
                .get_json(&format!("{base}?limit=5&cursor={cursor}"))
                .await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["meta"]["limit"], 5);
            let got = ids(&page["data"]);
            assert!(!got.is_empty() && got.len() <= 5, "{page}");
            walked.extend(got);
            match page["meta"]["nextCursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        assert_eq!(
            walked, snapshot,
            "{base}: the pages continue exactly after page 1, no duplicates, no gaps"
        );
    }
    let (_, first) = app.get_json("/api/jobs/paged/runs?limit=100").await;
    assert_eq!(
        ids(&first["data"])[8..].to_vec(),
        desc,
        "the first runs are the oldest"
    );

    // Walking the whole list by cursor visits every run exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/jobs/paged/runs?limit=3&cursor={c}"),
            None => "/api/jobs/paged/runs?limit=3".to_string(),
        };
        let (_, page) = app.get_json(&path).await;
        seen.extend(ids(&page["data"]));
        match page["meta"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 20, "duplicates");
    assert_eq!(
        &seen[8..],
        &desc[..],
        "the original runs come last, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_run_and_logs() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/job-runs/{unknown}"),
        "/api/job-runs/not-a-uuid".to_string(),
        format!("/api/job-runs/{unknown}/logs"),
        format!("/api/job-runs/{unknown}/logs?follow=true"),
    ] {
        let (status, body) = app.get_json(&path).await;
        expect_error(status, &body, 404, "not_found");
    }

    app.job("logged", "builtin:noop", json!({})).await;
    let run = app.run("logged", json!({})).await;
    let id = id_of(&run);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let got = app.get_run(&id).await;
    assert_keys(&got, RUN_KEYS);
    assert_eq!(got["id"], id.as_str());

    let res = app.get(&format!("/api/job-runs/{id}/logs")).await;
    assert_eq!(res.status().as_u16(), 200);
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(text.contains("attempt 1 of 1 started"), "{text}");
    assert!(text.contains("succeeded"), "{text}");

    // Following a finished run returns the whole log at once.
    let followed = tokio::time::timeout(Duration::from_secs(10), async {
        app.get(&format!("/api/job-runs/{id}/logs?follow=true"))
            .await
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("follow of a finished run ends");
    assert_eq!(followed, text);

    let (status, body) = app
        .get_json(&format!("/api/job-runs/{id}/logs?follow=maybe"))
        .await;
    assert_has_paths(
        &expect_error(status, &body, 400, "invalid_request"),
        &["/query/follow"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_streams_until_the_run_ends() {
    let app = spawn_app().await;
    app.job("napper", "builtin:sleep", json!({})).await;
    let run = app
        .run("napper", json!({"parameters": {"durationMs": 1500}}))
        .await;
    let id = id_of(&run);
    let res = app
        .get(&format!("/api/job-runs/{id}/logs?follow=true"))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let mut chunks = 0;
    let mut saw_running_while_streaming = false;
    let collected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("the log stream does not break");
            text.push_str(&String::from_utf8_lossy(&chunk));
            chunks += 1;
            if !saw_running_while_streaming && text.contains("sleeping for 1500 ms") {
                // A chunk arrived before the end: the status must still be running.
                saw_running_while_streaming = app.get_run(&id).await["status"] == "running";
            }
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "the followed log did not end with the run; so far: {text}"
    );
    assert!(text.contains("attempt 1 of 1 started"), "{text}");
    assert!(text.contains("sleeping for 1500 ms"), "{text}");
    assert!(text.contains("succeeded"), "{text}");
    assert!(chunks >= 2, "the log was not streamed: {chunks} chunk(s)");
    assert!(
        saw_running_while_streaming,
        "lines arrived only after the run ended: {text}"
    );
    let done = app.get_run(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_runs() {
    let app = spawn_app().await;
    app.job("sleepy", "builtin:sleep", json!({})).await;
    let run = app
        .run("sleepy", json!({"parameters": {"durationMs": 600000}}))
        .await;
    let id = id_of(&run);
    app.wait_for_status(&id, &["running"], Duration::from_secs(15))
        .await;

    // Only "canceled" may be set.
    for body in [
        json!({"status": "running"}),
        json!({"status": "succeeded"}),
        json!({}),
        json!({"status": "canceled", "x": 1}),
    ] {
        let (status, err) = app.patch_json(&format!("/api/job-runs/{id}"), &body).await;
        expect_error(status, &err, 400, "invalid_request");
    }
    assert_eq!(app.get_run(&id).await["status"], "running");

    // Retrying a running run is a conflict.
    let (status, body) = app
        .post_json(&format!("/api/job-runs/{id}/retry"), &json!({}))
        .await;
    expect_error(status, &body, 409, "conflict");

    let (status, v) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["status"], "canceled");
    assert_eq!(v["data"]["id"], id.as_str());
    ts(&v["data"]["completedAt"]);
    // It stays canceled (the handler was stopped, nothing overwrote the status).
    let stopped = app
        .wait_for_status(&id, &["canceled"], Duration::from_secs(5))
        .await;
    assert_eq!(stopped["status"], "canceled");
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    expect_error(status, &body, 409, "conflict");
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "running"}),
        )
        .await;
    expect_error(status, &body, 400, "invalid_request");
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{unknown}"),
            &json!({"status": "canceled"}),
        )
        .await;
    expect_error(status, &body, 404, "not_found");

    // Retry of a finished run: a new run with the same parameters.
    let (status, v) = app
        .post_json(&format!("/api/job-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let retried = &v["data"];
    assert_keys(retried, RUN_KEYS);
    assert_ne!(id_of(retried), id);
    assert_eq!(retried["parameters"], json!({"durationMs": 600000}));
    assert_eq!(retried["jobSlug"], "sleepy");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["attempt"], 1);
    let (status, v) = app
        .patch_json(
            &format!("/api/job-runs/{}", id_of(retried)),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    app.job("quick", "builtin:noop", json!({})).await;
    let q = app.run("quick", json!({"parameters": {"k": "v"}})).await;
    app.wait_terminal(&id_of(&q)).await;
    let (status, v) = app
        .post_json(&format!("/api/job-runs/{}/retry", id_of(&q)), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let again = app.wait_terminal(&id_of(&v["data"])).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["result"], json!({"k": "v"}));
    let (status, body) = app
        .post_json(&format!("/api/job-runs/{unknown}/retry"), &json!({}))
        .await;
    expect_error(status, &body, 404, "not_found");
}

// ---------------------------------------------------------------------------------------------
// errors and operations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let app = spawn_app().await;
    app.job("target", "builtin:noop", json!({})).await;
    let run_id = id_of(&app.run("target", json!({})).await);
    let json_ct = Some("application/json");

    let deep = "[".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"{\"slug\": }".to_vec(),
        b"[1,".to_vec(),
        b"{} trailing".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"nul".to_vec(),
        deep.into_bytes(),
    ];
    let targets = [
        (Method::POST, "/api/jobs".to_string()),
        (Method::PATCH, "/api/jobs/target".to_string()),
        (Method::POST, "/api/jobs/target/run".to_string()),
        (Method::PATCH, format!("/api/job-runs/{run_id}")),
    ];
    for (method, path) in &targets {
        for body in &bodies {
            let (status, _, v) = raw(&app, method.clone(), path, json_ct, body.clone()).await;
            expect_error(status, &v, 400, "invalid_request");
        }
        // Not JSON at all: 415, whatever the body.
        for ct in [
            Some("text/plain"),
            None,
            Some("application/x-www-form-urlencoded"),
        ] {
            let (status, _, v) = raw(
                &app,
                method.clone(),
                path,
                ct,
                b"{\"name\": \"x\"}".to_vec(),
            )
            .await;
            expect_error(status, &v, 415, "unsupported_media_type");
        }
        // Too large: 413, also when streamed without a length.
        let big =
            serde_json::to_vec(&json!({"metadata": {"blob": "x".repeat(70 * 1024)}})).unwrap();
        let (status, _, v) = raw(&app, method.clone(), path, json_ct, big.clone()).await;
        expect_error(status, &v, 413, "payload_too_large");
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            big.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
        let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let (status, _, v) = raw(&app, method.clone(), path, json_ct, streamed).await;
        expect_error(status, &v, 413, "payload_too_large");
    }
    // application/...+json is JSON.
    let (status, _, v) = raw(
        &app,
        Method::PATCH,
        "/api/jobs/target",
        Some("application/merge-patch+json"),
        b"{\"name\": \"T\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // Unknown routes and wrong methods.
    for path in [
        "/api/nope",
        "/api/jobs/target/nope",
        "/api/jobs/",
        "/api/job-runs/x/y/z",
    ] {
        let (status, _, v) = raw(&app, Method::GET, path, None, Vec::new()).await;
        expect_error(status, &v, 404, "not_found");
    }
    let (status, _, v) = raw(&app, Method::POST, "/api/nope", json_ct, b"{}".to_vec()).await;
    expect_error(status, &v, 404, "not_found");
    for (method, path, allowed) in [
        (Method::PUT, "/api/jobs", vec!["GET", "POST"]),
        (Method::DELETE, "/api/job-runs", vec!["GET"]),
        (Method::POST, "/api/health", vec!["GET"]),
        (Method::GET, "/api/jobs/target/run", vec!["POST"]),
    ] {
        let (status, headers, v) = raw(&app, method.clone(), path, json_ct, b"{}".to_vec()).await;
        assert_eq!(status, 405, "{method} {path}: {v}");
        assert_error_shape(&v);
        let allow = headers
            .get(header::ALLOW)
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default()
            .to_string();
        for m in allowed {
            assert!(
                allow.contains(m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
    }

    // Odd paths and queries: client errors, never 5xx.
    for path in [
        "/api/jobs/%FF",
        "/api/jobs/%FF/runs",
        "/api/job-runs/%FF",
        "/api/job-runs?status=%FF",
        "/api/jobs/a%20b",
    ] {
        let (status, _, v) = raw(&app, Method::GET, path, None, Vec::new()).await;
        assert!((400..500).contains(&status), "{path}: {status} {v}");
        assert_error_shape(&v);
    }
    let (status, _, v) = raw(
        &app,
        Method::GET,
        "/api/job-runs?colour=red",
        None,
        Vec::new(),
    )
    .await;
    assert_has_paths(
        &expect_error(status, &v, 400, "invalid_request"),
        &["/query/colour"],
    );
    let (status, _, v) = raw(
        &app,
        Method::GET,
        &format!("/api/jobs/{}", "a".repeat(300)),
        None,
        Vec::new(),
    )
    .await;
    expect_error(status, &v, 404, "not_found");

    // The server is still healthy.
    let (status, _) = app.get_json("/api/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_openapi() {
    let app = spawn_app().await;
    let (status, v) = app.get_json("/api/health").await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"].is_object(), "{v}");
    let (status, v) = app.get_json("/api/ready").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["database"],
        if app.db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    );

    let (status, doc) = app.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/jobs",
        "/api/jobs/{slug}",
        "/api/jobs/{slug}/versions",
        "/api/jobs/{slug}/run",
        "/api/jobs/{slug}/runs",
        "/api/job-runs",
        "/api/job-runs/{id}",
        "/api/job-runs/{id}/logs",
        "/api/job-runs/{id}/retry",
        "/api/events",
        "/api/health",
        "/api/ready",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(paths["/api/jobs"]["post"].is_object());
    assert!(paths["/api/job-runs/{id}"]["patch"].is_object());
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in ["JobDefinition", "JobRun", "ErrorBody"] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    // Enums are documented with their wire spellings, not the Rust variant names.
    assert_eq!(
        schemas["RunStatus"]["enum"],
        json!([
            "pending",
            "running",
            "succeeded",
            "failed",
            "canceled",
            "expired"
        ])
    );
    assert_eq!(
        schemas["JobType"]["enum"],
        json!(["batch", "service-triggered", "manual"])
    );
}

/// Follows `$ref`s (`#/components/...`) until a value that is not one.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').expect("a local $ref");
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// The name of the component schema a response's JSON body refers to.
fn json_schema_name(doc: &Value, response: &Value) -> Option<String> {
    let schema = &resolve(doc, response)["content"]["application/json"]["schema"];
    schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .map(str::to_string)
}

/// The list operations of api.md: each answers `{"data": [...], "meta": ListMeta}`.
const LIST_OPERATIONS: &[&str] = &[
    "/api/jobs",
    "/api/jobs/{slug}/versions",
    "/api/jobs/{slug}/runs",
    "/api/job-runs",
    "/api/workflows",
    "/api/workflows/{slug}/versions",
    "/api/workflows/{slug}/runs",
    "/api/workflow-runs",
    "/api/services",
    "/api/secrets",
    "/api/audit-logs",
];

/// The OpenAPI document describes what the server sends: envelopes on successes, the error
/// body on every error, and on every operation the statuses of the layers in front of its
/// handler (schemathesis checks the same against a real server in `make test-contract`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_envelopes_errors_and_every_status() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];

    // The error body is {"error": {code, message, details: [{path, message}]}}.
    let error = &schemas["ErrorResponse"];
    assert_eq!(error["required"], json!(["error"]), "{error}");
    let body = resolve(&doc, &error["properties"]["error"]);
    assert_eq!(
        body["required"],
        json!(["code", "message", "details"]),
        "{body}"
    );
    let detail = resolve(&doc, &body["properties"]["details"]["items"]);
    assert_eq!(detail["required"], json!(["path", "message"]), "{detail}");
    // ... and it is what an error really looks like.
    let (status, err) = app.get_json("/api/jobs/no-such-job").await;
    assert_eq!(status, 404);
    assert_keys(&err, &["error"]);
    assert_keys(&err["error"], &["code", "message", "details"]);

    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let what = format!("{} {path}", method.to_uppercase());
            let responses = op["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            let api = path.starts_with("/api/");
            let mut want = vec!["421", "500", "503"];
            if api {
                want.push("400");
            }
            if path.contains('{') {
                want.push("404");
            }
            if op.get("requestBody").is_some() {
                want.extend(["413", "415"]);
            }
            if !["/api/health", "/api/ready"].contains(&path.as_str()) {
                want.push(if api { "401" } else { "303" });
            }
            if method != "get" {
                want.push("403");
            }
            for status in want {
                assert!(has(status), "{what} does not document {status}");
            }
            // Every JSON error is the error body.
            for (status, response) in responses {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if is_error && resolve(&doc, response)["content"]["application/json"].is_object() {
                    assert_eq!(
                        json_schema_name(&doc, response).as_deref(),
                        Some("ErrorResponse"),
                        "{what} {status}"
                    );
                }
            }
            // Successes with a JSON body are envelopes: lists `{"data": [..], "meta"}`,
            // everything else `{"data": ..}` (but the document itself).
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('2')) {
                let Some(name) = json_schema_name(&doc, response) else {
                    continue;
                };
                let schema = &schemas[&name];
                if method == "get" && LIST_OPERATIONS.contains(&path.as_str()) {
                    assert!(name.starts_with("Page_"), "{what} {status}: {name}");
                    assert_eq!(schema["required"], json!(["data", "meta"]), "{what}");
                    assert_eq!(schema["properties"]["data"]["type"], "array", "{what}");
                    assert_eq!(
                        schema["properties"]["meta"]["$ref"], "#/components/schemas/ListMeta",
                        "{what}"
                    );
                } else {
                    assert!(name.starts_with("Data_"), "{what} {status}: {name}");
                    assert_eq!(schema["required"], json!(["data"]), "{what}");
                }
            }
        }
    }
    assert!(operations >= 42, "{operations} operations");
    // Reads that need a token when tokens are configured say so.
    assert_eq!(
        doc["paths"]["/api/jobs"]["get"]["security"],
        json!([{"bearer": []}])
    );
    assert!(doc["paths"]["/api/health"]["get"]["security"].is_null());
    // The lists document their paging and search parameters.
    for path in LIST_OPERATIONS {
        let names: Vec<&str> = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"))
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"limit"), "{path}: {names:?}");
    }
    // The event stream is documented as one, each event with its JSON payload.
    let events = &doc["paths"]["/api/events"]["get"]["responses"]["200"]["content"];
    assert!(events["text/event-stream"].is_object(), "{events}");
    let data = &schemas["SseEvent"]["properties"]["data"];
    assert_eq!(data["contentMediaType"], "application/json", "{data}");
    assert_eq!(
        data["contentSchema"]["required"],
        json!(["type", "data"]),
        "{data}"
    );
}

// ---------------------------------------------------------------------------------------------
// events

fn is_run_event(ev: &SseEvent, run_id: &str, ty: &str) -> bool {
    ev.event.as_deref() == Some(ty) && ev.run_id().as_deref() == Some(run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_run_lifecycle_and_replay() {
    let app = spawn_app().await;
    let mut sse = SseReader::connect(&app, "/api/events", None).await;
    app.job("sse-noop", "builtin:noop", json!({})).await;
    let run = app.run("sse-noop", json!({"parameters": {"v": 1}})).await;
    let run_id = id_of(&run);

    let events = sse
        .until(Duration::from_secs(30), |ev| {
            is_run_event(ev, &run_id, "job.run.succeeded")
        })
        .await;
    // Only new events: the first one is this job's definition.
    assert_eq!(
        events[0].event.as_deref(),
        Some("job.definition.updated"),
        "{events:?}"
    );
    assert_eq!(events[0].json()["data"]["job"]["slug"], "sse-noop");
    let mine: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.run_id().as_deref() == Some(run_id.as_str()))
        .collect();
    let kinds: Vec<&str> = mine
        .iter()
        .filter_map(|e| e.event.as_deref())
        .filter(|t| ["job.run.pending", "job.run.running", "job.run.succeeded"].contains(t))
        .collect();
    assert_eq!(
        kinds,
        vec!["job.run.pending", "job.run.running", "job.run.succeeded"],
        "{events:?}"
    );
    let last = mine.last().unwrap().json();
    assert_eq!(last["type"], "job.run.succeeded");
    assert_eq!(last["data"]["run"]["status"], "succeeded");
    assert_eq!(last["data"]["run"]["result"], json!({"v": 1}));
    assert_keys(&last["data"]["run"], RUN_KEYS);

    // Reconnecting with Last-Event-ID replays exactly what followed that id.
    let pending_id = mine[0].id();
    let succeeded_id = mine.last().unwrap().id();
    let mut replay = SseReader::connect(&app, "/api/events", Some(pending_id)).await;
    let replayed = replay
        .until(Duration::from_secs(30), |ev| ev.id() >= succeeded_id)
        .await;
    let expected: Vec<SseEvent> = events
        .iter()
        .filter(|e| e.id() > pending_id && e.id() <= succeeded_id)
        .cloned()
        .collect();
    assert_eq!(replayed, expected);

    // Replay and live events join up without a gap: a new run arrives on the replaying stream.
    let next = id_of(&app.run("sse-noop", json!({})).await);
    let more = replay
        .until(Duration::from_secs(30), |ev| {
            is_run_event(ev, &next, "job.run.succeeded")
        })
        .await;
    assert!(
        more.iter()
            .any(|e| is_run_event(e, &next, "job.run.pending")),
        "{more:?}"
    );
    assert!(more[0].id() > succeeded_id);

    // A bad Last-Event-ID is a client error.
    let res = app
        .client
        .get(app.url("/api/events"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    expect_error(status, &body, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_topic_filter() {
    let app = spawn_app().await;
    let mut defs =
        SseReader::connect(&app, "/api/events?topics=job.definition.updated", None).await;
    let mut runs = SseReader::connect(&app, "/api/events?topics=job.run.*", None).await;

    app.job("topic-one", "builtin:noop", json!({})).await;
    let run = app.run("topic-one", json!({})).await;
    let run_id = id_of(&run);
    app.wait_terminal(&run_id).await;
    let (status, v) = app
        .patch_json("/api/jobs/topic-one", &json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, 200, "{v}");
    app.job("topic-two", "builtin:noop", json!({})).await;

    let got = defs
        .until(Duration::from_secs(30), |ev| {
            ev.json()["data"]["job"]["slug"] == "topic-two"
        })
        .await;
    assert!(
        got.iter()
            .all(|e| e.event.as_deref() == Some("job.definition.updated")),
        "{got:?}"
    );
    let slugs: Vec<Value> = got
        .iter()
        .map(|e| e.json()["data"]["job"]["slug"].clone())
        .collect();
    assert_eq!(
        slugs,
        vec![json!("topic-one"), json!("topic-one"), json!("topic-two")]
    );
    assert_eq!(got[1].json()["data"]["job"]["name"], "Renamed");

    let got = runs
        .until(Duration::from_secs(30), |ev| {
            is_run_event(ev, &run_id, "job.run.succeeded")
        })
        .await;
    assert!(
        got.iter().all(|e| e
            .event
            .as_deref()
            .is_some_and(|t| t.starts_with("job.run."))),
        "{got:?}"
    );
    assert_eq!(got[0].event.as_deref(), Some("job.run.pending"), "{got:?}");
}
