//! Configuration: strict parsing of the TOML file, then validation of every
//! key with all errors reported at once (file + key + what to do). The result
//! is plain data that every other module may read; this module depends on no
//! other part of rain-edge (it is the bottom layer: docs/ARCHITECTURE.md).

mod load;
mod model;
mod units;

pub(crate) use load::template_file_problem;
pub use load::{
    load, parse, parse_origin, parse_origin_url, read_tls_files, ConfigError, ConfigErrors,
    TlsFiles,
};
pub use model::{
    is_under_base, Balance, Cidr, Config, CssScope, FailureClass, FragmentDefaults, Http2, Origin,
    OriginKind, Route, RouteTarget, ServerConfig, SessionConfig,
};
pub use units::{parse_duration, parse_size, parse_timeout_attr};
