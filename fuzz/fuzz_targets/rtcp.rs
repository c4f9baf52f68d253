//! A call's RTCP on a virtual clock: RTP packets counted for the reports, the peer's RTCP
//! datagrams read, and reports written, in any order.
//!
//! Input: records of `kind, milliseconds to advance, length, bytes`. Kind 0 feeds the bytes
//! as an RTP datagram (through the receiver that accepts them, as the media thread does),
//! kind 1 as an RTCP datagram, kind 2 writes a report (or, with the length's low bit, the
//! final BYE) with the bytes' first octets as the packets sent.
//!
//! Invariants beyond "no crash": every datagram read counts as received, malformed or
//! without a report; every report written is a valid compound packet that another call's
//! RTCP reads without error, that RFC 5761 demultiplexing takes for RTCP, whose lengths are
//! whole 32-bit words, and whose first packet is a sender report exactly when packets were
//! sent since the report before last (RFC 3550 §6.3.8).

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use vportal::media::rtcp::{self, Rtcp, SenderInfo};
use vportal::media::rtp::{Latching, RtpReceiver, Ssrc};

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let t0 = Instant::now();
    let mut now = t0;
    let mut receiver = RtpReceiver::new(Some(peer), Latching::Off);
    let mut ours = Rtcp::new(t0, Ssrc(0x1111), &mut rng);
    let mut theirs = Rtcp::new(t0, Ssrc(0x2222), &mut rng);
    let mut packets = 0_u64;
    // Packets sent at the report before last and at the last.
    let mut at_reports = [0_u64; 2];
    let mut report = Vec::new();
    let mut rest = data;
    while let [kind, advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*advance) * 16);
        match kind % 3 {
            0 => {
                if let Some(packet) = receiver.accept(peer, bytes, now) {
                    ours.on_rtp(&packet, packet.pt == 0, now);
                }
            }
            1 => {
                let before = ours.stats();
                let _ = ours.receive(bytes, now);
                let after = ours.stats();
                assert_eq!(
                    after.received + after.malformed + after.no_report,
                    before.received + before.malformed + before.no_report + 1
                );
            }
            _ => {
                let sent_now = u64::from(bytes.first().copied().unwrap_or(0));
                packets += sent_now;
                let sender = SenderInfo {
                    packets,
                    octets: packets * 160,
                    timestamp: 0,
                };
                let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + (now - t0);
                if len % 2 == 1 {
                    ours.write_bye(now, wall, sender, &mut report);
                } else {
                    ours.write_report(now, wall, sender, &mut rng, &mut report);
                    assert!(ours.poll_timeout() > now);
                }
                assert!(rtcp::is_rtcp(&report));
                assert_eq!(report.len() % 4, 0);
                let first = report[1];
                assert_eq!(
                    first == 200,
                    packets > at_reports[0],
                    "SR exactly when sending"
                );
                at_reports = [at_reports[1], packets];
                assert!(theirs.receive(&report, now).is_ok(), "{report:?}");
            }
        }
    }
});
