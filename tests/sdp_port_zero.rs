//! `vportal serve` over real loopback sockets when a caller's re-INVITE disables the audio
//! stream (`m=audio 0`, RFC 3264 §8.2): answered 200 with port 0 rather than 488, no RTP
//! while it is disabled, the call going on (INFO keys, its silence timeouts, BYE), and RTP
//! again once a re-INVITE gives the stream a port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Workdir;
use common::phone::Phone;
use common::rtp::{expect_rtp, receive};
use common::server::ServerProcess;
use vportal::sip::Message;

/// The caller's usual offer, its audio on port 0, with `version` in its `o=` line.
fn disabled_offer(c: &Phone, version: u32) -> String {
    c.uac
        .reoffer("sendrecv", version)
        .replace(&format!("m=audio {} ", c.uac.media.port()), "m=audio 0 ")
}

/// The `m=` lines of a response's SDP.
fn m_lines(answer: &Message) -> Vec<String> {
    String::from_utf8_lossy(answer.body())
        .lines()
        .filter(|l| l.starts_with("m="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_reinvite_disabling_the_audio_stops_rtp_until_one_enables_it_and_the_call_goes_on() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "47600-47648", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 10, "prompts at first");

    let offer = disabled_offer(&c, 2);
    let off = c.reinvite(&offer);
    assert_eq!(off.status(), Some(200), "{}", server.log());
    assert_eq!(m_lines(&off), ["m=audio 0 RTP/AVP 0"]);
    // What was sent before the answer took effect is read first; then nothing comes.
    receive(&c.rtp.socket, Duration::from_millis(100));
    let quiet = receive(&c.rtp.socket, Duration::from_millis(1_200));
    assert!(
        quiet.is_empty(),
        "{} packets with the audio disabled",
        quiet.len()
    );

    // The call goes on: keys by INFO log the caller in, whose menu plays to no one.
    c.info_keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
    let quiet = receive(&c.rtp.socket, Duration::from_millis(500));
    assert!(quiet.is_empty(), "{} packets after the login", quiet.len());

    // A port again: our port in the answer, and the prompts' RTP comes back.
    let offer = c.uac.reoffer("sendrecv", 3);
    let on = c.reinvite(&offer);
    assert_eq!(on.status(), Some(200));
    assert_eq!(
        m_lines(&on),
        [format!("m=audio {} RTP/AVP 0 101", c.server_rtp.port())]
    );
    let after = expect_rtp(&c.rtp.socket, 10, "prompts once enabled");
    assert!(after[0].marker, "the first packet back starts a talkspurt");

    // Disabled again, the caller's BYE still ends the call.
    let offer = disabled_offer(&c, 4);
    let off = c.reinvite(&offer);
    assert_eq!(off.status(), Some(200));
    c.hang_up();
    server.expect_log("call ended", 1, Duration::from_secs(5));
}

/// A disabled audio stream is no hold: the call flow's silences still count, so a caller
/// who leaves the call without audio and keys nothing is said goodbye to and hung up, as a
/// silent caller is (a held call would be kept up to its maximum duration).
#[test]
fn a_call_left_without_audio_ends_as_a_silent_one() {
    let w = Workdir::provisioned(&[]);
    std::fs::create_dir(w.path().join("dialplans")).unwrap();
    std::fs::write(
        w.path().join("dialplans/default.toml"),
        "[defaults]\nfirst_digit_timeout = \"1s\"\nreprompts = 0\n\n\
         [[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n",
    )
    .unwrap();
    let server = ServerProcess::start(&w, "47650-47698", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    let offer = disabled_offer(&c, 2);
    let off = c.reinvite(&offer);
    assert_eq!(off.status(), Some(200));
    assert!(
        c.wait_for_bye(Duration::from_secs(20)),
        "no BYE: {}",
        server.log()
    );
}
