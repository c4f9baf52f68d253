//! The database schema and its migrations.
//!
//! Migrations are applied in order when a store opens; `PRAGMA user_version` records how many
//! have run. Each runs in its own `BEGIN IMMEDIATE` transaction, so two processes opening a
//! new database at once cannot both apply it.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations, oldest first. Never edit one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE users (
        extension            TEXT PRIMARY KEY NOT NULL,
        name                 TEXT,
        email                TEXT,
        -- argon2id PHC string (peppered); NULL until a passcode is set.
        passcode_hash        TEXT,
        temporary            INTEGER NOT NULL DEFAULT 0 CHECK (temporary IN (0, 1)),
        temporary_expires_at INTEGER,
        -- Consecutive failed logins since the last success, unlock or lock.
        failed_attempts      INTEGER NOT NULL DEFAULT 0,
        -- Locks imposed since the last success or unlock (drives the doubling).
        lockouts             INTEGER NOT NULL DEFAULT 0,
        locked_until         INTEGER,
        locked_permanently   INTEGER NOT NULL DEFAULT 0 CHECK (locked_permanently IN (0, 1)),
        last_login_at        INTEGER,
        -- When the mailbox owner last chose their own passcode; NULL = never.
        passcode_changed_at  INTEGER,
        created_at           INTEGER NOT NULL
    ) STRICT;

    -- Passcodes chosen for each mailbox, newest last, for the recently_used rule.
    CREATE TABLE passcode_history (
        id        INTEGER PRIMARY KEY,
        extension TEXT NOT NULL REFERENCES users (extension) ON DELETE CASCADE,
        hash      TEXT NOT NULL,
        set_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX passcode_history_by_extension ON passcode_history (extension, id);

    -- Append-only. No foreign key: the trail outlives deleted mailboxes.
    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        event     TEXT NOT NULL,
        extension TEXT,
        actor     TEXT NOT NULL,
        source    TEXT,
        call_id   TEXT,
        outcome   TEXT NOT NULL,
        detail    TEXT
    ) STRICT;
    CREATE INDEX audit_by_extension ON audit (extension, id);
    CREATE INDEX audit_by_event ON audit (event, id);

    -- Admin API tokens: only a keyed hash of each token is kept.
    CREATE TABLE admin_tokens (
        name         TEXT PRIMARY KEY NOT NULL,
        hash         TEXT NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER
    ) STRICT;

    -- Key/value settings: the active passcode policy (TOML) and the pepper fingerprint.
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;
    ",
];

/// The tables the migrations make: a database holding them all is vportal's.
const TABLES: [&str; 5] = [
    "users",
    "passcode_history",
    "audit",
    "admin_tokens",
    "settings",
];

/// Refuses, before anything is written to it, a database vportal did not make: one with
/// tables but not vportal's (a wrong path to another program's database, which turning WAL
/// on and adding tables would change for good), or vportal's tables with no schema version.
///
/// # Errors
/// [`StoreError::NotVportal`], [`StoreError::SchemaVersionLost`], or a database error (a
/// file that is not a database at all).
pub(crate) fn check_ours(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
             ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let ours = TABLES.iter().all(|t| tables.iter().any(|have| have == t));
    match (version, tables.is_empty(), ours) {
        // New (or being made by another process right now: its tables are not committed).
        (0, true, _) => Ok(()),
        (0, false, true) => Err(StoreError::SchemaVersionLost {
            path: path.to_owned(),
            supported: SCHEMA_VERSION,
        }),
        (_, _, false) => Err(StoreError::NotVportal(path.to_owned())),
        _ => Ok(()),
    }
}

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`].
///
/// # Errors
/// [`StoreError::SchemaTooNew`] when a newer vportal has migrated this database, or a
/// database error.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Up to date (every open but the first after an upgrade): a read, no write lock.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "applied database migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_database_or_vportals_own_is_taken() {
        let path = Path::new("x.db");
        let conn = Connection::open_in_memory().unwrap();
        check_ours(&conn, path).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let err = check_ours(&conn, path).unwrap_err();
        assert!(matches!(err, StoreError::NotVportal(_)), "{err}");
        // Another program's schema version says nothing about whose it is.
        conn.pragma_update(None, "user_version", 1).unwrap();
        assert!(matches!(
            check_ours(&conn, path),
            Err(StoreError::NotVportal(_))
        ));

        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE extra (x)").unwrap();
        check_ours(&conn, path).unwrap();
        // As `sqlite3 .dump` restores it: the tables without the version.
        conn.pragma_update(None, "user_version", 0).unwrap();
        let err = check_ours(&conn, path).unwrap_err().to_string();
        assert!(
            err.contains("no schema version")
                && err.contains("sqlite3 x.db 'PRAGMA user_version = 1'")
                && !err.contains('\n'),
            "{err}"
        );
        // The suggested command stays one command whatever the path.
        for (path, word) in [
            ("my db/it's.db", r"'my db/it'\''s.db'"),
            ("$HOME/x.db", "'$HOME/x.db'"),
            ("-x.db", "./-x.db"),
            ("-my db.db", "'./-my db.db'"),
        ] {
            let err = check_ours(&conn, Path::new(path)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`sqlite3 {word} 'PRAGMA user_version = 1'`")),
                "{err}"
            );
        }
    }

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
