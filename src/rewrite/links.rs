//! Where a URL inside a fragment goes once rewritten (docs/configuration.md, rewriting):
//! - a link to the fragment's own origin becomes the page's URL with the
//!   fragment's navigation state `rain.{id}` set to that location (so reload,
//!   bookmarks and back work; other fragments keep theirs);
//! - a resource of the origin becomes `/_rain/r/{origin}/{path}?{query}`,
//!   fetched by rain-edge with the user's hidden session;
//! - everything else (other hosts, `javascript:`, `mailto:`, `#anchors`,
//!   `data:`) is left as it is.
//!
//! Framework quirks are removed on the way: `;jsessionid=` path parameters
//! (jsp, spring, wicket) and `PHPSESSID` query parameters (php). Pure
//! functions: no I/O.

use std::borrow::Cow;

use url::Url;

use super::url::{is_under_base, starts_with_ci};
use crate::config::OriginKind;

/// The prefix of every URL rain-edge serves itself.
pub const RAIN_PREFIX: &str = "/_rain/";

/// What a fragment's URLs are resolved against and rewritten for.
#[derive(Debug, Clone)]
pub struct UrlContext<'a> {
    /// The origin's name.
    pub origin: &'a str,
    /// The origin's base URL.
    pub base: &'a Url,
    /// The URL the fragment came from (relative URLs resolve against it).
    pub fragment_url: &'a Url,
    /// The origin's framework, for quirks.
    pub kind: OriginKind,
}

/// Where a redirect's `loc` (sent by the origin of `ctx`) leads the
/// browser: a location under the origin becomes `under(location, hash)`,
/// kept only if it stays on this host; another site's is passed on as the
/// URL it parses to. `None` when it leads nowhere valid.
pub fn map_location(
    ctx: &UrlContext<'_>,
    loc: &str,
    under: impl FnOnce(&str, &str) -> String,
) -> Option<String> {
    match classify(ctx, loc) {
        Target::Origin { location, hash } => {
            Some(under(&location, &hash)).filter(|to| super::url::stays_on_edge(to))
        }
        Target::Foreign => super::url::foreign_location(loc),
    }
}

impl<'a> UrlContext<'a> {
    /// The context of a body that `origin` sent from `url`.
    pub fn of(origin: &'a crate::config::Origin, url: &'a Url) -> UrlContext<'a> {
        UrlContext {
            origin: &origin.name,
            base: &origin.url,
            fragment_url: url,
            kind: origin.kind,
        }
    }
}

/// The page a fragment is shown in: its path and its query parameters (raw,
/// `rain.*` ones included), to build navigation links.
#[derive(Debug, Clone, Default)]
pub struct PageUrl {
    /// The page's path.
    pub path: String,
    /// Its query parameters as `name=value` pairs, raw, in order.
    pub params: Vec<String>,
    /// The `rain.*` navigation values, decoded once: (fragment id, location).
    navs: Vec<(String, String)>,
}

impl PageUrl {
    /// Parses a page's path and raw query.
    pub fn new(path: &str, query: Option<&str>) -> PageUrl {
        let params: Vec<String> = query
            .map(|q| {
                q.split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let navs = params
            .iter()
            .filter_map(|kv: &String| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let k = decode_component(k);
                let id = k.strip_prefix("rain.")?;
                Some((id.to_string(), decode_component(v)))
            })
            .collect();
        PageUrl {
            path: path.to_string(),
            params,
            navs,
        }
    }

    /// The navigation state of fragment `id`, decoded, if the page has one
    /// (the first, when a parameter repeats).
    pub fn nav(&self, id: &str) -> Option<String> {
        self.navs
            .iter()
            .find_map(|(k, v)| (k == id).then(|| v.clone()))
    }

    /// Every `rain.*` navigation value, decoded: (fragment id, location).
    pub fn nav_entries(&self) -> Vec<(String, String)> {
        self.navs.clone()
    }

    /// This page's URL as it is (path and full query).
    pub fn current(&self) -> String {
        if self.params.is_empty() {
            return self.path.clone();
        }
        format!("{}?{}", self.path, self.params.join("&"))
    }

    /// This page's URL with fragment `id` moved to `location` (a path below
    /// its origin's base, with its query).
    pub fn with_nav(&self, id: &str, location: &str) -> String {
        let key = format!("rain.{id}");
        let mut out = String::with_capacity(self.path.len() + location.len() + 32);
        out.push_str(&self.path);
        let mut sep = '?';
        for kv in &self.params {
            let k = kv.split('=').next().unwrap_or_default();
            if decode_component(k) == key {
                continue;
            }
            out.push(sep);
            out.push_str(kv);
            sep = '&';
        }
        out.push(sep);
        out.push_str(&key);
        out.push('=');
        out.push_str(&encode_component(location));
        out
    }
}

/// A query component decoded as a form would send it (`+` a space,
/// percent escapes, invalid UTF-8 replaced).
pub fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes a query component (everything but unreserved characters
/// and `/`, which is safe and keeps locations readable).
pub fn encode_component(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// What a URL in a fragment refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not the origin's: leave it as it is.
    Foreign,
    /// A location of the origin: the path below its base (no leading `/`),
    /// with the query, and the `#fragment` if any.
    Origin {
        /// Path below the base, and query.
        location: String,
        /// `#fragment`, with the `#`, or empty.
        hash: String,
    },
}

/// Resolves `raw` (as written in the fragment, entities decoded) and says
/// whether it is the origin's, with quirks removed.
pub fn classify(ctx: &UrlContext<'_>, raw: &str) -> Target {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') {
        return Target::Foreign;
    }
    if ["javascript:", "mailto:", "tel:", "data:", "blob:", "about:"]
        .iter()
        .any(|s| starts_with_ci(t, s))
    {
        return Target::Foreign;
    }
    let Ok(mut url) = ctx.fragment_url.join(t) else {
        return Target::Foreign;
    };
    if !is_under_base(ctx.base, &url) {
        return Target::Foreign;
    }
    strip_quirks(&mut url, ctx.kind);
    if !is_under_base(ctx.base, &url) {
        return Target::Foreign;
    }
    let below = url.path().get(ctx.base.path().len()..).unwrap_or_default();
    let mut location = below.to_string();
    if let Some(q) = url.query() {
        location.push('?');
        location.push_str(q);
    }
    let hash = url.fragment().map(|f| format!("#{f}")).unwrap_or_default();
    Target::Origin { location, hash }
}

/// Removes framework session ids from a URL: `;jsessionid=...` path
/// parameters (jsp, spring, wicket; also harmless elsewhere) and `PHPSESSID`
/// query parameters (php).
pub fn strip_quirks(url: &mut Url, kind: OriginKind) {
    let path = url.path();
    if let Some(stripped) = strip_jsessionid(path) {
        let p = stripped.into_owned();
        url.set_path(&p);
    }
    if kind == OriginKind::Php {
        if let Some(q) = url.query() {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| !starts_with_ci(kv, "phpsessid="))
                .collect();
            if kept.len() != q.split('&').count() {
                let joined = kept.join("&");
                url.set_query((!joined.is_empty()).then_some(joined.as_str()));
            }
        }
    }
}

fn strip_jsessionid(path: &str) -> Option<Cow<'_, str>> {
    let lower = path.to_ascii_lowercase();
    let start = lower.find(";jsessionid=")?;
    let end = path[start + 1..]
        .find(['/', ';'])
        .map(|i| start + 1 + i)
        .unwrap_or(path.len());
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..start]);
    out.push_str(&path[end..]);
    Some(Cow::Owned(out))
}

/// The `/_rain/` URL that serves an origin resource.
pub fn resource_url(origin: &str, location: &str) -> String {
    format!("{RAIN_PREFIX}r/{origin}/{location}")
}

/// The `/_rain/` prefix under which the browser reaches origin `origin`
/// with its hidden session (`X-Rain-Base`, client-side calls).
pub fn call_base(origin: &str) -> String {
    format!("{RAIN_PREFIX}o/{origin}/")
}

/// Whether a navigation value is acceptable: a location below an origin's
/// base (no scheme, no host, no climbing above the base). Checked on every
/// `rain.*` parameter of a page; a bad one is a 400.
pub fn nav_value_ok(value: &str) -> bool {
    let Ok(probe) = Url::parse("http://probe.invalid/base/") else {
        return false;
    };
    let t = value.trim_start();
    let path = t.split(['?', '#']).next().unwrap_or_default();
    if path.starts_with("//") || path.contains('\\') {
        return false;
    }
    // A scheme ("http:", "javascript:") before the first slash.
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return false;
    }
    super::url::resolve_src(&probe, t).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(base: &'a Url, frag: &'a Url, kind: OriginKind) -> UrlContext<'a> {
        UrlContext {
            origin: "shop",
            base,
            fragment_url: frag,
            kind,
        }
    }

    #[test]
    fn classification() {
        let base = Url::parse("http://h:1/shop/").expect("url");
        let frag = Url::parse("http://h:1/shop/cart/mini?x=1").expect("url");
        let c = ctx(&base, &frag, OriginKind::Generic);
        let origin = |l: &str, h: &str| Target::Origin {
            location: l.into(),
            hash: h.into(),
        };
        assert_eq!(classify(&c, "view?p=2"), origin("cart/view?p=2", ""));
        assert_eq!(classify(&c, "/shop/a#top"), origin("a", "#top"));
        assert_eq!(classify(&c, "http://h:1/shop/b"), origin("b", ""));
        assert_eq!(classify(&c, "../../other"), Target::Foreign);
        assert_eq!(classify(&c, "/elsewhere"), Target::Foreign);
        assert_eq!(classify(&c, "https://evil.example/shop/"), Target::Foreign);
        assert_eq!(classify(&c, "javascript:alert(1)"), Target::Foreign);
        assert_eq!(classify(&c, "  JAVASCRIPT:x"), Target::Foreign);
        assert_eq!(classify(&c, "#anchor"), Target::Foreign);
        assert_eq!(classify(&c, "mailto:a@b"), Target::Foreign);
    }

    #[test]
    fn quirks() {
        let base = Url::parse("http://h:1/app/").expect("url");
        let frag = Url::parse("http://h:1/app/form").expect("url");
        let c = ctx(&base, &frag, OriginKind::Jsp);
        assert_eq!(
            classify(&c, "counter.jsp;jsessionid=ABC123?x=1"),
            Target::Origin {
                location: "counter.jsp?x=1".into(),
                hash: String::new()
            }
        );
        assert_eq!(
            classify(&c, "./form;JSESSIONID=A.node0?0"),
            Target::Origin {
                location: "form?0".into(),
                hash: String::new()
            }
        );
        let p = ctx(&base, &frag, OriginKind::Php);
        assert_eq!(
            classify(&p, "x.php?a=1&PHPSESSID=abc&b=2"),
            Target::Origin {
                location: "x.php?a=1&b=2".into(),
                hash: String::new()
            }
        );
        assert_eq!(
            classify(&p, "x.php?PHPSESSID=abc"),
            Target::Origin {
                location: "x.php".into(),
                hash: String::new()
            }
        );
    }

    #[test]
    fn page_navigation_urls() {
        let page = PageUrl::new("/shop", Some("q=1&rain.cart=old&rain.news=n%3F2"));
        assert_eq!(page.nav("cart").as_deref(), Some("old"));
        assert_eq!(page.nav("news").as_deref(), Some("n?2"));
        assert_eq!(
            page.with_nav("cart", "view?p=2&x=y"),
            "/shop?q=1&rain.news=n%3F2&rain.cart=view%3Fp%3D2%26x%3Dy"
        );
        assert_eq!(
            PageUrl::new("/", None).with_nav("a.b", "x y"),
            "/?rain.a.b=x%20y"
        );
        assert_eq!(page.nav_entries().len(), 2);
    }

    #[test]
    fn navigation_values() {
        for ok in ["cart/view?p=2", "", "a/b/../c", "x?u=http://h/"] {
            assert!(nav_value_ok(ok), "{ok}");
        }
        for bad in [
            "http://evil/",
            "//evil/x",
            "../x",
            "%2e%2e/x",
            "a/%2f/b",
            "a\\b",
            "javascript:alert(1)",
        ] {
            assert!(!nav_value_ok(bad), "{bad}");
        }
    }
}
