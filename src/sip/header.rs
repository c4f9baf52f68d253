//! Header names (long and compact forms) and typed views of the headers a UAS needs.
//!
//! Typed views borrow from the message text and allocate nothing; headers vportal does not
//! need stay raw bytes in the message.

use std::fmt;

use super::syntax::{self, BadParams, Params, is_token, trim};
use super::uri::{Host, Uri, UriError, parse_hostport};

/// A header name vportal knows, or `Other`. Compares case-insensitively and maps compact
/// forms (RFC 3261 §7.3.3, RFC 3841, RFC 4028, …) to their long names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    Allow,
    CallId,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    From,
    InfoPackage,
    MaxForwards,
    PAssertedIdentity,
    ProxyRequire,
    Reason,
    RecordRoute,
    Require,
    RetryAfter,
    Route,
    Server,
    SessionExpires,
    Subject,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    /// Any other header: its name stays in the message text.
    Other,
}

impl HeaderName {
    /// Recognises a header name, in any case, long or compact.
    pub fn parse(name: &str) -> Self {
        use HeaderName as H;
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'i' => H::CallId,
                b'm' => H::Contact,
                b'e' => H::ContentEncoding,
                b'l' => H::ContentLength,
                b'c' => H::ContentType,
                b'f' => H::From,
                b's' => H::Subject,
                b'k' => H::Supported,
                b't' => H::To,
                b'v' => H::Via,
                b'o' => H::Event,
                b'x' => H::SessionExpires,
                _ => H::Other,
            };
        }
        const LONG: &[(&str, HeaderName)] = &[
            ("via", H::Via),
            ("from", H::From),
            ("to", H::To),
            ("call-id", H::CallId),
            ("cseq", H::CSeq),
            ("contact", H::Contact),
            ("max-forwards", H::MaxForwards),
            ("content-length", H::ContentLength),
            ("content-type", H::ContentType),
            ("require", H::Require),
            ("proxy-require", H::ProxyRequire),
            ("supported", H::Supported),
            ("record-route", H::RecordRoute),
            ("route", H::Route),
            ("p-asserted-identity", H::PAssertedIdentity),
            ("accept", H::Accept),
            ("accept-encoding", H::AcceptEncoding),
            ("accept-language", H::AcceptLanguage),
            ("allow", H::Allow),
            ("content-encoding", H::ContentEncoding),
            ("content-disposition", H::ContentDisposition),
            ("date", H::Date),
            ("event", H::Event),
            ("info-package", H::InfoPackage),
            ("reason", H::Reason),
            ("retry-after", H::RetryAfter),
            ("server", H::Server),
            ("session-expires", H::SessionExpires),
            ("subject", H::Subject),
            ("unsupported", H::Unsupported),
            ("user-agent", H::UserAgent),
            ("warning", H::Warning),
        ];
        LONG.iter()
            .find(|(long, _)| long.len() == name.len() && long.eq_ignore_ascii_case(name))
            .map_or(H::Other, |(_, h)| *h)
    }

    /// The canonical long name (`Call-ID`, `CSeq`, …); `""` for `Other`.
    pub const fn as_str(self) -> &'static str {
        use HeaderName as H;
        match self {
            H::Accept => "Accept",
            H::AcceptEncoding => "Accept-Encoding",
            H::AcceptLanguage => "Accept-Language",
            H::Allow => "Allow",
            H::CallId => "Call-ID",
            H::Contact => "Contact",
            H::ContentDisposition => "Content-Disposition",
            H::ContentEncoding => "Content-Encoding",
            H::ContentLength => "Content-Length",
            H::ContentType => "Content-Type",
            H::CSeq => "CSeq",
            H::Date => "Date",
            H::Event => "Event",
            H::From => "From",
            H::InfoPackage => "Info-Package",
            H::MaxForwards => "Max-Forwards",
            H::PAssertedIdentity => "P-Asserted-Identity",
            H::ProxyRequire => "Proxy-Require",
            H::Reason => "Reason",
            H::RecordRoute => "Record-Route",
            H::Require => "Require",
            H::RetryAfter => "Retry-After",
            H::Route => "Route",
            H::Server => "Server",
            H::SessionExpires => "Session-Expires",
            H::Subject => "Subject",
            H::Supported => "Supported",
            H::To => "To",
            H::Unsupported => "Unsupported",
            H::UserAgent => "User-Agent",
            H::Via => "Via",
            H::Warning => "Warning",
            H::Other => "",
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value vportal needs is malformed. The `Display` text becomes the reason phrase
/// of the 400 response, so it names the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header is missing.
    #[error("Missing {0} header")]
    Missing(HeaderName),
    /// The header appears more than once where one is allowed.
    #[error("Multiple {0} headers")]
    Multiple(HeaderName),
    /// The header's value does not parse.
    #[error("Malformed {0} header")]
    Malformed(HeaderName),
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone)]
pub struct Via<'a> {
    /// `SIP/2.0`'s version part; other versions exist only in broken or future messages.
    pub version: &'a str,
    /// The transport token (`UDP`, `TCP`, `TLS`, `SCTP`, or anything else).
    pub transport: &'a str,
    /// The sent-by host.
    pub host: Host<'a>,
    /// The sent-by port.
    pub port: Option<u16>,
    /// The parameters (`branch`, `received`, `rport`, …).
    pub params: Params<'a>,
    /// The whole value as written, to copy into responses.
    pub raw: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one Via value: `SIP / 2.0 / UDP host:port ;params`, LWS allowed around the
    /// slashes (RFC 4475 §3.1.1.1).
    ///
    /// # Errors
    /// [`HeaderError::Malformed`].
    pub fn parse(value: &'a str) -> Result<Self, HeaderError> {
        let bad = HeaderError::Malformed(HeaderName::Via);
        let (protocol, rest) = value.split_once('/').ok_or(bad)?;
        let (version, rest) = rest.split_once('/').ok_or(bad)?;
        let (protocol, version) = (trim(protocol), trim(version));
        if !protocol.eq_ignore_ascii_case("SIP") || !is_token(version) {
            return Err(bad);
        }
        let rest = syntax::trim_start(rest);
        let t_end = rest
            .bytes()
            .position(|b| !syntax::is_token_char(b))
            .unwrap_or(rest.len());
        let transport = &rest[..t_end];
        let rest = &rest[t_end..];
        // At least one LWS between transport and sent-by.
        if transport.is_empty() || !rest.starts_with([' ', '\t', '\r', '\n']) {
            return Err(bad);
        }
        let rest = syntax::trim_start(rest);
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (trim(&rest[..i]), &rest[i..]),
            None => (trim(rest), ""),
        };
        let (host, port) = parse_hostport(sent_by)
            .ok()
            .or_else(|| spaced_sent_by(sent_by))
            .ok_or(bad)?;
        let params = Params::new(params).map_err(|BadParams| bad)?;
        Ok(Self {
            version,
            transport,
            host,
            port,
            params,
            raw: trim(value),
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    /// Whether the branch carries RFC 3261's magic cookie and something after it, so it can
    /// identify the transaction on its own (§17.2.3). `z9hG4bK` alone does not (RFC 4475
    /// §3.2.1).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .and_then(|b| b.strip_prefix("z9hG4bK"))
            .is_some_and(|rest| !rest.is_empty())
    }

    /// `rport` present (RFC 3581): answer to the source port.
    pub fn wants_rport(&self) -> bool {
        self.params.get("rport").is_some()
    }
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route, P-Asserted-Identity (RFC 3261 §20.10).
#[derive(Debug, Clone)]
pub struct NameAddr<'a> {
    /// The display name as written: quoted (with its quotes) or tokens.
    pub display: Option<&'a str>,
    /// The URI text (inside `<>` when bracketed).
    pub uri: &'a str,
    /// The header parameters after the URI (`tag`, `expires`, …).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value.
    ///
    /// Accepts a token display name directly followed by `<` (RFC 4475 §3.1.1.6) and rejects
    /// unquoted display names with non-token characters (§3.1.2.15), unterminated quotes
    /// (§3.1.2.6) and spaces inside `<>` (§3.1.2.14).
    ///
    /// # Errors
    /// [`HeaderError::Malformed`] for `header`.
    pub fn parse(value: &'a str, header: HeaderName) -> Result<Self, HeaderError> {
        let bad = HeaderError::Malformed(header);
        let value = trim(value);
        let (display, after_display) = if value.starts_with('"') {
            let (_, rest) = syntax::quoted_string(value).ok_or(bad)?;
            let quoted = &value[..value.len() - rest.len()];
            (Some(quoted), syntax::trim_start(rest))
        } else if let Some(lt) = value.find('<') {
            let name = trim(&value[..lt]);
            let all_tokens = name
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token);
            if !all_tokens {
                return Err(bad);
            }
            (Some(name).filter(|n| !n.is_empty()), &value[lt..])
        } else {
            (None, value)
        };
        let (uri, params) = if let Some(inner) = after_display.strip_prefix('<') {
            let end = inner.find('>').ok_or(bad)?;
            (&inner[..end], &inner[end + 1..])
        } else if display.is_some() {
            // A display name must be followed by <addr-spec>.
            return Err(bad);
        } else {
            // addr-spec form: the URI ends at the first ';' (RFC 3261 §20.10: URIs with
            // ';', ',' or '?' must be bracketed).
            match after_display.find(';') {
                Some(i) => (trim(&after_display[..i]), &after_display[i..]),
                None => (trim(after_display), ""),
            }
        };
        // Checks the scheme and that no spaces or brackets are in the URI.
        Uri::parse(uri).map_err(|_| bad)?;
        let params = Params::new(params).map_err(|BadParams| bad)?;
        Ok(Self {
            display,
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    /// The URI, parsed.
    ///
    /// # Errors
    /// [`UriError`] (never for a value that [`NameAddr::parse`] accepted).
    pub fn parsed_uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }
}

/// A CSeq value: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number, a 32-bit unsigned integer.
    pub seq: u32,
    /// The method token.
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method`. The number must fit 32 bits unsigned (§8.1.1.5); a
    /// sender keeps it below 2^31, but a receiver takes anything that fits (RFC 4475 §3.1.2.4
    /// rejects only what exceeds 2^32 - 1).
    ///
    /// # Errors
    /// [`HeaderError::Malformed`].
    pub fn parse(value: &'a str) -> Result<Self, HeaderError> {
        let bad = HeaderError::Malformed(HeaderName::CSeq);
        let value = trim(value);
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let seq = parse_number(&value[..digits], 1 << 32).ok_or(bad)?;
        let method = trim(&value[digits..]);
        if !is_token(method)
            || digits == value.len()
            || !value[digits..].starts_with([' ', '\t', '\r', '\n'])
        {
            return Err(bad);
        }
        Ok(Self { seq, method })
    }
}

/// A Via's sent-by with white space around its port's colon, which RFC 3261 §25.1 allows
/// (`COLON = SWS ":" SWS`): `192.0.2.1 : 5060`.
fn spaced_sent_by(sent_by: &str) -> Option<(Host<'_>, Option<u16>)> {
    let colon = sent_by.rfind(':')?;
    let (host, port) = (&sent_by[..colon], &sent_by[colon + 1..]);
    if port.contains(']') || (host == trim(host) && port == trim(port)) {
        return None;
    }
    let (host, port) = (trim(host), trim(port));
    let (host, None) = parse_hostport(host).ok()? else {
        return None;
    };
    Some((host, Some(super::uri::parse_port(port)?)))
}

/// Parses decimal digits (leading zeros allowed) into a value below `limit`.
pub(crate) fn parse_number(digits: &str, limit: u64) -> Option<u32> {
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.trim_start_matches('0').parse().unwrap_or(0);
    if digits.trim_start_matches('0').len() > 19 || value >= limit {
        return None;
    }
    u32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_long_compact_any_case() {
        assert_eq!(HeaderName::parse("MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("I"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("m"), HeaderName::Contact);
        assert_eq!(HeaderName::parse("C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::parse("NewFangledHeader"), HeaderName::Other);
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    }

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0   /UDP     192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!((v.version, v.transport), ("2.0", "UDP"));
        assert_eq!(v.host, Host::Ip("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;   branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Name("spindle.example.com"));
        assert!(v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport").unwrap();
        assert!(v.wants_rport());
        assert_eq!(v.port, Some(5070));
        // §25.1: COLON = SWS ":" SWS, in sent-by too.
        for spaced in ["127.0.0.1 :5070", "127.0.0.1: 5070", "127.0.0.1 \t:  5070"] {
            let value = format!("SIP/2.0/UDP {spaced};branch=z9hG4bK-1");
            let v = Via::parse(&value).unwrap();
            assert_eq!(
                (v.host, v.port),
                (Host::Ip("127.0.0.1".parse().unwrap()), Some(5070)),
                "{spaced}"
            );
        }
        let v = Via::parse("SIP/2.0/UDP [::1] : 5070;branch=z9hG4bK-1").unwrap();
        assert_eq!(v.port, Some(5070));
        for bad in [
            "127.0.0.1 :",
            "127.0.0.1 : +5",
            "127.0.0.1 : 50 70",
            "127.0.0.1 : 99999",
            // As many digits as without the spaces.
            "127.0.0.1 : 0005060",
        ] {
            assert!(
                Via::parse(&format!("SIP/2.0/UDP {bad};branch=z9hG4bK-1")).is_err(),
                "{bad}"
            );
        }
        assert!(
            !Via::parse("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK")
                .unwrap()
                .has_rfc3261_branch()
        );
        assert_eq!(
            Via::parse("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw")
                .unwrap()
                .version,
            "7.0"
        );
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDPhost",
            "HTTP/1.1/TCP h",
            "SIP/2.0/UDP [::1",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
            HeaderName::From,
        )
        .unwrap();
        assert_eq!(n.display, Some(r#""J Rosenberg \\\"""#));
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("caller<sip:caller@example.com>;tag=323", HeaderName::From).unwrap();
        assert_eq!(
            (n.display, n.uri, n.tag()),
            (Some("caller"), "sip:caller@example.com", Some("323"))
        );
        let n =
            NameAddr::parse("sip:caller@example.net;tag=134161461246", HeaderName::From).unwrap();
        assert_eq!(
            (n.uri, n.tag()),
            ("sip:caller@example.net", Some("134161461246"))
        );
        let n = NameAddr::parse(
            "<sip:+13035551111@ift.client.example.net;user=phone>",
            HeaderName::From,
        )
        .unwrap();
        assert_eq!(n.tag(), None);
        assert!(NameAddr::parse("isbn:2983792873", HeaderName::To).is_ok());
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "<sip:x@y",
            "alan@jasomi.com",
            "",
        ] {
            assert!(NameAddr::parse(bad, HeaderName::To).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: "INVITE"
            }
        );
        assert_eq!(CSeq::parse("2147483648 ACK").unwrap().seq, 2_147_483_648);
        assert_eq!(CSeq::parse("4294967295 BYE").unwrap().seq, u32::MAX);
        for bad in [
            "4294967296 INVITE",
            "36893488147419103232 REGISTER",
            "INVITE",
            "1",
            "-1 BYE",
            "1INVITE",
            "1 IN VITE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad}");
        }
    }
}
