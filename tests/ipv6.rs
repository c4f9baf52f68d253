//! IPv6 end to end: the RFC 5118 torture messages through the sans-IO endpoint, responses
//! and the server's own requests to IPv6 peers, IPv4-mapped addresses (a dual-stack socket's
//! view of IPv4 peers, and RFC 5118 §4.9 in SDP), and `vportal serve` on `[::1]` with the
//! test phone, the admin side-port and SIPp.
//!
//! Every address a test sends to is loopback (`::1`, `127.0.0.1`); the RFC's documentation
//! addresses (`2001:db8::/32`, `192.0.2.0/24`) stay only in headers that nothing is sent
//! to, and the SDP bodies are moved to loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http;
use common::phone::Phone;
use common::server::ServerProcess;
use common::uac::{Uac, parse};
use common::{Workdir, event_names};
use vportal::sip::endpoint::{Endpoint, EndpointConfig, Event, Transmit, Transport};
use vportal::sip::{HeaderName, Message, Method};

/// How long one scripted step of a real call may take (prompts play in real time).
const CALL: Duration = Duration::from_secs(20);

const SERVER6: &str = "[::1]:5060";
const CALLER6: &str = "[::1]:5072";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The endpoint at `local`, routing `8500` only.
fn endpoint(local: &str) -> Endpoint {
    let mut cfg = EndpointConfig::new(addr(local));
    cfg.rng_seed = Some(5118);
    Endpoint::new(cfg, Box::new(|user: &str| (user == "8500").then_some(0)))
}

/// Feeds one datagram from `source`; returns what the endpoint sent and what happened.
fn exchange(
    ep: &mut Endpoint,
    now: Instant,
    source: &str,
    text: &str,
) -> (Vec<Transmit>, Vec<Event>) {
    ep.handle_datagram(now, addr(source), text.as_bytes().to_vec());
    drain(ep)
}

fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<Event>) {
    let sent = std::iter::from_fn(|| ep.poll_transmit()).collect();
    let events = std::iter::from_fn(|| ep.poll_event()).collect();
    (sent, events)
}

/// A message with LF line ends turned into CRLF and, when it has a body, a Content-Length
/// counted here (the RFC's printed lengths are not relied on).
fn message(head: &str, body: &str) -> String {
    let head = head.trim_start().replace('\n', "\r\n");
    let body = body.trim_start().replace('\n', "\r\n");
    if body.is_empty() {
        format!("{head}Content-Length: 0\r\n\r\n")
    } else {
        format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

fn final_status(sent: &[Transmit]) -> Option<u16> {
    sent.iter()
        .filter_map(|t| parse(&t.payload).status())
        .find(|s| *s >= 200)
}

fn top_via(t: &Transmit) -> String {
    parse(&t.payload)
        .values(HeaderName::Via)
        .next()
        .unwrap()
        .to_owned()
}

// ----- RFC 5118 through the endpoint -----

/// RFC 5118 §4: each torture message, sent from `[::1]:5072` to the endpoint on
/// `[::1]:5060`, gets the answer a UAS owes it. The parse-only messages (REGISTER, a BYE
/// outside any dialog, calls to users no route serves) must get their ordinary answer,
/// not 400; the two the RFC calls invalid must get 400.
#[test]
fn rfc5118_torture_messages_get_the_answers_the_rfc_expects() {
    let cases: [(&str, String, u16); 12] = [
        (
            "4.1 ipv6-good: IPv6 in Request-URI, Via and Contact (REGISTER: 405, not 400)",
            message(
                "
REGISTER sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
CSeq: 98176 REGISTER
",
                "",
            ),
            405,
        ),
        (
            "4.2 ipv6-bad: an IPv6 Request-URI host without brackets",
            message(
                "
REGISTER sip:2001:db8::10 SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
CSeq: 98176 REGISTER
",
                "",
            ),
            400,
        ),
        (
            "4.3 port-ambiguous: [2001:db8::10:5070] is an address, not a port",
            message(
                "
REGISTER sip:[2001:db8::10:5070] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
Max-Forwards: 70
CSeq: 98176 REGISTER
",
                "",
            ),
            405,
        ),
        (
            "4.4 port-unambiguous",
            message(
                "
REGISTER sip:[2001:db8::10]:5070 SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
Max-Forwards: 70
CSeq: 98176 REGISTER
",
                "",
            ),
            405,
        ),
        (
            "4.5 via-received-param-with-delim (a BYE outside a dialog: 481)",
            message(
                "
BYE sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com;tag=bd76ya
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
CSeq: 321 BYE
",
                "",
            ),
            481,
        ),
        (
            "4.5 via-received-param-no-delim",
            message(
                "
OPTIONS sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3
Call-ID: SSG95523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]>
CSeq: 921 OPTIONS
",
                "",
            ),
            200,
        ),
        (
            "4.6 ipv6-in-sdp (no route for `user`: 404, not 400)",
            message(
                "
INVITE sip:user@[2001:db8::10] SIP/2.0
To: sip:user@[2001:db8::10]
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::20];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: \"Caller\" <sip:caller@[2001:db8::20]>
CSeq: 8612 INVITE
Max-Forwards: 70
",
                "
v=0
o=assistant 971731711378798081 0 IN IP6 ::1
s=Live video feed for today's meeting
c=IN IP6 ::1
t=3338481189 3370017201
m=audio 6000 RTP/AVP 2
a=rtpmap:2 G726-32/8000
m=video 6024 RTP/AVP 107
a=rtpmap:107 H263-1998/90000
",
            ),
            404,
        ),
        (
            "4.7 mult-ip-in-header: IPv6 and IPv4 in one Via list",
            message(
                "
BYE sip:user@host.example.net SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144
Via: SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200
Call-ID: 997077@lau_4100
Max-Forwards: 70
CSeq: 89187 BYE
To: sip:user@example.net;tag=9817--94
From: sip:user@example.com;tag=81x2
",
                "",
            ),
            481,
        ),
        (
            "4.8 mult-ip-in-sdp (no route for `user`: 404, not 400)",
            message(
                "
INVITE sip:user@[2001:db8::10] SIP/2.0
To: sip:user@[2001:db8::10]
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]>
Max-Forwards: 70
CSeq: 8912 INVITE
",
                "
v=0
o=bob 280744730 28977631 IN IP4 host.example.com
s=
t=0 0
m=audio 22334 RTP/AVP 0
c=IN IP4 127.0.0.1
m=video 6024 RTP/AVP 107
c=IN IP6 ::1
a=rtpmap:107 H263-1998/90000
",
            ),
            404,
        ),
        (
            "4.9 ipv4-mapped-ipv6 (no route for `user`: 404, not 400)",
            message(
                "
INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:user@east.example.com;tag=81x2
Via: SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19
Via: SIP/2.0/UDP [::ffff:192.0.2.2];branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Contact: \"T. desk phone\" <sip:ted@[::ffff:192.0.2.2]>
CSeq: 612 INVITE
Max-Forwards: 70
",
                "
v=0
o=assistant 971731711378798081 0 IN IP6 ::ffff:127.0.0.1
s=Call me soon, please!
c=IN IP6 ::ffff:127.0.0.1
t=3338481189 3370017201
m=audio 6000 RTP/AVP 2
a=rtpmap:2 G726-32/8000
m=video 6024 RTP/AVP 107
a=rtpmap:107 H263-1998/90000
",
            ),
            404,
        ),
        (
            "4.10 ipv6-bug-abnf-3-colons: not an IPv6 address",
            message(
                "
OPTIONS sip:user@[2001:db8:::192.0.2.1] SIP/2.0
To: sip:user@[2001:db8:::192.0.2.1]
From: sip:user@example.com;tag=810x2
Via: SIP/2.0/UDP lab1.east.example.com;branch=z9hG4bKas3-111
Call-ID: G9559905523997077@hlau_4100
CSeq: 689 OPTIONS
Max-Forwards: 70
",
                "",
            ),
            400,
        ),
        (
            "4.10 ipv6-correct-abnf-2-colons",
            message(
                "
OPTIONS sip:user@[2001:db8::192.0.2.1] SIP/2.0
To: sip:user@[2001:db8::192.0.2.1]
From: sip:user@example.com;tag=810x2
Via: SIP/2.0/UDP lab1.east.example.com;branch=z9hG4bKas3-111
Call-ID: G9559905523997077@hlau_4100
CSeq: 689 OPTIONS
Max-Forwards: 70
",
                "",
            ),
            200,
        ),
    ];
    let now = Instant::now();
    for (name, text, expected) in &cases {
        let mut ep = endpoint(SERVER6);
        let (sent, events) = exchange(&mut ep, now, CALLER6, text);
        assert_eq!(final_status(&sent), Some(*expected), "{name}");
        assert!(
            !events.iter().any(|e| matches!(e, Event::IncomingCall(_))),
            "{name}: reached the application"
        );
        for t in &sent {
            // RFC 3261 §18.2.2: back to the source address, never to a host in the message.
            assert_eq!(t.destination.ip(), addr(CALLER6).ip(), "{name}");
            assert_eq!(t.transport, Transport::Udp);
            // The top Via names the real source; RFC 3261's grammar (RFC 5118 §4.5):
            // `received` holds the bare address, without brackets, and only ours is left.
            let via = top_via(t);
            let received: Vec<&str> = via
                .split(';')
                .filter(|p| p.starts_with("received="))
                .collect();
            assert_eq!(received, ["received=::1"], "{name}: {via}");
        }
    }

    // The SDP torture messages, routed (to the portal's `8500`) so that their bodies are
    // read: G.726 alone is no codec of ours (4.6, 4.9), and audio on IPv4 cannot reach a
    // server on IPv6 (4.8): 488, never 400.
    let routed = |text: &str| text.replacen("INVITE sip:user@", "INVITE sip:8500@", 1);
    let with_sdp: Vec<_> = cases
        .iter()
        .filter(|(name, ..)| ["4.6", "4.8", "4.9"].iter().any(|n| name.starts_with(n)))
        .collect();
    assert_eq!(with_sdp.len(), 3);
    for (name, text, _) in with_sdp {
        let mut ep = endpoint(SERVER6);
        let (sent, _) = exchange(&mut ep, now, CALLER6, &routed(text));
        assert_eq!(final_status(&sent), Some(488), "{name} routed");
    }
    // 4.6 offering PCMU instead: the IPv6 media address is taken, and the answer speaks
    // IPv6 too, with the video stream rejected in its place.
    let (_, text, _) = cases
        .iter()
        .find(|(name, ..)| name.starts_with("4.6"))
        .unwrap();
    let routed_text = routed(text);
    let (head, body) = routed_text.split_once("\r\n\r\n").unwrap();
    let body = body.replace("RTP/AVP 2\r\na=rtpmap:2 G726-32/8000", "RTP/AVP 0");
    let head: String = head
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let pcmu = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    let mut ep = endpoint(SERVER6);
    let (_, events) = exchange(&mut ep, now, CALLER6, &pcmu);
    let Some(Event::IncomingCall(incoming)) = events.into_iter().next() else {
        panic!("4.6 with PCMU is a call:\n{pcmu}");
    };
    ep.accept(incoming.call, addr("[::1]:34400"), now).unwrap();
    let (sent, _) = drain(&mut ep);
    let ok = sent
        .iter()
        .map(|t| parse(&t.payload))
        .find(|m| m.status() == Some(200))
        .expect("200");
    let answer = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(answer.contains("c=IN IP6 ::1\r\n"), "{answer}");
    assert!(answer.contains("m=audio 34400 RTP/AVP 0"), "{answer}");
    assert!(answer.contains("m=video 0 RTP/AVP 107"), "{answer}");
}

/// RFC 5118 §4.3/§4.4/§4.10 at the URI level: where an IPv6 reference ends and a port
/// begins, and the extra colon RFC 3261's ABNF once allowed.
#[test]
fn ipv6_references_in_uris_split_host_and_port_at_the_bracket() {
    use vportal::sip::uri::{Host, Uri};
    fn host_port(text: &str) -> (Host<'_>, Option<u16>) {
        match Uri::parse(text).unwrap() {
            Uri::Sip(u) => (u.host, u.port),
            other => panic!("{other:?}"),
        }
    }
    let v6 = |s: &str| Host::Ip(s.parse().unwrap());
    assert_eq!(
        host_port("sip:[2001:db8::10:5070]"),
        (v6("2001:db8::10:5070"), None)
    );
    assert_eq!(
        host_port("sip:[2001:db8::10]:5070"),
        (v6("2001:db8::10"), Some(5070))
    );
    assert_eq!(
        host_port("sip:user@[2001:db8::192.0.2.1]"),
        (v6("2001:db8::c000:201"), None)
    );
    assert_eq!(
        host_port("sip:ted@[::ffff:192.0.2.2]"),
        (v6("::ffff:192.0.2.2"), None)
    );
    for bad in [
        "sip:2001:db8::10",
        "sip:user@[2001:db8:::192.0.2.1]",
        "sip:[::1]5060",
        "sip:[::1]:",
        "sip:[::1]:99999",
        "sip:[fe80::1%eth0]",
        "sip:[127.0.0.1]",
    ] {
        assert!(Uri::parse(bad).is_err(), "{bad}");
    }
}

// ----- calls with an IPv6 caller, sans-IO -----

/// An INVITE from the test UAC at `caller` (its media at `media`) offering `offer(uac)`.
fn invite(
    caller: &str,
    server: &str,
    media: &str,
    offer: impl Fn(&Uac) -> String,
) -> (Uac, String) {
    let mut uac = Uac::new(addr(caller), addr(server), "8500");
    uac.media = addr(media);
    let sdp = offer(&uac);
    let bytes = uac.invite(&sdp);
    (uac, String::from_utf8(bytes).unwrap())
}

/// A call from `[::1]:5072` to the endpoint on `[::1]:5060`: the answer and the SDP speak
/// IPv6 with brackets where SIP wants them and none in SDP, and the server's BYE goes to
/// the caller over IPv6, to its Contact URI and its source address.
#[test]
fn a_call_from_an_ipv6_caller_is_answered_and_ended_over_ipv6() {
    let mut ep = endpoint(SERVER6);
    let now = Instant::now();
    let (mut uac, text) = invite(CALLER6, SERVER6, "[::1]:34580", |u| u.offer("sendrecv"));
    assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");
    let (sent, events) = exchange(&mut ep, now, CALLER6, &text);
    assert_eq!(final_status(&sent), None, "only 100 Trying so far");
    let incoming = events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.clone()),
            _ => None,
        })
        .expect("an incoming call");
    assert_eq!(incoming.source, addr(CALLER6));
    ep.accept(incoming.call, addr("[::1]:34400"), now).unwrap();
    let (sent, events) = drain(&mut ep);
    let ok = parse(&sent.last().unwrap().payload);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(sent.last().unwrap().destination, addr(CALLER6));
    assert_eq!(
        ok.values(HeaderName::Contact).next(),
        Some("<sip:vportal@[::1]:5060>")
    );
    let via = ok.values(HeaderName::Via).next().unwrap();
    assert!(
        via.starts_with("SIP/2.0/UDP [::1]:5072;branch=")
            && via.ends_with(";received=::1;rport=5072"),
        "{via}"
    );
    let to = ok.values(HeaderName::To).next().unwrap();
    assert!(to.starts_with("<sip:8500@[::1]:5060>;tag="), "{to}");
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(body.contains("o=vportal "), "{body}");
    assert!(body.contains(" IN IP6 ::1\r\n"), "{body}");
    assert!(body.contains("c=IN IP6 ::1\r\n"), "{body}");
    assert!(body.contains("m=audio 34400 RTP/AVP 0 101\r\n"), "{body}");
    let media = events
        .iter()
        .find_map(|e| match e {
            Event::Media { media, .. } => Some(media.clone()),
            _ => None,
        })
        .expect("media agreed");
    assert_eq!(media.remote_rtp, Some(addr("[::1]:34580")));

    uac.learn_tag(&ok);
    ep.handle_datagram(now, addr(CALLER6), uac.ack_2xx(""));
    drain(&mut ep);
    ep.hangup(incoming.call, now);
    let (sent, _) = drain(&mut ep);
    let bye = sent
        .iter()
        .find(|t| parse(&t.payload).method() == Some(&Method::Bye))
        .expect("our BYE");
    assert_eq!(bye.destination, addr(CALLER6));
    let text = String::from_utf8_lossy(&bye.payload).into_owned();
    assert!(
        text.starts_with("BYE sip:1001@[::1]:5072 SIP/2.0\r\n"),
        "{text}"
    );
    let via = top_via(bye);
    assert!(
        via.starts_with("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK"),
        "{via}"
    );
    // The caller's 200 ends our client transaction: nothing more is sent.
    ep.handle_datagram(now, addr(CALLER6), Uac::ok_to(&parse(&bye.payload)));
    ep.handle_timeout(now + Duration::from_secs(64));
    assert!(drain(&mut ep).0.is_empty());
}

/// README: an offer whose media address is of the other IP version than the server's gets
/// 488 (one RTP socket could not reach it), both ways round; RFC 5118 §4.8's offer (audio
/// on IPv4, video on IPv6) to a server on IPv6 is such an offer, as its audio is IPv4.
#[test]
fn an_offer_of_the_other_ip_version_gets_488() {
    let now = Instant::now();
    for (server, caller, media) in [
        (SERVER6, CALLER6, "127.0.0.1:34580"),
        ("127.0.0.1:5060", "127.0.0.1:5072", "[::1]:34580"),
    ] {
        let mut ep = endpoint(server);
        let (_, text) = invite(caller, server, media, |u| u.offer("sendrecv"));
        let (sent, _) = exchange(&mut ep, now, caller, &text);
        assert_eq!(final_status(&sent), Some(488), "{server} offered {media}");
    }
    let mixed = message(
        "
INVITE sip:8500@[::1] SIP/2.0
To: sip:8500@[::1]
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [::1]:5072;branch=z9hG4bKas3-111
Call-ID: mixed@hlau_4100
Contact: <sip:caller@[::1]:5072>
Max-Forwards: 70
CSeq: 8912 INVITE
",
        "
v=0
o=bob 280744730 28977631 IN IP4 host.example.com
s=
t=0 0
m=audio 34580 RTP/AVP 0
c=IN IP4 127.0.0.1
m=video 34582 RTP/AVP 107
c=IN IP6 ::1
a=rtpmap:107 H263-1998/90000
",
    );
    let mut ep = endpoint(SERVER6);
    let (sent, _) = exchange(&mut ep, now, CALLER6, &mixed);
    assert_eq!(final_status(&sent), Some(488));
    // To a server on IPv4 the same offer is fine: audio answered, video refused (port 0).
    let mut ep = endpoint("127.0.0.1:5060");
    let (_, events) = exchange(
        &mut ep,
        now,
        "127.0.0.1:5072",
        &mixed.replace("[::1]", "127.0.0.1"),
    );
    let call = events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .expect("an incoming call");
    ep.accept(call, addr("127.0.0.1:34400"), now).unwrap();
    let (sent, _) = drain(&mut ep);
    let ok = parse(&sent.last().unwrap().payload);
    assert_eq!(ok.status(), Some(200));
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(body.contains("m=audio 34400 RTP/AVP 0\r\n"), "{body}");
    assert!(body.contains("m=video 0 RTP/AVP 107\r\n"), "{body}");
}

// ----- IPv4-mapped addresses -----

/// RFC 5118 §4.9: an offer naming its media by an IPv4-mapped IPv6 address
/// (`c=IN IP6 ::ffff:127.0.0.1`) to a server on IPv4. The address is IPv4 (the README's
/// rule counts it so, and answers it), so RTP must go to, and be expected from, the IPv4
/// address: an IPv4 socket can neither send to nor receive from an IPv6 socket address.
#[test]
fn an_ipv4_mapped_media_address_is_taken_as_the_ipv4_address_it_stands_for() {
    let now = Instant::now();
    let mut ep = endpoint("127.0.0.1:5060");
    let (_, text) = invite("127.0.0.1:5072", "127.0.0.1:5060", "127.0.0.1:34580", |u| {
        u.offer("sendrecv")
            .replace("IN IP4 127.0.0.1", "IN IP6 ::ffff:127.0.0.1")
    });
    assert!(text.contains("c=IN IP6 ::ffff:127.0.0.1\r\n"));
    let (_, events) = exchange(&mut ep, now, "127.0.0.1:5072", &text);
    let call = events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .expect("an incoming call");
    ep.accept(call, addr("127.0.0.1:34400"), now).unwrap();
    let (sent, events) = drain(&mut ep);
    assert_eq!(parse(&sent.last().unwrap().payload).status(), Some(200));
    let media = events
        .iter()
        .find_map(|e| match e {
            Event::Media { media, .. } => Some(media.clone()),
            _ => None,
        })
        .expect("media agreed");
    assert_eq!(media.remote_rtp, Some(addr("127.0.0.1:34580")));
}

/// A server listening on `[::]` (dual-stack) sees IPv4 callers as `::ffff:a.b.c.d`. Its
/// answers still go to that socket address (the socket is IPv6), but what it writes and
/// reports is the IPv4 address the caller has: no `received` when the Via already names
/// it (RFC 3261 §18.2.1), `received=127.0.0.1` (never `::ffff:127.0.0.1`) when it does
/// not, and the call's source (audit rows, the calls list, `trusted_sources`) as IPv4.
#[test]
fn a_dual_stack_sockets_view_of_an_ipv4_caller_is_written_as_ipv4() {
    let now = Instant::now();
    let mapped = "[::ffff:127.0.0.1]:5072";
    let mut ep = endpoint("[::1]:5060");
    let options = |via_host: &str| {
        message(
            &format!(
                "
OPTIONS sip:8500@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP {via_host}:5072;branch=z9hG4bK-{via_host}
From: <sip:1001@127.0.0.1>;tag=1
To: <sip:8500@127.0.0.1>
Call-ID: dual-{via_host}
CSeq: 1 OPTIONS
Max-Forwards: 70
"
            ),
            "",
        )
    };
    let (sent, _) = exchange(&mut ep, now, mapped, &options("127.0.0.1"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, addr(mapped));
    assert_eq!(
        top_via(&sent[0]),
        "SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-127.0.0.1"
    );
    for via_host in ["host.example.com", "[::ffff:127.0.0.1]"] {
        let (sent, _) = exchange(&mut ep, now, mapped, &options(via_host));
        let via = top_via(&sent[0]);
        let expected = if via_host.starts_with('[') {
            // The Via names the same address, mapped: nothing to add either.
            format!("SIP/2.0/UDP {via_host}:5072;branch=z9hG4bK-{via_host}")
        } else {
            format!("SIP/2.0/UDP {via_host}:5072;branch=z9hG4bK-{via_host};received=127.0.0.1")
        };
        assert_eq!(via, expected);
    }
    // With rport: the IPv4 address and the source port.
    let (_, text) = invite("127.0.0.1:5072", "127.0.0.1:5060", "127.0.0.1:34580", |u| {
        u.offer("sendrecv")
    });
    let mut ep = endpoint("127.0.0.1:5060");
    let (sent, events) = exchange(&mut ep, now, mapped, &text);
    let via = top_via(&sent[0]);
    assert!(via.ends_with(";received=127.0.0.1;rport=5072"), "{via}");
    let incoming = events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.clone()),
            _ => None,
        })
        .expect("an incoming call");
    assert_eq!(incoming.source, addr("127.0.0.1:5072"));
}

// ----- vportal serve on [::1] -----

/// `vportal serve --sip [::1]:0 --admin [::1]:0`, RTP within this file's ports.
fn server_on_v6(w: &Workdir, rtp_ports: &str) -> ServerProcess {
    let server = ServerProcess::start(w, rtp_ports, &["--sip", "[::1]:0", "--admin", "[::1]:0"]);
    assert_eq!(server.sip.ip(), addr(SERVER6).ip());
    assert_eq!(server.admin.unwrap().ip(), addr(SERVER6).ip());
    server
}

/// A whole login over IPv6: the test phone on `[::1]` dials the server on `[::1]`, hears
/// the prompts over IPv6 RTP, keys RFC 4733 events over IPv6, changes its temporary
/// passcode and is hung up on (the server's BYE reaches it over IPv6). The audit rows name
/// the caller as `[::1]:port`, as the admin API's rows name the admin.
#[test]
fn a_caller_on_ipv6_logs_in_and_changes_the_passcode_over_ipv6() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init", "--token-name", "v6admin"]).ok().stdout);
    let server = server_on_v6(&w, "34400-34448");
    let admin = server.admin.unwrap();
    let created = http::json(
        admin,
        "POST",
        "/api/v1/users",
        Some(&token),
        &serde_json::json!({ "extension": "1001", "passcode": "4826", "temporary": true }),
    );
    assert_eq!(created.status, 201, "{}", created.body);

    let mut phone = Phone::dial(&server, "8500", "1001");
    assert!(phone.uac.local.is_ipv6() && phone.server_rtp.is_ipv6());
    // The welcome prompt arrives over IPv6, from the port the answer named.
    phone
        .rtp
        .socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0_u8; 2_048];
    let (_, from) = phone
        .rtp
        .socket
        .recv_from(&mut buf)
        .expect("prompt RTP over IPv6");
    assert_eq!(from, phone.server_rtp);
    phone.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    let calls = http::request(admin, "GET", "/api/v1/calls", Some(&token), None).json();
    assert_eq!(
        calls["calls"][0]["source"],
        phone.uac.local.to_string(),
        "{calls}"
    );
    phone.keys("5937#5937#*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());

    let u = w.user("1001");
    assert_eq!(u["temporary"], false, "{u}");
    let events = w.audit("1001");
    assert_eq!(
        event_names(&events),
        [
            "user.created",
            "passcode.temporary_set",
            "login.success",
            "passcode.changed"
        ]
    );
    let source = phone.uac.local.to_string();
    assert!(source.starts_with("[::1]:"), "{source}");
    for e in &events[2..] {
        assert_eq!(e["actor"], "caller");
        assert_eq!(e["source"], source.as_str(), "{e}");
    }
    // The admin's row: its side of the IPv6 connection, written the same way.
    assert_eq!(events[0]["actor"], "admin:v6admin");
    assert_eq!(
        events[0]["source"],
        created.local.to_string(),
        "{}",
        events[0]
    );
    assert!(!server.log_reveals("5937") && !server.log_reveals("4826"));
}

/// An offer naming its media by an IPv4-mapped address (RFC 5118 §4.9) to the server on
/// IPv4: prompts reach the caller and its keys are heard, as with a plain IPv4 offer.
#[test]
fn a_caller_offering_an_ipv4_mapped_media_address_hears_prompts_and_is_heard() {
    let w = Workdir::provisioned(&[("2002", "5937", false)]);
    let server = ServerProcess::start(&w, "34450-34498", &[]);
    let mut phone = Phone::dial_with(&server, "8500", "2002", |u| {
        u.offer("sendrecv")
            .replace("IN IP4 127.0.0.1", "IN IP6 ::ffff:127.0.0.1")
    });
    let seen = common::rtp::receive(&phone.rtp.socket, Duration::from_millis(600));
    assert!(!seen.is_empty(), "no prompt RTP:\n{}", server.log());
    phone.keys("2002#5937#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    phone.keys("*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
}

/// SIP on an IPv6 socket that takes IPv4 peers (`--sip [::ffff:127.0.0.1]:0`, the
/// loopback-only form of a dual-stack `[::]`): the caller, an IPv6 socket of the same kind,
/// is seen as `::ffff:127.0.0.1` and offers `c=IN IP6 ::ffff:127.0.0.1`. The server
/// advertises and binds RTP on plain IPv4 127.0.0.1, hears the keys, and writes the caller
/// as the IPv4 address it is in the audit rows.
#[test]
fn a_caller_on_an_ipv4_mapped_sip_socket_logs_in() {
    let w = Workdir::provisioned(&[("2002", "5937", false)]);
    let server = ServerProcess::start(
        &w,
        "34400-34448",
        &["--sip", "[::ffff:127.0.0.1]:0", "--no-admin"],
    );
    assert_eq!(server.sip.ip(), addr("[::ffff:127.0.0.1]:0").ip());
    let mut phone = Phone::dial(&server, "8500", "2002");
    let seen = common::rtp::receive(&phone.rtp.socket, Duration::from_millis(600));
    assert!(!seen.is_empty(), "no prompt RTP:\n{}", server.log());
    phone.keys("2002#5937#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    // RTP at the IPv4 address, advertised as such.
    server.expect_log("rtp=127.0.0.1:", 1, CALL);
    phone.keys("*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    let events = w.audit("2002");
    let login = events
        .iter()
        .find(|e| e["event"] == "login.success")
        .unwrap();
    assert_eq!(
        login["source"],
        format!("127.0.0.1:{}", phone.uac.local.port()),
        "{login}"
    );
}

/// The admin side-port on an IPv6 socket that takes IPv4 loopback
/// (`--admin [::ffff:127.0.0.1]:0`) is on loopback: it starts without TLS. An admin's
/// audit row names it by the IPv4 address it is, as on an IPv4 side-port.
#[test]
fn an_admin_on_an_ipv4_mapped_side_port_is_audited_as_ipv4() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init", "--token-name", "mapped"]).ok().stdout);
    let server = ServerProcess::start(&w, "34400-34448", &["--admin", "[::ffff:127.0.0.1]:0"]);
    let admin = server.admin.unwrap();
    assert_eq!(admin.ip(), addr("[::ffff:127.0.0.1]:0").ip());
    let created = http::json(
        admin,
        "POST",
        "/api/v1/users",
        Some(&token),
        &serde_json::json!({ "extension": "1001" }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.local.is_ipv6(), "{}", created.local);
    let events = w.audit("1001");
    assert_eq!(events[0]["actor"], "admin:mapped");
    assert_eq!(
        events[0]["source"],
        format!("127.0.0.1:{}", created.local.port()),
        "{}",
        events[0]
    );
}

/// Runs SIPp from `dir` against `server` over IPv6 (`-i ::1`, `[::1]:port`) with `args`;
/// returns its exit status and screen.
fn sipp_v6(dir: &Workdir, server: SocketAddr, args: &[&str]) -> (bool, String) {
    let screen = dir
        .path()
        .join(format!("sipp-{}.screen", args.join("_").replace('/', "_")));
    let status = Command::new("timeout")
        .args([
            "90",
            "sipp",
            &format!("[{}]:{}", server.ip(), server.port()),
        ])
        .args(["-i", "::1", "-nostdin", "-timeout", "60s", "-timeout_error"])
        .args(["-max_retrans", "5", "-trace_screen", "-screen_file"])
        .arg(&screen)
        .args(args)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect(
            "SIPp is required for this test: install it (Debian/Ubuntu: apt-get install \
             sip-tester), or run tests/run-all.sh",
        );
    let screen = std::fs::read_to_string(&screen).unwrap_or_default();
    (status.success(), screen)
}

/// The cumulative count on SIPp's screen line holding `counter`.
fn sipp_count(screen: &str, counter: &str) -> u32 {
    screen
        .lines()
        .find(|l| l.contains(counter))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {counter:?} on SIPp's screen:\n{screen}"))
}

/// SIPp over IPv6: its built-in uac scenario over UDP and TCP and OPTIONS, each call
/// successful; then a login keyed with `play_dtmf` (the `change-play` suite's scenario,
/// `tests/sipp/portal-play.xml`, which offers `c=IN IP6` on IPv6) that changes a temporary
/// passcode and is hung up on by the server.
#[test]
fn sipp_calls_and_logs_in_over_ipv6() {
    let w = Workdir::provisioned(&[("1122", "48826", true)]);
    let server = server_on_v6(&w, "34500-34558");
    for (what, args, calls) in [
        (
            "uac over UDP",
            &["-sn", "uac", "-s", "8500", "-m", "5", "-mp", "34560"][..],
            5,
        ),
        (
            "uac over TCP",
            &[
                "-sn", "uac", "-t", "t1", "-s", "8500", "-m", "5", "-mp", "34560",
            ],
            5,
        ),
        (
            "OPTIONS",
            &["-sf", "tests/sipp/options.xml", "-s", "8500", "-m", "20"],
            20,
        ),
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("tests/") {
                    format!("{}/{a}", env!("CARGO_MANIFEST_DIR"))
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, screen) = sipp_v6(&w, server.sip, &args);
        assert!(ok, "{what}:\n{screen}\n{}", server.log());
        assert_eq!(sipp_count(&screen, "Successful call"), calls, "{what}");
        assert_eq!(sipp_count(&screen, "Failed call"), 0, "{what}");
    }
    // The login: the runner's play_dtmf keys, one action per entry.
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sipp/portal-play.xml"
    ))
    .unwrap();
    let keys: String = ["1122#", "48826#", "59937#", "59937#", "*"]
        .iter()
        .map(|entry| {
            format!(
                "  <nop><action><exec play_dtmf=\"{entry}\" /></action></nop>\n  <pause milliseconds=\"{}\" />\n",
                entry.len() * 500
            )
        })
        .collect();
    let scenario = w.path().join("portal-play-v6.xml");
    std::fs::write(&scenario, template.replace("<!-- KEYS -->", &keys)).unwrap();
    let (ok, screen) = sipp_v6(
        &w,
        server.sip,
        &[
            "-sf",
            scenario.to_str().unwrap(),
            "-s",
            "8500",
            "-m",
            "1",
            "-mp",
            "34560",
        ],
    );
    assert!(ok, "{screen}\n{}", server.log());
    assert_eq!(sipp_count(&screen, "Successful call"), 1);
    assert_eq!(w.user("1122")["temporary"], false);
    let events = w.audit("1122");
    assert!(
        event_names(&events).ends_with(&["login.success", "passcode.changed"]),
        "{events:?}"
    );
    let source = events.last().unwrap()["source"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(source.starts_with("[::1]:"), "{source}");
}

/// A UDP socket on `[::1]` talking to the server's SIP port, for raw requests.
fn raw_v6_socket() -> UdpSocket {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Over real sockets on `[::1]`: an OPTIONS with `rport` is answered to its source port
/// with `received=::1;rport=…`, over UDP and over TCP.
#[test]
fn responses_reach_an_ipv6_source_over_udp_and_tcp() {
    use std::io::{Read, Write};
    let w = Workdir::new();
    w.run(&["init"]).ok();
    let server = server_on_v6(&w, "34400-34448");
    let sock = raw_v6_socket();
    let local = sock.local_addr().unwrap();
    let options = |transport: &str, local: SocketAddr| {
        message(
            &format!(
                "
OPTIONS sip:8500@{server} SIP/2.0
Via: SIP/2.0/{transport} {local};branch=z9hG4bK-v6-{transport};rport
From: <sip:1001@[::1]>;tag=v6
To: <sip:8500@{server}>
Call-ID: v6-options-{transport}@[::1]
CSeq: 1 OPTIONS
Max-Forwards: 70
",
                server = server.sip
            ),
            "",
        )
    };
    sock.send_to(options("UDP", local).as_bytes(), server.sip)
        .unwrap();
    let mut buf = [0_u8; 4_096];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.sip);
    let m: Message = parse(&buf[..n]);
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.values(HeaderName::Via).next().unwrap(),
        format!(
            "SIP/2.0/UDP {local};branch=z9hG4bK-v6-UDP;received=::1;rport={}",
            local.port()
        )
    );
    let mut tcp = std::net::TcpStream::connect(server.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(options("TCP", local).as_bytes()).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < end {
        let n = tcp.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    assert!(
        text.contains(&format!(
            "Via: SIP/2.0/TCP {local};branch=z9hG4bK-v6-TCP;received=::1;rport={}\r\n",
            local.port()
        )),
        "{text}"
    );
}
