//! Golden tests of the splitter and of fragment parsing: each
//! `fixtures/split/NAME.src.html` is split (`NAME.doc.src.html`: as a
//! fragment body, its document shell stripped) at many random chunk sizes,
//! and the result must equal `NAME.expected.txt` every time.
//!
//! Replay one chunk size: `RAIN_SPLIT_CHUNK=7 cargo test split_golden`.
//! Write missing expectations (then read them!): `RAIN_SPLIT_BLESS=1`.

use std::fmt::Write as _;
use std::path::Path;

use rain_edge::aggregate::{FragmentSpec, Item, Splitter};

fn render(items: &[Item]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            Item::Static(b) => writeln!(out, "STATIC {:?}", String::from_utf8_lossy(b)),
            Item::BodyEnd => writeln!(out, "BODY-END"),
            Item::Slot(raw) => {
                let attrs: Vec<String> = raw.attrs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                let _ = writeln!(out, "SLOT @{} [{}] children={:?}", raw.offset, attrs.join(" "), String::from_utf8_lossy(&raw.children));
                match FragmentSpec::parse(raw) {
                    Ok(s) => writeln!(
                        out,
                        "  spec id={:?} origin={:?} src={:?} timeout={:?} fallback={:?} fallback_src={:?} public={} primary={} async={}",
                        s.id, s.origin, s.src, s.timeout, s.fallback, s.fallback_src, s.public, s.primary, s.is_async
                    ),
                    Err(e) => writeln!(out, "  invalid: {e}"),
                }
            }
        }
        .expect("write");
    }
    out
}

fn split_in_chunks(src: &[u8], strip: bool, sizes: &mut dyn FnMut() -> usize) -> Vec<Item> {
    crate::support::feed(Splitter::new(strip, usize::MAX), src, sizes)
}

#[test]
fn splitter_golden_files_at_random_chunk_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/split");
    let cases = crate::support::golden(
        &dir,
        ".expected.txt",
        "RAIN_SPLIT_CHUNK",
        "RAIN_SPLIT_BLESS",
        &|stem, src, sizes| render(&split_in_chunks(src, stem.ends_with(".doc"), sizes)),
    );
    assert!(
        cases >= 4,
        "only {cases} golden cases found in {}",
        dir.display()
    );
}
