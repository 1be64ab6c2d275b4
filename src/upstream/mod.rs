//! Everything toward the origins: connections (pingora's connector) and
//! our pooled HTTP/1.1 exchange, what each origin receives, the circuit
//! breakers, identical public fetches shared, and the last good answers
//! kept for `stale_if_error`.

mod breaker;
mod cache;
mod client;
mod decode;
mod forward;
mod h1;
mod h2;
mod read;
mod servers;
mod stale;

pub use breaker::{Admit, Breaker};
pub use cache::{FragmentCache, Purge};
pub use client::{read_whole, Exchange, OriginClient, OriginRequest, Upgraded, Upload};
pub use decode::{decode_content, to_utf8, DecodeError};
pub use forward::{
    new_request_id, trusted, BrowserContext, Coalescer, RequestSource, SessionState,
};
pub use servers::{Server, ServerView};
pub use stale::StaleCache;
