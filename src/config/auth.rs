//! `[auth]`: how a provisioner's requests are authenticated, as written
//! ([`AuthFile`]) and validated ([`AuthConfig`]). The runtime that adds the
//! credentials to requests is in `http/auth.rs`. The secret of every scheme
//! is `client_secret`; keys of other schemes are errors, so a typo cannot
//! silently turn authentication off.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::{spelling, Problems};
use super::secret::{Secret, SecretSource};
use crate::template::{toml_to_json, BodyTemplate, Templates};

/// `[auth]` as written in a provisioner file. Which keys apply depends on `scheme`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// How requests are authenticated (required).
    pub scheme: Option<AuthScheme>,
    /// The credential: token, API key, password, client secret or signing key.
    pub client_secret: Option<SecretSource>,
    /// User name (`basic`, `login`).
    pub username: Option<String>,
    /// Header carrying the API key (`header`).
    pub header: Option<String>,
    /// Token endpoint (`oauth2`).
    pub token_url: Option<String>,
    /// Client id (`oauth2`).
    pub client_id: Option<String>,
    /// Requested scope (`oauth2`), space-separated.
    pub scope: Option<String>,
    /// Where to log in (`login`).
    pub login_url: Option<String>,
    /// How the login request's body is encoded (`login`); default `json`.
    pub login_format: Option<LoginFormat>,
    /// Body of the login request; string leaves are templates over `username`
    /// and `password` (`login`). Default: `{ username = "{{ username }}", password = "{{ password }}" }`.
    pub login_body: Option<toml::Table>,
    /// JSON pointer to the token in the login answer; none = the plain-text body (`login`).
    pub token_pointer: Option<String>,
    /// Header that carries the token (`login`); default `Authorization`.
    pub token_header: Option<String>,
    /// Text before the token in that header (`login`); default `"Bearer "`.
    pub token_prefix: Option<String>,
    /// Seconds a login token is reused before logging in again (`login`); default 3600.
    pub token_ttl_s: Option<u64>,
    /// The `iss` claim (`jwt`).
    pub issuer: Option<String>,
    /// Token lifetime in seconds (`jwt`); default 300.
    pub ttl_s: Option<u64>,
    /// Add the `qsh` request-hash claim (`jwt`); default false.
    pub qsh: Option<bool>,
    /// Extra claims (`jwt`).
    pub claims: Option<toml::Table>,
}

/// `[auth] scheme`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// No credentials (mTLS, or a trusted network).
    None,
    /// `Authorization: Bearer <client_secret>`.
    Bearer,
    /// `<header>: <client_secret>`, an API key.
    Header,
    /// HTTP basic authentication with `username` and `client_secret`.
    Basic,
    /// OAuth2 client credentials: a token from `token_url`, cached.
    OAuth2,
    /// Log in at `login_url`, then send the token from the answer.
    Login,
    /// A JWT signed per request with `client_secret` (HS256).
    Jwt,
}

impl AuthScheme {
    /// The keys this scheme takes besides `scheme`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            AuthScheme::None => &[],
            AuthScheme::Bearer => &["client_secret"],
            AuthScheme::Header => &["client_secret", "header"],
            AuthScheme::Basic => &["client_secret", "username"],
            AuthScheme::OAuth2 => &["client_secret", "token_url", "client_id", "scope"],
            AuthScheme::Login => &[
                "client_secret",
                "login_url",
                "username",
                "login_format",
                "login_body",
                "token_pointer",
                "token_header",
                "token_prefix",
                "token_ttl_s",
            ],
            AuthScheme::Jwt => &["client_secret", "issuer", "ttl_s", "qsh", "claims"],
        }
    }
}

/// `[auth] login_format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginFormat {
    /// The body as a JSON object.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`, one field per key.
    Form,
}

fn default_login_body() -> toml::Table {
    let mut body = toml::Table::new();
    for field in ["username", "password"] {
        body.insert(field.into(), format!("{{{{ {field} }}}}").into());
    }
    body
}
fn default_token_header() -> String {
    "Authorization".into()
}
fn default_token_prefix() -> String {
    "Bearer ".into()
}
fn default_token_ttl_s() -> u64 {
    3600
}
fn default_jwt_ttl_s() -> u64 {
    300
}

/// The variables a `login_body` template sees.
const LOGIN_VARS: &[&str] = &["username", "password"];

/// Claims the worker sets itself.
const RESERVED_CLAIMS: &[&str] = &["iss", "iat", "exp", "qsh"];

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
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    Login {
        login_url: String,
        username: String,
        password: Secret,
        format: LoginFormat,
        /// The compiled `login_body`, rendered with `templates`.
        body: BodyTemplate,
        templates: Templates,
        token_pointer: Option<String>,
        token_header: String,
        token_prefix: String,
        token_ttl: Duration,
    },
    Jwt {
        issuer: String,
        key: Secret,
        ttl: Duration,
        qsh: bool,
        claims: serde_json::Map<String, serde_json::Value>,
    },
}

impl AuthFile {
    /// Every key but `scheme`, with whether it is set.
    fn given(&self) -> [(&'static str, bool); 17] {
        [
            ("client_secret", self.client_secret.is_some()),
            ("username", self.username.is_some()),
            ("header", self.header.is_some()),
            ("token_url", self.token_url.is_some()),
            ("client_id", self.client_id.is_some()),
            ("scope", self.scope.is_some()),
            ("login_url", self.login_url.is_some()),
            ("login_format", self.login_format.is_some()),
            ("login_body", self.login_body.is_some()),
            ("token_pointer", self.token_pointer.is_some()),
            ("token_header", self.token_header.is_some()),
            ("token_prefix", self.token_prefix.is_some()),
            ("token_ttl_s", self.token_ttl_s.is_some()),
            ("issuer", self.issuer.is_some()),
            ("ttl_s", self.ttl_s.is_some()),
            ("qsh", self.qsh.is_some()),
            ("claims", self.claims.is_some()),
        ]
    }
}

impl AuthConfig {
    pub fn scheme(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Header { .. } => "header",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::OAuth2 { .. } => "oauth2",
            AuthConfig::Login { .. } => "login",
            AuthConfig::Jwt { .. } => "jwt",
        }
    }

    /// Validates `[auth]` (none: no authentication), reporting every problem.
    pub fn validate(file: Option<AuthFile>, p: &mut Problems<'_>) -> AuthConfig {
        let Some(f) = file else {
            return AuthConfig::None;
        };
        let Some(scheme) = p.required(
            "auth.scheme",
            f.scheme,
            "`[auth]`",
            "\"bearer\" (or none, header, basic, oauth2, login, jwt)",
        ) else {
            return AuthConfig::None;
        };
        let mut v = SchemeCheck {
            needed_by: format!("scheme `{}`", spelling(&scheme)),
            p,
        };
        v.p.only_keys("auth", &v.needed_by, &f.given(), scheme.keys());
        v.scheme(scheme, f).unwrap_or_default()
    }
}

/// Validation of the keys of one scheme.
struct SchemeCheck<'p, 'e> {
    /// `scheme `login``, for the problems.
    needed_by: String,
    p: &'p mut Problems<'e>,
}

impl SchemeCheck<'_, '_> {
    fn scheme(&mut self, scheme: AuthScheme, f: AuthFile) -> Option<AuthConfig> {
        Some(match scheme {
            AuthScheme::None => AuthConfig::None,
            AuthScheme::Bearer => AuthConfig::Bearer {
                token: self.secret(&f.client_secret)?,
            },
            AuthScheme::Header => {
                let header = self.text("header", f.header, "\"X-Api-Key\"");
                if !header.is_empty() {
                    self.p.header_name("auth.header", &header, "X-Api-Key");
                }
                AuthConfig::Header {
                    header,
                    value: self.secret(&f.client_secret)?,
                }
            }
            AuthScheme::Basic => AuthConfig::Basic {
                username: self.text("username", f.username, "\"svc-provisioner\""),
                password: self.secret(&f.client_secret)?,
            },
            AuthScheme::OAuth2 => AuthConfig::OAuth2 {
                token_url: self.url("token_url", f.token_url),
                client_id: self.text("client_id", f.client_id, "\"provisioner\""),
                client_secret: self.secret(&f.client_secret)?,
                scope: f.scope,
            },
            AuthScheme::Login => {
                let login_url = self.url("login_url", f.login_url);
                let username = self.text("username", f.username, "\"svc-provisioner\"");
                let mut templates = Templates::new();
                let body = templates.add_body(
                    "auth.login_body",
                    &toml::Value::Table(f.login_body.unwrap_or_else(default_login_body)),
                    LOGIN_VARS,
                    self.p,
                );
                if let Some(ptr) = &f.token_pointer {
                    self.p.json_pointer("auth.token_pointer", ptr);
                }
                let token_header = f.token_header.unwrap_or_else(default_token_header);
                self.p
                    .header_name("auth.token_header", &token_header, "X-Auth-Token");
                AuthConfig::Login {
                    login_url,
                    username,
                    password: self.secret(&f.client_secret)?,
                    format: f.login_format.unwrap_or_default(),
                    body: body?,
                    templates,
                    token_pointer: f.token_pointer.filter(|s| !s.is_empty()),
                    token_header,
                    token_prefix: f.token_prefix.unwrap_or_else(default_token_prefix),
                    token_ttl: Duration::from_secs(
                        f.token_ttl_s.unwrap_or_else(default_token_ttl_s),
                    ),
                }
            }
            AuthScheme::Jwt => {
                let issuer = self.text("issuer", f.issuer, "\"my-app-id\"");
                let ttl_s = f.ttl_s.unwrap_or_else(default_jwt_ttl_s);
                self.p.at_least("auth.ttl_s", ttl_s, 1, "300");
                let claims = self.claims(f.claims);
                AuthConfig::Jwt {
                    issuer,
                    key: self.secret(&f.client_secret)?,
                    ttl: Duration::from_secs(ttl_s),
                    qsh: f.qsh.unwrap_or(false),
                    claims,
                }
            }
        })
    }

    /// A required text key; blank counts as missing.
    fn text(&mut self, key: &str, value: Option<String>, example: &str) -> String {
        let value = value.filter(|s| !s.trim().is_empty());
        self.p
            .required(&format!("auth.{key}"), value, &self.needed_by, example)
            .unwrap_or_default()
    }

    fn url(&mut self, key: &str, value: Option<String>) -> String {
        let url = self.text(key, value, "\"https://...\"");
        if !url.is_empty() {
            self.p.http_url(
                &format!("auth.{key}"),
                &url,
                "https://login.example.com/token",
            );
        }
        url
    }

    /// The resolved `client_secret`. Its problems name where it was looked
    /// for, never a value.
    fn secret(&mut self, source: &Option<SecretSource>) -> Option<Secret> {
        let source = self.p.required(
            "auth.client_secret",
            source.as_ref(),
            &self.needed_by,
            "{ env = \"NAME\" } or { file = \"path\" }",
        )?;
        match source.resolve(&self.p.base_dir()) {
            Ok(secret) => Some(secret),
            Err(e) => {
                self.p.add(
                    "auth.client_secret",
                    e,
                    "provide the secret or change its source",
                );
                None
            }
        }
    }

    fn claims(
        &mut self,
        claims: Option<toml::Table>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let claims = match claims.map(|t| toml_to_json(&toml::Value::Table(t))) {
            None => serde_json::Map::new(),
            Some(Ok(serde_json::Value::Object(m))) => m,
            Some(Ok(_)) => serde_json::Map::new(),
            Some(Err(e)) => {
                self.p.add("auth.claims", e, "use a finite number");
                serde_json::Map::new()
            }
        };
        for reserved in RESERVED_CLAIMS.iter().filter(|c| claims.contains_key(**c)) {
            self.p.add(
                format!("auth.claims.{reserved}"),
                format!("`{reserved}` is set by the worker"),
                "remove it from `claims`",
            );
        }
        claims
    }
}

/// The body of an `[auth]` table, given as TOML text, parsed and validated
/// as in a provisioner file.
#[cfg(test)]
pub(crate) fn from_toml(text: &str) -> (AuthConfig, Vec<super::problems::ConfigError>) {
    #[derive(Deserialize)]
    struct File {
        auth: Option<AuthFile>,
    }
    let path = std::path::Path::new("/etc/provisioner/p.toml");
    let mut errors = Vec::new();
    let file: Option<File> = super::parse::parse(path, &format!("[auth]\n{text}"), &mut errors);
    let auth = file.and_then(|f| f.auth);
    let config = AuthConfig::validate(auth, &mut Problems::new(path, &mut errors));
    (config, errors)
}

#[cfg(test)]
mod tests;
