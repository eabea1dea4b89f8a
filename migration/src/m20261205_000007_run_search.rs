//! Indexes for the run lists' text search (`?q=`, issue 15), so it does not read every run.
//!
//! `q` matches a run id by prefix (the primary key answers that) and the job or workflow slug
//! and the error message as a case-insensitive substring, which a B-tree cannot answer. On
//! PostgreSQL: trigram GIN indexes (`pg_trgm`) on `lower(job_slug)` and `lower(error_message)`,
//! the expressions the store's search compares. `pg_trgm` is a trusted extension: a database
//! owner may create it. Where the server has no `pg_trgm` (contrib not installed), the indexes
//! are skipped and search reads the table.
//!
//! SQLite has none yet: an FTS5 trigram table kept by triggers was tried, and statements on a
//! table with such a trigger got an immediate `SQLITE_BUSY` under concurrent writes (the
//! workflow orchestrator's conditional updates), where the busy timeout should have applied.
//! Until that is understood, SQLite compares the rows (issue 19 measures it).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (run table, its slug column, the index name prefix).
const TABLES: [(&str, &str, &str); 2] = [
    ("job_runs", "job_slug", "job_runs_search"),
    ("workflow_runs", "workflow_slug", "workflow_runs_search"),
];

fn postgres_up(table: &str, slug: &str, search: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE INDEX IF NOT EXISTS {search}_slug ON {table} \
             USING gin (lower({slug}) gin_trgm_ops)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {search}_error ON {table} \
             USING gin (lower(error_message) gin_trgm_ops)"
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let mut statements = Vec::new();
        match m.get_database_backend() {
            DbBackend::Sqlite => return Ok(()),
            DbBackend::Postgres => {
                let available = db
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT 1 AS one FROM pg_available_extensions WHERE name = 'pg_trgm'",
                    ))
                    .await?
                    .is_some();
                if !available {
                    return Ok(());
                }
                statements.push("CREATE EXTENSION IF NOT EXISTS pg_trgm".to_string());
                for (table, slug, search) in TABLES {
                    statements.extend(postgres_up(table, slug, search));
                }
            }
            other => {
                return Err(DbErr::Migration(format!("unsupported database {other:?}")));
            }
        }
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for (_, _, search) in TABLES {
            if m.get_database_backend() != DbBackend::Postgres {
                return Ok(());
            }
            let statements = [
                format!("DROP INDEX IF EXISTS {search}_slug"),
                format!("DROP INDEX IF EXISTS {search}_error"),
            ];
            for sql in statements {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }
}
