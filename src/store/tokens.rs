//! Admin API tokens.
//!
//! A token is 32 random bytes from the OS RNG, shown once as `vpt_` + 64 hex digits. Only a
//! keyed BLAKE2b MAC of it (keyed with the pepper) is stored: tokens carry full entropy, so
//! a slow password hash would add nothing but latency to every API request. Presented tokens
//! are compared with every stored MAC in constant time.

use std::fmt;
use std::time::Duration;

use rand::TryRng;
use rand::rngs::SysRng;
use rusqlite::OptionalExtension;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::audit::{self, Event};
use super::pepper::encode_hex;
use super::types::{Actor, SecretText, wipe};
use super::{Result, Store, StoreError};
use crate::time::Timestamp;

/// The prefix of every token, so a leaked one is recognisable in logs and scanners.
pub(crate) const TOKEN_PREFIX: &str = "vpt_";

/// Longest token name.
const MAX_TOKEN_NAME: usize = 64;

/// A new admin token's secret text. Shown once, at creation.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(SecretText);

impl AdminToken {
    /// The secret text, to hand to the admin who created it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// An admin token as listed: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token's name, recorded as the actor of what it does.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last authenticated a request.
    pub last_used_at: Option<Timestamp>,
}

/// Checks an admin token's name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// [`StoreError::Invalid`] saying what a name may hold.
pub fn check_token_name(name: &str) -> Result<()> {
    let ok = (1..=MAX_TOKEN_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(StoreError::Invalid(format!(
            "token name: 1 to {MAX_TOKEN_NAME} of A-Z a-z 0-9 . _ -"
        )));
    }
    if name.eq_ignore_ascii_case(CONFIGURED_TOKEN_NAME) {
        return Err(StoreError::Invalid(format!(
            "token name: {CONFIGURED_TOKEN_NAME:?} is reserved for the token from the config or \
             VPORTAL_ADMIN_TOKEN, so that the audit tells them apart"
        )));
    }
    Ok(())
}

/// The audit name of the token given by `VPORTAL_ADMIN_TOKEN` (or the config); no token in
/// the database may have it.
pub const CONFIGURED_TOKEN_NAME: &str = "configured";

impl Store {
    /// Creates an admin token called `name` and returns its secret (shown once).
    ///
    /// # Errors
    /// [`StoreError::TokenExists`]; [`StoreError::Invalid`] for a bad name.
    pub fn create_token(&self, name: &str, actor: &Actor, now: Timestamp) -> Result<AdminToken> {
        check_token_name(name)?;
        let mut bytes = [0_u8; 32];
        SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|_| StoreError::Invalid("the system random number generator failed".into()))?;
        let hex = SecretText::new(encode_hex(&bytes));
        let token = AdminToken(SecretText::new(format!("{TOKEN_PREFIX}{}", hex.expose())));
        drop(hex);
        wipe(&mut bytes);
        let hash = self.hasher.mac(token.expose().as_bytes());
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO admin_tokens (name, hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                (name, &hash, now.unix()),
            )?;
            if inserted == 0 {
                return Err(StoreError::TokenExists(name.to_owned()));
            }
            audit::record(tx, now, Event::TokenCreated, None, actor, "ok", Some(name))
        })?;
        Ok(token)
    }

    /// The admin tokens, by name.
    ///
    /// # Errors
    /// Database errors.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT name, created_at, last_used_at FROM admin_tokens ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok(TokenInfo {
                    name: r.get(0)?,
                    created_at: Timestamp::from_unix(r.get(1)?),
                    last_used_at: r.get::<_, Option<i64>>(2)?.map(Timestamp::from_unix),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Revokes the token called `name`.
    ///
    /// # Errors
    /// [`StoreError::TokenNotFound`].
    pub fn revoke_token(&self, name: &str, actor: &Actor, now: Timestamp) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM admin_tokens WHERE name = ?1", [name])? == 0 {
                return Err(StoreError::TokenNotFound(name.to_owned()));
            }
            audit::record(tx, now, Event::TokenRevoked, None, actor, "ok", Some(name))
        })
    }

    /// The name of the token `presented` is, if it is one; records its use.
    ///
    /// Every stored MAC is compared, in constant time, whatever matches: timing reveals
    /// neither which token matched nor how much of one did.
    ///
    /// # Errors
    /// Database errors.
    pub fn authenticate_token(&self, presented: &str, now: Timestamp) -> Result<Option<String>> {
        let mac = self.hasher.mac(presented.as_bytes());
        let rows: Vec<(String, String, Option<i64>)> = self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT name, hash, last_used_at FROM admin_tokens")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let mut found = None;
        for (name, hash, last_used) in rows {
            if bool::from(hash.as_bytes().ct_eq(mac.as_bytes())) {
                found = Some((name, last_used));
            }
        }
        let Some((name, last_used)) = found else {
            return Ok(None);
        };
        // Use is recorded at most once a minute per token: not a write per request. Nor
        // does it hold up the request, or fail it, while this process writes something else
        // (a long import) or another holds the write lock: it is left for a later request.
        if last_used.is_none_or(|at| at <= now.unix() - 60) {
            let recorded = self.write_if_free(Duration::from_millis(100), |tx| {
                tx.execute(
                    "UPDATE admin_tokens SET last_used_at = ?1
                     WHERE name = ?2 AND coalesce(last_used_at, 0) <= ?1 - 60",
                    (now.unix(), &name),
                )?;
                Ok(())
            });
            if let Some(Err(e)) = recorded {
                tracing::warn!(token = %name, error = %e, "could not record the token's use");
            }
        }
        Ok(Some(name))
    }

    /// Whether any admin token exists (`serve` warns when neither one nor a configured token
    /// does: the API would refuse every request).
    ///
    /// # Errors
    /// Database errors.
    pub fn has_tokens(&self) -> Result<bool> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT 1 FROM admin_tokens LIMIT 1", [], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditQuery;
    use crate::store::testing::*;

    #[test]
    fn tokens_authenticate_by_secret_and_store_only_a_mac() {
        let s = store();
        assert!(!s.has_tokens().unwrap());
        let token = s.create_token("provisioning", &cli(), T0).unwrap();
        assert!(token.expose().starts_with("vpt_") && token.expose().len() == 68);
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
        assert!(matches!(
            s.create_token("provisioning", &cli(), T0),
            Err(StoreError::TokenExists(_))
        ));
        assert!(s.create_token("bad name", &cli(), T0).is_err());
        assert_eq!(
            s.authenticate_token(token.expose(), T0).unwrap().as_deref(),
            Some("provisioning")
        );
        assert_eq!(s.authenticate_token("vpt_0000", T0).unwrap(), None);
        assert_eq!(s.authenticate_token("", T0).unwrap(), None);
        let listed = s.tokens().unwrap();
        assert_eq!(listed[0].last_used_at, Some(T0));
        let stored: String = s
            .read(|c| Ok(c.query_row("SELECT hash FROM admin_tokens", [], |r| r.get(0))?))
            .unwrap();
        assert!(!stored.contains(&token.expose()[4..]));
        s.revoke_token("provisioning", &cli(), T0).unwrap();
        assert_eq!(s.authenticate_token(token.expose(), T0).unwrap(), None);
        let gone = s.revoke_token("provisioning", &cli(), T0).unwrap_err();
        assert_eq!(gone.to_string(), "no admin token \"provisioning\"");
        // The token itself pasted in place of its name is not repeated, nor anything as long
        // as a configured token.
        for pasted in [token.expose(), &"4f1d8a2c".repeat(8)] {
            let refused = s.revoke_token(pasted, &cli(), T0).unwrap_err().to_string();
            assert!(refused.contains("looks like a token itself"), "{refused}");
            assert!(!refused.contains("4f1d8a2c") && !refused.contains(&token.expose()[4..]));
        }
        let events: Vec<_> = s
            .audit(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["token.revoked", "token.created"]);
    }
}
