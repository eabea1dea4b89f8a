//! Migrations are reversible on both databases, through the real `switchyard migrate` command.
use std::process::Command;

use crate::helpers::TestDb;

fn migrate(db: &TestDb, action: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.arg("--data-dir")
        .arg(db.data_dir())
        .env_remove("DATABASE_URL");
    if let Some(url) = &db.url {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd
        .arg("migrate")
        .args(action)
        .output()
        .expect("switchyard runs");
    assert!(
        out.status.success(),
        "migrate {action:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::new().await;
    let status = migrate(&db, &["status"]);
    assert!(
        status.contains("pending  m20261123_000001_jobs_foundation"),
        "{status}"
    );
    migrate(&db, &["up"]);
    let status = migrate(&db, &["status"]);
    assert!(
        status.contains("applied  m20261123_000001_jobs_foundation"),
        "{status}"
    );
    assert!(!status.contains("pending"), "{status}");
    // One step back undoes only the newest migration; without `--steps`, one step too.
    let names = [
        "m20261123_000001_jobs_foundation",
        "m20261123_000002_run_list_indexes",
        "m20261123_000003_workflows_and_services",
        "m20261123_000004_workflow_runs",
        "m20261123_000005_security_observability",
        "m20261205_000006_sessions_and_seeds",
        "m20261205_000007_run_search",
        "m20261205_000008_workflow_providers",
    ];
    for undone in (0..names.len()).rev() {
        if undone % 2 == 0 {
            migrate(&db, &["down"]);
        } else {
            migrate(&db, &["down", "--steps", "1"]);
        }
        let status = migrate(&db, &["status"]);
        for (i, name) in names.iter().enumerate() {
            let want = if i < undone { "applied" } else { "pending" };
            assert!(status.contains(&format!("{want}  {name}")), "{status}");
        }
    }
    // The tables are really gone and come back: the app starts and works on the same database.
    migrate(&db, &["up"]);
    let mut settings = crate::helpers::test_settings(&db);
    settings.worker.workers = 1;
    let app = crate::helpers::spawn_app_with(db, settings).await;
    let (status, body) = app.get_json("/api/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, jobs) = app.get_json("/api/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(
        jobs["data"].as_array().map(Vec::len),
        Some(3),
        "seeded jobs (repository-ingest, repository-build, service-call) after re-migration: {jobs}"
    );
}

/// Spent apalis tasks (fetched by a worker) are pruned from the queue table; pending ones are
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_queue_tasks_are_pruned_and_pending_ones_kept() {
    use serde_json::json;
    use server::{db::Database, engine::queue::RUN_QUEUE, store::Store};

    let app = crate::helpers::spawn_app().await;
    app.job("prune-noop", "builtin:noop", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        // A delay, however short, sends the run through the queue (a run due now may start on
        // an idle local worker without a queue task).
        ids.push(
            app.run("prune-noop", json!({"parameters": {"i": i}, "delayMs": 1}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        assert_eq!(app.wait_terminal(id).await["status"], "succeeded");
    }
    // One task due far in the future stays pending in the queue.
    app.run("prune-noop", json!({"delayMs": 3_600_000})).await;

    let db = Database::connect(&app.db.data_dir(), app.db.url.as_deref())
        .await
        .unwrap();
    let store = Store::new(db.clone());
    let count = |status: &'static str| {
        // `status` is one of our literals below, never input.
        let db = db.clone();
        async move {
            let sql = if db.is_postgres() {
                format!(
                    "SELECT COUNT(*) AS n FROM apalis.jobs WHERE job_type = '{RUN_QUEUE}' AND status = '{status}'"
                )
            } else {
                format!(
                    "SELECT COUNT(*) AS n FROM Jobs WHERE job_type = '{RUN_QUEUE}' AND status = '{status}'"
                )
            };
            let row = sea_orm::ConnectionTrait::query_one_raw(
                &db.conn,
                sea_orm::Statement::from_string(db.conn.get_database_backend(), sql),
            )
            .await
            .unwrap()
            .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    // Fetched tasks are `Queued` or `Running` (apalis result persistence is off; a task fetched
    // in a batch may still read `Queued`) or `Done`.
    let spent = count("Queued").await + count("Running").await + count("Done").await;
    assert_eq!(
        spent,
        5,
        "the five executed tasks are spent (pending: {})",
        count("Pending").await
    );
    // Nothing is old enough yet.
    assert_eq!(
        store
            .prune_queue(RUN_QUEUE, chrono::Utc::now() - chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        0
    );
    let pruned = store
        .prune_queue(
            RUN_QUEUE,
            chrono::Utc::now() + chrono::TimeDelta::seconds(5),
        )
        .await
        .unwrap();
    assert_eq!(pruned, 5);
    assert_eq!(
        count("Queued").await + count("Running").await + count("Done").await,
        0
    );
    assert_eq!(count("Pending").await, 1, "the delayed task must survive");
}
