//! What each provisioner is doing right now, for the admin API, `/readyz`
//! and the metrics: whether it is paused, whether its target answers, what
//! each of its consumers is doing, how many events are in flight, when it
//! last applied one and how many it settled lately. Written by the
//! consumers, read by anyone; every lock is held only for bookkeeping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::Verdict;
use crate::engine::health::{TargetHealth, TargetState};
use crate::engine::Provisioner;
use crate::metrics::{Sample, SampleKind, SampleSource};

/// What one consumer (one consumed queue) is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConsumerState {
    /// Connecting to the broker.
    Connecting,
    /// Connected and consuming.
    Consuming,
    /// Not connected: the broker is unreachable or dropped the connection.
    BrokerDown { since: u64, reason: String },
    /// Holding nothing, by an operator's pause.
    Paused,
    /// Holding nothing while the target is down.
    WaitingForTarget,
    /// Stopped (shutdown).
    Stopped,
}

/// Settled events per minute, kept for an hour.
const RATE_WINDOW_MINUTES: usize = 60;

#[derive(Default, Clone, Copy)]
struct MinuteCounts {
    minute: u64,
    applied: u64,
    ignored: u64,
    dead_lettered: u64,
    returned: u64,
    coalesced: u64,
}

/// The live state of one provisioner.
pub struct ProvisionerStatus {
    name: String,
    health: Arc<TargetHealth>,
    provisioner: Arc<dyn Provisioner>,
    paused: watch::Sender<bool>,
    in_flight: AtomicUsize,
    /// Unix ms of the last applied event; 0 = none yet.
    last_success_ms: AtomicI64,
    consumers: Mutex<BTreeMap<String, ConsumerState>>,
    minutes: Mutex<VecDeque<MinuteCounts>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

impl ProvisionerStatus {
    pub fn new(
        name: &str,
        health: Arc<TargetHealth>,
        provisioner: Arc<dyn Provisioner>,
        queues: &[String],
    ) -> Self {
        ProvisionerStatus {
            name: name.to_string(),
            health,
            provisioner,
            paused: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            last_success_ms: AtomicI64::new(0),
            consumers: Mutex::new(
                queues
                    .iter()
                    .map(|q| (q.clone(), ConsumerState::Connecting))
                    .collect(),
            ),
            minutes: Mutex::new(VecDeque::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn health(&self) -> &Arc<TargetHealth> {
        &self.health
    }

    pub fn provisioner(&self) -> &Arc<dyn Provisioner> {
        &self.provisioner
    }

    // ----------------------------------------------------------- pause

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Follows pause (`true`) / resume (`false`).
    pub fn subscribe_paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Stops consumption: every held delivery goes back to the broker and
    /// nothing more is taken until [`ProvisionerStatus::resume`]. Returns
    /// whether it was running.
    pub fn pause(&self) -> bool {
        let was = !self.paused.send_replace(true);
        if was {
            tracing::warn!(provisioner = %self.name, "paused by an operator: messages stay in the broker");
        }
        was
    }

    /// Consumption resumes. Returns whether it was paused.
    pub fn resume(&self) -> bool {
        let was = self.paused.send_replace(false);
        if was {
            tracing::info!(provisioner = %self.name, "resumed by an operator");
        }
        was
    }

    // ------------------------------------------------------- consumers

    pub fn set_consumer(&self, queue: &str, state: ConsumerState) {
        lock(&self.consumers).insert(queue.to_string(), state);
    }

    pub fn consumers(&self) -> BTreeMap<String, ConsumerState> {
        lock(&self.consumers).clone()
    }

    // ---------------------------------------------------------- events

    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One event settled.
    pub fn settled(&self, verdict: Verdict) {
        let now = now_ms();
        if verdict == Verdict::Applied {
            self.last_success_ms
                .store(i64::try_from(now).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
        let minute = now / 60_000;
        let mut minutes = lock(&self.minutes);
        if minutes.back().is_none_or(|m| m.minute != minute) {
            minutes.push_back(MinuteCounts {
                minute,
                ..MinuteCounts::default()
            });
            while minutes.len() > RATE_WINDOW_MINUTES {
                minutes.pop_front();
            }
        }
        if let Some(m) = minutes.back_mut() {
            match verdict {
                Verdict::Applied => m.applied += 1,
                Verdict::Ignored => m.ignored += 1,
                Verdict::DeadLettered => m.dead_lettered += 1,
                Verdict::Returned => m.returned += 1,
                Verdict::Coalesced => m.coalesced += 1,
            }
        }
    }

    /// Unix ms of the last applied event.
    pub fn last_success_ms(&self) -> Option<u64> {
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => u64::try_from(ms).ok(),
        }
    }

    /// Events per minute over the last hour, oldest first, one entry per
    /// minute (minutes without events included).
    pub fn per_minute(&self) -> Vec<MinuteRate> {
        let now = now_ms() / 60_000;
        let minutes = lock(&self.minutes);
        (0..RATE_WINDOW_MINUTES as u64)
            .rev()
            .map(|ago| {
                let minute = now.saturating_sub(ago);
                let m = minutes
                    .iter()
                    .find(|m| m.minute == minute)
                    .copied()
                    .unwrap_or(MinuteCounts {
                        minute,
                        ..MinuteCounts::default()
                    });
                MinuteRate {
                    minute_start_ms: m.minute * 60_000,
                    applied: m.applied,
                    ignored: m.ignored,
                    dead_lettered: m.dead_lettered,
                    returned: m.returned,
                    coalesced: m.coalesced,
                }
            })
            .collect()
    }

    // ------------------------------------------------------- readiness

    /// Why this provisioner is not ready (consuming, with its target
    /// answering), or nothing.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.is_paused() {
            why.push("paused by an operator".to_string());
        }
        if let TargetState::Down { since, reason } = self.health.state() {
            why.push(format!(
                "target down since {} ({reason})",
                rfc3339(unix_ms(since))
            ));
        }
        for (queue, state) in self.consumers() {
            match state {
                ConsumerState::Consuming
                | ConsumerState::Paused
                | ConsumerState::WaitingForTarget => {}
                ConsumerState::Connecting => why.push(format!("`{queue}`: connecting")),
                ConsumerState::BrokerDown { since, reason } => why.push(format!(
                    "`{queue}`: broker down since {} ({reason})",
                    rfc3339(since)
                )),
                ConsumerState::Stopped => why.push(format!("`{queue}`: stopped")),
            }
        }
        why
    }
}

/// Events settled in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinuteRate {
    pub minute_start_ms: u64,
    pub applied: u64,
    pub ignored: u64,
    pub dead_lettered: u64,
    pub returned: u64,
    /// Acknowledged with a later event of the subject (coalesced into it).
    pub coalesced: u64,
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Every provisioner's status, as the metrics read it at each scrape.
pub struct StatusSamples(pub Vec<Arc<ProvisionerStatus>>);

impl SampleSource for StatusSamples {
    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for s in &self.0 {
            let labels = vec![("provisioner", s.name.clone())];
            let stats = s.provisioner.stats();
            let mut push = |name, help, kind, value: f64| {
                out.push(Sample {
                    name,
                    help,
                    kind,
                    labels: labels.clone(),
                    value,
                })
            };
            push(
                "target_up",
                "1 while the target answers, 0 while it is down (the circuit breaker open or an outage detected)",
                SampleKind::Gauge,
                if s.health.is_up() { 1.0 } else { 0.0 },
            );
            push(
                "paused",
                "1 while an operator has paused consumption",
                SampleKind::Gauge,
                if s.is_paused() { 1.0 } else { 0.0 },
            );
            push(
                "in_flight",
                "Events being applied now",
                SampleKind::Gauge,
                s.in_flight() as f64,
            );
            push(
                "account_cache_hits",
                "Account ID look-ups answered by the cache",
                SampleKind::Counter,
                stats.account_cache_hits as f64,
            );
            push(
                "account_cache_misses",
                "Account ID look-ups the cache could not answer",
                SampleKind::Counter,
                stats.account_cache_misses as f64,
            );
            push(
                "rate_limit_wait_seconds",
                "Time calls waited for the configured rate limits and adaptive pacing",
                SampleKind::Counter,
                stats.rate_limit_wait.as_secs_f64(),
            );
            if let Some(pace) = s.provisioner.pacing() {
                let now = pace.snapshot();
                push(
                    "pacing_rate",
                    "Calls per second adaptive pacing allows now; 0 while nothing paces the calls (no rate limit configured and no throttling seen)",
                    SampleKind::Gauge,
                    now.rate.unwrap_or(0.0),
                );
                push(
                    "pacing_concurrency",
                    "Events each consumer of the provisioner applies at once now (adaptive pacing, at most `concurrency`)",
                    SampleKind::Gauge,
                    now.concurrency as f64,
                );
                push(
                    "target_throttled",
                    "Calls the target throttled (429, or a transient answer with Retry-After)",
                    SampleKind::Counter,
                    now.throttled as f64,
                );
            }
        }
        out
    }
}

/// How long ago a Unix-ms instant was.
pub fn age(ms: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(ms))
}
