//! Wicket's Ajax answers (`<ajax-response>`): each `<component>`'s markup
//! goes through a rewriter like a fragment's, and each `<evaluate>` and
//! `<priority-evaluate>` script through the script rewriter (Wicket binds
//! the Ajax behaviours of re-rendered components there). Everything else
//! (`<header-contribution>`...) is left as it is.

/// What a section of an Ajax answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AjaxPart {
    /// A component's markup (`<component>`).
    Markup,
    /// A script (`<evaluate>`, `<priority-evaluate>`).
    Script,
}

const SECTIONS: [(&str, AjaxPart); 3] = [
    ("component", AjaxPart::Markup),
    ("priority-evaluate", AjaxPart::Script),
    ("evaluate", AjaxPart::Script),
];

/// `xml` with the content of every `<component>`, `<evaluate>` and
/// `<priority-evaluate>` replaced by `f(part, content)`. The content is the
/// text of its CDATA sections joined (Wicket splits one at each `]]>` of
/// the markup); the result is written back as CDATA, split the same way.
/// `None` when it is not an `<ajax-response>`.
pub fn map_components(xml: &str, f: impl Fn(AjaxPart, &str) -> String) -> Option<String> {
    if !xml.contains("<ajax-response") {
        return None;
    }
    let mut out = String::with_capacity(xml.len() + 256);
    let mut rest = xml;
    // The next section, of any of the kinds.
    while let Some((open, tag, part)) = next_section(rest) {
        let Some(tag_end) = rest[open..].find('>').map(|i| open + i + 1) else {
            break;
        };
        out.push_str(&rest[..tag_end]);
        rest = &rest[tag_end..];
        if out.ends_with("/>") {
            // An empty element: nothing inside.
            continue;
        }
        let close_tag = format!("</{tag}>");
        let Some(close) = rest.find(&close_tag) else {
            out.push_str(rest);
            return Some(out);
        };
        let inner = &rest[..close];
        let content = cdata_text(inner);
        out.push_str("<![CDATA[");
        out.push_str(&f(part, &content).replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]>");
        out.push_str(&close_tag);
        rest = &rest[close + close_tag.len()..];
    }
    out.push_str(rest);
    Some(out)
}

/// Where the next section's start tag (`<component`, `<evaluate`,
/// `<priority-evaluate` as an element name: followed by a space, `>` or
/// `/`) begins in `s`, and its kind: one pass over the `<`s, whichever
/// kinds the answer holds.
fn next_section(s: &str) -> Option<(usize, &'static str, AjaxPart)> {
    let mut from = 0;
    while let Some(i) = s[from..].find('<') {
        let at = from + i;
        let name = &s[at + 1..];
        for (tag, part) in SECTIONS {
            let ends_name = matches!(
                name.as_bytes().get(tag.len()),
                Some(b' ' | b'>' | b'/' | b'\t' | b'\r' | b'\n')
            );
            if name.starts_with(tag) && ends_name {
                return Some((at, tag, part));
            }
        }
        from = at + 1;
    }
    None
}

/// The text of the CDATA sections in `inner`, joined; text outside them
/// is taken as it is (entities are not decoded: Wicket writes CDATA).
fn cdata_text(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(start) = rest.find("<![CDATA[") {
        out.push_str(rest[..start].trim());
        let body = &rest[start + "<![CDATA[".len()..];
        match body.find("]]>") {
            Some(end) => {
                out.push_str(&body[..end]);
                rest = &body[end + "]]>".len()..];
            }
            None => {
                out.push_str(body);
                rest = "";
            }
        }
    }
    out.push_str(rest.trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_mapped_by_kind_and_the_rest_kept() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ajax-response>\
                   <component id=\"a1\"><![CDATA[<a href=\"x\">x</a>]]></component>\
                   <header-contribution><![CDATA[<head></head>]]></header-contribution>\
                   <evaluate><![CDATA[go(\"u\")]]></evaluate>\
                   <priority-evaluate><![CDATA[first()]]></priority-evaluate>\
                   <component id=\"b2\" encoding=\"\"><![CDATA[a]]]]><![CDATA[>b]]></component></ajax-response>";
        let got = map_components(xml, |part, m| match part {
            AjaxPart::Markup => format!("[{m}]"),
            AjaxPart::Script => format!("S({m})"),
        })
        .unwrap();
        assert_eq!(
            got,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ajax-response>\
             <component id=\"a1\"><![CDATA[[<a href=\"x\">x</a>]]]></component>\
             <header-contribution><![CDATA[<head></head>]]></header-contribution>\
             <evaluate><![CDATA[S(go(\"u\"))]]></evaluate>\
             <priority-evaluate><![CDATA[S(first())]]></priority-evaluate>\
             <component id=\"b2\" encoding=\"\"><![CDATA[[a]]]]><![CDATA[>b]]]></component></ajax-response>"
        );
        assert!(map_components("<html></html>", |_, m| m.to_string()).is_none());
        // Broken input never panics, and ends.
        for bad in [
            "<ajax-response><component",
            "<ajax-response><component id=a><![CDATA[x",
            "<ajax-response><component>",
            "<ajax-response><components><evaluate/>",
            "<ajax-response><evaluate><![CDATA[",
        ] {
            let _ = map_components(bad, |_, m| m.to_string());
        }
    }
}
