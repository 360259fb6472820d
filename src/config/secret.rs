//! Credentials from configuration. A [`Secret`] never shows its value through
//! `Debug` or `Display`, so it cannot leak through logs, errors or `check`.

use std::path::Path;

use serde::Deserialize;

/// Where a credential comes from, as written in a file: a literal string,
/// `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The value itself (fine for tests; prefer `env` or `file` in production).
    Literal(String),
    /// Read from an environment variable when the configuration is loaded.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// Read from a file (trailing newline trimmed); relative to the config file.
    File {
        /// Path of the file holding the secret.
        file: String,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SecretSource {
    /// How the secret is given, without its value.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Literal(_) => "<literal, redacted>".into(),
            SecretSource::Env { env } => format!("<from env {env}>"),
            SecretSource::File { file } => format!("<from file {file}>"),
        }
    }

    /// Reads the value. The error says where it looked, never what it found.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match self {
            SecretSource::Literal(s) => Ok(Secret::new(s.clone())),
            SecretSource::Env { env } => match std::env::var(env) {
                Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
                Ok(_) => Err(format!("environment variable `{env}` is empty")),
                Err(_) => Err(format!("environment variable `{env}` is not set")),
            },
            SecretSource::File { file } => {
                let path = base_dir.join(file);
                match std::fs::read_to_string(&path) {
                    Ok(v) => {
                        let v = v.trim_end_matches(['\n', '\r']).to_string();
                        if v.is_empty() {
                            Err(format!("secret file `{}` is empty", path.display()))
                        } else {
                            Ok(Secret::new(v))
                        }
                    }
                    Err(e) => Err(format!("cannot read secret file `{}`: {e}", path.display())),
                }
            }
        }
    }
}

/// A resolved credential. Use [`Secret::expose`] only where the value is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for building the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        let src = SecretSource::Literal("hunter2".into());
        assert!(!format!("{src:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_is_trimmed_and_relative_to_the_config() {
        let dir = tempfile::tempdir()
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("token"), "abc\n").unwrap_or_else(|e| panic!("{e}"));
        let src = SecretSource::File {
            file: "token".into(),
        };
        assert_eq!(
            src.resolve(dir.path()).map(|s| s.expose().to_string()),
            Ok("abc".into())
        );
        let missing = SecretSource::Env {
            env: "PROVISIONER_TEST_UNSET_VAR".into(),
        };
        assert!(missing
            .resolve(dir.path())
            .is_err_and(|e| e.contains("not set")));
    }
}
