//! Two connections to one database file, as the CLI and a running server have, writing at
//! the same time: nothing fails with "database is locked" and nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Barrier;

use vportal::store::{
    Actor, Extension, NewUser, Passcode, PasscodeSpec, Pepper, Selection, Store, UserFilter,
    VerifyOutcome,
};
use vportal::time::Timestamp;

const NOW: Timestamp = Timestamp::from_unix(1_900_000_000);

fn pepper() -> Pepper {
    Pepper::from_bytes(vec![9; 32]).unwrap()
}

fn ext(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}

fn pin(s: &str) -> Passcode {
    Passcode::new(s.to_owned()).unwrap()
}

fn user(e: String) -> NewUser {
    NewUser {
        extension: Extension::parse(&e).unwrap(),
        name: Some(format!("User {e}")),
        email: None,
        passcode: None,
    }
}

#[test]
fn cli_and_server_write_the_same_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let server = Store::open(&path, pepper(), true, 2).unwrap();
    let cli = Store::open(&path, pepper(), false, 2).unwrap();
    let caller = Actor::Caller {
        source: "127.0.0.1:5062".parse().unwrap(),
        call_id: "load@127.0.0.1".into(),
    };
    let admin = Actor::Cli { user: None };
    server
        .create_user(
            NewUser::new(ext("2580")).with_passcode(PasscodeSpec::given(pin("4826"), false)),
            &admin,
            NOW,
        )
        .unwrap();
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        // The "server": logins with failures (each a read, a hash and a write).
        s.spawn(|| {
            barrier.wait();
            for i in 0..20 {
                let typed = if i % 2 == 0 { "4826" } else { "0000" };
                let outcome = server.verify("2580", &pin(typed), &caller, NOW).unwrap();
                assert!(matches!(
                    outcome,
                    VerifyOutcome::Ok { .. } | VerifyOutcome::Wrong { .. }
                ));
            }
        });
        // The "CLI": many small write transactions.
        s.spawn(|| {
            barrier.wait();
            for i in 0..200 {
                cli.create_user(user(format!("3{i:03}")), &admin, NOW)
                    .unwrap();
            }
        });
        // More server writes: mailboxes created through the other connection.
        s.spawn(|| {
            barrier.wait();
            for i in 0..200 {
                server
                    .create_user(user(format!("4{i:03}")), &admin, NOW)
                    .unwrap();
                if i % 50 == 0 {
                    cli.unlock(&ext("2580"), &admin, NOW).unwrap();
                }
            }
        });
    });
    let users = cli.users(UserFilter::default(), NOW).unwrap();
    assert_eq!(users.len(), 401);
    // A bulk reset through one connection is seen at once by the other.
    let issued = cli
        .reset_many(
            &Selection::Extensions(vec![ext("2580")]),
            true,
            None,
            &admin,
            NOW,
        )
        .unwrap();
    let fresh = issued[0].generated.clone().unwrap();
    assert_eq!(
        server.verify("2580", &fresh, &caller, NOW).unwrap(),
        VerifyOutcome::Ok { must_change: true }
    );
}

#[test]
fn parallel_failures_from_two_connections_are_each_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Store::open(&path, pepper(), true, 2).unwrap();
    let b = Store::open(&path, pepper(), false, 2).unwrap();
    let admin = Actor::Cli { user: None };
    a.create_user(
        NewUser::new(ext("1001")).with_passcode(PasscodeSpec::given(pin("4826"), false)),
        &admin,
        NOW,
    )
    .unwrap();
    let caller = |n: u32| Actor::Caller {
        source: "127.0.0.1:5062".parse().unwrap(),
        call_id: format!("parallel-{n}@127.0.0.1"),
    };
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for n in 0..4 {
            let store = if n % 2 == 0 { &a } else { &b };
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                store.verify("1001", &pin("0000"), &caller(n), NOW).unwrap();
            });
        }
    });
    // Four wrong guesses in parallel across two connections: four counted, no lock yet, and
    // the fifth locks. Parallel calls cannot buy extra guesses.
    let info = a.user(&ext("1001"), NOW).unwrap().unwrap();
    assert_eq!(info.failed_attempts, 4);
    assert!(matches!(
        b.verify("1001", &pin("0000"), &caller(9), NOW).unwrap(),
        VerifyOutcome::Locked { .. }
    ));
}
