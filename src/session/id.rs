//! rain-edge's own session id: 256 bits from the operating system's secure
//! random source, base64url, and the one browser cookie that carries it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// Length of an encoded id (32 bytes, base64url without padding).
const ID_LEN: usize = 43;

/// A session id, as the browser's cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new random id (256 bits from the OS's secure random source).
    pub fn generate() -> SessionId {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionId(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts a value only if it has the shape rain-edge generates (whether
    /// the session exists is the store's to say).
    pub fn parse(value: &str) -> Option<SessionId> {
        let ok = value.len() == ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| SessionId(value.to_string()))
    }

    /// The encoded id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The value of rain-edge's cookie `name` in the browser's `Cookie` headers.
pub fn session_cookie<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    name: &str,
) -> Option<&'a str> {
    let mut named = cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim());
    let first = named.next();
    // Several cookies of the name (one planted from a sibling domain, say):
    // none of them is trusted, so a planted one cannot fix the session.
    match named.next() {
        Some(_) => None,
        None => first,
    }
}

/// The `Set-Cookie` value that gives the browser its session id.
pub fn set_cookie_header(name: &str, id: &SessionId, secure: bool) -> String {
    let mut v = format!("{name}={}; Path=/; HttpOnly; SameSite=Lax", id.as_str());
    if secure {
        v.push_str("; Secure");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_session_cookies_name_no_session() {
        let one = ["a=1; rain_sid=x"];
        assert_eq!(session_cookie(one.into_iter(), "rain_sid"), Some("x"));
        let two = ["rain_sid=x; b=2", "rain_sid=y"];
        assert_eq!(session_cookie(two.into_iter(), "rain_sid"), None);
        let same = ["rain_sid=x; rain_sid=x"];
        assert_eq!(session_cookie(same.into_iter(), "rain_sid"), None);
    }

    #[test]
    fn ids_are_random_and_well_formed() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(SessionId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(SessionId::parse("short"), None);
        assert_eq!(SessionId::parse(&"!".repeat(ID_LEN)), None);
    }

    #[test]
    fn cookie_lookup_and_header() {
        let h = ["a=1; rain_sid=abc", "x=2"];
        assert_eq!(session_cookie(h.into_iter(), "rain_sid"), Some("abc"));
        assert_eq!(session_cookie(h.into_iter(), "nope"), None);
        let id = SessionId::generate();
        let v = set_cookie_header("rain_sid", &id, true);
        assert!(v.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"));
    }
}
