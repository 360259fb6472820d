//! The pure half of the `rest` adapter: template contexts, bodies, JSON
//! pointer reads, paging parameters and next links. No I/O here.

use serde_json::Value as Json;

use crate::event::Attributes;
use crate::target::{RemoteAccount, RemoteGroup};
use crate::template::encode_component;

/// The values templates see (docs/configuration.md, `[rest]`). A value left
/// `None` is undefined in
/// the template, so it renders empty (and is refused in a URL path).
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub subject: Option<&'a str>,
    pub match_value: Option<&'a str>,
    pub attributes: Option<&'a Attributes>,
    pub api_id: Option<&'a str>,
    pub group: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub actor: Option<&'a str>,
}

impl Vars<'_> {
    pub fn context(&self) -> minijinja::Value {
        let text = [
            ("subject", self.subject),
            ("match", self.match_value),
            ("api_id", self.api_id),
            ("group", self.group),
            ("group_id", self.group_id),
            ("actor", self.actor),
        ];
        let mut pairs: Vec<(&str, minijinja::Value)> = text
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, minijinja::Value::from(v))))
            .collect();
        if let Some(a) = self.attributes {
            pairs.push(("attributes", minijinja::Value::from_serialize(a)));
        }
        pairs.into_iter().collect()
    }
}

/// The text at a pointer: a string, or a number as its decimal text (APIs
/// often use numeric IDs). Missing, empty, null and other types are `None`.
pub fn pointer_text(value: &Json, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer at a pointer (a number or numeric text).
pub fn pointer_count(value: &Json, pointer: &str) -> Option<u64> {
    match value.pointer(pointer)? {
        Json::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The items of a list response. A missing or null array is an empty page
/// (APIs often leave out empty lists); anything else but an array is an error.
pub fn items<'a>(value: &'a Json, pointer: &str) -> Result<&'a [Json], String> {
    match value.pointer(pointer) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(a)) => Ok(a),
        Some(_) => Err(format!("the response's `{pointer}` is not an array")),
    }
}

/// The account of a list item; `None` (with a warning) for an item without
/// an ID or a match value. Match values are lowercased, as local ones are.
pub fn account(
    operation: &str,
    index: usize,
    item: &Json,
    id: &str,
    match_pointer: &str,
) -> Option<RemoteAccount> {
    match (pointer_text(item, id), pointer_text(item, match_pointer)) {
        (Some(api_id), Some(m)) => Some(RemoteAccount {
            api_id,
            match_value: m.to_lowercase(),
            in_step: false,
        }),
        _ => {
            tracing::warn!(
                operation,
                index,
                id_pointer = id,
                match_pointer,
                "list item has no ID or no match value; skipped"
            );
            None
        }
    }
}

/// Whether an update whose rendered body is `body` would change nothing on
/// `item`, the account as the target showed it: every place `compare` names
/// (body pointer, item pointer) holds the same in both, or without
/// `compare`, the item holds every leaf of the body at the same place.
pub fn in_step(body: &Json, item: &Json, compare: Option<&[(String, String)]>) -> bool {
    match compare {
        None => covers(item, body),
        Some(places) => places.iter().all(|(in_body, in_item)| {
            match (body.pointer(in_body), item.pointer(in_item)) {
                (Some(want), Some(have)) => covers(have, want),
                _ => false,
            }
        }),
    }
}

/// Whether `have` holds all of `want`: an object every key of `want` with a
/// value that holds its value (other keys do not matter), an array as many
/// entries each holding its counterpart, a scalar the same text (a template
/// renders a string where the API may answer a number or a boolean).
pub fn covers(have: &Json, want: &Json) -> bool {
    match (have, want) {
        (Json::Object(have), Json::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| covers(h, w))),
        (Json::Array(have), Json::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| covers(h, w))
        }
        (Json::Null, Json::Null) => true,
        (have, want) => match (scalar_text(have), scalar_text(want)) {
            (Some(h), Some(w)) => h == w,
            _ => false,
        },
    }
}

fn scalar_text(value: &Json) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Json::String(s) => Some(s.as_str().into()),
        Json::Number(n) => Some(n.to_string().into()),
        Json::Bool(b) => Some(b.to_string().into()),
        _ => None,
    }
}

/// The group of a list item; `None` (with a warning) for an item without an
/// ID or a name.
pub fn group(
    operation: &str,
    index: usize,
    item: &Json,
    id: &str,
    name: &str,
) -> Option<RemoteGroup> {
    match (pointer_text(item, id), pointer_text(item, name)) {
        (Some(api_id), Some(name)) => Some(RemoteGroup { name, api_id }),
        _ => {
            tracing::warn!(
                operation,
                index,
                id_pointer = id,
                name_pointer = name,
                "list item has no ID or no name; skipped"
            );
            None
        }
    }
}

/// Sets a query parameter, replacing any the URL template already had.
pub fn set_query_param(path_and_query: &str, name: &str, value: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let name = encode_component(name);
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name.as_str()))
        .map(str::to_string)
        .collect();
    pairs.push(format!("{name}={}", encode_component(value)));
    format!("{path}?{}", pairs.join("&"))
}

/// Where a next link leads, as a request target for [`crate::http::HttpClient`]:
/// relative to the url_prefix it falls under when it does (so failover keeps
/// working), else absolute. `current` is the request that returned the link
/// (relative to the first prefix, or absolute). A link to another host is
/// refused: it would carry the provisioner's credentials elsewhere.
pub fn resolve_link(prefixes: &[String], current: &str, link: &str) -> Result<String, String> {
    let first = prefixes
        .first()
        .ok_or_else(|| "no url_prefix configured".to_string())?;
    let base = if is_absolute(current) {
        url::Url::parse(current)
    } else {
        url::Url::parse(&format!("{first}{current}"))
    }
    .map_err(|e| format!("cannot parse the current URL: {e}"))?;
    let next = base
        .join(link)
        .map_err(|e| format!("the next link is not a URL: {e}"))?;
    let same_origin = prefixes.iter().any(|p| {
        url::Url::parse(p)
            .map(|u| u.origin() == next.origin())
            .unwrap_or(false)
    });
    if !same_origin {
        return Err(format!(
            "the next link points to `{}`, which is not the host of url_prefix",
            next.host_str().unwrap_or("?")
        ));
    }
    let text = next.as_str();
    for prefix in prefixes {
        if let Some(rest) = text.strip_prefix(prefix.as_str()) {
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return Ok(rest.to_string());
            }
        }
    }
    Ok(text.to_string())
}

/// Whether a request target is an absolute `http(s)://` URL.
pub fn is_absolute(target: &str) -> bool {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
