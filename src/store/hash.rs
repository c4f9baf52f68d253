//! argon2id hashing with a pepper, behind a bounded pool.
//!
//! Every passcode and every history entry is stored as an argon2id PHC string
//! (`$argon2id$v=19$m=7168,t=5,p=1$<salt>$<hash>`) computed with the pepper as argon2's
//! secret input. Parameters are one of OWASP's five equivalent argon2id settings (7 MiB, 5
//! passes, 1 lane; OWASP lists it beside 19 MiB × 2 as the same defence). It is the one
//! that runs fastest here: it does the fewest block operations of the five, and two hashes
//! at once stay well within the L3 cache, where 19 MiB ones thrash it. The parameters are
//! in each PHC string, so hashes made with others (this server's earlier 9 MiB × 4, or
//! stronger ones later) keep verifying.
//!
//! Each hash needs 7 MiB and a core for ~11 ms. [`Hasher`] admits at most one hash per core
//! at a time; further callers wait their turn, so a burst of logins cannot exhaust memory.
//! Each admission comes with a reused block buffer, so a hash does not allocate (and the
//! kernel does not zero) its 7 MiB every time.

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, Version};
use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};
use rand::TryRng;
use rand::rngs::SysRng;
use subtle::ConstantTimeEq;

use super::pepper::{Pepper, encode_hex};
use super::types::Passcode;

/// argon2 memory cost in KiB: 7 MiB (OWASP).
const M_COST: u32 = 7 * 1_024;
/// argon2 passes: 5 at 7 MiB (OWASP).
const T_COST: u32 = 5;
/// argon2 lanes.
const P_COST: u32 = 1;
/// Salt bytes (argon2 recommends 16).
const SALT_LEN: usize = 16;
/// The most work a stored hash may ask for: memory blocks (1 KiB) times passes, a single
/// pass over 1 GiB (about 30 times what [`M_COST`] and [`T_COST`] cost), so at most 1 GiB of
/// memory too. A row claiming more (a damaged or tampered database) is treated as corrupt
/// rather than allowed to exhaust memory, or to hold a hashing slot, and every login queued
/// behind it, for hours.
const MAX_WORK: u64 = 1 << 20;
/// Buffers larger than this (64 MiB) are freed after use rather than kept for the next hash.
const MAX_KEPT_BLOCKS: usize = 1 << 16;

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
        // The constants are valid argon2 parameters; the fallback is never taken, and would
        // be argon2's default, OWASP's equally strong 19 MiB × 2.
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

    fn argon2(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
    ) -> Result<Argon2<'_>, HashError> {
        Argon2::new_with_secret(self.pepper.as_bytes(), algorithm, version, params)
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
        let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
        let argon2 = self.argon2(Algorithm::Argon2id, Version::V0x13, self.params.clone())?;
        let mut permit = self.permits.acquire();
        argon2
            .hash_password_into_with_memory(
                passcode.expose().as_bytes(),
                &salt,
                &mut out,
                permit.memory(self.params.block_count()),
            )
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        drop(permit);
        let phc_err = |e: argon2::password_hash::phc::Error| HashError::Argon2(e.to_string());
        let phc = PasswordHash {
            algorithm: ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|e| HashError::Argon2(e.to_string()))?,
            salt: Some(Salt::new(&salt).map_err(phc_err)?),
            hash: Some(Output::new(&out).map_err(phc_err)?),
        };
        Ok(phc.to_string())
    }

    /// Hashes several passcodes in parallel, one thread per permit, keeping the order.
    ///
    /// # Errors
    /// The first [`HashError`] met.
    pub fn hash_all(&self, passcodes: &[&Passcode]) -> Result<Vec<String>, HashError> {
        let workers = self.permits.capacity.min(passcodes.len()).max(1);
        let chunk = passcodes.len().div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            // A thread that cannot be started (a task or memory limit) is an error, not a
            // panic; those started are joined as the scope ends.
            let handles = passcodes
                .chunks(chunk)
                .map(|part| {
                    std::thread::Builder::new()
                        .name("vportal-hash".into())
                        .spawn_scoped(scope, move || {
                            part.iter().map(|p| self.hash(p)).collect::<Vec<_>>()
                        })
                        .map_err(|e| {
                            HashError::Argon2(format!("cannot start a hashing thread: {e}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
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

    /// Whether `passcode` matches the PHC string `hash` (with the parameters written in
    /// it). Blocks while all permits are taken.
    ///
    /// # Errors
    /// [`HashError::Corrupt`] when `hash` is not a verifiable argon2 PHC string.
    pub fn verify(&self, passcode: &Passcode, hash: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(hash).map_err(|_| HashError::Corrupt)?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm.as_str()).map_err(|_| HashError::Corrupt)?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|_| HashError::Corrupt)?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|_| HashError::Corrupt)?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(HashError::Corrupt);
        };
        let work = (params.block_count() as u64).saturating_mul(u64::from(params.t_cost()));
        if work > MAX_WORK {
            return Err(HashError::Corrupt);
        }
        let blocks = params.block_count();
        let argon2 = self.argon2(algorithm, version, params)?;
        let mut buffer = [0_u8; Output::MAX_LENGTH];
        let out = buffer.get_mut(..expected.len()).ok_or(HashError::Corrupt)?;
        let mut permit = self.permits.acquire();
        let started = std::time::Instant::now();
        argon2
            .hash_password_into_with_memory(
                passcode.expose().as_bytes(),
                salt.as_ref(),
                out,
                permit.memory(blocks),
            )
            .map_err(|_| HashError::Corrupt)?;
        metrics::histogram!("vportal_argon2_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        drop(permit);
        Ok(bool::from(out.ct_eq(expected.as_bytes())))
    }

    /// Whether `hash` is what [`Hasher::hash`] makes now: argon2id, version 0x13, this
    /// hasher's memory, passes and lanes, a 16-byte salt and a 32-byte output, nothing else.
    /// A passcode whose hash is not (made by an earlier build, with other parameters) is
    /// hashed again when its owner next logs in with it.
    pub fn is_current(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        parsed.algorithm == ARGON2ID_IDENT
            && parsed.version == Some(Version::V0x13.into())
            && parsed.salt.is_some_and(|s| s.len() == SALT_LEN)
            && (params.m_cost(), params.t_cost(), params.p_cost())
                == (
                    self.params.m_cost(),
                    self.params.t_cost(),
                    self.params.p_cost(),
                )
            && params.output_len() == Some(Params::DEFAULT_OUTPUT_LEN)
            && params.keyid().is_empty()
            && params.data().is_empty()
    }

    /// Does the work of one [`Hasher::verify`] against a hash nobody's passcode matches, so
    /// that an unknown mailbox costs the same time as a known one. Always `false`.
    ///
    /// # Errors
    /// As [`Hasher::hash`], the first time only (the dummy hash is made once).
    pub fn verify_dummy(&self, passcode: &Passcode) -> Result<bool, HashError> {
        let dummy = self.dummy()?;
        self.verify(passcode, dummy).map(|_| false)
    }

    /// Makes the hash [`Hasher::verify_dummy`] checks against, if not yet made: a server
    /// does it at startup, so that the first unknown mailbox does not cost two hashes.
    ///
    /// # Errors
    /// As [`Hasher::hash`].
    pub fn prepare_dummy(&self) -> Result<(), HashError> {
        self.dummy().map(|_| ())
    }

    fn dummy(&self) -> Result<&str, HashError> {
        if let Some(d) = self.dummy.get() {
            return Ok(d);
        }
        let mut random = [0_u8; 16];
        SysRng
            .try_fill_bytes(&mut random)
            .map_err(|_| HashError::Rng)?;
        // Not a PIN anybody can type: hex letters are not DTMF digits.
        let secret = Passcode::new(encode_hex(&random)).map_err(|_| HashError::Rng)?;
        let made = self.hash(&secret)?;
        Ok(self.dummy.get_or_init(|| made))
    }

    /// A keyed BLAKE2b MAC of `data` under the pepper, hex-encoded: how admin tokens (high
    /// entropy, so no slow hash needed) and the pepper fingerprint are stored.
    pub fn mac(&self, data: &[u8]) -> String {
        mac_hex(&self.pepper, data)
    }
}

/// [`Hasher::mac`] without a hasher.
pub(crate) fn mac_hex(pepper: &Pepper, data: &[u8]) -> String {
    // BLAKE2b takes keys up to 64 bytes; peppers are 16 to 64 bytes, so the key is never
    // refused. Were it, the digest would still be of `data` (a constant would make every
    // token match every other).
    match Blake2bMac512::new_from_slice(pepper.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data);
            encode_hex(&mac.finalize().into_bytes())
        }
        Err(_) => {
            use blake2::{Blake2b512, Digest};
            encode_hex(&Blake2b512::digest(data))
        }
    }
}

/// A counting semaphore for threads (hashing happens on blocking threads, not in async
/// code), lending each holder a reusable argon2 block buffer. Permits go in the order they
/// were asked for: a bulk reset or import, whose threads ask again as soon as each hash is
/// done, must not keep a caller's login waiting behind all of its hashes.
struct Permits {
    capacity: usize,
    pool: Mutex<Pool>,
    released: Condvar,
}

struct Pool {
    free: usize,
    buffers: Vec<Vec<Block>>,
    /// The ticket the next to ask gets, and the one served next.
    next_ticket: u64,
    serving: u64,
}

struct Permit<'a> {
    permits: &'a Permits,
    memory: Vec<Block>,
}

impl Permits {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            pool: Mutex::new(Pool {
                free: capacity,
                buffers: Vec::new(),
                next_ticket: 0,
                serving: 0,
            }),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        // A panic while holding this lock cannot leave the pool inconsistent (the count
        // moves by one, a buffer is pushed or popped), so poisoning is ignored.
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = pool.next_ticket;
        pool.next_ticket += 1;
        while pool.serving != ticket || pool.free == 0 {
            pool = self
                .released
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pool.serving += 1;
        pool.free -= 1;
        // The next ticket may be served at once if a permit is still free.
        self.released.notify_all();
        let memory = pool.buffers.pop().unwrap_or_default();
        Permit {
            permits: self,
            memory,
        }
    }
}

impl Permit<'_> {
    /// `blocks` argon2 blocks of working memory (their contents are overwritten by argon2).
    fn memory(&mut self, blocks: usize) -> &mut [Block] {
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::default());
        }
        &mut self.memory[..blocks]
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        let mut pool = self
            .permits
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if memory.len() <= MAX_KEPT_BLOCKS {
            pool.buffers.push(memory);
        }
        pool.free += 1;
        // Every waiter looks: only the one whose ticket is next goes.
        self.permits.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Waits until `n` tickets have been handed out.
    fn tickets_out(permits: &Permits, n: u64) {
        while permits.pool.lock().unwrap().next_ticket < n {
            std::thread::yield_now();
        }
    }

    /// A thread that asks again as soon as it is done (a bulk import's) does not get ahead of
    /// one that asked while it waited (a caller's login).
    #[test]
    fn permits_go_in_the_order_asked() {
        let permits = Permits::new(1);
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let first = permits.acquire();
            s.spawn(|| {
                let p = permits.acquire();
                order.lock().unwrap().push("bulk");
                drop(p);
                let _p = permits.acquire();
                order.lock().unwrap().push("bulk again");
            });
            tickets_out(&permits, 2);
            s.spawn(|| {
                let _p = permits.acquire();
                order.lock().unwrap().push("login");
            });
            tickets_out(&permits, 3);
            drop(first);
        });
        assert_eq!(*order.lock().unwrap(), ["bulk", "login", "bulk again"]);
    }

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
        assert!(a.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(h.verify(&pin("4826"), &a).unwrap());
        assert!(!h.verify(&pin("4827"), &a).unwrap());
        // Another pepper cannot verify it: the database alone is not enough.
        let other = Hasher::new(Pepper::from_bytes(vec![8; 32]).unwrap(), 1);
        assert!(!other.verify(&pin("4826"), &a).unwrap());
        // Nor can plain argon2id without the secret.
        use argon2::PasswordVerifier;
        let plain = Argon2::default();
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(plain.verify_password(b"4826", &parsed).is_err());
        // With the secret, the reference verifier agrees: the PHC string is standard.
        let peppered = Argon2::new_with_secret(
            &[7; 32],
            Algorithm::Argon2id,
            Version::V0x13,
            Params::default(),
        )
        .unwrap();
        assert!(peppered.verify_password(b"4826", &parsed).is_ok());
    }

    #[test]
    fn corrupt_hashes_are_errors_not_mismatches() {
        let h = hasher(1);
        assert!(matches!(
            h.verify(&pin("1"), "not a hash"),
            Err(HashError::Corrupt)
        ));
        assert!(!h.verify_dummy(&pin("4826")).unwrap());
        // Made once, up front when asked: later checks reuse it.
        let fresh = hasher(1);
        fresh.prepare_dummy().unwrap();
        let made = fresh.dummy.get().cloned();
        assert!(made.is_some());
        assert!(!fresh.verify_dummy(&pin("4826")).unwrap());
        assert_eq!(fresh.dummy.get().cloned(), made);
    }

    #[test]
    fn hashes_made_with_other_parameters_still_verify() {
        use argon2::PasswordHasher;
        let h = hasher(1);
        // OWASP's 19 MiB × 2 and 9 MiB × 4 (this server's earlier defaults) and a cheap one,
        // made by the reference hasher with the same pepper.
        for (m, t) in [(19_456, 2), (9_216, 4), (1_024, 1)] {
            let argon2 = Argon2::new_with_secret(
                &[7; 32],
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m, t, 1, None).unwrap(),
            )
            .unwrap();
            let phc = argon2
                .hash_password_with_salt(b"5937", b"0123456789abcdef")
                .unwrap()
                .to_string();
            assert!(h.verify(&pin("5937"), &phc).unwrap(), "{phc}");
            assert!(!h.verify(&pin("5938"), &phc).unwrap(), "{phc}");
            // Not what this build makes: hashed again at the next login.
            assert!(!h.is_current(&phc), "{phc}");
        }
    }

    #[test]
    fn only_hashes_made_as_now_are_current() {
        let h = hasher(1);
        let now = h.hash(&pin("5937")).unwrap();
        assert!(h.is_current(&now), "{now}");
        let (head, output) = now.rsplit_once('$').unwrap();
        let (params, salt) = head.rsplit_once('$').unwrap();
        for other in [
            now.replace("$argon2id$", "$argon2i$"),
            now.replace("$v=19$", "$v=16$"),
            now.replace("m=7168", "m=7169"),
            now.replace("t=5", "t=6"),
            now.replace("p=1", "p=2"),
            format!("{params}$AAAAAAAAAAAAAAAA${output}"),
            format!("{params}${salt}${}", &output[..output.len() - 4]),
            now.replace("p=1", "p=1,keyid=AAAA"),
            "$argon2id$v=19$m=7168,t=5,p=1".to_owned(),
            "not a hash".to_owned(),
        ] {
            assert!(!h.is_current(&other), "{other}");
        }
    }

    #[test]
    fn hostile_hashes_are_corrupt_not_expensive() {
        let h = hasher(1);
        let good = h.hash(&pin("4826")).unwrap();
        // Memory beyond 1 GiB, passes that would take hours, another algorithm, no salt,
        // no hash.
        let huge = good.replace("m=7168", "m=4000000000");
        let endless = good.replace("t=5", "t=100000");
        let argon2i = good.replace("$argon2id$", "$argon2x$");
        let (head, _) = good.rsplit_once('$').unwrap();
        for bad in [
            huge.as_str(),
            endless.as_str(),
            argon2i.as_str(),
            head,
            "$argon2id$v=19$m=7168,t=5,p=1",
        ] {
            assert!(
                matches!(h.verify(&pin("4826"), bad), Err(HashError::Corrupt)),
                "{bad}"
            );
        }
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
