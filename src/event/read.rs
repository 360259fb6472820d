//! The serde half of [`parse`](super::parse): reading a body without building
//! a `serde_json::Value` of it. A `Value` of a 100,000-subject sync is more
//! than ten times the size of its text; here the body is walked in place,
//! each field is borrowed as raw text, and only what the event keeps is
//! allocated. Every visitor records a problem as a value (the reason of an
//! invalid event) instead of failing, so that serde's errors are only ever
//! about the JSON itself.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Number;

use super::{Attributes, PackedAttributes, SyncSubject};

/// A JSON value read for its type, and for its value when it is a scalar.
/// The insides of arrays and objects are read as `Item`s too, so serde_json
/// checks them exactly as it checks a `Value` (nesting depth included), but
/// nothing of them is kept.
#[derive(Debug)]
pub(super) enum Item<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl<'a> Item<'a> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Item::Null => "null",
            Item::Bool(_) => "a boolean",
            Item::Number(_) => "a number",
            Item::Str(_) => "a string",
            Item::Array => "an array",
            Item::Object => "an object",
        }
    }

    /// The text of a scalar an attribute value may be: a string as it is, a
    /// number or a boolean as its JSON text.
    fn attribute_text(self) -> Result<String, Item<'a>> {
        match self {
            Item::Str(s) => Ok(s.into_owned()),
            Item::Number(n) => Ok(n.to_string()),
            Item::Bool(b) => Ok(b.to_string()),
            other => Err(other),
        }
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Item<'de>, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Item<'de>, E> {
        Ok(Item::Null)
    }
    fn visit_none<E>(self) -> Result<Item<'de>, E> {
        Ok(Item::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Item<'de>, E> {
        Ok(Item::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Item<'de>, E> {
        Ok(Item::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Item<'de>, E> {
        Ok(Item::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Item<'de>, E> {
        // As `Value` reads it: a float JSON cannot hold becomes null.
        Ok(Number::from_f64(v).map_or(Item::Null, Item::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<Item>()?.is_some() {}
        Ok(Item::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        while map.next_entry::<Item, Item>()?.is_some() {}
        Ok(Item::Object)
    }
}

/// The top-level fields an event reads, each as its raw text in the body.
/// A field given twice counts with its last value, as in a `Value`.
#[derive(Debug, Default)]
pub(super) struct Fields<'a> {
    pub id: Option<&'a RawValue>,
    pub action: Option<&'a RawValue>,
    pub group: Option<&'a RawValue>,
    pub subject: Option<&'a RawValue>,
    pub subjects: Option<&'a RawValue>,
    pub attributes: Option<&'a RawValue>,
    pub actor: Option<&'a RawValue>,
    pub timestamp: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a RawValue>> {
        Some(match name {
            "id" => &mut self.id,
            "action" => &mut self.action,
            "group" => &mut self.group,
            "subject" => &mut self.subject,
            "subjects" => &mut self.subjects,
            "attributes" => &mut self.attributes,
            "actor" => &mut self.actor,
            "timestamp" => &mut self.timestamp,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<String>()? {
            match fields.slot(&key) {
                Some(slot) => *slot = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// What a field held: its value, or the reason it cannot be used.
pub(super) type Read<T> = Result<T, String>;

/// `subjects`: each entry trimmed and lowercased (its attributes still to
/// come), or the first bad entry.
pub(super) struct SubjectList(pub Read<Vec<SyncSubject>>);

impl<'de> Deserialize<'de> for SubjectList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SubjectList, D::Error> {
        d.deserialize_seq(SubjectListVisitor)
    }
}

struct SubjectListVisitor;

impl<'de> Visitor<'de> for SubjectListVisitor {
    type Value = SubjectList;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SubjectList, A::Error> {
        let mut subjects = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut problem = None;
        let mut i = 0usize;
        // Read to the end even past a problem: serde_json wants the whole array.
        while let Some(item) = seq.next_element::<Item>()? {
            if problem.is_none() {
                match item {
                    Item::Str(s) if !s.trim().is_empty() => subjects.push(SyncSubject {
                        subject: s.trim().to_lowercase(),
                        attributes: None,
                    }),
                    Item::Str(_) => problem = Some(format!("`subjects[{i}]` is empty")),
                    other => {
                        problem = Some(format!(
                            "`subjects[{i}]` is {}, expected a string",
                            other.type_name()
                        ))
                    }
                }
            }
            i += 1;
        }
        Ok(SubjectList(problem.map_or(Ok(subjects), Err)))
    }
}

/// One subject's attributes (an object of name -> list of strings), read as
/// [`Attributes`]; `path` names it in the reason of a problem.
pub(super) struct AttributesSeed<'p> {
    pub path: &'p str,
}

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_> {
    type Value = Read<Attributes>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Read<Attributes>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_> {
    type Value = Read<Attributes>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of name -> list of strings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<Attributes>, A::Error> {
        let mut out = Attributes::new();
        let mut problem = None;
        while let Some(name) = map.next_key::<String>()? {
            let values = map.next_value::<Values>()?.0;
            if problem.is_some() {
                continue;
            }
            match values {
                Ok(v) => {
                    out.insert(name, v);
                }
                Err(ValuesProblem::Object) => {
                    problem = Some(format!(
                        "`{}.{}` is an object, expected a list of strings",
                        self.path,
                        super::clip(&name)
                    ))
                }
                Err(ValuesProblem::Entry(i, type_name)) => {
                    problem = Some(format!(
                        "`{}.{}[{i}]` is {type_name}, expected a string",
                        self.path,
                        super::clip(&name)
                    ))
                }
            }
        }
        Ok(problem.map_or(Ok(out), Err))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Read<Attributes>, A::Error> {
        let item = ItemVisitor.visit_seq(seq)?;
        Ok(Err(self.not_an_object(&item)))
    }
    fn visit_unit<E>(self) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&Item::Null)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&Item::Bool(v))))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&Item::Number(v.into()))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&Item::Number(v.into()))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&ItemVisitor.visit_f64::<E>(v)?)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Read<Attributes>, E> {
        Ok(Err(self.not_an_object(&Item::Str(Cow::Borrowed("")))))
    }
}

impl AttributesSeed<'_> {
    fn not_an_object(&self, item: &Item<'_>) -> String {
        format!(
            "`{}` is {}, expected an object of name -> list of strings",
            self.path,
            item.type_name()
        )
    }
}

enum ValuesProblem {
    /// The value is an object.
    Object,
    /// Entry `i` of the list is of this type, not a scalar.
    Entry(usize, &'static str),
}

/// One attribute's values: a list of scalars, or a single scalar taken as a
/// one-element list (null as none).
struct Values(Result<Vec<String>, ValuesProblem>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
        d.deserialize_any(ValuesVisitor)
    }
}

struct ValuesVisitor;

impl ValuesVisitor {
    fn one<E>(item: Item<'_>) -> Result<Values, E> {
        Ok(Values(match item.attribute_text() {
            Ok(text) => Ok(vec![text]),
            Err(Item::Null) => Ok(Vec::new()),
            Err(_) => Err(ValuesProblem::Object),
        }))
    }
}

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Values;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_unit<E>(self) -> Result<Values, E> {
        Self::one(Item::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Values, E> {
        Self::one(Item::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Values, E> {
        Self::one(Item::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Values, E> {
        Self::one(Item::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Values, E> {
        Self::one(ItemVisitor.visit_f64::<E>(v)?)
    }
    fn visit_str<E>(self, v: &str) -> Result<Values, E> {
        Ok(Values(Ok(vec![v.to_string()])))
    }
    fn visit_string<E>(self, v: String) -> Result<Values, E> {
        Ok(Values(Ok(vec![v])))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Values, A::Error> {
        ItemVisitor.visit_map(map)?;
        Ok(Values(Err(ValuesProblem::Object)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut problem = None;
        let mut i = 0usize;
        while let Some(item) = seq.next_element::<Item>()? {
            match item.attribute_text() {
                Ok(text) if problem.is_none() => values.push(text),
                Ok(_) => {}
                Err(other) => {
                    problem.get_or_insert(ValuesProblem::Entry(i, other.type_name()));
                }
            }
            i += 1;
        }
        Ok(Values(problem.map_or(Ok(values), Err)))
    }
}

/// The `attributes` of a membership_sync (subject -> attributes), read as
/// each subject is met. A subject that is one of `subjects` (sorted) gets
/// its attributes, packed; the others are only checked.
pub(super) struct SyncAttributesSeed<'a> {
    pub subjects: &'a mut [SyncSubject],
}

impl<'de> DeserializeSeed<'de> for SyncAttributesSeed<'_> {
    type Value = Read<()>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Read<()>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SyncAttributesSeed<'_> {
    type Value = Read<()>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of subject -> attributes")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<()>, A::Error> {
        let mut problem = None;
        while let Some(subject) = map.next_key::<String>()? {
            let path = format!("attributes.{}", super::clip(&subject));
            let read = map.next_value_seed(AttributesSeed { path: &path })?;
            if problem.is_some() {
                continue;
            }
            match read {
                // A later entry for the same subject wins, as a later key does in JSON.
                Ok(attributes) => {
                    let key = subject.trim().to_lowercase();
                    let Ok(at) = self
                        .subjects
                        .binary_search_by(|s| s.subject.as_str().cmp(&key))
                    else {
                        continue;
                    };
                    match PackedAttributes::pack(&attributes) {
                        Ok(packed) => {
                            if let Some(s) = self.subjects.get_mut(at) {
                                s.attributes = Some(packed);
                            }
                        }
                        Err(reason) => problem = Some(format!("`{path}`: {reason}")),
                    }
                }
                Err(reason) => problem = Some(reason),
            }
        }
        Ok(problem.map_or(Ok(()), Err))
    }
}
