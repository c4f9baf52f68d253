//! Bearer-token authentication, and turning away clients that keep guessing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

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
/// turned away (429 with `Retry-After`) for a time that doubles with each further one,
/// and while one of its tokens is being checked ([`Throttle::admit`]); a request turned
/// away does not have its token looked at. A guesser gets one guess per period however
/// many connections it opens, and holds no connection while it waits.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Per client: consecutive bad tokens, the last one's time, and until when it is
    /// turned away.
    failures: Mutex<HashMap<Client, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    refused_until: Instant,
}

impl Throttle {
    /// Whether `ip`'s token may be looked at, at `now`: `Err` with how long the client is
    /// still turned away for, if it is.
    ///
    /// Past the free bad tokens, a client is let through one check at a time: letting one
    /// through turns it away as that check's failing would, until [`Self::failed`] or
    /// [`Self::succeeded`] says how it went. Requests sent at once on many connections
    /// when a refusal ends get one guess, not one each (the check awaits the store, so
    /// looking and recording are not one step); a check that never reports (its client
    /// went away) turns the client away no longer than a failure would have.
    ///
    /// # Errors
    /// How long the client is turned away for.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let Some(f) = map.get_mut(&guesser(ip)) else {
            return Ok(());
        };
        if f.refused_until > now {
            return Err(f.refused_until - now);
        }
        if f.count >= FREE_FAILURES && now.duration_since(f.last) < FORGET_AFTER {
            f.refused_until = now + delay_after(f.count.saturating_add(1));
        }
        Ok(())
    }

    /// Records a bad token from `ip` at `now`; returns how long the client is now turned
    /// away for (zero for the first few).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return MAX_DELAY;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(client, _)| *client)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(guesser(ip)).or_insert(Failures {
            count: 0,
            last: now,
            refused_until: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let delay = delay_after(entry.count);
        entry.refused_until = now + delay;
        delay
    }

    /// A good token from `ip`: its count starts over.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&guesser(ip));
        }
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
    if let Err(wait) = state.throttle.admit(peer.ip(), Instant::now()) {
        return ApiError::too_many_requests(wait).into_response();
    }
    match identify(&state, presented).await {
        Ok(Some(name)) => {
            state.throttle.succeeded(peer.ip());
            request.extensions_mut().insert(Caller(Actor::Admin {
                token: name,
                // An IPv4 client of a dual-stack side-port as IPv4, as on an IPv4 one.
                source: Some(crate::net::canonical(peer)),
            }));
            next.run(request).await
        }
        Ok(None) => {
            let refused = state.throttle.failed(peer.ip(), Instant::now());
            if !refused.is_zero() {
                tracing::warn!(client = %guesser(peer.ip()), refused_ms = refused.as_millis() as u64, "repeated bad admin tokens; turning this client away for a while");
            }
            ApiError::unauthorized(true).into_response()
        }
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

    #[test]
    fn a_few_bad_tokens_are_free_then_the_refusal_doubles_to_a_cap() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 1]);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..12).map(|_| t.failed(ip, now)).collect();
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3], Duration::from_millis(250));
        assert_eq!(delays[4], Duration::from_millis(500));
        assert_eq!(delays[11], MAX_DELAY);
        // Another address is not affected; success starts over; time forgets.
        assert_eq!(t.failed(IpAddr::from([192, 0, 2, 2]), now), Duration::ZERO);
        t.succeeded(ip);
        assert_eq!(t.failed(ip, now), Duration::ZERO);
        for _ in 0..5 {
            t.failed(ip, now);
        }
        assert_eq!(t.failed(ip, now + FORGET_AFTER), Duration::ZERO);
    }

    #[test]
    fn an_address_is_turned_away_until_its_time_is_up() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 7]);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.admit(ip, now), Ok(()), "the first bad tokens are free");
            t.failed(ip, now);
        }
        assert_eq!(t.admit(ip, now), Ok(()));
        t.failed(ip, now);
        let ms = Duration::from_millis;
        assert_eq!(t.admit(ip, now), Err(ms(250)));
        assert_eq!(t.admit(ip, now + ms(100)), Err(ms(150)));
        assert_eq!(t.admit(ip, now + ms(250)), Ok(()));
        // The next bad token (once let through again) doubles it.
        t.failed(ip, now + ms(250));
        assert_eq!(t.admit(ip, now + ms(250)), Err(ms(500)));
        assert_eq!(t.admit(IpAddr::from([192, 0, 2, 8]), now), Ok(()));
    }

    /// Past the free ones, one check at a time: requests sent at once (on as many
    /// connections) when the refusal ends do not each get their token looked at.
    #[test]
    fn past_the_free_bad_tokens_one_check_at_a_time() {
        let t = Throttle::default();
        let ip = IpAddr::from([192, 0, 2, 9]);
        let now = Instant::now();
        // The free ones may be checked at once (a good client's parallel requests).
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.admit(ip, now), Ok(()));
            assert_eq!(t.admit(ip, now), Ok(()));
            t.failed(ip, now);
        }
        // The next is let through; while it is being checked, the others are turned away.
        assert_eq!(t.admit(ip, now), Ok(()));
        assert!(t.admit(ip, now).is_err(), "a second check while one runs");
        assert!(t.admit(IpAddr::from([192, 0, 2, 10]), now).is_ok());
        // It fails: turned away for 250 ms from then, then one more check is let through.
        t.failed(ip, now);
        let later = now + Duration::from_millis(250);
        assert_eq!(t.admit(ip, later), Ok(()));
        assert!(t.admit(ip, later).is_err());
        // A good token ends it.
        t.succeeded(ip);
        assert_eq!(t.admit(ip, later), Ok(()));
        assert_eq!(t.admit(ip, later), Ok(()));
        // A check that never ends (the client went away) turns it away no longer than a
        // failure would have.
        for _ in 0..=FREE_FAILURES {
            t.failed(ip, later);
        }
        let after = later + Duration::from_millis(250);
        assert_eq!(t.admit(ip, after), Ok(()));
        assert!(t.admit(ip, after).is_err());
        assert_eq!(t.admit(ip, after + Duration::from_millis(500)), Ok(()));
    }

    /// A local user may send from any loopback address: each guess from another one is
    /// still the same guesser's.
    #[test]
    fn every_loopback_address_is_one_client() {
        let t = Throttle::default();
        let now = Instant::now();
        for last in 1..=4 {
            t.failed(IpAddr::from([127, 0, 0, last]), now);
        }
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(127, 9, 9, 9).to_ipv6_mapped());
        for ip in [
            IpAddr::from([127, 200, 1, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            mapped,
        ] {
            assert!(t.admit(ip, now).is_err(), "{ip}");
        }
        assert_eq!(t.admit(IpAddr::from([192, 0, 2, 1]), now), Ok(()));
    }

    #[test]
    fn an_ipv6_64_counts_as_one_client_and_mapped_ipv4_as_its_address() {
        let t = Throttle::default();
        let now = Instant::now();
        let in_64 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        // Four bad tokens, each from another address of one /64.
        for last in 1..=4 {
            t.failed(in_64(last), now);
        }
        assert!(t.admit(in_64(99), now).is_err());
        let next_64 = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert_eq!(t.admit(next_64, now), Ok(()));
        // 192.0.2.7 over a dual-stack socket is 192.0.2.7.
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        for _ in 0..4 {
            t.failed(mapped, now);
        }
        assert!(t.admit(v4, now).is_err());
        t.succeeded(v4);
        assert_eq!(t.admit(mapped, now), Ok(()));
    }
}
