//! HTTPS listeners: TLS with a certificate from the config, HTTP/2 and
//! HTTP/1.1 by ALPN, pages that still stream over HTTP/2, and a bad
//! certificate reported by `--check` with its key.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::support::tls::{self_signed, tls_connect, tls_edge_with};
use crate::support::*;

async fn tls_edge(o: &Origin, page: &str) -> (Edge, rustls::pki_types::CertificateDer<'static>) {
    tls_edge_with(o, page, "").await
}

#[tokio::test]
async fn https_pages_over_http11_and_http2() {
    let o = Origin::with_routes(vec![
        ("/a", R::html("<p>FRAG-A</p>")),
        ("/slow", R::html("<p>FRAG-SLOW</p>").after(ms(400))),
    ])
    .await;
    let page = layout(
        r#"<main>HEAD-PART</main><fragment origin="o" src="/a"></fragment><fragment origin="o" src="/slow" timeout="2s"></fragment>"#,
    );
    let (edge, der) = tls_edge(&o, &page).await;

    // HTTP/1.1 over TLS.
    let mut tls = tls_connect(edge.tls, &der, b"http/1.1").await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("FRAG-A") && text.contains("FRAG-SLOW"),
        "{text}"
    );
    // The origin learns the page came over HTTPS.
    let proto = o.requests_to("/a")[0]
        .header("x-forwarded-proto")
        .map(str::to_string);
    assert_eq!(proto.as_deref(), Some("https"));

    // HTTP/2: the head streams before the slow fragment.
    let tls = tls_connect(edge.tls, &der, b"h2").await;
    let (mut client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let start = Instant::now();
    let req = http::Request::get("https://127.0.0.1/")
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("")),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.headers().get("x-request-id").is_some());
    assert!(resp.headers().get("transfer-encoding").is_none());
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut head_at = None;
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
        if head_at.is_none() && find(&got, b"HEAD-PART").is_some() {
            head_at = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("FRAG-A") && text.contains("FRAG-SLOW"),
        "{text}"
    );
    let head_at = head_at.expect("the head");
    assert!(
        head_at < Duration::from_millis(200),
        "head after {head_at:?}"
    );
    assert!(total >= Duration::from_millis(400), "{total:?}");

    // Several requests on one HTTP/2 connection, at once.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let req = http::Request::get("https://127.0.0.1/nothing")
            .body(())
            .expect("request");
        let (resp, _) = client.send_request(req, true).expect("send");
        waits.push(resp);
    }
    for w in waits {
        assert_eq!(w.await.expect("response").status(), 404);
    }
}

#[tokio::test]
async fn a_bad_certificate_is_a_config_error() {
    let dir = TempDir::new();
    dir.write("templates/page.html", &layout("x"));
    dir.write("bad.pem", "not a certificate");
    let (_, key, _) = self_signed();
    dir.write("edge.key", &key);
    let path = dir.write(
        "rain-edge.toml",
        &config(
            &[],
            HOME,
            "tls_listen = [\"127.0.0.1:0\"]\ntls_cert = \"bad.pem\"\ntls_key = \"edge.key\"",
        )
        .replace("{listen}", "127.0.0.1:0"),
    );
    let (ok, out) = run_check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("server.tls_cert"), "{out}");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_at_header_timeout() {
    let o = Origin::with_routes(vec![("/a", R::html("<p>A</p>"))]).await;
    let (edge, _) = tls_edge_with(&o, &layout("x"), "header_timeout = \"300ms\"").await;
    let start = Instant::now();
    let mut tcp = TcpStream::connect(edge.tls).await.expect("connect");
    // Half a ClientHello, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa0, 0x01])
        .await
        .expect("send");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}
