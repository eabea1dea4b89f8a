//! The secret store's tables: `secrets` (one row per key with its current version) and
//! `secret_versions` (each version's AES-256-GCM ciphertext and nonce, base64). Plaintext never
//! reaches this module: callers pass a sealing function that encrypts for the version chosen
//! here, inside the transaction.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};
use wire::{SecretMetadata, SecretVersionInfo};

use super::{
    Store, StoreResult,
    entities::{secret, secret_version},
    new_id,
};

/// A version's sealed value as stored.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub version: i32,
    /// Base64 of ciphertext + tag.
    pub ciphertext: String,
    /// Base64 of the 96-bit nonce.
    pub nonce: String,
}

/// Why a new version was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutSecretError {
    /// The explicit version is not above the current one, or another write won the race.
    #[error("{0}")]
    Conflict(String),
    #[error("could not encrypt the value")]
    Seal,
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

/// A page of secrets.
#[derive(Debug, Clone)]
pub struct SecretPage {
    pub secrets: Vec<SecretMetadata>,
    pub total: u64,
}

/// A unique-key violation is a lost race (`raced`); anything else a database error.
fn unique_or(e: sea_orm::DbErr, raced: impl FnOnce() -> PutSecretError) -> PutSecretError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => raced(),
        _ => PutSecretError::Database(e),
    }
}

fn metadata(row: secret::Model, mut versions: Vec<SecretVersionInfo>) -> SecretMetadata {
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    SecretMetadata {
        key: row.key,
        version: row.current_version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        versions,
    }
}

impl Store {
    async fn versions_of(
        &self,
        keys: &[String],
    ) -> StoreResult<HashMap<String, Vec<SecretVersionInfo>>> {
        let mut out: HashMap<String, Vec<SecretVersionInfo>> = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(String, i32, DateTime<Utc>)> = secret_version::Entity::find()
            .select_only()
            .column(secret_version::Column::SecretKey)
            .column(secret_version::Column::Version)
            .column(secret_version::Column::CreatedAt)
            .filter(secret_version::Column::SecretKey.is_in(keys.iter().cloned()))
            .into_tuple()
            .all(self.conn())
            .await?;
        for (key, version, created_at) in rows {
            out.entry(key).or_default().push(SecretVersionInfo {
                version,
                created_at,
            });
        }
        Ok(out)
    }

    /// Secrets, most recently changed first; `q` matches a substring of the key.
    pub async fn list_secrets(
        &self,
        q: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> StoreResult<SecretPage> {
        let mut query = secret::Entity::find();
        if let Some(q) = q.filter(|q| !q.is_empty()) {
            query = query.filter(secret::Column::Key.contains(q));
        }
        let total = query.clone().count(self.conn()).await?;
        let rows = query
            .order_by_desc(secret::Column::UpdatedAt)
            .order_by_asc(secret::Column::Key)
            .limit(limit)
            .offset(offset)
            .all(self.conn())
            .await?;
        let keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
        let mut versions = self.versions_of(&keys).await?;
        let secrets = rows
            .into_iter()
            .map(|r| {
                let v = versions.remove(&r.key).unwrap_or_default();
                metadata(r, v)
            })
            .collect();
        Ok(SecretPage { secrets, total })
    }

    pub async fn get_secret(&self, key: &str) -> StoreResult<Option<SecretMetadata>> {
        let Some(row) = secret::Entity::find_by_id(key.to_string())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let versions = self
            .versions_of(std::slice::from_ref(&row.key))
            .await?
            .remove(&row.key)
            .unwrap_or_default();
        Ok(Some(metadata(row, versions)))
    }

    /// Stores a new version: `version` if given (it must be above the current one), else
    /// the current + 1 (1 for a new key). `seal(version)` encrypts the value for that version.
    /// Returns the metadata and whether the key is new.
    pub async fn put_secret(
        &self,
        key: &str,
        version: Option<i32>,
        seal: impl FnOnce(i32) -> Option<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<(SecretMetadata, bool), PutSecretError> {
        let txn = self.conn().begin().await?;
        // Write before reading: on SQLite a transaction that reads first cannot take the write
        // lock once another connection has written ("database is locked", without waiting);
        // on PostgreSQL this locks the key's row until commit.
        secret::Entity::update_many()
            .col_expr(
                secret::Column::UpdatedAt,
                Expr::col(secret::Column::UpdatedAt),
            )
            .filter(secret::Column::Key.eq(key))
            .exec(&txn)
            .await?;
        let current = secret::Entity::find_by_id(key.to_string())
            .one(&txn)
            .await?;
        let (next, created) = match &current {
            None => (version.unwrap_or(1), true),
            Some(row) => match version {
                Some(v) if v <= row.current_version => {
                    return Err(PutSecretError::Conflict(format!(
                        "version {v} is not greater than the current version {} of secret {key}",
                        row.current_version
                    )));
                }
                Some(v) => (v, false),
                None => (row.current_version.saturating_add(1), false),
            },
        };
        let raced = || {
            PutSecretError::Conflict(format!(
                "secret {key} was changed by another request at the same time; try again"
            ))
        };
        match &current {
            None => {
                // A concurrent first write of the same key violates the primary key.
                let inserted = secret::Entity::insert(secret::ActiveModel {
                    key: Set(key.to_string()),
                    current_version: Set(next),
                    created_at: Set(now),
                    updated_at: Set(now),
                })
                .exec_without_returning(&txn)
                .await;
                if let Err(e) = inserted {
                    return Err(unique_or(e, raced));
                }
            }
            Some(row) => {
                // Conditional on the version read: two writers cannot both move it.
                let res = secret::Entity::update_many()
                    .col_expr(secret::Column::CurrentVersion, Expr::value(next))
                    .col_expr(secret::Column::UpdatedAt, Expr::value(now))
                    .filter(secret::Column::Key.eq(key))
                    .filter(secret::Column::CurrentVersion.eq(row.current_version))
                    .exec(&txn)
                    .await?;
                if res.rows_affected != 1 {
                    return Err(raced());
                }
            }
        }
        let (ciphertext, nonce) = seal(next).ok_or(PutSecretError::Seal)?;
        let inserted = secret_version::Entity::insert(secret_version::ActiveModel {
            id: Set(new_id()),
            secret_key: Set(key.to_string()),
            version: Set(next),
            ciphertext: Set(ciphertext),
            nonce: Set(nonce),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(e) = inserted {
            return Err(unique_or(e, raced));
        }
        txn.commit().await?;
        let stored = self
            .get_secret(key)
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound(key.to_string()))?;
        Ok((stored, created))
    }

    /// The sealed value of `version`, or of the current version; `None` when the key or that
    /// version does not exist.
    pub async fn sealed_secret(
        &self,
        key: &str,
        version: Option<i32>,
    ) -> StoreResult<Option<SealedSecret>> {
        let version = match version {
            Some(v) => v,
            None => match secret::Entity::find_by_id(key.to_string())
                .one(self.conn())
                .await?
            {
                Some(row) => row.current_version,
                None => return Ok(None),
            },
        };
        Ok(secret_version::Entity::find()
            .filter(secret_version::Column::SecretKey.eq(key))
            .filter(secret_version::Column::Version.eq(version))
            .one(self.conn())
            .await?
            .map(|m| SealedSecret {
                version: m.version,
                ciphertext: m.ciphertext,
                nonce: m.nonce,
            }))
    }

    /// Deletes a secret with all its versions; false when there was none.
    pub async fn delete_secret(&self, key: &str) -> StoreResult<bool> {
        let txn = self.conn().begin().await?;
        secret_version::Entity::delete_many()
            .filter(secret_version::Column::SecretKey.eq(key))
            .exec(&txn)
            .await?;
        let res = secret::Entity::delete_by_id(key.to_string())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(res.rows_affected == 1)
    }
}
