//! Job definitions as starting a run reads them (a manual run, a workflow step), cached by
//! slug: starting runs is the hot path and a definition changes rarely. Every change made by
//! this process evicts its entry at once; changes made by any process reach every process as
//! `job.definition.updated` events, which evict too; a short TTL bounds staleness should such an
//! event arrive late.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use wire::JobDefinition;

use crate::events::Event;
use crate::{
    events::EventBus,
    store::{Store, StoreResult, StoredEvent},
};

/// How long a cached definition is used without asking the database again.
const TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct DefinitionCache {
    store: Store,
    entries: Arc<Mutex<HashMap<String, (Instant, JobDefinition)>>>,
}

/// The slug a `job.definition.updated` event names (None: unknown, forget every entry).
fn changed_slug(ev: &StoredEvent) -> Option<String> {
    match Event::decode(ev)? {
        Event::JobDefinition { job, .. } => Some(job.slug),
        _ => None,
    }
}

impl DefinitionCache {
    /// A cache over `store` that follows `bus` for changes (must run inside the runtime).
    pub fn new(store: Store, bus: &EventBus) -> Self {
        let entries: Arc<Mutex<HashMap<String, (Instant, JobDefinition)>>> = Default::default();
        let mut events = bus.subscribe();
        let evict = entries.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let slug = match events.recv().await {
                    Ok(ev) if ev.event_type == "job.definition.updated" => changed_slug(&ev),
                    Ok(_) => continue,
                    // Missed events: forget everything rather than guess.
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return,
                };
                if let Ok(mut cache) = evict.lock() {
                    match slug {
                        Some(slug) => cache.remove(&slug),
                        None => {
                            cache.clear();
                            None
                        }
                    };
                }
            }
        });
        DefinitionCache { store, entries }
    }

    /// The definition of `slug`: from the cache when fresh, else from the database.
    pub async fn get(&self, slug: &str) -> StoreResult<Option<JobDefinition>> {
        if let Ok(cache) = self.entries.lock()
            && let Some((at, job)) = cache.get(slug)
            && at.elapsed() < TTL
        {
            return Ok(Some(job.clone()));
        }
        let job = self.store.get_job(slug).await?;
        if let Some(job) = &job
            && let Ok(mut cache) = self.entries.lock()
        {
            cache.insert(job.slug.clone(), (Instant::now(), job.clone()));
        }
        Ok(job)
    }

    /// Forgets `slug` at once (a change made by this process).
    pub fn evict(&self, slug: &str) {
        if let Ok(mut cache) = self.entries.lock() {
            cache.remove(slug);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::changed_slug;
    use crate::{
        events::{Event, envelope},
        store::StoredEvent,
    };

    /// The event as the bus stores it names the changed job (an event it could not read would
    /// empty the whole cache).
    #[test]
    fn a_definition_event_names_its_job() {
        let job: wire::JobDefinition = serde_json::from_value(json!({
            "id": "j1", "slug": "nightly", "name": "Nightly", "version": 2, "type": "batch",
            "entryPoint": "builtin:noop", "parametersSchema": {}, "defaultParameters": {},
            "timeoutMs": 1000, "retryPolicy": {"maxAttempts": 1, "strategy": "none",
            "initialDelayMs": 1000, "maxDelayMs": 1000, "jitter": "none"}, "metadata": {},
            "createdAt": "2026-12-05T00:00:00Z", "updatedAt": "2026-12-05T00:00:00Z"
        }))
        .expect("a job definition");
        let event = Event::JobDefinition {
            job,
            deleted: false,
        };
        let ev = StoredEvent {
            id: 1,
            event_type: event.event_type(),
            payload: envelope(&event.event_type(), event.data()),
        };
        assert_eq!(changed_slug(&ev).as_deref(), Some("nightly"));
    }
}
