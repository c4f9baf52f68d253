//! SIPp against `vportal serve` on loopback: the suites of `tests/sipp/run.sh`.
//!
//! SIPp and tshark are required tools here (Debian packages `sip-tester` and `tshark`,
//! installed by `tests/run-all.sh`), and the DTMF and capture suites need root (CI runs as
//! root): a missing tool fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn sipp_calls_media_and_dtmf() {
    let sipp = Command::new("sipp").arg("-v").output();
    assert!(
        sipp.is_ok(),
        "SIPp is required for this test: install it (Debian/Ubuntu: apt-get install sip-tester), or run tests/run-all.sh"
    );
    let out = Command::new("bash")
        .arg("tests/sipp/run.sh")
        .args(["--vportal", env!("CARGO_BIN_EXE_vportal")])
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
    let section = |suite: &str| {
        stdout
            .split(&format!("== {suite}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("{suite} missing:\n{stdout}\n{stderr}"))
            .to_owned()
    };
    for (suite, calls) in [
        ("uac-udp", 100),
        ("uac-tcp", 100),
        ("options", 500),
        ("change-pcap", 1),
        ("change-play", 1),
        ("refused-change", 1),
        ("lockout", 1),
        ("lockout-2", 1),
        ("lockout-3", 1),
        ("expired", 1),
    ] {
        assert_eq!(
            cumulative(&section(suite), "Successful call"),
            calls,
            "{suite}"
        );
        assert_eq!(cumulative(&section(suite), "Failed call"), 0, "{suite}");
    }
    // The call flows, keyed by SIPp (stock pcaps and play_dtmf, with repeated digits), left
    // the store as they should: checked with the CLI.
    for (suite, checked) in [
        ("change-pcap", "1001 is no longer temporary"),
        ("change-pcap", "1001 has a passcode.changed audit event"),
        ("change-play", "1122 is no longer temporary"),
        ("change-play", "1122 has a passcode.changed audit event"),
        ("refused-change", "5005 is still temporary"),
        ("refused-change", "5005 has no passcode.changed audit event"),
        ("lockout", "2580 has three failed attempts"),
        ("lockout", "2580 is not locked after three failures"),
        (
            "lockout-2",
            "2580 is locked after five failures across calls",
        ),
        (
            "lockout-3",
            "2580's right passcode is refused while locked (login.locked)",
        ),
        ("lockout-3", "2580 has no login.success audit event"),
        ("expired", "3003 has a login.expired audit event"),
        ("expired", "3003 has no login.success audit event"),
    ] {
        assert!(
            section(suite).contains(&format!("checked: {checked}\n")),
            "{suite}: {checked}\n{stdout}\n{stderr}"
        );
    }
    // The server's RTP reached SIPp as one stream of 20 ms PCMU packets, numbered without a
    // gap, timestamps 160 a packet but for the few frames a starved stream skips and a
    // prompt started at once (marked, less than a frame on); at least a second of it in the
    // 3 s call. How fast it came is for the load scripts to measure.
    let rtp = section("rtp");
    let rtp = rtp.split("\n==").next().unwrap();
    let stat = |key: &str| -> u64 {
        rtp.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the rtp suite:\n{rtp}"))
    };
    assert!(stat("packets") >= 50, "{rtp}");
    for counter in ["not_pcmu_20ms", "seq_gaps", "bad_steps"] {
        assert_eq!(stat(counter), 0, "{counter}: {rtp}");
    }
    assert!(stat("skipped") * 10 <= stat("frames"), "{rtp}");
    assert!(rtp.lines().any(|l| l == "   ok"), "{rtp}");
}
