//! The layers of `src/` depend one way only (docs/ARCHITECTURE.md): each
//! module may name, through `crate::`, only the modules listed for it
//! below. A `use crate::edge::...` inside `upstream/`, say, fails this test.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("sync", &[]),
    ("cluster", &[]),
    ("rewrite", &["config"]),
    ("session", &["config"]),
    ("aggregate", &["config", "rewrite"]),
    ("telemetry", &["config", "aggregate", "sync"]),
    ("http", &["config"]),
    (
        "upstream",
        &[
            "config",
            "rewrite",
            "session",
            "aggregate",
            "telemetry",
            "http",
            "sync",
        ],
    ),
    (
        "edge",
        &[
            "cluster",
            "config",
            "rewrite",
            "session",
            "aggregate",
            "telemetry",
            "upstream",
            "http",
            "sync",
        ],
    ),
    (
        "admin",
        &[
            "cluster",
            "config",
            "rewrite",
            "telemetry",
            "upstream",
            "http",
            "edge",
            "sync",
        ],
    ),
    (
        "server",
        &[
            "config",
            "session",
            "telemetry",
            "upstream",
            "http",
            "edge",
            "admin",
            "sync",
        ],
    ),
    ("demo", &["config", "sync"]),
    ("fuzzing", &["config", "rewrite", "session", "aggregate"]),
];

/// The top-level modules that `text` names through `crate::` (in paths and
/// in `use crate::{a, b::c}` groups).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of each item at the group's own depth.
            let (mut depth, mut name, mut taking) = (0, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => taking = true,
                    c if depth == 0 && taking && (c.is_ascii_alphanumeric() || c == '_') => {
                        name.push(c);
                        continue;
                    }
                    _ => {}
                }
                if !name.is_empty() {
                    out.insert(std::mem::take(&mut name));
                    taking = c == ',';
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// Every `.rs` file below `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn imports_follow_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            sources(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push((
                file.display().to_string(),
                std::fs::read_to_string(&file).expect("read source"),
            ));
        }
        assert!(!files.is_empty(), "no sources for module `{module}`");
        seen.insert(module.to_string());
        for (path, text) in files {
            for used in named_modules(&text) {
                if used != *module && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{path}: `{module}` uses `crate::{used}`"));
                }
            }
        }
    }
    // Every top-level module is in the table (a new one must be placed).
    for e in std::fs::read_dir(&src).expect("src").flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if !["lib", "main"].contains(&name.as_str()) {
            assert!(
                seen.contains(&name),
                "module `{name}` has no place in ALLOWED"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_every_spelling() {
    let text = "use crate::edge::App;\nuse crate::{http, upstream::{a, b}};\nlet x = crate::telemetry::m();";
    let found = named_modules(text);
    let want: BTreeSet<String> = ["edge", "http", "upstream", "telemetry"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}
