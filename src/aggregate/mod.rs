//! Aggregation: a layout becomes a plan of static runs and fragment slots;
//! every fragment is fetched in parallel under its own deadline through a
//! [`FragmentSource`]; the page is written in document order with fallbacks
//! for every failure. Knows nothing of HTTP, sockets or sessions.

mod assets;
mod compose;
mod fetch;
mod spec;
mod split;
mod templates;

pub use compose::{
    within_deadline, Outcome, Page, PageContext, PageWriteError, PageWriter, Submitted,
    SubmittedOutcome,
};
pub use fetch::{
    class_of_status, fetch_following, FetchFailure, FetchRequest, FetchResponse, Fetched,
    FragmentSource, Rewritten, MAX_REDIRECTS,
};
pub use spec::{resolve_target, valid_id, FragmentSpec, Target};
pub use split::{
    merge_statics, needs_user, split, split_fragment, Item, RawFragment, SplitError, Splitter,
};
pub use templates::{builtin_placeholder, check_templates, Templates};
