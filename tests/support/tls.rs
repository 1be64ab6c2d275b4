//! TLS for tests: a self-signed certificate and a client connection that
//! trusts it and asks for one ALPN protocol.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::{config, Edge, Origin, TempDir, HOME};

/// A self-signed certificate for 127.0.0.1, as (cert PEM, key PEM, DER).
pub fn self_signed() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A TLS connection to `addr` that trusts `der` and asks for `alpn`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    der: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    tls
}

/// rain-edge with a TLS listener on a fresh self-signed certificate, and
/// `server` lines added to `[server]`.
pub async fn tls_edge_with(
    o: &Origin,
    page: &str,
    server: &str,
) -> (Edge, rustls::pki_types::CertificateDer<'static>) {
    tls_edge_on(&[("o", o.url("/"), "")], page, server).await
}

/// As [`tls_edge_with`], with the given origins (name, url, extra lines).
pub async fn tls_edge_on(
    origins: &[(&str, String, &str)],
    page: &str,
    server: &str,
) -> (Edge, rustls::pki_types::CertificateDer<'static>) {
    let (cert, key, der) = self_signed();
    let dir = TempDir::new();
    let cert_path = dir.write("edge.pem", &cert);
    let key_path = dir.write("edge.key", &key);
    let extra = format!(
        "{server}\ntls_listen = [\"{{tls}}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let edge = Edge::start(&config(origins, HOME, &extra), &[("page.html", page)]).await;
    // The key files are read at start; the folder may go.
    drop(dir);
    (edge, der)
}

/// An HTTP/2 connection over TLS to `edge`, driven in a task of its own.
pub async fn h2_client(
    edge: &Edge,
    der: &rustls::pki_types::CertificateDer<'static>,
    builder: h2::client::Builder,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(edge.tls, der, b"h2").await;
    let (client, conn) = builder.handshake(tls).await.expect("h2 handshake");
    (client, tokio::spawn(conn))
}

/// Sends `req` (no body) on `client` and waits up to 5 s for the answer's
/// head; the answer and the request's stream (to reset it).
pub async fn h2_send(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::request::Builder,
) -> (http::Response<h2::RecvStream>, h2::SendStream<bytes::Bytes>) {
    let req = req.body(()).expect("request");
    let (resp, stream) = client.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), resp)
        .await
        .expect("an answer's head in time")
        .expect("an answer");
    (resp, stream)
}

/// `GET https://127.0.0.1{path}` through [`h2_send`].
pub async fn h2_get(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> (http::Response<h2::RecvStream>, h2::SendStream<bytes::Bytes>) {
    h2_send(
        client,
        http::Request::get(format!("https://127.0.0.1{path}")),
    )
    .await
}

/// A test CA and what it signs.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rain-edge test CA");
        let cert = params.self_signed(&key).expect("CA");
        Ca { cert, key }
    }

    /// A certificate for `names`, as (cert PEM, key PEM, DER).
    pub fn issue(&self, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        if client {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}
