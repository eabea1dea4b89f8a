//! The service registry: register, change and read the HTTP services workflow steps call.

use chrono::Utc;
use serde_json::{Map, Value};
use wire::Service;

use crate::application::{AppError, AppResult, refused_definition};
use domain::{
    Problems,
    auth::Principal,
    authority::{self, MASKED},
    services::parse_service_spec,
};

use super::workflows::{WorkflowService, merge_patch, not_found};

impl WorkflowService {
    pub async fn get_service(&self, slug: &str) -> AppResult<Service> {
        let slug = Self::slug(slug, "service")?;
        self.store
            .get_service(&slug)
            .await?
            .ok_or_else(|| not_found("service", &slug))
    }

    pub async fn list_services(&self) -> AppResult<Vec<Service>> {
        Ok(self.store.list_services().await?)
    }

    /// Registers a new service; an existing slug is a conflict (change it with a PATCH).
    /// Plain header values are stored sealed; headers and later `baseUrl` changes need
    /// `secrets:use` (they decide where credentials go).
    pub async fn create_service(&self, body: &Value, who: &Principal) -> AppResult<Service> {
        let spec = parse_service_spec(body).map_err(AppError::InvalidDefinition)?;
        let conflict = || {
            AppError::Conflict(format!(
                "service {:?} already exists; change it with PATCH /api/services/{}",
                spec.slug.as_str(),
                spec.slug.as_str()
            ))
        };
        let masked: Vec<&String> = spec
            .headers
            .iter()
            .filter(|(_, v)| v.as_str() == Some(MASKED))
            .map(|(k, _)| k)
            .collect();
        if !masked.is_empty() {
            let mut p = Problems::new();
            for name in masked {
                p.add(
                    format!("/headers/{}", domain::problems::pointer_segment(name)),
                    format!("{MASKED} is how stored values are shown; give the value itself"),
                );
            }
            return Err(AppError::InvalidDefinition(p));
        }
        authority::check_service_write(None, &spec.base_url, &spec.headers, who)
            .map_err(refused_definition)?;
        if self.store.get_service(spec.slug.as_str()).await?.is_some() {
            return Err(conflict());
        }
        let mut stored = spec.clone();
        stored.headers = self
            .credentials
            .seal_headers(spec.slug.as_str(), &spec.headers)?;
        let saved = match self.store.save_service(&stored, None, Utc::now()).await {
            Ok(saved) => saved,
            // A concurrent registration of the same slug won the unique index.
            Err(e) => {
                if self.store.get_service(spec.slug.as_str()).await?.is_some() {
                    return Err(conflict());
                }
                return Err(e.into());
            }
        };
        self.bus
            .publish(crate::events::Event::Service(saved.clone()))
            .await;
        Ok(saved)
    }

    /// Updates the given fields (e.g. `status`); the result is validated like a new entry. A
    /// header sent back as `***` (its masked form) keeps its stored value.
    pub async fn patch_service(
        &self,
        slug: &str,
        patch: &Value,
        who: &Principal,
    ) -> AppResult<Service> {
        let slug = Self::slug(slug, "service")?;
        let (current, stored) = self
            .store
            .get_service_with_headers(&slug)
            .await?
            .ok_or_else(|| not_found("service", &slug))?;
        let doc = merge_patch(
            serde_json::to_value(&current).unwrap_or(Value::Null),
            &current.slug,
            patch,
            &["id", "createdAt", "updatedAt", "lastCheckedAt", "lastError"],
        )?;
        let spec = parse_service_spec(&doc).map_err(AppError::InvalidDefinition)?;
        let old_headers = current.headers.as_object().cloned().unwrap_or_default();
        let stored = stored.as_object().cloned().unwrap_or_default();
        let mut p = Problems::new();
        for (name, value) in &spec.headers {
            if value.as_str() == Some(MASKED) && !stored.contains_key(name) {
                p.add(
                    format!("/headers/{}", domain::problems::pointer_segment(name)),
                    format!("{MASKED} keeps a stored value, and this service has no header {name}"),
                );
            }
        }
        if !p.is_empty() {
            return Err(AppError::InvalidDefinition(p));
        }
        authority::check_service_write(
            Some((&current.base_url, &old_headers)),
            &spec.base_url,
            &spec.headers,
            who,
        )
        .map_err(refused_definition)?;
        let mut next = spec.clone();
        let mut headers = Map::new();
        for (name, value) in &spec.headers {
            let kept = match value.as_str() {
                Some(MASKED) => stored.get(name).cloned(),
                _ => None,
            };
            let value = match kept {
                Some(sealed) => sealed,
                None => {
                    let one = Map::from_iter([(name.clone(), value.clone())]);
                    self.credentials
                        .seal_headers(spec.slug.as_str(), &one)?
                        .remove(name)
                        .unwrap_or(Value::Null)
                }
            };
            headers.insert(name.clone(), value);
        }
        next.headers = headers;
        let saved = self
            .store
            .save_service(&next, Some(&current), Utc::now())
            .await?;
        self.bus
            .publish(crate::events::Event::Service(saved.clone()))
            .await;
        Ok(saved)
    }
}
