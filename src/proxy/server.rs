//! Listening and connection handling: our own accept loops on a tokio
//! runtime, our own HTTP/1.1 connections ([`BrowserConn`]), keep-alive with
//! an idle limit, a whole-head deadline, SIGHUP reloads, and a SIGTERM
//! drain (no new connections, idle ones closed, in-flight ones finished,
//! then exit 0).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::client::OriginClient;
use super::conn::{BrowserConn, HeadLimits, ReadError};
use super::forward::Coalescer;
use super::metrics::{InFlight, Metrics, PageLog, RequestKind, PAGE_LOG};
use super::page;
use super::stale::StaleCache;
use crate::aggregate::{check_templates, Templates};
use crate::config::{self, Config, ConfigError, ConfigErrors, Origin};
use crate::session::{open_store, SessionStore};

/// How long a SIGTERM waits for in-flight requests before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration and its templates, swapped whole on reload.
pub struct Snapshot {
    /// The validated configuration.
    pub cfg: Arc<Config>,
    /// Its templates folder, in memory.
    pub templates: Arc<Templates>,
    /// The TLS listeners' acceptor (certificate and key of this config).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Everything a connection needs.
pub struct App {
    config_path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Pooled client to the origins (kept across reloads).
    pub client: Arc<OriginClient>,
    /// Where sessions live (kept across reloads: changing `[session]` store
    /// settings needs a restart).
    pub store: Arc<dyn SessionStore>,
    /// What this process counts (admin API, `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Last good answers of public fragments (`stale_if_error`).
    pub stale: Arc<StaleCache>,
    /// Identical public fragment fetches in flight, shared.
    pub coalescer: Arc<Coalescer>,
    /// Origins registered through the admin API since the last reload.
    api_origins: Mutex<BTreeSet<String>>,
}

impl App {
    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file; on any error the old one stays in force.
    /// Origins registered through the admin API are dropped.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let snap = match load_snapshot(&self.config_path) {
            Ok(s) => s,
            Err(e) => {
                self.metrics
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let old = self.snapshot();
        let (a, b) = (&old.cfg.session, &snap.cfg.session);
        if a.store != b.store || a.redis_url != b.redis_url || a.idle_timeout != b.idle_timeout {
            tracing::warn!(
                "[session] store settings changed: they take effect at the next restart"
            );
        }
        let (a, b) = (&old.cfg.server, &snap.cfg.server);
        if a.listen != b.listen || a.tls_listen != b.tls_listen || a.admin_listen != b.admin_listen
        {
            tracing::warn!(
                "server.listen, tls_listen or admin_listen changed: listeners change at the next restart"
            );
        }
        let mut api = lock(&self.api_origins);
        api.clear();
        self.swap(snap);
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether origin `name` was registered through the admin API.
    pub fn origin_from_api(&self, name: &str) -> bool {
        lock(&self.api_origins).contains(name)
    }

    /// Registers or replaces an origin until the next reload; pages that
    /// start from now on use it.
    pub fn put_origin(&self, origin: Origin) {
        let mut api = lock(&self.api_origins);
        let old = self.snapshot();
        let mut cfg = (*old.cfg).clone();
        api.insert(origin.name.clone());
        cfg.origins.insert(origin.name.clone(), Arc::new(origin));
        self.swap(Snapshot {
            cfg: Arc::new(cfg),
            templates: old.templates.clone(),
            tls: old.tls.clone(),
        });
    }

    /// Unregisters an origin until the next reload; false if there was none.
    pub fn delete_origin(&self, name: &str) -> bool {
        let mut api = lock(&self.api_origins);
        let old = self.snapshot();
        if !old.cfg.origins.contains_key(name) {
            return false;
        }
        let mut cfg = (*old.cfg).clone();
        cfg.origins.remove(name);
        api.remove(name);
        self.swap(Snapshot {
            cfg: Arc::new(cfg),
            templates: old.templates.clone(),
            tls: old.tls.clone(),
        });
        true
    }

    fn swap(&self, snap: Snapshot) {
        self.client.configure(&snap.cfg);
        match self.snapshot.write() {
            Ok(mut s) => *s = Arc::new(snap),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(snap),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Loads and checks a config and its templates: every error at once.
pub fn load_snapshot(path: &std::path::Path) -> Result<Snapshot, ConfigErrors> {
    let cfg = config::load(path)?;
    let templates = Templates::load(&cfg).map_err(|e| ConfigErrors(vec![e]))?;
    let errors: Vec<ConfigError> = check_templates(&cfg, &templates);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let tls = tls_acceptor(&cfg)?;
    Ok(Snapshot {
        cfg: Arc::new(cfg),
        templates: Arc::new(templates),
        tls,
    })
}

/// The TLS acceptor of `cfg`'s TLS listeners (HTTP/2 and HTTP/1.1 by ALPN),
/// or `None` without any.
fn tls_acceptor(cfg: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ConfigErrors> {
    use tokio_rustls::rustls;
    let (Some(cert), Some(key)) = (&cfg.server.tls_cert, &cfg.server.tls_key) else {
        return Ok(None);
    };
    if cfg.server.tls_listen.is_empty() {
        return Ok(None);
    }
    let err = |key: &str, message: String| {
        ConfigErrors(vec![ConfigError {
            file: cfg.file.clone(),
            place: format!("server.{key}"),
            message,
        }])
    };
    let (chain, private) = config::read_tls_files(cert, key).map_err(|(k, m)| err(k, m))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| err("tls_key", format!("does not fit tls_cert: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Why rain-edge could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}. Consider another address in server.listen or server.admin_listen")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The session store could not be set up.
    #[error("session store: {0}")]
    Store(#[from] crate::session::StoreError),
}

/// Counts live connections so that a drain can wait for them.
#[derive(Default)]
struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tracker {
    fn enter(self: &Arc<Self>) -> TrackGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Runs rain-edge with the config at `path` until SIGTERM or SIGINT.
pub fn run(path: PathBuf) -> Result<(), RunError> {
    let snap = load_snapshot(&path)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("rain-edge")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    // Every line logged carries the node id; a request's lines also carry
    // its request id (the `request` span below).
    let node = tracing::info_span!("rain_edge", node = %snap.cfg.server.node_id);
    rt.block_on(serve(path, snap).instrument(node))
}

async fn serve(path: PathBuf, snap: Snapshot) -> Result<(), RunError> {
    // The admin listener first: once the public ones accept, it does too.
    let admin = match snap.cfg.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Listen { addr, source })?,
        ),
        None => None,
    };
    let mut listeners = Vec::new();
    let plain = snap.cfg.server.listen.iter().map(|a| (a, false));
    let tls = snap.cfg.server.tls_listen.iter().map(|a| (a, true));
    for (addr, secure) in plain.chain(tls) {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Listen {
                addr: *addr,
                source,
            })?;
        listeners.push((l, secure));
    }
    let client = Arc::new(OriginClient::new(&snap.cfg));
    client.spawn_sweeper(Duration::from_secs(10));
    let store = open_store(&snap.cfg.session)?;
    tracing::info!(store = %snap.cfg.session.store, "session store ready");
    let stale = Arc::new(StaleCache::new(snap.cfg.fragments.stale_if_error));
    let app = Arc::new(App {
        config_path: path,
        snapshot: RwLock::new(Arc::new(snap)),
        client,
        store,
        metrics: Arc::new(Metrics::default()),
        stale,
        coalescer: Arc::default(),
        api_origins: Mutex::new(BTreeSet::new()),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tracker = Arc::new(Tracker::default());
    for (l, secure) in listeners {
        if let Ok(addr) = l.local_addr() {
            if secure {
                tracing::info!(%addr, "rain-edge listening (TLS: HTTP/2 and HTTP/1.1)");
            } else {
                tracing::info!(%addr, "rain-edge listening");
            }
        }
        tokio::spawn(
            accept_loop(l, secure, app.clone(), shutdown_rx.clone(), tracker.clone())
                .instrument(tracing::Span::current()),
        );
    }
    if let Some(l) = admin {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "admin API listening");
        }
        tokio::spawn(
            super::admin::serve(l, app.clone(), shutdown_rx.clone())
                .instrument(tracing::Span::current()),
        );
    }
    wait_for_termination(&app).await;
    tracing::info!(
        live = tracker.live.load(Ordering::Acquire),
        "shutting down: draining in-flight requests"
    );
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; exiting with requests in flight");
    }
    tracing::info!("rain-edge stopped");
    Ok(())
}

/// Returns on SIGTERM or SIGINT; reloads on SIGHUP.
async fn wait_for_termination(app: &Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop rain-edge with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match app.reload() {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!("reload rejected, old configuration kept: {e}");
                    }
                }
            },
        }
    }
}

/// Accepts connections until shutdown and hands each to `serve` (with
/// `TCP_NODELAY` set); a failed accept (out of descriptors and the like)
/// backs off briefly.
pub(super) async fn accept_each(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    serve(tcp, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    secure: bool,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
    tracker: Arc<Tracker>,
) {
    let conn_shutdown = shutdown.clone();
    accept_each(listener, shutdown, move |tcp, addr| {
        let guard = tracker.enter();
        let app = app.clone();
        let shutdown = conn_shutdown.clone();
        tokio::spawn(
            async move {
                if secure {
                    // Boxed: the handshake's and HTTP/2's state would
                    // otherwise size every plain connection's task.
                    Box::pin(handle_tls(app, tcp, addr, shutdown)).await;
                } else {
                    handle_connection(app, BrowserConn::new(tcp, false), addr, shutdown).await;
                }
                drop(guard);
            }
            .instrument(tracing::Span::current()),
        );
    })
    .await;
}

/// A TLS connection: the handshake within `header_timeout`, then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
async fn handle_tls(
    app: Arc<App>,
    tcp: TcpStream,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let snap = app.snapshot();
    let Some(acceptor) = snap.tls.clone() else {
        return;
    };
    let wait = snap.cfg.server.header_timeout;
    drop(snap);
    let tls = match tokio::time::timeout(wait, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %addr, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(app, tls, addr, shutdown).await;
    } else {
        handle_connection(app, BrowserConn::new(tls, true), addr, shutdown).await;
    }
}

/// Most streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;

/// An HTTP/2 connection: each stream is a request, served in its own task;
/// on shutdown, a GOAWAY lets the open streams finish.
async fn serve_h2(
    app: Arc<App>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let (max_fields, max_bytes) = {
        let snap = app.snapshot();
        (
            snap.cfg.server.max_headers,
            snap.cfg.server.max_header_bytes,
        )
    };
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_bytes).unwrap_or(u32::MAX))
        .handshake::<_, Bytes>(tls);
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(c)) => c,
        _ => return,
    };
    let mut closing = false;
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            _ = shutdown.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        match next {
            Some(Ok((req, respond))) => {
                let app = app.clone();
                let too_many = req.headers().len() > max_fields;
                tokio::spawn(
                    async move {
                        let mut stream = BrowserConn::h2(req, respond);
                        if too_many {
                            stream.reject_h2(431).await;
                            return;
                        }
                        stream.set_compression(app.snapshot().cfg.server.compression);
                        serve_request(&app, &mut stream, addr).await;
                        let _ = stream.finish_body().await;
                    }
                    .instrument(tracing::Span::current()),
                );
            }
            Some(Err(e)) => {
                tracing::debug!(client = %addr, error = %e, "HTTP/2 connection ended");
                return;
            }
            None => return,
        }
    }
}

/// Serves one request with its span, metrics and access line. Returns
/// whether the connection may be kept.
async fn serve_request(app: &Arc<App>, conn: &mut BrowserConn, addr: SocketAddr) -> bool {
    let started = Instant::now();
    let kind = conn
        .request()
        .map_or(RequestKind::Page, |r| RequestKind::of(r.uri.path()));
    // The request id is recorded once known (a trusted proxy's, or new).
    let span = tracing::info_span!("request", id = tracing::field::Empty);
    let log = Arc::new(PageLog::new());
    let kept = {
        let _in_flight = InFlight::enter(&app.metrics.requests_in_flight);
        PAGE_LOG
            .scope(
                log.clone(),
                page::serve(app, conn, addr).instrument(span.clone()),
            )
            .await
    };
    let elapsed = started.elapsed();
    if conn.status() != 0 {
        app.metrics.response(kind, conn.status(), elapsed);
    }
    access_line(&span, conn, addr, kind, elapsed, &log);
    kept
}

async fn handle_connection(
    app: Arc<App>,
    mut conn: BrowserConn,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let mut first = true;
    loop {
        let snap = app.snapshot();
        let server = &snap.cfg.server;
        // NOTE: the first request's head must arrive whole within
        // header_timeout of the accept; later ones may be idle_timeout in
        // coming, then have header_timeout from their first byte.
        let (first_byte_by, head_by) = if first {
            let by = accepted + server.header_timeout;
            (by, Some(by))
        } else {
            (Instant::now() + server.idle_timeout, None)
        };
        let compression = server.compression;
        let limits = HeadLimits {
            max_bytes: usize::try_from(server.max_header_bytes).unwrap_or(usize::MAX),
            max_fields: server.max_headers,
        };
        let read = tokio::select! {
            r = conn.read_request(first_byte_by, head_by, server.header_timeout, limits) => r,
            _ = shutdown.wait_for(|s| *s), if !first => return,
        };
        drop(snap);
        match read {
            Ok(true) => {}
            Ok(false) => return,
            Err(ReadError::Timeout { started }) => {
                if first || started {
                    page::reject_unread(
                        conn,
                        408,
                        "Request Timeout",
                        "The request head did not arrive in time.",
                    )
                    .await;
                }
                return;
            }
            Err(ReadError::TooLarge) => {
                page::reject_unread(
                    conn,
                    431,
                    "Request Header Fields Too Large",
                    "The request head is larger than this site accepts.",
                )
                .await;
                return;
            }
            Err(ReadError::Bad(problem)) => {
                tracing::debug!(client = %addr, %problem, "bad request");
                page::reject_unread(conn, 400, "Bad Request", "The request could not be parsed.")
                    .await;
                return;
            }
            Err(e @ (ReadError::Truncated | ReadError::Io(_))) => {
                tracing::debug!(client = %addr, error = %e, "connection ended");
                return;
            }
        }
        first = false;
        conn.set_compression(compression);
        if *shutdown.borrow() {
            conn.close_after();
        }
        let kept = serve_request(&app, &mut conn, addr).await;
        if !kept {
            return;
        }
        if *shutdown.borrow() {
            conn.close_after();
        }
        if !conn.finish().await || *shutdown.borrow() {
            return;
        }
    }
}

/// The access log line of one request (target `rain_edge::access`: pages at
/// `info`, with their fragments' outcomes; resources and forms at `debug`).
fn access_line(
    span: &tracing::Span,
    conn: &BrowserConn,
    client: SocketAddr,
    kind: RequestKind,
    elapsed: Duration,
    log: &PageLog,
) {
    let _in_request = span.enter();
    let Some(req) = conn.request() else {
        return;
    };
    let ms = elapsed.as_secs_f64() * 1000.0;
    let status = conn.status();
    if kind == RequestKind::Page {
        tracing::info!(target: "rain_edge::access", %client, method = %req.method, path = %req.uri.path(),
            status, ms, fragments = %log.summary(), "page");
    } else {
        tracing::debug!(target: "rain_edge::access", %client, method = %req.method, path = %req.uri.path(),
            status, ms, kind = ?kind, "request");
    }
}
