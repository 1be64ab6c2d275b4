//! Soak under faults (issue 7, part 9): mixed load of pages and form posts
//! against origins that are slow, failing, resetting and trickling. One
//! fragment origin sits behind a fault-injecting TCP proxy
//! (`support::faults`); the form origin answers each post by its id: at
//! once, too late, 500, closing the connection unanswered, or 422.
//!
//! Checked: every page is 200 and whole (failures are placeholders, never
//! rain-edge's 5xx); every post gets the answer its origin's behaviour
//! calls for, and reaches the origin exactly once; rain-edge's RSS and
//! open descriptors stay flat; it logs no error and exits cleanly.
//!
//! `RAIN_SOAK_SECONDS` sets the length (20 s in the test suite;
//! `scripts/bench faults` runs 600 s on the release build) and
//! `RAIN_SOAK_USERS` the number of browsers (48), each with its session,
//! one request at a time. Three browsers in four use HTTP/1.1, a new
//! connection per request; the fourth speaks HTTP/2 over TLS, three of them
//! sharing one connection (their requests multiplexed on it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rain_edge::demo::origin::{self, Handler, OriginRequest, ReplyFuture};

use crate::support::faults::FaultProxy;
use crate::support::tls::{self_signed, tls_connect};
use crate::support::*;

const FORM: &str = "application/x-www-form-urlencoded";

/// An answer, whichever protocol carried it.
struct Answer {
    status: u16,
    sid: Option<String>,
    body: String,
}

/// How one browser reaches rain-edge.
enum Transport {
    /// HTTP/1.1, a new connection per request.
    H1(std::net::SocketAddr),
    /// HTTP/2 over TLS, on a connection shared with other browsers.
    H2(h2::client::SendRequest<Bytes>),
}

impl Transport {
    /// GET `path`, or POST `body` to it; status 0 when the exchange broke.
    async fn request(&mut self, path: &str, cookie: &str, body: Option<&[u8]>) -> Answer {
        match self {
            Transport::H1(addr) => {
                let r = match body {
                    Some(b) => {
                        post(
                            *addr,
                            path,
                            &[("Cookie", cookie), ("Content-Type", FORM)],
                            b,
                        )
                        .await
                    }
                    None => get(*addr, path, &[("Cookie", cookie)]).await,
                };
                Answer {
                    status: r.status,
                    sid: sid_of(&r),
                    body: r.body,
                }
            }
            Transport::H2(client) => {
                let exchange = h2_request(client, path, cookie, body);
                match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => Answer {
                        status: 0,
                        sid: None,
                        body: format!("HTTP/2 exchange failed: {e}"),
                    },
                    Err(_) => Answer {
                        status: 0,
                        sid: None,
                        body: "HTTP/2 exchange timed out".into(),
                    },
                }
            }
        }
    }
}

async fn h2_request(
    client: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    cookie: &str,
    body: Option<&[u8]>,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = http::Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(format!("https://127.0.0.1{path}"));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if body.is_some() {
        req = req.header("content-type", FORM);
    }
    let mut ready = client.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(req.body(())?, body.is_none())?;
    if let Some(b) = body {
        stream.send_data(Bytes::copy_from_slice(b), true)?;
    }
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("rain_sid="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .next();
    let mut data = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = data.data().await {
        let chunk = chunk?;
        let _ = data.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        sid,
        body: String::from_utf8_lossy(&got).into_owned(),
    })
}

/// What the browser must get for a post, by what the origin does with it.
fn expected_status(id: u64) -> u16 {
    match id % 10 {
        0..=5 => 303, // Post/Redirect/Get
        6 => 504,     // answers after the origin's deadline
        7 | 8 => 502, // 500; connection closed without an answer
        _ => 422,     // a validation error, shown in the page
    }
}

fn post_reply(id: u64) -> R {
    match id % 10 {
        0..=5 => R::status(303, "").with_header("location", &format!("/form?done={id}")),
        6 => R::html("<p>too late</p>").after(ms(900)),
        7 => R::status(500, "<p>broken</p>"),
        8 => R {
            drop: true,
            ..R::default()
        },
        _ => {
            R::status(422, "<p>invalid</p>").with_header("content-type", "text/html; charset=utf-8")
        }
    }
}

async fn serve(handler: Handler) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    origin::spawn("127.0.0.1:0".parse().expect("addr"), handler)
        .await
        .expect("bind origin")
}

/// RSS in KiB and open descriptors of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let rss = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

#[derive(Default)]
struct Tally {
    pages: u64,
    posts: u64,
    /// Requests that went over HTTP/2.
    h2: u64,
    statuses: HashMap<u16, u64>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_against_faulty_origins_loses_nothing() {
    let seconds: u64 = std::env::var("RAIN_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let run_for = Duration::from_secs(seconds);
    let users_n: u64 = std::env::var("RAIN_SOAK_USERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);

    // The fragment origin, behind the fault proxy. It keeps no log (a long
    // soak would fill the test's memory).
    let served = Arc::new(AtomicU64::new(0));
    let big = format!("<div>{}</div>", "<p>lorem ipsum dolor</p>".repeat(1600));
    let s = served.clone();
    let fragments: Handler = Arc::new(move |req: OriginRequest| -> ReplyFuture {
        let n = s.fetch_add(1, Ordering::Relaxed);
        let reply = match req.path.as_str() {
            "/ok" => R::html("<b>OK</b>"),
            "/slowish" => R::html("<b>SLOWISH</b>").after(ms(n * 37 % 450)),
            "/maybe" if n % 5 == 0 => R::status(500, "no"),
            "/maybe" => R::html("<b>MAYBE</b>"),
            "/big" => R::html(big.clone()),
            "/pub" => R::html("<b>PUBLIC</b>"),
            _ => R::status(404, ""),
        };
        Box::pin(async move { reply })
    });
    let (frag_addr, _frag_task) = serve(fragments).await;
    let proxy = FaultProxy::start(frag_addr, 0x5eed).await;

    // The form origin: every post's id counted on arrival.
    let arrived: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let a = arrived.clone();
    let forms: Handler = Arc::new(move |req: OriginRequest| -> ReplyFuture {
        let reply = if req.method == "POST" {
            let id = std::str::from_utf8(&req.body)
                .ok()
                .and_then(|b| b.strip_prefix("id="))
                .and_then(|v| v.parse::<u64>().ok());
            match id {
                Some(id) => {
                    *a.lock().expect("arrivals").entry(id).or_insert(0) += 1;
                    post_reply(id)
                }
                None => R::status(400, "no id"),
            }
        } else {
            R::html(
                r#"<form method="post" action="/form"><input name="id"><button>Go</button></form>"#,
            )
        };
        Box::pin(async move { reply })
    });
    let (form_addr, _form_task) = serve(forms).await;

    let page = layout(
        r#"<ol>
<li><fragment origin="f" src="/ok"></fragment></li>
<li><fragment origin="f" src="/slowish"></fragment></li>
<li><fragment origin="f" src="/maybe"></fragment></li>
<li><fragment origin="f" src="/big"></fragment></li>
<li><fragment origin="f" src="/pub" public></fragment></li>
<li><fragment id="form" origin="form" src="/form"></fragment></li>
</ol>"#,
    );
    let (cert, key, der) = self_signed();
    let certs = TempDir::new();
    let server = format!(
        "tls_listen = [\"{{tls}}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [fragments]\nbreaker_cooldown = \"2s\"\n",
        certs.write("edge.pem", &cert).display(),
        certs.write("edge.key", &key).display(),
    );
    let mut edge = Edge::start_with(
        &config(
            &[
                (
                    "f",
                    format!("http://{}/", proxy.addr),
                    "timeout = \"300ms\"",
                ),
                (
                    "form",
                    format!("http://{form_addr}/"),
                    "timeout = \"500ms\"",
                ),
            ],
            HOME,
            &server,
        ),
        &[("page.html", &page)],
        &[],
        // Only errors: fragment failures are expected here by the thousand,
        // and stderr is read at the end.
        "error",
    )
    .await;
    let pid = edge.pid();
    let addr = edge.addr;

    // Resource use, sampled every second.
    let samples: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                samples.lock().expect("samples").push(usage(pid));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // HTTP/2 connections, each shared by three browsers.
    let mut h2_conns = Vec::new();
    for _ in 0..users_n.div_ceil(12) {
        let tls = tls_connect(edge.tls, &der, b"h2").await;
        let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        h2_conns.push(client);
    }

    let next_id = Arc::new(AtomicU64::new(1));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut users = Vec::new();
    for u in 0..users_n {
        let next_id = next_id.clone();
        let tally = tally.clone();
        let mut transport = match h2_conns.get((u / 12) as usize) {
            Some(c) if u % 4 == 3 => Transport::H2(c.clone()),
            _ => Transport::H1(addr),
        };
        users.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9 + u);
            let mut sid: Option<String> = None;
            let mut action: Option<String> = None;
            while started.elapsed() < run_for {
                let cookie = sid
                    .as_ref()
                    .map(|s| format!("rain_sid={s}"))
                    .unwrap_or_default();
                let post_now = action.is_some() && rng.below(10) >= 8;
                if let (true, Some(path)) = (post_now, action.as_deref()) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let r = transport
                        .request(path, &cookie, Some(format!("id={id}").as_bytes()))
                        .await;
                    let mut t = tally.lock().expect("tally");
                    t.posts += 1;
                    t.h2 += u64::from(matches!(transport, Transport::H2(_)));
                    *t.statuses.entry(r.status).or_insert(0) += 1;
                    if r.status != expected_status(id) {
                        t.failures.push(format!(
                            "post {id} got {} instead of {}: {:.200}",
                            r.status,
                            expected_status(id),
                            r.body
                        ));
                    }
                    continue;
                }
                let r = transport.request("/", &cookie, None).await;
                if sid.is_none() {
                    sid = r.sid.clone();
                }
                if action.is_none() && r.body.contains("<form") {
                    action = Some(attr_value(&r.body, "action", "<form"));
                }
                let mut t = tally.lock().expect("tally");
                t.pages += 1;
                t.h2 += u64::from(matches!(transport, Transport::H2(_)));
                *t.statuses.entry(r.status).or_insert(0) += 1;
                let whole = r.body.ends_with("</body></html>") && list_items(&r.body).len() == 6;
                if r.status != 200 || !whole {
                    t.failures
                        .push(format!("page got {}: {:.300}", r.status, r.body));
                }
            }
        }));
    }
    for u in users {
        u.await.expect("user task");
    }
    let elapsed = started.elapsed();
    // Idle a moment: connections of the run close, pooled ones expire later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = usage(pid);
    sampler.abort();
    let logs = edge.stop_and_logs();

    let t = tally.lock().expect("tally");
    let samples = samples.lock().expect("samples").clone();
    let arrived = arrived.lock().expect("arrivals").clone();
    let sent = next_id.load(Ordering::Relaxed) - 1;
    let rss: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let fds: Vec<usize> = samples.iter().map(|s| s.1).collect();
    eprintln!(
        "soak {:.0} s, {users_n} users: {} pages ({:.0}/s), {} posts, {} of them over HTTP/2; \
         statuses {:?}; faults: {}; \
         fragment origin served {}; RSS KiB first/max/last {}/{}/{}; fds first/max/last {}/{}/{}; \
         after 2 s idle: RSS {} KiB, {} fds",
        elapsed.as_secs_f64(),
        t.pages,
        t.pages as f64 / elapsed.as_secs_f64(),
        t.posts,
        t.h2,
        t.statuses,
        proxy.counts.summary(),
        served.load(Ordering::Relaxed),
        rss.get(1).copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
        fds.get(1).copied().unwrap_or(0),
        fds.iter().max().copied().unwrap_or(0),
        fds.last().copied().unwrap_or(0),
        after.0,
        after.1,
    );

    assert!(
        t.failures.is_empty(),
        "{} wrong answers, the first: {:#?}",
        t.failures.len(),
        &t.failures[..t.failures.len().min(5)]
    );
    assert!(t.pages > 100 && t.posts > 20, "too little load to judge");
    // Every post reached its origin exactly once: none lost, none repeated.
    let missing: Vec<u64> = (1..=sent).filter(|id| !arrived.contains_key(id)).collect();
    let repeated: Vec<(&u64, &u32)> = arrived.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty(),
        "posts that never reached the origin: {missing:?}"
    );
    assert!(
        repeated.is_empty(),
        "posts that reached it more than once: {repeated:?}"
    );
    assert_eq!(arrived.len() as u64, sent);
    // Flat: after the first fifth (warm-up), the second half of the run
    // peaks no higher than the first half, within a margin.
    let warm = samples.len() / 5;
    let steady = &samples[warm..];
    let (first, second) = steady.split_at(steady.len() / 2);
    let peak = |s: &[(u64, usize)]| {
        (
            s.iter().map(|x| x.0).max().unwrap_or(0),
            s.iter().map(|x| x.1).max().unwrap_or(0),
        )
    };
    let (rss1, fds1) = peak(first);
    let (rss2, fds2) = peak(second);
    assert!(
        rss2 <= rss1 + rss1 / 5 + 4096,
        "RSS grew: first half peaked at {rss1} KiB, second half at {rss2} KiB"
    );
    assert!(
        fds2 <= fds1 + 64,
        "descriptors grew: first half peaked at {fds1}, second half at {fds2}"
    );
    assert!(
        !logs.contains("ERROR") && !logs.contains("panicked"),
        "rain-edge logged errors: {:.2000}",
        logs
    );
}
