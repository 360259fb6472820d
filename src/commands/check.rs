//! `provisioner check`: validates everything offline and prints a summary.

use std::path::Path;

use super::{load_config, ExitResult, EXIT_CONFIG};
use crate::config::problems::spelling;
use crate::config::Config;

pub fn check(config_path: &Path) -> ExitResult {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    print!("{}", summary(&config));
    Ok(0)
}

/// The human summary of a valid configuration; never contains a secret.
pub fn summary(config: &Config) -> String {
    let mut s = String::new();
    let file = config
        .worker_file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "<defaults>".into());
    s.push_str(&format!("configuration OK: {file}\n"));
    s.push_str(&format!(
        "broker: {} (prefetch {})\n",
        config.amqp.url.shown(),
        config.amqp.prefetch
    ));
    for p in &config.provisioners {
        s.push_str(&format!(
            "\nprovisioner `{}` ({})\n",
            p.name,
            p.file.display()
        ));
        s.push_str(&format!("  kind: {}\n", p.kind.name()));
        s.push_str(&format!(
            "  queue: {} (dead letters: {})\n",
            p.queue,
            p.dead_letter_queue()
        ));
        let prefixes: Vec<String> = p
            .url_prefixes
            .iter()
            .map(|u| crate::http::redact_url(u))
            .collect();
        s.push_str(&format!("  url_prefix: {}\n", prefixes.join(", ")));
        s.push_str(&format!("  auth: {}\n", p.auth.scheme()));
        if let Some(g) = &p.provision_group {
            s.push_str(&format!(
                "  provision_group: {g} ({})\n",
                spelling(&p.provision_strategy)
            ));
        }
        if !p.target_group_map.is_empty() {
            s.push_str(&format!(
                "  target groups ({}):\n",
                spelling(&p.group_sync_strategy)
            ));
            for (local, remote) in &p.target_group_map {
                s.push_str(&format!("    {local} -> {remote}\n"));
            }
        }
        if !p.unmanaged_logins.is_empty() {
            s.push_str(&format!(
                "  unmanaged_logins: {}\n",
                p.unmanaged_logins.join(" ")
            ));
        }
        s.push_str(&format!(
            "  caches: accounts {} (trusted {} s after prefill), groups {}\n",
            p.account_cache_size,
            p.account_cache_validity_period.as_secs(),
            p.target_group_cache_size
        ));
        s.push_str(&format!(
            "  pacing: accounts {} ms, members {} ms; concurrency {}; timeout {} s\n",
            p.account_sync_rate_limit.as_millis(),
            p.member_sync_rate_limit.as_millis(),
            p.concurrency,
            p.timeout.as_secs()
        ));
        s.push_str(&format!(
            "  retries: {} attempts within {} s\n",
            p.retry.max_attempts,
            p.retry.max_elapsed.as_secs()
        ));
    }
    s
}
