//! A load caller for vportal: holds N concurrent calls to the portal and measures, at the
//! receiving end, how regularly each call's prompt stream arrives.
//!
//! ```text
//! cargo run --release --example load_caller -- --server 127.0.0.1:5060 --calls 3000 \
//!     [--rate 200] [--settle 3] [--measure 10] [--pid SERVER_PID] \
//!     [--login FIRST_MAILBOX,PASSCODE --login-rate 50]
//! ```
//!
//! Every call's SDP points at one local receive socket; streams are told apart by SSRC. After
//! all calls are up and a settling time, it records arrival times for `--measure` seconds and
//! reports, over the streams: the distribution of each stream's largest inter-packet gap
//! (p50/p95/max), RFC 3550 interarrival jitter, loss, and with `--pid` the server's CPU use
//! and resident memory per call. Then it hangs up every call. Loopback only; bounded in
//! count and time (it gives up after `settle + measure + 60` seconds, plus the login time,
//! whatever happens).
//! Its receiving thread busy-polls (give it a core of its own): on loopback the kernel
//! delivers packets in the sender's context, and waking a sleeping receiver would be charged
//! to the server.
//!
//! With `--login`, call `i` then logs in to mailbox `FIRST_MAILBOX + i` with `PASSCODE`,
//! keyed as RFC 4733 events from the shared media socket (the address its SDP named), at
//! `--login-rate` logins a second, so the streams measured are calls sitting in the menu. At
//! the end each call presses `*` (goodbye) instead of hanging up, and the tool counts the
//! server's BYEs: proof that every call still heard its keys at that load.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::{StreamStats, cpu_percent, proc_usage, report_streams, rtp_numbers};

struct Args {
    server: SocketAddr,
    calls: usize,
    rate: u32,
    settle: u64,
    measure: u64,
    pid: Option<u32>,
    login: Option<(u64, String)>,
    login_rate: u32,
}

fn args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:5060".parse().unwrap(),
        calls: 100,
        rate: 200,
        settle: 3,
        measure: 10,
        pid: None,
        login: None,
        login_rate: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value.parse().expect("--server ADDR"),
            "--calls" => a.calls = value.parse().expect("--calls N"),
            "--rate" => a.rate = value.parse().expect("--rate CPS"),
            "--settle" => a.settle = value.parse().expect("--settle SECONDS"),
            "--measure" => a.measure = value.parse().expect("--measure SECONDS"),
            "--pid" => a.pid = Some(value.parse().expect("--pid PID")),
            "--login" => {
                let (first, passcode) = value
                    .split_once(',')
                    .expect("--login FIRST_MAILBOX,PASSCODE");
                a.login = Some((first.parse().expect("a numeric mailbox"), passcode.into()));
            }
            "--login-rate" => a.login_rate = value.parse().expect("--login-rate PER_SECOND"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.server.ip().is_loopback(),
        "the load caller only calls loopback addresses"
    );
    a
}

/// The packet intervals of all streams, in 10 µs buckets up to 1 s (and the largest
/// exactly): every interval of the window counts, however many streams there are (a list
/// of them capped at 500,000 held only the window's first seconds at 3,000 streams).
struct Intervals {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

impl Intervals {
    const BUCKET: Duration = Duration::from_micros(10);
    const BUCKETS: usize = 100_000;

    fn new() -> Self {
        Self {
            buckets: vec![0; Self::BUCKETS + 1],
            count: 0,
            max: Duration::ZERO,
        }
    }

    fn add(&mut self, gap: Duration) {
        let b = (gap.as_nanos() / Self::BUCKET.as_nanos()) as usize;
        self.buckets[b.min(Self::BUCKETS)] += 1;
        self.count += 1;
        self.max = self.max.max(gap);
    }

    /// The `p` quantile in ms (nearest rank; a bucket's middle, the overflow as the largest
    /// interval), 0 with none.
    fn at(&self, p: f64) -> f64 {
        let rank = ((self.count as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank && n > 0 {
                return if b == Self::BUCKETS {
                    self.max.as_secs_f64() * 1_000.0
                } else {
                    (Self::BUCKET * b as u32 + Self::BUCKET / 2).as_secs_f64() * 1_000.0
                };
            }
        }
        0.0
    }
}

fn main() {
    let a = args();
    // Logging in takes calls / login-rate seconds more.
    let logging_in = if a.login.is_some() {
        a.calls as u64 / u64::from(a.login_rate.max(1))
    } else {
        0
    };
    let deadline = Instant::now() + Duration::from_secs(a.settle + a.measure + logging_in + 60);
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // Every call's SDP names this socket; its RTCP comes to the one above.
    let (media, _rtcp) = support::bind_pair([127, 0, 0, 1].into());
    // The receiver spins rather than sleeps: see the module notes.
    media.set_nonblocking(true).unwrap();
    // 150,000 packets a second: a default buffer overflows at the first scheduling hiccup.
    let _ = socket2::SockRef::from(&media).set_recv_buffer_size(16 << 20);
    let sip_local = sip.local_addr().unwrap();
    let media_local = media.local_addr().unwrap();
    let keypad = media.try_clone().unwrap();
    let baseline = a.pid.and_then(proc_usage);

    // The receiver: arrival statistics per SSRC, recorded only while `recording`.
    let recording = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let stats: Arc<Mutex<HashMap<u32, StreamStats>>> = Arc::default();
    let receiver = {
        let (recording, done, stats) = (
            Arc::clone(&recording),
            Arc::clone(&done),
            Arc::clone(&stats),
        );
        std::thread::spawn(move || {
            let mut buf = [0_u8; 2_048];
            let mut local: HashMap<u32, StreamStats> = HashMap::with_capacity(8_192);
            let mut last_any: Option<Instant> = None;
            let mut max_any = Duration::ZERO;
            // Every packet's interval since its stream's previous one.
            let mut intervals = Intervals::new();
            while !done.load(Ordering::Relaxed) {
                let n = match media.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::hint::spin_loop();
                        continue;
                    }
                    Err(_) => continue,
                };
                if n < 12 || !recording.load(Ordering::Relaxed) {
                    continue;
                }
                let now = Instant::now();
                // The largest silence across all streams: large only if the receiver (or
                // the whole machine) stalled, not one stream.
                if let Some(prev) = last_any {
                    max_any = max_any.max(now - prev);
                }
                last_any = Some(now);
                let Some((seq, ts, ssrc)) = rtp_numbers(&buf[..n]) else {
                    continue;
                };
                let gap = local.entry(ssrc).or_default().record(now, seq, ts);
                if let Some(gap) = gap {
                    intervals.add(gap);
                }
            }
            println!(
                "largest gap between any two packets: {:.1} ms",
                max_any.as_secs_f64() * 1_000.0
            );
            println!(
                "RTP packet intervals (ms, all streams, {} of them): p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                intervals.count,
                intervals.at(0.5),
                intervals.at(0.99),
                intervals.at(0.999),
                intervals.max.as_secs_f64() * 1_000.0
            );
            *stats.lock().unwrap() = local;
        })
    };

    // Call setup: INVITEs at `rate`, ACK each 200.
    let mut tags: HashMap<String, String> = HashMap::new();
    // Where each call's server media socket is, from the SDP answer.
    let mut server_rtp: HashMap<String, SocketAddr> = HashMap::new();
    let mut sent = 0;
    let start = Instant::now();
    let mut buf = [0_u8; 65_535];
    let call_id = |i: usize| format!("load-{i}@{sip_local}");
    while tags.len() < a.calls && Instant::now() < deadline {
        let due = ((start.elapsed().as_secs_f64() * f64::from(a.rate)) as usize + 1).min(a.calls);
        while sent < due {
            let sdp = format!(
                "v=0\r\no=load {sent} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n",
                media_local.port()
            );
            let invite = format!(
                "INVITE sip:8500@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_local};branch=z9hG4bK-load-{sent};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=l{sent}\r\nTo: <sip:8500@{server}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{sip_local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len(),
                server = a.server,
                cid = call_id(sent),
            );
            sip.send_to(invite.as_bytes(), a.server).unwrap();
            sent += 1;
        }
        while let Ok((n, _)) = sip.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if !text.starts_with("SIP/2.0 200") || !text.contains("INVITE\r\n") {
                if text.starts_with("SIP/2.0 4") || text.starts_with("SIP/2.0 5") {
                    eprintln!("call refused: {}", text.lines().next().unwrap_or(""));
                }
                continue;
            }
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let cid = header("Call-ID:");
            let to = header("To:");
            let i = call_index(&cid);
            let ack = format!(
                "ACK sip:8500@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_local};branch=z9hG4bK-loadack-{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=l{i}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                server = a.server
            );
            sip.send_to(ack.as_bytes(), a.server).unwrap();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|l| l.split(' ').next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                server_rtp.insert(cid.clone(), SocketAddr::new(a.server.ip(), port));
            }
            tags.insert(cid, to);
        }
    }
    let setup = start.elapsed();
    println!(
        "calls up: {} of {} in {:.1} s",
        tags.len(),
        a.calls,
        setup.as_secs_f64()
    );
    if let Some((first, passcode)) = &a.login {
        let mut calls: Vec<(usize, SocketAddr)> = server_rtp
            .iter()
            .map(|(cid, rtp)| (call_index(cid), *rtp))
            .collect();
        calls.sort_unstable();
        let begun = Instant::now();
        for (n, (i, rtp)) in calls.iter().enumerate() {
            let due = begun + Duration::from_secs_f64(n as f64 / f64::from(a.login_rate.max(1)));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let keys = format!("{}#{passcode}#", first + *i as u64);
            send_keys(&keypad, *rtp, 0x4c00_0000 | *i as u32, &keys);
        }
        println!(
            "logins keyed: {} in {:.1} s",
            calls.len(),
            begun.elapsed().as_secs_f64()
        );
    }
    std::thread::sleep(Duration::from_secs(a.settle));

    let before = a.pid.and_then(proc_usage);
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(a.measure));
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let after = a.pid.and_then(proc_usage);
    done.store(true, Ordering::Relaxed);
    receiver.join().unwrap();

    if a.login.is_some() {
        goodbye(&sip, &keypad, &server_rtp, deadline);
    } else {
        hang_up(&sip, &tags, a.server);
    }
    report(&stats, elapsed, t0, baseline, before, after, tags.len());
}

/// The index `i` of the Call-ID `load-i@…`.
fn call_index(cid: &str) -> usize {
    cid.trim_start_matches("load-")
        .split('@')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Keys `keys` as RFC 4733 events (payload type 101): for each key a start packet and three
/// end packets, each key on its own timestamp.
fn send_keys(socket: &UdpSocket, to: SocketAddr, ssrc: u32, keys: &str) {
    let mut ts: u32 = 8_000;
    for (n, key) in keys.chars().enumerate() {
        let code = match key {
            '*' => 10,
            '#' => 11,
            d => d.to_digit(10).expect("keys are digits, * and #") as u8,
        };
        for (k, (end, duration)) in [(false, 0_u16), (true, 800), (true, 800), (true, 800)]
            .into_iter()
            .enumerate()
        {
            let seq = (n * 4 + k) as u16;
            let mut packet = Vec::with_capacity(16);
            packet.extend_from_slice(&[0x80, if k == 0 { 0x80 | 101 } else { 101 }]);
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&ts.to_be_bytes());
            packet.extend_from_slice(&ssrc.to_be_bytes());
            packet.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
            packet.extend_from_slice(&duration.to_be_bytes());
            let _ = socket.send_to(&packet, to);
        }
        ts = ts.wrapping_add(1_600);
    }
}

/// Presses `*` (goodbye) in every call and answers the server's BYEs, counting them.
fn goodbye(
    sip: &UdpSocket,
    keypad: &UdpSocket,
    server_rtp: &HashMap<String, SocketAddr>,
    deadline: Instant,
) {
    for (n, (cid, rtp)) in server_rtp.iter().enumerate() {
        // A fresh SSRC: a new "phone" as far as the event keying goes.
        send_keys(keypad, *rtp, 0x4d00_0000 | call_index(cid) as u32, "*");
        if n % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut byes = std::collections::HashSet::new();
    let mut buf = [0_u8; 65_535];
    let until = (Instant::now() + Duration::from_secs(20)).min(deadline);
    while byes.len() < server_rtp.len() && Instant::now() < until {
        let Ok((n, from)) = sip.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if !text.starts_with("BYE ") {
            continue;
        }
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for line in text.lines() {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
                ok.push_str(line);
                ok.push_str("\r\n");
            }
            if name == "call-id" {
                byes.insert(line[8..].trim().to_owned());
            }
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        let _ = sip.send_to(ok.as_bytes(), from);
    }
    println!(
        "`*` pressed in {} calls; the server said goodbye (BYE) to {}",
        server_rtp.len(),
        byes.len()
    );
}

/// Hangs up every call with a BYE.
fn hang_up(sip: &UdpSocket, tags: &HashMap<String, String>, server: SocketAddr) {
    let sip_local = sip.local_addr().unwrap();
    for (i, (cid, to)) in tags.iter().enumerate() {
        let bye = format!(
            "BYE sip:8500@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {sip_local};branch=z9hG4bK-loadbye-{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=l{tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            tag = call_index(cid),
        );
        let _ = sip.send_to(bye.as_bytes(), server);
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn report(
    stats: &Mutex<HashMap<u32, StreamStats>>,
    elapsed: Duration,
    t0: Instant,
    baseline: Option<(u64, u64)>,
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    calls: usize,
) {
    let stats = stats.lock().unwrap();
    if std::env::var_os("LOAD_CALLER_DEBUG").is_some() {
        let mut buckets = [0_u32; 20];
        for s in stats.values() {
            if let Some(at) = s.max_gap_at {
                let b = ((at - t0).as_secs_f64() * 2.0) as usize;
                buckets[b.min(19)] += 1;
            }
        }
        println!("worst gaps by half-second of the window: {buckets:?}");
    }
    report_streams(stats.values(), elapsed, t0 + elapsed, Some(calls));
    if let (Some((_, rss0)), Some((ticks1, rss1)), Some((ticks2, _))) = (baseline, before, after) {
        let cpu = cpu_percent((ticks1, 0), (ticks2, 0), elapsed);
        println!("server CPU: {cpu:.0}% of one core");
        // Everything the server allocated since it was idle, one-off allocations included
        // (with --login, the hash's working memory and SQLite's caches).
        println!(
            "server RSS: {rss0} kB idle, {rss1} kB with {} calls: {:.1} KiB per call (growth since idle / calls)",
            calls,
            (rss1.saturating_sub(rss0)) as f64 / calls.max(1) as f64
        );
    }
}
