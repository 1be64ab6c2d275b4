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
    /// For a copy from the fragment cache: its rewritten content, kept
    /// with it for the pages that show it again.
    pub rewritten: Option<Arc<Rewritten>>,
}

/// The rewritten content of one cached fragment body, kept with the copy
/// (docs/ARCHITECTURE.md, the fragment cache): pages that show the same
/// copy as the same fragment reuse it instead of rewriting the body again.
/// Each entry is keyed by everything its rewriting read: the fragment's id,
/// its origin's settings (that very `Origin`, so a reload starts afresh),
/// the copy's URL, the rewrite memory limit and, only when the rewriting
/// read it, the page's path and query. At most `budget` bytes are kept.
#[derive(Debug)]
pub struct Rewritten {
    /// The entries, oldest first, and the bytes they hold.
    entries: std::sync::Mutex<(std::collections::VecDeque<RewrittenEntry>, usize)>,
    budget: usize,
}

#[derive(Debug)]
struct RewrittenEntry {
    id: String,
    origin: Arc<Origin>,
    url: Url,
    max_memory: usize,
    /// The page's path and query, when the rewriting read them.
    page: Option<(String, Vec<String>)>,
    content: Vec<Bytes>,
    /// The bytes of `content`.
    size: usize,
}

/// What a rewriting depends on, to look its result up.
pub struct RewriteKey<'a> {
    /// The fragment's id.
    pub id: &'a str,
    /// Its origin.
    pub origin: &'a Arc<Origin>,
    /// The URL the body came from.
    pub url: &'a Url,
    /// `max_rewrite_memory`.
    pub max_memory: usize,
    /// The page's path and query parameters.
    pub page: (&'a str, &'a [String]),
}

impl RewriteKey<'_> {
    fn matches(&self, e: &RewrittenEntry) -> bool {
        e.id == self.id
            && Arc::ptr_eq(&e.origin, self.origin)
            && e.url == *self.url
            && e.max_memory == self.max_memory
            && e.page.as_ref().is_none_or(|(path, params)| {
                path == self.page.0 && params.as_slice() == self.page.1
            })
    }
}

impl Rewritten {
    /// An empty memo that keeps at most `budget` bytes of rewritten content.
    pub fn new(budget: usize) -> Rewritten {
        Rewritten {
            entries: std::sync::Mutex::default(),
            budget,
        }
    }

    /// The content rewritten earlier for `key`.
    pub fn get(&self, key: &RewriteKey<'_>) -> Option<Vec<Bytes>> {
        let entries = self.entries.lock().ok()?;
        entries
            .0
            .iter()
            .find(|e| key.matches(e))
            .map(|e| e.content.clone())
    }

    /// Keeps `content`, rewritten for `key` (its page only if `page_read`),
    /// if it fits: the oldest entries make room, and content larger than
    /// the whole budget is not kept.
    pub fn put(&self, key: &RewriteKey<'_>, page_read: bool, content: Vec<Bytes>) {
        let size: usize = content.iter().map(Bytes::len).sum();
        if size > self.budget {
            return;
        }
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (entries, held) = &mut *guard;
        entries.retain(|e| {
            let same = key.matches(e);
            if same {
                *held -= e.size;
            }
            !same
        });
        while *held + size > self.budget {
            let Some(old) = entries.pop_front() else {
                break;
            };
            *held -= old.size;
        }
        *held += size;
        entries.push_back(RewrittenEntry {
            id: key.id.to_string(),
            origin: key.origin.clone(),
            url: key.url.clone(),
            max_memory: key.max_memory,
            page: page_read.then(|| (key.page.0.to_string(), key.page.1.to_vec())),
            content,
            size,
        });
    }
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
        /// The cached copy's rewritten content, when it came from the
        /// fragment cache.
        rewritten: Option<Arc<Rewritten>>,
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
                    rewritten: resp.rewritten,
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

    fn origins() -> (Arc<Origin>, Arc<Origin>) {
        let dir = std::env::temp_dir().join(format!("rain-memo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("templates")).expect("dir");
        std::fs::write(dir.join("templates/home.html"), "<html></html>").expect("layout");
        let cfg = crate::config::parse(
            &dir.join("rain-edge.toml"),
            "[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n[origins.o]\nurl = \"http://127.0.0.1:1/\"\n",
        )
        .expect("config");
        let o = cfg.origins.get("o").cloned().expect("origin o");
        // The same settings, loaded again (a reload).
        let again = Arc::new((*o).clone());
        (o, again)
    }

    #[test]
    fn rewritten_content_is_found_only_by_what_its_rewriting_read() {
        let (origin, reloaded) = origins();
        let url = Url::parse("http://127.0.0.1:1/nav").expect("url");
        let params = ["q=1".to_string()];
        let key = |id, origin, page| RewriteKey {
            id,
            origin,
            url: &url,
            max_memory: 1000,
            page,
        };
        let memo = Rewritten::new(100);
        let here = key("a", &origin, ("/", &params[..]));
        memo.put(
            &here,
            true,
            vec![Bytes::from_static(b"<a href=/?rain.a=x>")],
        );
        assert!(memo.get(&here).is_some());
        assert!(memo
            .get(&key("a", &origin, ("/other", &params[..])))
            .is_none());
        assert!(memo.get(&key("a", &origin, ("/", &[]))).is_none());
        assert!(memo.get(&key("b", &origin, ("/", &params[..]))).is_none());
        assert!(memo.get(&key("a", &reloaded, ("/", &params[..]))).is_none());
        // Content that did not read the page serves every page.
        let logo = key("l", &origin, ("/", &params[..]));
        memo.put(&logo, false, vec![Bytes::from_static(b"<p>logo</p>")]);
        assert!(memo.get(&key("l", &origin, ("/elsewhere", &[]))).is_some());
    }

    #[test]
    fn rewritten_content_stays_within_its_budget() {
        let (origin, _) = origins();
        let url = Url::parse("http://127.0.0.1:1/nav").expect("url");
        let key = |id| RewriteKey {
            id,
            origin: &origin,
            url: &url,
            max_memory: 1000,
            page: ("/", &[]),
        };
        let memo = Rewritten::new(10);
        memo.put(&key("a"), false, vec![Bytes::from_static(b"123456")]);
        memo.put(&key("b"), false, vec![Bytes::from_static(b"1234")]);
        assert!(memo.get(&key("a")).is_some() && memo.get(&key("b")).is_some());
        // A third makes room by dropping the oldest.
        memo.put(&key("c"), false, vec![Bytes::from_static(b"12345")]);
        assert!(memo.get(&key("a")).is_none());
        assert!(memo.get(&key("b")).is_some() && memo.get(&key("c")).is_some());
        // Larger than the whole budget: not kept, nothing dropped.
        memo.put(&key("d"), false, vec![Bytes::from_static(b"12345678901")]);
        assert!(memo.get(&key("d")).is_none());
        assert!(memo.get(&key("b")).is_some() && memo.get(&key("c")).is_some());
    }
}
