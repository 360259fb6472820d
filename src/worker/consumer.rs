//! One provisioner's consumer: a session per broker connection, reconnecting
//! with backoff. Inside a session, one `select!` over shutdown, the target
//! going down, finished events, the hold limit and new deliveries. This loop
//! is the only place that acknowledges.
//!
//! Every delivery ends one of three ways: acknowledged after its effect,
//! parked in the dead-letter queue and then acknowledged, or returned to the
//! broker unacknowledged. It is returned when the target is down (the session
//! ends and the connection's close hands everything back, in order) and when
//! it has waited so long that the broker's acknowledgement timeout nears.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::order::{locks_of, OrderedQueue};
use super::status::{now_ms, ConsumerState, ProvisionerStatus};
use super::{OutcomeRecord, Verdict};
use crate::amqp::{self, headers, AmqpError, DeadLetter, ParkForm};
use crate::bounded;
use crate::call_log::{self, CallLog, CallObserver};
use crate::config::{AmqpConfig, ProvisionerConfig};
use crate::engine::health::TargetHealth;
use crate::engine::retry::{with_retries, Attempts};
use crate::engine::{ApplyError, OutcomeStatus, Provisioner};
use crate::event::{self, Event};
use crate::journal::{self, Journal};
use crate::metrics::Metrics;
use crate::target::TargetError;

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
    pub health: Arc<TargetHealth>,
    /// Lives across sessions too: which dead letters the broker refused.
    pub refused_parks: Arc<RefusedParks>,
    /// The provisioner's live state (shared with its other consumers).
    pub status: Arc<ProvisionerStatus>,
    pub metrics: Arc<Metrics>,
    /// Counts this provisioner's calls in the metrics as they end.
    pub calls: Arc<dyn CallObserver>,
    /// Where outcomes are kept, when a journal is configured.
    pub journal: Option<Journal>,
}

/// Bodies whose dead letter the broker refused once (for instance by closing
/// the connection over a header frame too large). The refused delivery comes
/// back after the reconnect and is then parked in reduced form, instead of
/// failing the same way in a reconnect loop.
pub(super) struct RefusedParks(Mutex<LruCache<[u8; 32], ()>>);

impl RefusedParks {
    pub fn new() -> Self {
        RefusedParks(Mutex::new(LruCache::new(
            NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
        )))
    }

    fn key(body: &[u8]) -> [u8; 32] {
        Sha256::digest(body).into()
    }

    fn refused(&self, body: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&Self::key(body))
    }

    fn remember(&self, body: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(Self::key(body), ());
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
    /// The target is down, or an operator paused the provisioner:
    /// everything held went back to the broker.
    Stood,
}

/// A delivery accepted for processing. The event is parsed once and shared
/// with its task; the body stays for parking.
struct Pending {
    delivery: Delivery,
    event: Arc<Event>,
    received: Instant,
}

/// How an event's task ended.
#[derive(Debug)]
enum Finished {
    Attempted(Attempts),
    /// Still unfinished at the hold limit, and cancelled there.
    Overran {
        first_transient_failure: Option<Instant>,
    },
}

/// A finished task: how it ended and the calls it made.
type TaskResult = (u64, Finished, CallLog);

/// What to do with a finished event's delivery.
#[derive(Debug, PartialEq, Eq)]
enum Settlement {
    Ack {
        verdict: Verdict,
        detail: String,
    },
    Park {
        reason: String,
    },
    /// Not the event's fault: the target does not answer anyone. The
    /// delivery goes back to the broker, with everything else held.
    Return {
        reason: String,
    },
}

/// The decision, in one place. A transient failure parks an event only when
/// another event was served after this one began failing: then the failure
/// is this event's own. Otherwise the target is taken for down, and an
/// outage, however long, parks nothing.
fn decide(
    finished: &Finished,
    served_since: impl Fn(Instant) -> bool,
    hold_limit: Duration,
) -> Settlement {
    let attempts = match finished {
        Finished::Overran {
            first_transient_failure: Some(t),
        } if !served_since(*t) => {
            return Settlement::Return {
                reason: format!(
                    "an event failed for {} s while no other event was served",
                    hold_limit.as_secs()
                ),
            }
        }
        Finished::Overran { .. } => {
            return Settlement::Park {
                reason: format!(
                    "not applied within {} s of its receipt, 90 % of the broker's acknowledgement timeout ([amqp] ack_timeout_s): the broker would take it back and hand it out again, forever. Raise the broker's consumer_timeout and ack_timeout_s, or make the event smaller",
                    hold_limit.as_secs()
                ),
            }
        }
        Finished::Attempted(a) => a,
    };
    match &attempts.result {
        Ok(outcome) => Settlement::Ack {
            verdict: match outcome.status {
                OutcomeStatus::Applied => Verdict::Applied,
                OutcomeStatus::Ignored => Verdict::Ignored,
            },
            detail: outcome.detail.clone(),
        },
        Err(e) if !e.is_transient() => Settlement::Park {
            reason: format!("permanent failure: {e}"),
        },
        Err(e) => match attempts.first_transient_failure {
            Some(t) if served_since(t) => Settlement::Park {
                reason: format!(
                    "retry budget exhausted after {} attempt(s) while the target served other events: {e}",
                    attempts.attempts
                ),
            },
            _ => Settlement::Return {
                reason: format!(
                    "retry budget exhausted after {} attempt(s) while no other event was served: {}",
                    attempts.attempts,
                    bounded::detail(&e.to_string())
                ),
            },
        },
    }
}

/// The events being applied: their tasks, and their deliveries kept here, in
/// the loop, so that even a task that panics leaves its delivery settleable.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<TaskResult>,
    deliveries: HashMap<u64, Pending>,
    tickets: HashMap<tokio::task::Id, u64>,
}

type Joined = Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>;

/// A finished event with its delivery.
type Done = (u64, Pending, Finished, CallLog);

impl InFlight {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next finished event. A task that panicked becomes a permanent
    /// failure of its event (parked with the reason), not a stuck subject.
    async fn next(&mut self) -> Option<Done> {
        loop {
            let joined = self.tasks.join_next_with_id().await?;
            if let Some(done) = self.claim(joined) {
                return Some(done);
            }
        }
    }

    /// A finished event, if one is finished already.
    fn try_next(&mut self) -> Option<Done> {
        loop {
            let joined = self.tasks.try_join_next_with_id()?;
            if let Some(done) = self.claim(joined) {
                return Some(done);
            }
        }
    }

    fn claim(&mut self, joined: Joined) -> Option<Done> {
        let (id, finished, calls) = match joined {
            Ok((id, (_, finished, calls))) => (id, finished, calls),
            Err(e) if e.is_cancelled() => return None,
            Err(e) => {
                tracing::error!(error = %e, "an event task panicked; its event is parked");
                let finished = Finished::Attempted(Attempts {
                    result: Err(ApplyError {
                        error: TargetError::permanent(
                            "the worker failed internally while applying this event (a bug: please report it with this event)",
                        ),
                        api_calls: 0,
                    }),
                    attempts: 1,
                    api_calls: 0,
                    first_transient_failure: None,
                });
                (e.id(), finished, CallLog::default())
            }
        };
        let ticket = self.tickets.remove(&id)?;
        let pending = self.deliveries.remove(&ticket)?;
        Some((ticket, pending, finished, calls))
    }

    fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

/// Consumes until `shutdown`, reconnecting whenever the broker goes away and
/// staying away from the broker while the target is down.
pub(super) async fn consume(ctx: ConsumerContext, shutdown: CancellationToken) {
    let first_backoff = Duration::from_millis(200);
    let mut backoff = first_backoff;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if ctx.status.is_paused() {
            ctx.status.set_consumer(&ctx.queue, ConsumerState::Paused);
            let mut paused = ctx.status.subscribe_paused();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = paused.wait_for(|p| !*p) => {}
            }
            continue;
        }
        if !ctx.health.is_up() {
            tracing::info!(queue = %ctx.queue, "target down: not consuming until it answers again");
            ctx.status
                .set_consumer(&ctx.queue, ConsumerState::WaitingForTarget);
            let mut up = ctx.health.subscribe();
            let mut paused = ctx.status.subscribe_paused();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = up.wait_for(|up| *up) => {}
                _ = paused.wait_for(|p| *p) => {}
            }
            continue;
        }
        let started = Instant::now();
        ctx.status
            .set_consumer(&ctx.queue, ConsumerState::Connecting);
        let end = session(&ctx, &shutdown).await;
        let reason = match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Stood) => continue,
            Ok(SessionEnd::Lost(reason)) => reason,
            Err(e) => e.to_string(),
        };
        ctx.status.set_consumer(
            &ctx.queue,
            ConsumerState::BrokerDown {
                since: now_ms(),
                reason: bounded::detail(&reason).into_owned(),
            },
        );
        if started.elapsed() > Duration::from_secs(30) {
            backoff = first_backoff;
        }
        tracing::warn!(
            queue = %ctx.queue,
            retry_in_ms = backoff.as_millis() as u64,
            reason = %bounded::detail(&reason),
            "broker connection lost or unavailable; reconnecting"
        );
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(ctx.amqp.reconnect_max);
    }
    ctx.status.set_consumer(&ctx.queue, ConsumerState::Stopped);
}

/// Resolves once the watched flag has the value `until`.
async fn until(flag: &mut watch::Receiver<bool>, until: bool) {
    if flag.wait_for(|v| *v == until).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The broker objects a session parks through.
struct Broker<'a> {
    conn: &'a Connection,
    channel: &'a Channel,
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
    let mut up = ctx.health.subscribe();
    let mut paused = ctx.status.subscribe_paused();
    let mut consumer = channel
        .basic_consume(
            ctx.queue.as_str().into(),
            format!("provisioner-{}", ctx.config.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %ctx.queue, "consuming");
    ctx.status
        .set_consumer(&ctx.queue, ConsumerState::Consuming);
    let broker = Broker {
        conn: &conn,
        channel: &channel,
    };
    let hold_limit = ctx.amqp.hold_limit();

    let mut queue: OrderedQueue<Pending> = OrderedQueue::default();
    let mut running = InFlight::default();
    let end = loop {
        // An event that has waited half the hold limit goes back rather than
        // start with too little time left to finish.
        let hold_ends = queue.waiting().next().map(|p| p.received + hold_limit / 2);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                drain(ctx, &broker, &mut queue, &mut running).await;
                break SessionEnd::Shutdown;
            }
            _ = until(&mut up, false) => {
                settle_finished(ctx, &broker, &mut queue, &mut running).await;
                tracing::warn!(
                    held = queue.len(),
                    "target down: every held delivery goes back to the queue"
                );
                break SessionEnd::Stood;
            }
            _ = until(&mut paused, true) => {
                settle_finished(ctx, &broker, &mut queue, &mut running).await;
                tracing::warn!(
                    held = queue.len(),
                    "paused: every held delivery goes back to the queue"
                );
                break SessionEnd::Stood;
            }
            Some((ticket, pending, finished, calls)) = running.next(), if !running.is_empty() => {
                queue.finish(ticket);
                match settle(ctx, &broker, pending, finished, calls).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        ctx.health.mark_down(reason);
                        break SessionEnd::Stood;
                    }
                    Err(e) => break SessionEnd::Lost(e.to_string()),
                }
                start_ready(ctx, &mut queue, &mut running);
            }
            _ = sleep_until_some(hold_ends), if hold_ends.is_some() => {
                if let Err(e) = return_waiting(&mut queue, hold_limit).await {
                    break SessionEnd::Lost(e.to_string());
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    if let Err(e) = accept(ctx, &broker, &mut queue, delivery).await {
                        break SessionEnd::Lost(e.to_string());
                    }
                    start_ready(ctx, &mut queue, &mut running);
                }
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                None => break SessionEnd::Lost("the broker ended the consumer".into()),
            },
        }
    };
    // Anything unfinished was not acknowledged: the broker requeues it, in
    // its order, when the connection closes, and it is applied again
    // (idempotently) later.
    for _ in 0..running.len() {
        ctx.status.finished();
    }
    running.abort_all();
    // Closing the connection closes its channel; closing both races in lapin.
    let _ = conn.close(200, "bye".into()).await;
    Ok(end)
}

/// Settles the events that have finished already, before the rest goes back.
async fn settle_finished(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    queue: &mut OrderedQueue<Pending>,
    running: &mut InFlight,
) {
    while let Some((ticket, pending, finished, calls)) = running.try_next() {
        queue.finish(ticket);
        if let Err(e) = settle(ctx, broker, pending, finished, calls).await {
            tracing::warn!(error = %e, "could not settle an event; it goes back to the queue");
            break;
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands every waiting (not started) delivery back to the broker: the oldest
/// has waited behind running events for half of the time the worker may
/// hold a delivery, too long to start now and still finish within it. They
/// come back at once as new deliveries. Order holds, because every running
/// event of a subject comes before its waiting ones, and the broker puts
/// requeued messages back in their places.
async fn return_waiting(
    queue: &mut OrderedQueue<Pending>,
    hold_limit: Duration,
) -> Result<(), AmqpError> {
    let waiting = queue.take_waiting();
    tracing::warn!(
        returned = waiting.len(),
        waited_s = (hold_limit / 2).as_secs(),
        "events waited behind running ones for half the hold limit; returned to the queue"
    );
    for pending in waiting {
        let returned = pending
            .delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await?;
        if !returned {
            return Err(AmqpError::ChannelGone);
        }
    }
    Ok(())
}

/// Parses a delivery: an invalid event is parked at once; a valid one queued.
async fn accept(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    queue: &mut OrderedQueue<Pending>,
    delivery: Delivery,
) -> Result<(), AmqpError> {
    let received = Instant::now();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_string());
    match event::parse_at_most(
        &delivery.data,
        message_id.as_deref(),
        ctx.amqp.max_event_bytes,
    ) {
        Ok(mut event) => {
            if amqp::header_true(&delivery.properties, headers::ALLOW_REMOVALS) {
                tracing::warn!(
                    event_id = %bounded::label(&event.id),
                    "re-queued by an operator with --allow-removals: the mass-deprovision guard is off for this event"
                );
                event.allow_removals = true;
            }
            queue.push(
                locks_of(&event),
                Pending {
                    delivery,
                    event: Arc::new(event),
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
            park(ctx, broker, &delivery, &letter).await?;
            ack(&delivery).await?;
            report(
                ctx,
                OutcomeRecord {
                    provisioner: ctx.config.name.clone(),
                    event_id: bounded::label(&invalid.id).into_owned(),
                    action: None,
                    group: None,
                    subject: None,
                    verdict: Verdict::DeadLettered,
                    detail: bounded::detail(&invalid.reason).into_owned(),
                    attempts: 1,
                    api_calls: 0,
                    duration: received.elapsed(),
                    redelivered: delivery.redelivered,
                    at: std::time::SystemTime::now(),
                    calls: CallLog::default(),
                },
            );
            Ok(())
        }
    }
}

/// Parks a delivery's body in the dead-letter queue. A dead-letter queue that
/// has gone (the park comes back unroutable) is declared again and the park
/// retried once; a park the broker refused before goes in reduced form.
async fn park(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    delivery: &Delivery,
    letter: &DeadLetter,
) -> Result<(), AmqpError> {
    let form = if ctx.refused_parks.refused(&delivery.data) {
        tracing::warn!(
            event_id = %bounded::label(&letter.event_id),
            "the broker refused this dead letter before; parking it without the original headers"
        );
        ParkForm::Reduced
    } else {
        ParkForm::Full
    };
    let dead_letter_queue = ctx.config.dead_letter_queue();
    let attempt = |form| {
        amqp::park(
            broker.channel,
            &dead_letter_queue,
            &delivery.data,
            &delivery.properties,
            letter,
            form,
        )
    };
    let parked = match attempt(form).await {
        Err(AmqpError::Unroutable(_)) => {
            tracing::warn!(
                queue = %dead_letter_queue,
                "the dead-letter queue is missing; declaring the topology again"
            );
            amqp::declare(broker.conn, &ctx.topology).await?;
            attempt(form).await
        }
        other => other,
    };
    if parked.is_err() {
        ctx.refused_parks.remember(&delivery.data);
    }
    parked
}

fn start_ready(ctx: &ConsumerContext, queue: &mut OrderedQueue<Pending>, running: &mut InFlight) {
    let ready = queue.start_ready(ctx.config.concurrency);
    for (ticket, pending) in ready {
        let provisioner = ctx.provisioner.clone();
        let health = ctx.health.clone();
        let metrics = ctx.metrics.clone();
        let observer = ctx.calls.clone();
        let name = ctx.config.name.clone();
        let policy = ctx.config.retry.clone();
        ctx.status.started();
        let span = tracing::info_span!(
            "event",
            id = %bounded::label(&pending.event.id),
            action = %pending.event.action,
            subject = %bounded::label(&pending.event.subject_label()),
        );
        let event = pending.event.clone();
        let received = pending.received;
        let hold_ends = received + ctx.amqp.hold_limit();
        let handle = running.tasks.spawn(
            async move {
                let first_failure = OnceLock::new();
                let retried = with_retries(
                    &policy,
                    received,
                    || provisioner.apply(&event),
                    |attempt, error, wait| {
                        let _ = first_failure.set(Instant::now());
                        health.record_attempt(true);
                        metrics.retry(&name);
                        tracing::warn!(
                            attempt,
                            retry_in_ms = wait.as_millis() as u64,
                            error = %bounded::detail(&error.to_string()),
                            "transient failure; retrying"
                        );
                    },
                );
                let bounded_run = tokio::time::timeout_at(hold_ends, retried);
                let (ran, calls) = call_log::collect(Some(observer), bounded_run).await;
                let finished = match ran {
                    Ok(attempts) => {
                        record_end(&health, &attempts);
                        Finished::Attempted(attempts)
                    }
                    Err(_) => Finished::Overran {
                        first_transient_failure: first_failure.get().copied(),
                    },
                };
                (ticket, finished, calls)
            }
            .instrument(span),
        );
        running.tickets.insert(handle.id(), ticket);
        running.deliveries.insert(ticket, pending);
    }
}

/// Tells the target's health how an event's last attempt went.
fn record_end(health: &TargetHealth, attempts: &Attempts) {
    match &attempts.result {
        Ok(outcome) => {
            health.record_attempt(false);
            if outcome.api_calls > 0 {
                health.served();
            }
        }
        Err(e) if e.is_transient() => health.record_attempt(true),
        Err(e) => {
            health.record_attempt(false);
            // Refused with an answer: the target is there and serving.
            if e.error.status.is_some() {
                health.served();
            }
        }
    }
}

/// Acknowledges an applied event, or parks a failed one then acknowledges
/// it. Returns the reason when the event must go back to the broker instead
/// (left unacknowledged: the target is down).
async fn settle(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    pending: Pending,
    finished: Finished,
    calls: CallLog,
) -> Result<Option<String>, AmqpError> {
    ctx.status.finished();
    let Pending {
        delivery,
        event,
        received,
    } = pending;
    let hold_limit = ctx.amqp.hold_limit();
    let settlement = decide(&finished, |t| ctx.health.served_since(t), hold_limit);
    let (attempts, api_calls) = match &finished {
        Finished::Attempted(a) => (a.attempts, a.api_calls),
        Finished::Overran { .. } => (0, 0),
    };
    let (verdict, detail) = match settlement {
        Settlement::Return { reason } => {
            tracing::warn!(
                event_id = %bounded::label(&event.id),
                reason = %bounded::detail(&reason),
                "not the event's failure: the target is taken for down and the event goes back to the queue"
            );
            report(
                ctx,
                OutcomeRecord {
                    provisioner: ctx.config.name.clone(),
                    event_id: bounded::label(&event.id).into_owned(),
                    action: Some(event.action.to_string()),
                    group: Some(bounded::label(&event.group).into_owned()),
                    subject: Some(bounded::label(&event.subject_label()).into_owned()),
                    verdict: Verdict::Returned,
                    detail: bounded::detail(&reason).into_owned(),
                    attempts,
                    api_calls,
                    duration: received.elapsed(),
                    redelivered: delivery.redelivered,
                    at: std::time::SystemTime::now(),
                    calls,
                },
            );
            return Ok(Some(reason));
        }
        Settlement::Ack { verdict, detail } => (verdict, detail),
        Settlement::Park { reason } => {
            let letter = DeadLetter {
                provisioner: ctx.config.name.clone(),
                queue: ctx.queue.clone(),
                event_id: event.id.clone(),
                reason: reason.clone(),
                attempts,
            };
            park(ctx, broker, &delivery, &letter).await?;
            (Verdict::DeadLettered, reason)
        }
    };
    ack(&delivery).await?;
    report(
        ctx,
        OutcomeRecord {
            provisioner: ctx.config.name.clone(),
            event_id: bounded::label(&event.id).into_owned(),
            action: Some(event.action.to_string()),
            group: Some(bounded::label(&event.group).into_owned()),
            subject: Some(bounded::label(&event.subject_label()).into_owned()),
            verdict,
            detail: bounded::detail(&detail).into_owned(),
            attempts,
            api_calls,
            duration: received.elapsed(),
            redelivered: delivery.redelivered,
            at: std::time::SystemTime::now(),
            calls,
        },
    );
    Ok(None)
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
    broker: &Broker<'_>,
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
            Ok(Some((ticket, pending, finished, calls))) => {
                queue.finish(ticket);
                match settle(ctx, broker, pending, finished, calls).await {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        tracing::info!("an event goes back to the queue: the target is down")
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not settle an event while draining; it stays queued"
                    ),
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

/// Logs an outcome (one line, every field bounded) and broadcasts it.
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
    ctx.metrics.event(
        &ctx.config.name,
        record.action.as_deref().unwrap_or("invalid"),
        record.verdict.as_str(),
    );
    ctx.status.settled(record.verdict);
    if let Some(j) = &ctx.journal {
        j.record(journal_entry(&record));
    }
    // No receiver is fine: observers are optional.
    let _ = ctx.outcomes.send(record);
}

/// An outcome as the journal keeps it.
fn journal_entry(r: &OutcomeRecord) -> journal::Entry {
    let at_ms =
        r.at.duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
    journal::Entry {
        at_ms,
        provisioner: r.provisioner.clone(),
        event_id: r.event_id.clone(),
        action: r.action.clone(),
        group: r.group.clone(),
        subject: r.subject.clone(),
        result: match r.verdict {
            Verdict::Applied => journal::EventResult::Applied,
            Verdict::Ignored => journal::EventResult::Ignored,
            Verdict::DeadLettered => journal::EventResult::DeadLettered,
            Verdict::Returned => journal::EventResult::Returned,
        },
        detail: r.detail.clone(),
        attempts: r.attempts,
        api_calls: r.api_calls,
        duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        redelivered: r.redelivered,
        worker: worker_name().to_string(),
        calls: r
            .calls
            .calls
            .iter()
            .map(|c| journal::TargetCall {
                operation: c.operation.to_string(),
                method: c.method.clone(),
                path_template: c.path_template.to_string(),
                status: c.status,
                duration_ms: u64::try_from(c.duration.as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
    }
}

/// `host:pid`, looked up once.
fn worker_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(journal::worker_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outcome;

    fn attempted(result: Result<Outcome, ApplyError>, first: Option<Instant>) -> Finished {
        Finished::Attempted(Attempts {
            result,
            attempts: 3,
            api_calls: 3,
            first_transient_failure: first,
        })
    }

    fn transient() -> Result<Outcome, ApplyError> {
        Err(ApplyError {
            error: TargetError::transient("503"),
            api_calls: 1,
        })
    }

    #[test]
    fn only_a_failure_while_others_are_served_parks_an_event() {
        let t = Instant::now();
        let hold = Duration::from_secs(1620);
        let served = |_| true;
        let not_served = |_| false;
        let applied = Ok(Outcome {
            status: OutcomeStatus::Applied,
            detail: "updated 7".into(),
            api_calls: 2,
        });
        let permanent = Err(ApplyError {
            error: TargetError::permanent("400"),
            api_calls: 1,
        });
        let kind = |s: &Settlement| match s {
            Settlement::Ack { .. } => "ack",
            Settlement::Park { .. } => "park",
            Settlement::Return { .. } => "return",
        };
        let cases: Vec<(&str, Finished, bool, &str)> = vec![
            ("applied", attempted(applied, None), false, "ack"),
            ("permanent", attempted(permanent, None), false, "park"),
            (
                "budget out, others served",
                attempted(transient(), Some(t)),
                true,
                "park",
            ),
            (
                "budget out, nothing served",
                attempted(transient(), Some(t)),
                false,
                "return",
            ),
            (
                "overran while failing, nothing served",
                Finished::Overran {
                    first_transient_failure: Some(t),
                },
                false,
                "return",
            ),
            (
                "overran while failing, others served",
                Finished::Overran {
                    first_transient_failure: Some(t),
                },
                true,
                "park",
            ),
            (
                "overran while working",
                Finished::Overran {
                    first_transient_failure: None,
                },
                false,
                "park",
            ),
        ];
        for (name, finished, others_served, want) in cases {
            let got = if others_served {
                decide(&finished, served, hold)
            } else {
                decide(&finished, not_served, hold)
            };
            assert_eq!(kind(&got), want, "{name}: {got:?}");
        }
    }
}
