//! RTCP (RFC 3550 §6), sans-IO: the reports a call sends about its media, and what it reads
//! in the peer's.
//!
//! Every call sends a compound report (§6.1: a sender or receiver report, then an SDES
//! packet with the CNAME) at the RFC's interval, and a BYE when it ends. Peers that hang up
//! a call whose RTCP went quiet (Cisco CUBE's `timer receive-rtcp`, media timeouts of some
//! SBCs) then keep a held call up, and monitoring that reads RTCP sees the call's quality.
//! The peer's reports on our stream (its loss and jitter, and the round trip its LSR and
//! DLSR give) are kept for the end-of-call log.
//!
//! The shell feeds every accepted RTP packet to [`Rtcp::on_rtp`] and every RTCP datagram to
//! [`Rtcp::receive`], and sends [`Rtcp::write_report`]'s bytes when [`Rtcp::poll_timeout`]
//! comes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, RngExt};

use super::g711;
use super::rtp::{Accepted, MAX_DROPOUT, MAX_MISORDER, Ssrc};

/// The interval between reports. RFC 3550 §6.2 computes it from the session's members and
/// bandwidth, with a minimum of 5 s: for two members and G.711 (5 % of 87 kbit/s for RTCP,
/// reports of about 100 bytes) the computed value is under half a second, so the minimum
/// is the interval. The first report comes after half of it (§6.2, "initial").
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// RFC 3550 §6.3.1 and A.7: each interval is drawn from [0.5, 1.5] times the nominal one
/// and divided by e − 3/2, which compensates for timer reconsideration's bias toward short
/// intervals.
const COMPENSATION: f64 = 1.218_28;

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;
const SDES_CNAME: u8 = 1;

/// Seconds from NTP's epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Sources reported on. SIPp's `play_dtmf` starts a new SSRC per action; the sources heard
/// longest ago make room.
const MAX_SOURCES: usize = 4;
// A report holds at most 31 blocks (five bits of count).
const _: () = assert!(MAX_SOURCES <= 31);

/// Our reports remembered to measure the round trip from the peer's LSR.
const SENT_REPORTS: usize = 4;

/// Whether a datagram on an RTP port that carries RTCP too (`a=rtcp-mux`) is RTCP: RFC 5761
/// §4, its second byte is a packet type 192–223, which RTP payload types 64–95 with the
/// marker bit would give (a multiplexed stream must not use them; an unmultiplexed one may,
/// so the caller checks the payload types in use then).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

/// What the peer's last report said of our stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerReport {
    /// The share of our packets it lost in its last interval, in 256ths.
    pub fraction_lost: u8,
    /// Our packets it lost since the start (negative with duplicates).
    pub cumulative_lost: i32,
    /// The interarrival jitter it measured, in 8 kHz timestamp units.
    pub jitter: u32,
    /// The round trip, when the report answered one of ours (RFC 3550 §6.4.1).
    pub round_trip: Option<Duration>,
}

/// What we measured of the peer's main source (the one heard most recently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    /// Its packets we never received (negative with duplicates).
    pub lost: i64,
    /// The interarrival jitter, in 8 kHz timestamp units.
    pub jitter: u32,
}

/// Counts of RTCP sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpStats {
    /// Compound packets built.
    pub sent: u64,
    /// Compound packets read.
    pub received: u64,
    /// Datagrams that were not valid RTCP.
    pub malformed: u64,
    /// Valid RTCP with no report first ([`Unread::NoReport`]).
    pub no_report: u64,
}

/// What a sender report says of our own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// RTP packets sent so far.
    pub packets: u64,
    /// Payload octets sent so far.
    pub octets: u64,
    /// The RTP timestamp that stands for the report's time.
    pub timestamp: u32,
}

/// Why an RTCP datagram was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    /// Not valid RTCP (RFC 3550 A.2: version 2, lengths that add up to the datagram,
    /// padding only on the last packet).
    #[error("malformed RTCP")]
    Malformed,
    /// Valid RTCP packets, but no sender or receiver report first, as RFC 3550 §6.1 asks of
    /// a compound packet: an APP packet alone, say, which baresip sends to keep a NAT
    /// binding open. Nothing in it is read.
    #[error("RTCP without a report")]
    NoReport,
}

/// Reception statistics of one source (RFC 3550 A.3, A.8).
#[derive(Debug, Clone)]
struct Source {
    ssrc: Ssrc,
    /// The lowest and highest extended sequence numbers seen.
    base: u64,
    max: u64,
    /// The number that, arriving next, confirms a jump in the numbering (A.1's `bad_seq`).
    jumped: Option<u64>,
    received: u64,
    /// At the last report: packets expected and received (for the fraction lost).
    expected_prior: u64,
    received_prior: u64,
    /// The last audio packet's transit time, in timestamp units.
    transit: Option<u32>,
    /// Interarrival jitter, in timestamp units scaled by 16 (A.8's integer form); 64 bits,
    /// as a peer's timestamps may jump by up to 2³¹ and its estimate with them.
    jitter: u64,
    /// The middle 32 bits of the NTP time of its last sender report, and when it came.
    last_sr: Option<(u32, Instant)>,
    heard: Instant,
}

impl Source {
    fn new(ssrc: Ssrc, seq: u64, now: Instant) -> Self {
        Self {
            ssrc,
            base: seq,
            max: seq,
            jumped: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0,
            last_sr: None,
            heard: now,
        }
    }

    /// Counts a packet numbered `seq` (RFC 3550 A.1): one within [`MAX_DROPOUT`] ahead of
    /// the highest or [`MAX_MISORDER`] behind it continues the count. Any other is not
    /// counted, unless it follows the one before it, which restarts the count there (a
    /// sender that renumbered its stream): else a renumbering would add the jump to the
    /// packets expected, and the reports would tell of thousands lost for minutes.
    fn counts(&mut self, seq: u64) -> bool {
        let ahead = seq.saturating_sub(self.max);
        let behind = self.max.saturating_sub(seq);
        if ahead < u64::from(MAX_DROPOUT) && behind <= u64::from(MAX_MISORDER) {
            self.jumped = None;
            self.base = self.base.min(seq);
            self.max = self.max.max(seq);
        } else if self.jumped == Some(seq) {
            self.jumped = None;
            self.base = seq;
            self.max = seq;
            self.received = 0;
            self.expected_prior = 0;
            self.received_prior = 0;
        } else {
            self.jumped = Some(seq + 1);
            return false;
        }
        self.received += 1;
        true
    }

    fn expected(&self) -> u64 {
        self.max - self.base + 1
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// The jitter in timestamp units, as a report carries it.
    fn jitter(&self) -> u32 {
        u32::try_from(self.jitter >> 4).unwrap_or(u32::MAX)
    }

    /// The report block on this source (RFC 3550 §6.4.1), starting a new interval.
    fn write_block(&mut self, now: Instant, out: &mut Vec<u8>) {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = match expected_interval {
            0 => 0,
            n => ((lost_interval << 8) / n).min(255) as u8,
        };
        // 24 bits, signed, clamped (RFC 3550 A.3).
        let lost = self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, compact(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.push(fraction);
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        // The extended sequence numbers start in the second cycle (`SeqExtender`): RFC 3550
        // counts cycles from the first packet's.
        out.extend_from_slice(&(self.max.wrapping_sub(1 << 16) as u32).to_be_bytes());
        out.extend_from_slice(&self.jitter().to_be_bytes());
        out.extend_from_slice(&lsr.to_be_bytes());
        out.extend_from_slice(&dlsr.to_be_bytes());
    }
}

/// A duration in units of 1/65536 s, as DLSR counts (saturating).
fn compact(d: Duration) -> u32 {
    let units = d.as_micros() * 65_536 / 1_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// `wall` as a 64-bit NTP timestamp (RFC 3550 §4).
fn ntp(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// One call's RTCP.
#[derive(Debug, Clone)]
pub struct Rtcp {
    /// Our SSRC: the RTP stream's.
    ssrc: Ssrc,
    cname: String,
    /// Where arrival times count from, for jitter.
    origin: Instant,
    next_due: Instant,
    last_report: Instant,
    /// RTP packets we had sent at the report before last and at the last: we are a sender
    /// while we sent any since the report before last (RFC 3550 §6.3.8).
    packets_at_reports: [u64; 2],
    sources: Vec<Source>,
    /// Our last reports: the middle of their NTP time, and when they were sent.
    sent_reports: Vec<(u32, Instant)>,
    peer: Option<PeerReport>,
    stats: RtcpStats,
}

impl Rtcp {
    /// A call's RTCP starting `now`, for our RTP stream `ssrc`. Its CNAME is random (RFC
    /// 7022: 96 bits, so that calls cannot be linked to one host or to each other).
    pub fn new(now: Instant, ssrc: Ssrc, rng: &mut impl Rng) -> Self {
        let cname: [u8; 12] = rng.random();
        let cname = cname.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            ssrc,
            cname,
            origin: now,
            next_due: now + randomized(MIN_INTERVAL / 2, rng),
            last_report: now,
            packets_at_reports: [0; 2],
            sources: Vec::new(),
            sent_reports: Vec::with_capacity(SENT_REPORTS),
            peer: None,
            stats: RtcpStats::default(),
        }
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_due
    }

    /// The counts so far.
    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    /// What the peer last reported of our stream.
    pub fn peer(&self) -> Option<PeerReport> {
        self.peer
    }

    /// What we measured of the source heard most recently.
    pub fn reception(&self) -> Option<Reception> {
        let source = self.sources.iter().max_by_key(|s| s.heard)?;
        Some(Reception {
            lost: source.lost(),
            jitter: source.jitter(),
        })
    }

    /// An RTP packet the call accepted, arriving `now`. `audio` says whether it is the
    /// codec's (jitter is measured on audio only: telephone-events keep one timestamp for
    /// a whole key press).
    pub fn on_rtp(&mut self, packet: &Accepted<'_>, audio: bool, now: Instant) {
        let seq = packet.seq.0;
        let index = match self.sources.iter().position(|s| s.ssrc == packet.ssrc) {
            Some(index) => index,
            None => {
                if self.sources.len() >= MAX_SOURCES
                    && let Some(oldest) =
                        (0..self.sources.len()).min_by_key(|&i| self.sources[i].heard)
                {
                    self.sources.swap_remove(oldest);
                }
                self.sources.push(Source::new(packet.ssrc, seq, now));
                self.sources.len() - 1
            }
        };
        let source = &mut self.sources[index];
        source.heard = now;
        if !source.counts(seq) {
            return;
        }
        if audio {
            // The arrival time in timestamp units (RFC 3550 A.8; every payload vportal
            // speaks, G.711 and telephone-event/8000, runs at 8 kHz); only differences
            // count, so it may wrap.
            let arrival = g711::samples_in(now.saturating_duration_since(self.origin)) as u32;
            let transit = arrival.wrapping_sub(packet.timestamp);
            if let Some(previous) = source.transit {
                let d = u64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
                // Never below zero: (J + 8) / 16 ≤ J for J ≥ 1, and 0 for J = 0.
                source.jitter = source.jitter + d - ((source.jitter + 8) >> 4);
            }
            source.transit = Some(transit);
        }
    }

    /// Builds the report due (replacing `out`'s contents): a sender report when we sent RTP
    /// since the report before last (a receiver report once the call has been held that
    /// long: RFC 3550 §6.3.8 keeps a sender for two intervals), with a block on each
    /// source heard since then, and our CNAME. Schedules the next.
    pub fn write_report(
        &mut self,
        now: Instant,
        wall: SystemTime,
        sender: SenderInfo,
        rng: &mut impl Rng,
        out: &mut Vec<u8>,
    ) {
        self.write_compound(now, wall, sender, out);
        self.next_due = now + randomized(MIN_INTERVAL, rng);
    }

    /// Builds the report that ends the call: [`Rtcp::write_report`]'s, then a BYE (RFC 3550
    /// §6.6).
    pub fn write_bye(
        &mut self,
        now: Instant,
        wall: SystemTime,
        sender: SenderInfo,
        out: &mut Vec<u8>,
    ) {
        self.write_compound(now, wall, sender, out);
        out.extend_from_slice(&[0x81, BYE, 0, 1]);
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
    }

    fn write_compound(
        &mut self,
        now: Instant,
        wall: SystemTime,
        sender: SenderInfo,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let is_sender = sender.packets > self.packets_at_reports[0];
        self.packets_at_reports = [self.packets_at_reports[1], sender.packets];
        let since = self.last_report;
        self.last_report = now;
        let count = self.sources.iter().filter(|s| s.heard >= since).count() as u8;
        let words = if is_sender { 6 } else { 1 } + 6 * u16::from(count);
        out.push(0x80 | count);
        out.push(if is_sender { SR } else { RR });
        out.extend_from_slice(&words.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        if is_sender {
            let ntp = ntp(wall);
            if self.sent_reports.len() == SENT_REPORTS {
                self.sent_reports.remove(0);
            }
            self.sent_reports.push(((ntp >> 16) as u32, now));
            out.extend_from_slice(&ntp.to_be_bytes());
            out.extend_from_slice(&sender.timestamp.to_be_bytes());
            // 32-bit counters wrap (RFC 3550 §6.4.1).
            out.extend_from_slice(&(sender.packets as u32).to_be_bytes());
            out.extend_from_slice(&(sender.octets as u32).to_be_bytes());
        }
        for source in self.sources.iter_mut().filter(|s| s.heard >= since) {
            source.write_block(now, out);
        }
        // SDES: one chunk, our SSRC and CNAME, then at least one zero byte ending the item
        // list, to a 32-bit boundary (RFC 3550 §6.5).
        let cname = self.cname.as_bytes();
        let chunk = 4 + 2 + cname.len();
        let padded = (chunk / 4 + 1) * 4;
        let words = (padded / 4) as u16;
        out.extend_from_slice(&[0x81, SDES]);
        out.extend_from_slice(&words.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.extend_from_slice(&[SDES_CNAME, cname.len() as u8]);
        out.extend_from_slice(cname);
        out.resize(out.len() + padded - chunk, 0);
        self.stats.sent += 1;
    }

    /// The SSRC of a compound packet's sender: the first report's (RFC 3550 §6.4). Read
    /// only from a packet [`Rtcp::receive`] took.
    pub fn sender(datagram: &[u8]) -> Option<Ssrc> {
        let bytes: [u8; 4] = datagram.get(4..8)?.try_into().ok()?;
        Some(Ssrc(u32::from_be_bytes(bytes)))
    }

    /// Reads an RTCP datagram from the peer that arrived `now`: its sender reports (for
    /// the LSR and DLSR of our next blocks) and its report blocks on our stream. Packet
    /// types it does not use (SDES, BYE, APP, feedback) are skipped.
    ///
    /// # Errors
    /// [`Unread::Malformed`] when the datagram is not valid RTCP (RFC 3550 A.2: version 2,
    /// lengths that add up to the datagram, padding only on the last packet); what came
    /// before the fault has been read. [`Unread::NoReport`] when it is, but does not start
    /// with a sender or receiver report (no reduced-size RTCP, RFC 5506, is agreed).
    pub fn receive(&mut self, datagram: &[u8], now: Instant) -> Result<(), Unread> {
        let result = self.read(datagram, now);
        match result {
            Ok(()) => self.stats.received += 1,
            Err(Unread::Malformed) => self.stats.malformed += 1,
            Err(Unread::NoReport) => self.stats.no_report += 1,
        }
        result
    }

    fn read(&mut self, datagram: &[u8], now: Instant) -> Result<(), Unread> {
        let reported = matches!(datagram.get(1), Some(&(SR | RR)));
        if datagram.is_empty() {
            return Err(Unread::Malformed);
        }
        let mut rest = datagram;
        while !rest.is_empty() {
            let [first, pt, hi, lo, ..] = *rest else {
                return Err(Unread::Malformed);
            };
            let len = (usize::from(u16::from_be_bytes([hi, lo])) + 1) * 4;
            if first >> 6 != 2 || len > rest.len() {
                return Err(Unread::Malformed);
            }
            let (packet, next) = rest.split_at(len);
            let mut body = &packet[4..];
            if first & 0x20 != 0 {
                // Padding: only the last packet may have it, its last byte says how much.
                let pad = usize::from(packet[len - 1]);
                if !next.is_empty() || pad == 0 || pad > body.len() {
                    return Err(Unread::Malformed);
                }
                body = &body[..body.len() - pad];
            }
            let count = usize::from(first & 0x1f);
            match pt {
                _ if !reported => {}
                SR => {
                    let [s0, s1, s2, s3, n0, n1, n2, n3, n4, n5, n6, n7, ..] = *body else {
                        return Err(Unread::Malformed);
                    };
                    let ssrc = Ssrc(u32::from_be_bytes([s0, s1, s2, s3]));
                    let ntp = u64::from_be_bytes([n0, n1, n2, n3, n4, n5, n6, n7]);
                    if let Some(source) = self.sources.iter_mut().find(|s| s.ssrc == ssrc) {
                        source.last_sr = Some(((ntp >> 16) as u32, now));
                    }
                    self.read_blocks(body.get(24..).ok_or(Unread::Malformed)?, count, now)?;
                }
                RR => self.read_blocks(body.get(4..).ok_or(Unread::Malformed)?, count, now)?,
                _ => {}
            }
            rest = next;
        }
        if reported {
            Ok(())
        } else {
            Err(Unread::NoReport)
        }
    }

    /// `count` report blocks at the start of `blocks`; the one on our stream is kept.
    fn read_blocks(&mut self, blocks: &[u8], count: usize, now: Instant) -> Result<(), Unread> {
        let blocks = blocks.get(..count * 24).ok_or(Unread::Malformed)?;
        for block in blocks.chunks_exact(24) {
            let word =
                |i: usize| u32::from_be_bytes([block[i], block[i + 1], block[i + 2], block[i + 3]]);
            if Ssrc(word(0)) != self.ssrc {
                continue;
            }
            // The 24-bit signed count, sign-extended.
            let cumulative_lost = (word(4) << 8) as i32 >> 8;
            let (lsr, dlsr) = (word(16), word(20));
            let round_trip = self
                .sent_reports
                .iter()
                .find(|(sent, _)| lsr != 0 && *sent == lsr)
                .and_then(|&(_, at)| {
                    let delay = Duration::from_micros(u64::from(dlsr) * 1_000_000 / 65_536);
                    now.saturating_duration_since(at).checked_sub(delay)
                });
            self.peer = Some(PeerReport {
                fraction_lost: block[4],
                cumulative_lost,
                jitter: word(12),
                round_trip,
            });
        }
        Ok(())
    }
}

/// `nominal` drawn from [0.5, 1.5] times itself and compensated (RFC 3550 §6.3.1, A.7).
fn randomized(nominal: Duration, rng: &mut impl Rng) -> Duration {
    nominal.mul_f64(rng.random_range(0.5..1.5) / COMPENSATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::ExtSeq;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// RFC 3550 §6.7, application-defined.
    const APP: u8 = 204;
    const MS: Duration = Duration::from_millis(1);

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// The wall clock at virtual time `at`.
    fn wall(start: Instant, at: Instant) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + (at - start)
    }

    fn packet(ssrc: u32, seq: u64, timestamp: u32) -> Accepted<'static> {
        Accepted {
            ssrc: Ssrc(ssrc),
            pt: 0,
            seq: ExtSeq((1 << 16) + seq),
            timestamp,
            marker: false,
            payload: &[0xff; 160],
        }
    }

    fn sender(packets: u64) -> SenderInfo {
        SenderInfo {
            packets,
            octets: packets * 160,
            timestamp: 1_234,
        }
    }

    /// The packets of a compound datagram: (first byte, type, whole packet).
    fn packets(datagram: &[u8]) -> Vec<(u8, u8, &[u8])> {
        let mut out = Vec::new();
        let mut rest = datagram;
        while !rest.is_empty() {
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            out.push((rest[0], rest[1], &rest[..len]));
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn reports_come_at_the_rfc_interval_the_first_after_half_of_it() {
        let start = Instant::now();
        let mut rng = rng();
        let mut out = Vec::new();
        for _ in 0..200 {
            let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng);
            let first = rtcp.poll_timeout() - start;
            // 2.5 s × [0.5, 1.5] / 1.21828.
            assert!(first >= 1_026 * MS && first <= 3_079 * MS, "{first:?}");
            let mut now = rtcp.poll_timeout();
            for _ in 0..5 {
                rtcp.write_report(now, wall(start, now), sender(0), &mut rng, &mut out);
                let gap = rtcp.poll_timeout() - now;
                assert!(gap >= 2_052 * MS && gap <= 6_157 * MS, "{gap:?}");
                now = rtcp.poll_timeout();
            }
        }
    }

    /// A caller that renumbers its stream but keeps its SSRC (an SBC re-anchoring media):
    /// the count restarts with the new numbering (RFC 3550 A.1) rather than reporting the
    /// jump as tens of thousands of packets lost, for minutes.
    #[test]
    fn a_renumbered_stream_restarts_the_count_not_a_loss() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        let mut numbering = crate::media::rtp::SeqExtender::default();
        let wire = (1000..1100)
            .chain(40_000..40_400)
            .chain([4_000])
            .chain(40_400..40_500);
        for (i, seq) in wire.enumerate() {
            let mut p = packet(7, 0, 160 * i as u32);
            p.seq = numbering.extend(seq);
            rtcp.on_rtp(&p, true, start + 20 * MS * i as u32);
        }
        let seen = rtcp.reception().unwrap();
        // The two packets that showed the new numbering, and the stray `4000`, are not
        // counted; nothing in it is lost.
        assert_eq!(seen.lost, 0, "{seen:?}");
        let now = start + 3 * MIN_INTERVAL / 2;
        let mut out = Vec::new();
        rtcp.write_report(now, wall(start, now), sender(0), &mut rng(), &mut out);
        // A receiver report: we sent nothing.
        let (_, pt, rr) = packets(&out)[0];
        assert_eq!(pt, RR);
        let block = &rr[8..];
        assert_eq!(&block[5..8], &[0, 0, 0], "cumulative lost");
        let highest = u32::from_be_bytes(block[8..12].try_into().unwrap());
        assert_eq!(highest as u16, 40_499, "highest sequence number");
    }

    #[test]
    fn a_sender_report_with_a_block_per_source_and_the_cname() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(0xdead_beef), &mut rng());
        // 100 packets of numbers 0..110: ten lost.
        for seq in (0..110).filter(|n| n % 11 != 5) {
            let at = start + 20 * MS * seq as u32;
            rtcp.on_rtp(&packet(7, seq, 160 * seq as u32), true, at);
        }
        let now = start + 3 * MIN_INTERVAL / 2;
        let mut out = Vec::new();
        rtcp.write_report(now, wall(start, now), sender(90), &mut rng(), &mut out);
        let parts = packets(&out);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(parts.len(), 2, "SR then SDES");
        let (first, pt, sr) = parts[0];
        assert_eq!((first, pt, sr.len()), (0x81, SR, 28 + 24));
        assert_eq!(&sr[4..8], &0xdead_beef_u32.to_be_bytes());
        let ntp = u64::from_be_bytes(sr[8..16].try_into().unwrap());
        assert_eq!(ntp >> 32, 1_700_000_000 + NTP_UNIX_OFFSET + 7);
        assert_eq!(&sr[16..20], &1_234_u32.to_be_bytes(), "RTP timestamp");
        assert_eq!(&sr[20..24], &90_u32.to_be_bytes(), "packets");
        assert_eq!(&sr[24..28], &14_400_u32.to_be_bytes(), "octets");
        let block = &sr[28..];
        assert_eq!(&block[..4], &7_u32.to_be_bytes());
        assert_eq!(block[4], 23, "fraction lost: 10 of 110 in 256ths");
        assert_eq!(&block[5..8], &[0, 0, 10], "cumulative lost");
        assert_eq!(
            &block[8..12],
            &109_u32.to_be_bytes(),
            "highest sequence number"
        );
        assert_eq!(
            &block[12..16],
            &0_u32.to_be_bytes(),
            "no jitter on an exact clock"
        );
        assert_eq!(
            &block[16..24],
            &[0; 8],
            "no sender report heard: LSR and DLSR 0"
        );
        let (first, pt, sdes) = parts[1];
        assert_eq!((first, pt), (0x81, SDES));
        assert_eq!(&sdes[4..8], &0xdead_beef_u32.to_be_bytes());
        assert_eq!(sdes[8], SDES_CNAME);
        let cname = &sdes[10..10 + usize::from(sdes[9])];
        assert_eq!(cname.len(), 24, "96 random bits in hex");
        assert!(cname.iter().all(u8::is_ascii_hexdigit));
        assert!(sdes[10 + cname.len()..].iter().all(|&b| b == 0));
        assert!(
            sdes.len() > 10 + cname.len(),
            "at least one zero byte ends the items"
        );

        // The next interval's fraction counts only its own packets.
        for seq in 110..120 {
            rtcp.on_rtp(&packet(7, seq, 160 * seq as u32), true, now + MS);
        }
        rtcp.write_report(now + MS, wall(start, now), sender(90), &mut rng(), &mut out);
        let parts = packets(&out);
        let (first, pt, sr) = parts[0];
        assert_eq!(
            (first, pt),
            (0x81, SR),
            "nothing sent in this interval, but in the one before: still a sender"
        );
        assert_eq!((sr[32], &sr[33..36]), (0, &[0, 0, 10][..]));
        rtcp.write_report(
            now + 2 * MS,
            wall(start, now),
            sender(90),
            &mut rng(),
            &mut out,
        );
        assert_eq!(
            packets(&out)[0].1,
            RR,
            "nothing sent for two intervals: a receiver"
        );
    }

    #[test]
    fn a_held_call_reports_as_a_receiver_and_the_bye_ends_the_last_report() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(5), &mut rng());
        let mut out = Vec::new();
        rtcp.write_bye(start, wall(start, start), sender(0), &mut out);
        let parts = packets(&out);
        let types: Vec<u8> = parts.iter().map(|p| p.1).collect();
        assert_eq!(types, [RR, SDES, BYE]);
        assert_eq!(parts[0].2.len(), 8, "no source heard: no block");
        assert_eq!(parts[2].2, &[0x81, BYE, 0, 1, 0, 0, 0, 5]);
        assert_eq!(rtcp.stats().sent, 1);
    }

    #[test]
    fn jitter_follows_rfc_3550s_estimator() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        // Every other packet 2 ms late: transit changes by 16 units each time, and the
        // estimate converges on 16.
        for seq in 0..2_000_u64 {
            let late = if seq % 2 == 1 { 2 * MS } else { Duration::ZERO };
            let at = start + 20 * MS * seq as u32 + late;
            rtcp.on_rtp(&packet(9, seq, 160 * seq as u32), true, at);
        }
        assert_eq!(rtcp.reception().map(|r| (r.lost, r.jitter)), Some((0, 15)));
        // Events keep one timestamp for a whole press: not measured.
        let mut events = rtcp.clone();
        for seq in 2_000..2_050_u64 {
            let at = start + 20 * MS * seq as u32;
            events.on_rtp(&packet(9, seq, 0), false, at);
        }
        assert_eq!(events.reception().map(|r| r.jitter), Some(15));

        // A peer's timestamps jumping by 2³¹ back and forth: the estimate grows toward
        // 2³¹ (and is reported within 32 bits), without overflowing.
        let mut hostile = Rtcp::new(start, Ssrc(1), &mut rng());
        for seq in 0..10_000_u64 {
            let ts = if seq % 2 == 0 { 0 } else { 1 << 31 };
            hostile.on_rtp(&packet(9, seq, ts), true, start);
        }
        let jitter = hostile.reception().unwrap().jitter;
        assert!(jitter > 1 << 30, "{jitter}");
    }

    #[test]
    fn the_peers_report_gives_its_loss_jitter_and_the_round_trip() {
        let start = Instant::now();
        let mut rng = rng();
        let mut ours = Rtcp::new(start, Ssrc(100), &mut rng);
        let mut theirs = Rtcp::new(start, Ssrc(200), &mut rng);
        let mut out = Vec::new();
        // Both send 50 packets; the network loses five of ours and delays by 30 ms.
        for seq in 0..50_u64 {
            let at = start + 20 * MS * seq as u32;
            if seq % 10 != 3 {
                theirs.on_rtp(&packet(100, seq, 160 * seq as u32), true, at + 30 * MS);
            }
            ours.on_rtp(&packet(200, seq, 160 * seq as u32), true, at + 30 * MS);
        }
        let t1 = start + 2 * MIN_INTERVAL / 5;
        ours.write_report(t1, wall(start, t1), sender(50), &mut rng, &mut out);
        theirs.receive(&out, t1 + 30 * MS).unwrap();
        // They answer 400 ms later; the report takes 30 ms to arrive.
        let t2 = t1 + 430 * MS;
        theirs.write_report(t2, wall(start, t2), sender(50), &mut rng, &mut out);
        ours.receive(&out, t2 + 30 * MS).unwrap();
        let peer = ours.peer().unwrap();
        assert_eq!(peer.fraction_lost, 25, "5 of 50 in 256ths");
        assert_eq!(peer.cumulative_lost, 5);
        assert_eq!(peer.jitter, 0);
        let rtt = peer.round_trip.unwrap();
        // 60 ms, less DLSR's rounding to 1/65536 s.
        assert!(rtt >= 59 * MS && rtt <= 61 * MS, "{rtt:?}");
        assert_eq!(ours.stats().received, 1);
        // A report on a stream not ours leaves ours alone.
        let mut stranger = Rtcp::new(start, Ssrc(300), &mut rng);
        stranger.on_rtp(&packet(999, 0, 0), true, t2);
        stranger.write_report(t2, wall(start, t2), sender(0), &mut rng, &mut out);
        ours.receive(&out, t2 + 40 * MS).unwrap();
        assert_eq!(ours.peer(), Some(peer));
    }

    #[test]
    fn a_negative_cumulative_loss_is_sign_extended() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        // An RR from SSRC 2 with one block on SSRC 1: 3 duplicates (-3).
        let mut rr = vec![0x81, RR, 0, 7, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0xff, 0xff, 0xfd];
        rr.extend_from_slice(&[0; 16]);
        rtcp.receive(&rr, start).unwrap();
        let peer = rtcp.peer().unwrap();
        assert_eq!((peer.cumulative_lost, peer.round_trip), (-3, None));
    }

    #[test]
    fn only_the_latest_sources_are_reported() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        for ssrc in 0..10_u32 {
            rtcp.on_rtp(&packet(ssrc, 0, 0), true, start + MS * ssrc);
        }
        let mut out = Vec::new();
        let now = start + MIN_INTERVAL;
        rtcp.write_report(now, wall(start, now), sender(0), &mut rng(), &mut out);
        let rr = packets(&out)[0].2;
        assert_eq!(rr[0] & 0x1f, 4);
        let reported: Vec<u32> = rr[8..]
            .chunks(24)
            .map(|b| u32::from_be_bytes(b[..4].try_into().unwrap()))
            .collect();
        assert_eq!(reported.len(), 4);
        assert!(reported.iter().all(|&s| s >= 6), "{reported:?}");
        // Nothing heard since: no block.
        rtcp.write_report(now + MS, wall(start, now), sender(0), &mut rng(), &mut out);
        assert_eq!(packets(&out)[0].2.len(), 8);
    }

    #[test]
    fn malformed_rtcp_is_refused_and_counted() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        let rr = [0x80, RR, 0, 1, 0, 0, 0, 2];
        assert_eq!(rtcp.receive(&rr, start), Ok(()));
        for bad in [
            &[][..],
            &[0x80, RR, 0],
            &[0x40, RR, 0, 1, 0, 0, 0, 2], // version 1
            &[0x80, RR, 0, 2, 0, 0, 0, 2], // longer than the datagram
            &[0x81, RR, 0, 1, 0, 0, 0, 2], // a block that is not there
            &[0x80, SR, 0, 1, 0, 0, 0, 2], // a sender report without sender info
            &[0xa0, RR, 0, 1, 0, 0, 0, 0], // padding of 0
            &[0xa0, RR, 0, 1, 0, 0, 0, 9], // more padding than the packet
            &[0xa0, RR, 0, 1, 0, 0, 0, 4, 0x80, RR, 0, 1, 0, 0, 0, 2], // padding not last
            &[0x80, SDES, 0, 1, 0, 0, 0],  // a packet cut short, no report first
            &[0x80, APP, 0, 5, 0, 0, 0, 2], // longer than the datagram, no report first
        ] {
            assert_eq!(rtcp.receive(bad, start), Err(Unread::Malformed), "{bad:?}");
        }
        assert_eq!(rtcp.stats().malformed, 11);
        // Valid packets with no report first (RFC 3550 A.2) are not read, and counted
        // apart: baresip's keepalive, an APP packet "PING" alone, among them.
        let baresip_ping = [0x80, APP, 0, 2, 0, 0, 0, 2, b'P', b'I', b'N', b'G'];
        for unreported in [
            &[0x80, SDES, 0, 0][..],
            &[0x81, BYE, 0, 1, 0, 0, 0, 2],
            &baresip_ping,
            &[0x81, BYE, 0, 1, 0, 0, 0, 2, 0x80, RR, 0, 1, 0, 0, 0, 2], // the report not first
        ] {
            let before = rtcp.stats();
            assert_eq!(
                rtcp.receive(unreported, start),
                Err(Unread::NoReport),
                "{unreported:?}"
            );
            assert_eq!(rtcp.stats().malformed, before.malformed);
        }
        assert_eq!(rtcp.stats().no_report, 4);
        assert_eq!(rtcp.stats().received, 1);
        // Padding on the last packet, and types not read after the report, are fine.
        let padded = [0x80, RR, 0, 1, 0, 0, 0, 2, 0x80, SDES, 0, 1, 0, 0, 0, 4];
        assert_eq!(rtcp.receive(&padded, start), Ok(()));
        let mut last_padded = padded;
        last_padded[8] = 0xa0;
        assert_eq!(rtcp.receive(&last_padded, start), Ok(()));
        assert_eq!(rtcp.stats().received, 3);
    }

    #[test]
    fn rtcp_is_told_from_rtp_on_a_shared_port() {
        let start = Instant::now();
        let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
        let mut out = Vec::new();
        rtcp.write_report(start, wall(start, start), sender(1), &mut rng(), &mut out);
        assert!(is_rtcp(&out));
        for pt in [0_u8, 8, 13, 96, 101, 127] {
            for marker in [0, 0x80] {
                let rtp = [0x80, pt | marker, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
                assert!(!is_rtcp(&rtp), "payload type {pt} marker {marker}");
            }
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn any_datagram_is_read_or_refused_without_panicking(
            datagram in proptest::collection::vec(any::<u8>(), 0..200),
            head in 0_u8..4,
        ) {
            let start = Instant::now();
            let mut rtcp = Rtcp::new(start, Ssrc(1), &mut rng());
            let mut datagram = datagram;
            // Often a valid first header, so that the packet walk is exercised.
            if head > 0 && datagram.len() >= 4 {
                datagram[0] = 0x80 | (datagram[0] & 0x3f);
                datagram[1] = 199 + head;
            }
            let before = rtcp.stats();
            let _ = rtcp.receive(&datagram, start);
            let after = rtcp.stats();
            prop_assert_eq!(
                after.received + after.malformed + after.no_report,
                before.received + before.malformed + before.no_report + 1
            );
        }
    }
}
