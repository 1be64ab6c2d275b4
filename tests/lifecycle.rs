//! Keep-alive, timeouts, SIGHUP reload and SIGTERM drain.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// Reads one answer off a kept-alive connection: chunked, or with its
/// `Content-Length` (a page whole before its head went out).
async fn read_answer(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let whole = match length {
                Some(n) => got.len() >= end + 4 + n,
                None => got.ends_with(b"0\r\n\r\n"),
            };
            if whole {
                return got;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("timely")
            .expect("read");
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_pages_then_exits_zero() {
    let o = Origin::with_routes(vec![(
        "/slow",
        R::html("<p>SLOW-BUT-WHOLE</p>").after(ms(600)),
    )])
    .await;
    let mut edge = Edge::with_page(
        &o,
        r#"<fragment origin="o" src="/slow"></fragment><p>TAIL</p>"#,
    )
    .await;
    let addr = edge.addr;
    let pending = tokio::spawn(async move { get(addr, "/", &[]).await });
    tokio::time::sleep(ms(200)).await;
    signal(edge.pid(), "-TERM");
    let r = pending.await.expect("request task");
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("<p>SLOW-BUT-WHOLE</p><p>TAIL</p></body></html>"),
        "{}",
        r.body
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = edge.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "rain-edge did not exit after SIGTERM"
        );
        tokio::time::sleep(ms(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_config_keeps_the_old_one() {
    let edge = Edge::start(
        &config(&[], HOME, ""),
        &[("page.html", &layout("VERSION-1"))],
    )
    .await;
    assert!(edge.get("/").await.body.contains("VERSION-1"));
    edge.dir.write("templates/page.html", &layout("VERSION-2"));
    signal(edge.pid(), "-HUP");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = edge.get("/").await.body;
        if seen.contains("VERSION-2") {
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    assert!(seen.contains("VERSION-2"), "{seen}");
    // A broken config is rejected; the old one keeps serving.
    let good = std::fs::read_to_string(&edge.config).expect("read");
    std::fs::write(&edge.config, format!("{good}\n[oops]\n")).expect("write");
    edge.dir.write("templates/page.html", &layout("VERSION-3"));
    signal(edge.pid(), "-HUP");
    tokio::time::sleep(ms(300)).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("VERSION-2"), "{}", r.body);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let edge = Edge::start(&config(&[], HOME, ""), &[("page.html", &layout("KA"))]).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let got = read_answer(&mut s).await;
        assert!(String::from_utf8_lossy(&got).contains("KA"));
    }
}

/// rain-edge with `server` settings and a static page, and a connection to
/// it that has sent `first`.
async fn edge_and_connection(server: &str, first: &[u8]) -> (Edge, TcpStream) {
    let edge = Edge::start(&config(&[], HOME, server), &[("page.html", &layout("KA"))]).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(first).await.expect("send");
    (edge, s)
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_idle_timeout() {
    let (_edge, mut s) = edge_and_connection(
        "idle_timeout = \"400ms\"",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    read_answer(&mut s).await;
    let idle = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the idle connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer was asked for");
    let waited = idle.elapsed();
    assert!(
        waited >= ms(350) && waited < ms(1500),
        "closed after {waited:?}, idle_timeout is 400 ms"
    );
}

#[tokio::test]
async fn a_slow_request_head_gets_408() {
    let (_edge, mut s) = edge_and_connection(
        "header_timeout = \"300ms\"",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http10_clients_get_a_close_delimited_page() {
    let o = Origin::with_routes(vec![("/a", R::html("<p>A</p>").after(ms(100)))]).await;
    let edge = Edge::with_page(&o, r#"<fragment origin="o" src="/a"></fragment>"#).await;
    let r = raw_request(edge.addr, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert!(r.body.ends_with("<p>A</p></body></html>"), "{}", r.body);
}

#[tokio::test]
async fn request_heads_over_the_limits_get_431() {
    let edge = Edge::start(
        &config(&[], HOME, "max_headers = 5\nmax_header_bytes = \"1KiB\""),
        &[("page.html", &layout("fine"))],
    )
    .await;
    let ok = raw_request(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    let many = raw_request(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
    )
    .await;
    assert_eq!(many.status, 431, "{}", many.body);
    assert_eq!(many.header("connection"), Some("close"));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1500)
    );
    let big = raw_request(edge.addr, big.as_bytes()).await;
    assert_eq!(big.status, 431, "{}", big.body);
}

#[tokio::test]
async fn a_kept_alive_connection_trickling_its_next_head_gets_408() {
    let edge = Edge::start(
        &config(
            &[],
            HOME,
            "header_timeout = \"300ms\"\nidle_timeout = \"20s\"",
        ),
        &[("page.html", &layout("KA"))],
    )
    .await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    read_answer(&mut s).await;
    // The next head starts, then trickles: header_timeout runs from its
    // first byte, not the idle timeout.
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").await.expect("send");
    let mut rest = Vec::new();
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let edge = Edge::start(&config(&[], HOME, ""), &[("page.html", &layout("P"))]).await;
    let mut s = TcpStream::connect(edge.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    let first = text.find("HTTP/1.1 200").expect("the page first");
    let second = text.find("HTTP/1.1 404").expect("then the 404");
    assert!(first < second, "{text}");
    assert!(text[..second].contains("P"), "{text}");
}

async fn two_fragment_edge(args: &[&str]) -> (Origin, Edge) {
    let o = Origin::with_routes(vec![
        ("/a", R::html("<p>A</p>")),
        ("/b", R::status(404, "gone")),
    ])
    .await;
    let edge = Edge::start_with(
        &config(&[("o", o.url("/"), "")], HOME, ""),
        &[(
            "page.html",
            &layout(r#"<fragment id="a" origin="o" src="/a"></fragment><fragment id="b" origin="o" src="/b"></fragment>"#),
        )],
        args,
        "info,rain_edge::access=info",
    )
    .await;
    (o, edge)
}

#[tokio::test]
async fn json_logs_carry_request_and_node_ids_and_an_access_line_per_page() {
    let (_o, mut edge) = two_fragment_edge(&["--log-format", "json"]).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("request id").to_string();
    // A proxy that is not trusted cannot choose the id.
    let forged = edge.get_with("/", &[("X-Request-Id", "forged-id")]).await;
    assert_ne!(forged.header("x-request-id"), Some("forged-id"));
    let logs = edge.stop_and_logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_request: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["id"] == id.as_str())
        .collect();
    assert!(of_request.len() >= 2, "{logs}");
    for l in &of_request {
        assert_eq!(l["spans"][0]["node"], "test-node", "{l}");
    }
    let warn = of_request
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("the 404 fragment's warning in the request: {logs}"));
    assert_eq!(warn["fields"]["fragment"], "b");
    let access = of_request
        .iter()
        .find(|l| l["target"] == "rain_edge::access")
        .unwrap_or_else(|| panic!("no access line: {logs}"));
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["path"], "/");
    let frags = access["fields"]["fragments"].as_str().unwrap_or("");
    let mut outcomes: Vec<&str> = frags.split(' ').collect();
    outcomes.sort();
    assert_eq!(outcomes, vec!["a=ok", "b=not_found"], "{access}");
    // Start-up lines carry the node id too.
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "rain-edge listening")
        .expect("start-up line");
    assert_eq!(listening["spans"][0]["node"], "test-node");
}

#[tokio::test]
async fn text_logs_name_the_request_and_the_access_log_is_off_by_default() {
    let (_o, mut edge) = two_fragment_edge(&[]).await;
    let r = edge.get("/").await;
    let id = r.header("x-request-id").expect("request id").to_string();
    let logs = edge.stop_and_logs();
    let warn = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("fragment answered a client error"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(warn.contains(&format!("request{{id={id}}}")), "{warn}");
    assert!(warn.contains("rain_edge{node=test-node}"), "{warn}");
    assert!(logs.contains("fragments="), "access line asked for: {logs}");

    // With the default filter, no access lines.
    let o = Origin::with_routes(vec![("/a", R::html("<p>A</p>"))]).await;
    let mut quiet = Edge::start_with(
        &config(&[("o", o.url("/"), "")], HOME, ""),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/a"></fragment>"#),
        )],
        &[],
        "info,rain_edge::access=off",
    )
    .await;
    assert_eq!(quiet.get("/").await.status, 200);
    let logs = quiet.stop_and_logs();
    assert!(!logs.contains("fragments="), "{logs}");
}

/// Debian's slowhttptest in slowloris mode: 300 connections that each send
/// a header line a second and never end their head. rain-edge cuts each at
/// `header_timeout` from its accept and keeps serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_slowhttptest_is_cut_off_and_pages_keep_flowing() {
    let bin = "/usr/bin/slowhttptest";
    assert!(
        std::path::Path::new(bin).exists(),
        "slowhttptest is not installed: apt-get install slowhttptest (scripts/setup does)"
    );
    let edge = Edge::start(
        &config(&[], HOME, "header_timeout = \"2s\""),
        &[("page.html", &layout("STILL-HERE"))],
    )
    .await;
    let dir = TempDir::new();
    let prefix = dir.0.join("slow");
    let url = format!("http://{}/", edge.addr);
    let attack = tokio::task::spawn_blocking({
        let prefix = prefix.clone();
        move || {
            std::process::Command::new(bin)
                .args([
                    "-H", "-c", "300", "-r", "150", "-i", "1", "-l", "10", "-g", "-v", "1",
                ])
                .arg("-u")
                .arg(&url)
                .arg("-o")
                .arg(&prefix)
                .output()
                .expect("run slowhttptest")
        }
    });
    // Meanwhile, an ordinary browser.
    let mut slowest = Duration::ZERO;
    let mut pages = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let r = edge.get("/").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("STILL-HERE"));
        slowest = slowest.max(r.total);
        pages += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = attack.await.expect("slowhttptest");
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).expect("slowhttptest CSV");
    // Seconds,Closed,Pending,Connected,Service Available
    let rows: Vec<Vec<u64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .filter(|r: &Vec<u64>| r.len() == 5)
        .collect();
    let last = rows.last().expect("CSV rows");
    assert!(
        last[1] >= 250,
        "rain-edge closed only {} of 300: {csv}",
        last[1]
    );
    // It ends as soon as every connection is closed (long before its 10 s).
    assert!(
        report.contains("No open connections left"),
        "{report}\n{csv}"
    );
    assert!(rows.len() < 10, "the attack held on: {csv}");
    assert!(pages >= 10, "{pages} pages");
    assert!(slowest < Duration::from_secs(1), "a page took {slowest:?}");
}

/// One page over a fresh connection; `Err` when the connection was refused
/// or the answer broke off (no panic: the load counts them).
async fn try_page(addr: std::net::SocketAddr) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

#[tokio::test]
async fn a_binary_upgrade_hands_the_listeners_over_with_no_refused_connection() {
    let o = Origin::with_routes(vec![("/slow", R::html("<p>WHOLE</p>").after(ms(150)))]).await;
    let sock = std::env::temp_dir().join(format!("rain-edge-upgrade-{}.sock", free_port()));
    let mut old = Edge::start(
        &config(
            &[("o", o.url("/"), "")],
            HOME,
            &format!("upgrade_socket = \"{}\"", sock.display()),
        ),
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/slow"></fragment><p>TAIL</p>"#),
        )],
    )
    .await;
    let addr = old.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match try_page(addr).await {
                    Ok(got) if find(&got, b"<p>WHOLE</p><p>TAIL</p>").is_some() => ok += 1,
                    Ok(got) => failed.push(String::from_utf8_lossy(&got).into_owned()),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(ms(500)).await;
    // The new binary waits on upgrade_socket for the listeners.
    let mut new = std::process::Command::new(bin())
        .arg("--config")
        .arg(&old.config)
        .arg("--upgrade")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the new binary");
    tokio::time::sleep(ms(500)).await;
    signal(old.pid(), "-QUIT");
    let quit_at = Instant::now();
    // The old one finishes its pages and exits 0 once they are done (after
    // pingora's 5 s handover window, in which both accept).
    let status = loop {
        if let Some(s) = old.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            quit_at.elapsed() < Duration::from_secs(15),
            "the old process did not exit after SIGQUIT"
        );
        tokio::time::sleep(ms(50)).await;
    };
    assert_eq!(status.code(), Some(0), "the old process's exit");
    // The new one serves alone for a while.
    tokio::time::sleep(ms(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.expect("load task");
        ok += o;
        failed.extend(f);
    }
    let _ = new.kill();
    let _ = new.wait();
    let _ = std::fs::remove_file(&sock);
    assert!(
        failed.is_empty(),
        "{} of {} pages failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 50, "only {ok} pages during the upgrade");
}
