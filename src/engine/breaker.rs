//! A circuit breaker per provisioner: when most recent attempts against a
//! target failed transiently, stop starting new events for a cool-down, then
//! let one through (half-open) and close again on its success. The broker
//! keeps the events meanwhile; nothing hammers a target that is down.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When the breaker opens and for how long.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Attempts remembered.
    pub window: usize,
    /// Fewest attempts in the window before the breaker may open.
    pub min_samples: usize,
    /// Share of transient failures in the window that opens the breaker.
    pub failure_ratio: f64,
    /// First cool-down; doubled each time a half-open probe fails.
    pub cool_down: Duration,
    /// Longest cool-down.
    pub max_cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            window: 20,
            min_samples: 10,
            failure_ratio: 0.8,
            cool_down: Duration::from_secs(10),
            max_cool_down: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Normal operation.
    Closed,
    /// No new events until the instant.
    Open { until: Instant },
    /// One probe event is running; no others start until it ends.
    HalfOpen,
}

struct Inner {
    recent: VecDeque<bool>,
    state: BreakerState,
    cool_down: Duration,
    probe_running: bool,
}

pub struct CircuitBreaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        let cool_down = policy.cool_down;
        CircuitBreaker {
            policy,
            inner: Mutex::new(Inner {
                recent: VecDeque::new(),
                state: BreakerState::Closed,
                cool_down,
                probe_running: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// How many new events may start now: 0 when open, 1 probe when half-open.
    pub fn admit(&self, wanted: usize) -> usize {
        let mut s = self.lock();
        if let BreakerState::Open { until } = s.state {
            if Instant::now() < until {
                return 0;
            }
            s.state = BreakerState::HalfOpen;
        }
        match s.state {
            BreakerState::Closed => wanted,
            BreakerState::HalfOpen if !s.probe_running && wanted > 0 => 1,
            _ => 0,
        }
    }

    /// Tells the breaker how many of the admitted events really started: a
    /// half-open breaker's probe slot is taken only by an event that runs, so
    /// an unused slot is never lost.
    pub fn started(&self, n: usize) {
        let mut s = self.lock();
        if n > 0 && s.state == BreakerState::HalfOpen {
            s.probe_running = true;
        }
    }

    /// When an open breaker lets a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.lock().state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Records one attempt: `transient_failure` or not (success and permanent
    /// failures both show the target answering).
    pub fn record(&self, transient_failure: bool) {
        let mut s = self.lock();
        match s.state {
            BreakerState::HalfOpen => {
                s.probe_running = false;
                if transient_failure {
                    s.cool_down = (s.cool_down * 2).min(self.policy.max_cool_down);
                    s.state = BreakerState::Open {
                        until: Instant::now() + s.cool_down,
                    };
                    tracing::warn!(
                        cool_down_s = s.cool_down.as_secs(),
                        "circuit breaker: probe failed; open again"
                    );
                } else {
                    s.state = BreakerState::Closed;
                    s.cool_down = self.policy.cool_down;
                    s.recent.clear();
                    tracing::info!("circuit breaker: target answers again; closed");
                }
                return;
            }
            BreakerState::Open { .. } => return,
            BreakerState::Closed => {}
        }
        s.recent.push_back(transient_failure);
        while s.recent.len() > self.policy.window {
            s.recent.pop_front();
        }
        let failures = s.recent.iter().filter(|f| **f).count();
        if s.recent.len() >= self.policy.min_samples
            && failures as f64 >= self.policy.failure_ratio * s.recent.len() as f64
        {
            s.state = BreakerState::Open {
                until: Instant::now() + s.cool_down,
            };
            tracing::warn!(
                failures,
                of = s.recent.len(),
                cool_down_s = s.cool_down.as_secs(),
                "circuit breaker: target failing; pausing new work"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: 10,
            min_samples: 5,
            failure_ratio: 0.8,
            cool_down: Duration::from_secs(10),
            max_cool_down: Duration::from_secs(40),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_mostly_failures_probes_after_cool_down_and_closes_on_success() {
        let b = CircuitBreaker::new(policy());
        for _ in 0..4 {
            b.record(true);
        }
        assert_eq!(b.admit(8), 8, "too few samples to open");
        b.record(true);
        assert_eq!(b.admit(8), 0, "open");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(8), 1, "half-open: one probe");
        assert_eq!(b.admit(8), 1, "a slot not used is still there");
        b.started(1);
        assert_eq!(b.admit(8), 0, "only one probe at a time");
        b.record(true);
        assert_eq!(b.admit(8), 0, "probe failed: open again");
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(b.admit(8), 0, "cool-down doubled to 20 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(8), 1);
        b.started(1);
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(8), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_failures_among_successes_keep_it_closed() {
        let b = CircuitBreaker::new(policy());
        for i in 0..50 {
            b.record(i % 3 == 0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
