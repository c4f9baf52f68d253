//! The password-usage report: how many mailboxes are in which state.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::users::UserRow;
use super::{Result, Store};
use crate::time::Timestamp;

/// Days counted as "recently changed".
pub(crate) const RECENT_DAYS: i64 = 90;

/// Mailbox counts by credential state, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// All mailboxes.
    pub users: u64,
    /// With a temporary passcode (expired or not).
    pub temporary: u64,
    /// With a temporary passcode past its expiry.
    pub expired: u64,
    /// Locked now, temporarily or permanently.
    pub locked: u64,
    /// Whose owner has never chosen a passcode.
    pub never_changed: u64,
    /// Whose owner chose a passcode in the last 90 days.
    pub changed_in_90_days: u64,
}

/// As JSON (the API's and the CLI's): each count under DESIGN's words, and the recent
/// changes under issue 3's too (`changed_last_90_days`, "changed in the last 90 days"), the
/// name it had before, with the same count.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Report", 7)?;
        m.serialize_field("users", &self.users)?;
        m.serialize_field("temporary", &self.temporary)?;
        m.serialize_field("expired", &self.expired)?;
        m.serialize_field("locked", &self.locked)?;
        m.serialize_field("never_changed", &self.never_changed)?;
        m.serialize_field("changed_in_90_days", &self.changed_in_90_days)?;
        m.serialize_field("changed_last_90_days", &self.changed_in_90_days)?;
        m.end()
    }
}

impl Store {
    /// Counts mailboxes by state at `now`.
    ///
    /// # Errors
    /// Database errors.
    pub fn report(&self, now: Timestamp) -> Result<Report> {
        let since = now.unix().saturating_sub(RECENT_DAYS * 86_400);
        self.read(|conn| {
            Ok(conn.query_row(
                &format!(
                    "SELECT count(*),
                            coalesce(sum(temporary = 1), 0),
                            coalesce(sum({}), 0),
                            coalesce(sum({}), 0),
                            coalesce(sum(passcode_changed_at IS NULL), 0),
                            coalesce(sum(coalesce(passcode_changed_at > ?2, 0)), 0)
                     FROM users",
                    UserRow::EXPIRED_AT_SQL,
                    UserRow::LOCKED_AT_SQL
                ),
                (now.unix(), since),
                |r| {
                    // Counts are never negative; SQLite hands them over as i64.
                    let count = |i| r.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
                    Ok(Report {
                        users: count(0)?,
                        temporary: count(1)?,
                        expired: count(2)?,
                        locked: count(3)?,
                        never_changed: count(4)?,
                        changed_in_90_days: count(5)?,
                    })
                },
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::testing::*;
    use crate::store::{Issued, NewUser, PasscodeSpec};

    #[test]
    fn counts_each_state() {
        let s = store();
        let add = |e: &str, spec| {
            s.create_user(
                NewUser {
                    extension: ext(e),
                    name: None,
                    email: None,
                    passcode: spec,
                },
                &cli(),
                T0,
            )
            .unwrap()
        };
        add("1001", Some(PasscodeSpec::generated_temporary()));
        let second = add("1002", Some(PasscodeSpec::generated_temporary()));
        add("1003", None);
        let fourth = add("1004", Some(PasscodeSpec::generated_temporary()));
        let logged_in = |issued: &Issued| {
            let given = issued.generated.as_ref().unwrap().expose();
            login(&s, issued.extension.as_str(), given)
        };
        s.change_passcode(&mut logged_in(&fourth), &pin("4826"), &caller(), T0)
            .unwrap();
        let day = |d: u64| T0.saturating_add(Duration::from_secs(d * 86_400));
        s.change_passcode(&mut logged_in(&second), &pin("5937"), &caller(), day(1))
            .unwrap();
        s.write(|tx| {
            tx.execute(
                "UPDATE users SET locked_permanently = 1 WHERE extension = '1003'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let r = s.report(day(4)).unwrap();
        assert_eq!(
            r,
            Report {
                users: 4,
                temporary: 1,
                expired: 1,
                locked: 1,
                never_changed: 2,
                changed_in_90_days: 2,
            }
        );
        let r = s.report(day(91)).unwrap();
        assert_eq!(r.changed_in_90_days, 0);
    }
}
