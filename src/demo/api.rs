//! The demo's target: an in-memory Zoom-style REST API, the one the example
//! provisioner file (provisioners/example.toml) describes, as an
//! axum [`Router`] over the directory of [`super::directory`].
//! `provisioner demo` serves it on a loopback port
//! ([`super::server::Server`]) and prints its final state.
//!
//! It is deliberately small but strict: it validates bodies and answers
//! with the statuses the example file expects.
//!
//! # API served
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /users/{email}` | 200 `{"id","email","first_name","last_name","status"}`, 404 |
//! | `GET /users?page_size=N&page_number=P` | 200 `{"page_count","page_number","page_size","total_records","users":[...]}` |
//! | `POST /users` `{"action":"create","user_info":{"email","first_name","last_name"}}` | 201 `{"id",...}`, 409 `{"code":1005,"message":"User already exists"}` |
//! | `PATCH /users/{id}` (any of `first_name`, `last_name`, `email`) | 204, 404 |
//! | `DELETE /users/{id}` (also leaves every group) | 204, 404 |
//! | `GET /groups` | 200 `{"groups":[{"id","name","total_members"}],"total_records"}` |
//! | `GET /groups/{group_id}/members?page_size=N&page_number=P` | 200 `{"members":[{"id","email"}],"page_count",...}`, 404 |
//! | `POST /groups/{group_id}/members` `{"members":[{"id"}\|{"email"},...]}` | 201 `{"ids","added_at"}` (idempotent), 404 unknown group or user |
//! | `DELETE /groups/{group_id}/members/{user_id}` | 204, 404 when not a member |
//!
//! Emails are compared case-insensitively. Lists are sorted by email (groups
//! by name); `page_number` counts from 1, `page_size` defaults to and is
//! clamped at 300, `page_count` is `ceil(total / page_size)`. Errors carry a
//! Zoom-style body `{"code": N, "message": "..."}`; a malformed body or query
//! is a 400, an unknown route a 404. IDs are opaque: users `u-000001`, ...,
//! groups `g-000001`, ...
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use provisioner::demo::api::DemoApi;
//! use provisioner::demo::server::Server;
//!
//! let api = DemoApi::new();
//! api.add_user("jdoe@example.edu", "John", "Doe");
//! api.add_group("Staff");
//! let server = Server::start(api.router()).await?;
//! // ... point a provisioner's url_prefix at server.url() and send events ...
//! println!("{} requests, users: {:?}", api.requests_served(), api.users());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::directory::{
    ApiError, ApiResult, DemoGroup, DemoUser, Directory, PageQuery, CODE_VALIDATION,
};
use super::shared::Shared;

/// The demo API: its directory, and how many requests it has served.
/// Clones share both.
#[derive(Debug, Clone, Default)]
pub struct DemoApi {
    directory: Arc<Shared<Directory>>,
    served: Arc<AtomicU64>,
}

impl DemoApi {
    /// An empty directory.
    pub fn new() -> DemoApi {
        DemoApi::default()
    }

    /// The routes of the API, over this directory.
    pub fn router(&self) -> Router {
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
            .with_state(Arc::clone(&self.directory))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.served),
                count,
            ))
    }

    /// How many requests the API has answered (or is answering), unknown
    /// routes included.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Creates a user and returns its ID. If a user with that email
    /// (case-insensitively) exists, its names are replaced and its ID returned.
    pub fn add_user(&self, email: &str, first_name: &str, last_name: &str) -> String {
        self.directory
            .with(|dir| dir.add_user(email, first_name, last_name))
    }

    /// Creates a group and returns its ID (the existing ID if the name is taken).
    pub fn add_group(&self, name: &str) -> String {
        self.directory.with(|dir| dir.add_group(name))
    }

    /// Makes the user with `email` a member of the group named `group_name`
    /// (idempotent). `false` (and a warning in the log) when the group or the
    /// user does not exist.
    pub fn add_member(&self, group_name: &str, email: &str) -> bool {
        let added = self.directory.with(|dir| dir.add_member(group_name, email));
        if !added {
            tracing::warn!(
                group_name,
                email,
                "demo API: add_member found no such group or user"
            );
        }
        added
    }

    /// Every user, sorted by email (case-insensitively).
    pub fn users(&self) -> Vec<DemoUser> {
        self.directory.read(Directory::users)
    }

    /// Every group with its members, sorted by name.
    pub fn groups(&self) -> Vec<DemoGroup> {
        self.directory.read(Directory::groups)
    }
}

/// Counts every request, then passes it on.
async fn count(State(served): State<Arc<AtomicU64>>, req: Request, next: Next) -> Response {
    served.fetch_add(1, Ordering::Relaxed);
    next.run(req).await
}

/// `YYYY-MM-DDTHH:MM:SSZ`, now, in UTC (whole seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The answer for an error: its status (500 when not a valid status) and
/// its Zoom-style body.
pub fn error_response(error: &ApiError) -> Response {
    (status_code(error.status), Json(error.body())).into_response()
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

// ----- routes -----

async fn get_user(
    State(shared): State<Arc<Shared<Directory>>>,
    Path(email): Path<String>,
) -> Response {
    respond(shared.read(|dir| dir.api_get_user(&email)))
}

async fn list_users(
    State(shared): State<Arc<Shared<Directory>>>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(
        PageQuery::parse(query.as_deref())
            .and_then(|page| shared.read(|dir| dir.api_list_users(page))),
    )
}

async fn create_user(State(shared): State<Arc<Shared<Directory>>>, body: Bytes) -> Response {
    respond(parse_body(&body).and_then(|body| shared.with(|dir| dir.api_create_user(&body))))
}

async fn update_user(
    State(shared): State<Arc<Shared<Directory>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    respond(parse_body(&body).and_then(|body| shared.with(|dir| dir.api_update_user(&id, &body))))
}

async fn delete_user(
    State(shared): State<Arc<Shared<Directory>>>,
    Path(id): Path<String>,
) -> Response {
    respond(shared.with(|dir| dir.api_delete_user(&id)))
}

async fn list_groups(State(shared): State<Arc<Shared<Directory>>>) -> Response {
    respond(shared.read(|dir| dir.api_list_groups()))
}

async fn list_members(
    State(shared): State<Arc<Shared<Directory>>>,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(
        PageQuery::parse(query.as_deref())
            .and_then(|page| shared.read(|dir| dir.api_list_members(&group_id, page))),
    )
}

async fn add_members(
    State(shared): State<Arc<Shared<Directory>>>,
    Path(group_id): Path<String>,
    body: Bytes,
) -> Response {
    let added_at = now_rfc3339();
    respond(
        parse_body(&body)
            .and_then(|body| shared.with(|dir| dir.api_add_members(&group_id, &body, &added_at))),
    )
}

async fn remove_member(
    State(shared): State<Arc<Shared<Directory>>>,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Response {
    respond(shared.with(|dir| dir.api_remove_member(&group_id, &user_id)))
}

async fn no_route(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": format!("No such route: {method} {}", uri.path())})),
    )
        .into_response()
}
