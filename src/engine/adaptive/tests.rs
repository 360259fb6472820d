//! The AIMD arithmetic of [`PaceState`], on instants chosen by the tests.

use super::*;

fn policy(decrease: f64, increase: f64, min_rate: f64) -> PacingPolicy {
    PacingPolicy {
        adaptive: true,
        decrease,
        increase,
        min_rate,
    }
}

fn limits(max_rate: Option<f64>, max_concurrency: usize) -> PaceLimits {
    PaceLimits {
        max_rate,
        max_concurrency,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A state whose target saw `seen` calls over the second before `t0 + 1 s`,
/// which is returned as "now".
fn state_having_seen(
    policy: PacingPolicy,
    limits: PaceLimits,
    rate: Option<f64>,
    seen: u64,
) -> (PaceState, Instant) {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy, limits, t0);
    s.rate = rate;
    for k in 0..seen {
        s.recent.record(t0 + ms(100) + ms(800 * k / seen.max(1)));
    }
    (s, t0 + Duration::from_secs(1))
}

#[test]
fn a_throttle_cuts_rate_and_concurrency_by_the_factor_down_to_the_floors() {
    struct Case {
        what: &'static str,
        decrease: f64,
        min_rate: f64,
        max_rate: Option<f64>,
        rate: Option<f64>,
        seen: u64,
        max_concurrency: usize,
        rate_after: f64,
        concurrency_after: usize,
    }
    let cases = [
        Case {
            what: "at the configured rate",
            decrease: 0.5,
            min_rate: 1.0,
            max_rate: Some(10.0),
            rate: Some(10.0),
            seen: 10,
            max_concurrency: 8,
            rate_after: 5.0,
            concurrency_after: 4,
        },
        Case {
            what: "calls sent below the allowed rate: cut from what was sent",
            decrease: 0.5,
            min_rate: 1.0,
            max_rate: Some(10.0),
            rate: Some(10.0),
            seen: 4,
            max_concurrency: 8,
            rate_after: 2.0,
            concurrency_after: 4,
        },
        Case {
            what: "not paced before: cut from what was sent",
            decrease: 0.7,
            min_rate: 1.0,
            max_rate: None,
            rate: None,
            seen: 40,
            max_concurrency: 8,
            rate_after: 28.0,
            concurrency_after: 5,
        },
        Case {
            what: "nothing seen and not paced: the floor",
            decrease: 0.5,
            min_rate: 2.0,
            max_rate: None,
            rate: None,
            seen: 0,
            max_concurrency: 1,
            rate_after: 2.0,
            concurrency_after: 1,
        },
        Case {
            what: "never below min_rate",
            decrease: 0.5,
            min_rate: 1.0,
            max_rate: None,
            rate: Some(1.5),
            seen: 2,
            max_concurrency: 2,
            rate_after: 1.0,
            concurrency_after: 1,
        },
    ];
    for c in cases {
        let (mut s, now) = state_having_seen(
            policy(c.decrease, 1.0, c.min_rate),
            limits(c.max_rate, c.max_concurrency),
            c.rate,
            c.seen,
        );
        assert!(s.throttled(now, None, now), "{}", c.what);
        let rate = s.rate.unwrap_or(f64::NAN);
        assert!(
            (rate - c.rate_after).abs() < 1e-9,
            "{}: rate {rate}, expected {}",
            c.what,
            c.rate_after
        );
        assert_eq!(s.concurrency(), c.concurrency_after, "{}", c.what);
    }
}

#[test]
fn repeated_throttles_halve_the_concurrency_down_to_one() {
    let (mut s, now) = state_having_seen(policy(0.5, 1.0, 1.0), limits(None, 8), None, 0);
    let mut seen = Vec::new();
    for k in 0..5 {
        let at = now + Duration::from_secs(k);
        s.throttled(at, None, at);
        seen.push(s.concurrency());
    }
    assert_eq!(seen, [4, 2, 1, 1, 1]);
}

#[test]
fn throttles_of_calls_started_before_a_cut_do_not_cut_again() {
    let (mut s, now) = state_having_seen(policy(0.5, 1.0, 1.0), limits(None, 8), Some(16.0), 16);
    let in_flight_since = now - ms(50);
    assert!(s.throttled(in_flight_since, None, now));
    // The answers to the other calls already in flight, and to calls sent
    // while the target still counts the old pace.
    for k in 1..=10 {
        assert!(!s.throttled(in_flight_since, None, now + ms(k)));
        assert!(!s.throttled(now + ms(90 * k), None, now + ms(90 * k + 20)));
    }
    assert_eq!(s.rate, Some(8.0));
    assert_eq!(s.concurrency(), 4);
    // A call sent a second after the cut and throttled cuts again.
    let later = now + ms(1000);
    assert!(s.throttled(later, None, later + ms(20)));
    assert!(s.rate.is_some_and(|r| r < 8.0));
}

#[test]
fn success_adds_increase_per_second_up_to_the_limits() {
    struct Case {
        what: &'static str,
        increase: f64,
        max_rate: Option<f64>,
        rate: f64,
        /// Calls started (and succeeded) per second, evenly.
        calls_per_s: u64,
        seconds: u64,
        rate_after: f64,
    }
    let cases = [
        Case {
            what: "2 s of successes at the allowed rate",
            increase: 1.0,
            max_rate: None,
            rate: 5.0,
            calls_per_s: 5,
            seconds: 2,
            rate_after: 7.0,
        },
        Case {
            what: "a larger increase",
            increase: 2.0,
            max_rate: None,
            rate: 10.0,
            calls_per_s: 10,
            seconds: 2,
            rate_after: 14.0,
        },
        Case {
            what: "never above the configured rate",
            increase: 1.0,
            max_rate: Some(6.0),
            rate: 5.0,
            calls_per_s: 5,
            seconds: 3,
            rate_after: 6.0,
        },
        Case {
            what: "calls far below the rate: no growth",
            increase: 1.0,
            max_rate: None,
            rate: 20.0,
            calls_per_s: 5,
            seconds: 3,
            rate_after: 20.0,
        },
    ];
    for c in cases {
        let origin = Instant::now();
        let mut s = PaceState::new(policy(0.5, c.increase, 1.0), limits(c.max_rate, 8), origin);
        s.rate = Some(c.rate);
        let step = Duration::from_secs(1) / u32::try_from(c.calls_per_s).unwrap();
        // The same pace over the second before.
        for k in 0..c.calls_per_s {
            s.recent.record(origin + step * u32::try_from(k).unwrap());
        }
        let t0 = origin + Duration::from_secs(1) - step;
        s.grown_until = Some(t0);
        let calls = c.calls_per_s * c.seconds;
        for k in 1..=calls {
            let at = t0 + step * u32::try_from(k).unwrap();
            s.recent.record(at);
            s.succeeded(at);
        }
        let rate = s.rate.unwrap_or(f64::NAN);
        assert!(
            (rate - c.rate_after).abs() < 1e-6,
            "{}: rate {rate}, expected {}",
            c.what,
            c.rate_after
        );
    }
}

#[test]
fn concurrency_grows_by_one_per_second_of_successes_up_to_concurrency() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(None, 4), t0);
    s.throttled(t0, None, t0);
    let cut = t0 + Duration::from_secs(1);
    s.throttled(cut, None, cut);
    assert_eq!(s.concurrency(), 1);
    let mut after_each_second = Vec::new();
    for second in 1..=5u32 {
        for tenth in 1..=10u32 {
            let at = cut + Duration::from_secs(u64::from(second - 1)) + ms(100) * tenth;
            s.succeeded(at);
        }
        after_each_second.push(s.concurrency());
    }
    assert_eq!(after_each_second, [2, 3, 4, 4, 4]);
}

#[test]
fn an_idle_spell_earns_at_most_one_second_of_increase() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(None, 8), t0);
    s.rate = Some(5.0);
    s.grown_until = Some(t0);
    let later = t0 + Duration::from_secs(60);
    for k in 0..5 {
        s.recent.record(later - ms(100 * k));
    }
    s.succeeded(later);
    assert_eq!(s.rate, Some(6.0));
}

#[test]
fn retry_after_holds_every_call_until_it_has_passed() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(None, 8), t0);
    assert_eq!(s.admit(t0), Ok(()), "not paced before any throttling");
    s.throttled(t0, Some(Duration::from_secs(2)), t0 + ms(10));
    let hold = t0 + ms(2010);
    assert_eq!(s.admit(t0 + ms(20)), Err(hold));
    // A throttle not counted as a cut still extends the hold.
    s.throttled(t0, Some(Duration::from_secs(3)), t0 + ms(30));
    assert_eq!(s.admit(t0 + ms(40)), Err(t0 + ms(3030)));
    assert_eq!(s.admit(t0 + ms(3030)), Ok(()));
}

/// A hold too long to add to a clock reading (`[retry] max_backoff_s` of
/// 2^64 - 1 lets it through) holds calls without panicking.
#[test]
fn a_hold_of_2_to_the_64_seconds_holds_without_panicking() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(None, 8), t0);
    s.throttled(t0, Some(Duration::from_secs(u64::MAX)), t0);
    let held = s.admit(t0 + Duration::from_secs(365 * 24 * 3600));
    assert!(
        held.is_err_and(|until| until > t0 + Duration::from_secs(365 * 24 * 3600)),
        "{held:?}"
    );
}

#[test]
fn without_a_configured_rate_nothing_is_paced_until_the_target_throttles() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(None, 8), t0);
    for _ in 0..1000 {
        assert_eq!(s.admit(t0), Ok(()));
    }
    assert_eq!(s.rate, None);
    s.throttled(t0, None, t0);
    // 1000 calls in the last second, halved.
    assert_eq!(s.rate, Some(500.0));
    assert!(s.admit(t0 + ms(1)).is_err(), "now paced");
}

#[test]
fn a_paced_call_waits_for_its_slot_and_a_late_one_keeps_the_cadence() {
    let t0 = Instant::now();
    let mut s = PaceState::new(policy(0.5, 1.0, 1.0), limits(Some(10.0), 8), t0);
    assert_eq!(s.admit(t0), Ok(()));
    assert_eq!(s.admit(t0 + ms(50)), Err(t0 + ms(100)));
    // Woken 30 ms late: the next slot is still 200 ms after the start.
    assert_eq!(s.admit(t0 + ms(130)), Ok(()));
    assert_eq!(s.admit(t0 + ms(131)), Err(t0 + ms(200)));
}

#[test]
fn throttled_answers_are_429_or_a_transient_retry_after() {
    let with_retry_after = |status| {
        TargetError::from_status("op", status, "", Some(Duration::from_secs(1))).is_throttled()
    };
    let without = |status| TargetError::from_status("op", status, "", None).is_throttled();
    assert!(without(429));
    assert!(with_retry_after(429));
    assert!(with_retry_after(503));
    assert!(!without(503));
    assert!(!without(500));
    // A permanent refusal is not throttling, whatever it says.
    assert!(!with_retry_after(400));
}
