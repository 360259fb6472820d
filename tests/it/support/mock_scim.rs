//! An in-memory, stateful SCIM 2.0 service provider (a subset of RFC 7643
//! schemas and RFC 7644 protocol), served by axum on a loopback port: the
//! other side of the `kind = "scim"` adapter, for tests that check what the
//! adapter sends and what state the provider ends up in.
//!
//! It is deliberately strict: filters are parsed (never evaluated beyond one
//! `attribute eq "value"` comparison), bodies are validated, errors are SCIM
//! Error messages with the RFC's `scimType`, and every request is recorded as
//! received.
//!
//! # API served (relative to [`MockScim::url`], `http://127.0.0.1:PORT/scim/v2`)
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /Users?filter=<attr> eq "<v>"&startIndex=&count=&attributes=&excludedAttributes=` | 200 ListResponse |
//! | `GET /Users/{id}` | 200 User, 404 |
//! | `POST /Users` | 201 User with `id` and `meta` (and `Location`), 409 `uniqueness` (userName, case-insensitive) |
//! | `PUT /Users/{id}` | 200 User, 404, 409 |
//! | `PATCH /Users/{id}` (PatchOp `add` / `replace` / `remove`, with or without `path`) | 200 User, 404, 400, 409 |
//! | `DELETE /Users/{id}` (also leaves every group) | 204, 404 |
//! | `GET /Groups?...` (same parameters) | 200 ListResponse |
//! | `GET /Groups/{id}` | 200 Group with `members: [{value, display, type, $ref}]`, 404 |
//! | `POST /Groups` | 201 Group, 409 `uniqueness` (displayName, case-insensitive) |
//! | `PUT /Groups/{id}`, `PATCH /Groups/{id}`, `DELETE /Groups/{id}` | 200 / 200 / 204, 404 |
//!
//! Answers carry `Content-Type: application/scim+json`. Errors are
//! `{"schemas": [Error], "status": "409", "scimType": "uniqueness", "detail": ...}`.
//!
//! Filters: exactly one comparison `attrPath SP "eq" SP "quoted value"`; the
//! value is a JSON string literal (`\"`, `\\`, `\uXXXX`, ...). The attribute
//! path may be `attr`, `attr.sub` or URN-qualified. Anything else (`or`,
//! `and`, `not`, parentheses, other operators, an unquoted value, text after
//! the value) is a 400 `invalidFilter`. `id` and `externalId` compare
//! case-exactly, every other attribute case-insensitively (as `userName` and
//! `displayName` are in RFC 7643).
//!
//! Paging: `startIndex` counts from 1 (smaller values mean 1), `count`
//! defaults to 100 and is clamped to 0..=1000; the answer has `totalResults`,
//! `itemsPerPage`, `startIndex` and `Resources`. [`MockScim::set_page_cap`]
//! makes pages shorter than asked and [`MockScim::set_omit_items_per_page`]
//! leaves `itemsPerPage` out, as some providers do.
//!
//! `attributes` / `excludedAttributes` (comma-separated paths) project the
//! resources of GET answers; `id` and `schemas` are always returned.
//!
//! PATCH is atomic: either every operation applies or none. A `remove` whose
//! filter matches nothing (`members[value eq "not-a-member"]`) is a 400
//! `noTarget`, as RFC 7644 §3.5.2 says. `id`, `meta` (and a User's `groups`)
//! are read-only (400 `mutability`).
//!
//! # Faults, authentication, request log
//!
//! `MockScim` is a [`Double`]: it derefs to its `Intercept`, the same
//! test-only layer as `MockTarget`'s. Every request is recorded, then come
//! scripted faults (`fail_next`), the authentication rule (`require_bearer`,
//! 401) and route failures, before the API sees it. Refusals are SCIM Error
//! messages.
//!
//! The state is a [`Shared`] `Store`: the lock is only ever taken inside a
//! synchronous closure, so it is never held across an `.await`.
//!
//! # Example
//!
//! ```ignore
//! let scim = MockScim::start().await?;
//! scim.add_user("jdoe", "John", "Doe", "jdoe@example.edu");
//! scim.add_group("Staff");
//! // ... point a `kind = "scim"` provisioner's url_prefix at scim.url() ...
//! assert!(scim.wait_until(Duration::from_secs(5), |m| m.members("Staff") == ["jdoe"]).await);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use provisioner::demo::api::now_rfc3339;
use provisioner::demo::shared::Shared;
use provisioner::target::scim::mapping::check_name;
use serde_json::{json, Map, Value};

use super::double::Double;
use super::intercept::{Refusal, MAX_BODY};

/// The double's own tests.
mod tests;

/// The core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The ListResponse message URN.
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The PatchOp message URN.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The Error message URN.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The media type of every answer.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Where the endpoints live on the server; part of [`MockScim::url`].
pub const BASE_PATH: &str = "/scim/v2";

/// `count` when a list request names none.
const DEFAULT_COUNT: usize = 100;
/// Largest `count` honoured (larger values are clamped).
const MAX_COUNT: usize = 1000;

/// Attributes of a User that clients cannot set.
const USER_READ_ONLY: &[&str] = &["id", "meta", "groups"];
/// Attributes of a Group that clients cannot set.
const GROUP_READ_ONLY: &[&str] = &["id", "meta"];

// ===================================================================== errors

/// A SCIM error answer (RFC 7644 §3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn invalid_filter(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("invalidFilter"), detail)
    }

    fn invalid_value(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("invalidValue"), detail)
    }

    fn invalid_syntax(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("invalidSyntax"), detail)
    }

    fn invalid_path(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("invalidPath"), detail)
    }

    fn no_target(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("noTarget"), detail)
    }

    fn mutability(detail: impl Into<String>) -> Self {
        ScimError::new(400, Some("mutability"), detail)
    }

    fn uniqueness(detail: impl Into<String>) -> Self {
        ScimError::new(409, Some("uniqueness"), detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        ScimError::new(404, None, detail)
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Value::Object(obj)) = (self.scim_type, &mut body) {
            obj.insert("scimType".into(), Value::String(t.into()));
        }
        body
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiOk {
    pub status: u16,
    pub body: Option<Value>,
    /// `Location` header (creates).
    pub location: Option<String>,
}

impl ApiOk {
    fn json(status: u16, body: Value) -> Self {
        ApiOk {
            status,
            body: Some(body),
            location: None,
        }
    }

    fn created(body: Value) -> Self {
        let location = body
            .pointer("/meta/location")
            .and_then(Value::as_str)
            .map(str::to_string);
        ApiOk {
            status: 201,
            body: Some(body),
            location,
        }
    }

    fn no_content() -> Self {
        ApiOk {
            status: 204,
            body: None,
            location: None,
        }
    }
}

pub(crate) type ApiResult = Result<ApiOk, ScimError>;

// ================================================================ filters

/// An attribute path: `attr`, `attr.sub`, `urn:...:attr[.sub]`. The core
/// schemas' URNs are dropped (`urn:...:core:2.0:User:userName` is `userName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttrRef {
    pub urn: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrRef {
    fn simple(attr: &str) -> Self {
        AttrRef {
            urn: None,
            attr: attr.to_string(),
            sub: None,
        }
    }
}

impl fmt::Display for AttrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// The one filter form served: `attr eq "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub attr: AttrRef,
    pub value: String,
}

/// Comparison operators of RFC 7644 §3.4.2.2 that are recognised but not served.
const OTHER_OPERATORS: &[&str] = &["ne", "co", "sw", "ew", "pr", "gt", "ge", "lt", "le"];

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses a filter of the one form served: `attrPath SP "eq" SP "string"`.
pub(crate) fn parse_filter(text: &str) -> Result<Filter, ScimError> {
    let bad = |why: String| {
        ScimError::invalid_filter(format!(
            "filter `{text}`: {why}; only `attribute eq \"value\"` is supported"
        ))
    };
    let s = text.trim_matches(is_ws);
    if s.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let Some(end) = s.find(is_ws) else {
        return Err(bad("no operator".into()));
    };
    let (path, rest) = s.split_at(end);
    let attr = parse_attr_path(path).map_err(bad)?;
    let rest = rest.trim_start_matches(is_ws);
    let op_end = rest.find(is_ws).unwrap_or(rest.len());
    let (op, rest) = rest.split_at(op_end);
    if !op.eq_ignore_ascii_case("eq") {
        let lower = op.to_ascii_lowercase();
        return Err(bad(if OTHER_OPERATORS.contains(&lower.as_str()) {
            format!("operator `{op}` is not supported")
        } else {
            format!("`{op}` is not a comparison operator")
        }));
    }
    let rest = rest.trim_start_matches(is_ws);
    let (value, used) = parse_string_literal(rest).map_err(bad)?;
    let tail = rest[used..].trim_matches(is_ws);
    if !tail.is_empty() {
        return Err(bad(format!(
            "unexpected `{tail}` after the value (`and`, `or` and `not` are not supported)"
        )));
    }
    Ok(Filter { attr, value })
}

/// A JSON string literal at the start of `s`: its value and its length in bytes.
fn parse_string_literal(s: &str) -> Result<(String, usize), String> {
    if !s.starts_with('"') {
        return Err("the value must be a double-quoted string".into());
    }
    let bytes = s.as_bytes();
    let mut i = 1;
    loop {
        match bytes.get(i) {
            None => return Err("the string value is not terminated".into()),
            Some(b'\\') => i += 2,
            Some(b'"') => break,
            Some(_) => i += 1,
        }
    }
    // `i` is the closing quote, an ASCII byte, so a char boundary.
    let literal = &s[..=i];
    let value: String =
        serde_json::from_str(literal).map_err(|e| format!("bad string value {literal}: {e}"))?;
    Ok((value, i + 1))
}

/// [`check_name`], its error naming the whole path.
fn check_name_in(name: &str, whole: &str) -> Result<(), String> {
    check_name(name).map_err(|e| format!("in `{whole}`: {e}"))
}

/// `attr`, `attr.sub`, `urn:...:attr`, `urn:...:attr.sub`.
pub(crate) fn parse_attr_path(path: &str) -> Result<AttrRef, String> {
    let is_urn = path
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
    let (urn, rest) = if is_urn {
        let Some((urn, rest)) = path.rsplit_once(':') else {
            return Err(format!("`{path}` is not an attribute path"));
        };
        let urn_ok = urn.split(':').count() >= 3
            && urn.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '+' | '%')
            });
        if !urn_ok {
            return Err(format!("`{urn}` is not a schema URN"));
        }
        let core = urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA);
        ((!core).then(|| urn.to_string()), rest)
    } else {
        (None, path)
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    check_name_in(attr, path)?;
    if let Some(sub) = sub {
        check_name_in(sub, path)?;
    }
    Ok(AttrRef {
        urn,
        attr: attr.to_string(),
        sub: sub.map(str::to_string),
    })
}

fn get_ci<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn find_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// The string values at `attr` in `resource`: a multi-valued attribute
/// without a sub-attribute gives its entries' `value`s.
fn values_at(resource: &Value, attr: &AttrRef) -> Vec<String> {
    let container = match &attr.urn {
        Some(urn) => get_ci(resource, urn),
        None => Some(resource),
    };
    let Some(v) = container.and_then(|c| get_ci(c, &attr.attr)) else {
        return Vec::new();
    };
    let string = |v: &Value| v.as_str().map(str::to_string);
    match (&attr.sub, v) {
        (None, Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::Object(_) => get_ci(i, "value").and_then(string),
                other => string(other),
            })
            .collect(),
        (None, other) => string(other).into_iter().collect(),
        (Some(sub), Value::Array(items)) => items
            .iter()
            .filter_map(|i| get_ci(i, sub))
            .filter_map(string)
            .collect(),
        (Some(sub), obj) => get_ci(obj, sub).and_then(string).into_iter().collect(),
    }
}

fn is_case_exact(attr: &AttrRef) -> bool {
    attr.urn.is_none()
        && attr.sub.is_none()
        && (attr.attr.eq_ignore_ascii_case("id") || attr.attr.eq_ignore_ascii_case("externalId"))
}

fn filter_matches(resource: &Value, filter: &Filter, exact: bool) -> bool {
    values_at(resource, &filter.attr).iter().any(|v| {
        if exact {
            *v == filter.value
        } else {
            v.to_lowercase() == filter.value.to_lowercase()
        }
    })
}

// ============================================================ list queries

/// `attributes` / `excludedAttributes` of a GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Projection {
    pub attributes: Option<Vec<AttrRef>>,
    pub excluded: Vec<AttrRef>,
}

/// The parameters of a list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    pub filter: Option<Filter>,
    /// 1-based.
    pub start: usize,
    pub count: usize,
    pub projection: Projection,
}

fn parse_attr_list(name: &str, value: &str) -> Result<Vec<AttrRef>, ScimError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_attr_path(s).map_err(|e| ScimError::invalid_value(format!("`{name}`: {e}"))))
        .collect()
}

fn parse_int(name: &str, value: &str) -> Result<i64, ScimError> {
    value.trim().parse::<i64>().map_err(|_| {
        ScimError::invalid_value(format!("`{name}` must be an integer, not `{value}`"))
    })
}

/// Reads a raw (still encoded) query string. Unknown parameters are ignored;
/// when one is repeated, the last one counts.
pub(crate) fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ScimError> {
    let mut q = ListQuery {
        filter: None,
        start: 1,
        count: DEFAULT_COUNT,
        projection: Projection::default(),
    };
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "filter" => q.filter = Some(parse_filter(&value)?),
            "startIndex" => {
                q.start = usize::try_from(parse_int("startIndex", &value)?.max(1)).unwrap_or(1);
            }
            "count" => {
                let n = parse_int("count", &value)?.clamp(0, MAX_COUNT as i64);
                q.count = usize::try_from(n).unwrap_or(0);
            }
            "attributes" => {
                q.projection.attributes = Some(parse_attr_list("attributes", &value)?);
            }
            "excludedAttributes" => {
                q.projection.excluded = parse_attr_list("excludedAttributes", &value)?;
            }
            _ => {}
        }
    }
    Ok(q)
}

fn parse_projection(raw: Option<&str>) -> Result<Projection, ScimError> {
    // The list parser reads the same two parameters; a filter or paging on a
    // single resource is meaningless but harmless.
    let mut projection = Projection::default();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "attributes" => projection.attributes = Some(parse_attr_list("attributes", &value)?),
            "excludedAttributes" => {
                projection.excluded = parse_attr_list("excludedAttributes", &value)?;
            }
            _ => {}
        }
    }
    Ok(projection)
}

/// Keeps (or drops) the attributes the projection names; `id` and `schemas`
/// are always returned.
fn project(resource: &Value, p: &Projection) -> Value {
    let Value::Object(src) = resource else {
        return resource.clone();
    };
    let mut out = match &p.attributes {
        None => src.clone(),
        Some(wanted) => {
            let mut out = Map::new();
            for key in ["id", "schemas"] {
                if let Some(v) = src.get(key) {
                    out.insert(key.to_string(), v.clone());
                }
            }
            for a in wanted {
                copy_attr(src, &mut out, a);
            }
            out
        }
    };
    for a in &p.excluded {
        let always = a.urn.is_none()
            && a.sub.is_none()
            && (a.attr.eq_ignore_ascii_case("id") || a.attr.eq_ignore_ascii_case("schemas"));
        if !always {
            drop_attr(&mut out, a);
        }
    }
    Value::Object(out)
}

fn copy_attr(src: &Map<String, Value>, dst: &mut Map<String, Value>, a: &AttrRef) {
    let (src, dst) = match &a.urn {
        None => (src, dst),
        Some(urn) => {
            let Some(key) = find_key(src, urn) else {
                return;
            };
            let Some(Value::Object(ext)) = src.get(&key) else {
                return;
            };
            let slot = dst.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(slot) = slot else {
                return;
            };
            (ext, slot)
        }
    };
    let Some(key) = find_key(src, &a.attr) else {
        return;
    };
    let Some(value) = src.get(&key) else {
        return;
    };
    match (&a.sub, value) {
        (None, v) => {
            dst.insert(key, v.clone());
        }
        (Some(sub), Value::Object(obj)) => {
            if let Some(sk) = find_key(obj, sub) {
                let slot = dst.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if let (Value::Object(slot), Some(v)) = (slot, obj.get(&sk)) {
                    slot.insert(sk, v.clone());
                }
            }
        }
        (Some(sub), Value::Array(items)) => {
            let picked: Vec<Value> = items
                .iter()
                .filter_map(|i| {
                    let obj = i.as_object()?;
                    let sk = find_key(obj, sub)?;
                    let mut one = Map::new();
                    one.insert(sk.clone(), obj.get(&sk)?.clone());
                    Some(Value::Object(one))
                })
                .collect();
            dst.insert(key, Value::Array(picked));
        }
        (Some(_), _) => {}
    }
}

fn drop_attr(map: &mut Map<String, Value>, a: &AttrRef) {
    let container = match &a.urn {
        None => Some(map),
        Some(urn) => match find_key(map, urn) {
            Some(k) => map.get_mut(&k).and_then(Value::as_object_mut),
            None => None,
        },
    };
    let Some(container) = container else {
        return;
    };
    let Some(key) = find_key(container, &a.attr) else {
        return;
    };
    match &a.sub {
        None => {
            container.remove(&key);
        }
        Some(sub) => match container.get_mut(&key) {
            Some(Value::Object(obj)) => {
                if let Some(sk) = find_key(obj, sub) {
                    obj.remove(&sk);
                }
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(sk) = find_key(item, sub) {
                        item.remove(&sk);
                    }
                }
            }
            _ => {}
        },
    }
}

// ================================================================== PATCH

/// A PATCH `path` (RFC 7644 §3.5.2): `attr[.sub]`, `urn:...:attr[.sub]`,
/// `attr[filter]`, `attr[filter].sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchPath {
    pub urn: Option<String>,
    pub attr: String,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

pub(crate) fn parse_patch_path(text: &str) -> Result<PatchPath, ScimError> {
    let text = text.trim();
    let Some(open) = text.find('[') else {
        let a = parse_attr_path(text).map_err(ScimError::invalid_path)?;
        return Ok(PatchPath {
            urn: a.urn,
            attr: a.attr,
            filter: None,
            sub: a.sub,
        });
    };
    let head = parse_attr_path(&text[..open]).map_err(ScimError::invalid_path)?;
    if head.sub.is_some() {
        return Err(ScimError::invalid_path(format!(
            "`{text}`: a value filter applies to an attribute, not a sub-attribute"
        )));
    }
    // The closing bracket outside of any quoted string.
    let bytes = text.as_bytes();
    let (mut i, mut quoted) = (open + 1, false);
    let close = loop {
        match bytes.get(i) {
            None => {
                return Err(ScimError::invalid_path(format!("`{text}`: no closing `]`")));
            }
            Some(b'\\') if quoted => i += 2,
            Some(b'"') => {
                quoted = !quoted;
                i += 1;
            }
            Some(b']') if !quoted => break i,
            Some(_) => i += 1,
        }
    };
    let filter = parse_filter(&text[open + 1..close])?;
    if filter.attr.urn.is_some() || filter.attr.sub.is_some() {
        return Err(ScimError::invalid_filter(format!(
            "`{text}`: a value filter names a sub-attribute such as `value`"
        )));
    }
    let tail = &text[close + 1..];
    let sub = if tail.is_empty() {
        None
    } else {
        let Some(sub) = tail.strip_prefix('.') else {
            return Err(ScimError::invalid_path(format!(
                "`{text}`: unexpected `{tail}` after the filter"
            )));
        };
        check_name_in(sub, text).map_err(ScimError::invalid_path)?;
        Some(sub.to_string())
    };
    Ok(PatchPath {
        urn: head.urn,
        attr: head.attr,
        filter: Some(filter),
        sub,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Replace,
    Remove,
}

/// Checks the PatchOp envelope and returns its operations.
fn patch_operations(body: &Value) -> Result<&Vec<Value>, ScimError> {
    if !has_schema(body, PATCH_SCHEMA) {
        return Err(ScimError::invalid_syntax(format!(
            "a PATCH body must list `{PATCH_SCHEMA}` in `schemas`"
        )));
    }
    match get_ci(body, "Operations") {
        Some(Value::Array(ops)) if !ops.is_empty() => Ok(ops),
        _ => Err(ScimError::invalid_syntax(
            "a PATCH body needs a non-empty `Operations` array",
        )),
    }
}

/// Applies one operation to `res`. `read_only` are attribute names the
/// client may not touch.
fn apply_op(res: &mut Map<String, Value>, op: &Value, read_only: &[&str]) -> Result<(), ScimError> {
    if !op.is_object() {
        return Err(ScimError::invalid_syntax(
            "each operation must be an object",
        ));
    }
    let kind = match get_ci(op, "op").and_then(Value::as_str) {
        Some(k) if k.eq_ignore_ascii_case("add") => OpKind::Add,
        Some(k) if k.eq_ignore_ascii_case("replace") => OpKind::Replace,
        Some(k) if k.eq_ignore_ascii_case("remove") => OpKind::Remove,
        Some(k) => {
            return Err(ScimError::invalid_syntax(format!(
                "unknown operation `{k}` (add, replace or remove)"
            )))
        }
        None => return Err(ScimError::invalid_syntax("an operation needs `op`")),
    };
    let path = match get_ci(op, "path") {
        None => None,
        Some(Value::String(p)) => Some(parse_patch_path(p)?),
        Some(_) => return Err(ScimError::invalid_path("`path` must be a string")),
    };
    let value = get_ci(op, "value");
    let check_writable = |p: &PatchPath| {
        let core = p.urn.is_none();
        if core && read_only.iter().any(|r| p.attr.eq_ignore_ascii_case(r)) {
            Err(ScimError::mutability(format!("`{}` is read-only", p.attr)))
        } else if core && p.attr.eq_ignore_ascii_case("schemas") {
            Err(ScimError::mutability(
                "`schemas` is managed by the provider",
            ))
        } else {
            Ok(())
        }
    };
    match (kind, path) {
        (OpKind::Remove, None) => Err(ScimError::no_target("`remove` needs a `path`")),
        (OpKind::Remove, Some(p)) => {
            check_writable(&p)?;
            remove_at(res, &p, value)
        }
        (kind, Some(p)) => {
            check_writable(&p)?;
            let value = value.ok_or_else(|| {
                ScimError::invalid_value(format!("`{}` needs a `value`", op_name(kind)))
            })?;
            set_at(res, &p, value, kind == OpKind::Add)
        }
        (kind, None) => {
            let Some(Value::Object(values)) = value else {
                return Err(ScimError::invalid_value(format!(
                    "`{}` without `path` needs an object `value`",
                    op_name(kind)
                )));
            };
            for (key, v) in values {
                let is_extension = key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
                    && v.is_object()
                    && !key.eq_ignore_ascii_case(USER_SCHEMA)
                    && !key.eq_ignore_ascii_case(GROUP_SCHEMA);
                if is_extension {
                    if let Value::Object(inner) = v {
                        for (ik, iv) in inner {
                            let a = parse_attr_path(ik).map_err(ScimError::invalid_path)?;
                            let p = PatchPath {
                                urn: Some(key.clone()),
                                attr: a.attr,
                                filter: None,
                                sub: a.sub,
                            };
                            set_at(res, &p, iv, kind == OpKind::Add)?;
                        }
                    }
                    continue;
                }
                let p = parse_patch_path(key)?;
                check_writable(&p)?;
                set_at(res, &p, v, kind == OpKind::Add)?;
            }
            Ok(())
        }
    }
}

fn op_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Add => "add",
        OpKind::Replace => "replace",
        OpKind::Remove => "remove",
    }
}

/// The object holding the attribute: the resource, or its extension object.
fn container_mut<'a>(
    res: &'a mut Map<String, Value>,
    urn: Option<&str>,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(urn) = urn else {
        return Ok(Some(res));
    };
    let key = match find_key(res, urn) {
        Some(k) => k,
        None if create => {
            res.insert(urn.to_string(), Value::Object(Map::new()));
            urn.to_string()
        }
        None => return Ok(None),
    };
    match res.get_mut(&key) {
        Some(Value::Object(obj)) => Ok(Some(obj)),
        _ => Err(ScimError::invalid_value(format!(
            "`{urn}` is not an extension object"
        ))),
    }
}

/// Two entries of a multi-valued attribute are the same when both have the
/// same `value` (or, without `value`, are equal).
fn same_entry(a: &Value, b: &Value) -> bool {
    match (get_ci(a, "value"), get_ci(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn merge_into(target: &mut Map<String, Value>, new: &Map<String, Value>) {
    for (k, v) in new {
        let key = find_key(target, k).unwrap_or_else(|| k.clone());
        target.insert(key, v.clone());
    }
}

fn set_at(
    res: &mut Map<String, Value>,
    p: &PatchPath,
    value: &Value,
    add: bool,
) -> Result<(), ScimError> {
    let Some(container) = container_mut(res, p.urn.as_deref(), true)? else {
        return Ok(());
    };
    let key = find_key(container, &p.attr).unwrap_or_else(|| p.attr.clone());
    match (&p.filter, &p.sub) {
        (None, None) => {
            let new = match (container.get_mut(&key), value) {
                (Some(Value::Array(old)), v) if add => {
                    let items: Vec<Value> = match v {
                        Value::Array(items) => items.clone(),
                        other => vec![other.clone()],
                    };
                    for item in items {
                        if !old.iter().any(|o| same_entry(o, &item)) {
                            old.push(item);
                        }
                    }
                    return Ok(());
                }
                (Some(Value::Object(old)), Value::Object(new)) => {
                    merge_into(old, new);
                    return Ok(());
                }
                (_, v) => v.clone(),
            };
            container.insert(key, new);
        }
        (None, Some(sub)) => {
            let slot = container
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(obj) = slot else {
                return Err(ScimError::invalid_path(format!(
                    "`{}.{sub}`: `{}` is not a complex attribute",
                    p.attr, p.attr
                )));
            };
            let sk = find_key(obj, sub).unwrap_or_else(|| sub.clone());
            obj.insert(sk, value.clone());
        }
        (Some(filter), sub) => {
            let exact = p.attr.eq_ignore_ascii_case("members");
            let Some(Value::Array(items)) = container.get_mut(&key) else {
                return Err(ScimError::no_target(format!(
                    "`{}` has no values to filter",
                    p.attr
                )));
            };
            let mut hit = false;
            for item in items.iter_mut() {
                if !filter_matches(item, filter, exact) {
                    continue;
                }
                hit = true;
                match (sub, &mut *item, value) {
                    (Some(sub), Value::Object(obj), v) => {
                        let sk = find_key(obj, sub).unwrap_or_else(|| sub.clone());
                        obj.insert(sk, v.clone());
                    }
                    (None, Value::Object(obj), Value::Object(new)) => merge_into(obj, new),
                    (None, slot, v) => *slot = v.clone(),
                    (Some(_), _, _) => {
                        return Err(ScimError::invalid_path(format!(
                            "`{}` entries are not complex",
                            p.attr
                        )))
                    }
                }
            }
            if !hit {
                return Err(ScimError::no_target(format!(
                    "no `{}` value matches `{} eq \"{}\"`",
                    p.attr, filter.attr, filter.value
                )));
            }
        }
    }
    Ok(())
}

fn remove_at(
    res: &mut Map<String, Value>,
    p: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(container) = container_mut(res, p.urn.as_deref(), false)? else {
        return if p.filter.is_some() {
            Err(ScimError::no_target(format!("`{}` has no values", p.attr)))
        } else {
            Ok(())
        };
    };
    let Some(key) = find_key(container, &p.attr) else {
        return if p.filter.is_some() {
            Err(ScimError::no_target(format!("`{}` has no values", p.attr)))
        } else {
            Ok(())
        };
    };
    match (&p.filter, &p.sub) {
        (None, None) => match (container.get_mut(&key), value) {
            // The common non-standard form: remove the listed entries.
            (Some(Value::Array(items)), Some(Value::Array(gone))) => {
                items.retain(|i| !gone.iter().any(|g| same_entry(i, g)));
            }
            _ => {
                container.remove(&key);
            }
        },
        (None, Some(sub)) => match container.get_mut(&key) {
            Some(Value::Object(obj)) => {
                if let Some(sk) = find_key(obj, sub) {
                    obj.remove(&sk);
                }
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(sk) = find_key(item, sub) {
                        item.remove(&sk);
                    }
                }
            }
            _ => {}
        },
        (Some(filter), sub) => {
            let exact = p.attr.eq_ignore_ascii_case("members");
            let Some(Value::Array(items)) = container.get_mut(&key) else {
                return Err(ScimError::no_target(format!("`{}` has no values", p.attr)));
            };
            let hits = items
                .iter()
                .filter(|i| filter_matches(i, filter, exact))
                .count();
            if hits == 0 {
                return Err(ScimError::no_target(format!(
                    "no `{}` value matches `{} eq \"{}\"`",
                    p.attr, filter.attr, filter.value
                )));
            }
            match sub {
                None => items.retain(|i| !filter_matches(i, filter, exact)),
                Some(sub) => {
                    for item in items
                        .iter_mut()
                        .filter(|i| filter_matches(i, filter, exact))
                        .filter_map(Value::as_object_mut)
                    {
                        if let Some(sk) = find_key(item, sub) {
                            item.remove(&sk);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

// ================================================================= store

fn has_schema(body: &Value, schema: &str) -> bool {
    get_ci(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|v| v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(schema)))
        })
}

fn is_urn_key(key: &str) -> bool {
    key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

/// Lists every extension object of `res` in its `schemas`.
fn add_extension_schemas(res: &mut Map<String, Value>) {
    let urns: Vec<String> = res
        .iter()
        .filter(|(k, v)| is_urn_key(k) && v.is_object())
        .map(|(k, _)| k.clone())
        .collect();
    if let Some(Value::Array(schemas)) = res.get_mut("schemas") {
        for urn in urns {
            let listed = schemas
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&urn)));
            if !listed {
                schemas.push(Value::String(urn));
            }
        }
    }
}

fn str_field<'m>(res: &'m Map<String, Value>, name: &str) -> Option<&'m str> {
    res.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// A User as the mock holds it, for tests to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimUser {
    pub id: String,
    pub user_name: String,
    /// `active`; an account without the attribute counts as active.
    pub active: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    /// `emails[].value`, in order.
    pub emails: Vec<String>,
    /// The whole resource as stored (with `id`, `meta`, extensions).
    pub resource: Value,
}

impl ScimUser {
    fn from_resource(resource: &Value) -> ScimUser {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let name = get_ci(resource, "name");
        ScimUser {
            id: s(get_ci(resource, "id")).unwrap_or_default(),
            user_name: s(get_ci(resource, "userName")).unwrap_or_default(),
            active: get_ci(resource, "active")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            given_name: s(name.and_then(|n| get_ci(n, "givenName"))),
            family_name: s(name.and_then(|n| get_ci(n, "familyName"))),
            display_name: s(get_ci(resource, "displayName")),
            emails: values_at(resource, &AttrRef::simple("emails")),
            resource: resource.clone(),
        }
    }
}

/// A Group as the mock holds it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimGroup {
    pub id: String,
    pub display_name: String,
    /// The members' userNames, sorted.
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
struct GroupRec {
    /// Everything but `members` (with `id`, `displayName`, `meta`).
    resource: Map<String, Value>,
    /// Member user IDs.
    members: BTreeSet<String>,
}

/// The provider's data and list behaviour. Pure: no HTTP, no locking.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// `http://127.0.0.1:PORT/scim/v2`, for `meta.location` and `$ref`.
    base: String,
    users: BTreeMap<String, Map<String, Value>>,
    groups: BTreeMap<String, GroupRec>,
    next_user: u64,
    next_group: u64,
    next_version: u64,
    page_cap: Option<usize>,
    omit_items_per_page: bool,
}

impl Store {
    pub(crate) fn new(base: String) -> Store {
        Store {
            base,
            ..Store::default()
        }
    }

    fn meta(&mut self, kind: &str, id: &str, created: Option<&Value>, now: &str) -> Value {
        self.next_version += 1;
        let folder = if kind == "User" { "Users" } else { "Groups" };
        let created = created
            .and_then(|m| get_ci(m, "created"))
            .cloned()
            .unwrap_or_else(|| Value::String(now.to_string()));
        json!({
            "resourceType": kind,
            "created": created,
            "lastModified": now,
            "location": format!("{}/{folder}/{id}", self.base),
            "version": format!("W/\"{}\"", self.next_version),
        })
    }

    fn user_id_by_name(&self, user_name: &str) -> Option<String> {
        self.users
            .iter()
            .find(|(_, u)| {
                str_field(u, "userName").is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
            .map(|(id, _)| id.clone())
    }

    fn group_id_by_name(&self, display_name: &str) -> Option<String> {
        self.groups
            .iter()
            .find(|(_, g)| {
                str_field(&g.resource, "displayName")
                    .is_some_and(|n| n.eq_ignore_ascii_case(display_name))
            })
            .map(|(id, _)| id.clone())
    }

    fn group_json(&self, g: &GroupRec) -> Value {
        let mut obj = g.resource.clone();
        let members: Vec<Value> = g
            .members
            .iter()
            .map(|id| {
                let display = self
                    .users
                    .get(id)
                    .and_then(|u| str_field(u, "userName"))
                    .unwrap_or_default();
                json!({
                    "value": id,
                    "display": display,
                    "type": "User",
                    "$ref": format!("{}/Users/{id}", self.base),
                })
            })
            .collect();
        obj.insert("members".into(), Value::Array(members));
        Value::Object(obj)
    }

    // ----- validation

    fn check_user(&self, res: &Map<String, Value>, id: Option<&str>) -> Result<(), ScimError> {
        let as_value = Value::Object(res.clone());
        if !has_schema(&as_value, USER_SCHEMA) {
            return Err(ScimError::invalid_syntax(format!(
                "a User must list `{USER_SCHEMA}` in `schemas`"
            )));
        }
        let user_name = match get_ci(&as_value, "userName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            Some(Value::String(_)) | None => {
                return Err(ScimError::invalid_value("`userName` is required"))
            }
            Some(_) => return Err(ScimError::invalid_value("`userName` must be a string")),
        };
        if let Some(other) = self.user_id_by_name(user_name) {
            if Some(other.as_str()) != id {
                return Err(ScimError::uniqueness(format!(
                    "userName `{user_name}` is already taken (by {other})"
                )));
            }
        }
        match get_ci(&as_value, "active") {
            None | Some(Value::Bool(_)) => {}
            Some(_) => return Err(ScimError::invalid_value("`active` must be a boolean")),
        }
        for attr in [
            "displayName",
            "externalId",
            "nickName",
            "title",
            "userType",
            "preferredLanguage",
            "locale",
            "timezone",
            "profileUrl",
        ] {
            match get_ci(&as_value, attr) {
                None | Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(ScimError::invalid_value(format!(
                        "`{attr}` must be a string"
                    )))
                }
            }
        }
        match get_ci(&as_value, "name") {
            None => {}
            Some(Value::Object(name)) if name.values().all(Value::is_string) => {}
            Some(_) => {
                return Err(ScimError::invalid_value(
                    "`name` must be an object of strings",
                ))
            }
        }
        for attr in [
            "emails",
            "phoneNumbers",
            "ims",
            "photos",
            "entitlements",
            "roles",
            "x509Certificates",
            "addresses",
        ] {
            let Some(v) = get_ci(&as_value, attr) else {
                continue;
            };
            let Value::Array(items) = v else {
                return Err(ScimError::invalid_value(format!(
                    "`{attr}` must be an array"
                )));
            };
            let mut primaries = 0;
            for item in items {
                if !item.is_object() {
                    return Err(ScimError::invalid_value(format!(
                        "`{attr}` entries must be objects"
                    )));
                }
                if attr != "addresses" && !get_ci(item, "value").is_some_and(Value::is_string) {
                    return Err(ScimError::invalid_value(format!(
                        "`{attr}` entries need a string `value`"
                    )));
                }
                match get_ci(item, "primary") {
                    None | Some(Value::Bool(false)) => {}
                    Some(Value::Bool(true)) => primaries += 1,
                    Some(_) => {
                        return Err(ScimError::invalid_value(format!(
                            "`{attr}[].primary` must be a boolean"
                        )))
                    }
                }
            }
            if primaries > 1 {
                return Err(ScimError::invalid_value(format!(
                    "at most one `{attr}` entry may be primary"
                )));
            }
        }
        for (key, v) in res {
            if !is_urn_key(key) {
                continue;
            }
            if !v.is_object() {
                return Err(ScimError::invalid_value(format!(
                    "extension `{key}` must be an object"
                )));
            }
            if !has_schema(&as_value, key) {
                return Err(ScimError::invalid_value(format!(
                    "extension `{key}` is not listed in `schemas`"
                )));
            }
        }
        Ok(())
    }

    /// Checks a Group resource and returns its member IDs.
    fn check_group(
        &self,
        res: &Map<String, Value>,
        id: Option<&str>,
    ) -> Result<BTreeSet<String>, ScimError> {
        let as_value = Value::Object(res.clone());
        if !has_schema(&as_value, GROUP_SCHEMA) {
            return Err(ScimError::invalid_syntax(format!(
                "a Group must list `{GROUP_SCHEMA}` in `schemas`"
            )));
        }
        let name = match get_ci(&as_value, "displayName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            _ => return Err(ScimError::invalid_value("`displayName` is required")),
        };
        if let Some(other) = self.group_id_by_name(name) {
            if Some(other.as_str()) != id {
                return Err(ScimError::uniqueness(format!(
                    "a group named `{name}` exists already ({other})"
                )));
            }
        }
        let mut members = BTreeSet::new();
        match get_ci(&as_value, "members") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let Some(value) = get_ci(item, "value").and_then(Value::as_str) else {
                        return Err(ScimError::invalid_value(
                            "each member needs a string `value` (a user id)",
                        ));
                    };
                    if !self.users.contains_key(value) {
                        return Err(ScimError::invalid_value(format!(
                            "member `{value}` is not a user id"
                        )));
                    }
                    members.insert(value.to_string());
                }
            }
            Some(_) => return Err(ScimError::invalid_value("`members` must be an array")),
        }
        Ok(members)
    }

    /// Takes a client's resource: read-only and write-only attributes dropped.
    fn writable(body: &Value, read_only: &[&str]) -> Result<Map<String, Value>, ScimError> {
        let Value::Object(obj) = body else {
            return Err(ScimError::invalid_syntax("the body must be a JSON object"));
        };
        Ok(obj
            .iter()
            .filter(|(k, _)| {
                !read_only.iter().any(|r| k.eq_ignore_ascii_case(r))
                    && !k.eq_ignore_ascii_case("password")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    // ----- Users

    pub(crate) fn list_users(&self, q: &ListQuery) -> ApiResult {
        let all: Vec<Value> = self
            .users
            .values()
            .map(|u| Value::Object(u.clone()))
            .filter(|u| {
                q.filter
                    .as_ref()
                    .is_none_or(|f| filter_matches(u, f, is_case_exact(&f.attr)))
            })
            .collect();
        Ok(ApiOk::json(200, self.page(all, q)))
    }

    fn page(&self, all: Vec<Value>, q: &ListQuery) -> Value {
        let total = all.len();
        let count = self.page_cap.map_or(q.count, |cap| q.count.min(cap));
        let resources: Vec<Value> = all
            .iter()
            .skip(q.start - 1)
            .take(count)
            .map(|r| project(r, &q.projection))
            .collect();
        let mut body = json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": q.start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        });
        if self.omit_items_per_page {
            if let Value::Object(obj) = &mut body {
                obj.remove("itemsPerPage");
            }
        }
        body
    }

    pub(crate) fn get_user(&self, id: &str, p: &Projection) -> ApiResult {
        let user = self
            .users
            .get(id)
            .ok_or_else(|| ScimError::not_found(format!("no User {id}")))?;
        Ok(ApiOk::json(200, project(&Value::Object(user.clone()), p)))
    }

    pub(crate) fn create_user(&mut self, body: &Value, now: &str) -> ApiResult {
        let mut res = Store::writable(body, USER_READ_ONLY)?;
        self.check_user(&res, None)?;
        self.next_user += 1;
        let id = format!("u-{:06}", self.next_user);
        res.entry("active").or_insert(Value::Bool(true));
        res.insert("id".into(), Value::String(id.clone()));
        let meta = self.meta("User", &id, None, now);
        res.insert("meta".into(), meta);
        self.users.insert(id, res.clone());
        Ok(ApiOk::created(Value::Object(res)))
    }

    pub(crate) fn replace_user(&mut self, id: &str, body: &Value, now: &str) -> ApiResult {
        let old_meta = match self.users.get(id) {
            Some(u) => u.get("meta").cloned(),
            None => return Err(ScimError::not_found(format!("no User {id}"))),
        };
        let mut res = Store::writable(body, USER_READ_ONLY)?;
        self.check_user(&res, Some(id))?;
        res.entry("active").or_insert(Value::Bool(true));
        res.insert("id".into(), Value::String(id.to_string()));
        let meta = self.meta("User", id, old_meta.as_ref(), now);
        res.insert("meta".into(), meta);
        self.users.insert(id.to_string(), res.clone());
        Ok(ApiOk::json(200, Value::Object(res)))
    }

    pub(crate) fn patch_user(&mut self, id: &str, body: &Value, now: &str) -> ApiResult {
        let Some(current) = self.users.get(id) else {
            return Err(ScimError::not_found(format!("no User {id}")));
        };
        let ops = patch_operations(body)?;
        let mut res = current.clone();
        for op in ops {
            apply_op(&mut res, op, USER_READ_ONLY)?;
        }
        add_extension_schemas(&mut res);
        self.check_user(&res, Some(id))?;
        let meta = self.meta("User", id, current_meta(&res).as_ref(), now);
        res.insert("meta".into(), meta);
        self.users.insert(id.to_string(), res.clone());
        Ok(ApiOk::json(200, Value::Object(res)))
    }

    pub(crate) fn delete_user(&mut self, id: &str) -> ApiResult {
        if self.users.remove(id).is_none() {
            return Err(ScimError::not_found(format!("no User {id}")));
        }
        for g in self.groups.values_mut() {
            g.members.remove(id);
        }
        Ok(ApiOk::no_content())
    }

    // ----- Groups

    pub(crate) fn list_groups(&self, q: &ListQuery) -> ApiResult {
        let all: Vec<Value> = self
            .groups
            .values()
            .map(|g| self.group_json(g))
            .filter(|g| {
                q.filter.as_ref().is_none_or(|f| {
                    let exact =
                        is_case_exact(&f.attr) || f.attr.attr.eq_ignore_ascii_case("members");
                    filter_matches(g, f, exact)
                })
            })
            .collect();
        Ok(ApiOk::json(200, self.page(all, q)))
    }

    pub(crate) fn get_group(&self, id: &str, p: &Projection) -> ApiResult {
        let g = self
            .groups
            .get(id)
            .ok_or_else(|| ScimError::not_found(format!("no Group {id}")))?;
        Ok(ApiOk::json(200, project(&self.group_json(g), p)))
    }

    fn store_group(
        &mut self,
        id: &str,
        mut res: Map<String, Value>,
        members: BTreeSet<String>,
        now: &str,
    ) -> Value {
        let old_meta = self
            .groups
            .get(id)
            .and_then(|g| g.resource.get("meta").cloned());
        res.remove("members");
        res.insert("id".into(), Value::String(id.to_string()));
        let meta = self.meta("Group", id, old_meta.as_ref(), now);
        res.insert("meta".into(), meta);
        let rec = GroupRec {
            resource: res,
            members,
        };
        let json = self.group_json(&rec);
        self.groups.insert(id.to_string(), rec);
        json
    }

    pub(crate) fn create_group(&mut self, body: &Value, now: &str) -> ApiResult {
        let res = Store::writable(body, GROUP_READ_ONLY)?;
        let members = self.check_group(&res, None)?;
        self.next_group += 1;
        let id = format!("g-{:06}", self.next_group);
        Ok(ApiOk::created(self.store_group(&id, res, members, now)))
    }

    pub(crate) fn replace_group(&mut self, id: &str, body: &Value, now: &str) -> ApiResult {
        if !self.groups.contains_key(id) {
            return Err(ScimError::not_found(format!("no Group {id}")));
        }
        let res = Store::writable(body, GROUP_READ_ONLY)?;
        let members = self.check_group(&res, Some(id))?;
        Ok(ApiOk::json(200, self.store_group(id, res, members, now)))
    }

    pub(crate) fn patch_group(&mut self, id: &str, body: &Value, now: &str) -> ApiResult {
        let Some(g) = self.groups.get(id) else {
            return Err(ScimError::not_found(format!("no Group {id}")));
        };
        let ops = patch_operations(body)?;
        let Value::Object(mut res) = self.group_json(g) else {
            return Err(ScimError::new(500, None, "group is not an object"));
        };
        for op in ops {
            apply_op(&mut res, op, GROUP_READ_ONLY)?;
        }
        let members = self.check_group(&res, Some(id))?;
        Ok(ApiOk::json(200, self.store_group(id, res, members, now)))
    }

    pub(crate) fn delete_group(&mut self, id: &str) -> ApiResult {
        match self.groups.remove(id) {
            Some(_) => Ok(ApiOk::no_content()),
            None => Err(ScimError::not_found(format!("no Group {id}"))),
        }
    }

    // ----- seeding and inspection

    fn seed_user(&mut self, user_name: &str, given: &str, family: &str, email: &str) -> String {
        let now = now_rfc3339();
        let mut res = Map::new();
        res.insert("schemas".into(), json!([USER_SCHEMA]));
        res.insert("userName".into(), Value::String(user_name.to_string()));
        let mut name = Map::new();
        if !given.is_empty() {
            name.insert("givenName".into(), Value::String(given.to_string()));
        }
        if !family.is_empty() {
            name.insert("familyName".into(), Value::String(family.to_string()));
        }
        if !name.is_empty() {
            res.insert("name".into(), Value::Object(name));
        }
        if !email.is_empty() {
            res.insert(
                "emails".into(),
                json!([{"value": email, "type": "work", "primary": true}]),
            );
        }
        res.insert("active".into(), Value::Bool(true));
        let id = match self.user_id_by_name(user_name) {
            Some(id) => id,
            None => {
                self.next_user += 1;
                format!("u-{:06}", self.next_user)
            }
        };
        let old_meta = self.users.get(&id).and_then(|u| u.get("meta").cloned());
        res.insert("id".into(), Value::String(id.clone()));
        let meta = self.meta("User", &id, old_meta.as_ref(), &now);
        res.insert("meta".into(), meta);
        self.users.insert(id.clone(), res);
        id
    }

    fn seed_group(&mut self, display_name: &str) -> String {
        if let Some(id) = self.group_id_by_name(display_name) {
            return id;
        }
        self.next_group += 1;
        let id = format!("g-{:06}", self.next_group);
        let mut res = Map::new();
        res.insert("schemas".into(), json!([GROUP_SCHEMA]));
        res.insert(
            "displayName".into(),
            Value::String(display_name.to_string()),
        );
        self.store_group(&id, res, BTreeSet::new(), &now_rfc3339());
        id
    }

    fn membership(&mut self, group: &str, user_name: &str, member: bool) -> bool {
        let (Some(gid), Some(uid)) = (
            self.group_id_by_name(group),
            self.user_id_by_name(user_name),
        ) else {
            return false;
        };
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        if member {
            g.members.insert(uid);
            true
        } else {
            g.members.remove(&uid)
        }
    }

    fn members(&self, group: &str) -> Vec<String> {
        let Some(g) = self
            .group_id_by_name(group)
            .and_then(|id| self.groups.get(&id))
        else {
            return Vec::new();
        };
        let mut names: Vec<String> = g
            .members
            .iter()
            .filter_map(|id| self.users.get(id))
            .filter_map(|u| str_field(u, "userName"))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    fn scim_group(&self, g: &GroupRec) -> ScimGroup {
        let id = str_field(&g.resource, "id").unwrap_or_default().to_string();
        let display_name = str_field(&g.resource, "displayName")
            .unwrap_or_default()
            .to_string();
        let members = self.members(&display_name);
        ScimGroup {
            id,
            display_name,
            members,
        }
    }
}

fn current_meta(res: &Map<String, Value>) -> Option<Value> {
    res.get("meta").cloned()
}

// ================================================================= server

/// The store as the handlers and the [`MockScim`] handle share it.
type Data = Arc<Shared<Store>>;

/// The two resource types served, each under its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
}

impl Store {
    fn list(&self, kind: Kind, q: &ListQuery) -> ApiResult {
        match kind {
            Kind::User => self.list_users(q),
            Kind::Group => self.list_groups(q),
        }
    }

    fn get(&self, kind: Kind, id: &str, p: &Projection) -> ApiResult {
        match kind {
            Kind::User => self.get_user(id, p),
            Kind::Group => self.get_group(id, p),
        }
    }

    fn create(&mut self, kind: Kind, body: &Value, now: &str) -> ApiResult {
        match kind {
            Kind::User => self.create_user(body, now),
            Kind::Group => self.create_group(body, now),
        }
    }

    fn replace(&mut self, kind: Kind, id: &str, body: &Value, now: &str) -> ApiResult {
        match kind {
            Kind::User => self.replace_user(id, body, now),
            Kind::Group => self.replace_group(id, body, now),
        }
    }

    fn patch(&mut self, kind: Kind, id: &str, body: &Value, now: &str) -> ApiResult {
        match kind {
            Kind::User => self.patch_user(id, body, now),
            Kind::Group => self.patch_group(id, body, now),
        }
    }

    fn delete(&mut self, kind: Kind, id: &str) -> ApiResult {
        match kind {
            Kind::User => self.delete_user(id),
            Kind::Group => self.delete_group(id),
        }
    }
}

fn scim_response(status: u16, body: Option<&Value>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(b) => (code, [(CONTENT_TYPE, SCIM_CONTENT_TYPE)], b.to_string()).into_response(),
        None => code.into_response(),
    }
}

fn error_response(e: &ScimError) -> Response {
    scim_response(e.status, Some(&e.body()))
}

fn respond(result: ApiResult) -> Response {
    match result {
        Ok(ok) => {
            let mut response = scim_response(ok.status, ok.body.as_ref());
            if let Some(loc) = ok.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                response.headers_mut().insert(LOCATION, loc);
            }
            response
        }
        Err(e) => error_response(&e),
    }
}

fn parse_body(bytes: &Bytes) -> Result<Value, ScimError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("a request body is required"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

/// Refusals of the `Intercept` layer, as SCIM Error messages.
fn render(refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::Injected(status) => ScimError::new(status, None, "injected failure (mock SCIM)"),
        Refusal::Unauthorized => ScimError::new(401, None, "missing or wrong credentials"),
        Refusal::TooLarge => ScimError::new(
            413,
            None,
            format!("request body larger than {MAX_BODY} bytes"),
        ),
        Refusal::Released => {
            ScimError::new(503, None, "mock SCIM shutting down (hung request released)")
        }
    };
    error_response(&error)
}

fn router(data: Data) -> Router {
    let api = Router::new()
        .route("/Users", collection(Kind::User))
        .route("/Users/{id}", resource(Kind::User))
        .route("/Groups", collection(Kind::Group))
        .route("/Groups/{id}", resource(Kind::Group));
    Router::new()
        .nest(BASE_PATH, api)
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .with_state(data)
}

/// A folder (`/Users`, `/Groups`): `GET` lists, `POST` creates.
fn collection(kind: Kind) -> MethodRouter<Data> {
    get(
        move |State(data): State<Data>, RawQuery(query): RawQuery| async move {
            respond(
                parse_list_query(query.as_deref())
                    .and_then(|q| data.read(|store| store.list(kind, &q))),
            )
        },
    )
    .post(move |State(data): State<Data>, body: Bytes| async move {
        write(&data, &body, |store, b, now| store.create(kind, b, now))
    })
}

/// One resource (`/Users/{id}`, `/Groups/{id}`): `GET`, `PUT`, `PATCH`, `DELETE`.
fn resource(kind: Kind) -> MethodRouter<Data> {
    get(
        move |State(data): State<Data>, Path(id): Path<String>, RawQuery(query): RawQuery| async move {
            respond(
                parse_projection(query.as_deref())
                    .and_then(|p| data.read(|store| store.get(kind, &id, &p))),
            )
        },
    )
    .put(
        move |State(data): State<Data>, Path(id): Path<String>, body: Bytes| async move {
            write(&data, &body, |store, b, now| store.replace(kind, &id, b, now))
        },
    )
    .patch(
        move |State(data): State<Data>, Path(id): Path<String>, body: Bytes| async move {
            write(&data, &body, |store, b, now| store.patch(kind, &id, b, now))
        },
    )
    .delete(
        move |State(data): State<Data>, Path(id): Path<String>| async move {
            respond(data.with(|store| store.delete(kind, &id)))
        },
    )
}

/// Parses the body and applies `op` to the store, stamped with the time now.
fn write(
    data: &Data,
    body: &Bytes,
    op: impl FnOnce(&mut Store, &Value, &str) -> ApiResult,
) -> Response {
    let now = now_rfc3339();
    respond(parse_body(body).and_then(|b| data.with(|store| op(store, &b, &now))))
}

async fn no_route(method: Method, uri: Uri) -> Response {
    error_response(&ScimError::not_found(format!(
        "no such endpoint: {method} {}",
        uri.path()
    )))
}

async fn no_method(method: Method, uri: Uri) -> Response {
    error_response(&ScimError::new(
        405,
        None,
        format!("{method} is not supported on {}", uri.path()),
    ))
}

// ================================================================= handle

/// A running mock SCIM service provider: the store and its routes as a
/// [`Double`].
pub type MockScim = Double<Data>;

impl Double<Data> {
    /// Binds `127.0.0.1` on a free port and serves on a tokio task.
    pub async fn start() -> Result<MockScim, io::Error> {
        let data = Data::default();
        let routes = router(Arc::clone(&data));
        let mock = Double::serve(data, routes, "mock-scim", render).await?;
        // Before the URL is handed out, so that no request sees the store
        // without its base.
        let base = mock.url();
        mock.api().with(|store| store.base = base);
        Ok(mock)
    }

    /// `http://127.0.0.1:PORT/scim/v2`, without a trailing slash: use it as `url_prefix`.
    pub fn url(&self) -> String {
        format!("{}{BASE_PATH}", self.root_url())
    }

    /// Runs `f` on the store and tells waiters that something may have changed.
    fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.seeded(self.api().with(f))
    }

    fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        self.api().read(f)
    }

    // ----- seeding and inspection

    /// Creates an active user and returns its id; empty names or email are
    /// left out. If the userName exists (case-insensitively), that user's
    /// resource is replaced (same id, active again) instead.
    pub fn add_user(&self, user_name: &str, given: &str, family: &str, email: &str) -> String {
        self.with(|store| store.seed_user(user_name, given, family, email))
    }

    /// Removes the user (and its memberships); `false` if absent.
    pub fn remove_user(&self, user_name: &str) -> bool {
        self.with(|store| match store.user_id_by_name(user_name) {
            Some(id) => store.delete_user(&id).is_ok(),
            None => false,
        })
    }

    /// Sets a user's `active`; `false` if there is no such user.
    pub fn set_active(&self, user_name: &str, active: bool) -> bool {
        self.with(|store| {
            let Some(id) = store.user_id_by_name(user_name) else {
                return false;
            };
            match store.users.get_mut(&id) {
                Some(u) => {
                    u.insert("active".into(), Value::Bool(active));
                    true
                }
                None => false,
            }
        })
    }

    /// The user with that userName (case-insensitively).
    pub fn user(&self, user_name: &str) -> Option<ScimUser> {
        self.read(|store| {
            let id = store.user_id_by_name(user_name)?;
            store
                .users
                .get(&id)
                .map(|u| ScimUser::from_resource(&Value::Object(u.clone())))
        })
    }

    /// The user with that id.
    pub fn user_by_id(&self, id: &str) -> Option<ScimUser> {
        self.read(|store| {
            store
                .users
                .get(id)
                .map(|u| ScimUser::from_resource(&Value::Object(u.clone())))
        })
    }

    /// Every user, sorted by userName.
    pub fn users(&self) -> Vec<ScimUser> {
        let mut users: Vec<ScimUser> = self.read(|store| {
            store
                .users
                .values()
                .map(|u| ScimUser::from_resource(&Value::Object(u.clone())))
                .collect()
        });
        users.sort_by(|a, b| a.user_name.cmp(&b.user_name));
        users
    }

    /// Creates a group and returns its id (the existing id if the name is
    /// taken, case-insensitively).
    pub fn add_group(&self, display_name: &str) -> String {
        self.with(|store| store.seed_group(display_name))
    }

    /// Makes the user a member of the group (idempotent); `false` (and a
    /// warning in the log) when either does not exist.
    pub fn add_member(&self, group: &str, user_name: &str) -> bool {
        let added = self.with(|store| store.membership(group, user_name, true));
        if !added {
            tracing::warn!(
                group,
                user_name,
                "mock SCIM: add_member found no such group or user"
            );
        }
        added
    }

    /// Removes the user from the group; `false` when it was not a member.
    pub fn remove_member(&self, group: &str, user_name: &str) -> bool {
        self.with(|store| store.membership(group, user_name, false))
    }

    /// The userNames of the group's members, sorted; empty when the group
    /// does not exist.
    pub fn members(&self, group: &str) -> Vec<String> {
        self.read(|store| store.members(group))
    }

    /// The group with that displayName (case-insensitively).
    pub fn group(&self, display_name: &str) -> Option<ScimGroup> {
        self.read(|store| {
            let id = store.group_id_by_name(display_name)?;
            store.groups.get(&id).map(|g| store.scim_group(g))
        })
    }

    /// Every group, sorted by displayName.
    pub fn groups(&self) -> Vec<ScimGroup> {
        let mut groups: Vec<ScimGroup> =
            self.read(|store| store.groups.values().map(|g| store.scim_group(g)).collect());
        groups.sort_by(|a, b| a.display_name.cmp(&b.display_name));
        groups
    }

    // ----- list behaviour

    /// Pages hold at most `cap` resources whatever `count` asks for (`None`:
    /// as asked, up to 1000).
    pub fn set_page_cap(&self, cap: Option<usize>) {
        self.with(|store| store.page_cap = cap);
    }

    /// Leaves `itemsPerPage` out of list answers (it is REQUIRED by RFC 7644,
    /// but not every provider sends it).
    pub fn set_omit_items_per_page(&self, omit: bool) {
        self.with(|store| store.omit_items_per_page = omit);
    }
}
