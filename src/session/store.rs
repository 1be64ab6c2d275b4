//! Where sessions live: the [`SessionStore`] trait and its errors. A store
//! keeps, per session, one cookie jar per origin, and applies each
//! `Set-Cookie` on its own, so that concurrent requests of one user (on one
//! instance or several) never lose each other's updates.

use async_trait::async_trait;
use cookie_store::CookieStore;
use url::Url;

use super::id::SessionId;

/// The store could not be reached or answered garbage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// Sessions and their per-origin cookie jars.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records a new, empty session.
    async fn create(&self, id: &SessionId) -> Result<(), StoreError>;
    /// Whether `id` is a live session; a live one's idle timer restarts.
    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// `origin`'s jar in session `id` (empty when there is none).
    async fn jar(&self, id: &SessionId, origin: &str) -> Result<CookieStore, StoreError>;
    /// Applies `Set-Cookie` values that `origin` sent from `url` (RFC 6265:
    /// insert, overwrite, delete by expiry).
    async fn store(
        &self,
        id: &SessionId,
        origin: &str,
        url: &Url,
        set_cookies: &[String],
    ) -> Result<(), StoreError>;
}

/// Applies `Set-Cookie` values to a jar; unparseable or foreign-domain
/// cookies are ignored, as a browser would.
pub fn apply_set_cookies(jar: &mut CookieStore, url: &Url, set_cookies: &[String]) {
    for sc in set_cookies {
        // cookie_store takes control characters in names and values; such
        // a cookie could never go out in a header again. (HTTP parsing
        // refuses them on the wire; this holds for any caller.)
        if sc.chars().any(|c| c.is_control() && c != '\t') {
            tracing::debug!(%url, "origin cookie with a control character ignored");
            continue;
        }
        if let Err(e) = jar.parse(sc, url) {
            if !matches!(e, cookie_store::CookieError::Expired) {
                tracing::debug!(%url, error = %e, "origin cookie ignored");
            }
        }
    }
}
