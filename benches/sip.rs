//! SIP codec and endpoint throughput.
//!
//! Run: `cargo bench --bench sip`. Figures are in the README.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vportal::sip::endpoint::{Endpoint, EndpointConfig};
use vportal::sip::{CSeq, HeaderName, Message, NameAddr, Via};

/// A typical INVITE from a softphone: 12 headers and an SDP body.
const INVITE: &[u8] = b"INVITE sip:8500@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-524287-1---1e3b8e2b1c8a1f0a;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:1001@127.0.0.1:5062;transport=udp>\r\n\
To: <sip:8500@127.0.0.1:5060>\r\n\
From: \"Alice\" <sip:1001@127.0.0.1:5060>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, norefersub\r\n\
User-Agent: baresip v1.0.0 (x86_64/linux)\r\n\
Content-Length: 226\r\n\
\r\n\
v=0\r\n\
o=- 1235567 1235567 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const OPTIONS: &[u8] = b"OPTIONS sip:8500@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1234;rport\r\n\
From: sipp <sip:sipp@127.0.0.1:5062>;tag=1\r\n\
To: <sip:8500@127.0.0.1:5060>\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical INVITE (framing + header index)", |b| {
        b.iter(|| Message::parse_datagram(black_box(INVITE).to_vec()).unwrap());
    });
    g.bench_function("typical INVITE + Via/From/To/CSeq/Call-ID views", |b| {
        b.iter(|| {
            let m = Message::parse_datagram(black_box(INVITE).to_vec()).unwrap();
            let via = Via::parse(m.required(HeaderName::Via).unwrap()).unwrap();
            let from =
                NameAddr::parse(m.required(HeaderName::From).unwrap(), HeaderName::From).unwrap();
            let to = NameAddr::parse(m.required(HeaderName::To).unwrap(), HeaderName::To).unwrap();
            let cseq = CSeq::parse(m.required(HeaderName::CSeq).unwrap()).unwrap();
            black_box((
                via.branch(),
                from.tag(),
                to.uri,
                cseq.seq,
                m.required(HeaderName::CallId).unwrap(),
            ));
        });
    });
    g.finish();
}

fn options_cycle(c: &mut Criterion) {
    let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
    cfg.rng_seed = Some(1);
    let mut ep = Endpoint::new(cfg, Box::new(|u: &str| (u == "8500").then_some(0)));
    let source: SocketAddr = "127.0.0.1:5062".parse().unwrap();
    let now = Instant::now();
    let mut g = c.benchmark_group("endpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("OPTIONS in, 200 out (parse, validate, build)", |b| {
        b.iter(|| {
            ep.handle_datagram(now, source, black_box(OPTIONS).to_vec());
            black_box(ep.poll_transmit().unwrap())
        });
    });
    g.finish();
}

/// A new call's INVITE through the endpoint: parsed, validated, its SDP offer read and
/// checked, its dialog made, 100 Trying built and sent, and the call offered to the
/// application. Each INVITE goes to an endpoint of its own (made outside the timing), so
/// that none is a retransmission and no call limit is reached.
fn invite_cycle(c: &mut Criterion) {
    let source: SocketAddr = "127.0.0.1:5062".parse().unwrap();
    let now = Instant::now();
    let endpoint = || {
        let mut cfg = EndpointConfig::new("127.0.0.1:5060".parse().unwrap());
        cfg.rng_seed = Some(1);
        Endpoint::new(cfg, Box::new(|u: &str| (u == "8500").then_some(0)))
    };
    let mut g = c.benchmark_group("endpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("INVITE in, 100 Trying out, call offered", |b| {
        b.iter_batched(
            || (endpoint(), INVITE.to_vec()),
            |(mut ep, invite)| {
                ep.handle_datagram(now, source, invite);
                let trying = ep.poll_transmit().expect("100 Trying");
                let offered = ep.poll_event().expect("the call");
                black_box((trying, offered));
                // Dropped after the timing, with the call it holds.
                ep
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, parse, options_cycle, invite_cycle);
criterion_main!(benches);
