//! The `<fragment>` element's attributes (docs/configuration.md, the fragment element), validated, and the
//! resolution of `origin` + `src` to a URL under a configured origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use super::split::RawFragment;
use crate::config::{parse_timeout_attr, Config, FailureClass, Origin};
use crate::rewrite::{absolute_within, resolve_src, starts_with_ci};

/// A validated `<fragment>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSpec {
    /// Explicit `id`, if given.
    pub id: Option<String>,
    /// `origin`, if given.
    pub origin: Option<String>,
    /// `src`: a path below the origin, or an absolute URL under one.
    pub src: String,
    /// `timeout` override.
    pub timeout: Option<Duration>,
    /// `fallback` template file.
    pub fallback: Option<String>,
    /// `fallback-src` fetched when the fragment fails.
    pub fallback_src: Option<String>,
    /// `public`: nothing of the user is sent.
    pub public: bool,
    /// `primary`: the page status follows this fragment.
    pub primary: bool,
    /// `async`: streamed before `</body>` when ready.
    pub is_async: bool,
    /// Inline fallback.
    pub children: Bytes,
}

/// Whether `id` may be used as a fragment id: it ends up in URLs, element ids
/// and inline scripts, so it is kept to `[A-Za-z0-9_.-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl FragmentSpec {
    /// Validates a raw element. The error says what is wrong with it.
    pub fn parse(raw: &RawFragment) -> Result<FragmentSpec, String> {
        let src = match raw.attr("src").map(str::trim) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => return Err("a <fragment> needs a `src`".into()),
        };
        // `id=""` is no id (Tailor's templates write it).
        let id = raw
            .attr("id")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(id) = &id {
            if !valid_id(id) {
                return Err(format!(
                    "id `{id}` may use only letters, digits, `_`, `-` and `.`"
                ));
            }
        }
        let timeout = match raw.attr("timeout") {
            None => None,
            Some(t) => Some(parse_timeout_attr(t).map_err(|e| format!("timeout: {e}"))?),
        };
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err("timeout must be more than 0".into());
        }
        let nonempty = |name: &str| {
            raw.attr(name)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(FragmentSpec {
            id,
            origin: nonempty("origin"),
            src,
            timeout,
            fallback: nonempty("fallback"),
            fallback_src: nonempty("fallback-src"),
            public: raw.attr("public").is_some(),
            primary: raw.attr("primary").is_some(),
            is_async: raw.attr("async").is_some(),
            children: raw.children.clone(),
        })
    }
}

/// Where a fragment is fetched from.
#[derive(Debug, Clone)]
pub struct Target {
    /// The origin serving it.
    pub origin: Arc<Origin>,
    /// The full URL, under the origin's base.
    pub url: Url,
}

/// Resolves `origin` + `src` to a URL under a configured origin. Errors carry
/// the failure class a run-time fragment gets (an unknown origin is
/// `not_found`, a `src` that would leave its origin is `error`).
pub fn resolve_target(
    cfg: &Config,
    origin: Option<&str>,
    src: &str,
) -> Result<Target, (FailureClass, String)> {
    let start = src.trim_start();
    let absolute = ["http://", "https://", "//"]
        .iter()
        .any(|p| starts_with_ci(start, p));
    // `gopher:…`, `file:…`, `data:…`: a URL of another scheme, never a
    // path below an origin (a browser would not read it as one either).
    if !absolute && url_scheme(start).is_some() {
        return Err((
            FailureClass::NotFound,
            format!("`{src}` is not an http URL under a configured origin"),
        ));
    }
    let named = match origin {
        Some(name) => Some(cfg.origins.get(name).cloned().ok_or_else(|| {
            (
                FailureClass::NotFound,
                format!("`{name}` is not a configured origin"),
            )
        })?),
        None => None,
    };
    if absolute {
        let parsed = Url::parse(src.trim()).map_err(|_| {
            (
                FailureClass::NotFound,
                format!("`{src}` is not under any configured origin's URL"),
            )
        })?;
        let origin = match named {
            Some(o) => o,
            None => cfg.origin_for_url(&parsed).cloned().ok_or_else(|| {
                (
                    FailureClass::NotFound,
                    format!("`{src}` is not under any configured origin's URL"),
                )
            })?,
        };
        let url = absolute_within(&origin.url, parsed, src).map_err(|e| {
            (
                FailureClass::NotFound,
                format!("{e} (origin `{}`)", origin.name),
            )
        })?;
        return Ok(Target { origin, url });
    }
    let origin = named.ok_or_else(|| {
        (
            FailureClass::NotFound,
            format!("`src=\"{src}\"` is a path but the fragment names no `origin`"),
        )
    })?;
    let url = resolve_src(&origin.url, src).map_err(|e| (FailureClass::Error, e.to_string()))?;
    Ok(Target { origin, url })
}

/// The scheme of `s` when it starts like a URL (`scheme:`, RFC 3986 §3.1).
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(attrs: &[(&str, &str)]) -> RawFragment {
        RawFragment {
            attrs: attrs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            children: Bytes::from_static(b"<p>x</p>"),
            offset: 0,
        }
    }

    #[test]
    fn schemes_are_told_from_paths() {
        for s in [
            "gopher://h/x",
            "file:///etc/passwd",
            "data:text/html,x",
            "javascript:x",
            "a+b.c-d:x",
        ] {
            assert!(url_scheme(s).is_some(), "{s}");
        }
        for s in ["/a:b", "a/b:c", "1a:b", ":x", "cart?x=a:b", "", "./a:b"] {
            assert!(url_scheme(s).is_none(), "{s}");
        }
    }

    #[test]
    fn attributes() {
        let s = FragmentSpec::parse(&raw(&[
            ("id", "cart"),
            ("origin", "shop"),
            ("src", "/cart"),
            ("timeout", "250ms"),
            ("primary", ""),
            ("async", ""),
            ("public", ""),
            ("fallback", "f.html"),
            ("fallback-src", "/fb"),
        ]))
        .expect("valid");
        assert_eq!(s.id.as_deref(), Some("cart"));
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        assert!(s.primary && s.is_async && s.public);
        assert_eq!(s.fallback_src.as_deref(), Some("/fb"));
        assert_eq!(&s.children[..], b"<p>x</p>");
        let t = FragmentSpec::parse(&raw(&[("src", "http://h/x"), ("timeout", "3000")]))
            .expect("valid");
        assert_eq!(t.timeout, Some(Duration::from_secs(3)));
        assert!(!t.primary && !t.is_async && !t.public);
    }

    #[test]
    fn bad_attributes() {
        assert!(FragmentSpec::parse(&raw(&[("origin", "shop")])).is_err());
        assert!(FragmentSpec::parse(&raw(&[("src", "/x"), ("timeout", "soon")])).is_err());
        assert!(FragmentSpec::parse(&raw(&[("src", "/x"), ("id", "a\"b")])).is_err());
        assert!(FragmentSpec::parse(&raw(&[("src", "/x"), ("timeout", "0")])).is_err());
    }
}
