//! The invariants the fuzz targets (`fuzz/`) check on arbitrary input, in
//! one place so that the kept corpora replay through the same checks in
//! `cargo test` (`tests/fuzz_regressions.rs`). Each function panics when an
//! invariant breaks; nothing here runs while serving.

use std::sync::Arc;

use url::Url;

use crate::aggregate::{merge_statics, Item, Splitter};
use crate::config::{CssScope, OriginKind};
use crate::rewrite::{
    is_under_base, resolve_src, resolve_within, rewrite_css, FragmentRewrite, PageUrl,
};

const BASE: &str = "http://shop.example:8081/shop/";
const FRAGMENT: &str = "http://shop.example:8081/shop/list/item";

fn base() -> Option<(Url, Url)> {
    Some((Url::parse(BASE).ok()?, Url::parse(FRAGMENT).ok()?))
}

/// URL resolution: whatever a fragment's `src`, a link or a redirect says,
/// what resolves stays under the origin's base.
pub fn url_resolution(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((base, fragment)) = base() else {
        return;
    };
    for reference in text.split('\n') {
        if let Ok(u) = resolve_src(&base, reference) {
            assert!(
                is_under_base(&base, &u),
                "src {reference:?} left the base: {u}"
            );
        }
        if let Ok(u) = resolve_within(&base, &fragment, reference) {
            assert!(
                is_under_base(&base, &u),
                "link {reference:?} left the base: {u}"
            );
        }
    }
}

/// Fragment rewriting: never fails on any bytes, and gives the same output
/// whether the body comes whole or in two pieces (the first byte picks
/// where it is cut).
pub fn fragment_rewrite(data: &[u8]) {
    let Some((base, fragment)) = base() else {
        return;
    };
    let rewrite = Arc::new(FragmentRewrite {
        id: "f".into(),
        origin: "shop".into(),
        base,
        fragment_url: fragment,
        kind: OriginKind::Jsp,
        page: Arc::new(PageUrl::new("/page", Some("q=1"))),
        css_scope: CssScope::Rename,
        class_prefix: "shop".into(),
        page_read: Default::default(),
    });
    let run = |cut: usize| -> Option<Vec<Item>> {
        let mut s = Splitter::for_fragment(rewrite.clone(), usize::MAX);
        let cut = cut.min(data.len());
        let mut items = Vec::new();
        for piece in [&data[..cut], &data[cut..]] {
            s.write(piece).ok()?;
            items.extend(s.take_ready());
        }
        items.extend(s.end().ok()?);
        Some(merge_statics(items))
    };
    let cut = data.first().map_or(0, |b| usize::from(*b));
    let whole = run(data.len());
    let split = run(cut);
    assert_eq!(
        whole, split,
        "the output depends on where the body was cut at {cut}"
    );
}

/// Stylesheet rewriting: never panics, and its output never holds `</`
/// (it must stand inside a `<style>` element).
pub fn css_rewrite(data: &[u8]) {
    let Ok(css) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = rewrite_css(css, Some("shop"), |u| Some(format!("/_rain/r/shop/{u}"))) {
        assert!(!out.contains("</"), "`</` in rewritten CSS: {out}");
    }
}

/// The config parser: any text gives a config or a list of errors, never
/// a panic.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::parse(std::path::Path::new("/nonexistent/fuzz.toml"), text);
}

/// The cookie jar: whatever `Set-Cookie` lines an origin sends, recording
/// them and asking for the origin's cookies never fails. (Isolation is by
/// construction: a jar belongs to one user and one origin, and is only ever
/// asked for that origin's URLs; `tests/jar_props.rs` checks it. A jar alone
/// would offer `Domain=example` cookies to any `*.example` host.)
pub fn cookie_jar(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((base, fragment)) = base() else {
        return;
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut jar = cookie_store::CookieStore::default();
    crate::session::apply_set_cookies(&mut jar, &base, &lines);
    if let Some(header) = crate::session::cookie_header_value(&jar, &fragment) {
        assert!(
            !header.contains(['\r', '\n']),
            "a line break in a cookie: {header:?}"
        );
    }
}
