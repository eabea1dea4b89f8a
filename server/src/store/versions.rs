//! What job and workflow definitions share in storage: the definition row written (inserted or
//! updated) and read back, and the snapshot of its version, in one transaction; re-posting a
//! version replaces that version's snapshot.
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    IntoActiveModel, PrimaryKeyTrait, QueryFilter,
};

use super::StoreResult;

/// Writes a definition row (`existed`: an update, else an insert) and reads it back by `id`.
pub(super) async fn write_definition<A, C>(
    txn: &C,
    model: A,
    existed: bool,
    id: &str,
) -> StoreResult<<A::Entity as EntityTrait>::Model>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    <<A::Entity as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType: From<String>,
    C: ConnectionTrait,
{
    if existed {
        A::Entity::update(model).exec(txn).await?;
    } else {
        A::Entity::insert(model).exec_without_returning(txn).await?;
    }
    A::Entity::find_by_id(id.to_string())
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(id.to_string()))
}

/// Stores `snapshot` as version `version` of `slug`, replacing that version's earlier one.
pub(super) async fn replace_snapshot<A, C>(
    txn: &C,
    (slug_column, version_column): (
        <A::Entity as EntityTrait>::Column,
        <A::Entity as EntityTrait>::Column,
    ),
    (slug, version): (&str, i32),
    snapshot: A,
) -> StoreResult<()>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    A::Entity::delete_many()
        .filter(slug_column.eq(slug))
        .filter(version_column.eq(version))
        .exec(txn)
        .await?;
    A::Entity::insert(snapshot)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}
