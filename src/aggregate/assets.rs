//! Fragment assets (Tailor's convention, docs/configuration.md): a fragment
//! answer's `Link` header entries with `rel="stylesheet"` and
//! `rel="fragment-script"` (or `rel="script"`) become a `<link
//! rel="stylesheet">` before the fragment's content and a `<script src>`
//! after it, each URL once per page (the page writer keeps count). URLs under
//! the origin's base go through rain-edge (`/_rain/r/`, where stylesheets
//! are scoped like the origin's others); others are left as they are.

use crate::rewrite::{classify, resource_url, Target, UrlContext};

/// What a `Link` entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// `rel="stylesheet"`: before the content.
    Stylesheet,
    /// `rel="fragment-script"` or `rel="script"`: after it.
    Script,
}

/// One asset: its kind, the URL the page uses, and its markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Stylesheet or script.
    pub kind: AssetKind,
    /// The URL as the page uses it (the key of "once per page").
    pub url: String,
    /// The element written into the page.
    pub html: String,
}

/// The `(URI reference, rel values)` of each entry of `Link` field values
/// (RFC 8288): `<uri>; rel="a b"; other=x, <uri2>; rel=c`. Entries without a
/// `<...>` or without `rel` are skipped.
pub fn parse_link(values: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = value.as_str();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let Some(after) = rest.strip_prefix('<') else {
                // Not an entry: on to the next one.
                match rest.find(',') {
                    Some(i) => {
                        rest = &rest[i..];
                        continue;
                    }
                    None => break,
                }
            };
            let Some(end) = after.find('>') else {
                break;
            };
            let uri = after[..end].trim().to_string();
            rest = &after[end + 1..];
            let mut rels = Vec::new();
            // Parameters up to the next comma outside quotes.
            loop {
                rest = rest.trim_start();
                let Some(p) = rest.strip_prefix(';') else {
                    break;
                };
                let p = p.trim_start();
                let name_end = p.find(['=', ';', ',']).unwrap_or(p.len());
                let name = p[..name_end].trim().to_ascii_lowercase();
                rest = &p[name_end..];
                let mut value = String::new();
                if let Some(v) = rest.strip_prefix('=') {
                    let v = v.trim_start();
                    if let Some(q) = v.strip_prefix('"') {
                        let close = q.find('"').unwrap_or(q.len());
                        value = q[..close].to_string();
                        rest = q.get(close + 1..).unwrap_or("");
                    } else {
                        let stop = v.find([';', ',']).unwrap_or(v.len());
                        value = v[..stop].trim().to_string();
                        rest = &v[stop..];
                    }
                }
                if name == "rel" {
                    rels.extend(
                        value
                            .split_ascii_whitespace()
                            .map(|r| r.to_ascii_lowercase()),
                    );
                }
            }
            if !rels.is_empty() {
                out.push((uri, rels));
            }
            // Skip to the next entry.
            match rest.find(',') {
                Some(i) => rest = &rest[i..],
                None => break,
            }
        }
    }
    out
}

/// The assets a fragment's `Link` values name, with their URLs resolved
/// against the fragment's URL and mapped as the fragment's resources are.
pub fn fragment_assets(values: &[String], ctx: &UrlContext<'_>) -> Vec<Asset> {
    let mut out = Vec::new();
    for (uri, rels) in parse_link(values) {
        let kind = if rels.iter().any(|r| r == "stylesheet") {
            AssetKind::Stylesheet
        } else if rels.iter().any(|r| r == "fragment-script" || r == "script") {
            AssetKind::Script
        } else {
            continue;
        };
        let url = match classify(ctx, &uri) {
            Target::Origin { location, hash } => {
                format!("{}{hash}", resource_url(ctx.origin, &location))
            }
            Target::Foreign => match ctx.fragment_url.join(&uri) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => u.to_string(),
                // Nothing else (javascript:, data:) becomes an asset.
                _ => continue,
            },
        };
        let attr = crate::rewrite::encode_attr(&url);
        let html = match kind {
            AssetKind::Stylesheet => format!("<link rel=\"stylesheet\" href=\"{attr}\">"),
            AssetKind::Script => format!("<script src=\"{attr}\"></script>"),
        };
        if !out.iter().any(|a: &Asset| a.url == url) {
            out.push(Asset { kind, url, html });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_entries_and_their_rels() {
        let v = vec![
            "<https://cdn.example/a.css>; rel=\"stylesheet\", </f.js>; rel=fragment-script"
                .to_string(),
            "<x,y.css>; title=\"a, b\"; rel=\"preload stylesheet\"; as=style".to_string(),
            "</nothing>; type=text/css, garbage, </s.js>; rel=script".to_string(),
        ];
        let got = parse_link(&v);
        assert_eq!(
            got,
            vec![
                (
                    "https://cdn.example/a.css".to_string(),
                    vec!["stylesheet".to_string()]
                ),
                ("/f.js".to_string(), vec!["fragment-script".to_string()]),
                (
                    "x,y.css".to_string(),
                    vec!["preload".to_string(), "stylesheet".to_string()]
                ),
                ("/s.js".to_string(), vec!["script".to_string()]),
            ]
        );
    }

    #[test]
    fn assets_go_through_the_edge_when_they_are_the_origins() {
        let base = url::Url::parse("http://shop.internal/shop/").unwrap();
        let frag = base.join("cart").unwrap();
        let ctx = UrlContext {
            origin: "shop",
            base: &base,
            fragment_url: &frag,
            kind: crate::config::OriginKind::Generic,
        };
        let v = vec![
            "</shop/cart.css>; rel=stylesheet, <cart.js>; rel=fragment-script, <https://cdn.example/x.js?a=1&b=2>; rel=script, <javascript:alert(1)>; rel=script, <cart.css>; rel=stylesheet".to_string(),
        ];
        let got = fragment_assets(&v, &ctx);
        let html: Vec<&str> = got.iter().map(|a| a.html.as_str()).collect();
        assert_eq!(
            html,
            vec![
                "<link rel=\"stylesheet\" href=\"/_rain/r/shop/cart.css\">",
                "<script src=\"/_rain/r/shop/cart.js\"></script>",
                "<script src=\"https://cdn.example/x.js?a=1&amp;b=2\"></script>",
            ]
        );
    }
}
