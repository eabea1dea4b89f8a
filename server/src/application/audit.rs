//! The audit log as the edges use it: record an entry (the HTTP layer does for every write and
//! every refused request), read a page of it.
use domain::{audit::AuditRecord, listing::AuditFilter};

use super::AppResult;
use crate::store::{AuditPage, Store};

#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> AuditLog {
        AuditLog { store }
    }

    /// Appends an entry once it is committed; returns its id.
    pub async fn record(&self, record: AuditRecord) -> AppResult<String> {
        Ok(self.store.insert_audit_log(record).await?)
    }

    /// One page of entries, newest first.
    pub async fn page(&self, filter: &AuditFilter) -> AppResult<AuditPage> {
        Ok(self.store.list_audit_logs(filter).await?)
    }
}
