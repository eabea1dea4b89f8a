//! Group commit of inserts: rows that callers insert at the same moment share one multi-row
//! INSERT (one statement, one commit). Each caller still waits until its own row is committed,
//! so nothing is acknowledged before it is durable; a burst costs one commit instead of one per
//! row. One writer task per table and store, started on first use.
use std::sync::{Arc, OnceLock};

use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait};
use tokio::sync::{mpsc, oneshot};

use super::StoreResult;

/// Most rows one INSERT carries.
const MAX_GROUP: usize = 200;

/// One row waiting for its commit, and who to tell.
type Pending<A> = (A, oneshot::Sender<StoreResult<()>>);

pub(super) struct GroupInsert<A> {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Pending<A>>>>,
}

impl<A> Clone for GroupInsert<A> {
    fn clone(&self) -> Self {
        GroupInsert {
            tx: self.tx.clone(),
        }
    }
}

impl<A> Default for GroupInsert<A> {
    fn default() -> Self {
        GroupInsert {
            tx: Default::default(),
        }
    }
}

impl<A> std::fmt::Debug for GroupInsert<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupInsert")
    }
}

impl<A> GroupInsert<A>
where
    A: ActiveModelTrait + Clone + Send + Sync + 'static,
{
    /// Inserts `row` together with whatever else is being inserted right now; returns once it
    /// is committed (or with the error of its own insert).
    pub async fn insert(&self, conn: &DatabaseConnection, row: A) -> StoreResult<()> {
        let tx = self
            .tx
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                // Holds the connection, not the store: the task ends when every sender is gone.
                tokio::spawn(write_groups(conn.clone(), rx));
                tx
            })
            .clone();
        let (done_tx, done_rx) = oneshot::channel();
        match tx.send((row, done_tx)) {
            Ok(()) => done_rx
                .await
                .map_err(|_| DbErr::Custom("the group-insert writer stopped".into()))?,
            // The writer is gone (its runtime is shutting down): insert this one directly.
            Err(mpsc::error::SendError((row, _))) => insert_one(conn, row).await,
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

async fn write_groups<A>(conn: DatabaseConnection, mut rx: mpsc::UnboundedReceiver<Pending<A>>)
where
    A: ActiveModelTrait + Clone + Send + Sync + 'static,
{
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let (row, done) = group.remove(0);
            let _ = done.send(insert_one(&conn, row).await);
            continue;
        }
        let rows: Vec<A> = group.iter().map(|(row, _)| row.clone()).collect();
        match A::Entity::insert_many(rows)
            .exec_without_returning(&conn)
            .await
        {
            Ok(_) => {
                for (_, done) in group {
                    let _ = done.send(Ok(()));
                }
            }
            // Nothing of the group was stored: each row is tried on its own, so every caller
            // gets its own outcome (a unique key taken, say).
            Err(_) => {
                for (row, done) in group {
                    let _ = done.send(insert_one(&conn, row).await);
                }
            }
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
