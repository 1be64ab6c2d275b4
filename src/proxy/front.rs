//! What pingora hands each browser request to: the checks around its
//! sessions that pingora does not make (docs/ARCHITECTURE.md), then the
//! handlers. pingora's `Server` owns the listeners, TLS, HTTP/2, the
//! HTTP/1.1 codec and keep-alive; [`Front`] adds, per request:
//!
//! - the whole-head deadline (`header_timeout`, from the accept for a
//!   connection's first request, from the first byte for the next ones),
//!   and `idle_timeout` between requests (408, or a silent close when idle);
//! - 431 for heads over `max_header_bytes`/`max_headers`, 400 for the
//!   framing and `Host` rules of docs/SECURITY.md;
//! - the handler's answer, metrics, access line, and the drain count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use super::conn::{check_head, check_host, BrowserConn, HeadError, HeadLimits, Request};
use super::metrics::{InFlight, PageLog, RequestKind, PAGE_LOG};
use super::server::{App, Tracker};
use super::{admin, page};

/// Most streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;
/// Heads on the admin listener: smaller, and one deadline for all.
const ADMIN_LIMITS: HeadLimits = HeadLimits {
    max_bytes: 16 << 10,
    max_fields: 64,
};
/// How long an admin connection may take for a request head, or idle.
const ADMIN_WAIT: Duration = Duration::from_secs(10);

/// A plain listener: no read buffer is kept for a waiting connection
/// (pingora's default is 64 KiB per connection).
pub(super) fn plain_listener(addr: SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::new(0, 0))
}

/// A TLS listener, HTTP/2 and HTTP/1.1 by ALPN, whose certificate is the
/// one of the configuration in force (a reload changes it).
pub(super) fn tls_listener(addr: SocketAddr, app: Arc<App>) -> pingora::Result<ListenerConfig> {
    // The paths are not read: the resolver below gives the certificate.
    let mut tls = TlsSettings::intermediate("", "")?;
    tls.set_cert_resolver(Arc::new(CurrentCert(app)));
    tls.enable_h2();
    Ok(ListenerConfig::tcp(addr.to_string()).tls(tls))
}

/// The TLS listeners' check before pingora's handshake: the ClientHello's
/// first record must arrive within `header_timeout` (pingora allows 60 s
/// for the whole handshake). A connection that stalls is dropped.
pub(super) struct HelloDeadline(pub(super) Arc<App>);

/// Largest TLS record (RFC 8446 §5.1) plus its header.
const MAX_RECORD: usize = (16 << 10) + 256 + 5;

#[async_trait::async_trait]
impl pingora::listeners::PreTlsProcess for HelloDeadline {
    async fn process(
        &self,
        stream: &mut pingora::protocols::l4::stream::Stream,
    ) -> pingora::Result<()> {
        use pingora::protocols::Peek;
        let wait = self.0.snapshot().cfg.server.header_timeout;
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

/// The TLS certificate of the configuration in force.
struct CurrentCert(Arc<App>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl tokio_rustls::rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(
        &self,
        _hello: tokio_rustls::rustls::server::ClientHello<'_>,
    ) -> Option<Arc<tokio_rustls::rustls::sign::CertifiedKey>> {
        self.0.snapshot().tls.clone()
    }
}

/// What a connection carries from one request to the next (pingora's
/// per-connection user context): the bytes of a pipelined next request.
struct Kept {
    prefix: Option<BytesMut>,
}

/// Which listener a [`Front`] serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Public,
    Admin,
}

/// The pingora application of one listening service.
pub(super) struct Front {
    app: Arc<App>,
    tracker: Arc<Tracker>,
    side: Side,
    options: HttpServerOptions,
    node: tracing::Span,
}

impl Front {
    pub(super) fn public(app: Arc<App>, tracker: Arc<Tracker>) -> Front {
        Front::new(app, tracker, Side::Public)
    }

    pub(super) fn admin(app: Arc<App>, tracker: Arc<Tracker>) -> Front {
        Front::new(app, tracker, Side::Admin)
    }

    fn new(app: Arc<App>, tracker: Arc<Tracker>, side: Side) -> Front {
        let snap = app.snapshot();
        let mut options = HttpServerOptions::default();
        // An idle HTTP/2 connection is closed like an idle HTTP/1.1 one.
        options.h2_idle_timeout = Some(snap.cfg.server.idle_timeout);
        let node = tracing::info_span!("rain_edge", node = %snap.cfg.server.node_id);
        drop(snap);
        Front {
            app,
            tracker,
            side,
            options,
            node,
        }
    }

    /// The head limits and deadlines in force for this listener.
    fn limits(&self) -> (HeadLimits, Duration, Duration) {
        if self.side == Side::Admin {
            return (ADMIN_LIMITS, ADMIN_WAIT, ADMIN_WAIT);
        }
        let snap = self.app.snapshot();
        let s = &snap.cfg.server;
        let limits = HeadLimits {
            max_bytes: usize::try_from(s.max_header_bytes).unwrap_or(usize::MAX),
            max_fields: s.max_headers,
        };
        (limits, s.header_timeout, s.idle_timeout)
    }
}

#[async_trait::async_trait]
impl HttpServerApp for Front {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let node = self.node.clone();
        self.next_request(session, shutdown).instrument(node).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        let (limits, ..) = self.limits();
        let mut options = pingora::protocols::http::v2::server::H2Options::new();
        options
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_bytes).unwrap_or(u32::MAX));
        Some(options)
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

/// Why no request head could be read.
enum Unread {
    /// The browser closed or went idle: no answer.
    Gone,
    /// Answer with this status and close.
    Refuse(u16),
}

impl Front {
    /// Reads the next request of a connection (or takes an HTTP/2 stream),
    /// checks it, serves it, and gives the connection back to pingora when
    /// it can carry another.
    async fn next_request(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let accepted = Instant::now();
        let (limits, header_timeout, idle_timeout) = self.limits();
        if session.is_http2() {
            let _guard = self.tracker.enter();
            let Some(req) = self.h2_request(&session, limits) else {
                refuse_h2(session, 431).await;
                return None;
            };
            if check_host(&req).is_err() {
                refuse_h2(session, 400).await;
                return None;
            }
            let conn = self.conn(session, req);
            self.serve(conn).await;
            return None;
        }
        let kept = session
            .take_connection_user_context()
            .and_then(|c| c.downcast::<Kept>().ok());
        let ServerSession::H1(h1) = session else {
            return None;
        };
        let mut stream = h1.into_inner();
        let mut prefix = kept.as_ref().and_then(|k| k.prefix.clone());
        let deadline = if kept.is_some() && prefix.is_none() {
            // A kept-alive connection idles until the next request's first
            // byte (closed at idle_timeout or on shutdown); its head then
            // has header_timeout.
            let mut first = [0u8; 1];
            let mut shutdown = shutdown.clone();
            let read = tokio::select! {
                r = tokio::time::timeout(idle_timeout, stream.read(&mut first)) => r,
                _ = shutdown.wait_for(|s| *s) => return None,
            };
            match read {
                Ok(Ok(1)) => prefix = Some(BytesMut::from(&first[..])),
                _ => return None,
            }
            Instant::now() + header_timeout
        } else if kept.is_some() {
            Instant::now() + header_timeout
        } else {
            accepted + header_timeout
        };
        let _guard = self.tracker.enter();
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(None);
        session.set_read_timeout(None);
        session.set_pipelining_enabled(true);
        if let Some(p) = prefix {
            session.set_pipelined_prefix(p);
        }
        let read = tokio::time::timeout_at(deadline.into(), session.read_request()).await;
        let unread = match read {
            Ok(Ok(true)) => None,
            Ok(Ok(false)) => Some(Unread::Gone),
            Err(_) => Some(Unread::Refuse(408)),
            Ok(Err(e)) => Some(classify(&e)),
        };
        if let Some(unread) = unread {
            if let Unread::Refuse(status) = unread {
                refuse_h1(session, status).await;
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
            refuse_h1(session, status).await;
            return None;
        }
        let req = request_of(&session);
        if let Err(e) = check_host(&req) {
            tracing::debug!(error = %e, "request refused");
            refuse_h1(session, 400).await;
            return None;
        }
        let mut conn = self.conn(session, req);
        if *shutdown.borrow() {
            conn.close_after();
        }
        let mut conn = self.serve(conn).await?;
        if *shutdown.borrow() {
            conn.close_after();
        }
        let mut settings = HttpPersistentSettings::for_session(conn.session());
        let (stream, prefix) = conn.finish().await?.into_parts();
        settings.set_user_context(Box::new(Kept { prefix }));
        Some(ReusedHttpStream::new(stream, Some(settings)))
    }

    /// An HTTP/2 request as our [`Request`]; `None` when it has more
    /// fields than `max_headers`.
    fn h2_request(&self, session: &ServerSession, limits: HeadLimits) -> Option<Request> {
        if session.req_header().headers.len() > limits.max_fields {
            return None;
        }
        Some(request_of(session))
    }

    fn conn(&self, session: ServerSession, req: Request) -> BrowserConn {
        let snap = self.app.snapshot();
        let mut conn = BrowserConn::new(session, req, snap.cfg.server.send_timeout);
        conn.set_compression(self.side == Side::Public && snap.cfg.server.compression);
        conn
    }

    /// Serves one request with its span, metrics and access line. Returns
    /// the connection when it may be kept.
    async fn serve(&self, mut conn: BrowserConn) -> Option<BrowserConn> {
        let client = conn.client_addr();
        if self.side == Side::Admin {
            let kept = admin::serve(&self.app, &mut conn).await;
            return kept.then_some(conn);
        }
        let started = Instant::now();
        let kind = conn
            .request()
            .map_or(RequestKind::Page, |r| RequestKind::of(r.uri.path()));
        // The request id is recorded once known (a trusted proxy's, or new).
        let span = tracing::info_span!("request", id = tracing::field::Empty);
        let log = Arc::new(PageLog::new());
        let kept = {
            let _in_flight = InFlight::enter(&self.app.metrics.requests_in_flight);
            PAGE_LOG
                .scope(
                    log.clone(),
                    page::serve(&self.app, &mut conn, client).instrument(span.clone()),
                )
                .await
        };
        let elapsed = started.elapsed();
        if conn.status() != 0 {
            self.app.metrics.response(kind, conn.status(), elapsed);
        }
        access_line(&span, &conn, client, kind, elapsed, &log);
        if !kept {
            conn.close().await;
            return None;
        }
        Some(conn)
    }
}

/// The request pingora read, as the handlers see it.
fn request_of(session: &ServerSession) -> Request {
    let h = session.req_header();
    let secure = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let mut headers = h.headers.clone();
    if session.is_http2() && !headers.contains_key(http::header::HOST) {
        if let Some(v) = h
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, v);
        }
    }
    Request {
        method: h.method.clone(),
        uri: h.uri.clone(),
        version: h.version,
        headers,
        secure,
    }
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
    let mut stream = h1.into_inner();
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

/// The access log line of one request (target `rain_edge::access`: pages at
/// `info`, with their fragments' outcomes; resources and forms at `debug`).
fn access_line(
    span: &tracing::Span,
    conn: &BrowserConn,
    client: SocketAddr,
    kind: RequestKind,
    elapsed: Duration,
    log: &PageLog,
) {
    let _in_request = span.enter();
    let Some(req) = conn.request() else {
        return;
    };
    let ms = elapsed.as_secs_f64() * 1000.0;
    let status = conn.status();
    if kind == RequestKind::Page {
        tracing::info!(target: "rain_edge::access", %client, method = %req.method, path = %req.uri.path(),
            status, ms, fragments = %log.summary(), "page");
    } else {
        tracing::debug!(target: "rain_edge::access", %client, method = %req.method, path = %req.uri.path(),
            status, ms, kind = ?kind, "request");
    }
}
