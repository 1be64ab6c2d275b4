//! An origin's servers (docs/configuration.md, several servers): the
//! addresses its configured names resolve to, chosen per request by
//! pingora-load-balancing (Ketama consistent hashing on the user's session,
//! or round robin), each with its own circuit breaker, idle connections and
//! counters; probed by pingora's HTTP health check when the origin has a
//! `health_check`; names resolved again every `resolve_interval` (only the
//! configured names, never one from a request).

use crate::sync::lock;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::protocols::{Stream, UniqueID};
use pingora::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthObserve, HttpHealthCheck};
use pingora_load_balancing::selection::{consistent::KetamaHashing, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::breaker::{Admit, Breaker};
use super::h2::{H2Conns, Spoken};
use crate::aggregate::FetchFailure;
use crate::config::{Balance, Http2, Origin};

/// How long an idle pooled connection to a server is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Ring points looked at when choosing a server: Ketama places 160 per
/// server, so this reaches past a few servers that are out.
const MAX_ITERATIONS: usize = 1024;

/// One server of an origin: where it is, its idle connections, its circuit
/// breaker and its counters.
pub struct Server {
    /// The address connected to.
    pub addr: SocketAddr,
    /// What pingora's connector connects to (TLS name and options are the
    /// origin's).
    pub peer: HttpPeer,
    /// The same, offering only HTTP/1.1 by ALPN (protocol upgrades).
    pub peer_h1: HttpPeer,
    idle: Mutex<VecDeque<(Stream, Instant)>>,
    max_idle: usize,
    /// Its circuit breaker (`breaker_failures`, `breaker_cooldown`).
    pub breaker: Breaker,
    /// Exchanges with it right now.
    pub in_flight: AtomicU64,
    /// Exchanges it was chosen for.
    pub requests: AtomicU64,
    /// Exchanges that timed out, could not connect, broke or answered 5xx.
    pub failures: AtomicU64,
    /// Its HTTP/2 connections.
    pub h2: H2Conns,
    /// What it agreed on by ALPN (`http2 = "auto"`).
    pub spoken: Spoken,
}

impl Server {
    fn new(addr: SocketAddr, origin: &Origin) -> Server {
        let peer = origin_peer(addr, origin);
        let mut peer_h1 = peer.clone();
        peer_h1.options.alpn = pingora::protocols::ALPN::H1;
        Server {
            addr,
            peer,
            peer_h1,
            idle: Mutex::default(),
            max_idle: origin.max_connections,
            breaker: Breaker::default(),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            h2: H2Conns::default(),
            spoken: Spoken::default(),
        }
    }

    /// The most recently used idle connection that is still open.
    pub fn take_idle(&self) -> Option<Stream> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((_, since)) = idle.front() {
            if since.elapsed() < POOL_IDLE {
                break;
            }
            idle.pop_front();
        }
        while let Some((io, _)) = idle.pop_back() {
            if still_open(&io) {
                return Some(io);
            }
        }
        None
    }

    /// Closes the idle connections that expired or that the server closed
    /// (HTTP/2 ones too).
    pub fn sweep(&self) {
        self.h2.sweep();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|(io, since)| since.elapsed() < POOL_IDLE && still_open(io));
    }

    /// Keeps a connection whose exchange ended cleanly for the next one.
    pub fn put_idle(&self, io: Stream) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push_back((io, Instant::now()));
            }
        }
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// Whether an idle connection may carry another request. An idle connection
/// has nothing to say: anything to read (its end, or bytes) means the origin
/// closed it or broke the protocol. One non-blocking peek at the socket.
fn still_open(io: &Stream) -> bool {
    let fd = UniqueID::id(io.as_ref());
    let mut byte = 0u8;
    // SAFETY: `fd` is the open socket `io` owns for as long as this call;
    // the peek reads at most one byte into `byte` and consumes nothing.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// What pingora's connector connects to for origin `o` at `addr`: TCP, or
/// TLS with the origin's host as its name (SNI and the certificate check),
/// the origin's CAs or the system's, and its client certificate.
pub fn origin_peer(addr: SocketAddr, o: &Origin) -> HttpPeer {
    use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
    let mut peer = HttpPeer::new(addr, o.tls.is_some(), o.host.clone());
    peer.options.connection_timeout = Some(o.timeout);
    peer.options.total_connection_timeout = Some(o.timeout);
    // Over TLS, what ALPN offers; over http, only `always` (prior
    // knowledge) matters.
    peer.options.alpn = match (o.http2, o.tls.is_some()) {
        (Http2::Auto, true) => pingora::protocols::ALPN::H2H1,
        (Http2::Always, _) => pingora::protocols::ALPN::H2,
        _ => pingora::protocols::ALPN::H1,
    };
    if let Some(tls) = &o.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        if !tls.ca.is_empty() {
            // The certificates parsed when the config was loaded.
            let ca: Vec<WrappedX509> = tls
                .ca
                .iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            peer.options.ca = Some(Arc::from(ca));
        }
        if let Some((chain, key)) = &tls.client {
            peer.client_cert_key = Some(Arc::new(CertKey::new(chain.clone(), key.clone())));
        }
    }
    peer
}

/// A server entry as configured: a name or address, and a port.
type HostPort = (String, u16);

/// The configured names of an origin's servers and what they resolved to:
/// pingora's service discovery for its load balancer. Only these names are
/// ever resolved; a name that fails to resolve keeps its last address.
struct Names {
    origin: Arc<Origin>,
    /// The addresses each `(host, port)` entry last resolved to.
    known: Mutex<Vec<(HostPort, Option<SocketAddr>)>>,
    /// Every server made so far, by address: a server whose address did not
    /// change keeps its connections, breaker and counters.
    servers: Mutex<HashMap<SocketAddr, Arc<Server>>>,
    /// The names were just resolved (at load): the next discovery uses
    /// that, without I/O.
    fresh: std::sync::atomic::AtomicBool,
}

impl Names {
    /// The backends for the addresses known now, each carrying its
    /// [`Server`].
    fn backends(&self) -> BTreeSet<Backend> {
        let known = lock(&self.known);
        let mut servers = lock(&self.servers);
        let mut out = BTreeSet::new();
        let mut live = HashMap::new();
        for addr in known.iter().filter_map(|(_, a)| *a) {
            let server = servers
                .get(&addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(Server::new(addr, &self.origin)));
            let mut b = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                weight: 1,
                ext: http::Extensions::new(),
            };
            b.ext.insert(server.clone());
            live.insert(addr, server);
            out.insert(b);
        }
        *servers = live;
        out
    }

    /// Resolves every entry now (blocking: used at load). An entry that
    /// does not resolve keeps the address it had before (if any).
    fn resolve_blocking(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut known = lock(&self.known);
        for ((host, port), addr) in known.iter_mut() {
            match (host.as_str(), *port).to_socket_addrs() {
                Ok(found) => match choose(*addr, found) {
                    Some(a) => *addr = Some(a),
                    None => problems.push(format!("`{host}` resolves to no address")),
                },
                Err(e) => problems.push(format!("cannot resolve `{host}`: {e}")),
            }
        }
        problems
    }
}

/// The address an entry uses among those its name resolved to: the one it
/// had while it is still among them (resolvers rotate their answers: a
/// server is not replaced, nor its users moved, for that), else the first.
fn choose(
    current: Option<SocketAddr>,
    found: impl Iterator<Item = SocketAddr>,
) -> Option<SocketAddr> {
    let mut first = None;
    for a in found {
        if Some(a) == current {
            return current;
        }
        first = first.or(Some(a));
    }
    first
}

#[async_trait]
impl ServiceDiscovery for Names {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        if self.fresh.swap(false, Ordering::AcqRel) {
            return Ok((self.backends(), HashMap::new()));
        }
        let entries: Vec<(String, u16)> =
            lock(&self.known).iter().map(|(e, _)| e.clone()).collect();
        for (host, port) in entries {
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await
            {
                Ok(a) => a.collect(),
                Err(_) => Vec::new(),
            };
            if !found.is_empty() {
                {
                    let mut known = lock(&self.known);
                    for (e, a) in known.iter_mut() {
                        if e.0 != host || e.1 != port {
                            continue;
                        }
                        let addr = choose(*a, found.iter().copied());
                        if addr.is_some() && *a != addr {
                            tracing::info!(origin = %self.origin.name, %host, addr = ?addr, "server name resolved to a new address");
                            *a = addr;
                        }
                    }
                }
            } else {
                tracing::warn!(origin = %self.origin.name, %host, "server name did not resolve; its last address is kept");
            }
        }
        Ok((self.backends(), HashMap::new()))
    }
}

/// The selection algorithm, as configured.
enum Selector {
    Session(LoadBalancer<KetamaHashing>),
    RoundRobin(LoadBalancer<RoundRobin>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Selector::Session(lb) => lb.backends(),
            Selector::RoundRobin(lb) => lb.backends(),
        }
    }

    async fn update(&self) -> pingora::Result<()> {
        match self {
            Selector::Session(lb) => lb.update().await,
            Selector::RoundRobin(lb) => lb.update().await,
        }
    }

    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Selector::Session(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
        }
    }
}

/// An origin's servers and how one is chosen.
pub struct Servers {
    origin: Arc<Origin>,
    names: Arc<Names>,
    selector: Selector,
    /// Why some names did not resolve at load, if any did not.
    unresolved: Vec<String>,
    /// Keys for requests that carry no session.
    spread: AtomicUsize,
    /// Held while the load balancer's membership is updated: pingora's
    /// updates of one view must not overlap.
    updating: tokio::sync::Mutex<()>,
}

/// How a server looks from the admin API.
pub struct ServerView {
    /// Its address.
    pub addr: SocketAddr,
    /// In the rotation: its health check passes (or there is none) and its
    /// circuit is closed.
    pub up: bool,
    /// Whether its circuit breaker is open.
    pub circuit_open: bool,
    /// The protocol spoken to it: `h2`, `http/1.1`, or `unknown` (https
    /// with `http2 = "auto"` before its first connection).
    pub protocol: &'static str,
    /// The server itself (counters).
    pub server: Arc<Server>,
}

impl Servers {
    /// The servers of `origin`, its names resolved now; `old` are the
    /// servers of its previous configuration (kept where their address and
    /// connection settings did not change).
    pub fn new(origin: Arc<Origin>, old: Option<&Servers>) -> Servers {
        let carried = old
            .filter(|o| same_connections(&o.origin, &origin))
            .map(|o| lock(&o.names.servers).clone())
            .unwrap_or_default();
        // What each entry resolved to before: kept if it does not resolve now.
        let before: Vec<(HostPort, Option<SocketAddr>)> = old
            .map(|o| lock(&o.names.known).clone())
            .unwrap_or_default();
        let known = origin
            .servers
            .iter()
            .map(|e| {
                let was = before.iter().find(|(b, _)| b == e).and_then(|(_, a)| *a);
                (e.clone(), was)
            })
            .collect();
        let names = Arc::new(Names {
            origin: origin.clone(),
            known: Mutex::new(known),
            servers: Mutex::new(carried),
            fresh: std::sync::atomic::AtomicBool::new(true),
        });
        let unresolved = names.resolve_blocking();
        for e in &unresolved {
            tracing::warn!(origin = %origin.name, error = %e, "server address not resolved");
        }
        let discovery = Box::new(Shared(names.clone()));
        let mut selector = match origin.balance {
            Balance::Session => {
                Selector::Session(LoadBalancer::from_backends(Backends::new(discovery)))
            }
            Balance::RoundRobin => {
                Selector::RoundRobin(LoadBalancer::from_backends(Backends::new(discovery)))
            }
        };
        if let Some(path) = &origin.health_check {
            let check = health_check(&origin, path);
            match &mut selector {
                Selector::Session(lb) => lb.set_health_check(check),
                Selector::RoundRobin(lb) => lb.set_health_check(check),
            }
        }
        // The first discovery returns what was resolved above, without
        // I/O: the update completes at once.
        use futures_util::FutureExt;
        match selector.update().now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!(origin = %origin.name, error = %e, "servers not set"),
            None => tracing::warn!(origin = %origin.name, "servers not set at load"),
        }
        Servers {
            origin,
            names,
            selector,
            unresolved,
            spread: AtomicUsize::new(0),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    /// How many servers there are now.
    pub fn len(&self) -> usize {
        self.selector.backends().get_backend().len()
    }

    /// Every server and its state.
    pub fn view(&self) -> Vec<ServerView> {
        let backends = self.selector.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let server = b.ext.get::<Arc<Server>>()?.clone();
                let circuit_open = server.breaker.is_open();
                let protocol = match (self.origin.http2, self.origin.tls.is_some()) {
                    (Http2::Always, _) => "h2",
                    (Http2::Never, _) | (Http2::Auto, false) => "http/1.1",
                    (Http2::Auto, true) => server.spoken.as_str(),
                };
                Some(ServerView {
                    addr: server.addr,
                    up: backends.ready(b) && !circuit_open,
                    circuit_open,
                    protocol,
                    server,
                })
            })
            .collect()
    }

    /// Every server (for the pool's sweep).
    pub fn all(&self) -> Vec<Arc<Server>> {
        lock(&self.names.servers).values().cloned().collect()
    }

    /// Chooses a server for a request: the user's (`affinity`, with
    /// `balance = "session"`) or the next one, among those that are up and
    /// whose circuit lets the request go, other than `skip`. Its admission
    /// comes with it (a probe when its circuit is open and cooled down).
    pub fn pick(
        &self,
        affinity: Option<&str>,
        skip: Option<SocketAddr>,
    ) -> Result<(Arc<Server>, Admit), FetchFailure> {
        // One server (most origins): no selection to make.
        let backends = self.selector.backends();
        let set = backends.get_backend();
        if set.len() == 1 {
            let chosen = set.first().and_then(|b| {
                let server = b.ext.get::<Arc<Server>>()?;
                if !backends.ready(b) || Some(server.addr) == skip {
                    return None;
                }
                let admit = server.breaker.admit();
                (admit != Admit::No).then(|| (server.clone(), admit))
            });
            return match chosen {
                Some((server, admit)) => {
                    server.requests.fetch_add(1, Ordering::Relaxed);
                    Ok((server, admit))
                }
                None => Err(FetchFailure::Unavailable(self.why_none(skip))),
            };
        }
        let spread;
        let key = match affinity {
            Some(a) => a.as_bytes(),
            None => {
                spread = self.spread.fetch_add(1, Ordering::Relaxed).to_le_bytes();
                &spread[..]
            }
        };
        let admitted = std::cell::Cell::new(Admit::No);
        let chosen = self.selector.select_with(key, |b, ready| {
            let Some(server) = b.ext.get::<Arc<Server>>() else {
                return false;
            };
            if !ready || Some(server.addr) == skip {
                return false;
            }
            let admit = server.breaker.admit();
            admitted.set(admit);
            admit != Admit::No
        });
        match chosen.and_then(|b| b.ext.get::<Arc<Server>>().cloned()) {
            Some(server) => {
                server.requests.fetch_add(1, Ordering::Relaxed);
                Ok((server, admitted.get()))
            }
            None => Err(FetchFailure::Unavailable(self.why_none(skip))),
        }
    }

    /// Why no server could be chosen.
    fn why_none(&self, skip: Option<SocketAddr>) -> String {
        let view = self.view();
        if view.is_empty() {
            return match self.unresolved.first() {
                Some(e) => e.clone(),
                None => format!("origin `{}` has no server address", self.origin.name),
            };
        }
        if skip.is_some() && view.len() == 1 {
            return "its only server could not be reached".into();
        }
        if view.len() == 1 && view[0].circuit_open {
            return "the origin's circuit is open (too many failures in a row)".into();
        }
        if view.iter().all(|v| v.circuit_open) {
            return "every server's circuit is open (too many failures in a row)".into();
        }
        "none of the origin's servers is up (health checks or open circuits)".into()
    }

    /// Resolves the configured names again now (blocking, like at load);
    /// a server whose address changed is replaced, the others keep their
    /// health, breakers and connections.
    pub fn resolve_now(&self) {
        if !self.has_names() {
            return;
        }
        for e in self.names.resolve_blocking() {
            tracing::warn!(origin = %self.origin.name, error = %e, "server address not resolved; its last address is kept");
        }
        // A background resolution under way applies what it finds itself.
        let Ok(_one) = self.updating.try_lock() else {
            return;
        };
        self.names.fresh.store(true, Ordering::Release);
        use futures_util::FutureExt;
        if let Some(Err(e)) = self.selector.update().now_or_never() {
            tracing::warn!(origin = %self.origin.name, error = %e, "servers not updated");
        }
    }

    /// Probes every server once (the origin's `health_check`).
    pub async fn check_health(&self) {
        self.selector.backends().run_health_check(true).await;
    }

    /// Resolves the configured names again; servers whose address changed
    /// are replaced.
    pub async fn resolve_again(&self) {
        let _one = self.updating.lock().await;
        if let Err(e) = self.selector.update().await {
            tracing::warn!(origin = %self.origin.name, error = %e, "servers not updated");
        }
    }

    /// Whether this origin has a `health_check`.
    pub fn has_health_check(&self) -> bool {
        self.origin.health_check.is_some()
    }

    /// Whether any of its servers is known by name (not a literal address).
    pub fn has_names(&self) -> bool {
        self.origin
            .servers
            .iter()
            .any(|(h, _)| h.parse::<std::net::IpAddr>().is_err())
    }

    /// The origin these servers serve.
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }
}

/// A shared [`Names`] as pingora's discovery.
struct Shared(Arc<Names>);

#[async_trait]
impl ServiceDiscovery for Shared {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        self.0.discover().await
    }
}

/// Whether connections made for `a` may serve `b` (same name, TLS and
/// timeouts): then servers at the same address are kept across a reload.
fn same_connections(a: &Origin, b: &Origin) -> bool {
    a.host == b.host
        && a.tls == b.tls
        && a.http2 == b.http2
        && a.timeout == b.timeout
        && a.max_connections == b.max_connections
}

/// pingora's HTTP health check for `origin`: `GET path` with the origin's
/// `Host`, over its TLS settings; any answer below 500 within the origin's
/// timeout passes. Changes are logged.
fn health_check(
    origin: &Origin,
    path: &str,
) -> Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync> {
    let mut check = HttpHealthCheck::new(&origin.authority, origin.tls.is_some());
    let mut peer = origin_peer(SocketAddr::from(([0, 0, 0, 0], 1)), origin);
    peer.options.read_timeout = Some(origin.timeout);
    // Each probe on a connection of its own (pingora keeps HTTP/2 ones):
    // a server that stopped accepting connections must fail it. HTTP/2 only
    // for an origin that speaks nothing else.
    peer.options.alpn = match origin.http2 {
        Http2::Always => pingora::protocols::ALPN::H2,
        _ => pingora::protocols::ALPN::H1,
    };
    check.peer_template = peer;
    if let Ok(mut req) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) {
        if req.insert_header("Host", &origin.authority).is_ok()
            && req
                .insert_header("User-Agent", "rain-edge health check")
                .is_ok()
        {
            check.req = req;
        }
    }
    check.validator = Some(Box::new(|resp| {
        if resp.status.as_u16() < 500 {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("server error", resp.status.as_u16()),
                "health check answered >= 500",
            )
        }
    }));
    check.health_changed_callback = Some(Box::new(Observer(origin.name.clone())));
    Box::new(check)
}

/// Logs a server taken out or put back by its health check.
struct Observer(String);

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(origin = %self.0, server = %target.addr, "server answers its health check again: back in");
        } else {
            tracing::warn!(origin = %self.0, server = %target.addr, "server failed its health check: out until it answers");
        }
    }
}

/// One admitted exchange with a server, as its circuit breaker sees it.
/// Dropped unfinished at its deadline, it counts as a failure (a timeout);
/// dropped earlier (the page went away, or a stale pooled connection is
/// retried), it counts as nothing.
pub struct Attempt {
    server: Arc<Server>,
    admit: Admit,
    breaker: (u32, Duration),
    started: Instant,
    deadline: Duration,
    done: bool,
}

impl Attempt {
    /// An exchange admitted by `server`'s breaker (`admit`), which counts as
    /// a timeout if dropped unfinished `deadline` after `started` (when the
    /// request began, before it waited for a place or another server).
    pub fn new(
        server: Arc<Server>,
        admit: Admit,
        breaker: (u32, Duration),
        started: Instant,
        deadline: Duration,
    ) -> Attempt {
        Attempt {
            server,
            admit,
            breaker,
            started,
            deadline,
            done: false,
        }
    }

    /// The exchange's end: `healthy` when the server answered below 500.
    pub fn finish(mut self, healthy: bool) {
        self.done = true;
        self.record(healthy);
    }

    fn record(&self, healthy: bool) {
        if !healthy {
            self.server.failures.fetch_add(1, Ordering::Relaxed);
        }
        let (threshold, cooldown) = self.breaker;
        self.server
            .breaker
            .exchange_done(self.admit, healthy, threshold, cooldown);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.started.elapsed() + Duration::from_millis(5) >= self.deadline {
            self.record(false);
        } else if self.admit == Admit::Probe {
            self.server.breaker.release_probe();
        }
    }
}

/// An exchange in flight on a server (its `in_flight` count).
pub struct InUse(Arc<Server>);

impl InUse {
    /// Counts one more exchange on `server`.
    pub fn new(server: Arc<Server>) -> InUse {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InUse(server)
    }

    /// The server.
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(listener: &tokio::net::TcpListener) -> (Stream, tokio::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let client: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(
            client.unwrap(),
        ));
        (client, server.unwrap().0)
    }

    fn origin(servers: &[&str], balance: Balance) -> Arc<Origin> {
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            "[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n[origins.o]\nurl = \"http://app.test/\"\nservers = [{}]\nbalance = \"{}\"\n",
            list.join(", "),
            balance.as_str()
        );
        let dir = std::env::temp_dir().join(format!("rain-servers-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(dir.join("templates/home.html"), "<html></html>").unwrap();
        let cfg = crate::config::parse(&dir.join("rain-edge.toml"), &text).unwrap();
        cfg.origins["o"].clone()
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_origin_closed_and_keeps_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = origin(
            &[&listener.local_addr().unwrap().to_string()],
            Balance::Session,
        );
        let server = Server::new(listener.local_addr().unwrap(), &o);
        let (closed, server_side) = pair(&listener).await;
        let (open, _kept) = pair(&listener).await;
        server.put_idle(closed);
        server.put_idle(open);
        drop(server_side);
        // Let the reactor see the origin's FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.sweep();
        assert_eq!(server.idle_count(), 1);
        assert!(server.take_idle().is_some());
        assert!(server.take_idle().is_none());
    }

    #[test]
    fn a_session_stays_on_its_server_and_sessions_spread() {
        let o = origin(
            &["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"],
            Balance::Session,
        );
        let servers = Servers::new(o, None);
        assert_eq!(servers.len(), 3);
        let mut used = std::collections::HashSet::new();
        for user in 0..60 {
            let id = format!("session-{user}");
            let (first, _) = servers.pick(Some(&id), None).unwrap();
            for _ in 0..5 {
                let (again, _) = servers.pick(Some(&id), None).unwrap();
                assert_eq!(
                    again.addr, first.addr,
                    "a user moved while its server was up"
                );
            }
            used.insert(first.addr);
        }
        assert_eq!(used.len(), 3, "60 users all landed on {used:?}");
    }

    #[test]
    fn a_rotated_answer_keeps_the_address_in_use() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(choose(Some(b), [a, b].into_iter()), Some(b));
        assert_eq!(choose(Some(b), [b, a].into_iter()), Some(b));
        assert_eq!(choose(None, [a, b].into_iter()), Some(a));
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        assert_eq!(choose(Some(c), [b, a].into_iter()), Some(b));
        assert_eq!(choose(Some(c), std::iter::empty()), None);
    }

    #[test]
    fn adding_a_server_moves_few_users() {
        let two = Servers::new(
            origin(&["127.0.0.1:1001", "127.0.0.1:1002"], Balance::Session),
            None,
        );
        let three = Servers::new(
            origin(
                &["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"],
                Balance::Session,
            ),
            None,
        );
        let moved = (0..1000)
            .filter(|u| {
                let id = format!("user-{u}");
                let a = two.pick(Some(&id), None).unwrap().0.addr;
                let b = three.pick(Some(&id), None).unwrap().0.addr;
                a != b
            })
            .count();
        // Consistent hashing: about a third move (to the new server), not
        // two thirds as with a modulo.
        assert!(moved < 500, "{moved} of 1000 users moved");
        assert!(moved > 0);
    }

    #[test]
    fn round_robin_takes_each_server_in_turn_and_skip_is_honoured() {
        let servers = Servers::new(
            origin(&["127.0.0.1:1001", "127.0.0.1:1002"], Balance::RoundRobin),
            None,
        );
        let picks: Vec<SocketAddr> = (0..4)
            .map(|_| servers.pick(Some("same-user"), None).unwrap().0.addr)
            .collect();
        assert_ne!(picks[0], picks[1]);
        assert_eq!(picks[0], picks[2]);
        let other = servers.pick(None, Some(picks[0])).unwrap().0.addr;
        assert_ne!(other, picks[0]);
    }

    #[test]
    fn a_server_whose_circuit_is_open_is_skipped_and_its_users_move() {
        let servers = Servers::new(
            origin(&["127.0.0.1:1001", "127.0.0.1:1002"], Balance::Session),
            None,
        );
        let (home, _) = servers.pick(Some("u"), None).unwrap();
        for _ in 0..3 {
            home.breaker
                .exchange_done(Admit::Yes, false, 3, Duration::from_secs(60));
        }
        assert!(home.breaker.is_open());
        let (moved, admit) = servers.pick(Some("u"), None).unwrap();
        assert_ne!(moved.addr, home.addr);
        assert_eq!(admit, Admit::Yes);
        let view = servers.view();
        assert_eq!(view.iter().filter(|v| v.up).count(), 1);
        // Both open: nothing to pick, and it says why.
        for _ in 0..3 {
            moved
                .breaker
                .exchange_done(Admit::Yes, false, 3, Duration::from_secs(60));
        }
        let Err(FetchFailure::Unavailable(why)) = servers.pick(Some("u"), None) else {
            panic!("a server was picked with every circuit open");
        };
        assert!(why.contains("every server's circuit is open"), "{why}");
    }
}
