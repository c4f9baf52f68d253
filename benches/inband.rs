//! Cost of in-band DTMF detection per 20 ms frame (160 samples at 8 kHz), the unit a call
//! feeds it: silence (the energy gate), speech (the dominance check and sometimes the
//! frequency measurement), and a held key (every window runs the full fit).
//!
//! Run: `cargo bench --bench inband`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vportal::media::inband::{InbandConfig, InbandDetector};

const FRAME: usize = 160;

/// One second of key `5` (770 + 1336 Hz) at -10 dBm0 per tone.
fn held_key() -> Vec<i16> {
    let amplitude = 22_826.0 * 10f64.powf(-10.0 / 20.0);
    (0..8000)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            let s = amplitude * ((2.0 * PI * 770.0 * t).sin() + (2.0 * PI * 1336.0 * t).sin());
            s.round() as i16
        })
        .collect()
}

fn speech() -> Vec<i16> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speech/en-us_digits.wav"
    );
    hound::WavReader::open(path)
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

fn per_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("inband per 20 ms frame");
    group.throughput(Throughput::Elements(FRAME as u64));
    for (name, signal) in [
        ("silence", vec![0i16; 8000]),
        ("speech", speech()),
        ("held key", held_key()),
    ] {
        let frames: Vec<&[i16]> = signal.chunks_exact(FRAME).collect();
        let mut detector = InbandDetector::new(InbandConfig::default());
        let mut out = Vec::new();
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                detector.process(black_box(frames[next]), &mut out);
                next = (next + 1) % frames.len();
                out.clear();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, per_frame);
criterion_main!(benches);
