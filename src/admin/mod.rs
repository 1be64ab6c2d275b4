//! The admin API (README.md, admin API) on `admin_listen` only, never on the public
//! listeners: health, origins with their health and statistics, runtime
//! registration of origins, routes, reload, and `/metrics`. JSON answers;
//! with `admin_token` set, every call needs `Authorization: Bearer TOKEN`.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use std::sync::Arc;

use crate::config::{self, ConfigErrors, FailureClass, Origin, RouteTarget};
use crate::edge::App;
use crate::http::{BrowserConn, Handler, HeadLimits, ResponseHead, Settings};
use crate::telemetry::OriginStats;
use crate::upstream::Purge;

mod waterfall;

/// The map (`GET /`): hand-written HTML, SVG and JavaScript, served from the
/// binary; it polls `map.json`.
const MAP: &str = include_str!("map.html");

/// Per-second rates between two looks at a counter (the map's polls).
fn rate(key: &str, count: u64) -> f64 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    /// The last look at each counter: when, its value, the rate then.
    type Looks = Mutex<HashMap<String, (Instant, u64, f64)>>;
    static SEEN: OnceLock<Looks> = OnceLock::new();
    let mut seen = crate::sync::lock(SEEN.get_or_init(Default::default));
    let now = Instant::now();
    let entry = seen.entry(key.to_string()).or_insert((now, count, 0.0));
    let dt = now.duration_since(entry.0).as_secs_f64();
    if dt >= 0.5 {
        entry.2 = count.saturating_sub(entry.1) as f64 / dt;
        entry.0 = now;
        entry.1 = count;
    }
    (entry.2 * 10.0).round() / 10.0
}

/// What the map draws: the instances, every origin with its servers,
/// rates, errors and latency, and the slowest recent pages.
async fn map_json(app: &App) -> Value {
    let snap = app.snapshot();
    let cfg = &snap.cfg;
    let origins: Vec<Value> = cfg
        .origins
        .values()
        .map(|o| {
            let v = origin_json(app, o, true);
            let stats = &v["stats"];
            json!({
                "name": o.name,
                "kind": o.kind.as_str(),
                "health": v["health"],
                "rate": rate(&format!("origin:{}", o.name), stats["requests"].as_u64().unwrap_or(0)),
                "p50": stats["latency_ms"]["p50"],
                "p99": stats["latency_ms"]["p99"],
                "errors": stats["errors"],
                "servers": v["servers"],
                "cache_hit_ratio": app.cache.as_ref().and_then(|c| c.counts.hit_ratio(&o.name)),
            })
        })
        .collect();
    let mut recent = app.pages.newest_first();
    recent.truncate(200);
    recent.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    let slowest: Vec<Value> = recent
        .iter()
        .take(10)
        .map(|p| {
            json!({
                "request_id": p.request_id,
                "path": p.path,
                "status": p.status,
                "total_ms": p.total_ms,
                "fragments": p.fragments.len(),
            })
        })
        .collect();
    json!({
        "node_id": cfg.server.node_id,
        "nodes": app.cluster.nodes(pages_per_s(app)).await,
        "origins": origins,
        "slowest": slowest,
    })
}

/// This instance's pages per second since the last look.
fn pages_per_s(app: &App) -> f64 {
    rate(
        "pages",
        app.pages.1.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// The admin cookie that carries the token for the HTML pages.
const COOKIE: &str = "rain_admin";

/// Largest request body the admin API reads (a `PUT /origins` table).
const MAX_BODY: usize = 64 << 10;
/// How long a request body may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// Heads on the admin listener: smaller than the public ones.
const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 16 << 10,
    max_fields: 64,
};

/// The admin listener's [`Handler`].
pub struct Admin {
    app: Arc<App>,
}

impl Admin {
    /// The admin API of `app`.
    pub fn new(app: Arc<App>) -> Admin {
        Admin { app }
    }
}

#[async_trait::async_trait]
impl Handler for Admin {
    fn settings(&self) -> Settings {
        Settings {
            limits: LIMITS,
            header_timeout: WAIT,
            idle_timeout: WAIT,
            send_timeout: WAIT,
            compression: false,
        }
    }

    async fn serve(&self, conn: &mut BrowserConn) -> bool {
        serve(&self.app, conn).await
    }
}

/// Answers one admin request. Returns whether the connection may be kept.
async fn serve(app: &App, conn: &mut BrowserConn) -> bool {
    let token = app.snapshot().cfg.server.admin_token.clone();
    // A token given once in the query (a person's first visit) is kept in
    // an HttpOnly cookie of the admin listener.
    let from_query = token
        .as_deref()
        .filter(|t| query_token(conn.request().uri.query()).is_some_and(|q| same(&q, t)))
        .map(str::to_string);
    let wants_html = wants_html(&conn.request().headers);
    let (mut status, mut content_type, mut body) = answer(app, conn).await;
    if status == 401 && wants_html {
        content_type = "text/html; charset=utf-8";
        body = Bytes::from(LOGIN);
        status = 401;
    }
    let Some(mut head) = ResponseHead::new(status) else {
        return false;
    };
    head.insert("content-type", content_type);
    head.insert("content-length", body.len().to_string());
    head.insert("cache-control", "no-store");
    if status == 401 {
        head.insert("www-authenticate", "Bearer");
    }
    if let Some(t) = from_query {
        head.insert(
            "set-cookie",
            format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict"),
        );
    }
    conn.write_head(head);
    conn.write_body(body, true).await.is_ok()
}

const JSON: &str = "application/json";

fn json_answer(status: u16, v: Value) -> (u16, &'static str, Bytes) {
    let mut text = v.to_string();
    text.push('\n');
    (status, JSON, Bytes::from(text))
}

fn error(status: u16, message: &str) -> (u16, &'static str, Bytes) {
    json_answer(status, json!({ "error": message }))
}

fn config_errors(status: u16, errors: &ConfigErrors) -> (u16, &'static str, Bytes) {
    let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    json_answer(status, json!({ "errors": list }))
}

/// The login form of the HTML pages: the token goes in the query once,
/// then lives in the admin cookie.
const LOGIN: &str =
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>rain-edge admin</title></head>\
<body style=\"font-family:sans-serif;margin:24px\"><h1>rain-edge admin</h1>\
<form method=\"get\"><label>Admin token <input type=\"password\" name=\"token\" autofocus></label> \
<button>Open</button></form></body></html>";

/// Whether `a` and `b` are equal, compared in constant time.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `token` parameter of a query, decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| crate::rewrite::decode_component(v))
    })
}

/// Whether a person's browser asks (HTML before JSON).
fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Whether the request carries the configured token: as a bearer token,
/// in the admin cookie, or in the query (the HTML pages' first visit).
fn authorized(token: Option<&str>, headers: &http::HeaderMap, query: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| same(b, token)) {
        return true;
    }
    let cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(n, v)| n == COOKIE && same(v, token));
    cookie || query_token(query).is_some_and(|q| same(&q, token))
}

async fn answer(app: &App, conn: &mut BrowserConn) -> (u16, &'static str, Bytes) {
    let req = conn.request();
    let method = req.method.clone();
    let path = req.uri.path().to_string();
    let snap = app.snapshot();
    if !authorized(
        snap.cfg.server.admin_token.as_deref(),
        &req.headers,
        req.uri.query(),
    ) {
        return error(401, "a bearer token is needed (admin_token)");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => (
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(MAP.as_bytes()),
        ),
        (&Method::GET, ["map.json"]) => json_answer(200, map_json(app).await),
        (&Method::GET, ["cluster"]) => {
            let nodes = app.cluster.nodes(pages_per_s(app)).await;
            json_answer(200, json!({ "nodes": nodes }))
        }
        (&Method::GET, ["pages"]) => {
            let pages: Vec<Value> = app
                .pages
                .newest_first()
                .iter()
                .map(|p| serde_json::to_value(&**p).unwrap_or(Value::Null))
                .collect();
            json_answer(200, json!({ "pages": pages }))
        }
        (&Method::GET, ["pages", id]) => match app.pages.get(id) {
            None => error(404, "no such page is kept here"),
            Some(record) if wants_html(&req.headers) => (
                200,
                "text/html; charset=utf-8",
                Bytes::from(waterfall::page(&record)),
            ),
            Some(record) => json_answer(200, serde_json::to_value(&*record).unwrap_or(Value::Null)),
        },
        (&Method::GET, ["health"]) => json_answer(
            200,
            json!({ "status": "ok", "node_id": snap.cfg.server.node_id }),
        ),
        (&Method::GET, ["metrics"]) => {
            let cache_bytes = match &app.cache {
                Some(c) => c.bytes().await,
                None => 0,
            };
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from({
                    let mut text = app.metrics.render();
                    app.client.render_metrics(&mut text);
                    if let Some(cache) = &app.cache {
                        cache.render_metrics(&mut text, cache_bytes);
                    }
                    text
                }),
            )
        }
        (&Method::GET, ["origins"]) => {
            let list: Vec<Value> = snap
                .cfg
                .origins
                .values()
                .map(|o| origin_json(app, o, false))
                .collect();
            json_answer(200, json!({ "origins": list }))
        }
        (&Method::GET, ["origins", name]) => match snap.cfg.origins.get(*name) {
            Some(o) => json_answer(200, origin_json(app, o, true)),
            None => error(404, "no such origin"),
        },
        (&Method::PUT, ["origins", name]) => {
            let name = name.to_string();
            let body = match read_body(conn).await {
                Ok(b) => b,
                Err(answer) => return answer,
            };
            let table: toml::Table = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => {
                    return error(
                        400,
                        &format!("the body must be a JSON object of the origin's keys: {e}"),
                    )
                }
            };
            match config::parse_origin(&snap.cfg, &name, &table) {
                Ok(origin) => {
                    let replaced = snap.cfg.origins.contains_key(&name);
                    app.put_origin(origin);
                    // Every instance sharing the store takes it too, and
                    // it outlives reloads and restarts there.
                    let json = String::from_utf8_lossy(&body).into_owned();
                    if app.cluster.shared() && !app.cluster.put_origin(&name, &json).await {
                        tracing::warn!(origin = %name, "origin not written to the shared registry");
                    }
                    tracing::info!(origin = %name, replaced, "origin registered through the admin API");
                    let snap = app.snapshot();
                    match snap.cfg.origins.get(&name) {
                        Some(o) => json_answer(
                            if replaced { 200 } else { 201 },
                            origin_json(app, o, false),
                        ),
                        None => error(500, "the origin vanished"),
                    }
                }
                Err(errors) => config_errors(400, &errors),
            }
        }
        (&Method::DELETE, ["origins", name]) => {
            if app.delete_origin(name) {
                if app.cluster.shared() && !app.cluster.delete_origin(name).await {
                    tracing::warn!(origin = %name, "origin not dropped from the shared registry");
                }
                tracing::info!(origin = %name, "origin unregistered through the admin API");
                json_answer(200, json!({ "deleted": name }))
            } else {
                error(404, "no such origin")
            }
        }
        (&Method::POST, ["purge"]) => {
            let body = match read_body(conn).await {
                Ok(b) => b,
                Err(answer) => return answer,
            };
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(400, &format!("the body must be JSON: {e}")),
            };
            let purge = Purge::from_json(&v);
            if purge.tag.is_none() && (purge.origin.is_none() || purge.path.is_none()) {
                return error(400, "name an origin and a path, or a tag");
            }
            let dropped = match &app.cache {
                Some(cache) => cache.purge(&purge).await,
                None => 0,
            };
            // Every instance sharing the store drops them too.
            if app.cluster.shared() && !app.cluster.announce_purge(&purge.to_json()).await {
                tracing::warn!("cache purge not announced to the other instances");
            }
            json_answer(200, json!({ "dropped": dropped }))
        }
        (&Method::GET, ["routes"]) => {
            let list: Vec<Value> = snap
                .cfg
                .routes
                .iter()
                .map(|r| match &r.target {
                    RouteTarget::Layout(file) => json!({ "path": r.path, "layout": file }),
                    RouteTarget::Origin { origin, src } => {
                        json!({ "path": r.path, "origin": origin, "src": src })
                    }
                })
                .collect();
            json_answer(200, json!({ "routes": list }))
        }
        (&Method::POST, ["reload"]) => match app.reload() {
            Ok(()) => {
                tracing::info!("configuration reloaded through the admin API");
                json_answer(200, json!({ "status": "reloaded" }))
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload rejected, old configuration kept: {e}");
                }
                config_errors(400, &errors)
            }
        },
        (_, ["health" | "metrics" | "origins" | "routes" | "reload"]) | (_, ["origins", _]) => {
            error(405, "method not allowed here")
        }
        _ => error(404, "no such admin call"),
    }
}

/// The request body, bounded by [`MAX_BODY`].
async fn read_body(conn: &mut BrowserConn) -> Result<Vec<u8>, (u16, &'static str, Bytes)> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, conn.read_body()).await {
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY {
                    conn.close_after();
                    return Err(error(413, "the body is too large"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(e)) => {
                conn.close_after();
                return Err(error(400, &format!("the body could not be read: {e}")));
            }
            Err(_) => {
                conn.close_after();
                return Err(error(408, "the body did not arrive in time"));
            }
        }
    }
}

/// An origin as JSON: its settings, health and counters; `detail` adds
/// failures by class and latency percentiles.
fn origin_json(app: &App, o: &Origin, detail: bool) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = app.metrics.origin(&o.name);
    let servers = app.client.servers(&o.name);
    // An origin is down while none of its servers is up (each server: its
    // health check, if any, and its circuit breaker).
    let down = !servers.iter().any(|s| s.up);
    let mut v = json!({
        "name": o.name,
        "url": o.url.as_str(),
        "kind": o.kind.as_str(),
        "source": if app.origin_from_api(&o.name) { "api" } else { "config" },
        "health": if down { "down" } else { "up" },
        "timeout_ms": u64::try_from(o.timeout.as_millis()).unwrap_or(u64::MAX),
        "max_connections": o.max_connections,
        "css_scope": o.css_scope.as_str(),
        "counters": counters(&stats),
    });
    if detail {
        let errors: serde_json::Map<String, Value> = FailureClass::ALL
            .iter()
            .map(|c| (c.key().to_string(), json!(stats.failures(*c))))
            .collect();
        let q = |p: f64| {
            stats
                .latency
                .quantile_ms(p)
                .map(|ms| (ms * 10.0).round() / 10.0)
        };
        v["stats"] = json!({
            "requests": stats.requests.load(std::sync::atomic::Ordering::Relaxed),
            "errors": errors,
            "timeouts": stats.failures(FailureClass::Timeout),
            "consecutive_failures": servers.iter().map(|s| s.server.breaker.consecutive_failures()).max().unwrap_or(0),
            "circuit_rejected": servers.iter().map(|s| s.server.breaker.rejected.load(Relaxed)).sum::<u64>(),
            "latency_ms": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99) },
        });
        v["servers"] = servers
            .iter()
            .map(|s| {
                json!({
                    "address": s.addr.to_string(),
                    "health": if s.up { "up" } else { "down" },
                    "in_flight": s.server.in_flight.load(Relaxed),
                    "circuit": if s.circuit_open { "open" } else { "closed" },
                    "requests": s.server.requests.load(Relaxed),
                    "failures": s.server.failures.load(Relaxed),
                    "protocol": s.protocol,
                    "http2_connections": s.server.h2.count(),
                })
            })
            .collect();
        v["balance"] = json!(o.balance.as_str());
    }
    v
}

fn counters(stats: &OriginStats) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let requests = stats.requests.load(Relaxed);
    let ok = stats.ok.load(Relaxed);
    json!({
        "requests": requests,
        "ok": ok,
        "failures": requests.saturating_sub(ok),
        "timeouts": stats.failures(FailureClass::Timeout),
    })
}
