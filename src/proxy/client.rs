//! The origin client: pingora's HTTP/1.1 connector with its keep-alive pool,
//! one peer per origin, a cap on concurrent connections per origin, and a
//! bounded body read. A connection goes back to the pool only when its
//! answer was read to the end; a timed-out or failed exchange is dropped
//! (closed), never reused.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use tokio::sync::Semaphore;

use super::decode::{decode_content, to_utf8};
use crate::aggregate::{FetchFailure, FetchResponse};
use crate::config::{Config, Origin};

/// How long an idle pooled connection to an origin is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept in the pool, over all origins.
const POOL_SIZE: usize = 4096;

/// One origin's connection target and its concurrency cap.
struct OriginConn {
    peer: Option<HttpPeer>,
    resolve_error: Option<String>,
    limit: Arc<Semaphore>,
    max: usize,
}

/// Pooled HTTP/1.1 client to the configured origins.
pub struct OriginClient {
    connector: Connector,
    origins: std::sync::RwLock<HashMap<String, Arc<OriginConn>>>,
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
        let mut opts = ConnectorOptions::new(POOL_SIZE);
        opts.keepalive_pool_size = POOL_SIZE;
        let client = OriginClient {
            connector: Connector::new(Some(opts)),
            origins: Default::default(),
        };
        client.configure(cfg);
        client
    }

    /// Re-reads the origins of a new configuration (names are resolved now;
    /// the pool of idle connections is kept).
    pub fn configure(&self, cfg: &Config) {
        let mut map = HashMap::new();
        let old = self.origins.read().map(|m| m.clone()).unwrap_or_default();
        for (name, o) in &cfg.origins {
            let (peer, resolve_error) = match (o.host.as_str(), o.port).to_socket_addrs() {
                Ok(mut addrs) => match addrs.next() {
                    Some(addr) => {
                        let mut peer = HttpPeer::new(addr, false, o.host.clone());
                        peer.options.idle_timeout = Some(POOL_IDLE);
                        peer.options.connection_timeout = Some(o.timeout);
                        (Some(peer), None)
                    }
                    None => (None, Some(format!("`{}` resolves to no address", o.host))),
                },
                Err(e) => (None, Some(format!("cannot resolve `{}`: {e}", o.host))),
            };
            // Keep the old semaphore when the cap did not change, so that
            // requests in flight across a reload still count against it.
            let limit = old
                .get(name)
                .filter(|c| c.max == o.max_connections)
                .map(|c| c.limit.clone())
                .unwrap_or_else(|| Arc::new(Semaphore::new(o.max_connections)));
            if let Some(e) = &resolve_error {
                tracing::warn!(origin = %name, error = %e, "origin address not resolved; its fragments fail as unavailable");
            }
            map.insert(
                name.clone(),
                Arc::new(OriginConn {
                    peer,
                    resolve_error,
                    limit,
                    max: o.max_connections,
                }),
            );
        }
        if let Ok(mut m) = self.origins.write() {
            *m = map;
        }
    }

    fn conn(&self, name: &str) -> Option<Arc<OriginConn>> {
        self.origins.read().ok()?.get(name).cloned()
    }

    /// The origin's peer and a place among its `max_connections` (waiting in
    /// line for one when all are taken).
    async fn slot(
        &self,
        origin: &str,
    ) -> Result<(HttpPeer, tokio::sync::OwnedSemaphorePermit), FetchFailure> {
        let conn = self.conn(origin).ok_or_else(|| {
            FetchFailure::Unavailable(format!("origin `{origin}` is not configured"))
        })?;
        let peer = conn.peer.clone().ok_or_else(|| {
            FetchFailure::Unavailable(conn.resolve_error.clone().unwrap_or_default())
        })?;
        let permit = conn
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FetchFailure::Unavailable("origin client closed".into()))?;
        Ok((peer, permit))
    }

    /// Sends one request and reads the answer's head; the body is then read
    /// through the returned [`Exchange`] (streamed), which goes back to the
    /// pool only when read to the end.
    pub async fn open(&self, req: &OriginRequest<'_>) -> Result<Exchange<'_>, FetchFailure> {
        let (peer, permit) = self.slot(&req.origin.name).await?;
        let mut header = Some(build_request(req)?);
        // A pooled connection may have been closed by the origin meanwhile:
        // such a failure before any answer is retried on a fresh connection.
        let mut attempts = 0;
        let session = loop {
            attempts += 1;
            // The header is built again only for a retry (rare), not cloned
            // for every request.
            let head = match header.take() {
                Some(h) => h,
                None => build_request(req)?,
            };
            let (mut session, reused) =
                self.connector.get_http_session(&peer).await.map_err(|e| {
                    FetchFailure::Unavailable(format!("connecting to `{}`: {e}", req.origin.name))
                })?;
            let sent = match session.write_request_header(Box::new(head)).await {
                Ok(_) => session.read_response().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => break session,
                // NOTE: bodies go through open_upload, which never retries
                // once any of the body was sent.
                Err(e) if reused && attempts < 3 => {
                    tracing::debug!(origin = %req.origin.name, error = %e, "stale pooled connection, retrying");
                }
                Err(e) => return Err(exchange_failure(&req.origin.name, &e)),
            }
        };
        if session.resp_header().is_none() {
            return Err(FetchFailure::Error("no response header".into()));
        }
        Ok(Exchange {
            client: self,
            session,
            peer,
            _permit: permit,
        })
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
    ) -> Result<Upload<'_>, FetchFailure> {
        let (peer, permit) = self.slot(&req.origin.name).await?;
        let mut header = build_request(req)?;
        let framing = match length {
            Some(n) => header.insert_header(http::header::CONTENT_LENGTH, n.to_string()),
            None => header.insert_header(http::header::TRANSFER_ENCODING, "chunked"),
        };
        framing.map_err(|e| FetchFailure::Error(format!("cannot build the request: {e}")))?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut session, reused) =
                self.connector.get_http_session(&peer).await.map_err(|e| {
                    FetchFailure::Unavailable(format!("connecting to `{}`: {e}", req.origin.name))
                })?;
            match session.write_request_header(Box::new(header.clone())).await {
                Ok(_) => {
                    return Ok(Upload {
                        client: self,
                        session,
                        peer,
                        permit,
                    })
                }
                Err(e) if reused && attempts < 3 => {
                    tracing::debug!(origin = %req.origin.name, error = %e, "stale pooled connection, retrying");
                }
                Err(e) => return Err(exchange_failure(&req.origin.name, &e)),
            }
        }
    }

    /// Sends one request and reads the whole answer (bounded), decoded to UTF-8.
    pub async fn send(&self, mut req: OriginRequest<'_>) -> Result<FetchResponse, FetchFailure> {
        let mut ex = self.open(&req).await?;
        let status = ex.status();
        let location = ex.header_str("location");
        let content_type = ex.header_str("content-type");
        let content_encoding = ex.header_str("content-encoding");
        let set_cookies = ex.set_cookies();
        if let Some(tx) = req.on_head.take() {
            let _ = tx.send(set_cookies.clone());
        }
        if let Some(len) = ex
            .header_str("content-length")
            .and_then(|l| l.trim().parse::<u64>().ok())
        {
            if len > req.max_bytes {
                return Err(FetchFailure::Error(format!(
                    "body of {len} bytes is over the {} byte limit",
                    req.max_bytes
                )));
            }
        }
        let mut raw = BytesMut::new();
        while let Some(chunk) = ex.chunk().await? {
            if (raw.len() + chunk.len()) as u64 > req.max_bytes {
                return Err(FetchFailure::Error(format!(
                    "body over the {} byte limit",
                    req.max_bytes
                )));
            }
            raw.extend_from_slice(&chunk);
        }
        ex.finish().await;
        let decoded = decode_content(raw.freeze(), content_encoding.as_deref(), req.max_bytes)
            .map_err(|e| FetchFailure::Error(e.to_string()))?;
        let body = to_utf8(decoded, content_type.as_deref());
        Ok(FetchResponse {
            status,
            location,
            set_cookies,
            body,
        })
    }
}

/// A request to an origin whose body is being streamed.
pub struct Upload<'c> {
    client: &'c OriginClient,
    session: HttpSession,
    peer: HttpPeer,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl<'c> Upload<'c> {
    /// Sends the next piece of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchFailure> {
        self.session
            .write_body(chunk)
            .await
            .map(|_| ())
            .map_err(|e| FetchFailure::Unavailable(format!("sending the body: {e}")))
    }

    /// Ends the body and reads the answer's head.
    pub async fn finish(mut self) -> Result<Exchange<'c>, FetchFailure> {
        let sent = match self.session.finish_body().await {
            Ok(_) => self.session.read_response().await.map(|_| ()),
            Err(e) => Err(e),
        };
        sent.map_err(|e| exchange_failure("origin", &e))?;
        if self.session.resp_header().is_none() {
            return Err(FetchFailure::Error("no response header".into()));
        }
        let Upload {
            client,
            session,
            peer,
            permit,
        } = self;
        Ok(Exchange {
            client,
            session,
            peer,
            _permit: permit,
        })
    }
}

/// One exchange with an origin whose head has been read.
pub struct Exchange<'c> {
    client: &'c OriginClient,
    session: HttpSession,
    peer: HttpPeer,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Exchange<'_> {
    fn head(&self) -> Option<&pingora::http::ResponseHeader> {
        self.session.resp_header()
    }

    /// The answer's status.
    pub fn status(&self) -> u16 {
        self.head().map_or(502, |h| h.status.as_u16())
    }

    /// The answer's header fields.
    pub fn headers(&self) -> Option<&http::HeaderMap> {
        self.head().map(|h| &h.headers)
    }

    /// The first value of header `name`, if it is text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.headers()?.get(name)?.to_str().ok().map(str::to_string)
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers()
            .map(|h| {
                h.get_all("set-cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next piece of the body, as sent (no content decoding); `None` at
    /// the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchFailure> {
        self.session
            .read_body_bytes()
            .await
            .map_err(|e| FetchFailure::Error(format!("body broken off: {e}")))
    }

    /// Gives the connection back to the pool (if its answer was read whole
    /// and it may be kept alive; otherwise it is closed).
    pub async fn finish(self) {
        let Exchange {
            client,
            session,
            peer,
            ..
        } = self;
        client
            .connector
            .release_http_session(session, &peer, Some(POOL_IDLE))
            .await;
    }
}

/// Classifies a failed exchange: a malformed answer is `error`; a closed,
/// reset or refused connection is `unavailable`.
fn exchange_failure(origin: &str, e: &pingora::Error) -> FetchFailure {
    use pingora::ErrorType as T;
    match e.etype() {
        T::InvalidHTTPHeader | T::H1Error | T::H2Error | T::InvalidH2 | T::Custom(_) => {
            FetchFailure::Error(format!("malformed answer from `{origin}`: {e}"))
        }
        _ => FetchFailure::Unavailable(format!("no answer from `{origin}`: {e}")),
    }
}

fn build_request(req: &OriginRequest<'_>) -> Result<RequestHeader, FetchFailure> {
    let bad = |e: pingora::BError| FetchFailure::Error(format!("cannot build the request: {e}"));
    // NOTE: no case-preserving name map: header names go out in lower case
    // (HTTP/1.1 field names are case-insensitive), and building is cheaper.
    let mut h = RequestHeader::build_no_case(
        req.method,
        req.path_and_query.as_bytes(),
        Some(req.headers.len() + 1),
    )
    .map_err(bad)?;
    h.insert_header(http::header::HOST, req.origin.authority.as_str())
        .map_err(bad)?;
    for (name, value) in &req.headers {
        h.append_header(name.clone(), value.clone()).map_err(bad)?;
    }
    Ok(h)
}
