//! What the lists of the API and the pages ask for: which page (by offset or by keyset
//! cursor), the filters, and a page of results with the total and the next cursor. Plain data:
//! the store runs the queries, the edges parse requests into these.
use chrono::{DateTime, Utc};

use crate::values::{RunStatus, WorkflowRunStatus};

/// Which page of a list: `limit` rows after `offset` rows, or after the row whose id is
/// `cursor` (then `offset` is ignored).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u64,
    pub offset: u64,
    pub cursor: Option<String>,
}

/// One page of a list, the rows matching over all pages, and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub next_cursor: Option<String>,
}

impl PageRequest {
    pub fn new(limit: u64, offset: u64, cursor: Option<String>) -> Self {
        PageRequest {
            limit,
            offset,
            cursor,
        }
    }
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            next_cursor: self.next_cursor,
        }
    }
}

/// Filter and paging of the catalog lists (job definitions, workflows, services).
#[derive(Debug, Clone, Default)]
pub struct CatalogFilter {
    /// Text searched (case-insensitive substring) in the slug and the name.
    pub q: Option<String>,
    /// Services only: their health statuses.
    pub statuses: Vec<String>,
    pub page: PageRequest,
}

/// Filter and paging for run lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job_definition_id: Option<String>,
    pub statuses: Vec<RunStatus>,
    pub q: Option<String>,
    pub limit: u64,
    pub offset: u64,
    /// Keyset cursor: the id of the last run of the previous page.
    pub cursor: Option<String>,
}

/// A page of runs.
#[derive(Debug, Clone)]
pub struct RunPage<T> {
    pub runs: Vec<T>,
    pub total: u64,
    pub next_cursor: Option<String>,
}

/// Filter and paging of workflow run lists.
#[derive(Debug, Clone, Default)]
pub struct WorkflowRunFilter {
    pub workflow_slug: Option<String>,
    pub statuses: Vec<WorkflowRunStatus>,
    /// Text searched (case-insensitive substring) in the run id, workflow slug and error.
    pub q: Option<String>,
    pub limit: u64,
    pub offset: u64,
    pub cursor: Option<String>,
}

/// Filters of an audit list; empty lists and `None` mean "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actions: Vec<String>,
    pub subject: Option<String>,
    pub statuses: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: entries older than this id (ids are UUIDv7, so id order is time order).
    pub cursor: Option<String>,
    pub limit: u64,
}
