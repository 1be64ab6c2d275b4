//! The embedded session store (`store = "memory"`): a bounded moka cache
//! whose entries expire after `idle_timeout` without access. Jars are
//! updated in place under a short lock, so concurrent requests merge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cookie_store::CookieStore;
use moka::future::Cache;
use url::Url;

use super::id::SessionId;
use super::store::{apply_set_cookies, SessionStore, StoreError};

/// Most sessions kept; the least recently used go first beyond it.
const MAX_SESSIONS: u64 = 1_000_000;

type Jars = Arc<Mutex<HashMap<String, CookieStore>>>;

/// Sessions in this process's memory.
pub struct MemoryStore {
    sessions: Cache<String, Jars>,
}

impl MemoryStore {
    /// A store whose sessions expire after `idle` without use.
    pub fn new(idle: Duration) -> MemoryStore {
        MemoryStore {
            sessions: Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(idle)
                .build(),
        }
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError("a session lock was poisoned".into())
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, id: &SessionId) -> Result<(), StoreError> {
        self.sessions
            .insert(id.as_str().to_string(), Jars::default())
            .await;
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions.get(id.as_str()).await.is_some())
    }

    async fn jar(&self, id: &SessionId, origin: &str) -> Result<CookieStore, StoreError> {
        let Some(jars) = self.sessions.get(id.as_str()).await else {
            return Ok(CookieStore::default());
        };
        let jars = jars.lock().map_err(poisoned)?;
        Ok(jars.get(origin).cloned().unwrap_or_default())
    }

    async fn store(
        &self,
        id: &SessionId,
        origin: &str,
        url: &Url,
        set_cookies: &[String],
    ) -> Result<(), StoreError> {
        let Some(jars) = self.sessions.get(id.as_str()).await else {
            // Expired meanwhile: nothing to write into.
            return Ok(());
        };
        let mut jars = jars.lock().map_err(poisoned)?;
        apply_set_cookies(
            jars.entry(origin.to_string()).or_default(),
            url,
            set_cookies,
        );
        Ok(())
    }
}
