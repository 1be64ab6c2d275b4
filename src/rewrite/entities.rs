//! Decoding character references in attribute values (`&amp;` -> `&`),
//! as a browser would before using a URL. lol_html hands attribute values
//! out as written. Numeric references and the named ones that occur in
//! attribute values are decoded; an unknown name is kept as written.

use std::borrow::Cow;

const NAMED: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{a0}'),
    ("equals", '='),
    ("quest", '?'),
    ("num", '#'),
    ("sol", '/'),
    ("colon", ':'),
    ("semi", ';'),
    ("percnt", '%'),
    ("plus", '+'),
    ("comma", ','),
    ("period", '.'),
    ("lowbar", '_'),
    ("hyphen", '-'),
    ("excl", '!'),
    ("commat", '@'),
    ("dollar", '$'),
    ("lpar", '('),
    ("rpar", ')'),
    ("ast", '*'),
    ("tilde", '~'),
];

/// Decodes the character references of an attribute value.
pub fn decode_attr(value: &str) -> Cow<'_, str> {
    if !value.contains('&') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match reference(rest) {
            Some((ch, len)) => {
                out.push(ch);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character of the reference at the start of `s` and its length.
fn reference(s: &str) -> Option<(char, usize)> {
    let body = s.get(1..)?;
    let end = body.find(';')?;
    if end == 0 || end > 32 {
        return None;
    }
    let name = &body[..end];
    let ch = if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        match char::from_u32(code) {
            Some('\0') | None => '\u{fffd}',
            Some(c) => c,
        }
    } else {
        NAMED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)?
    };
    Some((ch, end + 2))
}

/// `value` made safe inside a double-quoted attribute (or as text): `&`,
/// `"`, `<` and `>` as character references. The inverse of
/// [`decode_attr`] for what it escapes.
pub fn encode_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::decode_attr;

    #[test]
    fn references() {
        assert_eq!(decode_attr("/f?a=1&amp;b=2"), "/f?a=1&b=2");
        assert_eq!(decode_attr("&#47;x&#x3F;y&#61;1"), "/x?y=1");
        assert_eq!(decode_attr("a&b"), "a&b");
        assert_eq!(decode_attr("a&unknown;b"), "a&unknown;b");
        assert_eq!(decode_attr("&#0;"), "\u{fffd}");
        assert_eq!(decode_attr("&quot;&lt;&gt;&apos;"), "\"<>'");
        assert!(matches!(
            decode_attr("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
