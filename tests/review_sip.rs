//! UAS behaviour found wrong in review, on a virtual clock: a scripted caller and the real
//! sans-IO endpoint, no sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::uac::{Uac, parse, status};
use vportal::sip::endpoint::{
    CallHandle, ConnId, Endpoint, EndpointConfig, Event, Transmit, Transport,
};
use vportal::sip::{Message, Method};

const SERVER: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5062";
const MEDIA: &str = "127.0.0.1:10000";

struct World {
    ep: Endpoint,
    uac: Uac,
    now: Instant,
    inbox: Vec<Transmit>,
    events: Vec<Event>,
}

impl World {
    fn new() -> Self {
        let mut cfg = EndpointConfig::new(SERVER.parse().unwrap());
        cfg.rng_seed = Some(1);
        let router = |user: &str| (user == "8500").then_some(0);
        Self {
            ep: Endpoint::new(cfg, Box::new(router)),
            uac: Uac::new(CALLER.parse().unwrap(), SERVER.parse().unwrap(), "8500"),
            now: Instant::now(),
            inbox: Vec::new(),
            events: Vec::new(),
        }
    }

    fn send(&mut self, bytes: Vec<u8>) {
        let from: SocketAddr = self.uac.local;
        self.ep.handle_datagram(self.now, from, bytes);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.inbox.push(t);
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    fn statuses(&self) -> Vec<u16> {
        self.inbox.iter().map(|t| status(&t.payload)).collect()
    }

    fn last_received(&self) -> Message {
        parse(&self.inbox.last().unwrap().payload)
    }

    fn ack_the_last_200(&mut self) {
        let ok = self
            .inbox
            .iter()
            .rev()
            .find(|t| status(&t.payload) == 200)
            .unwrap()
            .payload
            .clone();
        self.uac.learn_tag(&parse(&ok));
        let ack = self.uac.ack_2xx("");
        self.send(ack);
    }

    /// INVITE, accept, 200, ACK: an established call.
    fn establish(&mut self) -> CallHandle {
        let offer = self.uac.offer("sendrecv");
        let invite = self.uac.invite(&offer);
        self.send(invite);
        let call = self
            .events
            .iter()
            .find_map(|e| match e {
                Event::IncomingCall(c) => Some(c.call),
                _ => None,
            })
            .unwrap();
        self.ep
            .accept(call, MEDIA.parse().unwrap(), self.now)
            .unwrap();
        self.pump();
        self.ack_the_last_200();
        assert!(
            self.events
                .iter()
                .any(|e| matches!(e, Event::Established { .. }))
        );
        self.inbox.clear();
        call
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
    w.ack_the_last_200();
    w.ep.hangup(call, w.now);
    w.pump();
    let bye = w.last_received();
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(bye.request_uri(), Some("sip:1001@127.0.0.1:5999"));
}

#[test]
fn an_update_refreshes_the_remote_target() {
    let mut w = World::new();
    let call = w.establish();
    let update = with_contact(w.uac.request("UPDATE", "", ""), "<sip:1001@127.0.0.1:5998>");
    w.send(update);
    assert_eq!(w.statuses(), [200]);
    w.ep.hangup(call, w.now);
    w.pump();
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
    w.ep.hangup(call, w.now);
    w.pump();
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
    let call = w
        .events
        .iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .unwrap();
    w.ep.accept(call, MEDIA.parse().unwrap(), w.now).unwrap();
    w.pump();
    let ok = w.last_received();
    w.uac.learn_tag(&ok);
    let ack = Message::parse_datagram(w.uac.ack_2xx("")).unwrap();
    w.ep.handle_message(w.now, conn, ephemeral, ack);
    w.pump();
    w.inbox.clear();
    w.ep.hangup(call, w.now);
    w.pump();
    let bye = w.inbox.last().unwrap();
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
    let invite = String::from_utf8(w.uac.invite(&offer)).unwrap().replacen(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nTimestamp: 54.3 0.2\r\n",
        1,
    );
    w.send(invite.into_bytes());
    let trying = String::from_utf8(w.inbox[0].payload.clone()).unwrap();
    assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"), "{trying}");
    assert!(trying.contains("\r\nTimestamp: 54.3 0.2\r\n"), "{trying}");
}
