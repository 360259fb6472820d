//! The worker on a RabbitMQ cluster of three nodes, started by
//! scripts/rabbitmq-cluster.sh apart from the machine's own broker: two
//! worker processes over four quorum-queue partitions while a producer
//! (`provisioner publish`) publishes, and the node they are connected to is
//! killed (kill -9 of its Erlang VM). Every event is applied, in order per
//! subject, the queues drain, nothing is dead-lettered, and the workers
//! (and the producer) reconnect to another node by themselves. Then the
//! same with the node restarted: it rejoins and the queues' replicas on it
//! catch up.
//!
//! The cluster starts once for these tests (they take turns) and is left
//! running for the next; scripts/test.sh stops it. Where RabbitMQ cannot be
//! started, the tests say so and pass without checking anything.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use provisioner::amqp::{self, Topology};
use provisioner::config::{AmqpConfig, BrokerUrls, QueueType};
use serde_json::Value;
use tokio::time::Instant;

use crate::guarantees::{assert_sequences_applied, progress, ready, sequences, wait_all_at};
use crate::process::{Deployment, WorkerProcess};
use crate::support::mock_rest::MockTarget;
use crate::support::*;

/// The nodes' AMQP URLs (comma-separated), or why the cluster could not start.
fn cluster() -> &'static Result<String, String> {
    static STARTED: OnceLock<Result<String, String>> = OnceLock::new();
    STARTED.get_or_init(|| {
        let started = script(&["start"]);
        if !started.status.success() {
            return Err(format!(
                "scripts/rabbitmq-cluster.sh start failed ({}):\n{}{}",
                started.status,
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr)
            ));
        }
        let urls = script(&["urls"]);
        Ok(String::from_utf8_lossy(&urls.stdout).trim().to_string())
    })
}

/// The tests kill and restart nodes: one at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script(args: &[&str]) -> std::process::Output {
    std::process::Command::new(repo_path("scripts/rabbitmq-cluster.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/rabbitmq-cluster.sh")
}

/// Runs the script off the runtime's threads; panics if it fails.
async fn script_ok(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        script(&args)
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/rabbitmq-cluster.sh {args:?}: {}\n{text}",
        out.status
    );
    text
}

/// The cluster's URLs with every node up, or `None` (the test is skipped,
/// saying why).
async fn whole_cluster() -> Option<String> {
    let urls = match tokio::task::spawn_blocking(cluster).await.unwrap() {
        Ok(urls) => urls.clone(),
        Err(why) => {
            println!("SKIPPED: the 3-node RabbitMQ cluster could not be started, so the cluster tests check nothing here.\n{why}");
            return None;
        }
    };
    // An earlier test may have left a node down; `restart` starts only those.
    for n in ["1", "2", "3"] {
        script_ok(&["restart", n]).await;
    }
    Some(urls)
}

/// The node numbers (1–3) a worker's log says it connected to, in order,
/// from record `from` on.
fn nodes_connected(w: &WorkerProcess, from: usize) -> Vec<u8> {
    w.records()
        .iter()
        .skip(from)
        .filter(|r| r["fields"]["message"] == "connected to the broker")
        .filter_map(|r| node_of(r["fields"]["node"].as_str()?))
        .collect()
}

/// The node number of a cluster URL as logged (`...@127.0.0.1:568N/...`).
fn node_of(shown: &str) -> Option<u8> {
    let port = shown.split("127.0.0.1:568").nth(1)?;
    match port.chars().next()? {
        c @ '1'..='3' => Some(c as u8 - b'0'),
        _ => None,
    }
}

/// The connections the broker node `n` holds for `provisioner:<name>`.
async fn connections_on(n: u8, name: &str) -> usize {
    let listed = script_ok(&[
        "ctl",
        &n.to_string(),
        "-q",
        "list_connections",
        "client_properties",
        "--formatter",
        "json",
    ])
    .await;
    let json = &listed[listed.find('[').unwrap_or(0)..];
    let rows: Vec<Value> = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("list_connections: {e}\n{listed}"));
    rows.iter()
        // The name a client gives its connection is among its properties.
        .filter(|r| r.to_string().contains(&format!("\"provisioner:{name}\"")))
        .count()
}

/// The replicas of a quorum queue as node `n` reports them: (node, raft
/// state, commit index).
async fn replicas(n: u8, queue: &str) -> Vec<(String, String, i64)> {
    let out = script_ok(&[
        "queues",
        &n.to_string(),
        "-q",
        "quorum_status",
        queue,
        "--formatter",
        "json",
    ])
    .await;
    let json = &out[out.find('[').unwrap_or(0)..];
    let rows: Vec<Value> = serde_json::from_str(json.trim()).unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                r["Node Name"].as_str().unwrap_or_default().to_string(),
                r["Raft State"].as_str().unwrap_or_default().to_string(),
                r["Commit Index"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Polls until every one of `queues` has a replica on each of the three
/// nodes, one leader, the others followers, all at the leader's commit
/// index; fails showing the last status.
async fn wait_replicas_recovered(n: u8, queues: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for q in queues {
        loop {
            let status = replicas(n, q).await;
            let leaders = status.iter().filter(|r| r.1 == "leader").count();
            let followers = status.iter().filter(|r| r.1 == "follower").count();
            let commits: BTreeSet<i64> = status.iter().map(|r| r.2).collect();
            let nodes: BTreeSet<&str> = status.iter().map(|r| r.0.as_str()).collect();
            if status.len() == 3
                && nodes.len() == 3
                && leaders == 1
                && followers == 2
                && commits.len() == 1
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas of {q} did not recover: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn cluster_amqp(urls: &str) -> AmqpConfig {
    AmqpConfig {
        url: BrokerUrls::split(urls),
        queue_type: QueueType::Quorum,
        ..amqp_config()
    }
}

/// Two workers over four partitions and a producer; the node the workers
/// are connected to is killed while events flow; with `restart`, it is
/// started again once they have moved.
async fn lose_a_node(restart: bool) {
    let _turn = TURN.lock().await;
    let Some(urls) = whole_cluster().await else {
        return;
    };
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("cluster");
    let text = example_provisioner(
        &mock.url(),
        &queue,
        "partitions = 4\nconcurrency = 4\naccount_sync_rate_limit_ms = 1",
    );
    let mut d = Deployment::on_broker(
        &text,
        "shutdown_grace_s = 5",
        "queue_type = \"quorum\"",
        &urls,
    );
    let name = d.provisioner().name;
    let topology = Topology::of(&d.provisioner(), &d.config().amqp);
    let partitions = topology.consumed();
    let amqp_config = cluster_amqp(&urls);
    let conn = amqp::connect(&amqp_config, "provisioner:test")
        .await
        .unwrap();
    amqp::declare(&conn, &topology).await.unwrap();
    let _ = conn.close(200, "declared".into()).await;
    let mut every_queue = partitions.clone();
    every_queue.push(topology.dead_letter.clone());
    // Quorum queues, one replica per node, before anything is killed.
    wait_replicas_recovered(1, &every_queue).await;

    let a = d.spawn("a");
    a.wait_consuming(&partitions).await;
    let b = d.spawn("b");
    b.wait_consuming(&partitions).await;
    // Both list the nodes in the same order, so both are on the first
    // that answers: killing it takes both workers' node (and leaves the
    // other two, a majority of every queue's replicas).
    let before: Vec<Vec<u8>> = [&a, &b].iter().map(|w| nodes_connected(w, 0)).collect();
    let victim = before[0][0];
    for (w, nodes) in [&a, &b].iter().zip(&before) {
        assert!(
            nodes.len() == partitions.len() && nodes.iter().all(|n| *n == victim),
            "{} connected to nodes {nodes:?}, not all to {victim}",
            w.label
        );
    }
    assert_eq!(
        connections_on(victim, &name).await,
        2 * partitions.len(),
        "the broker's view of who is on node {victim}"
    );

    let (subjects, events) = sequences("c", 100, 20);
    let total = events.len() as u32;
    let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
    let events_file = d.dir.path().join("events.jsonl");
    std::fs::write(&events_file, lines).unwrap();
    // The producer's output (both streams) goes to one file.
    let producer_log = d.dir.path().join("producer.log");
    let producer_out = std::fs::File::create(&producer_log).unwrap();
    let mut publisher = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["publish", "--config"])
        .arg(&d.worker_toml)
        .args(["--provisioner", &name])
        .arg(&events_file)
        .env("AMQP_URL", &urls)
        .stdin(Stdio::null())
        .stdout(producer_out.try_clone().unwrap())
        .stderr(producer_out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let flowing = mock
        .wait_until(Duration::from_secs(60), |m| progress(m) >= total / 5)
        .await;
    assert!(flowing, "{} applied:\n{}", progress(&mock), a.log_text());
    let records_at_kill = [a.records().len(), b.records().len()];
    script_ok(&["kill", &victim.to_string()]).await;
    let at_kill = progress(&mock);
    assert!(at_kill < total, "events were still flowing at the kill");

    // Each worker moves every partition's connection to another node, by itself.
    for (w, from) in [&a, &b].iter().zip(records_at_kill) {
        let moved = w
            .wait_log(Duration::from_secs(60), |records| {
                let after: Vec<u8> = records
                    .iter()
                    .skip(from)
                    .filter(|r| r["fields"]["message"] == "connected to the broker")
                    .filter_map(|r| node_of(r["fields"]["node"].as_str()?))
                    .collect();
                after.len() >= partitions.len()
            })
            .await;
        assert!(moved, "{} did not reconnect:\n{}", w.label, w.log_text());
        let after = nodes_connected(w, from);
        assert!(
            after.iter().all(|n| *n != victim),
            "{} reconnected to {after:?}, the killed node {victim} among them",
            w.label
        );
    }
    if restart {
        script_ok(&["restart", &victim.to_string()]).await;
    }

    let published = tokio::time::timeout(Duration::from_secs(120), publisher.wait()).await;
    let producer_said = std::fs::read_to_string(&producer_log).unwrap_or_default();
    let Ok(published) = published else {
        panic!("the producer did not finish: {producer_said}");
    };
    let published = published.unwrap();
    assert!(published.success(), "producer: {producer_said}");
    wait_all_at(
        &mock,
        &subjects,
        20,
        Duration::from_secs(120),
        &format!("{}\n{}", a.log_text(), b.log_text()),
    )
    .await;
    // A run applied but not acknowledged when the node died comes again,
    // and the producer republishes what was not confirmed: each may take
    // a subject back once.
    assert_sequences_applied(&mock, &subjects, 20, 2).await;

    // Drained: nothing ready, nothing held, nothing parked, by either
    // worker or by the broker's delivery limit.
    for w in [&a, &b] {
        w.sigterm();
    }
    let (mut a, mut b) = (a, b);
    for w in [&mut a, &mut b] {
        let status = w.wait_exit(Duration::from_secs(20)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: {status:?}",
            w.label
        );
        let log = w.log_text();
        assert!(
            !log.contains("guest:guest"),
            "a password in {}'s log",
            w.label
        );
        let parked = w
            .outcomes()
            .iter()
            .filter(|o| o["fields"]["result"] == "dead-lettered")
            .count();
        assert_eq!(parked, 0, "{} parked events", w.label);
    }
    assert!(!producer_said.contains("guest:guest"), "{producer_said}");
    // The test's own connection, to a node that is up.
    let conn = amqp::connect(&amqp_config, "provisioner:test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in &partitions {
        assert_eq!(ready(&ch, q).await, 0, "{q} drained");
    }
    assert_eq!(ready(&ch, &topology.dead_letter).await, 0, "dead letters");

    if restart {
        // The restarted node is back in the cluster and holds an
        // up-to-date replica of every queue again.
        let running = script_ok(&["ctl", "1", "-q", "cluster_status", "--formatter", "json"]).await;
        assert!(
            running.contains(&format!("prov-c{victim}@localhost")),
            "{running}"
        );
        let other = if victim == 1 { 2 } else { 1 };
        wait_replicas_recovered(other, &every_queue).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    println!(
        "node {victim} killed at {at_kill}/{total}; a applied {}, b {}; producer: {}",
        a.outcomes().len(),
        b.outcomes().len(),
        producer_said
            .lines()
            .filter(|l| l.contains("reconnecting"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

/// The node both workers are on is killed while events flow; they move to
/// another node by themselves and nothing is lost, reordered or parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_workers_node_loses_nothing_and_they_move_to_another() {
    lose_a_node(false).await;
}

/// The same, and the killed node is started again: it rejoins the cluster
/// and every queue's replica on it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarted_rejoins_and_its_replicas_recover() {
    lose_a_node(true).await;
}

/// On the machine's broker (no cluster needed): the nodes are tried in
/// order from the one asked for, a node that does not answer is skipped,
/// and when none answers the error names every node, without passwords.
#[tokio::test]
async fn the_first_node_that_answers_is_used_and_a_failure_names_every_node() {
    let _broker = shared().await;
    let live = amqp_url();
    let dead = "amqp://guest:node-pw-Zt51@127.0.0.1:1/%2f";
    let config = |urls: &str| AmqpConfig {
        url: BrokerUrls::split(urls),
        ..amqp_config()
    };

    let both = config(&format!("{dead},{live}"));
    let c = amqp::connect_from(&both, "provisioner:test", 0)
        .await
        .unwrap();
    assert_eq!(c.node, 1, "the dead first node is skipped");
    let _ = c.connection.close(200, "bye".into()).await;
    // Starting after a lost node wraps around the list.
    let c = amqp::connect_from(&both, "provisioner:test", 3)
        .await
        .unwrap();
    assert_eq!(c.node, 1);
    let _ = c.connection.close(200, "bye".into()).await;

    let none = config(&format!("{dead},amqp://guest:node-pw-Zt51@127.0.0.1:2/%2f"));
    let e = match amqp::connect(&none, "provisioner:test").await {
        Ok(_) => panic!("connected to a port nobody listens on"),
        Err(e) => format!("{e} {e:?}"),
    };
    assert!(
        e.contains("127.0.0.1:1/") && e.contains("127.0.0.1:2/"),
        "{e}"
    );
    assert!(!e.contains("node-pw-Zt51"), "{e}");
}
