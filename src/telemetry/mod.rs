//! What rain-edge counts and logs about its own work: metrics (Prometheus
//! text on the admin listener) and the access log.

mod access;
mod metrics;

pub use access::{access_line, Access};
pub use metrics::{
    escape_label, Histogram, InFlight, Metrics, OriginStats, PageLog, RequestKind, PAGE_LOG,
};
