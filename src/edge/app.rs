//! The state every request shares: the configuration in force and its
//! templates ([`Snapshot`], swapped whole on reload), the origin client,
//! the session store, the counters and the caches.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio_rustls::rustls;

use crate::aggregate::{check_templates, Templates};
use crate::config::{self, Config, ConfigError, ConfigErrors, Origin};
use crate::session::SessionStore;
use crate::telemetry::Metrics;
use crate::upstream::{Coalescer, OriginClient, Purge, StaleCache};

/// A configuration and its templates, swapped whole on reload.
pub struct Snapshot {
    /// The validated configuration.
    pub cfg: Arc<Config>,
    /// Its templates folder, in memory.
    pub templates: Arc<Templates>,
    /// The TLS listeners' certificate and key of this config.
    pub tls: Option<Arc<rustls::sign::CertifiedKey>>,
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
    /// The last pages served, with their fragments' timings (`/pages`).
    pub pages: crate::telemetry::PageRecords,
    /// The instances sharing the store and their registry of origins.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// The cache of public fragments (`[cache] max_size` at start; off at 0).
    pub cache: Option<Arc<crate::upstream::FragmentCache>>,
    /// Origins registered through the admin API since the last reload.
    api_origins: Mutex<BTreeMap<String, Arc<Origin>>>,
}

impl App {
    /// The state of a process serving `snap`, loaded from `config_path`.
    pub fn new(
        config_path: PathBuf,
        snap: Snapshot,
        client: Arc<OriginClient>,
        store: Arc<dyn SessionStore>,
    ) -> App {
        let s = &snap.cfg;
        let redis = (s.session.store == "redis").then_some(s.session.redis_url.as_str());
        let admin = s.server.admin_listen.map(|a| a.to_string());
        let cluster = Arc::new(crate::cluster::Cluster::new(
            redis,
            &s.server.node_id,
            admin,
        ));
        let cache = (s.cache_max_size > 0)
            .then(|| Arc::new(crate::upstream::FragmentCache::new(s.cache_max_size)));
        App {
            cache,
            cluster,
            config_path,
            stale: Arc::new(StaleCache::new(snap.cfg.fragments.stale_if_error)),
            snapshot: RwLock::new(Arc::new(snap)),
            client,
            store,
            metrics: Arc::new(Metrics::default()),
            coalescer: Arc::default(),
            pages: Default::default(),
            api_origins: Mutex::new(BTreeMap::new()),
        }
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file; on any error the old one stays in force.
    /// Origins registered through the admin API are kept (over the file's
    /// of the same name) until they are deleted.
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
        let api = lock(&self.api_origins);
        let mut snap = snap;
        if !api.is_empty() {
            let mut cfg = (*snap.cfg).clone();
            for (name, o) in api.iter() {
                cfg.origins.insert(name.clone(), o.clone());
            }
            snap.cfg = Arc::new(cfg);
        }
        self.swap(snap);
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether origin `name` was registered through the admin API.
    pub fn origin_from_api(&self, name: &str) -> bool {
        lock(&self.api_origins).contains_key(name)
    }

    /// Registers or replaces an origin until the next reload; pages that
    /// start from now on use it.
    pub fn put_origin(&self, origin: Origin) {
        let mut api = lock(&self.api_origins);
        let old = self.snapshot();
        let mut cfg = (*old.cfg).clone();
        let origin = Arc::new(origin);
        api.insert(origin.name.clone(), origin.clone());
        cfg.origins.insert(origin.name.clone(), origin);
        self.swap(Snapshot {
            cfg: Arc::new(cfg),
            templates: old.templates.clone(),
            tls: old.tls.clone(),
        });
    }

    /// Unregisters an origin (one of the config file comes back at the
    /// next reload); false if there was none.
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

    /// Applies the shared registry's table of origin `name` (JSON, as the
    /// admin API took it): registered or replaced, or, without one, an
    /// origin the API registered here is unregistered.
    pub fn apply_registered(&self, name: &str, table: Option<&str>) {
        match table {
            Some(json) => {
                let table: toml::Table = match serde_json::from_str(json) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(origin = %name, error = %e, "shared registry entry is not an origin table");
                        return;
                    }
                };
                let cfg = self.snapshot().cfg.clone();
                match config::parse_origin(&cfg, name, &table) {
                    Ok(o) => {
                        let same = self.origin_from_api(name)
                            && cfg.origins.get(name).is_some_and(|old| **old == o);
                        if !same {
                            tracing::info!(origin = %name, "origin registered from the shared registry");
                            self.put_origin(o);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(origin = %name, error = %e, "shared registry entry refused")
                    }
                }
            }
            None => {
                if self.origin_from_api(name) && self.delete_origin(name) {
                    tracing::info!(origin = %name, "origin unregistered from the shared registry");
                }
            }
        }
    }

    /// Joins the instances sharing the store: takes the shared registry's
    /// origins now, follows its changes, and writes this instance into the
    /// store every few seconds. Without a store, does nothing.
    pub fn spawn_cluster(self: &Arc<Self>) {
        if !self.cluster.shared() {
            return;
        }
        let app = Arc::clone(self);
        tokio::spawn(async move {
            if let Ok(all) = app.cluster.origins().await {
                for (name, table) in all {
                    app.apply_registered(&name, Some(&table));
                }
            }
            let Some(mut changes) = app.cluster.changes().await else {
                return;
            };
            while let Some(name) = changes.recv().await {
                match app.cluster.origin(&name).await {
                    Ok(table) => app.apply_registered(&name, table.as_deref()),
                    Err(()) => tracing::warn!(origin = %name, "shared registry unreachable"),
                }
            }
        });
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let Some(mut purges) = app.cluster.listen(crate::cluster::PURGES).await else {
                return;
            };
            while let Some(body) = purges.recv().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                    continue;
                };
                if let Some(cache) = &app.cache {
                    let dropped = cache.purge(&Purge::from_json(&v)).await;
                    tracing::info!(dropped, "cache purge announced by an instance");
                }
            }
        });
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = (std::time::Instant::now(), 0u64);
            loop {
                let pages = app.pages.1.load(Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64().max(0.001);
                let rate = pages.saturating_sub(last.1) as f64 / dt;
                last = (std::time::Instant::now(), pages);
                app.cluster.heartbeat((rate * 10.0).round() / 10.0).await;
                tokio::time::sleep(crate::cluster::HEARTBEAT).await;
            }
        });
    }

    fn swap(&self, snap: Snapshot) {
        self.client.configure(&snap.cfg);
        match self.snapshot.write() {
            Ok(mut s) => *s = Arc::new(snap),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(snap),
        }
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
fn tls_acceptor(cfg: &Config) -> Result<Option<Arc<rustls::sign::CertifiedKey>>, ConfigErrors> {
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

/// The TLS listeners' certificate: the one of the configuration in force.
pub struct CurrentCert(pub Arc<App>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.snapshot().tls.clone()
    }
}
