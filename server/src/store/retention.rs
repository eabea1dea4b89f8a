//! Deleting what retention no longer keeps (see `crate::retention`), in small batches: each
//! statement touches at most a few hundred runs or a few thousand log lines, so no lock is held
//! long. Only finished runs are deleted: a job run of a workflow run only with that workflow run,
//! and a workflow run only once none of its steps' job runs is pending or running. Log lines go
//! first and the run last, so a pass cut short leaves no orphan: the run is found again.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, sea_query::Query,
};
use wire::{RunStatus, WorkflowRunStatus};

use super::{
    Store, StoreResult,
    entities::{
        alert_delivery, audit_log, event, job_run, job_run_log, workflow_run, workflow_run_step,
    },
};

fn count_of(column: impl sea_orm::sea_query::IntoColumnRef) -> sea_orm::sea_query::Expr {
    sea_orm::sea_query::Expr::expr(sea_orm::sea_query::Func::count(
        sea_orm::sea_query::Expr::col(column),
    ))
}

/// Most log lines one statement deletes.
const LOG_BATCH: u64 = 5000;

fn finished_job_statuses() -> Vec<&'static str> {
    RunStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

fn unfinished_job_statuses() -> Vec<&'static str> {
    RunStatus::ALL
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

fn finished_workflow_statuses() -> Vec<&'static str> {
    WorkflowRunStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

/// What deleting a batch of runs removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeletedRuns {
    pub workflow_runs: u64,
    pub job_runs: u64,
    pub log_lines: u64,
}

impl std::ops::AddAssign for DeletedRuns {
    fn add_assign(&mut self, o: DeletedRuns) {
        self.workflow_runs += o.workflow_runs;
        self.job_runs += o.job_runs;
        self.log_lines += o.log_lines;
    }
}

impl Store {
    /// Finished job runs of no workflow run that ended before `before`, oldest first. The
    /// created-at index bounds the scan: a run created after `before` cannot have ended before.
    pub async fn job_runs_ended_before(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<String>> {
        job_run::Entity::find()
            .select_only()
            .column(job_run::Column::Id)
            .filter(job_run::Column::CreatedAt.lt(before))
            .filter(job_run::Column::CompletedAt.lt(before))
            .filter(job_run::Column::Status.is_in(finished_job_statuses()))
            .filter(job_run::Column::WorkflowRunId.is_null())
            .order_by_asc(job_run::Column::CreatedAt)
            .limit(limit)
            .into_tuple()
            .all(self.conn())
            .await
    }

    /// Finished job runs of no workflow run beyond the newest `keep` of their job, up to
    /// `limit` of them.
    pub async fn job_runs_beyond(&self, keep: u64, limit: u64) -> StoreResult<Vec<String>> {
        use job_run::Column as C;
        let finished = Condition::all()
            .add(C::Status.is_in(finished_job_statuses()))
            .add(C::WorkflowRunId.is_null());
        self.finished_beyond::<job_run::Entity>(C::JobDefinitionId, C::Id, finished, keep, limit)
            .await
    }

    /// Ids of `E`'s rows matching `finished` beyond the newest `keep` (by `id`) of each
    /// `group`, up to `limit` of them: the groups over `keep` in one grouped query, then each
    /// group's surplus.
    async fn finished_beyond<E: EntityTrait>(
        &self,
        group: E::Column,
        id: E::Column,
        finished: Condition,
        keep: u64,
        limit: u64,
    ) -> StoreResult<Vec<String>> {
        let over: Vec<String> = E::find()
            .select_only()
            .column(group)
            .filter(finished.clone())
            .group_by(group)
            .having(sea_orm::sea_query::ExprTrait::gt(count_of(id), keep as i64))
            .into_tuple()
            .all(self.conn())
            .await?;
        let mut ids = Vec::new();
        for value in over {
            let left = limit.saturating_sub(ids.len() as u64);
            if left == 0 {
                break;
            }
            let more: Vec<String> = E::find()
                .select_only()
                .column(id)
                .filter(group.eq(value))
                .filter(finished.clone())
                .order_by_desc(id)
                .offset(keep)
                .limit(left)
                .into_tuple()
                .all(self.conn())
                .await?;
            ids.extend(more);
        }
        Ok(ids)
    }

    /// Deletes the log lines of `run_ids`, a few thousand per statement.
    async fn delete_log_lines(&self, run_ids: &[String]) -> StoreResult<u64> {
        let mut deleted = 0;
        for chunk in run_ids.chunks(200) {
            loop {
                let batch = Query::select()
                    .column(job_run_log::Column::Id)
                    .from(job_run_log::Entity)
                    .and_where(job_run_log::Column::RunId.is_in(chunk.iter().cloned()))
                    .limit(LOG_BATCH)
                    .to_owned();
                let n = job_run_log::Entity::delete_many()
                    .filter(job_run_log::Column::Id.in_subquery(batch))
                    .exec(self.conn())
                    .await?
                    .rows_affected;
                deleted += n;
                if n < LOG_BATCH {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(deleted)
    }

    /// Deletes finished job runs of no workflow run among `ids`, with their log lines.
    pub async fn delete_job_runs(&self, ids: &[String]) -> StoreResult<DeletedRuns> {
        if ids.is_empty() {
            return Ok(DeletedRuns::default());
        }
        // Finished is final for a job run (a retry is a new run): its lines can go first.
        let log_lines = self.delete_log_lines(ids).await?;
        let job_runs = job_run::Entity::delete_many()
            .filter(job_run::Column::Id.is_in(ids.iter().cloned()))
            .filter(job_run::Column::Status.is_in(finished_job_statuses()))
            .filter(job_run::Column::WorkflowRunId.is_null())
            .exec(self.conn())
            .await?
            .rows_affected;
        Ok(DeletedRuns {
            workflow_runs: 0,
            job_runs,
            log_lines,
        })
    }

    /// Finished workflow runs that ended before `before`, oldest first, after the first `skip`
    /// of them.
    pub async fn workflow_runs_ended_before(
        &self,
        before: DateTime<Utc>,
        skip: u64,
        limit: u64,
    ) -> StoreResult<Vec<String>> {
        workflow_run::Entity::find()
            .select_only()
            .column(workflow_run::Column::Id)
            .filter(workflow_run::Column::CreatedAt.lt(before))
            .filter(workflow_run::Column::CompletedAt.lt(before))
            .filter(workflow_run::Column::Status.is_in(finished_workflow_statuses()))
            .order_by_asc(workflow_run::Column::CreatedAt)
            .offset(skip)
            .limit(limit)
            .into_tuple()
            .all(self.conn())
            .await
    }

    /// Finished workflow runs beyond the newest `keep` of their workflow, up to `limit`.
    pub async fn workflow_runs_beyond(&self, keep: u64, limit: u64) -> StoreResult<Vec<String>> {
        use workflow_run::Column as C;
        let finished = Condition::all().add(C::Status.is_in(finished_workflow_statuses()));
        self.finished_beyond::<workflow_run::Entity>(
            C::WorkflowDefinitionId,
            C::Id,
            finished,
            keep,
            limit,
        )
        .await
    }

    /// Deletes finished workflow runs among `ids` with their steps, their steps' job runs and
    /// those runs' log lines. A run one of whose job runs is still pending or running is kept
    /// (its step may be canceled but not stopped yet), and so is a run resumed meanwhile.
    pub async fn delete_workflow_runs(&self, ids: &[String]) -> StoreResult<DeletedRuns> {
        if ids.is_empty() {
            return Ok(DeletedRuns::default());
        }
        let busy: Vec<Option<String>> = job_run::Entity::find()
            .select_only()
            .column(job_run::Column::WorkflowRunId)
            .filter(job_run::Column::WorkflowRunId.is_in(ids.iter().cloned()))
            .filter(job_run::Column::Status.is_in(unfinished_job_statuses()))
            .into_tuple()
            .all(self.conn())
            .await?;
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| !busy.iter().flatten().any(|b| b == *id))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(DeletedRuns::default());
        }
        let job_run_ids: Vec<String> = job_run::Entity::find()
            .select_only()
            .column(job_run::Column::Id)
            .filter(job_run::Column::WorkflowRunId.is_in(ids.iter().cloned()))
            .filter(job_run::Column::Status.is_in(finished_job_statuses()))
            .into_tuple()
            .all(self.conn())
            .await?;
        let log_lines = self.delete_log_lines(&job_run_ids).await?;
        let txn = self.conn().begin().await?;
        // Still finished (not resumed meanwhile), in this same commit as its children.
        let gone: Vec<String> = workflow_run::Entity::delete_many()
            .filter(workflow_run::Column::Id.is_in(ids.iter().cloned()))
            .filter(workflow_run::Column::Status.is_in(finished_workflow_statuses()))
            .exec_with_returning(&txn)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let mut job_runs = 0;
        if !gone.is_empty() {
            workflow_run_step::Entity::delete_many()
                .filter(workflow_run_step::Column::WorkflowRunId.is_in(gone.iter().cloned()))
                .exec(&txn)
                .await?;
            job_runs = job_run::Entity::delete_many()
                .filter(job_run::Column::WorkflowRunId.is_in(gone.iter().cloned()))
                .filter(job_run::Column::Status.is_in(finished_job_statuses()))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(DeletedRuns {
            workflow_runs: gone.len() as u64,
            job_runs,
            log_lines,
        })
    }

    /// Deletes up to `limit` of the oldest events stored before `before`.
    pub async fn prune_events(&self, before: DateTime<Utc>, limit: u64) -> StoreResult<u64> {
        let batch = Query::select()
            .column(event::Column::Id)
            .from(event::Entity)
            .and_where(event::Column::CreatedAt.lt(before))
            .order_by(event::Column::CreatedAt, sea_orm::Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(event::Entity::delete_many()
            .filter(event::Column::Id.in_subquery(batch))
            .exec(self.conn())
            .await?
            .rows_affected)
    }

    /// Deletes up to `limit` of the oldest audit entries recorded before `before`.
    pub async fn prune_audit_logs(&self, before: DateTime<Utc>, limit: u64) -> StoreResult<u64> {
        let batch = Query::select()
            .column(audit_log::Column::Id)
            .from(audit_log::Entity)
            .and_where(audit_log::Column::CreatedAt.lt(before))
            .order_by(audit_log::Column::CreatedAt, sea_orm::Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(audit_log::Entity::delete_many()
            .filter(audit_log::Column::Id.in_subquery(batch))
            .exec(self.conn())
            .await?
            .rows_affected)
    }

    /// Deletes up to `limit` alert deliveries recorded before `before` (their crossings are
    /// long over).
    pub async fn prune_alert_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<u64> {
        let batch = Query::select()
            .column(alert_delivery::Column::Id)
            .from(alert_delivery::Entity)
            .and_where(alert_delivery::Column::CreatedAt.lt(before))
            .limit(limit)
            .to_owned();
        Ok(alert_delivery::Entity::delete_many()
            .filter(alert_delivery::Column::Id.in_subquery(batch))
            .exec(self.conn())
            .await?
            .rows_affected)
    }

    /// SQLite: gives the pages that deletions freed back to the file system (incremental
    /// vacuum, a few MB per step so writers wait only briefly; then a checkpoint moves the
    /// shrink from the WAL into the file). Returns the page count before and after; None on
    /// PostgreSQL (its autovacuum makes freed space reusable) and on a SQLite file without
    /// incremental auto-vacuum.
    pub async fn reclaim_space(&self) -> StoreResult<Option<(i64, i64)>> {
        if self.db.is_postgres() || self.sqlite_pragma("auto_vacuum").await? != 2 {
            return Ok(None);
        }
        let before = self.sqlite_pragma("page_count").await?;
        while self.sqlite_pragma("freelist_count").await? > 0 {
            self.conn()
                .execute_unprepared("PRAGMA incremental_vacuum(1024)")
                .await?;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.conn()
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await?;
        Ok(Some((before, self.sqlite_pragma("page_count").await?)))
    }

    /// An integer SQLite pragma (`page_count`, `freelist_count`, `auto_vacuum`).
    pub async fn sqlite_pragma(&self, name: &str) -> StoreResult<i64> {
        #[derive(FromQueryResult)]
        struct Row {
            v: i64,
        }
        let sql = format!("SELECT {name} AS v FROM pragma_{name}()");
        let row = Row::find_by_statement(Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            sql,
        ))
        .one(self.conn())
        .await?;
        Ok(row.map_or(0, |r| r.v))
    }
}
