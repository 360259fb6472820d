//! `provisioner replay --provisioner NAME [--dry-run] FILE`: applies events
//! from a JSON-lines file without a broker. With `--dry-run`, reads go to the
//! target but writes are only printed.

use std::io::BufRead;
use std::path::Path;

use super::{anyhow_free, load_config, EXIT_CONFIG};
use crate::assembly::{self, Writes};
use crate::engine::retry::with_retries;
use crate::target::dry_run::WriteLog;

pub async fn replay(
    config_path: &Path,
    name: &str,
    dry_run: bool,
    file: &str,
) -> anyhow_free::Result {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    let Some(p) = config.provisioners.iter().find(|p| p.name == name).cloned() else {
        eprintln!("error: no provisioner `{name}` in the configuration");
        return Ok(EXIT_CONFIG);
    };
    let lines: Vec<String> = if file == "-" {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        std::fs::read_to_string(file)?
            .lines()
            .map(str::to_string)
            .collect()
    };
    let log = WriteLog::default();
    let writes = if dry_run {
        Writes::Record(log.clone())
    } else {
        Writes::Apply
    };
    let engine = match assembly::provisioner(&p, writes) {
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
    for (n, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event = match crate::event::parse(line.as_bytes(), None) {
            Ok(e) => e,
            Err(invalid) => {
                failed += 1;
                println!("line {}: {invalid}", n + 1);
                continue;
            }
        };
        let attempts = with_retries(
            &p.retry,
            tokio::time::Instant::now(),
            || engine.apply(&event),
            |_, _, _| {},
        )
        .await;
        let label = format!(
            "line {}: {} {} {}",
            n + 1,
            event.action,
            event.group,
            event.subject_label()
        );
        match attempts.result {
            Ok(o) => println!(
                "{label}: {} — {} [{} API calls]",
                o.status.as_str(),
                o.detail,
                attempts.api_calls
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "{label}: failed after {} attempt(s): {e}",
                    attempts.attempts
                );
            }
        }
        for write in log.take() {
            println!("    would {write}");
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
