//! The validated configuration: plain data, every default applied, every value
//! checked. Built only by [`crate::config::load`]; read by every other module.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

/// Why a fragment could not be shown; picks the placeholder (docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// The fragment did not arrive before its deadline.
    Timeout,
    /// Connection refused or reset, name resolution, an open circuit.
    Unavailable,
    /// The origin answered 401.
    Unauthorized,
    /// The origin answered 403.
    Forbidden,
    /// The origin answered 404, or the fragment names no known origin.
    NotFound,
    /// Anything else: 5xx, too large, a broken body, a cycle, too deep.
    Error,
}

impl FailureClass {
    /// Every class, in the order of the `[placeholders]` table.
    pub const ALL: [FailureClass; 6] = [
        FailureClass::Timeout,
        FailureClass::Unavailable,
        FailureClass::Unauthorized,
        FailureClass::Forbidden,
        FailureClass::NotFound,
        FailureClass::Error,
    ];

    /// The key of this class in `[placeholders]` tables.
    pub fn key(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Unavailable => "unavailable",
            FailureClass::Unauthorized => "unauthorized",
            FailureClass::Forbidden => "forbidden",
            FailureClass::NotFound => "not_found",
            FailureClass::Error => "error",
        }
    }

    /// The class named by a `[placeholders]` key.
    pub fn from_key(key: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.key() == key)
    }
}

/// Framework family of an origin; selects its quirks (docs/configuration.md, rewriting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    /// Any HTTP application.
    Generic,
    /// JSP on a servlet container.
    Jsp,
    /// Apache Wicket.
    Wicket,
    /// Spring MVC.
    Spring,
    /// PHP.
    Php,
}

impl OriginKind {
    /// Parses the `kind` key.
    pub fn parse(s: &str) -> Option<OriginKind> {
        Some(match s {
            "generic" => OriginKind::Generic,
            "jsp" => OriginKind::Jsp,
            "wicket" => OriginKind::Wicket,
            "spring" => OriginKind::Spring,
            "php" => OriginKind::Php,
            _ => return None,
        })
    }

    /// The `kind` key's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Generic => "generic",
            OriginKind::Jsp => "jsp",
            OriginKind::Wicket => "wicket",
            OriginKind::Spring => "spring",
            OriginKind::Php => "php",
        }
    }
}

/// How an origin's class names are kept apart from the others' (docs/configuration.md, rewriting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CssScope {
    /// Classes become `{class_prefix}-{name}` in markup and CSS.
    Rename,
    /// Markup untouched; the origin's selectors are confined to its fragments.
    Wrap,
    /// No scoping.
    Off,
}

impl CssScope {
    /// The `css_scope` key's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CssScope::Rename => "rename",
            CssScope::Wrap => "wrap",
            CssScope::Off => "off",
        }
    }
}

/// One registered remote application.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The key of its `[origins.NAME]` table.
    pub name: String,
    /// The base URL; its path always ends with `/`.
    pub url: Url,
    /// Host to connect to (as written in the URL).
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// `Host` header value sent to the origin (`host` or `host:port`).
    pub authority: String,
    /// Framework quirks.
    pub kind: OriginKind,
    /// One origin session per user before parallel fetches (docs/configuration.md, sessions).
    pub session_bootstrap: bool,
    /// Deadline of each fragment of this origin.
    pub timeout: Duration,
    /// Concurrent connections to this origin; more requests wait in line.
    pub max_connections: usize,
    /// Send the page's query parameters to this origin's fragments.
    pub forward_params: bool,
    /// Browser request headers passed on, lower-case.
    pub forward_headers: Vec<http::HeaderName>,
    /// Browser cookies passed on, by name.
    pub forward_cookies: Vec<String>,
    /// Class scoping mode.
    pub css_scope: CssScope,
    /// Prefix of renamed classes.
    pub class_prefix: String,
    /// Per-origin placeholder templates (file names in the templates folder).
    pub placeholders: BTreeMap<FailureClass, String>,
    /// How TLS is spoken to an https origin (`None` for http).
    pub tls: Option<OriginTls>,
    /// The servers connected to, as `(host, port)` (`servers`; default: the
    /// url's host and port). The url's host stays the `Host` header and the
    /// TLS name.
    pub servers: Vec<(String, u16)>,
    /// How a server is chosen among several (`balance`).
    pub balance: Balance,
    /// Path and query probed on every server (`health_check`, resolved
    /// below the url), if any.
    pub health_check: Option<String>,
    /// How often every server is probed (`health_interval`).
    pub health_interval: Duration,
    /// When HTTP/2 is spoken to this origin (`http2`).
    pub http2: Http2,
    /// WebSockets open to this origin at most (`max_websockets`).
    pub max_websockets: usize,
    /// Whether its `public` fragments may be cached (`cache`).
    pub cache: bool,
}

/// When HTTP/2 is spoken to an origin (`http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2 {
    /// Over TLS when the origin picks it by ALPN; HTTP/1.1 otherwise.
    Auto,
    /// Always: required by ALPN over TLS, prior knowledge (h2c) over http.
    Always,
    /// Never: HTTP/1.1 only.
    Never,
}

impl Http2 {
    /// The `http2` key's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Http2::Auto => "auto",
            Http2::Always => "always",
            Http2::Never => "never",
        }
    }
}

/// How a request picks one of an origin's servers (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Consistent hashing on the user's session: a user stays on one server
    /// while it is up (in-memory origin sessions keep working).
    Session,
    /// Each request to the next server.
    RoundRobin,
}

impl Balance {
    /// The `balance` key's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Session => "session",
            Balance::RoundRobin => "round_robin",
        }
    }
}

/// TLS toward an https origin (`tls_*` keys of `[origins.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTls {
    /// Check the origin's certificate and its name (`tls_verify`).
    pub verify: bool,
    /// The certificates trusted for this origin, DER (`tls_ca`); empty: the
    /// system's roots.
    pub ca: Vec<Vec<u8>>,
    /// A client certificate chain and its private key, DER
    /// (`tls_client_cert`, `tls_client_key`), for origins that ask for one.
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
}

/// What a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A layout file in the templates folder.
    Layout(String),
    /// A layout fetched from an origin at `src` (plus the rest of the path and the query).
    Origin {
        /// The origin's name.
        origin: String,
        /// Path below the origin's base.
        src: String,
    },
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path as written (`/` or `/docs/*`).
    pub path: String,
    /// For `/docs/*`: `/docs`; otherwise the exact path.
    pub base: String,
    /// Whether the route matches everything below `base`.
    pub prefix: bool,
    /// What it serves.
    pub target: RouteTarget,
}

impl Route {
    /// The part of `path` below the route's prefix (`""` for an exact match),
    /// or `None` when the route does not match.
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        if !self.prefix {
            return (path == self.base).then_some("");
        }
        let rest = path.strip_prefix(self.base.as_str())?;
        if rest.is_empty() || rest.starts_with('/') || self.base.ends_with('/') {
            Some(rest)
        } else {
            None
        }
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (a single host).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Cidr { addr, len })
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// Load balancers whose forwarding headers are kept.
    pub trusted_proxies: Vec<Cidr>,
    /// HTTPS listeners (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls_listen: Vec<SocketAddr>,
    /// Admin API listener.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token of the admin API.
    pub admin_token: Option<String>,
    /// Stable id of this instance.
    pub node_id: String,
    /// Folder of layouts, fallbacks and placeholders.
    pub templates: PathBuf,
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Larger request heads get 431.
    pub max_header_bytes: u64,
    /// More request header fields get 431.
    pub max_headers: usize,
    /// Larger request bodies get 413.
    pub max_body: u64,
    /// A request body must arrive whole within this (else 408).
    pub body_timeout: Duration,
    /// A response the browser does not read for this long is abandoned.
    pub send_timeout: Duration,
    /// Compress text answers for browsers that accept `br` or `gzip`.
    pub compression: bool,
    /// PEM certificate chain of the TLS listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listeners.
    pub tls_key: Option<PathBuf>,
    /// The unix socket through which `--upgrade` takes the listeners over.
    pub upgrade_socket: PathBuf,
    /// How often origin host names are resolved again (zero: only at load
    /// and reload).
    pub resolve_interval: Duration,
}

/// `[session]` (used from the hidden-sessions work on; validated now).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The browser cookie's name.
    pub cookie_name: String,
    /// Sessions idle longer than this expire.
    pub idle_timeout: Duration,
    /// Add the `Secure` attribute.
    pub secure: bool,
    /// `memory` or `redis`.
    pub store: String,
    /// Redis URL, with `store = "redis"`.
    pub redis_url: String,
}

/// `[fragments]`: defaults for every fragment.
#[derive(Debug, Clone)]
pub struct FragmentDefaults {
    /// Deadline of a fragment whose origin sets none.
    pub timeout: Duration,
    /// Nesting limit.
    pub max_depth: usize,
    /// Largest fragment body, after decompression.
    pub max_bytes: u64,
    /// Fragments per page, nested ones included.
    pub max_per_page: usize,
    /// What the rewriter of one fragment (or origin layout) may hold of its
    /// own while it works: lol_html's parsing buffer and open elements.
    pub max_rewrite_memory: usize,
    /// How long a public fragment's last good copy may be served.
    pub stale_if_error: Duration,
    /// Consecutive failures that open an origin's circuit (0: never).
    pub breaker_failures: u32,
    /// How long an open circuit stays open.
    pub breaker_cooldown: Duration,
    /// The whole page's deadline, from the request: it caps every
    /// fragment's own (nested ones included) and an origin layout's.
    pub page_timeout: Duration,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[session]`.
    pub session: SessionConfig,
    /// `[fragments]`.
    pub fragments: FragmentDefaults,
    /// `[cache] max_size`: bytes of cached public fragment bodies (0: off).
    pub cache_max_size: u64,
    /// `[placeholders]`: platform-wide placeholder files, by class.
    pub placeholders: BTreeMap<FailureClass, String>,
    /// Origins by name.
    pub origins: BTreeMap<String, Arc<Origin>>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

impl Config {
    /// What is allowed but unsafe, one line each naming file and key
    /// (`--check` prints them; start-up logs them).
    pub fn warnings(&self) -> Vec<String> {
        self.origins
            .values()
            .filter(|o| o.tls.as_ref().is_some_and(|t| !t.verify))
            .map(|o| {
                format!(
                    "{}: origins.{}.tls_verify: false: any certificate is accepted for this origin, so anyone on the way can pose as it",
                    self.file.display(),
                    o.name
                )
            })
            .collect()
    }

    /// The route serving `path`: an exact route first, then the longest prefix.
    /// Returns the route and the part of the path below its prefix.
    pub fn route_for<'c, 'p>(&'c self, path: &'p str) -> Option<(&'c Route, &'p str)> {
        if let Some(r) = self.routes.iter().find(|r| !r.prefix && r.base == path) {
            return Some((r, ""));
        }
        self.routes
            .iter()
            .filter(|r| r.prefix)
            .filter_map(|r| r.matches(path).map(|rest| (r, rest)))
            .max_by_key(|(r, _)| r.base.len())
    }

    /// The origin whose base URL contains `url`, the longest base first
    /// (for Tailor templates that give an absolute `src` and no `origin`).
    pub fn origin_for_url(&self, url: &Url) -> Option<&Arc<Origin>> {
        self.origins
            .values()
            .filter(|o| is_under_base(&o.url, url))
            .max_by_key(|o| o.url.path().len())
    }
}

/// Whether `url` lies under `base` (same scheme, host and port; path below the
/// base path, or the base path itself without its trailing `/`).
pub fn is_under_base(base: &url::Url, url: &url::Url) -> bool {
    if base.scheme() != url.scheme()
        || base.host_str() != url.host_str()
        || base.port_or_known_default() != url.port_or_known_default()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return false;
    }
    let bp = base.path();
    let p = url.path();
    p.starts_with(bp) || bp.strip_suffix('/') == Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains("8.8.8.8".parse().expect("ip")));
    }

    #[test]
    fn route_prefix_matching() {
        let r = Route {
            path: "/docs/*".into(),
            base: "/docs".into(),
            prefix: true,
            target: RouteTarget::Layout("x".into()),
        };
        assert_eq!(r.matches("/docs"), Some(""));
        assert_eq!(r.matches("/docs/a/b"), Some("/a/b"));
        assert_eq!(r.matches("/docsx"), None);
        assert_eq!(r.matches("/other"), None);
    }
}
