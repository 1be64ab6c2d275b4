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

use rain_edge::aggregate::{merge_statics, Item, Splitter};
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
    });
    let mut s = Splitter::for_fragment(rw);
    let mut items = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let n = chunk().clamp(1, src.len() - i);
        s.write(&src[i..i + n]).expect("write");
        items.extend(s.take_ready());
        i += n;
    }
    items.extend(s.end().expect("end"));
    merge_statics(items)
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
    let replay: Option<usize> = std::env::var("RAIN_REWRITE_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok());
    let bless = std::env::var("RAIN_REWRITE_BLESS").is_ok();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/rewrite")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut cases = 0;
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(stem) = name.strip_suffix(".src.html") else {
            continue;
        };
        cases += 1;
        let kind = stem
            .split('-')
            .next()
            .and_then(OriginKind::parse)
            .unwrap_or(OriginKind::Generic);
        let src = std::fs::read(&path).expect("read");
        let expected_path = dir.join(format!("{stem}.expected.html"));
        let whole = rewrite(&src, kind, &mut || usize::MAX);
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(e) => e,
            Err(_) if bless => {
                std::fs::write(&expected_path, &whole).expect("bless");
                whole.clone()
            }
            Err(_) => panic!(
                "{} is missing (RAIN_REWRITE_BLESS=1 writes it)",
                expected_path.display()
            ),
        };
        assert_eq!(whole, expected, "{name}, whole input");
        if let Some(n) = replay {
            assert_eq!(
                rewrite(&src, kind, &mut || n),
                expected,
                "{name}, chunk size {n}"
            );
            continue;
        }
        for n in 1..=6 {
            assert_eq!(
                rewrite(&src, kind, &mut || n),
                expected,
                "{name}, chunk size {n} (replay: RAIN_REWRITE_CHUNK={n})"
            );
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ src.len() as u64;
        for round in 0..40 {
            let mut rng = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 61) as usize + 1
            };
            assert_eq!(
                rewrite(&src, kind, &mut rng),
                expected,
                "{name}, random chunks round {round}"
            );
        }
    }
    assert!(
        cases >= 3,
        "only {cases} rewrite cases in {}",
        dir.display()
    );
}
