//! Logging in and changing one's own passcode.
//!
//! Both follow the same shape: read the mailbox (short read), do the argon2 work with no
//! database lock held, then apply the result in one `IMMEDIATE` transaction that first checks
//! the mailbox's passcode is still the one the hash was checked against. If an admin reset or
//! another call changed it in the meantime, the work is redone (at most three times).
//!
//! A change is tied to its login: [`Store::verify_login`] hands out a [`Login`] naming the
//! passcode the caller proved, and [`Store::change_passcode`] refuses once that passcode has
//! been replaced (an admin reset, another call's change, the mailbox deleted and re-created).

use std::ops::RangeInclusive;

use rusqlite::Connection;

use super::audit::{self, Event};
use super::policy::{HistoryMatch, Lock, Policy, Violations};
use super::types::{Actor, Extension, Passcode};
use super::users::{UserRow, append_history};
use super::{Result, Store, StoreError, load_policy};
use crate::time::Timestamp;

/// How many times a login or change is redone when the mailbox changes under it.
const ATTEMPTS: usize = 3;

/// The result of a login attempt.
///
/// Callers must treat [`VerifyOutcome::Unknown`] exactly like [`VerifyOutcome::Wrong`]:
/// a caller may not learn which mailboxes exist. Both took the same argon2 work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The passcode is right. `must_change`: it is temporary and must be replaced now.
    Ok {
        /// The passcode is temporary: go straight to choosing a new one.
        must_change: bool,
    },
    /// The passcode is wrong; `remaining` more failures before the mailbox locks.
    Wrong {
        /// Failures left before a lock (0 when locking is off).
        remaining: u32,
    },
    /// The mailbox is locked (possibly by this very attempt); nothing was counted.
    Locked {
        /// When the lock ends.
        until: Lock,
    },
    /// The right temporary passcode, but it has expired: an admin must issue a new one.
    Expired,
    /// No such mailbox, or it has no passcode. Indistinguishable from `Wrong` to a caller.
    Unknown,
}

/// The result of a passcode change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Stored; the passcode is now permanent.
    Changed,
    /// Refused; the old passcode stays in force. With the lengths the policy allows, which a
    /// caller told "too short" or "too long" is told too.
    Rejected(Violations, RangeInclusive<usize>),
    /// Refused: the passcode the caller logged in with is no longer the mailbox's (an admin
    /// set another, another call changed it, or the mailbox was deleted). Whatever was set
    /// since stays in force.
    Superseded,
}

/// Proof of a successful login, from [`Store::verify_login`]: the mailbox and which passcode
/// the caller proved (its stored hash, whose salt is new at every set). Opaque; `Debug`
/// shows the mailbox only.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    extension: Extension,
    hash: String,
    lengths: RangeInclusive<usize>,
}

impl Login {
    /// The mailbox logged in to.
    pub fn extension(&self) -> &Extension {
        &self.extension
    }

    /// The passcode lengths the policy allowed when the login was checked: the caller is
    /// told them before being asked for a new passcode.
    pub fn lengths(&self) -> RangeInclusive<usize> {
        self.lengths.clone()
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("extension", &self.extension)
            .finish_non_exhaustive()
    }
}

/// What a mailbox looked like when its hash was checked.
struct Snapshot {
    row: UserRow,
    policy: Policy,
    history: Vec<String>,
}

fn snapshot(
    conn: &Connection,
    extension: &Extension,
    with_history: bool,
) -> Result<Option<Snapshot>> {
    let Some(row) = UserRow::load(conn, extension)? else {
        return Ok(None);
    };
    let policy = load_policy(conn)?;
    let history = if with_history && policy.history_depth > 0 {
        let mut stmt = conn.prepare_cached(
            "SELECT hash FROM passcode_history WHERE extension = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        stmt.query_map((extension.as_str(), policy.history_depth), |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?
    } else {
        Vec::new()
    };
    Ok(Some(Snapshot {
        row,
        policy,
        history,
    }))
}

/// Logs and counts a change's outcome.
fn count_change(extension: &Extension, outcome: ChangeOutcome) -> ChangeOutcome {
    tracing::debug!(%extension, ?outcome, "passcode change");
    let label = match outcome {
        ChangeOutcome::Changed => CHANGE_OUTCOMES[0],
        ChangeOutcome::Rejected(..) => CHANGE_OUTCOMES[1],
        ChangeOutcome::Superseded => CHANGE_OUTCOMES[2],
    };
    metrics::counter!("vportal_passcode_changes_total", "outcome" => label).increment(1);
    outcome
}

/// Whether the mailbox's passcode is still the one a decision was based on.
fn unchanged(conn: &Connection, before: &UserRow) -> Result<Option<UserRow>> {
    Ok(UserRow::load(conn, &before.extension)?
        .filter(|now| now.passcode_hash == before.passcode_hash))
}

impl Store {
    /// Checks a caller's passcode for a mailbox.
    ///
    /// `extension` is what the caller typed; anything that is not a known mailbox costs the
    /// same argon2 work as a real check and answers [`VerifyOutcome::Unknown`]. Failures count
    /// per mailbox across calls, and none is counted while the mailbox is locked. The
    /// `max_failures`-th consecutive failure locks it (30 min, doubling, permanent at the
    /// `permanent_at`-th lock by default) and answers [`VerifyOutcome::Locked`]. Success
    /// resets the counts. A temporary passcode works until its expiry and until changed;
    /// after expiry the right passcode answers [`VerifyOutcome::Expired`] (a wrong one still
    /// counts as a failure).
    ///
    /// Audits `login.success`, `login.failure`, `login.locked`, `login.expired` and
    /// `user.locked`, with the actor's source address and Call-ID.
    ///
    /// # Errors
    /// Database errors; [`StoreError::Hash`] when the stored hash is corrupt;
    /// [`StoreError::Contention`] if the mailbox changed under three attempts in a row.
    pub fn verify(
        &self,
        extension: &str,
        passcode: &Passcode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<VerifyOutcome> {
        self.verify_login(extension, passcode, actor, now)
            .map(|(outcome, _)| outcome)
    }

    /// [`Store::verify`], and on [`VerifyOutcome::Ok`] the [`Login`] that
    /// [`Store::change_passcode`] asks for.
    ///
    /// # Errors
    /// As [`Store::verify`].
    pub fn verify_login(
        &self,
        extension: &str,
        passcode: &Passcode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(VerifyOutcome, Option<Login>)> {
        let (outcome, counted, login) = self.check_login(extension, passcode, actor, now)?;
        metrics::counter!("vportal_logins_total", "outcome" => counted.label()).increment(1);
        // The failure that locked the mailbox, counted once the lock is stored (a commit
        // that failed is a store error, and no lock).
        if counted == Counted::Wrong && matches!(outcome, VerifyOutcome::Locked { .. }) {
            metrics::counter!("vportal_lockouts_total").increment(1);
        }
        Ok((outcome, login))
    }

    /// [`Store::verify_login`] without the counting: the outcome, what it counts as, and
    /// the login on success.
    fn check_login(
        &self,
        extension: &str,
        passcode: &Passcode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(VerifyOutcome, Counted, Option<Login>)> {
        let unknown = |existing| {
            self.unknown_mailbox(existing, passcode, actor, now)
                .map(|(outcome, counted)| (outcome, counted, None))
        };
        let Ok(extension) = Extension::parse(extension) else {
            return unknown(None);
        };
        for _ in 0..ATTEMPTS {
            let Some(snap) = self.read(|c| snapshot(c, &extension, false))? else {
                return unknown(None);
            };
            let row = snap.row;
            if let Some(until) = row.lock_at(now) {
                let (outcome, counted) =
                    self.write(|tx| refuse_locked(tx, &extension, until, actor, now))?;
                return Ok((outcome, counted, None));
            }
            let Some(hash) = &row.passcode_hash else {
                return unknown(Some(&extension));
            };
            let matched = self.hasher.verify(passcode, hash)?;
            // The right passcode, hashed as an earlier build did: hashed again now, stored
            // with the login, so that every hash comes to today's parameters in time.
            // (Should that fail, the login goes on with the hash as it was.)
            let upgraded = if matched && !row.expired_at(now) && !self.hasher.is_current(hash) {
                let made = self.hasher.hash(passcode);
                if let Err(e) = &made {
                    tracing::warn!(%extension, error = %e, "could not hash a passcode again");
                }
                made.ok()
            } else {
                None
            };
            let outcome = self.write(|tx| {
                let Some(current) = unchanged(tx, &row)? else {
                    return Ok(None);
                };
                // Another call may have locked the mailbox while we hashed.
                if let Some(until) = current.lock_at(now) {
                    return refuse_locked(tx, &extension, until, actor, now).map(Some);
                }
                if matched {
                    return succeed(tx, &current, upgraded.as_deref(), actor, now).map(Some);
                }
                let outcome = fail(tx, &current, &snap.policy, actor, now)?;
                // A wrong passcode, even the one that locks the mailbox.
                Ok(Some((outcome, Counted::Wrong)))
            })?;
            if let Some((outcome, counted)) = outcome {
                tracing::debug!(%extension, ?outcome, "login checked");
                let login = matches!(outcome, VerifyOutcome::Ok { .. }).then(|| {
                    if upgraded.is_some() {
                        tracing::info!(%extension, "passcode hashed again with the current parameters");
                    }
                    Login {
                        extension: extension.clone(),
                        hash: upgraded.unwrap_or_else(|| hash.clone()),
                        lengths: snap.policy.min_length..=snap.policy.max_length,
                    }
                });
                return Ok((outcome, counted, login));
            }
        }
        Err(StoreError::Contention(extension))
    }

    /// A login to a mailbox that does not exist (or has no passcode): the same argon2 work as
    /// a real one, then `Unknown`. The audit row names the mailbox only when it exists:
    /// callers sometimes type their passcode at the mailbox prompt.
    fn unknown_mailbox(
        &self,
        existing: Option<&Extension>,
        passcode: &Passcode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(VerifyOutcome, Counted)> {
        self.hasher.verify_dummy(passcode)?;
        let outcome = if existing.is_some() {
            "no_passcode"
        } else {
            "unknown_mailbox"
        };
        self.write(|tx| {
            audit::record(tx, now, Event::LoginFailure, existing, actor, outcome, None)
        })?;
        Ok((VerifyOutcome::Unknown, Counted::Unknown))
    }

    /// Audits `login.in_use`: `extension` logged in, but is in a call already and the
    /// route's session rule refused this second call.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_in_use(
        &self,
        extension: &Extension,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        self.record_alone(Event::LoginInUse, extension, actor, "refused", now)
    }

    /// Writes one audit row about `extension`, in a transaction of its own.
    fn record_alone(
        &self,
        event: Event,
        extension: &Extension,
        actor: &Actor,
        outcome: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.write(|tx| audit::record(tx, now, event, Some(extension), actor, outcome, None))
    }

    /// Records a change the owner of `extension` gave up on because the new passcode was
    /// keyed differently the second time: nothing changes but a `passcode.change_rejected`
    /// audit row with the outcome `mismatch` (the passcodes are not looked at, nor kept).
    ///
    /// # Errors
    /// Database errors.
    pub fn record_mismatch(
        &self,
        extension: &Extension,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        self.record_alone(
            Event::PasscodeChangeRejected,
            extension,
            actor,
            "mismatch",
            now,
        )?;
        tracing::debug!(%extension, "passcode change: mismatch");
        metrics::counter!("vportal_passcode_changes_total", "outcome" => CHANGE_OUTCOMES[3])
            .increment(1);
        Ok(())
    }

    /// Replaces a logged-in owner's passcode with `new`, after checking it against the policy
    /// including the current passcode and the last `history_depth` ones.
    ///
    /// On success the passcode becomes permanent (the temporary flag and expiry are cleared),
    /// the hash joins the history and `passcode.changed` is audited, all in one transaction.
    /// On refusal nothing changes but a `passcode.change_rejected` audit row listing the codes,
    /// or saying `superseded` when the passcode `login` proved has been replaced since (or
    /// the mailbox deleted): [`ChangeOutcome::Superseded`]. After a change `login` proves the
    /// new passcode, so the owner may change it again in the same call.
    ///
    /// # Errors
    /// Database and hash errors; [`StoreError::Contention`].
    pub fn change_passcode(
        &self,
        login: &mut Login,
        new: &Passcode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<ChangeOutcome> {
        let extension = &login.extension.clone();
        for _ in 0..ATTEMPTS {
            let snap = match self.read(|c| snapshot(c, extension, true))? {
                Some(snap) if snap.row.passcode_hash.as_ref() == Some(&login.hash) => snap,
                _ => {
                    self.record_alone(
                        Event::PasscodeChangeRejected,
                        extension,
                        actor,
                        "superseded",
                        now,
                    )?;
                    return Ok(count_change(extension, ChangeOutcome::Superseded));
                }
            };
            let history = self.history_match(&snap, new)?;
            let violations = snap.policy.check(extension, new, history);
            let new_hash = if violations.is_empty() {
                Some(self.hasher.hash(new)?)
            } else {
                None
            };
            let outcome = self.write(|tx| {
                if unchanged(tx, &snap.row)?.is_none() {
                    return Ok(None);
                }
                let Some(hash) = &new_hash else {
                    let codes = violations.to_string();
                    audit::record(tx, now, Event::PasscodeChangeRejected, Some(extension), actor, &codes, None)?;
                    let lengths = snap.policy.min_length..=snap.policy.max_length;
                    return Ok(Some(ChangeOutcome::Rejected(violations.clone(), lengths)));
                };
                tx.execute(
                    "UPDATE users SET passcode_hash = ?1, temporary = 0, temporary_expires_at = NULL,
                            passcode_changed_at = ?2
                     WHERE extension = ?3",
                    (hash, now.unix(), extension.as_str()),
                )?;
                append_history(tx, extension, hash, now)?;
                let was = if snap.row.temporary { "from_temporary" } else { "from_permanent" };
                audit::record(tx, now, Event::PasscodeChanged, Some(extension), actor, "changed", Some(was))?;
                Ok(Some(ChangeOutcome::Changed))
            })?;
            if let Some(outcome) = outcome {
                if let (ChangeOutcome::Changed, Some(hash)) = (&outcome, new_hash) {
                    login.hash = hash;
                }
                return Ok(count_change(extension, outcome));
            }
        }
        Err(StoreError::Contention(extension.clone()))
    }

    /// Which policy rules `candidate` would break as `extension`'s passcode: the rules on
    /// the passcode itself (digits, length, the extension, runs, common PINs), those an
    /// admin-given passcode must pass. Not the history rules: they compare it with the
    /// mailbox's own passcodes, so a check that answered them would tell whoever asks,
    /// unaudited and uncounted, whether a guess is the owner's passcode. They apply when
    /// the owner changes it. Changes nothing and audits nothing.
    ///
    /// # Errors
    /// Database errors.
    pub fn check_passcode(
        &self,
        extension: &Extension,
        candidate: &Passcode,
    ) -> Result<Violations> {
        Ok(self.policy()?.check_rules(extension, candidate))
    }

    /// Compares `candidate` with the current passcode and the history (argon2 each).
    fn history_match(&self, snap: &Snapshot, candidate: &Passcode) -> Result<HistoryMatch> {
        let current = match (&snap.row.passcode_hash, snap.policy.reject_current) {
            (Some(hash), true) => self.hasher.verify(candidate, hash)?,
            _ => false,
        };
        let mut recent = false;
        if !current {
            for hash in &snap.history {
                if self.hasher.verify(candidate, hash)? {
                    recent = true;
                    break;
                }
            }
        }
        Ok(HistoryMatch { current, recent })
    }
}

/// What a login counts as in `vportal_logins_total{outcome}`. Not always the outcome's
/// kind: the failure that locks a mailbox answers [`VerifyOutcome::Locked`] but counts as
/// `wrong`, and `locked` counts only the logins refused because the mailbox already was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Ok,
    OkTemporary,
    Wrong,
    Unknown,
    Locked,
    Expired,
}

/// Every `outcome` label of `vportal_logins_total`.
pub const LOGIN_OUTCOMES: [&str; 6] = [
    Counted::Ok.label(),
    Counted::OkTemporary.label(),
    Counted::Wrong.label(),
    Counted::Unknown.label(),
    Counted::Locked.label(),
    Counted::Expired.label(),
];

/// Every `outcome` label of `vportal_passcode_changes_total`.
pub const CHANGE_OUTCOMES: [&str; 4] = ["changed", "rejected", "superseded", "mismatch"];

impl Counted {
    const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::OkTemporary => "ok_temporary",
            Self::Wrong => "wrong",
            Self::Unknown => "unknown",
            Self::Locked => "locked",
            Self::Expired => "expired",
        }
    }
}

/// A login to a locked mailbox: audited; no failure is counted against it.
fn refuse_locked(
    conn: &Connection,
    extension: &Extension,
    until: Lock,
    actor: &Actor,
    now: Timestamp,
) -> Result<(VerifyOutcome, Counted)> {
    audit::record(
        conn,
        now,
        Event::LoginLocked,
        Some(extension),
        actor,
        "locked",
        None,
    )?;
    Ok((VerifyOutcome::Locked { until }, Counted::Locked))
}

/// The right passcode: expired, or a login that resets the counts and is audited;
/// `upgraded`, when given, replaces the stored hash (the same passcode, hashed as now).
fn succeed(
    conn: &Connection,
    row: &UserRow,
    upgraded: Option<&str>,
    actor: &Actor,
    now: Timestamp,
) -> Result<(VerifyOutcome, Counted)> {
    let ext = &row.extension;
    if row.expired_at(now) {
        audit::record(
            conn,
            now,
            Event::LoginExpired,
            Some(ext),
            actor,
            "expired",
            None,
        )?;
        return Ok((VerifyOutcome::Expired, Counted::Expired));
    }
    conn.prepare_cached(
        "UPDATE users SET failed_attempts = 0, lockouts = 0, locked_until = NULL, last_login_at = ?1,
             passcode_hash = coalesce(?3, passcode_hash)
         WHERE extension = ?2",
    )?
    .execute((now.unix(), ext.as_str(), upgraded))?;
    let counted = if row.temporary {
        Counted::OkTemporary
    } else {
        Counted::Ok
    };
    audit::record(
        conn,
        now,
        Event::LoginSuccess,
        Some(ext),
        actor,
        counted.label(),
        None,
    )?;
    Ok((
        VerifyOutcome::Ok {
            must_change: row.temporary,
        },
        counted,
    ))
}

/// A wrong passcode: count it, maybe lock.
fn fail(
    conn: &Connection,
    row: &UserRow,
    policy: &Policy,
    actor: &Actor,
    now: Timestamp,
) -> Result<VerifyOutcome> {
    let ext = &row.extension;
    let after = policy
        .lockout
        .after_failure(row.counted_failures(now), row.lockouts, now);
    let (until, permanent) = match after.lock {
        Some(Lock::Until(t)) => (Some(t.unix()), false),
        Some(Lock::Permanent) => (None, true),
        None => (None, false),
    };
    conn.prepare_cached(
        "UPDATE users SET failed_attempts = ?1, lockouts = ?2, locked_until = ?3,
                locked_permanently = ?4
         WHERE extension = ?5",
    )?
    .execute((
        after.failed_attempts,
        after.lockouts,
        until,
        permanent,
        ext.as_str(),
    ))?;
    let detail = format!("remaining {}", after.remaining);
    audit::record(
        conn,
        now,
        Event::LoginFailure,
        Some(ext),
        actor,
        "wrong_passcode",
        Some(&detail),
    )?;
    match after.lock {
        Some(lock) => {
            let outcome = match lock {
                Lock::Until(t) => format!("until {t}"),
                Lock::Permanent => "permanent".to_owned(),
            };
            let detail = format!("lock {}", after.lockouts);
            audit::record(
                conn,
                now,
                Event::UserLocked,
                Some(ext),
                actor,
                &outcome,
                Some(&detail),
            )?;
            Ok(VerifyOutcome::Locked { until: lock })
        }
        None => Ok(VerifyOutcome::Wrong {
            remaining: after.remaining,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::testing::*;
    use crate::store::{AuditQuery, NewUser, PasscodeSpec, Violation};

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn with_user(passcode: &str, temporary: bool) -> Store {
        let s = store();
        s.create_user(
            NewUser {
                extension: ext("1001"),
                name: None,
                email: None,
                passcode: Some(PasscodeSpec {
                    passcode: Some(pin(passcode)),
                    temporary,
                    ttl: Some(crate::store::Ttl::new(minutes(20)).unwrap()),
                }),
            },
            &cli(),
            T0,
        )
        .unwrap();
        s
    }

    fn verify(s: &Store, e: &str, p: &str, now: Timestamp) -> VerifyOutcome {
        s.verify(e, &pin(p), &caller(), now).unwrap()
    }

    /// The right passcode.
    const ACCEPTED: VerifyOutcome = VerifyOutcome::Ok { must_change: false };
    /// The right passcode, a temporary one: the caller must choose a new one.
    const ACCEPTED_MUST_CHANGE: VerifyOutcome = VerifyOutcome::Ok { must_change: true };

    /// Types a wrong passcode for 1001 `times` times, whatever is answered.
    fn wrong_passcodes(s: &Store, times: usize, now: Timestamp) {
        for _ in 0..times {
            verify(s, "1001", "0000", now);
        }
    }

    fn last_events(s: &Store, n: usize) -> Vec<String> {
        let mut v: Vec<_> = s
            .audit(&AuditQuery {
                limit: Some(n as u32),
                ..AuditQuery::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {}", e.event, e.outcome))
            .collect();
        v.reverse();
        v
    }

    #[test]
    fn temporary_passcode_works_until_it_expires_then_only_says_expired() {
        let s = with_user("4826", true);
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED_MUST_CHANGE);
        // Still usable until changed, within the TTL.
        let t = T0.saturating_add(minutes(19));
        assert_eq!(verify(&s, "1001", "4826", t), ACCEPTED_MUST_CHANGE);
        let t = T0.saturating_add(minutes(20));
        assert_eq!(verify(&s, "1001", "4826", t), VerifyOutcome::Expired);
        // A wrong passcode after expiry is still a counted failure, not "expired".
        assert_eq!(
            verify(&s, "1001", "9999", t),
            VerifyOutcome::Wrong { remaining: 4 }
        );
        assert_eq!(
            last_events(&s, 2),
            ["login.expired expired", "login.failure wrong_passcode"]
        );
        let row = s.audit(&AuditQuery::default()).unwrap().remove(1);
        assert_eq!(row.source.as_deref(), Some("127.0.0.1:5062"));
        assert_eq!(row.call_id.as_deref(), Some("call-1@127.0.0.1"));
    }

    #[test]
    fn the_failure_that_locks_counts_as_wrong_and_only_refusals_count_as_locked() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let s = with_user("4826", false);
            // Five failures, the fifth locking; two refusals while locked; a wrong mailbox.
            wrong_passcodes(&s, 5, T0);
            verify(&s, "1001", "4826", T0);
            verify(&s, "1001", "0000", T0);
            verify(&s, "1002", "4826", T0);
            let t = T0.saturating_add(minutes(30));
            assert_eq!(verify(&s, "1001", "4826", t), ACCEPTED);
        });
        let text = handle.render();
        for line in [
            r#"vportal_logins_total{outcome="wrong"} 5"#,
            r#"vportal_logins_total{outcome="locked"} 2"#,
            r#"vportal_logins_total{outcome="unknown"} 1"#,
            r#"vportal_logins_total{outcome="ok"} 1"#,
            "vportal_lockouts_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn lockout_progression_and_nothing_counted_while_locked() {
        let s = with_user("4826", false);
        let mut now = T0;
        for (lock_no, minutes_locked) in [(1, 30), (2, 60), (3, 120), (4, 240)] {
            for remaining in (1..=4).rev() {
                assert_eq!(
                    verify(&s, "1001", "0000", now),
                    VerifyOutcome::Wrong { remaining }
                );
            }
            let until = Lock::Until(now.saturating_add(minutes(minutes_locked)));
            assert_eq!(
                verify(&s, "1001", "0000", now),
                VerifyOutcome::Locked { until },
                "lock {lock_no}"
            );
            // While locked: even the right passcode is refused, and nothing is counted.
            let during = now.saturating_add(minutes(minutes_locked - 1));
            assert_eq!(
                verify(&s, "1001", "4826", during),
                VerifyOutcome::Locked { until }
            );
            assert_eq!(
                verify(&s, "1001", "0000", during),
                VerifyOutcome::Locked { until }
            );
            // A locked mailbox shows the failures that locked it (DESIGN: unlock clears
            // "lock and failure count").
            let info = s.user(&ext("1001"), during).unwrap().unwrap();
            assert_eq!((info.locked, info.failed_attempts), (true, 5));
            now = now.saturating_add(minutes(minutes_locked));
            // Once the lock has ended the count starts again.
            let info = s.user(&ext("1001"), now).unwrap().unwrap();
            assert_eq!((info.locked, info.failed_attempts), (false, 0));
        }
        wrong_passcodes(&s, 4, now);
        assert_eq!(
            verify(&s, "1001", "0000", now),
            VerifyOutcome::Locked {
                until: Lock::Permanent
            }
        );
        let years = now.saturating_add(Duration::from_secs(10 * 365 * 86_400));
        assert_eq!(
            verify(&s, "1001", "4826", years),
            VerifyOutcome::Locked {
                until: Lock::Permanent
            }
        );
        let locks = s
            .audit(&AuditQuery {
                event: Some(Event::UserLocked),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(locks.len(), 5);
        assert_eq!(locks[0].outcome, "permanent");
        s.unlock(&ext("1001"), &cli(), years).unwrap();
        assert_eq!(verify(&s, "1001", "4826", years), ACCEPTED);
    }

    #[test]
    fn success_resets_the_count_and_the_doubling() {
        let s = with_user("4826", false);
        wrong_passcodes(&s, 4, T0);
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED);
        assert_eq!(
            s.user(&ext("1001"), T0).unwrap().unwrap().failed_attempts,
            0
        );
        assert_eq!(
            verify(&s, "1001", "0000", T0),
            VerifyOutcome::Wrong { remaining: 4 }
        );
        // A lock, its expiry, a success: the next lock is 30 minutes again, not 60.
        wrong_passcodes(&s, 4, T0);
        let t = T0.saturating_add(minutes(30));
        assert_eq!(verify(&s, "1001", "4826", t), ACCEPTED);
        wrong_passcodes(&s, 4, t);
        let until = Lock::Until(t.saturating_add(minutes(30)));
        assert_eq!(
            verify(&s, "1001", "0000", t),
            VerifyOutcome::Locked { until }
        );
    }

    #[test]
    fn unknown_mailboxes_look_like_wrong_passcodes_and_never_lock() {
        let s = with_user("4826", false);
        for typed in ["2002", "not digits", "48264826482648264826"] {
            for _ in 0..7 {
                assert_eq!(verify(&s, typed, "4826", T0), VerifyOutcome::Unknown);
            }
        }
        let rows = s.audit(&AuditQuery::default()).unwrap();
        let failures: Vec<_> = rows.iter().filter(|e| e.event == "login.failure").collect();
        assert_eq!(failures.len(), 21);
        assert!(
            failures
                .iter()
                .all(|e| e.extension.is_none() && e.outcome == "unknown_mailbox")
        );
        // A mailbox without a passcode answers the same.
        s.create_user(NewUser::new(ext("1002")), &cli(), T0)
            .unwrap();
        assert_eq!(verify(&s, "1002", "4826", T0), VerifyOutcome::Unknown);
    }

    #[test]
    fn change_checks_policy_history_and_current() {
        let s = with_user("4826", true);
        let e = ext("1001");
        // One login serves every change: each change makes it prove the new passcode.
        let mut session = login(&s, "1001", "4826");
        let mut change = |p: &str, now| {
            s.change_passcode(&mut session, &pin(p), &caller(), now)
                .unwrap()
        };
        let rejected =
            |codes: &[Violation]| ChangeOutcome::Rejected(codes.iter().copied().collect(), 4..=10);
        assert_eq!(
            change("1001", T0),
            rejected(&[Violation::EqualsExtension, Violation::Common])
        );
        assert_eq!(change("4826", T0), rejected(&[Violation::SameAsCurrent]));
        assert_eq!(change("482", T0), rejected(&[Violation::TooShort]));
        // Refusals leave the temporary passcode in force.
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED_MUST_CHANGE);
        let pins = ["5937", "6048", "7159", "8260", "9382", "4083"];
        for p in pins {
            assert_eq!(change(p, T0), ChangeOutcome::Changed);
        }
        assert_eq!(verify(&s, "1001", "4083", T0), ACCEPTED);
        assert_eq!(
            verify(&s, "1001", "9382", T0),
            VerifyOutcome::Wrong { remaining: 4 }
        );
        // The last five (9382, 8260, 7159, 6048, 5937 before 4083's change) are refused,
        // the current one as such; 5937 is now six back.
        assert_eq!(change("4083", T0), rejected(&[Violation::SameAsCurrent]));
        for p in ["9382", "8260", "7159", "6048"] {
            assert_eq!(change(p, T0), rejected(&[Violation::RecentlyUsed]), "{p}");
        }
        // A check does not answer the history rules: it would tell a guess that is the
        // owner's passcode, current or past, from one that is not.
        for p in ["4083", "6048", "7130"] {
            assert_eq!(
                s.check_passcode(&e, &pin(p)).unwrap().to_string(),
                "",
                "{p}"
            );
        }
        assert_eq!(
            s.check_passcode(&e, &pin("1001")).unwrap().to_string(),
            "equals_extension,common"
        );
        assert_eq!(change("5937", T0), ChangeOutcome::Changed);
        let info = s.user(&e, T0).unwrap().unwrap();
        assert!(!info.temporary && info.temporary_expires_at.is_none());
        assert_eq!(info.passcode_changed_at, Some(T0));
        let rejected_rows = s
            .audit(&AuditQuery {
                event: Some(Event::PasscodeChangeRejected),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(
            rejected_rows.last().unwrap().outcome,
            "equals_extension,common"
        );
    }

    #[test]
    fn a_failing_change_leaves_the_old_passcode_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let s = Store::open(&path, pepper(), true, 2).unwrap();
        s.create_user(
            NewUser::new(ext("1001")).with_passcode(PasscodeSpec::given(pin("4826"), true)),
            &cli(),
            T0,
        )
        .unwrap();
        // Make the last step of the change transaction (the audit insert) fail.
        let saboteur = Connection::open(&path).unwrap();
        saboteur
            .execute_batch(
                "CREATE TRIGGER no_changes BEFORE INSERT ON audit
                 WHEN NEW.event = 'passcode.changed'
                 BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
            )
            .unwrap();
        let mut session = login(&s, "1001", "4826");
        assert!(
            s.change_passcode(&mut session, &pin("5937"), &caller(), T0)
                .is_err()
        );
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED_MUST_CHANGE);
        assert_eq!(
            verify(&s, "1001", "5937", T0),
            VerifyOutcome::Wrong { remaining: 4 }
        );
        let history: i64 = saboteur
            .query_row("SELECT count(*) FROM passcode_history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(history, 0);
        saboteur.execute_batch("DROP TRIGGER no_changes").unwrap();
        assert_eq!(
            s.change_passcode(&mut session, &pin("5937"), &caller(), T0)
                .unwrap(),
            ChangeOutcome::Changed
        );
    }

    #[test]
    fn a_login_stores_an_earlier_builds_hash_again_as_now() {
        use argon2::PasswordHasher;
        let s = with_user("4826", false);
        let stored = |s: &Store| {
            s.read(|c| {
                Ok(c.query_row(
                    "SELECT passcode_hash FROM users WHERE extension = '1001'",
                    [],
                    |r| r.get::<_, String>(0),
                )?)
            })
            .unwrap()
        };
        // As this server's earlier builds hashed (9 MiB × 4), with the same pepper.
        let earlier = argon2::Argon2::new_with_secret(
            &[0x5a; 32],
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(9_216, 4, 1, None).unwrap(),
        )
        .unwrap()
        .hash_password_with_salt(b"4826", b"0123456789abcdef")
        .unwrap()
        .to_string();
        s.write(|tx| {
            tx.execute(
                "UPDATE users SET passcode_hash = ?1 WHERE extension = '1001'",
                [&earlier],
            )?;
            Ok(())
        })
        .unwrap();
        // A wrong passcode changes nothing but the count.
        assert_eq!(
            verify(&s, "1001", "4828", T0),
            VerifyOutcome::Wrong { remaining: 4 }
        );
        assert_eq!(stored(&s), earlier);
        // The right one logs in, and is stored again with today's parameters.
        let mut session = login(&s, "1001", "4826");
        let now = stored(&s);
        assert_ne!(now, earlier);
        assert!(now.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{now}");
        assert!(s.hasher.is_current(&now));
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED);
        assert_eq!(stored(&s), now, "hashed again once, not at every login");
        // The login proves the new hash: its owner can still change the passcode.
        assert_eq!(
            s.change_passcode(&mut session, &pin("5937"), &caller(), T0)
                .unwrap(),
            ChangeOutcome::Changed
        );
        assert_eq!(verify(&s, "1001", "5937", T0), ACCEPTED);
    }

    #[test]
    fn a_change_is_refused_once_the_login_passcode_is_replaced() {
        let change = |s: &Store, session: &mut Login, p: &str| {
            s.change_passcode(session, &pin(p), &caller(), T0).unwrap()
        };
        let superseded_rows = |s: &Store| {
            s.audit(&AuditQuery::default())
                .unwrap()
                .iter()
                .filter(|r| r.event == "passcode.change_rejected" && r.outcome == "superseded")
                .count()
        };
        // An admin resets the mailbox while its owner is logged in: the owner's change is
        // refused and the admin's passcode stays in force.
        let s = with_user("4826", true);
        let mut session = login(&s, "1001", "4826");
        s.reset_passcode(
            &ext("1001"),
            &PasscodeSpec::given(pin("7305"), true),
            &cli(),
            T0,
        )
        .unwrap();
        assert_eq!(change(&s, &mut session, "5937"), ChangeOutcome::Superseded);
        assert_eq!(verify(&s, "1001", "7305", T0), ACCEPTED_MUST_CHANGE);
        assert_eq!(superseded_rows(&s), 1);
        // The mailbox is deleted and created again for someone else.
        let s = with_user("4826", true);
        let mut session = login(&s, "1001", "4826");
        s.delete_user(&ext("1001"), &cli(), T0).unwrap();
        assert_eq!(change(&s, &mut session, "5937"), ChangeOutcome::Superseded);
        s.create_user(
            NewUser::new(ext("1001")).with_passcode(PasscodeSpec::given(pin("4826"), true)),
            &cli(),
            T0,
        )
        .unwrap();
        assert_eq!(change(&s, &mut session, "5937"), ChangeOutcome::Superseded);
        assert_eq!(verify(&s, "1001", "4826", T0), ACCEPTED_MUST_CHANGE);
        // Another call of the owner's changed it first.
        let s = with_user("4826", true);
        let mut first = login(&s, "1001", "4826");
        let mut second = login(&s, "1001", "4826");
        assert_eq!(change(&s, &mut first, "5937"), ChangeOutcome::Changed);
        assert_eq!(change(&s, &mut second, "6048"), ChangeOutcome::Superseded);
        assert_eq!(change(&s, &mut first, "6048"), ChangeOutcome::Changed);
        assert_eq!(verify(&s, "1001", "6048", T0), ACCEPTED);
    }
}
