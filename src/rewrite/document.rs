//! Embedding a whole document as a fragment (CONTRACT §4): an origin answer
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

/// Whether a body may need the HTML pass: it mentions `<fragment`, or a
/// document shell tag. A plain snippet (the common case) skips the parser.
pub fn needs_html_pass(body: &[u8]) -> bool {
    const TAGS: [&[u8]; 5] = [b"fragment", b"html", b"head", b"body", b"!doctype"];
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
        if TAGS.iter().any(is_tag) {
            return true;
        }
        i += pos + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_detection() {
        assert!(!needs_html_pass(b"<div class=a>hi</div>"));
        assert!(needs_html_pass(b"<div><FRAGMENT src=x></div>"));
        assert!(needs_html_pass(b"<!DOCTYPE html><p>"));
        assert!(needs_html_pass(b"x<body>"));
        assert!(!needs_html_pass(
            b"<header>x</header><bodyguard><fragments>"
        ));
        assert!(needs_html_pass(b"<head>"));
        assert!(needs_html_pass(b"<fragment/>"));
        assert!(needs_html_pass(b"<fragment"));
    }
}
