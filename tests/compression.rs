//! Pages and text answers are compressed for browsers that accept `br` or
//! `gzip`, and still stream: the head, flushed as one decodable piece,
//! arrives long before a slow fragment.

use std::io::Read;
use std::time::Duration;

use crate::support::*;

const SLOW: Duration = Duration::from_millis(400);

async fn slow_page_edge(extra: &str) -> (Origin, Edge) {
    let o = Origin::with_routes(vec![
        (
            "/slow",
            R::html(format!("<p>{}</p>", "slow words ".repeat(50))).after(SLOW),
        ),
        (
            "/style.css",
            R::html(".a { color: red }\n".repeat(40)).with_header("content-type", "text/css"),
        ),
    ])
    .await;
    let head = format!("<title>compressed</title><!-- {} -->", "head ".repeat(200));
    let page = format!(
        "<!DOCTYPE html><html><head>{head}</head><body><main>HEAD-DONE</main>\
         <fragment origin=\"o\" src=\"/slow\" timeout=\"2s\"></fragment></body></html>"
    );
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "")], HOME, extra),
        &[("page.html", &page)],
    )
    .await;
    (o, edge)
}

/// Decodes what `data` holds of a stream in `coding`, complete or not.
fn decode(coding: &str, data: &[u8]) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader: Box<dyn Read + '_> = match coding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(data)),
        "br" => Box::new(brotli::Decompressor::new(data, 4096)),
        other => panic!("unexpected coding {other}"),
    };
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The de-chunked body bytes that had arrived by the first arrival holding
/// body bytes, and when that was.
fn first_piece(r: &Response) -> (Duration, Vec<u8>) {
    let head_end = find(&r.raw, b"\r\n\r\n").expect("head") + 4;
    let (t, n) = *r
        .arrivals
        .iter()
        .find(|(_, n)| *n > head_end + 8)
        .expect("body bytes");
    let mut chunked = r.raw[head_end..n].to_vec();
    // Keep whole chunks only.
    let mut out = Vec::new();
    while let Some(line_end) = find(&chunked, b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&chunked[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 || chunked.len() < line_end + 2 + size {
            break;
        }
        out.extend_from_slice(&chunked[line_end + 2..line_end + 2 + size]);
        chunked.drain(..(line_end + 4 + size).min(chunked.len()));
    }
    (t, out)
}

#[tokio::test]
async fn pages_are_compressed_and_still_stream() {
    let (_o, edge) = slow_page_edge("").await;
    let plain = edge.get("/").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    for (accept, coding) in [("gzip, deflate, br", "br"), ("gzip", "gzip")] {
        let r = edge.get_with("/", &[("Accept-Encoding", accept)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(coding), "{accept}");
        assert_eq!(r.header("vary"), Some("accept-encoding"));
        assert_eq!(r.header("content-length"), None);
        let whole = decode(coding, &r.bytes);
        assert_eq!(whole, plain.body, "{coding}: the decoded page is the page");
        assert!(
            r.bytes.len() * 2 < plain.body.len(),
            "{coding}: {} of {}",
            r.bytes.len(),
            plain.body.len()
        );
        // The head went out flushed, decodable on its own, before the slow fragment.
        let (t, piece) = first_piece(&r);
        assert!(t < SLOW / 2, "{coding}: first bytes after {t:?}");
        assert!(
            decode(coding, &piece).contains("HEAD-DONE"),
            "{coding}: the first piece"
        );
        assert!(r.total >= SLOW, "{coding}: {:?}", r.total);
    }
    let refused = edge
        .get_with("/", &[("Accept-Encoding", "gzip;q=0, identity")])
        .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
}

#[tokio::test]
async fn stylesheets_are_compressed_and_compression_can_be_turned_off() {
    let (_o, edge) = slow_page_edge("").await;
    let css = edge
        .get_with("/_rain/r/o/style.css", &[("Accept-Encoding", "gzip")])
        .await;
    assert_eq!(css.status, 200, "{}", css.body);
    assert_eq!(css.header("content-encoding"), Some("gzip"));
    assert!(decode("gzip", &css.bytes).contains("color: red"));

    let (_o2, off) = slow_page_edge("compression = false").await;
    let r = off.get_with("/", &[("Accept-Encoding", "gzip, br")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.body.contains("HEAD-DONE"));
}
