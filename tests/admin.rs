//! The admin API (README.md, admin API): only on `admin_listen`, bearer-token
//! protected, origins registered and removed at run time (kept across
//! reloads until deleted), reloads that keep
//! the old config on errors (under load), and metrics that move as pages are
//! served.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "s3cret-token";

fn admin_config(origins: &[(&str, String, &str)], extra: &str) -> String {
    config(
        origins,
        HOME,
        &format!("admin_listen = \"{{admin}}\"\nadmin_token = \"{TOKEN}\"\n{extra}"),
    )
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, req.as_bytes()).await
}

#[tokio::test]
async fn admin_calls_need_the_token_and_stay_off_the_public_listener() {
    let edge = Edge::start(&admin_config(&[], ""), &[("page.html", &layout("x"))]).await;
    let none = get(edge.admin, "/health", &[]).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = get(
        edge.admin,
        "/health",
        &[("Authorization", "Bearer s3cret-tokem")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let ok = call(edge.admin, "GET", "/health", None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v = json(&ok);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["node_id"], "test-node");
    // The public listener serves pages only.
    for path in ["/health", "/metrics", "/origins"] {
        assert_eq!(
            edge.get(path).await.status,
            404,
            "{path} on the public listener"
        );
    }
    let unknown = call(edge.admin, "GET", "/nope", None).await;
    assert_eq!(unknown.status, 404);
    let wrong_method = call(edge.admin, "DELETE", "/health", None).await;
    assert_eq!(wrong_method.status, 405);
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_open() {
    let edge = Edge::start(
        &config(&[], HOME, "admin_listen = \"{admin}\""),
        &[("page.html", &layout("x"))],
    )
    .await;
    let r = get(edge.admin, "/health", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn metrics_and_origin_stats_move_as_pages_are_served() {
    let o = Origin::with_routes(vec![
        ("/a", R::html("<p>A</p>").after(ms(30))),
        ("/missing", R::status(404, "gone")),
    ])
    .await;
    let edge = Edge::start(
        &admin_config(&[("o", o.url("/"), "")], ""),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/a"></fragment><fragment origin="o" src="/missing"></fragment>"#),
        )],
    )
    .await;
    for _ in 0..3 {
        let r = edge.get("/").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("<p>A</p>"));
    }
    let expected = [
        "rain_requests_total{kind=\"page\",status=\"200\"} 3",
        "rain_fragments_total{origin=\"o\",outcome=\"ok\"} 3",
        "rain_fragments_total{origin=\"o\",outcome=\"not_found\"} 3",
        "rain_fragment_duration_seconds_count{origin=\"o\"} 6",
        "rain_sessions_created_total 3",
        "rain_requests_in_flight 0",
        "rain_fragment_fetches_in_flight 0",
    ];
    // A request is counted once its last byte is written, a moment after
    // the browser may have read it: ask again for up to 2 s.
    let mut m = call(edge.admin, "GET", "/metrics", None).await;
    for _ in 0..40 {
        if expected.iter().all(|e| m.body.lines().any(|l| l == *e)) {
            break;
        }
        tokio::time::sleep(ms(50)).await;
        m = call(edge.admin, "GET", "/metrics", None).await;
    }
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    for line in expected {
        assert!(
            m.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            m.body
        );
    }
    let one = json(&call(edge.admin, "GET", "/origins/o", None).await);
    assert_eq!(one["name"], "o");
    assert_eq!(one["health"], "up");
    assert_eq!(one["source"], "config");
    assert_eq!(one["stats"]["requests"], 6);
    assert_eq!(one["stats"]["errors"]["not_found"], 3);
    assert_eq!(one["stats"]["timeouts"], 0);
    let p50 = one["stats"]["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p50 > 0.0 && p50 < 1000.0, "{p50}");
    assert!(one["stats"]["latency_ms"]["p99"].as_f64().is_some());
    let routes = json(&call(edge.admin, "GET", "/routes", None).await);
    assert_eq!(routes["routes"][0]["path"], "/");
    assert_eq!(routes["routes"][0]["layout"], "page.html");
}

#[tokio::test]
async fn an_origin_that_keeps_failing_is_down_and_its_circuit_opens_until_a_probe_succeeds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let o = Origin::start(move |_req| {
        if flag.load(Ordering::Relaxed) {
            R::html("<p>back</p>")
        } else {
            R::status(503, "busy")
        }
    })
    .await;
    let edge = Edge::start(
        &admin_config(
            &[("o", o.url("/"), "")],
            "[fragments]\nbreaker_failures = 3\nbreaker_cooldown = \"300ms\"",
        ),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/a"></fragment>"#),
        )],
    )
    .await;
    let health =
        |v: serde_json::Value| v["origins"][0]["health"].as_str().unwrap_or("").to_string();
    for _ in 0..2 {
        edge.get("/").await;
    }
    let list = json(&call(edge.admin, "GET", "/origins", None).await);
    assert_eq!(
        health(list),
        "up",
        "two failures in a row are not yet three"
    );
    edge.get("/").await;
    let list = json(&call(edge.admin, "GET", "/origins", None).await);
    assert_eq!(list["origins"][0]["name"], "o");
    assert_eq!(list["origins"][0]["counters"]["failures"], 3);
    assert_eq!(health(list), "down");
    // The open circuit fails the fragment at once, without the origin.
    let asked = o.requests_to("/a").len();
    let page = edge.get("/").await;
    assert!(!page.body.contains("back") && !page.body.contains("busy"));
    assert_eq!(o.requests_to("/a").len(), asked, "the origin was asked");
    healthy.store(true, Ordering::Relaxed);
    // After the cooldown one probe goes through, and its success closes it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(edge.get("/").await.body.contains("back"));
    let list = json(&call(edge.admin, "GET", "/origins", None).await);
    assert_eq!(health(list), "up");
}

#[tokio::test]
async fn origins_registered_at_run_time_serve_the_next_page() {
    let first = Origin::with_routes(vec![("/a", R::html("<p>FIRST</p>"))]).await;
    let second = Origin::with_routes(vec![("/a", R::html("<p>SECOND</p>"))]).await;
    let edge = Edge::start(
        &admin_config(&[("o", first.url("/"), "")], ""),
        &[
            (
                "page.html",
                &layout(r#"<fragment origin="o" src="/a"></fragment>"#),
            ),
            ("placeholders/not-found.html", "<i>PH-not-found</i>"),
        ],
    )
    .await;
    assert!(edge.get("/").await.body.contains("FIRST"));

    // A bad table is refused with the config loader's errors, and nothing changes.
    let bad = call(
        edge.admin,
        "PUT",
        "/origins/o",
        Some(r#"{"url": "ftp://nowhere/", "bogus": 1}"#),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let errors = json(&bad)["errors"].to_string();
    assert!(
        errors.contains("origins.o.url") && errors.contains("origins.o.bogus"),
        "{errors}"
    );
    assert!(edge.get("/").await.body.contains("FIRST"));

    // Replacing the origin takes effect for the next page.
    let body = format!(r#"{{"url": "{}", "timeout": "2s"}}"#, second.url("/"));
    let put = call(edge.admin, "PUT", "/origins/o", Some(&body)).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let v = json(&put);
    assert_eq!(v["source"], "api");
    assert_eq!(v["timeout_ms"], 2000);
    assert!(edge.get("/").await.body.contains("SECOND"));

    // A new origin is listed with its source.
    let body = format!(r#"{{"url": "{}"}}"#, first.url("/"));
    let created = call(edge.admin, "PUT", "/origins/extra", Some(&body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let list = json(&call(edge.admin, "GET", "/origins", None).await);
    let names: Vec<(String, String)> = list["origins"]
        .as_array()
        .expect("array")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap_or("").to_string(),
                o["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("extra".into(), "api".into()), ("o".into(), "api".into())]
    );

    // Deleted: its fragments fail as not_found.
    let del = call(edge.admin, "DELETE", "/origins/o", None).await;
    assert_eq!(del.status, 200, "{}", del.body);
    let page = edge.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("PH-not-found"), "{}", page.body);
    assert_eq!(
        call(edge.admin, "DELETE", "/origins/o", None).await.status,
        404
    );
    assert_eq!(
        call(edge.admin, "GET", "/origins/o", None).await.status,
        404
    );

    // A reload restores the file's origin `o` (deleted through the API) and
    // keeps what the API registered until it is deleted.
    let r = call(edge.admin, "POST", "/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(edge.get("/").await.body.contains("FIRST"));
    let extra = json(&call(edge.admin, "GET", "/origins/extra", None).await);
    assert_eq!(extra["source"], "api", "{extra}");
    assert_eq!(
        call(edge.admin, "DELETE", "/origins/extra", None)
            .await
            .status,
        200
    );
    let r = call(edge.admin, "POST", "/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        call(edge.admin, "GET", "/origins/extra", None).await.status,
        404
    );
}

#[tokio::test]
async fn reloads_under_load_lose_no_request() {
    let edge = Edge::start(&admin_config(&[], ""), &[("page.html", &layout("V1"))]).await;
    let good = std::fs::read_to_string(&edge.config).expect("config");
    let page = edge.dir.0.join("templates/page.html");
    let addr = edge.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = get(addr, "/", &[]).await;
                if r.status == 200 && (r.body.contains("V1") || r.body.contains("V2")) {
                    ok += 1;
                } else {
                    bad.push(format!("{} {}", r.status, r.body));
                }
            }
            (ok, bad)
        }));
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        if i % 2 == 0 {
            // A broken config: rejected with its errors, the old one serves on.
            std::fs::write(&edge.config, format!("{good}\n[server.oops]\n")).expect("write");
            let r = call(edge.admin, "POST", "/reload", None).await;
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(
                json(&r)["errors"].to_string().contains("oops"),
                "{}",
                r.body
            );
        } else {
            std::fs::write(&edge.config, &good).expect("write");
            std::fs::write(&page, layout(if i == 5 { "V2" } else { "V1" })).expect("write");
            let r = call(edge.admin, "POST", "/reload", None).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, bad) = c.await.expect("client");
        assert!(bad.is_empty(), "failed requests during reloads: {bad:?}");
        total += ok;
    }
    assert!(total > 20, "only {total} pages were served");
    assert!(edge.get("/").await.body.contains("V2"));
    let m = call(edge.admin, "GET", "/metrics", None).await;
    assert!(
        m.body.lines().any(|l| l == "rain_config_reloads_total 3"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .lines()
            .any(|l| l == "rain_config_reloads_rejected_total 3"),
        "{}",
        m.body
    );
}

#[tokio::test]
async fn a_page_in_flight_finishes_on_the_config_it_began_with() {
    let o = Origin::with_routes(vec![("/slow", R::html("<p>SLOW</p>").after(ms(400)))]).await;
    let v1 = layout(r#"<h1>V1</h1><fragment origin="o" src="/slow" timeout="2s"></fragment>"#);
    let edge = Edge::start(
        &admin_config(&[("o", o.url("/"), "")], ""),
        &[("page.html", &v1)],
    )
    .await;
    let addr = edge.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(
        edge.dir.0.join("templates/page.html"),
        layout("<h1>V2</h1>"),
    )
    .expect("write");
    let r = call(edge.admin, "POST", "/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let next = edge.get("/").await;
    assert!(
        next.body.contains("V2") && !next.body.contains("SLOW"),
        "{}",
        next.body
    );
    let old = in_flight.await.expect("page");
    assert_eq!(old.status, 200);
    assert!(
        old.body.contains("V1") && old.body.contains("SLOW"),
        "{}",
        old.body
    );
}

#[tokio::test]
async fn origin_names_from_html_do_not_grow_the_metrics() {
    let o = Origin::with_routes(vec![(
        "/layout",
        R::html(layout(
            r#"<fragment origin="ghost-1" src="/x"></fragment><fragment origin="ghost-2" src="/x"></fragment>"#,
        )),
    )])
    .await;
    let routes = "[[routes]]\npath = \"/\"\norigin = \"o\"\nsrc = \"/layout\"\n";
    let edge = Edge::start(
        &config(
            &[("o", o.url("/"), "")],
            routes,
            &format!("admin_listen = \"{{admin}}\"\nadmin_token = \"{TOKEN}\""),
        ),
        &[],
    )
    .await;
    assert_eq!(edge.get("/").await.status, 200);
    let m = call(edge.admin, "GET", "/metrics", None).await;
    assert!(!m.body.contains("ghost"), "{}", m.body);
    assert!(
        m.body
            .lines()
            .any(|l| l == "rain_fragments_total{origin=\"\",outcome=\"not_found\"} 2"),
        "{}",
        m.body
    );
}

/// `/pages` keeps the last pages with each fragment's timings;
/// `/pages/{request_id}` answers JSON, or a waterfall for people, whose
/// token is taken once from the query and then kept in a cookie.
#[tokio::test]
async fn pages_are_kept_with_their_fragments_and_drawn_as_waterfalls() {
    let o = Origin::with_routes(vec![
        ("/fast", R::html("<p>fast</p>")),
        ("/slow", R::html("<p>slow</p>").after(ms(150))),
    ])
    .await;
    let edge = Edge::start(
        &admin_config(&[("o", o.url("/"), "timeout = \"2s\"")], ""),
        &[(
            "page.html",
            &layout("<fragment id=\"a\" origin=\"o\" src=\"/fast\"></fragment><fragment id=\"b\" origin=\"o\" src=\"/slow\"></fragment><fragment id=\"c\" origin=\"o\" src=\"/missing\">x</fragment>"),
        )],
    )
    .await;
    let page = edge.get("/").await;
    let id = page.header("x-request-id").expect("request id").to_string();
    let list = json(&call(edge.admin, "GET", "/pages", None).await);
    let first = &list["pages"][0];
    assert_eq!(first["request_id"], id.as_str(), "{list}");
    assert_eq!(first["path"], "/");
    assert_eq!(first["status"], 200);
    let frags = first["fragments"].as_array().expect("fragments");
    assert_eq!(frags.len(), 3, "{first}");
    let by_id = |name: &str| {
        frags
            .iter()
            .find(|f| f["id"] == name)
            .unwrap_or_else(|| panic!("no {name} in {first}"))
            .clone()
    };
    let (a, b, c) = (by_id("a"), by_id("b"), by_id("c"));
    assert_eq!(a["outcome"], "ok");
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytes"], 11);
    assert_eq!(a["origin"], "o");
    assert_eq!(a["server"], o.addr.to_string().as_str());
    assert_eq!(a["cache"], "none");
    assert_eq!(c["outcome"], "not_found");
    assert_eq!(c["status"], 404);
    // The slow one took its 150 ms; both started together.
    let dur = |f: &serde_json::Value| {
        f["end_ms"].as_f64().unwrap_or(0.0) - f["start_ms"].as_f64().unwrap_or(0.0)
    };
    assert!(dur(&b) >= 140.0, "{b}");
    assert!(b["start_ms"].as_f64().unwrap_or(99.0) < 50.0, "{b}");
    assert!(first["total_ms"].as_f64().unwrap_or(0.0) >= dur(&b));

    let one = json(&call(edge.admin, "GET", &format!("/pages/{id}"), None).await);
    assert_eq!(one["request_id"], id.as_str());
    assert_eq!(
        call(edge.admin, "GET", "/pages/nope", None).await.status,
        404
    );

    // People: no token, a login form; the token once in the query, then the cookie.
    let html = |extra: &str| {
        format!("GET /pages/{id}{extra} HTTP/1.1\r\nHost: admin\r\nAccept: text/html\r\nConnection: close\r\n")
    };
    let r = raw_request(edge.admin, format!("{}\r\n", html("")).as_bytes()).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("<form"), "{}", r.body);
    let r = raw_request(
        edge.admin,
        format!("{}\r\n", html(&format!("?token={TOKEN}"))).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = r.header("set-cookie").expect("cookie").to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let value = cookie.split(';').next().unwrap_or_default().to_string();
    let r = raw_request(
        edge.admin,
        format!("{}Cookie: {value}\r\n\r\n", html("")).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert_eq!(
        r.body.matches("<g class=\"bar\" data-outcome=").count(),
        3,
        "{}",
        r.body
    );
    assert!(r.body.contains("data-outcome=\"not_found\""));
}
