//! `multipart/mixed` bodies (RFC 2046 §5.1, RFC 5621): the parts, each with its own
//! Content-Type and Content-Disposition.
//!
//! Trunks from SIP-I and SIP-T gateways (RFC 3204, ITU-T Q.1912.5) carry the SDP offer in
//! such a body next to an encapsulated ISUP message; vportal reads the SDP part and leaves
//! the others, as their disposition's `handling` allows.

use super::syntax::{self, Params};

/// One body part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// Its Content-Type (`text/plain` by RFC 2046 §5.1.1's default when it has none).
    pub content_type: &'a str,
    /// Its Content-Disposition, if it has one.
    pub disposition: Option<&'a str>,
    /// Its Content-Transfer-Encoding, if it has one.
    pub transfer_encoding: Option<&'a str>,
    /// Its octets.
    pub body: &'a [u8],
}

/// Why a multipart body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The Content-Type has no usable `boundary` parameter.
    #[error("multipart Content-Type without a valid boundary")]
    NoBoundary,
    /// No delimiter line, or no closing one.
    #[error("multipart body without its delimiters")]
    NoDelimiter,
    /// A part's headers do not end, or one is not `name: value` text.
    #[error("malformed multipart part headers")]
    BadPartHeaders,
}

/// Most parts read from one body.
const MAX_PARTS: usize = 16;

/// The `boundary` parameter of a `multipart/*` Content-Type value (RFC 2046 §5.1.1: 1 to 70
/// characters, quoted or a token).
///
/// # Errors
/// [`MultipartError::NoBoundary`].
pub fn boundary(content_type: &str) -> Result<&str, MultipartError> {
    let params = content_type
        .find(';')
        .map_or(Ok(None), |at| Params::new(&content_type[at..]).map(Some))
        .map_err(|_| MultipartError::NoBoundary)?;
    let value = params
        .and_then(|p| p.get("boundary"))
        .flatten()
        .ok_or(MultipartError::NoBoundary)?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').ok_or(MultipartError::NoBoundary)?,
        None => value,
    };
    if (1..=70).contains(&value.len()) && !value.contains(['"', '\\']) {
        Ok(value)
    } else {
        Err(MultipartError::NoBoundary)
    }
}

/// The parts of `body`, delimited by `boundary` (RFC 2046 §5.1.1): a preamble, then each
/// part after a `--boundary` line, up to the `--boundary--` line; the CRLF before a
/// delimiter belongs to it, not to the part. At most 16 parts are read.
///
/// # Errors
/// [`MultipartError`] for a body without its delimiters or with malformed part headers.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    let dash: Vec<u8> = [b"--", boundary.as_bytes()].concat();
    let delimiter: Vec<u8> = [b"\r\n", dash.as_slice()].concat();
    // The first delimiter may open the body, without a CRLF before it.
    let mut at = if body.starts_with(&dash) {
        dash.len()
    } else {
        find(body, &delimiter).ok_or(MultipartError::NoDelimiter)? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line's end.
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let Some(start) = rest[padding..].strip_prefix(b"\r\n") else {
            return Err(MultipartError::NoDelimiter);
        };
        let start_at = body.len() - start.len();
        let end = find(start, &delimiter).ok_or(MultipartError::NoDelimiter)?;
        if parts.len() < MAX_PARTS {
            parts.push(part(&start[..end])?);
        }
        at = start_at + end + delimiter.len();
    }
}

/// One part's headers and body; the headers end at an empty line (a part with none starts
/// with it).
fn part(bytes: &[u8]) -> Result<Part<'_>, MultipartError> {
    let (head, body) = if let Some(body) = bytes.strip_prefix(b"\r\n") {
        (&b""[..], body)
    } else {
        let end = find(bytes, b"\r\n\r\n").ok_or(MultipartError::BadPartHeaders)?;
        (&bytes[..end], &bytes[end + 4..])
    };
    let head = std::str::from_utf8(head).map_err(|_| MultipartError::BadPartHeaders)?;
    let mut found = Part {
        content_type: "text/plain",
        disposition: None,
        transfer_encoding: None,
        body,
    };
    // (name, where its value starts and ends in `head`): a line that starts with white
    // space continues the one before (RFC 5322 §2.2.3 folding); the value then spans the
    // fold, whose CRLF the readers of these values take for white space.
    let mut fields: Vec<(&str, usize, usize)> = Vec::new();
    let mut offset = 0;
    for line in head.split("\r\n") {
        let start = offset;
        offset += line.len() + 2;
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().ok_or(MultipartError::BadPartHeaders)?;
            last.2 = start + line.len();
            continue;
        }
        let (name, _) = line
            .split_once(':')
            .filter(|(n, _)| syntax::is_token(syntax::trim(n)))
            .ok_or(MultipartError::BadPartHeaders)?;
        fields.push((
            syntax::trim(name),
            start + name.len() + 1,
            start + line.len(),
        ));
    }
    for (name, from, to) in fields {
        let value = syntax::trim(&head[from..to]);
        match name.to_ascii_lowercase().as_str() {
            "content-type" | "c" => found.content_type = value,
            "content-disposition" => found.disposition = Some(value),
            "content-transfer-encoding" => found.transfer_encoding = Some(value),
            _ => {}
        }
    }
    Ok(found)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INVITE body from a SIP-I gateway: SDP and an encapsulated ISUP IAM.
    const SIP_I: &[u8] = b"--unique-boundary-1\r\n\
Content-Type: application/sdp\r\n\
\r\n\
v=0\r\nm=audio 5000 RTP/AVP 0\r\n\
\r\n\
--unique-boundary-1\r\n\
Content-Type: application/ISUP; version=itu-t92+\r\n\
Content-Disposition: signal; handling=optional\r\n\
\r\n\
\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03\r\n\
--unique-boundary-1--\r\n";

    #[test]
    fn the_parts_of_a_sip_i_body() {
        let parts = parts(SIP_I, "unique-boundary-1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type, "application/sdp");
        assert_eq!(parts[0].disposition, None);
        // The CRLF before a delimiter is the delimiter's: the SDP keeps its own last CRLF.
        assert_eq!(parts[0].body, b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n");
        assert_eq!(parts[1].content_type, "application/ISUP; version=itu-t92+");
        assert_eq!(parts[1].disposition, Some("signal; handling=optional"));
        assert_eq!(parts[1].body.len(), 19, "binary, NUL octets included");
    }

    #[test]
    fn a_preamble_padding_and_a_part_without_headers() {
        let body = b"This is the preamble.\r\n--b  \r\n\r\nno headers\r\n--b\t\r\nContent-Type: text/x\r\n\r\n\r\n--b--";
        let parts = parts(body, "b").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].content_type, parts[0].body),
            ("text/plain", &b"no headers"[..])
        );
        assert_eq!((parts[1].content_type, parts[1].body), ("text/x", &b""[..]));
    }

    #[test]
    fn folded_part_headers_are_read() {
        let body = b"--b\r\nContent-Type: application/ISUP;\r\n version=itu-t92+\r\nContent-Disposition: signal;\r\n\thandling=optional\r\n\r\nx\r\n--b--";
        let parts = parts(body, "b").unwrap();
        assert_eq!(
            parts[0].content_type,
            "application/ISUP;\r\n version=itu-t92+"
        );
        assert_eq!(parts[0].disposition, Some("signal;\r\n\thandling=optional"));
        // A continuation with nothing to continue is malformed.
        assert!(super::parts(b"--b\r\n folded\r\n\r\nx\r\n--b--", "b").is_err());
    }

    #[test]
    fn the_boundary_parameter() {
        assert_eq!(
            boundary("multipart/mixed;boundary=7a9cbec02ceef655"),
            Ok("7a9cbec02ceef655")
        );
        assert_eq!(boundary("multipart/mixed; boundary=\"a b:c\""), Ok("a b:c"));
        for bad in [
            "multipart/mixed",
            "multipart/mixed;boundary=",
            "multipart/mixed;boundary=\"\"",
            "multipart/mixed;boundary=\"open",
            "multipart/mixed;;boundary=x",
        ] {
            assert_eq!(boundary(bad), Err(MultipartError::NoBoundary), "{bad}");
        }
        assert_eq!(
            boundary(&format!("multipart/mixed;boundary={}", "x".repeat(71))),
            Err(MultipartError::NoBoundary)
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"--b",
            b"--b\r\nContent-Type: a/b\r\n\r\nbody never closed",
            b"--bx\r\n\r\n\r\n--b--",
            b"--b\r\nno colon here\r\n\r\nx\r\n--b--",
            b"--b\r\nContent-Type: a/b\r\n",
        ] {
            assert!(
                parts(bad, "b").is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Past 16 parts the rest are skipped, not collected.
        let many: Vec<u8> = (0..40)
            .flat_map(|_| b"--b\r\n\r\nx\r\n".iter().copied())
            .chain(b"--b--".iter().copied())
            .collect();
        assert_eq!(parts(&many, "b").unwrap().len(), 16);
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(256))]
        /// Bodies made of the pieces a multipart body is made of, in any order: the
        /// parser answers, never panics, and every part's body lies inside the input.
        #[test]
        fn any_arrangement_of_the_pieces_is_read_or_refused(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"--b"[..], b"--", b"\r\n", b"\r\n\r\n", b" ", b"Content-Type: a/b",
                    b"Content-Disposition: x;handling=optional", b":", b"x", b"\xff", b"\0",
                ]),
                0..40,
            )
        ) {
            let body = pieces.concat();
            if let Ok(found) = parts(&body, "b") {
                let range = body.as_ptr_range();
                for p in found {
                    let inner = p.body.as_ptr_range();
                    proptest::prop_assert!(range.start <= inner.start && inner.end <= range.end);
                }
            }
        }
    }
}
