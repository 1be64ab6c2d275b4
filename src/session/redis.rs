//! The shared session store (`store = "redis"`), for several rain-edge
//! instances behind any load balancer. One hash per session,
//! `rain:s:{id}`: a marker field `.` and one field per cookie,
//! `{origin}\x1f{domain}\x1f{path}\x1f{name}` -> the cookie as JSON, so
//! that each `Set-Cookie` is its own write and concurrent requests of one user
//! merge instead of overwriting each other's jar. The hash expires after
//! `idle_timeout` without use. The connection is made lazily and re-made
//! after failures; every call has a deadline, so an outage costs a page
//! little time.

use std::time::Duration;

use async_trait::async_trait;
use cookie_store::{Cookie, CookieStore};
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;
use url::Url;

use super::id::SessionId;
use super::store::{SessionStore, StoreError};

/// Deadline of one call to Redis.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
const SEP: char = '\u{1f}';

/// Writes cookie changes only into a session that still exists (an expired
/// one must not come back as a half session), then restarts its idle timer.
/// ARGV: ttl seconds, then triples (op "s"/"d", field, value). A stored
/// value is `{seq} {json}`: `seq` comes from the session's counter field `#`
/// when the cookie is new and is kept when it replaces one, so that jars
/// list cookies in creation order (RFC 6265 §5.3 step 11.3, §5.4 step 2)
/// whatever order Redis returns the fields in.
const STORE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 3 do
  if ARGV[i] == 's' then
    local old = redis.call('HGET', KEYS[1], ARGV[i+1])
    local seq = old and string.match(old, '^(%d+) ')
    if not seq then seq = redis.call('HINCRBY', KEYS[1], '#', 1) end
    redis.call('HSET', KEYS[1], ARGV[i+1], seq .. ' ' .. ARGV[i+2])
  else redis.call('HDEL', KEYS[1], ARGV[i+1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// Sessions in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    ttl_secs: u64,
    script: redis::Script,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    /// A store at `url` (checked, not yet connected) whose sessions expire
    /// after `idle` without use.
    pub fn new(url: &str, idle: Duration) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            client: redis::Client::open(url).map_err(err)?,
            conn: Mutex::new(None),
            ttl_secs: idle.as_secs().max(1),
            script: redis::Script::new(STORE_SCRIPT),
        })
    }

    fn key(id: &SessionId) -> String {
        format!("rain:s:{}", id.as_str())
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(CALL_TIMEOUT, self.client.get_connection_manager())
            .await
            .map_err(|_| StoreError("connecting to Redis timed out".into()))?
            .map_err(err)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one call on the shared connection under [`CALL_TIMEOUT`]; after a
    /// failure the connection is dropped, so the next call reconnects.
    async fn call<T, Fut>(&self, f: impl FnOnce(ConnectionManager) -> Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.connection().await?;
        let result = match tokio::time::timeout(CALL_TIMEOUT, f(c)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => err(e),
            Err(_) => StoreError("Redis did not answer in time".into()),
        };
        self.forget().await;
        Err(result)
    }

    /// Drops the connection after a failure, so the next call reconnects.
    async fn forget(&self) {
        *self.conn.lock().await = None;
    }
}

fn field(origin: &str, c: &Cookie<'_>) -> String {
    format!(
        "{origin}{SEP}{}{SEP}{}{SEP}{}",
        String::from(&c.domain),
        String::from(&c.path),
        c.name()
    )
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = Self::key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, ".", "1")
            .ignore()
            .expire(&key, self.ttl_secs as i64)
            .ignore();
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EXPIRE");
        cmd.arg(Self::key(id)).arg(self.ttl_secs);
        let n: i64 = self
            .call(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    async fn jar(&self, id: &SessionId, origin: &str) -> Result<CookieStore, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(Self::key(id));
        let all: Vec<(String, String)> = self
            .call(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        let prefix = format!("{origin}{SEP}");
        let mut cookies: Vec<(u64, Cookie<'static>)> = all
            .iter()
            .filter(|(f, _)| f.starts_with(&prefix))
            .filter_map(|(_, value)| {
                // `{seq} {json}`; a bare JSON value (written before the
                // sequence existed) sorts first.
                let (seq, json) = match value.split_once(' ') {
                    Some((seq, json)) if !value.starts_with('{') => {
                        (seq.parse::<u64>().unwrap_or(0), json)
                    }
                    _ => (0, value.as_str()),
                };
                serde_json::from_str::<Cookie<'static>>(json)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "unreadable cookie in the session store, skipped")
                    })
                    .ok()
                    .map(|c| (seq, c))
            })
            .collect();
        cookies.sort_by_key(|(seq, _)| *seq);
        CookieStore::from_cookies(
            cookies.into_iter().map(|(_, c)| Ok::<_, StoreError>(c)),
            false,
        )
    }

    async fn store(
        &self,
        id: &SessionId,
        origin: &str,
        url: &Url,
        set_cookies: &[String],
    ) -> Result<(), StoreError> {
        let mut invocation = self.script.key(Self::key(id));
        invocation.arg(self.ttl_secs);
        let mut changes = 0;
        for sc in set_cookies {
            if super::store::refused(sc, url).is_some() {
                continue;
            }
            let Ok(c) = Cookie::parse(sc.as_str(), url) else {
                continue;
            };
            if !c.domain.matches(url) {
                continue;
            }
            if c.is_expired() {
                invocation.arg("d").arg(field(origin, &c)).arg("");
            } else {
                invocation
                    .arg("s")
                    .arg(field(origin, &c))
                    .arg(serde_json::to_string(&c).map_err(err)?);
            }
            changes += 1;
        }
        if changes == 0 {
            return Ok(());
        }
        self.call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await?;
        Ok(())
    }
}
