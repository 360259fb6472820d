//! Each provisioner option of docs/configuration.md has its documented effect, shown by the
//! exact requests the target receives.

use std::time::Duration;

use provisioner::worker::Verdict;
use serde_json::json;

use crate::support::*;

fn lines(h: &Harness) -> Vec<String> {
    h.mock.request_lines()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_first_looks_up_then_creates_and_a_cached_id_saves_the_lookup() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    h.publish(add(USERS, "jdoe", "JDoe@Example.edu", "John", "Doe"))
        .await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
    assert_eq!(
        lines(&h),
        vec!["GET /users/jdoe%40example.edu", "POST /users"]
    );
    let created = h.mock.requests()[1].body.clone().unwrap();
    assert_eq!(
        created,
        json!({"action": "create", "user_info": {"email": "jdoe@example.edu", "first_name": "John", "last_name": "Doe"}})
    );

    h.mock.clear_requests();
    h.publish(
        json!({"action": "update", "group": USERS, "subject": "jdoe",
        "attributes": {"mail": ["jdoe@example.edu"], "givenName": ["Johnny"], "sn": ["Doe"]}}),
    )
    .await;
    h.outcome().await;
    let id = h.mock.user("jdoe@example.edu").unwrap().id;
    assert_eq!(
        lines(&h),
        vec![format!("PATCH /users/{id}")],
        "cached API ID: no look-up"
    );
    assert_eq!(
        h.mock.user("jdoe@example.edu").unwrap().first_name,
        "Johnny"
    );

    h.mock.clear_requests();
    h.publish(delete(USERS, "jdoe", "jdoe@example.edu")).await;
    h.outcome().await;
    assert_eq!(lines(&h), vec![format!("DELETE /users/{id}")]);
    assert!(h.mock.users().is_empty());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_first_creates_and_falls_back_to_lookup_and_update_on_conflict() {
    let _broker = shared().await;
    let mut h = Harness::start(r#"provision_strategy = "create-first""#).await;
    let existing = h.mock.add_user("old@example.edu", "Old", "Name");
    h.publish(add(USERS, "old", "old@example.edu", "New", "Name"))
        .await;
    h.outcome().await;
    assert_eq!(
        lines(&h),
        vec![
            "POST /users".to_string(),
            "GET /users/old%40example.edu".to_string(),
            format!("PATCH /users/{existing}"),
        ]
    );
    assert_eq!(h.mock.user("old@example.edu").unwrap().first_name, "New");

    h.mock.clear_requests();
    h.publish(add(USERS, "fresh", "fresh@example.edu", "Fresh", "Face"))
        .await;
    h.outcome().await;
    assert_eq!(
        lines(&h),
        vec!["POST /users"],
        "create-first does not look up first"
    );
    assert!(h.mock.user("fresh@example.edu").is_some());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_member_first_adds_without_reading_the_group() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    let uid = h.mock.add_user("a@example.edu", "A", "A");
    let gid = h.mock.add_group("Staff");
    h.publish(add(STAFF, "a", "a@example.edu", "A", "A")).await;
    assert_eq!(h.outcome().await.verdict, Verdict::Applied);
    assert_eq!(
        lines(&h),
        vec![
            "GET /groups".to_string(),
            "GET /users/a%40example.edu".to_string(),
            format!("POST /groups/{gid}/members"),
        ]
    );
    assert_eq!(
        h.mock.requests()[2].body,
        Some(json!({"members": [{"id": uid}]}))
    );
    assert_eq!(h.mock.members("Staff"), vec!["a@example.edu"]);

    h.mock.clear_requests();
    h.publish(delete(STAFF, "a", "a@example.edu")).await;
    h.outcome().await;
    assert_eq!(
        lines(&h),
        vec![format!("DELETE /groups/{gid}/members/{uid}")],
        "group and account IDs cached"
    );
    assert!(h.mock.members("Staff").is_empty());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_first_group_strategy_reads_members_and_skips_present_ones() {
    let _broker = shared().await;
    let mut h = Harness::start(r#"group_sync_strategy = "query-first""#).await;
    let uid = h.mock.add_user("a@example.edu", "A", "A");
    let gid = h.mock.add_group("Staff");
    h.publish(add(STAFF, "a", "a@example.edu", "A", "A")).await;
    h.outcome().await;
    let got = lines(&h);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], "GET /groups");
    assert_eq!(got[1], "GET /users/a%40example.edu");
    assert!(
        got[2].starts_with(&format!("GET /groups/{gid}/members?")),
        "{got:?}"
    );
    assert_eq!(got[3], format!("POST /groups/{gid}/members"));

    h.mock.clear_requests();
    h.publish(add(STAFF, "a", "a@example.edu", "A", "A")).await;
    h.outcome().await;
    let got = lines(&h);
    assert_eq!(got.len(), 1, "already a member: read only, no add: {got:?}");
    assert!(got[0].starts_with(&format!("GET /groups/{gid}/members?")));
    assert_eq!(h.mock.members("Staff"), vec!["a@example.edu"]);
    let _ = uid;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_logins_are_never_touched() {
    let _broker = shared().await;
    // The example file lists breakglass@example.edu; a string form adds another.
    let mut h =
        Harness::start(r#"unmanaged_logins = "breakglass@example.edu  root@example.edu""#).await;
    h.mock.add_user("breakglass@example.edu", "Break", "Glass");
    h.mock.add_group("Staff");
    assert!(h.mock.add_member("Staff", "breakglass@example.edu"));
    h.publish(add(USERS, "bg", "breakglass@example.edu", "X", "Y"))
        .await;
    h.publish(delete(USERS, "bg", "breakglass@example.edu"))
        .await;
    h.publish(delete(STAFF, "bg", "breakglass@example.edu"))
        .await;
    h.publish(add(STAFF, "root", "root@example.edu", "X", "Y"))
        .await;
    h.publish(add(USERS, "root", "ROOT@example.edu", "X", "Y"))
        .await;
    let outcomes = h.outcomes(5).await;
    assert!(
        outcomes.iter().all(|o| o.verdict == Verdict::Ignored),
        "{outcomes:#?}"
    );
    assert!(lines(&h).is_empty(), "no request at all: {:?}", lines(&h));
    assert_eq!(
        h.mock.user("breakglass@example.edu").unwrap().first_name,
        "Break"
    );
    assert_eq!(h.mock.members("Staff"), vec!["breakglass@example.edu"]);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_validity_period_a_cache_miss_means_absent() {
    let _broker = shared().await;
    let mut h = Harness::start("account_cache_validity_period = 300").await;
    let known = h.mock.add_user("known@example.edu", "K", "K");
    h.publish(add(USERS, "new", "new@example.edu", "N", "N"))
        .await;
    h.outcome().await;
    let got = lines(&h);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("GET /users?"),
        "prefill lists the accounts: {got:?}"
    );
    assert_eq!(
        got[1], "POST /users",
        "miss within the window: created without a look-up"
    );

    h.mock.clear_requests();
    h.publish(add(USERS, "known", "known@example.edu", "K2", "K"))
        .await;
    h.outcome().await;
    assert_eq!(
        lines(&h),
        vec![format!("PATCH /users/{known}")],
        "prefilled ID used"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_space_calls_by_the_configured_interval() {
    let _broker = shared().await;
    let mut h =
        Harness::start("account_sync_rate_limit_ms = 150\nmember_sync_rate_limit_ms = 100").await;
    h.mock.add_group("Staff");
    let subjects: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
    let attrs: serde_json::Map<String, serde_json::Value> = subjects
        .iter()
        .map(|s| (s.clone(), json!({"mail": [format!("{s}@example.edu")]})))
        .collect();
    h.publish(json!({"action": "membership_sync", "group": USERS, "subjects": subjects, "attributes": attrs}))
        .await;
    h.outcome().await;
    let account_calls = h.mock.requests();
    assert!(account_calls.len() >= 5, "list + 4 creates");
    h.mock.clear_requests();
    h.publish(json!({"action": "membership_sync", "group": STAFF, "subjects": subjects, "attributes": attrs}))
        .await;
    h.outcome().await;
    let member_calls = h.mock.requests();
    assert_eq!(h.mock.members("Staff").len(), 4);
    // Arrival times at the target trail send times by a varying few ms.
    let slack = Duration::from_millis(15);
    for (calls, interval) in [(account_calls, 150), (member_calls, 100)] {
        for w in calls.windows(2) {
            let gap = w[1].at - w[0].at;
            assert!(
                gap + slack >= Duration::from_millis(interval),
                "{} -> {}: {gap:?} < {interval} ms",
                w[0].line(),
                w[1].line()
            );
        }
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_group_waits_for_a_not_yet_provisioned_account_and_looks_once_more() {
    let _broker = shared().await;
    // The harness sets target_group_retry_delay = 1.
    let mut h = Harness::start("").await;
    let gid = h.mock.add_group("Staff");
    h.publish(add(STAFF, "late", "late@example.edu", "L", "L"))
        .await;
    assert!(
        h.mock
            .wait_until(DEADLINE, |m| m
                .requests()
                .iter()
                .any(|r| r.path.starts_with("/users/late") && r.status == Some(404)))
            .await
    );
    let uid = h.mock.add_user("late@example.edu", "L", "L");
    assert_eq!(h.outcome().await.verdict, Verdict::Applied);
    let reqs = h.mock.requests();
    let got: Vec<String> = reqs.iter().map(|r| r.line()).collect();
    assert_eq!(
        got,
        vec![
            "GET /groups".to_string(),
            "GET /users/late%40example.edu".to_string(),
            "GET /users/late%40example.edu".to_string(),
            format!("POST /groups/{gid}/members"),
        ]
    );
    assert!(
        reqs[2].at - reqs[1].at >= Duration::from_secs(1),
        "waited target_group_retry_delay"
    );
    assert_eq!(h.mock.members("Staff"), vec!["late@example.edu"]);

    // Still absent after the second look: parked with the reason, not retried forever.
    h.mock.clear_requests();
    h.publish(add(STAFF, "never", "never@example.edu", "N", "N"))
        .await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::DeadLettered);
    assert_eq!(lines(&h).len(), 2, "two look-ups: {:?}", lines(&h));
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let reason = provisioner::amqp::header_str(&dead[0].1, "x-error").unwrap();
    assert!(
        reason.contains("never@example.edu") && reason.contains("not found"),
        "{reason}"
    );
    let _ = uid;
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_other_groups_are_acknowledged_and_ignored() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    h.publish(add("app:other:users", "x", "x@example.edu", "X", "X"))
        .await;
    h.publish(add("APP:EXAMPLE:USERS", "Y", "y@example.edu", "Y", "Y"))
        .await;
    let o = h.outcomes(2).await;
    assert_eq!(o[0].verdict, Verdict::Ignored);
    assert_eq!(
        o[1].verdict,
        Verdict::Applied,
        "group compared case-insensitively"
    );
    assert!(h.mock.user("x@example.edu").is_none());
    assert!(h.mock.user("y@example.edu").is_some());
    h.cleanup().await;
}
