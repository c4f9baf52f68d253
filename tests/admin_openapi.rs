#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! `src/admin/openapi.json`: a structurally valid OpenAPI 3.1 document, true to the router in
//! both directions (every documented operation is routed, every routed method is documented),
//! with the statuses and bodies the server really answers, and served byte for byte at
//! `/api/v1/openapi.json`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use common::http::{self, Response as Reply};

use serde_json::{Value, json};
use vportal::admin::AdminState;
use vportal::store::{Pepper, Store};

const DOC: &str = include_str!("../src/admin/openapi.json");
/// The methods probed on every route.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// Every operation key a path item may hold.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// The mailbox used for `{ext}`.
const EXT: &str = "1001";

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is JSON")
}

fn token() -> String {
    "t".repeat(40)
}

// ---------------------------------------------------------------------------------------
// A server on loopback, asked with the tests' HTTP/1.1 client (`tests/common/http.rs`).

struct Server {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn start() -> Server {
    let state = AdminState {
        store: Arc::new(
            Store::open_in_memory(Pepper::from_bytes(vec![1; 32]).unwrap(), 1).unwrap(),
        ),
        calls: Arc::default(),
        metrics: None,
        metrics_auth: false,
        configured_token: Some(vportal::config::ConfiguredToken::new(token()).unwrap()),
        throttle: Default::default(),
        hash_permits: Arc::new(tokio::sync::Semaphore::new(1)),
        bulk_permits: vportal::admin::bulk_permits(),
    };
    let (addr, runtime) = common::server::admin_in_process(state);
    Server {
        addr,
        _runtime: runtime,
    }
}

/// What the tests read from an answer.
trait Answer {
    /// The body as JSON, if it is.
    fn try_json(&self) -> Option<Value>;
    /// The `error.code` of an error body.
    fn error_code(&self) -> Option<String>;
    fn is_no_such_route(&self) -> bool;
    fn is_method_not_allowed(&self) -> bool;
}

impl Answer for Reply {
    fn try_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.bytes).ok()
    }

    fn error_code(&self) -> Option<String> {
        self.try_json()?
            .pointer("/error/code")?
            .as_str()
            .map(str::to_owned)
    }

    fn is_no_such_route(&self) -> bool {
        self.status == 404 && self.error_code().as_deref() == Some("no_such_route")
    }

    fn is_method_not_allowed(&self) -> bool {
        self.status == 405
    }
}

impl Server {
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Reply {
        http::request(self.addr, method, path, token, body)
    }
}

// ---------------------------------------------------------------------------------------
// Walking the document.

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {r}"));
                value = doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("$ref {r} resolves to nothing"));
            }
            None => return value,
        }
    }
    panic!("$ref cycle");
}

/// Every `$ref` anywhere in `value`, with the JSON path where it occurs.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.to_owned(), r.to_owned()));
                    } else {
                        panic!("$ref at {at} is not a string");
                    }
                } else {
                    refs(v, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// One documented operation.
struct Operation<'a> {
    path: String,
    method: String,
    op: &'a Value,
    /// Path-item parameters followed by the operation's, resolved.
    parameters: Vec<&'a Value>,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        let item = resolve(doc, item);
        let shared: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| resolve(doc, p)).collect())
            .unwrap_or_default();
        for (key, op) in item.as_object().unwrap() {
            if !OPERATION_KEYS.contains(&key.as_str()) {
                continue;
            }
            let mut parameters = shared.clone();
            if let Some(own) = op.get("parameters").and_then(Value::as_array) {
                parameters.extend(own.iter().map(|p| resolve(doc, p)));
            }
            out.push(Operation {
                path: path.clone(),
                method: key.to_ascii_uppercase(),
                op,
                parameters,
            });
        }
    }
    out
}

/// The `{name}`s of a path template.
fn template_params(path: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("unbalanced braces") + open;
        names.push(rest[open + 1..close].to_owned());
        rest = &rest[close + 1..];
    }
    names
}

/// A concrete request path for a template.
fn concrete(path: &str) -> String {
    let mut path = path.to_owned();
    for name in template_params(&path) {
        assert_eq!(name, "ext", "only {{ext}} is substituted");
        path = path.replace("{ext}", EXT);
    }
    path
}

/// The security requirements in force for an operation.
fn security<'a>(doc: &'a Value, op: &'a Value) -> Option<&'a Vec<Value>> {
    op.get("security")
        .or_else(|| doc.get("security"))
        .and_then(Value::as_array)
}

fn needs_bearer(doc: &Value, op: &Value) -> bool {
    security(doc, op)
        .is_some_and(|reqs| !reqs.is_empty() && reqs.iter().all(|r| r.get("bearer").is_some()))
}

// ---------------------------------------------------------------------------------------
// A small JSON Schema checker for the keywords the document uses. A keyword it does not
// know fails `every_schema_keyword_is_one_the_checker_knows` rather than being skipped.

/// The keywords `check_schema` checks.
const CHECKED_KEYWORDS: [&str; 16] = [
    "$ref",
    "type",
    "const",
    "enum",
    "minimum",
    "maximum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
];
/// Keywords that only annotate: nothing to check in a value.
const ANNOTATIONS: [&str; 4] = ["description", "title", "default", "examples"];
/// The `format`s `check_schema` checks.
const FORMATS: [&str; 1] = ["date-time"];
/// The `type`s `check_schema` knows.
const TYPES: [&str; 7] = [
    "object", "array", "string", "boolean", "integer", "number", "null",
];

fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type keyword at {at}"),
        };
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "null" => value.is_null(),
            other => panic!("unknown type {other} at {at}"),
        });
        if !fits {
            errors.push(format!("{at}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        errors.push(format!("{at}: {value} is not {c}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    // Any number: a fraction or a value past i64 is held to the bounds too.
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errors.push(format!("{at}: {n} < {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errors.push(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_rfc3339(s) {
            errors.push(format!("{at}: {s:?} is not an RFC 3339 date-time"));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            let pattern = Pattern::compile(p).unwrap_or_else(|e| panic!("{at}: pattern {p}: {e}"));
            if !pattern.is_match(s) {
                errors.push(format!("{at}: {s:?} does not match {p}"));
            }
        }
        // JSON Schema counts characters (code points), not bytes.
        let len = s.chars().count();
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (len as u64) < min
        {
            errors.push(format!("{at}: {s:?} is shorter than {min}"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len as u64 > max
        {
            errors.push(format!("{at}: {s:?} is longer than {max}"));
        }
    }
    if let Some(map) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !map.contains_key(name) {
                errors.push(format!("{at}: required member {name} is missing"));
            }
        }
        for (key, v) in map {
            match props.and_then(|p| p.get(key)) {
                Some(sub) => check_schema(doc, sub, v, &format!("{at}/{key}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: member {key} is not documented"));
                }
                None => {}
            }
        }
    }
    if let Some(list) = value.as_array() {
        if let Some(items) = schema.get("items") {
            for (i, v) in list.iter().enumerate() {
                check_schema(doc, items, v, &format!("{at}/{i}"), errors);
            }
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (list.len() as u64) < min
        {
            errors.push(format!("{at}: {} items, fewer than {min}", list.len()));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && list.len() as u64 > max
        {
            errors.push(format!("{at}: {} items, more than {max}", list.len()));
        }
    }
}

/// What `check_schema` cannot check in `schema` (at `at`) and its subschemas: keywords it
/// does not know, and values of known ones it does not handle.
fn unsupported(schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        out.push(format!("{at}: a schema that is not an object: {schema}"));
        return;
    };
    for (key, v) in map {
        let at = format!("{at}/{key}");
        let problem = match key.as_str() {
            // `resolve` follows a $ref and reads nothing beside it.
            "$ref" => map
                .keys()
                .find(|k| *k != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
                .map(|k| format!("{k} beside $ref is not read")),
            "type" => {
                let names: Vec<Option<&str>> = match v {
                    Value::String(t) => vec![Some(t.as_str())],
                    Value::Array(ts) => ts.iter().map(Value::as_str).collect(),
                    _ => vec![None],
                };
                names
                    .iter()
                    .any(|t| !t.is_some_and(|t| TYPES.contains(&t)))
                    .then(|| format!("type {v}"))
            }
            "format" => (!v.as_str().is_some_and(|f| FORMATS.contains(&f)))
                .then(|| format!("format {v} is not checked")),
            "pattern" => match v.as_str().map(Pattern::compile) {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(format!("pattern {v}: {e}")),
                None => Some(format!("pattern {v} is not a string")),
            },
            "minimum" | "maximum" => (!v.is_number()).then(|| format!("{key} {v} is not a number")),
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                (!v.is_u64()).then(|| format!("{key} {v} is not a count"))
            }
            "enum" => (!v.is_array()).then(|| format!("enum {v}")),
            "required" => (!v.as_array().is_some_and(|r| r.iter().all(Value::is_string)))
                .then(|| format!("required {v}")),
            "additionalProperties" => {
                (!v.is_boolean()).then(|| format!("additionalProperties {v} is not a boolean"))
            }
            "properties" => match v.as_object() {
                Some(props) => {
                    for (name, sub) in props {
                        unsupported(sub, &format!("{at}/{name}"), out);
                    }
                    None
                }
                None => Some(format!("properties {v}")),
            },
            "items" => {
                unsupported(v, &at, out);
                None
            }
            k if CHECKED_KEYWORDS.contains(&k) || ANNOTATIONS.contains(&k) => None,
            k => Some(format!("keyword {k} is not known to the checker")),
        };
        if let Some(problem) = problem {
            out.push(format!("{at}: {problem}"));
        }
    }
}

/// Every schema in the document, with where it is: the components' schemas and each
/// `schema` of a parameter, header or media type (their subschemas are `unsupported`'s).
fn schemas<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{at}/{key}");
                if key == "schema" {
                    out.push((here, v));
                } else if at == "#/components" && key == "schemas" {
                    for (name, schema) in v.as_object().expect("components.schemas") {
                        out.push((format!("{here}/{name}"), schema));
                    }
                } else {
                    schemas(v, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                schemas(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A regular expression of the few forms a `pattern` here takes: `^` and `$` anchors,
/// literals, `.`, `\d`, bracket classes with ranges, each with an optional `?`, `*`, `+`
/// or `{n}`, `{n,}`, `{n,m}`. Anything else (groups, alternation, other escapes) is refused
/// when compiled, not matched wrongly. Unanchored, it matches anywhere in the string, as
/// JSON Schema's ECMA-262 patterns do.
#[derive(Debug)]
struct Pattern {
    anchored_start: bool,
    anchored_end: bool,
    pieces: Vec<(Atom, usize, Option<usize>)>,
}

#[derive(Debug)]
enum Atom {
    Any,
    /// Inclusive character ranges, or their complement.
    Class(bool, Vec<(char, char)>),
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Self::Any => !matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}'),
            Self::Class(negated, ranges) => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated
            }
        }
    }
}

impl Pattern {
    fn compile(pattern: &str) -> Result<Self, String> {
        let mut chars = pattern.chars().peekable();
        let anchored_start = chars.next_if_eq(&'^').is_some();
        let mut anchored_end = false;
        let mut pieces = Vec::new();
        while let Some(c) = chars.next() {
            if anchored_end {
                return Err("something after $".into());
            }
            let atom = match c {
                '$' => {
                    anchored_end = true;
                    continue;
                }
                '.' => Atom::Any,
                '\\' => match chars.next() {
                    Some('d') => Atom::Class(false, vec![('0', '9')]),
                    Some(e) if e.is_ascii_punctuation() => Atom::Class(false, vec![(e, e)]),
                    e => return Err(format!("escape \\{e:?} is not supported")),
                },
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let lo = match chars.next() {
                            None => return Err("unclosed [".into()),
                            Some(']') if !ranges.is_empty() => break,
                            Some('\\') => match chars.next() {
                                Some('d') => {
                                    ranges.push(('0', '9'));
                                    continue;
                                }
                                Some(e) if e.is_ascii_punctuation() => e,
                                e => return Err(format!("escape \\{e:?} is not supported")),
                            },
                            Some('[') => return Err("[ in a class is not supported".into()),
                            Some(c) => c,
                        };
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') => {
                                    ranges.extend([(lo, lo), ('-', '-')]);
                                    break;
                                }
                                Some(hi) if hi != '\\' && hi != '[' && lo <= hi => {
                                    ranges.push((lo, hi));
                                }
                                hi => return Err(format!("range {lo}-{hi:?}")),
                            }
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Atom::Class(negated, ranges)
                }
                '(' | ')' | '|' | '?' | '*' | '+' | '{' | '}' | ']' => {
                    return Err(format!("{c:?} is not supported here"));
                }
                c => Atom::Class(false, vec![(c, c)]),
            };
            let (min, max) = match chars.peek() {
                Some('?') => (0, Some(1)),
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('{') => {
                    chars.next();
                    let mut spec = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => spec.push(c),
                            None => return Err("unclosed {".into()),
                        }
                    }
                    let count =
                        |t: &str| t.parse::<usize>().map_err(|e| format!("{{{spec}}}: {e}"));
                    let bounds = match spec.split_once(',') {
                        None => (count(&spec)?, Some(count(&spec)?)),
                        Some((lo, "")) => (count(lo)?, None),
                        Some((lo, hi)) => (count(lo)?, Some(count(hi)?)),
                    };
                    if bounds.1.is_some_and(|hi| hi < bounds.0) {
                        return Err(format!("{{{spec}}}"));
                    }
                    pieces.push((atom, bounds.0, bounds.1));
                    if matches!(chars.peek(), Some('?' | '*' | '+' | '{')) {
                        return Err("a quantifier after a quantifier".into());
                    }
                    continue;
                }
                _ => (1, Some(1)),
            };
            if (min, max) != (1, Some(1)) {
                chars.next();
                if matches!(chars.peek(), Some('?' | '*' | '+' | '{')) {
                    return Err("a quantifier after a quantifier".into());
                }
            }
            pieces.push((atom, min, max));
        }
        Ok(Self {
            anchored_start,
            anchored_end,
            pieces,
        })
    }

    fn is_match(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let last_start = if self.anchored_start { 0 } else { chars.len() };
        (0..=last_start).any(|i| self.match_from(0, &chars, i))
    }

    /// Whether pieces `k..` match `chars` from `i` (greedy, backtracking).
    fn match_from(&self, k: usize, chars: &[char], i: usize) -> bool {
        let Some((atom, min, max)) = self.pieces.get(k) else {
            return !self.anchored_end || i == chars.len();
        };
        let mut n = 0;
        while max.is_none_or(|max| n < max) && chars.get(i + n).is_some_and(|&c| atom.matches(c)) {
            n += 1;
        }
        n >= *min
            && (*min..=n)
                .rev()
                .any(|taken| self.match_from(k + 1, chars, i + taken))
    }
}

/// `2026-11-27T12:17:55Z` and the like.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .into_iter()
            .all(|r| b[r].iter().all(u8::is_ascii_digit))
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains(['+', '-']))
}

#[test]
fn the_schema_checker_catches_what_it_should() {
    let doc = doc();
    let user = json!({ "$ref": "#/components/schemas/User" });
    let mut errors = Vec::new();
    check_schema(
        &doc,
        &user,
        &json!({ "extension": "1001" }),
        "",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("created_at")),
        "{errors:?}"
    );
    let mut errors = Vec::new();
    check_schema(
        &doc,
        &json!({ "$ref": "#/components/schemas/Issued" }),
        &json!({ "extension": "10a1", "temporary": "yes", "temporary_expires_at": "soon", "pin": 1 }),
        "",
        &mut errors,
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
    // Too long: the pattern and maxLength both say so. Empty: pattern and minLength.
    for (extension, keyword) in [
        ("1234567890123456", "longer than 15"),
        ("", "shorter than 1"),
    ] {
        let mut errors = Vec::new();
        check_schema(
            &doc,
            &json!({ "$ref": "#/components/schemas/Issued" }),
            &json!({ "extension": extension, "temporary": true, "temporary_expires_at": null }),
            "",
            &mut errors,
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains(keyword)), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("does not match")),
            "{errors:?}"
        );
    }
    // minItems (and maxItems, which the document does not use).
    let list = json!({ "type": ["array", "null"], "items": { "type": "string" }, "minItems": 1, "maxItems": 2 });
    for (value, problems) in [
        (json!([]), 1),
        (json!(["a"]), 0),
        (json!(null), 0),
        (json!(["a", "b", "c"]), 1),
        (json!([1]), 1),
    ] {
        let mut errors = Vec::new();
        check_schema(&doc, &list, &value, "", &mut errors);
        assert_eq!(errors.len(), problems, "{value}: {errors:?}");
    }
    // Lengths in characters, as JSON Schema counts them.
    let mut errors = Vec::new();
    check_schema(
        &doc,
        &json!({ "type": "string", "maxLength": 2 }),
        &json!("éé"),
        "",
        &mut errors,
    );
    assert_eq!(errors, Vec::<String>::new());
    assert!(is_rfc3339("2026-11-27T12:17:55Z"));
    assert!(!is_rfc3339("2026-11-27 12:17"));
}

#[test]
fn the_pattern_matcher_matches_as_a_regular_expression_would() {
    let matches = |p: &str, s: &str| Pattern::compile(p).unwrap().is_match(s);
    let extension = "^[0-9]{1,15}$";
    assert!(matches(extension, "1001"));
    assert!(matches(extension, "123456789012345"));
    for s in ["", "1234567890123456", "10a1", " 1001", "1001\n", "١٠٠١"] {
        assert!(!matches(extension, s), "{s:?}");
    }
    // Unanchored: anywhere in the string.
    assert!(matches("[0-9]{2}", "ab12cd"));
    assert!(!matches("[0-9]{2}", "a1b2"));
    assert!(matches("^ab?c*d+$", "adddd") && matches("^ab?c*d+$", "abccd"));
    assert!(!matches("^ab?c*d+$", "abbd") && !matches("^ab?c*d+$", "abc"));
    assert!(matches("^[^a-c]{2,}$", "xyz") && !matches("^[^a-c]{2,}$", "xaz"));
    assert!(matches(r"^\d+\.\d$", "12.5") && !matches(r"^\d+\.\d$", "12x5"));
    assert!(matches("^[a-]$", "-") && matches("^.x$", "ax") && !matches("^.x$", "x"));
    // Backtracking: the greedy run gives back what the rest needs.
    assert!(matches("^[0-9]*1$", "1101"));
    // What it does not understand is refused, not matched wrongly.
    for p in [
        "^(a|b)$", "a|b", r"\w+", "a{2", "[a", "a**", "a{3,1}", "^a$b",
    ] {
        assert!(Pattern::compile(p).is_err(), "{p}");
    }
}

/// The checker skips nothing silently: every keyword of every schema in the document is one
/// it checks or a mere annotation, with values it handles.
#[test]
fn every_schema_keyword_is_one_the_checker_knows() {
    let doc = doc();
    let mut all = Vec::new();
    schemas(&doc, "#", &mut all);
    assert!(all.len() > 20, "{} schemas", all.len());
    let mut problems = Vec::new();
    for (at, schema) in &all {
        unsupported(schema, at, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // And it would say so.
    let mut problems = Vec::new();
    unsupported(
        &json!({ "type": "object", "properties": { "a": { "type": "string", "oneOf": [], "format": "uuid" } }, "additionalProperties": { "type": "string" } }),
        "#/x",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let mut problems = Vec::new();
    unsupported(
        &json!({ "type": "array", "items": { "pattern": "(a|b)", "minLength": -1 }, "uniqueItems": true }),
        "#/y",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

// ---------------------------------------------------------------------------------------
// The document on its own.

#[test]
fn document_is_valid_openapi_3_1() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1"), "openapi {version}");
    for key in ["title", "version"] {
        let v = doc["info"][key].as_str().unwrap_or_default();
        assert!(!v.trim().is_empty(), "info.{key} is missing");
    }
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));

    // Every $ref resolves to a components entry.
    let mut all = Vec::new();
    refs(&doc, "#", &mut all);
    assert!(!all.is_empty());
    for (at, r) in &all {
        assert!(
            r.starts_with("#/components/"),
            "$ref {r} at {at} is not into components"
        );
        assert!(
            doc.pointer(&r[1..]).is_some(),
            "$ref {r} at {at} resolves to nothing"
        );
    }

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "User",
        "Issued",
        "Error",
        "AuditEvent",
        "Report",
        "Policy",
        "ActiveCall",
    ] {
        assert!(
            schemas[name]["type"] == "object",
            "components.schemas.{name} is missing or not an object"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    let ops = operations(&doc);
    assert!(!ops.is_empty());
    let mut ids = BTreeSet::new();
    for o in &ops {
        let name = format!("{} {}", o.method, o.path);
        assert!(o.path.starts_with('/'), "{name}");
        if let Some(id) = o.op.get("operationId") {
            assert!(
                ids.insert(id.as_str().unwrap().to_owned()),
                "{name}: operationId {id} twice"
            );
        }

        // Responses: present, status keys, each with a description.
        let responses = o.op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no responses"));
        assert!(!responses.is_empty(), "{name} has no responses");
        for (status, response) in responses {
            let valid_key = status == "default"
                || (status.len() == 3
                    && status.as_bytes()[0].is_ascii_digit()
                    && (status[1..].bytes().all(|b| b.is_ascii_digit()) || &status[1..] == "XX"));
            assert!(valid_key, "{name}: response key {status}");
            let response = resolve(&doc, response);
            assert!(
                response["description"].is_string(),
                "{name} {status} has no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{name} {status} is not an Error"
                );
            }
        }

        // Parameters: valid locations, and path templates and path parameters agree.
        let mut seen = BTreeSet::new();
        for p in &o.parameters {
            let pname = p["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: parameter without name"));
            let location = p["in"].as_str().unwrap();
            assert!(
                ["query", "header", "path", "cookie"].contains(&location),
                "{name}: parameter {pname} in {location}"
            );
            assert!(seen.insert((pname, location)), "{name}: {pname} twice");
            assert!(
                p.get("schema").is_some() || p.get("content").is_some(),
                "{name}: {pname} has no schema"
            );
            if location == "path" {
                assert_eq!(
                    p["required"], true,
                    "{name}: path parameter {pname} not required"
                );
            }
        }
        let template: BTreeSet<String> = template_params(&o.path).into_iter().collect();
        let declared: BTreeSet<String> = o
            .parameters
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(template, declared, "{name}: path parameters");

        // Request bodies: JSON bodies are closed objects, as the handlers refuse unknown fields.
        if let Some(body) = o.op.get("requestBody") {
            let body = resolve(&doc, body);
            let content = body["content"].as_object().expect("requestBody.content");
            assert!(!content.is_empty(), "{name}: empty requestBody.content");
            if let Some(media) = content.get("application/json") {
                let schema = resolve(&doc, &media["schema"]);
                assert_eq!(schema["type"], "object", "{name}: body");
                assert_eq!(
                    schema["additionalProperties"], false,
                    "{name}: the body must refuse unknown members"
                );
            }
        }

        // Security: bearer on /api/v1, none on /healthz and /metrics; schemes exist.
        for requirement in security(&doc, o.op).into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{name}: no scheme {scheme}");
            }
        }
        if o.path.starts_with("/api/v1/") {
            assert!(
                needs_bearer(&doc, o.op),
                "{name} does not require the bearer token"
            );
            assert!(
                responses.contains_key("401"),
                "{name} does not document 401"
            );
        } else {
            assert!(
                security(&doc, o.op).is_none_or(Vec::is_empty),
                "{name} must not require a token"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The document against the running router.

/// The example body of an operation, or an empty one of its media type.
fn example_body(op: &Value) -> Option<(String, Vec<u8>)> {
    let content = op.get("requestBody")?["content"].as_object()?;
    let (media, spec) = content.iter().next()?;
    let bytes = match spec.get("example") {
        Some(Value::String(s)) if media != "application/json" => s.clone().into_bytes(),
        Some(v) => serde_json::to_vec(v).unwrap(),
        None if media == "application/json" => b"{}".to_vec(),
        None => Vec::new(),
    };
    Some((media.clone(), bytes))
}

fn create_mailbox(server: &Server) {
    let token = token();
    let reply = server.request(
        "POST",
        "/api/v1/users",
        Some(&token),
        Some((
            "application/json",
            format!(r#"{{"extension":"{EXT}"}}"#).as_bytes(),
        )),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
}

#[test]
fn every_documented_operation_is_routed_and_answers_as_documented() {
    let doc = doc();
    let server = start();
    create_mailbox(&server);
    let token = token();

    // Deletions last, so the other operations find the mailbox.
    let mut ops = operations(&doc);
    ops.sort_by_key(|o| (o.method == "DELETE", o.path.clone(), o.method.clone()));
    let mut answered = BTreeMap::new();
    for o in &ops {
        let name = format!("{} {}", o.method, o.path);
        let path = concrete(&o.path);
        let body = example_body(o.op);
        let body_ref = body.as_ref().map(|(t, b)| (t.as_str(), b.as_slice()));

        // Without a token: 401 exactly where the document asks for one.
        let anonymous = server.request(&o.method, &path, None, body_ref);
        if needs_bearer(&doc, o.op) {
            assert_eq!(
                anonymous.status, 401,
                "{name} without a token: {anonymous:?}"
            );
            assert_eq!(anonymous.error_code().as_deref(), Some("unauthorized"));
            assert!(anonymous.header("www-authenticate").is_some());
        } else {
            assert_ne!(anonymous.status, 401, "{name} wants a token: {anonymous:?}");
        }

        let reply = server.request(&o.method, &path, Some(&token), body_ref);
        assert!(!reply.is_no_such_route(), "{name} is not routed: {reply:?}");
        assert!(
            !reply.is_method_not_allowed(),
            "{name}: the route does not take the method: {reply:?}"
        );

        // The status is documented, and the body fits the documented schema.
        let status = reply.status.to_string();
        let documented = o.op["responses"]
            .get(&status)
            .unwrap_or_else(|| panic!("{name} answered undocumented {status}: {reply:?}"));
        let documented = resolve(&doc, documented);
        match documented.get("content").and_then(Value::as_object) {
            None => assert!(
                reply.body.is_empty(),
                "{name} {status} has an undocumented body"
            ),
            Some(content) => {
                let content_type = reply.header("content-type").unwrap_or_default();
                let media = content_type.split(';').next().unwrap().trim();
                let spec = content
                    .get(media)
                    .unwrap_or_else(|| panic!("{name} {status}: undocumented {content_type}"));
                if media == "application/json" {
                    let value = reply
                        .try_json()
                        .unwrap_or_else(|| panic!("{name} {status}: not JSON"));
                    let mut errors = Vec::new();
                    check_schema(&doc, &spec["schema"], &value, "", &mut errors);
                    assert!(errors.is_empty(), "{name} {status}: {errors:#?}\n{value:#}");
                }
            }
        }
        answered.insert(name, reply.status);
    }

    // The examples are good requests: the operations did their work.
    for (name, status) in [
        ("POST /api/v1/users", 201),
        ("GET /api/v1/users/{ext}", 200),
        ("POST /api/v1/users/{ext}/passcode", 200),
        ("POST /api/v1/users/{ext}/unlock", 200),
        ("POST /api/v1/users/reset", 200),
        ("POST /api/v1/users/import", 200),
        ("POST /api/v1/policy/check", 200),
        ("GET /api/v1/audit", 200),
        ("DELETE /api/v1/users/{ext}", 204),
        ("GET /healthz", 200),
        ("GET /api/v1/openapi.json", 200),
    ] {
        assert_eq!(answered.get(name), Some(&status), "{name}: {answered:?}");
    }
}

#[test]
fn every_routed_method_is_documented() {
    let doc = doc();
    let server = start();
    create_mailbox(&server);
    let token = token();

    // The probes can tell: an unknown route and an unknown method are recognised.
    let unknown = server.request("GET", "/api/v1/nothing-here", Some(&token), None);
    assert!(unknown.is_no_such_route(), "{unknown:?}");
    let wrong = server.request("PUT", "/api/v1/users", Some(&token), None);
    assert!(wrong.is_method_not_allowed(), "{wrong:?}");
    assert_eq!(wrong.error_code().as_deref(), Some("method_not_allowed"));

    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: Vec<&str> = vportal::admin::routes()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let routed_set: BTreeSet<String> = routed.iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(routed.len(), routed_set.len(), "a path is routed twice");
    assert_eq!(
        documented, routed_set,
        "documented paths versus routed paths"
    );

    for path in routed {
        // HEAD is answered wherever GET is (RFC 9110 §9.3.2), like GET without the body,
        // and refused elsewhere; the document says so once rather than per route.
        let head = server.request("HEAD", &concrete(path), Some(&token), None);
        if doc["paths"][path].get("get").is_some() {
            let get = server.request("GET", &concrete(path), Some(&token), None);
            assert_eq!(
                (head.status, head.header("content-type")),
                (get.status, get.header("content-type")),
                "HEAD {path}"
            );
            assert!(head.bytes.is_empty(), "HEAD {path} sent a body");
        } else {
            assert!(head.is_method_not_allowed(), "HEAD {path}: {head:?}");
        }
        for method in METHODS {
            let reply = server.request(method, &concrete(path), Some(&token), None);
            assert!(!reply.is_no_such_route(), "{method} {path}: {reply:?}");
            let has = doc["paths"][path]
                .get(method.to_ascii_lowercase())
                .is_some();
            if reply.is_method_not_allowed() {
                assert_eq!(reply.error_code().as_deref(), Some("method_not_allowed"));
                assert!(!has, "{method} {path} is documented but not routed");
            } else {
                assert!(
                    has,
                    "{method} {path} is routed ({}) but not documented",
                    reply.status
                );
            }
        }
    }
}

#[test]
fn the_served_document_is_the_file() {
    let server = start();
    let token = token();
    let reply = server.request("GET", "/api/v1/openapi.json", Some(&token), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply
            .header("content-type")
            .map(|v| v.split(';').next().unwrap().trim()),
        Some("application/json")
    );
    assert!(
        reply.bytes == DOC.as_bytes(),
        "the served document differs from the file"
    );
    let anonymous = server.request("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(anonymous.status, 401);
}

#[test]
fn documented_body_limits_hold() {
    let doc = doc();
    let server = start();
    let token = token();
    // JSON bodies: 64 KiB at most.
    let big = format!(
        r#"{{"extension":"1001","name":"{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let reply = server.request(
        "POST",
        "/api/v1/users",
        Some(&token),
        Some(("application/json", big.as_bytes())),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.error_code().as_deref(), Some("payload_too_large"));
    assert!(doc["paths"]["/api/v1/users"]["post"]["responses"]["413"].is_object());
    // CSV imports: more than the JSON limit is read (rows are then judged), 4 MiB is not.
    let csv = format!("extension,name\n1001,{}\n", "a".repeat(70 * 1024));
    let reply = server.request(
        "POST",
        "/api/v1/users/import",
        Some(&token),
        Some(("text/csv", csv.as_bytes())),
    );
    assert_ne!(reply.status, 413, "{reply:?}");
    let import = &doc["paths"]["/api/v1/users/import"]["post"]["responses"];
    assert!(import[reply.status.to_string()].is_object(), "{reply:?}");
    let huge = format!("extension,name\n1001,{}\n", "a".repeat(4 * 1024 * 1024));
    let reply = server.request(
        "POST",
        "/api/v1/users/import",
        Some(&token),
        Some(("text/csv", huge.as_bytes())),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(import["413"].is_object());
}
