//! Any text through `Dialplan::parse`, and the routes it yields through `route`; or, when
//! the input holds a NUL, `pattern NUL user` through `Pattern::parse` and `matches`.
//!
//! Invariants beyond "no crash": an error's line is a line of the text; `route` finds a
//! route exactly when some route matches the user, the route it finds matches, and an exact
//! match wins over every pattern; each exact route is found by its own text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vportal::ivr::dialplan::{Dialplan, DialplanError, Pattern};

/// A user the pattern `source` matches, if it is one of the simple kind.
fn example(source: &str) -> String {
    let Some(body) = source.strip_prefix('_') else {
        return source.to_owned();
    };
    let mut out = String::new();
    for c in body.chars() {
        match c {
            'X' | 'x' | 'Z' | 'z' | 'N' | 'n' => out.push('5'),
            '.' => out.push_str("12"),
            '!' | '-' | '[' | ']' => {}
            c => out.push(c),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((pattern, user)) = text.split_once('\0') {
        if let Ok(p) = Pattern::parse(pattern) {
            let _ = p.matches(user);
            assert_eq!(p.as_str(), pattern);
            if p.is_exact() {
                assert!(p.matches(pattern));
            }
        }
        return;
    }
    let lines = text.split('\n').count();
    let plan = match Dialplan::parse(text, "fuzz.toml") {
        Ok(plan) => plan,
        Err(DialplanError::Invalid { line, .. }) => {
            if let Some(line) = line {
                assert!((1..=lines).contains(&line), "line {line} of {lines}");
            }
            return;
        }
        Err(e) => panic!("unexpected error: {e}"),
    };
    let mut probes: Vec<String> = ["8500", "", "*86", "%2A86", "1", "12345678901234567890"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for r in plan.routes() {
        probes.push(r.pattern.as_str().to_owned());
        probes.push(example(r.pattern.as_str()));
    }
    for probe in &probes {
        let found = plan.route(probe);
        let any = plan.routes().iter().any(|r| r.pattern.matches(probe));
        assert_eq!(found.is_some(), any, "{probe:?}");
        if let Some(r) = found {
            assert!(r.pattern.matches(probe));
            let exact = plan
                .routes()
                .iter()
                .any(|r| r.pattern.is_exact() && r.pattern.matches(probe));
            assert!(
                !exact || r.pattern.is_exact(),
                "{probe:?}: a pattern beat an exact match"
            );
        }
    }
    for r in plan.routes() {
        if r.pattern.is_exact() {
            let found = plan
                .route(r.pattern.as_str())
                .expect("an exact route is found");
            assert!(std::ptr::eq(found, r), "{:?}", r.pattern.as_str());
        }
    }
});
