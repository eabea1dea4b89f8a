//! Group commit: writes that callers make at the same moment share one statement and one
//! commit (a multi-row INSERT, one UPDATE of many rows). Each caller still waits until its own
//! write is committed, so nothing is acknowledged before it is durable; a burst costs one commit
//! instead of one per write. One writer task per kind of write and store, started on first use.
use std::{
    future::Future,
    sync::{Arc, OnceLock},
};

use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait};
use tokio::sync::{mpsc, oneshot};

use super::StoreResult;

/// Most writes one group carries.
const MAX_GROUP: usize = 200;

/// One write waiting for its commit, and who to tell.
type Pending<T, R> = (T, oneshot::Sender<R>);

/// Hands writes made together to one writer task, which applies them as groups with `write`
/// (given at first use): whatever arrived while the previous group was being written forms the
/// next one. `write` returns one outcome per item, in order.
pub(super) struct Batcher<T, R> {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Pending<T, R>>>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T, R> Default for Batcher<T, R> {
    fn default() -> Self {
        Batcher {
            tx: Default::default(),
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T, R> Batcher<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Writes `item` with whatever else is being written right now; returns its own outcome
    /// once its group is committed. `Err(Some(item))`: the writer is gone (its runtime is
    /// shutting down) and the caller writes the item itself; `Err(None)`: the writer stopped
    /// while writing the item's group, so whether it was written is unknown.
    pub async fn submit<W, Fut>(&self, item: T, write: impl FnOnce() -> W) -> Result<R, Option<T>>
    where
        W: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let tx = self
            .tx
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                // The task ends when every sender is gone.
                tokio::spawn(write_groups(rx, write()));
                tx
            })
            .clone();
        let (done_tx, done_rx) = oneshot::channel();
        match tx.send((item, done_tx)) {
            Ok(()) => done_rx.await.map_err(|_| None),
            Err(mpsc::error::SendError((item, _))) => Err(Some(item)),
        }
    }
}

/// The error of a write whose group writer stopped before answering (`Err(None)` of
/// [`Batcher::submit`]).
pub(super) fn writer_stopped() -> DbErr {
    DbErr::Custom("the group writer stopped before answering".into())
}

async fn write_groups<T, R, W, Fut>(mut rx: mpsc::UnboundedReceiver<Pending<T, R>>, mut write: W)
where
    W: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let (items, waiting): (Vec<T>, Vec<oneshot::Sender<R>>) = group.into_iter().unzip();
        let outcomes = write(items).await;
        debug_assert_eq!(outcomes.len(), waiting.len());
        for (done, outcome) in waiting.into_iter().zip(outcomes) {
            let _ = done.send(outcome);
        }
    }
}

/// Group commit of inserts: rows inserted together share one multi-row INSERT; when it
/// fails, every row is tried on its own, so each caller gets its own outcome (a unique key
/// taken, say).
pub(super) type GroupInsert<A> = Batcher<A, StoreResult<()>>;

impl<A> Batcher<A, StoreResult<()>>
where
    A: ActiveModelTrait + Clone + Send + Sync + 'static,
{
    /// Inserts `row` together with whatever else is being inserted right now; returns once it
    /// is committed (or with the error of its own insert).
    pub async fn insert(&self, conn: &DatabaseConnection, row: A) -> StoreResult<()> {
        // The writer holds the connection, not the store.
        let writer = || {
            let conn = conn.clone();
            move |rows: Vec<A>| insert_group(conn.clone(), rows)
        };
        match self.submit(row, writer).await {
            Ok(r) => r,
            Err(Some(row)) => insert_one(conn, row).await,
            Err(None) => Err(writer_stopped()),
        }
    }
}

async fn insert_one<A>(conn: &DatabaseConnection, row: A) -> StoreResult<()>
where
    A: ActiveModelTrait + Send + Sync,
{
    A::Entity::insert(row)
        .exec_without_returning(conn)
        .await
        .map(|_| ())
}

async fn insert_group<A>(conn: DatabaseConnection, rows: Vec<A>) -> Vec<StoreResult<()>>
where
    A: ActiveModelTrait + Clone + Send + Sync,
{
    if rows.len() == 1 {
        return vec![insert_one(&conn, rows[0].clone()).await];
    }
    match A::Entity::insert_many(rows.clone())
        .exec_without_returning(&conn)
        .await
    {
        Ok(_) => rows.iter().map(|_| Ok(())).collect(),
        // Nothing of the group was stored: each row is tried on its own.
        Err(_) => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(insert_one(&conn, row).await);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait};

    use super::GroupInsert;
    use crate::{db::Database, store::entities::audit_log};

    fn row(id: &str) -> audit_log::ActiveModel {
        audit_log::ActiveModel {
            id: Set(id.to_string()),
            subject: Set(None),
            token_hash_prefix: Set(None),
            action: Set("test.write".into()),
            resource: Set(None),
            status: Set("ok".into()),
            status_code: Set(None),
            ip: Set(None),
            details: Set(serde_json::json!({})),
            created_at: Set(chrono::Utc::now()),
        }
    }

    /// Rows sent together share a group; when the group's INSERT fails (here: a duplicate key),
    /// every row is retried alone and each caller gets its own outcome.
    #[tokio::test]
    async fn a_failing_group_gives_each_row_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect_and_migrate(dir.path(), None)
            .await
            .unwrap();
        let group = GroupInsert::default();
        // On this single-threaded runtime all four are queued before the writer runs.
        let (a, b, c, d) = tokio::join!(
            group.insert(&db.conn, row("a")),
            group.insert(&db.conn, row("b")),
            group.insert(&db.conn, row("a")),
            group.insert(&db.conn, row("c")),
        );
        assert!(a.is_ok() && b.is_ok() && d.is_ok(), "{a:?} {b:?} {d:?}");
        assert!(c.is_err(), "the duplicate must fail on its own");
        assert_eq!(audit_log::Entity::find().count(&db.conn).await.unwrap(), 3);

        // And a group without problems is stored whole.
        let ids: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
        let results =
            futures::future::join_all(ids.iter().map(|id| group.insert(&db.conn, row(id)))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(audit_log::Entity::find().count(&db.conn).await.unwrap(), 23);
    }
}
