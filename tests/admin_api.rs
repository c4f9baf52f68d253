#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

//! The admin HTTP API end to end: an in-process server on loopback, driven by the tests'
//! blocking HTTP/1.1 client (`tests/common/http.rs`), with the store inspected directly.
//!
//! Every response a test receives is logged; when the harness is dropped (and the test has
//! not already failed) no logged response may hold a password hash, the pepper or the token.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{self, Response as Resp};

use serde_json::{Value, json};
use vportal::store::{
    Actor, AuditEvent, AuditQuery, Extension, NewUser, Passcode, PasscodeSpec, Pepper, Store,
    UserFilter, UserInfo, VerifyOutcome,
};
use vportal::time::Timestamp;

// ---------------------------------------------------------------------------------------
// The harness.

/// What the tests ask of an error answer.
trait ErrorAnswer {
    /// The `error.code` of an error answer, after checking the error shape.
    fn code(&self) -> String;
    /// Asserts status and error code together, showing the body when either is wrong.
    fn assert_error(&self, status: u16, code: &str);
}

impl ErrorAnswer for Resp {
    fn code(&self) -> String {
        let v = self.json();
        let error = v["error"]
            .as_object()
            .unwrap_or_else(|| panic!("no error object: {} {}", self.status, self.body));
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.body
        );
        error["code"].as_str().unwrap().to_owned()
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "body: {}",
            self.body
        );
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "error content type: {:?}",
            self.header("content-type")
        );
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// No Authorization header.
    None,
    /// The harness's good token.
    Good,
    /// `Authorization: Bearer <this>`.
    Bearer(&'a str),
    /// `Authorization: <this>`.
    Raw(&'a str),
}

/// A server in its own runtime, the store behind it and the token it accepts.
struct Api {
    addr: SocketAddr,
    store: Arc<Store>,
    token: String,
    log: Mutex<Vec<String>>,
    // Dropped last: the server runs on it.
    _rt: tokio::runtime::Runtime,
}

fn pepper_hex() -> String {
    "01".repeat(32)
}

impl Api {
    fn start() -> Self {
        let store =
            Arc::new(Store::open_in_memory(Pepper::from_bytes(vec![1; 32]).unwrap(), 1).unwrap());
        let token = store
            .create_token("provisioning", &Actor::Cli { user: None }, Timestamp::now())
            .unwrap();
        let state = common::server::admin_state(
            Arc::clone(&store),
            Arc::new(tokio::sync::Semaphore::new(2)),
        );
        let (addr, rt) = common::server::admin_in_process(state);
        Self {
            addr,
            store,
            token: token.expose().to_owned(),
            log: Mutex::new(Vec::new()),
            _rt: rt,
        }
    }

    /// Sends one request on a fresh connection and reads the whole response.
    fn request(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let bearer;
        let mut headers = Vec::new();
        match auth {
            Auth::None => {}
            Auth::Good => {
                bearer = format!("Bearer {}", self.token);
                headers.push(("Authorization", bearer.as_str()));
            }
            Auth::Bearer(t) => {
                bearer = format!("Bearer {t}");
                headers.push(("Authorization", bearer.as_str()));
            }
            Auth::Raw(v) => headers.push(("Authorization", v)),
        }
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        self.send(method, path, &headers, body)
    }

    /// A POST with the good token, `content_type` and a `Content-Encoding` of `coding`.
    fn post_coded(&self, path: &str, content_type: &str, coding: &str, body: &[u8]) -> Resp {
        let bearer = format!("Bearer {}", self.token);
        let headers = [
            ("Authorization", bearer.as_str()),
            ("Content-Type", content_type),
            ("Content-Encoding", coding),
        ];
        self.send("POST", path, &headers, body)
    }

    /// Sends a request with exactly `headers`, and logs it with its answer.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let resp = http::send(self.addr, method, path, headers, body);
        let mut text = format!("{method} {path} -> {}\n", resp.status);
        for (n, v) in &resp.headers {
            text.push_str(&format!("{n}: {v}\n"));
        }
        text.push('\n');
        text.push_str(&resp.body);
        self.log.lock().unwrap().push(text);
        resp
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Auth::Good, None, b"")
    }

    fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, Auth::Good, None, b"")
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_json_text(path, body.to_string().as_bytes())
    }

    /// POSTs `body` as it is, labelled JSON: for bodies `json!` cannot write (malformed,
    /// duplicate fields).
    fn post_json_text(&self, path: &str, body: &[u8]) -> Resp {
        self.request("POST", path, Auth::Good, Some("application/json"), body)
    }

    fn post_csv(&self, path: &str, csv: &str) -> Resp {
        self.request("POST", path, Auth::Good, Some("text/csv"), csv.as_bytes())
    }

    /// Creates a mailbox through the API and returns the created response.
    fn create(&self, body: &Value) -> Resp {
        let r = self.post("/api/v1/users", body);
        assert_eq!(r.status, 201, "create {body}: {}", r.body);
        // RFC 9110 §15.3.2: where the new mailbox is.
        let made: Value = serde_json::from_str(&r.body).unwrap();
        let extension = made["user"]["extension"].as_str().unwrap();
        let location = format!("/api/v1/users/{extension}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{}", r.body);
        r
    }

    /// Creates 1001 (temporary, fresh), 1002 (permanent, locked) and, straight in the store,
    /// 1003 (temporary, created `created_ago` with 60 s to live: expired).
    fn create_fresh_locked_and_expired(&self, created_ago: Duration) {
        self.create(&json!({ "extension": "1001" }));
        self.create(&json!({ "extension": "1002", "passcode": "582039", "temporary": false }));
        self.store
            .create_user(
                NewUser::new(ext_("1003")).with_passcode(PasscodeSpec {
                    passcode: None,
                    temporary: true,
                    ttl: Some(vportal::store::Ttl::from_secs(60).unwrap()),
                }),
                &Actor::Cli { user: None },
                Timestamp::now().saturating_sub(created_ago),
            )
            .unwrap();
        self.lock("1002");
    }

    fn users(&self) -> Vec<UserInfo> {
        self.store
            .users(UserFilter::default(), Timestamp::now())
            .unwrap()
    }

    fn user(&self, ext: &str) -> Option<UserInfo> {
        self.store.user(&ext_(ext), Timestamp::now()).unwrap()
    }

    fn audit(&self) -> Vec<AuditEvent> {
        self.store
            .audit(&AuditQuery {
                limit: Some(10_000),
                ..AuditQuery::default()
            })
            .unwrap()
    }

    /// Everything the store holds that an API call could change.
    fn snapshot(&self) -> (Vec<UserInfo>, usize) {
        (self.users(), self.audit().len())
    }

    fn verify(&self, ext: &str, passcode: &str) -> VerifyOutcome {
        self.store
            .verify(ext, &pin(passcode), &caller(), Timestamp::now())
            .unwrap()
    }

    /// Locks a mailbox with wrong passcodes, as callers would.
    fn lock(&self, ext: &str) {
        for i in 0..5 {
            let outcome = self.verify(ext, "000000");
            if i < 4 {
                assert!(
                    matches!(outcome, VerifyOutcome::Wrong { .. }),
                    "{i}: {outcome:?}"
                );
            } else {
                assert!(
                    matches!(outcome, VerifyOutcome::Locked { .. }),
                    "{outcome:?}"
                );
            }
        }
        assert!(self.user(ext).unwrap().locked);
    }

    /// Every response logged so far.
    fn responses(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// No response holds a hash, the pepper or the token.
    fn assert_no_secrets(&self) {
        let pepper = pepper_hex();
        for r in self.log.lock().unwrap().iter() {
            assert!(!r.contains("$argon2"), "a hash in a response:\n{r}");
            assert!(!r.contains(&pepper), "the pepper in a response:\n{r}");
            assert!(!r.contains(&self.token), "the token in a response:\n{r}");
            assert!(
                !r.contains(&self.token["vpt_".len()..]),
                "the token's secret part in a response:\n{r}"
            );
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

fn ext_(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}

fn pin(s: &str) -> Passcode {
    Passcode::new(s.to_owned()).unwrap()
}

fn caller() -> Actor {
    Actor::Caller {
        source: "192.0.2.7:5060".parse().unwrap(),
        call_id: "admin-api-test@192.0.2.7".to_owned(),
    }
}

/// `Timestamp::now() + secs` as the API writes it.
fn ts_in(secs: u64) -> String {
    Timestamp::now()
        .saturating_add(Duration::from_secs(secs))
        .to_string()
}

/// Asserts `v` is a string between `low` and `high` (RFC 3339 UTC, fixed width: text order
/// is time order).
fn assert_between(v: &Value, low: &str, high: &str) {
    let t = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    assert!(low <= t && t <= high, "{t} not within {low}..={high}");
}

/// Asserts `v` is a generated passcode (six digits) and returns it.
fn generated(v: &Value) -> String {
    let p = v
        .as_str()
        .unwrap_or_else(|| panic!("no generated passcode: {v}"));
    assert!(
        p.len() == 6 && p.bytes().all(|b| b.is_ascii_digit()),
        "not a 6-digit passcode: {p:?}"
    );
    p.to_owned()
}

fn extensions(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|u| u["extension"].as_str().unwrap().to_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Public routes.

#[test]
fn healthz_and_metrics_need_no_token() {
    let api = Api::start();
    let r = api.request("GET", "/healthz", Auth::None, None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "status": "ok" }));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    // Not recorded in this process: a JSON 404, without asking for a token.
    let r = api.request("GET", "/metrics", Auth::None, None, b"");
    r.assert_error(404, "not_found");
    assert!(r.header("www-authenticate").is_none());
}

// ---------------------------------------------------------------------------------------
// Users.

#[test]
fn create_without_passcode_generates_a_temporary_one() {
    let api = Api::start();
    let low = ts_in(72 * 3600);
    let r = api.create(&json!({
        "extension": "1001",
        "name": "Alice Example",
        "email": "alice@example.com",
    }));
    let high = ts_in(72 * 3600);
    // It hands out a passcode: no cache may keep it.
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    let passcode = generated(&body["passcode"]);
    let user = &body["user"];
    assert_eq!(user["extension"], "1001");
    assert_eq!(user["name"], "Alice Example");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["temporary"], true);
    assert_eq!(user["has_passcode"], true);
    assert_eq!(user["locked"], false);
    assert_eq!(user["failed_attempts"], 0);
    assert_between(&user["temporary_expires_at"], &low, &high);

    let stored = api.user("1001").unwrap();
    assert!(stored.temporary && stored.has_passcode);
    assert_eq!(stored.name.as_deref(), Some("Alice Example"));
    // The passcode handed out is the one that works, and must be changed at first login.
    assert_eq!(
        api.verify("1001", &passcode),
        VerifyOutcome::Ok { must_change: true }
    );
}

#[test]
fn create_with_given_permanent_passcode_returns_no_passcode_field() {
    let api = Api::start();
    let r = api.create(&json!({
        "extension": "1002",
        "passcode": "582039",
        "temporary": false,
    }));
    let body = r.json();
    assert!(
        !r.body.contains("582039"),
        "given passcode echoed: {}",
        r.body
    );
    assert_eq!(body["user"]["extension"], "1002");
    assert_eq!(body["user"]["temporary"], false);
    assert_eq!(body["user"]["temporary_expires_at"], Value::Null);
    assert_eq!(
        api.verify("1002", "582039"),
        VerifyOutcome::Ok { must_change: false }
    );
    // A given passcode is not handed back: the `passcode` member is absent (as in the
    // passcode-reset answers), not `null`.
    assert!(
        body.as_object().unwrap().get("passcode").is_none(),
        "create with a given passcode answered a passcode member: {}",
        r.body
    );
}

/// A generated passcode is handed to the owner to replace: it is always temporary. Asking
/// for a permanent one without giving it is refused, on every route that generates, and
/// writes nothing; given, a permanent passcode is fine.
#[test]
fn a_generated_passcode_is_never_permanent() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    let refused = |path: &str, body: Value| {
        let r = api.post(path, &body);
        r.assert_error(422, "invalid_field");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("temporary: ") && message.contains("always temporary"),
            "{body}: {message}"
        );
    };
    refused(
        "/api/v1/users",
        json!({ "extension": "1004", "temporary": false }),
    );
    refused(
        "/api/v1/users",
        json!({ "extension": "1004", "temporary": false, "passcode": null }),
    );
    refused("/api/v1/users/1001/passcode", json!({ "temporary": false }));
    refused(
        "/api/v1/users/1001/passcode",
        json!({ "temporary": false, "ttl_seconds": 600 }),
    );
    refused(
        "/api/v1/users/reset",
        json!({ "extensions": ["1001"], "temporary": false }),
    );
    refused(
        "/api/v1/users/reset",
        json!({ "all": true, "temporary": false, "confirm": "reset every mailbox" }),
    );
    assert_eq!(api.snapshot(), before);
    assert!(api.user("1004").is_none());
    assert!(api.user("1001").unwrap().temporary);

    // Given, a passcode may be permanent; generated with temporary: true, it is temporary.
    let r = api.create(&json!({ "extension": "1004", "temporary": true }));
    generated(&r.json()["passcode"]);
    assert_eq!(r.json()["user"]["temporary"], true);
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "582039", "temporary": false }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!api.user("1001").unwrap().temporary);
    let r = api.post(
        "/api/v1/users/reset",
        &json!({ "extensions": ["1001"], "temporary": true }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reset"][0]["temporary"], true);
    assert!(api.user("1001").unwrap().temporary);
}

#[test]
fn show_user_has_exactly_the_documented_fields() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001", "name": "Alice" }));
    let r = api.get("/api/v1/users/1001");
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.json();
    let expected: BTreeSet<String> = [
        "extension",
        "name",
        "email",
        "has_passcode",
        "temporary",
        "temporary_expires_at",
        "expired",
        "locked",
        "locked_until",
        "failed_attempts",
        "lockouts",
        "last_login_at",
        "passcode_changed_at",
        "created_at",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys(&user), expected);
    let stored = api.user("1001").unwrap();
    assert_eq!(user, serde_json::to_value(&stored).unwrap());
    assert_eq!(user["extension"], "1001");
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["email"], Value::Null);
    assert_eq!(user["locked_until"], Value::Null);
    assert_eq!(user["last_login_at"], Value::Null);
    assert_eq!(user["passcode_changed_at"], Value::Null);
    assert_eq!(user["created_at"], stored.created_at.to_string());

    api.get("/api/v1/users/1999").assert_error(404, "not_found");
}

#[test]
fn list_users_with_filters() {
    let api = Api::start();
    api.create_fresh_locked_and_expired(Duration::from_secs(7200));

    let list = |query: &str| {
        let r = api.get(&format!("/api/v1/users{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        extensions(&r.json()["users"])
    };
    assert_eq!(list(""), ["1001", "1002", "1003"]);
    assert_eq!(list("?temporary=true"), ["1001", "1003"]);
    assert_eq!(list("?temporary=false"), ["1002"]);
    assert_eq!(list("?locked=true"), ["1002"]);
    assert_eq!(list("?locked=false"), ["1001", "1003"]);
    assert_eq!(list("?expired=true"), ["1003"]);
    assert_eq!(list("?expired=false"), ["1001", "1002"]);
    assert_eq!(list("?temporary=true&expired=false"), ["1001"]);
    assert_eq!(list("?temporary=false&locked=false"), Vec::<String>::new());

    let all = api.get("/api/v1/users").json();
    let listed = &all["users"];
    assert_eq!(listed[1]["locked"], true);
    assert_eq!(listed[2]["expired"], true);
    assert_eq!(*listed, serde_json::to_value(api.users()).unwrap());

    // Yes and no as clients write them: any case (Python's requests sends `True`), 1/0,
    // yes/no, on/off, and a parameter without a value for yes.
    for yes in ["True", "TRUE", "1", "yes", "Yes", "on", "ON"] {
        assert_eq!(
            list(&format!("?temporary={yes}")),
            ["1001", "1003"],
            "{yes}"
        );
        assert_eq!(list(&format!("?locked={yes}")), ["1002"], "{yes}");
        assert_eq!(list(&format!("?expired={yes}")), ["1003"], "{yes}");
    }
    for no in ["False", "FALSE", "0", "no", "No", "off", "OFF"] {
        assert_eq!(list(&format!("?temporary={no}")), ["1002"], "{no}");
        assert_eq!(list(&format!("?locked={no}")), ["1001", "1003"], "{no}");
        assert_eq!(list(&format!("?expired={no}")), ["1001", "1002"], "{no}");
    }
    assert_eq!(list("?temporary"), ["1001", "1003"]);
    assert_eq!(list("?temporary="), ["1001", "1003"]);
    assert_eq!(list("?locked&temporary=False"), ["1002"]);
    assert_eq!(list("?expired=&temporary=1"), ["1003"]);

    api.get("/api/v1/users?bogus=1")
        .assert_error(400, "invalid_query");
    for (query, name) in [
        ("?locked=maybe", "locked"),
        ("?temporary=2", "temporary"),
        ("?expired=t", "expired"),
        ("?temporary=%20true", "temporary"),
        ("?locked=yes%00", "locked"),
    ] {
        let r = api.get(&format!("/api/v1/users{query}"));
        r.assert_error(400, "invalid_query");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("{name}: not a yes or no"))
                && message.matches(name).count() == 1,
            "{query}: {message}"
        );
    }
}

#[test]
fn delete_user_then_it_is_gone() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    api.create(&json!({ "extension": "1002" }));
    let r = api.delete("/api/v1/users/1001");
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    assert!(api.user("1001").is_none());
    assert!(api.user("1002").is_some());
    api.get("/api/v1/users/1001").assert_error(404, "not_found");
    let before = api.snapshot();
    api.delete("/api/v1/users/1001")
        .assert_error(404, "not_found");
    assert_eq!(api.snapshot(), before);
    let row = &api.audit()[0];
    assert_eq!(row.event, "user.deleted");
    assert_eq!(row.extension.as_deref(), Some("1001"));
    assert_eq!(row.actor, "admin:provisioning");
}

#[test]
fn reset_one_passcode() {
    let api = Api::start();
    let first = generated(&api.create(&json!({ "extension": "1001" })).json()["passcode"]);

    // Generated: returned once, temporary, with the policy's TTL.
    let low = ts_in(72 * 3600);
    let r = api.post("/api/v1/users/1001/passcode", &json!({}));
    let high = ts_in(72 * 3600);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let second = generated(&body["passcode"]);
    assert_eq!(body["extension"], "1001");
    assert_eq!(body["temporary"], true);
    assert_between(&body["temporary_expires_at"], &low, &high);
    assert_eq!(
        keys(&body),
        ["extension", "passcode", "temporary", "temporary_expires_at"]
            .into_iter()
            .map(String::from)
            .collect()
    );

    // No body at all, as `curl -X POST` sends: the same as `{}`.
    let r = api.request("POST", "/api/v1/users/1001/passcode", Auth::Good, None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["temporary"], true);
    let bare = generated(&r.json()["passcode"]);
    assert_eq!(
        api.verify("1001", &bare),
        VerifyOutcome::Ok { must_change: true }
    );

    // ttl_seconds is honoured.
    let low = ts_in(3600);
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "ttl_seconds": 3600 }),
    );
    let high = ts_in(3600);
    assert_eq!(r.status, 200, "{}", r.body);
    let third = generated(&r.json()["passcode"]);
    assert_between(&r.json()["temporary_expires_at"], &low, &high);
    assert_between(
        &serde_json::to_value(api.user("1001").unwrap().temporary_expires_at).unwrap(),
        &low,
        &high,
    );

    // Given and permanent: not returned.
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "582039", "temporary": false }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert!(body.get("passcode").is_none(), "{}", r.body);
    assert!(!r.body.contains("582039"));
    assert_eq!(body["temporary"], false);
    assert_eq!(body["temporary_expires_at"], Value::Null);
    let user = api.user("1001").unwrap();
    assert!(!user.temporary && user.temporary_expires_at.is_none());

    // Only the last one works.
    for old in [&first, &second, &third] {
        if old != "582039" {
            assert!(matches!(
                api.verify("1001", old),
                VerifyOutcome::Wrong { .. }
            ));
        }
    }
    assert_eq!(
        api.verify("1001", "582039"),
        VerifyOutcome::Ok { must_change: false }
    );

    let events: Vec<(String, String)> = api
        .audit()
        .iter()
        .filter(|e| e.actor == "admin:provisioning")
        .map(|e| (e.event.clone(), e.outcome.clone()))
        .take(3)
        .collect();
    assert_eq!(
        events,
        [
            ("passcode.changed".to_owned(), "admin_set".to_owned()),
            ("passcode.temporary_set".to_owned(), "generated".to_owned()),
            ("passcode.temporary_set".to_owned(), "generated".to_owned()),
        ]
    );

    // Errors write nothing.
    let before = api.snapshot();
    api.post("/api/v1/users/1999/passcode", &json!({}))
        .assert_error(404, "not_found");
    for ttl in [0, 365 * 24 * 3600 + 1] {
        api.post(
            "/api/v1/users/1001/passcode",
            &json!({ "ttl_seconds": ttl }),
        )
        .assert_error(422, "invalid_field");
    }
    api.post("/api/v1/users/1001/passcode", &json!({ "ttl_seconds": -5 }))
        .assert_error(422, "invalid_field");
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "123456" }),
    );
    r.assert_error(422, "policy_violation");
    assert_eq!(
        r.json()["error"]["violations"],
        json!(["sequential", "common"])
    );
    assert_eq!(api.snapshot(), before);
}

#[test]
fn bulk_reset_by_extensions() {
    let api = Api::start();
    let p1 = generated(&api.create(&json!({ "extension": "1001" })).json()["passcode"]);
    let p2 = generated(&api.create(&json!({ "extension": "1002" })).json()["passcode"]);
    let p3 = generated(&api.create(&json!({ "extension": "1003" })).json()["passcode"]);

    let r = api.post(
        "/api/v1/users/reset",
        &json!({ "extensions": ["1002", "1001", "1002"], "ttl_seconds": 600 }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let reset = r.json()["reset"].clone();
    assert_eq!(extensions(&reset), ["1001", "1002"]);
    let new: Vec<String> = reset
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["temporary"], true);
            generated(&i["passcode"])
        })
        .collect();
    assert!(matches!(
        api.verify("1001", &p1),
        VerifyOutcome::Wrong { .. }
    ));
    assert!(matches!(
        api.verify("1002", &p2),
        VerifyOutcome::Wrong { .. }
    ));
    assert_eq!(
        api.verify("1001", &new[0]),
        VerifyOutcome::Ok { must_change: true }
    );
    assert_eq!(
        api.verify("1002", &new[1]),
        VerifyOutcome::Ok { must_change: true }
    );

    // An unknown mailbox in the list: nothing is reset.
    let before = api.snapshot();
    let r = api.post(
        "/api/v1/users/reset",
        &json!({ "extensions": ["1003", "1999"] }),
    );
    r.assert_error(404, "not_found");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1999")
    );
    for bad in [
        json!({ "extensions": [] }),
        json!({}),
        json!({ "extensions": ["1003"], "all": true, "confirm": "reset every mailbox" }),
        json!({ "extensions": ["10a3"] }),
        json!({ "extensions": ["1003"], "ttl_seconds": 0 }),
        json!({ "extensions": ["1003"], "ttl_seconds": 31_536_001 }),
    ] {
        api.post("/api/v1/users/reset", &bad)
            .assert_error(422, "invalid_field");
    }
    assert_eq!(api.snapshot(), before);
    assert_eq!(
        api.verify("1003", &p3),
        VerifyOutcome::Ok { must_change: true }
    );
}

/// `all: true` resets every mailbox only with `confirm: "reset every mailbox"`, exactly
/// (issue 7: an explicit confirmation field), with or without the other members.
#[test]
fn bulk_reset_of_every_mailbox() {
    let api = Api::start();
    let mut old = Vec::new();
    for e in ["1001", "1002", "1003"] {
        old.push(generated(
            &api.create(&json!({ "extension": e })).json()["passcode"],
        ));
    }
    let before = api.snapshot();
    for body in [
        // The explicit confirmation is required (issue 7), with exactly these words.
        json!({ "all": true, "temporary": true }),
        json!({ "all": true }),
        json!({ "all": true, "confirm": "yes" }),
        json!({ "all": true, "confirm": "Reset every mailbox" }),
        json!({ "all": true, "confirm": "reset every mailbox " }),
        json!({ "all": true, "confirm": "" }),
    ] {
        let r = api.post("/api/v1/users/reset", &body);
        r.assert_error(422, "invalid_field");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("reset every mailbox"),
            "{}",
            r.body
        );
    }
    for body in [json!({ "all": false }), json!({ "all": null })] {
        api.post("/api/v1/users/reset", &body)
            .assert_error(422, "invalid_field");
    }
    assert_eq!(api.snapshot(), before);

    // Confirmed: every mailbox is reset, each time.
    let mut current = old;
    for body in [
        json!({ "all": true, "temporary": true, "confirm": "reset every mailbox" }),
        json!({ "all": true, "confirm": "reset every mailbox" }),
        json!({ "all": true, "confirm": "reset every mailbox", "ttl_seconds": 600 }),
    ] {
        let r = api.post("/api/v1/users/reset", &body);
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        let reset = r.json()["reset"].clone();
        assert_eq!(extensions(&reset), ["1001", "1002", "1003"]);
        let mut new = Vec::new();
        for (i, e) in ["1001", "1002", "1003"].into_iter().enumerate() {
            assert_eq!(reset[i]["temporary"], true, "{body}");
            let fresh = generated(&reset[i]["passcode"]);
            assert!(matches!(
                api.verify(e, &current[i]),
                VerifyOutcome::Wrong { .. }
            ));
            assert_eq!(
                api.verify(e, &fresh),
                VerifyOutcome::Ok { must_change: true }
            );
            new.push(fresh);
        }
        current = new;
    }
    let resets = api
        .audit()
        .iter()
        .filter(|e| e.actor == "admin:provisioning" && e.event == "passcode.temporary_set")
        .count();
    assert_eq!(
        resets,
        3 + 3 * 3,
        "the creations', then three resets of three"
    );
}

#[test]
fn unlock_lifts_a_lock() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001", "passcode": "582039", "temporary": false }));
    api.lock("1001");
    let shown = api.get("/api/v1/users/1001").json();
    assert_eq!(shown["locked"], true);
    assert!(shown["locked_until"].is_string(), "{shown}");
    // The failures that locked it, which unlock clears (below).
    assert_eq!(shown["failed_attempts"], 5, "{shown}");
    assert_eq!(
        shown["failed_attempts"],
        api.user("1001").unwrap().failed_attempts
    );
    assert!(matches!(
        api.verify("1001", "582039"),
        VerifyOutcome::Locked { .. }
    ));

    let r = api.post("/api/v1/users/1001/unlock", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let user = r.json();
    assert_eq!(user["extension"], "1001");
    assert_eq!(user["locked"], false);
    assert_eq!(user["locked_until"], Value::Null);
    assert_eq!(user["failed_attempts"], 0);
    assert!(!api.user("1001").unwrap().locked);
    let row = &api.audit()[0];
    assert_eq!(
        (row.event.as_str(), row.outcome.as_str(), row.actor.as_str()),
        ("user.unlocked", "was_locked", "admin:provisioning")
    );
    assert_eq!(
        api.verify("1001", "582039"),
        VerifyOutcome::Ok { must_change: false }
    );

    // Without a body at all, too; an unknown mailbox is a 404.
    let r = api.request("POST", "/api/v1/users/1001/unlock", Auth::Good, None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.audit()[0].outcome, "not_locked");
    api.post("/api/v1/users/1999/unlock", &json!({}))
        .assert_error(404, "not_found");
}

#[test]
fn import_csv() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));

    // Good rows: created, a passcode only for rows that had none.
    let r = api.post_csv(
        "/api/v1/users/import",
        "extension,name,email,passcode\r\n2001,Ann,ann@example.com,\r\n2002,\"Bob, Jr.\",,582039\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["committed"], true);
    assert_eq!(body["created"], 2);
    assert_eq!(body["rejected"], 0);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0]["line"], &rows[0]["extension"], &rows[0]["status"]),
        (&json!(2), &json!("2001"), &json!("created"))
    );
    let p2001 = generated(&rows[0]["passcode"]);
    assert!(rows[0]["temporary_expires_at"].is_string());
    assert_eq!(
        (&rows[1]["line"], &rows[1]["extension"], &rows[1]["status"]),
        (&json!(3), &json!("2002"), &json!("created"))
    );
    assert!(rows[1].get("passcode").is_none(), "{}", rows[1]);
    assert!(!r.body.contains("582039"));
    let ann = api.user("2001").unwrap();
    assert_eq!(ann.name.as_deref(), Some("Ann"));
    assert_eq!(ann.email.as_deref(), Some("ann@example.com"));
    assert!(ann.temporary);
    assert_eq!(api.user("2002").unwrap().name.as_deref(), Some("Bob, Jr."));
    assert_eq!(
        api.verify("2001", &p2001),
        VerifyOutcome::Ok { must_change: true }
    );
    assert_eq!(
        api.verify("2002", "582039"),
        VerifyOutcome::Ok { must_change: true }
    );

    // A bad row: nothing is created; the report names the line.
    let mixed =
        "extension,name,passcode\n3001,Carl,\n30x2,Dora,\n3003,Eve,\n3004,Fay,123456\n1001,Gil,\n";
    let before = api.snapshot();
    let r = api.post_csv("/api/v1/users/import", mixed);
    r.assert_error(422, "import_rejected");
    let rows = r.json()["error"]["rows"].clone();
    let summary: Vec<(u64, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["line"].as_u64().unwrap(),
                row["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (2, "not_imported".to_owned()),
            (3, "rejected".to_owned()),
            (4, "not_imported".to_owned()),
            (5, "rejected".to_owned()),
            (6, "rejected".to_owned()),
        ]
    );
    assert!(rows[1]["reason"].as_str().unwrap().contains("extension"));
    assert_eq!(rows[1]["extension"], Value::Null);
    assert!(rows[3]["reason"].as_str().unwrap().contains("sequential"));
    assert!(
        rows[4]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("passcode").is_none())
    );
    assert!(!r.body.contains("123456"), "{}", r.body);
    assert_eq!(api.snapshot(), before);

    // Partial: the good rows are created, the bad ones reported.
    let r = api.post_csv("/api/v1/users/import?partial=true", mixed);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (&body["committed"], &body["created"], &body["rejected"]),
        (&json!(true), &json!(2), &json!(3))
    );
    let rows = body["rows"].as_array().unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["created", "rejected", "created", "rejected", "rejected"]
    );
    assert_eq!(rows[1]["line"], 3);
    generated(&rows[0]["passcode"]);
    generated(&rows[2]["passcode"]);
    assert!(api.user("3001").is_some() && api.user("3003").is_some());
    assert!(api.user("3004").is_none());
    assert_eq!(api.users().len(), before.0.len() + 2);
    // `partial` takes yes and no as the list filters do.
    let r = api.post_csv("/api/v1/users/import?partial=True", "5001,Ida\n50x2,Jo\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(api.user("5001").is_some());
    let before_no = api.snapshot();
    api.post_csv("/api/v1/users/import?partial=no", "5003,Kim\n50x4,Lu\n")
        .assert_error(422, "import_rejected");
    api.post_csv("/api/v1/users/import?partial=sometimes", "5003,Kim\n")
        .assert_error(400, "invalid_query");
    assert_eq!(api.snapshot(), before_no);

    // Without a header line, the default column order; a charset parameter is fine.
    let r = api.request(
        "POST",
        "/api/v1/users/import",
        Auth::Good,
        Some("text/csv; charset=utf-8"),
        b"4001,Hal,hal@example.com\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api.user("4001").unwrap().email.as_deref(),
        Some("hal@example.com")
    );

    // The route takes only CSV: a file sent as it is, labelled as text, as bytes, as curl
    // --data-binary's form type, or not at all, is CSV too.
    for (i, content_type) in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/octet-stream"),
        Some("application/x-www-form-urlencoded"),
        Some("Text/CSV"),
        Some("application/csv"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let ext = format!("{}", 6001 + i);
        let r = api.request(
            "POST",
            "/api/v1/users/import",
            Auth::Good,
            content_type,
            format!("extension,name\n{ext},Ola\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{content_type:?}: {}", r.body);
        generated(&r.json()["rows"][0]["passcode"]);
        assert_eq!(api.user(&ext).unwrap().name.as_deref(), Some("Ola"));
    }
}

// ---------------------------------------------------------------------------------------
// Policy, audit, report, calls.

#[test]
fn policy_check_and_show() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001", "passcode": "582039", "temporary": false }));
    let before = api.snapshot();

    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1001", "passcode": "1234" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({ "ok": false, "violations": ["sequential", "common"] })
    );
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1001", "passcode": "730518" }),
    );
    assert_eq!(r.json(), json!({ "ok": true, "violations": [] }));
    // History rules are not answered: the mailbox's own passcode checks as any other
    // acceptable one would (a check is no way to test guesses).
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1001", "passcode": "582039" }),
    );
    assert_eq!(r.json(), json!({ "ok": true, "violations": [] }));
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "4321", "passcode": "58" }),
    );
    assert_eq!(r.json()["violations"], json!(["too_short"]));
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1001", "passcode": "12a4" }),
    );
    assert_eq!(r.json()["violations"], json!(["not_digits"]));
    api.post("/api/v1/policy/check", &json!({ "extension": "1001" }))
        .assert_error(422, "invalid_field");
    assert_eq!(api.snapshot(), before, "a policy check writes nothing");

    let r = api.get("/api/v1/policy");
    assert_eq!(r.status, 200, "{}", r.body);
    let policy = r.json();
    assert_eq!(
        policy,
        serde_json::to_value(api.store.policy().unwrap()).unwrap()
    );
    assert_eq!(policy["min_length"], 4);
    assert_eq!(policy["max_length"], 10);
    assert_eq!(policy["generated_length"], 6);
    assert_eq!(policy["history_depth"], 5);
    assert_eq!(policy["temporary_ttl_seconds"], 72 * 3600);
    assert_eq!(policy["lockout"]["max_failures"], 5);
}

#[test]
fn audit_filters_and_attribution() {
    let api = Api::start();
    let created_1001 = api.create(&json!({ "extension": "1001" }));
    let created_1002 = api.create(&json!({
        "extension": "1002", "passcode": "582039", "temporary": false
    }));
    let reset_1001 = api.post("/api/v1/users/1001/passcode", &json!({}));
    assert_eq!(reset_1001.status, 200);

    let r = api.get("/api/v1/audit");
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.json()["events"].clone();
    let rows = events.as_array().unwrap();
    let summary: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["extension"].as_str(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    let admin = "admin:provisioning";
    assert_eq!(
        summary,
        [
            ("passcode.temporary_set", Some("1001"), admin),
            ("passcode.changed", Some("1002"), admin),
            ("user.created", Some("1002"), admin),
            ("passcode.temporary_set", Some("1001"), admin),
            ("user.created", Some("1001"), admin),
            ("token.created", None, "cli"),
        ]
    );
    let ids: Vec<i64> = rows.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    // The source is the HTTP client's address: the connection that made the change.
    let source = |i: usize| rows[i]["source"].as_str().unwrap().to_owned();
    assert_eq!(source(0), reset_1001.local.to_string());
    assert_eq!(source(1), created_1002.local.to_string());
    assert_eq!(source(2), created_1002.local.to_string());
    assert_eq!(source(3), created_1001.local.to_string());
    assert_eq!(source(4), created_1001.local.to_string());
    assert!(source(0).starts_with("127.0.0.1:"));
    assert_eq!(rows[5]["source"], Value::Null);
    assert_eq!(rows[1]["outcome"], "admin_set");
    assert_eq!(events, serde_json::to_value(api.audit()).unwrap());

    let r = api.get("/api/v1/audit?extension=1002");
    let only: Vec<String> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["extension"], "1002");
            e["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(only, ["passcode.changed", "user.created"]);

    let r = api.get("/api/v1/audit?event=user.created");
    assert_eq!(
        extensions(&r.json()["events"]),
        ["1002", "1001"],
        "{}",
        r.body
    );
    let r = api.get("/api/v1/audit?extension=1001&event=passcode.temporary_set");
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 2);
    let r = api.get("/api/v1/audit?limit=2");
    assert_eq!(r.json()["events"], json!([rows[0], rows[1]]));
    let r = api.get("/api/v1/audit?limit=1000");
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 6);
    // Parameters given empty, as a form sends fields left blank, filter nothing.
    let r = api.get("/api/v1/audit?extension=&event=&limit=");
    assert_eq!(r.json()["events"], json!(rows), "{}", r.body);

    let before = api.snapshot();
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=-1",
        "?limit=ten",
        "?event=login.maybe",
        "?extension=12a4",
        "?extension=..%2F..%2Fetc",
        "?unknown=1",
        "?event=4826",
        "?48261=1",
        "?pin%204826=1",
        "?x%3A%204826=1",
    ] {
        let r = api.get(&format!("/api/v1/audit{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        // What was given could be a passcode typed in the wrong field: never repeated.
        assert!(!r.body.contains("4826"), "{bad}: {}", r.body);
        assert!(
            ["invalid_query", "invalid_extension"].contains(&r.code().as_str()),
            "{bad}: {}",
            r.body
        );
    }
    assert_eq!(api.snapshot(), before);
}

#[test]
fn report_and_calls() {
    let api = Api::start();
    let r = api.get("/api/v1/report");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({
            "users": 0, "temporary": 0, "expired": 0, "locked": 0,
            "never_changed": 0, "changed_in_90_days": 0,
            "changed_last_90_days": 0
        })
    );

    api.create_fresh_locked_and_expired(Duration::from_secs(3600));
    let r = api.get("/api/v1/report");
    let report = r.json();
    assert_eq!(report["users"], 3);
    assert_eq!(report["temporary"], 2);
    assert_eq!(report["expired"], 1);
    assert_eq!(report["locked"], 1);
    assert_eq!(
        report,
        serde_json::to_value(api.store.report(Timestamp::now()).unwrap()).unwrap()
    );

    let r = api.get("/api/v1/calls");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({ "calls": [] }));
}

// ---------------------------------------------------------------------------------------
// Errors.

#[test]
fn missing_or_wrong_token_is_401_with_a_bearer_challenge() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    let wrong = format!("vpt_{}", "ab".repeat(32));
    let cases: [(&str, &str, Auth<'_>); 6] = [
        ("GET", "/api/v1/users", Auth::None),
        ("GET", "/api/v1/users", Auth::Bearer(&wrong)),
        (
            "GET",
            "/api/v1/users/1001",
            Auth::Raw("Basic YWRtaW46YWRtaW4="),
        ),
        ("GET", "/api/v1/report", Auth::Raw("Bearer")),
        ("DELETE", "/api/v1/users/1001", Auth::Bearer("vpt_")),
        ("GET", "/api/v1/openapi.json", Auth::None),
    ];
    for (method, path, auth) in cases {
        let r = api.request(method, path, auth, None, b"");
        r.assert_error(401, "unauthorized");
        let challenge = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{method} {path}: no WWW-Authenticate"));
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    // A presented but wrong token is told so.
    let r = api.request("GET", "/api/v1/users", Auth::Bearer(&wrong), None, b"");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token"),
        "{:?}",
        r.headers
    );
    // Writes without a token change nothing.
    let r = api.request(
        "POST",
        "/api/v1/users",
        Auth::None,
        Some("application/json"),
        br#"{"extension":"1002"}"#,
    );
    r.assert_error(401, "unauthorized");
    let r = api.request(
        "POST",
        "/api/v1/users/reset",
        Auth::Bearer("not-a-token"),
        Some("application/json"),
        br#"{"all":true,"confirm":"reset every mailbox"}"#,
    );
    r.assert_error(401, "unauthorized");
    assert_eq!(api.snapshot(), before);
    // The scheme is case-insensitive; the good token works, once the 250 ms that the fourth
    // bad token in a row turns the address away for are over.
    std::thread::sleep(Duration::from_millis(300));
    let r = api.request(
        "GET",
        "/api/v1/users",
        Auth::Raw(&format!("bearer {}", api.token)),
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A route that reads no query string refuses one rather than ignore it: a script's option
/// that does not exist (`?dry_run=true`) must not pass unnoticed on its way to a delete.
#[test]
fn a_query_string_on_a_route_that_reads_none_is_refused() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    api.delete("/api/v1/users/1001?dry_run=true")
        .assert_error(400, "invalid_query");
    api.post("/api/v1/users/1001/unlock?all=1", &json!({}))
        .assert_error(400, "invalid_query");
    for path in [
        "/api/v1/users/1001?x=1",
        "/api/v1/policy?verbose",
        "/api/v1/report?since=1",
        "/api/v1/calls?x=",
        "/api/v1/openapi.json?v=2",
    ] {
        api.get(path).assert_error(400, "invalid_query");
    }
    assert_eq!(api.snapshot(), before);
    // The routes that read one still do; an empty one is none; the token comes first.
    assert_eq!(api.get("/api/v1/users?locked=false").status, 200);
    assert_eq!(api.get("/api/v1/users/1001?").status, 200);
    api.request("GET", "/api/v1/policy?x=1", Auth::None, None, b"")
        .assert_error(401, "unauthorized");
}

/// A body in a content coding vportal does not decode is refused (415, naming `identity`
/// as the one taken), not read as if it were plain: an import must not write mailboxes
/// from it. `identity` itself is no coding.
#[test]
fn a_coded_body_is_refused_not_read_as_plain() {
    let api = Api::start();
    let before = api.snapshot();
    for coding in ["gzip", "br", "identity, br", "GZIP"] {
        let r = api.post_coded(
            "/api/v1/users/import",
            "text/csv",
            coding,
            b"extension\n3001\n",
        );
        assert_eq!(r.header("accept-encoding"), Some("identity"), "{coding}");
        r.assert_error(415, "unsupported_media_type");
        api.post_coded(
            "/api/v1/users",
            "application/json",
            coding,
            br#"{"extension":"3002"}"#,
        )
        .assert_error(415, "unsupported_media_type");
    }
    assert_eq!(api.snapshot(), before);
    let r = api.post_coded(
        "/api/v1/users/import",
        "text/csv",
        "identity",
        b"extension\n3001\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post_coded(
        "/api/v1/users",
        "application/json",
        "Identity",
        br#"{"extension":"3002"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn unknown_routes_mailboxes_and_methods() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    api.get("/api/v1/users/1999").assert_error(404, "not_found");
    api.delete("/api/v1/users/1999")
        .assert_error(404, "not_found");
    for path in [
        "/api/v1/nope",
        "/api/v2/users",
        "/",
        "/api/v1/users/1001/nope",
    ] {
        let r = api.get(path);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        r.assert_error(404, "no_such_route");
    }
    api.request("GET", "/nope", Auth::None, None, b"")
        .assert_error(404, "no_such_route");

    for (method, path) in [
        ("PUT", "/api/v1/users"),
        ("PATCH", "/api/v1/users/1001"),
        ("GET", "/api/v1/users/reset"),
        ("GET", "/api/v1/users/1001/passcode"),
        ("DELETE", "/api/v1/policy"),
        ("POST", "/api/v1/audit"),
        ("POST", "/healthz"),
    ] {
        let r = api.request(method, path, Auth::Good, Some("application/json"), b"{}");
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "{method} {path}"
        );
        r.assert_error(405, "method_not_allowed");
    }
    assert_eq!(api.snapshot(), before);
}

#[test]
fn conflicts_and_invalid_fields() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001", "name": "Alice" }));
    let before = api.snapshot();

    let r = api.post("/api/v1/users", &json!({ "extension": "1001" }));
    r.assert_error(409, "exists");
    assert_eq!(api.user("1001").unwrap().name.as_deref(), Some("Alice"));

    // An unknown field is named.
    let r = api.post(
        "/api/v1/users",
        &json!({ "extension": "1002", "pin": "4821" }),
    );
    r.assert_error(422, "invalid_field");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("`pin`"), "{message}");
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "730518", "expires": 60 }),
    );
    r.assert_error(422, "invalid_field");
    assert!(r.body.contains("`expires`"), "{}", r.body);
    assert!(!r.body.contains("730518"), "{}", r.body);
    // A key that is not a name, whatever it holds, is not repeated (a passcode typed as
    // a key would be).
    for key in ["730518", "pin 730518", "x: 730518", "a.730518"] {
        let r = api.post("/api/v1/users", &json!({ "extension": "1002", key: 1 }));
        assert_eq!(r.status, 422, "{key}: {}", r.body);
        assert!(!r.body.contains("730518"), "{key}: {}", r.body);
    }

    // A given passcode that breaks the policy: the codes are listed.
    let r = api.post(
        "/api/v1/users",
        &json!({ "extension": "1002", "passcode": "123456" }),
    );
    r.assert_error(422, "policy_violation");
    assert_eq!(
        r.json()["error"]["violations"],
        json!(["sequential", "common"])
    );
    assert!(!r.body.contains("123456"), "{}", r.body);
    let r = api.post(
        "/api/v1/users",
        &json!({ "extension": "58203", "passcode": "58203" }),
    );
    r.assert_error(422, "policy_violation");
    assert_eq!(r.json()["error"]["violations"], json!(["equals_extension"]));

    // Other bad fields.
    for body in [
        json!({ "extension": "1002", "ttl_seconds": 0 }),
        json!({ "extension": "1002", "ttl_seconds": 400 * 24 * 3600 }),
        json!({ "extension": "1002", "email": "not an address" }),
        json!({ "extension": "1002", "name": "x".repeat(10_000) }),
        json!({ "extension": "1002", "passcode": "5".repeat(65) }),
        json!({ "extension": "1002", "temporary": "yes" }),
        json!({ "name": "no extension" }),
        json!(["1002"]),
        json!("1002"),
    ] {
        let r = api.post("/api/v1/users", &body);
        r.assert_error(422, "invalid_field");
    }
    assert_eq!(api.snapshot(), before);
}

/// An extension may be sent as a JSON integer (`{"extension": 8001}`), read as its decimal
/// digits, on every route whose body names extensions. A passcode may not: as a number it
/// would lose a leading zero, and the error says to send a string (without echoing it).
#[test]
fn extensions_may_be_json_integers_and_passcodes_only_strings() {
    let api = Api::start();
    let r = api.create(&json!({ "extension": 8001 }));
    assert_eq!(r.json()["user"]["extension"], "8001");
    generated(&r.json()["passcode"]);
    let r = api.create(&json!({ "extension": 8002, "passcode": "582039", "temporary": false }));
    assert_eq!(r.json()["user"]["extension"], "8002");
    assert_eq!(
        api.verify("8002", "582039"),
        VerifyOutcome::Ok { must_change: false }
    );
    let r = api.post(
        "/api/v1/users/reset",
        &json!({ "extensions": [8002, "8001", 8001] }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(extensions(&r.json()["reset"]), ["8001", "8002"]);
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": 8001, "passcode": "8001" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["violations"], json!(["equals_extension"]));

    let before = api.snapshot();
    // Numbers that are not an extension's digits.
    for text in [
        r#"{"extension": -8003}"#,
        r#"{"extension": 8003.0}"#,
        r#"{"extension": 8.003e3}"#,
        r#"{"extension": 1234567890123456}"#,
        r#"{"extension": 99999999999999999999}"#,
        r#"{"extension": true}"#,
        r#"{"extension": ["8003"]}"#,
    ] {
        let r = api.post_json_text("/api/v1/users", text.as_bytes());
        r.assert_error(422, "invalid_field");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("extension"), "{text}: {message}");
    }
    for text in [
        r#"{"extensions": [8001, -2]}"#,
        r#"{"extensions": [8001, 8001.5]}"#,
    ] {
        api.post_json_text("/api/v1/users/reset", text.as_bytes())
            .assert_error(422, "invalid_field");
    }
    // Passcodes as numbers, on each route that takes one.
    for (path, text) in [
        (
            "/api/v1/users",
            r#"{"extension": "8003", "passcode": 4826}"#,
        ),
        ("/api/v1/users/8001/passcode", r#"{"passcode": 4826}"#),
        ("/api/v1/users/8001/passcode", r#"{"passcode": 4826.0}"#),
        ("/api/v1/users/8001/passcode", r#"{"passcode": -4826}"#),
        (
            "/api/v1/policy/check",
            r#"{"extension": 8001, "passcode": 4826}"#,
        ),
    ] {
        let r = api.post_json_text(path, text.as_bytes());
        r.assert_error(422, "invalid_field");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("passcode: ") && message.contains("as a JSON string"),
            "{path} {text}: {message}"
        );
        assert!(!r.body.contains("4826"), "{}", r.body);
    }
    assert_eq!(api.snapshot(), before);
    assert!(api.user("8003").is_none());
}

#[test]
fn content_types_and_malformed_bodies() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    let body = br#"{"extension":"1002"}"#;
    // A JSON body labelled as something else is refused (a missing label is not: see
    // `json_bodies_without_a_content_type_are_json`).
    for content_type in [
        "text/plain",
        "text/csv",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
        "json",
    ] {
        let r = api.request(
            "POST",
            "/api/v1/users",
            Auth::Good,
            Some(content_type),
            body,
        );
        r.assert_error(415, "unsupported_media_type");
    }
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = api.request(
            "POST",
            "/api/v1/users/1001/passcode",
            Auth::Good,
            Some(content_type),
            b"{}",
        );
        r.assert_error(415, "unsupported_media_type");
    }
    // CSV labelled as something else it could not be is refused (the types a file is sent
    // as are not: see `import_csv`).
    for content_type in [
        "application/json",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/html",
        "image/png",
        "text/csvx",
    ] {
        let r = api.request(
            "POST",
            "/api/v1/users/import",
            Auth::Good,
            Some(content_type),
            b"extension\n1002\n",
        );
        r.assert_error(415, "unsupported_media_type");
    }
    // Malformed JSON.
    for text in [
        &b"{"[..],
        br#"{"extension":"1002""#,
        br#"{"extension":"1002",}"#,
        b"extension=1002",
        b"\xff\xfe{}",
    ] {
        let r = api.post_json_text("/api/v1/users", text);
        r.assert_error(400, "malformed_json");
    }
    // What the parser expected is said: the JSON's syntax is no secret.
    let r = api.post_json_text("/api/v1/users", br#"{"extension":"1002" "name":"x"}"#);
    r.assert_error(400, "malformed_json");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("expected `,` or `}`"), "{message}");
    let r = api.post_json_text("/api/v1/users", b"");
    assert_eq!(r.status, 400, "{}", r.body);
    // JSON that is not an object: 422, not read by the fields' order in the server's own
    // types (an array was taken as a mailbox), and without those types' names.
    for text in [
        &br#"["8801","Pos",null,null,null,null]"#[..],
        b"[1]",
        br#""x""#,
        b" 5 ",
        b"null",
    ] {
        let r = api.post_json_text("/api/v1/users", text);
        r.assert_error(422, "invalid_field");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("must be a JSON object"), "{message}");
    }
    assert!(api.user("8801").is_none(), "an array made a mailbox");
    let r = api.post_json_text("/api/v1/users", br#"{"extension":"8802","name":["x"]}"#);
    r.assert_error(422, "invalid_field");
    assert!(!r.body.contains("struct"), "{}", r.body);
    // Malformed CSV.
    for text in [
        "extension,name\n1002,\"open\n",
        "1002,a\"b\n",
        "1002,\"a\"b\n",
        "extension,pin\n1002,1\n",
    ] {
        let r = api.post_csv("/api/v1/users/import", text);
        r.assert_error(400, "malformed_csv");
    }
    let r = api.request(
        "POST",
        "/api/v1/users/import",
        Auth::Good,
        Some("text/csv"),
        b"1002,Ann\n1003,M\xfcller\n",
    );
    r.assert_error(400, "malformed_csv");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 2: not UTF-8")),
        "{}",
        r.body
    );
    // Nothing to import is refused, not an empty success.
    for text in ["", "extension,name\n", "\n\n"] {
        api.post_csv("/api/v1/users/import", text)
            .assert_error(400, "malformed_csv");
    }
    assert_eq!(api.snapshot(), before);
}

/// A JSON body without a `Content-Type` (a script that left the header out) is read as
/// JSON, on every route that takes one; `+json` types and parameters are fine too.
#[test]
fn json_bodies_without_a_content_type_are_json() {
    let api = Api::start();
    let r = api.request(
        "POST",
        "/api/v1/users",
        Auth::Good,
        None,
        br#"{"extension":"1001"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let first = generated(&r.json()["passcode"]);
    let r = api.request(
        "POST",
        "/api/v1/users/1001/passcode",
        Auth::Good,
        None,
        br#"{"ttl_seconds": 600}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let second = generated(&r.json()["passcode"]);
    assert!(matches!(
        api.verify("1001", &first),
        VerifyOutcome::Wrong { .. }
    ));
    assert_eq!(
        api.verify("1001", &second),
        VerifyOutcome::Ok { must_change: true }
    );
    let r = api.request(
        "POST",
        "/api/v1/users/reset",
        Auth::Good,
        None,
        br#"{"extensions":["1001"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.request(
        "POST",
        "/api/v1/policy/check",
        Auth::Good,
        None,
        br#"{"extension":"1001","passcode":"730518"}"#,
    );
    assert_eq!(r.json(), json!({ "ok": true, "violations": [] }));
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        let r = api.request(
            "POST",
            "/api/v1/policy/check",
            Auth::Good,
            Some(content_type),
            br#"{"extension":"1001","passcode":"730518"}"#,
        );
        assert_eq!(r.status, 200, "{content_type}: {}", r.body);
    }
    // Without a label, what is not JSON is malformed JSON.
    let before = api.snapshot();
    for text in [&b"extension=1002"[..], b"", b"extension,name\n1002,Ann\n"] {
        api.request("POST", "/api/v1/users", Auth::Good, None, text)
            .assert_error(400, "malformed_json");
    }
    assert_eq!(api.snapshot(), before);
}

/// The admin reset's body may be left out: an empty body (or only whitespace) reads as
/// `{}` whatever its `Content-Type` says, as `curl -X POST -H 'Content-Type:
/// application/json'` and clients that always label their requests send it.
#[test]
fn an_empty_optional_body_reads_as_empty_json_whatever_its_type() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let mut last = None;
    for (content_type, body) in [
        (Some("application/json"), &b""[..]),
        (Some("application/json; charset=utf-8"), b""),
        (Some("application/json"), b"  \r\n\t "),
        (Some("text/plain"), b""),
        (Some("application/x-www-form-urlencoded"), b""),
        (Some("application/octet-stream"), b"\n"),
        (None, b""),
        (None, b" "),
    ] {
        let r = api.request(
            "POST",
            "/api/v1/users/1001/passcode",
            Auth::Good,
            content_type,
            body,
        );
        assert_eq!(r.status, 200, "{content_type:?} {body:?}: {}", r.body);
        let answer = r.json();
        assert_eq!(answer["temporary"], true);
        let passcode = generated(&answer["passcode"]);
        assert_eq!(
            api.verify("1001", &passcode),
            VerifyOutcome::Ok { must_change: true }
        );
        if let Some(previous) = last.replace(passcode) {
            assert!(matches!(
                api.verify("1001", &previous),
                VerifyOutcome::Wrong { .. }
            ));
        }
    }
    // Something in the body is read as JSON as ever.
    let before = api.snapshot();
    api.post_json_text("/api/v1/users/1001/passcode", b" {")
        .assert_error(400, "malformed_json");
    api.post_json_text("/api/v1/users/1001/passcode", b"null")
        .assert_error(422, "invalid_field");
    api.request(
        "POST",
        "/api/v1/users/1001/passcode",
        Auth::Good,
        Some("text/plain"),
        b" {}",
    )
    .assert_error(415, "unsupported_media_type");
    api.post_json_text("/api/v1/users/1999/passcode", b"")
        .assert_error(404, "not_found");
    // A route whose body is required still needs one.
    api.post_json_text("/api/v1/users", b"")
        .assert_error(400, "malformed_json");
    api.post_json_text("/api/v1/users/reset", b" ")
        .assert_error(400, "malformed_json");
    assert_eq!(api.snapshot(), before);
}

#[test]
fn oversized_bodies_are_413() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    // JSON over 64 KiB.
    let big = json!({ "extension": "1002", "name": "x".repeat(64 * 1024) });
    let r = api.post("/api/v1/users", &big);
    r.assert_error(413, "payload_too_large");
    assert!(r.body.contains("at most 64 KiB"), "{}", r.body);
    let r = api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1002", "passcode": "9".repeat(70_000) }),
    );
    r.assert_error(413, "payload_too_large");
    // CSV over 4 MiB.
    let mut csv = String::from("extension,name\n1002,Big\n");
    while csv.len() <= 4 * 1024 * 1024 {
        csv.push_str("\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n");
    }
    let r = api.post_csv("/api/v1/users/import", &csv);
    r.assert_error(413, "payload_too_large");
    assert!(r.body.contains("at most 4 MiB"), "{}", r.body);
    assert_eq!(api.snapshot(), before);

    // The CSV limit is not the JSON one: 200 KiB of CSV (blank lines) is fine.
    let mut csv = String::from("extension,name\n1002,Big\n");
    csv.push_str(&"\n".repeat(200 * 1024));
    let r = api.post_csv("/api/v1/users/import", &csv);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(api.user("1002").is_some());
}

/// A body whose Content-Length is over the limit gets the 413 at once, unread, and the
/// connection closes: a client that asks `Expect: 100-continue` is not invited to send
/// 100 GB, nor left waiting for the 408.
#[test]
fn a_body_announced_too_large_is_413_at_once() {
    use std::io::{Read, Write};
    let api = Api::start();
    for (path, content_type) in [
        ("/api/v1/policy/check", "application/json"),
        ("/api/v1/users/import", "text/csv"),
    ] {
        let mut stream = std::net::TcpStream::connect(api.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: 99999999999\r\n\
             Expect: 100-continue\r\n\r\n",
            api.token
        );
        stream.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        // Read until the server closes: within the read timeout, not the 10 s body time.
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(!answer.contains("100 Continue"), "{path}: {answer}");
        assert!(answer.contains("payload_too_large"), "{path}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{path}: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{path}: {answer}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hostile input.

#[test]
fn hostile_extensions_in_paths_write_nothing() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    let long = "9".repeat(5000);
    let hostile = [
        "..%2F..%2Fetc",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "1001%00",
        "%001001",
        "12a4",
        "+1001",
        "%2B1001",
        "-1001",
        "1001%20",
        "%201001",
        "1001%0d%0aX-Injected:%201",
        "1234567890123456",
        long.as_str(),
        "%ff%fe",
        "%D9%A1%D9%A2",
        "1001;DROP%20TABLE%20users",
        "1001'--",
    ];
    for ext in hostile {
        for (method, suffix, body) in [
            ("GET", "", None),
            ("DELETE", "", None),
            ("POST", "/passcode", Some("{}")),
            ("POST", "/unlock", Some("{}")),
        ] {
            let path = format!("/api/v1/users/{ext}{suffix}");
            let r = api.request(
                method,
                &path,
                Auth::Good,
                body.map(|_| "application/json"),
                body.unwrap_or("").as_bytes(),
            );
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, "invalid_extension"),
                "{method} {path}: {}",
                r.body
            );
            assert!(r.header("x-injected").is_none());
            assert_eq!(api.snapshot(), before, "{method} {path} wrote something");
        }
    }
    // Path segments that are not one extension never reach a handler.
    for path in [
        "/api/v1/users/../../etc/passwd",
        "/api/v1/users/1001/../../../etc/passwd",
        "/api/v1/users/..%2F..%2Fetc/passwd",
        "/api/v1/users//1001",
    ] {
        let r = api.delete(path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
        r.code();
        assert_eq!(api.snapshot(), before, "DELETE {path} wrote something");
    }
    assert!(api.user("1001").is_some());
}

#[test]
fn hostile_bodies_write_nothing() {
    let api = Api::start();
    api.create(&json!({ "extension": "1001" }));
    let before = api.snapshot();
    let long = "9".repeat(5000);
    for ext in [
        "../1001",
        "..\\1001",
        "12a4",
        "+1001",
        "1001\u{0}",
        "",
        " 1001",
        "1234567890123456",
        long.as_str(),
        "١٢٣",
    ] {
        let r = api.post("/api/v1/users", &json!({ "extension": ext }));
        r.assert_error(422, "invalid_field");
        let r = api.post("/api/v1/users/reset", &json!({ "extensions": [ext] }));
        r.assert_error(422, "invalid_field");
        let r = api.post(
            "/api/v1/policy/check",
            &json!({ "extension": ext, "passcode": "730518" }),
        );
        r.assert_error(422, "invalid_field");
    }
    for name in ["Evil\u{0}Name", "two\nlines", "bell\u{7}"] {
        let r = api.post(
            "/api/v1/users",
            &json!({ "extension": "1002", "name": name }),
        );
        r.assert_error(422, "invalid_field");
    }
    // CSV with hostile extensions is rejected row by row, all or nothing.
    let r = api.post_csv(
        "/api/v1/users/import",
        "extension,name\n../etc,x\n1002,ok\n1001\u{0},y\n\"1003\nX\",z\n",
    );
    r.assert_error(422, "import_rejected");
    // Deep nesting and huge numbers are just bad fields.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = api.post_json_text("/api/v1/users", deep.as_bytes());
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    r.code();
    let r = api.post_json_text("/api/v1/users/1001/passcode", br#"{"ttl_seconds": 1e400}"#);
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    r.code();
    // A JSON body with a duplicate field.
    let r = api.post_json_text(
        "/api/v1/users",
        br#"{"extension":"1002","extension":"1003"}"#,
    );
    r.assert_error(422, "invalid_field");
    assert_eq!(api.snapshot(), before);
}

// ---------------------------------------------------------------------------------------
// Secrets.

#[test]
fn secrets_appear_only_where_they_are_handed_out() {
    let api = Api::start();
    // Each generated passcode, with the index of the response that handed it out.
    let mut issued: Vec<(String, usize)> = Vec::new();
    let last = |api: &Api| api.responses().len() - 1;

    let r = api.create(&json!({ "extension": "1001", "name": "Alice" }));
    issued.push((generated(&r.json()["passcode"]), last(&api)));
    let r = api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "ttl_seconds": 600 }),
    );
    issued.push((generated(&r.json()["passcode"]), last(&api)));
    api.create(&json!({ "extension": "1002", "passcode": "582039", "temporary": false }));
    let r = api.post("/api/v1/users/reset", &json!({ "extensions": ["1002"] }));
    issued.push((generated(&r.json()["reset"][0]["passcode"]), last(&api)));
    let r = api.post_csv("/api/v1/users/import", "extension,name\n1003,Carl\n");
    issued.push((generated(&r.json()["rows"][0]["passcode"]), last(&api)));
    let r = api.post(
        "/api/v1/users/reset",
        &json!({ "all": true, "confirm": "reset every mailbox" }),
    );
    let idx = last(&api);
    for i in 0..3 {
        issued.push((generated(&r.json()["reset"][i]["passcode"]), idx));
    }

    // Given passcodes and ones refused are never echoed, whatever the error.
    api.post(
        "/api/v1/policy/check",
        &json!({ "extension": "1001", "passcode": "730518" }),
    );
    api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": 924617 }),
    )
    .assert_error(422, "invalid_field");
    api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": ["681395"] }),
    )
    .assert_error(422, "invalid_field");
    // Numbers in the other JSON forms serde echoes: a fraction and an exponent.
    for body in [
        &br#"{"passcode": 571846.5}"#[..],
        br#"{"passcode": 6.40739e5}"#,
    ] {
        api.post_json_text("/api/v1/users/1001/passcode", body)
            .assert_error(422, "invalid_field");
    }
    api.post_json_text(
        "/api/v1/policy/check",
        br#"{"extension": "1001", "passcode": 395172.0}"#,
    )
    .assert_error(422, "invalid_field");
    api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "123456" }),
    )
    .assert_error(422, "policy_violation");
    api.post(
        "/api/v1/users/1001/passcode",
        &json!({ "passcode": "480213x" }),
    )
    .assert_error(422, "policy_violation");
    api.post("/api/v1/users/1001/passcode", &json!({ "pin": "357159" }))
        .assert_error(422, "invalid_field");
    api.post_json_text("/api/v1/users/1001/passcode", br#"{"passcode": "864209"#)
        .assert_error(400, "malformed_json");
    api.post_csv("/api/v1/users/import", "extension,passcode\n1004,975310x\n")
        .assert_error(422, "import_rejected");

    // Everything an admin can read.
    for path in [
        "/api/v1/users",
        "/api/v1/users/1001",
        "/api/v1/users/1002",
        "/api/v1/users/1003",
        "/api/v1/audit?limit=1000",
        "/api/v1/report",
        "/api/v1/policy",
        "/api/v1/calls",
    ] {
        assert_eq!(api.get(path).status, 200, "{path}");
    }

    let responses = api.responses();
    for (passcode, at) in &issued {
        let holders: Vec<usize> = responses
            .iter()
            .enumerate()
            .filter(|(_, r)| r.contains(passcode.as_str()))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            holders,
            [*at],
            "passcode issued in response {at} found in {holders:?}"
        );
    }
    for given in [
        "582039", "730518", "924617", "681395", "123456", "480213", "357159", "864209", "975310",
        "571846", "640739", "395172",
    ] {
        for r in &responses {
            assert!(!r.contains(given), "{given} echoed:\n{r}");
        }
    }
    let audit = serde_json::to_string(&api.audit()).unwrap();
    for secret in issued
        .iter()
        .map(|(p, _)| p.as_str())
        .chain(["582039", "$argon2"])
        .chain([pepper_hex().as_str(), api.token.as_str()])
    {
        assert!(!audit.contains(secret), "{secret} in the audit trail");
    }
    api.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------
// Slow-down.

#[test]
fn repeated_bad_tokens_turn_the_address_away_for_a_doubling_time() {
    let api = Api::start();
    let bad = |n: usize| {
        let token = format!("vpt_{}", format!("{n:02}").repeat(32));
        api.request("GET", "/api/v1/users", Auth::Bearer(&token), None, b"")
    };
    // Requests without a token are not guesses.
    for _ in 0..5 {
        let r = api.request("GET", "/api/v1/users", Auth::None, None, b"");
        r.assert_error(401, "unauthorized");
    }
    // Three bad tokens are free; the fourth turns the address away for 250 ms, each
    // further one (once let through) for twice as long: 0.5 s, 1 s, 2 s.
    for n in 1..=4 {
        bad(n).assert_error(401, "unauthorized");
    }
    for (n, refused) in [(5, 250), (6, 500), (7, 1_000)] {
        std::thread::sleep(Duration::from_millis(refused + 50));
        bad(n).assert_error(401, "unauthorized");
    }
    // Turned away for 2 s now: answered at once with 429 and when to come back, its token
    // not looked at, so neither a guess nor the good token gets through meanwhile.
    for r in [bad(8), bad(9), api.get("/api/v1/users")] {
        r.assert_error(429, "too_many_requests");
        assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
        assert!(r.header("www-authenticate").is_none(), "{r:?}");
    }

    // Once the time is up, the good token works and starts the count over.
    std::thread::sleep(Duration::from_millis(2_050));
    let r = api.get("/api/v1/users");
    assert_eq!(r.status, 200, "{}", r.body);
    for n in 10..=13 {
        bad(n).assert_error(401, "unauthorized");
    }
}

/// Bad tokens sent at once on many connections (12: one client may hold 16), before any
/// check has failed, are checked
/// only as far as the free ones go (three, and the one let through alone after them); the
/// rest are turned away unchecked. A good client's requests sent at once all get through.
#[test]
fn a_burst_of_bad_tokens_is_not_a_burst_of_guesses() {
    let api = Api::start();
    let at_once = |token: &str| -> Vec<u16> {
        let barrier = std::sync::Barrier::new(12);
        std::thread::scope(|s| {
            let sent: Vec<_> = (0..12)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        api.request("GET", "/api/v1/users", Auth::Bearer(token), None, b"")
                            .status
                    })
                })
                .collect();
            sent.into_iter().map(|t| t.join().unwrap()).collect()
        })
    };
    let good = at_once(&api.token);
    assert!(good.iter().all(|&s| s == 200), "{good:?}");
    let bad = at_once(&format!("vpt_{}", "ab".repeat(32)));
    let checked = bad.iter().filter(|&&s| s == 401).count();
    assert!(bad.iter().all(|&s| s == 401 || s == 429), "{bad:?}");
    assert!(checked <= 4, "{checked} bad tokens checked: {bad:?}");
}

/// Another process holds the database's write lock (a long import from the CLI, a backup
/// tool): reads are answered from the WAL, and a write, after its wait, is 503 `busy` with
/// Retry-After, not a 500.
#[test]
fn a_database_locked_elsewhere_answers_reads_and_says_busy_to_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let pepper = || Pepper::from_bytes(vec![1; 32]).unwrap();
    let cli = Actor::Cli { user: None };
    let setup = Store::open(&path, pepper(), true, 1).unwrap();
    let token = setup.create_token("ops", &cli, Timestamp::now()).unwrap();
    setup
        .create_user(
            NewUser {
                extension: Extension::parse("1001").unwrap(),
                name: None,
                email: None,
                passcode: None,
            },
            &cli,
            Timestamp::now(),
        )
        .unwrap();
    drop(setup);
    let store = Store::open(&path, pepper(), false, 1)
        .unwrap()
        .with_busy_timeout(Duration::from_millis(100));
    let state =
        common::server::admin_state(Arc::new(store), Arc::new(tokio::sync::Semaphore::new(2)));
    let (addr, _rt) = common::server::admin_in_process(state);
    let bearer = format!("Bearer {}", token.expose());
    let auth = [("Authorization", bearer.as_str())];

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let read = http::send(addr, "GET", "/api/v1/users/1001", &auth, b"");
    assert_eq!(read.status, 200, "{}", read.body);
    let write = http::send(addr, "POST", "/api/v1/users/1001/unlock", &auth, b"");
    assert_eq!(write.status, 503, "{}", write.body);
    assert_eq!(write.json()["error"]["code"], "busy", "{}", write.body);
    assert_eq!(write.header("retry-after"), Some("5"));
    other.execute_batch("ROLLBACK").unwrap();
    let write = http::send(addr, "POST", "/api/v1/users/1001/unlock", &auth, b"");
    assert_eq!(write.status, 200, "{}", write.body);
}
