//! Class scoping (css_scope): the same class name in two origins' fragments
//! gets each origin's own style; the layout's markup and style are untouched.

use crate::support::*;

#[tokio::test]
async fn same_class_names_in_two_origins_stay_apart() {
    let a = Origin::with_routes(vec![(
        "/a/frag",
        R::html("<style>.box { color: red } .box.big { font-size: 2em }</style><div class=\"box big\">A</div>"),
    )])
    .await;
    let b = Origin::with_routes(vec![
        ("/b/frag", R::html("<link rel=\"stylesheet\" href=\"css/b.css\"><div class=\"box\">B</div>")),
        (
            "/b/css/b.css",
            R { status: 200, headers: vec![("content-type".into(), "text/css".into()), ("cache-control".into(), "max-age=30".into())], body: bytes::Bytes::from_static(b".box { color: blue; background: url(../img/bg.png) } #x .box:hover { color: navy }"), ..R::default() },
        ),
    ])
    .await;
    let c = Origin::with_routes(vec![(
        "/c/frag",
        R::html("<style>.plain { color: green }</style><div class=\"plain\">C</div>"),
    )])
    .await;
    let page = "<style>.box { color: black }</style><div class=\"box\">LAYOUT</div>\
                <fragment origin=\"a\" src=\"/frag\"></fragment><fragment origin=\"b\" src=\"/frag\"></fragment><fragment origin=\"c\" src=\"/frag\"></fragment>";
    let edge = Edge::start(
        &config(
            &[
                ("a", a.url("/a/"), ""),
                ("b", b.url("/b/"), "class_prefix = \"bee\""),
                ("c", c.url("/c/"), "css_scope = \"off\""),
            ],
            HOME,
            "",
        ),
        &[("page.html", &layout(page))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    // The layout's own markup and style are never touched.
    assert!(
        r.body
            .contains("<style>.box { color: black }</style><div class=\"box\">LAYOUT</div>"),
        "{}",
        r.body
    );
    // Origin a: markup and inline style renamed together.
    assert!(
        r.body.contains("<div class=\"a-box a-big\">A</div>"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(".a-box {") && r.body.contains(".a-box.a-big {"),
        "{}",
        r.body
    );
    // Origin b: its own prefix; its stylesheet comes through rain-edge, renamed the same way.
    assert!(
        r.body.contains("<div class=\"bee-box\">B</div>"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("href=\"/_rain/r/b/css/b.css\""),
        "{}",
        r.body
    );
    let css = edge.get("/_rain/r/b/css/b.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("max-age=30"));
    assert!(
        css.body.contains(".bee-box {") && css.body.contains("#x .bee-box:hover"),
        "{}",
        css.body
    );
    assert!(
        css.body.contains("url(\"/_rain/r/b/img/bg.png\")"),
        "{}",
        css.body
    );
    assert!(!css.body.contains(".box"), "{}", css.body);
    // Origin c (css_scope = off): untouched classes.
    assert!(
        r.body.contains("<div class=\"plain\">C</div>") && r.body.contains(".plain"),
        "{}",
        r.body
    );
}
