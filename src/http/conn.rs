//! One browser request on pingora's server session (HTTP/1.1 or HTTP/2):
//! the handlers read the request and write the answer through
//! [`BrowserConn`], which adds what pingora leaves to the application:
//! compression that flushes with every page chunk, the `100 Continue` an
//! upload waits for, the send deadline (`send_timeout`), and whether the
//! connection is kept. The head checks of docs/SECURITY.md that pingora's
//! parser does not make ([`check_head`]) run on the raw head it read.
//! The HTTP codec is pingora's: nothing here reads or writes HTTP framing.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;

use super::encode::{self, Encoder};
use super::fields::content_length;

/// Limits on a request head (`[server]` keys).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head in bytes (`max_header_bytes`).
    pub max_bytes: usize,
    /// Most header fields (`max_headers`).
    pub max_fields: usize,
}

/// Why a request head is refused.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The head is too large or has too many fields (431).
    #[error("the request head is too large")]
    TooLarge,
    /// The head is malformed or its framing is not allowed (400).
    #[error("bad request: {0}")]
    Bad(String),
}

/// A request body that could not be read: broken framing, or the
/// connection failed (pingora's error, with its cause).
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct BodyError(#[source] pub Box<pingora::Error>);

/// A response head to write: status and fields. Framing fields
/// (`Content-Length` aside) are the connection's business.
pub struct ResponseHead {
    status: StatusCode,
    headers: HeaderMap,
}

impl ResponseHead {
    /// A head with `status` (a valid code from 100 to 999).
    pub fn new(status: u16) -> Option<ResponseHead> {
        Some(ResponseHead {
            status: StatusCode::from_u16(status).ok()?,
            headers: HeaderMap::new(),
        })
    }

    /// Sets a field, replacing any of the same name. False when the name or
    /// value is not valid in HTTP.
    pub fn insert<V: TryInto<HeaderValue>>(&mut self, name: &str, value: V) -> bool {
        match (HeaderName::from_bytes(name.as_bytes()), value.try_into()) {
            (Ok(n), Ok(v)) => {
                self.headers.insert(n, v);
                true
            }
            _ => false,
        }
    }

    /// Adds a field, keeping any of the same name.
    pub fn append<V: TryInto<HeaderValue>>(&mut self, name: &str, value: V) -> bool {
        match (HeaderName::from_bytes(name.as_bytes()), value.try_into()) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
                true
            }
            _ => false,
        }
    }
}

/// Where the response being written is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No head written yet.
    None,
    /// A head is held until the first body bytes (or the end).
    Held,
    /// The head is out; body bytes may follow.
    Body,
    /// The response is complete.
    Ended,
    /// A write failed or timed out: nothing more may be written (a partial
    /// chunk may be on the wire), and the connection is not reused.
    Broken,
}

/// Most request body bytes left unread after an answer that the connection
/// reads and drops so that it can serve another request; a larger rest
/// closes it instead.
const DRAIN_MAX: u64 = 64 << 10;
/// How long that drain may take.
const DRAIN_TIME: Duration = Duration::from_millis(200);
/// Known lengths below this go uncompressed.
const MIN_COMPRESS: u64 = 256;

/// One browser request and its answer, on pingora's session.
pub struct BrowserConn {
    session: ServerSession,
    /// Whether the request came over TLS.
    secure: bool,
    keep_alive: bool,
    phase: Phase,
    head: Option<Box<ResponseHeader>>,
    /// Whether the held head has a body of a length not known yet (chunked
    /// over HTTP/1.1): the body's length goes in if it all comes at once.
    length_open: bool,
    /// The status of the response head written (0 before).
    status: u16,
    /// Whether text answers may be compressed (`[server] compression`).
    compression: bool,
    /// The current answer's encoder, when it is compressed (boxed: most
    /// answers have none).
    encoder: Option<Box<Encoder>>,
    /// A `100 Continue` is owed before the body is read.
    continue_pending: bool,
    /// How long one write may wait for the browser to read (`send_timeout`).
    send_timeout: Duration,
}

impl BrowserConn {
    /// Wraps a session whose request head was read and checked.
    pub fn new(session: ServerSession, send_timeout: Duration) -> BrowserConn {
        let mut session = session;
        session.set_write_timeout(Some(send_timeout));
        let req = session.req_header();
        let continue_pending = req.version == Version::HTTP_11
            && req
                .headers
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let secure = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let keep_alive = !session.is_http2();
        BrowserConn {
            session,
            secure,
            keep_alive,
            phase: Phase::None,
            head: None,
            length_open: false,
            status: 0,
            compression: false,
            encoder: None,
            continue_pending,
            send_timeout,
        }
    }

    /// Compresses text answers for browsers that accept it (from the next
    /// response head on).
    pub fn set_compression(&mut self, on: bool) {
        self.compression = on;
    }

    /// The status of the response to the current request (0 before its
    /// head was written).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The request being answered: the head pingora read (over HTTP/2,
    /// with `Host` from `:authority`).
    pub fn request(&self) -> &RequestHeader {
        self.session.req_header()
    }

    /// Whether the request came over TLS.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The next piece of the request body, `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, BodyError> {
        if self.continue_pending {
            self.continue_pending = false;
            self.session
                .write_continue_response()
                .await
                .map_err(BodyError)?;
        }
        self.session.read_request_body().await.map_err(BodyError)
    }

    /// Resolves when the browser closes its connection or resets its
    /// HTTP/2 stream; stays pending while it is there. Request body bytes
    /// that nobody reads are read and dropped on the way (pages and
    /// resources ignore a body). pingora's idle watch: over HTTP/1.1 a FIN
    /// from the browser, over HTTP/2 an `RST_STREAM` or the connection's end.
    pub async fn client_gone(&mut self) {
        loop {
            match self.session.read_body_or_idle(false).await {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "the browser went away");
                    self.keep_alive = false;
                    // An answer begun is never ended cleanly: a half-closed
                    // browser still reading must not take a cut page for a
                    // whole one.
                    if matches!(self.phase, Phase::Held | Phase::Body) {
                        self.phase = Phase::Broken;
                    }
                    return;
                }
            }
        }
    }

    /// Stops keeping the connection open after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
        self.session.set_keepalive(None);
    }

    /// The browser's address (0.0.0.0:0 for a peer that has none).
    pub fn client_addr(&self) -> std::net::SocketAddr {
        self.session
            .client_addr()
            .and_then(|a| a.as_inet().copied())
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Starts the response: the head is held until the first body bytes (or
    /// the end). pingora adds `Date`, `Connection` and, over HTTP/1.1, the
    /// framing this sets: the head's `Content-Length`, or chunked.
    pub fn write_head(&mut self, mut head: ResponseHead) {
        let head_only = self.request().method == Method::HEAD;
        let status = head.status.as_u16();
        self.status = status;
        for name in ["transfer-encoding", "connection", "keep-alive"] {
            head.headers.remove(name);
        }
        let empty = head_only || status < 200 || status == 204 || status == 304;
        self.encoder = None;
        if self.compression && !empty {
            self.maybe_compress(&mut head);
        }
        let h2 = self.session.is_http2();
        self.length_open = !empty && !head.headers.contains_key(http::header::CONTENT_LENGTH);
        if !h2 && self.length_open {
            if self.request().version == Version::HTTP_11 {
                head.headers.insert(
                    http::header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            } else {
                // HTTP/1.0 without a length: the body ends with the connection.
                self.keep_alive = false;
            }
        }
        if !h2 && self.unread_body_is_large() {
            // An unread request body that is not small closes the
            // connection; saying so up front spares the browser a reset.
            self.keep_alive = false;
        }
        if !self.keep_alive {
            self.session.set_keepalive(None);
        }
        let Ok(mut out) = ResponseHeader::build(head.status, Some(head.headers.len() + 3)) else {
            return;
        };
        for (name, value) in head.headers.iter() {
            let _ = out.append_header(name.clone(), value.clone());
        }
        self.head = Some(Box::new(out));
        self.phase = Phase::Held;
    }

    /// Whether the request declared a body larger than the connection will
    /// drain after its answer (or a chunked one, of unknown size) and its
    /// reading is not over.
    fn unread_body_is_large(&mut self) -> bool {
        if self.session.is_body_done() {
            return false;
        }
        let h = &self.session.req_header().headers;
        h.contains_key(http::header::TRANSFER_ENCODING)
            || h.get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > DRAIN_MAX)
    }

    /// Compresses the answer if its type is text, the browser accepts a
    /// coding, the origin did not encode it already, and it is not tiny:
    /// `Content-Length` goes (the encoded length is not known in advance).
    fn maybe_compress(&mut self, head: &mut ResponseHead) {
        // A part of a body (206) is sent as the origin cut it.
        if head.status == StatusCode::PARTIAL_CONTENT
            || head.headers.contains_key(http::header::CONTENT_RANGE)
        {
            return;
        }
        let text = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(encode::compressible);
        if !text {
            return;
        }
        let vary = match head
            .headers
            .get(http::header::VARY)
            .and_then(|v| v.to_str().ok())
        {
            Some(v) if v.to_ascii_lowercase().contains("accept-encoding") || v.trim() == "*" => {
                None
            }
            Some(v) => Some(format!("{v}, accept-encoding")),
            None => Some("accept-encoding".to_string()),
        };
        if let Some(v) = vary.and_then(|v| HeaderValue::from_str(&v).ok()) {
            head.headers.insert(http::header::VARY, v);
        }
        let small = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n < MIN_COMPRESS);
        let encoded = head.headers.contains_key(http::header::CONTENT_ENCODING);
        if small || encoded {
            return;
        }
        let Some(coding) = encode::choose(&self.session.req_header().headers) else {
            return;
        };
        head.headers.remove(http::header::CONTENT_LENGTH);
        head.headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
        // The encoded body is another representation: a strong validator
        // would claim byte equality.
        if let Some(etag) = head.headers.get(http::header::ETAG).cloned() {
            if !etag.as_bytes().starts_with(b"W/") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&weak) {
                    head.headers.insert(http::header::ETAG, v);
                }
            }
        }
        self.encoder = Some(Box::new(Encoder::new(coding)));
    }

    /// Writes body bytes (after the held head, if any); `end` ends the
    /// body. A write the browser does not take within `send_timeout` fails.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> std::io::Result<()> {
        match self.phase {
            Phase::Ended | Phase::None => return Ok(()),
            Phase::Broken => return Err(std::io::ErrorKind::BrokenPipe.into()),
            Phase::Held | Phase::Body => {}
        }
        let written = self.write_now(data, end).await;
        if written.is_err() {
            self.phase = Phase::Broken;
            self.keep_alive = false;
        }
        written
    }

    async fn write_now(&mut self, data: Bytes, end: bool) -> std::io::Result<()> {
        let data = match self.encoder.as_mut() {
            Some(enc) => Bytes::from(enc.encode(&data, end)?),
            None => data,
        };
        if let Some(head) = self.head.as_mut().filter(|_| end && self.length_open) {
            // The whole body is here before its head went out: it goes
            // with its length, so no chunked framing and no last-chunk
            // write (one system call and one packet fewer for a page
            // served from the fragment cache). `write_head` chose chunked
            // framing, not knowing the length.
            let _ = head.remove_header(&http::header::TRANSFER_ENCODING);
            let _ = head.insert_header(http::header::CONTENT_LENGTH, data.len());
        }
        self.send_head().await?;
        if end {
            self.phase = Phase::Ended;
        }
        // pingora drops a body for HEAD, 1xx, 204 and 304 itself.
        self.session
            .write_response_body(data, end)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Whether the request has a body to read (over HTTP/2, one without a
    /// declared length too).
    pub fn has_body(&mut self) -> bool {
        !self.session.is_body_empty()
    }

    /// Sends the held response head now (a stream that may be silent for a
    /// while, server-sent events: the browser learns at once that it is
    /// open).
    pub async fn send_head(&mut self) -> std::io::Result<()> {
        if let Some(head) = self.head.take() {
            self.phase = Phase::Body;
            // pingora writes the head straight to the socket (the
            // listeners have no write buffer).
            timed(self.send_timeout, self.session.write_response_header(head)).await?;
        }
        Ok(())
    }

    /// Whether the request asks to switch to WebSocket (an HTTP/1.1
    /// `Upgrade: websocket` handshake).
    pub fn is_websocket_upgrade(&self) -> bool {
        let req = self.request();
        req.version == Version::HTTP_11
            && req.method == Method::GET
            && req
                .headers
                .get_all(http::header::UPGRADE)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            && req
                .headers
                .get_all(http::header::CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    }

    /// Answers an upgrade request with `101 Switching Protocols` and the
    /// origin's `fields` (framing and hop-by-hop ones left out, `Connection:
    /// upgrade` added), then relays bytes both ways between the browser and
    /// `peer` (`leftover` first, to the browser) until either side closes,
    /// nothing passes for `idle`, or the browser does not read for
    /// `send_timeout`. The connection is not reused. Returns the bytes sent
    /// to the origin and to the browser.
    pub async fn relay_upgraded<S>(
        &mut self,
        fields: &HeaderMap,
        peer: S,
        leftover: Bytes,
        idle: Duration,
    ) -> std::io::Result<(u64, u64)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = |e: Box<pingora::Error>| std::io::Error::other(e.to_string());
        self.close_after();
        self.status = 101;
        self.phase = Phase::Broken;
        let mut resp = ResponseHeader::build(101, Some(fields.len() + 1)).map_err(io)?;
        for (name, value) in fields {
            if matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "set-cookie"
            ) {
                continue;
            }
            resp.append_header(name.clone(), value.clone())
                .map_err(io)?;
        }
        resp.insert_header(http::header::CONNECTION, "upgrade")
            .map_err(io)?;
        timed(
            self.send_timeout,
            self.session.write_response_header(Box::new(resp)),
        )
        .await?;
        let (mut up, mut down) = (0u64, 0u64);
        if !leftover.is_empty() {
            down += leftover.len() as u64;
            timed(
                self.send_timeout,
                self.session.write_response_body(leftover, false),
            )
            .await?;
        }
        let (mut from_peer, mut to_peer) = tokio::io::split(peer);
        let mut buf = vec![0u8; 16 << 10];
        loop {
            tokio::select! {
                read = self.session.read_request_body() => match read {
                    Ok(Some(bytes)) => {
                        up += bytes.len() as u64;
                        // An origin that does not read is given up on like a
                        // browser that does not.
                        match tokio::time::timeout(self.send_timeout, to_peer.write_all(&bytes)).await {
                            Ok(written) => written?,
                            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                        }
                    }
                    // The browser closed, or broke off.
                    Ok(None) | Err(_) => break,
                },
                read = from_peer.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        down += n as u64;
                        let bytes = Bytes::copy_from_slice(&buf[..n]);
                        timed(self.send_timeout, self.session.write_response_body(bytes, false)).await?;
                    }
                },
                () = tokio::time::sleep(idle) => break,
            }
        }
        let _ = to_peer.shutdown().await;
        Ok((up, down))
    }

    /// Ends the response body (and sends a head still held).
    pub async fn finish_body(&mut self) -> std::io::Result<()> {
        match self.phase {
            Phase::Ended | Phase::None => return Ok(()),
            Phase::Broken => return Err(std::io::ErrorKind::BrokenPipe.into()),
            Phase::Held | Phase::Body => {}
        }
        self.write_body(Bytes::new(), true).await
    }

    /// Closes the connection after this answer. An answer left open (cut
    /// off by a broken origin, say) is never ended cleanly: the browser
    /// sees it incomplete.
    pub async fn close(mut self) {
        self.close_after();
        if matches!(self.phase, Phase::None | Phase::Ended) {
            let _ = self.session.finish().await;
        }
    }

    /// After a response: the connection, if it can read another request.
    /// What is left of this request's body is read and dropped when it is
    /// small and quick; otherwise the connection is done.
    pub async fn finish(mut self) -> Option<pingora::protocols::http::ReusableHttpStream> {
        if self.finish_body().await.is_err() {
            // The browser is gone or does not read: drop the connection.
            return None;
        }
        if !self.keep_alive || self.unread_body_is_large() {
            self.session.set_keepalive(None);
        }
        self.session.set_total_drain_timeout(Some(DRAIN_TIME));
        match self.session.finish().await {
            Ok(reusable) => reusable,
            Err(e) => {
                tracing::trace!(error = %e, "connection not reusable");
                None
            }
        }
    }
}

/// `fut` within `limit`, as an I/O result.
async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = pingora::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Request header slots kept on the stack (the default `max_headers`).
const STACK_FIELDS: usize = 100;

/// Checks a raw HTTP/1.x request head as pingora read it against the limits
/// of `[server]` and the framing rules of docs/SECURITY.md that pingora's
/// parser is more lenient about: obs-fold and white space before a colon,
/// both `Content-Length` and `Transfer-Encoding` (pingora drops the length;
/// we refuse, as two parsers could read such a request two ways), a coding
/// other than one `chunked`, malformed or conflicting lengths, and control
/// bytes in field values.
pub fn check_head(raw: &[u8], limits: HeadLimits) -> Result<(), HeadError> {
    if raw.len() > limits.max_bytes {
        return Err(HeadError::TooLarge);
    }
    // The field slots live on the stack up to the default limit; a
    // larger configured limit takes them from the heap.
    let mut stack = [httparse::EMPTY_HEADER; STACK_FIELDS];
    let mut heap = Vec::new();
    let want = limits.max_fields.max(1);
    let fields: &mut [httparse::Header<'_>] = if want <= STACK_FIELDS {
        &mut stack[..want]
    } else {
        heap.resize(want, httparse::EMPTY_HEADER);
        &mut heap
    };
    let mut parsed = httparse::Request::new(fields);
    match parsed.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad("incomplete head".into())),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Bad(e.to_string())),
    }
    let bad = |what: &str| HeadError::Bad(what.to_string());
    let mut length: Option<u64> = None;
    let (mut te_fields, mut te_chunked) = (0, true);
    for h in parsed.headers.iter() {
        if h.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(bad("control byte in a field value"));
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_fields += 1;
            te_chunked &= h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length =
                Some(content_length(h.value, length).map_err(|e| HeadError::Bad(e.to_string()))?);
        }
    }
    if te_fields > 0 && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if te_fields > 1 || !te_chunked {
        return Err(bad("unsupported Transfer-Encoding"));
    }
    Ok(())
}

/// Checks the request's target and `Host` (docs/SECURITY.md): no NUL in
/// the target, however written (pingora percent-encodes control bytes in
/// a request line rather than refusing it), no encoded control bytes in
/// its path; exactly one `Host`; present in HTTP/1.1; the same authority
/// as an absolute-form target's; no control bytes or spaces.
pub fn check_host(req: &http::request::Parts) -> Result<(), HeadError> {
    let bad = |what: &str| Err(HeadError::Bad(what.to_string()));
    let target = req.uri.path_and_query().map_or("", |p| p.as_str());
    if target
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"%00"))
    {
        return bad("NUL in the request target");
    }
    let encoded_control = |w: &[u8]| {
        w[0] == b'%'
            && ((w[1] == b'0' || w[1] == b'1') && w[2].is_ascii_hexdigit()
                || w[1] == b'7' && w[2].eq_ignore_ascii_case(&b'f'))
    };
    if req.uri.path().as_bytes().windows(3).any(encoded_control) {
        return bad("an encoded control byte in the request path");
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return bad("more than one Host");
    }
    let Some(host) = host else {
        if req.version == Version::HTTP_11 {
            return bad("an HTTP/1.1 request without Host");
        }
        return Ok(());
    };
    if host.as_bytes().iter().any(|&b| b < 0x21 || b == 0x7f) {
        return bad("control byte or space in Host");
    }
    if let Some(authority) = req.uri.authority() {
        if req.version != Version::HTTP_2
            && !authority
                .as_str()
                .eq_ignore_ascii_case(host.to_str().unwrap_or(""))
        {
            return bad("Host differs from the target's authority");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_fields: 8,
    };

    #[test]
    fn framing_rules() {
        let ok: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n",
        ];
        for head in ok {
            assert!(
                check_head(head, LIMITS).is_ok(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let bad: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        ];
        for head in bad {
            assert!(
                matches!(check_head(head, LIMITS), Err(HeadError::Bad(_))),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
        assert!(matches!(
            check_head(many.as_bytes(), LIMITS),
            Err(HeadError::TooLarge)
        ));
        let long = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "b".repeat(1024));
        assert!(matches!(
            check_head(long.as_bytes(), LIMITS),
            Err(HeadError::TooLarge)
        ));
    }

    fn request(target: &str, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut req = http::Request::get(target).version(version);
        for h in hosts {
            req = req.header(http::header::HOST, *h);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_hygiene() {
        assert!(check_host(&request("/", Version::HTTP_11, &["a"])).is_ok());
        assert!(check_host(&request("/", Version::HTTP_10, &[])).is_ok());
        assert!(check_host(&request("http://a/x", Version::HTTP_11, &["a"])).is_ok());
        assert!(check_host(&request("/", Version::HTTP_11, &[])).is_err());
        assert!(check_host(&request("/", Version::HTTP_11, &["a", "b"])).is_err());
        assert!(check_host(&request("/", Version::HTTP_11, &["a", "a"])).is_err());
        assert!(check_host(&request("http://b/x", Version::HTTP_11, &["a"])).is_err());
        assert!(check_host(&request("/%00", Version::HTTP_11, &["a"])).is_err());
        assert!(check_host(&request("/a%0d%0a", Version::HTTP_11, &["a"])).is_err());
        assert!(check_host(&request("/?q=a%0D%0Ab", Version::HTTP_11, &["a"])).is_ok());
    }
}
