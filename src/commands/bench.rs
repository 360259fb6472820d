//! `provisioner bench`: runs the measurements of `crate::bench` and prints
//! them as a table, or as JSON with `--json` (progress goes to standard
//! error either way, so standard output stays machine-readable).

use std::path::Path;
use std::time::Duration;

use super::{ExitResult, EXIT_BROKER, EXIT_CONFIG};
use crate::bench::{self, BenchError, BenchOptions, Measurement};

/// The command line of `provisioner bench`; `None` keeps the default (of
/// the full run, or of `--quick`).
#[derive(Debug, Clone, Default)]
pub struct BenchArgs {
    /// Events of the end-to-end runs.
    pub events: Option<usize>,
    /// Subjects of each full sync.
    pub sync_subjects: Option<Vec<usize>>,
    /// The mock's latency for latency hiding and the original's model.
    pub latency_ms: Option<u64>,
    /// `account_sync_rate_limit_ms` of the rate-limit run.
    pub rate_limit_ms: Option<u64>,
    /// About how long each latency-bound run lasts.
    pub run_seconds: Option<f64>,
    /// The small run.
    pub quick: bool,
    /// Only these measurements (names as in [`Measurement::name`]).
    pub only: Vec<String>,
    /// JSON instead of the table.
    pub json: bool,
    /// A command to run each worker under (a profiler), split on spaces.
    pub worker_wrapper: Option<String>,
}

/// `provisioner bench`
pub async fn bench(config_path: &Path, args: BenchArgs) -> ExitResult {
    let Some(amqp) = super::publish::broker_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    let exe = std::env::current_exe()?;
    let mut options = if args.quick {
        BenchOptions::quick(amqp, exe)
    } else {
        BenchOptions::full(amqp, exe)
    };
    if let Err(problem) = apply(&mut options, &args) {
        eprintln!("error: {problem}");
        return Ok(EXIT_CONFIG);
    }
    if !options.quick && cfg!(debug_assertions) {
        eprintln!("bench: warning: a debug build; measure with `cargo run --release -- bench`");
    }
    match bench::run(&options).await {
        Ok(report) => {
            if args.json {
                let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
                println!("{text}");
            } else {
                print!("{}", report.table());
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(match e {
                BenchError::BrokerUnreachable(_) => EXIT_BROKER,
                _ => 1,
            })
        }
    }
}

fn apply(options: &mut BenchOptions, args: &BenchArgs) -> Result<(), String> {
    if let Some(n) = args.events {
        if n < 10 {
            return Err("--events must be at least 10".into());
        }
        options.events = n;
    }
    if let Some(sizes) = &args.sync_subjects {
        if sizes.iter().any(|&n| n < 100) {
            return Err(
                "--sync-subjects: each size must be at least 100 (1 % of it is changed)".into(),
            );
        }
        options.sync_subjects = sizes.clone();
    }
    if let Some(ms) = args.latency_ms {
        if ms == 0 {
            return Err("--latency-ms must be at least 1: the ideal rate divides by it".into());
        }
        options.latency = Duration::from_millis(ms);
    }
    if let Some(ms) = args.rate_limit_ms {
        if ms == 0 {
            return Err("--rate-limit-ms must be at least 1".into());
        }
        options.rate_limit_ms = ms;
    }
    if let Some(s) = args.run_seconds {
        if !(s > 0.0 && s.is_finite()) {
            return Err("--run-seconds must be a positive number".into());
        }
        options.run_seconds = s;
    }
    if let Some(wrapper) = &args.worker_wrapper {
        options.worker_wrapper = wrapper.split_whitespace().map(String::from).collect();
        if options.worker_wrapper.is_empty() {
            return Err("--worker-wrapper must name a command".into());
        }
    }
    if !args.only.is_empty() {
        options.only = args
            .only
            .iter()
            .map(|name| name.parse::<Measurement>())
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}
