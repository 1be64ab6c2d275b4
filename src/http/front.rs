//! What pingora hands each browser connection to: the checks around its
//! sessions that pingora does not make (docs/ARCHITECTURE.md), then a
//! [`Handler`]. pingora's `Server` owns the listeners, TLS, HTTP/2 and the
//! HTTP/1.1 codec; [`Front`] runs an HTTP/1.x connection's requests one
//! after another on pingora sessions (a lean keep-alive loop: pingora's
//! costs kilobytes per connection), and adds, per request:
//!
//! - the whole-head deadline (`header_timeout`, from the accept for a
//!   connection's first request, from the first byte for the next ones),
//!   and `idle_timeout` between requests (408, or a silent close when idle);
//! - 431 for heads over `max_header_bytes`/`max_headers`, 400 for the
//!   framing and `Host` rules of docs/SECURITY.md;
//! - the count of requests in flight that a drain waits for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::http::ResponseHeader;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::ALPN;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_rustls::rustls::server::ResolvesServerCert;
use tracing::Instrument;

use super::conn::{check_head, check_host, BrowserConn, HeadError, HeadLimits};

/// Most streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;

/// What answers the requests of a listener (the edge's router, the admin
/// API).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The limits and deadlines in force (asked per request: a reload
    /// changes them).
    fn settings(&self) -> Settings;

    /// Answers one request whose head was read and checked. Returns
    /// whether the connection may carry another.
    async fn serve(&self, conn: &mut BrowserConn) -> bool;
}

/// The limits and deadlines of a listener's requests.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `max_header_bytes` and `max_headers`.
    pub limits: HeadLimits,
    /// The whole head must arrive within this.
    pub header_timeout: Duration,
    /// A kept-alive connection may idle this long between requests.
    pub idle_timeout: Duration,
    /// One write may wait this long for the browser to read.
    pub send_timeout: Duration,
    /// Text answers may be compressed.
    pub compression: bool,
}

/// Counts the requests being served so that a drain can wait for them.
#[derive(Default)]
pub struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

/// One request being served (see [`Tracker`]).
pub struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tracker {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> TrackGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }

    /// Requests being served now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Returns once no request is being served.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A plain listener: no read buffer is kept for a waiting connection
/// (pingora's default is 64 KiB per connection).
pub fn plain_listener(addr: SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::new(0, 0))
}

/// A TLS listener, HTTP/2 and HTTP/1.1 by ALPN, its certificate chosen by
/// `certs` at each handshake (so that a reload can change it).
pub fn tls_listener(
    addr: SocketAddr,
    certs: Arc<dyn ResolvesServerCert>,
) -> pingora::Result<ListenerConfig> {
    // The paths are not read: the resolver gives the certificate.
    let mut tls = TlsSettings::intermediate("", "")?;
    tls.set_cert_resolver(certs);
    tls.enable_h2();
    Ok(ListenerConfig::tcp(addr.to_string()).tls(tls))
}

/// The TLS listeners' check before pingora's handshake: the ClientHello's
/// first record must arrive within the deadline it gives (the current
/// `header_timeout`; pingora allows 60 s for the whole handshake). A
/// connection that stalls is dropped.
pub struct HelloDeadline(pub Arc<dyn Fn() -> Duration + Send + Sync>);

/// Largest TLS record (RFC 8446 §5.1) plus its header.
const MAX_RECORD: usize = (16 << 10) + 256 + 5;

#[async_trait::async_trait]
impl pingora::listeners::PreTlsProcess for HelloDeadline {
    async fn process(
        &self,
        stream: &mut pingora::protocols::l4::stream::Stream,
    ) -> pingora::Result<()> {
        use pingora::protocols::Peek;
        let wait = (self.0)();
        let hello = async {
            let mut header = [0u8; 5];
            stream.try_peek(&mut header).await?;
            let len = usize::from(u16::from_be_bytes([header[3], header[4]])) + 5;
            if header[0] == 0x16 && len <= MAX_RECORD {
                let mut record = vec![0u8; len];
                stream.try_peek(&mut record).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(wait, hello).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => pingora::Error::e_because(
                pingora::ErrorType::ConnectionClosed,
                "before the TLS ClientHello",
                e,
            ),
            Err(_) => pingora::Error::e_explain(
                pingora::ErrorType::ReadTimedout,
                "the TLS ClientHello did not arrive within header_timeout",
            ),
        }
    }
}

/// The pingora application of one listening service: the checks of this
/// module, then `H`.
pub struct Front<H: Handler> {
    handler: H,
    tracker: Arc<Tracker>,
    options: HttpServerOptions,
    node: tracing::Span,
}

impl<H: Handler> Front<H> {
    /// Serves `handler`'s requests, counted in `tracker`; every line they
    /// log is inside `node` (the node id). HTTP/2 connections idle for
    /// `h2_idle` are closed (set at start: a reload does not change it).
    pub fn new(handler: H, tracker: Arc<Tracker>, node: tracing::Span, h2_idle: Duration) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(h2_idle);
        Front {
            handler,
            tracker,
            options,
            node,
        }
    }
}

#[async_trait::async_trait]
impl<H: Handler> ServerApp for Front<H> {
    /// A connection pingora accepted (TLS done): HTTP/2 by ALPN goes to
    /// pingora's own HTTP/2 serving (through [`H2Door`]); HTTP/1.x is served
    /// here, a request at a time, with a small waiting state (pingora's
    /// HTTP/1 loop keeps kilobytes per connection: docs/ARCHITECTURE.md).
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let door = Arc::new(H2Door(self.clone()));
            return door.process_new(stream, shutdown).await;
        }
        let node = self.node.clone();
        self.serve_connection(stream, shutdown)
            .instrument(node)
            .await;
        None
    }
}

/// pingora's HTTP/2 serving (handshake, streams, idle timeout, GOAWAY on
/// shutdown) for one connection, each stream to [`Front::serve_h2`].
struct H2Door<H: Handler>(Arc<Front<H>>);

#[async_trait::async_trait]
impl<H: Handler> HttpServerApp for H2Door<H> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let front = &self.0;
        let settings = front.handler.settings();
        front
            .serve_h2(session, settings)
            .instrument(front.node.clone())
            .await;
        None
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        let limits = self.0.handler.settings().limits;
        let mut options = pingora::protocols::http::v2::server::H2Options::new();
        options
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_bytes).unwrap_or(u32::MAX));
        Some(options)
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.0.options)
    }
}

/// Why no request head could be read.
enum Unread {
    /// The browser closed or went idle: no answer.
    Gone,
    /// Answer with this status and close.
    Refuse(u16),
}

impl<H: Handler> Front<H> {
    /// An HTTP/1.x connection: each request's first byte awaited here (the
    /// first one by `header_timeout` after the accept, the next ones within
    /// `idle_timeout`, or until shutdown), its head then read by pingora
    /// within `header_timeout` of that byte, checked and served.
    async fn serve_connection(
        &self,
        mut stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) {
        let accepted = Instant::now();
        let mut prefix: Option<BytesMut> = None;
        let mut first = true;
        loop {
            let settings = self.handler.settings();
            if prefix.is_none() {
                let wait = if first {
                    (accepted + settings.header_timeout).saturating_duration_since(Instant::now())
                } else {
                    settings.idle_timeout
                };
                // Room for a whole head in one read (pingora's own first
                // buffer is 4 KiB; most browser heads are smaller): one
                // system call reads what the browser sent.
                let mut head = BytesMut::with_capacity(1024);
                let mut shutdown = shutdown.clone();
                let read = tokio::select! {
                    r = tokio::time::timeout(wait, stream.read_buf(&mut head)) => r,
                    _ = shutdown.wait_for(|s| *s), if !first => return,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => prefix = Some(head),
                    // A first request that never came gets its 408.
                    Err(_) if first => return refuse_raw(stream, 408).await,
                    _ => return,
                }
            }
            let deadline = if first {
                accepted + settings.header_timeout
            } else {
                Instant::now() + settings.header_timeout
            };
            first = false;
            // Boxed: only a request being served carries the reading,
            // checking and answering states.
            let served =
                Box::pin(self.serve_h1(stream, prefix.take(), deadline, settings, shutdown));
            match served.await {
                Some((next, rest)) => {
                    stream = next;
                    prefix = rest.filter(|r| !r.is_empty());
                }
                None => return,
            }
        }
    }

    /// One HTTP/2 stream: checked, then served.
    async fn serve_h2(&self, mut session: ServerSession, settings: Settings) {
        let _guard = self.tracker.enter();
        if session.req_header().headers.len() > settings.limits.max_fields {
            refuse_h2(session, 431).await;
            return;
        }
        host_from_authority(&mut session);
        if check_host(session.req_header()).is_err() {
            refuse_h2(session, 400).await;
            return;
        }
        let mut conn = self.conn(session, settings);
        if !self.handler.serve(&mut conn).await {
            conn.close().await;
            return;
        }
        let _ = conn.finish().await;
    }

    /// One HTTP/1.x request: its head read by `deadline` (from `prefix`, the
    /// bytes already read, and `stream`), checked, then served.
    async fn serve_h1(
        &self,
        stream: pingora::protocols::Stream,
        prefix: Option<BytesMut>,
        deadline: Instant,
        settings: Settings,
        shutdown: &ShutdownWatch,
    ) -> Option<(pingora::protocols::Stream, Option<BytesMut>)> {
        let limits = settings.limits;
        let _guard = self.tracker.enter();
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(None);
        session.set_read_timeout(None);
        session.set_pipelining_enabled(true);
        if let Some(p) = prefix {
            session.set_pipelined_prefix(p);
        }
        // Boxed: pingora's head-reading future holds its 256 header slots
        // (8 KiB); inline, they would stay in this request's state while
        // its page waits on fragments.
        let read = tokio::time::timeout_at(deadline.into(), Box::pin(session.read_request())).await;
        let unread = match read {
            Ok(Ok(true)) => None,
            Ok(Ok(false)) => Some(Unread::Gone),
            Err(_) => Some(Unread::Refuse(408)),
            Ok(Err(e)) => Some(classify(&e)),
        };
        if let Some(unread) = unread {
            if let Unread::Refuse(status) = unread {
                Box::pin(refuse_h1(session, status)).await;
            }
            return None;
        }
        let raw = session
            .as_http1()
            .map(|s| s.get_headers_raw_bytes())
            .unwrap_or_default();
        if let Err(e) = check_head(&raw, limits) {
            tracing::debug!(error = %e, "request head refused");
            let status = match e {
                HeadError::TooLarge => 431,
                HeadError::Bad(_) => 400,
            };
            Box::pin(refuse_h1(session, status)).await;
            return None;
        }
        if let Err(e) = check_host(session.req_header()) {
            tracing::debug!(error = %e, "request refused");
            Box::pin(refuse_h1(session, 400)).await;
            return None;
        }
        let mut conn = self.conn(session, settings);
        if *shutdown.borrow() {
            conn.close_after();
        }
        if !self.handler.serve(&mut conn).await {
            Box::pin(conn.close()).await;
            return None;
        }
        if *shutdown.borrow() {
            conn.close_after();
        }
        // Boxed, as the head's reading: the end of an answer is short-lived.
        Box::pin(conn.finish()).await.map(|r| r.into_parts())
    }

    fn conn(&self, session: ServerSession, settings: Settings) -> BrowserConn {
        let mut conn = BrowserConn::new(session, settings.send_timeout);
        conn.set_compression(settings.compression);
        conn
    }
}

/// Over HTTP/2, the request's `Host` from `:authority` when it has none,
/// so that every handler reads one field.
fn host_from_authority(session: &mut ServerSession) {
    let req = session.req_header();
    if req.headers.contains_key(http::header::HOST) {
        return;
    }
    let Some(host) = req
        .uri
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    else {
        return;
    };
    let _ = session
        .req_header_mut()
        .insert_header(http::header::HOST, host);
}

/// The answer to a head pingora could not read: 431 for one over its own
/// limits, nothing for a connection that closed or failed, 400 otherwise.
fn classify(e: &pingora::Error) -> Unread {
    use pingora::ErrorType;
    let text = e.to_string();
    match e.etype() {
        ErrorType::InvalidHTTPHeader
            if text.contains("larger than") || text.contains("too many headers") =>
        {
            Unread::Refuse(431)
        }
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::InvalidH2 => {
            tracing::debug!(error = %e, "bad request");
            Unread::Refuse(400)
        }
        _ => {
            tracing::debug!(error = %e, "connection ended");
            Unread::Gone
        }
    }
}

fn html_page(status: u16) -> (String, String) {
    let (title, message) = match status {
        408 => (
            "Request Timeout",
            "The request head did not arrive in time.",
        ),
        431 => (
            "Request Header Fields Too Large",
            "The request head is larger than this site accepts.",
        ),
        _ => ("Bad Request", "The request could not be parsed."),
    };
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    (
        reason.to_string(),
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{message}</p></body></html>\n"
        ),
    )
}

/// Answers an HTTP/1.x request whose head was refused (or never came
/// whole) on the raw connection, then closes it: pingora's session cannot
/// write an answer to a request it did not read.
async fn refuse_h1(session: ServerSession, status: u16) {
    let ServerSession::H1(h1) = session else {
        return;
    };
    refuse_raw(h1.into_inner(), status).await;
}

/// Writes a refusal (see [`refuse_h1`]) on the raw connection, then closes it.
async fn refuse_raw(mut stream: pingora::protocols::Stream, status: u16) {
    let (reason, body) = html_page(status);
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

/// Answers a refused HTTP/2 request on its stream.
async fn refuse_h2(mut session: ServerSession, status: u16) {
    let (_, body) = html_page(status);
    let Ok(mut head) = ResponseHeader::build(status, Some(2)) else {
        return;
    };
    let _ = head.insert_header("content-type", "text/html; charset=utf-8");
    let _ = head.insert_header("content-length", body.len().to_string());
    if session.write_response_header(Box::new(head)).await.is_ok() {
        let _ = session.write_response_body(Bytes::from(body), true).await;
    }
    let _ = session.finish().await;
}
