//! Finished runs written straight into `job_runs`, the history a long-lived installation has.
//! Only the library's public entities and connection are used: the integration tests compile
//! this file too (`tests/api/retention.rs`), to store old runs without running them.
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use serde_json::{Value, json};
use server::store::entities::job_run;
use wire::{JobDefinition, RunStatus, Trigger};

/// Stores `count` finished runs of `definition`, created evenly over `span` before `now` with
/// ids in creation order, in multi-row inserts. Statuses: 85% succeeded, 10% failed,
/// 3% canceled, 2% expired.
pub async fn seed_finished_runs(
    conn: &impl ConnectionTrait,
    definition: &JobDefinition,
    count: u64,
    now: DateTime<Utc>,
    span: TimeDelta,
) -> Result<(), DbErr> {
    let step_ms = (span.num_milliseconds() / count.max(1) as i64).max(1);
    let mut batch = Vec::new();
    for i in 0..count {
        let created = now - TimeDelta::milliseconds(step_ms * (count - i) as i64);
        batch.push(job_run::ActiveModel::from(finished_run(
            definition, i, created,
        )));
        if batch.len() == 500 || i + 1 == count {
            job_run::Entity::insert_many(std::mem::take(&mut batch))
                .exec_without_returning(conn)
                .await?;
        }
    }
    Ok(())
}

/// The `i`th seeded run, created at `created` (its UUIDv7 id from that time too) and finished
/// 12 ms later.
fn finished_run(definition: &JobDefinition, i: u64, created: DateTime<Utc>) -> job_run::Model {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        created.timestamp() as u64,
        created.timestamp_subsec_nanos(),
    );
    let (status, error) = match i % 100 {
        0..=84 => (RunStatus::Succeeded, None),
        85..=94 => (RunStatus::Failed, Some(format!("seeded failure {i}"))),
        95..=97 => (
            RunStatus::Canceled,
            Some("canceled by operator".to_string()),
        ),
        _ => (RunStatus::Expired, Some("timed out".to_string())),
    };
    job_run::Model {
        id: uuid::Uuid::new_v7(ts).to_string(),
        job_definition_id: definition.id.clone(),
        job_slug: definition.slug.clone(),
        job_version: definition.version,
        entry_point: definition.entry_point.clone(),
        status: status.as_str().to_string(),
        parameters: json!({"i": i}),
        result: (status == RunStatus::Succeeded).then(|| json!({"ok": true})),
        error_message: error,
        metrics: None,
        context: None,
        timeout_ms: definition.timeout_ms,
        attempt: 1,
        max_attempts: 1,
        retry_policy: serde_json::to_value(&definition.retry_policy).unwrap_or(Value::Null),
        trigger: Trigger::Manual.as_str().to_string(),
        workflow_run_id: None,
        workflow_step_id: None,
        idempotency_key: None,
        duration_ms: Some(12),
        scheduled_at: created,
        started_at: Some(created),
        completed_at: Some(created + TimeDelta::milliseconds(12)),
        created_at: created,
        updated_at: created,
        lease_owner: None,
        lease_expires_at: None,
        dispatched_at: Some(created),
        driver: None,
    }
}
