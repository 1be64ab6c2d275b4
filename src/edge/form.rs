//! `/_rain/f/{origin}/{path}?...&rain.f={id}&rain.page={page}`: a form of a
//! fragment, submitted through rain-edge to its origin with the user's
//! hidden session (docs/configuration.md, rewriting). The POST reaches the origin exactly once
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
use super::resource::{origin_target, save_cookies};
use crate::aggregate::{valid_id, FetchFailure, Submitted, SubmittedOutcome};
use crate::config::FailureClass;
use crate::http::{BodyError, BrowserConn};
use crate::rewrite::{
    decode_component, is_rain_param, map_location, stays_on_edge, PageUrl, UrlContext,
};
use crate::upstream::{decode_content, to_utf8, BrowserContext, OriginRequest};
use tokio::time::error::Elapsed;

/// A query that names its fragment and page (`rain.f`, `rain.page`: a
/// form's action, a Wicket Ajax call): the origin's own parameters, the
/// fragment's id and the page, decoded. Other `rain.*` parameters are
/// dropped.
pub(super) fn split_rain_target(
    query: Option<&str>,
) -> (Vec<&str>, Option<String>, Option<String>) {
    let (mut id, mut back) = (None, None);
    let mut own = Vec::new();
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match decode_component(k).as_str() {
            "rain.f" => id = Some(decode_component(v)),
            "rain.page" => back = Some(decode_component(v)),
            _ if is_rain_param(k) => {}
            _ => own.push(kv),
        }
    }
    (own, id, back)
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
    #[error(transparent)]
    Broken(#[from] BodyError),
}

/// Reads the whole request body, at most `max` bytes, within `limit`.
pub(super) async fn read_whole_body(
    session: &mut BrowserConn,
    max: u64,
    limit: std::time::Duration,
) -> Result<Bytes, BodyRefusal> {
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_body().await? {
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

/// Where a form submission goes and where the browser comes back to.
struct FormTarget {
    /// The fragment the form belongs to (`rain.f`).
    id: String,
    /// The page to come back to (`rain.page`), on this host.
    back: String,
    origin: std::sync::Arc<crate::config::Origin>,
    /// The form action at the origin.
    url: url::Url,
}

/// Why a submission is answered before anything is sent: status, title,
/// message.
pub(super) type Refusal = (u16, &'static str, &'static str);

/// Reads the form's target from the path below `/_rain/f/` and the query:
/// `rain.f` (the fragment) and `rain.page` (where to come back) are ours,
/// the rest of the query is the form action's own.
fn form_target(
    cfg: &crate::config::Config,
    client: SocketAddr,
    rest: &str,
    query: Option<&str>,
) -> Result<FormTarget, Refusal> {
    let (own, id, back) = split_rain_target(query);
    let (Some(id), Some(back)) = (id.filter(|i| valid_id(i)), back) else {
        return Err((400, "Bad Request", "This form submission is incomplete."));
    };
    // rain.page becomes the Location of the answer: it must stay on this
    // host as every browser reads it (no `//`, backslash, tab or CR/LF).
    if !stays_on_edge(&back) {
        return Err((400, "Bad Request", "This form submission is invalid."));
    }
    let query = (!own.is_empty()).then(|| own.join("&"));
    let invalid = "This form path is invalid.";
    let (origin, url) = origin_target(cfg, client, rest, query.as_deref(), "form", invalid)?;
    Ok(FormTarget {
        id,
        back,
        origin,
        url,
    })
}

/// The origin's answer to a post: status, `Location`, body in UTF-8.
type Answer = (u16, Option<String>, Bytes);

/// Posts `body` to the target's origin (exactly once: never retried) and
/// reads its answer whole (bounded by `max_bytes`); its cookies go to the
/// user's jar.
async fn post(
    app: &App,
    target: &FormTarget,
    request: OriginRequest<'_>,
    body: Bytes,
    user: Option<&crate::session::PageSession>,
    max_bytes: u64,
) -> Result<Answer, FetchFailure> {
    let (origin, url) = (&target.origin, &target.url);
    let mut upload = app
        .client
        .open_upload(&request, Some(body.len() as u64))
        .await?;
    upload.write(&body).await?;
    let ex = upload.finish().await?;
    save_cookies(user, &origin.name, url, &ex.set_cookies(), "form").await;
    let status = ex.status();
    let location = ex.header_str("location");
    let content_type = ex.header_str("content-type");
    let encoding = ex.header_str("content-encoding");
    let raw = crate::upstream::read_whole(ex, max_bytes).await?;
    let body = decode_content(raw, encoding.as_deref(), max_bytes)
        .map_err(|e| FetchFailure::Error(e.to_string()))?;
    Ok((status, location, to_utf8(body, content_type.as_deref())))
}

/// What the browser gets for the origin's answer: a redirect (303, Post/
/// Redirect/Get) back to the page with the fragment at the redirect's
/// target, or the page with the answer (or the fragment's fallback) in the
/// form's fragment and the status it gives.
enum Reply {
    SeeOther(String),
    Page(SubmittedOutcome, u16),
    Refused(Refusal),
}

fn reply(target: &FormTarget, answer: Result<Result<Answer, FetchFailure>, Elapsed>) -> Reply {
    let (origin, url) = (&target.origin, &target.url);
    match answer {
        Ok(Ok((status, Some(loc), _))) if (300..400).contains(&status) => {
            let (back_path, back_query) = split_back(&target.back);
            let back_page = PageUrl::new(&back_path, back_query.as_deref());
            // Elsewhere: the origin sends the user there on purpose (passed
            // on as the URL it parses to, no raw bytes of the origin's).
            let to = map_location(&UrlContext::of(origin, url), &loc, |l, hash| {
                format!("{}{hash}", back_page.with_nav(&target.id, l))
            });
            match to {
                Some(to) => Reply::SeeOther(to),
                None => {
                    tracing::warn!(origin = %origin.name, location = %loc.escape_debug(), "form redirect refused");
                    Reply::Refused((
                        400,
                        "Bad Request",
                        "The form's answer redirects nowhere this site can send you.",
                    ))
                }
            }
        }
        Ok(Ok((status, _, body)))
            if (200..300).contains(&status) || (400..500).contains(&status) =>
        {
            let shown = if status < 300 { 200 } else { status };
            let content = SubmittedOutcome::Content {
                url: url.clone(),
                body,
            };
            Reply::Page(content, shown)
        }
        Ok(Ok((status, ..))) => {
            tracing::warn!(origin = %origin.name, status, "form answered with an error");
            Reply::Page(SubmittedOutcome::Failed(FailureClass::Error), 502)
        }
        Ok(Err(e)) => {
            tracing::warn!(origin = %origin.name, error = %e, "form submission failed");
            Reply::Page(SubmittedOutcome::Failed(e.class()), 502)
        }
        Err(_) => Reply::Page(SubmittedOutcome::Failed(FailureClass::Timeout), 504),
    }
}

/// `rain.page` as its path and query.
pub(super) fn split_back(back: &str) -> (String, Option<String>) {
    match back.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (back.to_string(), None),
    }
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
    let target = match form_target(&cfg, client, rest, page.query.as_deref()) {
        Ok(t) => t,
        Err((status, title, message)) => {
            return respond_simple(session, status, title, message).await
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
    let secure = session.secure();
    let browser = BrowserContext::new(
        &cfg,
        &page.headers,
        Some(client.ip()),
        secure,
        target.back.clone(),
    );
    let (origin, url) = (&target.origin, &target.url);
    let mut headers = browser
        .headers_with_jar(origin, url, &target.id, user.as_deref())
        .await;
    if let Some(ct) = page.headers.get(http::header::CONTENT_TYPE) {
        headers.push((http::header::CONTENT_TYPE, ct.clone()));
    }
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let request = OriginRequest::passed(
        origin,
        "POST",
        &path_and_query,
        headers,
        cfg.fragments.max_bytes,
        user.as_ref().map(|u| u.id.as_str()),
    );
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
    let posted = post(
        app,
        &target,
        request,
        body,
        user.as_deref(),
        cfg.fragments.max_bytes,
    );
    // The browser going away while the origin answers drops the exchange
    // (its connection closed); the origin may have the whole post.
    let Some(answer) = unless_gone(session, tokio::time::timeout(origin.timeout, posted)).await
    else {
        return false;
    };
    match reply(&target, answer) {
        Reply::SeeOther(to) => respond_bytes(session, 303, Bytes::new(), &[("location", to)]).await,
        Reply::Refused((status, title, message)) => {
            respond_simple(session, status, title, message).await
        }
        Reply::Page(outcome, status) => {
            let (path, query) = split_back(&target.back);
            let page = PageRequest {
                method: http::Method::GET,
                path,
                query,
                headers: page.headers,
                submitted: Some((
                    Submitted {
                        id: target.id,
                        outcome,
                    },
                    Some(status),
                )),
            };
            render(app, session, client, page).await
        }
    }
}
