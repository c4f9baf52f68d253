//! The pepper: a secret key mixed into every argon2 hash, kept outside the database.
//!
//! With it, a stolen database alone does not let an attacker brute-force the small PIN space
//! (10^4 to 10^10) offline: every guess would also need the 256-bit pepper. It lives in a key
//! file (mode 0600, created by `vportal init` next to the database) or in the environment
//! variable `VPORTAL_PEPPER`; both hold 32 or more random bytes as hex.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::TryRng;
use rand::rngs::SysRng;

use super::types::{SecretText, wipe};

/// The environment variable that, when set, supplies the pepper instead of the key file.
pub const PEPPER_ENV: &str = "VPORTAL_PEPPER";

/// Bytes of a newly generated pepper.
const PEPPER_LEN: usize = 32;

/// Fewest bytes accepted from an operator-supplied pepper.
const MIN_PEPPER_LEN: usize = 16;

/// Longest pepper argon2 accepts as its secret input is far larger; this bounds the file read.
const MAX_PEPPER_LEN: usize = 64;

/// The pepper bytes. A secret: no `Display`, a redacted `Debug`, wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    /// Wraps raw pepper bytes (at least 16).
    ///
    /// # Errors
    /// [`PepperError::Malformed`] when shorter than 16 or longer than 64 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, PepperError> {
        if (MIN_PEPPER_LEN..=MAX_PEPPER_LEN).contains(&bytes.len()) {
            Ok(Self(bytes))
        } else {
            let _wiped = Self(bytes);
            Err(PepperError::Malformed(
                "a pepper is 16 to 64 bytes written as 32 to 128 hex digits",
            ))
        }
    }

    /// A fresh random pepper from the operating system's RNG.
    ///
    /// # Errors
    /// [`PepperError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, PepperError> {
        let mut bytes = vec![0; PEPPER_LEN];
        SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| PepperError::Rng)?;
        Ok(Self(bytes))
    }

    /// Reads a pepper written as hex (whitespace around it ignored).
    ///
    /// # Errors
    /// [`PepperError::Malformed`] for non-hex text or the wrong length. The message never
    /// contains the text.
    pub fn from_hex(text: &str) -> Result<Self, PepperError> {
        let bytes = decode_hex(text.trim()).ok_or(PepperError::Malformed(
            "a pepper must be written in hex digits",
        ))?;
        Self::from_bytes(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn to_hex(&self) -> SecretText {
        SecretText::new(encode_hex(&self.0))
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

impl Drop for Pepper {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Where the pepper came from, for the one line the server logs at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PepperSource {
    /// The `VPORTAL_PEPPER` environment variable.
    Environment,
    /// An existing key file.
    File(PathBuf),
    /// A key file created just now.
    Created(PathBuf),
}

/// The pepper could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum PepperError {
    /// No pepper in the environment and no key file.
    #[error("pepper file {} not found (run `vportal init`, or set {PEPPER_ENV})", .0.display())]
    Missing(PathBuf),
    /// The key file could not be read or written.
    #[error("pepper file {}: {source}", .path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file belongs to another user, who may have chosen it (planted beside a
    /// database being created in a directory others can write) and may still read it.
    #[error(
        "pepper file {} belongs to user id {owner}, not to the user vportal runs as, nor to \
         root or the database's owner: another user may have put it there and may read it; \
         if it is the right file, `chown` it",
        .path.display()
    )]
    Foreign {
        /// The key file.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// The key file may be read by other users.
    #[error(
        "pepper file {} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The pepper text is not what a pepper looks like.
    #[error("malformed pepper: {0}")]
    Malformed(&'static str),
    /// The pepper read from the key file or the environment is malformed: names which.
    #[error("{origin} holds a malformed pepper: {reason}")]
    MalformedIn {
        /// `pepper file PATH` or the environment variable's name.
        origin: String,
        /// What is wrong (never the text itself).
        reason: &'static str,
    },
    /// The system RNG failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// Resolves the pepper: `VPORTAL_PEPPER` if set, else the key file at `path`.
///
/// With `create`, a missing key file is generated (mode 0600). Callers pass `create` only
/// when the database is being created too: a new pepper for an existing database would lock
/// every mailbox out. `store_owner` is the user id owning the database file, when there is
/// one: a key file of that user is taken too (root, or an admin's account in its group,
/// running the CLI on the service's files), besides one of the user vportal runs as or root.
///
/// # Errors
/// [`PepperError`] when the environment value is malformed, or the file is missing (without
/// `create`), unreadable, another user's, readable by others or malformed.
pub fn load(
    path: &Path,
    create: bool,
    store_owner: Option<u32>,
) -> Result<(Pepper, PepperSource), PepperError> {
    let env_value = match std::env::var(PEPPER_ENV) {
        Ok(text) => Some(text),
        Err(std::env::VarError::NotPresent) => None,
        // Set, but not text: certainly not hex, and not the same as unset (a first run
        // would otherwise make a pepper file in its place).
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(PepperError::MalformedIn {
                origin: PEPPER_ENV.to_owned(),
                reason: "a pepper must be written in hex digits",
            });
        }
    };
    load_from(env_value, path, create, store_owner)
}

/// [`load`] with the environment value passed in.
fn load_from(
    env_value: Option<String>,
    path: &Path,
    create: bool,
    store_owner: Option<u32>,
) -> Result<(Pepper, PepperSource), PepperError> {
    let malformed_in = |origin: String| {
        move |e| match e {
            PepperError::Malformed(reason) => PepperError::MalformedIn { origin, reason },
            other => other,
        }
    };
    // The text is the pepper too: wiped when dropped, as the pepper is.
    if let Some(text) = env_value.map(SecretText::new) {
        let pepper =
            Pepper::from_hex(text.expose()).map_err(malformed_in(PEPPER_ENV.to_owned()))?;
        return Ok((pepper, PepperSource::Environment));
    }
    let io_err = |source| PepperError::Io {
        path: path.to_owned(),
        source,
    };
    match read_key_file(path, store_owner)? {
        Some(text) => {
            let pepper = Pepper::from_hex(text.expose())
                .map_err(malformed_in(format!("pepper file {}", path.display())))?;
            Ok((pepper, PepperSource::File(path.to_owned())))
        }
        None if create => {
            let pepper = Pepper::generate()?;
            match write_private(path, &pepper) {
                Ok(()) => Ok((pepper, PepperSource::Created(path.to_owned()))),
                // Another first run made one just now: that one is the database's.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match read_key_file(path, store_owner)? {
                        Some(text) => Ok((
                            Pepper::from_hex(text.expose())
                                .map_err(malformed_in(format!("pepper file {}", path.display())))?,
                            PepperSource::File(path.to_owned()),
                        )),
                        None => Err(PepperError::Missing(path.to_owned())),
                    }
                }
                Err(e) => Err(io_err(e)),
            }
        }
        None => Err(PepperError::Missing(path.to_owned())),
    }
}

/// The text of the key file at `path`, `None` when there is none: a regular file (not a
/// FIFO that would block, nor a device that never ends), owned and private (see
/// [`check_private`], before anything is read), of at most a few hundred bytes. What is
/// checked is the file opened, so it cannot be swapped between the check and the read.
fn read_key_file(path: &Path, store_owner: Option<u32>) -> Result<Option<SecretText>, PepperError> {
    use std::io::Read as _;
    /// 64 bytes as hex, with room for line ends and spaces around them.
    const MAX_TEXT: usize = 4 * MAX_PEPPER_LEN;
    let io_err = |source| PepperError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match open_key_file(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    check_private(path, &meta, store_owner)?;
    // Read into room made beforehand, so that no reallocation leaves a copy behind.
    let mut text = SecretText::new(String::with_capacity(MAX_TEXT + 1));
    let limit = u64::try_from(MAX_TEXT + 1).unwrap_or(u64::MAX);
    file.take(limit)
        .read_to_string(text.as_mut_string())
        .map_err(io_err)?;
    if text.expose().len() > MAX_TEXT {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than any pepper ({MAX_TEXT} bytes at most)"),
        )));
    }
    Ok(Some(text))
}

/// The user id owning the file at `path` (the database, for [`load`]), if there is one.
pub fn owner_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).ok().map(|meta| meta.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Opens the key file to read without waiting: opening a FIFO to read would wait for a
/// writer (reading a regular file never waits anyway).
#[cfg(unix)]
fn open_key_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_key_file(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path)
}

/// Refuses a key file that users other than its owner may read or write, or whose owner is
/// neither the user vportal runs as, nor root, nor `store_owner` (the database's): like
/// ssh with its keys, whoever else owns it may have chosen it and may read it still.
#[cfg(unix)]
fn check_private(
    path: &Path,
    meta: &fs::Metadata,
    store_owner: Option<u32>,
) -> Result<(), PepperError> {
    use std::os::unix::fs::MetadataExt;
    let owner = meta.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me && owner != 0 && Some(owner) != store_owner {
        return Err(PepperError::Foreign {
            path: path.to_owned(),
            owner,
        });
    }
    let mode = meta.mode();
    if mode & 0o077 != 0 {
        return Err(PepperError::Exposed {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(
    _path: &Path,
    _meta: &fs::Metadata,
    _store_owner: Option<u32>,
) -> Result<(), PepperError> {
    Ok(())
}

/// Writes the pepper to `path`, which must not exist, whole or not at all: it is written
/// under a name of its own beside it, then linked into place, which fails if another
/// process (a first run at the same moment) put one there first. Nobody ever reads a
/// pepper file half written.
fn write_private(path: &Path, pepper: &Pepper) -> io::Result<()> {
    let mut draft = path.as_os_str().to_owned();
    draft.push(format!(".{}.new", std::process::id()));
    let draft = std::path::PathBuf::from(draft);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&draft).and_then(|mut file| {
        let text = SecretText::new(format!("{}\n", pepper.to_hex().expose()));
        file.write_all(text.expose().as_bytes())?;
        file.sync_all()
    });
    let placed = written.and_then(|()| fs::hard_link(&draft, path));
    let _ = fs::remove_file(&draft);
    placed?;
    // The file's bytes are on disk; its name is only once its directory is. Without this
    // a power cut soon after could keep the database (SQLite syncs its own directory) and
    // lose the pepper in another, and every passcode with it.
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Best effort: the pepper is in place, and some file systems cannot sync a directory.
        if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the pepper file's directory");
        }
    }
    Ok(())
}

/// Lower-case hex.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Hex, either case; `None` for odd length or a non-hex digit.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    // At full size at once, and wiped if a digit is bad: what it holds may be a pepper.
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => out.push(high << 4 | low),
            _ => {
                wipe(&mut out);
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pepper path naming something other than a small regular file is refused before it
    /// is read: a FIFO would block every command, `/dev/zero` would fill memory.
    #[test]
    fn only_a_small_regular_file_is_read_as_a_pepper() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pepper");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let long = dir.path().join("long.pepper");
        std::fs::write(&long, "ab".repeat(1_000)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [&fifo, &long] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        for (path, says) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (long.as_path(), "longer than any pepper"),
        ] {
            let err = load_from(None, path, false, None).unwrap_err();
            assert!(err.to_string().contains(says), "{}: {err}", path.display());
        }
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&encode_hex(&bytes)).unwrap(), bytes);
        assert_eq!(decode_hex("ABcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn pepper_length_is_checked_without_echoing() {
        let short = "00".repeat(15);
        let err = Pepper::from_hex(&short).unwrap_err().to_string();
        assert!(!err.contains(&short));
        assert!(Pepper::from_hex(&"ab".repeat(32)).is_ok());
        assert!(Pepper::from_hex("not hex at all, not hex at all, not hex").is_err());
        assert_eq!(
            format!("{:?}", Pepper::generate().unwrap()),
            "Pepper(<redacted>)"
        );
    }

    /// A malformed pepper says where it was read: the file, or the environment variable
    /// (with both about, "malformed pepper" alone did not say which to fix).
    #[cfg(unix)]
    #[test]
    fn a_malformed_pepper_names_its_source() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vportal.pepper");
        fs::write(&path, "zz-secret-zz\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_from(None, &path, false, None).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = load_from(Some("ab-secret".into()), &path, false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(PEPPER_ENV), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn created_file_is_private_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vportal.pepper");
        let load = |path: &Path, create| load_from(None, path, create, None);
        assert!(matches!(load(&path, false), Err(PepperError::Missing(_))));
        let (created, source) = load(&path, true).unwrap();
        assert_eq!(source, PepperSource::Created(path.clone()));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (loaded, source) = load(&path, false).unwrap();
        assert_eq!(source, PepperSource::File(path.clone()));
        assert!(created == loaded);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(&path, false),
            Err(PepperError::Exposed { .. })
        ));
        // The environment wins over the file, and is checked the same way.
        let from_env = load_from(Some("cd".repeat(32)), &path, false, None).unwrap();
        assert_eq!(from_env.1, PepperSource::Environment);
        assert!(load_from(Some("cd".into()), &path, false, None).is_err());
    }
}
