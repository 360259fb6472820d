//! Adaptive pacing in the running worker: after the target throttles (429),
//! the consumer applies fewer events at once, and the event that was
//! throttled is still applied. The arithmetic and the convergence are in
//! the engine's paused-clock tests (`engine::tests::adaptive`).

use std::time::Duration;

use provisioner::worker::Verdict;
use serde_json::{json, Value};

use crate::support::mock_rest::MockTarget;
use crate::support::*;

const USERS: &str = "app:example:users";

fn add(subject: &str) -> Value {
    json!({"action": "add", "group": USERS, "subject": subject,
        "attributes": {"mail": [format!("{subject}@example.edu")], "givenName": ["G"], "sn": ["S"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_the_consumer_applies_fewer_events_at_once() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("pacing");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "concurrency = 4\ntimeout_s = 1\nretry = { initial_backoff_ms = 20, max_backoff_s = 1 }\npacing = { decrease = 0.25, min_rate = 1000.0 }",
    );
    let mut h = Harness::prepare(mock, queue, &text, amqp_config()).await;
    let status = h.statuses().remove(0);
    let Some(pace) = status.provisioner().pacing() else {
        panic!("adaptive pacing is on by default");
    };
    assert_eq!(pace.snapshot().concurrency, 4);
    h.start_worker();

    h.mock.fail_next(1, 429);
    h.publish(add("first")).await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
    assert_eq!(o.attempts, 2, "retried after the 429");
    let after = pace.snapshot();
    assert_eq!(after.throttled, 1, "{after:?}");
    // 4 × 0.25; the successes since (a few ms of them) add little.
    assert_eq!(after.concurrency, 1, "{after:?}");

    // Four events of different subjects; the first call hangs (until the
    // 1 s timeout). With 4 at once, the others would start meanwhile.
    let before = h.mock.requests().len();
    h.mock.hang_next(1);
    for s in ["pa", "pb", "pc", "pd"] {
        h.publish(add(s)).await;
    }
    assert!(
        h.mock
            .wait_for_requests(before + 1, Duration::from_secs(10))
            .await,
        "an event started"
    );
    assert!(
        !h.mock
            .wait_for_requests(before + 2, Duration::from_millis(700))
            .await,
        "a second event started while one was running: {:?}",
        h.mock.request_lines()
    );
    let outcomes = h.outcomes(4).await;
    assert!(
        outcomes.iter().all(|o| o.verdict == Verdict::Applied),
        "{outcomes:#?}"
    );
    h.cleanup().await;
}
