//! URL rules that keep every fetch inside its origin: resolving a fragment's
//! `src` below the origin's base URL, checking that a URL (an absolute `src`,
//! a redirect's `Location`) stays under a base, and merging page parameters
//! into a fragment's query. Pure functions: no I/O.

use std::fmt;

use url::Url;

/// Why a `src` or a redirect cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A `..` (plain or percent-encoded) would climb above the origin's base.
    EscapesBase(String),
    /// An encoded `/` or `\`, a backslash, or a control character in the path.
    BadPath(String),
    /// An absolute URL that is not under the origin's base URL.
    ForeignUrl(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::EscapesBase(s) => write!(f, "`{s}` climbs above its origin's base path"),
            UrlError::BadPath(s) => write!(
                f,
                "`{s}` has an encoded slash, a backslash or a control character in its path"
            ),
            UrlError::ForeignUrl(s) => write!(f, "`{s}` is not under any configured origin's URL"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Whether `url` lies under `base` (it lives with the origins' model in
/// `config`, which owns what an origin's base is).
pub use crate::config::is_under_base;

/// Whether a path segment is `.` or `..` once `%2e` is decoded and its
/// path parameters (`;jsessionid=...`, which servlet containers drop before
/// resolving: `..;/` climbs there) are set aside.
fn dot_segment(seg: &str) -> Option<usize> {
    let name = seg.split(';').next().unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "." | "%2e" => Some(1),
        ".." | ".%2e" | "%2e." | "%2e%2e" => Some(2),
        _ => None,
    }
}

/// Resolves a fragment's `src` (a path and query, with or without a leading
/// `/`) below `base`. A leading `/` does not leave the base; `.` and `..`
/// segments (also percent-encoded) are resolved and may not climb above it.
pub fn resolve_src(base: &Url, src: &str) -> Result<Url, UrlError> {
    let src = src.trim();
    let (path, query) = match src.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (src, None),
    };
    let path = path.split('#').next().unwrap_or_default();
    if path.contains('\\') || has_encoded_slash(path) || path.chars().any(|c| c.is_control()) {
        return Err(UrlError::BadPath(src.to_string()));
    }
    let mut segs: Vec<&str> = Vec::new();
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = raw.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in raw.iter().enumerate() {
        match dot_segment(seg) {
            Some(1) => trailing_slash = i == last,
            Some(_) => {
                if segs.pop().is_none() {
                    return Err(UrlError::EscapesBase(src.to_string()));
                }
                trailing_slash = i == last;
            }
            _ if seg.is_empty() && i != last => {}
            _ => {
                segs.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut full = String::from(base.path());
    full.push_str(&segs.join("/"));
    if trailing_slash && !segs.is_empty() {
        full.push('/');
    }
    let mut url = base.clone();
    url.set_path(&full);
    url.set_query(query.filter(|q| !q.is_empty()));
    // NOTE: `set_path` percent-encodes what must be; check again that the
    // result is still below the base, whatever the input was.
    if !is_under_base(base, &url) {
        return Err(UrlError::EscapesBase(src.to_string()));
    }
    Ok(url)
}

/// Resolves an absolute URL (a Tailor-style `src`, a redirect's `Location`)
/// and checks that it stays under `base`.
pub fn resolve_within(base: &Url, current: &Url, reference: &str) -> Result<Url, UrlError> {
    let reference = reference.trim();
    check_reference(reference)?;
    let url = current
        .join(reference)
        .map_err(|_| UrlError::ForeignUrl(reference.to_string()))?;
    keep_within(base, url, reference)
}

/// [`resolve_within`] for a reference already parsed as an absolute URL
/// (`parsed` is what `reference` parses to): no second parse.
pub fn absolute_within(base: &Url, parsed: Url, reference: &str) -> Result<Url, UrlError> {
    let reference = reference.trim();
    check_reference(reference)?;
    keep_within(base, parsed, reference)
}

/// No encoded slash or backslash in the path, no control character.
fn check_reference(reference: &str) -> Result<(), UrlError> {
    let path_part = reference.split(['?', '#']).next().unwrap_or_default();
    if has_encoded_slash(path_part) || reference.chars().any(|c| c.is_control()) {
        return Err(UrlError::BadPath(reference.to_string()));
    }
    Ok(())
}

fn keep_within(base: &Url, url: Url, reference: &str) -> Result<Url, UrlError> {
    if is_under_base(base, &url) {
        Ok(url)
    } else {
        Err(UrlError::ForeignUrl(reference.to_string()))
    }
}

/// Builds a fragment URL's query: the page's parameters (minus every `rain.*`
/// one, and minus the names the fragment's own query already has), followed by
/// the fragment's own. Both inputs are raw (still percent-encoded) queries.
pub fn merge_query(own: Option<&str>, page: Option<&str>) -> Option<String> {
    let own = own.filter(|q| !q.is_empty());
    let own_names: Vec<&str> = own
        .map(|q| {
            q.split('&')
                .map(|kv| kv.split('=').next().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<&str> = Vec::new();
    if let Some(page) = page {
        for kv in page.split('&') {
            if kv.is_empty() {
                continue;
            }
            let name = kv.split('=').next().unwrap_or_default();
            if is_rain_param(name) || own_names.contains(&name) {
                continue;
            }
            out.push(kv);
        }
    }
    if let Some(own) = own {
        out.extend(own.split('&').filter(|kv| !kv.is_empty()));
    }
    (!out.is_empty()).then(|| out.join("&"))
}

/// Whether `location` is a path on the edge's own host, as every browser
/// reads it (docs/SECURITY.md, open redirects): it starts with one `/`,
/// and has no second `/` or `\\` after it, no backslash anywhere, and no
/// space, control byte or DEL (browsers drop tabs and line breaks, so
/// `/<TAB>/evil.example` would be `//evil.example`, another host).
pub fn stays_on_edge(location: &str) -> bool {
    let b = location.as_bytes();
    b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && b.iter().all(|&c| c > 0x20 && c != 0x7f && c != b'\\')
}

/// An origin's redirect to another site, as the http(s) URL it parses to
/// (serialised: any raw byte is percent-encoded), or `None`.
pub fn foreign_location(location: &str) -> Option<String> {
    let url = Url::parse(location.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// Whether a raw query parameter name is rain-edge's own (`rain.*`, also when
/// the dot is percent-encoded).
pub fn is_rain_param(raw_name: &str) -> bool {
    starts_with_ci(raw_name, "rain.") || starts_with_ci(raw_name, "rain%2e")
}

/// Whether `s` starts with `prefix`, ASCII case ignored (no allocation).
pub fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether a path hides path syntax from the segment checks: an encoded
/// slash or backslash (`%2f`, `%5c`), or a dot, slash or backslash encoded
/// twice (`%252e`, `%252f`, `%255c`, which an origin that decodes again
/// would read as syntax). Any case.
fn has_encoded_slash(path: &str) -> bool {
    let b = path.as_bytes();
    let once = |w: &[u8]| w.eq_ignore_ascii_case(b"2f") || w.eq_ignore_ascii_case(b"5c");
    b.windows(3).any(|w| w[0] == b'%' && once(&w[1..]))
        || b.windows(5).any(|w| {
            w[0] == b'%'
                && w[1..3].eq_ignore_ascii_case(b"25")
                && (once(&w[3..]) || w[3..].eq_ignore_ascii_case(b"2e"))
        })
}

/// The query with every `rain.*` parameter removed (for `X-Rain-Page-Url`
/// and layout fetches).
pub fn strip_rain_params(query: Option<&str>) -> Option<String> {
    merge_query(None, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://h:81/shop/").expect("url")
    }

    #[test]
    fn src_resolves_below_the_base() {
        let b = base();
        assert_eq!(
            resolve_src(&b, "/cart").expect("ok").as_str(),
            "http://h:81/shop/cart"
        );
        assert_eq!(
            resolve_src(&b, "cart/mini?size=s").expect("ok").as_str(),
            "http://h:81/shop/cart/mini?size=s"
        );
        assert_eq!(
            resolve_src(&b, "/a/../b").expect("ok").as_str(),
            "http://h:81/shop/b"
        );
        assert_eq!(
            resolve_src(&b, "/").expect("ok").as_str(),
            "http://h:81/shop/"
        );
        assert_eq!(
            resolve_src(&b, "/dir/").expect("ok").as_str(),
            "http://h:81/shop/dir/"
        );
        assert_eq!(
            resolve_src(&b, "//evil.example/x").expect("ok").as_str(),
            "http://h:81/shop/evil.example/x"
        );
    }

    #[test]
    fn src_cannot_climb_or_smuggle() {
        let b = base();
        for bad in [
            "/../admin",
            "..",
            "/a/../../x",
            "/%2e%2e/x",
            "/.%2E/x",
            "/%2E./x",
        ] {
            assert!(
                matches!(resolve_src(&b, bad), Err(UrlError::EscapesBase(_))),
                "{bad}"
            );
        }
        for bad in ["/a%2f..%2f..%2fx", "/a\\..\\x", "/a%5cb", "/a\u{0}b"] {
            assert!(
                matches!(resolve_src(&b, bad), Err(UrlError::BadPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn absolute_urls_must_stay_under_the_base() {
        let b = base();
        let cur = Url::parse("http://h:81/shop/cart").expect("url");
        assert!(resolve_within(&b, &cur, "http://h:81/shop/x").is_ok());
        assert!(resolve_within(&b, &cur, "./y?z=1").is_ok());
        assert!(resolve_within(&b, &cur, "/shop").is_ok());
        for bad in [
            "http://h:82/shop/x",
            "http://evil/shop/x",
            "/other",
            "../x",
            "/shop/%2e%2e/x",
            "//evil/shop/",
            "http://u@h:81/shop/",
        ] {
            assert!(resolve_within(&b, &cur, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_merging() {
        assert_eq!(
            merge_query(Some("size=s"), Some("q=1&rain.cart=/x&size=l")),
            Some("q=1&size=s".into())
        );
        assert_eq!(merge_query(None, Some("rain.a=1&rain%2Eb=2")), None);
        assert_eq!(merge_query(Some("a=1"), None), Some("a=1".into()));
        assert_eq!(strip_rain_params(Some("x=1&rain.y=2")), Some("x=1".into()));
    }

    #[test]
    fn prefixes_and_encoded_slashes_ignore_case() {
        assert!(starts_with_ci("HTTP://x", "http://"));
        assert!(starts_with_ci("Rain%2Eid=1", "rain%2e"));
        assert!(!starts_with_ci("ht", "http://"));
        assert!(!starts_with_ci("é", "e"));
        assert!(has_encoded_slash("/a%2Fb") && has_encoded_slash("/a%5c"));
        assert!(!has_encoded_slash("/a%2"));
        assert!(
            has_encoded_slash("/%252e%252e/x")
                && has_encoded_slash("/a%252F")
                && has_encoded_slash("/a%255c")
        );
        assert!(!has_encoded_slash("/100%25/x"));
        assert_eq!(dot_segment("..;jsessionid=1"), Some(2));
        assert_eq!(dot_segment(".;x"), Some(1));
        assert_eq!(dot_segment("a;.."), None);
        assert!(resolve_within(
            &Url::parse("http://o/").unwrap(),
            &Url::parse("http://o/").unwrap(),
            "http://o/a%2F..%2Fb"
        )
        .is_err());
    }

    #[test]
    fn locations_that_leave_the_edge() {
        for ok in ["/", "/a/b?x=1#h", "/a//b", "/%2F%2Fevil.example"] {
            assert!(stays_on_edge(ok), "{ok}");
        }
        for bad in [
            "//evil.example/x",
            "/\\evil.example",
            "/\t/evil.example/x",
            "/\r\n/evil",
            "/a\0b",
            "\\\\evil",
            "https://evil.example/",
            "evil.example",
            "",
            "/a b",
        ] {
            assert!(!stays_on_edge(bad), "{bad:?}");
        }
    }
}
