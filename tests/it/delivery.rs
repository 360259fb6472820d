//! What the consumer guarantees: invalid input parked with its reason while
//! the worker goes on; reconnection when the broker drops the connection.

use std::collections::BTreeSet;

use provisioner::amqp::header_str;
use provisioner::worker::Verdict;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_dead_lettered_with_a_reason_and_the_worker_goes_on() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    let bad: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not JSON"),
        (
            br#"{"action":"rename","group":"app:example:users","subject":"a"}"#,
            "unknown action",
        ),
        (
            br#"{"action":"add","group":"app:example:users"}"#,
            "missing field `subject`",
        ),
        (
            br#"{"action":"add","group":"app:example:users","subject":["a"]}"#,
            "`subject` is an array",
        ),
        (b"\xff\xfe\xfd", "not UTF-8"),
    ];
    for (body, _) in &bad {
        h.publish_raw(body).await;
    }
    h.publish(add(USERS, "ok", "ok@example.edu", "O", "K"))
        .await;
    let outcomes = h.outcomes(bad.len() + 1).await;
    let dead = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::DeadLettered)
        .count();
    assert_eq!(dead, bad.len());
    assert!(
        h.mock.user("ok@example.edu").is_some(),
        "the valid event after them was applied"
    );

    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), bad.len());
    for ((body, why), (parked_body, props)) in bad.iter().zip(&parked) {
        assert_eq!(
            parked_body.as_bytes(),
            String::from_utf8_lossy(body).as_bytes(),
            "original body kept"
        );
        let reason = header_str(props, "x-error").unwrap();
        assert!(reason.contains(why), "{reason} should say {why}");
        assert_eq!(
            header_str(props, "x-provisioner").as_deref(),
            Some("example")
        );
        assert!(header_str(props, "x-dead-lettered-at").is_some());
    }
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_target_failure_is_dead_lettered_and_others_proceed() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    h.mock.fail_matching("GET", "/users/bad", 400);
    h.publish(add(USERS, "bad", "bad@example.edu", "B", "B"))
        .await;
    for i in 0..20 {
        h.publish(add(
            USERS,
            &format!("g{i}"),
            &format!("g{i}@example.edu"),
            "G",
            "G",
        ))
        .await;
    }
    let outcomes = h.outcomes(21).await;
    let bad = outcomes
        .iter()
        .find(|o| o.subject.as_deref() == Some("bad"))
        .unwrap();
    assert_eq!(bad.verdict, Verdict::DeadLettered);
    assert_eq!(bad.attempts, 1, "a 400 is not retried");
    assert_eq!(h.mock.users().len(), 20);
    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), 1);
    assert!(header_str(&parked[0].1, "x-error").unwrap().contains("400"));
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_applied() {
    let _broker = shared().await;
    let mut h = Harness::start("retry = { initial_backoff_ms = 50, max_backoff_s = 1 }").await;
    h.mock.fail_next(3, 503);
    h.publish(add(USERS, "t", "t@example.edu", "T", "T")).await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
    assert_eq!(o.attempts, 4);
    assert!(h.mock.user("t@example.edu").is_some());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reconnects_when_the_broker_closes_every_connection() {
    let _broker = exclusive().await;
    // Paced so that the connections are closed while events are still flowing.
    let mut h = Harness::start("account_sync_rate_limit_ms = 15\nconcurrency = 4").await;
    let n = 150;
    for i in 0..n {
        h.publish(add(
            USERS,
            &format!("r{i}"),
            &format!("r{i}@example.edu"),
            "R",
            "R",
        ))
        .await;
    }
    let before = h.outcomes(20).await;
    let status = std::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "fault injection by the test suite"])
        .output()
        .expect("rabbitmqctl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Every event ends applied; some may be applied twice (redelivered), which is harmless.
    let mut done: BTreeSet<String> = before.iter().filter_map(|o| o.subject.clone()).collect();
    let mut redelivered = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    while done.len() < n {
        match tokio::time::timeout_at(deadline, h.outcomes.recv()).await {
            Ok(Ok(o)) => {
                assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
                redelivered += usize::from(o.redelivered);
                done.extend(o.subject);
            }
            other => panic!("{} of {n} applied: {other:?}", done.len()),
        }
    }
    // Prefetched, unacknowledged events came back after the break: proof that it broke mid-flow.
    assert!(
        redelivered > 0,
        "no redelivery: the connections were not closed while events flowed"
    );
    assert_eq!(h.mock.users().len(), n);
    // The test's own publishing connection was closed too; clean up through a new one.
    h.shutdown.cancel();
    if let Some(w) = h.worker.take() {
        w.await.unwrap();
    }
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    for q in [h.queue.clone(), format!("{}.dead", h.queue)] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}

/// A provisioner with a bug: it panics on one subject.
struct PanickyProvisioner {
    inner: std::sync::Arc<dyn provisioner::engine::Provisioner>,
}

#[async_trait::async_trait]
impl provisioner::engine::Provisioner for PanickyProvisioner {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(
        &self,
        event: &provisioner::event::Event,
    ) -> Result<provisioner::engine::Outcome, provisioner::engine::ApplyError> {
        if event.subject() == Some("boom") && event.action == provisioner::event::Action::Add {
            panic!("simulated bug");
        }
        self.inner.apply(event).await
    }

    async fn probe(&self) -> Result<(), provisioner::target::TargetError> {
        self.inner.probe().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_applying_parks_that_event_and_the_subject_goes_on() {
    let _broker = shared().await;
    let mock = crate::support::mock_rest::MockTarget::start()
        .await
        .unwrap();
    let queue = unique("panic");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, example_provisioner(&mock.url(), &queue, "")).unwrap();
    let mut cfg = provisioner::config::from_provisioner_files(&[path]).unwrap();
    cfg.amqp = amqp_config();
    let p = cfg.provisioners[0].clone();
    let inner =
        provisioner::assembly::provisioner(&p, provisioner::assembly::Writes::Apply).unwrap();
    let worker = provisioner::worker::Worker::with_provisioners(
        cfg,
        vec![(p, std::sync::Arc::new(PanickyProvisioner { inner }) as _)],
    )
    .unwrap();
    let mut outcomes = worker.subscribe();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));

    let conn = connect().await;
    let ch = provisioner::amqp::confirm_channel(&conn).await.unwrap();
    provisioner::amqp::declare_queues(&ch, &queue, &format!("{queue}.dead"))
        .await
        .unwrap();
    for event in [
        add(USERS, "boom", "boom@example.edu", "B", "B"),
        add(USERS, "fine", "fine@example.edu", "F", "F"),
        delete(USERS, "boom", "boom@example.edu"),
    ] {
        provisioner::amqp::publish_confirmed(
            &ch,
            &queue,
            event.to_string().as_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let o = tokio::time::timeout(DEADLINE, outcomes.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(o);
    }
    let boom_add = got
        .iter()
        .find(|o| o.subject.as_deref() == Some("boom") && o.action.as_deref() == Some("add"))
        .unwrap();
    assert_eq!(boom_add.verdict, Verdict::DeadLettered);
    assert!(
        boom_add.detail.contains("failed internally"),
        "{}",
        boom_add.detail
    );
    let boom_delete = got
        .iter()
        .find(|o| o.action.as_deref() == Some("delete"))
        .unwrap();
    assert_eq!(
        boom_delete.verdict,
        Verdict::Applied,
        "the subject is not stuck behind the panic"
    );
    assert!(mock.user("fine@example.edu").is_some());
    let parked = take_all(&ch, &format!("{queue}.dead")).await;
    assert_eq!(parked.len(), 1);

    shutdown.cancel();
    run.await.unwrap();
    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}

/// A poison message: an invalid event whose `id` is 200 KB. Its dead letter
/// carries the id clipped (a prefix and a hash), so the broker takes it;
/// before, the header frame was too large, the broker closed the connection
/// and the same delivery came back forever, stalling the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_with_a_200_kb_id_is_parked_and_the_events_behind_it_apply() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    let huge_id = "p".repeat(200 * 1024);
    h.publish(
        serde_json::json!({"id": huge_id, "action": "frobnicate", "group": USERS, "subject": "x"}),
    )
    .await;
    for i in 0..5 {
        h.publish(add(
            USERS,
            &format!("after{i}"),
            &format!("after{i}@example.edu"),
            "A",
            "B",
        ))
        .await;
    }
    let outcomes = h.outcomes(6).await;
    let poison: Vec<_> = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::DeadLettered)
        .collect();
    assert_eq!(poison.len(), 1, "{outcomes:#?}");
    assert!(
        poison[0].event_id.len() < 400,
        "the outcome's id is clipped too"
    );
    assert_eq!(h.mock.users().len(), 5, "every event behind it applied");
    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), 1);
    let (body, props) = &parked[0];
    assert!(body.len() > 200 * 1024, "the body is parked unchanged");
    let id = header_str(props, "x-event-id").unwrap();
    assert!(
        id.starts_with("ppp") && id.contains("sha256:"),
        "{}",
        &id[..40]
    );
    assert!(id.len() < 400, "{} bytes", id.len());
    assert!(!h.mock.requests().is_empty());
    h.cleanup().await;
}

/// The original message's own headers nearly fill the broker's frame: with
/// the parking headers added the dead letter would not fit, so it is parked
/// without them, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_original_headers_would_not_fit_is_parked_without_them() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    let mut table = lapin::types::FieldTable::default();
    // 131,072-byte frames: this header leaves a few hundred bytes free.
    table.insert(
        "x-trace".into(),
        lapin::types::AMQPValue::LongString("t".repeat(130_700).into()),
    );
    provisioner::amqp::publish_confirmed(
        &h.channel,
        &h.queue,
        b"{\"action\": 1}",
        lapin::BasicProperties::default().with_headers(table),
    )
    .await
    .unwrap();
    h.publish(add(USERS, "after", "after@example.edu", "A", "B"))
        .await;
    let outcomes = h.outcomes(2).await;
    assert_eq!(outcomes[0].verdict, Verdict::DeadLettered, "{outcomes:#?}");
    assert_eq!(outcomes[1].verdict, Verdict::Applied, "{outcomes:#?}");
    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), 1);
    let props = &parked[0].1;
    assert!(
        header_str(props, "x-trace").is_none(),
        "the big header is left out"
    );
    let dropped = header_str(props, "x-original-headers-dropped").unwrap();
    assert!(dropped.contains("too large"), "{dropped}");
    assert!(header_str(props, "x-error").unwrap().contains("`action`"));
    h.cleanup().await;
}

/// Someone deleted the dead-letter queue while the worker runs. A park is
/// published mandatory: it comes back unroutable, the worker declares its
/// topology again and parks it there. Before, the park was confirmed into
/// nowhere and the original acknowledged: the event was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_letter_queue_is_declared_again_and_loses_nothing() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    h.publish(add(USERS, "first", "first@example.edu", "F", "F"))
        .await;
    assert_eq!(h.outcome().await.verdict, Verdict::Applied);
    let dead = format!("{}.dead", h.queue);
    h.channel
        .queue_delete(dead.as_str().into(), Default::default())
        .await
        .unwrap();
    h.publish_raw(b"{\"action\": \"add\"").await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::DeadLettered, "{o:?}");
    let parked = h.dead_letters().await;
    assert_eq!(
        parked.len(),
        1,
        "the dead letter is in the re-declared queue"
    );
    assert_eq!(parked[0].0, "{\"action\": \"add\"");
    h.cleanup().await;
}
