//! The browser side of HTTP/1.1: one connection's requests read and framed
//! strictly (CONTRACT §10), and its responses written with as few system
//! calls as the page allows: the head goes out with the first body bytes,
//! the last chunk with its terminator. Requests are answered one at a time;
//! bytes that arrive early (a pipelined request) wait in the read buffer.

use std::io::IoSlice;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::encode::{self, Encoder};
use super::h1::{content_length, BodyDecoder, Chunk, Decoded};
use super::read::read_some;

/// A byte stream a browser connection runs on (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A request head as read from the browser.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target (origin-form, or absolute-form).
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, in order (over HTTP/2, `Host` from `:authority`).
    pub headers: HeaderMap,
    /// Whether it came over TLS.
    pub secure: bool,
}

/// Limits on a request head (`[server]` keys).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head in bytes (`max_header_bytes`).
    pub max_bytes: usize,
    /// Most header fields (`max_headers`).
    pub max_fields: usize,
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The head did not arrive in time; `started` says whether any of it had.
    #[error("the request head did not arrive in time")]
    Timeout {
        /// Some bytes of the head had arrived.
        started: bool,
    },
    /// The head is too large or has too many fields (431).
    #[error("the request head is too large")]
    TooLarge,
    /// The head is malformed or its framing is not allowed (400).
    #[error("bad request: {0}")]
    Bad(String),
    /// The browser closed the connection in the middle of a head.
    #[error("the connection closed in the middle of a request head")]
    Truncated,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

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

/// How the response being written is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No response started.
    None,
    /// No body goes out (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length`: the caller writes exactly that many bytes.
    Length,
    /// Chunked.
    Chunked,
    /// Until the connection closes (HTTP/1.0 without a length).
    Close,
    /// HTTP/2 DATA frames.
    Frames,
    /// The body is complete.
    Ended,
}

/// What a browser connection speaks.
enum Transport {
    /// HTTP/1.x on a byte stream.
    H1(Box<dyn Io>),
    /// One HTTP/2 stream.
    H2(Box<H2Stream>),
}

/// One HTTP/2 request's stream.
struct H2Stream {
    recv: h2::RecvStream,
    respond: Option<h2::server::SendResponse<Bytes>>,
    send: Option<h2::SendStream<Bytes>>,
    /// A response head held until the first body bytes.
    head: Option<http::Response<()>>,
}

/// Most request body bytes read and dropped after a response so that the
/// connection can serve another request; a larger rest closes it instead.
const DRAIN_MAX: u64 = 64 << 10;
/// Request header slots kept on the stack (the default `max_headers`).
const STACK_FIELDS: usize = 100;
/// Known lengths below this go uncompressed.
const MIN_COMPRESS: u64 = 256;
/// How long that drain may take.
const DRAIN_TIME: Duration = Duration::from_millis(200);

/// One browser connection.
pub struct BrowserConn {
    io: Transport,
    /// Whether the connection is TLS.
    secure: bool,
    /// Bytes read and not yet used (the rest of a body, a next request).
    buf: BytesMut,
    eof: bool,
    req: Option<Request>,
    body: BodyDecoder,
    continue_pending: bool,
    keep_alive: bool,
    framing: Framing,
    /// A written head that waits for the first body bytes.
    head: Option<Vec<u8>>,
    /// The status of the last response head written.
    status: u16,
    /// Whether text answers may be compressed (`[server] compression`).
    compression: bool,
    /// The current answer's encoder, when it is compressed (boxed: most
    /// answers have none, and a connection waiting on its page should not
    /// carry an encoder's size).
    encoder: Option<Box<Encoder>>,
}

impl BrowserConn {
    /// Wraps an accepted connection (plain, or TLS once handshaken).
    pub fn new(io: impl Io + 'static, secure: bool) -> BrowserConn {
        BrowserConn::on(Transport::H1(Box::new(io)), secure)
    }

    fn on(io: Transport, secure: bool) -> BrowserConn {
        BrowserConn {
            io,
            secure,
            buf: BytesMut::new(),
            eof: false,
            req: None,
            body: BodyDecoder::Done,
            continue_pending: false,
            keep_alive: false,
            framing: Framing::None,
            head: None,
            status: 0,
            compression: false,
            encoder: None,
        }
    }

    /// One HTTP/2 request, to be answered on its stream.
    pub fn h2(
        req: http::Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
    ) -> BrowserConn {
        let (parts, recv) = req.into_parts();
        let mut headers = parts.headers;
        if let Some(authority) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(http::header::HOST, v);
            }
        }
        let stream = H2Stream {
            recv,
            respond: Some(respond),
            send: None,
            head: None,
        };
        let mut conn = BrowserConn::on(Transport::H2(Box::new(stream)), true);
        conn.req = Some(Request {
            method: parts.method,
            uri: parts.uri,
            version: Version::HTTP_2,
            headers,
            secure: true,
        });
        conn.keep_alive = false;
        conn
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

    /// The request being answered. Only valid after [`read_request`]
    /// returned one.
    ///
    /// [`read_request`]: BrowserConn::read_request
    pub fn request(&self) -> Option<&Request> {
        self.req.as_ref()
    }

    /// Reads the next request head. Returns `Ok(false)` when the browser
    /// closed the connection between requests. The first byte must come
    /// by `first_byte_by`; the whole head by `head_by`, or within
    /// `head_timeout` of its first byte.
    pub async fn read_request(
        &mut self,
        first_byte_by: Instant,
        head_by: Option<Instant>,
        head_timeout: Duration,
        limits: HeadLimits,
    ) -> Result<bool, ReadError> {
        self.req = None;
        self.framing = Framing::None;
        self.head = None;
        self.status = 0;
        self.encoder = None;
        let mut deadline = first_byte_by;
        let mut started = false;
        loop {
            if !self.buf.is_empty() && !started {
                started = true;
                deadline = head_by.unwrap_or_else(|| Instant::now() + head_timeout);
            }
            if started {
                if let Some(req) = self.parse_head(limits)? {
                    self.req = Some(req);
                    return Ok(true);
                }
            }
            if self.eof {
                return if started {
                    Err(ReadError::Truncated)
                } else {
                    Ok(false)
                };
            }
            let read = tokio::time::timeout_at(deadline.into(), self.fill()).await;
            match read {
                Err(_) => return Err(ReadError::Timeout { started }),
                Ok(Err(e)) if !started => {
                    // A reset between requests is the browser going away.
                    tracing::trace!(error = %e, "connection closed between requests");
                    return Ok(false);
                }
                Ok(r) => r?,
            }
        }
    }

    /// Reads more bytes into the buffer (see [`read_some`]): a connection
    /// whose page waits on fragments keeps no read buffer. Sets `eof` at the
    /// end.
    async fn fill(&mut self) -> std::io::Result<()> {
        let Transport::H1(io) = &mut self.io else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        if read_some(io, &mut self.buf).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Parses a complete head off the buffer, or `None` if it is partial.
    fn parse_head(&mut self, limits: HeadLimits) -> Result<Option<Request>, ReadError> {
        let Some(head) = parse_request_head(&self.buf, limits, self.secure)? else {
            return Ok(None);
        };
        let _ = self.buf.split_to(head.len);
        if self.buf.is_empty() {
            // Frees the head's bytes now rather than with the next request.
            self.buf = BytesMut::new();
        }
        self.body = head.body;
        self.continue_pending = head.expect_continue
            && head.request.version == Version::HTTP_11
            && head.body != BodyDecoder::Length(0);
        self.keep_alive = !head.close;
        Ok(Some(head.request))
    }

    /// The next piece of the request body, `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, String> {
        let io = match &mut self.io {
            Transport::H1(io) => io,
            Transport::H2(stream) => {
                return match stream.recv.data().await {
                    None => Ok(None),
                    Some(Ok(b)) => {
                        let _ = stream.recv.flow_control().release_capacity(b.len());
                        Ok(Some(b))
                    }
                    Some(Err(e)) => Err(e.to_string()),
                };
            }
        };
        if self.continue_pending {
            self.continue_pending = false;
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
        }
        loop {
            match self.body.decode(&mut self.buf, self.eof)? {
                Decoded::Data(b) => return Ok(Some(b)),
                Decoded::End => return Ok(None),
                Decoded::NeedMore => self.fill().await.map_err(|e| e.to_string())?,
            }
        }
    }

    /// Stops keeping the connection open after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Starts the response: the head is held until the first body bytes (or
    /// the end), so that both go out in one write. Adds `Date`, the body's
    /// framing and `Connection`.
    pub fn write_head(&mut self, mut head: ResponseHead) {
        let (head_only, version) = match &self.req {
            Some(r) => (r.method == Method::HEAD, r.version),
            None => (false, Version::HTTP_11),
        };
        let status = head.status.as_u16();
        self.status = status;
        head.headers.remove(http::header::TRANSFER_ENCODING);
        head.headers.remove(http::header::CONNECTION);
        let has_length = head.headers.contains_key(http::header::CONTENT_LENGTH);
        self.framing = if head_only || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else if has_length {
            Framing::Length
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        };
        self.encoder = None;
        if self.compression && self.maybe_compress(&mut head) {
            self.framing = if version == Version::HTTP_11 {
                Framing::Chunked
            } else {
                Framing::Close
            };
        }
        if let Transport::H2(stream) = &mut self.io {
            if self.framing != Framing::Empty {
                self.framing = Framing::Frames;
            }
            stream.head = Some(h2_head(head));
            return;
        }
        if self.framing == Framing::Close {
            self.keep_alive = false;
        }
        // An unread request body that is not small closes the connection;
        // saying so up front spares the browser a reset.
        if matches!(self.body, BodyDecoder::Chunked(..))
            || matches!(self.body, BodyDecoder::Length(n) if n > DRAIN_MAX)
        {
            self.keep_alive = false;
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(head.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            head.status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        for (name, value) in &head.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date(SystemTime::now()));
        out.extend_from_slice(b"\r\n");
        if !self.keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.head = Some(out);
    }

    /// Compresses the answer if its type is text, the browser accepts a
    /// coding, the origin did not encode it already, and it has a body that
    /// is not tiny: `Content-Length` goes (the encoded length is not known
    /// in advance), and the body is chunked (HTTP/1.0: close-delimited).
    fn maybe_compress(&mut self, head: &mut ResponseHead) -> bool {
        let text = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(encode::compressible);
        if !text {
            return false;
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
        if small || encoded || matches!(self.framing, Framing::Empty) {
            return false;
        }
        let Some(coding) = self.req.as_ref().and_then(|r| encode::choose(&r.headers)) else {
            return false;
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
        true
    }

    /// Writes body bytes (with the held head, if any); `end` ends the body.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> std::io::Result<()> {
        let data = match self.encoder.as_mut() {
            Some(enc) if self.framing != Framing::Ended => Bytes::from(enc.encode(&data, end)?),
            _ => data,
        };
        let io = match &mut self.io {
            Transport::H1(io) => io,
            Transport::H2(stream) => {
                let end_now = end || self.framing == Framing::Empty;
                if end_now {
                    self.framing = Framing::Ended;
                }
                return stream.send(data, end_now).await;
            }
        };
        let head = self.head.take();
        let head = head.as_deref().unwrap_or_default();
        let mut size_line = [0u8; 20];
        match self.framing {
            Framing::Chunked => {
                let mut suffix: &[u8] = if end { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                let mut line: &[u8] = &[];
                if data.is_empty() {
                    suffix = if end { b"0\r\n\r\n" } else { b"" };
                } else {
                    line = chunk_line(&mut size_line, data.len());
                }
                if end {
                    self.framing = Framing::Ended;
                }
                write_parts(io, &mut [head, line, &data, suffix]).await
            }
            Framing::Length | Framing::Close => {
                if end {
                    self.framing = Framing::Ended;
                }
                write_parts(io, &mut [head, &data]).await
            }
            Framing::Empty | Framing::Ended | Framing::None | Framing::Frames => {
                if end && self.framing == Framing::Empty {
                    self.framing = Framing::Ended;
                }
                write_parts(io, &mut [head]).await
            }
        }
    }

    /// Ends the response body (and sends a head still held).
    pub async fn finish_body(&mut self) -> std::io::Result<()> {
        let held = match &self.io {
            Transport::H1(_) => self.head.is_some(),
            Transport::H2(stream) => stream.head.is_some(),
        };
        if self.framing == Framing::Ended && !held {
            return Ok(());
        }
        self.write_body(Bytes::new(), true).await
    }

    /// After a response: whether the connection can read another request.
    /// What is left of this request's body is read and dropped when it is
    /// small and quick; otherwise the connection is done.
    pub async fn finish(&mut self) -> bool {
        if self.finish_body().await.is_err() || !self.keep_alive {
            return false;
        }
        if matches!(self.io, Transport::H2(_)) {
            return false;
        }
        let mut dropped: u64 = 0;
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            loop {
                match self.body.decode(&mut self.buf, self.eof) {
                    Ok(Decoded::Data(b)) => {
                        dropped += b.len() as u64;
                        if dropped > DRAIN_MAX {
                            return false;
                        }
                    }
                    Ok(Decoded::End) => return true,
                    Ok(Decoded::NeedMore) => {
                        if self.fill().await.is_err() {
                            return false;
                        }
                    }
                    Err(_) => return false,
                }
            }
        })
        .await;
        self.req = None;
        matches!(drained, Ok(true))
    }

    /// Refuses an HTTP/2 request before serving it (its head is too large).
    pub async fn reject_h2(&mut self, status: u16) {
        if let Some(head) = ResponseHead::new(status) {
            self.write_head(head);
            let _ = self.finish_body().await;
        }
    }

    /// Answers with `status` and a small HTML body without a parsed request
    /// (a head that could not be read), then closes the connection.
    pub async fn reject(mut self, status: u16, body: String) {
        let Some(mut head) = ResponseHead::new(status) else {
            return;
        };
        head.insert("content-type", "text/html; charset=utf-8");
        head.insert("content-length", body.len().to_string());
        self.req = None;
        self.keep_alive = false;
        self.write_head(head);
        let _ = self.write_body(Bytes::from(body), true).await;
        if let Transport::H1(io) = &mut self.io {
            let _ = io.shutdown().await;
        }
    }
}

impl H2Stream {
    /// Sends the held head (with the end of the stream when there is no
    /// body), then `data` in DATA frames as the peer's flow control allows.
    async fn send(&mut self, mut data: Bytes, end: bool) -> std::io::Result<()> {
        let broken = |e: h2::Error| std::io::Error::other(e.to_string());
        if let (Some(head), Some(respond)) = (self.head.take(), self.respond.as_mut()) {
            let only_head = end && data.is_empty();
            let send = respond.send_response(head, only_head).map_err(broken)?;
            self.respond = None;
            if only_head {
                return Ok(());
            }
            self.send = Some(send);
        }
        let Some(send) = self.send.as_mut() else {
            return Ok(());
        };
        if data.is_empty() {
            if end {
                send.send_data(Bytes::new(), true).map_err(broken)?;
                self.send = None;
            }
            return Ok(());
        }
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = loop {
                let cap = send.capacity();
                if cap > 0 {
                    break cap;
                }
                match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(broken(e)),
                    None => return Err(std::io::ErrorKind::BrokenPipe.into()),
                }
            };
            let piece = data.split_to(granted.min(data.len()));
            let last = end && data.is_empty();
            send.send_data(piece, last).map_err(broken)?;
        }
        if end {
            self.send = None;
        }
        Ok(())
    }
}

/// A response head for HTTP/2: no connection-specific fields, a `date`.
fn h2_head(head: ResponseHead) -> http::Response<()> {
    let mut headers = head.headers;
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_bytes(&http_date(SystemTime::now())) {
        headers.insert(http::header::DATE, v);
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = head.status;
    *resp.headers_mut() = headers;
    resp
}

/// Writes every part, in order, with vectored writes.
/// A request head, parsed and checked.
struct ParsedHead {
    request: Request,
    /// Its length in bytes.
    len: usize,
    body: BodyDecoder,
    close: bool,
    expect_continue: bool,
}

/// Parses the request head at the front of `buf` (`None` while partial),
/// with the framing rules of CONTRACT §10 applied in the same pass over
/// its fields: obs-fold and white space before a colon are refused by the
/// parser; two framings, a coding other than one `chunked`, and malformed
/// or conflicting lengths here.
fn parse_request_head(
    buf: &[u8],
    limits: HeadLimits,
    secure: bool,
) -> Result<Option<ParsedHead>, ReadError> {
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
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_bytes => {
            return Err(ReadError::TooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_bytes => {
            return Err(ReadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
        Err(e) => return Err(ReadError::Bad(e.to_string())),
    };
    let bad = |what: &str| ReadError::Bad(what.to_string());
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| bad("invalid method"))?;
    let uri: Uri = parsed
        .path
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("invalid request target"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = version == Version::HTTP_10;
    let mut length: Option<u64> = None;
    let (mut te_fields, mut te_chunked) = (0, true);
    let mut expect_continue = false;
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid field name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid field value"))?;
        if name == http::header::CONNECTION {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        } else if name == http::header::TRANSFER_ENCODING {
            te_fields += 1;
            te_chunked &= h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == http::header::CONTENT_LENGTH {
            length = Some(content_length(h.value, length).map_err(ReadError::Bad)?);
        } else if name == http::header::EXPECT {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    // CONTRACT §10: both framings, or any coding but one `chunked`, is
    // a request that two parsers could read two ways.
    if te_fields > 0 && length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if te_fields > 1 || !te_chunked {
        return Err(bad("unsupported Transfer-Encoding"));
    }
    let body = match (te_fields, length) {
        (0, Some(n)) => BodyDecoder::Length(n),
        (0, None) => BodyDecoder::Length(0),
        _ => BodyDecoder::Chunked(Chunk::Size, 0),
    };
    Ok(Some(ParsedHead {
        request: Request {
            method,
            uri,
            version,
            headers,
            secure,
        },
        len,
        body,
        close,
        expect_continue,
    }))
}

/// Most parts one write carries (head, chunk line, data, chunk end).
const MAX_PARTS: usize = 4;

async fn write_parts(io: &mut Box<dyn Io>, parts: &mut [&[u8]]) -> std::io::Result<()> {
    // A stream without vectored writes (TLS) would send each part in its
    // own record and system call: one buffer instead.
    if !io.is_write_vectored() && parts.iter().filter(|p| !p.is_empty()).count() > 1 {
        let joined = parts.concat();
        return io.write_all(&joined).await;
    }
    let mut first = 0;
    loop {
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        // No allocation per write: a body write has at most four parts.
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        let count = parts.len().saturating_sub(first).min(MAX_PARTS);
        for (slot, part) in slices.iter_mut().zip(&parts[first..]) {
            *slot = IoSlice::new(part);
        }
        let mut n = io.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        for part in parts[first..].iter_mut() {
            let take = n.min(part.len());
            *part = &part[take..];
            n -= take;
            if n == 0 {
                break;
            }
        }
    }
}

/// The chunk-size line for `len` bytes, in `buf`.
fn chunk_line(buf: &mut [u8; 20], len: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len() - 2;
    buf[i] = b'\r';
    buf[i + 1] = b'\n';
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `t` as an HTTP date (IMF-fixdate, RFC 9110 §5.6.7).
fn http_date(t: SystemTime) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, v: u64| {
        out[at] = b'0' + (v / 10 % 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 5, day as u64);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.clamp(0, 9999) as u64;
    two(&mut out, 12, y / 100);
    two(&mut out, 14, y % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem / 60 % 60);
    two(&mut out, 23, rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_fields: 8,
    };

    /// A browser socket and the connection that serves it.
    async fn pair() -> (TcpStream, BrowserConn) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, BrowserConn::new(server, false))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn read_req(conn: &mut BrowserConn) -> Result<bool, ReadError> {
        conn.read_request(soon(), None, Duration::from_secs(5), LIMITS)
            .await
    }

    async fn read_all(mut client: TcpStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    fn page(status: u16) -> ResponseHead {
        let mut h = ResponseHead::new(status).unwrap();
        assert!(h.insert("content-type", "text/html"));
        h
    }

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
                matches!(parse_request_head(head, LIMITS, false), Ok(Some(_))),
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
                matches!(
                    parse_request_head(head, LIMITS, false),
                    Err(ReadError::Bad(_))
                ),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn dates_and_chunk_lines() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            &http_date(at(784_111_777)),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            &http_date(at(1_709_208_000)),
            b"Thu, 29 Feb 2024 12:00:00 GMT"
        );
        assert_eq!(&http_date(at(0)), b"Thu, 01 Jan 1970 00:00:00 GMT");
        let mut buf = [0u8; 20];
        assert_eq!(chunk_line(&mut buf, 1), b"1\r\n");
        assert_eq!(chunk_line(&mut buf, 255), b"ff\r\n");
        assert_eq!(chunk_line(&mut buf, 4096), b"1000\r\n");
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (mut client, mut conn) = pair().await;
        client
            .write_all(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(read_req(&mut conn).await.unwrap());
        let req = conn.request().unwrap();
        assert_eq!(
            (req.method.as_str(), req.uri.path(), req.uri.query()),
            ("GET", "/a", Some("x=1"))
        );
        assert_eq!(req.headers.get("host").unwrap(), "h");
        conn.write_head(page(200));
        conn.write_body(Bytes::from_static(b"hello"), false)
            .await
            .unwrap();
        conn.write_body(Bytes::from_static(b" world"), false)
            .await
            .unwrap();
        assert!(conn.finish().await);
        assert!(read_req(&mut conn).await.unwrap());
        assert_eq!(conn.request().unwrap().uri.path(), "/b");
        let mut h = page(404);
        h.insert("content-length", "3");
        conn.write_head(h);
        conn.write_body(Bytes::from_static(b"no!"), true)
            .await
            .unwrap();
        assert!(!conn.finish().await, "the second request asked to close");
        drop(conn);
        let got = read_all(client).await;
        let (first, second) = got.split_once("HTTP/1.1 404").unwrap();
        assert!(first.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\ndate: "), "{first}");
        assert!(
            first.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "{first}"
        );
        assert!(!first.contains("connection:"), "{first}");
        assert!(second.contains("content-length: 3\r\n"), "{second}");
        assert!(second.contains("connection: close\r\n"), "{second}");
        assert!(!second.contains("transfer-encoding"), "{second}");
        assert!(second.ends_with("\r\n\r\nno!"), "{second}");
    }

    #[tokio::test]
    async fn http10_is_close_delimited_and_head_has_no_body() {
        let (mut client, mut conn) = pair().await;
        client
            .write_all(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        assert!(read_req(&mut conn).await.unwrap());
        conn.write_head(page(200));
        conn.write_body(Bytes::from_static(b"not sent"), false)
            .await
            .unwrap();
        assert!(conn.finish().await);
        assert!(read_req(&mut conn).await.unwrap());
        assert_eq!(conn.request().unwrap().version, Version::HTTP_10);
        conn.write_head(page(200));
        conn.write_body(Bytes::from_static(b"one "), false)
            .await
            .unwrap();
        conn.write_body(Bytes::from_static(b"two"), false)
            .await
            .unwrap();
        assert!(!conn.finish().await);
        drop(conn);
        let got = read_all(client).await;
        assert!(!got.contains("not sent"), "{got}");
        let (head_answer, get_answer) = got.split_at(got.rfind("HTTP/1.1 200").unwrap());
        assert!(head_answer.ends_with("GMT\r\n\r\n"), "{head_answer}");
        assert!(get_answer.contains("connection: close\r\n"), "{get_answer}");
        assert!(!get_answer.contains("transfer-encoding"), "{get_answer}");
        assert!(get_answer.ends_with("\r\n\r\none two"), "{get_answer}");
    }

    #[tokio::test]
    async fn heads_over_the_limits_are_too_large() {
        let (mut client, mut conn) = pair().await;
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..9 {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        client.write_all(many.as_bytes()).await.unwrap();
        assert!(matches!(
            read_req(&mut conn).await,
            Err(ReadError::TooLarge)
        ));

        let (mut client, mut conn) = pair().await;
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "a".repeat(2000));
        client.write_all(big.as_bytes()).await.unwrap();
        assert!(matches!(
            read_req(&mut conn).await,
            Err(ReadError::TooLarge)
        ));
        conn.reject(431, "too large".into()).await;
        let got = read_all(client).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
        assert!(
            got.contains("connection: close\r\n") && got.ends_with("too large"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn bad_heads_and_framing_are_rejected() {
        for raw in [
            &b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let (mut client, mut conn) = pair().await;
            client.write_all(raw).await.unwrap();
            assert!(
                matches!(read_req(&mut conn).await, Err(ReadError::Bad(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[tokio::test]
    async fn deadlines_for_the_first_byte_and_the_whole_head() {
        let (_client, mut conn) = pair().await;
        let by = Instant::now() + Duration::from_millis(50);
        let r = conn
            .read_request(by, None, Duration::from_secs(5), LIMITS)
            .await;
        assert!(matches!(r, Err(ReadError::Timeout { started: false })));

        let (mut client, mut conn) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        let r = conn
            .read_request(soon(), None, Duration::from_millis(50), LIMITS)
            .await;
        assert!(matches!(r, Err(ReadError::Timeout { started: true })));

        let (client, mut conn) = pair().await;
        drop(client);
        assert!(
            !read_req(&mut conn).await.unwrap(),
            "a close between requests is no error"
        );
    }

    #[tokio::test]
    async fn bodies_expect_continue_and_leftovers() {
        let (mut client, mut conn) = pair().await;
        client
            .write_all(b"POST /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .await
            .unwrap();
        assert!(read_req(&mut conn).await.unwrap());
        let browser = tokio::spawn(async move {
            let mut buf = [0u8; 25];
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
            client.write_all(b"hello").await.unwrap();
            // A chunked body the server never reads, then a next request.
            client
                .write_all(
                    b"POST /g HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /h HTTP/1.1\r\n\r\n",
                )
                .await
                .unwrap();
            client
        });
        assert_eq!(conn.read_body().await.unwrap().unwrap(), "hello");
        assert_eq!(conn.read_body().await.unwrap(), None);
        let client = browser.await.unwrap();
        let mut h = page(204);
        h.insert("x-a", "1");
        conn.write_head(h);
        assert!(conn.finish().await);
        // /g's small body is left unread: dropped, and /h follows.
        assert!(read_req(&mut conn).await.unwrap());
        assert_eq!(conn.request().unwrap().uri.path(), "/g");
        conn.write_head(page(200));
        assert!(conn.finish().await);
        assert!(read_req(&mut conn).await.unwrap());
        assert_eq!(conn.request().unwrap().uri.path(), "/h");
        conn.close_after();
        conn.write_head(page(200));
        assert!(!conn.finish().await);
        drop(conn);
        let got = read_all(client).await;
        assert_eq!(got.matches("HTTP/1.1 ").count(), 3, "{got}");
        assert!(got.ends_with("connection: close\r\n\r\n0\r\n\r\n"), "{got}");
    }
}
