//! `provisioner dead-letters list|requeue --provisioner NAME`.

use std::path::Path;

use super::{load_config, ExitResult, EXIT_BROKER, EXIT_CONFIG};
use crate::amqp;
use crate::amqp::dead_letters::{list_parked, requeue_parked, RequeueOptions};
use crate::config::{AmqpConfig, ProvisionerConfig};

fn find(config_path: &Path, name: &str) -> Option<(AmqpConfig, ProvisionerConfig)> {
    let config = load_config(config_path)?;
    match config.provisioners.iter().find(|p| p.name == name) {
        Some(p) => Some((config.amqp.clone(), p.clone())),
        None => {
            let names: Vec<_> = config
                .provisioners
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            eprintln!(
                "error: no provisioner `{name}`; configured: {}",
                names.join(", ")
            );
            None
        }
    }
}

pub async fn dead_letters_list(config_path: &Path, name: &str, limit: usize) -> ExitResult {
    let Some((amqp_config, p)) = find(config_path, name) else {
        return Ok(EXIT_CONFIG);
    };
    match list_parked(&amqp_config, &p.dead_letter_queue(), limit).await {
        Ok(items) => {
            println!(
                "{} parked event(s) in `{}`{}",
                items.len(),
                p.dead_letter_queue(),
                if items.len() == limit {
                    " (limit reached)"
                } else {
                    ""
                }
            );
            for e in items {
                println!(
                    "- id {} at {} after {} attempt(s)\n  reason: {}\n  body: {}",
                    e.event_id, e.at, e.attempts, e.reason, e.body
                );
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_BROKER)
        }
    }
}

pub async fn dead_letters_requeue(
    config_path: &Path,
    name: &str,
    options: &RequeueOptions,
) -> ExitResult {
    let Some((amqp_config, p)) = find(config_path, name) else {
        return Ok(EXIT_CONFIG);
    };
    let topology = amqp::Topology::of(&p, &amqp_config);
    match requeue_parked(&amqp_config, &topology, options).await {
        Ok(n) => {
            println!(
                "re-queued {n} event(s) from `{}` to `{}`{}",
                p.dead_letter_queue(),
                p.queue,
                if options.allow_removals {
                    ", marked to pass the mass-deprovision guard once"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_BROKER)
        }
    }
}
