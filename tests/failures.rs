//! Every failure class gets its placeholder, in the documented fallback
//! order, and never breaks the rest of the page; `primary` sets the status.

use crate::support::*;

/// Platform placeholders that name their class.
fn placeholder_templates() -> Vec<(String, String)> {
    [
        "timeout",
        "unavailable",
        "unauthorized",
        "forbidden",
        "not-found",
        "error",
    ]
    .iter()
    .map(|c| (format!("placeholders/{c}.html"), format!("<i>PH-{c}</i>")))
    .collect()
}

/// Templates: `page.html` and the placeholders that name their class.
fn with_placeholders(page: String) -> Vec<(String, String)> {
    let mut t = placeholder_templates();
    t.push(("page.html".to_string(), page));
    t
}

async fn failing_origin() -> Origin {
    use std::io::Write;
    let big = "x".repeat(5000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(
        "<p>this gzip body is cut in half, so it cannot be decoded</p>"
            .repeat(20)
            .as_bytes(),
    )
    .expect("gz");
    let mut broken = gz.finish().expect("gz");
    broken.truncate(broken.len() / 2);
    let mut cut = R::html("<p>0123456789".repeat(100));
    cut.cut_body_at = Some(300);
    Origin::with_routes(vec![
        ("/ok", R::html("<p>OK</p>")),
        ("/slow", R::html("<p>late</p>").after(ms(1500))),
        ("/401", R::status(401, "no")),
        ("/403", R::status(403, "no")),
        ("/404", R::status(404, "no")),
        ("/500", R::status(500, "no")),
        ("/503", R::status(503, "no")),
        ("/big", R::html(big)),
        ("/cut", cut),
        (
            "/gzip",
            R::html(broken).with_header("content-encoding", "gzip"),
        ),
        (
            "/garbage",
            R {
                raw: Some(bytes::Bytes::from_static(b"NOT HTTP AT ALL\r\n\r\n")),
                ..R::default()
            },
        ),
    ])
    .await
}

#[tokio::test]
async fn every_failure_class_gets_its_placeholder_and_the_page_survives() {
    let o = failing_origin().await;
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let page = layout(
        r#"<ol>
<li><fragment origin="o" src="/slow" timeout="300ms"></fragment></li>
<li><fragment origin="dead" src="/x"></fragment></li>
<li><fragment origin="o" src="/401"></fragment></li>
<li><fragment origin="o" src="/403"></fragment></li>
<li><fragment origin="o" src="/404"></fragment></li>
<li><fragment origin="o" src="/500"></fragment></li>
<li><fragment origin="o" src="/big"></fragment></li>
<li><fragment origin="o" src="/cut"></fragment></li>
<li><fragment origin="o" src="/gzip"></fragment></li>
<li><fragment origin="o" src="/garbage"></fragment></li>
<li><fragment origin="o" src="/ok"></fragment></li>
</ol>"#,
    );
    let edge = Edge::start_pages(
        &config(
            &[("o", o.url("/"), ""), ("dead", dead, "")],
            HOME,
            "[fragments]\nmax_bytes = \"4KiB\"\n",
        ),
        &with_placeholders(page),
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(
        r.status, 200,
        "a failing non-primary fragment never changes the status"
    );
    let items = list_items(&r.body);
    assert_eq!(
        items,
        vec![
            "<i>PH-timeout</i>",
            "<i>PH-unavailable</i>",
            "<i>PH-unauthorized</i>",
            "<i>PH-forbidden</i>",
            "<i>PH-not-found</i>",
            "<i>PH-error</i>",
            "<i>PH-error</i>",
            "<i>PH-error</i>",
            "<i>PH-error</i>",
            "<i>PH-error</i>",
            "<p>OK</p>",
        ],
        "{}",
        r.body
    );
    assert!(r.body.ends_with("</body></html>"));
    assert!(
        r.total < ms(1200),
        "the timed-out fragment held the page: {:?}",
        r.total
    );
}

#[tokio::test]
async fn fallback_order_is_src_file_children_origin_platform_builtin() {
    let o = Origin::with_routes(vec![("/fb", R::html("<p>FROM-FALLBACK-SRC</p>"))]).await;
    let plain = Origin::with_routes(vec![("/slow", R::html("late").after(ms(600)))]).await;
    let page = layout(
        r#"<ol>
<li><fragment origin="o" src="/x" fallback-src="/fb" fallback="fb.html">kids</fragment></li>
<li><fragment origin="o" src="/x" fallback-src="/also-missing" fallback="fb.html">kids</fragment></li>
<li><fragment origin="o" src="/x"><b>KIDS</b></fragment></li>
<li><fragment origin="o" src="/x">  </fragment></li>
<li><fragment origin="p" src="/x"></fragment></li>
<li><fragment origin="p" src="/slow" timeout="100ms"></fragment></li>
</ol>"#,
    );
    let edge = Edge::start(
        &config(
            &[
                (
                    "o",
                    o.url("/"),
                    "placeholders = { not_found = \"o-404.html\" }",
                ),
                ("p", plain.url("/"), ""),
            ],
            HOME,
            "[placeholders]\nnot_found = \"platform-404.html\"\n",
        ),
        &[
            ("page.html", &page),
            ("fb.html", "<p>FROM-FILE</p>"),
            ("o-404.html", "<p>ORIGIN-404</p>"),
            ("platform-404.html", "<p>PLATFORM-404</p>"),
        ],
    )
    .await;
    let r = edge.get("/").await;
    let items = list_items(&r.body);
    assert_eq!(items[0], "<p>FROM-FALLBACK-SRC</p>");
    assert_eq!(items[1], "<p>FROM-FILE</p>");
    assert_eq!(items[2], "<b>KIDS</b>");
    assert_eq!(items[3], "<p>ORIGIN-404</p>");
    assert_eq!(items[4], "<p>PLATFORM-404</p>");
    // No timeout placeholder anywhere: the built-in one.
    assert!(
        items[5].contains("data-rain-failure=\"timeout\""),
        "{}",
        items[5]
    );
}

#[tokio::test]
async fn primary_fragment_sets_the_page_status() {
    let foreign = Origin::with_routes(vec![]).await;
    let o = Origin::start({
        let foreign_url = foreign.url("/elsewhere");
        move |req| match req.path.as_str() {
            "/ok" => R::html("<p>OK</p>"),
            "/404" => R::status(404, "<p>gone</p>"),
            "/500" => R::status(500, "boom"),
            "/slow" => R::html("late").after(ms(1000)),
            "/away" => R::status(302, "").with_header("location", &foreign_url),
            "/away301" => R::status(301, "").with_header("location", &foreign_url),
            "/away303" => R::status(303, "").with_header("location", &foreign_url),
            "/away307" => R::status(307, "").with_header("location", &foreign_url),
            "/away308" => R::status(308, "").with_header("location", &foreign_url),
            "/hop" => R::status(302, "")
                .with_header("location", "/ok")
                .with_header("set-cookie", "hop=1; Path=/"),
            _ => R::status(404, ""),
        }
    })
    .await;
    let mut templates = Vec::new();
    let mut routes = String::new();
    let cases = [
        "ok", "404", "500", "slow", "away", "hop", "away301", "away303", "away307", "away308",
    ];
    for case in cases {
        templates.push((
            format!("{case}.html"),
            layout(&format!(r#"<fragment origin="o" src="/{case}" primary timeout="300ms">FALLBACK</fragment><p>REST</p>"#)),
        ));
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{case}\"\nlayout = \"{case}.html\"\n"
        ));
    }
    // Several primaries: the first in document order sets the status
    // (Tailor's rule); the others are ordinary fragments. `id=""` is no id.
    for (name, first, second) in [("two-ok-500", "ok", "500"), ("two-404-ok", "404", "ok")] {
        templates.push((
            format!("{name}.html"),
            layout(&format!(
                r#"<fragment id="" origin="o" src="/{first}" primary>F1</fragment><fragment id="" origin="o" src="/{second}" primary>F2</fragment>"#
            )),
        ));
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{name}\"\nlayout = \"{name}.html\"\n"
        ));
    }
    let edge = Edge::start_pages(&config(&[("o", o.url("/"), "")], &routes, ""), &templates).await;

    let r = edge.get("/ok").await;
    assert_eq!(r.status, 200);
    let r = edge.get("/404").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("FALLBACK") && r.body.contains("REST"));
    assert_eq!(edge.get("/500").await.status, 502);
    let r = edge.get("/slow").await;
    assert_eq!(r.status, 504);
    assert!(r.body.contains("FALLBACK<p>REST</p>"));
    let r = edge.get("/away").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(foreign.url("/elsewhere").as_str())
    );
    // The primary's redirect keeps its status.
    for code in [301, 303, 307, 308] {
        let r = edge.get(&format!("/away{code}")).await;
        assert_eq!(r.status, code);
        assert_eq!(
            r.header("location"),
            Some(foreign.url("/elsewhere").as_str())
        );
    }
    assert!(
        foreign.requests().is_empty(),
        "rain-edge followed a redirect out of the origin"
    );
    let r = edge.get("/two-ok-500").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<p>OK</p>F2"), "{}", r.body);
    let r = edge.get("/two-404-ok").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("F1<p>OK</p>"), "{}", r.body);
    // A redirect inside the origin is followed, with the cookie set on the way.
    let r = edge.get("/hop").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<p>OK</p><p>REST</p>"), "{}", r.body);
    let ok_reqs = o.requests_to("/ok");
    assert_eq!(
        ok_reqs.last().and_then(|q| q.header("cookie")),
        Some("hop=1")
    );
}

#[tokio::test]
async fn a_dropped_connection_mid_body_is_not_shown_half() {
    let mut cut = R::html(format!("<p>START{}END</p>", "y".repeat(2000)));
    cut.cut_body_at = Some(100);
    let o = Origin::with_routes(vec![("/cut", cut)]).await;
    let edge = Edge::with_page(
        &o,
        r#"<fragment origin="o" src="/cut">WHOLE-FALLBACK</fragment>"#,
    )
    .await;
    let r = edge.get("/").await;
    assert!(!r.body.contains("START"), "half a fragment was shown");
    assert!(r.body.contains("WHOLE-FALLBACK"));
}

#[tokio::test]
async fn too_many_fragments_fail_as_error_without_a_fetch() {
    let o = Origin::with_routes(vec![("/f", R::html("<b>F</b>"))]).await;
    let body: String = (0..5)
        .map(|_| r#"<fragment origin="o" src="/f">CAPPED</fragment>"#)
        .collect();
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "")],
            HOME,
            "[fragments]\nmax_per_page = 3\n",
        ),
        &[("page.html", &layout(&body))],
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.body.matches("<b>F</b>").count(), 3);
    assert_eq!(r.body.matches("CAPPED").count(), 2);
    assert_eq!(o.requests().len(), 3);
}

#[tokio::test]
async fn timeouts_open_the_circuit_and_its_fragments_then_fail_at_once() {
    let o = Origin::with_routes(vec![("/slow", R::html("<p>late</p>").after(ms(600)))]).await;
    let edge = Edge::start_pages(
        &config(
            &[("o", o.url("/"), "timeout = \"300ms\"")],
            HOME,
            "[fragments]\nbreaker_failures = 2\nbreaker_cooldown = \"10s\"",
        ),
        &with_placeholders(layout(r#"<fragment origin="o" src="/slow"></fragment>"#)),
    )
    .await;
    for _ in 0..2 {
        let r = edge.get("/").await;
        assert!(r.body.contains("PH-timeout"), "{}", r.body);
    }
    let r = edge.get("/").await;
    assert!(r.body.contains("PH-unavailable"), "{}", r.body);
    assert!(
        r.total < ms(250),
        "an open circuit answers at once: {:?}",
        r.total
    );
    assert_eq!(
        o.requests_to("/slow").len(),
        2,
        "the third never reached the origin"
    );
}

#[tokio::test]
async fn public_fragments_fall_back_to_their_last_good_copy_for_stale_if_error() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    let healthy = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicU32::new(0));
    let (h, n) = (healthy.clone(), served.clone());
    let o = Origin::start(move |req| {
        if !h.load(Ordering::SeqCst) {
            return R::status(503, "down");
        }
        let i = n.fetch_add(1, Ordering::SeqCst);
        match req.path.as_str() {
            "/pub" => R::html(format!("<p>PUB-{i}</p>")),
            "/nostore" => R::html("<p>NOSTORE</p>").with_header("cache-control", "no-store"),
            _ => R::html("<p>USER</p>"),
        }
    })
    .await;
    let page = layout(
        r#"<fragment origin="o" src="/pub" public></fragment><fragment origin="o" src="/nostore" public></fragment><fragment origin="o" src="/user"></fragment>"#,
    );
    let edge = Edge::start_pages(
        &config(
            &[("o", o.url("/"), "")],
            HOME,
            "admin_listen = \"{admin}\"\n[fragments]\nstale_if_error = \"1s\"\nbreaker_failures = 0",
        ),
        &with_placeholders(page),
    )
    .await;
    let fresh = edge.get("/").await;
    assert!(
        fresh.body.contains("PUB-") && fresh.body.contains("NOSTORE"),
        "{}",
        fresh.body
    );
    let pub_text = fresh.body[fresh.body.find("PUB-").unwrap_or(0)..]
        .split('<')
        .next()
        .unwrap_or("")
        .to_string();

    healthy.store(false, Ordering::SeqCst);
    let stale = edge.get("/").await;
    assert_eq!(stale.status, 200);
    assert!(
        stale.body.contains(&pub_text),
        "the last good copy: {}",
        stale.body
    );
    assert!(
        !stale.body.contains("NOSTORE"),
        "no-store is never kept: {}",
        stale.body
    );
    assert_eq!(stale.body.matches("PH-error").count(), 2, "{}", stale.body);
    let m = get(edge.admin, "/metrics", &[]).await;
    assert!(
        m.body.lines().any(|l| l == "rain_stale_served_total 1"),
        "{}",
        m.body
    );

    // Older than stale_if_error: the placeholder.
    tokio::time::sleep(ms(1100)).await;
    let old = edge.get("/").await;
    assert!(!old.body.contains("PUB-"), "{}", old.body);
    assert_eq!(old.body.matches("PH-error").count(), 3, "{}", old.body);
}

#[tokio::test]
async fn the_page_deadline_caps_every_fragment_nested_ones_included() {
    let o = Origin::with_routes(vec![
        (
            "/outer",
            R::html(r#"<div>OUTER[<fragment origin="o" src="/inner"></fragment>]</div>"#)
                .after(ms(200)),
        ),
        ("/inner", R::html("<b>INNER</b>").after(ms(500))),
        ("/slow", R::html("<b>SLOW</b>").after(ms(900))),
        ("/fast", R::html("<b>FAST</b>")),
        (
            "/layout",
            R::html("<html><body>LATE</body></html>").after(ms(900)),
        ),
    ])
    .await;
    let page = layout(
        r#"<ol>
<li><fragment origin="o" src="/outer"></fragment></li>
<li><fragment origin="o" src="/slow"></fragment></li>
<li><fragment origin="o" src="/fast"></fragment></li>
</ol>"#,
    );
    // Each fragment alone is well within its own 2 s; the nested one starts
    // when its parent arrives (200 ms) and would end at 700 ms, the slow one
    // at 900 ms: the page's 600 ms cut both.
    let edge = Edge::start_pages(
        &config(
            &[("o", o.url("/"), "forward_params = false")],
            &format!("{HOME}[[routes]]\npath = \"/remote\"\norigin = \"o\"\nsrc = \"/layout\"\n"),
            "[fragments]\ntimeout = \"2s\"\npage_timeout = \"600ms\"\nbreaker_failures = 1\n",
        ),
        &with_placeholders(page),
    )
    .await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        list_items(&r.body),
        vec![
            "<div>OUTER[<i>PH-timeout</i>]</div>",
            "<i>PH-timeout</i>",
            "<b>FAST</b>",
        ],
        "{}",
        r.body
    );
    assert!(r.body.ends_with("</body></html>"));
    assert!(
        r.total >= ms(550) && r.total < ms(850),
        "the page should end at its 600 ms deadline: {:?}",
        r.total
    );
    // The origin kept its own deadlines: cutting its fetches for the page's
    // sake did not open its circuit (breaker_failures = 1).
    let again = edge.get("/").await;
    assert!(again.body.contains("<b>FAST</b>"), "{}", again.body);
    assert!(again.body.contains("OUTER["), "{}", again.body);
    // An origin layout is part of the page: 504 at the page's deadline.
    let r = edge.get("/remote").await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.total < ms(850), "{:?}", r.total);
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    proc_status_kib(pid, field).expect("a kB field of /proc/PID/status")
}

#[tokio::test]
async fn deeply_nested_fragments_hit_the_rewriter_memory_limit_not_the_host() {
    // 2,000,000 bytes of unclosed <div>s, under max_bytes: the rewriter
    // would keep an entry per open element, tens of MiB per fragment.
    let nested = "<div>".repeat(400_000);
    let o = Origin::with_routes(vec![
        ("/deep", R::html(nested)),
        ("/ok", R::html("<b>OK</b>")),
    ])
    .await;
    let limit = std::env::var("RAIN_TEST_REWRITE_MEMORY").unwrap_or_else(|_| "1MiB".into());
    let page = layout(&format!(
        "<ol>{}<li><fragment origin=\"o\" src=\"/ok\"></fragment></li></ol>",
        "<li><fragment origin=\"o\" src=\"/deep\"></fragment></li>".repeat(8)
    ));
    let edge = Edge::start_pages(
        &config(
            &[("o", o.url("/"), "timeout = \"20s\"")],
            HOME,
            &format!("[fragments]\nmax_rewrite_memory = \"{limit}\"\nbreaker_failures = 0\n"),
        ),
        &with_placeholders(page),
    )
    .await;
    let before = proc_kib(edge.pid(), "VmHWM");
    let mut pages = Vec::new();
    for _ in 0..3 {
        pages.push(edge.get("/").await);
    }
    let grown = proc_kib(edge.pid(), "VmHWM").saturating_sub(before);
    eprintln!("peak RSS grew by {grown} KiB with max_rewrite_memory = {limit}");
    let mut want = vec!["<i>PH-error</i>"; 8];
    want.push("<b>OK</b>");
    for r in pages {
        assert_eq!(r.status, 200);
        let items = list_items(&r.body);
        assert!(items == want, "{:.300}", r.body);
    }
    // Generous: the 8 bodies themselves are 16 MB, read whole before rewriting.
    assert!(
        grown < 96 * 1024,
        "8 deep fragments grew the peak RSS by {grown} KiB"
    );
}
