//! The credential store: mailboxes, passcodes, lockouts, admin tokens and the audit trail.
//!
//! The only module that knows SQL. Everything else sees [`Store`], whose methods are named
//! after what callers and admins do: [`Store::verify`], [`Store::change_passcode`],
//! [`Store::reset_passcode`], [`Store::unlock`], [`Store::import_csv`], …
//!
//! - Every operation is one SQLite transaction and writes its audit event in that same
//!   transaction: an operation and its audit row land together or not at all.
//! - Write transactions begin `IMMEDIATE` and the connection waits up to ten seconds on a busy
//!   database, so the CLI and a running server can share one file (WAL mode) without
//!   "database is locked" reaching anybody.
//! - argon2 work happens outside transactions, so a login in progress never holds the
//!   database's write lock for the length of a hash.
//! - Time is an argument (`now`): the store never reads the clock.
//! - No passcode ever reaches an audit row, a log line or an error message.

mod audit;
mod csv;
mod hash;
mod login;
pub mod pepper;
pub mod policy;
mod report;
mod schema;
mod tokens;
mod types;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

pub use audit::{AuditEvent, AuditQuery, Event, MAX_AUDIT_ROWS};
pub use csv::{CsvError, text as csv_text};
pub use hash::{HashError, Hasher};
pub use login::{CHANGE_OUTCOMES, ChangeOutcome, LOGIN_OUTCOMES, Login, VerifyOutcome};
pub use pepper::{Pepper, PepperError, PepperSource};
pub use policy::{
    GenerateError, Lock, Policy, PolicyError, Ttl, TtlOutOfRange, Violation, Violations,
};
pub use report::Report;
pub use tokens::{AdminToken, CONFIGURED_TOKEN_NAME, TokenInfo, check_token_name};
pub(crate) use types::SecretText;
pub use types::{
    Actor, Extension, InvalidExtension, MAX_EXTENSION_LEN, MAX_PASSCODE_LEN, Passcode,
    PasscodeTooLong,
};
pub use users::{
    ImportMode, ImportOutcome, ImportReport, ImportRow, Issued, MAX_IMPORT_ROWS, NewUser,
    PasscodeSpec, Selection, UserFilter, UserInfo,
};

use crate::time::Timestamp;

/// How long a connection waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings key holding the active policy as TOML.
const POLICY_KEY: &str = "policy";

/// The settings key holding a MAC that tells whether the configured pepper is this
/// database's.
const PEPPER_CHECK_KEY: &str = "pepper_check";

/// Why the database cannot take an operation: SQLite's codes, said as what to do about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Another process held the database's write lock all through the busy timeout.
    #[error(
        "the database is busy: another process held its write lock for longer than vportal \
         waits (10 s for a change); try again"
    )]
    Busy,
    /// The database file, or the file system holding it, is read-only.
    #[error(
        "the database is read-only: check the mode and owner of the database file and its \
         directory, and that the file system is mounted read-write"
    )]
    ReadOnly,
    /// SQLite cannot create its `-wal` and `-shm` files beside the database.
    #[error(
        "the database's directory is not writable: SQLite keeps its -wal and -shm files \
         beside the database"
    )]
    ReadOnlyDirectory,
    /// The disk holding the database is full.
    #[error("the disk holding the database is full")]
    DiskFull,
    /// The operating system failed a read or write of the database's files.
    #[error(
        "disk I/O error on the database's files (a full disk or a file-size limit is the usual \
         cause)"
    )]
    DiskIo,
    /// The database file was replaced (a backup restored over it, a `mv`) or removed while
    /// this process had it open: its connections still reach the old file, gone from the
    /// path, so what it wrote there would be lost.
    #[error(
        "the database file was replaced while vportal had it open; restart vportal to use the \
         file there now"
    )]
    Replaced,
    /// The database file was removed while this process had it open: what it held is
    /// saved beside it ([`recovered_path`]), and a restart is refused until that copy is
    /// moved into place or removed ([`StoreError::Recoverable`]).
    #[error(
        "the database file was removed while vportal had it open; what it held is saved \
         beside it, with .recovered added to its name (the log says where, or why it could \
         not be): stop vportal, move that copy into the database's place, then start it"
    )]
    Removed,
    /// The database file was removed while this process had it open, and what it held
    /// could not be saved.
    #[error(
        "the database file was removed while vportal had it open, and what it held could not \
         be saved (the log says why): it is lost when vportal stops; restore the database \
         from a backup"
    )]
    RemovedUnsaved,
}

impl StoreError {
    /// Whether this is the stored policy that cannot be read (written by another vportal,
    /// or edited by hand): every login fails until it is reset.
    pub fn is_unreadable_policy(&self) -> bool {
        matches!(self, Self::Setting { key, .. } if *key == POLICY_KEY)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let rusqlite::Error::SqliteFailure(failure, _) = &e else {
            return Self::Database(e);
        };
        let unavailable = match failure.code {
            _ if failure.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY => {
                Unavailable::ReadOnlyDirectory
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Unavailable::Busy,
            ErrorCode::ReadOnly => Unavailable::ReadOnly,
            ErrorCode::DiskFull => Unavailable::DiskFull,
            ErrorCode::SystemIoFailure => Unavailable::DiskIo,
            _ => return Self::Database(e),
        };
        Self::Unavailable(unavailable)
    }
}

/// What a store operation can fail with. No variant ever carries a passcode.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    /// The database cannot take the operation now (busy) or at all until an operator acts
    /// (read-only, disk full).
    #[error("{0}")]
    Unavailable(Unavailable),
    /// The database file could not be created.
    #[error("creating {}: {source}", .path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// There is no database file and the caller did not ask to create one.
    #[error("no database at {} (run `vportal init` first)", .0.display())]
    NoDatabase(PathBuf),
    /// There is no database file, but a copy a running vportal saved when the file was
    /// removed under it ([`recovered_path`]): a new, empty database would hide it.
    #[error(
        "no database at {}, but {} holds its data, saved by the vportal that had it open \
         when it was removed: move that file into its place (with no -wal or -shm file \
         beside it), or remove it to start afresh",
        .0.display(),
        recovered_path(.0).display()
    )]
    Recoverable(PathBuf),
    /// The database file is there but empty (a copy or restore cut short): taken for a new
    /// database, every mailbox would silently be gone.
    #[error(
        "the database {} is empty (0 bytes): restore it from a backup, or remove it and run \
         `vportal init`",
        .0.display()
    )]
    EmptyDatabase(PathBuf),
    /// No mailbox with this extension.
    #[error("no mailbox {0}")]
    NotFound(Extension),
    /// A mailbox with this extension exists already.
    #[error("mailbox {0} already exists")]
    Exists(Extension),
    /// The passcode breaks the policy; the codes say which rules.
    #[error("passcode refused by policy: {0}")]
    Rejected(Violations),
    /// A field other than a passcode is malformed (name, email, token name).
    #[error("{0}")]
    Invalid(String),
    /// The policy about to be stored is inconsistent.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A stored setting cannot be read back.
    #[error("stored setting {key} is unreadable: {reason}")]
    Setting {
        /// The settings key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A passcode could not be generated.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The configured pepper is not the one this database's hashes were made with.
    #[error(
        "the configured pepper does not match this database; every passcode check would fail \
         (use the pepper file created with the database, or its value in VPORTAL_PEPPER)"
    )]
    PepperMismatch,
    /// The file is an SQLite database, but not vportal's: its tables are not vportal's.
    #[error(
        "{} is not a vportal database (it holds other tables): give the path of vportal's \
         database, or of a new file",
        .0.display()
    )]
    NotVportal(PathBuf),
    /// vportal's tables without the schema version that says which migrations made them, as
    /// a restore through `sqlite3 .dump` leaves them.
    #[error(
        "{} holds vportal's tables but no schema version (a restore through `sqlite3 .dump` \
         loses it): set it back to that of the vportal that made the dump (this one's is \
         {supported}: `sqlite3 {} 'PRAGMA user_version = {supported}'`)",
        .path.display(),
        shell_word(.path)
    )]
    SchemaVersionLost {
        /// The database file.
        path: PathBuf,
        /// The schema version this build writes.
        supported: i64,
    },
    /// A newer vportal has migrated this database.
    #[error("database schema version {found} is newer than this vportal supports ({supported})")]
    SchemaTooNew {
        /// The database's `user_version`.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// An admin token with this name exists already.
    #[error("admin token {0:?} already exists")]
    TokenExists(String),
    /// No admin token with this name. A name that could be a token's secret (one pasted
    /// in its place) is not repeated.
    #[error("no admin token {}", quoted_token_name(.0))]
    TokenNotFound(String),
    /// The mailbox kept changing under a login or change in progress.
    #[error("mailbox {0} changed repeatedly during the operation; try again")]
    Contention(Extension),
}

/// A token name as an error quotes it: `"ops"`, or words instead when it could be a secret
/// (a token, or something as long as the shortest token the config takes).
fn quoted_token_name(name: &str) -> String {
    if name.starts_with(tokens::TOKEN_PREFIX) || name.len() >= crate::admin::MIN_CONFIGURED_TOKEN {
        "of that name (it looks like a token itself, not a token's name: `vportal token list` \
         shows the names)"
            .to_owned()
    } else {
        format!("{name:?}")
    }
}

/// Convenience alias for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The credential store. Cheap to share (`Arc<Store>`); all methods take `&self`.
///
/// Two SQLite connections per store, used for short transactions only: one writes, the
/// other reads, so that reads (the API's lists, a login's first look at its mailbox) go on
/// from the WAL while a write waits for another process's lock. Other processes (the CLI
/// next to a running server) open their own store on the same file.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// The reading connection (`query_only`); none for a store in memory, which has only
    /// the one.
    reader: Option<Mutex<Connection>>,
    /// The database file is read-only to this process.
    read_only: bool,
    /// How long a write waits for another process's lock ([`BUSY_TIMEOUT`]).
    busy_timeout: Duration,
    /// The file opened; none for a store in memory.
    file: Option<OpenedFile>,
    hasher: Hasher,
}

/// The database file a store opened, to tell when another file has taken its place.
#[derive(Debug)]
struct OpenedFile {
    path: PathBuf,
    /// Its device and inode when opened (none where the platform has no such thing).
    id: Option<(u64, u64)>,
    /// The replacement has been logged (once is enough: every use fails after it).
    reported: std::sync::atomic::AtomicBool,
    /// The file was removed, and a copy of what the store holds is being or was saved (see
    /// [`Store::check_file`]).
    saved: std::sync::atomic::AtomicBool,
    /// That copy could not be saved.
    copy_failed: std::sync::atomic::AtomicBool,
    /// The device and inode of its `-wal` and `-shm` files, once seen beside it: ours, to
    /// be moved aside when another file takes its place (see [`OpenedFile::set_aside`]).
    sidecars: std::sync::OnceLock<[Option<(u64, u64)>; 2]>,
}

/// A database's WAL and shared-memory files: SQLite finds them by the database's name.
fn sidecar_paths(database: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    })
}

/// Where a store whose database file was removed under it saves a copy of its data: the
/// database's path with `.recovered` added.
pub fn recovered_path(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".recovered");
    PathBuf::from(path)
}

impl OpenedFile {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            id: std::fs::metadata(path).ok().as_ref().and_then(metadata_id),
            reported: std::sync::atomic::AtomicBool::new(false),
            saved: std::sync::atomic::AtomicBool::new(false),
            copy_failed: std::sync::atomic::AtomicBool::new(false),
            sidecars: std::sync::OnceLock::new(),
        }
    }

    /// Notes the `-wal` and `-shm` files beside the file while it is the one opened, the
    /// first time both are there (SQLite makes them with the first transaction).
    fn note_sidecars(&self) {
        if self.sidecars.get().is_some() {
            return;
        }
        let ids = sidecar_paths(&self.path)
            .map(|p| std::fs::metadata(p).ok().as_ref().and_then(metadata_id));
        if ids.iter().all(Option::is_some) {
            let _ = self.sidecars.set(ids);
        }
    }

    /// Moves this store's `-wal` and `-shm` aside (`.replaced` added to their names) once
    /// its file is gone from the path: SQLite finds them by name, so the next process to
    /// open the file now there (a restored backup, or a new database) would replay this
    /// store's WAL onto it and corrupt it. Only files that are still this store's are
    /// moved; a failure is logged with what the operator must do.
    fn set_aside(&self) {
        let Some(ids) = self.sidecars.get() else {
            return;
        };
        for (path, id) in sidecar_paths(&self.path).iter().zip(ids) {
            let ours = std::fs::metadata(path).ok().as_ref().and_then(metadata_id) == *id;
            if !ours {
                continue;
            }
            let mut aside = path.as_os_str().to_owned();
            aside.push(".replaced");
            if let Err(e) = std::fs::rename(path, &aside) {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "could not move the old database's file aside: remove it before vportal or                      the CLI opens the database again, or that file is corrupted"
                );
            }
        }
    }

    /// Refuses work once the file at the path is not the one opened. SQLite's connections
    /// stay on the file they opened, so a backup restored over the database (`mv`, `cp` to
    /// a new file) would otherwise go unnoticed: reads would see the old data, and every
    /// change made after it, passcodes included, would go to a file no longer there. One
    /// `stat` a use, next to a transaction's `fsync` and a login's argon2.
    fn check(&self) -> Result<()> {
        match self.state() {
            FileState::InPlace => {
                self.note_sidecars();
                Ok(())
            }
            FileState::Replaced => self.refuse(Unavailable::Replaced),
            FileState::Removed if self.copy_failed.load(std::sync::atomic::Ordering::Relaxed) => {
                self.refuse(Unavailable::RemovedUnsaved)
            }
            FileState::Removed => self.refuse(Unavailable::Removed),
        }
    }

    /// Whether the file at the path is the one opened, another, or none.
    fn state(&self) -> FileState {
        let Some(id) = self.id else {
            return FileState::InPlace;
        };
        match std::fs::metadata(&self.path) {
            Ok(now) if metadata_id(&now) == Some(id) => FileState::InPlace,
            Ok(_) => FileState::Replaced,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Removed,
            // Neither gone nor another file, as far as can be told (a permission or I/O
            // error): SQLite reports its own errors, if any.
            Err(_) => FileState::InPlace,
        }
    }

    /// Logs the replacement once (a removal is logged with where its data is saved), and
    /// fails with `why`.
    fn refuse(&self, why: Unavailable) -> Result<()> {
        if why == Unavailable::Replaced
            && !self
                .reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.set_aside();
            tracing::error!(
                path = %self.path.display(),
                "the database file was replaced while in use: every login and change now \
                 fails; restart vportal to use the file there now (the old file's -wal and \
                 -shm are moved aside, with .replaced added to their names)"
            );
        }
        Err(StoreError::Unavailable(why))
    }
}

/// What is at a store's database path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// The file opened.
    InPlace,
    /// Another file.
    Replaced,
    /// None.
    Removed,
}

/// A file's device and inode.
fn metadata_id(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((metadata.dev(), metadata.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        None
    }
}

impl Store {
    /// Opens (and with `create`, creates) the database at `path`, applies migrations and
    /// checks that `pepper` is the database's.
    ///
    /// `hash_concurrency` bounds concurrent argon2 work (see [`Hasher::default_concurrency`]).
    ///
    /// # Errors
    /// [`StoreError::Recoverable`] when the file is missing and a copy saved when it was
    /// removed is there; [`StoreError::NoDatabase`] when it is missing and `create` is false,
    /// [`StoreError::EmptyDatabase`] when it is empty and `create` is false;
    /// [`StoreError::NotVportal`] or [`StoreError::SchemaVersionLost`] when the file is not
    /// vportal's database or has lost its schema version; [`StoreError::PepperMismatch`];
    /// [`StoreError::SchemaTooNew`]; database errors.
    pub fn open(
        path: &Path,
        pepper: Pepper,
        create: bool,
        hash_concurrency: usize,
    ) -> Result<Self> {
        if !path.exists() {
            // Whatever the command: "run init" would be refused, and the data is there.
            if recovered_path(path).exists() {
                return Err(StoreError::Recoverable(path.to_owned()));
            }
            if !create {
                return Err(StoreError::NoDatabase(path.to_owned()));
            }
            create_private(path).map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        } else if !create {
            // Empty: a first run elsewhere may have just made it (SQLite writes its header
            // at once), or one failed, or a copy was cut short. A second is time enough for
            // the first.
            let empty = || std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while empty() {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::EmptyDatabase(path.to_owned()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        // Two processes making the same new database at once: where waiting could
        // deadlock (turning WAL on, making the schema) SQLite answers busy at once rather
        // than through the busy timeout. A moment later the other has done it.
        let started = std::time::Instant::now();
        loop {
            match Self::open_file(path, flags, pepper.clone(), hash_concurrency) {
                Err(StoreError::Unavailable(Unavailable::Busy))
                    if started.elapsed() < Duration::from_secs(2) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => return opened.map_err(|e| on_read_only_mount(path, e)),
            }
        }
    }

    /// [`Store::open`] of a database file that is there, once.
    fn open_file(
        path: &Path,
        flags: OpenFlags,
        pepper: Pepper,
        hash_concurrency: usize,
    ) -> Result<Self> {
        let conn = Connection::open_with_flags(path, flags)?;
        let file = OpenedFile::new(path);
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Before anything is written to it: a wrong path to another program's database must
        // leave that database as it was.
        schema::check_ours(&conn, path)?;
        // WAL: readers never block the writer and the writer never blocks readers. (Only
        // turning it on writes; a database that has it needs no lock to say so.)
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let mode = if mode.eq_ignore_ascii_case("wal") {
            mode
        } else {
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?
        };
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "database is not in WAL mode; concurrent use may wait longer"
            );
        }
        let reader = Connection::open_with_flags(path, flags - OpenFlags::SQLITE_OPEN_CREATE)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.pragma_update(None, "query_only", true)?;
        let mut store = Self::setup(conn, pepper, hash_concurrency)?;
        store.reader = Some(Mutex::new(reader));
        store.file = Some(file);
        Ok(store)
    }

    /// A store in memory, for tests and benchmarks.
    ///
    /// # Errors
    /// Database errors.
    pub fn open_in_memory(pepper: Pepper, hash_concurrency: usize) -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, pepper, hash_concurrency)
    }

    fn setup(mut conn: Connection, pepper: Pepper, hash_concurrency: usize) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Durability over speed: an acknowledged passcode change must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        let read_only = conn.is_readonly(rusqlite::MAIN_DB)?;
        let store = Self {
            conn: Mutex::new(conn),
            reader: None,
            read_only,
            busy_timeout: BUSY_TIMEOUT,
            file: None,
            hasher: Hasher::new(pepper, hash_concurrency),
        };
        store.check_pepper()?;
        Ok(store)
    }

    /// This store with writes waiting at most `wait` for another process's write lock
    /// (10 s unless set), then failing with [`Unavailable::Busy`].
    #[must_use]
    pub fn with_busy_timeout(mut self, wait: Duration) -> Self {
        self.busy_timeout = wait;
        self
    }

    /// Writes a consistent copy of the database, as of now, to `dest`, a file that must not
    /// exist yet (made readable by its owner only). It holds everything committed,
    /// whatever the WAL has not yet checkpointed into the database file (a plain copy of
    /// that file can lack days of changes), and takes no write lock: logins, changes and
    /// the server go on meanwhile. The pepper is not in it.
    ///
    /// # Errors
    /// [`StoreError::Io`] when `dest` exists or cannot be created; database errors.
    pub fn backup(&self, dest: &Path) -> Result<()> {
        self.check_file()?;
        self.copy_to_new(dest)
    }

    /// Writes what the store holds to `dest`, a file that must not exist yet, made readable
    /// by its owner only (it holds every hash and token record), through the connection
    /// (`VACUUM INTO`), and syncs it; nothing is left at `dest` when that fails.
    fn copy_to_new(&self, dest: &Path) -> Result<()> {
        let io = |source| StoreError::Io {
            path: dest.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(dest).map_err(io)?;
        let copied = dest
            .to_str()
            .ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path is not valid text",
                ))
            })
            .and_then(|text| {
                let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
                conn.execute("VACUUM INTO ?1", [text])?;
                Ok(())
            });
        // On the disk before it is called a copy (VACUUM INTO does not sync).
        let copied = copied.and_then(|()| {
            std::fs::File::open(dest)
                .and_then(|f| f.sync_all())
                .map_err(io)
        });
        if copied.is_err() {
            // Not left behind half made, to be taken for a copy.
            let _ = std::fs::remove_file(dest);
        }
        copied
    }

    /// Whether this process can only read the database (its file or file system is
    /// read-only to it): every login and every change would fail. `serve` refuses to start
    /// on such a database.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Records the pepper's fingerprint on first open; refuses a different pepper later.
    /// Only the first open writes: the check itself is a read.
    fn check_pepper(&self) -> Result<()> {
        let expected = self.hasher.mac(b"vportal pepper check v1");
        let stored = |conn: &Connection| -> Result<Option<String>> {
            Ok(conn
                .query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    [PEPPER_CHECK_KEY],
                    |r| r.get(0),
                )
                .optional()?)
        };
        let matches = |stored: Option<String>| match stored {
            Some(s) if s == expected => Ok(true),
            Some(_) => Err(StoreError::PepperMismatch),
            None => Ok(false),
        };
        if matches(self.read(stored)?)? {
            return Ok(());
        }
        self.write(|tx| {
            if !matches(stored(tx)?)? {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                    (PEPPER_CHECK_KEY, &expected),
                )?;
            }
            Ok(())
        })
    }

    /// The hasher, shared with callers that need to hash outside a store operation.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Whether the database file this store opened is still the one at its path: not
    /// replaced (a backup restored over it) or removed, which only opening it afresh mends.
    /// The admin side-port's liveness answer (`/healthz`).
    ///
    /// # Errors
    /// [`Unavailable::Replaced`], [`Unavailable::Removed`] (or
    /// [`Unavailable::RemovedUnsaved`] when its copy could not be saved).
    ///
    /// A file removed (rather than replaced by another) takes the only copy of the data
    /// with it, once this process ends: the first use that finds it gone saves what the
    /// store holds to [`recovered_path`] (`VACUUM INTO` through the connection, which still
    /// reaches the removed file and its WAL), which the error log names, and which a new
    /// database at the path is then refused for ([`StoreError::Recoverable`]).
    pub fn check_file(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let checked = file.check();
        if checked.is_err()
            && file.state() == FileState::Removed
            && !file.saved.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            if !self.save_removed(&file.path) {
                file.copy_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // Read through for the copy; a new database made at the path must not get them.
            file.set_aside();
            // Said as it now stands: saved, or not.
            return file.check();
        }
        checked
    }

    /// Saves what the store holds to `path`'s [`recovered_path`], its file having been
    /// removed; says where, or why it could not. Whether it was saved.
    fn save_removed(&self, path: &Path) -> bool {
        let copy = recovered_path(path);
        let saved = self.copy_to_new(&copy);
        let ok = saved.is_ok();
        match saved {
            Ok(()) => tracing::error!(
                path = %path.display(),
                copy = %copy.display(),
                "the database file was removed while in use; what it held is saved to the \
                 copy: stop vportal, move the copy into the database's place (with no -wal or \
                 -shm file beside it) and start it again"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                copy = %copy.display(),
                error = %e,
                "the database file was removed while in use, and what it held could not be \
                 saved to the copy: it is lost when vportal stops"
            ),
        }
        ok
    }

    /// Runs `f` on the connection (reads; WAL gives it a consistent snapshot per statement).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.check_file()?;
        // A panic mid-transaction rolls the transaction back when it unwinds, so the
        // connection is consistent even if the lock was poisoned.
        let conn = self
            .reader
            .as_ref()
            .unwrap_or(&self.conn)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed if `f` returns `Ok`.
    ///
    /// Waiting for this process's other writes counts against the busy timeout too: while
    /// another process holds the lock, each write queued here gives up 10 s after it was
    /// asked for, not 10 s after the one before it gave up.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.check_file()?;
        let asked = std::time::Instant::now();
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = self.busy_timeout.saturating_sub(asked.elapsed());
        self.transaction(&mut conn, wait, f)
    }

    /// Bookkeeping that may be skipped: [`Store::write`] if this process is writing nothing
    /// else, and another holds the lock for no more than `wait`; else `None`, at once.
    fn write_if_free<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Option<Result<T>> {
        if let Err(e) = self.check_file() {
            return Some(Err(e));
        }
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.transaction(&mut conn, wait, f))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on `conn` (this store's writing
    /// connection, held by the caller), waiting at most `wait` for another process's lock;
    /// committed if `f` returns `Ok`.
    fn transaction<T>(
        &self,
        conn: &mut Connection,
        wait: Duration,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        conn.busy_timeout(wait)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        // Replaced while this write waited for the lock or ran: it went to the old file, and
        // is not to be reported as stored. (The copy a removal calls for is saved at the
        // next use: `conn` is held here.)
        self.file.as_ref().map_or(Ok(()), OpenedFile::check)?;
        Ok(value)
    }

    /// The active passcode policy.
    ///
    /// # Errors
    /// [`StoreError::Setting`] when the stored policy cannot be read; database errors.
    pub fn policy(&self) -> Result<Policy> {
        self.read(load_policy)
    }

    /// Replaces the active policy (validated first) and audits `policy.changed`. The policy
    /// stored is not read first: one this build cannot read (written by a newer vportal, or
    /// edited by hand) is replaced all the same, which is how it is mended.
    ///
    /// # Errors
    /// [`StoreError::Policy`] when the settings are inconsistent; database errors.
    pub fn set_policy(&self, policy: &Policy, actor: &Actor, now: Timestamp) -> Result<()> {
        self.write(|tx| {
            let current = load_policy(tx).ok();
            store_policy(tx, current.as_ref(), policy, actor, now)
        })
    }

    /// Edits the active policy in one transaction: `edit` gets the policy in force and
    /// returns the new one, which is validated, stored and audited (`policy.changed`). Two
    /// edits at once each see the other's result, so neither is lost. An `edit` error
    /// changes nothing and comes back as the inner error.
    ///
    /// # Errors
    /// [`StoreError::Policy`] when the new settings are inconsistent,
    /// [`StoreError::Setting`] when the stored policy cannot be read (see
    /// [`Store::set_policy`]); database errors.
    pub fn update_policy<E>(
        &self,
        edit: impl FnOnce(&Policy) -> std::result::Result<Policy, E>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<std::result::Result<Policy, E>> {
        self.write(|tx| {
            let current = load_policy(tx)?;
            let policy = match edit(&current) {
                Ok(policy) => policy,
                Err(e) => return Ok(Err(e)),
            };
            store_policy(tx, Some(&current), &policy, actor, now)?;
            Ok(Ok(policy))
        })
    }
}

/// Validates and stores `policy` in place of `current` (`None`: one that could not be read),
/// auditing the change.
fn store_policy(
    tx: &Connection,
    current: Option<&Policy>,
    policy: &Policy,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    policy.validate()?;
    let text = toml::to_string(policy).map_err(|e| StoreError::Setting {
        key: POLICY_KEY,
        reason: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (POLICY_KEY, &text),
    )?;
    let changes = match current {
        Some(current) => policy.changes_from(current),
        None => "replaced a stored policy that could not be read".to_owned(),
    };
    audit::record(
        tx,
        now,
        Event::PolicyChanged,
        None,
        actor,
        "updated",
        Some(&changes),
    )?;
    Ok(())
}

/// Creates an empty database file readable by its owner only (SQLite gives its `-wal` and
/// `-shm` files the same mode). The hashes are peppered, but nobody else needs them.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut path = path.to_owned();
    // A link to a file still to be made (a data volume's path, set up beforehand): the file
    // is made where it leads, with the mode, rather than left to SQLite and the umask.
    for _ in 0..8 {
        match options.open(&path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let dangling = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink())
                    && std::fs::metadata(&path)
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                if !dangling {
                    // Another process created it first: fine, SQLite opens theirs.
                    return Ok(());
                }
                let target = std::fs::read_link(&path)?;
                path = path.parent().unwrap_or(Path::new("")).join(target);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// SQLite says only "unable to open database file" when the file system holding the
/// database is mounted read-only (it cannot make the `-shm` file beside it): that is said
/// as read-only, with what to check.
fn on_read_only_mount(path: &Path, e: StoreError) -> StoreError {
    let cannot_open = matches!(
        &e,
        StoreError::Database(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::CannotOpen
    );
    // Probed in the database's directory, never by opening the database file: closing a
    // descriptor of it would drop every POSIX lock this process holds on it (SQLite's).
    let read_only_mount = || {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let probe = dir.join(format!(".vportal-probe-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                false
            }
            Err(e) => e.kind() == std::io::ErrorKind::ReadOnlyFilesystem,
        }
    };
    if cannot_open && read_only_mount() {
        StoreError::Unavailable(Unavailable::ReadOnly)
    } else {
        e
    }
}

/// Reads the active policy inside a transaction or on a connection.
fn load_policy(conn: &Connection) -> Result<Policy> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([POLICY_KEY], |r| r.get(0))
        .optional()?;
    let Some(text) = text else {
        return Ok(Policy::default());
    };
    let mut policy: Policy = toml::from_str(&text).map_err(|e| {
        // On one line: what is wrong and where, without toml's drawing of the line.
        let line = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| before.matches('\n').count() + 1);
        StoreError::Setting {
            key: POLICY_KEY,
            reason: match line {
                Some(line) => format!("line {line}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            },
        }
    })?;
    // Stored by a build that allowed more: generated_length as it was applied, the lifetime
    // within what may be given now.
    policy.generated_length = policy.generated_len();
    policy.temporary_ttl_seconds = policy.temporary_ttl().get().as_secs();
    policy.lockout.duration_seconds = policy
        .lockout
        .duration_seconds
        .min(policy::MAX_LOCK_SECONDS);
    policy.validate_settings()?;
    Ok(policy)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the store's unit tests.

    use super::*;

    /// A fixed pepper for tests.
    pub(crate) fn pepper() -> Pepper {
        Pepper::from_bytes(vec![0x5a; 32]).unwrap()
    }

    /// An in-memory store with the test pepper.
    pub(crate) fn store() -> Store {
        Store::open_in_memory(pepper(), 2).unwrap()
    }

    pub(crate) fn ext(s: &str) -> Extension {
        Extension::parse(s).unwrap()
    }

    pub(crate) fn pin(s: &str) -> Passcode {
        Passcode::new(s.to_owned()).unwrap()
    }

    pub(crate) fn cli() -> Actor {
        Actor::Cli {
            user: Some("tester".into()),
        }
    }

    pub(crate) fn caller() -> Actor {
        Actor::Caller {
            source: "127.0.0.1:5062".parse().unwrap(),
            call_id: "call-1@127.0.0.1".into(),
        }
    }

    pub(crate) const T0: Timestamp = Timestamp::from_unix(1_800_000_000);

    /// A caller's login to `e` with passcode `p`, which must succeed.
    pub(crate) fn login(s: &Store, e: &str, p: &str) -> Login {
        s.verify_login(e, &pin(p), &caller(), T0)
            .unwrap()
            .1
            .expect("the login succeeds")
    }
}

/// `path` as one word for a POSIX shell, for a command an error message suggests: as it is
/// when it is made of characters no shell treats specially, otherwise in single quotes.
fn shell_word(path: &Path) -> String {
    let mut text = path.to_string_lossy().into_owned();
    if text.starts_with('-') {
        // Not to be read as an option, quoted or not.
        text.insert_str(0, "./");
    }
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./+,:@%=".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// A store in a file in `dir`, with mailbox 1001 (a generated temporary passcode).
    fn on_disk(dir: &Path) -> (PathBuf, Store) {
        let path = dir.join("v.db");
        let s = Store::open(&path, pepper(), true, 1).unwrap();
        s.create_user(
            NewUser {
                extension: ext("1001"),
                name: None,
                email: None,
                passcode: None,
            },
            &cli(),
            T0,
        )
        .unwrap();
        (path, s)
    }

    /// Another process holds the write lock: reads go on from the WAL, a store still opens,
    /// an admin token still authenticates, and a write gives up saying the database is busy.
    #[test]
    fn a_lock_held_elsewhere_stops_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let (path, s) = on_disk(dir.path());
        let token = s.create_token("ops", &cli(), T0).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let s = Store::open(&path, pepper(), false, 1)
            .expect("opening only reads")
            .with_busy_timeout(Duration::from_millis(50));
        assert!(s.user(&ext("1001"), T0).unwrap().is_some());
        // Its use was never recorded: the record is skipped, the token still good.
        let later = T0.saturating_add(Duration::from_secs(3_600));
        assert_eq!(
            s.authenticate_token(token.expose(), later)
                .unwrap()
                .as_deref(),
            Some("ops")
        );
        let busy = s.unlock(&ext("1001"), &cli(), later).unwrap_err();
        assert!(
            matches!(busy, StoreError::Unavailable(Unavailable::Busy)),
            "{busy:?}"
        );
        assert!(busy.to_string().contains("busy"), "{busy}");
        other.execute_batch("ROLLBACK").unwrap();
        s.unlock(&ext("1001"), &cli(), later).unwrap();
    }

    /// A backup holds what only the WAL held yet, opens with the same pepper, is private,
    /// and is never written over an existing file.
    #[test]
    fn a_backup_holds_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (_, s) = on_disk(dir.path());
        let copy = dir.path().join("copy.db");
        s.backup(&copy).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(s.backup(&copy), Err(StoreError::Io { .. })));
        drop(s);
        let restored = Store::open(&copy, pepper(), false, 1).unwrap();
        assert!(restored.user(&ext("1001"), T0).unwrap().is_some());
    }

    /// A database file removed when its copy cannot be saved (here: a file already in the
    /// copy's place): the error says the data is lost, not that it is saved.
    #[test]
    fn a_removed_database_whose_copy_cannot_be_saved_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (path, s) = on_disk(dir.path());
        std::fs::write(recovered_path(&path), b"in the way").unwrap();
        std::fs::remove_file(&path).unwrap();
        for _ in 0..2 {
            let e = s.user(&ext("1001"), T0).unwrap_err();
            assert!(
                matches!(e, StoreError::Unavailable(Unavailable::RemovedUnsaved)),
                "{e}"
            );
            assert!(e.to_string().contains("could not be saved"), "{e}");
        }
        assert_eq!(std::fs::read(recovered_path(&path)).unwrap(), b"in the way");
    }

    /// A backup restored over the database while a store has it open (a `mv`, as the
    /// README says not to), or the file removed: the store's connections would go on with
    /// the old file, gone from the path, and lose every change. Each use fails instead,
    /// reads included; a store opened afresh uses the file there now.
    #[test]
    fn a_database_file_replaced_in_use_is_refused() {
        let replaced = || StoreError::Unavailable(Unavailable::Replaced);
        let dir = tempfile::tempdir().unwrap();
        let (path, s) = on_disk(dir.path());
        let copy = dir.path().join("copy.db");
        s.backup(&copy).unwrap();
        s.unlock(&ext("1001"), &cli(), T0).unwrap();
        s.create_user(NewUser::new(ext("1002")), &cli(), T0)
            .unwrap();
        std::fs::rename(&copy, &path).unwrap();
        let read = s.user(&ext("1001"), T0).unwrap_err();
        assert_eq!(read.to_string(), replaced().to_string());
        // The old file's WAL and shared memory are moved aside: SQLite would replay that WAL
        // onto the file now at the path, which the next process to open it would corrupt.
        let [wal, shm] = sidecar_paths(&path);
        assert!(!wal.exists() && !shm.exists());
        for moved in [wal, shm] {
            let mut aside = moved.into_os_string();
            aside.push(".replaced");
            assert!(Path::new(&aside).exists(), "{aside:?}");
        }
        // A process opening the restored file meanwhile (the CLI) finds it whole.
        let meanwhile = Connection::open(&path).unwrap();
        let check: String = meanwhile
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(meanwhile);
        let written = s.delete_user(&ext("1001"), &cli(), T0).unwrap_err();
        assert_eq!(written.to_string(), replaced().to_string());
        assert!(matches!(
            s.backup(&dir.path().join("again.db")),
            Err(StoreError::Unavailable(Unavailable::Replaced))
        ));
        drop(s);
        let reopened = Store::open(&path, pepper(), false, 1).unwrap();
        assert!(reopened.user(&ext("1001"), T0).unwrap().is_some());
        // The backup as it was: the mailbox made after it is not there.
        assert!(reopened.user(&ext("1002"), T0).unwrap().is_none());
        // Replaced while a write waited or ran: it went to the old file, so it is not
        // reported as stored.
        reopened.backup(&copy).unwrap();
        let during = reopened.write(|_| {
            std::fs::rename(&copy, &path).unwrap();
            Ok(())
        });
        assert!(matches!(
            during,
            Err(StoreError::Unavailable(Unavailable::Replaced))
        ));
        drop(reopened);
        let reopened = Store::open(&path, pepper(), false, 1).unwrap();
        assert!(reopened.check_file().is_ok());
        // Removed: the same, and what the store held is saved beside it, for which a new
        // database at the path is refused (a restart would otherwise hide it behind an
        // empty one).
        std::fs::remove_file(&path).unwrap();
        let removed = reopened.user(&ext("1001"), T0).unwrap_err();
        assert!(matches!(
            removed,
            StoreError::Unavailable(Unavailable::Removed)
        ));
        // What the error says does not tell to restart, which would be refused.
        assert!(
            removed.to_string().contains(".recovered") && !removed.to_string().contains("restart"),
            "{removed}"
        );
        let saved = recovered_path(&path);
        assert_eq!(saved, dir.path().join("v.db.recovered"));
        // It holds every hash: its owner's alone, as the database and a backup are.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        // Refused to `init` and to every other command alike, naming the copy.
        for create in [true, false] {
            let refused = Store::open(&path, pepper(), create, 1).unwrap_err();
            assert!(matches!(refused, StoreError::Recoverable(_)), "{refused}");
            assert!(refused.to_string().contains("v.db.recovered"), "{refused}");
        }
        assert!(!path.exists());
        drop(reopened);
        std::fs::rename(&saved, &path).unwrap();
        let recovered = Store::open(&path, pepper(), false, 1).unwrap();
        assert!(recovered.user(&ext("1001"), T0).unwrap().is_some());
    }

    #[test]
    fn pepper_is_pinned_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        assert!(matches!(
            Store::open(&path, pepper(), false, 1),
            Err(StoreError::NoDatabase(_))
        ));
        drop(Store::open(&path, pepper(), true, 1).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // Through a link to a file still to be made (relative, and by way of a second
            // link): the file it leads to is made with the same mode, not the umask's.
            std::fs::create_dir(dir.path().join("data")).unwrap();
            let linked = dir.path().join("linked.db");
            std::os::unix::fs::symlink("data/hop.db", &linked).unwrap();
            std::os::unix::fs::symlink("v2.db", dir.path().join("data/hop.db")).unwrap();
            drop(Store::open(&linked, pepper(), true, 1).unwrap());
            let made = std::fs::metadata(dir.path().join("data/v2.db")).unwrap();
            assert_eq!(made.permissions().mode() & 0o777, 0o600);
        }
        drop(Store::open(&path, pepper(), false, 1).unwrap());
        // An empty file where the database was is not a new database.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            Store::open(&empty, pepper(), false, 1),
            Err(StoreError::EmptyDatabase(_))
        ));
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
        let other = Pepper::from_bytes(vec![1; 32]).unwrap();
        assert!(matches!(
            Store::open(&path, other, false, 1),
            Err(StoreError::PepperMismatch)
        ));
    }

    #[test]
    fn policy_round_trips_and_is_audited() {
        let s = store();
        assert_eq!(s.policy().unwrap(), Policy::default());
        let p = Policy {
            min_length: 6,
            ..Policy::default()
        };
        s.set_policy(&p, &cli(), T0).unwrap();
        assert_eq!(s.policy().unwrap(), p);
        let bad = Policy {
            min_length: 0,
            ..Policy::default()
        };
        assert!(matches!(
            s.set_policy(&bad, &cli(), T0),
            Err(StoreError::Policy(_))
        ));
        let events = s.audit(&AuditQuery::default()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "policy.changed");
        assert_eq!(events[0].detail.as_deref(), Some("min_length 4 -> 6"));
        let lockout = policy::Lockout {
            max_failures: 3,
            ..policy::Lockout::default()
        };
        s.set_policy(
            &Policy {
                lockout,
                ..p.clone()
            },
            &cli(),
            T0,
        )
        .unwrap();
        let events = s.audit(&AuditQuery::default()).unwrap();
        assert_eq!(
            events[0].detail.as_deref(),
            Some("lockout.max_failures 5 -> 3")
        );
    }

    /// Stores `policy` as it is, unchecked, as a build that allowed it did.
    fn store_as_an_older_build(s: &Store, policy: &Policy) {
        let text = toml::to_string(policy).unwrap();
        s.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)",
                (POLICY_KEY, &text),
            )?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_stored_policy_that_cannot_generate_still_loads_and_can_be_mended() {
        let s = store();
        let pin = |p: &str| Passcode::new(p.into()).unwrap();
        s.create_user(
            NewUser::new(Extension::parse("1001").unwrap())
                .with_passcode(PasscodeSpec::given(pin("4826"), false)),
            &cli(),
            T0,
        )
        .unwrap();
        // What `vportal policy set min_length 1; vportal policy set generated_length 1`
        // stored before setting it was refused.
        let stored = Policy {
            min_length: 1,
            generated_length: 1,
            ..Policy::default()
        };
        assert!(stored.validate().is_err());
        store_as_an_older_build(&s, &stored);
        // It is read as stored; logins go on; generating is refused as impossible...
        assert_eq!(s.policy().unwrap(), stored);
        let (outcome, _) = s.verify_login("1001", &pin("4826"), &cli(), T0).unwrap();
        assert!(matches!(outcome, VerifyOutcome::Ok { .. }), "{outcome:?}");
        let reset = s.reset_passcode(
            &Extension::parse("1001").unwrap(),
            &PasscodeSpec::generated_temporary(),
            &cli(),
            T0,
        );
        assert!(
            matches!(reset, Err(StoreError::Generate(GenerateError::Impossible))),
            "{reset:?}"
        );
        // So is an import that needs one generated: as a whole, not as a bad row (no row
        // can fix it), whatever the mode; a row's own passcode is imported.
        for mode in [ImportMode::AllOrNothing, ImportMode::Partial] {
            let import = s.import_csv("extension,passcode\n2002,5937\n2003,\n", mode, &cli(), T0);
            assert!(
                matches!(import, Err(StoreError::Generate(GenerateError::Impossible))),
                "{import:?}"
            );
        }
        assert!(
            s.user(&Extension::parse("2002").unwrap(), T0)
                .unwrap()
                .is_none()
        );
        // ... and the policy can be mended.
        let mended = s.update_policy(
            |p| {
                Ok::<_, std::convert::Infallible>(Policy {
                    generated_length: 2,
                    ..p.clone()
                })
            },
            &cli(),
            T0,
        );
        assert_eq!(mended.unwrap().unwrap().generated_length, 2);
        assert_eq!(s.policy().unwrap().generated_length, 2);
    }

    #[test]
    fn a_stored_generated_length_outside_the_lengths_loads_as_it_was_applied() {
        let s = store();
        let stored = Policy {
            generated_length: 12,
            ..Policy::default()
        };
        store_as_an_older_build(&s, &stored);
        assert_eq!(s.policy().unwrap().generated_length, 10);
    }
}
