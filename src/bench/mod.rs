//! `provisioner bench`: how fast the worker is, against the local RabbitMQ
//! and an in-process mock target, next to the limits of the broker and the
//! target alone. docs/benchmarks.md says what each measurement is, how it is
//! taken, and what this machine gave.
//!
//! - [`mock`]: [`mock::MockTarget`], the users half of the example API with a
//!   delay before every answer and an optional rate limit (429).
//! - [`broker`]: fresh queues, publishing with confirms, the broker limit.
//! - [`process`]: the worker under measurement as a child process, its CPU
//!   time and peak memory from `/proc`, its settlements from its JSON log.
//! - [`scenarios`]: the measurements themselves.
//! - [`report`]: what a run found, as a table or JSON.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::amqp::AmqpError;
use crate::config::AmqpConfig;

pub mod broker;
pub mod mock;
pub mod process;
pub mod report;
pub mod scenarios;

pub use report::Report;

/// One of the measurements, as `--only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measurement {
    /// 1. A bare lapin consumer: what the broker delivers and takes acks for.
    Broker,
    /// 2. Bare HTTP requests: what the mock target answers.
    Target,
    /// 3. The worker end to end at latency 0.
    Worker,
    /// 4. Latency hiding at the configured latency (concurrency 8 and 64).
    Hiding,
    /// 5. The original's model: prefetch 1, concurrency 1.
    Original,
    /// 6. `account_sync_rate_limit_ms` as the target sees it.
    RateLimit,
    /// 7. An account `membership_sync` against a target that mostly agrees.
    Sync,
    /// 8. A backlog of updates, coalesced and not.
    Coalescing,
    /// 9. Adaptive pacing against a target that refuses (429) above its limit.
    Adaptive,
}

impl Measurement {
    /// Every measurement, in report order.
    pub const ALL: [Measurement; 9] = [
        Measurement::Broker,
        Measurement::Target,
        Measurement::Worker,
        Measurement::Hiding,
        Measurement::Original,
        Measurement::RateLimit,
        Measurement::Sync,
        Measurement::Coalescing,
        Measurement::Adaptive,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Measurement::Broker => "broker",
            Measurement::Target => "target",
            Measurement::Worker => "worker",
            Measurement::Hiding => "hiding",
            Measurement::Original => "original",
            Measurement::RateLimit => "rate-limit",
            Measurement::Sync => "sync",
            Measurement::Coalescing => "coalescing",
            Measurement::Adaptive => "adaptive",
        }
    }
}

impl FromStr for Measurement {
    type Err = String;

    fn from_str(s: &str) -> Result<Measurement, String> {
        Measurement::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Measurement::ALL.iter().map(|m| m.name()).collect();
                format!("unknown measurement `{s}`; one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to measure and how big.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events of the end-to-end runs (measurement 3) and of the broker and
    /// target limits; the upper bound of the other runs.
    pub events: usize,
    /// Subjects of each full-sync run (measurement 7).
    pub sync_subjects: Vec<usize>,
    /// The mock's latency for measurements 4 and 5.
    pub latency: Duration,
    /// `account_sync_rate_limit_ms` for measurement 6.
    pub rate_limit_ms: u64,
    /// About how long each latency-bound run (4, 5, 6) lasts: its event
    /// count is what the ideal rate gets through in this time.
    pub run_seconds: f64,
    /// The measurements to take.
    pub only: BTreeSet<Measurement>,
    /// The `provisioner` executable to run the worker with.
    pub worker_exe: PathBuf,
    /// A command (and its arguments) to run the worker under, such as a
    /// profiler; empty runs it directly.
    pub worker_wrapper: Vec<String>,
    /// The broker.
    pub amqp: AmqpConfig,
    /// Where the worker files and logs go (removed after a successful run).
    pub work_dir: PathBuf,
    /// Whether this is the small `--quick` run.
    pub quick: bool,
}

/// The worker's defaults the measurements compare against.
pub const DEFAULT_CONCURRENCY: u32 = 32;
/// The worker's default `[amqp] prefetch`.
pub const DEFAULT_PREFETCH: u16 = 64;

impl BenchOptions {
    /// The full run: a few minutes on two cores.
    pub fn full(amqp: AmqpConfig, worker_exe: PathBuf) -> BenchOptions {
        BenchOptions {
            events: 10_000,
            sync_subjects: vec![10_000, 100_000],
            latency: Duration::from_millis(20),
            rate_limit_ms: 10,
            run_seconds: 6.0,
            only: Measurement::ALL.into_iter().collect(),
            worker_exe,
            worker_wrapper: Vec::new(),
            amqp,
            work_dir: default_work_dir(),
            quick: false,
        }
    }

    /// A small run (seconds, not minutes) that still takes every measurement.
    pub fn quick(amqp: AmqpConfig, worker_exe: PathBuf) -> BenchOptions {
        BenchOptions {
            events: 200,
            sync_subjects: vec![1_000],
            run_seconds: 1.0,
            quick: true,
            ..BenchOptions::full(amqp, worker_exe)
        }
    }

    /// Whether `m` is to be measured.
    pub fn wants(&self, m: Measurement) -> bool {
        self.only.contains(&m)
    }
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("provisioner-bench-{}", std::process::id()))
}

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No broker answered.
    #[error("{0}\nThe benchmark needs RabbitMQ: start it (`rabbitmq-server -detached`; on Debian/Ubuntu `apt-get install rabbitmq-server`), or point AMQP_URL at a running broker.")]
    BrokerUnreachable(AmqpError),
    /// The broker refused or failed while measuring.
    #[error("broker: {0}")]
    Broker(String),
    /// The worker process failed, exited, or stopped making progress.
    #[error("worker: {0}")]
    Worker(String),
    /// The mock target or the bare HTTP client failed.
    #[error("target: {0}")]
    Target(String),
    /// Setting a run up failed.
    #[error("{0}")]
    Setup(String),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl BenchError {
    fn io(path: impl AsRef<Path>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Takes the measurements `options` asks for, one after the other (each
/// would disturb the others), printing progress on standard error.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    scenarios::run_all(options).await
}
