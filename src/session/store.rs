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
        if let Some(why) = refused(sc, url) {
            tracing::debug!(%url, why, "origin cookie ignored");
            continue;
        }
        if let Err(e) = jar.parse(sc, url) {
            if !matches!(e, cookie_store::CookieError::Expired) {
                tracing::debug!(%url, error = %e, "origin cookie ignored");
            }
        }
    }
}

/// Why a `Set-Cookie` from `url` is ignored before the cookie parser sees
/// it (every store applies this), or `None`:
/// - a control character: such a cookie could never go out in a header
///   again (cookie_store takes them; HTTP parsing refuses them on the wire,
///   this holds for any caller);
/// - a `Domain` (the last one counts) with whitespace inside, or of one
///   label other than the host itself (`Domain=.org`): RFC 6265 §5.3 step 5
///   with the public suffixes reduced to top-level domains.
pub fn refused(set_cookie: &str, url: &Url) -> Option<&'static str> {
    if set_cookie.chars().any(|c| c.is_control() && c != '\t') {
        return Some("a control character");
    }
    let attrs = set_cookie.split_once(';').map_or("", |(_, a)| a);
    let domain = attrs
        .split(';')
        .filter_map(|attr| {
            let (name, value) = attr.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("domain")
                .then(|| value.trim_matches([' ', '\t']))
        })
        .next_back()?;
    let bare = domain.strip_prefix('.').unwrap_or(domain);
    if bare.contains([' ', '\t']) {
        return Some("whitespace inside Domain");
    }
    let host = url.host_str().unwrap_or("");
    if !bare.is_empty() && !bare.contains('.') && !bare.eq_ignore_ascii_case(host) {
        return Some("Domain is a top-level domain");
    }
    None
}

/// The `Cookie` header value `jar` gives for a request to `url`, in RFC 6265
/// §5.4 order: longer paths first, then earlier created (the jar keeps
/// insertion order, and a replaced cookie keeps its place). `None` when no
/// cookie matches.
pub fn cookie_header_value(jar: &CookieStore, url: &Url) -> Option<String> {
    let mut matched = jar.matches(url);
    if matched.is_empty() {
        return None;
    }
    matched.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
    let mut header = String::new();
    for c in matched {
        let (n, v) = c.name_value();
        if !header.is_empty() {
            header.push_str("; ");
        }
        header.push_str(n);
        header.push('=');
        header.push_str(v);
    }
    Some(header)
}
