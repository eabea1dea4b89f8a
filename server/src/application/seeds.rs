//! The default definitions, seeded once in the life of a database.

use chrono::Utc;
use serde_json::{Value, json};
use wire::JobDefinition;

use crate::entrypoints::{self, Registry};
use domain::auth::Principal;

use super::{AppError, AppResult, JobService};

impl JobService {
    /// Inserts each default definition once in the life of the database: a seeded job an
    /// operator deleted stays deleted (`seed_markers` remembers what was seeded). A database
    /// from before the markers gets them for the jobs it has; a `repository-build` still
    /// exactly as the old seed left it (taking its command from callers) is replaced by the
    /// current seed, which builds with the command its definition sets.
    pub async fn seed_defaults(&self) -> AppResult<()> {
        let seeder = Principal::internal("system:seed");
        for doc in default_definitions(&self.registry) {
            let slug = doc["slug"].as_str().unwrap_or_default().to_string();
            let marker = format!("job:{slug}");
            if self.store.is_seeded(&marker).await? {
                continue;
            }
            match self.store.get_job(&slug).await? {
                Some(job) if is_old_build_seed(&job) => {
                    let mut doc = doc.clone();
                    doc["version"] = json!(job.version + 1);
                    self.save_job(&doc, &seeder).await?;
                    tracing::info!(
                        slug,
                        "replaced the old seeded definition, which took its command from callers"
                    );
                }
                Some(_) => {}
                None => match self.save_job(&doc, &seeder).await {
                    Ok(_) => tracing::info!(slug, "seeded default job definition"),
                    // Another process seeding at the same moment won the unique slug.
                    Err(AppError::Unavailable(e)) => {
                        tracing::debug!(slug, error = %e, "seed skipped")
                    }
                    Err(e) => return Err(e),
                },
            }
            // Remembered after the job exists: a crash in between seeds it again next time.
            self.store.mark_seeded(&marker, Utc::now()).await?;
        }
        Ok(())
    }
}

/// The repository-build definition seeded before definition-only parameters existed: no
/// command of its own, so every caller chose one.
fn is_old_build_seed(job: &JobDefinition) -> bool {
    job.slug == "repository-build"
        && job.version == 1
        && job.entry_point == entrypoints::REPOSITORY_BUILD
        && job.default_parameters == json!({})
        && job.metadata.get("seeded") == Some(&json!(true))
        && job.parameters_schema.pointer("/required") == Some(&json!(["command"]))
}

/// The definitions seeded once in the life of a database: the default definitions of the
/// entry points (`EntryPoint::default_definition`), but the service-call job's, which is
/// seeded whenever it is missing (service steps need it).
fn default_definitions(registry: &Registry) -> Vec<Value> {
    registry
        .default_definitions()
        .into_iter()
        .filter(|(name, _)| *name != entrypoints::SERVICE_CALL)
        .map(|(_, definition)| definition)
        .collect()
}

/// The definition of the job service steps execute as (`builtin:service-call`'s default
/// definition), seeded at every start when missing.
pub fn service_call_definition() -> Value {
    entrypoints::catalog()
        .get(entrypoints::SERVICE_CALL)
        .and_then(|e| e.default_definition())
        .unwrap_or(Value::Null)
}
