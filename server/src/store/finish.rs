//! Recording a run's outcome: the conditional update to its terminal status together with its
//! last log lines, in one commit. Finishes that happen at the same moment share that commit
//! (group commit, see `group.rs`): on PostgreSQL one statement updates every run of the group
//! and stores all their lines; on SQLite one transaction does.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait,
    sea_query::Expr,
};
use serde_json::{Value, json};
use wire::{JobRun, RunStatus};

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
    /// The run as it is stored if the update applies (status, result, error, metrics,
    /// duration and `completedAt` = `updatedAt` set).
    run: JobRun,
    /// The lease owner the update requires.
    owner: String,
    /// (run id, attempt, stream, message), stored whether or not the update applies.
    log_lines: Vec<(String, i32, String, String)>,
}

impl Finish {
    fn at(&self) -> DateTime<Utc> {
        self.run.updated_at
    }
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
        let mut done = run.clone();
        done.status = status;
        done.result = result;
        done.error_message = error;
        done.metrics = metrics;
        done.duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
        done.completed_at = Some(now);
        done.updated_at = now;
        let finish = Finish {
            run: done,
            owner: owner.to_string(),
            log_lines,
        };
        // The writer holds the database handle, not the store (which holds the writer).
        let writer = || {
            let db = self.db.clone();
            move |group: Vec<Finish>| finish_group(db.clone(), group)
        };
        match self.finishes.submit(finish, writer).await {
            Ok(stored) => stored,
            // The group writer is gone (shutdown): written here.
            Err(Some(finish)) => {
                let applied = finish_many(&self.db, std::slice::from_ref(&finish)).await?;
                Ok(applied[0].then_some(finish.run))
            }
            Err(None) => Err(writer_stopped()),
        }
    }
}

/// Writes a group of finishes; per finish, the stored run (None: its update did not apply).
async fn finish_group(db: Database, group: Vec<Finish>) -> Vec<StoreResult<Option<JobRun>>> {
    match finish_many(&db, &group).await {
        Ok(applied) => {
            return group
                .into_iter()
                .zip(applied)
                .map(|(f, applied)| Ok(applied.then_some(f.run)))
                .collect();
        }
        // Nothing of the group was written (one statement, or one transaction): each finish is
        // written on its own, so every caller gets its own outcome.
        Err(e) if group.len() > 1 => {
            tracing::warn!(error = %e, finishes = group.len(), "a group of finishes failed; writing them one by one")
        }
        Err(e) => return vec![Err(e)],
    }
    let mut out = Vec::with_capacity(group.len());
    for f in group {
        out.push(
            finish_many(&db, std::slice::from_ref(&f))
                .await
                .map(|applied| applied[0].then_some(f.run)),
        );
    }
    out
}

/// Finishes in one commit; per finish, whether its run's update applied.
async fn finish_many(db: &Database, group: &[Finish]) -> StoreResult<Vec<bool>> {
    if db.is_postgres() {
        finish_many_postgres(db, group).await
    } else {
        finish_many_sqlite(db, group).await
    }
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
                        "message": message, "created_at": f.at()})
                    })
            })
            .collect(),
    )
}

/// Finishes in one statement: the outcomes as a JSON recordset joined to the runs (each update
/// as conditional as [`update_of`]'s), the log lines as a data-modifying CTE.
async fn finish_many_postgres(db: &Database, group: &[Finish]) -> StoreResult<Vec<bool>> {
    let outcomes: Vec<Value> = group
        .iter()
        .map(|f| {
            let r = &f.run;
            json!({"id": r.id, "attempt": r.attempt, "lease_owner": f.owner,
                "status": r.status.as_str(), "result": r.result, "error_message": r.error_message,
                "metrics": r.metrics, "duration_ms": r.duration_ms, "completed_at": f.at()})
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
    Ok(group.iter().map(|f| updated.contains(&f.run.id)).collect())
}

/// The conditional update of one finish: only the attempt this owner holds, still running.
fn update_of(f: &Finish) -> sea_orm::UpdateMany<job_run::Entity> {
    let r = &f.run;
    without_lease(job_run::Entity::update_many())
        .col_expr(job_run::Column::Status, Expr::value(r.status.as_str()))
        .col_expr(job_run::Column::Result, Expr::value(r.result.clone()))
        .col_expr(
            job_run::Column::ErrorMessage,
            Expr::value(r.error_message.clone()),
        )
        .col_expr(job_run::Column::Metrics, Expr::value(r.metrics.clone()))
        .col_expr(job_run::Column::DurationMs, Expr::value(r.duration_ms))
        .col_expr(job_run::Column::CompletedAt, Expr::value(f.at()))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(f.at()))
        .filter(job_run::Column::Id.eq(r.id.as_str()))
        .filter(job_run::Column::Attempt.eq(r.attempt))
        .filter(job_run::Column::LeaseOwner.eq(f.owner.as_str()))
        .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()))
}

/// Finishes in one SQLite transaction.
async fn finish_many_sqlite(db: &Database, group: &[Finish]) -> StoreResult<Vec<bool>> {
    let txn = db.conn.begin().await?;
    let lines: Vec<job_run_log::ActiveModel> = group
        .iter()
        .flat_map(|f| log_models(f.log_lines.clone(), f.at()))
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
        store::{
            entities::{job_run, job_run_log},
            run_to_wire,
        },
    };
    use wire::RunStatus;

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
            driver: None,
        }
    }

    fn finish(
        id: &str,
        owner: &str,
        status: RunStatus,
        result: Option<serde_json::Value>,
    ) -> Finish {
        let at = Utc::now();
        let mut run = run_to_wire(running(id, "w1")).unwrap();
        run.status = status;
        run.result = result;
        run.error_message = (status == RunStatus::Failed).then(|| "it broke".into());
        run.metrics = Some(json!({"n": 1}));
        run.duration_ms = Some(3);
        run.completed_at = Some(at);
        run.updated_at = at;
        Finish {
            run,
            owner: owner.into(),
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
            .map(|stored| stored.unwrap().is_some())
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
