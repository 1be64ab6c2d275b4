//! The user's side of rain-edge: its own session (one `rain_sid` cookie,
//! never adopted when unknown), one hidden cookie jar per origin inside it
//! (RFC 6265, via `cookie_store`), the stores that keep sessions (memory or
//! Redis), and which of the browser's own cookies may go to an origin.
//! No HTTP serving here.

mod forward;
mod id;
mod memory;
mod page;
mod redis;
mod store;

use std::sync::Arc;

pub use self::forward::forwarded_cookies;
pub use self::id::{session_cookie, set_cookie_header, SessionId};
pub use self::memory::MemoryStore;
pub use self::page::{GateGuard, PageSession, Turn};
pub use self::redis::RedisStore;
pub use self::store::{apply_set_cookies, cookie_header_value, refused, SessionStore, StoreError};

use crate::config::SessionConfig;

/// The store that `[session]` asks for.
pub fn open_store(cfg: &SessionConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match cfg.store.as_str() {
        "redis" => Arc::new(RedisStore::new(&cfg.redis_url, cfg.idle_timeout)?),
        _ => Arc::new(MemoryStore::new(cfg.idle_timeout)),
    })
}
