//! [`MockTarget`]: the tests' REST target. The demo API of `provisioner demo`
//! ([`provisioner::demo::api::DemoApi`]: the Zoom-style API that the example
//! provisioner file, provisioners/example.toml, describes) behind the test-only [`super::intercept::Intercept`]
//! layer (request log, scripted faults, authentication rules, route
//! failures), served on a loopback port.
//!
//! Like every [`Double`], it derefs to its `Intercept`, so a test calls
//! `mock.fail_next(2, 503)`, `mock.require_bearer(..)`, `mock.requests()`
//! directly. What the API answers is documented in `provisioner::demo::api`;
//! what comes before it, in which order, in [`super::intercept`]. Faults are
//! answered with the API's Zoom-style error body.
//!
//! # Example
//!
//! ```ignore
//! let mock = MockTarget::start().await?;
//! mock.add_user("jdoe@example.edu", "John", "Doe");
//! mock.add_group("Staff");
//! // ... point a provisioner's url_prefix at mock.url() and send events ...
//! assert!(mock.wait_for_requests(2, Duration::from_secs(5)).await);
//! assert_eq!(mock.request_lines()[0], "GET /users/jdoe%40example.edu");
//! ```

use std::io;

use axum::response::Response;
use provisioner::demo::api::{error_response, DemoApi};
use provisioner::demo::directory::{ApiError, DemoGroup, DemoUser, CODE_VALIDATION};

use super::double::Double;
use super::intercept::{Refusal, MAX_BODY};

/// The double's own tests.
mod tests;

/// A running mock target: the demo API as a [`Double`].
pub type MockTarget = Double<DemoApi>;

/// Refusals in the API's error format: `{"code": N, "message": "..."}`.
fn render(refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::Injected(status) => {
            ApiError::new(status, u32::from(status), "Injected failure (mock target)")
        }
        Refusal::Unauthorized => ApiError::new(401, 124, "Invalid access token"),
        Refusal::TooLarge => ApiError::new(
            413,
            CODE_VALIDATION,
            format!("Request body larger than {MAX_BODY} bytes"),
        ),
        Refusal::Released => ApiError::new(
            503,
            503,
            "Mock target shutting down (hung request released)",
        ),
    };
    error_response(&error)
}

impl Double<DemoApi> {
    /// Binds `127.0.0.1` on a free port and serves on a tokio task.
    pub async fn start() -> Result<MockTarget, io::Error> {
        let api = DemoApi::new();
        let routes = api.router();
        Double::serve(api, routes, "mock", render).await
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: use it as `url_prefix`.
    pub fn url(&self) -> String {
        self.root_url()
    }

    // ----- seeding and inspection -----

    /// Creates a user and returns its ID. If a user with that email
    /// (case-insensitively) exists, its names are replaced and its ID returned.
    pub fn add_user(&self, email: &str, first_name: &str, last_name: &str) -> String {
        self.seeded(self.api().add_user(email, first_name, last_name))
    }

    /// Creates a group and returns its ID (the existing ID if the name is taken).
    pub fn add_group(&self, name: &str) -> String {
        self.seeded(self.api().add_group(name))
    }

    /// Makes the user with `email` a member of the group named `group_name`
    /// (idempotent). `false` (and a warning in the log) when the group or the
    /// user does not exist.
    pub fn add_member(&self, group_name: &str, email: &str) -> bool {
        self.seeded(self.api().add_member(group_name, email))
    }

    /// Every user, sorted by email (case-insensitively).
    pub fn users(&self) -> Vec<DemoUser> {
        self.api().users()
    }

    /// The user with that email (case-insensitively).
    pub fn user(&self, email: &str) -> Option<DemoUser> {
        let email = email.to_lowercase();
        self.users()
            .into_iter()
            .find(|u| u.email.to_lowercase() == email)
    }

    /// The emails of the members of the group named `group_name`, sorted;
    /// empty when the group does not exist.
    pub fn members(&self, group_name: &str) -> Vec<String> {
        self.groups()
            .into_iter()
            .find(|g| g.name == group_name)
            .map(|g| g.members)
            .unwrap_or_default()
    }

    /// Every group with its members, sorted by name.
    pub fn groups(&self) -> Vec<DemoGroup> {
        self.api().groups()
    }
}
