//! The use cases behind `/api/secrets`, the sealing of service credentials, and the resolver
//! the engine uses at execution time (every resolution audit-logged, never the value).
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};
use wire::SecretMetadata;

use crate::application::{AppError, AppResult};
use crate::entrypoints::{
    JobError, ResolvedSecret, SecretRequest, SecretResolver, ServiceDirectory, env_secret,
};
use crate::store::{AuditRecord, PutSecretError, SecretPage, Store};
use domain::{
    secrets::{check_key, parse_put},
    workflow::SecretSource,
};

use crate::secrets::{RevealError, SecretCipher};

/// The use cases behind `/api/secrets` and the store side of resolution.
#[derive(Clone)]
pub struct SecretService {
    store: Store,
    cipher: Arc<SecretCipher>,
}

impl SecretService {
    pub fn new(store: Store, cipher: Arc<SecretCipher>) -> SecretService {
        SecretService { store, cipher }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `PUT /api/secrets/:key`: stores a new version; true when the key is new.
    pub async fn put(&self, key: &str, body: &Value) -> AppResult<(SecretMetadata, bool)> {
        let put = parse_put(key, body).map_err(AppError::InvalidRequest)?;
        let cipher = self.cipher.clone();
        let value = put.value;
        self.store
            .put_secret(
                key,
                put.version,
                move |version| cipher.seal(key, version, &value),
                Utc::now(),
            )
            .await
            .map_err(|e| match e {
                PutSecretError::Conflict(m) => AppError::Conflict(m),
                PutSecretError::Seal => AppError::unavailable("encrypting the secret failed"),
                PutSecretError::Database(e) => AppError::from(e),
            })
    }

    /// `GET /api/secrets`: metadata only.
    pub async fn list(&self, q: Option<&str>, limit: u64, offset: u64) -> AppResult<SecretPage> {
        Ok(self.store.list_secrets(q, limit, offset).await?)
    }

    /// `GET /api/secrets/:key`: metadata only.
    pub async fn get(&self, key: &str) -> AppResult<SecretMetadata> {
        let not_found = || AppError::NotFound(format!("secret {key:?} not found"));
        if check_key(key).is_err() {
            return Err(not_found());
        }
        self.store.get_secret(key).await?.ok_or_else(not_found)
    }

    /// `DELETE /api/secrets/:key`: the key and every version.
    pub async fn delete(&self, key: &str) -> AppResult<()> {
        let not_found = || AppError::NotFound(format!("secret {key:?} not found"));
        if check_key(key).is_err() || !self.store.delete_secret(key).await? {
            return Err(not_found());
        }
        Ok(())
    }

    /// The plaintext of `version` (or the current version) and its version number.
    pub async fn reveal(
        &self,
        key: &str,
        version: Option<i32>,
    ) -> Result<(i32, String), RevealError> {
        let sealed = self
            .store
            .sealed_secret(key, version)
            .await
            .map_err(|source| RevealError::Database {
                key: key.to_string(),
                source,
            })?;
        let Some(sealed) = sealed else {
            let key_exists = match version {
                Some(_) => self.store.get_secret(key).await.ok().flatten().is_some(),
                None => false,
            };
            return Err(match version {
                Some(version) if key_exists => RevealError::NoSuchVersion {
                    key: key.to_string(),
                    version,
                },
                _ => RevealError::NoSuchKey(key.to_string()),
            });
        };
        let plain = self
            .cipher
            .open(key, sealed.version, &sealed.ciphertext, &sealed.nonce)?;
        Ok((sealed.version, plain))
    }
}

/// Registered services' credentials: seals plain header values for storage and opens them
/// where they are used (service steps, health checks). Responses and events only ever see
/// them masked (`store` masks every `Service` it returns).
#[derive(Clone)]
pub struct ServiceCredentials {
    store: Store,
    cipher: Arc<SecretCipher>,
}

impl ServiceCredentials {
    pub fn new(store: Store, cipher: Arc<SecretCipher>) -> ServiceCredentials {
        ServiceCredentials { store, cipher }
    }

    /// Headers as stored: plain strings sealed, references kept.
    pub fn seal_headers(
        &self,
        service: &str,
        headers: &Map<String, Value>,
    ) -> AppResult<Map<String, Value>> {
        headers
            .iter()
            .map(|(name, value)| {
                let stored = match value {
                    Value::String(plain) => self
                        .cipher
                        .seal_header(service, name, plain)
                        .ok_or_else(|| {
                            AppError::unavailable("encrypting a service header failed")
                        })?,
                    other => other.clone(),
                };
                Ok((name.clone(), stored))
            })
            .collect()
    }

    /// Headers as used: plain values decrypted (strings), references kept (objects).
    pub fn open_headers(
        &self,
        service: &str,
        stored: &Value,
    ) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        if let Some(map) = stored.as_object() {
            for (name, value) in map {
                let opened = match self.cipher.open_header(service, name, value)? {
                    Some(plain) => Value::String(plain),
                    None => value.clone(),
                };
                out.insert(name.clone(), opened);
            }
        }
        Ok(out)
    }

    /// Seals header values that an older version stored in plain text (once, at start).
    pub async fn seal_plain_headers(&self) -> AppResult<()> {
        for (service, stored) in self.store.list_services_with_headers().await? {
            let Some(map) = stored.as_object() else {
                continue;
            };
            if !map.values().any(Value::is_string) {
                continue;
            }
            let sealed = self.seal_headers(&service.slug, map)?;
            self.store
                .set_service_headers(&service.id, Value::Object(sealed))
                .await?;
            tracing::info!(service = %service.slug, "sealed header values stored in plain text");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ServiceDirectory for ServiceCredentials {
    async fn service(&self, slug: &str) -> Result<Option<wire::Service>, String> {
        let Some((mut service, stored)) = self
            .store
            .get_service_with_headers(slug)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        service.headers = Value::Object(self.open_headers(&service.slug, &stored)?);
        Ok(Some(service))
    }
}

/// The engine's resolver: `env` from this process's environment, `store` from the secret
/// store; each resolution (and each failed one) gets an audit entry `secret.resolve` on
/// `secrets/<key>` with source, version, run id and job slug, never the value.
pub struct EngineSecrets {
    secrets: SecretService,
    /// The environment variables `env` references may read.
    env_allow: domain::secrets::EnvAllowList,
}

impl EngineSecrets {
    pub fn new(secrets: SecretService, env_allow: domain::secrets::EnvAllowList) -> EngineSecrets {
        EngineSecrets { secrets, env_allow }
    }
}

#[async_trait::async_trait]
impl SecretResolver for EngineSecrets {
    async fn resolve(&self, request: SecretRequest<'_>) -> Result<ResolvedSecret, JobError> {
        let source = match request.source {
            SecretSource::Env => "env",
            SecretSource::Store => "store",
        };
        let result = match request.source {
            SecretSource::Env => {
                env_secret(request.key, &self.env_allow).map(|value| ResolvedSecret {
                    value,
                    version: None,
                })
            }
            SecretSource::Store => match self.secrets.reveal(request.key, request.version).await {
                Ok((version, value)) => Ok(ResolvedSecret {
                    value,
                    version: Some(version),
                }),
                Err(e @ RevealError::Database { .. }) => Err(JobError::Retryable(e.to_string())),
                Err(e) => Err(JobError::Fatal(e.to_string())),
            },
        };
        let mut details = json!({
            "source": source,
            "version": match &result {
                Ok(r) => r.version,
                Err(_) => request.version,
            },
            "runId": request.run_id,
            "jobSlug": request.job_slug,
        });
        if let Err(e) = &result {
            details["error"] = Value::String(e.to_string());
        }
        let record = AuditRecord {
            subject: Some("engine".to_string()),
            action: "secret.resolve".to_string(),
            resource: Some(format!("secrets/{}", request.key)),
            status: if result.is_ok() { "ok" } else { "error" }.to_string(),
            details,
            ..AuditRecord::default()
        };
        if let Err(e) = self.secrets.store().insert_audit_log(record).await
            && result.is_ok()
        {
            // No unaudited use of a secret: the attempt fails and may be retried.
            return Err(JobError::Retryable(format!(
                "could not record the audit entry of the secret's use: {e}"
            )));
        }
        result
    }
}
