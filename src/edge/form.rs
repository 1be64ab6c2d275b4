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

use bytes::{Bytes, BytesMut};

use super::app::App;
use super::page::{
    render, respond_bytes, respond_simple, session_or_503, unless_gone, PageRequest,
};
use crate::aggregate::{valid_id, Submitted, SubmittedOutcome};
use crate::config::FailureClass;
use crate::http::BrowserConn;
use crate::rewrite::{
    classify, foreign_location, is_rain_param, resolve_src, stays_on_edge, PageUrl, Target,
    UrlContext,
};
use crate::upstream::{decode_content, to_utf8, BrowserContext, OriginRequest};

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Answers 413 and closes: the rest of the body is not read.
async fn too_large(session: &mut BrowserConn) -> bool {
    refuse_body(session, BodyRefusal::TooLarge).await
}

/// Why a request body was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyRefusal {
    /// Over `max_body` (413).
    #[error("the body is larger than max_body")]
    TooLarge,
    /// Not whole within `body_timeout` (408).
    #[error("the body did not arrive within body_timeout")]
    Late,
    /// Broken framing or connection (400).
    #[error("the body is not validly framed: {0}")]
    Broken(String),
}

/// Reads the whole request body, at most `max` bytes, within `limit`.
pub(super) async fn read_whole_body(
    session: &mut BrowserConn,
    max: u64,
    limit: std::time::Duration,
) -> Result<Bytes, BodyRefusal> {
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_body().await.map_err(BodyRefusal::Broken)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(BodyRefusal::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(BodyRefusal::Late))
}

/// Answers a refused body (413, 408 or 400) and closes the connection.
pub(super) async fn refuse_body(session: &mut BrowserConn, refusal: BodyRefusal) -> bool {
    session.close_after();
    let (status, title, message) = match refusal {
        BodyRefusal::TooLarge => (
            413,
            "Content Too Large",
            "The form is larger than this site accepts.",
        ),
        BodyRefusal::Late => (
            408,
            "Request Timeout",
            "The form's body did not arrive in time.",
        ),
        BodyRefusal::Broken(_) => (400, "Bad Request", "The form's body is not validly framed."),
    };
    respond_simple(session, status, title, message).await;
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
    // rain.page becomes the Location of the answer: it must stay on this
    // host as every browser reads it (no `//`, backslash, tab or CR/LF).
    if !stays_on_edge(&back) {
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
    // The body is read whole first (bounded by max_body, within
    // body_timeout): a slow upload holds no origin connection, and a body cut
    // off never reaches the origin.
    let body = match read_whole_body(session, cfg.server.max_body, cfg.server.body_timeout).await {
        Ok(b) => b,
        Err(refusal) => {
            tracing::debug!(%client, error = %refusal, "form body refused");
            return refuse_body(session, refusal).await;
        }
    };
    let upload = async {
        let mut upload = app
            .client
            .open_upload(&request, Some(body.len() as u64))
            .await?;
        upload.write(&body).await?;
        Ok::<_, crate::aggregate::FetchFailure>(upload)
    };
    let Some(upload) = unless_gone(session, tokio::time::timeout(origin.timeout, upload)).await
    else {
        return false;
    };
    let upload = match upload {
        Ok(Ok(u)) => Some(u),
        Ok(Err(e)) => {
            tracing::warn!(origin = %origin.name, error = %e, "form submission failed");
            None
        }
        Err(_) => None,
    };
    let answer = unless_gone(
        session,
        tokio::time::timeout(origin.timeout, async {
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
            let body = decode_content(raw.freeze(), encoding.as_deref(), cfg.fragments.max_bytes)
                .map_err(|e| crate::aggregate::FetchFailure::Error(e.to_string()))?;
            Ok((status, location, to_utf8(body, content_type.as_deref())))
        }),
    )
    .await;
    // The browser went away while the origin answered: the exchange is
    // dropped (its connection closed); the origin has the whole post.
    let Some(answer) = answer else {
        return false;
    };
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
                    Some(format!("{}{hash}", back_page.with_nav(&id, &location)))
                        .filter(|to| stays_on_edge(to))
                }
                // The origin sends the user elsewhere on purpose: passed on
                // as the URL it parses to (no raw bytes of the origin's).
                Target::Foreign => foreign_location(&loc),
            };
            let Some(to) = to else {
                tracing::warn!(origin = %origin.name, location = %loc.escape_debug(), "form redirect refused");
                return respond_simple(
                    session,
                    400,
                    "Bad Request",
                    "The form's answer redirects nowhere this site can send you.",
                )
                .await;
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
