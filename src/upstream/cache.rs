//! The cache of `public` fragments (docs/configuration.md, caching): an
//! answer is kept when its origin allows a shared cache to keep it, by
//! RFC 9111 as the http-cache-semantics crate reads it (`max-age`,
//! `s-maxage`, `Expires`; never `no-store`, `private`, `Vary: *`, nor an
//! answer that sets a cookie; no heuristic freshness), in moka, bounded by
//! the bytes of the bodies kept (`[cache] max_size`). Fresh copies are
//! served from it; a stale one is revalidated with its validators, served at
//! once within its `stale-while-revalidate` window (while one exchange
//! refreshes it), and in place of a failure within its `stale-if-error`
//! window (RFC 5861; both counted from when the copy went stale, and both
//! refused by `must-revalidate`, `proxy-revalidate` or `no-cache`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use crate::aggregate::{FetchResponse, Rewritten};

/// Bytes of rewritten content kept with a copy, per byte of its body (a
/// copy weighs its body, this, and 256 bytes).
const REWRITTEN_PER_BODY_BYTE: usize = 2;

/// One kept answer.
struct Kept {
    policy: CachePolicy,
    answer: FetchResponse,
    /// `Surrogate-Key` and `Cache-Tag` values, for purges by tag.
    tags: Vec<String>,
    /// The origin's name and the path (and query) below its base.
    origin: String,
    path: String,
    /// When it stops being fresh.
    stale_at: SystemTime,
    /// Whether the answer names request fields in `Vary` (then each
    /// lookup matches them).
    varies: bool,
    /// How long after `stale_at` it may still be served at once while it
    /// is refreshed (`stale-while-revalidate`), or in place of a failure
    /// (`stale-if-error`).
    while_revalidate: Duration,
    if_error: Duration,
    /// How long the store keeps it: a copy without validators is of no use
    /// once both windows are past; one with validators is kept until
    /// evicted (a `304` may refresh it).
    keep_for: Option<Duration>,
}

impl Kept {
    /// A copy of `answer` (whose fields are `fields`) kept by `policy` at
    /// `now`.
    fn new(
        policy: CachePolicy,
        fields: &HeaderMap,
        answer: FetchResponse,
        tags: Vec<String>,
        (origin, path): (String, String),
        now: SystemTime,
    ) -> Kept {
        let fresh_for = policy.time_to_live(now);
        let (while_revalidate, if_error) = stale_windows(fields);
        let keep_for =
            (!has_validators(fields)).then(|| fresh_for + while_revalidate.max(if_error));
        Kept {
            policy,
            answer,
            tags,
            origin,
            path,
            stale_at: now + fresh_for,
            varies: fields.contains_key(http::header::VARY),
            while_revalidate,
            if_error,
            keep_for,
        }
    }

    /// How long it has been stale at `now` (`None` while fresh).
    fn stale_for(&self, now: SystemTime) -> Option<Duration> {
        now.duration_since(self.stale_at).ok()
    }
}

/// The windows of RFC 5861 in an answer's `Cache-Control`:
/// (`stale-while-revalidate`, `stale-if-error`), zero when absent, malformed,
/// or overridden by a directive that forbids serving it stale.
fn stale_windows(fields: &HeaderMap) -> (Duration, Duration) {
    let (mut swr, mut sie) = (Duration::ZERO, Duration::ZERO);
    for value in fields
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for (name, arg) in crate::http::cache_directives(value) {
            let secs = || {
                arg.and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "stale-while-revalidate" => swr = secs().unwrap_or(Duration::ZERO),
                "stale-if-error" => sie = secs().unwrap_or(Duration::ZERO),
                "must-revalidate" | "proxy-revalidate" | "no-cache" => {
                    return (Duration::ZERO, Duration::ZERO)
                }
                _ => {}
            }
        }
    }
    (swr, sie)
}

/// Whether an answer carries a validator (`ETag`, `Last-Modified`).
fn has_validators(fields: &HeaderMap) -> bool {
    fields.contains_key(http::header::ETAG) || fields.contains_key(http::header::LAST_MODIFIED)
}

/// How long the store keeps each copy.
struct KeepFor;

impl moka::Expiry<String, Arc<Kept>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Kept>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        value.keep_for
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Kept>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.keep_for
    }
}

/// What the cache counts (`rain_cache_*`).
#[derive(Default)]
pub struct CacheCounts {
    /// Answers served from the cache.
    pub hits: AtomicU64,
    /// Lookups that found nothing fresh.
    pub misses: AtomicU64,
    /// Stale copies the origin confirmed (`304`).
    pub revalidated: AtomicU64,
    /// Stale copies served: within `stale-while-revalidate`, or in place of
    /// a failure (`stale-if-error`, `[fragments] stale_if_error`).
    pub stale: AtomicU64,
    /// Hits and lookups by origin (the map's hit ratio): read-locked on
    /// every lookup, written once per origin.
    by_origin: std::sync::RwLock<std::collections::HashMap<String, [AtomicU64; 2]>>,
}

impl CacheCounts {
    /// The share of lookups of origin `name`'s fragments served from the
    /// cache, if there was any.
    pub fn hit_ratio(&self, name: &str) -> Option<f64> {
        let map = self.by_origin.read().ok()?;
        let [hits, lookups] = map.get(name)?;
        let (hits, lookups) = (
            hits.load(Ordering::Relaxed),
            lookups.load(Ordering::Relaxed),
        );
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    fn count(&self, key: &str, hit: bool) {
        let origin = key.split('\n').next().unwrap_or_default();
        let add = |c: &[AtomicU64; 2]| {
            c[0].fetch_add(u64::from(hit), Ordering::Relaxed);
            c[1].fetch_add(1, Ordering::Relaxed);
        };
        if let Some(c) = self
            .by_origin
            .read()
            .ok()
            .as_ref()
            .and_then(|m| m.get(origin))
        {
            add(c);
            return;
        }
        if let Ok(mut m) = self.by_origin.write() {
            add(m.entry(origin.to_string()).or_default());
        }
    }
}

/// What the cache has for a fragment.
pub enum Lookup {
    /// A fresh answer.
    Fresh(Box<FetchResponse>),
    /// A stale copy within its `stale-while-revalidate` window: served as
    /// it is while one exchange (with these conditional fields, if any)
    /// refreshes it.
    WhileRevalidate(
        Box<FetchResponse>,
        Vec<(http::HeaderName, http::HeaderValue)>,
    ),
    /// A stale copy with validators: these conditional fields ask the
    /// origin whether it still holds.
    Stale(Vec<(http::HeaderName, http::HeaderValue)>),
    /// Nothing usable.
    Miss,
}

/// The fragment cache.
pub struct FragmentCache {
    store: moka::future::Cache<String, Arc<Kept>>,
    /// Bumped by every purge: an answer fetched before one is not kept
    /// after it.
    generation: AtomicU64,
    /// Its counters.
    pub counts: CacheCounts,
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        // Only what the origin says: no heuristic freshness.
        cache_heuristic: 0.0,
        ..CacheOptions::default()
    }
}

/// The conditional fields of a revalidation request.
fn conditional_fields(fields: &HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    fields
        .iter()
        .filter(|(n, _)| *n == http::header::IF_NONE_MATCH || *n == http::header::IF_MODIFIED_SINCE)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The request the policy sees: what rain-edge sends to the origin.
fn request(
    url: &url::Url,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> Option<http::request::Parts> {
    let mut req = http::Request::get(url.as_str()).body(()).ok()?;
    for (n, v) in headers {
        req.headers_mut().append(n.clone(), v.clone());
    }
    Some(req.into_parts().0)
}

impl FragmentCache {
    /// A cache holding at most `max_bytes` of bodies.
    pub fn new(max_bytes: u64) -> FragmentCache {
        let store = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &String, v: &Arc<Kept>| {
                let body = v.answer.body.len();
                u32::try_from(body + REWRITTEN_PER_BODY_BYTE * body + 256).unwrap_or(u32::MAX)
            })
            .expire_after(KeepFor)
            .build();
        FragmentCache {
            store,
            generation: AtomicU64::new(0),
            counts: CacheCounts::default(),
        }
    }

    /// The purge generation now: an exchange notes it when it starts, and
    /// its answer is kept only if no purge came meanwhile.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Its metrics, in the Prometheus text format (`bytes`: what
    /// [`FragmentCache::bytes`] said).
    pub fn render_metrics(&self, out: &mut String, bytes: u64) {
        use std::fmt::Write as _;
        let c = &self.counts;
        let families: [(&str, &str, &str, u64); 5] = [
            ("rain_cache_hits_total", "Public fragments served from the cache.", "counter", c.hits.load(Ordering::Relaxed)),
            ("rain_cache_misses_total", "Cache lookups that found nothing to serve at once.", "counter", c.misses.load(Ordering::Relaxed)),
            ("rain_cache_revalidated_total", "Stale copies the origin confirmed (304).", "counter", c.revalidated.load(Ordering::Relaxed)),
            ("rain_cache_stale_total", "Stale copies served: within stale-while-revalidate, or in place of a failure.", "counter", c.stale.load(Ordering::Relaxed)),
            ("rain_cache_bytes", "Bytes the cache holds (bodies, room for their rewritten content, and 256 per entry).", "gauge", bytes),
        ];
        for (name, help, kind, value) in families {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
    }

    /// The bytes held (bodies, and a little for each entry), once the
    /// store's pending bookkeeping is done.
    pub async fn bytes(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.weighted_size()
    }

    /// What the cache holds for `key`, asked with `headers`: a fresh
    /// answer; a stale copy to serve at once within its
    /// `stale-while-revalidate` window; or the conditional fields
    /// (`If-None-Match`, `If-Modified-Since`) that revalidate a stale copy
    /// with validators.
    pub async fn lookup(
        &self,
        key: &str,
        url: &url::Url,
        headers: impl FnOnce() -> Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Lookup {
        let kept = self.store.get(key).await;
        let now = SystemTime::now();
        let found = match kept {
            None => Lookup::Miss,
            // Without `Vary` the request does not matter (rain-edge never
            // sends `Cache-Control` or `Pragma` of its own): fresh is fresh.
            Some(k) if !k.varies && now < k.stale_at => Lookup::Fresh(Box::new(k.answer.clone())),
            Some(k) => match request(url, &headers()) {
                None => Lookup::Miss,
                Some(req) => match k.policy.before_request(&req, now) {
                    BeforeRequest::Fresh(_) => Lookup::Fresh(Box::new(k.answer.clone())),
                    BeforeRequest::Stale { request, matches } if matches => {
                        let conditional = conditional_fields(&request.headers);
                        let serve_stale = k
                            .stale_for(now)
                            .is_some_and(|late| late <= k.while_revalidate);
                        if serve_stale {
                            Lookup::WhileRevalidate(Box::new(k.answer.clone()), conditional)
                        } else if conditional.is_empty() {
                            Lookup::Miss
                        } else {
                            Lookup::Stale(conditional)
                        }
                    }
                    BeforeRequest::Stale { .. } => Lookup::Miss,
                },
            },
        };
        let served = matches!(found, Lookup::Fresh(_) | Lookup::WhileRevalidate(..));
        self.counts.count(key, served);
        let counter = match found {
            Lookup::Fresh(_) => &self.counts.hits,
            Lookup::WhileRevalidate(..) => &self.counts.stale,
            _ => &self.counts.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The stale copy kept for `key`, asked with `headers`, if its
    /// `stale-if-error` window still covers now: served in place of a
    /// failed fetch (and counted as stale).
    pub async fn if_error(
        &self,
        key: &str,
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
    ) -> Option<FetchResponse> {
        let kept = self.store.get(key).await?;
        let req = request(url, headers)?;
        let now = SystemTime::now();
        let usable = match kept.policy.before_request(&req, now) {
            BeforeRequest::Fresh(_) => true,
            BeforeRequest::Stale { matches, .. } => {
                matches
                    && kept
                        .stale_for(now)
                        .is_some_and(|late| late <= kept.if_error)
            }
        };
        usable.then(|| kept.answer.clone())
    }

    /// The kept answer for `key`, refreshed by the origin's `304` (its new
    /// fields), if the copy is still there.
    pub async fn refreshed(
        &self,
        key: &str,
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
        not_modified: &FetchResponse,
        generation: u64,
    ) -> Option<FetchResponse> {
        let kept = self.store.get(key).await?;
        if self.generation() != generation {
            // Purged since the question was asked: the copy is not refreshed.
            return None;
        }
        let req = request(url, headers)?;
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::NOT_MODIFIED;
        if let Some(fields) = &not_modified.headers {
            *res.headers_mut() = fields.clone();
        }
        let now = SystemTime::now();
        match kept.policy.after_response(&req, &res.into_parts().0, now) {
            http_cache_semantics::AfterResponse::NotModified(policy, merged) => {
                let answer = kept.answer.clone();
                let fresh = Kept::new(
                    policy,
                    &merged.headers,
                    answer.clone(),
                    kept.tags.clone(),
                    (kept.origin.clone(), kept.path.clone()),
                    now,
                );
                self.store.insert(key.to_string(), Arc::new(fresh)).await;
                self.counts.revalidated.fetch_add(1, Ordering::Relaxed);
                // The origin confirmed it now: a fetch, kept as such for
                // `stale_if_error`.
                Some(FetchResponse {
                    storable: true,
                    ..answer
                })
            }
            http_cache_semantics::AfterResponse::Modified(..) => None,
        }
    }

    /// Keeps `answer` under `key` if its origin allows a shared cache to
    /// and no purge came since the exchange started (`generation`). An
    /// answer that may not be kept replaces the copy all the same (it goes),
    /// unless it is a server error, for which a copy may still serve
    /// (`stale-if-error`).
    pub async fn keep(
        &self,
        key: String,
        (origin, path): (&str, &str),
        (url, headers): (&url::Url, &[(http::HeaderName, http::HeaderValue)]),
        answer: &FetchResponse,
        generation: u64,
    ) {
        let kept = self.kept(url, headers, answer);
        if self.generation() != generation {
            return;
        }
        match kept {
            Some((policy, fields)) => {
                let now = SystemTime::now();
                let kept = Kept::new(
                    policy,
                    fields,
                    FetchResponse {
                        status: answer.status,
                        location: answer.location.clone(),
                        set_cookies: Vec::new(),
                        body: answer.body.clone(),
                        // A copy served from here is no new fetch:
                        // `stale_if_error` counts from the fetch, so it is
                        // not kept for it again.
                        storable: false,
                        links: answer.links.clone(),
                        server: answer.server,
                        // Its fields live in its policy.
                        headers: None,
                        // Its rewritten content, kept with it within its
                        // weight.
                        rewritten: Some(Arc::new(Rewritten::new(
                            REWRITTEN_PER_BODY_BYTE * answer.body.len(),
                        ))),
                    },
                    tags(fields),
                    (origin.to_string(), path.to_string()),
                    now,
                );
                self.store.insert(key, Arc::new(kept)).await;
            }
            None if answer.status < 500 && self.store.contains_key(&key) => {
                self.store.invalidate(&key).await;
            }
            None => {}
        }
    }

    /// The policy and fields under which `answer` may be kept, if it may.
    fn kept<'a>(
        &self,
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
        answer: &'a FetchResponse,
    ) -> Option<(CachePolicy, &'a HeaderMap)> {
        let fields = answer.headers.as_ref()?;
        if answer.status != 200 || !answer.set_cookies.is_empty() {
            return None;
        }
        let req = request(url, headers)?;
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::OK;
        *res.headers_mut() = fields.clone();
        let now = SystemTime::now();
        let policy = CachePolicy::new_options(&req, &res.into_parts().0, now, options());
        (policy.is_storable() && !policy.time_to_live(now).is_zero()).then_some((policy, fields))
    }

    /// Drops the kept answers of `origin` at `path` (every query variant
    /// when `path` has none), or those tagged `tag`. Returns how many.
    pub async fn purge(&self, purge: &Purge) -> u64 {
        let (origin, path, tag) = (
            purge.origin.as_deref(),
            purge.path.as_deref(),
            purge.tag.as_deref(),
        );
        // Answers in flight were fetched before the purge: not kept.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        let keys: Vec<Arc<String>> = self
            .store
            .iter()
            .filter(|(_, k)| {
                let by_path = match (origin, path) {
                    (Some(o), Some(p)) => {
                        let p = p.trim_start_matches('/');
                        k.origin == o
                            && (k.path == p
                                || (!p.contains('?') && k.path.split('?').next() == Some(p)))
                    }
                    _ => false,
                };
                let by_tag = tag.is_some_and(|t| k.tags.iter().any(|x| x == t));
                by_path || by_tag
            })
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.store.invalidate(key.as_str()).await;
            dropped += 1;
        }
        dropped
    }
}

/// What `POST /purge` drops (docs/configuration.md): by origin and path,
/// or by tag. The same JSON goes to the other instances.
#[derive(Debug, Default, PartialEq)]
pub struct Purge {
    /// The origin's name.
    pub origin: Option<String>,
    /// The path below its base, as a fragment's `src` names it.
    pub path: Option<String>,
    /// A `Surrogate-Key` or `Cache-Tag` value.
    pub tag: Option<String>,
}

impl Purge {
    /// The purge a JSON body names (fields that are not strings count as
    /// absent).
    pub fn from_json(v: &serde_json::Value) -> Purge {
        let field = |name: &str| v[name].as_str().map(str::to_string);
        Purge {
            origin: field("origin"),
            path: field("path"),
            tag: field("tag"),
        }
    }

    /// Its JSON body.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "origin": self.origin, "path": self.path, "tag": self.tag }).to_string()
    }
}

/// The tags of an answer: the words of `Surrogate-Key` and the
/// comma-separated values of `Cache-Tag`.
fn tags(fields: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for v in fields
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        out.extend(v.split_ascii_whitespace().map(str::to_string));
    }
    for v in fields
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        out.extend(
            v.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(cc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_str(cc).expect("value"),
        );
        h
    }

    #[test]
    fn the_stale_windows_are_read_from_cache_control() {
        let s = Duration::from_secs;
        let w = |cc: &str| stale_windows(&fields(cc));
        assert_eq!(w("public, max-age=5"), (s(0), s(0)));
        assert_eq!(
            w("public, max-age=5, stale-while-revalidate=30, stale-if-error=600"),
            (s(30), s(600))
        );
        assert_eq!(w("Stale-While-Revalidate=\"7\""), (s(7), s(0)));
        assert_eq!(
            w("stale-while-revalidate=-1, stale-if-error=x"),
            (s(0), s(0))
        );
        assert_eq!(w("stale-while-revalidate"), (s(0), s(0)));
        for forbids in ["must-revalidate", "proxy-revalidate", "no-cache"] {
            assert_eq!(
                w(&format!(
                    "max-age=5, stale-while-revalidate=30, stale-if-error=60, {forbids}"
                )),
                (s(0), s(0)),
                "{forbids}"
            );
        }
    }
}
