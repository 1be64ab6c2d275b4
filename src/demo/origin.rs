//! A tiny HTTP/1.1 origin server for the bundled demo and for tests: a
//! handler maps each request to a [`Reply`], which can also misbehave on
//! purpose (answer late, stop mid-body, send raw bytes). Keep-alive; no
//! request bodies beyond `Content-Length`. Not a production server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct OriginRequest {
    /// Method.
    pub method: String,
    /// Path, as sent.
    pub path: String,
    /// Raw query, if any.
    pub query: Option<String>,
    /// Header fields, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`).
    pub body: Bytes,
    /// Which connection it came on (numbered from 1 in accept order).
    pub conn: u64,
}

impl OriginRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name` (raw).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// What the origin answers.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Status (200 if 0).
    pub status: u16,
    /// Header fields besides `Content-Length`.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the head and this many body bytes, then close the connection.
    pub cut_body_at: Option<usize>,
    /// Instead of an HTTP answer, write these bytes and close.
    pub raw: Option<Bytes>,
    /// Close the connection without answering.
    pub drop: bool,
    /// Switch a WebSocket handshake to WebSocket: echo each text message
    /// and send `tick N` every this long.
    pub websocket: Option<Duration>,
}

impl Reply {
    /// A 200 HTML answer.
    pub fn html(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            body: body.into(),
            ..Reply::default()
        }
    }

    /// A plain answer with this status.
    pub fn status(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            ..Reply::html(body)
        }
    }

    /// This reply, after `d`.
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// A WebSocket (for a handshake request): echoes text messages and
    /// sends `tick N` every `every`.
    pub fn websocket(every: Duration) -> Reply {
        Reply {
            status: 101,
            websocket: Some(every),
            ..Reply::default()
        }
    }

    /// This reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A boxed handler future.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;
/// A request handler.
pub type Handler = Arc<dyn Fn(OriginRequest) -> ReplyFuture + Send + Sync>;

/// Wraps a synchronous handler.
pub fn handler(f: impl Fn(OriginRequest) -> Reply + Send + Sync + 'static) -> Handler {
    let f = Arc::new(f);
    Arc::new(move |req| {
        let f = f.clone();
        Box::pin(async move { f(req) })
    })
}

/// Serves `handler` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, handler: Handler) {
    let mut accepted = 0u64;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        accepted += 1;
        tokio::spawn(connection(tcp, handler.clone(), accepted));
    }
}

/// Binds `addr` and serves `handler` on a spawned task; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    handler: Handler,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, handler))))
}

async fn connection(mut tcp: TcpStream, handler: Handler, conn: u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (req, used) = loop {
            match parse(&buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(()) => return,
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 1 << 20 {
                return;
            }
        };
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            let mut at = used;
            loop {
                // chunk-size line, then that many bytes and CRLF; 0 ends it.
                let line_end = loop {
                    if let Some(p) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                        break at + p;
                    }
                    if !read_more(&mut tcp, &mut buf).await {
                        return;
                    }
                };
                let size_text = String::from_utf8_lossy(&buf[at..line_end]).to_string();
                let Ok(size) =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                else {
                    return;
                };
                let start = line_end + 2;
                while buf.len() < start + size + 2 {
                    if !read_more(&mut tcp, &mut buf).await {
                        return;
                    }
                }
                body.extend_from_slice(&buf[start..start + size]);
                at = start + size + 2;
                if size == 0 {
                    break;
                }
            }
            buf.drain(..at);
            Bytes::from(body)
        } else {
            let body_len: usize = req
                .header("content-length")
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < used + body_len {
                if !read_more(&mut tcp, &mut buf).await {
                    return;
                }
            }
            let body = Bytes::copy_from_slice(&buf[used..used + body_len]);
            buf.drain(..used + body_len);
            body
        };
        let mut req = req;
        req.conn = conn;
        req.body = body;
        let ws_key = req
            .header("sec-websocket-key")
            .filter(|_| {
                req.header("upgrade")
                    .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            })
            .map(str::to_string);
        let reply = handler(req).await;
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.drop {
            return;
        }
        if let Some(raw) = reply.raw {
            let _ = tcp.write_all(&raw).await;
            return;
        }
        if let (Some(every), Some(key)) = (reply.websocket, &ws_key) {
            websocket(tcp, key, &reply.headers, every).await;
            return;
        }
        let status = if reply.status == 0 { 200 } else { reply.status };
        let mut head = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", reply.body.len()));
        if tcp.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if let Some(cut) = reply.cut_body_at {
            let _ = tcp
                .write_all(&reply.body[..cut.min(reply.body.len())])
                .await;
            let _ = tcp.flush().await;
            return;
        }
        if tcp.write_all(&reply.body).await.is_err() {
            return;
        }
    }
}

/// Answers a WebSocket handshake (`101`, the key's accept value and
/// `fields`), then echoes text messages and sends `tick N` every `every`
/// until the peer closes.
async fn websocket(mut tcp: TcpStream, key: &str, fields: &[(String, String)], every: Duration) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    for (k, v) in fields {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if ws.send(Message::Text(t)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = tick.tick() => {
                n += 1;
                if ws.send(Message::Text(format!("tick {n}"))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads more bytes into `buf`; false when the connection ended.
async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

type Parsed = (OriginRequest, usize);

fn parse(buf: &[u8]) -> Result<Option<Parsed>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (target.to_string(), None),
            };
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((
                OriginRequest {
                    method: req.method.unwrap_or("GET").to_string(),
                    path,
                    query,
                    headers,
                    body: Bytes::new(),
                    conn: 0,
                },
                used,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}
