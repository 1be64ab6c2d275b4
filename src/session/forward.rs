//! Which of the browser's own cookies may be passed to an origin
//! (`forward_cookies`); never rain-edge's session cookie.

/// The `name=value` pairs of a browser `Cookie` header whose names are in
/// `allowed`, never the session cookie `session_cookie`.
pub fn forwarded_cookies<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    allowed: &[String],
    session_cookie: &str,
) -> Vec<String> {
    if allowed.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for header in cookie_headers {
        for pair in header.split(';') {
            let pair = pair.trim();
            let Some((name, _)) = pair.split_once('=') else {
                continue;
            };
            let name = name.trim();
            if name != session_cookie && allowed.iter().any(|a| a == name) {
                out.push(pair.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_cookies_pass() {
        let allowed = vec!["lang".to_string(), "rain_sid".to_string()];
        let got = forwarded_cookies(
            ["lang=de; secret=1", "rain_sid=abc; lang2=x"].into_iter(),
            &allowed,
            "rain_sid",
        );
        assert_eq!(got, vec!["lang=de".to_string()]);
        assert!(forwarded_cookies(["lang=de"].into_iter(), &[], "rain_sid").is_empty());
    }
}
