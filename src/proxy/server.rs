//! The process and its state: the configuration in force ([`App`]), and
//! [`run`], which hands the listeners to pingora's `Server` (see
//! `front.rs` for what each connection gets).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::client::OriginClient;
use super::forward::Coalescer;
use super::metrics::Metrics;
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
    /// The TLS listeners' certificate and key of this config.
    pub tls: Option<Arc<tokio_rustls::rustls::sign::CertifiedKey>>,
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

/// The certificate and key of `cfg`'s TLS listeners, or `None` without any.
fn tls_acceptor(
    cfg: &Config,
) -> Result<Option<Arc<tokio_rustls::rustls::sign::CertifiedKey>>, ConfigErrors> {
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
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, private, &provider)
        .map_err(|e| err("tls_key", format!("does not fit tls_cert: {e}")))?;
    Ok(Some(Arc::new(certified)))
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

/// Counts the requests being served so that a drain can wait for them.
#[derive(Default)]
pub(super) struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

/// One request being served (see [`Tracker`]).
pub(super) struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tracker {
    pub(super) fn enter(self: &Arc<Self>) -> TrackGuard {
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

/// What `run` does besides serving.
#[derive(Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running instance
    /// (`--upgrade`, through `server.upgrade_socket`).
    pub upgrade: bool,
    /// Called once the drain is over, just before the process exits.
    pub before_exit: Option<Box<dyn FnOnce() + Send>>,
}

/// Runs rain-edge with the config at `path` on pingora's `Server` until
/// SIGTERM, SIGINT or SIGQUIT (graceful upgrade). Exits the process once
/// the requests in flight are done.
pub fn run(path: PathBuf, options: RunOptions) -> Result<(), RunError> {
    let snap = load_snapshot(&path)?;
    let cfg = snap.cfg.clone();
    // Every line logged carries the node id (the services' runtimes enter
    // this span again in `Front`).
    let node = tracing::info_span!("rain_edge", node = %cfg.server.node_id);
    let _in_node = node.enter();
    if !options.upgrade {
        // pingora exits without naming the address when a bind fails: try
        // each first, for a message that does.
        let all = cfg.server.listen.iter().chain(&cfg.server.tls_listen);
        for addr in all.chain(cfg.server.admin_listen.as_ref()) {
            std::net::TcpListener::bind(addr).map_err(|source| RunError::Listen {
                addr: *addr,
                source,
            })?;
        }
    }
    // The process's own tasks (the origin pool's sweeper, the session
    // store's connections) run on a small runtime of their own; requests
    // run on the services' runtimes.
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rain-edge-bg")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let app = background.block_on(async {
        let client = Arc::new(OriginClient::new(&cfg));
        client.spawn_sweeper(Duration::from_secs(10));
        let store = open_store(&cfg.session)?;
        tracing::info!(store = %cfg.session.store, "session store ready");
        Ok::<_, RunError>(Arc::new(App {
            config_path: path,
            stale: Arc::new(StaleCache::new(cfg.fragments.stale_if_error)),
            snapshot: RwLock::new(Arc::new(snap)),
            client,
            store,
            metrics: Arc::new(Metrics::default()),
            coalescer: Arc::default(),
            api_origins: Mutex::new(BTreeSet::new()),
        }))
    })?;
    let tracker = Arc::new(Tracker::default());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let conf = pingora::server::configuration::ServerConf {
        threads,
        upgrade_sock: cfg.server.upgrade_socket.to_string_lossy().into_owned(),
        // The drain below exits as soon as the requests in flight are done;
        // these only bound it.
        grace_period_seconds: Some(DRAIN_TIMEOUT.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: options.upgrade,
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let public = super::front::Front::public(app.clone(), tracker.clone());
    let mut service = pingora::services::listening::Service::new("rain-edge".into(), public);
    for addr in &cfg.server.listen {
        service.add_listener(super::front::plain_listener(*addr));
        tracing::info!(%addr, "rain-edge listening");
    }
    if !cfg.server.tls_listen.is_empty() {
        for addr in &cfg.server.tls_listen {
            let listener = super::front::tls_listener(*addr, app.clone())
                .map_err(|e| RunError::Runtime(std::io::Error::other(e.to_string())))?;
            service.add_listener(listener);
            tracing::info!(%addr, "rain-edge listening (TLS: HTTP/2 and HTTP/1.1)");
        }
    }
    service
        .endpoints()
        .set_pre_tls_callback(Arc::new(super::front::HelloDeadline(app.clone())));
    service.threads = Some(threads);
    server.add_service(service);
    if let Some(addr) = cfg.server.admin_listen {
        let admin = super::front::Front::admin(app.clone(), tracker.clone());
        let mut service = pingora::services::listening::Service::new("admin".into(), admin);
        service.add_listener(super::front::plain_listener(addr));
        service.threads = Some(1);
        server.add_service(service);
        tracing::info!(%addr, "admin API listening");
    }
    let drain = Drain {
        tracker,
        before_exit: Mutex::new(options.before_exit),
    };
    server.add_service(pingora::services::background::background_service(
        "drain", drain,
    ));
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(Signals { app }),
    });
    drop(background);
    tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; exited with requests in flight");
    Ok(())
}

/// Waits for pingora's shutdown (after SIGTERM, or after the listeners
/// went to a new process on SIGQUIT), then for the requests in flight,
/// and exits the process as soon as they are done.
struct Drain {
    tracker: Arc<Tracker>,
    before_exit: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Drain {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if shutdown.wait_for(|s| *s).await.is_err() {
            return;
        }
        tracing::info!(
            live = self.tracker.live.load(Ordering::Acquire),
            "shutting down: draining in-flight requests"
        );
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain timed out after {DRAIN_TIMEOUT:?}; exiting with requests in flight"
            );
        }
        if let Some(f) = lock(&self.before_exit).take() {
            f();
        }
        tracing::info!("rain-edge stopped");
        std::process::exit(0);
    }
}

/// pingora's signal watch, with SIGHUP (reload) and SIGINT (a drain like
/// SIGTERM's) added.
struct Signals {
    app: Arc<App>,
}

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for Signals {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        use pingora::server::ShutdownSignal;
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stop rain-edge with SIGKILL");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::GracefulTerminate,
                _ = quit.recv() => {
                    tracing::info!("SIGQUIT: handing the listeners over to the new process");
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = hup.recv() => match self.app.reload() {
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
}
