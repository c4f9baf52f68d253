//! Human tables and JSON for the CLI's standard output.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use serde::Serialize;

use vportal::time::Timestamp;

/// Set once a command starts printing a secret it alone hands out (a generated passcode, a
/// new token): after that, a reader that went away is a failure, not a quiet exit.
static SECRETS_DUE: AtomicBool = AtomicBool::new(false);

/// Says that what is printed from now on holds a generated passcode or a token, shown only
/// this once: losing it to a closed pipe must not look like success.
///
/// Standard output that is `/dev/null` gets a warning on stderr. That is what `>/dev/null`
/// gives, which a script may mean, and also what a closed standard output (`>&-`) becomes:
/// Rust's runtime opens `/dev/null` in its place before `main`, so writes there would
/// otherwise vanish without a word.
///
/// So does standard output that is a file others may read: `vportal init > token.txt`
/// makes it with the shell's umask, typically 644, and the secret then sits in a file any
/// local user can read; or a file another user owns, who can read it whatever its mode.
/// The file is the operator's to chmod; it is not changed here.
pub(crate) fn secrets_follow() {
    if SECRETS_DUE.swap(true, Ordering::Relaxed) {
        return;
    }
    match stdout_kind() {
        StdoutKind::Null => errln!(
            "warning: standard output is /dev/null (or was closed): the generated passcode(s) \
             or token printed there reach nobody"
        ),
        StdoutKind::SharedFile(mode) => errln!(
            "warning: standard output is a file its group or others can read (mode {mode:03o}): \
             the generated passcode(s) or token written there are readable by them; chmod 600 it"
        ),
        StdoutKind::OthersFile(uid) => errln!(
            "warning: standard output is a file owned by another user (uid {uid}): the \
             generated passcode(s) or token written there are theirs to read"
        ),
        StdoutKind::Other => {}
    }
}

/// What standard output is, as far as a secret written there is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdoutKind {
    /// The null device.
    Null,
    /// A regular file whose group or others may read it (its permission bits).
    SharedFile(u32),
    /// A regular file owned by another user (its owner's uid).
    OthersFile(u32),
    /// Anything else: a terminal, a pipe, a file only its owner reads.
    Other,
}

#[cfg(unix)]
fn stdout_kind() -> StdoutKind {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() else {
        return StdoutKind::Other;
    };
    let Ok(out) = std::fs::File::from(fd).metadata() else {
        return StdoutKind::Other;
    };
    // The device itself, wherever its node is (a container's or chroot's own /dev).
    let null = std::fs::metadata("/dev/null")
        .is_ok_and(|null| out.file_type().is_char_device() && out.rdev() == null.rdev());
    let me = effective_uid();
    let file = out
        .file_type()
        .is_file()
        .then(|| (out.mode() & 0o777, out.uid()));
    classify(null, file, me)
}

/// Who this process is: its effective user, from `/proc/self/status` (Linux; the owner of
/// `/proc/self` would be root for a binary with file capabilities); elsewhere unknown.
#[cfg(unix)]
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// What standard output is: the null device, or a regular file with its permission bits
/// and owner, or neither; `me` is this process's user, when known.
#[cfg(unix)]
fn classify(null: bool, file: Option<(u32, u32)>, me: Option<u32>) -> StdoutKind {
    match file {
        _ if null => StdoutKind::Null,
        Some((mode, _)) if mode & 0o044 != 0 => StdoutKind::SharedFile(mode),
        Some((_, owner)) if me.is_some_and(|me| me != owner) => StdoutKind::OthersFile(owner),
        _ => StdoutKind::Other,
    }
}

#[cfg(not(unix))]
fn stdout_kind() -> StdoutKind {
    StdoutKind::Other
}

/// Whether this command has started printing a secret (see [`secrets_follow`]).
pub(crate) fn secrets_due() -> bool {
    SECRETS_DUE.load(Ordering::Relaxed)
}

/// Writes to standard output. A reader that went away (`vportal audit | head`) is an
/// [`io::ErrorKind::BrokenPipe`] error, which `main` turns into a quiet exit, where
/// `print!` would panic.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// `print!` that returns write errors (see [`write_out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(format_args!($($arg)*))
    };
}

/// `println!` that returns write errors (see [`write_out`]).
macro_rules! outln {
    () => {
        $crate::cli::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard error, and goes on whatever happens: a message that cannot be shown
/// (standard error closed, its disk full) must not stop the command, as `eprint!` would by
/// panicking, least of all before the passcodes it is about to print.
pub(crate) fn write_err(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.flush();
}

/// `eprint!` that never panics (see [`write_err`]).
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (see [`write_err`]).
macro_rules! errln {
    () => {
        $crate::cli::output::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, out, outln};

/// Prints `value` as pretty JSON.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A table with left-aligned columns separated by two spaces.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let _ = write!(text, "{cell:<width$}");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }

    pub(crate) fn print(&self) -> io::Result<()> {
        out!("{}", self.render())
    }
}

/// `key: value` lines with the keys aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{:<width$} {value}", format!("{key}:"));
    }
    out
}

/// A timestamp, or `-`.
pub(crate) fn time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// Text, or `-`.
pub(crate) fn text(t: Option<&str>) -> String {
    t.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["EXT", "NAME"]);
        t.row(vec!["1001".into(), "Alice".into()]);
        t.row(vec!["20".into(), "-".into()]);
        assert_eq!(t.render(), "EXT   NAME\n1001  Alice\n20    -\n");
        assert_eq!(
            fields(&[("a", "1".into()), ("bbb", "2".into())]),
            "a:   1\nbbb: 2\n"
        );
    }

    /// A secret's destination: the null device; a file its group or others can read; one
    /// only its owner reads, that owner being another user (who can read it whatever its
    /// mode), or us; anything else.
    #[cfg(unix)]
    #[test]
    fn where_a_secret_goes() {
        assert_eq!(classify(true, None, Some(0)), StdoutKind::Null);
        assert_eq!(
            classify(false, Some((0o644, 1000)), Some(1000)),
            StdoutKind::SharedFile(0o644)
        );
        assert_eq!(
            classify(false, Some((0o640, 1000)), Some(1000)),
            StdoutKind::SharedFile(0o640)
        );
        assert_eq!(
            classify(false, Some((0o600, 0)), Some(1000)),
            StdoutKind::OthersFile(0)
        );
        assert_eq!(
            classify(false, Some((0o600, 1000)), Some(1000)),
            StdoutKind::Other
        );
        // Who we are unknown: only the mode is checked.
        assert_eq!(classify(false, Some((0o600, 0)), None), StdoutKind::Other);
        // A pipe, a terminal, a socket.
        assert_eq!(classify(false, None, Some(1000)), StdoutKind::Other);
    }

    /// The effective user is read as the owner of a file this process makes.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_effective_user_is_who_owns_what_we_make() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("mine");
        std::fs::write(&made, b"").unwrap();
        let owner = std::fs::metadata(&made).unwrap().uid();
        assert_eq!(effective_uid(), Some(owner));
    }
}
