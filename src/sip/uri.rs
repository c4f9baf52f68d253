//! URIs in Request-URIs and name-addrs: SIP and SIPS parsed (RFC 3261 §19.1), `tel`
//! (RFC 3966) read for its number, every other scheme kept opaque.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use super::syntax::unescape;

/// A URI, borrowed from the message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:+1-201-555-0123;…`: the number before any parameter.
    Tel(&'a str),
    /// Any other scheme, kept as text.
    Other {
        /// The scheme, e.g. `http`, `isbn`.
        scheme: &'a str,
        /// Everything after the colon.
        rest: &'a str,
    },
}

/// A SIP or SIPS URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part as written (escapes not yet expanded).
    pub user: Option<&'a str>,
    /// The host: a name, an IPv4 address or an IPv6 reference without brackets.
    pub host: Host<'a>,
    /// The port, when given.
    pub port: Option<u16>,
    /// `;name=value` URI parameters as written.
    pub params: &'a str,
    /// `?name=value&…` headers as written (never turned into real headers).
    pub headers: &'a str,
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A literal address.
    Ip(IpAddr),
    /// A host name. vportal never resolves names found in messages.
    Name(&'a str),
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// What is wrong with a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// No `scheme:` prefix.
    #[error("missing or malformed URI scheme")]
    Scheme,
    /// The host part is empty or malformed.
    #[error("malformed host")]
    Host,
    /// The port is not a number up to 65535.
    #[error("malformed port")]
    Port,
    /// A URI parameter is malformed.
    #[error("malformed URI parameter")]
    Params,
    /// Characters a URI may not contain (spaces, `<`, `>`, quotes).
    #[error("invalid character in URI")]
    Character,
    /// A `%` not followed by two hex digits (RFC 3261 §19.1.2, `escaped`).
    #[error("malformed % escape in URI")]
    Escape,
}

/// The scheme of `text` (`sip`, `tel`, …), checked against `ALPHA *(ALPHA / DIGIT / + - .)`.
pub fn scheme(text: &str) -> Result<&str, UriError> {
    let (scheme, _) = text.split_once(':').ok_or(UriError::Scheme)?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        Ok(scheme)
    } else {
        Err(UriError::Scheme)
    }
}

impl<'a> Uri<'a> {
    /// Parses a URI.
    ///
    /// # Errors
    /// [`UriError`] naming the first malformed part.
    pub fn parse(text: &'a str) -> Result<Self, UriError> {
        if text
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"' || b == 0x7f)
        {
            return Err(UriError::Character);
        }
        let scheme = scheme(text)?;
        let rest = &text[scheme.len() + 1..];
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse(rest, scheme.len() == 4).map(Self::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            let number = rest.split(';').next().unwrap_or("");
            if number.is_empty() {
                return Err(UriError::Host);
            }
            Ok(Self::Tel(number))
        } else {
            Ok(Self::Other { scheme, rest })
        }
    }

    /// The number (or name) a call is dialled to or comes from, as written (escapes not
    /// expanded), for routing and caller identity: a `tel` number, or a SIP user up to its
    /// first `;` (with `user=phone` what follows is the telephone-subscriber's parameters,
    /// `phone-context`, `isub` or `ext`, RFC 3261 §19.1.6 and RFC 3966; IMS cores send local
    /// numbers as `sip:8500;phone-context=ims.example@host;user=phone`), and a telephone
    /// number (`tel:`, or a SIP URI with `user=phone`) without its visual separators (`-`,
    /// `.`, `(`, `)`: RFC 3966 §5.1.1 gives them no meaning). `None` for other schemes and
    /// a URI without a user.
    pub fn written_number(&self) -> Option<Cow<'a, str>> {
        let (number, telephone) = match self {
            Self::Sip(u) => {
                let user = u.user?;
                let phone = u.param("user").flatten();
                let number = user.split_once(';').map_or(user, |(number, _)| number);
                (
                    number,
                    phone.is_some_and(|p| p.eq_ignore_ascii_case("phone")),
                )
            }
            Self::Tel(n) => (*n, true),
            Self::Other { .. } => return None,
        };
        if number.is_empty() {
            return None;
        }
        Some(if telephone {
            without_visual_separators(number)
        } else {
            Cow::Borrowed(number)
        })
    }

    /// [`Uri::written_number`] with escapes expanded; `None` also when that is not UTF-8.
    pub fn number(&self) -> Option<String> {
        let written = self.written_number()?;
        if !written.contains('%') {
            return Some(written.into_owned());
        }
        String::from_utf8(unescape(&written)?).ok()
    }

    /// The user a call is routed on: the SIP user part with escapes expanded, or a `tel`
    /// number. `None` for other schemes, a SIP URI without a user, or a user that is not
    /// UTF-8 after unescaping.
    pub fn user(&self) -> Option<Cow<'a, str>> {
        match self {
            Self::Sip(u) => {
                let user = u.user?;
                if !user.contains('%') {
                    return Some(Cow::Borrowed(user));
                }
                String::from_utf8(unescape(user)?).ok().map(Cow::Owned)
            }
            Self::Tel(n) => Some(Cow::Borrowed(n)),
            Self::Other { .. } => None,
        }
    }
}

impl<'a> SipUri<'a> {
    fn parse(rest: &'a str, secure: bool) -> Result<Self, UriError> {
        // A raw '@' appears only between userinfo and host: everywhere else (parameters,
        // headers) it must be escaped, while the user part may hold ';', '?', '/' and more.
        let (user, hostpart) = match rest.find('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                // user ":" password: the password is never used.
                let user = userinfo.split(':').next().unwrap_or("");
                (Some(user).filter(|u| !u.is_empty()), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostport_params, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], &hostpart[q + 1..]),
            None => (hostpart, ""),
        };
        let (hostport, params) = match hostport_params.find(';') {
            Some(i) => (&hostport_params[..i], &hostport_params[i..]),
            None => (hostport_params, ""),
        };
        let (host, port) = parse_hostport(hostport)?;
        if !params.is_empty() && !uri_params_ok(params) {
            return Err(UriError::Params);
        }
        if [user.unwrap_or(""), params, headers]
            .into_iter()
            .any(|part| part.contains('%') && unescape(part).is_none())
        {
            return Err(UriError::Escape);
        }
        Ok(Self {
            secure,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// The URI parameter called `name` (case-insensitive): `Some(None)` when it has no
    /// value, e.g. `;lr`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.split(';').skip(1).find_map(|p| {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// A telephone number as written without its visual separators (`-`, `.`, `(`, `)`, RFC
/// 3966 §5.1.1), escaped ones too (`%2D`: an escaped unreserved character is the
/// character, RFC 3261 §19.1.4); other escapes are kept as written.
fn without_visual_separators(number: &str) -> Cow<'_, str> {
    let visual = |b: u8| matches!(b, b'-' | b'.' | b'(' | b')');
    let escaped = |at: usize| {
        let hex = number.get(at + 1..at + 3)?;
        u8::from_str_radix(hex, 16).ok().filter(|&b| visual(b))
    };
    let mut kept = String::with_capacity(number.len());
    let mut at = 0;
    while let Some(c) = number[at..].chars().next() {
        if c == '%' && escaped(at).is_some() {
            at += 3;
            continue;
        }
        if !(c.is_ascii() && visual(c as u8)) {
            kept.push(c);
        }
        at += c.len_utf8();
    }
    if kept.len() == number.len() {
        Cow::Borrowed(number)
    } else {
        Cow::Owned(kept)
    }
}

/// URI parameters are laxer than header parameters: `paramchar` admits `[]/:&+$` and escapes.
fn uri_params_ok(params: &str) -> bool {
    params.split(';').skip(1).all(|p| {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        !name.is_empty()
            && name
                .bytes()
                .chain(value.bytes())
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:&+$%".contains(&b))
    })
}

/// `host[:port]` with `host` a name, IPv4 address or bracketed IPv6 reference.
///
/// # Errors
/// [`UriError::Host`] or [`UriError::Port`].
pub fn parse_hostport(text: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let end = v6.find(']').ok_or(UriError::Host)?;
        let addr: std::net::Ipv6Addr = v6[..end].parse().map_err(|_| UriError::Host)?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::Host),
        };
        (Host::Ip(IpAddr::V6(addr)), port)
    } else {
        let (h, p) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        let valid_name = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid_name {
            return Err(UriError::Host);
        }
        let host = match h.parse::<std::net::Ipv4Addr>() {
            Ok(a) => Host::Ip(IpAddr::V4(a)),
            Err(_) => Host::Name(h),
        };
        (host, p)
    };
    let port = match port {
        Some(p) => Some(parse_port(p).ok_or(UriError::Port)?),
        None => None,
    };
    Ok((host, port))
}

/// A port: 1 to 5 digits, at most 65535.
pub fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(text: &str) -> SipUri<'_> {
        match Uri::parse(text).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn sip_uris() {
        let u = sip("sip:8500@127.0.0.1:5060;transport=udp");
        assert_eq!(u.user, Some("8500"));
        assert_eq!(u.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.param("transport"), Some(Some("udp")));
        assert_eq!(u.param("lr"), None);
        let u = sip("sips:[2001:db8::10]:5061");
        assert!(u.secure && u.user.is_none());
        assert_eq!(u.host.to_string(), "[2001:db8::10]");
        assert_eq!(
            sip("sip:vivekg@chair-dnrc.example.com;unknownparam").host,
            Host::Name("chair-dnrc.example.com")
        );
        assert_eq!(sip("sip:alice:secret@example.com").user, Some("alice"));
    }

    #[test]
    fn users_unescape_and_keep_semicolons() {
        let user = |t| Uri::parse(t).unwrap().user().map(Cow::into_owned);
        assert_eq!(
            user("sip:sips%3Auser%40example.com@example.net").as_deref(),
            Some("sips:user@example.com")
        );
        assert_eq!(
            user("sip:user;par=u%40example.net@example.com").as_deref(),
            Some("user;par=u@example.net")
        );
        assert_eq!(user("sip:%2A86@127.0.0.1").as_deref(), Some("*86"));
        assert_eq!(
            user("tel:+1-201-555-0123;phone-context=x").as_deref(),
            Some("+1-201-555-0123")
        );
        assert_eq!(user("sip:example.com"), None);
        let crazy = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        assert_eq!(
            sip(crazy).user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
    }

    #[test]
    fn other_schemes_stay_opaque() {
        assert_eq!(
            Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap(),
            Uri::Other {
                scheme: "nobodyKnowsThisScheme",
                rest: "totallyopaquecontent"
            }
        );
        assert!(matches!(
            Uri::parse("soap.beep://192.0.2.103:3002").unwrap(),
            Uri::Other { .. }
        ));
        assert_eq!(scheme("<sip:user@example.com>"), Err(UriError::Scheme));
    }

    #[test]
    fn malformed() {
        for bad in [
            "sip:",
            "sip:user@",
            "sip:host:99999",
            "sip:[::1",
            "sip:a b",
            "sip:host:port",
            "sip:x@h;;",
            "tel:",
            "sip:%zz@example.com",
            "sip:10%1@example.com",
            "sip:1001@example.com;a=%g0",
            "sip:1001@example.com?Subject=%",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
        assert!(Uri::parse("sip:user@example.com?Route=%3Csip:example.com%3E").is_ok());
    }

    /// The number routing and caller identity read: a SIP user cut at its parameters, a
    /// telephone number without visual separators, escapes expanded by `number` only.
    #[test]
    fn numbers_leave_out_parameters_and_visual_separators() {
        for (uri, written, number) in [
            ("sip:8500@192.0.2.10", Some("8500"), Some("8500")),
            (
                "sip:8500;phone-context=ims.example@192.0.2.10;user=phone",
                Some("8500"),
                Some("8500"),
            ),
            (
                "sip:8500;isub=1;ext=2@192.0.2.10",
                Some("8500"),
                Some("8500"),
            ),
            (
                "sip:85-00@192.0.2.10;user=phone",
                Some("8500"),
                Some("8500"),
            ),
            (
                "sip:(85).0-0@192.0.2.10;USER=Phone",
                Some("8500"),
                Some("8500"),
            ),
            // An escaped separator is the separator; other escapes stay as written.
            (
                "sip:85%2D00@192.0.2.10;user=phone",
                Some("8500"),
                Some("8500"),
            ),
            (
                "sip:%2A85%2d00@192.0.2.10;user=phone",
                Some("%2A8500"),
                Some("*8500"),
            ),
            (
                "sip:85%252D00@192.0.2.10;user=phone",
                Some("85%252D00"),
                Some("85%2D00"),
            ),
            // Without `user=phone` a user is a name: its dashes stay.
            ("sip:85-00@192.0.2.10", Some("85-00"), Some("85-00")),
            (
                "tel:20-02;phone-context=pbx.example",
                Some("2002"),
                Some("2002"),
            ),
            (
                "tel:+1-201-555-0123",
                Some("+12015550123"),
                Some("+12015550123"),
            ),
            ("sip:%2A86@192.0.2.10", Some("%2A86"), Some("*86")),
            ("sip:%2538500@192.0.2.10", Some("%2538500"), Some("%38500")),
            ("sip:%FF@192.0.2.10", Some("%FF"), None),
            ("sip:192.0.2.10", None, None),
            ("sip:;phone-context=x@192.0.2.10", None, None),
            ("mailto:a@example.com", None, None),
        ] {
            let uri = Uri::parse(uri).unwrap();
            assert_eq!(uri.written_number().as_deref(), written, "{uri:?}");
            assert_eq!(uri.number().as_deref(), number, "{uri:?}");
        }
    }
}
