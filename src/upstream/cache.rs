//! The cache of `public` fragments (docs/configuration.md, caching): an
//! answer is kept when its origin allows a shared cache to keep it, by
//! RFC 9111 as the http-cache-semantics crate reads it (`max-age`,
//! `s-maxage`, `Expires`; never `no-store`, `private`, `Vary: *`, nor an
//! answer that sets a cookie; no heuristic freshness), in moka, bounded by
//! the bytes of the bodies kept (`[cache] max_size`). Only fresh copies are
//! served from it; a stale one is fetched again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use crate::aggregate::FetchResponse;

/// One kept answer.
struct Kept {
    policy: CachePolicy,
    answer: FetchResponse,
    /// `Surrogate-Key` and `Cache-Tag` values, for purges by tag.
    tags: Vec<String>,
    /// The origin's name and the path (and query) below its base.
    origin: String,
    path: String,
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
    /// Hits and lookups by origin (the map's hit ratio).
    by_origin: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl CacheCounts {
    /// The share of lookups of origin `name`'s fragments served from the
    /// cache, if there was any.
    pub fn hit_ratio(&self, name: &str) -> Option<f64> {
        let map = self.by_origin.lock().ok()?;
        let (hits, lookups) = map.get(name).copied()?;
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    fn count(&self, key: &str, hit: bool) {
        let origin = key.split('\n').next().unwrap_or_default();
        if let Ok(mut map) = self.by_origin.lock() {
            let e = map.entry(origin.to_string()).or_insert((0, 0));
            e.0 += u64::from(hit);
            e.1 += 1;
        }
    }
}

/// What the cache has for a fragment.
pub enum Lookup {
    /// A fresh answer.
    Fresh(Box<FetchResponse>),
    /// A stale copy with validators: these conditional fields ask the
    /// origin whether it still holds.
    Stale(Vec<(http::HeaderName, http::HeaderValue)>),
    /// Nothing usable.
    Miss,
}

/// The fragment cache.
pub struct FragmentCache {
    store: moka::future::Cache<String, Arc<Kept>>,
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
                u32::try_from(v.answer.body.len() + 256).unwrap_or(u32::MAX)
            })
            .build();
        FragmentCache {
            store,
            counts: CacheCounts::default(),
        }
    }

    /// The bytes held (bodies, and a little for each entry), once the
    /// store's pending bookkeeping is done.
    pub async fn bytes(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.weighted_size()
    }

    /// What the cache holds for `key`, asked with `headers`: a fresh
    /// answer, or the conditional fields (`If-None-Match`,
    /// `If-Modified-Since`) that revalidate a stale copy with validators.
    pub async fn lookup(
        &self,
        key: &str,
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
    ) -> Lookup {
        let kept = self.store.get(key).await;
        let found = match kept.zip(request(url, headers)) {
            None => Lookup::Miss,
            Some((k, req)) => match k.policy.before_request(&req, SystemTime::now()) {
                BeforeRequest::Fresh(_) => Lookup::Fresh(Box::new(k.answer.clone())),
                BeforeRequest::Stale { request, matches } if matches => {
                    let conditional: Vec<(http::HeaderName, http::HeaderValue)> = request
                        .headers
                        .iter()
                        .filter(|(n, _)| {
                            *n == http::header::IF_NONE_MATCH
                                || *n == http::header::IF_MODIFIED_SINCE
                        })
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                    if conditional.is_empty() {
                        Lookup::Miss
                    } else {
                        Lookup::Stale(conditional)
                    }
                }
                BeforeRequest::Stale { .. } => Lookup::Miss,
            },
        };
        self.counts.count(key, matches!(found, Lookup::Fresh(_)));
        let counter = if matches!(found, Lookup::Fresh(_)) {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The kept answer for `key`, refreshed by the origin's `304` (its new
    /// fields), if the copy is still there.
    pub async fn refreshed(
        &self,
        key: &str,
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
        not_modified: &FetchResponse,
    ) -> Option<FetchResponse> {
        let kept = self.store.get(key).await?;
        let req = request(url, headers)?;
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::NOT_MODIFIED;
        if let Some(fields) = &not_modified.headers {
            *res.headers_mut() = fields.clone();
        }
        let now = SystemTime::now();
        match kept.policy.after_response(&req, &res.into_parts().0, now) {
            http_cache_semantics::AfterResponse::NotModified(policy, _) => {
                let answer = kept.answer.clone();
                let fresh = Kept {
                    policy,
                    answer: answer.clone(),
                    tags: kept.tags.clone(),
                    origin: kept.origin.clone(),
                    path: kept.path.clone(),
                };
                self.store.insert(key.to_string(), Arc::new(fresh)).await;
                self.counts.revalidated.fetch_add(1, Ordering::Relaxed);
                Some(answer)
            }
            http_cache_semantics::AfterResponse::Modified(..) => None,
        }
    }

    /// Keeps `answer` under `key` if its origin allows a shared cache to.
    pub async fn keep(
        &self,
        key: String,
        (origin, path): (&str, &str),
        url: &url::Url,
        headers: &[(http::HeaderName, http::HeaderValue)],
        answer: &FetchResponse,
    ) {
        let Some(fields) = answer.headers.as_ref() else {
            return;
        };
        if answer.status != 200 || !answer.set_cookies.is_empty() {
            return;
        }
        let Some(req) = request(url, headers) else {
            return;
        };
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::OK;
        *res.headers_mut() = fields.clone();
        let now = SystemTime::now();
        let policy = CachePolicy::new_options(&req, &res.into_parts().0, now, options());
        if !policy.is_storable() || policy.time_to_live(now).is_zero() {
            return;
        }
        let tags = tags(fields);
        let kept = Kept {
            policy,
            answer: FetchResponse {
                headers: None,
                ..answer.clone()
            },
            tags,
            origin: origin.to_string(),
            path: path.to_string(),
        };
        self.store.insert(key, Arc::new(kept)).await;
    }

    /// Drops the kept answers of `origin` at `path` (every query variant
    /// when `path` has none), or those tagged `tag`. Returns how many.
    pub async fn purge(&self, origin: Option<&str>, path: Option<&str>, tag: Option<&str>) -> u64 {
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
