//! Spacing of API calls (`account_sync_rate_limit_ms`,
//! `member_sync_rate_limit_ms`): a `governor` GCRA limiter with burst 1,
//! driven by tokio's clock so that paused-time tests control it.

use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// governor's view of tokio time: time elapsed since the limiter was made.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// At most one call per period.
pub struct Pacer {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
}

impl Pacer {
    /// `None` for a zero period (no limit).
    pub fn new(period: Duration) -> Option<Pacer> {
        let quota = Quota::with_period(period)?;
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        Some(Pacer {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Waits for the next slot; returns how long it waited.
    pub async fn wait(&self) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            match self.limiter.check() {
                Ok(()) => return waited,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
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

    #[test]
    fn zero_period_means_no_limit() {
        assert!(Pacer::new(Duration::ZERO).is_none());
    }
}
