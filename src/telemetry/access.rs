//! The access log: a line per request, target `rain_edge::access` (pages at
//! `info`, with their fragments' outcomes; resources and forms at `debug`).

use std::net::SocketAddr;
use std::time::Duration;

use super::metrics::{PageLog, RequestKind};

/// One request as the access log sees it.
pub struct Access<'a> {
    /// The browser's address.
    pub client: SocketAddr,
    /// The method.
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The answer's status (0: none was written).
    pub status: u16,
    /// What kind of request it was.
    pub kind: RequestKind,
    /// How long it took.
    pub elapsed: Duration,
}

/// Writes the access line of one request, inside its `span`.
pub fn access_line(span: &tracing::Span, a: &Access<'_>, log: &PageLog) {
    let _in_request = span.enter();
    let ms = a.elapsed.as_secs_f64() * 1000.0;
    let (client, method, path, status) = (a.client, a.method, a.path, a.status);
    if a.kind == RequestKind::Page {
        tracing::info!(target: "rain_edge::access", %client, %method, %path,
            status, ms, fragments = %log.summary(), "page");
    } else {
        tracing::debug!(target: "rain_edge::access", %client, %method, %path,
            status, ms, kind = ?a.kind, "request");
    }
}
