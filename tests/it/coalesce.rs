//! Backlog coalescing through the real broker (docs/events.md,
//! "Coalescing"): a backlog queued before the worker starts is applied in
//! far fewer target calls than it has events, each subject ends at its last
//! event, and every event is accounted for, the earlier ones of a run as
//! coalesced into its last. A run the target refuses is applied one event
//! at a time, so only the refused event is parked.

use std::collections::BTreeMap;

use provisioner::worker::{OutcomeRecord, Verdict};
use serde_json::{json, Value};

use crate::guarantees::accepted_versions;
use crate::support::mock_rest::MockTarget;
use crate::support::*;

const SUBJECTS: usize = 100;
const VERSIONS: u32 = 10;

fn mail(subject: &str) -> String {
    format!("{subject}@example.edu")
}

/// Event `version` of `subject`: the first adds, the others update; each
/// sets givenName to `v<version>`.
fn versioned(subject: &str, version: u32) -> Value {
    json!({"id": format!("{subject}-v{version}"),
        "action": if version == 1 { "add" } else { "update" },
        "group": USERS, "subject": subject,
        "attributes": {"mail": [mail(subject)], "givenName": [format!("v{version}")], "sn": ["Doe"]}})
}

/// Publishes `SUBJECTS` subjects' `VERSIONS` events each, a subject's
/// events one after the other, before the worker starts; runs the worker
/// until every event is settled, and checks that each subject ends at its
/// last event. Returns the outcomes and the number of target calls.
async fn backlog(overrides: &str) -> (Vec<OutcomeRecord>, usize) {
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("coalesce");
    let text = example_provisioner(&mock.url(), &queue, overrides);
    let mut h = Harness::prepare(mock, queue, &text, amqp_config()).await;
    for s in 0..SUBJECTS {
        for v in 1..=VERSIONS {
            h.publish(versioned(&format!("c{s:03}"), v)).await;
        }
    }
    h.start_worker();
    let outcomes = h.outcomes(SUBJECTS * VERSIONS as usize).await;
    // The mock changes its state before it records an answer: let them land.
    let answered = h
        .mock
        .wait_until(DEADLINE, |m| {
            m.requests().iter().all(|r| r.status.is_some())
        })
        .await;
    assert!(answered, "requests still unanswered");
    assert!(h.dead_letters().await.is_empty(), "nothing is parked");
    assert_each_subject_at_its_last_event(&h.mock);
    let calls = h.mock.requests().len();
    h.cleanup().await;
    (outcomes, calls)
}

/// Every subject ends at its last event, and the versions the target
/// accepted for it rise, each at most once: nothing applied out of order.
fn assert_each_subject_at_its_last_event(mock: &MockTarget) {
    let users = mock.users();
    assert_eq!(users.len(), SUBJECTS, "one account per subject");
    for u in &users {
        assert_eq!(
            u.first_name,
            format!("v{VERSIONS}"),
            "final state of {}",
            u.email
        );
    }
    for (email, versions) in accepted_versions(mock) {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{email}: versions accepted in arrival order: {versions:?}"
        );
        assert_eq!(versions.last(), Some(&VERSIONS), "{email}: {versions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_ten_updates_per_subject_takes_far_fewer_calls_than_events() {
    let _broker = shared().await;
    let events = SUBJECTS * VERSIONS as usize;

    let (outcomes, calls) = backlog("").await;
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let (applied, coalesced) = (count(Verdict::Applied), count(Verdict::Coalesced));
    assert_eq!(
        applied + coalesced,
        events,
        "every event applied or coalesced"
    );
    // Each coalesced event names the later event of its subject that was
    // applied for it.
    let applied_ids: BTreeMap<&str, &OutcomeRecord> = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Applied)
        .map(|o| (o.event_id.as_str(), o))
        .collect();
    for o in outcomes.iter().filter(|o| o.verdict == Verdict::Coalesced) {
        let into = o
            .detail
            .strip_prefix("coalesced into ")
            .unwrap_or_else(|| panic!("detail of {}: {}", o.event_id, o.detail));
        let last = applied_ids
            .get(into)
            .unwrap_or_else(|| panic!("{} coalesced into {into}, not applied", o.event_id));
        assert_eq!(last.subject, o.subject, "{} into {into}", o.event_id);
        let version = |id: &str| {
            id.rsplit_once("-v")
                .and_then(|(_, v)| v.parse::<u32>().ok())
        };
        assert!(
            version(into) > version(&o.event_id),
            "{} into {into}",
            o.event_id
        );
    }

    let (one_by_one, sequential_calls) = backlog("coalesce = false").await;
    assert!(
        one_by_one.iter().all(|o| o.verdict == Verdict::Applied),
        "without coalescing every event is applied"
    );

    eprintln!(
        "coalescing: {events} events over {SUBJECTS} subjects, queued before the worker started: \
         {applied} applied and {coalesced} coalesced, {calls} target calls \
         ({:.1} events per call); {sequential_calls} calls with coalesce = false \
         ({:.1}x as many)",
        events as f64 / calls as f64,
        sequential_calls as f64 / calls as f64,
    );
    assert!(
        calls * 3 <= events,
        "{calls} target calls for {events} events: coalescing should need at most a third"
    );
    assert!(
        calls * 3 <= sequential_calls,
        "{calls} calls coalesced against {sequential_calls} one by one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coalesced_run_the_target_refuses_is_applied_one_event_at_a_time() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("coalesce");
    // One event at a time, and a first event that hangs for a second: the
    // subject's events all wait behind it, so they start as one run.
    let text = example_provisioner(&mock.url(), &queue, "concurrency = 1\ntimeout_s = 1");
    let mut h = Harness::prepare(mock, queue, &text, amqp_config()).await;
    h.mock.hang_next(1);
    h.publish(versioned("blocker", 1)).await;
    for v in 1..=4 {
        h.publish(versioned("jdoe", v)).await;
    }
    // Its mail is no address: the target refuses to create the account it
    // names (400), alone or as the last of the run.
    let mut refused = versioned("jdoe", 5);
    refused["attributes"]["mail"] = json!(["not-an-address"]);
    h.publish(refused).await;
    h.start_worker();

    let outcomes = h.outcomes(6).await;
    let verdict = |id: &str| {
        outcomes
            .iter()
            .find(|o| o.event_id == id)
            .map(|o| o.verdict)
            .unwrap_or_else(|| panic!("no outcome for {id}: {outcomes:#?}"))
    };
    for v in 1..=4 {
        assert_eq!(verdict(&format!("jdoe-v{v}")), Verdict::Applied, "v{v}");
    }
    assert_eq!(verdict("jdoe-v5"), Verdict::DeadLettered);
    let user = h.mock.user(&mail("jdoe")).expect("jdoe's account");
    assert_eq!(
        user.first_name, "v4",
        "the events before the refused one applied"
    );

    let parked = h.dead_letters().await;
    assert_eq!(
        parked.len(),
        1,
        "only the refused event is parked: {parked:#?}"
    );
    let reason = amqp_header(&parked[0].1, "x-error");
    assert!(
        reason.starts_with("permanent failure") && !reason.contains("coalesced"),
        "{reason}"
    );
    // The run was tried once as a whole, then its events one by one.
    let refused_creates = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/users" && r.status == Some(400))
        .count();
    assert_eq!(refused_creates, 2, "{:#?}", h.mock.request_lines());
    h.cleanup().await;
}

fn amqp_header(props: &lapin::BasicProperties, name: &str) -> String {
    provisioner::amqp::header_str(props, name).unwrap_or_default()
}
