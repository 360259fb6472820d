//! `provisioner publish`: JSON lines to a queue, persistent, confirmed.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
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
/// nothing published before the worker first starts is lost. Should the
/// broker node go away, or refuse a line (nack), it reconnects (to the next
/// node of `[amqp] url` first) with the worker's backoff and goes on from
/// the first line not confirmed: a line may be published twice, never lost. It gives up after
/// [`RECONNECT_ATTEMPTS`] failed reconnections in a row.
pub async fn publish_lines(
    config: &AmqpConfig,
    topology: &amqp::Topology,
    lines: &[&str],
) -> Result<usize, amqp::AmqpError> {
    let first_backoff = Duration::from_millis(200);
    let mut backoff = first_backoff;
    let mut failures = 0;
    let mut node = 0;
    let mut next = 0;
    let mut progress = super::progress::Progress::new("publishing", lines.len() as u64);
    loop {
        let before = next;
        match publish_session(config, topology, lines, &mut node, &mut next, &mut progress).await {
            Ok(()) => break,
            // A nack is the broker's word that it could not take the
            // message now: a quorum queue between leaders says so while
            // the cluster elects a new one after losing a node.
            Err(e) if !(e.is_connection_loss() || matches!(e, amqp::AmqpError::Nacked(_))) => {
                return Err(e)
            }
            Err(e) => {
                if next > before {
                    failures = 0;
                    backoff = first_backoff;
                }
                failures += 1;
                if failures > RECONNECT_ATTEMPTS {
                    return Err(e);
                }
                eprintln!(
                    "publishing stopped after {next} of {} events ({e}); reconnecting in {} ms",
                    lines.len(),
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.reconnect_max);
                node += 1;
            }
        }
    }
    progress.finish();
    Ok(lines.len())
}

/// Reconnections in a row `publish` tries before it gives up: with the
/// default `reconnect_max_s`, about a minute.
pub const RECONNECT_ATTEMPTS: u32 = 8;

/// Longest wait for one confirm: lapin may not fail a confirm pending on a
/// connection that died.
const CONFIRM_WAIT: Duration = Duration::from_secs(60);

/// One connection: publishes `lines[*next..]`, moving `next` past each line
/// the broker confirmed.
async fn publish_session(
    config: &AmqpConfig,
    topology: &amqp::Topology,
    lines: &[&str],
    node: &mut usize,
    next: &mut usize,
    progress: &mut super::progress::Progress,
) -> Result<(), amqp::AmqpError> {
    let connected = amqp::connect_from(config, "provisioner:publish", *node).await?;
    *node = connected.node;
    let conn = connected.connection;
    // lapin may leave a confirm pending on a connection that died: its
    // events say so at once.
    let mut events = conn.events_listener();
    let status = conn.status().clone();
    let gone = async move {
        // The status is looked at on a tick too: it turns to error before
        // the event is sent, and the event may never come.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = tick.tick() => {
                    if status.connected() {
                        continue;
                    }
                    return "the connection is no longer open".to_string();
                }
            };
            match event {
                Some(lapin::Event::Error(e)) if amqp::ends_connection(&e, &status) => {
                    return format!("connection error: {e}");
                }
                Some(_) => {}
                None => return "the connection's events ended".to_string(),
            }
        }
    };
    let published = async {
        let channel = amqp::confirm_channel(&conn).await?;
        amqp::declare(&conn, topology).await?;
        while let Some(line) = lines.get(*next) {
            let mut props = BasicProperties::default().with_content_type("application/json".into());
            if let Ok(serde_json::Value::Object(obj)) =
                serde_json::from_str::<serde_json::Value>(line)
            {
                if let Some(serde_json::Value::String(id)) = obj.get("id") {
                    props = props.with_message_id(id.as_str().into());
                }
            }
            let sent = amqp::publish_event(&channel, topology, line.as_bytes(), props);
            match tokio::time::timeout(CONFIRM_WAIT, sent).await {
                Ok(result) => result?,
                Err(_) => return Err(amqp::AmqpError::NoAnswer(CONFIRM_WAIT.as_secs())),
            }
            *next += 1;
            progress.inc();
        }
        Ok(())
    };
    let published = tokio::select! {
        published = published => published,
        reason = gone => Err(amqp::AmqpError::ConnectionLost(reason)),
    };
    // lapin may never answer the close of a connection that died: such a
    // connection is left to drop, and a close gets a few seconds.
    if conn.status().connected() {
        let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, "done".into())).await;
    }
    published
}

/// Longest wait for the broker to answer the close of a connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
