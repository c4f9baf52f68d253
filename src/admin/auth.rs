//! Bearer-token authentication, and turning away clients that keep guessing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::AdminState;
use super::error::ApiError;
use crate::net::{Client, client_key, is_loopback};
use crate::store::{Actor, Hasher};
use crate::time::Timestamp;

/// Bad tokens a client may present before it is turned away for a while.
const FREE_FAILURES: u32 = 3;
/// The first time a client is turned away for; it doubles with each further bad token.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A client's failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at most (the oldest are dropped first).
const MAX_TRACKED: usize = 10_000;

/// Counts bad tokens per client: an IPv4 address or an IPv6 /64 ([`client_key`]; one IPv6
/// host can take a fresh address from its /64 for every guess). Past a few, the client is
/// turned away (429 with `Retry-After`) for a time that doubles with each further one; a
/// request turned away does not have its token looked at. A guesser gets one guess per
/// period however many connections it opens, and holds no connection while it waits.
///
/// Before that, checks that have not ended count as failures-to-be ([`Throttle::admit`]):
/// a client's requests sent at once are checked only as many at a time as it has free bad
/// tokens left, the others waiting until one ends (a check takes microseconds), so a burst
/// on many connections before any check has failed is not a burst of guesses.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Per client that has bad tokens or checks under way.
    clients: Mutex<HashMap<Client, Failures>>,
    /// Woken whenever a check ends, for the requests waiting for one.
    ended: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Consecutive bad tokens.
    count: u32,
    /// When the last one came.
    last: Instant,
    /// Turned away until then.
    refused_until: Instant,
    /// Checks under way.
    checking: u32,
}

/// Why a request's token is not looked at now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client is turned away for this long.
    For(Duration),
    /// Another of the client's checks must end first ([`Throttle::ended`]).
    Wait,
}

impl Throttle {
    /// Whether `ip`'s token may be looked at, at `now`: a [`Check`] to report its outcome
    /// on, or why not.
    ///
    /// While the client has bad tokens free, as many checks run at once as it has left (a
    /// good client's parallel requests wait only the microseconds a check takes); past
    /// them, one at a time, and letting one through turns the client away as that check's
    /// failing would, until it reports. A check that never reports (its client went
    /// away, and with it the answer) counts as neither.
    ///
    /// # Errors
    /// [`Refused`]: how long the client is turned away for, or that it must wait.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Check<'_>, Refused> {
        let client = guesser(ip);
        let mut map = self.clients();
        // A client without bad tokens is here only while its checks run (at most one per
        // connection): it takes no tracked place, which failures alone make room for.
        let f = map.entry(client).or_insert(Failures {
            count: 0,
            last: now,
            refused_until: now,
            checking: 0,
        });
        if f.refused_until > now {
            return Err(Refused::For(f.refused_until - now));
        }
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        if f.count.saturating_add(f.checking) >= FREE_FAILURES {
            if f.checking > 0 {
                // Past the free ones, the one check let through outlasted its provisional
                // refusal: the others are turned away still, not held waiting.
                if f.count >= FREE_FAILURES {
                    return Err(Refused::For(FIRST_DELAY));
                }
                return Err(Refused::Wait);
            }
            f.refused_until = now + delay_after(f.count.saturating_add(1));
        }
        f.checking += 1;
        Ok(Check {
            throttle: self,
            client,
        })
    }

    /// The clients' records. Nothing panics while they are held; were something to, they
    /// would still be counts and times, usable as they stand.
    fn clients(&self) -> MutexGuard<'_, HashMap<Client, Failures>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when one of any client's checks has ended: a request told to
    /// [`Refused::Wait`] asks again then. Made before asking, so that a check ending in
    /// between is not missed.
    pub fn ended(&self) -> Notified<'_> {
        self.ended.notified()
    }
}

/// Makes room for `client`'s first bad token when the clients with bad tokens fill the
/// map: drops those not heard of for [`FORGET_AFTER`], then the one heard of longest ago,
/// never one with a check under way (nor `client`, whose check is).
fn make_room(map: &mut HashMap<Client, Failures>, client: Client, now: Instant) {
    let tracked = |map: &HashMap<Client, Failures>| map.values().filter(|f| f.count > 0).count();
    if tracked(map) < MAX_TRACKED {
        return;
    }
    map.retain(|_, f| f.checking > 0 || now.duration_since(f.last) < FORGET_AFTER);
    if tracked(map) >= MAX_TRACKED
        && let Some(oldest) = map
            .iter()
            .filter(|(c, f)| f.checking == 0 && **c != client)
            .min_by_key(|(_, f)| f.last)
            .map(|(client, _)| *client)
    {
        map.remove(&oldest);
    }
}

/// A token being checked ([`Throttle::admit`]): says how it went, or, dropped unsaid, that
/// the check was abandoned.
#[derive(Debug)]
#[must_use = "a check says how it went"]
pub struct Check<'a> {
    throttle: &'a Throttle,
    client: Client,
}

impl Check<'_> {
    /// A bad token at `now`; returns how long the client is now turned away for (zero for
    /// the first few).
    pub fn failed(self, now: Instant) -> Duration {
        {
            let mut map = self.throttle.clients();
            if map.get(&self.client).is_some_and(|f| f.count == 0) {
                make_room(&mut map, self.client, now);
            }
        }
        self.settle(|f| {
            if now.duration_since(f.last) >= FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            let delay = delay_after(f.count);
            f.refused_until = now + delay;
            delay
        })
    }

    /// A good token: the client's count starts over.
    pub fn succeeded(self) {
        self.settle(|f| {
            f.count = 0;
            // Not turned away at any time since its last bad token.
            f.refused_until = f.last;
        });
    }

    /// Applies the outcome to the client's entry (when it is still there).
    fn settle<T: Default>(self, outcome: impl FnOnce(&mut Failures) -> T) -> T {
        let mut map = self.throttle.clients();
        map.get_mut(&self.client).map(outcome).unwrap_or_default()
        // The check ends as `self` drops, after the lock is let go.
    }
}

impl Drop for Check<'_> {
    fn drop(&mut self) {
        {
            let mut map = self.throttle.clients();
            if let Some(f) = map.get_mut(&self.client) {
                f.checking = f.checking.saturating_sub(1);
                if f.count == 0 && f.checking == 0 {
                    map.remove(&self.client);
                }
            }
        }
        self.throttle.ended.notify_waiters();
    }
}

/// Who a bad token counts against: the client ([`client_key`]), with every loopback
/// address one client. Any local user may send from any address of 127.0.0.0/8, and each
/// would otherwise be a fresh client with its free tries: a short configured token, which
/// is taken only on loopback, was found in seconds that way.
fn guesser(ip: IpAddr) -> Client {
    if is_loopback(ip) {
        client_key(IpAddr::from([127, 0, 0, 1]))
    } else {
        client_key(ip)
    }
}

/// How long a client is turned away for after its `n`th consecutive bad token.
fn delay_after(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Who the request acts as, once authenticated: recorded as the audit actor.
#[derive(Debug, Clone)]
pub(super) struct Caller(pub(super) Actor);

/// Middleware: lets the request through with its [`Caller`] when it carries a valid
/// bearer token (an admin token from the store, or the configured one), else 401.
pub(super) async fn require_token(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else {
        return ApiError::unauthorized(false).into_response();
    };
    // Turned away before the token is looked at, so a guess made meanwhile tells nothing.
    let check = loop {
        let ended = state.throttle.ended();
        match state.throttle.admit(peer.ip(), Instant::now()) {
            Ok(check) => break check,
            Err(Refused::For(wait)) => return ApiError::too_many_requests(wait).into_response(),
            Err(Refused::Wait) => ended.await,
        }
    };
    match identify(&state, presented).await {
        Ok(Some(name)) => {
            check.succeeded();
            request.extensions_mut().insert(Caller(Actor::Admin {
                token: name,
                // An IPv4 client of a dual-stack side-port as IPv4, as on an IPv4 one.
                source: Some(crate::net::canonical(peer)),
            }));
            next.run(request).await
        }
        Ok(None) => {
            let refused = check.failed(Instant::now());
            if !refused.is_zero() {
                tracing::warn!(client = %guesser(peer.ip()), refused_ms = refused.as_millis() as u64, "repeated bad admin tokens; turning this client away for a while");
            }
            ApiError::unauthorized(true).into_response()
        }
        // Neither good nor bad: the check just ends.
        Err(e) => e.into_response(),
    }
}

/// Whether `presented` is the configured token, in constant time: their MACs are compared,
/// as for the tokens in the store, which have one length whatever the tokens' (comparing
/// the tokens themselves ends at once when their lengths differ, which tells the
/// configured one's length).
fn token_matches(hasher: &Hasher, configured: &str, presented: &str) -> bool {
    let configured = hasher.mac(configured.as_bytes());
    let presented = hasher.mac(presented.as_bytes());
    bool::from(configured.as_bytes().ct_eq(presented.as_bytes()))
}

/// The name of the token `presented` is: the configured one, or one in the store.
async fn identify(state: &Arc<AdminState>, presented: String) -> Result<Option<String>, ApiError> {
    if let Some(configured) = &state.configured_token
        && token_matches(state.store.hasher(), configured.expose(), &presented)
    {
        return Ok(Some(super::CONFIGURED_TOKEN_NAME.to_owned()));
    }
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || store.authenticate_token(&presented, Timestamp::now()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Pepper;

    #[test]
    fn the_configured_token_matches_only_itself() {
        let hasher = Hasher::new(Pepper::from_bytes(vec![9; 32]).unwrap(), 1);
        let token = "k3Jv9Qx7Lm2Pz8Wd4Rt6Yb1Nc5Hs0Fga";
        assert!(token_matches(&hasher, token, token));
        for other in [
            "",
            "k3Jv9Qx7",
            &token[..31],
            &format!("{token}x"),
            &token.to_uppercase(),
        ] {
            assert!(!token_matches(&hasher, token, other), "{other}");
        }
    }

    /// A bad token from `ip` at `now`, let through: how long it is then turned away for.
    fn guess(t: &Throttle, ip: IpAddr, now: Instant) -> Duration {
        t.admit(ip, now).expect("let through").failed(now)
    }

    #[test]
    fn a_few_bad_tokens_are_free_then_the_refusal_doubles_to_a_cap() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 1]);
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..12 {
            let delay = guess(&t, ip, now);
            delays.push(delay);
            now += delay;
        }
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3], Duration::from_millis(250));
        assert_eq!(delays[4], Duration::from_millis(500));
        assert_eq!(delays[11], MAX_DELAY);
        // Another address is not affected; success starts over; time forgets.
        assert_eq!(guess(&t, IpAddr::from([192, 0, 2, 2]), now), Duration::ZERO);
        t.admit(ip, now).unwrap().succeeded();
        assert_eq!(guess(&t, ip, now), Duration::ZERO);
        for _ in 0..5 {
            now += guess(&t, ip, now);
        }
        assert_eq!(guess(&t, ip, now + FORGET_AFTER), Duration::ZERO);
    }

    #[test]
    fn an_address_is_turned_away_until_its_time_is_up() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 7]);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                guess(&t, ip, now),
                Duration::ZERO,
                "the first bad tokens are free"
            );
        }
        guess(&t, ip, now);
        let ms = Duration::from_millis;
        assert_eq!(t.admit(ip, now).unwrap_err(), Refused::For(ms(250)));
        assert_eq!(
            t.admit(ip, now + ms(100)).unwrap_err(),
            Refused::For(ms(150))
        );
        // The next bad token (once let through again) doubles it.
        guess(&t, ip, now + ms(250));
        assert_eq!(
            t.admit(ip, now + ms(250)).unwrap_err(),
            Refused::For(ms(500))
        );
        assert!(t.admit(IpAddr::from([192, 0, 2, 8]), now).is_ok());
    }

    /// Checks under way count as failures to be: a burst sent at once, before any check
    /// has ended, is checked only as far as the client has bad tokens free; the rest wait.
    #[test]
    fn a_burst_is_checked_only_as_far_as_bad_tokens_are_free() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 9]);
        let now = Instant::now();
        let mut checks: Vec<Check<'_>> = (0..FREE_FAILURES)
            .map(|_| t.admit(ip, now).expect("a free one"))
            .collect();
        for _ in 0..5 {
            assert_eq!(t.admit(ip, now).unwrap_err(), Refused::Wait);
        }
        // Another client is not held up.
        assert!(t.admit(IpAddr::from([192, 0, 2, 10]), now).is_ok());
        // One fails: its place is not free again (a failure is spent).
        checks.pop().unwrap().failed(now);
        assert_eq!(t.admit(ip, now).unwrap_err(), Refused::Wait);
        // One succeeds: the count starts over, and the free ones are free again, less
        // the one still under way.
        checks.pop().unwrap().succeeded();
        let more: Vec<Check<'_>> = (1..FREE_FAILURES)
            .map(|_| t.admit(ip, now).expect("free again"))
            .collect();
        assert_eq!(t.admit(ip, now).unwrap_err(), Refused::Wait);
        // A check abandoned (its client went away) counts as neither.
        drop(checks);
        let last = t.admit(ip, now).expect("the abandoned one's place");
        // They all fail: the free ones are spent, and the next goes alone.
        for check in more.into_iter().chain([last]) {
            check.failed(now);
        }
        let _alone = t.admit(ip, now).expect("one at a time");
        assert!(matches!(t.admit(ip, now), Err(Refused::For(_))));
    }

    /// Past the free ones, one check at a time: requests sent at once (on as many
    /// connections) when the refusal ends do not each get their token looked at.
    #[test]
    fn past_the_free_bad_tokens_one_check_at_a_time() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 9]);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            guess(&t, ip, now);
        }
        // The next is let through; while it is being checked, the others are turned away,
        // after its provisional refusal too (not held waiting).
        let check = t.admit(ip, now).expect("one more");
        assert!(matches!(t.admit(ip, now), Err(Refused::For(_))));
        let slow = now + Duration::from_millis(300);
        assert_eq!(t.admit(ip, slow).unwrap_err(), Refused::For(FIRST_DELAY));
        assert!(t.admit(IpAddr::from([192, 0, 2, 10]), now).is_ok());
        // It fails: turned away for 250 ms from then, then one more check is let through.
        check.failed(now);
        let later = now + Duration::from_millis(250);
        let check = t.admit(ip, later).expect("once the time is up");
        assert!(t.admit(ip, later).is_err());
        // A good token ends it.
        check.succeeded();
        let both = [t.admit(ip, later), t.admit(ip, later)];
        assert!(both.iter().all(Result::is_ok));
        drop(both);
        // A check abandoned past the free ones (its client went away) turns the client
        // away no longer than a failure would have.
        for _ in 0..FREE_FAILURES {
            guess(&t, ip, later);
        }
        drop(t.admit(ip, later).expect("the fourth"));
        assert!(matches!(t.admit(ip, later), Err(Refused::For(_))));
        let after = later + Duration::from_millis(250);
        assert!(t.admit(ip, after).is_ok());
    }

    /// Good clients take no tracked place: with the map full of clients with bad tokens,
    /// their checks evict none of them; a new client's first bad token does (the oldest).
    #[test]
    fn good_clients_do_not_push_bad_ones_out() {
        let t = Throttle::default();
        let now = Instant::now();
        let bad = |n: usize| IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        // Each later than the one before: bad(0) is the oldest.
        let at = |n: usize| now + Duration::from_micros(n as u64);
        for n in 0..MAX_TRACKED {
            for _ in 0..=FREE_FAILURES {
                guess(&t, bad(n), at(n));
            }
        }
        for last in 1..=100 {
            let good = IpAddr::from([192, 0, 2, last]);
            t.admit(good, now).unwrap().succeeded();
        }
        assert!(t.admit(bad(0), now).is_err(), "the oldest was pushed out");
        guess(
            &t,
            IpAddr::from([198, 51, 100, 1]),
            now + Duration::from_secs(1),
        );
        assert!(t.admit(bad(0), now).is_ok(), "a bad token makes room");
        assert!(t.clients.lock().unwrap().len() <= MAX_TRACKED + 1);
    }

    /// What is left of a client once its checks end: nothing, unless it has bad tokens.
    #[test]
    fn good_clients_leave_no_entry() {
        let t = Throttle::default();
        let now = Instant::now();
        for last in 1..=50 {
            let ip = IpAddr::from([192, 0, 2, last]);
            t.admit(ip, now).unwrap().succeeded();
            drop(t.admit(ip, now).unwrap());
        }
        guess(&t, IpAddr::from([198, 51, 100, 1]), now);
        assert_eq!(t.clients.lock().unwrap().len(), 1);
    }

    /// A local user may send from any loopback address: each guess from another one is
    /// still the same guesser's.
    #[test]
    fn every_loopback_address_is_one_client() {
        let t = Throttle::default();
        let now = Instant::now();
        for last in 1..=4 {
            guess(&t, IpAddr::from([127, 0, 0, last]), now);
        }
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(127, 9, 9, 9).to_ipv6_mapped());
        for ip in [
            IpAddr::from([127, 200, 1, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            mapped,
        ] {
            assert!(t.admit(ip, now).is_err(), "{ip}");
        }
        assert!(t.admit(IpAddr::from([192, 0, 2, 1]), now).is_ok());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_client_and_mapped_ipv4_as_its_address() {
        let t = Throttle::default();
        let now = Instant::now();
        let in_64 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        // Four bad tokens, each from another address of one /64.
        for last in 1..=4 {
            guess(&t, in_64(last), now);
        }
        assert!(t.admit(in_64(99), now).is_err());
        let next_64 = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(t.admit(next_64, now).is_ok());
        // 192.0.2.7 over a dual-stack socket is 192.0.2.7.
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        for _ in 0..4 {
            guess(&t, mapped, now);
        }
        assert!(t.admit(v4, now).is_err());
        let later = now + Duration::from_millis(250);
        t.admit(v4, later).unwrap().succeeded();
        assert!(t.admit(mapped, later).is_ok());
    }
}
