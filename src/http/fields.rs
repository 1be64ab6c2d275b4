//! Field syntax shared by both sides of the proxy.

/// Why a `Content-Length` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    /// Not a decimal number (or empty, or over 19 digits).
    #[error("invalid Content-Length")]
    Invalid,
    /// Two values that differ.
    #[error("conflicting Content-Length values")]
    Conflicting,
}

/// The length a `Content-Length` value gives, which must agree with every
/// value seen before (`prior`). Answers and requests alike.
pub fn content_length(value: &[u8], prior: Option<u64>) -> Result<u64, LengthError> {
    let mut found = prior;
    let mut any = false;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(LengthError::Invalid);
        }
        let n = part
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(LengthError::Conflicting);
        }
        found = Some(n);
        any = true;
    }
    match found {
        Some(n) if any => Ok(n),
        _ => Err(LengthError::Invalid),
    }
}
/// The directives of a `Cache-Control` value, in order: each name and its
/// argument (if any), trimmed, the argument's quotes removed.
pub fn cache_directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    value.split(',').map(|d| match d.split_once('=') {
        Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
        None => (d.trim(), None),
    })
}
