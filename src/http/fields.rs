//! Field syntax shared by both sides of the proxy.

/// The length a `Content-Length` value gives, which must agree with every
/// value seen before (`prior`). Answers and requests alike.
pub fn content_length(value: &[u8], prior: Option<u64>) -> Result<u64, String> {
    let mut found = prior;
    let mut any = false;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length".into());
        }
        let n = part
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length values".into());
        }
        found = Some(n);
        any = true;
    }
    match found {
        Some(n) if any => Ok(n),
        _ => Err("invalid Content-Length".into()),
    }
}
