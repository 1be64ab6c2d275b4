//! HTTP/1.1 as the origin client speaks it: request heads written in one
//! piece, response heads parsed strictly (httparse), and the body framing of
//! RFC 9112 §6 (`Content-Length`, chunked, or read until close). Pure
//! functions over buffers, so that every framing case is tested without a
//! socket.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::{content_length, LengthError};

/// Why an origin's HTTP/1.1 message (or a request to it) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// A method that is not a token.
    #[error("invalid method `{0}`")]
    Method(String),
    /// A request target that is not an origin-form path of visible bytes.
    #[error("invalid request target")]
    Target,
    /// A `Host` with bytes that do not belong there.
    #[error("invalid host")]
    Host,
    /// A response head over the size allowed.
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// More response fields than allowed.
    #[error("more than {MAX_HEADERS} response header fields")]
    TooManyFields,
    /// A response head that does not parse.
    #[error("malformed response head{}", .0.map(|e| format!(": {e}")).unwrap_or_default())]
    MalformedHead(Option<httparse::Error>),
    /// A `101 Switching Protocols` nobody asked for.
    #[error("unexpected protocol switch")]
    ProtocolSwitch,
    /// A field name that is not a token.
    #[error("invalid header name `{0}`")]
    FieldName(String),
    /// A field value with bytes that do not belong there.
    #[error("invalid value of header `{0}`")]
    FieldValue(String),
    /// A bad or conflicting `Content-Length`.
    #[error(transparent)]
    Length(#[from] LengthError),
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// The connection closed before the body's end.
    #[error("body broken off")]
    BrokenOff,
    /// A chunk-size line or trailer section over its limit.
    #[error("{0} too long")]
    LineTooLong(&'static str),
    /// A line ended by a bare LF.
    #[error("{0} not ended by CRLF")]
    BareLf(&'static str),
    /// A chunk size that is not hex digits (at most 15).
    #[error("invalid chunk size")]
    ChunkSize,
}

/// Largest response head accepted from an origin.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No body, and `Connection: upgrade`: the caller's `Upgrade` field
    /// names the protocol (a WebSocket handshake).
    Upgrade,
}

/// Writes a request head. The caller's fields that frame the message
/// (`Host`, `Content-Length`, `Transfer-Encoding`, `Connection`) are dropped:
/// only this function frames a request, so no caller can smuggle a second one.
pub fn request_head(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: RequestBody,
) -> Result<Vec<u8>, H1Error> {
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(H1Error::Method(method.to_string()));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b > 0x20 && b < 0x7f) {
        return Err(H1Error::Target);
    }
    if !host.bytes().all(|b| b > 0x20 && b < 0x7f) {
        return Err(H1Error::Host);
    }
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(method.len() + target.len() + host.len() + fields + 64);
    for part in [method, " ", target, " HTTP/1.1\r\nhost: ", host, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        if matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestBody::Upgrade => out.extend_from_slice(b"connection: upgrade\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub body: BodyDecoder,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// What [`parse_response_head`] found.
#[derive(Debug)]
pub enum Head {
    /// An interim (1xx) answer, to be skipped.
    Interim,
    /// The final head.
    Final(ResponseHead),
}

/// The length of the response head at the front of `buf` (up to and
/// including its empty line), once it is all there.
pub fn head_len(buf: &[u8]) -> Result<Option<usize>, H1Error> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    // The empty line: a line feed followed by CRLF or by a bare LF.
    for i in memchr::memchr_iter(b'\n', window) {
        match window.get(i + 1) {
            Some(b'\n') => return Ok(Some(i + 2)),
            Some(b'\r') if window.get(i + 2) == Some(&b'\n') => return Ok(Some(i + 3)),
            _ => {}
        }
    }
    if buf.len() >= MAX_HEAD {
        return Err(H1Error::HeadTooLarge);
    }
    Ok(None)
}

/// Parses a whole response head (as found by [`head_len`]). Header values
/// share `head`'s memory. `to_head` says the request was `HEAD` (the answer
/// has no body whatever it declares).
pub fn parse_response_head(head: &Bytes, to_head: bool) -> Result<Head, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut fields);
    parse_whole(&mut res, head)?;
    let status = res.code.unwrap_or(0);
    if status == 101 {
        return Err(H1Error::ProtocolSwitch);
    }
    if (100..200).contains(&status) {
        return Ok(Head::Interim);
    }
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    let (mut close, mut te, mut cl) = (false, None::<(bool, usize)>, None::<u64>);
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::FieldName(h.name.to_string()))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| H1Error::FieldValue(h.name.to_string()))?;
        if name == http::header::CONNECTION {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name == http::header::TRANSFER_ENCODING {
            // Every coding in order: whether the last is chunked, and how
            // many are.
            let (mut last_chunked, mut chunked) = te.unwrap_or((false, 0));
            for t in tokens(h.value) {
                last_chunked = t.eq_ignore_ascii_case(b"chunked");
                chunked += usize::from(last_chunked);
            }
            te = Some((last_chunked, chunked));
        } else if name == http::header::CONTENT_LENGTH {
            cl = Some(content_length(h.value, cl)?);
        }
        headers.append(name, value);
    }
    let mut keep_alive = res.version == Some(1) && !close;
    let bodyless = to_head || status == 204 || status == 304;
    let body = match (te, cl) {
        _ if bodyless => BodyDecoder::Length(0),
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, and
        // such an answer ends the connection; a final coding other than
        // chunked means "read until close".
        (Some((last_chunked, chunked)), cl) => {
            // The length is the origin's word against its own framing: it
            // is never passed on (docs/SECURITY.md, origin answers
            // re-framed), so a relay frames what it actually sends.
            headers.remove(http::header::CONTENT_LENGTH);
            let chunked_at_end = last_chunked && chunked == 1;
            if cl.is_some() || !chunked_at_end {
                keep_alive = false;
            }
            if chunked_at_end {
                BodyDecoder::Chunked(Chunk::Size, 0)
            } else {
                BodyDecoder::Close
            }
        }
        (None, Some(n)) => BodyDecoder::Length(n),
        (None, None) => {
            keep_alive = false;
            BodyDecoder::Close
        }
    };
    Ok(Head::Final(ResponseHead {
        status,
        headers,
        body,
        keep_alive,
    }))
}

/// Parses `head` into `res`: it must be exactly one whole response head.
fn parse_whole<'h, 'b>(
    res: &mut httparse::Response<'h, 'b>,
    head: &'b [u8],
) -> Result<(), H1Error> {
    match res.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => Ok(()),
        Ok(_) => Err(H1Error::MalformedHead(None)),
        Err(httparse::Error::TooManyHeaders) => Err(H1Error::TooManyFields),
        Err(e) => Err(H1Error::MalformedHead(Some(e))),
    }
}

/// The fields of a `101 Switching Protocols` head, or `None` when `head`
/// (whole, as found by [`head_len`]) has another status.
pub fn parse_switch(head: &Bytes) -> Result<Option<HeaderMap>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut fields);
    parse_whole(&mut res, head)?;
    if res.code != Some(101) {
        return Ok(None);
    }
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::FieldName(h.name.to_string()))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| H1Error::FieldValue(h.name.to_string()))?;
        headers.append(name, value);
    }
    Ok(Some(headers))
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// Decodes a response body from the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes left.
    Length(u64),
    /// Chunked, with the trailer bytes seen so far.
    Chunked(Chunk, usize),
    /// Everything until the origin closes the connection.
    Close,
    /// The body was read whole.
    Done,
}

/// One step of [`BodyDecoder::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed (read from the connection, then call again).
    NeedMore,
    /// The body is complete.
    End,
}

impl BodyDecoder {
    /// Takes what it can from the front of `buf`. `eof` says the connection
    /// was closed after the bytes in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                BodyDecoder::Done => return Ok(Decoded::End),
                BodyDecoder::Length(0) => {
                    *self = BodyDecoder::Done;
                    return Ok(Decoded::End);
                }
                BodyDecoder::Length(left) => {
                    if buf.is_empty() {
                        return more(eof);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    *self = BodyDecoder::Length(left - n as u64);
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                BodyDecoder::Close => {
                    if !buf.is_empty() {
                        return Ok(Decoded::Data(buf.split().freeze()));
                    }
                    if eof {
                        *self = BodyDecoder::Done;
                        return Ok(Decoded::End);
                    }
                    return Ok(Decoded::NeedMore);
                }
                BodyDecoder::Chunked(Chunk::Size, _) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, "chunk-size line")? else {
                        return more(eof);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        BodyDecoder::Chunked(Chunk::Trailers, 0)
                    } else {
                        BodyDecoder::Chunked(Chunk::Data(size), 0)
                    };
                }
                BodyDecoder::Chunked(Chunk::Data(left), _) => {
                    if buf.is_empty() {
                        return more(eof);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    *self = if n as u64 == left {
                        BodyDecoder::Chunked(Chunk::DataEnd, 0)
                    } else {
                        BodyDecoder::Chunked(Chunk::Data(left - n as u64), 0)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                BodyDecoder::Chunked(Chunk::DataEnd, _) => {
                    if buf.len() < 2 {
                        return more(eof);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::ChunkEnd);
                    }
                    buf.advance(2);
                    *self = BodyDecoder::Chunked(Chunk::Size, 0);
                }
                BodyDecoder::Chunked(Chunk::Trailers, seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS - seen, "trailer section")? else {
                        return more(eof);
                    };
                    if line.is_empty() {
                        *self = BodyDecoder::Done;
                        return Ok(Decoded::End);
                    }
                    *self = BodyDecoder::Chunked(Chunk::Trailers, seen + line.len() + 2);
                }
            }
        }
    }
}

fn more(eof: bool) -> Result<Decoded, H1Error> {
    if eof {
        Err(H1Error::BrokenOff)
    } else {
        Ok(Decoded::NeedMore)
    }
}

/// Takes one CRLF-terminated line off the front of `buf` (without its CRLF),
/// or `None` when it is not all there yet. A bare LF is an error.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    what: &'static str,
) -> Result<Option<BytesMut>, H1Error> {
    match memchr::memchr(b'\n', buf) {
        Some(i) if i > max => Err(H1Error::LineTooLong(what)),
        Some(i) => {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(H1Error::BareLf(what));
            }
            let mut line = buf.split_to(i + 1);
            line.truncate(i - 1);
            Ok(Some(line))
        }
        None if buf.len() > max => Err(H1Error::LineTooLong(what)),
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then optional extensions.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest.trim_ascii_start().first(), Some(b';'));
    if digits == 0 || digits > 15 || !rest_ok {
        return Err(H1Error::ChunkSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| H1Error::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::ChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds and parses the head at the front of `raw`.
    fn parse(raw: &[u8], to_head: bool) -> Result<(Head, usize), H1Error> {
        let n = head_len(raw)?.ok_or(H1Error::MalformedHead(None))?;
        Ok((
            parse_response_head(&Bytes::copy_from_slice(&raw[..n]), to_head)?,
            n,
        ))
    }

    fn head(raw: &str) -> ResponseHead {
        match parse(raw.as_bytes(), false).unwrap() {
            (Head::Final(h), n) => {
                assert_eq!(n, raw.len());
                h
            }
            other => panic!("{other:?}"),
        }
    }

    /// Feeds `wire` to a decoder `step` bytes at a time; the body or the error.
    fn decode_all(
        mut d: BodyDecoder,
        wire: &[u8],
        step: usize,
        eof: bool,
    ) -> Result<Vec<u8>, H1Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pieces = wire.chunks(step.max(1)).peekable();
        loop {
            match d.decode(&mut buf, pieces.peek().is_none() && eof)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err(H1Error::BrokenOff),
                },
            }
        }
    }

    #[test]
    fn request_head_frames_itself() {
        let headers = vec![
            (
                HeaderName::from_static("cookie"),
                HeaderValue::from_static("a=1"),
            ),
            (
                HeaderName::from_static("content-length"),
                HeaderValue::from_static("5"),
            ),
            (
                HeaderName::from_static("transfer-encoding"),
                HeaderValue::from_static("chunked"),
            ),
            (
                HeaderName::from_static("host"),
                HeaderValue::from_static("evil"),
            ),
        ];
        let h = request_head("POST", "/a?b=c", "o:1", &headers, RequestBody::Length(3)).unwrap();
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: o:1\r\ncookie: a=1\r\ncontent-length: 3\r\n\r\n"
        );
        assert!(request_head("GET", "/a b", "o", &[], RequestBody::None).is_err());
        assert!(request_head("GET", "/a\r\nx", "o", &[], RequestBody::None).is_err());
        assert!(request_head("G T", "/", "o", &[], RequestBody::None).is_err());
        assert!(request_head("GET", "http://x/", "o", &[], RequestBody::None).is_err());
    }

    #[test]
    fn framing_of_answers() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(
            (h.status, h.body, h.keep_alive),
            (200, BodyDecoder::Length(5), true)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, BodyDecoder::Chunked(Chunk::Size, 0));
        assert!(h.keep_alive);
        // TE and CL: TE wins and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(
            (h.body, h.keep_alive),
            (BodyDecoder::Chunked(Chunk::Size, 0), false)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyDecoder::Close, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyDecoder::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyDecoder::Close, false));
        let h =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(h.body, BodyDecoder::Length(0));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(h.body, BodyDecoder::Length(7));
        match parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).unwrap() {
            (Head::Final(h), _) => assert_eq!(h.body, BodyDecoder::Length(0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_answers_are_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "NOTHTTP\r\n\r\n",
        ] {
            assert!(parse(raw.as_bytes(), false).is_err(), "{raw:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse(many.as_bytes(), false).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "y".repeat(MAX_HEAD));
        assert!(head_len(huge.as_bytes()).is_err());
    }

    #[test]
    fn interim_answers_and_partial_heads() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        match parse(raw, false).unwrap() {
            (Head::Interim, n) => {
                assert_eq!(n, 25);
                assert_eq!(head_len(&raw[n..]), Ok(None));
            }
            other => panic!("{other:?}"),
        }
        // Header values share the head's memory and keep their bytes.
        let h = head("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-E:\r\n\r\n");
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.headers.get("x-e").map(|v| v.as_bytes()), Some(&b""[..]));
    }

    #[test]
    fn chunked_bodies_at_every_split() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: y\r\n\r\n";
        for step in 1..wire.len() {
            let body = decode_all(BodyDecoder::Chunked(Chunk::Size, 0), wire, step, false).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"zz\r\n",
            b"-5\r\nhello\r\n",
            b"5 5\r\nhello\r\n",
            b"1000000000000000\r\n",
            b"5\r\nhel",
        ] {
            let r = decode_all(BodyDecoder::Chunked(Chunk::Size, 0), wire, 3, true);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        let r = decode_all(
            BodyDecoder::Chunked(Chunk::Size, 0),
            long.as_bytes(),
            64,
            false,
        );
        assert!(matches!(r, Err(H1Error::LineTooLong(_))), "{r:?}");
    }

    #[test]
    fn length_and_close_bodies() {
        assert_eq!(
            decode_all(BodyDecoder::Length(5), b"hello", 2, false).unwrap(),
            b"hello"
        );
        assert!(decode_all(BodyDecoder::Length(5), b"hel", 2, true).is_err());
        assert_eq!(
            decode_all(BodyDecoder::Close, b"until close", 4, true).unwrap(),
            b"until close"
        );
        // Bytes after the declared length stay in the buffer (not reusable).
        let mut buf = BytesMut::from(&b"abcXYZ"[..]);
        let mut d = BodyDecoder::Length(3);
        assert_eq!(
            d.decode(&mut buf, false).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf, false).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"XYZ");
    }
}
