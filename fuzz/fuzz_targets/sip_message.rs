//! Any datagram through the parser and the UAS endpoint.
//!
//! Invariants beyond "no crash": a parsed body lies inside the datagram; the endpoint sends
//! only back to the sender's address, every message it sends parses, and each is a
//! response but for the BYE that ends a call it accepted (its ACK never came), which is in
//! that call's dialog: its Call-ID.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vportal::sip::endpoint::{Endpoint, EndpointConfig, Event};
use vportal::sip::{HeaderName, Message, Method};

fn call_id(m: &Message) -> Option<String> {
    m.single(HeaderName::CallId)
        .ok()
        .flatten()
        .map(str::to_owned)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse_datagram(data.to_vec()) {
        assert!(m.body().len() <= data.len());
        for (_, _, value) in m.fields() {
            let _ = value;
        }
    }
    let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
    cfg.rng_seed = Some(1);
    let mut ep = Endpoint::new(cfg, Box::new(|u: &str| (u == "8500").then_some(0)));
    let source: SocketAddr = "127.0.0.1:5062".parse().unwrap();
    let now = Instant::now();
    ep.handle_datagram(now, source, data.to_vec());
    // The Call-ID of the call accepted, if the datagram offered one.
    let mut accepted = None;
    while let Some(event) = ep.poll_event() {
        if let Event::IncomingCall(call) = event {
            ep.accept(call.call, "127.0.0.1:10000".parse().unwrap(), now)
                .unwrap();
            let offer = Message::parse_datagram(data.to_vec()).expect("an offered call parsed");
            accepted = call_id(&offer);
        }
    }
    // The same bytes again (a retransmission), then the timers run out.
    ep.handle_datagram(now, source, data.to_vec());
    ep.handle_timeout(now + Duration::from_secs(64));
    while let Some(t) = ep.poll_transmit() {
        assert_eq!(t.destination.ip(), source.ip());
        let sent = Message::parse_datagram(t.payload).expect("vportal's own messages parse");
        if sent.status().is_none() {
            assert_eq!(sent.method(), Some(&Method::Bye), "only a BYE is a request");
            assert!(accepted.is_some(), "a BYE without an accepted call");
            assert_eq!(call_id(&sent), accepted, "the BYE's Call-ID");
        }
    }
});
