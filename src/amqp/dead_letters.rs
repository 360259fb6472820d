//! Dead letters on the broker: listing them (they stay parked) and moving
//! them back to where their provisioner consumes, never dropping one. Used
//! by `provisioner dead-letters` and the admin API.

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::Serialize;

use super::{header_str, headers, AmqpError, Topology};
use crate::config::AmqpConfig;

/// One parked message, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedEvent {
    pub event_id: String,
    pub reason: String,
    pub attempts: String,
    pub at: String,
    pub body: String,
}

fn describe(props: &BasicProperties, body: &[u8]) -> ParkedEvent {
    let get = |h: &str| header_str(props, h).unwrap_or_else(|| "-".into());
    let text = String::from_utf8_lossy(body);
    ParkedEvent {
        event_id: get(headers::EVENT_ID),
        reason: get(headers::ERROR),
        attempts: get(headers::ATTEMPTS),
        at: get(headers::DEAD_LETTERED_AT),
        body: text.chars().take(300).collect(),
    }
}

/// Reads up to `limit` parked messages without removing them: they are held
/// unacknowledged and return to the queue, in order, when the channel closes.
pub async fn list_parked(
    amqp_config: &AmqpConfig,
    queue: &str,
    limit: usize,
) -> Result<Vec<ParkedEvent>, AmqpError> {
    let conn = super::connect(amqp_config, "provisioner:dead-letters").await?;
    let channel = conn.create_channel().await?;
    let mut out = Vec::new();
    while out.len() < limit {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(msg) => out.push(describe(&msg.delivery.properties, &msg.delivery.data)),
            None => break,
        }
    }
    let _ = channel.close(200, "listed".into()).await;
    let _ = conn.close(200, "listed".into()).await;
    Ok(out)
}

/// Which parked messages `requeue` moves, and how.
#[derive(Debug, Clone, Default)]
pub struct RequeueOptions {
    /// Move at most this many.
    pub limit: Option<usize>,
    /// Move only the letters with this event id (`x-event-id`).
    pub event_id: Option<String>,
    /// Mark the moved messages so that the worker applies them past the
    /// mass-deprovision guard, once.
    pub allow_removals: bool,
}

/// Moves parked messages back to where the provisioner consumes them. The
/// topology is declared first, so the queue (or partition exchange) exists;
/// each message is published mandatory with a confirm, and removed from the
/// dead-letter queue only once the broker has routed it: a letter is never
/// dropped. Letters not chosen stay unacknowledged until the channel
/// closes, which puts them back in their order.
pub async fn requeue_parked(
    amqp_config: &AmqpConfig,
    topology: &Topology,
    options: &RequeueOptions,
) -> Result<usize, AmqpError> {
    let dead_letter_queue = topology.dead_letter.as_str();
    let conn = super::connect(amqp_config, "provisioner:dead-letters").await?;
    super::declare(&conn, topology).await?;
    let channel = super::confirm_channel(&conn).await?;
    let parked = channel
        .queue_declare(
            dead_letter_queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count() as usize;
    let mut moved = 0;
    // Each parked message is looked at once: those left behind are held
    // until the end, so the count bounds the loop.
    for _ in 0..parked {
        if options.limit.is_some_and(|l| moved >= l) {
            break;
        }
        let Some(msg) = channel
            .basic_get(dead_letter_queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = msg.delivery;
        if let Some(wanted) = &options.event_id {
            if header_str(&delivery.properties, headers::EVENT_ID).as_deref()
                != Some(wanted.as_str())
            {
                continue;
            }
        }
        // The original body and id go back; the parking headers stay behind.
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = delivery.properties.message_id() {
            props = props.with_message_id(id.clone());
        }
        if options.allow_removals {
            let mut table = FieldTable::default();
            table.insert(headers::ALLOW_REMOVALS.into(), AMQPValue::Boolean(true));
            props = props.with_headers(table);
        }
        super::publish_event(&channel, topology, &delivery.data, props).await?;
        if !delivery.acker.ack(BasicAckOptions::default()).await? {
            return Err(AmqpError::ChannelGone);
        }
        moved += 1;
    }
    let _ = channel.close(200, "requeued".into()).await;
    let _ = conn.close(200, "requeued".into()).await;
    Ok(moved)
}
