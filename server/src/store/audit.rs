//! The audit log: one row per write, manual run, cancel, retry, secret write and secret
//! resolution, and per rejected request. Rows are only ever inserted.
use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::Value;

use super::{Store, StoreResult, entities::audit_log, new_id};

/// Outcome recorded with an audit entry: `ok`, or the rejection code of the request
/// (`missing_token`, `invalid_token`, `forbidden`), or another error code of the API.
pub type AuditStatus = String;

/// One audit entry to record.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// Who: the token's subject, `local` in open local mode, `None` when unknown.
    pub subject: Option<String>,
    /// The first hex characters of the SHA-256 of the presented token (never the token).
    pub token_hash_prefix: Option<String>,
    /// What, e.g. `job.run`, `workflow.update`, `secret.write`, `secret.resolve`.
    pub action: String,
    /// On what, e.g. `jobs/build-app`, `secrets/NOTIFIER_TOKEN`.
    pub resource: Option<String>,
    pub status: AuditStatus,
    pub status_code: Option<i32>,
    pub ip: Option<String>,
    /// Free-form details; never a secret value.
    pub details: Value,
}

impl Store {
    /// Appends an audit entry and returns its id.
    pub async fn insert_audit_log(&self, record: AuditRecord) -> StoreResult<String> {
        let id = new_id();
        audit_log::Entity::insert(audit_log::ActiveModel {
            id: Set(id.clone()),
            subject: Set(record.subject),
            token_hash_prefix: Set(record.token_hash_prefix),
            action: Set(record.action),
            resource: Set(record.resource),
            status: Set(record.status),
            status_code: Set(record.status_code),
            ip: Set(record.ip),
            details: Set(if record.details.is_null() {
                Value::Object(Default::default())
            } else {
                record.details
            }),
            created_at: Set(Utc::now()),
        })
        .exec_without_returning(self.conn())
        .await?;
        Ok(id)
    }
}
