//! The worker file's `[admin]` table (the admin HTTP API) and `[journal]`
//! table (the outcome journal): their file structs, runtime types and
//! validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::secret::{Secret, SecretSource};

/// `[admin]`: the admin HTTP API. Without this table the worker serves none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address and port to listen on. An address other than loopback needs
    /// at least one token or user.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer tokens: `[[admin.tokens]]` with `role` and `token`.
    #[serde(default)]
    pub tokens: Vec<AdminTokenFile>,
    /// Basic-auth users: `[[admin.users]]` with `name`, `role` and `password_hash`.
    #[serde(default)]
    pub users: Vec<AdminUserFile>,
    /// Serve HTTPS: `[admin.tls]` with `cert`, `key` and optionally `client_ca`.
    pub tls: Option<AdminTlsFile>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9610".into()
}

/// `[[admin.tokens]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenFile {
    /// What the token may do.
    pub role: Option<Role>,
    /// The bearer token: a literal, `{ env = "NAME" }` or `{ file = "path" }`.
    pub token: Option<SecretSource>,
}

/// `[[admin.users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserFile {
    /// User name for HTTP basic authentication.
    pub name: Option<String>,
    /// What the user may do.
    pub role: Option<Role>,
    /// The password's hash as a PHC string (argon2, e.g. from `provisioner
    /// hash-password`) or a bcrypt hash (`$2b$...`); never the password.
    pub password_hash: Option<String>,
}

/// `[admin.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsFile {
    /// PEM certificate chain of the admin API.
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    pub key: Option<String>,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them.
    pub client_ca: Option<String>,
}

/// `[journal]`: where the outcome journal is kept. Without this table the
/// worker keeps none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalFile {
    /// The SQLite file (WAL mode); relative to the worker file. Default
    /// `journal.sqlite` beside it. Not with `url`.
    pub path: Option<String>,
    /// `postgres://...`: a journal shared by several worker processes.
    /// Not with `path`.
    pub url: Option<SecretSource>,
    /// Days an outcome is kept.
    #[serde(default = "default_journal_max_age_days")]
    pub max_age_days: u64,
    /// Outcomes kept at most; the oldest go first.
    #[serde(default = "default_journal_max_rows")]
    pub max_rows: u64,
    /// Outcomes waiting to be written at most; beyond, new ones are dropped
    /// (and counted) rather than slow events down.
    #[serde(default = "default_journal_queue")]
    pub queue: usize,
}

fn default_journal_max_age_days() -> u64 {
    30
}
fn default_journal_max_rows() -> u64 {
    1_000_000
}
fn default_journal_queue() -> usize {
    10_000
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read state, events, dead letters, metrics and configuration.
    Read,
    /// Also pause, resume, requeue and clear caches.
    Operate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub role: Role,
    pub token: Secret,
}

#[derive(Debug, Clone)]
pub struct AdminUser {
    pub name: String,
    pub role: Role,
    /// A PHC (argon2) or bcrypt hash; verified, never compared as text.
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The validated `[admin]` table.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<AdminToken>,
    pub users: Vec<AdminUser>,
    pub tls: Option<AdminTls>,
}

impl AdminConfig {
    /// Whether any credential is configured (then every endpoint but the
    /// probes needs one).
    pub fn requires_auth(&self) -> bool {
        !self.tokens.is_empty() || !self.users.is_empty()
    }
}

/// Where the journal lives.
#[derive(Debug, Clone)]
pub enum JournalStore {
    Sqlite(PathBuf),
    Postgres(Secret),
}

/// The validated `[journal]` table.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub store: JournalStore,
    pub max_age: Duration,
    pub max_rows: u64,
    pub queue: usize,
}

fn required<T>(value: Option<T>, key: &str, fix: &str, p: &mut Problems<'_>) -> Option<T> {
    if value.is_none() {
        p.add(key, "is missing", fix);
    }
    value
}

/// Whether a stored hash is one the admin API can verify.
fn is_supported_hash(hash: &str) -> bool {
    let bcrypt = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
    let argon2 =
        hash.starts_with("$argon2") && argon2::password_hash::phc::PasswordHash::new(hash).is_ok();
    bcrypt || argon2
}

fn existing_file(base: &Path, rel: &str, key: &str, p: &mut Problems<'_>) -> PathBuf {
    let path = base.join(rel);
    if !path.is_file() {
        p.add(
            key,
            format!("file `{}` does not exist", path.display()),
            "point it at a PEM file (relative paths are relative to the worker file)",
        );
    }
    path
}

/// Validates `[admin]`.
pub fn validate_admin(f: AdminFile, p: &mut Problems<'_>) -> AdminConfig {
    let base = p.base_dir();
    let listen = match f.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            p.add(
                "admin.listen",
                format!("`{}` is not an address and port", f.listen),
                "write e.g. \"127.0.0.1:9610\"",
            );
            SocketAddr::from(([127, 0, 0, 1], 9610))
        }
    };
    let mut tokens = Vec::new();
    const ROLE_FIX: &str = "set role = \"read\" or \"operate\"";
    for (i, t) in f.tokens.into_iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let role = required(t.role, &format!("{key}.role"), ROLE_FIX, p);
        let source = required(
            t.token,
            &format!("{key}.token"),
            "set token = { env = \"NAME\" } (or a literal, or { file = \"path\" })",
            p,
        );
        let Some(source) = source else { continue };
        match source.resolve(&base) {
            Ok(token) => {
                if let Some(role) = role {
                    tokens.push(AdminToken { role, token });
                }
            }
            Err(e) => p.add(format!("{key}.token"), e, "set the token or its source"),
        }
    }
    let mut users = Vec::new();
    for (i, u) in f.users.into_iter().enumerate() {
        let key = format!("admin.users[{i}]");
        let role = required(u.role, &format!("{key}.role"), ROLE_FIX, p);
        let name = required(u.name, &format!("{key}.name"), "set name = \"alice\"", p);
        let hash = required(
            u.password_hash,
            &format!("{key}.password_hash"),
            "make one with `provisioner hash-password`",
            p,
        );
        if let Some(name) = &name {
            if name.is_empty() || name.contains(':') {
                p.add(
                    format!("{key}.name"),
                    "a user name must be non-empty and without `:`",
                    "pick another name",
                );
            }
        }
        if let Some(hash) = &hash {
            if !is_supported_hash(hash) {
                p.add(
                    format!("{key}.password_hash"),
                    "not an argon2 PHC string or a bcrypt hash (a plain password is never accepted)",
                    "make one with `provisioner hash-password`",
                );
            }
        }
        if let (Some(name), Some(role), Some(password_hash)) = (name, role, hash) {
            users.push(AdminUser {
                name,
                role,
                password_hash,
            });
        }
    }
    let tls = f.tls.and_then(|t| {
        let cert = required(t.cert, "admin.tls.cert", "point it at a PEM certificate", p);
        let key = required(
            t.key,
            "admin.tls.key",
            "point it at the certificate's PEM key",
            p,
        );
        Some(AdminTls {
            cert: existing_file(&base, &cert?, "admin.tls.cert", p),
            key: existing_file(&base, &key?, "admin.tls.key", p),
            client_ca: t
                .client_ca
                .map(|c| existing_file(&base, &c, "admin.tls.client_ca", p)),
        })
    });
    let config = AdminConfig {
        listen,
        tokens,
        users,
        tls,
    };
    if !config.listen.ip().is_loopback() && !config.requires_auth() {
        p.add(
            "admin.listen",
            format!(
                "`{}` is reachable from other machines, and no token or user is configured",
                config.listen
            ),
            "add [[admin.tokens]] or [[admin.users]], or listen on 127.0.0.1",
        );
    }
    config
}

/// Validates `[journal]`.
pub fn validate_journal(f: JournalFile, p: &mut Problems<'_>) -> JournalConfig {
    let base = p.base_dir();
    let store = match (f.path, f.url) {
        (Some(_), Some(_)) => {
            p.add(
                "journal.url",
                "`path` and `url` are both set",
                "keep `path` (SQLite) or `url` (PostgreSQL)",
            );
            JournalStore::Sqlite(base.join("journal.sqlite"))
        }
        (None, Some(url)) => match url.resolve(&base) {
            Ok(u)
                if u.expose().starts_with("postgres://")
                    || u.expose().starts_with("postgresql://") =>
            {
                JournalStore::Postgres(u)
            }
            Ok(_) => {
                p.add(
                    "journal.url",
                    "not a postgres:// URL",
                    "write e.g. \"postgres://provisioner@db.example.edu/provisioner\"",
                );
                JournalStore::Sqlite(base.join("journal.sqlite"))
            }
            Err(e) => {
                p.add("journal.url", e, "set the URL or its source");
                JournalStore::Sqlite(base.join("journal.sqlite"))
            }
        },
        (path, None) => {
            JournalStore::Sqlite(base.join(path.as_deref().unwrap_or("journal.sqlite")))
        }
    };
    if f.max_rows == 0 {
        p.add(
            "journal.max_rows",
            "must be at least 1",
            "set e.g. max_rows = 1000000",
        );
    }
    if f.max_age_days == 0 {
        p.add(
            "journal.max_age_days",
            "must be at least 1",
            "set e.g. max_age_days = 30",
        );
    }
    if f.queue == 0 {
        p.add(
            "journal.queue",
            "must be at least 1",
            "set e.g. queue = 10000",
        );
    }
    JournalConfig {
        store,
        max_age: Duration::from_secs(f.max_age_days.saturating_mul(86_400)),
        max_rows: f.max_rows,
        queue: f.queue,
    }
}
