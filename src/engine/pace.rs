//! Spacing of API calls (`account_sync_rate_limit_ms`,
//! `member_sync_rate_limit_ms`): each call reserves the next free slot, one
//! period after the previous slot, and sleeps until it.
//!
//! Slots are reserved when a call asks, not when its sleep ends. A limiter
//! that counts from the moment a call actually starts (GCRA checked after
//! waking, as `governor`'s `check` is used) loses every late wake-up: tokio
//! rounds each sleep up to the next millisecond and wakes a little after
//! it, so a 10 ms limit gave about 11 ms between calls, 10 % below the
//! rate asked for. Driven by tokio's clock, so paused-time tests control it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most one call per period, on average exactly one.
pub struct Pacer {
    period: Duration,
    /// When the next call may start.
    next: Mutex<Instant>,
}

impl Pacer {
    /// `None` for a zero period (no limit).
    pub fn new(period: Duration) -> Option<Pacer> {
        if period.is_zero() {
            return None;
        }
        Some(Pacer {
            period,
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for the next slot; returns how long it waited. A call that is
    /// cancelled while waiting leaves its slot unused: the pace is then
    /// slower, never faster.
    pub async fn wait(&self) -> Duration {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(now);
            *next = later(slot, self.period);
            slot
        };
        tokio::time::sleep_until(slot).await;
        slot - now
    }
}

/// `at + d`, or as late as the clock can tell when `d` is too long to add
/// (a limit of 2^64 ms): such a wait never ends, and never panics.
pub(super) fn later(at: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_period_even_when_concurrent() {
        let pacer = Arc::new(Pacer::new(Duration::from_millis(250)).expect("period"));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = pacer.clone();
            tasks.push(tokio::spawn(async move {
                p.wait().await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        assert_eq!(times[0], Duration::ZERO);
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(250), "{times:?}");
        }
    }

    /// A call that starts late does not push the later slots back. tokio's
    /// timer fires on whole milliseconds (paused or not), so with a period
    /// of 2.5 ms every other call wakes up to half a millisecond late; over
    /// 100 calls the pace is still one per 2.5 ms, not one per 3.
    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_do_not_slow_the_pace() {
        let pacer = Pacer::new(Duration::from_micros(2_500)).expect("period");
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            pacer.wait().await;
        }
        // The 100th slot is at 99 × 2.5 ms = 247.5 ms, woken at 248 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_micros(247_500) && elapsed <= Duration::from_millis(249),
            "{elapsed:?}"
        );
    }

    /// Calls that come rarely are not held: a slot is never in the past.
    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_lets_the_next_call_go_at_once() {
        let pacer = Pacer::new(Duration::from_millis(10)).expect("period");
        pacer.wait().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(pacer.wait().await, Duration::ZERO);
        assert_eq!(pacer.wait().await, Duration::from_millis(10));
    }

    /// A period too long to add to a clock reading holds the next call
    /// (for ever, in effect) instead of panicking.
    #[tokio::test(start_paused = true)]
    async fn a_period_of_2_to_the_64_ms_holds_the_next_call_without_panicking() {
        let pacer = Pacer::new(Duration::from_millis(u64::MAX)).expect("period");
        assert_eq!(pacer.wait().await, Duration::ZERO);
        let next = tokio::time::timeout(Duration::from_secs(365 * 24 * 3600), pacer.wait()).await;
        assert!(next.is_err(), "the second call went within a year");
    }

    #[test]
    fn zero_period_means_no_limit() {
        assert!(Pacer::new(Duration::ZERO).is_none());
    }
}
