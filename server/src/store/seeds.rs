//! `seed_markers`: which default definitions were ever seeded, so a deleted one stays deleted.
use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;

use super::{Store, StoreResult, entities::seed_marker};

impl Store {
    /// Whether the default definition `name` (`job:<slug>`) was seeded before.
    pub async fn is_seeded(&self, name: &str) -> StoreResult<bool> {
        Ok(seed_marker::Entity::find_by_id(name.to_string())
            .one(self.conn())
            .await?
            .is_some())
    }

    /// Remembers that `name` was seeded (a no-op when another process did already).
    pub async fn mark_seeded(&self, name: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let row = seed_marker::ActiveModel {
            name: sea_orm::ActiveValue::Set(name.to_string()),
            seeded_at: sea_orm::ActiveValue::Set(now),
        };
        seed_marker::Entity::insert(row)
            .on_conflict_do_nothing_on([seed_marker::Column::Name])
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }
}
