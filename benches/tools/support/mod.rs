//! What the load tools (and the integration tests) share: arrival statistics of RTP
//! streams, percentiles, a process's CPU time and memory from `/proc`, and RTP sockets
//! bound in pairs.

// Each tool uses its own part of this module.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How one RTP stream arrived.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub packets: u64,
    pub first_seq: Option<u16>,
    pub last_seq: u16,
    pub last_arrival: Option<Instant>,
    pub last_ts: u32,
    /// The largest interval between two of its packets.
    pub max_gap: Duration,
    /// When the largest gap ended.
    pub max_gap_at: Option<Instant>,
    /// RFC 3550 A.8 interarrival jitter, in timestamp units (1/8000 s).
    pub jitter: f64,
}

impl StreamStats {
    /// A packet with sequence number `seq` and timestamp `ts` arrived `now`; returns the
    /// interval since the stream's previous packet.
    pub fn record(&mut self, now: Instant, seq: u16, ts: u32) -> Option<Duration> {
        let gap = self.last_arrival.map(|prev| now - prev);
        if let Some(gap) = gap {
            if gap > self.max_gap {
                self.max_gap = gap;
                self.max_gap_at = Some(now);
            }
            // D(i-1,i) = (Rj - Ri) - (Sj - Si), in timestamp units; the timestamp difference
            // signed (RFC 3550 A.8), so that a reordered or repeated packet is not 2^32 apart.
            let sent = f64::from(ts.wrapping_sub(self.last_ts).cast_signed());
            let d = gap.as_secs_f64() * 8_000.0 - sent;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.first_seq.get_or_insert(seq);
        self.last_seq = seq;
        self.last_arrival = Some(now);
        self.last_ts = ts;
        self.packets += 1;
        gap
    }

    /// Packets the sequence numbers say were sent (first to last).
    pub fn expected(&self) -> u64 {
        u64::from(
            self.last_seq
                .wrapping_sub(self.first_seq.unwrap_or(self.last_seq)),
        ) + 1
    }
}

/// The sequence number and timestamp of an RTP packet (`None` if too short).
pub fn rtp_numbers(packet: &[u8]) -> Option<(u16, u32, u32)> {
    let header = packet.get(..12)?;
    Some((
        u16::from_be_bytes([header[2], header[3]]),
        u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
        u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
    ))
}

/// The packet interval the streams are sent at.
const PTIME: Duration = Duration::from_millis(20);

/// A stream silent this long at the end of the window has stopped.
const STOPPED: Duration = Duration::from_secs(1);

/// Prints what the streams' arrivals looked like over the window that ended at `window_end`
/// and lasted `elapsed`: packets and loss, the distribution of each stream's largest gap,
/// and of its jitter. With `calls`, the streams there should have been: a missing one
/// counts as lost for the whole window. A stream that went silent before the window ended
/// has that silence as a gap and, when it lasted over a second (a stream that stopped, not
/// one whose next packet was merely late), the packets due in it as lost.
pub fn report_streams<'a>(
    stats: impl Iterator<Item = &'a StreamStats>,
    elapsed: Duration,
    window_end: Instant,
    calls: Option<usize>,
) {
    let stats: Vec<&StreamStats> = stats.collect();
    let streams = stats.len();
    // Each stream's silence at the end of the window, counted as a gap.
    let tail = |s: &StreamStats| {
        s.last_arrival
            .map_or(Duration::ZERO, |t| window_end.saturating_duration_since(t))
    };
    let mut max_gaps: Vec<f64> = stats
        .iter()
        .map(|s| s.max_gap.max(tail(s)).as_secs_f64() * 1_000.0)
        .collect();
    max_gaps.sort_by(f64::total_cmp);
    let mut jitters: Vec<f64> = stats.iter().map(|s| s.jitter / 8.0).collect();
    jitters.sort_by(f64::total_cmp);
    let packets: u64 = stats.iter().map(|s| s.packets).sum();
    // The sequence numbers' count and, for a stream that stopped, the packets due over the
    // time it was silent (whole intervals only).
    let stopped = |s: &StreamStats| tail(s) > STOPPED;
    let expected: u64 = stats
        .iter()
        .map(|s| {
            let silent = (tail(s).as_secs_f64() / PTIME.as_secs_f64()).floor() as u64;
            s.expected() + if stopped(s) { silent } else { 0 }
        })
        .sum();
    let stopped = stats.iter().filter(|s| stopped(s)).count();
    let seconds = elapsed.as_secs_f64();
    let per_window = (seconds / PTIME.as_secs_f64()).floor() as u64;
    let missing = calls.map_or(0, |c| c.saturating_sub(streams));
    match calls {
        Some(calls) => println!(
            "streams measured: {streams} of {calls} calls up over {seconds:.1} s{}",
            if missing > 0 {
                format!(" ({missing} MISSING: counted as lost)")
            } else {
                String::new()
            }
        ),
        None => println!("streams measured: {streams} over {seconds:.1} s"),
    }
    if stopped > 0 {
        println!("streams STOPPED (silent for the window's last second or more): {stopped}");
    }
    println!(
        "packets: {packets} ({:.0}/s, {:.1}/s per stream), lost: {}",
        packets as f64 / seconds,
        packets as f64 / seconds / streams.max(1) as f64,
        expected.saturating_sub(packets) + missing as u64 * per_window
    );
    println!(
        "per-stream max gap (ms): p50 {:.1}  p95 {:.1}  max {:.1}",
        percentile(&max_gaps, 0.5),
        percentile(&max_gaps, 0.95),
        max_gaps.last().copied().unwrap_or(0.0)
    );
    println!(
        "interarrival jitter (ms): p50 {:.2}  p95 {:.2}  max {:.2}",
        percentile(&jitters, 0.5),
        percentile(&jitters, 0.95),
        jitters.last().copied().unwrap_or(0.0)
    );
}

/// The `p` quantile (0 to 1) of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time (user + system, in clock ticks: see [`clock_ticks`]) and resident memory (kB)
/// of a process.
pub fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks, rss))
}

/// The kernel's clock ticks a second (`getconf CLK_TCK`), from the process's auxiliary
/// vector (`AT_CLKTCK`); 100, the value on every Linux architecture but a few, if it cannot
/// be read.
pub fn clock_ticks() -> u64 {
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = |b: &[u8]| {
        let mut w = [0_u8; WORD];
        w.copy_from_slice(b);
        usize::from_ne_bytes(w) as u64
    };
    auxv.chunks_exact(2 * WORD)
        .find(|pair| word(&pair[..WORD]) == AT_CLKTCK)
        .map(|pair| word(&pair[WORD..]))
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// The share of one core (in %) a process used between two [`proc_usage`] readings.
pub fn cpu_percent(before: (u64, u64), after: (u64, u64), elapsed: Duration) -> f64 {
    (after.0.saturating_sub(before.0)) as f64 / clock_ticks() as f64 / elapsed.as_secs_f64() * 100.0
}

/// An RTP socket on an even port of `ip` and an RTCP socket on the port above (RFC 3550
/// §11), as a phone binds them. vportal sends RTCP to the port above the SDP's RTP port:
/// bound here, it reaches the call's own socket, not whichever socket of another call or
/// test holds that port.
pub fn bind_pair(ip: IpAddr) -> (UdpSocket, UdpSocket) {
    for _ in 0..1_000 {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("a UDP socket");
        let port = rtp.local_addr().expect("a bound socket's address").port();
        if port.is_multiple_of(2)
            && let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1))
        {
            return (rtp, rtcp);
        }
    }
    panic!("no free even port with a free port above it on {ip}");
}
