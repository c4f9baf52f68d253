//! The nouns of the credential store: mailbox extensions, passcodes and who acted.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

/// Longest extension accepted: the E.164 maximum number length.
pub const MAX_EXTENSION_LEN: usize = 15;

/// Longest passcode text ever handled. Policies cap PINs far lower; this bounds what a caller
/// or an API client can make the server hash.
pub const MAX_PASSCODE_LEN: usize = 64;

/// A mailbox number: 1 to 15 ASCII digits.
///
/// Extensions are identifiers, not secrets: they appear in logs, audit rows and URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extension(String);

/// Text that is not a valid extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an extension is 1 to {MAX_EXTENSION_LEN} digits (0-9)")]
pub struct InvalidExtension;

impl Extension {
    /// Checks and wraps an extension.
    ///
    /// # Errors
    /// [`InvalidExtension`] unless `text` is 1 to 15 ASCII digits. The message never repeats
    /// the input: a caller who typed a passcode at the mailbox prompt must not see it echoed.
    pub fn parse(text: &str) -> Result<Self, InvalidExtension> {
        if (1..=MAX_EXTENSION_LEN).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidExtension)
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Extension {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A passcode as entered or generated. A secret.
///
/// It has no `Display`, its `Debug` prints `Passcode(<redacted>)`, and its buffer is
/// overwritten when dropped. The only way to the digits is [`Passcode::expose`], which
/// hashing, the policy check and the one response that hands a generated passcode to an admin
/// call explicitly.
#[derive(Clone, PartialEq, Eq)]
pub struct Passcode(SecretText);

/// Text too long to be a passcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a passcode is at most {MAX_PASSCODE_LEN} characters")]
pub struct PasscodeTooLong;

impl Passcode {
    /// Wraps passcode text. Content rules are the policy's business; this only bounds size.
    ///
    /// # Errors
    /// [`PasscodeTooLong`] beyond [`MAX_PASSCODE_LEN`] bytes.
    pub fn new(text: String) -> Result<Self, PasscodeTooLong> {
        let text = SecretText(text);
        if text.expose().len() > MAX_PASSCODE_LEN {
            return Err(PasscodeTooLong);
        }
        Ok(Self(text))
    }

    /// No passcode yet: an entry before the first key.
    pub fn empty() -> Self {
        Self(SecretText::new(String::new()))
    }

    /// The secret text. Call only where the digits are needed: hashing, policy, handing a
    /// generated passcode to the admin who asked for it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for Passcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passcode(<redacted>)")
    }
}

/// Secret text, overwritten in memory when dropped. Wrapped by the public secret types,
/// which give it a redacted `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretText(String);

impl SecretText {
    pub(crate) fn new(text: String) -> Self {
        Self(text)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The text, to fill in place: give it the room it needs first, as a reallocation
    /// would leave a copy unwiped.
    pub(crate) fn as_mut_string(&mut self) -> &mut String {
        &mut self.0
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        wipe_string(&mut self.0);
    }
}

/// Overwrites a secret's bytes before the memory is freed.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    // Keep the overwrite from being optimised away as a dead store.
    std::hint::black_box(bytes);
}

/// [`wipe`] for a string, leaving it empty.
fn wipe_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    wipe(&mut bytes);
}

/// Who did something, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin at the command line; `user` is the operating-system login when known.
    Cli {
        /// The login name from `$SUDO_USER`/`$USER`/`$LOGNAME`, if any (and plausible).
        user: Option<String>,
    },
    /// A client of the admin HTTP API, named by the token it presented.
    Admin {
        /// The admin token's name (never the token).
        token: String,
        /// The HTTP client's address, when known.
        source: Option<SocketAddr>,
    },
    /// A phone caller.
    Caller {
        /// Where the call's signalling came from.
        source: SocketAddr,
        /// The SIP Call-ID.
        call_id: String,
    },
    /// vportal itself (migrations, housekeeping).
    System,
}

impl Actor {
    /// The CLI actor for the current operating-system user: `$SUDO_USER` (the admin behind
    /// `sudo`), else `$USER`, else `$LOGNAME`; none unless it looks like a login name.
    pub fn cli_from_env() -> Self {
        Self::Cli {
            user: Self::cli_login(|name| std::env::var_os(name)),
        }
    }

    /// The first of `SUDO_USER`, `USER` and `LOGNAME` that `var` has (and is not empty),
    /// kept only when it is a plausible login name: 1 to 32 of `A-Z a-z 0-9 . _ -`, not
    /// starting with `-`. Anything else (a control character, which would split an audit
    /// table's row; `admin:x`, which would read as an API token) is not recorded.
    fn cli_login(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<String> {
        let value = ["SUDO_USER", "USER", "LOGNAME"]
            .into_iter()
            .find_map(|name| var(name).filter(|v| !v.is_empty()))?;
        let value = value.into_string().ok()?;
        let plausible = value.len() <= 32
            && !value.starts_with('-')
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        plausible.then_some(value)
    }

    /// The `actor` column: `cli`, `cli:alice`, `admin:provisioning`, `caller` or `system`.
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Cli { user: None } => "cli".to_owned(),
            Self::Cli { user: Some(u) } => format!("cli:{u}"),
            Self::Admin { token, .. } => format!("admin:{token}"),
            Self::Caller { .. } => "caller".to_owned(),
            Self::System => "system".to_owned(),
        }
    }

    /// The caller's source address, for the `source` column.
    pub(crate) fn source(&self) -> Option<String> {
        match self {
            Self::Caller { source, .. }
            | Self::Admin {
                source: Some(source),
                ..
            } => Some(source.to_string()),
            _ => None,
        }
    }

    /// The call's Call-ID, for the `call_id` column.
    pub(crate) fn call_id(&self) -> Option<&str> {
        match self {
            Self::Caller { call_id, .. } => Some(call_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_digits_only() {
        for ok in ["1", "1001", "8500", "123456789012345"] {
            assert_eq!(Extension::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "1234567890123456",
            "12a4",
            "../1",
            "1 2",
            "١٢٣",
            "+4930",
        ] {
            assert!(Extension::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passcode_debug_is_redacted() {
        let p = Passcode::new("4820".to_owned()).unwrap();
        assert_eq!(format!("{p:?}"), "Passcode(<redacted>)");
        assert!(!format!("{:?}", Some(&p)).contains("4820"));
        assert!(Passcode::new("9".repeat(MAX_PASSCODE_LEN + 1)).is_err());
    }

    #[test]
    fn actor_columns() {
        let caller = Actor::Caller {
            source: "127.0.0.1:5062".parse().unwrap(),
            call_id: "abc@host".to_owned(),
        };
        assert_eq!(caller.label(), "caller");
        assert_eq!(caller.source().as_deref(), Some("127.0.0.1:5062"));
        assert_eq!(caller.call_id(), Some("abc@host"));
        let admin = Actor::Admin {
            token: "provisioning".to_owned(),
            source: Some("127.0.0.1:40000".parse().unwrap()),
        };
        assert_eq!(admin.label(), "admin:provisioning");
        assert_eq!(admin.source().as_deref(), Some("127.0.0.1:40000"));
        assert_eq!(admin.call_id(), None);
        assert_eq!(Actor::Cli { user: None }.label(), "cli");
    }

    #[test]
    fn the_cli_login_is_a_plausible_login_name_or_none() {
        let login = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Actor::cli_login(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
        };
        assert_eq!(login(&[("USER", "alice")]).as_deref(), Some("alice"));
        assert_eq!(login(&[("LOGNAME", "bob.s")]).as_deref(), Some("bob.s"));
        // Under sudo, the admin who ran it, not root.
        assert_eq!(
            login(&[("SUDO_USER", "carol_1"), ("USER", "root")]).as_deref(),
            Some("carol_1")
        );
        assert_eq!(
            login(&[("USER", ""), ("LOGNAME", "dave")]).as_deref(),
            Some("dave")
        );
        assert_eq!(login(&[]), None);
        for bad in [
            "x\nfake",
            "admin:admin",
            "a b",
            "-rf",
            "tab\there",
            "ü",
            &"a".repeat(33),
        ] {
            assert_eq!(login(&[("USER", bad), ("LOGNAME", "ok")]), None, "{bad:?}");
        }
    }
}
