//! Workflow definitions (with version history) and the service registry. JSON columns and
//! timestamps as in the jobs migration, so the same code runs on SQLite and PostgreSQL.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowDefinitions {
    Table,
    Id,
    Slug,
    Name,
    Version,
    Description,
    ParametersSchema,
    DefaultParameters,
    Metadata,
    Steps,
    Triggers,
    Provider,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowDefinitionVersions {
    Table,
    Id,
    WorkflowDefinitionId,
    Slug,
    Version,
    Definition,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Services {
    Table,
    Id,
    Slug,
    DisplayName,
    Kind,
    BaseUrl,
    HealthPath,
    Headers,
    Metadata,
    Status,
    LastCheckedAt,
    LastError,
    CreatedAt,
    UpdatedAt,
}

fn id_col<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .string_len(36)
        .not_null()
        .primary_key()
        .to_owned()
}

fn slug_col<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).string_len(100).not_null().to_owned()
}

fn ts<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn json<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).json_binary().not_null().to_owned()
}

const WORKFLOWS_CREATED_AT: &str = "idx_workflow_definitions_created_at";
const WORKFLOW_VERSIONS_SLUG_VERSION: &str = "idx_workflow_definition_versions_slug_version";
const SERVICES_CREATED_AT: &str = "idx_services_created_at";

/// `workflow_definitions`, the current version of each workflow, and its index by creation
/// time.
async fn create_workflow_definitions(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    // `slug` is unique: the unique constraint is the index by slug.
    m.create_table(
        Table::create()
            .table(WorkflowDefinitions::Table)
            .col(id_col(WorkflowDefinitions::Id))
            .col(slug_col(WorkflowDefinitions::Slug).unique_key())
            .col(
                ColumnDef::new(WorkflowDefinitions::Name)
                    .string()
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowDefinitions::Version)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(WorkflowDefinitions::Description)
                    .text()
                    .null(),
            )
            .col(json(WorkflowDefinitions::ParametersSchema))
            .col(json(WorkflowDefinitions::DefaultParameters))
            .col(json(WorkflowDefinitions::Metadata))
            .col(json(WorkflowDefinitions::Steps))
            .col(json(WorkflowDefinitions::Triggers))
            .col(
                ColumnDef::new(WorkflowDefinitions::Provider)
                    .string_len(32)
                    .not_null(),
            )
            .col(ts(WorkflowDefinitions::CreatedAt))
            .col(ts(WorkflowDefinitions::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name(WORKFLOWS_CREATED_AT)
            .table(WorkflowDefinitions::Table)
            .col(WorkflowDefinitions::CreatedAt)
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `workflow_definition_versions`, every version of each workflow, unique by slug and version.
async fn create_workflow_definition_versions(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(WorkflowDefinitionVersions::Table)
            .col(id_col(WorkflowDefinitionVersions::Id))
            .col(
                ColumnDef::new(WorkflowDefinitionVersions::WorkflowDefinitionId)
                    .string_len(36)
                    .not_null(),
            )
            .col(slug_col(WorkflowDefinitionVersions::Slug))
            .col(
                ColumnDef::new(WorkflowDefinitionVersions::Version)
                    .integer()
                    .not_null(),
            )
            .col(json(WorkflowDefinitionVersions::Definition))
            .col(ts(WorkflowDefinitionVersions::CreatedAt))
            .col(ts(WorkflowDefinitionVersions::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name(WORKFLOW_VERSIONS_SLUG_VERSION)
            .table(WorkflowDefinitionVersions::Table)
            .col(WorkflowDefinitionVersions::Slug)
            .col(WorkflowDefinitionVersions::Version)
            .unique()
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// `services`, the service registry, and its index by creation time.
async fn create_services(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(Services::Table)
            .col(id_col(Services::Id))
            .col(slug_col(Services::Slug).unique_key())
            .col(ColumnDef::new(Services::DisplayName).string().not_null())
            .col(ColumnDef::new(Services::Kind).string_len(100).not_null())
            .col(ColumnDef::new(Services::BaseUrl).text().not_null())
            .col(ColumnDef::new(Services::HealthPath).text().null())
            .col(json(Services::Headers))
            .col(json(Services::Metadata))
            .col(ColumnDef::new(Services::Status).string_len(16).not_null())
            .col(
                ColumnDef::new(Services::LastCheckedAt)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(ColumnDef::new(Services::LastError).text().null())
            .col(ts(Services::CreatedAt))
            .col(ts(Services::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_index(
        Index::create()
            .name(SERVICES_CREATED_AT)
            .table(Services::Table)
            .col(Services::CreatedAt)
            .to_owned(),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_workflow_definitions(m).await?;
        create_workflow_definition_versions(m).await?;
        create_services(m).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Dropping a table drops its indexes.
        for table in [
            Services::Table.into_iden(),
            WorkflowDefinitionVersions::Table.into_iden(),
            WorkflowDefinitions::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
