//! Composing one page: every fragment slot becomes a task started at once
//! (nested ones as soon as their parent's body is in), each under its own
//! deadline; the output follows document order, a slot waiting only for its
//! own task; `async` slots get an empty placeholder and are streamed before
//! `</body>` in the order they become ready. A fragment is written whole or
//! replaced whole by its fallback. Dropping a [`Page`] aborts its tasks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use tracing::Instrument;
use url::Url;

use super::assets::{fragment_assets, Asset, AssetKind};
use super::fetch::{
    class_of_status, fetch_following, FetchRequest, Fetched, FragmentSource, RewriteKey, Rewritten,
};
use super::spec::{resolve_target, FragmentSpec, Target};
use super::split::{split_fragment, Item, RawFragment};
use super::templates::{builtin_placeholder, Templates};
use crate::config::{Config, CssScope, FailureClass, Origin};
use crate::rewrite::{merge_query, resolve_src, wrap_open, FragmentRewrite, PageUrl, WRAP_CLOSE};

/// Flush the output buffer once it holds this much, even if the next
/// fragment is ready.
const FLUSH_BYTES: usize = 32 << 10;

/// What one page request shares with all its fragment tasks.
pub struct PageContext {
    /// The configuration in force when the request came.
    pub cfg: Arc<Config>,
    /// The templates of that configuration.
    pub templates: Arc<Templates>,
    /// Where fragments are fetched from (carries the user's request context).
    pub source: Arc<dyn FragmentSource>,
    /// The page's raw query, forwarded to fragments (minus `rain.*`).
    pub page_query: Option<String>,
    /// The page's path and full query, for navigation state and links.
    pub page: Arc<PageUrl>,
    /// The answer to a form submitted from one of the page's fragments,
    /// shown in place of that fragment's own fetch.
    pub submitted: Option<Submitted>,
    /// When the whole page must be done (`[fragments] page_timeout` from the
    /// request): no fragment waits past it, whatever its own deadline.
    pub deadline: Instant,
    started: AtomicUsize,
}

/// A form answer to show inside the page instead of fetching a fragment.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The fragment the form was in.
    pub id: String,
    /// What the origin answered.
    pub outcome: SubmittedOutcome,
}

/// What the origin answered a form submission.
#[derive(Debug, Clone)]
pub enum SubmittedOutcome {
    /// An HTML answer (2xx, or a 4xx such as a validation error).
    Content {
        /// The URL it answers for (relative links resolve against it).
        url: Url,
        /// UTF-8 body.
        body: Bytes,
    },
    /// A failure: the fragment's fallback is shown.
    Failed(FailureClass),
}

impl PageContext {
    /// A context for one page request.
    pub fn new(
        cfg: Arc<Config>,
        templates: Arc<Templates>,
        source: Arc<dyn FragmentSource>,
        page_query: Option<String>,
        page: Arc<PageUrl>,
        submitted: Option<Submitted>,
        deadline: Instant,
    ) -> Arc<PageContext> {
        Arc::new(PageContext {
            cfg,
            templates,
            source,
            page_query,
            page,
            submitted,
            deadline,
            started: AtomicUsize::new(0),
        })
    }

    /// How long a fetch with its own `timeout` may wait in this page.
    fn within_page(&self, timeout: Duration) -> Duration {
        within_deadline(self.deadline, timeout)
    }
}

/// `timeout`, or less when `deadline` comes sooner (zero once it passed).
pub fn within_deadline(deadline: Instant, timeout: Duration) -> Duration {
    timeout.min(deadline.saturating_duration_since(Instant::now()))
}

/// How a fragment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its content is shown.
    Ok,
    /// It failed; its fallback is shown.
    Failed(FailureClass),
    /// Its origin redirected out of the origin: the redirect's status and
    /// this absolute URL.
    Redirect(u16, String),
}

/// A fragment's content (or fallback) and how it ended.
struct Resolved {
    nodes: Vec<Node>,
    outcome: Outcome,
}

enum Node {
    Static(Bytes),
    BodyEnd,
    Slot(Slot),
    /// A fragment asset: written once per page, where it first comes.
    Asset(Asset),
}

struct Slot {
    id: String,
    is_async: bool,
    primary: bool,
    state: SlotState,
}

enum SlotState {
    Pending(Task),
    Ready(Resolved),
}

impl Slot {
    fn is_ready(&self) -> bool {
        match &self.state {
            SlotState::Ready(_) => true,
            SlotState::Pending(t) => t.0.is_finished(),
        }
    }

    async fn resolve(self) -> Resolved {
        match self.state {
            SlotState::Ready(r) => r,
            SlotState::Pending(t) => t.await,
        }
    }
}

/// A fragment task that is aborted when dropped (the browser went away, or a
/// failed parent's content is discarded).
struct Task(JoinHandle<Resolved>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Task {
    type Output = Resolved;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resolved> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(resolved) => resolved,
            Err(e) => {
                tracing::error!(error = %e, "fragment task failed");
                Resolved {
                    nodes: vec![Node::Static(builtin_placeholder(FailureClass::Error))],
                    outcome: Outcome::Failed(FailureClass::Error),
                }
            }
        })
    }
}

/// Where a set of slots sits in the page.
#[derive(Clone)]
struct Level {
    /// Nesting depth of the slots (1 for the layout's own).
    depth: usize,
    /// Id of the fragment whose body holds them (`None` for the layout).
    parent: Option<String>,
    /// URLs of the fragments above them, for cycle detection.
    ancestors: Arc<Vec<Url>>,
}

/// A page being composed.
pub struct Page {
    nodes: Vec<Node>,
}

/// The browser went away (or its connection failed) while writing.
#[derive(Debug, thiserror::Error)]
#[error("writing the page failed: {0}")]
pub struct PageWriteError(pub String);

/// Where a page's bytes go (the browser connection, or a test buffer).
#[async_trait]
pub trait PageWriter: Send {
    /// Writes and flushes one chunk.
    async fn write(&mut self, data: Bytes) -> Result<(), PageWriteError>;

    /// Writes the page's last chunk (maybe empty): nothing follows it. By
    /// default a write like the others.
    async fn write_last(&mut self, data: Bytes) -> Result<(), PageWriteError> {
        if data.is_empty() {
            return Ok(());
        }
        self.write(data).await
    }

    /// Resolves when the reader has gone away (the browser closed its
    /// connection or reset its stream): the page stops, and dropping it
    /// cancels its fragment fetches. Pending forever by default.
    async fn closed(&mut self) {
        std::future::pending::<()>().await
    }
}

/// `fut`, unless the page's reader goes away first.
async fn unless_gone<T>(
    w: &mut dyn PageWriter,
    fut: impl Future<Output = T> + Send,
) -> Result<T, PageWriteError> {
    tokio::select! {
        biased;
        v = fut => Ok(v),
        () = w.closed() => Err(PageWriteError("the browser went away".into())),
    }
}

impl Page {
    /// Starts every fragment of a split layout at once.
    pub fn start(ctx: &Arc<PageContext>, items: &[Item]) -> Page {
        let level = Level {
            depth: 1,
            parent: None,
            ancestors: Arc::new(Vec::new()),
        };
        Page {
            nodes: build_nodes(ctx, items.to_vec(), &level),
        }
    }

    /// Waits for the layout's first `primary` fragment (in document order:
    /// Tailor's rule; any others are ordinary fragments) and returns its
    /// outcome. Returns `Ok` at once without one.
    pub async fn primary_outcome(&mut self) -> Outcome {
        for node in &mut self.nodes {
            let Node::Slot(slot) = node else { continue };
            if !slot.primary {
                continue;
            }
            let state = std::mem::replace(
                &mut slot.state,
                SlotState::Ready(Resolved {
                    nodes: Vec::new(),
                    outcome: Outcome::Ok,
                }),
            );
            let resolved = match state {
                SlotState::Ready(r) => r,
                SlotState::Pending(t) => t.await,
            };
            let outcome = resolved.outcome.clone();
            slot.state = SlotState::Ready(resolved);
            return outcome;
        }
        Outcome::Ok
    }

    /// Writes the page in document order, `async` fragments before `</body>`.
    pub async fn write_to(self, w: &mut dyn PageWriter) -> Result<(), PageWriteError> {
        let mut out = Output {
            w,
            buf: BytesMut::with_capacity(16 << 10),
            asyncs: Vec::new(),
            assets: HashSet::new(),
        };
        out.write_nodes(self.nodes).await?;
        out.drain_asyncs().await?;
        let last = out.buf.split().freeze();
        out.w.write_last(last).await
    }
}

struct Output<'w> {
    w: &'w mut dyn PageWriter,
    buf: BytesMut,
    asyncs: Vec<Slot>,
    /// The fragment assets written so far (each URL once per page).
    assets: HashSet<String>,
}

impl Output<'_> {
    async fn flush(&mut self) -> Result<(), PageWriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = self.buf.split().freeze();
        self.w.write(data).await
    }

    async fn push(&mut self, data: &[u8]) -> Result<(), PageWriteError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn write_nodes(
        &mut self,
        nodes: Vec<Node>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PageWriteError>> + Send + '_>> {
        Box::pin(async move {
            for node in nodes {
                match node {
                    Node::Static(b) => self.push(&b).await?,
                    Node::Asset(a) => {
                        if self.assets.insert(a.url) {
                            self.push(a.html.as_bytes()).await?;
                        }
                    }
                    Node::BodyEnd => self.drain_asyncs().await?,
                    Node::Slot(slot) if slot.is_async => {
                        let ph =
                            format!("<div id=\"rain-async-{}\" data-rain-async></div>", slot.id);
                        self.push(ph.as_bytes()).await?;
                        self.asyncs.push(slot);
                    }
                    Node::Slot(slot) => {
                        if !slot.is_ready() {
                            // Fragments whose answers have already arrived
                            // run first, so that one write carries them all
                            // (a write to the browser costs a wakeup and a
                            // context switch); then everything before this
                            // slot goes out.
                            tokio::task::yield_now().await;
                            if !slot.is_ready() {
                                self.flush().await?;
                            }
                        }
                        let resolved = unless_gone(&mut *self.w, slot.resolve()).await?;
                        self.write_nodes(resolved.nodes).await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Streams the `async` fragments seen so far (and any found inside them),
    /// each as soon as it is ready.
    async fn drain_asyncs(&mut self) -> Result<(), PageWriteError> {
        while !self.asyncs.is_empty() {
            let Some(i) = self.asyncs.iter().position(Slot::is_ready) else {
                self.flush().await?;
                let Output { w, asyncs, .. } = self;
                unless_gone(&mut **w, wait_any_async(asyncs)).await?;
                continue;
            };
            let slot = self.asyncs.remove(i);
            let id = slot.id.clone();
            let resolved = slot.resolve().await;
            self.push(format!("<template id=\"rain-t-{id}\">").as_bytes())
                .await?;
            self.write_nodes(resolved.nodes).await?;
            let script = format!(
                "</template><script>(function(){{var t=document.getElementById(\"rain-t-{id}\"),\
                 s=document.getElementById(\"rain-async-{id}\");if(t&&s){{s.replaceWith(t.content)}}\
                 if(t){{t.remove()}}}})();</script>"
            );
            self.push(script.as_bytes()).await?;
            self.flush().await?;
        }
        Ok(())
    }
}

/// Waits until one of the `async` fragments still pending is ready.
async fn wait_any_async(asyncs: &mut [Slot]) {
    let pending: Vec<(usize, &mut Task)> = asyncs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| match &mut s.state {
            SlotState::Pending(t) => Some((i, t)),
            SlotState::Ready(_) => None,
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let (indices, tasks): (Vec<usize>, Vec<&mut Task>) = pending.into_iter().unzip();
    let (resolved, k, _) = futures_util::future::select_all(tasks).await;
    if let Some(slot) = indices.get(k).and_then(|&i| asyncs.get_mut(i)) {
        slot.state = SlotState::Ready(resolved);
    }
}

/// Turns split items into nodes, starting a task for every slot.
fn build_nodes(ctx: &Arc<PageContext>, items: Vec<Item>, level: &Level) -> Vec<Node> {
    let mut ids = IdAllocator::new(&items, level.parent.as_deref());
    items
        .into_iter()
        .map(|item| match item {
            Item::Static(b) => Node::Static(b),
            Item::BodyEnd => Node::BodyEnd,
            Item::Slot(raw) => Node::Slot(start_slot(ctx, raw, level, &mut ids)),
        })
        .collect()
}

/// Default fragment ids: the origin's name, then `-2`, `-3`; below a parent
/// fragment, prefixed with the parent's id and a dot, so that they do not
/// depend on the order in which parallel fragments arrive.
struct IdAllocator<'p> {
    used: HashSet<String>,
    counts: HashMap<String, usize>,
    parent: Option<&'p str>,
}

impl<'p> IdAllocator<'p> {
    fn new(items: &[Item], parent: Option<&'p str>) -> Self {
        let used = items
            .iter()
            .filter_map(|i| match i {
                Item::Slot(raw) => raw.attr("id").map(|s| s.trim().to_string()),
                _ => None,
            })
            .collect();
        IdAllocator {
            used,
            counts: HashMap::new(),
            parent,
        }
    }

    fn default_id(&mut self, base: &str) -> String {
        let base = match self.parent {
            Some(p) => format!("{p}.{base}"),
            None => base.to_string(),
        };
        loop {
            let n = self.counts.entry(base.clone()).or_insert(0);
            *n += 1;
            let id = if *n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if self.used.insert(id.clone()) {
                return id;
            }
        }
    }
}

fn start_slot(
    ctx: &Arc<PageContext>,
    raw: RawFragment,
    level: &Level,
    ids: &mut IdAllocator,
) -> Slot {
    let spec = FragmentSpec::parse(&raw);
    let origin_hint = raw.attr("origin").map(str::to_string);
    // Resolved once: it names the fragment (when it has no id) and is what
    // the fragment's task fetches.
    let target = spec
        .as_ref()
        .ok()
        .map(|s| resolve_target(&ctx.cfg, s.origin.as_deref(), &s.src));
    let id = match &spec {
        Ok(FragmentSpec { id: Some(id), .. }) => id.clone(),
        _ => {
            let base = origin_hint
                .clone()
                .or_else(|| match &target {
                    Some(Ok(t)) => Some(t.origin.name.clone()),
                    _ => None,
                })
                .filter(|o| super::spec::valid_id(o))
                .unwrap_or_else(|| "fragment".to_string());
            ids.default_id(&base)
        }
    };
    let (is_async, primary) = spec
        .as_ref()
        .map(|s| (s.is_async, s.primary))
        .unwrap_or((false, false));
    // Nested `primary` fragments do not decide the page status.
    let primary = primary && level.depth == 1;
    let n = ctx.started.fetch_add(1, Ordering::Relaxed);
    let refusal = match &spec {
        Err(e) => Some(format!("invalid <fragment>: {e}")),
        Ok(_) if n >= ctx.cfg.fragments.max_per_page => Some(format!(
            "more than {} fragments in the page",
            ctx.cfg.fragments.max_per_page
        )),
        Ok(_) if level.depth > ctx.cfg.fragments.max_depth => Some(format!(
            "nested deeper than {}",
            ctx.cfg.fragments.max_depth
        )),
        Ok(_) => None,
    };
    let task_ctx = ctx.clone();
    let level = level.clone();
    let task_id = id.clone();
    // Two tasks, not one with a match inside: a task is as large as its
    // largest state, and a fetched fragment's task should not carry the
    // refused path's.
    // Fragment tasks log inside the page's request span (its request id),
    // and inside a span of their own when `debug` is on for this module
    // (at `info`, a span per fragment would cost more than some fragments).
    let span = tracing::Span::current();
    let fragment_span = tracing::debug_span!("fragment", id = %id);
    let handle = match (spec, refusal, target) {
        // A valid spec always has its target resolved above.
        (Ok(spec), None, Some(target)) => tokio::spawn(
            async move {
                let started = Instant::now();
                // Only a configured origin names the statistics: a name
                // from HTML (an unknown origin) must not grow them.
                let origin = target.as_ref().ok().map(|t| t.origin.name.clone());
                let resolved = run_fragment(&task_ctx, &spec, target, &task_id, &level).await;
                task_ctx.source.fragment_done(
                    &task_id,
                    origin.as_deref(),
                    &resolved.outcome,
                    started.elapsed(),
                );
                resolved
            }
            .instrument(fragment_span)
            .instrument(span),
        ),
        (spec, reason, _) => tokio::spawn(
            async move {
                let reason = reason.unwrap_or_default();
                tracing::warn!(fragment = %task_id, %reason, "fragment refused");
                let spec = spec.ok();
                let nodes = Box::pin(fallback_nodes(
                    &task_ctx,
                    spec.as_ref(),
                    &raw.children,
                    origin_hint.as_deref(),
                    FailureClass::Error,
                    None,
                ))
                .await;
                let outcome = Outcome::Failed(FailureClass::Error);
                task_ctx
                    .source
                    .fragment_done(&task_id, None, &outcome, Duration::ZERO);
                Resolved { nodes, outcome }
            }
            .instrument(fragment_span)
            .instrument(span),
        ),
    };
    Slot {
        id,
        is_async,
        primary,
        state: SlotState::Pending(Task(handle)),
    }
}

async fn run_fragment(
    ctx: &Arc<PageContext>,
    spec: &FragmentSpec,
    target: Result<Target, (FailureClass, String)>,
    id: &str,
    level: &Level,
) -> Resolved {
    let target = match target {
        Ok(t) => t,
        Err((class, reason)) => {
            tracing::warn!(fragment = %id, %reason, "fragment has no valid target");
            return failed(ctx, spec, None, class, None).await;
        }
    };
    let origin = target.origin.clone();
    // A form of this fragment was just submitted: show the origin's answer.
    if let Some(sub) = ctx.submitted.as_ref().filter(|sub| sub.id == id) {
        return match &sub.outcome {
            SubmittedOutcome::Content { url, body } => {
                match content_nodes(ctx, body.clone(), level, &origin, url, url, id) {
                    Ok((nodes, _)) => Resolved {
                        nodes,
                        outcome: Outcome::Ok,
                    },
                    Err(_) => {
                        failed(ctx, spec, Some(&origin.name), FailureClass::Error, None).await
                    }
                }
            }
            SubmittedOutcome::Failed(class) => {
                failed(ctx, spec, Some(&origin.name), *class, None).await
            }
        };
    }
    let mut url = target.url;
    // The fragment's navigation state (a followed link) replaces its src.
    if let Some(location) = ctx.page.nav(id) {
        match resolve_src(&origin.url, &location) {
            Ok(u) => url = u,
            Err(e) => {
                tracing::warn!(fragment = %id, error = %e, "navigation state ignored");
            }
        }
    }
    if origin.forward_params && !spec.public {
        let q = merge_query(url.query(), ctx.page_query.as_deref());
        url.set_query(q.as_deref());
    }
    if level.ancestors.contains(&url) {
        tracing::warn!(fragment = %id, %url, "fragment cycle");
        return failed(ctx, spec, Some(&origin.name), FailureClass::Error, None).await;
    }
    let timeout = spec.timeout.unwrap_or(origin.timeout);
    let req = FetchRequest {
        origin: origin.clone(),
        url: url.clone(),
        fragment_id: id.to_string(),
        public: spec.public,
        max_bytes: ctx.cfg.fragments.max_bytes,
        chain_cookies: Vec::new(),
        timeout,
    };
    // The fetch keeps its own deadline (an origin is not blamed for the
    // page's), but waits no longer than the page has left.
    let wait = ctx.within_page(timeout);
    let fetched = tokio::time::timeout(wait, fetch_following(ctx.source.as_ref(), req))
        .await
        .unwrap_or_else(|_| {
            let reason = if wait < timeout {
                "the page deadline passed".to_string()
            } else {
                format!("no answer within {timeout:?}")
            };
            Fetched::Failed(FailureClass::Timeout, reason)
        });
    match fetched {
        Fetched::Content {
            url: final_url,
            body,
            storable,
            links,
            rewritten,
            ..
        } => {
            // A public fragment's good answer is kept for stale_if_error
            // (unless the origin said no-store or private).
            if spec.public && storable && !ctx.cfg.fragments.stale_if_error.is_zero() {
                ctx.source.keep_good(url.as_str(), &final_url, &body).await;
            }
            let memo = rewritten.as_deref();
            let mut r =
                ok_or_failed(ctx, spec, body, level, &origin, &url, &final_url, id, memo).await;
            if r.outcome == Outcome::Ok && !links.is_empty() {
                with_assets(&mut r.nodes, &links, &origin, &final_url);
            }
            r
        }
        Fetched::ClientError { status, .. } => {
            tracing::warn!(fragment = %id, origin = %origin.name, status, "fragment answered a client error");
            failed(
                ctx,
                spec,
                Some(&origin.name),
                class_of_status(status),
                Some(level),
            )
            .await
        }
        Fetched::Redirect(status, location) => {
            tracing::warn!(fragment = %id, %location, "fragment redirected out of its origin");
            let mut r = failed(
                ctx,
                spec,
                Some(&origin.name),
                FailureClass::Error,
                Some(level),
            )
            .await;
            r.outcome = Outcome::Redirect(status, location);
            r
        }
        Fetched::Failed(class, reason) => {
            tracing::warn!(fragment = %id, origin = %origin.name, class = class.key(), %reason, "fragment failed");
            let stale_class = matches!(
                class,
                FailureClass::Timeout | FailureClass::Unavailable | FailureClass::Error
            );
            if spec.public && stale_class {
                let max_age = ctx.cfg.fragments.stale_if_error;
                let last = ctx.source.last_good(&origin, &url, id, max_age).await;
                if let Some((stale_url, body)) = last {
                    tracing::warn!(fragment = %id, origin = %origin.name, "served its last good copy (stale_if_error)");
                    return ok_or_failed(
                        ctx, spec, body, level, &origin, &url, &stale_url, id, None,
                    )
                    .await;
                }
            }
            failed(ctx, spec, Some(&origin.name), class, Some(level)).await
        }
    }
}

/// Puts the fragment's `Link` assets around its content: stylesheets
/// before, scripts after.
fn with_assets(nodes: &mut Vec<Node>, links: &[String], origin: &Origin, url: &Url) {
    let ctx = crate::rewrite::UrlContext::of(origin, url);
    let assets = fragment_assets(links, &ctx);
    if assets.is_empty() {
        return;
    }
    let (before, after): (Vec<Asset>, Vec<Asset>) = assets
        .into_iter()
        .partition(|a| a.kind == AssetKind::Stylesheet);
    let content = std::mem::take(nodes);
    nodes.extend(before.into_iter().map(Node::Asset));
    nodes.extend(content);
    nodes.extend(after.into_iter().map(Node::Asset));
}

/// A fragment's body as its content, or its fallback when the body is
/// rejected.
#[allow(clippy::too_many_arguments)]
async fn ok_or_failed(
    ctx: &Arc<PageContext>,
    spec: &FragmentSpec,
    body: Bytes,
    level: &Level,
    origin: &Arc<Origin>,
    url: &Url,
    final_url: &Url,
    id: &str,
    memo: Option<&Rewritten>,
) -> Resolved {
    // A cached copy shown here before: its content as rewritten then.
    let key = RewriteKey {
        id,
        origin,
        url: final_url,
        max_memory: ctx.cfg.fragments.max_rewrite_memory,
        page: (&ctx.page.path, &ctx.page.params),
    };
    if let Some(content) = memo.and_then(|m| m.get(&key)) {
        return Resolved {
            nodes: content.into_iter().map(Node::Static).collect(),
            outcome: Outcome::Ok,
        };
    }
    match content_nodes(ctx, body, level, origin, url, final_url, id) {
        Ok((nodes, page_read)) => {
            // Only content alone is kept: nested fragments are fetched for
            // each page.
            if let Some(m) = memo {
                let statics: Option<Vec<Bytes>> = nodes
                    .iter()
                    .map(|n| match n {
                        Node::Static(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect();
                if let Some(content) = statics {
                    m.put(&key, page_read, content);
                }
            }
            Resolved {
                nodes,
                outcome: Outcome::Ok,
            }
        }
        Err(reason) => {
            tracing::warn!(fragment = %id, %reason, "fragment body rejected");
            failed(
                ctx,
                spec,
                Some(&origin.name),
                FailureClass::Error,
                Some(level),
            )
            .await
        }
    }
}

/// A fragment body as nodes: rewritten for the page (links, resources),
/// stripped of a document shell when it has one, and split for nested
/// fragments, which start at once; and whether the rewriting read the
/// page's URL.
fn content_nodes(
    ctx: &Arc<PageContext>,
    body: Bytes,
    level: &Level,
    origin: &Arc<Origin>,
    url: &Url,
    final_url: &Url,
    id: &str,
) -> Result<(Vec<Node>, bool), String> {
    let rewrite = Arc::new(FragmentRewrite {
        id: id.to_string(),
        origin: origin.name.clone(),
        base: origin.url.clone(),
        fragment_url: final_url.clone(),
        kind: origin.kind,
        page: ctx.page.clone(),
        css_scope: origin.css_scope,
        class_prefix: origin.class_prefix.clone(),
        page_read: Default::default(),
    });
    let items = split_fragment(&body, rewrite.clone(), ctx.cfg.fragments.max_rewrite_memory)
        .map_err(|e| e.to_string())?;
    let page_read = rewrite.page_read.load(std::sync::atomic::Ordering::Relaxed);
    let nodes = nested_nodes(ctx, items, level, url, final_url, id);
    // css_scope = wrap: the fragment stands in an element that carries its
    // origin, and the origin's stylesheets are scoped to it.
    if origin.css_scope == CssScope::Wrap {
        let mut wrapped = Vec::with_capacity(nodes.len() + 2);
        wrapped.push(Node::Static(Bytes::from(wrap_open(&origin.name))));
        wrapped.extend(nodes);
        wrapped.push(Node::Static(Bytes::from_static(WRAP_CLOSE.as_bytes())));
        return Ok((wrapped, page_read));
    }
    Ok((nodes, page_read))
}

/// A fragment's split body as nodes; its nested fragments start at once.
fn nested_nodes(
    ctx: &Arc<PageContext>,
    items: Vec<Item>,
    level: &Level,
    url: &Url,
    final_url: &Url,
    id: &str,
) -> Vec<Node> {
    if !items.iter().any(|i| matches!(i, Item::Slot(_))) {
        return items
            .into_iter()
            .filter_map(|i| match i {
                Item::Static(b) => Some(Node::Static(b)),
                _ => None,
            })
            .collect();
    }
    let mut ancestors = Vec::with_capacity(level.ancestors.len() + 2);
    ancestors.extend(level.ancestors.iter().cloned());
    ancestors.push(url.clone());
    if final_url != url {
        ancestors.push(final_url.clone());
    }
    let inner = Level {
        depth: level.depth + 1,
        parent: Some(id.to_string()),
        ancestors: Arc::new(ancestors),
    };
    build_nodes(ctx, items, &inner)
}

async fn failed(
    ctx: &Arc<PageContext>,
    spec: &FragmentSpec,
    origin: Option<&str>,
    class: FailureClass,
    level: Option<&Level>,
) -> Resolved {
    // Boxed: the fallback path (which may fetch a `fallback-src`) is rare,
    // and inline it would make every fragment task larger while it waits.
    let nodes = Box::pin(fallback_nodes(
        ctx,
        Some(spec),
        &spec.children,
        origin,
        class,
        level,
    ))
    .await;
    Resolved {
        nodes,
        outcome: Outcome::Failed(class),
    }
}

/// The fallback of a failed fragment, in the order of docs/configuration.md: `fallback-src`
/// (fetched when `level` allows), the `fallback` file, the inline children,
/// the origin's placeholder, the platform's, the built-in one.
async fn fallback_nodes(
    ctx: &Arc<PageContext>,
    spec: Option<&FragmentSpec>,
    children: &Bytes,
    origin: Option<&str>,
    class: FailureClass,
    level: Option<&Level>,
) -> Vec<Node> {
    if let (Some(spec), Some(level)) = (spec, level) {
        if let Some(fb) = &spec.fallback_src {
            if let Some(nodes) = fetch_fallback_src(ctx, spec, fb, level).await {
                return nodes;
            }
        }
    }
    if let Some(file) = spec.and_then(|s| s.fallback.as_deref()) {
        match ctx.templates.get(file) {
            Some(b) => return vec![Node::Static(b)],
            None => tracing::warn!(%file, "fallback template not found"),
        }
    }
    if children.iter().any(|b| !b.is_ascii_whitespace()) {
        return vec![Node::Static(children.clone())];
    }
    vec![Node::Static(
        ctx.templates.placeholder(&ctx.cfg, origin, class),
    )]
}

async fn fetch_fallback_src(
    ctx: &Arc<PageContext>,
    spec: &FragmentSpec,
    src: &str,
    level: &Level,
) -> Option<Vec<Node>> {
    let target = resolve_target(&ctx.cfg, spec.origin.as_deref(), src).ok()?;
    let timeout = target.origin.timeout;
    let req = FetchRequest {
        origin: target.origin.clone(),
        url: target.url.clone(),
        fragment_id: spec
            .id
            .clone()
            .unwrap_or_else(|| target.origin.name.clone()),
        public: spec.public,
        max_bytes: ctx.cfg.fragments.max_bytes,
        chain_cookies: Vec::new(),
        timeout,
    };
    let wait = ctx.within_page(timeout);
    match tokio::time::timeout(wait, fetch_following(ctx.source.as_ref(), req)).await {
        Ok(Fetched::Content { url, body, .. }) => {
            let id = spec
                .id
                .clone()
                .unwrap_or_else(|| target.origin.name.clone());
            content_nodes(ctx, body, level, &target.origin, &target.url, &url, &id)
                .ok()
                .map(|(nodes, _)| nodes)
        }
        _ => None,
    }
}
