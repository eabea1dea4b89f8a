//! A stored value the store cannot read is an error naming its table, row and column, never a
//! default: each test stores good rows, spoils one column with raw SQL, and reads it back.
//! On SQLite, and on PostgreSQL when `DATABASE_URL` points at one (as in `make test`).
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, IntoActiveModel};
use serde_json::json;

use super::{
    CatalogFilter, PageRequest, RunFilter, Store, StoreResult, WorkflowRunFilter,
    entities::{job_run, workflow_run, workflow_run_step},
};
use crate::db::{self, Database};

async fn spoil(store: &Store, sql: &str) {
    store
        .conn()
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Checks `read` failed with an error naming `row` and `column`.
#[track_caller]
fn fails_naming<T: std::fmt::Debug>(read: StoreResult<T>, what: &str, row: &str, column: &str) {
    match read {
        Err(DbErr::Type(message)) => {
            assert!(
                message.starts_with(&format!("{row}: {column} ")),
                "{what}: {message}"
            )
        }
        other => panic!("{what}: expected an error naming {row} {column}, got {other:?}"),
    }
}

fn first_page() -> CatalogFilter {
    CatalogFilter {
        page: PageRequest::new(10, 0, None),
        ..Default::default()
    }
}

async fn save_job(store: &Store, slug: &str) -> wire::JobDefinition {
    let spec = domain::jobs::parse_job_spec(
        &json!({"slug": slug, "name": slug, "entryPoint": "builtin:noop"}),
        &["builtin:noop"],
    )
    .unwrap();
    store.save_job(&spec, None, Utc::now()).await.unwrap()
}

fn pending_run(id: &str, job: &wire::JobDefinition) -> job_run::Model {
    let now = Utc::now();
    job_run::Model {
        id: id.into(),
        job_definition_id: job.id.clone(),
        job_slug: job.slug.clone(),
        job_version: 1,
        entry_point: "builtin:noop".into(),
        status: "pending".into(),
        parameters: json!({}),
        result: None,
        error_message: None,
        metrics: None,
        context: None,
        timeout_ms: 1000,
        attempt: 1,
        max_attempts: 1,
        retry_policy: serde_json::to_value(wire::RetryPolicy::default()).unwrap(),
        trigger: "manual".into(),
        workflow_run_id: None,
        workflow_step_id: None,
        idempotency_key: None,
        duration_ms: None,
        scheduled_at: now,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        lease_owner: None,
        lease_expires_at: None,
        dispatched_at: None,
        driver: None,
    }
}

async fn job_definitions(store: &Store) {
    let job = save_job(store, "spoiled-type").await;
    let row = format!("job_definitions row {}", job.id);
    spoil(
        store,
        &format!(
            "UPDATE job_definitions SET job_type = 'cron' WHERE id = '{}'",
            job.id
        ),
    )
    .await;
    let read = store.get_job("spoiled-type").await;
    fails_naming(read, "get_job", &row, "job_type");
    fails_naming(store.list_jobs().await, "list_jobs", &row, "job_type");
    let page = store.page_jobs(&first_page()).await;
    fails_naming(page, "page_jobs", &row, "job_type");
    store.delete_job(&job.id, &job.slug).await.unwrap();

    let job = save_job(store, "spoiled-policy").await;
    spoil(
        store,
        &format!(
            "UPDATE job_definitions SET retry_policy = '\"twice\"' WHERE id = '{}'",
            job.id
        ),
    )
    .await;
    let row = format!("job_definitions row {}", job.id);
    let read = store.get_job("spoiled-policy").await;
    fails_naming(read, "get_job", &row, "retry_policy");
    store.delete_job(&job.id, &job.slug).await.unwrap();

    // A version snapshot that cannot be read is an error, not a version left out.
    let job = save_job(store, "spoiled-version").await;
    spoil(
        store,
        "UPDATE job_definition_versions SET definition = '{\"version\": \"one\"}' \
         WHERE slug = 'spoiled-version'",
    )
    .await;
    let versions = store.job_versions("spoiled-version").await;
    let Err(DbErr::Type(message)) = &versions else {
        panic!("job_versions: {versions:?}");
    };
    assert!(
        message.starts_with("job_definition_versions row ") && message.contains(": definition "),
        "{message}"
    );
    let page = store
        .page_job_versions("spoiled-version", &PageRequest::new(10, 0, None))
        .await;
    assert!(matches!(page, Err(DbErr::Type(_))), "{page:?}");
    store.delete_job(&job.id, &job.slug).await.unwrap();
}

async fn job_runs(store: &Store) {
    let job = save_job(store, "runs").await;
    for id in ["run-status", "run-trigger", "run-policy"] {
        pending_run(id, &job)
            .into_active_model()
            .insert(store.conn())
            .await
            .unwrap();
    }
    spoil(
        store,
        "UPDATE job_runs SET status = 'finished' WHERE id = 'run-status'",
    )
    .await;
    let row = "job_runs row run-status";
    fails_naming(store.get_run("run-status").await, "get_run", row, "status");
    let filter = RunFilter {
        limit: 10,
        ..Default::default()
    };
    let list = store.list_runs(&filter).await;
    fails_naming(list, "list_runs", row, "status");
    let recent = store.recent_runs(&job.id, 10).await;
    fails_naming(recent, "recent_runs", row, "status");
    let stats = store.run_stats_by_job().await;
    fails_naming(stats, "run_stats_by_job", row, "status");
    let canceled = store.cancel("run-status", Utc::now()).await;
    fails_naming(canceled, "cancel", row, "status");
    let hourly = store
        .hourly_counts(Utc::now() - chrono::TimeDelta::hours(1))
        .await;
    assert!(matches!(hourly, Err(DbErr::Type(_))), "{hourly:?}");
    spoil(store, "DELETE FROM job_runs WHERE id = 'run-status'").await;

    spoil(
        store,
        "UPDATE job_runs SET trigger = 'cron' WHERE id = 'run-trigger'",
    )
    .await;
    let read = store.get_run("run-trigger").await;
    fails_naming(read, "get_run", "job_runs row run-trigger", "trigger");
    let by_ids = store.job_runs_by_ids(vec!["run-trigger".into()]).await;
    fails_naming(
        by_ids,
        "job_runs_by_ids",
        "job_runs row run-trigger",
        "trigger",
    );
    spoil(store, "DELETE FROM job_runs WHERE id = 'run-trigger'").await;

    // The claimed run's retry policy: no default policy for an unreadable one.
    spoil(
        store,
        "UPDATE job_runs SET retry_policy = '{\"maxAttempts\": \"many\"}' WHERE id = 'run-policy'",
    )
    .await;
    let now = Utc::now();
    let claimed = store
        .claim(
            "run-policy",
            1,
            "w1",
            now + chrono::TimeDelta::seconds(30),
            now,
        )
        .await;
    fails_naming(claimed, "claim", "job_runs row run-policy", "retry_policy");
    spoil(store, "DELETE FROM job_runs WHERE id = 'run-policy'").await;
    store.delete_job(&job.id, &job.slug).await.unwrap();
}

async fn workflow_runs(store: &Store) {
    let now = Utc::now();
    workflow_run::Model {
        id: "wf-run".into(),
        workflow_definition_id: "wf".into(),
        workflow_slug: "wf".into(),
        workflow_version: 1,
        status: "running".into(),
        parameters: json!({}),
        context: json!({}),
        error_message: None,
        current_step_id: None,
        current_step_index: None,
        metrics: json!({}),
        triggered_by: None,
        trigger: json!({"type": "manual"}),
        idempotency_key: None,
        definition: json!({}),
        revision: 0,
        provider: "native".into(),
        execution_id: None,
        started_at: Some(now),
        completed_at: None,
        duration_ms: None,
        created_at: now,
        updated_at: now,
    }
    .into_active_model()
    .insert(store.conn())
    .await
    .unwrap();
    workflow_run_step::Model {
        id: "wf-step".into(),
        workflow_run_id: "wf-run".into(),
        step_id: "s0".into(),
        position: 0,
        status: "pending".into(),
        attempt: 0,
        job_run_id: None,
        input: None,
        output: None,
        error_message: None,
        metrics: None,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
    }
    .into_active_model()
    .insert(store.conn())
    .await
    .unwrap();
    store.get_workflow_run("wf-run").await.unwrap().unwrap();

    spoil(
        store,
        "UPDATE workflow_run_steps SET status = 'waiting' WHERE id = 'wf-step'",
    )
    .await;
    let row = "workflow_run_steps row wf-step";
    let steps = store.workflow_run_steps("wf-run").await;
    fails_naming(steps, "workflow_run_steps", row, "status");
    let snapshot = store.workflow_run_snapshot("wf-run").await;
    fails_naming(snapshot, "workflow_run_snapshot", row, "status");

    spoil(
        store,
        "UPDATE workflow_run_steps SET status = 'pending' WHERE id = 'wf-step'",
    )
    .await;
    spoil(
        store,
        "UPDATE workflow_runs SET status = 'paused' WHERE id = 'wf-run'",
    )
    .await;
    let row = "workflow_runs row wf-run";
    let read = store.get_workflow_run("wf-run").await;
    fails_naming(read, "get_workflow_run", row, "status");
    let snapshot = store.workflow_run_snapshot("wf-run").await;
    fails_naming(snapshot, "workflow_run_snapshot", row, "status");
    let filter = WorkflowRunFilter {
        limit: 10,
        ..Default::default()
    };
    let list = store.list_workflow_runs(&filter).await;
    fails_naming(list, "list_workflow_runs", row, "status");
    let stats = store.workflow_run_stats().await;
    fails_naming(stats, "workflow_run_stats", row, "status");
    let by_ids = store.workflow_runs_by_ids(vec!["wf-run".into()]).await;
    fails_naming(by_ids, "workflow_runs_by_ids", row, "status");
    spoil(store, "DELETE FROM workflow_run_steps WHERE id = 'wf-step'").await;
    spoil(store, "DELETE FROM workflow_runs WHERE id = 'wf-run'").await;
}

async fn workflows_and_services(store: &Store) {
    save_job(store, "step-job").await;
    struct Jobs;
    impl domain::workflow::Catalog for Jobs {
        fn job_exists(&self, slug: &str) -> bool {
            slug == "step-job"
        }
        fn service_exists(&self, _: &str) -> bool {
            false
        }
    }
    let body = json!({"slug": "wf-spoiled", "name": "Spoiled", "version": 1,
        "steps": [{"id": "s0", "jobSlug": "step-job", "dependsOn": [], "parameters": {}}]});
    let spec = domain::workflow::parse_workflow_spec(&body, &Jobs).unwrap();
    store.save_workflow(&spec, None, Utc::now()).await.unwrap();
    spoil(
        store,
        "UPDATE workflow_definition_versions SET definition = '[]' WHERE slug = 'wf-spoiled'",
    )
    .await;
    let versions = store.workflow_versions("wf-spoiled").await;
    let Err(DbErr::Type(message)) = &versions else {
        panic!("workflow_versions: {versions:?}");
    };
    assert!(
        message.starts_with("workflow_definition_versions row ")
            && message.contains(": definition "),
        "{message}"
    );
    let page = store
        .page_workflow_versions("wf-spoiled", &PageRequest::new(10, 0, None))
        .await;
    assert!(matches!(page, Err(DbErr::Type(_))), "{page:?}");

    let spec = domain::services::parse_service_spec(&json!({"slug": "svc", "displayName": "Svc",
        "kind": "http", "baseUrl": "http://127.0.0.1:9"}))
    .unwrap();
    let service = store.save_service(&spec, None, Utc::now()).await.unwrap();
    spoil(
        store,
        &format!(
            "UPDATE services SET status = 'asleep' WHERE id = '{}'",
            service.id
        ),
    )
    .await;
    let row = format!("services row {}", service.id);
    fails_naming(
        store.get_service("svc").await,
        "get_service",
        &row,
        "status",
    );
    fails_naming(store.list_services().await, "list_services", &row, "status");
    let with_headers = store.get_service_with_headers("svc").await;
    fails_naming(with_headers, "get_service_with_headers", &row, "status");
    let page = store.page_services(&first_page()).await;
    fails_naming(page, "page_services", &row, "status");
}

async fn check(db: Database) {
    let store = Store::new(db);
    job_definitions(&store).await;
    job_runs(&store).await;
    workflow_runs(&store).await;
    workflows_and_services(&store).await;
}

#[tokio::test]
async fn an_unreadable_stored_value_is_an_error_naming_its_row() {
    let dir = tempfile::tempdir().unwrap();
    check(
        Database::connect_and_migrate(dir.path(), None)
            .await
            .unwrap(),
    )
    .await;
    if let Some(admin) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    {
        let url = db::create_scratch_postgres(&admin, "switchyard_unit")
            .await
            .unwrap();
        let pg = Database::connect_and_migrate(dir.path(), Some(&url))
            .await
            .unwrap();
        check(pg.clone()).await;
        pg.conn.close().await.unwrap();
        db::drop_scratch_postgres(&admin, &url).await.unwrap();
    }
}

#[test]
fn the_error_names_table_row_column_and_the_spellings() {
    let e = super::status_of("r1", "finished").unwrap_err();
    assert_eq!(
        e.to_string(),
        DbErr::Type(
            "job_runs row r1: status \"finished\" is not one of pending, running, succeeded, \
             failed, canceled, expired"
                .into()
        )
        .to_string()
    );
}
