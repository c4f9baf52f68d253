//! A phone for socket-level tests: dials `vportal serve` over loopback with the test UAC,
//! keys digits as RFC 4733 events, SIP INFO or in-band tones, and answers the server's BYE.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use vportal::sip::{HeaderName, Message, Method};

use super::rtp::{RtpOut, bind_pair};
use super::server::ServerProcess;
use super::uac::{Uac, parse};

/// One call in progress.
pub struct Phone {
    pub uac: Uac,
    pub sip: UdpSocket,
    /// Sends this call's RTP (and receives the server's, unread).
    pub rtp: RtpOut,
    /// Where the server receives this call's RTP (from its SDP answer).
    pub server_rtp: SocketAddr,
    /// Receives the server's RTCP (on the port above the RTP socket's).
    pub rtcp: UdpSocket,
    /// The server's answer.
    pub answer: String,
    server_sip: SocketAddr,
}

impl Phone {
    /// Calls `target` as `user` with the standard offer (PCMU, PCMA, telephone-event/101).
    pub fn dial(server: &ServerProcess, target: &str, user: &str) -> Self {
        Self::dial_with(server, target, user, |u| u.offer("sendrecv"))
    }

    /// Calls `target` as `user` with the standard offer, the INVITE carrying `headers` as
    /// well (whole lines without their CRLF, such as `P-Asserted-Identity: <sip:2002@…>`).
    pub fn dial_with_headers(
        server: &ServerProcess,
        target: &str,
        user: &str,
        headers: &[&str],
    ) -> Self {
        Self::dial_full(server, target, user, headers, |u| u.offer("sendrecv"))
    }

    /// Calls `target` as `user`, offering `offer(uac)`, and ACKs the 200.
    pub fn dial_with(
        server: &ServerProcess,
        target: &str,
        user: &str,
        offer: impl Fn(&Uac) -> String,
    ) -> Self {
        Self::dial_full(server, target, user, &[], offer)
    }

    fn dial_full(
        server: &ServerProcess,
        target: &str,
        user: &str,
        headers: &[&str],
        offer: impl Fn(&Uac) -> String,
    ) -> Self {
        // The caller on the server's loopback address, so over IPv6 when it listens on ::1.
        let sip = UdpSocket::bind(SocketAddr::new(server.sip.ip(), 0)).unwrap();
        sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut uac = Uac::new(sip.local_addr().unwrap(), server.sip, target);
        uac.user = user.to_owned();
        uac.invite_headers = headers.iter().map(|&h| h.to_owned()).collect();
        let (rtp, rtcp) = bind_pair(server.sip.ip());
        uac.media = rtp.local_addr().unwrap();
        let sdp = offer(&uac);
        sip.send_to(&uac.invite(&sdp), server.sip).unwrap();
        let mut buf = [0_u8; 65_535];
        let ok = loop {
            let (n, _) = sip.recv_from(&mut buf).expect("an answer");
            let m = parse(&buf[..n]);
            match m.status() {
                Some(200) => break m,
                Some(s) if s >= 300 => panic!("call to {target} refused: {s}"),
                _ => {}
            }
        };
        uac.learn_tag(&ok);
        sip.send_to(&uac.ack_2xx(""), server.sip).unwrap();
        let body = String::from_utf8_lossy(ok.body()).into_owned();
        let port: u16 = body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("an m=audio line in the answer");
        let server_rtp = SocketAddr::new(server.sip.ip(), port);
        Self {
            uac,
            sip,
            rtp: RtpOut::new(rtp, server_rtp),
            server_rtp,
            rtcp,
            answer: body,
            server_sip: server.sip,
        }
    }

    /// Sends a re-INVITE with `offer`, waits for its final answer and, if 2xx, ACKs it.
    pub fn reinvite(&mut self, offer: &str) -> Message {
        reinvite(&mut self.uac, &self.sip, self.server_sip, offer)
    }

    /// Keys as RFC 4733 events on payload type 101.
    pub fn keys(&mut self, keys: &str) {
        self.rtp.keys(101, keys);
    }

    /// Keys as SIP INFO, alternating `application/dtmf-relay` and `application/dtmf`, 30 ms
    /// apart (nothing after the last: what follows may come at once).
    pub fn info_keys(&mut self, keys: &str) {
        for (i, key) in keys.chars().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
            Self::info_key(&mut self.uac, &self.sip, self.server_sip, i % 2 == 0, key);
        }
    }

    /// Keys sent two ways at once, as a phone set to "RFC 2833 + SIP INFO" does: each press
    /// as RFC 4733 events, with its INFO (`application/dtmf-relay`) sent 40 ms into it.
    pub fn keys_both_ways(&mut self, keys: &str) {
        for key in keys.chars() {
            let (uac, sip, server) = (&mut self.uac, &self.sip, self.server_sip);
            self.rtp
                .key_around(101, key, || Self::info_key(uac, sip, server, true, key));
        }
    }

    /// One key by SIP INFO: `application/dtmf-relay` when `relay`, else `application/dtmf`.
    fn info_key(uac: &mut Uac, sip: &UdpSocket, server: SocketAddr, relay: bool, key: char) {
        let (content_type, body) = if relay {
            (
                "application/dtmf-relay",
                format!("Signal={key}\r\nDuration=160\r\n"),
            )
        } else {
            ("application/dtmf", key.to_string())
        };
        let info = uac.request("INFO", content_type, &body);
        sip.send_to(&info, server).unwrap();
    }

    /// Waits (at most `within`) for the server's BYE and answers it; false if none came.
    pub fn wait_for_bye(&mut self, within: Duration) -> bool {
        self.bye_within(within, true)
    }

    /// Waits (at most `within`) for the server's BYE and leaves it unanswered, as a phone
    /// that has gone would; false if none came.
    pub fn ignore_bye(&mut self, within: Duration) -> bool {
        self.bye_within(within, false)
    }

    fn bye_within(&mut self, within: Duration, answer: bool) -> bool {
        let end = Instant::now() + within;
        let mut buf = [0_u8; 65_535];
        while Instant::now() < end {
            let Ok((n, from)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let m = parse(&buf[..n]);
            if m.method() == Some(&Method::Bye) {
                if answer {
                    self.sip.send_to(&Uac::ok_to(&m), from).unwrap();
                }
                return true;
            }
        }
        false
    }

    /// Discards the server's RTP received so far; returns how many packets there were.
    pub fn drain_rtp(&mut self) -> usize {
        let socket = &self.rtp.socket;
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0_u8; 2_048];
        let mut count = 0;
        while socket.recv_from(&mut buf).is_ok() {
            count += 1;
        }
        socket.set_nonblocking(false).unwrap();
        count
    }

    /// Hangs up (BYE) and waits for the 200.
    pub fn hang_up(&mut self) {
        let bye = self.uac.request("BYE", "", "");
        self.sip.send_to(&bye, self.server_sip).unwrap();
        let mut buf = [0_u8; 65_535];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let m = parse(&buf[..n]);
            let cseq = m.values(HeaderName::CSeq).next().unwrap_or("");
            if m.status() == Some(200) && cseq.ends_with("BYE") {
                return;
            }
        }
        panic!("no 200 to BYE");
    }
}

/// Sends a re-INVITE with `offer` from `uac` over `sip`, waits for its final answer (not the
/// answers to requests sent before it, still waiting to be read) and, if 2xx, ACKs it.
pub fn reinvite(uac: &mut Uac, sip: &UdpSocket, server: SocketAddr, offer: &str) -> Message {
    let request = uac.invite(offer);
    sip.send_to(&request, server).unwrap();
    let mut buf = [0_u8; 65_535];
    let answer = loop {
        let (n, _) = sip.recv_from(&mut buf).expect("an answer to the re-INVITE");
        let m = parse(&buf[..n]);
        let cseq = m.values(HeaderName::CSeq).next().unwrap_or_default();
        if m.status().is_some_and(|s| s >= 200) && cseq.ends_with("INVITE") {
            break m;
        }
    };
    if answer.status() == Some(200) {
        sip.send_to(&uac.ack_2xx(""), server).unwrap();
    }
    answer
}
