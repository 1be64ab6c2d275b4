//! rain-edge: a reverse proxy that composes pages from remote fragments.
//!
//! The layers, each depending only on those below it (tests/architecture.rs
//! checks it; docs/ARCHITECTURE.md tells the request's way through them):
//!
//! - `server`: the process: pingora's `Server`, listeners, signals, drain.
//! - `admin`: the admin API and `/metrics` (its listener's handler).
//! - `edge`: the router, pages, resources, forms; outcomes become statuses.
//! - `upstream`: connections to origins, what they receive, breakers,
//!   shared fetches, stale answers.
//! - `http`: pingora glue for browsers: the head checks pingora lacks and
//!   one request's answer on pingora's session.
//! - `telemetry`: metrics and the access log.
//! - `aggregate`: layouts into pages of parallel fragments.
//! - `session`: the user's hidden sessions and cookie jars.
//! - `cluster`: the instances sharing a store, and their shared registry of
//!   origins.
//! - `rewrite`: the URL, HTML and CSS rules.
//! - `config`: the TOML file, validated (a leaf).
//! - `sync`: locks that outlive a panic (a leaf).
//!
//! `demo` (the `demo` feature) holds the demo origins.

pub mod admin;
pub mod aggregate;
pub mod cluster;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod edge;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod sync;
pub mod telemetry;
pub mod upstream;
