//! Ownership through the whole service (`assembly::run`: real broker, the
//! journal's SQLite store, the admin API) against the mock target, which
//! starts with accounts and memberships the worker never made: with
//! `remove_only_owned = true` an account sync and a group sync remove only
//! what the worker created, and report the others in the journal; with
//! `false` they remove everything not listed, as the original did. And the
//! dry-run plan of `replay` shows what would be left alone.

use std::time::Duration;

use provisioner::assembly::ServiceError;
use provisioner::engine::ownership::Ownership;
use provisioner::journal::{JournalSettings, OwnershipStore, Store};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::mock_rest::MockTarget;
use crate::support::*;

const USERS: &str = "app:example:users";
const STAFF: &str = "app:example:staff";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mail(who: &str) -> String {
    format!("{who}@example.edu")
}

fn add(group: &str, who: &str) -> Value {
    json!({"action": "add", "group": group, "subject": who,
           "attributes": {"mail": [mail(who)], "givenName": [who], "sn": ["Owned"]}})
}

fn sync(group: &str, who: &[&str]) -> Value {
    let attributes: serde_json::Map<String, Value> = who
        .iter()
        .map(|w| {
            (
                w.to_string(),
                json!({"mail": [mail(w)], "givenName": [w], "sn": ["Owned"]}),
            )
        })
        .collect();
    json!({"action": "membership_sync", "group": group, "subjects": who, "attributes": attributes})
}

/// The service over the example provisioner with `remove_only_owned` as
/// given, a journal in an SQLite file, and the admin API on loopback.
struct Service {
    dir: tempfile::TempDir,
    mock: MockTarget,
    queue: String,
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Service {
    async fn start(mock: MockTarget, remove_only_owned: bool) -> Service {
        let queue = unique("owned");
        let dir = tempfile::tempdir().unwrap();
        let text = example_provisioner(
            &mock.url(),
            &queue,
            &format!("remove_only_owned = {remove_only_owned}"),
        );
        std::fs::write(dir.path().join("example.toml"), text).unwrap();
        let port = free_port();
        let worker = format!(
            "provisioners = [\"example.toml\"]\nshutdown_grace_s = 5\n\n[amqp]\nurl = \"{}\"\nreconnect_max_s = 2\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[journal]\npath = \"journal.sqlite\"\n",
            amqp_url()
        );
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, worker).unwrap();
        let config = provisioner::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(provisioner::assembly::run(config, shutdown.clone()));
        let s = Service {
            dir,
            mock,
            queue,
            base: format!("http://127.0.0.1:{port}"),
            shutdown,
            task,
        };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", s.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    async fn publish(&self, event: Value) {
        let conn = connect().await;
        let ch = provisioner::amqp::confirm_channel(&conn).await.unwrap();
        provisioner::amqp::declare(&conn, &provisioner::amqp::Topology::plain(&self.queue))
            .await
            .unwrap();
        provisioner::amqp::publish_confirmed(
            &ch,
            &self.queue,
            event.to_string().as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    }

    /// The journal's rows, newest first, once there are `n`.
    async fn rows(&self, n: usize) -> Vec<Value> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let page: Value = client
                .get(format!("{}/v1/events?limit=1000", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rows = page["events"].as_array().cloned().unwrap_or_default();
            if rows.len() >= n {
                return rows;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes `event` and returns its journal row (the `n`th).
    async fn apply(&self, event: Value, n: usize) -> Value {
        self.publish(event).await;
        let row = self.rows(n).await.remove(0);
        assert_eq!(row["result"], "applied", "{row}");
        row
    }

    fn journal_path(&self) -> std::path::PathBuf {
        self.dir.path().join("journal.sqlite")
    }

    /// Stops the service and deletes its queues; the mock and the directory
    /// (with the journal's store) stay for inspection.
    async fn stop(self) -> (MockTarget, tempfile::TempDir) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let conn = connect().await;
        let ch = conn.create_channel().await.unwrap();
        for q in [self.queue.clone(), format!("{}.dead", self.queue)] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
        (self.mock, self.dir)
    }
}

/// The target before the worker starts: `s1` and `s2`, members of Staff,
/// none of it made by the worker. Returns their IDs and Staff's.
fn strangers(mock: &MockTarget) -> (String, String, String) {
    let s1 = mock.add_user(&mail("s1"), "S", "One");
    let s2 = mock.add_user(&mail("s2"), "S", "Two");
    let staff = mock.add_group("Staff");
    assert!(mock.add_member("Staff", &mail("s1")));
    assert!(mock.add_member("Staff", &mail("s2")));
    (s1, s2, staff)
}

/// The worker creates `m1` and `m2` and adds both to Staff; then a group
/// sync and an account sync name only `m1`. Returns the requests each sync
/// made, their journal rows, and the IDs.
struct Run {
    group_requests: Vec<String>,
    group_row: Value,
    account_requests: Vec<String>,
    account_row: Value,
    ids: [String; 5],
}

async fn run(remove_only_owned: bool) -> (Run, MockTarget, tempfile::TempDir) {
    let mock = MockTarget::start().await.unwrap();
    let (s1, s2, staff) = strangers(&mock);
    let svc = Service::start(mock, remove_only_owned).await;
    svc.apply(add(USERS, "m1"), 1).await;
    svc.apply(add(USERS, "m2"), 2).await;
    svc.apply(add(STAFF, "m1"), 3).await;
    svc.apply(add(STAFF, "m2"), 4).await;
    let m1 = svc.mock.user(&mail("m1")).unwrap().id;
    let m2 = svc.mock.user(&mail("m2")).unwrap().id;

    svc.mock.clear_requests();
    let group_row = svc.apply(sync(STAFF, &["m1"]), 5).await;
    let group_requests = svc.mock.request_lines();
    svc.mock.clear_requests();
    let account_row = svc.apply(sync(USERS, &["m1"]), 6).await;
    let account_requests = svc.mock.request_lines();
    let journal = svc.journal_path();
    let (mock, dir) = svc.stop().await;
    assert!(journal.exists());
    (
        Run {
            group_requests,
            group_row,
            account_requests,
            account_row,
            ids: [s1, s2, staff, m1, m2],
        },
        mock,
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_remove_only_owned_syncs_remove_only_what_the_worker_made_and_report_the_rest() {
    let _broker = shared().await;
    let (run, mock, dir) = run(true).await;
    let [s1, s2, staff, m1, m2] = &run.ids;

    assert_eq!(
        run.group_requests,
        [
            format!("GET /groups/{staff}/members?page_size=300&page_number=1"),
            format!("POST /groups/{staff}/members"),
            format!("DELETE /groups/{staff}/members/{m2}"),
        ]
    );
    assert_eq!(
        run.group_row["detail"],
        "group sync Staff: 1 added, 1 removed, 2 left alone: not owned: s1@example.edu; s2@example.edu"
    );
    assert_eq!(
        run.account_requests,
        [
            "GET /users?page_size=300&page_number=1".to_string(),
            format!("DELETE /users/{m2}"),
        ]
    );
    assert_eq!(
        run.account_row["detail"],
        "account sync: 0 created, 0 updated, 1 already up to date, 1 deprovisioned, 2 left alone: not owned: s1@example.edu; s2@example.edu"
    );
    let users: Vec<String> = mock.users().into_iter().map(|u| u.email).collect();
    assert_eq!(users, [mail("m1"), mail("s1"), mail("s2")]);
    assert_eq!(mock.members("Staff"), [mail("m1"), mail("s1"), mail("s2")]);

    // The records are in the journal's store, for the next process.
    let store = OwnershipStore::open(&JournalSettings::new(Store::Sqlite(
        dir.path().join("journal.sqlite"),
    )))
    .await
    .unwrap();
    let owned = store.owned_accounts("example").await.unwrap();
    assert_eq!(owned, [m1.clone()].into_iter().collect());
    let members = store.owned_members("example", "staff").await.unwrap();
    assert_eq!(members, [m1.clone()].into_iter().collect());
    assert!(!owned.contains(s1) && !owned.contains(s2));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_remove_only_owned_syncs_remove_everything_not_listed() {
    let _broker = shared().await;
    let (run, mock, _dir) = run(false).await;
    let [s1, s2, staff, _m1, m2] = &run.ids;

    let mut removed: Vec<String> = run.group_requests[2..].to_vec();
    removed.sort();
    let mut expected = vec![
        format!("DELETE /groups/{staff}/members/{m2}"),
        format!("DELETE /groups/{staff}/members/{s1}"),
        format!("DELETE /groups/{staff}/members/{s2}"),
    ];
    expected.sort();
    assert_eq!(
        run.group_requests[..2],
        [
            format!("GET /groups/{staff}/members?page_size=300&page_number=1"),
            format!("POST /groups/{staff}/members"),
        ]
    );
    assert_eq!(removed, expected, "{:?}", run.group_requests);
    assert_eq!(
        run.group_row["detail"],
        "group sync Staff: 1 added, 3 removed"
    );

    let mut removed: Vec<String> = run.account_requests[1..].to_vec();
    removed.sort();
    let mut expected = vec![
        format!("DELETE /users/{m2}"),
        format!("DELETE /users/{s1}"),
        format!("DELETE /users/{s2}"),
    ];
    expected.sort();
    assert_eq!(
        run.account_requests[0],
        "GET /users?page_size=300&page_number=1"
    );
    assert_eq!(removed, expected, "{:?}", run.account_requests);
    assert_eq!(
        run.account_row["detail"],
        "account sync: 0 created, 0 updated, 1 already up to date, 3 deprovisioned"
    );
    let users: Vec<String> = mock.users().into_iter().map(|u| u.email).collect();
    assert_eq!(users, [mail("m1")]);
    assert_eq!(mock.members("Staff"), [mail("m1")]);
}

/// `replay --dry-run` reads the records of the worker file's journal store
/// and shows, beside the writes, each account a sync would leave alone;
/// applying records what it creates, so a later plan removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_plan_shows_what_would_be_left_alone() {
    let mock = MockTarget::start().await.unwrap();
    let (s1, s2, _) = strangers(&mock);
    let dir = tempfile::tempdir().unwrap();
    let text = example_provisioner(
        &mock.url(),
        &unique("rp"),
        "name = \"rp\"\nremove_only_owned = true",
    );
    std::fs::write(dir.path().join("rp.toml"), text).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"rp.toml\"]\n[journal]\npath = \"journal.sqlite\"\n",
    )
    .unwrap();
    let replay = |dry: bool, events: Vec<Value>| {
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        std::fs::write(dir.path().join("events.jsonl"), lines.join("\n")).unwrap();
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
        c.arg("--config").arg(dir.path().join("worker.toml"));
        c.args(["replay", "--provisioner", "rp"]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg(dir.path().join("events.jsonl"));
        c.output()
    };

    let out = replay(true, vec![sync(USERS, &["new"])]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    for expected in [
        "would create account `new@example.edu`".to_string(),
        format!("account {s1} (`s1@example.edu`) left alone: not owned"),
        format!("account {s2} (`s2@example.edu`) left alone: not owned"),
    ] {
        assert!(
            stdout.contains(&expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains("would deprovision"), "{stdout}");
    assert!(
        mock.user(&mail("new")).is_none(),
        "a dry run writes nothing"
    );

    let out = replay(false, vec![sync(USERS, &["new"])]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let new = mock.user(&mail("new")).unwrap().id;
    assert_eq!(mock.users().len(), 3, "s1 and s2 left alone");

    let out = replay(true, vec![sync(USERS, &[])]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "would deprovision account {new} (`new@example.edu`)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "account {s1} (`s1@example.edu`) left alone: not owned"
        )),
        "{stdout}"
    );
    assert_eq!(mock.users().len(), 3);
}
