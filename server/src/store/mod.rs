//! Storage: every SQL statement of the server lives here, behind functions that take and return
//! domain or wire types. Architecture invariant: entity models never leave this module.
//! Run state changes are conditional updates (`WHERE status = ... AND attempt = ...`), so two
//! workers can never both own a run: whoever's update touches the row wins.
mod audit;
mod clock;
pub mod entities;
mod finish;
mod group;
mod listing;
mod metrics;
mod retention;
mod secrets;
mod seeds;
mod sessions;
#[cfg(test)]
mod unreadable;
mod versions;
mod workflow_runs;
mod workflows;

pub use audit::{AuditPage, AuditRecord, AuditStatus};
pub use clock::DbClock;
pub use listing::{CatalogFilter, Page, PageRequest};
pub use metrics::{AlertDelivery, NewAlertDelivery, SlugStatusCount};
pub use retention::DeletedRuns;
pub use secrets::{PutSecretError, SealedSecret, SecretPage};
pub use sessions::SessionRecord;
pub use workflow_runs::{InsertedWorkflowRun, NewWorkflowRun, RunChanges, WorkflowRunState};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::Value;
use wire::{JobDefinition, JobDefinitionVersion, JobRun, RetryPolicy, RunStatus, Trigger};

use crate::db::Database;
use domain::jobs::JobSpec;
use entities::{event, job_definition, job_definition_version, job_run, job_run_log};

pub type StoreResult<T> = Result<T, DbErr>;

pub use domain::listing::{AuditFilter, RunFilter, WorkflowRunFilter};

/// A page of job runs.
pub type RunPage = domain::listing::RunPage<JobRun>;

/// What the executor needs to run one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run: JobRun,
    pub entry_point: String,
    pub retry_policy: RetryPolicy,
    /// When the claim's lease ends, by the database's clock ([`DbClock`]).
    pub lease_until: DateTime<Utc>,
}

/// A run stored already claimed: `running`, started at `at`, leased to `owner` until
/// `lease_until` (see `engine::LocalSlots`).
#[derive(Debug, Clone)]
pub struct RunClaim {
    pub owner: String,
    pub lease_until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// Run statistics of one job in one status.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub job_definition_id: String,
    pub status: RunStatus,
    pub count: u64,
    pub newest_run_id: String,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub event_type: String,
    pub payload: Value,
}

pub use domain::logs::LogLine as StoredLogLine;

/// The outcome of inserting a run with an idempotency key.
pub enum Inserted {
    New(JobRun),
    Existing(JobRun),
}

/// A stored value that cannot be read, as an error naming its table, row and column (the
/// application logs it and answers 500; the text never reaches a client).
fn unreadable(table: &str, row: &str, column: &str, problem: impl std::fmt::Display) -> DbErr {
    DbErr::Type(format!("{table} row {row}: {column} {problem}"))
}

/// A stored enum value (`parse` of `text`), or an error naming the row and what it may be.
fn stored_value<T>(
    (table, row, column): (&str, &str, &str),
    text: &str,
    parse: fn(&str) -> Option<T>,
    expected: fn() -> String,
) -> StoreResult<T> {
    parse(text).ok_or_else(|| {
        unreadable(
            table,
            row,
            column,
            format_args!("{text:?} is not one of {}", expected()),
        )
    })
}

/// A stored JSON value read as `T`, or an error naming the row.
fn stored_json<T: serde::de::DeserializeOwned>(
    (table, row, column): (&str, &str, &str),
    value: Value,
) -> StoreResult<T> {
    serde_json::from_value(value)
        .map_err(|e| unreadable(table, row, column, format_args!("cannot be read: {e}")))
}

/// A `job_runs` row's status.
fn status_of(id: &str, text: &str) -> StoreResult<RunStatus> {
    stored_value(
        ("job_runs", id, "status"),
        text,
        RunStatus::parse,
        RunStatus::expected,
    )
}

pub fn definition_to_wire(m: job_definition::Model) -> StoreResult<JobDefinition> {
    let job_type = stored_value(
        ("job_definitions", &m.id, "job_type"),
        &m.job_type,
        wire::JobType::parse,
        wire::JobType::expected,
    )?;
    let retry_policy = stored_json(("job_definitions", &m.id, "retry_policy"), m.retry_policy)?;
    Ok(JobDefinition {
        id: m.id,
        slug: m.slug,
        name: m.name,
        version: m.version,
        job_type,
        entry_point: m.entry_point,
        parameters_schema: m.parameters_schema,
        default_parameters: m.default_parameters,
        timeout_ms: m.timeout_ms,
        retry_policy,
        metadata: m.metadata,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn run_to_wire(m: job_run::Model) -> StoreResult<JobRun> {
    let status = status_of(&m.id, &m.status)?;
    let trigger = stored_value(
        ("job_runs", &m.id, "trigger"),
        &m.trigger,
        Trigger::parse,
        Trigger::expected,
    )?;
    let duration_ms = m.duration_ms;
    Ok(JobRun {
        logs_url: format!("/api/job-runs/{}/logs", m.id),
        id: m.id,
        job_definition_id: m.job_definition_id,
        job_slug: m.job_slug,
        job_version: m.job_version,
        status,
        parameters: m.parameters,
        result: m.result,
        error_message: m.error_message,
        metrics: m.metrics,
        context: m.context,
        timeout_ms: m.timeout_ms,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        trigger,
        workflow_run_id: m.workflow_run_id,
        workflow_step_id: m.workflow_step_id,
        duration_ms,
        scheduled_at: m.scheduled_at,
        started_at: m.started_at,
        completed_at: m.completed_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// A new run (built by `application::launcher::new_run`): its row as the API shows it, and
/// what only the engine reads. A workflow step's run is inserted with its step change, in the
/// same transaction ([`RunChanges::job_runs`]).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run: JobRun,
    pub entry_point: String,
    pub retry_policy: RetryPolicy,
    pub idempotency_key: Option<String>,
    /// Stored claimed by a worker of this process, which executes it next (`run` then says
    /// `running`, started at the claim).
    pub claim: Option<RunClaim>,
    /// Who schedules its attempts: None, Switchyard's queue; a workflow provider's name, the
    /// provider (see `providers`).
    pub driver: Option<String>,
}

/// The update that takes a run for `owner` (running, leased until `lease_until`, started at
/// `now`, no error); the caller adds which run and attempt.
fn taking(
    owner: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<job_run::Entity> {
    job_run::Entity::update_many()
        .col_expr(
            job_run::Column::Status,
            Expr::value(RunStatus::Running.as_str()),
        )
        .col_expr(job_run::Column::LeaseOwner, Expr::value(owner))
        .col_expr(job_run::Column::LeaseExpiresAt, Expr::value(lease_until))
        .col_expr(job_run::Column::StartedAt, Expr::value(now))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            job_run::Column::ErrorMessage,
            Expr::value(Option::<String>::None),
        )
}

/// A taken row as the engine executes it.
fn claimed_run(m: job_run::Model, lease_until: DateTime<Utc>) -> StoreResult<ClaimedRun> {
    let entry_point = m.entry_point.clone();
    let retry_policy = stored_json(("job_runs", &m.id, "retry_policy"), m.retry_policy.clone())?;
    Ok(ClaimedRun {
        run: run_to_wire(m)?,
        entry_point,
        retry_policy,
        lease_until,
    })
}

/// The `job_runs` row of a new run, the one way one is written.
pub(crate) fn new_run_model(new: &NewRun) -> job_run::Model {
    let r = &new.run;
    job_run::Model {
        id: r.id.clone(),
        job_definition_id: r.job_definition_id.clone(),
        job_slug: r.job_slug.clone(),
        job_version: r.job_version,
        entry_point: new.entry_point.clone(),
        status: r.status.as_str().to_string(),
        parameters: r.parameters.clone(),
        result: None,
        error_message: None,
        metrics: None,
        context: r.context.clone(),
        timeout_ms: r.timeout_ms,
        attempt: r.attempt,
        max_attempts: r.max_attempts,
        retry_policy: serde_json::to_value(&new.retry_policy).unwrap_or(Value::Null),
        trigger: r.trigger.as_str().to_string(),
        workflow_run_id: r.workflow_run_id.clone(),
        workflow_step_id: r.workflow_step_id.clone(),
        idempotency_key: new.idempotency_key.clone(),
        duration_ms: None,
        scheduled_at: r.scheduled_at,
        started_at: r.started_at,
        completed_at: None,
        created_at: r.created_at,
        updated_at: r.updated_at,
        lease_owner: new.claim.as_ref().map(|c| c.owner.clone()),
        lease_expires_at: new.claim.as_ref().map(|c| c.lease_until),
        dispatched_at: None,
        driver: new.driver.clone(),
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    /// Audit entries, new runs and finishes are group-committed (see `group.rs`).
    audit: group::GroupInsert<entities::audit_log::ActiveModel>,
    runs: group::GroupInsert<job_run::ActiveModel>,
    finishes: group::Batcher<finish::Finish, StoreResult<Option<JobRun>>>,
    /// The database's clock, which every lease time is read from.
    clock: DbClock,
}

/// How often the offset to the database's clock is measured again.
const CLOCK_RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

impl Store {
    pub fn new(db: Database) -> Self {
        Store {
            db,
            audit: Default::default(),
            runs: Default::default(),
            finishes: Default::default(),
            clock: Default::default(),
        }
    }

    /// The database's clock (see `clock.rs`): leases are written and judged by it.
    pub fn clock(&self) -> &DbClock {
        &self.clock
    }

    /// Measures the offset between this process's clock and the database's (PostgreSQL; on
    /// SQLite the machine's clock is the database's).
    pub async fn sync_clock(&self) -> StoreResult<()> {
        if !self.db.is_postgres() {
            return Ok(());
        }
        #[derive(FromQueryResult)]
        struct Row {
            t: DateTime<Utc>,
        }
        let sent = Utc::now();
        let row = Row::find_by_statement(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT clock_timestamp() AS t",
        ))
        .one(self.conn())
        .await?;
        let received = Utc::now();
        if let Some(row) = row {
            self.clock.record(sent, row.t, received);
        }
        Ok(())
    }

    /// Measures the database's clock again every minute until `stop` (clocks drift).
    pub async fn run_clock(self, stop: tokio_util::sync::CancellationToken) {
        if !self.db.is_postgres() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CLOCK_RESYNC) => {}
            }
            if let Err(e) = self.sync_clock().await {
                tracing::warn!(error = %e, "could not read the database's clock; keeping the last offset");
            }
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn conn(&self) -> &sea_orm::DatabaseConnection {
        &self.db.conn
    }

    // ---- job definitions ----

    pub async fn get_job(&self, slug: &str) -> StoreResult<Option<JobDefinition>> {
        job_definition::Entity::find()
            .filter(job_definition::Column::Slug.eq(slug))
            .one(self.conn())
            .await?
            .map(definition_to_wire)
            .transpose()
    }

    /// A page of job definitions, newest first; `q` searches the slug and the name.
    pub async fn page_jobs(&self, f: &CatalogFilter) -> StoreResult<Page<JobDefinition>> {
        use job_definition::Column as C;
        let mut cond = Condition::all();
        if let Some(q) = listing::search_text(f.q.as_deref()) {
            cond = cond.add(listing::matches_any(q, &[C::Slug, C::Name]));
        }
        listing::try_map(
            listing::page_of::<job_definition::Entity, _>(self.conn(), cond, C::Id, &f.page, |r| {
                r.id.clone()
            })
            .await?,
            definition_to_wire,
        )
    }

    pub async fn list_jobs(&self) -> StoreResult<Vec<JobDefinition>> {
        job_definition::Entity::find()
            .order_by_asc(job_definition::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(definition_to_wire)
            .collect()
    }

    /// Creates or replaces a definition and records the version. Returns the stored definition
    /// and whether it was created. The caller has checked the version rule.
    pub async fn save_job(
        &self,
        spec: &JobSpec,
        existing: Option<&JobDefinition>,
        now: DateTime<Utc>,
    ) -> StoreResult<JobDefinition> {
        let id = existing.map(|e| e.id.clone()).unwrap_or_else(new_id);
        let created_at = existing.map(|e| e.created_at).unwrap_or(now);
        let model = job_definition::ActiveModel {
            id: Set(id.clone()),
            slug: Set(spec.slug.as_str().to_string()),
            name: Set(spec.name.clone()),
            version: Set(spec.version),
            job_type: Set(spec.job_type.as_str().to_string()),
            entry_point: Set(spec.entry_point.clone()),
            parameters_schema: Set(spec.parameters_schema.clone()),
            default_parameters: Set(spec.default_parameters.clone()),
            timeout_ms: Set(spec.timeout_ms),
            retry_policy: Set(serde_json::to_value(&spec.retry_policy).unwrap_or(Value::Null)),
            metadata: Set(spec.metadata.clone()),
            created_at: Set(created_at),
            updated_at: Set(now),
        };
        let txn = sea_orm::TransactionTrait::begin(self.conn()).await?;
        let row = versions::write_definition(&txn, model, existing.is_some(), &id).await?;
        let stored = definition_to_wire(row)?;
        let snapshot = serde_json::to_value(&stored).unwrap_or(Value::Null);
        let version = job_definition_version::ActiveModel {
            id: Set(new_id()),
            job_definition_id: Set(id),
            slug: Set(spec.slug.as_str().to_string()),
            version: Set(spec.version),
            definition: Set(snapshot),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use job_definition_version::Column as V;
        let key = (spec.slug.as_str(), spec.version);
        versions::replace_snapshot(&txn, (V::Slug, V::Version), key, version).await?;
        txn.commit().await?;
        Ok(stored)
    }

    /// A page of a job's stored versions, newest first (the cursor is a version number).
    pub async fn page_job_versions(
        &self,
        slug: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<JobDefinitionVersion>> {
        use job_definition_version::{Column as C, Entity};
        listing::page_versions::<Entity, _, _>(
            self.conn(),
            (C::Slug, C::Version),
            slug,
            page,
            |m| m.version,
            job_version_to_wire,
        )
        .await
    }

    pub async fn job_versions(&self, slug: &str) -> StoreResult<Vec<JobDefinitionVersion>> {
        job_definition_version::Entity::find()
            .filter(job_definition_version::Column::Slug.eq(slug))
            .order_by_desc(job_definition_version::Column::Version)
            .all(self.conn())
            .await?
            .into_iter()
            .map(job_version_to_wire)
            .collect()
    }

    /// Deletes a definition, its version history, and its finished runs' rows stay (history).
    pub async fn delete_job(&self, id: &str, slug: &str) -> StoreResult<()> {
        let txn = sea_orm::TransactionTrait::begin(self.conn()).await?;
        job_definition_version::Entity::delete_many()
            .filter(job_definition_version::Column::Slug.eq(slug))
            .exec(&txn)
            .await?;
        job_definition::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    pub async fn count_active_runs(&self, job_definition_id: &str) -> StoreResult<u64> {
        job_run::Entity::find()
            .filter(job_run::Column::JobDefinitionId.eq(job_definition_id))
            .filter(
                job_run::Column::Status
                    .is_in([RunStatus::Pending.as_str(), RunStatus::Running.as_str()]),
            )
            .count(self.conn())
            .await
    }

    // ---- runs ----

    /// Inserts a run; with an idempotency key already used for this job, returns that run.
    pub async fn insert_run(&self, new: NewRun) -> StoreResult<Inserted> {
        let definition_id = new.run.job_definition_id.clone();
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.find_by_idempotency_key(&definition_id, key).await?
        {
            return Ok(Inserted::Existing(existing));
        }
        let model = new_run_model(&new);
        let active: job_run::ActiveModel = model.clone().into();
        // Without a key nothing can collide: concurrent new runs share one INSERT and commit.
        let inserted = if new.idempotency_key.is_none() {
            self.runs.insert(self.conn(), active).await
        } else {
            job_run::Entity::insert(active)
                .exec_without_returning(self.conn())
                .await
                .map(|_| ())
        };
        match inserted {
            Ok(()) => Ok(Inserted::New(run_to_wire(model)?)),
            Err(e) => {
                // A concurrent request with the same key won the unique index: answer with its run.
                if let Some(key) = &new.idempotency_key
                    && let Some(existing) =
                        self.find_by_idempotency_key(&definition_id, key).await?
                {
                    return Ok(Inserted::Existing(existing));
                }
                Err(e)
            }
        }
    }

    async fn find_by_idempotency_key(
        &self,
        job_definition_id: &str,
        key: &str,
    ) -> StoreResult<Option<JobRun>> {
        job_run::Entity::find()
            .filter(job_run::Column::JobDefinitionId.eq(job_definition_id))
            .filter(job_run::Column::IdempotencyKey.eq(key))
            .one(self.conn())
            .await?
            .map(run_to_wire)
            .transpose()
    }

    pub async fn get_run(&self, id: &str) -> StoreResult<Option<JobRun>> {
        job_run::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
            .map(run_to_wire)
            .transpose()
    }

    pub async fn list_runs(&self, f: &RunFilter) -> StoreResult<RunPage> {
        let mut cond = Condition::all();
        if let Some(id) = &f.job_definition_id {
            cond = cond.add(job_run::Column::JobDefinitionId.eq(id.clone()));
        }
        if !f.statuses.is_empty() {
            cond = cond.add(job_run::Column::Status.is_in(f.statuses.iter().map(|s| s.as_str())));
        }
        use job_run::Column as C;
        cond = cond.add(listing::run_search(
            f.q.as_deref(),
            C::Id,
            C::JobSlug,
            C::ErrorMessage,
        ));
        let page = PageRequest::new(f.limit, f.offset, f.cursor.clone());
        let page = listing::page_of::<job_run::Entity, _>(
            self.conn(),
            cond,
            job_run::Column::Id,
            &page,
            |r| r.id.clone(),
        )
        .await?;
        Ok(RunPage {
            total: page.total,
            next_cursor: page.next_cursor,
            runs: page
                .items
                .into_iter()
                .map(run_to_wire)
                .collect::<StoreResult<_>>()?,
        })
    }

    pub async fn recent_runs(
        &self,
        job_definition_id: &str,
        limit: u64,
    ) -> StoreResult<Vec<JobRun>> {
        job_run::Entity::find()
            .filter(job_run::Column::JobDefinitionId.eq(job_definition_id))
            .order_by_desc(job_run::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(run_to_wire)
            .collect()
    }

    /// Per (job definition id, status): the number of runs and the newest run id. The status
    /// whose newest id is the greatest is the job's last run status. One grouped query,
    /// answered from `idx_job_runs_definition_status_id`.
    pub async fn run_stats_by_job(&self) -> StoreResult<Vec<RunStats>> {
        #[derive(sea_orm::FromQueryResult)]
        struct Row {
            job_definition_id: String,
            status: String,
            n: i64,
            newest: String,
        }
        let rows = job_run::Entity::find()
            .select_only()
            .column(job_run::Column::JobDefinitionId)
            .column(job_run::Column::Status)
            .column_as(
                Expr::expr(sea_orm::sea_query::Func::count(Expr::col(
                    job_run::Column::Id,
                ))),
                "n",
            )
            .column_as(
                Expr::expr(sea_orm::sea_query::Func::max(Expr::col(
                    job_run::Column::Id,
                ))),
                "newest",
            )
            .group_by(job_run::Column::JobDefinitionId)
            .group_by(job_run::Column::Status)
            .into_model::<Row>()
            .all(self.conn())
            .await?;
        rows.into_iter()
            .map(|r| {
                // The group's newest row is one that holds the status.
                Ok(RunStats {
                    status: status_of(&r.newest, &r.status)?,
                    job_definition_id: r.job_definition_id,
                    count: r.n.max(0) as u64,
                    newest_run_id: r.newest,
                })
            })
            .collect()
    }

    /// Runs created since `since`, counted per (UTC hour, status) by the database.
    pub async fn hourly_counts(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(DateTime<Utc>, RunStatus, u64)>> {
        #[derive(sea_orm::FromQueryResult)]
        struct Row {
            hour: String,
            status: String,
            n: i64,
        }
        // SQLite keeps times as RFC 3339 text ("2026-11-23T06:..."): the first 13 characters
        // are the hour. PostgreSQL formats its timestamptz the same way.
        let (backend, sql) = if self.db.is_postgres() {
            (
                sea_orm::DatabaseBackend::Postgres,
                "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24') AS hour, status, \
                 COUNT(*) AS n FROM job_runs WHERE created_at >= $1 GROUP BY 1, 2",
            )
        } else {
            (
                sea_orm::DatabaseBackend::Sqlite,
                "SELECT substr(created_at, 1, 13) AS hour, status, COUNT(*) AS n \
                 FROM job_runs WHERE created_at >= ? GROUP BY 1, 2",
            )
        };
        let stmt = sea_orm::Statement::from_sql_and_values(backend, sql, [since.into()]);
        let rows = Row::find_by_statement(stmt).all(self.conn()).await?;
        rows.into_iter()
            .map(|r| {
                // Grouped rows have no id: the group (hour and status) names them.
                let group = format!("group {}/{}", r.hour, r.status);
                let hour = chrono::NaiveDateTime::parse_from_str(
                    &format!("{}:00:00", r.hour.replacen(' ', "T", 1)),
                    "%Y-%m-%dT%H:%M:%S",
                )
                .map_err(|e| unreadable("job_runs", &group, "created_at", format_args!("{e}")))?;
                let status = status_of(&group, &r.status)?;
                Ok((hour.and_utc(), status, r.n.max(0) as u64))
            })
            .collect()
    }

    pub async fn mark_dispatched(&self, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        job_run::Entity::update_many()
            .col_expr(job_run::Column::DispatchedAt, Expr::value(now))
            .filter(job_run::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Pending runs that are due but whose queue task may have been lost (crash between the
    /// insert and the push): due before `due_before`, not dispatched since `dispatched_before`.
    pub async fn overdue_pending(
        &self,
        due_before: DateTime<Utc>,
        dispatched_before: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<(String, i32)>> {
        Ok(job_run::Entity::find()
            .filter(job_run::Column::Status.eq(RunStatus::Pending.as_str()))
            .filter(job_run::Column::Driver.is_null())
            .filter(job_run::Column::ScheduledAt.lt(due_before))
            .filter(
                Condition::any()
                    .add(job_run::Column::DispatchedAt.is_null())
                    .add(job_run::Column::DispatchedAt.lt(dispatched_before)),
            )
            .order_by_asc(job_run::Column::ScheduledAt)
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(|m| (m.id, m.attempt))
            .collect())
    }

    /// Takes a pending run for `attempt` on behalf of `owner`. `None` when someone else has it,
    /// it was canceled, or the task is stale.
    pub async fn claim(
        &self,
        id: &str,
        attempt: i32,
        owner: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedRun>> {
        // One statement (UPDATE ... RETURNING): this is the hot path of every run.
        let claimed = taking(owner, lease_until, now)
            .filter(job_run::Column::Id.eq(id))
            .filter(job_run::Column::Status.eq(RunStatus::Pending.as_str()))
            .filter(job_run::Column::Attempt.eq(attempt))
            .filter(job_run::Column::Driver.is_null())
            .exec_with_returning(self.conn())
            .await?;
        claimed
            .into_iter()
            .next()
            .map(|m| claimed_run(m, lease_until))
            .transpose()
    }

    /// Takes attempt `attempt` of a run whose attempts a workflow provider schedules
    /// (`driver` set): from pending, or from running when an earlier attempt's worker is
    /// presumed dead (the provider retries an attempt only after its own timeout). `None` when
    /// the run ended (canceled), or a later attempt holds it.
    pub async fn take_attempt(
        &self,
        id: &str,
        attempt: i32,
        owner: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedRun>> {
        let claimed = taking(owner, lease_until, now)
            .col_expr(job_run::Column::Attempt, Expr::value(attempt))
            .filter(job_run::Column::Id.eq(id))
            .filter(
                job_run::Column::Status
                    .is_in([RunStatus::Pending.as_str(), RunStatus::Running.as_str()]),
            )
            .filter(job_run::Column::Attempt.lte(attempt))
            .filter(job_run::Column::Driver.is_not_null())
            .exec_with_returning(self.conn())
            .await?;
        claimed
            .into_iter()
            .next()
            .map(|m| claimed_run(m, lease_until))
            .transpose()
    }

    /// Fails a provider-driven run that has not ended (its provider lost every attempt).
    pub async fn fail_driven(
        &self,
        id: &str,
        error: String,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<JobRun>> {
        let res = without_lease(job_run::Entity::update_many())
            .col_expr(
                job_run::Column::Status,
                Expr::value(RunStatus::Failed.as_str()),
            )
            .col_expr(job_run::Column::ErrorMessage, Expr::value(error))
            .col_expr(job_run::Column::CompletedAt, Expr::value(now))
            .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
            .filter(job_run::Column::Id.eq(id))
            .filter(
                job_run::Column::Status
                    .is_in([RunStatus::Pending.as_str(), RunStatus::Running.as_str()]),
            )
            .filter(job_run::Column::Driver.is_not_null())
            .exec(self.conn())
            .await?;
        if res.rows_affected != 1 {
            return Ok(None);
        }
        self.get_run(id).await
    }

    /// Extends the lease; false when the run is no longer ours (canceled or taken over).
    pub async fn heartbeat(
        &self,
        id: &str,
        attempt: i32,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let res = job_run::Entity::update_many()
            .col_expr(job_run::Column::LeaseExpiresAt, Expr::value(lease_until))
            .filter(job_run::Column::Id.eq(id))
            .filter(job_run::Column::Attempt.eq(attempt))
            .filter(job_run::Column::LeaseOwner.eq(owner))
            .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()))
            .exec(self.conn())
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Puts a running run back to pending for `next_attempt` at `scheduled_at` (retry after a
    /// failure, a lost worker, or a hand-back at shutdown). `owner` None: whoever holds it, as
    /// long as its lease has expired before `now` (the reaper).
    #[allow(clippy::too_many_arguments)]
    pub async fn requeue(
        &self,
        id: &str,
        attempt: i32,
        owner: Option<&str>,
        next_attempt: i32,
        scheduled_at: DateTime<Utc>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<JobRun>> {
        let mut update = without_lease(job_run::Entity::update_many())
            .col_expr(
                job_run::Column::Status,
                Expr::value(RunStatus::Pending.as_str()),
            )
            .col_expr(job_run::Column::Attempt, Expr::value(next_attempt))
            .col_expr(job_run::Column::ScheduledAt, Expr::value(scheduled_at))
            .col_expr(job_run::Column::ErrorMessage, Expr::value(error))
            .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                job_run::Column::DispatchedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(job_run::Column::Id.eq(id))
            .filter(job_run::Column::Attempt.eq(attempt))
            .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()));
        update = match owner {
            Some(owner) => update.filter(job_run::Column::LeaseOwner.eq(owner)),
            None => update.filter(job_run::Column::LeaseExpiresAt.lt(now)),
        };
        if update.exec(self.conn()).await?.rows_affected != 1 {
            return Ok(None);
        }
        self.get_run(id).await
    }

    /// Fails a running run whose worker vanished (lease expired) when no attempt is left.
    pub async fn fail_expired_lease(
        &self,
        id: &str,
        attempt: i32,
        error: String,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<JobRun>> {
        let res = without_lease(job_run::Entity::update_many())
            .col_expr(
                job_run::Column::Status,
                Expr::value(RunStatus::Failed.as_str()),
            )
            .col_expr(job_run::Column::ErrorMessage, Expr::value(error))
            .col_expr(job_run::Column::CompletedAt, Expr::value(now))
            .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
            .filter(job_run::Column::Id.eq(id))
            .filter(job_run::Column::Attempt.eq(attempt))
            .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()))
            .filter(job_run::Column::LeaseExpiresAt.lt(now))
            .exec(self.conn())
            .await?;
        if res.rows_affected != 1 {
            return Ok(None);
        }
        let run = self.get_run(id).await?;
        if let Some(r) = &run
            && let (Some(s), Some(c)) = (r.started_at, r.completed_at)
        {
            job_run::Entity::update_many()
                .col_expr(
                    job_run::Column::DurationMs,
                    Expr::value((c - s).num_milliseconds().max(0)),
                )
                .filter(job_run::Column::Id.eq(id))
                .exec(self.conn())
                .await?;
        }
        self.get_run(id).await
    }

    /// Running runs whose lease ran out before `now`.
    pub async fn expired_leases(&self, now: DateTime<Utc>, limit: u64) -> StoreResult<Vec<JobRun>> {
        job_run::Entity::find()
            .filter(job_run::Column::Status.eq(RunStatus::Running.as_str()))
            .filter(job_run::Column::LeaseExpiresAt.lt(now))
            .filter(job_run::Column::Driver.is_null())
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(run_to_wire)
            .collect()
    }

    /// Cancels a pending or running run. Returns the canceled run, or None if it had finished.
    pub async fn cancel(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<JobRun>> {
        let Some(current) = job_run::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let status = status_of(&current.id, &current.status)?;
        if status.is_terminal() {
            return Ok(None);
        }
        let duration = current
            .started_at
            .map(|s| (now - s).num_milliseconds().max(0));
        let res = without_lease(job_run::Entity::update_many())
            .col_expr(
                job_run::Column::Status,
                Expr::value(RunStatus::Canceled.as_str()),
            )
            .col_expr(
                job_run::Column::ErrorMessage,
                Expr::value("canceled by operator"),
            )
            .col_expr(job_run::Column::CompletedAt, Expr::value(now))
            .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
            .col_expr(job_run::Column::DurationMs, Expr::value(duration))
            .filter(job_run::Column::Id.eq(id))
            .filter(job_run::Column::Status.eq(status.as_str()))
            .filter(job_run::Column::Attempt.eq(current.attempt))
            .exec(self.conn())
            .await?;
        if res.rows_affected != 1 {
            // It changed under us (started or finished); the caller retries once.
            return Box::pin(self.cancel(id, now)).await;
        }
        self.get_run(id).await
    }

    // ---- logs ----

    pub async fn append_logs(
        &self,
        lines: Vec<(String, i32, String, String)>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        job_run_log::Entity::insert_many(log_models(lines, now))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    pub async fn read_logs(
        &self,
        run_id: &str,
        after_id: i64,
        limit: u64,
    ) -> StoreResult<Vec<StoredLogLine>> {
        Ok(job_run_log::Entity::find()
            .filter(job_run_log::Column::RunId.eq(run_id))
            .filter(job_run_log::Column::Id.gt(after_id))
            .order_by_asc(job_run_log::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(|m| StoredLogLine {
                id: m.id,
                attempt: m.attempt,
                stream: m.stream,
                message: m.message,
            })
            .collect())
    }

    /// Bytes stored in a run's log (each line's message and its newline): what earlier
    /// attempts took of the run's cap.
    pub async fn log_bytes(&self, run_id: &str) -> StoreResult<u64> {
        #[derive(FromQueryResult)]
        struct Row {
            n: Option<i64>,
        }
        let (backend, sql) = if self.db.is_postgres() {
            (
                sea_orm::DatabaseBackend::Postgres,
                "SELECT CAST(SUM(octet_length(message) + 1) AS BIGINT) AS n FROM job_run_logs WHERE run_id = $1",
            )
        } else {
            (
                sea_orm::DatabaseBackend::Sqlite,
                "SELECT SUM(length(CAST(message AS BLOB)) + 1) AS n FROM job_run_logs WHERE run_id = ?",
            )
        };
        let stmt = sea_orm::Statement::from_sql_and_values(backend, sql, [run_id.into()]);
        let row = Row::find_by_statement(stmt).one(self.conn()).await?;
        Ok(row.and_then(|r| r.n).unwrap_or(0).max(0) as u64)
    }

    /// The id of a run's newest stored log line (0 when it has none).
    pub async fn last_log_id(&self, run_id: &str) -> StoreResult<i64> {
        Ok(job_run_log::Entity::find()
            .select_only()
            .column(job_run_log::Column::Id)
            .filter(job_run_log::Column::RunId.eq(run_id))
            .order_by_desc(job_run_log::Column::Id)
            .into_tuple::<i64>()
            .one(self.conn())
            .await?
            .unwrap_or(0))
    }

    /// Where the last `lines` lines after line `after` begin: the id to read after (`after`
    /// itself when there are no more than `lines`). One index range read from the end.
    pub async fn log_tail_start(&self, run_id: &str, after: i64, lines: u64) -> StoreResult<i64> {
        if lines == 0 {
            return self.last_log_id(run_id).await.map(|last| last.max(after));
        }
        Ok(job_run_log::Entity::find()
            .select_only()
            .column(job_run_log::Column::Id)
            .filter(job_run_log::Column::RunId.eq(run_id))
            .filter(job_run_log::Column::Id.gt(after))
            .order_by_desc(job_run_log::Column::Id)
            .offset(lines)
            .limit(1)
            .into_tuple::<i64>()
            .one(self.conn())
            .await?
            .unwrap_or(after))
    }

    // ---- events ----

    /// Appends events in the given order, in one statement.
    pub async fn insert_events(
        &self,
        events: &[(String, Value, DateTime<Utc>)],
    ) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let models = events
            .iter()
            .map(|(event_type, payload, at)| event::ActiveModel {
                event_type: Set(event_type.clone()),
                payload: Set(payload.clone()),
                created_at: Set(*at),
                ..Default::default()
            });
        event::Entity::insert_many(models)
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    pub async fn events_after(&self, after_id: i64, limit: u64) -> StoreResult<Vec<StoredEvent>> {
        Ok(event::Entity::find()
            .filter(event::Column::Id.gt(after_id))
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(|m| StoredEvent {
                id: m.id,
                event_type: m.event_type,
                payload: m.payload,
            })
            .collect())
    }

    /// When more than `max` events follow event `after`: the id after which the newest `max`
    /// of them begin (a replay capped at `max` starts there). `None` when `max` or fewer
    /// follow. One index range read from the end.
    pub async fn replay_start(&self, after: i64, max: u64) -> StoreResult<Option<i64>> {
        event::Entity::find()
            .select_only()
            .column(event::Column::Id)
            .filter(event::Column::Id.gt(after))
            .order_by_desc(event::Column::Id)
            .offset(max)
            .limit(1)
            .into_tuple::<i64>()
            .one(self.conn())
            .await
    }

    pub async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(event::Entity::find()
            .order_by_desc(event::Column::Id)
            .one(self.conn())
            .await?
            .map(|m| m.id)
            .unwrap_or(0))
    }

    /// Deletes spent queue tasks of `queue` taken before `before` from apalis' table. A task is
    /// spent once a worker has fetched it: the run's state lives in `job_runs`, and with result
    /// persistence off apalis leaves fetched rows as `Queued`/`Running` forever (it never deletes rows,
    /// and its own vacuum rewrites the whole SQLite file). Deleting a row whose attempt is still
    /// executing is harmless: nothing reads it again, and a lost worker's runs are recovered
    /// from their leases, not from this table.
    pub async fn prune_queue(&self, queue: &str, before: DateTime<Utc>) -> StoreResult<u64> {
        let (backend, sql, cutoff) = if self.db.is_postgres() {
            (
                sea_orm::DatabaseBackend::Postgres,
                "DELETE FROM apalis.jobs WHERE job_type = $1 AND status IN ('Done', 'Killed', 'Running', 'Queued') \
                 AND COALESCE(done_at, lock_at) < $2",
                sea_orm::Value::from(before),
            )
        } else {
            (
                sea_orm::DatabaseBackend::Sqlite,
                "DELETE FROM Jobs WHERE job_type = ? AND status IN ('Done', 'Killed', 'Running', 'Queued') \
                 AND COALESCE(done_at, lock_at) < ?",
                sea_orm::Value::from(before.timestamp()),
            )
        };
        let stmt = sea_orm::Statement::from_sql_and_values(backend, sql, [queue.into(), cutoff]);
        Ok(sea_orm::ConnectionTrait::execute_raw(self.conn(), stmt)
            .await?
            .rows_affected())
    }
}

/// Clears the lease: the run is no longer held by any worker.
fn without_lease(
    update: sea_orm::UpdateMany<job_run::Entity>,
) -> sea_orm::UpdateMany<job_run::Entity> {
    update
        .col_expr(
            job_run::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            job_run::Column::LeaseExpiresAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
}

/// Log rows of (run id, attempt, stream, message) lines, all stamped `now`.
fn log_models(
    lines: Vec<(String, i32, String, String)>,
    now: DateTime<Utc>,
) -> impl Iterator<Item = job_run_log::ActiveModel> {
    lines.into_iter().map(
        move |(run_id, attempt, stream, message)| job_run_log::ActiveModel {
            run_id: Set(run_id),
            attempt: Set(attempt),
            stream: Set(stream),
            message: Set(message),
            created_at: Set(now),
            ..Default::default()
        },
    )
}

/// One log line as text: engine lines are marked, process output is verbatim.
pub fn format_log_line(l: &StoredLogLine) -> String {
    l.text()
}

/// A stored job version; an error naming the row when its snapshot cannot be read.
fn job_version_to_wire(m: job_definition_version::Model) -> StoreResult<JobDefinitionVersion> {
    Ok(JobDefinitionVersion {
        definition: stored_json(
            ("job_definition_versions", &m.id, "definition"),
            m.definition,
        )?,
        version: m.version,
        created_at: m.created_at,
    })
}

/// A new time-ordered id (UUIDv7): newest-first ordering by id is creation order.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
