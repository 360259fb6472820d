//! Adaptive pacing of one target (`[pacing]`): additive increase,
//! multiplicative decrease (AIMD) of the call rate and of the events applied
//! at once.
//!
//! When the target throttles (a 429, or a transient answer with
//! `Retry-After`: [`TargetError::is_throttled`]) the allowed rate and the
//! concurrency are multiplied by `decrease`, and every call waits until the
//! `Retry-After` has passed. Only a call that started a second or more
//! after the last decrease counts for another: one sent earlier was sent at
//! the old pace (or into a window the target still counts at the old pace),
//! so it says nothing new; without this rule the answers to the calls in
//! flight would each cut the rate and drive it to the floor. While
//! calls succeed the rate grows by `increase` calls/s, and the concurrency by
//! one, for each second of successful calls, never above the configured
//! limits. The rate grows only while the calls come near it (at least half
//! of it in the last second): a rate far above what is used would let the
//! next burst through unpaced, and would take many decreases to come down.
//!
//! Until the target first throttles, a target without a configured rate
//! limit is not paced at all. Time is tokio time, so paused-clock tests
//! drive it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::pace::later;
use crate::config::PacingPolicy;
use crate::target::TargetError;

/// What pacing is allowed right now, for the metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceSnapshot {
    /// Calls per second allowed; `None` while nothing paces the calls.
    pub rate: Option<f64>,
    /// Events applied at once (per consumed queue).
    pub concurrency: usize,
    /// Calls the target throttled since the worker started.
    pub throttled: u64,
}

/// The limits pacing never goes above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceLimits {
    /// The configured rate, calls/s; `None` for none.
    pub max_rate: Option<f64>,
    /// The configured `concurrency`.
    pub max_concurrency: usize,
}

/// Calls started over the last second, in tenths: enough to tell the rate
/// the target has been seeing, in fixed memory whatever the rate.
#[derive(Debug, Clone)]
struct RecentStarts {
    origin: Instant,
    /// Index (in tenths of a second since `origin`) of the newest bucket.
    head: u64,
    buckets: [u64; 10],
}

const BUCKET: Duration = Duration::from_millis(100);

impl RecentStarts {
    fn new(origin: Instant) -> Self {
        RecentStarts {
            origin,
            head: 0,
            buckets: [0; 10],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let tenths = now.saturating_duration_since(self.origin).as_millis() / BUCKET.as_millis();
        u64::try_from(tenths).unwrap_or(u64::MAX)
    }

    /// Moves the window up to `now`, emptying the buckets it leaves behind.
    fn advance(&mut self, now: Instant) {
        let index = self.index(now);
        if index <= self.head {
            return;
        }
        let stale = (index - self.head).min(10);
        for k in 1..=stale {
            let slot = (self.head + k) % 10;
            self.buckets[slot as usize] = 0;
        }
        self.head = index;
    }

    fn record(&mut self, now: Instant) {
        self.advance(now);
        self.buckets[(self.head % 10) as usize] += 1;
    }

    /// Calls started within the last second (the current tenth included).
    fn per_second(&mut self, now: Instant) -> f64 {
        self.advance(now);
        self.buckets.iter().sum::<u64>() as f64
    }
}

/// A throttled call cuts the pace only if it started this long after the
/// last cut: calls already in flight were sent at the old pace, and a target
/// that counts calls per second still remembers, for up to a second, the
/// calls sent before the cut. Without this, one episode of throttling would
/// cut the pace over and over, down to the floor.
const BETWEEN_DECREASES: Duration = Duration::from_secs(1);

/// The arithmetic of AIMD, apart from waiting: every method takes `now`.
#[derive(Debug, Clone)]
struct PaceState {
    policy: PacingPolicy,
    limits: PaceLimits,
    /// Calls/s allowed; `None`: not paced.
    rate: Option<f64>,
    /// Fractional, so that the additive increase can count partial seconds;
    /// what is allowed is its integer part.
    concurrency: f64,
    /// The earliest start of the next call.
    next_slot: Instant,
    /// No call starts before this (the target's `Retry-After`).
    hold_until: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Up to when the additive increase has been counted.
    grown_until: Option<Instant>,
    recent: RecentStarts,
}

impl PaceState {
    fn new(policy: PacingPolicy, limits: PaceLimits, now: Instant) -> Self {
        PaceState {
            policy,
            limits,
            rate: limits.max_rate,
            concurrency: limits.max_concurrency.max(1) as f64,
            next_slot: now,
            hold_until: None,
            last_decrease: None,
            grown_until: None,
            recent: RecentStarts::new(now),
        }
    }

    fn concurrency(&self) -> usize {
        (self.concurrency.floor() as usize).clamp(1, self.limits.max_concurrency.max(1))
    }

    /// When a call asking now may start: `Ok` reserves the slot (and counts
    /// the start), `Err` says until when to wait before asking again.
    fn admit(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(hold) = self.hold_until {
            if hold > now {
                return Err(hold);
            }
            self.hold_until = None;
        }
        if let Some(rate) = self.rate {
            if self.next_slot > now {
                return Err(self.next_slot);
            }
            // Burst 1, as the fixed limits: an idle spell earns no burst,
            // but a call that woke a little late for its slot does not push
            // every later one back.
            let spacing = interval(rate);
            let base = if now.saturating_duration_since(self.next_slot) < spacing {
                self.next_slot
            } else {
                now
            };
            self.next_slot = later(base, spacing);
        }
        self.recent.record(now);
        Ok(())
    }

    /// The target throttled a call that started at `started`. Returns
    /// whether the pace was cut (at most once per round trip).
    fn throttled(&mut self, started: Instant, retry_after: Option<Duration>, now: Instant) -> bool {
        if let Some(wait) = retry_after {
            let until = later(now, wait);
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
        if self
            .last_decrease
            .is_some_and(|d| started < d + BETWEEN_DECREASES)
        {
            return false;
        }
        let seen = self.recent.per_second(now);
        // The rate the target was refusing: the allowed one, or what was
        // sent when that was less (or nothing paced the calls).
        let base = match self.rate {
            Some(rate) if seen > 0.0 => rate.min(seen),
            Some(rate) => rate,
            None => seen,
        };
        let cut = (base * self.policy.decrease).max(self.policy.min_rate);
        let rate = match self.limits.max_rate {
            Some(max) => cut.min(max),
            None => cut,
        };
        self.rate = Some(rate);
        self.concurrency = (self.concurrency * self.policy.decrease).max(1.0);
        self.next_slot = self.next_slot.max(now + interval(rate));
        self.last_decrease = Some(now);
        self.grown_until = Some(now);
        true
    }

    /// A call succeeded: the additive increase for the time since the last
    /// one counted (at most a second, so an idle spell earns nothing).
    fn succeeded(&mut self, now: Instant) {
        let since = self.grown_until.map_or(Duration::ZERO, |g| {
            now.saturating_duration_since(g).min(Duration::from_secs(1))
        });
        self.grown_until = Some(now);
        let seconds = since.as_secs_f64();
        if seconds == 0.0 {
            return;
        }
        let max_concurrency = self.limits.max_concurrency.max(1) as f64;
        self.concurrency = (self.concurrency + seconds).min(max_concurrency);
        let Some(rate) = self.rate else {
            return;
        };
        let seen = self.recent.per_second(now);
        if seen * 2.0 < rate {
            // The calls do not come near the rate: growing it means nothing.
            return;
        }
        let grown = rate + self.policy.increase * seconds;
        self.rate = Some(match self.limits.max_rate {
            Some(max) => grown.min(max),
            None => grown,
        });
    }
}

/// The spacing of calls at `rate` calls/s.
fn interval(rate: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(1))
}

/// One target's adaptive pace, shared by every call and consumer of its
/// provisioner.
#[derive(Debug)]
pub struct AdaptivePace {
    state: Mutex<PaceState>,
    /// The concurrency, for consumers to follow.
    concurrency: watch::Sender<usize>,
    throttled: AtomicU64,
    /// Longest `Retry-After` honoured for every call: longer ones are the
    /// throttled event's retry's business; holding all calls that long would
    /// hold every delivery past its limit.
    max_hold: Duration,
}

/// A call let through: when it started, and how long it waited for that.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub started: Instant,
    pub waited: Duration,
}

impl AdaptivePace {
    pub fn new(policy: PacingPolicy, limits: PaceLimits, max_hold: Duration) -> Self {
        let state = PaceState::new(policy, limits, Instant::now());
        let concurrency = watch::Sender::new(state.concurrency());
        AdaptivePace {
            state: Mutex::new(state),
            concurrency,
            throttled: AtomicU64::new(0),
            max_hold,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PaceState> {
        // Plain numbers: whatever a panic left is a valid pace.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a call may start.
    pub async fn admit(&self) -> Admission {
        let asked = Instant::now();
        loop {
            let now = Instant::now();
            let verdict = self.lock().admit(now);
            match verdict {
                Ok(()) => {
                    return Admission {
                        started: now,
                        waited: now - asked,
                    }
                }
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// How a call that started at `started` ended.
    pub fn record<T>(&self, started: Instant, result: &Result<T, TargetError>) {
        let now = Instant::now();
        let concurrency = match result {
            Ok(_) => {
                let mut state = self.lock();
                state.succeeded(now);
                state.concurrency()
            }
            Err(e) if e.is_throttled() => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                let hold = e.retry_after.map(|r| r.min(self.max_hold));
                let (cut, rate, concurrency) = {
                    let mut state = self.lock();
                    let cut = state.throttled(started, hold, now);
                    (cut, state.rate, state.concurrency())
                };
                if cut {
                    tracing::info!(
                        rate = rate.unwrap_or(0.0),
                        concurrency,
                        "the target throttles: pace lowered"
                    );
                }
                concurrency
            }
            // Other failures say nothing about the pace.
            Err(_) => return,
        };
        self.concurrency.send_if_modified(|c| {
            let changed = *c != concurrency;
            *c = concurrency;
            changed
        });
    }

    /// Events to apply at once now.
    pub fn concurrency(&self) -> usize {
        *self.concurrency.borrow()
    }

    /// Follows [`AdaptivePace::concurrency`].
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.concurrency.subscribe()
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let state = self.lock();
        PaceSnapshot {
            rate: state.rate,
            concurrency: state.concurrency(),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
