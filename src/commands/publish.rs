//! `provisioner publish`: JSON lines to a queue, persistent, confirmed.

use std::path::Path;

use lapin::BasicProperties;

use super::{ExitResult, EXIT_BROKER};
use crate::amqp;
use crate::config::{self, AmqpConfig};

/// `--queue Q` publishes to a plain queue; `--provisioner NAME` publishes
/// where that provisioner consumes (through its partitions, if it has them).
pub async fn publish(config_path: &Path, target: PublishTarget<'_>, file: &str) -> ExitResult {
    let (amqp_config, topology) = match target {
        PublishTarget::Queue(queue) => {
            let Some(amqp_config) = broker_config(config_path) else {
                return Ok(super::EXIT_CONFIG);
            };
            (amqp_config, amqp::Topology::plain(queue))
        }
        PublishTarget::Provisioner(name) => {
            let Some(config) = super::load_config(config_path) else {
                return Ok(super::EXIT_CONFIG);
            };
            let found = match name {
                Some(name) => config.provisioners.iter().find(|p| p.name == name),
                None if config.provisioners.len() == 1 => config.provisioners.first(),
                None => None,
            };
            let Some(p) = found else {
                let names: Vec<&str> = config
                    .provisioners
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                match name {
                    Some(name) => eprintln!(
                        "error: no provisioner `{name}`; configured: {}",
                        names.join(", ")
                    ),
                    None => eprintln!(
                        "error: give --provisioner NAME (configured: {}) or --queue QUEUE",
                        names.join(", ")
                    ),
                }
                return Ok(super::EXIT_CONFIG);
            };
            let topology = amqp::Topology::of(p, &config.amqp);
            (config.amqp, topology)
        }
    };
    let queue = topology.queue.clone();
    let lines = super::read_lines(file)?;
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    match publish_lines(&amqp_config, &topology, &events).await {
        Ok(n) => {
            println!("published {n} events to `{queue}` (persistent, confirmed)");
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_BROKER)
        }
    }
}

/// The broker settings: from the worker file if it exists (its errors are
/// printed), else the defaults; `AMQP_URL` is honoured either way.
pub fn broker_config(config_path: &Path) -> Option<AmqpConfig> {
    let loaded = if config_path.exists() {
        config::load(config_path)
    } else {
        config::from_provisioner_files(&[])
    };
    match loaded {
        Ok(c) => Some(c.amqp),
        Err(errors) => {
            eprint!("{errors}");
            None
        }
    }
}

/// Where `publish` sends events.
pub enum PublishTarget<'a> {
    /// A plain queue.
    Queue(&'a str),
    /// Where a provisioner consumes; `None`: the only one configured.
    Provisioner(Option<&'a str>),
}

/// Publishes each line as one message; the topology is declared first, so
/// nothing published before the worker first starts is lost.
pub async fn publish_lines(
    config: &AmqpConfig,
    topology: &amqp::Topology,
    lines: &[&str],
) -> Result<usize, amqp::AmqpError> {
    let conn = amqp::connect(config, "provisioner:publish").await?;
    let channel = amqp::confirm_channel(&conn).await?;
    amqp::declare(&conn, topology).await?;
    let mut progress = super::progress::Progress::new("publishing", lines.len() as u64);
    for line in lines {
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        {
            if let Some(serde_json::Value::String(id)) = obj.get("id") {
                props = props.with_message_id(id.as_str().into());
            }
        }
        amqp::publish_event(&channel, topology, line.as_bytes(), props).await?;
        progress.inc();
    }
    progress.finish();
    let _ = conn.close(200, "done".into()).await;
    Ok(lines.len())
}
