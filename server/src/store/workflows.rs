//! Workflow definitions (with version history) and the service registry.
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::Value;
use wire::{Service, ServiceStatus, WorkflowDefinition, WorkflowDefinitionVersion};

use super::{
    CatalogFilter, Page, Store, StoreResult,
    entities::{job_definition, service, workflow_definition, workflow_definition_version},
    listing, new_id, stored_json, stored_value, versions,
};
use domain::{services::ServiceSpec, workflow::WorkflowSpec};

fn workflow_to_wire(m: workflow_definition::Model) -> WorkflowDefinition {
    WorkflowDefinition {
        id: m.id,
        slug: m.slug,
        name: m.name,
        version: m.version,
        description: m.description,
        parameters_schema: m.parameters_schema,
        default_parameters: m.default_parameters,
        metadata: m.metadata,
        steps: m.steps,
        triggers: m.triggers,
        provider: m.provider,
        timeout_ms: m.timeout_ms,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// Header values as responses, events and pages show them: a secret reference as written,
/// anything else (a sealed value) as `***`. Values never leave the store through `Service`.
fn masked_headers(stored: &Value) -> Value {
    match stored {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, value)| {
                    let shown = if value.get("secret").is_some_and(Value::is_object) {
                        value.clone()
                    } else {
                        Value::String(domain::authority::MASKED.to_string())
                    };
                    (name.clone(), shown)
                })
                .collect(),
        ),
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// The service with its header values masked, and the headers as stored.
fn service_with_headers(m: service::Model) -> StoreResult<(Service, Value)> {
    let stored = m.headers.clone();
    Ok((service_to_wire(m)?, stored))
}

fn service_to_wire(m: service::Model) -> StoreResult<Service> {
    let status = stored_value(
        ("services", &m.id, "status"),
        &m.status,
        ServiceStatus::parse,
        ServiceStatus::expected,
    )?;
    Ok(Service {
        id: m.id,
        slug: m.slug,
        display_name: m.display_name,
        kind: m.kind,
        base_url: m.base_url,
        health_path: m.health_path,
        headers: masked_headers(&m.headers),
        metadata: m.metadata,
        status,
        last_checked_at: m.last_checked_at,
        last_error: m.last_error,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// A stored workflow version; an error naming the row when its snapshot cannot be read.
fn workflow_version_to_wire(
    m: workflow_definition_version::Model,
) -> StoreResult<WorkflowDefinitionVersion> {
    Ok(WorkflowDefinitionVersion {
        definition: stored_json(
            ("workflow_definition_versions", &m.id, "definition"),
            m.definition,
        )?,
        version: m.version,
        created_at: m.created_at,
    })
}

impl Store {
    // ---- workflow definitions ----

    pub async fn get_workflow(&self, slug: &str) -> StoreResult<Option<WorkflowDefinition>> {
        Ok(workflow_definition::Entity::find()
            .filter(workflow_definition::Column::Slug.eq(slug))
            .one(self.conn())
            .await?
            .map(workflow_to_wire))
    }

    /// A page of workflow definitions, newest first; `q` searches the slug and the name.
    pub async fn page_workflows(&self, f: &CatalogFilter) -> StoreResult<Page<WorkflowDefinition>> {
        use workflow_definition::Column as C;
        let mut cond = Condition::all();
        if let Some(q) = listing::search_text(f.q.as_deref()) {
            cond = cond.add(listing::matches_any(q, &[C::Slug, C::Name]));
        }
        Ok(listing::page_of::<workflow_definition::Entity, _>(
            self.conn(),
            cond,
            C::Id,
            &f.page,
            |r| r.id.clone(),
        )
        .await?
        .map(workflow_to_wire))
    }

    pub async fn list_workflows(&self) -> StoreResult<Vec<WorkflowDefinition>> {
        Ok(workflow_definition::Entity::find()
            .order_by_asc(workflow_definition::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(workflow_to_wire)
            .collect())
    }

    /// Creates or replaces a definition and records the version (re-saving a version replaces
    /// that version's snapshot). The caller has checked the version rule.
    pub async fn save_workflow(
        &self,
        spec: &WorkflowSpec,
        existing: Option<&WorkflowDefinition>,
        now: DateTime<Utc>,
    ) -> StoreResult<WorkflowDefinition> {
        let id = existing.map(|e| e.id.clone()).unwrap_or_else(new_id);
        let created_at = existing.map(|e| e.created_at).unwrap_or(now);
        let to_json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| DbErr::Custom(format!("serializing a workflow definition: {e}")))
        };
        let provider = spec.provider.as_str().to_string();
        let model = workflow_definition::ActiveModel {
            id: Set(id.clone()),
            slug: Set(spec.slug.as_str().to_string()),
            name: Set(spec.name.clone()),
            version: Set(spec.version),
            description: Set(spec.description.clone()),
            parameters_schema: Set(spec.parameters_schema.clone()),
            default_parameters: Set(spec.default_parameters.clone()),
            metadata: Set(spec.metadata.clone()),
            steps: Set(to_json(serde_json::to_value(&spec.steps))?),
            triggers: Set(to_json(serde_json::to_value(&spec.triggers))?),
            provider: Set(provider),
            timeout_ms: Set(spec.timeout_ms),
            created_at: Set(created_at),
            updated_at: Set(now),
        };
        let txn = self.conn().begin().await?;
        let row = versions::write_definition(&txn, model, existing.is_some(), &id).await?;
        let stored = workflow_to_wire(row);
        let snapshot = to_json(serde_json::to_value(&stored))?;
        let version = workflow_definition_version::ActiveModel {
            id: Set(new_id()),
            workflow_definition_id: Set(id),
            slug: Set(spec.slug.as_str().to_string()),
            version: Set(spec.version),
            definition: Set(snapshot),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use workflow_definition_version::Column as V;
        let key = (spec.slug.as_str(), spec.version);
        versions::replace_snapshot(&txn, (V::Slug, V::Version), key, version).await?;
        txn.commit().await?;
        Ok(stored)
    }

    /// Every stored version, newest first.
    /// A page of a workflow's stored versions, newest first (the cursor is a version number).
    pub async fn page_workflow_versions(
        &self,
        slug: &str,
        page: &super::PageRequest,
    ) -> StoreResult<Page<WorkflowDefinitionVersion>> {
        use workflow_definition_version::{Column as C, Entity};
        listing::page_versions::<Entity, _, _>(
            self.conn(),
            (C::Slug, C::Version),
            slug,
            page,
            |m| m.version,
            workflow_version_to_wire,
        )
        .await
    }

    pub async fn workflow_versions(
        &self,
        slug: &str,
    ) -> StoreResult<Vec<WorkflowDefinitionVersion>> {
        workflow_definition_version::Entity::find()
            .filter(workflow_definition_version::Column::Slug.eq(slug))
            .order_by_desc(workflow_definition_version::Column::Version)
            .all(self.conn())
            .await?
            .into_iter()
            .map(workflow_version_to_wire)
            .collect()
    }

    /// Deletes a definition and its version history.
    pub async fn delete_workflow(&self, id: &str, slug: &str) -> StoreResult<()> {
        let txn = self.conn().begin().await?;
        workflow_definition_version::Entity::delete_many()
            .filter(workflow_definition_version::Column::Slug.eq(slug))
            .exec(&txn)
            .await?;
        workflow_definition::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    /// The slugs of every job definition (what workflow steps may name).
    pub async fn job_slugs(&self) -> StoreResult<HashSet<String>> {
        Ok(job_definition::Entity::find()
            .select_only()
            .column(job_definition::Column::Slug)
            .into_tuple::<String>()
            .all(self.conn())
            .await?
            .into_iter()
            .collect())
    }

    /// The slugs of every registered service.
    pub async fn service_slugs(&self) -> StoreResult<HashSet<String>> {
        Ok(service::Entity::find()
            .select_only()
            .column(service::Column::Slug)
            .into_tuple::<String>()
            .all(self.conn())
            .await?
            .into_iter()
            .collect())
    }

    // ---- services ----

    pub async fn get_service(&self, slug: &str) -> StoreResult<Option<Service>> {
        service::Entity::find()
            .filter(service::Column::Slug.eq(slug))
            .one(self.conn())
            .await?
            .map(service_to_wire)
            .transpose()
    }

    /// A page of services, newest first; `q` searches the slug and the display name,
    /// `statuses` narrows to those health statuses.
    pub async fn page_services(&self, f: &CatalogFilter) -> StoreResult<Page<Service>> {
        use service::Column as C;
        let mut cond = Condition::all();
        if let Some(q) = listing::search_text(f.q.as_deref()) {
            cond = cond.add(listing::matches_any(q, &[C::Slug, C::DisplayName]));
        }
        if !f.statuses.is_empty() {
            cond = cond.add(C::Status.is_in(f.statuses.clone()));
        }
        listing::try_map(
            listing::page_of::<service::Entity, _>(self.conn(), cond, C::Id, &f.page, |r| {
                r.id.clone()
            })
            .await?,
            service_to_wire,
        )
    }

    pub async fn list_services(&self) -> StoreResult<Vec<Service>> {
        service::Entity::find()
            .order_by_asc(service::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(service_to_wire)
            .collect()
    }

    /// The service (headers masked) and its headers as stored (sealed values, references).
    pub async fn get_service_with_headers(
        &self,
        slug: &str,
    ) -> StoreResult<Option<(Service, Value)>> {
        service::Entity::find()
            .filter(service::Column::Slug.eq(slug))
            .one(self.conn())
            .await?
            .map(service_with_headers)
            .transpose()
    }

    /// Every service (headers masked) with its headers as stored, by slug.
    pub async fn list_services_with_headers(&self) -> StoreResult<Vec<(Service, Value)>> {
        service::Entity::find()
            .order_by_asc(service::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(service_with_headers)
            .collect()
    }

    /// Replaces a service's stored headers (sealing values stored in plain text by older
    /// versions).
    pub async fn set_service_headers(&self, id: &str, headers: Value) -> StoreResult<()> {
        service::Entity::update_many()
            .col_expr(service::Column::Headers, Expr::value(headers))
            .filter(service::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Inserts a new service, or replaces the registration of `existing` (keeping its id,
    /// creation time and last health check). `spec.headers` are stored as given: sealed
    /// values and references (the use case seals plain values first).
    pub async fn save_service(
        &self,
        spec: &ServiceSpec,
        existing: Option<&Service>,
        now: DateTime<Utc>,
    ) -> StoreResult<Service> {
        let model = service::Model {
            id: existing.map(|e| e.id.clone()).unwrap_or_else(new_id),
            slug: spec.slug.as_str().to_string(),
            display_name: spec.display_name.clone(),
            kind: spec.kind.clone(),
            base_url: spec.base_url.clone(),
            health_path: spec.health_path.clone(),
            headers: Value::Object(spec.headers.clone()),
            metadata: spec.metadata.clone(),
            status: spec.status.as_str().to_string(),
            last_checked_at: existing.and_then(|e| e.last_checked_at),
            last_error: existing.and_then(|e| e.last_error.clone()),
            created_at: existing.map(|e| e.created_at).unwrap_or(now),
            updated_at: now,
        };
        // Every column is written (`Model -> ActiveModel` alone marks them unchanged).
        let active = service::ActiveModel::from(model.clone()).reset_all();
        if existing.is_some() {
            service::Entity::update(active).exec(self.conn()).await?;
        } else {
            service::Entity::insert(active)
                .exec_without_returning(self.conn())
                .await?;
        }
        // Read back: the database's timestamp precision is what later reads see.
        service::Entity::find_by_id(model.id.clone())
            .one(self.conn())
            .await?
            .map(service_to_wire)
            .transpose()?
            .ok_or(DbErr::RecordNotFound(model.id))
    }

    /// Records a health check: status, when, and what failed (`None` clears the error).
    /// Returns the service as stored afterwards (`None`: deleted meanwhile).
    pub async fn record_service_health(
        &self,
        id: &str,
        status: wire::ServiceStatus,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Service>> {
        service::Entity::update_many()
            .col_expr(service::Column::Status, Expr::value(status.as_str()))
            .col_expr(service::Column::LastCheckedAt, Expr::value(Some(now)))
            .col_expr(service::Column::LastError, Expr::value(error))
            .filter(service::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        service::Entity::find_by_id(id.to_string())
            .one(self.conn())
            .await?
            .map(service_to_wire)
            .transpose()
    }
}
