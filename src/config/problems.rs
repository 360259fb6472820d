//! Configuration problems, and the checks every table shares. A leaf: it
//! imports nothing else from the crate, so every configuration table (the
//! kinds' included) can report through it.
//!
//! Architecture Invariant: validation never stops at the first problem. Each
//! check reports through [`Problems`] and carries on with a stand-in value, so
//! that `provisioner check` shows every problem of every file at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path (`rest.accounts.create.method`), or empty for the file itself.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "configuration has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Collects the problems of one file while validating it.
pub struct Problems<'a> {
    file: &'a Path,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a Path, errors: &'a mut Vec<ConfigError>) -> Self {
        Problems { file, errors }
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    /// The directory relative paths in this file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    pub fn add(
        &mut self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Problems reported so far, of every file.
    pub fn count(&self) -> usize {
        self.errors.len()
    }

    /// Whether this file already has a problem at `key`, such as a value the
    /// parser refused (and dropped, so that it now looks missing).
    pub fn has(&self, key: &str) -> bool {
        self.errors
            .iter()
            .any(|e| e.key == key && e.file == self.file)
    }

    /// A key that `needed_by` cannot do without: reported when missing,
    /// unless its value was already refused.
    pub fn required<T>(
        &mut self,
        key: &str,
        value: Option<T>,
        needed_by: &str,
        example: &str,
    ) -> Option<T> {
        if value.is_none() && !self.has(key) {
            let name = last_segment(key);
            self.add(
                key,
                format!("{needed_by} needs `{name}`"),
                format!("set {name} = {example}"),
            );
        }
        value
    }

    /// A count or duration that must be at least `min`.
    pub fn at_least<N: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: N,
        min: N,
        example: &str,
    ) {
        if value < min {
            self.add(
                key,
                format!("must be at least {min}"),
                format!("set e.g. {} = {example}", last_segment(key)),
            );
        }
    }

    /// Keys of `table` that only some variants take (`[auth]` per scheme,
    /// `paging` per style): `given` pairs each such key with whether it is
    /// set, `allowed` lists those `variant` takes.
    pub fn only_keys(
        &mut self,
        table: &str,
        variant: &str,
        given: &[(&str, bool)],
        allowed: &[&str],
    ) {
        let takes = if allowed.is_empty() {
            "no other key".to_string()
        } else {
            allowed.join(", ")
        };
        for (key, _) in given.iter().filter(|(k, set)| *set && !allowed.contains(k)) {
            self.add(
                format!("{table}.{key}"),
                format!("`{key}` has no meaning for {variant}"),
                format!("remove it; {variant} takes {takes}"),
            );
        }
    }

    /// A JSON pointer (RFC 6901) into an answer; `""` is the whole answer.
    pub fn json_pointer(&mut self, key: &str, value: &str) {
        if !value.is_empty() && !value.starts_with('/') {
            self.add(
                key,
                format!("`{value}` is not a JSON pointer (RFC 6901)"),
                format!("start it with `/`, e.g. \"/{value}\" (\"\" is the whole answer)"),
            );
        }
    }

    pub fn header_name(&mut self, key: &str, value: &str, example: &str) {
        if reqwest::header::HeaderName::from_bytes(value.as_bytes()).is_err() {
            self.add(
                key,
                format!("`{value}` is not a valid header name"),
                format!("use e.g. \"{example}\""),
            );
        }
    }

    /// An absolute http(s) URL with a host. The value is shown with any
    /// password replaced, and not at all when it cannot be parsed, since
    /// URLs may carry credentials.
    pub fn http_url(&mut self, key: &str, value: &str, example: &str) {
        let problem = match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => return,
            Ok(mut u) => {
                if u.password().is_some() {
                    // Cannot fail: the URL has a host, or it would have no password.
                    let _ = u.set_password(Some("***"));
                }
                format!("`{u}` is not an http(s) URL")
            }
            Err(e) => format!("is not an absolute URL ({e})"),
        };
        self.add(
            key,
            problem,
            format!("give an absolute URL, e.g. \"{example}\""),
        );
    }
}

/// How a value of a serde enum is written in a file (`query-first`).
pub fn spelling<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `retry.max_attempts` -> `max_attempts`: how the key is written in its table.
fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(errors: &[ConfigError]) -> Vec<&str> {
        errors.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn a_missing_key_is_not_reported_again_after_its_value_was_refused() {
        let mut errors = Vec::new();
        let mut p = Problems::new(Path::new("a.toml"), &mut errors);
        p.add("kind", "unknown variant `soap`", "use rest or scim");
        assert_eq!(
            p.required::<u8>("kind", None, "every provisioner", "\"rest\""),
            None
        );
        assert_eq!(
            p.required::<u8>("url_prefix", None, "every provisioner", "\"https://x\""),
            None
        );
        assert_eq!(
            p.required("queue", Some(1), "every provisioner", "1"),
            Some(1)
        );
        assert_eq!(keys(&errors), ["kind", "url_prefix"]);
        assert_eq!(errors[1].problem, "every provisioner needs `url_prefix`");
        assert_eq!(errors[1].fix, "set url_prefix = \"https://x\"");
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let mut errors = Vec::new();
        let mut p = Problems::new(Path::new("a.toml"), &mut errors);
        p.http_url("a", "https://u:pw-Kq7@api.example.com/v2", "https://x");
        p.http_url("b", "ftp://u:pw-Kq7@api.example.com/", "https://x");
        p.http_url("c", "https://u:pw-Kq7@[::1/", "https://x");
        assert_eq!(keys(&errors), ["b", "c"]);
        let shown = format!("{errors:?}");
        assert!(!shown.contains("pw-Kq7"), "{shown}");
        assert!(
            errors[0].problem.contains("ftp://u:***@api.example.com/"),
            "{shown}"
        );
    }

    #[test]
    fn keys_of_other_variants_are_named_with_what_the_variant_takes() {
        let mut errors = Vec::new();
        let mut p = Problems::new(Path::new("a.toml"), &mut errors);
        let given = [("next", true), ("size", false), ("param", true)];
        p.only_keys("paging", "style `next_link`", &given, &["next"]);
        assert_eq!(keys(&errors), ["paging.param"]);
        assert_eq!(errors[0].fix, "remove it; style `next_link` takes next");
    }
}
