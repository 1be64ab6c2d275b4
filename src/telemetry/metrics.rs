//! What rain-edge counts while it serves: browser requests by kind and
//! status, fragment outcomes and latency per origin, requests and fragment
//! fetches in flight, sessions and session store errors. Lock-free counters
//! on the hot path; rendered as Prometheus text on the admin listener
//! (README.md, admin API), and read by `GET /origins` for health and percentiles.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::aggregate::Outcome;
use crate::config::FailureClass;

/// Upper bounds of the latency buckets, in milliseconds.
const BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    /// One count per bucket, the last for values above every bound.
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one value.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b as f64)
            .unwrap_or(BUCKETS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile in milliseconds, interpolated inside its bucket
    /// (so as exact as the buckets are fine); `None` before any value.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let low = if i == 0 { 0 } else { BUCKETS_MS[i - 1] } as f64;
                let high = BUCKETS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(BUCKETS_MS[BUCKETS_MS.len() - 1]) as f64;
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(low + (high - low) * within);
            }
            below += n;
        }
        Some(BUCKETS_MS[BUCKETS_MS.len() - 1] as f64)
    }

    /// Writes the histogram as Prometheus lines (`name_bucket`, `_sum`,
    /// `_count`) in seconds, with `labels` (`a="b",...` or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// One origin's fragment statistics.
#[derive(Default)]
pub struct OriginStats {
    /// Fragments of this origin that ended (content or fallback).
    pub requests: AtomicU64,
    /// Fragments shown with their content.
    pub ok: AtomicU64,
    /// Failures, by class (in [`FailureClass::ALL`] order).
    failures: [AtomicU64; 6],
    /// Fragment latency, from start to content or fallback.
    pub latency: Histogram,
}

impl OriginStats {
    /// Failures of `class` so far.
    pub fn failures(&self, class: FailureClass) -> u64 {
        let i = FailureClass::ALL
            .iter()
            .position(|c| *c == class)
            .unwrap_or(0);
        self.failures[i].load(Ordering::Relaxed)
    }

    fn record(&self, outcome: &Outcome, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
        match outcome {
            Outcome::Ok => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(class) => {
                if let Some(i) = FailureClass::ALL.iter().position(|c| c == class) {
                    self.failures[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            Outcome::Redirect(..) => {
                let i = FailureClass::ALL.len() - 1;
                self.failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What kind of browser request a response answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// A composed page (or an answer on its route: 404, 405...).
    Page,
    /// A resource through `/_rain/r/`.
    Resource,
    /// A form post through `/_rain/f/`.
    Form,
    /// A client-side call through `/_rain/o/`.
    Call,
}

impl RequestKind {
    /// The kind of a request for `path`.
    pub fn of(path: &str) -> RequestKind {
        if path.starts_with("/_rain/r/") {
            RequestKind::Resource
        } else if path.starts_with("/_rain/f/") {
            RequestKind::Form
        } else if path.starts_with("/_rain/o/") {
            RequestKind::Call
        } else {
            RequestKind::Page
        }
    }

    fn label(self) -> &'static str {
        match self {
            RequestKind::Page => "page",
            RequestKind::Resource => "resource",
            RequestKind::Form => "form",
            RequestKind::Call => "call",
        }
    }
}

/// Every counter of one rain-edge process.
#[derive(Default)]
pub struct Metrics {
    responses: Mutex<BTreeMap<(RequestKind, u16), u64>>,
    request_latency: Histogram,
    /// Browser requests being answered.
    pub requests_in_flight: AtomicI64,
    /// Fragment fetches waiting on an origin.
    pub fetches_in_flight: AtomicI64,
    origins: RwLock<HashMap<String, Arc<OriginStats>>>,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Session store calls that failed.
    pub store_errors: AtomicU64,
    /// Configuration reloads that took effect / were rejected.
    pub reloads: AtomicU64,
    /// Rejected reloads.
    pub reloads_rejected: AtomicU64,
    /// Public fragments served from their last good copy.
    pub stale_served: AtomicU64,
    /// WebSockets relayed right now.
    pub websockets_open: AtomicI64,
    /// WebSockets opened through `/_rain/o/`.
    pub websockets: AtomicU64,
}

impl Metrics {
    /// Records one answered browser request.
    pub fn response(&self, kind: RequestKind, status: u16, elapsed: Duration) {
        self.request_latency.observe(elapsed);
        let mut map = crate::sync::lock(&self.responses);
        *map.entry((kind, status)).or_insert(0) += 1;
    }

    /// The statistics of origin `name` (created on first use).
    pub fn origin(&self, name: &str) -> Arc<OriginStats> {
        if let Ok(map) = self.origins.read() {
            if let Some(s) = map.get(name) {
                return s.clone();
            }
        }
        let mut map = match self.origins.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(name.to_string()).or_default().clone()
    }

    /// Records one fragment that ended, `origin` when it had one.
    pub fn fragment(&self, origin: Option<&str>, outcome: &Outcome, elapsed: Duration) {
        self.origin(origin.unwrap_or("")).record(outcome, elapsed);
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        out.push_str("# HELP rain_requests_total Browser requests answered, by kind and status.\n");
        out.push_str("# TYPE rain_requests_total counter\n");
        {
            let map = crate::sync::lock(&self.responses);
            for ((kind, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "rain_requests_total{{kind=\"{}\",status=\"{status}\"}} {n}",
                    kind.label()
                );
            }
        }
        out.push_str(
            "# HELP rain_request_duration_seconds Time to answer a browser request whole.\n",
        );
        out.push_str("# TYPE rain_request_duration_seconds histogram\n");
        self.request_latency
            .render(&mut out, "rain_request_duration_seconds", "");
        let gauges = [
            (
                "rain_requests_in_flight",
                "Browser requests being answered.",
                self.requests_in_flight.load(Ordering::Relaxed),
            ),
            (
                "rain_fragment_fetches_in_flight",
                "Fragment fetches waiting on an origin.",
                self.fetches_in_flight.load(Ordering::Relaxed),
            ),
            (
                "rain_websockets_open",
                "WebSockets relayed between browsers and origins right now.",
                self.websockets_open.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "rain_sessions_created_total",
                "rain-edge sessions created.",
                &self.sessions_created,
            ),
            (
                "rain_session_store_errors_total",
                "Session store calls that failed.",
                &self.store_errors,
            ),
            (
                "rain_websockets_total",
                "WebSockets opened through /_rain/o/.",
                &self.websockets,
            ),
            (
                "rain_stale_served_total",
                "Public fragments served from their last good copy (stale_if_error).",
                &self.stale_served,
            ),
            (
                "rain_config_reloads_total",
                "Configuration reloads that took effect.",
                &self.reloads,
            ),
            (
                "rain_config_reloads_rejected_total",
                "Configuration reloads rejected (the old one kept serving).",
                &self.reloads_rejected,
            ),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let origins: Vec<(String, Arc<OriginStats>)> = match self.origins.read() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut origins = origins;
        origins.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(
            "# HELP rain_fragments_total Fragments that ended, by origin and outcome (ok or a failure class).\n",
        );
        out.push_str("# TYPE rain_fragments_total counter\n");
        for (name, s) in &origins {
            let name = escape_label(name);
            let _ = writeln!(
                out,
                "rain_fragments_total{{origin=\"{name}\",outcome=\"ok\"}} {}",
                s.ok.load(Ordering::Relaxed)
            );
            for class in FailureClass::ALL {
                let _ = writeln!(
                    out,
                    "rain_fragments_total{{origin=\"{name}\",outcome=\"{}\"}} {}",
                    class.key(),
                    s.failures(class)
                );
            }
        }
        out.push_str("# HELP rain_fragment_duration_seconds Time from a fragment's start to its content or fallback.\n");
        out.push_str("# TYPE rain_fragment_duration_seconds histogram\n");
        for (name, s) in &origins {
            let labels = format!("origin=\"{}\"", escape_label(name));
            s.latency
                .render(&mut out, "rain_fragment_duration_seconds", &labels);
        }
        out
    }
}

/// One fragment of a page as it ended: for the access log line and the
/// page's waterfall (`/pages`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FragmentTiming {
    /// The fragment's id.
    pub id: String,
    /// Its origin, when it names a configured one.
    pub origin: Option<String>,
    /// The server that answered it, when one did.
    pub server: Option<std::net::SocketAddr>,
    /// `ok`, or the failure class (`redirect` for a redirect out of its origin).
    pub outcome: &'static str,
    /// The origin's last status (0 without an answer).
    pub status: u16,
    /// The answer's body bytes (decoded).
    pub bytes: u64,
    /// When its fetch started, in ms from the page's start.
    pub start_ms: f64,
    /// When it ended, in ms from the page's start.
    pub end_ms: f64,
    /// `hit`, `miss`, `stale` or `none`.
    pub cache: &'static str,
}

/// What a fetch learned before its fragment ended: its server, status and
/// size.
#[derive(Default, Clone)]
struct Fetched {
    server: Option<std::net::SocketAddr>,
    status: u16,
    bytes: u64,
    cache: &'static str,
}

/// The fragments of one page as they end, for its access log line and its
/// waterfall.
pub struct PageLog {
    /// Whether the access log is on.
    on: bool,
    started: std::time::Instant,
    state: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    ended: Vec<FragmentTiming>,
    fetched: HashMap<String, Fetched>,
    request_id: Option<String>,
}

impl Default for PageLog {
    fn default() -> PageLog {
        PageLog::new()
    }
}

tokio::task_local! {
    /// The log of the request being served on this connection task.
    pub static PAGE_LOG: Arc<PageLog>;
}

/// Milliseconds, to a tenth.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl PageLog {
    /// A log for one request, starting now.
    pub fn new() -> PageLog {
        PageLog {
            on: tracing::enabled!(target: "rain_edge::access", tracing::Level::INFO),
            started: std::time::Instant::now(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        crate::sync::lock(&self.state)
    }

    /// The log of the request being served, if the task has one.
    pub fn current() -> Option<Arc<PageLog>> {
        PAGE_LOG.try_with(Arc::clone).ok()
    }

    /// Notes the page's `X-Request-Id`.
    pub fn set_request_id(&self, id: &str) {
        self.state().request_id = Some(id.to_string());
    }

    /// Notes what fragment `id`'s latest exchange got (a redirect chain
    /// notes each; the last counts).
    /// `cache` is `hit`, `miss`, `stale` or `none` (not cacheable).
    pub fn fetched(
        &self,
        id: &str,
        server: Option<std::net::SocketAddr>,
        status: u16,
        bytes: u64,
        cache: &'static str,
    ) {
        let mut st = self.state();
        let f = st.fetched.entry(id.to_string()).or_default();
        f.server = server;
        f.status = status;
        f.bytes = bytes;
        f.cache = cache;
    }

    /// Notes that fragment `id` of `origin` ended with `outcome` after
    /// `elapsed`.
    pub fn push(&self, id: &str, origin: Option<&str>, outcome: &Outcome, elapsed: Duration) {
        let key = match outcome {
            Outcome::Ok => "ok",
            Outcome::Failed(class) => class.key(),
            Outcome::Redirect(..) => "redirect",
        };
        let end = self.started.elapsed();
        let start = end.saturating_sub(elapsed);
        let mut st = self.state();
        // The key noted at the fetch becomes the record's id (no copy).
        let (id, f) = st
            .fetched
            .remove_entry(id)
            .unwrap_or_else(|| (id.to_string(), Fetched::default()));
        st.ended.push(FragmentTiming {
            id,
            origin: origin.map(str::to_string),
            server: f.server,
            outcome: key,
            status: f.status,
            bytes: f.bytes,
            start_ms: ms(start),
            end_ms: ms(end),
            cache: if f.cache.is_empty() { "none" } else { f.cache },
        });
    }

    /// The page's record, once it is answered; `None` for an answer that
    /// composed nothing (no request id: a 404 of no route, a refusal).
    pub fn record(&self, path: &str, status: u16, total: Duration) -> Option<PageRecord> {
        let mut st = self.state();
        let request_id = st.request_id.take()?;
        let mut fragments = std::mem::take(&mut st.ended);
        fragments.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        Some(PageRecord {
            request_id,
            path: path.to_string(),
            status,
            total_ms: ms(total),
            fragments,
        })
    }

    /// `id=outcome` pairs, space-separated, in the order they ended (empty
    /// while the access log is off).
    pub fn summary(&self) -> String {
        if !self.on {
            return String::new();
        }
        let st = self.state();
        let mut out = String::new();
        for f in st.ended.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&f.id);
            out.push('=');
            out.push_str(f.outcome);
        }
        out
    }
}

/// One page as its waterfall shows it (`/pages`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PageRecord {
    /// The page answer's `X-Request-Id`.
    pub request_id: String,
    /// The page's path.
    pub path: String,
    /// Its status.
    pub status: u16,
    /// How long it took whole, in ms.
    pub total_ms: f64,
    /// Its fragments, by start.
    pub fragments: Vec<FragmentTiming>,
}

/// The last pages served (`/pages`), newest last, at most
/// [`PageRecords::KEPT`].
#[derive(Default)]
pub struct PageRecords(
    Mutex<std::collections::VecDeque<Arc<PageRecord>>>,
    /// Pages recorded since the start.
    pub AtomicU64,
);

impl PageRecords {
    /// How many pages are kept (older ones are dropped).
    pub const KEPT: usize = 1024;

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Arc<PageRecord>>> {
        crate::sync::lock(&self.0)
    }

    /// Keeps a page's record.
    pub fn push(&self, record: PageRecord) {
        self.1.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queue();
        if q.len() >= Self::KEPT {
            q.pop_front();
        }
        q.push_back(Arc::new(record));
    }

    /// The records kept, newest first.
    pub fn newest_first(&self) -> Vec<Arc<PageRecord>> {
        self.queue().iter().rev().cloned().collect()
    }

    /// The record of page `request_id`, if it is still kept.
    pub fn get(&self, request_id: &str) -> Option<Arc<PageRecord>> {
        self.queue()
            .iter()
            .rev()
            .find(|r| r.request_id == request_id)
            .cloned()
    }
}

/// Counts one in-flight thing in a gauge until dropped.
pub struct InFlight<'g>(&'g AtomicI64);

impl<'g> InFlight<'g> {
    /// Adds one to `gauge` until the guard is dropped.
    pub fn enter(gauge: &'g AtomicI64) -> InFlight<'g> {
        gauge.fetch_add(1, Ordering::Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_buckets() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..90 {
            h.observe(Duration::from_millis(15));
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(400));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((10.0..=20.0).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((200.0..=500.0).contains(&p99), "{p99}");
    }

    #[test]
    fn fragments_count_by_origin_and_health_runs() {
        let m = Metrics::default();
        let t = Duration::from_millis(3);
        m.fragment(Some("shop"), &Outcome::Ok, t);
        m.fragment(Some("shop"), &Outcome::Failed(FailureClass::Timeout), t);
        m.fragment(Some("shop"), &Outcome::Failed(FailureClass::NotFound), t);
        m.fragment(Some("shop"), &Outcome::Failed(FailureClass::Error), t);
        let s = m.origin("shop");
        assert_eq!(s.requests.load(Ordering::Relaxed), 4);
        assert_eq!(s.failures(FailureClass::Timeout), 1);
        m.fragment(Some("shop"), &Outcome::Ok, t);
        m.response(RequestKind::Page, 200, t);
        let text = m.render();
        assert!(
            text.contains("rain_requests_total{kind=\"page\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rain_fragments_total{origin=\"shop\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rain_fragments_total{origin=\"shop\",outcome=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rain_fragment_duration_seconds_count{origin=\"shop\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("rain_fragment_duration_seconds_bucket{origin=\"shop\",le=\"+Inf\"} 5"),
            "{text}"
        );
    }
}
