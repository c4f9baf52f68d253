//! RTP a test caller sends: RFC 4733 key presses and G.711 audio with DTMF tones.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use rtp_rs::{RtpPacketBuilder, Seq};
use vportal::media::g711::{self, Law};

// The load tools bind their media the same way.
#[path = "../../benches/tools/support/mod.rs"]
mod support;
pub use support::bind_pair;

/// A caller's outgoing RTP stream.
pub struct RtpOut {
    pub socket: UdpSocket,
    pub to: SocketAddr,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
}

impl RtpOut {
    pub fn new(socket: UdpSocket, to: SocketAddr) -> Self {
        Self {
            socket,
            to,
            ssrc: 0x1234_5678,
            seq: 100,
            ts: 8_000,
        }
    }

    fn send(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let packet = RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.seq))
            .timestamp(ts)
            .marked(marker)
            .payload(payload)
            .build()
            .unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.socket.send_to(&packet, self.to).unwrap();
    }

    /// One key press as a well-behaved phone sends it: start, continuations every 20 ms,
    /// three end packets; then a 60 ms gap.
    pub fn key(&mut self, pt: u8, key: char) {
        self.key_around(pt, key, || {});
    }

    /// [`RtpOut::key`], running `meanwhile` 40 ms into the press (the key still held).
    pub fn key_around(&mut self, pt: u8, key: char, meanwhile: impl FnOnce()) {
        let code = vportal::media::digit::Digit::from_char(key)
            .unwrap()
            .event_code();
        let ts = self.ts;
        let mut meanwhile = Some(meanwhile);
        for i in 0..5_u16 {
            if i == 2
                && let Some(f) = meanwhile.take()
            {
                f();
            }
            let d = (i * 160).to_be_bytes();
            self.send(pt, i == 0, ts, &[code, 10, d[0], d[1]]);
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = 800_u16.to_be_bytes();
        for _ in 0..3 {
            self.send(pt, false, ts, &[code, 0x80 | 10, d[0], d[1]]);
        }
        self.ts = self.ts.wrapping_add(800 + 480);
        std::thread::sleep(Duration::from_millis(60));
    }

    /// `keys` as RFC 4733 events on `pt`.
    pub fn keys(&mut self, pt: u8, keys: &str) {
        for k in keys.chars() {
            self.key(pt, k);
        }
    }

    /// `packets` of μ-law silence on payload type 0, 20 ms apart in real time: the audio a
    /// phone sends between key presses.
    pub fn silence(&mut self, packets: usize) {
        for _ in 0..packets {
            let ts = self.ts;
            self.send(0, false, ts, &[0xff; 160]);
            self.ts = self.ts.wrapping_add(160);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `keys` as DTMF tones in μ-law audio on payload type 0: 80 ms of tone, 80 ms of
    /// silence each, in 20 ms packets sent in real time.
    pub fn tones(&mut self, keys: &str) {
        for k in keys.chars() {
            let (low, high) = dtmf_freqs(k);
            for frame in 0..8 {
                let mut pcm = Vec::with_capacity(160);
                for n in 0..160 {
                    let t = f64::from(frame * 160 + n) / 8_000.0;
                    let v = if frame < 4 {
                        0.25 * ((2.0 * std::f64::consts::PI * low * t).sin()
                            + (2.0 * std::f64::consts::PI * high * t).sin())
                    } else {
                        0.0
                    };
                    pcm.push((v * 16_000.0) as i16);
                }
                let mut payload = Vec::new();
                g711::encode(Law::Ulaw, &pcm, &mut payload);
                let ts = self.ts;
                self.send(0, frame == 0, ts, &payload);
                self.ts = self.ts.wrapping_add(160);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn dtmf_freqs(key: char) -> (f64, f64) {
    let rows = [697.0, 770.0, 852.0, 941.0];
    let cols = [1209.0, 1336.0, 1477.0, 1633.0];
    let layout = ["123A", "456B", "789C", "*0#D"];
    for (r, line) in layout.iter().enumerate() {
        if let Some(c) = line.find(key) {
            return (rows[r], cols[c]);
        }
    }
    panic!("not a DTMF key: {key}");
}

/// A received RTP packet's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub len: usize,
}

/// Receives RTP on `socket` for `window`.
pub fn receive(socket: &UdpSocket, window: Duration) -> Vec<Seen> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let end = std::time::Instant::now() + window;
    let mut buf = [0_u8; 2_048];
    let mut seen = Vec::new();
    while std::time::Instant::now() < end {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            seen.push(header_of(&buf[..n]));
        }
    }
    seen
}

/// How long a test waits for the packets it expects: generous, since a loaded machine can be
/// slow to run the server or the test. How fast the stream goes is for the benchmarks and
/// load scripts to measure, not the tests.
pub const DELIVERY: Duration = Duration::from_secs(10);

/// Receives RTP on `socket` until `n` packets have come or `within` has passed: what came
/// (`n` packets at most).
pub fn receive_until(socket: &UdpSocket, n: usize, within: Duration) -> Vec<Seen> {
    let end = std::time::Instant::now() + within;
    let mut buf = [0_u8; 2_048];
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .unwrap();
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            seen.push(header_of(&buf[..len]));
        }
    }
    seen
}

/// The first `n` RTP packets `socket` receives. Fails the test, saying `what` was expected,
/// unless all of them come within [`DELIVERY`].
#[track_caller]
pub fn expect_rtp(socket: &UdpSocket, n: usize, what: &str) -> Vec<Seen> {
    let seen = receive_until(socket, n, DELIVERY);
    assert!(
        seen.len() == n,
        "{what}: {} of {n} packets in {DELIVERY:?}",
        seen.len()
    );
    seen
}

/// The header fields of `packet`.
fn header_of(packet: &[u8]) -> Seen {
    let r = rtp_rs::RtpReader::new(packet).unwrap();
    Seen {
        pt: r.payload_type(),
        seq: u16::from(r.sequence_number()),
        ts: r.timestamp(),
        ssrc: r.ssrc(),
        marker: r.mark(),
        len: r.payload().len(),
    }
}

/// Whether RTP sequence number `a` comes before `b` (RFC 3550 arithmetic, modulo 2^16).
pub fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

/// Fails the test if a packet in `seen` (what reached `place`) belongs to the stream of
/// `moved` (the first packet sent where the media went instead) and was sent after it.
#[track_caller]
pub fn assert_sent_before(seen: &[Seen], moved: &Seen, place: &str) {
    let late: Vec<u16> = seen
        .iter()
        .filter(|p| p.ssrc == moved.ssrc && !seq_before(p.seq, moved.seq))
        .map(|p| p.seq)
        .collect();
    assert!(
        late.is_empty(),
        "packets {late:?} went to {place}, the first elsewhere being {}",
        moved.seq
    );
}
