//! What every list endpoint shares: its paging parameters, the catalog lists' filter and the
//! `{"data": [...], "meta": {...}}` answer.
use std::collections::HashMap;

use axum::Json;
use wire::ListMeta;

use super::error::ApiError;
use domain::Problems;
use domain::listing::{CatalogFilter, Page, PageRequest};

/// The paging parameters of every list (`limit`, default 20, at most 100; `offset`; `cursor`);
/// problems go to `p`.
pub fn paging(q: &HashMap<String, String>, p: &mut Problems) -> (u64, u64, Option<String>) {
    paging_by(q, p, |v| {
        uuid::Uuid::parse_str(v).ok().map(|id| id.to_string())
    })
}

/// [`paging`] for a list whose cursor `cursor_of` reads (`None`: not one of its cursors).
fn paging_by(
    q: &HashMap<String, String>,
    p: &mut Problems,
    cursor_of: impl Fn(&str) -> Option<String>,
) -> (u64, u64, Option<String>) {
    let mut limit = 20;
    let mut offset = 0;
    let mut cursor = None;
    if let Some(v) = q.get("limit") {
        match v.parse::<u64>() {
            Ok(n) if (1..=100).contains(&n) => limit = n,
            _ => p.add("/query/limit", "must be an integer from 1 to 100"),
        }
    }
    if let Some(v) = q.get("offset") {
        match v.parse::<u64>() {
            Ok(n) => offset = n,
            _ => p.add("/query/offset", "must be a non-negative integer"),
        }
    }
    if let Some(v) = q.get("cursor").filter(|v| !v.is_empty()) {
        match cursor_of(v) {
            Some(c) => cursor = Some(c),
            None => p.add("/query/cursor", "must be a cursor from meta.nextCursor"),
        }
    }
    (limit, offset, cursor)
}

/// The catalog lists' query (`limit`, `offset`, `cursor`, `q`, and `status` where `statuses`
/// names the accepted values); every unknown parameter and bad value is a problem.
pub fn catalog_filter(
    q: &HashMap<String, String>,
    statuses: Option<(&[&str], String)>,
) -> Result<CatalogFilter, ApiError> {
    let mut p = Problems::new();
    for key in q.keys() {
        let known = ["limit", "offset", "cursor", "q"].contains(&key.as_str())
            || (key == "status" && statuses.is_some());
        if !known {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    let (limit, offset, cursor) = paging(q, &mut p);
    let mut f = CatalogFilter {
        q: q.get("q").cloned(),
        statuses: Vec::new(),
        page: PageRequest {
            limit,
            offset,
            cursor,
        },
    };
    if let (Some((accepted, expected)), Some(v)) = (statuses, q.get("status")) {
        for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if accepted.contains(&part) {
                f.statuses.push(part.to_string());
            } else {
                p.add(
                    "/query/status",
                    format!("unknown status {part:?}; expected {expected}"),
                );
            }
        }
    }
    p.finish(f).map_err(ApiError::invalid_request)
}

/// The version lists' query: `limit`, `offset`, `cursor` (a version number: the versions
/// below it); anything else is a problem.
pub fn version_paging(q: &HashMap<String, String>) -> Result<PageRequest, ApiError> {
    let mut p = Problems::new();
    for key in q.keys() {
        if !["limit", "offset", "cursor"].contains(&key.as_str()) {
            p.add(format!("/query/{key}"), "unknown query parameter");
        }
    }
    let (limit, offset, cursor) = paging_by(q, &mut p, |v| {
        v.parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n.to_string())
    });
    p.finish(PageRequest {
        limit,
        offset,
        cursor,
    })
    .map_err(ApiError::invalid_request)
}

/// A list's answer: the page's rows in `data`, and `meta` with the limit, the offset (0 when
/// paging by cursor), the total over all pages and the next page's cursor.
pub fn list_page<T>(page: Page<T>, req: &PageRequest) -> Json<wire::Page<T>> {
    Json(wire::Page {
        data: page.items,
        meta: ListMeta {
            limit: req.limit,
            offset: if req.cursor.is_some() { 0 } else { req.offset },
            total: Some(page.total),
            next_cursor: page.next_cursor,
        },
    })
}
