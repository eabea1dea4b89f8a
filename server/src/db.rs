//! Database connection: SQLite (embedded default, a file in the data directory) or PostgreSQL
//! (`DATABASE_URL=postgres://...`). One sqlx pool per process, shared by SeaORM and apalis.
use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context as _;
use sea_orm::{DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};
use sea_orm_migration::MigratorTrait;
use sqlx::{
    postgres::{PgPool, PgPoolOptions},
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};

/// Which database this process talks to, with its raw pool (apalis and LISTEN need it).
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The connection shared by every part of the process.
#[derive(Clone, Debug)]
pub struct Database {
    pub conn: DatabaseConnection,
    pub pool: Pool,
}

impl Database {
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Closes the pool once its connections are back (at most `wait`), so the next process or
    /// test on the same SQLite file finds no connection of ours still open.
    pub async fn close(&self, wait: Duration) {
        let closing = async {
            match &self.pool {
                Pool::Sqlite(p) => p.close().await,
                Pool::Postgres(p) => p.close().await,
            }
        };
        if tokio::time::timeout(wait, closing).await.is_err() {
            tracing::warn!("database connections still busy at shutdown; leaving them");
        }
    }

    /// Connects without migrating.
    pub async fn connect(data_dir: &Path, url: Option<&str>) -> anyhow::Result<Database> {
        // An empty DATABASE_URL means "not set": the embedded default.
        match url.filter(|u| !u.trim().is_empty()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pool = PgPoolOptions::new()
                    .max_connections(20)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .context("connecting to PostgreSQL")?;
                Ok(Database {
                    conn: SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
                    pool: Pool::Postgres(pool),
                })
            }
            other => {
                let options = match other {
                    Some(url) => SqliteConnectOptions::from_str(url)
                        .with_context(|| "parsing the SQLite database URL")?,
                    None => {
                        std::fs::create_dir_all(data_dir).with_context(|| {
                            format!("creating the data directory {}", data_dir.display())
                        })?;
                        let file = data_dir.join("switchyard.db");
                        // Created 0600 before SQLite opens it (its -wal and -shm files take the
                        // database's mode): builds running as another user must not read it.
                        crate::sandbox::private_database_files(&file)?;
                        SqliteConnectOptions::new().filename(file)
                    }
                };
                let options = options
                    .create_if_missing(true)
                    // Pages freed by retention go back to the file system (`reclaim_space`);
                    // a new file gets this before its first table, an older one at migrate.
                    .auto_vacuum(SqliteAutoVacuum::Incremental)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(15))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(15))
                    .connect_with(options.clone())
                    .await
                    .context("opening the SQLite database")?;
                // A file named by a URL (or created by an older version) is made 0600 too.
                let file = options.get_filename();
                if file.is_file() {
                    crate::sandbox::private_database_files(file)?;
                }
                Ok(Database {
                    conn: SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
                    pool: Pool::Sqlite(pool),
                })
            }
        }
    }

    /// Connects, then applies our migrations and apalis' own.
    pub async fn connect_and_migrate(
        data_dir: &Path,
        url: Option<&str>,
    ) -> anyhow::Result<Database> {
        let db = Self::connect(data_dir, url).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        if let Pool::Sqlite(pool) = &self.pool {
            incremental_vacuum(pool).await;
        }
        migration::Migrator::up(&self.conn, None)
            .await
            .context("applying migrations")?;
        match &self.pool {
            Pool::Sqlite(pool) => apalis_sqlite::SqliteStorage::setup(pool)
                .await
                .context("setting up the apalis SQLite queue")?,
            Pool::Postgres(pool) => {
                apalis_postgres::PostgresStorage::setup(pool)
                    .await
                    .context("setting up the apalis PostgreSQL queue")?;
                // apalis announces every pushed task with a NOTIFY from a row trigger. NOTIFY
                // holds a global lock until commit, which serializes all pushes; our workers are
                // woken through the event bus instead, so the trigger only costs throughput.
                let enabled: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'notify_workers' \
                     AND tgrelid = 'apalis.jobs'::regclass AND tgenabled <> 'D')",
                )
                .fetch_one(pool)
                .await?;
                if enabled {
                    sqlx::query("ALTER TABLE apalis.jobs DISABLE TRIGGER notify_workers")
                        .execute(pool)
                        .await
                        .context("disabling apalis' per-task NOTIFY trigger")?;
                }
            }
        }
        if let Pool::Sqlite(pool) = &self.pool {
            // apalis' setup switches one pooled connection to synchronous=OFF; a crash could
            // then lose committed runs. Put it back on every connection we can reach.
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// True when the database answers and no migration is pending.
    pub async fn ready(&self) -> Result<(), String> {
        use sea_orm::ConnectionTrait;
        self.conn
            .execute_unprepared("SELECT 1")
            .await
            .map_err(|e| format!("database: {e}"))?;
        let pending = migration::Migrator::get_pending_migrations(&self.conn)
            .await
            .map_err(|e| format!("migrations: {e}"))?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{} migration(s) pending", pending.len()))
        }
    }
}

/// Switches a SQLite file made before retention existed to incremental auto-vacuum, so that
/// the pages retention frees can be given back to the file system. That takes one `VACUUM`,
/// which rewrites the file (it needs as much free disk as the file's size, and as long as
/// copying it); done once, at the first start of this version. Best effort: a file another
/// process keeps busy is converted at a later start.
async fn incremental_vacuum(pool: &SqlitePool) {
    let mode: Result<i64, _> = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(pool)
        .await;
    if !matches!(mode, Ok(0)) {
        return;
    }
    let started = std::time::Instant::now();
    tracing::info!(
        "converting the SQLite database to incremental auto-vacuum (once: VACUUM rewrites the file)"
    );
    let converted = async {
        let mut conn = pool.acquire().await?;
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("VACUUM").execute(&mut *conn).await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    match converted {
        Ok(()) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "the SQLite database now gives pages that retention frees back to the file system"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not convert the SQLite database to incremental auto-vacuum; trying again at the next start")
        }
    }
}

/// Creates an empty PostgreSQL database next to the one `admin_url` points at and returns its
/// URL (tests and benchmarks get a database of their own).
pub async fn create_scratch_postgres(admin_url: &str, prefix: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    // Same server and options (e.g. `?sslmode=`), the new database.
    let mut url = url::Url::parse(admin_url).context("parsing the PostgreSQL URL")?;
    url.set_path(&name);
    Ok(url.to_string())
}

/// Drops a database made by [`create_scratch_postgres`].
pub async fn drop_scratch_postgres(admin_url: &str, url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let parsed = url::Url::parse(url).context("parsing the PostgreSQL URL")?;
    let name = parsed.path().trim_start_matches('/');
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}
