//! Authentication at run time: [`Authenticator`] adds the credentials of a
//! validated [`AuthConfig`] (`[auth]`, read and checked in config/auth.rs) to
//! requests. Token schemes (`oauth2`, `login`) cache their token and refresh
//! it once, by one caller, however many requests are waiting; a 401/419 from
//! the target drops the cached token it answered
//! ([`Authenticator::invalidate_generation`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::auth::{AuthConfig, LoginFormat};
use crate::config::secret::Secret;
use crate::target::error::TargetError;

/// The `qsh` claim, the request hash of Heketi- and Atlassian-style JWTs
/// (docs/auth.md): hex SHA-256 of
/// `METHOD\nPATH`, then `\nQUERY` when there is a query, then `\nBODY` when
/// there is a body.
pub fn query_string_hash(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Option<&[u8]>,
) -> String {
    let mut h = Sha256::new();
    h.update(method.to_ascii_uppercase().as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        h.update(b"\n");
        h.update(q.as_bytes());
    }
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        h.update(b"\n");
        h.update(b);
    }
    hex::encode(h.finalize())
}

#[derive(Clone)]
struct CachedToken {
    value: Secret,
    /// Which fetch this token came from; a 401 drops only the token it was
    /// given for, so concurrent 401s cause one re-authentication, not many.
    generation: u64,
    /// Refresh at this instant (shortly before the token expires).
    refresh_at: Instant,
}

/// What a request needs to know to be signed.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub url: &'a url::Url,
    pub body: Option<&'a [u8]>,
}

/// Adds credentials to requests; one per provisioner.
pub struct Authenticator {
    config: AuthConfig,
    /// The token of `oauth2`/`login`; the lock is held while fetching, so
    /// concurrent requests wait for one refresh instead of each doing one.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// For token and login requests.
    client: reqwest::Client,
    /// When tokens are fresh; a field rather than a call to `Instant::now` so
    /// that tests can move it (tokio's paused clock would also move the
    /// timers of the HTTP requests the tests make).
    clock: Clock,
    /// Tokens fetched so far (numbers the generations).
    fetches: std::sync::atomic::AtomicU64,
    /// The provisioner's `max_response_bytes`, for token and login answers too.
    max_response_bytes: usize,
}

/// A source of "now" for token expiry.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

fn header_value(s: &str) -> Result<HeaderValue, TargetError> {
    HeaderValue::from_str(s)
        .map_err(|_| TargetError::permanent("auth: the credential is not a valid header value"))
}

/// `Authorization: Bearer <token>`, as `bearer`, `oauth2` and `jwt` send it.
fn bearer(token: &str) -> Result<(HeaderName, HeaderValue), TargetError> {
    Ok((AUTHORIZATION, header_value(&format!("Bearer {token}"))?))
}

/// Tokens are refreshed this long before the target would reject them.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

impl Authenticator {
    pub fn new(config: &AuthConfig, client: reqwest::Client, max_response_bytes: usize) -> Self {
        Authenticator {
            config: config.clone(),
            token: tokio::sync::Mutex::new(None),
            client,
            clock: Arc::new(Instant::now),
            fetches: std::sync::atomic::AtomicU64::new(0),
            max_response_bytes,
        }
    }

    /// Drops the cached token only if it is still the one of `generation`
    /// (see [`Authenticator::headers_for`]); a newer token stays.
    pub async fn invalidate_generation(&self, generation: u64) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.generation == generation) {
            *slot = None;
        }
    }

    /// Whether a 401/419 is worth one re-authentication and retry.
    pub fn can_refresh(&self) -> bool {
        matches!(
            self.config,
            AuthConfig::OAuth2 { .. } | AuthConfig::Login { .. }
        )
    }

    /// The headers that authenticate this request, and the generation of the
    /// token they carry (0 for schemes without a cached token).
    pub async fn headers_for(
        &self,
        req: &RequestParts<'_>,
    ) -> Result<(Vec<(HeaderName, HeaderValue)>, u64), TargetError> {
        // Token schemes look at the cache exactly once: a second look could
        // find a token refreshed in between, and a 401 would then invalidate
        // the generation of a token that was never sent.
        match &self.config {
            AuthConfig::None => Ok((Vec::new(), 0)),
            AuthConfig::Bearer { token } => Ok((vec![bearer(token.expose())?], 0)),
            AuthConfig::Header { header, value } => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| TargetError::permanent("auth: invalid header name"))?;
                Ok((vec![(name, header_value(value.expose())?)], 0))
            }
            AuthConfig::Basic { username, password } => {
                use base64::Engine;
                let raw = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                Ok((
                    vec![(AUTHORIZATION, header_value(&format!("Basic {encoded}"))?)],
                    0,
                ))
            }
            AuthConfig::OAuth2 { .. } => {
                let (token, generation) = self.cached_token().await?;
                Ok((vec![bearer(token.expose())?], generation))
            }
            AuthConfig::Login {
                token_header,
                token_prefix,
                ..
            } => {
                let name = HeaderName::from_bytes(token_header.as_bytes())
                    .map_err(|_| TargetError::permanent("auth: invalid token_header"))?;
                let (token, generation) = self.cached_token().await?;
                Ok((
                    vec![(
                        name,
                        header_value(&format!("{token_prefix}{}", token.expose()))?,
                    )],
                    generation,
                ))
            }
            AuthConfig::Jwt {
                issuer,
                key,
                ttl,
                qsh,
                claims,
            } => {
                let token = sign_jwt(issuer, key, *ttl, *qsh, claims, req)?;
                Ok((vec![bearer(&token)?], 0))
            }
        }
    }

    /// The body of a token or login answer, within the provisioner's response
    /// cap like every API answer. Too large is permanent: the same endpoint
    /// will answer the same way next time.
    async fn read_answer(
        &self,
        mut resp: reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, TargetError> {
        let cap = self.max_response_bytes;
        super::read_capped(&mut resp, cap)
            .await
            .map_err(|e| match e {
                super::BodyError::TooLarge => TargetError::permanent(format!(
                    "auth: the {what} answer is larger than max_response_bytes ({cap})"
                )),
                super::BodyError::Transport(e) => TargetError::transient(format!(
                    "auth: reading the {what} answer: {}",
                    super::describe(&e)
                )),
            })
    }

    async fn cached_token(&self) -> Result<(Secret, u64), TargetError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if (self.clock)() < t.refresh_at {
                return Ok((t.value.clone(), t.generation));
            }
        }
        let mut fresh = self.fetch_token().await?;
        fresh.generation = self
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let got = (fresh.value.clone(), fresh.generation);
        *slot = Some(fresh);
        Ok(got)
    }

    async fn fetch_token(&self) -> Result<CachedToken, TargetError> {
        match &self.config {
            AuthConfig::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut form = vec![("grant_type", "client_credentials".to_string())];
                if let Some(s) = scope {
                    form.push(("scope", s.clone()));
                }
                let resp = self
                    .client
                    .post(token_url)
                    .basic_auth(client_id, Some(client_secret.expose()))
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| {
                        TargetError::transient(format!(
                            "auth: token request failed: {}",
                            super::describe(&e)
                        ))
                    })?;
                let status = resp.status().as_u16();
                // A refusal is classified by its status alone. Its body is of
                // no use (and may echo the secret), so it is not read: an
                // oversized error page cannot make a 503 permanent.
                if !(200..300).contains(&status) {
                    return Err(TargetError::from_credentials_status(
                        "auth: token request",
                        status,
                    ));
                }
                let body = self.read_answer(resp, "token").await?;
                let json: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| TargetError::permanent("auth: the token answer is not JSON"))?;
                let token = json
                    .get("access_token")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        TargetError::permanent("auth: the token answer has no `access_token`")
                    })?;
                let expires_in = json
                    .get("expires_in")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(3600);
                Ok(CachedToken {
                    value: Secret::new(token),
                    generation: 0,
                    refresh_at: (self.clock)()
                        + Duration::from_secs(expires_in)
                            .saturating_sub(EXPIRY_MARGIN.min(Duration::from_secs(expires_in / 2))),
                })
            }
            AuthConfig::Login {
                login_url,
                username,
                password,
                format,
                body,
                templates,
                token_pointer,
                token_ttl,
                ..
            } => {
                let ctx =
                    minijinja::context! { username => username, password => password.expose() };
                // The error is generic on purpose: the context holds the password.
                let rendered = templates
                    .render_body(body, &ctx)
                    .map_err(|_| TargetError::permanent("auth: bad login_body template"))?;
                let req = self.client.post(login_url);
                let req = match format {
                    LoginFormat::Json => req.json(&rendered),
                    LoginFormat::Form => {
                        let pairs: Vec<(String, String)> = match &rendered {
                            serde_json::Value::Object(m) => m
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.clone(),
                                        v.as_str()
                                            .map(str::to_string)
                                            .unwrap_or_else(|| v.to_string()),
                                    )
                                })
                                .collect(),
                            _ => Vec::new(),
                        };
                        req.form(&pairs)
                    }
                };
                let resp = req.send().await.map_err(|e| {
                    TargetError::transient(format!("auth: login failed: {}", super::describe(&e)))
                })?;
                let status = resp.status().as_u16();
                if !(200..300).contains(&status) {
                    return Err(TargetError::from_credentials_status("auth: login", status));
                }
                let bytes = self.read_answer(resp, "login").await?;
                let token = match token_pointer {
                    Some(ptr) => {
                        let json: serde_json::Value =
                            serde_json::from_slice(&bytes).map_err(|_| {
                                TargetError::permanent("auth: the login answer is not JSON")
                            })?;
                        match json.pointer(ptr) {
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(v) if !v.is_null() => v.to_string(),
                            _ => {
                                return Err(TargetError::permanent(format!(
                                    "auth: the login answer has nothing at `{ptr}`"
                                )))
                            }
                        }
                    }
                    None => String::from_utf8_lossy(&bytes).trim().to_string(),
                };
                if token.is_empty() {
                    return Err(TargetError::permanent(
                        "auth: the login answer holds no token",
                    ));
                }
                Ok(CachedToken {
                    value: Secret::new(token),
                    generation: 0,
                    refresh_at: (self.clock)() + *token_ttl,
                })
            }
            _ => Err(TargetError::permanent("auth: this scheme has no token")),
        }
    }
}

/// A JWT for one request (HS256), with the `qsh` claim when asked for.
fn sign_jwt(
    issuer: &str,
    key: &Secret,
    ttl: Duration,
    qsh: bool,
    claims: &serde_json::Map<String, serde_json::Value>,
    req: &RequestParts<'_>,
) -> Result<String, TargetError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut all = claims.clone();
    all.insert("iss".into(), issuer.into());
    all.insert("iat".into(), now.into());
    all.insert("exp".into(), (now + ttl.as_secs()).into());
    if qsh {
        all.insert(
            "qsh".into(),
            query_string_hash(
                req.method.as_str(),
                req.url.path(),
                req.url.query(),
                req.body,
            )
            .into(),
        );
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &all,
        &jsonwebtoken::EncodingKey::from_secret(key.expose().as_bytes()),
    )
    .map_err(|e| TargetError::permanent(format!("auth: cannot sign the JWT: {e}")))
}

#[cfg(test)]
mod tests;
