//! The admin side-port live, in the same process as the calls: an admin resets a temporary
//! passcode over HTTP, a phone logs in with it and chooses its own PIN, and the API then
//! shows the result and the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Workdir;
use common::http;
use common::phone::Phone;
use common::server::ServerProcess;
use serde_json::{Value, json};

const CALL: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + CALL;
    while Instant::now() < end {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_passcode_reset_over_http_works_on_the_next_call_and_the_api_shows_the_change() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init", "--token-name", "provisioning"]).ok().stdout);
    w.run_with_stdin(&["user", "add", "1001", "--passcode-stdin"], "4826")
        .ok();
    let server = ServerProcess::start(&w, "32400-32498", &[]);
    let admin = server.admin.expect("the admin side-port");

    // The admin hands out a temporary passcode: generated, returned once.
    let reset = http::json(
        admin,
        "POST",
        "/api/v1/users/1001/passcode",
        Some(&token),
        &json!({ "ttl_seconds": 1200 }),
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    let reset = reset.json();
    assert_eq!(reset["temporary"], true);
    let temporary = reset["passcode"].as_str().unwrap().to_owned();
    assert_eq!(temporary.len(), 6);

    // Before any call every counter is there, at zero, each outcome too.
    let fresh = http::request(admin, "GET", "/metrics", None, None).body;
    for line in [
        "vportal_calls_total{outcome=\"abandoned\"} 0",
        "vportal_logins_total{outcome=\"wrong\"} 0",
        "vportal_passcode_changes_total{outcome=\"rejected\"} 0",
        "vportal_passcode_changes_total{outcome=\"superseded\"} 0",
        "vportal_calls_total{outcome=\"superseded\"} 0",
        "vportal_lockouts_total 0",
        "vportal_dtmf_digits_total{method=\"inband\"} 0",
        "vportal_dtmf_copies_total{method=\"sip_info\"} 0",
        "vportal_sip_requests_total{direction=\"in\",method=\"INVITE\"} 0",
        "vportal_sip_requests_total{direction=\"out\",method=\"BYE\"} 0",
        "vportal_sip_responses_total{direction=\"out\",class=\"2xx\"} 0",
        "vportal_sip_dropped_total{reason=\"unanswerable\"} 0",
        "vportal_sip_dropped_total{reason=\"tcp_connection\"} 0",
        "vportal_sip_dropped_total{reason=\"tcp_backlog\"} 0",
        "vportal_sip_unkept_total 0",
        "vportal_calls_refused_total{reason=\"no_route\"} 0",
        "vportal_calls_refused_total{reason=\"full\"} 0",
        "vportal_calls_refused_total{reason=\"no_rtp_port\"} 0",
    ] {
        assert!(fresh.lines().any(|l| l == line), "no {line:?} in\n{fresh}");
    }

    // The very next call logs in with it and is made to choose a PIN.
    let mut phone = Phone::dial(&server, "8500", "1001");
    let caller = phone.sip.local_addr().unwrap().to_string();
    // A mailbox that does not exist first: refused, and counted like any other login.
    phone.keys("9999#1234#");
    wait_until("the refusal to be counted", || {
        http::request(admin, "GET", "/metrics", None, None)
            .body
            .contains("vportal_logins_total{outcome=\"unknown\"} 1")
    });
    phone.keys(&format!("1001#{temporary}#"));
    wait_until("the login", || {
        server.log().contains("logged in mailbox=1001")
    });
    // While the call is up the API lists it, with its mailbox.
    let calls = http::request(admin, "GET", "/api/v1/calls", Some(&token), None).json();
    let call = &calls["calls"][0];
    assert_eq!(call["mailbox"], "1001", "{calls}");
    assert_eq!(call["source"], caller.as_str());
    assert_eq!(call["dialled"], "8500");
    phone.keys("5937#5937#*");
    assert!(phone.wait_for_bye(CALL), "{}", server.log());
    wait_until("the call to leave the list", || {
        http::request(admin, "GET", "/api/v1/calls", Some(&token), None).json()["calls"]
            == json!([])
    });

    let user = http::request(admin, "GET", "/api/v1/users/1001", Some(&token), None);
    assert_eq!(user.status, 200);
    let user = user.json();
    assert_eq!(user["temporary"], false, "{user}");
    assert_eq!(user["temporary_expires_at"], Value::Null);
    assert!(user["passcode_changed_at"].is_string());

    let audit = http::request(
        admin,
        "GET",
        "/api/v1/audit?extension=1001",
        Some(&token),
        None,
    );
    assert_eq!(audit.status, 200);
    let mut events = audit.json()["events"].as_array().unwrap().clone();
    events.reverse();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // The last of each: creating the mailbox with a passcode is audited as a change too.
    let at = |name: &str| {
        names
            .iter()
            .rposition(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    let (set, login, changed) = (
        at("passcode.temporary_set"),
        at("login.success"),
        at("passcode.changed"),
    );
    assert!(set < login && login < changed, "{names:?}");
    assert_eq!(events[set]["actor"], "admin:provisioning");
    assert!(
        events[set]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    for i in [login, changed] {
        assert_eq!(events[i]["actor"], "caller");
        assert_eq!(events[i]["source"], caller.as_str());
        assert!(events[i]["call_id"].is_string());
    }
    // The passcodes appear nowhere but in the reset's own answer.
    let answers = format!("{audit:?}{user}");
    for secret in [temporary.as_str(), "5937"] {
        assert!(!answers.contains(secret) && !server.log_reveals(secret));
    }

    // The metrics saw it all.
    let metrics = http::request(admin, "GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    // Every key the phone pressed, each once, all as RFC 4733 events: `9999#1234#`, then
    // the mailbox and the six-digit temporary passcode, then `5937#5937#*`.
    let keyed = "9999#1234#".len() + format!("1001#{temporary}#").len() + "5937#5937#*".len();
    assert_eq!(keyed, 33);
    let digits = |method: &str| {
        sample(
            &fresh,
            &metrics.body,
            &format!("vportal_dtmf_digits_total{{method=\"{method}\"}}"),
        )
    };
    assert_eq!(digits("rfc4733"), (0, 33), "{}", metrics.body);
    assert_eq!(digits("sip_info"), (0, 0), "{}", metrics.body);
    assert_eq!(digits("inband"), (0, 0), "{}", metrics.body);
    // The server answered the INVITE with a 200 (retransmitted, it may be counted more than
    // once), and sent no other final answer; the phone's 200 to the server's BYE came in.
    let responses = |direction: &str, class: &str| {
        sample(
            &fresh,
            &metrics.body,
            &format!("vportal_sip_responses_total{{direction=\"{direction}\",class=\"{class}\"}}"),
        )
    };
    let (before, after) = responses("out", "2xx");
    assert!(
        before == 0 && (1..=3).contains(&after),
        "{before} then {after} 2xx sent:\n{}",
        metrics.body
    );
    for class in ["3xx", "4xx", "5xx", "6xx"] {
        assert_eq!(responses("out", class), (0, 0), "{class}\n{}", metrics.body);
    }
    assert_eq!(responses("in", "2xx"), (0, 1), "{}", metrics.body);
    for line in [
        "vportal_logins_total{outcome=\"ok_temporary\"} 1",
        "vportal_passcode_changes_total{outcome=\"changed\"} 1",
        "vportal_calls_total{outcome=\"changed\"} 1",
        "vportal_sip_requests_total{direction=\"in\",method=\"INVITE\"} 1",
        "vportal_argon2_verify_seconds_bucket",
        "vportal_calls_active 0",
    ] {
        assert!(
            metrics.body.contains(line),
            "no {line:?} in\n{}",
            metrics.body
        );
    }
    // The call's prompts went out as RTP: none before it, some since.
    let (before, after) = sample(&fresh, &metrics.body, "vportal_rtp_packets_sent_total");
    assert!(
        before == 0 && after > 0,
        "{before} then {after} RTP packets sent:\n{}",
        metrics.body
    );
    // The call's RTCP: at least the BYE that ended it went out; the phone sent none.
    let rtcp = |direction: &str| {
        sample(
            &fresh,
            &metrics.body,
            &format!("vportal_rtcp_packets_total{{direction=\"{direction}\"}}"),
        )
    };
    let (before, after) = rtcp("out");
    assert!(
        before == 0 && after > 0,
        "{before} then {after} RTCP packets sent:\n{}",
        metrics.body
    );
    assert_eq!(rtcp("in"), (0, 0), "{}", metrics.body);
    // A whole call drops nothing and keeps every transaction.
    let dropped = "vportal_sip_dropped_total{reason=\"unanswerable\"}";
    assert_eq!(sample(&fresh, &metrics.body, dropped), (0, 0));
    assert_eq!(
        sample(&fresh, &metrics.body, "vportal_sip_unkept_total"),
        (0, 0)
    );
    // What cannot be answered is dropped, and counted: a datagram that is no SIP, and a
    // response to a request the server never sent.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stray
        .send_to(b"\x16\x03\x01 not SIP\r\n\r\n", server.sip)
        .unwrap();
    let response = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {}:5060;branch=z9hG4bKnothingofours\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n\
         Call-ID: stray@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        server.sip.ip()
    );
    stray.send_to(response.as_bytes(), server.sip).unwrap();
    wait_until("both to be counted as dropped", || {
        let page = http::request(admin, "GET", "/metrics", None, None).body;
        sample(&fresh, &page, dropped).1 == 2
    });
    // A call to a number no route takes is refused (404), and counted as such.
    let mut lost = common::uac::Uac::new(stray.local_addr().unwrap(), server.sip, "4040");
    stray.send_to(&lost.invite(""), server.sip).unwrap();
    let refused = "vportal_calls_refused_total{reason=\"no_route\"}";
    wait_until("the refused call to be counted", || {
        let page = http::request(admin, "GET", "/metrics", None, None).body;
        sample(&fresh, &page, refused) == (0, 1)
    });
}

/// A bulk reset whose client hangs up before the answer: the work is not stopped, the
/// passcodes are replaced and were never seen, and the log says so.
#[test]
fn a_reset_whose_client_went_away_is_logged_as_undelivered() {
    use std::io::Write;
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init"]).ok().stdout);
    let mailboxes: Vec<String> = (2000..2040).map(|m| m.to_string()).collect();
    let csv: String = mailboxes
        .iter()
        .map(|m| format!("{m},User {m}\n"))
        .collect();
    std::fs::write(w.path().join("users.csv"), csv).unwrap();
    w.run(&["user", "import", "users.csv"]).ok();
    let server = ServerProcess::start(&w, "47300-47310", &[]);
    let admin = server.admin.expect("the admin side-port");
    let body = json!({ "extensions": mailboxes }).to_string();
    // The reset cannot commit before its client is gone, however fast this machine hashes:
    // another process holds the database's write lock until then.
    let lock = rusqlite::Connection::open(w.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut client = std::net::TcpStream::connect(admin).unwrap();
    write!(
        client,
        "POST /api/v1/users/reset HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Past the token check (whose record of use gives up on the lock after 100 ms): the
    // reset's work has started, and waits for the lock once its passcodes are hashed.
    std::thread::sleep(Duration::from_millis(500));
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    lock.execute_batch("COMMIT").unwrap();
    server.expect_log("was never delivered", 1, CALL);
    let resets = common::event_names(&w.audit("2039"))
        .iter()
        .filter(|e| **e == "passcode.temporary_set")
        .count();
    assert_eq!(resets, 2, "the import's, then the reset's");
}

/// Resetting every mailbox over HTTP (`all: true`, confirmed) logs a warning naming who did
/// it, and nothing secret.
#[test]
fn a_reset_of_every_mailbox_is_logged_as_a_warning_naming_the_actor() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init", "--token-name", "provisioning"]).ok().stdout);
    w.run(&["user", "add", "1001", "--generate"]).ok();
    w.run(&["user", "add", "1002", "--generate"]).ok();
    let server = ServerProcess::start(&w, "47780-47789", &[]);
    let admin = server.admin.expect("the admin side-port");
    let reset = http::json(
        admin,
        "POST",
        "/api/v1/users/reset",
        Some(&token),
        &json!({ "all": true, "temporary": true, "confirm": "reset every mailbox" }),
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    let reset = reset.json();
    let passcodes: Vec<String> = reset["reset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["passcode"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(passcodes.len(), 2, "{reset}");
    server.expect_log("every mailbox's passcode was reset", 1, CALL);
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("every mailbox's passcode was reset"))
        .unwrap()
        .to_owned();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("admin:provisioning"), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
    assert!(line.contains("mailboxes=2"), "{line}");
    assert!(!server.log_reveals(&token), "the token in the log");
    for passcode in &passcodes {
        assert!(!server.log_reveals(passcode), "a passcode in the log");
    }
    // A reset of listed mailboxes is not such an event.
    let one = http::json(
        admin,
        "POST",
        "/api/v1/users/reset",
        Some(&token),
        &json!({ "extensions": ["1001"] }),
    );
    assert_eq!(one.status, 200, "{}", one.body);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server
            .log()
            .matches("every mailbox's passcode was reset")
            .count(),
        1
    );
}

/// A file-size limit the database reaches (`ulimit -f`, systemd's `LimitFSIZE=`) fails the
/// write that reaches it, said as such; it does not kill the server.
#[test]
fn a_file_size_limit_fails_writes_and_leaves_the_server_running() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init"]).ok().stdout);
    w.run(&["user", "add", "1001", "--generate"]).ok();
    let size = std::fs::metadata(w.db()).unwrap().len();
    let limit = format!("--fsize={}", size + 8_192);
    let mut server =
        ServerProcess::start_wrapped(&w, &["prlimit", &limit, "--"], "47311-47320", &[]);
    let admin = server.admin.expect("the admin side-port");
    let refused = (0..200)
        .map(|_| {
            http::json(
                admin,
                "POST",
                "/api/v1/users/1001/passcode",
                Some(&token),
                &json!({}),
            )
        })
        .find(|r| r.status != 200)
        .expect("the database outgrows the limit");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "unavailable");
    assert!(refused.body.contains("file-size limit"), "{}", refused.body);
    assert_eq!(server.child.try_wait().unwrap(), None, "{}", server.log());
    let health = http::request(admin, "GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    let user = http::request(admin, "GET", "/api/v1/users/1001", Some(&token), None);
    assert_eq!(user.status, 200, "reads go on: {}", user.body);
    server.terminate(CALL);
}

/// A backup restored over the database under the running server (a `mv`): the server's
/// connections would go on with the old file, gone from the path, losing every change made
/// after. Each request fails instead, said as such, with one error in the log; the server
/// stays up for a restart. It notices within a second, with no request, and moves the old
/// file's WAL aside, which the next process to open the restored file (the CLI, the server
/// restarted) would otherwise replay onto it and corrupt it.
#[test]
fn a_database_replaced_under_the_server_is_refused_not_written() {
    let w = Workdir::new();
    let token = common::token_from(&w.run(&["init"]).ok().stdout);
    w.run(&["user", "add", "1001", "--generate"]).ok();
    let mut server = ServerProcess::start(&w, "47720-47729", &[]);
    let admin = server.admin.expect("the admin side-port");
    let user = || http::request(admin, "GET", "/api/v1/users/1001", Some(&token), None);
    let health = || http::request(admin, "GET", "/healthz", None, None);
    assert_eq!(user().status, 200);
    assert_eq!(health().status, 200);
    w.run(&["backup", "copy.db"]).ok();
    w.run(&["user", "add", "1002", "--generate"]).ok();
    std::fs::rename(w.path().join("copy.db"), w.db()).unwrap();
    server.expect_log("the database file was replaced while in use", 1, CALL);
    let mut wal = w.db().into_os_string();
    wal.push("-wal.replaced");
    assert!(std::path::Path::new(&wal).exists(), "{}", server.log());
    // The restored file is whole, for the CLI meanwhile: the backup as it was.
    let list = w.run(&["user", "list"]).ok();
    assert!(
        list.stdout.contains("1001") && !list.stdout.contains("1002"),
        "{}",
        list.stdout
    );
    w.run(&["token", "list"]).ok();
    let read = user();
    assert_eq!(read.status, 503, "{}", read.body);
    assert_eq!(read.json()["error"]["code"], "unavailable");
    assert!(read.body.contains("was replaced"), "{}", read.body);
    let reset = http::json(
        admin,
        "POST",
        "/api/v1/users/1001/passcode",
        Some(&token),
        &json!({}),
    );
    assert_eq!(reset.status, 503, "{}", reset.body);
    // Liveness says so: a supervisor probing it restarts the server.
    let health = health();
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["error"]["code"], "unavailable");
    assert!(health.body.contains("restart vportal"), "{}", health.body);
    assert_eq!(server.child.try_wait().unwrap(), None, "{}", server.log());
    server.expect_log("the database file was replaced while in use", 1, CALL);
    server.terminate(CALL);
}

/// The database file removed under the server: what it held is saved beside it, and what
/// a monitor sees says so, not to restart (which is refused while the copy is there).
#[test]
fn a_database_removed_under_the_server_says_where_its_data_is() {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    w.run(&["user", "add", "1001", "--generate"]).ok();
    let mut server = ServerProcess::start(&w, "48300-48309", &[]);
    let admin = server.admin.expect("the admin side-port");
    let health = || http::request(admin, "GET", "/healthz", None, None);
    assert_eq!(health().status, 200);
    std::fs::remove_file(w.db()).unwrap();
    let health = health();
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["error"]["code"], "unavailable");
    assert!(health.body.contains(".recovered"), "{}", health.body);
    assert!(!health.body.contains("restart"), "{}", health.body);
    server.expect_log("what it held is saved to the copy", 1, CALL);
    let mut copy = w.db().into_os_string();
    copy.push(".recovered");
    assert!(std::path::Path::new(&copy).exists());
    server.terminate(CALL);
    // A restart is refused while the copy is there, as the message said.
    let refused = w.run(&["user", "list"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains(".recovered"), "{}", refused.stderr);
}

#[test]
fn the_side_port_refuses_plain_http_off_loopback_and_serves_https_with_a_certificate() {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    // Off loopback without TLS: refused before anything is bound (nothing is sent anywhere).
    let mut child = w
        .command(&["serve", "--sip", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + CALL;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("serve did not refuse a non-loopback admin address without TLS");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--admin-insecure"),
        "{stderr}"
    );

    // Off loopback, insecure by choice: /metrics without a token is warned about (its
    // login counters tell an unknown mailbox from a wrong passcode), not with
    // `metrics_auth`. (Bound on every address for a moment; nothing is sent anywhere.)
    let warning = "/metrics answers without a token off loopback";
    let open = w.path().join("open.toml");
    std::fs::write(&open, "[admin]\nlisten = \"0.0.0.0:0\"\ninsecure = true\n").unwrap();
    let closed = w.path().join("closed.toml");
    std::fs::write(
        &closed,
        "[admin]\nlisten = \"0.0.0.0:0\"\ninsecure = true\nmetrics_auth = true\n",
    )
    .unwrap();
    for (config, warned) in [(&open, true), (&closed, false)] {
        let config = config.to_str().unwrap();
        let server = ServerProcess::start(
            &w,
            "32500-32598",
            &["--config", config, "--admin", "0.0.0.0:0"],
        );
        assert_eq!(server.log().contains(warning), warned, "{}", server.log());
    }

    // With a certificate and key it speaks HTTPS only: plain HTTP gets no HTTP answer. A
    // key others may read is warned about.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let key_warning = "the admin TLS key is a secret and others can read it";
    let tls_config = |key: &str| {
        let config = w.path().join("tls.toml");
        std::fs::write(
            &config,
            format!("[admin]\ntls_cert = \"{fixtures}/admin-tls.crt\"\ntls_key = \"{key}\"\n"),
        )
        .unwrap();
        config
    };
    let key = w.path().join("admin-tls.key");
    std::fs::copy(format!("{fixtures}/admin-tls.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = tls_config(key.to_str().unwrap());
    let server = ServerProcess::start(&w, "32500-32598", &["--config", config.to_str().unwrap()]);
    assert!(server.log().contains(key_warning), "{}", server.log());
    drop(server);
    // Shared with a group (Debian's ssl-cert) is fine.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let server = ServerProcess::start(&w, "32500-32598", &["--config", config.to_str().unwrap()]);
    assert!(server.log().contains("scheme=https"), "{}", server.log());
    assert!(!server.log().contains(key_warning), "{}", server.log());
    let admin = server.admin.unwrap();
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A client that trusts the certificate gets its answers over TLS, the API still asking
    // for a token.
    assert!(https_get(admin, "/healthz").starts_with("HTTP/1.1 200"));
    let users = https_get(admin, "/api/v1/users");
    assert!(users.starts_with("HTTP/1.1 401"), "{users}");
}

#[test]
fn a_token_from_the_config_or_the_environment_is_accepted_and_audited_as_configured() {
    const TOKEN: &str = "cfg-4f1d8a2c9e7b3a6d5c0f1e2d3c4b5a69";
    const ENV_TOKEN: &str = "env-7a3e9c1b5d2f8e4a6c0b3d9f1e7a5c28";
    let mut w = Workdir::new();
    w.run(&["init"]).ok();
    w.run_with_stdin(&["user", "add", "1001", "--passcode-stdin"], "4826")
        .ok();
    // `enabled = false` too: the `--admin ADDR` the test server is started with overrides
    // it, as flags override the file.
    let config = w.path().join("token.toml");
    std::fs::write(
        &config,
        format!("[admin]\nenabled = false\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    {
        let server = ServerProcess::start(&w, "32600-32698", &["--config", &config]);
        let admin = server.admin.unwrap();
        let unlock = http::request(
            admin,
            "POST",
            "/api/v1/users/1001/unlock",
            Some(TOKEN),
            None,
        );
        assert_eq!(unlock.status, 200, "{}", unlock.body);
        let audit = http::request(admin, "GET", "/api/v1/audit?limit=1", Some(TOKEN), None).json();
        assert_eq!(audit["events"][0]["actor"], "admin:configured", "{audit}");
        assert!(!server.log().contains(TOKEN), "the token in the log");
    }
    // The environment's token takes the config's place.
    w.env.push(("VPORTAL_ADMIN_TOKEN".into(), ENV_TOKEN.into()));
    let server = ServerProcess::start(&w, "32600-32698", &["--config", &config]);
    let admin = server.admin.unwrap();
    let get = |token| http::request(admin, "GET", "/api/v1/users", Some(token), None).status;
    assert_eq!(get(ENV_TOKEN), 200);
    assert_eq!(get(TOKEN), 401);
    assert!(!server.log().contains(ENV_TOKEN) && !server.log().contains(TOKEN));
}

#[test]
fn a_configured_token_with_spaces_or_not_text_is_refused_without_being_shown() {
    let w = Workdir::new();
    w.run(&["init"]).ok();
    for (value, secret) in [
        (
            "\"has spaces 4f1d8a2c9e7b3a6d5c0f1e2d3c4b5a\"",
            "4f1d8a2c9e7b",
        ),
        ("48261937502846193750284619375028", "4826193750"),
    ] {
        let config = w.path().join("bad-token.toml");
        std::fs::write(&config, format!("[admin]\ntoken = {value}\n")).unwrap();
        let r = w.run(&[
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--sip",
            "127.0.0.1:0",
        ]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("line 2, key admin.token"), "{}", r.stderr);
        assert!(!r.stderr.contains(secret), "the value echoed: {}", r.stderr);
    }
}

/// The value of the counter `series` (its name and labels, exactly as exposed) in the
/// metrics page `before` and in `after`; fails the test if either page lacks it.
fn sample(before: &str, after: &str, series: &str) -> (u64, u64) {
    let value = |page: &str| {
        let line = page
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{page}"));
        line.parse::<u64>()
            .unwrap_or_else(|e| panic!("{series} {line:?}: {e}"))
    };
    (value(before), value(after))
}

/// `GET path` over HTTPS to `addr`, trusting only the test certificate; the whole answer.
fn https_get(addr: std::net::SocketAddr, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    assert!(addr.ip().is_loopback());
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(format!("{fixtures}/admin-tls.crt")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Offered as a browser or curl would: the side-port picks HTTP/1.1.
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), ServerName::from(addr.ip()))
            .unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut tls, request.as_bytes()).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut answer = Vec::new();
    // The server may close without a TLS close_notify: what was read is the answer.
    let _ = std::io::Read::read_to_end(&mut tls, &mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
