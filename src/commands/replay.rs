//! `provisioner replay --provisioner NAME [--dry-run] FILE`: applies events
//! from a JSON-lines file without a broker. With `--dry-run`, reads go to the
//! target but writes are only printed.

use std::path::Path;
use std::sync::Arc;

use super::progress::Progress;
use super::{load_config, ExitResult, EXIT_CONFIG};
use crate::assembly::{self, Writes};
use crate::config::RetryPolicy;
use crate::engine::ownership::Ownership;
use crate::engine::retry::{with_retries, Attempts};
use crate::engine::Provisioner;
use crate::event::{Event, InvalidEvent};
use crate::journal::OwnershipStore;
use crate::target::dry_run::WriteLog;

pub async fn replay(config_path: &Path, name: &str, dry_run: bool, file: &str) -> ExitResult {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    let Some(p) = config.provisioners.iter().find(|p| p.name == name).cloned() else {
        eprintln!("error: no provisioner `{name}` in the configuration");
        return Ok(EXIT_CONFIG);
    };
    let lines = super::read_lines(file)?;
    let log = WriteLog::default();
    let writes = if dry_run {
        Writes::Record(log.clone())
    } else {
        Writes::Apply
    };
    // What the worker owns is read from (and, applying, recorded in) the
    // journal's store, as the worker does; a dry run writes nothing there.
    let ownership = match &config.journal {
        Some(j) => match OwnershipStore::open(&assembly::journal_settings(j)).await {
            Ok(store) => Some(store),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        },
        None => None,
    };
    let shared = ownership.clone().map(|s| Arc::new(s) as Arc<dyn Ownership>);
    let engine = match assembly::provisioner_owning(&p, writes, shared) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_CONFIG);
        }
    };
    if dry_run {
        println!("dry run against `{name}`: reads go to the target, writes are only shown");
    }
    let mut failed = 0;
    let mut progress = Progress::new("replaying", lines.len() as u64);
    for (n, line) in lines.iter().enumerate() {
        let result = apply_line(engine.as_ref(), &p.retry, line).await;
        progress.inc();
        let (event, attempts) = match result {
            LineResult::Blank => continue,
            LineResult::Invalid(invalid) => {
                failed += 1;
                progress.line(&format!("line {}: {invalid}", n + 1));
                continue;
            }
            LineResult::Done(event, attempts) => (event, attempts),
        };
        let label = format!(
            "line {}: {} {} {}",
            n + 1,
            event.action,
            event.group,
            event.subject_label()
        );
        match attempts.result {
            Ok(o) => progress.line(&format!(
                "{label}: {} — {} [{} API calls]",
                o.status.as_str(),
                o.detail,
                attempts.api_calls
            )),
            Err(e) => {
                failed += 1;
                progress.line(&format!(
                    "{label}: failed after {} attempt(s): {e}",
                    attempts.attempts
                ));
            }
        }
        for planned in log.take() {
            progress.line(&format!("    {planned}"));
        }
    }
    progress.finish();
    if let Some(store) = ownership {
        store.close().await;
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// What became of one line of events.
pub(super) enum LineResult {
    Blank,
    Invalid(InvalidEvent),
    Done(Event, Attempts),
}

/// Parses one line and applies it, with the provisioner's retries: how
/// `replay` and the demo (without a broker) apply events from lines.
pub(super) async fn apply_line(
    engine: &dyn Provisioner,
    retry: &RetryPolicy,
    line: &str,
) -> LineResult {
    let line = line.trim();
    if line.is_empty() {
        return LineResult::Blank;
    }
    match crate::event::parse(line.as_bytes(), None) {
        Err(invalid) => LineResult::Invalid(invalid),
        Ok(event) => {
            let attempts = with_retries(
                retry,
                tokio::time::Instant::now(),
                || engine.apply(&event),
                |_, _, _| {},
            )
            .await;
            LineResult::Done(event, attempts)
        }
    }
}
