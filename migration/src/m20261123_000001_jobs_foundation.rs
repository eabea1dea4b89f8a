//! Job definitions (with version history), job runs, their logs and the event log.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JobDefinitions {
    Table,
    Id,
    Slug,
    Name,
    Version,
    JobType,
    EntryPoint,
    ParametersSchema,
    DefaultParameters,
    TimeoutMs,
    RetryPolicy,
    Metadata,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum JobDefinitionVersions {
    Table,
    Id,
    JobDefinitionId,
    Slug,
    Version,
    Definition,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum JobRuns {
    Table,
    Id,
    JobDefinitionId,
    JobSlug,
    JobVersion,
    EntryPoint,
    Status,
    Parameters,
    Result,
    ErrorMessage,
    Metrics,
    Context,
    TimeoutMs,
    Attempt,
    MaxAttempts,
    RetryPolicy,
    Trigger,
    WorkflowRunId,
    WorkflowStepId,
    IdempotencyKey,
    DurationMs,
    ScheduledAt,
    StartedAt,
    CompletedAt,
    CreatedAt,
    UpdatedAt,
    LeaseOwner,
    LeaseExpiresAt,
    DispatchedAt,
}

#[derive(DeriveIden)]
enum JobRunLogs {
    Table,
    Id,
    RunId,
    Attempt,
    Stream,
    Message,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    EventType,
    Payload,
    CreatedAt,
}

fn id_col<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .string_len(36)
        .not_null()
        .primary_key()
        .to_owned()
}

fn ts<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn ts_null<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn json<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).json_binary().not_null().to_owned()
}

fn json_null<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).json_binary().null().to_owned()
}

fn index<T: IntoIden + Clone + 'static>(
    name: &str,
    table: T,
    cols: &[JobRuns],
) -> IndexCreateStatement {
    let mut stmt = Index::create().name(name).table(table).to_owned();
    for c in cols {
        stmt.col(*c);
    }
    stmt
}

/// `job_definitions`, the current version of each definition, and its index by creation time.
async fn create_job_definitions(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(JobDefinitions::Table)
            .col(id_col(JobDefinitions::Id))
            .col(
                ColumnDef::new(JobDefinitions::Slug)
                    .string_len(100)
                    .not_null()
                    .unique_key(),
            )
            .col(ColumnDef::new(JobDefinitions::Name).string().not_null())
            .col(ColumnDef::new(JobDefinitions::Version).integer().not_null())
            .col(
                ColumnDef::new(JobDefinitions::JobType)
                    .string_len(32)
                    .not_null(),
            )
            .col(
                ColumnDef::new(JobDefinitions::EntryPoint)
                    .string()
                    .not_null(),
            )
            .col(json(JobDefinitions::ParametersSchema))
            .col(json(JobDefinitions::DefaultParameters))
            .col(
                ColumnDef::new(JobDefinitions::TimeoutMs)
                    .big_integer()
                    .not_null(),
            )
            .col(json(JobDefinitions::RetryPolicy))
            .col(json(JobDefinitions::Metadata))
            .col(ts(JobDefinitions::CreatedAt))
            .col(ts(JobDefinitions::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_job_definitions_created_at")
            .table(JobDefinitions::Table)
            .col(JobDefinitions::CreatedAt)
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `job_definition_versions`, every version of each definition, unique by slug and version.
async fn create_job_definition_versions(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(JobDefinitionVersions::Table)
            .col(id_col(JobDefinitionVersions::Id))
            .col(
                ColumnDef::new(JobDefinitionVersions::JobDefinitionId)
                    .string_len(36)
                    .not_null(),
            )
            .col(
                ColumnDef::new(JobDefinitionVersions::Slug)
                    .string_len(100)
                    .not_null(),
            )
            .col(
                ColumnDef::new(JobDefinitionVersions::Version)
                    .integer()
                    .not_null(),
            )
            .col(json(JobDefinitionVersions::Definition))
            .col(ts(JobDefinitionVersions::CreatedAt))
            .col(ts(JobDefinitionVersions::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_job_definition_versions_slug_version")
            .table(JobDefinitionVersions::Table)
            .col(JobDefinitionVersions::Slug)
            .col(JobDefinitionVersions::Version)
            .unique()
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `job_runs`, one row per run (its lease and attempt included).
async fn create_job_runs(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(JobRuns::Table)
            .col(id_col(JobRuns::Id))
            .col(
                ColumnDef::new(JobRuns::JobDefinitionId)
                    .string_len(36)
                    .not_null(),
            )
            .col(ColumnDef::new(JobRuns::JobSlug).string_len(100).not_null())
            .col(ColumnDef::new(JobRuns::JobVersion).integer().not_null())
            .col(ColumnDef::new(JobRuns::EntryPoint).string().not_null())
            .col(ColumnDef::new(JobRuns::Status).string_len(16).not_null())
            .col(json(JobRuns::Parameters))
            .col(json_null(JobRuns::Result))
            .col(ColumnDef::new(JobRuns::ErrorMessage).text().null())
            .col(json_null(JobRuns::Metrics))
            .col(json_null(JobRuns::Context))
            .col(ColumnDef::new(JobRuns::TimeoutMs).big_integer().not_null())
            .col(ColumnDef::new(JobRuns::Attempt).integer().not_null())
            .col(ColumnDef::new(JobRuns::MaxAttempts).integer().not_null())
            .col(json(JobRuns::RetryPolicy))
            .col(ColumnDef::new(JobRuns::Trigger).string_len(16).not_null())
            .col(ColumnDef::new(JobRuns::WorkflowRunId).string_len(36).null())
            .col(
                ColumnDef::new(JobRuns::WorkflowStepId)
                    .string_len(100)
                    .null(),
            )
            .col(
                ColumnDef::new(JobRuns::IdempotencyKey)
                    .string_len(255)
                    .null(),
            )
            .col(ColumnDef::new(JobRuns::DurationMs).big_integer().null())
            .col(ts(JobRuns::ScheduledAt))
            .col(ts_null(JobRuns::StartedAt))
            .col(ts_null(JobRuns::CompletedAt))
            .col(ts(JobRuns::CreatedAt))
            .col(ts(JobRuns::UpdatedAt))
            .col(ColumnDef::new(JobRuns::LeaseOwner).string_len(200).null())
            .col(ts_null(JobRuns::LeaseExpiresAt))
            .col(ts_null(JobRuns::DispatchedAt))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `job_runs`' indexes: the run lists, the lease and schedule scans, idempotency.
async fn create_job_runs_indexes(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    // Ids are UUIDv7 (time ordered), so `id` doubles as the keyset for newest-first paging.
    for (name, cols) in [
        ("idx_job_runs_status_id", vec![JobRuns::Status, JobRuns::Id]),
        (
            "idx_job_runs_definition_id",
            vec![JobRuns::JobDefinitionId, JobRuns::Id],
        ),
        ("idx_job_runs_slug", vec![JobRuns::JobSlug]),
        ("idx_job_runs_created_at", vec![JobRuns::CreatedAt]),
        (
            "idx_job_runs_status_lease",
            vec![JobRuns::Status, JobRuns::LeaseExpiresAt],
        ),
        (
            "idx_job_runs_status_scheduled",
            vec![JobRuns::Status, JobRuns::ScheduledAt],
        ),
        ("idx_job_runs_workflow_run", vec![JobRuns::WorkflowRunId]),
    ] {
        m.create_index(index(name, JobRuns::Table, &cols)).await?;
    }
    m.create_index(
        index(
            "idx_job_runs_idempotency",
            JobRuns::Table,
            &[JobRuns::JobDefinitionId, JobRuns::IdempotencyKey],
        )
        .unique()
        .to_owned(),
    )
    .await?;
    Ok(())
}

/// `job_run_logs`, a run's log lines in order, and their index by run.
async fn create_job_run_logs(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(JobRunLogs::Table)
            .col(
                ColumnDef::new(JobRunLogs::Id)
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(JobRunLogs::RunId).string_len(36).not_null())
            .col(ColumnDef::new(JobRunLogs::Attempt).integer().not_null())
            .col(ColumnDef::new(JobRunLogs::Stream).string_len(16).not_null())
            .col(ColumnDef::new(JobRunLogs::Message).text().not_null())
            .col(ts(JobRunLogs::CreatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_job_run_logs_run_id")
            .table(JobRunLogs::Table)
            .col(JobRunLogs::RunId)
            .col(JobRunLogs::Id)
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `events`, the event log, and its index by creation time.
async fn create_events(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(Events::Table)
            .col(
                ColumnDef::new(Events::Id)
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(Events::EventType).string_len(64).not_null())
            .col(json(Events::Payload))
            .col(ts(Events::CreatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_events_created_at")
            .table(Events::Table)
            .col(Events::CreatedAt)
            .to_owned(),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_job_definitions(m).await?;
        create_job_definition_versions(m).await?;
        create_job_runs(m).await?;
        create_job_runs_indexes(m).await?;
        create_job_run_logs(m).await?;
        create_events(m).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Events::Table.into_iden(),
            JobRunLogs::Table.into_iden(),
            JobRuns::Table.into_iden(),
            JobDefinitionVersions::Table.into_iden(),
            JobDefinitions::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
