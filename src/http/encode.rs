//! Content coding of answers to browsers: `br` or `gzip`, chosen from the
//! request's `Accept-Encoding`, applied chunk by chunk with a flush after
//! each, so that a streamed page still reaches the browser as it is written.

use std::io::Write;

use http::HeaderMap;

/// A coding rain-edge can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Brotli.
    Br,
    /// gzip.
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The coding to use for a browser that sent `headers`: `br` when it is
/// acceptable, else `gzip`, else none. `q=0` refuses a coding; `*` stands
/// for those not named.
pub fn choose(headers: &HeaderMap) -> Option<Coding> {
    let mut br: Option<bool> = None;
    let mut gzip: Option<bool> = None;
    let mut star: Option<bool> = None;
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let mut ok = true;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        ok = v.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(false);
                    }
                }
            }
            if name.eq_ignore_ascii_case("br") {
                br = Some(ok);
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(ok);
            } else if name == "*" {
                star = Some(ok);
            }
        }
    }
    if br.or(star).unwrap_or(false) {
        Some(Coding::Br)
    } else if gzip.or(star).unwrap_or(false) {
        Some(Coding::Gzip)
    } else {
        None
    }
}

/// Whether answers of this `Content-Type` are worth compressing (text).
pub fn compressible(content_type: &str) -> bool {
    const TEXT: [&str; 4] = [
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
    ];
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let ends_ci = |suffix: &str| {
        essence.len() >= suffix.len()
            && essence.as_bytes()[essence.len() - suffix.len()..]
                .eq_ignore_ascii_case(suffix.as_bytes())
    };
    essence
        .get(..5)
        .is_some_and(|head| head.eq_ignore_ascii_case("text/"))
        || TEXT.iter().any(|t| essence.eq_ignore_ascii_case(t))
        || ends_ci("+json")
        || ends_ci("+xml")
}

/// gzip's level: fast, most of the ratio (nginx's default is 1).
const GZIP_LEVEL: u32 = 5;
/// Brotli's quality for streamed answers (11 is for static files).
const BR_QUALITY: u32 = 4;
/// Brotli's window, log2: 64 KiB keeps each encoder small.
const BR_WINDOW: u32 = 16;

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Done,
}

/// One answer's encoder.
pub struct Encoder(Inner);

impl Encoder {
    /// An encoder for `coding`.
    pub fn new(coding: Coding) -> Encoder {
        Encoder(match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BR_QUALITY,
                BR_WINDOW,
            ))),
        })
    }

    /// Encodes `data` and returns what can be sent now: everything so far,
    /// flushed so that the browser can decode it; with `end`, the coding's
    /// end too. After `end`, returns nothing.
    pub fn encode(&mut self, data: &[u8], end: bool) -> std::io::Result<Vec<u8>> {
        match &mut self.0 {
            Inner::Gzip(enc) => {
                enc.write_all(data)?;
                if end {
                    enc.try_finish()?;
                } else {
                    enc.flush()?;
                }
                let out = std::mem::take(enc.get_mut());
                if end {
                    self.0 = Inner::Done;
                }
                Ok(out)
            }
            Inner::Br(enc) => {
                enc.write_all(data)?;
                if !end {
                    enc.flush()?;
                    return Ok(std::mem::take(enc.get_mut()));
                }
                let Inner::Br(enc) = std::mem::replace(&mut self.0, Inner::Done) else {
                    return Ok(Vec::new());
                };
                Ok(enc.into_inner())
            }
            Inner::Done => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, accept.parse().unwrap());
        h
    }

    #[test]
    fn codings_are_chosen_from_accept_encoding() {
        assert_eq!(choose(&headers("gzip, deflate, br")), Some(Coding::Br));
        assert_eq!(choose(&headers("gzip, deflate")), Some(Coding::Gzip));
        assert_eq!(choose(&headers("br;q=0, gzip;q=0.5")), Some(Coding::Gzip));
        assert_eq!(choose(&headers("*")), Some(Coding::Br));
        assert_eq!(choose(&headers("*;q=0, gzip")), Some(Coding::Gzip));
        assert_eq!(choose(&headers("identity")), None);
        assert_eq!(choose(&headers("gzip;q=0")), None);
        assert_eq!(choose(&HeaderMap::new()), None);
        assert!(compressible("text/html; charset=utf-8"));
        assert!(compressible("application/ld+json"));
        assert!(!compressible("image/png"));
    }

    #[test]
    fn every_flushed_piece_decodes_on_its_own() {
        for coding in [Coding::Gzip, Coding::Br] {
            let mut enc = Encoder::new(coding);
            let mut sent = Vec::new();
            let pieces = [
                "<html><head>",
                "<title>t</title></head>",
                "<body>done</body></html>",
            ];
            for p in pieces {
                let out = enc.encode(p.as_bytes(), false).unwrap();
                assert!(!out.is_empty(), "{coding:?}: a flush must send something");
                sent.extend_from_slice(&out);
                // What was sent so far decodes to everything written so far.
                let so_far = decode_prefix(coding, &sent);
                assert!(so_far.ends_with(p), "{coding:?}: {so_far}");
            }
            sent.extend_from_slice(&enc.encode(b"", true).unwrap());
            assert!(enc.encode(b"more", true).unwrap().is_empty());
            assert_eq!(decode_all(coding, &sent), pieces.concat());
        }
    }

    fn decode_all(coding: Coding, data: &[u8]) -> String {
        let mut out = String::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_string(&mut out)
                    .unwrap();
            }
            Coding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_string(&mut out)
                    .unwrap();
            }
        }
        out
    }

    /// Decodes as much of an unfinished stream as it holds.
    fn decode_prefix(coding: Coding, data: &[u8]) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        match coding {
            Coding::Gzip => {
                let mut d = flate2::read::GzDecoder::new(data);
                while let Ok(n) = d.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Coding::Br => {
                let mut d = brotli::Decompressor::new(data, 4096);
                while let Ok(n) = d.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
