//! The public listeners' [`Handler`]: each request counted and logged, then
//! sent by its path to a resource (`/_rain/r/`), a form (`/_rain/f/`), a
//! client-side call (`/_rain/o/`) or a page.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use super::app::App;
use super::page::{html_page, render, respond_bytes, respond_simple, PageRequest};
use super::{calls, form, resource};
use crate::http::{BrowserConn, Handler, HeadLimits, Settings};
use crate::telemetry::{access_line, Access, InFlight, PageLog, RequestKind, PAGE_LOG};

/// The edge's router.
pub struct Router {
    app: Arc<App>,
}

impl Router {
    /// Serves the public listeners with `app`.
    pub fn new(app: Arc<App>) -> Router {
        Router { app }
    }
}

#[async_trait::async_trait]
impl Handler for Router {
    fn settings(&self) -> Settings {
        let snap = self.app.snapshot();
        let s = &snap.cfg.server;
        Settings {
            limits: HeadLimits {
                max_bytes: usize::try_from(s.max_header_bytes).unwrap_or(usize::MAX),
                max_fields: s.max_headers,
            },
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            send_timeout: s.send_timeout,
            compression: s.compression,
        }
    }

    async fn serve(&self, conn: &mut BrowserConn) -> bool {
        let app = &self.app;
        let client = conn.client_addr();
        let started = Instant::now();
        let kind = RequestKind::of(conn.request().uri.path());
        // The request id is recorded once known (a trusted proxy's, or new).
        let span = tracing::info_span!("request", id = tracing::field::Empty);
        let log = Arc::new(PageLog::new());
        let kept = {
            let _in_flight = InFlight::enter(&app.metrics.requests_in_flight);
            PAGE_LOG
                .scope(
                    log.clone(),
                    dispatch(app, conn, client).instrument(span.clone()),
                )
                .await
        };
        let elapsed = started.elapsed();
        let status = conn.status();
        if status != 0 {
            app.metrics.response(kind, status, elapsed);
        }
        let req = conn.request();
        let access = Access {
            client,
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            kind,
            elapsed,
        };
        access_line(&span, &access, &log);
        // Every page answered is kept for its waterfall (`/pages`); the log
        // gives its fragments up to it (after the access line).
        if kind == RequestKind::Page && status != 0 {
            if let Some(record) = log.record(req.uri.path(), status, elapsed) {
                app.pages.push(record);
            }
        }
        kept
    }
}

/// Serves one request. Returns whether the connection may be kept alive.
async fn dispatch(app: &App, session: &mut BrowserConn, client: SocketAddr) -> bool {
    let req = session.request();
    let page = PageRequest {
        method: req.method.clone(),
        path: req.uri.path().to_string(),
        query: req.uri.query().map(str::to_string),
        headers: req.headers.clone(),
        submitted: None,
    };

    if let Some(rest) = page.path.strip_prefix("/_rain/r/") {
        let rest = rest.to_string();
        // Boxed, as is the form path: inline, the larger of them would set
        // the size of every connection's task, page or not.
        return Box::pin(resource::serve(app, session, client, &rest, page)).await;
    }
    if let Some(rest) = page.path.strip_prefix("/_rain/f/") {
        let rest = rest.to_string();
        return Box::pin(form::serve(app, session, client, &rest, page)).await;
    }
    if let Some(rest) = page.path.strip_prefix("/_rain/o/") {
        let rest = rest.to_string();
        return Box::pin(calls::serve(app, session, client, &rest, page)).await;
    }
    if page.path == "/_rain" || page.path.starts_with("/_rain/") {
        return respond_simple(session, 404, "Not Found", "Nothing is served here.").await;
    }
    if page.method != http::Method::GET && page.method != http::Method::HEAD {
        let body = Bytes::from(html_page(
            "Method Not Allowed",
            "Pages answer GET and HEAD.",
        ));
        respond_bytes(session, 405, body, &[("allow", "GET, HEAD".to_string())]).await;
        return false;
    }
    render(app, session, client, page).await
}
