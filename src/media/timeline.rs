//! Where each audio packet's samples belong in time, for the in-band DTMF detector.
//!
//! The detector judges tones and pauses by their length in samples, so it must hear the
//! caller's audio as it was sent, not as it arrived. RTP says where a packet belongs by its
//! timestamp (RFC 3550 §5.1), in 8 kHz samples for G.711; what arrives may have holes (a lost
//! packet, or silence suppression sending nothing between words, RFC 3389 §4), duplicates,
//! and packets overtaken by the next one. Fed in arrival order, one lost packet in the
//! 40 ms pause between two presses of one key leaves 20 ms of it, which joins them into one
//! press: "11" is heard as "1".
//!
//! So each packet is placed after the one before it on the stream's timeline:
//! - a packet that continues it is heard at once (one that overlaps the last by less than
//!   half its length too: a sender whose timestamps wobble by a sample);
//! - a hole ahead of it is heard as that much silence first, up to [`MAX_FILL`] (enough to
//!   end any press). A jump further ahead is silence suppression or a sender that moved its
//!   timestamps: how long it was is told by the arrival times, up to [`MAX_FILL`];
//! - a packet a little behind the timeline (at most [`MAX_FILL`]) is late or a duplicate:
//!   its time was already heard (as silence, if it was missing), so it is dropped. A lost or
//!   late packet inside a tone is then a dropout of a packet's length, which never splits a
//!   press;
//! - a packet far behind, [`RUN`] in a row a little behind, one a little behind after
//!   [`REPLAY_PAUSE`] without packets, or one of another SSRC starts a new timeline: a sender
//!   that moved its timestamps back (an SBC re-anchoring media), or one that replays
//!   recorded audio (SIPp's `play_pcap_audio` resends the same timestamps each time). The
//!   silence before it is told by the arrival times, up to [`MAX_FILL`].
//!
//! Sans-IO: arrival times are arguments.

use std::time::{Duration, Instant};

use super::g711;

/// The most silence put in for missing audio: 200 ms of 8 kHz samples.
pub const MAX_FILL: usize = 1_600;

/// Packets in a row a little behind the timeline after which it is taken to have moved.
pub const RUN: u32 = 3;

/// A time without packets after which one a little behind the timeline starts a new one
/// (a replay, SIPp's `play_pcap_audio` after a pause) rather than being late: longer than a
/// network stall that holds packets back and then delivers them out of order.
pub const REPLAY_PAUSE: Duration = Duration::from_millis(300);

/// The last packet placed.
#[derive(Debug, Clone, Copy)]
struct Placed {
    ssrc: u32,
    /// The timestamp the next samples start at.
    next: u32,
    /// When it arrived, and how long it was.
    at: Instant,
    samples: usize,
}

/// One call's audio timeline.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    last: Option<Placed>,
    /// Packets dropped in a row since `last`.
    dropped: u32,
}

impl Timeline {
    /// A timeline that has heard nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places a packet of `ssrc` stamped `timestamp` holding `samples` samples, arriving at
    /// `now`: how many samples of silence come before it, or `None` when it is to be dropped
    /// (late, or a duplicate).
    pub fn place(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        samples: usize,
        now: Instant,
    ) -> Option<usize> {
        let fill = match self.last {
            None => 0,
            Some(last) if last.ssrc == ssrc => {
                // RFC 3550 §A.1-style serial arithmetic on 32-bit timestamps.
                let ahead = i64::from(timestamp.wrapping_sub(last.next) as i32);
                let behind = usize::try_from(-ahead).unwrap_or(0);
                if ahead >= 0 {
                    let ahead = usize::try_from(ahead).unwrap_or(usize::MAX);
                    if ahead <= MAX_FILL {
                        ahead
                    } else {
                        ahead.min(silence_since(&last, now))
                    }
                } else if behind < samples.div_ceil(2) {
                    0
                } else if behind <= MAX_FILL
                    && self.dropped + 1 < RUN
                    && now.saturating_duration_since(last.at) < REPLAY_PAUSE
                {
                    self.dropped += 1;
                    return None;
                } else {
                    silence_since(&last, now)
                }
            }
            Some(last) => silence_since(&last, now),
        };
        self.last = Some(Placed {
            ssrc,
            next: timestamp.wrapping_add(u32::try_from(samples).unwrap_or(u32::MAX)),
            at: now,
            samples,
        });
        self.dropped = 0;
        Some(fill)
    }
}

/// The silence between the end of `last` and a packet arriving at `now`, by the arrival
/// times, at most [`MAX_FILL`].
fn silence_since(last: &Placed, now: Instant) -> usize {
    let gap = g711::samples_in(now.saturating_duration_since(last.at));
    gap.saturating_sub(last.samples).min(MAX_FILL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places packets given as (ms of arrival, SSRC, timestamp) of 160 samples each; the
    /// silence before each, `None` for a dropped one.
    fn place(packets: &[(u64, u32, u32)]) -> Vec<Option<usize>> {
        let t0 = Instant::now();
        let mut timeline = Timeline::new();
        packets
            .iter()
            .map(|&(ms, ssrc, ts)| timeline.place(ssrc, ts, 160, t0 + Duration::from_millis(ms)))
            .collect()
    }

    /// `n` packets of 20 ms from `(ms, ts)` on, 20 ms apart.
    fn stream(ssrc: u32, ms: u64, ts: u32, n: u32) -> Vec<(u64, u32, u32)> {
        (0..n)
            .map(|i| (ms + u64::from(i) * 20, ssrc, ts.wrapping_add(i * 160)))
            .collect()
    }

    #[test]
    fn a_continuous_stream_is_heard_as_it_comes() {
        assert_eq!(place(&stream(7, 0, 1_000, 5)), [Some(0); 5]);
        // Timestamps that wobble by a sample.
        assert_eq!(
            place(&[(0, 7, 0), (20, 7, 159), (40, 7, 320)]),
            [Some(0), Some(0), Some(1)]
        );
    }

    #[test]
    fn a_lost_packet_is_heard_as_silence() {
        assert_eq!(
            place(&[(0, 7, 0), (20, 7, 160), (60, 7, 480), (80, 7, 640)]),
            [Some(0), Some(0), Some(160), Some(0)]
        );
        // Even when the next one comes early.
        assert_eq!(
            place(&[(0, 7, 0), (20, 7, 160), (45, 7, 480)]),
            [Some(0), Some(0), Some(160)]
        );
    }

    #[test]
    fn late_packets_and_duplicates_are_dropped() {
        // 320 overtaken by 480, then arriving; 480 duplicated.
        assert_eq!(
            place(&[
                (0, 7, 160),
                (20, 7, 480),
                (25, 7, 320),
                (30, 7, 480),
                (40, 7, 640)
            ]),
            [Some(0), Some(160), None, None, Some(0)]
        );
        // After a stall the held-back packets come in a burst, one of them overtaken: it is
        // dropped, and no silence is put in the middle of what was sent.
        assert_eq!(
            place(&[
                (0, 7, 0),
                (20, 7, 160),
                (40, 7, 480),
                (110, 7, 320),
                (111, 7, 640)
            ]),
            [Some(0), Some(0), Some(160), None, Some(0)]
        );
    }

    #[test]
    fn silence_suppression_and_long_jumps() {
        // 100 ms without packets (DTX), then 10 s.
        assert_eq!(
            place(&[(0, 7, 0), (120, 7, 960), (10_140, 7, 81_120)]),
            [Some(0), Some(800), Some(MAX_FILL)]
        );
        // A sender that jumps its timestamps far ahead without a pause: no silence.
        assert_eq!(
            place(&[(0, 7, 0), (20, 7, 1 << 30), (40, 7, (1 << 30) + 160)]),
            [Some(0), Some(0), Some(0)]
        );
        // Across the 32-bit wrap.
        assert_eq!(
            place(&[(0, 7, u32::MAX - 159), (20, 7, 0), (60, 7, 320)]),
            [Some(0), Some(0), Some(160)]
        );
    }

    #[test]
    fn a_stream_that_moves_its_timestamps_back_is_followed() {
        // Far back (an SBC re-anchoring the stream): at once, and no silence.
        let mut far = stream(7, 0, 1 << 30, 3);
        far.extend(stream(7, 60, 5, 3));
        assert_eq!(place(&far), [Some(0); 6]);
        // A little back: after a run of them, with the silence the dropped ones leave.
        let mut near = stream(7, 0, 8_000, 3);
        near.extend(stream(7, 60, 7_000, 4));
        assert_eq!(
            place(&near),
            [Some(0), Some(0), Some(0), None, None, Some(320), Some(0)]
        );
    }

    #[test]
    fn a_replay_or_a_new_stream_starts_a_new_timeline() {
        // The same timestamps again after a pause (SIPp replaying a pcap), then a new SSRC
        // right after: the pause is heard, capped.
        assert_eq!(
            place(&[
                (0, 7, 0),
                (20, 7, 160),
                (500, 7, 0),
                (520, 7, 160),
                (540, 9, 5)
            ]),
            [Some(0), Some(0), Some(MAX_FILL), Some(0), Some(0)]
        );
        // Replays of a file longer than MAX_FILL back to back: each heard whole.
        let mut replays = stream(7, 0, 0, 15);
        replays.extend(stream(7, 300, 0, 15));
        assert_eq!(place(&replays), [Some(0); 30]);
    }
}
