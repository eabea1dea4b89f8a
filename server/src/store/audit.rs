//! The audit log: one row per write, manual run, cancel, retry, secret write and secret
//! resolution, and per rejected request. Rows are only ever inserted.
use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;
use wire::AuditEntry;

use super::{AuditFilter, Store, StoreResult, entities::audit_log, new_id};
pub use domain::audit::{AuditRecord, AuditStatus};

impl Store {
    /// Appends an audit entry and returns its id once it is committed. Entries recorded at the
    /// same moment (concurrent requests) share one multi-row INSERT and commit: the caller
    /// still waits for its own entry to be durable, but a burst of writes costs one commit,
    /// not one each.
    pub async fn insert_audit_log(&self, record: AuditRecord) -> StoreResult<String> {
        let id = new_id();
        self.audit
            .insert(self.conn(), audit_row(id.clone(), record))
            .await?;
        Ok(id)
    }
}

fn audit_row(id: String, record: AuditRecord) -> audit_log::ActiveModel {
    audit_log::ActiveModel {
        id: Set(id),
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
    }
}

/// One page of audit entries, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

fn entry_to_wire(m: audit_log::Model) -> AuditEntry {
    AuditEntry {
        id: m.id,
        subject: m.subject,
        token_hash_prefix: m.token_hash_prefix,
        action: m.action,
        resource: m.resource,
        status: m.status,
        status_code: m.status_code,
        ip: m.ip,
        details: m.details,
        created_at: m.created_at,
    }
}

impl Store {
    /// Audit entries, newest first, filtered, one keyset page.
    pub async fn list_audit_logs(&self, f: &AuditFilter) -> StoreResult<AuditPage> {
        let mut cond = Condition::all();
        if !f.actions.is_empty() {
            cond = cond.add(audit_log::Column::Action.is_in(f.actions.iter().cloned()));
        }
        if let Some(subject) = &f.subject {
            cond = cond.add(audit_log::Column::Subject.eq(subject.clone()));
        }
        if !f.statuses.is_empty() {
            cond = cond.add(audit_log::Column::Status.is_in(f.statuses.iter().cloned()));
        }
        if let Some(since) = f.since {
            cond = cond.add(audit_log::Column::CreatedAt.gte(since));
        }
        if let Some(until) = f.until {
            cond = cond.add(audit_log::Column::CreatedAt.lt(until));
        }
        if let Some(cursor) = &f.cursor {
            cond = cond.add(audit_log::Column::Id.lt(cursor.clone()));
        }
        let limit = f.limit.clamp(1, 100);
        let rows = audit_log::Entity::find()
            .filter(cond)
            .order_by_desc(audit_log::Column::Id)
            .limit(limit + 1)
            .all(self.conn())
            .await?;
        let has_more = rows.len() as u64 > limit;
        let entries: Vec<AuditEntry> = rows
            .into_iter()
            .take(limit as usize)
            .map(entry_to_wire)
            .collect();
        let next_cursor = if has_more {
            entries.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }
}
