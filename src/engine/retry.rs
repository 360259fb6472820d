//! Retries of transient failures: exponential backoff with "equal jitter"
//! (half the ceiling fixed, half random),
//! honouring the target's `Retry-After`, within a budget of attempts and
//! total time. Runs on tokio time, so paused-clock tests drive it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{ApplyError, Outcome};
use crate::config::RetryPolicy;

/// How an event's attempts ended.
#[derive(Debug)]
pub struct Attempts {
    pub result: Result<Outcome, ApplyError>,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Sum of the API calls of every attempt.
    pub api_calls: u32,
    /// When the first transient failure happened, if one did: the start of
    /// the window in which other events must have been served for this
    /// event's failure to count as its own rather than an outage.
    pub first_transient_failure: Option<Instant>,
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): a random
/// duration between half and all of `initial * 2^(attempt-1)`, capped, but
/// never shorter than the target's `Retry-After`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let ceiling = exp.min(policy.max_backoff);
    // Equal jitter: the floor of half the ceiling keeps retries backing off;
    // the random half spreads events that failed together.
    let half = ceiling / 2;
    let jitter = if half.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
    };
    let wait = half + jitter;
    match retry_after {
        Some(ra) if ra > wait => ra,
        _ => wait,
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the budget ends.
/// The time budget counts from `since` — when the message was received, so
/// that time spent waiting behind earlier events of the same subject counts
/// too (the broker's acknowledgement timeout does). `on_retry` is told about
/// each transient failure before the wait.
pub async fn with_retries<F, Fut>(
    policy: &RetryPolicy,
    since: Instant,
    mut attempt: F,
    mut on_retry: impl FnMut(u32, &ApplyError, Duration),
) -> Attempts
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Outcome, ApplyError>>,
{
    let started = since;
    let mut n = 0;
    let mut api_calls = 0;
    let mut first_transient_failure = None;
    loop {
        n += 1;
        let result = attempt().await;
        match &result {
            Ok(o) => api_calls += o.api_calls,
            Err(e) => api_calls += e.api_calls,
        }
        let err = match &result {
            Err(e) if e.is_transient() => e,
            _ => {
                return Attempts {
                    result,
                    attempts: n,
                    api_calls,
                    first_transient_failure,
                }
            }
        };
        first_transient_failure.get_or_insert_with(Instant::now);
        let wait = backoff(policy, n, err.retry_after());
        let out_of_budget =
            n >= policy.max_attempts || started.elapsed() + wait > policy.max_elapsed;
        if out_of_budget {
            return Attempts {
                result,
                attempts: n,
                api_calls,
                first_transient_failure,
            };
        }
        on_retry(n, err, wait);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OutcomeStatus;
    use crate::target::TargetError;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(600),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            probe_first: Duration::from_secs(5),
            probe_max: Duration::from_secs(60),
        }
    }

    fn transient(retry_after: Option<Duration>) -> ApplyError {
        let mut error = TargetError::from_status("op", 503, "", None);
        error.retry_after = retry_after;
        ApplyError {
            error,
            api_calls: 1,
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = policy();
        for _ in 0..50 {
            let b1 = backoff(&p, 1, None);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = backoff(&p, 3, None);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b10 = backoff(&p, 10, None);
            assert!(b10 <= Duration::from_secs(2), "{b10:?}");
        }
        assert!(backoff(&p, 1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let r = with_retries(
            &policy(),
            Instant::now(),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(transient(Some(Duration::from_secs(2))))
                } else {
                    Ok(Outcome {
                        status: OutcomeStatus::Applied,
                        detail: String::new(),
                        api_calls: 1,
                    })
                }
            },
            |_, _, _| {},
        )
        .await;
        assert!(r.result.is_ok());
        assert_eq!(r.attempts, 3);
        assert_eq!(r.api_calls, 3);
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "Retry-After honoured twice"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried_and_budget_ends_transients() {
        let r = with_retries(
            &policy(),
            Instant::now(),
            || async {
                Err(ApplyError {
                    error: TargetError::permanent("bad request"),
                    api_calls: 1,
                })
            },
            |_, _, _| {},
        )
        .await;
        assert_eq!(r.attempts, 1);
        let mut retries = 0;
        let r = with_retries(
            &policy(),
            Instant::now(),
            || async { Err(transient(None)) },
            |_, _, _| retries += 1,
        )
        .await;
        assert_eq!(r.attempts, 5);
        assert_eq!(retries, 4);
        assert!(r.result.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn time_waiting_before_the_first_attempt_counts_against_the_budget() {
        let p = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            probe_first: Duration::from_secs(5),
            probe_max: Duration::from_secs(60),
        };
        let received = Instant::now();
        // The event waited 55 s behind an earlier one of its subject.
        tokio::time::advance(Duration::from_secs(55)).await;
        let r = with_retries(
            &p,
            received,
            || async { Err(transient(None)) },
            |_, _, _| {},
        )
        .await;
        assert_eq!(
            r.attempts, 1,
            "no room for a 5-10 s backoff within 60 s of receipt"
        );
    }
}
