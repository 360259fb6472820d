//! Configuration errors: each names the file, the key, what is wrong and the fix.

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

/// Collects the errors of one file while validating it.
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

    pub fn count(&self) -> usize {
        self.errors.len()
    }
}

/// Turns a TOML parse/deserialize error into a [`ConfigError`], pulling out the
/// key when the message names one.
pub fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_string();
    let key = extract_backticked(&message).unwrap_or_default();
    let location = err
        .span()
        .map(|s| {
            let upto = &text[..s.start.min(text.len())];
            let line = upto.matches('\n').count() + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default();
    let fix = if message.starts_with("unknown field") {
        "remove or correct the key; see docs/configuration.md for the valid keys".to_string()
    } else if message.starts_with("missing field") {
        "add the required key; see docs/configuration.md".to_string()
    } else {
        "correct the value; see docs/configuration.md".to_string()
    };
    ConfigError {
        file: file.to_path_buf(),
        key,
        problem: format!("{message}{location}"),
        fix,
    }
}

fn extract_backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}
