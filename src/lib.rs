//! rain-edge: a reverse proxy that composes pages from remote fragments.
//!
//! `config` reads and validates the TOML file; `aggregate` turns layouts into
//! pages of parallel fragments; `rewrite` holds the URL and HTML rules;
//! `session` the user's state; `proxy` is the only module that speaks HTTP
//! (its own HTTP/1.1 codec) to browsers and origins; `demo` serves the
//! bundled demo origins.

pub mod aggregate;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
pub mod rewrite;
pub mod session;
