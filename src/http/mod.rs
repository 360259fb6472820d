//! HTTP to target APIs: one [`HttpClient`] per provisioner, holding the
//! connection pool, the node list (failover), authentication, the
//! on-behalf-of header, timeouts and the response size cap. It turns
//! transport failures into [`TargetError`]s and returns every HTTP answer as
//! it is: what a status means is the adapter's call.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::config::{OnBehalfOf, TlsConfig};
use crate::target::error::TargetError;
use crate::template::{Position, TemplateRef, Templates};

pub mod auth;

/// One request, described relative to the provisioner's `url_prefix`.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Operation name for logs and errors, e.g. `accounts.create`.
    pub operation: String,
    /// The URL as the operation defines it (a template), for the call log:
    /// never the concrete URL.
    pub path_template: Arc<str>,
    pub method: Method,
    /// Path and query relative to `url_prefix`, already percent-encoded,
    /// starting with `/`; or an absolute URL on the same origin as a
    /// `url_prefix` (paging `next` links).
    pub path_and_query: String,
    pub body: Option<serde_json::Value>,
    /// The event's actor, for the on-behalf-of header.
    pub actor: Option<String>,
    /// `Content-Type` of the body; `None` is `application/json`. SCIM wants
    /// `application/scim+json`.
    pub content_type: Option<&'static str>,
    /// `Accept` header, when the target needs one.
    pub accept: Option<&'static str>,
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

pub use crate::redact::redact_url;

/// Why a client could not be built (bad certificate files and the like).
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read {what} `{path}`: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("`endpoint` {0}")]
    Endpoint(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("`on_behalf_of.value`: bad template: {0}")]
    OnBehalfOf(String),
}

/// `on_behalf_of`, its value compiled.
struct CallerHeader {
    header: String,
    templates: Templates,
    value: TemplateRef,
}

impl CallerHeader {
    fn new(config: &OnBehalfOf) -> Result<Self, HttpSetupError> {
        let mut templates = Templates::new();
        let value = templates
            .compile("on_behalf_of.value", Position::Text, &config.value)
            .map_err(HttpSetupError::OnBehalfOf)?;
        Ok(CallerHeader {
            header: config.header.clone(),
            templates,
            value,
        })
    }
}

struct Inner {
    client: reqwest::Client,
    /// The equivalent nodes, without trailing `/`.
    prefixes: Vec<url::Url>,
    /// Index of the node that answered last; tried first.
    healthy: AtomicUsize,
    auth: auth::Authenticator,
    on_behalf_of: Option<CallerHeader>,
    max_response_bytes: usize,
}

/// The HTTP side of one provisioner. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, HttpSetupError> {
    std::fs::read(path).map_err(|e| HttpSetupError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Adds a custom CA and a client certificate to a client builder.
pub fn with_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, HttpSetupError> {
    if let Some(ca) = &tls.ca_file {
        let pem = read_file("CA file", ca)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpSetupError::File {
                what: "CA file",
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read_file("client certificate", cert)?;
        pem.push(b'\n');
        pem.extend(read_file("client key", key)?);
        // The error would not name the key's content, but keep it generic anyway.
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| HttpSetupError::File {
            what: "client certificate/key pair",
            path: cert.display().to_string(),
            reason: "not a PEM certificate with its PKCS#8/RSA/EC private key".into(),
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// What the HTTP client needs of a provisioner's configuration, and nothing
/// more: the nodes, the transport and the authentication.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The `url_prefix` nodes, tried in order.
    pub url_prefixes: Vec<String>,
    /// Connect here instead of the URLs' own host and port.
    pub endpoint: Option<String>,
    /// Timeout of every call.
    pub timeout: Duration,
    /// Largest response body read, the authentication endpoints' included.
    pub max_response_bytes: usize,
    pub tls: Option<TlsConfig>,
    pub auth: crate::config::auth::AuthConfig,
    pub on_behalf_of: Option<OnBehalfOf>,
}

/// `prefix` with `path_and_query` appended to its path, for the common case
/// of a path that starts with `/` on a prefix without query or fragment:
/// only the path and query are parsed, not the scheme and host again (host
/// parsing runs IDNA, a sizeable share of a call's CPU). The origin cannot
/// change this way. `None` leaves the case to a full parse.
fn joined_in_place(prefix: &url::Url, path_and_query: &str) -> Option<url::Url> {
    if !path_and_query.starts_with('/')
        || path_and_query.contains('#')
        || prefix.query().is_some()
        || prefix.fragment().is_some()
        || prefix.cannot_be_a_base()
    {
        return None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let mut u = prefix.clone();
    let base = prefix.path().trim_end_matches('/');
    u.set_path(&format!("{base}{path}"));
    u.set_query(query);
    Some(u)
}

impl HttpClient {
    pub fn new(config: &HttpSettings) -> Result<Self, HttpSetupError> {
        let prefixes = config
            .url_prefixes
            .iter()
            .map(|p| {
                url::Url::parse(p).map_err(|e| {
                    HttpSetupError::Client(format!("url_prefix `{}`: {e}", redact_url(p)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // Redirects could carry credentials to another host.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = &config.tls {
            builder = with_tls(builder, tls)?;
        }
        if let Some(endpoint) = &config.endpoint {
            let addr: SocketAddr = endpoint
                .to_socket_addrs()
                .map_err(|e| {
                    HttpSetupError::Endpoint(format!("`{endpoint}` does not resolve: {e}"))
                })?
                .next()
                .ok_or_else(|| {
                    HttpSetupError::Endpoint(format!("`{endpoint}` resolves to nothing"))
                })?;
            for p in &prefixes {
                if let Some(host) = p.host_str() {
                    builder = builder.resolve(host, addr);
                }
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpSetupError::Client(e.to_string()))?;
        let on_behalf_of = config
            .on_behalf_of
            .as_ref()
            .map(CallerHeader::new)
            .transpose()?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                auth: auth::Authenticator::new(
                    &config.auth,
                    client.clone(),
                    config.max_response_bytes,
                ),
                client,
                prefixes,
                healthy: AtomicUsize::new(0),
                on_behalf_of,
                max_response_bytes: config.max_response_bytes,
            }),
        })
    }

    /// The `url_prefix` nodes, without trailing `/` (adapters resolve paging
    /// links against them).
    pub fn url_prefixes(&self) -> Vec<String> {
        self.inner
            .prefixes
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect()
    }

    /// The URL of a request on node `node`.
    fn url_on(&self, node: usize, path_and_query: &str) -> Result<url::Url, TargetError> {
        let prefix = self
            .inner
            .prefixes
            .get(node)
            .ok_or_else(|| TargetError::permanent("no url_prefix configured"))?;
        if path_and_query.starts_with("http://") || path_and_query.starts_with("https://") {
            let u = url::Url::parse(path_and_query)
                .map_err(|e| TargetError::permanent(format!("bad link from the target: {e}")))?;
            let same_origin = self.inner.prefixes.iter().any(|p| p.origin() == u.origin());
            if !same_origin {
                // A paging link to another host could leak credentials there.
                return Err(TargetError::permanent(format!(
                    "the target linked to another origin ({}); refused",
                    u.origin().ascii_serialization()
                )));
            }
            return Ok(u);
        }
        if let Some(u) = joined_in_place(prefix, path_and_query) {
            return Ok(u);
        }
        let base = prefix.as_str().trim_end_matches('/');
        let joined = format!("{base}{path_and_query}");
        let u = url::Url::parse(&joined)
            .map_err(|e| TargetError::permanent(format!("bad request URL: {e}")))?;
        if u.origin() != prefix.origin() {
            // A path not starting with `/` (`@host/`, `.host/`) would move the
            // request, credentials and all, to another host.
            return Err(TargetError::permanent(
                "the request path does not start with `/`; refused",
            ));
        }
        Ok(u)
    }

    /// Sends one request. `Ok` for every HTTP answer; `Err` only when no
    /// answer came. Unreachable nodes (connect error, timeout) are skipped in
    /// order; a 401/419 with a token scheme re-authenticates and retries once.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, TargetError> {
        let started = tokio::time::Instant::now();
        let result = self.send_once_more_on_401(&req).await;
        crate::call_log::record(crate::call_log::CallRecord {
            operation: Arc::from(req.operation.as_str()),
            method: req.method.to_string(),
            path_template: req.path_template.clone(),
            status: result.as_ref().ok().map(|r| r.status),
            duration: started.elapsed(),
        });
        result
    }

    async fn send_once_more_on_401(&self, req: &HttpRequest) -> Result<HttpResponse, TargetError> {
        let (mut resp, generation) = self.send_failover(req).await?;
        if matches!(resp.status, 401 | 419) && self.inner.auth.can_refresh() {
            tracing::info!(operation = %req.operation, status = resp.status, "re-authenticating once");
            self.inner.auth.invalidate_generation(generation).await;
            resp = self.send_failover(req).await?.0;
        }
        Ok(resp)
    }

    /// The answer, and the generation of the token the request carried.
    async fn send_failover(&self, req: &HttpRequest) -> Result<(HttpResponse, u64), TargetError> {
        let nodes = self.inner.prefixes.len().max(1);
        let first = self.inner.healthy.load(Ordering::Relaxed) % nodes;
        let mut last_err = None;
        for i in 0..nodes {
            let node = (first + i) % nodes;
            match self.send_to(node, req).await {
                Ok(resp) => {
                    if node != first {
                        tracing::warn!(
                            node = %redact_url(self.inner.prefixes[node].as_str()),
                            "failed over to another node"
                        );
                        self.inner.healthy.store(node, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Err(Unreachable(e)) => last_err = Some(e),
                Err(Answered(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TargetError::transient("no node reachable")))
    }

    async fn send_to(
        &self,
        node: usize,
        req: &HttpRequest,
    ) -> Result<(HttpResponse, u64), SendFailure> {
        let url = self.url_on(node, &req.path_and_query).map_err(Answered)?;
        let body = match &req.body {
            Some(v) => Some(
                serde_json::to_vec(v)
                    .map_err(|e| Answered(TargetError::permanent(e.to_string())))?,
            ),
            None => None,
        };
        let parts = auth::RequestParts {
            method: &req.method,
            url: &url,
            body: body.as_deref(),
        };
        let (auth_headers, generation) = self
            .inner
            .auth
            .headers_for(&parts)
            .await
            .map_err(Answered)?;
        let mut builder = self.inner.client.request(req.method.clone(), url.clone());
        for (name, value) in auth_headers {
            builder = builder.header(name, value);
        }
        if let (Some(obo), Some(actor)) = (&self.inner.on_behalf_of, &req.actor) {
            let value = obo
                .templates
                .render(&obo.value, &minijinja::context! { actor => actor })
                .map_err(|e| {
                    Answered(TargetError::permanent(format!("on_behalf_of.value: {e}")))
                })?;
            // An actor that makes no valid header value (a line break) is the
            // event's fault: retrying cannot help.
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                Answered(TargetError::permanent(
                    "on_behalf_of: the actor does not make a valid header value",
                ))
            })?;
            builder = builder.header(obo.header.as_str(), value);
        }
        if let Some(accept) = req.accept {
            builder = builder.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(bytes) = body {
            builder = builder
                .header(
                    reqwest::header::CONTENT_TYPE,
                    req.content_type.unwrap_or("application/json"),
                )
                .body(bytes);
        }
        let what = format!("{} {} {}", req.operation, req.method, url.path());
        let mut resp = builder.send().await.map_err(|e| {
            let err = TargetError::transient(format!("{what}: {}", describe(&e)));
            // No answer came (refused, timed out, or a pooled connection to a
            // node that died): another node may do.
            if e.is_builder() {
                Answered(err)
            } else {
                Unreachable(err)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let cap = self.inner.max_response_bytes;
        let body = read_capped(&mut resp, cap).await.map_err(|e| {
            Answered(match e {
                BodyError::TooLarge => TargetError::permanent(format!(
                    "{what}: response larger than max_response_bytes ({cap})"
                )),
                BodyError::Transport(e) => TargetError::transient(format!(
                    "{what}: reading the response: {}",
                    describe(&e)
                )),
            })
        })?;
        Ok((
            HttpResponse {
                status,
                headers,
                body,
            },
            generation,
        ))
    }
}

/// Why a body was not read whole.
pub(crate) enum BodyError {
    /// It is longer than the cap.
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body of at most `cap` bytes. Every answer read from a target or an
/// identity provider goes through here, so that none of them can make the
/// worker hold more than `max_response_bytes` in memory; a declared length
/// over the cap is refused before anything is read.
pub(crate) async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    let cap_u64 = u64::try_from(cap).unwrap_or(u64::MAX);
    if resp.content_length().is_some_and(|n| n > cap_u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

enum SendFailure {
    /// No connection or no answer in time: another node may do.
    Unreachable(TargetError),
    /// Anything else: trying another node would not help.
    Answered(TargetError),
}
use SendFailure::{Answered, Unreachable};

/// A reqwest error without its URL, whose query may carry a secret (an API
/// key, a token URL's credentials): what failed and the innermost cause. Every
/// reqwest error that reaches a message goes through here, the token and
/// login requests' included.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests;
