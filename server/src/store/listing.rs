//! What every list shares: newest first by id (ids are UUIDv7, so by creation), a page by
//! offset or by keyset cursor, an exact total, and a case-insensitive substring search.
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use super::StoreResult;
pub use domain::listing::{CatalogFilter, Page, PageRequest};

/// `q` (trimmed; none when blank) as a LIKE pattern matching it anywhere, its own wildcards
/// taken literally (escaped with `!`, which needs no quoting in either backend's literals).
fn contains_pattern(q: &str) -> LikeExpr {
    let mut escaped = String::with_capacity(q.len() + 2);
    escaped.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            escaped.push('!');
        }
        escaped.push(c);
    }
    escaped.push('%');
    LikeExpr::new(escaped).escape('!')
}

/// The search text of a `q` parameter: trimmed, none when blank.
pub fn search_text(q: Option<&str>) -> Option<&str> {
    q.map(str::trim).filter(|q| !q.is_empty())
}

/// Rows where `lower(column)` contains `q`, for any of `columns`. The lower-cased expression
/// is what the PostgreSQL trigram indexes cover (migration m20261205_000007).
pub fn matches_any<C: ColumnTrait>(q: &str, columns: &[C]) -> Condition {
    columns.iter().fold(Condition::any(), |any, column| {
        any.add(Expr::expr(Func::lower(Expr::col(*column))).like(contains_pattern(q)))
    })
}

/// The run lists' search (job runs and workflow runs alike) of a `q` parameter (none when
/// blank): the run id by prefix (the primary key answers it), the slug and the error message
/// by case-insensitive substring (PostgreSQL answers those from the trigram indexes of
/// migration m20261205_000007; SQLite compares the rows).
pub fn run_search<C: ColumnTrait>(q: Option<&str>, id: C, slug: C, error: C) -> Condition {
    let Some(q) = search_text(q).map(str::to_lowercase) else {
        return Condition::all();
    };
    let mut any = Condition::any();
    if q.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        // Ids are lower-case hex and dashes: every id starting with `q` sorts between `q` and
        // `q` + "z", in binary order and in any locale's.
        any = any.add(
            Condition::all()
                .add(id.gte(q.clone()))
                .add(id.lt(format!("{q}z"))),
        );
    }
    any.add(matches_any(&q, &[slug, error]))
}

/// A page of one definition's stored versions, newest first; the cursor is a version number
/// (the versions below it). A row `to_wire` cannot read is an error.
pub async fn page_versions<E, C, V>(
    conn: &C,
    (slug_column, version_column): (E::Column, E::Column),
    slug: &str,
    page: &PageRequest,
    version_of: impl Fn(&E::Model) -> i32,
    to_wire: impl Fn(E::Model) -> StoreResult<V>,
) -> StoreResult<Page<V>>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ConnectionTrait,
{
    let page = page_by::<E, C>(
        conn,
        Condition::all().add(slug_column.eq(slug)),
        version_column,
        page,
        |m| version_of(m).to_string(),
        |c| c.parse::<i32>().unwrap_or(i32::MAX).into(),
    )
    .await?;
    try_map(page, to_wire)
}

/// The page with each item converted by `f`; the first item `f` cannot convert is the error.
pub fn try_map<T, U>(page: Page<T>, f: impl FnMut(T) -> StoreResult<U>) -> StoreResult<Page<U>> {
    Ok(Page {
        items: page.items.into_iter().map(f).collect::<StoreResult<_>>()?,
        total: page.total,
        next_cursor: page.next_cursor,
    })
}

/// One page of `E`'s rows matching `cond`, newest first by `id`, with the exact total.
pub async fn page_of<E, C>(
    conn: &C,
    cond: Condition,
    id: E::Column,
    page: &PageRequest,
    id_of: impl Fn(&E::Model) -> String,
) -> StoreResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ConnectionTrait,
{
    page_by::<E, C>(conn, cond, id, page, id_of, |c| c.to_string().into()).await
}

/// [`page_of`] by any descending key: `key_of` writes a row's key as a cursor and
/// `cursor_value` reads a cursor back as a value of the key's column.
pub async fn page_by<E, C>(
    conn: &C,
    cond: Condition,
    key: E::Column,
    page: &PageRequest,
    key_of: impl Fn(&E::Model) -> String,
    cursor_value: impl Fn(&str) -> sea_orm::Value,
) -> StoreResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ConnectionTrait,
{
    let (id, id_of) = (key, key_of);
    let total = E::find().filter(cond.clone()).count(conn).await?;
    let mut query = E::find().filter(cond);
    if let Some(cursor) = &page.cursor {
        query = query.filter(id.lt(cursor_value(cursor)));
    } else if page.offset > 0 {
        query = query.offset(page.offset);
    }
    let mut rows = query
        .order_by_desc(id)
        .limit(page.limit + 1)
        .all(conn)
        .await?;
    let has_more = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    let next_cursor = if has_more {
        rows.last().map(&id_of)
    } else {
        None
    };
    Ok(Page {
        items: rows,
        total,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_trimmed_and_blank_is_none() {
        assert_eq!(search_text(Some("  ab ")), Some("ab"));
        assert_eq!(search_text(Some("   ")), None);
        assert_eq!(search_text(None), None);
    }
}
