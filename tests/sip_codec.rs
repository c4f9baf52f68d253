//! Properties of the SIP codec: what is built parses back to the same fields (also with
//! compact header names, folding and any stream split), and no input makes the parser or
//! the endpoint panic or answer anywhere but the sender.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use vportal::sip::build::MessageBuilder;
use vportal::sip::endpoint::{Endpoint, EndpointConfig};
use vportal::sip::{CSeq, HeaderName, Message, Method, NameAddr, StreamFramer, Via};

#[derive(Debug, Clone)]
struct Spec {
    method: Method,
    user: String,
    host: String,
    port: u16,
    branch: String,
    display: String,
    tag: String,
    call_id: String,
    cseq: u32,
    extra: Vec<(String, String)>,
    content_type: &'static str,
    body: Vec<u8>,
    compact: bool,
    fold: bool,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Options),
        Just(Method::Bye),
        Just(Method::Info),
        Just(Method::Update),
        "[A-Z]{3,10}".prop_map(|m| Method::parse(&m)),
    ]
}

/// An SDP offer vportal can answer (G.711, maybe telephone-event), its media on loopback.
fn sdp_offer() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u32>(),
        (5_000_u16..30_000).prop_map(|p| p * 2),
        prop_oneof![Just("0"), Just("8"), Just("0 8 101"), Just("8 0 101")],
    )
        .prop_map(|(id, port, formats)| {
            format!(
                "v=0\r\no=- {id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\n"
            )
            .into_bytes()
        })
}

/// A body: SDP some of the time, else none or arbitrary bytes of a type no request here
/// takes (an INVITE without a body is a call too: vportal offers in the 200).
fn body() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![
        Just(("application/octet-stream", Vec::new())),
        prop::collection::vec(any::<u8>(), 1..200).prop_map(|b| ("application/octet-stream", b)),
        sdp_offer().prop_map(|b| ("application/sdp", b)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            method(),
            "[a-z0-9*#+._-]{1,12}",
            "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
            1_u16..,
            "[a-zA-Z0-9]{1,16}",
            "[a-zA-Z ]{0,12}",
            "[a-zA-Z0-9]{1,10}",
        ),
        (
            "[a-zA-Z0-9.@-]{1,30}",
            0_u32..(1 << 31),
            prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,40}"), 0..6),
            body(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (method, user, host, port, branch, display, tag),
                (call_id, cseq, extra, (content_type, body), compact, fold),
            )| Spec {
                method,
                user,
                host,
                port,
                branch,
                display,
                tag,
                call_id,
                cseq,
                extra,
                content_type,
                body,
                compact,
                fold,
            },
        )
}

fn build(s: &Spec) -> Vec<u8> {
    let mut b =
        MessageBuilder::request(&s.method, &format!("sip:{}@{}:{}", s.user, s.host, s.port));
    let (via, from, call_id) = if s.compact {
        ("v", "f", "i")
    } else {
        ("Via", "From", "Call-ID")
    };
    b.header(
        via,
        &format!(
            "SIP/2.0/UDP {}:{};branch=z9hG4bK{}",
            s.host, s.port, s.branch
        ),
    );
    b.header(
        from,
        &format!("\"{}\" <sip:caller@{}>;tag={}", s.display, s.host, s.tag),
    );
    b.header("To", &format!("<sip:{}@{}>", s.user, s.host));
    b.header(call_id, &s.call_id);
    b.header("CSeq", &format!("{} {}", s.cseq, s.method.as_str()));
    for (name, value) in &s.extra {
        b.header(name, value.trim());
    }
    let mut bytes = b.finish(Some((s.content_type, &s.body)));
    if s.fold {
        // Fold the From header onto a continuation line before its tag (RFC 3261 §7.3.1).
        let text = bytes.clone();
        if let Some(i) = text.windows(5).position(|w| w == b";tag=") {
            bytes = [&text[..i], b"\r\n   ", &text[i..]].concat();
        }
    }
    bytes
}

fn check(s: &Spec, m: &Message) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.method(), Some(&s.method));
    prop_assert_eq!(
        m.request_uri().unwrap(),
        format!("sip:{}@{}:{}", s.user, s.host, s.port)
    );
    prop_assert_eq!(m.defect(), None);
    let via = Via::parse(m.required(HeaderName::Via).unwrap()).unwrap();
    prop_assert_eq!(via.branch().unwrap(), format!("z9hG4bK{}", s.branch));
    prop_assert_eq!(via.port, Some(s.port));
    let from = NameAddr::parse(m.required(HeaderName::From).unwrap(), HeaderName::From).unwrap();
    prop_assert_eq!(from.tag(), Some(s.tag.as_str()));
    prop_assert_eq!(m.required(HeaderName::CallId).unwrap(), s.call_id.as_str());
    let cseq = CSeq::parse(m.required(HeaderName::CSeq).unwrap()).unwrap();
    prop_assert_eq!(cseq.seq, s.cseq);
    prop_assert_eq!(cseq.method, s.method.as_str());
    let others: Vec<(String, String)> = m
        .fields()
        .filter(|(h, name, _)| *h == HeaderName::Other && name.starts_with("X-"))
        .map(|(_, n, v)| (n.to_owned(), v.unwrap().to_owned()))
        .collect();
    let want: Vec<(String, String)> = s
        .extra
        .iter()
        .map(|(n, v)| (n.clone(), v.trim().to_owned()))
        .collect();
    prop_assert_eq!(others, want);
    prop_assert_eq!(m.body(), &s.body[..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn built_messages_parse_back(s in spec()) {
        let bytes = build(&s);
        let m = Message::parse_datagram(bytes.clone()).unwrap();
        check(&s, &m)?;
        if !s.fold {
            // Without folding to undo, parsing leaves the bytes as they were.
            prop_assert_eq!(m.as_bytes(), &bytes[..]);
        }
    }

    #[test]
    fn streams_frame_the_same_messages_at_any_split(a in spec(), b in spec(), cut in 0.0..1.0_f64) {
        let mut stream = build(&a);
        stream.extend_from_slice(&build(&b));
        let at = ((stream.len() as f64) * cut) as usize;
        let mut framer = StreamFramer::new();
        let mut got = Vec::new();
        for part in [&stream[..at], &stream[at..]] {
            framer.push(part);
            while let Some(m) = framer.next_message().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got.len(), 2);
        check(&a, &got[0])?;
        check(&b, &got[1])?;
        prop_assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2_000)) {
        if let Ok(m) = Message::parse_datagram(bytes.clone()) {
            for (name, _, value) in m.fields() {
                let _ = (name, value);
            }
            let _ = m.list(HeaderName::Via).map(Via::parse).count();
            let _ = m.required(HeaderName::CSeq).map(CSeq::parse);
        }
        let mut f = StreamFramer::new();
        f.push(&bytes);
        while let Ok(Some(_)) = f.next_message() {}
    }
}

/// What became of one request fed to a fresh endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// It was a call (`Event::IncomingCall`), and the call was accepted.
    accepted: bool,
    /// The call came with an SDP offer.
    offered: bool,
    /// A 200 with SDP went back.
    answered: bool,
    /// A BYE went out once the 200 was never acknowledged.
    bye: bool,
}

/// Feeds `bytes` from loopback to a fresh endpoint that routes every user, accepts any call
/// it starts, lets the 200 be retransmitted and given up on, and checks that everything sent
/// goes back to the sender: only responses until a timer runs, then also the BYE.
fn drive(bytes: Vec<u8>) -> Result<Outcome, TestCaseError> {
    use vportal::sip::endpoint::Event;
    let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
    cfg.rng_seed = Some(7);
    let mut ep = Endpoint::new(cfg, Box::new(|_: &str| Some(0)));
    let source: SocketAddr = "127.0.0.1:5062".parse().unwrap();
    let start = Instant::now();
    let mut out = Outcome::default();
    ep.handle_datagram(start, source, bytes);
    while let Some(event) = ep.poll_event() {
        if let Event::IncomingCall(c) = event {
            prop_assert!(!out.accepted, "one request, one call");
            out.offered = c.has_offer;
            let accepted = ep.accept(c.call, "127.0.0.1:10000".parse().unwrap(), start);
            prop_assert_eq!(accepted, Ok(()));
            out.accepted = true;
        }
    }
    // Until a timer runs, only answers go back.
    for step in [None, Some(500), Some(32_000), Some(64_000)] {
        if let Some(ms) = step {
            ep.handle_timeout(start + std::time::Duration::from_millis(ms));
        }
        while let Some(t) = ep.poll_transmit() {
            prop_assert_eq!(t.destination.ip(), source.ip());
            prop_assert!(t.destination.ip().is_loopback());
            let m = Message::parse_datagram(t.payload).unwrap();
            if m.status() == Some(200) && m.body().starts_with(b"v=0") {
                out.answered = true;
            }
            if m.method() == Some(&Method::Bye) {
                prop_assert!(step.is_some() && out.accepted, "a BYE only ends a call");
                out.bye = true;
            } else {
                prop_assert!(m.status().is_some(), "only responses go back");
            }
        }
    }
    prop_assert_eq!(out.answered, out.accepted);
    prop_assert_eq!(out.bye, out.accepted);
    Ok(out)
}

#[test]
fn mutated_requests_never_panic_the_endpoint_or_leave_loopback() {
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::with_cases(500)
    };
    // Half the requests go as built, so that the calls among them get through.
    let flips = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ];
    let strategy = (spec(), flips);
    // Calls with and without an offer: the accept path must run, not only the refusals.
    let (with_offer, without_offer) = (AtomicUsize::new(0), AtomicUsize::new(0));
    proptest::test_runner::TestRunner::new(config)
        .run(&strategy, |(s, flips)| {
            let mut bytes = build(&s);
            for (i, b) in &flips {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            let out = drive(bytes)?;
            if out.accepted {
                let n = if out.offered {
                    &with_offer
                } else {
                    &without_offer
                };
                n.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let (with_offer, without_offer) = (with_offer.into_inner(), without_offer.into_inner());
    assert!(
        with_offer > 0 && without_offer > 0,
        "calls accepted: {with_offer} with an offer, {without_offer} without"
    );
}

#[test]
fn a_good_invite_is_accepted_answered_and_ended_on_loopback() {
    let offer = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                  m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let s = Spec {
        method: Method::Invite,
        user: "8500".into(),
        host: "example.com".into(),
        port: 5062,
        branch: "abc".into(),
        display: "A B".into(),
        tag: "t1".into(),
        call_id: "c@h".into(),
        cseq: 1,
        extra: vec![],
        content_type: "application/sdp",
        body: offer.to_vec(),
        compact: false,
        fold: false,
    };
    let out = drive(build(&s)).unwrap();
    assert!(
        out.accepted && out.offered && out.answered && out.bye,
        "{out:?}"
    );
}

#[test]
fn compact_forms_and_folding_are_covered() {
    let s = Spec {
        method: Method::Invite,
        user: "8500".into(),
        host: "example.com".into(),
        port: 5060,
        branch: "abc".into(),
        display: "A B".into(),
        tag: "t1".into(),
        call_id: "c@h".into(),
        cseq: 7,
        extra: vec![],
        content_type: "application/octet-stream",
        body: b"v=0\r\n".to_vec(),
        compact: true,
        fold: true,
    };
    let bytes = build(&s);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("\r\nv: ") && text.contains("\r\n   ;tag=t1"),
        "{text}"
    );
    check(&s, &Message::parse_datagram(bytes).unwrap()).unwrap();
}
