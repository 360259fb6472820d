//! What the worker believes about one target: up, or down since when and why.
//!
//! Down is decided two ways: a circuit breaker over recent attempts (most of
//! them failing transiently), or an event that spent its retry budget while
//! no other event was served. While a target is down its consumers hold no
//! delivery at all (everything goes back to the broker) and one prober asks
//! the target, with growing intervals, whether it answers again; the first
//! answer brings it back up. A transient failure therefore parks an event only
//! when the target demonstrably serves others (see [`TargetHealth::served_since`]):
//! an outage of any length parks nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

/// When a target counts as down and how it is probed then.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Attempts remembered by the breaker.
    pub window: usize,
    /// Fewest attempts in the window before the breaker may open.
    pub min_samples: usize,
    /// Share of transient failures in the window that opens the breaker.
    pub failure_ratio: f64,
    /// First wait before probing a target that went down.
    pub first_probe: Duration,
    /// Longest wait between probes; the wait doubles up to this while the
    /// target stays down, and returns to `first_probe` once an event is
    /// served again (so a target that answers probes but fails every event
    /// is not hammered at the shortest interval).
    pub max_probe_interval: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            window: 20,
            min_samples: 10,
            failure_ratio: 0.8,
            first_probe: Duration::from_secs(5),
            max_probe_interval: Duration::from_secs(60),
        }
    }
}

/// A snapshot of a target's state, for logs and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Up,
    Down {
        /// Wall-clock time the target went down.
        since: SystemTime,
        /// Why: the breaker's numbers or the event that ran out of budget,
        /// then the last probe's answer.
        reason: String,
    },
}

struct Down {
    since: SystemTime,
    reason: String,
    next_probe: Instant,
}

struct Inner {
    recent: VecDeque<bool>,
    down: Option<Down>,
    interval: Duration,
    last_served: Option<Instant>,
    probing: bool,
}

/// One per provisioner, shared by its consumers (one per partition) and its
/// prober. Every method takes the lock only for bookkeeping, never across an
/// `.await`.
pub struct TargetHealth {
    policy: HealthPolicy,
    inner: Mutex<Inner>,
    up: watch::Sender<bool>,
}

impl TargetHealth {
    pub fn new(policy: HealthPolicy) -> Self {
        let interval = policy.first_probe;
        TargetHealth {
            policy,
            inner: Mutex::new(Inner {
                recent: VecDeque::new(),
                down: None,
                interval,
                last_served: None,
                probing: false,
            }),
            up: watch::Sender::new(true),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Bookkeeping only: a panic elsewhere cannot leave it half-written
        // in a way that matters more than a lost sample.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    pub fn state(&self) -> TargetState {
        match &self.lock().down {
            None => TargetState::Up,
            Some(d) => TargetState::Down {
                since: d.since,
                reason: d.reason.clone(),
            },
        }
    }

    /// Follows up (`true`) / down (`false`) changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Records how one attempt of an event ended: `transient_failure` or not
    /// (a success and a permanent failure both show the target answering).
    /// Opens the breaker, which means down, when most recent attempts failed.
    pub fn record_attempt(&self, transient_failure: bool) {
        let mut s = self.lock();
        if s.down.is_some() {
            return;
        }
        s.recent.push_back(transient_failure);
        while s.recent.len() > self.policy.window {
            s.recent.pop_front();
        }
        let failures = s.recent.iter().filter(|f| **f).count();
        if s.recent.len() >= self.policy.min_samples
            && failures as f64 >= self.policy.failure_ratio * s.recent.len() as f64
        {
            let reason = format!(
                "{failures} of the last {} attempts failed transiently",
                s.recent.len()
            );
            self.go_down(&mut s, reason);
        }
    }

    /// An event was served: applied with at least one call, or refused by the
    /// target with an answer. Proof that the target works, so failures of
    /// other events since then are theirs, not an outage.
    pub fn served(&self) {
        let mut s = self.lock();
        s.last_served = Some(Instant::now());
        s.interval = self.policy.first_probe;
    }

    /// Whether some event was served after `instant`.
    pub fn served_since(&self, instant: Instant) -> bool {
        self.lock().last_served.is_some_and(|t| t > instant)
    }

    /// Declares the target down (an event ran out of its retry budget while
    /// nothing else was served).
    pub fn mark_down(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        if s.down.is_none() {
            self.go_down(&mut s, reason.into());
        }
    }

    fn go_down(&self, s: &mut Inner, reason: String) {
        let wait = s.interval;
        s.down = Some(Down {
            since: SystemTime::now(),
            reason: reason.clone(),
            next_probe: Instant::now() + wait,
        });
        s.recent.clear();
        tracing::warn!(
            %reason,
            probe_in_s = wait.as_secs_f64(),
            "target down: deliveries go back to the broker until it answers again"
        );
        self.up.send_replace(false);
    }

    /// When the next probe is due; `None` while up.
    pub fn next_probe_at(&self) -> Option<Instant> {
        self.lock().down.as_ref().map(|d| d.next_probe)
    }

    /// Takes the one probe slot, if the target is down, the probe is due and
    /// no other probe runs. However the probe ends — answered, failed,
    /// aborted, panicked — the slot is released (see [`ProbeGuard`]).
    pub fn begin_probe(self: &Arc<Self>) -> Option<ProbeGuard> {
        let mut s = self.lock();
        let due = s
            .down
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.next_probe);
        if !due || s.probing {
            return None;
        }
        s.probing = true;
        Some(ProbeGuard {
            health: self.clone(),
            settled: false,
        })
    }

    fn end_probe(&self, answered: Result<(), String>) {
        let mut s = self.lock();
        s.probing = false;
        match answered {
            Ok(()) => {
                // Prepared for a relapse: a target that answers probes but
                // fails events is probed less and less often, until an
                // event is served again.
                s.interval = (s.interval * 2).min(self.policy.max_probe_interval);
                if let Some(d) = s.down.take() {
                    let down_for = SystemTime::now()
                        .duration_since(d.since)
                        .unwrap_or_default();
                    tracing::info!(
                        down_for_s = down_for.as_secs(),
                        "target answers again; consuming"
                    );
                }
                s.recent.clear();
                self.up.send_replace(true);
            }
            Err(why) => {
                let interval = (s.interval * 2).min(self.policy.max_probe_interval);
                s.interval = interval;
                if let Some(d) = s.down.as_mut() {
                    d.next_probe = Instant::now() + interval;
                    d.reason = format!("{}; last probe: {why}", first_clause(&d.reason));
                }
                tracing::warn!(
                    probe = %why,
                    next_probe_in_s = interval.as_secs_f64(),
                    "target still down"
                );
            }
        }
    }
}

/// The reason a target went down, without earlier probe answers appended.
fn first_clause(reason: &str) -> &str {
    reason.split("; last probe: ").next().unwrap_or(reason)
}

/// The one running probe. Dropped without a verdict (its task aborted or
/// panicked), it counts as a failed probe: the slot is free again and the
/// next probe is scheduled, so the target can never stay stuck half-probed.
pub struct ProbeGuard {
    health: Arc<TargetHealth>,
    settled: bool,
}

impl ProbeGuard {
    /// The target answered.
    pub fn answered(mut self) {
        self.settled = true;
        self.health.end_probe(Ok(()));
    }

    /// The target did not answer (a transient failure).
    pub fn failed(mut self, why: impl Into<String>) {
        self.settled = true;
        self.health.end_probe(Err(why.into()));
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.health
                .end_probe(Err("the probe ended without an answer".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            window: 10,
            min_samples: 5,
            failure_ratio: 0.8,
            first_probe: Duration::from_secs(10),
            max_probe_interval: Duration::from_secs(40),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn mostly_failing_attempts_take_it_down_and_an_answered_probe_brings_it_back() {
        let h = Arc::new(TargetHealth::new(policy()));
        for _ in 0..4 {
            h.record_attempt(true);
        }
        assert!(h.is_up(), "too few samples");
        h.record_attempt(true);
        assert!(!h.is_up());
        assert!(matches!(h.state(), TargetState::Down { .. }));
        assert!(
            h.begin_probe().is_none(),
            "not due before the first interval"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = h.begin_probe().expect("probe due");
        assert!(h.begin_probe().is_none(), "one probe at a time");
        probe.failed("timeout");
        assert!(!h.is_up());
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(h.begin_probe().is_none(), "interval doubled to 20 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        h.begin_probe().expect("probe due").answered();
        assert!(h.is_up());
        assert_eq!(h.state(), TargetState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_or_panicking_probe_releases_its_slot() {
        let h = Arc::new(TargetHealth::new(policy()));
        h.mark_down("test");
        tokio::time::advance(Duration::from_secs(10)).await;
        // A probe task aborted mid-call: its guard is dropped with the task.
        let guard = h.begin_probe().expect("due");
        let task = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        task.abort();
        let _ = task.await;
        tokio::time::advance(Duration::from_secs(20)).await;
        // A probe task that panics.
        let guard = h.begin_probe().expect("slot released after abort");
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("probe bug");
        });
        assert!(task.await.is_err());
        tokio::time::advance(Duration::from_secs(40)).await;
        h.begin_probe()
            .expect("slot released after a panic")
            .answered();
        assert!(h.is_up());
    }

    #[tokio::test(start_paused = true)]
    async fn served_since_tells_an_outage_from_a_failing_event() {
        let h = TargetHealth::new(policy());
        let first_failure = Instant::now();
        assert!(!h.served_since(first_failure));
        tokio::time::advance(Duration::from_millis(1)).await;
        h.served();
        assert!(h.served_since(first_failure));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!h.served_since(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_interval_keeps_growing_until_an_event_is_served() {
        let h = Arc::new(TargetHealth::new(policy()));
        h.mark_down("first");
        tokio::time::advance(Duration::from_secs(10)).await;
        h.begin_probe().expect("due").answered();
        // It answers probes but fails events: the next outage waits longer.
        h.mark_down("again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.begin_probe().is_none(), "interval not reset by a probe");
        tokio::time::advance(Duration::from_secs(10)).await;
        h.begin_probe().expect("due").answered();
        // An event is served: the next outage is probed soon again.
        h.served();
        h.mark_down("third");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.begin_probe().is_some(), "interval back to the first");
    }
}
