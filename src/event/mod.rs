//! The event wire format (docs/events.md): parsing and validation of what
//! producers publish. Parsing never panics; anything invalid is an [`InvalidEvent`] with a
//! reason fit for the dead-letter headers.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeSeed;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

mod read;

use read::{AttributesSeed, Fields, Item, SubjectList, SyncAttributesSeed};

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
    /// membership_sync: the full list (sorted, without duplicates), each
    /// subject with the attributes the event gave it.
    All { subjects: Vec<SyncSubject> },
}

/// One subject of a membership_sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSubject {
    /// Trimmed and lowercased.
    pub subject: String,
    /// `None` when the event gave the subject no attributes.
    pub attributes: Option<PackedAttributes>,
}

/// One subject's attributes as compact JSON text (`{"mail":["a@x"]}`),
/// checked and normalised when the event was parsed, unpacked when the
/// subject's turn comes: an [`Attributes`] map takes several times the room
/// of its text, and a sync of 100,000 subjects would hold them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedAttributes(Box<str>);

impl PackedAttributes {
    pub fn pack(attributes: &Attributes) -> Result<Self, String> {
        serde_json::to_string(attributes)
            .map(|text| PackedAttributes(text.into_boxed_str()))
            .map_err(|e| format!("attributes cannot be stored: {e}"))
    }

    /// The attributes. Only text that [`pack`](Self::pack) wrote is held, so
    /// this fails only if that stopped being JSON.
    pub fn unpack(&self) -> Result<Attributes, String> {
        serde_json::from_str(&self.0).map_err(|e| format!("stored attributes unreadable: {e}"))
    }
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
    // The whole body first, read as serde_json reads a `Value` (so with its
    // nesting limit of 128, and its messages) but keeping nothing: whether
    // it is JSON at all comes before any field.
    let top: Item = serde_json::from_str(text)
        .map_err(|e| invalid(fallback_id(), format!("body is not JSON: {e}")))?;
    if !matches!(top, Item::Object) {
        return Err(invalid(
            fallback_id(),
            format!("body is {}, expected a JSON object", top.type_name()),
        ));
    }
    let fields: Fields<'_> = serde_json::from_str(text)
        .map_err(|e| invalid(fallback_id(), format!("body is not JSON: {e}")))?;

    let id = match scalar(fields.id).map_err(|r| invalid(fallback_id(), r))? {
        None | Some(Item::Null) => fallback_id(),
        Some(Item::Str(s)) if !s.is_empty() => s.into_owned(),
        Some(Item::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(invalid(
                fallback_id(),
                format!("`id` is {}, expected a non-empty string", other.type_name()),
            ))
        }
    };

    let string_field =
        |name: &str, raw: Option<&RawValue>| -> Result<Option<String>, InvalidEvent> {
            match scalar(raw).map_err(|r| invalid(id.clone(), r))? {
                None | Some(Item::Null) => Ok(None),
                Some(Item::Str(s)) => Ok(Some(s.into_owned())),
                Some(other) => Err(invalid(
                    id.clone(),
                    format!("`{name}` is {}, expected a string", other.type_name()),
                )),
            }
        };
    let required = |name: &str, raw: Option<&RawValue>| -> Result<String, InvalidEvent> {
        match string_field(name, raw)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(invalid(id.clone(), format!("`{name}` is empty"))),
            None => Err(invalid(id.clone(), format!("missing field `{name}`"))),
        }
    };

    let action = match required("action", fields.action)?.as_str() {
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
    let group = required("group", fields.group)?.trim().to_lowercase();
    let actor = string_field("actor", fields.actor)?;
    let timestamp = string_field("timestamp", fields.timestamp)?;
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
        let subjects = sync_subjects(&fields).map_err(|r| invalid(id.clone(), r))?;
        Subjects::All { subjects }
    } else {
        let subject = required("subject", fields.subject)?.trim().to_lowercase();
        let attributes = match fields.attributes {
            Some(raw) if !matches!(scalar(Some(raw)), Ok(Some(Item::Null))) => {
                read_raw(raw, AttributesSeed { path: "attributes" })
                    .and_then(|read| read)
                    .map_err(|r| invalid(id.clone(), r))?
            }
            _ => Attributes::new(),
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

/// A field read as an [`Item`]; `None` when the body does not have it.
fn scalar(raw: Option<&RawValue>) -> Result<Option<Item<'_>>, String> {
    raw.map(|r| serde_json::from_str(r.get()).map_err(|e| format!("body is not JSON: {e}")))
        .transpose()
}

/// A field read with a seed. The body was read whole before, so serde_json
/// has nothing left to refuse; its error is kept all the same.
fn read_raw<'de, S: DeserializeSeed<'de>>(raw: &'de RawValue, seed: S) -> Result<S::Value, String> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    seed.deserialize(&mut de)
        .map_err(|e| format!("body is not JSON: {e}"))
}

/// `subjects` (sorted, without duplicates) with their `attributes`.
fn sync_subjects(fields: &Fields<'_>) -> Result<Vec<SyncSubject>, String> {
    let Some(raw) = fields.subjects else {
        return Err("missing field `subjects`".into());
    };
    let mut subjects = match scalar(Some(raw))? {
        Some(Item::Array) => read_raw(raw, PhantomData::<SubjectList>)?.0?,
        other => {
            let type_name = other.map_or("null", |i| i.type_name());
            return Err(format!(
                "`subjects` is {type_name}, expected an array of strings"
            ));
        }
    };
    subjects.sort_unstable_by(|a, b| a.subject.cmp(&b.subject));
    subjects.dedup_by(|a, b| a.subject == b.subject);
    match fields.attributes.map(|raw| (raw, scalar(Some(raw)))) {
        None => {}
        Some((_, Ok(Some(Item::Null)))) => {}
        Some((raw, Ok(Some(Item::Object)))) => read_raw(
            raw,
            SyncAttributesSeed {
                subjects: &mut subjects,
            },
        )??,
        Some((_, Ok(other))) => {
            let type_name = other.map_or("null", |i| i.type_name());
            return Err(format!(
                "`attributes` is {type_name}, expected an object of subject -> attributes"
            ));
        }
        Some((_, Err(e))) => return Err(e),
    }
    Ok(subjects)
}

#[cfg(test)]
mod tests;
