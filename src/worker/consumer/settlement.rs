//! How a finished event's delivery is settled: the decision (acknowledge,
//! park, or give back), parking in the dead-letter queue, and the outcome's
//! report to the log, the metrics, the journal and observers.

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::in_flight::Finished;
use super::{Broker, ConsumerContext, Pending, Run};
use crate::amqp::{self, AmqpError, DeadLetter, ParkForm};
use crate::bounded;
use crate::call_log::CallLog;
use crate::engine::OutcomeStatus;
use crate::journal;
use crate::worker::{OutcomeRecord, Verdict};

/// Bodies whose dead letter the broker refused once (for instance by closing
/// the connection over a header frame too large). The refused delivery comes
/// back after the reconnect and is then parked in reduced form, instead of
/// failing the same way in a reconnect loop.
pub(in crate::worker) struct RefusedParks(Mutex<LruCache<[u8; 32], ()>>);

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

/// What to do with a finished event's delivery.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settlement {
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
pub(super) fn decide(
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

/// Parks a delivery's body in the dead-letter queue. A dead-letter queue that
/// has gone (the park comes back unroutable) is declared again and the park
/// retried once; a park the broker refused before goes in reduced form.
pub(super) async fn park(
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

/// What became of a finished run.
pub(super) enum Settled {
    /// Every delivery acknowledged: after the effect, or after its park.
    Done,
    /// Left unacknowledged, with the reason: the target is down, and
    /// everything held goes back to the broker.
    GiveBack(String),
    /// A coalesced run failed permanently: its events, unacknowledged, are to
    /// be applied one at a time, so that each ends as it would have without
    /// coalescing (the earlier ones applied, the failing one parked alone).
    /// Parking them all would leave the target short of the earlier ones, and
    /// a requeue of the letters would only coalesce and fail them again.
    OneByOne(Vec<Pending>),
}

/// Whether the event's own content failed (a permanent failure, or a panic
/// while applying it), as opposed to the target, the clock or the budget.
fn refused(finished: &Finished) -> bool {
    matches!(finished, Finished::Attempted(a) if a.result.as_ref().is_err_and(|e| !e.is_transient()))
}

/// Acknowledges an applied run's deliveries, or parks a failed run's and
/// then acknowledges them, each in its order. A run's earlier events are
/// reported as coalesced into the last; its calls are the last's.
pub(super) async fn settle(
    ctx: &ConsumerContext,
    broker: &Broker<'_>,
    run: Run,
    finished: Finished,
    calls: CallLog,
) -> Result<Settled, AmqpError> {
    ctx.status.finished();
    let Run { coalesced, last } = run;
    if !coalesced.is_empty() && refused(&finished) {
        tracing::warn!(
            event_id = %bounded::label(&last.event.id),
            coalesced = coalesced.len(),
            error = %bounded::detail(&failure_of(&finished)),
            "a coalesced run failed permanently; its events are applied one at a time"
        );
        let mut events = coalesced;
        events.push(last);
        return Ok(Settled::OneByOne(events));
    }
    let hold_limit = ctx.amqp.hold_limit();
    let settlement = decide(&finished, |t| ctx.health.served_since(t), hold_limit);
    let (attempts, api_calls) = match &finished {
        Finished::Attempted(a) => (a.attempts, a.api_calls),
        Finished::Overran { .. } => (0, 0),
    };
    let into = bounded::label(&last.event.id).into_owned();
    let earlier = coalesced.len();
    let outcome = |p: &Pending, verdict: Verdict, detail: &str| OutcomeRecord {
        provisioner: ctx.config.name.clone(),
        event_id: bounded::label(&p.event.id).into_owned(),
        action: Some(p.event.action.to_string()),
        group: Some(bounded::label(&p.event.group).into_owned()),
        subject: Some(bounded::label(&p.event.subject_label()).into_owned()),
        verdict,
        detail: bounded::detail(detail).into_owned(),
        attempts,
        api_calls: 0,
        duration: p.received.elapsed(),
        redelivered: p.delivery.redelivered,
        at: std::time::SystemTime::now(),
        calls: CallLog::default(),
    };
    // The run's calls were made for its last event: counted once, there.
    let applied = |record: OutcomeRecord| OutcomeRecord {
        api_calls,
        calls: calls.clone(),
        ..record
    };
    match settlement {
        Settlement::Return { reason } => {
            tracing::warn!(
                event_id = %into,
                coalesced = earlier,
                reason = %bounded::detail(&reason),
                "not the event's failure: the target is taken for down and the event goes back to the queue"
            );
            // Unacknowledged, every delivery goes back with the session.
            for p in &coalesced {
                report(ctx, outcome(p, Verdict::Returned, &reason));
            }
            report(ctx, applied(outcome(&last, Verdict::Returned, &reason)));
            Ok(Settled::GiveBack(reason))
        }
        Settlement::Ack { verdict, detail } => {
            for p in &coalesced {
                ack(&p.delivery).await?;
                // Each event, applied alone, would have been ignored for the
                // same reason: same subject, group and match value.
                let (verdict, detail) = match verdict {
                    Verdict::Ignored => (
                        Verdict::Ignored,
                        format!("coalesced into {into}, which was ignored: {detail}"),
                    ),
                    _ => (Verdict::Coalesced, format!("coalesced into {into}")),
                };
                // No attempt of its own: the run's attempts are the last's.
                report(
                    ctx,
                    OutcomeRecord {
                        attempts: 0,
                        ..outcome(p, verdict, &detail)
                    },
                );
            }
            ack(&last.delivery).await?;
            let detail = match earlier {
                0 => detail,
                n => format!(
                    "{detail} (for {} events of the subject: {n} coalesced into this one)",
                    n + 1
                ),
            };
            report(ctx, applied(outcome(&last, verdict, &detail)));
            Ok(Settled::Done)
        }
        Settlement::Park { reason } => {
            let reason = match earlier {
                0 => reason,
                n => format!(
                    "{reason} (applied once for {} coalesced events of the subject, the last {into}; each is parked)",
                    n + 1
                ),
            };
            for p in coalesced.iter().chain(std::iter::once(&last)) {
                let letter = DeadLetter {
                    provisioner: ctx.config.name.clone(),
                    queue: ctx.queue.clone(),
                    event_id: p.event.id.clone(),
                    reason: reason.clone(),
                    attempts,
                };
                park(ctx, broker, &p.delivery, &letter).await?;
                ack(&p.delivery).await?;
                let record = outcome(p, Verdict::DeadLettered, &reason);
                report(
                    ctx,
                    if std::ptr::eq(p, &last) {
                        applied(record)
                    } else {
                        record
                    },
                );
            }
            Ok(Settled::Done)
        }
    }
}

/// The error of a failed attempt, for the log.
fn failure_of(finished: &Finished) -> String {
    match finished {
        Finished::Attempted(a) => match &a.result {
            Err(e) => e.to_string(),
            Ok(o) => o.detail.clone(),
        },
        Finished::Overran { .. } => "overran".to_string(),
    }
}

pub(super) async fn ack(delivery: &Delivery) -> Result<(), AmqpError> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        // The channel this delivery came on is gone; the broker has requeued it.
        Err(AmqpError::ChannelGone)
    }
}

/// Logs an outcome (one line, every field bounded) and broadcasts it.
pub(super) fn report(ctx: &ConsumerContext, record: OutcomeRecord) {
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
            Verdict::Coalesced => journal::EventResult::Coalesced,
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
    use crate::engine::retry::Attempts;
    use crate::engine::ApplyError;
    use crate::engine::Outcome;
    use crate::target::TargetError;

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
