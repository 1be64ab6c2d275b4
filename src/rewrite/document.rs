//! Embedding a whole document as a fragment (docs/configuration.md, the fragment element): an origin answer
//! with a doctype, `<html>`, `<head>` or `<body>` keeps only its body's
//! content, plus the stylesheets (`<link rel=stylesheet>`, `<style>`) of its head.
//! The handlers are meant to be added to a rewriter that also does other work,
//! so that a fragment body is parsed once.

use std::borrow::Cow;

use lol_html::html_content::Element;
use lol_html::{doctype, DocumentContentHandlers, ElementContentHandlers, Selector};

use super::selectors::on_element;

/// Element handlers that strip the document shell from a fragment body.
pub fn strip_document() -> (
    Vec<(Cow<'static, Selector>, ElementContentHandlers<'static>)>,
    DocumentContentHandlers<'static>,
) {
    let elements = [
        on_element("html, body, head", |el: &mut Element| {
            el.remove_and_keep_content();
            Ok(())
        }),
        on_element("head > *", |el: &mut Element| {
            if !is_stylesheet(el) {
                el.remove();
            }
            Ok(())
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    let docs = doctype!(|d| {
        d.remove();
        Ok(())
    });
    (elements, docs)
}

/// `<style>`, or `<link rel="stylesheet">` (rel is a token list).
fn is_stylesheet(el: &Element) -> bool {
    match el.tag_name().as_str() {
        "style" => true,
        "link" => el.get_attribute("rel").is_some_and(|r| {
            r.split_ascii_whitespace()
                .any(|t| t.eq_ignore_ascii_case("stylesheet"))
        }),
        _ => false,
    }
}

/// What a fragment body holds that needs handlers beyond rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyShape {
    /// A document shell tag: a doctype, `<html>`, `<head>` or `<body>`.
    pub shell: bool,
    /// A nested `<fragment>`.
    pub nested: bool,
}

/// Scans a body for the tags of [`BodyShape`] (a byte scan, far cheaper than
/// compiling selectors that would match nothing: a plain snippet, the common
/// case, gets a rewriter without them).
pub fn body_shape(body: &[u8]) -> BodyShape {
    const SHELL: [&[u8]; 4] = [b"html", b"head", b"body", b"!doctype"];
    let mut shape = BodyShape {
        shell: false,
        nested: false,
    };
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'<', &body[i..]) {
        let rest = &body[i + pos + 1..];
        let is_tag = |t: &&[u8]| {
            rest.len() >= t.len()
                && rest[..t.len()].eq_ignore_ascii_case(t)
                // `<header>` is not `<head>`: the name must end there.
                && rest
                    .get(t.len())
                    .is_none_or(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        };
        shape.shell |= SHELL.iter().any(is_tag);
        shape.nested |= is_tag(&&b"fragment"[..]);
        if shape.shell && shape.nested {
            break;
        }
        i += pos + 1;
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_detection() {
        let shape = |b: &[u8]| {
            let s = body_shape(b);
            (s.shell, s.nested)
        };
        assert_eq!(shape(b"<div class=a>hi</div>"), (false, false));
        assert_eq!(shape(b"<div><FRAGMENT src=x></div>"), (false, true));
        assert_eq!(shape(b"<!DOCTYPE html><p>"), (true, false));
        assert_eq!(shape(b"x<body>"), (true, false));
        assert_eq!(
            shape(b"<header>x</header><bodyguard><fragments>"),
            (false, false)
        );
        assert_eq!(shape(b"<head><fragment/>"), (true, true));
        assert_eq!(shape(b"<fragment"), (false, true));
        assert_eq!(shape(b"<HTML>"), (true, false));
    }
}
