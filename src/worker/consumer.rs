//! One provisioner's consumer: a session per broker connection, reconnecting
//! with backoff. Inside a session, one `select!` over shutdown, finished
//! events and new deliveries. This loop is the only place that acknowledges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::order::{locks_of, OrderedQueue};
use super::{OutcomeRecord, Verdict};
use crate::amqp::{self, AmqpError, DeadLetter};
use crate::config::{AmqpConfig, ProvisionerConfig};
use crate::engine::breaker::CircuitBreaker;
use crate::engine::retry::{with_retries, Attempts};
use crate::engine::{ApplyError, OutcomeStatus, Provisioner};
use crate::event::{self, Event};
use crate::target::TargetError;

/// Longest time an event may take from receipt to settlement. RabbitMQ closes
/// a channel whose delivery stays unacknowledged for 30 minutes (its default
/// `consumer_timeout`), which would return the event to the queue to start
/// over, forever; an event still unfinished after this is parked instead.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(25 * 60);

#[derive(Clone)]
pub(super) struct ConsumerContext {
    pub amqp: AmqpConfig,
    pub grace: Duration,
    pub config: ProvisionerConfig,
    pub topology: amqp::Topology,
    /// The queue this task consumes (the provisioner's queue or one partition).
    pub queue: String,
    pub provisioner: Arc<dyn Provisioner>,
    pub outcomes: broadcast::Sender<OutcomeRecord>,
    /// Lives across sessions: a broker reconnect says nothing about the target.
    pub breaker: Arc<CircuitBreaker>,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// A delivery accepted for processing.
struct Pending {
    delivery: Delivery,
    event: Event,
    received: Instant,
}

/// The events being applied: their tasks, and their deliveries kept here, in
/// the loop, so that even a task that panics leaves its delivery settleable.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<(u64, Attempts)>,
    deliveries: HashMap<u64, Pending>,
    tickets: HashMap<tokio::task::Id, u64>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next finished event. A task that panicked becomes a permanent
    /// failure of its event (parked with the reason), not a stuck subject.
    async fn next(&mut self) -> Option<(u64, Pending, Attempts)> {
        loop {
            let (id, ticket_attempts) = match self.tasks.join_next_with_id().await? {
                Ok((id, done)) => (id, Some(done)),
                Err(e) => {
                    tracing::error!(error = %e, "an event task panicked; its event is parked");
                    (e.id(), None)
                }
            };
            let Some(ticket) = self.tickets.remove(&id) else {
                continue;
            };
            let Some(pending) = self.deliveries.remove(&ticket) else {
                continue;
            };
            let attempts = match ticket_attempts {
                Some((_, attempts)) => attempts,
                None => Attempts {
                    result: Err(ApplyError {
                        error: TargetError::permanent(
                            "the worker failed internally while applying this event (a bug: please report it with this event)",
                        ),
                        api_calls: 0,
                    }),
                    attempts: 1,
                    api_calls: 0,
                },
            };
            return Some((ticket, pending, attempts));
        }
    }

    fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

/// Consumes until `shutdown`, reconnecting whenever the broker goes away.
pub(super) async fn consume(ctx: ConsumerContext, shutdown: CancellationToken) {
    let first_backoff = Duration::from_millis(200);
    let mut backoff = first_backoff;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let end = session(&ctx, &shutdown).await;
        let reason = match end {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Lost(reason)) => reason,
            Err(e) => e.to_string(),
        };
        if started.elapsed() > Duration::from_secs(30) {
            backoff = first_backoff;
        }
        tracing::warn!(
            queue = %ctx.queue,
            retry_in_ms = backoff.as_millis() as u64,
            %reason,
            "broker connection lost or unavailable; reconnecting"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(ctx.amqp.reconnect_max);
    }
}

async fn session(
    ctx: &ConsumerContext,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AmqpError> {
    let conn = amqp::connect(&ctx.amqp, &format!("provisioner:{}", ctx.config.name)).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_qos(ctx.amqp.prefetch, BasicQosOptions::default())
        .await?;
    amqp::declare(&conn, &ctx.topology).await?;
    let mut consumer = channel
        .basic_consume(
            ctx.queue.as_str().into(),
            format!("provisioner-{}", ctx.config.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %ctx.queue, "consuming");

    let mut queue: OrderedQueue<Pending> = OrderedQueue::default();
    let mut running = InFlight::default();
    let end = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                drain(ctx, &channel, &mut queue, &mut running).await;
                break SessionEnd::Shutdown;
            }
            Some((ticket, pending, attempts)) = running.next(), if !running.is_empty() => {
                queue.finish(ticket);
                if let Err(e) = settle(ctx, &channel, pending, attempts).await {
                    break SessionEnd::Lost(e.to_string());
                }
                start_ready(ctx, &mut queue, &mut running);
            }
            _ = breaker_reopens(&ctx.breaker), if !queue.is_empty() => {
                start_ready(ctx, &mut queue, &mut running);
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    if let Err(e) = accept(ctx, &channel, &mut queue, delivery).await {
                        break SessionEnd::Lost(e.to_string());
                    }
                    start_ready(ctx, &mut queue, &mut running);
                }
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                None => break SessionEnd::Lost("the broker ended the consumer".into()),
            },
        }
    };
    // Anything unfinished was not acknowledged: the broker requeues it when the
    // channel closes, and it is applied again (idempotently) later.
    running.abort_all();
    // Closing the connection closes its channel; closing both races in lapin.
    let _ = conn.close(200, "bye".into()).await;
    Ok(end)
}

/// Parses a delivery: an invalid event is parked at once; a valid one queued.
async fn accept(
    ctx: &ConsumerContext,
    channel: &Channel,
    queue: &mut OrderedQueue<Pending>,
    delivery: Delivery,
) -> Result<(), AmqpError> {
    let received = Instant::now();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_string());
    match event::parse(&delivery.data, message_id.as_deref()) {
        Ok(event) => {
            queue.push(
                locks_of(&event),
                Pending {
                    delivery,
                    event,
                    received,
                },
            );
            Ok(())
        }
        Err(invalid) => {
            let letter = DeadLetter {
                provisioner: ctx.config.name.clone(),
                queue: ctx.queue.clone(),
                event_id: invalid.id.clone(),
                reason: invalid.to_string(),
                attempts: 1,
            };
            amqp::park(
                channel,
                &ctx.config.dead_letter_queue(),
                &delivery.data,
                &delivery.properties,
                &letter,
            )
            .await?;
            ack(&delivery).await?;
            report(
                ctx,
                OutcomeRecord {
                    provisioner: ctx.config.name.clone(),
                    event_id: invalid.id,
                    action: None,
                    group: None,
                    subject: None,
                    verdict: Verdict::DeadLettered,
                    detail: invalid.reason,
                    attempts: 1,
                    api_calls: 0,
                    duration: received.elapsed(),
                    redelivered: delivery.redelivered,
                },
            );
            Ok(())
        }
    }
}

/// Resolves when an open circuit breaker lets a probe through; never while closed.
async fn breaker_reopens(breaker: &CircuitBreaker) {
    match breaker.reopens_at() {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn start_ready(ctx: &ConsumerContext, queue: &mut OrderedQueue<Pending>, running: &mut InFlight) {
    let free = ctx.config.concurrency.saturating_sub(queue.running());
    let admitted = ctx.breaker.admit(free);
    let ready = queue.start_ready(queue.running() + admitted);
    ctx.breaker.started(ready.len());
    for (ticket, pending) in ready {
        let provisioner = ctx.provisioner.clone();
        let breaker = ctx.breaker.clone();
        let policy = ctx.config.retry.clone();
        let span = tracing::info_span!(
            "event",
            id = %pending.event.id,
            action = %pending.event.action,
            subject = %pending.event.subject_label(),
        );
        let event = pending.event.clone();
        let received = pending.received;
        let handle = running.tasks.spawn(
            async move {
                let event = &event;
                let retried = with_retries(
                    &policy,
                    received,
                    || provisioner.apply(event),
                    |attempt, error, wait| {
                        breaker.record(true);
                        tracing::warn!(
                            attempt,
                            retry_in_ms = wait.as_millis() as u64,
                            %error,
                            "transient failure; retrying"
                        );
                    },
                );
                let attempts = match tokio::time::timeout_at(received + EVENT_DEADLINE, retried).await {
                    Ok(attempts) => attempts,
                    Err(_) => Attempts {
                        result: Err(ApplyError {
                            error: TargetError::permanent(format!(
                                "not applied within {} minutes of its receipt; parked before the broker's acknowledgement timeout would return it to the queue",
                                EVENT_DEADLINE.as_secs() / 60
                            )),
                            api_calls: 0,
                        }),
                        attempts: 1,
                        api_calls: 0,
                    },
                };
                breaker.record(attempts.result.as_ref().is_err_and(|e| e.is_transient()));
                (ticket, attempts)
            }
            .instrument(span),
        );
        running.tickets.insert(handle.id(), ticket);
        running.deliveries.insert(ticket, pending);
    }
}

/// Acknowledges an applied event, or parks a failed one then acknowledges it.
async fn settle(
    ctx: &ConsumerContext,
    channel: &Channel,
    pending: Pending,
    attempts: Attempts,
) -> Result<(), AmqpError> {
    let Pending {
        delivery,
        event,
        received,
    } = pending;
    let (verdict, detail) = match attempts.result {
        Ok(outcome) => {
            let verdict = match outcome.status {
                OutcomeStatus::Applied => Verdict::Applied,
                OutcomeStatus::Ignored => Verdict::Ignored,
            };
            (verdict, outcome.detail)
        }
        Err(error) => {
            let class = if error.is_transient() {
                "retry budget exhausted"
            } else {
                "permanent failure"
            };
            let reason = format!("{class}: {error}");
            let letter = DeadLetter {
                provisioner: ctx.config.name.clone(),
                queue: ctx.queue.clone(),
                event_id: event.id.clone(),
                reason: reason.clone(),
                attempts: attempts.attempts,
            };
            amqp::park(
                channel,
                &ctx.config.dead_letter_queue(),
                &delivery.data,
                &delivery.properties,
                &letter,
            )
            .await?;
            (Verdict::DeadLettered, reason)
        }
    };
    ack(&delivery).await?;
    report(
        ctx,
        OutcomeRecord {
            provisioner: ctx.config.name.clone(),
            event_id: event.id.clone(),
            action: Some(event.action.to_string()),
            group: Some(event.group.clone()),
            subject: Some(event.subject_label()),
            verdict,
            detail,
            attempts: attempts.attempts,
            api_calls: attempts.api_calls,
            duration: received.elapsed(),
            redelivered: delivery.redelivered,
        },
    );
    Ok(())
}

async fn ack(delivery: &Delivery) -> Result<(), AmqpError> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        // The channel this delivery came on is gone; the broker has requeued it.
        Err(AmqpError::ChannelGone)
    }
}

/// Shutdown: start nothing new, let what runs finish within the grace
/// period; what has not started returns to the queue with the connection.
async fn drain(
    ctx: &ConsumerContext,
    channel: &Channel,
    queue: &mut OrderedQueue<Pending>,
    running: &mut InFlight,
) {
    // Events not started stay unacknowledged and go back to the queue, in
    // their order, only when the connection closes after the running ones
    // are settled: neither cancelling the consumer nor requeueing them now,
    // which would let a standby consumer (partitions) apply a subject's later
    // event while its earlier one still runs here.
    let deadline = Instant::now() + ctx.grace;
    tracing::info!(
        in_flight = running.len(),
        grace_s = ctx.grace.as_secs(),
        "draining"
    );
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((ticket, pending, attempts))) => {
                queue.finish(ticket);
                if let Err(e) = settle(ctx, channel, pending, attempts).await {
                    tracing::warn!(error = %e, "could not settle an event while draining; it stays queued");
                }
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    unfinished = running.len(),
                    "grace period over; unfinished events go back to the queue"
                );
                running.abort_all();
                break;
            }
        }
    }
}

fn report(ctx: &ConsumerContext, record: OutcomeRecord) {
    tracing::info!(
        event_id = %record.event_id,
        action = record.action.as_deref().unwrap_or("-"),
        group = record.group.as_deref().unwrap_or("-"),
        subject = record.subject.as_deref().unwrap_or("-"),
        result = record.verdict.as_str(),
        attempts = record.attempts,
        api_calls = record.api_calls,
        duration_ms = record.duration.as_millis() as u64,
        redelivered = record.redelivered,
        detail = %record.detail,
        "event"
    );
    // No receiver is fine: observers are optional.
    let _ = ctx.outcomes.send(record);
}
