//! Golden tests of fragment rewriting: each `fixtures/rewrite/NAME.src.html`
//! is rewritten as fragment `cart` of origin `shop`
//! (`http://shop.example:8081/shop/`, body from `.../shop/cart/mini`) shown in
//! page `/page?q=1&rain.news=n`, at many chunk sizes; the output must equal
//! `NAME.expected.html`. The origin's kind is the name's first word when it is
//! one (`jsp-...`, `php-...`); generic ones rename classes with prefix `shop`,
//! the others have `css_scope = "off"`. Replay: `RAIN_REWRITE_CHUNK=5`; write missing
//! expectations (then read them!): `RAIN_REWRITE_BLESS=1`.

use std::path::Path;
use std::sync::Arc;

use rain_edge::aggregate::{Item, Splitter};
use rain_edge::config::{CssScope, OriginKind};
use rain_edge::rewrite::{FragmentRewrite, PageUrl};
use url::Url;

fn rewrite(src: &[u8], kind: OriginKind, chunk: &mut dyn FnMut() -> usize) -> String {
    let rw = Arc::new(FragmentRewrite {
        id: "cart".into(),
        origin: "shop".into(),
        base: Url::parse("http://shop.example:8081/shop/").expect("url"),
        fragment_url: Url::parse("http://shop.example:8081/shop/cart/mini").expect("url"),
        kind,
        page: Arc::new(PageUrl::new("/page", Some("q=1&rain.news=n"))),
        css_scope: if kind == OriginKind::Generic {
            CssScope::Rename
        } else {
            CssScope::Off
        },
        class_prefix: "shop".into(),
        page_read: Default::default(),
    });
    crate::support::feed(Splitter::for_fragment(rw, usize::MAX), src, chunk)
        .into_iter()
        .map(|item| match item {
            Item::Static(b) => String::from_utf8_lossy(&b).into_owned(),
            Item::BodyEnd => "[BODY-END]".into(),
            Item::Slot(raw) => format!("[FRAGMENT {:?}]", raw.attrs),
        })
        .collect()
}

#[test]
fn rewriter_golden_files_at_random_chunk_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rewrite");
    let cases = crate::support::golden(
        &dir,
        ".expected.html",
        "RAIN_REWRITE_CHUNK",
        "RAIN_REWRITE_BLESS",
        &|stem, src, sizes| {
            let kind = stem
                .split('-')
                .next()
                .and_then(OriginKind::parse)
                .unwrap_or(OriginKind::Generic);
            rewrite(src, kind, sizes)
        },
    );
    assert!(
        cases >= 3,
        "only {cases} rewrite cases in {}",
        dir.display()
    );
}
