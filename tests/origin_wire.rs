//! The origin client on the wire: body framings, interim answers, trickled
//! bytes, keep-alive reuse, origins that close idle connections, and answers
//! that break HTTP. The origin here is scripted byte by byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the scripted origin writes for one request.
#[derive(Clone)]
struct Script {
    /// Written one after another, with a short pause between them.
    pieces: Vec<&'static [u8]>,
    /// Close right after the answer.
    close: bool,
    /// Close a kept-alive connection after this long without a request.
    idle_close: Option<std::time::Duration>,
}

struct RawOrigin {
    addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    async fn start(script: Script) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (conns.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (script, r) = (script.clone(), r.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    loop {
                        // One request head (these requests have no body).
                        let mut byte = [0u8; 1];
                        let read = match script.idle_close {
                            Some(d) if head.is_empty() => {
                                match tokio::time::timeout(d, sock.read(&mut byte)).await {
                                    Ok(r) => r,
                                    Err(_) => return,
                                }
                            }
                            _ => sock.read(&mut byte).await,
                        };
                        match read {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                        if !head.ends_with(b"\r\n\r\n") {
                            continue;
                        }
                        head.clear();
                        r.fetch_add(1, Ordering::SeqCst);
                        for piece in &script.pieces {
                            if sock.write_all(piece).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(ms(5)).await;
                        }
                        if script.close {
                            let _ = sock.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        RawOrigin {
            addr,
            conns,
            requests,
            task,
        }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn keep_alive(pieces: Vec<&'static [u8]>) -> Script {
    Script {
        pieces,
        close: false,
        idle_close: None,
    }
}

async fn edge_for(o: &RawOrigin) -> Edge {
    let page = layout(r#"<ul><li><fragment origin="o" src="/f">FALLBACK</fragment></li></ul>"#);
    Edge::start(
        &config(
            &[("o", format!("http://{}/", o.addr), "timeout = \"2s\"")],
            HOME,
            "",
        ),
        &[("page.html", &page)],
    )
    .await
}

/// Serves `pages` pages through a new rain-edge; each must show `expected`.
async fn pages_show(o: &RawOrigin, pages: usize, expected: &str) {
    let edge = edge_for(o).await;
    for _ in 0..pages {
        assert_eq!(fragment_of(&edge).await, expected);
    }
}

async fn fragment_of(edge: &Edge) -> String {
    let r = edge.get("/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    list_items(&r.body)
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn chunked_trickled_and_interim_answers_are_decoded_and_reused() {
    let o = RawOrigin::start(keep_alive(vec![
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-",
        b"Encoding: chunked\r\n\r\n9;note=x\r\n<b>o",
        b"k</b>\r\n",
        b"1\r\n!\r\n0\r\nX-Trailer: t\r\n",
        b"\r\n",
    ]))
    .await;
    pages_show(&o, 3, "<b>ok</b>!").await;
    assert_eq!(o.requests(), 3);
    assert_eq!(
        o.conns(),
        1,
        "a chunked answer read to its end keeps the connection"
    );
}

#[tokio::test]
async fn sequential_pages_share_one_connection() {
    let o = RawOrigin::start(keep_alive(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n<i>A</i>",
    ]))
    .await;
    pages_show(&o, 10, "<i>A</i>").await;
    assert_eq!((o.requests(), o.conns()), (10, 1));
}

#[tokio::test]
async fn close_delimited_and_connection_close_answers_are_whole_and_not_reused() {
    let o = RawOrigin::start(Script {
        pieces: vec![b"HTTP/1.1 200 OK\r\n\r\n<p>until", b" close</p>"],
        close: true,
        idle_close: None,
    })
    .await;
    pages_show(&o, 2, "<p>until close</p>").await;
    assert_eq!(o.conns(), 2);

    let o = RawOrigin::start(keep_alive(vec![
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    ]))
    .await;
    pages_show(&o, 2, "abc").await;
    // The origin said close (and did not): rain-edge closes it anyway.
    assert_eq!(o.conns(), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_not_a_failure() {
    let o = RawOrigin::start(Script {
        idle_close: Some(ms(30)),
        ..keep_alive(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"])
    })
    .await;
    let edge = edge_for(&o).await;
    for _ in 0..4 {
        assert_eq!(fragment_of(&edge).await, "hi");
        tokio::time::sleep(ms(120)).await;
    }
    assert_eq!(o.requests(), 4);
    assert_eq!(o.conns(), 4);
}

#[tokio::test]
async fn answers_that_break_http_get_the_error_placeholder() {
    let broken: [&'static [u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ];
    for wire in broken {
        assert_eq!(
            fragment_for_answer(wire).await,
            "FALLBACK",
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

/// What a page shows for a fragment whose origin answers `wire` and closes.
async fn fragment_for_answer(wire: &'static [u8]) -> String {
    let o = RawOrigin::start(Script {
        pieces: vec![wire],
        close: true,
        idle_close: None,
    })
    .await;
    let edge = edge_for(&o).await;
    fragment_of(&edge).await
}

/// A body trickled one byte every 5 ms: 300 bytes take about 1.5 s.
static TRICKLE: [u8; 300] = [b'x'; 300];

#[tokio::test]
async fn an_origin_trickling_past_the_deadline_ends_at_the_deadline() {
    let mut pieces: Vec<&'static [u8]> =
        vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 300\r\n\r\n"];
    pieces.extend(TRICKLE.chunks(1));
    let o = RawOrigin::start(Script {
        pieces,
        close: true,
        idle_close: None,
    })
    .await;
    let page = layout(r#"<ul><li><fragment origin="o" src="/f">FALLBACK</fragment></li></ul>"#);
    let edge = Edge::start(
        &config(
            &[("o", format!("http://{}/", o.addr), "timeout = \"300ms\"")],
            HOME,
            "",
        ),
        &[("page.html", &page)],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(
        list_items(&r.body).first().copied(),
        Some("FALLBACK"),
        "{}",
        r.body
    );
    assert!(
        r.total < ms(1000),
        "bytes kept coming, the deadline held: {:?}",
        r.total
    );
}

#[tokio::test]
async fn origin_heads_over_the_limits_get_the_error_placeholder() {
    let many: String = (0..150).map(|i| format!("X-F{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "b".repeat(70 * 1024));
    for extra in [many, huge] {
        let wire: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{extra}\r\nok")
                .into_bytes()
                .into_boxed_slice(),
        );
        assert_eq!(
            fragment_for_answer(wire).await,
            "FALLBACK",
            "{} bytes of head",
            extra.len()
        );
    }
}

/// A resource relayed to the browser on one kept-alive connection, twice:
/// the origin answers with both framings and smuggles a second answer in
/// the bytes its `Content-Length` leaves out. The browser must get each
/// answer framed as rain-edge sent it, and the second request its own
/// answer, never the origin's injected one (docs/SECURITY.md).
#[tokio::test]
async fn an_origin_answer_with_both_framings_is_reframed_for_the_browser() {
    let inner =
        "hello\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: yes\r\n\r\nINJECTED";
    let body: &'static [u8] = Box::leak(
        format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len())
            .into_bytes()
            .into_boxed_slice(),
    );
    let o = RawOrigin::start(Script {
        pieces: vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            body,
        ],
        close: true,
        idle_close: None,
    })
    .await;
    let edge = edge_for(&o).await;
    let mut tcp = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let get = b"GET /_rain/r/o/x.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(get).await.expect("send");
    let first = read_answer(&mut tcp).await;
    tcp.write_all(get).await.expect("send again");
    let second = read_answer(&mut tcp).await;
    for (n, answer) in [(1, &first), (2, &second)] {
        let text = String::from_utf8_lossy(answer);
        let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
        assert!(head.starts_with("HTTP/1.1 200"), "answer {n}: {text}");
        assert!(
            !head.to_ascii_lowercase().contains("content-length: 5"),
            "answer {n} kept the origin's length: {text}"
        );
        assert!(
            !head.contains("X-Injected"),
            "answer {n} is the injected one: {text}"
        );
        // The origin's chunked body, whole, as the content (the "answer"
        // inside it is data, framed as such).
        assert!(text.contains("hello"), "answer {n}: {text}");
        assert!(
            text.ends_with("0\r\n\r\n"),
            "answer {n} not chunk-framed: {text}"
        );
    }
    assert_eq!(o.requests(), 2, "each browser request reached the origin");
}

/// Reads one chunked or length-framed answer from `s` (5 s at most).
async fn read_answer(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < until {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let body = &got[end + 4..];
            let done = if head.contains("transfer-encoding: chunked") {
                find(body, b"0\r\n\r\n").is_some()
            } else {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                body.len() >= len
            };
            if done {
                break;
            }
        }
        match tokio::time::timeout(ms(5000), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got
}
