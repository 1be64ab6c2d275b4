//! Two rain-edge instances behind a real load balancer (Debian's nginx,
//! round robin, no stickiness) sharing sessions through a real Redis. A user
//! browses through the balancer; one instance is stopped mid-run (SIGTERM):
//! the user's origin sessions survive, and no request fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// nginx in front of `backends`, round robin, on a free loopback port.
struct Balancer {
    addr: SocketAddr,
    _nginx: Nginx,
}

impl Balancer {
    async fn start(backends: &[SocketAddr]) -> Balancer {
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b} max_fails=1 fail_timeout=10s;\n"))
            .collect();
        let http = format!(
            "access_log off;\n  upstream edges {{\n{servers}    keepalive 8;\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://edges;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $host;\n      proxy_buffering off;\n\
                   proxy_next_upstream error timeout http_502;\n    }}\n  }}"
        );
        let nginx = Nginx::start(TempDir::new(), &http, &[port]).await;
        Balancer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _nginx: nginx,
        }
    }
}

/// One user browsing `rounds` pages through `lb`: each page must show the
/// same origin session with its count one higher. Returns the failures.
async fn browse(lb: SocketAddr, rounds: u32, done: Arc<AtomicU32>) -> Vec<String> {
    let mut sid: Option<String> = None;
    let mut origin_session: Option<String> = None;
    let mut failures = Vec::new();
    for round in 1..=rounds {
        let cookie = sid.as_ref().map(|s| format!("rain_sid={s}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let r = get(lb, "/", &headers).await;
        done.fetch_add(1, Ordering::SeqCst);
        if r.status != 200 {
            failures.push(format!("round {round}: {} {}", r.status, r.body));
            continue;
        }
        if let Some(new) = sid_of(&r) {
            if sid.is_some() {
                failures.push(format!("round {round}: a second rain_sid was issued"));
            }
            sid = Some(new);
        }
        let items = list_items(&r.body);
        let item = items.first().copied().unwrap_or_default();
        let session = field(item, "session").unwrap_or_default().to_string();
        if field(item, "count") != Some(round.to_string().as_str()) {
            failures.push(format!("round {round}: wrong count: {}", r.body));
        }
        match &origin_session {
            None => origin_session = Some(session),
            Some(s) if *s != session => {
                failures.push(format!("round {round}: another origin session: {}", r.body))
            }
            Some(_) => {}
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_nginx_share_sessions_and_survive_a_stop() {
    const USERS: u32 = 4;
    const ROUNDS: u32 = 30;
    let redis = Redis::start().await;
    // Fragments of 20 ms: pages are in flight on both instances when one stops.
    let (o, state) = session_origin("A", "JSESSIONID", ms(20)).await;
    let page = layout(r#"<ul><li><fragment origin="a" src="/s"></fragment></li></ul>"#);
    let cfg = |node: &str| {
        config(
            &[("a", o.url("/"), "")],
            HOME,
            &format!(
                "trusted_proxies = [\"127.0.0.1/32\"]\n\
                 [session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
                redis.url()
            ),
        )
        .replace("node_id = \"test-node\"", &format!("node_id = \"{node}\""))
    };
    let mut edge1 = Edge::start_with(&cfg("edge-1"), &[("page.html", &page)], &[], "info").await;
    let edge2 = Edge::start(&cfg("edge-2"), &[("page.html", &page)]).await;
    let lb = Balancer::start(&[edge1.addr, edge2.addr]).await;

    let done = Arc::new(AtomicU32::new(0));
    let users: Vec<_> = (0..USERS)
        .map(|_| tokio::spawn(browse(lb.addr, ROUNDS, done.clone())))
        .collect();
    // Mid-run, one instance is stopped: it drains its in-flight pages, and
    // the balancer sends the rest to the other.
    while done.load(Ordering::SeqCst) < USERS * ROUNDS / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served_before = o.requests_to("/s").len();
    let logs = tokio::task::spawn_blocking(move || edge1.stop_and_logs())
        .await
        .expect("stop edge-1");
    assert!(
        logs.contains("rain-edge stopped"),
        "edge-1 did not drain: {logs}"
    );
    let mut failures = Vec::new();
    for u in users {
        failures.extend(u.await.expect("user"));
    }
    assert!(
        failures.is_empty(),
        "requests lost or sessions broken: {failures:?}"
    );
    assert_eq!(
        state.issued.load(Ordering::SeqCst),
        USERS as usize,
        "one origin session per user for the whole run"
    );
    // Round robin really spread the users over both instances before the
    // stop, and only edge-2 served after it.
    let nodes: Vec<String> = o
        .requests_to("/s")
        .iter()
        .filter_map(|r| r.header("x-rain-node").map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), (USERS * ROUNDS) as usize);
    let before = &nodes[..served_before / 2];
    assert!(before.iter().any(|n| n == "edge-1"), "{nodes:?}");
    assert!(before.iter().any(|n| n == "edge-2"), "{nodes:?}");
    let after_stop = &nodes[served_before + USERS as usize..];
    assert!(after_stop.iter().all(|n| n == "edge-2"), "{nodes:?}");
    drop(edge2);
}
