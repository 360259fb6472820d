//! `provisioner dead-letters list|requeue`: parked events can be inspected
//! with their reasons, and sent back after a fix.

use std::process::Command;

use provisioner::worker::Verdict;

use crate::support::mock_rest::MockTarget;
use crate::support::*;

fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("--config")
        .arg(dir.join("worker.toml"))
        .args(args)
        .env("AMQP_URL", amqp_url())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_listed_with_reasons_and_requeued_after_a_fix() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("dl");
    let text = example_provisioner(&mock.url(), &queue, "name = \"dl\"");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dl.toml"), &text).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"dl.toml\"]\n",
    )
    .unwrap();
    let mut h = Harness::start_with(mock, queue.clone(), &text).await;

    // The target refuses one subject for now.
    h.mock.fail_matching("GET", "/users/blocked", 400);
    h.publish(add(USERS, "blocked", "blocked@example.edu", "B", "B"))
        .await;
    h.publish_raw(b"{\"action\": \"add\"").await;
    let outcomes = h.outcomes(2).await;
    assert!(
        outcomes.iter().all(|o| o.verdict == Verdict::DeadLettered),
        "{outcomes:#?}"
    );

    let (ok, listed) = cli(dir.path(), &["dead-letters", "list", "--provisioner", "dl"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("2 parked event(s)"), "{listed}");
    assert!(listed.contains("HTTP 400"), "{listed}");
    assert!(listed.contains("not JSON"), "{listed}");
    assert!(
        listed.contains("blocked@example.edu"),
        "bodies shown: {listed}"
    );
    // Listing does not remove them.
    let (_, again) = cli(dir.path(), &["dead-letters", "list", "--provisioner", "dl"]);
    assert!(again.contains("2 parked event(s)"), "{again}");

    // After the fix, requeue: the valid one is applied, the invalid one parked again.
    h.mock.clear_faults();
    let (ok, requeued) = cli(
        dir.path(),
        &["dead-letters", "requeue", "--provisioner", "dl"],
    );
    assert!(ok, "{requeued}");
    assert!(requeued.contains("re-queued 2 event(s)"), "{requeued}");
    let outcomes = h.outcomes(2).await;
    let applied = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Applied)
        .count();
    assert_eq!(applied, 1, "{outcomes:#?}");
    assert!(h.mock.user("blocked@example.edu").is_some());
    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), 1, "only the invalid event is parked again");
    h.cleanup().await;
}

/// `requeue` declares where it sends letters and removes a letter only once
/// the broker has routed it: with the provisioner's queue deleted, nothing
/// is lost. `--event-id` picks one letter; the others stay, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_declares_the_queue_it_sends_to_and_never_drops_a_letter() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("dlq");
    let text = example_provisioner(&mock.url(), &queue, "name = \"dlq\"");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dlq.toml"), &text).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"dlq.toml\"]\n",
    )
    .unwrap();
    let mut h = Harness::start_with(mock, queue.clone(), &text).await;
    for id in ["e1", "e2", "e3"] {
        h.publish_raw(format!("{{\"id\": \"{id}\", \"action\": \"add\"}}").as_bytes())
            .await;
    }
    assert_eq!(h.outcomes(3).await.len(), 3);
    // The worker stops and the queue is deleted: a requeue must not send the
    // letters into nowhere.
    h.stop().await;
    h.channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();

    let (ok, out) = cli(
        dir.path(),
        &[
            "dead-letters",
            "requeue",
            "--provisioner",
            "dlq",
            "--event-id",
            "e2",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("re-queued 1 event(s)"), "{out}");
    let back = take_all(&h.channel, &queue).await;
    assert_eq!(back.len(), 1, "the queue was declared and holds the letter");
    assert!(back[0].0.contains("\"e2\""), "{}", back[0].0);
    let left: Vec<String> = h.dead_letters().await.into_iter().map(|(b, _)| b).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left[0].contains("e1") && left[1].contains("e3"),
        "order kept: {left:?}"
    );
    h.cleanup().await;
}

/// The mass-deprovision guard refuses a sync that would remove most
/// accounts; a plain requeue is refused again, `--allow-removals` applies it
/// once, and the mark does not stick to the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sync_is_applied_once_requeued_with_allow_removals() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    for i in 1..=4 {
        mock.add_user(&format!("u{i}@example.edu"), "U", "U");
    }
    let queue = unique("guard");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "name = \"guard\"\nremoval_guard_min = 1",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("guard.toml"), &text).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"guard.toml\"]\n",
    )
    .unwrap();
    let mut h = Harness::start_with(mock, queue.clone(), &text).await;
    h.publish(serde_json::json!({"id": "sync-1", "action": "membership_sync", "group": USERS,
        "subjects": ["u1"], "attributes": {"u1": {"mail": ["u1@example.edu"], "givenName": ["U"], "sn": ["U"]}}}))
        .await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::DeadLettered, "{o:?}");
    assert!(o.detail.contains("remove 3 of 4"), "{}", o.detail);
    assert_eq!(h.mock.users().len(), 4, "nothing removed");

    let (ok, out) = cli(
        dir.path(),
        &["dead-letters", "requeue", "--provisioner", "guard"],
    );
    assert!(ok, "{out}");
    let o = h.outcome().await;
    assert_eq!(
        o.verdict,
        Verdict::DeadLettered,
        "refused again without the flag: {o:?}"
    );

    let (ok, out) = cli(
        dir.path(),
        &[
            "dead-letters",
            "requeue",
            "--provisioner",
            "guard",
            "--event-id",
            "sync-1",
            "--allow-removals",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("mass-deprovision guard once"), "{out}");
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
    let left: Vec<String> = h.mock.users().into_iter().map(|u| u.email).collect();
    assert_eq!(left, vec!["u1@example.edu".to_string()]);
    assert!(h.dead_letters().await.is_empty());
    h.cleanup().await;
}
