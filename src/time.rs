//! Wall-clock timestamps and human durations.
//!
//! The store records when things happened (logins, locks, expiries) as whole seconds since the
//! Unix epoch, UTC. Nothing in this module reads the clock except [`Timestamp::now`], which only
//! the shell calls: the store, the policy and the protocol layers take `now` as an argument so
//! tests can run on a fake clock.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

/// A point in time: whole seconds since 1970-01-01T00:00:00Z.
///
/// Displayed and serialised as RFC 3339 in UTC (`2026-11-24T08:51:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `secs` seconds after the Unix epoch.
    pub const fn from_unix(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Reads the system clock. Only the shell calls this; everything below takes `now`.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`], truncating to whole seconds.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }

    /// `self + d`, saturating at the end of representable time.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// `self - d`, saturating at the start of representable time.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(secs))
    }

    /// The civil UTC date and time: (year, month, day, hour, minute, second).
    fn civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // All of these are small and non-negative by construction.
        let small = |v: i64| u32::try_from(v).unwrap_or(0);
        (
            year,
            small(month),
            small(day),
            small(secs / 3_600),
            small(secs % 3_600 / 60),
            small(secs % 60),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.civil();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 90s, 20m, 72h, 7d, 2w, 1h30m)")]
pub struct DurationError {
    /// What was given.
    input: String,
    /// What is wrong with it.
    reason: &'static str,
}

/// Parses a human duration such as `20m`, `72h`, `7d`, `1h30m` or `90s`.
///
/// Units: `s`, `m`, `h`, `d`, `w`. A bare number is seconds. The result must be positive.
///
/// # Errors
/// [`DurationError`] when the text is empty, has an unknown unit, overflows or is zero.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err("empty"));
    }
    if text.contains(char::is_whitespace) {
        return Err(err("no spaces inside a duration (1h30m, not 1h 30m)"));
    }
    if text.starts_with('-') {
        return Err(err("must be greater than zero"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| err("too large"))?;
        return positive(secs).ok_or_else(|| err("must be greater than zero"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err("too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let scale = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            "" => {
                return Err(err(match rest.chars().next() {
                    Some('.' | ',') => "whole numbers only (90m, not 1.5h)",
                    _ => "a number without a unit must stand alone",
                }));
            }
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
    }
    positive(total).ok_or_else(|| err("must be greater than zero"))
}

fn positive(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Formats a duration compactly in the units [`parse_duration`] reads (`72h`, `1h30m`, `45s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        // Days only when the value is a whole number of them: 26h reads better than 1d2h.
        if unit == "d" && !secs.is_multiple_of(86_400) {
            continue;
        }
        if secs >= scale {
            out.push_str(&format!("{}{unit}", secs / scale));
            secs %= scale;
        }
    }
    out
}

/// A duration setting: a string for [`parse_duration`], or a bare integer meaning seconds
/// (`first_digit_timeout = 5`, `shutdown_grace = 5`), which is what an operator who leaves
/// off the quotes means. The dialplan and the config file read durations so.
pub(crate) struct DurationText(pub(crate) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Unquoted: an error message shows no quoted text (it could be a secret
                // written under the wrong key), which would blank the examples.
                f.write_str("a duration such as 5s, 10m or 1h30m, or a whole number of seconds")
            }
            fn visit_str<E>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_rfc3339_utc() {
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::from_unix(951_782_400).to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix(1_795_423_860).to_string(),
            "2026-11-23T08:51:00Z"
        );
        assert_eq!(Timestamp::from_unix(-1).to_string(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parses_durations() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("20m"), Ok(1_200));
        assert_eq!(secs("72h"), Ok(259_200));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs(" 45s "), Ok(45));
        for bad in [
            "",
            "0",
            "0m",
            "m",
            "10x",
            "1h30",
            "-5m",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        // Each refusal says what is wrong with what was given.
        for (bad, says) in [
            ("1.5h", "whole numbers only"),
            ("0,5d", "whole numbers only"),
            ("2 h", "no spaces inside a duration"),
            ("1h 30m", "no spaces inside a duration"),
            ("1h30", "a number without a unit must stand alone"),
            ("10x", "unknown unit"),
            ("-5s", "must be greater than zero"),
            ("-1", "must be greater than zero"),
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for s in ["20m", "72h", "1h30m", "45s", "7d", "1d1h"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(259_200)), "3d");
        assert_eq!(format_duration(Duration::from_secs(1_800)), "30m");
        assert_eq!(format_duration(Duration::from_secs(93_600)), "26h");
    }
}
