//! Hostile subjects and attributes reach the target only as encoded data:
//! each lands in exactly one path segment (or one JSON string), and no
//! request goes to any other path.

use provisioner::worker::Verdict;
use serde_json::json;

use crate::support::*;

/// Hostile mail addresses (the example's match value is the mail; the mock
/// target wants something with an `@`).
fn hostile_values() -> Vec<String> {
    [
        "../admin".to_string(),
        "a/b?c#d".into(),
        "\" or \"1\"=\"1".into(),
        "%2e%2e".into(),
        "x".repeat(10 * 1024),
        "jörg.müller".into(),
        "a b&c=d;e".into(),
    ]
    .into_iter()
    .map(|v| format!("{v}@exämple.edu"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_reach_the_target_only_as_encoded_data() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    let values = hostile_values();
    for (i, v) in values.iter().enumerate() {
        h.publish(json!({"action": "add", "group": USERS, "subject": format!("s{i}"),
            "attributes": {"mail": [v], "givenName": [v], "sn": ["}\", \"admin\": true, \"x\": \""]}}))
            .await;
    }
    let outcomes = h.outcomes(values.len()).await;
    assert!(
        outcomes.iter().all(|o| o.verdict == Verdict::Applied),
        "{outcomes:#?}"
    );

    let reqs = h.mock.requests();
    for r in &reqs {
        let segments: Vec<&str> = r.path.split('/').collect();
        // "/users" or "/users/<one segment>": nothing else, and no query smuggled in.
        assert!(
            r.path == "/users" || (segments.len() == 3 && segments[1] == "users"),
            "request to an unexpected path: {} {}",
            r.method,
            &r.path[..r.path.len().min(120)]
        );
        assert_eq!(
            r.query,
            None,
            "no query: {}",
            &r.path[..r.path.len().min(120)]
        );
    }
    for v in &values {
        let lower = v.to_lowercase();
        // The look-up carries the value as one percent-encoded segment...
        let lookup = reqs
            .iter()
            .find(|r| r.method == "GET" && r.decoded_path() == format!("/users/{lower}"))
            .unwrap_or_else(|| panic!("no look-up for {}", &lower[..lower.len().min(40)]));
        assert!(
            !lookup.path[7..].contains('/'),
            "encoded: {}",
            &lookup.path[..lookup.path.len().min(80)]
        );
        // ...and the create carries it, whole, as JSON strings.
        let created = h
            .mock
            .user(&lower)
            .unwrap_or_else(|| panic!("user {} created", &lower[..lower.len().min(40)]));
        assert_eq!(&created.first_name, v);
        assert_eq!(created.last_name, "}\", \"admin\": true, \"x\": \"");
    }
    let creates: Vec<_> = reqs.iter().filter(|r| r.method == "POST").collect();
    for c in creates {
        let body = c.body.as_ref().unwrap();
        assert_eq!(
            body.as_object().unwrap().len(),
            2,
            "no smuggled keys: {body}"
        );
        assert_eq!(
            body["user_info"].as_object().unwrap().len(),
            3,
            "no smuggled keys: {body}"
        );
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_would_be_a_dot_segment_is_refused_not_sent() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    h.publish(
        json!({"action": "add", "group": USERS, "subject": "dots", "attributes": {"mail": [".."]}}),
    )
    .await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::DeadLettered, "{o:?}");
    assert!(
        h.mock.requests().is_empty(),
        "nothing sent: {:?}",
        h.mock.request_lines()
    );
    h.cleanup().await;
}
