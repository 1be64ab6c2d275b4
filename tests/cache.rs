//! The fragment cache (docs/configuration.md, caching): `public` fragments
//! kept by their origin's own rules, served fresh without a request, never
//! when the origin forbids it; purged by path or tag; and never a byte of one
//! user's private fragment in another user's page.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

fn cached(body: &str, cache_control: &str) -> R {
    R::html(body.to_string()).with_header("cache-control", cache_control)
}

#[tokio::test]
async fn public_fragments_are_cached_by_their_origins_rules_and_purged() {
    let o = Origin::with_routes(vec![
        (
            "/nav",
            cached("<p>NAV</p>", "public, max-age=60").with_header("surrogate-key", "menu top"),
        ),
        ("/short", cached("<p>SHORT</p>", "max-age=1")),
        ("/nostore", cached("<p>NOSTORE</p>", "no-store, max-age=60")),
        ("/private", cached("<p>PRIVATE</p>", "private, max-age=60")),
        (
            "/cookie",
            cached("<p>COOKIE</p>", "max-age=60").with_header("set-cookie", "a=1"),
        ),
        (
            "/star",
            cached("<p>STAR</p>", "max-age=60").with_header("vary", "*"),
        ),
        ("/plain", R::html("<p>PLAIN</p>")),
    ])
    .await;
    let names = [
        "nav", "short", "nostore", "private", "cookie", "star", "plain",
    ];
    let page: String = names
        .iter()
        .map(|n| format!("<fragment id=\"{n}\" origin=\"o\" src=\"/{n}\" public></fragment>"))
        .collect();
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "")], HOME, "admin_listen = \"{admin}\""),
        &[("page.html", &layout(&page))],
    )
    .await;
    for _ in 0..3 {
        let r = edge.get("/").await;
        assert!(
            r.body.contains("<p>NAV</p>") && r.body.contains("<p>PLAIN</p>"),
            "{}",
            r.body
        );
    }
    let count = |p: &str| o.requests_to(p).len();
    assert_eq!(
        count("/nav"),
        1,
        "a fresh public fragment was fetched again"
    );
    assert_eq!(count("/short"), 1);
    for p in ["/nostore", "/private", "/cookie", "/star", "/plain"] {
        assert_eq!(count(p), 3, "{p} was served from the cache");
    }
    // The waterfall says which came from the cache.
    assert_eq!(cache_column(&edge, "nav").await, "hit");
    assert_eq!(cache_column(&edge, "plain").await, "miss");
    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    assert!(metrics.contains("rain_cache_hits_total 4"), "{metrics}");
    // The map shows the origin's hit ratio: 4 hits in 21 lookups.
    let map = json(&admin_request(&edge, "GET", "/map.json", None).await);
    let ratio = map["origins"][0]["cache_hit_ratio"].as_f64().unwrap_or(0.0);
    assert!((ratio - 4.0 / 21.0).abs() < 0.01, "{map}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rain_cache_bytes ") && l != "rain_cache_bytes 0"),
        "{metrics}"
    );

    // max-age=1: fetched again once it is stale.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    edge.get("/").await;
    assert_eq!(count("/short"), 2);

    // Purged by path, then by tag: fetched again.
    let r = admin_request(
        &edge,
        "POST",
        "/purge",
        Some(r#"{"origin": "o", "path": "/nav"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"dropped\":1"), "{}", r.body);
    edge.get("/").await;
    assert_eq!(count("/nav"), 2);
    let r = admin_request(&edge, "POST", "/purge", Some(r#"{"tag": "menu"}"#)).await;
    assert!(r.body.contains("\"dropped\":1"), "{}", r.body);
    edge.get("/").await;
    assert_eq!(count("/nav"), 3);
    let r = admin_request(&edge, "POST", "/purge", Some(r#"{"origin": "o"}"#)).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn an_origin_with_cache_false_is_never_cached() {
    let o = Origin::with_routes(vec![("/nav", cached("<p>NAV</p>", "public, max-age=60"))]).await;
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "cache = false")], HOME, ""),
        &[(
            "page.html",
            &layout("<fragment origin=\"o\" src=\"/nav\" public></fragment>"),
        )],
    )
    .await;
    for _ in 0..3 {
        assert!(edge.get("/").await.body.contains("<p>NAV</p>"));
    }
    assert_eq!(o.requests_to("/nav").len(), 3);
}

/// Two users with their own sessions browse pages that mix a cached public
/// fragment and a private one that names the user: no byte of one user's
/// private fragment ever reaches the other, even when the origin marks
/// the private answer cacheable.
#[tokio::test]
async fn no_byte_of_a_users_private_fragment_reaches_another() {
    let n = Arc::new(AtomicU32::new(0));
    let seq = n.clone();
    let o = Origin::start(move |req| match req.path.as_str() {
        "/nav" => cached("<p>NAV for everyone</p>", "public, max-age=60"),
        "/me" => {
            let sid = req
                .header("cookie")
                .and_then(|c| c.split("; ").find_map(|p| p.strip_prefix("who=")))
                .map(str::to_string);
            match sid {
                Some(who) => cached(&format!("<p>SECRET-{who}</p>"), "public, max-age=60"),
                None => {
                    let who = format!("user{}", seq.fetch_add(1, Ordering::SeqCst));
                    cached(&format!("<p>SECRET-{who}</p>"), "public, max-age=60")
                        .with_header("set-cookie", &format!("who={who}; Path=/"))
                }
            }
        }
        _ => R::status(404, "no"),
    })
    .await;
    let edge = Edge::with_page(
        &o,
        "<fragment origin=\"o\" src=\"/nav\" public></fragment><fragment id=\"me\" origin=\"o\" src=\"/me\"></fragment>",
    )
    .await;
    let mut ann = Browser::new(&edge);
    let mut bob = Browser::new(&edge);
    let mut secrets: [Option<String>; 2] = [None, None];
    for round in 0..6 {
        for (i, user) in [&mut ann, &mut bob].into_iter().enumerate() {
            let r = user.get("/").await;
            assert!(r.body.contains("NAV for everyone"), "{}", r.body);
            let mine = field(&r.body, "SECRET").map(str::to_string);
            let mine = r
                .body
                .split("SECRET-")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .map(str::to_string)
                .or(mine)
                .unwrap_or_else(|| panic!("round {round}: no secret in {}", r.body));
            match &secrets[i] {
                None => secrets[i] = Some(mine),
                Some(known) => assert_eq!(&mine, known, "round {round}: a user saw another secret"),
            }
            assert_eq!(r.body.matches("SECRET-").count(), 1, "{}", r.body);
        }
    }
    assert_ne!(
        secrets[0], secrets[1],
        "both users saw the same private fragment"
    );
    // The public fragment came from the cache; the private one every time.
    assert_eq!(o.requests_to("/nav").len(), 1);
    assert_eq!(o.requests_to("/me").len(), 12);
}

/// A stale copy with a validator is revalidated: the origin's `304` keeps
/// it (no body sent), a `200` replaces it.
#[tokio::test]
async fn a_stale_copy_is_revalidated_with_its_etag() {
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let o = Origin::start(move |req| {
        let now = v.load(Ordering::SeqCst);
        let etag = format!("\"v{now}\"");
        if req.header("if-none-match") == Some(etag.as_str()) {
            return R::status(304, "")
                .with_header("etag", &etag)
                .with_header("cache-control", "public, max-age=1");
        }
        cached(&format!("<p>NAV v{now}</p>"), "public, max-age=1").with_header("etag", &etag)
    })
    .await;
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "")], HOME, "admin_listen = \"{admin}\""),
        &[(
            "page.html",
            &layout("<fragment origin=\"o\" src=\"/nav\" public></fragment>"),
        )],
    )
    .await;
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: revalidated with If-None-Match, 304, the kept copy shown.
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    let asked = o.requests_to("/nav");
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].header("if-none-match"), Some("\"v1\""));
    // Fresh again for a second.
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    assert_eq!(o.requests_to("/nav").len(), 2);
    // A new version: the 200 replaces the copy.
    version.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(edge.get("/").await.body.contains("<p>NAV v2</p>"));
    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    assert!(
        metrics.contains("rain_cache_revalidated_total 1"),
        "{metrics}"
    );
}

/// The `cache` column of fragment `id` in the newest page's waterfall.
async fn cache_column(edge: &Edge, id: &str) -> String {
    let v = json(&admin_request(edge, "GET", "/pages", None).await);
    v["pages"][0]["fragments"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .and_then(|f| f["cache"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The value of metric `name` (a line `name N`).
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Within its `stale-while-revalidate` window a stale copy is served at
/// once, while one exchange refreshes it for every page that asks
/// meanwhile: the origin holds the refresh until the pages are in.
#[tokio::test]
async fn a_stale_copy_is_served_at_once_while_one_request_refreshes_it() {
    let o = Gated::start(|n, _| {
        cached(
            &format!("<p>NAV v{n}</p>"),
            "public, max-age=1, stale-while-revalidate=30",
        )
    })
    .await;
    let edge = nav_edge(&o.origin).await;
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The refresh (request 2) waits for the test to open the gate.
    o.gate.send_replace(1);

    // Stale now: five pages at once all get the copy while the refresh is
    // held at the origin, so none of them waited for it.
    let pages = futures_util::future::join_all((0..5).map(|_| edge.get("/"))).await;
    for p in &pages {
        assert!(p.body.contains("<p>NAV v1</p>"), "{}", p.body);
    }
    assert_eq!(cache_column(&edge, "nav").await, "stale");
    // One refresh, not five.
    o.wait_for_requests(2).await;
    assert_eq!(o.asked().len(), 2, "one refresh");

    // The refresh lands: the next page has the new copy, fresh.
    o.gate.send_replace(usize::MAX);
    let mut newest = String::new();
    // Pages asked before the refresh is in still get the stale copy.
    let mut stale_pages = 5;
    for _ in 0..100 {
        newest = edge.get("/").await.body;
        if newest.contains("<p>NAV v2</p>") {
            break;
        }
        assert!(newest.contains("<p>NAV v1</p>"), "{newest}");
        stale_pages += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(newest.contains("<p>NAV v2</p>"), "{newest}");
    assert_eq!(cache_column(&edge, "nav").await, "hit");
    assert_eq!(o.asked().len(), 2);
    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    assert_eq!(
        metric(&metrics, "rain_cache_stale_total"),
        Some(stale_pages),
        "{metrics}"
    );
}

/// A stale copy is served in place of a failure (a 500, or no answer in
/// time) within its `stale-if-error` window, even with our own
/// `stale_if_error` off; not without the directive, and not when
/// `must-revalidate` forbids it.
#[tokio::test]
async fn stale_if_error_serves_a_copy_when_its_origin_fails() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failing.clone();
    let o = Origin::start(move |req| {
        let failing = f.load(Ordering::SeqCst);
        let (body, cc) = match req.path.as_str() {
            "/sie" => ("SIE", "public, max-age=1, stale-if-error=60"),
            "/slow" => ("SLOW", "public, max-age=1, stale-if-error=60"),
            "/plain" => ("PLAIN", "public, max-age=1"),
            "/mustrev" => (
                "MUSTREV",
                "public, max-age=1, must-revalidate, stale-if-error=60",
            ),
            "/short" => ("SHORT", "public, max-age=1, stale-if-error=1"),
            _ => return R::status(404, "no"),
        };
        match (failing, req.path.as_str()) {
            (true, "/slow") => cached("<p>LATE</p>", cc).after(Duration::from_secs(3)),
            (true, _) => R::status(500, "down"),
            (false, _) => cached(&format!("<p>{body}</p>"), cc),
        }
    })
    .await;
    let names = ["sie", "slow", "plain", "mustrev", "short"];
    let page: String = names
        .iter()
        .map(|n| format!("<fragment id=\"{n}\" origin=\"o\" src=\"/{n}\" public></fragment>"))
        .collect();
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "timeout = \"500ms\"")],
            HOME,
            "admin_listen = \"{admin}\"\n[fragments]\nstale_if_error = \"0s\"\nbreaker_failures = 0",
        ),
        &[("page.html", &layout(&page))],
    )
    .await;
    let first = edge.get("/").await.body;
    for n in ["SIE", "SLOW", "PLAIN", "MUSTREV", "SHORT"] {
        assert!(first.contains(&format!("<p>{n}</p>")), "{first}");
    }
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<p>SIE</p>"), "a 500: {}", r.body);
    assert!(
        r.body.contains("<p>SLOW</p>"),
        "no answer in time: {}",
        r.body
    );
    assert!(
        r.body.contains("<p>SHORT</p>"),
        "stale for 0.1 s: {}",
        r.body
    );
    assert!(!r.body.contains("<p>PLAIN</p>"), "no directive: {}", r.body);
    assert!(
        !r.body.contains("<p>MUSTREV</p>"),
        "must-revalidate: {}",
        r.body
    );
    assert!(!r.body.contains("LATE"), "{}", r.body);
    assert_eq!(cache_column(&edge, "sie").await, "stale");
    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    assert_eq!(
        metric(&metrics, "rain_cache_stale_total"),
        Some(3),
        "{metrics}"
    );

    // The directive's window counts from when the copy went stale: a
    // second later, `stale-if-error=1` is past, `=60` is not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = edge.get("/").await;
    assert!(r.body.contains("<p>SIE</p>"), "{}", r.body);
    assert!(!r.body.contains("<p>SHORT</p>"), "{}", r.body);
}

/// A cached fragment's rewritten content is kept with the copy, and
/// reused only where it would read the same: its links into the page name
/// the page they are shown in, and each fragment id its own navigation
/// key; a fragment whose rewriting does not read the page is reused on
/// every page.
#[tokio::test]
async fn a_cached_fragments_rewriting_is_reused_only_where_it_reads_the_same() {
    let o = Origin::with_routes(vec![
        (
            "/nav",
            cached(
                "<nav><a href=\"/list?p=2\">next</a></nav>",
                "public, max-age=60",
            ),
        ),
        (
            "/logo",
            cached(
                "<p class=\"logo\"><img src=\"/logo.png\">LOGO</p>",
                "public, max-age=60",
            ),
        ),
    ])
    .await;
    let routes = "[[routes]]\npath = \"/\"\nlayout = \"page.html\"\n\
                  [[routes]]\npath = \"/other\"\nlayout = \"page.html\"\n";
    let edge = Edge::start(
        &config(&[("o", o.url("/"), "")], routes, ""),
        &[(
            "page.html",
            &layout(
                "<fragment id=\"a\" origin=\"o\" src=\"/nav\" public></fragment>\
                 <fragment id=\"b\" origin=\"o\" src=\"/nav\" public></fragment>\
                 <fragment id=\"l\" origin=\"o\" src=\"/logo\" public></fragment>",
            ),
        )],
    )
    .await;
    let next = "rain.a=list%3Fp%3D2";
    let hrefs = |body: &str| -> Vec<String> {
        body.split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|h| h.contains("rain."))
            .map(str::to_string)
            .collect()
    };
    // Twice on `/` (the second from the kept rewriting), then elsewhere.
    let mut logos = Vec::new();
    // The first page fetches (once per fragment id at most: two fragments'
    // first fetches may run side by side); the rest come from the cache.
    assert_eq!(edge.get("/").await.status, 200);
    let fetched = o.requests_to("/nav").len();
    for path in ["/", "/", "/other?q=1", "/other?q=1", "/"] {
        let r = edge.get(path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let links = hrefs(&r.body);
        let page_path = path.split('?').next().unwrap_or_default();
        let with_query = path.contains('?');
        assert_eq!(links.len(), 2, "{path}: {}", r.body);
        for h in &links {
            let (p, q) = h.split_once('?').unwrap_or((h, ""));
            assert_eq!(p, page_path, "{path}: a link of another page: {h}");
            assert_eq!(q.starts_with("q=1&amp;"), with_query, "{path}: {h}");
        }
        assert!(links[0].ends_with(next), "{path}: {links:?}");
        assert!(
            links[1].ends_with(&next.replace("rain.a", "rain.b")),
            "{path}: fragment b has a's key: {links:?}"
        );
        let logo = r.body[r.body.find("<p class=").unwrap_or(0)..]
            .split("LOGO")
            .next()
            .unwrap_or_default()
            .to_string();
        logos.push(logo);
    }
    assert!(logos.iter().all(|l| l == &logos[0]), "{logos:?}");
    assert!(logos[0].contains("/_rain/r/o/logo.png"), "{logos:?}");
    assert!(fetched <= 2, "{fetched}");
    assert_eq!(o.requests_to("/nav").len(), fetched);
    assert_eq!(o.requests_to("/logo").len(), 1);
}

/// A gated origin for `/nav`: each request is logged with its
/// `If-None-Match`, then answered by `answer(n, if_none_match)` (n counts
/// from 1) once the gate lets request n through.
struct Gated {
    origin: Origin,
    asked: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// Requests up to this number are let through.
    gate: tokio::sync::watch::Sender<usize>,
}

impl Gated {
    async fn start(answer: impl Fn(usize, Option<&str>) -> R + Send + Sync + 'static) -> Gated {
        let asked: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
        let (gate, open) = tokio::sync::watch::channel(usize::MAX);
        let log = asked.clone();
        let answer = Arc::new(answer);
        let handler: rain_edge::demo::origin::Handler = Arc::new(move |req| {
            let inm = req.header("if-none-match").map(str::to_string);
            let n = {
                let mut log = log.lock().expect("log");
                log.push(inm.clone());
                log.len()
            };
            let reply = answer(n, inm.as_deref());
            let mut open = open.clone();
            Box::pin(async move {
                let _ = open.wait_for(|through| *through >= n).await;
                reply
            })
        });
        Gated {
            origin: Origin::with_handler(handler).await,
            asked,
            gate,
        }
    }

    fn asked(&self) -> Vec<Option<String>> {
        self.asked.lock().expect("log").clone()
    }

    async fn wait_for_requests(&self, n: usize) {
        within(
            Duration::from_secs(2),
            &format!("{n} origin requests"),
            || async { self.asked().len() >= n },
        )
        .await;
    }
}

async fn nav_edge(o: &Origin) -> Edge {
    Edge::start(
        &config(
            &[("o", o.url("/"), "timeout = \"5s\"")],
            HOME,
            "admin_listen = \"{admin}\"\n[fragments]\nstale_if_error = \"0s\"",
        ),
        &[(
            "page.html",
            &layout("<fragment id=\"nav\" origin=\"o\" src=\"/nav\" public></fragment>"),
        )],
    )
    .await
}

/// A refresh answered with something that may not be kept (`no-store`
/// now) drops the stale copy: it is not served for the rest of its
/// `stale-while-revalidate` window.
#[tokio::test]
async fn a_refresh_that_may_not_be_kept_drops_the_stale_copy() {
    let o = Gated::start(|n, _| match n {
        1 => cached(
            "<p>NAV v1</p>",
            "public, max-age=1, stale-while-revalidate=60",
        ),
        _ => cached(&format!("<p>NAV v{n}</p>"), "no-store"),
    })
    .await;
    let edge = nav_edge(&o.origin).await;
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: served, and refreshed in the background with a no-store answer.
    assert!(edge.get("/").await.body.contains("<p>NAV v1</p>"));
    o.wait_for_requests(2).await;
    // The copy is gone: each page asks the origin now.
    let mut seen = String::new();
    for _ in 0..100 {
        seen = edge.get("/").await.body;
        if !seen.contains("<p>NAV v1</p>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.contains("<p>NAV v3</p>"), "{seen}");
    assert!(edge.get("/").await.body.contains("<p>NAV v4</p>"));
}

/// A purge while a revalidation is out: the `304` that comes back after it
/// refreshes nothing, and rain-edge asks for the whole answer at once, so
/// the page shows the fragment.
#[tokio::test]
async fn a_304_for_a_copy_purged_meanwhile_is_followed_by_a_whole_request() {
    let o = Gated::start(|n, inm| match inm {
        Some("\"v1\"") => R::status(304, "")
            .with_header("etag", "\"v1\"")
            .with_header("cache-control", "public, max-age=1"),
        _ => cached(&format!("<p>NAV n{n}</p>"), "public, max-age=1").with_header("etag", "\"v1\""),
    })
    .await;
    let edge = nav_edge(&o.origin).await;
    assert!(edge.get("/").await.body.contains("<p>NAV n1</p>"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The revalidation (request 2) is held at the origin.
    o.gate.send_replace(1);
    let page = edge.get("/");
    let purge = async {
        o.wait_for_requests(2).await;
        let r = admin_request(
            &edge,
            "POST",
            "/purge",
            Some(r#"{"origin": "o", "path": "/nav"}"#),
        )
        .await;
        assert!(r.body.contains("\"dropped\":1"), "{}", r.body);
        o.gate.send_replace(usize::MAX);
    };
    let (r, ()) = tokio::join!(page, purge);
    assert!(r.body.contains("<p>NAV n3</p>"), "{}", r.body);
    assert_eq!(
        o.asked(),
        vec![None, Some("\"v1\"".to_string()), None],
        "a revalidation, then a whole request"
    );
}

/// An answer whose request left before a purge is shown, but not kept: the
/// purge wins over the exchange that was in flight.
#[tokio::test]
async fn an_answer_fetched_across_a_purge_is_not_kept() {
    let o = Gated::start(|n, _| cached(&format!("<p>NAV n{n}</p>"), "public, max-age=60")).await;
    let edge = nav_edge(&o.origin).await;
    o.gate.send_replace(0);
    let page = edge.get("/");
    let purge = async {
        o.wait_for_requests(1).await;
        let r = admin_request(&edge, "POST", "/purge", Some(r#"{"tag": "none"}"#)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        o.gate.send_replace(usize::MAX);
    };
    let (r, ()) = tokio::join!(page, purge);
    assert!(r.body.contains("<p>NAV n1</p>"), "{}", r.body);
    // Not kept: fetched again, and that answer is kept.
    assert!(edge.get("/").await.body.contains("<p>NAV n2</p>"));
    assert!(edge.get("/").await.body.contains("<p>NAV n2</p>"));
    assert_eq!(o.asked().len(), 2);
}
