//! Sign-in sessions (`sessions`, migration 6): opened by `POST /auth/sign-in`, read once per
//! cookie-carrying request by primary key, deleted by sign-out, pruned once expired.
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::{Store, StoreResult, entities::session};

/// A stored session: who opened it, with which token (its hex SHA-256), until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the cookie's secret.
    pub id: String,
    pub subject: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub async fn insert_session(&self, s: SessionRecord) -> StoreResult<()> {
        session::Entity::insert(session::ActiveModel {
            id: Set(s.id),
            subject: Set(s.subject),
            token_hash: Set(s.token_hash),
            created_at: Set(s.created_at),
            expires_at: Set(s.expires_at),
        })
        .exec_without_returning(self.conn())
        .await?;
        Ok(())
    }

    /// The session with this id, expired or not (the caller decides); one primary-key read.
    pub async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(session::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
            .map(|m| SessionRecord {
                id: m.id,
                subject: m.subject,
                token_hash: m.token_hash,
                created_at: m.created_at,
                expires_at: m.expires_at,
            }))
    }

    /// Revokes a session; whether it existed.
    pub async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let res = session::Entity::delete_by_id(id.to_string())
            .exec(self.conn())
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Deletes the sessions that expired before `now` (`idx_sessions_expires_at`); how many.
    pub async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let res = session::Entity::delete_many()
            .filter(session::Column::ExpiresAt.lte(now))
            .exec(self.conn())
            .await?;
        Ok(res.rows_affected)
    }
}
