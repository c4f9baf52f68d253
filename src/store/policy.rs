//! The passcode policy: which PINs are acceptable, how failures lock a mailbox, how long a
//! temporary passcode lives.
//!
//! Pure and sans-IO: every function takes what it needs (the candidate, the extension, whether
//! the candidate matched the history, the current time, a random source) and returns a
//! decision. The store does the hashing and the SQL around it.
//!
//! Each rule a passcode can break is a [`Violation`] with a stable code (`too_short`,
//! `common`, …): the code is what the admin API returns and what the call flow turns into a
//! spoken reason, so codes never change meaning.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use rand::TryCryptoRng;
use serde::{Deserialize, Serialize};

use super::types::{Extension, Passcode};
use crate::time::Timestamp;

/// Longest PIN a policy may allow. DTMF entry beyond this is not a PIN any more.
pub const MAX_PIN_LEN: usize = 32;

/// How many earlier passcodes the store keeps per mailbox, and so the largest usable
/// `history_depth` (Windows' "enforce password history" tops out at the same number).
pub const MAX_HISTORY_DEPTH: u32 = 24;

/// 365 days, the longest a temporary passcode or a lock lasts.
const YEAR_SECONDS: u64 = 365 * 24 * 3_600;

/// How long a temporary passcode works: whole seconds, 1 s to 365 days, for the policy's
/// default and for every reset, from the CLI or the API alike. Made only through
/// [`Ttl::from_secs`] or [`Ttl::new`], so a lifetime the store is given is always one of
/// those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(Duration);

/// A lifetime [`Ttl`] does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {YEAR_SECONDS} seconds (1s to 365d)")]
pub struct TtlOutOfRange;

impl Ttl {
    /// The shortest, one second.
    pub const MIN: Self = Self(Duration::from_secs(1));
    /// The longest, 365 days.
    pub const MAX: Self = Self(Duration::from_secs(YEAR_SECONDS));

    /// A lifetime of `seconds`.
    ///
    /// # Errors
    /// [`TtlOutOfRange`] outside 1 s to 365 days.
    pub fn from_secs(seconds: u64) -> Result<Self, TtlOutOfRange> {
        Self::new(Duration::from_secs(seconds))
    }

    /// A lifetime of `duration`.
    ///
    /// # Errors
    /// [`TtlOutOfRange`] outside 1 s to 365 days, or with a fraction of a second (the store
    /// keeps whole seconds).
    pub fn new(duration: Duration) -> Result<Self, TtlOutOfRange> {
        if duration.subsec_nanos() != 0 || !(Self::MIN.0..=Self::MAX.0).contains(&duration) {
            return Err(TtlOutOfRange);
        }
        Ok(Self(duration))
    }

    /// The lifetime.
    pub fn get(self) -> Duration {
        self.0
    }

    /// `seconds` brought within the range (a policy stored by a build that allowed more).
    fn clamped(seconds: u64) -> Self {
        Self(Duration::from_secs(
            seconds.clamp(Self::MIN.0.as_secs(), Self::MAX.0.as_secs()),
        ))
    }
}

/// The blocklist of common PINs, compiled in. Its header says where each group comes from.
const COMMON_PINS_FILE: &str = include_str!("common_pins.txt");

static COMMON_PINS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON_PINS_FILE
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .collect()
});

/// Whether `pin` is on the compiled-in list of common PINs.
pub fn is_common(pin: &str) -> bool {
    COMMON_PINS.contains(pin)
}

/// A rule a candidate passcode breaks. The `snake_case` code is stable: it is an API field
/// and the key of a spoken reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Violation {
    /// Contains something other than the digits 0-9.
    NotDigits,
    /// Shorter than `min_length`.
    TooShort,
    /// Longer than `max_length`.
    TooLong,
    /// The mailbox's own extension.
    EqualsExtension,
    /// The extension backwards.
    ReversedExtension,
    /// One digit repeated (`0000`, `777777`).
    RepeatedDigits,
    /// A straight ascending or descending run (`1234`, `9876`, `7890`).
    Sequential,
    /// On the list of common PINs (dates, years, keypad shapes, published top PINs).
    Common,
    /// The passcode in force now.
    SameAsCurrent,
    /// One of the last `history_depth` passcodes.
    RecentlyUsed,
}

impl Violation {
    /// Every violation, in the order checks report them.
    pub const ALL: [Self; 10] = [
        Self::NotDigits,
        Self::TooShort,
        Self::TooLong,
        Self::EqualsExtension,
        Self::ReversedExtension,
        Self::RepeatedDigits,
        Self::Sequential,
        Self::Common,
        Self::SameAsCurrent,
        Self::RecentlyUsed,
    ];

    /// The stable code, e.g. `too_short`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NotDigits => "not_digits",
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::EqualsExtension => "equals_extension",
            Self::ReversedExtension => "reversed_extension",
            Self::RepeatedDigits => "repeated_digits",
            Self::Sequential => "sequential",
            Self::Common => "common",
            Self::SameAsCurrent => "same_as_current",
            Self::RecentlyUsed => "recently_used",
        }
    }

    /// The violation with this code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.code() == code)
    }

    /// A sentence for people (CLI output, API messages).
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NotDigits => "a passcode may contain only the digits 0-9",
            Self::TooShort => "the passcode is too short",
            Self::TooLong => "the passcode is too long",
            Self::EqualsExtension => "the passcode may not be the mailbox number",
            Self::ReversedExtension => "the passcode may not be the mailbox number reversed",
            Self::RepeatedDigits => "the passcode may not be one digit repeated",
            Self::Sequential => "the passcode may not be a run of consecutive digits",
            Self::Common => "the passcode is too common and easy to guess",
            Self::SameAsCurrent => "the new passcode must differ from the current one",
            Self::RecentlyUsed => "the passcode was used recently",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The violations of one candidate, in check order. Empty means acceptable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// No rule broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations, first-reported first: the call flow speaks the first one.
    pub fn as_slice(&self) -> &[Violation] {
        &self.0
    }

    /// Whether `v` is among them.
    pub fn contains(&self, v: Violation) -> bool {
        self.0.contains(&v)
    }

    fn push(&mut self, v: Violation) {
        self.0.push(v);
    }
}

impl FromIterator<Violation> for Violations {
    fn from_iter<I: IntoIterator<Item = Violation>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(v.code())?;
        }
        Ok(())
    }
}

/// What the store found when it compared a candidate with the mailbox's earlier passcodes
/// (argon2 comparisons, done outside this pure module).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryMatch {
    /// The candidate is the passcode in force now.
    pub current: bool,
    /// The candidate is one of the last `history_depth` chosen passcodes.
    pub recent: bool,
}

/// The active passcode policy. Every rule can be switched or tuned; the defaults are those of
/// the product contract. Stored in the database so the CLI and every server node agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Shortest acceptable passcode (`too_short`). Default 4.
    pub min_length: usize,
    /// Longest acceptable passcode (`too_long`). Default 10.
    pub max_length: usize,
    /// Refuse the mailbox's own extension (`equals_extension`).
    pub reject_extension: bool,
    /// Refuse the extension reversed (`reversed_extension`).
    pub reject_reversed_extension: bool,
    /// Refuse one digit repeated (`repeated_digits`).
    pub reject_repeated_digits: bool,
    /// Refuse straight runs such as 1234, 9876, 7890 (`sequential`).
    pub reject_sequential: bool,
    /// Refuse PINs on the common-PIN blocklist (`common`).
    pub reject_common: bool,
    /// Refuse the passcode in force now when changing it (`same_as_current`).
    pub reject_current: bool,
    /// Refuse the last N chosen passcodes (`recently_used`); 0 turns the rule off.
    pub history_depth: u32,
    /// Length of generated passcodes, `min_length` to `max_length`. Default 6.
    pub generated_length: usize,
    /// How long a temporary passcode works, in seconds, unless a reset says otherwise.
    /// Default 72 hours.
    pub temporary_ttl_seconds: u64,
    /// How failed logins lock a mailbox.
    pub lockout: Lockout,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_length: 4,
            max_length: 10,
            reject_extension: true,
            reject_reversed_extension: true,
            reject_repeated_digits: true,
            reject_sequential: true,
            reject_common: true,
            reject_current: true,
            history_depth: 5,
            generated_length: 6,
            temporary_ttl_seconds: 72 * 3_600,
            lockout: Lockout::default(),
        }
    }
}

/// A policy setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy setting {key}: {reason}")]
pub struct PolicyError {
    /// The setting, e.g. `min_length` or `lockout.multiplier`.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Policy {
    /// Checks that the settings make sense together, and that passcodes can be generated
    /// under them: what a policy must pass to be set.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first setting at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_settings()?;
        if self.reject_repeated_digits && self.generated_length < 2 {
            // Every one-digit passcode is "one digit repeated": none could be generated.
            return Err(PolicyError {
                key: "generated_length",
                reason: "must be at least 2 while reject_repeated_digits is on".to_owned(),
            });
        }
        Ok(())
    }

    /// Checks that each setting is in range and the lengths fit together: what a stored
    /// policy must pass to be used. One set by an older build that cannot generate a
    /// passcode still loads (logins go on, and it can be mended); generating then fails
    /// with [`GenerateError::Impossible`].
    ///
    /// # Errors
    /// [`PolicyError`] naming the first setting out of range.
    pub(crate) fn validate_settings(&self) -> Result<(), PolicyError> {
        let err = |key, reason: String| Err(PolicyError { key, reason });
        if !(1..=MAX_PIN_LEN).contains(&self.min_length) {
            return err("min_length", format!("must be 1 to {MAX_PIN_LEN}"));
        }
        if self.max_length > MAX_PIN_LEN {
            return err("max_length", format!("must be 1 to {MAX_PIN_LEN}"));
        }
        if self.min_length > self.max_length {
            return err(
                "min_length",
                format!("must not be more than max_length ({})", self.max_length),
            );
        }
        if self.history_depth > MAX_HISTORY_DEPTH {
            return err("history_depth", format!("must be 0 to {MAX_HISTORY_DEPTH}"));
        }
        if !(self.min_length..=self.max_length).contains(&self.generated_length) {
            return err(
                "generated_length",
                format!(
                    "must be min_length ({}) to max_length ({})",
                    self.min_length, self.max_length
                ),
            );
        }
        if let Err(e) = Ttl::from_secs(self.temporary_ttl_seconds) {
            return err("temporary_ttl_seconds", e.to_string());
        }
        self.lockout.validate()
    }

    /// What differs from `before`, for the audit trail: `min_length 4 -> 6, lockout.max_failures
    /// 5 -> 3` (dotted names as `vportal policy set` takes them), or `no change`.
    pub fn changes_from(&self, before: &Self) -> String {
        let (old, new) = (before.settings(), self.settings());
        let changed: Vec<String> = new
            .iter()
            .zip(&old)
            .filter(|(n, o)| n.1 != o.1)
            .map(|((key, to), (_, from))| format!("{key} {from} -> {to}"))
            .collect();
        if changed.is_empty() {
            "no change".to_owned()
        } else {
            changed.join(", ")
        }
    }

    /// Every setting as `(dotted name, value)`, in a fixed order.
    fn settings(&self) -> Vec<(String, String)> {
        fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
            for (key, value) in table {
                let name = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(inner) => flatten(&format!("{name}."), inner, out),
                    other => out.push((name, other.to_string())),
                }
            }
        }
        let mut out = Vec::new();
        if let Ok(table) = toml::Table::try_from(self) {
            flatten("", &table, &mut out);
        }
        out
    }

    /// The default lifetime of a temporary passcode (brought within [`Ttl`]'s range, which
    /// [`Policy::validate`] holds it to).
    pub fn temporary_ttl(&self) -> Ttl {
        Ttl::clamped(self.temporary_ttl_seconds)
    }

    /// The rules that need only the candidate and the extension, in report order.
    ///
    /// Content rules (runs, repeats, blocklist) apply only to all-digit candidates.
    pub fn check_rules(&self, extension: &Extension, candidate: &Passcode) -> Violations {
        self.check(extension, candidate, HistoryMatch::default())
    }

    /// Every rule, given what the store found in the mailbox's history.
    pub fn check(
        &self,
        extension: &Extension,
        candidate: &Passcode,
        history: HistoryMatch,
    ) -> Violations {
        let pin = candidate.expose();
        let mut out = Violations::default();
        // Nothing keyed is too short, not "not digits": that is what a caller who pressed
        // `#` alone needs to hear.
        if !pin.bytes().all(|b| b.is_ascii_digit()) {
            out.push(Violation::NotDigits);
        }
        let digits = !pin.is_empty() && pin.bytes().all(|b| b.is_ascii_digit());
        // Characters, not bytes: a non-digit passcode's length is still reported sensibly.
        let len = pin.chars().count();
        if len < self.min_length {
            out.push(Violation::TooShort);
        }
        if len > self.max_length {
            out.push(Violation::TooLong);
        }
        if digits {
            let ext = extension.as_str();
            let equals = pin == ext;
            if self.reject_extension && equals {
                out.push(Violation::EqualsExtension);
            }
            // A palindromic extension reversed is the extension itself: report it once.
            if self.reject_reversed_extension && !equals && pin.bytes().rev().eq(ext.bytes()) {
                out.push(Violation::ReversedExtension);
            }
            let repeated = pin.bytes().all(|b| b == pin.as_bytes()[0]);
            if self.reject_repeated_digits && repeated {
                out.push(Violation::RepeatedDigits);
            }
            if self.reject_sequential && !repeated && is_sequential(pin) {
                out.push(Violation::Sequential);
            }
            if self.reject_common && is_common(pin) {
                out.push(Violation::Common);
            }
        }
        if self.reject_current && history.current {
            out.push(Violation::SameAsCurrent);
        } else if self.history_depth > 0 && history.recent {
            // The current passcode is also the newest history entry; one reason is enough.
            out.push(Violation::RecentlyUsed);
        }
        out
    }

    /// The length generated passcodes get: `generated_length` kept within the length rules.
    pub fn generated_len(&self) -> usize {
        self.generated_length
            .clamp(self.min_length, self.max_length.max(self.min_length))
    }

    /// Generates a passcode that passes [`Policy::check_rules`] for `extension`.
    ///
    /// Digits are drawn uniformly (rejection sampling) from `rng`, which must be a
    /// cryptographic RNG: the store passes the operating system's.
    ///
    /// # Errors
    /// The RNG's error, or [`GenerateError::Impossible`] if no acceptable passcode turned up
    /// in 10,000 draws (a policy that refuses nearly everything).
    pub fn generate<R: TryCryptoRng>(
        &self,
        extension: &Extension,
        rng: &mut R,
    ) -> Result<Passcode, GenerateError> {
        let len = self.generated_len();
        let mut bytes = [0_u8; 64];
        for _ in 0..10_000 {
            let mut pin = String::with_capacity(len);
            while pin.len() < len {
                rng.try_fill_bytes(&mut bytes)
                    .map_err(|_| GenerateError::Rng)?;
                // 250 is the largest multiple of 10 not above 256: no modulo bias.
                for b in bytes.iter().filter(|&&b| b < 250).take(len - pin.len()) {
                    pin.push(char::from(b'0' + b % 10));
                }
            }
            bytes.fill(0);
            // The length bound holds by construction (len <= MAX_PIN_LEN).
            let Ok(candidate) = Passcode::new(pin) else {
                continue;
            };
            if self.check_rules(extension, &candidate).is_empty() {
                return Ok(candidate);
            }
        }
        Err(GenerateError::Impossible)
    }
}

/// A passcode could not be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The policy refused every candidate tried.
    #[error("the policy refuses nearly every passcode of the generated length")]
    Impossible,
}

/// Whether the digits form one straight run, ascending or descending, wrapping 9→0 and 0→9
/// as the keypad's bottom row does (`1234`, `9876`, `7890`, `0987`).
fn is_sequential(pin: &str) -> bool {
    let d = pin.as_bytes();
    if d.len() < 2 {
        return false;
    }
    let step = |a: u8, b: u8| (i16::from(b) - i16::from(a)).rem_euclid(10);
    let first = step(d[0], d[1]);
    (first == 1 || first == 9) && d.windows(2).all(|w| step(w[0], w[1]) == first)
}

/// The longest a lock lasts, whatever the doubling (365 days): an end date stays a
/// date, and a longer lock is a permanent one in all but name.
pub const MAX_LOCK_SECONDS: u64 = YEAR_SECONDS;

/// How consecutive failed logins lock a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lockout {
    /// Consecutive failures that lock the mailbox; 0 never locks. Default 5.
    pub max_failures: u32,
    /// How long the first lock lasts, in seconds. Default 30 minutes.
    pub duration_seconds: u64,
    /// Each further lock lasts this many times the previous one. Default 2 (doubling).
    pub multiplier: u32,
    /// The lock that becomes permanent, lifted only by an admin: default 5 (30 min, 60,
    /// 120, 240, then permanent: DESIGN's "permanent after the 4th"). 0 never locks
    /// permanently.
    pub permanent_at: u32,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: 5,
            duration_seconds: 30 * 60,
            multiplier: 2,
            permanent_at: 5,
        }
    }
}

/// A mailbox lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lock {
    /// Locked until this time.
    Until(Timestamp),
    /// Locked until an admin unlocks it.
    Permanent,
}

impl Lock {
    /// Whether the lock still holds at `now`.
    pub fn holds_at(self, now: Timestamp) -> bool {
        match self {
            Self::Until(t) => now < t,
            Self::Permanent => true,
        }
    }
}

/// A mailbox's failure state after a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// Consecutive failures now counted (kept at `max_failures` when this failure locks).
    pub failed_attempts: u32,
    /// Locks imposed since the last successful login or unlock.
    pub lockouts: u32,
    /// The lock this failure imposed, if it did.
    pub lock: Option<Lock>,
    /// Failures left before the next lock (0 when this failure locked or locking is off).
    pub remaining: u32,
}

impl Lockout {
    fn validate(&self) -> Result<(), PolicyError> {
        let err = |key, reason: &str| {
            Err(PolicyError {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.max_failures > 0 && self.duration_seconds == 0 {
            return err("lockout.duration_seconds", "must be greater than zero");
        }
        if self.duration_seconds > MAX_LOCK_SECONDS {
            return err(
                "lockout.duration_seconds",
                &format!(
                    "must be at most {MAX_LOCK_SECONDS} (365d; longer is what permanent_at is for)"
                ),
            );
        }
        if self.multiplier == 0 {
            return err("lockout.multiplier", "must be at least 1");
        }
        Ok(())
    }

    /// The state after one more failed login, given the state before it: the failures
    /// counted towards a lock and the locks so far.
    ///
    /// Callers must not call this while a lock holds: failures are not counted then. The
    /// failure that locks leaves the count at [`Self::max_failures`], so a locked mailbox
    /// shows the failures that locked it; once the lock has ended, the count before the next
    /// failure is 0 (see `UserRow::counted_failures`).
    pub fn after_failure(
        &self,
        failed_attempts: u32,
        lockouts: u32,
        now: Timestamp,
    ) -> AfterFailure {
        let failed = failed_attempts.saturating_add(1);
        if self.max_failures == 0 {
            return AfterFailure {
                failed_attempts: failed,
                lockouts,
                lock: None,
                remaining: 0,
            };
        }
        if failed < self.max_failures {
            return AfterFailure {
                failed_attempts: failed,
                lockouts,
                lock: None,
                remaining: self.max_failures - failed,
            };
        }
        let lockouts = lockouts.saturating_add(1);
        let lock = if self.permanent_at != 0 && lockouts >= self.permanent_at {
            Lock::Permanent
        } else {
            Lock::Until(now.saturating_add(self.lock_duration(lockouts)))
        };
        AfterFailure {
            failed_attempts: failed,
            lockouts,
            lock: Some(lock),
            remaining: 0,
        }
    }

    /// How long the `nth` lock (1-based) lasts: the base duration times multiplier^(n-1),
    /// at most [`MAX_LOCK_SECONDS`].
    pub fn lock_duration(&self, nth: u32) -> Duration {
        let factor = u64::from(self.multiplier).saturating_pow(nth.saturating_sub(1));
        Duration::from_secs(
            self.duration_seconds
                .saturating_mul(factor)
                .min(MAX_LOCK_SECONDS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ext(s: &str) -> Extension {
        Extension::parse(s).unwrap()
    }

    fn pin(s: &str) -> Passcode {
        Passcode::new(s.to_owned()).unwrap()
    }

    /// A lifetime is whole seconds from 1 s to 365 days, however it is given; a stored
    /// policy's default beyond that is brought within it.
    #[test]
    fn ttl_bounds() {
        let year = 365 * 24 * 3_600;
        assert_eq!(Ttl::from_secs(0), Err(TtlOutOfRange));
        assert_eq!(Ttl::from_secs(1), Ok(Ttl::MIN));
        assert_eq!(Ttl::from_secs(year), Ok(Ttl::MAX));
        assert_eq!(Ttl::from_secs(year + 1), Err(TtlOutOfRange));
        assert_eq!(Ttl::new(Duration::from_millis(1_500)), Err(TtlOutOfRange));
        assert_eq!(
            TtlOutOfRange.to_string(),
            "must be 1 to 31536000 seconds (1s to 365d)"
        );
        let policy = Policy {
            temporary_ttl_seconds: year * 2,
            ..Policy::default()
        };
        assert_eq!(policy.temporary_ttl(), Ttl::MAX);
        assert!(policy.validate().is_err());
    }

    fn codes(policy: &Policy, extension: &str, candidate: &str) -> Vec<&'static str> {
        policy
            .check_rules(&ext(extension), &pin(candidate))
            .as_slice()
            .iter()
            .map(|v| v.code())
            .collect()
    }

    #[test]
    fn default_rules_table() {
        let p = Policy::default();
        let table: &[(&str, &str, &[&str])] = &[
            // Accepted.
            ("1001", "4863", &[]),
            ("1001", "582039", &[]),
            ("1001", "5820193746", &[]),
            ("1001", "4826", &[]),
            // Characters and length.
            ("1001", "12a4", &["not_digits"]),
            ("1001", "", &["too_short"]),
            ("1001", "48 63", &["not_digits"]),
            ("1001", "486", &["too_short"]),
            ("1001", "48630193746", &["too_long"]),
            ("1001", "٤٨٦٣", &["not_digits"]),
            // The extension, forwards and backwards.
            ("4863", "4863", &["equals_extension"]),
            ("4863", "3684", &["reversed_extension"]),
            ("48684", "48684", &["equals_extension"]),
            ("583920", "029385", &["reversed_extension"]),
            // Repeats and runs (these are also on the blocklist where 4 digits long).
            ("1001", "7777", &["repeated_digits", "common"]),
            ("1001", "55555", &["repeated_digits"]),
            ("1001", "1234", &["sequential", "common"]),
            ("1001", "98765", &["sequential"]),
            ("1001", "0123", &["sequential", "common"]),
            ("1001", "7890123", &["sequential"]),
            ("1001", "3210987", &["sequential"]),
            ("1001", "13579", &[]),
            ("1001", "12345678", &["sequential"]),
            // The blocklist: published top PINs, dates, years, keypad lines, pairs.
            ("1001", "6969", &["common"]),
            ("1001", "1004", &["common"]),
            ("1001", "2580", &["common"]),
            ("1001", "0229", &["common"]),
            ("1001", "3112", &["common"]),
            ("1001", "1225", &["common"]),
            ("1001", "1987", &["common"]),
            ("1001", "2039", &["common"]),
            ("1001", "4545", &["common"]),
            ("1001", "3344", &["common"]),
            ("1001", "123123", &["common"]),
            ("1001", "159753", &["common"]),
            ("1001", "2040", &[]),
            ("1001", "1899", &[]),
            ("1001", "3232", &["common"]),
        ];
        for (extension, candidate, want) in table {
            assert_eq!(
                codes(&p, extension, candidate),
                *want,
                "extension {extension} candidate {candidate}"
            );
        }
    }

    #[test]
    fn each_rule_can_be_switched_off() {
        let off = Policy {
            min_length: 2,
            max_length: 20,
            reject_extension: false,
            reject_reversed_extension: false,
            reject_repeated_digits: false,
            reject_sequential: false,
            reject_common: false,
            reject_current: false,
            history_depth: 0,
            ..Policy::default()
        };
        for candidate in ["4863", "3684", "7777", "1234", "6969", "12", "48630193746"] {
            assert_eq!(
                codes(&off, "4863", candidate),
                Vec::<&str>::new(),
                "{candidate}"
            );
        }
        let all = HistoryMatch {
            current: true,
            recent: true,
        };
        assert!(off.check(&ext("1"), &pin("4826"), all).is_empty());
    }

    #[test]
    fn history_rules_report_one_reason() {
        let p = Policy::default();
        let e = ext("1001");
        let check = |current, recent| {
            p.check(&e, &pin("4826"), HistoryMatch { current, recent })
                .to_string()
        };
        assert_eq!(check(false, false), "");
        assert_eq!(check(true, false), "same_as_current");
        assert_eq!(check(false, true), "recently_used");
        assert_eq!(check(true, true), "same_as_current");
        let no_current = Policy {
            reject_current: false,
            ..Policy::default()
        };
        let v = no_current.check(
            &e,
            &pin("4826"),
            HistoryMatch {
                current: true,
                recent: true,
            },
        );
        assert_eq!(v.to_string(), "recently_used");
    }

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = HashSet::new();
        for v in Violation::ALL {
            assert_eq!(Violation::from_code(v.code()), Some(v));
            assert!(seen.insert(v.code()));
            assert_eq!(serde_json::to_value(v).unwrap(), v.code());
        }
        assert_eq!(Violation::from_code("nope"), None);
    }

    #[test]
    fn blocklist_is_near_a_tenth_of_four_digit_pins() {
        let four = COMMON_PINS.iter().filter(|p| p.len() == 4).count();
        assert!((800..=1_200).contains(&four), "{four} four-digit PINs");
        assert!(
            COMMON_PINS
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        );
        for top in [
            "1234", "1111", "0000", "1212", "7777", "1004", "2000", "4444", "2222", "6969",
        ] {
            assert!(is_common(top), "{top}");
        }
    }

    #[test]
    fn lockout_progression_30_60_120_240_then_permanent() {
        let l = Lockout::default();
        let now = Timestamp::from_unix(1_000_000);
        let (mut failed, mut lockouts) = (0, 0);
        let mut locks = Vec::new();
        for _ in 0..5 {
            for i in 0..5 {
                let a = l.after_failure(failed, lockouts, now);
                (failed, lockouts) = (a.failed_attempts, a.lockouts);
                if i < 4 {
                    assert_eq!(a.lock, None);
                    assert_eq!(a.remaining, 4 - i);
                } else {
                    assert_eq!(a.remaining, 0);
                    assert_eq!(a.failed_attempts, 5);
                    locks.push(a.lock.unwrap());
                    // The lock ends; the next failure counts from the start.
                    failed = 0;
                }
            }
        }
        let minutes = |m: i64| Lock::Until(Timestamp::from_unix(1_000_000 + m * 60));
        assert_eq!(
            locks,
            [
                minutes(30),
                minutes(60),
                minutes(120),
                minutes(240),
                Lock::Permanent
            ]
        );
        assert!(Lock::Permanent.holds_at(Timestamp::from_unix(i64::MAX)));
        assert!(!minutes(30).holds_at(Timestamp::from_unix(1_000_000 + 1_800)));
        assert!(minutes(30).holds_at(Timestamp::from_unix(1_000_000 + 1_799)));
    }

    #[test]
    fn lockout_can_be_off_or_never_permanent() {
        let never = Lockout {
            max_failures: 0,
            ..Lockout::default()
        };
        let a = never.after_failure(1_000, 0, Timestamp::from_unix(0));
        assert_eq!((a.lock, a.failed_attempts), (None, 1_001));
        let forever_temporary = Lockout {
            permanent_at: 0,
            ..Lockout::default()
        };
        let a = forever_temporary.after_failure(4, 40, Timestamp::from_unix(0));
        assert!(matches!(a.lock, Some(Lock::Until(_))));
        // Doubling stops at a year rather than overflowing, so the end is still a date.
        assert_eq!(
            forever_temporary.lock_duration(15).as_secs(),
            30 * 60 * 16_384
        );
        assert_eq!(
            forever_temporary.lock_duration(16).as_secs(),
            MAX_LOCK_SECONDS
        );
        assert_eq!(
            forever_temporary.lock_duration(200).as_secs(),
            MAX_LOCK_SECONDS
        );
        let longest = Lockout {
            duration_seconds: MAX_LOCK_SECONDS,
            ..Lockout::default()
        };
        assert!(longest.validate().is_ok());
        let err = Lockout {
            duration_seconds: MAX_LOCK_SECONDS + 1,
            ..Lockout::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "lockout.duration_seconds");
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = |p: Policy| p.validate().unwrap_err().key;
        assert_eq!(
            bad(Policy {
                min_length: 0,
                ..Policy::default()
            }),
            "min_length"
        );
        assert_eq!(
            bad(Policy {
                max_length: 3,
                ..Policy::default()
            }),
            "min_length"
        );
        assert_eq!(
            bad(Policy {
                max_length: MAX_PIN_LEN + 1,
                ..Policy::default()
            }),
            "max_length"
        );
        for generated_length in [0, 3, 11] {
            assert_eq!(
                bad(Policy {
                    generated_length,
                    ..Policy::default()
                }),
                "generated_length"
            );
        }
        // Every one-digit passcode is one digit repeated: none could ever be generated.
        let one_digit = Policy {
            min_length: 1,
            generated_length: 1,
            ..Policy::default()
        };
        assert_eq!(bad(one_digit.clone()), "generated_length");
        let repeats_allowed = Policy {
            reject_repeated_digits: false,
            ..one_digit
        };
        assert!(repeats_allowed.validate().is_ok());
        let mut rng = StdRng::seed_from_u64(1);
        assert!(repeats_allowed.generate(&ext("1001"), &mut rng).is_ok());
        assert_eq!(
            bad(Policy {
                history_depth: 25,
                ..Policy::default()
            }),
            "history_depth"
        );
        assert_eq!(
            bad(Policy {
                temporary_ttl_seconds: 0,
                ..Policy::default()
            }),
            "temporary_ttl_seconds"
        );
        let lockout = Lockout {
            multiplier: 0,
            ..Lockout::default()
        };
        assert_eq!(
            bad(Policy {
                lockout,
                ..Policy::default()
            }),
            "lockout.multiplier"
        );
        assert!(Policy::default().validate().is_ok());
    }

    #[test]
    fn policy_serialises_as_toml_with_defaults_filled_in() {
        let text = toml::to_string(&Policy::default()).unwrap();
        assert_eq!(toml::from_str::<Policy>(&text).unwrap(), Policy::default());
        let partial: Policy =
            toml::from_str("min_length = 6\n[lockout]\nmax_failures = 3\n").unwrap();
        assert_eq!(partial.min_length, 6);
        assert_eq!(partial.lockout.max_failures, 3);
        assert_eq!(partial.lockout.permanent_at, 5);
        assert!(toml::from_str::<Policy>("min_lenght = 6\n").is_err());
    }

    #[test]
    fn generation_respects_length_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = Policy {
            min_length: 8,
            ..Policy::default()
        };
        assert_eq!(
            p.generate(&ext("1001"), &mut rng).unwrap().expose().len(),
            8
        );
        let impossible = Policy {
            min_length: 1,
            max_length: 1,
            generated_length: 1,
            ..Policy::default()
        };
        // Every 1-digit PIN is "one digit repeated".
        assert_eq!(
            impossible.generate(&ext("1"), &mut rng),
            Err(GenerateError::Impossible)
        );
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn generated_passcodes_always_pass(seed in any::<u64>(), extension in "[0-9]{1,15}", len in 4_usize..=10) {
            let p = Policy { generated_length: len, ..Policy::default() };
            let e = ext(&extension);
            let mut rng = StdRng::seed_from_u64(seed);
            let generated = p.generate(&e, &mut rng).unwrap();
            prop_assert_eq!(generated.expose().len(), len);
            prop_assert!(p.check_rules(&e, &generated).is_empty());
        }

        #[test]
        fn a_non_digit_always_fails_not_digits(prefix in "[0-9]{0,5}", bad in "[^0-9]", suffix in "[0-9]{0,5}") {
            let candidate = format!("{prefix}{bad}{suffix}");
            let v = Policy::default().check_rules(&ext("1001"), &pin(&candidate));
            prop_assert!(v.contains(Violation::NotDigits));
        }

        #[test]
        fn all_digit_candidates_never_fail_not_digits(candidate in "[0-9]{1,12}") {
            let v = Policy::default().check_rules(&ext("1001"), &pin(&candidate));
            prop_assert!(!v.contains(Violation::NotDigits));
            prop_assert_eq!(v.contains(Violation::TooShort), candidate.len() < 4);
            prop_assert_eq!(v.contains(Violation::TooLong), candidate.len() > 10);
        }

        #[test]
        fn the_extension_is_never_acceptable(extension in "[0-9]{4,10}") {
            let v = Policy::default().check_rules(&ext(&extension), &pin(&extension));
            prop_assert!(!v.is_empty());
        }
    }
}
