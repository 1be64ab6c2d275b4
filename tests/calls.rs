//! Client-side calls (docs/configuration.md, client-side calls): every
//! origin request carries `X-Rain-Base`; under it the browser reaches the
//! origin with its hidden session, for any method, the answer passed on as
//! it is and streamed as it comes (server-sent events); state-changing calls
//! from another site get 403 and reach nobody.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// An answer of `content_type` (the test origin's answers are HTML).
fn typed(status: u16, content_type: &str, body: impl Into<bytes::Bytes>) -> R {
    let mut r = R::status(status, body);
    r.headers.retain(|(n, _)| n != "content-type");
    r.with_header("content-type", content_type)
}

/// An API origin: `/app/api/count` counts per session (cookie `sid`, set on
/// the first call), `/app/api/echo` answers 201 with what it got,
/// `/app/api/moved` redirects inside the origin, `/app/f` is a fragment.
async fn api_origin() -> Origin {
    let next = Arc::new(AtomicU32::new(0));
    let counts = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u32,
    >::new()));
    Origin::start(move |req| match req.path.as_str() {
        "/app/api/count" => {
            let sent = req
                .header("cookie")
                .and_then(|c| c.split("; ").find_map(|p| p.strip_prefix("sid=")))
                .map(str::to_string);
            let mut counts = counts.lock().expect("counts");
            match sent.filter(|s| counts.contains_key(s)) {
                Some(sid) => {
                    let n = counts.entry(sid).or_insert(0);
                    *n += 1;
                    typed(200, "application/json", format!("{{\"count\":{n}}}"))
                }
                None => {
                    let sid = format!("s{}", next.fetch_add(1, Ordering::SeqCst));
                    counts.insert(sid.clone(), 1);
                    typed(200, "application/json", "{\"count\":1}")
                        .with_header("set-cookie", &format!("sid={sid}; Path=/app/; HttpOnly"))
                }
            }
        }
        "/app/api/echo" => typed(
            201,
            "text/plain",
            format!(
                "{} {} {}",
                req.method,
                req.header("content-type").unwrap_or("-"),
                String::from_utf8_lossy(&req.body)
            ),
        )
        .with_header("x-thing", "kept"),
        "/app/api/moved" => R::status(302, "").with_header("location", "/app/api/echo?from=moved"),
        "/app/api/bold" => R::html("<script>steal()</script>")
            .with_header("clear-site-data", "\"cookies\"")
            .with_header("strict-transport-security", "max-age=99999999")
            .with_header("access-control-allow-origin", "https://sibling.example")
            .with_header("access-control-allow-credentials", "true")
            .with_header("x-kept", "yes"),
        "/app/f" => R::html("<p>fragment</p>"),
        _ => R::status(404, "no"),
    })
    .await
}

async fn edge_for(origin: &Origin, page: &str) -> Edge {
    Edge::start(
        &config(&[("app", origin.url("/app/"), "")], HOME, ""),
        &[("page.html", &layout(page))],
    )
    .await
}

/// A request with the user's cookie and more fields.
async fn call(
    edge: &Edge,
    method: &str,
    path: &str,
    sid: &str,
    more: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: rain_sid={sid}\r\n",
        edge.addr
    );
    for (k, v) in more {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_request(edge.addr, req.as_bytes()).await
}

#[tokio::test]
async fn every_origin_request_carries_x_rain_base() {
    let origin = api_origin().await;
    let edge = edge_for(
        &origin,
        "<fragment origin=\"app\" src=\"/f\"></fragment><fragment id=\"p\" origin=\"app\" src=\"/f\" public></fragment>",
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.body.matches("<p>fragment</p>").count(), 2, "{}", r.body);
    let sid = sid_of(&r).expect("rain_sid");
    call(&edge, "GET", "/_rain/o/app/api/count", &sid, &[], "").await;
    let seen = origin.requests();
    assert_eq!(seen.len(), 3);
    for req in &seen {
        assert_eq!(
            req.header("x-rain-base"),
            Some("/_rain/o/app/"),
            "{}",
            req.path
        );
    }
}

#[tokio::test]
async fn calls_keep_the_origin_session_hidden_and_pass_answers_as_they_are() {
    let origin = api_origin().await;
    let edge = edge_for(&origin, "<fragment origin=\"app\" src=\"/f\"></fragment>").await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    for n in 1..=3 {
        let r = call(&edge, "GET", "/_rain/o/app/api/count", &sid, &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("{{\"count\":{n}}}"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("set-cookie").is_none(),
            "the origin's cookie reached the browser"
        );
    }
    // Another user has a session of their own there.
    let other = sid_of(&edge.get("/").await).expect("rain_sid");
    let r = call(&edge, "GET", "/_rain/o/app/api/count", &other, &[], "").await;
    assert_eq!(r.body, "{\"count\":1}");

    // Any method, the body whole, the answer as the origin gave it.
    let own = format!("http://{}", edge.addr);
    let r = call(
        &edge,
        "PUT",
        "/_rain/o/app/api/echo",
        &sid,
        &[("Origin", &own), ("Content-Type", "application/json")],
        "{\"a\":1}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body, "PUT application/json {\"a\":1}");
    assert_eq!(r.header("x-thing"), Some("kept"));
    // A redirect inside the origin stays under the prefix.
    let r = call(&edge, "GET", "/_rain/o/app/api/moved", &sid, &[], "").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/_rain/o/app/api/echo?from=moved")
    );
    // Nothing outside the origin's base.
    let r = call(&edge, "GET", "/_rain/o/app/../secret", &sid, &[], "").await;
    assert!(r.status == 400 || r.status == 404, "{}", r.status);
    let r = call(&edge, "GET", "/_rain/o/nobody/x", &sid, &[], "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn state_changing_calls_from_another_site_reach_nobody() {
    let origin = api_origin().await;
    let edge = edge_for(&origin, "<fragment origin=\"app\" src=\"/f\"></fragment>").await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    let before = origin.requests().len();
    for more in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", &*format!("https://{}", edge.addr))],
    ] {
        let r = call(&edge, "POST", "/_rain/o/app/api/echo", &sid, &more, "x=1").await;
        assert_eq!(r.status, 403, "{more:?}: {}", r.body);
    }
    assert_eq!(
        origin.requests().len(),
        before,
        "a refused call reached the origin"
    );
    // Safe methods from anywhere, and calls of this site, go through.
    let r = call(
        &edge,
        "GET",
        "/_rain/o/app/api/count",
        &sid,
        &[("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let own = format!("http://{}", edge.addr);
    for more in [
        vec![("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")],
        vec![],
    ] {
        let r = call(&edge, "POST", "/_rain/o/app/api/echo", &sid, &more, "x=1").await;
        assert_eq!(r.status, 201, "{more:?}: {}", r.body);
    }
}

#[tokio::test]
async fn answers_cannot_act_on_the_whole_site_and_trace_is_not_passed() {
    let origin = api_origin().await;
    let edge = edge_for(&origin, "<fragment origin=\"app\" src=\"/f\"></fragment>").await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    let r = call(&edge, "GET", "/_rain/o/app/api/bold", &sid, &[], "").await;
    assert_eq!(r.status, 200);
    for gone in [
        "clear-site-data",
        "strict-transport-security",
        "access-control-allow-origin",
        "access-control-allow-credentials",
    ] {
        assert!(r.header(gone).is_none(), "{gone} reached the browser");
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    let before = origin.requests().len();
    for method in ["TRACE", "TRACK", "CONNECT"] {
        let r = call(&edge, method, "/_rain/o/app/api/echo", &sid, &[], "").await;
        assert!(r.status == 405 || r.status == 400, "{method}: {}", r.status);
    }
    assert_eq!(origin.requests().len(), before);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_site_is_the_edges_own() {
    let origin = api_origin().await;
    let edge = Edge::start(
        &config(
            &[("app", origin.url("/app/"), "")],
            HOME,
            "trusted_proxies = [\"127.0.0.1\"]",
        ),
        &[(
            "page.html",
            &layout("<fragment origin=\"app\" src=\"/f\"></fragment>"),
        )],
    )
    .await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example"),
        ("Origin", "https://shop.example"),
    ];
    let r = call(
        &edge,
        "POST",
        "/_rain/o/app/api/echo",
        &sid,
        &proxied,
        "x=1",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let other = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example"),
        ("Origin", "https://evil.example"),
    ];
    let r = call(&edge, "POST", "/_rain/o/app/api/echo", &sid, &other, "x=1").await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_call_body_over_max_body_is_refused_unsent() {
    let origin = api_origin().await;
    let edge = Edge::start(
        &config(&[("app", origin.url("/app/"), "")], HOME, "max_body = 16"),
        &[(
            "page.html",
            &layout("<fragment origin=\"app\" src=\"/f\"></fragment>"),
        )],
    )
    .await;
    let sid = sid_of(&edge.get("/").await).expect("rain_sid");
    let before = origin.requests().len();
    let r = call(
        &edge,
        "POST",
        "/_rain/o/app/api/echo",
        &sid,
        &[],
        &"x".repeat(64),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(origin.requests().len(), before);
}

#[tokio::test]
async fn server_sent_events_arrive_as_they_are_sent() {
    // An origin that sends one event, waits, then another.
    let sse = RawServer::start(|mut tcp| async move {
        let mut buf = [0u8; 2048];
        let _ = tcp.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
        let event = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
        let _ = tcp.write_all(head.as_bytes()).await;
        // Silent for a while before the first event.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = tcp.write_all(event("data: one\n\n").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = tcp.write_all(event("data: two\n\n").as_bytes()).await;
        let _ = tcp.write_all(b"0\r\n\r\n").await;
    })
    .await;
    // The origin's timeout is shorter than the pause: only the head is
    // bound by it.
    let edge = Edge::start(
        &config(
            &[(
                "app",
                format!("http://{}/", sse.addr),
                "timeout = \"300ms\"",
            )],
            HOME,
            "",
        ),
        &[("page.html", &layout("<p>page</p>"))],
    )
    .await;
    let r = edge.get("/_rain/o/app/events").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(
        r.body.contains("data: one\n\n") && r.body.contains("data: two\n\n"),
        "{}",
        r.body
    );
    // The first event came before the second was sent.
    let first = r
        .arrivals
        .iter()
        .find(|(_, n)| {
            let upto = String::from_utf8_lossy(&r.raw[..*n]).to_string();
            upto.contains("data: one")
        })
        .map(|(t, _)| *t)
        .expect("first event");
    assert!(
        first < Duration::from_millis(500),
        "the first event waited: {first:?}"
    );
    assert!(r.total >= Duration::from_millis(700));
}
