//! What rain-edge counts and logs about its own work: metrics (Prometheus
//! text on the admin listener), the access log, and the last pages'
//! waterfalls (`/pages`).

mod access;
mod metrics;

pub use access::{access_line, Access};
pub use metrics::{
    escape_label, FragmentTiming, Histogram, InFlight, Metrics, OriginStats, PageLog, PageRecord,
    PageRecords, RequestKind, PAGE_LOG,
};
