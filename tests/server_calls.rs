//! The voice-portal call flow end to end through real loopback sockets: `vportal serve`, a
//! test phone keying RFC 4733 events and SIP INFO, and the outcome read back from the store
//! with the CLI, as an admin would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::phone::Phone;
use common::server::ServerProcess;
use common::{Workdir, event_names};

/// How long a whole scripted call may take (prompts play in real time).
const CALL: Duration = Duration::from_secs(20);

#[test]
fn a_temporary_passcode_becomes_a_pin_of_ones_own_over_rfc4733() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "32000-32098", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    // The new PIN twice; `*` (goodbye from the menu) pressed during "your passcode has been
    // changed" is kept for the menu.
    phone.keys("5937#5937#*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());

    let u = w.user("1001");
    assert_eq!(u["temporary"], false, "{u}");
    assert!(u["passcode_changed_at"].is_string(), "{u}");
    let events = w.audit("1001");
    assert_eq!(
        &event_names(&events)[2..],
        ["login.success", "passcode.changed"]
    );
    // Each row names the caller by source address and Call-ID.
    for e in &events[2..] {
        assert_eq!(e["actor"], "caller");
        assert_eq!(e["source"], phone.uac.local.to_string());
        assert_eq!(e["call_id"], phone.uac.call_id.as_str());
    }
    // The new PIN works; the temporary one does not.
    let mut again = Phone::dial(&server, "8500", "1001");
    again.keys("1001#4826#");
    // "Incorrect" before the next try, as a caller who listens.
    server.expect_log("login checked extension=1001 outcome=Wrong", 1, CALL);
    again.keys("1001#5937#");
    server.expect_log("logged in mailbox=1001", 2, CALL);
    again.hang_up();
    let events = w.audit("1001");
    assert_eq!(
        &event_names(&events)[4..],
        ["login.failure", "login.success"]
    );
    // The check sees what the log does show (the mailbox), and no passcode.
    assert!(server.log_reveals("1001"));
    assert!(
        !server.log_reveals("5937") && !server.log_reveals("4826"),
        "no passcode in the log"
    );
}

#[test]
fn info_keys_mismatch_and_policy_leave_the_temporary_passcode() {
    let w = Workdir::provisioned(&[("2580", "4826", true)]);
    let server = ServerProcess::start(&w, "32100-32198", &[]);
    let mut phone = Phone::dial(&server, "8500", "2580");
    // Log in, then three failed changes: a mismatch, a run (too simple), the extension.
    phone.info_keys("2580#4826#");
    // Each after the reason for the last refusal, as a caller who listens.
    phone.info_keys("5937#5938#");
    phone.info_keys("1234#1234#");
    server.expect_log("passcode change extension=2580 outcome=Rejected", 1, CALL);
    phone.info_keys("2580#2580#");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());

    let u = w.user("2580");
    assert_eq!(u["temporary"], true, "{u}");
    let events = w.audit("2580");
    assert_eq!(
        &event_names(&events)[2..],
        [
            "login.success",
            "passcode.change_rejected",
            "passcode.change_rejected",
            "passcode.change_rejected"
        ]
    );
    assert_eq!(events[3]["outcome"], "mismatch", "{}", events[3]);
    assert_eq!(events[3]["call_id"], phone.uac.call_id.as_str());
    assert!(
        events[4]["outcome"]
            .as_str()
            .unwrap()
            .contains("sequential"),
        "{}",
        events[4]
    );
    assert!(
        events[5]["outcome"]
            .as_str()
            .unwrap()
            .contains("equals_extension"),
        "{}",
        events[5]
    );
    // The temporary passcode still logs in.
    let mut again = Phone::dial(&server, "8500", "2580");
    again.info_keys("2580#4826#");
    server.expect_log("logged in mailbox=2580", 2, CALL);
    again.hang_up();
}

/// A phone that sends every press both as RFC 4733 and as SIP INFO gets each key counted
/// once: before, "1001#" arrived as "11000011##" and no login could succeed.
#[test]
fn keys_sent_two_ways_at_once_count_once() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "46000-46098", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys_both_ways("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    phone.keys_both_ways("5937#5937#*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    assert_eq!(w.user("1001")["temporary"], false);
    assert_eq!(
        &event_names(&w.audit("1001"))[2..],
        ["login.success", "passcode.changed"]
    );
}

#[test]
fn media_stops_when_the_server_hangs_up_though_the_bye_goes_unanswered() {
    let w = Workdir::provisioned(&[("2002", "5937", false)]);
    let server = ServerProcess::start(&w, "32100-32198", &[]);
    let mut phone = Phone::dial(&server, "8500", "2002");
    phone.keys("2002#5937#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    phone.keys("*");
    assert!(phone.ignore_bye(CALL), "{}", server.log());
    // The goodbye was heard; what was on its way when the BYE went out may still arrive.
    assert!(phone.drain_rtp() > 0, "the call had media");
    std::thread::sleep(Duration::from_millis(200));
    phone.drain_rtp();
    // §15.1.1: the session is over with the BYE. Before, silence went on at 50 packets a
    // second until Timer F (32 s) gave up on the BYE.
    let after = common::rtp::receive(&phone.rtp.socket, Duration::from_secs(1));
    assert!(
        after.is_empty(),
        "{} RTP packets after the BYE",
        after.len()
    );
    server.expect_log("call ended", 1, CALL);
}

#[test]
fn hanging_up_midway_changes_nothing() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "32200-32298", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    phone.keys("5937#59");
    phone.hang_up();
    server.expect_log("outcome=change_not_completed", 1, CALL);
    assert_eq!(w.user("1001")["temporary"], true);
    assert_eq!(
        &event_names(&w.audit("1001"))[2..],
        ["login.success"],
        "nothing but the login"
    );
}

/// A new PIN keyed twice is stored even when the caller hangs up at once, before hearing
/// that it was: the call is counted as changed, like the store says.
#[test]
fn hanging_up_right_after_confirming_keeps_the_change_and_counts_it() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "32800-32898", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.info_keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    // The BYE follows the last `#` at once, while the new PIN is being hashed.
    phone.info_keys("5937#5937#");
    phone.hang_up();
    server.expect_log("call ended", 1, CALL);
    assert_eq!(w.user("1001")["temporary"], false);
    assert_eq!(
        &event_names(&w.audit("1001"))[2..],
        ["login.success", "passcode.changed"]
    );
    let log = server.log();
    let ended = log.lines().find(|l| l.contains("call ended")).unwrap();
    assert!(ended.contains("outcome=changed"), "{ended}");
}

#[test]
fn wrong_passcodes_across_calls_lock_the_mailbox() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "32300-32398", &[]);
    // Each try after the answer to the last one, as a caller hears "incorrect" first.
    let mut checked = 0;
    let mut try_passcode = |phone: &mut Phone, passcode: &str| {
        phone.keys(&format!("1001#{passcode}#"));
        checked += 1;
        server.expect_log("login checked extension=1001", checked, CALL);
    };
    // Three tries per call: the server says goodbye after the third.
    let mut first = Phone::dial(&server, "8500", "1001");
    for passcode in ["1111", "2222", "3333"] {
        try_passcode(&mut first, passcode);
    }
    assert!(first.wait_for_bye(CALL), "{}", server.log());
    assert_eq!(w.user("1001")["failed_attempts"], 3);
    // The fifth failure locks; the locked prompt, goodbye.
    let mut second = Phone::dial(&server, "8500", "1001");
    for passcode in ["4444", "5555"] {
        try_passcode(&mut second, passcode);
    }
    assert!(second.wait_for_bye(CALL), "{}", server.log());
    let locked = w.user("1001");
    assert_eq!(locked["locked"], true, "{locked}");
    assert_eq!(locked["lockouts"], 1, "{locked}");
    // Locked: even the right passcode is refused, and nothing more is counted.
    let mut third = Phone::dial(&server, "8500", "1001");
    third.keys("1001#4826#");
    assert!(third.wait_for_bye(CALL), "{}", server.log());
    let u = w.user("1001");
    assert_eq!(u["failed_attempts"], locked["failed_attempts"], "{u}");
    assert_eq!(u["locked_until"], locked["locked_until"], "{u}");
    let names = event_names(&w.audit("1001")).join(" ");
    assert!(
        names.ends_with("login.failure user.locked login.locked"),
        "{names}"
    );
    server.expect_log("outcome=locked", 1, CALL);
}

#[test]
fn a_second_login_to_a_mailbox_replaces_the_first_call() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    let server = ServerProcess::start(&w, "32400-32498", &[]);
    let mut first = Phone::dial(&server, "8500", "2002");
    first.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    let mut second = Phone::dial(&server, "8500", "2002");
    second.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 2, CALL);
    // The first call hears "this mailbox has just been opened from another phone" and is
    // hung up.
    assert!(first.wait_for_bye(CALL), "{}", server.log());
    server.expect_log("outcome=replaced", 1, CALL);
    // The second goes on: an unknown choice in its menu is answered, not hung up on, and
    // the call ends when its caller hangs up, logged in; only the first was replaced.
    second.keys("5");
    assert!(
        !second.ignore_bye(Duration::from_secs(2)),
        "{}",
        server.log()
    );
    second.hang_up();
    server.expect_log("outcome=logged_in mailbox=2002", 1, CALL);
    let log = server.log();
    let ended: Vec<&str> = log.lines().filter(|l| l.contains("call ended")).collect();
    assert_eq!(ended.len(), 2, "{log}");
    let outcome_of = |call_id: &str| {
        let line = ended
            .iter()
            .find(|l| l.contains(call_id))
            .expect("its end logged");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("outcome="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(outcome_of(&first.uac.call_id), "replaced", "{log}");
    assert_eq!(outcome_of(&second.uac.call_id), "logged_in", "{log}");
}

#[test]
fn star_86_takes_the_mailbox_from_the_caller() {
    let w = Workdir::provisioned(&[("1001", "6048", false)]);
    let server = ServerProcess::start(&w, "32500-32598", &[]);
    // From: 1001 — only the passcode is asked.
    let mut phone = Phone::dial(&server, "*86", "1001");
    phone.keys("6048#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    phone.keys("*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    // A caller whose identity is no mailbox is asked for one.
    let mut stranger = Phone::dial(&server, "*86", "7777");
    stranger.keys("1001#6048#");
    server.expect_log("logged in mailbox=1001", 2, CALL);
    stranger.hang_up();
    // So is one whose mailbox has no passcode yet: no passcode could open it.
    w.run(&["user", "add", "2002"]).ok();
    assert_eq!(w.user("2002")["has_passcode"], false);
    let mut unset = Phone::dial(&server, "*86", "2002");
    unset.keys("1001#6048#");
    server.expect_log("logged in mailbox=1001", 3, CALL);
    unset.hang_up();
}

#[test]
fn an_expired_temporary_passcode_is_refused() {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    w.run_with_stdin(
        &[
            "user",
            "add",
            "1001",
            "--passcode-stdin",
            "--temporary",
            "--ttl",
            "1s",
        ],
        "4826",
    )
    .ok();
    std::thread::sleep(Duration::from_millis(2_100));
    let server = ServerProcess::start(&w, "32600-32698", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys("1001#4826#");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    assert_eq!(event_names(&w.audit("1001")).last(), Some(&"login.expired"));
    server.expect_log("outcome=expired", 1, CALL);
}

/// A mismatched new PIN is audited without the call waiting for the write: while another
/// process holds the database, the caller still hears the reason and, with one try allowed,
/// goodbye and the BYE; the row is written once the database is free.
#[test]
fn a_mismatch_is_audited_without_holding_up_the_call() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    with_dialplan(
        &w,
        "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\nattempts = 1\n",
    );
    let server = ServerProcess::start(&w, "47850-47858", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    let lock = rusqlite::Connection::open(w.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The audit waits for the lock, the call does not: a write waiting in the call would
    // end it only after the busy timeout, 10 s, with the write given up.
    phone.keys("5937#5938#");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    server.expect_log("passcode change: mismatch extension=1001", 1, CALL);
    let events = w.audit("1001");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "passcode.change_rejected", "{events:?}");
    assert_eq!(last["outcome"], "mismatch", "{events:?}");
    assert!(
        !server.log().contains("could not audit"),
        "{}",
        server.log()
    );
    assert_eq!(w.user("1001")["temporary"], true);
}

/// A call's audit rows stay in the order of what happened while the database is held: a
/// mismatch's row, written without the call waiting, comes before the refusal of the PIN
/// keyed next (whose store job waits for it; the store's one writing connection orders
/// them too).
#[test]
fn audit_rows_written_while_the_database_is_held_keep_their_order() {
    let w = Workdir::provisioned(&[("1001", "4826", true)]);
    let server = ServerProcess::start(&w, "47890-47898", &[]);
    let mut phone = Phone::dial(&server, "8500", "1001");
    phone.keys("1001#4826#");
    server.expect_log("logged in mailbox=1001", 1, CALL);
    let lock = rusqlite::Connection::open(w.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A mismatch, then a PIN the policy refuses, both written once the lock is let go.
    phone.keys("5937#5938#1234#1234#");
    std::thread::sleep(Duration::from_millis(200));
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    server.expect_log("passcode change extension=1001 outcome=Rejected", 1, CALL);
    phone.hang_up();
    let events = w.audit("1001");
    let outcomes: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "passcode.change_rejected")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2, "{events:?}");
    assert_eq!(outcomes[0], "mismatch", "{events:?}");
    assert!(outcomes[1].contains("sequential"), "{events:?}");
}

/// Gives the server started in `w` this default dialplan.
fn with_dialplan(w: &Workdir, toml: &str) {
    std::fs::create_dir(w.path().join("dialplans")).unwrap();
    std::fs::write(w.path().join("dialplans/default.toml"), toml).unwrap();
}

#[test]
fn with_session_reject_a_second_login_is_refused_and_audited() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    with_dialplan(
        &w,
        "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\nsession = \"reject\"\n",
    );
    let server = ServerProcess::start(&w, "32700-32798", &[]);
    let mut first = Phone::dial(&server, "8500", "2002");
    first.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    // The newer call hears "this mailbox is in use" and is hung up; the first stays.
    let mut second = Phone::dial(&server, "8500", "2002");
    second.keys("2002#6048#");
    assert!(second.wait_for_bye(CALL), "{}", server.log());
    server.expect_log("outcome=in_use", 1, CALL);
    let events = w.audit("2002");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "login.in_use", "{events:?}");
    assert_eq!(last["call_id"], second.uac.call_id.as_str());
    assert!(!server.log().contains("outcome=replaced"));
    // The first goes on: its menu answers a choice.
    first.keys("5");
    assert!(
        !first.ignore_bye(Duration::from_secs(2)),
        "{}",
        server.log()
    );
    first.hang_up();
    server.expect_log("outcome=logged_in mailbox=2002", 1, CALL);
}

/// A call saying its last words no longer holds its mailbox: under `reject`, another phone
/// logs in while the first waits (up to 30 s) for its caller, who held the call, to hear
/// goodbye.
#[test]
fn a_call_saying_goodbye_leaves_the_mailbox_free() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    with_dialplan(
        &w,
        "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\nsession = \"reject\"\n",
    );
    let server = ServerProcess::start(&w, "48000-48098", &[]);
    let mut first = Phone::dial(&server, "8500", "2002");
    first.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    let hold = first.uac.reoffer("sendonly", 2);
    assert_eq!(first.reinvite(&hold).status(), Some(200));
    first.keys("*");
    server.expect_log("the mailbox is free", 1, CALL);
    // The second phone is let in, not told the mailbox is in use.
    let mut second = Phone::dial(&server, "8500", "2002");
    second.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 2, CALL);
    assert!(
        !second.ignore_bye(Duration::from_secs(2)),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("outcome=in_use"), "{}", server.log());
    assert!(
        !event_names(&w.audit("2002")).contains(&"login.in_use"),
        "{}",
        server.log()
    );
    // The first, still waiting for its caller, says goodbye once they are back.
    assert!(
        !first.ignore_bye(Duration::from_millis(100)),
        "{}",
        server.log()
    );
    let resume = first.uac.reoffer("sendrecv", 3);
    assert_eq!(first.reinvite(&resume).status(), Some(200));
    assert!(first.wait_for_bye(CALL), "{}", server.log());
    second.hang_up();
    server.expect_log("outcome=logged_in mailbox=2002", 2, CALL);
}

/// A dialled string a `.` route takes is logged escaped: its line breaks cannot forge a
/// log line.
#[test]
fn a_dialled_string_cannot_forge_log_lines() {
    let w = Workdir::provisioned(&[]);
    with_dialplan(
        &w,
        "[[route]]\nmatch = \"_1.\"\napplication = \"voice-portal\"\n",
    );
    let server = ServerProcess::start(&w, "46900-46998", &[]);
    let mut c = Phone::dial(&server, "1%0D%0AERROR%20forged", "1001");
    server.expect_log("incoming call", 1, CALL);
    c.hang_up();
    let log = server.log();
    assert!(log.contains(r#"to="1\r\nERROR forged""#), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("ERROR forged")), "{log}");
}

/// Routes with different session rules reaching one mailbox: a call on an `allow` route
/// that logs in and leaves does not make the mailbox look free while an older call is still
/// in it.
#[test]
fn a_mailbox_stays_in_a_call_until_its_last_call_ends() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    with_dialplan(
        &w,
        "[defaults]\nsession = \"reject\"\n\n\
         [[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\n\
         [[route]]\nmatch = \"8501\"\napplication = \"voice-portal\"\nsession = \"allow\"\n",
    );
    let server = ServerProcess::start(&w, "33300-33398", &[]);
    let mut first = Phone::dial(&server, "8500", "2002");
    first.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    // A second call on the `allow` route joins, then leaves.
    let mut second = Phone::dial(&server, "8501", "2002");
    second.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 2, CALL);
    second.hang_up();
    server.expect_log("call ended", 1, CALL);
    // The first call is still in the mailbox: a third on the `reject` route is refused.
    let mut third = Phone::dial(&server, "8500", "2002");
    third.keys("2002#6048#");
    assert!(third.wait_for_bye(CALL), "{}", server.log());
    server.expect_log("outcome=in_use", 1, CALL);
    assert_eq!(
        event_names(&w.audit("2002")).last(),
        Some(&"login.in_use"),
        "{}",
        server.log()
    );
    first.hang_up();
}

/// The server-wide limit (`sip.max_call_duration`, here shorter than the route's) ends the
/// call with BYE, and it counts as `timed_out`, as at the route's own limit.
#[test]
fn the_server_wide_call_limit_counts_as_timed_out() {
    let w = Workdir::provisioned(&[("2002", "6048", false)]);
    std::fs::write(
        w.path().join("vportal.toml"),
        "[sip]\nmax_call_duration = \"4s\"\n",
    )
    .unwrap();
    let server = ServerProcess::start(&w, "33600-33698", &["--config", "vportal.toml"]);
    let mut phone = Phone::dial(&server, "8500", "2002");
    phone.keys("2002#6048#");
    server.expect_log("logged in mailbox=2002", 1, CALL);
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    server.expect_log("call ended", 1, CALL);
    let log = server.log();
    let ended = log.lines().find(|l| l.contains("call ended")).unwrap();
    assert!(ended.contains("reason=MaxDuration"), "{ended}");
    assert!(ended.contains("outcome=timed_out"), "{ended}");
}

/// The lines of the server's log holding `needle`.
fn log_lines(server: &ServerProcess, needle: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The audit events of `mailbox` past the two its provisioning wrote.
fn call_events(w: &Workdir, mailbox: &str) -> Vec<String> {
    event_names(&w.audit(mailbox))[2..]
        .iter()
        .map(|&e| e.to_owned())
        .collect()
}

/// A `*86` route that takes the mailbox from the caller's identity.
const CALLER_ID_ROUTE: &str =
    "[[route]]\nmatch = \"*86\"\napplication = \"voice-portal\"\nmailbox = \"caller-id\"\n";

/// Dials `target` as user 1001 with the header lines `headers`, keys `keys` and, once the
/// server has logged in `mailbox` (its `nth` login), `*`; the call ends with the server's
/// BYE.
fn caller_id_call(
    server: &ServerProcess,
    target: &str,
    headers: &[&str],
    keys: &str,
    (mailbox, nth): (&str, usize),
) -> Phone {
    let mut phone = Phone::dial_with_headers(server, target, "1001", headers);
    phone.keys(keys);
    server.expect_log(&format!("logged in mailbox={mailbox}"), nth, CALL);
    phone.keys("*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    phone
}

/// The server checked one passcode, `mailbox`'s, and it was right: no key was taken for
/// something else (a mailbox number for a wrong passcode).
fn one_check_passed(server: &ServerProcess, mailbox: &str) {
    let checked = log_lines(server, "login checked");
    assert_eq!(checked.len(), 1, "one check, and it passed: {checked:?}");
    let passed = format!("extension={mailbox} outcome=Ok");
    assert!(checked[0].contains(&passed), "{checked:?}");
}

/// On a `caller-id` route the mailbox comes from P-Asserted-Identity before the From user:
/// a caller whose From says 1001 while a proxy asserts 2002 is asked only for 2002's
/// passcode.
#[test]
fn p_asserted_identity_names_the_mailbox_before_the_from_user() {
    let w = Workdir::provisioned(&[("1001", "4826", false), ("2002", "5937", false)]);
    with_dialplan(&w, CALLER_ID_ROUTE);
    let server = ServerProcess::start(&w, "47750-47758", &[]);
    let pai = ["P-Asserted-Identity: <sip:2002@127.0.0.1>"];
    // 2002's passcode alone: taken against 1001 it would be wrong.
    let phone = caller_id_call(&server, "*86", &pai, "5937#", ("2002", 1));
    one_check_passed(&server, "2002");
    let events = w.audit("2002");
    assert_eq!(&event_names(&events)[2..], ["login.success"]);
    assert_eq!(events[2]["call_id"], phone.uac.call_id.as_str());
    // The From user was never tried.
    assert!(call_events(&w, "1001").is_empty(), "{:?}", w.audit("1001"));
    assert_eq!(w.user("1001")["failed_attempts"], 0);
    // As an IMS core asserts a local number: with its phone-context, as a telephone
    // number with visual separators. It is 2002 all the same.
    let pai = ["P-Asserted-Identity: <sip:20-02;phone-context=pbx.example@127.0.0.1;user=phone>"];
    caller_id_call(&server, "*86", &pai, "5937#", ("2002", 2));
    assert_eq!(
        &event_names(&w.audit("2002"))[2..],
        ["login.success", "login.success"]
    );
    assert!(call_events(&w, "1001").is_empty(), "{:?}", w.audit("1001"));
}

/// With `trusted_sources`, caller identity is believed only from those addresses: a call
/// from 127.0.0.1 to a route trusting only 127.0.0.2 is asked for its mailbox though its
/// From and P-Asserted-Identity both name 1001; a route trusting 127.0.0.1 is not.
#[test]
fn caller_identity_from_an_untrusted_source_is_not_believed() {
    let w = Workdir::provisioned(&[("1001", "6048", false)]);
    let trusting = |pattern: &str, source: &str| {
        CALLER_ID_ROUTE.replace("*86", pattern) + &format!("trusted_sources = [\"{source}\"]\n\n")
    };
    with_dialplan(
        &w,
        &(trusting("*86", "127.0.0.2/32") + &trusting("*87", "127.0.0.1")),
    );
    let server = ServerProcess::start(&w, "47760-47768", &[]);
    let pai = ["P-Asserted-Identity: <sip:1001@127.0.0.1>"];
    // Asked for the mailbox: "1001#" is the mailbox, not a (wrong) passcode.
    let untrusted = caller_id_call(&server, "*86", &pai, "1001#6048#", ("1001", 1));
    assert_eq!(untrusted.uac.local.ip().to_string(), "127.0.0.1");
    one_check_passed(&server, "1001");
    assert_eq!(call_events(&w, "1001"), ["login.success"]);
    // The same identity from a trusted source: only the passcode is asked.
    caller_id_call(&server, "*87", &pai, "6048#", ("1001", 2));
    assert_eq!(log_lines(&server, "login checked").len(), 2);
    assert_eq!(call_events(&w, "1001"), ["login.success", "login.success"]);
    assert_eq!(w.user("1001")["failed_attempts"], 0);
}

/// A P-Asserted-Identity that names no mailbox (a `tel:` number) is the caller's identity
/// all the same: the From user (1001, a mailbox) is not fallen back on, and the caller is
/// asked for the mailbox.
#[test]
fn a_p_asserted_identity_that_is_no_mailbox_number_makes_the_caller_asked() {
    let w = Workdir::provisioned(&[("1001", "6048", false)]);
    with_dialplan(&w, CALLER_ID_ROUTE);
    let server = ServerProcess::start(&w, "47770-47778", &[]);
    let pai = ["P-Asserted-Identity: <tel:+15551234567>"];
    // Taken from the From user, "1001#" would be a wrong passcode.
    caller_id_call(&server, "*86", &pai, "1001#6048#", ("1001", 1));
    one_check_passed(&server, "1001");
    assert_eq!(call_events(&w, "1001"), ["login.success"]);
    assert_eq!(w.user("1001")["failed_attempts"], 0);
}
