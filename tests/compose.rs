//! Parallel fetching, streaming order, async fragments, nesting.

use crate::support::*;

#[tokio::test]
async fn three_slow_fragments_are_fetched_in_parallel() {
    let o = Origin::with_routes(vec![
        ("/a", R::html("<p>A</p>").after(ms(400))),
        ("/b", R::html("<p>B</p>").after(ms(400))),
        ("/c", R::html("<p>C</p>").after(ms(400))),
    ])
    .await;
    let edge = Edge::with_page(&o, r#"<fragment origin="o" src="/a"></fragment><fragment origin="o" src="/b"></fragment><fragment origin="o" src="/c"></fragment>"#).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<p>A</p><p>B</p><p>C</p>"), "{}", r.body);
    assert!(
        r.total < ms(900),
        "3 x 400 ms took {:?}: not parallel",
        r.total
    );
    assert!(
        r.total >= ms(400),
        "took {:?}: faster than a fragment?",
        r.total
    );
    assert_eq!(o.requests().len(), 3);
}

#[tokio::test]
async fn head_arrives_before_a_slow_fragment_completes() {
    let o = Origin::with_routes(vec![("/slow", R::html("<p>SLOW-DONE</p>").after(ms(700)))]).await;
    let page =
        layout(r#"<h1>Title</h1><fragment origin="o" src="/slow"></fragment><footer>END</footer>"#);
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "")], HOME, ""),
        &[("page.html", &page)],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let head = r.time_of("</head>");
    let slow = r.time_of("SLOW-DONE");
    assert!(head < ms(350), "<head> came after {head:?}");
    assert!(slow >= ms(700), "slow fragment at {slow:?}");
    assert!(r.pos("<h1>Title</h1>") < r.pos("SLOW-DONE") && r.pos("SLOW-DONE") < r.pos("END"));
}

#[tokio::test]
async fn output_follows_document_order_with_a_slow_first_fragment() {
    let o = Origin::with_routes(vec![
        ("/first", R::html("<p>FIRST</p>").after(ms(500))),
        ("/second", R::html("<p>SECOND</p>")),
    ])
    .await;
    let edge = Edge::with_page(&o, r#"<fragment origin="o" src="/first"></fragment>|<fragment origin="o" src="/second"></fragment>"#).await;
    let r = edge.get("/").await;
    assert!(r.pos("FIRST") < r.pos("SECOND"));
    // The second was fetched at once, not after the first.
    assert!(r.total < ms(900), "took {:?}", r.total);
    assert!(r.time_of("SECOND") >= ms(500));
}

#[tokio::test]
async fn async_fragments_stream_before_body_end_when_ready() {
    let o = Origin::with_routes(vec![
        ("/late", R::html("<p>LATE</p>").after(ms(400))),
        ("/quick", R::html("<p>QUICK</p>")),
    ])
    .await;
    let edge = Edge::with_page(&o, r#"<fragment id="late" origin="o" src="/late" async></fragment><main><fragment origin="o" src="/quick"></fragment></main>"#).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    // The placeholder stands where the fragment was; the content comes last.
    assert!(r.pos("id=\"rain-async-late\"") < r.pos("QUICK"));
    assert!(r.pos("QUICK") < r.pos("LATE"));
    assert!(r.pos("LATE") < r.pos("</body>"));
    assert!(r
        .body
        .contains("<template id=\"rain-t-late\"><p>LATE</p></template><script>"));
    assert!(
        r.time_of("QUICK") < ms(300),
        "the quick fragment waited for the async one"
    );
}

#[tokio::test]
async fn nested_fragments_are_fetched_and_cycles_end_in_a_placeholder() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/outer" => R::html(r#"<div>OUTER[<fragment origin="o" src="/inner"></fragment>]</div>"#),
        "/inner" => R::html("<b>INNER</b>"),
        "/loop-a" => R::html(r#"A(<fragment origin="o" src="/loop-b">CYCLE-FALLBACK</fragment>)"#),
        "/loop-b" => R::html(r#"B(<fragment origin="o" src="/loop-a">CYCLE-FALLBACK</fragment>)"#),
        "/deep" => R::html(format!(
            r#"D{}<fragment origin="o" src="/deep?n={}">TOO-DEEP</fragment>"#,
            req.param("n").unwrap_or("0"),
            req.param("n")
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
                + 1
        )),
        _ => R::status(404, ""),
    })
    .await;
    let page = layout(
        r#"<fragment origin="o" src="/outer"></fragment>|<fragment origin="o" src="/loop-a"></fragment>|<fragment origin="o" src="/deep?n=1"></fragment>"#,
    );
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "forward_params = false")],
            HOME,
            "[fragments]\nmax_depth = 3\n",
        ),
        &[("page.html", &page)],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<div>OUTER[<b>INNER</b>]</div>"),
        "{}",
        r.body
    );
    // a -> b -> a: the repeated one is the cycle.
    assert!(r.body.contains("A(B(CYCLE-FALLBACK))"), "{}", r.body);
    // depth 1, 2, 3 fetched; the 4th level is refused.
    assert!(r.body.contains("D1D2D3TOO-DEEP"), "{}", r.body);
    assert!(o.requests_to("/deep").len() == 3);
    assert!(r.total < ms(2000));
}

#[tokio::test]
async fn tailor_templates_work_unchanged() {
    let o = Origin::with_routes(vec![
        ("/shop/frag", R::html("<p>TAILOR</p>")),
        ("/shop/other", R::html("<p>OTHER</p>")),
    ])
    .await;
    let base = o.url("/shop/");
    let page = layout(&format!(
        r#"<fragment src="{base}frag" primary timeout="3000"></fragment><fragment src="{base}other" public/>after"#
    ));
    let edge = Edge::start(
        &config(&[("shop", base.clone(), "")], HOME, ""),
        &[("page.html", &page)],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<p>TAILOR</p><p>OTHER</p>after"),
        "{}",
        r.body
    );
}

/// Tailor's fragment assets: `Link` stylesheets before the content of the
/// first fragment naming them, scripts after, each URL once per page;
/// the origin's go through rain-edge, where the stylesheet is scoped.
#[tokio::test]
async fn link_header_assets_are_put_into_the_page_once_each() {
    let links = "</shop/cart.css>; rel=\"stylesheet\", <cart.js>; rel=\"fragment-script\"";
    let o = Origin::with_routes(vec![
        (
            "/shop/cart",
            R::html("<p class=\"box\">CART</p>").with_header("link", links),
        ),
        (
            "/shop/mini",
            R::html("<p>MINI</p>")
                .with_header("link", links)
                .with_header("link", "<https://cdn.example/x.css>; rel=stylesheet"),
        ),
        ("/shop/cart.css", {
            let mut r = R::html(".box { color: red }");
            r.headers.retain(|(n, _)| n != "content-type");
            r.with_header("content-type", "text/css")
        }),
    ])
    .await;
    let edge = Edge::start(
        &config(&[("shop", o.url("/shop/"), "")], HOME, ""),
        &[(
            "page.html",
            &layout(
                "[<fragment origin=\"shop\" src=\"/cart\"></fragment>][<fragment origin=\"shop\" src=\"/mini\"></fragment>]",
            ),
        )],
    )
    .await;
    let r = edge.get("/").await;
    assert!(
        r.body.contains(
            "[<link rel=\"stylesheet\" href=\"/_rain/r/shop/cart.css\"><p class=\"shop-box\">CART</p><script src=\"/_rain/r/shop/cart.js\"></script>]\
             [<link rel=\"stylesheet\" href=\"https://cdn.example/x.css\"><p>MINI</p>]"
        ),
        "{}",
        r.body
    );
    let css = edge.get("/_rain/r/shop/cart.css").await;
    assert!(css.body.contains(".shop-box"), "{}", css.body);
}

#[tokio::test]
async fn whole_documents_are_embedded_as_their_body_with_head_stylesheets() {
    let o = Origin::with_routes(vec![(
        "/doc",
        R::html(
            "<!DOCTYPE html><html><head><title>X</title><meta name=a content=b><link rel=\"stylesheet\" href=\"/s.css\">\
             <style>.x{color:red}</style><script>bad()</script></head><body class=\"b\"><p>BODY</p></body></html>",
        ),
    )])
    .await;
    let edge = Edge::with_page(&o, r#"[<fragment origin="o" src="/doc"></fragment>]"#).await;
    let r = edge.get("/").await;
    let start = r.pos("[");
    let end = r.body.rfind(']').expect("]");
    let frag = &r.body[start + 1..end];
    assert_eq!(
        frag,
        "<link rel=\"stylesheet\" href=\"/_rain/r/o/s.css\"><style>.o-x {\n  color: red;\n}\n</style><p>BODY</p>"
    );
    assert_eq!(r.body.matches("<body").count(), 1);
}

#[tokio::test]
async fn origin_layouts_get_path_and_query_and_keep_their_status() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/layout/a/b" => R::html(format!(
            "<html><head></head><body>q={} <fragment origin=\"o\" src=\"/f\"></fragment></body></html>",
            req.query.clone().unwrap_or_default()
        )),
        "/layout/missing" => R::status(404, "<html><body>NOT-HERE <fragment origin=\"o\" src=\"/f\"></fragment></body></html>"),
        "/f" => R::html("<i>F</i>"),
        _ => R::status(500, ""),
    })
    .await;
    let routes = "[[routes]]\npath = \"/acc/*\"\norigin = \"o\"\nsrc = \"/layout\"\n";
    let edge = Edge::start(&config(&[("o", o.url("/"), "")], routes, ""), &[]).await;
    let r = edge.get("/acc/a/b?x=1&rain.elsewhere=zz").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("q=x=1 <i>F</i>"), "{}", r.body);
    let r = edge.get("/acc/missing").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("NOT-HERE <i>F</i>"), "{}", r.body);
    let r = edge.get("/acc/broken").await;
    assert_eq!(r.status, 502);
}

#[tokio::test]
async fn charsets_and_compressed_bodies_are_decoded() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all("<p>gzip ünïcode</p>".as_bytes()).expect("gz");
    let gz = gz.finish().expect("gz");
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(b"<p>brotli body</p>").expect("br");
    }
    let o = Origin::with_routes(vec![
        (
            "/latin1",
            R {
                status: 200,
                headers: vec![(
                    "content-type".into(),
                    "text/html; charset=iso-8859-1".into(),
                )],
                body: bytes::Bytes::from_static(b"<p>caf\xe9</p>"),
                ..R::default()
            },
        ),
        ("/gzip", R::html(gz).with_header("content-encoding", "gzip")),
        ("/br", R::html(br).with_header("content-encoding", "br")),
    ])
    .await;
    let edge = Edge::with_page(&o, r#"<fragment origin="o" src="/latin1"></fragment><fragment origin="o" src="/gzip"></fragment><fragment origin="o" src="/br"></fragment>"#).await;
    let r = edge.get("/").await;
    assert!(
        r.body
            .contains("<p>café</p><p>gzip ünïcode</p><p>brotli body</p>"),
        "{}",
        r.body
    );
    let accept = o.requests()[0]
        .header("accept-encoding")
        .unwrap_or_default()
        .to_string();
    assert!(accept.contains("gzip") && accept.contains("br"));
}

#[tokio::test]
async fn identical_public_fragments_in_flight_share_one_fetch() {
    let o = Origin::with_routes(vec![
        ("/pub", R::html("<p>PUBLIC</p>").after(ms(300))),
        ("/mine", R::html("<p>MINE</p>").after(ms(300))),
    ])
    .await;
    let edge = Edge::with_page(
        &o,
        r#"<fragment origin="o" src="/pub" public></fragment><fragment origin="o" src="/mine"></fragment>"#,
    )
    .await;
    let pages: Vec<_> = (0..5)
        .map(|_| {
            let addr = edge.addr;
            tokio::spawn(async move { get(addr, "/", &[]).await })
        })
        .collect();
    for p in pages {
        let r = p.await.expect("page");
        assert!(
            r.body.contains("PUBLIC") && r.body.contains("MINE"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        o.requests_to("/pub").len(),
        1,
        "one shared fetch for the public fragment"
    );
    assert_eq!(
        o.requests_to("/mine").len(),
        5,
        "a user's fragment is never shared"
    );
    // Once done, the next page fetches again.
    edge.get("/").await;
    assert_eq!(o.requests_to("/pub").len(), 2);
}

#[tokio::test]
async fn max_connections_caps_concurrent_fetches_to_an_origin() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    // The origin notes how many requests it holds at once (each 150 ms).
    let o = Origin::start(move |_req| {
        let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(cur, Ordering::SeqCst);
        let n = n.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(100)).await;
            n.fetch_sub(1, Ordering::SeqCst);
        });
        R::html("<p>F</p>").after(ms(150))
    })
    .await;
    let frags: String = (0..6)
        .map(|i| format!(r#"<fragment origin="o" src="/f{i}" timeout="3s"></fragment>"#))
        .collect();
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "max_connections = 2")], HOME, ""),
        &[("page.html", &layout(&frags))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.body.matches("<p>F</p>").count(), 6, "{}", r.body);
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "{} at once",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        r.total >= ms(440),
        "6 fetches, 2 at a time, 150 ms each: {:?}",
        r.total
    );
}

/// A page that is whole before its head goes out (a layout without
/// fragments here; fragments already in, from the fragment cache, when
/// the writer reaches them) is sent with its length and no chunked
/// framing; a HEAD of it names no length of 0, and a page that waits for
/// a slow fragment streams (the test above).
#[tokio::test]
async fn a_page_whole_before_its_head_goes_out_is_sent_with_its_length() {
    let edge = Edge::start(
        &config(&[], HOME, ""),
        &[("page.html", &layout("<h1>Static</h1><footer>END</footer>"))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("END") && r.body.ends_with("</html>"),
        "{}",
        r.body
    );
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let head = raw_request(
        edge.addr,
        b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_ne!(head.header("content-length"), Some("0"));
    assert!(head.body.is_empty());
}
