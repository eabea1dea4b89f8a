//! Workflow runs and their steps. The orchestrator reads a run's whole state, decides, and
//! writes every change in one transaction whose first statement bumps the run's `revision`
//! only if nobody changed the run meanwhile: concurrent reconciliations of one run (two steps
//! finishing in two processes) serialize, and the loser reads again and re-decides.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use wire::{JobRun, StepRunStatus, WorkflowRun, WorkflowRunStatus, WorkflowRunStep};

use super::{
    PageRequest, Store, StoreResult, WorkflowRunFilter,
    entities::{job_run, workflow_run, workflow_run_step},
    listing, run_to_wire, stored_value,
};

/// A `workflow_runs` row's status.
fn run_status(id: &str, text: &str) -> StoreResult<WorkflowRunStatus> {
    stored_value(
        ("workflow_runs", id, "status"),
        text,
        WorkflowRunStatus::parse,
        WorkflowRunStatus::expected,
    )
}

fn workflow_run_to_wire(m: workflow_run::Model) -> StoreResult<WorkflowRun> {
    let status = run_status(&m.id, &m.status)?;
    Ok(WorkflowRun {
        id: m.id,
        workflow_definition_id: m.workflow_definition_id,
        workflow_slug: m.workflow_slug,
        workflow_version: m.workflow_version,
        status,
        parameters: m.parameters,
        context: m.context,
        error_message: m.error_message,
        current_step_id: m.current_step_id,
        current_step_index: m.current_step_index,
        metrics: m.metrics,
        triggered_by: m.triggered_by,
        trigger: m.trigger,
        started_at: m.started_at,
        completed_at: m.completed_at,
        duration_ms: m.duration_ms,
        created_at: m.created_at,
        updated_at: m.updated_at,
        provider: m.provider,
        execution_id: m.execution_id,
        execution_url: None,
    })
}

fn step_to_wire(m: workflow_run_step::Model) -> StoreResult<WorkflowRunStep> {
    let status = stored_value(
        ("workflow_run_steps", &m.id, "status"),
        &m.status,
        StepRunStatus::parse,
        StepRunStatus::expected,
    )?;
    Ok(WorkflowRunStep {
        logs_url: m
            .job_run_id
            .as_ref()
            .map(|id| format!("/api/job-runs/{id}/logs")),
        id: m.id,
        workflow_run_id: m.workflow_run_id,
        step_id: m.step_id,
        status,
        attempt: m.attempt,
        job_run_id: m.job_run_id,
        input: m.input,
        output: m.output,
        error_message: m.error_message,
        metrics: m.metrics,
        started_at: m.started_at,
        completed_at: m.completed_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Everything the orchestrator decides from: the run, the definition it started with, its
/// revision, and its steps in definition order.
#[derive(Debug, Clone)]
pub struct WorkflowRunState {
    pub run: WorkflowRun,
    pub definition: Value,
    pub revision: i64,
    pub idempotency_key: Option<String>,
    pub steps: Vec<WorkflowRunStep>,
}

/// A new workflow run with its step rows (all pending).
#[derive(Debug, Clone)]
pub struct NewWorkflowRun {
    pub run: WorkflowRun,
    pub definition: Value,
    pub idempotency_key: Option<String>,
    pub steps: Vec<WorkflowRunStep>,
}

/// The changes of one reconciliation.
#[derive(Debug, Clone, Default)]
pub struct RunChanges {
    pub run: Option<WorkflowRun>,
    pub steps: Vec<WorkflowRunStep>,
    pub job_runs: Vec<super::NewRun>,
}

/// Per (workflow slug, status): the number of runs and the newest run id (ids are UUIDv7, so
/// the status whose newest id is the greatest is the workflow's last run status).
#[derive(Debug, Clone)]
pub struct WorkflowRunStats {
    pub workflow_slug: String,
    pub status: WorkflowRunStatus,
    pub count: u64,
    pub newest_run_id: String,
}

pub enum InsertedWorkflowRun {
    New(WorkflowRunState),
    Existing(WorkflowRun),
}

/// A run's stored row and its steps as the orchestrator reads them.
fn run_state(m: workflow_run::Model, steps: Vec<WorkflowRunStep>) -> StoreResult<WorkflowRunState> {
    Ok(WorkflowRunState {
        definition: m.definition.clone(),
        revision: m.revision,
        idempotency_key: m.idempotency_key.clone(),
        run: workflow_run_to_wire(m)?,
        steps,
    })
}

/// The job runs of the steps that are not finished: the ones a reconciliation looks at.
fn active_job_run_ids(steps: &[WorkflowRunStep]) -> Vec<String> {
    steps
        .iter()
        .filter(|s| !s.status.is_terminal())
        .filter_map(|s| s.job_run_id.clone())
        .collect()
}

fn step_model(s: &WorkflowRunStep, position: i32) -> workflow_run_step::ActiveModel {
    workflow_run_step::ActiveModel {
        id: Set(s.id.clone()),
        workflow_run_id: Set(s.workflow_run_id.clone()),
        step_id: Set(s.step_id.clone()),
        position: Set(position),
        status: Set(s.status.as_str().to_string()),
        attempt: Set(s.attempt),
        job_run_id: Set(s.job_run_id.clone()),
        input: Set(s.input.clone()),
        output: Set(s.output.clone()),
        error_message: Set(s.error_message.clone()),
        metrics: Set(s.metrics.clone()),
        started_at: Set(s.started_at),
        completed_at: Set(s.completed_at),
        created_at: Set(s.created_at),
        updated_at: Set(s.updated_at),
    }
}

fn job_run_model(new: &super::NewRun) -> job_run::ActiveModel {
    super::new_run_model(new).into()
}

impl Store {
    /// Inserts a run and its steps; with an idempotency key already used for this workflow,
    /// returns that run instead.
    pub async fn insert_workflow_run(
        &self,
        new: NewWorkflowRun,
    ) -> StoreResult<InsertedWorkflowRun> {
        let key = new.idempotency_key.clone();
        let definition_id = new.run.workflow_definition_id.clone();
        if let Some(key) = &key
            && let Some(existing) = self.workflow_run_by_key(&definition_id, key).await?
        {
            return Ok(InsertedWorkflowRun::Existing(existing));
        }
        let r = &new.run;
        let model = workflow_run::ActiveModel {
            id: Set(r.id.clone()),
            workflow_definition_id: Set(r.workflow_definition_id.clone()),
            workflow_slug: Set(r.workflow_slug.clone()),
            workflow_version: Set(r.workflow_version),
            status: Set(r.status.as_str().to_string()),
            parameters: Set(r.parameters.clone()),
            context: Set(r.context.clone()),
            error_message: Set(None),
            current_step_id: Set(None),
            current_step_index: Set(None),
            metrics: Set(r.metrics.clone()),
            triggered_by: Set(r.triggered_by.clone()),
            trigger: Set(r.trigger.clone()),
            idempotency_key: Set(key.clone()),
            definition: Set(new.definition.clone()),
            revision: Set(0),
            provider: Set(r.provider.clone()),
            execution_id: Set(r.execution_id.clone()),
            started_at: Set(None),
            completed_at: Set(None),
            duration_ms: Set(None),
            created_at: Set(r.created_at),
            updated_at: Set(r.updated_at),
        };
        let steps: Vec<_> = new
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| step_model(s, i as i32))
            .collect();
        let txn = self.conn().begin().await?;
        let inserted = async {
            workflow_run::Entity::insert(model)
                .exec_without_returning(&txn)
                .await?;
            if !steps.is_empty() {
                workflow_run_step::Entity::insert_many(steps)
                    .exec_without_returning(&txn)
                    .await?;
            }
            Ok::<_, sea_orm::DbErr>(())
        }
        .await;
        match inserted {
            Ok(()) => {
                txn.commit().await?;
                Ok(InsertedWorkflowRun::New(WorkflowRunState {
                    run: new.run,
                    definition: new.definition,
                    revision: 0,
                    idempotency_key: key,
                    steps: new.steps,
                }))
            }
            Err(e) => {
                txn.rollback().await?;
                // A concurrent request with the same key won the unique index.
                if let Some(key) = &key
                    && let Some(existing) = self.workflow_run_by_key(&definition_id, key).await?
                {
                    return Ok(InsertedWorkflowRun::Existing(existing));
                }
                Err(e)
            }
        }
    }

    async fn workflow_run_by_key(
        &self,
        definition_id: &str,
        key: &str,
    ) -> StoreResult<Option<WorkflowRun>> {
        workflow_run::Entity::find()
            .filter(workflow_run::Column::WorkflowDefinitionId.eq(definition_id))
            .filter(workflow_run::Column::IdempotencyKey.eq(key))
            .one(self.conn())
            .await?
            .map(workflow_run_to_wire)
            .transpose()
    }

    pub async fn get_workflow_run(&self, id: &str) -> StoreResult<Option<WorkflowRun>> {
        workflow_run::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
            .map(workflow_run_to_wire)
            .transpose()
    }

    /// The run's steps in definition order.
    pub async fn workflow_run_steps(&self, run_id: &str) -> StoreResult<Vec<WorkflowRunStep>> {
        workflow_run_step::Entity::find()
            .filter(workflow_run_step::Column::WorkflowRunId.eq(run_id))
            .order_by_asc(workflow_run_step::Column::Position)
            .all(self.conn())
            .await?
            .into_iter()
            .map(step_to_wire)
            .collect()
    }

    pub async fn workflow_run_state(&self, id: &str) -> StoreResult<Option<WorkflowRunState>> {
        let Some(m) = workflow_run::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let steps = self.workflow_run_steps(id).await?;
        run_state(m, steps).map(Some)
    }

    /// Everything a reconciliation decides from, read consistently: the run's state and the
    /// job runs of its unfinished steps. On PostgreSQL one statement (one snapshot, one round
    /// trip: the steps and job runs come as JSON aggregates); on SQLite the run, then its
    /// steps, then the job runs (steps read after the run are at least as new as its revision,
    /// so a change in between fails the revision check of the write).
    pub async fn workflow_run_snapshot(
        &self,
        id: &str,
    ) -> StoreResult<Option<(WorkflowRunState, Vec<JobRun>)>> {
        if !self.db.is_postgres() {
            let Some(state) = self.workflow_run_state(id).await? else {
                return Ok(None);
            };
            let ids = active_job_run_ids(&state.steps);
            let job_runs = self.job_runs_by_ids(ids).await?;
            return Ok(Some((state, job_runs)));
        }
        use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
        let active = [StepRunStatus::Pending, StepRunStatus::Running].map(|s| s.as_str());
        let sql = format!(
            "SELECT w.*, \
             COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.position) \
                 FROM workflow_run_steps s WHERE s.workflow_run_id = w.id), '[]'::jsonb) \
                 AS steps_json, \
             COALESCE((SELECT jsonb_agg(to_jsonb(j)) FROM job_runs j WHERE j.id IN \
                 (SELECT s.job_run_id FROM workflow_run_steps s WHERE s.workflow_run_id = w.id \
                  AND s.status IN ('{}', '{}'))), '[]'::jsonb) AS job_runs_json \
             FROM workflow_runs w WHERE w.id = $1",
            active[0], active[1]
        );
        let Some(row) = self
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                [id.into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let m = workflow_run::Model::from_query_result(&row, "")?;
        let decode = |column: &str| -> StoreResult<Value> { row.try_get("", column) };
        let steps: Vec<workflow_run_step::Model> = serde_json::from_value(decode("steps_json")?)
            .map_err(|e| sea_orm::DbErr::Json(e.to_string()))?;
        let job_runs: Vec<job_run::Model> = serde_json::from_value(decode("job_runs_json")?)
            .map_err(|e| sea_orm::DbErr::Json(e.to_string()))?;
        let steps = steps
            .into_iter()
            .map(step_to_wire)
            .collect::<StoreResult<_>>()?;
        let state = run_state(m, steps)?;
        let job_runs = job_runs
            .into_iter()
            .map(run_to_wire)
            .collect::<StoreResult<_>>()?;
        Ok(Some((state, job_runs)))
    }

    /// Job runs by id (those a run's steps point at).
    pub async fn job_runs_by_ids(&self, ids: Vec<String>) -> StoreResult<Vec<JobRun>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        job_run::Entity::find()
            .filter(job_run::Column::Id.is_in(ids))
            .all(self.conn())
            .await?
            .into_iter()
            .map(run_to_wire)
            .collect()
    }

    /// Writes one reconciliation if the run is still at `revision`; false: someone else
    /// changed it first (nothing was written).
    pub async fn apply_workflow_changes(
        &self,
        run_id: &str,
        revision: i64,
        changes: &RunChanges,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        if self.db.is_postgres() {
            return self
                .apply_workflow_changes_pg(run_id, revision, changes, now)
                .await;
        }
        let txn = self.conn().begin().await?;
        // First statement: takes the write lock (SQLite) / the row lock (PostgreSQL).
        let mut update = workflow_run::Entity::update_many()
            .col_expr(
                workflow_run::Column::Revision,
                Expr::col(workflow_run::Column::Revision).add(1),
            )
            .col_expr(workflow_run::Column::UpdatedAt, Expr::value(now));
        if let Some(r) = &changes.run {
            update = update
                .col_expr(workflow_run::Column::Status, Expr::value(r.status.as_str()))
                .col_expr(
                    workflow_run::Column::Context,
                    Expr::value(r.context.clone()),
                )
                .col_expr(
                    workflow_run::Column::ErrorMessage,
                    Expr::value(r.error_message.clone()),
                )
                .col_expr(
                    workflow_run::Column::CurrentStepId,
                    Expr::value(r.current_step_id.clone()),
                )
                .col_expr(
                    workflow_run::Column::CurrentStepIndex,
                    Expr::value(r.current_step_index),
                )
                .col_expr(
                    workflow_run::Column::Metrics,
                    Expr::value(r.metrics.clone()),
                )
                .col_expr(workflow_run::Column::StartedAt, Expr::value(r.started_at))
                .col_expr(
                    workflow_run::Column::CompletedAt,
                    Expr::value(r.completed_at),
                )
                .col_expr(workflow_run::Column::DurationMs, Expr::value(r.duration_ms));
        }
        let res = update
            .filter(workflow_run::Column::Id.eq(run_id))
            .filter(workflow_run::Column::Revision.eq(revision))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        for s in &changes.steps {
            let mut m = step_model(s, 0);
            m.position = sea_orm::ActiveValue::NotSet;
            m.created_at = sea_orm::ActiveValue::NotSet;
            workflow_run_step::Entity::update(m).exec(&txn).await?;
        }
        if !changes.job_runs.is_empty() {
            job_run::Entity::insert_many(changes.job_runs.iter().map(job_run_model))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// [`Store::apply_workflow_changes`] on PostgreSQL as one statement: the run update with
    /// its revision check, every step update and the new job runs are data-modifying CTEs of
    /// one autocommitted statement (one round trip instead of BEGIN, one per row, COMMIT: this
    /// is on the critical path of every workflow step). The step and job-run rows travel as
    /// JSON arrays of whole rows (`jsonb_populate_recordset` types them by the tables); the
    /// other CTEs only write when the revision check's update did.
    async fn apply_workflow_changes_pg(
        &self,
        run_id: &str,
        revision: i64,
        changes: &RunChanges,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        use sea_orm::{ConnectionTrait, Iden, Iterable, Statement};
        let mut values: Vec<sea_orm::Value> = vec![run_id.into(), revision.into(), now.into()];
        let mut sql = String::from(
            "WITH r AS (UPDATE workflow_runs AS w SET revision = w.revision + 1, updated_at = $3",
        );
        if let Some(r) = &changes.run {
            sql.push_str(
                ", status = v.status, context = v.context, error_message = v.error_message, \
                 current_step_id = v.current_step_id, current_step_index = v.current_step_index, \
                 metrics = v.metrics, started_at = v.started_at, completed_at = v.completed_at, \
                 duration_ms = v.duration_ms \
                 FROM jsonb_populate_record(NULL::workflow_runs, $4::jsonb) AS v",
            );
            values.push(
                serde_json::json!({
                    "status": r.status.as_str(),
                    "context": r.context,
                    "error_message": r.error_message,
                    "current_step_id": r.current_step_id,
                    "current_step_index": r.current_step_index,
                    "metrics": r.metrics,
                    "started_at": r.started_at,
                    "completed_at": r.completed_at,
                    "duration_ms": r.duration_ms,
                })
                .into(),
            );
        }
        sql.push_str(" WHERE w.id = $1 AND w.revision = $2 RETURNING w.id)");
        if !changes.steps.is_empty() {
            let rows = changes
                .steps
                .iter()
                .map(|s| {
                    let m = step_model(s, 0);
                    sea_orm::TryIntoModel::try_into_model(m)
                })
                .collect::<Result<Vec<_>, _>>()?;
            values.push(serde_json::to_value(rows).unwrap_or_default().into());
            // Every column but the key, the run, the step id, the position and created_at.
            let sets = workflow_run_step::Column::iter()
                .map(|c| c.to_string())
                .filter(|c| {
                    !matches!(
                        c.as_str(),
                        "id" | "workflow_run_id" | "step_id" | "position" | "created_at"
                    )
                })
                .map(|c| format!("{c} = v.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(
                ", s AS (UPDATE workflow_run_steps AS t SET {sets} \
                 FROM jsonb_populate_recordset(NULL::workflow_run_steps, ${}::jsonb) AS v \
                 WHERE t.id = v.id AND EXISTS (SELECT 1 FROM r) RETURNING t.id)",
                values.len()
            ));
        }
        if !changes.job_runs.is_empty() {
            let rows = changes
                .job_runs
                .iter()
                .map(|j| sea_orm::TryIntoModel::try_into_model(job_run_model(j)))
                .collect::<Result<Vec<_>, _>>()?;
            values.push(serde_json::to_value(rows).unwrap_or_default().into());
            let cols = job_run::Column::iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(
                ", j AS (INSERT INTO job_runs ({cols}) SELECT {cols} \
                 FROM jsonb_populate_recordset(NULL::job_runs, ${}::jsonb) \
                 WHERE EXISTS (SELECT 1 FROM r) RETURNING id)",
                values.len()
            ));
        }
        sql.push_str(" SELECT count(*) AS applied FROM r");
        let row = self
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        let applied: i64 = match row {
            Some(row) => row.try_get("", "applied")?,
            None => 0,
        };
        Ok(applied == 1)
    }

    pub async fn list_workflow_runs(
        &self,
        f: &WorkflowRunFilter,
    ) -> StoreResult<(Vec<WorkflowRun>, u64, Option<String>)> {
        use workflow_run::Column as C;
        let mut cond = Condition::all();
        if let Some(slug) = &f.workflow_slug {
            cond = cond.add(C::WorkflowSlug.eq(slug.clone()));
        }
        if !f.statuses.is_empty() {
            cond = cond.add(C::Status.is_in(f.statuses.iter().map(|s| s.as_str())));
        }
        cond = cond.add(listing::run_search(
            f.q.as_deref(),
            C::Id,
            C::WorkflowSlug,
            C::ErrorMessage,
        ));
        let page = PageRequest::new(f.limit, f.offset, f.cursor.clone());
        let page =
            listing::page_of::<workflow_run::Entity, _>(self.conn(), cond, C::Id, &page, |r| {
                r.id.clone()
            })
            .await?;
        let runs = page
            .items
            .into_iter()
            .map(workflow_run_to_wire)
            .collect::<StoreResult<_>>()?;
        Ok((runs, page.total, page.next_cursor))
    }

    /// Ids of runs not yet finished, oldest first (the recovery sweep reconciles them).
    pub async fn active_workflow_run_ids(&self, limit: u64) -> StoreResult<Vec<String>> {
        workflow_run::Entity::find()
            .select_only()
            .column(workflow_run::Column::Id)
            .filter(workflow_run::Column::Status.is_in(["pending", "running"]))
            .filter(workflow_run::Column::Provider.eq(domain::workflow::Provider::NATIVE))
            .order_by_asc(workflow_run::Column::Id)
            .limit(limit)
            .into_tuple::<String>()
            .all(self.conn())
            .await
    }

    /// Unfinished runs of `provider`, oldest first, with their execution handles (a provider
    /// re-attaches to them at start-up).
    pub async fn active_provider_runs(
        &self,
        provider: &str,
        limit: u64,
    ) -> StoreResult<Vec<(String, Option<String>)>> {
        workflow_run::Entity::find()
            .select_only()
            .column(workflow_run::Column::Id)
            .column(workflow_run::Column::ExecutionId)
            .filter(workflow_run::Column::Status.is_in(["pending", "running"]))
            .filter(workflow_run::Column::Provider.eq(provider))
            .order_by_asc(workflow_run::Column::Id)
            .limit(limit)
            .into_tuple::<(String, Option<String>)>()
            .all(self.conn())
            .await
    }

    /// Records the engine's handle of a run's (current) execution.
    pub async fn set_execution_id(&self, run_id: &str, execution_id: &str) -> StoreResult<()> {
        workflow_run::Entity::update_many()
            .col_expr(workflow_run::Column::ExecutionId, Expr::value(execution_id))
            .filter(workflow_run::Column::Id.eq(run_id))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Whether any run of the workflow has not finished.
    pub async fn count_active_workflow_runs(&self, definition_id: &str) -> StoreResult<u64> {
        workflow_run::Entity::find()
            .filter(workflow_run::Column::WorkflowDefinitionId.eq(definition_id))
            .filter(workflow_run::Column::Status.is_in(["pending", "running"]))
            .count(self.conn())
            .await
    }

    /// Run counts and newest run id per (workflow slug, status): one grouped query.
    pub async fn workflow_run_stats(&self) -> StoreResult<Vec<WorkflowRunStats>> {
        #[derive(sea_orm::FromQueryResult)]
        struct Row {
            workflow_slug: String,
            status: String,
            n: i64,
            newest: String,
        }
        let rows = workflow_run::Entity::find()
            .select_only()
            .column(workflow_run::Column::WorkflowSlug)
            .column(workflow_run::Column::Status)
            .column_as(
                Expr::expr(sea_orm::sea_query::Func::count(Expr::col(
                    workflow_run::Column::Id,
                ))),
                "n",
            )
            .column_as(
                Expr::expr(sea_orm::sea_query::Func::max(Expr::col(
                    workflow_run::Column::Id,
                ))),
                "newest",
            )
            .group_by(workflow_run::Column::WorkflowSlug)
            .group_by(workflow_run::Column::Status)
            .into_model::<Row>()
            .all(self.conn())
            .await?;
        rows.into_iter()
            .map(|r| {
                // The group's newest row is one that holds the status.
                Ok(WorkflowRunStats {
                    status: run_status(&r.newest, &r.status)?,
                    workflow_slug: r.workflow_slug,
                    count: Ord::max(r.n, 0) as u64,
                    newest_run_id: r.newest,
                })
            })
            .collect()
    }

    /// The workflow runs with these ids (any order); one query.
    pub async fn workflow_runs_by_ids(&self, ids: Vec<String>) -> StoreResult<Vec<WorkflowRun>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        workflow_run::Entity::find()
            .filter(workflow_run::Column::Id.is_in(ids))
            .all(self.conn())
            .await?
            .into_iter()
            .map(workflow_run_to_wire)
            .collect()
    }
}
