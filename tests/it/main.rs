//! Integration tests: the real RabbitMQ broker (through lapin) and the
//! project's mock target, which records every request it receives.
//! One test binary, so everything links once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod amqps;
mod bench;
mod cli;
mod cluster;
mod coalesce;
mod console;
mod dead_letters;
mod delivery;
mod docs;
mod explain;
mod guarantees;
mod hostile;
mod options;
mod ownership;
mod pacing;
mod process;
mod scim;
mod secrets;
mod sync;
