//! The splitter: turns HTML (a layout or a fragment body), fed in chunks of
//! any size, into a sequence of [`Item`]s: static runs of bytes, fragment
//! slots (the `<fragment>` elements, with their attributes and their children
//! as inline fallback), and the point just before `</body>` where `async`
//! fragments go. Synchronous; it never fetches anything.
//!
//! Streaming caveat: a slot's children are complete only once its end tag
//! (or the end of input) has been seen; items are handed out in document order
//! as soon as they are complete.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use lol_html::html_content::Element;
use lol_html::{end_tag, HtmlRewriter, MemorySettings, OutputSink, Settings};

use crate::rewrite::{body_shape, fragment_handlers, on_element, BodyShape, FragmentRewrite};

/// One piece of a split document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Bytes to copy to the output as they are.
    Static(Bytes),
    /// A `<fragment>` element.
    Slot(RawFragment),
    /// Just before `</body>`: where `async` fragments are streamed.
    BodyEnd,
}

/// A `<fragment>` element as written: attributes and children, unvalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFragment {
    /// Attributes, names lower-cased, values with character references
    /// decoded, in source order.
    pub attrs: Vec<(String, String)>,
    /// The element's children (its inline fallback), as written.
    pub children: Bytes,
    /// Byte offset of the start tag in the source (for error messages).
    pub offset: usize,
}

impl RawFragment {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An error of the HTML parser (only resource limits; HTML itself never fails).
#[derive(Debug, thiserror::Error)]
#[error("the HTML could not be parsed: {0}")]
pub struct SplitError(String);

#[derive(Default)]
struct State {
    items: Vec<Item>,
    pending: BytesMut,
    /// Index in `items` of the slot whose children are being captured.
    capturing: Option<usize>,
    children: BytesMut,
}

impl State {
    fn flush_static(&mut self) {
        if !self.pending.is_empty() {
            let b = self.pending.split().freeze();
            self.items.push(Item::Static(b));
        }
    }

    fn close_capture(&mut self) {
        if let Some(i) = self.capturing.take() {
            let kids = self.children.split().freeze();
            if let Some(Item::Slot(f)) = self.items.get_mut(i) {
                f.children = kids;
            }
        }
    }
}

struct Sink(Rc<RefCell<State>>);

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        let mut st = self.0.borrow_mut();
        if st.capturing.is_some() {
            st.children.extend_from_slice(chunk);
        } else {
            st.pending.extend_from_slice(chunk);
        }
    }
}

/// Splits HTML fed in chunks. With `strip_document`, an origin's whole
/// document is reduced to its body (plus head stylesheets) in the same pass.
pub struct Splitter {
    rewriter: HtmlRewriter<'static, Sink>,
    state: Rc<RefCell<State>>,
}

impl Splitter {
    /// A splitter for a layout (`strip_document = false`) or a fragment body,
    /// holding at most about `max_memory` bytes of its own (see
    /// [`Splitter::build`]).
    pub fn new(strip_document: bool, max_memory: usize) -> Self {
        let shape = BodyShape {
            shell: strip_document,
            nested: true,
        };
        Self::build(shape, !strip_document, None, max_memory)
    }

    /// A splitter for a fragment body that also rewrites it for the page
    /// (links, resources; docs/configuration.md, rewriting).
    pub fn for_fragment(rewrite: Arc<FragmentRewrite>, max_memory: usize) -> Self {
        let shape = BodyShape {
            shell: true,
            nested: true,
        };
        Self::build(shape, false, Some(rewrite), max_memory)
    }

    /// `shape` says which handlers the input needs (the shell's, nested
    /// fragments'); `body_end` marks a layout's `</body>`. lol_html compiles
    /// every selector for every rewriter: a rewriter with only the handlers
    /// its input needs is cheaper to build. `max_memory` bounds what the
    /// rewriter itself holds (lol_html's estimate: its parsing buffer and its
    /// stack of open elements); past it, writing fails.
    fn build(
        shape: BodyShape,
        body_end: bool,
        rewrite: Option<Arc<FragmentRewrite>>,
        max_memory: usize,
    ) -> Self {
        let state = Rc::new(RefCell::new(State::default()));
        let on_fragment = {
            let state = state.clone();
            on_element("fragment", move |el: &mut Element| {
                let mut st = state.borrow_mut();
                if st.capturing.is_some() {
                    // A <fragment> inside another's inline fallback stays text.
                    return Ok(());
                }
                st.flush_static();
                let attrs = el
                    .attributes()
                    .iter()
                    .map(|a| {
                        (
                            a.name(),
                            crate::rewrite::decode_attr(&a.value()).into_owned(),
                        )
                    })
                    .collect();
                let offset = el.source_location().bytes().start;
                st.items.push(Item::Slot(RawFragment {
                    attrs,
                    children: Bytes::new(),
                    offset,
                }));
                el.remove_and_keep_content();
                // NOTE: `<fragment ... />` is not self-closing in HTML; treat it
                // as empty and leave whatever follows as ordinary content.
                if !el.is_self_closing() {
                    st.capturing = Some(st.items.len() - 1);
                    let state = state.clone();
                    el.on_end_tag(end_tag!(move |_end| {
                        state.borrow_mut().close_capture();
                        Ok(())
                    }))?;
                }
                Ok(())
            })
        };
        let on_body = {
            let state = state.clone();
            on_element("body", move |el: &mut Element| {
                let state = state.clone();
                el.on_end_tag(end_tag!(move |_end| {
                    let mut st = state.borrow_mut();
                    if st.capturing.is_none() {
                        st.flush_static();
                        st.items.push(Item::BodyEnd);
                    }
                    Ok(())
                }))?;
                Ok(())
            })
        };
        let mut elements: Vec<_> = Vec::new();
        if shape.nested {
            elements.extend(on_fragment);
        }
        let mut document = Vec::new();
        if shape.shell {
            let (els, doc) = crate::rewrite::strip_document();
            elements.extend(els);
            document.push(doc);
        }
        if let Some(rw) = rewrite {
            elements.extend(fragment_handlers(rw));
        }
        if body_end {
            elements.extend(on_body);
        }
        let mut settings = Settings::new()
            .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(max_memory));
        for (selector, handlers) in elements {
            settings = settings.append_element_content_handler((selector, handlers));
        }
        for handlers in document {
            settings = settings.append_document_content_handler(handlers);
        }
        let rewriter = HtmlRewriter::new(settings, Sink(state.clone()));
        Splitter { rewriter, state }
    }

    /// Feeds the next chunk of input.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SplitError> {
        self.rewriter
            .write(chunk)
            .map_err(|e| SplitError(e.to_string()))
    }

    /// Takes the items completed so far, in document order. A slot whose
    /// children are still being read is kept back, with everything after it.
    pub fn take_ready(&mut self) -> Vec<Item> {
        let mut st = self.state.borrow_mut();
        match st.capturing {
            None => std::mem::take(&mut st.items),
            Some(i) => {
                let rest = st.items.split_off(i);
                st.capturing = Some(0);
                std::mem::replace(&mut st.items, rest)
            }
        }
    }

    /// Ends the input and returns the remaining items.
    pub fn end(self) -> Result<Vec<Item>, SplitError> {
        let Splitter { rewriter, state } = self;
        rewriter.end().map_err(|e| SplitError(e.to_string()))?;
        let mut st = state.borrow_mut();
        st.close_capture();
        st.flush_static();
        Ok(std::mem::take(&mut st.items))
    }
}

/// Splits a complete document in one call, the splitter holding at most
/// about `max_memory` bytes of its own (see [`split_fragment`]).
pub fn split(
    html: &[u8],
    strip_document: bool,
    max_memory: usize,
) -> Result<Vec<Item>, SplitError> {
    split_with(Splitter::new(strip_document, max_memory), html)
}

/// Splits and rewrites a complete fragment body in one call, the rewriter
/// holding at most about `max_memory` bytes of its own.
/// Its rewriter has only the handlers the body needs (see [`body_shape`]).
pub fn split_fragment(
    html: &[u8],
    rewrite: Arc<FragmentRewrite>,
    max_memory: usize,
) -> Result<Vec<Item>, SplitError> {
    split_with(
        Splitter::build(body_shape(html), false, Some(rewrite), max_memory),
        html,
    )
}

fn split_with(mut s: Splitter, html: &[u8]) -> Result<Vec<Item>, SplitError> {
    s.write(html)?;
    let mut items = s.take_ready();
    items.extend(s.end()?);
    Ok(merge_statics(items))
}

/// Whether a layout has a fragment that is not `public`, i.e. needs the
/// user's session.
pub fn needs_user(items: &[Item]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, Item::Slot(raw) if raw.attr("public").is_none()))
}

/// Joins adjacent static runs (chunked input may split them).
pub fn merge_statics(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        match (out.last_mut(), item) {
            (Some(Item::Static(prev)), Item::Static(next)) => {
                let mut b = BytesMut::with_capacity(prev.len() + next.len());
                b.extend_from_slice(prev);
                b.extend_from_slice(&next);
                *prev = b.freeze();
            }
            (_, item) => out.push(item),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CssScope, OriginKind};
    use crate::rewrite::PageUrl;

    fn rewrite() -> Arc<FragmentRewrite> {
        let base = url::Url::parse("http://127.0.0.1:1/shop/").unwrap();
        Arc::new(FragmentRewrite {
            id: "f".into(),
            origin: "shop".into(),
            base: base.clone(),
            fragment_url: base,
            kind: OriginKind::Generic,
            page: Arc::new(PageUrl::new("/page", None)),
            css_scope: CssScope::Rename,
            class_prefix: "shop".into(),
            page_read: Default::default(),
        })
    }

    #[test]
    fn the_rewriter_memory_limit_stops_deep_nesting_not_large_flat_bodies() {
        const LIMIT: usize = 1 << 20;
        // 2,000,000 bytes of unclosed <div>s: lol_html keeps one entry per
        // open element, tens of MiB for this body without a limit.
        let nested = "<div>".repeat(400_000);
        assert!(split_fragment(nested.as_bytes(), rewrite(), LIMIT).is_err());
        assert!(split(nested.as_bytes(), false, LIMIT).is_err());
        assert!(split(nested.as_bytes(), false, 64 << 20).is_ok());
        // Deep, but as deep as real pages get, and then some.
        let deep = "<div class=x>".repeat(2_000);
        assert!(split_fragment(deep.as_bytes(), rewrite(), LIMIT).is_ok());
        // A large flat body is not held: 2 MB of ordinary markup passes.
        let flat = "<p class=x><a href=/y>t</a><img src=i.png></p>".repeat(45_000);
        assert!(flat.len() > 2_000_000);
        let items = split_fragment(flat.as_bytes(), rewrite(), LIMIT).unwrap();
        assert_eq!(items.len(), 1);
    }
}
