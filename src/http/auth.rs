//! Authentication schemes (SPEC §6). The shared secret of every scheme is
//! `client_secret`.

use serde::Deserialize;

use crate::config::{Problems, Secret, SecretSource};

/// `[auth]` as written in a provisioner file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `none`, `bearer`, `header` or `basic`.
    pub scheme: String,
    /// The credential: token, API key or password.
    pub client_secret: Option<SecretSource>,
    /// User name for `basic`.
    pub username: Option<String>,
    /// Header name for `header` (API key).
    pub header: Option<String>,
}

/// A validated authentication scheme.
#[derive(Debug, Clone, Default)]
pub enum AuthConfig {
    #[default]
    None,
    Bearer {
        token: Secret,
    },
    Header {
        header: String,
        value: Secret,
    },
    Basic {
        username: String,
        password: Secret,
    },
}

impl AuthConfig {
    pub fn scheme(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Header { .. } => "header",
            AuthConfig::Basic { .. } => "basic",
        }
    }

    pub fn validate(file: Option<AuthFile>, p: &mut Problems<'_>) -> AuthConfig {
        let Some(f) = file else {
            return AuthConfig::None;
        };
        let base = p.base_dir();
        let secret = |p: &mut Problems<'_>| -> Option<Secret> {
            match &f.client_secret {
                None => {
                    p.add(
                        "auth.client_secret",
                        format!("scheme `{}` needs `client_secret`", f.scheme),
                        "set client_secret = { env = \"NAME\" } or { file = \"path\" }",
                    );
                    None
                }
                Some(src) => match src.resolve(&base) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        p.add(
                            "auth.client_secret",
                            e,
                            "provide the secret or change its source",
                        );
                        None
                    }
                },
            }
        };
        let config = match f.scheme.as_str() {
            "none" => AuthConfig::None,
            "bearer" => secret(p)
                .map(|token| AuthConfig::Bearer { token })
                .unwrap_or_default(),
            "header" => {
                let header = f.header.clone().unwrap_or_default();
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    p.add(
                        "auth.header",
                        "scheme `header` needs a valid `header` name",
                        "set header = \"X-Api-Key\"",
                    );
                }
                secret(p)
                    .map(|value| AuthConfig::Header { header, value })
                    .unwrap_or_default()
            }
            "basic" => {
                let username = f.username.clone().unwrap_or_default();
                if username.is_empty() {
                    p.add(
                        "auth.username",
                        "scheme `basic` needs `username`",
                        "set username = \"...\"",
                    );
                }
                secret(p)
                    .map(|password| AuthConfig::Basic { username, password })
                    .unwrap_or_default()
            }
            other => {
                p.add(
                    "auth.scheme",
                    format!("unknown scheme `{other}`"),
                    "use none, bearer, header or basic",
                );
                AuthConfig::None
            }
        };
        config
    }
}

/// Adds credentials to requests.
pub struct Authenticator {
    config: AuthConfig,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        Authenticator {
            config: config.clone(),
        }
    }

    pub fn apply(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config {
            AuthConfig::None => builder,
            AuthConfig::Bearer { token } => builder.bearer_auth(token.expose()),
            AuthConfig::Header { header, value } => builder.header(header.as_str(), value.expose()),
            AuthConfig::Basic { username, password } => {
                builder.basic_auth(username, Some(password.expose()))
            }
        }
    }
}
