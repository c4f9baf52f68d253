//! Command-line parsing and dispatch.

mod admin;
pub(crate) mod output;
mod serve;
mod users;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use vportal::config::{Config, StoreConfig};
use vportal::store::{Extension, MAX_AUDIT_ROWS, Passcode, Store, Ttl, pepper};
use vportal::time::parse_duration;

use output::{err, errln};

/// vportal: a voice-portal passcode server and its admin tools.
#[derive(Debug, Parser)]
#[command(name = "vportal", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(long, global = true, env = "VPORTAL_CONFIG", value_name = "FILE",
          value_parser = non_empty_path("VPORTAL_CONFIG"))]
    config: Option<PathBuf>,
    /// The database file (overrides the config file; default ./vportal.db).
    #[arg(long, global = true, env = "VPORTAL_DB", value_name = "PATH",
          value_parser = non_empty_path("VPORTAL_DB"))]
    db: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// A path option that may also come from `env`: an empty value (`VPORTAL_DB=` in a unit
/// file or a shell) is refused with a message naming the variable as well as the option,
/// where clap's own would name only the option; so is one starting with `~`, as in the
/// configuration file (a unit file's `Environment=` or a quoted path does not expand it).
fn non_empty_path(env: &'static str) -> impl TypedValueParser<Value = PathBuf> {
    OsStringValueParser::new().try_map(move |value| {
        let path = PathBuf::from(value);
        if path.as_os_str().is_empty() {
            Err(format!("the path is empty (from the option or {env})"))
        } else if vportal::config::starts_with_tilde(&path) {
            Err(format!(
                "{} (from the option or {env})",
                vportal::config::TILDE_REFUSED
            ))
        } else {
            Ok(path)
        }
    })
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the voice portal: SIP (UDP and TCP) and RTP. Creates the database on first run.
    Serve(serve::Flags),
    /// Create the database, its pepper file and a first admin token (printed once).
    ///
    /// A database already there gets a token only when it has none (as a first `serve`
    /// leaves it when its standard output is not a terminal). When standard output is not a terminal (`TOKEN=$(vportal init)`, `> token.txt`), it
    /// gets the token alone, on one line; what was made, and what to do next, go to standard
    /// error.
    Init {
        /// Name of the admin token created (with a new database, or for one without any).
        #[arg(long, default_value = "admin")]
        token_name: String,
    },
    /// Manage mailboxes.
    #[command(subcommand)]
    User(UserCommand),
    /// Count mailboxes by state: temporary, expired, locked, never changed, changed lately.
    Report,
    /// Write a consistent copy of the database to FILE (a new file), while it is in use.
    /// Keep the pepper file with it: the copy holds no pepper.
    Backup {
        /// Where to write the copy; must not exist.
        file: std::path::PathBuf,
    },
    /// Show audit events, newest first.
    Audit {
        /// Only this mailbox.
        #[arg(long, value_name = "EXT")]
        extension: Option<String>,
        /// Only this event (e.g. login.failure).
        #[arg(long, value_name = "NAME")]
        event: Option<String>,
        /// At most this many events, 1 to 10000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_AUDIT_ROWS)))]
        limit: u32,
    },
    /// Remove audit events older than a duration (at least a day), e.g. `400d`; itself
    /// audited. The audit trail otherwise only grows (about 400 bytes per login attempt).
    PruneAudit {
        /// Remove the events older than this: `400d`, `52w`… (at least `1d`).
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Inspect and change the passcode policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

impl Command {
    /// The log level unless `RUST_LOG` says otherwise: the server tells what it does,
    /// admin commands stay quiet.
    pub(crate) fn default_log_level(&self) -> &'static str {
        match self {
            Self::Serve(_) => "info",
            _ => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a mailbox.
    Add {
        /// The mailbox number.
        extension: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Contact email address.
        #[arg(long)]
        email: Option<String>,
        /// Generate a temporary passcode (printed once).
        #[arg(long, conflicts_with = "passcode_stdin")]
        generate: bool,
        /// Read the passcode from standard input (never from the command line).
        #[arg(long)]
        passcode_stdin: bool,
        /// Make the given passcode temporary: it must be changed at the first login.
        #[arg(long, requires = "passcode_stdin")]
        temporary: bool,
        /// Lifetime of the temporary passcode, 1s to 365d, e.g. 20m, 72h, 7d (default: the
        /// policy's); with --generate or --temporary.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
    },
    /// List mailboxes.
    List {
        /// Only mailboxes with a temporary passcode.
        #[arg(long)]
        temporary: bool,
        /// Only locked mailboxes.
        #[arg(long)]
        locked: bool,
        /// Only mailboxes whose temporary passcode has expired.
        #[arg(long)]
        expired: bool,
    },
    /// Show one mailbox.
    Show {
        /// The mailbox number.
        extension: String,
    },
    /// Give a mailbox a temporary passcode: generated (printed once) or read from stdin.
    SetTemp {
        /// The mailbox number.
        extension: String,
        /// Read the passcode from standard input instead of generating one.
        #[arg(long)]
        passcode_stdin: bool,
        /// Lifetime, e.g. 20m, 72h (default: the policy's, 72h out of the box).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
    },
    /// Give every mailbox (or the listed ones) a new generated temporary passcode.
    ResetAll {
        /// Only these mailboxes.
        extensions: Vec<String>,
        /// Lifetime, e.g. 20m, 72h.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
        /// Required when no extension is listed: this resets every mailbox.
        #[arg(long)]
        yes: bool,
    },
    /// Lift a lock and clear the failure count.
    Unlock {
        /// The mailbox number.
        extension: String,
    },
    /// Delete a mailbox (its audit events stay).
    Delete {
        /// The mailbox number.
        extension: String,
    },
    /// Create mailboxes from CSV: extension,name,email,passcode (header optional).
    Import {
        /// The CSV file ('-' for standard input).
        file: PathBuf,
        /// Import the good rows even if some are bad (default: all or nothing).
        #[arg(long)]
        partial: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Check a passcode (read from stdin) against the policy for a mailbox.
    Check {
        /// The mailbox the passcode is meant for.
        extension: String,
    },
    /// Show the active policy.
    Show,
    /// Change one policy setting, e.g. `min_length 6` or `lockout.duration_seconds 15m`.
    Set {
        /// The setting (as `policy show` names it; dotted for lockout.*).
        key: String,
        /// The new value: a number, true/false, or for *_seconds a duration such as 30m.
        value: String,
    },
    /// Put back the default policy, also in place of one this build cannot read (written by
    /// a newer vportal, or edited by hand).
    Reset,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an admin API token (printed once; only its hash is kept).
    Create {
        /// A name for the token, recorded in the audit trail as the actor.
        name: String,
    },
    /// List admin API tokens.
    List,
    /// Revoke an admin API token.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    let ttl = parse_duration(text).map_err(|e| e.to_string())?;
    Ttl::new(ttl).map_err(|e| e.to_string())
}

/// A file holding a secret (`what`) should not be readable by those `mask` names (mode
/// bits: 0o077 for the config file with the admin token, the owner's alone, as the pepper
/// file must be; 0o007 for the admin TLS key, which a group such as Debian's `ssl-cert`
/// may share); the pepper file is refused otherwise, these are only warned about.
pub(crate) fn warn_if_others_can_read(path: &std::path::Path, mask: u32, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & mask != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "{what} and others can read it: chmod {:o} it",
                    mode & !mask
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mask);
}

/// Resolved settings and output preferences for one command.
pub(crate) struct Context {
    config: Config,
    store: StoreConfig,
    json: bool,
    /// `--config FILE` and `--db PATH` as given (on the command line or in the environment).
    config_file: Option<PathBuf>,
    db_option: Option<PathBuf>,
}

impl Context {
    fn new(global: &Global) -> Result<Self> {
        let mut config = match &global.config {
            Some(path) => {
                let config = Config::load(path)?;
                if config.admin.token.is_some() {
                    warn_if_others_can_read(path, 0o077, "the config file holds admin.token");
                }
                config
            }
            None => Config::default(),
        };
        if let Some(db) = &global.db {
            config.store.database.clone_from(db);
        }
        Ok(Self {
            store: config.store.clone(),
            config,
            json: global.json,
            config_file: global.config.clone(),
            db_option: global.db.clone(),
        })
    }

    /// The `vportal` command with the global options that select this store, their paths
    /// made absolute, for a command line to run elsewhere (another terminal, another working
    /// directory): `--config FILE` if one was given, `--db PATH` if given; none for the
    /// default. A relative store path from the configuration file is the working
    /// directory's, as here: the command then first goes there (`cd DIR && vportal …`).
    pub(crate) fn vportal_command(&self) -> String {
        let mut command = String::from("vportal");
        for (option, path) in [("--config", &self.config_file), ("--db", &self.db_option)] {
            if let Some(path) = path {
                let path = lexically_absolute(path).unwrap_or_else(|_| path.clone());
                command.push_str(&format!(
                    " {option} {}",
                    shell_word(&path.to_string_lossy())
                ));
            }
        }
        let relative_in_file = self.config_file.is_some()
            && ((self.db_option.is_none() && self.store.database.is_relative())
                || self
                    .store
                    .pepper_file
                    .as_ref()
                    .is_some_and(|p| p.is_relative()));
        match std::env::current_dir() {
            Ok(here) if relative_in_file => {
                format!("cd {} && {command}", shell_word(&here.to_string_lossy()))
            }
            _ => command,
        }
    }

    /// Opens the existing store (never creates one).
    fn open(&self) -> Result<Store> {
        self.open_with(Create::No).map(|(store, _)| store)
    }

    /// Opens the store, creating the database and pepper file as `create` allows when the
    /// database does not exist yet. Returns, when the database was created, where its pepper
    /// came from.
    fn open_with(&self, create: Create) -> Result<(Store, Option<pepper::PepperSource>)> {
        let db = &self.store.database;
        // Checked first: everything below takes an existing path for an existing database.
        if db.is_dir() {
            bail!(
                "the database path {} is a directory: give the database file's path, such as {}",
                db.display(),
                db.join("vportal.db").display()
            );
        }
        if std::env::var_os(pepper::PEPPER_ENV).is_none() {
            check_pepper_path(db, &self.store.pepper_path())?;
        }
        let created = create != Create::No && !db.exists();
        // A directory that is not there (a volume not mounted yet, a typo) is no first run:
        // only `init` makes one, not a server starting on whatever it finds.
        if created
            && create == Create::InExistingDirectory
            && let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            bail!(
                "no database at {}, and no directory {}: is its volume mounted, is the path \
                 right? (`vportal init` creates both)",
                db.display(),
                dir.display()
            );
        }
        let mut made = FirstRunFiles::for_database(db);
        if created && let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            made.create_dir_all(dir)?;
        }
        // So is the pepper file's, where one is to be written (by `init`; `serve` needs it
        // there, as the database's: a secrets volume not mounted yet must not get a pepper
        // of its own on whatever is beneath it).
        if created
            && std::env::var_os(pepper::PEPPER_ENV).is_none()
            && let Some(dir) = self
                .store
                .pepper_path()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            if create == Create::InExistingDirectory && !dir.is_dir() {
                bail!(
                    "no pepper file directory {}: is its volume mounted, is the path right? \
                     (`vportal init` creates it)",
                    dir.display()
                );
            }
            made.create_dir_all(dir)?;
        }
        // A new pepper only ever goes with a new database: a fresh pepper for an existing
        // database would make every stored passcode unverifiable.
        let store_owner = pepper::owner_of(db);
        let (pepper, source) = match pepper::load(&self.store.pepper_path(), created, store_owner) {
            // `vportal init` cannot help here: the database and its hashes are there already.
            // Nor can it when neither is there: this may well be the wrong path (another
            // working directory, a forgotten --db), and init would make a second store.
            Err(pepper::PepperError::Missing(_)) if !db.exists() => bail!(
                "no database at {} (nor its pepper file): give the --db or --config that \
                 names the store in use, or run `vportal init` to create one there",
                db.display()
            ),
            // A file made empty beforehand (`install -m600 /dev/null vportal.db`) had no
            // pepper to lose: what is wrong is the empty file, said as the store says it.
            Err(pepper::PepperError::Missing(_))
                if std::fs::metadata(db).is_ok_and(|m| m.is_file() && m.len() == 0) =>
            {
                return Err(vportal::store::StoreError::EmptyDatabase(db.to_owned()))
                    .with_context(|| format!("opening {}", db.display()));
            }
            Err(pepper::PepperError::Missing(path)) if db.exists() => bail!(
                "pepper file {} not found, but the database {} exists: restore the pepper file \
                 saved with it, or set {} (a new pepper could not check any stored passcode)",
                path.display(),
                db.display(),
                pepper::PEPPER_ENV
            ),
            other => other?,
        };
        if let pepper::PepperSource::Created(path) = &source {
            made.files.push(path.clone());
        }
        let store = Store::open(db, pepper, created, self.store.hashes_at_once())
            .with_context(|| format!("opening {}", db.display()))?;
        made.keep();
        if let pepper::PepperSource::Created(path) = &source {
            tracing::info!(path = %path.display(), "created pepper file");
        }
        Ok((store, created.then_some(source)))
    }
}

/// Refuses a pepper file that is the database itself, by any spelling (a database named
/// `*.pepper` has its default pepper file in its own place), or one of the files SQLite keeps
/// beside it and deletes or rewrites: one would be written over the other. The paths are
/// compared made absolute and lexically normalised; neither needs to exist.
fn check_pepper_path(db: &std::path::Path, pepper: &std::path::Path) -> Result<()> {
    let (db_abs, pepper_abs) = (lexically_absolute(db)?, lexically_absolute(pepper)?);
    if db_abs == pepper_abs {
        bail!(
            "the database {} and its pepper file {} are the same file: set store.pepper_file \
             to another path, or give the database another extension",
            db.display(),
            pepper.display()
        );
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = db_abs.clone().into_os_string();
        side.push(suffix);
        if pepper_abs == std::path::Path::new(&side) {
            bail!(
                "the pepper file {} is SQLite's {suffix} file of the database {}, which SQLite \
                 deletes or overwrites: set store.pepper_file to another path",
                pepper.display(),
                db.display()
            );
        }
    }
    Ok(())
}

/// `text` as one word for a POSIX shell: as it is when it holds nothing a shell would
/// read otherwise, else in single quotes.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `path` made absolute (from the working directory) with `.` and `..` resolved by their
/// names alone: no file needs to exist, and symbolic links are not followed.
fn lexically_absolute(path: &std::path::Path) -> Result<PathBuf> {
    use std::path::Component;
    let absolute =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    Ok(normal)
}

/// Whether opening the store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// Never: the database must be there.
    No,
    /// When its directory exists (`serve`'s first run).
    InExistingDirectory,
    /// With its directories (`init`).
    WithDirectories,
}

/// The directories and pepper file a first run made, removed again unless the database
/// opens: a failed first run leaves nothing behind, neither an empty directory nor a pepper
/// file that the next first run would take for one an operator provided.
struct FirstRunFiles {
    /// Outermost first.
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    /// The database: once one is there (a concurrent first run's, which may have read the
    /// pepper file this one made, or this run's own, part-made), the pepper file stays.
    database: PathBuf,
}

impl FirstRunFiles {
    /// Nothing made yet, for the database at `database`.
    fn for_database(database: &std::path::Path) -> Self {
        Self {
            dirs: Vec::new(),
            files: Vec::new(),
            database: database.to_owned(),
        }
    }

    /// `create_dir_all`, noting (after those noted before) the directories that were not
    /// there.
    fn create_dir_all(&mut self, dir: &std::path::Path) -> Result<()> {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(PathBuf::from)
            .collect();
        missing.reverse();
        let result = std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()));
        // Some may exist even when a deeper one failed.
        self.dirs.extend(missing.into_iter().filter(|d| d.exists()));
        result
    }

    /// The run got as far as an open database: everything stays.
    fn keep(&mut self) {
        self.dirs.clear();
        self.files.clear();
    }
}

impl Drop for FirstRunFiles {
    fn drop(&mut self) {
        if self.database.exists() {
            // Without it, that database could never be opened again.
            self.files.clear();
        }
        for file in &self.files {
            if let Err(e) = std::fs::remove_file(file) {
                tracing::warn!(path = %file.display(), error = %e, "could not remove");
            }
        }
        // Innermost first; one that is no longer empty (something else put a file there
        // meanwhile) stays.
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What to do about a stored policy this build cannot read.
pub(crate) const POLICY_REMEDY: &str = "run `vportal policy reset` (then `vportal policy set` \
     what should differ from the defaults), or the vportal that wrote it";

/// What a first run tells the operator it made: the database, and where its pepper lives,
/// which must be kept with it.
pub(crate) fn created_lines(db: &std::path::Path, source: &pepper::PepperSource) -> [String; 2] {
    let db = db.display();
    match source {
        pepper::PepperSource::Created(path) => [
            format!("Created {db} and its pepper file {}.", path.display()),
            "Keep the pepper file safe and backed up with the database: without it no \
             passcode can be checked."
                .to_owned(),
        ],
        pepper::PepperSource::File(path) => [
            format!(
                "Created {db}, peppered by the existing file {}.",
                path.display()
            ),
            "Keep that file safe and backed up with the database: without it no passcode \
             can be checked."
                .to_owned(),
        ],
        pepper::PepperSource::Environment => [
            format!(
                "Created {db}; its pepper is the one in {}.",
                pepper::PEPPER_ENV
            ),
            "Keep that value safe and set it for every command on this database: without \
             it no passcode can be checked (no pepper file was written)."
                .to_owned(),
        ],
    }
}

/// What [`created_lines`] says, for `--json`: the database, and where its pepper lives (a
/// file to back up, or the variable it was taken from).
pub(crate) fn created_json(
    db: &std::path::Path,
    source: &pepper::PepperSource,
) -> serde_json::Value {
    let (key, value) = match source {
        pepper::PepperSource::Created(path) | pepper::PepperSource::File(path) => {
            ("pepper_file", path.display().to_string())
        }
        pepper::PepperSource::Environment => ("pepper_env", pepper::PEPPER_ENV.to_owned()),
    };
    let mut answer = serde_json::json!({"database": db.display().to_string(), "created": true});
    answer[key] = serde_json::json!(value);
    answer
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Serve(flags) => serve::run(ctx, flags),
        Command::Init { token_name } => admin::init(&ctx, &token_name),
        Command::User(cmd) => users::run(&ctx, cmd),
        Command::Report => admin::report(&ctx),
        Command::Backup { file } => admin::backup(&ctx, &file),
        Command::Audit {
            extension,
            event,
            limit,
        } => admin::audit(&ctx, extension.as_deref(), event.as_deref(), limit),
        Command::PruneAudit { older_than } => admin::prune_audit(&ctx, &older_than),
        Command::Policy(cmd) => admin::policy(&ctx, cmd),
        Command::Token(cmd) => admin::token(&ctx, cmd),
    }
}

/// Whether the command had started printing a passcode or token it alone hands out: a
/// broken pipe then means the secret was lost (see `main`).
pub(crate) fn secrets_due() -> bool {
    output::secrets_due()
}

/// Parses an extension argument.
fn extension(text: &str) -> Result<Extension> {
    Extension::parse(text).with_context(|| format!("mailbox {text:?}"))
}

/// Reads a passcode from standard input: one line, without its line ending. On a terminal
/// the typing is not echoed, and with `confirm` (a passcode about to be stored) it is asked
/// for a second time: two that differ are refused, changing nothing. Piped input is one line
/// either way.
fn read_passcode(prompt: &str, confirm: bool) -> Result<Passcode> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        // Echo off before the prompt shows: keys typed as soon as it does are not echoed.
        restore_echo_on_interrupt();
        set_echo(false);
    }
    let first = read_passcode_line(&stdin, interactive.then_some(prompt));
    let passcode = match first {
        Ok(passcode) if interactive && confirm => {
            let again = read_passcode_line(&stdin, Some(&format!("{prompt} again")));
            again.and_then(|again| {
                if again == passcode {
                    Ok(passcode)
                } else {
                    Err(anyhow::anyhow!(
                        "the two passcodes typed differ: nothing was changed"
                    ))
                }
            })
        }
        other => other,
    };
    if interactive {
        set_echo(true);
    }
    passcode
}

/// One passcode line from standard input, after `prompt` (on a terminal, echo already off).
fn read_passcode_line(stdin: &std::io::Stdin, prompt: Option<&str>) -> Result<Passcode> {
    if let Some(prompt) = prompt {
        err!("{prompt}: ");
    }
    // Room enough that reading a passcode never reallocates, leaving a copy behind; the
    // line becomes the passcode itself, which is wiped when dropped, refused or not. (The
    // standard library's stdin buffer still holds the raw line: beyond reach here.)
    let mut line = String::with_capacity(256);
    let read = stdin.lock().read_line(&mut line);
    if prompt.is_some() {
        errln!();
    }
    line.truncate(line.trim_end_matches(['\r', '\n']).len());
    let passcode = Passcode::new(line);
    read.context("reading the passcode from standard input")?;
    let passcode = passcode?;
    if passcode.expose().is_empty() {
        bail!("no passcode on standard input");
    }
    Ok(passcode)
}

/// From now on ctrl-c (or SIGTERM) turns terminal echo back on before the process ends
/// (with status 130): killed at the passcode prompt, it would leave the terminal blind.
/// Returns once the handler is in place.
fn restore_echo_on_interrupt() {
    use tokio::signal::unix::{SignalKind, signal};
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("vportal-interrupt".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            let _in_runtime = runtime.enter();
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            let _ = ready_tx.send(());
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            set_echo(true);
            errln!();
            std::process::exit(130);
        });
    if spawned.is_ok() {
        // An error means the handler could not be set up: echo is then not turned off any
        // less, only not turned back on after a ctrl-c.
        let _ = ready.recv();
    }
}

/// Turns terminal echo off or on with `stty` (best effort: without it, typing shows). The
/// system's own, not one found through `PATH`, and without the environment, which may hold
/// `VPORTAL_PEPPER` or `VPORTAL_ADMIN_TOKEN`.
fn set_echo(on: bool) {
    let arg = if on { "echo" } else { "-echo" };
    let Some(stty) = ["/bin/stty", "/usr/bin/stty"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        if !on {
            err!("(no /bin/stty: the passcode will show as it is typed) ");
        }
        return;
    };
    let _ = std::process::Command::new(stty)
        .arg(arg)
        .env_clear()
        .stdin(std::process::Stdio::inherit())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concurrent first run read the pepper file this one made and created the database
    /// first (this one's `Store::open` then failing): the pepper file is that database's.
    #[test]
    fn a_failed_first_run_leaves_the_pepper_a_database_now_needs() {
        let dir = tempfile::tempdir().unwrap();
        let (db, pepper) = (dir.path().join("x.db"), dir.path().join("x.pepper"));
        std::fs::write(&pepper, "made by this run\n").unwrap();
        let mut made = FirstRunFiles::for_database(&db);
        made.files.push(pepper.clone());
        std::fs::write(&db, "").unwrap();
        drop(made);
        assert!(
            pepper.exists(),
            "the database beside it could not be opened again"
        );

        // With no database there, it goes.
        std::fs::remove_file(&db).unwrap();
        let mut made = FirstRunFiles::for_database(&db);
        made.files.push(pepper.clone());
        drop(made);
        assert!(!pepper.exists());
    }
}
