//! Start-up and configuration as an operator meets them: the built binary on a temporary
//! directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// `vportal ARGS` in `dir` with `env` and none of the operator's own VPORTAL_* settings:
/// (exit code, stdout, stderr).
fn vportal(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vportal"));
    cmd.args(args).current_dir(dir);
    for var in [
        "VPORTAL_PEPPER",
        "VPORTAL_CONFIG",
        "VPORTAL_DB",
        "VPORTAL_ADMIN_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A VPORTAL_PEPPER that is not text is an error, not the same as no VPORTAL_PEPPER: it
/// was taken as unset, so a first run quietly made a pepper file instead.
#[cfg(unix)]
#[test]
fn a_pepper_variable_that_is_not_text_is_refused_not_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let garbled = std::ffi::OsStr::from_bytes(b"\xffabcdef0123456789abcdef0123456789");
    let (code, stdout, stderr) = vportal(dir.path(), &["init"], &[("VPORTAL_PEPPER", garbled)]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("VPORTAL_PEPPER"), "{stderr}");
    assert!(!stdout.contains("vpt_"), "{stdout}");
    assert!(!dir.path().join("vportal.db").exists());
    assert!(!dir.path().join("vportal.pepper").exists());
}
