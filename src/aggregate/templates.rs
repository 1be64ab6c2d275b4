//! The templates folder, held in memory: layouts (split once, at load),
//! fallbacks and placeholders. Read once per (re)load so that serving a page
//! never touches the file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::spec::{resolve_target, FragmentSpec};
use super::split::{split, Item};
use crate::config::{template_file_problem, Config, ConfigError, FailureClass, RouteTarget};

/// Most files and bytes read from a templates folder.
const MAX_FILES: usize = 10_000;
const MAX_TOTAL_BYTES: u64 = 256 << 20;

/// The contents of the templates folder, by path relative to it.
#[derive(Debug, Default)]
pub struct Templates {
    dir: PathBuf,
    files: HashMap<String, Bytes>,
    layouts: HashMap<String, Arc<Vec<Item>>>,
}

/// Built-in minimal placeholder for a failure class.
pub fn builtin_placeholder(class: FailureClass) -> Bytes {
    Bytes::from(format!(
        "<div class=\"rain-placeholder\" data-rain-failure=\"{}\" hidden></div>",
        class.key()
    ))
}

/// The default placeholder file of a class, used when it exists and
/// `[placeholders]` does not name one (`placeholders/not-found.html`, ...).
fn default_placeholder_file(class: FailureClass) -> String {
    format!("placeholders/{}.html", class.key().replace('_', "-"))
}

impl Templates {
    /// Reads every file below `cfg.server.templates` and splits every layout
    /// a route names.
    pub fn load(cfg: &Config) -> Result<Templates, ConfigError> {
        let dir = cfg.server.templates.clone();
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut stack = vec![dir.clone()];
        let err = |m: String| ConfigError {
            file: cfg.file.clone(),
            place: "server.templates".into(),
            message: m,
        };
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d)
                .map_err(|e| err(format!("cannot read `{}`: {e}", d.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    if files.len() >= MAX_FILES {
                        return Err(err(format!(
                            "more than {MAX_FILES} files in `{}`",
                            dir.display()
                        )));
                    }
                    let data = std::fs::read(&path)
                        .map_err(|e| err(format!("cannot read `{}`: {e}", path.display())))?;
                    total += data.len() as u64;
                    if total > MAX_TOTAL_BYTES {
                        return Err(err(format!("`{}` holds more than 256 MiB", dir.display())));
                    }
                    if let Some(rel) = relative_name(&dir, &path) {
                        files.insert(rel, Bytes::from(data));
                    }
                }
            }
        }
        let mut t = Templates {
            dir,
            files,
            layouts: HashMap::new(),
        };
        for route in &cfg.routes {
            if let RouteTarget::Layout(name) = &route.target {
                let body = t.get(name).unwrap_or_default();
                let items = split(&body, false, usize::MAX)
                    .map_err(|e| err(format!("layout `{name}`: {e}")))?;
                t.layouts.insert(name.clone(), Arc::new(items));
            }
        }
        Ok(t)
    }

    /// A file's contents, by its path relative to the templates folder.
    pub fn get(&self, name: &str) -> Option<Bytes> {
        let key = name.trim_start_matches("./");
        self.files.get(key).cloned()
    }

    /// The split items of a layout that a route names.
    pub fn layout(&self, name: &str) -> Option<Arc<Vec<Item>>> {
        self.layouts.get(name).cloned()
    }

    /// The placeholder for `class`: the origin's override, the platform's,
    /// the default file if present, then the built-in one.
    pub fn placeholder(&self, cfg: &Config, origin: Option<&str>, class: FailureClass) -> Bytes {
        let origin_file = origin
            .and_then(|o| cfg.origins.get(o))
            .and_then(|o| o.placeholders.get(&class));
        origin_file
            .into_iter()
            .chain(cfg.placeholders.get(&class))
            .find_map(|f| self.get(f))
            .or_else(|| self.get(&default_placeholder_file(class)))
            .unwrap_or_else(|| builtin_placeholder(class))
    }

    /// The folder these templates were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn relative_name(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// Checks every layout a route names: each `<fragment>` must be valid, name a
/// configured origin (or an absolute `src` under one), stay inside it, and
/// name fallback files that exist. Errors name the template and line.
pub fn check_templates(cfg: &Config, templates: &Templates) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for route in &cfg.routes {
        let RouteTarget::Layout(name) = &route.target else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(source) = templates.get(name) else {
            continue;
        };
        let file = templates.dir().join(name);
        let mut ids = std::collections::HashSet::new();
        let items = match split(&source, false, usize::MAX) {
            Ok(items) => items,
            Err(e) => {
                errors.push(ConfigError {
                    file,
                    place: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let mut push = |offset: usize, message: String| {
            let line = 1 + source[..offset.min(source.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            errors.push(ConfigError {
                file: file.clone(),
                place: format!("line {line}"),
                message,
            });
        };
        for item in items {
            let Item::Slot(raw) = item else { continue };
            let spec = match FragmentSpec::parse(&raw) {
                Ok(s) => s,
                Err(e) => {
                    push(raw.offset, e);
                    continue;
                }
            };
            if let Some(id) = &spec.id {
                if !ids.insert(id.clone()) {
                    push(
                        raw.offset,
                        format!("fragment id `{id}` is used twice in this layout"),
                    );
                }
            }
            if let Err((_, e)) = resolve_target(cfg, spec.origin.as_deref(), &spec.src) {
                push(raw.offset, e);
            }
            if let Some(fb) = &spec.fallback_src {
                if let Err((_, e)) = resolve_target(cfg, spec.origin.as_deref(), fb) {
                    push(raw.offset, format!("fallback-src: {e}"));
                }
            }
            if let Some(fb) = &spec.fallback {
                if let Some(problem) = template_file_problem(templates.dir(), fb) {
                    push(raw.offset, format!("fallback: {problem}"));
                }
            }
        }
    }
    errors
}
