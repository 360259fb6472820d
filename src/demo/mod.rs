//! What `provisioner demo` ships with: an embedded target for the example
//! provisioner file, so that a newcomer can watch events being applied
//! without any remote system. The command itself is `commands::demo`.
//!
//! - [`api`]: [`api::DemoApi`], the Zoom-style REST API of
//!   provisioners/example.toml: its axum routes over an in-memory directory,
//!   seeding, the final state and a request count.
//! - [`directory`]: the directory (users, groups, memberships) and the API
//!   operations on it; pure data.
//! - [`server`]: [`server::Server`], a `Router` served on a loopback port.
//! - [`shared`]: [`shared::Shared`], a lock only reached through synchronous
//!   closures (never held across an `.await`).
//!
//! Test doubles are not here: the integration tests layer their fault
//! injection, authentication rules and request log on top of [`api::DemoApi`]
//! (tests/it/support/).

pub mod api;
pub mod directory;
pub mod server;
pub mod shared;

#[cfg(test)]
mod tests;
