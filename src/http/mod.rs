//! HTTP to target APIs: one [`HttpClient`] per provisioner, holding the
//! connection pool, the node list (failover), authentication, timeouts and the
//! response size cap. It turns transport failures into [`TargetError`]s and
//! returns every HTTP answer as it is: what a status means is the adapter's call.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::config::ProvisionerConfig;
use crate::target::TargetError;

pub mod auth;

/// One request, described relative to the provisioner's `url_prefix`.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Operation name for logs and errors, e.g. `accounts.create`.
    pub operation: String,
    pub method: Method,
    /// Path and query relative to `url_prefix`, already percent-encoded, starting with `/`.
    pub path_and_query: String,
    pub body: Option<serde_json::Value>,
    /// The event's actor, for the on-behalf-of header.
    pub actor: Option<String>,
}

/// A target's answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (an empty body is `null`).
    pub fn json(&self, operation: &str) -> Result<serde_json::Value, TargetError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| TargetError::permanent(format!("{operation}: response is not JSON: {e}")))
    }

    /// The start of the body, for error messages.
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let t: String = text.chars().take(200).collect();
        t.trim().to_string()
    }

    /// `Retry-After` in seconds (the HTTP-date form is not honoured).
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }

    /// The failure for a status the operation did not accept.
    pub fn error(&self, operation: &str) -> TargetError {
        TargetError::from_status(operation, self.status, &self.excerpt(), self.retry_after())
    }
}

/// Why a client could not be built (bad certificate files and the like).
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read {what} `{path}`: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

struct Inner {
    client: reqwest::Client,
    prefixes: Vec<String>,
    auth: auth::Authenticator,
    timeout: Duration,
}

/// The HTTP side of one provisioner. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

impl HttpClient {
    pub fn new(config: &ProvisionerConfig) -> Result<Self, HttpSetupError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| HttpSetupError::Client(e.to_string()))?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                prefixes: config.url_prefixes.clone(),
                auth: auth::Authenticator::new(&config.auth),
                timeout: config.timeout,
            }),
        })
    }

    /// Sends one request. `Ok` for every HTTP answer; `Err` only when no answer came.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TargetError> {
        let prefix = self
            .inner
            .prefixes
            .first()
            .ok_or_else(|| TargetError::permanent("no url_prefix configured"))?;
        let url = format!("{prefix}{}", req.path_and_query);
        let mut builder = self
            .inner
            .client
            .request(req.method.clone(), &url)
            .timeout(self.inner.timeout);
        builder = self.inner.auth.apply(builder);
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let resp = builder.send().await.map_err(|e| {
            TargetError::transient(format!(
                "{}: {} {}: {e}",
                req.operation, req.method, req.path_and_query
            ))
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| {
                TargetError::transient(format!("{}: reading response: {e}", req.operation))
            })?
            .to_vec();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
