//! HTTP/2 toward origins (docs/configuration.md, `http2`): pingora's HTTP/2
//! client (its handshake, `ConnectionRef` and `Http2Session`) on
//! connections made by its connector. Each server keeps its HTTP/2
//! connections here; a request takes a stream on one that has room, so a
//! page's fragments to one origin share a connection. A connection that is
//! closed or going away is never used again; one with no stream for a
//! minute is closed.

use crate::sync::lock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use pingora::connectors::http::v2::{handshake, ConnectionRef, H2HandshakeSettings};
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::Stream;

/// How long a connection without streams is kept.
const IDLE: Duration = Duration::from_secs(60);

/// Streams opened on one connection at most, whatever the origin allows.
pub const MAX_STREAMS: usize = 128;

/// How often a connection is pinged: one whose peer vanished without a
/// word (a host lost, a path cut) is closed when a ping goes unanswered for
/// pingora's 5 s, rather than taking every request to its deadline until
/// TCP gives up.
const PING_EVERY: Duration = Duration::from_secs(10);

/// What a server was found to speak over TLS with `http2 = "auto"`.
#[derive(Default)]
pub struct Spoken(AtomicU8);

impl Spoken {
    const H2: u8 = 1;
    const H1: u8 = 2;

    /// The server picked HTTP/2 by ALPN.
    pub fn h2(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::H2
    }

    /// The server picked HTTP/1.1 (or nothing) by ALPN.
    pub fn h1(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::H1
    }

    /// Records what the last new connection agreed on.
    pub fn learn(&self, h2: bool) {
        let v = if h2 { Self::H2 } else { Self::H1 };
        self.0.store(v, Ordering::Relaxed);
    }

    /// For the admin API: `h2`, `http/1.1` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::H2 => "h2",
            Self::H1 => "http/1.1",
            _ => "unknown",
        }
    }
}

/// One server's HTTP/2 connections.
#[derive(Default)]
pub struct H2Conns {
    conns: Mutex<Vec<(ConnectionRef, Instant)>>,
    /// Held while a new connection is made: a burst of requests to a server
    /// without a connection waits for one, rather than each making its own.
    pub connecting: tokio::sync::Mutex<()>,
}

impl H2Conns {
    /// A stream on a connection with room, if there is one. A connection
    /// that fails to open a stream is marked to go away.
    pub async fn stream(&self) -> Option<Http2Session> {
        // Each connection is tried at most once.
        for _ in 0..8 {
            let conn = {
                let mut conns = lock(&self.conns);
                conns.retain(|(c, _)| !c.is_closed() && !c.is_shutting_down());
                let found = conns.iter_mut().find(|(c, _)| c.more_streams_allowed());
                match found {
                    Some((c, used)) => {
                        *used = Instant::now();
                        c.clone()
                    }
                    None => return None,
                }
            };
            match conn.spawn_stream().await {
                Ok(Some(s)) => return Some(s),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 connection refused a stream; not used again");
                    conn.mark_shutdown();
                }
            }
        }
        None
    }

    /// Makes an HTTP/2 connection on `io` (pingora's handshake), keeps it,
    /// and opens its first stream.
    pub async fn add(&self, io: Stream, max_streams: usize) -> Result<Http2Session, String> {
        let mut settings = H2HandshakeSettings::new();
        settings.max_streams = max_streams.clamp(1, MAX_STREAMS);
        settings.ping_interval = Some(PING_EVERY);
        let conn = handshake(io, settings)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let first = conn
            .spawn_stream()
            .await
            .map_err(|e| format!("HTTP/2 stream: {e}"))?
            .ok_or("a new HTTP/2 connection had no stream free")?;
        lock(&self.conns).push((conn, Instant::now()));
        Ok(first)
    }

    /// Drops connections that closed, are going away, or had no stream for
    /// a minute (dropping the last reference closes it).
    pub fn sweep(&self) {
        lock(&self.conns).retain(|(c, used)| {
            let unused = c.is_idle() && used.elapsed() > IDLE;
            !(c.is_closed() || c.is_shutting_down() || unused)
        });
    }

    /// Connections kept now.
    pub fn count(&self) -> usize {
        lock(&self.conns).len()
    }
}

/// Whether a request field may go on an HTTP/2 stream (RFC 9113 §8.2.2:
/// no connection-specific fields; `Host` becomes `:authority`).
pub fn allowed(name: &HeaderName, value: &HeaderValue) -> bool {
    match name.as_str() {
        "host" | "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding"
        | "upgrade" => false,
        "te" => value.as_bytes().eq_ignore_ascii_case(b"trailers"),
        _ => true,
    }
}
