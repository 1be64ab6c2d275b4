//! `/_rain/o/{origin}/{rest}`: the client-side calls of a fragment's scripts
//! (`fetch`, XMLHttpRequest, EventSource) to their origin, with the user's
//! hidden session (docs/configuration.md, client-side calls). Every origin
//! request carries this prefix as `X-Rain-Base`. Any method: a request body
//! is read whole first (`max_body`, `body_timeout`), as for forms; the
//! answer is passed on as it is (no rewriting) and streamed as it comes,
//! server-sent events included. Its `Set-Cookie`s go into the user's jar, a
//! `Location` under the origin is mapped under the prefix.
//!
//! A state-changing call (not GET, HEAD or OPTIONS) from another site is
//! refused with 403 before anything is read or sent: the hidden session
//! must never let another site act for the user.

use http::{HeaderValue, Method};
use std::net::SocketAddr;

use super::app::App;
use super::form::{read_whole_body, refuse_body};
use super::page::{respond_simple, PageRequest};
use super::resource::{
    map_locations, opened_or_answer, origin_target, pass, relay, save_cookies, Passed,
};
use crate::config::OriginKind;
use crate::http::{BrowserConn, ResponseHead};
use crate::rewrite::{
    call_base, map_components, stays_on_edge, AjaxPart, FragmentRewrite, PageUrl,
};
use crate::upstream::{Exchange, OriginRequest};

/// Browser request fields a call passes on, besides §6's and the origin's
/// `forward_headers`.
const ASKED: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-type",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "range",
    "if-range",
    "last-event-id",
    "x-requested-with",
    "wicket-ajax",
    "wicket-ajax-baseurl",
    "wicket-focusedelementid",
];

/// Answer fields never passed to the browser: hop-by-hop ones, the
/// origin's cookies (they go into the jar), and those that would act on the
/// whole site the edge serves, not on this answer (wiping its cookies,
/// pinning its transport, opening it to other sites' scripts).
const KEPT_BACK: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "set-cookie",
    "set-cookie2",
    "clear-site-data",
    "strict-transport-security",
    "alt-svc",
    "public-key-pins",
    "content-security-policy-report-only",
];

/// Serves one `/_rain/o/` request. Returns whether the connection may be
/// kept.
pub async fn serve(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    rest: &str,
    page: PageRequest,
) -> bool {
    let snap = app.snapshot();
    let cfg = snap.cfg.clone();
    let PageRequest {
        method,
        headers,
        query,
        ..
    } = page;
    if matches!(method.as_str(), "TRACE" | "TRACK" | "CONNECT") {
        // TRACE would echo the jar's cookies back to the caller.
        session.close_after();
        respond_simple(
            session,
            405,
            "Method Not Allowed",
            "This method is not passed to origins.",
        )
        .await;
        return false;
    }
    let secure = session.secure();
    let websocket = session.is_websocket_upgrade();
    // Behind a trusted proxy (TLS ended there), the site the browser sees
    // is the one the proxy says. Worked out only for a call that has to
    // show its `Origin`.
    let own = || {
        let from_proxy = crate::upstream::trusted(&cfg, client.ip());
        own_origin(&headers, secure, from_proxy)
    };
    if let Err(why) = same_site(&method, &headers, own, websocket) {
        tracing::info!(%client, %method, why, "cross-site call refused");
        session.close_after();
        respond_simple(
            session,
            403,
            "Forbidden",
            "Calls that change something are accepted only from this site's own pages.",
        )
        .await;
        return false;
    }
    // `rain.f` and `rain.page` (Wicket's Ajax calls) are ours; the rest of
    // the query is the origin's.
    let (own, ajax) = split_query(query.as_deref());
    let invalid = "This call's path is invalid.";
    let (origin, url) = match origin_target(&cfg, client, rest, own.as_deref(), "call", invalid) {
        Ok(t) => t,
        Err((status, title, message)) => {
            return respond_simple(session, status, title, message).await
        }
    };
    if websocket {
        return Box::pin(relay_websocket(
            app, session, client, rest, &origin, &url, &headers,
        ))
        .await;
    }
    // The body whole first: a slow upload holds no origin connection.
    // A state-changing call goes as an upload even when empty: an upload is
    // never sent twice.
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let body = if session.has_body() || !safe {
        match read_whole_body(session, cfg.server.max_body, cfg.server.body_timeout).await {
            Ok(b) => Some(b),
            Err(refusal) => return refuse_body(session, refusal).await,
        }
    } else {
        None
    };
    let passed = pass(
        app,
        session,
        client,
        &headers,
        &origin,
        &url,
        format!("/_rain/o/{rest}"),
        ASKED,
        "call",
    )
    .await;
    let Passed {
        user,
        browser,
        headers: mut out,
        path_and_query,
    } = match passed {
        Ok(p) => p,
        Err(keep) => return keep,
    };
    if ajax.is_some() && origin.kind == OriginKind::Wicket {
        // An Ajax answer is read and rewritten here: in a coding rain-edge
        // decodes, whatever the browser accepts.
        out.retain(|(n, _)| n != http::header::ACCEPT_ENCODING);
        out.push((
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        ));
    }
    let request = OriginRequest::passed(
        &origin,
        method.as_str(),
        &path_and_query,
        out,
        cfg.fragments.max_bytes,
        user.as_ref().map(|u| u.id.as_str()),
    );
    // The origin's timeout bounds the wait for the answer's head.
    let exchange = async {
        match &body {
            Some(b) => {
                let mut upload = app
                    .client
                    .open_upload(&request, Some(b.len() as u64))
                    .await?;
                upload.write(b).await?;
                upload.finish().await
            }
            None => app.client.open(&request).await,
        }
    };
    let what = (
        "call",
        "The call could not be made.",
        "The call was not answered in time.",
    );
    let ex = match opened_or_answer(session, &origin, what, exchange).await {
        Ok(ex) => ex,
        Err(keep) => return keep,
    };
    save_cookies(
        user.as_deref(),
        &origin.name,
        &url,
        &ex.set_cookies(),
        "call",
    )
    .await;
    // Wicket's Ajax answers: their components' markup rewritten like the
    // fragment's, `Ajax-Location` into the page.
    let rewrite = ajax
        .filter(|_| origin.kind == OriginKind::Wicket)
        .map(|(id, page)| {
            std::sync::Arc::new(FragmentRewrite {
                id,
                origin: origin.name.clone(),
                base: origin.url.clone(),
                fragment_url: url.clone(),
                kind: origin.kind,
                page: std::sync::Arc::new(page),
                css_scope: origin.css_scope,
                class_prefix: origin.class_prefix.clone(),
                page_read: Default::default(),
            })
        });
    if let Some(rw) = rewrite.filter(|_| is_ajax_response(&ex)) {
        return Box::pin(ajax_answer(
            session,
            ex,
            &origin,
            rw,
            &cfg,
            &browser.request_id,
        ))
        .await;
    }
    let Some(mut h) = answer_head(&ex, &origin, &url) else {
        ex.finish();
        return respond_simple(
            session,
            502,
            "Bad Gateway",
            "The answer redirects nowhere this site can send you.",
        )
        .await;
    };
    let status = ex.status();
    let bodyless = method == Method::HEAD || status == 204 || status == 304;
    h.insert("x-request-id", browser.request_id.as_str());
    session.write_head(h);
    if bodyless {
        ex.finish();
        return session.finish_body().await.is_ok();
    }
    // The head goes at once: a stream (server-sent events) is open for the
    // browser before its first event.
    if session.send_head().await.is_err() {
        return false;
    }
    // Server-sent events may pause between events: the body may run as long
    // as something comes within the idle timeout.
    relay(
        session,
        ex,
        &origin,
        cfg.server.idle_timeout.max(origin.timeout),
    )
    .await
}

/// Whether a call may act for the user: a safe method always; a
/// state-changing one or a WebSocket upgrade unless its `Origin` is another site's (scheme, host
/// and port other than the edge's own) or its `Sec-Fetch-Site` says it came
/// from another site. A request with neither header is let through (no
/// browser leaves both out of a cross-site call).
fn same_site(
    method: &Method,
    headers: &http::HeaderMap,
    own: impl FnOnce() -> Option<url::Origin>,
    websocket: bool,
) -> Result<(), &'static str> {
    if !websocket && matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if !site.eq_ignore_ascii_case(b"same-origin") && !site.eq_ignore_ascii_case(b"none") {
            return Err("Sec-Fetch-Site is not same-origin");
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let own = own().ok_or("no Host to compare the Origin with")?;
        let theirs = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .map(|u| u.origin())
            .ok_or("the Origin is not a URL (or is null)")?;
        if theirs != own {
            return Err("the Origin is another site");
        }
    }
    Ok(())
}

/// The edge's own origin as the browser sees it: the request's scheme and
/// its `Host`.
fn own_origin(headers: &http::HeaderMap, secure: bool, from_proxy: bool) -> Option<url::Origin> {
    let forwarded = |name: &str| {
        from_proxy
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let host = match forwarded("x-forwarded-host") {
        Some(h) => h,
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if secure => "https",
        _ => "http",
    };
    url::Url::parse(&format!("{scheme}://{host}/"))
        .ok()
        .map(|u| u.origin())
}

/// The head passed to the browser: the origin's status and fields (but
/// hop-by-hop ones and `Set-Cookie`), a `Location` under the origin mapped
/// under the call prefix, one elsewhere passed on when it is a valid
/// absolute URL. `None` when a location leads nowhere valid.
fn answer_head(
    ex: &Exchange,
    origin: &crate::config::Origin,
    url: &url::Url,
) -> Option<ResponseHead> {
    let mut h = ResponseHead::new(ex.status())?;
    let Some(src) = ex.headers() else {
        return Some(h);
    };
    // Fields the origin's `Connection` names are hop-by-hop too.
    let named: Vec<String> = src
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in src {
        let n = name.as_str();
        if KEPT_BACK.contains(&n)
            || n.starts_with("access-control-")
            || named.iter().any(|t| t == n)
            || n == "location"
            || n == "ajax-location"
        {
            continue;
        }
        let _ = h.append(n, value.clone());
    }
    let under = |l: &str, hash: &str| format!("{}{l}{hash}", call_base(&origin.name));
    map_locations(src, &mut h, origin, url, under, "call redirect refused")?;
    // The origin's answers are served from the edge's own site, where every
    // origin's hidden session is at hand: never sniffed into HTML, and an
    // HTML answer opened as a page runs sandboxed (no scripts, no cookies).
    let _ = h.insert("x-content-type-options", "nosniff");
    let html = src
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| crate::rewrite::starts_with_ci(t.trim(), "text/html"));
    if html {
        let _ = h.insert("content-security-policy", "sandbox");
    }
    Some(h)
}

/// The fields of a WebSocket handshake passed to the origin.
const WEBSOCKET: &[&str] = &[
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// A WebSocket through rain-edge: the handshake goes to the origin with the
/// user's jar (over HTTP/1.1, on a connection of its own that holds a place
/// among the origin's `max_connections` while it lasts); when the origin
/// switches protocols, the browser gets its `101` and the frames are relayed
/// both ways as they come until either side closes or nothing passes for
/// `idle_timeout`. Any other answer is passed on as a call's.
async fn relay_websocket(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    rest: &str,
    origin: &std::sync::Arc<crate::config::Origin>,
    url: &url::Url,
    headers: &http::HeaderMap,
) -> bool {
    let snap = app.snapshot();
    let cfg = &snap.cfg;
    let passed = pass(
        app,
        session,
        client,
        headers,
        origin,
        url,
        format!("/_rain/o/{rest}"),
        WEBSOCKET,
        "websocket",
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
    let request = OriginRequest::passed(
        origin,
        "GET",
        &path_and_query,
        out,
        cfg.fragments.max_bytes,
        user.as_ref().map(|u| u.id.as_str()),
    );
    let what = (
        "WebSocket",
        "The WebSocket could not be opened.",
        "The WebSocket was not answered in time.",
    );
    let upgraded = match opened_or_answer(session, origin, what, app.client.open_upgrade(&request))
        .await
    {
        Ok(Ok(up)) => up,
        Ok(Err(ex)) => {
            // The origin did not switch: its answer, as a call's.
            save_cookies(
                user.as_deref(),
                &origin.name,
                url,
                &ex.set_cookies(),
                "call",
            )
            .await;
            let Some(mut h) = answer_head(&ex, origin, url) else {
                ex.finish();
                return respond_simple(session, 502, "Bad Gateway", "The WebSocket was refused.")
                    .await;
            };
            h.insert("x-request-id", browser.request_id.as_str());
            session.write_head(h);
            return relay(session, ex, origin, origin.timeout).await;
        }
        Err(keep) => return keep,
    };
    let set: Vec<String> = upgraded
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    save_cookies(user.as_deref(), &origin.name, url, &set, "WebSocket").await;
    let metrics = &app.metrics;
    metrics
        .websockets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = crate::telemetry::InFlight::enter(&metrics.websockets_open);
    // `upgraded` holds the origin connection's place until the end.
    let mut upgraded = upgraded;
    let leftover = std::mem::take(&mut upgraded.leftover);
    match session
        .relay_upgraded(
            &upgraded.headers,
            &mut upgraded.io,
            leftover,
            cfg.server.idle_timeout,
        )
        .await
    {
        Ok((up, down)) => {
            tracing::debug!(origin = %origin.name, up, down, "WebSocket closed");
        }
        Err(e) => tracing::debug!(origin = %origin.name, error = %e, "WebSocket broken off"),
    }
    false
}

/// A call's query without rain-edge's parameters, and the fragment and
/// page a Wicket Ajax call belongs to (`rain.f`, `rain.page`), when it
/// names them validly.
fn split_query(query: Option<&str>) -> (Option<String>, Option<(String, PageUrl)>) {
    let (own, id, page) = super::form::split_rain_target(query);
    let context = match (id, page) {
        (Some(id), Some(page)) if crate::aggregate::valid_id(&id) && stays_on_edge(&page) => {
            let (path, q) = super::form::split_back(&page);
            Some((id, PageUrl::new(&path, q.as_deref())))
        }
        _ => None,
    };
    ((!own.is_empty()).then(|| own.join("&")), context)
}

/// Whether an answer is Wicket's Ajax answer: `<ajax-response>` as XML, or
/// an `Ajax-Location` (the page is stale).
fn is_ajax_response(ex: &Exchange) -> bool {
    ex.status() == 200
        && (ex.header_str("ajax-location").is_some()
            || ex
                .header_str("content-type")
                .is_some_and(|t| t.to_ascii_lowercase().contains("xml")))
}

/// Sends Wicket's Ajax answer with each component's markup rewritten like
/// its fragment's (classes, links, resources, forms), read whole first
/// (bounded by `max_bytes`, within the origin's timeout), and its
/// `Ajax-Location` (a stale page) mapped to the page with the fragment
/// there.
async fn ajax_answer(
    session: &mut BrowserConn,
    ex: Exchange,
    origin: &crate::config::Origin,
    rw: std::sync::Arc<FragmentRewrite>,
    cfg: &crate::config::Config,
    request_id: &str,
) -> bool {
    let max = cfg.fragments.max_bytes;
    let encoding = ex.header_str("content-encoding");
    let content_type = ex.header_str("content-type");
    let ajax_location = ex.header_str("ajax-location");
    let read = tokio::time::timeout(origin.timeout, crate::upstream::read_whole(ex, max)).await;
    let decoded = match read {
        Ok(Ok(raw)) => crate::upstream::decode_content(raw, encoding.as_deref(), max)
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no whole answer within {:?}", origin.timeout)),
    };
    let xml = match decoded {
        Ok(d) => crate::upstream::to_utf8(d, content_type.as_deref()),
        Err(error) => {
            tracing::warn!(origin = %origin.name, %error, "Ajax answer broken off, too large, late or undecodable");
            return respond_simple(
                session,
                502,
                "Bad Gateway",
                "The Ajax answer could not be read.",
            )
            .await;
        }
    };
    let xml = String::from_utf8_lossy(&xml);
    let memory = cfg.fragments.max_rewrite_memory;
    let markup = |part: AjaxPart, html: &str| -> String {
        if part == AjaxPart::Script {
            return rw.wicket_script(html).unwrap_or_else(|| html.to_string());
        }
        match crate::aggregate::split_fragment(html.as_bytes(), rw.clone(), memory) {
            Ok(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    crate::aggregate::Item::Static(b) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    // No fragments inside an Ajax answer.
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "Ajax component dropped");
                String::new()
            }
        }
    };
    let body = map_components(&xml, markup).unwrap_or_else(|| xml.into_owned());
    let Some(mut h) = ResponseHead::new(200) else {
        return false;
    };
    h.insert("content-type", "text/xml; charset=utf-8");
    h.insert("cache-control", "no-cache, no-store");
    h.insert("x-request-id", request_id);
    if let Some(loc) = ajax_location {
        match rw.link(&loc) {
            Some(page) if stays_on_edge(&page) => {
                h.insert("ajax-location", page);
            }
            _ => {
                tracing::warn!(origin = %origin.name, location = %loc.escape_debug(), "Ajax-Location refused")
            }
        }
    }
    h.insert("content-length", body.len().to_string());
    session.write_head(h);
    if session
        .write_body(bytes::Bytes::from(body), true)
        .await
        .is_err()
    {
        return false;
    }
    true
}
