//! The bundled demo: a few small origins (a shop, a news desk, a profile
//! service, a live one with a button and a WebSocket, and a deliberately
//! slow one) served in-process next to rain-edge,
//! so that `rain-edge demo` shows composition, parallel fetches, async
//! fragments and fallbacks with one command. [`origin`] is also the test
//! origin server.

pub mod apps;
pub mod origin;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use origin::{handler, Handler, OriginRequest, Reply};

fn shop(req: OriginRequest) -> Reply {
    match req.path.as_str() {
        "/shop/cart/mini" => Reply::html(
            "<div class=\"cart\"><strong>Cart</strong>: 2 items, 38.90 EUR <a href=\"/shop/cart\">view</a></div>",
        )
        .after(Duration::from_millis(40)),
        "/shop/recommendations" => Reply::html(
            "<ul class=\"recs\"><li>Rain boots</li><li>Umbrella (large)</li><li>Waxed jacket</li></ul>",
        )
        .after(Duration::from_millis(400)),
        _ => Reply::status(404, "<p>not found</p>"),
    }
}

fn news(req: OriginRequest) -> Reply {
    match req.path.as_str() {
        "/news/headlines" => Reply::html(
            "<!DOCTYPE html><html><head><title>News</title><style>.headlines li{margin:.2em 0}</style></head>\
             <body><ul class=\"headlines\"><li>Light rain expected all week</li>\
             <li>City opens three new bike lanes</li><li>Local bakery wins award</li></ul></body></html>",
        )
        // The same for everyone: rain-edge's fragment cache keeps it for
        // 30 s, then serves it at once for 60 s more while it is refreshed.
        .with_header(
            "cache-control",
            "public, max-age=30, stale-while-revalidate=60",
        )
        .with_header("surrogate-key", "news")
        .after(Duration::from_millis(80)),
        "/news/ticker" => Reply::html("<p class=\"ticker\">Markets calm. <fragment origin=\"shop\" src=\"/cart/mini\"></fragment></p>"),
        _ => Reply::status(404, "<p>not found</p>"),
    }
}

fn profile(req: OriginRequest) -> Reply {
    let lang = req
        .header("accept-language")
        .unwrap_or("en")
        .split(',')
        .next()
        .unwrap_or("en")
        .to_string();
    let hello = if lang.starts_with("de") {
        "Hallo"
    } else if lang.starts_with("fr") {
        "Bonjour"
    } else {
        "Hello"
    };
    match req.path.as_str() {
        "/profile/greeting" => Reply::html(format!(
            "<p class=\"greeting\">{hello}, guest! (language: {lang})</p>"
        )),
        _ => Reply::status(404, "<p>not found</p>"),
    }
}

/// Clicks per `live_sid` session of the live origin.
fn clicks() -> &'static std::sync::Mutex<std::collections::HashMap<String, u32>> {
    static CLICKS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, u32>>> =
        std::sync::OnceLock::new();
    CLICKS.get_or_init(Default::default)
}

/// A live fragment: a button whose `fetch` to the origin (through the
/// `X-Rain-Base` rain-edge sent) counts clicks in the origin's own session,
/// and a WebSocket that ticks every second and echoes what it is sent.
fn live(req: OriginRequest) -> Reply {
    match req.path.as_str() {
        "/live/widget" => {
            // Only what rain-edge sends as its own prefix is written into the
            // page (a path under /_rain/o/).
            let base = req
                .header("x-rain-base")
                .filter(|b| {
                    b.starts_with("/_rain/o/")
                        && b.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"/_-.".contains(&c))
                })
                .unwrap_or("/live/")
                .to_string();
            Reply::html(format!(
                "<div class=\"live\" data-base=\"{base}\">\
                 <p>Clicks, counted in the live origin's own session: <b id=\"live-clicks\">0</b> \
                 <button id=\"live-click\" type=\"button\">Click</button></p>\
                 <p>Over a WebSocket: <b id=\"live-ticks\">connecting</b> \
                 <span id=\"live-echo\"></span></p>\
                 <script>(function () {{\
                 var root = document.currentScript.parentElement, base = root.dataset.base;\
                 var show = function (j) {{ document.getElementById('live-clicks').textContent = j.clicks; }};\
                 fetch(base + 'clicks').then(function (r) {{ return r.json(); }}).then(show);\
                 document.getElementById('live-click').addEventListener('click', function () {{\
                 fetch(base + 'clicks', {{ method: 'POST' }}).then(function (r) {{ return r.json(); }}).then(show); }});\
                 var ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + 'ws');\
                 ws.onopen = function () {{ ws.send('hello from the page'); }};\
                 ws.onmessage = function (e) {{ var d = String(e.data);\
                 if (d.indexOf('tick ') === 0) {{ document.getElementById('live-ticks').textContent = d; }}\
                 else {{ document.getElementById('live-echo').textContent = 'echo: ' + d; }} }};\
                 }})();</script></div>"
            ))
        }
        "/live/clicks" => {
            let sent = req.header("cookie").and_then(|c| {
                c.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(n, _)| *n == "live_sid")
                    .map(|(_, v)| v.to_string())
            });
            let mut all = crate::sync::lock(clicks());
            let (sid, fresh) = match sent.filter(|s| all.contains_key(s)) {
                Some(s) => (s, false),
                None => (format!("{:016x}", rand::random::<u64>()), true),
            };
            let n = all.entry(sid.clone()).or_insert(0);
            if req.method == "POST" {
                *n += 1;
            }
            let mut reply = Reply::status(200, format!("{{\"clicks\":{n}}}"));
            reply.headers = vec![("content-type".into(), "application/json".into())];
            if fresh {
                reply = reply.with_header(
                    "set-cookie",
                    &format!("live_sid={sid}; Path=/live/; HttpOnly"),
                );
            }
            reply
        }
        "/live/ws" => Reply::websocket(Duration::from_secs(1)),
        _ => Reply::status(404, "<p>not found</p>"),
    }
}

fn slow(_req: OriginRequest) -> Reply {
    Reply::html("<p>This took far too long.</p>").after(Duration::from_secs(5))
}

/// The demo handler for an origin name, if the demo has one.
pub fn app(name: &str) -> Option<Handler> {
    Some(match name {
        "shop" => handler(shop),
        "news" => handler(news),
        "profile" => handler(profile),
        "slow" => handler(slow),
        "live" => handler(live),
        _ => return None,
    })
}

/// What the demo started; dropping it stops the remote applications.
pub struct DemoOrigins {
    /// Addresses of the in-process demo origins.
    pub addrs: Vec<SocketAddr>,
    /// The real remote applications (PHP, Tomcat), stopped on drop.
    pub apps: Vec<apps::RemoteApp>,
}

/// Starts what the config at `path` names: the in-process demo origins (by
/// origin name: shop, news, profile, slow) on a background thread, and the
/// real remote applications of `fixtures/remote-apps` (origins php, and jsp,
/// wicket, spring on one Tomcat), each on the port of its origin's URL.
pub fn start_origins(path: &Path) -> Result<DemoOrigins, String> {
    let cfg = crate::config::load(path).map_err(|e| e.to_string())?;
    let mut wanted = Vec::new();
    let mut tomcat_port = None;
    let mut php_port = None;
    for (name, o) in &cfg.origins {
        match name.as_str() {
            "php" => php_port = Some(o.port),
            "jsp" | "wicket" | "spring" => tomcat_port = Some(o.port),
            _ => {}
        }
        let Some(h) = app(name) else { continue };
        let addr: SocketAddr = format!("{}:{}", o.host, o.port).parse().map_err(|_| {
            format!(
                "demo origin `{name}` must use an IP address, not `{}`",
                o.host
            )
        })?;
        wanted.push((addr, h));
    }
    let mut started = Vec::new();
    if php_port.is_some() || tomcat_port.is_some() {
        let fixtures = path
            .parent()
            .map(|d| d.join("../fixtures/remote-apps"))
            .filter(|d| d.is_dir())
            .or_else(|| {
                Some(Path::new("fixtures/remote-apps").to_path_buf()).filter(|d| d.is_dir())
            })
            .ok_or("fixtures/remote-apps not found next to the config's folder")?;
        let work = std::env::temp_dir().join(format!("rain-edge-demo-{}", std::process::id()));
        if let Some(port) = php_port {
            started.push(apps::start_php(&fixtures, port, &work)?);
        }
        if let Some(port) = tomcat_port {
            let build = std::env::temp_dir().join("rain-edge-demo-build");
            started.push(apps::start_tomcat(&fixtures, port, &build, &work)?);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for (addr, h) in wanted {
        let l = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| format!("cannot start the demo origin on {addr}: {e}"))?;
        bound.push(addr);
        listeners.push((l, h));
    }
    std::thread::Builder::new()
        .name("demo-origins".into())
        .spawn(move || {
            rt.block_on(async move {
                for (l, h) in listeners {
                    tokio::spawn(origin::serve(l, h));
                }
                std::future::pending::<()>().await;
            })
        })
        .map_err(|e| e.to_string())?;
    Ok(DemoOrigins {
        addrs: bound,
        apps: started,
    })
}
