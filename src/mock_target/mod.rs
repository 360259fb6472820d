//! An in-memory simulated REST target: the Zoom-style API that SPEC §4's
//! example provisioner file describes, served by axum on a loopback port.
//!
//! Used by `provisioner demo` (a self-contained run for newcomers) and by
//! tests that assert which requests the worker made, in which order. It is
//! deliberately small but strict: it validates bodies, answers with the
//! statuses the example file expects, and records every request as received.
//!
//! # API served (relative to [`MockTarget::url`])
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
//! is a 400. IDs are opaque: users `u-000001`, ..., groups `g-000001`, ...
//!
//! # Faults and authentication
//!
//! Before the API sees a request, in this order: the script of
//! [`MockTarget::fail_next`] / [`MockTarget::hang_next`] (each scripted entry is
//! consumed by exactly one request, whatever it is), then the authentication
//! rule ([`MockTarget::require_bearer`] and friends, 401), then the persistent
//! route failures of [`MockTarget::fail_matching`]. Every request is recorded,
//! including those answered by a fault.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use provisioner::mock_target::MockTarget;
//! use std::time::Duration;
//!
//! let mock = MockTarget::start().await?;
//! mock.add_user("jdoe@example.edu", "John", "Doe");
//! mock.add_group("Staff");
//! // ... point a provisioner's url_prefix at mock.url() and send events ...
//! assert!(mock.wait_for_requests(2, Duration::from_secs(5)).await);
//! assert_eq!(mock.request_lines()[0], "GET /users/jdoe%40example.edu");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod scim;
mod server;
mod state;

#[cfg(test)]
mod tests;

use server::{AuthRule, FailRule, Scripted, Shared};
pub use state::{MockGroup, MockUser};

/// How long [`MockTarget::shutdown`] waits for in-flight requests before
/// stopping the server task outright.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Arrival number since the mock started (not reset by
    /// [`MockTarget::clear_requests`]).
    pub seq: u64,
    /// Uppercase method, e.g. `POST`.
    pub method: String,
    /// The path exactly as received, still percent-encoded
    /// (`/users/jdoe%40example.edu`).
    pub path: String,
    /// The query string as received (encoded, without `?`), if any.
    pub query: Option<String>,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<serde_json::Value>,
    /// The body as text, byte for byte (lossy UTF-8); empty when none.
    pub raw_body: String,
    /// Headers, names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// When the request arrived.
    pub at: Instant,
    /// The status the mock answered; `None` while the request is in flight
    /// (or hung).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// `"METHOD /path"`, or `"METHOD /path?query"` when there is a query;
    /// path and query as received (percent-encoded).
    pub fn line(&self) -> String {
        match &self.query {
            Some(query) => format!("{} {}?{}", self.method, self.path, query),
            None => format!("{} {}", self.method, self.path),
        }
    }

    /// A header's value; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The path with percent-encoding decoded (lossy UTF-8).
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }
}

/// A running mock target. Dropping it (or [`MockTarget::shutdown`]) stops the
/// server: new connections are refused, idle connections closed, hung
/// requests released.
pub struct MockTarget {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTarget")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl MockTarget {
    /// Binds `127.0.0.1` on a free port and serves on a tokio task.
    ///
    /// Fails when binding fails or when not called inside a tokio runtime.
    pub async fn start() -> Result<MockTarget, io::Error> {
        MockTarget::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`MockTarget::start`], on a given address (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr) -> Result<MockTarget, io::Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(stop_rx.clone()));
        let app = server::router(Arc::clone(&shared));
        let mut signal = stop_rx;
        let task = runtime.spawn(async move {
            let stopped = async move {
                // Err means the handle is gone: stop as well.
                let _ = signal.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "mock target server stopped with an error");
            }
        });
        tracing::debug!(%addr, "mock target listening");
        Ok(MockTarget {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: use it as `url_prefix`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits (up to 5 s) for it to finish; hung requests
    /// are released with a 503. Dropping the handle stops it too, without waiting.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    // ----- seeding and inspection -----

    /// Creates a user and returns its ID. If a user with that email
    /// (case-insensitively) exists, its names are replaced and its ID returned.
    pub fn add_user(&self, email: &str, first_name: &str, last_name: &str) -> String {
        self.shared
            .with(|inner| inner.dir.add_user(email, first_name, last_name))
    }

    /// Removes the user with that email and its memberships; `false` if absent.
    pub fn remove_user(&self, email: &str) -> bool {
        self.shared.with(|inner| inner.dir.remove_user(email))
    }

    /// Creates a group and returns its ID (the existing ID if the name is taken).
    pub fn add_group(&self, name: &str) -> String {
        self.shared.with(|inner| inner.dir.add_group(name))
    }

    /// Makes the user with `email` a member of the group named `group_name`
    /// (idempotent). `false` (and a warning in the log) when the group or the
    /// user does not exist.
    pub fn add_member(&self, group_name: &str, email: &str) -> bool {
        let added = self
            .shared
            .with(|inner| inner.dir.add_member(group_name, email));
        if !added {
            tracing::warn!(
                group_name,
                email,
                "mock target: add_member found no such group or user"
            );
        }
        added
    }

    /// Removes the user with `email` from the group named `group_name`;
    /// `false` when it was not a member (or either does not exist).
    pub fn remove_member(&self, group_name: &str, email: &str) -> bool {
        self.shared
            .with(|inner| inner.dir.remove_member(group_name, email))
    }

    /// Every user, sorted by email (case-insensitively).
    pub fn users(&self) -> Vec<MockUser> {
        self.shared.read(|inner| inner.dir.users())
    }

    /// The user with that email (case-insensitively).
    pub fn user(&self, email: &str) -> Option<MockUser> {
        self.shared.read(|inner| inner.dir.user(email))
    }

    /// The user with that API ID.
    pub fn user_by_id(&self, id: &str) -> Option<MockUser> {
        self.shared.read(|inner| inner.dir.user_by_id(id))
    }

    /// The emails of the members of the group named `group_name`, sorted;
    /// empty when the group does not exist.
    pub fn members(&self, group_name: &str) -> Vec<String> {
        self.shared.read(|inner| inner.dir.members(group_name))
    }

    /// Every group with its members, sorted by name.
    pub fn groups(&self) -> Vec<MockGroup> {
        self.shared.read(|inner| inner.dir.groups())
    }

    // ----- request log -----

    /// Every request received since the start or the last
    /// [`MockTarget::clear_requests`], in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.read(|inner| inner.log.clone())
    }

    /// [`RecordedRequest::line`] of every request, in arrival order:
    /// `"POST /users"`, `"GET /users/jdoe%40example.edu"`,
    /// `"GET /users?page_size=300&page_number=2"`.
    pub fn request_lines(&self) -> Vec<String> {
        self.shared
            .read(|inner| inner.log.iter().map(RecordedRequest::line).collect())
    }

    /// Forgets the recorded requests (the directory and the faults stay).
    pub fn clear_requests(&self) {
        self.shared.with(|inner| inner.log.clear());
    }

    /// Waits until at least `n` requests are recorded (arrived; they may still
    /// be in flight). `false` on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |mock| {
            mock.shared.read(|inner| inner.log.len()) >= n
        })
        .await
    }

    /// Waits until `condition` holds, re-checking it after every change (a
    /// request arriving or completing, seeding, clearing). `false` on timeout.
    /// Example: `mock.wait_until(t, |m| m.user("jdoe@example.edu").is_some())`.
    pub async fn wait_until<F>(&self, timeout: Duration, mut condition: F) -> bool
    where
        F: FnMut(&MockTarget) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.subscribe();
        loop {
            // Mark the current version seen *before* checking, so a change
            // between the check and the wait is not missed.
            changes.borrow_and_update();
            if condition(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return condition(self),
            }
        }
    }

    // ----- fault injection -----

    /// The next `n` requests (whatever they are) get `status` with a JSON
    /// error body. Queued after any faults already scripted.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.script(
            n,
            Scripted::Fail {
                status,
                retry_after: None,
            },
        );
    }

    /// Like [`MockTarget::fail_next`], with a `Retry-After: secs` header.
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
    /// client timeout); released with a 503 when the mock shuts down.
    /// Queued after any faults already scripted.
    pub fn hang_next(&self, n: usize) {
        self.script(n, Scripted::Hang);
    }

    fn script(&self, n: usize, entry: Scripted) {
        self.shared.with(|inner| {
            inner.script.extend(std::iter::repeat_n(entry, n));
        });
    }

    /// Every request with this method (case-insensitive; `"*"` for any) whose
    /// path starts with `path_prefix` gets `status`, until
    /// [`MockTarget::clear_faults`]. The prefix is compared with the path as
    /// received and with its percent-decoded form, so both
    /// `/users/jdoe%40example.edu` and `/users/jdoe@example.edu` work.
    /// A status outside 100..=999 is answered as 500.
    pub fn fail_matching(&self, method: &str, path_prefix: &str, status: u16) {
        let rule = FailRule {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            status,
        };
        self.shared.with(|inner| inner.rules.push(rule));
    }

    /// Removes scripted faults not yet consumed and every route failure.
    pub fn clear_faults(&self) {
        self.shared.with(|inner| {
            inner.script.clear();
            inner.rules.clear();
        });
    }

    /// From now on, requests without `Authorization: Bearer <token>` get 401.
    /// Replaces any previous authentication rule.
    pub fn require_bearer(&self, token: &str) {
        self.set_auth(Some(AuthRule::Bearer(token.to_string())));
    }

    /// From now on, requests without HTTP basic credentials `user`/`pass` get
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
        self.shared.with(|inner| inner.auth = rule);
    }
}

impl Drop for MockTarget {
    fn drop(&mut self) {
        // The server task winds down on its own: no new connections, idle
        // ones closed, hung requests released.
        self.stop.send_replace(true);
    }
}
