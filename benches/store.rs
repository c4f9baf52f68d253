//! Cost of a login check (argon2id at OWASP parameters, with the pepper) and of the pure
//! passcode policy. The store is SQLite in memory: the login's transaction is measured
//! without a file, a WAL or an fsync (the server's commit costs more).
//!
//! Run: `cargo bench --bench store`. Figures are in the README.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use vportal::store::{Actor, Extension, NewUser, Passcode, PasscodeSpec, Pepper, Policy, Store};
use vportal::time::Timestamp;

fn pin(s: &str) -> Passcode {
    Passcode::new(s.to_owned()).unwrap()
}

fn verify(c: &mut Criterion) {
    let store = Store::open_in_memory(Pepper::from_bytes(vec![1; 32]).unwrap(), 1).unwrap();
    let now = Timestamp::from_unix(1_900_000_000);
    let admin = Actor::Cli { user: None };
    store
        .create_user(
            NewUser::new(Extension::parse("1001").unwrap())
                .with_passcode(PasscodeSpec::given(pin("4826"), false)),
            &admin,
            now,
        )
        .unwrap();
    let caller = Actor::Caller {
        source: "127.0.0.1:5062".parse().unwrap(),
        call_id: "bench@127.0.0.1".into(),
    };
    let mut group = c.benchmark_group("verify");
    group.sample_size(30);
    let right = pin("4826");
    group.bench_function("right passcode (argon2id + transaction)", |b| {
        b.iter(|| {
            store
                .verify(black_box("1001"), &right, &caller, now)
                .unwrap()
        });
    });
    let hasher = store.hasher();
    let hash = hasher.hash(&right).unwrap();
    group.bench_function("argon2id verify alone", |b| {
        b.iter(|| hasher.verify(black_box(&right), &hash).unwrap());
    });
    group.bench_function("unknown mailbox (dummy hash)", |b| {
        b.iter(|| {
            store
                .verify(black_box("2002"), &right, &caller, now)
                .unwrap()
        });
    });
    group.finish();
}

fn policy(c: &mut Criterion) {
    let policy = Policy::default();
    let ext = Extension::parse("1001").unwrap();
    let good = pin("4826");
    let common = pin("0229");
    c.bench_function("policy check_rules (acceptable)", |b| {
        b.iter(|| policy.check_rules(black_box(&ext), black_box(&good)));
    });
    c.bench_function("policy check_rules (blocklisted)", |b| {
        b.iter(|| policy.check_rules(black_box(&ext), black_box(&common)));
    });
    let mut rng = StdRng::seed_from_u64(1);
    c.bench_function("policy generate", |b| {
        b.iter(|| policy.generate(black_box(&ext), &mut rng).unwrap());
    });
}

criterion_group!(benches, verify, policy);
criterion_main!(benches);
