//! Runs that a dropped connection or a database hiccup cannot hurt (issue 15): work after a
//! commit survives a client that disconnects, and so does the audit entry of the write; a
//! finish whose write fails is retried, not run again; a handler whose lease cannot be renewed
//! is stopped; triggers' keys and trigger types are the server's alone. The database's faults
//! are real: a lock held by another connection, or a trigger that makes one kind of write fail.
//! Run on SQLite and PostgreSQL. (The crash tests with a restarted PostgreSQL and a worker whose
//! clock is wrong are in `engine.rs`.)
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, http::Uri};
use serde_json::{Value, json};
use server::db::{Database, Pool};
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings};

fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_string()
}

/// A second connection to the app's database, as another program would open it.
pub(crate) async fn raw_db(app: &TestApp) -> Database {
    Database::connect(&app.db.data_dir(), app.db.url.as_deref())
        .await
        .expect("database")
}

pub(crate) async fn exec(db: &Database, sql: &str) {
    use sea_orm::ConnectionTrait;
    db.conn
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Another connection holding the lock that writing `job_runs` needs, until released: on
/// SQLite the database's write lock (`BEGIN IMMEDIATE`), on PostgreSQL `LOCK TABLE job_runs IN
/// EXCLUSIVE MODE` (reads go on, writes wait).
struct WriteLock {
    conn: Option<LockConn>,
}

enum LockConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl WriteLock {
    async fn hold(db: &Database) -> WriteLock {
        let conn = match &db.pool {
            Pool::Sqlite(pool) => {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                LockConn::Sqlite(c)
            }
            Pool::Postgres(pool) => {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query("BEGIN").execute(&mut *c).await.unwrap();
                sqlx::query("LOCK TABLE job_runs IN EXCLUSIVE MODE")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                LockConn::Postgres(c)
            }
        };
        WriteLock { conn: Some(conn) }
    }

    async fn release(mut self) {
        match self.conn.take() {
            Some(LockConn::Sqlite(mut c)) => {
                sqlx::query("COMMIT").execute(&mut *c).await.unwrap();
            }
            Some(LockConn::Postgres(mut c)) => {
                sqlx::query("COMMIT").execute(&mut *c).await.unwrap();
            }
            None => {}
        }
    }
}

/// Sends `POST path` with `body` over a raw connection and closes it without reading the
/// answer, the way a client that goes away does.
async fn post_and_disconnect(app: &TestApp, path: &str, body: &Value, wait: Duration) {
    let authority = app.address.trim_start_matches("http://").to_string();
    let body = body.to_string();
    let mut tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.flush().await.unwrap();
    // The server has the request and is waiting for the lock when the client leaves.
    tokio::time::sleep(wait).await;
    drop(tcp);
}

/// Audit entries of `action`.
async fn audit_entries(app: &TestApp, action: &str) -> Vec<Value> {
    let (status, v) = app
        .get_json(&format!("/api/audit-logs?action={action}"))
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Polls `probe` until it returns Some, failing after `timeout` with `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An app whose leases last 10 s: a run left claimed without a worker would sit `running` that
/// long before the recovery sweep could notice it.
async fn app_with_long_lease() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.lease_ms = 10_000;
    spawn_app_with(db, settings).await
}

/// A client that disconnects right after `POST /api/jobs/:slug/run` loses no attempt: the run
/// (stored already claimed by this process, started here) executes at once as attempt 1, and
/// the accepted write has its audit entry.
#[tokio::test]
async fn a_client_that_disconnects_after_starting_a_run_loses_no_attempt_and_no_audit_entry() {
    let app = app_with_long_lease().await;
    app.job(
        "quick",
        "builtin:noop",
        json!({"retryPolicy": {"maxAttempts": 3}}),
    )
    .await;
    let raw = raw_db(&app).await;
    // The run's insert waits for the lock; the client leaves meanwhile.
    let lock = WriteLock::hold(&raw).await;
    post_and_disconnect(
        &app,
        "/api/jobs/quick/run",
        &json!({"parameters": {}}),
        Duration::from_millis(1000),
    )
    .await;
    lock.release().await;
    // Well within the 10 s lease: it ran at once, as attempt 1.
    let run = eventually("the run to succeed", Duration::from_secs(4), || async {
        let (_, v) = app.get_json("/api/job-runs?job=quick").await;
        let run = v["data"][0].clone();
        (run["status"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(run["attempt"], 1, "{run}");
    let id = id_of(&run);
    let log = app.logs(&id).await;
    assert!(!log.contains("worker lost"), "{log}");
    let entries = eventually("the audit entry", Duration::from_secs(3), || async {
        let entries = audit_entries(&app, "job.run").await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["status"], "ok", "{}", entries[0]);
    assert_eq!(entries[0]["details"]["id"], id.as_str(), "{}", entries[0]);
    app.shutdown().await;
}

/// The same for a workflow run: its first step starts at once, and the write is audited.
#[tokio::test]
async fn a_client_that_disconnects_after_starting_a_workflow_run_loses_no_step() {
    let app = app_with_long_lease().await;
    app.job(
        "quick",
        "builtin:noop",
        json!({"retryPolicy": {"maxAttempts": 3}}),
    )
    .await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "one", "name": "One",
                "steps": [{"id": "a", "jobSlug": "quick", "parameters": {}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let raw = raw_db(&app).await;
    let lock = WriteLock::hold(&raw).await;
    post_and_disconnect(
        &app,
        "/api/workflows/one/run",
        &json!({}),
        Duration::from_millis(1000),
    )
    .await;
    lock.release().await;
    let run = eventually(
        "the workflow run to succeed",
        Duration::from_secs(4),
        || async {
            let (_, v) = app.get_json("/api/workflows/one/runs").await;
            let run = v["data"][0].clone();
            (run["status"] == "succeeded").then_some(run)
        },
    )
    .await;
    let (_, steps) = app
        .get_json(&format!("/api/workflow-runs/{}/steps", id_of(&run)))
        .await;
    let step = &steps["data"]["steps"][0];
    let job_run = app
        .get_run(step["jobRunId"].as_str().expect("the step's job run"))
        .await;
    assert_eq!(job_run["attempt"], 1, "{job_run}");
    assert_eq!(job_run["status"], "succeeded", "{job_run}");
    let entries = eventually("the audit entry", Duration::from_secs(3), || async {
        let entries = audit_entries(&app, "workflow.run").await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(entries[0]["status"], "ok", "{}", entries[0]);
    assert_eq!(
        entries[0]["details"]["id"],
        run["id"].as_str().unwrap(),
        "{}",
        entries[0]
    );
    app.shutdown().await;
}

/// A local HTTP server counting requests per path; each answer takes `delay`.
pub(crate) async fn counting_server(delay: Duration) -> (String, Arc<Mutex<HashMap<String, u32>>>) {
    let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let record = hits.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        *record
            .lock()
            .unwrap()
            .entry(uri.path().to_string())
            .or_default() += 1;
        async move {
            tokio::time::sleep(delay).await;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (base, hits)
}

/// Makes one kind of write to `job_runs` fail while the table `fault_<name>` holds a row: a
/// database trigger raising an error for the rows `when` (a condition on OLD and NEW) selects.
pub(crate) async fn fault(db: &Database, name: &str, when: &str) {
    if db.is_postgres() {
        exec(db, &format!("CREATE TABLE fault_{name} (x integer)")).await;
        exec(
            db,
            &format!(
                "CREATE FUNCTION fault_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF ({when}) AND EXISTS (SELECT 1 FROM fault_{name}) THEN \
                 RAISE EXCEPTION 'injected fault {name}'; END IF; RETURN NEW; END $$"
            ),
        )
        .await;
        exec(
            db,
            &format!(
                "CREATE TRIGGER fault_{name} BEFORE UPDATE ON job_runs FOR EACH ROW \
                 EXECUTE FUNCTION fault_{name}()"
            ),
        )
        .await;
    } else {
        exec(db, &format!("CREATE TABLE fault_{name} (x integer)")).await;
        exec(
            db,
            &format!(
                "CREATE TRIGGER fault_{name} BEFORE UPDATE ON job_runs FOR EACH ROW \
                 WHEN ({when}) AND EXISTS (SELECT 1 FROM fault_{name}) \
                 BEGIN SELECT RAISE(ABORT, 'injected fault {name}'); END"
            ),
        )
        .await;
    }
}

/// A finish whose write fails (here: for 700 ms, several tries) is retried until it is
/// stored, while the lease lasts; the completed attempt is not run again.
#[tokio::test]
async fn a_finish_that_fails_is_retried_not_run_again() {
    let app = spawn_app().await;
    let (base, hits) = counting_server(Duration::ZERO).await;
    app.job(
        "call",
        "builtin:http",
        json!({"defaultParameters": {"method": "GET", "url": format!("{base}/once")},
            "retryPolicy": {"maxAttempts": 3}}),
    )
    .await;
    let raw = raw_db(&app).await;
    fault(
        &raw,
        "finish",
        "NEW.status = 'succeeded' AND OLD.status = 'running'",
    )
    .await;
    exec(&raw, "INSERT INTO fault_finish VALUES (1)").await;
    let run = app.run("call", json!({})).await;
    let id = id_of(&run);
    eventually("the handler's call", Duration::from_secs(5), || async {
        (hits.lock().unwrap().get("/once").copied() == Some(1)).then_some(())
    })
    .await;
    // The finish fails now, and is tried again and again meanwhile.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let meanwhile = app.get_run(&id).await;
    assert_eq!(meanwhile["status"], "running", "{meanwhile}");
    exec(&raw, "DELETE FROM fault_finish").await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    // Past the lease (3 s) and a recovery sweep: nothing ran it again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hits.lock().unwrap().get("/once").copied(), Some(1));
    let after = app.get_run(&id).await;
    assert_eq!(
        (after["status"].as_str(), after["attempt"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{after}"
    );
    app.shutdown().await;
}

/// A handler is stopped as soon as its lease is lost (another worker holds the run now) or
/// cannot be renewed (the renewals fail until the lease ends): from then on another worker may
/// start the same attempt.
#[tokio::test]
async fn a_handler_whose_lease_is_lost_or_cannot_be_renewed_is_stopped() {
    let app = spawn_app().await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 1}, "timeoutMs": 120000}),
    )
    .await;
    let raw = raw_db(&app).await;

    // Renewals fail (the database refuses them) from now on.
    fault(
        &raw,
        "renewal",
        "NEW.status = 'running' AND OLD.status = 'running' \
         AND NEW.lease_expires_at <> OLD.lease_expires_at",
    )
    .await;
    let run = app
        .run("nap", json!({"parameters": {"durationMs": 60000}}))
        .await;
    let id = id_of(&run);
    app.wait_for_status(&id, &["running"], Duration::from_secs(5))
        .await;
    exec(&raw, "INSERT INTO fault_renewal VALUES (1)").await;
    let started = tokio::time::Instant::now();
    // The 3 s lease ends without a renewal: the handler is stopped before it does.
    let log = eventually("the handler to stop", Duration::from_secs(8), || async {
        let log = app.logs(&id).await;
        log.contains("could not renew the lease").then_some(log)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(4), "{log}");
    exec(&raw, "DELETE FROM fault_renewal").await;
    // The lease ends and the recovery sweep fails the run (no attempt left).
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("worker lost"),
        "{done}"
    );

    // Lost: another worker holds the run now.
    let run = app
        .run("nap", json!({"parameters": {"durationMs": 60000}}))
        .await;
    let id = id_of(&run);
    app.wait_for_status(&id, &["running"], Duration::from_secs(5))
        .await;
    exec(
        &raw,
        &format!("UPDATE job_runs SET lease_owner = 'another-worker' WHERE id = '{id}'"),
    )
    .await;
    eventually("the handler to stop", Duration::from_secs(4), || async {
        app.logs(&id)
            .await
            .contains("lease lost: another worker took this run over")
            .then_some(())
    })
    .await;
    app.shutdown().await;
}

/// Trigger idempotency keys live in a namespace callers cannot write to, and the trigger types
/// and `triggeredBy` values of the server's triggers cannot be claimed by a request (400 naming
/// the field). A caller that sends the keys the schedule will use cannot pre-empt its fires.
#[tokio::test]
async fn callers_cannot_pre_empt_or_impersonate_triggers() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "ticker", "name": "Ticker",
                "steps": [{"id": "a", "jobSlug": "echo", "parameters": {}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let refused = |body: Value| {
        let app = &app;
        async move {
            let (status, v) = app.post_json("/api/workflows/ticker/run", &body).await;
            assert_eq!(status, 400, "{body} was accepted: {v}");
            assert_eq!(v["error"]["code"], "invalid_request", "{v}");
            v["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(refused(json!({"trigger": "schedule"})).await, ["/trigger"]);
    assert_eq!(
        refused(json!({"trigger": {"type": "event", "event": "job.run.failed"}})).await,
        ["/trigger/type"]
    );
    assert_eq!(
        refused(json!({"trigger": {"type": "manual", "rerunOf": "x"}})).await,
        ["/trigger/rerunOf"]
    );
    assert_eq!(
        refused(json!({"triggeredBy": "scheduler"})).await,
        ["/triggeredBy"]
    );
    assert_eq!(
        refused(json!({"triggeredBy": "event:job.run.failed"})).await,
        ["/triggeredBy"]
    );
    assert_eq!(
        refused(json!({"idempotencyKey": "switchyard:schedule:v1:0:x"})).await,
        ["/idempotencyKey"]
    );
    // Job runs take no trigger at all, and their keys share the rule.
    let (status, v) = app
        .post_json("/api/jobs/echo/run", &json!({"trigger": "schedule"}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["details"][0]["path"], "/trigger", "{v}");
    let (status, v) = app
        .post_json(
            "/api/jobs/echo/run",
            &json!({"idempotencyKey": "switchyard:event:1:0"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["details"][0]["path"], "/idempotencyKey", "{v}");

    // Pre-emption: the keys the schedule's next fires would have carried, taken first.
    let now = chrono::Utc::now();
    let first = now.timestamp() + 3;
    let fires: Vec<String> = (first..first + 3)
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
                .unwrap()
                .to_rfc3339()
        })
        .collect();
    for at in &fires {
        for key in [format!("schedule:v2:0:{at}"), format!("schedule:v1:0:{at}")] {
            let (status, v) = app
                .post_json("/api/workflows/ticker/run", &json!({"idempotencyKey": key}))
                .await;
            assert_eq!(status, 202, "{v}");
        }
    }
    let (status, v) = app
        .patch_json(
            "/api/workflows/ticker",
            &json!({"triggers": [{"type": "schedule", "options": {"cron": "* * * * * *"}}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let version = v["data"]["version"].as_i64().unwrap();
    assert!(version <= 2, "the keys above assumed version 1 or 2: {v}");
    // Every one of those fires starts its scheduled run anyway.
    let last = fires.last().unwrap().clone();
    let runs = eventually("the scheduled fires", Duration::from_secs(15), || async {
        let (_, v) = app.get_json("/api/workflows/ticker/runs?limit=100").await;
        let runs = v["data"].as_array().cloned().unwrap_or_default();
        runs.iter()
            .any(|r| {
                r["trigger"]["type"] == "schedule"
                    && r["trigger"]["firedAt"]
                        .as_str()
                        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                        .is_some_and(|t| t.to_rfc3339() >= last)
            })
            .then_some(runs)
    })
    .await;
    app.patch_json("/api/workflows/ticker", &json!({"triggers": []}))
        .await;
    for at in &fires {
        let fired = runs.iter().any(|r| {
            r["trigger"]["type"] == "schedule"
                && r["trigger"]["firedAt"]
                    .as_str()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .is_some_and(|t| &t.to_rfc3339() == at)
        });
        assert!(fired, "the fire at {at} was pre-empted: {runs:?}");
    }
    app.shutdown().await;
}
