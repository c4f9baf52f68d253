//! Character classes and small scanners of the RFC 3261 §25 grammar, over `&str`.
//!
//! Header values reach these after line folding has been replaced by spaces in the message
//! buffer, so linear white space is just SP and HTAB here.

/// `token` characters (RFC 3261 §25.1): alphanumerics and `-.!%*_+`'~`.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Whether `s` is a non-empty `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// SP or HTAB (and CR/LF, which folding left behind as part of LWS).
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without leading and trailing linear white space.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8))
}

/// `s` without leading linear white space.
pub(crate) fn trim_start(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii() && is_ws(c as u8))
}

/// Splits a header value on the commas that separate list elements (RFC 3261 §7.3.1),
/// ignoring commas inside quoted strings and `<…>`. Elements are trimmed; empty elements are
/// kept so callers can reject them (`Via: a,,b`).
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut quoted = false;
        let mut angle = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    let item = trim(&value[start..i]);
                    i += 1;
                    start = i;
                    return Some(item);
                }
                _ => {}
            }
            i += 1;
        }
        done = true;
        Some(trim(&value[start.min(value.len())..]))
    })
}

/// Reads a `quoted-string` at the start of `s` (after optional LWS).
///
/// Returns the contents (still with their quoted-pairs) and the rest after the closing quote,
/// or `None` when the string is not closed.
pub(crate) fn quoted_string(s: &str) -> Option<(&str, &str)> {
    let s = trim_start(s);
    let body = s.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A quoted-pair escapes any octet but CR and LF.
            b'\\' => i += 2,
            b'"' => return Some((&body[..i], &body[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// One `;name[=value]` parameter list, as found after a Via's sent-by or a name-addr's `>`.
/// Iterates `(name, value)` pairs with LWS around `;` and `=` removed; quoted values keep
/// their quotes.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a>(&'a str);

/// A parameter list with an empty name (`;;`), a bad name or a bad value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadParams;

impl<'a> Params<'a> {
    /// Wraps text that is empty or starts with `;` (after LWS).
    pub(crate) fn new(text: &'a str) -> Result<Self, BadParams> {
        let p = Self(text);
        // Validate once so that iteration can be infallible.
        for item in p.raw_items() {
            let (name, value) = item?;
            if !is_token(name) {
                return Err(BadParams);
            }
            if let Some(v) = value {
                let ok = if v.starts_with('"') {
                    quoted_string(v).is_some_and(|(_, rest)| trim(rest).is_empty())
                } else {
                    // token / host (IPv6 references included) / port
                    !v.is_empty() && v.bytes().all(|b| is_token_char(b) || b":[]".contains(&b))
                };
                if !ok {
                    return Err(BadParams);
                }
            }
        }
        Ok(p)
    }

    fn raw_items(self) -> impl Iterator<Item = Result<(&'a str, Option<&'a str>), BadParams>> {
        let mut rest = trim(self.0);
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let Some(after) = rest.strip_prefix(';') else {
                rest = "";
                return Some(Err(BadParams));
            };
            // The item runs to the next ';' outside a quoted string.
            let bytes = after.as_bytes();
            let mut quoted = false;
            let mut end = bytes.len();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b';' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let item = &after[..end];
            rest = &after[end..];
            Some(Ok(match item.split_once('=') {
                Some((n, v)) => (trim(n), Some(trim(v))),
                None => (trim(item), None),
            }))
        })
    }

    /// The parameters in order. Names compare case-insensitively (RFC 3261 §7.3.1).
    pub fn iter(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        self.raw_items().filter_map(Result::ok)
    }

    /// The parameter called `name`: `Some(None)` when present without a value.
    pub fn get(self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Replaces `%HH` escapes (RFC 3261 §19.1.2). `None` when an escape is malformed; the
/// result may hold any octet (`%00` included), so it is bytes.
pub(crate) fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v: Vec<_> = split_list(r#""a, b" <sip:x@y;p=1,2>, <sip:z> ,c"#).collect();
        assert_eq!(v, [r#""a, b" <sip:x@y;p=1,2>"#, "<sip:z>", "c"]);
        let v: Vec<_> = split_list("a,,b").collect();
        assert_eq!(v, ["a", "", "b"]);
        assert_eq!(split_list("").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn quoted_strings_with_escapes() {
        assert_eq!(
            quoted_string(r#" "J Rosenberg \\\"" <x>"#),
            Some((r#"J Rosenberg \\\""#, " <x>"))
        );
        assert_eq!(quoted_string(r#""unterminated <sip:x>"#), None);
    }

    #[test]
    fn params_tolerate_lws_and_reject_empty_names() {
        let p = Params::new(" ;   tag    = 1918181833n ; lr").unwrap();
        assert_eq!(p.get("TAG"), Some(Some("1918181833n")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("x"), None);
        assert!(Params::new(";;,;,,").is_err());
        assert!(
            Params::new(";a=\"quoted;value\";b")
                .unwrap()
                .get("b")
                .is_some()
        );
        assert!(Params::new("x").is_err());
        assert!(Params::new(";received=[2001:db8::1]").is_ok());
    }

    #[test]
    fn unescaping() {
        assert_eq!(
            unescape("sips%3Auser%40example.com").unwrap(),
            b"sips:user@example.com"
        );
        assert_eq!(unescape("null-%00-null").unwrap(), b"null-\0-null");
        assert_eq!(unescape("%Z1"), None);
        assert_eq!(unescape("%4"), None);
    }
}
