//! The broker side, on lapin: connecting (with a timeout and the URL's
//! password kept out of errors), declaring the topology, publishing with
//! confirms, and parking messages in the dead-letter queue. Only the consumer
//! loop (src/worker/consumer.rs) acknowledges deliveries.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::config::AmqpConfig;

/// Why talking to the broker failed. Messages never contain the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from the broker at {url} within {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused (nack) a message published to `{0}`")]
    Nacked(String),
    #[error("the channel closed before the delivery could be acknowledged; the broker requeues it")]
    ChannelGone,
}

/// How long a connection attempt may take; lapin can hang on some failures.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Opens a connection; `name` shows in the broker's connection list.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, AmqpError> {
    let url = config.url.expose();
    let shown = redact_url(url);
    let props =
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_string()));
    let attempt = async {
        match &config.tls {
            Some(tls) => {
                let tls_config = tls_config(tls).map_err(|reason| AmqpError::Connect {
                    url: shown.clone(),
                    reason,
                })?;
                let runtime = lapin::runtime::default_runtime().map_err(AmqpError::Broker)?;
                Connection::connect_with_config(url, props, tls_config, runtime)
                    .await
                    .map_err(|e| AmqpError::Connect {
                        url: shown.clone(),
                        reason: e.to_string(),
                    })
            }
            None => Connection::connect(url, props)
                .await
                .map_err(|e| AmqpError::Connect {
                    url: shown.clone(),
                    reason: e.to_string(),
                }),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(AmqpError::ConnectTimeout {
            url: shown,
            secs: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

fn tls_config(tls: &crate::config::TlsConfig) -> Result<lapin::tcp::OwnedTLSConfig, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
    };
    let cert_chain = match &tls.ca_file {
        Some(p) => Some(String::from_utf8_lossy(&read(p)?).to_string()),
        None => None,
    };
    let identity = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: read(c)?,
            key: read(k)?,
        }),
        _ => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Declares a provisioner's durable queue and its dead-letter queue.
pub async fn declare_queues(channel: &Channel, queue: &str, dead_letter: &str) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_declare(dead_letter.into(), durable, FieldTable::default())
        .await?;
    Ok(())
}

/// A channel in confirm mode, for publishing.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publishes one persistent message to a queue (default exchange) and waits
/// for the broker's confirm.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties.with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Nack(_) => Err(AmqpError::Nacked(queue.to_string())),
        // `NotRequested` would mean the channel is not in confirm mode; callers use confirm_channel.
        _ => Ok(()),
    }
}

/// Why a message was parked, carried in its headers.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub provisioner: String,
    pub queue: String,
    pub event_id: String,
    pub reason: String,
    pub attempts: u32,
}

/// Header names of dead-lettered messages.
pub mod headers {
    pub const PROVISIONER: &str = "x-provisioner";
    pub const ERROR: &str = "x-error";
    pub const ATTEMPTS: &str = "x-attempts";
    pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
    pub const ORIGINAL_QUEUE: &str = "x-original-queue";
    pub const EVENT_ID: &str = "x-event-id";
}

/// Publishes the original body, unchanged, to the dead-letter queue with the
/// reason in headers, and waits for the confirm. Only after this returns Ok
/// may the original delivery be acknowledged.
pub async fn park(
    channel: &Channel,
    dead_letter_queue: &str,
    body: &[u8],
    original: &BasicProperties,
    letter: &DeadLetter,
) -> Result<(), AmqpError> {
    let mut table = original.headers().clone().unwrap_or_default();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut put = |k: &str, v: String| {
        table.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    };
    put(headers::PROVISIONER, letter.provisioner.clone());
    put(headers::ERROR, letter.reason.chars().take(4000).collect());
    put(headers::DEAD_LETTERED_AT, now);
    put(headers::ORIGINAL_QUEUE, letter.queue.clone());
    put(headers::EVENT_ID, letter.event_id.clone());
    table.insert(
        headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(letter.attempts)),
    );
    let mut props = BasicProperties::default().with_headers(table);
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(ct) = original.content_type() {
        props = props.with_content_type(ct.clone());
    }
    publish_confirmed(channel, dead_letter_queue, body, props).await
}

/// Reads a string header of a message.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        let shown = redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***"));
        assert_eq!(redact_url("not a url"), "<unparsable URL>");
    }
}
