//! Workflow definitions and the service registry (api.md "Workflow definitions", "Services",
//! "Events"): storage, version rules, validation with JSON pointers, events, OpenAPI.
use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::{Method, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const WORKFLOW_KEYS: &[&str] = &[
    "id",
    "slug",
    "name",
    "version",
    "description",
    "parametersSchema",
    "defaultParameters",
    "metadata",
    "steps",
    "triggers",
    "provider",
    "timeoutMs",
    "createdAt",
    "updatedAt",
];

const SERVICE_KEYS: &[&str] = &[
    "id",
    "slug",
    "displayName",
    "kind",
    "baseUrl",
    "healthPath",
    "headers",
    "metadata",
    "status",
    "lastCheckedAt",
    "lastError",
    "createdAt",
    "updatedAt",
];

#[track_caller]
fn assert_keys(v: &Value, keys: &[&str]) {
    let got: HashSet<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(got, want, "fields of {v}");
}

#[track_caller]
fn ts(v: &Value) -> DateTime<Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected: {v}"));
    assert!(s.ends_with('Z'), "not UTC: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
        .with_timezone(&Utc)
}

/// Asserts an api.md error and returns its details as (path, message).
#[track_caller]
fn expect_error(
    status: u16,
    body: &Value,
    want_status: u16,
    want_code: &str,
) -> Vec<(String, String)> {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details must be an array: {body}"))
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The message of the problem at `path`; panics when there is none.
#[track_caller]
fn problem_at<'a>(details: &'a [(String, String)], path: &str) -> &'a str {
    details
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("no problem at {path}: {details:?}"))
}

/// Four steps: `fetch` first, `left` and `right` in parallel after it, `merge` after both.
fn diamond(version: i64, name: &str) -> Value {
    json!({
        "slug": "Diamond", "name": name, "version": version,
        "description": "fan out and in",
        "parametersSchema": {"type": "object", "properties": {"repoUrl": {"type": "string"}}},
        "defaultParameters": {"repoUrl": "file:///tmp/repo"},
        "metadata": {"team": "build"},
        "steps": [
            {"id": "fetch", "name": "Fetch", "jobSlug": "wf-fetch",
             "parameters": {"url": "{{ parameters.repoUrl }}"}},
            {"id": "left", "jobSlug": "wf-work", "dependsOn": ["fetch"],
             "parameters": {"input": "{{ steps.fetch.result.url }}"}, "onFailure": "continue"},
            {"id": "right", "jobSlug": "wf-work", "dependsOn": ["fetch"],
             "retryPolicy": {"maxAttempts": 2}, "timeoutMs": 5000},
            {"id": "merge", "jobSlug": "WF-FETCH", "dependsOn": ["left", "right"],
             "parameters": {"text": "left={{ steps.left.result.input }} first={{ steps.fetch.result.url }}"}}
        ],
        "triggers": [{"type": "manual"}, {"type": "schedule", "options": {"cron": "0 */15 * * * *"}}]
    })
}

async fn diamond_jobs(app: &TestApp) {
    app.job("wf-fetch", "builtin:noop", json!({})).await;
    app.job("wf-work", "builtin:noop", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_workflow_is_stored_served_versioned_and_deleted() {
    let app = spawn_app().await;
    diamond_jobs(&app).await;

    let (status, v) = app
        .post_json("/api/workflows", &diamond(1, "Diamond"))
        .await;
    assert_eq!(status, 201, "{v}");
    let wf = &v["data"];
    assert_keys(wf, WORKFLOW_KEYS);
    uuid::Uuid::parse_str(wf["id"].as_str().unwrap()).unwrap();
    assert_eq!(wf["slug"], "diamond");
    assert_eq!(wf["name"], "Diamond");
    assert_eq!(wf["version"], 1);
    assert_eq!(wf["description"], "fan out and in");
    assert_eq!(wf["provider"], "native");
    assert_eq!(wf["metadata"], json!({"team": "build"}));
    assert_eq!(
        wf["defaultParameters"],
        json!({"repoUrl": "file:///tmp/repo"})
    );
    let created_at = ts(&wf["createdAt"]);
    assert_eq!(created_at, ts(&wf["updatedAt"]));
    let steps = wf["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fetch", "left", "right", "merge"]);
    assert_eq!(steps[0]["type"], "job");
    assert_eq!(steps[0]["name"], "Fetch");
    assert_eq!(steps[0]["dependsOn"], json!([]));
    assert_eq!(steps[0]["onFailure"], "halt");
    assert_eq!(steps[1]["name"], "left", "the name defaults to the id");
    assert_eq!(steps[1]["onFailure"], "continue");
    assert_eq!(steps[2]["timeoutMs"], 5000);
    assert_eq!(steps[2]["retryPolicy"]["maxAttempts"], 2);
    assert_eq!(
        steps[3]["jobSlug"], "wf-fetch",
        "slugs are stored lower-case"
    );
    assert_eq!(steps[3]["dependsOn"], json!(["left", "right"]));
    assert_eq!(
        steps[3]["parameters"]["text"],
        "left={{ steps.left.result.input }} first={{ steps.fetch.result.url }}"
    );
    assert_eq!(
        wf["triggers"],
        json!([{"type": "manual"}, {"type": "schedule", "options": {"cron": "0 */15 * * * *", "parameters": {}}}])
    );
    let id = wf["id"].clone();

    // GET (slugs in paths are case-insensitive): the definition and its runs (none yet).
    let (status, v) = app.get_json("/api/workflows/DIAMOND").await;
    assert_eq!(status, 200, "{v}");
    assert_keys(&v["data"], &["workflow", "runs"]);
    assert_eq!(v["data"]["workflow"], *wf);
    assert_eq!(v["data"]["runs"], json!([]));

    let (status, v) = app.get_json("/api/workflows").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"], json!([wf]));

    // Same version: replaced in place (200), same id and creation time.
    let (status, v) = app
        .post_json("/api/workflows", &diamond(1, "Diamond again"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["id"], id);
    assert_eq!(v["data"]["name"], "Diamond again");
    assert_eq!(ts(&v["data"]["createdAt"]), created_at);

    // Higher version: replaced, history kept.
    let (status, v) = app
        .post_json("/api/workflows", &diamond(3, "Diamond v3"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["id"], id);
    assert_eq!(v["data"]["version"], 3);
    let v3 = v["data"].clone();

    // Lower version: conflict, nothing changes.
    let (status, v) = app
        .post_json("/api/workflows", &diamond(2, "Diamond v2"))
        .await;
    expect_error(status, &v, 409, "conflict");
    let (_, v) = app.get_json("/api/workflows/diamond").await;
    assert_eq!(v["data"]["workflow"], v3);

    let (status, v) = app.get_json("/api/workflows/diamond/versions").await;
    assert_eq!(status, 200, "{v}");
    let versions = v["data"].as_array().unwrap();
    let listed: Vec<(i64, &str)> = versions
        .iter()
        .map(|x| {
            assert_keys(x, &["version", "definition", "createdAt"]);
            assert_eq!(x["definition"]["version"], x["version"]);
            (
                x["version"].as_i64().unwrap(),
                x["definition"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(3, "Diamond v3"), (1, "Diamond again")]);
    assert_eq!(versions[0]["definition"], v3);

    // PATCH: given fields over the stored definition, validated as a whole.
    let (status, v) = app
        .patch_json(
            "/api/workflows/diamond",
            &json!({"description": "patched", "metadata": {"team": "ops"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["description"], "patched");
    assert_eq!(v["data"]["metadata"], json!({"team": "ops"}));
    assert_eq!(v["data"]["version"], 3);
    assert_eq!(v["data"]["name"], "Diamond v3");
    assert_eq!(
        v["data"]["steps"], v3["steps"],
        "steps survive a patch unchanged"
    );
    assert_eq!(v["data"]["triggers"], v3["triggers"]);
    assert_eq!(ts(&v["data"]["createdAt"]), created_at);
    assert!(ts(&v["data"]["updatedAt"]) >= ts(&v3["updatedAt"]));

    let (status, v) = app
        .patch_json("/api/workflows/diamond", &json!({"version": 2}))
        .await;
    expect_error(status, &v, 409, "conflict");
    let (status, v) = app
        .patch_json("/api/workflows/diamond", &json!({"slug": "other"}))
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        details,
        [("/slug".to_string(), "cannot be changed".to_string())]
    );
    let (status, v) = app
        .patch_json(
            "/api/workflows/diamond",
            &json!({"steps": [{"id": "only", "jobSlug": "wf-work", "dependsOn": ["fetch"]}]}),
        )
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        problem_at(&details, "/steps/0/dependsOn/0"),
        "unknown step \"fetch\""
    );
    let (status, v) = app
        .patch_json(
            "/api/workflows/diamond",
            &json!({"version": 4, "steps": [{"id": "only", "jobSlug": "wf-work"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["steps"].as_array().map(Vec::len), Some(1));
    let (_, v) = app.get_json("/api/workflows/diamond/versions").await;
    let listed: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [4, 3, 1]);

    let (status, v) = app.patch_json("/api/workflows/nope", &json!({})).await;
    expect_error(status, &v, 404, "not_found");

    // DELETE: gone, with its history.
    let res = app
        .client
        .delete(app.url("/api/workflows/Diamond"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    for path in ["/api/workflows/diamond", "/api/workflows/diamond/versions"] {
        let (status, v) = app.get_json(path).await;
        expect_error(status, &v, 404, "not_found");
    }
    let (_, v) = app.get_json("/api/workflows").await;
    assert_eq!(v["data"], json!([]));
    let res = app
        .client
        .delete(app.url("/api/workflows/diamond"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    // The slug is free again and starts over at any version.
    let (status, v) = app.post_json("/api/workflows", &diamond(1, "Reborn")).await;
    assert_eq!(status, 201, "{v}");
    assert_ne!(v["data"]["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_problem_is_reported_at_once_with_pointers() {
    let app = spawn_app().await;
    app.job("vj", "builtin:noop", json!({})).await;
    let body = json!({
        "slug": "broken", "name": "Broken",
        "steps": [
            {"id": "a", "jobSlug": "no-such-job"},
            {"id": "b", "type": "service", "serviceSlug": "no-such-service",
             "request": {"method": "POST", "path": "/hook"}},
            {"id": "c", "jobSlug": "vj", "dependsOn": ["ghost"]},
            {"id": "d", "jobSlug": "vj", "dependsOn": ["e"]},
            {"id": "e", "jobSlug": "vj", "dependsOn": ["d"]},
            {"id": "f", "jobSlug": "vj", "parameters": {"x": "{{ steps.c.result.y }}"}},
            {"id": "g", "jobSlug": "vj", "parameters": {"list": ["{{ nowhere.value }}"]}},
            {"id": "c", "jobSlug": "vj"}
        ],
        "triggers": [{"type": "schedule", "options": {"cron": "not a cron"}}]
    });
    let (status, v) = app.post_json("/api/workflows", &body).await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        problem_at(&details, "/steps/0/jobSlug"),
        "unknown job \"no-such-job\""
    );
    assert_eq!(
        problem_at(&details, "/steps/1/serviceSlug"),
        "unknown service \"no-such-service\""
    );
    assert_eq!(
        problem_at(&details, "/steps/2/dependsOn/0"),
        "unknown step \"ghost\""
    );
    let cycle = details
        .iter()
        .find(|(_, m)| m.starts_with("dependency cycle"))
        .unwrap_or_else(|| panic!("no cycle reported: {details:?}"));
    assert!(
        ["/steps/3/dependsOn/0", "/steps/4/dependsOn/0"].contains(&cycle.0.as_str()),
        "{cycle:?}"
    );
    assert!(
        cycle.1.contains("d -> e") || cycle.1.contains("e -> d"),
        "{cycle:?}"
    );
    assert!(
        problem_at(&details, "/steps/5/parameters/x").contains("does not depend on step \"c\""),
        "{details:?}"
    );
    problem_at(&details, "/steps/6/parameters/list/0");
    assert!(
        problem_at(&details, "/steps/7/id").starts_with("duplicate step id \"c\""),
        "{details:?}"
    );
    problem_at(&details, "/triggers/0/options/cron");
    assert_eq!(
        v["error"]["message"],
        format!("invalid definition: {} problems", details.len())
    );
    // Nothing was stored.
    let (status, _) = app.get_json("/api/workflows/broken").await;
    assert_eq!(status, 404);

    // Once the job and the service exist, steps naming them are accepted.
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "notifier", "displayName": "Notifier", "kind": "http", "baseUrl": "http://127.0.0.1:9"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    app.job("late-job", "builtin:noop", json!({})).await;
    let ok = json!({
        "slug": "uses-both", "name": "Uses both",
        "steps": [
            {"id": "work", "jobSlug": "late-job"},
            {"id": "notify", "type": "service", "serviceSlug": "notifier", "dependsOn": ["work"],
             "requireHealthy": true, "captureResponse": true, "storeResponseAs": "notifyResponse",
             "request": {"method": "POST", "path": "/hooks/build",
               "headers": {"Authorization": {"secret": {"source": "store", "key": "NOTIFIER_TOKEN"}, "prefix": "Bearer "}},
               "body": {"result": "{{ steps.work.result }}"}}}
        ]
    });
    let (status, v) = app.post_json("/api/workflows", &ok).await;
    assert_eq!(status, 201, "{v}");
    let notify = &v["data"]["steps"][1];
    assert_eq!(notify["type"], "service");
    assert_eq!(notify["serviceSlug"], "notifier");
    assert_eq!(notify["request"]["method"], "POST");
    // The stored form of a service step validates again on a patch.
    let (status, v) = app
        .patch_json("/api/workflows/uses-both", &json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["steps"][1], *notify);

    // Malformed bodies get the shared error format.
    let res = app
        .client
        .post(app.url("/api/workflows"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let res = app
        .client
        .post(app.url("/api/workflows"))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let v: Value = res.json().await.unwrap();
    expect_error(status, &v, 400, "invalid_request");
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "x", "name": "X", "steps": [{"id": "a", "jobSlug": "vj"}], "bogus": 1}),
        )
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        details,
        [("/bogus".to_string(), "unknown field".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_registered_patched_and_validated() {
    let app = spawn_app().await;
    let body = json!({
        "slug": "Builder", "displayName": "Build farm", "kind": "http",
        "baseUrl": "https://build.example.com/api", "healthPath": "/healthz",
        "headers": {"X-Team": "build"}, "metadata": {"region": "eu"}
    });
    let (status, v) = app.post_json("/api/services", &body).await;
    assert_eq!(status, 201, "{v}");
    let svc = v["data"].clone();
    assert_keys(&svc, SERVICE_KEYS);
    uuid::Uuid::parse_str(svc["id"].as_str().unwrap()).unwrap();
    assert_eq!(svc["slug"], "builder");
    assert_eq!(svc["displayName"], "Build farm");
    assert_eq!(svc["kind"], "http");
    assert_eq!(svc["baseUrl"], "https://build.example.com/api");
    assert_eq!(svc["healthPath"], "/healthz");
    // Header values are credentials: write-only, shown masked.
    assert_eq!(svc["headers"], json!({"X-Team": "***"}));
    assert_eq!(svc["metadata"], json!({"region": "eu"}));
    assert_eq!(svc["status"], "unknown");
    assert_eq!(svc["lastCheckedAt"], Value::Null);
    assert_eq!(svc["lastError"], Value::Null);
    let created_at = ts(&svc["createdAt"]);
    assert_eq!(created_at, ts(&svc["updatedAt"]));

    // Services have no versions: re-registering a slug is a conflict.
    let (status, v) = app.post_json("/api/services", &body).await;
    expect_error(status, &v, 409, "conflict");

    let (status, v) = app.get_json("/api/services/BUILDER").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"], svc);
    let (status, v) = app.get_json("/api/services/missing").await;
    expect_error(status, &v, 404, "not_found");

    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "alpha", "displayName": "Alpha", "kind": "grpc-gateway", "baseUrl": "http://10.0.0.1:8080"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["healthPath"], Value::Null);
    assert_eq!(v["data"]["headers"], json!({}));
    let (status, v) = app.get_json("/api/services").await;
    assert_eq!(status, 200);
    let slugs: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["alpha", "builder"]);

    // PATCH a status; everything else stays.
    let (status, v) = app
        .patch_json("/api/services/builder", &json!({"status": "degraded"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let patched = &v["data"];
    assert_eq!(patched["status"], "degraded");
    for k in [
        "id",
        "displayName",
        "kind",
        "baseUrl",
        "healthPath",
        "headers",
        "metadata",
        "createdAt",
    ] {
        assert_eq!(patched[k], svc[k], "field {k}");
    }
    assert!(ts(&patched["updatedAt"]) >= created_at);
    let (_, v) = app.get_json("/api/services/builder").await;
    assert_eq!(v["data"]["status"], "degraded");

    let (status, v) = app
        .patch_json(
            "/api/services/builder",
            &json!({"healthPath": null, "baseUrl": "http://build.internal"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["healthPath"], Value::Null);
    assert_eq!(v["data"]["baseUrl"], "http://build.internal");

    // Other fields are validated; every problem at once, nothing changes.
    let (status, v) = app
        .patch_json(
            "/api/services/builder",
            &json!({"status": "sleepy", "baseUrl": "ftp://build", "healthPath": "healthz", "slug": "builder"}),
        )
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        problem_at(&details, "/status"),
        "must be one of healthy, degraded, unhealthy, unknown"
    );
    assert_eq!(
        problem_at(&details, "/baseUrl"),
        "must be an http or https URL"
    );
    problem_at(&details, "/healthPath");
    assert_eq!(details.len(), 3, "{details:?}");
    let (status, v) = app
        .patch_json("/api/services/builder", &json!({"slug": "renamed"}))
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    assert_eq!(
        details,
        [("/slug".to_string(), "cannot be changed".to_string())]
    );
    let (status, v) = app
        .patch_json("/api/services/missing", &json!({"status": "healthy"}))
        .await;
    expect_error(status, &v, 404, "not_found");
    let (_, v) = app.get_json("/api/services/builder").await;
    assert_eq!(v["data"]["status"], "degraded");

    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "bad slug", "displayName": " ", "kind": "HTTP", "baseUrl": "/relative",
                    "healthPath": "health", "headers": {"X-Num": 3, "Bad Header": "x"}, "metadata": [], "extra": true}),
        )
        .await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    let mut paths: Vec<&str> = details.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/baseUrl",
            "/displayName",
            "/extra",
            "/headers/Bad Header",
            "/headers/X-Num",
            "/healthPath",
            "/kind",
            "/metadata",
            "/slug"
        ]
    );
    assert!(
        problem_at(&details, "/headers/X-Num")
            .starts_with("must be a string or a secret reference"),
        "{details:?}"
    );
    let (status, v) = app.post_json("/api/services", &json!({})).await;
    let details = expect_error(status, &v, 400, "invalid_definition");
    for field in ["/slug", "/displayName", "/kind", "/baseUrl"] {
        assert_eq!(problem_at(&details, field), "is required");
    }
    let res = app
        .client
        .request(Method::PATCH, app.url("/api/services/builder"))
        .header(header::CONTENT_TYPE, "application/xml")
        .body("<status/>")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
}

/// Reads the event stream until `want` events matching `done` arrived; returns (type, data).
async fn read_events(
    res: reqwest::Response,
    want: usize,
    done: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while found.len() < want {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("events missing; got {found:?}, buffered {buf:?}"))
            .expect("stream open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if let Some(event) = event {
                let data: Value = serde_json::from_str(&data).expect("JSON data");
                assert_eq!(data["type"], event.as_str(), "{data}");
                if done(&event, &data["data"]) {
                    found.push((event, data["data"].clone()));
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_workflow_changes_arrive_on_the_event_stream() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/events?topics=service.*,workflow.definition.*"))
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "evented", "displayName": "Evented", "kind": "http", "baseUrl": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = app
        .patch_json("/api/services/evented", &json!({"status": "unhealthy"}))
        .await;
    assert_eq!(status, 200);
    app.job("ev-job", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "ev-flow", "name": "Ev", "steps": [{"id": "one", "jobSlug": "ev-job"}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let wf = v["data"].clone();

    let events = read_events(res, 3, |_, _| true).await;
    assert_eq!(events[0].0, "service.updated");
    assert_eq!(events[0].1["service"]["slug"], "evented");
    assert_eq!(events[0].1["service"]["status"], "unknown");
    assert_eq!(events[1].0, "service.updated");
    assert_eq!(events[1].1["service"]["status"], "unhealthy");
    assert_keys(&events[1].1["service"], SERVICE_KEYS);
    assert_eq!(events[2].0, "workflow.definition.updated");
    assert_eq!(events[2].1["workflow"], wf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_workflow_and_service_endpoints() {
    let app = spawn_app().await;
    let (status, doc) = app.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    for (path, methods) in [
        ("/api/workflows", &["get", "post"][..]),
        ("/api/workflows/{slug}", &["get", "patch", "delete"][..]),
        ("/api/workflows/{slug}/versions", &["get"][..]),
        ("/api/services", &["get", "post"][..]),
        ("/api/services/{slug}", &["get", "patch"][..]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} missing");
        }
    }
    for schema in [
        "WorkflowDefinition",
        "WorkflowDefinitionVersion",
        "WorkflowWithRuns",
        "Service",
        "ServiceStatus",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

/// api.md: `DELETE /api/jobs/:slug` is a 409 while a workflow references the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_used_by_a_workflow_cannot_be_deleted() {
    let app = spawn_app().await;
    diamond_jobs(&app).await;
    let (status, body) = app.post_json("/api/workflows", &diamond(1, "D")).await;
    assert_eq!(status, 201, "{body}");
    let res = app
        .client
        .delete(app.url("/api/jobs/wf-work"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    expect_error(status, &body, 409, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("diamond"),
        "names the workflow: {body}"
    );
    let (status, _) = app.get_json("/api/jobs/wf-work").await;
    assert_eq!(status, 200, "the job is still there");

    let res = app
        .client
        .delete(app.url("/api/workflows/diamond"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let res = app
        .client
        .delete(app.url("/api/jobs/wf-work"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204, "free once no workflow uses it");
}

/// The health poller against a real HTTP server whose answer the test switches: healthy,
/// unhealthy (with the error recorded), degraded, healthy again; each change is one
/// `service.updated` event. A service without `healthPath` is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_polling_keeps_service_status_current() {
    use std::sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    };
    // 0: 200 "ok"; 1: 503; 2: 200 {"status": "degraded"}.
    let mode = Arc::new(AtomicU16::new(0));
    let m = mode.clone();
    let health = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let m = m.clone();
            async move {
                match m.load(Ordering::SeqCst) {
                    0 => (axum::http::StatusCode::OK, "ok".to_string()),
                    1 => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down".to_string(),
                    ),
                    _ => (
                        axum::http::StatusCode::OK,
                        r#"{"status": "degraded"}"#.to_string(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, health).await });

    let db = crate::helpers::TestDb::new().await;
    let mut settings = crate::helpers::test_settings(&db);
    settings.health_interval = Duration::from_millis(100);
    let app = crate::helpers::spawn_app_with(db, settings).await;
    let events = app
        .client
        .get(app.url("/api/events?topics=service.*"))
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "polled", "displayName": "Polled", "kind": "http",
                    "baseUrl": base, "healthPath": "/healthz"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "manual", "displayName": "Manual", "kind": "http",
                    "baseUrl": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let wait_for = |want: &'static str| {
        let app = &app;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (_, v) = app.get_json("/api/services/polled").await;
                if v["data"]["status"] == want {
                    return v["data"].clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "service never became {want}: {v}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let up = wait_for("healthy").await;
    assert!(up["lastCheckedAt"].is_string(), "{up}");
    assert!(up["lastError"].is_null(), "{up}");
    mode.store(1, Ordering::SeqCst);
    let down = wait_for("unhealthy").await;
    assert_eq!(
        down["lastError"], "health check answered HTTP 503",
        "{down}"
    );
    mode.store(2, Ordering::SeqCst);
    let degraded = wait_for("degraded").await;
    assert!(degraded["lastError"].as_str().unwrap().contains("degraded"));
    mode.store(0, Ordering::SeqCst);
    let again = wait_for("healthy").await;
    assert!(again["lastError"].is_null(), "{again}");

    // One event per change (registration first), in order.
    let seen = read_events(events, 5, |_, d| d["service"]["slug"] == "polled").await;
    let statuses: Vec<&str> = seen
        .iter()
        .map(|(_, d)| d["service"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["unknown", "healthy", "unhealthy", "degraded", "healthy"]
    );
    let (_, manual) = app.get_json("/api/services/manual").await;
    assert_eq!(manual["data"]["status"], "unknown", "not polled: {manual}");
    assert!(manual["data"]["lastCheckedAt"].is_null(), "{manual}");
}
