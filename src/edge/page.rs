//! A page: find the route, get the layout (from the templates, or fetched
//! from an origin), start every fragment, decide the status (the layout's,
//! or a `primary` fragment's), then stream the page. The only place where
//! aggregation outcomes become HTTP statuses.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::app::App;
use crate::aggregate::{
    fetch_following, needs_user, split, within_deadline, FetchRequest, Fetched, Item, Outcome,
    Page, PageContext, PageWriteError, PageWriter, Submitted,
};
use crate::config::Config;
use crate::config::{FailureClass, RouteTarget};
use crate::http::{BrowserConn, ResponseHead};
use crate::rewrite::{nav_value_ok, resolve_src, strip_rain_params, PageUrl};
use crate::session::{session_cookie, set_cookie_header, PageSession, SessionId};
use crate::telemetry::PageLog;
use crate::upstream::{BrowserContext, RequestSource, SessionState};

/// The user's existing session, if the browser sent a live one (resources
/// and form posts never start one). An unreachable store is an error.
pub async fn lookup_session(
    app: &App,
    cfg: &Config,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<PageSession>>, crate::session::StoreError> {
    let cookies = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Some(id) = session_cookie(cookies, &cfg.session.cookie_name).and_then(SessionId::parse)
    else {
        return Ok(None);
    };
    Ok(app
        .store
        .touch(&id)
        .await?
        .then(|| Arc::new(PageSession::new(id, false, app.store.clone()))))
}

/// The user's existing session for a resource or a form post, or, when the
/// store cannot be reached, the 503 answer already written (`Err` holds
/// whether the connection may be kept).
pub async fn session_or_503(
    app: &App,
    cfg: &Config,
    headers: &http::HeaderMap,
    session: &mut BrowserConn,
    what: &str,
) -> Result<Option<Arc<PageSession>>, bool> {
    match lookup_session(app, cfg, headers).await {
        Ok(s) => Ok(s),
        Err(e) => {
            app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "session store unreachable for a {what}");
            Err(respond_simple(
                session,
                503,
                "Service Unavailable",
                "Sessions are unavailable; try again shortly.",
            )
            .await)
        }
    }
}

/// Finds the user's session, or starts one. An unknown or malformed id is
/// never adopted: a new random one replaces it. A store that cannot be
/// reached gives [`SessionState::Unavailable`] and no new cookie.
async fn resolve_session(app: &App, cfg: &Config, headers: &http::HeaderMap) -> SessionState {
    let cookies = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if let Some(id) = session_cookie(cookies, &cfg.session.cookie_name).and_then(SessionId::parse) {
        match app.store.touch(&id).await {
            Ok(true) => {
                return SessionState::Active(Arc::new(PageSession::new(
                    id,
                    false,
                    app.store.clone(),
                )))
            }
            Ok(false) => {}
            Err(e) => {
                app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "session store unreachable; serving without sessions");
                return SessionState::Unavailable;
            }
        }
    }
    let id = SessionId::generate();
    match app.store.create(&id).await {
        Ok(()) => {
            app.metrics.sessions_created.fetch_add(1, Ordering::Relaxed);
            SessionState::Active(Arc::new(PageSession::new(id, true, app.store.clone())))
        }
        Err(e) => {
            app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "session store unreachable; serving without sessions");
            SessionState::Unavailable
        }
    }
}

/// Writes page chunks to the browser, one flushed HTTP chunk each.
struct SessionWriter<'s>(&'s mut BrowserConn);

#[async_trait]
impl PageWriter for SessionWriter<'_> {
    async fn write(&mut self, data: Bytes) -> Result<(), PageWriteError> {
        self.0
            .write_body(data, false)
            .await
            .map_err(|e| PageWriteError(e.to_string()))
    }

    async fn write_last(&mut self, data: Bytes) -> Result<(), PageWriteError> {
        // With the head still held, the whole page is here: it goes with
        // its length (`BrowserConn::write_body`).
        self.0
            .write_body(data, true)
            .await
            .map_err(|e| PageWriteError(e.to_string()))
    }

    async fn closed(&mut self) {
        self.0.client_gone().await
    }
}

pub(super) fn html_page(title: &str, message: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n"
    )
}

/// Answers with a small complete HTML page (only after the request head was
/// read). Returns whether it was written.
pub async fn respond_simple(
    session: &mut BrowserConn,
    status: u16,
    title: &str,
    message: &str,
) -> bool {
    let body = Bytes::from(html_page(title, message));
    respond_bytes(session, status, body, &[]).await
}

pub(crate) async fn respond_bytes(
    session: &mut BrowserConn,
    status: u16,
    body: Bytes,
    extra: &[(&str, String)],
) -> bool {
    // Boxed: the rare answers' writes would otherwise be part of every
    // connection's task, and set its size while its page waits on fragments.
    Box::pin(respond_bytes_now(session, status, body, extra)).await
}

async fn respond_bytes_now(
    session: &mut BrowserConn,
    status: u16,
    body: Bytes,
    extra: &[(&str, String)],
) -> bool {
    let Some(mut h) = ResponseHead::new(status) else {
        return false;
    };
    let ok = h.insert("content-type", "text/html; charset=utf-8")
        && h.insert("content-length", body.len().to_string())
        && extra.iter().all(|(k, v)| h.insert(k, v.as_str()));
    if !ok {
        return false;
    }
    session.write_head(h);
    session.write_body(body, true).await.is_ok()
}

/// A page to compose: the browser's request, or the page a form was
/// submitted from (with the origin's answer to show in its fragment).
pub struct PageRequest {
    /// The browser's method (GET or HEAD for pages; POST for a form answer).
    pub method: http::Method,
    /// The page's path.
    pub path: String,
    /// The page's raw query.
    pub query: Option<String>,
    /// The browser's request headers.
    pub headers: http::HeaderMap,
    /// A form answer to show in place of one fragment, with the status it gives.
    pub submitted: Option<(Submitted, Option<u16>)>,
}

/// `fut`, unless the browser goes away first (then `None`: dropping `fut`
/// cancels what it was waiting on, its origin connections closed).
pub(crate) async fn unless_gone<T>(
    session: &mut BrowserConn,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        v = fut => Some(v),
        () = session.client_gone() => None,
    }
}

/// Navigation state: every `rain.*` value must be a location below an
/// origin's base; anything else (another host, climbing out) is refused.
fn navigation_ok(page: &PageUrl, client: SocketAddr) -> bool {
    match page
        .nav_entries()
        .into_iter()
        .find(|(_, v)| !nav_value_ok(v))
    {
        Some((id, bad)) => {
            tracing::info!(%client, fragment = %id, value = %bad, "rejected navigation state");
            false
        }
        None => true,
    }
}

/// The fields every answer on a page's route carries: its request id,
/// `Cache-Control`, and the session cookie when one was started.
///
/// A composed page is never stored by a shared cache (docs/SECURITY.md): it
/// may carry the user's fragments or session cookie. Only a page whose
/// fragments are all `public` (nothing of the user is fetched, nested
/// fragments included: they get no session either), and not a form's
/// answer, may be kept, and then revalidated each time.
fn page_fields(
    cfg: &Config,
    request_id: String,
    user: &SessionState,
    submitted: bool,
) -> Vec<(&'static str, String)> {
    let shared = matches!(user, SessionState::None) && !submitted;
    let cache_control = if shared {
        "no-cache"
    } else {
        "private, no-store"
    };
    let mut fields = vec![
        ("x-request-id", request_id),
        ("cache-control", cache_control.to_string()),
    ];
    if let SessionState::Active(s) = user {
        if s.created {
            fields.push((
                "set-cookie",
                set_cookie_header(&cfg.session.cookie_name, &s.id, cfg.session.secure),
            ));
        }
    }
    fields
}

/// Composes and streams a page.
pub async fn render(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    page: PageRequest,
) -> bool {
    let snap = app.snapshot();
    let cfg = snap.cfg.clone();
    // The whole page, origin layout included, ends by this instant.
    let deadline = std::time::Instant::now() + cfg.fragments.page_timeout;
    let PageRequest {
        method,
        path,
        query,
        headers,
        submitted,
    } = page;
    let (submitted, submitted_status) = match submitted {
        Some((s, status)) => (Some(s), status),
        None => (None, None),
    };
    let Some((route, rest)) = cfg.route_for(&path) else {
        return respond_simple(session, 404, "Not Found", "No page is routed here.").await;
    };
    if method != http::Method::GET && method != http::Method::HEAD {
        let body = Bytes::from(html_page(
            "Method Not Allowed",
            "Pages answer GET and HEAD.",
        ));
        respond_bytes(session, 405, body, &[("allow", "GET, HEAD".to_string())]).await;
        return false;
    }
    let page_url_state = Arc::new(PageUrl::new(&path, query.as_deref()));
    if !navigation_ok(&page_url_state, client) {
        return respond_simple(
            session,
            400,
            "Bad Request",
            "A navigation parameter of this page is invalid.",
        )
        .await;
    }
    let page_query = strip_rain_params(query.as_deref());
    let page_url = match &page_query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let secure = session.secure();
    let browser = Arc::new(BrowserContext::new(
        &cfg,
        &headers,
        Some(client.ip()),
        secure,
        page_url,
    ));
    let request_id = browser.request_id.clone();
    if let Some(log) = PageLog::current() {
        log.set_request_id(&request_id);
    }

    // The session is looked up (or made) only when a fragment needs the user.
    let local_items = match &route.target {
        RouteTarget::Layout(name) => match snap.templates.layout(name) {
            Some(items) => Some(items),
            None => {
                return respond_simple(
                    session,
                    500,
                    "Internal Server Error",
                    "The layout is missing.",
                )
                .await
            }
        },
        RouteTarget::Origin { .. } => None,
    };
    let user_session = match &local_items {
        Some(items) if !needs_user(items) => SessionState::None,
        _ => resolve_session(app, &cfg, &headers).await,
    };
    let mut extra = page_fields(&cfg, request_id, &user_session, submitted.is_some());
    let source = Arc::new(RequestSource {
        client: app.client.clone(),
        browser,
        session: user_session,
        metrics: app.metrics.clone(),
        log: PageLog::current(),
        stale: app.stale.clone(),
        coalescer: app.coalescer.clone(),
        cache: app.cache.clone(),
    });

    let layout_started = std::time::Instant::now();
    let (items, layout_status) = match local_items {
        Some(items) => (items, 200),
        None => match unless_gone(
            session,
            origin_layout(
                &cfg,
                &route.target,
                rest,
                page_query.as_deref(),
                source.as_ref(),
                deadline,
            ),
        )
        .await
        {
            None => return false,
            Some(found) => match found {
                Ok(found) => found,
                Err(Early::Redirect(status, location)) => {
                    extra.push(("location", location));
                    return respond_bytes(session, status, Bytes::new(), &extra).await;
                }
                Err(Early::Page(status, title, message)) => {
                    let body = Bytes::from(html_page(title, message));
                    return respond_bytes(session, status, body, &extra).await;
                }
            },
        },
    };

    extra.push((
        "server-timing",
        format!(
            "layout;dur={:.3}",
            layout_started.elapsed().as_secs_f64() * 1000.0
        ),
    ));
    let ctx = PageContext::new(
        cfg.clone(),
        snap.templates.clone(),
        source,
        page_query,
        page_url_state,
        submitted,
        deadline,
    );
    let page = Page::start(&ctx, &items);
    let status = submitted_status.unwrap_or(layout_status);
    stream_page(
        session,
        page,
        status,
        extra,
        method == http::Method::HEAD,
        client,
    )
    .await
}

/// Streams a started page: its status is `status` unless a `primary`
/// fragment failed (404, 504, 502) or redirected (its own status); the head goes out
/// with `fields`, then the page in document order.
async fn stream_page(
    session: &mut BrowserConn,
    mut page: Page,
    status: u16,
    mut fields: Vec<(&'static str, String)>,
    head_only: bool,
    client: SocketAddr,
) -> bool {
    let Some(primary) = unless_gone(session, page.primary_outcome()).await else {
        return false;
    };
    let status = match primary {
        Outcome::Ok => status,
        Outcome::Failed(FailureClass::NotFound) => 404,
        Outcome::Failed(FailureClass::Timeout) => 504,
        Outcome::Failed(_) => 502,
        Outcome::Redirect(redirect, location) => {
            // The origin's own status (301, 302, 303, 307, 308).
            fields.push(("location", location));
            return respond_bytes(session, redirect, Bytes::new(), &fields).await;
        }
    };
    let Some(mut h) = ResponseHead::new(status) else {
        return false;
    };
    // NOTE: HTTP/1.0 has no chunked coding: the connection streams the page
    // close-delimited and closes after it.
    let ok = h.insert("content-type", "text/html; charset=utf-8")
        && fields.iter().all(|(k, v)| h.append(k, v.as_str()));
    if !ok {
        return false;
    }
    session.write_head(h);
    if head_only {
        return session.finish_body().await.is_ok();
    }
    let mut writer = SessionWriter(session);
    if let Err(e) = page.write_to(&mut writer).await {
        tracing::debug!(%client, error = %e, "browser went away");
        return false;
    }
    session.finish_body().await.is_ok()
}

/// An answer given before any fragment is fetched.
enum Early {
    /// A redirect out of the layout's origin.
    Redirect(u16, String),
    /// A small error page: status, title, message.
    Page(u16, &'static str, &'static str),
}

/// Fetches and splits a layout served by an origin: the route's `src`, the
/// path below the route's prefix and the page's query (without `rain.*`).
/// Its status passes through; a failure is 502 (504 on timeout).
async fn origin_layout(
    cfg: &Config,
    target: &RouteTarget,
    rest: &str,
    page_query: Option<&str>,
    source: &RequestSource,
    deadline: std::time::Instant,
) -> Result<(Arc<Vec<Item>>, u16), Early> {
    let RouteTarget::Origin { origin, src } = target else {
        return Err(Early::Page(
            500,
            "Internal Server Error",
            "The route has no layout.",
        ));
    };
    let Some(origin) = cfg.origins.get(origin).cloned() else {
        return Err(Early::Page(
            502,
            "Bad Gateway",
            "The layout's origin is not configured.",
        ));
    };
    let mut layout_src = format!("{}{}", src.trim_end_matches('/'), rest);
    if layout_src.is_empty() || (rest.is_empty() && src.ends_with('/')) {
        layout_src = src.clone();
    }
    if let Some(q) = page_query {
        layout_src = format!("{layout_src}?{q}");
    }
    let url = resolve_src(&origin.url, &layout_src).map_err(|e| {
        tracing::info!(path = %layout_src, error = %e, "rejected path");
        Early::Page(400, "Bad Request", "This path cannot be served.")
    })?;
    let fetch = FetchRequest {
        origin: origin.clone(),
        url,
        fragment_id: "layout".to_string(),
        public: false,
        max_bytes: cfg.fragments.max_bytes,
        chain_cookies: Vec::new(),
        timeout: origin.timeout,
    };
    let wait = within_deadline(deadline, origin.timeout);
    let fetched = tokio::time::timeout(wait, fetch_following(source, fetch))
        .await
        .unwrap_or_else(|_| Fetched::Failed(FailureClass::Timeout, "layout timed out".into()));
    let (body, status) = match fetched {
        Fetched::Content { body, status, .. } | Fetched::ClientError { body, status } => {
            (body, status)
        }
        Fetched::Redirect(status, location) => return Err(Early::Redirect(status, location)),
        Fetched::Failed(class, reason) => {
            tracing::warn!(origin = %origin.name, class = class.key(), %reason, "layout failed");
            return Err(match class {
                FailureClass::Timeout => Early::Page(
                    504,
                    "Gateway Timeout",
                    "The page layout could not be loaded.",
                ),
                _ => Early::Page(502, "Bad Gateway", "The page layout could not be loaded."),
            });
        }
    };
    match split(&body, false, cfg.fragments.max_rewrite_memory) {
        Ok(items) => Ok((Arc::new(items), status)),
        Err(e) => {
            tracing::warn!(origin = %origin.name, error = %e, "layout could not be parsed");
            Err(Early::Page(
                502,
                "Bad Gateway",
                "The page layout could not be parsed.",
            ))
        }
    }
}
