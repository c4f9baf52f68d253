//! `vportal serve` media over real loopback sockets: the prompt stream a caller receives,
//! and keys sent as RFC 4733 events, SIP INFO and in-band tones, heard in order (a mailbox
//! and passcode keyed each way log the caller in); whose keys count when the caller is
//! behind a NAT (symmetric RTP), moves its media (re-INVITE) or closes its port for a while.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Workdir;
use common::phone::Phone;
use common::rtp::{RtpOut, assert_sent_before, bind_pair, expect_rtp, receive};
use common::server::ServerProcess;
use common::uac::{Uac, parse};

/// The prompts reach the caller as one PCMU stream of 20 ms packets, numbered without a gap
/// and timed by their RTP timestamps. How fast it goes on the wall clock is for the load
/// scripts to measure: a loaded test machine says nothing of the server's pacing.
#[test]
fn the_caller_hears_one_unbroken_stream_of_20_ms_pcmu_packets() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "31300-31398", &[]);
    let c = Phone::dial(&server, "8500", "1001");
    // Two seconds of media, from the stream's first packet.
    let packets = expect_rtp(&c.rtp.socket, 100, "prompts play");
    let first = packets[0];
    assert!(first.marker, "the first packet starts a talkspurt");
    assert!(
        packets.iter().all(|p| p.pt == 0 && p.len == 160),
        "PCMU, 20 ms"
    );
    assert!(packets.iter().all(|p| p.ssrc == first.ssrc), "one stream");
    // One frame a packet, numbered without a gap. A stream that fell more than three
    // frames behind (a starved core) skips the frames it can no longer send on time, its
    // timestamps keeping to the clock: a step of several frames, never a part of one. Only
    // a prompt started at once, a talkspurt (marked), may come less than a frame after the
    // packet before it (`Outbound::play_now`): the welcome can start so, right after the
    // stream's first packet.
    let mut skipped = 0;
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        let step = w[1].ts.wrapping_sub(w[0].ts);
        if w[1].marker && (1..160).contains(&step) {
            continue;
        }
        assert!(step >= 160 && step % 160 == 0, "timestamp step {step}");
        skipped += usize::try_from(step / 160).unwrap() - 1;
    }
    // The frames the timestamps span were sent, each in a packet of its own: all of them,
    // unless the stream skipped some (see above), which it does only now and then.
    let frames = packets.len() + skipped;
    assert!(
        skipped * 10 <= frames,
        "{skipped} of {frames} frames skipped"
    );
}

/// A prompt id vportal never plays (a misspelt one, next to the prompt it meant to
/// replace) is warned about at start.
#[test]
fn a_prompt_id_never_played_is_warned_about() {
    let w = Workdir::provisioned(&[]);
    let en = w.path().join("p/en");
    std::fs::create_dir_all(&en).unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/en");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), en.join(entry.file_name())).unwrap();
    }
    let manifest = en.join("prompts.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[welcom]\nfile = \"welcome.wav\"\ntext = \"Welcome.\"\n");
    std::fs::write(&manifest, text).unwrap();
    let server = ServerProcess::start(&w, "47361-47369", &["--prompts", "p"]);
    let log = server.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not one vportal plays"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("welcom"), "{log}");
}

#[test]
fn without_a_prompts_folder_the_built_in_english_set_is_played() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    // The default folder, `prompts`, is not in the server's directory. Named, it must be
    // there: another is never played in its place (nor another dialplan for one named).
    assert!(!w.path().join("prompts").exists());
    std::fs::write(
        w.path().join("dialplan.toml"),
        "[dialplan]\nfile = \"dialplans/default.toml\"\n",
    )
    .unwrap();
    for (given, missing) in [
        (
            &["--prompts", "prompts"][..],
            &["the prompts folder prompts (--prompts, or prompts.dir in the configuration)"][..],
        ),
        (
            &["--config", "dialplan.toml"],
            &["dialplans/default.toml", "No such file"],
        ),
    ] {
        let mut args = vec!["serve", "--sip", "127.0.0.1:0", "--no-admin"];
        args.extend(given);
        let refused = w.run(&args);
        assert_eq!(refused.code, 2, "{refused:?}");
        assert!(
            missing.iter().all(|says| refused.stderr.contains(says)),
            "{}",
            refused.stderr
        );
    }
    let server = ServerProcess::start(&w, "33200-33298", &[common::server::UNSET_PROMPTS]);
    assert!(
        server
            .log()
            .contains("prompts/en not found; using the built-in English prompts"),
        "{}",
        server.log()
    );
    let mut c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 20, "the built-in prompts play");
    c.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
}

#[test]
fn keys_by_rfc4733_info_and_tones_are_heard_in_order_and_strangers_are_not() {
    let w = Workdir::provisioned(&[
        ("1001", "4826", false),
        ("2580", "8264", false),
        ("1122", "6048", false),
    ]);
    let server = ServerProcess::start(&w, "31400-31498", &[]);

    // RFC 4733 events on 101, with repeated keys.
    let mut c = Phone::dial(&server, "8500", "1001");
    // A stranger on another port tries to key first: ignored.
    let mut stranger = RtpOut::new(UdpSocket::bind("127.0.0.1:0").unwrap(), c.server_rtp);
    stranger.keys(101, "1122#");
    c.keys("1001#4826#");
    // Mailbox and passcode came through: the caller is logged in.
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
    assert_eq!(
        server.log().matches("login checked").count(),
        1,
        "the stranger's keys were ignored: one check, the right one"
    );

    // SIP INFO, both content types.
    let mut c2 = Phone::dial(&server, "8500", "2580");
    c2.info_keys("2580#8264#");
    server.expect_log("logged in mailbox=2580", 1, Duration::from_secs(5));

    // In-band tones when no telephone-event is offered.
    let mut c3 = Phone::dial_with(&server, "8500", "1122", offer_without_events);
    c3.rtp.tones("1122#6048#");
    server.expect_log("logged in mailbox=1122", 1, Duration::from_secs(5));
    // No key value ever reaches the log: only masked keys and mailbox numbers.
    let log = server.log();
    let pressed: Vec<&str> = log.lines().filter(|l| l.contains("key pressed")).collect();
    // Ten keys on each call; none of the stranger's.
    assert_eq!(pressed.len(), 30, "{log}");
    for line in pressed {
        assert!(
            line.contains("digit=*") || line.contains("digit=#"),
            "{line}"
        );
    }
    for passcode in ["4826", "8264", "6048"] {
        assert!(
            !server.log_reveals(passcode),
            "a passcode in the log:\n{log}"
        );
    }
}

#[test]
fn symmetric_rtp_latches_once_onto_the_callers_real_source() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start_symmetric(&w, "31500-31598");
    let mut c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 5, "media goes to the SDP's address first");

    // Behind a NAT the caller's media really comes from another port.
    let nat = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = RtpOut::new(nat.try_clone().unwrap(), c.server_rtp);
    caller.keys(101, "1001#");
    let to_nat = expect_rtp(&nat, 15, "media follows the latched source");
    // What was sent to the SDP's address before the latch may still wait there unread:
    // only a packet after the first one sent to the NAT's port is wrong.
    let to_sdp = receive(&c.rtp.socket, Duration::from_millis(300));
    assert_sent_before(&to_sdp, &to_nat[0], "the SDP's address after the latch");

    // Latched once: neither a stranger nor the SDP's address can key the passcode. Each
    // keys a wrong one, which would be checked, and audited as a failure, if heard.
    let mut stranger = RtpOut::new(UdpSocket::bind("127.0.0.1:0").unwrap(), c.server_rtp);
    stranger.keys(101, "0000#");
    c.keys("1111#");
    // A quick failure only: a check still hashing would not show yet.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.log().matches("login checked").count(),
        0,
        "{}",
        server.log()
    );
    caller.keys(101, "4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
    // The proof: the flow checks one entry at a time, so a wrong passcode heard before the
    // right one was checked, and audited, before this login.
    assert_eq!(
        server.log().matches("login checked").count(),
        1,
        "{}",
        server.log()
    );
    assert_no_login_failure(&w, "1001");

    // A re-INVITE moves the media (a B2BUA leaving the path, an SBC failing over): the
    // latch is learnt afresh. Media goes to the new SDP address, then follows the first
    // source seen, again behind a NAT; the old source is no longer heard.
    let (sdp, _sdp_rtcp) = bind_pair([127, 0, 0, 1].into());
    c.uac.media = sdp.local_addr().unwrap();
    let offer = c.uac.reoffer("sendrecv", 2);
    reinvite(&server, &mut c.uac, &c.sip, &offer);
    // The old source relays on for a moment (a B2BUA until it has re-INVITEd the phone):
    // heard, but not latched again.
    for seq in 0..5_u8 {
        let mut packet = vec![0x80, 0, 0, seq, 0, 0, 0, seq, 0, 0, 0, 9];
        packet.extend([0xff_u8; 160]);
        nat.send_to(&packet, c.server_rtp).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    expect_rtp(&sdp, 10, "media went to the new SDP address");
    let nat2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut moved = RtpOut::new(nat2.try_clone().unwrap(), c.server_rtp);
    moved.keys(101, "*");
    let to_nat2 = expect_rtp(&nat2, 15, "media follows the new source");
    // All that went to the old source before is still queued there: it is read now.
    let to_old = receive(&nat, Duration::from_millis(300));
    assert_sent_before(&to_old, &to_nat2[0], "the old source after the new latch");
    // The menu heard `*` from the new source: goodbye.
    assert!(c.wait_for_bye(Duration::from_secs(10)), "{}", server.log());
}

/// Without `rtp.symmetric`, a phone whose RTP comes from another port than its SDP names
/// (behind a NAT) is not heard; the call's end says so, once, rather than leaving its lost
/// keys unexplained. A call whose own RTP was heard says nothing of the kind.
#[test]
fn a_call_that_heard_rtp_only_from_elsewhere_is_warned_about() {
    const WARNING: &str = "the call heard no RTP from the caller";
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "48330-48339", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    let nat = UdpSocket::bind("127.0.0.1:0").unwrap();
    RtpOut::new(nat, c.server_rtp).keys(101, "1001#");
    c.hang_up();
    let ended = media_ended(&server);
    assert_eq!(field::<u64>(&ended, "rtp_received"), Some(0), "{ended}");
    server.expect_log(WARNING, 1, Duration::from_secs(2));
    let log = server.log();
    let warning = log.lines().find(|l| l.contains(WARNING)).unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("rtp.symmetric"), "{warning}");
    assert!(warning.contains(&c.uac.call_id), "{warning}");

    let mut heard = Phone::dial(&server, "8500", "1001");
    heard.keys("1001#");
    heard.hang_up();
    server.expect_log("media ended", 2, Duration::from_secs(2));
    assert_eq!(server.log().matches(WARNING).count(), 1, "{}", server.log());
}

#[test]
fn keys_are_heard_after_the_callers_port_was_closed_for_a_while() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "31600-31698", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    // The caller's media port closes: the server's packets draw ICMP "port unreachable",
    // which its connected socket reports on the next send and read.
    let port = c.rtp.socket.local_addr().unwrap();
    c.rtp.socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // It opens again: media flows and keys are heard.
    c.rtp.socket = UdpSocket::bind(port).unwrap();
    expect_rtp(&c.rtp.socket, 10, "media resumed");
    c.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
}

#[test]
fn a_reinvite_moves_the_media_and_only_the_new_address_is_heard() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "31700-31798", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    // The phone moves its media to another port (a re-INVITE with a new SDP version).
    let (moved, _moved_rtcp) = bind_pair([127, 0, 0, 1].into());
    c.uac.media = moved.local_addr().unwrap();
    let offer = c.uac.reoffer("sendrecv", 2);
    reinvite(&server, &mut c.uac, &c.sip, &offer);

    let at_new = expect_rtp(&moved, 15, "media moved");
    // What went to the old port before the move is still queued there: it is read now.
    let at_old = receive(&c.rtp.socket, Duration::from_millis(300));
    assert_sent_before(&at_old, &at_new[0], "the old port after the move");

    // Keys from the old port are not heard; from the new one they are. The old port keys a
    // wrong passcode, which would be checked, and audited as a failure, if heard.
    c.keys("1001#0000#");
    // A quick failure only: a check still hashing would not show yet.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.log().matches("login checked").count(),
        0,
        "{}",
        server.log()
    );
    RtpOut::new(moved, c.server_rtp).keys(101, "1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
    // The proof: the flow checks one entry at a time, so a wrong passcode heard before the
    // right one was checked, and audited, before this login.
    assert_eq!(
        server.log().matches("login checked").count(),
        1,
        "{}",
        server.log()
    );
    assert_no_login_failure(&w, "1001");
}

/// Fails the test if `mailbox` has a `login.failure` in its audit trail.
#[track_caller]
fn assert_no_login_failure(w: &Workdir, mailbox: &str) {
    let events = w.audit(mailbox);
    let names = common::event_names(&events);
    assert!(
        !names.contains(&"login.failure"),
        "a wrong passcode was heard: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "login.success").count(),
        1,
        "{names:?}"
    );
}

/// The standard offer with PCMU alone and no telephone-event: keys come as tones.
fn offer_without_events(u: &Uac) -> String {
    u.offer("sendrecv")
        .replace(" 0 8 101", " 0")
        .lines()
        .filter(|l| !l.contains("101"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// A call that keyed by tones (no telephone-event offered) and then, after a re-INVITE that
/// adds telephone-event, by RFC 4733 at once: the first event key is a press of its own,
/// not taken for a copy of the last tone.
#[test]
fn keys_by_a_new_method_right_after_a_reinvite_are_not_copies() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "46100-46198", &[]);
    let mut c = Phone::dial_with(&server, "8500", "1001", offer_without_events);
    c.rtp.tones("1001#");
    let offer = c.uac.reoffer("sendrecv", 2);
    reinvite(&server, &mut c.uac, &c.sip, &offer);
    c.keys("4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
}

/// A re-INVITE that changes nothing (a session refresh) while a key is held: the rest of
/// the press is still the same key, not a second one. The held key is the mailbox's first
/// digit: doubled, it would name mailbox 11001, which does not exist, and no login follows.
#[test]
fn a_reinvite_while_a_key_is_held_does_not_double_it() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "33400-33498", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    let offer = c.uac.offer("sendrecv");
    let (uac, sip) = (&mut c.uac, &c.sip);
    c.rtp
        .key_around(101, '1', || reinvite(&server, uac, sip, &offer));
    server.expect_log("media agreed", 2, Duration::from_secs(5));
    c.keys("001#4826#");
    server.expect_log("logged in mailbox=1001", 1, Duration::from_secs(5));
    // Every key was heard before the login it led to: ten presses, ten keys.
    let log = server.log();
    assert_eq!(log.matches("key pressed").count(), 10, "{log}");
}

/// Sends a re-INVITE with `offer` and ACKs its answer, which must be a 200 with SDP.
fn reinvite(server: &ServerProcess, uac: &mut Uac, sip: &UdpSocket, offer: &str) {
    let ok = common::phone::reinvite(uac, sip, server.sip, offer);
    assert_eq!(ok.status(), Some(200), "re-INVITE refused");
    assert!(String::from_utf8_lossy(ok.body()).contains("m=audio"));
}

#[test]
fn hold_stops_the_prompts_and_resuming_continues_them_at_the_new_ptime() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "31900-31998", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    let before = expect_rtp(&c.rtp.socket, 10, "prompts before the hold");

    // The phone holds the call: vportal answers recvonly and sends nothing.
    let hold = c.uac.reoffer("sendonly", 2);
    reinvite(&server, &mut c.uac, &c.sip, &hold);
    // What was sent before the hold took effect is read first.
    let last = receive(&c.rtp.socket, Duration::from_millis(100))
        .last()
        .unwrap_or_else(|| before.last().unwrap())
        .seq;
    let held = receive(&c.rtp.socket, Duration::from_millis(600));
    assert!(held.is_empty(), "{} packets while on hold", held.len());

    // Back, asking for 40 ms packets: the stream resumes where it stopped.
    let resume = c
        .uac
        .reoffer("sendrecv", 3)
        .replace("a=ptime:20", "a=ptime:40");
    reinvite(&server, &mut c.uac, &c.sip, &resume);
    let after = expect_rtp(&c.rtp.socket, 10, "prompts after the hold");
    // RFC 3550 numbers the packets sent: no gap for the 700 ms on hold.
    assert_eq!(
        after[0].seq,
        last.wrapping_add(1),
        "sequence across the hold"
    );
    assert!(
        after[0].marker,
        "the first packet after the hold starts a talkspurt"
    );
    assert!(
        after.iter().all(|p| p.len == 320),
        "40 ms packets after the re-INVITE: {:?}",
        after.iter().map(|p| p.len).collect::<Vec<_>>()
    );
    for w in after.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(320));
    }
}

/// The call's last words, said while the caller holds the call, wait for them: no BYE
/// while they are away, the words again when they are back, then the BYE.
#[test]
fn last_words_said_during_a_hold_are_said_when_the_caller_is_back() {
    let w = Workdir::provisioned(&[("1001", "4826", false)]);
    let server = ServerProcess::start(&w, "47900-47998", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 5, "the welcome");
    let hold = c.uac.reoffer("sendonly", 2);
    reinvite(&server, &mut c.uac, &c.sip, &hold);
    // Three wrong passcodes keyed on hold: "that is not correct, that was the last attempt,
    // goodbye" (6 s) plays into the hold.
    c.info_keys("1001#0000#1001#0000#1001#0000#");
    assert!(
        !c.wait_for_bye(Duration::from_secs(9)),
        "hung up while the caller was away"
    );
    c.drain_rtp();
    let resume = c.uac.reoffer("sendrecv", 3);
    reinvite(&server, &mut c.uac, &c.sip, &resume);
    expect_rtp(&c.rtp.socket, 50, "the last words, said again");
    assert!(c.wait_for_bye(Duration::from_secs(10)), "no BYE after them");
    let failures = w.audit("1001");
    let failed = failures
        .iter()
        .filter(|e| e["event"] == "login.failure")
        .count();
    assert_eq!(failed, 3, "{failures:?}");
}

/// Once goodbye is heard the media stops, and the BYE comes half a second later: the phone
/// plays out the end of the words it holds, and nothing is sent meanwhile.
#[test]
fn no_rtp_flows_between_the_goodbye_and_the_bye() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    let server = ServerProcess::start(&w, "48100-48198", &[]);
    let mut c = Phone::dial(&server, "8500", "2002");
    c.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, Duration::from_secs(20));
    let socket = c.rtp.socket.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let arrivals = std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        let mut buf = [0_u8; 2_048];
        let mut at = Vec::new();
        while Instant::now() < end && !stopped.load(Ordering::Relaxed) {
            if socket.recv_from(&mut buf).is_ok() {
                at.push(Instant::now());
            }
        }
        at
    });
    c.keys("*");
    let pressed = Instant::now();
    assert!(c.wait_for_bye(Duration::from_secs(10)), "{}", server.log());
    let bye = Instant::now();
    // Anything sent after the BYE would still be read.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let arrivals = arrivals.join().unwrap();
    let last = *arrivals.last().expect("RTP during the call");
    assert!(
        arrivals.iter().filter(|&&t| t > pressed).count() >= 20,
        "goodbye was not played: {} packets after the key",
        arrivals.iter().filter(|&&t| t > pressed).count()
    );
    assert!(last < bye, "RTP after the BYE");
    assert!(
        bye - last >= Duration::from_millis(400),
        "RTP until {:?} before the BYE",
        bye - last
    );
}

#[test]
fn no_rtp_flows_before_the_caller_acks_the_answer() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "31800-31898", &[]);
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut uac = Uac::new(sip.local_addr().unwrap(), server.sip, "8500");
    let (rtp, _rtcp) = bind_pair([127, 0, 0, 1].into());
    uac.media = rtp.local_addr().unwrap();
    let offer = uac.offer("sendrecv");
    sip.send_to(&uac.invite(&offer), server.sip).unwrap();
    let mut buf = [0_u8; 65_535];
    let ok = loop {
        let (n, _) = sip.recv_from(&mut buf).expect("an answer");
        let m = parse(&buf[..n]);
        if m.status() == Some(200) {
            break m;
        }
    };
    // Answered, not yet ACKed (the 200 is retransmitted meanwhile): nothing is sent to the
    // address in the offer, which a forged INVITE could name.
    rtp.set_read_timeout(Some(Duration::from_millis(1_500)))
        .unwrap();
    assert!(rtp.recv_from(&mut buf).is_err(), "RTP before the ACK");
    uac.learn_tag(&ok);
    sip.send_to(&uac.ack_2xx(""), server.sip).unwrap();
    rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(rtp.recv_from(&mut buf).is_ok(), "no RTP after the ACK");
    server.expect_log("call established", 1, Duration::from_secs(1));
}

/// `[rtp] realtime_priority` puts the media thread, and no other, on SCHED_FIFO at that
/// priority. Needs the privilege to do so (root or CAP_SYS_NICE; CI runs as root).
#[test]
fn the_media_thread_alone_runs_at_the_configured_realtime_priority() {
    let w = Workdir::provisioned(&[]);
    std::fs::write(w.path().join("rt.toml"), "[rtp]\nrealtime_priority = 7\n").unwrap();
    let server = ServerProcess::start(&w, "47880-47898", &["--config", "rt.toml"]);
    server.expect_log("media thread runs SCHED_FIFO", 1, Duration::from_secs(5));
    let threads = scheduling(server.child.id());
    let media: Vec<_> = threads.iter().filter(|t| t.0 == "vportal-media").collect();
    assert_eq!(media.len(), 1, "{threads:?}");
    assert_eq!((media[0].1, media[0].2), (SCHED_FIFO, 7), "{threads:?}");
    assert!(
        threads
            .iter()
            .filter(|t| t.0 != "vportal-media")
            .all(|t| t.1 == SCHED_OTHER),
        "{threads:?}"
    );
    // And it still plays the prompts.
    let c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 45, "the prompts play");
}

/// Without the privilege, the server says why and streams at normal priority.
#[test]
fn without_the_privilege_the_media_thread_warns_and_runs_at_normal_priority() {
    let w = Workdir::provisioned(&[]);
    std::fs::write(w.path().join("rt.toml"), "[rtp]\nrealtime_priority = 7\n").unwrap();
    let no_sys_nice = [
        "setpriv",
        "--inh-caps=-sys_nice",
        "--bounding-set=-sys_nice",
        "--",
    ];
    let server =
        ServerProcess::start_wrapped(&w, &no_sys_nice, "33100-33198", &["--config", "rt.toml"]);
    server.expect_log(
        "media thread stays at normal priority",
        1,
        Duration::from_secs(5),
    );
    assert!(
        server.log().contains("Operation not permitted"),
        "{}",
        server.log()
    );
    let threads = scheduling(server.child.id());
    assert!(
        threads.iter().any(|t| t.0 == "vportal-media"),
        "{threads:?}"
    );
    assert!(threads.iter().all(|t| t.1 == SCHED_OTHER), "{threads:?}");
    let c = Phone::dial(&server, "8500", "1001");
    expect_rtp(&c.rtp.socket, 45, "the prompts play");
}

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

/// Each thread of process `pid`: its name, scheduling policy and realtime priority
/// (`/proc/PID/task/TID/stat` fields 41 and 40).
fn scheduling(pid: u32) -> Vec<(String, u32, u32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        // A thread may end between the listing and the read (an idle blocking-pool thread).
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        // `rest` starts at field 3 (the state).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        threads.push((
            name,
            fields[38].parse().unwrap(),
            fields[37].parse().unwrap(),
        ));
    }
    threads
}

/// The RTCP packets of one compound datagram: (packet type, packet).
fn rtcp_packets(datagram: &[u8]) -> Vec<(u8, &[u8])> {
    let mut packets = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 4 {
        assert_eq!(rest[0] >> 6, 2, "RTCP version 2");
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        assert!(len <= rest.len(), "packet lengths add up to the datagram");
        packets.push((rest[1], &rest[..len]));
        rest = &rest[len..];
    }
    assert!(rest.is_empty(), "no bytes after the last packet");
    packets
}

/// Waits (at most `within`) for a datagram on `socket` that `wanted` picks out.
fn wait_for(
    socket: &UdpSocket,
    within: Duration,
    wanted: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = std::time::Instant::now() + within;
    let mut buf = [0_u8; 2_048];
    while std::time::Instant::now() < end {
        if let Ok(n) = socket.recv(&mut buf)
            && wanted(&buf[..n])
        {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// The server's "media ended" line (waiting at most 2 s for it), and the value of `field`
/// in it.
fn media_ended(server: &ServerProcess) -> String {
    server.expect_log("media ended", 1, Duration::from_secs(2));
    let log = server.log();
    log.lines()
        .find(|l| l.contains("media ended"))
        .unwrap()
        .to_owned()
}

fn field<T: std::str::FromStr>(line: &str, name: &str) -> Option<T> {
    let value = line.split(&format!(" {name}=")).nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// A receiver report from `ours` with one block on `theirs`, answering the sender report
/// whose NTP time's middle 32 bits are `lsr`, at once (DLSR 0).
fn receiver_report(ours: u32, theirs: u32, lsr: u32) -> Vec<u8> {
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend(ours.to_be_bytes());
    rr.extend(theirs.to_be_bytes());
    rr.extend([0, 0, 0, 2]); // none lost of the interval; two lost in all
    rr.extend(1_000_u32.to_be_bytes());
    rr.extend(40_u32.to_be_bytes()); // jitter: 5 ms
    rr.extend(lsr.to_be_bytes());
    rr.extend(0_u32.to_be_bytes());
    rr
}

/// RFC 3550 §6: the server reports on the port above its RTP port, to the port above the
/// phone's, as a sender while it plays prompts, with a block on the phone's stream and a
/// CNAME; it reads the phone's report on its own stream (the round trip from LSR), and ends
/// with a BYE when the call does.
#[test]
fn rtcp_reports_go_both_ways_and_a_bye_ends_them() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "46200-46298", &[]);
    let mut c = Phone::dial(&server, "8500", "1001");
    let first = expect_rtp(&c.rtp.socket, 1, "prompts play")[0];
    let ssrc = first.ssrc;
    // Something for the server to report on.
    c.keys("1");

    // The first report comes within 2.5 s × 1.5 / 1.21828 of the call's start.
    let sr = wait_for(&c.rtcp, Duration::from_secs(4), |_| true).expect("a report");
    let packets = rtcp_packets(&sr);
    let types: Vec<u8> = packets.iter().map(|p| p.0).collect();
    assert_eq!(types, [200, 202], "a sender report and an SDES");
    let report = packets[0].1;
    assert_eq!(report[4..8], ssrc.to_be_bytes(), "the RTP stream's SSRC");
    assert_eq!(report[0] & 0x1f, 1, "one block");
    assert_eq!(
        report[28..32],
        c.rtp.ssrc.to_be_bytes(),
        "on the phone's stream"
    );
    // The packets and payload octets sent so far: 20 ms PCMU packets, no more of them than
    // frames the report's RTP timestamp spans since the stream's first packet (frames a late
    // wake-up skipped are not sent, nor counted), but for a few: a prompt started at once
    // (the welcome, the prompt after a key) may come less than a frame after the packet
    // before it (`Outbound::play_now`).
    let word = |at: usize| u32::from_be_bytes(report[at..at + 4].try_into().unwrap());
    let (timestamp, packets_sent, octets_sent) = (word(16), word(20), word(24));
    let frames = timestamp.wrapping_sub(first.ts) / 160 + 1;
    assert!(
        (1..=frames + 4).contains(&packets_sent),
        "{packets_sent} packets sent in {frames} frames"
    );
    assert_eq!(octets_sent, packets_sent * 160, "octets of 20 ms PCMU");
    let sdes = packets[1].1;
    assert_eq!(
        (sdes[4..8].to_vec(), sdes[8]),
        (ssrc.to_be_bytes().to_vec(), 1),
        "CNAME"
    );

    // The phone answers; a datagram that is not RTCP is refused. What comes from the
    // caller's address on another port is the caller's (NATs and a=rtcp move RTCP's port):
    // heard, or refused when it is not RTCP, like the rest. (That a report from another
    // address is not heard at all cannot be shown here: the tests keep to 127.0.0.1 and
    // ::1, and the server's media sockets are bound to the one loopback address.) A report
    // sent to the RTP port without a=rtcp-mux is not heard either, nor taken for RTP.
    let lsr = u32::from_be_bytes(report[10..14].try_into().unwrap());
    let server_rtcp = SocketAddr::new(c.server_rtp.ip(), c.server_rtp.port() + 1);
    let answer = receiver_report(c.rtp.ssrc, ssrc, lsr);
    c.rtcp.send_to(&answer, server_rtcp).unwrap();
    c.rtcp.send_to(b"not rtcp", server_rtcp).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&answer, server_rtcp).unwrap();
    stranger.send_to(b"not rtcp", server_rtcp).unwrap();
    c.rtp.socket.send_to(&answer, c.server_rtp).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.hang_up();
    let bye = wait_for(&c.rtcp, Duration::from_secs(2), |d| {
        rtcp_packets(d).last().is_some_and(|p| p.0 == 203)
    })
    .expect("an RTCP BYE");
    let bye = rtcp_packets(&bye);
    assert_eq!(
        bye[2].1,
        [&[0x81, 203, 0, 1][..], &ssrc.to_be_bytes()].concat()
    );
    let ended = media_ended(&server);
    assert_eq!(field(&ended, "rtcp_received"), Some(2), "{ended}");
    assert_eq!(field(&ended, "rtcp_malformed"), Some(2), "{ended}");
    assert_eq!(field(&ended, "peer_lost"), Some(2), "{ended}");
    assert_eq!(field(&ended, "peer_jitter_ms"), Some(5.0), "{ended}");
    let sent = u64::from(c.rtp.seq.wrapping_sub(100));
    assert_eq!(field(&ended, "rtp_received"), Some(sent), "{ended}");
    // Reported from the answer's LSR. How long it took on this machine's clock says nothing
    // (the arithmetic is tested on a virtual clock in src/media/rtcp.rs).
    let rtt: f64 = field(&ended, "round_trip_ms").expect("a round trip");
    assert!(rtt >= 0.0, "round trip {rtt} ms");
}

/// RFC 5761: offered `a=rtcp-mux`, the answer agrees, and RTCP shares the RTP port both
/// ways; nothing goes to the port above.
#[test]
fn rtcp_mux_is_agreed_when_offered_and_rtcp_shares_the_rtp_port() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "46300-46398", &[]);
    let mut c = Phone::dial_with(&server, "8500", "1001", |u| {
        format!("{}a=rtcp-mux\r\n", u.offer("sendrecv"))
    });
    assert!(c.answer.contains("\r\na=rtcp-mux\r\n"), "{}", c.answer);
    let is_rtcp = |d: &[u8]| d.len() >= 8 && matches!(d[1], 200 | 201);
    let sr =
        wait_for(&c.rtp.socket, Duration::from_secs(4), is_rtcp).expect("RTCP on the RTP port");
    let ssrc = u32::from_be_bytes(sr[4..8].try_into().unwrap());
    let lsr = u32::from_be_bytes(sr[10..14].try_into().unwrap());
    c.rtp
        .socket
        .send_to(&receiver_report(c.rtp.ssrc, ssrc, lsr), c.server_rtp)
        .unwrap();
    c.keys("1001#");
    std::thread::sleep(Duration::from_millis(100));
    c.hang_up();
    assert!(
        wait_for(&c.rtcp, Duration::from_millis(300), |_| true).is_none(),
        "nothing on the port above"
    );
    let ended = media_ended(&server);
    assert_eq!(field(&ended, "rtcp_received"), Some(1), "{ended}");
    assert!(field::<f64>(&ended, "round_trip_ms").is_some(), "{ended}");
    // The report was not taken for RTP: only the keys' packets were.
    let sent = u64::from(c.rtp.seq.wrapping_sub(100));
    assert_eq!(field(&ended, "rtp_received"), Some(sent), "{ended}");
}

/// With `rtp.symmetric`, RTCP follows the caller's real RTCP source (behind a NAT, not the
/// port above the SDP's) once a report has come from there.
#[test]
fn symmetric_rtcp_goes_where_the_callers_reports_come_from() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start_symmetric(&w, "46400-46498");
    let mut c = Phone::dial(&server, "8500", "1001");
    let ssrc = expect_rtp(&c.rtp.socket, 1, "prompts play")[0].ssrc;
    let nat = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_rtcp = SocketAddr::new(c.server_rtp.ip(), c.server_rtp.port() + 1);
    // A report says where ours go only once its SSRC has been heard on RTP: the first, sent
    // before any RTP, is only read; the second, after some, is latched.
    nat.send_to(&receiver_report(c.rtp.ssrc, ssrc, 0), server_rtcp)
        .unwrap();
    c.rtp.silence(3);
    std::thread::sleep(Duration::from_millis(100));
    nat.send_to(&receiver_report(c.rtp.ssrc, ssrc, 0), server_rtcp)
        .unwrap();
    let report =
        wait_for(&nat, Duration::from_secs(4), |_| true).expect("a report at the NAT's port");
    assert_eq!(rtcp_packets(&report)[0].1[4..8], ssrc.to_be_bytes());
    assert!(
        wait_for(&c.rtcp, Duration::from_millis(100), |_| true).is_none(),
        "nothing went to the port above the SDP's"
    );

    // A hold naming no address, and the resume to the same one, keep what was learnt (as for
    // RTP's source): the last report and its BYE still go to the NAT's port.
    let hold = c
        .uac
        .reoffer("sendrecv", 2)
        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    reinvite(&server, &mut c.uac, &c.sip, &hold);
    let resume = c.uac.reoffer("sendrecv", 3);
    reinvite(&server, &mut c.uac, &c.sip, &resume);
    c.hang_up();
    let bye = wait_for(&nat, Duration::from_secs(2), |d| {
        rtcp_packets(d).last().is_some_and(|p| p.0 == 203)
    });
    assert!(bye.is_some(), "the BYE at the NAT's port");
    assert!(
        wait_for(&c.rtcp, Duration::from_millis(100), |_| true).is_none(),
        "nothing went to the port above the SDP's"
    );
}
