//! DTMF in SIP INFO bodies: `application/dtmf-relay` (`Signal=5` / `Duration=160`, as Cisco
//! and SIPp send it) and `application/dtmf` (the key alone). The SIP layer hands over the
//! content type and the body; anything malformed is ignored.

use std::time::Duration;

use super::digit::{Digit, DigitEvent, DtmfMethod};

/// Largest body looked at: a key and a duration need a few dozen octets.
const MAX_BODY: usize = 1_024;

/// Longest duration believed, in milliseconds.
const MAX_DURATION_MS: u64 = 60_000;

/// The key an INFO body carries, if it carries one. `content_type` is lower-case,
/// without parameters.
pub fn parse(content_type: &str, body: &[u8]) -> Option<DigitEvent> {
    if body.len() > MAX_BODY {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let (digit, duration) = match content_type {
        "application/dtmf-relay" => relay(text)?,
        "application/dtmf" => (key(text.trim())?, None),
        _ => return None,
    };
    Some(DigitEvent {
        digit,
        method: DtmfMethod::SipInfo,
        duration,
    })
}

/// `Signal=<key>` and an optional `Duration=<ms>`, one per line, keys in any case, spaces
/// around `=` allowed.
fn relay(text: &str) -> Option<(Digit, Option<Duration>)> {
    let mut digit = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("signal") {
            digit = Some(key(value)?);
        } else if name.eq_ignore_ascii_case("duration") {
            duration = value
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= MAX_DURATION_MS)
                .map(Duration::from_millis);
        }
    }
    Some((digit?, duration))
}

/// A key written as itself (`5`, `*`, `#`, `A`), or as its RFC 4733 event code
/// (`10` = `*`, `11` = `#`, `12`-`15` = A-D), which some gateways send.
fn key(value: &str) -> Option<Digit> {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::from_char(c),
        _ => value
            .parse::<u8>()
            .ok()
            .filter(|n| (10..=15).contains(n))
            .and_then(Digit::from_event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(ct: &str, body: &str) -> Option<char> {
        parse(ct, body.as_bytes()).map(|e| e.digit.reveal())
    }

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(
            heard("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        let e = parse("application/dtmf-relay", b"signal = #\nduration= 250").unwrap();
        assert_eq!(
            (e.digit, e.duration),
            (Digit::POUND, Some(Duration::from_millis(250)))
        );
        assert_eq!(heard("application/dtmf-relay", "Signal=*\r\n"), Some('*'));
        assert_eq!(
            heard("application/dtmf-relay", "Signal=11\r\nDuration=100\r\n"),
            Some('#')
        );
        assert_eq!(heard("application/dtmf-relay", "Signal=d\r\n"), Some('D'));
        assert_eq!(
            parse("application/dtmf-relay", b"Signal=1\r\nDuration=99999999")
                .unwrap()
                .duration,
            None
        );
    }

    #[test]
    fn dtmf_bodies() {
        assert_eq!(heard("application/dtmf", "7"), Some('7'));
        assert_eq!(heard("application/dtmf", " #\r\n"), Some('#'));
        assert_eq!(heard("application/dtmf", "10"), Some('*'));
    }

    #[test]
    fn malformed_bodies_are_ignored() {
        for (ct, body) in [
            ("application/dtmf-relay", ""),
            ("application/dtmf-relay", "Duration=160"),
            ("application/dtmf-relay", "Signal=12345"),
            ("application/dtmf-relay", "Signal=E"),
            ("application/dtmf-relay", "Signal=\r\n"),
            ("application/dtmf", "55"),
            ("application/dtmf", ""),
            ("text/plain", "Signal=5"),
        ] {
            assert_eq!(heard(ct, body), None, "{ct}: {body:?}");
        }
        assert!(parse("application/dtmf-relay", &[0xff, 0xfe, b'=']).is_none());
        assert!(parse("application/dtmf", &vec![b'5'; 2_000]).is_none());
    }
}
