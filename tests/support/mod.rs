//! Test harness: origins served in-process on ephemeral ports (the same tiny
//! server as the demo's), rain-edge started as the real binary with a config
//! written to a temporary folder, and a raw HTTP/1.1 client that records when
//! each byte arrived, so that streaming order and timing can be asserted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod faults;
pub mod tls;

use rain_edge::demo::origin::{self, Handler, OriginRequest, Reply, ReplyFuture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use rain_edge::demo::origin::Reply as R;

/// A test origin: routes by path, records every request it receives.
pub struct Origin {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<OriginRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts an origin whose `route` function answers each request.
    pub async fn start(route: impl Fn(&OriginRequest) -> Reply + Send + Sync + 'static) -> Origin {
        Origin::start_on("127.0.0.1:0".parse().expect("addr"), route).await
    }

    /// As [`Origin::start`], listening on `addr`.
    pub async fn start_on(
        addr: SocketAddr,
        route: impl Fn(&OriginRequest) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let log: Arc<Mutex<Vec<OriginRequest>>> = Arc::default();
        let log2 = log.clone();
        let route = Arc::new(route);
        let h: Handler = Arc::new(move |req: OriginRequest| -> ReplyFuture {
            let reply = route(&req);
            log2.lock().expect("log").push(req);
            Box::pin(async move { reply })
        });
        let (addr, task) = origin::spawn(addr, h).await.expect("bind origin");
        Origin { addr, log, task }
    }

    /// Starts an origin served by `handler` (a demo origin's, say); its
    /// requests are not logged.
    pub async fn with_handler(handler: Handler) -> Origin {
        let (addr, task) = origin::spawn("127.0.0.1:0".parse().expect("addr"), handler)
            .await
            .expect("bind origin");
        Origin {
            addr,
            log: Arc::default(),
            task,
        }
    }

    /// Starts an origin serving a fixed map of path -> reply (404 otherwise).
    pub async fn with_routes(routes: Vec<(&str, Reply)>) -> Origin {
        let map: HashMap<String, Reply> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        Origin::start(move |req| {
            map.get(&req.path)
                .cloned()
                .unwrap_or_else(|| Reply::status(404, "<p>no</p>"))
        })
        .await
    }

    pub fn url(&self, base: &str) -> String {
        format!("http://{}{}", self.addr, base)
    }

    pub fn requests(&self) -> Vec<OriginRequest> {
        self.log.lock().expect("log").clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<OriginRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// A raw TCP server on a loopback port: each accepted connection goes to
/// `serve` in a task of its own. It counts the connections it accepted and
/// stops when dropped.
pub struct RawServer {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    pub async fn start<F, Fut>(serve: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve(sock));
            }
        });
        RawServer {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "rain-test-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(p.join("templates")).expect("mkdir");
        TempDir(p)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rain-edge")
}

/// A running rain-edge, killed on drop.
pub struct Edge {
    pub addr: SocketAddr,
    /// The address `{admin}` in the config was replaced with.
    pub admin: SocketAddr,
    /// The address `{tls}` in the config was replaced with.
    pub tls: SocketAddr,
    pub child: Child,
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Edge {
    /// Writes `config` (with `{listen}` and `{admin}` replaced by free
    /// addresses) and the
    /// given templates, starts rain-edge and waits until it accepts.
    pub async fn start(config: &str, templates: &[(&str, &str)]) -> Edge {
        Edge::start_with(config, templates, &[], "warn").await
    }

    /// As [`Edge::start`], with more command-line arguments and `RUST_LOG`.
    pub async fn start_with(
        config: &str,
        templates: &[(&str, &str)],
        args: &[&str],
        rust_log: &str,
    ) -> Edge {
        Edge::start_wrapped(config, templates, args, rust_log, &[]).await
    }

    /// As [`Edge::start_with`], run by `wrapper` (a command that ends by
    /// executing its arguments, so that the pid stays rain-edge's).
    pub async fn start_wrapped(
        config: &str,
        templates: &[(&str, &str)],
        args: &[&str],
        rust_log: &str,
        wrapper: &[&str],
    ) -> Edge {
        let dir = TempDir::new();
        for (name, text) in templates {
            dir.write(&format!("templates/{name}"), text);
        }
        for attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let text = config
                .replace("{listen}", &addr.to_string())
                .replace("{admin}", &admin.to_string())
                .replace("{tls}", &tls.to_string());
            let path = dir.write("rain-edge.toml", &text);
            let mut command = match wrapper.split_first() {
                Some((program, rest)) => {
                    let mut c = Command::new(program);
                    c.args(rest).arg(bin());
                    c
                }
                None => Command::new(bin()),
            };
            let mut child = command
                .arg("--config")
                .arg(&path)
                .args(args)
                .env("RUST_LOG", rust_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rain-edge");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    if err.contains("Address already in use") && attempt < 4 {
                        break;
                    }
                    panic!("rain-edge exited ({status}) at start: {err}");
                }
                // The admin listener is a service of its own: it may start a
                // moment after the public one.
                let admin_up =
                    !config.contains("{admin}") || TcpStream::connect(admin).await.is_ok();
                if admin_up && TcpStream::connect(addr).await.is_ok() {
                    return Edge {
                        addr,
                        admin,
                        tls,
                        child,
                        dir,
                        config: path,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("rain-edge did not start listening");
    }

    /// rain-edge with one origin `o` and route `/` serving a layout whose
    /// body is `body`.
    pub async fn with_page(o: &Origin, body: &str) -> Edge {
        Edge::start(
            &config(&[("o", o.url("/"), "")], HOME, ""),
            &[("page.html", &layout(body))],
        )
        .await
    }

    /// As [`Edge::start`], with owned templates (as [`pages`] makes them).
    pub async fn start_pages(config: &str, templates: &[(String, String)]) -> Edge {
        let t: Vec<(&str, &str)> = templates
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Edge::start(config, &t).await
    }

    pub async fn get(&self, path: &str) -> Response {
        get(self.addr, path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(self.addr, path, headers).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops rain-edge with SIGTERM (it drains: every request's lines are
    /// written) and returns what it wrote to stderr.
    pub fn stop_and_logs(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

/// A response read whole, with arrival times.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body's bytes (de-chunked), for encoded bodies.
    pub bytes: Vec<u8>,
    /// (time since the request was sent, raw bytes received so far)
    pub arrivals: Vec<(Duration, usize)>,
    pub raw: Vec<u8>,
    pub total: Duration,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// When `marker` had fully arrived.
    pub fn time_of(&self, marker: &str) -> Duration {
        let pos = find(&self.raw, marker.as_bytes())
            .unwrap_or_else(|| panic!("`{marker}` not in response:\n{}", self.body));
        let end = pos + marker.len();
        self.arrivals
            .iter()
            .find(|(_, n)| *n >= end)
            .map(|(t, _)| *t)
            .unwrap_or(self.total)
    }

    /// Byte position of `marker` in the body.
    pub fn pos(&self, marker: &str) -> usize {
        self.body
            .find(marker)
            .unwrap_or_else(|| panic!("`{marker}` not in body:\n{}", self.body))
    }
}

/// The contents of every `<li>` of a page, in order.
pub fn list_items(body: &str) -> Vec<&str> {
    body.split("<li>")
        .skip(1)
        .map(|s| s.split("</li>").next().unwrap_or_default())
        .collect()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends a GET over a new connection and reads the whole answer.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// Sends raw bytes and reads until the server closes (or 10 s).
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Response {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect rain-edge");
    s.write_all(bytes).await.expect("send");
    let mut raw = Vec::new();
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                raw.extend_from_slice(&buf[..n]);
                arrivals.push((start.elapsed(), raw.len()));
                if response_complete(&raw) {
                    break;
                }
            }
        }
    }
    let total = start.elapsed();
    parse_response(raw, arrivals, total)
}

fn response_complete(raw: &[u8]) -> bool {
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let body = &raw[head_end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return cl
            .trim()
            .parse::<usize>()
            .map(|n| body.len() >= n)
            .unwrap_or(false);
    }
    false
}

fn parse_response(raw: Vec<u8>, arrivals: Vec<(Duration, usize)>, total: Duration) -> Response {
    let head_end = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let body_raw = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body_raw)
    } else {
        body_raw.to_vec()
    };
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body.clone(),
        arrivals,
        raw,
        total,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end])
            .trim()
            .to_string();
        let size = usize::from_str_radix(&size_text, 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// A call to an instance's admin API (`admin_listen`), with a JSON body.
pub async fn admin_request(edge: &Edge, method: &str, path: &str, body: Option<&str>) -> Response {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(edge.admin, req.as_bytes()).await
}

/// An answer's body as JSON.
pub fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// Waits up to `limit` for `f` to hold, polling.
pub async fn within<F, Fut>(limit: Duration, what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config with one listener and the given origins (name, url, extra lines).
pub fn config(origins: &[(&str, String, &str)], routes: &str, extra: &str) -> String {
    let mut c = String::from("[server]\nlisten = [\"{listen}\"]\nnode_id = \"test-node\"\n");
    c.push_str(extra);
    c.push('\n');
    for (name, url, lines) in origins {
        c.push_str(&format!("[origins.{name}]\nurl = \"{url}\"\n{lines}\n"));
    }
    c.push_str(routes);
    c
}

/// One route `/` with layout `page.html`.
pub const HOME: &str = "[[routes]]\npath = \"/\"\nlayout = \"page.html\"\n";

/// A layout with a head, and `body` inside the body.
pub fn layout(body: &str) -> String {
    format!("<!DOCTYPE html><html><head><title>T</title></head><body>{body}</body></html>")
}

pub fn run_check(config_path: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(config_path)
        .arg("--check")
        .output()
        .expect("run --check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a session-keeping test origin knows.
#[derive(Default)]
pub struct AppSessions {
    /// Sessions it created (Set-Cookie sent).
    pub issued: std::sync::atomic::AtomicUsize,
    /// Visits per session id.
    pub counts: Mutex<HashMap<String, u32>>,
}

/// An origin that keeps sessions in cookie `cookie` like a servlet container:
/// a request without a known session gets a new one (`Set-Cookie`), every
/// request counts; the body says `{label} session=ID count=N`.
pub async fn session_origin(
    label: &'static str,
    cookie: &'static str,
    delay: Duration,
) -> (Origin, Arc<AppSessions>) {
    let state = Arc::new(AppSessions::default());
    let st = state.clone();
    let o = Origin::start(move |req| {
        let sent = req.header("cookie").and_then(|c| {
            c.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(n, _)| *n == cookie)
                .map(|(_, v)| v.to_string())
        });
        let mut counts = st.counts.lock().expect("counts");
        let (id, fresh) = match sent.filter(|id| counts.contains_key(id)) {
            Some(id) => (id, false),
            None => {
                st.issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (format!("{:016x}", rand::random::<u64>()), true)
            }
        };
        let n = counts.entry(id.clone()).or_insert(0);
        *n += 1;
        let mut reply = R::html(format!("<p>{label} session={id} count={n}</p>")).after(delay);
        if fresh {
            reply = reply.with_header("set-cookie", &format!("{cookie}={id}; Path=/; HttpOnly"));
        }
        reply
    })
    .await;
    (o, state)
}

/// The value of `name=` in the text (up to a space or `<`).
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("{name}="))? + name.len() + 1;
    let rest = &text[start..];
    Some(&rest[..rest.find([' ', '<']).unwrap_or(rest.len())])
}

/// The browser's side of a session: the `rain_sid` it got, sent back.
pub fn sid_of(r: &Response) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .find_map(|(_, v)| {
            v.strip_prefix("rain_sid=")
                .map(|v| v.split(';').next().unwrap_or_default().to_string())
        })
}

/// A redis-server on an ephemeral loopback port, stopped on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Redis {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "redis-server is not installed: apt-get install redis-server (scripts/setup does)",
            );
        let mut child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Redis { port, child };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real remote applications (fixtures/remote-apps), started per test.
pub mod apps {
    use super::{free_port, TempDir};
    use rain_edge::demo::apps::{start_php, start_tomcat, RemoteApp};
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/remote-apps")
    }

    /// PHP's built-in server with the PHP app; its sessions in a fresh folder.
    pub async fn php() -> (RemoteApp, TempDir) {
        let work = TempDir::new();
        let path = work.0.clone();
        let app = tokio::task::spawn_blocking(move || start_php(&dir(), free_port(), &path))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("the PHP app did not start: {e}"));
        (app, work)
    }

    /// Embedded Tomcat 10 with /jsp, /wicket and /spring.
    pub async fn tomcat() -> (RemoteApp, TempDir) {
        let work = TempDir::new();
        let path = work.0.clone();
        let build = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("remote-apps");
        let app =
            tokio::task::spawn_blocking(move || start_tomcat(&dir(), free_port(), &build, &path))
                .await
                .expect("join")
                .unwrap_or_else(|e| panic!("the Tomcat app did not start: {e}"));
        (app, work)
    }
}

/// Routes `/NAME` with a layout each: (name, layout body).
pub fn pages(list: &[(&str, String)]) -> (String, Vec<(String, String)>) {
    let mut routes = String::new();
    let mut templates = Vec::new();
    for (name, body) in list {
        let path = if name.is_empty() {
            "/".to_string()
        } else {
            format!("/{name}")
        };
        let file = if name.is_empty() {
            "index.html".to_string()
        } else {
            format!("{name}.html")
        };
        routes.push_str(&format!(
            "[[routes]]\npath = \"{path}\"\nlayout = \"{file}\"\n"
        ));
        templates.push((file, layout(body)));
    }
    (routes, templates)
}

/// A browser with its rain-edge cookie.
pub struct Browser<'e> {
    pub edge: &'e Edge,
    pub sid: Option<String>,
}

impl<'e> Browser<'e> {
    pub fn new(edge: &'e Edge) -> Self {
        Browser { edge, sid: None }
    }

    pub async fn get(&mut self, path: &str) -> Response {
        let cookie = self.sid.as_ref().map(|s| format!("rain_sid={s}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let r = self.edge.get_with(path, &headers).await;
        if let Some(s) = sid_of(&r) {
            self.sid = Some(s);
        }
        r
    }
}

/// Sends a POST with a body over a new connection.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(addr, &bytes).await
}

/// The `attr="..."` value of the first element after `after` that has it,
/// `&amp;` decoded.
pub fn attr_value(html: &str, attr: &str, after: &str) -> String {
    let start = html
        .find(after)
        .unwrap_or_else(|| panic!("`{after}` not in {html}"));
    let rest = &html[start..];
    let key = format!("{attr}=\"");
    let a = rest
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} after `{after}` in {rest}"))
        + key.len();
    let v = &rest[a..];
    v[..v.find('"').unwrap_or(v.len())].replace("&amp;", "&")
}

/// A golden case runner: (name stem, input, chunk sizes) -> rendered output.
pub type GoldenRun<'a> = &'a dyn Fn(&str, &[u8], &mut dyn FnMut() -> usize) -> String;

/// Runs golden files: every `dir/NAME.src.html` through `run` (which feeds
/// its input in chunks of the sizes it is given) must give `NAME{out_suffix}`
/// whole, at chunk sizes 1..=8 and at many random chunkings. `replay_var`
/// names the env var that replays one chunk size; `bless_var` writes missing
/// expectations.
pub fn golden(
    dir: &Path,
    out_suffix: &str,
    replay_var: &str,
    bless_var: &str,
    run: GoldenRun<'_>,
) -> usize {
    let replay: Option<usize> = std::env::var(replay_var).ok().and_then(|v| v.parse().ok());
    let bless = std::env::var(bless_var).is_ok();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("golden dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut cases = 0;
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(stem) = name.strip_suffix(".src.html") else {
            continue;
        };
        cases += 1;
        let src = std::fs::read(&path).expect("read");
        let expected_path = dir.join(format!("{stem}{out_suffix}"));
        let whole = run(stem, &src, &mut || usize::MAX);
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(e) => e,
            Err(_) if bless => {
                std::fs::write(&expected_path, &whole).expect("bless");
                whole.clone()
            }
            Err(_) => panic!(
                "{} is missing ({bless_var}=1 writes it)",
                expected_path.display()
            ),
        };
        assert_eq!(whole, expected, "{name}, whole input");
        if let Some(n) = replay {
            assert_eq!(
                run(stem, &src, &mut || n),
                expected,
                "{name}, chunk size {n}"
            );
            continue;
        }
        for n in 1..=8 {
            assert_eq!(
                run(stem, &src, &mut || n),
                expected,
                "{name}, chunk size {n} (replay: {replay_var}={n})"
            );
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ src.len() as u64;
        for round in 0..40 {
            let mut rng = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 97) as usize + 1
            };
            assert_eq!(
                run(stem, &src, &mut rng),
                expected,
                "{name}, random chunks round {round}"
            );
        }
    }
    cases
}

/// Feeds `src` to `splitter` in chunks of the sizes `chunk` gives, taking
/// items as they are ready, and returns them all, static runs merged.
pub fn feed(
    mut splitter: rain_edge::aggregate::Splitter,
    src: &[u8],
    chunk: &mut dyn FnMut() -> usize,
) -> Vec<rain_edge::aggregate::Item> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let n = chunk().clamp(1, src.len() - i);
        splitter.write(&src[i..i + n]).expect("write");
        items.extend(splitter.take_ready());
        i += n;
    }
    items.extend(splitter.end().expect("end"));
    rain_edge::aggregate::merge_statics(items)
}

/// A `kB` line of `/proc/{pid}/status` (`VmRSS`, `VmHWM`: peak RSS), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A seeded xorshift generator for property tests (a failing seed replays).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Debian's nginx in the foreground, one worker, its pid file, logs and
/// temporary folders in `dir`; `http` is the inside of its `http {}` block.
/// Started when every port in `ports` accepts; stopped on drop.
pub struct Nginx {
    child: Child,
    pub dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    pub async fn start(dir: TempDir, http: &str, ports: &[u16]) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: apt-get install nginx-light (scripts/setup does)");
        let root = dir.0.display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
             error_log {root}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
             fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
             {http}\n}}\n"
        );
        let path = dir.write("nginx.conf", &conf);
        let mut child = Command::new(bin)
            .args(["-p", &root, "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        for _ in 0..300 {
            let mut up = true;
            for p in ports {
                up &= TcpStream::connect(("127.0.0.1", *p)).await.is_ok();
            }
            if up {
                return Nginx { child, dir };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
        panic!("nginx did not start: {log}");
    }
}
