//! Request framing attacks through rain-edge to an origin that records what
//! it receives (issue 7, part 1): each request gets 400 and a closed
//! connection, or exactly one clean request at the origin; nothing smuggled
//! ever reaches it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn form_edge() -> (Origin, Edge, String) {
    let o = Origin::start(|req| match req.path.as_str() {
        "/u/form" => R::html("<form method=\"post\" action=\"upload\"><input name=\"a\"></form>"),
        "/u/upload" => R::html(format!(
            "<p>GOT [{}]</p>",
            String::from_utf8_lossy(&req.body)
        )),
        _ => R::status(404, ""),
    })
    .await;
    let edge = Edge::start(
        &config(
            &[("o", o.url("/u/"), "")],
            HOME,
            "header_timeout = \"2s\"\nbody_timeout = \"2s\"",
        ),
        &[(
            "page.html",
            &layout(r#"<fragment id="f" origin="o" src="/form"></fragment>"#),
        )],
    )
    .await;
    let page = edge.get("/").await;
    let action = attr_value(&page.body, "action", "<form");
    assert!(action.starts_with("/_rain/f/"), "{action}");
    (o, edge, action)
}

/// Sends `raw` and reads until rain-edge closes the connection (or 5 s).
async fn exchange(edge: &Edge, raw: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(raw).await.expect("send");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn smuggling_attempts_get_400_or_exactly_one_clean_request() {
    let (o, edge, action) = form_edge().await;
    let post = |headers: &str, body: &str| {
        format!("POST {action} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n{headers}\r\n{body}")
            .into_bytes()
    };
    let smuggled = "GET /u/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // (case, raw request, expected: Some(body the origin gets) or None for 400)
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "CL and TE",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{smuggled}")),
            None,
        ),
        (
            "TE chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "5\r\na=xyz\r\n0\r\n\r\n"),
            None,
        ),
        (
            "two different Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "a=xyz1"),
            None,
        ),
        (
            "space before the colon",
            post("Transfer-Encoding : chunked\r\n", "5\r\na=xyz\r\n0\r\n\r\n"),
            None,
        ),
        (
            "obs-fold",
            post("Content-Length: 5\r\nX-A: 1\r\n folded\r\n", "a=xyz"),
            None,
        ),
        (
            "bare LF in chunks",
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "5\na=xyz\n0\n\n"),
            None,
        ),
        (
            "0x chunk size",
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "0x5\r\na=xyz\r\n0\r\n\r\n"),
            None,
        ),
        (
            "negative chunk size",
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "-5\r\na=xyz\r\n0\r\n\r\n"),
            None,
        ),
        (
            "huge chunk size",
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "fffffffffffffffff\r\na=xyz\r\n0\r\n\r\n"),
            None,
        ),
        (
            "chunk extension",
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n", "5;x=1\r\na=xyz\r\n0\r\n\r\n"),
            Some("a=xyz"),
        ),
        (
            "Upgrade: h2c with a body",
            post("Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n", "a=xyz"),
            Some("a=xyz"),
        ),
    ];
    for (name, raw, expect) in cases {
        let before = o.requests_to("/u/upload").len();
        let (answer, closed) = exchange(&edge, &raw).await;
        let after = o.requests_to("/u/upload");
        match expect {
            None => {
                assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
                assert!(closed, "{name}: the connection stays open");
                assert_eq!(after.len(), before, "{name}: a request reached the origin");
            }
            Some(body) => {
                assert!(
                    answer.starts_with("HTTP/1.1 303") || answer.starts_with("HTTP/1.1 200"),
                    "{name}: {answer}"
                );
                assert_eq!(after.len(), before + 1, "{name}: not exactly one request");
                let got = after
                    .last()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned());
                assert_eq!(got.as_deref(), Some(body), "{name}");
            }
        }
    }
    assert!(o.requests_to("/u/smuggled").is_empty());
}

#[tokio::test]
async fn pipelined_bytes_after_a_body_are_the_next_request_to_rain_edge() {
    let (o, edge, action) = form_edge().await;
    // A body of 5, then bytes that would be a second request to the origin
    // if the lengths were misread: rain-edge reads them as its own next
    // request (a path it does not route).
    let raw = format!(
        "POST {action} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=xyzGET /u/smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let (answer, closed) = exchange(&edge, raw.as_bytes()).await;
    assert!(closed);
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses.len(), 2, "{answer}");
    assert_eq!(statuses[1], "404", "{answer}");
    let uploads = o.requests_to("/u/upload");
    assert_eq!(uploads.len(), 1);
    assert_eq!(&uploads[0].body[..], b"a=xyz");
    assert!(o.requests_to("/u/smuggled").is_empty());
}

#[tokio::test]
async fn a_stalled_form_body_gets_408() {
    let (o, edge, action) = form_edge().await;
    let head = format!(
        "POST {action} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\na=partial"
    );
    let start = std::time::Instant::now();
    let (answer, closed) = exchange(&edge, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        o.requests_to("/u/upload").is_empty(),
        "a cut-off body reached the origin whole"
    );
}
