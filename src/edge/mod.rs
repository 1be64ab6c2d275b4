//! The edge's own requests: the router ([`Router`], the public listeners'
//! handler), pages, resources, forms and client-side calls, and the one place where
//! aggregation outcomes become HTTP statuses (`page.rs`). [`App`] is the
//! state they share.

mod app;
mod calls;
mod form;
mod page;
mod resource;
mod router;

pub use app::{load_snapshot, App, CurrentCert, Snapshot};
pub use router::Router;
