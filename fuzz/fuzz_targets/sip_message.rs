//! Any datagram through the parser and the UAS endpoint.
//!
//! Invariants beyond "no crash": a parsed body lies inside the datagram; the endpoint only
//! ever sends responses, only back to the sender's address, and each of them parses.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vportal::sip::Message;
use vportal::sip::endpoint::{Endpoint, EndpointConfig, Event};

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
    while let Some(event) = ep.poll_event() {
        if let Event::IncomingCall(call) = event {
            ep.accept(call.call, "127.0.0.1:10000".parse().unwrap(), now)
                .unwrap();
        }
    }
    // The same bytes again (a retransmission), then the timers run out.
    ep.handle_datagram(now, source, data.to_vec());
    ep.handle_timeout(now + Duration::from_secs(64));
    while let Some(t) = ep.poll_transmit() {
        assert_eq!(t.destination.ip(), source.ip());
        let reply = Message::parse_datagram(t.payload).expect("vportal's own messages parse");
        assert!(reply.status().is_some() || reply.method().is_some());
    }
});
