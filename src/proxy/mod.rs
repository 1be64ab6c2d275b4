//! The HTTP face of rain-edge: pingora's server and sessions for browsers
//! (with our checks around them), routing, origin connections (our own pooled HTTP/1.1
//! [`OriginClient`]), what origins receive, and the mapping of aggregation
//! outcomes to HTTP statuses.

mod admin;
mod client;
mod conn;
mod decode;
mod encode;
mod form;
mod forward;
mod front;
mod h1;
mod metrics;
mod page;
mod read;
mod resource;
mod server;
mod stale;

pub use client::{Exchange, OriginClient, OriginRequest, Upload};
pub use decode::{decode_content, to_utf8, DecodeError};
pub use forward::{new_request_id, BrowserContext, RequestSource, SessionState};
pub use server::{load_snapshot, run, App, RunError, RunOptions, Snapshot};
