//! https origins (issue 14, part 1): the origin's certificate checked
//! against a CA of the config (`tls_ca`), a client certificate for an
//! origin that requires one, a certificate for another name refused as
//! `unavailable`, and `tls_verify = false` with its `--check` warning. The
//! CA and every certificate are made here (rcgen); the origin is a real
//! TLS server (tokio-rustls).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::support::tls::Ca;
use crate::support::*;

/// A TLS origin answering every request with `<p>SECURE</p>`; with
/// `client_ca`, it requires a client certificate that CA signed.
async fn tls_origin(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&Ca>,
) -> (RawServer, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let server = RawServer::start(move |tcp| {
        let (acceptor, count) = (acceptor.clone(), count.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                while find(&got, b"\r\n\r\n").is_none() {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let end = find(&got, b"\r\n\r\n").unwrap_or(0) + 4;
                got.drain(..end);
                count.fetch_add(1, Ordering::SeqCst);
                let body = "<p>SECURE</p>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if tls.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (server, answered)
}

/// rain-edge with one https origin at `server` (extra origin lines), whose
/// fragment falls back to `FALLBACK`.
async fn edge_for(server: &RawServer, lines: &str) -> Edge {
    let page = layout(r#"<fragment origin="o" src="/f"><p>FALLBACK</p></fragment>"#);
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    Edge::start(
        &config(&[("o", url, lines)], HOME, ""),
        &[("page.html", &page)],
    )
    .await
}

/// The origin lines that trust the test CA, written into `dir`.
fn trust(ca: &Ca, dir: &TempDir) -> String {
    format!(
        "tls_ca = \"{}\"",
        dir.write("ca.pem", &ca.cert.pem()).display()
    )
}

#[tokio::test]
async fn an_https_origin_with_a_ca_of_the_config() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (cert, key, _) = ca.issue(&["127.0.0.1"], false);
    let (server, answered) = tls_origin(&cert, &key, None).await;
    let edge = edge_for(&server, &trust(&ca, &dir)).await;
    for _ in 0..3 {
        let r = edge.get("/").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("<p>SECURE</p>"), "{}", r.body);
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    assert_eq!(
        server.accepted(),
        1,
        "three pages over one pooled TLS connection"
    );
}

#[tokio::test]
async fn an_origin_that_requires_a_client_certificate() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (cert, key, _) = ca.issue(&["127.0.0.1"], false);
    let (client_cert, client_key, _) = ca.issue(&["rain-edge"], true);
    let client_cert = dir.write("client.pem", &client_cert);
    let client_key = dir.write("client.key", &client_key);
    let (server, answered) = tls_origin(&cert, &key, Some(&ca)).await;
    // Without a client certificate: the handshake fails, the fragment falls
    // back, the page stands.
    let mut without = edge_for(&server, &trust(&ca, &dir)).await;
    let r = without.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("FALLBACK"), "{}", r.body);
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    let logs = without.stop_and_logs();
    assert!(logs.contains("class=\"unavailable\""), "{logs}");
    // With one: the origin answers.
    let with = edge_for(
        &server,
        &format!(
            "{}\ntls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
            trust(&ca, &dir),
            client_cert.display(),
            client_key.display()
        ),
    )
    .await;
    let r = with.get("/").await;
    assert!(r.body.contains("<p>SECURE</p>"), "{}", r.body);
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_unless_verification_is_off() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (cert, key, _) = ca.issue(&["other.example"], false);
    let (server, answered) = tls_origin(&cert, &key, None).await;
    let mut strict = edge_for(&server, &trust(&ca, &dir)).await;
    let r = strict.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("FALLBACK"), "{}", r.body);
    assert_eq!(answered.load(Ordering::SeqCst), 0, "nothing was sent to it");
    let logs = strict.stop_and_logs();
    assert!(logs.contains("class=\"unavailable\""), "{logs}");
    // The system's roots do not know this CA either.
    let bare = edge_for(&server, "").await;
    let r = bare.get("/").await;
    assert!(r.body.contains("FALLBACK"), "{}", r.body);
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    // tls_verify = false accepts it, and --check says so.
    let lax = edge_for(&server, "tls_verify = false").await;
    let r = lax.get("/").await;
    assert!(r.body.contains("<p>SECURE</p>"), "{}", r.body);
    let (ok, out) = run_check(&lax.config);
    assert!(ok, "{out}");
    assert!(out.contains("origins.o.tls_verify"), "{out}");
}

#[tokio::test]
async fn tls_keys_are_checked_with_the_config() {
    let dir = TempDir::new();
    let bad = dir.write("bad.pem", "not a certificate");
    dir.write("templates/page.html", &layout("x"));
    let cases = [
        (
            "http://127.0.0.1:1/",
            format!("tls_ca = \"{}\"", bad.display()),
            "origins.o.tls_ca: applies to https origins only",
        ),
        (
            "https://127.0.0.1:1/",
            format!("tls_ca = \"{}\"", bad.display()),
            "origins.o.tls_ca",
        ),
        (
            "https://127.0.0.1:1/",
            format!("tls_client_cert = \"{}\"", bad.display()),
            "tls_client_cert and tls_client_key go together",
        ),
        (
            "https://127.0.0.1:1/",
            format!(
                "tls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
                bad.display(),
                bad.display()
            ),
            "origins.o.tls_client_cert",
        ),
    ];
    for (url, lines, want) in cases {
        let text =
            config(&[("o", url.to_string(), &lines)], HOME, "").replace("{listen}", "127.0.0.1:1");
        let path = dir.write("rain-edge.toml", &text);
        let (ok, out) = run_check(&path);
        assert!(!ok, "{lines}: {out}");
        assert!(out.contains(want), "{lines}: {out}");
    }
}
