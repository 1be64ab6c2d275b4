//! The process: [`run`] loads the configuration, builds the shared state,
//! and hands the listeners to pingora's `Server` (the public listeners to
//! the edge's router, `admin_listen` to the admin API, each behind
//! `http::Front`); signals reload (SIGHUP), drain (SIGTERM, SIGINT) or hand
//! the listeners to a new binary (SIGQUIT, after `--upgrade`).

use crate::sync::lock;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admin::Admin;
use crate::config::ConfigErrors;
use crate::edge::{load_snapshot, App, CurrentCert, Router};
use crate::http::{plain_listener, tls_listener, Front, HelloDeadline, Tracker};
use crate::session::open_store;
use crate::upstream::OriginClient;

/// How long a drain waits for in-flight requests before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A TLS listener could not be set up.
    #[error("TLS listener on {addr}: {reason}")]
    Tls {
        /// The address.
        addr: std::net::SocketAddr,
        /// What pingora said.
        reason: String,
    },
    /// The session store could not be set up.
    #[error("session store: {0}")]
    Store(#[from] crate::session::StoreError),
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
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
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
        let app = Arc::new(App::new(path, snap, client, store));
        app.spawn_cluster();
        Ok::<_, RunError>(app)
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
    let idle = cfg.server.idle_timeout;
    // The admin service first: pingora starts services in order (each binds
    // its listeners as it starts).
    if let Some(addr) = cfg.server.admin_listen {
        let admin = Front::new(Admin::new(app.clone()), tracker.clone(), node.clone(), idle);
        let mut service = pingora::services::listening::Service::new("admin".into(), admin);
        service.add_listener(plain_listener(addr));
        service.threads = Some(1);
        server.add_service(service);
        tracing::info!(%addr, "admin API listening");
    }
    let public = Front::new(
        Router::new(app.clone()),
        tracker.clone(),
        node.clone(),
        idle,
    );
    let mut service = pingora::services::listening::Service::new("rain-edge".into(), public);
    for addr in &cfg.server.listen {
        service.add_listener(plain_listener(*addr));
        tracing::info!(%addr, "rain-edge listening");
    }
    for addr in &cfg.server.tls_listen {
        let listener =
            tls_listener(*addr, Arc::new(CurrentCert(app.clone()))).map_err(|e| RunError::Tls {
                addr: *addr,
                reason: e.to_string(),
            })?;
        service.add_listener(listener);
        tracing::info!(%addr, "rain-edge listening (TLS: HTTP/2 and HTTP/1.1)");
    }
    let hello_app = app.clone();
    let hello = HelloDeadline(Arc::new(move || {
        hello_app.snapshot().cfg.server.header_timeout
    }));
    service.endpoints().set_pre_tls_callback(Arc::new(hello));
    service.threads = Some(threads);
    server.add_service(service);
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
            live = self.tracker.live(),
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
