//! Reads a TOML file into its serde struct without stopping at the first
//! problem. serde stops at the first key it refuses (unknown, of the wrong
//! type, an unknown enum value), so each refusal is recorded with its key
//! and line, the key is dropped from the parsed document, and the struct is
//! read again: the dropped key takes its default (or is missing, which
//! validation then leaves unreported since the key already has a problem).
//! Only a TOML syntax error ends the file's check.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::problems::ConfigError;

/// Each retry drops a key, so this bounds the problems reported per file.
const MAX_REFUSED_KEYS: usize = 100;

/// `T` from `text`, every key serde refused reported in `errors`; `None`
/// only on a syntax error (or when a refusal cannot be pinned to a key).
pub fn parse<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut document = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            errors.push(syntax_error(file, text, &e));
            return None;
        }
    };
    for _ in 0..MAX_REFUSED_KEYS {
        let de = toml::de::Deserializer::from(document.clone());
        let refusal = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        let path: Vec<Segment> = refusal.path().iter().cloned().collect();
        let keys = table_keys(&path);
        let error = refusal.into_inner();
        let span = key_span(document.get_ref(), &keys).or_else(|| error.span());
        errors.push(ConfigError {
            file: file.to_path_buf(),
            key: dotted(&path),
            problem: format!("{}{}", error.message().trim(), line_of(text, span)),
            fix: fix_for(error.message()).into(),
        });
        if !remove(document.get_mut(), &keys) {
            return None;
        }
    }
    None
}

/// A syntax error: the document cannot be read at all.
fn syntax_error(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        problem: format!("{}{}", err.message().trim(), line_of(text, err.span())),
        fix: "correct the TOML syntax".into(),
    }
}

fn fix_for(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "remove or correct the key; see docs/configuration.md for the valid keys"
    } else if message.starts_with("unknown variant") {
        "use one of the values listed; see docs/configuration.md"
    } else if message.starts_with("missing field") {
        "add the required key; see docs/configuration.md"
    } else {
        "correct the value; see docs/configuration.md"
    }
}

/// `rest.accounts.create.ok[1]`; keys holding a dot are quoted, as in TOML.
fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if key.contains('.') {
                    out.push_str(&format!("\"{key}\""));
                } else {
                    out.push_str(key);
                }
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// The table keys leading to the refused value: up to the first array
/// index, since a refused element drops its whole array.
fn table_keys(path: &[Segment]) -> Vec<&str> {
    path.iter()
        .map_while(|s| match s {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect()
}

/// Where the deepest of `keys` that exists is written.
fn key_span(table: &DeTable<'_>, keys: &[&str]) -> Option<std::ops::Range<usize>> {
    let (first, rest) = keys.split_first()?;
    let (key, value) = table.get_key_value(*first)?;
    let deeper = match value.get_ref() {
        DeValue::Table(t) => key_span(t, rest),
        _ => None,
    };
    deeper.or_else(|| Some(key.span()))
}

fn remove(table: &mut DeTable<'_>, keys: &[&str]) -> bool {
    match keys {
        [] => false,
        [last] => table.remove(*last).is_some(),
        [first, rest @ ..] => match table.get_mut(*first).map(Spanned::get_mut) {
            Some(DeValue::Table(t)) => remove(t, rest),
            _ => false,
        },
    }
}

/// ` (line N)` for a byte offset into `text`.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let before = &text.as_bytes()[..s.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}
