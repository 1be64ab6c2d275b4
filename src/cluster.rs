//! The instances sharing a store, and their shared registry of origins
//! (docs/configuration.md, admin API): with `store = "redis"`, each
//! instance writes itself into Redis every few seconds (`/cluster`, the
//! map), and an origin registered or deleted through one instance's admin
//! API is kept in Redis (across reloads and restarts) and announced on a
//! Redis channel, so that every instance applies it within moments. Alone
//! (the memory store), an instance lists itself and keeps its registry in
//! memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Deadline of one call to Redis.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);
/// An instance not seen for this long is dropped from the cluster.
pub const GONE_AFTER: Duration = Duration::from_secs(30);
/// An instance not seen for this long is shown as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How often an instance writes itself.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

const NODES: &str = "rain:nodes";
const SEEN: &str = "rain:nodes:seen";
const ORIGINS: &str = "rain:origins";
/// The channel on which registry changes are announced (the payload is the
/// origin's name).
pub const CHANNEL: &str = "rain:origins:changed";
/// The channel on which cache purges are announced (the payload is the
/// purge's JSON body).
pub const PURGES: &str = "rain:purge";

/// One instance as the cluster sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Its `node_id`.
    pub node_id: String,
    /// Its admin listener, if any.
    pub admin: Option<String>,
    /// Its version.
    pub version: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it last wrote itself (RFC 3339).
    pub last_seen: String,
    /// Pages per second when it last wrote itself.
    pub pages_per_s: f64,
    /// Not seen for a while (shown grey until it is dropped).
    #[serde(default)]
    pub stale: bool,
}

/// The cluster as one instance sees it.
pub struct Cluster {
    client: Option<redis::Client>,
    conn: Mutex<Option<ConnectionManager>>,
    node_id: String,
    admin: Option<String>,
    started: SystemTime,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// RFC 3339 (UTC, seconds) of a time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Cluster {
    /// This instance, sharing `redis_url` with others (`None`: alone).
    pub fn new(redis_url: Option<&str>, node_id: &str, admin: Option<String>) -> Cluster {
        let client = redis_url.and_then(|u| match redis::Client::open(u) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: the Redis URL is not usable; this instance is alone");
                None
            }
        });
        Cluster {
            client,
            conn: Mutex::new(None),
            node_id: node_id.to_string(),
            admin,
            started: SystemTime::now(),
        }
    }

    /// Whether instances share a store.
    pub fn shared(&self) -> bool {
        self.client.is_some()
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let client = self.client.as_ref()?;
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Some(c.clone());
        }
        match tokio::time::timeout(CALL_TIMEOUT, client.get_connection_manager()).await {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Some(c)
            }
            _ => None,
        }
    }

    /// Runs `pipe` on the store within the call deadline; `false` without a
    /// store or when it failed.
    async fn run(&self, pipe: &redis::Pipeline) -> bool {
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
            .is_some()
    }

    /// One call on the shared connection within the call deadline; `None`
    /// without a store or when it failed.
    async fn call<T, Fut>(&self, f: impl FnOnce(ConnectionManager) -> Fut) -> Option<T>
    where
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.connection().await?;
        tokio::time::timeout(CALL_TIMEOUT, f(c)).await.ok()?.ok()
    }

    /// This instance as it is now.
    fn me(&self, pages_per_s: f64) -> Node {
        let now = SystemTime::now();
        Node {
            node_id: self.node_id.clone(),
            admin: self.admin.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: rfc3339(self.started),
            last_seen: rfc3339(now),
            pages_per_s,
            stale: false,
        }
    }

    /// Writes this instance into the store (and drops instances not seen
    /// for [`GONE_AFTER`]).
    pub async fn heartbeat(&self, pages_per_s: f64) {
        let Ok(json) = serde_json::to_string(&self.me(pages_per_s)) else {
            return;
        };
        let now = unix(SystemTime::now());
        let cutoff = now - GONE_AFTER.as_secs_f64();
        let mut pipe = redis::pipe();
        pipe.hset(NODES, &self.node_id, json)
            .ignore()
            .zadd(SEEN, &self.node_id, now)
            .ignore()
            .zrembyscore(SEEN, "-inf", cutoff)
            .ignore();
        if self.client.is_some() && !self.run(&pipe).await {
            tracing::debug!("cluster: heartbeat not written");
        }
    }

    /// Every instance sharing the store and seen within [`GONE_AFTER`]
    /// (alone: this one).
    pub async fn nodes(&self, pages_per_s: f64) -> Vec<Node> {
        let alone = || vec![self.me(pages_per_s)];
        let now = unix(SystemTime::now());
        let cutoff = now - GONE_AFTER.as_secs_f64();
        let seen: Option<Vec<(String, f64)>> = self
            .call(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(SEEN)
                    .arg(cutoff)
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await;
        let Some(seen) = seen.filter(|s| !s.is_empty()) else {
            return alone();
        };
        // Every node's entry in one round trip.
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        let entries: Vec<Option<String>> = self
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(NODES)
                    .arg(&ids)
                    .query_async(&mut c)
                    .await
            })
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for ((_, at), json) in seen.iter().zip(entries) {
            if let Some(mut node) = json.and_then(|j| serde_json::from_str::<Node>(&j).ok()) {
                node.stale = now - at > STALE_AFTER.as_secs_f64();
                out.push(node);
            }
        }
        if !out.iter().any(|n| n.node_id == self.node_id) {
            out.push(self.me(pages_per_s));
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Keeps an origin's table (JSON, as the admin API took it) in the
    /// shared registry and announces it. `false` when there is no store or
    /// it could not be written.
    pub async fn put_origin(&self, name: &str, table: &str) -> bool {
        let mut pipe = redis::pipe();
        pipe.hset(ORIGINS, name, table)
            .ignore()
            .publish(CHANNEL, name)
            .ignore();
        self.run(&pipe).await
    }

    /// Drops an origin from the shared registry and announces it.
    pub async fn delete_origin(&self, name: &str) -> bool {
        let mut pipe = redis::pipe();
        pipe.hdel(ORIGINS, name)
            .ignore()
            .publish(CHANNEL, name)
            .ignore();
        self.run(&pipe).await
    }

    /// The registry's table of origin `name` (JSON), `Ok(None)` when it
    /// has none.
    pub async fn origin(&self, name: &str) -> Result<Option<String>, ()> {
        self.call(|mut c| async move {
            redis::cmd("HGET")
                .arg(ORIGINS)
                .arg(name)
                .query_async(&mut c)
                .await
        })
        .await
        .ok_or(())
    }

    /// Every origin of the registry: (name, table as JSON).
    pub async fn origins(&self) -> Result<Vec<(String, String)>, ()> {
        self.call(
            |mut c| async move { redis::cmd("HGETALL").arg(ORIGINS).query_async(&mut c).await },
        )
        .await
        .ok_or(())
    }

    /// Announces a cache purge to every instance (its JSON body).
    pub async fn announce_purge(&self, body: &str) -> bool {
        let mut pipe = redis::pipe();
        pipe.publish(PURGES, body).ignore();
        self.run(&pipe).await
    }

    /// A stream of announcements on `channel`; reconnects after failures.
    /// `None` without a store.
    pub async fn listen(
        &self,
        channel: &'static str,
    ) -> Option<tokio::sync::mpsc::Receiver<String>> {
        let client = self.client.clone()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                if tx.is_closed() {
                    return;
                }
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Ok(text) = msg.get_payload::<String>() {
                                    if tx.send(text).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cluster: no subscription yet"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(rx)
    }

    /// A stream of announced registry changes (origin names); reconnects
    /// after failures. `None` without a store.
    pub async fn changes(&self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        self.listen(CHANNEL).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_600_000);
        assert_eq!(rfc3339(t), "2026-12-06T23:33:20Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
