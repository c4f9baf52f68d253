//! SIP transaction and dialog scenarios on a virtual clock: a scripted caller and the real
//! sans-IO endpoint, no sockets, no sleeps. Loss is simulated by dropping what the server
//! sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::uac::{Uac, parse, status};
use vportal::sip::endpoint::{
    CallHandle, ConnId, EndReason, Endpoint, EndpointConfig, Event, RefusedCalls, Transmit,
    Transport,
};
use vportal::sip::sdp::Direction;
use vportal::sip::{HeaderName, Message, Method};

const SERVER: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5062";
const MEDIA: &str = "127.0.0.1:10000";

/// The endpoint, a caller, and what passed between them.
struct World {
    ep: Endpoint,
    uac: Uac,
    start: Instant,
    now: Instant,
    /// Messages the server sent, with the virtual time they were sent at.
    inbox: Vec<(Duration, Transmit)>,
    events: Vec<Event>,
    /// Drop everything the server sends (loss).
    lossy: bool,
}

impl World {
    fn new() -> Self {
        Self::with_config(|_| {})
    }

    fn with_config(tweak: impl FnOnce(&mut EndpointConfig)) -> Self {
        let mut cfg = EndpointConfig::new(SERVER.parse().unwrap());
        cfg.rng_seed = Some(1);
        tweak(&mut cfg);
        let router = |user: &str| (user == "8500").then_some(0);
        let start = Instant::now();
        Self {
            ep: Endpoint::new(cfg, Box::new(router)),
            uac: caller_at(CALLER, "8500"),
            start,
            now: start,
            inbox: Vec::new(),
            events: Vec::new(),
            lossy: false,
        }
    }

    fn send(&mut self, bytes: Vec<u8>) {
        let from: SocketAddr = self.uac.local;
        match self.uac.transport {
            "TCP" => {
                let m = vportal::sip::Message::parse_datagram(bytes).unwrap();
                self.ep
                    .handle_message(self.now, Transport::Tcp(ConnId(1)), from, m);
            }
            _ => self.ep.handle_datagram(self.now, from, bytes),
        }
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            if !self.lossy {
                self.inbox.push((self.now - self.start, t));
            }
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    /// Moves the clock forward, firing every timer on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(at) = self.ep.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.ep.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
    }

    /// Statuses of the responses received so far, in order.
    fn statuses(&self) -> Vec<u16> {
        self.inbox.iter().map(|(_, t)| status(&t.payload)).collect()
    }

    fn incoming(&self) -> CallHandle {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::IncomingCall(c) => Some(c.call),
                _ => None,
            })
            .expect("an incoming call")
    }

    /// The call of the latest IncomingCall event.
    fn latest_incoming(&self) -> CallHandle {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::IncomingCall(c) => Some(c.call),
                _ => None,
            })
            .expect("an incoming call")
    }

    /// The first BYE the server sent, with when.
    fn bye(&self) -> (Duration, Transmit) {
        self.inbox
            .iter()
            .find(|(_, t)| parse(&t.payload).method() == Some(&Method::Bye))
            .cloned()
            .expect("a BYE")
    }

    /// Answers the server's BYE with 200; returns why the call ended.
    fn answer_the_bye(&mut self) -> Option<EndReason> {
        let (_, bye) = self.bye();
        self.send(Uac::ok_to(&parse(&bye.payload)));
        self.ended()
    }

    fn ended(&self) -> Option<EndReason> {
        self.events.iter().find_map(|e| match e {
            Event::Ended { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    fn media(&self) -> Vec<Direction> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Media { media, .. } => Some(media.direction),
                _ => None,
            })
            .collect()
    }

    /// Sends the datagram another caller at `from` sent, and collects what comes back.
    fn send_from(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.ep.handle_datagram(self.now, from, bytes);
        self.pump();
    }

    /// Another caller sends an INVITE with a `sendrecv` offer.
    fn invite_from(&mut self, other: &mut Uac) {
        let offer = other.offer("sendrecv");
        let invite = other.invite(&offer);
        self.send_from(other.local, invite);
    }

    /// The caller sends an INVITE with a `sendrecv` offer; returns it for retransmitting.
    fn send_invite(&mut self) -> Vec<u8> {
        let offer = self.uac.offer("sendrecv");
        let invite = self.uac.invite(&offer);
        self.send(invite.clone());
        invite
    }

    /// The application answers the incoming call on [`MEDIA`].
    fn accept(&mut self) -> CallHandle {
        let call = self.incoming();
        self.ep
            .accept(call, MEDIA.parse().unwrap(), self.now)
            .unwrap();
        self.pump();
        call
    }

    /// The application hangs up.
    fn hangup(&mut self, call: CallHandle) {
        self.ep.hangup(call, self.now);
        self.pump();
    }

    /// The caller learns our tag from the latest 200 and ACKs it with this SDP (may be empty).
    fn ack_the_200(&mut self, sdp: &str) {
        let ok = self
            .inbox
            .iter()
            .rev()
            .find(|(_, t)| status(&t.payload) == 200)
            .unwrap()
            .1
            .payload
            .clone();
        self.uac.learn_tag(&parse(&ok));
        let ack = self.uac.ack_2xx(sdp);
        self.send(ack);
    }

    /// The `i`-th message the server sent.
    fn received(&self, i: usize) -> Message {
        parse(&self.inbox[i].1.payload)
    }

    /// The first line of the last message the server sent.
    fn last_status_line(&self) -> String {
        let payload = &self.inbox.last().unwrap().1.payload;
        let text = String::from_utf8_lossy(payload);
        text.lines().next().unwrap_or("").to_owned()
    }

    /// The last message the server sent.
    fn last_received(&self) -> Message {
        parse(&self.inbox.last().unwrap().1.payload)
    }

    /// INVITE, accept, 200, ACK: an established call.
    fn establish(&mut self) -> CallHandle {
        self.send_invite();
        let call = self.accept();
        self.ack_the_200("");
        assert!(
            self.events
                .iter()
                .any(|e| matches!(e, Event::Established { .. }))
        );
        self.inbox.clear();
        call
    }
}

/// `request` with the header line `line` (CRLF included) added after Max-Forwards.
fn with_header(request: Vec<u8>, line: &str) -> Vec<u8> {
    let text = String::from_utf8(request).unwrap();
    assert!(text.contains("Max-Forwards: 70\r\n"));
    text.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{line}"),
        1,
    )
    .into_bytes()
}

/// The first value of header `name`, which `m` must have.
fn header(m: &Message, name: HeaderName) -> &str {
    m.values(name).next().unwrap()
}

/// A caller at `local` dialling `target`.
fn caller_at(local: &str, target: &str) -> Uac {
    Uac::new(local.parse().unwrap(), SERVER.parse().unwrap(), target)
}

#[test]
fn invite_gets_100_at_once_and_retransmissions_are_absorbed() {
    let mut w = World::new();
    let invite = w.send_invite();
    assert_eq!(w.statuses(), [100]);
    // Retransmitted before the answer: the 100 again, no second call.
    w.advance(Duration::from_millis(500));
    w.send(invite.clone());
    assert_eq!(w.statuses(), [100, 100]);
    let calls = w
        .events
        .iter()
        .filter(|e| matches!(e, Event::IncomingCall(_)))
        .count();
    assert_eq!(calls, 1);
    w.accept();
    assert_eq!(w.statuses(), [100, 100, 200]);
    // Retransmitted after the answer: the 200 again.
    w.send(invite.clone());
    assert_eq!(w.statuses(), [100, 100, 200, 200]);
    assert_eq!(w.ep.active_calls(), 1);
    let ok = w.received(2);
    assert!(header(&ok, HeaderName::To).contains(";tag="));
    assert!(ok.values(HeaderName::Contact).next().is_some());
    assert_eq!(
        ok.values(HeaderName::ContentType).next(),
        Some("application/sdp")
    );
    assert!(matches!(w.events.last(), Some(Event::Media { .. })));
    // Once the 200 is ACKed, a late copy is absorbed (RFC 6026 Accepted state).
    w.ack_the_200("");
    w.send(invite);
    assert_eq!(w.statuses(), [100, 100, 200, 200]);
    assert_eq!(w.ep.active_calls(), 1);
}

#[test]
fn the_200_is_retransmitted_doubling_to_t2_until_the_ack() {
    let mut w = World::new();
    w.send_invite();
    w.accept();
    w.advance(Duration::from_millis(11_600));
    let times: Vec<u128> = w
        .inbox
        .iter()
        .filter(|(_, t)| status(&t.payload) == 200)
        .map(|(at, _)| at.as_millis())
        .collect();
    assert_eq!(times, [0, 500, 1_500, 3_500, 7_500, 11_500]);
    w.ack_the_200("");
    w.inbox.clear();
    w.advance(Duration::from_secs(60));
    assert!(w.inbox.is_empty(), "no retransmission after the ACK");
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    );
}

#[test]
fn no_ack_means_bye_after_64_t1() {
    let mut w = World::new();
    w.send_invite();
    w.accept();
    w.advance(Duration::from_secs(33));
    let (at, bye) = w.bye();
    assert_eq!(at, Duration::from_secs(32));
    assert_eq!(bye.destination, CALLER.parse().unwrap());
    assert_eq!(w.answer_the_bye(), Some(EndReason::NoAck));
    assert!(w.ep.is_idle());
}

/// A call never ACKed counts as such even when its time limit came first.
#[test]
fn no_ack_is_the_reason_even_past_a_shorter_call_limit() {
    let mut w = World::with_config(|c| c.max_call_duration = Duration::from_secs(4));
    w.send_invite();
    w.accept();
    w.advance(Duration::from_secs(33));
    assert_eq!(w.answer_the_bye(), Some(EndReason::NoAck));
    assert!(w.ep.is_idle());
}

/// A call never ACKed when the server stopped ended for the stop (its BYE waits for the
/// ACK, which does not come), as every other call then does: not for the missing ACK.
#[test]
fn a_shutdown_waiting_for_the_ack_ends_the_call_for_the_shutdown() {
    let mut w = World::new();
    w.send_invite();
    w.accept();
    w.advance(Duration::from_secs(1));
    w.ep.shutdown(w.now);
    w.pump();
    w.advance(Duration::from_secs(33));
    assert_eq!(w.answer_the_bye(), Some(EndReason::Shutdown));
    assert!(w.ep.is_idle());
}

/// Behind a proxy that does not Record-Route, the caller ACKs straight to our Contact
/// (RFC 3261 §12.2.1.1: no route set): our BYE goes to the caller, where its ACK came from,
/// not to the proxy, which need not take it. Behind one that does, the BYE goes to the
/// proxy with the Route, as the ACK did.
#[test]
fn the_bye_goes_to_the_caller_when_the_proxy_is_not_on_the_route() {
    let proxy: SocketAddr = "127.0.0.2:5070".parse().unwrap();
    for record_route in [false, true] {
        let mut w = World::new();
        let offer = w.uac.offer("sendrecv");
        let mut invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replacen(
            "Via: ",
            "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKproxy1\r\nVia: ",
            1,
        );
        if record_route {
            invite = invite.replacen(
                "Max-Forwards: ",
                "Record-Route: <sip:127.0.0.2:5070;lr>\r\nMax-Forwards: ",
                1,
            );
        }
        w.send_from(proxy, invite.into_bytes());
        let call = w.accept();
        let ok = w
            .inbox
            .iter()
            .rev()
            .find(|(_, t)| status(&t.payload) == 200);
        assert_eq!(ok.unwrap().1.destination, proxy, "the 200 goes by the Via");
        w.uac.learn_tag(&parse(&ok.unwrap().1.payload));
        let ack = w.uac.ack_2xx("");
        if record_route {
            w.send_from(proxy, ack);
        } else {
            w.send(ack);
        }
        w.hangup(call);
        let (_, bye) = w.bye();
        let expected = if record_route { proxy } else { w.uac.local };
        assert_eq!(bye.destination, expected, "record-route: {record_route}");
        let routes: Vec<String> = parse(&bye.payload)
            .values(HeaderName::Route)
            .map(str::to_owned)
            .collect();
        assert_eq!(routes.is_empty(), !record_route, "{routes:?}");
    }
}

#[test]
fn cancel_before_the_answer_gets_200_and_487() {
    let mut w = World::new();
    w.send_invite();
    let cancel = w.uac.cancel();
    w.send(cancel);
    assert_eq!(w.statuses(), [100, 200, 487]);
    assert_eq!(
        w.received(1).values(HeaderName::CSeq).next(),
        Some("1 CANCEL")
    );
    assert_eq!(w.ended(), Some(EndReason::Cancelled));
    // The 487 is retransmitted until its ACK.
    w.advance(Duration::from_millis(600));
    assert_eq!(w.statuses().last(), Some(&487));
    let ack = w.uac.ack_error();
    w.send(ack);
    let before = w.inbox.len();
    w.advance(Duration::from_secs(40));
    assert_eq!(w.inbox.len(), before, "the ACK stopped the 487");
    let call = w.incoming();
    assert!(w.ep.accept(call, MEDIA.parse().unwrap(), w.now).is_err());
}

#[test]
fn cancel_racing_the_200_leaves_the_call_up() {
    let mut w = World::new();
    w.send_invite();
    w.accept();
    let cancel = w.uac.cancel();
    w.send(cancel);
    // §9.2: the CANCEL is answered 200 but has no effect on an answered INVITE.
    assert_eq!(w.statuses(), [100, 200, 200]);
    assert_eq!(
        w.received(2).values(HeaderName::CSeq).next(),
        Some("1 CANCEL")
    );
    assert_eq!(w.ended(), None);
    assert_eq!(w.ep.active_calls(), 1);
    // A CANCEL for nothing: 481.
    let mut stranger = caller_at("127.0.0.1:5099", "8500");
    let _ = stranger.invite("");
    w.send_from(stranger.local, stranger.cancel());
    assert_eq!(w.statuses().last(), Some(&481));
}

#[test]
fn our_bye_is_retransmitted_through_loss_and_ends_on_200() {
    let mut w = World::new();
    let call = w.establish();
    w.lossy = true;
    w.hangup(call);
    w.advance(Duration::from_millis(3_600));
    w.lossy = false;
    w.advance(Duration::from_millis(4_000));
    let byes: Vec<(Duration, Transmit)> = w.inbox.clone();
    assert_eq!(byes.len(), 1, "the retransmission at 7.5 s got through");
    assert_eq!(byes[0].0, Duration::from_millis(7_500));
    let bye = parse(&byes[0].1.payload);
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(
        bye.request_uri(),
        Some(format!("sip:1001@{CALLER}").as_str())
    );
    assert!(header(&bye, HeaderName::To).contains(&w.uac.from_tag));
    w.send(Uac::ok_to(&bye));
    assert_eq!(w.ended(), Some(EndReason::Hangup));
    assert!(w.ep.is_idle());
}

#[test]
fn a_bye_nobody_answers_ends_with_timer_f() {
    let mut w = World::new();
    let call = w.establish();
    w.lossy = true;
    w.hangup(call);
    // The session is over once the BYE is sent (§15.1.1): the application hears so at once,
    // and its media stops, though the BYE is retransmitted until Timer F.
    assert_eq!(w.ended(), Some(EndReason::Hangup));
    w.advance(Duration::from_millis(31_900));
    assert!(!w.ep.is_idle(), "the BYE is still being retransmitted");
    w.advance(Duration::from_millis(200));
    assert!(w.ep.is_idle());
    let ended = w
        .events
        .iter()
        .filter(|e| matches!(e, Event::Ended { .. }))
        .count();
    assert_eq!(ended, 1, "told once");
}

#[test]
fn a_call_whose_bye_goes_unanswered_frees_its_place_at_once() {
    let mut w = World::with_config(|c| c.max_calls = 1);
    let call = w.establish();
    w.lossy = true;
    w.hangup(call);
    assert_eq!(w.ep.active_calls(), 0, "over once the BYE is sent");
    w.lossy = false;
    // While that BYE is retransmitted, a new caller gets in.
    let mut second = caller_at("127.0.0.1:5064", "8500");
    w.invite_from(&mut second);
    assert_eq!(w.statuses().last(), Some(&100));
    let next = w.latest_incoming();
    assert_ne!(next, call);
    w.ep.accept(next, MEDIA.parse().unwrap(), w.now).unwrap();
    w.pump();
    let ok = w.last_received();
    assert_eq!(ok.status(), Some(200));
    second.learn_tag(&ok);
    let ack = second.ack_2xx("");
    w.send_from(second.local, ack);
    assert_eq!(w.ep.active_calls(), 1);
    // and the limit holds for the one after it.
    let mut third = caller_at("127.0.0.1:5066", "8500");
    w.invite_from(&mut third);
    assert_eq!(w.statuses().last(), Some(&503));
    // Calls still sending their BYE are bounded too, at max_calls again: with one ending and
    // one up, the second ending fills that, so a caller is refused until Timer F frees it.
    w.lossy = true;
    w.hangup(next);
    w.lossy = false;
    assert_eq!(w.ep.active_calls(), 0);
    let mut fourth = caller_at("127.0.0.1:5068", "8500");
    w.invite_from(&mut fourth);
    assert_eq!(w.statuses().last(), Some(&503));
    w.advance(Duration::from_secs(33));
    assert!(w.ep.is_idle());
    let mut fifth = caller_at("127.0.0.1:5070", "8500");
    w.invite_from(&mut fifth);
    assert_eq!(w.statuses().last(), Some(&100));
}

#[test]
fn their_bye_ends_the_call_and_retransmissions_get_the_same_200() {
    let mut w = World::new();
    w.establish();
    let bye = w.uac.request("BYE", "", "");
    w.send(bye.clone());
    assert_eq!(w.statuses(), [200]);
    assert_eq!(w.ended(), Some(EndReason::RemoteBye));
    w.send(bye);
    assert_eq!(
        w.statuses(),
        [200, 200],
        "absorbed by the transaction, not 481"
    );
    assert_eq!(w.ep.active_calls(), 0);
}

#[test]
fn reinvite_hold_and_unhold_answer_with_the_right_direction() {
    let mut w = World::new();
    w.establish();
    let hold = w.uac.offer("sendonly");
    let reinvite = w.uac.invite(&hold);
    w.send(reinvite.clone());
    assert_eq!(w.statuses(), [200]);
    let answer = w.received(0);
    let body = String::from_utf8_lossy(answer.body()).into_owned();
    assert!(body.contains("a=recvonly"), "{body}");
    assert!(
        body.contains("o=vportal ") && body.contains(" 2 IN IP4 127.0.0.1"),
        "version bumped: {body}"
    );
    w.ack_the_200("");
    // A late copy of the ACKed re-INVITE is absorbed.
    w.send(reinvite);
    assert_eq!(w.statuses(), [200]);
    let unhold = w.uac.offer("sendrecv");
    let reinvite = w.uac.invite(&unhold);
    w.send(reinvite);
    let body = String::from_utf8_lossy(w.received(1).body()).into_owned();
    assert!(body.contains("a=sendrecv"), "{body}");
    w.ack_the_200("");
    assert_eq!(
        w.media(),
        [
            Direction::SendRecv,
            Direction::RecvOnly,
            Direction::SendRecv
        ]
    );
    // A re-INVITE while the previous one is un-ACKed: 491.
    let again = w.uac.offer("inactive");
    let reinvite = w.uac.invite(&again);
    w.send(reinvite);
    let again2 = w.uac.offer("sendrecv");
    let second = w.uac.invite(&again2);
    w.send(second);
    assert_eq!(w.statuses()[2..], [200, 491]);
}

/// A phone toggling hold, each re-INVITE answered and ACKed at once: every one gets its
/// 200. (An accepted re-INVITE's transaction lives on for 32 s after its ACK, RFC 6026,
/// but then keeps only its key: it must not count as one that may be sent again.)
#[test]
fn a_phone_may_hold_and_resume_as_often_as_it_likes() {
    let mut w = World::new();
    w.establish();
    for n in 0..40 {
        let direction = if n % 2 == 0 { "sendonly" } else { "sendrecv" };
        let offer = w.uac.reoffer(direction, n + 2);
        let reinvite = w.uac.invite(&offer);
        w.inbox.clear();
        w.send(reinvite);
        assert_eq!(
            w.statuses(),
            [200],
            "re-INVITE {n}: {}",
            w.last_status_line()
        );
        w.ack_the_200("");
        w.advance(Duration::from_millis(300));
    }
}

/// A re-INVITE is held to what the first INVITE is: its Accept and Content-Encoding are
/// read, and a 415 says what is understood (RFC 3261 §8.2.3). The call stays up.
#[test]
fn a_reinvite_gets_the_content_checks_of_the_first_invite() {
    let mut w = World::new();
    w.establish();
    let offer = w.uac.offer("sendrecv");
    let gzipped = with_header(w.uac.invite(&offer), "Content-Encoding: gzip\r\n");
    w.send(gzipped);
    assert_eq!(w.last_status_line(), "SIP/2.0 415 Unsupported Media Type");
    let refusal = w.last_received();
    assert_eq!(header(&refusal, HeaderName::AcceptEncoding), "identity");
    assert_eq!(
        header(&refusal, HeaderName::Accept),
        "application/sdp, multipart/mixed"
    );
    let text_only = with_header(w.uac.invite(&offer), "Accept: text/plain\r\n");
    w.send(text_only);
    assert_eq!(w.last_status_line(), "SIP/2.0 406 Not Acceptable");
    let early = with_header(
        w.uac.invite(&offer),
        "Content-Disposition: early-session\r\n",
    );
    w.send(early);
    assert_eq!(
        w.last_status_line(),
        "SIP/2.0 415 Unsupported Content-Disposition"
    );
    assert_eq!(
        header(&w.last_received(), HeaderName::Accept),
        "application/sdp, multipart/mixed"
    );
    let plain = w.uac.invite(&offer);
    w.send(plain);
    assert_eq!(w.last_received().status(), Some(200));
    assert_eq!(w.ep.active_calls(), 1);
}

/// Every Content-Encoding value counts (the header is a list, and may be repeated), and an
/// UPDATE's body is held to it as an INVITE's is (RFC 3261 §20.12).
#[test]
fn an_encoded_body_gets_415_however_the_encoding_is_written() {
    let mut w = World::new();
    w.establish();
    let offer = w.uac.offer("sendrecv");
    for line in [
        "Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n",
        "Content-Encoding: identity, gzip\r\n",
        "e: gzip\r\n",
    ] {
        let invite = with_header(w.uac.invite(&offer), line);
        w.send(invite);
        let status = w.last_status_line();
        assert_eq!(status, "SIP/2.0 415 Unsupported Media Type", "{line:?}");
    }
    let update = w.uac.request("UPDATE", "application/sdp", &offer);
    w.send(with_header(update, "Content-Encoding: gzip\r\n"));
    assert_eq!(w.last_status_line(), "SIP/2.0 415 Unsupported Media Type");
    let info = w.uac.request(
        "INFO",
        "application/dtmf-relay",
        "Signal=5\r\nDuration=160\r\n",
    );
    w.send(with_header(info, "Content-Encoding: gzip\r\n"));
    assert_eq!(w.last_status_line(), "SIP/2.0 415 Unsupported Media Type");
    // RFC 3261 §21.4.13: the 415 says which encodings are understood.
    assert_eq!(
        header(&w.last_received(), HeaderName::AcceptEncoding),
        "identity"
    );
    let identity = with_header(w.uac.invite(&offer), "Content-Encoding: identity\r\n");
    w.send(identity);
    assert_eq!(w.last_received().status(), Some(200));
    assert_eq!(w.ep.active_calls(), 1);
}

/// A list or routing header whose value is not UTF-8 is malformed (400), not skipped: a
/// Require skipped would accept an extension vportal lacks, a Via skipped would leave the
/// response's Via list short of the request's.
#[test]
fn a_list_header_that_is_not_utf8_gets_400() {
    let with_bytes = |request: Vec<u8>, line: &[u8]| {
        let mark = b"Max-Forwards: 70\r\n";
        let at = request.windows(mark.len()).position(|w| w == mark).unwrap() + mark.len();
        [&request[..at], line, &request[at..]].concat()
    };
    for line in [
        &b"Require: 100rel\xff\r\n"[..],
        b"Proxy-Require: x\xfe\r\n",
        b"Via: SIP/2.0/UDP p\xff.example;branch=z9hG4bKbad\r\n",
        b"Record-Route: <sip:p\xff@192.0.2.1;lr>\r\n",
        b"Info-Package: dtmf\xff\r\n",
        b"Accept: application/sdp\xff\r\n",
        b"P-Asserted-Identity: <sip:1001\xff@192.0.2.1>\r\n",
    ] {
        let mut w = World::new();
        let offer = w.uac.offer("sendrecv");
        let invite = with_bytes(w.uac.invite(&offer), line);
        w.send(invite);
        let status = w.last_status_line();
        assert!(
            status.starts_with("SIP/2.0 400 Malformed"),
            "{}: {status}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(w.ep.active_calls(), 0);
    }
}

/// A top Via that is not UTF-8 cannot be answered: the Via after it would be taken for the
/// sender's, and a 400 would go to its port with a Via list the sender does not know.
#[test]
fn a_top_via_that_is_not_utf8_is_dropped() {
    let mut w = World::new();
    let offer = w.uac.offer("sendrecv");
    let invite = w.uac.invite(&offer);
    let at = invite.windows(4).position(|w| w == b"Via:").unwrap();
    let line = b"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK\xff\r\n";
    let invite = [&invite[..at], &line[..], &invite[at..]].concat();
    w.send(invite);
    assert_eq!(w.statuses(), Vec::<u16>::new());
    assert_eq!(w.ep.active_calls(), 0);
    // Without that line the same caller's INVITE is taken.
    let offer = w.uac.offer("sendrecv");
    let invite = w.uac.invite(&offer);
    w.send(invite);
    assert_eq!(w.statuses(), [100]);
}

#[test]
fn update_answers_offers_and_refreshes() {
    let mut w = World::new();
    w.establish();
    let offer = w.uac.offer("inactive");
    let update = w.uac.request("UPDATE", "application/sdp", &offer);
    w.send(update);
    let refresh = w.uac.request("UPDATE", "", "");
    w.send(refresh);
    assert_eq!(w.statuses(), [200, 200]);
    assert!(String::from_utf8_lossy(w.received(0).body()).contains("a=inactive"));
    assert!(w.received(1).body().is_empty());
    assert_eq!(w.media().last(), Some(&Direction::Inactive));
}

#[test]
fn info_in_the_dialog_reaches_the_application() {
    let mut w = World::new();
    let call = w.establish();
    let info = w.uac.request(
        "INFO",
        "application/dtmf-relay",
        "Signal=5\r\nDuration=160\r\n",
    );
    w.send(info);
    assert_eq!(w.statuses(), [200]);
    let got = w.events.iter().find_map(|e| match e {
        Event::Info {
            call: c,
            content_type,
            body,
        } => Some((*c, content_type.clone(), body.clone())),
        _ => None,
    });
    assert_eq!(
        got,
        Some((
            call,
            "application/dtmf-relay".to_owned(),
            b"Signal=5\r\nDuration=160\r\n".to_vec()
        ))
    );
    let odd = w.uac.request("INFO", "text/plain", "hello");
    w.send(odd);
    assert_eq!(w.statuses().last(), Some(&415));
    let infos = |w: &World| {
        w.events
            .iter()
            .filter(|e| matches!(e, Event::Info { .. }))
            .count()
    };
    // A DTMF body with extra header fields, sent by this caller.
    let info_with = |w: &mut World, extra: &str| {
        let info = String::from_utf8(w.uac.request(
            "INFO",
            "application/dtmf-relay",
            "Signal=1\r\nDuration=160\r\n",
        ))
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{extra}"),
            1,
        );
        w.send(info.into_bytes());
        w.last_received()
    };
    // RFC 6086: an Info Package vportal never offered: 469 naming none.
    let r = info_with(&mut w, "Info-Package: foo\r\n");
    assert_eq!(r.status(), Some(469));
    let recv_info: Vec<_> = r
        .fields()
        .filter(|(_, name, _)| name.eq_ignore_ascii_case("Recv-Info"))
        .map(|(_, _, value)| value)
        .collect();
    assert_eq!(recv_info, [Some("")]);
    // A disposition it does not act on, required by default: 415 (RFC 5621 §9).
    for disposition in [
        "alert",
        "alert;handling=required",
        "icon; handling=\"required\"",
    ] {
        let extra = format!("Content-Disposition: {disposition}\r\n");
        assert_eq!(
            info_with(&mut w, &extra).status(),
            Some(415),
            "{disposition}"
        );
    }
    assert_eq!(infos(&w), 1, "none of those reached the application");
    for disposition in ["render", "Info-Package"] {
        let extra = format!("Content-Disposition: {disposition}\r\n");
        assert_eq!(
            info_with(&mut w, &extra).status(),
            Some(200),
            "{disposition}"
        );
    }
    assert_eq!(infos(&w), 3);
    // One it does not act on, marked optional: 200, and the body is ignored, as is an
    // unknown type in such a body.
    let optional = "Content-Disposition: alert;handling=optional\r\n";
    assert_eq!(info_with(&mut w, optional).status(), Some(200));
    let odd = with_header(w.uac.request("INFO", "text/plain", "hello"), optional);
    w.send(odd);
    assert_eq!(w.last_received().status(), Some(200));
    // A type it does not read, in a disposition it knows, marked optional: ignored too.
    let render = "Content-Disposition: render;handling=optional\r\n";
    let odd = with_header(w.uac.request("INFO", "text/plain", "hello"), render);
    w.send(odd);
    assert_eq!(w.last_received().status(), Some(200));
    assert_eq!(infos(&w), 3, "ignored bodies do not reach the application");
    let options = w.uac.request("OPTIONS", "", "");
    w.send(options);
    let ok = w.last_received();
    assert_eq!(ok.status(), Some(200));
    assert!(header(&ok, HeaderName::Allow).contains("INFO"));
}

#[test]
fn wrong_tags_and_stale_cseqs() {
    let mut w = World::new();
    w.establish();
    let right = w.uac.to_tag.clone();
    w.uac.to_tag = Some("not-ours".into());
    let bye = w.uac.request("BYE", "", "");
    w.send(bye);
    assert_eq!(w.statuses(), [481]);
    w.uac.to_tag = right;
    // A lower CSeq than already seen (not a retransmission): 500.
    w.uac.cseq = 0;
    let info = w.uac.request("INFO", "", "");
    w.send(info);
    assert_eq!(w.statuses(), [481, 500]);
    assert_eq!(w.ep.active_calls(), 1);
    // The Request-URI does not identify the dialog: tags and Call-ID do.
    w.uac.target = "somebody-else".into();
    w.uac.cseq = 10;
    let bye = w.uac.request("BYE", "", "");
    w.send(bye);
    assert_eq!(w.statuses().last(), Some(&200));
}

/// A re-INVITE out of order is 500 even while another waits for its ACK (the CSeq rule,
/// §12.2.2, comes before 491); one after our BYE is 481 (§15: the dialog is over for us).
#[test]
fn requests_out_of_order_or_after_our_bye() {
    let mut w = World::new();
    let call = w.establish();
    let offer = w.uac.offer("sendrecv");
    let reinvite = w.uac.invite(&offer);
    w.send(reinvite);
    assert_eq!(w.statuses(), [200]);
    // Not ACKed yet: a second one, in order, is 491; one with a lower CSeq is 500.
    let in_order = w.uac.invite(&offer);
    w.send(in_order);
    w.uac.cseq = 1;
    let stale = w.uac.invite(&offer);
    w.send(stale);
    assert_eq!(w.statuses(), [200, 491, 500]);
    // (The stale one reused the first's CSeq number, which the ACK carries.)
    w.ack_the_200("");
    w.inbox.clear();
    w.hangup(call);
    assert_eq!(w.last_received().method(), Some(&Method::Bye));
    w.uac.cseq = 10;
    let late = w.uac.invite(&offer);
    w.send(late);
    assert_eq!(
        w.last_status_line(),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
    // So is any other in-dialog request: an UPDATE (its answer would name an RTP port
    // already freed), an INFO, an OPTIONS (RFC 5407 §3.2.1); a crossing BYE gets 200.
    for (method, content_type, body) in [
        ("UPDATE", "application/sdp", offer.as_str()),
        (
            "INFO",
            "application/dtmf-relay",
            "Signal=5\r\nDuration=160\r\n",
        ),
        ("OPTIONS", "", ""),
        ("BYE", "", ""),
    ] {
        let late = w.uac.request(method, content_type, body);
        w.send(late);
        let expected = if method == "BYE" {
            "SIP/2.0 200 OK"
        } else {
            "SIP/2.0 481 Call/Transaction Does Not Exist"
        };
        assert_eq!(w.last_status_line(), expected, "{method}");
    }
    assert!(
        !w.events.iter().any(|e| matches!(e, Event::Info { .. })),
        "a key after our BYE went to the application"
    );
}

#[test]
fn late_offer_puts_our_offer_in_the_200_and_takes_the_answer_from_the_ack() {
    let mut w = World::new();
    let invite = w.uac.invite("");
    w.send(invite);
    w.accept();
    let ok = w.received(1);
    let offer = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(offer.contains("m=audio 10000 RTP/AVP 0 8 101"), "{offer}");
    assert!(w.media().is_empty(), "nothing agreed before the ACK");
    // An UPDATE with an offer of its own crosses ours (RFC 3311 §5.2): 491. Without a body
    // it is a refresh, and fine.
    w.uac.learn_tag(&ok);
    let crossing = w.uac.offer("sendrecv");
    let update = w.uac.request("UPDATE", "application/sdp", &crossing);
    w.send(update);
    let refresh = w.uac.request("UPDATE", "", "");
    w.send(refresh);
    assert_eq!(w.statuses()[2..], [491, 200]);
    assert!(w.media().is_empty());
    // The caller answers PCMA at 30 ms, the second codec we offered.
    let answer = w
        .uac
        .answer()
        .replace("RTP/AVP 0 101", "RTP/AVP 8 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000\r\na=ptime:30");
    w.ack_the_200(&answer);
    assert_eq!(w.media(), [Direction::SendRecv]);
    // A re-INVITE without SDP (a session refresh) gets our offer again: keeping what the
    // answer agreed, PCMA first (an answerer taking the first keeps it) and 30 ms.
    w.inbox.clear();
    let refresh = w.uac.invite("");
    w.send(refresh);
    assert_eq!(w.statuses(), [200]);
    let reoffer = String::from_utf8_lossy(w.received(0).body()).into_owned();
    assert!(
        reoffer.contains("m=audio 10000 RTP/AVP 8 0 101"),
        "{reoffer}"
    );
    assert!(reoffer.contains("a=ptime:30\r\n"), "{reoffer}");
    // An ACK without the answer ends the call.
    let mut w = World::new();
    let invite = w.uac.invite("");
    w.send(invite);
    w.accept();
    w.ack_the_200("");
    assert_eq!(w.last_received().method(), Some(&Method::Bye));
    // So does an answer no RTP could reach: IPv6 to a server on IPv4, or a host name.
    for (from, to) in [
        ("IN IP4 127.0.0.1", "IN IP6 ::1"),
        ("127.0.0.1", "pbx.invalid"),
    ] {
        let mut w = World::new();
        let invite = w.uac.invite("");
        w.send(invite);
        w.accept();
        let answer = w.uac.answer().replace(from, to);
        w.ack_the_200(&answer);
        assert_eq!(w.last_received().method(), Some(&Method::Bye), "{to}");
        assert!(w.media().is_empty(), "{to}");
    }
}

/// A re-INVITE without SDP gets our offer in the 200 (the answer comes in the ACK). RFC 3264
/// §8: that offer lists every stream of our last description in its place (here the
/// caller's video, rejected, first), and telephone-event keeps the number agreed (100).
/// Before, it held only the audio stream, on 101: peers refuse that (488), or take our
/// audio for their video.
#[test]
fn a_reinvite_without_sdp_is_offered_every_stream_in_its_place() {
    let mut w = World::new();
    let sdp = w.uac.offer("sendrecv");
    let (session, audio) = sdp.split_at(sdp.find("m=audio").unwrap());
    let audio = audio.replace("101", "100");
    let offer = format!("{session}m=video 10002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n{audio}");
    assert!(offer.contains("telephone-event"), "{offer}");
    let invite = w.uac.invite(&offer);
    w.send(invite);
    w.accept();
    let ok = w.received(1);
    w.uac.learn_tag(&ok);
    w.ack_the_200("");
    let answer = String::from_utf8_lossy(ok.body()).into_owned();
    let lines = |sdp: &str| -> Vec<String> {
        sdp.lines()
            .filter(|l| l.starts_with("m="))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        lines(&answer),
        ["m=video 0 RTP/AVP 96", "m=audio 10000 RTP/AVP 0 100"]
    );

    let reinvite = w.uac.invite("");
    w.send(reinvite);
    let ok = w.last_received();
    assert_eq!(ok.status(), Some(200));
    let ours = String::from_utf8_lossy(ok.body()).into_owned();
    assert_eq!(
        lines(&ours),
        ["m=video 0 RTP/AVP 96", "m=audio 10000 RTP/AVP 0 8 100"],
        "{ours}"
    );
    assert!(ours.contains("a=rtpmap:100 telephone-event/8000"), "{ours}");
    assert!(
        ours.contains(" 2 IN IP4 127.0.0.1"),
        "version bumped: {ours}"
    );
    // Their answer, in the ACK, keeps the places too: the audio is taken from it.
    let theirs = format!("{session}m=video 0 RTP/AVP 96\r\n{audio}");
    w.ack_the_200(&theirs);
    assert_eq!(w.media(), [Direction::SendRecv, Direction::SendRecv]);
    // Read as the answer to that offer: 100 is ours as well as theirs, and 101 nothing.
    let Some(Event::Media { media, .. }) = w.events.last() else {
        panic!("no media event: {:?}", w.events)
    };
    assert_eq!(
        (media.telephone_event, media.telephone_event_ours),
        (Some(100), None)
    );
}

/// SIP-I and SIP-T trunks (RFC 3204) send the offer in a `multipart/mixed` body next to an
/// ISUP message marked `handling=optional`: the SDP part is the offer (RFC 5621). An ISUP
/// part whose handling is required (the default) gets 415 naming what is accepted; a
/// multipart body without its delimiters gets 400. Before, every multipart INVITE got 415.
#[test]
fn a_sip_i_invite_offers_its_sdp_part() {
    let multipart = |request: Vec<u8>| {
        String::from_utf8(request)
            .unwrap()
            .replacen(
                "Content-Type: application/sdp",
                "Content-Type: multipart/mixed;boundary=\"unique-boundary-1\"",
                1,
            )
            .into_bytes()
    };
    let body = |sdp: &str, isup: &str| {
        format!(
            "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
             --unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n{isup}\
             \r\n\x01\x00\x49\x00\x00\x03\x02\x00\x07\r\n--unique-boundary-1--\r\n"
        )
    };
    let mut w = World::new();
    let sdp = w.uac.offer("sendrecv");
    let optional = body(&sdp, "Content-Disposition: signal;handling=optional\r\n");
    let invite = multipart(w.uac.invite(&optional));
    w.send(invite);
    w.accept();
    let ok = w.received(1);
    assert_eq!(ok.status(), Some(200));
    assert!(String::from_utf8_lossy(ok.body()).contains("m=audio 10000 RTP/AVP 0 101"));
    assert_eq!(
        w.media(),
        [Direction::SendRecv],
        "the SDP part was the offer"
    );
    // So with the ISUP part's disposition folded over two lines.
    let mut w = World::new();
    let folded = body(
        &sdp,
        "Content-Disposition: signal;\r\n handling=optional\r\n",
    );
    let invite = multipart(w.uac.invite(&folded));
    w.send(invite);
    w.accept();
    assert_eq!(w.media(), [Direction::SendRecv]);

    for (body, status) in [
        (body(&sdp, ""), "SIP/2.0 415 Unsupported Media Type"),
        (
            body(&sdp, "Content-Disposition: signal\r\n"),
            "SIP/2.0 415 Unsupported Content-Disposition",
        ),
        (
            sdp.clone(),
            "SIP/2.0 400 Malformed body: multipart body without its delimiters",
        ),
    ] {
        let mut w = World::new();
        let invite = multipart(w.uac.invite(&body));
        w.send(invite);
        assert_eq!(w.last_status_line(), status);
        if status.contains("415") {
            assert_eq!(
                header(&w.last_received(), HeaderName::Accept),
                "application/sdp, multipart/mixed"
            );
        }
        assert_eq!(w.ep.active_calls(), 0);
    }

    // RFC 2046 §5.1.7: another multipart subtype is read as mixed (the ISUP part must be
    // optional still); of alternatives (§5.1.4) only the SDP one need be understood, and
    // alternatives none of which is are refused.
    let as_subtype = |request: Vec<u8>, subtype: &str| {
        String::from_utf8(multipart(request))
            .unwrap()
            .replacen("multipart/mixed;", &format!("multipart/{subtype};"), 1)
            .into_bytes()
    };
    for (subtype, body, offered) in [
        ("related", optional.clone(), true),
        ("related", body(&sdp, ""), false),
        ("alternative", body(&sdp, ""), true),
        (
            "alternative",
            body("", "").replacen("application/sdp", "text/plain", 1),
            false,
        ),
    ] {
        let mut w = World::new();
        let invite = as_subtype(w.uac.invite(&body), subtype);
        w.send(invite);
        if offered {
            w.accept();
            assert_eq!(w.received(1).status(), Some(200), "{subtype}");
            assert_eq!(w.media(), [Direction::SendRecv], "{subtype}");
        } else {
            assert_eq!(
                w.last_status_line(),
                "SIP/2.0 415 Unsupported Media Type",
                "{subtype}"
            );
            assert_eq!(w.ep.active_calls(), 0);
        }
    }
}

/// RFC 3261 §20.11, RFC 5621 §9: an SDP body whose disposition vportal does not act on,
/// marked `handling=optional`, is ignored: the request is handled as one without a body.
#[test]
fn an_optional_body_it_does_not_understand_is_no_offer() {
    const OPTIONAL: &str = "Content-Disposition: early-session;handling=optional\r\n";
    let mut w = World::new();
    let offer = w.uac.offer("sendrecv");
    let invite = with_header(w.uac.invite(&offer), OPTIONAL);
    w.send(invite);
    w.accept();
    // A late offer then: ours is in the 200, the answer in the ACK.
    let ok = w.received(1);
    assert_eq!(ok.status(), Some(200));
    let ours = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(ours.contains("m=audio 10000 RTP/AVP 0 8 101"), "{ours}");
    assert!(
        w.media().is_empty(),
        "the ignored body was not taken as the offer"
    );
    let answer = w.uac.answer();
    w.ack_the_200(&answer);
    assert_eq!(w.media(), [Direction::SendRecv]);

    // A re-INVITE with one: our offer in its 200, not a recvonly answer to the hold.
    w.inbox.clear();
    let hold = w.uac.offer("sendonly");
    let reinvite = with_header(w.uac.invite(&hold), OPTIONAL);
    w.send(reinvite);
    assert_eq!(w.statuses(), [200]);
    let ours = String::from_utf8_lossy(w.received(0).body()).into_owned();
    assert!(
        ours.contains("a=sendrecv") && !ours.contains("recvonly"),
        "{ours}"
    );
    w.ack_the_200(&answer);
    assert_eq!(w.media(), [Direction::SendRecv, Direction::SendRecv]);

    // An UPDATE with one is a refresh: 200 without a body, media unchanged.
    let update = with_header(w.uac.request("UPDATE", "application/sdp", &hold), OPTIONAL);
    w.send(update);
    assert_eq!(w.last_received().status(), Some(200));
    assert!(w.last_received().body().is_empty());
    assert_eq!(w.media().len(), 2);

    // So is a body of a type it does not read, marked optional.
    let optional_type = "Content-Disposition: session;handling=optional\r\n";
    let update = with_header(
        w.uac.request("UPDATE", "application/foo", "x"),
        optional_type,
    );
    w.send(update);
    assert_eq!(w.last_received().status(), Some(200));
    assert!(w.last_received().body().is_empty());
    assert_eq!(w.media().len(), 2);

    // Required (the default), either is still refused.
    let required = "Content-Disposition: early-session\r\n";
    let update = with_header(w.uac.request("UPDATE", "application/sdp", &hold), required);
    w.send(update);
    assert_eq!(
        w.last_status_line(),
        "SIP/2.0 415 Unsupported Content-Disposition"
    );
    let update = w.uac.request("UPDATE", "application/foo", "x");
    w.send(update);
    assert_eq!(w.last_status_line(), "SIP/2.0 415 Unsupported Media Type");
    // RFC 3261 §8.2.3: a 415 lists what is understood.
    assert_eq!(
        header(&w.last_received(), HeaderName::Accept),
        "application/sdp, multipart/mixed"
    );

    // A late offer's answer in an ACK that is ignored, or would be refused, is no answer:
    // the call ends with BYE.
    for line in [OPTIONAL, "Content-Disposition: early-session\r\n"] {
        let mut w = World::new();
        let invite = w.uac.invite("");
        w.send(invite);
        w.accept();
        let ok = w.received(1);
        w.uac.learn_tag(&ok);
        let answer = w.uac.answer();
        let ack = with_header(w.uac.ack_2xx(&answer), line);
        w.send(ack);
        assert_eq!(w.last_received().method(), Some(&Method::Bye), "{line}");
        assert!(w.media().is_empty(), "{line}");
    }
}

#[test]
fn call_admission() {
    let mut w = World::with_config(|c| c.max_calls = 1);
    w.send_invite();
    // A second caller while the limit is reached: 503 with Retry-After.
    let mut second = caller_at("127.0.0.1:5064", "8500");
    w.invite_from(&mut second);
    let busy = w.last_received();
    assert_eq!(busy.status(), Some(503));
    assert_eq!(busy.values(HeaderName::RetryAfter).next(), Some("5"));
    // The application out of capacity (no free RTP port) refuses a ringing call: 503 with
    // Retry-After too; other refusals carry none.
    let ringing = w.incoming();
    w.ep.reject(ringing, 503, "Service Unavailable", w.now)
        .unwrap();
    w.pump();
    let refused = w.last_received();
    assert_eq!(refused.status(), Some(503));
    assert_eq!(refused.values(HeaderName::RetryAfter).next(), Some("5"));
    let mut third = caller_at("127.0.0.1:5068", "8500");
    w.invite_from(&mut third);
    let ringing = w.latest_incoming();
    w.ep.reject(ringing, 486, "Busy Here", w.now).unwrap();
    w.pump();
    let busy_here = w.last_received();
    assert_eq!(busy_here.status(), Some(486));
    assert_eq!(busy_here.values(HeaderName::RetryAfter).next(), None);
    // Unknown number: 404 (routing comes before admission).
    let mut lost = caller_at("127.0.0.1:5066", "9999");
    w.invite_from(&mut lost);
    assert_eq!(w.statuses().last(), Some(&404));
    // No codec in common: 488 with Accept, and a Warning saying why (RFC 3261 §20.43), our
    // address the warn-agent.
    let mut w = World::new();
    let sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n";
    let invite = w.uac.invite(sdp);
    w.send(invite);
    let r = w.last_received();
    assert_eq!(r.status(), Some(488));
    assert_eq!(
        header(&r, HeaderName::Warning),
        format!("305 {SERVER} \"no common codec: vportal speaks PCMU or PCMA over RTP/AVP\"")
    );
    assert_eq!(w.ep.active_calls(), 0);
    // Each reason has its code: SRTP only, no audio (T.38 fax alone).
    for (media, code) in [
        ("m=audio 4000 RTP/SAVP 0", "302 "),
        ("m=image 4000 udptl t38", "304 "),
    ] {
        let invite = w.uac.invite(&sdp.replace("m=audio 4000 RTP/AVP 18", media));
        w.send(invite);
        let r = w.last_received();
        assert_eq!(r.status(), Some(488), "{media}");
        assert!(
            header(&r, HeaderName::Warning).starts_with(code),
            "{media}: {r:?}"
        );
    }
}

#[test]
fn stateless_answers_leave_no_state() {
    let mut w = World::new();
    for i in 0..1_000 {
        let mut u = Uac::new(
            SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
            SERVER.parse().unwrap(),
            "8500",
        );
        let options = u.request("OPTIONS", "", "");
        w.ep.handle_datagram(w.now, u.local, options);
    }
    w.pump();
    assert_eq!(w.inbox.len(), 1_000);
    assert!(w.statuses().iter().all(|s| *s == 200));
    assert_eq!(w.ep.poll_timeout(), None, "no timers: nothing was kept");
    assert!(w.ep.is_idle());
    let ok = w.received(0);
    assert!(header(&ok, HeaderName::Accept).contains("application/sdp"));
    assert!(ok.values(HeaderName::Supported).next().is_some());
}

/// RFC 3261 §11.2: an OPTIONS outside a dialog gets what an INVITE would: 503 with
/// Retry-After while the server is full or stopping, so that a proxy's or load balancer's
/// pings take it out of rotation, and 200 otherwise.
#[test]
fn options_gets_what_an_invite_would() {
    let mut w = World::with_config(|c| c.max_calls = 1);
    let ping = |w: &mut World| -> (u16, Option<String>) {
        let mut pinger = caller_at("127.0.0.1:5090", "");
        w.inbox.clear();
        w.send_from(pinger.local, pinger.request("OPTIONS", "", ""));
        let answer = w.last_received();
        let retry = answer
            .values(HeaderName::RetryAfter)
            .next()
            .map(str::to_owned);
        assert!(header(&answer, HeaderName::Allow).contains("INVITE"));
        (answer.status().unwrap(), retry)
    };
    assert_eq!(ping(&mut w), (200, None), "ready");
    let call = w.establish();
    assert_eq!(ping(&mut w), (503, Some("5".into())), "full");
    // In the dialog, the call's own OPTIONS is still answered 200.
    w.inbox.clear();
    let in_dialog = w.uac.request("OPTIONS", "", "");
    w.send(in_dialog);
    assert_eq!(w.statuses(), [200]);
    w.hangup(call);
    w.answer_the_bye();
    assert_eq!(ping(&mut w), (200, None), "a place again");
    w.ep.shutdown(w.now);
    assert_eq!(ping(&mut w), (503, Some("5".into())), "stopping");
}

/// New calls refused before the application sees them are counted by why, for
/// `vportal_calls_refused_total`: a number with no route, a full server, a source with
/// as many unanswered calls as it may have, a server stopping.
#[test]
fn refused_calls_are_counted_by_why() {
    let mut w = World::with_config(|c| {
        c.max_calls = 2;
        c.max_pending_per_source = 1;
    });
    let call_from = |w: &mut World, at: &str, to: &str| {
        let mut caller = caller_at(at, to);
        let invite = caller.invite(&caller.offer("sendrecv"));
        w.inbox.clear();
        w.send_from(caller.local, invite);
        w.statuses().last().copied()
    };
    assert_eq!(call_from(&mut w, "127.0.0.1:5091", "4040"), Some(404));
    // One unanswered call from .2 is all it may have; .3 may still call.
    assert_eq!(call_from(&mut w, "127.0.0.2:5060", "8500"), Some(100));
    assert_eq!(call_from(&mut w, "127.0.0.2:5062", "8500"), Some(503));
    assert_eq!(call_from(&mut w, "127.0.0.3:5060", "8500"), Some(100));
    // Two calls: full.
    assert_eq!(call_from(&mut w, "127.0.0.4:5060", "8500"), Some(503));
    w.ep.shutdown(w.now);
    assert_eq!(call_from(&mut w, "127.0.0.5:5060", "8500"), Some(503));
    assert_eq!(
        w.ep.stats().refused,
        RefusedCalls {
            no_route: 1,
            full: 1,
            source_limit: 1,
            stopping: 1,
        }
    );
}

/// RFC 3261 §11.2: an OPTIONS answer names the languages prompts are played in, in or out
/// of a dialog, and leaves the header out when it was given none.
#[test]
fn options_name_the_prompt_languages() {
    for (languages, expected) in [("en, fr", Some("en, fr")), ("", None)] {
        let mut w = World::with_config(|c| c.languages = languages.into());
        let mut pinger = caller_at("127.0.0.1:5090", "");
        w.send_from(pinger.local, pinger.request("OPTIONS", "", ""));
        let outside = w.last_received();
        assert_eq!(outside.status(), Some(200));
        let call = w.establish();
        w.inbox.clear();
        let in_dialog = w.uac.request("OPTIONS", "", "");
        w.send(in_dialog);
        let inside = w.last_received();
        assert_eq!(inside.status(), Some(200));
        for answer in [&outside, &inside] {
            let named = answer.values(HeaderName::AcceptLanguage).next();
            assert_eq!(named, expected, "{languages:?}");
        }
        w.hangup(call);
    }
}

#[test]
fn tcp_calls_do_not_retransmit_responses_but_do_retransmit_the_2xx() {
    let mut w = World::new();
    w.uac.transport = "TCP";
    w.send_invite();
    w.accept();
    assert!(
        w.inbox
            .iter()
            .all(|(_, t)| t.transport == Transport::Tcp(ConnId(1)))
    );
    // §13.3.1.4 retransmits the 2xx whatever the transport (the ACK is end to end).
    w.advance(Duration::from_millis(600));
    assert_eq!(w.statuses(), [100, 200, 200]);
    let ok = w.received(1);
    assert!(header(&ok, HeaderName::Contact).contains("transport=tcp"));
    // A re-INVITE on another connection: its 200, and the 200's retransmissions, go back
    // over that connection.
    w.ack_the_200("");
    w.inbox.clear();
    let offer = w.uac.offer("sendrecv");
    let reinvite = vportal::sip::Message::parse_datagram(w.uac.invite(&offer)).unwrap();
    w.ep.handle_message(w.now, Transport::Tcp(ConnId(2)), w.uac.local, reinvite);
    w.pump();
    w.advance(Duration::from_millis(600));
    assert_eq!(w.statuses(), [200, 200]);
    assert!(
        w.inbox
            .iter()
            .all(|(_, t)| t.transport == Transport::Tcp(ConnId(2)))
    );
    // Over TCP, should the connection close, an answer opens a new one to the Via port
    // (§18.2.2), not to the closed connection's ephemeral source port, `rport` or not.
    w.inbox.clear();
    let options = vportal::sip::Message::parse_datagram(w.uac.request("OPTIONS", "", "")).unwrap();
    let ephemeral: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    w.ep.handle_message(w.now, Transport::Tcp(ConnId(3)), ephemeral, options);
    w.pump();
    let (_, answer) = w.inbox.last().unwrap();
    assert_eq!(answer.transport, Transport::Tcp(ConnId(3)));
    assert_eq!(answer.destination, CALLER.parse::<SocketAddr>().unwrap());
}

#[test]
fn max_duration_and_shutdown_hang_up() {
    let mut w = World::with_config(|c| c.max_call_duration = Duration::from_secs(60));
    w.establish();
    w.advance(Duration::from_secs(61));
    let bye = w.last_received();
    assert_eq!(bye.method(), Some(&Method::Bye));
    w.send(Uac::ok_to(&bye));
    assert_eq!(w.ended(), Some(EndReason::MaxDuration));

    let mut w = World::new();
    w.establish();
    w.ep.shutdown(w.now);
    w.pump();
    let bye = w.last_received();
    assert_eq!(bye.method(), Some(&Method::Bye));
    // New calls are refused while shutting down.
    let mut late = caller_at("127.0.0.1:5070", "8500");
    w.invite_from(&mut late);
    assert_eq!(w.statuses().last(), Some(&503));
    w.send(Uac::ok_to(&bye));
    assert_eq!(w.ended(), Some(EndReason::Shutdown));
    assert!(w.ep.is_idle());
}

#[test]
fn hangup_before_the_ack_waits_for_it() {
    let mut w = World::new();
    w.send_invite();
    let call = w.accept();
    w.hangup(call);
    assert!(
        w.inbox
            .iter()
            .all(|(_, t)| parse(&t.payload).method().is_none()),
        "no BYE before the ACK (§15)"
    );
    w.ack_the_200("");
    assert_eq!(w.last_received().method(), Some(&Method::Bye));
    // And hanging up a ringing call answers 480.
    let mut w = World::new();
    w.send_invite();
    let call = w.incoming();
    w.hangup(call);
    assert_eq!(w.statuses(), [100, 480]);
}

#[test]
fn requests_the_uas_refuses() {
    let mut w = World::new();
    // RFC 3262 §3: vportal sends no reliable provisional response, so a PRACK matches none.
    let cases: [(&str, u16); 4] = [
        ("REGISTER", 405),
        ("SUBSCRIBE", 405),
        ("BYE", 481),
        ("PRACK", 481),
    ];
    for (method, code) in cases {
        let req = w.uac.request(method, "", "");
        w.send(req);
        assert_eq!(w.statuses().last(), Some(&code), "{method}");
    }
    // In a dialog too, and the call goes on.
    let call = w.establish();
    w.inbox.clear();
    let prack = w.uac.request("PRACK", "", "");
    w.send(prack);
    assert_eq!(w.statuses(), [481]);
    w.inbox.clear();
    let options = w.uac.request("OPTIONS", "", "");
    w.send(options);
    assert_eq!(w.statuses(), [200]);
    w.hangup(call);
    let mut w = World::new();
    // A SIPS Request-URI needs TLS, which vportal has not: 416.
    let offer = w.uac.offer("sendrecv");
    let invite =
        String::from_utf8(w.uac.invite(&offer))
            .unwrap()
            .replacen("INVITE sip:", "INVITE sips:", 1);
    assert!(invite.starts_with("INVITE sips:"));
    w.send(invite.into_bytes());
    assert_eq!(w.statuses().last(), Some(&416));
    // So does a dialog made secure by a SIPS Contact with no Record-Route, or a SIPS top
    // Record-Route: our Contact would have to be SIPS (§12.1.1).
    for (from, to) in [
        ("Contact: <sip:", "Contact: <sips:"),
        (
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sips:p.example;lr>, <sip:q.example;lr>\r\n",
        ),
    ] {
        let offer = w.uac.offer("sendrecv");
        let invite = String::from_utf8(w.uac.invite(&offer))
            .unwrap()
            .replacen(from, to, 1);
        assert!(invite.contains(to), "{to}");
        w.send(invite.into_bytes());
        assert_eq!(
            w.last_status_line(),
            "SIP/2.0 416 SIPS Not Supported",
            "{to}"
        );
    }
    assert_eq!(w.ep.active_calls(), 0);
    // A SIPS Contact behind a SIP top Record-Route is no secure dialog.
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer))
        .unwrap()
        .replacen("Contact: <sip:", "Contact: <sips:", 1)
        .replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:p.example;lr>\r\n",
            1,
        );
    w.send(invite.into_bytes());
    assert_eq!(w.statuses().last(), Some(&100));
    // Max-Forwards 0 on an INVITE: 483.
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    w.send(invite.into_bytes());
    assert_eq!(w.statuses().last(), Some(&483));
    // An offer whose media address is IPv6 while vportal's is IPv4, or a host name (never
    // resolved): no RTP could reach it.
    for (from, to) in [
        ("IN IP4 127.0.0.1", "IN IP6 ::1"),
        ("c=IN IP4 127.0.0.1", "c=IN IP4 pbx.invalid"),
    ] {
        let offer = w.uac.offer("sendrecv").replace(from, to);
        let invite = w.uac.invite(&offer);
        w.send(invite);
        assert_eq!(w.statuses().last(), Some(&488), "{to}");
        let warning = w.last_received();
        let warning = header(&warning, HeaderName::Warning);
        assert!(warning.starts_with("301 "), "{to}: {warning}");
    }
    // Inside a dialog it is no reason to refuse: the caller's BYE with Max-Forwards 0 ends
    // the call (a caller treats the session as over whatever the answer, §15.1.1).
    let mut w2 = World::new();
    w2.establish();
    let bye = String::from_utf8(w2.uac.request("BYE", "", ""))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    w2.send(bye.into_bytes());
    assert_eq!(w2.statuses().last(), Some(&200));
    assert_eq!(w2.ended(), Some(EndReason::RemoteBye));
    // Require: an extension vportal does not support: 420.
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRequire: 100rel\r\n",
    );
    w.send(invite.into_bytes());
    let r = w.last_received();
    assert_eq!(
        (r.status(), r.values(HeaderName::Unsupported).next()),
        (Some(420), Some("100rel"))
    );
    // Well formed but too large for vportal: 513, not 400.
    let options = String::from_utf8(w.uac.request("OPTIONS", "", "")).unwrap();
    let big_body = options.replace("Content-Length: 0", "Content-Length: 70000");
    let many_headers = options.replacen(
        "Max-Forwards: 70\r\n",
        &"Max-Forwards: 70\r\n".repeat(300),
        1,
    );
    for (what, request) in [("body", big_body), ("headers", many_headers)] {
        w.send(request.into_bytes());
        assert_eq!(w.statuses().last(), Some(&513), "{what}");
    }
    // A Call-ID with control characters (it names the call in every log line): 400.
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replace(
        &format!("Call-ID: {}", w.uac.call_id),
        "Call-ID: esc\u{1b}[31mred\u{8}\u{7}",
    );
    w.send(invite.into_bytes());
    let answer = String::from_utf8_lossy(&w.inbox.last().unwrap().1.payload).into_owned();
    assert!(
        answer.starts_with("SIP/2.0 400 Malformed Call-ID header\r\n"),
        "{answer}"
    );
    // A Call-ID or branch of 257 bytes (it would go into every log line and audit row,
    // and into the key of every transaction kept): 400. 256 is taken.
    for (len, reason) in [(256, None), (257, Some("Call-ID Too Long"))] {
        let offer = w.uac.offer("sendrecv");
        let invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replace(
            &format!("Call-ID: {}", w.uac.call_id),
            &format!("Call-ID: {}", "c".repeat(len)),
        );
        w.send(invite.into_bytes());
        let answer = String::from_utf8_lossy(&w.inbox.last().unwrap().1.payload).into_owned();
        match reason {
            Some(reason) => assert!(answer.starts_with(&format!("SIP/2.0 400 {reason}\r\n"))),
            None => assert!(!answer.starts_with("SIP/2.0 400"), "{answer}"),
        }
    }
    let options = String::from_utf8(w.uac.request("OPTIONS", "", "")).unwrap();
    let long_branch = options.replacen(
        ";branch=z9hG4bK",
        &format!(";branch=z9hG4bK{}", "b".repeat(250)),
        1,
    );
    assert_ne!(long_branch, options);
    w.send(long_branch.into_bytes());
    let answer = String::from_utf8_lossy(&w.inbox.last().unwrap().1.payload).into_owned();
    assert!(
        answer.starts_with("SIP/2.0 400 Via Branch Too Long\r\n"),
        "{answer}"
    );
    // The start line: a method that is not a token, a bad escape in the Request-URI.
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer)).unwrap();
    for (bad, reason) in [
        (
            invite.replacen("INVITE", "INV@TE", 1),
            "Malformed Request-Line",
        ),
        (
            invite.replacen("sip:8500@", "sip:85%zz@", 1),
            "Malformed Request-URI",
        ),
    ] {
        w.send(bad.into_bytes());
        let answer = String::from_utf8_lossy(&w.inbox.last().unwrap().1.payload).into_owned();
        assert!(
            answer.starts_with(&format!("SIP/2.0 400 {reason}\r\n")),
            "{answer}"
        );
    }
    // A body whose disposition vportal does not act on: 415, unless the caller marks it
    // optional.
    for (disposition, code) in [
        ("early-session", 415),
        ("early-session;handling=optional", 100),
    ] {
        let offer = w.uac.offer("sendrecv");
        let invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nContent-Disposition: {disposition}\r\n"),
            1,
        );
        w.send(invite.into_bytes());
        assert_eq!(w.statuses().last(), Some(&code), "{disposition}");
    }
}

/// `request` with its Contact replaced by `contact`.
fn with_contact(request: Vec<u8>, contact: &str) -> Vec<u8> {
    let text = String::from_utf8(request).unwrap();
    let start = text.find("Contact: ").unwrap();
    let end = start + text[start..].find("\r\n").unwrap();
    format!("{}Contact: {contact}{}", &text[..start], &text[end..]).into_bytes()
}

/// RFC 3261 §12.2.2: a target refresh request (re-INVITE, and UPDATE per RFC 3311 §5.2)
/// replaces the dialog's remote target with its Contact, so that later requests in the
/// dialog (our BYE) are addressed to it.
#[test]
fn a_reinvite_refreshes_the_remote_target() {
    let mut w = World::new();
    let call = w.establish();
    let offer = w.uac.offer("sendrecv");
    let reinvite = with_contact(w.uac.invite(&offer), "<sip:1001@127.0.0.1:5999>");
    w.send(reinvite);
    assert_eq!(w.statuses(), [200]);
    w.ack_the_200("");
    w.hangup(call);
    let bye = w.last_received();
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.request_uri(), Some("sip:1001@127.0.0.1:5999"));
}

/// Over UDP our BYE goes where our responses go (§18.2.2): to a caller whose Via has no
/// `rport`, at the Via's port, even when it sends from another; and after a re-INVITE from
/// another address (a caller or proxy failing over), to that address.
#[test]
fn our_bye_goes_where_the_responses_go() {
    let mut w = World::new();
    let offer = w.uac.offer("sendrecv");
    let invite = String::from_utf8(w.uac.invite(&offer)).unwrap();
    let listening = invite.replacen(&format!("{CALLER};"), "127.0.0.1:5079;", 1);
    let listening = listening.replacen(";rport\r\n", "\r\n", 1);
    assert!(listening.contains("Via: SIP/2.0/UDP 127.0.0.1:5079;branch="));
    assert!(!listening.contains("rport"));
    w.send(listening.into_bytes());
    let call = w.accept();
    let to_via: SocketAddr = "127.0.0.1:5079".parse().unwrap();
    assert!(w.inbox.iter().all(|(_, t)| t.destination == to_via));
    w.ack_the_200("");
    w.hangup(call);
    let (_, bye) = w.inbox.last().unwrap();
    assert_eq!(parse(&bye.payload).method(), Some(&Method::Bye));
    assert_eq!(bye.destination, to_via);

    let mut w = World::new();
    let call = w.establish();
    let moved: SocketAddr = "127.0.0.2:5090".parse().unwrap();
    let offer = w.uac.offer("sendrecv");
    let reinvite = w.uac.invite(&offer);
    w.send_from(moved, reinvite);
    assert_eq!(w.statuses(), [200]);
    w.ack_the_200("");
    w.hangup(call);
    let (_, bye) = w.inbox.last().unwrap();
    assert_eq!(parse(&bye.payload).method(), Some(&Method::Bye));
    assert_eq!(bye.destination, moved, "rport: the re-INVITE's source");
}

#[test]
fn an_update_refreshes_the_remote_target() {
    let mut w = World::new();
    let call = w.establish();
    let update = with_contact(w.uac.request("UPDATE", "", ""), "<sip:1001@127.0.0.1:5998>");
    w.send(update);
    assert_eq!(w.statuses(), [200]);
    w.hangup(call);
    let bye = w.last_received();
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.request_uri(), Some("sip:1001@127.0.0.1:5998"));
    // A refused target refresh changes nothing (§12.2.2: only a 2xx does).
    let mut w = World::new();
    let call = w.establish();
    let bad = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n";
    let update = with_contact(
        w.uac.request("UPDATE", "application/sdp", bad),
        "<sip:1001@127.0.0.1:5997>",
    );
    w.send(update);
    assert_eq!(w.statuses(), [488]);
    assert!(header(&w.received(0), HeaderName::Warning).starts_with("305 "));
    // A re-INVITE with that offer likewise.
    let reinvite = w.uac.invite(bad);
    w.send(reinvite);
    assert_eq!(w.statuses(), [488, 488]);
    assert!(header(&w.received(1), HeaderName::Warning).starts_with("305 "));
    w.hangup(call);
    let bye = w.last_received();
    assert_eq!(
        bye.request_uri(),
        Some(format!("sip:1001@{CALLER}").as_str())
    );
}

/// Over TCP our BYE goes on the call's connection; should that have closed (the peer, or a
/// proxy such as Kamailio, drops idle connections; vportal itself closes one after
/// `tcp_idle_timeout` of silence), the shell opens a new one to the BYE's destination. That
/// must be a port the peer listens on (the Via's sent-by port, as for responses, §18.2.2),
/// not the source port of the INVITE's connection, which is the peer's ephemeral one and
/// never accepts connections.
#[test]
fn our_bye_over_tcp_is_addressed_to_a_listening_port() {
    let mut w = World::new();
    w.uac.transport = "TCP";
    let ephemeral: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    let conn = Transport::Tcp(ConnId(7));
    let offer = w.uac.offer("sendrecv");
    let invite = Message::parse_datagram(w.uac.invite(&offer)).unwrap();
    w.ep.handle_message(w.now, conn, ephemeral, invite);
    w.pump();
    let call = w.accept();
    let ok = w.last_received();
    w.uac.learn_tag(&ok);
    let ack = Message::parse_datagram(w.uac.ack_2xx("")).unwrap();
    w.ep.handle_message(w.now, conn, ephemeral, ack);
    w.pump();
    w.inbox.clear();
    w.hangup(call);
    let bye = &w.inbox.last().unwrap().1;
    assert_eq!(parse(&bye.payload).method(), Some(&Method::Bye));
    assert_eq!(
        bye.transport, conn,
        "on the call's connection while it is open"
    );
    assert_eq!(
        bye.destination,
        CALLER.parse::<SocketAddr>().unwrap(),
        "a new connection, if needed, goes to the Via's port, not the ephemeral source port"
    );
}

/// RFC 3261 §8.2.6.1 (and §17.2.1): a Timestamp in the request MUST be copied into the
/// 100 (Trying), which callers use to measure the round trip.
#[test]
fn the_100_trying_copies_the_timestamp() {
    let mut w = World::new();
    let offer = w.uac.offer("sendrecv");
    let invite = with_header(w.uac.invite(&offer), "Timestamp: 54.3 0.2\r\n");
    w.send(invite);
    let trying = String::from_utf8(w.inbox[0].1.payload.clone()).unwrap();
    assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"), "{trying}");
    assert!(trying.contains("\r\nTimestamp: 54.3 0.2\r\n"), "{trying}");
}
