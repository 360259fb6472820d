//! The SCIM wire format as pure functions: attribute paths, resource and PATCH
//! bodies, filter and URL encoding, list responses and their paging, member
//! lists and error bodies (RFC 7643 / RFC 7644). No I/O here, so every rule
//! can be table-tested.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Content type of every request body (RFC 7644 §3.1).
pub const CONTENT_TYPE: &str = "application/scim+json";
/// Some providers answer plain `application/json`; both are fine.
pub const ACCEPT: &str = "application/scim+json, application/json";

/// A hard stop for paging, so a server that never says "done" cannot keep a
/// worker busy forever (20,000 pages of 100 is two million resources).
pub const MAX_PAGES: u32 = 20_000;

/// Multi-valued attributes of the core User schema whose plain form
/// (`emails = "..."`) means one primary entry.
const MULTI_VALUED: &[&str] = &[
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// Of those, the ones whose canonical `type` values include `work` (RFC 7643 §4.1.2).
const TYPED_WORK: &[&str] = &["emails", "phoneNumbers", "ims", "addresses"];

/// Attributes the adapter sets itself or the server owns; mapping them would
/// fight the adapter (`userName`, `active`) or be ignored (read-only ones).
const RESERVED: &[&str] = &["userName", "active", "id", "schemas", "meta", "groups"];

/// Where a mapped value goes in a User resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrPath {
    /// `displayName`, `name.givenName`: a core attribute or one sub-attribute of it.
    Core { attr: String, sub: Option<String> },
    /// `emails`, `phoneNumbers[type eq "mobile"]`, `addresses[type eq "work"].locality`:
    /// one entry of a multi-valued attribute. The plain form is the primary entry.
    MultiValued {
        attr: String,
        kind: Option<String>,
        sub: String,
        primary: bool,
    },
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`
    /// (or `...:manager.value`): an attribute of a schema extension.
    Extension {
        urn: String,
        attr: String,
        sub: Option<String>,
    },
}

impl AttrPath {
    /// Parses a key of `[scim.attributes]`; the error says what is wrong.
    pub fn parse(path: &str) -> Result<AttrPath, String> {
        let path = path.trim();
        if path.is_empty() {
            return Err("the attribute path is empty".into());
        }
        if let Some(split) = split_urn(path) {
            let (urn, rest) = split?;
            if urn.eq_ignore_ascii_case(USER_SCHEMA) {
                // The core schema's attributes are written without their URN.
                return AttrPath::parse(rest);
            }
            let (attr, sub) = split_sub(rest)?;
            return Ok(AttrPath::Extension {
                urn: urn.to_string(),
                attr,
                sub,
            });
        }
        if let Some((attr, rest)) = path.split_once('[') {
            check_name(attr)?;
            let multi = multi_valued_name(attr).ok_or_else(|| {
                format!("`{attr}` is not a multi-valued attribute; a `[type eq \"...\"]` filter needs one of {}", MULTI_VALUED.join(", "))
            })?;
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{path}` lacks the closing `]`"))?;
            let kind = parse_type_filter(inside)
                .ok_or_else(|| format!("`[{inside}]` must be of the form `[type eq \"work\"]`"))?;
            let sub = match after {
                "" => "value".to_string(),
                s => match s.strip_prefix('.') {
                    Some(sub) => {
                        check_name(sub)?;
                        sub.to_string()
                    }
                    None => return Err(format!("unexpected `{s}` after `]`")),
                },
            };
            return Ok(AttrPath::MultiValued {
                attr: multi.to_string(),
                kind: Some(kind),
                sub,
                primary: false,
            });
        }
        let (attr, sub) = split_sub(path)?;
        if let Some(reserved) = RESERVED.iter().find(|r| r.eq_ignore_ascii_case(&attr)) {
            return Err(format!(
                "`{reserved}` is not mapped here: the adapter sets `userName` (key `user_name`) and `active` itself, and the server owns `id`, `schemas`, `meta` and `groups`"
            ));
        }
        if let Some(multi) = multi_valued_name(&attr) {
            return Ok(AttrPath::MultiValued {
                attr: multi.to_string(),
                kind: TYPED_WORK.contains(&multi).then(|| "work".to_string()),
                sub: sub.unwrap_or_else(|| "value".to_string()),
                primary: true,
            });
        }
        Ok(AttrPath::Core { attr, sub })
    }
}

impl AttrPath {
    /// The top-level attribute the path is in, as a listing's `attributes`
    /// parameter names it (`name` for `name.givenName`, the URN path of an
    /// extension attribute).
    pub fn attribute(&self) -> String {
        match self {
            AttrPath::Core { attr, .. } | AttrPath::MultiValued { attr, .. } => attr.clone(),
            AttrPath::Extension { urn, attr, .. } => format!("{urn}:{attr}"),
        }
    }

    /// The value at this path of a resource as the provider shows it: for a
    /// multi-valued attribute, of the entry of the path's `type` (else the
    /// primary entry, else the first); `None` when there is none, or when the
    /// entry the path makes primary says it is not.
    pub fn value_in(&self, resource: &Value) -> Option<String> {
        let sub_of = |holder: &Value, attr: &str, sub: Option<&str>| {
            let v = get_ci(holder, attr)?;
            match sub {
                Some(sub) => scalar(get_ci(v, sub)?),
                None => scalar(v),
            }
        };
        match self {
            AttrPath::Core { attr, sub } => sub_of(resource, attr, sub.as_deref()),
            AttrPath::Extension { urn, attr, sub } => {
                sub_of(get_ci(resource, urn)?, attr, sub.as_deref())
            }
            AttrPath::MultiValued {
                attr,
                kind,
                sub,
                primary,
            } => {
                let entries = get_ci(resource, attr)?.as_array()?;
                let is_primary = |e: &&Value| get_ci(e, "primary").and_then(Value::as_bool);
                let entry = match kind {
                    Some(kind) => entries.iter().find(|e| {
                        get_ci(e, "type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| t.eq_ignore_ascii_case(kind))
                    }),
                    None => entries
                        .iter()
                        .find(|e| is_primary(e) == Some(true))
                        .or_else(|| entries.first()),
                }?;
                if *primary && is_primary(&entry) == Some(false) {
                    return None;
                }
                scalar(get_ci(entry, sub)?)
            }
        }
    }
}

/// Whether an update would change nothing on `listed`, a User as the
/// provider showed it: the same userName, active, and at each mapped path
/// the rendered value. A path that renders empty is left alone by a PATCH;
/// only a PUT (`clears_empty`), which replaces the whole resource, wants
/// nothing there. Entries of multi-valued attributes and attributes that no
/// mapping names are not compared.
pub fn user_in_step(
    listed: &Value,
    user_name: &str,
    values: &[(&AttrPath, String)],
    clears_empty: bool,
) -> bool {
    let same_name = get_ci(listed, "userName").and_then(scalar).as_deref() == Some(user_name);
    same_name
        && is_active(listed)
        && values.iter().all(|(path, value)| {
            let value = value.trim();
            match path.value_in(listed) {
                _ if value.is_empty() && !clears_empty => true,
                None => value.is_empty(),
                Some(have) => have == value,
            }
        })
}

fn has_urn_prefix(path: &str) -> bool {
    path.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

/// `urn:...:attr(.sub)` split at its last colon into the schema URN and the
/// rest; `None` when the path has no URN.
fn split_urn(path: &str) -> Option<Result<(&str, &str), String>> {
    if !has_urn_prefix(path) {
        return None;
    }
    let Some((urn, rest)) = path.rsplit_once(':') else {
        return Some(Err(format!(
            "`{path}` has no attribute after the schema URN"
        )));
    };
    if urn.split(':').count() < 3 {
        return Some(Err(format!("`{urn}` is not a schema URN")));
    }
    Some(Ok((urn, rest)))
}

fn multi_valued_name(attr: &str) -> Option<&'static str> {
    MULTI_VALUED
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(attr))
}

/// `attr` or `attr.sub` (RFC 7644 `attrPath` without the URN).
fn split_sub(path: &str) -> Result<(String, Option<String>), String> {
    let mut parts = path.split('.');
    let attr = parts.next().unwrap_or_default();
    check_name(attr)?;
    let sub = parts.next();
    if let Some(sub) = sub {
        check_name(sub)?;
    }
    if parts.next().is_some() {
        return Err(format!(
            "`{path}` is nested too deeply: SCIM paths are `attribute` or `attribute.subAttribute`"
        ));
    }
    Ok((attr.to_string(), sub.map(str::to_string)))
}

/// One attribute or sub-attribute name. RFC 7643 §2.1: `ATTRNAME = ALPHA
/// *(nameChar)`, `nameChar = "-" / "_" / DIGIT / ALPHA`; and `$ref`, the
/// reference sub-attribute of RFC 7643 §2.3.7 (`manager.$ref`).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name == "$ref"
        || (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a SCIM attribute name (a letter, then letters, digits, `-` or `_`; or `$ref`)"
        ))
    }
}

/// `type eq "work"` -> `work`.
fn parse_type_filter(inside: &str) -> Option<String> {
    let mut words = inside.trim().splitn(3, ' ');
    let attr = words.next()?;
    let op = words.next()?;
    let literal = words.next()?.trim();
    if !attr.eq_ignore_ascii_case("type") || !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value = literal.strip_prefix('"')?.strip_suffix('"')?;
    if value.is_empty() || value.contains(['"', '\\']) {
        return None;
    }
    Some(value.to_string())
}

/// A path usable as `filter_attribute`: `attr`, `attr.sub` or `urn:...:attr(.sub)`.
pub fn check_filter_attribute(path: &str) -> Result<(), String> {
    let attribute = match split_urn(path) {
        Some(split) => split?.1,
        None => path,
    };
    split_sub(attribute).map(|_| ())
}

// ------------------------------------------------------------- resources

/// The User resource for a userName and rendered mapped values. Empty values
/// are left out (a SCIM provider would store `""` as a real value), and an
/// extension appears, with its URN in `schemas`, only when it has a value.
/// Fails when two paths disagree on a value's shape (`name` and `name.givenName`).
pub fn build_user(user_name: &str, values: &[(&AttrPath, String)]) -> Result<Value, String> {
    let mut resource = Map::new();
    resource.insert("schemas".into(), json!([USER_SCHEMA]));
    resource.insert("userName".into(), Value::String(user_name.to_string()));
    let mut extensions: Vec<String> = Vec::new();
    // Multi-valued entries, in the order their first path appears.
    let mut multi: Vec<MultiEntry> = Vec::new();
    for (path, value) in values {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let v = Value::String(value.to_string());
        match path {
            AttrPath::Core { attr, sub } => set(&mut resource, attr, sub.as_deref(), v)?,
            AttrPath::Extension { urn, attr, sub } => {
                let ext = resource
                    .entry(urn.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(ext) = ext else {
                    return Err(format!("`{urn}` is used both as a value and as a schema"));
                };
                set(ext, attr, sub.as_deref(), v).map_err(|e| format!("{e} (in `{urn}`)"))?;
                if !extensions.iter().any(|u| u == urn) {
                    extensions.push(urn.clone());
                }
            }
            AttrPath::MultiValued {
                attr,
                kind,
                sub,
                primary,
            } => {
                let at = match multi
                    .iter()
                    .position(|e| &e.attr == attr && &e.kind == kind)
                {
                    Some(at) => at,
                    None => {
                        multi.push(MultiEntry {
                            attr: attr.clone(),
                            kind: kind.clone(),
                            primary: false,
                            fields: Map::new(),
                        });
                        multi.len() - 1
                    }
                };
                let entry = &mut multi[at];
                if entry.fields.contains_key(sub) {
                    return Err(format!(
                        "`{attr}` entry{} has two values for `{sub}`",
                        kind.as_deref()
                            .map(|k| format!(" of type `{k}`"))
                            .unwrap_or_default()
                    ));
                }
                entry.primary |= *primary;
                entry.fields.insert(sub.clone(), v);
            }
        }
    }
    for MultiEntry {
        attr,
        kind,
        primary,
        fields: mut entry,
    } in multi
    {
        if let Some(k) = kind {
            entry.insert("type".into(), Value::String(k));
        }
        if primary {
            entry.insert("primary".into(), Value::Bool(true));
        }
        let list = resource
            .entry(attr.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = list else {
            return Err(format!(
                "`{attr}` is used both as a single value and a list"
            ));
        };
        list.push(Value::Object(entry));
    }
    if let Some(Value::Array(schemas)) = resource.get_mut("schemas") {
        schemas.extend(extensions.into_iter().map(Value::String));
    }
    resource.insert("active".into(), Value::Bool(true));
    Ok(Value::Object(resource))
}

/// One entry of a multi-valued attribute being built.
struct MultiEntry {
    attr: String,
    kind: Option<String>,
    primary: bool,
    fields: Map<String, Value>,
}

fn set(
    obj: &mut Map<String, Value>,
    attr: &str,
    sub: Option<&str>,
    v: Value,
) -> Result<(), String> {
    match sub {
        None => {
            if obj.contains_key(attr) {
                return Err(format!("`{attr}` is set twice"));
            }
            obj.insert(attr.to_string(), v);
        }
        Some(sub) => {
            let inner = obj
                .entry(attr.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(inner) = inner else {
                return Err(format!(
                    "`{attr}` is set both as a value and through `{attr}.{sub}`"
                ));
            };
            if inner.contains_key(sub) {
                return Err(format!("`{attr}.{sub}` is set twice"));
            }
            inner.insert(sub.to_string(), v);
        }
    }
    Ok(())
}

/// PATCH `replace` operations setting every value of `resource` (from
/// [`build_user`]), one path each. Complex attributes are set sub-attribute
/// by sub-attribute so that sub-attributes not mapped here keep their values;
/// multi-valued attributes are replaced as a whole, as RFC 7644 §3.5.2.3 allows.
pub fn replace_ops(resource: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let Value::Object(obj) = resource else {
        return ops;
    };
    let op = |path: String, value: &Value| json!({"op": "replace", "path": path, "value": value});
    for (key, value) in obj {
        if key == "schemas" {
            continue;
        }
        match value {
            Value::Object(inner) if has_urn_prefix(key) => {
                for (attr, v) in inner {
                    match v {
                        Value::Object(subs) => {
                            for (sub, sv) in subs {
                                ops.push(op(format!("{key}:{attr}.{sub}"), sv));
                            }
                        }
                        _ => ops.push(op(format!("{key}:{attr}"), v)),
                    }
                }
            }
            Value::Object(inner) => {
                for (sub, v) in inner {
                    ops.push(op(format!("{key}.{sub}"), v));
                }
            }
            _ => ops.push(op(key.clone(), value)),
        }
    }
    // A stable order, whatever the JSON map's own order is.
    ops.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    ops
}

/// A PATCH request body (RFC 7644 §3.5.2).
pub fn patch_body(operations: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
}

/// The PATCH that deactivates an account.
pub fn deactivate_body() -> Value {
    patch_body(vec![
        json!({"op": "replace", "path": "active", "value": false}),
    ])
}

/// One PATCH adding every id as a member.
pub fn add_members_body(ids: &[&str]) -> Value {
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    patch_body(vec![
        json!({"op": "add", "path": "members", "value": members}),
    ])
}

/// One PATCH removing every id, one `remove` operation each, each naming
/// its member with a value filter (RFC 7644 §3.5.2.2).
pub fn remove_members_body(ids: &[&str]) -> Value {
    let ops = ids
        .iter()
        .map(|id| json!({"op": "remove", "path": format!("members[value eq {}]", filter_string(id))}))
        .collect();
    patch_body(ops)
}

/// The body creating a group.
pub fn group_body(display_name: &str) -> Value {
    json!({"schemas": [GROUP_SCHEMA], "displayName": display_name})
}

// -------------------------------------------------------- filters and URLs

/// A filter's string literal: a JSON string (RFC 7644 §3.4.2.2 `compValue`),
/// quotes included, with `"`, `\` and control characters escaped, so no value
/// can end the literal and add filter syntax of its own.
pub fn filter_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `attr eq "value"`, the value escaped.
pub fn eq_filter(attr: &str, value: &str) -> String {
    format!("{attr} eq {}", filter_string(value))
}

/// Percent-encodes one query value or path segment: everything but RFC 3986
/// unreserved characters, so spaces become `%20`, never `+`, which some
/// providers would not decode in a filter.
pub fn encode(value: &str) -> String {
    crate::template::encode_component(value)
}

/// The shape of a SCIM request path, for the call log: the resource type
/// kept, a resource ID as `{id}`, query values as `…` (they hold subjects).
pub fn path_template(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let mut out = String::new();
    if let Some(kind) = segments.next() {
        out.push('/');
        out.push_str(kind);
    }
    if segments.next().is_some() {
        out.push_str("/{id}");
    }
    if let Some(q) = query {
        let names: Vec<&str> = q
            .split('&')
            .filter_map(|kv| kv.split('=').next())
            .filter(|k| !k.is_empty())
            .collect();
        out.push('?');
        out.push_str(
            &names
                .iter()
                .map(|k| format!("{k}=…"))
                .collect::<Vec<_>>()
                .join("&"),
        );
    }
    out
}

/// `?k=v&...` from unencoded pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

// ------------------------------------------------------- reading answers

/// `key` of a JSON object, compared case-insensitively (SCIM attribute names
/// are case-insensitive, RFC 7643 §2.1); the exact spelling wins.
pub fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A resource's `id` as a string (some providers send numbers).
pub fn resource_id(resource: &Value) -> Option<String> {
    scalar(get_ci(resource, "id")?).filter(|s| !s.is_empty())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value at an attribute path (`userName`, `emails.value`,
/// `urn:...:User:employeeNumber`) of a resource. For a multi-valued attribute
/// the primary entry is read, else the first.
pub fn attribute_value(resource: &Value, path: &str) -> Option<String> {
    attribute_values(resource, path).into_iter().next()
}

/// Every value at an attribute path, the primary entry's first: a filter
/// such as `emails.value eq "..."` matches any of them.
pub fn attribute_values(resource: &Value, path: &str) -> Vec<String> {
    let (holder, rest) = if has_urn_prefix(path) {
        match path
            .rsplit_once(':')
            .and_then(|(urn, rest)| Some((get_ci(resource, urn)?, rest)))
        {
            Some(found) => found,
            None => return Vec::new(),
        }
    } else {
        (resource, path)
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    let read = |v: &Value| match (v, sub) {
        (Value::Object(_), Some(sub)) => get_ci(v, sub).and_then(scalar),
        (Value::Object(_), None) => get_ci(v, "value").and_then(scalar),
        (_, None) => scalar(v),
        (_, Some(_)) => None,
    };
    match get_ci(holder, attr) {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let is_primary =
                |i: &&Value| get_ci(i, "primary").and_then(Value::as_bool) == Some(true);
            items
                .iter()
                .filter(is_primary)
                .chain(items.iter().filter(|i| !is_primary(i)))
                .filter_map(read)
                .collect()
        }
        Some(v) => read(v).into_iter().collect(),
    }
}

/// Whether a resource says it is active; a resource that does not say is.
pub fn is_active(resource: &Value) -> bool {
    match get_ci(resource, "active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        _ => true,
    }
}

/// One page of a `ListResponse` (RFC 7644 §3.4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub resources: Vec<Value>,
    /// `totalResults`, when the server said.
    pub total_results: Option<u64>,
}

/// Reads a `ListResponse`. `Resources` may be missing when nothing matched.
pub fn parse_list(body: &Value) -> Result<ListPage, String> {
    if !body.is_object() {
        return Err("the list response is not a JSON object".into());
    }
    let resources = match get_ci(body, "Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err("`Resources` is not a list".into()),
    };
    let total_results = match get_ci(body, "totalResults") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(ListPage {
        resources,
        total_results,
    })
}

/// `startIndex`/`count` paging (RFC 7644 §3.4.2.4) that trusts only what the
/// server actually returned: the next index moves by the number of resources
/// received (servers may return fewer than asked, and may omit
/// `itemsPerPage`), listing stops once `totalResults` are consumed or at an
/// empty page, resources seen twice (the list shifted under us) are dropped,
/// and a page of nothing but repeats is an error: the server ignores
/// `startIndex`, and going on would loop.
#[derive(Debug, Clone)]
pub struct Paging {
    page_size: usize,
    next_start: u64,
    total: Option<u64>,
    pages: u32,
    finished: bool,
    seen: HashSet<String>,
}

impl Paging {
    /// `page_size` is `[scim] page_size`, which validation keeps within
    /// 1..=1000.
    pub fn new(page_size: usize) -> Self {
        Paging {
            page_size,
            next_start: 1,
            total: None,
            pages: 0,
            finished: false,
            seen: HashSet::new(),
        }
    }

    /// `(startIndex, count)` of the next page, `None` when listing is done.
    pub fn next(&self) -> Option<(u64, usize)> {
        (!self.finished).then_some((self.next_start, self.page_size))
    }

    /// Takes one page; returns its resources with an `id` not seen before.
    pub fn accept(&mut self, page: ListPage) -> Result<Vec<Value>, String> {
        self.pages += 1;
        if page.total_results.is_some() {
            self.total = page.total_results;
        }
        if page.resources.is_empty() {
            self.finished = true;
            return Ok(Vec::new());
        }
        let received = page.resources.len() as u64;
        let mut fresh = Vec::with_capacity(page.resources.len());
        // A resource without an id cannot be acted on; dropping it here
        // also keeps id-less pages from defeating the repeat check.
        for r in page.resources {
            if resource_id(&r).is_some_and(|id| self.seen.insert(id)) {
                fresh.push(r);
            }
        }
        if fresh.is_empty() {
            self.finished = true;
            return Err(format!(
                "the page at startIndex {} brings nothing new (only repeats or resources without `id`): the server seems to ignore startIndex",
                self.next_start
            ));
        }
        self.next_start += received;
        if self.total.is_some_and(|t| self.next_start > t) {
            self.finished = true;
        } else if self.pages >= MAX_PAGES {
            self.finished = true;
            return Err(format!(
                "still not at the end after {MAX_PAGES} pages; refusing to read on"
            ));
        }
        Ok(fresh)
    }

    /// Pages still to read, when the server said how many resources there are.
    pub fn pages_left(&self) -> Option<u64> {
        if self.finished {
            return Some(0);
        }
        let total = self.total?;
        let left = total.saturating_sub(self.next_start.saturating_sub(1));
        Some(left.div_ceil(self.page_size as u64))
    }
}

/// One entry of a group's `members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub value: String,
    /// `display`, if sent: often the userName, but providers fill it with the
    /// display name too, so it is only trusted when configured.
    pub display: Option<String>,
}

/// The user members of a group resource; nested groups (`type: "Group"`) are
/// left out, they are not accounts.
pub fn parse_members(group: &Value) -> Vec<Member> {
    let Some(Value::Array(items)) = get_ci(group, "members") else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|m| {
            !get_ci(m, "type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("Group"))
        })
        .filter_map(|m| {
            let value = scalar(get_ci(m, "value")?).filter(|v| !v.is_empty())?;
            let display = get_ci(m, "display")
                .and_then(scalar)
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty());
            Some(Member { value, display })
        })
        .collect()
}

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: Option<u16>,
    /// `uniqueness`, `noTarget`, `invalidFilter`, ...
    pub scim_type: Option<String>,
}

/// Recognises a SCIM error body: the Error schema, or at least a `scimType`.
pub fn parse_error(body: &Value) -> Option<ScimError> {
    let has_schema = get_ci(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|u| u.as_str() == Some(ERROR_SCHEMA)));
    let scim_type = get_ci(body, "scimType")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !has_schema && scim_type.is_none() {
        return None;
    }
    let status = get_ci(body, "status").and_then(|s| match s {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Some(ScimError { status, scim_type })
}

/// Whether an answer says "already exists": 409, or a `uniqueness` error
/// whatever its status (some providers use 400).
pub fn is_uniqueness(status: u16, body: &Value) -> bool {
    status == 409
        || parse_error(body).is_some_and(|e| {
            e.scim_type
                .is_some_and(|t| t.eq_ignore_ascii_case("uniqueness"))
        })
}

/// Whether an answer says "nothing there to change": 404, or `noTarget`
/// (RFC 7644 §3.5.2.2: a remove whose filter matched no member).
pub fn is_absent(status: u16, body: &Value) -> bool {
    status == 404
        || parse_error(body).is_some_and(|e| {
            e.scim_type
                .is_some_and(|t| t.eq_ignore_ascii_case("noTarget"))
        })
}
