//! Rewriting an origin's CSS for `css_scope = "rename"` (docs/configuration.md, rewriting): every
//! class in a selector becomes `{prefix}-{name}` (also inside `:not()`,
//! `:is()`, `:where()`, `:has()`), ids, keyframes and custom properties stay;
//! every `url()` is mapped (to `/_rain/r/` for the origin's own resources).
//! lightningcss parses with error recovery, so a broken rule is dropped, not
//! the sheet.

use std::convert::Infallible;

use lightningcss::rules::{CssRule, CssRuleList};
use lightningcss::selector::{Component, Selector};
use lightningcss::stylesheet::{ParserOptions, PrinterOptions, StyleSheet};
use lightningcss::values::ident::Ident;
use lightningcss::values::url::Url as CssUrl;
use lightningcss::visit_types;
use lightningcss::visitor::{Visit, VisitTypes, Visitor};

/// A class name as renamed: `{prefix}-{name}`.
pub fn scoped_class(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

/// Renames every class token of a `class` attribute value.
pub fn scope_class_attr(prefix: &str, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for token in value.split_ascii_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(prefix);
        out.push('-');
        out.push_str(token);
    }
    out
}

struct Scoper<'a, F> {
    prefix: Option<&'a str>,
    map_url: F,
}

fn rename_selector(prefix: &str, sel: &mut Selector<'_>) {
    for component in sel.iter_mut_raw_match_order() {
        match component {
            Component::Class(ident) => {
                *ident = Ident::from(scoped_class(prefix, ident.0.as_ref()));
            }
            Component::Negation(list)
            | Component::Is(list)
            | Component::Where(list)
            | Component::Has(list)
            | Component::Any(_, list) => {
                for inner in list.iter_mut() {
                    rename_selector(prefix, inner);
                }
            }
            Component::Slotted(inner) => rename_selector(prefix, inner),
            Component::Host(Some(inner)) => rename_selector(prefix, inner),
            _ => {}
        }
    }
}

impl<'i, F: FnMut(&str) -> Option<String>> Visitor<'i> for Scoper<'_, F> {
    type Error = Infallible;

    fn visit_types(&self) -> VisitTypes {
        visit_types!(SELECTORS | URLS)
    }

    fn visit_selector(&mut self, selector: &mut Selector<'i>) -> Result<(), Infallible> {
        if let Some(prefix) = self.prefix {
            rename_selector(prefix, selector);
        }
        Ok(())
    }

    fn visit_url(&mut self, url: &mut CssUrl<'i>) -> Result<(), Infallible> {
        if let Some(mapped) = (self.map_url)(url.url.as_ref()) {
            url.url = mapped.into();
        }
        Ok(())
    }
}

/// Parses a stylesheet with error recovery (a broken rule is dropped, not the
/// sheet), renames its classes with `prefix` when given and maps its URLs.
fn parse_mapped<'i>(
    css: &'i str,
    prefix: Option<&str>,
    map_url: impl FnMut(&str) -> Option<String>,
) -> Result<StyleSheet<'i>, String> {
    let options = ParserOptions {
        error_recovery: true,
        ..ParserOptions::default()
    };
    let mut sheet = StyleSheet::parse(css, options).map_err(|e| e.to_string())?;
    let mut scoper = Scoper { prefix, map_url };
    if let Err(never) = sheet.visit(&mut scoper) {
        match never {}
    }
    Ok(sheet)
}

/// Rewrites a stylesheet: classes renamed with `prefix` (when given), URLs
/// through `map_url` (`None` keeps one). The result never contains `</`, so
/// it can stand inside a `<style>` element.
pub fn rewrite_css(
    css: &str,
    prefix: Option<&str>,
    map_url: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let sheet = parse_mapped(css, prefix, map_url)?;
    let printed = sheet
        .to_css(PrinterOptions::default())
        .map_err(|e| e.to_string())?;
    // NOTE: `\/` is a valid CSS escape for `/`; it keeps `</style>` out.
    Ok(printed.code.replace("</", "<\\/"))
}

/// Rewrites a stylesheet for `css_scope = "wrap"`: the origin's rules are
/// confined to its fragments (`@scope (rain-fragment[origin="NAME"])`), the
/// markup and class names are left as they are; rules that cannot stand in
/// a scope (`@import`, `@font-face`, `@keyframes`, `@namespace`, `@property`,
/// `@page`, ...) stay at the top. URLs are mapped as in [`rewrite_css`].
pub fn wrap_css(
    css: &str,
    origin: &str,
    map_url: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut sheet = parse_mapped(css, None, map_url)?;
    let (scoped, top): (Vec<_>, Vec<_>) =
        std::mem::take(&mut sheet.rules.0)
            .into_iter()
            .partition(|r| {
                matches!(
                    r,
                    CssRule::Style(_)
                        | CssRule::Media(_)
                        | CssRule::Supports(_)
                        | CssRule::Container(_)
                        | CssRule::LayerBlock(_)
                        | CssRule::Nesting(_)
                        | CssRule::StartingStyle(_)
                )
            });
    let print = |rules| {
        let sheet = StyleSheet::new(Vec::new(), CssRuleList(rules), ParserOptions::default());
        sheet
            .to_css(PrinterOptions::default())
            .map(|r| r.code)
            .map_err(|e| e.to_string())
    };
    let top = print(top)?;
    let scoped = print(scoped)?;
    let name: String = origin
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let out = format!("{top}\n@scope (rain-fragment[origin=\"{name}\"]) {{\n{scoped}\n}}\n");
    Ok(out.replace("</", "<\\/"))
}

/// The element a fragment of a `wrap` origin is shown in.
pub fn wrap_open(origin: &str) -> String {
    let name: String = origin
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    format!("<rain-fragment origin=\"{name}\" style=\"display:contents\">")
}

/// The end of [`wrap_open`].
pub const WRAP_CLOSE: &str = "</rain-fragment>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_renamed_everywhere_and_nothing_else() {
        let css = ".cart .item:hover, a.cart > .x:not(.y):is(.z, #id) { color: red; background: url(img/bg.png) }\n\
                   #cart { --main: 1px } @keyframes cart { from { opacity: 0 } } @media (width > 10px) { .m { x: y } }";
        let out =
            rewrite_css(css, Some("shop"), |u| Some(format!("/_rain/r/shop/{u}"))).expect("css");
        for want in [
            ".shop-cart .shop-item:hover",
            "a.shop-cart>.shop-x:not(.shop-y):is(.shop-z,#id)",
            "#cart",
            "@keyframes cart",
            ".shop-m",
            "url(\"/_rain/r/shop/img/bg.png\")",
        ] {
            assert!(
                out.replace(' ', "").contains(&want.replace(' ', "")),
                "missing {want} in {out}"
            );
        }
        assert!(!out.contains("shop-cart {") || out.contains(".shop-cart"));
        assert!(!out.contains("#shop-cart"));
    }

    #[test]
    fn off_keeps_classes_and_broken_rules_are_dropped() {
        let out =
            rewrite_css(".a { color: red } .b { color: ; } .c{}", None, |_| None).expect("css");
        assert!(out.contains(".a") && out.contains(".c"));
        let closing = rewrite_css(
            ".a::after { content: \"</style><script>\" }",
            Some("p"),
            |_| None,
        )
        .expect("css");
        assert!(!closing.contains("</"), "{closing}");
    }

    #[test]
    fn wrap_confines_rules_and_keeps_top_level_ones() {
        let css = "@import url(x.css); .box { color: red; background: url(i.png) } @font-face { font-family: F; src: url(f.woff) } @keyframes k { from { opacity: 0 } } @media (width > 1px) { .m { color: blue } }";
        let out = wrap_css(css, "shop", |u| Some(format!("/_rain/r/shop/{u}"))).expect("css");
        let scope_at = out
            .find("@scope (rain-fragment[origin=\"shop\"])")
            .expect("scope");
        for top in ["@import", "@font-face", "@keyframes"] {
            assert!(
                out.find(top).is_some_and(|i| i < scope_at),
                "{top} not at the top: {out}"
            );
        }
        for inner in [".box", "@media"] {
            assert!(
                out.find(inner).is_some_and(|i| i > scope_at),
                "{inner} not scoped: {out}"
            );
        }
        assert!(
            out.contains("/_rain/r/shop/i.png") && out.contains("/_rain/r/shop/f.woff"),
            "{out}"
        );
        assert!(!out.contains("shop-box"));
    }

    #[test]
    fn class_attributes() {
        assert_eq!(
            scope_class_attr("shop", " cart  item\tbig "),
            "shop-cart shop-item shop-big"
        );
        assert_eq!(scope_class_attr("shop", ""), "");
    }
}
