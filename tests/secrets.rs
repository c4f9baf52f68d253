//! A passcode never reaches a log line, an audit row or the database in clear.
//!
//! The passcodes here are ten digits not starting with 17 or 18, so they cannot turn up by
//! chance inside a Unix timestamp or (with any real probability) inside base64 hash text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Workdir;
use common::log::MemoryLog;
use vportal::store::{
    Actor, ChangeOutcome, NewUser, Passcode, PasscodeSpec, Pepper, Store, VerifyOutcome,
};
use vportal::time::Timestamp;

const TEMPORARY: &str = "5820193746";
const CHOSEN: &str = "6931047285";

/// Every column of every audit row, and the raw bytes of the database and its WAL.
fn assert_db_clean(w: &Workdir, secrets: &[&str]) {
    let conn = rusqlite::Connection::open(w.db()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, at, event, extension, actor, source, call_id, outcome, detail FROM audit",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| {
            let mut cells = Vec::new();
            for i in 0..9 {
                let v: rusqlite::types::Value = r.get(i)?;
                cells.push(format!("{v:?}"));
            }
            Ok(cells.join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.len() >= 5, "the flow wrote audit rows: {rows:?}");
    drop(stmt);
    drop(conn);
    for secret in secrets {
        for row in &rows {
            assert!(!row.contains(secret), "audit row holds a passcode: {row}");
        }
        for file in ["vportal.db", "vportal.db-wal"] {
            let path = w.path().join(file);
            if let Ok(bytes) = std::fs::read(&path) {
                let found = bytes
                    .windows(secret.len())
                    .any(|win| win == secret.as_bytes());
                assert!(!found, "{file} holds a passcode in clear");
            }
        }
    }
}

#[test]
fn the_cli_flow_keeps_passcodes_out_of_logs_and_audit() {
    let mut w = Workdir::new();
    w.env.push(("RUST_LOG".into(), "trace".into()));
    let mut logs = String::new();
    let mut step = |args: &[&str], stdin: &str| {
        let r = w.run_with_stdin(args, stdin);
        logs.push_str(&r.stderr);
        r
    };
    step(&["init"], "").ok();
    step(
        &[
            "user",
            "add",
            "4711",
            "--name",
            "Pat",
            "--passcode-stdin",
            "--temporary",
        ],
        &format!("{TEMPORARY}\n"),
    )
    .ok();
    step(
        &["user", "add", "4712", "--passcode-stdin"],
        &format!("{CHOSEN}\n"),
    )
    .ok();
    step(&["policy", "check", "4711"], &format!("{CHOSEN}\n")).ok();
    step(&["policy", "check", "4712"], &format!("{CHOSEN}\n"));
    step(
        &[
            "user",
            "set-temp",
            "4712",
            "--passcode-stdin",
            "--ttl",
            "20m",
        ],
        &format!("{TEMPORARY}\n"),
    )
    .ok();
    let csv = format!("extension,name,email,passcode\n4713,Sam,,{CHOSEN}\n4714,Kim,,{TEMPORARY}\n");
    step(&["user", "import", "-"], &csv).ok();
    // Rejected rows must not echo their passcode either.
    let bad = step(&["user", "import", "-"], &format!("4715,Lee,,{CHOSEN}x\n"));
    assert_eq!(bad.code, 1);
    assert!(!bad.stderr.contains(CHOSEN));
    for args in [
        &["user", "list"][..],
        &["user", "show", "4711"],
        &["report"],
        &["audit"],
        &["audit", "--json"],
    ] {
        let r = step(args, "").ok();
        for secret in [TEMPORARY, CHOSEN] {
            assert!(!r.stdout.contains(secret), "{args:?} printed a passcode");
        }
    }
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logging was on: {logs}"
    );
    for secret in [TEMPORARY, CHOSEN] {
        assert!(
            !logs.contains(secret),
            "a log line holds a passcode:\n{logs}"
        );
    }
    assert_db_clean(&w, &[TEMPORARY, CHOSEN]);
}

#[test]
fn logins_and_changes_keep_passcodes_out_of_logs_errors_and_audit() {
    let captured = MemoryLog::default();
    let writer = captured.clone();
    // No timestamps: their microseconds would hold a short digit string such as "1111"
    // now and then.
    let subscriber = tracing_subscriber::fmt()
        .without_time()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = Workdir::new();
    let pepper = Pepper::from_bytes(vec![3; 32]).unwrap();
    let store = Store::open(&w.db(), pepper, true, 2).unwrap();
    let now = Timestamp::from_unix(1_900_000_000);
    let cli = Actor::Cli { user: None };
    let caller = Actor::Caller {
        source: "127.0.0.1:5062".parse().unwrap(),
        call_id: "c1@127.0.0.1".into(),
    };
    let pin = |s: &str| Passcode::new(s.to_owned()).unwrap();
    store
        .create_user(
            NewUser::new(vportal::store::Extension::parse("4711").unwrap())
                .with_passcode(PasscodeSpec::given(pin(TEMPORARY), true)),
            &cli,
            now,
        )
        .unwrap();
    // Wrong passcodes, including the secret typed at the mailbox prompt.
    assert_eq!(
        store
            .verify(TEMPORARY, &pin(TEMPORARY), &caller, now)
            .unwrap(),
        VerifyOutcome::Unknown
    );
    assert_eq!(
        store.verify("4711", &pin(CHOSEN), &caller, now).unwrap(),
        VerifyOutcome::Wrong { remaining: 4 }
    );
    let (outcome, login) = store
        .verify_login("4711", &pin(TEMPORARY), &caller, now)
        .unwrap();
    assert_eq!(outcome, VerifyOutcome::Ok { must_change: true });
    let mut login = login.unwrap();
    let rejected = store
        .change_passcode(&mut login, &pin(TEMPORARY), &caller, now)
        .unwrap();
    assert!(matches!(rejected, ChangeOutcome::Rejected(..)));
    assert_eq!(
        store
            .change_passcode(&mut login, &pin(CHOSEN), &caller, now)
            .unwrap(),
        ChangeOutcome::Changed
    );
    // Errors and debug output of secret-bearing types.
    let too_long = Passcode::new(format!("{CHOSEN}{}", "9".repeat(60))).unwrap_err();
    let shown = [
        format!("{too_long} {too_long:?}"),
        format!("{:?}", pin(CHOSEN)),
        format!("{rejected:?}"),
        format!("{login:?}"),
        store
            .create_user(
                NewUser::new(vportal::store::Extension::parse("4712").unwrap())
                    .with_passcode(PasscodeSpec::given(pin("1111"), false)),
                &cli,
                now,
            )
            .unwrap_err()
            .to_string(),
    ];
    assert_eq!(shown[3], "Login { extension: Extension(\"4711\"), .. }");
    drop(store);
    let logs = captured.text();
    assert!(
        logs.contains("login checked"),
        "store logging was captured: {logs}"
    );
    for secret in [TEMPORARY, CHOSEN, "1111"] {
        assert!(
            !logs.contains(secret),
            "a log line holds a passcode:\n{logs}"
        );
        for s in &shown {
            assert!(!s.contains(secret), "shown: {s}");
        }
    }
    assert_db_clean(&w, &[TEMPORARY, CHOSEN]);
}
