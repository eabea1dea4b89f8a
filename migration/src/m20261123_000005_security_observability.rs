//! Security and observability (the rollout playbook's ticket 005): the audit log, the
//! encrypted secret store with its versions, and the delivery record of failure alerts.
//!
//! - `audit_logs`: one row per write, manual run, cancel, retry, secret write and secret
//!   resolution, and per rejected request (`missing_token`, `invalid_token`, `forbidden`).
//!   Ids are UUIDv7, so id order is time order (keyset paging like the run lists).
//! - `secrets` (one row per key, with its current version) and `secret_versions` (every
//!   version's AES-256-GCM ciphertext and nonce; plaintext is never stored).
//! - `alert_deliveries`: one row per threshold crossing of a workflow's failures; `dedupe_key`
//!   is unique, so several servers on one database send one alert per crossing.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum AuditLogs {
    Table,
    Id,
    Subject,
    TokenHashPrefix,
    Action,
    Resource,
    Status,
    StatusCode,
    Ip,
    Details,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Secrets {
    Table,
    Key,
    CurrentVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum SecretVersions {
    Table,
    Id,
    SecretKey,
    Version,
    Ciphertext,
    Nonce,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AlertDeliveries {
    Table,
    Id,
    DedupeKey,
    WorkflowSlug,
    Failures,
    WindowMs,
    LastRunId,
    Payload,
    Status,
    Attempts,
    LastError,
    CreatedAt,
    DeliveredAt,
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

fn id36<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).string_len(36).not_null().to_owned()
}

fn text<T: IntoIden>(name: T, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).not_null().to_owned()
}

fn text_null<T: IntoIden>(name: T, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).null().to_owned()
}

async fn index<T: IntoIden + Copy + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: Vec<T>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create().name(name).table(table).to_owned();
    for c in cols {
        stmt.col(c);
    }
    if unique {
        stmt.unique();
    }
    m.create_index(stmt).await
}

/// `audit_logs` and its indexes: by time, and by action, subject or status in id order.
async fn create_audit_logs(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(AuditLogs::Table)
            .col(id36(AuditLogs::Id).primary_key())
            .col(text_null(AuditLogs::Subject, 255))
            .col(text_null(AuditLogs::TokenHashPrefix, 16))
            .col(text(AuditLogs::Action, 100))
            .col(text_null(AuditLogs::Resource, 500))
            .col(text(AuditLogs::Status, 32))
            .col(ColumnDef::new(AuditLogs::StatusCode).integer().null())
            .col(text_null(AuditLogs::Ip, 64))
            .col(ColumnDef::new(AuditLogs::Details).json_binary().not_null())
            .col(ts(AuditLogs::CreatedAt))
            .to_owned(),
    )
    .await?;
    index(
        m,
        "idx_audit_logs_created_at",
        AuditLogs::Table,
        vec![AuditLogs::CreatedAt],
        false,
    )
    .await?;
    index(
        m,
        "idx_audit_logs_action_id",
        AuditLogs::Table,
        vec![AuditLogs::Action, AuditLogs::Id],
        false,
    )
    .await?;
    index(
        m,
        "idx_audit_logs_subject_id",
        AuditLogs::Table,
        vec![AuditLogs::Subject, AuditLogs::Id],
        false,
    )
    .await?;
    index(
        m,
        "idx_audit_logs_status_id",
        AuditLogs::Table,
        vec![AuditLogs::Status, AuditLogs::Id],
        false,
    )
    .await?;
    Ok(())
}

/// `secrets` and `secret_versions`, unique by key and version.
async fn create_secrets(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(Secrets::Table)
            .col(text(Secrets::Key, 255).primary_key())
            .col(ColumnDef::new(Secrets::CurrentVersion).integer().not_null())
            .col(ts(Secrets::CreatedAt))
            .col(ts(Secrets::UpdatedAt))
            .to_owned(),
    )
    .await?;
    m.create_table(
        Table::create()
            .table(SecretVersions::Table)
            .col(id36(SecretVersions::Id).primary_key())
            .col(text(SecretVersions::SecretKey, 255))
            .col(ColumnDef::new(SecretVersions::Version).integer().not_null())
            .col(ColumnDef::new(SecretVersions::Ciphertext).text().not_null())
            .col(text(SecretVersions::Nonce, 64))
            .col(ts(SecretVersions::CreatedAt))
            .to_owned(),
    )
    .await?;
    index(
        m,
        "idx_secret_versions_key_version",
        SecretVersions::Table,
        vec![SecretVersions::SecretKey, SecretVersions::Version],
        true,
    )
    .await?;
    Ok(())
}

/// `alert_deliveries`, unique by dedupe key, and its index by workflow and time.
async fn create_alert_deliveries(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(AlertDeliveries::Table)
            .col(id36(AlertDeliveries::Id).primary_key())
            .col(text(AlertDeliveries::DedupeKey, 255))
            .col(text(AlertDeliveries::WorkflowSlug, 100))
            .col(
                ColumnDef::new(AlertDeliveries::Failures)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(AlertDeliveries::WindowMs)
                    .big_integer()
                    .not_null(),
            )
            .col(text_null(AlertDeliveries::LastRunId, 36))
            .col(
                ColumnDef::new(AlertDeliveries::Payload)
                    .json_binary()
                    .not_null(),
            )
            .col(text(AlertDeliveries::Status, 16))
            .col(
                ColumnDef::new(AlertDeliveries::Attempts)
                    .integer()
                    .not_null(),
            )
            .col(ColumnDef::new(AlertDeliveries::LastError).text().null())
            .col(ts(AlertDeliveries::CreatedAt))
            .col(ts_null(AlertDeliveries::DeliveredAt))
            .col(ts(AlertDeliveries::UpdatedAt))
            .to_owned(),
    )
    .await?;
    index(
        m,
        "idx_alert_deliveries_dedupe_key",
        AlertDeliveries::Table,
        vec![AlertDeliveries::DedupeKey],
        true,
    )
    .await?;
    index(
        m,
        "idx_alert_deliveries_slug_created",
        AlertDeliveries::Table,
        vec![AlertDeliveries::WorkflowSlug, AlertDeliveries::CreatedAt],
        false,
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        create_audit_logs(m).await?;
        create_secrets(m).await?;
        create_alert_deliveries(m).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AlertDeliveries::Table.into_iden(),
            SecretVersions::Table.into_iden(),
            Secrets::Table.into_iden(),
            AuditLogs::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
