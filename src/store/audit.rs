//! The audit trail: what happened to which mailbox, when, and who did it.
//!
//! Rows are written in the same transaction as the change they describe and never updated.
//! They hold event names, outcomes and violation codes: never a passcode or a hash.

use rusqlite::{Connection, Row, ToSql};
use serde::Serialize;

use super::types::{Actor, Extension};
use super::{Result, Store};
use crate::time::Timestamp;

/// The kinds of audit event. The dotted names are part of the product contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A mailbox was created.
    UserCreated,
    /// A mailbox was deleted.
    UserDeleted,
    /// An admin set a temporary passcode.
    PasscodeTemporarySet,
    /// A permanent passcode was set: by the owner (`changed`) or an admin (`admin_set`).
    PasscodeChanged,
    /// The owner's new passcode broke the policy; the outcome lists the codes.
    PasscodeChangeRejected,
    /// A caller logged in.
    LoginSuccess,
    /// A login failed: wrong passcode, or no such mailbox.
    LoginFailure,
    /// A login was refused because the mailbox is locked (not counted as a failure).
    LoginLocked,
    /// The right temporary passcode, but past its expiry.
    LoginExpired,
    /// The right passcode, but the mailbox is in a call already and the route's session
    /// rule refuses a second one (`session = "reject"`).
    LoginInUse,
    /// Failures locked the mailbox.
    UserLocked,
    /// An admin lifted a lock.
    UserUnlocked,
    /// An admin API token was created.
    TokenCreated,
    /// An admin API token was revoked.
    TokenRevoked,
    /// The passcode policy was changed.
    PolicyChanged,
    /// Audit rows older than a date were removed (the only rows ever removed).
    AuditPruned,
}

impl Event {
    /// Every event, for validating filters.
    pub const ALL: [Self; 16] = [
        Self::UserCreated,
        Self::UserDeleted,
        Self::PasscodeTemporarySet,
        Self::PasscodeChanged,
        Self::PasscodeChangeRejected,
        Self::LoginSuccess,
        Self::LoginFailure,
        Self::LoginLocked,
        Self::LoginExpired,
        Self::LoginInUse,
        Self::UserLocked,
        Self::UserUnlocked,
        Self::TokenCreated,
        Self::TokenRevoked,
        Self::PolicyChanged,
        Self::AuditPruned,
    ];

    /// The stored name, e.g. `login.success`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserDeleted => "user.deleted",
            Self::PasscodeTemporarySet => "passcode.temporary_set",
            Self::PasscodeChanged => "passcode.changed",
            Self::PasscodeChangeRejected => "passcode.change_rejected",
            Self::LoginSuccess => "login.success",
            Self::LoginFailure => "login.failure",
            Self::LoginLocked => "login.locked",
            Self::LoginExpired => "login.expired",
            Self::LoginInUse => "login.in_use",
            Self::UserLocked => "user.locked",
            Self::UserUnlocked => "user.unlocked",
            Self::TokenCreated => "token.created",
            Self::TokenRevoked => "token.revoked",
            Self::PolicyChanged => "policy.changed",
            Self::AuditPruned => "audit.pruned",
        }
    }

    /// The event with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Increasing row id: the order events happened in.
    pub id: i64,
    /// When (the contract's "time"; the table's column is `at`).
    pub time: Timestamp,
    /// The event name, e.g. `login.success`.
    pub event: String,
    /// The mailbox, when there is one. Failed logins to a mailbox that does not exist leave
    /// this empty: callers sometimes type their passcode at the mailbox prompt.
    pub extension: Option<String>,
    /// Who: `cli[:user]`, `admin:<token name>`, `caller` or `system`.
    pub actor: String,
    /// For callers: the signalling source address.
    pub source: Option<String>,
    /// For callers: the SIP Call-ID.
    pub call_id: Option<String>,
    /// The result, e.g. `ok`, `wrong_passcode`, `too_short,common`, `until 2026-…`.
    pub outcome: String,
    /// Anything else worth knowing, never a secret.
    pub detail: Option<String>,
}

/// Which audit rows to read. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this mailbox.
    pub extension: Option<Extension>,
    /// Only this event.
    pub event: Option<Event>,
    /// At most this many rows (default 100, at most 10,000).
    pub limit: Option<u32>,
}

/// Default and largest number of rows one query returns.
const DEFAULT_LIMIT: u32 = 100;
/// The most rows one audit query returns (`AuditQuery::limit` is clamped to it).
pub const MAX_AUDIT_ROWS: u32 = 10_000;

/// Appends one audit row. Call inside the transaction that makes the change.
pub(crate) fn record(
    conn: &Connection,
    at: Timestamp,
    event: Event,
    extension: Option<&Extension>,
    actor: &Actor,
    outcome: &str,
    detail: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, event, extension, actor, source, call_id, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute((
        at.unix(),
        event.as_str(),
        extension.map(Extension::as_str),
        actor.label(),
        actor.source(),
        actor.call_id(),
        outcome,
        detail,
    ))?;
    Ok(())
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.get(0)?,
        time: Timestamp::from_unix(r.get(1)?),
        event: r.get(2)?,
        extension: r.get(3)?,
        actor: r.get(4)?,
        source: r.get(5)?,
        call_id: r.get(6)?,
        outcome: r.get(7)?,
        detail: r.get(8)?,
    })
}

/// Rows removed per transaction by [`Store::prune_audit`]: logins and changes wait for no
/// more than one batch.
const PRUNE_BATCH: u32 = 10_000;

impl Store {
    /// Removes the audit rows from before `before`, in batches of their own transactions,
    /// and audits that: an `audit.pruned` row, written with the first batch and counting
    /// every batch in the same transaction, so that it tells what was removed even if a
    /// later batch fails. Rows are taken in the order they were written, up to the first one
    /// from `before` or later. Between batches it pauses as long as the batch took (50 ms at
    /// least), so that the server's own writes, which retry a busy lock every few
    /// milliseconds, get their turn. Returns how many went.
    ///
    /// # Errors
    /// Database errors (the batches already removed stay removed, and counted).
    pub fn prune_audit(&self, before: Timestamp, actor: &Actor, now: Timestamp) -> Result<u64> {
        // Up to the first row from `before` on, or past the newest when every row is older:
        // never past it, so that the `audit.pruned` row written below stays, and with it the
        // largest id, which SQLite would otherwise hand out again (ids tell the order).
        let cut: i64 = self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COALESCE(
                     (SELECT id FROM audit WHERE at >= ?1 ORDER BY id LIMIT 1),
                     (SELECT MAX(id) + 1 FROM audit),
                     0)",
                [before.unix()],
                |r| r.get(0),
            )?)
        })?;
        let mut removed = 0_u64;
        let mut row = None;
        loop {
            let started = std::time::Instant::now();
            let batch = self.write(|tx| {
                let batch = tx.execute(
                    "DELETE FROM audit WHERE id IN
                         (SELECT id FROM audit WHERE id < ?1 ORDER BY id LIMIT ?2)",
                    (cut, PRUNE_BATCH),
                )?;
                let total = removed + u64::try_from(batch).unwrap_or(u64::MAX);
                let outcome = format!("{total} rows");
                match row {
                    None => {
                        let detail = format!("before {before}");
                        record(
                            tx,
                            now,
                            Event::AuditPruned,
                            None,
                            actor,
                            &outcome,
                            Some(&detail),
                        )?;
                        row = Some(tx.last_insert_rowid());
                    }
                    Some(id) => {
                        tx.execute("UPDATE audit SET outcome = ?2 WHERE id = ?1", (id, outcome))?;
                    }
                }
                Ok(batch)
            })?;
            removed += u64::try_from(batch).unwrap_or(u64::MAX);
            if batch < PRUNE_BATCH as usize {
                return Ok(removed);
            }
            std::thread::sleep(started.elapsed().max(std::time::Duration::from_millis(50)));
        }
    }

    /// Audit rows matching `query`, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_AUDIT_ROWS);
        let mut sql = String::from(
            "SELECT id, at, event, extension, actor, source, call_id, outcome, detail
             FROM audit WHERE 1 = 1",
        );
        let mut params: Vec<&dyn ToSql> = Vec::new();
        let extension = query.extension.as_ref().map(Extension::as_str);
        if let Some(ext) = &extension {
            sql.push_str(" AND extension = ?");
            params.push(ext);
        }
        let event = query.event.map(Event::as_str);
        if let Some(event) = &event {
            sql.push_str(" AND event = ?");
            params.push(event);
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        params.push(&limit);
        self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params.as_slice(), from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;

    /// Rows from before the date go, across several batches; later ones stay; the pruning
    /// is itself audited.
    #[test]
    fn pruning_removes_what_is_older_and_says_so() {
        let s = store();
        let old = T0.saturating_sub(std::time::Duration::from_secs(400 * 86_400));
        let rows = usize::try_from(PRUNE_BATCH).unwrap() * 2 + 5;
        s.write(|tx| {
            for _ in 0..rows {
                record(
                    tx,
                    old,
                    Event::LoginFailure,
                    None,
                    &caller(),
                    "unknown_mailbox",
                    None,
                )?;
            }
            record(tx, T0, Event::LoginFailure, None, &caller(), "recent", None)?;
            Ok(())
        })
        .unwrap();
        let before = T0.saturating_sub(std::time::Duration::from_secs(365 * 86_400));
        let removed = s.prune_audit(before, &cli(), T0).unwrap();
        assert_eq!(removed, u64::try_from(rows).unwrap());
        let left = s
            .audit(&AuditQuery {
                limit: Some(MAX_AUDIT_ROWS),
                ..AuditQuery::default()
            })
            .unwrap();
        let outcomes: Vec<&str> = left.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, [format!("{rows} rows").as_str(), "recent"]);
        assert_eq!(left[0].event, "audit.pruned");
        // Nothing older left: a second pruning removes nothing.
        assert_eq!(s.prune_audit(before, &cli(), T0).unwrap(), 0);
    }

    /// When every row is old, the pruning's own row stays, and ids go on from the largest:
    /// a later batch took it, leaving an empty trail whose next event was id 1 again.
    #[test]
    fn pruning_every_row_keeps_its_own_and_the_ids_order() {
        let s = store();
        let old = T0.saturating_sub(std::time::Duration::from_secs(400 * 86_400));
        let rows = usize::try_from(PRUNE_BATCH).unwrap() + 6;
        s.write(|tx| {
            for _ in 0..rows {
                record(tx, old, Event::LoginFailure, None, &caller(), "old", None)?;
            }
            Ok(())
        })
        .unwrap();
        let before = T0.saturating_sub(std::time::Duration::from_secs(86_400));
        assert_eq!(
            s.prune_audit(before, &cli(), T0).unwrap(),
            u64::try_from(rows).unwrap()
        );
        s.write(|tx| record(tx, T0, Event::LoginFailure, None, &caller(), "after", None))
            .unwrap();
        let left = s.audit(&AuditQuery::default()).unwrap();
        let seen: Vec<(&str, &str)> = left
            .iter()
            .map(|e| (e.event.as_str(), e.outcome.as_str()))
            .collect();
        let pruned = format!("{rows} rows");
        assert_eq!(
            seen,
            [
                ("login.failure", "after"),
                ("audit.pruned", pruned.as_str())
            ]
        );
        assert!(left[0].id > left[1].id && left[1].id > i64::try_from(rows).unwrap());
    }

    #[test]
    fn names_round_trip() {
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()), Some(e));
        }
        assert_eq!(Event::parse("login.maybe"), None);
    }

    #[test]
    fn query_filters_and_orders_newest_first() {
        let s = store();
        s.write(|tx| {
            for (i, (event, e)) in [
                (Event::UserCreated, "1001"),
                (Event::LoginSuccess, "1001"),
                (Event::UserCreated, "1002"),
            ]
            .into_iter()
            .enumerate()
            {
                let at = T0.saturating_add(std::time::Duration::from_secs(i as u64));
                record(tx, at, event, Some(&ext(e)), &caller(), "ok", None)?;
            }
            Ok(())
        })
        .unwrap();
        let all = s.audit(&AuditQuery::default()).unwrap();
        let names: Vec<_> = all.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["user.created", "login.success", "user.created"]);
        assert_eq!(all[0].extension.as_deref(), Some("1002"));
        assert_eq!(all[1].source.as_deref(), Some("127.0.0.1:5062"));
        assert_eq!(all[1].call_id.as_deref(), Some("call-1@127.0.0.1"));
        let only = s
            .audit(&AuditQuery {
                extension: Some(ext("1001")),
                event: Some(Event::UserCreated),
                limit: None,
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        let one = s
            .audit(&AuditQuery {
                limit: Some(1),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(one.len(), 1);
    }
}
