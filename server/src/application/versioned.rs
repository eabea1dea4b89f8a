//! The one use case for versioned definitions (jobs and workflows; later, providers' and the
//! CLI's definitions as code): validate a document, refuse a version lower than the stored
//! one, check who may write it, store it with a snapshot of the version, publish the change.
//! A PATCH is the stored definition with the patch's fields laid over it, validated like a
//! full document. What differs between kinds is a [`Versioned`] implementation.
use serde::Serialize;
use serde_json::{Map, Value};

use domain::{Problems, auth::Principal};

use super::{AppError, AppResult};
use crate::events::{Event, EventBus};

/// A kind of versioned definition.
#[async_trait::async_trait]
pub trait Versioned: Send + Sync {
    /// The validated document.
    type Spec: Send + Sync;
    /// The stored definition, as the API shows it.
    type Stored: Serialize + Clone + Send + Sync;
    /// `job`, `workflow`: in messages.
    const WHAT: &'static str;
    /// The event published after a change (or the deletion) of `stored`.
    fn event(stored: &Self::Stored, deleted: bool) -> Event;

    fn slug(stored: &Self::Stored) -> &str;
    fn version(stored: &Self::Stored) -> i32;
    fn spec_slug(spec: &Self::Spec) -> &str;
    fn spec_version(spec: &Self::Spec) -> i32;

    /// Every problem of `doc`.
    async fn parse(&self, doc: &Value) -> AppResult<Self::Spec>;
    async fn get(&self, slug: &str) -> AppResult<Option<Self::Stored>>;
    /// Whether `who` may write `spec` over `existing` (see `domain::authority`).
    async fn check_write(
        &self,
        doc: &Value,
        spec: &Self::Spec,
        existing: Option<&Self::Stored>,
        who: &Principal,
    ) -> AppResult<()>;
    async fn save(
        &self,
        spec: &Self::Spec,
        existing: Option<&Self::Stored>,
    ) -> AppResult<Self::Stored>;
    /// After a change: forget caches of it.
    fn changed(&self, _slug: &str) {}
}

/// Creates or replaces (same or higher version) a definition. Returns it and whether it was
/// created.
pub async fn apply<K: Versioned>(
    kind: &K,
    bus: &EventBus,
    doc: &Value,
    existing: Option<K::Stored>,
    who: &Principal,
) -> AppResult<(K::Stored, bool)> {
    let spec = kind.parse(doc).await?;
    let existing = match existing {
        Some(e) => Some(e),
        None => kind.get(K::spec_slug(&spec)).await?,
    };
    if let Some(e) = &existing
        && K::spec_version(&spec) < K::version(e)
    {
        return Err(AppError::Conflict(format!(
            "{} {:?} is at version {}; version {} is lower",
            K::WHAT,
            K::slug(e),
            K::version(e),
            K::spec_version(&spec)
        )));
    }
    kind.check_write(doc, &spec, existing.as_ref(), who).await?;
    let saved = kind.save(&spec, existing.as_ref()).await?;
    kind.changed(K::slug(&saved));
    bus.publish(K::event(&saved, false)).await;
    Ok((saved, existing.is_none()))
}

/// Applies a PATCH to the stored definition `current`: the result is validated like a full
/// document.
pub async fn patch<K: Versioned>(
    kind: &K,
    bus: &EventBus,
    current: K::Stored,
    patch: &Value,
    who: &Principal,
) -> AppResult<K::Stored> {
    let doc = merge_patch(
        serde_json::to_value(&current).unwrap_or(Value::Null),
        K::slug(&current),
        patch,
        &["id", "createdAt", "updatedAt"],
    )?;
    Ok(apply(kind, bus, &doc, Some(current), who).await?.0)
}

/// Publishes the deletion of `stored` and forgets caches of it.
pub async fn deleted<K: Versioned>(kind: &K, bus: &EventBus, stored: &K::Stored) {
    kind.changed(K::slug(stored));
    bus.publish(K::event(stored, true)).await;
}

fn invalid(path: &str, message: &str) -> AppError {
    let mut p = Problems::new();
    p.add(path, message);
    AppError::InvalidDefinition(p)
}

/// `current` (as returned by the API, without `read_only` fields) with the fields of `patch`
/// laid over it. The slug cannot change.
pub fn merge_patch(
    current: Value,
    slug: &str,
    patch: &Value,
    read_only: &[&str],
) -> AppResult<Value> {
    let Some(patch) = patch.as_object() else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    if let Some(s) = patch.get("slug")
        && s.as_str().map(str::to_ascii_lowercase).as_deref() != Some(slug)
    {
        return Err(invalid("/slug", "cannot be changed"));
    }
    let mut doc = match current {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    for key in read_only {
        doc.remove(*key);
    }
    for (k, v) in patch {
        doc.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(doc))
}
