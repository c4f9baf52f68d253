//! Mailbox administration: create, delete, reset passcodes (one, many, all), import, unlock,
//! list and show.

use std::collections::HashMap;

use rand::rngs::SysRng;
use rusqlite::{Connection, OptionalExtension, Row};
use serde::Serialize;

use super::audit::{self, Event};
use super::csv;
use super::policy::{Lock, MAX_HISTORY_DEPTH, Policy, Ttl};
use super::types::{Actor, Extension, Passcode};
use super::{Result, Store, StoreError};
use crate::time::Timestamp;

/// Longest display name kept.
const MAX_NAME_LEN: usize = 128;
/// Longest email address (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// A mailbox as stored, for the store's own decisions.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) extension: Extension,
    pub(crate) name: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) passcode_hash: Option<String>,
    pub(crate) temporary: bool,
    pub(crate) temporary_expires_at: Option<Timestamp>,
    pub(crate) failed_attempts: u32,
    pub(crate) lockouts: u32,
    pub(crate) locked_until: Option<Timestamp>,
    pub(crate) locked_permanently: bool,
    pub(crate) last_login_at: Option<Timestamp>,
    pub(crate) passcode_changed_at: Option<Timestamp>,
    pub(crate) created_at: Timestamp,
}

const USER_COLUMNS: &str = "extension, name, email, passcode_hash, temporary, temporary_expires_at,
    failed_attempts, lockouts, locked_until, locked_permanently, last_login_at,
    passcode_changed_at, created_at";

impl UserRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let extension: String = r.get(0)?;
        let extension = Extension::parse(&extension).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let ts = |i| {
            r.get::<_, Option<i64>>(i)
                .map(|v| v.map(Timestamp::from_unix))
        };
        Ok(Self {
            extension,
            name: r.get(1)?,
            email: r.get(2)?,
            passcode_hash: r.get(3)?,
            temporary: r.get(4)?,
            temporary_expires_at: ts(5)?,
            failed_attempts: r.get(6)?,
            lockouts: r.get(7)?,
            locked_until: ts(8)?,
            locked_permanently: r.get(9)?,
            last_login_at: ts(10)?,
            passcode_changed_at: ts(11)?,
            created_at: Timestamp::from_unix(r.get(12)?),
        })
    }

    /// Reads one mailbox.
    pub(crate) fn load(conn: &Connection, extension: &Extension) -> Result<Option<Self>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE extension = ?1");
        Ok(conn
            .prepare_cached(&sql)?
            .query_row([extension.as_str()], Self::from_row)
            .optional()?)
    }

    /// [`UserRow::lock_at`] in SQL, with `now` as `?1`: the lists and the report count as
    /// locked what a login finds locked.
    pub(crate) const LOCKED_AT_SQL: &str =
        "(locked_permanently = 1 OR coalesce(locked_until > ?1, 0))";

    /// [`UserRow::expired_at`] in SQL, with `now` as `?1`.
    pub(crate) const EXPIRED_AT_SQL: &str =
        "(temporary = 1 AND coalesce(temporary_expires_at <= ?1, 0))";

    /// The lock on record, whether or not it still holds.
    pub(crate) fn lock(&self) -> Option<Lock> {
        if self.locked_permanently {
            Some(Lock::Permanent)
        } else {
            self.locked_until.map(Lock::Until)
        }
    }

    /// The lock that holds at `now`, if any.
    pub(crate) fn lock_at(&self, now: Timestamp) -> Option<Lock> {
        self.lock().filter(|l| l.holds_at(now))
    }

    /// The failures counted towards the next lock: those since the last success, unlock or
    /// reset, kept while the lock they caused holds; none once a timed lock has ended (the
    /// next failure counts from the start, towards a longer lock).
    pub(crate) fn counted_failures(&self, now: Timestamp) -> u32 {
        if self.locked_until.is_some() && self.lock_at(now).is_none() {
            0
        } else {
            self.failed_attempts
        }
    }

    /// A temporary passcode past its expiry.
    pub(crate) fn expired_at(&self, now: Timestamp) -> bool {
        self.temporary && self.temporary_expires_at.is_some_and(|t| t <= now)
    }

    fn info(&self, now: Timestamp) -> UserInfo {
        let lock = self.lock_at(now);
        UserInfo {
            extension: self.extension.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            has_passcode: self.passcode_hash.is_some(),
            temporary: self.temporary,
            temporary_expires_at: self.temporary_expires_at.filter(|_| self.temporary),
            expired: self.expired_at(now),
            locked: lock.is_some(),
            locked_until: match lock {
                Some(Lock::Until(t)) => Some(t),
                _ => None,
            },
            failed_attempts: self.counted_failures(now),
            lockouts: self.lockouts,
            last_login_at: self.last_login_at,
            passcode_changed_at: self.passcode_changed_at,
            created_at: self.created_at,
        }
    }
}

/// A mailbox as admins see it. Never holds a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The mailbox number.
    pub extension: Extension,
    /// Display name.
    pub name: Option<String>,
    /// Contact address.
    pub email: Option<String>,
    /// Whether any passcode is set (a mailbox without one cannot log in).
    pub has_passcode: bool,
    /// The passcode is temporary: the owner must change it at the next login.
    pub temporary: bool,
    /// When the temporary passcode stops working.
    pub temporary_expires_at: Option<Timestamp>,
    /// The temporary passcode has expired.
    pub expired: bool,
    /// Logins are refused (temporarily or until an admin unlocks).
    pub locked: bool,
    /// When a temporary lock ends; empty when not locked or locked permanently.
    pub locked_until: Option<Timestamp>,
    /// Consecutive failed logins counted towards the next lock.
    pub failed_attempts: u32,
    /// Locks since the last successful login, admin reset or unlock: each lasts longer, and
    /// the policy's `lockout.permanent_at`-th is permanent (none is when it is 0).
    pub lockouts: u32,
    /// Last successful login.
    pub last_login_at: Option<Timestamp>,
    /// When the owner last chose their own passcode.
    pub passcode_changed_at: Option<Timestamp>,
    /// When the mailbox was created.
    pub created_at: Timestamp,
}

/// Which mailboxes to list; each `Some(b)` keeps only mailboxes where that property is `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Temporary passcode.
    pub temporary: Option<bool>,
    /// Locked now.
    pub locked: Option<bool>,
    /// Temporary passcode expired.
    pub expired: Option<bool>,
}

/// How to set a passcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasscodeSpec {
    /// The passcode; `None` generates one (returned once in [`Issued::generated`]).
    pub passcode: Option<Passcode>,
    /// Temporary: the owner must change it at the next login, and it expires.
    pub temporary: bool,
    /// How long a temporary passcode works; `None` takes the policy's default (72 h).
    pub ttl: Option<Ttl>,
}

impl PasscodeSpec {
    /// A generated temporary passcode with the policy's TTL.
    pub fn generated_temporary() -> Self {
        Self {
            passcode: None,
            temporary: true,
            ttl: None,
        }
    }

    /// A given passcode, temporary (with the policy's TTL) or permanent.
    pub fn given(passcode: Passcode, temporary: bool) -> Self {
        Self {
            passcode: Some(passcode),
            temporary,
            ttl: None,
        }
    }
}

/// A new mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The mailbox number.
    pub extension: Extension,
    /// Display name.
    pub name: Option<String>,
    /// Contact address.
    pub email: Option<String>,
    /// The first passcode; `None` creates a mailbox that cannot log in until one is set.
    pub passcode: Option<PasscodeSpec>,
}

impl NewUser {
    /// A mailbox with no name, email or passcode yet.
    pub fn new(extension: Extension) -> Self {
        Self {
            extension,
            name: None,
            email: None,
            passcode: None,
        }
    }

    /// The same mailbox with a first passcode.
    #[must_use]
    pub fn with_passcode(self, spec: PasscodeSpec) -> Self {
        Self {
            passcode: Some(spec),
            ..self
        }
    }
}

/// The result of setting a passcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The mailbox.
    pub extension: Extension,
    /// The generated passcode, present only when the store generated it. Hand it to the
    /// admin once; it is not kept anywhere in clear.
    pub generated: Option<Passcode>,
    /// Whether the passcode is temporary.
    pub temporary: bool,
    /// When a temporary passcode expires.
    pub expires_at: Option<Timestamp>,
}

/// Which mailboxes a bulk reset covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every mailbox.
    All,
    /// These mailboxes (each must exist).
    Extensions(Vec<Extension>),
}

/// Whether an import writes anything when some rows are bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Write nothing unless every row is good.
    AllOrNothing,
    /// Write the good rows, report the bad ones.
    Partial,
}

/// What happened to one CSV row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The mailbox was created with a temporary passcode.
    Created(Issued),
    /// The row is good but was not written because other rows were not
    /// ([`ImportMode::AllOrNothing`]).
    NotImported,
    /// The row is bad; the reason never quotes a passcode.
    Rejected(String),
}

/// One CSV row's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// The line the row starts on (1-based, counting the header).
    pub line: usize,
    /// The row's extension, when it is a valid one.
    pub extension: Option<Extension>,
    /// What happened.
    pub outcome: ImportOutcome,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Every data row, in file order.
    pub rows: Vec<ImportRow>,
    /// Whether the good rows were written.
    pub committed: bool,
}

impl ImportReport {
    /// Rows that were rejected.
    pub fn rejected(&self) -> impl Iterator<Item = (usize, &str)> {
        self.rows.iter().filter_map(|r| match &r.outcome {
            ImportOutcome::Rejected(reason) => Some((r.line, reason.as_str())),
            _ => None,
        })
    }

    /// What to say when nothing was imported: every row was rejected, or some were and an
    /// all-or-nothing import held back the good ones, which `partial` (how to ask for a
    /// partial import: `--partial`, `?partial=true`) would have imported.
    pub fn nothing_imported(&self, partial: &str) -> String {
        let rejected = self.rejected().count();
        if rejected == self.rows.len() {
            format!("nothing imported: every row ({rejected}) was rejected")
        } else {
            format!(
                "nothing imported: {rejected} row(s) rejected ({partial} to import the good rows)"
            )
        }
    }

    /// Mailboxes created.
    pub fn created(&self) -> impl Iterator<Item = &Issued> {
        self.rows.iter().filter_map(|r| match &r.outcome {
            ImportOutcome::Created(issued) => Some(issued),
            _ => None,
        })
    }
}

/// An import row that passed the checks: where it is in the report, the mailbox and its
/// passcode.
struct Candidate {
    index: usize,
    user: NewUser,
    chosen: Chosen,
}

/// A passcode decided on (given and checked, or generated) but not yet hashed.
struct Chosen {
    extension: Extension,
    passcode: Passcode,
    generated: bool,
    temporary: bool,
    expires_at: Option<Timestamp>,
}

impl Chosen {
    /// Its lifetime counted from `by` later.
    fn delay(&mut self, by: std::time::Duration) {
        self.expires_at = self.expires_at.map(|at| at.saturating_add(by));
    }

    fn issued(self) -> Issued {
        Issued {
            extension: self.extension,
            generated: self.generated.then_some(self.passcode),
            temporary: self.temporary,
            expires_at: self.expires_at,
        }
    }
}

/// Checks an admin-given passcode against the structural rules, or generates one.
fn choose(
    policy: &Policy,
    extension: &Extension,
    spec: &PasscodeSpec,
    now: Timestamp,
) -> Result<Chosen> {
    let (passcode, generated) = match &spec.passcode {
        Some(p) => {
            let violations = policy.check_rules(extension, p);
            if !violations.is_empty() {
                return Err(StoreError::Rejected(violations));
            }
            (p.clone(), false)
        }
        None => (policy.generate(extension, &mut SysRng)?, true),
    };
    let expires_at = spec
        .temporary
        .then(|| now.saturating_add(spec.ttl.unwrap_or_else(|| policy.temporary_ttl()).get()));
    Ok(Chosen {
        extension: extension.clone(),
        passcode,
        generated,
        temporary: spec.temporary,
        expires_at,
    })
}

/// Installs a hashed passcode on an existing mailbox, clearing failures and any lock, and
/// audits it. Inside the caller's transaction.
fn install(
    conn: &Connection,
    chosen: &Chosen,
    hash: &str,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    let ext = &chosen.extension;
    let before = UserRow::load(conn, ext)?.ok_or_else(|| StoreError::NotFound(ext.clone()))?;
    conn.execute(
        "UPDATE users SET passcode_hash = ?1, temporary = ?2, temporary_expires_at = ?3,
                failed_attempts = 0, lockouts = 0, locked_until = NULL, locked_permanently = 0
         WHERE extension = ?4",
        (
            hash,
            chosen.temporary,
            chosen.expires_at.map(Timestamp::unix),
            ext.as_str(),
        ),
    )?;
    if before.lock_at(now).is_some() {
        audit::record(
            conn,
            now,
            Event::UserUnlocked,
            Some(ext),
            actor,
            "passcode_reset",
            None,
        )?;
    }
    let how = if chosen.generated {
        "generated"
    } else {
        "given"
    };
    tracing::debug!(extension = %ext, temporary = chosen.temporary, how, "passcode set");
    if chosen.temporary {
        let detail = chosen.expires_at.map(|t| format!("expires {t}"));
        audit::record(
            conn,
            now,
            Event::PasscodeTemporarySet,
            Some(ext),
            actor,
            how,
            detail.as_deref(),
        )?;
    } else {
        append_history(conn, ext, hash, now)?;
        audit::record(
            conn,
            now,
            Event::PasscodeChanged,
            Some(ext),
            actor,
            "admin_set",
            Some(how),
        )?;
    }
    Ok(())
}

/// Appends a chosen passcode's hash to the history, keeping the newest
/// [`MAX_HISTORY_DEPTH`].
pub(crate) fn append_history(
    conn: &Connection,
    extension: &Extension,
    hash: &str,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO passcode_history (extension, hash, set_at) VALUES (?1, ?2, ?3)",
        (extension.as_str(), hash, now.unix()),
    )?;
    conn.execute(
        "DELETE FROM passcode_history WHERE extension = ?1 AND id NOT IN (
             SELECT id FROM passcode_history WHERE extension = ?1 ORDER BY id DESC LIMIT ?2)",
        (extension.as_str(), MAX_HISTORY_DEPTH),
    )?;
    Ok(())
}

/// Trims and checks a display name.
fn clean_name(name: Option<String>) -> Result<Option<String>, String> {
    let Some(name) = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("name: at most {MAX_NAME_LEN} characters"));
    }
    if name.contains(['\n', '\r']) {
        // A CSV value quoted across lines, most often.
        return Err("name: a line break is not allowed (one line only)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name: control characters are not allowed".into());
    }
    if name.chars().any(reorders_or_hides) {
        return Err("name: direction overrides and invisible characters are not allowed".into());
    }
    Ok(Some(name))
}

/// Characters that would make a name shown in a list read otherwise than it is written
/// (Unicode's bidirectional embeddings, overrides and isolates: "Trojan Source"), or that
/// show as nothing (zero-width space, a byte-order mark in the middle of text). The joiners
/// and the direction marks some scripts need (U+200C, U+200D, U+200E, U+200F) are kept.
fn reorders_or_hides(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{FEFF}')
}

/// Trims and checks an email address (shape only: `local@domain`, no spaces).
fn clean_email(email: Option<String>) -> Result<Option<String>, String> {
    let Some(email) = email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let shaped = email.len() <= MAX_EMAIL_LEN
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || reorders_or_hides(c))
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if shaped {
        Ok(Some(email))
    } else {
        Err("email: expected an address like name@example.com".into())
    }
}

fn insert_user(conn: &Connection, user: &NewUser, actor: &Actor, now: Timestamp) -> Result<()> {
    let inserted = conn.execute(
        "INSERT INTO users (extension, name, email, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (extension) DO NOTHING",
        (user.extension.as_str(), &user.name, &user.email, now.unix()),
    )?;
    if inserted == 0 {
        return Err(StoreError::Exists(user.extension.clone()));
    }
    audit::record(
        conn,
        now,
        Event::UserCreated,
        Some(&user.extension),
        actor,
        "ok",
        None,
    )
}

impl Store {
    /// Creates a mailbox, with a first passcode when `user.passcode` says so.
    ///
    /// # Errors
    /// [`StoreError::Exists`]; [`StoreError::Invalid`] for a bad name or email;
    /// [`StoreError::Rejected`] when a given passcode breaks the policy.
    pub fn create_user(&self, user: NewUser, actor: &Actor, now: Timestamp) -> Result<Issued> {
        let user = NewUser {
            name: clean_name(user.name).map_err(StoreError::Invalid)?,
            email: clean_email(user.email).map_err(StoreError::Invalid)?,
            ..user
        };
        let policy = self.policy()?;
        let chosen = match &user.passcode {
            Some(spec) => {
                let chosen = choose(&policy, &user.extension, spec, now)?;
                let hash = self.hasher.hash(&chosen.passcode)?;
                Some((chosen, hash))
            }
            None => None,
        };
        self.write(|tx| {
            insert_user(tx, &user, actor, now)?;
            if let Some((chosen, hash)) = &chosen {
                install(tx, chosen, hash, actor, now)?;
            }
            Ok(())
        })?;
        Ok(match chosen {
            Some((chosen, _)) => chosen.issued(),
            None => Issued {
                extension: user.extension,
                generated: None,
                temporary: false,
                expires_at: None,
            },
        })
    }

    /// Deletes a mailbox and its passcode history. Its audit rows stay.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn delete_user(&self, extension: &Extension, actor: &Actor, now: Timestamp) -> Result<()> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM users WHERE extension = ?1",
                [extension.as_str()],
            )?;
            if deleted == 0 {
                return Err(StoreError::NotFound(extension.clone()));
            }
            audit::record(
                tx,
                now,
                Event::UserDeleted,
                Some(extension),
                actor,
                "ok",
                None,
            )
        })
    }

    /// Sets a mailbox's passcode (an admin reset): given or generated, temporary (expiring,
    /// to be changed at the next login) or permanent. Clears failed attempts and any lock.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Rejected`] when a given passcode breaks the
    /// policy's rules (history is not consulted for admin resets).
    pub fn reset_passcode(
        &self,
        extension: &Extension,
        spec: &PasscodeSpec,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Issued> {
        if self.user(extension, now)?.is_none() {
            return Err(StoreError::NotFound(extension.clone()));
        }
        let policy = self.policy()?;
        let chosen = choose(&policy, extension, spec, now)?;
        let hash = self.hasher.hash(&chosen.passcode)?;
        self.write(|tx| install(tx, &chosen, &hash, actor, now))?;
        Ok(chosen.issued())
    }

    /// Gives every selected mailbox a new generated passcode, in one transaction: all or
    /// none are reset.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] naming the first selected mailbox that does not exist.
    pub fn reset_many(
        &self,
        selection: &Selection,
        temporary: bool,
        ttl: Option<Ttl>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Vec<Issued>> {
        let extensions = match selection {
            Selection::All => self
                .users(UserFilter::default(), now)?
                .into_iter()
                .map(|u| u.extension)
                .collect(),
            Selection::Extensions(list) => {
                let mut unique = list.clone();
                unique.sort();
                unique.dedup();
                for ext in &unique {
                    if self.user(ext, now)?.is_none() {
                        return Err(StoreError::NotFound(ext.clone()));
                    }
                }
                unique
            }
        };
        let policy = self.policy()?;
        let spec = PasscodeSpec {
            passcode: None,
            temporary,
            ttl,
        };
        let mut chosen = extensions
            .iter()
            .map(|ext| choose(&policy, ext, &spec, now))
            .collect::<Result<Vec<_>>>()?;
        let (hashes, now) = self.hash_bulk(chosen.iter_mut(), now)?;
        let installed = self.write(|tx| {
            let mut installed = Vec::with_capacity(chosen.len());
            for (c, hash) in chosen.iter().zip(&hashes) {
                match install(tx, c, hash, actor, now) {
                    // Deleted while the passcodes were hashed: no longer one of "all".
                    Err(StoreError::NotFound(_)) if *selection == Selection::All => {
                        installed.push(false);
                    }
                    result => {
                        result?;
                        installed.push(true);
                    }
                }
            }
            Ok(installed)
        })?;
        Ok(chosen
            .into_iter()
            .zip(installed)
            .filter_map(|(c, done)| done.then(|| c.issued()))
            .collect())
    }

    /// Lifts a lock and clears the failure count. Returns whether the mailbox was locked
    /// (for a while or for good; a lock that has run out is none).
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn unlock(&self, extension: &Extension, actor: &Actor, now: Timestamp) -> Result<bool> {
        self.write(|tx| {
            let row = UserRow::load(tx, extension)?
                .ok_or_else(|| StoreError::NotFound(extension.clone()))?;
            tx.execute(
                "UPDATE users SET failed_attempts = 0, lockouts = 0, locked_until = NULL,
                        locked_permanently = 0
                 WHERE extension = ?1",
                [extension.as_str()],
            )?;
            let lock = row.lock_at(now);
            let outcome = match lock {
                Some(Lock::Permanent) => "was_locked_permanently",
                Some(Lock::Until(_)) => "was_locked",
                None => "not_locked",
            };
            audit::record(
                tx,
                now,
                Event::UserUnlocked,
                Some(extension),
                actor,
                outcome,
                None,
            )?;
            Ok(lock.is_some())
        })
    }

    /// One mailbox, or `None`.
    ///
    /// # Errors
    /// Database errors.
    pub fn user(&self, extension: &Extension, now: Timestamp) -> Result<Option<UserInfo>> {
        self.read(|conn| Ok(UserRow::load(conn, extension)?.map(|r| r.info(now))))
    }

    /// Mailboxes matching `filter`, in extension order (shorter numbers first).
    ///
    /// # Errors
    /// Database errors.
    pub fn users(&self, filter: UserFilter, now: Timestamp) -> Result<Vec<UserInfo>> {
        let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1");
        let cond = |want: Option<bool>, expr: &str| match want {
            Some(true) => format!(" AND ({expr})"),
            Some(false) => format!(" AND NOT ({expr})"),
            None => String::new(),
        };
        sql.push_str(&cond(filter.temporary, "temporary = 1"));
        sql.push_str(&cond(filter.locked, UserRow::LOCKED_AT_SQL));
        sql.push_str(&cond(filter.expired, UserRow::EXPIRED_AT_SQL));
        sql.push_str(" ORDER BY length(extension), extension");
        self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let uses_now = stmt.parameter_count() > 0;
            let rows = if uses_now {
                stmt.query_map([now.unix()], UserRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            } else {
                stmt.query_map([], UserRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            };
            Ok(rows.iter().map(|r| r.info(now)).collect())
        })
    }

    /// Imports mailboxes from CSV: `extension,name,email,passcode`, a header line optional
    /// (with a header, columns may come in any order and `passcode` may be left out).
    ///
    /// Every created mailbox gets a temporary passcode with the policy's TTL: the row's, or a
    /// generated one when the field is empty. Rows are checked first; with
    /// [`ImportMode::AllOrNothing`] nothing is written unless all are good.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when the text is not CSV at all (an unclosed quote, …): no row
    /// can be trusted then, whatever the mode; or when it has no data rows.
    /// [`StoreError::Generate`] when a row needs a passcode generated and none can be (the
    /// policy refuses nearly every one, or the RNG fails): no row could fix that.
    pub fn import_csv(
        &self,
        text: &str,
        mode: ImportMode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<ImportReport> {
        let records = csv::parse(text).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if let Some((first, rest)) = records.split_first() {
            let numbered = rest.iter().any(|r| r.fields.iter().any(|f| digits(f)));
            misshapen_first_row(&first.fields, numbered)
                .map_err(|e| StoreError::Invalid(format!("line {}: {e}", first.line)))?;
        }
        let (columns, body, headed) = match records.split_first() {
            Some((first, rest)) if looks_like_header(&first.fields) => {
                let columns = header_columns(&first.fields)
                    .map_err(|e| StoreError::Invalid(format!("line {}: {e}", first.line)))?;
                (columns, rest, true)
            }
            _ => (DEFAULT_COLUMNS.to_vec(), records.as_slice(), false),
        };
        if body.is_empty() {
            return Err(StoreError::Invalid("the CSV has no rows to import".into()));
        }
        if body.len() > MAX_IMPORT_ROWS {
            return Err(StoreError::Invalid(format!(
                "the CSV has {} rows; at most {MAX_IMPORT_ROWS} are imported at once: split it",
                body.len()
            )));
        }
        let (mut rows, mut candidates) = self.check_import_rows(body, &columns, headed, now)?;
        let any_rejected = rows
            .iter()
            .any(|r| matches!(r.outcome, ImportOutcome::Rejected(_)));
        if candidates.is_empty() || (any_rejected && mode == ImportMode::AllOrNothing) {
            return Ok(ImportReport {
                rows,
                committed: false,
            });
        }
        let (hashes, now) = self.hash_bulk(candidates.iter_mut().map(|c| &mut c.chosen), now)?;
        let conflicts = match self.commit_import(&candidates, &hashes, mode, actor, now) {
            // All or nothing, and a mailbox was created meanwhile: rolled back; reported
            // like a row refused at the check, on its line.
            Err(StoreError::Exists(ext)) if mode == ImportMode::AllOrNothing => {
                if let Some(c) = candidates.iter().find(|c| c.user.extension == ext) {
                    rows[c.index].outcome =
                        ImportOutcome::Rejected(format!("mailbox {ext} already exists"));
                }
                return Ok(ImportReport {
                    rows,
                    committed: false,
                });
            }
            other => other?,
        };
        // Partial, and every row was refused at commit: nothing was imported.
        let committed = conflicts.len() < candidates.len();
        for Candidate { index, chosen, .. } in candidates {
            rows[index].outcome = if conflicts.contains(&index) {
                ImportOutcome::Rejected(format!("mailbox {} already exists", chosen.extension))
            } else {
                ImportOutcome::Created(chosen.issued())
            };
        }
        Ok(ImportReport { rows, committed })
    }

    /// An import's first phase, before any hashing or writing: every row's fate as far as
    /// the checks go (rejected, or not imported yet), and the rows that passed them.
    ///
    /// # Errors
    /// As [`Store::import_csv`], for a passcode that cannot be generated; or the store failing.
    fn check_import_rows(
        &self,
        body: &[csv::Record],
        columns: &[Column],
        headed: bool,
        now: Timestamp,
    ) -> Result<(Vec<ImportRow>, Vec<Candidate>)> {
        let policy = self.policy()?;
        let mut rows = Vec::with_capacity(body.len());
        let mut candidates = Vec::new();
        let mut first_line: HashMap<Extension, usize> = HashMap::new();
        for record in body {
            let parsed = parse_row(columns, &record.fields, headed);
            let (user, passcode) = match parsed {
                Ok(v) => v,
                Err((extension, reason)) => {
                    rows.push(ImportRow {
                        line: record.line,
                        extension,
                        outcome: ImportOutcome::Rejected(reason),
                    });
                    continue;
                }
            };
            let ext = user.extension.clone();
            let rejection = if let Some(line) = first_line.get(&ext) {
                Some(format!("mailbox {ext} already appears on line {line}"))
            } else if self.user(&ext, now)?.is_some() {
                Some(format!("mailbox {ext} already exists"))
            } else {
                let spec = PasscodeSpec {
                    passcode,
                    temporary: true,
                    ttl: None,
                };
                match choose(&policy, &ext, &spec, now) {
                    Ok(chosen) => {
                        candidates.push(Candidate {
                            index: rows.len(),
                            user,
                            chosen,
                        });
                        None
                    }
                    // The row's passcode breaks the policy: the row's fault.
                    Err(e @ StoreError::Rejected(_)) => Some(e.to_string()),
                    // No passcode can be generated (a policy that refuses nearly all, the
                    // RNG failing): no row can fix that, so the import fails as a whole,
                    // as a create or reset would.
                    Err(e) => return Err(e),
                }
            };
            first_line.entry(ext.clone()).or_insert(record.line);
            rows.push(ImportRow {
                line: record.line,
                extension: Some(ext),
                outcome: match rejection {
                    Some(reason) => ImportOutcome::Rejected(reason),
                    None => ImportOutcome::NotImported,
                },
            });
        }
        Ok((rows, candidates))
    }

    /// Hashes the passcodes of a bulk write (a reset or an import), and says when it is
    /// written: `now`, when it was asked for, plus the time hashing took, which delays each
    /// temporary passcode's expiry as much. Hashing thousands takes minutes: a lifetime
    /// counted from the start could have run out before its passcodes were printed, and the
    /// audit rows would be stamped before rows written meanwhile.
    fn hash_bulk<'c>(
        &self,
        chosen: impl Iterator<Item = &'c mut Chosen>,
        now: Timestamp,
    ) -> Result<(Vec<String>, Timestamp)> {
        let started = std::time::Instant::now();
        let mut chosen: Vec<&mut Chosen> = chosen.collect();
        let hashes = self
            .hasher
            .hash_all(&chosen.iter().map(|c| &c.passcode).collect::<Vec<_>>())?;
        let took = started.elapsed();
        for c in &mut chosen {
            c.delay(took);
        }
        Ok((hashes, now.saturating_add(took)))
    }

    /// An import's second phase: writes the candidates, with their `hashes`, in one
    /// transaction. Returns the candidates (by row index) found created meanwhile by someone
    /// else, which [`ImportMode::Partial`] leaves out.
    ///
    /// # Errors
    /// [`StoreError::Exists`] with [`ImportMode::AllOrNothing`] when one was (nothing is
    /// written); or the store failing.
    fn commit_import(
        &self,
        candidates: &[Candidate],
        hashes: &[String],
        mode: ImportMode,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Vec<usize>> {
        // Re-checked inside the transaction: a mailbox created meanwhile by someone else
        // rejects its row (partial) or the whole import (all or nothing).
        self.write(|tx| {
            let mut conflicts = Vec::new();
            for (c, hash) in candidates.iter().zip(hashes) {
                match insert_user(tx, &c.user, actor, now) {
                    Err(StoreError::Exists(_)) => {
                        if mode == ImportMode::AllOrNothing {
                            return Err(StoreError::Exists(c.user.extension.clone()));
                        }
                        conflicts.push(c.index);
                    }
                    other => {
                        other?;
                        install(tx, &c.chosen, hash, actor, now)?;
                    }
                }
            }
            Ok(conflicts)
        })
    }
}

/// Rows one import takes at most. All of them are written in one transaction, which holds
/// the database's write lock: 100,000 rows' statements take 3.4-3.8 s on the build
/// machine (`tests/load/import-write.sh`, an upper bound), inside the 10 s other writers (a
/// caller's login) wait for it; five times as many take 18.5 s.
pub const MAX_IMPORT_ROWS: usize = 100_000;

/// A CSV column vportal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Extension,
    Name,
    Email,
    Passcode,
}

const DEFAULT_COLUMNS: [Column; 4] = [
    Column::Extension,
    Column::Name,
    Column::Email,
    Column::Passcode,
];

/// A first row naming the `extension` column is a header, unless a field of it is all
/// digits: that is a data row's extension (a mailbox may be named "Extension"), and a header
/// holds none.
fn looks_like_header(fields: &[String]) -> bool {
    fields
        .iter()
        .any(|f| f.trim().eq_ignore_ascii_case("extension"))
        && !fields.iter().any(|f| digits(f))
}

/// Whether a CSV field is a number (as an extension is), spaces around it aside.
fn digits(field: &str) -> bool {
    let field = field.trim();
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit())
}

/// A first row that shows the whole file is not what the import reads, where every row
/// would otherwise be refused with "an extension is 1 to 15 digits": values separated by
/// `;` or tabs (a spreadsheet's export in many locales), or a header that does not name
/// `extension` (`mailbox,name,email`, read as data, would be refused alone and, with
/// `--partial`, the rows after it taken by position): a column vportal reads named beside
/// fields that are not digits, or words only, no field empty, when later rows hold numbers
/// (`numbered`).
fn misshapen_first_row(fields: &[String], numbered: bool) -> Result<(), String> {
    if let [only] = fields
        && let Some(separator) = [';', '\t'].into_iter().find(|c| only.contains(*c))
    {
        let separator = if separator == ';' { "';'" } else { "tabs" };
        return Err(format!(
            "the values are separated by {separator}: the import reads comma-separated \
             values (export the file as CSV with commas)"
        ));
    }
    let named = |f: &String| {
        ["name", "email", "passcode"].contains(&f.trim().to_ascii_lowercase().as_str())
    };
    let word = |f: &String| {
        let f = f.trim();
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_alphabetic() || matches!(c, ' ' | '_' | '-'))
    };
    let extension = fields
        .iter()
        .any(|f| f.trim().eq_ignore_ascii_case("extension"));
    let headed = (numbered && fields.iter().all(word))
        || (fields.iter().any(named) && !fields.iter().any(|f| digits(f)));
    if !extension && headed {
        return Err(
            "the header names no extension column (expected extension, name, email, \
             passcode); if this line is a mailbox, its extension is not a number"
                .to_owned(),
        );
    }
    Ok(())
}

fn header_columns(fields: &[String]) -> Result<Vec<Column>, String> {
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields {
        let column = match field.trim().to_ascii_lowercase().as_str() {
            "extension" => Column::Extension,
            "name" => Column::Name,
            "email" => Column::Email,
            "passcode" => Column::Passcode,
            _ => {
                return Err(format!(
                    "unknown column {:?} (expected extension, name, email, passcode)",
                    field.trim()
                ));
            }
        };
        if columns.contains(&column) {
            return Err(format!("column {:?} appears twice", field.trim()));
        }
        columns.push(column);
    }
    Ok(columns)
}

/// One data row → the mailbox and its passcode (if given). Errors never quote a passcode.
/// A CSV row refused: why, and its extension when that field is a valid one (so that the
/// report can name the mailbox whose name or email was wrong).
type RowError = (Option<Extension>, String);

/// `headed`: the file named its columns. Without a header, a name of digits only is
/// refused: `1001,4826` is a mailbox and its PIN, and the PIN would be stored in clear as
/// the name, shown by every listing.
fn parse_row(
    columns: &[Column],
    fields: &[String],
    headed: bool,
) -> Result<(NewUser, Option<Passcode>), RowError> {
    let extension = columns
        .iter()
        .zip(fields)
        .find(|(column, _)| **column == Column::Extension)
        .map(|(_, field)| field.trim())
        .filter(|field| !field.is_empty())
        .map(Extension::parse);
    let valid = extension.as_ref().and_then(|e| e.as_ref().ok()).cloned();
    let refuse = |reason: String| (valid.clone(), reason);
    if fields.len() > columns.len() {
        return Err(refuse(format!(
            "{} fields, expected at most {}",
            fields.len(),
            columns.len()
        )));
    }
    let extension = match extension {
        Some(Ok(extension)) => extension,
        Some(Err(e)) => return Err(refuse(format!("extension: {e}"))),
        None => return Err(refuse("extension: missing".to_owned())),
    };
    let (mut name, mut email, mut passcode) = (None, None, None);
    for (column, field) in columns.iter().zip(fields) {
        let value = field.trim();
        match column {
            Column::Extension => {}
            Column::Name
                if !headed && !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err(refuse(
                    "name: digits only (a passcode? a file without a header row has the \
                     columns extension,name,email,passcode)"
                        .to_owned(),
                ));
            }
            Column::Name => name = Some(value.to_owned()),
            Column::Email => email = Some(value.to_owned()),
            Column::Passcode if value.is_empty() => {}
            Column::Passcode => {
                passcode = Some(
                    Passcode::new(value.to_owned())
                        .map_err(|e| refuse(format!("passcode: {e}")))?,
                );
            }
        }
    }
    let user = NewUser {
        extension,
        name: clean_name(name).map_err(&refuse)?,
        email: clean_email(email).map_err(&refuse)?,
        passcode: None,
    };
    Ok((user, passcode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditQuery;
    use crate::store::testing::*;
    use std::time::Duration;

    fn add(s: &Store, e: &str, spec: Option<PasscodeSpec>) -> Issued {
        s.create_user(
            NewUser {
                extension: ext(e),
                name: Some("Alice".into()),
                email: Some("alice@example.com".into()),
                passcode: spec,
            },
            &cli(),
            T0,
        )
        .unwrap()
    }

    fn given(p: &str, temporary: bool) -> Option<PasscodeSpec> {
        Some(PasscodeSpec {
            passcode: Some(pin(p)),
            temporary,
            ttl: None,
        })
    }

    fn events(s: &Store) -> Vec<String> {
        let mut v: Vec<_> = s
            .audit(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        v.reverse();
        v
    }

    /// The lists' filters and the report count as locked and expired exactly what a login
    /// finds so, at the boundaries too.
    #[test]
    fn listed_as_locked_and_expired_as_a_login_finds_them() {
        let s = store();
        let at = T0.unix();
        // (extension, locked_until, locked_permanently, temporary, expires_at)
        type Row<'a> = (&'a str, Option<i64>, bool, bool, Option<i64>);
        let rows: [Row<'_>; 8] = [
            ("1001", None, false, false, None),
            ("1002", Some(at - 1), false, false, None),
            ("1003", Some(at), false, false, None),
            ("1004", Some(at + 1), false, false, None),
            ("1005", None, true, false, None),
            ("1006", None, false, true, Some(at - 1)),
            ("1007", None, false, true, Some(at)),
            ("1008", None, false, true, Some(at + 1)),
        ];
        for (e, until, permanent, temporary, expires) in rows {
            add(&s, e, given("4826", temporary));
            s.write(|tx| {
                tx.execute(
                    "UPDATE users SET locked_until = ?2, locked_permanently = ?3,
                         temporary_expires_at = ?4 WHERE extension = ?1",
                    (e, until, permanent, expires),
                )?;
                Ok(())
            })
            .unwrap();
        }
        let listed = |filter: UserFilter| -> Vec<String> {
            s.users(filter, T0)
                .unwrap()
                .into_iter()
                .map(|u| u.extension.to_string())
                .collect()
        };
        let login_finds = |f: &dyn Fn(&UserRow) -> bool| -> Vec<String> {
            rows.iter()
                .map(|r| {
                    UserRow::load(&s.conn.lock().unwrap(), &ext(r.0))
                        .unwrap()
                        .unwrap()
                })
                .filter(|row| f(row))
                .map(|row| row.extension.to_string())
                .collect()
        };
        let locked = login_finds(&|row| row.lock_at(T0).is_some());
        let expired = login_finds(&|row| row.expired_at(T0));
        assert_eq!(locked, ["1004", "1005"]);
        assert_eq!(expired, ["1006", "1007"]);
        let filter = |locked, expired| UserFilter {
            temporary: None,
            locked,
            expired,
        };
        assert_eq!(listed(filter(Some(true), None)), locked);
        assert_eq!(listed(filter(None, Some(true))), expired);
        let report = s.report(T0).unwrap();
        assert_eq!((report.locked, report.expired), (2, 2));
    }

    #[test]
    fn create_with_generated_temporary_passcode() {
        let s = store();
        let issued = add(&s, "1001", Some(PasscodeSpec::generated_temporary()));
        let generated = issued.generated.unwrap();
        assert_eq!(generated.expose().len(), 6);
        assert!(issued.temporary);
        assert_eq!(
            issued.expires_at,
            Some(T0.saturating_add(Duration::from_secs(72 * 3_600)))
        );
        let info = s.user(&ext("1001"), T0).unwrap().unwrap();
        assert!(info.temporary && info.has_passcode && !info.expired && !info.locked);
        assert_eq!(info.name.as_deref(), Some("Alice"));
        assert_eq!(events(&s), ["user.created", "passcode.temporary_set"]);
        assert!(matches!(
            s.create_user(NewUser::new(ext("1001")), &cli(), T0),
            Err(StoreError::Exists(_))
        ));
    }

    #[test]
    fn given_passcodes_must_pass_the_rules_and_nothing_is_half_created() {
        let s = store();
        let err = s
            .create_user(
                NewUser {
                    extension: ext("1001"),
                    name: None,
                    email: None,
                    passcode: given("1234", true),
                },
                &cli(),
                T0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("sequential,common"), "{err}");
        assert!(!err.to_string().contains("1234"));
        assert!(s.user(&ext("1001"), T0).unwrap().is_none());
        assert!(events(&s).is_empty());
        let issued = add(&s, "1001", given("4826", false));
        assert_eq!(issued.generated, None);
        assert!(!s.user(&ext("1001"), T0).unwrap().unwrap().temporary);
        assert_eq!(events(&s), ["user.created", "passcode.changed"]);
    }

    #[test]
    fn names_and_emails_are_checked() {
        let s = store();
        let bad = |name: Option<&str>, email: Option<&str>| {
            s.create_user(
                NewUser {
                    extension: ext("1001"),
                    name: name.map(Into::into),
                    email: email.map(Into::into),
                    passcode: None,
                },
                &cli(),
                T0,
            )
            .is_err()
        };
        assert!(bad(Some("a\u{7}b"), None));
        assert!(bad(Some(&"x".repeat(129)), None));
        assert!(bad(None, Some("no-at-sign")));
        assert!(bad(None, Some("a b@example.com")));
        assert!(bad(None, Some("@example.com")));
        assert!(!bad(Some("  "), Some("")));
        assert_eq!(s.user(&ext("1001"), T0).unwrap().unwrap().name, None);
        // What is wrong is said: a line break (a CSV value quoted across lines) as such.
        assert_eq!(
            clean_name(Some("Eve\nSmith".into())).unwrap_err(),
            "name: a line break is not allowed (one line only)"
        );
        assert_eq!(
            clean_name(Some("a\u{7}b".into())).unwrap_err(),
            "name: control characters are not allowed"
        );
        // A list must show a name as it is: no direction override, isolate or invisible one.
        for spoof in [
            "Ann\u{202E}live",
            "a\u{2067}b\u{2069}",
            "Bo\u{200B}b",
            "x\u{FEFF}y",
        ] {
            assert_eq!(
                clean_name(Some(spoof.into())).unwrap_err(),
                "name: direction overrides and invisible characters are not allowed",
                "{spoof:?}"
            );
            assert!(
                bad(None, Some(&format!("{spoof}@example.com"))),
                "{spoof:?}"
            );
        }
        // What scripts need stays: Persian's zero-width non-joiner, a right-to-left mark.
        assert!(clean_name(Some("می\u{200C}خواهم".into())).is_ok());
        assert!(clean_name(Some("\u{200F}שרה".into())).is_ok());
    }

    #[test]
    fn reset_clears_locks_and_uses_the_ttl() {
        let s = store();
        add(&s, "1001", given("4826", false));
        s.write(|tx| {
            tx.execute(
                "UPDATE users SET locked_until = ?1, failed_attempts = 3, lockouts = 2",
                [T0.unix() + 600],
            )?;
            Ok(())
        })
        .unwrap();
        assert!(s.user(&ext("1001"), T0).unwrap().unwrap().locked);
        let spec = PasscodeSpec {
            passcode: None,
            temporary: true,
            ttl: Some(Ttl::from_secs(20 * 60).unwrap()),
        };
        let issued = s.reset_passcode(&ext("1001"), &spec, &cli(), T0).unwrap();
        assert!(issued.generated.is_some());
        assert_eq!(
            issued.expires_at,
            Some(T0.saturating_add(Duration::from_secs(1_200)))
        );
        let info = s.user(&ext("1001"), T0).unwrap().unwrap();
        assert!(!info.locked && info.temporary && info.failed_attempts == 0);
        let later = T0.saturating_add(Duration::from_secs(1_200));
        assert!(s.user(&ext("1001"), later).unwrap().unwrap().expired);
        assert_eq!(
            events(&s)[2..],
            [
                "user.unlocked".to_owned(),
                "passcode.temporary_set".to_owned()
            ]
        );
        assert!(matches!(
            s.reset_passcode(&ext("9999"), &spec, &cli(), T0),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn bulk_reset_is_all_or_nothing() {
        let s = store();
        for e in ["1001", "1002", "1003"] {
            add(&s, e, given("4826", false));
        }
        let missing = Selection::Extensions(vec![ext("1001"), ext("4040")]);
        assert!(matches!(
            s.reset_many(&missing, true, None, &cli(), T0),
            Err(StoreError::NotFound(e)) if e.as_str() == "4040"
        ));
        assert!(!s.user(&ext("1001"), T0).unwrap().unwrap().temporary);
        let two = Selection::Extensions(vec![ext("1002"), ext("1001"), ext("1002")]);
        let issued = s.reset_many(&two, true, None, &cli(), T0).unwrap();
        let exts: Vec<_> = issued.iter().map(|i| i.extension.as_str()).collect();
        assert_eq!(exts, ["1001", "1002"]);
        assert!(issued.iter().all(|i| i.generated.is_some()));
        let all = s
            .reset_many(&Selection::All, true, None, &cli(), T0)
            .unwrap();
        assert_eq!(all.len(), 3);
        let temporary = UserFilter {
            temporary: Some(true),
            ..UserFilter::default()
        };
        assert_eq!(s.users(temporary, T0).unwrap().len(), 3);
        // A mailbox deleted while the passcodes are hashed is no longer one of "all": the
        // others are reset all the same. (The trigger deletes 1003 as 1001 is reset, inside
        // the very transaction, as late as a deletion can come.)
        s.write(|tx| {
            tx.execute_batch(
                "CREATE TEMP TRIGGER meanwhile AFTER UPDATE ON users WHEN NEW.extension = '1001'
                 BEGIN DELETE FROM users WHERE extension = '1003'; END;",
            )?;
            Ok(())
        })
        .unwrap();
        let all = s
            .reset_many(&Selection::All, false, None, &cli(), T0)
            .unwrap();
        let exts: Vec<_> = all.iter().map(|i| i.extension.as_str()).collect();
        assert_eq!(exts, ["1001", "1002"]);
        assert_eq!(s.users(temporary, T0).unwrap().len(), 0);
    }

    /// A bulk reset's temporary passcodes live their whole lifetime from when they are
    /// written, and are audited then: hashing thousands takes minutes, and a short lifetime
    /// counted from the request had run out before its passcodes were printed.
    #[test]
    fn a_bulk_resets_lifetime_counts_from_its_write() {
        let s = store();
        // Enough mailboxes that hashing takes more than a second on two permits (times
        // are whole seconds).
        let started = std::time::Instant::now();
        s.hasher.hash(&pin("4826")).unwrap();
        let one = started.elapsed().as_secs_f64().max(1e-4);
        let count = ((2.0 * 1.5 / one).ceil() as u32).clamp(2, 5_000);
        for i in 0..count {
            add(&s, &format!("{}", 10_000 + i), None);
        }
        let ttl = Ttl::new(std::time::Duration::from_secs(600)).unwrap();
        let started = std::time::Instant::now();
        let issued = s
            .reset_many(&Selection::All, true, Some(ttl), &cli(), T0)
            .unwrap();
        let took = i64::try_from(started.elapsed().as_secs()).unwrap();
        let written = issued[0].expires_at.unwrap().unix() - 600;
        assert!(
            (T0.unix() + 1..=T0.unix() + took).contains(&written),
            "written {written}, asked {}, took {took} s",
            T0.unix()
        );
        assert!(issued.iter().all(|i| i.expires_at == issued[0].expires_at));
        let audited = s.audit(&AuditQuery::default()).unwrap();
        assert_eq!(audited[0].event, "passcode.temporary_set");
        assert_eq!(audited[0].time.unix(), written);
    }

    #[test]
    fn list_filters() {
        let s = store();
        add(&s, "200", given("4826", false));
        add(&s, "1001", Some(PasscodeSpec::generated_temporary()));
        add(&s, "1002", Some(PasscodeSpec::generated_temporary()));
        s.write(|tx| {
            tx.execute(
                "UPDATE users SET locked_permanently = 1 WHERE extension = '1002'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let list = |f| -> Vec<String> {
            s.users(f, T0.saturating_add(Duration::from_secs(80 * 3_600)))
                .unwrap()
                .into_iter()
                .map(|u| u.extension.to_string())
                .collect()
        };
        assert_eq!(list(UserFilter::default()), ["200", "1001", "1002"]);
        let f = |temporary, locked, expired| UserFilter {
            temporary,
            locked,
            expired,
        };
        assert_eq!(list(f(Some(true), None, None)), ["1001", "1002"]);
        assert_eq!(list(f(Some(false), None, None)), ["200"]);
        assert_eq!(list(f(None, Some(true), None)), ["1002"]);
        assert_eq!(list(f(None, None, Some(true))), ["1001", "1002"]);
        assert_eq!(list(f(None, Some(false), Some(true))), ["1001"]);
    }

    #[test]
    fn delete_and_unlock() {
        let s = store();
        add(&s, "1001", given("4826", false));
        assert!(
            !s.unlock(&ext("1001"), &cli(), T0).unwrap(),
            "was not locked"
        );
        s.delete_user(&ext("1001"), &cli(), T0).unwrap();
        assert!(matches!(
            s.delete_user(&ext("1001"), &cli(), T0),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.unlock(&ext("1001"), &cli(), T0),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            events(&s),
            [
                "user.created",
                "passcode.changed",
                "user.unlocked",
                "user.deleted"
            ]
        );
    }

    #[test]
    fn an_import_takes_at_most_max_import_rows() {
        let s = store();
        let rows = |n: usize| {
            (0..n).fold(String::from("extension\n"), |mut text, i| {
                text.push_str(&format!("{}\n", 2_000_000 + i));
                text
            })
        };
        let refused = s.import_csv(&rows(MAX_IMPORT_ROWS + 1), ImportMode::Partial, &cli(), T0);
        match refused {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains("100001 rows"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.users(UserFilter::default(), T0).unwrap().len(), 0);
    }

    #[test]
    fn an_empty_extension_is_missing_not_malformed() {
        let s = store();
        for text in [",Nobody\n", "  ,Nobody\n", "extension,name\n,Nobody\n"] {
            let report = s.import_csv(text, ImportMode::Partial, &cli(), T0).unwrap();
            let reasons: Vec<_> = report.rejected().map(|(_, r)| r.to_owned()).collect();
            assert_eq!(reasons, ["extension: missing"], "{text:?}");
        }
    }

    #[test]
    fn import_all_or_nothing_names_bad_lines() {
        let s = store();
        add(&s, "1005", None);
        let text = "extension,name,email,passcode\n\
                    1001,Alice,alice@example.com,4826\n\
                    1002,Bob,,\n\
                    1003,Carol,carol@example.com,1234\n\
                    10x4,Dan,,\n\
                    1001,Again,,\n\
                    1005,Exists,,\n\
                    1006,Eve,not-an-email,\n\
                    1007,A,b@c,4826,extra\n";
        let report = s
            .import_csv(text, ImportMode::AllOrNothing, &cli(), T0)
            .unwrap();
        assert!(!report.committed);
        let rejected: Vec<_> = report.rejected().map(|(l, _)| l).collect();
        assert_eq!(rejected, [4, 5, 6, 7, 8, 9]);
        // Each rejected row names its mailbox when that field is a valid extension, whatever
        // else is wrong (10x4 is not one).
        let named: Vec<_> = report
            .rows
            .iter()
            .filter(|r| matches!(r.outcome, ImportOutcome::Rejected(_)))
            .map(|r| r.extension.as_ref().map(Extension::as_str))
            .collect();
        assert_eq!(
            named,
            [
                Some("1003"),
                None,
                Some("1001"),
                Some("1005"),
                Some("1006"),
                Some("1007")
            ]
        );
        let reasons: Vec<_> = report.rejected().map(|(_, r)| r.to_owned()).collect();
        assert!(reasons[0].contains("sequential"), "{reasons:?}");
        assert!(reasons[2].contains("line 2"), "{reasons:?}");
        assert!(
            reasons
                .iter()
                .all(|r| !r.contains("1234") && !r.contains("4826"))
        );
        assert!(
            s.user(&ext("1001"), T0).unwrap().is_none(),
            "nothing half-imported"
        );
        assert_eq!(report.created().count(), 0);
    }

    /// A store where someone creates a mailbox while an import hashes: `trigger`, a
    /// temporary trigger, does it inside the import's own transaction, after the rows were
    /// checked.
    fn store_creating_meanwhile(trigger: &str) -> Store {
        let s = store();
        s.write(|tx| {
            tx.execute_batch(trigger)?;
            Ok(())
        })
        .unwrap();
        s
    }

    #[test]
    fn import_all_or_nothing_refused_at_commit_names_the_row() {
        // 1002 is created as 1001 is inserted.
        let s = store_creating_meanwhile(
            "CREATE TEMP TRIGGER meanwhile AFTER INSERT ON users WHEN NEW.extension = '1001'
             BEGIN INSERT INTO users (extension, created_at) VALUES ('1002', 0); END;",
        );
        let report = s
            .import_csv(
                "extension\n1001\n1002\n",
                ImportMode::AllOrNothing,
                &cli(),
                T0,
            )
            .unwrap();
        assert!(!report.committed, "{report:?}");
        let rejected: Vec<_> = report.rejected().map(|(line, _)| line).collect();
        assert_eq!(rejected, [3], "the row of the mailbox created meanwhile");
        assert!(matches!(report.rows[0].outcome, ImportOutcome::NotImported));
        assert!(
            s.user(&ext("1001"), T0).unwrap().is_none(),
            "nothing half-imported"
        );
    }

    #[test]
    fn import_partial_whose_every_row_is_refused_at_commit_is_not_committed() {
        // 1001 itself is created just before the import inserts it.
        let s = store_creating_meanwhile(
            "CREATE TEMP TRIGGER meanwhile BEFORE INSERT ON users WHEN NEW.extension = '1001'
             AND NOT EXISTS (SELECT 1 FROM users WHERE extension = '1001')
             BEGIN INSERT INTO users (extension, created_at) VALUES ('1001', 0); END;",
        );
        let report = s
            .import_csv("extension\n1001\n", ImportMode::Partial, &cli(), T0)
            .unwrap();
        assert_eq!(report.created().count(), 0, "{report:?}");
        assert_eq!(report.rejected().count(), 1, "{report:?}");
        assert!(
            !report.committed,
            "no row imported, yet committed: {report:?}"
        );
    }

    #[test]
    fn import_partial_and_headerless() {
        let s = store();
        let text = "1001,Alice,alice@example.com,4826\r\n1002,\"Smith, Bob\"\r\n1003,,,12\r\n";
        let report = s.import_csv(text, ImportMode::Partial, &cli(), T0).unwrap();
        assert!(report.committed, "{report:?}");
        let created: Vec<_> = report.created().map(|i| i.extension.as_str()).collect();
        assert_eq!(created, ["1001", "1002"]);
        let issued: Vec<_> = report.created().collect();
        assert_eq!(issued[0].generated, None, "given passcodes are not echoed");
        assert!(issued[1].generated.is_some());
        assert!(issued.iter().all(|i| i.temporary));
        assert_eq!(report.rejected().map(|(l, _)| l).collect::<Vec<_>>(), [3]);
        let bob = s.user(&ext("1002"), T0).unwrap().unwrap();
        assert_eq!(bob.name.as_deref(), Some("Smith, Bob"));
        // Header with columns in another order and no passcode column.
        let text = "Email,Extension\nx@example.com,2001\n";
        let report = s
            .import_csv(text, ImportMode::AllOrNothing, &cli(), T0)
            .unwrap();
        assert!(report.committed);
        assert!(report.created().all(|i| i.generated.is_some()));
        assert!(
            s.import_csv("extension,pin\n1,2\n", ImportMode::Partial, &cli(), T0)
                .is_err()
        );
        // Without a header, `EXT,PIN` would store the PIN in clear as the name: refused,
        // and the reason does not quote it. With a header naming the column, digits are a
        // name like any other.
        let report = s
            .import_csv("4001,4826\n", ImportMode::Partial, &cli(), T0)
            .unwrap();
        let reasons: Vec<_> = report
            .rejected()
            .map(|(_, reason)| reason.to_owned())
            .collect();
        assert_eq!(reasons.len(), 1, "{report:?}");
        assert!(reasons[0].starts_with("name: digits only"), "{reasons:?}");
        assert!(!reasons[0].contains("4826"), "{reasons:?}");
        assert!(s.user(&ext("4001"), T0).unwrap().is_none());
        let report = s
            .import_csv(
                "extension,name\n4002,4826\n",
                ImportMode::AllOrNothing,
                &cli(),
                T0,
            )
            .unwrap();
        assert!(report.committed, "{report:?}");
        // A file the import cannot read as such says so once, naming the first line.
        for (text, says) in [
            (
                "extension;name;email;passcode\n3104;A;;\n",
                "separated by ';'",
            ),
            ("3104;A\n3105;B\n", "separated by ';'"),
            ("3104\tA\n", "separated by tabs"),
            (
                "name,email\nBob,b@example.com\n",
                "names no extension column",
            ),
            (
                "mailbox,name,email,passcode\n6001,Ann,,\n",
                "names no extension column",
            ),
            ("ext,name\n6001,Ann\n", "names no extension column"),
            ("Mailbox Number\n6001\n", "names no extension column"),
        ] {
            let e = s
                .import_csv(text, ImportMode::Partial, &cli(), T0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 1: ") && e.contains(says), "{text:?}: {e}");
        }
        // Nothing imported: the hint to import the good rows only when there are some.
        let some = s
            .import_csv("3301\nx\n", ImportMode::AllOrNothing, &cli(), T0)
            .unwrap();
        assert_eq!(
            some.nothing_imported("use --partial"),
            "nothing imported: 1 row(s) rejected (use --partial to import the good rows)"
        );
        let none = s
            .import_csv("x\ny\n", ImportMode::AllOrNothing, &cli(), T0)
            .unwrap();
        assert_eq!(
            none.nothing_imported("use --partial"),
            "nothing imported: every row (2) was rejected"
        );
        // One column of extensions is a file like any other.
        let report = s
            .import_csv("3201\n3202\n", ImportMode::AllOrNothing, &cli(), T0)
            .unwrap();
        assert!(report.committed, "{report:?}");
        // A headerless first row for a mailbox named "Extension" is data, not a header.
        let report = s
            .import_csv(
                "3001,Extension,,\n3002,Bob,,\n",
                ImportMode::AllOrNothing,
                &cli(),
                T0,
            )
            .unwrap();
        assert!(report.committed, "{report:?}");
        let named = s.user(&ext("3001"), T0).unwrap().unwrap();
        assert_eq!(named.name.as_deref(), Some("Extension"));
        assert!(
            s.import_csv("1009,\"open", ImportMode::Partial, &cli(), T0)
                .is_err()
        );
    }
}
