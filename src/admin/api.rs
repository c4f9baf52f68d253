//! The routes and their handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, require_token};
use super::error::{ApiError, body_rejection};
use super::{AdminState, CSV_BODY_TIME, JSON_BODY_TIME, MAX_CSV_BODY, MAX_JSON_BODY};
use crate::store::{
    AuditQuery, Event, Extension, ImportMode, ImportOutcome, Issued, MAX_EXTENSION_LEN, NewUser,
    Passcode, PasscodeSpec, Selection, Store, StoreError, Ttl, UserFilter,
};
use crate::time::Timestamp;

/// The OpenAPI 3.1 description of this API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Audit rows per request at most.
const MAX_AUDIT_LIMIT: u32 = 1_000;

type Shared = Arc<AdminState>;

pub(super) fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics)),
        ("/api/v1/openapi.json", get(openapi)),
        ("/api/v1/users", get(list_users).post(create_user)),
        ("/api/v1/users/reset", post(reset_many)),
        (
            "/api/v1/users/import",
            post(import).layer(axum::extract::DefaultBodyLimit::max(MAX_CSV_BODY)),
        ),
        ("/api/v1/users/{ext}", get(show_user).delete(delete_user)),
        ("/api/v1/users/{ext}/passcode", post(reset_passcode)),
        ("/api/v1/users/{ext}/unlock", post(unlock)),
        ("/api/v1/policy", get(show_policy)),
        ("/api/v1/policy/check", post(check_policy)),
        ("/api/v1/audit", get(audit)),
        ("/api/v1/report", get(report)),
        ("/api/v1/calls", get(calls)),
    ]
}

/// Routes that need no token: `/healthz` always, `/metrics` unless configured otherwise.
fn is_public(path: &str, state: &AdminState) -> bool {
    path == "/healthz" || (path == "/metrics" && !state.metrics_auth)
}

/// The `/api/v1` routes that read a query string; the others refuse one (a script's
/// option that does not exist must not be ignored on its way to a delete or a reset).
fn takes_query(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/users" | "/api/v1/users/import" | "/api/v1/audit"
    )
}

pub(super) fn router(state: Shared) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    for (path, handlers) in routes() {
        let handlers = if path.starts_with("/api/v1/") && !takes_query(path) {
            handlers.route_layer(axum::middleware::from_fn(no_query))
        } else {
            handlers
        };
        if is_public(path, &state) {
            public = public.route(path, handlers);
        } else {
            protected = protected.route(path, handlers);
        }
    }
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state),
        require_token,
    ));
    public
        .merge(protected)
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

/// `/api/v1` answers hand out passcodes and show mailboxes and audit rows: no cache (a
/// proxy's, a client's) may keep them. Every answer says so, the few without anything to
/// keep (`/healthz`, `/metrics`, a 404) too: one rule, no route forgotten.
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// 400 `invalid_query` for a request with a query string, on a route that reads none.
async fn no_query(req: Request, next: axum::middleware::Next) -> Response {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return ApiError::bad_request("invalid_query", "this route takes no query parameters")
            .into_response();
    }
    next.run(req).await
}

async fn no_such_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_such_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

// ---------------------------------------------------------------------------------------
// Extractors: axum's, with errors in the API's shape.

/// A JSON body (unknown fields refused by the types). Its `Content-Type` must be
/// `application/json` (or a `+json` type), or missing: a script that leaves the header out
/// still sends JSON. Any other type is 415, `curl -d`'s form type included.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(not_json());
        }
        let bytes = json_bytes(req, state).await?;
        Ok(Self(from_json_object(&bytes)?))
    }
}

/// `bytes` read as `T`, which must be a JSON object: serde would take an array for one,
/// its values by the fields' order in the server's own types, which is no contract.
fn from_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::invalid(
            "the body must be a JSON object: {\"name\": value, …}",
        ));
    }
    let Json(value) = Json::<T>::from_bytes(bytes)?;
    Ok(value)
}

/// A JSON body that may be left out: an empty body (or only whitespace) reads as `{}`,
/// whatever its `Content-Type` says (`curl -X POST -H 'Content-Type: application/json'`
/// sends none); a body with something in it is read as [`Body`] reads one.
struct OptionalBody<T>(T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = json_content_type(req.headers());
        let bytes = json_bytes(req, state).await?;
        if bytes
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(not_json());
        }
        Ok(Self(from_json_object(&bytes)?))
    }
}

/// Whether a request's body may be read as JSON: `Content-Type` `application/json` or
/// `application/*+json` (parameters such as `charset` aside, in any case), or none.
fn json_content_type(headers: &HeaderMap) -> bool {
    media_type(headers).is_none_or(|essence| {
        essence.split_once('/').is_some_and(|(kind, subtype)| {
            kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
        })
    })
}

/// The request's media type (`type/subtype`, lower case, parameters removed): `None` without
/// a Content-Type, and an empty one when its value is not text.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or_default();
    Some(
        text.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON, with Content-Type: application/json (or none)",
    )
}

/// A JSON request's body, within the JSON body limit.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = (MAX_JSON_BODY, "a JSON body is at most 64 KiB");
    body_bytes(req, state, JSON_BODY_TIME, limit).await
}

/// A request's whole body, read within `within` (else 408: a client that sends a head
/// with a good token and then a body it never finishes would keep its connection for
/// ever); `limit` is how large it may be, in bytes and in words for a 413. A body that
/// its `Content-Length` says is larger gets the 413 at once, unread (and a client that
/// asked `Expect: 100-continue` no invitation to send it).
async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
    within: Duration,
    (max, limit): (usize, &str),
) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > max as u64) {
        return Err(body_rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            String::new(),
            limit,
        ));
    }
    // RFC 9110 §8.4: a body in a coding vportal does not decode (gzip, br) is refused, not
    // read as if it were plain, which for an import would write mailboxes from it.
    let coded = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .any(|coding| !coding.trim().eq_ignore_ascii_case("identity"));
    if coded {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as it is: no Content-Encoding but identity",
        ));
    }
    match tokio::time::timeout(within, Bytes::from_request(req, state)).await {
        Ok(read) => read.map_err(|e| body_rejection(e.status(), e.body_text(), limit)),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive whole within {} s",
                within.as_secs()
            ),
        )),
    }
}

/// A query string.
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The `{ext}` of the path, checked: digits only.
struct Ext(Extension);

impl<S: Send + Sync> FromRequestParts<S> for Ext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => text,
            Err(PathRejection::FailedToDeserializePathParams(_)) | Err(_) => {
                return Err(invalid_extension());
            }
        };
        Extension::parse(&text)
            .map(Self)
            .map_err(|_| invalid_extension())
    }
}

fn invalid_extension() -> ApiError {
    ApiError::bad_request(
        "invalid_extension",
        format!("an extension is 1 to {MAX_EXTENSION_LEN} digits (0-9), nothing else"),
    )
}

/// An extension in a JSON body: a string of digits, or a non-negative JSON integer, read
/// as its decimal digits (`8001` is `"8001"`; an extension with a leading zero must be a
/// string). What the digits may be is [`extension_field`]'s to say.
struct ExtensionText(String);

impl<'de> Deserialize<'de> for ExtensionText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Digits;
        impl serde::de::Visitor<'_> for Digits {
            type Value = ExtensionText;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an extension: a string of digits, or a non-negative integer")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExtensionText, E> {
                Ok(ExtensionText(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ExtensionText, E> {
                Ok(ExtensionText(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ExtensionText, E> {
                Ok(ExtensionText(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ExtensionText, E> {
                u64::try_from(v)
                    .map(|v| ExtensionText(v.to_string()))
                    .map_err(|_| {
                        E::custom(
                            "a negative number is not an extension: give its digits as a string \
                         or a non-negative integer",
                        )
                    })
            }
        }
        d.deserialize_any(Digits)
    }
}

/// A passcode in a JSON body: a string only. As a JSON number it would lose any leading
/// zero (`0482` is 482), so a number is refused, saying so, and never echoed.
struct PasscodeText(String);

impl<'de> Deserialize<'de> for PasscodeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Text {
            fn number<E: serde::de::Error>() -> E {
                E::custom(
                    "give the passcode as a JSON string, in quotes: as a number it would lose \
                     any leading zero",
                )
            }
        }
        impl serde::de::Visitor<'_> for Text {
            type Value = PasscodeText;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the passcode as a JSON string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PasscodeText, E> {
                Ok(PasscodeText(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PasscodeText, E> {
                Ok(PasscodeText(v))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<PasscodeText, E> {
                Err(Self::number())
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<PasscodeText, E> {
                Err(Self::number())
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<PasscodeText, E> {
                Err(Self::number())
            }
        }
        d.deserialize_any(Text)
    }
}

fn extension_field(text: &str) -> Result<Extension, ApiError> {
    Extension::parse(text).map_err(|_| {
        ApiError::invalid(format!(
            "extension: 1 to {MAX_EXTENSION_LEN} digits (0-9), nothing else"
        ))
    })
}

fn passcode_field(PasscodeText(text): PasscodeText) -> Result<Passcode, ApiError> {
    // The text is moved into the secret type (wiped on drop) and never echoed.
    Passcode::new(text).map_err(|_| ApiError::invalid("passcode: too long"))
}

/// `temporary: false` asks for a permanent passcode, which vportal never generates: a
/// generated one is handed to the owner to replace at the first login.
fn generated_is_temporary(
    passcode: Option<&PasscodeText>,
    temporary: Option<bool>,
) -> Result<(), ApiError> {
    if passcode.is_none() && temporary == Some(false) {
        return Err(ApiError::invalid(
            "temporary: a generated passcode is always temporary; give a passcode to set a \
             permanent one",
        ));
    }
    Ok(())
}

fn ttl_field(seconds: Option<u64>, temporary: bool) -> Result<Option<Ttl>, ApiError> {
    match seconds {
        None => Ok(None),
        Some(_) if !temporary => Err(ApiError::invalid(
            "ttl_seconds: only a temporary passcode expires",
        )),
        Some(s) => Ttl::from_secs(s)
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("ttl_seconds: {e}"))),
    }
}

/// How much argon2 work a request's store work does, which says what it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hashing {
    /// None: it runs at once.
    No,
    /// One passcode: it queues with the calls' logins for one of their slots.
    One,
    /// A passcode per mailbox (a bulk reset, an import), for minutes maybe: it waits for
    /// the other bulk jobs, one at a time, and takes none of the calls' slots, so that bulk
    /// jobs running at once cannot hold every slot and leave logins waiting until they end
    /// (its hashes take the hashing cores' permits in turn with the logins', hash by hash).
    Bulk,
}

/// Runs store work on the blocking pool; when it hashes, after taking the permit its
/// [`Hashing`] says, which the work holds until it ends: a client that goes away meanwhile
/// does not stop the work, so it must not give the permit back either.
async fn blocking<T: Send + 'static>(
    state: &AdminState,
    hashing: Hashing,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let (result, watch) = blocking_to_deliver(state, hashing, work).await;
    watch.delivered();
    result
}

/// [`blocking`], its result not yet delivered: a request that must still turn it into its
/// answer (on the blocking pool too, see [`json_answer`]) says when it has, so that one
/// dropped meanwhile is logged as one whose passcodes were never delivered.
async fn blocking_to_deliver<T: Send + 'static>(
    state: &AdminState,
    hashing: Hashing,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> (Result<T, ApiError>, DeliveryWatch) {
    // The semaphores are never closed; without a permit the work runs anyway.
    let permit = match hashing {
        Hashing::No => None,
        Hashing::One => Arc::clone(&state.hash_permits).acquire_owned().await.ok(),
        Hashing::Bulk => Arc::clone(&state.bulk_permits).acquire_owned().await.ok(),
    };
    let hashes = hashing != Hashing::No;
    let store = Arc::clone(&state.store);
    let delivery = Delivery::default();
    let watch = delivery.watch();
    let result = tokio::task::spawn_blocking(move || {
        let result = work(&store);
        drop(permit);
        // Work that hashes sets passcodes; those generated are in its answer only.
        if hashes && result.is_ok() {
            delivery.finished();
        }
        result
    })
    .await;
    let result = result
        .map_err(|e| {
            tracing::error!(error = %e, "store work in the admin API failed");
            ApiError::internal()
        })
        .and_then(|r| r.map_err(ApiError::from));
    (result, watch)
}

/// Whether the answer of store work that set passcodes reached its request, which may be
/// dropped (its client gone, or the server stopping and closing connections) while the work
/// runs on: the work is not stopped, and its change is made, so whichever of the two ends
/// second says so in the log, for an operator to issue those passcodes again.
#[derive(Debug, Default, Clone)]
struct Delivery(Arc<AtomicU8>);

/// [`Delivery`]'s states after the first (0, running).
const FINISHED: u8 = 1;
const DROPPED: u8 = 2;

impl Delivery {
    fn watch(&self) -> DeliveryWatch {
        DeliveryWatch(Some(self.clone()))
    }

    /// The work committed.
    fn finished(&self) {
        if self.0.swap(FINISHED, Ordering::AcqRel) == DROPPED {
            undelivered();
        }
    }
}

/// Held by the request while its work runs; dropped with the request.
struct DeliveryWatch(Option<Delivery>);

impl DeliveryWatch {
    /// The request has the work's answer.
    fn delivered(mut self) {
        self.0 = None;
    }
}

impl Drop for DeliveryWatch {
    fn drop(&mut self) {
        if let Some(delivery) = self.0.take()
            && delivery.0.swap(DROPPED, Ordering::AcqRel) == FINISHED
        {
            undelivered();
        }
    }
}

fn undelivered() {
    tracing::warn!(
        "an admin request that set passcodes was dropped (its client went away, or the server \
         is stopping) but its change is made: any passcode it generated was never delivered; \
         see the audit trail and issue those again"
    );
}

// ---------------------------------------------------------------------------------------
// Health, metrics, the API description.

/// Liveness: `ok`, unless the database file was replaced or removed under the server.
/// Every login and request then fails until a restart opens the file there now, so a
/// supervisor probing this is to restart it.
async fn healthz(State(state): State<Shared>) -> Response {
    // Off the runtime: a check is a stat, but the first after the file was removed saves
    // what the store held (a copy of the whole database), which must not hold up SIP.
    let store = Arc::clone(&state.store);
    let checked = match tokio::task::spawn_blocking(move || store.check_file()).await {
        Ok(checked) => checked,
        Err(_) => return ApiError::internal().into_response(),
    };
    match checked {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        // Not through ApiError's From: a probe every few seconds is not a store error to
        // log and count each time (the store logged the replacement once).
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    match &state.metrics {
        Some(handle) => {
            let media = crate::server::media_counts();
            ::metrics::counter!("vportal_rtp_packets_sent_total").absolute(media.rtp_sent);
            ::metrics::counter!("vportal_rtcp_packets_total", "direction" => "out")
                .absolute(media.rtcp_sent);
            ::metrics::counter!("vportal_rtcp_packets_total", "direction" => "in")
                .absolute(media.rtcp_received);
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not recorded in this process",
        )
        .into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

// ---------------------------------------------------------------------------------------
// Users.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFilterParams {
    #[serde(default, deserialize_with = "flag::param")]
    temporary: Option<bool>,
    #[serde(default, deserialize_with = "flag::param")]
    locked: Option<bool>,
    #[serde(default, deserialize_with = "flag::param")]
    expired: Option<bool>,
}

/// Yes/no query parameters as clients write them: `true`, `1`, `yes`, `on`, or no value at
/// all (`?temporary`, `?temporary=`) for yes; `false`, `0`, `no`, `off` for no; in any case
/// (Python's `requests` sends `True`). Anything else is refused, naming the parameter.
mod flag {
    use serde::{Deserialize, Deserializer, de::Error};

    /// What `text` says, if it is one of the accepted forms (no value at all: yes).
    pub(super) fn parse(text: &str) -> Option<bool> {
        if text.is_empty() {
            return Some(true);
        }
        crate::config::parse_yes_no(text)
    }

    /// A yes/no parameter; the error's message is prefixed with the parameter's name (by
    /// the query extractor, which tracks the path).
    pub(super) fn param<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Some).ok_or_else(|| {
            D::Error::custom(
                "not a yes or no (true, false, 1, 0, yes, no, on, off, or no value for yes)",
            )
        })
    }
}

async fn list_users(
    State(state): State<Shared>,
    Params(p): Params<UserFilterParams>,
) -> Result<Response, ApiError> {
    let filter = UserFilter {
        temporary: p.temporary,
        locked: p.locked,
        expired: p.expired,
    };
    let users = blocking(&state, Hashing::No, move |s| {
        s.users(filter, Timestamp::now())
    })
    .await?;
    json_answer(Keyed("users", users)).await
}

/// `value` as a JSON answer, serialized on the blocking pool straight from its structs: a
/// list of 100,000 mailboxes (30 MB) must not hold one of the runtime's workers, which also
/// run SIP and the calls, for half a second, nor first build a tree of values several
/// times its size.
async fn json_answer<T: Serialize + Send + 'static>(value: T) -> Result<Response, ApiError> {
    fn failed(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "serializing an admin API answer failed");
        ApiError::internal()
    }
    let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&value))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// `{"<key>": value}`, an answer's one member.
struct Keyed<T>(&'static str, T);

impl<T: Serialize> Serialize for Keyed<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    extension: ExtensionText,
    name: Option<String>,
    email: Option<String>,
    passcode: Option<PasscodeText>,
    temporary: Option<bool>,
    ttl_seconds: Option<u64>,
}

/// A passcode as handed out: `passcode` only when vportal generated it.
#[derive(Serialize)]
struct IssuedView {
    extension: Extension,
    #[serde(skip_serializing_if = "Option::is_none")]
    passcode: Option<String>,
    temporary: bool,
    temporary_expires_at: Option<Timestamp>,
}

impl From<Issued> for IssuedView {
    fn from(i: Issued) -> Self {
        Self {
            passcode: i.generated.as_ref().map(|p| p.expose().to_owned()),
            extension: i.extension,
            temporary: i.temporary,
            temporary_expires_at: i.expires_at,
        }
    }
}

async fn create_user(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Body(body): Body<CreateUser>,
) -> Result<Response, ApiError> {
    let extension = extension_field(&body.extension.0)?;
    generated_is_temporary(body.passcode.as_ref(), body.temporary)?;
    let spec = PasscodeSpec {
        passcode: body.passcode.map(passcode_field).transpose()?,
        temporary: body.temporary.unwrap_or(true),
        ttl: ttl_field(body.ttl_seconds, body.temporary.unwrap_or(true))?,
    };
    let mut user = NewUser::new(extension.clone()).with_passcode(spec);
    user.name = body.name;
    user.email = body.email;
    let (issued, info) = blocking(&state, Hashing::One, move |s| {
        let now = Timestamp::now();
        let issued = s.create_user(user, &actor, now)?;
        let info = s
            .user(&extension, now)?
            .ok_or(StoreError::NotFound(extension))?;
        Ok((issued, info))
    })
    .await?;
    // RFC 9110 §15.3.2: where the new mailbox is (without it, the request's own URI).
    let location = format!("/api/v1/users/{}", info.extension);
    let mut body = json!({ "user": info });
    if let Some(passcode) = IssuedView::from(issued).passcode {
        body["passcode"] = json!(passcode);
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn show_user(State(state): State<Shared>, Ext(ext): Ext) -> Result<Response, ApiError> {
    let wanted = ext.clone();
    match blocking(&state, Hashing::No, move |s| {
        s.user(&wanted, Timestamp::now())
    })
    .await?
    {
        Some(user) => Ok(Json(user).into_response()),
        None => Err(StoreError::NotFound(ext).into()),
    }
}

async fn delete_user(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Ext(ext): Ext,
) -> Result<StatusCode, ApiError> {
    blocking(&state, Hashing::No, move |s| {
        s.delete_user(&ext, &actor, Timestamp::now())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPasscode {
    passcode: Option<PasscodeText>,
    temporary: Option<bool>,
    ttl_seconds: Option<u64>,
}

async fn reset_passcode(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Ext(ext): Ext,
    OptionalBody(body): OptionalBody<SetPasscode>,
) -> Result<Json<IssuedView>, ApiError> {
    generated_is_temporary(body.passcode.as_ref(), body.temporary)?;
    let spec = PasscodeSpec {
        passcode: body.passcode.map(passcode_field).transpose()?,
        temporary: body.temporary.unwrap_or(true),
        ttl: ttl_field(body.ttl_seconds, body.temporary.unwrap_or(true))?,
    };
    let issued = blocking(&state, Hashing::One, move |s| {
        s.reset_passcode(&ext, &spec, &actor, Timestamp::now())
    })
    .await?;
    Ok(Json(issued.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkReset {
    extensions: Option<Vec<ExtensionText>>,
    all: Option<bool>,
    confirm: Option<String>,
    temporary: Option<bool>,
    ttl_seconds: Option<u64>,
}

/// What `confirm` must say for `all: true` (issue 7: resetting every mailbox needs an
/// explicit confirmation field).
const CONFIRM_ALL: &str = "reset every mailbox";

async fn reset_many(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Body(body): Body<BulkReset>,
) -> Result<Response, ApiError> {
    let selection = match (body.extensions, body.all.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "extensions and all: give one or the other",
            ));
        }
        (Some(list), false) if list.is_empty() => {
            return Err(ApiError::invalid("extensions: empty"));
        }
        (Some(list), false) => Selection::Extensions(
            list.iter()
                .map(|e| extension_field(&e.0))
                .collect::<Result<_, _>>()?,
        ),
        (None, true) if body.confirm.as_deref() == Some(CONFIRM_ALL) => Selection::All,
        (None, true) => {
            return Err(ApiError::invalid(format!(
                "confirm: resetting every mailbox needs \"confirm\": \"{CONFIRM_ALL}\""
            )));
        }
        (None, false) => {
            return Err(ApiError::invalid(
                "extensions: give the mailboxes to reset (or all: true)",
            ));
        }
    };
    if body.temporary == Some(false) {
        return Err(ApiError::invalid(
            "temporary: a bulk reset generates the passcodes, and a generated passcode is \
             always temporary",
        ));
    }
    let temporary = true;
    let ttl = ttl_field(body.ttl_seconds, temporary)?;
    let every = matches!(selection, Selection::All);
    let (who, source) = (actor.label(), actor.source());
    let (issued, watch) = blocking_to_deliver(&state, Hashing::Bulk, move |s| {
        s.reset_many(&selection, temporary, ttl, &actor, Timestamp::now())
    })
    .await;
    let issued = issued?;
    if every {
        tracing::warn!(
            actor = %who,
            source = source.as_deref().unwrap_or("-"),
            mailboxes = issued.len(),
            "every mailbox's passcode was reset through the admin API"
        );
    }
    let reset: Vec<IssuedView> = issued.into_iter().map(IssuedView::from).collect();
    let answer = json_answer(Keyed("reset", reset)).await;
    watch.delivered();
    answer
}

async fn unlock(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Ext(ext): Ext,
) -> Result<Response, ApiError> {
    let user = blocking(&state, Hashing::No, move |s| {
        let now = Timestamp::now();
        s.unlock(&ext, &actor, now)?;
        s.user(&ext, now)?.ok_or(StoreError::NotFound(ext))
    })
    .await?;
    Ok(Json(user).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    #[serde(default, deserialize_with = "flag::param")]
    partial: Option<bool>,
}

/// A committed import's answer.
#[derive(Serialize)]
struct ImportAnswer {
    committed: bool,
    created: usize,
    rejected: usize,
    rows: Vec<ImportRowView>,
}

#[derive(Serialize)]
struct ImportRowView {
    line: usize,
    extension: Option<Extension>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temporary_expires_at: Option<Timestamp>,
}

/// Whether an import's `Content-Type` may label CSV: the route takes nothing else, so
/// besides `text/csv` and `application/csv` the types clients put on a file sent as it is
/// (`text/plain`, `application/octet-stream`, curl `--data-binary`'s
/// `application/x-www-form-urlencoded`) and none at all; parameters such as `charset` aside,
/// in any case. Types that say the body is something else (JSON, a multipart form) are not.
fn csv_content_type(headers: &HeaderMap) -> bool {
    media_type(headers).is_none_or(|essence| {
        matches!(
            essence.as_str(),
            "text/csv"
                | "application/csv"
                | "text/plain"
                | "application/octet-stream"
                | "application/x-www-form-urlencoded"
        )
    })
}

async fn import(
    State(state): State<Shared>,
    axum::Extension(Caller(actor)): axum::Extension<Caller>,
    Params(params): Params<ImportParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if !csv_content_type(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be CSV, with Content-Type: text/csv (or application/csv, \
             text/plain, application/octet-stream, application/x-www-form-urlencoded, or none)",
        ));
    }
    let limit = (
        MAX_CSV_BODY,
        "a CSV import is at most 4 MiB (and 100,000 rows): split the file",
    );
    let body = body_bytes(request, &(), CSV_BODY_TIME, limit).await?;
    let text = crate::store::csv_text(body.to_vec())
        .map_err(|e| ApiError::bad_request("malformed_csv", e.to_string()))?;
    let mode = if params.partial.unwrap_or(false) {
        ImportMode::Partial
    } else {
        ImportMode::AllOrNothing
    };
    let (report, watch) = blocking_to_deliver(&state, Hashing::Bulk, move |s| {
        s.import_csv(&text, mode, &actor, Timestamp::now())
    })
    .await;
    // (Failed work set no passcode: its watch goes without a word.)
    let report = report.map_err(|e| {
        if e.code == "invalid_field" {
            ApiError::bad_request("malformed_csv", e.message)
        } else {
            e
        }
    })?;
    let rejected = report.rejected().count();
    let message = report.nothing_imported("add ?partial=true");
    let rows: Vec<ImportRowView> = report
        .rows
        .into_iter()
        .map(|row| {
            let (status, reason, issued) = match row.outcome {
                ImportOutcome::Created(issued) => ("created", None, Some(issued)),
                ImportOutcome::NotImported => ("not_imported", None, None),
                ImportOutcome::Rejected(reason) => ("rejected", Some(reason), None),
            };
            ImportRowView {
                line: row.line,
                extension: row.extension,
                status,
                reason,
                passcode: issued
                    .as_ref()
                    .and_then(|i| i.generated.as_ref().map(|p| p.expose().to_owned())),
                temporary_expires_at: issued.and_then(|i| i.expires_at),
            }
        })
        .collect();
    if report.committed {
        let created = rows.iter().filter(|r| r.status == "created").count();
        let answer = json_answer(ImportAnswer {
            committed: true,
            created,
            rejected,
            rows,
        })
        .await;
        watch.delivered();
        answer
    } else {
        // Nothing was committed, so no passcode was set.
        watch.delivered();
        // Written on the blocking pool, as a committed import's answer is.
        let rows = tokio::task::spawn_blocking(move || serde_json::value::to_raw_value(&rows))
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(ApiError::internal)?;
        Err(ApiError {
            extra: Some(("rows", rows)),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "import_rejected", message)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Policy, audit, report, calls.

async fn show_policy(State(state): State<Shared>) -> Result<Response, ApiError> {
    let policy = blocking(&state, Hashing::No, |s| s.policy()).await?;
    Ok(Json(policy).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyCheck {
    extension: ExtensionText,
    passcode: PasscodeText,
}

async fn check_policy(
    State(state): State<Shared>,
    Body(body): Body<PolicyCheck>,
) -> Result<Response, ApiError> {
    let extension = extension_field(&body.extension.0)?;
    let passcode = passcode_field(body.passcode)?;
    // The rules on the passcode itself: no argon2 work (see `Store::check_passcode`).
    let violations = blocking(&state, Hashing::No, move |s| {
        s.check_passcode(&extension, &passcode)
    })
    .await?;
    let codes: Vec<&str> = violations.as_slice().iter().map(|v| v.code()).collect();
    Ok(Json(json!({ "ok": codes.is_empty(), "violations": codes })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    extension: Option<String>,
    event: Option<String>,
    limit: Option<String>,
}

async fn audit(
    State(state): State<Shared>,
    Params(p): Params<AuditParams>,
) -> Result<Response, ApiError> {
    // A parameter given empty (`?extension=&event=`, as a form sends a field left blank)
    // is no filter.
    let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    let (extension, event, limit) = (given(&p.extension), given(&p.event), given(&p.limit));
    let extension = match extension.as_deref() {
        Some(e) => Some(Extension::parse(e).map_err(|_| invalid_extension())?),
        None => None,
    };
    let event = match event.as_deref() {
        // What was given is not repeated: it could be anything, a passcode typed in the
        // wrong field included.
        Some(name) => Some(Event::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
            ApiError::bad_request(
                "invalid_query",
                format!("event: not an audit event; one of {}", names.join(", ")),
            )
        })?),
        None => None,
    };
    let limit = match limit.map(|n| n.parse::<u32>()) {
        Some(Ok(n)) if (1..=MAX_AUDIT_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit: from 1 to {MAX_AUDIT_LIMIT}"),
            ));
        }
        None => 100,
    };
    let query = AuditQuery {
        extension,
        event,
        limit: Some(limit),
    };
    let events = blocking(&state, Hashing::No, move |s| s.audit(&query)).await?;
    json_answer(Keyed("events", events)).await
}

async fn report(State(state): State<Shared>) -> Result<Response, ApiError> {
    let report = blocking(&state, Hashing::No, |s| s.report(Timestamp::now())).await?;
    Ok(Json(report).into_response())
}

async fn calls(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({ "calls": state.calls.list() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_parameters_take_the_usual_forms_in_any_case() {
        for yes in ["", "true", "True", "TRUE", "1", "yes", "Yes", "on", "ON"] {
            assert_eq!(flag::parse(yes), Some(true), "{yes:?}");
        }
        for no in ["false", "False", "0", "no", "NO", "off", "Off"] {
            assert_eq!(flag::parse(no), Some(false), "{no:?}");
        }
        for neither in [
            "maybe", "2", "-1", "t", "f", "y", "n", " true", "true ", "yes!", "\u{0}",
        ] {
            assert_eq!(flag::parse(neither), None, "{neither:?}");
        }
    }
}
