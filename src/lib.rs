//! provisioner: consumes identity change events from RabbitMQ and reconciles
//! them against remote REST APIs.
//!
//! Module map (see docs/architecture.md):
//! - [`admin`]: the admin HTTP API (probes, metrics, state, pause, journal, dead letters).
//! - [`config`]: the worker and provisioner files, parsed then validated.
//! - [`assembly`]: builds a provisioner (HTTP client, target, engine) from its configuration.
//! - [`event`]: the event wire format; parsing never panics.
//! - [`call_log`]: the target calls of one event, collected for the journal and metrics.
//! - [`redact`]: passwords in URLs replaced before anything is shown.
//! - [`bounded`]: clipping of outside values for headers and log lines.
//! - [`engine`]: the reconciliation engine shared by every target: routing,
//!   strategies, caches, rate limits. Knows nothing of HTTP or AMQP.
//! - [`target`]: the [`target::TargetApi`] trait, one folder per kind (`rest`,
//!   `scim`), and the registry that builds a target from `kind`.
//! - [`metrics`]: Prometheus counters, histograms and scrape-time samples.
//! - [`http`]: HTTP client, authentication, timeouts, failover.
//! - [`explain`]: one subject explained: its journal history, its account and
//!   memberships on the target, and the plan an add would execute now.
//! - [`journal`]: the outcome journal: a row per settled event, in SQLite or PostgreSQL.
//! - [`template`]: minijinja templates for URLs, bodies and headers, compiled once.
//! - [`amqp`]: the broker side: connection, topology, dead letters, publishing.
//! - [`worker`]: `run(config, shutdown)`: one consumer task per consumed queue.
//! - [`demo`]: what `provisioner demo` serves: the example provisioner's
//!   Zoom-style REST API, in memory, on a loopback port.
//! - [`bench`]: `provisioner bench`: the worker's throughput, latency, CPU and
//!   memory against the local broker and a mock target, next to their limits.
//! - [`commands`]: the CLI commands behind `main.rs`.

pub mod admin;
pub mod amqp;
pub mod assembly;
pub mod bench;
pub mod bounded;
pub mod call_log;
pub mod commands;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod explain;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod redact;
pub mod target;
pub mod template;
pub mod worker;
