//! `/_rain/r/{origin}/{path}?{query}`: an origin's resource (image, script,
//! stylesheet, download) fetched with the user's hidden session and relayed
//! to the browser as it arrives, never buffered whole, with the origin's
//! content type and caching headers. Its cookies go into the user's jar. A
//! redirect inside the origin is mapped back under `/_rain/r/`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::app::App;
use super::page::{respond_simple, session_or_503, unless_gone, PageRequest};
use crate::http::{BrowserConn, ResponseHead};
use crate::rewrite::{classify, map_location, resolve_src, resource_url, Target, UrlContext};
use crate::upstream::{BrowserContext, Exchange, OriginRequest};

/// Response headers of a resource passed on to the browser.
const PASSED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-disposition",
    "content-range",
    "accept-ranges",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "vary",
];

/// Request headers of the browser passed on for a resource, besides §6's.
const ASKED: &[&str] = &[
    "accept",
    "accept-encoding",
    "if-none-match",
    "if-modified-since",
    "range",
    "if-range",
];

/// What a request through rain-edge to an origin takes from the browser's:
/// the user's session (existing only), the context of §6, the fields for
/// the origin (the user's jar for it, and the browser's fields of `asked`),
/// and the target's path and query.
pub(super) struct Passed {
    pub user: Option<std::sync::Arc<crate::session::PageSession>>,
    pub browser: BrowserContext,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub path_and_query: String,
}

/// Prepares a request of the browser's to `url` of `origin` (a resource,
/// a client-side call, a WebSocket: `what`, also its `X-Rain-Fragment-Id`):
/// `Err` holds whether the connection may
/// be kept when the session store could not be reached (503 written).
#[allow(clippy::too_many_arguments)]
pub(super) async fn pass(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    headers: &http::HeaderMap,
    origin: &std::sync::Arc<crate::config::Origin>,
    url: &url::Url,
    page_url: String,
    asked: &[&'static str],
    what: &'static str,
) -> Result<Passed, bool> {
    let snap = app.snapshot();
    let cfg = &snap.cfg;
    let user = session_or_503(app, cfg, headers, session, what).await?;
    let browser = BrowserContext::new(cfg, headers, Some(client.ip()), session.secure(), page_url);
    let mut out = browser
        .headers_with_jar(origin, url, what, user.as_deref())
        .await;
    out.retain(|(n, _)| n != http::header::ACCEPT_ENCODING);
    for name in asked {
        for v in headers.get_all(*name) {
            out.push((HeaderName::from_static(name), v.clone()));
        }
    }
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(Passed {
        user,
        browser,
        headers: out,
        path_and_query,
    })
}

/// An origin's answer opened within its timeout while the browser waits:
/// the exchange, or (written here) 502 for a failure and 504 for the
/// timeout, each with `what` failed or late. `Err` holds whether the
/// connection may be kept (false: the browser went away).
pub(super) async fn opened_or_answer<T>(
    session: &mut BrowserConn,
    origin: &crate::config::Origin,
    what: (&str, &'static str, &'static str),
    open: impl std::future::Future<Output = Result<T, crate::aggregate::FetchFailure>>,
) -> Result<T, bool> {
    let (name, failed, late) = what;
    let opened = unless_gone(session, tokio::time::timeout(origin.timeout, open)).await;
    match opened {
        None => Err(false),
        Some(Ok(Ok(t))) => Ok(t),
        Some(Ok(Err(e))) => {
            tracing::warn!(origin = %origin.name, error = %e, "{name} failed");
            Err(respond_simple(session, 502, "Bad Gateway", failed).await)
        }
        Some(Err(_)) => Err(respond_simple(session, 504, "Gateway Timeout", late).await),
    }
}

/// Serves one `/_rain/r/` request. Returns whether the connection may be kept.
pub async fn serve(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    rest: &str,
    page: PageRequest,
) -> bool {
    let snap = app.snapshot();
    let cfg = snap.cfg.clone();
    // The browser's request as the router read it (no copy of its own).
    let PageRequest {
        method,
        headers,
        query,
        ..
    } = page;
    if method != http::Method::GET && method != http::Method::HEAD {
        respond_simple(
            session,
            405,
            "Method Not Allowed",
            "Resources answer GET and HEAD.",
        )
        .await;
        return false;
    }
    let invalid = "This resource path is invalid.";
    let target = origin_target(&cfg, client, rest, query.as_deref(), "resource", invalid);
    let (origin, url) = match target {
        Ok(t) => t,
        Err((status, title, message)) => {
            return respond_simple(session, status, title, message).await
        }
    };
    let passed = pass(
        app,
        session,
        client,
        &headers,
        &origin,
        &url,
        format!("/_rain/r/{rest}"),
        ASKED,
        "resource",
    )
    .await;
    let Passed {
        user,
        browser,
        headers: out,
        path_and_query,
    } = match passed {
        Ok(p) => p,
        Err(keep) => return keep,
    };
    let origin_req = OriginRequest::passed(
        &origin,
        method.as_str(),
        &path_and_query,
        out,
        cfg.fragments.max_bytes,
        user.as_ref().map(|u| u.id.as_str()),
    );
    let what = (
        "resource",
        "The resource could not be fetched.",
        "The resource did not come in time.",
    );
    let ex = match opened_or_answer(session, &origin, what, app.client.open(&origin_req)).await {
        Ok(ex) => ex,
        Err(keep) => return keep,
    };
    save_cookies(
        user.as_deref(),
        &origin.name,
        &url,
        &ex.set_cookies(),
        "resource",
    )
    .await;
    let status = ex.status();
    let is_css = ex.headers().is_some_and(|h| {
        h.get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| crate::rewrite::starts_with_ci(t.trim(), "text/css"))
    });
    if status == 200 && is_css && method == http::Method::GET {
        return serve_stylesheet(
            session,
            ex,
            &origin,
            &url,
            cfg.fragments.max_bytes,
            &browser.request_id,
        )
        .await;
    }
    let Some(mut h) = answer_head(&ex, &origin, &url) else {
        ex.finish();
        return respond_simple(
            session,
            400,
            "Bad Request",
            "This answer redirects nowhere this site can send you.",
        )
        .await;
    };
    let bodyless = method == http::Method::HEAD
        || status == 204
        || status == 304
        || (100..200).contains(&status);
    let _ = h.insert("x-request-id", browser.request_id.as_str());
    session.write_head(h);
    if bodyless {
        ex.finish();
        return session.finish_body().await.is_ok();
    }
    relay(session, ex, &origin, origin.timeout).await
}

/// The head passed to the browser for an origin's answer: its status, the
/// fields of [`PASSED`], and `Location`/`Ajax-Location` mapped back through
/// rain-edge (or to the other site the origin names). `None` when a
/// location would leave this host for nowhere valid.
fn answer_head(
    ex: &Exchange,
    origin: &crate::config::Origin,
    url: &url::Url,
) -> Option<ResponseHead> {
    let mut h = ResponseHead::new(ex.status())?;
    let Some(src) = ex.headers() else {
        return Some(h);
    };
    for name in PASSED {
        for v in src.get_all(*name) {
            let _ = h.append(name, v.clone());
        }
    }
    let under = |l: &str, hash: &str| format!("{}{hash}", resource_url(&origin.name, l));
    map_locations(src, &mut h, origin, url, under, "redirect refused")?;
    Some(h)
}

/// Puts the origin's `Location` and `Ajax-Location` into `h`, mapped
/// ([`map_location`]: under the origin, `under` says where). `None`, noted
/// as `refused`, when one leads nowhere valid.
pub(super) fn map_locations(
    src: &http::HeaderMap,
    h: &mut ResponseHead,
    origin: &crate::config::Origin,
    url: &url::Url,
    under: impl Fn(&str, &str) -> String,
    refused: &'static str,
) -> Option<()> {
    for field in ["location", "ajax-location"] {
        let Some(loc) = src.get(field).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let mapped = map_location(&UrlContext::of(origin, url), loc, &under);
        let Some(v) = mapped.and_then(|m| HeaderValue::from_str(&m).ok()) else {
            tracing::warn!(origin = %origin.name, location = %loc.escape_debug(), "{refused}");
            return None;
        };
        let _ = h.insert(field, v);
    }
    Some(())
}

/// The origin that `rest` (`{origin}/{location}`) names and the URL of
/// its location with `query`, below the origin's base; or the refusal: 404
/// for an origin that is not configured, 400 with `invalid` for a location
/// outside its base (logged as a rejected `what` path).
pub(super) fn origin_target(
    cfg: &crate::config::Config,
    client: SocketAddr,
    rest: &str,
    query: Option<&str>,
    what: &str,
    invalid: &'static str,
) -> Result<(std::sync::Arc<crate::config::Origin>, url::Url), super::form::Refusal> {
    let (name, location) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(origin) = cfg.origins.get(name).cloned() else {
        return Err((404, "Not Found", "No such origin."));
    };
    let wanted = match query {
        Some(q) => format!("{location}?{q}"),
        None => location.to_string(),
    };
    match resolve_src(&origin.url, &wanted) {
        Ok(url) => Ok((origin, url)),
        Err(e) => {
            tracing::info!(%client, error = %e, "rejected {what} path");
            Err((400, "Bad Request", invalid))
        }
    }
}

/// Keeps the `Set-Cookie`s of an origin's answer in the user's jar (none
/// without a user); a store that fails is logged, `what` naming the answer.
pub(super) async fn save_cookies(
    user: Option<&crate::session::PageSession>,
    origin: &str,
    url: &url::Url,
    set: &[String],
    what: &str,
) {
    if let Some(s) = user {
        if let Err(e) = s.record(origin, url, set).await {
            tracing::warn!(error = %e, "{what} cookies not saved");
        }
    }
}

/// Streams the origin's body to the browser, each piece written as it
/// comes and within `idle` of the one before. A body broken off or stalled
/// cuts the answer short (the browser sees it incomplete); a browser gone
/// drops the origin connection.
pub(super) async fn relay(
    session: &mut BrowserConn,
    mut ex: Exchange,
    origin: &crate::config::Origin,
    idle: std::time::Duration,
) -> bool {
    loop {
        let next = unless_gone(session, tokio::time::timeout(idle, ex.chunk())).await;
        let Some(next) = next else {
            return false;
        };
        match next {
            Ok(Ok(Some(chunk))) => {
                if session.write_body(chunk, false).await.is_err() {
                    return false;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::warn!(origin = %origin.name, error = %e, "resource body broken off");
                return false;
            }
            Err(_) => {
                tracing::warn!(origin = %origin.name, "resource body stalled");
                return false;
            }
        }
    }
    ex.finish();
    session.finish_body().await.is_ok()
}

/// A stylesheet of the origin: read whole (bounded), decoded, its classes
/// renamed as the origin's fragments' are and its `url()`s of the origin
/// served by rain-edge, then sent with its caching headers.
async fn serve_stylesheet(
    session: &mut BrowserConn,
    mut ex: Exchange,
    origin: &crate::config::Origin,
    url: &url::Url,
    max: u64,
    request_id: &str,
) -> bool {
    let encoding = ex.header_str("content-encoding");
    let content_type = ex.header_str("content-type");
    let kept: Vec<(&str, HeaderValue)> = ["cache-control", "etag", "last-modified", "expires"]
        .iter()
        .filter_map(|n| {
            ex.headers()
                .and_then(|h| h.get(*n))
                .map(|v| (*n, v.clone()))
        })
        .collect();
    let mut raw = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(origin.timeout, ex.chunk()).await {
            Ok(Ok(Some(c))) if (raw.len() + c.len()) as u64 <= max => raw.extend_from_slice(&c),
            Ok(Ok(None)) => break,
            _ => {
                tracing::warn!(origin = %origin.name, "stylesheet too large or broken off");
                return respond_simple(
                    session,
                    502,
                    "Bad Gateway",
                    "The stylesheet could not be fetched.",
                )
                .await;
            }
        }
    }
    ex.finish();
    let decoded = match crate::upstream::decode_content(raw.freeze(), encoding.as_deref(), max) {
        Ok(d) => crate::upstream::to_utf8(d, content_type.as_deref()),
        Err(e) => {
            tracing::warn!(origin = %origin.name, error = %e, "stylesheet could not be decoded");
            return respond_simple(
                session,
                502,
                "Bad Gateway",
                "The stylesheet could not be decoded.",
            )
            .await;
        }
    };
    let css = String::from_utf8_lossy(&decoded);
    let ctx = UrlContext::of(origin, url);
    let prefix = (origin.css_scope == crate::config::CssScope::Rename)
        .then_some(origin.class_prefix.as_str());
    let map = |u: &str| match classify(&ctx, u) {
        Target::Origin { location, hash } => {
            Some(format!("{}{hash}", resource_url(&origin.name, &location)))
        }
        Target::Foreign => None,
    };
    let rewritten = if origin.css_scope == crate::config::CssScope::Wrap {
        crate::rewrite::wrap_css(&css, &origin.name, map)
    } else {
        crate::rewrite::rewrite_css(&css, prefix, map)
    };
    let out = match rewritten {
        Ok(out) => Bytes::from(out),
        Err(e) => {
            tracing::warn!(origin = %origin.name, error = %e, "stylesheet dropped");
            Bytes::new()
        }
    };
    let Some(mut h) = ResponseHead::new(200) else {
        return false;
    };
    h.insert("content-type", "text/css; charset=utf-8");
    h.insert("content-length", out.len().to_string());
    h.insert("x-request-id", request_id);
    for (n, v) in kept {
        h.insert(n, v);
    }
    session.write_head(h);
    session.write_body(out, true).await.is_ok()
}
