//! Who may use the admin API: bearer tokens and basic-auth users, each with
//! a role. Reads need `read`; anything that changes the worker needs
//! `operate`. The probes (`/healthz`, `/readyz`) answer everyone. Without
//! any credential configured the API is open, which the configuration
//! allows only on a loopback address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, Shared};
use crate::config::admin::{AdminConfig, AdminToken, AdminUser, Role};

/// How long a verified basic password is remembered: hashing is slow on
/// purpose, and a console makes a request every few seconds.
const VERIFIED_FOR: Duration = Duration::from_secs(300);

/// The configured credentials.
pub struct Credentials {
    tokens: Vec<AdminToken>,
    users: Vec<AdminUser>,
    /// sha256(user NUL password) -> when it was verified.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Credentials {
    pub fn new(config: &AdminConfig) -> Self {
        Credentials {
            tokens: config.tokens.clone(),
            users: config.users.clone(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }

    /// Who a request's `Authorization` header names, if it holds a valid
    /// credential.
    async fn caller_of(&self, authorization: Option<&str>) -> Option<Caller> {
        let value = authorization?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self
                .tokens
                .iter()
                .enumerate()
                .find(|(_, t)| {
                    constant_time_eq(t.token.expose().as_bytes(), token.trim().as_bytes())
                })
                .map(|(i, t)| Caller {
                    role: t.role,
                    name: format!("token #{}", i + 1),
                });
        }
        let encoded = value.strip_prefix("Basic ")?;
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let user = self.users.iter().find(|u| u.name == name)?;
        let key: [u8; 32] = Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let caller = Caller {
            role: user.role,
            name: user.name.clone(),
        };
        if self.recently_verified(&key) {
            return Some(caller);
        }
        let hash = user.password_hash.clone();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if ok {
            self.lock().insert(key, Instant::now());
            Some(caller)
        } else {
            None
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recently_verified(&self, key: &[u8; 32]) -> bool {
        let mut verified = self.lock();
        verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
        verified.contains_key(key)
    }
}

/// Compares without stopping at the first difference, so the time taken
/// tells nothing about how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a password against an argon2 PHC string or a bcrypt hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::PasswordVerifier;
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

/// An argon2id PHC string of `password`, for `[[admin.users]] password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Who made a request, as the authentication middleware found: handlers
/// read it as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The basic user's name, `token #N` (the Nth `[[admin.tokens]]`), or
    /// empty while the API is open.
    pub name: String,
}

/// The role a request needs: reads `read`, changes `operate`.
fn needed(method: &Method) -> Role {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Role::Read
    } else {
        Role::Operate
    }
}

/// Paths anyone may read (liveness and readiness probes).
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Whether a browser says it sends this request from another site (the
/// `Sec-Fetch-Site` header): a page elsewhere must never change the worker
/// with basic credentials the browser remembers for this one. Clients other
/// than browsers send no such header.
fn cross_site(request: &Request) -> bool {
    request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

/// The authentication middleware: answers 401 without a valid credential
/// and 403 without the role the method needs, refuses changes sent from
/// another site, and puts the [`Caller`] in the request's extensions.
pub async fn require_role(
    State(shared): State<Shared>,
    mut request: Request,
    next: Next,
) -> Response {
    let credentials = &shared.credentials;
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let needed = needed(request.method());
    if needed == Role::Operate && cross_site(&request) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "a change sent from another site is refused",
        )
        .into_response();
    }
    if credentials.open() {
        request.extensions_mut().insert(Caller {
            role: Role::Operate,
            name: String::new(),
        });
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(caller) = credentials.caller_of(authorization).await else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "credentials missing or not valid: send a bearer token or basic credentials",
        )
        .into_response();
        // One challenge a header: browsers then ask for a user and password
        // (Basic), which they cannot do for a combined header they misread.
        let headers = response.headers_mut();
        headers.append(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"provisioner\", charset=\"UTF-8\""),
        );
        headers.append(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"provisioner\""),
        );
        return response;
    };
    let role = caller.role;
    if role < needed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the `{}` role; the credentials have `{}`",
                needed.as_str(),
                role.as_str()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_hashes_verify_the_right_password_only() {
        let argon = hash_password("s3cret pass").unwrap_or_else(|e| panic!("{e}"));
        assert!(argon.starts_with("$argon2id$"), "{argon}");
        assert!(verify_password(&argon, "s3cret pass"));
        assert!(!verify_password(&argon, "s3cret pasS"));
        let bcrypt_hash = bcrypt::hash("other", 4).unwrap_or_else(|e| panic!("{e}"));
        assert!(verify_password(&bcrypt_hash, "other"));
        assert!(!verify_password(&bcrypt_hash, "Other"));
        assert!(!verify_password("not a hash", "other"));
    }

    #[test]
    fn roles_are_ordered_and_methods_need_them() {
        assert!(Role::Operate > Role::Read);
        assert_eq!(needed(&Method::GET), Role::Read);
        assert_eq!(needed(&Method::POST), Role::Operate);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn only_requests_a_browser_marks_as_from_elsewhere_are_cross_site() {
        let with = |site: Option<&str>| {
            let mut r = axum::http::Request::builder().method(Method::POST);
            if let Some(site) = site {
                r = r.header("sec-fetch-site", site);
            }
            r.body(axum::body::Body::empty())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(!cross_site(&with(None)), "curl sends no such header");
        assert!(!cross_site(&with(Some("same-origin"))));
        assert!(!cross_site(&with(Some("none"))), "typed or bookmarked");
        assert!(cross_site(&with(Some("cross-site"))));
        assert!(cross_site(&with(Some("same-site"))));
    }
}
