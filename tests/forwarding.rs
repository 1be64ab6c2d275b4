//! What origins receive (docs/configuration.md, what origins receive).

use crate::support::*;

#[tokio::test]
async fn origins_get_context_headers_params_and_nothing_else_of_the_browser() {
    let o = Origin::with_routes(vec![
        ("/a", R::html("A")),
        ("/b", R::html("B")),
        ("/pub", R::html("P")),
    ])
    .await;
    let page = layout(
        r#"<fragment id="first" origin="o" src="/a?size=s&amp;x=&#49;"></fragment><fragment origin="o" src="/b"></fragment><fragment origin="o" src="/pub" public></fragment>"#,
    );
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "forward_headers = [\"x-tenant\", \"authorization\", \"range\"]\nforward_cookies = [\"lang\", \"rain_sid\"]")],
            HOME,
            "",
        ),
        &[("page.html", &page)],
    )
    .await;
    let r = edge
        .get_with(
            "/?q=rain&size=xl&rain.unused=x&rain%2Eother=1",
            &[
                ("User-Agent", "TestBrowser/1.0"),
                ("Accept-Language", "de-CH"),
                ("X-Tenant", "acme"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Request-Id", "client-chosen"),
                ("Authorization", "Bearer secret"),
                ("Cookie", "lang=de; rain_sid=abcdef; other=1"),
                ("If-None-Match", "\"etag\""),
                ("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
                ("Range", "bytes=0-10"),
                ("X-Unlisted", "nope"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let a = &o.requests_to("/a")[0];
    let b = &o.requests_to("/b")[0];
    let p = &o.requests_to("/pub")[0];

    // Parameters: the page's, without rain.*, the fragment's own winning.
    assert_eq!(a.query.as_deref(), Some("q=rain&size=s&x=1"));
    assert_eq!(b.query.as_deref(), Some("q=rain&size=xl"));
    assert_eq!(p.query, None, "public fragments get no page parameters");

    // Context headers.
    let rid = a.header("x-request-id").expect("request id").to_string();
    assert_eq!(rid.len(), 32, "a fresh id, not the client's: {rid}");
    assert_eq!(b.header("x-request-id"), Some(rid.as_str()));
    assert_eq!(p.header("x-request-id"), Some(rid.as_str()));
    assert_eq!(r.header("x-request-id"), Some(rid.as_str()));
    assert_eq!(a.header("x-rain-fragment-id"), Some("first"));
    assert_eq!(b.header("x-rain-fragment-id"), Some("o"));
    assert_eq!(a.header("x-rain-node"), Some("test-node"));
    assert_eq!(a.header("x-rain-page-url"), Some("/?q=rain&size=xl"));
    assert_eq!(a.header("host"), Some(o.addr.to_string().as_str()));

    // The fixed set and forward_headers.
    assert_eq!(a.header("user-agent"), Some("TestBrowser/1.0"));
    assert_eq!(a.header("accept-language"), Some("de-CH"));
    assert_eq!(a.header("x-tenant"), Some("acme"));
    assert_eq!(
        a.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "a client's own XFF is dropped"
    );
    assert_eq!(a.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        a.header("x-forwarded-host"),
        Some(edge.addr.to_string().as_str())
    );
    assert_eq!(a.header("cookie"), Some("lang=de"));

    // Never.
    for never in [
        "authorization",
        "if-none-match",
        "if-modified-since",
        "range",
        "x-unlisted",
        "connection",
    ] {
        assert_eq!(a.header(never), None, "{never} reached the origin");
    }

    // public: only the context headers that identify the request.
    for absent in [
        "user-agent",
        "accept-language",
        "x-tenant",
        "x-forwarded-for",
        "cookie",
        "x-rain-page-url",
    ] {
        assert_eq!(p.header(absent), None, "{absent} reached a public fragment");
    }
    assert_eq!(p.header("x-rain-fragment-id"), Some("o-2"));
    assert_eq!(p.header("x-rain-node"), Some("test-node"));
}

#[tokio::test]
async fn trusted_proxies_keep_their_forwarding_headers() {
    let o = Origin::with_routes(vec![("/a", R::html("A"))]).await;
    let page = layout(r#"<fragment origin="o" src="/a"></fragment>"#);
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "")],
            HOME,
            "trusted_proxies = [\"127.0.0.0/8\"]\n",
        ),
        &[("page.html", &page)],
    )
    .await;
    edge.get_with(
        "/",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example.org"),
            ("X-Request-Id", "lb-1234"),
        ],
    )
    .await;
    let a = &o.requests_to("/a")[0];
    assert_eq!(a.header("x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(a.header("x-forwarded-proto"), Some("https"));
    assert_eq!(a.header("x-forwarded-host"), Some("www.example.org"));
    assert_eq!(a.header("x-request-id"), Some("lb-1234"));
}

#[tokio::test]
async fn forward_params_false_sends_only_the_fragments_own_query() {
    let o = Origin::with_routes(vec![("/a", R::html("A"))]).await;
    let page = layout(r#"<fragment origin="o" src="/a?own=1"></fragment>"#);
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "forward_params = false")], HOME, ""),
        &[("page.html", &page)],
    )
    .await;
    edge.get("/?page=2").await;
    assert_eq!(o.requests_to("/a")[0].query.as_deref(), Some("own=1"));
}

#[tokio::test]
async fn origin_connections_are_reused() {
    let o = Origin::with_routes(vec![("/a", R::html("A"))]).await;
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "timeout = \"5s\"")], HOME, ""),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/a">FALLBACK</fragment>"#),
        )],
    )
    .await;
    for _ in 0..10 {
        let r = edge.get("/").await;
        assert!(
            r.status == 200 && r.body.contains('A') && !r.body.contains("FALLBACK"),
            "{}",
            r.body
        );
    }
    // The test origin keeps connections alive: one carries all ten pages.
    let requests = o.requests();
    let mut conns: Vec<u64> = requests.iter().map(|r| r.conn).collect();
    conns.dedup();
    assert_eq!(requests.len(), 10);
    assert_eq!(
        conns.len(),
        1,
        "10 sequential pages used connections {conns:?}"
    );
}

#[tokio::test]
async fn fields_the_browser_names_in_connection_are_never_forwarded() {
    let o = Origin::with_routes(vec![("/a", R::html("<p>A</p>"))]).await;
    let edge = Edge::start(
        &config(
            &[(
                "o",
                o.url("/"),
                "forward_headers = [\"x-tenant\", \"x-secret\"]",
            )],
            HOME,
            "",
        ),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/a"></fragment>"#),
        )],
    )
    .await;
    let r = edge
        .get_with(
            "/",
            &[
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "hop-only"),
                ("X-Tenant", "acme"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = &o.requests_to("/a")[0];
    assert_eq!(seen.header("x-tenant"), Some("acme"));
    assert_eq!(
        seen.header("x-secret"),
        None,
        "a hop-by-hop field reached the origin"
    );
}
