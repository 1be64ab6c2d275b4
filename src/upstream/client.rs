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

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::connectors::TransportConnector;
use pingora::protocols::{Stream, UniqueID};
use pingora::upstreams::peer::HttpPeer;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::decode::{decode_content, to_utf8};
use super::h1::{self, BodyDecoder, Decoded, Head, RequestBody, ResponseHead};
use super::read::read_some;
use crate::aggregate::{FetchFailure, FetchResponse};
use crate::config::{Config, Origin};

/// How long an idle pooled connection to an origin is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One origin's address, its concurrency cap and its idle connections.
struct OriginConn {
    addr: Result<SocketAddr, String>,
    /// What pingora's connector connects to (from `addr`).
    peer: Option<HttpPeer>,
    connector: Arc<TransportConnector>,
    limit: Arc<Semaphore>,
    /// Connections being made right now (see [`MAX_CONNECTING`]).
    connecting: Arc<Semaphore>,
    max: usize,
    idle: Arc<Mutex<VecDeque<(Stream, Instant)>>>,
}

/// Most connections to one origin being made at the same time. A burst of
/// fragments to a cold origin would otherwise open thousands at once: past
/// the origin's accept backlog they wait for SYN retransmits (a second or
/// more), and each pending connect holds pingora's connect state (~1.8 KB).
/// The rest wait their turn, or take a connection that came back.
const MAX_CONNECTING: usize = 512;

impl OriginConn {
    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<Stream> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((_, since)) = idle.front() {
            if since.elapsed() < POOL_IDLE {
                break;
            }
            idle.pop_front();
        }
        while let Some((io, _)) = idle.pop_back() {
            if still_open(&io) {
                return Some(io);
            }
        }
        None
    }

    /// Closes the idle connections that expired or that the origin closed.
    fn sweep(&self) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|(io, since)| since.elapsed() < POOL_IDLE && still_open(io));
    }

    fn put_idle(&self, io: Stream) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max {
                idle.push_back((io, Instant::now()));
            }
        }
    }
}

/// Whether an idle connection may carry another request. An idle connection
/// has nothing to say: anything to read (its end, or bytes) means the origin
/// closed it or broke the protocol. One non-blocking peek at the socket.
fn still_open(io: &Stream) -> bool {
    let fd = UniqueID::id(io.as_ref());
    let mut byte = 0u8;
    // SAFETY: `fd` is the open socket `io` owns for as long as this call;
    // the peek reads at most one byte into `byte` and consumes nothing.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Pooled HTTP/1.1 client to the configured origins.
pub struct OriginClient {
    origins: std::sync::RwLock<HashMap<String, Arc<OriginConn>>>,
    connector: Arc<TransportConnector>,
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
}

impl OriginClient {
    /// A client for the origins of `cfg`.
    pub fn new(cfg: &Config) -> OriginClient {
        let client = OriginClient {
            origins: Default::default(),
            connector: Arc::new(TransportConnector::new(None)),
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
                let origins: Vec<Arc<OriginConn>> = match client.origins.read() {
                    Ok(m) => m.values().cloned().collect(),
                    Err(_) => return,
                };
                for o in origins {
                    o.sweep();
                }
            }
        });
    }

    /// Re-reads the origins of a new configuration. Names are resolved now;
    /// an origin whose address and cap did not change keeps its idle
    /// connections and its count of connections in use.
    pub fn configure(&self, cfg: &Config) {
        let mut map = HashMap::new();
        let old = self.origins.read().map(|m| m.clone()).unwrap_or_default();
        for (name, o) in &cfg.origins {
            let addr = match (o.host.as_str(), o.port).to_socket_addrs() {
                Ok(mut addrs) => addrs
                    .next()
                    .ok_or_else(|| format!("`{}` resolves to no address", o.host)),
                Err(e) => Err(format!("cannot resolve `{}`: {e}", o.host)),
            };
            if let Err(e) = &addr {
                tracing::warn!(origin = %name, error = %e, "origin address not resolved; its fragments fail as unavailable");
            }
            let same = old
                .get(name)
                .filter(|c| c.max == o.max_connections && c.addr == addr);
            let peer = addr.as_ref().ok().map(|a| origin_peer(*a, o));
            map.insert(
                name.clone(),
                Arc::new(OriginConn {
                    addr,
                    peer,
                    connector: self.connector.clone(),
                    limit: same
                        .map(|c| c.limit.clone())
                        .unwrap_or_else(|| Arc::new(Semaphore::new(o.max_connections))),
                    connecting: same
                        .map(|c| c.connecting.clone())
                        .unwrap_or_else(|| Arc::new(Semaphore::new(MAX_CONNECTING))),
                    max: o.max_connections,
                    idle: same.map(|c| c.idle.clone()).unwrap_or_default(),
                }),
            );
        }
        if let Ok(mut m) = self.origins.write() {
            *m = map;
        }
    }

    /// The origin and a place among its `max_connections` (waiting in line
    /// for one when all are taken).
    async fn slot(
        &self,
        origin: &str,
    ) -> Result<(Arc<OriginConn>, OwnedSemaphorePermit), FetchFailure> {
        let conn = self
            .origins
            .read()
            .ok()
            .and_then(|m| m.get(origin).cloned())
            .ok_or_else(|| {
                FetchFailure::Unavailable(format!("origin `{origin}` is not configured"))
            })?;
        if let Err(e) = &conn.addr {
            return Err(FetchFailure::Unavailable(e.clone()));
        }
        let permit = conn
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FetchFailure::Unavailable("origin client closed".into()))?;
        Ok((conn, permit))
    }

    /// Sends one request without a body and reads the answer's head; the
    /// body is then read through the returned [`Exchange`] (streamed), whose
    /// connection goes back to the pool only when read to the end.
    pub async fn open(&self, req: &OriginRequest<'_>) -> Result<Exchange, FetchFailure> {
        let head = request_head(req, RequestBody::None)?;
        self.open_head(&req.origin.name, head, req.method == "HEAD")
            .await
    }

    /// [`OriginClient::open`] with the request head already written out.
    async fn open_head(
        &self,
        name: &str,
        head: Vec<u8>,
        to_head: bool,
    ) -> Result<Exchange, FetchFailure> {
        let (origin, permit) = self.slot(name).await?;
        // A pooled connection may have been closed by the origin meanwhile:
        // a failure on it before any answer is retried on a fresh connection
        // (these requests have no body, and are GET or HEAD).
        loop {
            let (mut conn, reused) = connect(&origin, name).await?;
            let sent = match conn.io.write_all(&head).await {
                Ok(()) => conn.read_head(to_head).await,
                Err(e) => Err(WireError::Io(e)),
            };
            match sent {
                Ok(answer) => return Ok(Exchange::new(conn, answer, origin, permit)),
                Err(WireError::Io(e)) if reused && conn.nothing_read => {
                    tracing::debug!(origin = %name, error = %e, "stale pooled connection, retrying");
                }
                Err(e) => return Err(e.into_failure(name)),
            }
        }
    }

    /// Starts a request whose body is streamed: its head goes now (with
    /// `Content-Length` when `length` is known, chunked otherwise); the body
    /// follows through [`Upload::write`], then [`Upload::finish`] reads the
    /// answer's head. Only the head is retried on a stale pooled connection,
    /// never once any of the body was sent.
    pub async fn open_upload(
        &self,
        req: &OriginRequest<'_>,
        length: Option<u64>,
    ) -> Result<Upload, FetchFailure> {
        let (origin, permit) = self.slot(&req.origin.name).await?;
        let framing = length.map_or(RequestBody::Chunked, RequestBody::Length);
        let head = request_head(req, framing)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut conn, reused) = connect(&origin, &req.origin.name).await?;
            match conn.io.write_all(&head).await {
                Ok(()) => {
                    return Ok(Upload {
                        conn,
                        chunked: framing == RequestBody::Chunked,
                        origin,
                        permit,
                    })
                }
                Err(e) if reused && attempts < 3 => {
                    tracing::debug!(origin = %req.origin.name, error = %e, "stale pooled connection, retrying");
                }
                Err(e) => return Err(WireError::Io(e).into_failure(&req.origin.name)),
            }
        }
    }

    /// Sends one request and reads the whole answer (bounded), decoded to UTF-8.
    pub async fn send(&self, mut req: OriginRequest<'_>) -> Result<FetchResponse, FetchFailure> {
        let head = request_head(&req, RequestBody::None)?;
        // The header list is written out: freed now rather than held while
        // the request waits for a connection and for its answer.
        req.headers = Vec::new();
        let ex = self
            .open_head(&req.origin.name, head, req.method == "HEAD")
            .await?;
        let status = ex.status();
        let location = ex.header_str("location");
        let content_type = ex.header_str("content-type");
        let content_encoding = ex.header_str("content-encoding");
        let set_cookies = ex.set_cookies();
        let storable = !ex.header_str("cache-control").is_some_and(|cc| {
            cc.split(',').any(|d| {
                let d = d.trim().split('=').next().unwrap_or("").trim();
                d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
            })
        });
        if let Some(tx) = req.on_head.take() {
            let _ = tx.send(set_cookies.clone());
        }
        // Boxed: the body is read once the answer has come, and its state
        // inline would size every request's future while it waits.
        let raw = Box::pin(read_whole(ex, req.max_bytes)).await?;
        let decoded = decode_content(raw, content_encoding.as_deref(), req.max_bytes)
            .map_err(|e| FetchFailure::Error(e.to_string()))?;
        let body = to_utf8(decoded, content_type.as_deref());
        Ok(FetchResponse {
            status,
            location,
            set_cookies,
            body,
            storable,
        })
    }
}

/// Reads an answer's body whole, at most `max` bytes, and gives the
/// connection back. Most answers arrive in one piece: it is kept as it is,
/// not copied.
async fn read_whole(mut ex: Exchange, max: u64) -> Result<Bytes, FetchFailure> {
    let too_large = || FetchFailure::Error(format!("body over the {max} byte limit"));
    if let BodyDecoder::Length(len) = ex.body {
        if len > max {
            return Err(too_large());
        }
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

/// What pingora's connector connects to for origin `o` at `addr`: TCP, or
/// TLS with the origin's host as its name (SNI and the certificate check),
/// the origin's CAs or the system's, and its client certificate.
fn origin_peer(addr: SocketAddr, o: &Origin) -> HttpPeer {
    use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
    let mut peer = HttpPeer::new(addr, o.tls.is_some(), o.host.clone());
    peer.options.connection_timeout = Some(o.timeout);
    peer.options.total_connection_timeout = Some(o.timeout);
    if let Some(tls) = &o.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        if !tls.ca.is_empty() {
            // The certificates parsed when the config was loaded.
            let ca: Vec<WrappedX509> = tls
                .ca
                .iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            peer.options.ca = Some(Arc::from(ca));
        }
        if let Some((chain, key)) = &tls.client {
            peer.client_cert_key = Some(Arc::new(CertKey::new(chain.clone(), key.clone())));
        }
    }
    peer
}

/// A pooled connection when one is idle, else a new one (bounded by the
/// origin's timeout). The flag says it was pooled.
async fn connect(origin: &OriginConn, name: &str) -> Result<(Conn, bool), FetchFailure> {
    if let Some(io) = origin.take_idle() {
        return Ok((Conn::new(io), true));
    }
    let Ok(_connecting) = origin.connecting.acquire().await else {
        return Err(FetchFailure::Unavailable("origin client closed".into()));
    };
    // One that came back while this waited its turn to connect.
    if let Some(io) = origin.take_idle() {
        return Ok((Conn::new(io), true));
    }
    // Boxed: a new connection is the rare case, and its future inline would
    // make every exchange's state larger while it waits for its answer.
    let io = Box::pin(connect_new(origin, name)).await?;
    Ok((Conn::new(io), false))
}

async fn connect_new(origin: &OriginConn, name: &str) -> Result<Stream, FetchFailure> {
    let Some(peer) = &origin.peer else {
        let e = origin.addr.clone().err().unwrap_or_default();
        return Err(FetchFailure::Unavailable(e));
    };
    // pingora's connector: the connect timeout is the peer's; the socket
    // comes with TCP_NODELAY and no user-space buffers.
    // A TLS handshake that fails (a certificate refused, no client
    // certificate offered) is the fragment's `unavailable`, with pingora's
    // reason.
    origin
        .connector
        .new_stream(peer)
        .await
        .map_err(|e| FetchFailure::Unavailable(format!("connecting to `{name}`: {e}")))
}

/// Why an exchange failed on the wire.
enum WireError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The origin broke HTTP.
    Protocol(h1::H1Error),
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

    /// Reads up to and including the final response head (interim 1xx
    /// answers are skipped).
    async fn read_head(&mut self, to_head: bool) -> Result<ResponseHead, WireError> {
        loop {
            if let Some(n) = h1::head_len(&self.buf).map_err(WireError::Protocol)? {
                let head = self.buf.split_to(n).freeze();
                match h1::parse_response_head(&head, to_head).map_err(WireError::Protocol)? {
                    Head::Final(head) => return Ok(head),
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
}

/// A request to an origin whose body is being streamed.
pub struct Upload {
    conn: Conn,
    chunked: bool,
    origin: Arc<OriginConn>,
    permit: OwnedSemaphorePermit,
}

impl Upload {
    /// Sends the next piece of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchFailure> {
        if chunk.is_empty() {
            return Ok(());
        }
        let io = &mut self.conn.io;
        let sent = async {
            if self.chunked {
                io.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                io.write_all(chunk).await?;
                io.write_all(b"\r\n").await
            } else {
                io.write_all(chunk).await
            }
        };
        sent.await
            .map_err(|e| FetchFailure::Unavailable(format!("sending the body: {e}")))
    }

    /// Ends the body and reads the answer's head.
    pub async fn finish(mut self) -> Result<Exchange, FetchFailure> {
        if self.chunked {
            self.conn
                .io
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(|e| FetchFailure::Unavailable(format!("sending the body: {e}")))?;
        }
        let head = self
            .conn
            .read_head(false)
            .await
            .map_err(|e| e.into_failure("origin"))?;
        Ok(Exchange::new(self.conn, head, self.origin, self.permit))
    }
}

/// One exchange with an origin whose head has been read.
pub struct Exchange {
    conn: Conn,
    status: u16,
    headers: http::HeaderMap,
    body: BodyDecoder,
    keep_alive: bool,
    origin: Arc<OriginConn>,
    _permit: OwnedSemaphorePermit,
}

impl Exchange {
    fn new(
        conn: Conn,
        head: ResponseHead,
        origin: Arc<OriginConn>,
        permit: OwnedSemaphorePermit,
    ) -> Exchange {
        Exchange {
            conn,
            status: head.status,
            headers: head.headers,
            body: head.body,
            keep_alive: head.keep_alive,
            origin,
            _permit: permit,
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
        loop {
            let step = self
                .body
                .decode(&mut self.conn.buf, self.conn.eof)
                .map_err(|e| FetchFailure::Error(format!("body broken off: {e}")))?;
            match step {
                Decoded::Data(b) => return Ok(Some(b)),
                Decoded::End => return Ok(None),
                Decoded::NeedMore => self
                    .conn
                    .fill()
                    .await
                    .map_err(|e| FetchFailure::Error(format!("body broken off: {e}")))?,
            }
        }
    }

    /// Gives the connection back to the pool if its answer was read whole,
    /// nothing followed it, and both sides keep it alive; otherwise it is
    /// closed.
    pub fn finish(self) {
        let Exchange {
            conn,
            body,
            keep_alive,
            origin,
            ..
        } = self;
        let whole = matches!(body, BodyDecoder::Done | BodyDecoder::Length(0));
        if keep_alive && whole && conn.buf.is_empty() && !conn.eof {
            origin.put_idle(conn.io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(listener: &tokio::net::TcpListener) -> (Stream, tokio::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let client: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(
            client.unwrap(),
        ));
        (client, server.unwrap().0)
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_origin_closed_and_keeps_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let conn = OriginConn {
            addr: Ok(listener.local_addr().unwrap()),
            peer: None,
            connector: Arc::new(TransportConnector::new(None)),
            connecting: Arc::new(Semaphore::new(MAX_CONNECTING)),
            limit: Arc::new(Semaphore::new(4)),
            max: 4,
            idle: Default::default(),
        };
        let (closed, server_side) = pair(&listener).await;
        let (open, _kept) = pair(&listener).await;
        conn.put_idle(closed);
        conn.put_idle(open);
        drop(server_side);
        // Let the reactor see the origin's FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.sweep();
        assert_eq!(conn.idle.lock().unwrap().len(), 1);
        assert!(conn.take_idle().is_some());
        assert!(conn.take_idle().is_none());
    }
}
