//! Wicket's Ajax answers (`<ajax-response>`): each `<component>`'s markup
//! (a CDATA section) goes through a rewriter like a fragment's; everything
//! else (`<evaluate>`, `<header-contribution>`...) is left as it is.

/// `xml` with the markup of every `<component ...><![CDATA[...]]></component>`
/// replaced by `f(markup)`. `None` when it is not an `<ajax-response>`.
pub fn map_components(xml: &str, f: impl Fn(&str) -> String) -> Option<String> {
    if !xml.contains("<ajax-response") {
        return None;
    }
    let mut out = String::with_capacity(xml.len() + 256);
    let mut rest = xml;
    while let Some(open) = rest.find("<component") {
        // The component's start tag.
        let Some(tag_end) = rest[open..].find('>').map(|i| open + i + 1) else {
            break;
        };
        out.push_str(&rest[..tag_end]);
        rest = &rest[tag_end..];
        let Some(body) = rest.strip_prefix("<![CDATA[") else {
            continue;
        };
        let Some(close) = body.find("]]></component>") else {
            out.push_str(rest);
            return Some(out);
        };
        let markup = &body[..close];
        out.push_str("<![CDATA[");
        // A `]]>` inside the rewritten markup would end the section.
        out.push_str(&f(markup).replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></component>");
        rest = &body[close + "]]></component>".len()..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_components_markup_is_mapped_and_the_rest_kept() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ajax-response>\
                   <component id=\"a1\"><![CDATA[<a href=\"x\">x</a>]]></component>\
                   <evaluate><![CDATA[alert(1)]]></evaluate>\
                   <component id=\"b2\" encoding=\"\"><![CDATA[<b>]]></component></ajax-response>";
        let got = map_components(xml, |m| format!("[{m}]]>")).unwrap();
        assert_eq!(
            got,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ajax-response>\
             <component id=\"a1\"><![CDATA[[<a href=\"x\">x</a>]]]]><![CDATA[>]]></component>\
             <evaluate><![CDATA[alert(1)]]></evaluate>\
             <component id=\"b2\" encoding=\"\"><![CDATA[[<b>]]]]><![CDATA[>]]></component></ajax-response>"
        );
        assert!(map_components("<html></html>", |m| m.to_string()).is_none());
        // Broken input never panics.
        for bad in [
            "<ajax-response><component",
            "<ajax-response><component id=a><![CDATA[x",
            "<ajax-response><component>",
        ] {
            let _ = map_components(bad, |m| m.to_string());
        }
    }
}
