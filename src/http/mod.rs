//! The browser-facing HTTP layer on pingora: [`Front`] is the pingora
//! application of a listening service (the head checks and deadlines that
//! pingora lacks, then a [`Handler`]); [`BrowserConn`] is one request and
//! its answer on pingora's session. No HTTP codec of our own: pingora reads
//! and writes the framing.

mod conn;
mod encode;
mod fields;
mod front;

pub use conn::{
    check_head, check_host, BodyError, BrowserConn, HeadError, HeadLimits, ResponseHead,
};
pub use fields::{cache_directives, content_length, LengthError};
pub use front::{
    plain_listener, tls_listener, Front, Handler, HelloDeadline, Settings, TrackGuard, Tracker,
};
