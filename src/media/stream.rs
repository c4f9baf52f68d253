//! One call's outgoing media, paced: the player's frames packetized every ptime.
//!
//! Sans-IO: the shell asks [`Outbound::poll_timeout`] when the next packet is due and calls
//! [`Outbound::poll_packet`] at (or after) that time. A late call gets the packets it missed,
//! up to [`MAX_CATCH_UP`]; beyond that the stream skips frames (keeping timestamps true to
//! the clock) rather than burst. While the caller holds the call the stream keeps time but
//! builds no packet, so sequence numbers continue without a gap when it resumes.

use std::time::{Duration, Instant};

use rand::Rng;

use super::g711::Law;
use super::player::{Frame, Playback, Player};
use super::rtp::{Pt, RtpSender};

/// Most missed packets sent back to back when the shell wakes late.
pub const MAX_CATCH_UP: u32 = 3;

/// Packetization times accepted (RFC 3551: G.711 frames of 10-60 ms are common).
pub const PTIME_RANGE: std::ops::RangeInclusive<u32> = 10..=60;

/// The outgoing side of a call's media.
#[derive(Debug)]
pub struct Outbound {
    sender: RtpSender,
    player: Player,
    ptime: Duration,
    samples: u32,
    /// The samples the last slot advanced the timestamp by (the frame in effect then, which
    /// a new ptime may since have changed): how far a prompt starting early may rewind.
    last_samples: u32,
    next_due: Instant,
    payload: Vec<u8>,
    packet: Vec<u8>,
    first: bool,
    /// Whether packets are sent (the call's direction lets us send).
    sending: bool,
    /// The next packet sent starts a talkspurt: sending resumed after a hold.
    resumed: bool,
}

/// A packet slot that came due, and what its frame held.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The RTP packet to send; `None` while sending is paused (the call is on hold).
    pub bytes: Option<&'a [u8]>,
    /// What the frame held (talkspurt start, a finished playback).
    pub frame: Frame,
}

impl Outbound {
    /// A stream starting `now` with payload type `pt`, `law` and a ptime in milliseconds
    /// (clamped to [`PTIME_RANGE`]).
    pub fn new(now: Instant, pt: Pt, law: Law, ptime_ms: u32, rng: &mut impl Rng) -> Self {
        let ms = ptime_ms.clamp(*PTIME_RANGE.start(), *PTIME_RANGE.end());
        Self {
            sender: RtpSender::new(pt, rng),
            player: Player::new(law),
            ptime: Duration::from_millis(u64::from(ms)),
            samples: ms * 8,
            last_samples: ms * 8,
            next_due: now,
            payload: Vec::with_capacity(480),
            packet: Vec::with_capacity(500),
            first: true,
            sending: true,
            resumed: false,
        }
    }

    /// Pauses or resumes sending (a re-INVITE put the call on hold or took it off). While
    /// paused, frames are played and timed as usual but no packet is built: RFC 3550 §5.1
    /// numbers the packets sent, so the sequence continues without a gap on resume, and the
    /// timestamp moves on with the clock. The first packet after a pause carries the marker.
    pub fn set_sending(&mut self, sending: bool) {
        self.resumed |= sending && !self.sending;
        self.sending = sending;
    }

    /// Changes the packetization time (a re-INVITE asked for another `a=ptime`), clamped to
    /// [`PTIME_RANGE`]. It applies from the next packet on; the timing of that one stands.
    pub fn set_ptime(&mut self, ptime_ms: u32) {
        let ms = ptime_ms.clamp(*PTIME_RANGE.start(), *PTIME_RANGE.end());
        self.ptime = Duration::from_millis(u64::from(ms));
        self.samples = ms * 8;
    }

    /// The player, to start and stop playbacks.
    pub fn player(&mut self) -> &mut Player {
        &mut self.player
    }

    /// The RTP sender (numbers sent so far, SSRC).
    pub fn sender(&self) -> &RtpSender {
        &self.sender
    }

    /// Starts `playback` at once: its first packet goes out `now` instead of at the next
    /// packet slot, with the marker bit (a talkspurt starts, so the receiver re-syncs its
    /// playout) and a timestamp true to when it starts; the stream's rhythm continues from
    /// there. A caller who pressed `#` thus hears the next prompt up to one ptime sooner.
    /// Returns the token of a playback it replaced.
    pub fn play_now(&mut self, now: Instant, playback: Playback) -> Option<u64> {
        let replaced = self.player.play(playback);
        if !self.first && now < self.next_due {
            let early = self.next_due.duration_since(now);
            let samples = u32::try_from(early.as_micros() * 8 / 1_000).unwrap_or(u32::MAX);
            // Less than the last slot's frame: timestamps keep increasing.
            self.sender.rewind(samples.min(self.last_samples - 1));
            self.next_due = now;
        }
        replaced
    }

    /// Codec change from a re-INVITE.
    pub fn set_codec(&mut self, pt: Pt, law: Law) {
        self.sender.set_pt(pt);
        self.player.set_law(law);
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_due
    }

    /// The RTP timestamp on this stream's clock at `now` (an RTCP sender report's): the
    /// next packet's, less the time until it is due.
    pub fn timestamp_at(&self, now: Instant) -> u32 {
        let samples = |d: Duration| (d.as_micros() * 8 / 1_000) as u32;
        let (_, next) = self.sender.next_numbers();
        if now <= self.next_due {
            next.wrapping_sub(samples(self.next_due - now))
        } else {
            next.wrapping_add(samples(now - self.next_due))
        }
    }

    /// The packet due at `now`, if one is. Call again until `None` to catch up after a late
    /// wake-up.
    pub fn poll_packet(&mut self, now: Instant) -> Option<Packet<'_>> {
        if now < self.next_due {
            return None;
        }
        // Too far behind: skip the frames that can no longer be sent on time. (The division
        // is done only then: it is the costly part of a packet's arithmetic.)
        let behind = now.duration_since(self.next_due);
        let missed = if behind > self.ptime * MAX_CATCH_UP {
            u32::try_from(behind.as_nanos() / self.ptime.as_nanos().max(1)).unwrap_or(u32::MAX)
        } else {
            0
        };
        if missed > MAX_CATCH_UP {
            for _ in MAX_CATCH_UP..missed {
                let frame = self
                    .player
                    .next_frame(self.samples as usize, &mut self.payload);
                // A playback that ends unheard still ends.
                if frame.finished.is_some() {
                    self.next_due += self.ptime;
                    return self.emit(frame);
                }
                self.sender.skip(self.samples);
                self.next_due += self.ptime;
            }
        }
        self.next_due += self.ptime;
        let frame = self
            .player
            .next_frame(self.samples as usize, &mut self.payload);
        self.emit(frame)
    }

    fn emit(&mut self, mut frame: Frame) -> Option<Packet<'_>> {
        self.last_samples = self.samples;
        if !self.sending {
            self.sender.skip(self.samples);
            return Some(Packet { bytes: None, frame });
        }
        // The stream's first packet, and the first after a hold, start a talkspurt too.
        frame.talkspurt |= std::mem::take(&mut self.first) | std::mem::take(&mut self.resumed);
        self.sender.packet(
            &self.payload,
            self.samples,
            frame.talkspurt,
            &mut self.packet,
        );
        Some(Packet {
            bytes: Some(&self.packet),
            frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::media::player::{Item, Playback};
    use crate::media::prompts::Prompt;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rtp_rs::RtpReader;

    /// A prompt of `ms` milliseconds of the constant sample `value`.
    fn prompt(ms: usize, value: i16) -> Arc<Prompt> {
        Arc::new(Prompt::new("test", "", vec![value; ms * 8]))
    }

    fn ulaw(value: i16) -> u8 {
        crate::media::g711::ulaw_encode(value)
    }

    /// A packet the stream produced, read back.
    #[derive(Debug, Clone)]
    struct Sent {
        at_ms: u64,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
        finished: Option<u64>,
    }

    /// Drives a stream on a virtual clock for `ms`, waking exactly when asked.
    fn drive(out: &mut Outbound, start: Instant, ms: u64) -> Vec<Sent> {
        let end = start + Duration::from_millis(ms);
        let mut seen = Vec::new();
        loop {
            let at = out.poll_timeout();
            if at >= end {
                return seen;
            }
            while let Some(p) = out.poll_packet(at) {
                let Some(bytes) = p.bytes else { continue };
                let r = RtpReader::new(bytes).unwrap();
                seen.push(Sent {
                    at_ms: (at - start).as_millis() as u64,
                    seq: u16::from(r.sequence_number()),
                    ts: r.timestamp(),
                    marker: r.mark(),
                    payload: r.payload().to_vec(),
                    finished: p.frame.finished,
                });
            }
        }
    }

    #[test]
    fn fifty_packets_a_second_continuous_across_prompt_silence_prompt() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        out.player().play(Playback {
            items: vec![
                Item::Prompt(prompt(100, 1_000)),
                Item::Silence(Duration::from_millis(60)),
                Item::Prompt(prompt(40, -2_000)),
            ],
            barge_in: true,
            token: 7,
        });
        let packets = drive(&mut out, t0, 1_000);
        assert_eq!(packets.len(), 50, "one packet per 20 ms");
        for (i, w) in packets.windows(2).enumerate() {
            assert_eq!(w[1].at_ms - w[0].at_ms, 20, "pacing at {i}");
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence at {i}");
            assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "timestamp at {i}");
        }
        assert!(packets.iter().all(|p| p.payload.len() == 160));
        // 100 ms prompt, 60 ms silence, 40 ms prompt = 10 frames, then idle silence.
        assert!(
            packets[..5]
                .iter()
                .all(|p| p.payload.iter().all(|b| *b == ulaw(1_000)))
        );
        assert!(
            packets[5..8]
                .iter()
                .all(|p| p.payload.iter().all(|b| *b == 0xff))
        );
        assert!(
            packets[8..10]
                .iter()
                .all(|p| p.payload.iter().all(|b| *b == ulaw(-2_000)))
        );
        assert!(
            packets[10..]
                .iter()
                .all(|p| p.payload.iter().all(|b| *b == 0xff))
        );
        let finished: Vec<_> = packets.iter().filter_map(|p| p.finished).collect();
        assert_eq!(finished, [7]);
        assert_eq!(packets.iter().position(|p| p.finished.is_some()), Some(9));
        // Marker: the stream's first packet (which is also the talkspurt start) only.
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        out.player().play(Playback {
            items: vec![Item::Prompt(prompt(20, 300))],
            barge_in: false,
            token: 8,
        });
        let more = drive(&mut out, t0 + Duration::from_millis(1_000), 100);
        assert!(more[0].marker, "a new playback starts a talkspurt");
        assert_eq!(
            more[0].ts,
            packets[49].ts.wrapping_add(160),
            "timestamps continue"
        );
    }

    #[test]
    fn the_clock_of_a_sender_report_matches_the_packets() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        let sent = drive(&mut out, t0, 100);
        let last = sent.last().unwrap();
        assert_eq!(last.at_ms, 80);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(out.timestamp_at(at(80)), last.ts);
        assert_eq!(out.timestamp_at(at(87)), last.ts.wrapping_add(56));
        assert_eq!(out.timestamp_at(at(100)), last.ts.wrapping_add(160));
        // Late: past the next packet's slot, the clock runs on.
        assert_eq!(out.timestamp_at(at(105)), last.ts.wrapping_add(200));
    }

    #[test]
    fn a_playback_started_between_packets_goes_out_at_once() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        let idle = drive(&mut out, t0, 100);
        assert_eq!(idle.len(), 5);
        // Packets went at 0-80 ms. A key at 87 ms: the prompt starts at once, 13 ms before
        // the next slot.
        let at = t0 + Duration::from_millis(87);
        let replaced = out.play_now(
            at,
            Playback {
                items: vec![Item::Prompt(prompt(60, 700))],
                barge_in: true,
                token: 4,
            },
        );
        assert_eq!(replaced, None);
        assert_eq!(out.poll_timeout(), at);
        let next = drive(&mut out, at, 60);
        assert_eq!(next.len(), 3);
        assert!(next[0].marker && next[0].payload.iter().all(|b| *b == ulaw(700)));
        assert_eq!(next[0].seq, idle[4].seq.wrapping_add(1));
        // 7 ms after the last packet's slot: 56 samples on, not 160.
        assert_eq!(next[0].ts, idle[4].ts.wrapping_add(56));
        // Then the usual rhythm from there.
        assert_eq!(next[1].at_ms, 20);
        assert_eq!(next[1].ts, next[0].ts.wrapping_add(160));
        assert!(!next[1].marker);
        // At a slot (or before the stream's first packet) nothing moves.
        let due = out.poll_timeout();
        out.play_now(
            due,
            Playback {
                items: vec![Item::Prompt(prompt(20, 700))],
                barge_in: true,
                token: 5,
            },
        );
        assert_eq!(out.poll_timeout(), due);
    }

    #[test]
    fn ptime_variants() {
        for ptime in [10_u32, 20, 30, 40, 60] {
            let t0 = Instant::now();
            let mut rng = StdRng::seed_from_u64(u64::from(ptime));
            let mut out = Outbound::new(t0, Pt::new(8).unwrap(), Law::Alaw, ptime, &mut rng);
            let packets = drive(&mut out, t0, 600);
            assert_eq!(packets.len() as u32, 600 / ptime, "ptime {ptime}");
            assert!(
                packets
                    .iter()
                    .all(|p| p.payload.len() == (ptime * 8) as usize
                        && p.payload.iter().all(|b| *b == 0xd5))
            );
            assert!(
                packets
                    .windows(2)
                    .all(|w| w[1].ts.wrapping_sub(w[0].ts) == ptime * 8)
            );
        }
        let mut rng = StdRng::seed_from_u64(9);
        let out = Outbound::new(Instant::now(), Pt::new(0).unwrap(), Law::Ulaw, 5, &mut rng);
        assert_eq!(out.samples, 80, "clamped to 10 ms");
    }

    #[test]
    fn late_wakeups_catch_up_then_skip() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        let _ = out.poll_packet(t0);
        let ts0 = out.sender().next_numbers().1;
        // 50 ms late: the two missed packets go out back to back.
        let late = t0 + Duration::from_millis(70);
        let mut n = 0;
        while out.poll_packet(late).is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        // 1 s late: a few packets, and timestamps jump with the clock.
        let very_late = t0 + Duration::from_millis(1_080);
        let mut burst = Vec::new();
        while let Some(p) = out.poll_packet(very_late) {
            burst.push(RtpReader::new(p.bytes.unwrap()).unwrap().timestamp());
        }
        assert!(burst.len() as u32 <= MAX_CATCH_UP + 1, "{}", burst.len());
        assert_eq!(
            out.sender().next_numbers().1.wrapping_sub(ts0),
            1_080 / 20 * 160
        );
    }

    #[test]
    fn barge_in_stops_only_interruptible_playbacks() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        out.player().play(Playback {
            items: vec![Item::Prompt(prompt(500, 1))],
            barge_in: false,
            token: 1,
        });
        assert_eq!(out.player().barge_in(), None);
        assert!(out.player().is_playing());
        assert_eq!(
            out.player().play(Playback {
                items: vec![Item::Prompt(prompt(500, 2))],
                barge_in: true,
                token: 2
            }),
            Some(1)
        );
        assert_eq!(out.player().barge_in(), Some(2));
        assert!(!out.player().is_playing());
        let packets = drive(&mut out, t0, 40);
        assert!(
            packets.iter().all(|p| p.payload.iter().all(|b| *b == 0xff)),
            "silence after barge-in"
        );
        // An empty playback finishes at once.
        out.player().play(Playback {
            items: vec![],
            barge_in: true,
            token: 3,
        });
        let packets = drive(&mut out, t0 + Duration::from_millis(40), 20);
        assert_eq!(packets[0].finished, Some(3));
    }

    #[test]
    fn type_ahead_keeps_the_first_keys_in_order() {
        use crate::media::digit::Digit;
        use crate::media::player::{TYPE_AHEAD, TypeAhead};
        let mut t = TypeAhead::default();
        for i in 0..TYPE_AHEAD + 3 {
            t.push(Digit::from_char(char::from(b'0' + (i % 10) as u8)).unwrap());
        }
        assert_eq!(t.len(), TYPE_AHEAD);
        assert_eq!(t.pop().map(Digit::reveal), Some('0'));
        // The last kept is the 72nd pressed; the three after it were dropped.
        let last = std::iter::from_fn(|| t.pop()).last().map(Digit::reveal);
        assert_eq!(last, Some(char::from(b'0' + ((TYPE_AHEAD - 1) % 10) as u8)));
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn hold_pauses_packets_without_a_sequence_gap() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(4);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        out.player().play(Playback {
            items: vec![Item::Prompt(prompt(200, 500))],
            barge_in: true,
            token: 1,
        });
        let before = drive(&mut out, t0, 100);
        assert_eq!(before.len(), 5);
        // On hold for 500 ms: no packet, but the prompt plays on and its end is reported.
        out.set_sending(false);
        let mut slots = 0;
        let mut finished = Vec::new();
        let hold_end = t0 + Duration::from_millis(600);
        while out.poll_timeout() < hold_end {
            let at = out.poll_timeout();
            while let Some(p) = out.poll_packet(at) {
                assert!(p.bytes.is_none(), "nothing is sent while on hold");
                slots += 1;
                finished.extend(p.frame.finished);
            }
        }
        assert_eq!(slots, 25);
        assert_eq!(finished, [1]);
        out.set_sending(true);
        let after = drive(&mut out, hold_end, 60);
        assert_eq!(after.len(), 3);
        let last = before.last().unwrap();
        assert_eq!(after[0].seq, last.seq.wrapping_add(1), "no sequence gap");
        assert_eq!(
            after[0].ts,
            last.ts.wrapping_add(26 * 160),
            "timestamps keep the clock"
        );
        assert!(after[0].marker && !after[1].marker, "a talkspurt starts");
        // Resuming while already sending marks nothing.
        out.set_sending(true);
        let more = drive(&mut out, hold_end + Duration::from_millis(60), 40);
        assert!(more.iter().all(|p| !p.marker));
    }

    #[test]
    fn a_new_ptime_applies_from_the_next_packet() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        let before = drive(&mut out, t0, 100);
        assert_eq!(before.len(), 5);
        out.set_ptime(40);
        let after = drive(&mut out, t0 + Duration::from_millis(100), 200);
        // The slot already scheduled (100 ms) stands; then one packet per 40 ms.
        assert_eq!(
            after.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
            [0, 40, 80, 120, 160]
        );
        assert!(after.iter().all(|p| p.payload.len() == 320));
        assert_eq!(after[0].ts, before[4].ts.wrapping_add(160));
        assert_eq!(after[1].ts, after[0].ts.wrapping_add(320));
        assert_eq!(after[0].seq, before[4].seq.wrapping_add(1));
        out.set_ptime(1_000);
        assert_eq!(out.samples, 480, "clamped to 60 ms");
    }

    #[test]
    fn a_prompt_started_early_after_a_ptime_change_keeps_true_timestamps() {
        let playback = || Playback {
            items: vec![Item::Prompt(prompt(100, 700))],
            barge_in: true,
            token: 1,
        };
        // 60 ms down to 20 ms: a prompt 5 ms after a packet is stamped 5 ms after it, though
        // that is more than a new frame before the slot the old ptime set.
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(6);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 60, &mut rng);
        let first = drive(&mut out, t0, 10);
        out.set_ptime(20);
        out.play_now(t0 + Duration::from_millis(5), playback());
        let next = drive(&mut out, t0 + Duration::from_millis(5), 10);
        assert_eq!(next[0].ts, first[0].ts.wrapping_add(40));
        // 20 ms up to 60 ms: a prompt at once after a packet still gets a later timestamp.
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        let first = drive(&mut out, t0, 10);
        out.set_ptime(60);
        out.play_now(t0, playback());
        let next = drive(&mut out, t0, 10);
        assert_eq!(next[0].ts, first[0].ts.wrapping_add(1));
    }

    #[test]
    fn a_call_held_from_the_start_begins_with_the_marker_and_its_first_numbers() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut out = Outbound::new(t0, Pt::new(0).unwrap(), Law::Ulaw, 20, &mut rng);
        out.set_sending(false);
        let (seq0, _) = out.sender().next_numbers();
        assert!(drive(&mut out, t0, 100).is_empty());
        out.set_sending(true);
        let packets = drive(&mut out, t0 + Duration::from_millis(100), 60);
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[0].seq, seq0);
        assert!(packets[0].marker && !packets[1].marker);
    }
}
