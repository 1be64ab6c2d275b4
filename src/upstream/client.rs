//! The origin client: connections made by pingora's connector (its
//! `TransportConnector`: TCP now, TLS and HTTP/2 next), a keep-alive pool per
//! origin, a cap on concurrent connections per origin, and bounded, streamed
//! HTTP/1.1 exchanges. The wire format is in `h1.rs`.
//!
//! The exchange and the pool are our own, behind this seam, rather than
//! pingora's HTTP/1.1 client session and connection pool: its session
//! reserves a 64 KiB body buffer for every exchange (under thousands of slow
//! fragments in flight, most of the RSS: 294 MB against 92 MB in the memory
//! benchmark), and its pool has no per-origin cap to wait in line for
//! (`max_connections`). docs/ARCHITECTURE.md has the measurements. Here an
//! exchange holds no buffer while it waits, and what it reads is kept in a
//! buffer of exactly its size.
//!
//! A connection goes back to the pool only when its answer was read to the
//! end and both sides allow keep-alive; a failed, timed-out or abandoned
//! exchange closes its connection.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::{Stream, ALPN};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::decode::{decode_content, to_utf8};
use super::h1::{self, BodyDecoder, Decoded, Head, RequestBody, ResponseHead};
use super::h2;
use super::read::read_some;
use super::servers::{Attempt, InUse, Server, ServerView, Servers};
use crate::aggregate::{FetchFailure, FetchResponse};
use crate::config::{Config, Http2, Origin};
use crate::telemetry::escape_label;

/// One origin: its servers, its concurrency cap, and its breaker settings.
struct OriginConn {
    servers: Servers,
    limit: Arc<Semaphore>,
    /// Connections being made right now (see [`MAX_CONNECTING`]).
    connecting: Arc<Semaphore>,
    max: usize,
    /// `[fragments] breaker_failures` and `breaker_cooldown`, for each server.
    breaker: (u32, Duration),
    /// `[server] resolve_interval`, as its resolution task was started.
    resolve_interval: Duration,
    /// WebSockets open to it (`max_websockets`).
    websockets: Arc<Semaphore>,
}

/// Most connections to one origin being made at the same time. A burst of
/// fragments to a cold origin would otherwise open thousands at once: past
/// the origin's accept backlog they wait for SYN retransmits (a second or
/// more), and each pending connect holds pingora's connect state (~1.8 KB).
/// The rest wait their turn, or take a connection that came back.
const MAX_CONNECTING: usize = 512;

/// Pooled HTTP/1.1 client to the configured origins.
pub struct OriginClient {
    origins: std::sync::RwLock<HashMap<String, Arc<OriginConn>>>,
    connector: Arc<TransportConnector>,
    /// Where health checks and name resolution run.
    runtime: Option<tokio::runtime::Handle>,
}

/// One request to send.
pub struct OriginRequest<'a> {
    /// The origin.
    pub origin: &'a Origin,
    /// Method.
    pub method: &'a str,
    /// Path and query, percent-encoded.
    pub path_and_query: &'a str,
    /// Headers besides `Host`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest body accepted (raw and decoded).
    pub max_bytes: u64,
    /// Receives the answer's `Set-Cookie` values as soon as its head is read
    /// (before the body), so that cookies are recorded early.
    pub on_head: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
    /// The user's session id: with `balance = "session"`, the user's
    /// requests go to one server while it is up.
    pub affinity: Option<&'a str>,
    /// When the caller gives up on the exchange: dropped unfinished after
    /// it, the exchange counts as a timeout against its server.
    pub deadline: Duration,
    /// Whether the answer's fields are wanted (`FetchResponse::headers`):
    /// only for the fragment cache, and then only those of an answer a
    /// cache might keep (or of a `304`).
    pub keep_fields: bool,
}

impl<'a> OriginRequest<'a> {
    /// A browser's request passed on to `origin` (a resource, a call, a
    /// form, a WebSocket): to the user's server (`affinity`), within the
    /// origin's timeout, its answer's fields not kept for a cache.
    pub fn passed(
        origin: &'a Origin,
        method: &'a str,
        path_and_query: &'a str,
        headers: Vec<(HeaderName, HeaderValue)>,
        max_bytes: u64,
        affinity: Option<&'a str>,
    ) -> OriginRequest<'a> {
        OriginRequest {
            origin,
            method,
            path_and_query,
            headers,
            max_bytes,
            on_head: None,
            affinity,
            deadline: origin.timeout,
            keep_fields: false,
        }
    }
}

/// Where one exchange goes and what it costs while it runs.
struct Lease {
    server: InUse,
    attempt: Option<Attempt>,
    /// The place among the origin's `max_connections`.
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Settles the exchange with the server's breaker: `healthy` when it
    /// answered below 500.
    fn settle(&mut self, healthy: bool) {
        if let Some(a) = self.attempt.take() {
            a.finish(healthy);
        }
    }
}

impl OriginClient {
    /// A client for the origins of `cfg`. Health checks and name
    /// resolution run on the current tokio runtime.
    pub fn new(cfg: &Config) -> OriginClient {
        let client = OriginClient {
            origins: Default::default(),
            connector: Arc::new(TransportConnector::new(None)),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        client.configure(cfg);
        client
    }

    /// Every `every`, closes pooled connections that expired or that their
    /// origin closed (otherwise they would wait for the next request to that
    /// origin). Stops when the client is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let client = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(client) = client.upgrade() else {
                    return;
                };
                for o in client.all() {
                    for s in o.servers.all() {
                        s.sweep();
                    }
                }
            }
        });
    }

    fn all(&self) -> Vec<Arc<OriginConn>> {
        match self.origins.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Re-reads the origins of a new configuration. Names are resolved now;
    /// a server whose address and connection settings did not change keeps
    /// its idle connections, breaker and counters, and an origin whose cap
    /// did not change its count of connections in use.
    pub fn configure(&self, cfg: &Config) {
        let mut map = HashMap::new();
        let old = self.origins.read().map(|m| m.clone()).unwrap_or_default();
        let breaker = (
            cfg.fragments.breaker_failures,
            cfg.fragments.breaker_cooldown,
        );
        let resolve_interval = cfg.server.resolve_interval;
        for (name, o) in &cfg.origins {
            let before = old.get(name);
            // An origin that did not change keeps everything: its servers'
            // addresses, health, breakers and connections, and its tasks.
            if let Some(c) = before.filter(|c| {
                **c.servers.origin() == **o
                    && c.breaker == breaker
                    && c.resolve_interval == resolve_interval
            }) {
                // A reload is the operator's way to have names resolved
                // again now.
                c.servers.resolve_now();
                map.insert(name.clone(), c.clone());
                continue;
            }
            let same = before.filter(|c| c.max == o.max_connections);
            let conn = Arc::new(OriginConn {
                servers: Servers::new(o.clone(), before.map(|c| &c.servers)),
                limit: same
                    .map(|c| c.limit.clone())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(o.max_connections))),
                connecting: same
                    .map(|c| c.connecting.clone())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(MAX_CONNECTING))),
                max: o.max_connections,
                breaker,
                resolve_interval,
                websockets: before
                    .filter(|c| c.servers.origin().max_websockets == o.max_websockets)
                    .map(|c| c.websockets.clone())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(o.max_websockets))),
            });
            self.maintain(&conn, resolve_interval);
            map.insert(name.clone(), conn);
        }
        if let Ok(mut m) = self.origins.write() {
            *m = map;
        }
    }

    /// Starts an origin's health checks (at once, then every
    /// `health_interval`) and the resolution of its names every
    /// `resolve_interval`; both end when the origin is replaced or removed.
    fn maintain(&self, conn: &Arc<OriginConn>, resolve_interval: Duration) {
        let Some(rt) = &self.runtime else {
            if conn.servers.has_health_check() {
                tracing::warn!(origin = %conn.servers.origin().name, "no runtime: health checks do not run");
            }
            return;
        };
        if conn.servers.has_health_check() {
            let every = conn.servers.origin().health_interval;
            spawn_every(rt, conn, Duration::ZERO, every, |c| async move {
                c.servers.check_health().await;
            });
        }
        if conn.servers.has_names() && !resolve_interval.is_zero() {
            spawn_every(
                rt,
                conn,
                resolve_interval,
                resolve_interval,
                |c| async move {
                    c.servers.resolve_again().await;
                },
            );
        }
    }

    /// Every server of origin `name` and its state (empty if there is no
    /// such origin).
    pub fn servers(&self, name: &str) -> Vec<ServerView> {
        let conn = self.origins.read().ok().and_then(|m| m.get(name).cloned());
        conn.map(|c| c.servers.view()).unwrap_or_default()
    }

    /// The servers' metrics, in the Prometheus text format:
    /// `rain_server_up`, `rain_server_in_flight`, `rain_server_requests_total`,
    /// `rain_server_failures_total`, `rain_circuit_open` and
    /// `rain_circuit_rejected_total`, each by origin and server.
    pub fn render_metrics(&self, out: &mut String) {
        let mut rows: Vec<(String, ServerView)> = Vec::new();
        for o in self.all() {
            let name = o.servers.origin().name.clone();
            rows.extend(o.servers.view().into_iter().map(|v| (name.clone(), v)));
        }
        rows.sort_by(|a, b| (&a.0, a.1.addr).cmp(&(&b.0, b.1.addr)));
        type Value = fn(&ServerView) -> u64;
        let families: [(&str, &str, &str, Value); 6] = [
            ("rain_server_up", "Whether a server is in the rotation: its health check passes and its circuit is closed.", "gauge", |v| u64::from(v.up)),
            ("rain_server_in_flight", "Exchanges with a server right now.", "gauge", |v| v.server.in_flight.load(Ordering::Relaxed)),
            ("rain_server_requests_total", "Exchanges a server was chosen for.", "counter", |v| v.server.requests.load(Ordering::Relaxed)),
            ("rain_server_failures_total", "Exchanges with a server that timed out, could not connect, broke or answered 5xx.", "counter", |v| v.server.failures.load(Ordering::Relaxed)),
            ("rain_circuit_open", "Whether a server's circuit breaker is open (1) or closed (0).", "gauge", |v| u64::from(v.circuit_open)),
            ("rain_circuit_rejected_total", "Exchanges a server's open circuit turned away (to another server, or failed at once).", "counter", |v| v.server.breaker.rejected.load(Ordering::Relaxed)),
        ];
        for (metric, help, kind, value) in families {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            for (origin, v) in &rows {
                let _ = writeln!(
                    out,
                    "{metric}{{origin=\"{}\",server=\"{}\"}} {}",
                    escape_label(origin),
                    v.addr,
                    value(v)
                );
            }
        }
    }

    /// The origin and a place among its `max_connections` (waiting in line
    /// for one when all are taken).
    async fn slot(
        &self,
        origin: &str,
        upgrade: bool,
    ) -> Result<(Arc<OriginConn>, OwnedSemaphorePermit), FetchFailure> {
        let conn = self
            .origins
            .read()
            .ok()
            .and_then(|m| m.get(origin).cloned())
            .ok_or_else(|| {
                FetchFailure::Unavailable(format!("origin `{origin}` is not configured"))
            })?;
        // A WebSocket lasts: it takes a place of its own kind
        // (`max_websockets`), at once or not at all, never one the
        // origin's fragments wait for.
        if upgrade {
            let permit = conn.websockets.clone().try_acquire_owned().map_err(|_| {
                FetchFailure::Unavailable(format!(
                    "origin `{origin}` has max_websockets open already"
                ))
            })?;
            return Ok((conn, permit));
        }
        let permit = conn
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FetchFailure::Unavailable("origin client closed".into()))?;
        Ok((conn, permit))
    }

    /// A server for a request and a connection to it: the user's server (or
    /// the next one) whose circuit admits it; when a new connection to it
    /// cannot be made, once another server. The flag says the connection
    /// was pooled.
    async fn lease(
        &self,
        req: &OriginRequest<'_>,
        skip: &mut Option<SocketAddr>,
        started: Instant,
        h1_only: bool,
    ) -> Result<(Wire, bool, Lease), FetchFailure> {
        let name = &req.origin.name;
        let (origin, permit) = self.slot(name, h1_only).await?;
        loop {
            let (server, admit) = origin.servers.pick(req.affinity, *skip)?;
            let attempt =
                Attempt::new(server.clone(), admit, origin.breaker, started, req.deadline);
            match connect(&origin, &server, name, &self.connector, h1_only).await {
                Ok((wire, reused)) => {
                    let lease = Lease {
                        server: InUse::new(server),
                        attempt: Some(attempt),
                        _permit: permit,
                    };
                    return Ok((wire, reused, lease));
                }
                Err(e) => {
                    attempt.finish(false);
                    if skip.is_some() || origin.servers.len() < 2 {
                        return Err(e);
                    }
                    tracing::warn!(origin = %name, server = %server.addr, error = %e, "server unreachable; trying another");
                    *skip = Some(server.addr);
                }
            }
        }
    }

    /// Sends one request without a body and reads the answer's head; the
    /// body is then read through the returned [`Exchange`] (streamed), whose
    /// connection goes back to the pool only when read to the end. The
    /// server's breaker counts the exchange by its status.
    pub async fn open(&self, req: &OriginRequest<'_>) -> Result<Exchange, FetchFailure> {
        let mut ex = self.open_head(req).await?;
        ex.settle_by_status();
        Ok(ex)
    }

    /// [`OriginClient::open`], the exchange not yet settled with the breaker.
    async fn open_head(&self, req: &OriginRequest<'_>) -> Result<Exchange, FetchFailure> {
        let head = request_head(req, RequestBody::None)?;
        let to_head = req.method == "HEAD";
        let name = &req.origin.name;
        let mut skip = None;
        let started = Instant::now();
        // A pooled connection may have been closed by the origin meanwhile:
        // a failure on it before any answer is retried on a fresh connection
        // (these requests have no body, and are GET or HEAD).
        for tries in 1.. {
            let (wire, reused, mut lease) = self.lease(req, &mut skip, started, false).await?;
            let sent = match wire {
                Wire::H1(mut conn) => {
                    let sent = match conn.io.write_all(&head).await {
                        Ok(()) => conn.read_head(to_head).await,
                        Err(e) => Err(WireError::Io(e)),
                    };
                    match sent {
                        Ok(answer) => return Ok(Exchange::h1(conn, answer, lease)),
                        Err(e) => (e, reused && conn.nothing_read),
                    }
                }
                Wire::H2(mut stream) => {
                    let sent = async {
                        let head = request_h2(req, RequestBody::None)?;
                        stream.write_request_header(head, true).map_err(h2_sent)?;
                        stream.read_response_header().await.map_err(h2_read)
                    };
                    match sent.await {
                        Ok(()) => return Exchange::h2(stream, lease),
                        // A stream on a kept connection that the origin was
                        // closing: tried again on another.
                        Err(e) => (e, reused && tries < 3),
                    }
                }
            };
            match sent {
                (WireError::Io(e), true) => {
                    // Not the server's failure: the attempt counts nothing.
                    lease.attempt = None;
                    tracing::debug!(origin = %name, error = %e, "stale pooled connection, retrying");
                }
                (e @ WireError::Build(_), _) => {
                    // Ours, not the server's.
                    lease.attempt = None;
                    return Err(e.into_failure(name));
                }
                (e, _) => {
                    lease.settle(false);
                    return Err(e.into_failure(name));
                }
            }
        }
        Err(FetchFailure::Unavailable(format!(
            "no answer from `{name}`"
        )))
    }

    /// Starts a request whose body is streamed: its head goes now (with
    /// `Content-Length` when `length` is known, chunked otherwise over
    /// HTTP/1.1); the body follows through [`Upload::write`], then
    /// [`Upload::finish`] reads the answer's head. Only the head is retried
    /// on a stale pooled connection, never once any of the body was sent.
    pub async fn open_upload(
        &self,
        req: &OriginRequest<'_>,
        length: Option<u64>,
    ) -> Result<Upload, FetchFailure> {
        let framing = length.map_or(RequestBody::Chunked, RequestBody::Length);
        let head = request_head(req, framing)?;
        let mut skip = None;
        let mut attempts = 0;
        let started = Instant::now();
        loop {
            attempts += 1;
            let (wire, reused, mut lease) = self.lease(req, &mut skip, started, false).await?;
            let failed = match wire {
                Wire::H1(mut conn) => match conn.io.write_all(&head).await {
                    Ok(()) => {
                        return Ok(Upload {
                            wire: UploadWire::H1 {
                                conn,
                                chunked: framing == RequestBody::Chunked,
                            },
                            lease,
                        })
                    }
                    Err(e) => WireError::Io(e),
                },
                Wire::H2(mut stream) => {
                    let sent = request_h2(req, framing)
                        .and_then(|h| stream.write_request_header(h, false).map_err(h2_sent));
                    match sent {
                        Ok(()) => {
                            return Ok(Upload {
                                wire: UploadWire::H2(stream),
                                lease,
                            })
                        }
                        Err(e) => e,
                    }
                }
            };
            match failed {
                WireError::Io(e) if reused && attempts < 3 => {
                    lease.attempt = None;
                    tracing::debug!(origin = %req.origin.name, error = %e, "stale pooled connection, retrying");
                }
                e => {
                    lease.settle(false);
                    return Err(e.into_failure(&req.origin.name));
                }
            }
        }
    }

    /// Sends an upgrade request (a WebSocket handshake: the caller's fields
    /// carry `Upgrade` and the `Sec-WebSocket-*` ones) over HTTP/1.1 on a
    /// connection of its own, and reads the answer: `Ok(Upgraded)` when the
    /// origin switched protocols (the connection is then the caller's, and
    /// keeps its place among the origin's `max_connections` until dropped),
    /// `Err(Exchange)` with any other answer.
    pub async fn open_upgrade(
        &self,
        req: &OriginRequest<'_>,
    ) -> Result<Result<Upgraded, Exchange>, FetchFailure> {
        let head = request_head(req, RequestBody::Upgrade)?;
        let name = &req.origin.name;
        let mut skip = None;
        let started = Instant::now();
        loop {
            let (wire, reused, mut lease) = self.lease(req, &mut skip, started, true).await?;
            let Wire::H1(mut conn) = wire else {
                lease.attempt = None;
                return Err(FetchFailure::Error("an upgrade needs HTTP/1.1".into()));
            };
            let answered = match conn.io.write_all(&head).await {
                Ok(()) => conn.read_answer(false, true).await,
                Err(e) => Err(WireError::Io(e)),
            };
            match answered {
                Ok(Ok(fields)) => {
                    lease.settle(true);
                    let leftover = std::mem::take(&mut conn.buf).freeze();
                    return Ok(Ok(Upgraded {
                        headers: fields,
                        io: conn.io,
                        leftover,
                        _lease: lease,
                    }));
                }
                Ok(Err(answer)) => {
                    let mut ex = Exchange::h1(conn, answer, lease);
                    ex.settle_by_status();
                    return Ok(Err(ex));
                }
                Err(WireError::Io(e)) if reused && conn.nothing_read => {
                    lease.attempt = None;
                    tracing::debug!(origin = %name, error = %e, "stale pooled connection, retrying");
                }
                Err(e) => {
                    lease.settle(false);
                    return Err(e.into_failure(name));
                }
            }
        }
    }

    /// Sends one request and reads the whole answer (bounded), decoded to
    /// UTF-8. The server's breaker counts it once the body is in.
    pub async fn send(&self, mut req: OriginRequest<'_>) -> Result<FetchResponse, FetchFailure> {
        let mut ex = self.open_head(&req).await?;
        // The header list is written out: freed now rather than held while
        // the request waits for its answer.
        req.headers = Vec::new();
        let status = ex.status();
        let location = ex.header_str("location");
        let content_type = ex.header_str("content-type");
        let content_encoding = ex.header_str("content-encoding");
        let set_cookies = ex.set_cookies();
        let links: Vec<String> = ex
            .headers()
            .map(|h| {
                h.get_all(http::header::LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let storable = !ex.header_str("cache-control").is_some_and(|cc| {
            crate::http::cache_directives(&cc).any(|(d, _)| {
                d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
            })
        });
        if let Some(tx) = req.on_head.take() {
            let _ = tx.send(set_cookies.clone());
        }
        let attempt = ex.lease.attempt.take();
        let server = Some(ex.lease.server.server().addr);
        let headers = ex
            .headers()
            .filter(|_| req.keep_fields)
            // Only an answer a cache might keep (or a 304 for one): most
            // answers say `no-store` or nothing, and pay no copy.
            .filter(|h| {
                status == 304
                    || (storable
                        && (h.contains_key(http::header::CACHE_CONTROL)
                            || h.contains_key(http::header::EXPIRES)))
            })
            .cloned();
        // Boxed: the body is read once the answer has come, and its state
        // inline would size every request's future while it waits.
        let raw = Box::pin(read_whole(ex, req.max_bytes)).await;
        if let Some(a) = attempt {
            a.finish(raw.is_ok() && status < 500);
        }
        let decoded = decode_content(raw?, content_encoding.as_deref(), req.max_bytes)
            .map_err(|e| FetchFailure::Error(e.to_string()))?;
        let body = to_utf8(decoded, content_type.as_deref());
        Ok(FetchResponse {
            status,
            location,
            set_cookies,
            body,
            storable,
            links,
            server,
            headers,
            rewritten: None,
        })
    }
}

/// Runs `job` on `conn` after `first`, then every `every`, until the origin
/// is replaced or removed.
fn spawn_every<F, Fut>(
    rt: &tokio::runtime::Handle,
    conn: &Arc<OriginConn>,
    first: Duration,
    every: Duration,
    job: F,
) where
    F: Fn(Arc<OriginConn>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak: Weak<OriginConn> = Arc::downgrade(conn);
    rt.spawn(async move {
        tokio::time::sleep(first).await;
        loop {
            let Some(c) = weak.upgrade() else {
                return;
            };
            job(c).await;
            tokio::time::sleep(every).await;
        }
    });
}

/// Reads an answer's body whole, raw (not decoded), at most `max` bytes (a
/// declared length over it is refused at once), and gives the connection
/// back. Most answers arrive in one piece: it is kept as it is, not copied.
pub async fn read_whole(mut ex: Exchange, max: u64) -> Result<Bytes, FetchFailure> {
    let too_large = || FetchFailure::Error(format!("body over the {max} byte limit"));
    if ex.declared_length().is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total = 0u64;
    while let Some(chunk) = ex.chunk().await? {
        total += chunk.len() as u64;
        if total > max {
            return Err(too_large());
        }
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    ex.finish();
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    })
}

fn request_head(req: &OriginRequest<'_>, body: RequestBody) -> Result<Vec<u8>, FetchFailure> {
    h1::request_head(
        req.method,
        req.path_and_query,
        &req.origin.authority,
        &req.headers,
        body,
    )
    .map_err(|e| FetchFailure::Error(format!("cannot build the request: {e}")))
}

/// The connection an exchange runs on.
enum Wire {
    /// An HTTP/1.1 connection of its own.
    H1(Conn),
    /// A stream on a shared HTTP/2 connection.
    H2(Box<Http2Session>),
}

/// A connection to `server`: a stream on one of its HTTP/2 connections
/// with room, or an idle HTTP/1.1 one, else a new connection (bounded by
/// the origin's timeout) whose TLS ALPN, or `http2 = "always"`, says which.
/// The flag says it was kept from before.
async fn connect(
    origin: &OriginConn,
    server: &Server,
    name: &str,
    connector: &TransportConnector,
    h1_only: bool,
) -> Result<(Wire, bool), FetchFailure> {
    let o = origin.servers.origin();
    let tls = o.tls.is_some();
    if h1_only && o.http2 == Http2::Always {
        return Err(FetchFailure::Unavailable(format!(
            "`{name}` speaks only HTTP/2 (http2 = \"always\"): no HTTP/1.1 upgrade"
        )));
    }
    let try_h2 = !h1_only
        && match o.http2 {
            Http2::Always => true,
            Http2::Auto => tls && !server.spoken.h1(),
            Http2::Never => false,
        };
    let h1_ok = o.http2 != Http2::Always;
    if try_h2 {
        if let Some(s) = server.h2.stream().await {
            return Ok((Wire::H2(Box::new(s)), true));
        }
    }
    if h1_ok {
        if let Some(io) = server.take_idle() {
            return Ok((Wire::H1(Conn::new(io)), true));
        }
    }
    // A server that may speak HTTP/2 gets one new connection at a time,
    // which the requests waiting here then share; once it is known to pick
    // HTTP/1.1, they go on at once.
    let mut _one = None;
    if try_h2 {
        let turn = server.h2.connecting.lock().await;
        if o.http2 == Http2::Always || !server.spoken.h1() {
            _one = Some(turn);
            // One that got room while this waited its turn.
            if let Some(s) = server.h2.stream().await {
                return Ok((Wire::H2(Box::new(s)), true));
            }
        }
    }
    // Taken only now: while one server's first HTTP/2 connection is being
    // made, the others' connects do not wait behind the requests queued
    // for it.
    let Ok(_connecting) = origin.connecting.acquire().await else {
        return Err(FetchFailure::Unavailable("origin client closed".into()));
    };
    if h1_ok {
        if let Some(io) = server.take_idle() {
            return Ok((Wire::H1(Conn::new(io)), true));
        }
    }
    let failed = |e: &dyn std::fmt::Display| {
        FetchFailure::Unavailable(format!("connecting to `{name}` at {}: {e}", server.addr))
    };
    // pingora's connector: the connect timeout is the peer's; the socket
    // comes with TCP_NODELAY and no user-space buffers. A TLS handshake
    // that fails (a certificate refused, no client certificate offered) is
    // the fragment's `unavailable`, with pingora's reason. Boxed: a new
    // connection is the rare case, and its future inline would make every
    // exchange's state larger while it waits for its answer.
    let peer = if h1_only {
        &server.peer_h1
    } else {
        &server.peer
    };
    let io = Box::pin(connector.new_stream(peer))
        .await
        .map_err(|e| failed(&e))?;
    let h2 = match io.selected_alpn_proto() {
        Some(ALPN::H2) => true,
        _ => o.http2 == Http2::Always && !tls,
    };
    if tls && o.http2 == Http2::Auto && !h1_only {
        server.spoken.learn(h2);
    }
    if !h2 && !h1_ok {
        return Err(failed(
            &"the origin did not agree to HTTP/2 by ALPN (http2 = \"always\")",
        ));
    }
    if h2 {
        if !tls {
            server.spoken.learn(true);
        }
        let s = Box::pin(server.h2.add(io, origin.max))
            .await
            .map_err(|e| failed(&e))?;
        return Ok((Wire::H2(Box::new(s)), false));
    }
    Ok((Wire::H1(Conn::new(io)), false))
}

/// The request head of `req` for an HTTP/2 stream: `:authority` from the
/// origin's url, `:scheme` its scheme, connection-specific fields left out.
fn request_h2(req: &OriginRequest<'_>, body: RequestBody) -> Result<Box<RequestHeader>, WireError> {
    let bad = |e: &dyn std::fmt::Display| WireError::Build(e.to_string());
    let mut head = RequestHeader::build(
        req.method,
        req.path_and_query.as_bytes(),
        Some(req.headers.len() + 1),
    )
    .map_err(|e| bad(&e))?;
    let scheme = if req.origin.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(req.origin.authority.as_str())
        .path_and_query(req.path_and_query)
        .build()
        .map_err(|e| bad(&e))?;
    head.set_uri(uri);
    for (name, value) in &req.headers {
        if h2::allowed(name, value) && name != http::header::CONTENT_LENGTH {
            head.append_header(name.clone(), value.clone())
                .map_err(|e| bad(&e))?;
        }
    }
    if let RequestBody::Length(n) = body {
        head.insert_header(http::header::CONTENT_LENGTH, n.to_string())
            .map_err(|e| bad(&e))?;
    }
    Ok(Box::new(head))
}

/// A failure to send a request on an HTTP/2 stream: a head pingora
/// refuses is ours (`Build`); anything else is the connection's (`Io`).
fn h2_sent(e: Box<pingora::Error>) -> WireError {
    match e.etype() {
        pingora::ErrorType::InvalidHTTPHeader => WireError::Build(e.to_string()),
        _ => WireError::Io(std::io::Error::other(e.to_string())),
    }
}

/// A failure while an HTTP/2 answer is read: an answer head that breaks
/// the rules is the origin's malformed answer; anything else the
/// connection's or the stream's (`Io`).
fn h2_read(e: Box<pingora::Error>) -> WireError {
    match e.etype() {
        pingora::ErrorType::InvalidHTTPHeader => WireError::Malformed(e.to_string()),
        _ => WireError::Io(std::io::Error::other(e.to_string())),
    }
}

/// Why an exchange failed on the wire.
enum WireError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The origin broke HTTP.
    Protocol(h1::H1Error),
    /// The request could not be written as HTTP/2.
    Build(String),
    /// The origin's HTTP/2 answer broke the rules.
    Malformed(String),
}

impl WireError {
    /// A closed, reset or refused connection is `unavailable`; a malformed
    /// answer is `error`.
    fn into_failure(self, origin: &str) -> FetchFailure {
        match self {
            WireError::Io(e) => {
                FetchFailure::Unavailable(format!("no answer from `{origin}`: {e}"))
            }
            WireError::Protocol(e) => {
                FetchFailure::Error(format!("malformed answer from `{origin}`: {e}"))
            }
            WireError::Build(e) => FetchFailure::Error(format!("cannot build the request: {e}")),
            WireError::Malformed(e) => {
                FetchFailure::Error(format!("malformed answer from `{origin}`: {e}"))
            }
        }
    }
}

/// A connection and the bytes read from it but not yet used.
struct Conn {
    io: Stream,
    buf: BytesMut,
    eof: bool,
    nothing_read: bool,
}

impl Conn {
    fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            eof: false,
            nothing_read: true,
        }
    }

    /// Reads what the socket has (see [`read_some`]).
    async fn fill(&mut self) -> std::io::Result<()> {
        let n = read_some(&mut self.io, &mut self.buf).await?;
        if n == 0 {
            self.eof = true;
        } else {
            self.nothing_read = false;
        }
        Ok(())
    }

    /// Reads an answer head: with `switch` (an upgrade request), a `101`'s
    /// fields as `Ok(Ok(..))`; otherwise, and for any other status, the
    /// final head as `Ok(Err(..))` (other interim answers are skipped).
    async fn read_answer(
        &mut self,
        to_head: bool,
        switch: bool,
    ) -> Result<Result<http::HeaderMap, ResponseHead>, WireError> {
        loop {
            if let Some(n) = h1::head_len(&self.buf).map_err(WireError::Protocol)? {
                let head = self.buf.split_to(n).freeze();
                if switch {
                    if let Some(fields) = h1::parse_switch(&head).map_err(WireError::Protocol)? {
                        return Ok(Ok(fields));
                    }
                }
                match h1::parse_response_head(&head, to_head).map_err(WireError::Protocol)? {
                    Head::Final(head) => return Ok(Err(head)),
                    Head::Interim => continue,
                }
            }
            if self.eof {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete answer head",
                )));
            }
            self.fill().await.map_err(WireError::Io)?;
        }
    }

    /// Reads up to and including the final response head (interim 1xx
    /// answers are skipped).
    async fn read_head(&mut self, to_head: bool) -> Result<ResponseHead, WireError> {
        match self.read_answer(to_head, false).await? {
            Err(head) => Ok(head),
            Ok(_) => Err(WireError::Protocol(h1::H1Error::ProtocolSwitch)),
        }
    }
}

/// An origin connection that switched protocols (`101`): its answer's
/// fields, the connection, and what was read past the head.
pub struct Upgraded {
    /// The `101` answer's fields (`Upgrade`, `Sec-WebSocket-Accept`...).
    pub headers: http::HeaderMap,
    /// The connection, now the new protocol's.
    pub io: Stream,
    /// Bytes the origin sent right after its head.
    pub leftover: Bytes,
    /// Its place among the origin's `max_connections`.
    _lease: Lease,
}

/// A request to an origin whose body is being streamed.
pub struct Upload {
    wire: UploadWire,
    lease: Lease,
}

/// Where an upload's body goes.
enum UploadWire {
    H1 { conn: Conn, chunked: bool },
    H2(Box<Http2Session>),
}

impl Upload {
    /// Sends the next piece of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchFailure> {
        if chunk.is_empty() {
            return Ok(());
        }
        let broke =
            |e: &dyn std::fmt::Display| FetchFailure::Unavailable(format!("sending the body: {e}"));
        let sent = match &mut self.wire {
            UploadWire::H1 { conn, chunked } => {
                let io = &mut conn.io;
                let sent = async {
                    if *chunked {
                        io.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await?;
                        io.write_all(chunk).await?;
                        io.write_all(b"\r\n").await
                    } else {
                        io.write_all(chunk).await
                    }
                };
                sent.await.map_err(|e| broke(&e))
            }
            UploadWire::H2(stream) => stream
                .write_request_body(Bytes::copy_from_slice(chunk), false)
                .await
                .map_err(|e| broke(&e)),
        };
        if sent.is_err() {
            // The server broke off the body: its failure.
            self.lease.settle(false);
        }
        sent
    }

    /// Ends the body and reads the answer's head.
    pub async fn finish(mut self) -> Result<Exchange, FetchFailure> {
        let broke =
            |e: &dyn std::fmt::Display| FetchFailure::Unavailable(format!("sending the body: {e}"));
        let ex = match self.wire {
            UploadWire::H1 { mut conn, chunked } => {
                if chunked {
                    if let Err(e) = conn.io.write_all(b"0\r\n\r\n").await {
                        self.lease.settle(false);
                        return Err(broke(&e));
                    }
                }
                match conn.read_head(false).await {
                    Ok(head) => Exchange::h1(conn, head, self.lease),
                    Err(e) => {
                        self.lease.settle(false);
                        return Err(e.into_failure("origin"));
                    }
                }
            }
            UploadWire::H2(mut stream) => {
                let answered = match stream.finish_request_body() {
                    Ok(()) => stream.read_response_header().await.map_err(h2_read),
                    Err(e) => Err(h2_sent(e)),
                };
                if let Err(e) = answered {
                    self.lease.settle(false);
                    return Err(e.into_failure("origin"));
                }
                Exchange::h2(stream, self.lease)?
            }
        };
        let mut ex = ex;
        ex.settle_by_status();
        Ok(ex)
    }
}

/// One exchange with an origin whose head has been read.
pub struct Exchange {
    reader: Reader,
    status: u16,
    headers: http::HeaderMap,
    lease: Lease,
}

/// Where an exchange's body comes from.
enum Reader {
    H1 {
        conn: Conn,
        body: BodyDecoder,
        keep_alive: bool,
    },
    H2(Box<Http2Session>),
}

impl Exchange {
    /// Counts the exchange with its server's breaker by its status: a 5xx
    /// is a failure, any other answer a success.
    fn settle_by_status(&mut self) {
        let healthy = self.status < 500;
        self.lease.settle(healthy);
    }

    fn h1(conn: Conn, head: ResponseHead, lease: Lease) -> Exchange {
        Exchange {
            status: head.status,
            headers: head.headers,
            reader: Reader::H1 {
                conn,
                body: head.body,
                keep_alive: head.keep_alive,
            },
            lease,
        }
    }

    /// An HTTP/2 stream whose answer head was read.
    fn h2(stream: Box<Http2Session>, mut lease: Lease) -> Result<Exchange, FetchFailure> {
        let Some(head) = stream.response_header() else {
            lease.settle(false);
            return Err(FetchFailure::Error(
                "an HTTP/2 answer without a head".into(),
            ));
        };
        Ok(Exchange {
            status: head.status.as_u16(),
            headers: head.headers.clone(),
            reader: Reader::H2(stream),
            lease,
        })
    }

    /// The body's length, when the answer declared it.
    fn declared_length(&self) -> Option<u64> {
        match &self.reader {
            Reader::H1 {
                body: BodyDecoder::Length(n),
                ..
            } => Some(*n),
            Reader::H1 { .. } => None,
            Reader::H2(_) => self
                .header_str("content-length")
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// The answer's status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The answer's header fields.
    pub fn headers(&self) -> Option<&http::HeaderMap> {
        Some(&self.headers)
    }

    /// The first value of header `name`, if it is text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.headers.get(name)?.to_str().ok().map(str::to_string)
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    /// The next piece of the body, as sent (no content decoding); `None` at
    /// the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchFailure> {
        let broke =
            |e: &dyn std::fmt::Display| FetchFailure::Error(format!("body broken off: {e}"));
        match &mut self.reader {
            Reader::H1 { conn, body, .. } => loop {
                let step = body
                    .decode(&mut conn.buf, conn.eof)
                    .map_err(|e| broke(&e))?;
                match step {
                    Decoded::Data(b) => return Ok(Some(b)),
                    Decoded::End => return Ok(None),
                    Decoded::NeedMore => conn.fill().await.map_err(|e| broke(&e))?,
                }
            },
            Reader::H2(stream) => stream.read_response_body().await.map_err(|e| broke(&e)),
        }
    }

    /// Gives the connection back to the pool if its answer was read whole,
    /// nothing followed it, and both sides keep it alive; otherwise it is
    /// closed. An HTTP/2 stream ends (reset if its answer was not read
    /// whole); its connection stays for the next.
    pub fn finish(self) {
        let Exchange { reader, lease, .. } = self;
        if let Reader::H1 {
            conn,
            body,
            keep_alive,
        } = reader
        {
            let whole = matches!(body, BodyDecoder::Done | BodyDecoder::Length(0));
            if keep_alive && whole && conn.buf.is_empty() && !conn.eof {
                lease.server.server().put_idle(conn.io);
            }
        }
    }
}
