//! HTTP/2 to origins (`http2`): Debian's nginx as an HTTP/2 origin over TLS
//! (ALPN, `auto`) and over plain http with prior knowledge (`always`); its
//! access log shows the protocol and connection of every request. An
//! in-process HTTP/2 origin (the `h2` crate) takes a form's body over a
//! stream, and goes away (GOAWAY, then a dropped connection) to show that
//! a connection going away or broken is never used again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::tls::Ca;
use crate::support::*;

/// nginx serving `files` over HTTP/2 with TLS (`tls`) and with prior
/// knowledge over plain http (`plain`), and over HTTP/1.1 with TLS
/// (`tls_h1`); every request logged as `PROTOCOL CONNECTION URI`.
struct H2Nginx {
    tls: SocketAddr,
    plain: SocketAddr,
    tls_h1: SocketAddr,
    nginx: Nginx,
}

impl H2Nginx {
    async fn start(cert: &str, key: &str, files: &[(&str, &str)]) -> H2Nginx {
        let dir = TempDir::new();
        for (name, body) in files {
            dir.write(&format!("www/{name}"), body);
        }
        let cert = dir.write("origin.pem", cert).display().to_string();
        let key = dir.write("origin.key", key).display().to_string();
        let root = dir.0.display().to_string();
        let (tls, plain, tls_h1) = (free_port(), free_port(), free_port());
        let http = format!(
            "log_format proto '$server_protocol $connection $request_uri';\n\
             access_log {root}/access.log proto;\n\
             ssl_certificate {cert};\n  ssl_certificate_key {key};\n  default_type text/html;\n\
             server {{ listen 127.0.0.1:{tls} ssl http2; root {root}/www; }}\n\
             server {{ listen 127.0.0.1:{plain} http2; root {root}/www; }}\n\
             server {{ listen 127.0.0.1:{tls_h1} ssl; root {root}/www; }}"
        );
        let nginx = Nginx::start(dir, &http, &[tls, plain, tls_h1]).await;
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        H2Nginx {
            tls: addr(tls),
            plain: addr(plain),
            tls_h1: addr(tls_h1),
            nginx,
        }
    }

    /// The access log: (protocol, connection number, URI) per request.
    fn log(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.nginx.dir.0.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split(' ');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect()
    }
}

const FRAGMENTS: usize = 12;

/// A page of `FRAGMENTS` fragments of origin `o`, files `f0.html`...
fn many_fragments() -> (String, Vec<(String, String)>) {
    let page: String = (0..FRAGMENTS)
        .map(|i| format!("<fragment origin=\"o\" src=\"/f{i}.html\"><i>FALLBACK</i></fragment>"))
        .collect();
    let files = (0..FRAGMENTS)
        .map(|i| (format!("f{i}.html"), format!("<p>piece {i}</p>")))
        .collect();
    (layout(&page), files)
}

async fn nginx_with_fragments(ca: &Ca) -> H2Nginx {
    let (cert, key, _) = ca.issue(&["localhost", "127.0.0.1"], false);
    let (_, files) = many_fragments();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_str()))
        .collect();
    H2Nginx::start(&cert, &key, &files).await
}

async fn edge_to(url: String, lines: &str) -> Edge {
    let (page, _) = many_fragments();
    Edge::start(
        &config(&[("o", url, lines)], HOME, "admin_listen = \"{admin}\""),
        &[("page.html", &page)],
    )
    .await
}

fn assert_whole(r: &Response) {
    assert_eq!(r.status, 200);
    for i in 0..FRAGMENTS {
        assert!(r.body.contains(&format!("<p>piece {i}</p>")), "{}", r.body);
    }
    assert!(!r.body.contains("FALLBACK"), "{}", r.body);
}

async fn server_view(edge: &Edge) -> serde_json::Value {
    let req = "GET /origins/o HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    let r = raw_request(edge.admin, req.as_bytes()).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    v["servers"][0].clone()
}

#[tokio::test]
async fn an_https_origin_that_offers_http2_gets_a_pages_fragments_on_one_connection() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let nginx = nginx_with_fragments(&ca).await;
    let trust = format!(
        "tls_ca = \"{}\"",
        dir.write("ca.pem", &ca.cert.pem()).display()
    );
    let edge = edge_to(format!("https://localhost:{}/", nginx.tls.port()), &trust).await;
    for _ in 0..3 {
        assert_whole(&edge.get("/").await);
    }
    let log = nginx.log();
    assert_eq!(log.len(), 3 * FRAGMENTS, "{log:?}");
    assert!(log.iter().all(|(p, _, _)| p == "HTTP/2.0"), "{log:?}");
    let connections: std::collections::HashSet<&String> = log.iter().map(|(_, c, _)| c).collect();
    // The first page's fragments wait for the first connection and share
    // it; the next pages take streams on it.
    assert!(
        connections.len() <= 2,
        "{} connections for {} fragments: {log:?}",
        connections.len(),
        3 * FRAGMENTS
    );
    let server = server_view(&edge).await;
    assert_eq!(server["protocol"], "h2", "{server}");
}

#[tokio::test]
async fn http2_never_and_an_origin_without_http2_stay_on_http1() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let nginx = nginx_with_fragments(&ca).await;
    let trust = format!(
        "tls_ca = \"{}\"",
        dir.write("ca.pem", &ca.cert.pem()).display()
    );
    let never = edge_to(
        format!("https://localhost:{}/", nginx.tls.port()),
        &format!("{trust}\nhttp2 = \"never\""),
    )
    .await;
    assert_whole(&never.get("/").await);
    // `auto` with an origin that does not offer h2 by ALPN.
    let plain_h1 = edge_to(
        format!("https://localhost:{}/", nginx.tls_h1.port()),
        &trust,
    )
    .await;
    assert_whole(&plain_h1.get("/").await);
    let log = nginx.log();
    assert_eq!(log.len(), 2 * FRAGMENTS, "{log:?}");
    assert!(log.iter().all(|(p, _, _)| p == "HTTP/1.1"), "{log:?}");
    assert_eq!(server_view(&plain_h1).await["protocol"], "http/1.1");
    assert_eq!(server_view(&never).await["protocol"], "http/1.1");
}

#[tokio::test]
async fn http2_always_speaks_prior_knowledge_to_a_plain_origin() {
    let ca = Ca::new();
    let nginx = nginx_with_fragments(&ca).await;
    let edge = edge_to(
        format!("http://127.0.0.1:{}/", nginx.plain.port()),
        "http2 = \"always\"",
    )
    .await;
    for _ in 0..2 {
        assert_whole(&edge.get("/").await);
    }
    let log = nginx.log();
    assert_eq!(log.len(), 2 * FRAGMENTS);
    assert!(log.iter().all(|(p, _, _)| p == "HTTP/2.0"), "{log:?}");
    let connections: std::collections::HashSet<&String> = log.iter().map(|(_, c, _)| c).collect();
    assert!(connections.len() <= 2, "{log:?}");
    let server = server_view(&edge).await;
    assert_eq!(server["protocol"], "h2", "{server}");
    assert_eq!(server["http2_connections"], 1, "{server}");

    // `always` toward an https origin that does not agree to h2: the
    // fragments fail as unavailable, the page stands.
    let dir = TempDir::new();
    let trust = format!(
        "tls_ca = \"{}\"",
        dir.write("ca.pem", &ca.cert.pem()).display()
    );
    let refused = edge_to(
        format!("https://localhost:{}/", nginx.tls_h1.port()),
        &format!("{trust}\nhttp2 = \"always\""),
    )
    .await;
    let r = refused.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.matches("FALLBACK").count(), FRAGMENTS, "{}", r.body);
}

/// What the in-process HTTP/2 origin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    bodies: Mutex<Vec<(String, Vec<u8>)>>,
}

/// An h2c origin (prior knowledge): answers each stream with its path, and
/// a POST with the body it got; with `goaway_after`, a connection sends
/// GOAWAY after that many streams and then closes.
async fn h2_origin(goaway_after: Option<usize>) -> (RawServer, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let server = RawServer::start(move |tcp| {
        let seen = s.clone();
        async move {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            let mut streams = 0;
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                streams += 1;
                let path = req.uri().path().to_string();
                let mut body = req.into_body();
                let seen = seen.clone();
                tokio::spawn(async move {
                    if path == "/stall" {
                        // Never answers: the stream stays open until reset.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        drop(respond);
                        return;
                    }
                    let mut got = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        got.extend_from_slice(&chunk);
                    }
                    let text = if path == "/form" {
                        "<form method=\"post\" action=\"/submit\"><input name=\"name\"></form>"
                            .to_string()
                    } else if got.is_empty() {
                        format!("<p>path {path}</p>")
                    } else {
                        format!("<p>posted {}</p>", String::from_utf8_lossy(&got))
                    };
                    seen.bodies.lock().expect("seen").push((path, got));
                    let answer = http::Response::builder()
                        .status(200)
                        .header("content-type", "text/html")
                        .body(())
                        .expect("answer");
                    if let Ok(mut send) = respond.send_response(answer, false) {
                        let _ = send.send_data(bytes::Bytes::from(text), true);
                    }
                });
                if goaway_after == Some(streams) {
                    conn.graceful_shutdown();
                }
            }
        }
    })
    .await;
    (server, seen)
}

/// rain-edge with origin `o` at `server`, over h2c (more origin `lines`),
/// and a page of `body`.
async fn h2c_edge(server: &RawServer, lines: &str, body: &str) -> Edge {
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    Edge::start(
        &config(
            &[("o", url, &format!("http2 = \"always\"\n{lines}"))],
            HOME,
            "admin_listen = \"{admin}\"",
        ),
        &[("page.html", &layout(body))],
    )
    .await
}

#[tokio::test]
async fn a_form_posts_its_body_over_an_http2_stream() {
    let (server, seen) = h2_origin(None).await;
    let edge = h2c_edge(
        &server,
        "",
        "<fragment origin=\"o\" src=\"/form\"></fragment>",
    )
    .await;
    let page = edge.get("/").await;
    let action = attr_value(&page.body, "action", "<form");
    let r = post(
        edge.addr,
        &action,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=ann&n=1",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<p>posted name=ann&n=1</p>"), "{}", r.body);
    let bodies = seen.bodies.lock().expect("seen").clone();
    assert!(
        bodies
            .iter()
            .any(|(p, b)| p == "/submit" && b == b"name=ann&n=1"),
        "{bodies:?}"
    );
}

#[tokio::test]
async fn an_http2_connection_going_away_is_not_used_again() {
    // Each connection takes 3 streams, then says GOAWAY and closes.
    let (server, seen) = h2_origin(Some(3)).await;
    let one = "<fragment origin=\"o\" src=\"/one\"><i>FALLBACK</i></fragment>";
    let edge = h2c_edge(&server, "", one).await;
    for i in 0..9 {
        let r = edge.get("/").await;
        assert!(r.body.contains("<p>path /one</p>"), "page {i}: {}", r.body);
        // Let the GOAWAY arrive before the next page.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 9 streams, 3 per connection: new connections, and no page broken.
    assert!(seen.connections.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_stream_past_its_deadline_is_reset_and_the_connection_kept() {
    let (server, seen) = h2_origin(None).await;
    let page = "<fragment origin=\"o\" src=\"/stall\"><i>LATE</i></fragment>\
                <fragment origin=\"o\" src=\"/quick\"><i>FALLBACK</i></fragment>";
    let edge = h2c_edge(&server, "timeout = \"300ms\"", page).await;
    for _ in 0..3 {
        let r = edge.get("/").await;
        assert!(r.body.contains("<i>LATE</i>"), "{}", r.body);
        assert!(r.body.contains("<p>path /quick</p>"), "{}", r.body);
        assert!(r.total < Duration::from_secs(2), "{:?}", r.total);
    }
    // The stalled streams were reset; their connection carried the rest.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_origin_that_answers_http2_with_garbage_fails_its_fragments_not_the_page() {
    // `always` toward a server that answers the preface with HTTP/1.1 text.
    let junk = RawServer::start(|mut tcp| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let page = "<fragment origin=\"o\" src=\"/f\"><i>FALLBACK</i></fragment><p>REST</p>";
    let edge = h2c_edge(&junk, "timeout = \"2s\"", page).await;
    for _ in 0..2 {
        let r = edge.get("/").await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("<i>FALLBACK</i>") && r.body.contains("<p>REST</p>"),
            "{}",
            r.body
        );
        assert!(!r.body.contains("hello"), "{}", r.body);
        assert!(r.total < Duration::from_secs(2), "{:?}", r.total);
    }
    // Each page made a new connection: a broken one is not kept.
    assert_eq!(junk.accepted(), 2);
}

#[tokio::test]
async fn health_checks_speak_http2_to_an_origin_that_speaks_nothing_else() {
    let (server, seen) = h2_origin(None).await;
    let one = "<fragment origin=\"o\" src=\"/one\"><i>FALLBACK</i></fragment>";
    let edge = h2c_edge(
        &server,
        "health_check = \"/health\"\nhealth_interval = \"100ms\"",
        one,
    )
    .await;
    let start = std::time::Instant::now();
    let probes = || {
        let bodies = seen.bodies.lock().expect("seen");
        bodies.iter().filter(|(p, _)| p == "/health").count()
    };
    while probes() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no health probes over h2c"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = server_view(&edge).await;
    assert_eq!(server["health"], "up", "{server}");
    assert!(edge.get("/").await.body.contains("<p>path /one</p>"));
}
