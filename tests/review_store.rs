//! Review findings on the credential store and the admin CLI, each pinned by a test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Workdir;

/// Runs `vportal ARGS` in `w` with its standard output a pipe whose reader is gone before
/// the command writes anything (a `| head -0`, a consumer that crashed): the database is
/// held locked meanwhile so that the command cannot write before the reader has left.
fn run_with_reader_gone(w: &Workdir, args: &[&str]) -> (i32, String) {
    let lock = rusqlite::Connection::open(w.db()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vportal"))
        .args(args)
        .current_dir(w.path())
        .env_remove("VPORTAL_PEPPER")
        .env_remove("VPORTAL_DB")
        .env_remove("VPORTAL_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_millis(300));
    lock.execute_batch("COMMIT").unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command that hands out a generated passcode or a token exactly once must not report
/// success when that passcode never reached anyone: the change is made (the old passcode is
/// gone), so the admin has to know to issue another.
#[test]
fn a_generated_passcode_that_could_not_be_printed_is_an_error_not_success() {
    let w = Workdir::provisioned(&[("1001", "4826", false), ("1002", "5937", false)]);
    std::fs::write(w.path().join("new.csv"), "2001,Ann\n").unwrap();
    for args in [
        &["user", "set-temp", "1001"][..],
        &["user", "reset-all", "--yes"],
        &["--json", "user", "add", "1003", "--generate"],
        &["token", "create", "provisioning"],
        &["user", "import", "new.csv"],
    ] {
        let (code, stderr) = run_with_reader_gone(&w, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("not delivered"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The change was made all the same: 1001's old passcode no longer works.
    assert_eq!(w.user("1001")["temporary"], true);
    // A reader that leaves early on output holding no secret is still no error.
    let (code, stderr) = run_with_reader_gone(&w, &["audit"]);
    assert_eq!(code, 0, "{stderr}");
}
