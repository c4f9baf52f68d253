//! Any SIP INFO body through `dtmf_info::parse`, under either DTMF content type or another.
//!
//! Invariants beyond "no crash": only the two DTMF types and UTF-8 bodies up to 1024 octets
//! yield a key; the key is a SIP INFO one with a duration of at most 60 s; an
//! `application/dtmf` body is the key alone (its character or its event code 10-15); an
//! `application/dtmf-relay` key is named on a `Signal=` line; LF and CRLF line ends read
//! alike.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vportal::media::digit::{Digit, DtmfMethod};
use vportal::media::dtmf_info;

const TYPES: [&str; 3] = ["application/dtmf-relay", "application/dtmf", "text/plain"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(selector) % TYPES.len()];
    let Some(event) = dtmf_info::parse(content_type, body) else {
        return;
    };
    assert!(content_type.starts_with("application/dtmf"));
    assert!(body.len() <= 1024);
    let text = std::str::from_utf8(body).expect("a key from a body that is not UTF-8");
    assert_eq!(event.method, DtmfMethod::SipInfo);
    assert!(event.duration.is_none_or(|d| d <= Duration::from_secs(60)));
    let named = |value: &str| {
        Digit::from_char(value.chars().next().unwrap_or(' ')) == Some(event.digit)
            && value.chars().count() == 1
            || value
                .parse::<u8>()
                .ok()
                .filter(|n| (10..=15).contains(n))
                .and_then(Digit::from_event)
                == Some(event.digit)
    };
    if content_type == "application/dtmf" {
        assert!(named(text.trim()), "{text:?} is not the key alone");
        assert!(event.duration.is_none());
    } else {
        let signalled = text.lines().any(|line| {
            line.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("signal") && named(value.trim())
            })
        });
        assert!(signalled, "{text:?} names no such key");
        // CRLF instead of LF: the same key and duration.
        if !text.contains('\r') {
            let crlf = text.replace('\n', "\r\n");
            if crlf.len() <= 1024 {
                assert_eq!(dtmf_info::parse(content_type, crlf.as_bytes()), Some(event));
            }
        }
    }
});
