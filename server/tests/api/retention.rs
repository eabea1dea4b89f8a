//! Retention (issue 15): finished runs older than `--retain-runs-days` or beyond the newest
//! `--retain-runs-per-definition` of their job or workflow, events older than
//! `--retain-events-days` and audit entries older than `--retain-audit-days` are deleted by the
//! pruner of one process at a time, in small batches, never a running run or a workflow run's
//! job runs before the workflow run; the database shrinks back (row counts on both databases,
//! the page count and file size on SQLite). Run on SQLite and PostgreSQL.
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use server::{
    db::{Database, Pool},
    retention::{ADVISORY_KEY, Pruner},
    settings::RetentionSettings,
    store::Store,
};

use crate::{
    durability::{exec, raw_db},
    helpers::{TestApp, TestDb, spawn_app_with, test_settings},
};

// The bench's seeding (a module of the binary, which tests cannot import), by path: it uses
// only the library's public entities and connection.
#[path = "../../src/bin/switchyard/bench/seed.rs"]
mod seed;
use seed::seed_finished_runs;

/// Runs `sql` (with `?` placeholders) with `values`.
async fn exec_with(db: &Database, sql: &str, values: Vec<sea_orm::Value>) {
    let (backend, sql) = if db.is_postgres() {
        let mut n = 0;
        let numbered: String = sql
            .chars()
            .map(|c| {
                if c == '?' {
                    n += 1;
                    format!("${n}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        (sea_orm::DatabaseBackend::Postgres, numbered)
    } else {
        (sea_orm::DatabaseBackend::Sqlite, sql.to_string())
    };
    db.conn
        .execute_raw(Statement::from_sql_and_values(backend, &sql, values))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(db: &Database, sql: &str) -> i64 {
    let row = db
        .conn
        .query_one_raw(Statement::from_string(db.conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index::<i64>(0).unwrap()
}

fn retention(per_definition: u64, interval_ms: u64) -> RetentionSettings {
    RetentionSettings {
        retain_runs_days: 30,
        retain_runs_per_definition: per_definition,
        retain_events_days: 7,
        retain_audit_days: 90,
        prune_interval_ms: interval_ms,
    }
}

async fn app_on(db: TestDb, retention: RetentionSettings) -> TestApp {
    let mut settings = test_settings(&db);
    settings.retention = retention;
    spawn_app_with(db, settings).await
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// The SQLite database's page count and free pages, after a checkpoint that waits for nobody
/// (`PASSIVE`: a blocking one would hold up the app's writers meanwhile).
async fn sqlite_pages(db: &Database) -> (i64, i64) {
    exec(db, "PRAGMA wal_checkpoint(PASSIVE)").await;
    (
        count(db, "SELECT page_count FROM pragma_page_count()").await,
        count(db, "SELECT freelist_count FROM pragma_freelist_count()").await,
    )
}

#[tokio::test]
async fn retention_deletes_what_it_no_longer_keeps_and_the_database_shrinks_back() {
    // Filled with the pruner off; then started again with it on.
    let app = app_on(TestDb::new().await, retention(5, 0)).await;
    app.job("old", "builtin:noop", json!({})).await;
    app.job("quick", "builtin:noop", json!({})).await;
    app.job(
        "slow",
        "builtin:sleep",
        json!({"defaultParameters": {"durationMs": 120000}, "timeoutMs": 600000}),
    )
    .await;
    for (slug, steps) in [
        (
            "flow",
            json!([{"id": "a", "jobSlug": "quick", "parameters": {}}]),
        ),
        (
            "held",
            json!([{"id": "a", "jobSlug": "slow", "parameters": {}}]),
        ),
    ] {
        let (status, v) = app
            .post_json(
                "/api/workflows",
                &json!({"slug": slug, "name": slug, "steps": steps}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let raw = raw_db(&app).await;
    let store = Store::new(raw.clone());
    let old_ago = Utc::now() - TimeDelta::days(40);

    // 300 runs of `old` that ended 40 days ago, each with 10 log lines of 2 KB.
    let old = store.get_job("old").await.unwrap().unwrap();
    seed_finished_runs(&raw.conn, &old, 300, old_ago, TimeDelta::days(1))
        .await
        .unwrap();
    let lines = if raw.is_postgres() {
        "INSERT INTO job_run_logs (run_id, attempt, stream, message, created_at) \
         SELECT r.id, 1, 'stdout', repeat('x', 2000), r.created_at FROM job_runs r \
         CROSS JOIN generate_series(1, 10) WHERE r.job_slug = 'old'"
    } else {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
         INSERT INTO job_run_logs (run_id, attempt, stream, message, created_at) \
         SELECT r.id, 1, 'stdout', printf('%.2000c', 'x'), r.created_at FROM job_runs r \
         CROSS JOIN n WHERE r.job_slug = 'old'"
    };
    exec(&raw, lines).await;
    // Eight recent runs of `quick`: the newest five stay (per definition).
    let mut quick = Vec::new();
    for i in 0..8 {
        let run = app.run("quick", json!({"parameters": {"i": i}})).await;
        quick.push(id_of(&run));
        app.wait_terminal(quick.last().unwrap()).await;
    }
    // A run still running, created 40 days ago: never deleted.
    let slow = id_of(&app.run("slow", json!({})).await);
    app.wait_for_status(&slow, &["running"], Duration::from_secs(5))
        .await;
    exec_with(
        &raw,
        "UPDATE job_runs SET created_at = ? WHERE id = ?",
        vec![old_ago.into(), slow.clone().into()],
    )
    .await;
    // Workflow runs: three finished, two of them 40 days ago; one still running, as old.
    let mut flows = Vec::new();
    for _ in 0..3 {
        let (status, v) = app.post_json("/api/workflows/flow/run", &json!({})).await;
        assert_eq!(status, 202, "{v}");
        flows.push(id_of(&v["data"]));
    }
    for id in &flows {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
            if v["data"]["status"] == "succeeded" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, v) = app.post_json("/api/workflows/held/run", &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let held = id_of(&v["data"]);
    for id in [&flows[0], &flows[1], &held] {
        exec_with(
            &raw,
            "UPDATE workflow_runs SET created_at = ?, completed_at = \
             CASE WHEN completed_at IS NULL THEN NULL ELSE ? END WHERE id = ?",
            vec![old_ago.into(), old_ago.into(), id.clone().into()],
        )
        .await;
    }
    // Events: all but the newest are 8 days old. Audit: the definitions' entries 100 days.
    let newest_event = count(&raw, "SELECT MAX(id) FROM events").await;
    exec_with(
        &raw,
        "UPDATE events SET created_at = ? WHERE id < ?",
        vec![
            (Utc::now() - TimeDelta::days(8)).into(),
            newest_event.into(),
        ],
    )
    .await;
    exec_with(
        &raw,
        "UPDATE audit_logs SET created_at = ? WHERE action IN ('job.create', 'workflow.create')",
        vec![(Utc::now() - TimeDelta::days(100)).into()],
    )
    .await;
    let audit_before = count(&raw, "SELECT COUNT(*) FROM audit_logs").await;
    let audit_old = count(
        &raw,
        "SELECT COUNT(*) FROM audit_logs WHERE action IN ('job.create', 'workflow.create')",
    )
    .await;
    assert!(audit_old >= 5, "{audit_old}");
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM job_runs WHERE job_slug = 'old'").await,
        300
    );
    assert!(count(&raw, "SELECT COUNT(*) FROM job_run_logs").await >= 3000);
    let size_before = if raw.is_postgres() {
        None
    } else {
        assert_eq!(
            count(&raw, "SELECT auto_vacuum FROM pragma_auto_vacuum()").await,
            2,
            "a new SQLite file uses incremental auto-vacuum"
        );
        Some(sqlite_pages(&raw).await.0)
    };

    // The pruner on: its first pass comes 300 ms after the start.
    let db = app.shutdown().await;
    let app = app_on(db, retention(5, 300)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(&raw, "SELECT COUNT(*) FROM job_runs WHERE job_slug = 'old'").await;
        let events = count(&raw, "SELECT COUNT(*) FROM events").await;
        let flows_left = count(
            &raw,
            "SELECT COUNT(*) FROM workflow_runs WHERE workflow_slug = 'flow'",
        )
        .await;
        let audit = count(&raw, "SELECT COUNT(*) FROM audit_logs").await;
        if left == 0
            && flows_left == 1
            && audit <= audit_before - audit_old
            && events < newest_event
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned: old runs {left}, flow runs {flows_left}, audit {audit}, events {events}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing of the old runs is left, their log lines included.
    assert_eq!(
        count(
            &raw,
            "SELECT COUNT(*) FROM job_run_logs l WHERE NOT EXISTS \
             (SELECT 1 FROM job_runs r WHERE r.id = l.run_id)"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &raw,
            "SELECT COUNT(*) FROM job_run_logs WHERE length(message) = 2000"
        )
        .await,
        0
    );
    // The newest five runs of `quick` that belong to no workflow stay.
    let (_, v) = app.get_json("/api/job-runs?job=quick&limit=100").await;
    let kept: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["workflowRunId"].is_null())
        .map(id_of)
        .collect();
    let mut newest: Vec<String> = quick[3..].to_vec();
    newest.reverse();
    assert_eq!(kept, newest);
    // The old running run stays, running.
    assert_eq!(app.get_run(&slow).await["status"], "running");
    // Of the workflow runs: the recent one and the old unfinished one stay, with their steps
    // and job runs; the two old finished ones are gone with theirs.
    for (id, stays) in [
        (&flows[0], false),
        (&flows[1], false),
        (&flows[2], true),
        (&held, true),
    ] {
        let (status, _) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
        assert_eq!(status, if stays { 200 } else { 404 }, "workflow run {id}");
        let steps = count(
            &raw,
            &format!("SELECT COUNT(*) FROM workflow_run_steps WHERE workflow_run_id = '{id}'"),
        )
        .await;
        let job_runs = count(
            &raw,
            &format!("SELECT COUNT(*) FROM job_runs WHERE workflow_run_id = '{id}'"),
        )
        .await;
        assert_eq!(
            (steps, job_runs),
            if stays { (1, 1) } else { (0, 0) },
            "workflow run {id}"
        );
    }
    // Events younger than 7 days and audit entries younger than 90 stay.
    assert_eq!(
        count(
            &raw,
            &format!("SELECT COUNT(*) FROM events WHERE id < {newest_event}")
        )
        .await,
        0
    );
    assert!(count(&raw, "SELECT COUNT(*) FROM events").await >= 1);
    assert_eq!(
        count(
            &raw,
            "SELECT COUNT(*) FROM audit_logs WHERE action IN ('job.create', 'workflow.create')"
        )
        .await,
        0
    );
    assert!(
        count(
            &raw,
            "SELECT COUNT(*) FROM audit_logs WHERE action = 'job.run'"
        )
        .await
            >= 9
    );
    // SQLite: the file gave the freed pages back.
    if let Some(pages_before) = size_before {
        // Once the pass has given the free pages back (it ends with that) and a checkpoint has
        // moved the shrink into the file.
        let file = app.db.data_dir().join("switchyard.db");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (pages, free) = sqlite_pages(&raw).await;
            let bytes = std::fs::metadata(&file).unwrap().len();
            if free == 0 && pages * 2 < pages_before && bytes < (pages_before as u64) * 4096 / 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pages_before} pages before; now {pages} pages ({free} free), the file {bytes} bytes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (status, v) = app
        .patch_json(
            &format!("/api/job-runs/{slow}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    app.shutdown().await;
}

/// Two pruners on one database: while one holds the pruning lock (PostgreSQL: the advisory
/// lock; SQLite: the lock file), the other does nothing.
#[tokio::test]
async fn one_pruner_at_a_time() {
    let db = TestDb::new().await;
    let raw = Database::connect_and_migrate(&db.data_dir(), db.url.as_deref())
        .await
        .unwrap();
    let pruner = Pruner::new(Store::new(raw.clone()), retention(0, 0), &db.data_dir());
    assert!(pruner.pass_if_first().await.unwrap().is_some(), "alone");
    match &raw.pool {
        Pool::Postgres(pool) => {
            let mut other = pool.begin().await.unwrap();
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(ADVISORY_KEY)
                .fetch_one(&mut *other)
                .await
                .unwrap();
            assert!(got);
            assert!(pruner.pass_if_first().await.unwrap().is_none());
            other.rollback().await.unwrap();
        }
        Pool::Sqlite(_) => {
            let file = std::fs::File::open(db.data_dir().join("retention.lock")).unwrap();
            let other = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| e)
                .unwrap();
            assert!(pruner.pass_if_first().await.unwrap().is_none());
            drop(other);
        }
    }
    assert!(pruner.pass_if_first().await.unwrap().is_some(), "released");
    raw.close(Duration::from_secs(5)).await;
}

/// A SQLite file made before retention existed (no auto-vacuum) is converted once at start,
/// so that what retention frees goes back to the file system.
#[tokio::test]
async fn an_older_sqlite_file_is_converted_to_incremental_vacuum() {
    if crate::helpers::postgres_admin_url().is_some() {
        eprintln!("skipped: SQLite only");
        return;
    }
    let db = TestDb::new().await;
    {
        use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
        let file = db.data_dir().join("switchyard.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE older (x integer)")
            .execute(&mut conn)
            .await
            .unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, 0);
    }
    let app = app_on(db, retention(0, 0)).await;
    let raw = raw_db(&app).await;
    assert_eq!(
        count(&raw, "SELECT auto_vacuum FROM pragma_auto_vacuum()").await,
        2
    );
    app.shutdown().await;
}
