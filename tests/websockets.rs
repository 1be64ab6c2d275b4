//! WebSockets through `/_rain/o/` (docs/configuration.md, client-side
//! calls): the handshake reaches a real WebSocket origin (tokio-tungstenite)
//! with the user's jar, raw frames go both ways, another site's handshake
//! gets 403 and reaches nobody, and a silent one is closed at
//! `idle_timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// What the origin saw of each WebSocket handshake: its `Cookie` field.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// An origin whose `/f` sets cookie `sid=abc` (a fragment), and whose
/// other paths are a WebSocket echo server (tokio-tungstenite).
async fn ws_origin() -> (RawServer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let server = RawServer::start(move |tcp| {
        let seen = s.clone();
        async move {
            let mut peek = [0u8; 2048];
            let n = tcp.peek(&mut peek).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
            if !head.contains("upgrade: websocket") {
                let mut tcp = tcp;
                let mut buf = [0u8; 2048];
                let _ = tcp.read(&mut buf).await;
                let body = "<p>fragment</p>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nset-cookie: sid=abc; Path=/\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                return;
            }
            // The callback's error type is tungstenite's, large by design.
            #[allow(clippy::result_large_err)]
            let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                let cookie = req
                    .headers()
                    .get("cookie")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock().expect("seen").push(cookie);
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                return;
            };
            use futures_util::{SinkExt, StreamExt};
            while let Some(Ok(msg)) = ws.next().await {
                // A close is answered by tungstenite as the stream is read on.
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (server, seen)
}

/// The handshake of RFC 6455's example key, with more fields.
fn handshake(edge: &Edge, path: &str, more: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        edge.addr
    );
    for (k, v) in more {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Reads an answer head from `tcp`.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => got.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

/// A masked client text frame.
fn text_frame(text: &str) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn edge_for(server: &RawServer, extra: &str) -> Edge {
    edge_with(server, extra, "").await
}

async fn edge_with(server: &RawServer, extra: &str, origin_lines: &str) -> Edge {
    Edge::start(
        &config(
            &[("app", format!("http://{}/", server.addr), origin_lines)],
            HOME,
            &format!("admin_listen = \"{{admin}}\"\n{extra}"),
        ),
        &[(
            "page.html",
            &layout("<fragment origin=\"app\" src=\"/f\"></fragment>"),
        )],
    )
    .await
}

#[tokio::test]
async fn a_websocket_reaches_its_origin_with_the_jar_and_echoes_raw_frames() {
    let (origin, seen) = ws_origin().await;
    let edge = edge_for(&origin, "").await;
    let page = edge.get("/").await;
    assert!(page.body.contains("<p>fragment</p>"), "{}", page.body);
    let sid = sid_of(&page).expect("rain_sid");
    let own = format!("http://{}", edge.addr);
    let mut tcp = TcpStream::connect(edge.addr).await.expect("connect");
    let req = handshake(
        &edge,
        "/_rain/o/app/ws",
        &[("Cookie", &format!("rain_sid={sid}")), ("Origin", &own)],
    );
    tcp.write_all(req.as_bytes()).await.expect("send");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(lower.contains("upgrade: websocket"), "{head}");
    // The origin's session cookie rode on the handshake; the browser's
    // rain_sid did not.
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![Some("sid=abc".to_string())]
    );

    for word in ["hello", "through rain-edge"] {
        tcp.write_all(&text_frame(word)).await.expect("frame");
        let mut echo = vec![0u8; 2 + word.len()];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(echo[0], 0x81);
        assert_eq!(
            echo[1] as usize,
            word.len(),
            "an unmasked frame of the word"
        );
        assert_eq!(&echo[2..], word.as_bytes());
    }
    // A close frame ends it: the origin answers close, then the ends close.
    tcp.write_all(&[0x88, 0x80, 1, 2, 3, 4])
        .await
        .expect("close");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert_eq!(rest.first(), Some(&0x88), "{rest:?}");

    let metrics = raw_request(
        edge.admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .body;
    assert!(metrics.contains("rain_websockets_total 1"), "{metrics}");
    assert!(metrics.contains("rain_websockets_open 0"), "{metrics}");
}

#[tokio::test]
async fn another_sites_websocket_handshake_gets_403_and_reaches_nobody() {
    let (origin, seen) = ws_origin().await;
    let edge = edge_for(&origin, "").await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    let cookie = format!("rain_sid={sid}");
    for more in [
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let req = handshake(&edge, "/_rain/o/app/ws", &more);
        let r = raw_request(edge.addr, req.as_bytes()).await;
        assert_eq!(r.status, 403, "{more:?}: {}", r.body);
    }
    assert!(
        seen.lock().expect("seen").is_empty(),
        "a refused handshake reached the origin"
    );
}

#[tokio::test]
async fn a_silent_websocket_is_closed_at_idle_timeout() {
    let (origin, _seen) = ws_origin().await;
    let edge = edge_for(&origin, "idle_timeout = \"600ms\"").await;
    let mut tcp = TcpStream::connect(edge.addr).await.expect("connect");
    tcp.write_all(handshake(&edge, "/_rain/o/app/ws", &[]).as_bytes())
        .await
        .expect("send");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the silent WebSocket was kept open");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn websockets_past_max_websockets_are_refused_and_fragments_still_load() {
    let (origin, seen) = ws_origin().await;
    let edge = edge_with(&origin, "", "max_websockets = 1\nmax_connections = 1").await;
    let mut first = TcpStream::connect(edge.addr).await.expect("connect");
    first
        .write_all(handshake(&edge, "/_rain/o/app/ws", &[]).as_bytes())
        .await
        .expect("send");
    assert!(read_head(&mut first).await.starts_with("HTTP/1.1 101"));
    // A second one while the first is open: refused at once.
    let r = raw_request(
        edge.addr,
        handshake(&edge, "/_rain/o/app/ws", &[]).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(seen.lock().expect("seen").len(), 1);
    // The open WebSocket takes no place of the fragments' (max_connections = 1).
    let page = edge.get("/").await;
    assert!(page.body.contains("<p>fragment</p>"), "{}", page.body);
    drop(first);
}
