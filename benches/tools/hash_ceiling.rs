//! The hash ceiling: how many login checks per second one core can do at most, measured
//! right now. On a shared virtual machine the speed of argon2 drifts by up to a fifth from
//! one minute to the next, so a login rate means something only next to a ceiling measured at
//! the same time; `tests/load/login-calls.sh` runs this before and after each rate.
//!
//! ```text
//! taskset -c 1 cargo run --release --example hash_ceiling -- --seconds 3
//! ```
//!
//! It verifies a passcode against its hash with vportal's own [`Hasher`] (argon2id at the
//! server's parameters, the pepper as secret, the reused block buffer), back to back on one
//! thread, and prints the checks per second and the median and p90 time of one check.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use vportal::store::{Hasher, Passcode, Pepper};

#[path = "support/mod.rs"]
mod support;

fn main() {
    let mut seconds = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value after each flag");
        match flag.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    let hasher = Hasher::new(Pepper::from_bytes(vec![7; 32]).unwrap(), 1);
    let passcode = Passcode::new("48826".to_owned()).unwrap();
    let hash = hasher.hash(&passcode).unwrap();
    let run = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < run {
        let t = Instant::now();
        assert!(hasher.verify(&passcode, &hash).unwrap());
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!(
        "hash ceiling: {:.1} checks/s ({} in {elapsed:.1} s), one check p50 {:.1} ms, p90 {:.1} ms",
        times.len() as f64 / elapsed,
        times.len(),
        support::percentile(&times, 0.5),
        support::percentile(&times, 0.9),
    );
}
