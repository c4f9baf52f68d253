//! The UAS side of a dialog (RFC 3261 §12): identifiers, route set, remote target and
//! sequence numbers, and the requests sent within it.

use std::fmt::Write as _;

use super::build::MessageBuilder;
use super::endpoint::Flow;
use super::header::NameAddr;
use super::message::Method;
use super::uri::Uri;

/// A confirmed or early dialog, as the UAS keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub(crate) call_id: String,
    pub(crate) local_tag: String,
    /// Empty for an RFC 2543 caller that sent no From tag.
    pub(crate) remote_tag: String,
    /// Our header value (the INVITE's To, with our tag): From of our requests.
    pub(crate) local_party: String,
    /// Their header value (the INVITE's From): To of our requests.
    pub(crate) remote_party: String,
    /// Where requests are addressed: the Contact URI (§12.1.1).
    pub(crate) remote_target: String,
    /// The Record-Route URIs in the order received (§12.1.1: a UAS keeps the order).
    pub(crate) route_set: Vec<String>,
    pub(crate) remote_cseq: u32,
    pub(crate) local_cseq: u32,
    /// How the dialog's signalling reaches the peer.
    pub(crate) flow: Flow,
}

/// The key dialogs are found by: Call-ID and both tags (§12.2.2), never the Request-URI.
pub(crate) fn dialog_key(call_id: &str, local_tag: &str, remote_tag: &str) -> String {
    let mut key = String::with_capacity(call_id.len() + local_tag.len() + remote_tag.len() + 2);
    key.push_str(call_id);
    key.push('\u{0}');
    key.push_str(local_tag);
    key.push('\u{0}');
    key.push_str(remote_tag);
    key
}

impl Dialog {
    pub(crate) fn key(&self) -> String {
        dialog_key(&self.call_id, &self.local_tag, &self.remote_tag)
    }

    /// Starts an in-dialog request (§12.2.1.1): Request-URI and Route from the route set
    /// (loose or strict routing), From/To/Call-ID, the next local CSeq, a Via with `branch`.
    pub(crate) fn request(
        &mut self,
        method: &Method,
        via_sent_by: &str,
        branch: &str,
    ) -> MessageBuilder {
        let loose = self.route_set.first().is_none_or(|first| is_loose(first));
        let (request_uri, routes): (&str, Vec<&str>) = if loose {
            (
                self.remote_target.as_str(),
                self.route_set.iter().map(String::as_str).collect(),
            )
        } else {
            // Strict routing: the first route becomes the Request-URI and the remote target
            // goes last in the Route header.
            let mut routes: Vec<&str> = self.route_set[1..].iter().map(String::as_str).collect();
            routes.push(&self.remote_target);
            (self.route_set[0].as_str(), routes)
        };
        let mut b = MessageBuilder::request(method, request_uri);
        let transport = if self.flow.is_reliable() {
            "TCP"
        } else {
            "UDP"
        };
        b.header_fmt(
            "Via",
            format_args!("SIP/2.0/{transport} {via_sent_by};branch={branch};rport"),
        );
        b.header("Max-Forwards", "70");
        for route in routes {
            b.header_fmt("Route", format_args!("<{route}>"));
        }
        b.header("From", &self.local_party);
        b.header("To", &self.remote_party);
        b.header("Call-ID", &self.call_id);
        self.local_cseq += 1;
        let mut cseq = String::new();
        let _ = write!(cseq, "{} {}", self.local_cseq, method.as_str());
        b.header("CSeq", &cseq);
        b
    }
}

/// A Record-Route URI with the `lr` parameter routes loosely (RFC 3261 §16.12.1.1).
fn is_loose(route: &str) -> bool {
    match Uri::parse(route) {
        Ok(Uri::Sip(u)) => u.param("lr").is_some(),
        _ => true,
    }
}

/// A Contact URI as a remote target: without its `?headers` part, which RFC 3261 §19.1.1
/// (Table 1) allows in neither a dialog's Contact nor a Request-URI, so that our requests
/// do not carry what a caller put there.
pub(crate) fn remote_target(contact: &str) -> String {
    match Uri::parse(contact) {
        Ok(Uri::Sip(u)) if !u.headers.is_empty() => contact
            .strip_suffix(u.headers)
            .and_then(|rest| rest.strip_suffix('?'))
            .unwrap_or(contact)
            .to_owned(),
        _ => contact.to_owned(),
    }
}

/// The URIs of name-addr list values (Record-Route), in order.
pub(crate) fn uris<'a>(values: impl Iterator<Item = NameAddr<'a>>) -> Vec<String> {
    values.map(|n| n.uri.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::Transport;
    use crate::sip::message::Message;

    fn dialog(route_set: &[&str]) -> Dialog {
        Dialog {
            call_id: "c1".into(),
            local_tag: "ours".into(),
            remote_tag: "theirs".into(),
            local_party: "<sip:8500@127.0.0.1>;tag=ours".into(),
            remote_party: "\"Alice\" <sip:1001@127.0.0.1>;tag=theirs".into(),
            remote_target: "sip:1001@127.0.0.1:5062".into(),
            route_set: route_set.iter().map(|s| (*s).to_owned()).collect(),
            remote_cseq: 1,
            local_cseq: 0,
            flow: Flow::new(Transport::Udp, "127.0.0.1:5062".parse().unwrap()),
        }
    }

    fn bye(d: &mut Dialog) -> Message {
        let bytes = d
            .request(&Method::Bye, "127.0.0.1:5060", "z9hG4bKx")
            .finish(None);
        Message::parse_datagram(bytes).unwrap()
    }

    #[test]
    fn a_contacts_headers_are_not_part_of_the_remote_target() {
        for (contact, target) in [
            (
                "sip:1001@127.0.0.1:5062;transport=udp?X=1",
                "sip:1001@127.0.0.1:5062;transport=udp",
            ),
            (
                "sip:1001@127.0.0.1?Subject=a&Priority=b",
                "sip:1001@127.0.0.1",
            ),
            // A `?` in the user part is the user's.
            ("sip:a?b@127.0.0.1:5062", "sip:a?b@127.0.0.1:5062"),
            ("sip:1001@127.0.0.1:5062", "sip:1001@127.0.0.1:5062"),
            ("tel:+15551234567", "tel:+15551234567"),
        ] {
            assert_eq!(remote_target(contact), target, "{contact}");
        }
    }

    #[test]
    fn requests_without_routes_go_to_the_remote_target() {
        let mut d = dialog(&[]);
        let m = bye(&mut d);
        assert_eq!(m.request_uri(), Some("sip:1001@127.0.0.1:5062"));
        assert_eq!(
            m.values(crate::sip::HeaderName::From).next(),
            Some("<sip:8500@127.0.0.1>;tag=ours")
        );
        assert_eq!(
            m.values(crate::sip::HeaderName::To).next(),
            Some("\"Alice\" <sip:1001@127.0.0.1>;tag=theirs")
        );
        assert_eq!(m.values(crate::sip::HeaderName::CSeq).next(), Some("1 BYE"));
        assert_eq!(
            bye(&mut d).values(crate::sip::HeaderName::CSeq).next(),
            Some("2 BYE")
        );
        assert_eq!(m.values(crate::sip::HeaderName::Route).count(), 0);
    }

    #[test]
    fn loose_and_strict_routing() {
        let mut d = dialog(&["sip:p1.example.com;lr", "sip:p2.example.com;lr"]);
        let m = bye(&mut d);
        assert_eq!(m.request_uri(), Some("sip:1001@127.0.0.1:5062"));
        let routes: Vec<_> = m.values(crate::sip::HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        let mut d = dialog(&["sip:strict.example.com", "sip:p2.example.com;lr"]);
        let m = bye(&mut d);
        assert_eq!(m.request_uri(), Some("sip:strict.example.com"));
        let routes: Vec<_> = m.values(crate::sip::HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p2.example.com;lr>", "<sip:1001@127.0.0.1:5062>"]
        );
    }
}
