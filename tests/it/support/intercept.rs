//! [`Intercept`]: what the test doubles put in front of their API (the demo
//! API in [`super::mock_rest::MockTarget`], the SCIM service in
//! [`super::mock_scim::MockScim`]). It is an axum middleware around the
//! API's `Router` ([`Intercept::wrap`]); the API does not know it is there.
//!
//! Every request is recorded first, including those answered by a fault.
//! Then, before the API sees it, in this order:
//! 1. the script of [`Intercept::fail_next`] / [`Intercept::hang_next`]: each
//!    entry is consumed by exactly one request, whatever it is;
//! 2. the authentication rule ([`Intercept::require_bearer`] and friends): 401;
//! 3. the persistent route failures of [`Intercept::fail_matching`].
//!
//! Recording and that decision happen under one lock, so the log's order is
//! the order in which the script was consumed. Each double renders the
//! refusals ([`Refusal`]) in its own error format.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use provisioner::demo::shared::Shared;
use tokio::sync::watch;

use super::recorded::{RecordedRequest, RequestLog};

/// Largest request body read (a larger one gets 413).
pub const MAX_BODY: usize = 1 << 20;

/// How long a hung request sleeps: far longer than any client timeout. The
/// sleep also ends when the double shuts down.
const HANG_FOR: Duration = Duration::from_secs(3600);

/// Why the layer answers instead of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A scripted or route failure with this status (500 when the status is
    /// not a valid one).
    Injected(u16),
    /// The credentials the authentication rule requires are missing or wrong (401).
    Unauthorized,
    /// The body is larger than [`MAX_BODY`] (413).
    TooLarge,
    /// A hung request released because the double shuts down (503).
    Released,
}

/// Renders a refusal as the double's error answer (status and body); the
/// layer adds `Retry-After` and `WWW-Authenticate` itself.
pub type Render = fn(Refusal) -> Response;

/// One scripted response, consumed by the next request whatever it is.
#[derive(Debug, Clone)]
enum Scripted {
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
}

/// A persistent failure of one route.
#[derive(Debug, Clone)]
struct FailRule {
    /// Uppercase method, or `*` for any.
    method: String,
    path_prefix: String,
    status: u16,
}

/// The credentials every request must carry.
#[derive(Debug, Clone)]
enum AuthRule {
    Bearer(String),
    Basic { user: String, pass: String },
    Header { name: String, value: String },
}

/// What the layer decided for one request.
enum Decision {
    Pass,
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
    /// 401, with this scheme in the challenge.
    Unauthorized(&'static str),
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct Faults {
    log: RequestLog,
    script: VecDeque<Scripted>,
    rules: Vec<FailRule>,
    auth: Option<AuthRule>,
}

impl Faults {
    fn decide(&mut self, parts: &Parts) -> Decision {
        if let Some(scripted) = self.script.pop_front() {
            return match scripted {
                Scripted::Fail {
                    status,
                    retry_after,
                } => Decision::Fail {
                    status,
                    retry_after,
                },
                Scripted::Hang => Decision::Hang,
            };
        }
        if let Some(scheme) = self.auth.as_ref().and_then(|r| r.refuses(&parts.headers)) {
            return Decision::Unauthorized(scheme);
        }
        let method = parts.method.as_str();
        let path = parts.uri.path();
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        match self.rules.iter().find(|r| {
            (r.method == "*" || r.method == method)
                && (path.starts_with(&r.path_prefix) || decoded.starts_with(&r.path_prefix))
        }) {
            Some(rule) => Decision::Fail {
                status: rule.status,
                retry_after: None,
            },
            None => Decision::Pass,
        }
    }
}

impl AuthRule {
    /// `None` when the request carries the expected credentials, else the
    /// scheme of the `WWW-Authenticate` challenge to send with the 401.
    fn refuses(&self, headers: &HeaderMap) -> Option<&'static str> {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let credentials = |scheme: &str| {
            value("authorization").and_then(|v| {
                let (s, rest) = v.trim().split_once(' ')?;
                s.eq_ignore_ascii_case(scheme)
                    .then(|| rest.trim().to_string())
            })
        };
        match self {
            AuthRule::Bearer(token) => {
                (credentials("bearer").as_deref() != Some(token.as_str())).then_some("Bearer")
            }
            AuthRule::Basic { user, pass } => {
                let decoded = credentials("basic").and_then(|c| {
                    base64::engine::general_purpose::STANDARD
                        .decode(c)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                });
                (decoded.as_deref() != Some(format!("{user}:{pass}").as_str())).then_some("Basic")
            }
            AuthRule::Header { name, value: want } => {
                (value(name) != Some(want.as_str())).then_some("ApiKey")
            }
        }
    }
}

/// What the middleware and the [`Intercept`] handle share.
struct Layer {
    faults: Shared<Faults>,
    /// Bumped after every change (request arrival and completion, seeding,
    /// clearing), so waiters re-check their condition.
    changes: watch::Sender<u64>,
    /// Becomes `true` when the double shuts down (ends hung requests).
    released: watch::Receiver<bool>,
    /// The realm of the `WWW-Authenticate` challenges.
    realm: &'static str,
    render: Render,
}

impl Layer {
    /// Runs `f` under the lock and tells waiters that something may have changed.
    fn with<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        let result = self.faults.with(f);
        self.changed();
        result
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The handle on the layer: the request log, fault injection, authentication
/// rules and waiting. Dropping it releases hung requests.
pub struct Intercept {
    layer: Arc<Layer>,
    release: watch::Sender<bool>,
}

impl Intercept {
    /// A layer that passes everything (and records it); its 401 challenges
    /// name `realm`, its refusals are rendered by `render`.
    pub(super) fn new(realm: &'static str, render: Render) -> Intercept {
        let (release, released) = watch::channel(false);
        Intercept {
            layer: Arc::new(Layer {
                faults: Shared::default(),
                changes: watch::Sender::new(0),
                released,
                realm,
                render,
            }),
            release,
        }
    }

    /// `app` behind this layer.
    pub(super) fn wrap(&self, app: Router) -> Router {
        app.layer(middleware::from_fn_with_state(
            Arc::clone(&self.layer),
            intercept,
        ))
    }

    /// Tells waiters that the double's state changed (seeding).
    pub(super) fn changed(&self) {
        self.layer.changed();
    }

    /// Answers hung requests with a 503 now (the double shuts down).
    pub(super) fn release(&self) {
        self.release.send_replace(true);
    }

    /// Waits until `condition` holds, re-checking it after every change (a
    /// request arriving or completing, seeding, clearing). `false` on timeout.
    pub(super) async fn wait(
        &self,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.layer.changes.subscribe();
        loop {
            // Mark the current version seen *before* checking, so a change
            // between the check and the wait is not missed.
            changes.borrow_and_update();
            if condition() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return condition(),
            }
        }
    }

    // ----- request log -----

    /// Every request received since the start or the last
    /// [`Intercept::clear_requests`], in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.layer.faults.read(|f| f.log.entries().to_vec())
    }

    /// [`RecordedRequest::line`] of every request, in arrival order:
    /// `"POST /users"`, `"GET /users/jdoe%40example.edu"`,
    /// `"GET /users?page_size=300&page_number=2"`.
    pub fn request_lines(&self) -> Vec<String> {
        self.layer
            .faults
            .read(|f| f.log.entries().iter().map(RecordedRequest::line).collect())
    }

    /// Forgets the recorded requests (the data and the faults stay).
    pub fn clear_requests(&self) {
        self.layer.with(|f| f.log.clear());
    }

    /// Waits until at least `n` requests are recorded (arrived; they may still
    /// be in flight). `false` on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, || {
            self.layer.faults.read(|f| f.log.entries().len()) >= n
        })
        .await
    }

    // ----- fault injection -----

    /// The next `n` requests (whatever they are) get `status` with an error
    /// body. Queued after any faults already scripted.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.script(
            n,
            Scripted::Fail {
                status,
                retry_after: None,
            },
        );
    }

    /// Like [`Intercept::fail_next`], with a `Retry-After: secs` header.
    pub fn fail_next_with_retry_after(&self, n: usize, status: u16, retry_after_secs: u64) {
        self.script(
            n,
            Scripted::Fail {
                status,
                retry_after: Some(retry_after_secs),
            },
        );
    }

    /// The next `n` requests get no answer for an hour (far beyond any
    /// client timeout); released with a 503 when the double shuts down.
    /// Queued after any faults already scripted.
    pub fn hang_next(&self, n: usize) {
        self.script(n, Scripted::Hang);
    }

    fn script(&self, n: usize, entry: Scripted) {
        self.layer
            .with(|f| f.script.extend(std::iter::repeat_n(entry, n)));
    }

    /// Every request with this method (case-insensitive; `"*"` for any) whose
    /// path starts with `path_prefix` gets `status`, until
    /// [`Intercept::clear_faults`]. The prefix is compared with the path as
    /// received and with its percent-decoded form, so both
    /// `/users/jdoe%40example.edu` and `/users/jdoe@example.edu` work.
    /// A status outside 100..=999 is answered as 500.
    pub fn fail_matching(&self, method: &str, path_prefix: &str, status: u16) {
        let rule = FailRule {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
        };
        self.layer.with(|f| f.rules.push(rule));
    }

    /// Removes scripted faults not yet consumed and every route failure.
    pub fn clear_faults(&self) {
        self.layer.with(|f| {
            f.script.clear();
            f.rules.clear();
        });
    }

    // ----- authentication -----

    /// From now on, requests without `Authorization: Bearer <token>` get 401.
    /// Replaces any previous authentication rule.
    pub fn require_bearer(&self, token: &str) {
        self.set_auth(Some(AuthRule::Bearer(token.to_string())));
    }

    /// From now on, requests without HTTP Basic credentials `user`/`pass` get
    /// 401. Replaces any previous authentication rule.
    pub fn require_basic(&self, user: &str, pass: &str) {
        self.set_auth(Some(AuthRule::Basic {
            user: user.to_string(),
            pass: pass.to_string(),
        }));
    }

    /// From now on, requests without header `name: value` (an API key) get
    /// 401. Replaces any previous authentication rule.
    pub fn require_header(&self, name: &str, value: &str) {
        self.set_auth(Some(AuthRule::Header {
            name: name.to_ascii_lowercase(),
            value: value.to_string(),
        }));
    }

    /// Accepts requests without credentials again.
    pub fn clear_auth(&self) {
        self.set_auth(None);
    }

    fn set_auth(&self, rule: Option<AuthRule>) {
        self.layer.with(|f| f.auth = rule);
    }
}

impl Drop for Intercept {
    fn drop(&mut self) {
        self.release();
    }
}

/// Records the request, then applies scripted faults, authentication and
/// route failures before the API itself sees it.
async fn intercept(State(layer): State<Arc<Layer>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let (bytes, too_large) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Bytes::new(), true),
    };
    let (seq, decision) = layer.with(|f| (f.log.record(&parts, &bytes, at), f.decide(&parts)));
    let response = match decision {
        _ if too_large => (layer.render)(Refusal::TooLarge),
        Decision::Pass => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Decision::Fail {
            status,
            retry_after,
        } => {
            let mut response = (layer.render)(Refusal::Injected(status));
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Decision::Hang => {
            let mut released = layer.released.clone();
            // Ends early only when the double shuts down (or is dropped).
            let _ = tokio::time::timeout(HANG_FOR, released.wait_for(|r| *r)).await;
            (layer.render)(Refusal::Released)
        }
        Decision::Unauthorized(scheme) => {
            let mut response = (layer.render)(Refusal::Unauthorized);
            let challenge = format!("{scheme} realm=\"{}\"", layer.realm);
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(WWW_AUTHENTICATE, value);
            }
            response
        }
    };
    let status = response.status().as_u16();
    layer.with(|f| f.log.complete(seq, status));
    response
}
