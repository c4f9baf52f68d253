//! One call's media as the network sees it, sans-IO: which datagrams are the caller's, the
//! keys they carry, and where our RTP and RTCP go.
//!
//! The shell owns the call's two sockets (RTP on an even port, RTCP on the odd one above).
//! It hands each datagram in with the port it came to, the address it came from and the
//! time ([`MediaSession::handle_datagram`]), and asks where to send
//! ([`MediaSession::rtp_destination`], [`MediaSession::rtcp_route`]) and whether its RTP
//! socket may be connected ([`MediaSession::settled_source`]). Everything between is here: the source filter and
//! symmetric RTP ([`RtpReceiver`]), RFC 5761 demultiplexing, which RTCP is trusted and where
//! reports go, the RFC 4733 receiver and the in-band detector on the audio's own timeline,
//! and how each follows a re-INVITE or UPDATE ([`MediaSession::configure`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde::Deserialize;

use super::digit::DigitEvent;
use super::g711::{self, Law};
use super::inband::{InbandConfig, InbandDetector};
use super::rfc4733::TelephoneEvents;
use super::rtcp::{self, Rtcp};
use super::rtp::{Latching, ReceiveStats, RtpReceiver};
use super::timeline::{self, Timeline};

/// When to run the in-band DTMF detector (`rtp.inband_dtmf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InbandDtmf {
    /// Only when the call negotiated no telephone-event payload type.
    Auto,
    /// On every call, besides telephone-events and INFO.
    Always,
    /// Never.
    Never,
}

impl InbandDtmf {
    /// Whether tones are listened for on a call whose telephone-event payload type is
    /// `telephone_event`: a phone that can send RFC 4733 events sends them, and its audio
    /// then carries no tones worth the detector's time (or, sent both ways, a second copy).
    fn listens(self, telephone_event: Option<u8>) -> bool {
        match self {
            Self::Always => true,
            Self::Auto => telephone_event.is_none(),
            Self::Never => false,
        }
    }
}

/// How a call's incoming media is treated: the `[rtp]` settings that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Symmetric RTP (`rtp.symmetric`): follow the caller's real RTP and RTCP sources.
    pub latching: Latching,
    /// When tones in the audio are keys.
    pub inband: InbandDtmf,
    /// The IP the call's signalling came from: with latching, RTP and RTCP are first
    /// latched only at it or at the SDP's IP (see [`RtpReceiver::accept`]).
    pub signalling: Option<IpAddr>,
}

/// What the offer/answer agreed of the caller's media, as far as this module needs it. The
/// shell fills it from the SDP (`sip::sdp::Negotiated`), so that media does not depend on
/// SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where the caller takes RTP; `None` when its SDP named no address to trust (a hold by
    /// `c=0.0.0.0`, a host name).
    pub rtp: Option<SocketAddr>,
    /// Where it takes RTCP: RFC 3605's `a=rtcp`, else the port above RTP's; `None` as for
    /// RTP.
    pub rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port both ways (RFC 5761 `a=rtcp-mux`).
    pub rtcp_mux: bool,
    /// The audio codec's law.
    pub law: Law,
    /// The audio codec's payload type.
    pub audio_pt: u8,
    /// The caller's payload type for telephone-event (RFC 4733), if it has one.
    pub telephone_event: Option<u8>,
    /// Ours, when our offer numbered telephone-event otherwise and the answer left our
    /// number free: events are taken on both (RFC 3264 §5.1 has the peer send with ours,
    /// and many send with their own).
    pub telephone_event_ours: Option<u8>,
    /// The audio stream is disabled (port 0, RFC 3264 §8.2): nothing is heard and nothing
    /// goes out, RTCP included ("RTCP transmission also ceases"), until it is enabled again.
    /// What was learnt of the caller's addresses is kept for then.
    pub disabled: bool,
}

/// Which of the call's two ports a datagram came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The even port: RTP, and RTCP too with `a=rtcp-mux`.
    Rtp,
    /// The odd port above it.
    Rtcp,
}

/// What a datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The caller's RTP, accepted (any keys it carried were appended).
    Rtp,
    /// The caller's RTCP, read.
    Rtcp,
    /// A stranger's datagram, RTCP where none is taken, or not valid: dropped.
    Ignored,
}

/// Where our RTCP goes, and from which of our ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpRoute {
    /// From the RTP port to where RTP goes (`a=rtcp-mux`).
    Muxed(SocketAddr),
    /// From the RTCP port to this address.
    Separate(SocketAddr),
}

/// One call's incoming media and where its outgoing media goes.
#[derive(Debug)]
pub struct MediaSession {
    receiver: RtpReceiver,
    /// The audio codec's payload type.
    audio_pt: u8,
    events: Option<TelephoneEvents>,
    inband: Option<Inband>,
    inband_mode: InbandDtmf,
    /// The audio of the packet being listened to (kept to reuse its allocation).
    pcm: Vec<i16>,
    rtcp: Rtcp,
    rtcp_peer: RtcpPeer,
    /// See [`RemoteMedia::disabled`].
    disabled: bool,
}

/// The in-band detector, for the codec and payload type it hears.
#[derive(Debug)]
struct Inband {
    detector: InbandDetector,
    law: Law,
    pt: u8,
    /// Puts each packet's samples in their place: holes heard as silence, late packets
    /// and duplicates dropped.
    timeline: Timeline,
}

/// Silence to fill holes in the caller's audio with.
static SILENCE: [i16; timeline::MAX_FILL] = [0; timeline::MAX_FILL];

impl MediaSession {
    /// A call's session for the media `remote` agreed, reporting in `rtcp` (which already
    /// knows our SSRC and when its first report is due).
    pub fn new(remote: &RemoteMedia, config: SessionConfig, rtcp: Rtcp) -> Self {
        let mut me = Self {
            receiver: RtpReceiver::new(remote.rtp, config.latching),
            audio_pt: remote.audio_pt,
            events: None,
            inband: None,
            inband_mode: config.inband,
            pcm: Vec::with_capacity(480),
            rtcp,
            rtcp_peer: RtcpPeer {
                latching: config.latching,
                mux: false,
                signalled: None,
                latched: None,
                named: None,
            },
            disabled: false,
        };
        if let Some(ip) = config.signalling {
            me.receiver.set_signalling(ip);
        }
        me.configure(remote);
        me
    }

    /// Follows new media parameters (a re-INVITE or UPDATE). A detector whose parameters
    /// did not change is kept: a re-INVITE (a session refresh, hold, a new address) while a
    /// key is held must not make the rest of that press a second key.
    pub fn configure(&mut self, remote: &RemoteMedia) {
        self.disabled = remote.disabled;
        self.receiver.update_expected(remote.rtp);
        self.rtcp_peer.configure(remote);
        self.audio_pt = remote.audio_pt;
        let events_pt = self.events.as_ref().map(TelephoneEvents::payload_type);
        if events_pt != remote.telephone_event {
            self.events = remote.telephone_event.map(TelephoneEvents::new);
        }
        if let Some(events) = &mut self.events {
            events.also_on(remote.telephone_event_ours);
        }
        let wanted = (remote.law, remote.audio_pt);
        let same = matches!(&self.inband, Some(i) if (i.law, i.pt) == wanted);
        if !self.inband_mode.listens(remote.telephone_event) {
            self.inband = None;
        } else if !same {
            self.inband = Some(Inband {
                detector: InbandDetector::new(InbandConfig::default()),
                law: wanted.0,
                pt: wanted.1,
                timeline: Timeline::new(),
            });
        }
    }

    /// One datagram that came to `port` from `from` at `now`: what it was. The keys it
    /// carries are appended to `keys`; RTP accepted and RTCP read count in the reports.
    pub fn handle_datagram(
        &mut self,
        port: Port,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        keys: &mut Vec<DigitEvent>,
    ) -> Heard {
        if self.disabled {
            return Heard::Ignored;
        }
        match port {
            Port::Rtcp => self.hear_rtcp(from, datagram, now),
            // RTCP on the RTP port (RFC 5761 §4, told by its second byte): the caller's with
            // `a=rtcp-mux`. Without it, a stray report (read as RTP, it would look like a
            // new source) unless the byte is a payload type in use (64–95, with the
            // marker): RFC 5761 keeps those free only when multiplexing.
            Port::Rtp if rtcp::is_rtcp(datagram) && self.rtcp_peer.mux => {
                self.hear_rtcp(from, datagram, now)
            }
            Port::Rtp if rtcp::is_rtcp(datagram) && !self.in_use(datagram[1] & 0x7f) => {
                Heard::Ignored
            }
            Port::Rtp => self.hear_rtp(from, datagram, now, keys),
        }
    }

    /// Whether RTP of payload type `pt` means something here: the audio's, or events'.
    fn in_use(&self, pt: u8) -> bool {
        pt == self.audio_pt || self.events.as_ref().is_some_and(|e| e.accepts(pt))
    }

    /// An RTP datagram: the keys it carries, when it is the caller's.
    fn hear_rtp(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        keys: &mut Vec<DigitEvent>,
    ) -> Heard {
        let followed = self.receiver.stats().followed;
        let Some(packet) = self.receiver.accept(from, datagram, now) else {
            return Heard::Ignored;
        };
        if self.receiver.stats().followed != followed {
            // A NAT rebinding moved the caller's RTP: its RTCP mapping has most likely moved
            // with it, so where reports go is learnt afresh from its next report.
            self.rtcp_peer.relearn();
        }
        self.rtcp.on_rtp(&packet, packet.pt == self.audio_pt, now);
        if let Some(events) = &mut self.events
            && events.accepts(packet.pt)
        {
            keys.extend(events.handle(&packet, now));
            return Heard::Rtp;
        }
        if let Some(inband) = &mut self.inband
            && packet.pt == inband.pt
        {
            let samples = packet.payload.len();
            let placed = inband
                .timeline
                .place(packet.ssrc.0, packet.timestamp, samples, now);
            if let Some(fill) = placed {
                inband.detector.process(&SILENCE[..fill], keys);
                self.pcm.clear();
                g711::decode(inband.law, packet.payload, &mut self.pcm);
                inband.detector.process(&self.pcm, keys);
            }
        }
        Heard::Rtp
    }

    /// An RTCP datagram, on either port: read when it comes from a trusted address and is
    /// a valid compound packet, and then, with latching, possibly where reports go.
    fn hear_rtcp(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> Heard {
        if !trusted_rtcp(from, self.receiver.source(), self.rtcp_peer.signalled) {
            return Heard::Ignored;
        }
        if self.rtcp.receive(datagram, now).is_err() {
            return Heard::Ignored;
        }
        // Only the caller's own reports say where ours go: ours carry its SSRC and how far
        // its numbering has gone, all a NAT rebinding's follow asks of a new address.
        if Rtcp::sender(datagram).is_some_and(|ssrc| self.receiver.has_heard(ssrc)) {
            self.rtcp_peer.heard(from);
        }
        Heard::Rtcp
    }

    /// Where RTP goes now: the caller's source once latched, else the SDP's address; nowhere
    /// while the audio is disabled.
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.receiver.source().filter(|_| !self.disabled)
    }

    /// The address the RTP socket may be connected to: see
    /// [`RtpReceiver::settled_source`] (never one with latching).
    pub fn settled_source(&self) -> Option<SocketAddr> {
        self.receiver.settled_source()
    }

    /// Where RTCP goes now, and from which port: with `a=rtcp-mux` where RTP goes; else
    /// where the caller's reports come from once latched, else where the SDP says. `None`
    /// when there is nowhere (a hold by `c=0.0.0.0`), and while the audio is disabled.
    pub fn rtcp_route(&self) -> Option<RtcpRoute> {
        if self.disabled {
            None
        } else if self.rtcp_peer.mux {
            self.rtp_destination().map(RtcpRoute::Muxed)
        } else {
            self.rtcp_peer
                .latched
                .or(self.rtcp_peer.signalled)
                .map(RtcpRoute::Separate)
        }
    }

    /// The call's RTCP session.
    pub fn rtcp(&self) -> &Rtcp {
        &self.rtcp
    }

    /// The call's RTCP session, to write the report due.
    pub fn rtcp_mut(&mut self) -> &mut Rtcp {
        &mut self.rtcp
    }

    /// What the RTP source filter counted.
    pub fn receive_stats(&self) -> ReceiveStats {
        self.receiver.stats()
    }
}

/// Where the caller's RTCP comes from and goes to.
#[derive(Debug)]
struct RtcpPeer {
    /// With [`Latching::Once`] (`rtp.symmetric`), reports go where the caller's come from.
    latching: Latching,
    /// RTCP shares the RTP port (`a=rtcp-mux`).
    mux: bool,
    /// Where the SDP says RTCP goes.
    signalled: Option<SocketAddr>,
    /// With latching: where the caller's RTCP really comes from, learnt from its first
    /// report (once, as RTP's source), and afresh when the SDP moves it.
    latched: Option<SocketAddr>,
    /// The address the SDP last named for RTCP (a hold's none aside): what a move is told
    /// from.
    named: Option<SocketAddr>,
}

impl RtcpPeer {
    fn configure(&mut self, remote: &RemoteMedia) {
        // As for RTP's source: a hold naming no address and a refresh naming the same one
        // keep what was learnt; another address is a move.
        if let Some(addr) = remote.rtcp.filter(|a| Some(*a) != self.named) {
            self.named = Some(addr);
            self.latched = None;
        }
        self.signalled = remote.rtcp;
        self.mux = remote.rtcp_mux;
    }

    /// The caller's RTP moved without a new SDP (a NAT rebinding): the RTCP source latched
    /// before is forgotten, and the next report's is latched.
    fn relearn(&mut self) {
        self.latched = None;
    }

    /// A report from `from` was read: with latching, and none latched yet, reports go
    /// there from now on. Muxed RTCP goes where RTP goes, so is not latched on its own.
    fn heard(&mut self, from: SocketAddr) {
        if self.latching == Latching::Once && !self.mux && self.latched.is_none() {
            self.latched = Some(from);
        }
    }
}

/// Whether RTCP from `from` may be the caller's: from the IP address its RTP comes from or
/// its SDP gave RTCP, at any port (NATs and `a=rtcp` move it); nothing from another host.
fn trusted_rtcp(
    from: SocketAddr,
    rtp_source: Option<SocketAddr>,
    signalled: Option<SocketAddr>,
) -> bool {
    [rtp_source, signalled]
        .into_iter()
        .flatten()
        .any(|known| known.ip() == from.ip())
}

#[cfg(test)]
mod tests {
    //! Every address is loopback: distinct hosts (a caller's private address, its NAT's
    //! public one, a stranger) are distinct 127.0.0.x, as RTCP is trusted by host.

    use std::time::{Duration, SystemTime};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::media::rtcp::SenderInfo;
    use crate::media::rtp::Ssrc;

    const MS: Duration = Duration::from_millis(1);

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// PCMU from and to `rtp`, RTCP on the port above, no telephone-event.
    fn pcmu(rtp: &str) -> RemoteMedia {
        let rtp = at(rtp);
        RemoteMedia {
            rtp: Some(rtp),
            rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
            rtcp_mux: false,
            law: Law::Ulaw,
            audio_pt: 0,
            telephone_event: None,
            telephone_event_ours: None,
            disabled: false,
        }
    }

    /// `remote` with telephone-event on `pt`.
    fn with_events(remote: RemoteMedia, pt: u8) -> RemoteMedia {
        RemoteMedia {
            telephone_event: Some(pt),
            ..remote
        }
    }

    fn session(remote: &RemoteMedia, latching: Latching, inband: InbandDtmf) -> MediaSession {
        let mut rng = StdRng::seed_from_u64(1);
        let rtcp = Rtcp::new(Instant::now(), Ssrc(1), &mut rng);
        // The caller's NAT, where its SIP comes from too, is 127.0.0.1 in these tests.
        let config = SessionConfig {
            latching,
            inband,
            signalling: Some(IpAddr::from([127, 0, 0, 1])),
        };
        MediaSession::new(remote, config, rtcp)
    }

    /// An RFC 4733 packet on `pt`: `event` at timestamp `ts`, `duration` samples so far,
    /// the marker on the first, the E bit on the last.
    fn event(pt: u8, seq: u16, ts: u32, event: u8, duration: u16, end: bool) -> Vec<u8> {
        let marker = if duration <= 160 { 0x80 } else { 0 };
        let mut packet = vec![0x80, marker | pt];
        packet.extend(seq.to_be_bytes());
        packet.extend(ts.to_be_bytes());
        packet.extend([0, 0, 0, 7, event, if end { 0x80 | 10 } else { 10 }]);
        packet.extend(duration.to_be_bytes());
        packet
    }

    /// 20 ms of μ-law audio, packet `frame` of a stream (sequence number and timestamp
    /// follow from it): key `1`'s tones, or silence.
    fn audio(frame: u16, tone: bool) -> Vec<u8> {
        let (low, high) = (697.0, 1209.0);
        let pcm: Vec<i16> = (0..160)
            .map(|n| {
                let t = f64::from(frame * 160 + n) / 8_000.0;
                let wave = |f: f64| (2.0 * std::f64::consts::PI * f * t).sin();
                let v = if tone {
                    0.25 * (wave(low) + wave(high))
                } else {
                    0.0
                };
                (v * 16_000.0) as i16
            })
            .collect();
        let ts = u32::from(frame) * 160;
        let mut packet = vec![0x80, 0];
        packet.extend(frame.to_be_bytes());
        packet.extend(ts.to_be_bytes());
        packet.extend([0, 0, 0, 7]);
        g711::encode(Law::Ulaw, &pcm, &mut packet);
        packet
    }

    /// μ-law packets of key `1` (60 ms), 40 ms of silence and `1` again (60 ms): 8 packets
    /// of 20 ms.
    fn one_one_in_band() -> Vec<Vec<u8>> {
        (0..8_u16)
            .map(|frame| audio(frame, !(3..5).contains(&frame)))
            .collect()
    }

    /// A valid RTCP compound packet (a sender report and an SDES) of the caller, whose RTP
    /// (see [`audio`]) has SSRC 7.
    fn report() -> Vec<u8> {
        report_of(Ssrc(7))
    }

    /// A valid RTCP compound packet (a sender report and an SDES) of `ssrc`.
    fn report_of(ssrc: Ssrc) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut peer = Rtcp::new(now, ssrc, &mut rng);
        let sender = SenderInfo {
            packets: 10,
            octets: 1_600,
            timestamp: 1_000,
        };
        let mut out = Vec::new();
        peer.write_report(now, SystemTime::now(), sender, &mut rng, &mut out);
        out
    }

    /// Feeds `packets` from `from` to the RTP port, 20 ms apart from `start`: the keys heard.
    fn hear_all(
        s: &mut MediaSession,
        from: SocketAddr,
        packets: &[Vec<u8>],
        start: Instant,
    ) -> String {
        let mut keys = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            let now = start + 20 * MS * u32::try_from(i).unwrap();
            s.handle_datagram(Port::Rtp, from, packet, now, &mut keys);
        }
        keys.iter().map(|k| k.digit.reveal()).collect()
    }

    /// An answer to our offer that numbered telephone-event 96: keys are heard on 96 and on
    /// our 101 (RFC 3264 §5.1 has the peer send with ours).
    #[test]
    fn events_are_taken_on_both_numbers_after_an_answer_that_renumbered_them() {
        let remote = RemoteMedia {
            telephone_event_ours: Some(101),
            ..with_events(pcmu("127.0.0.1:5000"), 96)
        };
        let peer = remote.rtp.unwrap();
        let mut s = session(&remote, Latching::Off, InbandDtmf::Never);
        let now = Instant::now();
        // Key 1 on 101, then key 2 on 96: a start packet each, its own timestamp.
        let packets = [
            event(101, 1, 1000, 1, 160, false),
            event(96, 2, 9000, 2, 160, false),
        ];
        assert_eq!(hear_all(&mut s, peer, &packets, now), "12");
        // Without a second number, 101 is just another payload type.
        let plain = RemoteMedia {
            telephone_event_ours: None,
            ..remote
        };
        let mut s = session(&plain, Latching::Off, InbandDtmf::Never);
        assert_eq!(hear_all(&mut s, peer, &packets[..1], now), "");
    }

    /// In-band keys are heard on the audio's own timeline: a lost packet in the pause
    /// between two presses of one key, a tone packet overtaken by the next, or a duplicate,
    /// does not join the presses into one.
    #[test]
    fn in_band_keys_survive_loss_reordering_and_duplicates() {
        let remote = pcmu("127.0.0.1:5000");
        let peer = remote.rtp.unwrap();
        let packets = one_one_in_band();
        let t0 = Instant::now();
        // Each case: the packets in the order they arrive, 20 ms apart.
        let cases: [(&str, Vec<usize>); 4] = [
            ("all", (0..8).collect()),
            ("a pause packet lost", vec![0, 1, 2, 3, 5, 6, 7]),
            ("a tone packet overtaken", vec![0, 1, 3, 2, 4, 5, 6, 7]),
            ("a duplicate", vec![0, 1, 2, 3, 3, 4, 5, 6, 7]),
        ];
        for (case, order) in cases {
            let mut s = session(&remote, Latching::Off, InbandDtmf::Auto);
            let arriving: Vec<Vec<u8>> = order.iter().map(|&n| packets[n].clone()).collect();
            assert_eq!(hear_all(&mut s, peer, &arriving, t0), "11", "{case}");
        }
    }

    /// A re-INVITE that changes nothing the detectors depend on (a session refresh) while a
    /// key is held: the rest of the press is the same key, by RFC 4733 and in-band alike.
    /// A fresh detector would take the rest for a press of its own.
    #[test]
    fn a_key_held_across_a_reinvite_with_unchanged_parameters_is_heard_once() {
        let t0 = Instant::now();
        let remote = with_events(pcmu("127.0.0.1:5000"), 101);
        let peer = remote.rtp.unwrap();
        let mut s = session(&remote, Latching::Off, InbandDtmf::Never);
        let mut keys = Vec::new();
        let mut send = |s: &mut MediaSession, seq: u16, duration: u16, end: bool| {
            let packet = event(101, seq, 8_000, 5, duration, end);
            let now = t0 + 20 * MS * u32::from(seq);
            s.handle_datagram(Port::Rtp, peer, &packet, now, &mut keys);
        };
        send(&mut s, 0, 160, false);
        send(&mut s, 1, 320, false);
        s.configure(&remote);
        // Hold naming no address changes none of them either.
        s.configure(&RemoteMedia {
            rtp: None,
            rtcp: None,
            ..remote
        });
        s.configure(&remote);
        for seq in 2..5 {
            send(&mut s, seq, 160 * (seq + 1), false);
        }
        send(&mut s, 5, 800, true);
        assert_eq!(keys.len(), 1, "{keys:?}");

        // In-band: 140 ms of tone with the refresh 60 ms into it.
        let remote = pcmu("127.0.0.1:5000");
        let mut s = session(&remote, Latching::Off, InbandDtmf::Always);
        let tone: Vec<Vec<u8>> = (0..12).map(|frame| audio(frame, frame < 7)).collect();
        let mut heard = hear_all(&mut s, peer, &tone[..3], t0);
        s.configure(&remote);
        heard += &hear_all(&mut s, peer, &tone[3..], t0 + 60 * MS);
        assert_eq!(heard, "1");

        // The same with a codec change (PCMA): the detector is new, and so is the key it
        // hears in the rest of the press. (The check that the comparison means something.)
        let mut s = session(&remote, Latching::Off, InbandDtmf::Always);
        let mut heard = hear_all(&mut s, peer, &tone[..3], t0);
        s.configure(&RemoteMedia {
            audio_pt: 8,
            law: Law::Alaw,
            ..remote
        });
        let as_pcma: Vec<Vec<u8>> = (3..12_u16)
            .map(|frame| {
                let mut packet = audio(frame, frame < 7);
                packet[1] = 8;
                let pcm: Vec<i16> = {
                    let mut pcm = Vec::new();
                    g711::decode(Law::Ulaw, &packet[12..], &mut pcm);
                    pcm
                };
                packet.truncate(12);
                g711::encode(Law::Alaw, &pcm, &mut packet);
                packet
            })
            .collect();
        heard += &hear_all(&mut s, peer, &as_pcma, t0 + 60 * MS);
        assert_eq!(heard, "11");
    }

    /// Tones are keys as `rtp.inband_dtmf` says: `auto` only while no telephone-event is
    /// negotiated (a re-INVITE adding or dropping it switches), `always`, `never`.
    #[test]
    fn in_band_detection_follows_the_mode_and_the_negotiated_events() {
        let t0 = Instant::now();
        let plain = pcmu("127.0.0.1:5000");
        let peer = plain.rtp.unwrap();
        let events = with_events(plain, 101);
        let tones = one_one_in_band();
        let cases = [
            (InbandDtmf::Auto, plain, "11"),
            (InbandDtmf::Auto, events, ""),
            (InbandDtmf::Always, events, "11"),
            (InbandDtmf::Always, plain, "11"),
            (InbandDtmf::Never, plain, ""),
        ];
        for (mode, remote, expected) in cases {
            let mut s = session(&remote, Latching::Off, mode);
            let heard = hear_all(&mut s, peer, &tones, t0);
            assert_eq!(heard, expected, "{mode:?} {:?}", remote.telephone_event);
        }
        // `auto`: a re-INVITE that adds telephone-event turns the detector off, one that
        // drops it turns it on again.
        let mut s = session(&plain, Latching::Off, InbandDtmf::Auto);
        s.configure(&events);
        assert_eq!(hear_all(&mut s, peer, &tones, t0), "");
        s.configure(&plain);
        assert_eq!(hear_all(&mut s, peer, &tones, t0 + 200 * MS), "11");
    }

    /// RTCP is heard from the caller's host at any port, and from no other host.
    #[test]
    fn rtcp_is_trusted_from_the_callers_address_only() {
        let rtp = Some(at("127.0.0.1:4000"));
        let signalled = Some(at("127.0.0.1:4001"));
        assert!(trusted_rtcp(at("127.0.0.1:4001"), rtp, signalled));
        assert!(trusted_rtcp(at("127.0.0.1:61000"), rtp, None));
        assert!(trusted_rtcp(at("127.0.0.1:4001"), None, signalled));
        assert!(!trusted_rtcp(at("127.0.0.9:4001"), rtp, signalled));
        assert!(!trusted_rtcp(at("[::1]:4001"), rtp, signalled));
        assert!(!trusted_rtcp(at("127.0.0.1:4001"), None, None));

        // Through the session, on either port.
        let t0 = Instant::now();
        let remote = RemoteMedia {
            rtcp_mux: true,
            ..pcmu("127.0.0.1:4000")
        };
        let mut s = session(&remote, Latching::Off, InbandDtmf::Never);
        let report = report();
        let mut keys = Vec::new();
        let mut hear = |port, from: &str| s.handle_datagram(port, at(from), &report, t0, &mut keys);
        assert_eq!(hear(Port::Rtcp, "127.0.0.1:61000"), Heard::Rtcp);
        assert_eq!(hear(Port::Rtp, "127.0.0.1:4000"), Heard::Rtcp);
        assert_eq!(hear(Port::Rtcp, "127.0.0.9:4001"), Heard::Ignored);
        assert_eq!(hear(Port::Rtp, "127.0.0.9:4000"), Heard::Ignored);
        assert_eq!(s.rtcp().stats().received, 2);
        // Without `a=rtcp-mux` RTCP on the RTP port is stray, even the caller's.
        let mut s = session(&pcmu("127.0.0.1:4000"), Latching::Off, InbandDtmf::Never);
        let from = at("127.0.0.1:4000");
        let heard = s.handle_datagram(Port::Rtp, from, &report, t0, &mut keys);
        assert_eq!(heard, Heard::Ignored);
        assert_eq!(s.rtcp().stats().received, 0);
        assert_eq!(s.receive_stats().accepted, 0, "RTCP taken for RTP");
    }

    /// Without `a=rtcp-mux`, payload types 64–95 are free to use (RFC 5761 keeps them clear
    /// only when multiplexing): an event's first packet on 77, marker set, has the second
    /// byte of an RTCP report and is still RTP. Before, it was dropped as stray RTCP.
    #[test]
    fn a_marked_packet_on_a_payload_type_from_64_to_95_is_rtp_without_mux() {
        let t0 = Instant::now();
        let remote = with_events(pcmu("127.0.0.1:5000"), 77);
        let peer = remote.rtp.unwrap();
        let mut s = session(&remote, Latching::Off, InbandDtmf::Never);
        let mut keys = Vec::new();
        let first = event(77, 0, 8_000, 5, 160, false);
        assert!(rtcp::is_rtcp(&first), "the case in question");
        assert_eq!(
            s.handle_datagram(Port::Rtp, peer, &first, t0, &mut keys),
            Heard::Rtp
        );
        assert_eq!(s.receive_stats().accepted, 1);
        // A payload type not in use that looks like RTCP is still taken for stray RTCP.
        let stray = event(72, 1, 8_000, 5, 160, false);
        assert_eq!(
            s.handle_datagram(Port::Rtp, peer, &stray, t0, &mut keys),
            Heard::Ignored
        );
        assert_eq!(s.receive_stats().accepted, 1);
    }

    /// With latching, reports go where the caller's first report came from, learnt once;
    /// afresh when the SDP moves RTCP, not when a refresh or a hold names the same or none.
    #[test]
    fn rtcp_latches_once_and_afresh_when_the_sdp_moves_it() {
        let t0 = Instant::now();
        let remote = pcmu("127.0.0.2:30000");
        let signalled = remote.rtcp.unwrap();
        let nat = at("127.0.0.1:61000");
        let mut s = session(&remote, Latching::Once, InbandDtmf::Never);
        let report = report();
        let mut keys = Vec::new();
        // Before any report: where the SDP says.
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(signalled)));
        // RTP latches onto the NAT's address; its RTCP comes from another port of it.
        let audio = audio(0, false);
        assert_eq!(
            s.handle_datagram(Port::Rtp, nat, &audio, t0, &mut keys),
            Heard::Rtp
        );
        let nat_rtcp = at("127.0.0.1:61001");
        s.handle_datagram(Port::Rtcp, nat_rtcp, &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        // Once: a report from another port of that host is read but moves nothing.
        let other = at("127.0.0.1:62000");
        assert_eq!(
            s.handle_datagram(Port::Rtcp, other, &report, t0, &mut keys),
            Heard::Rtcp
        );
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        // A refresh, a hold naming no address and the resume keep it.
        s.configure(&remote);
        s.configure(&RemoteMedia {
            rtp: None,
            rtcp: None,
            ..remote
        });
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        s.configure(&remote);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        // The SDP moves RTCP: there at once, then wherever its next report comes from.
        let moved = pcmu("127.0.0.1:40000");
        s.configure(&moved);
        let moved_rtcp = moved.rtcp.unwrap();
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(moved_rtcp)));
        let relearnt = at("127.0.0.1:63001");
        s.handle_datagram(Port::Rtcp, relearnt, &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(relearnt)));

        // Without latching reports go where the SDP says, whatever comes from elsewhere.
        let mut s = session(&remote, Latching::Off, InbandDtmf::Never);
        let from = at("127.0.0.2:50000");
        assert_eq!(
            s.handle_datagram(Port::Rtcp, from, &report, t0, &mut keys),
            Heard::Rtcp
        );
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(signalled)));
    }

    /// The audio disabled (port 0) with latching: the latched source's RTP, keys included,
    /// and its RTCP are not heard, and neither RTP nor RTCP has anywhere to go (RFC 3264
    /// §8.2: RTCP ceases too). Enabled again at the same address, what was learnt holds.
    #[test]
    fn a_disabled_stream_hears_nothing_and_sends_nowhere() {
        let t0 = Instant::now();
        let remote = with_events(pcmu("127.0.0.2:30000"), 101);
        let nat = at("127.0.0.1:61000");
        let nat_rtcp = at("127.0.0.1:61001");
        let mut s = session(&remote, Latching::Once, InbandDtmf::Never);
        let report = report();
        let mut keys = Vec::new();
        s.handle_datagram(Port::Rtp, nat, &audio(0, false), t0, &mut keys);
        s.handle_datagram(Port::Rtcp, nat_rtcp, &report, t0, &mut keys);
        assert_eq!(s.rtp_destination(), Some(nat));
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        let off = RemoteMedia {
            rtp: None,
            rtcp: None,
            disabled: true,
            ..remote
        };
        s.configure(&off);
        assert_eq!((s.rtp_destination(), s.rtcp_route()), (None, None));
        let key = event(101, 1, 160, 1, 160, true);
        let t1 = t0 + 100 * MS;
        assert_eq!(
            s.handle_datagram(Port::Rtp, nat, &key, t1, &mut keys),
            Heard::Ignored
        );
        assert_eq!(
            s.handle_datagram(Port::Rtcp, nat_rtcp, &report, t1, &mut keys),
            Heard::Ignored
        );
        // Nor does a stranger latch meanwhile.
        let stranger = at("127.0.0.5:5000");
        assert_eq!(
            s.handle_datagram(Port::Rtp, stranger, &key, t1, &mut keys),
            Heard::Ignored
        );
        assert!(keys.is_empty(), "{keys:?}");
        s.configure(&remote);
        assert_eq!(s.rtp_destination(), Some(nat));
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        let t2 = t0 + 200 * MS;
        assert_eq!(
            s.handle_datagram(
                Port::Rtp,
                nat,
                &event(101, 2, 320, 2, 160, true),
                t2,
                &mut keys
            ),
            Heard::Rtp
        );
        assert_eq!(keys.len(), 1, "{keys:?}");
    }

    /// With latching, a NAT rebinding that RTP follows makes RTCP's latch learnt afresh: the
    /// old RTCP mapping is most likely gone with the old RTP one.
    #[test]
    fn rtcp_is_learnt_afresh_when_rtp_follows_a_rebinding() {
        let t0 = Instant::now();
        let remote = pcmu("127.0.0.2:30000");
        let mut s = session(&remote, Latching::Once, InbandDtmf::Never);
        let mut keys = Vec::new();
        let report = report();
        let (nat, nat_rtcp) = (at("127.0.0.1:61000"), at("127.0.0.1:61001"));
        for frame in 0..5 {
            let now = t0 + 20 * MS * u32::from(frame);
            s.handle_datagram(Port::Rtp, nat, &audio(frame, false), now, &mut keys);
        }
        s.handle_datagram(Port::Rtcp, nat_rtcp, &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(nat_rtcp)));
        // The NAT maps the flow to new ports; the old ones fall silent.
        let (rebound, rebound_rtcp) = (at("127.0.0.1:62000"), at("127.0.0.1:62001"));
        let mut heard = Vec::new();
        for frame in 5..20 {
            let now = t0 + 20 * MS * u32::from(frame);
            heard.push(s.handle_datagram(Port::Rtp, rebound, &audio(frame, false), now, &mut keys));
        }
        assert!(heard.contains(&Heard::Rtp), "{heard:?}");
        assert_eq!(s.rtp_destination(), Some(rebound));
        assert_eq!(
            s.rtcp_route(),
            remote.rtcp.map(RtcpRoute::Separate),
            "the old RTCP mapping is forgotten"
        );
        s.handle_datagram(Port::Rtcp, rebound_rtcp, &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Separate(rebound_rtcp)));
    }

    /// Where RTCP goes: with `a=rtcp-mux` from the RTP port to where RTP goes (following
    /// RTP's latch, never one of its own); else from the RTCP port to the latched or the
    /// signalled address; nowhere when the SDP gives none.
    #[test]
    fn rtcp_goes_with_rtp_when_muxed_else_where_latched_or_signalled() {
        let t0 = Instant::now();
        let mut keys = Vec::new();
        let report = report();
        let muxed = RemoteMedia {
            rtcp_mux: true,
            rtcp: Some(at("127.0.0.1:4000")),
            ..pcmu("127.0.0.1:4000")
        };
        let mut s = session(&muxed, Latching::Once, InbandDtmf::Never);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Muxed(at("127.0.0.1:4000"))));
        let nat = at("127.0.0.1:50000");
        s.handle_datagram(Port::Rtp, nat, &audio(0, false), t0, &mut keys);
        assert_eq!(s.rtp_destination(), Some(nat));
        s.handle_datagram(Port::Rtp, at("127.0.0.1:50002"), &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), Some(RtcpRoute::Muxed(nat)));

        let remote = pcmu("127.0.0.1:4000");
        let mut s = session(&remote, Latching::Once, InbandDtmf::Never);
        let signalled = Some(RtcpRoute::Separate(at("127.0.0.1:4001")));
        assert_eq!(s.rtcp_route(), signalled);
        // Reports are latched only once their sender's RTP has been heard: before it, and
        // from an SSRC never heard on RTP (a host behind the same NAT), they are read but
        // say nothing of where ours go, which carry the caller's SSRC and numbering.
        s.handle_datagram(Port::Rtcp, at("127.0.0.1:50001"), &report, t0, &mut keys);
        assert_eq!(s.rtcp_route(), signalled);
        s.handle_datagram(
            Port::Rtp,
            at("127.0.0.1:50000"),
            &audio(0, false),
            t0,
            &mut keys,
        );
        let neighbour = report_of(Ssrc(9));
        assert_eq!(
            s.handle_datagram(Port::Rtcp, at("127.0.0.1:50009"), &neighbour, t0, &mut keys),
            Heard::Rtcp
        );
        assert_eq!(s.rtcp_route(), signalled);
        s.handle_datagram(Port::Rtcp, at("127.0.0.1:50001"), &report, t0, &mut keys);
        assert_eq!(
            s.rtcp_route(),
            Some(RtcpRoute::Separate(at("127.0.0.1:50001")))
        );

        let nowhere = RemoteMedia {
            rtp: None,
            rtcp: None,
            ..remote
        };
        let s = session(&nowhere, Latching::Off, InbandDtmf::Never);
        assert_eq!((s.rtp_destination(), s.rtcp_route()), (None, None));
    }
}
