//! The HTTP side of the mock: shared state, the axum router and the
//! interception layer (request log, scripted faults, authentication).
//!
//! Locking rule: `Shared::state` is a std `Mutex`; every access goes through
//! [`Shared::with`], a synchronous closure, so the lock can never be held
//! across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::state::{ApiError, ApiResult, Directory, PageQuery, CODE_VALIDATION};
use super::RecordedRequest;

/// How long a hung request sleeps: far longer than any client timeout. The
/// sleep also ends when the mock shuts down.
pub(crate) const HANG_FOR: Duration = Duration::from_secs(3600);

/// Largest request body read (a larger one gets 413).
const MAX_BODY: usize = 1 << 20;

/// One scripted response, consumed by the next request whatever it is.
#[derive(Debug, Clone)]
pub(crate) enum Scripted {
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
}

/// A persistent failure of one route.
#[derive(Debug, Clone)]
pub(crate) struct FailRule {
    /// Uppercase method, or `*` for any.
    pub method: String,
    pub path_prefix: String,
    pub status: u16,
}

/// The credentials every request must carry.
#[derive(Debug, Clone)]
pub(crate) enum AuthRule {
    Bearer(String),
    Basic { user: String, pass: String },
    Header { name: String, value: String },
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub dir: Directory,
    pub log: Vec<RecordedRequest>,
    pub next_seq: u64,
    pub script: VecDeque<Scripted>,
    pub rules: Vec<FailRule>,
    pub auth: Option<AuthRule>,
}

/// State shared by the server task and the [`super::MockTarget`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<Inner>,
    /// Bumped after every change (request arrival and completion, seeding,
    /// clearing), so waiters re-check their condition.
    changes: watch::Sender<u64>,
    /// Becomes `true` when the mock shuts down (ends hung requests).
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            state: Mutex::new(Inner::default()),
            changes: watch::Sender::new(0),
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the mock's plain data
        // half-updated in a way that matters more than losing the server.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock and tells waiters that something may have changed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let result = {
            let mut inner = self.lock();
            f(&mut inner)
        };
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    /// Runs `f` under the lock, read-only (no change notification).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        let inner = self.lock();
        f(&inner)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// What the interception layer decided for one request.
enum Decision {
    Pass,
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
    Unauthorized(&'static str),
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{user}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/groups", get(list_groups))
        .route(
            "/groups/{group_id}/members",
            get(list_members).post(add_members),
        )
        .route(
            "/groups/{group_id}/members/{user_id}",
            delete(remove_member),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(shared.clone(), intercept))
        .with_state(shared)
}

/// Records the request, then applies scripted faults, authentication and
/// route failures before the API itself sees it.
async fn intercept(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let (bytes, too_large) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Bytes::new(), true),
    };
    let raw_body = String::from_utf8_lossy(&bytes).into_owned();
    let json_body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    let path = parts.uri.path().to_string();
    let decoded = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    let method = parts.method.as_str().to_string();

    let (seq, decision) = shared.with(|inner| {
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.log.push(RecordedRequest {
            seq,
            method: method.clone(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_string),
            body: json_body,
            raw_body,
            headers: header_map(&parts.headers),
            at,
            status: None,
        });
        let decision = if let Some(scripted) = inner.script.pop_front() {
            match scripted {
                Scripted::Fail {
                    status,
                    retry_after,
                } => Decision::Fail {
                    status,
                    retry_after,
                },
                Scripted::Hang => Decision::Hang,
            }
        } else if let Some(challenge) = inner
            .auth
            .as_ref()
            .and_then(|rule| check_auth(rule, &parts.headers))
        {
            Decision::Unauthorized(challenge)
        } else if let Some(rule) = inner.rules.iter().find(|r| {
            (r.method == "*" || r.method == method)
                && (path.starts_with(&r.path_prefix) || decoded.starts_with(&r.path_prefix))
        }) {
            Decision::Fail {
                status: rule.status,
                retry_after: None,
            }
        } else {
            Decision::Pass
        };
        (seq, decision)
    });

    let response = match decision {
        _ if too_large => error_response(&ApiError::new(
            413,
            CODE_VALIDATION,
            format!("Request body larger than {MAX_BODY} bytes"),
        )),
        Decision::Pass => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Decision::Fail {
            status,
            retry_after,
        } => injected(status, retry_after),
        Decision::Hang => {
            let mut stop = shared.shutdown.clone();
            // Ends early only when the mock shuts down (or is dropped).
            let _ = tokio::time::timeout(HANG_FOR, stop.wait_for(|s| *s)).await;
            error_response(&ApiError::new(
                503,
                503,
                "Mock target shutting down (hung request released)",
            ))
        }
        Decision::Unauthorized(challenge) => {
            let mut response = error_response(&ApiError::new(401, 124, "Invalid access token"));
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
    };

    let status = response.status().as_u16();
    shared.with(|inner| {
        if let Some(entry) = inner.log.iter_mut().rev().find(|r| r.seq == seq) {
            entry.status = Some(status);
        }
    });
    response
}

/// `None` when the request carries the expected credentials, else the
/// `WWW-Authenticate` challenge to send with the 401.
fn check_auth(rule: &AuthRule, headers: &HeaderMap) -> Option<&'static str> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let credentials = |scheme: &str| {
        value("authorization").and_then(|v| {
            let (s, rest) = v.trim().split_once(' ')?;
            s.eq_ignore_ascii_case(scheme)
                .then(|| rest.trim().to_string())
        })
    };
    match rule {
        AuthRule::Bearer(token) => (credentials("bearer").as_deref() != Some(token.as_str()))
            .then_some("Bearer realm=\"mock\""),
        AuthRule::Basic { user, pass } => {
            let decoded = credentials("basic").and_then(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            });
            (decoded.as_deref() != Some(format!("{user}:{pass}").as_str()))
                .then_some("Basic realm=\"mock\"")
        }
        AuthRule::Header { name, value: want } => {
            (value(name) != Some(want.as_str())).then_some("ApiKey realm=\"mock\"")
        }
    }
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error_response(error: &ApiError) -> Response {
    (status_code(error.status), Json(error.body())).into_response()
}

fn injected(status: u16, retry_after: Option<u64>) -> Response {
    let mut response = error_response(&ApiError::new(
        status,
        u32::from(status),
        "Injected failure (mock target)",
    ));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn respond(result: ApiResult) -> Response {
    match result {
        Ok(ok) => match ok.body {
            Some(body) => (status_code(ok.status), Json(body)).into_response(),
            None => status_code(ok.status).into_response(),
        },
        Err(error) => error_response(&error),
    }
}

fn parse_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            400,
            CODE_VALIDATION,
            "Request body is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            400,
            CODE_VALIDATION,
            format!("Request body is not valid JSON: {e}"),
        )
    })
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ----- routes -----

async fn get_user(State(shared): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    respond(shared.read(|inner| inner.dir.api_get_user(&email)))
}

async fn list_users(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    respond(
        PageQuery::parse(query.as_deref())
            .and_then(|page| shared.read(|inner| inner.dir.api_list_users(page))),
    )
}

async fn create_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    respond(
        parse_body(&body).and_then(|body| shared.with(|inner| inner.dir.api_create_user(&body))),
    )
}

async fn update_user(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    respond(
        parse_body(&body)
            .and_then(|body| shared.with(|inner| inner.dir.api_update_user(&id, &body))),
    )
}

async fn delete_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    respond(shared.with(|inner| inner.dir.api_delete_user(&id)))
}

async fn list_groups(State(shared): State<Arc<Shared>>) -> Response {
    respond(shared.read(|inner| inner.dir.api_list_groups()))
}

async fn list_members(
    State(shared): State<Arc<Shared>>,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(
        PageQuery::parse(query.as_deref())
            .and_then(|page| shared.read(|inner| inner.dir.api_list_members(&group_id, page))),
    )
}

async fn add_members(
    State(shared): State<Arc<Shared>>,
    Path(group_id): Path<String>,
    body: Bytes,
) -> Response {
    let added_at = now_rfc3339();
    respond(parse_body(&body).and_then(|body| {
        shared.with(|inner| inner.dir.api_add_members(&group_id, &body, &added_at))
    }))
}

async fn remove_member(
    State(shared): State<Arc<Shared>>,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Response {
    respond(shared.with(|inner| inner.dir.api_remove_member(&group_id, &user_id)))
}

async fn no_route(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": format!("No such route: {method} {}", uri.path())})),
    )
        .into_response()
}
