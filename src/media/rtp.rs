//! RTP (RFC 3550), sans-IO: the packetizer that numbers what vportal sends, and the
//! receiver that decides which incoming packets to trust.
//!
//! Headers are read and written with `rtp-rs`; this module adds what a session needs on top:
//! random starting values, continuous timestamps, the marker bit at each talkspurt, 16→64-bit
//! sequence extension, and source filtering so that a stranger cannot inject digits into
//! someone's call.

use std::collections::HashMap;
use std::net::SocketAddr;

use rand::{Rng, RngExt};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

/// A synchronisation source identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// An RTP payload type (0-127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pt(u8);

impl Pt {
    /// A payload type; `None` above 127.
    pub fn new(pt: u8) -> Option<Self> {
        (pt <= 127).then_some(Self(pt))
    }

    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A sequence number extended to 64 bits, so it never wraps within a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtSeq(pub u64);

/// Extends 16-bit sequence numbers as they arrive (RFC 3550 Appendix A.1): a number close
/// after the highest seen continues the count, across wrap-arounds; one close before it is a
/// late or repeated packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// The extended value of `seq`.
    pub fn extend(&mut self, seq: u16) -> ExtSeq {
        let Some(highest) = self.highest else {
            // Start in the second cycle so a slightly earlier first packet stays positive.
            let first = (1 << 16) + u64::from(seq);
            self.highest = Some(first);
            return ExtSeq(first);
        };
        let cycle = highest & !0xffff;
        let candidates =
            [cycle.wrapping_sub(1 << 16), cycle, cycle + (1 << 16)].map(|c| c + u64::from(seq));
        let value = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(cycle + u64::from(seq));
        if value > highest {
            self.highest = Some(value);
        }
        ExtSeq(value)
    }
}

/// Numbers and stamps the packets of one outgoing stream.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: Ssrc,
    pt: Pt,
    seq: u16,
    timestamp: u32,
    sent: u64,
    octets: u64,
}

impl RtpSender {
    /// A stream with random SSRC, first sequence number and first timestamp (RFC 3550 §5.1:
    /// random starting values make known-plaintext attacks harder and tell restarts apart).
    pub fn new(pt: Pt, rng: &mut impl Rng) -> Self {
        Self {
            ssrc: Ssrc(rng.random()),
            pt,
            seq: rng.random(),
            timestamp: rng.random(),
            sent: 0,
            octets: 0,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Packets built so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Payload octets in them (RTCP's sender octet count).
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// The sequence number and timestamp the next packet will carry.
    pub fn next_numbers(&self) -> (u16, u32) {
        (self.seq, self.timestamp)
    }

    /// Changes the payload type (a re-INVITE chose another codec). Numbering continues.
    pub fn set_pt(&mut self, pt: Pt) {
        self.pt = pt;
    }

    /// Takes back `samples` of time not yet played: the next packet goes out that much
    /// before its slot, starting a talkspurt early ([`super::stream::Outbound::play_now`]),
    /// and its timestamp says when it really starts. Less than one frame, so timestamps
    /// still increase from packet to packet.
    pub fn rewind(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_sub(samples);
    }

    /// Lets `samples` of time pass without a packet (a frame that could not be sent on
    /// time): the timestamp moves on, the sequence number does not (RFC 3550 §5.1 counts
    /// packets sent), so the receiver sees the gap for what it is.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Builds the next packet into `out` (cleared first): `payload` of `samples` 8 kHz
    /// samples, the marker bit when `marker` (a talkspurt starts). Timestamps advance by
    /// the samples carried whatever they hold, so they stay continuous across prompts and
    /// silence.
    pub fn packet(&mut self, payload: &[u8], samples: u32, marker: bool, out: &mut Vec<u8>) {
        let builder = RtpPacketBuilder::new()
            .payload_type(self.pt.0)
            .ssrc(self.ssrc.0)
            .sequence(Seq::from(self.seq))
            .timestamp(self.timestamp)
            .marked(marker)
            .payload(payload);
        // Every byte is overwritten by the builder: resize without clearing, so a buffer
        // already of the right length (every packet after the first) is not zeroed again.
        out.resize(builder.target_length(), 0);
        let written = builder.build_into_unchecked(out);
        out.truncate(written);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.sent += 1;
        self.octets += payload.len() as u64;
    }
}

/// Whether to follow the media source the caller actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latching {
    /// Accept RTP only from the address in the SDP (the default).
    #[default]
    Off,
    /// Symmetric RTP for callers behind NAT: accept the first source seen (once), then only
    /// it, and send to it; learn afresh when a re-INVITE or UPDATE moves the media to
    /// another address.
    Once,
}

/// A packet the receiver accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// Its SSRC.
    pub ssrc: Ssrc,
    /// Its payload type.
    pub pt: u8,
    /// Its sequence number, extended per SSRC.
    pub seq: ExtSeq,
    /// Its timestamp.
    pub timestamp: u32,
    /// The marker bit.
    pub marker: bool,
    /// The payload.
    pub payload: &'a [u8],
}

/// Counts of what arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// Packets accepted.
    pub accepted: u64,
    /// Packets from an address other than the call's media source: ignored.
    pub foreign: u64,
    /// Datagrams that are not RTP version 2.
    pub malformed: u64,
}

/// Decides which incoming datagrams belong to the call.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    expected: Option<SocketAddr>,
    /// The address the SDP last named (hold's none aside).
    signalled: Option<SocketAddr>,
    latching: Latching,
    latched: bool,
    /// The source latched before the SDP moved the media, and how many packets it has
    /// sent since: still heard, but latched again only once it alone has sent
    /// [`RELATCH_AFTER`] of them. A B2BUA that takes itself out of the media path relays
    /// until it has re-INVITEd the phone, so the first packets after the move are its own.
    previous: Option<(SocketAddr, u32)>,
    sequences: HashMap<Ssrc, SeqExtender>,
    stats: ReceiveStats,
}

/// Most SSRCs tracked per call (each `play_dtmf` action of SIPp is a new one).
const MAX_SSRCS: usize = 64;

/// Packets from the source latched before a move after which, none having come from
/// anywhere else, it is latched again (a second of 20 ms packets): the SDP moved, the
/// media did not.
const RELATCH_AFTER: u32 = 50;

impl RtpReceiver {
    /// A receiver expecting media from `expected` (the SDP's address; `None` when the SDP
    /// named none that can be trusted, e.g. a host name or 0.0.0.0).
    pub fn new(expected: Option<SocketAddr>, latching: Latching) -> Self {
        Self {
            expected,
            signalled: expected,
            latching,
            latched: false,
            previous: None,
            sequences: HashMap::new(),
            stats: ReceiveStats::default(),
        }
    }

    /// The address media is accepted from (and sent to), once known.
    pub fn source(&self) -> Option<SocketAddr> {
        self.expected
    }

    /// The source that only the SDP changes: its address, without latching. The shell may
    /// connect the socket to it, so that the kernel drops everyone else's datagrams and
    /// sends take the cached route. With latching there is none: a socket connected to the
    /// latched source would never see the new source of media that a re-INVITE moved (a
    /// UDP socket cannot be disconnected without unsafe code).
    pub fn settled_source(&self) -> Option<SocketAddr> {
        match self.latching {
            Latching::Once => None,
            Latching::Off => self.expected,
        }
    }

    /// A new SDP (re-INVITE or UPDATE) naming `expected`. With latching, a session refresh
    /// naming the same address, or hold naming none, keeps the latched source; another
    /// address is where the media moved (a B2BUA taking itself out of the media path, an
    /// SBC failing over), so its source is learnt afresh, as at the start of the call
    /// (RFC 3264 §8.3.1: media goes to the new address).
    pub fn update_expected(&mut self, expected: Option<SocketAddr>) {
        match self.latching {
            Latching::Off => self.expected = expected,
            Latching::Once => {
                let Some(addr) = expected.filter(|a| Some(*a) != self.signalled) else {
                    return;
                };
                self.signalled = Some(addr);
                if self.latched {
                    self.previous = self.expected.map(|old| (old, 0));
                }
                self.expected = Some(addr);
                self.latched = false;
            }
        }
    }

    /// Takes `from` as the call's source from now on.
    fn latch(&mut self, from: SocketAddr) {
        self.expected = Some(from);
        self.latched = true;
        self.previous = None;
    }

    /// The counters.
    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }

    /// Checks a datagram from `from`: the packet if it is RTP from the call's source.
    pub fn accept<'a>(&mut self, from: SocketAddr, datagram: &'a [u8]) -> Option<Accepted<'a>> {
        let Ok(rtp) = RtpReader::new(datagram) else {
            self.stats.malformed += 1;
            return None;
        };
        if rtp.version() != 2 {
            self.stats.malformed += 1;
            return None;
        }
        // With latching, the first source seen is latched even when it is the SDP's address:
        // else a stranger's packet could still latch later and take the call over.
        let trusted = match (self.expected, self.latching) {
            (_, Latching::Once) if !self.latched => {
                match &mut self.previous {
                    Some((previous, heard)) if *previous == from => {
                        *heard += 1;
                        if *heard >= RELATCH_AFTER {
                            self.latch(from);
                        }
                    }
                    _ => self.latch(from),
                }
                true
            }
            (Some(addr), _) => addr == from,
            _ => false,
        };
        if !trusted {
            self.stats.foreign += 1;
            return None;
        }
        let ssrc = Ssrc(rtp.ssrc());
        if !self.sequences.contains_key(&ssrc) && self.sequences.len() >= MAX_SSRCS {
            self.sequences.clear();
        }
        let seq = self
            .sequences
            .entry(ssrc)
            .or_default()
            .extend(u16::from(rtp.sequence_number()));
        self.stats.accepted += 1;
        Some(Accepted {
            ssrc,
            pt: rtp.payload_type(),
            seq,
            timestamp: rtp.timestamp(),
            marker: rtp.mark(),
            payload: rtp.payload(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sequence_extension_across_wraps_and_reordering() {
        let mut x = SeqExtender::default();
        let base = x.extend(65_534).0;
        assert_eq!(x.extend(65_535).0, base + 1);
        assert_eq!(x.extend(0).0, base + 2);
        assert_eq!(
            x.extend(65_535).0,
            base + 1,
            "late packet from before the wrap"
        );
        assert_eq!(x.extend(1).0, base + 3);
        let mut y = SeqExtender::default();
        let start = y.extend(10).0;
        for i in 0..200_000_u64 {
            assert_eq!(y.extend((10 + i) as u16).0, start + i);
        }
    }

    #[test]
    fn packets_are_numbered_continuously() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = RtpSender::new(Pt::new(0).unwrap(), &mut rng);
        let (seq0, ts0) = s.next_numbers();
        let mut out = Vec::new();
        s.packet(&[0xff; 160], 160, true, &mut out);
        let r = RtpReader::new(&out).unwrap();
        assert_eq!(
            (r.payload_type(), r.mark(), r.payload().len()),
            (0, true, 160)
        );
        assert_eq!((u16::from(r.sequence_number()), r.timestamp()), (seq0, ts0));
        assert_eq!(r.ssrc(), s.ssrc().0);
        s.packet(&[0xff; 80], 80, false, &mut out);
        let r = RtpReader::new(&out).unwrap();
        assert_eq!(u16::from(r.sequence_number()), seq0.wrapping_add(1));
        assert_eq!(r.timestamp(), ts0.wrapping_add(160));
        assert!(!r.mark());
        assert_eq!(s.next_numbers().1, ts0.wrapping_add(240));
        assert_eq!((s.sent(), s.octets()), (2, 240));
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(101)
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(1_000)
            .payload(&[1, 2, 3, 4])
            .build()
            .unwrap()
    }

    #[test]
    fn strangers_are_ignored_and_counted() {
        let caller: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        let mut r = RtpReceiver::new(Some(caller), Latching::Off);
        assert!(r.accept(stranger, &rtp(1, 9)).is_none());
        let packet = rtp(2, 9);
        let ok = r.accept(caller, &packet).unwrap();
        assert_eq!((ok.pt, ok.payload), (101, &[1, 2, 3, 4][..]));
        assert!(r.accept(caller, b"not rtp").is_none());
        assert_eq!(
            r.stats(),
            ReceiveStats {
                accepted: 1,
                foreign: 1,
                malformed: 1
            }
        );
    }

    #[test]
    fn latching_happens_once() {
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let mut r = RtpReceiver::new(None, Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1)).is_some());
        assert_eq!(r.source(), Some(nat));
        assert!(r.accept(other, &rtp(2, 1)).is_none(), "no second latch");
        // Latched sources are never settled: the socket stays unconnected.
        assert_eq!(r.settled_source(), None);
        // An SDP address given before the latch is where media goes until then.
        let sdp: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let waiting = RtpReceiver::new(Some(sdp), Latching::Once);
        assert_eq!(
            (waiting.source(), waiting.settled_source()),
            (Some(sdp), None)
        );
        assert_eq!(
            RtpReceiver::new(Some(sdp), Latching::Off).settled_source(),
            Some(sdp)
        );
        // Without latching and without an SDP address nothing is trusted.
        let mut closed = RtpReceiver::new(None, Latching::Off);
        assert!(closed.accept(nat, &rtp(1, 1)).is_none());
    }

    #[test]
    fn a_latched_source_is_learnt_afresh_when_the_sdp_moves_the_media() {
        let private: SocketAddr = "192.168.1.20:30000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let moved: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let mut r = RtpReceiver::new(Some(private), Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1)).is_some());
        // A session refresh naming the same address, and hold naming none, keep the latch.
        r.update_expected(Some(private));
        r.update_expected(None);
        r.update_expected(Some(private));
        assert_eq!(r.source(), Some(nat));
        assert!(r.accept(moved, &rtp(2, 1)).is_none(), "no second latch");
        // A re-INVITE moves the media (a B2BUA leaving the path): sent there at once. The
        // old source, still relaying for a moment, is heard but not latched again; the
        // first other source seen is.
        r.update_expected(Some(moved));
        assert_eq!(r.source(), Some(moved));
        for seq in 10..20 {
            assert!(
                r.accept(nat, &rtp(seq, 1)).is_some(),
                "the relay until the switch"
            );
        }
        assert_eq!(r.source(), Some(moved));
        assert!(r.accept(moved, &rtp(3, 1)).is_some());
        assert!(
            r.accept(nat, &rtp(4, 1)).is_none(),
            "the old source is gone"
        );
        assert_eq!(r.source(), Some(moved));
        // Without latching the SDP's address is simply followed.
        let mut plain = RtpReceiver::new(Some(private), Latching::Off);
        plain.update_expected(Some(moved));
        assert_eq!(plain.settled_source(), Some(moved));
        assert!(plain.accept(moved, &rtp(1, 1)).is_some());
    }

    #[test]
    fn a_source_that_alone_goes_on_after_the_sdp_moved_is_latched_again() {
        // The SDP moved, the media did not (a NAT's mapping that survived the change).
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let moved: SocketAddr = "192.168.1.21:30000".parse().unwrap();
        let mut r = RtpReceiver::new(None, Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1)).is_some());
        r.update_expected(Some(moved));
        for seq in 2..=RELATCH_AFTER {
            assert!(
                r.accept(nat, &rtp(u16::try_from(seq).unwrap(), 1))
                    .is_some()
            );
            assert_eq!(r.source(), Some(moved), "packet {seq}");
        }
        assert!(r.accept(nat, &rtp(99, 1)).is_some());
        assert_eq!(r.source(), Some(nat));
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        assert!(r.accept(stranger, &rtp(100, 1)).is_none());
    }

    #[test]
    fn latching_onto_the_sdp_address_when_it_is_the_first_source() {
        // A caller not behind a NAT sends from the SDP's address: that is the first source
        // seen, so it is latched, and a stranger's packet afterwards cannot take over.
        let sdp: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        let mut r = RtpReceiver::new(Some(sdp), Latching::Once);
        assert!(r.accept(sdp, &rtp(1, 1)).is_some());
        assert!(
            r.accept(stranger, &rtp(2, 1)).is_none(),
            "a stranger took over"
        );
        assert_eq!(r.source(), Some(sdp));
        assert!(r.accept(sdp, &rtp(3, 1)).is_some());
    }
}
