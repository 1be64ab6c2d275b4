//! rain-edge never connects to a host that is not a configured origin, and
//! nothing climbs above an origin's base path.

use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test]
async fn origin_markup_cannot_make_rain_edge_fetch_foreign_hosts_or_paths() {
    let foreign = Origin::with_routes(vec![("/steal", R::html("STOLEN"))]).await;
    let fa = foreign.addr;
    let o = Origin::start(move |req| match req.path.as_str() {
        "/app/layout" => R::html(format!(
            r#"<html><body>
<fragment src="http://{fa}/steal">F1</fragment>
<fragment origin="o" src="http://{fa}/steal">F2</fragment>
<fragment src="http://127.0.0.1:1@{fa}/steal">F3</fragment>
<fragment origin="o" src="/../secret">F4</fragment>
<fragment origin="o" src="/%2e%2e/secret">F5</fragment>
<fragment origin="o" src="/a/..%2f..%2fsecret">F6</fragment>
<fragment origin="o" src="/redirect-out">F7</fragment>
<fragment origin="o" src="/redirect-up">F8</fragment>
<fragment origin="nope" src="/x">F9</fragment>
<fragment origin="o" src="/ok">F10</fragment>
</body></html>"#
        )),
        "/app/redirect-out" => {
            R::status(302, "").with_header("location", &format!("http://{fa}/steal"))
        }
        "/app/redirect-up" => R::status(302, "").with_header("location", "../secret"),
        "/app/ok" => R::html("FINE"),
        _ => R::status(404, ""),
    })
    .await;
    let routes = "[[routes]]\npath = \"/\"\norigin = \"o\"\nsrc = \"/layout\"\n";
    let edge = Edge::start(&config(&[("o", o.url("/app/"), "")], routes, ""), &[]).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    for fb in ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9"] {
        assert!(
            r.body.contains(&format!("{fb}\n")),
            "{fb} did not fall back:\n{}",
            r.body
        );
    }
    assert!(r.body.contains("FINE"));
    assert!(
        foreign.requests().is_empty(),
        "a foreign host was fetched: {:?}",
        foreign.requests()
    );
    for req in o.requests() {
        assert!(
            req.path.starts_with("/app/"),
            "the origin saw a path above its base: {}",
            req.path
        );
    }
}

/// A route `/acc/*` whose layout comes from an origin under `/app/`: each
/// of `paths` gets 400, and the origin sees only layout requests.
async fn climbing_paths_get_400(paths: &[&str]) {
    let o = Origin::start(|req| {
        if req.path.starts_with("/app/layout") {
            R::html("<html><body>LAYOUT</body></html>")
        } else {
            R::html("SECRET")
        }
    })
    .await;
    let routes = "[[routes]]\npath = \"/acc/*\"\norigin = \"o\"\nsrc = \"/layout\"\n";
    let edge = Edge::start(&config(&[("o", o.url("/app/"), "")], routes, ""), &[]).await;
    assert_eq!(edge.get("/acc/fine").await.status, 200);
    for path in paths {
        let r = edge.get(path).await;
        assert_eq!(
            r.status, 400,
            "{path} was answered {}: {}",
            r.status, r.body
        );
    }
    for req in o.requests() {
        assert!(
            req.path.starts_with("/app/layout"),
            "the origin saw {}",
            req.path
        );
    }
}

#[tokio::test]
async fn page_paths_cannot_climb_above_an_origin_layout_base() {
    climbing_paths_get_400(&[
        "/acc/../../secret",
        "/acc/%2e%2e/%2e%2e/secret",
        "/acc/.%2E/.%2e/x",
        "/acc/a%2f..%2f..%2f..%2fsecret",
    ])
    .await;
}

#[tokio::test]
async fn malformed_requests_get_a_4xx() {
    let edge = Edge::start(&config(&[], HOME, ""), &[("page.html", &layout("static"))]).await;
    let r = raw_request(edge.addr, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let r = raw_request(edge.addr, b"NONSENSE\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let r = raw_request(
        edge.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    // NUL or a bare CR inside a field value, a NUL in the target or Host.
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n",
    ] {
        let r = raw_request(edge.addr, bad).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
    assert_eq!(edge.get("/nowhere").await.status, 404);
    assert_eq!(edge.get("/_rain/anything").await.status, 404);
    assert_eq!(edge.get("/").await.status, 200);
}

/// A foreign host (the loopback address on `fp`, another port than any
/// origin's) in every spelling the hardening issue lists, and other schemes.
fn foreign_spellings(fp: u16) -> Vec<String> {
    vec![
        format!("http://127.0.0.1:{fp}/steal"),
        format!("http://2130706433:{fp}/steal"),
        format!("http://0x7f.1:{fp}/steal"),
        format!("http://0177.0.0.1:{fp}/steal"),
        format!("http://127.1:{fp}/steal"),
        format!("http://[::ffff:127.0.0.1]:{fp}/steal"),
        format!("http://localhost:{fp}/steal"),
        format!("HTTP://127.0.0.1:{fp}/steal"),
        format!("//127.0.0.1:{fp}/steal"),
        format!("http:\\\\127.0.0.1:{fp}\\steal"),
        format!("http://127.0.0.1:{fp}\t/steal"),
        format!("http://user:pw@127.0.0.1:{fp}/steal"),
        format!("https://127.0.0.1:{fp}/steal"),
        format!("gopher://127.0.0.1:{fp}/steal"),
        "file:///etc/passwd".to_string(),
        "data:text/html,<p>DATA</p>".to_string(),
        "javascript:alert(1)".to_string(),
    ]
}

/// The SSRF matrix of the hardening issue: every spelling of a foreign host
/// (the loopback address in other encodings, on another port), other
/// schemes, credentials, scheme-relative and backslashed URLs, through
/// fragment markup and through redirect chains: never fetched.
#[tokio::test]
async fn foreign_hosts_in_every_spelling_are_never_fetched() {
    let foreign = Origin::with_routes(vec![("/steal", R::html("STOLEN"))]).await;
    let fp = foreign.addr.port();
    let spellings = foreign_spellings(fp);
    let markup: String = spellings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.replace('&', "&amp;").replace('"', "&quot;");
            format!("<fragment origin=\"o\" src=\"{s}\">M{i}-FB</fragment>\n")
        })
        .collect();
    let hops: String = (0..spellings.len())
        .map(|i| format!("<fragment origin=\"o\" src=\"/hop/{i}\">R{i}-FB</fragment>\n"))
        .collect();
    let locations = spellings.clone();
    let layout_html = format!("<html><body>\n{markup}{hops}</body></html>");
    let o = Origin::start(move |req| {
        if req.path == "/app/layout" {
            return R::html(layout_html.clone());
        }
        if let Some(i) = req.path.strip_prefix("/app/hop/") {
            let i: usize = i.parse().unwrap_or(0);
            // A chain: one hop inside the origin, then out.
            return R::status(302, "").with_header("location", &format!("/app/hop2/{i}"));
        }
        if let Some(i) = req.path.strip_prefix("/app/hop2/") {
            let i: usize = i.parse().unwrap_or(0);
            let loc = locations.get(i).cloned().unwrap_or_default();
            return R::status(302, "").with_header("location", &loc);
        }
        R::status(404, "")
    })
    .await;
    let routes = "[[routes]]\npath = \"/\"\norigin = \"o\"\nsrc = \"/layout\"\n";
    let edge = Edge::start(&config(&[("o", o.url("/app/"), "")], routes, ""), &[]).await;
    let r = edge.get("/").await;
    assert_eq!(r.status, 200);
    for (i, spelling) in spellings.iter().enumerate() {
        for kind in ["M", "R"] {
            assert!(
                r.body.contains(&format!("{kind}{i}-FB")),
                "{kind}{i} ({spelling}) did not fall back:\n{}",
                r.body
            );
        }
    }
    assert!(
        !r.body.contains("STOLEN") && !r.body.contains("DATA"),
        "{}",
        r.body
    );
    assert_nothing_left(&foreign, &o);
}

/// Path tricks that origins (Tomcat's `;` parameters, a second decoding)
/// would read as a climb: refused before anything is forwarded.
#[tokio::test]
async fn dot_segments_in_disguise_are_refused() {
    climbing_paths_get_400(&[
        "/acc/..;/..;/secret",
        "/acc/..;jsessionid=x/..;/secret",
        "/acc/%252e%252e/%252e%252e/secret",
        "/acc/.%252e/x",
        "/acc/a%252f..%252f..%252fsecret",
        "/acc/%2e%2e%5c%2e%2e%5csecret",
        "/acc/..\\..\\secret",
        "/_rain/r/o/..;/..;/secret",
        "/_rain/r/o/%252e%252e/%252e%252e/secret",
    ])
    .await;
}

/// An origin named `rebind.test` (in the test's own `/etc/hosts`, pointing
/// at 127.0.0.1) and, on the same port of 127.0.0.2, another service; the
/// edge runs in a mount namespace of its own whose `/etc/hosts` is the
/// returned file (rewritten by the test: same inode, so the bind mount sees
/// it). `server` lines go to `[server]`.
async fn rebinding_edge(server: &str) -> (Edge, PathBuf, TempDir, Origin, Origin) {
    let good = Origin::with_routes(vec![("/f", R::html("<b>ORIGIN</b>"))]).await;
    let port = good.addr.port();
    let internal = Origin::start_on(format!("127.0.0.2:{port}").parse().expect("addr"), |_| {
        R::html("<b>INTERNAL</b>")
    })
    .await;
    let hosts_dir = TempDir::new();
    let hosts = hosts_dir.write("hosts", "127.0.0.1 rebind.test\n");
    let hosts_arg = hosts.to_string_lossy().to_string();
    let wrapper = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        hosts_arg.as_str(),
    ];
    let cfg = config(
        &[("o", format!("http://rebind.test:{port}/"), "")],
        HOME,
        &format!("admin_listen = \"{{admin}}\"\n{server}\n"),
    );
    let edge = Edge::start_wrapped(
        &cfg,
        &[(
            "page.html",
            &layout(r#"<fragment origin="o" src="/f"></fragment>"#),
        )],
        &[],
        "warn",
        &wrapper,
    )
    .await;
    let r = edge.get("/").await;
    assert!(r.body.contains("<b>ORIGIN</b>"), "{}", r.body);
    (edge, hosts, hosts_dir, good, internal)
}

/// DNS rebinding: an origin's name is resolved when the config is loaded
/// and its address is pinned until the next resolution (here: none but a
/// reload, `resolve_interval = "0s"`; by default every 30 s). Nothing
/// resolves it between a check and a connect: the rebound name is not
/// followed by any page until the operator reloads.
#[tokio::test]
async fn an_origin_name_rebound_after_the_check_is_never_followed() {
    let (edge, hosts, _dir, _good, internal) = rebinding_edge("resolve_interval = \"0s\"").await;
    std::fs::write(&hosts, "127.0.0.2 rebind.test\n").expect("rewrite hosts");
    for _ in 0..20 {
        let r = edge.get("/").await;
        assert!(r.body.contains("<b>ORIGIN</b>"), "{}", r.body);
    }
    assert!(
        internal.requests().is_empty(),
        "a page reached the rebound address"
    );

    // The rebinding was visible to the process: a reload, the operator's
    // act, resolves the name again and follows it.
    let reload = post(edge.admin, "/reload", &[], b"").await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let r = edge.get("/").await;
    assert!(r.body.contains("<b>INTERNAL</b>"), "{}", r.body);
    assert_eq!(internal.requests().len(), 1);
}

/// Names are resolved again every `resolve_interval`, in the background: a
/// configured name that moves is followed without a reload (and pages in
/// between keep the old address, never a half-resolved state).
#[tokio::test]
async fn an_origin_name_is_resolved_again_every_resolve_interval() {
    let (edge, hosts, _dir, _good, internal) = rebinding_edge("resolve_interval = \"300ms\"").await;
    std::fs::write(&hosts, "127.0.0.2 rebind.test\n").expect("rewrite hosts");
    let start = std::time::Instant::now();
    loop {
        let r = edge.get("/").await;
        if r.body.contains("<b>INTERNAL</b>") {
            break;
        }
        assert!(r.body.contains("<b>ORIGIN</b>"), "{}", r.body);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the moved name was never followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From then on, every page goes to the new address.
    for _ in 0..5 {
        assert!(edge.get("/").await.body.contains("<b>INTERNAL</b>"));
    }
    let servers = admin_servers(&edge).await;
    assert!(servers.contains("127.0.0.2:"), "{servers}");
    assert!(!servers.contains("127.0.0.1:"), "{servers}");
    drop(internal);
}

/// A configured name that stops resolving keeps its last address: at the
/// background resolution, and when a reload rebuilds its origin.
#[tokio::test]
async fn a_name_that_stops_resolving_keeps_its_last_address_across_a_reload() {
    let (edge, hosts, _dir, _good, internal) = rebinding_edge("resolve_interval = \"200ms\"").await;
    std::fs::write(&hosts, "127.0.0.9 elsewhere.test\n").expect("rewrite hosts");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(edge.get("/").await.body.contains("<b>ORIGIN</b>"));
    // A reload that changes the origin (its timeout) rebuilds it.
    let text = std::fs::read_to_string(&edge.config).expect("config");
    let changed = text.replacen("[origins.o]\n", "[origins.o]\ntimeout = \"900ms\"\n", 1);
    assert_ne!(text, changed);
    std::fs::write(&edge.config, changed).expect("write config");
    let reload = post(edge.admin, "/reload", &[], b"").await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    for _ in 0..3 {
        let r = edge.get("/").await;
        assert!(r.body.contains("<b>ORIGIN</b>"), "{}", r.body);
    }
    assert!(internal.requests().is_empty());
}

/// The `servers` of origin `o` in the admin API, as text.
async fn admin_servers(edge: &Edge) -> String {
    let req = "GET /origins/o HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    let r = raw_request(edge.admin, req.as_bytes()).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v["servers"].to_string()
}

/// The foreign host got no request, and the origin (base `/app/`) saw only
/// paths below its base.
fn assert_nothing_left(foreign: &Origin, o: &Origin) {
    assert!(
        foreign.requests().is_empty(),
        "fetched: {:?}",
        foreign.requests()
    );
    for req in o.requests() {
        assert!(req.path.starts_with("/app/"), "the origin saw {}", req.path);
    }
}

/// Escapes what a request line cannot carry.
fn in_request_line(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\t', "%09")
        .replace('\\', "%5C")
        .replace(' ', "%20")
        .replace('<', "%3C")
        .replace('>', "%3E")
        .replace('"', "%22")
}

/// The SSRF matrix through the other doors: a local layout's fragments,
/// forms in a fragment (their rewritten actions, posted), `/_rain/r/` and
/// `/_rain/f/` paths built by hand, absolute-form request targets and a
/// foreign `Host`. Nothing reaches the foreign host, and the origin sees
/// only paths below its base.
#[tokio::test]
async fn foreign_hosts_through_the_other_doors_are_never_fetched() {
    let foreign = Origin::with_routes(vec![("/steal", R::html("STOLEN"))]).await;
    let fp = foreign.addr.port();
    let spellings = foreign_spellings(fp);
    // The spellings, and actions inside the origin that try to climb.
    let mut actions_in = spellings.clone();
    actions_in.extend(
        [
            "ok",
            "/ok",
            "../../steal",
            "/%2e%2e/steal",
            "..;/..;/steal",
            "/a/%252e%252e/steal",
        ]
        .map(String::from),
    );
    let forms: String = actions_in
        .iter()
        .map(|s| {
            let s = s.replace('&', "&amp;").replace('"', "&quot;");
            format!("<form method=\"post\" action=\"{s}\"><button>go</button></form>\n")
        })
        .collect();
    let o = Origin::start(move |req| match req.path.as_str() {
        "/app/forms" => R::html(forms.clone()),
        _ => R::html("<p>origin</p>"),
    })
    .await;
    let template: String = spellings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.replace('&', "&amp;").replace('"', "&quot;");
            format!(
                "<fragment origin=\"o\" src=\"{s}\">T{i}-FB</fragment>\n\
                 <fragment src=\"{s}\">U{i}-FB</fragment>\n"
            )
        })
        .collect();
    // A local layout: refused when the config is checked (and so at start
    // and at reload), each fragment named by its line.
    let dir = TempDir::new();
    dir.write("templates/page.html", &template);
    let cfg = config(&[("o", o.url("/app/"), "")], HOME, "").replace("{listen}", "127.0.0.1:1");
    let (ok, out) = run_check(&dir.write("rain-edge.toml", &cfg));
    assert!(!ok, "a layout fetching foreign hosts was accepted:\n{out}");
    for line in 1..=2 * spellings.len() {
        assert!(
            out.contains(&format!("page.html: line {line}:")),
            "line {line} not refused:\n{out}"
        );
    }

    let routes = format!("{HOME}[[routes]]\npath = \"/forms\"\nlayout = \"forms.html\"\n");
    let edge = Edge::start(
        &config(&[("o", o.url("/app/"), "")], &routes, ""),
        &[
            ("page.html", &layout("home")),
            (
                "forms.html",
                &layout(r#"<fragment id="f" origin="o" src="/forms"></fragment>"#),
            ),
        ],
    )
    .await;
    // Forms: every action rain-edge serves is posted to.
    let page = edge.get("/forms").await;
    assert_eq!(page.status, 200);
    let actions: Vec<String> = page
        .body
        .split("<form")
        .skip(1)
        .map(|f| attr_value(&format!("<form{f}"), "action", "<form"))
        .collect();
    assert_eq!(actions.len(), actions_in.len(), "{}", page.body);
    let mut posted = 0;
    for action in &actions {
        if action.starts_with("/_rain/") {
            post(edge.addr, &in_request_line(action), &[], b"x=1").await;
            posted += 1;
        }
    }
    // Resource and form paths built by hand, and absolute-form targets.
    for s in &spellings {
        let s = in_request_line(s);
        for path in [format!("/_rain/r/o/{s}"), format!("/_rain/r/o//{s}")] {
            let r = get(edge.addr, &path, &[]).await;
            assert!(r.status < 500, "{path}: {}", r.status);
        }
        let r = post(
            edge.addr,
            &format!("/_rain/f/o/{s}?rain.f=f&rain.page=/"),
            &[],
            b"x=1",
        )
        .await;
        assert!(r.status < 500 || r.status == 502, "{s}: {}", r.status);
        let req = format!("GET {s} HTTP/1.1\r\nHost: 127.0.0.1:{fp}\r\nConnection: close\r\n\r\n");
        let r = raw_request(edge.addr, req.as_bytes()).await;
        assert!(r.status < 500, "{s} as a target: {}", r.status);
    }
    let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{fp}\r\nConnection: close\r\n\r\n");
    let r = raw_request(edge.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200, "a foreign Host is only a name");
    assert_nothing_left(&foreign, &o);
    // The in-origin ones, at least, were rewritten to come back through
    // rain-edge (a foreign action is left for the browser, which posts
    // there itself).
    assert!(posted >= 2, "{posted} form actions went through rain-edge");
}
