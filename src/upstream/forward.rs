//! What an origin receives (docs/configuration.md, what origins receive): the fixed set of browser headers,
//! the origin's `forward_headers` and `forward_cookies`, the forwarding
//! headers (`X-Forwarded-*`, with the client's value kept only from a trusted
//! proxy) and the context headers. Never the browser's session cookie, its
//! `Authorization`, hop-by-hop, conditional or range headers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tracing::Instrument;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::client::{OriginClient, OriginRequest};
use super::stale::StaleCache;
use crate::aggregate::{FetchFailure, FetchRequest, FetchResponse, FragmentSource, Outcome};
use crate::config::{Cidr, Config};
use crate::session::{forwarded_cookies, PageSession, Turn};
use crate::telemetry::{InFlight, Metrics, PageLog};

/// Headers never passed to an origin, even when `forward_headers` names them.
const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
    "accept-encoding",
];

/// What rain-edge knows of the browser's request, as origins may see it.
pub struct BrowserContext {
    headers: HeaderMap,
    /// Same for every fragment of one page request.
    pub request_id: String,
    /// The page's path and query, `rain.*` parameters removed.
    pub page_url: String,
    session_cookie: String,
    /// Headers every origin request of this page carries, built once.
    common: Vec<(HeaderName, HeaderValue)>,
    /// Headers only non-public requests carry, built once.
    private: Vec<(HeaderName, HeaderValue)>,
}

/// Whether `ip` is one of `trusted_proxies` (its `X-Forwarded-*` fields are
/// believed).
pub fn trusted(cfg: &Config, ip: IpAddr) -> bool {
    cfg.server
        .trusted_proxies
        .iter()
        .any(|c: &Cidr| c.contains(ip))
}

impl BrowserContext {
    /// Captures a browser request's context.
    pub fn new(
        cfg: &Config,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        secure: bool,
        page_url: String,
    ) -> BrowserContext {
        let from_proxy = client.is_some_and(|ip| trusted(cfg, ip));
        let client_ip = client.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        });
        let header_str = |name: &str| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        let mut forwarded_for = String::new();
        if from_proxy {
            if let Some(prior) = header_str("x-forwarded-for") {
                forwarded_for.push_str(&prior);
            }
        }
        if let Some(ip) = client_ip {
            if !forwarded_for.is_empty() {
                forwarded_for.push_str(", ");
            }
            forwarded_for.push_str(&ip.to_string());
        }
        let forwarded_proto = from_proxy
            .then(|| header_str("x-forwarded-proto"))
            .flatten()
            .unwrap_or_else(|| if secure { "https" } else { "http" }.to_string());
        let forwarded_host = from_proxy
            .then(|| header_str("x-forwarded-host"))
            .flatten()
            .or_else(|| header_str("host"));
        let request_id = from_proxy
            .then(|| header_str("x-request-id"))
            .flatten()
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(new_request_id);
        // The request's log lines carry it from here on.
        tracing::Span::current().record("id", tracing::field::display(&request_id));
        let value = |v: &str| HeaderValue::from_str(v).ok();
        let named = |name: &'static str, v: Option<HeaderValue>| {
            v.map(|v| (HeaderName::from_static(name), v))
        };
        let common = [
            named(
                "accept-encoding",
                Some(HeaderValue::from_static("gzip, br")),
            ),
            named("x-request-id", value(&request_id)),
            named("x-rain-node", value(&cfg.server.node_id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut private: Vec<(HeaderName, HeaderValue)> = [
            named("x-rain-page-url", value(&page_url)),
            named(
                "x-forwarded-for",
                (!forwarded_for.is_empty())
                    .then(|| value(&forwarded_for))
                    .flatten(),
            ),
            named("x-forwarded-proto", value(&forwarded_proto)),
            named(
                "x-forwarded-host",
                forwarded_host.as_deref().and_then(value),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        for name in [http::header::USER_AGENT, http::header::ACCEPT_LANGUAGE] {
            for v in headers.get_all(&name) {
                private.push((name.clone(), v.clone()));
            }
        }
        BrowserContext {
            headers: headers.clone(),
            request_id,
            page_url,
            session_cookie: cfg.session.cookie_name.clone(),
            common,
            private,
        }
    }

    /// Whether the browser named header `name` in its `Connection` field.
    fn hop_by_hop(&self, name: &str) -> bool {
        self.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name))
    }

    /// The headers for one fragment (or layout) request. `jar_cookies` is the
    /// `Cookie` value from the user's jar for this origin, if any.
    pub fn origin_headers(
        &self,
        req: &FetchRequest,
        jar_cookies: Option<String>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(16);
        // Clones of the page's values share their bytes: no copy per fragment.
        out.extend(self.common.iter().cloned());
        if let Ok(v) = HeaderValue::from_str(&req.fragment_id) {
            out.push((HeaderName::from_static("x-rain-fragment-id"), v));
        }
        // Where the browser reaches this origin with its hidden session
        // (client-side calls): the same for every user, public or not.
        if let Ok(v) = HeaderValue::from_str(&crate::rewrite::call_base(&req.origin.name)) {
            out.push((HeaderName::from_static("x-rain-base"), v));
        }
        // With a jar, the cookies of a redirect chain are in it already.
        let mut cookies = match jar_cookies {
            Some(j) => j.split("; ").map(str::to_string).collect(),
            None => req.chain_cookies.clone(),
        };
        if !req.public {
            out.extend(self.private.iter().cloned());
            let mut pass = |name: &HeaderName| {
                for v in self.headers.get_all(name) {
                    out.push((name.clone(), v.clone()));
                }
            };
            for name in &req.origin.forward_headers {
                let n = name.as_str();
                let fixed = matches!(n, "user-agent" | "accept-language")
                    || n.starts_with("x-forwarded-")
                    || n.starts_with("x-rain-")
                    || n == "x-request-id";
                // A field the browser names in `Connection` is hop-by-hop:
                // it was meant for rain-edge only (RFC 9110 §7.6.1).
                if !fixed && !NEVER_FORWARDED.contains(&n) && !self.hop_by_hop(n) {
                    pass(name);
                }
            }
            let browser = self
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok());
            let mut allowed =
                forwarded_cookies(browser, &req.origin.forward_cookies, &self.session_cookie);
            allowed.retain(|c| {
                let name = c.split('=').next().unwrap_or_default();
                !cookies.iter().any(|k| k.split('=').next() == Some(name))
            });
            cookies.extend(allowed);
        }
        if !cookies.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
                out.push((http::header::COOKIE, v));
            }
        }
        out
    }
}

impl BrowserContext {
    /// The headers for a resource or form request to `origin` at `url` on
    /// behalf of fragment `id`, with the user's jar for that origin.
    pub async fn headers_with_jar(
        &self,
        origin: &Arc<crate::config::Origin>,
        url: &url::Url,
        id: &str,
        user: Option<&PageSession>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let fetch = FetchRequest {
            origin: origin.clone(),
            url: url.clone(),
            fragment_id: id.to_string(),
            public: false,
            max_bytes: 0,
            chain_cookies: Vec::new(),
            timeout: origin.timeout,
        };
        let jar = match user {
            Some(s) => s.cookie_header(&origin.name, url).await.ok().flatten(),
            None => None,
        };
        self.origin_headers(&fetch, jar)
    }
}

/// A random request id (128 bits, hex).
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The session side of one page request.
pub enum SessionState {
    /// The page has no non-public fragment: no session was looked up.
    None,
    /// The user's session.
    Active(Arc<PageSession>),
    /// The session store could not be reached: non-public fragments fail as
    /// `unavailable`, public ones are served as usual.
    Unavailable,
}

/// The [`FragmentSource`] of one browser request: pooled connections, that
/// request's context, and the user's session.
pub struct RequestSource {
    /// The shared origin client.
    pub client: Arc<OriginClient>,
    /// The browser request's context.
    pub browser: Arc<BrowserContext>,
    /// The user's session, if the page needs one.
    pub session: SessionState,
    /// Where fragment outcomes are counted.
    pub metrics: Arc<Metrics>,
    /// The page's access log, when the request has one.
    pub log: Option<Arc<PageLog>>,
    /// Last good answers of public fragments (`stale_if_error`).
    pub stale: Arc<StaleCache>,
    /// Public fragment exchanges in flight, shared.
    pub coalescer: Arc<Coalescer>,
    /// The fragment cache, when it is on.
    pub cache: Option<Arc<super::cache::FragmentCache>>,
}

/// Identical `public` fragment fetches in flight at the same time share one
/// exchange with their origin (nothing of a user is in them).
#[derive(Default)]
pub struct Coalescer {
    inflight: std::sync::Mutex<HashMap<String, Shared<BoxFuture<'static, Answer>>>>,
}

/// One public exchange's answer, and what the fragment cache made of it
/// (`hit` for a copy the origin confirmed, `miss`, or `none` uncached).
type Answer = Result<(FetchResponse, &'static str), FetchFailure>;

/// A public fragment's place in the fragment cache: the cache and its key.
#[derive(Clone)]
struct Cached {
    cache: Arc<super::cache::FragmentCache>,
    key: String,
}

impl Coalescer {
    /// The exchange for `key`: the one in flight, or a new one made by
    /// `start` and run in its own task (so that it ends, and leaves the
    /// table, even if every page waiting on it goes away).
    fn join(
        self: &Arc<Self>,
        key: String,
        start: impl FnOnce() -> BoxFuture<'static, Answer>,
    ) -> Shared<BoxFuture<'static, Answer>> {
        let mut map = crate::sync::lock(&self.inflight);
        if let Some(f) = map.get(&key) {
            return f.clone();
        }
        let exchange = start();
        let leave = Leave {
            table: self.clone(),
            key: key.clone(),
        };
        let task = tokio::spawn(
            async move {
                // The table forgets the exchange when it ends, even by a
                // panic: later fetches then start a new one.
                let _leave = leave;
                exchange.await
            }
            .in_current_span(),
        );
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(FetchFailure::Unavailable(e.to_string())))
        }
        .boxed()
        .shared();
        map.insert(key, shared.clone());
        shared
    }
}

/// Takes an exchange out of the [`Coalescer`]'s table when dropped.
struct Leave {
    table: Arc<Coalescer>,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut map = crate::sync::lock(&self.table.inflight);
        map.remove(&self.key);
    }
}

impl RequestSource {
    /// A public fragment: a fresh copy from the fragment cache (or a stale
    /// one within its `stale-while-revalidate` window, refreshed in the
    /// background), or an exchange shared with identical ones in flight
    /// (kept in the cache when its origin allows).
    async fn fetch_public(&self, req: &FetchRequest) -> Result<FetchResponse, FetchFailure> {
        let cached = self.cached(req);
        let mut conditional = Vec::new();
        if let Some(c) = &cached {
            // The request the origin would get: the cache matches `Vary`
            // against it (built only for a copy that varies).
            let asked = || self.browser.origin_headers(req, None);
            match c.cache.lookup(&c.key, &req.url, asked).await {
                super::cache::Lookup::Fresh(hit) => {
                    self.note(req, Some(&hit), "hit");
                    return Ok(*hit);
                }
                super::cache::Lookup::WhileRevalidate(copy, fields) => {
                    // The exchange runs in its own task: this page does not
                    // wait for it, and pages meanwhile join it.
                    drop(self.exchange(req, cached.clone(), fields));
                    self.note(req, Some(&copy), "stale");
                    return Ok(*copy);
                }
                super::cache::Lookup::Stale(fields) => conditional = fields,
                super::cache::Lookup::Miss => {}
            }
        }
        let (answer, how) = self.exchange(req, cached, conditional).await?;
        self.note(req, Some(&answer), how);
        Ok(answer)
    }

    /// The fragment cache's place for `req`, when the cache is on for its
    /// origin.
    fn cached(&self, req: &FetchRequest) -> Option<Cached> {
        let cache = self.cache.as_ref().filter(|_| req.origin.cache)?;
        Some(Cached {
            cache: cache.clone(),
            key: format!("{}\n{}", req.origin.name, req.url),
        })
    }

    /// The exchange for public `req`, shared with identical ones in flight
    /// (same origin, URL and fragment id: the request id aside, they send
    /// the same fields), with `conditional` fields when it revalidates a
    /// stale copy. The answer is put in the cache (a `304` refreshes the
    /// copy) in the exchange's own task.
    fn exchange(
        &self,
        req: &FetchRequest,
        cached: Option<Cached>,
        conditional: Vec<(HeaderName, HeaderValue)>,
    ) -> Shared<BoxFuture<'static, Answer>> {
        let key = format!("{}\n{}\n{}", req.origin.name, req.url, req.fragment_id);
        self.coalescer.join(key, || {
            let client = self.client.clone();
            let metrics = self.metrics.clone();
            let origin = req.origin.clone();
            let url = req.url.clone();
            let path_and_query = path_and_query(&req.url);
            // What the origin gets; the cache matches `Vary` against it
            // (the conditional fields aside).
            let asked = self.browser.origin_headers(req, None);
            let (max_bytes, timeout) = (req.max_bytes, req.timeout);
            // A purge after this point makes the answer too old to keep.
            let generation = cached.as_ref().map(|c| c.cache.generation());
            let keep_fields = cached.is_some();
            async move {
                let _in_flight = InFlight::enter(&metrics.fetches_in_flight);
                let send = |headers: Vec<(HeaderName, HeaderValue)>| {
                    let send = client.send(OriginRequest {
                        origin: &origin,
                        method: "GET",
                        path_and_query: &path_and_query,
                        headers,
                        max_bytes,
                        on_head: None,
                        affinity: None,
                        deadline: timeout,
                        keep_fields,
                    });
                    // Nobody drops this exchange at the fragment's deadline:
                    // it keeps one of its own (dropped there, its server's
                    // breaker counts a timeout).
                    async move {
                        match tokio::time::timeout(timeout, send).await {
                            Ok(r) => r,
                            Err(_) => Err(FetchFailure::Unavailable(format!(
                                "no answer within {timeout:?}"
                            ))),
                        }
                    }
                };
                let (Some(c), Some(generation)) = (cached, generation) else {
                    return Ok((send(asked).await?, "none"));
                };
                let mut headers = asked.clone();
                headers.extend(conditional);
                let mut answer = send(headers).await?;
                if answer.status == 304 {
                    // The stale copy holds: the origin confirmed it.
                    let kept = c
                        .cache
                        .refreshed(&c.key, &url, &asked, &answer, generation)
                        .await;
                    if let Some(copy) = kept {
                        return Ok((copy, "hit"));
                    }
                    // The copy went meanwhile (purged, evicted): ask again
                    // for the whole answer.
                    answer = send(asked.clone()).await?;
                }
                let path = url
                    .as_str()
                    .strip_prefix(origin.url.as_str())
                    .unwrap_or_default();
                c.cache
                    .keep(
                        c.key.clone(),
                        (&origin.name, path),
                        (&url, &asked),
                        &answer,
                        generation,
                    )
                    .await;
                Ok((answer, "miss"))
            }
            .boxed()
        })
    }

    /// Notes an exchange's server, status, size and cache result in the
    /// page's log.
    fn note(&self, req: &FetchRequest, answer: Option<&FetchResponse>, cache: &'static str) {
        if let (Some(log), Some(r)) = (&self.log, answer) {
            log.fetched(
                &req.fragment_id,
                r.server,
                r.status,
                r.body.len() as u64,
                cache,
            );
        }
    }
}

/// A URL's path and query, as a request target.
fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

#[async_trait]
impl FragmentSource for RequestSource {
    async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse, FetchFailure> {
        if req.public {
            return self.fetch_public(req).await;
        }
        let _in_flight = InFlight::enter(&self.metrics.fetches_in_flight);
        let unavailable = |e: crate::session::StoreError| {
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            FetchFailure::Unavailable(e.to_string())
        };
        let path_and_query = path_and_query(&req.url);
        let origin = req.origin.name.as_str();
        // A public fragment carries nothing of the user, and its cookies are
        // not kept.
        let session = match (&self.session, req.public) {
            (_, true) | (SessionState::None, _) => None,
            (SessionState::Active(s), false) => Some(s),
            (SessionState::Unavailable, false) => {
                return Err(FetchFailure::Unavailable(
                    "the session store is unreachable".into(),
                ));
            }
        };
        let mut gate = None;
        let mut jar_cookies = None;
        if let Some(s) = session {
            if req.origin.session_bootstrap && s.jar_is_empty(origin).await.map_err(unavailable)? {
                match s.bootstrap_turn(origin) {
                    Turn::Leader(guard) => gate = Some(guard),
                    Turn::Follower(mut opened) => {
                        // Wait for the first request's cookies, at most half
                        // of this fragment's own deadline.
                        let _ =
                            tokio::time::timeout(req.timeout / 2, opened.wait_for(|o| *o)).await;
                    }
                }
            }
            jar_cookies = s
                .cookie_header(origin, &req.url)
                .await
                .map_err(unavailable)?;
        }
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let send = self.client.send(OriginRequest {
            origin: &req.origin,
            method: "GET",
            path_and_query: &path_and_query,
            headers: self.browser.origin_headers(req, jar_cookies),
            max_bytes: req.max_bytes,
            on_head: session.map(|_| head_tx),
            affinity: session.map(|s| s.id.as_str()),
            deadline: req.timeout,
            keep_fields: false,
        });
        let record = async {
            if let (Some(s), Ok(set_cookies)) = (session, head_rx.await) {
                // Boxed: it runs once the answer's head has come; inline, it
                // would size every request's future while it waits.
                if let Err(e) = Box::pin(s.record(origin, &req.url, &set_cookies)).await {
                    self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(origin, error = %e, "origin cookies not saved");
                }
            }
            // Other requests to this origin may go now, with its cookies.
            drop(gate);
        };
        let (result, ()) = tokio::join!(send, record);
        self.note(req, result.as_ref().ok(), "none");
        result
    }

    async fn keep_good(&self, key: &str, url: &url::Url, body: &bytes::Bytes) {
        self.stale.keep(key, url, body).await;
    }

    async fn last_good(
        &self,
        origin: &Arc<crate::config::Origin>,
        url: &url::Url,
        id: &str,
        max_age: Duration,
    ) -> Option<(url::Url, bytes::Bytes)> {
        let req = FetchRequest {
            origin: origin.clone(),
            url: url.clone(),
            fragment_id: id.to_string(),
            public: true,
            max_bytes: 0,
            chain_cookies: Vec::new(),
            timeout: origin.timeout,
        };
        // The cached copy's own window (`stale-if-error`, from when it went
        // stale), then ours (`stale_if_error`, from its fetch): the longer
        // one serves.
        let cached = self.cached(&req);
        let mut kept = None;
        if let Some(c) = &cached {
            let asked = self.browser.origin_headers(&req, None);
            kept = c.cache.if_error(&c.key, url, &asked).await.map(|copy| {
                self.note(&req, Some(&copy), "stale");
                (url.clone(), copy.body)
            });
        }
        if kept.is_none() {
            kept = self.stale.get(url.as_str(), max_age).await;
            if let (Some(log), Some((_, body))) = (&self.log, &kept) {
                log.fetched(id, None, 200, body.len() as u64, "stale");
            }
        }
        if kept.is_some() {
            self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
            if let Some(cache) = &self.cache {
                cache.counts.stale.fetch_add(1, Ordering::Relaxed);
            }
        }
        kept
    }

    fn fragment_done(&self, id: &str, origin: Option<&str>, outcome: &Outcome, elapsed: Duration) {
        self.metrics.fragment(origin, outcome, elapsed);
        if let Some(log) = &self.log {
            log.push(id, origin, outcome, elapsed);
        }
    }
}
