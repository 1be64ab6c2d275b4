//! The HTML rewriting of one fragment body (docs/configuration.md, rewriting), as lol_html
//! handlers that join the splitter's single pass: links to the fragment's
//! origin navigate within the page (`rain.{id}`), the origin's resources are
//! served under `/_rain/r/`, framework session ids are dropped from URLs.
//! The layout's own markup never goes through these handlers. Attribute
//! values are set through lol_html, which quotes them: a value cannot break
//! out of its attribute.

use std::borrow::Cow;
use std::sync::Arc;

use lol_html::html_content::Element;

use lol_html::html_content::ContentType;
use lol_html::{ElementContentHandlers, Selector};
use url::Url;

use super::css::{rewrite_css, scope_class_attr, wrap_css};
use super::entities::decode_attr;
use super::links::{
    call_base, classify, encode_component, resource_url, PageUrl, Target, UrlContext,
};
use super::selectors::{on_element, on_whole_text};
use crate::config::{CssScope, OriginKind};

/// Everything the rewriting of one fragment body needs.
#[derive(Debug)]
pub struct FragmentRewrite {
    /// The fragment's id (its navigation key `rain.{id}`).
    pub id: String,
    /// The origin's name.
    pub origin: String,
    /// The origin's base URL.
    pub base: Url,
    /// The URL the body came from (after redirects).
    pub fragment_url: Url,
    /// The origin's framework.
    pub kind: OriginKind,
    /// The page the fragment is shown in.
    pub page: Arc<PageUrl>,
    /// How its classes are kept apart from other origins'.
    pub css_scope: CssScope,
    /// The prefix of renamed classes.
    pub class_prefix: String,
    /// Set once the rewriting read `page`: until then its output is the
    /// same on every page (a cached fragment's rewritten copy is reused
    /// on any page then).
    pub page_read: std::sync::atomic::AtomicBool,
}

impl Clone for FragmentRewrite {
    /// The same rewriting, for another body: its page not read yet.
    fn clone(&self) -> Self {
        FragmentRewrite {
            id: self.id.clone(),
            origin: self.origin.clone(),
            base: self.base.clone(),
            fragment_url: self.fragment_url.clone(),
            kind: self.kind,
            page: self.page.clone(),
            css_scope: self.css_scope,
            class_prefix: self.class_prefix.clone(),
            page_read: Default::default(),
        }
    }
}

impl FragmentRewrite {
    /// The page the fragment is shown in, noted as read.
    fn page(&self) -> &PageUrl {
        self.page_read
            .store(true, std::sync::atomic::Ordering::Relaxed);
        &self.page
    }

    fn ctx(&self) -> UrlContext<'_> {
        UrlContext {
            origin: &self.origin,
            base: &self.base,
            fragment_url: &self.fragment_url,
            kind: self.kind,
        }
    }

    /// The rewritten value of a link (`<a href>`), or `None` to leave it.
    pub fn link(&self, raw: &str) -> Option<String> {
        match classify(&self.ctx(), raw) {
            Target::Foreign => None,
            Target::Origin { location, hash } => Some(format!(
                "{}{hash}",
                self.page().with_nav(&self.id, &location)
            )),
        }
    }

    /// The rewritten value of a resource URL, or `None` to leave it.
    pub fn resource(&self, raw: &str) -> Option<String> {
        match classify(&self.ctx(), raw) {
            Target::Foreign => None,
            Target::Origin { location, hash } => {
                Some(format!("{}{hash}", resource_url(&self.origin, &location)))
            }
        }
    }

    /// The URL of one of Wicket's Ajax calls (`"u"` in an inline
    /// `Wicket.Ajax.ajax({...})`): under the call prefix, with the fragment
    /// (`rain.f`) and the page (`rain.page`) its answer's markup belongs to.
    /// `None` to leave it (not the origin's).
    pub fn ajax_url(&self, raw: &str) -> Option<String> {
        let Target::Origin { location, .. } = classify(&self.ctx(), raw) else {
            return None;
        };
        Some(self.with_target(format!("{}{location}", call_base(&self.origin))))
    }

    /// `url` (an origin's location under one of rain-edge's prefixes) with
    /// the fragment (`rain.f`) and the page (`rain.page`) that an answer to
    /// it belongs to, as `split_rain_target` in `edge::form` reads them.
    fn with_target(&self, mut url: String) -> String {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("rain.f=");
        url.push_str(&encode_component(&self.id));
        url.push_str("&rain.page=");
        url.push_str(&encode_component(&self.page().current()));
        url
    }

    /// An inline script of a Wicket page: the `"u"` URL of each
    /// `Wicket.Ajax.ajax({...})` call goes through rain-edge
    /// ([`FragmentRewrite::ajax_url`]); the rest is left as it is.
    pub fn wicket_script(&self, js: &str) -> Option<String> {
        if !js.contains("Wicket.Ajax") {
            return None;
        }
        let mut out = String::with_capacity(js.len() + 64);
        let mut rest = js;
        let mut changed = false;
        while let Some(at) = find_u_key(rest) {
            let (head, tail) = rest.split_at(at.value_start);
            out.push_str(head);
            // The JSON string's end: the next quote not escaped.
            let bytes = tail.as_bytes();
            let mut end = 0;
            while end < bytes.len() && bytes[end] != at.quote {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = end.min(tail.len());
            let raw = tail[..end].replace("\\/", "/");
            match self.ajax_url(&raw) {
                Some(url) => {
                    changed = true;
                    out.push_str(&url.replace('"', "%22").replace('\'', "%27"));
                }
                None => out.push_str(&tail[..end]),
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// The class prefix, when classes are renamed.
    fn rename_prefix(&self) -> Option<&str> {
        (self.css_scope == CssScope::Rename).then_some(self.class_prefix.as_str())
    }

    /// A stylesheet of this fragment (inline `<style>`), rewritten: classes
    /// renamed (rename mode), `url()`s of the origin served by rain-edge.
    /// `None` when it cannot be parsed at all (it is then dropped, so that an
    /// origin's styles never leak unscoped into the page).
    pub fn stylesheet(&self, css: &str) -> Option<String> {
        if self.css_scope == CssScope::Off && !css.contains("url(") {
            return Some(css.to_string());
        }
        let out = if self.css_scope == CssScope::Wrap {
            wrap_css(css, &self.origin, |u| self.resource(u))
        } else {
            rewrite_css(css, self.rename_prefix(), |u| self.resource(u))
        };
        out.map_err(
            |e| tracing::warn!(origin = %self.origin, error = %e, "inline stylesheet dropped"),
        )
        .ok()
    }

    /// Rewrites a `<form>` of the origin so that it submits through
    /// rain-edge: a POST to `/_rain/f/` (which knows the fragment and the page
    /// to come back to), a GET to the page itself with the form's location
    /// and the other fragments' state in hidden fields.
    fn form(&self, el: &mut Element) {
        let method = el
            .get_attribute("method")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let action = el
            .get_attribute("action")
            .map(|a| decode_attr(&a).into_owned())
            .unwrap_or_default();
        let target = if action.trim().is_empty() {
            self.fragment_url.as_str().to_string()
        } else {
            action
        };
        let Target::Origin { location, .. } = classify(&self.ctx(), &target) else {
            return;
        };
        if method == "post" {
            let url = self.with_target(form_url(&self.origin, &location));
            let _ = el.set_attribute("action", &url.replace('&', "&amp;"));
            return;
        }
        // GET: the browser replaces the action's query with the fields.
        let path_only = location.split('?').next().unwrap_or_default();
        let _ = el.set_attribute("action", &self.page().path.replace('&', "&amp;"));
        let mut hidden = String::new();
        for (id, value) in self.page().nav_entries() {
            if id != self.id {
                hidden.push_str(&hidden_input(&format!("rain.{id}"), &value));
            }
        }
        hidden.push_str(&hidden_input(&format!("rain.{}", self.id), path_only));
        el.prepend(&hidden, ContentType::Html);
    }

    /// Rewrites one element of the fragment: its URLs by tag, its classes
    /// (rename mode).
    pub fn element(&self, el: &mut Element) {
        match el.tag_name().as_str() {
            "a" | "area" => rewrite_attr(el, "href", |v| self.link(v)),
            "img" | "source" => {
                rewrite_attr(el, "src", |v| self.resource(v));
                rewrite_attr(el, "srcset", |v| self.srcset(v));
            }
            "video" => {
                rewrite_attr(el, "src", |v| self.resource(v));
                rewrite_attr(el, "poster", |v| self.resource(v));
            }
            "script" | "audio" | "track" | "embed" | "input" | "iframe" => {
                rewrite_attr(el, "src", |v| self.resource(v));
            }
            "object" => rewrite_attr(el, "data", |v| self.resource(v)),
            "link" | "use" | "image" => rewrite_attr(el, "href", |v| self.resource(v)),
            "form" => self.form(el),
            _ => {}
        }
        if self.css_scope == CssScope::Rename {
            if let Some(v) = el.get_attribute("class") {
                let _ = el.set_attribute("class", &scope_class_attr(&self.class_prefix, &v));
            }
        }
    }

    /// A rewritten `srcset`: each candidate's URL as a resource, its
    /// descriptor kept. `None` when nothing changed.
    pub fn srcset(&self, raw: &str) -> Option<String> {
        let mut changed = false;
        let parts: Vec<String> = srcset_candidates(raw)
            .into_iter()
            .map(|(url, desc)| {
                let url = match self.resource(url) {
                    Some(u) => {
                        changed = true;
                        u
                    }
                    None => url.to_string(),
                };
                if desc.is_empty() {
                    url
                } else {
                    format!("{url} {desc}")
                }
            })
            .collect();
        changed.then(|| parts.join(", "))
    }
}

/// The candidates of a `srcset`, as the HTML standard reads them: a URL runs
/// up to white space (a comma inside it, as in `data:` URLs, is part of it),
/// then descriptors run up to the next comma.
fn srcset_candidates(raw: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (mut url, tail) = rest.split_at(end);
        rest = tail;
        let mut desc = "";
        if url.ends_with(',') {
            url = url.trim_end_matches(',');
        } else {
            let d = rest.find(',').unwrap_or(rest.len());
            desc = rest[..d].trim();
            rest = &rest[d..];
        }
        out.push((url, desc));
    }
}

/// Where a `"u"` key's string value starts in a script, and its quote.
struct UKey {
    value_start: usize,
    quote: u8,
}

/// The next `"u":"` (or `'u':'`, spaces allowed around the colon).
fn find_u_key(js: &str) -> Option<UKey> {
    let b = js.as_bytes();
    let mut i = 0;
    while i + 3 < b.len() {
        let q = b[i];
        if (q == b'"' || q == b'\'') && b[i + 1] == b'u' && b[i + 2] == q {
            let mut j = i + 3;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j] == b':' {
                j += 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
                    return Some(UKey {
                        value_start: j + 1,
                        quote: b[j],
                    });
                }
            }
        }
        i += 1;
    }
    None
}

/// The `/_rain/f/` URL a form of `origin` posts to.
pub fn form_url(origin: &str, location: &str) -> String {
    format!("/_rain/f/{origin}/{location}")
}

fn hidden_input(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        super::entities::encode_attr(name),
        super::entities::encode_attr(value)
    )
}

fn rewrite_attr(el: &mut Element, name: &str, f: impl Fn(&str) -> Option<String>) {
    if let Some(v) = el.get_attribute(name) {
        if let Some(new) = f(&decode_attr(&v)) {
            // NOTE: lol_html escapes quotes in the value it writes, not `&`:
            // write it as a reference so that no `&name` can be read as one.
            let _ = el.set_attribute(name, &new.replace('&', "&amp;"));
        }
    }
}

/// The handlers of a fragment body's rewriting: one for every element, which
/// dispatches on the tag name, and one for `<style>` text.
///
/// NOTE: lol_html compiles its selector VM anew for every rewriter, and every
/// fragment gets its own rewriter: one `*` selector instead of twenty-odd
/// alternatives keeps that cheap (docs/PERFORMANCE.md).
pub fn fragment_handlers(
    rw: Arc<FragmentRewrite>,
) -> Vec<(Cow<'static, Selector>, ElementContentHandlers<'static>)> {
    let elements = rw.clone();
    let mut handlers = vec![on_element("*", move |el: &mut Element| {
        elements.element(el);
        Ok(())
    })];
    // An inline stylesheet, rewritten.
    let styles = rw.clone();
    handlers.push(on_whole_text("style", move |css| {
        styles.stylesheet(&css).unwrap_or_default()
    }));
    // Wicket's inline Ajax calls: their URLs go through rain-edge (raw
    // text: the script as it was, but for the URLs).
    if rw.kind == crate::config::OriginKind::Wicket {
        let wicket = rw.clone();
        handlers.push(on_whole_text("script", move |js| {
            wicket.wicket_script(&js).unwrap_or(js)
        }));
    }
    handlers.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::srcset_candidates;

    #[test]
    fn srcset_parsing() {
        assert_eq!(
            srcset_candidates("a.png 1x, b.png 2x"),
            vec![("a.png", "1x"), ("b.png", "2x")]
        );
        assert_eq!(
            srcset_candidates("data:image/png,AA 1x,c.png"),
            vec![("data:image/png,AA", "1x"), ("c.png", "")]
        );
        assert_eq!(
            srcset_candidates("a.png, b.png 100w"),
            vec![("a.png", ""), ("b.png", "100w")]
        );
        assert_eq!(srcset_candidates("  ,, "), vec![]);
    }
}
