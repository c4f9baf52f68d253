//! SIPp against `vportal serve` on loopback: the suites of `tests/sipp/run.sh`.
//!
//! SIPp is a required tool here (Debian package `sip-tester`, installed by `.ci/run`): a
//! missing SIPp fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn sipp_uac_over_udp_and_tcp_and_options() {
    let sipp = Command::new("sipp").arg("-v").output();
    assert!(
        sipp.is_ok(),
        "SIPp is required for this test: install it (Debian/Ubuntu: apt-get install sip-tester)"
    );
    let out = Command::new("bash")
        .arg("tests/sipp/run.sh")
        .args([
            "--vportal",
            env!("CARGO_BIN_EXE_vportal"),
            "uac-udp",
            "uac-tcp",
            "options",
        ])
        .output()
        .expect("run tests/sipp/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SIPp suites failed:\n{stdout}\n{stderr}"
    );
    // Every suite reported all its calls successful and none failed (cumulative column).
    let cumulative = |section: &str, counter: &str| -> u32 {
        let line = section
            .lines()
            .find(|l| l.contains(counter))
            .expect(counter);
        line.rsplit('|').next().unwrap().trim().parse().unwrap()
    };
    for (suite, calls) in [("uac-udp", 100), ("uac-tcp", 100), ("options", 500)] {
        let section = stdout.split(&format!("== {suite}")).nth(1).expect(suite);
        assert_eq!(cumulative(section, "Successful call"), calls, "{suite}");
        assert_eq!(cumulative(section, "Failed call"), 0, "{suite}");
    }
}
