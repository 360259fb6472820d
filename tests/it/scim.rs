//! `kind = "scim"` end to end (issue #4): events through the real broker into
//! an in-process worker whose SCIM provisioner talks to the stateful mock
//! SCIM provider; each test checks the provider's final state (and, where it
//! matters, the requests it received).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use lapin::{BasicProperties, Channel, Connection};
use provisioner::worker::{OutcomeRecord, Verdict};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::support::mock_scim::{MockScim, ScimUser, USER_SCHEMA};
use crate::support::recorded::{query_param, RecordedRequest};
use crate::support::{amqp_config, connect, shared, unique, DEADLINE};

const USERS: &str = "app:scim:users";
const STAFF: &str = "app:scim:staff";
const TOKEN: &str = "scim-test-token";

/// The provisioner file: the `[scim]` defaults (docs/scim.md), bearer auth, `breakglass`
/// unmanaged, top-level keys (and a `[scim]` table) from `overrides`.
fn provisioner_text(url: &str, queue: &str, overrides: &str) -> String {
    let base = format!(
        r#"
kind = "scim"
url_prefix = "{url}"
queue = "{queue}"
provision_group = "{USERS}"
target_group_map = {{ "{STAFF}" = "Staff" }}
unmanaged_logins = ["breakglass"]
target_group_retry_delay = 1

[auth]
scheme = "bearer"
client_secret = "{TOKEN}"
"#
    );
    let mut table: toml::Table = toml::from_str(&base).unwrap();
    let extra: toml::Table = toml::from_str(overrides).unwrap();
    for (k, v) in extra {
        table.insert(k, v);
    }
    toml::to_string(&table).unwrap()
}

/// `support::Harness` for a SCIM provider: a worker over one `kind = "scim"`
/// provisioner file, the mock provider, and a publishing channel.
struct ScimHarness {
    mock: MockScim,
    queue: String,
    outcomes: broadcast::Receiver<OutcomeRecord>,
    shutdown: CancellationToken,
    worker: Option<tokio::task::JoinHandle<()>>,
    channel: Channel,
    _conn: Connection,
    _dir: tempfile::TempDir,
}

impl ScimHarness {
    /// A fresh mock (requiring the bearer token) and a worker for it.
    async fn start(overrides: &str) -> ScimHarness {
        let mock = MockScim::start().await.unwrap();
        mock.require_bearer(TOKEN);
        let queue = unique("scim");
        let text = provisioner_text(&mock.url(), &queue, overrides);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scim.toml");
        std::fs::write(&path, &text).unwrap();
        let mut cfg = match provisioner::config::from_provisioner_files(&[path]) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n--- provisioner file ---\n{text}"),
        };
        cfg.amqp = amqp_config();
        cfg.shutdown_grace = Duration::from_secs(10);
        let worker = provisioner::assembly::worker(cfg).unwrap();
        let outcomes = worker.subscribe();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        let conn = connect().await;
        let channel = provisioner::amqp::confirm_channel(&conn).await.unwrap();
        provisioner::amqp::declare_queues(&channel, &queue, &format!("{queue}.dead"))
            .await
            .unwrap();
        ScimHarness {
            mock,
            queue,
            outcomes,
            shutdown,
            worker: Some(handle),
            channel,
            _conn: conn,
            _dir: dir,
        }
    }

    /// Publishes with a confirm. Other test processes may close every broker
    /// connection (rabbitmqctl close_all_connections / stop_app) at any time;
    /// a publish refused because of that is sent again on a fresh connection
    /// until the deadline (a refused publish never reached the queue).
    async fn publish(&mut self, event: Value) {
        let body = event.to_string();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let sent = provisioner::amqp::publish_confirmed(
                &self.channel,
                &self.queue,
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await;
            match sent {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "publish failed; reconnecting");
                    self.reconnect(deadline).await;
                }
                Err(e) => panic!("publish failed until the deadline: {e}"),
            }
        }
    }

    /// A fresh connection and confirm channel, polling until the deadline.
    async fn reconnect(&mut self, deadline: tokio::time::Instant) {
        loop {
            let attempt = async {
                let conn = provisioner::amqp::connect(&amqp_config(), "provisioner:test").await?;
                let channel = provisioner::amqp::confirm_channel(&conn).await?;
                provisioner::amqp::declare_queues(
                    &channel,
                    &self.queue,
                    &format!("{}.dead", self.queue),
                )
                .await?;
                Ok::<_, provisioner::amqp::AmqpError>((conn, channel))
            };
            match attempt.await {
                Ok((conn, channel)) => {
                    self._conn = conn;
                    self.channel = channel;
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "broker not reachable yet");
                    // Polling interval while the broker is away, not a wait for an outcome.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no broker connection until the deadline: {e}"),
            }
        }
    }

    /// Waits for `n` outcomes, failing the test at the deadline.
    async fn outcomes(&mut self, n: usize) -> Vec<OutcomeRecord> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Ok(o)) => got.push(o),
                Ok(Err(broadcast::error::RecvError::Lagged(k))) => panic!("lagged {k} outcomes"),
                Ok(Err(e)) => panic!("outcome channel: {e}"),
                Err(_) => panic!(
                    "only {} of {n} outcomes before the deadline: {got:#?}\nrequests: {:#?}",
                    got.len(),
                    self.mock.request_lines()
                ),
            }
        }
        got
    }

    /// The next outcome, which must be `Applied`.
    async fn applied(&mut self) -> OutcomeRecord {
        let o = self.outcomes(1).await.remove(0);
        assert_eq!(
            o.verdict,
            Verdict::Applied,
            "{o:#?}\nrequests: {:#?}",
            self.lines()
        );
        o
    }

    /// Request lines with the `/scim/v2` prefix taken off and the query decoded.
    fn lines(&self) -> Vec<String> {
        self.mock.requests().iter().map(line).collect()
    }

    async fn cleanup(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.worker.take() {
            tokio::time::timeout(DEADLINE, h).await.unwrap().unwrap();
        }
        for q in [self.queue.clone(), format!("{}.dead", self.queue)] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

/// `"GET /Users?filter=userName eq \"jdoe\""`: method, path under the base,
/// decoded query.
fn line(r: &RecordedRequest) -> String {
    let path = r.decoded_path();
    let path = path.strip_prefix("/scim/v2").unwrap_or(&path).to_string();
    match &r.query {
        Some(q) => {
            let decoded: Vec<String> = url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{} {path}?{}", r.method, decoded.join("&"))
        }
        None => format!("{} {path}", r.method),
    }
}

/// LDAP-style attributes of a person.
fn person(subject: &str, given: &str, sn: &str) -> Value {
    json!({"mail": [format!("{subject}@example.edu")], "givenName": [given], "sn": [sn],
        "displayName": [format!("{given} {sn}")]})
}

fn event(action: &str, group: &str, subject: &str, attributes: Value) -> Value {
    json!({"action": action, "group": group, "subject": subject, "attributes": attributes})
}

fn sync(group: &str, subjects: &[String], given: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = subjects
        .iter()
        .map(|s| (s.clone(), person(s, given, "Synced")))
        .collect();
    json!({"action": "membership_sync", "group": group, "subjects": subjects, "attributes": attributes})
}

fn names(range: std::ops::Range<usize>, prefix: &str) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:02}")).collect()
}

fn user(h: &ScimHarness, user_name: &str) -> ScimUser {
    match h.mock.user(user_name) {
        Some(u) => u,
        None => panic!(
            "no user `{user_name}` on the provider: {:?}",
            h.mock
                .users()
                .iter()
                .map(|u| &u.user_name)
                .collect::<Vec<_>>()
        ),
    }
}

fn user_names(h: &ScimHarness) -> BTreeSet<String> {
    h.mock.users().into_iter().map(|u| u.user_name).collect()
}

/// Every resource by id, to show that nothing else changed.
fn snapshot(h: &ScimHarness) -> BTreeMap<String, Value> {
    h.mock
        .users()
        .into_iter()
        .map(|u| (u.id, u.resource))
        .collect()
}

/// Requests whose path (decoded) or body mention `id`.
fn touching(h: &ScimHarness, id: &str) -> Vec<String> {
    h.mock
        .requests()
        .iter()
        .filter(|r| {
            r.decoded_path().split('/').any(|seg| seg == id)
                || r.body.as_ref().is_some_and(|b| b.to_string().contains(id))
        })
        .map(line)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_accounts_are_created_with_mapped_attributes_updated_and_deleted() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("").await;
    let other = h
        .mock
        .add_user("other", "Other", "Person", "other@example.edu");
    let before = snapshot(&h);

    h.publish(event("add", USERS, "jdoe", person("jdoe", "John", "Doe")))
        .await;
    h.applied().await;
    let u = user(&h, "jdoe");
    assert_eq!(u.user_name, "jdoe");
    assert_eq!(u.given_name.as_deref(), Some("John"));
    assert_eq!(u.family_name.as_deref(), Some("Doe"));
    assert_eq!(u.emails, ["jdoe@example.edu"]);
    assert_eq!(u.display_name.as_deref(), Some("John Doe"));
    assert!(u.active);
    let posts: Vec<RecordedRequest> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{:?}", h.lines());
    let sent = posts[0].body.clone().unwrap();
    assert!(
        sent["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(USER_SCHEMA)),
        "{sent}"
    );
    for r in h.mock.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            line(&r)
        );
        if r.body.is_some() {
            let ct = r.header("content-type").unwrap_or_default();
            assert!(
                ct.starts_with("application/scim+json"),
                "{}: {ct}",
                line(&r)
            );
        }
        assert!(
            r.status.is_some_and(|s| s < 400),
            "{} got {:?}",
            line(&r),
            r.status
        );
    }

    h.mock.clear_requests();
    let mut attrs = person("jdoe", "Johnny", "Doe-Smith");
    attrs["mail"] = json!(["johnny@example.edu"]);
    h.publish(event("update", USERS, "jdoe", attrs)).await;
    h.applied().await;
    let v = user(&h, "jdoe");
    assert_eq!(v.id, u.id, "updated in place");
    assert_eq!(v.given_name.as_deref(), Some("Johnny"));
    assert_eq!(v.family_name.as_deref(), Some("Doe-Smith"));
    assert_eq!(v.emails, ["johnny@example.edu"]);
    assert_eq!(v.display_name.as_deref(), Some("Johnny Doe-Smith"));
    assert!(
        !h.lines().iter().any(|l| l.starts_with("POST")),
        "{:?}",
        h.lines()
    );

    h.mock.clear_requests();
    h.publish(event("delete", USERS, "jdoe", json!({}))).await;
    h.applied().await;
    assert!(h.mock.user("jdoe").is_none());
    assert!(
        h.lines().contains(&format!("DELETE /Users/{}", u.id)),
        "{:?}",
        h.lines()
    );
    assert_eq!(snapshot(&h), before, "`other` untouched");

    // Deleting what is gone makes no DELETE.
    h.mock.clear_requests();
    h.publish(event("delete", USERS, "jdoe", json!({}))).await;
    h.outcomes(1).await;
    assert!(
        !h.lines().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        h.lines()
    );
    assert!(touching(&h, &other).is_empty());
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_deactivate_mode_deactivates_and_a_later_add_reactivates() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("[scim]\ndeprovision = \"deactivate\"").await;
    h.publish(event("add", USERS, "jdoe", person("jdoe", "John", "Doe")))
        .await;
    h.applied().await;
    let id = user(&h, "jdoe").id;

    h.mock.clear_requests();
    h.publish(event("delete", USERS, "jdoe", json!({}))).await;
    h.applied().await;
    let u = user(&h, "jdoe");
    assert_eq!(u.id, id, "kept");
    assert!(!u.active, "deactivated");
    assert!(
        !h.lines().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        h.lines()
    );
    let patch = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH deactivates");
    assert_eq!(patch.decoded_path(), format!("/scim/v2/Users/{id}"));

    h.mock.clear_requests();
    h.publish(event("add", USERS, "jdoe", person("jdoe", "Jon", "Doe")))
        .await;
    h.applied().await;
    let u = user(&h, "jdoe");
    assert_eq!(u.id, id, "the same account, not a new one");
    assert!(u.active, "re-activated by the add");
    assert_eq!(u.given_name.as_deref(), Some("Jon"));
    assert_eq!(h.mock.users().len(), 1);

    // An account sync deactivates unlisted active accounts, and leaves the
    // inactive ones (deprovisioned already) and the unmanaged one alone.
    let stale = h.mock.add_user("stale", "S", "S", "stale@example.edu");
    let gone = h.mock.add_user("gone", "G", "G", "gone@example.edu");
    assert!(h.mock.set_active("gone", false));
    let bg = h
        .mock
        .add_user("breakglass", "Break", "Glass", "bg@example.edu");
    h.mock.clear_requests();
    h.publish(sync(
        USERS,
        &["jdoe".to_string(), "fresh".to_string()],
        "Synced",
    ))
    .await;
    h.applied().await;
    assert!(!user(&h, "stale").active);
    assert!(!user(&h, "gone").active);
    assert!(touching(&h, &gone).is_empty(), "{:?}", touching(&h, &gone));
    assert!(touching(&h, &bg).is_empty());
    assert!(user(&h, "breakglass").active);
    assert!(user(&h, "jdoe").active && user(&h, "fresh").active);
    assert_eq!(user(&h, "fresh").given_name.as_deref(), Some("Synced"));
    assert!(!touching(&h, &stale).is_empty());
    assert!(
        !h.lines().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        h.lines()
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_group_members_are_added_and_removed() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("").await;
    let alice = h.mock.add_user("alice", "A", "L", "alice@example.edu");
    let bob = h.mock.add_user("bob", "B", "O", "bob@example.edu");
    let gid = h.mock.add_group("Staff");
    h.mock.add_group("Other");
    assert!(h.mock.add_member("Staff", "bob"));
    assert!(h.mock.add_member("Other", "bob"));

    h.publish(event("add", STAFF, "alice", person("alice", "A", "L")))
        .await;
    h.applied().await;
    assert_eq!(h.mock.members("Staff"), ["alice", "bob"]);
    let patches: Vec<RecordedRequest> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{:?}", h.lines());
    assert_eq!(patches[0].decoded_path(), format!("/scim/v2/Groups/{gid}"));
    let ops = &patches[0].body.as_ref().unwrap()["Operations"];
    assert_eq!(
        ops[0]["op"].as_str().map(str::to_lowercase).as_deref(),
        Some("add")
    );
    assert!(ops.to_string().contains(&alice), "{ops}");

    // Adding again is harmless.
    h.publish(event("add", STAFF, "alice", person("alice", "A", "L")))
        .await;
    h.applied().await;
    assert_eq!(h.mock.members("Staff"), ["alice", "bob"]);

    h.mock.clear_requests();
    h.publish(event("delete", STAFF, "bob", json!({}))).await;
    h.applied().await;
    assert_eq!(h.mock.members("Staff"), ["alice"]);
    assert_eq!(h.mock.members("Other"), ["bob"], "another group untouched");
    assert!(
        h.mock.user("bob").is_some(),
        "leaving a group keeps the account"
    );
    let removal = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH removes the member");
    assert!(removal.body.unwrap().to_string().contains(&bob));
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_missing_groups_are_created_when_configured() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("[scim]\ncreate_missing_groups = true").await;
    h.mock.add_user("alice", "A", "L", "alice@example.edu");
    h.publish(event("add", STAFF, "alice", person("alice", "A", "L")))
        .await;
    h.applied().await;
    assert!(h.mock.group("Staff").is_some(), "{:?}", h.lines());
    assert_eq!(h.mock.members("Staff"), ["alice"]);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_account_membership_sync_is_exact_over_short_pages() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("").await;
    // A provider that returns fewer than asked and no itemsPerPage.
    h.mock.set_page_cap(Some(7));
    h.mock.set_omit_items_per_page(true);
    for n in names(0..30, "s") {
        h.mock
            .add_user(&n, "Old", "Old", &format!("{n}@example.edu"));
    }
    let bg = h
        .mock
        .add_user("breakglass", "Break", "Glass", "bg@example.edu");
    let bg_before = user(&h, "breakglass").resource;

    // Stated: s10..s44 (s10..s29 exist, s30..s44 do not; s00..s09 go).
    let listed = names(10..45, "s");
    h.publish(sync(USERS, &listed, "Synced")).await;
    h.applied().await;
    let mut want: BTreeSet<String> = listed.iter().cloned().collect();
    want.insert("breakglass".into());
    assert_eq!(user_names(&h), want);
    assert_eq!(
        user(&h, "s15").given_name.as_deref(),
        Some("Synced"),
        "existing updated"
    );
    assert_eq!(user(&h, "s15").family_name.as_deref(), Some("Synced"));
    let s40 = user(&h, "s40");
    assert_eq!(
        s40.given_name.as_deref(),
        Some("Synced"),
        "created with attributes"
    );
    assert_eq!(s40.emails, ["s40@example.edu"]);
    assert_eq!(
        user(&h, "breakglass").resource,
        bg_before,
        "unmanaged untouched"
    );
    assert!(touching(&h, &bg).is_empty());
    let lines = h.lines();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("DELETE")).count(),
        10,
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "POST /Users").count(),
        15,
        "{lines:?}"
    );

    assert_eq!(
        lines.iter().filter(|l| l.starts_with("PATCH")).count(),
        20,
        "the 20 listed users there before differ: {lines:?}"
    );

    // The same sync again changes nothing, and sends nothing but the
    // listing, which asks for what an update sets to compare it.
    h.mock.clear_requests();
    h.publish(sync(USERS, &listed, "Synced")).await;
    h.applied().await;
    assert_eq!(user_names(&h), want);
    assert!(
        h.lines().iter().all(|l| l.starts_with("GET /Users?")),
        "{:?}",
        h.lines()
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_group_membership_sync_is_exact() {
    for strategy in ["add-member-first", "query-first"] {
        let _broker = shared().await;
        // Two thirds of the members change: above the default mass-deprovision guard.
        let mut h = ScimHarness::start(&format!(
            "group_sync_strategy = \"{strategy}\"\nmax_removal_share = 1"
        ))
        .await;
        for n in names(0..30, "g") {
            h.mock.add_user(&n, "U", "U", &format!("{n}@example.edu"));
        }
        h.mock
            .add_user("breakglass", "Break", "Glass", "bg@example.edu");
        h.mock.add_group("Staff");
        h.mock.add_group("Other");
        // Start: g00..g14 and the unmanaged account; Other has g00.
        for n in names(0..15, "g") {
            assert!(h.mock.add_member("Staff", &n));
        }
        assert!(h.mock.add_member("Staff", "breakglass"));
        assert!(h.mock.add_member("Other", "g00"));
        let accounts = user_names(&h);

        // Stated: g10..g24.
        let listed = names(10..25, "g");
        h.publish(sync(STAFF, &listed, "U")).await;
        h.applied().await;
        let mut want = listed.clone();
        want.push("breakglass".into());
        want.sort();
        assert_eq!(h.mock.members("Staff"), want, "{strategy}");
        assert_eq!(
            h.mock.members("Other"),
            ["g00"],
            "{strategy}: other group untouched"
        );
        assert_eq!(
            user_names(&h),
            accounts,
            "{strategy}: a group sync creates or deletes no account"
        );

        h.mock.clear_requests();
        h.publish(sync(STAFF, &listed, "U")).await;
        h.applied().await;
        assert_eq!(h.mock.members("Staff"), want, "{strategy}");
        if strategy == "query-first" {
            assert!(
                !h.lines().iter().any(|l| l.starts_with("PATCH")),
                "{strategy}: nothing to change, nothing changed: {:?}",
                h.lines()
            );
        }
        h.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_unmanaged_accounts_are_never_touched() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("").await;
    h.mock
        .add_user("breakglass", "Break", "Glass", "bg@example.edu");
    h.mock.add_group("Staff");
    assert!(h.mock.add_member("Staff", "breakglass"));
    let before = snapshot(&h);
    h.publish(event(
        "add",
        USERS,
        "breakglass",
        person("breakglass", "X", "Y"),
    ))
    .await;
    h.publish(event(
        "update",
        USERS,
        "BreakGlass",
        person("breakglass", "X", "Y"),
    ))
    .await;
    h.publish(event("delete", USERS, "breakglass", json!({})))
        .await;
    h.publish(event("delete", STAFF, "breakglass", json!({})))
        .await;
    let outcomes = h.outcomes(4).await;
    assert!(
        outcomes.iter().all(|o| o.verdict == Verdict::Ignored),
        "{outcomes:#?}"
    );
    assert!(h.lines().is_empty(), "no request at all: {:?}", h.lines());
    assert_eq!(snapshot(&h), before);
    assert_eq!(h.mock.members("Staff"), ["breakglass"]);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_hostile_user_names_are_provisioned_exactly_and_touch_nothing_else() {
    let _broker = shared().await;
    let mut h = ScimHarness::start("").await;
    for n in [
        "victim",
        "a",
        "b",
        "x",
        "ab",
        "a\\b",
        "amp",
        "amp&count=0 plus ",
    ] {
        h.mock.add_user(n, "Victim", n, &format!("{n}@example.edu"));
    }
    h.mock.add_group("Staff");
    assert!(h.mock.add_member("Staff", "victim"));
    let before = snapshot(&h);
    let hostile = [
        "a\"b",
        "x\" or userName pr or \"",
        "back\\slash\"",
        "amp&count=0+plus%20",
    ];

    for n in hostile {
        h.publish(event("add", USERS, n, person("hostile", "Hostile", "Name")))
            .await;
        h.applied().await;
    }
    for n in hostile {
        let u = user(&h, n);
        // Subjects are lowercased on arrival (docs/events.md), so the userName (the
        // subject, by default) is exactly the lowercased subject.
        assert_eq!(u.user_name, n.to_lowercase(), "exactly that name");
        assert_eq!(u.given_name.as_deref(), Some("Hostile"));
    }
    assert_eq!(h.mock.users().len(), before.len() + hostile.len());
    let now = snapshot(&h);
    for (id, resource) in &before {
        assert_eq!(now.get(id), Some(resource), "{id} untouched");
    }
    // Each look-up was one correctly escaped comparison.
    for r in h.mock.requests() {
        if let Some(filter) = query_param(&r, "filter") {
            let ok = hostile.iter().any(|n| {
                filter
                    == format!(
                        "userName eq {}",
                        serde_json::to_string(&n.to_lowercase()).unwrap()
                    )
            });
            assert!(ok, "unexpected filter {filter:?}");
        }
        assert!(
            r.status.is_some_and(|s| s < 400),
            "{} got {:?}",
            line(&r),
            r.status
        );
    }

    // Update and group membership address only that account.
    h.mock.clear_requests();
    h.publish(event(
        "update",
        USERS,
        hostile[1],
        person("hostile", "Changed", "Name"),
    ))
    .await;
    h.applied().await;
    h.publish(event("add", STAFF, hostile[1], json!({}))).await;
    h.applied().await;
    assert_eq!(user(&h, hostile[1]).given_name.as_deref(), Some("Changed"));
    assert_eq!(user(&h, hostile[0]).given_name.as_deref(), Some("Hostile"));
    let mut members = vec![hostile[1].to_lowercase(), "victim".to_string()];
    members.sort();
    assert_eq!(h.mock.members("Staff"), members);

    // Deleting removes that account and no other.
    h.publish(event("delete", USERS, hostile[1], json!({})))
        .await;
    h.applied().await;
    h.publish(event("delete", USERS, hostile[0], json!({})))
        .await;
    h.applied().await;
    assert!(h.mock.user(hostile[0]).is_none() && h.mock.user(hostile[1]).is_none());
    assert!(h.mock.user(hostile[2]).is_some());
    let now = snapshot(&h);
    for (id, resource) in &before {
        assert_eq!(now.get(id), Some(resource), "{id} untouched");
    }
    assert_eq!(h.mock.members("Staff"), ["victim"]);
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_thousand_member_group_sync_reads_in_pages_and_changes_in_batches() {
    let _broker = shared().await;
    // query-first: the sync reads the group once and changes only the
    // differences (add-member-first would add every listed member blindly).
    let mut h = ScimHarness::start("group_sync_strategy = \"query-first\"").await;
    let user_count = 1005;
    let name = |i: usize| format!("u{i:04}");
    for i in 0..user_count {
        h.mock
            .add_user(&name(i), "U", "U", &format!("{}@example.edu", name(i)));
    }
    h.mock.add_group("Staff");
    for i in 0..1000 {
        assert!(h.mock.add_member("Staff", &name(i)));
    }
    // Stated: u0005..u1004: five members go, five come (10 differ).
    let listed: Vec<String> = (5..user_count).map(name).collect();
    h.mock.clear_requests();
    h.publish(sync(STAFF, &listed, "U")).await;
    h.applied().await;
    let mut want = listed.clone();
    want.sort();
    assert_eq!(h.mock.members("Staff"), want);

    // Budget (page_size 100, member_batch_size 100 by default):
    //   reads: the group listing (1 page) + the group itself (1) + the user
    //          listing (ceil(1005 / 100) = 11 pages) + one look-up per member
    //          to add (its id is needed; 5)
    //   writes: ceil(5 / 100) PATCH adding + ceil(5 / 100) PATCH removing.
    let page = 100;
    let reads = 1 + 1 + user_count.div_ceil(page) + 5;
    let writes = 5usize.div_ceil(page) + 5usize.div_ceil(page);
    let lines = h.lines();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        let kind = if l.starts_with("GET /Users?") && l.contains("filter=") {
            "GET /Users?filter (look-up)".to_string()
        } else if let Some((head, _)) = l.split_once('?') {
            format!("{head}?...")
        } else if l.starts_with("GET /Groups/") || l.starts_with("PATCH /Groups/") {
            l.split('/').take(2).collect::<Vec<_>>().join("/") + "/{id}"
        } else if l.starts_with("GET /Users/") {
            "GET /Users/{id}".to_string()
        } else {
            l.clone()
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        lines.len() <= reads + writes,
        "{} requests for a 10-member difference, budget {reads} reads + {writes} writes: {kinds:#?}",
        lines.len()
    );
    h.cleanup().await;
}
