//! RFC 4733 telephone-events: DTMF keys carried as RTP packets.
//!
//! A key press is one *event*: a start packet (marker bit set, duration 0 or one frame),
//! continuation packets with growing duration, and an end packet (E bit) usually sent three
//! times. Every packet of an event carries the event's RTP timestamp, so events are keyed on
//! (SSRC, timestamp, key) and a key is reported once, when its event is first seen: that
//! survives a lost start, lost end packets and the retransmitted ends.
//!
//! Real senders bend the rules, and vportal must still hear "1001" and "1122":
//! - SIPp's `play_pcap_audio` replays byte-identical packets for a repeated key (same SSRC,
//!   sequence number and timestamp) and jumps timestamps backwards between keys. A repeat of
//!   an event is recognised as a new press when it looks like a fresh start (marker bit, or
//!   a duration below the event's) well after the event's last new packet (40 ms), and its
//!   sequence number is one already seen in that event (a replay) or, the event having
//!   ended, newer than all of them (a sender reusing the timestamp). A replay may start
//!   right after the previous one's end packets, or cut it short before them (SIPp stops a
//!   replay still playing when the next starts): an event whose end packets never came is
//!   restarted only 80 ms after its last new packet, since its key may still be held,
//!   updated every 50 ms (§2.5.1.2). A packet the network delayed or reordered has a
//!   sequence number not seen yet and older than the newest: it is a late packet of the old
//!   press, not a new one. (A packet the network duplicated and delayed by that long is
//!   indistinguishable from a replay, and counts as one.)
//! - SIPp's `play_dtmf` uses a new SSRC per action, overlapping timestamps between keys, and
//!   interleaves packets of another payload type: keying on (SSRC, timestamp) and filtering on
//!   the negotiated payload type handle both.
//! - Long presses beyond 65535 timestamp units continue in a new segment with a new timestamp
//!   (RFC 4733 §2.5.1.3); a segment that continues the current, unended event is not a new
//!   press, and the segment it continues is never restarted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::digit::{Digit, DigitEvent, DtmfMethod};
use super::rtp::{Accepted, Ssrc};

/// How long after an event's last packet an identical-looking fresh start counts as a new
/// press. End packets are retransmitted microseconds apart; a real next press comes at least
/// a tone's length (≥ 40 ms, ITU-T Q.24) later.
pub const REPEAT_GUARD: Duration = Duration::from_millis(40);

/// The shortest segment a long press is taken to continue from (§2.5.1.3): a segment ends
/// when its duration would overflow 16 bits (8.2 s at 8 kHz); a sender may cut one early,
/// but not by half. A shorter event followed by a packet of the same key is another press
/// whose start was lost, not the same one going on.
const LONG_SEGMENT: u16 = 0x8000;

/// Ended events remembered, to tell late packets of an old event from a replayed press.
const RECENT: usize = 16;

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// The event code (0-15 are the DTMF keys).
    pub code: u8,
    /// The E bit: the event has ended.
    pub end: bool,
    /// The volume, in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl EventPayload {
    /// Reads the first 4 octets of a payload; `None` if shorter.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b = payload.get(..4)?;
        Some(Self {
            code: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-octet encoding.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.code,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    ssrc: Ssrc,
    timestamp: u32,
    code: u8,
    ended: bool,
    /// The longest duration seen.
    duration: u16,
    last_at: Instant,
    /// The event's sequence numbers seen so far.
    seqs: SeqWindow,
    /// A long press went on in a later segment (§2.5.1.3): this one is over, never a press.
    continued: bool,
}

impl Tracked {
    /// Whether a packet is of this event: the same source, timestamp and key. Another key on
    /// the same timestamp is another press (a sender that does not advance its timestamp
    /// between events, whose earlier end packets may all be lost): no replay or late packet
    /// changes the key.
    fn is(&self, ssrc: Ssrc, timestamp: u32, code: u8) -> bool {
        self.ssrc == ssrc && self.timestamp == timestamp && self.code == code
    }

    /// Whether a packet of this event's key is a fresh start of a new press: it looks like
    /// one, comes well after the event's last new packet, and either repeats a sequence
    /// number of the event (a replay, even of a press whose end packets never came: SIPp
    /// cuts a replay short when the next one starts) or, the event having ended, is newer
    /// than all of them (a sender reusing the timestamp). An end packet never looks like a
    /// start unless marked: its copies may say less than the last update (one rounded up)
    /// and come at the update interval (§2.5.1.4).
    fn restarted_by(&self, marker: bool, seq: u16, e: EventPayload, now: Instant) -> bool {
        let quiet = now.saturating_duration_since(self.last_at);
        let fresh = marker || (!e.end && e.duration < self.duration);
        if self.continued || !fresh {
            false
        } else if self.ended {
            quiet >= REPEAT_GUARD && (self.seqs.contains(seq) || self.seqs.is_newer(seq))
        } else {
            // Not ended: the key may still be held, with updates up to 50 ms apart
            // (§2.5.1.2), and the network may duplicate one: twice the guard.
            quiet >= 2 * REPEAT_GUARD && self.seqs.contains(seq)
        }
    }

    /// Takes in one more packet of this event. Only a new one (a sequence number newer than
    /// all seen) moves `last_at`: a late packet says nothing about when the sender last sent,
    /// and a replay's packets, each one already seen, must not keep pushing the replay's own
    /// recognition away.
    fn note(&mut self, seq: u16, e: EventPayload, now: Instant) {
        if self.seqs.is_newer(seq) {
            self.last_at = now;
        }
        self.duration = self.duration.max(e.duration);
        self.ended |= e.end;
        self.seqs.insert(seq);
    }
}

/// The sequence numbers seen in one event: the newest, and which of the 128 before it.
/// Packets of one event are a few dozen at most (one per 20 to 50 ms while the key is held),
/// and a sequence number too old for the window counts as not seen.
#[derive(Debug, Clone, Copy)]
struct SeqWindow {
    newest: u16,
    /// Bit `n` set: `newest - n` was seen.
    seen: u128,
}

impl SeqWindow {
    fn new(seq: u16) -> Self {
        Self {
            newest: seq,
            seen: 1,
        }
    }

    /// How far `seq` lies behind the newest (negative: ahead of it), in RFC 3550 §A.1's
    /// 16-bit serial arithmetic.
    fn behind(&self, seq: u16) -> i32 {
        i32::from(self.newest.wrapping_sub(seq) as i16)
    }

    fn is_newer(&self, seq: u16) -> bool {
        self.behind(seq) < 0
    }

    fn contains(&self, seq: u16) -> bool {
        u32::try_from(self.behind(seq)).is_ok_and(|n| n < 128 && self.seen & (1 << n) != 0)
    }

    fn insert(&mut self, seq: u16) {
        let behind = self.behind(seq);
        if behind < 0 {
            let ahead = behind.unsigned_abs();
            let kept = if ahead < 128 { self.seen << ahead } else { 0 };
            self.seen = kept | 1;
            self.newest = seq;
        } else if behind < 128 {
            self.seen |= 1 << behind;
        }
    }
}

/// Turns telephone-event packets into key presses.
#[derive(Debug, Clone)]
pub struct TelephoneEvents {
    pt: u8,
    /// A second payload type events may come on.
    also: Option<u8>,
    current: Option<Tracked>,
    recent: VecDeque<Tracked>,
}

impl TelephoneEvents {
    /// A receiver for events on payload type `pt` (the one the offer chose).
    pub fn new(pt: u8) -> Self {
        Self {
            pt,
            also: None,
            current: None,
            recent: VecDeque::with_capacity(RECENT),
        }
    }

    /// The payload type listened to.
    pub fn payload_type(&self) -> u8 {
        self.pt
    }

    /// Listens on `pt` as well (or no second one): after our offer numbered events 101 and
    /// the answer otherwise, a peer may send with either number (RFC 3264 §5.1 says ours).
    pub fn also_on(&mut self, pt: Option<u8>) {
        self.also = pt;
    }

    /// Whether packets of payload type `pt` are events here.
    pub fn accepts(&self, pt: u8) -> bool {
        pt == self.pt || Some(pt) == self.also
    }

    /// Handles one accepted RTP packet; returns the key press it starts, if it does.
    pub fn handle(&mut self, packet: &Accepted<'_>, now: Instant) -> Option<DigitEvent> {
        if !self.accepts(packet.pt) {
            return None;
        }
        let e = EventPayload::parse(packet.payload)?;
        let digit = Digit::from_event(e.code)?;
        let (ssrc, ts) = (packet.ssrc, packet.timestamp);
        // Sequence numbers are compared within one event, whose packets share an SSRC: the
        // 16 bits on the wire, not the extension, which a replay's backward jumps can shift.
        let seq = packet.seq.0 as u16;
        if let Some(cur) = &mut self.current
            && cur.is(ssrc, ts, e.code)
        {
            if cur.restarted_by(packet.marker, seq, e, now) {
                *cur = Self::track(ssrc, ts, seq, e, now);
                return Some(press(digit));
            }
            cur.note(seq, e, now);
            return None;
        }
        // An older event's key: a late packet of it, or (replayed) a new press. Looked up
        // before the continuation below, so that no (SSRC, timestamp) is tracked twice.
        if let Some(i) = self.recent.iter().position(|t| t.is(ssrc, ts, e.code)) {
            let old = &mut self.recent[i];
            if !old.restarted_by(packet.marker, seq, e, now) {
                old.note(seq, e, now);
                return None;
            }
            self.recent.remove(i);
        } else if let Some(cur) = &self.current {
            // A long press continues in a new segment (RFC 4733 §2.5.1.3): same source, same
            // key, the previous segment not ended and long, no marker, starting where it
            // stopped (up to 200 ms on, its last updates lost).
            let duration = u32::from(cur.duration);
            let continues = !cur.ended
                && !packet.marker
                && cur.ssrc == ssrc
                && cur.code == e.code
                && cur.duration >= LONG_SEGMENT
                && (duration..=duration + 1_600).contains(&ts.wrapping_sub(cur.timestamp));
            if continues {
                // The earlier segment is remembered, so that its late packets stay its own.
                if let Some(cur) = &mut self.current {
                    cur.continued = true;
                }
                self.start(Self::track(ssrc, ts, seq, e, now));
                return None;
            }
        }
        self.start(Self::track(ssrc, ts, seq, e, now));
        Some(press(digit))
    }

    fn track(ssrc: Ssrc, timestamp: u32, seq: u16, e: EventPayload, now: Instant) -> Tracked {
        Tracked {
            ssrc,
            timestamp,
            code: e.code,
            ended: e.end,
            duration: e.duration,
            last_at: now,
            seqs: SeqWindow::new(seq),
            continued: false,
        }
    }

    fn start(&mut self, next: Tracked) {
        if let Some(previous) = self.current.replace(next) {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(previous);
        }
    }
}

fn press(digit: Digit) -> DigitEvent {
    DigitEvent {
        digit,
        method: DtmfMethod::Rfc4733,
        duration: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::ExtSeq;

    /// A packet as the receiver sees it, and when it arrives (ms after the test's start).
    #[derive(Clone, Copy)]
    struct P {
        at_ms: u64,
        ssrc: u32,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        code: u8,
        end: bool,
        duration: u16,
    }

    fn run(packets: &[P]) -> String {
        run_pt(packets, 101)
    }

    /// Feeds `packets` to a receiver listening on payload type `pt`; the keys heard.
    fn run_pt(packets: &[P], pt: u8) -> String {
        let t0 = Instant::now();
        let mut r = TelephoneEvents::new(pt);
        let mut heard = String::new();
        for p in packets {
            let payload = EventPayload {
                code: p.code,
                end: p.end,
                volume: 10,
                duration: p.duration,
            }
            .to_bytes();
            let acc = Accepted {
                ssrc: Ssrc(p.ssrc),
                pt: p.pt,
                seq: ExtSeq(u64::from(p.seq)),
                timestamp: p.ts,
                marker: p.marker,
                payload: &payload,
            };
            if let Some(ev) = r.handle(&acc, t0 + Duration::from_millis(p.at_ms)) {
                heard.push(ev.digit.reveal());
            }
        }
        heard
    }

    /// The packet train of SIPp's stock `dtmf_2833_<key>.pcap`, as the files hold it
    /// (read from sip-tester 3.7's): one SSRC for every key, the marker and duration 0
    /// first, +320 every 20 ms to 1920, then three identical end packets with duration 2240
    /// and the next sequence number at 140 ms. Each key's file has its own fixed timestamp
    /// and first sequence number, so the sequence numbers jump backwards between keys.
    fn sipp_pcap(key: char, start_ms: u64) -> Vec<P> {
        let (code, ts, seq) = match key {
            '1' => (1, 13_280, 7_984),
            '0' => (0, 17_632, 12_080),
            '2' => (2, 23_200, 8_042),
            '5' => (5, 43_200, 8_155),
            '8' => (8, 60_800, 8_253),
            '#' => (11, 92_640, 8_436),
            _ => unreachable!(),
        };
        let packet = |i: u16, end: bool| P {
            at_ms: start_ms + u64::from(i) * 20,
            ssrc: 0x0e05_384e,
            pt: 101,
            seq: seq + i,
            ts,
            marker: i == 0,
            code,
            end,
            duration: i * 320,
        };
        let mut train: Vec<P> = (0..7).map(|i| packet(i, false)).collect();
        train.extend([packet(7, true); 3]);
        train
    }

    fn sipp_pcap_sequence(keys: &str) -> Vec<P> {
        // SIPp must pause at least the length of a file between play_pcap_audio actions.
        sipp_pcap_spaced(keys, 200)
    }

    /// The replays of `keys`, each starting `gap_ms` after the one before.
    fn sipp_pcap_spaced(keys: &str, gap_ms: u64) -> Vec<P> {
        keys.chars()
            .enumerate()
            .flat_map(|(i, k)| sipp_pcap(k, i as u64 * gap_ms))
            .collect()
    }

    /// SIPp's `play_dtmf`: a new SSRC per action, 20 packets of payload type 97 first, digit
    /// timestamps spaced by 2×tone_ms ticks from 24400 while durations count 8 kHz samples,
    /// three end packets 1 ms apart.
    fn sipp_play_dtmf(keys: &str, ssrc: u32, start_ms: u64, tone_ms: u16) -> Vec<P> {
        let mut out = Vec::new();
        for i in 0..20 {
            out.push(P {
                at_ms: start_ms + i,
                ssrc,
                pt: 97,
                seq: i as u16,
                ts: 24_000,
                marker: false,
                code: 0,
                end: false,
                duration: 0,
            });
        }
        let mut at = start_ms + 20;
        let mut seq = 20_u16;
        for (k, key) in keys.chars().enumerate() {
            let code = Digit::from_char(key).unwrap().event_code();
            let ts = 24_400 + k as u32 * u32::from(tone_ms) * 2;
            let frames = tone_ms / 20;
            for f in 0..frames {
                out.push(P {
                    at_ms: at,
                    ssrc,
                    pt: 96,
                    seq,
                    ts,
                    marker: f == 0,
                    code,
                    end: false,
                    duration: (f + 1) * 160,
                });
                seq = seq.wrapping_add(1);
                at += 20;
            }
            for e in 0..3 {
                out.push(P {
                    at_ms: at + e,
                    ssrc,
                    pt: 96,
                    seq,
                    ts,
                    marker: false,
                    code,
                    end: true,
                    duration: frames * 160,
                });
            }
            seq = seq.wrapping_add(1);
            at += tone_ms as u64;
        }
        out
    }

    #[test]
    fn a_clean_press_is_reported_once() {
        assert_eq!(run(&sipp_pcap('5', 0)), "5");
    }

    #[test]
    fn sipp_pcap_replays_of_repeated_keys() {
        assert_eq!(run(&sipp_pcap_sequence("1001#")), "1001#");
        assert_eq!(run(&sipp_pcap_sequence("1122#")), "1122#");
        assert_eq!(run(&sipp_pcap_sequence("2580#")), "2580#");
        assert_eq!(run(&sipp_pcap_sequence("5555")), "5555");
        // The two '#' of "mailbox#" then "passcode#" are byte-identical too.
        assert_eq!(run(&sipp_pcap_sequence("1001#2580#")), "1001#2580#");
    }

    /// A replay starting right after the previous press's end packets (SIPp's shortest
    /// allowed pause is the file's 140 ms) is a new press once its packets are 40 ms past
    /// them, not swallowed by its own already-seen packets.
    #[test]
    fn replays_that_start_just_after_the_previous_press() {
        for gap in [140, 141, 150, 160, 170, 179, 180, 200] {
            assert_eq!(
                run(&sipp_pcap_spaced("1001#", gap)),
                "1001#",
                "{gap} ms apart"
            );
            assert_eq!(
                run(&sipp_pcap_spaced("5555", gap)),
                "5555",
                "{gap} ms apart"
            );
        }
    }

    /// SIPp stops a replay still playing when the next one starts: at 140 ms apart the end
    /// packets may never go out. A replay of that unended press is still a new one.
    #[test]
    fn replays_of_a_press_whose_end_packets_never_came() {
        for gap in [120, 140, 160] {
            let cut: Vec<P> = sipp_pcap_spaced("1001#", gap)
                .into_iter()
                .filter(|p| !p.end)
                .collect();
            assert_eq!(run(&cut), "1001#", "{gap} ms apart");
        }
        // A duplicate of the start the network delayed, while the press goes on: not a new
        // one (the press's own packets keep coming every 20 ms).
        let mut held = sipp_pcap('5', 0);
        let mut dup = held[0];
        dup.at_ms = 30;
        held.insert(2, dup);
        assert_eq!(run(&held), "5");
        // Nor with updates 50 ms apart (RFC 4733 §2.5.1.2), the duplicate 45 ms after one.
        let slow: Vec<P> = (0..6_u16)
            .map(|i| P {
                at_ms: u64::from(i) * 50,
                ssrc: 9,
                pt: 101,
                seq: 300 + i,
                ts: 8_000,
                marker: i == 0,
                code: 5,
                end: false,
                duration: i * 400,
            })
            .collect();
        let mut duplicated = slow.clone();
        let mut start = slow[0];
        start.at_ms = 95;
        duplicated.insert(2, start);
        assert_eq!(run(&duplicated), "5");
    }

    /// A long press continued in a new segment (§2.5.1.3): a late duplicate of the earlier
    /// segment's start is not a new press.
    #[test]
    fn a_late_duplicate_of_a_continued_segment_is_not_a_press() {
        let segment = |ts: u32, seq: u16, at: u64, marker: bool, duration: u16| P {
            at_ms: at,
            ssrc: 4,
            pt: 101,
            seq,
            ts,
            marker,
            code: 7,
            end: false,
            duration,
        };
        let packets = [
            segment(0, 10, 0, true, 0),
            segment(0, 11, 20, false, 65_535),
            // The next segment starts where the first stopped, without a marker.
            segment(65_535, 12, 40, false, 160),
            segment(65_535, 13, 60, false, 320),
            // The first segment's start, duplicated and 200 ms late.
            segment(0, 10, 260, true, 0),
        ];
        assert_eq!(run(&packets), "7");
    }

    #[test]
    fn sipp_play_dtmf_actions() {
        // play_dtmf sends events on payload type 96 (offered as telephone-event/8000 there).
        let mut packets = sipp_play_dtmf("1001#", 0x1111, 0, 100);
        packets.extend(sipp_play_dtmf("1122#", 0x2222, 2_000, 100));
        assert_eq!(run_pt(&packets, 96), "1001#1122#");
        // Overlapping timestamp space with a short tone: still every key.
        assert_eq!(run_pt(&sipp_play_dtmf("0000", 0x3333, 0, 60), 96), "0000");
        // Listening on the wrong payload type hears nothing.
        assert_eq!(run_pt(&packets, 101), "");
    }

    #[test]
    fn losses() {
        // Lost start: the first packet seen is a continuation.
        let mut lost_start = sipp_pcap('8', 0);
        lost_start.remove(0);
        assert_eq!(run(&lost_start), "8");
        // Lost ends: the next press still counts, and nothing is doubled.
        let mut no_ends: Vec<P> = sipp_pcap('1', 0).into_iter().filter(|p| !p.end).collect();
        no_ends.extend(sipp_pcap('2', 200));
        assert_eq!(run(&no_ends), "12");
        // Only end packets of a key nobody saw start: still a press.
        let only_ends: Vec<P> = sipp_pcap('0', 0).into_iter().filter(|p| p.end).collect();
        assert_eq!(run(&only_ends), "0");
        // A replayed key whose start was lost: the smaller duration tells it is new.
        let mut replay = sipp_pcap_sequence("11");
        let second_start = replay
            .iter()
            .position(|p| p.at_ms == 200 && p.marker)
            .unwrap();
        replay.remove(second_start);
        assert_eq!(run(&replay), "11");
    }

    /// A sender whose updates round the duration up (400, 800, 1200) and whose end packets
    /// carry the exact length (1100), sent at the update interval as §2.5.1.4 allows: one
    /// press. Before, the second end packet, 50 ms on and saying less, was a second `5`.
    #[test]
    fn end_packets_saying_less_than_the_last_update_are_one_press() {
        let packet = |i: u16, end: bool, duration: u16| P {
            at_ms: u64::from(i) * 50,
            ssrc: 7,
            pt: 101,
            seq: i,
            ts: 8_000,
            marker: i == 0,
            code: 5,
            end,
            duration,
        };
        let mut packets: Vec<P> = (0..3).map(|i| packet(i, false, (i + 1) * 400)).collect();
        packets.extend((3..6).map(|i| packet(i, true, 1_100)));
        assert_eq!(run(&packets), "5");
    }

    #[test]
    fn retransmitted_and_late_packets_are_not_new_presses() {
        let mut packets = sipp_pcap('1', 0);
        packets.extend(sipp_pcap('2', 200));
        // A late end packet of '1' arriving during '2'.
        let late_end = P {
            at_ms: 260,
            ssrc: 0x0e05_384e,
            pt: 101,
            seq: 7_992,
            ts: 13_280,
            marker: false,
            code: 1,
            end: true,
            duration: 2_240,
        };
        packets.push(late_end);
        // And again, much later.
        packets.push(P {
            at_ms: 900,
            ..late_end
        });
        assert_eq!(run(&packets), "12");
    }

    #[test]
    fn long_press_segments_and_timestamp_wrap() {
        let ssrc = 7;
        let mut packets = Vec::new();
        // First segment runs to the maximum duration, then continues with a new timestamp.
        let ts0 = u32::MAX - 1_000;
        for i in 0..5_u16 {
            packets.push(P {
                at_ms: u64::from(i) * 20,
                ssrc,
                pt: 101,
                seq: i,
                ts: ts0,
                marker: i == 0,
                code: 9,
                end: false,
                duration: 60_000 + i * 1_000,
            });
        }
        let ts1 = ts0.wrapping_add(65_535);
        for i in 0..5_u16 {
            packets.push(P {
                at_ms: 100 + u64::from(i) * 20,
                ssrc,
                pt: 101,
                seq: 5 + i,
                ts: ts1,
                marker: false,
                code: 9,
                end: i == 4,
                duration: 160 * (i + 1),
            });
        }
        assert_eq!(run(&packets), "9");
    }

    #[test]
    fn other_payload_types_and_events_are_ignored() {
        let mut packets = sipp_pcap('1', 0);
        for p in &mut packets {
            p.pt = 96;
        }
        assert_eq!(run(&packets), "");
        // Event 16+ (tones, not keys) are not digits.
        let mut tone = sipp_pcap('1', 0);
        for p in &mut tone {
            p.code = 32;
        }
        assert_eq!(run(&tone), "");
        // Short payloads are ignored.
        let mut r = TelephoneEvents::new(101);
        let acc = Accepted {
            ssrc: Ssrc(1),
            pt: 101,
            seq: ExtSeq(1),
            timestamp: 1,
            marker: true,
            payload: &[1, 2],
        };
        assert!(r.handle(&acc, Instant::now()).is_none());
    }

    #[test]
    fn all_sixteen_keys() {
        let keys = "0123456789*#ABCD";
        let packets: Vec<P> = keys
            .chars()
            .enumerate()
            .flat_map(|(i, k)| {
                let code = Digit::from_char(k).unwrap().event_code();
                let ts = 1_000 + i as u32 * 1_600;
                (0..4_u16).map(move |f| P {
                    at_ms: i as u64 * 100 + u64::from(f) * 20,
                    ssrc: 5,
                    pt: 101,
                    seq: (i * 4) as u16 + f,
                    ts,
                    marker: f == 0,
                    code,
                    end: f == 3,
                    duration: (f + 1) * 160,
                })
            })
            .collect();
        assert_eq!(run(&packets), keys);
    }

    #[test]
    fn late_packets_of_an_ended_press_are_not_a_second_press() {
        // The duration-640 packet, reordered, arriving 60 ms after the end packets: a fresh-
        // looking packet (smaller duration) well after the end, but one never seen before and
        // older than the ends, so it is late, not a replay.
        let mut train = sipp_pcap('5', 0);
        let late = train.remove(2);
        train.push(P { at_ms: 200, ..late });
        assert_eq!(run(&train), "5");
        // The start itself arriving 50 ms after the end packets.
        let mut train = sipp_pcap('5', 0);
        let start = train.remove(0);
        train.push(P {
            at_ms: 190,
            ..start
        });
        assert_eq!(run(&train), "5");
        // Late packets of an older press, with another key's press in between.
        let mut train = sipp_pcap('1', 0);
        let late = train.remove(3);
        train.extend(sipp_pcap('2', 200));
        train.push(P { at_ms: 300, ..late });
        assert_eq!(run(&train), "12");
    }

    #[test]
    fn a_late_packet_does_not_hide_the_replay_that_follows_it() {
        // The first press's start was lost; the replay's start (that sequence number, never
        // seen) comes as a late packet would, and the rest of the replay is still a press.
        let mut train = sipp_pcap_sequence("11");
        train.remove(0);
        assert_eq!(run(&train), "11");
        // A late packet of the first press 20 ms before its replay.
        let mut train = sipp_pcap_sequence("11");
        let late = train.remove(4);
        train.insert(
            train.iter().position(|p| p.at_ms >= 180).unwrap(),
            P { at_ms: 180, ..late },
        );
        assert_eq!(run(&train), "11");
    }

    #[test]
    fn a_late_packet_of_an_earlier_segment_of_a_long_press_is_not_a_press() {
        let ssrc = 7;
        // A first segment running up to the longest duration, then the second (§2.5.1.3).
        let seg = |first: u16, ts: u32, at: u64, base: u16, step: u16| {
            (0..4_u16).map(move |i| P {
                at_ms: at + u64::from(i) * 20,
                ssrc,
                pt: 101,
                seq: first + i,
                ts,
                marker: first == 0 && i == 0,
                code: 9,
                end: false,
                duration: base + i * step,
            })
        };
        let mut packets: Vec<P> = seg(0, 1_000, 0, 62_000, 1_000).collect();
        let late = packets.remove(2);
        packets.extend(seg(4, 1_000 + 65_535, 80, 160, 160));
        packets.push(P { at_ms: 200, ..late });
        assert_eq!(run(&packets), "9");
    }

    #[test]
    fn a_sender_reusing_the_timestamp_for_a_new_press_is_heard() {
        // A second press of the same key with the same SSRC and timestamp but newer sequence
        // numbers (a sender that does not advance its timestamp between events).
        let first = sipp_pcap('8', 0);
        let second: Vec<P> = first
            .iter()
            .map(|p| P {
                at_ms: p.at_ms + 300,
                seq: p.seq + 9,
                ..*p
            })
            .collect();
        assert_eq!(run(&[first, second].concat()), "88");
    }

    /// A packet of one press, with SSRC 1 on payload type 101 at timestamp 8000.
    fn at_8000(at_ms: u64, seq: u16, marker: bool, code: u8, end: bool, duration: u16) -> P {
        P {
            at_ms,
            ssrc: 1,
            pt: 101,
            seq,
            ts: 8_000,
            marker,
            code,
            end,
            duration,
        }
    }

    #[test]
    fn another_key_on_the_same_timestamp_is_another_press() {
        let one = |at_ms, seq, duration| at_8000(at_ms, seq, seq == 1, 1, false, duration);
        let two = |at_ms, seq, end, duration| at_8000(at_ms, seq, seq == 7, 2, end, duration);
        // Right after the first key's end packets (23 ms, under the repeat guard).
        let mut quick = vec![one(0, 1, 0), one(20, 2, 160), one(40, 3, 320)];
        quick.extend((0..3).map(|i| at_8000(60 + i, 4 + i as u16, false, 1, true, 480)));
        quick.extend([two(85, 7, false, 0), two(105, 8, false, 160)]);
        quick.push(two(125, 9, true, 320));
        // A late end packet of the first key stays its own.
        quick.push(at_8000(140, 5, false, 1, true, 480));
        assert_eq!(run(&quick), "12");
        // The first key's end packets all lost.
        let lost = [
            one(0, 1, 0),
            one(20, 2, 160),
            one(40, 3, 320),
            two(240, 7, false, 0),
            two(260, 8, false, 160),
            two(280, 9, true, 320),
        ];
        assert_eq!(run(&lost), "12");
    }

    #[test]
    fn a_short_press_is_not_continued_by_the_next_one_whose_start_was_lost() {
        let p = |at_ms, seq, ts, duration| P {
            at_ms,
            ssrc: 1,
            pt: 101,
            seq,
            ts,
            marker: seq == 1,
            code: 1,
            end: false,
            duration,
        };
        // "11": every end packet of the first press lost, and the second's start packet.
        let mut packets: Vec<P> = (0..4_u16)
            .map(|i| p(u64::from(i) * 20, 1 + i, 8_000, 160 * (i + 1)))
            .collect();
        packets.extend((0..3_u16).map(|i| p(160 + u64::from(i) * 20, 9 + i, 9_280, 160 * (i + 2))));
        assert_eq!(run(&packets), "11");
    }

    #[test]
    fn a_segment_that_reuses_an_older_events_timestamp_is_that_event() {
        // A packet with the timestamp of an event already in memory belongs to that event,
        // even when it would also pass for the next segment of the current one: tracking
        // it twice let the stale copy take a later packet for a replay, 20 ms after the
        // replay that was really heard (found by the media_rtp fuzz target).
        let p = |at_ms, ssrc, seq, ts, marker, code, end, duration| P {
            at_ms,
            ssrc,
            pt: 101,
            seq,
            ts,
            marker,
            code,
            end,
            duration,
        };
        let packets = [
            p(0, 7, 100, 1_000, true, 1, false, 0),
            // Another press of 1, at a timestamp 1000 is just after.
            p(20, 7, 101, 232, false, 1, false, 160),
            // The first press ends.
            p(40, 7, 102, 1_000, false, 1, true, 320),
            p(60, 9, 1, 50_000, true, 0, false, 0),
            p(100, 7, 103, 1_000, false, 1, true, 480),
            // A replay of the first press, well after its end.
            p(140, 7, 104, 1_000, true, 1, false, 0),
            p(160, 9, 2, 60_000, true, 0, false, 0),
            // The replay goes on: not another press.
            p(160, 7, 105, 1_000, false, 1, false, 160),
        ];
        assert_eq!(run(&packets), "11010");
    }

    #[test]
    fn seq_window_across_the_wrap() {
        let mut w = SeqWindow::new(65_530);
        for seq in [65_531, 65_535, 0, 3] {
            w.insert(seq);
        }
        for seq in [65_530, 65_531, 65_535, 0, 3] {
            assert!(w.contains(seq), "{seq}");
        }
        for seq in [65_529, 65_532, 1, 2, 4] {
            assert!(!w.contains(seq), "{seq}");
        }
        assert!(w.is_newer(4) && !w.is_newer(3) && !w.is_newer(65_000));
        // Too old for the window: not seen; a jump ahead of it forgets the rest.
        w.insert(3 + 200);
        assert!(w.contains(203) && !w.contains(3));
        assert!(!w.contains(203 - 128));
    }
}
