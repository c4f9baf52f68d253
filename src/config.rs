//! The configuration file (TOML) and its embedded defaults.
//!
//! Every setting has a default, so `vportal serve` runs with no file at all. A file overrides
//! what it names; command-line flags override the file. Unknown keys are errors, reported
//! with the file, line and key, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The credential store.
    pub store: StoreConfig,
}

/// Where the credential store lives and how hard it may hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file. Default `vportal.db` in the working directory.
    pub database: PathBuf,
    /// The pepper key file. Default: next to the database, named after it with the extension
    /// `.pepper` (`vportal.pepper`). `VPORTAL_PEPPER` overrides it.
    pub pepper_file: Option<PathBuf>,
    /// argon2 hashes allowed at once; 0 means one per core (the default).
    pub hash_concurrency: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("vportal.db"),
            pepper_file: None,
            hash_concurrency: 0,
        }
    }
}

impl StoreConfig {
    /// The pepper file: as configured, else the database path with the extension `.pepper`.
    pub fn pepper_path(&self) -> PathBuf {
        self.pepper_file
            .clone()
            .unwrap_or_else(|| self.database.with_extension("pepper"))
    }
}

/// The configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("config file {}, {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where and what: the line, the key, the problem.
        message: String,
    },
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, and for bad content the line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses configuration text; the error names the line and the key.
    ///
    /// # Errors
    /// A message such as `line 3, key store.databse: unknown field ...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }
}

/// Turns a TOML error into `line N, key a.b: message`.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = e.span().and_then(|span| key_at(text, span.start));
    let what = e.message().trim_end();
    match (line, key) {
        (Some(line), Some(key)) => format!("line {line}, key {key}: {what}"),
        (Some(line), None) => format!("line {line}: {what}"),
        _ => what.to_owned(),
    }
}

/// The dotted key a byte offset falls on: the enclosing `[table]` plus the key on that line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        );
    }
    let key = line.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('#') {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.store.pepper_path(), PathBuf::from("vportal.pepper"));
    }

    #[test]
    fn settings_override_defaults() {
        let c = Config::parse("[store]\ndatabase = \"/var/lib/vportal/v.db\"\n").unwrap();
        assert_eq!(c.store.database, PathBuf::from("/var/lib/vportal/v.db"));
        assert_eq!(
            c.store.pepper_path(),
            PathBuf::from("/var/lib/vportal/v.pepper")
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = Config::parse("# comment\n[store]\ndatabse = \"x\"\n").unwrap_err();
        assert!(err.starts_with("line 3, key store.databse:"), "{err}");
        let err = Config::parse("[store]\nhash_concurrency = \"many\"\n").unwrap_err();
        assert!(
            err.starts_with("line 2, key store.hash_concurrency:"),
            "{err}"
        );
        let err = Config::parse("[stor]\n").unwrap_err();
        assert!(err.starts_with("line 1, key stor:"), "{err}");
    }
}
