//! The configuration reference follows the code. The keys are read from the
//! serde structs themselves: a probe deserializer hands each struct every
//! field it declares (so serde's renames and every nested table count) and
//! records the key paths, which tables they are, and the values an enum
//! accepts. Each key must then have its own row in a `| key | ...` table of
//! the docs, whose first cell names it with its table:
//! `` `[amqp]` `prefetch` `` (a top-level key has no table; one row may name
//! several keys of one table; `<op>` in a table name stands for any one
//! name). Each enum value must be named in its key's row, and each row must
//! name a key that exists.

use std::collections::BTreeMap;

use provisioner::config::file::{ProvisionerFile, WorkerFile};
use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::support::repo_path;

type Path = Vec<&'static str>;

/// What the probe learned of one key.
#[derive(Debug, Default)]
struct KeyInfo {
    /// Its value is a struct (a table with keys of its own).
    table: bool,
    /// The values of an enum key.
    variants: &'static [&'static str],
}

/// Deserializer methods that answer with a sample value.
macro_rules! samples {
    ($($method:ident => $visit:ident($value:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.$visit($value)
        })*
    };
}

/// A deserializer that answers every request with a sample value, and for
/// a struct with every one of its fields.
struct Probe<'a> {
    path: Path,
    keys: &'a mut BTreeMap<Path, KeyInfo>,
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    // Untagged enums and free-form values (`toml::Value`): a string fits them all.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    samples! {
        deserialize_bool => visit_bool(false),
        deserialize_u8 => visit_u64(1),
        deserialize_u16 => visit_u64(1),
        deserialize_u32 => visit_u64(1),
        deserialize_u64 => visit_u64(1),
        deserialize_i8 => visit_i64(1),
        deserialize_i16 => visit_i64(1),
        deserialize_i32 => visit_i64(1),
        deserialize_i64 => visit_i64(1),
        deserialize_f32 => visit_f64(0.5),
        deserialize_f64 => visit_f64(0.5),
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(SeqDeserializer::new(std::iter::empty::<u64>()))
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_map(MapDeserializer::new(std::iter::empty::<(String, String)>()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        if !self.path.is_empty() {
            self.keys.entry(self.path.clone()).or_default().table = true;
        }
        for field in fields {
            let mut path = self.path.clone();
            path.push(field);
            self.keys.entry(path).or_default();
        }
        v.visit_map(Fields {
            fields,
            next: 0,
            path: self.path,
            keys: self.keys,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.keys.entry(self.path).or_default().variants = variants;
        v.visit_enum(variants[0].into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct
        tuple tuple_struct identifier ignored_any
    }
}

/// A struct's fields, each with a probe for its value.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    path: Path,
    keys: &'a mut BTreeMap<Path, KeyInfo>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.next) {
            Some(field) => seed.deserialize(field.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let mut path = self.path.clone();
        path.push(self.fields[self.next]);
        self.next += 1;
        seed.deserialize(Probe {
            path,
            keys: self.keys,
        })
    }
}

/// Every key of the file `T` is read into.
fn keys_of<T: for<'de> Deserialize<'de>>() -> BTreeMap<Path, KeyInfo> {
    let mut keys = BTreeMap::new();
    if let Err(e) = T::deserialize(Probe {
        path: Vec::new(),
        keys: &mut keys,
    }) {
        panic!(
            "the probe could not read {}: {e}",
            std::any::type_name::<T>()
        );
    }
    keys
}

/// One row of a `| key | ...` table.
#[derive(Debug)]
struct Row {
    /// Where it is, for messages: `docs/configuration.md:42`.
    at: String,
    table: Vec<String>,
    keys: Vec<String>,
    text: String,
}

/// The rows of the key tables in `docs/<file>`, only those under the `## `
/// heading `section` when given.
fn rows(file: &str, section: Option<&str>) -> Vec<Row> {
    let text = std::fs::read_to_string(repo_path(&format!("docs/{file}"))).unwrap();
    let mut out = Vec::new();
    let mut in_section = section.is_none();
    let mut key_table = false;
    let mut previous_was_row = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_section = section.is_none_or(|s| heading.starts_with(s));
        }
        let is_row = line.starts_with('|');
        if is_row && !previous_was_row {
            key_table = first_cell(line) == "key";
        } else if is_row && in_section && key_table && !line.starts_with("| ---") {
            let ticked: Vec<&str> = first_cell(line).split('`').skip(1).step_by(2).collect();
            let (table, keys) = match ticked.split_first() {
                Some((t, rest)) if t.starts_with('[') && t.ends_with(']') => (
                    t[1..t.len() - 1].split('.').map(str::to_string).collect(),
                    rest,
                ),
                _ => (Vec::new(), &ticked[..]),
            };
            out.push(Row {
                at: format!("docs/{file}:{}", i + 1),
                table,
                keys: keys.iter().map(|k| k.to_string()).collect(),
                text: line.to_string(),
            });
        }
        previous_was_row = is_row;
    }
    out
}

fn first_cell(line: &str) -> &str {
    line.split('|').nth(1).unwrap_or("").trim()
}

impl Row {
    fn names(&self, path: &[&str]) -> bool {
        let Some((key, table)) = path.split_last() else {
            return false;
        };
        self.keys.iter().any(|k| k == key) && self.in_table(table)
    }

    fn in_table(&self, table: &[&str]) -> bool {
        self.table.len() == table.len()
            && self
                .table
                .iter()
                .zip(table)
                .all(|(written, t)| written == t || written.starts_with('<'))
    }
}

/// The problems of one file's reference: keys without a row, enum values
/// not named in their row, rows naming no key.
fn check(file: &str, keys: &BTreeMap<Path, KeyInfo>, rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, info) in keys {
        let shown = format!("{file}: `{}`", path.join("."));
        let row = rows.iter().find(|r| r.names(path));
        if info.table {
            // A table is documented by its own rows, or by a row of its parent.
            let listed = rows.iter().any(|r| r.table == *path);
            if row.is_none() && !listed {
                problems.push(format!("{shown}: no row names this table or its keys"));
            }
            continue;
        }
        let Some(row) = row else {
            problems.push(format!("{shown}: no row of its own"));
            continue;
        };
        for variant in info.variants {
            if !row.text.contains(&format!("`{variant}`")) {
                problems.push(format!(
                    "{shown}: its row ({}) does not name `{variant}`",
                    row.at
                ));
            }
        }
    }
    for row in rows {
        for key in &row.keys {
            let known = keys.keys().any(|path| {
                path.split_last()
                    .is_some_and(|(k, table)| k == key && row.in_table(table))
            });
            if !known {
                problems.push(format!("{}: `{key}` is not a key of {file}", row.at));
            }
        }
    }
    problems
}

fn worker_rows() -> Vec<Row> {
    rows("configuration.md", Some("Worker file"))
}

fn provisioner_rows() -> Vec<Row> {
    let mut all = rows("configuration.md", Some("Provisioner file"));
    all.extend(rows("auth.md", None));
    all.extend(rows("scim.md", None));
    all
}

#[test]
fn every_configuration_key_has_a_row_of_its_own() {
    let worker = keys_of::<WorkerFile>();
    let provisioner = keys_of::<ProvisionerFile>();
    // The probe reaches the nested tables, and the enums' values.
    for (keys, path) in [
        (&worker, vec!["amqp", "tls", "client_key"]),
        (
            &provisioner,
            vec!["rest", "groups", "remove_member", "paging", "next"],
        ),
        (&provisioner, vec!["auth", "claims"]),
        (&provisioner, vec!["scim", "member_match"]),
    ] {
        assert!(keys.contains_key(&path), "the probe missed {path:?}");
    }
    assert!(provisioner[&vec!["provision_strategy"]]
        .variants
        .contains(&"create-first"));

    let mut problems = check("the worker file", &worker, &worker_rows());
    problems.extend(check(
        "a provisioner file",
        &provisioner,
        &provisioner_rows(),
    ));
    assert!(
        problems.is_empty(),
        "the configuration reference and the code disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_key_without_a_row_fails_the_check() {
    let provisioner = keys_of::<ProvisionerFile>();
    let rows = provisioner_rows();
    assert!(check("p", &provisioner, &rows).is_empty());
    let without = |gone: &str| -> Vec<String> {
        let rows: Vec<Row> = provisioner_rows()
            .into_iter()
            .filter(|r| !r.text.starts_with(gone))
            .collect();
        check("p", &provisioner, &rows)
    };
    // A common key name elsewhere in the docs does not stand in for its row.
    let e = without("| `[retry]` `max_attempts`");
    assert_eq!(e, ["p: `retry.max_attempts`: no row of its own"]);
    let e = without("| `name` ");
    assert_eq!(e, ["p: `name`: no row of its own"]);
    let e = without("| `[rest.<table>.<op>]` `url`");
    assert_eq!(e.len(), 10, "one per operation: {e:#?}");
    // A row for a key that does not exist (misspelt, or removed from the code).
    let mut stale = provisioner_rows();
    stale.push(Row {
        at: "here".into(),
        table: vec!["retry".into()],
        keys: vec!["max_attempt".into()],
        text: String::new(),
    });
    let e = check("p", &provisioner, &stale);
    assert_eq!(e, ["here: `max_attempt` is not a key of p"]);
}
