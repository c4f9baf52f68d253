//! Building SIP messages: the start line, the headers in the order given, Content-Length,
//! the body. What is built is what is sent, byte for byte.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header::{HeaderName, Via};
use super::message::{Message, Method};
use super::uri::Host;

/// A message under construction.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    out: Vec<u8>,
}

impl MessageBuilder {
    /// `METHOD uri SIP/2.0`.
    pub fn request(method: &Method, uri: &str) -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        push_clean(&mut out, uri);
        out.extend_from_slice(b" SIP/2.0\r\n");
        Self { out }
    }

    /// `SIP/2.0 code reason`.
    pub fn response(code: u16, reason: &str) -> Self {
        let mut out = Vec::with_capacity(512);
        let _ = write!(Writer(&mut out), "SIP/2.0 {code} ");
        push_clean(&mut out, reason);
        out.extend_from_slice(b"\r\n");
        Self { out }
    }

    /// Appends `name: value`. CR and LF in `value` become spaces, so no value can inject a
    /// header line.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        push_clean(&mut self.out, value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends `name: <formatted value>`.
    pub fn header_fmt(&mut self, name: &str, value: std::fmt::Arguments<'_>) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        let start = self.out.len();
        let _ = Writer(&mut self.out).write_fmt(value);
        for b in &mut self.out[start..] {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the headers with Content-Length (and Content-Type when there is a body) and
    /// appends the body.
    pub fn finish(mut self, body: Option<(&str, &[u8])>) -> Vec<u8> {
        match body {
            Some((content_type, bytes)) => {
                self.header("Content-Type", content_type);
                let _ = write!(
                    Writer(&mut self.out),
                    "Content-Length: {}\r\n\r\n",
                    bytes.len()
                );
                self.out.extend_from_slice(bytes);
            }
            None => self.out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        self.out
    }
}

/// Lets `write!` append to a byte vector.
struct Writer<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn push_clean(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Starts a response to `request` (RFC 3261 §8.2.6.2): the Via values, From, To, Call-ID and
/// CSeq are copied; the top Via gets `received` (§18.2.1) and, when asked, `rport`
/// (RFC 3581); a `to_tag` is added to To unless it has one.
///
/// Headers the request lacks are left out (a 400 to a request without Call-ID still goes
/// back with what there is).
pub fn response_to(
    request: &Message,
    source: SocketAddr,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> MessageBuilder {
    let mut b = MessageBuilder::response(code, reason);
    for (i, value) in request.list(HeaderName::Via).enumerate() {
        if i == 0 {
            b.header("Via", &top_via(value, source));
        } else {
            b.header("Via", value);
        }
    }
    if let Some(from) = request.values(HeaderName::From).next() {
        b.header("From", from);
    }
    if let Some(to) = request.values(HeaderName::To).next() {
        let has_tag = super::header::NameAddr::parse(to, HeaderName::To)
            .map(|n| n.tag().is_some())
            .unwrap_or(true);
        match to_tag {
            Some(tag) if !has_tag => b.header_fmt("To", format_args!("{to};tag={tag}")),
            _ => b.header("To", to),
        };
    }
    if let Some(call_id) = request.values(HeaderName::CallId).next() {
        b.header("Call-ID", call_id);
    }
    if let Some(cseq) = request.values(HeaderName::CSeq).next() {
        b.header("CSeq", cseq);
    }
    b
}

/// The top Via with `received` and `rport` filled in from the packet's source.
///
/// A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`: that is the IPv4 address
/// the peer sent from, so it is compared and written as such (RFC 5118 §4.9). `received`
/// takes a bare address, IPv6 without brackets (RFC 3261 §20.42's `via-received`).
fn top_via(value: &str, source: SocketAddr) -> String {
    let Ok(via) = Via::parse(value) else {
        return value.to_owned();
    };
    let rport = via.wants_rport();
    let source_ip = source.ip().to_canonical();
    let same_ip = matches!(via.host, Host::Ip(ip) if ip.to_canonical() == source_ip);
    if !rport && same_ip {
        return via.raw.to_owned();
    }
    // Rebuild the parameter list: drop an old received and a bare rport, append ours.
    let head_len = via.raw.find(';').unwrap_or(via.raw.len());
    let mut out = String::with_capacity(via.raw.len() + 40);
    out.push_str(super::syntax::trim(&via.raw[..head_len]));
    for (name, value) in via.params.iter() {
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    let _ = write!(out, ";received={source_ip}");
    if rport {
        let _ = write!(out, ";rport={}", source.port());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_exactly_what_was_asked() {
        let mut b = MessageBuilder::request(&Method::Bye, "sip:1001@127.0.0.1:5062");
        b.header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc")
            .header("Max-Forwards", "70")
            .header_fmt("CSeq", format_args!("{} BYE", 2));
        let bytes = b.finish(None);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "BYE sip:1001@127.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\nMax-Forwards: 70\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        let mut r = MessageBuilder::response(200, "OK");
        r.header("X", "evil\r\nInjected: yes");
        let bytes = r.finish(Some(("application/sdp", b"v=0\r\n")));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "SIP/2.0 200 OK\r\nX: evil  Injected: yes\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
    }

    #[test]
    fn responses_copy_headers_and_mark_the_source() {
        let req = Message::parse_datagram(
            b"OPTIONS sip:8500@127.0.0.1 SIP/2.0\r\n\
              Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1;received=9.9.9.9, SIP/2.0/UDP b\r\n\
              v: SIP/2.0/UDP c\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:8500@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
                .to_vec(),
        )
        .unwrap();
        let src: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let text =
            String::from_utf8(response_to(&req, src, 200, "OK", Some("t9")).finish(None)).unwrap();
        assert!(text.starts_with(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP host.example.com;branch=z9hG4bK1;received=127.0.0.1\r\nVia: SIP/2.0/UDP b\r\nVia: SIP/2.0/UDP c\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:8500@127.0.0.1>;tag=t9\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        ), "{text}");
    }

    #[test]
    fn rport_gets_the_source_port() {
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d;rport",
                "127.0.0.1:40000".parse().unwrap()
            ),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d;received=127.0.0.1;rport=40000"
        );
        // Same IP and no rport: untouched.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d",
                "127.0.0.1:5070".parse().unwrap()
            ),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d"
        );
    }

    #[test]
    fn ipv6_sources_are_written_bare_and_mapped_ones_as_ipv4() {
        let via = |value, source: &str| top_via(value, source.parse().unwrap());
        // RFC 5118 §4.5: a bracketed received from upstream is replaced by ours, bare.
        assert_eq!(
            via(
                "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK-a;rport",
                "[::1]:5072"
            ),
            "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bK-a;received=::1;rport=5072"
        );
        assert_eq!(
            via("SIP/2.0/UDP [::1]:5072;branch=z9hG4bK-b", "[::1]:5072"),
            "SIP/2.0/UDP [::1]:5072;branch=z9hG4bK-b"
        );
        // An IPv4 peer on a dual-stack socket: its address is IPv4.
        let mapped = "[::ffff:127.0.0.1]:5072";
        assert_eq!(
            via("SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-c", mapped),
            "SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-c"
        );
        assert_eq!(
            via(
                "SIP/2.0/UDP [::ffff:127.0.0.1]:5072;branch=z9hG4bK-d",
                "127.0.0.1:5072"
            ),
            "SIP/2.0/UDP [::ffff:127.0.0.1]:5072;branch=z9hG4bK-d"
        );
        assert_eq!(
            via(
                "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-e;rport",
                mapped
            ),
            "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-e;received=127.0.0.1;rport=5072"
        );
    }
}
