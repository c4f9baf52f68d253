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
//! - a packet that continues it is heard at once;
//! - a hole ahead of it is heard as silence first, up to [`MAX_FILL`] (enough to end any
//!   press; a longer hole is a pause whose length no longer matters);
//! - a packet behind the timeline that arrives among the stream's packets is late or a
//!   duplicate: its time was already heard (as silence, if it was missing), so it is dropped.
//!   A lost or late packet inside a tone is then a 20 ms dropout, which never splits a press;
//! - a packet behind the timeline that comes after a pause in arrivals ([`PAUSE`]), or from
//!   another SSRC, starts a new timeline after [`MAX_FILL`] of silence: a sender that
//!   restarted its timestamps, or one that replays recorded audio (SIPp's
//!   `play_pcap_audio` resends the same timestamps each time).
//!
//! Sans-IO: arrival times are arguments.

use std::time::{Duration, Instant};

/// The most silence put in for missing audio: 200 ms of 8 kHz samples.
pub const MAX_FILL: usize = 1_600;

/// A gap in arrivals after which a packet behind the timeline starts a new one instead of
/// being late: three 20 ms packet times.
pub const PAUSE: Duration = Duration::from_millis(60);

/// One call's audio timeline.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The stream's SSRC, the timestamp its next samples start at, and when its last packet
    /// arrived.
    next: Option<(u32, u32, Instant)>,
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
        let fill = match self.next {
            None => 0,
            Some((last_ssrc, next, last_at)) if last_ssrc == ssrc => {
                // RFC 3550 §A.1-style serial arithmetic on 32-bit timestamps.
                let ahead = timestamp.wrapping_sub(next) as i32;
                if ahead >= 0 {
                    usize::try_from(ahead).map_or(MAX_FILL, |n| n.min(MAX_FILL))
                } else if now.saturating_duration_since(last_at) < PAUSE {
                    // Late or a duplicate: the newest packet keeps the timeline.
                    self.next = Some((last_ssrc, next, now));
                    return None;
                } else {
                    MAX_FILL
                }
            }
            Some(_) => MAX_FILL,
        };
        let length = u32::try_from(samples).unwrap_or(u32::MAX);
        self.next = Some((ssrc, timestamp.wrapping_add(length), now));
        Some(fill)
    }
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

    #[test]
    fn a_continuous_stream_is_heard_as_it_comes() {
        let stream: Vec<_> = (0..5)
            .map(|i| (i * 20, 7, 1_000 + i as u32 * 160))
            .collect();
        assert_eq!(place(&stream), [Some(0); 5]);
    }

    #[test]
    fn a_lost_packet_is_heard_as_silence() {
        assert_eq!(
            place(&[(0, 7, 0), (20, 7, 160), (60, 7, 480), (80, 7, 640)]),
            [Some(0), Some(0), Some(160), Some(0)]
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
    }

    #[test]
    fn silence_suppression_and_long_jumps_are_capped() {
        // 100 ms without packets (DTX), then 10 s.
        assert_eq!(
            place(&[(0, 7, 0), (120, 7, 960), (10_140, 7, 81_120)]),
            [Some(0), Some(800), Some(MAX_FILL)]
        );
        // Across the 32-bit wrap.
        assert_eq!(
            place(&[(0, 7, u32::MAX - 159), (20, 7, 0), (60, 7, 320)]),
            [Some(0), Some(0), Some(160)]
        );
    }

    #[test]
    fn a_replay_or_a_new_stream_starts_a_new_timeline() {
        // The same timestamps again after a pause (SIPp replaying a pcap), then a new SSRC.
        assert_eq!(
            place(&[
                (0, 7, 0),
                (20, 7, 160),
                (200, 7, 0),
                (220, 7, 160),
                (240, 9, 5)
            ]),
            [Some(0), Some(0), Some(MAX_FILL), Some(0), Some(MAX_FILL)]
        );
    }
}
