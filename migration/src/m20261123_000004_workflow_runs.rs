//! Workflow runs and their steps. A run keeps a snapshot of the definition it started with
//! (`definition`), so a later change of the workflow never changes a run under way, and a
//! `revision` that every change of the run's state bumps: the orchestrator's writes are
//! conditional on it, so concurrent step completions in different processes serialize.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowRuns {
    Table,
    Id,
    WorkflowDefinitionId,
    WorkflowSlug,
    WorkflowVersion,
    Status,
    Parameters,
    Context,
    ErrorMessage,
    CurrentStepId,
    CurrentStepIndex,
    Metrics,
    TriggeredBy,
    Trigger,
    IdempotencyKey,
    Definition,
    Revision,
    StartedAt,
    CompletedAt,
    DurationMs,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowRunSteps {
    Table,
    Id,
    WorkflowRunId,
    StepId,
    Position,
    Status,
    Attempt,
    JobRunId,
    Input,
    Output,
    ErrorMessage,
    Metrics,
    StartedAt,
    CompletedAt,
    CreatedAt,
    UpdatedAt,
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

fn id36<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).string_len(36).not_null().to_owned()
}

/// `workflow_runs`, one row per run with the definition it started with.
async fn create_workflow_runs(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(WorkflowRuns::Table)
            .col(id36(WorkflowRuns::Id).primary_key())
            .col(id36(WorkflowRuns::WorkflowDefinitionId))
            .col(
                ColumnDef::new(WorkflowRuns::WorkflowSlug)
                    .string_len(100)
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRuns::WorkflowVersion)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRuns::Status)
                    .string_len(16)
                    .not_null(),
            )
            .col(json(WorkflowRuns::Parameters))
            .col(json(WorkflowRuns::Context))
            .col(ColumnDef::new(WorkflowRuns::ErrorMessage).text().null())
            .col(
                ColumnDef::new(WorkflowRuns::CurrentStepId)
                    .string_len(100)
                    .null(),
            )
            .col(
                ColumnDef::new(WorkflowRuns::CurrentStepIndex)
                    .integer()
                    .null(),
            )
            .col(json(WorkflowRuns::Metrics))
            .col(
                ColumnDef::new(WorkflowRuns::TriggeredBy)
                    .string_len(255)
                    .null(),
            )
            .col(json(WorkflowRuns::Trigger))
            .col(
                ColumnDef::new(WorkflowRuns::IdempotencyKey)
                    .string_len(255)
                    .null(),
            )
            .col(json(WorkflowRuns::Definition))
            .col(
                ColumnDef::new(WorkflowRuns::Revision)
                    .big_integer()
                    .not_null(),
            )
            .col(ts_null(WorkflowRuns::StartedAt))
            .col(ts_null(WorkflowRuns::CompletedAt))
            .col(
                ColumnDef::new(WorkflowRuns::DurationMs)
                    .big_integer()
                    .null(),
            )
            .col(ts(WorkflowRuns::CreatedAt))
            .col(ts(WorkflowRuns::UpdatedAt))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `workflow_runs`' indexes: the run lists and idempotency.
async fn create_workflow_runs_indexes(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    for (name, cols, unique) in [
        (
            "idx_workflow_runs_definition_id",
            vec![WorkflowRuns::WorkflowDefinitionId, WorkflowRuns::Id],
            false,
        ),
        (
            "idx_workflow_runs_slug_id",
            vec![WorkflowRuns::WorkflowSlug, WorkflowRuns::Id],
            false,
        ),
        (
            "idx_workflow_runs_status_id",
            vec![WorkflowRuns::Status, WorkflowRuns::Id],
            false,
        ),
        (
            "idx_workflow_runs_created_at",
            vec![WorkflowRuns::CreatedAt],
            false,
        ),
        (
            "idx_workflow_runs_idempotency",
            vec![
                WorkflowRuns::WorkflowDefinitionId,
                WorkflowRuns::IdempotencyKey,
            ],
            true,
        ),
    ] {
        let mut stmt = Index::create()
            .name(name)
            .table(WorkflowRuns::Table)
            .to_owned();
        for c in cols {
            stmt.col(c);
        }
        if unique {
            stmt.unique();
        }
        m.create_index(stmt).await?;
    }
    Ok(())
}

/// `workflow_run_steps`, one row per step of a run, unique by run and step, and its index by
/// status.
async fn create_workflow_run_steps(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(WorkflowRunSteps::Table)
            .col(id36(WorkflowRunSteps::Id).primary_key())
            .col(id36(WorkflowRunSteps::WorkflowRunId))
            .col(
                ColumnDef::new(WorkflowRunSteps::StepId)
                    .string_len(100)
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRunSteps::Position)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRunSteps::Status)
                    .string_len(16)
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRunSteps::Attempt)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowRunSteps::JobRunId)
                    .string_len(36)
                    .null(),
            )
            .col(json_null(WorkflowRunSteps::Input))
            .col(json_null(WorkflowRunSteps::Output))
            .col(ColumnDef::new(WorkflowRunSteps::ErrorMessage).text().null())
            .col(json_null(WorkflowRunSteps::Metrics))
            .col(ts_null(WorkflowRunSteps::StartedAt))
            .col(ts_null(WorkflowRunSteps::CompletedAt))
            .col(ts(WorkflowRunSteps::CreatedAt))
            .col(ts(WorkflowRunSteps::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_workflow_run_steps_run_step")
            .table(WorkflowRunSteps::Table)
            .col(WorkflowRunSteps::WorkflowRunId)
            .col(WorkflowRunSteps::StepId)
            .unique()
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name("idx_workflow_run_steps_status")
            .table(WorkflowRunSteps::Table)
            .col(WorkflowRunSteps::Status)
            .to_owned(),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_workflow_runs(m).await?;
        create_workflow_runs_indexes(m).await?;
        create_workflow_run_steps(m).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WorkflowRunSteps::Table.into_iden(),
            WorkflowRuns::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
