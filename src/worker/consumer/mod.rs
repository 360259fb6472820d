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
//!
//! An event that starts takes with it the events of its subject waiting
//! behind it that [`Coalescing`] lets join its run: one task applies the
//! run's last event, and the run's deliveries are settled together.

mod in_flight;
mod settlement;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::coalesce::Coalescing;
use super::order::{locks_of, OrderedQueue};
use super::status::{now_ms, ConsumerState, ProvisionerStatus};
use super::{OutcomeRecord, Verdict};
use crate::amqp::{self, headers, AmqpError, DeadLetter};
use crate::bounded;
use crate::call_log::{self, CallLog, CallObserver};
use crate::config::{AmqpConfig, ProvisionerConfig};
use crate::engine::health::TargetHealth;
use crate::engine::retry::{with_retries, Attempts};
use crate::engine::Provisioner;
use crate::event::{self, Event};
use crate::journal::Journal;
use crate::metrics::Metrics;

use in_flight::{Done, Finished, InFlight};
pub(super) use settlement::RefusedParks;
use settlement::{ack, park, report, settle, Settled};

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
    /// Which waiting events may be coalesced into one effect.
    pub coalescing: Coalescing,
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
    /// Applied on its own, never coalesced: it was in a run that failed
    /// permanently, and is now applied one by one with the rest of it.
    alone: bool,
}

/// What one task applies: one event, or a run of one subject's events
/// coalesced into its last (`worker::coalesce`), oldest first.
struct Run {
    /// The events whose effect the last one's stands for; often none.
    coalesced: Vec<Pending>,
    /// The event applied.
    last: Pending,
}

impl Run {
    /// When the run's earliest event was received: the hold limit and the
    /// retry budget count from there, as for that event alone.
    fn received(&self) -> Instant {
        self.coalesced
            .iter()
            .map(|p| p.received)
            .fold(self.last.received, Instant::min)
    }
}

/// Consumes until `shutdown`, reconnecting whenever the broker goes away and
/// staying away from the broker while the target is down.
pub(super) async fn consume(ctx: ConsumerContext, shutdown: CancellationToken) {
    let first_backoff = Duration::from_millis(200);
    let mut backoff = first_backoff;
    // The node of `[amqp] url` tried first: the one last connected to, or
    // after a loss the next one, so a node that went away is tried last.
    let mut node = 0;
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
        let end = session(&ctx, &shutdown, &mut node).await;
        let reason = match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Stood) => continue,
            Ok(SessionEnd::Lost(reason)) => reason,
            Err(e) => e.to_string(),
        };
        node = (node + 1) % ctx.amqp.url.nodes().len().max(1);
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
    /// Why the connection is gone, once it is.
    lost: watch::Receiver<Option<String>>,
}

/// Watches a new connection's events (from the start: lapin reports a dead
/// connection only to listeners that exist when it happens) on a task of
/// its own, so that a death is noticed even while the session waits on the
/// broker: lapin does not always fail what was pending on a connection
/// that died (a node killed, say). The receiver gets the reason once the
/// connection is gone. The task ends with the returned guard.
fn watch_connection(conn: &Connection) -> (watch::Receiver<Option<String>>, AbortOnDrop) {
    let mut events = conn.events_listener();
    let status = conn.status().clone();
    let (gone, lost) = watch::channel(None);
    let task = tokio::spawn(
        async move {
            // The status is looked at on a tick as well: it turns to error
            // before the event is sent, and a session must not depend on
            // one event reaching it.
            let mut tick = tokio::time::interval(STATUS_CHECK);
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = tick.tick() => {
                        if status.connected() {
                            continue;
                        }
                        let _ = gone.send(Some("the connection is no longer open".into()));
                        return;
                    }
                };
                let Some(event) = event else { break };
                match event {
                    // Channel errors (a refused declaration, say) come here
                    // too; only a connection that is gone ends the session.
                    // The status may still say connected when an I/O error
                    // comes, and no later event may follow: the error's kind
                    // decides too.
                    lapin::Event::Error(e) if amqp::ends_connection(&e, &status) => {
                        let _ = gone.send(Some(format!("connection error: {e}")));
                        return;
                    }
                    lapin::Event::ConnectionBlocked(reason) => tracing::warn!(
                        %reason,
                        "the broker blocks this connection (a resource alarm): parks wait until it lifts"
                    ),
                    _ => {}
                }
            }
            let _ = gone.send(Some("the connection's events ended".into()));
        }
        .in_current_span(),
    );
    (lost, AbortOnDrop(task))
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the connection watcher looks at the connection's status.
const STATUS_CHECK: Duration = Duration::from_secs(1);

/// Resolves with the reason once the connection is gone.
async fn lost_reason(lost: &mut watch::Receiver<Option<String>>) -> String {
    let reason = match lost.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone(),
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        // The watcher ended without a word: only the session's end aborts it.
        None => std::future::pending().await,
    }
}

/// One connection's life. `node` is the node of `[amqp] url` to try first;
/// it is set to the node reached.
async fn session(
    ctx: &ConsumerContext,
    shutdown: &CancellationToken,
    node: &mut usize,
) -> Result<SessionEnd, AmqpError> {
    let connected = amqp::connect_from(
        &ctx.amqp,
        &format!("provisioner:{}", ctx.config.name),
        *node,
    )
    .await?;
    *node = connected.node;
    let conn = connected.connection;
    // Aborted when the session ends, however it ends.
    let (lost, _watcher) = watch_connection(&conn);
    tracing::info!(
        queue = %ctx.queue,
        node = %ctx.amqp.url.shown_node(connected.node),
        "connected to the broker"
    );
    let mut up = ctx.health.subscribe();
    let mut paused = ctx.status.subscribe_paused();
    // Setting up waits on the broker too: within the same limits.
    let setup = async {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(ctx.amqp.prefetch, BasicQosOptions::default())
            .await?;
        amqp::declare(&conn, &ctx.topology).await?;
        let consumer = channel
            .basic_consume(
                ctx.queue.as_str().into(),
                format!("provisioner-{}", ctx.config.name).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    };
    let (channel, mut consumer) = in_time(&lost, setup).await?;
    tracing::info!(queue = %ctx.queue, "consuming");
    ctx.status
        .set_consumer(&ctx.queue, ConsumerState::Consuming);
    let broker = Broker {
        conn: &conn,
        channel: &channel,
        lost,
    };
    let mut lost = broker.lost.clone();
    let hold_limit = ctx.amqp.hold_limit();

    let mut queue: OrderedQueue<Pending> = OrderedQueue::default();
    let mut running = InFlight::default();
    // Adaptive pacing may allow more events at once at any time: waiting
    // ones start then, not only when another finishes.
    let mut paced = ctx.provisioner.pacing().map(|p| p.subscribe());
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
            reason = lost_reason(&mut lost) => break SessionEnd::Lost(reason),
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
            Some(done) = running.next(), if !running.is_empty() => {
                match conclude(ctx, &broker, &mut queue, done).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        ctx.health.mark_down(reason);
                        break SessionEnd::Stood;
                    }
                    Err(e) => break SessionEnd::Lost(e.to_string()),
                }
                start_ready(ctx, &mut queue, &mut running);
            }
            _ = concurrency_changed(&mut paced) => start_ready(ctx, &mut queue, &mut running),
            _ = sleep_until_some(hold_ends), if hold_ends.is_some() => {
                if let Err(e) = in_time(&broker.lost, return_waiting(&mut queue, hold_limit)).await {
                    break SessionEnd::Lost(e.to_string());
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    if let Err(e) = in_time(&broker.lost, accept(ctx, &broker, &mut queue, delivery)).await {
                        break SessionEnd::Lost(e.to_string());
                    }
                    // The deliveries already here join the queue before
                    // anything starts, so that a subject's backlog is one
                    // run rather than its first event and then the rest.
                    // Taking them waits for nothing.
                    let mut lost = None;
                    for _ in 0..ctx.amqp.prefetch {
                        let Some(more) = consumer.next().now_or_never() else {
                            break;
                        };
                        let accepted = match more {
                            Some(Ok(delivery)) => in_time(&broker.lost, accept(ctx, &broker, &mut queue, delivery))
                                .await
                                .map_err(|e| e.to_string()),
                            Some(Err(e)) => Err(e.to_string()),
                            None => Err("the broker ended the consumer".into()),
                        };
                        if let Err(e) = accepted {
                            lost = Some(e);
                            break;
                        }
                    }
                    if let Some(reason) = lost {
                        break SessionEnd::Lost(reason);
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
    // A connection that died is not closed: lapin may never answer that.
    if conn.status().connected() {
        let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, "bye".into())).await;
    }
    Ok(end)
}

/// Resolves when adaptive pacing changes the concurrency; never without it.
async fn concurrency_changed(paced: &mut Option<watch::Receiver<usize>>) {
    match paced {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Events this consumer applies at once now: `concurrency`, or less while
/// adaptive pacing holds it lower.
fn concurrency_now(ctx: &ConsumerContext) -> usize {
    let configured = ctx.config.concurrency;
    ctx.provisioner
        .pacing()
        .map_or(configured, |p| p.concurrency().min(configured))
}

/// Settles the events that have finished already, before the rest goes back.
async fn settle_finished(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    queue: &mut OrderedQueue<Pending>,
    running: &mut InFlight,
) {
    while let Some(done) = running.try_next() {
        if let Err(e) = conclude(ctx, broker, queue, done).await {
            tracing::warn!(error = %e, "could not settle an event; it goes back to the queue");
            break;
        }
    }
}

/// Longest wait for the broker to take a park, an acknowledgement or a
/// return. lapin does not always fail what was pending on a connection that
/// died; without a limit the loop would wait forever. Long enough for a
/// broker that is slow, not dead.
const BROKER_ANSWER: Duration = Duration::from_secs(60);

/// Longest wait for the broker to confirm a close at the end of a session.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A broker operation within [`BROKER_ANSWER`] and while the connection
/// lives, or the connection is lost.
async fn in_time<T>(
    lost: &watch::Receiver<Option<String>>,
    operation: impl std::future::Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    let mut lost = lost.clone();
    tokio::select! {
        answered = tokio::time::timeout(BROKER_ANSWER, operation) => match answered {
            Ok(result) => result,
            Err(_) => Err(AmqpError::NoAnswer(BROKER_ANSWER.as_secs())),
        },
        reason = lost_reason(&mut lost) => Err(AmqpError::ConnectionLost(reason)),
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
                    alone: false,
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

/// Settles a finished task's run and releases its place in the queue, or,
/// for a run to be applied one event at a time after all, puts its events
/// back in that place. Returns the reason when everything held must go back
/// to the broker (the target is down).
async fn conclude(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    queue: &mut OrderedQueue<Pending>,
    (ticket, run, finished, calls): Done,
) -> Result<Option<String>, AmqpError> {
    match in_time(&broker.lost, settle(ctx, broker, run, finished, calls)).await? {
        Settled::Done => {
            queue.finish(ticket);
            Ok(None)
        }
        Settled::GiveBack(reason) => {
            queue.finish(ticket);
            Ok(Some(reason))
        }
        Settled::OneByOne(events) => {
            let items = events
                .into_iter()
                .map(|mut p| {
                    p.alone = true;
                    (locks_of(&p.event), p)
                })
                .collect();
            queue.replace(ticket, items);
            Ok(None)
        }
    }
}

fn start_ready(ctx: &ConsumerContext, queue: &mut OrderedQueue<Pending>, running: &mut InFlight) {
    let ready = queue.start_ready(concurrency_now(ctx));
    for (ticket, first) in ready {
        let mut coalesced =
            ctx.coalescing
                .take_run(queue, ticket, &first, |p| &*p.event, |p| p.alone);
        let run = match coalesced.pop() {
            Some(last) => {
                coalesced.insert(0, first);
                Run { coalesced, last }
            }
            None => Run {
                coalesced,
                last: first,
            },
        };
        let provisioner = ctx.provisioner.clone();
        let health = ctx.health.clone();
        let metrics = ctx.metrics.clone();
        let observer = ctx.calls.clone();
        let name = ctx.config.name.clone();
        let policy = ctx.config.retry.clone();
        ctx.status.started();
        let span = tracing::info_span!(
            "event",
            id = %bounded::label(&run.last.event.id),
            action = %run.last.event.action,
            subject = %bounded::label(&run.last.event.subject_label()),
            coalesced = run.coalesced.len(),
        );
        let event = run.last.event.clone();
        let received = run.received();
        let hold_ends = received + ctx.amqp.hold_limit();
        running.spawn(
            ticket,
            run,
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
            Ok(Some(done)) => match conclude(ctx, broker, queue, done).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    tracing::info!("an event goes back to the queue: the target is down")
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not settle an event while draining; it stays queued"
                ),
            },
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
