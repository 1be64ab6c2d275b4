//! The last good answers of `public` fragments, for `stale_if_error`
//! (docs/SECURITY.md): kept by URL, bounded in bytes, served when a later fetch
//! of the same URL fails as a timeout, `unavailable` or `error` (an open
//! circuit included), while they are young enough.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use url::Url;

/// Most bytes of fragment bodies kept.
const MAX_BYTES: u64 = 64 << 20;

/// A kept answer: when it was fetched, its final URL and body.
type Kept = Arc<(Instant, Url, Bytes)>;

/// The last good answers, by the URL they were fetched at.
pub struct StaleCache(Cache<String, Kept>);

impl StaleCache {
    /// A cache whose entries live at most `ttl` (the `stale_if_error` in
    /// force at start; a shorter one set by a reload is checked per read).
    pub fn new(ttl: Duration) -> StaleCache {
        StaleCache(
            Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|k: &String, v: &Kept| {
                    u32::try_from(k.len() + v.1.as_str().len() + v.2.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl.max(Duration::from_secs(1)))
                .build(),
        )
    }

    /// Keeps a good answer.
    pub async fn keep(&self, key: &str, url: &Url, body: &Bytes) {
        let kept = Arc::new((Instant::now(), url.clone(), body.clone()));
        self.0.insert(key.to_string(), kept).await;
    }

    /// The answer kept for `key`, if at most `max_age` old.
    pub async fn get(&self, key: &str, max_age: Duration) -> Option<(Url, Bytes)> {
        let kept = self.0.get(key).await?;
        (kept.0.elapsed() <= max_age).then(|| (kept.1.clone(), kept.2.clone()))
    }
}
