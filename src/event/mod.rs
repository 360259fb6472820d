//! The event wire format (docs/events.md): parsing and validation of what
//! producers publish. Parsing never panics; anything invalid is an [`InvalidEvent`] with a
//! reason fit for the dead-letter headers.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// LDAP-style attributes: name -> values.
pub type Attributes = BTreeMap<String, Vec<String>>;

/// Default upper bound on the body of one event (`[amqp] max_event_bytes`);
/// larger bodies are invalid, not parsed.
pub const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// What an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Add,
    Update,
    Delete,
    MembershipSync,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::MembershipSync => "membership_sync",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subject(s) an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subjects {
    /// add / update / delete: one subject and its attributes.
    One {
        subject: String,
        attributes: Attributes,
    },
    /// membership_sync: the full list, with optional per-subject attributes.
    All {
        subjects: Vec<String>,
        attributes: BTreeMap<String, Attributes>,
    },
}

/// A validated event. Group and subjects are lowercased, as the original did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event id: the body's `id`, else the AMQP `message_id`, else a hash of the body.
    pub id: String,
    pub action: Action,
    /// Local group, lowercased.
    pub group: String,
    pub subjects: Subjects,
    /// Who caused the change (for on-behalf-of headers), if the producer said.
    pub actor: Option<String>,
    /// When the change happened at the source (RFC 3339), if the producer said.
    pub timestamp: Option<String>,
    /// An operator's override of the mass-deprovision guard for this one
    /// event. Never read from the body: the consumer sets it from the
    /// `x-allow-removals` header that `dead-letters requeue --allow-removals`
    /// puts on the messages it re-queues.
    pub allow_removals: bool,
}

impl Event {
    /// The single subject of an add/update/delete; `None` for membership_sync.
    pub fn subject(&self) -> Option<&str> {
        match &self.subjects {
            Subjects::One { subject, .. } => Some(subject),
            Subjects::All { .. } => None,
        }
    }

    /// A short human description of the subject part, for logs and the journal.
    pub fn subject_label(&self) -> String {
        match &self.subjects {
            Subjects::One { subject, .. } => subject.clone(),
            Subjects::All { subjects, .. } if subjects.len() == 1 => "1 subject".to_string(),
            Subjects::All { subjects, .. } => format!("{} subjects", subjects.len()),
        }
    }
}

/// Why a message body is not a valid event. The message is safe to log: it
/// never echoes more than a short prefix of a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {reason}")]
pub struct InvalidEvent {
    pub reason: String,
    /// The id the event would have had, for the dead-letter record.
    pub id: String,
}

/// The id used when neither the body nor the AMQP properties give one.
pub fn body_hash_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("sha256:{}", &hex::encode(digest)[..16])
}

fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses and validates one message body. `message_id` is the AMQP property.
pub fn parse(body: &[u8], message_id: Option<&str>) -> Result<Event, InvalidEvent> {
    parse_at_most(body, message_id, MAX_EVENT_BYTES)
}

/// [`parse`] with another size limit: a body longer than `max_bytes` is
/// invalid without being read.
pub fn parse_at_most(
    body: &[u8],
    message_id: Option<&str>,
    max_bytes: usize,
) -> Result<Event, InvalidEvent> {
    let fallback_id = || {
        message_id
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| body_hash_id(body))
    };
    let invalid = |id: String, reason: String| InvalidEvent { reason, id };

    if body.len() > max_bytes {
        return Err(invalid(
            fallback_id(),
            format!(
                "body is {} bytes, more than the limit of {max_bytes} ([amqp] max_event_bytes)",
                body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| invalid(fallback_id(), format!("body is not UTF-8: {e}")))?;
    // serde_json limits nesting depth (128) itself, so deep input is an error, not a stack overflow.
    let value: Value = serde_json::from_str(text)
        .map_err(|e| invalid(fallback_id(), format!("body is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid(
            fallback_id(),
            format!("body is {}, expected a JSON object", type_name(&value)),
        ));
    };

    let id = match obj.get("id") {
        None | Some(Value::Null) => fallback_id(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(invalid(
                fallback_id(),
                format!("`id` is {}, expected a non-empty string", type_name(other)),
            ))
        }
    };

    let string_field = |name: &str| -> Result<Option<String>, InvalidEvent> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(
                id.clone(),
                format!("`{name}` is {}, expected a string", type_name(other)),
            )),
        }
    };
    let required = |name: &str| -> Result<String, InvalidEvent> {
        match string_field(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(invalid(id.clone(), format!("`{name}` is empty"))),
            None => Err(invalid(id.clone(), format!("missing field `{name}`"))),
        }
    };

    let action = match required("action")?.as_str() {
        "add" => Action::Add,
        "update" => Action::Update,
        "delete" => Action::Delete,
        "membership_sync" => Action::MembershipSync,
        other => {
            return Err(invalid(
                id.clone(),
                format!(
                    "unknown action `{}` (expected add, update, delete or membership_sync)",
                    clip(other)
                ),
            ))
        }
    };
    let group = required("group")?.trim().to_lowercase();
    let actor = string_field("actor")?;
    let timestamp = string_field("timestamp")?;
    if let Some(ts) = &timestamp {
        if time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_err()
        {
            return Err(invalid(
                id.clone(),
                format!("`timestamp` `{}` is not RFC 3339", clip(ts)),
            ));
        }
    }

    let subjects = if action == Action::MembershipSync {
        let list = match obj.get("subjects") {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid(
                    id.clone(),
                    format!(
                        "`subjects` is {}, expected an array of strings",
                        type_name(other)
                    ),
                ))
            }
            None => return Err(invalid(id.clone(), "missing field `subjects`".into())),
        };
        let mut subjects = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            match item {
                Value::String(s) if !s.trim().is_empty() => subjects.push(s.trim().to_lowercase()),
                Value::String(_) => {
                    return Err(invalid(id.clone(), format!("`subjects[{i}]` is empty")))
                }
                other => {
                    return Err(invalid(
                        id.clone(),
                        format!("`subjects[{i}]` is {}, expected a string", type_name(other)),
                    ))
                }
            }
        }
        subjects.sort();
        subjects.dedup();
        let mut per_subject = BTreeMap::new();
        match obj.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (subject, attrs) in map {
                    let parsed = parse_attributes(attrs, &format!("attributes.{}", clip(subject)))
                        .map_err(|r| invalid(id.clone(), r))?;
                    per_subject.insert(subject.trim().to_lowercase(), parsed);
                }
            }
            Some(other) => {
                return Err(invalid(
                    id.clone(),
                    format!(
                        "`attributes` is {}, expected an object of subject -> attributes",
                        type_name(other)
                    ),
                ))
            }
        }
        Subjects::All {
            subjects,
            attributes: per_subject,
        }
    } else {
        let subject = required("subject")?.trim().to_lowercase();
        let attributes = match obj.get("attributes") {
            None | Some(Value::Null) => Attributes::new(),
            Some(v) => parse_attributes(v, "attributes").map_err(|r| invalid(id.clone(), r))?,
        };
        Subjects::One {
            subject,
            attributes,
        }
    };

    Ok(Event {
        id,
        action,
        group,
        subjects,
        actor,
        timestamp,
        allow_removals: false,
    })
}

/// Attribute values are lists of strings; a bare string or number is taken as
/// a one-element list, since some producers send single values that way.
fn parse_attributes(value: &Value, path: &str) -> Result<Attributes, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "`{path}` is {}, expected an object of name -> list of strings",
            type_name(value)
        ));
    };
    let mut out = Attributes::new();
    for (name, v) in map {
        let values = match v {
            Value::Null => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Number(n) => vec![n.to_string()],
            Value::Bool(b) => vec![b.to_string()],
            Value::Array(items) => {
                let mut vals = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => vals.push(s.clone()),
                        Value::Number(n) => vals.push(n.to_string()),
                        Value::Bool(b) => vals.push(b.to_string()),
                        other => {
                            return Err(format!(
                                "`{path}.{}[{i}]` is {}, expected a string",
                                clip(name),
                                type_name(other)
                            ))
                        }
                    }
                }
                vals
            }
            Value::Object(_) => {
                return Err(format!(
                    "`{path}.{}` is an object, expected a list of strings",
                    clip(name)
                ))
            }
        };
        out.insert(name.clone(), values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
