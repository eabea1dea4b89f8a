//! An index that keeps the job catalog fast with many runs stored: per-job counts by status
//! with the newest run id, answered from the index alone. (Newest-first pages filtered by
//! status already have `idx_job_runs_status_id`, by job `idx_job_runs_definition_id`; the
//! dashboard reads the last 24 hours through `idx_job_runs_created_at`.) Every index on
//! `status` costs each run's state changes a write, so there is no other.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobRuns {
    Table,
    Id,
    Status,
    JobDefinitionId,
}

const DEFINITION_STATUS_ID: &str = "idx_job_runs_definition_status_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(DEFINITION_STATUS_ID)
                .table(JobRuns::Table)
                .col(JobRuns::JobDefinitionId)
                .col(JobRuns::Status)
                .col(JobRuns::Id)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in [DEFINITION_STATUS_ID] {
            m.drop_index(Index::drop().name(name).table(JobRuns::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
