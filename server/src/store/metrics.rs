//! Operations queries: grouped run counts for `/metrics` (read at scrape time, so runs executed
//! by any process are counted), the failure count behind alerts, and the alert delivery record.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde_json::Value;

use super::{
    Store, StoreResult,
    entities::{alert_delivery, job_run, workflow_run},
    new_id,
};

/// Runs counted per (slug, status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlugStatusCount {
    pub slug: String,
    pub status: String,
    pub count: u64,
}

/// A new alert delivery to claim (`dedupe_key` unique: the first insert wins).
#[derive(Debug, Clone)]
pub struct NewAlertDelivery {
    pub dedupe_key: String,
    pub workflow_slug: String,
    pub failures: i32,
    pub window_ms: i64,
    pub last_run_id: Option<String>,
    pub payload: Value,
    pub status: String,
}

/// A recorded alert delivery.
#[derive(Debug, Clone)]
pub struct AlertDelivery {
    pub id: String,
    pub dedupe_key: String,
    pub workflow_slug: String,
    pub failures: i32,
    pub window_ms: i64,
    pub last_run_id: Option<String>,
    pub payload: Value,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(sea_orm::FromQueryResult)]
struct CountRow {
    slug: String,
    status: String,
    n: i64,
}

#[derive(sea_orm::FromQueryResult)]
struct StatusRow {
    status: String,
    n: i64,
}

fn count_expr<C: sea_orm::ColumnTrait>(col: C) -> sea_orm::sea_query::SimpleExpr {
    Expr::expr(sea_orm::sea_query::Func::count(Expr::col(col)))
}

impl Store {
    /// Every job run, counted per (job slug, status): one grouped query.
    pub async fn job_run_counts(&self) -> StoreResult<Vec<SlugStatusCount>> {
        let rows = job_run::Entity::find()
            .select_only()
            .column_as(job_run::Column::JobSlug, "slug")
            .column(job_run::Column::Status)
            .column_as(count_expr(job_run::Column::Id), "n")
            .group_by(job_run::Column::JobSlug)
            .group_by(job_run::Column::Status)
            .into_model::<CountRow>()
            .all(self.conn())
            .await?;
        Ok(rows.into_iter().map(slug_count).collect())
    }

    /// Every workflow run, counted per (workflow slug, status): one grouped query.
    pub async fn workflow_run_counts(&self) -> StoreResult<Vec<SlugStatusCount>> {
        let rows = workflow_run::Entity::find()
            .select_only()
            .column_as(workflow_run::Column::WorkflowSlug, "slug")
            .column(workflow_run::Column::Status)
            .column_as(count_expr(workflow_run::Column::Id), "n")
            .group_by(workflow_run::Column::WorkflowSlug)
            .group_by(workflow_run::Column::Status)
            .into_model::<CountRow>()
            .all(self.conn())
            .await?;
        Ok(rows.into_iter().map(slug_count).collect())
    }

    /// Job runs that ended (any terminal status) at or after `since`, per status.
    pub async fn job_runs_ended_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64)>> {
        let rows = job_run::Entity::find()
            .select_only()
            .column(job_run::Column::Status)
            .column_as(count_expr(job_run::Column::Id), "n")
            .filter(job_run::Column::CompletedAt.gte(since))
            .filter(job_run::Column::Status.is_in(["succeeded", "failed", "canceled", "expired"]))
            .group_by(job_run::Column::Status)
            .into_model::<StatusRow>()
            .all(self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.status, r.n.max(0) as u64))
            .collect())
    }

    /// Workflow runs that ended (any terminal status) at or after `since`, per status.
    pub async fn workflow_runs_ended_since(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, u64)>> {
        let rows = workflow_run::Entity::find()
            .select_only()
            .column(workflow_run::Column::Status)
            .column_as(count_expr(workflow_run::Column::Id), "n")
            .filter(workflow_run::Column::CompletedAt.gte(since))
            .filter(workflow_run::Column::Status.is_in(["succeeded", "failed", "canceled"]))
            .group_by(workflow_run::Column::Status)
            .into_model::<StatusRow>()
            .all(self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.status, r.n.max(0) as u64))
            .collect())
    }

    /// Pending job runs: (due at `now`, delayed past `now`).
    pub async fn pending_depth(&self, now: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        let pending = || job_run::Entity::find().filter(job_run::Column::Status.eq("pending"));
        let due = pending()
            .filter(job_run::Column::ScheduledAt.lte(now))
            .count(self.conn())
            .await?;
        let delayed = pending()
            .filter(job_run::Column::ScheduledAt.gt(now))
            .count(self.conn())
            .await?;
        Ok((due, delayed))
    }

    /// Failed runs of workflow `slug` that ended within (`after`, (`until`, `until_id`)]: ended
    /// after `after` and, ordered by (completion time, id), not after the run `until_id` that
    /// ended at `until`. The tie-break on id makes the count of every failure well defined even
    /// when two end at the same instant.
    pub async fn count_workflow_failures(
        &self,
        slug: &str,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        until_id: &str,
    ) -> StoreResult<u64> {
        workflow_run::Entity::find()
            .filter(workflow_run::Column::WorkflowSlug.eq(slug))
            .filter(workflow_run::Column::Status.eq("failed"))
            .filter(workflow_run::Column::CompletedAt.gt(after))
            .filter(
                Condition::any()
                    .add(workflow_run::Column::CompletedAt.lt(until))
                    .add(
                        Condition::all()
                            .add(workflow_run::Column::CompletedAt.eq(until))
                            .add(workflow_run::Column::Id.lte(until_id)),
                    ),
            )
            .count(self.conn())
            .await
    }

    /// Inserts the delivery row unless one with the same `dedupe_key` exists. Returns its id when
    /// this call inserted it (this process owns the delivery), `None` when another had.
    pub async fn claim_alert_delivery(&self, new: NewAlertDelivery) -> StoreResult<Option<String>> {
        let id = new_id();
        let now = Utc::now();
        let res = alert_delivery::Entity::insert(alert_delivery::ActiveModel {
            id: Set(id.clone()),
            dedupe_key: Set(new.dedupe_key),
            workflow_slug: Set(new.workflow_slug),
            failures: Set(new.failures),
            window_ms: Set(new.window_ms),
            last_run_id: Set(new.last_run_id),
            payload: Set(new.payload),
            status: Set(new.status),
            attempts: Set(0),
            last_error: Set(None),
            created_at: Set(now),
            delivered_at: Set(None),
            updated_at: Set(now),
        })
        .on_conflict_do_nothing_on([alert_delivery::Column::DedupeKey])
        .exec_without_returning(self.conn())
        .await?;
        Ok(match res {
            sea_orm::TryInsertResult::Inserted(n) if n > 0 => Some(id),
            _ => None,
        })
    }

    /// Records the outcome of a delivery attempt.
    pub async fn record_alert_attempt(
        &self,
        id: &str,
        status: &str,
        attempts: i32,
        last_error: Option<String>,
    ) -> StoreResult<()> {
        let now = Utc::now();
        alert_delivery::Entity::update_many()
            .col_expr(alert_delivery::Column::Status, Expr::value(status))
            .col_expr(alert_delivery::Column::Attempts, Expr::value(attempts))
            .col_expr(alert_delivery::Column::LastError, Expr::value(last_error))
            .col_expr(
                alert_delivery::Column::DeliveredAt,
                Expr::value((status == "delivered").then_some(now)),
            )
            .col_expr(alert_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(alert_delivery::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Alert deliveries, oldest first, optionally of one workflow.
    pub async fn alert_deliveries(&self, slug: Option<&str>) -> StoreResult<Vec<AlertDelivery>> {
        let mut q = alert_delivery::Entity::find();
        if let Some(slug) = slug {
            q = q.filter(alert_delivery::Column::WorkflowSlug.eq(slug));
        }
        Ok(q.order_by_asc(alert_delivery::Column::CreatedAt)
            .order_by_asc(alert_delivery::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(|m| AlertDelivery {
                id: m.id,
                dedupe_key: m.dedupe_key,
                workflow_slug: m.workflow_slug,
                failures: m.failures,
                window_ms: m.window_ms,
                last_run_id: m.last_run_id,
                payload: m.payload,
                status: m.status,
                attempts: m.attempts,
                last_error: m.last_error,
                created_at: m.created_at,
                delivered_at: m.delivered_at,
            })
            .collect())
    }
}

fn slug_count(r: CountRow) -> SlugStatusCount {
    SlugStatusCount {
        slug: r.slug,
        status: r.status,
        count: r.n.max(0) as u64,
    }
}
