//! The RFC 4475 torture messages through vportal's real decision path: the sans-IO endpoint
//! routing with the shipped default dialplan. Each message must get the handling
//! `tests/corpora/rfc4475/expected.tsv` gives for a UAS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vportal::sip::endpoint::{ConnId, Endpoint, EndpointConfig, Event, Transmit, Transport};
use vportal::sip::{FrameError, HeaderName, Message, NameAddr, StreamFramer};

const CORPUS: &str = "tests/corpora/rfc4475";

/// The caller's address: loopback, as every test must use.
fn source() -> SocketAddr {
    "127.0.0.1:5072".parse().unwrap()
}

fn endpoint() -> Endpoint {
    let dialplan =
        Arc::new(vportal::server::load_dialplan(Path::new("dialplans/default.toml")).unwrap());
    let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
    cfg.rng_seed = Some(4475);
    Endpoint::new(cfg, vportal::sip::endpoint::dialplan_router(dialplan))
}

struct Case {
    file: String,
    expect: String,
}

fn cases() -> Vec<Case> {
    let tsv = std::fs::read_to_string(Path::new(CORPUS).join("expected.tsv")).unwrap();
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Case {
                file: cols[0].to_owned(),
                expect: cols[4].to_owned(),
            }
        })
        .collect()
}

/// Drives the endpoint as the server would: anything it asks the application to decide
/// (none of the corpus INVITEs route, so nothing should) is rejected, then every transmit
/// is collected.
fn drain(ep: &mut Endpoint, now: Instant) -> Vec<Transmit> {
    while let Some(event) = ep.poll_event() {
        if let Event::IncomingCall(call) = event {
            panic!("a torture message reached the application: {call:?}");
        }
    }
    ep.handle_timeout(now);
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

fn status(t: &Transmit) -> u16 {
    let m = Message::parse_datagram(t.payload.clone()).expect("our response parses");
    m.status().expect("a response")
}

/// Each final response sent: its status and its To tag, when its To has one.
fn final_answers(sent: &[Transmit]) -> Vec<(u16, Option<String>)> {
    sent.iter()
        .map(|t| Message::parse_datagram(t.payload.clone()).expect("our response parses"))
        .filter(|m| m.status().is_some_and(|c| c >= 200))
        .map(|m| {
            let tag = m
                .values(HeaderName::To)
                .next()
                .and_then(|to| NameAddr::parse(to, HeaderName::To).ok())
                .and_then(|to| to.tag().map(str::to_owned));
            (m.status().unwrap(), tag)
        })
        .collect()
}

/// vportal's own answer where the table allows anything but 400 (`!400`): pinned, so that a
/// change to another one (a 500, say) cannot pass for "not 400". 404: the default dialplan
/// routes none of the corpus's users; 405: REGISTER and MESSAGE are not a voice portal's;
/// 481: an in-dialog request (a To tag) for no dialog of ours.
const OURS: [(&str, u16); 21] = [
    ("badaspec.dat", 400),
    ("baddate.dat", 404),
    ("baddn.dat", 400),
    ("dblreq.dat", 405),
    ("esc01.dat", 404),
    ("escnull.dat", 405),
    ("escruri.dat", 404),
    ("inv2543.dat", 404),
    ("longreq.dat", 404),
    ("ltgtruri.dat", 400),
    ("lwsdisp.dat", 200),
    ("lwsruri.dat", 400),
    ("lwsstart.dat", 404),
    ("mpart01.dat", 405),
    ("quotbal.dat", 400),
    ("regbadct.dat", 405),
    ("semiuri.dat", 200),
    ("transports.dat", 200),
    ("trws.dat", 200),
    ("wsinv.dat", 481),
    ("zeromf.dat", 200),
];

/// Whether the first final status (or silence) is one the table allows.
fn allowed(expect: &str, first_final: Option<u16>) -> bool {
    expect.split('|').any(|alt| match (alt, first_final) {
        ("none", None) => true,
        ("!400", Some(code)) => code != 400,
        (code, Some(got)) => code.parse::<u16>() == Ok(got),
        _ => false,
    })
}

#[test]
fn every_torture_message_gets_the_expected_udp_handling() {
    let cases = cases();
    assert_eq!(cases.len(), 50, "the whole corpus");
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = std::fs::read(Path::new(CORPUS).join(&case.file)).unwrap();
        let mut ep = endpoint();
        let now = Instant::now();
        ep.handle_datagram(now, source(), bytes.clone());
        let sent = drain(&mut ep, now);
        let finals: Vec<u16> = sent.iter().map(status).filter(|c| *c >= 200).collect();
        let pinned = OURS.iter().find(|(file, _)| *file == case.file);
        let ours = match pinned {
            Some(&(_, code)) => finals.first() == Some(&code),
            None => !case.expect.contains("!400"),
        };
        if !allowed(&case.expect, finals.first().copied()) || !ours {
            failures.push(format!(
                "{}: expected {} (vportal's: {:?}), sent {:?}",
                case.file,
                case.expect,
                pinned.map(|&(_, code)| code),
                sent.iter().map(status).collect::<Vec<_>>()
            ));
        }
        // RFC 3261 §18.2.2: the source IP (never a name from the message), at the Via port
        // unless rport asks for the source port.
        for t in &sent {
            assert_eq!(t.destination.ip(), source().ip(), "{}", case.file);
            assert_eq!(t.transport, Transport::Udp);
        }
        // Nothing to do later either: no call, and the same message again gets the same answer
        // (the same final statuses, with the same To tags).
        ep.handle_datagram(now, source(), bytes);
        let again = drain(&mut ep, now);
        assert_eq!(final_answers(&again), final_answers(&sent), "{}", case.file);
        assert_eq!(ep.active_calls(), 0, "{}", case.file);
        ep.handle_timeout(now + Duration::from_secs(64));
        assert!(
            ep.poll_transmit().is_none(),
            "{}: late retransmission",
            case.file
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn responses_go_to_the_via_port_or_the_rport() {
    let mut ep = endpoint();
    let now = Instant::now();
    // quotbal's Via names port 5050; no rport.
    ep.handle_datagram(
        now,
        source(),
        std::fs::read(Path::new(CORPUS).join("quotbal.dat")).unwrap(),
    );
    let sent = drain(&mut ep, now);
    assert_eq!(sent[0].destination, "127.0.0.1:5050".parse().unwrap());
    // mpart01 asks for rport: the source port it is.
    ep.handle_datagram(
        now,
        source(),
        std::fs::read(Path::new(CORPUS).join("mpart01.dat")).unwrap(),
    );
    let sent = drain(&mut ep, now);
    assert_eq!(sent[0].destination, source());
    let m = Message::parse_datagram(sent[0].payload.clone()).unwrap();
    let via = m.values(vportal::sip::HeaderName::Via).next().unwrap();
    assert!(via.ends_with(";received=127.0.0.1;rport=5072"), "{via}");
    // Others: the default port 5060.
    ep.handle_datagram(
        now,
        source(),
        std::fs::read(Path::new(CORPUS).join("zeromf.dat")).unwrap(),
    );
    assert_eq!(
        drain(&mut ep, now)[0].destination,
        "127.0.0.1:5060".parse().unwrap()
    );
}

#[test]
fn specific_answers_carry_what_the_rfc_asks() {
    let answer = |file: &str| {
        let mut ep = endpoint();
        let now = Instant::now();
        ep.handle_datagram(
            now,
            source(),
            std::fs::read(Path::new(CORPUS).join(file)).unwrap(),
        );
        let sent = drain(&mut ep, now);
        Message::parse_datagram(sent.last().expect("an answer").payload.clone()).unwrap()
    };
    use vportal::sip::HeaderName as H;
    let bext = answer("bext01.dat");
    assert_eq!(bext.status(), Some(420));
    assert_eq!(
        bext.values(H::Unsupported).next(),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    let intmeth = answer("intmeth.dat");
    assert_eq!(intmeth.status(), Some(501));
    assert!(intmeth.values(H::Allow).next().unwrap().contains("INVITE"));
    assert!(
        answer("invut.dat")
            .values(H::Accept)
            .next()
            .unwrap()
            .contains("application/sdp")
    );
    let reason = |m: &Message| match m.start_line() {
        vportal::sip::StartLine::Response { reason, .. } => {
            String::from_utf8_lossy(&m.as_bytes()[reason.clone()]).into_owned()
        }
        _ => String::new(),
    };
    assert_eq!(reason(&answer("insuf.dat")), "Missing From header");
    assert_eq!(reason(&answer("mismatch01.dat")), "CSeq method mismatch");
    assert_eq!(
        reason(&answer("clerr.dat")),
        "Content-Length larger than message"
    );
    assert_eq!(
        reason(&answer("ncl.dat")),
        "Malformed Content-Length header"
    );
    assert_eq!(reason(&answer("scalar02.dat")), "Malformed CSeq header");
    assert_eq!(reason(&answer("multi01.dat")), "Multiple From headers");
    assert_eq!(reason(&answer("badinv01.dat")), "Malformed Via header");
    // REGISTER: vportal is not a registrar.
    let reg = answer("regaut01.dat");
    assert_eq!(reg.status(), Some(405));
    assert!(reg.values(H::Allow).next().is_some());
    // A response's To gets a tag; a retransmission to the same endpoint gets the same one.
    let mut ep = endpoint();
    let now = Instant::now();
    let zeromf = std::fs::read(Path::new(CORPUS).join("zeromf.dat")).unwrap();
    ep.handle_datagram(now, source(), zeromf.clone());
    let first = final_answers(&drain(&mut ep, now));
    assert!(
        matches!(&first[..], [(200, Some(tag))] if !tag.is_empty()),
        "{first:?}"
    );
    ep.handle_datagram(now, source(), zeromf);
    assert_eq!(final_answers(&drain(&mut ep, now)), first);
}

#[test]
fn stream_framing_of_the_corpus() {
    for case in cases() {
        let bytes = std::fs::read(Path::new(CORPUS).join(&case.file)).unwrap();
        let mut framer = StreamFramer::new();
        framer.push(&bytes);
        let first = framer.next_message();
        match case.file.as_str() {
            // Content-Length beyond what arrived: wait for more (the shell times out).
            "clerr.dat" => assert!(matches!(first, Ok(None)), "{}", case.file),
            // Framing is unrecoverable: the head is answered 400, then the connection
            // closes. (inv2543's body is "the rest of the datagram", which a stream does
            // not have: without Content-Length it cannot be framed either.)
            "ncl.dat" | "mcl01.dat" | "inv2543.dat" => {
                let head = first.unwrap().unwrap();
                let mut ep = endpoint();
                let now = Instant::now();
                ep.handle_message(now, Transport::Tcp(ConnId(7)), source(), head);
                let finals: Vec<u16> = drain(&mut ep, now).iter().map(status).collect();
                assert_eq!(finals, [400], "{}", case.file);
                assert!(
                    matches!(framer.next_message(), Err(FrameError::ContentLength(_))),
                    "{}",
                    case.file
                );
            }
            // No blank line at all: still waiting for the end of the headers.
            "baddn.dat" => assert!(matches!(first, Ok(None)), "{}", case.file),
            // A status code of ten digits is not SIP: the connection is closed.
            "bigcode.dat" => assert!(matches!(first, Err(FrameError::NotSip(_))), "{}", case.file),
            _ => {
                let message = first
                    .unwrap_or_else(|e| panic!("{}: {e}", case.file))
                    .unwrap_or_else(|| panic!("{}: incomplete", case.file));
                let mut ep = endpoint();
                let now = Instant::now();
                ep.handle_message(now, Transport::Tcp(ConnId(7)), source(), message);
                let sent = drain(&mut ep, now);
                let finals: Vec<u16> = sent.iter().map(status).filter(|c| *c >= 200).collect();
                assert!(
                    allowed(&case.expect, finals.first().copied()),
                    "{} over TCP: {finals:?}",
                    case.file
                );
                assert!(
                    sent.iter()
                        .all(|t| t.transport == Transport::Tcp(ConnId(7)))
                );
            }
        }
    }
    // dblreq over TCP: the trailing INVITE is a second message (RFC 4475 §3.1.1.8).
    let mut framer = StreamFramer::new();
    framer.push(&std::fs::read(Path::new(CORPUS).join("dblreq.dat")).unwrap());
    assert!(framer.next_message().unwrap().is_some());
    let second = framer.next_message().unwrap().unwrap();
    assert_eq!(second.method(), Some(&vportal::sip::Method::Invite));
}
