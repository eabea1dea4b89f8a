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
    migrate(&db, &["down", "--steps", "1"]);
    let status = migrate(&db, &["status"]);
    assert!(
        status.contains("pending  m20261123_000001_jobs_foundation"),
        "{status}"
    );
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
        Some(2),
        "seeded jobs after re-migration: {jobs}"
    );
}
