//! Decoding an origin's body: content codings (gzip, deflate, br) with the
//! size bound applied to the decoded bytes, then the charset to UTF-8
//! (declared in `Content-Type`, or a `<meta charset>` near the top, or
//! windows-1252 for undeclared bytes that are not UTF-8, as browsers do).

use std::io::Read;

use bytes::Bytes;
use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than the limit once decoded.
    #[error("body larger than {0} bytes once decoded")]
    TooLarge(u64),
    /// A content coding rain-edge does not know.
    #[error("unsupported content coding `{0}`")]
    UnknownCoding(String),
    /// Corrupt compressed data.
    #[error("corrupt {0} body: {1}")]
    Corrupt(&'static str, String),
}

/// Undoes the `Content-Encoding` codings of `raw` (applied in order, so
/// undone in reverse), never producing more than `max` bytes.
pub fn decode_content(
    raw: Bytes,
    content_encoding: Option<&str>,
    max: u64,
) -> Result<Bytes, DecodeError> {
    let Some(ce) = content_encoding else {
        return Ok(raw);
    };
    let codings: Vec<String> = ce
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let mut data = raw;
    for coding in codings.iter().rev() {
        data = match coding.as_str() {
            "gzip" | "x-gzip" => {
                read_bounded("gzip", flate2::read::MultiGzDecoder::new(&data[..]), max)?
            }
            "deflate" => {
                match read_bounded("deflate", flate2::read::ZlibDecoder::new(&data[..]), max) {
                    Ok(d) => d,
                    // Some servers send raw deflate under this name.
                    Err(DecodeError::Corrupt(..)) => {
                        read_bounded("deflate", flate2::read::DeflateDecoder::new(&data[..]), max)?
                    }
                    Err(e) => return Err(e),
                }
            }
            "br" => read_bounded(
                "br",
                brotli_decompressor::Decompressor::new(&data[..], 4096),
                max,
            )?,
            other => return Err(DecodeError::UnknownCoding(other.to_string())),
        };
    }
    Ok(data)
}

fn read_bounded(name: &'static str, reader: impl Read, max: u64) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let mut limited = reader.take(max.saturating_add(1));
    limited
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(name, e.to_string()))?;
    if out.len() as u64 > max {
        return Err(DecodeError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

/// The `charset` parameter of a `Content-Type` value.
fn declared_charset(content_type: Option<&str>) -> Option<&'static Encoding> {
    let ct = content_type?;
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        Encoding::for_label(v.trim().trim_matches(['"', '\'']).as_bytes())
    })
}

/// A `<meta charset=...>` or `<meta http-equiv ... charset=...>` in the first
/// 1024 bytes.
fn sniffed_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(1024)];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    let pos = lower.windows(8).position(|w| w == b"charset=")?;
    let rest = &head[pos + 8..];
    let rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest);
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'"' | b'\'' | b';' | b' ' | b'>' | b'/'))
        .unwrap_or(rest.len());
    Encoding::for_label(&rest[..end])
}

/// Converts a decoded body to UTF-8.
pub fn to_utf8(body: Bytes, content_type: Option<&str>) -> Bytes {
    let enc = declared_charset(content_type).or_else(|| sniffed_charset(&body));
    // UTF-16 is never sent as HTML bodies in practice; a BOM still wins.
    let enc = match enc {
        Some(e) if e == UTF_8 || e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE => {
            if std::str::from_utf8(&body).is_ok() {
                return strip_utf8_bom(body);
            }
            UTF_8
        }
        Some(e) => e,
        None if std::str::from_utf8(&body).is_ok() => return strip_utf8_bom(body),
        None => WINDOWS_1252,
    };
    let (text, _, _) = enc.decode(&body);
    Bytes::from(text.into_owned())
}

fn strip_utf8_bom(body: Bytes) -> Bytes {
    if body.starts_with(b"\xEF\xBB\xBF") {
        body.slice(3..)
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        Bytes::from(e.finish().expect("finish"))
    }

    #[test]
    fn gzip_round_trip_and_bound() {
        let body = gzip(b"<p>hello</p>");
        assert_eq!(
            decode_content(body.clone(), Some("gzip"), 100).expect("ok"),
            Bytes::from_static(b"<p>hello</p>")
        );
        assert_eq!(
            decode_content(body, Some("gzip"), 5),
            Err(DecodeError::TooLarge(5))
        );
        let bomb = gzip(&vec![b'a'; 1 << 20]);
        assert!(bomb.len() < 10_000);
        assert_eq!(
            decode_content(bomb, Some("gzip"), 1000),
            Err(DecodeError::TooLarge(1000))
        );
    }

    #[test]
    fn br_and_layered_bombs_stop_at_the_bound() {
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 9, 22);
            w.write_all(&vec![b'a'; 8 << 20]).expect("write");
        }
        assert!(br.len() < 10_000, "{}", br.len());
        assert_eq!(
            decode_content(Bytes::from(br), Some("br"), 4096),
            Err(DecodeError::TooLarge(4096))
        );
        // gzip inside gzip: each layer is bounded.
        let inner = gzip(&vec![b'a'; 4 << 20]);
        let outer = gzip(&inner);
        assert_eq!(
            decode_content(outer, Some("gzip, gzip"), 4096),
            Err(DecodeError::TooLarge(4096))
        );
    }

    #[test]
    fn broken_gzip_is_an_error() {
        let mut body = gzip(b"<p>hello world, this is long enough</p>").to_vec();
        let n = body.len();
        body.truncate(n / 2);
        assert!(matches!(
            decode_content(Bytes::from(body), Some("gzip"), 1000),
            Err(DecodeError::Corrupt(..))
        ));
        assert!(matches!(
            decode_content(Bytes::from_static(b"nope"), Some("compress"), 10),
            Err(DecodeError::UnknownCoding(_))
        ));
    }

    #[test]
    fn charsets() {
        let latin1 = Bytes::from_static(b"caf\xe9");
        assert_eq!(
            &to_utf8(latin1.clone(), Some("text/html; charset=ISO-8859-1"))[..],
            "café".as_bytes()
        );
        assert_eq!(&to_utf8(latin1, None)[..], "café".as_bytes());
        let meta = Bytes::from_static(b"<meta charset=\"windows-1252\"><p>\x80</p>");
        assert!(std::str::from_utf8(&to_utf8(meta, Some("text/html")))
            .expect("utf8")
            .contains('€'));
        let utf = Bytes::from("\u{feff}ok é");
        assert_eq!(
            &to_utf8(utf, Some("text/html; charset=utf-8"))[..],
            "ok é".as_bytes()
        );
    }
}
