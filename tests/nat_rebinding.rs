//! `vportal serve` with `rtp.symmetric` over real loopback sockets: a caller whose NAT maps
//! its media to a new port mid-call, without a re-INVITE, is still heard, and the prompts
//! follow it there; another stream from elsewhere is not taken for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::Workdir;
use common::phone::Phone;
use common::rtp::{RtpOut, assert_sent_before, expect_rtp, receive};
use common::server::ServerProcess;

/// A caller's media socket: on loopback, on a port the system picks.
fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn the_callers_media_is_followed_to_its_new_nat_port_without_a_reinvite() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start_symmetric(&w, "47500-47548");
    let mut c = Phone::dial(&server, "8500", "1001");

    // Behind a NAT the caller's media comes from another port than its SDP's: latched.
    let before = bind();
    let mut caller = RtpOut::new(before.try_clone().unwrap(), c.server_rtp);
    caller.keys(101, "1001#");
    expect_rtp(&before, 10, "media follows the latched source");

    // The NAT rebinds: the same stream (SSRC, sequence numbers) goes on from a new port, the
    // old one falls silent. The phone's audio continues as always, then it keys its
    // passcode: heard, so the login happens.
    let after = bind();
    caller.socket = after.try_clone().unwrap();
    caller.silence(20);
    caller.keys(101, "4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));

    // The prompts went to the new port, and none to the old one after the first there.
    let at_after = expect_rtp(&after, 15, "media follows the rebinding");
    let at_old = receive(&before, Duration::from_millis(200));
    assert_sent_before(
        &at_old,
        &at_after[0],
        "the old NAT port after the rebinding",
    );

    // A stream from elsewhere with another SSRC is not followed: its `*` (goodbye, in the
    // menu) is not heard; the caller's is.
    let mut stranger = RtpOut::new(bind(), c.server_rtp);
    stranger.ssrc = 0x0bad_cafe;
    // Numbered as the caller's stream goes on, so only the SSRC tells it apart.
    stranger.seq = caller.seq;
    stranger.ts = caller.ts;
    stranger.silence(15);
    stranger.keys(101, "*");
    assert!(
        !c.wait_for_bye(Duration::from_millis(700)),
        "a stranger's key was heard"
    );
    caller.keys(101, "*");
    assert!(c.wait_for_bye(Duration::from_secs(10)), "{}", server.log());
    server.expect_log("media ended", 1, Duration::from_secs(2));
    let log = server.log();
    let ended = log.lines().find(|l| l.contains("media ended")).unwrap();
    assert!(ended.contains(" rtp_followed=1"), "{ended}");
}

/// RTP bleed: a host at neither the SDP's IP nor the INVITE's that sends to the call's port
/// before the caller does is not latched; its keys are not heard, and the caller, sending
/// next from its NAT's address, is.
#[test]
fn a_stranger_sending_first_from_another_host_is_not_latched() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start_symmetric(&w, "48200-48248");
    let c = Phone::dial(&server, "8500", "1001");
    let stranger_socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    let mut stranger = RtpOut::new(stranger_socket.try_clone().unwrap(), c.server_rtp);
    stranger.keys(101, "1001#");
    assert!(
        receive(&stranger_socket, Duration::from_millis(300)).is_empty(),
        "the prompts went to the stranger"
    );
    assert!(!server.log().contains("key pressed"), "{}", server.log());
    let nat = bind();
    let mut caller = RtpOut::new(nat.try_clone().unwrap(), c.server_rtp);
    caller.keys(101, "1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(20));
    expect_rtp(&nat, 10, "the prompts go to the caller");
}
