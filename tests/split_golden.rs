//! Golden tests of the splitter and of fragment parsing: each
//! `fixtures/split/NAME.src.html` is split (`NAME.doc.src.html`: as a
//! fragment body, its document shell stripped) at many random chunk sizes,
//! and the result must equal `NAME.expected.txt` every time.
//!
//! Replay one chunk size: `RAIN_SPLIT_CHUNK=7 cargo test split_golden`.
//! Write missing expectations (then read them!): `RAIN_SPLIT_BLESS=1`.

use std::fmt::Write as _;
use std::path::Path;

use rain_edge::aggregate::{merge_statics, FragmentSpec, Item, Splitter};

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
    let mut s = Splitter::new(strip);
    let mut items = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let n = sizes().clamp(1, src.len() - i);
        s.write(&src[i..i + n]).expect("write");
        items.extend(s.take_ready());
        i += n;
    }
    items.extend(s.end().expect("end"));
    merge_statics(items)
}

#[test]
fn splitter_golden_files_at_random_chunk_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/split");
    let replay: Option<usize> = std::env::var("RAIN_SPLIT_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok());
    let bless = std::env::var("RAIN_SPLIT_BLESS").is_ok();
    let mut cases = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/split")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
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
        let src = std::fs::read(&path).expect("read");
        let strip = stem.ends_with(".doc");
        let expected_path = dir.join(format!("{stem}.expected.txt"));
        let whole = render(&split_in_chunks(&src, strip, &mut || usize::MAX));
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(e) => e,
            Err(_) if bless => {
                std::fs::write(&expected_path, &whole).expect("bless");
                whole.clone()
            }
            Err(_) => panic!(
                "{} is missing (RAIN_SPLIT_BLESS=1 writes it)",
                expected_path.display()
            ),
        };
        assert_eq!(whole, expected, "{name}, whole input");
        if let Some(n) = replay {
            assert_eq!(
                render(&split_in_chunks(&src, strip, &mut || n)),
                expected,
                "{name}, chunk size {n}"
            );
            continue;
        }
        for n in 1..=8 {
            assert_eq!(
                render(&split_in_chunks(&src, strip, &mut || n)),
                expected,
                "{name}, chunk size {n} (replay: RAIN_SPLIT_CHUNK={n})"
            );
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ src.len() as u64;
        for round in 0..50 {
            let mut rng = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 97) as usize + 1
            };
            let got = render(&split_in_chunks(&src, strip, &mut rng));
            assert_eq!(got, expected, "{name}, random chunks round {round}");
        }
    }
    assert!(
        cases >= 4,
        "only {cases} golden cases found in {}",
        dir.display()
    );
}
