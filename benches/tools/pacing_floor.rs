//! The floor under the media figures: how regularly a bare program with no runtime, no
//! prompts and no call state can pace N RTP streams on this machine, measured the way
//! `load_caller` measures vportal.
//!
//! ```text
//! taskset -c 0 cargo run --release --example pacing_floor -- receive --port 40000 &
//! taskset -c 1 cargo run --release --example pacing_floor -- send --port 40000 --streams 3000
//! ```
//!
//! The sender does what vportal's media thread does at its simplest: one socket per
//! stream, connected to the receiver and registered for readability in one `mio` poll,
//! and a 160-octet PCMU packet on each every 20 ms, the streams spread evenly over the
//! 20 ms; it sleeps in the poll until the next millisecond's packets are due. It reports
//! its CPU use and how late it fell behind its own schedule. The receiver busy-polls one
//! socket and reports, after a 2 s warm-up, each stream's largest gap and its jitter over
//! `--seconds`. Loopback only; both stop by themselves (the receiver, if no sender comes,
//! after twice its warm-up and window plus 10 s).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};

#[path = "support/mod.rs"]
mod support;

use support::{StreamStats, cpu_percent, proc_usage, report_streams, rtp_numbers};

const WARM_UP: Duration = Duration::from_secs(2);
const PTIME: Duration = Duration::from_millis(20);

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let (mut port, mut streams, mut seconds) = (40_000_u16, 3_000_usize, 10_u64);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value after each flag");
        match flag.as_str() {
            "--port" => port = value.parse().expect("--port PORT"),
            "--streams" => streams = value.parse().expect("--streams N"),
            "--seconds" => seconds = value.parse().expect("--seconds S"),
            other => panic!("unknown flag {other}"),
        }
    }
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    let window = Duration::from_secs(seconds);
    match mode.as_str() {
        "receive" => receive(at, window),
        "send" => send(at, streams, WARM_UP + window + Duration::from_secs(1)),
        _ => panic!("usage: pacing_floor receive|send [--port P] [--streams N] [--seconds S]"),
    }
}

fn receive(at: SocketAddr, window: Duration) {
    let socket = UdpSocket::bind(at).unwrap();
    socket.set_nonblocking(true).unwrap();
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(16 << 20);
    let mut buf = [0_u8; 2_048];
    let mut stats: HashMap<u16, StreamStats> = HashMap::with_capacity(8_192);
    // The clock starts with the first packet; without one, the receiver gives up.
    let mut started: Option<Instant> = None;
    let give_up = Instant::now() + 2 * (WARM_UP + window) + Duration::from_secs(10);
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.is_some_and(|t| t.elapsed() > WARM_UP + window) {
                    break;
                }
                if started.is_none() && Instant::now() > give_up {
                    println!("no packet came: no sender?");
                    return;
                }
                std::hint::spin_loop();
                continue;
            }
            Err(e) => panic!("receive: {e}"),
        };
        let now = Instant::now();
        let t = *started.get_or_insert(now);
        if now - t < WARM_UP {
            continue;
        }
        if now - t > WARM_UP + window {
            break;
        }
        if let Some((seq, ts, _)) = rtp_numbers(&buf[..n]) {
            stats.entry(from.port()).or_default().record(now, seq, ts);
        }
    }
    let end = started.map_or_else(Instant::now, |t| t + WARM_UP + window);
    report_streams(stats.values(), window, end, None);
}

fn send(to: SocketAddr, streams: usize, running: Duration) {
    let mut poll = Poll::new().unwrap();
    let sockets: Vec<MioSocket> = (0..streams)
        .map(|i| {
            let mut s = MioSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            s.connect(to).unwrap();
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)
                .unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let before = proc_usage(std::process::id()).unwrap();
    let mut events = Events::with_capacity(64);
    let mut packet = [0xff_u8; 172];
    packet[0] = 0x80;
    let mut sent = 0_u64;
    let mut late = Duration::ZERO;
    let mut next = 0; // the next stream due, in stream-major order
    let mut round = 0_u32;
    while start.elapsed() < running {
        let now = Instant::now();
        loop {
            // Stream i's packet in round r is due at r × 20 ms + i × 20 ms / N.
            let due = start + PTIME * round + PTIME.mul_f64(next as f64 / streams as f64);
            if due > now {
                let wait = due - now;
                let _ = poll.poll(&mut events, Some(wait));
                break;
            }
            late = late.max(now - due);
            let seq = round as u16;
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(round * 160).to_be_bytes());
            packet[8..12].copy_from_slice(&(next as u32).to_be_bytes());
            sent += u64::from(sockets[next].send(&packet).is_ok());
            next += 1;
            if next == streams {
                next = 0;
                round += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    let after = proc_usage(std::process::id()).unwrap();
    println!(
        "sender: {sent} packets over {streams} streams in {:.1} s, {:.0}% of one core, \
         at worst {:.1} ms behind its schedule",
        elapsed.as_secs_f64(),
        cpu_percent(before, after, elapsed),
        late.as_secs_f64() * 1_000.0
    );
}
