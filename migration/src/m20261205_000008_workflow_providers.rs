//! Pluggable workflow engines (issue 17).
//!
//! * `workflow_runs.provider`: the engine that runs the run (`native` for every run before).
//! * `workflow_runs.execution_id`: the engine's handle of the execution (a Temporal workflow
//!   id); null for native runs, whose execution is the row itself.
//! * `workflow_definitions.timeout_ms`: how long a run may take (null: no limit).
//! * `job_runs.driver`: who schedules the run's attempts. Null: Switchyard's own queue, lease
//!   reaper and retries. A provider's name: the provider does (a Temporal activity executes
//!   each attempt and Temporal retries it), so the queue's sweeps leave the run alone.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowRuns {
    Table,
    Provider,
    ExecutionId,
}

#[derive(DeriveIden)]
enum WorkflowDefinitions {
    Table,
    TimeoutMs,
}

#[derive(DeriveIden)]
enum JobRuns {
    Table,
    Driver,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(WorkflowRuns::Table)
                .add_column(
                    ColumnDef::new(WorkflowRuns::Provider)
                        .string()
                        .not_null()
                        .default("native"),
                )
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowRuns::Table)
                .add_column(ColumnDef::new(WorkflowRuns::ExecutionId).string().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowDefinitions::Table)
                .add_column(
                    ColumnDef::new(WorkflowDefinitions::TimeoutMs)
                        .big_integer()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(JobRuns::Table)
                .add_column(ColumnDef::new(JobRuns::Driver).string().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(JobRuns::Table)
                .drop_column(JobRuns::Driver)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowDefinitions::Table)
                .drop_column(WorkflowDefinitions::TimeoutMs)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowRuns::Table)
                .drop_column(WorkflowRuns::ExecutionId)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowRuns::Table)
                .drop_column(WorkflowRuns::Provider)
                .to_owned(),
        )
        .await
    }
}
