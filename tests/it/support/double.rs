//! [`Double`]: a test double's handle. An API (its state `A` and its axum
//! routes) behind the [`Intercept`] layer, served on a loopback port.
//! [`super::mock_rest::MockTarget`] and [`super::mock_scim::MockScim`] are
//! `Double`s; each adds its seeding and inspection methods.
//!
//! A `Double` derefs to its [`Intercept`], so a test calls
//! `mock.fail_next(2, 503)`, `mock.require_bearer(..)` or `mock.requests()`
//! on the double itself.

use std::fmt;
use std::io;
use std::ops::Deref;
use std::time::Duration;

use axum::Router;
use provisioner::demo::server::Server;

use super::intercept::{Intercept, Render};

/// A running test double. Dropping it (or [`Double::shutdown`]) stops the
/// server: new connections are refused, idle connections closed, hung
/// requests released.
pub struct Double<A> {
    api: A,
    intercept: Intercept,
    server: Server,
}

impl<A> fmt::Debug for Double<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Double")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<A> Deref for Double<A> {
    type Target = Intercept;

    fn deref(&self) -> &Intercept {
        &self.intercept
    }
}

impl<A> Double<A> {
    /// Serves `routes` (the API's, over `api`) behind a fresh [`Intercept`]
    /// whose 401 challenges name `realm` and whose refusals `render` writes,
    /// on `127.0.0.1` and a free port.
    pub(super) async fn serve(
        api: A,
        routes: Router,
        realm: &'static str,
        render: Render,
    ) -> Result<Double<A>, io::Error> {
        let intercept = Intercept::new(realm, render);
        let server = Server::start(intercept.wrap(routes)).await?;
        Ok(Double {
            api,
            intercept,
            server,
        })
    }

    /// The API's state.
    pub(super) fn api(&self) -> &A {
        &self.api
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(super) fn root_url(&self) -> String {
        self.server.url()
    }

    /// Tells waiters that the state changed, and returns `result`: for
    /// seeding methods, `self.seeded(self.api().add_…(…))`.
    pub(super) fn seeded<R>(&self, result: R) -> R {
        self.intercept.changed();
        result
    }

    /// Stops the server and waits (up to 5 s) for it to finish; hung requests
    /// are released with a 503 first. Dropping the handle stops it too,
    /// without waiting.
    pub async fn shutdown(self) {
        self.intercept.release();
        self.server.shutdown().await;
    }

    /// Waits until `condition` holds, re-checking it after every change (a
    /// request arriving or completing, seeding, clearing). `false` on timeout.
    /// Example: `mock.wait_until(t, |m| m.user("jdoe@example.edu").is_some())`.
    pub async fn wait_until<F>(&self, timeout: Duration, mut condition: F) -> bool
    where
        F: FnMut(&Double<A>) -> bool,
    {
        self.intercept.wait(timeout, || condition(self)).await
    }
}
