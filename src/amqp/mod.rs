//! The broker side, on lapin: connecting (with a timeout and the URL's
//! password kept out of errors), declaring the topology, publishing with
//! confirms, and parking messages in the dead-letter queue. Only the consumer
//! loop (src/worker/consumer.rs) acknowledges deliveries.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::config::{AmqpConfig, ProvisionerConfig, QueueType};

pub mod dead_letters;

/// Why talking to the broker failed. Messages never contain the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("no node of the broker cluster answered: {0}")]
    NoNode(String),
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from the broker at {url} within {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused (nack) a message published to `{0}`")]
    Nacked(String),
    #[error("no queue is bound where a message was published (`{0}`): the broker returned it")]
    Unroutable(String),
    #[error(
        "the channel closed before the delivery could be acknowledged; the broker requeues it"
    )]
    ChannelGone,
    #[error("the broker did not answer within {0} s; taking the connection for lost")]
    NoAnswer(u64),
    #[error("the connection to the broker is gone ({0})")]
    ConnectionLost(String),
    #[error("`partitions` needs the consistent-hash exchange plugin: run `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` on the broker")]
    Plugin,
}

impl AmqpError {
    /// Whether the broker (or the way to it) went away, so that trying
    /// again, on another node perhaps, may succeed; a refusal (nack,
    /// unroutable, missing plugin) would only be refused again.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            AmqpError::NoNode(_)
            | AmqpError::Connect { .. }
            | AmqpError::ConnectTimeout { .. }
            | AmqpError::ChannelGone
            | AmqpError::NoAnswer(_)
            | AmqpError::ConnectionLost(_) => true,
            // A channel-level refusal (not found, precondition failed,
            // access refused) would come again; anything else ends the connection.
            AmqpError::Broker(e) => !matches!(
                e.kind(),
                lapin::ErrorKind::ProtocolError(p)
                    if matches!(p.kind(), lapin::protocol::AMQPErrorKind::Soft(_))
            ),
            AmqpError::Nacked(_) | AmqpError::Unroutable(_) | AmqpError::Plugin => false,
        }
    }
}

/// Whether an error reported on a connection's events means the
/// connection is gone. lapin may report an I/O error (a node killed) while
/// the connection's status still says connected, so the error's kind
/// counts too; a channel-level refusal (a declaration refused, say) leaves
/// the connection up.
pub fn ends_connection(error: &lapin::Error, status: &lapin::ConnectionStatus) -> bool {
    !status.connected()
        || match error.kind() {
            lapin::ErrorKind::IOError(_)
            | lapin::ErrorKind::MissingHeartbeatError
            | lapin::ErrorKind::InvalidConnectionState(_) => true,
            lapin::ErrorKind::ProtocolError(p) => {
                matches!(p.kind(), lapin::protocol::AMQPErrorKind::Hard(_))
            }
            _ => false,
        }
}

/// How long a connection attempt may take; lapin can hang on some failures.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::redact::redact_url;

/// Opens a connection to the first node of `[amqp] url` that answers;
/// `name` shows in the broker's connection list.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, AmqpError> {
    connect_from(config, name, 0).await.map(|c| c.connection)
}

/// A connection, and which node of `[amqp] url` it reached.
pub struct Connected {
    pub connection: Connection,
    /// The node's index in `[amqp] url`.
    pub node: usize,
}

/// Tries the nodes of `[amqp] url` in turn, starting with node `first`
/// (wrapping around), each within [`CONNECT_TIMEOUT`]; the first that
/// answers wins. After losing a node, a caller starts with the next one, so
/// a node that is gone is tried last rather than waited on first. With one
/// node its own error comes back; with several, every node's.
pub async fn connect_from(
    config: &AmqpConfig,
    name: &str,
    first: usize,
) -> Result<Connected, AmqpError> {
    let nodes = config.url.nodes().len();
    if nodes == 0 {
        return Err(AmqpError::Connect {
            url: "(none)".into(),
            reason: "no broker URL is configured".into(),
        });
    }
    let mut failures = Vec::new();
    for node in (0..nodes).map(|i| (first + i) % nodes) {
        match connect_node(config, node, name).await {
            Ok(connection) => return Ok(Connected { connection, node }),
            Err(e) if nodes == 1 => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "broker node unavailable; trying the next");
                failures.push(e.to_string());
            }
        }
    }
    Err(AmqpError::NoNode(failures.join("; ")))
}

async fn connect_node(
    config: &AmqpConfig,
    node: usize,
    name: &str,
) -> Result<Connection, AmqpError> {
    let Some(url) = config.url.nodes().get(node).map(|u| u.expose()) else {
        return Err(AmqpError::Connect {
            url: "(none)".into(),
            reason: format!("no broker node {node}"),
        });
    };
    let shown = config.url.shown_node(node);
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

/// The broker objects of one provisioner.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The queue producers publish to; with partitions, the name of the
    /// consistent-hash exchange instead.
    pub queue: String,
    pub partitions: u16,
    pub dead_letter: String,
    pub queue_type: QueueType,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn of(p: &ProvisionerConfig, amqp: &AmqpConfig) -> Topology {
        Topology {
            queue: p.queue.clone(),
            partitions: p.partitions,
            dead_letter: p.dead_letter_queue(),
            queue_type: amqp.queue_type,
            delivery_limit: amqp.delivery_limit,
        }
    }

    /// One classic queue and its dead-letter queue.
    pub fn plain(queue: &str) -> Topology {
        Topology {
            queue: queue.to_string(),
            partitions: 0,
            dead_letter: format!("{queue}.dead"),
            queue_type: QueueType::Classic,
            delivery_limit: 20,
        }
    }

    /// The queues consumed.
    pub fn consumed(&self) -> Vec<String> {
        if self.partitions == 0 {
            vec![self.queue.clone()]
        } else {
            (0..self.partitions)
                .map(|i| format!("{}.{i}", self.queue))
                .collect()
        }
    }

    fn queue_args(&self, single_active: bool) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            // Crash loops end in the dead-letter queue instead of spinning forever.
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(self.delivery_limit.min(i32::MAX as u32) as i32),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.dead_letter.as_str().into()),
            );
            // The broker's own dead-lettering (after `delivery_limit`) is
            // at-most-once by default: a message could vanish on the way to
            // the dead-letter queue. At-least-once needs reject-publish.
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
        if single_active {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }
}

/// Declares the topology (idempotent): the dead-letter queue, then either the
/// queue or the consistent-hash exchange with its partition queues. A queue
/// that already exists with other arguments (say a classic queue while
/// `queue_type = "quorum"`) is used as it is, with a warning: the broker
/// refuses to change a queue's type, and refusing to consume would stall
/// the provisioner. Declarations use their own channels, since a refused one
/// closes its channel.
pub async fn declare(conn: &Connection, t: &Topology) -> Result<(), AmqpError> {
    let mut dead_args = FieldTable::default();
    if t.queue_type == QueueType::Quorum {
        dead_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    declare_queue(conn, &t.dead_letter, dead_args).await?;
    if t.partitions == 0 {
        return declare_queue(conn, &t.queue, t.queue_args(false)).await;
    }
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            t.queue.as_str().into(),
            lapin::ExchangeKind::Custom(HASH_EXCHANGE.into()),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            if e.to_string().contains("exchange type") {
                AmqpError::Plugin
            } else {
                AmqpError::Broker(e)
            }
        })?;
    for q in t.consumed() {
        declare_queue(conn, &q, t.queue_args(true)).await?;
        // The binding key of a consistent-hash exchange is the partition's weight.
        channel
            .queue_bind(
                q.as_str().into(),
                t.queue.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

async fn declare_queue(conn: &Connection, queue: &str, args: FieldTable) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let channel = conn.create_channel().await?;
    match channel.queue_declare(queue.into(), durable, args).await {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let channel = conn.create_channel().await?;
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            let _ = channel.close(200, "declared".into()).await;
            tracing::warn!(
                %queue,
                "queue exists with other arguments than configured (e.g. classic vs quorum); using it as it is. To change it, move its messages and delete it"
            );
            Ok(())
        }
        Err(e) => Err(AmqpError::Broker(e)),
    }
}

const HASH_EXCHANGE: &str = "x-consistent-hash";

/// Declares a plain classic queue and its dead-letter queue on a channel
/// (tests, tools).
pub async fn declare_queues(
    channel: &Channel,
    queue: &str,
    dead_letter: &str,
) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for q in [dead_letter, queue] {
        channel
            .queue_declare(q.into(), durable, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// The partition key of an event body: its subject, or for a membership_sync
/// its group (lowercased, as the worker compares them). Bodies that are not
/// events hash as empty.
pub fn partition_key(body: &[u8]) -> String {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return String::new();
    };
    let field = match obj.get("action").and_then(|a| a.as_str()) {
        Some("membership_sync") => "group",
        _ => "subject",
    };
    obj.get(field)
        .and_then(|v| v.as_str())
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

/// Publishes an event where the provisioner will consume it: to its queue,
/// or through its consistent-hash exchange keyed by [`partition_key`].
pub async fn publish_event(
    channel: &Channel,
    t: &Topology,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    if t.partitions == 0 {
        return publish_confirmed(channel, &t.queue, body, properties).await;
    }
    publish_to(channel, &t.queue, &partition_key(body), body, properties).await
}

/// A channel in confirm mode, for publishing.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
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
    publish_to(channel, "", queue, body, properties).await
}

async fn publish_to(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let queue = if exchange.is_empty() {
        routing_key
    } else {
        exchange
    };
    // Mandatory: a message no queue takes comes back instead of being
    // confirmed and dropped, so a caller never settles on a lost message.
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties.with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
            Err(AmqpError::Unroutable(queue.to_string()))
        }
        Confirmation::Nack(None) => Err(AmqpError::Nacked(queue.to_string())),
        // `NotRequested` would mean the channel is not in confirm mode; callers use confirm_channel.
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
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
    /// Set when the original message's own headers were left out of the dead
    /// letter (too large to fit the broker's frame next to the reason).
    pub const ORIGINAL_HEADERS_DROPPED: &str = "x-original-headers-dropped";
    /// On a re-queued message: the operator overrides the mass-deprovision
    /// guard for it (`dead-letters requeue --allow-removals`).
    pub const ALLOW_REMOVALS: &str = "x-allow-removals";
}

/// How much of a message goes into its dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkForm {
    /// The body, the original headers when they fit, and the reason.
    Full,
    /// The body and bounded parking headers only, for a message the broker
    /// refused in full form once: the dead letter must get through.
    Reduced,
}

/// Room left for the original message's headers in a dead letter: the
/// broker's frame (128 KiB by default) must hold them plus the parking
/// headers (a few KiB, all bounded) and the other properties.
const ORIGINAL_HEADERS_BUDGET: usize = 96 * 1024;

/// A generous estimate of a header table's encoded size.
fn encoded_size(table: &FieldTable) -> usize {
    table
        .inner()
        .iter()
        .map(|(k, v)| k.as_str().len() + 1 + value_size(v))
        .sum()
}

fn value_size(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::LongString(s) => 5 + s.as_bytes().len(),
        AMQPValue::ShortString(s) => 2 + s.as_str().len(),
        AMQPValue::FieldTable(t) => 5 + encoded_size(t),
        AMQPValue::FieldArray(a) => 5 + a.as_slice().iter().map(value_size).sum::<usize>(),
        AMQPValue::ByteArray(b) => 5 + b.as_slice().len(),
        _ => 9,
    }
}

/// Publishes the original body, unchanged, to the dead-letter queue with the
/// reason in headers, and waits for the confirm; a dead letter that no queue
/// takes is an error ([`AmqpError::Unroutable`]). Only after this returns Ok
/// may the original delivery be acknowledged. Every header written is
/// bounded, whatever the event carried.
pub async fn park(
    channel: &Channel,
    dead_letter_queue: &str,
    body: &[u8],
    original: &BasicProperties,
    letter: &DeadLetter,
    form: ParkForm,
) -> Result<(), AmqpError> {
    // An operator's override applies to one delivery, not to a later requeue.
    let original_headers: FieldTable = original
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| k.as_str() != headers::ALLOW_REMOVALS)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into()
        })
        .unwrap_or_default();
    let original_size = encoded_size(&original_headers);
    let (mut table, dropped) = match form {
        ParkForm::Full if original_size <= ORIGINAL_HEADERS_BUDGET => (original_headers, None),
        ParkForm::Full => (
            FieldTable::default(),
            Some(format!(
                "{original_size} bytes of headers, too large to keep"
            )),
        ),
        ParkForm::Reduced => (
            FieldTable::default(),
            Some("left out: the broker refused this dead letter in full form".to_string()),
        ),
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let reason_limit = match form {
        ParkForm::Full => crate::bounded::MAX_DETAIL_BYTES,
        ParkForm::Reduced => 1024,
    };
    let mut put = |k: &str, v: &str| {
        table.insert(
            k.into(),
            AMQPValue::LongString(LongString::from(v.to_string())),
        );
    };
    put(
        headers::PROVISIONER,
        &crate::bounded::label(&letter.provisioner),
    );
    put(
        headers::ERROR,
        &crate::bounded::clip(&letter.reason, reason_limit),
    );
    put(headers::DEAD_LETTERED_AT, &now);
    put(
        headers::ORIGINAL_QUEUE,
        &crate::bounded::label(&letter.queue),
    );
    put(headers::EVENT_ID, &crate::bounded::label(&letter.event_id));
    if let Some(why) = &dropped {
        put(headers::ORIGINAL_HEADERS_DROPPED, why);
    }
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

/// Whether a message carries a header that is true (a boolean, or the
/// string "true").
pub fn header_true(props: &BasicProperties, name: &str) -> bool {
    match props.headers().as_ref().and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::Boolean(b)) => *b,
        Some(AMQPValue::LongString(s)) => s.as_bytes().eq_ignore_ascii_case(b"true"),
        Some(AMQPValue::ShortString(s)) => s.as_str().eq_ignore_ascii_case("true"),
        _ => false,
    }
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
    }
}
