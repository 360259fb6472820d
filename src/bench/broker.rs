//! The benchmark's side of RabbitMQ: fresh queues (deleted afterwards),
//! publishing with confirms, and the broker limit — a bare lapin consumer
//! acknowledging pre-published events.

use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::BenchError;
use crate::amqp::{self, Topology};
use crate::config::AmqpConfig;

/// Confirms awaited at once while publishing a batch: enough to keep the
/// broker busy, few enough to bound what is held.
const PUBLISH_WINDOW: usize = 512;

/// One message to publish: its id (the AMQP `message_id`) and body.
#[derive(Debug, Clone)]
pub struct Message {
    /// The event's id, also its `message_id`.
    pub id: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// A connection for publishing, declaring and deleting the benchmark's queues.
pub struct Broker {
    config: AmqpConfig,
    conn: Connection,
    channel: Channel,
    run_id: String,
    made: Vec<String>,
}

impl Broker {
    /// Connects, or says how to start a broker.
    pub async fn connect(config: &AmqpConfig) -> Result<Broker, BenchError> {
        let conn = amqp::connect(config, "provisioner:bench")
            .await
            .map_err(BenchError::BrokerUnreachable)?;
        let channel = amqp::confirm_channel(&conn).await.map_err(broker)?;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(Broker {
            config: config.clone(),
            conn,
            channel,
            run_id: format!("{}.{stamp}", std::process::id()),
            made: Vec::new(),
        })
    }

    /// The broker settings this connection was made with.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// Connects again if the connection or the publishing channel has gone
    /// between two runs: a shared broker may have every connection closed
    /// under it (`rabbitmqctl close_all_connections`), and one run's
    /// numbers do not depend on the bench's own connection.
    async fn ready(&mut self) -> Result<(), BenchError> {
        if self.conn.status().connected() && self.channel.status().connected() {
            return Ok(());
        }
        eprintln!("bench: the broker connection had closed; connecting again");
        let conn = amqp::connect(&self.config, "provisioner:bench")
            .await
            .map_err(BenchError::BrokerUnreachable)?;
        self.channel = amqp::confirm_channel(&conn).await.map_err(broker)?;
        self.conn = conn;
        Ok(())
    }

    /// A queue name of this run (never the default `provisioner.example`),
    /// declared with its dead-letter queue, and deleted by [`Broker::cleanup`].
    pub async fn fresh_queue(&mut self, label: &str) -> Result<String, BenchError> {
        self.ready().await?;
        let queue = format!("provisioner.bench.{}.{label}", self.run_id);
        amqp::declare(&self.conn, &Topology::plain(&queue))
            .await
            .map_err(broker)?;
        self.made.push(queue.clone());
        Ok(queue)
    }

    /// Deletes a queue of this run and its dead-letter queue.
    pub async fn delete(&mut self, queue: &str) -> Result<(), BenchError> {
        self.ready().await?;
        // A channel of its own: a refused delete closes its channel.
        let channel = self.conn.create_channel().await.map_err(lapin_error)?;
        for q in [queue.to_string(), format!("{queue}.dead")] {
            channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(lapin_error)?;
        }
        let _ = channel.close(200, "deleted".into()).await;
        self.made.retain(|q| q != queue);
        Ok(())
    }

    /// Deletes every queue this run made and closes the connection.
    pub async fn cleanup(mut self) {
        for q in std::mem::take(&mut self.made) {
            if let Err(e) = self.delete(&q).await {
                eprintln!("bench: could not delete the queue `{q}`: {e}");
            }
        }
        let _ = self.conn.close(200, "bench done".into()).await;
    }

    async fn publish_one(
        &self,
        queue: &str,
        message: &Message,
    ) -> Result<lapin::PublisherConfirm, BenchError> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(message.id.as_str().into())
            .with_delivery_mode(2);
        self.channel
            .basic_publish(
                ShortString::from(""),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                props,
            )
            .await
            .map_err(lapin_error)
    }

    /// Publishes every message (persistent, mandatory) as fast as the broker
    /// confirms them, a window of confirms outstanding at a time.
    pub async fn publish_all(
        &mut self,
        queue: &str,
        messages: &[Message],
    ) -> Result<(), BenchError> {
        self.ready().await?;
        let mut outstanding = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
        for m in messages {
            if outstanding.len() >= PUBLISH_WINDOW {
                if let Some(confirm) = outstanding.pop_front() {
                    confirmed(queue, confirm).await?;
                }
            }
            outstanding.push_back(self.publish_one(queue, m).await?);
        }
        for confirm in outstanding {
            confirmed(queue, confirm).await?;
        }
        Ok(())
    }

    /// Publishes the messages at `per_second`, each as its time comes, and
    /// returns when each was handed to the broker and when the broker
    /// confirmed it (wall clock, comparable with the worker's log timestamps).
    pub async fn publish_paced(
        &mut self,
        queue: &str,
        messages: &[Message],
        per_second: f64,
    ) -> Result<Vec<(SystemTime, SystemTime)>, BenchError> {
        self.ready().await?;
        let spacing = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let start = tokio::time::Instant::now();
        let mut waiting = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            tokio::time::sleep_until(start + spacing.mul_f64(i as f64)).await;
            let sent = SystemTime::now();
            let confirm = self.publish_one(queue, m).await?;
            let queue = queue.to_string();
            // A task per confirm, so that each is timed when it arrives,
            // not when this loop gets round to it.
            waiting.push(tokio::spawn(async move {
                confirmed(&queue, confirm)
                    .await
                    .map(|()| (sent, SystemTime::now()))
            }));
        }
        let mut times = Vec::with_capacity(waiting.len());
        for w in waiting {
            let at = w
                .await
                .map_err(|e| BenchError::Broker(format!("a confirm task failed: {e}")))??;
            times.push(at);
        }
        Ok(times)
    }

    /// Publishes one message and returns when the broker confirmed it.
    pub async fn publish_timed(
        &mut self,
        queue: &str,
        message: &Message,
    ) -> Result<SystemTime, BenchError> {
        self.ready().await?;
        let confirm = self.publish_one(queue, message).await?;
        confirmed(queue, confirm).await?;
        Ok(SystemTime::now())
    }

    /// The broker limit: `messages` pre-published to a fresh queue, then one
    /// bare consumer at `prefetch` acknowledging each delivery on its own,
    /// as the worker does. Timed from `basic.consume` to the last ack.
    pub async fn consume_limit(
        &mut self,
        messages: &[Message],
        prefetch: u16,
    ) -> Result<BrokerLimit, BenchError> {
        let queue = self.fresh_queue("broker-limit").await?;
        self.publish_all(&queue, messages).await?;
        let channel = self.conn.create_channel().await.map_err(lapin_error)?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(lapin_error)?;
        let started = Instant::now();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "provisioner-bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(lapin_error)?;
        let mut acked = 0usize;
        while acked < messages.len() {
            let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
            let delivery = match next {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => return Err(lapin_error(e)),
                Ok(None) | Err(_) => {
                    return Err(BenchError::Broker(format!(
                        "the bare consumer received {acked} of {} messages, then nothing for 30 s",
                        messages.len()
                    )))
                }
            };
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(lapin_error)?;
            acked += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let _ = channel.close(200, "measured".into()).await;
        self.delete(&queue).await?;
        Ok(BrokerLimit {
            events: acked,
            prefetch,
            seconds,
            events_per_s: acked as f64 / seconds.max(1e-9),
        })
    }
}

/// Measurement 1: what the broker alone delivers and takes acks for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerLimit {
    /// Messages consumed and acknowledged.
    pub events: usize,
    /// The consumer's prefetch (the worker's).
    pub prefetch: u16,
    /// From `basic.consume` to the last acknowledgement.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_s: f64,
}

async fn confirmed(queue: &str, confirm: lapin::PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await.map_err(lapin_error)? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Err(BenchError::Broker(
            format!("the broker returned a message published to `{queue}`: no such queue"),
        )),
        Confirmation::Nack(None) => Err(BenchError::Broker(format!(
            "the broker refused (nack) a message published to `{queue}`"
        ))),
    }
}

fn lapin_error(e: lapin::Error) -> BenchError {
    BenchError::Broker(format!(
        "{e} (if another process closed every connection of a shared broker, run the benchmark again)"
    ))
}

fn broker(e: amqp::AmqpError) -> BenchError {
    BenchError::Broker(e.to_string())
}
