//! Several servers behind one origin (docs/configuration.md, several
//! servers): session-sticky and round-robin balancing, a connect failure
//! tried once on another server, each server's circuit breaker, and
//! pingora's health checks taking a server out and back in; the admin API
//! and the metrics showing each server. The last test runs two real Tomcat
//! JSP containers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// `servers` of origin `name` in the admin API, by address.
async fn servers(edge: &Edge, name: &str) -> Vec<serde_json::Value> {
    let v = json(&admin_request(edge, "GET", &format!("/origins/{name}"), None).await);
    v["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers in {v}"))
        .clone()
}

fn server(list: &[serde_json::Value], addr: SocketAddr) -> &serde_json::Value {
    list.iter()
        .find(|s| s["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not among {list:?}"))
}

/// A loopback address that refuses connections: a socket bound there but
/// not listening, held so that no other test's server takes its port.
fn dead_address() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (addr, socket)
}

/// An origin that says which server it is (`server=NAME`) and counts its
/// requests; `/health` answers 500 while `sick` is set.
async fn named(label: &'static str, sick: Arc<AtomicBool>) -> (Origin, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let o = Origin::start(move |req| {
        if req.path.ends_with("/health") {
            return if sick.load(Ordering::SeqCst) {
                R::status(503, "sick")
            } else {
                R::html("ok")
            };
        }
        h.fetch_add(1, Ordering::SeqCst);
        R::html(format!(
            "<p>server={label} host={}</p>",
            req.header("host").unwrap_or("")
        ))
    })
    .await;
    (o, hits)
}

const PAGE: &str = "<fragment src=\"/f\" origin=\"app\"></fragment>";

fn edge_config(servers: &[SocketAddr], lines: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    config(
        &[(
            "app",
            "http://app.internal:8080/".to_string(),
            &format!("servers = [{}]\n{lines}", list.join(", ")),
        )],
        HOME,
        "admin_listen = \"{admin}\"",
    )
}

#[tokio::test]
async fn session_balance_keeps_each_user_on_one_server_and_spreads_users() {
    let (a, _) = named("a", Arc::default()).await;
    let (b, _) = named("b", Arc::default()).await;
    let edge = Edge::start(
        &edge_config(&[a.addr, b.addr], "balance = \"session\""),
        &[("page.html", &layout(PAGE))],
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        let mut user = Browser::new(&edge);
        let first = user.get("/").await;
        let home = field(&first.body, "server")
            .unwrap_or_else(|| panic!("{}", first.body))
            .to_string();
        // The url's host stays the Host header.
        assert_eq!(field(&first.body, "host"), Some("app.internal:8080"));
        for _ in 0..4 {
            let again = user.get("/").await;
            assert_eq!(
                field(&again.body, "server"),
                Some(home.as_str()),
                "a user moved"
            );
        }
        seen.insert(home);
    }
    assert_eq!(seen.len(), 2, "12 users all on {seen:?}");
    let list = servers(&edge, "app").await;
    assert_eq!(list.len(), 2);
    for s in &list {
        assert_eq!(s["health"], "up", "{s}");
        assert_eq!(s["in_flight"], 0, "{s}");
    }
}

#[tokio::test]
async fn round_robin_alternates_and_an_unreachable_server_is_tried_once_then_left_out() {
    let (live, hits) = named("live", Arc::default()).await;
    let (dead, _held) = dead_address();
    let edge = Edge::start(
        &edge_config(&[dead, live.addr], "balance = \"round_robin\""),
        &[("page.html", &layout(PAGE))],
    )
    .await;
    // Every page comes whole: a refused connection is tried once on the
    // other server.
    for i in 0..12 {
        let r = edge.get("/").await;
        assert!(r.body.contains("server=live"), "page {i}: {}", r.body);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 12);
    // After breaker_failures (5) refusals in a row its circuit is open: it
    // is not even tried any more.
    let list = servers(&edge, "app").await;
    let d = server(&list, dead);
    assert_eq!(d["health"], "down", "{d}");
    assert_eq!(d["circuit"], "open", "{d}");
    let tried = d["requests"].as_u64().unwrap_or(0);
    assert!((5..=6).contains(&tried), "{d}");
    for _ in 0..6 {
        assert!(edge.get("/").await.body.contains("server=live"));
    }
    let list = servers(&edge, "app").await;
    assert_eq!(server(&list, dead)["requests"].as_u64(), Some(tried));
    assert_eq!(server(&list, live.addr)["health"], "up");
    let origin = json(&admin_request(&edge, "GET", "/origins/app", None).await);
    assert_eq!(origin["health"], "up", "one server up is enough: {origin}");

    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    for line in [
        format!("rain_circuit_open{{origin=\"app\",server=\"{dead}\"}} 1"),
        format!("rain_server_up{{origin=\"app\",server=\"{dead}\"}} 0"),
        format!(
            "rain_server_up{{origin=\"app\",server=\"{}\"}} 1",
            live.addr
        ),
        format!(
            "rain_server_requests_total{{origin=\"app\",server=\"{}\"}} 18",
            live.addr
        ),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

#[tokio::test]
async fn health_checks_take_a_server_out_and_put_it_back() {
    let sick = Arc::new(AtomicBool::new(false));
    let (a, a_hits) = named("a", sick.clone()).await;
    let (b, _) = named("b", Arc::default()).await;
    let edge = Edge::start(
        &edge_config(
            &[a.addr, b.addr],
            "balance = \"round_robin\"\nhealth_check = \"/health\"\nhealth_interval = \"100ms\"",
        ),
        &[("page.html", &layout(PAGE))],
    )
    .await;
    let health_of = |list: &[serde_json::Value]| server(list, a.addr)["health"].clone();
    let wait_for = |want: &'static str| {
        let edge = &edge;
        async move {
            let start = Instant::now();
            loop {
                let list = servers(edge, "app").await;
                if health_of(&list) == want {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "server a never became {want}: {list:?}"
                );
                tokio::time::sleep(ms(50)).await;
            }
        }
    };
    wait_for("up").await;
    // The probe goes to the path below the url, with the url's Host.
    let probes = a.requests_to("/health");
    assert!(!probes.is_empty());
    assert_eq!(probes[0].header("host"), Some("app.internal:8080"));

    sick.store(true, Ordering::SeqCst);
    wait_for("down").await;
    let before = a_hits.load(Ordering::SeqCst);
    for _ in 0..8 {
        assert!(edge.get("/").await.body.contains("server=b"));
    }
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        before,
        "a server out got requests"
    );

    sick.store(false, Ordering::SeqCst);
    wait_for("up").await;
    let mut on_a = 0;
    for _ in 0..8 {
        if edge.get("/").await.body.contains("server=a") {
            on_a += 1;
        }
    }
    assert_eq!(on_a, 4, "round robin after a came back");
    let metrics = admin_request(&edge, "GET", "/metrics", None).await.body;
    assert!(metrics.contains(&format!(
        "rain_server_up{{origin=\"app\",server=\"{}\"}} 1",
        a.addr
    )));
}

#[tokio::test]
async fn an_origin_whose_servers_are_all_out_fails_its_fragments_at_once() {
    let sick = Arc::new(AtomicBool::new(true));
    let (a, a_hits) = named("a", sick.clone()).await;
    let (b, b_hits) = named("b", sick.clone()).await;
    let edge = Edge::start(
        &edge_config(
            &[a.addr, b.addr],
            "health_check = \"health\"\nhealth_interval = \"100ms\"\ntimeout = \"5s\"",
        ),
        &[("page.html", &layout(PAGE))],
    )
    .await;
    let start = Instant::now();
    loop {
        let v = json(&admin_request(&edge, "GET", "/origins/app", None).await);
        if v["health"] == "down" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(ms(50)).await;
    }
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("server="), "{}", r.body);
    assert!(r.total < Duration::from_secs(2), "{:?}", r.total);
    assert_eq!(
        a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst),
        0
    );
}

/// Two real Tomcat containers behind one `jsp` origin: each user keeps its
/// JSP session (count 1..10) on one of them, users spread over both; when
/// one Tomcat stops, its users start a new session on the other without an
/// error page, and the others keep counting.
#[tokio::test]
async fn two_tomcats_keep_jsp_sessions_per_user_and_survive_one_stopping() {
    let ((one, _w1), (two, _w2)) = tokio::join!(apps::tomcat(), apps::tomcat());
    let addrs: Vec<SocketAddr> = [one.port, two.port]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let cfg = config(
        &[(
            "jsp",
            format!("http://127.0.0.1:{}/jsp/", one.port),
            &format!(
                "kind = \"jsp\"\ntimeout = \"8s\"\nservers = [{}]",
                list.join(", ")
            ),
        )],
        HOME,
        "admin_listen = \"{admin}\"",
    );
    let edge = Edge::start(
        &cfg,
        &[(
            "page.html",
            &layout("<fragment src=\"/counter.jsp\" origin=\"jsp\"></fragment>"),
        )],
    )
    .await;
    let mut users: Vec<(Browser, String)> = Vec::new();
    for _ in 0..8 {
        users.push((Browser::new(&edge), String::new()));
    }
    for visit in 1..=10u32 {
        for (user, session) in users.iter_mut() {
            let r = user.get("/").await;
            assert!(!r.body.contains("FALLBACK"), "{}", r.body);
            let id = field(&r.body, "session")
                .unwrap_or_else(|| panic!("{}", r.body))
                .to_string();
            assert_eq!(
                field(&r.body, "count"),
                Some(visit.to_string().as_str()),
                "{}",
                r.body
            );
            if visit == 1 {
                *session = id;
            } else {
                assert_eq!(&id, session, "a user's JSP session changed");
            }
        }
    }
    let list = servers(&edge, "jsp").await;
    let requests: Vec<u64> = addrs
        .iter()
        .map(|a| server(&list, *a)["requests"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        requests.iter().all(|n| *n > 0),
        "users all on one Tomcat: {list:?}"
    );

    drop(one);
    let mut moved = 0;
    for (user, session) in users.iter_mut() {
        for visit in 0..3 {
            let r = user.get("/").await;
            assert!(!r.body.contains("FALLBACK"), "after the stop: {}", r.body);
            let id = field(&r.body, "session").unwrap_or_default().to_string();
            let count: u32 = field(&r.body, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if visit == 0 {
                if &id == session {
                    assert_eq!(count, 11, "{}", r.body);
                } else {
                    // Moved to the other Tomcat: a new session there.
                    assert_eq!(count, 1, "{}", r.body);
                    moved += 1;
                    *session = id.clone();
                }
            } else {
                assert_eq!(&id, session, "{}", r.body);
            }
        }
    }
    assert!(moved > 0, "no user was on the stopped Tomcat");
    assert!(moved < users.len(), "every user moved");
}
