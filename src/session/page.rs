//! One page request's view of the user's session: the origin jars it has
//! loaded, the cookie changes it records (to the store first, then to its
//! own view), and the bootstrap gates that make a first visit create one
//! origin session rather than one per fragment (docs/configuration.md, sessions).

use std::collections::HashMap;
use std::sync::Arc;

use cookie_store::CookieStore;
use tokio::sync::watch;
use url::Url;

use super::id::SessionId;
use super::store::{apply_set_cookies, SessionStore, StoreError};

/// The session of one page request.
pub struct PageSession {
    /// The user's session id.
    pub id: SessionId,
    /// Whether it was created for this request (the browser gets its cookie).
    pub created: bool,
    store: Arc<dyn SessionStore>,
    jars: tokio::sync::Mutex<HashMap<String, CookieStore>>,
    gates: std::sync::Mutex<HashMap<String, watch::Receiver<bool>>>,
}

/// Whose turn it is to go to an origin whose jar is empty.
pub enum Turn {
    /// This request goes first; the others wait until the guard is dropped.
    Leader(GateGuard),
    /// Another request went first: wait for it.
    Follower(watch::Receiver<bool>),
}

/// Opens a bootstrap gate when dropped (after the leader's response headers
/// were recorded, or when it failed).
pub struct GateGuard(watch::Sender<bool>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl PageSession {
    /// A page's view of session `id`.
    pub fn new(id: SessionId, created: bool, store: Arc<dyn SessionStore>) -> PageSession {
        PageSession {
            id,
            created,
            store,
            jars: Default::default(),
            gates: Default::default(),
        }
    }

    /// The `Cookie` header for a request to `url` of `origin`, from its jar.
    pub async fn cookie_header(
        &self,
        origin: &str,
        url: &Url,
    ) -> Result<Option<String>, StoreError> {
        let mut jars = self.jars.lock().await;
        let jar = match jars.get(origin) {
            Some(j) => j,
            None => {
                let loaded = self.store.jar(&self.id, origin).await?;
                jars.entry(origin.to_string()).or_insert(loaded)
            }
        };
        Ok(super::store::cookie_header_value(jar, url))
    }

    /// Whether `origin`'s jar holds no live cookie (loads it if needed).
    pub async fn jar_is_empty(&self, origin: &str) -> Result<bool, StoreError> {
        let mut jars = self.jars.lock().await;
        if !jars.contains_key(origin) {
            let loaded = self.store.jar(&self.id, origin).await?;
            jars.insert(origin.to_string(), loaded);
        }
        Ok(jars
            .get(origin)
            .is_none_or(|j| j.iter_unexpired().next().is_none()))
    }

    /// Takes the bootstrap turn for `origin`: the first caller leads.
    pub fn bootstrap_turn(&self, origin: &str) -> Turn {
        let mut gates = match self.gates.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(rx) = gates.get(origin) {
            return Turn::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(false);
        gates.insert(origin.to_string(), rx);
        Turn::Leader(GateGuard(tx))
    }

    /// Records the `Set-Cookie`s `origin` sent from `url`: in the store
    /// first; only what the store took goes into this page's view.
    pub async fn record(
        &self,
        origin: &str,
        url: &Url,
        set_cookies: &[String],
    ) -> Result<(), StoreError> {
        if set_cookies.is_empty() {
            return Ok(());
        }
        self.store.store(&self.id, origin, url, set_cookies).await?;
        let mut jars = self.jars.lock().await;
        apply_set_cookies(
            jars.entry(origin.to_string()).or_default(),
            url,
            set_cookies,
        );
        Ok(())
    }
}
