//! Fetching one fragment through a [`FragmentSource`]: following redirects
//! that stay inside the origin (at most 5, with the cookies set on the way),
//! and turning the answer into content or a failure class. The deadline is
//! applied by the caller; this module never sleeps.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use url::Url;

use crate::config::{FailureClass, Origin};
use crate::rewrite::{resolve_within, strip_quirks};

/// Most redirects followed for one fragment.
pub const MAX_REDIRECTS: usize = 5;

/// One request to an origin.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The origin (its connection settings and forwarding rules).
    pub origin: Arc<Origin>,
    /// The URL, already checked to be under the origin's base.
    pub url: Url,
    /// The fragment's id (`X-Rain-Fragment-Id`).
    pub fragment_id: String,
    /// `public`: send nothing of the user.
    pub public: bool,
    /// Largest body accepted, after decompression.
    pub max_bytes: u64,
    /// Cookies set by earlier answers of this redirect chain (`name=value`),
    /// for requests that have no session jar to keep them.
    pub chain_cookies: Vec<String>,
    /// The fragment's deadline (a source may wait up to half of it for an
    /// origin session to be created by another request of the page).
    pub timeout: std::time::Duration,
}

/// An origin's answer, body decoded (no content coding) and in UTF-8.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// HTTP status.
    pub status: u16,
    /// `Location`, as sent.
    pub location: Option<String>,
    /// Every `Set-Cookie` value, as sent.
    pub set_cookies: Vec<String>,
    /// The body, UTF-8.
    pub body: Bytes,
    /// Whether the origin lets the answer be kept (no `no-store` or
    /// `private` in its `Cache-Control`).
    pub storable: bool,
    /// Every `Link` value, as sent (fragment assets).
    pub links: Vec<String>,
    /// The server that answered (several servers per origin).
    pub server: Option<std::net::SocketAddr>,
    /// The answer's fields, when it says how it may be cached
    /// (`Cache-Control` or `Expires`): for the fragment cache.
    pub headers: Option<http::HeaderMap>,
}

/// Why an exchange with an origin failed before a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchFailure {
    /// Connection refused or reset, name resolution failed.
    #[error("origin unavailable: {0}")]
    Unavailable(String),
    /// A broken or oversized answer.
    #[error("bad answer: {0}")]
    Error(String),
}

impl FetchFailure {
    /// The failure class of this failure.
    pub fn class(&self) -> FailureClass {
        match self {
            FetchFailure::Unavailable(_) => FailureClass::Unavailable,
            FetchFailure::Error(_) => FailureClass::Error,
        }
    }
}

/// Where fragments come from. `proxy` implements it with pooled connections
/// and the user's request context, so that `aggregate` knows nothing of
/// sockets, sessions or the browser's headers.
#[async_trait]
pub trait FragmentSource: Send + Sync + 'static {
    /// Performs one GET exchange (no redirect following).
    async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse, FetchFailure>;

    /// Told once per fragment when it ended (content or fallback), with its
    /// id, its configured origin when it had one (never a name that only
    /// HTML gave), and how long it took from its start. For
    /// statistics; the default does nothing.
    /// Keeps the last good answer of a `public` fragment fetched at `key`
    /// (its final URL and body), for `stale_if_error`. The default keeps
    /// nothing.
    async fn keep_good(&self, _key: &str, _url: &Url, _body: &Bytes) {}

    /// A good answer of public fragment `id` of `origin` at `url`, served
    /// in place of a failure (and counted): the last one kept by
    /// [`FragmentSource::keep_good`] if at most `max_age` old, or a cached
    /// copy within its own `stale-if-error` window.
    async fn last_good(
        &self,
        _origin: &Arc<Origin>,
        _url: &Url,
        _id: &str,
        _max_age: std::time::Duration,
    ) -> Option<(Url, Bytes)> {
        None
    }

    fn fragment_done(
        &self,
        _id: &str,
        _origin: Option<&str>,
        _outcome: &super::compose::Outcome,
        _elapsed: std::time::Duration,
    ) {
    }
}

/// The result of fetching a fragment, redirects followed.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A 2xx answer's body, and the URL it came from.
    Content {
        /// The final URL (after same-origin redirects).
        url: Url,
        /// The answer's status.
        status: u16,
        /// UTF-8 body.
        body: Bytes,
        /// Whether the origin lets it be kept (for `stale_if_error`).
        storable: bool,
        /// Its `Link` values (fragment assets).
        links: Vec<String>,
    },
    /// A 4xx answer, with its body (a layout's own 404 page, a form's
    /// validation error). Fragments fail with [`class_of_status`].
    ClientError {
        /// The answer's status.
        status: u16,
        /// UTF-8 body.
        body: Bytes,
    },
    /// A redirect out of the origin: its status (301, 302, 303, 307 or
    /// 308) and this absolute URL.
    Redirect(u16, String),
    /// A failure of this class.
    Failed(FailureClass, String),
}

/// The failure class of a fragment whose origin answered `status`.
pub fn class_of_status(status: u16) -> FailureClass {
    match status {
        401 => FailureClass::Unauthorized,
        403 => FailureClass::Forbidden,
        404 => FailureClass::NotFound,
        _ => FailureClass::Error,
    }
}

/// Fetches `req`, following redirects inside its origin.
pub async fn fetch_following(source: &dyn FragmentSource, mut req: FetchRequest) -> Fetched {
    for hop in 0..=MAX_REDIRECTS {
        let resp = match source.fetch(&req).await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(e.class(), e.to_string()),
        };
        match resp.status {
            200..=299 => {
                return Fetched::Content {
                    url: req.url,
                    status: resp.status,
                    body: resp.body,
                    storable: resp.storable,
                    links: resp.links,
                }
            }
            301 | 302 | 303 | 307 | 308 => {
                let Some(loc) = resp.location.as_deref() else {
                    return Fetched::Failed(
                        FailureClass::Error,
                        format!("{} without a Location", resp.status),
                    );
                };
                match resolve_within(&req.origin.url, &req.url, loc) {
                    Ok(mut next) => {
                        if hop == MAX_REDIRECTS {
                            break;
                        }
                        for sc in &resp.set_cookies {
                            remember_cookie(&mut req.chain_cookies, sc);
                        }
                        // The session id rides in the cookie set on this
                        // same answer; Spring Security refuses `;` in paths.
                        strip_quirks(&mut next, req.origin.kind);
                        req.url = next;
                    }
                    Err(_) => {
                        let abs = req
                            .url
                            .join(loc)
                            .map(String::from)
                            .unwrap_or_else(|_| loc.to_string());
                        return Fetched::Redirect(resp.status, abs);
                    }
                }
            }
            400..=499 => {
                return Fetched::ClientError {
                    status: resp.status,
                    body: resp.body,
                }
            }
            s => return Fetched::Failed(FailureClass::Error, format!("origin answered {s}")),
        }
    }
    Fetched::Failed(
        FailureClass::Error,
        format!("more than {MAX_REDIRECTS} redirects"),
    )
}

/// Keeps the `name=value` of a `Set-Cookie` for the rest of a redirect chain
/// (replacing an earlier value of the same name; an expired one removes it).
fn remember_cookie(jar: &mut Vec<String>, set_cookie: &str) {
    let mut parts = set_cookie.split(';');
    let Some(pair) = parts.next().map(str::trim) else {
        return;
    };
    let Some((name, _)) = pair.split_once('=') else {
        return;
    };
    let name = name.trim();
    if name.is_empty() {
        return;
    }
    jar.retain(|c| c.split('=').next() != Some(name));
    let expired = parts.any(|a| {
        let a = a.trim().to_ascii_lowercase();
        a == "max-age=0" || a.starts_with("max-age=-") || a.contains("expires=thu, 01 jan 1970")
    });
    if !expired {
        jar.push(pair.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_cookies() {
        let mut jar = Vec::new();
        remember_cookie(&mut jar, "JSESSIONID=abc; Path=/ctx; HttpOnly");
        remember_cookie(&mut jar, "x=1");
        remember_cookie(&mut jar, "JSESSIONID=def; Path=/ctx");
        assert_eq!(jar, vec!["x=1".to_string(), "JSESSIONID=def".to_string()]);
        remember_cookie(&mut jar, "x=; Max-Age=0");
        assert_eq!(jar, vec!["JSESSIONID=def".to_string()]);
    }
}
