//! The fuzz corpora and every crasher found, replayed through the fuzz
//! targets' own checks (`rain_edge::fuzzing`) on every test run. The inputs
//! are kept base64, one per line, in `fuzz/regressions/`; `scripts/fuzz`
//! fuzzes further and adds what it finds.

use base64::Engine;

fn replay(target: &str, check: fn(&[u8])) {
    let path = format!(
        "{}/fuzz/regressions/{target}.b64",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let input = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
        check(&input);
        n += 1;
    }
    assert!(n > 0, "{path} holds no input");
}

#[test]
fn url_resolution() {
    replay("url_resolution", rain_edge::fuzzing::url_resolution);
}

#[test]
fn fragment_rewrite() {
    replay("fragment_rewrite", rain_edge::fuzzing::fragment_rewrite);
}

#[test]
fn css_rewrite() {
    replay("css_rewrite", rain_edge::fuzzing::css_rewrite);
}

#[test]
fn config_parse() {
    replay("config_parse", rain_edge::fuzzing::config_parse);
}

#[test]
fn cookie_jar() {
    replay("cookie_jar", rain_edge::fuzzing::cookie_jar);
}
