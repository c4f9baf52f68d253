//! The API's one error shape: `{"error": {"code": "...", "message": "..."}}`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::store::{GenerateError, StoreError, Unavailable};

/// An error answer. Its message never holds a passcode, a hash, the pepper or a token.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code for scripts: `not_found`, `invalid_field`, `unauthorized`, …
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// An extra member of the error object (policy violation codes, an import's rows), as
    /// JSON already written: a rejected import's 100,000 rows are written on the blocking
    /// pool, not by the runtime's workers that run SIP.
    pub extra: Option<(&'static str, Box<RawValue>)>,
    /// `Retry-After`, in seconds (429, and 503 `busy`).
    pub retry_after: Option<u64>,
    /// `WWW-Authenticate` (401).
    pub challenge: Option<Challenge>,
}

/// A 401's `WWW-Authenticate` (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No token was presented.
    TokenRequired,
    /// A token was presented and refused (`error="invalid_token"`, §3.1).
    InvalidToken,
}

impl Challenge {
    fn header(self) -> &'static str {
        match self {
            Self::TokenRequired => "Bearer realm=\"vportal\"",
            Self::InvalidToken => "Bearer realm=\"vportal\", error=\"invalid_token\"",
        }
    }
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 `invalid_field`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(presented: bool) -> Self {
        let (message, challenge) = if presented {
            ("the bearer token is not valid", Challenge::InvalidToken)
        } else {
            (
                "an Authorization: Bearer token is required",
                Challenge::TokenRequired,
            )
        };
        Self {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 429: the client sent too many bad tokens and is turned away for `wait` (sent as
    /// `Retry-After`, in whole seconds, rounded up).
    pub fn too_many_requests(wait: Duration) -> Self {
        Self {
            retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many bad tokens from this address; try again later",
            )
        }
    }

    /// 500, for failures the client cannot fix; the cause is logged, not returned.
    pub fn internal() -> Self {
        metrics::counter!("vportal_store_errors_total").increment(1);
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the server log)",
        )
    }
}

/// An error answer's body: `{"error": {…}}`.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// The `error` object: `code`, `message`, and the extra member if any.
struct ErrorObject<'a> {
    code: &'static str,
    message: &'a str,
    extra: Option<(&'static str, &'a RawValue)>,
}

impl Serialize for ErrorObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("code", self.code)?;
        map.serialize_entry("message", self.message)?;
        if let Some((key, value)) = self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = ErrorObject {
            code: self.code,
            message: &self.message,
            extra: self.extra.as_ref().map(|(key, value)| (*key, &**value)),
        };
        let mut response = (self.status, Json(ErrorBody { error })).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge.header()),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // RFC 9110 §15.5.16: a 415 names the content codings taken, for one refused for its
        // coding (the others do no harm by it).
        if self.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        // RFC 9110 §15.5.9: the connection of a request timed out is closed; say so. So is
        // one whose body was too large (§15.5.14): what is left of it is not read.
        if matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(ext) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no mailbox {ext}"),
            ),
            StoreError::Exists(ext) => Self::new(
                StatusCode::CONFLICT,
                "exists",
                format!("mailbox {ext} already exists"),
            ),
            StoreError::Rejected(violations) => {
                let codes: Vec<&str> = violations.as_slice().iter().map(|v| v.code()).collect();
                Self {
                    extra: serde_json::value::to_raw_value(&codes)
                        .ok()
                        .map(|codes| ("violations", codes)),
                    ..Self::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "policy_violation",
                        format!("the passcode breaks the policy: {}", codes.join(", ")),
                    )
                }
            }
            StoreError::Invalid(message) => Self::invalid(message),
            StoreError::Contention(ext) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("mailbox {ext} changed during the request; try again"),
            ),
            // Only a policy stored by an older build can get here (validation now refuses
            // one that cannot generate); the operator, not the client, must fix it.
            StoreError::Generate(GenerateError::Impossible) => Self::new(
                StatusCode::CONFLICT,
                "policy_unusable",
                format!(
                    "{}: raise generated_length or relax the rules (vportal policy set)",
                    GenerateError::Impossible
                ),
            ),
            StoreError::Unavailable(why) => {
                let busy = why == Unavailable::Busy;
                if busy {
                    tracing::warn!(error = %why, "store busy in the admin API");
                } else {
                    tracing::error!(error = %why, "store unavailable in the admin API");
                }
                metrics::counter!("vportal_store_errors_total").increment(1);
                Self {
                    // A script may try a busy database again; the others need an operator.
                    retry_after: busy.then_some(5),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        if busy { "busy" } else { "unavailable" },
                        why.to_string(),
                    )
                }
            }
            other => {
                tracing::error!(error = %other, "store error in the admin API");
                Self::internal()
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, with Content-Type: application/json",
            ),
            // serde's message names the field: "unknown field `pin`, expected one of …".
            JsonRejection::JsonDataError(e) => Self::invalid(json_error(&e)),
            JsonRejection::JsonSyntaxError(e) => {
                Self::bad_request("malformed_json", json_error(&e))
            }
            JsonRejection::BytesRejection(e) => {
                body_rejection(e.status(), e.body_text(), "a JSON body is at most 64 KiB")
            }
            other => Self::bad_request("bad_request", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let message = path_error::<serde::de::value::Error>(&r)
            .unwrap_or_else(|| "the query string is not one this endpoint takes".to_owned());
        Self::bad_request("invalid_query", message)
    }
}

/// The body could not be read: too large (`limit` says how large it may be), or cut off.
pub(crate) fn body_rejection(status: StatusCode, text: String, limit: &str) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            format!("the request body is too large: {limit}"),
        )
    } else {
        ApiError::bad_request("bad_request", text)
    }
}

/// The message of the deserializing error behind `rejection`, when it is one with a path
/// (what axum's JSON and query extractors give): the path with only its plain-name keys
/// (letters and `_`; any other key, which could be a passcode sent as a key, is `…`), then
/// serde's own message with its values cut ([`redact_values`]).
fn path_error<E>(rejection: &(dyn std::error::Error + 'static)) -> Option<String>
where
    E: std::error::Error + 'static,
{
    let mut cause = Some(rejection);
    let error = loop {
        let current = cause?;
        if let Some(e) = current.downcast_ref::<serde_path_to_error::Error<E>>() {
            break e;
        }
        cause = current.source();
    };
    let name = |key: &str| {
        let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
        if plain {
            key.to_owned()
        } else {
            "…".to_owned()
        }
    };
    let mut path = String::new();
    for segment in error.path().iter() {
        let part = match segment {
            serde_path_to_error::Segment::Seq { index } => {
                path.push_str(&format!("[{index}]"));
                continue;
            }
            serde_path_to_error::Segment::Map { key } => name(key),
            serde_path_to_error::Segment::Enum { variant } => name(variant),
            // Where serde could not tell (a syntax error): nothing to name.
            serde_path_to_error::Segment::Unknown => continue,
        };
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&part);
    }
    let message = without_type_names(&redact_values(&error.inner().to_string()));
    Some(if path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    })
}

/// What is wrong with a JSON body, from serde's error ([`path_error`]); nothing of the
/// body when that error is not there to read (axum's own text puts the client's keys first).
fn json_error(rejection: &(dyn std::error::Error + 'static)) -> String {
    path_error::<serde_json::Error>(rejection)
        .unwrap_or_else(|| "the body is not the JSON this endpoint takes".to_owned())
}

/// serde's message with the server's own type names put as what the client sent should
/// have been: "expected struct CreateUser" (or "… with 6 elements", "tuple struct P",
/// "struct variant E::V") is "expected a JSON object", up to where serde says where in the
/// body (" at line …").
fn without_type_names(message: &str) -> String {
    let Some(named) = message.find("struct ") else {
        return message.to_owned();
    };
    let start = message[..named]
        .rfind("expected ")
        .map_or(named, |e| e + "expected ".len());
    let end = message[named..]
        .find(" at line ")
        .map_or(message.len(), |e| named + e);
    format!("{}a JSON object{}", &message[..start], &message[end..])
}

/// Cuts the values out of a serde message: quoted strings ([`crate::redact::serde_message`]),
/// then numbers and anything else in backticks but plain names.
fn redact_values(message: &str) -> String {
    let out = crate::redact::serde_message(message);
    // Numbers serde echoes ("invalid type: integer `1234`", "floating point `4826.5`",
    // "`4.8e23`") are in backticks too, as are field and variant names and the JSON
    // syntax a parse error expected ("expected `,` or `}`"): only a plain name (letters and
    // `_`, no digit) or one such mark is kept, anything else is a value and is cut.
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let inner = &rest[start + 1..start + 1 + len];
        cleaned.push_str(&rest[..start]);
        let name = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
        let syntax = matches!(inner, "," | ":" | "{" | "}" | "[" | "]");
        if name || syntax {
            cleaned.push('`');
            cleaned.push_str(inner);
            cleaned.push('`');
        } else {
            cleaned.push_str("`…`");
        }
        rest = &rest[start + 2 + len..];
    }
    cleaned.push_str(rest);
    without_long_numbers(&cleaned)
}

/// The last guard of [`redact_values`]: any run of four digits or more (a passcode is at
/// least four) left in the message is cut, but for serde's own " at line N column M".
fn without_long_numbers(message: &str) -> String {
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (text, place) = match message.rfind(" at line ") {
        Some(at)
            if message[at + " at line ".len()..]
                .split_once(" column ")
                .is_some_and(|(line, column)| digits_only(line) && digits_only(column)) =>
        {
            message.split_at(at)
        }
        _ => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        push_run(&mut out, &mut run);
        out.push(c);
    }
    push_run(&mut out, &mut run);
    out.push_str(place);
    out
}

/// Puts a run of digits in `out`, emptying `run`: the digits when fewer than four, else `…`.
fn push_run(out: &mut String, run: &mut String) {
    if run.len() >= 4 {
        out.push('…');
    } else {
        out.push_str(run);
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_cannot_generate_is_a_conflict_not_an_internal_error() {
        let e = ApiError::from(StoreError::Generate(GenerateError::Impossible));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "policy_unusable")
        );
        assert!(e.message.contains("generated_length"), "{}", e.message);
        let e = ApiError::from(StoreError::Generate(GenerateError::Rng));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn json_syntax_errors_keep_what_was_expected() {
        assert_eq!(
            redact_values("expected `,` or `}` at line 1 column 21"),
            "expected `,` or `}` at line 1 column 21"
        );
        assert_eq!(
            redact_values("expected `:` at line 1"),
            "expected `:` at line 1"
        );
        // Two marks, or a mark beside a value, are no syntax mark.
        assert_eq!(redact_values("got `,1` and `}}`"), "got `…` and `…`");
    }

    #[test]
    fn the_servers_type_names_are_not_shown() {
        for (said, as_said) in [
            (
                "invalid type: string \"…\", expected struct CreateUser",
                "invalid type: string \"…\", expected a JSON object",
            ),
            (
                "invalid length 1, expected struct SetPasscode with 3 elements",
                "invalid length 1, expected a JSON object",
            ),
            (
                "invalid length 0, expected struct Foo with 1 element",
                "invalid length 0, expected a JSON object",
            ),
            (
                "expected struct A or struct B_2 at line 1 column 2",
                "expected a JSON object at line 1 column 2",
            ),
            (
                "invalid type: map, expected tuple struct Pair",
                "invalid type: map, expected a JSON object",
            ),
            ("expected unit struct Marker", "expected a JSON object"),
            (
                "invalid type: string \"…\", expected struct variant Selection::Some",
                "invalid type: string \"…\", expected a JSON object",
            ),
            ("unknown field `pin`", "unknown field `pin`"),
        ] {
            assert_eq!(without_type_names(said), as_said, "{said}");
        }
    }

    #[test]
    fn serde_messages_keep_field_names_and_lose_values() {
        assert_eq!(
            redact_values("unknown field `pin`, expected one of `passcode`, `temporary`"),
            "unknown field `pin`, expected one of `passcode`, `temporary`"
        );
        assert_eq!(
            redact_values("invalid type: integer `48826`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            redact_values("invalid value: string \"12a4\", expected digits"),
            "invalid value: string \"…\", expected digits"
        );
        // An escaped quote inside a value does not end it, nor does an escaped backslash
        // before the real end.
        assert_eq!(
            redact_values(r#"invalid type: string "ab\"4826", expected a boolean"#),
            "invalid type: string \"…\", expected a boolean"
        );
        assert_eq!(
            redact_values(r#"invalid type: string "4826\\", expected `x` "9""#),
            "invalid type: string \"…\", expected `x` \"…\""
        );
        // Numbers in any JSON form, and names that carry digits.
        for value in ["48261.5", "48261.0", "4.8262e23", "-4826", "1e+5"] {
            assert_eq!(
                redact_values(&format!(
                    "invalid type: floating point `{value}`, expected a string"
                )),
                "invalid type: floating point `…`, expected a string"
            );
        }
        assert_eq!(
            redact_values("unknown field `pin4826`, expected `passcode`"),
            "unknown field `…`, expected `passcode`"
        );
        // A backtick in an unknown key does not shift the pairs: the key is cut whole.
        for key in ["a`5738291", "passcode`5738291", "a`57`38291", "`", "a``b"] {
            let message = format!(
                "unknown field `{key}`, expected one of `passcode`, `temporary` at line 1 column 31"
            );
            assert_eq!(
                redact_values(&message),
                "unknown field `…`, expected one of `passcode`, `temporary` at line 1 column 31",
                "{key}"
            );
        }
        assert_eq!(
            redact_values("unknown variant `x`4826`, expected `a` or `b`"),
            "unknown variant `…`, expected `a` or `b`"
        );
        assert_eq!(
            redact_values("unknown field `a`4826`, there are no fields"),
            "unknown field `…`, there are no fields"
        );
        // And whatever else gets past: no four digits in a row are left, but for where.
        assert_eq!(
            redact_values("odd 4826 and 123, expected u32 at line 12345 column 67890"),
            "odd … and 123, expected u32 at line 12345 column 67890"
        );
    }
}
