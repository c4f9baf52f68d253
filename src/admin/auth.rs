//! Bearer-token authentication and the slow-down for addresses that keep guessing.

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
use crate::store::Actor;
use crate::time::Timestamp;

/// Bad tokens an address may present before its answers are delayed.
const FREE_FAILURES: u32 = 3;
/// The first delay; it doubles with each further bad token.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// An address's failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most (the oldest are dropped first).
const MAX_TRACKED: usize = 10_000;

/// Counts bad tokens per client address and says how long to delay the next answer.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Records a bad token from `ip` at `now`; returns how long to wait before answering.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return MAX_DELAY;
        };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, t))| *t).map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay_after(entry.0)
    }

    /// A good token from `ip`: its count starts over.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&ip);
        }
    }
}

/// The delay after the `n`th consecutive bad token.
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
    match identify(&state, presented).await {
        Ok(Some(name)) => {
            state.throttle.succeeded(peer.ip());
            request.extensions_mut().insert(Caller(Actor::Admin {
                token: name,
                source: Some(peer),
            }));
            next.run(request).await
        }
        Ok(None) => {
            let delay = state.throttle.failed(peer.ip(), Instant::now());
            if !delay.is_zero() {
                tracing::warn!(client = %peer.ip(), delay_ms = delay.as_millis() as u64, "repeated bad admin tokens; slowing this client down");
                tokio::time::sleep(delay).await;
            }
            ApiError::unauthorized(true).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The name of the token `presented` is: the configured one, or one in the store.
async fn identify(state: &Arc<AdminState>, presented: String) -> Result<Option<String>, ApiError> {
    if let Some(configured) = &state.configured_token {
        if bool::from(configured.as_bytes().ct_eq(presented.as_bytes())) {
            return Ok(Some(super::CONFIGURED_TOKEN_NAME.to_owned()));
        }
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

    #[test]
    fn a_few_bad_tokens_are_free_then_the_delay_doubles_to_a_cap() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let now = Instant::now();
        let delays: Vec<Duration> = (0..12).map(|_| t.failed(ip, now)).collect();
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3], Duration::from_millis(250));
        assert_eq!(delays[4], Duration::from_millis(500));
        assert_eq!(delays[11], MAX_DELAY);
        // Another address is not affected; success starts over; time forgets.
        assert_eq!(t.failed(IpAddr::from([127, 0, 0, 2]), now), Duration::ZERO);
        t.succeeded(ip);
        assert_eq!(t.failed(ip, now), Duration::ZERO);
        for _ in 0..5 {
            t.failed(ip, now);
        }
        assert_eq!(t.failed(ip, now + FORGET_AFTER), Duration::ZERO);
    }
}
