//! Reading a config file: TOML syntax first, then every table and key checked
//! by hand so that *all* errors are reported at once, each naming the file and
//! the key (`origins.shop.timeout`). Unknown keys are errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::model::{
    Balance, Cidr, Config, CssScope, FailureClass, FragmentDefaults, Http2, Origin, OriginKind,
    OriginTls, Route, RouteTarget, ServerConfig, SessionConfig,
};
use super::units::{parse_duration, parse_size};

/// One problem in a config file, or in a template it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in it: a key path (`origins.shop.url`) or `line N`.
    pub place: String,
    /// What is wrong, and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.place,
                self.message
            )
        }
    }
}

/// Every error found in a config, in the order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while walking the file.
struct Errors<'f> {
    file: &'f Path,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            place: place.into(),
            message: message.into(),
        });
    }
}

/// A TOML table being read: remembers which keys were used, so the rest can
/// be reported as unknown.
struct Table<'t> {
    path: String,
    map: Option<&'t toml::Table>,
    used: BTreeSet<&'static str>,
}

impl<'t> Table<'t> {
    fn new(path: impl Into<String>, map: Option<&'t toml::Table>) -> Self {
        Table {
            path: path.into(),
            map,
            used: BTreeSet::new(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn raw(&mut self, k: &'static str) -> Option<&'t toml::Value> {
        self.used.insert(k);
        self.map.and_then(|m| m.get(k))
    }

    fn table(&mut self, errs: &mut Errors, k: &'static str) -> Option<&'t toml::Table> {
        match self.raw(k)? {
            toml::Value::Table(t) => Some(t),
            _ => {
                errs.push(self.key(k), "must be a table");
                None
            }
        }
    }

    fn string(&mut self, errs: &mut Errors, k: &'static str) -> Option<&'t str> {
        match self.raw(k)? {
            toml::Value::String(s) => Some(s.as_str()),
            other => {
                errs.push(
                    self.key(k),
                    format!("must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn bool(&mut self, errs: &mut Errors, k: &'static str, default: bool) -> bool {
        match self.raw(k) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("must be true or false, not {}", other.type_str()),
                );
                default
            }
        }
    }

    fn uint(&mut self, errs: &mut Errors, k: &'static str, default: u64, max: u64) -> u64 {
        match self.raw(k) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 && (*i as u64) <= max => *i as u64,
            Some(toml::Value::Integer(i)) => {
                errs.push(self.key(k), format!("{i} is out of range (0 to {max})"));
                default
            }
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("must be a whole number, not {}", other.type_str()),
                );
                default
            }
        }
    }

    fn duration(&mut self, errs: &mut Errors, k: &'static str, default: Duration) -> Duration {
        let Some(s) = self.string(errs, k) else {
            return default;
        };
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                errs.push(self.key(k), e);
                default
            }
        }
    }

    fn size(&mut self, errs: &mut Errors, k: &'static str, default: u64) -> u64 {
        match self.raw(k) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(toml::Value::String(s)) => match parse_size(s) {
                Ok(v) => v,
                Err(e) => {
                    errs.push(self.key(k), e);
                    default
                }
            },
            Some(_) => {
                errs.push(self.key(k), "must be a size like \"2MiB\"");
                default
            }
        }
    }

    fn strings(&mut self, errs: &mut Errors, k: &'static str) -> Vec<&'t str> {
        match self.raw(k) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v {
                        toml::Value::String(s) => out.push(s.as_str()),
                        _ => errs.push(format!("{}[{i}]", self.key(k)), "must be a string"),
                    }
                }
                out
            }
            Some(_) => {
                errs.push(self.key(k), "must be a list of strings");
                Vec::new()
            }
        }
    }

    /// Reports every key that was not read.
    fn finish(self, errs: &mut Errors) {
        let Some(map) = self.map else { return };
        for k in map.keys() {
            if !self.used.contains(k.as_str()) {
                let expected: Vec<&str> = self.used.iter().copied().collect();
                errs.push(
                    self.key(k),
                    format!("unknown key; expected one of: {}", expected.join(", ")),
                );
            }
        }
    }
}

/// Reads and validates the config file at `path`. Every problem is reported,
/// not just the first.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            place: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates config text as if read from `path` (relative paths resolve
/// against `path`'s folder).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut errs = Errors {
        file: path,
        list: Vec::new(),
    };
    let doc: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let place = e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        1 + text[..s.start.min(text.len())].matches('\n').count()
                    )
                })
                .unwrap_or_default();
            errs.push(place, format!("not valid TOML: {}", e.message()));
            return Err(ConfigErrors(errs.list));
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut root = Table::new("", Some(&doc));

    let server_t = root.table(&mut errs, "server");
    let server = read_server(&mut errs, server_t, &dir);
    let session_t = root.table(&mut errs, "session");
    let session = read_session(&mut errs, session_t);
    let fragments_t = root.table(&mut errs, "fragments");
    let fragments = read_fragments(&mut errs, fragments_t);
    let cache_t = root.table(&mut errs, "cache");
    let cache_max_size = {
        let mut t = Table::new("cache", cache_t);
        let size = t.size(&mut errs, "max_size", 256 << 20);
        t.finish(&mut errs);
        size
    };
    let placeholders_t = root.table(&mut errs, "placeholders");
    let placeholders =
        read_placeholders(&mut errs, "placeholders", placeholders_t, &server.templates);

    let mut origins = BTreeMap::new();
    if let Some(t) = root.table(&mut errs, "origins") {
        for (name, v) in t {
            let key = format!("origins.{name}");
            let toml::Value::Table(ot) = v else {
                errs.push(key, "must be a table");
                continue;
            };
            if let Some(o) = read_origin(&mut errs, name, ot, &fragments, &server.templates) {
                origins.insert(name.clone(), Arc::new(o));
            }
        }
    }

    let mut routes = Vec::new();
    match root.raw("routes") {
        None => errs.push(
            "routes",
            "no [[routes]]: add at least one, e.g. path = \"/\" and layout = \"home.html\"",
        ),
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let key = format!("routes[{i}]");
                let toml::Value::Table(rt) = item else {
                    errs.push(key, "must be a table ([[routes]])");
                    continue;
                };
                if let Some(r) = read_route(&mut errs, key, rt, &origins, &server.templates) {
                    if routes.iter().any(|o: &Route| o.path == r.path) {
                        errs.push(
                            format!("routes[{i}].path"),
                            format!("`{}` is routed twice", r.path),
                        );
                    }
                    routes.push(r);
                }
            }
        }
        Some(_) => errs.push("routes", "must be an array of tables ([[routes]])"),
    }
    root.finish(&mut errs);

    if !errs.list.is_empty() {
        return Err(ConfigErrors(errs.list));
    }
    Ok(Config {
        file: path.to_path_buf(),
        server,
        session,
        fragments,
        cache_max_size,
        placeholders,
        origins,
        routes,
    })
}

fn read_server(errs: &mut Errors, t: Option<&toml::Table>, dir: &Path) -> ServerConfig {
    let mut t = Table::new("server", t);
    let addrs = |t: &mut Table, errs: &mut Errors, k: &'static str, default: &[&str]| {
        let given = t.strings(errs, k);
        let list: Vec<&str> = if t.map.is_some_and(|m| m.contains_key(k)) {
            given
        } else {
            default.to_vec()
        };
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(sa) => out.push(sa),
                Err(_) => errs.push(
                    format!("server.{k}[{i}]"),
                    format!("`{a}` is not an address like \"127.0.0.1:8080\""),
                ),
            }
        }
        out
    };
    let listen = addrs(&mut t, errs, "listen", &["127.0.0.1:8080"]);
    let tls_listen = addrs(&mut t, errs, "tls_listen", &[]);
    let written = |k: &str| {
        t.map
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len)
    };
    let none_written = t.map.is_some_and(|m| m.contains_key("listen"))
        && written("listen") == 0
        && written("tls_listen") == 0;
    if none_written {
        errs.push("server.listen", "no listener: give at least one address");
    }
    let mut trusted_proxies = Vec::new();
    for (i, c) in t.strings(errs, "trusted_proxies").iter().enumerate() {
        match Cidr::parse(c) {
            Some(c) => trusted_proxies.push(c),
            None => errs.push(
                format!("server.trusted_proxies[{i}]"),
                format!("`{c}` is not a CIDR like \"10.0.0.0/8\""),
            ),
        }
    }
    let tls_cert = t.string(errs, "tls_cert").map(|p| dir.join(p));
    let tls_key = t.string(errs, "tls_key").map(|p| dir.join(p));
    if !tls_listen.is_empty() {
        match (&tls_cert, &tls_key) {
            (Some(cert), Some(key)) => {
                if let Err((key_name, e)) = read_tls_files(cert, key) {
                    errs.push(format!("server.{key_name}"), e);
                }
            }
            _ => errs.push("server.tls_listen", "needs tls_cert and tls_key"),
        }
    }
    let admin_listen = t
        .string(errs, "admin_listen")
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(sa) => Some(sa),
            Err(_) => {
                errs.push(
                    "server.admin_listen",
                    format!("`{a}` is not an address like \"127.0.0.1:9901\""),
                );
                None
            }
        });
    let admin_token = t.string(errs, "admin_token").map(str::to_string);
    let node_id = match t.string(errs, "node_id") {
        Some(n) if !n.trim().is_empty() && n.bytes().all(|b| b.is_ascii_graphic()) => n.to_string(),
        Some(n) => {
            errs.push(
                "server.node_id",
                format!("`{n}` must be non-empty printable ASCII without spaces"),
            );
            String::new()
        }
        None => default_node_id(),
    };
    let templates = dir.join(t.string(errs, "templates").unwrap_or("templates"));
    if !templates.is_dir() {
        errs.push(
            "server.templates",
            format!("`{}` is not a folder", templates.display()),
        );
    }
    let header_timeout = t.duration(errs, "header_timeout", Duration::from_secs(10));
    let idle_timeout = t.duration(errs, "idle_timeout", Duration::from_secs(60));
    let max_header_bytes = t.size(errs, "max_header_bytes", 32 << 10);
    // pingora's parser reads at most 256 header fields (docs/ARCHITECTURE.md).
    let max_headers = t.uint(errs, "max_headers", 100, 256) as usize;
    let max_body = t.size(errs, "max_body", 10 << 20);
    let compression = t.bool(errs, "compression", true);
    let body_timeout = t.duration(errs, "body_timeout", Duration::from_secs(30));
    let send_timeout = t.duration(errs, "send_timeout", Duration::from_secs(60));
    let upgrade_socket = match t.string(errs, "upgrade_socket") {
        Some(p) if !p.is_empty() => dir.join(p),
        Some(_) => {
            errs.push("server.upgrade_socket", "must be a path");
            PathBuf::new()
        }
        None => PathBuf::from("/tmp/rain-edge.upgrade.sock"),
    };
    let resolve_interval = t.duration(errs, "resolve_interval", Duration::from_secs(30));
    t.finish(errs);
    ServerConfig {
        listen,
        trusted_proxies,
        tls_listen,
        admin_listen,
        admin_token,
        node_id,
        templates,
        header_timeout,
        idle_timeout,
        max_header_bytes,
        max_headers,
        max_body,
        body_timeout,
        send_timeout,
        compression,
        tls_cert,
        tls_key,
        upgrade_socket,
        resolve_interval,
    }
}

/// A certificate chain and its private key, read from PEM files. The error
/// names the key (`tls_cert` or `tls_key`) whose file is wrong.
pub type TlsFiles = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

/// Reads `tls_cert` (a PEM chain, leaf first) and `tls_key` (a PEM private
/// key: PKCS#8, PKCS#1 or SEC1).
pub fn read_tls_files(cert: &Path, key: &Path) -> Result<TlsFiles, (&'static str, String)> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("tls_cert", format!("cannot read `{}`: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "tls_cert",
                format!("`{}` is not a PEM certificate chain: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "tls_cert",
            format!("`{}` holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "tls_key",
            format!("`{}` is not a PEM private key: {e}", key.display()),
        )
    })?;
    Ok((certs, key))
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "rain-edge".to_string())
}

fn read_session(errs: &mut Errors, t: Option<&toml::Table>) -> SessionConfig {
    let mut t = Table::new("session", t);
    let cookie_name = t
        .string(errs, "cookie_name")
        .unwrap_or("rain_sid")
        .to_string();
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errs.push(
            "session.cookie_name",
            format!("`{cookie_name}` is not a valid cookie name (letters, digits, _ and -)"),
        );
    }
    let idle_timeout = t.duration(errs, "idle_timeout", Duration::from_secs(1800));
    let secure = t.bool(errs, "secure", false);
    let store = t.string(errs, "store").unwrap_or("memory").to_string();
    if store != "memory" && store != "redis" {
        errs.push(
            "session.store",
            format!("`{store}` is not a store; use \"memory\" or \"redis\""),
        );
    }
    let redis_url = t
        .string(errs, "redis_url")
        .unwrap_or("redis://127.0.0.1:6379/0")
        .to_string();
    if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
        errs.push(
            "session.redis_url",
            format!("`{redis_url}` must start with redis://"),
        );
    }
    t.finish(errs);
    SessionConfig {
        cookie_name,
        idle_timeout,
        secure,
        store,
        redis_url,
    }
}

fn read_fragments(errs: &mut Errors, t: Option<&toml::Table>) -> FragmentDefaults {
    let mut t = Table::new("fragments", t);
    let d = FragmentDefaults {
        timeout: t.duration(errs, "timeout", Duration::from_secs(1)),
        max_depth: t.uint(errs, "max_depth", 4, 64) as usize,
        max_bytes: t.size(errs, "max_bytes", 2 << 20),
        max_per_page: t.uint(errs, "max_per_page", 64, 10_000) as usize,
        max_rewrite_memory: usize::try_from(t.size(errs, "max_rewrite_memory", 1 << 20))
            .unwrap_or(usize::MAX),
        stale_if_error: t.duration(errs, "stale_if_error", Duration::from_secs(600)),
        breaker_failures: t.uint(errs, "breaker_failures", 5, 1_000_000) as u32,
        breaker_cooldown: t.duration(errs, "breaker_cooldown", Duration::from_secs(10)),
        page_timeout: t.duration(errs, "page_timeout", Duration::from_secs(10)),
    };
    if d.timeout.is_zero() {
        errs.push("fragments.timeout", "must be more than 0");
    }
    if d.page_timeout.is_zero() {
        errs.push("fragments.page_timeout", "must be more than 0");
    }
    t.finish(errs);
    d
}

/// Checks that `name` is a file inside the templates folder (no absolute
/// path, no `..`) and that it exists.
pub(crate) fn template_file_problem(templates: &Path, name: &str) -> Option<String> {
    let p = Path::new(name);
    if name.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Some(format!(
            "`{name}` must be a relative path inside the templates folder, without `..`"
        ));
    }
    let full = templates.join(p);
    if !full.is_file() {
        return Some(format!("`{}` does not exist", full.display()));
    }
    None
}

fn read_placeholders(
    errs: &mut Errors,
    path: &str,
    t: Option<&toml::Table>,
    templates: &Path,
) -> BTreeMap<FailureClass, String> {
    let mut out = BTreeMap::new();
    let Some(map) = t else { return out };
    for (k, v) in map {
        let key = format!("{path}.{k}");
        let Some(class) = FailureClass::from_key(k) else {
            let keys: Vec<&str> = FailureClass::ALL.iter().map(|c| c.key()).collect();
            errs.push(
                key,
                format!("unknown key; expected one of: {}", keys.join(", ")),
            );
            continue;
        };
        let toml::Value::String(file) = v else {
            errs.push(key, "must be a file name in the templates folder");
            continue;
        };
        if let Some(problem) = template_file_problem(templates, file) {
            errs.push(key, problem);
        }
        out.insert(class, file.clone());
    }
    out
}

/// Validates one origin's table as if it were `[origins.NAME]` of `cfg`'s
/// file (the admin API's `PUT /origins/{name}`): the same keys, defaults
/// and errors.
pub fn parse_origin(cfg: &Config, name: &str, table: &toml::Table) -> Result<Origin, ConfigErrors> {
    let mut errs = Errors {
        file: &cfg.file,
        list: Vec::new(),
    };
    let origin = read_origin(
        &mut errs,
        name,
        table,
        &cfg.fragments,
        &cfg.server.templates,
    );
    match origin {
        Some(o) if errs.list.is_empty() => Ok(o),
        _ => Err(ConfigErrors(errs.list)),
    }
}

fn read_origin(
    errs: &mut Errors,
    name: &str,
    t: &toml::Table,
    defaults: &FragmentDefaults,
    templates: &Path,
) -> Option<Origin> {
    let path = format!("origins.{name}");
    let before = errs.list.len();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errs.push(
            &path,
            "an origin's name may use only letters, digits, _ and -",
        );
    }
    let mut t = Table::new(path.clone(), Some(t));
    let url = match t.string(errs, "url") {
        None => {
            errs.push(
                format!("{path}.url"),
                "is required (the origin's base URL, e.g. \"http://127.0.0.1:8081/shop/\")",
            );
            None
        }
        Some(u) => parse_origin_url(u)
            .map_err(|e| errs.push(format!("{path}.url"), e))
            .ok(),
    };
    let kind = match t.string(errs, "kind") {
        None => OriginKind::Generic,
        Some(k) => OriginKind::parse(k).unwrap_or_else(|| {
            errs.push(
                format!("{path}.kind"),
                format!("`{k}` is not a kind; use jsp, wicket, spring, php or generic"),
            );
            OriginKind::Generic
        }),
    };
    let session_bootstrap = t.bool(errs, "session_bootstrap", kind != OriginKind::Generic);
    let timeout = t.duration(errs, "timeout", defaults.timeout);
    if timeout.is_zero() {
        errs.push(format!("{path}.timeout"), "must be more than 0");
    }
    let max_connections = t.uint(errs, "max_connections", 1024, 100_000) as usize;
    if max_connections == 0 {
        errs.push(format!("{path}.max_connections"), "must be at least 1");
    }
    let forward_params = t.bool(errs, "forward_params", true);
    let mut forward_headers = Vec::new();
    for (i, h) in t.strings(errs, "forward_headers").iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => forward_headers.push(n),
            Err(_) => errs.push(
                format!("{path}.forward_headers[{i}]"),
                format!("`{h}` is not a header name"),
            ),
        }
    }
    let forward_cookies: Vec<String> = t
        .strings(errs, "forward_cookies")
        .iter()
        .map(|s| s.to_string())
        .collect();
    let css_scope = match t.string(errs, "css_scope") {
        None | Some("rename") => CssScope::Rename,
        Some("wrap") => CssScope::Wrap,
        Some("off") => CssScope::Off,
        Some(other) => {
            errs.push(
                format!("{path}.css_scope"),
                format!("`{other}` is not a mode; use rename, wrap or off"),
            );
            CssScope::Rename
        }
    };
    let class_prefix = t.string(errs, "class_prefix").unwrap_or(name).to_string();
    if class_prefix.is_empty()
        || !class_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || class_prefix.as_bytes()[0].is_ascii_digit()
    {
        errs.push(format!("{path}.class_prefix"), format!("`{class_prefix}` must be a CSS identifier (letters, digits, _ and -, not starting with a digit)"));
    }
    let ph_table = t.table(errs, "placeholders");
    let placeholders =
        read_placeholders(errs, &format!("{path}.placeholders"), ph_table, templates);
    let tls_keys = TlsKeys {
        verify: t.bool(errs, "tls_verify", true),
        ca: t.string(errs, "tls_ca"),
        cert: t.string(errs, "tls_client_cert"),
        key: t.string(errs, "tls_client_key"),
    };
    let servers_written = t.strings(errs, "servers");
    let balance = match t.string(errs, "balance") {
        None if kind == OriginKind::Generic => Balance::RoundRobin,
        None | Some("session") => Balance::Session,
        Some("round_robin") => Balance::RoundRobin,
        Some(other) => {
            errs.push(
                format!("{path}.balance"),
                format!("`{other}` is not a balance; use session or round_robin"),
            );
            Balance::Session
        }
    };
    let http2 = match t.string(errs, "http2") {
        None | Some("auto") => Http2::Auto,
        Some("always") => Http2::Always,
        Some("never") => Http2::Never,
        Some(other) => {
            errs.push(
                format!("{path}.http2"),
                format!("`{other}` is not a mode; use auto, always or never"),
            );
            Http2::Auto
        }
    };
    let max_websockets = t.uint(errs, "max_websockets", 256, 100_000) as usize;
    let cache = t.bool(errs, "cache", true);
    let health_written = t.string(errs, "health_check");
    let health_interval = t.duration(errs, "health_interval", Duration::from_secs(5));
    if health_interval.is_zero() {
        errs.push(format!("{path}.health_interval"), "must be more than 0");
    }
    t.finish(errs);
    let url = url?;
    let tls = read_origin_tls(errs, &path, &url, &tls_keys);
    let host = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    let mut servers = Vec::new();
    for (i, s) in servers_written.iter().enumerate() {
        match parse_server(s, port) {
            Ok(hp) if servers.contains(&hp) => errs.push(
                format!("{path}.servers[{i}]"),
                format!("`{s}` is listed twice"),
            ),
            Ok(hp) => servers.push(hp),
            Err(e) => errs.push(format!("{path}.servers[{i}]"), e),
        }
    }
    let health_check = health_written.and_then(|h| match health_path(&url, h) {
        Ok(p) => Some(p),
        Err(e) => {
            errs.push(format!("{path}.health_check"), e);
            None
        }
    });
    if errs.list.len() > before {
        return None;
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if servers.is_empty() {
        servers.push((host.clone(), port));
    }
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => host.clone(),
    };
    Some(Origin {
        name: name.to_string(),
        host,
        port,
        authority,
        url,
        kind,
        session_bootstrap,
        timeout,
        max_connections,
        forward_params,
        forward_headers,
        forward_cookies,
        css_scope,
        class_prefix,
        placeholders,
        tls,
        servers,
        balance,
        health_check,
        health_interval,
        http2,
        max_websockets,
        cache,
    })
}

/// One entry of `servers`: `host:port`, `[v6]:port`, or a host alone (the
/// url's port). A name is resolved like the url's host (at load, then every
/// `resolve_interval`).
fn parse_server(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || {
        format!("`{text}` is not a server address; write it like \"10.0.0.7:8443\" or \"app1.internal:8080\"")
    };
    let url = Url::parse(&format!("http://{text}/")).map_err(|_| bad())?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    // Only an authority: anything else (a path, credentials) was not meant.
    let written = text.trim_end_matches('/');
    if written.contains(['/', '@', '?', '#']) || !url.username().is_empty() {
        return Err(bad());
    }
    // The port as written (the URL parser drops http's default, `:80` or
    // `:080`, as if none were written).
    let after_host = written.rsplit_once(']').map_or(written, |(_, rest)| rest);
    let port = match after_host.rsplit_once(':') {
        Some((_, p)) => p.parse::<u16>().map_err(|_| bad())?,
        None => default_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

/// The path and query that `health_check` names below the origin's url: a
/// path relative to the base, or absolute on the same host; never another
/// host.
fn health_path(base: &Url, written: &str) -> Result<String, String> {
    if written.is_empty() {
        return Err("must be a path, like \"/health\"".into());
    }
    let joined = if let Some(abs) = written.strip_prefix('/') {
        base.join(&format!("./{abs}"))
    } else {
        base.join(written)
    };
    match joined {
        Ok(u) if u.origin() == base.origin() && u.path().starts_with(base.path()) => {
            Ok(match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
        }
        _ => Err(format!(
            "`{written}` is not a path below the origin's url `{base}`"
        )),
    }
}

/// The `tls_*` keys of an origin table, as written.
struct TlsKeys<'t> {
    verify: bool,
    ca: Option<&'t str>,
    cert: Option<&'t str>,
    key: Option<&'t str>,
}

/// The TLS settings of an https origin, its files read and checked now (a
/// certificate or key that does not parse is a config error, never a
/// failure at the first fetch); an http origin with `tls_*` keys is an
/// error.
fn read_origin_tls(
    errs: &mut Errors,
    path: &str,
    url: &Url,
    keys: &TlsKeys<'_>,
) -> Option<OriginTls> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let dir = errs
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if url.scheme() != "https" {
        let set = [
            ("tls_ca", keys.ca.is_some()),
            ("tls_client_cert", keys.cert.is_some()),
            ("tls_client_key", keys.key.is_some()),
            ("tls_verify", !keys.verify),
        ];
        for (key, given) in set {
            if given {
                errs.push(format!("{path}.{key}"), "applies to https origins only");
            }
        }
        return None;
    }
    let mut ca = Vec::new();
    if let Some(file) = keys.ca {
        let file = dir.join(file);
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let read = CertificateDer::pem_file_iter(&file)
            .map_err(|e| e.to_string())
            .and_then(|certs| {
                certs
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            });
        match read {
            Ok(certs) if !certs.is_empty() => {
                for cert in certs {
                    match roots.add(cert.clone()) {
                        Ok(()) => ca.push(cert.as_ref().to_vec()),
                        Err(e) => errs.push(
                            format!("{path}.tls_ca"),
                            format!(
                                "`{}` holds a certificate that does not parse: {e}",
                                file.display()
                            ),
                        ),
                    }
                }
            }
            Ok(_) => errs.push(
                format!("{path}.tls_ca"),
                format!("`{}` holds no certificate", file.display()),
            ),
            Err(e) => errs.push(
                format!("{path}.tls_ca"),
                format!("cannot read `{}` as PEM certificates: {e}", file.display()),
            ),
        }
    }
    let client = match (keys.cert, keys.key) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            errs.push(
                format!("{path}.tls_client_cert"),
                "tls_client_cert and tls_client_key go together",
            );
            None
        }
        (Some(cert), Some(key)) => match read_tls_files(&dir.join(cert), &dir.join(key)) {
            Err((which, message)) => {
                let key = if which == "tls_cert" {
                    "tls_client_cert"
                } else {
                    "tls_client_key"
                };
                errs.push(format!("{path}.{key}"), message);
                None
            }
            Ok((chain, private)) => {
                let provider = tokio_rustls::rustls::crypto::ring::default_provider();
                let der: Vec<Vec<u8>> = chain.iter().map(|c| c.as_ref().to_vec()).collect();
                let secret = private.secret_der().to_vec();
                match tokio_rustls::rustls::sign::CertifiedKey::from_der(chain, private, &provider)
                {
                    Ok(_) => Some((der, secret)),
                    Err(e) => {
                        errs.push(
                            format!("{path}.tls_client_key"),
                            format!("does not fit tls_client_cert: {e}"),
                        );
                        None
                    }
                }
            }
        },
    };
    Some(OriginTls {
        verify: keys.verify,
        ca,
        client,
    })
}

/// Validates an origin's base URL and gives its path a trailing `/`.
pub fn parse_origin_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| {
        format!("`{text}` is not a URL ({e}); write it like \"http://127.0.0.1:8081/shop/\"")
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {}
        other => {
            return Err(format!(
                "`{text}`: scheme `{other}` is not supported; use http or https"
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}`: credentials in the URL are not supported"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}`: a base URL has no query or #fragment"));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

fn read_route(
    errs: &mut Errors,
    key: String,
    t: &toml::Table,
    origins: &BTreeMap<String, Arc<Origin>>,
    templates: &Path,
) -> Option<Route> {
    let before = errs.list.len();
    let mut t = Table::new(key.clone(), Some(t));
    let path = t.string(errs, "path");
    let layout = t.string(errs, "layout");
    let origin = t.string(errs, "origin");
    let src = t.string(errs, "src");
    t.finish(errs);
    let Some(path) = path else {
        errs.push(
            format!("{key}.path"),
            "is required (e.g. \"/\" or \"/docs/*\")",
        );
        return None;
    };
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        errs.push(
            format!("{key}.path"),
            format!("`{path}` must start with / and have no query"),
        );
    }
    let (base, prefix) = match path.strip_suffix("/*") {
        Some("") => ("/".to_string(), true),
        Some(b) => (b.to_string(), true),
        None => (path.to_string(), false),
    };
    if base.contains('*') {
        errs.push(
            format!("{key}.path"),
            format!("`{path}`: `*` may only end a path, as in \"/docs/*\""),
        );
    }
    if path.starts_with("/_rain/") || path == "/_rain" {
        errs.push(
            format!("{key}.path"),
            "paths under /_rain/ are rain-edge's own",
        );
    }
    let target = match (layout, origin, src) {
        (Some(l), None, None) => {
            if let Some(problem) = template_file_problem(templates, l) {
                errs.push(format!("{key}.layout"), problem);
            }
            RouteTarget::Layout(l.to_string())
        }
        (None, Some(o), s) => {
            if !origins.contains_key(o) {
                errs.push(
                    format!("{key}.origin"),
                    format!("`{o}` is not a configured origin"),
                );
            }
            let src = s.unwrap_or("/").to_string();
            if !src.starts_with('/') {
                errs.push(
                    format!("{key}.src"),
                    format!("`{src}` must be a path starting with /"),
                );
            }
            RouteTarget::Origin {
                origin: o.to_string(),
                src,
            }
        }
        (Some(_), Some(_), _) => {
            errs.push(
                key.clone(),
                "give either `layout` or `origin` (+ `src`), not both",
            );
            return None;
        }
        (None, None, _) => {
            errs.push(
                key.clone(),
                "needs `layout` (a template file) or `origin` (+ `src`)",
            );
            return None;
        }
        (Some(_), None, Some(_)) => {
            errs.push(
                format!("{key}.src"),
                "`src` goes with `origin`, not with `layout`",
            );
            return None;
        }
    };
    if errs.list.len() > before {
        return None;
    }
    Some(Route {
        path: path.to_string(),
        base,
        prefix,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_take_their_written_port_or_the_urls() {
        assert_eq!(
            parse_server("10.0.0.7:8443", 80),
            Ok(("10.0.0.7".into(), 8443))
        );
        assert_eq!(
            parse_server("10.0.0.7:080", 8080),
            Ok(("10.0.0.7".into(), 80))
        );
        assert_eq!(
            parse_server("10.0.0.7:80", 8080),
            Ok(("10.0.0.7".into(), 80))
        );
        assert_eq!(
            parse_server("app2.internal", 8443),
            Ok(("app2.internal".into(), 8443))
        );
        assert_eq!(
            parse_server("[fd00::7]:9000", 80),
            Ok(("fd00::7".into(), 9000))
        );
        assert_eq!(parse_server("[fd00::7]", 81), Ok(("fd00::7".into(), 81)));
        for bad in [
            "",
            "fd00::7",
            "10.0.0.7:",
            "10.0.0.7:99999",
            "a@b:1",
            "h:1/x",
            "h:1?q",
            "http://h/",
        ] {
            assert!(parse_server(bad, 80).is_err(), "{bad} accepted");
        }
    }

    fn tmp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rain-cfg-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(d.join("templates")).expect("mkdir");
        std::fs::write(d.join("templates/home.html"), "<html></html>").expect("write");
        d
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let d = tmp_dir();
        let cfg = parse(
            &d.join("c.toml"),
            "[origins.shop]\nurl = \"http://127.0.0.1:9/shop\"\n[[routes]]\npath = \"/\"\nlayout = \"home.html\"\n",
        )
        .expect("valid");
        let shop = &cfg.origins["shop"];
        assert_eq!(shop.url.as_str(), "http://127.0.0.1:9/shop/");
        assert_eq!(shop.timeout, Duration::from_secs(1));
        assert_eq!(shop.class_prefix, "shop");
        assert!(!shop.session_bootstrap);
        assert_eq!(
            cfg.server.listen,
            vec!["127.0.0.1:8080".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(cfg.fragments.max_bytes, 2 << 20);
        assert_eq!(cfg.session.cookie_name, "rain_sid");
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let d = tmp_dir();
        let err = parse(
            &d.join("c.toml"),
            "[server]\nlistn = [\"x\"]\nheader_timeout = \"10\"\n[origins.shop]\nkind = \"cobol\"\n[[routes]]\npath = \"/\"\nlayout = \"missing.html\"\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("server.listn: unknown key"), "{text}");
        assert!(
            text.contains("server.header_timeout: `10` has no unit"),
            "{text}"
        );
        assert!(text.contains("origins.shop.url: is required"), "{text}");
        assert!(
            text.contains("origins.shop.kind: `cobol` is not a kind"),
            "{text}"
        );
        assert!(text.contains("routes[0].layout"), "{text}");
        assert!(err.0.iter().all(|e| e.file.ends_with("c.toml")));
    }

    #[test]
    fn bad_toml_names_the_line() {
        let d = tmp_dir();
        let err = parse(&d.join("c.toml"), "[server]\nlisten = [\n").expect_err("invalid");
        assert!(err.to_string().contains("c.toml: line"), "{err}");
    }

    #[test]
    fn origin_urls() {
        assert!(parse_origin_url("http://h:1/a").is_ok());
        assert!(parse_origin_url("ftp://h/").is_err());
        assert!(parse_origin_url("http://u:p@h/").is_err());
        assert!(parse_origin_url("http://h/?q=1").is_err());
        assert!(parse_origin_url("nonsense").is_err());
    }
}
