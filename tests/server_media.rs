//! `vportal serve` media over real loopback sockets: the prompt stream a caller receives,
//! and keys sent as RFC 4733 events, SIP INFO and in-band tones, heard in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Workdir;
use common::rtp::{RtpOut, receive};
use common::server::ServerProcess;
use common::uac::{Uac, parse};

/// A workdir with mailboxes provisioned through the CLI, as an admin would.
fn provisioned(mailboxes: &[&str]) -> Workdir {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    for m in mailboxes {
        w.run(&["user", "add", m, "--generate"]).ok();
    }
    w
}

/// A call to 8500 in progress.
struct Call {
    uac: Uac,
    sip: UdpSocket,
    rtp: UdpSocket,
    /// Where the server receives this call's RTP (from its SDP answer).
    server_rtp: std::net::SocketAddr,
}

/// Calls 8500 offering `offer(uac)` and ACKs the answer.
fn call(server: &ServerProcess, offer: impl Fn(&Uac) -> String) -> Call {
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut uac = Uac::new(sip.local_addr().unwrap(), server.sip, "8500");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    uac.media = rtp.local_addr().unwrap();
    let sdp = offer(&uac);
    sip.send_to(&uac.invite(&sdp), server.sip).unwrap();
    let mut buf = [0_u8; 65_535];
    let ok = loop {
        let (n, _) = sip.recv_from(&mut buf).expect("an answer");
        let m = parse(&buf[..n]);
        if m.status() == Some(200) {
            break m;
        }
    };
    uac.learn_tag(&ok);
    sip.send_to(&uac.ack_2xx(""), server.sip).unwrap();
    let body = String::from_utf8_lossy(ok.body()).into_owned();
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server_rtp = std::net::SocketAddr::new(server.sip.ip(), port);
    Call {
        uac,
        sip,
        rtp,
        server_rtp,
    }
}

fn wait_for_log(server: &ServerProcess, needle: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if server.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_caller_hears_fifty_pcmu_packets_a_second_continuously() {
    let w = provisioned(&[]);
    let server = ServerProcess::start(&w, "31300-31398", &[]);
    let c = call(&server, |u| u.offer("sendrecv"));
    let packets = receive(&c.rtp, Duration::from_millis(2_000));
    let n = packets.len();
    assert!((95..=102).contains(&n), "{n} packets in 2 s");
    assert!(
        packets.iter().all(|p| p.pt == 0 && p.len == 160),
        "PCMU, 20 ms"
    );
    assert!(packets.iter().all(|p| p.ssrc == packets[0].ssrc));
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
    }
    assert!(packets[0].marker, "the first packet starts a talkspurt");
    let gaps: Vec<u128> = packets
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_millis())
        .collect();
    let max_gap = gaps.iter().max().copied().unwrap_or(0);
    assert!(max_gap < 200, "no long stall: {max_gap} ms");
}

#[test]
fn keys_by_rfc4733_info_and_tones_are_heard_in_order_and_strangers_are_not() {
    let w = provisioned(&["1001", "2580", "1122"]);
    let server = ServerProcess::start(&w, "31400-31498", &[]);

    // RFC 4733 events on 101, with repeated keys.
    let c = call(&server, |u| u.offer("sendrecv"));
    // A stranger on another port tries to key first: ignored.
    let mut stranger = RtpOut::new(UdpSocket::bind("127.0.0.1:0").unwrap(), c.server_rtp);
    stranger.keys(101, "1122#");
    let mut me = RtpOut::new(c.rtp, c.server_rtp);
    me.keys(101, "1001#");
    assert!(
        wait_for_log(
            &server,
            "mailbox keyed mailbox=1001",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    assert!(
        !server.log().contains("mailbox=1122"),
        "the stranger's keys were ignored"
    );

    // SIP INFO, both content types.
    let mut c2 = call(&server, |u| u.offer("sendrecv"));
    for (i, key) in "2580#".chars().enumerate() {
        let body = if i % 2 == 0 {
            format!("Signal={key}\r\nDuration=160\r\n")
        } else {
            key.to_string()
        };
        let ct = if i % 2 == 0 {
            "application/dtmf-relay"
        } else {
            "application/dtmf"
        };
        c2.sip
            .send_to(&c2.uac.request("INFO", ct, &body), server.sip)
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        wait_for_log(
            &server,
            "mailbox keyed mailbox=2580",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );

    // In-band tones when no telephone-event is offered.
    let c3 = call(&server, |u| {
        u.offer("sendrecv")
            .replace(" 0 8 101", " 0")
            .lines()
            .filter(|l| !l.contains("101"))
            .map(|l| format!("{l}\r\n"))
            .collect()
    });
    let mut tones = RtpOut::new(c3.rtp, c3.server_rtp);
    tones.tones("1122#");
    assert!(
        wait_for_log(
            &server,
            "mailbox keyed mailbox=1122",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    // No key value ever reaches the log: only masked keys and mailbox numbers.
    for line in server.log().lines().filter(|l| l.contains("key pressed")) {
        assert!(
            line.contains("digit=*") || line.contains("digit=#"),
            "{line}"
        );
    }
}
