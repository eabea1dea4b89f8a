//! Database schema, as reversible sea-orm migrations. The same code runs on SQLite and
//! PostgreSQL. Table names avoid `jobs`/`workers`: apalis owns `Jobs` and `Workers` in the
//! SQLite file and SQLite names ignore case.
pub use sea_orm_migration::prelude::*;

mod m20261123_000001_jobs_foundation;
mod m20261123_000002_run_list_indexes;
mod m20261123_000003_workflows_and_services;
mod m20261123_000004_workflow_runs;
mod m20261123_000005_security_observability;
mod m20261205_000006_sessions_and_seeds;
mod m20261205_000007_run_search;
mod m20261205_000008_workflow_providers;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_jobs_foundation::Migration),
            Box::new(m20261123_000002_run_list_indexes::Migration),
            Box::new(m20261123_000003_workflows_and_services::Migration),
            Box::new(m20261123_000004_workflow_runs::Migration),
            Box::new(m20261123_000005_security_observability::Migration),
            Box::new(m20261205_000006_sessions_and_seeds::Migration),
            Box::new(m20261205_000007_run_search::Migration),
            Box::new(m20261205_000008_workflow_providers::Migration),
        ]
    }
}
