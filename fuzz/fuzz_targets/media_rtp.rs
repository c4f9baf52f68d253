//! Datagrams through the call's receive path, as `media::session::MediaSession` wires it:
//! the RTP receiver, then the RFC 4733 receiver for the telephone-event payload type, else
//! the audio's timeline, G.711 decoding and the in-band detector for the audio payload
//! type. A virtual clock advances between datagrams.
//!
//! Input: 3 octets of set-up (flags, telephone-event PT, audio PT), then records of
//! `source selector, milliseconds to advance, length, datagram`. A selector with its top bit
//! set is a new SDP instead (a re-INVITE naming one of the sources, or none), and its
//! datagram is skipped.
//!
//! Invariants beyond "no crash": the receiver's counters add up; an accepted packet is from
//! the trusted source (without latching, the one the SDP named last; with latching, the first
//! source accepted since the SDP last moved the media, or the one latched before that move,
//! or one it was followed to: a rebinding, counted, of an SSRC heard before, after the
//! source had been quiet for `FOLLOW_QUIET`),
//! its fields are the header's, its payload lies in the datagram and its extended sequence
//! number ends in the wire one; an RFC 4733 key comes only from an event
//! packet carrying that key, and one (SSRC, timestamp) is not reported twice within
//! `REPEAT_GUARD` (unless enough other events came between to push it out of memory); the
//! in-band detector hears the same keys whether fed per packet or all at once.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vportal::media::digit::{Digit, DigitEvent, DtmfMethod};
use vportal::media::g711::{self, Law};
use vportal::media::inband::{InbandConfig, InbandDetector};
use vportal::media::rfc4733::{REPEAT_GUARD, TelephoneEvents};
use vportal::media::rtp::{FOLLOW_QUIET, Latching, RtpReceiver};
use vportal::media::timeline::{MAX_FILL, Timeline};

/// Other events' packets after which a (SSRC, timestamp) may have been forgotten (the
/// receiver remembers 16 ended events; a continued long press can push two per packet).
const FORGET_AFTER: usize = 8;

fuzz_target!(|data: &[u8]| {
    let [flags, te_pt, audio_pt, rest @ ..] = data else {
        return;
    };
    let (te_pt, audio_pt) = (te_pt & 0x7f, audio_pt & 0x7f);
    let sources: [SocketAddr; 3] = [
        "127.0.0.1:6000".parse().unwrap(),
        "127.0.0.1:6002".parse().unwrap(),
        "[::1]:6000".parse().unwrap(),
    ];
    let latching = if flags & 1 != 0 {
        Latching::Once
    } else {
        Latching::Off
    };
    let mut expected = (flags & 2 == 0).then_some(sources[0]);
    let law = if flags & 4 != 0 { Law::Alaw } else { Law::Ulaw };
    let use_events = flags & 8 == 0;
    let use_inband = flags & 16 != 0;

    let mut receiver = RtpReceiver::new(expected, latching);
    // The call's SIP came from the first two sources' host; [::1] is latched only when an
    // SDP names it.
    receiver.set_signalling(IpAddr::from([127, 0, 0, 1]));
    let mut events = use_events.then(|| TelephoneEvents::new(te_pt));
    let mut inband = InbandDetector::new(InbandConfig::default());
    let mut timeline = Timeline::new();
    let mut inband_keys = Vec::new();
    let mut all_pcm: Vec<i16> = Vec::new();
    let mut pcm = Vec::new();

    let t0 = Instant::now();
    let mut now = t0;
    let mut datagrams = 0_u64;
    // With latching: the address the SDP named last, the source latched before the media
    // last moved, and the other source accepted since then.
    let mut signalled = expected;
    let mut before_move: Option<SocketAddr> = None;
    let mut first_source: Option<SocketAddr> = None;
    // The SSRCs accepted so far, and when the last packet was.
    let mut ssrcs: HashSet<u32> = HashSet::new();
    let mut last_accepted: Option<Instant> = None;
    // Per (SSRC, timestamp): when it was last reported, and the event packets of other keys
    // seen since.
    let mut reported: HashMap<(u32, u32), (Instant, usize)> = HashMap::new();

    let mut rest = rest;
    while let [from, advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(len);
        rest = after;
        now += Duration::from_millis(u64::from(*advance));
        if from & 0x80 != 0 {
            let named = sources.get(usize::from(from & 0x7f) % (sources.len() + 1));
            receiver.update_expected(named.copied());
            match latching {
                Latching::Off => expected = named.copied(),
                // Hold (none) and a refresh naming the same address keep the latched source.
                Latching::Once => {
                    if let Some(&addr) = named.filter(|a| Some(**a) != signalled) {
                        signalled = Some(addr);
                        // The source latched: the one accepted since the last move, else
                        // the one from before it (relatched, or none came).
                        before_move = first_source.or(before_move);
                        first_source = None;
                    }
                }
            }
            continue;
        }
        let from = sources[usize::from(*from) % sources.len()];
        datagrams += 1;

        let followed = receiver.stats().followed;
        let Some(packet) = receiver.accept(from, datagram, now) else {
            continue;
        };
        // The trusted source.
        match (latching, expected) {
            (Latching::Off, Some(addr)) => assert_eq!(from, addr),
            (Latching::Off, None) => panic!("accepted with no source to trust"),
            // "From the first source seen, once" (README, `rtp.symmetric`); after a move, the
            // source before it is still heard until another one is.
            (Latching::Once, _) if Some(from) == before_move && first_source.is_none() => {}
            (Latching::Once, _) => {
                // Latched only at the signalling's IP or the SDP's (no RTP bleed).
                assert!(
                    first_source.is_some()
                        || from.ip() == IpAddr::from([127, 0, 0, 1])
                        || signalled.is_some_and(|a| a.ip() == from.ip()),
                    "{from} latched"
                );
                let first = *first_source.get_or_insert(from);
                if from != first {
                    // Only a rebinding followed: the stream went on from `from` once the
                    // source had gone quiet.
                    assert_eq!(
                        receiver.stats().followed,
                        followed + 1,
                        "a second source was accepted after {first}"
                    );
                    assert!(ssrcs.contains(&packet.ssrc.0), "a new SSRC was followed");
                    let quiet = last_accepted.map(|at| now.duration_since(at));
                    assert!(quiet.is_none_or(|q| q >= FOLLOW_QUIET), "{quiet:?}");
                    first_source = Some(from);
                }
                assert_eq!(receiver.source(), Some(from));
                before_move = None;
                // Never settled: the socket stays unconnected (the SDP may move it).
                assert_eq!(receiver.settled_source(), None);
            }
        }
        ssrcs.insert(packet.ssrc.0);
        last_accepted = Some(now);
        // The header's fields.
        assert!(datagram.len() >= 12);
        assert_eq!(datagram[0] >> 6, 2);
        assert_eq!(packet.pt, datagram[1] & 0x7f);
        assert_eq!(packet.marker, datagram[1] & 0x80 != 0);
        let wire_seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        assert_eq!(packet.seq.0 & 0xffff, u64::from(wire_seq));
        assert_eq!(
            packet.timestamp,
            u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]])
        );
        assert_eq!(
            packet.ssrc.0,
            u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]])
        );
        let range = datagram.as_ptr_range();
        let p = packet.payload.as_ptr_range();
        assert!(range.start <= p.start && p.end <= range.end);

        if let Some(ev) = &mut events
            && packet.pt == ev.payload_type()
        {
            let key = (packet.ssrc.0, packet.timestamp);
            let code = packet.payload.first().copied();
            let is_event = packet.payload.len() >= 4 && code.and_then(Digit::from_event).is_some();
            if is_event {
                for (k, (_, others)) in reported.iter_mut() {
                    if *k != key {
                        *others += 1;
                    }
                }
            }
            if let Some(heard) = ev.handle(&packet, now) {
                assert!(is_event, "a key from a packet that is no event");
                assert_eq!(Some(heard.digit), code.and_then(Digit::from_event));
                assert_eq!(heard.method, DtmfMethod::Rfc4733);
                if let Some((at, others)) = reported.get(&key) {
                    assert!(
                        now.duration_since(*at) >= REPEAT_GUARD || *others >= FORGET_AFTER,
                        "event {key:?} reported twice within {:?}",
                        now.duration_since(*at)
                    );
                }
                reported.insert(key, (now, 0));
            }
            continue;
        }
        if use_inband && packet.pt == audio_pt {
            let samples = packet.payload.len();
            let Some(fill) = timeline.place(packet.ssrc.0, packet.timestamp, samples, now) else {
                continue;
            };
            assert!(fill <= MAX_FILL);
            pcm.clear();
            pcm.resize(fill, 0);
            g711::decode(law, packet.payload, &mut pcm);
            assert_eq!(pcm.len(), fill + samples);
            all_pcm.extend_from_slice(&pcm);
            inband.process(&pcm, &mut inband_keys);
        }
    }

    let stats = receiver.stats();
    assert_eq!(stats.accepted + stats.foreign + stats.malformed, datagrams);

    for key in &inband_keys {
        assert_eq!(key.method, DtmfMethod::InBand);
        assert!(key.duration.is_some());
    }
    // Chunk boundaries do not matter.
    let whole = detect(&all_pcm, all_pcm.len().max(1));
    assert_eq!(summary(&whole), summary(&inband_keys));
    let odd = detect(&all_pcm, 7);
    assert_eq!(summary(&odd), summary(&inband_keys));
});

fn detect(pcm: &[i16], chunk: usize) -> Vec<DigitEvent> {
    let mut d = InbandDetector::new(InbandConfig::default());
    let mut out = Vec::new();
    for part in pcm.chunks(chunk) {
        d.process(part, &mut out);
    }
    out
}

fn summary(keys: &[DigitEvent]) -> Vec<(char, Option<Duration>)> {
    keys.iter()
        .map(|k| (k.digit.reveal(), k.duration))
        .collect()
}
