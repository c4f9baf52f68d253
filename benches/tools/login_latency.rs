//! Login latency under load: N callers log in over and over, each keying like a phone (RFC
//! 4733 events), and measure how long the portal takes to answer each `#` (and the menu's
//! `*`): from sending the key's first event packet to the first RTP packet of the next
//! prompt (the RTP marker bit that starts its talkspurt).
//!
//! ```text
//! cargo run --release --example login_latency -- --server 127.0.0.1:5060 --callers 50 \
//!     --first-mailbox 30000 --passcode 48826 [--seconds 60]
//! ```
//!
//! Caller `i` uses mailbox `first-mailbox + i` (provision them first, permanent passcode).
//! Each call: dial 8500, key the mailbox and `#` (next prompt: "enter your passcode"), the
//! passcode and `#` (the check, argon2 included, then the menu), `*` (goodbye), answer the
//! server's BYE, and dial again after a random pause. Steps are reported separately, as
//! median, p90, p99 and max, with the number of samples and of steps whose next prompt
//! never came within 2 s ("missed"): those are counted in the percentiles as 2,000 ms (a
//! lower bound), not left out. Calls that failed (no answer, refused, no BYE) are counted
//! too. Loopback only; it stops after `--seconds` (calls in progress finish, at most about
//! 15 s later).
//!
//! The tool tells prompts apart only by their start, the RTP marker bit of a new talkspurt;
//! it cannot hear which prompt it is ("that is not correct" starts a talkspurt too). So a
//! login is counted only when the whole call went the way a successful login goes: the
//! passcode's `#` was answered by a prompt (the menu), the `*` by another (goodbye), and the
//! server then hung up with BYE. After a wrong passcode `*` clears the mailbox entry and
//! asks again (no BYE); on a locked mailbox the `*` falls into the goodbye, starting no new
//! prompt. `tests/load/login-latency.sh` checks the count against the server's audit.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

#[path = "support/mod.rs"]
mod support;

use support::percentile;

struct Args {
    server: SocketAddr,
    callers: u32,
    first_mailbox: u32,
    passcode: String,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:5060".parse().unwrap(),
        callers: 50,
        first_mailbox: 30_000,
        passcode: "48826".into(),
        seconds: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value.parse().expect("--server ADDR"),
            "--callers" => a.callers = value.parse().expect("--callers N"),
            "--first-mailbox" => a.first_mailbox = value.parse().expect("--first-mailbox N"),
            "--passcode" => a.passcode = value,
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.server.ip().is_loopback(),
        "the load tool only calls loopback addresses"
    );
    a
}

/// The steps measured.
const STEPS: [&str; 3] = ["mailbox #", "passcode # (check)", "menu *"];

/// How long a step waits for the next prompt; a step that waits in vain counts as this.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Results {
    /// Milliseconds, per step (a missed step as `STEP_TIMEOUT`).
    samples: [Vec<f64>; 3],
    /// Calls that went as a successful login goes (see the module notes).
    logins: u64,
    /// Steps whose next prompt never came within `STEP_TIMEOUT`, per step.
    missed: [u64; 3],
    /// Calls never answered (no 200 within 5 s) or refused (4xx, 5xx).
    unanswered: u64,
    /// Answered calls the server did not end with BYE within 10 s of the `*`.
    no_bye: u64,
}

/// One caller's sockets and RTP state.
struct Phone {
    sip: UdpSocket,
    rtp: UdpSocket,
    /// Where the server's RTCP comes (unread).
    _rtcp: UdpSocket,
    server: SocketAddr,
    server_rtp: SocketAddr,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// xorshift state for the key timing.
    rng: u64,
}

impl Phone {
    fn send_event(&mut self, code: u8, marker: bool, end: bool, duration: u16) {
        let mut payload = [code, 10, 0, 0];
        if end {
            payload[1] |= 0x80;
        }
        payload[2..].copy_from_slice(&duration.to_be_bytes());
        let packet = RtpPacketBuilder::new()
            .payload_type(101)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.seq))
            .timestamp(self.ts)
            .marked(marker)
            .payload(&payload)
            .build()
            .unwrap();
        self.seq = self.seq.wrapping_add(1);
        let _ = self.rtp.send_to(&packet, self.server_rtp);
    }

    /// The start of a key press (the moment measured from).
    fn key_down(&mut self, key: char) {
        self.send_event(code(key), true, false, 0);
    }

    /// The rest of the press: a continuation and three end packets, then a pause.
    fn key_up(&mut self, key: char) {
        std::thread::sleep(Duration::from_millis(40));
        self.send_event(code(key), false, false, 320);
        for _ in 0..3 {
            self.send_event(code(key), false, true, 480);
        }
        self.ts = self.ts.wrapping_add(800);
        std::thread::sleep(Duration::from_millis(60));
    }

    fn press(&mut self, key: char) {
        self.key_down(key);
        self.key_up(key);
    }

    /// Throws away what the server sent so far.
    fn drain(&self) {
        let mut buf = [0_u8; 2_048];
        self.rtp.set_nonblocking(true).unwrap();
        while self.rtp.recv(&mut buf).is_ok() {}
        self.rtp.set_nonblocking(false).unwrap();
    }

    /// Presses `key` and waits (at most 2 s) for the first packet of a new talkspurt.
    fn timed_press(&mut self, key: char) -> Option<Duration> {
        // A person's key press falls anywhere within the server's 20 ms packet rhythm; this
        // loop's own rhythm would otherwise lock onto it (always just after a packet).
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        std::thread::sleep(Duration::from_micros(self.rng % 20_000));
        self.drain();
        let start = Instant::now();
        self.key_down(key);
        let mut buf = [0_u8; 2_048];
        let deadline = start + STEP_TIMEOUT;
        let mut seen = None;
        while Instant::now() < deadline {
            let Ok(n) = self.rtp.recv(&mut buf) else {
                continue;
            };
            if let Ok(p) = RtpReader::new(&buf[..n])
                && p.mark()
                && p.payload_type() != 101
            {
                seen = Some(start.elapsed());
                break;
            }
        }
        self.key_up(key);
        seen
    }
}

fn code(key: char) -> u8 {
    match key {
        '*' => 10,
        '#' => 11,
        d => d.to_digit(10).unwrap() as u8,
    }
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// One login call; records its steps and how it ended.
fn call(phone: &mut Phone, mailbox: &str, passcode: &str, n: u64, results: &Mutex<Results>) {
    let local = phone.sip.local_addr().unwrap();
    let rtp_port = phone.rtp.local_addr().unwrap().port();
    let server = phone.server;
    let call_id = format!("lat-{n}-{}@127.0.0.1", local.port());
    let sdp = format!(
        "v=0\r\no=lat 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
    );
    let from = format!("<sip:{mailbox}@127.0.0.1>;tag=lat{n}");
    let invite = format!(
        "INVITE sip:8500@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-lat-{n};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:8500@{server}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{mailbox}@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    phone.sip.send_to(invite.as_bytes(), server).unwrap();
    let mut buf = [0_u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(5);
    let unanswered = || results.lock().unwrap().unanswered += 1;
    let ok = loop {
        if Instant::now() > deadline {
            return unanswered();
        }
        let Ok((len, _)) = phone.sip.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
        if text.starts_with("SIP/2.0 4") || text.starts_with("SIP/2.0 5") {
            return unanswered();
        }
    };
    let to = header(&ok, "To:").unwrap_or_default().to_owned();
    let Some(port) = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return unanswered();
    };
    phone.server_rtp = SocketAddr::new(server.ip(), port);
    let ack = format!(
        "ACK sip:8500@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-latack-{n};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    phone.sip.send_to(ack.as_bytes(), server).unwrap();
    phone.ssrc = phone.ssrc.wrapping_add(1);

    // Let the welcome start, then key as a person does.
    std::thread::sleep(Duration::from_millis(400));
    let mut steps = [None; 3];
    for d in mailbox.chars() {
        phone.press(d);
    }
    steps[0] = phone.timed_press('#');
    std::thread::sleep(Duration::from_millis(200));
    for d in passcode.chars() {
        phone.press(d);
    }
    steps[1] = phone.timed_press('#');
    std::thread::sleep(Duration::from_millis(300));
    steps[2] = phone.timed_press('*');
    {
        let mut r = results.lock().unwrap();
        for (i, s) in steps.iter().enumerate() {
            let d = s.unwrap_or_else(|| {
                r.missed[i] += 1;
                STEP_TIMEOUT
            });
            r.samples[i].push(d.as_secs_f64() * 1_000.0);
        }
    }
    // The goodbye plays; answer the server's BYE.
    let bye = answer_bye(phone, &mut buf);
    let mut r = results.lock().unwrap();
    if !bye {
        r.no_bye += 1;
    }
    if bye && steps[1].is_some() && steps[2].is_some() {
        r.logins += 1;
    }
}

/// Waits (10 s at most) for the server's BYE and answers it; false if none came.
fn answer_bye(phone: &Phone, buf: &mut [u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok((len, from)) = phone.sip.recv_from(buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if text.starts_with("BYE ") {
            let mut reply = String::from("SIP/2.0 200 OK\r\n");
            for name in ["Via:", "From:", "To:", "Call-ID:", "CSeq:"] {
                for line in text.lines().filter(|l| l.starts_with(name)) {
                    reply.push_str(line);
                    reply.push_str("\r\n");
                }
            }
            reply.push_str("Content-Length: 0\r\n\r\n");
            phone.sip.send_to(reply.as_bytes(), from).unwrap();
            return true;
        }
    }
    false
}

fn main() {
    let a = args();
    let started = Instant::now();
    let stop = started + Duration::from_secs(a.seconds);
    let results = Arc::new(Mutex::new(Results::default()));
    let threads: Vec<_> = (0..a.callers)
        .map(|i| {
            let results = Arc::clone(&results);
            let mailbox = (a.first_mailbox + i).to_string();
            let passcode = a.passcode.clone();
            let server = a.server;
            std::thread::spawn(move || {
                let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
                sip.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let (rtp, rtcp) = support::bind_pair([127, 0, 0, 1].into());
                rtp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut phone = Phone {
                    sip,
                    rtp,
                    _rtcp: rtcp,
                    server,
                    server_rtp: server,
                    seq: 1_000,
                    ts: 10_000,
                    ssrc: 0x5000_0000 + i * 1_000,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ ((u64::from(i) + 1) * 0x2545_F491_4F6C_DD1D),
                };
                // Spread the callers over the first two seconds.
                std::thread::sleep(Duration::from_millis(
                    u64::from(i) * 2_000 / u64::from(a.callers),
                ));
                let mut n = 0_u64;
                while Instant::now() < stop {
                    n += 1;
                    call(&mut phone, &mailbox, &passcode, n, &results);
                    // Pause 0-1 s between calls (a cheap spread: the caller index and count).
                    let pause = (u64::from(i) * 37 + n * 91) % 1_000;
                    std::thread::sleep(Duration::from_millis(pause));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Calls in progress at `stop` ran on: the rate is over the whole time.
    let elapsed = started.elapsed().as_secs_f64();
    let r = results.lock().unwrap();
    println!(
        "callers: {}, logins: {} in {elapsed:.1} s ({:.1}/s); failed calls: {} not answered or refused, {} without the server's BYE",
        a.callers,
        r.logins,
        r.logins as f64 / elapsed,
        r.unanswered,
        r.no_bye
    );
    println!("logins counted: {}", r.logins);
    println!(
        "{:<20} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "step (ms)", "n", "missed", "p50", "p90", "p99", "max"
    );
    for ((name, samples), missed) in STEPS.iter().zip(&r.samples).zip(r.missed) {
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "{:<20} {:>7} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name,
            s.len(),
            missed,
            percentile(&s, 0.5),
            percentile(&s, 0.9),
            percentile(&s, 0.99),
            s.last().copied().unwrap_or(0.0)
        );
    }
}
