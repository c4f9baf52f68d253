//! Any UTF-8 text through `Store::import_csv` on an in-memory store, all or nothing.
//!
//! A row that can never be imported (`!!!`) is appended, so nothing is ever hashed or
//! written: every run sees the same empty store, and runs stay fast.
//!
//! Invariants beyond "no crash": nothing is committed; every line an error or a row names is
//! a line of the text (records end at LF, CRLF or a lone CR); rows come in line order and
//! never outnumber the text's lines.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vportal::store::{Actor, ImportMode, Pepper, Store, StoreError};
use vportal::time::Timestamp;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let pepper = Pepper::from_bytes(vec![7; 32]).unwrap();
        Store::open_in_memory(pepper, 1).unwrap()
    })
}

/// Lines as the CSV reader counts them: LF, CRLF and a lone CR each end one.
fn line_count(text: &str) -> usize {
    let b = text.as_bytes();
    let lone_cr = (0..b.len())
        .filter(|&i| b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'))
        .count();
    1 + b.iter().filter(|&&c| c == b'\n').count() + lone_cr
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let text = format!("{input}\n!!!\n");
    let lines = line_count(&text);
    let actor = Actor::Cli { user: None };
    let result = store().import_csv(
        &text,
        ImportMode::AllOrNothing,
        &actor,
        Timestamp::from_unix(1_700_000_000),
    );
    match result {
        Ok(report) => {
            assert!(!report.committed);
            assert!(report.rows.len() <= lines);
            let mut previous = 0;
            for row in &report.rows {
                assert!(row.line > previous, "rows out of order: {report:?}");
                assert!(row.line <= lines, "line {} of {lines}", row.line);
                previous = row.line;
            }
        }
        Err(StoreError::Invalid(message)) => {
            if let Some(rest) = message.strip_prefix("line ") {
                let n: usize = rest
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no line number in {message:?}"));
                assert!((1..=lines).contains(&n), "{message} in {lines} lines");
            }
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
});
