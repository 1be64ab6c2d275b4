//! `/_rain/f/{origin}/{path}?...&rain.f={id}&rain.page={page}`: a form of a
//! fragment, submitted through rain-edge to its origin with the user's
//! hidden session (CONTRACT §8). The POST reaches the origin exactly once
//! (never retried, its redirects never followed with the body). A redirect
//! inside the origin sends the browser back to the page with the fragment at
//! the redirect target (303, Post/Redirect/Get); an HTML answer (2xx, or a 4xx
//! such as a validation error) is shown as that fragment inside the page,
//! with the origin's 4xx status; a 5xx or a failure shows its fallback with
//! 502 (504 on timeout).

use std::net::SocketAddr;

use super::conn::BrowserConn;
use bytes::{Bytes, BytesMut};

use super::client::OriginRequest;
use super::forward::BrowserContext;
use super::page::{render, respond_bytes, respond_simple, session_or_503, PageRequest};
use super::server::App;
use crate::aggregate::{valid_id, Submitted, SubmittedOutcome};
use crate::config::FailureClass;
use crate::rewrite::{classify, is_rain_param, resolve_src, PageUrl, Target, UrlContext};

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Answers 413 and closes: the rest of the body is not read.
async fn too_large(session: &mut BrowserConn) -> bool {
    respond_simple(
        session,
        413,
        "Content Too Large",
        "The form is larger than this site accepts.",
    )
    .await;
    false
}

/// Serves one form submission. Returns whether the connection may be kept.
pub async fn serve(
    app: &App,
    session: &mut BrowserConn,
    client: SocketAddr,
    rest: &str,
    page: PageRequest,
) -> bool {
    let snap = app.snapshot();
    let cfg = snap.cfg.clone();
    if page.method != http::Method::POST {
        respond_simple(
            session,
            405,
            "Method Not Allowed",
            "Forms are submitted with POST here.",
        )
        .await;
        return false;
    }
    // rain.f (the fragment) and rain.page (where to come back) are ours;
    // the rest of the query is the form action's own.
    let mut id = None;
    let mut back = None;
    let mut own = Vec::new();
    for kv in page
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match decode(k).as_str() {
            "rain.f" => id = Some(decode(v)),
            "rain.page" => back = Some(decode(v)),
            _ if is_rain_param(k) => {}
            _ => own.push(kv),
        }
    }
    let (Some(id), Some(back)) = (id.filter(|i| valid_id(i)), back) else {
        return respond_simple(
            session,
            400,
            "Bad Request",
            "This form submission is incomplete.",
        )
        .await;
    };
    if !back.starts_with('/') || back.starts_with("//") || back.contains('\\') {
        return respond_simple(
            session,
            400,
            "Bad Request",
            "This form submission is invalid.",
        )
        .await;
    }
    let (name, location) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(origin) = cfg.origins.get(name).cloned() else {
        return respond_simple(session, 404, "Not Found", "No such origin.").await;
    };
    let wanted = if own.is_empty() {
        location.to_string()
    } else {
        format!("{location}?{}", own.join("&"))
    };
    let url = match resolve_src(&origin.url, &wanted) {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(%client, error = %e, "rejected form path");
            return respond_simple(session, 400, "Bad Request", "This form path is invalid.").await;
        }
    };
    // A declared length over max_body is refused before anything is sent.
    let length = page
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > cfg.server.max_body) {
        return too_large(session).await;
    }
    let user = match session_or_503(app, &cfg, &page.headers, session, "form").await {
        Ok(s) => s,
        Err(keep) => return keep,
    };
    let (back_path, back_query) = match back.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (back.clone(), None),
    };
    let secure = session.request().is_some_and(|r| r.secure);
    let browser = BrowserContext::new(&cfg, &page.headers, Some(client.ip()), secure, back.clone());
    let mut headers = browser
        .headers_with_jar(&origin, &url, &id, user.as_deref())
        .await;
    if let Some(ct) = page.headers.get(http::header::CONTENT_TYPE) {
        headers.push((http::header::CONTENT_TYPE, ct.clone()));
    }
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let request = OriginRequest {
        origin: &origin,
        method: "POST",
        path_and_query: &path_and_query,
        headers,
        max_bytes: cfg.fragments.max_bytes,
        on_head: None,
    };
    // The body is relayed as it arrives (bounded by max_body; each step under
    // the origin's deadline). Cut off, the origin never sees a whole request.
    let mut upload = match tokio::time::timeout(
        origin.timeout,
        app.client.open_upload(&request, length),
    )
    .await
    {
        Ok(Ok(u)) => Some(u),
        Ok(Err(e)) => {
            tracing::warn!(origin = %origin.name, error = %e, "form submission failed");
            None
        }
        Err(_) => None,
    };
    let mut sent: u64 = 0;
    loop {
        // Each piece of the body must come within header_timeout: a body
        // that trickles or stalls does not hold the connection forever.
        let read = tokio::time::timeout(cfg.server.header_timeout, session.read_body()).await;
        let chunk = match read {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                // Dropping the upload cuts it off: the origin never sees a
                // whole request.
                drop(upload);
                tracing::debug!(%client, error = %e, "form body broken");
                respond_simple(
                    session,
                    400,
                    "Bad Request",
                    "The form's body is not validly framed.",
                )
                .await;
                return false;
            }
            Err(_) => {
                drop(upload);
                tracing::debug!(%client, "form body stalled");
                respond_simple(
                    session,
                    408,
                    "Request Timeout",
                    "The form's body did not arrive in time.",
                )
                .await;
                return false;
            }
        };
        sent += chunk.len() as u64;
        if sent > cfg.server.max_body {
            drop(upload);
            return too_large(session).await;
        }
        if let Some(u) = upload.as_mut() {
            match tokio::time::timeout(origin.timeout, u.write(&chunk)).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::warn!(origin = %origin.name, "the origin stopped taking the form body");
                    upload = None;
                }
            }
        }
    }
    let answer = tokio::time::timeout(origin.timeout, async {
        let Some(upload) = upload else {
            return Err(crate::aggregate::FetchFailure::Unavailable(
                "the form could not be sent".into(),
            ));
        };
        let mut ex = upload.finish().await?;
        if let Some(s) = &user {
            if let Err(e) = s.record(&origin.name, &url, &ex.set_cookies()).await {
                tracing::warn!(error = %e, "form cookies not saved");
            }
        }
        let status = ex.status();
        let location = ex.header_str("location");
        let content_type = ex.header_str("content-type");
        let encoding = ex.header_str("content-encoding");
        let mut raw = BytesMut::new();
        while let Some(c) = ex.chunk().await? {
            if (raw.len() + c.len()) as u64 > cfg.fragments.max_bytes {
                return Err(crate::aggregate::FetchFailure::Error(
                    "answer too large".into(),
                ));
            }
            raw.extend_from_slice(&c);
        }
        ex.finish();
        let body = super::decode::decode_content(
            raw.freeze(),
            encoding.as_deref(),
            cfg.fragments.max_bytes,
        )
        .map_err(|e| crate::aggregate::FetchFailure::Error(e.to_string()))?;
        Ok((
            status,
            location,
            super::decode::to_utf8(body, content_type.as_deref()),
        ))
    })
    .await;
    let back_page = PageUrl::new(&back_path, back_query.as_deref());
    let (outcome, status): (SubmittedOutcome, u16) = match answer {
        Ok(Ok((status, Some(loc), _))) if (300..400).contains(&status) => {
            let ctx = UrlContext {
                origin: &origin.name,
                base: &origin.url,
                fragment_url: &url,
                kind: origin.kind,
            };
            let to = match classify(&ctx, &loc) {
                Target::Origin { location, hash } => {
                    format!("{}{hash}", back_page.with_nav(&id, &location))
                }
                Target::Foreign => loc,
            };
            return respond_bytes(session, 303, Bytes::new(), &[("location", to)]).await;
        }
        Ok(Ok((status, _, body))) if (200..300).contains(&status) => (
            SubmittedOutcome::Content {
                url: url.clone(),
                body,
            },
            200,
        ),
        Ok(Ok((status, _, body))) if (400..500).contains(&status) => (
            SubmittedOutcome::Content {
                url: url.clone(),
                body,
            },
            status,
        ),
        Ok(Ok((status, ..))) => {
            tracing::warn!(origin = %origin.name, status, "form answered with an error");
            (SubmittedOutcome::Failed(FailureClass::Error), 502)
        }
        Ok(Err(e)) => {
            tracing::warn!(origin = %origin.name, error = %e, "form submission failed");
            (SubmittedOutcome::Failed(e.class()), 502)
        }
        Err(_) => (SubmittedOutcome::Failed(FailureClass::Timeout), 504),
    };
    let page = PageRequest {
        method: http::Method::GET,
        path: back_path,
        query: back_query,
        headers: page.headers,
        submitted: Some((Submitted { id, outcome }, Some(status))),
    };
    render(app, session, client, page).await
}
