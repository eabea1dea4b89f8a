//! What one audit log entry records (written by the server for every write, run, cancel,
//! retry, secret write and resolution, and every rejected request).
use serde_json::Value;

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
