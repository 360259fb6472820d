//! The delivery guarantees of docs/operations.md (issue #5), each shown against the real
//! broker: nothing lost across kill -9, connection drops, a broker app
//! restart and SIGTERM; per-subject order kept (within one process, and
//! across processes with partitions); transient failures retried with
//! backoff and `Retry-After`; permanent ones dead-lettered without holding
//! up the rest; any input accounted for; repeated delivery harmless.
//!
//! Ordering is checked on the target's request log: subject `s` gets events
//! setting givenName to "v1", "v2", .., "vK", and the create/update bodies
//! the target accepted for `s`, repeats (redeliveries) aside, must rise to
//! K. Versions may be left out: waiting events of a subject are coalesced
//! into their last (docs/events.md). A version may come again after a later
//! one only where the test broke the worker's hold on its deliveries (a
//! kill, a connection closed): a run applied but not acknowledged comes back
//! whole and may then start with its first event alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use provisioner::amqp::{self, header_str, Topology};
use provisioner::worker::{OutcomeRecord, Verdict};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::process::Deployment;
use crate::support::mock_rest::MockTarget;
use crate::support::*;

// ------------------------------------------------------------------ helpers

fn mail(subject: &str) -> String {
    format!("{subject}@example.edu")
}

/// Event number `version` of `subject`: the first adds, later ones update;
/// each sets givenName to "v<version>".
fn versioned(subject: &str, version: u32) -> Value {
    json!({"action": if version == 1 { "add" } else { "update" }, "group": USERS, "subject": subject,
        "attributes": {"mail": [mail(subject)], "givenName": [format!("v{version}")], "sn": [format!("sn-{subject}")]}})
}

/// `subjects` subjects with `versions` events each, in order per subject
/// but otherwise shuffled (deterministically), so that one subject's events
/// are sometimes adjacent and sometimes far apart.
pub(crate) fn sequences(prefix: &str, subjects: usize, versions: u32) -> (Vec<String>, Vec<Value>) {
    let names: Vec<String> = (0..subjects).map(|i| format!("{prefix}{i:04}")).collect();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ subjects as u64);
    let mut next = vec![1u32; subjects];
    let mut open: Vec<usize> = (0..subjects).collect();
    let mut events = Vec::with_capacity(subjects * versions as usize);
    while !open.is_empty() {
        let k = rng.below(open.len());
        let i = open[k];
        events.push(versioned(&names[i], next[i]));
        next[i] += 1;
        if next[i] > versions {
            open.swap_remove(k);
        }
    }
    (names, events)
}

fn version_of(given_name: &str) -> Option<u32> {
    given_name.strip_prefix('v')?.parse().ok()
}

/// Events applied so far according to the target's state: a subject at "vK"
/// has had its first K events applied.
pub(crate) fn progress(mock: &MockTarget) -> u32 {
    mock.users()
        .iter()
        .filter_map(|u| version_of(&u.first_name))
        .sum()
}

/// Per account (lowercased email): the versions of the create and update
/// bodies the target accepted (2xx), in arrival order.
pub(crate) fn accepted_versions(mock: &MockTarget) -> BTreeMap<String, Vec<u32>> {
    let emails: HashMap<String, String> = mock
        .users()
        .into_iter()
        .map(|u| (u.id, u.email.to_lowercase()))
        .collect();
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in mock.requests() {
        if !r.status.is_some_and(|s| (200..300).contains(&s)) {
            continue;
        }
        let Some(body) = &r.body else { continue };
        let (email, given) = match r.method.as_str() {
            "POST" if r.path == "/users" => (
                body["user_info"]["email"].as_str().map(str::to_lowercase),
                body["user_info"]["first_name"].as_str(),
            ),
            "PATCH" => (
                r.path
                    .strip_prefix("/users/")
                    .and_then(|id| emails.get(id).cloned()),
                body["first_name"].as_str(),
            ),
            _ => continue,
        };
        if let (Some(email), Some(v)) = (email, given.and_then(version_of)) {
            out.entry(email).or_default().push(v);
        }
    }
    out
}

/// Waits until each of `subjects` is at version `last`; at the deadline,
/// fails naming the subjects still behind and what the target accepted for
/// them, followed by `context` (e.g. a worker's log).
pub(crate) async fn wait_all_at(
    mock: &MockTarget,
    subjects: &[String],
    last: u32,
    within: Duration,
    context: &str,
) {
    let total = subjects.len() as u32 * last;
    if mock.wait_until(within, |m| progress(m) >= total).await {
        return;
    }
    let accepted = accepted_versions(mock);
    let users = mock.users();
    let behind: Vec<String> = users
        .iter()
        .filter(|u| version_of(&u.first_name) != Some(last))
        .take(5)
        .map(|u| {
            format!(
                "{} at {}, accepted {:?}",
                u.email,
                u.first_name,
                accepted.get(&u.email.to_lowercase())
            )
        })
        .collect();
    panic!(
        "{} of {total} events applied; {} accounts missing; behind: {behind:#?}\n{context}",
        progress(mock),
        subjects.len() - users.len().min(subjects.len())
    );
}

/// The target holds exactly `subjects`, each at version `last`, and each
/// subject's accepted versions (consecutive repeats aside) rise to `last`,
/// going back at most `breaks` times (once per break of the worker's hold
/// on its deliveries): nothing lost, nothing applied out of order.
pub(crate) async fn assert_sequences_applied(
    mock: &MockTarget,
    subjects: &[String],
    last: u32,
    breaks: usize,
) {
    assert_sequences_applied_after(mock, subjects, last, breaks, None).await
}

/// [`assert_sequences_applied`], for a target that left the requests
/// received before `hung_until` without an answer on purpose.
async fn assert_sequences_applied_after(
    mock: &MockTarget,
    subjects: &[String],
    last: u32,
    breaks: usize,
    hung_until: Option<std::time::Instant>,
) {
    // The mock changes its state before it records the answer's status: let answers land.
    let answered = mock
        .wait_until(DEADLINE, |m| {
            m.requests()
                .iter()
                .filter(|r| hung_until.is_none_or(|t| r.at > t))
                .all(|r| r.status.is_some())
        })
        .await;
    assert!(answered, "requests still unanswered");
    let users = mock.users();
    let got: BTreeSet<String> = users.iter().map(|u| u.email.to_lowercase()).collect();
    let want: BTreeSet<String> = subjects.iter().map(|s| mail(s)).collect();
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "accounts missing: {missing:?}, unexpected: {extra:?}"
    );
    for u in &users {
        let subject = u.email.trim_end_matches("@example.edu");
        assert_eq!(
            (u.first_name.clone(), u.last_name.clone()),
            (format!("v{last}"), format!("sn-{subject}")),
            "final state of {}",
            u.email
        );
    }
    let accepted = accepted_versions(mock);
    for s in subjects {
        let raw = accepted.get(&mail(s)).cloned().unwrap_or_default();
        let mut seq = raw.clone();
        seq.dedup();
        let back = seq.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(
            back <= breaks && seq.last() == Some(&last),
            "{s}: versions accepted by the target, in arrival order: {raw:?} \
             (going back {back} times, {breaks} allowed)"
        );
    }
}

/// Applied, or coalesced into a later event of its subject that was.
fn took_effect(o: &OutcomeRecord) -> bool {
    matches!(o.verdict, Verdict::Applied | Verdict::Coalesced)
}

fn json_messages(events: &[Value]) -> Vec<(Vec<u8>, BasicProperties)> {
    events
        .iter()
        .map(|e| (e.to_string().into_bytes(), BasicProperties::default()))
        .collect()
}

/// Publishes persistent messages to `queue` on one channel, in order, with
/// up to 200 confirms outstanding at once (much faster than one by one).
async fn publish_pipelined(
    channel: &Channel,
    queue: &str,
    messages: &[(Vec<u8>, BasicProperties)],
) {
    for chunk in messages.chunks(200) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (body, props) in chunk {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            let c = confirm.await.unwrap();
            assert!(
                matches!(c, Confirmation::Ack(_)),
                "broker did not confirm: {c:?}"
            );
        }
    }
}

/// Messages ready (not delivered, not unacknowledged) in `queue`.
pub(crate) async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Deletes every broker object of a topology, through a fresh connection.
async fn delete_topology(t: &Topology) {
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    for q in t.consumed().iter().chain(std::iter::once(&t.dead_letter)) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if t.partitions > 0 {
        let _ = ch
            .exchange_delete(t.queue.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// Receives outcomes on a task of its own (so the broadcast channel never
/// lags while the test publishes) until `n` arrived or `within` is over;
/// returns what arrived. Subscribes at once: call it before publishing.
fn collect_outcomes(
    h: &Harness,
    n: usize,
    within: Duration,
) -> tokio::task::JoinHandle<Vec<OutcomeRecord>> {
    let mut rx = h.outcomes.resubscribe();
    tokio::spawn(async move {
        let deadline = Instant::now() + within;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(o)) => got.push(o),
                Ok(Err(RecvError::Lagged(k))) => panic!("the test lagged {k} outcomes behind"),
                Ok(Err(e)) => panic!("outcome channel: {e}"),
                Err(_) => break,
            }
        }
        got
    })
}

/// Every outcome already broadcast to the harness's own receiver.
fn drain_outcomes(h: &mut Harness) -> Vec<OutcomeRecord> {
    let mut got = Vec::new();
    loop {
        match h.outcomes.try_recv() {
            Ok(o) => got.push(o),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(k)) => panic!("lagged {k}"),
            Err(_) => return got,
        }
    }
}

async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker app stopped (`rabbitmqctl stop_app`) for the life of the
/// guard. [`BrokerAppStopped::start`] starts it again; if the test fails
/// before that, dropping the guard does it, so the broker never stays down.
struct BrokerAppStopped {
    started: bool,
}

impl BrokerAppStopped {
    async fn stop() -> BrokerAppStopped {
        let guard = BrokerAppStopped { started: false };
        rabbitmqctl(&["stop_app"]).await;
        guard
    }

    async fn start(mut self) {
        rabbitmqctl(&["start_app"]).await;
        rabbitmqctl(&["await_startup"]).await;
        self.started = true;
    }
}

impl Drop for BrokerAppStopped {
    fn drop(&mut self) {
        if !self.started {
            for args in [["start_app"], ["await_startup"]] {
                let _ = std::process::Command::new("rabbitmqctl")
                    .args(args)
                    .status();
            }
        }
    }
}

// -------------------------------------------------------------- the tests

/// 1. kill -9 in the middle of 2,000 events, then a restart: the target ends
/// in exactly the expected state, every event applied, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_then_a_restart_loses_nothing() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("kill9");
    // Paced (at most one call per 2 ms) so that the kill lands mid-stream.
    let text = example_provisioner(&mock.url(), &queue, "account_sync_rate_limit_ms = 2");
    let mut d = Deployment::new(&text, "shutdown_grace_s = 5", "queue_type = \"quorum\"");
    let topology = d.topology();
    let conn = connect().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare(&conn, &topology).await.unwrap();

    let (subjects, events) = sequences("k", 400, 5);
    let total = events.len() as u32;
    let mut first = d.spawn("first");
    publish_pipelined(&ch, &topology.queue, &json_messages(&events)).await;
    let reached = mock.wait_until(DEADLINE, |m| progress(m) >= 300).await;
    assert!(
        reached,
        "the first worker applied {} events:\n{}",
        progress(&mock),
        first.log_text()
    );
    first.kill9().await;
    let at_kill = progress(&mock);
    assert!(
        at_kill < total,
        "the kill came after everything was applied ({at_kill})"
    );

    let mut second = d.spawn("second");
    wait_all_at(
        &mock,
        &subjects,
        5,
        Duration::from_secs(120),
        &second.log_text(),
    )
    .await;
    assert_sequences_applied(&mock, &subjects, 5, 1).await;
    // The first worker died holding unacknowledged deliveries; the broker gave them to the second.
    let redelivered = second
        .outcomes()
        .iter()
        .filter(|o| o["fields"]["redelivered"] == true)
        .count();
    assert!(
        redelivered > 0,
        "nothing was redelivered: the kill did not interrupt work in flight"
    );

    second.sigterm();
    let status = second.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        second.log_text()
    );
    assert_eq!(
        ready(&ch, &topology.queue).await,
        0,
        "everything acknowledged"
    );
    assert_eq!(ready(&ch, &topology.dead_letter).await, 0, "nothing parked");
    delete_topology(&topology).await;
    println!(
        "kill -9 at {at_kill}/{total} applied; {redelivered} redelivered to the restarted worker; requests {}",
        mock.requests().len()
    );
}

/// 2. The broker closes every connection, and later its app is stopped and
/// started, while events flow: the worker reconnects by itself, nothing is
/// lost and nothing is applied out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drops_and_a_broker_app_restart_lose_nothing_and_keep_order() {
    let _broker = exclusive().await;
    // Paced so that both breaks land mid-stream, coalescing or not.
    let mut h = Harness::start("account_sync_rate_limit_ms = 40\nconcurrency = 4").await;
    let (subjects, events) = sequences("b", 60, 10);
    let total = events.len() as u32;
    publish_pipelined(&h.channel, &h.queue, &json_messages(&events)).await;

    assert!(
        h.mock.wait_until(DEADLINE, |m| progress(m) >= 50).await,
        "no progress"
    );
    rabbitmqctl(&["close_all_connections", "fault injection by the test suite"]).await;
    let at_close = progress(&h.mock);
    let resumed = h
        .mock
        .wait_until(DEADLINE, |m| progress(m) >= at_close + 50)
        .await;
    assert!(
        resumed,
        "no progress after the broker closed every connection ({at_close})"
    );

    let stopped = BrokerAppStopped::stop().await;
    let at_stop = progress(&h.mock);
    assert!(
        at_stop < total,
        "the app was stopped after everything was applied"
    );
    stopped.start().await;

    wait_all_at(
        &h.mock,
        &subjects,
        10,
        Duration::from_secs(90),
        "after the broker came back",
    )
    .await;
    assert_sequences_applied(&h.mock, &subjects, 10, 2).await;
    let outcomes = drain_outcomes(&mut h);
    assert!(outcomes.iter().all(took_effect));
    let redelivered = outcomes.iter().filter(|o| o.redelivered).count();
    assert!(
        redelivered > 0,
        "nothing was redelivered: the breaks did not interrupt work in flight"
    );

    // The harness's own connection died with the others; check and clean up through a new one.
    h.shutdown.cancel();
    if let Some(w) = h.worker.take() {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(ready(&ch, &h.queue).await, 0);
    assert_eq!(ready(&ch, &format!("{}.dead", h.queue)).await, 0);
    for q in [h.queue.clone(), format!("{}.dead", h.queue)] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    println!("closed at {at_close}, stopped at {at_stop} of {total}; {redelivered} redelivered");
}

/// 3. The target answers 500 for a while, then recovers: every event is
/// applied, in order per subject. No busy loop: every failure cost exactly
/// one retry, the request count stays within the fault-free count plus two
/// per failure, and the n-th retry of an event came after at least its
/// backoff floor (half of 20 ms * 2^(n-1), capped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_500s_is_retried_with_backoff_and_everything_applies_in_order() {
    let _broker = shared().await;
    let h =
        Harness::start("retry = { initial_backoff_ms = 20, max_backoff_s = 1, max_attempts = 20 }")
            .await;
    // Fewer failures than it takes the breaker to call the target down (10
    // attempts, 80 % failing): this is about retries of a target that serves
    // most calls. A target that fails everything is the outage test's.
    let failures = 6;
    h.mock.fail_next(failures, 500);
    let (subjects, events) = sequences("f", 20, 5);
    let collector = collect_outcomes(&h, events.len(), Duration::from_secs(90));
    publish_pipelined(&h.channel, &h.queue, &json_messages(&events)).await;
    let outcomes = collector.await.unwrap();
    assert_eq!(outcomes.len(), events.len(), "{outcomes:#?}");
    let not_applied: Vec<_> = outcomes.iter().filter(|o| !took_effect(o)).collect();
    assert!(not_applied.is_empty(), "{not_applied:#?}");
    assert_sequences_applied(&h.mock, &subjects, 5, 0).await;

    let requests = h.mock.requests();
    let failed = requests.iter().filter(|r| r.status == Some(500)).count();
    assert_eq!(failed, failures, "every scripted failure was met");
    // A coalesced event made no attempt of its own (0).
    let retries: u32 = outcomes.iter().map(|o| o.attempts.saturating_sub(1)).sum();
    assert_eq!(
        retries as usize, failures,
        "exactly one retry per failed call"
    );
    // Fault-free: a look-up and a create per subject, then one update per later event.
    let fault_free = subjects.len() * 2 + subjects.len() * 4;
    assert!(
        requests.len() <= fault_free + 2 * failures,
        "{} requests for {} events ({fault_free} without faults, {failures} failures)",
        requests.len(),
        events.len()
    );

    // The subject of each request: by email in the path or body, or by account id.
    let emails: HashMap<String, String> = h
        .mock
        .users()
        .into_iter()
        .map(|u| (u.id, u.email.to_lowercase()))
        .collect();
    let subject_of = |r: &crate::support::recorded::RecordedRequest| -> Option<String> {
        if r.method == "POST" {
            return r.body.as_ref()?["user_info"]["email"]
                .as_str()
                .map(str::to_lowercase);
        }
        let key = r.decoded_path().strip_prefix("/users/")?.to_string();
        if key.contains('@') {
            Some(key.to_lowercase())
        } else {
            emails.get(&key).cloned()
        }
    };
    // Per subject: failed attempts of its current event, and when the last
    // one failed if its retry has not come yet.
    let mut failing: HashMap<String, (u32, Option<std::time::Instant>)> = HashMap::new();
    let mut checked = 0;
    for r in &requests {
        let Some(s) = subject_of(r) else { continue };
        let entry = failing.entry(s.clone()).or_insert((0, None));
        if let Some(at) = entry.1.take() {
            let n = entry.0;
            let floor = Duration::from_millis((20u64 << (n - 1).min(10)).min(1000) / 2);
            let gap = r.at - at;
            assert!(
                gap >= floor,
                "{s}: retry {n} came {gap:?} after the failure (floor {floor:?})"
            );
            checked += 1;
        }
        match r.status {
            Some(500) => *entry = (entry.0 + 1, Some(r.at)),
            // An accepted write ends the event.
            Some(201 | 204) if r.method != "GET" => *entry = (0, None),
            _ => {}
        }
    }
    assert_eq!(checked, failures, "every failure was followed by a retry");
    h.cleanup().await;
}

/// 4. A 429 with `Retry-After: 2`: the next attempt comes no sooner than 2 s
/// later, although the configured backoff is 20 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let _broker = shared().await;
    let mut h = Harness::start("retry = { initial_backoff_ms = 20, max_backoff_s = 1 }").await;
    h.mock.fail_next_with_retry_after(1, 429, 2);
    h.publish(versioned("ra", 1)).await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
    assert_eq!(o.attempts, 2);
    let reqs = h.mock.requests();
    assert_eq!(reqs[0].status, Some(429));
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(5), "retried only after {gap:?}");
    assert!(h.mock.user("ra@example.edu").is_some());
    h.cleanup().await;
}

/// 5. A call that hangs times out after `timeout_s`; the event is retried
/// and applied, and events of other subjects proceed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_times_out_and_is_retried_while_other_subjects_proceed() {
    let _broker = shared().await;
    let mut h =
        Harness::start("timeout_s = 1\nretry = { initial_backoff_ms = 20, max_backoff_s = 1 }")
            .await;
    h.mock.hang_next(1);
    h.publish(versioned("hung", 1)).await;
    assert!(
        h.mock.wait_for_requests(1, DEADLINE).await,
        "the first call never came"
    );
    let others = 20;
    for i in 0..others {
        h.publish(versioned(&format!("o{i}"), 1)).await;
    }
    let outcomes = h.outcomes(others + 1).await;
    let pos = outcomes
        .iter()
        .position(|o| o.subject.as_deref() == Some("hung"))
        .unwrap();
    assert_eq!(
        pos, others,
        "the other subjects finished first: {outcomes:#?}"
    );
    let hung = &outcomes[pos];
    assert_eq!(hung.verdict, Verdict::Applied, "{hung:?}");
    assert_eq!(hung.attempts, 2, "timed out once, then applied");
    assert!(outcomes.iter().all(|o| o.verdict == Verdict::Applied));

    let reqs = h.mock.requests();
    assert_eq!(reqs[0].path, "/users/hung%40example.edu");
    assert_eq!(reqs[0].status, None, "the first call was never answered");
    let retry = reqs
        .iter()
        .skip(1)
        .find(|r| r.path == "/users/hung%40example.edu")
        .unwrap();
    assert!(
        retry.at - reqs[0].at >= Duration::from_secs(1),
        "retried only after the timeout"
    );
    assert_eq!(h.mock.users().len(), others + 1);
    h.cleanup().await;
}

/// 6. One subject's calls always fail with 400: its event is dead-lettered
/// (once, not retried) with the reason in its headers, while 1,000 events of
/// other subjects are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_subject_is_dead_lettered_while_a_thousand_others_apply() {
    let _broker = shared().await;
    let h = Harness::start("").await;
    h.mock.fail_matching("*", "/users/bad@example.edu", 400);
    let (subjects, mut events) = sequences("p", 500, 2);
    let bad = versioned("bad", 1);
    events.insert(500, bad.clone());
    let collector = collect_outcomes(&h, events.len(), Duration::from_secs(90));
    publish_pipelined(&h.channel, &h.queue, &json_messages(&events)).await;
    let outcomes = collector.await.unwrap();
    assert_eq!(outcomes.len(), events.len());

    let (bad_outcomes, others): (Vec<_>, Vec<_>) = outcomes
        .iter()
        .partition(|o| o.subject.as_deref() == Some("bad"));
    assert_eq!(bad_outcomes.len(), 1);
    let b = bad_outcomes[0];
    assert_eq!(b.verdict, Verdict::DeadLettered, "{b:?}");
    assert_eq!(b.attempts, 1, "a 400 is not retried");
    assert!(b.detail.contains("400"), "{}", b.detail);
    assert_eq!(others.len(), 1000);
    assert!(others.iter().all(|o| took_effect(o)));
    assert_sequences_applied(&h.mock, &subjects, 2, 0).await;

    let parked = h.dead_letters().await;
    assert_eq!(parked.len(), 1);
    let (body, props) = &parked[0];
    assert_eq!(body, &bad.to_string(), "the original body, unchanged");
    let header = |name: &str| header_str(props, name).unwrap_or_else(|| panic!("no {name} header"));
    assert_eq!(header("x-provisioner"), "example");
    let reason = header("x-error");
    assert!(
        reason.contains("400") && reason.contains("permanent"),
        "{reason}"
    );
    assert_eq!(header("x-attempts"), "1");
    assert_eq!(header("x-original-queue"), h.queue);
    assert_eq!(header("x-event-id"), b.event_id);
    let at = header("x-dead-lettered-at");
    assert!(
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).is_ok(),
        "{at}"
    );
    h.cleanup().await;
}

// ---------------------------------------------------------- input fuzzing

/// xorshift64: small, deterministic, good enough to pick cases.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The verdict a generated body must get; `Any` for random mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Is(Verdict),
    Any,
}

const IGNORED_GROUPS: [&str; 4] = [
    "app:other:users",
    "app:zoom:users",
    "ref:course:cs101",
    "APP:UNRELATED",
];

fn provision_event(rng: &mut XorShift, pool: &str) -> Value {
    let s = format!("{pool}{}", rng.below(100));
    let action = *rng.pick(&["add", "update", "delete"]);
    let group = *rng.pick(&[USERS, USERS, USERS, "APP:Example:Users"]);
    json!({"action": action, "group": group, "subject": s,
        "attributes": {"mail": [mail(&s)], "givenName": [format!("g{}", rng.below(1000))], "sn": ["Fuzz"]}})
}

fn ignored_event(rng: &mut XorShift) -> Value {
    let group = *rng.pick(&IGNORED_GROUPS);
    match rng.below(3) {
        0 => {
            let subjects: Vec<String> = (0..1 + rng.below(4)).map(|i| format!("ig{i}")).collect();
            let attrs: serde_json::Map<String, Value> = subjects
                .iter()
                .map(|s| (s.clone(), json!({"mail": [mail(s)]})))
                .collect();
            json!({"action": "membership_sync", "group": group, "subjects": subjects, "attributes": attrs})
        }
        1 => {
            let action = *rng.pick(&["add", "update", "delete"]);
            json!({"action": action, "group": group, "subject": "ig", "attributes": {"mail": ["ig@example.edu"]}})
        }
        // An unmanaged login in the provision group.
        _ => {
            let action = *rng.pick(&["add", "update", "delete"]);
            json!({"action": action, "group": USERS, "subject": "bg",
                "attributes": {"mail": ["breakglass@example.edu"], "givenName": ["B"], "sn": ["G"]}})
        }
    }
}

/// A body the parser must reject: a field of the wrong type.
fn wrong_type(rng: &mut XorShift) -> Value {
    let mut e = provision_event(rng, "wt");
    match rng.below(11) {
        0 => e["subject"] = json!(42),
        1 => e["group"] = json!([USERS]),
        2 => e["action"] = json!({"add": true}),
        3 => e["attributes"] = json!("mail=x@example.edu"),
        4 => e["attributes"]["mail"] = json!({"0": "x@example.edu"}),
        5 => e["attributes"]["givenName"] = json!([["nested"]]),
        6 => e["id"] = json!(true),
        7 => e["timestamp"] = json!(1_700_000_000),
        8 => e["actor"] = json!(["root"]),
        9 => e["attributes"]["sn"] = json!([null]),
        _ => e = json!({"action": "membership_sync", "group": USERS, "subjects": "a,b"}),
    }
    e
}

fn mutate(rng: &mut XorShift, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            bytes.push(b'{');
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.below(256) as u8,
            2 => {
                bytes.remove(at);
            }
            3 => bytes.insert(at, *rng.pick(b"{}[]\",:\\ 0a\x00\x7f")),
            _ => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
        }
    }
    bytes
}

/// Body `i` of the fuzz run and the verdict it must get.
fn fuzz_body(rng: &mut XorShift, i: usize) -> (Vec<u8>, Expect) {
    use Expect::{Any, Is};
    use Verdict::{Applied, DeadLettered, Ignored};
    const MB: usize = 1 << 20;
    // A few huge bodies (about 4 MB in all).
    match i {
        1000 => {
            let e = json!({"action": "add", "group": "app:other:users", "subject": "big",
                "attributes": {"mail": ["big@example.edu"], "givenName": ["x".repeat(MB)]}});
            return (e.to_string().into_bytes(), Is(Ignored));
        }
        4000 => {
            return (
                Value::String("y".repeat(MB)).to_string().into_bytes(),
                Is(DeadLettered),
            )
        }
        7000 => {
            let e = json!({"action": "add", "group": USERS, "subject": "huge", "note": "z".repeat(MB),
                "attributes": {"mail": ["huge@example.edu"], "givenName": ["H"], "sn": ["Uge"]}});
            return (e.to_string().into_bytes(), Is(Applied));
        }
        9000 => {
            return (
                (0..MB).map(|_| rng.below(256) as u8).collect(),
                Is(DeadLettered),
            )
        }
        _ => {}
    }
    let roll = rng.below(100);
    match roll {
        0..=14 => (
            provision_event(rng, "fz").to_string().into_bytes(),
            Is(Applied),
        ),
        15..=34 => (ignored_event(rng).to_string().into_bytes(), Is(Ignored)),
        35..=44 => {
            // Truncated JSON: every proper prefix of an object is invalid.
            let base = if rng.below(2) == 0 {
                provision_event(rng, "tr")
            } else {
                ignored_event(rng)
            };
            let text = base.to_string().into_bytes();
            let cut = rng.below(text.len() - 1);
            (text[..cut].to_vec(), Is(DeadLettered))
        }
        45..=54 => (wrong_type(rng).to_string().into_bytes(), Is(DeadLettered)),
        55..=61 => {
            let action = match rng.below(10) {
                0 => "x".repeat(1 + rng.below(2000)),
                k => [
                    "rename",
                    "ADD",
                    "Add",
                    "remove",
                    "sync",
                    "",
                    "  ",
                    "membership-sync",
                    "add ",
                ][k - 1]
                    .to_string(),
            };
            let mut e = provision_event(rng, "ua");
            e["action"] = json!(action);
            (e.to_string().into_bytes(), Is(DeadLettered))
        }
        62..=66 => {
            // Invalid UTF-8 somewhere in an otherwise valid event.
            let mut bytes = provision_event(rng, "iu").to_string().into_bytes();
            let choices: [&[u8]; 5] = [
                &[0xff],
                &[0xc0, 0xaf],
                &[0xed, 0xa0, 0x80],
                &[0xe2, 0x82],
                &[0x80],
            ];
            let bad = *rng.pick(&choices);
            let at = rng.below(bytes.len() + 1);
            bytes.splice(at..at, bad.iter().copied());
            (bytes, Is(DeadLettered))
        }
        67..=71 => {
            let depth = 2 + rng.below(1500);
            let body = match rng.below(3) {
                0 => format!(
                    r#"{{"action":"add","group":"{USERS}","subject":"dn","attributes":{{"mail":{}{}}}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                1 => format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)),
                _ => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            };
            (body.into_bytes(), Is(DeadLettered))
        }
        72..=76 => {
            let len = rng.below(300);
            (
                (0..len).map(|_| rng.below(256) as u8).collect(),
                Is(DeadLettered),
            )
        }
        _ => {
            let base = if rng.below(2) == 0 {
                provision_event(rng, "mz")
            } else {
                ignored_event(rng)
            };
            (mutate(rng, base.to_string().into_bytes()), Any)
        }
    }
}

/// 7. 10,000 random and mutated bodies: no panic, and every one accounted
/// for exactly once with the verdict its kind calls for; the dead-letter
/// queue holds exactly the dead-lettered ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_and_mutated_bodies_are_each_accounted_for() {
    let _broker = shared().await;
    const N: usize = 10_000;
    let mut h =
        Harness::start("retry = { initial_backoff_ms = 10, max_backoff_s = 1, max_attempts = 3 }")
            .await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut expect = Vec::with_capacity(N);
    let mut messages = Vec::with_capacity(N);
    for i in 0..N {
        let (body, e) = fuzz_body(&mut rng, i);
        expect.push(e);
        // The message id is the event id of every body without a usable `id` of its own (all of them).
        messages.push((
            body,
            BasicProperties::default().with_message_id(format!("fz-{i}").into()),
        ));
    }
    let volume: usize = messages.iter().map(|(b, _)| b.len()).sum();

    let started = Instant::now();
    let collector = collect_outcomes(&h, N, Duration::from_secs(240));
    publish_pipelined(&h.channel, &h.queue, &messages).await;
    let outcomes = collector.await.unwrap();
    let took = started.elapsed();

    let mut by_index: BTreeMap<usize, Vec<Verdict>> = BTreeMap::new();
    let mut strangers = Vec::new();
    for o in &outcomes {
        match o
            .event_id
            .strip_prefix("fz-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(i) if i < N => by_index.entry(i).or_default().push(o.verdict),
            _ => strangers.push(o.clone()),
        }
    }
    assert!(
        strangers.is_empty(),
        "outcomes with unknown ids: {strangers:#?}"
    );
    let missing: Vec<usize> = (0..N).filter(|i| !by_index.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} bodies without an outcome (a panic or a stuck worker?), e.g. {:?}: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        missing
            .iter()
            .take(3)
            .map(
                |&i| String::from_utf8_lossy(&messages[i].0[..messages[i].0.len().min(200)])
                    .to_string()
            )
            .collect::<Vec<_>>()
    );
    let twice: Vec<_> = by_index
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "bodies with more than one outcome: {twice:?}"
    );
    let wrong: Vec<String> = by_index
        .iter()
        .filter(|(i, v)| {
            // Coalesced into a later event of its subject that was applied:
            // an event that is, or (an unmanaged login's, merged into a
            // mutated event of the same subject whose mail is managed) one
            // that alone would have changed nothing.
            let coalesced = v[0] == Verdict::Coalesced;
            matches!(expect[**i], Expect::Is(want)
                if want != v[0] && !(coalesced && matches!(want, Verdict::Applied | Verdict::Ignored)))
        })
        .take(10)
        .map(|(i, v)| {
            let b = &messages[*i].0;
            format!(
                "#{i}: {:?}, expected {:?}: {}",
                v[0],
                expect[*i],
                String::from_utf8_lossy(&b[..b.len().min(300)])
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "unexpected verdicts:\n{}",
        wrong.join("\n")
    );

    let count = |verdict: Verdict| outcomes.iter().filter(|o| o.verdict == verdict).count();
    let (applied, ignored, dead) = (
        count(Verdict::Applied) + count(Verdict::Coalesced),
        count(Verdict::Ignored),
        count(Verdict::DeadLettered),
    );
    assert_eq!(applied + ignored + dead, N);
    assert!(applied > 0 && ignored > 0 && dead > 0);
    assert!(
        h.worker.as_ref().is_some_and(|w| !w.is_finished()),
        "the worker is still running"
    );

    // The dead-letter queue holds exactly the dead-lettered bodies, by event id.
    let dlq = format!("{}.dead", h.queue);
    assert_eq!(ready(&h.channel, &dlq).await as usize, dead);
    let want_ids: BTreeSet<String> = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::DeadLettered)
        .map(|o| o.event_id.clone())
        .collect();
    let reader = connect().await;
    let ch = reader.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            dlq.as_str().into(),
            "fuzz-dlq-check".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut parked_ids = BTreeSet::new();
    let deadline = Instant::now() + DEADLINE;
    while parked_ids.len() < dead {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id = header_str(&d.properties, "x-event-id").unwrap_or_default();
                assert!(parked_ids.insert(id.clone()), "parked twice: {id}");
            }
            other => panic!(
                "{} of {dead} parked messages read: {other:?}",
                parked_ids.len()
            ),
        }
    }
    assert_eq!(parked_ids, want_ids);
    let _ = reader.close(200, "checked".into()).await;
    h.stop().await;
    println!(
        "{N} bodies ({} KB): {applied} applied, {ignored} ignored, {dead} dead-lettered in {took:?}",
        volume / 1024
    );
    h.cleanup().await;
}

// ------------------------------------------------------------- idempotency

/// (email, first name, last name, status) of every account, and every
/// group's name with its members' emails.
type State = (
    Vec<(String, String, String, String)>,
    Vec<(String, Vec<String>)>,
);

fn normalized_state(mock: &MockTarget) -> State {
    // API ids are opaque and a re-created account gets a new one: compare everything else.
    let users = mock
        .users()
        .into_iter()
        .map(|u| (u.email.to_lowercase(), u.first_name, u.last_name, u.status))
        .collect();
    let groups = mock
        .groups()
        .into_iter()
        .map(|g| (g.name, g.members))
        .collect();
    (users, groups)
}

/// 8. Delivering the same batch a second time leaves the target in the state
/// the first delivery left it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_delivered_twice_give_the_same_state() {
    let _broker = shared().await;
    let h = Harness::start("").await;
    h.mock.add_group("Staff");
    h.mock.add_group("Admins");
    let exists_at_end = |i: usize| !i.is_multiple_of(5) || i.is_multiple_of(7);
    let mut batch = Vec::new();
    for i in 0..40usize {
        let s = format!("i{i:02}");
        let m = mail(&s);
        batch.push(add(USERS, &s, &m, "First", &format!("Sn{i}")));
        batch.push(json!({"action": "update", "group": USERS, "subject": s,
            "attributes": {"mail": [m], "givenName": [format!("Second{i}")], "sn": [format!("Sn{i}")]}}));
        batch.push(add(STAFF, &s, &m, "", ""));
        if i.is_multiple_of(4) {
            batch.push(delete(STAFF, &s, &m));
        }
        if i.is_multiple_of(5) {
            batch.push(delete(USERS, &s, &m));
        }
        if i.is_multiple_of(7) {
            batch.push(add(USERS, &s, &m, "Third", &format!("Sn{i}")));
        }
    }
    let admins: Vec<String> = (0..12)
        .filter(|&i| exists_at_end(i))
        .map(|i| format!("i{i:02}"))
        .collect();
    let attrs: serde_json::Map<String, Value> = admins
        .iter()
        .map(|s| (s.clone(), json!({"mail": [mail(s)]})))
        .collect();
    batch.push(json!({"action": "membership_sync", "group": "app:example:admins", "subjects": admins, "attributes": attrs}));

    let mut states = Vec::new();
    for pass in 1..=2 {
        let collector = collect_outcomes(&h, batch.len(), Duration::from_secs(60));
        publish_pipelined(&h.channel, &h.queue, &json_messages(&batch)).await;
        let outcomes = collector.await.unwrap();
        assert_eq!(outcomes.len(), batch.len(), "pass {pass}");
        let failed: Vec<_> = outcomes.iter().filter(|o| !took_effect(o)).collect();
        assert!(failed.is_empty(), "pass {pass}: {failed:#?}");
        states.push(normalized_state(&h.mock));
    }
    assert_eq!(
        states[0], states[1],
        "the second delivery changed the target"
    );
    let (users, groups) = &states[0];
    assert_eq!(users.len(), (0..40).filter(|&i| exists_at_end(i)).count());
    let members = |name: &str| {
        groups
            .iter()
            .find(|g| g.0 == name)
            .map(|g| g.1.len())
            .unwrap_or(0)
    };
    assert_eq!(members("Admins"), admins.len());
    assert!(members("Staff") > 0);
    h.cleanup().await;
}

// ---------------------------------------------------------------- scale-out

/// 9. Two worker processes on the same partitioned queues (partitions = 4,
/// single active consumer each): 5,000 events over 200 subjects, published
/// through the provisioner's topology; the active process is killed midway
/// and the other takes over. Every subject ends at its last event, with its
/// events applied in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_partitioned_queues_keep_per_subject_order() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("parts");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "partitions = 4\nconcurrency = 4\naccount_sync_rate_limit_ms = 1",
    );
    let mut d = Deployment::new(&text, "shutdown_grace_s = 5", "queue_type = \"quorum\"");
    let topology = Topology::of(&d.provisioner(), &d.config().amqp);
    let partitions = topology.consumed();
    assert_eq!(partitions.len(), 4);
    let conn = connect().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    if let Err(e) = amqp::declare(&conn, &topology).await {
        panic!("{e} (scripts/test.sh enables the plugin)");
    }

    // `a` subscribes first, so it is the active consumer of every partition; `b` stands by.
    let mut a = d.spawn("a");
    a.wait_consuming(&partitions).await;
    let mut b = d.spawn("b");
    b.wait_consuming(&partitions).await;

    let (subjects, events) = sequences("s", 200, 25);
    let total = events.len() as u32;
    let publisher = {
        let ch = ch.clone();
        let topology = topology.clone();
        tokio::spawn(async move {
            for e in &events {
                amqp::publish_event(
                    &ch,
                    &topology,
                    e.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        })
    };
    let reached = mock
        .wait_until(Duration::from_secs(60), |m| progress(m) >= 1500)
        .await;
    assert!(reached, "{} applied:\n{}", progress(&mock), a.log_text());
    a.kill9().await;
    let at_kill = progress(&mock);
    assert!(at_kill < total);
    publisher.await.unwrap();
    wait_all_at(
        &mock,
        &subjects,
        25,
        Duration::from_secs(120),
        &b.log_text(),
    )
    .await;
    assert_sequences_applied(&mock, &subjects, 25, 1).await;

    let (by_a, by_b) = (a.outcomes().len(), b.outcomes().len());
    assert!(
        by_a > 0 && by_b > 0,
        "both processes worked: a {by_a}, b {by_b}"
    );
    // Every partition was used.
    let queues_used: BTreeSet<String> = b
        .outcomes()
        .iter()
        .filter_map(|o| o["span"]["queue"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        queues_used,
        partitions.iter().cloned().collect::<BTreeSet<_>>()
    );

    b.sigterm();
    let status = b.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    for q in &partitions {
        assert_eq!(ready(&ch, q).await, 0, "{q} drained");
    }
    assert_eq!(ready(&ch, &topology.dead_letter).await, 0);
    delete_topology(&topology).await;
    println!("a applied {by_a}, b {by_b} (a killed at {at_kill}/{total})");
}

// ----------------------------------------------------------------- SIGTERM

/// 10. SIGTERM with ~50 events in flight: in-flight work finishes, the rest
/// goes back to the queue, the process exits 0 within `shutdown_grace_s`;
/// after a restart every event is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0_and_a_restart_applies_the_rest() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("term");
    let grace = 5;
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "account_sync_rate_limit_ms = 50\nconcurrency = 4",
    );
    let mut d = Deployment::new(
        &text,
        &format!("shutdown_grace_s = {grace}"),
        "queue_type = \"quorum\"",
    );
    let topology = d.topology();
    let conn = connect().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    amqp::declare(&conn, &topology).await.unwrap();

    let n = 60;
    let subjects: Vec<String> = (0..n).map(|i| format!("t{i:02}")).collect();
    let events: Vec<Value> = subjects.iter().map(|s| versioned(s, 1)).collect();
    publish_pipelined(&ch, &topology.queue, &json_messages(&events)).await;
    let mut w = d.spawn("w");
    assert!(
        mock.wait_until(DEADLINE, |m| m.users().len() >= 5).await,
        "{}",
        w.log_text()
    );
    // Everything is delivered (prefetch 64): what is not applied yet is in flight in the worker.
    assert_eq!(ready(&ch, &topology.queue).await, 0);
    let at_term = mock.users().len();
    assert!(n - at_term >= 45, "only {} events in flight", n - at_term);

    w.sigterm();
    let sent = Instant::now();
    let status = w.wait_exit(Duration::from_secs(grace + 10)).await;
    let took = sent.elapsed();
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "{status:?}\n{}",
        w.log_text()
    );
    assert!(
        took <= Duration::from_secs(grace) + Duration::from_millis(1500),
        "took {took:?} with shutdown_grace_s = {grace}"
    );
    let applied = mock.users().len();
    assert!(
        applied < n,
        "everything was applied before the exit: nothing was in flight"
    );
    // Finished work was acknowledged, the rest returned: the queue holds exactly what is not applied.
    let mut back = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        back = ready(&ch, &topology.queue).await as usize;
        if back == n - applied {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back, n - applied, "{applied} applied before the exit");
    assert!(w.log_text().contains("draining"));

    let mut again = d.spawn("again");
    let done = mock
        .wait_until(Duration::from_secs(60), |m| m.users().len() >= n)
        .await;
    assert!(
        done,
        "{} of {n} applied after the restart:\n{}",
        mock.users().len(),
        again.log_text()
    );
    assert_sequences_applied(&mock, &subjects, 1, 0).await;
    again.sigterm();
    let status = again.wait_exit(Duration::from_secs(grace + 10)).await;
    assert!(status.is_some_and(|s| s.code() == Some(0)), "{status:?}");
    assert_eq!(ready(&ch, &topology.queue).await, 0);
    assert_eq!(ready(&ch, &topology.dead_letter).await, 0);
    delete_topology(&topology).await;
    println!(
        "SIGTERM with {} in flight: exited 0 after {took:?}, {back} returned to the queue",
        n - at_term
    );
}

// ------------------------------------------------------- found while testing

/// A queue that already exists as a classic queue (created by
/// `provisioner publish --queue`, which always declares classic queues, or by
/// an earlier deployment) must still be consumed by a worker configured with
/// `[amqp] queue_type = "quorum"`: the key's documentation says "an existing
/// queue keeps its own" type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_classic_queue_is_consumed_by_a_worker_configured_for_quorum() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("qtype");
    let text = example_provisioner(&mock.url(), &queue, "");
    let mut d = Deployment::new(&text, "shutdown_grace_s = 2", "queue_type = \"quorum\"");
    let conn = connect().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let topology = Topology::plain(&queue);
    amqp::declare(&conn, &topology).await.unwrap();
    amqp::publish_event(
        &ch,
        &topology,
        versioned("qt", 1).to_string().as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut w = d.spawn("w");
    let applied = mock
        .wait_until(Duration::from_secs(15), |m| {
            m.user("qt@example.edu").is_some()
        })
        .await;
    w.sigterm();
    let status = w.wait_exit(Duration::from_secs(10)).await;
    let log = w.log_text();
    delete_topology(&topology).await;
    assert!(
        applied,
        "the event was never applied; worker log:\n{}",
        log.lines().take(6).collect::<Vec<_>>().join("\n")
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Messages of `queue` delivered and not yet acknowledged, as the broker
/// counts them.
async fn unacknowledged(queue: &str) -> u64 {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .await
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
        })
        .next()
        .unwrap_or_else(|| panic!("queue {queue} not listed: {text}"))
}

/// 12. An outage longer than the retry budget (4 s) and the acknowledgement
/// timeout (10 s here), with every broker connection closed in the middle:
/// while the target hangs the worker gives every delivery back (the broker
/// counts at most one unacknowledged), keeps probing, and resumes by itself
/// when the target answers; then every subject ends at its last event, in
/// order, and nothing was parked. Before, the budget ran out and every held
/// event was dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_every_budget_parks_nothing_and_holds_nothing() {
    let _broker = exclusive().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("outage");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "timeout_s = 1\nretry = { initial_backoff_ms = 100, max_backoff_s = 1, max_elapsed_s = 4, probe_first_s = 1, probe_max_s = 2 }",
    );
    let ack_timeout = Duration::from_secs(10);
    let amqp_cfg = provisioner::config::AmqpConfig {
        ack_timeout,
        ..amqp_config()
    };
    let h = Harness::start_configured(mock, queue.clone(), &text, amqp_cfg).await;
    let subjects: Vec<String> = (0..30).map(|i| format!("out{i:02}")).collect();
    let firsts: Vec<Value> = subjects.iter().map(|s| versioned(s, 1)).collect();
    publish_pipelined(&h.channel, &h.queue, &json_messages(&firsts)).await;
    wait_all_at(&h.mock, &subjects, 1, DEADLINE, "before the outage").await;

    // The outage: from now on no call gets an answer.
    h.mock.hang_next(1_000_000);
    let seen = h.mock.requests().len();
    let later: Vec<Value> = (2..=3)
        .flat_map(|v| subjects.iter().map(move |s| versioned(s, v)))
        .collect();
    publish_pipelined(&h.channel, &h.queue, &json_messages(&later)).await;
    assert!(h.mock.wait_for_requests(seen + 1, DEADLINE).await);
    let hang_started = Instant::now();
    rabbitmqctl(&[
        "close_all_connections",
        "test: connections closed mid-outage",
    ])
    .await;

    let outage = ack_timeout + Duration::from_secs(12);
    let mut samples = Vec::new();
    while hang_started.elapsed() < outage {
        samples.push((hang_started.elapsed(), unacknowledged(&queue).await));
    }
    let held_late: Vec<_> = samples
        .iter()
        .filter(|(at, _)| *at >= ack_timeout)
        .collect();
    assert!(held_late.len() >= 5, "too few samples: {samples:?}");
    assert!(
        held_late.iter().all(|(_, n)| *n <= 1),
        "deliveries held past the acknowledgement timeout: {samples:?}"
    );

    // The target is back: everything applies, in order, nothing parked.
    h.mock.clear_faults();
    let cleared = std::time::Instant::now();
    wait_all_at(
        &h.mock,
        &subjects,
        3,
        Duration::from_secs(60),
        "after the outage",
    )
    .await;
    assert_sequences_applied_after(&h.mock, &subjects, 3, 1, Some(cleared)).await;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let parked = take_all(&ch, &format!("{queue}.dead")).await;
    assert!(parked.is_empty(), "parked during an outage: {parked:?}");
    assert!(
        h.mock
            .requests()
            .iter()
            .any(|r| r.path.contains("provisioner-health-probe")),
        "the worker probed the target"
    );
    let mut h = h;
    h.stop().await;
    // The harness's own connection was closed mid-outage: clean up on ours.
    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// 13. No log line is longer than 8 KB, whatever the events carry: a valid
/// event and an invalid one with 200 KB ids, and a 200 KB action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_is_longer_than_8_kb() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("longlog");
    let mut d = Deployment::new(&example_provisioner(&mock.url(), &queue, ""), "", "");
    let mut w = d.spawn("worker");
    w.wait_consuming(std::slice::from_ref(&queue)).await;
    let conn = connect().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let huge = "i".repeat(200 * 1024);
    let mut valid = versioned("longid", 1);
    valid["id"] = json!(huge.clone());
    let events = [
        valid,
        json!({"id": format!("{huge}-2"), "action": "add", "group": USERS}),
        json!({"action": "x".repeat(200 * 1024), "group": USERS, "subject": "s"}),
    ];
    publish_pipelined(&ch, &queue, &json_messages(&events)).await;
    let done = w
        .wait_log(DEADLINE, |records| {
            records
                .iter()
                .filter(|r| r["fields"]["message"] == "event")
                .count()
                >= 3
        })
        .await;
    assert!(done, "{}", w.log_text());
    assert!(
        mock.user(&mail("longid")).is_some(),
        "the valid one applied"
    );
    w.sigterm();
    assert!(w.wait_exit(DEADLINE).await.is_some());
    let text = w.log_text();
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 8 * 1024, "a log line of {longest} bytes");
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .queue_delete(
            format!("{queue}.dead").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "bye".into()).await;
}

/// 14. Quorum queues are declared with at-least-once dead-lettering (and the
/// reject-publish overflow it needs): the broker's own dead-lettering after
/// `delivery_limit` never drops a message on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_dead_letter_at_least_once() {
    let _broker = shared().await;
    let queue = unique("quorum");
    let mut topology = Topology::plain(&queue);
    topology.queue_type = provisioner::config::QueueType::Quorum;
    let conn = connect().await;
    amqp::declare(&conn, &topology).await.unwrap();
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--formatter",
            "json",
            "name",
            "arguments",
        ])
        .output()
        .await
        .unwrap();
    delete_topology(&topology).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let args = listed
        .iter()
        .find(|q| q["name"] == queue.as_str())
        .map(|q| q["arguments"].to_string())
        .unwrap_or_else(|| panic!("{queue} not listed"));
    for want in [
        "x-dead-letter-strategy",
        "at-least-once",
        "x-overflow",
        "reject-publish",
        "x-delivery-limit",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// 15. Nothing is held past the hold limit (90 % of `ack_timeout_s`, 9 s
/// here): events waiting behind a sync that runs longer go back to the
/// queue and come again (redelivered), and the sync itself, still working,
/// is parked with the reason rather than left to the broker's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_past_the_hold_limit_go_back_and_a_sync_running_past_it_is_parked() {
    let _broker = shared().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("hold");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "concurrency = 1\naccount_sync_rate_limit_ms = 1000",
    );
    let amqp_cfg = provisioner::config::AmqpConfig {
        ack_timeout: Duration::from_secs(10),
        ..amqp_config()
    };
    let mut h = Harness::start_configured(mock, queue, &text, amqp_cfg).await;
    let subjects: Vec<String> = (0..12).map(|i| format!("big{i:02}")).collect();
    let attributes: serde_json::Map<String, Value> = subjects
        .iter()
        .map(|s| {
            (
                s.clone(),
                json!({"mail": [mail(s)], "givenName": ["G"], "sn": ["S"]}),
            )
        })
        .collect();
    h.publish(
        json!({"id": "long-sync", "action": "membership_sync", "group": USERS,
        "subjects": subjects, "attributes": attributes}),
    )
    .await;
    for i in 0..3 {
        h.publish(versioned(&format!("late{i}"), 1)).await;
    }
    let outcomes = h.outcomes(4).await;
    let sync = outcomes.iter().find(|o| o.event_id == "long-sync").unwrap();
    assert_eq!(sync.verdict, Verdict::DeadLettered, "{sync:?}");
    assert!(
        sync.detail.contains("not applied within 9 s"),
        "{}",
        sync.detail
    );
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.event_id != "long-sync")
        .collect();
    assert_eq!(late.len(), 3, "{outcomes:#?}");
    for o in late {
        assert_eq!(o.verdict, Verdict::Applied, "{o:?}");
        assert!(o.redelivered, "given back and delivered again: {o:?}");
    }
    h.cleanup().await;
}
