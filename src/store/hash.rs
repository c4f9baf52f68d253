//! argon2id hashing with a pepper, behind a bounded pool.
//!
//! Every passcode and every history entry is stored as an argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) computed with the pepper as argon2's
//! secret input. Parameters are OWASP's (19 MiB, 2 passes, 1 lane); they are in each PHC
//! string, so raising them later keeps old hashes verifiable.
//!
//! Each hash needs 19 MiB and a core for ~10-20 ms. [`Hasher`] admits at most one hash per
//! core at a time; further callers wait their turn, so a burst of logins cannot exhaust memory.

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};
use rand::TryRng;
use rand::rngs::SysRng;

use super::pepper::{Pepper, encode_hex};
use super::types::Passcode;

/// argon2 memory cost in KiB: OWASP's 19 MiB.
const M_COST: u32 = 19 * 1_024;
/// argon2 passes: OWASP's 2 at 19 MiB.
const T_COST: u32 = 2;
/// argon2 lanes.
const P_COST: u32 = 1;
/// Salt bytes (argon2 recommends 16).
const SALT_LEN: usize = 16;

/// Hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// A stored hash is not a PHC string argon2 can verify against. The hash is not quoted.
    #[error("a stored passcode hash is corrupt")]
    Corrupt,
    /// argon2 refused its inputs (never expected with fixed parameters).
    #[error("argon2 failed: {0}")]
    Argon2(String),
    /// The system RNG failed while drawing a salt.
    #[error("the system random number generator failed")]
    Rng,
}

/// Hashes and verifies passcodes with argon2id and the pepper; at most `concurrency` at once.
pub struct Hasher {
    pepper: Pepper,
    params: Params,
    permits: Permits,
    /// A hash of a random passcode, verified against when a mailbox does not exist so that
    /// the answer takes as long as for one that does.
    dummy: OnceLock<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("concurrency", &self.permits.capacity)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher with OWASP parameters admitting `concurrency` hashes at once (at least one).
    pub fn new(pepper: Pepper, concurrency: usize) -> Self {
        // The constants are valid argon2 parameters; `Params::DEFAULT` is the same triple.
        let params = Params::new(M_COST, T_COST, P_COST, None).unwrap_or(Params::DEFAULT);
        Self {
            pepper,
            params,
            permits: Permits::new(concurrency.max(1)),
            dummy: OnceLock::new(),
        }
    }

    /// One permit per core, as the product asks: the default concurrency.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, usize::from)
    }

    fn argon2(&self) -> Result<Argon2<'_>, HashError> {
        Argon2::new_with_secret(
            self.pepper.as_bytes(),
            Algorithm::Argon2id,
            Version::V0x13,
            self.params.clone(),
        )
        .map_err(|e| HashError::Argon2(e.to_string()))
    }

    /// Hashes `passcode` with a fresh salt. Blocks while all permits are taken.
    ///
    /// # Errors
    /// [`HashError::Rng`] or [`HashError::Argon2`].
    pub fn hash(&self, passcode: &Passcode) -> Result<String, HashError> {
        let mut salt = [0_u8; SALT_LEN];
        SysRng
            .try_fill_bytes(&mut salt)
            .map_err(|_| HashError::Rng)?;
        let _permit = self.permits.acquire();
        let hash = self
            .argon2()?
            .hash_password_with_salt(passcode.expose().as_bytes(), &salt)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Hashes several passcodes in parallel, one thread per permit, keeping the order.
    ///
    /// # Errors
    /// The first [`HashError`] met.
    pub fn hash_all(&self, passcodes: &[&Passcode]) -> Result<Vec<String>, HashError> {
        let workers = self.permits.capacity.min(passcodes.len()).max(1);
        let chunk = passcodes.len().div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = passcodes
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|p| self.hash(p)).collect::<Vec<_>>())
                })
                .collect();
            let mut out = Vec::with_capacity(passcodes.len());
            for handle in handles {
                let part = handle
                    .join()
                    .map_err(|_| HashError::Argon2("a hashing thread panicked".into()))?;
                for hash in part {
                    out.push(hash?);
                }
            }
            Ok(out)
        })
    }

    /// Whether `passcode` matches the PHC string `hash`. Blocks while all permits are taken.
    ///
    /// # Errors
    /// [`HashError::Corrupt`] when `hash` is not a verifiable argon2 PHC string.
    pub fn verify(&self, passcode: &Passcode, hash: &str) -> Result<bool, HashError> {
        let parsed = argon2::PasswordHash::new(hash).map_err(|_| HashError::Corrupt)?;
        let _permit = self.permits.acquire();
        let started = std::time::Instant::now();
        let result = self
            .argon2()?
            .verify_password(passcode.expose().as_bytes(), &parsed);
        metrics::histogram!("vportal_argon2_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(_) => Err(HashError::Corrupt),
        }
    }

    /// Does the work of one [`Hasher::verify`] against a hash nobody's passcode matches, so
    /// that an unknown mailbox costs the same time as a known one. Always `false`.
    ///
    /// # Errors
    /// As [`Hasher::hash`], the first time only (the dummy hash is made once).
    pub fn verify_dummy(&self, passcode: &Passcode) -> Result<bool, HashError> {
        let dummy = match self.dummy.get() {
            Some(d) => d,
            None => {
                let mut random = [0_u8; 16];
                SysRng
                    .try_fill_bytes(&mut random)
                    .map_err(|_| HashError::Rng)?;
                // Not a PIN anybody can type: hex letters are not DTMF digits.
                let secret = Passcode::new(encode_hex(&random)).map_err(|_| HashError::Rng)?;
                let made = self.hash(&secret)?;
                self.dummy.get_or_init(|| made)
            }
        };
        self.verify(passcode, dummy).map(|_| false)
    }

    /// A keyed BLAKE2b MAC of `data` under the pepper, hex-encoded: how admin tokens (high
    /// entropy, so no slow hash needed) and the pepper fingerprint are stored.
    pub fn mac(&self, data: &[u8]) -> String {
        mac_hex(&self.pepper, data)
    }
}

/// [`Hasher::mac`] without a hasher.
pub(crate) fn mac_hex(pepper: &Pepper, data: &[u8]) -> String {
    // BLAKE2b takes keys up to 64 bytes; peppers are 16 to 64 bytes.
    match Blake2bMac512::new_from_slice(pepper.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data);
            encode_hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// A counting semaphore for threads: hashing happens on blocking threads, not in async code.
struct Permits {
    capacity: usize,
    free: Mutex<usize>,
    released: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            free: Mutex::new(capacity),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        // A panic while holding this lock cannot leave the count inconsistent (it is only
        // ever decremented or incremented by one), so poisoning is ignored.
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .released
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hasher(concurrency: usize) -> Hasher {
        Hasher::new(Pepper::from_bytes(vec![7; 32]).unwrap(), concurrency)
    }

    fn pin(s: &str) -> Passcode {
        Passcode::new(s.to_owned()).unwrap()
    }

    #[test]
    fn hashes_are_salted_peppered_argon2id() {
        let h = hasher(2);
        let a = h.hash(&pin("4826")).unwrap();
        let b = h.hash(&pin("4826")).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(h.verify(&pin("4826"), &a).unwrap());
        assert!(!h.verify(&pin("4827"), &a).unwrap());
        // Another pepper cannot verify it: the database alone is not enough.
        let other = Hasher::new(Pepper::from_bytes(vec![8; 32]).unwrap(), 1);
        assert!(!other.verify(&pin("4826"), &a).unwrap());
        // Nor can plain argon2id without the secret.
        let plain = Argon2::default();
        let parsed = argon2::PasswordHash::new(&a).unwrap();
        assert!(plain.verify_password(b"4826", &parsed).is_err());
    }

    #[test]
    fn corrupt_hashes_are_errors_not_mismatches() {
        let h = hasher(1);
        assert!(matches!(
            h.verify(&pin("1"), "not a hash"),
            Err(HashError::Corrupt)
        ));
        assert!(!h.verify_dummy(&pin("4826")).unwrap());
    }

    #[test]
    fn hash_all_keeps_order() {
        let h = hasher(2);
        let pins = [pin("4826"), pin("5937"), pin("6048")];
        let refs: Vec<&Passcode> = pins.iter().collect();
        let hashes = h.hash_all(&refs).unwrap();
        for (p, hash) in pins.iter().zip(&hashes) {
            assert!(h.verify(p, hash).unwrap());
        }
        assert!(h.hash_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn permits_bound_concurrency() {
        let permits = Permits::new(2);
        let inside = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _p = permits.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn mac_depends_on_pepper() {
        let a = hasher(1).mac(b"token");
        assert_eq!(a.len(), 128);
        assert_eq!(a, hasher(1).mac(b"token"));
        let other = Hasher::new(Pepper::from_bytes(vec![9; 32]).unwrap(), 1);
        assert_ne!(a, other.mac(b"token"));
    }
}
