//! RTP (RFC 3550), sans-IO: the packetizer that numbers what vportal sends, and the
//! receiver that decides which incoming packets to trust.
//!
//! Headers are read and written with `rtp-rs`; this module adds what a session needs on top:
//! random starting values, continuous timestamps, the marker bit at each talkspurt, 16→64-bit
//! sequence extension, and source filtering so that a stranger cannot inject digits into
//! someone's call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, RngExt};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use crate::net::client_key;

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
/// late or repeated packet. A jump (more than [`MAX_DROPOUT`] ahead, or [`MAX_MISORDER`]
/// behind) is taken for a new numbering, as a sender that renumbers its stream (an SBC
/// re-anchoring media) makes, once the packet after it follows it: the count then goes on
/// from a cycle above every number given so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
    /// The number that, arriving next, confirms a jump (A.1's `bad_seq`).
    jumped: Option<u16>,
}

/// The largest step ahead that continues a numbering (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// The largest step back that is a late packet of the same numbering (RFC 3550 A.1).
pub const MAX_MISORDER: u16 = 100;

impl SeqExtender {
    /// The highest sequence number seen, as on the wire; `None` before the first.
    pub fn highest(&self) -> Option<u16> {
        self.highest.map(|h| h as u16)
    }

    /// The extended value of `seq`.
    pub fn extend(&mut self, seq: u16) -> ExtSeq {
        let Some(highest) = self.highest else {
            // Start in the second cycle so a slightly earlier first packet stays positive.
            let first = (1 << 16) + u64::from(seq);
            self.highest = Some(first);
            return ExtSeq(first);
        };
        let step = seq.wrapping_sub(highest as u16);
        if (MAX_DROPOUT..=u16::MAX - MAX_MISORDER).contains(&step) {
            if self.jumped == Some(seq) {
                // Two in a row from the new numbering: it goes on above all before it.
                self.jumped = None;
                let renumbered = (((highest >> 16) + 2) << 16) + u64::from(seq);
                self.highest = Some(renumbered);
                return ExtSeq(renumbered);
            }
            self.jumped = Some(seq.wrapping_add(1));
        } else {
            self.jumped = None;
        }
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
    /// another address, and follow the stream when a NAT rebinding moves it without one
    /// (see [`RtpReceiver::accept`]).
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
    /// Times the latched source moved to another address that continued its stream (a NAT
    /// rebinding).
    pub followed: u64,
}

/// Decides which incoming datagrams belong to the call.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    expected: Option<SocketAddr>,
    /// The address the SDP last named (hold's none aside).
    signalled: Option<SocketAddr>,
    /// The address the call's signalling came from (the INVITE's source): with latching,
    /// a source is first latched only at its IP or the SDP's ([`RtpReceiver::accept`]).
    signalling: Option<IpAddr>,
    latching: Latching,
    latched: bool,
    /// The source latched before the SDP moved the media, and how many packets it has
    /// sent since: still heard, but latched again only once it alone has sent
    /// [`RELATCH_AFTER`] of them. A B2BUA that takes itself out of the media path relays
    /// until it has re-INVITEd the phone, so the first packets after the move are its own.
    previous: Option<(SocketAddr, u32)>,
    /// When the source last sent a packet that was accepted: a rebinding is followed only
    /// once it has gone quiet.
    heard_at: Option<Instant>,
    /// Another address whose packets continue the latched source's stream: perhaps the same
    /// phone after a NAT rebinding.
    candidate: Option<Candidate>,
    /// Runs begun by other addresses towards a follow, for the call: past
    /// [`FOLLOW_TRIES`], none is followed any more.
    tries: u32,
    /// Per SSRC heard: its numbering, and the count of accepted packets when it was last
    /// heard (which SSRC to forget first when there are too many).
    sequences: HashMap<Ssrc, (SeqExtender, u64)>,
    stats: ReceiveStats,
}

/// An address that may be the latched source after a NAT rebinding, and how far it has
/// proved it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    from: SocketAddr,
    ssrc: Ssrc,
    /// The sequence number of its last packet.
    seq: u16,
    /// Its packets so far in an unbroken sequence, each continuing the latched stream.
    run: u32,
}

/// Most SSRCs tracked per call (each `play_dtmf` action of SIPp is a new one); past it, the
/// one heard least recently is forgotten.
const MAX_SSRCS: usize = 64;

/// Packets from the source latched before a move after which, none having come from
/// anywhere else, it is latched again (a second of 20 ms packets): the SDP moved, the
/// media did not.
const RELATCH_AFTER: u32 = 50;

/// Packets in an unbroken sequence after which a new address that continues the latched
/// stream is followed (see [`RtpReceiver::accept`]).
pub const FOLLOW_AFTER: u32 = 3;

/// How far ahead of the highest sequence number heard a new address's packets may be and
/// still continue the stream: two seconds of 20 ms packets lost in the move.
pub const FOLLOW_WINDOW: u16 = 100;

/// How long the latched source must have been quiet before a new address is followed.
pub const FOLLOW_QUIET: Duration = Duration::from_millis(200);

/// Runs towards a follow one call may begin: a rebinding begins one (or a few, with stray
/// packets), while someone sweeping sequence numbers in search of the window would need
/// hundreds.
pub const FOLLOW_TRIES: u32 = 16;

impl RtpReceiver {
    /// A receiver expecting media from `expected` (the SDP's address; `None` when the SDP
    /// named none that can be trusted, e.g. a host name or 0.0.0.0).
    pub fn new(expected: Option<SocketAddr>, latching: Latching) -> Self {
        Self {
            expected,
            signalled: expected,
            signalling: None,
            latching,
            latched: false,
            previous: None,
            heard_at: None,
            candidate: None,
            tries: 0,
            sequences: HashMap::new(),
            stats: ReceiveStats::default(),
        }
    }

    /// The call's signalling came from `ip`: with latching, a source at that IP may be
    /// latched as well as one at the SDP's.
    pub fn set_signalling(&mut self, ip: IpAddr) {
        self.signalling = Some(ip);
    }

    /// Whether a source at `ip` may be latched: the SDP's IP (the phone itself, or a NAT
    /// or media relay the SDP was fixed up for) or the signalling's (a phone behind a NAT
    /// sends its SIP and its RTP from the NAT's address). Any other host could latch the
    /// call by sending first (RTP bleed: its packets, sent to the port before the ACK,
    /// wait in the socket and are read before the caller's).
    fn latchable(&self, ip: IpAddr) -> bool {
        // Hosts as limits per client count them: an IPv4-mapped address as its IPv4 one
        // (a dual-stack socket's IPv4 peer), an IPv6 address by its /64 (a phone may send
        // its RTP from another of its temporary addresses than its SIP).
        let host = client_key(ip);
        self.signalled.is_some_and(|a| client_key(a.ip()) == host)
            || self.signalling.is_some_and(|s| client_key(s) == host)
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
                self.candidate = None;
            }
        }
    }

    /// Takes `from` as the call's source from now on.
    fn latch(&mut self, from: SocketAddr) {
        self.expected = Some(from);
        self.latched = true;
        self.previous = None;
        self.candidate = None;
    }

    /// Whether a packet of `ssrc` and `seq` from `from`, not the latched source, arriving
    /// `now`, completes the proof that the source moved there (see [`RtpReceiver::accept`]).
    fn rebound(&mut self, from: SocketAddr, ssrc: Ssrc, seq: u16, now: Instant) -> bool {
        let ahead = self
            .sequences
            .get(&ssrc)
            .and_then(|(numbering, _)| numbering.highest())
            .map(|highest| seq.wrapping_sub(highest));
        let continues = ahead.is_some_and(|n| (1..=FOLLOW_WINDOW).contains(&n));
        let same = |c: &Candidate| c.from == from && c.ssrc == ssrc;
        // The candidate's next packet goes on with its run, even past the window (its
        // stream moves on while it waits for the source to go quiet); any other packet
        // must continue the latched stream.
        let run = match self.candidate {
            Some(c) if same(&c) && seq == c.seq.wrapping_add(1) => c.run + 1,
            _ if continues && self.tries < FOLLOW_TRIES => {
                self.tries += 1;
                1
            }
            candidate => {
                // A break in the candidate's own stream starts its proof over.
                if candidate.as_ref().is_some_and(same) {
                    self.candidate = None;
                }
                return false;
            }
        };
        self.candidate = Some(Candidate {
            from,
            ssrc,
            seq,
            run,
        });
        let quiet = self
            .heard_at
            .is_none_or(|at| now.saturating_duration_since(at) >= FOLLOW_QUIET);
        run >= FOLLOW_AFTER && quiet
    }

    /// Whether RTP with `ssrc` has been accepted from the call's sources.
    pub fn has_heard(&self, ssrc: Ssrc) -> bool {
        self.sequences.contains_key(&ssrc)
    }

    /// The counters.
    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }

    /// Checks a datagram from `from` that arrived `now`: the packet if it is RTP from the
    /// call's source.
    ///
    /// With latching, the source also follows a NAT rebinding: a NAT that maps the call's
    /// flow to a new port mid-call (its mapping expired, or it was rebooted; sometimes to
    /// another address of its pool) gives no re-INVITE, and without it the caller's keys
    /// go unheard and our prompts go to a dead mapping. Another address is followed when
    /// it continues the latched stream so closely that only that stream's own sender, or
    /// someone who sees its packets anyway, could produce it:
    /// - its packets carry an SSRC already heard from the call's sources (32 random bits
    ///   a stranger off the path cannot guess), with sequence numbers 1 to
    ///   [`FOLLOW_WINDOW`] ahead of the highest heard of that SSRC (a stranger's own
    ///   stream, or an old capture replayed, is off by far);
    /// - [`FOLLOW_AFTER`] of them come in an unbroken sequence, so one stray or forged
    ///   packet is never enough;
    /// - the latched source has sent nothing for [`FOLLOW_QUIET`], as when its mapping
    ///   died: while it still sends, the stream has not moved, and two copies of it (a
    ///   relay and the phone) do not make the call flap between them;
    /// - the call has begun fewer than [`FOLLOW_TRIES`] such runs: the window is 100 of
    ///   65,536 numbers, so someone who knows the SSRC but not the numbering would sweep
    ///   for it, and runs out of tries first.
    ///
    /// The SSRC and numbering are what our RTCP reports to the caller carry, so those go
    /// only to a source whose report names an SSRC heard on RTP (see
    /// [`crate::media::session`]): a host behind the caller's NAT cannot have them sent to
    /// itself.
    ///
    /// Until then the new address's packets are ignored, so a rebinding costs about
    /// [`FOLLOW_QUIET`] of the caller's audio (a key press wholly within it is not heard),
    /// while a stranger's injected event never becomes a key. Asterisk's `strictrtp` asks
    /// a new address for `probation` packets in sequence (4 by default), but only while it
    /// learns after the SDP set the address, and then locks, so a later rebinding is not
    /// followed; rtpengine's `media-handover` lets any new address take over, and its
    /// `strict-source` none. The SSRC and sequence check is what makes following safe at
    /// any time.
    pub fn accept<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
    ) -> Option<Accepted<'a>> {
        let Ok(rtp) = RtpReader::new(datagram) else {
            self.stats.malformed += 1;
            return None;
        };
        if rtp.version() != 2 {
            self.stats.malformed += 1;
            return None;
        }
        // With latching, the first source seen at the SDP's or the signalling's IP is
        // latched, even when it is the SDP's address: else a stranger's packet could still
        // latch later and take the call over.
        let trusted = match (self.expected, self.latching) {
            (_, Latching::Once) if !self.latched => {
                let latchable = self.latchable(from.ip());
                match &mut self.previous {
                    Some((previous, heard)) if *previous == from => {
                        *heard += 1;
                        if *heard >= RELATCH_AFTER {
                            self.latch(from);
                        }
                        true
                    }
                    _ if latchable => {
                        self.latch(from);
                        true
                    }
                    _ => false,
                }
            }
            (Some(addr), _) if addr == from => true,
            (Some(_), Latching::Once) => {
                let (ssrc, seq) = (Ssrc(rtp.ssrc()), u16::from(rtp.sequence_number()));
                let moved = self.rebound(from, ssrc, seq, now);
                if moved {
                    self.latch(from);
                    self.stats.followed += 1;
                }
                moved
            }
            _ => false,
        };
        if !trusted {
            self.stats.foreign += 1;
            return None;
        }
        self.heard_at = Some(now);
        let ssrc = Ssrc(rtp.ssrc());
        if !self.sequences.contains_key(&ssrc) && self.sequences.len() >= MAX_SSRCS {
            let oldest = self
                .sequences
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(old, _)| *old);
            if let Some(old) = oldest {
                self.sequences.remove(&old);
            }
        }
        self.stats.accepted += 1;
        let (numbering, heard) = self.sequences.entry(ssrc).or_default();
        *heard = self.stats.accepted;
        let seq = numbering.extend(u16::from(rtp.sequence_number()));
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
    //! Every address is loopback: distinct hosts (a caller's private address, its NAT's
    //! public one, another address of the NAT's pool, a stranger) are distinct 127.0.0.x.

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// A receiver whose call's signalling came from the caller's NAT, 127.0.0.1.
    fn receiver(expected: Option<SocketAddr>, latching: Latching) -> RtpReceiver {
        let mut r = RtpReceiver::new(expected, latching);
        r.set_signalling(IpAddr::from([127, 0, 0, 1]));
        r
    }

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

    /// A sender that renumbers its stream (RFC 3550 A.1's resync): a lone jump is a stray
    /// packet and leaves the count as it was; a jump followed by the next number starts a
    /// new count above every number given before, whichever way it went.
    #[test]
    fn a_renumbered_stream_is_followed_after_two_packets() {
        for new_start in [40_000_u16, 4_000, 900] {
            let mut x = SeqExtender::default();
            let first = x.extend(1000).0;
            for i in 1..100 {
                x.extend(1000 + i);
            }
            let highest = first + 99;
            // A stray packet, then the old numbering again: nothing moved.
            x.extend(new_start.wrapping_add(5000));
            assert_eq!(x.extend(1100).0, highest + 1);
            x.extend(new_start);
            let renumbered = x.extend(new_start + 1).0;
            assert!(renumbered > highest + 1, "{new_start}");
            assert_eq!(x.highest(), Some(new_start + 1));
            for i in 2..1000 {
                assert_eq!(x.extend(new_start + i).0, renumbered + u64::from(i) - 1);
            }
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
        let t0 = Instant::now();
        let caller: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        let mut r = receiver(Some(caller), Latching::Off);
        assert!(r.accept(stranger, &rtp(1, 9), t0).is_none());
        let packet = rtp(2, 9);
        let ok = r.accept(caller, &packet, t0).unwrap();
        assert_eq!((ok.pt, ok.payload), (101, &[1, 2, 3, 4][..]));
        assert!(r.accept(caller, b"not rtp", t0).is_none());
        assert_eq!(
            r.stats(),
            ReceiveStats {
                accepted: 1,
                foreign: 1,
                malformed: 1,
                followed: 0,
            }
        );
    }

    #[test]
    fn latching_happens_once() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let mut r = receiver(None, Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1), t0).is_some());
        assert_eq!(r.source(), Some(nat));
        assert!(r.accept(other, &rtp(2, 1), t0).is_none(), "no second latch");
        // Latched sources are never settled: the socket stays unconnected.
        assert_eq!(r.settled_source(), None);
        // An SDP address given before the latch is where media goes until then.
        let sdp: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let waiting = receiver(Some(sdp), Latching::Once);
        assert_eq!(
            (waiting.source(), waiting.settled_source()),
            (Some(sdp), None)
        );
        assert_eq!(
            receiver(Some(sdp), Latching::Off).settled_source(),
            Some(sdp)
        );
        // Without latching and without an SDP address nothing is trusted.
        let mut closed = receiver(None, Latching::Off);
        assert!(closed.accept(nat, &rtp(1, 1), t0).is_none());
    }

    #[test]
    fn a_latched_source_is_learnt_afresh_when_the_sdp_moves_the_media() {
        let t0 = Instant::now();
        let private: SocketAddr = "127.0.0.2:30000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let moved: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let mut r = receiver(Some(private), Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1), t0).is_some());
        // A session refresh naming the same address, and hold naming none, keep the latch.
        r.update_expected(Some(private));
        r.update_expected(None);
        r.update_expected(Some(private));
        assert_eq!(r.source(), Some(nat));
        assert!(r.accept(moved, &rtp(2, 1), t0).is_none(), "no second latch");
        // A re-INVITE moves the media (a B2BUA leaving the path): sent there at once. The
        // old source, still relaying for a moment, is heard but not latched again; the
        // first other source seen is.
        r.update_expected(Some(moved));
        assert_eq!(r.source(), Some(moved));
        for seq in 10..20 {
            assert!(
                r.accept(nat, &rtp(seq, 1), t0).is_some(),
                "the relay until the switch"
            );
        }
        assert_eq!(r.source(), Some(moved));
        assert!(r.accept(moved, &rtp(3, 1), t0).is_some());
        assert!(
            r.accept(nat, &rtp(4, 1), t0).is_none(),
            "the old source is gone"
        );
        assert_eq!(r.source(), Some(moved));
        // Without latching the SDP's address is simply followed.
        let mut plain = receiver(Some(private), Latching::Off);
        plain.update_expected(Some(moved));
        assert_eq!(plain.settled_source(), Some(moved));
        assert!(plain.accept(moved, &rtp(1, 1), t0).is_some());
    }

    #[test]
    fn a_source_that_alone_goes_on_after_the_sdp_moved_is_latched_again() {
        let t0 = Instant::now();
        // The SDP moved, the media did not (a NAT's mapping that survived the change).
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let moved: SocketAddr = "127.0.0.3:30000".parse().unwrap();
        let mut r = receiver(None, Latching::Once);
        assert!(r.accept(nat, &rtp(1, 1), t0).is_some());
        r.update_expected(Some(moved));
        for seq in 2..=RELATCH_AFTER {
            assert!(
                r.accept(nat, &rtp(u16::try_from(seq).unwrap(), 1), t0)
                    .is_some()
            );
            assert_eq!(r.source(), Some(moved), "packet {seq}");
        }
        assert!(r.accept(nat, &rtp(99, 1), t0).is_some());
        assert_eq!(r.source(), Some(nat));
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        assert!(r.accept(stranger, &rtp(100, 1), t0).is_none());
    }

    /// RTP bleed: a host that sends to the call's port first (its packets wait in the
    /// socket from before the ACK) is not latched unless it is at the SDP's or the
    /// signalling's IP; the caller, sending next, is.
    #[test]
    fn only_the_sdp_or_signalling_ip_is_latched() {
        let t0 = Instant::now();
        let private: SocketAddr = "127.0.0.2:30000".parse().unwrap();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.9:5004".parse().unwrap();
        let mut r = receiver(Some(private), Latching::Once);
        for seq in 1..20 {
            assert!(r.accept(stranger, &rtp(seq, 66), t0).is_none());
        }
        assert!(r.accept(nat, &rtp(1, 7), t0).is_some());
        assert_eq!(r.source(), Some(nat));
        assert_eq!(r.stats().foreign, 19);
        // Without the signalling's IP, the SDP's alone.
        let mut r = RtpReceiver::new(Some(private), Latching::Once);
        assert!(r.accept(nat, &rtp(1, 7), t0).is_none());
        let from_sdp_ip: SocketAddr = "127.0.0.2:31000".parse().unwrap();
        assert!(r.accept(from_sdp_ip, &rtp(1, 7), t0).is_some());
        assert_eq!(r.source(), Some(from_sdp_ip));
        // A re-INVITE moving the media to another host makes that host's IP latchable.
        let relay: SocketAddr = "127.0.0.5:20000".parse().unwrap();
        let mut r = receiver(Some(private), Latching::Once);
        assert!(r.accept(nat, &rtp(1, 7), t0).is_some());
        r.update_expected(Some(relay));
        assert!(r.accept(stranger, &rtp(2, 66), t0).is_none());
        assert!(r.accept(relay, &rtp(1, 8), t0).is_some());
        assert_eq!(r.source(), Some(relay));
        // The signalling seen over a dual-stack socket (IPv4-mapped), RTP over IPv4.
        let mut r = RtpReceiver::new(Some(private), Latching::Once);
        r.set_signalling(IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
        assert!(r.accept(nat, &rtp(1, 7), t0).is_some());
        // An IPv6 phone's RTP from another address of its /64 than its SIP; not from
        // another /64.
        let mut r = RtpReceiver::new(None, Latching::Once);
        r.set_signalling("2001:db8:1:2::10".parse().unwrap());
        let other_64: SocketAddr = "[2001:db8:1:3::10]:5004".parse().unwrap();
        assert!(r.accept(other_64, &rtp(1, 66), t0).is_none());
        let same_64: SocketAddr = "[2001:db8:1:2:a:b:c:d]:5004".parse().unwrap();
        assert!(r.accept(same_64, &rtp(1, 7), t0).is_some());
    }

    #[test]
    fn latching_onto_the_sdp_address_when_it_is_the_first_source() {
        let t0 = Instant::now();
        // A caller not behind a NAT sends from the SDP's address: that is the first source
        // seen, so it is latched, and a stranger's packet afterwards cannot take over.
        let sdp: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:6666".parse().unwrap();
        let mut r = receiver(Some(sdp), Latching::Once);
        assert!(r.accept(sdp, &rtp(1, 1), t0).is_some());
        assert!(
            r.accept(stranger, &rtp(2, 1), t0).is_none(),
            "a stranger took over"
        );
        assert_eq!(r.source(), Some(sdp));
        assert!(r.accept(sdp, &rtp(3, 1), t0).is_some());
    }

    /// `rtp(seq, ssrc)` packets numbered `seqs` from `from`, one every 20 ms from `start`:
    /// whether each was accepted.
    fn send(
        r: &mut RtpReceiver,
        from: SocketAddr,
        ssrc: u32,
        seqs: std::ops::Range<u16>,
        start: Instant,
    ) -> Vec<bool> {
        seqs.enumerate()
            .map(|(i, seq)| {
                let now = start + Duration::from_millis(20 * i as u64);
                r.accept(from, &rtp(seq, ssrc), now).is_some()
            })
            .collect()
    }

    const MS: Duration = Duration::from_millis(1);

    /// A receiver latched onto `nat`, which sent SSRC 7's packets 1 to 10, 20 ms apart from
    /// `t0` (the last at `t0` + 180 ms).
    fn latched(nat: SocketAddr, t0: Instant) -> RtpReceiver {
        let sdp: SocketAddr = "127.0.0.2:30000".parse().unwrap();
        let mut r = receiver(Some(sdp), Latching::Once);
        assert!(send(&mut r, nat, 7, 1..11, t0).iter().all(|&a| a));
        assert_eq!(r.source(), Some(nat));
        r
    }

    /// A NAT rebinding, to another port or another address of its pool: the stream goes on
    /// from there, and is followed once the old mapping has been quiet for
    /// [`FOLLOW_QUIET`] and [`FOLLOW_AFTER`] packets have continued it. Media then goes
    /// there, and the old mapping is a stranger.
    #[test]
    fn a_nat_rebinding_is_followed_once_the_stream_continues_from_there() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for rebound in ["127.0.0.1:40010", "127.0.0.4:51000"] {
            let rebound: SocketAddr = rebound.parse().unwrap();
            let mut r = latched(nat, t0);
            // The next packet, 20 ms after the last from the old mapping.
            let start = t0 + 200 * MS;
            let accepted = send(&mut r, rebound, 7, 11..30, start);
            // Quiet for 200 ms at packet 20 (the old one's last was packet 10).
            let first = accepted.iter().position(|&a| a).unwrap();
            assert_eq!(first, 9, "{accepted:?}");
            assert!(accepted[first..].iter().all(|&a| a), "{accepted:?}");
            assert_eq!(r.source(), Some(rebound));
            assert_eq!(r.stats().followed, 1);
            assert_eq!(r.stats().foreign, 9);
            // Latched sources are never settled: the socket stays unconnected.
            assert_eq!(r.settled_source(), None);
            // The old mapping, or a copy of its last packets, is now a stranger.
            assert!(r.accept(nat, &rtp(29, 7), t0 + MS * 700).is_none());
            assert!(r.accept(nat, &rtp(30, 7), t0 + MS * 700).is_none());
            assert_eq!(r.source(), Some(rebound));
        }
    }

    /// A long call whose keys came with an SSRC each (SIPp's `play_dtmf`), more of them than
    /// are tracked: the ones forgotten are the keys', not the audio stream still heard, so
    /// a rebinding of that stream is still followed.
    #[test]
    fn many_ssrcs_do_not_forget_the_live_stream() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut r = latched(nat, t0);
        let mut seq = 11;
        for key in 0..MAX_SSRCS as u32 {
            let now = t0 + 200 * MS + 20 * MS * key;
            assert!(r.accept(nat, &rtp(seq, 7), now).is_some());
            seq += 1;
            // The key last, so that the move comes right after an SSRC too many.
            assert!(r.accept(nat, &rtp(1, 1000 + key), now).is_some());
        }
        assert!(r.sequences.len() <= MAX_SSRCS);
        assert!(r.has_heard(Ssrc(7)));
        assert!(!r.has_heard(Ssrc(1000)), "the oldest key's SSRC is kept");
        let rebound: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        let later = t0 + 10 * FOLLOW_QUIET + 20 * MS * MAX_SSRCS as u32;
        let accepted = send(&mut r, rebound, 7, seq..seq + FOLLOW_AFTER as u16, later);
        assert_eq!(accepted.last(), Some(&true), "{accepted:?}");
        assert_eq!(r.source(), Some(rebound));
    }

    /// Someone who knows the SSRC but not the numbering sweeps sequence numbers for the
    /// window, each hit beginning a run: after [`FOLLOW_TRIES`] runs the call follows no
    /// one, not even a run that would otherwise prove a move.
    #[test]
    fn a_sweep_for_the_window_runs_out_of_tries() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let sweeper: SocketAddr = "127.0.0.1:45000".parse().unwrap();
        let mut r = latched(nat, t0);
        let later = t0 + 5 * FOLLOW_QUIET;
        // Every other number in the window: each a run of one, none continued.
        let hits = u16::try_from(FOLLOW_TRIES).unwrap();
        for i in 0..hits {
            assert!(r.accept(sweeper, &rtp(12 + 2 * i, 7), later).is_none());
        }
        assert_eq!(r.tries, FOLLOW_TRIES);
        let next = 13 + 2 * hits;
        assert_eq!(send(&mut r, sweeper, 7, next..next + 5, later), [false; 5]);
        assert_eq!((r.source(), r.stats().followed), (Some(nat), 0));
        // With tries left, the same run is followed.
        let mut fresh = latched(nat, t0);
        assert_eq!(
            send(&mut fresh, sweeper, 7, next..next + 3, later),
            [false, false, true]
        );
    }

    /// A stream that has been quiet a while (on hold, or silence suppression) is followed
    /// after [`FOLLOW_AFTER`] packets in an unbroken sequence, not before; a gap in them
    /// starts the count over.
    #[test]
    fn a_rebinding_needs_packets_in_an_unbroken_sequence() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let rebound: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        let mut r = latched(nat, t0);
        let later = t0 + 5 * FOLLOW_QUIET;
        assert_eq!(
            send(&mut r, rebound, 7, 11..14, later),
            [false, false, true]
        );
        assert_eq!(r.source(), Some(rebound));

        let mut r = latched(nat, t0);
        let mut heard = send(&mut r, rebound, 7, 11..13, later);
        // Packet 13 is lost: 14 starts the count over.
        heard.extend(send(&mut r, rebound, 7, 14..18, later + 60 * MS));
        assert_eq!(heard, [false, false, false, false, true, true]);
    }

    /// Packets from another address with another SSRC are a stranger's, however long the
    /// source has been quiet and however they are numbered: never followed, never heard.
    #[test]
    fn a_stranger_with_another_ssrc_is_not_followed() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        let mut r = latched(nat, t0);
        let later = t0 + 5 * FOLLOW_QUIET;
        assert!(!send(&mut r, stranger, 8, 11..111, later).contains(&true));
        assert_eq!(r.source(), Some(nat));
        assert_eq!((r.stats().followed, r.stats().foreign), (0, 100));
        // The caller goes on from its own address.
        assert!(r.accept(nat, &rtp(11, 7), later + MS * 3000).is_some());
    }

    /// Packets with the stream's SSRC but numbered far from it (a stranger guessing, a
    /// capture replayed) are not followed: more than [`FOLLOW_WINDOW`] ahead, or behind.
    #[test]
    fn a_stranger_with_far_off_sequence_numbers_is_not_followed() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.5:40010".parse().unwrap();
        let later = t0 + 5 * FOLLOW_QUIET;
        // The highest heard is 10.
        let window = 10 + FOLLOW_WINDOW;
        for (case, seqs) in [
            ("just beyond the window", window + 1..window + 40),
            ("far ahead", 30_000..30_040),
            ("behind", 65_500..65_535),
            ("a replay", 1..11),
        ] {
            let mut r = latched(nat, t0);
            assert!(
                !send(&mut r, stranger, 7, seqs, later).contains(&true),
                "{case}"
            );
            assert_eq!(r.source(), Some(nat), "{case}");
        }
        // The window's last number still continues the stream.
        let mut r = latched(nat, t0);
        let heard = send(&mut r, stranger, 7, window..window + 3, later);
        assert_eq!(heard, [false, false, true]);
    }

    /// While the latched source still sends, another address continuing its stream (a
    /// relay and the phone both sending, someone on the path copying it) is not followed;
    /// once the source has been quiet for [`FOLLOW_QUIET`], it is.
    #[test]
    fn no_rebinding_is_followed_while_the_source_still_sends() {
        let t0 = Instant::now();
        let nat: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let copy: SocketAddr = "127.0.0.1:40010".parse().unwrap();
        let mut r = latched(nat, t0);
        // For a second the source sends packet n and the copy n + 1, 10 ms later.
        for n in 11..61_u16 {
            let now = t0 + 20 * MS * u32::from(n - 1);
            assert!(r.accept(nat, &rtp(n, 7), now).is_some(), "packet {n}");
            assert!(r.accept(copy, &rtp(n + 1, 7), now + 10 * MS).is_none());
        }
        assert_eq!((r.source(), r.stats().followed), (Some(nat), 0));
        // The source stops (its last packet at 1,180 ms): the copy's stream is followed
        // once 200 ms have passed.
        let start = t0 + 1_200 * MS;
        let heard = send(&mut r, copy, 7, 62..75, start);
        let first = heard.iter().position(|&a| a);
        assert_eq!(first, Some(9), "{heard:?}");
        assert_eq!(r.source(), Some(copy));
    }

    /// Without latching the SDP's address alone is heard: no rebinding is followed.
    #[test]
    fn without_latching_no_rebinding_is_followed() {
        let t0 = Instant::now();
        let sdp: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:4010".parse().unwrap();
        let mut r = receiver(Some(sdp), Latching::Off);
        assert!(send(&mut r, sdp, 7, 1..11, t0).iter().all(|&a| a));
        let later = t0 + 5 * FOLLOW_QUIET;
        assert!(!send(&mut r, other, 7, 11..31, later).contains(&true));
        assert_eq!(r.settled_source(), Some(sdp));
    }
}
