//! Sign-in sessions and the memory of seeded definitions (issue 14).
//!
//! - `sessions`: one row per signed-in browser. The cookie holds a random session secret; the
//!   row's `id` is its SHA-256 (hex), so a copy of the table gives no usable session. The row
//!   names the operator token it was opened with by that token's SHA-256 (`token_hash`): a
//!   token removed from the configuration ends its sessions. Sign-out deletes the row; rows
//!   past `expires_at` are refused and pruned.
//! - `seed_markers`: one row per default definition ever seeded (`job:repository-build`, ...),
//!   so a seeded definition an operator deleted stays deleted at the next start.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Sessions {
    Table,
    Id,
    Subject,
    TokenHash,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum SeedMarkers {
    Table,
    Name,
    SeededAt,
}

fn ts<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn text<T: IntoIden>(name: T, len: u32) -> ColumnDef {
    ColumnDef::new(name).string_len(len).not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .col(text(Sessions::Id, 64).primary_key())
                .col(text(Sessions::Subject, 255))
                .col(text(Sessions::TokenHash, 64))
                .col(ts(Sessions::CreatedAt))
                .col(ts(Sessions::ExpiresAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_sessions_expires_at")
                .table(Sessions::Table)
                .col(Sessions::ExpiresAt)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(SeedMarkers::Table)
                .col(text(SeedMarkers::Name, 255).primary_key())
                .col(ts(SeedMarkers::SeededAt))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [SeedMarkers::Table.into_iden(), Sessions::Table.into_iden()] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
