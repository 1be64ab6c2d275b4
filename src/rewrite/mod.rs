//! Rewriting of origin content, synchronous and chunk-oriented: URL rules that
//! keep fetches inside their origin, and the whole-document stripping that
//! embeds an origin's page as a fragment. No tokio, no sockets, no session.
//! (Class scoping and link, resource and form rewriting build on this module.)

mod ajax;
mod css;
mod document;
mod entities;
mod fragment;
mod links;
mod selectors;
mod url;

pub use self::ajax::{map_components, AjaxPart};
pub use self::css::{rewrite_css, scope_class_attr, scoped_class, wrap_css, wrap_open, WRAP_CLOSE};
pub use self::document::{body_shape, strip_document, BodyShape};
pub use self::entities::{decode_attr, encode_attr};
pub use self::fragment::{form_url, fragment_handlers, FragmentRewrite};
pub use self::links::{
    call_base, classify, decode_component, encode_component, map_location, nav_value_ok,
    resource_url, strip_quirks, PageUrl, Target, UrlContext, RAIN_PREFIX,
};
pub(crate) use self::selectors::on_element;
pub use self::url::{
    absolute_within, foreign_location, is_rain_param, is_under_base, merge_query, resolve_src,
    resolve_within, starts_with_ci, stays_on_edge, strip_rain_params, UrlError,
};
