//! Rewritten links navigate inside the page; origin resources come through
//! /_rain/r/ with the user's session, streamed.

use crate::support::*;

#[tokio::test]
async fn a_followed_link_moves_its_fragment_and_nothing_else() {
    let o = Origin::start(|req| match req.path.as_str() {
        "/shop/list" => R::html(format!(
            "<p>LIST page={}</p><a class=\"next\" href=\"list?page={}\">next</a>",
            req.param("page").unwrap_or("1"),
            req.param("page")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(1)
                + 1
        )),
        "/shop/side" => R::html("<p>SIDE</p><a href=\"/shop/other\">other</a>"),
        "/shop/other" => R::html("<p>OTHER</p>"),
        _ => R::status(404, ""),
    })
    .await;
    let body = r#"<main><fragment id="list" origin="o" src="/list"></fragment></main><aside><fragment id="side" origin="o" src="/side"></fragment></aside>"#;
    let edge = Edge::start(
        &config(&[("o", o.url("/shop/"), "")], HOME, ""),
        &[("page.html", &layout(body))],
    )
    .await;
    let first = edge.get("/?q=1").await;
    assert!(
        first.body.contains("LIST page=1") && first.body.contains("SIDE"),
        "{}",
        first.body
    );
    let next = attr_value(&first.body, "href", "class=\"o-next\"");
    assert_eq!(next, "/?q=1&rain.list=list%3Fpage%3D2");
    let second = edge.get(&next).await;
    assert!(second.body.contains("LIST page=2"), "{}", second.body);
    assert!(
        second.body.contains("SIDE"),
        "the other fragment moved: {}",
        second.body
    );
    // The page's own parameters still reach the fragments; rain.* never does.
    let list_req = o
        .requests_to("/shop/list")
        .last()
        .cloned()
        .expect("request");
    assert_eq!(list_req.query.as_deref(), Some("q=1&page=2"));
    // Further navigation keeps the other fragment's state.
    let side_link = attr_value(&second.body, "href", "SIDE");
    assert_eq!(side_link, "/?q=1&rain.list=list%3Fpage%3D2&rain.side=other");
    let third = edge.get(&side_link).await;
    assert!(
        third.body.contains("LIST page=2") && third.body.contains("OTHER"),
        "{}",
        third.body
    );
    // Reload and bookmarks: the same URL, the same page; back: the old URL.
    assert!(edge.get(&side_link).await.body.contains("OTHER"));
    assert!(edge.get("/?q=1").await.body.contains("LIST page=1"));
}

#[tokio::test]
async fn tampered_navigation_and_resource_urls_get_4xx_and_no_fetch() {
    let foreign = Origin::with_routes(vec![("/x", R::html("STOLEN"))]).await;
    let o = Origin::with_routes(vec![("/shop/a", R::html("A"))]).await;
    let body = r#"<fragment id="a" origin="o" src="/a"></fragment>"#;
    let edge = Edge::start(
        &config(&[("o", o.url("/shop/"), "")], HOME, ""),
        &[("page.html", &layout(body))],
    )
    .await;
    let fa = foreign.addr;
    for path in [
        format!("/?rain.a=http://{fa}/x"),
        format!("/?rain.a=//{fa}/x"),
        "/?rain.a=../x".to_string(),
        "/?rain.a=%2e%2e/x".to_string(),
        "/?rain.a=a%2f..%2f..%2fx".to_string(),
        "/_rain/r/o/../../x".to_string(),
        "/_rain/r/o/%2e%2e/%2e%2e/x".to_string(),
    ] {
        let r = edge.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.status);
    }
    assert_eq!(edge.get("/_rain/r/nope/x").await.status, 404);
    assert_eq!(edge.get(&format!("/_rain/r/{fa}/x")).await.status, 404);
    assert!(foreign.requests().is_empty());
    for req in o.requests() {
        assert!(req.path.starts_with("/shop/"), "{}", req.path);
    }
}

#[tokio::test]
async fn resources_come_through_rain_edge_with_the_session_streamed() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big2 = big.clone();
    let o = Origin::start(move |req| match req.path.as_str() {
        "/shop/frag" => R::html("<img src=\"img/logo.png\"><a href=\"files/big.bin\">big</a><img src=\"files/big.bin\">")
            .with_header("set-cookie", "sid=s1; Path=/shop/"),
        "/shop/img/logo.png" => R {
            status: 200,
            headers: vec![
                ("content-type".into(), "image/png".into()),
                ("cache-control".into(), "public, max-age=60".into()),
                ("set-cookie".into(), "seen=1; Path=/shop/".into()),
                ("x-internal".into(), "secret".into()),
            ],
            body: bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nfake"),
            ..R::default()
        },
        "/shop/moved.png" => R::status(301, "").with_header("location", &format!("http://{}/shop/img/logo.png", req.header("host").unwrap_or_default())),
        "/shop/ajax" => R::html("<ajax-response/>").with_header("ajax-location", "./counter?3"),
        "/shop/files/big.bin" => R { status: 200, headers: vec![("content-type".into(), "application/octet-stream".into())], body: bytes::Bytes::from(big2.clone()), ..R::default() },
        _ => R::status(404, ""),
    })
    .await;
    let edge = Edge::start(
        &config(
            &[("o", o.url("/shop/"), "")],
            HOME,
            "[fragments]\nmax_bytes = \"1MiB\"\n",
        ),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/frag"></fragment>"#),
        )],
    )
    .await;
    let mut user = Browser::new(&edge);
    let page = user.get("/").await;
    let src = attr_value(&page.body, "src", "<img");
    assert_eq!(src, "/_rain/r/o/img/logo.png");
    let img = user.get(&src).await;
    assert_eq!(img.status, 200);
    assert!(img.raw.ends_with(b"\x89PNG\r\n\x1a\nfake"));
    assert_eq!(img.header("content-type"), Some("image/png"));
    assert_eq!(img.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(
        img.header("set-cookie"),
        None,
        "an origin cookie reached the browser"
    );
    assert_eq!(img.header("x-internal"), None);
    let req = o.requests_to("/shop/img/logo.png").pop().expect("fetched");
    assert_eq!(
        req.header("cookie"),
        Some("sid=s1"),
        "the resource went without the user's jar"
    );
    // The resource's own cookie went into the jar.
    user.get("/").await;
    let again = o.requests_to("/shop/frag").pop().expect("fetched");
    assert!(
        again
            .header("cookie")
            .is_some_and(|c| c.contains("seen=1") && c.contains("sid=s1")),
        "{:?}",
        again.header("cookie")
    );
    // Redirects and Ajax-Location pointing into the origin stay on rain-edge.
    let moved = user.get("/_rain/r/o/moved.png").await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/_rain/r/o/img/logo.png"));
    let ajax = user.get("/_rain/r/o/ajax").await;
    assert_eq!(ajax.header("ajax-location"), Some("/_rain/r/o/counter?3"));
    // Larger than max_bytes: streamed through, byte for byte.
    let r = user.get("/_rain/r/o/files/big.bin").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), String::from_utf8_lossy(&big).len());
    assert!(r.raw.ends_with(&big[big.len() - 1000..]));
}
