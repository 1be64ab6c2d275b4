//! Compiled lol_html selectors, shared: every fragment gets a new rewriter,
//! and parsing its selectors each time cost more than rewriting a small
//! fragment. Each distinct selector is parsed once per thread and kept for
//! the life of the process (a handful of small values).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use lol_html::html_content::{Element, TextChunk};
use lol_html::{ElementContentHandlers, HandlerResult, Selector};

thread_local! {
    static COMPILED: RefCell<HashMap<&'static str, &'static Selector>> = RefCell::new(HashMap::new());
}

/// The compiled form of a constant selector.
fn compiled(text: &'static str) -> Option<&'static Selector> {
    COMPILED.with(|c| {
        if let Some(s) = c.borrow().get(text) {
            return Some(*s);
        }
        match text.parse::<Selector>() {
            Ok(sel) => {
                let leaked: &'static Selector = Box::leak(Box::new(sel));
                c.borrow_mut().insert(text, leaked);
                Some(leaked)
            }
            Err(e) => {
                tracing::error!(selector = text, error = %e, "a built-in selector does not parse; its rewriting is skipped");
                None
            }
        }
    })
}

/// A handler pair for elements matching `selector`.
pub(crate) fn on_element(
    selector: &'static str,
    handler: impl FnMut(&mut Element<'_, '_>) -> HandlerResult + 'static,
) -> Option<(Cow<'static, Selector>, ElementContentHandlers<'static>)> {
    let sel = compiled(selector)?;
    Some((
        Cow::Borrowed(sel),
        ElementContentHandlers::default().element(handler),
    ))
}

/// A handler pair that gives the whole text of each element matching
/// `selector` to `rewrite` (it arrives in chunks: gathered, then written
/// once, as `rewrite` returns it, in place of the last chunk).
pub(crate) fn on_whole_text(
    selector: &'static str,
    rewrite: impl Fn(String) -> String + 'static,
) -> Option<(Cow<'static, Selector>, ElementContentHandlers<'static>)> {
    let mut gathered = String::new();
    on_text(selector, move |t: &mut TextChunk<'_>| {
        gathered.push_str(t.as_str());
        if t.last_in_text_node() {
            let out = rewrite(std::mem::take(&mut gathered));
            t.replace(&out, lol_html::html_content::ContentType::Html);
        } else {
            t.remove();
        }
        Ok(())
    })
}

/// A handler pair for the text of elements matching `selector`.
pub(crate) fn on_text(
    selector: &'static str,
    handler: impl FnMut(&mut TextChunk<'_>) -> HandlerResult + 'static,
) -> Option<(Cow<'static, Selector>, ElementContentHandlers<'static>)> {
    let sel = compiled(selector)?;
    Some((
        Cow::Borrowed(sel),
        ElementContentHandlers::default().text(handler),
    ))
}
