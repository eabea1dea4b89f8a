//! Recording a run's outcome: the conditional update to its terminal status together with its
//! last log lines, in one commit. Finishes that happen at the same moment share that commit
//! (group commit, see `group.rs`): on PostgreSQL one statement updates every run of the group
//! and stores all their lines; on SQLite one transaction does.
use app::wire::{JobRun, RunStatus};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait, Statement,
    TransactionTrait,
    sea_query::{Expr, PostgresQueryBuilder},
};
use serde_json::{Value, json};

use super::{
    Store, StoreResult,
    entities::{job_run, job_run_log},
    group::writer_stopped,
    log_models, without_lease,
};
use crate::db::Database;

/// One run's outcome, as recorded by [`Store::finish`].
#[derive(Debug)]
pub(super) struct Finish {
    id: String,
    attempt: i32,
    owner: String,
    status: RunStatus,
    result: Option<Value>,
    error: Option<String>,
    metrics: Option<Value>,
    duration_ms: Option<i64>,
    at: DateTime<Utc>,
    /// (run id, attempt, stream, message), stored whether or not the update applies.
    log_lines: Vec<(String, i32, String, String)>,
}

impl Store {
    /// Ends the run (terminal status) if this owner still holds it, storing `log_lines` (its
    /// last log lines) in the same commit. Returns the stored run; None when the run was
    /// canceled or taken over meanwhile (the lines are stored anyway).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        run: &JobRun,
        owner: &str,
        status: RunStatus,
        result: Option<Value>,
        error: Option<String>,
        metrics: Option<Value>,
        now: DateTime<Utc>,
        log_lines: Vec<(String, i32, String, String)>,
    ) -> StoreResult<Option<JobRun>> {
        let duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
        let mut done = run.clone();
        done.status = status;
        done.result = result.clone();
        done.error_message = error.clone();
        done.metrics = metrics.clone();
        done.duration_ms = duration_ms;
        done.completed_at = Some(now);
        done.updated_at = now;
        let finish = Finish {
            id: run.id.clone(),
            attempt: run.attempt,
            owner: owner.to_string(),
            status,
            result,
            error,
            metrics,
            duration_ms,
            at: now,
            log_lines,
        };
        // The writer holds the database handle, not the store (which holds the writer).
        let writer = || {
            let db = self.db.clone();
            move |group: Vec<Finish>| finish_group(db.clone(), group)
        };
        let applied = match self.finishes.submit(finish, writer).await {
            Ok(applied) => applied?,
            // The group writer is gone (shutdown): written here.
            Err(Some(finish)) => finish_one(&self.db, &finish).await?,
            Err(None) => return Err(writer_stopped()),
        };
        Ok(applied.then_some(done))
    }
}

/// The conditional update of one finish: only the attempt this owner holds, still running.
fn update_of(f: &Finish) -> sea_orm::UpdateMany<job_run::Entity> {
    without_lease(job_run::Entity::update_many())
        .col_expr(job_run::Column::Status, Expr::value(f.status.as_str()))
        .col_expr(job_run::Column::Result, Expr::value(f.result.clone()))
        .col_expr(job_run::Column::ErrorMessage, Expr::value(f.error.clone()))
        .col_expr(job_run::Column::Metrics, Expr::value(f.metrics.clone()))
        .col_expr(job_run::Column::DurationMs, Expr::value(f.duration_ms))
        .col_expr(job_run::Column::CompletedAt, Expr::value(f.at))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(f.at))
        .filter(job_run::Column::Id.eq(f.id.as_str()))
        .filter(job_run::Column::Attempt.eq(f.attempt))
        .filter(job_run::Column::LeaseOwner.eq(f.owner.as_str()))
        .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()))
}

/// Writes a group of finishes; one outcome (whether the run's update applied) per finish.
async fn finish_group(db: Database, group: Vec<Finish>) -> Vec<StoreResult<bool>> {
    if group.len() > 1 {
        let together = if db.is_postgres() {
            finish_many_postgres(&db, &group).await
        } else {
            finish_many_sqlite(&db, &group).await
        };
        match together {
            Ok(applied) => return applied.into_iter().map(Ok).collect(),
            // Nothing of the group was written (one statement, or one transaction): each
            // finish is written on its own, so every caller gets its own outcome.
            Err(e) => {
                tracing::warn!(error = %e, finishes = group.len(), "a group of finishes failed; writing them one by one")
            }
        }
    }
    let mut out = Vec::with_capacity(group.len());
    for f in &group {
        out.push(finish_one(&db, f).await);
    }
    out
}

/// One finish in one commit: on PostgreSQL one statement (the log lines as a data-modifying
/// CTE, passed as one JSON array), on SQLite one transaction.
async fn finish_one(db: &Database, f: &Finish) -> StoreResult<bool> {
    let update = update_of(f);
    if f.log_lines.is_empty() {
        return Ok(update.exec(&db.conn).await?.rows_affected == 1);
    }
    if !db.is_postgres() {
        let txn = db.conn.begin().await?;
        job_run_log::Entity::insert_many(log_models(f.log_lines.clone(), f.at))
            .exec_without_returning(&txn)
            .await?;
        let res = update.exec(&txn).await?;
        txn.commit().await?;
        return Ok(res.rows_affected == 1);
    }
    let (sql, values) = update.into_query().build(PostgresQueryBuilder);
    let mut values = values.0;
    values.push(log_json(std::slice::from_ref(f)).into());
    let sql = format!(
        "WITH l AS (INSERT INTO job_run_logs (run_id, attempt, stream, message, created_at) \
         SELECT x.run_id, x.attempt, x.stream, x.message, x.created_at \
         FROM jsonb_to_recordset(${lines}::jsonb) \
         AS x(run_id text, attempt integer, stream text, message text, created_at timestamptz)) {sql}",
        lines = values.len(),
    );
    let res = db
        .conn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// The log lines of `group` as one JSON array of rows.
fn log_json(group: &[Finish]) -> Value {
    Value::Array(
        group
            .iter()
            .flat_map(|f| {
                f.log_lines
                    .iter()
                    .map(|(run_id, attempt, stream, message)| {
                        json!({"run_id": run_id, "attempt": attempt, "stream": stream,
                        "message": message, "created_at": f.at})
                    })
            })
            .collect(),
    )
}

/// A group of finishes in one statement: the outcomes as a JSON recordset joined to the runs
/// (each update as conditional as [`update_of`]'s), the log lines as a data-modifying CTE.
async fn finish_many_postgres(db: &Database, group: &[Finish]) -> StoreResult<Vec<bool>> {
    let outcomes: Vec<Value> = group
        .iter()
        .map(|f| {
            json!({"id": f.id, "attempt": f.attempt, "lease_owner": f.owner,
                "status": f.status.as_str(), "result": f.result, "error_message": f.error,
                "metrics": f.metrics, "duration_ms": f.duration_ms, "completed_at": f.at})
        })
        .collect();
    let sql = "WITH v AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id text, \
         attempt integer, lease_owner text, status text, result jsonb, error_message text, \
         metrics jsonb, duration_ms bigint, completed_at timestamptz)), \
         l AS (INSERT INTO job_run_logs (run_id, attempt, stream, message, created_at) \
         SELECT x.run_id, x.attempt, x.stream, x.message, x.created_at \
         FROM jsonb_to_recordset($2::jsonb) \
         AS x(run_id text, attempt integer, stream text, message text, created_at timestamptz)) \
         UPDATE job_runs AS r SET status = v.status, result = v.result, \
         error_message = v.error_message, metrics = v.metrics, duration_ms = v.duration_ms, \
         completed_at = v.completed_at, updated_at = v.completed_at, lease_owner = NULL, \
         lease_expires_at = NULL \
         FROM v WHERE r.id = v.id AND r.attempt = v.attempt AND r.lease_owner = v.lease_owner \
         AND r.status = 'running' RETURNING r.id";
    let rows = db
        .conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [Value::Array(outcomes).into(), log_json(group).into()],
        ))
        .await?;
    let mut updated = std::collections::HashSet::new();
    for row in rows {
        updated.insert(row.try_get::<String>("", "id")?);
    }
    Ok(group.iter().map(|f| updated.contains(&f.id)).collect())
}

/// A group of finishes in one SQLite transaction.
async fn finish_many_sqlite(db: &Database, group: &[Finish]) -> StoreResult<Vec<bool>> {
    let txn = db.conn.begin().await?;
    let lines: Vec<job_run_log::ActiveModel> = group
        .iter()
        .flat_map(|f| log_models(f.log_lines.clone(), f.at))
        .collect();
    if !lines.is_empty() {
        job_run_log::Entity::insert_many(lines)
            .exec_without_returning(&txn)
            .await?;
    }
    let mut applied = Vec::with_capacity(group.len());
    for f in group {
        applied.push(update_of(f).exec(&txn).await?.rows_affected == 1);
    }
    txn.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};
    use serde_json::json;

    use super::{Finish, finish_group};
    use crate::{
        db::{self, Database},
        store::entities::{job_run, job_run_log},
    };
    use app::wire::RunStatus;

    fn running(id: &str, owner: &str) -> job_run::Model {
        let now = Utc::now();
        job_run::Model {
            id: id.into(),
            job_definition_id: "job".into(),
            job_slug: "job".into(),
            job_version: 1,
            entry_point: "builtin:noop".into(),
            status: "running".into(),
            parameters: json!({}),
            result: None,
            error_message: None,
            metrics: None,
            context: None,
            timeout_ms: 1000,
            attempt: 1,
            max_attempts: 1,
            retry_policy: json!({}),
            trigger: "manual".into(),
            workflow_run_id: None,
            workflow_step_id: None,
            idempotency_key: None,
            duration_ms: None,
            scheduled_at: now,
            started_at: Some(now),
            completed_at: None,
            created_at: now,
            updated_at: now,
            lease_owner: Some(owner.into()),
            lease_expires_at: Some(now + chrono::Duration::seconds(30)),
            dispatched_at: None,
        }
    }

    fn finish(
        id: &str,
        owner: &str,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Finish {
        Finish {
            id: id.into(),
            attempt: 1,
            owner: owner.into(),
            status,
            result,
            error: (status == RunStatus::Failed).then(|| "it broke".into()),
            metrics: Some(json!({"n": 1})),
            duration_ms: Some(3),
            at: Utc::now(),
            log_lines: vec![(id.into(), 1, "system".into(), format!("{id} done"))],
        }
    }

    async fn check(db: Database) {
        for id in ["a", "b", "c"] {
            running(id, "w1")
                .into_active_model()
                .insert(&db.conn)
                .await
                .unwrap();
        }
        let group = vec![
            finish("a", "w1", RunStatus::Succeeded, Some(json!({"x": [1, 2]}))),
            // Taken over by another worker meanwhile: its update must not apply.
            finish("b", "w2", RunStatus::Succeeded, None),
            finish("c", "w1", RunStatus::Failed, None),
        ];
        let outcomes: Vec<bool> = finish_group(db.clone(), group)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(outcomes, vec![true, false, true]);
        let get = |id: &'static str| {
            let conn = db.conn.clone();
            async move {
                job_run::Entity::find_by_id(id)
                    .one(&conn)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let a = get("a").await;
        assert_eq!(a.status, "succeeded");
        assert_eq!(a.result, Some(json!({"x": [1, 2]})));
        assert_eq!(a.metrics, Some(json!({"n": 1})));
        assert_eq!(a.duration_ms, Some(3));
        assert!(a.completed_at.is_some() && a.lease_owner.is_none());
        let b = get("b").await;
        assert_eq!(
            (b.status.as_str(), b.lease_owner.as_deref()),
            ("running", Some("w1"))
        );
        let c = get("c").await;
        assert_eq!(c.status, "failed");
        assert_eq!(c.error_message.as_deref(), Some("it broke"));
        assert_eq!(c.result, None);
        // Every finish's log lines are stored, applied or not.
        let mut lines: Vec<String> = job_run_log::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect();
        lines.sort();
        assert_eq!(lines, vec!["a done", "b done", "c done"]);
    }

    /// A group of finishes applies each one's own condition and stores every line; on SQLite,
    /// and on PostgreSQL when `DATABASE_URL` points at one (as in `make test`).
    #[tokio::test]
    async fn a_group_of_finishes_gives_each_run_its_own_outcome() {
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
}
