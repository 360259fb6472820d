//! What the admin API asks the broker: how many messages wait in a
//! provisioner's queues and dead-letter queue. One connection, opened on
//! first use and opened again after a failure.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Connection;
use serde::Serialize;

use crate::amqp::{self, AmqpError};
use crate::config::AmqpConfig;

/// One queue as the broker counts it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    pub queue: String,
    /// Messages ready (not delivered to a consumer).
    pub messages: u32,
    /// Consumers subscribed.
    pub consumers: u32,
}

pub struct BrokerView {
    amqp: AmqpConfig,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl BrokerView {
    pub fn new(amqp: AmqpConfig) -> Self {
        BrokerView {
            amqp,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    pub fn amqp(&self) -> &AmqpConfig {
        &self.amqp
    }

    /// The depth of each queue; a queue that does not exist counts as empty.
    pub async fn depths(&self, queues: &[String]) -> Result<Vec<QueueDepth>, AmqpError> {
        let mut guard = self.conn.lock().await;
        let usable = guard.as_ref().is_some_and(|c| c.status().connected());
        if !usable {
            *guard = Some(amqp::connect(&self.amqp, "provisioner:admin").await?);
        }
        let Some(conn) = guard.as_ref() else {
            return Err(AmqpError::ChannelGone);
        };
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            // A passive declare of a missing queue closes its channel: one each.
            let channel = match conn.create_channel().await {
                Ok(c) => c,
                Err(e) => {
                    *guard = None;
                    return Err(e.into());
                }
            };
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let (messages, consumers) = match declared {
                Ok(q) => (q.message_count(), q.consumer_count()),
                Err(_) => (0, 0),
            };
            let _ = channel.close(200, "counted".into()).await;
            out.push(QueueDepth {
                queue: queue.clone(),
                messages,
                consumers,
            });
        }
        Ok(out)
    }
}
