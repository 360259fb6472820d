//! The admin API and the journal, through the whole service
//! (`assembly::run`): events flow through the real broker into the mock
//! target, and their outcomes, the metrics and the controls are checked
//! over HTTP (and HTTPS), with and without credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use provisioner::assembly::ServiceError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::mock_rest::MockTarget;
use crate::support::*;

/// A free port on loopback (the admin API binds it right after).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole service on a fresh queue: worker file, provisioner file,
/// journal and admin API, running in this process (`explain.rs` and `console.rs` use it too).
pub(crate) struct Service {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) mock: MockTarget,
    pub(crate) queue: String,
    pub(crate) base: String,
    pub(crate) worker_toml: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Service {
    /// `admin` and `journal`: the bodies of those tables (the port is added).
    pub(crate) async fn start(admin: &str, journal: &str, provisioner_overrides: &str) -> Service {
        let probe = reqwest::Client::new();
        Self::start_probed(admin, journal, provisioner_overrides, probe).await
    }

    /// [`Service::start`], polling readiness with `probe` (an HTTPS client).
    pub(crate) async fn start_probed(
        admin: &str,
        journal: &str,
        provisioner_overrides: &str,
        probe: reqwest::Client,
    ) -> Service {
        let mock = MockTarget::start().await.unwrap();
        let queue = unique("admin");
        let dir = tempfile::tempdir().unwrap();
        let text = example_provisioner(&mock.url(), &queue, provisioner_overrides);
        std::fs::write(dir.path().join("example.toml"), text).unwrap();
        let port = free_port();
        let worker_toml = format!(
            "provisioners = [\"example.toml\"]\nshutdown_grace_s = 5\n\n[amqp]\nurl = \"{}\"\nreconnect_max_s = 2\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{admin}\n\n[journal]\n{journal}\n",
            amqp_url()
        );
        let scheme = if admin.contains("[admin.tls]") {
            "https"
        } else {
            "http"
        };
        let mut s = Service {
            dir,
            mock,
            queue,
            base: format!("{scheme}://127.0.0.1:{port}"),
            worker_toml,
            shutdown: CancellationToken::new(),
            task: tokio::spawn(async { Ok(()) }),
        };
        s.task = s.launch();
        s.wait_ready(&probe).await;
        s
    }

    fn launch(&mut self) -> tokio::task::JoinHandle<Result<(), ServiceError>> {
        let path = self.dir.path().join("worker.toml");
        std::fs::write(&path, &self.worker_toml).unwrap();
        let config = provisioner::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        self.shutdown = CancellationToken::new();
        tokio::spawn(provisioner::assembly::run(config, self.shutdown.clone()))
    }

    /// Until /readyz says ready (the consumer is consuming).
    async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service never got ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    async fn restart(&mut self) {
        self.stop().await;
        self.task = self.launch();
        self.wait_ready(&reqwest::Client::new()).await;
    }

    pub(crate) async fn publish(&self, events: &[Value]) {
        let conn = connect().await;
        let ch = provisioner::amqp::confirm_channel(&conn).await.unwrap();
        let topology = provisioner::amqp::Topology::plain(&self.queue);
        provisioner::amqp::declare(&conn, &topology).await.unwrap();
        for e in events {
            provisioner::amqp::publish_confirmed(
                &ch,
                &self.queue,
                e.to_string().as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        let _ = conn.close(200, "bye".into()).await;
    }

    pub(crate) async fn cleanup(mut self) {
        self.stop().await;
        let conn = connect().await;
        let ch = conn.create_channel().await.unwrap();
        for q in [self.queue.clone(), format!("{}.dead", self.queue)] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
}

/// A request with optional credentials: `Some(("bearer", token))` or
/// `Some(("basic", "user:password"))`.
pub(crate) async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let mut req = client.request(method, url);
    match auth {
        Some(("bearer", token)) => req = req.bearer_auth(token),
        Some(("basic", pair)) => {
            let (u, p) = pair.split_once(':').unwrap();
            req = req.basic_auth(u, Some(p));
        }
        _ => {}
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// The outcome rows the journal has for a query.
async fn events(client: &reqwest::Client, base: &str, query: &str) -> Value {
    let (status, body) = call(
        client,
        Method::GET,
        &format!("{base}/v1/events?{query}"),
        Some(("bearer", "reader-token")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/v1/events` until `n` rows match `query`.
pub(crate) async fn wait_events(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    n: usize,
) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let page = events(client, base, &format!("{query}&limit=1000")).await;
        if page["events"].as_array().map_or(0, Vec::len) >= n {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {page} for `{query}`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) const TOKENS: &str = r#"
[[admin.tokens]]
role = "read"
token = "reader-token"

[[admin.tokens]]
role = "operate"
token = "operator-token"
"#;

fn users(hash: &str) -> String {
    format!(
        "\n[[admin.users]]\nname = \"oncall\"\nrole = \"operate\"\npassword_hash = \"{hash}\"\n"
    )
}

/// Every endpoint without credentials (401, but the probes), with the
/// wrong role (403) and the right one; passwords and tokens never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_the_right_role_and_refuses_the_others() {
    let _broker = shared().await;
    let hash = provisioner::admin::auth::hash_password("correct horse").unwrap();
    let svc = Service::start(
        &format!("{TOKENS}{}", users(&hash)),
        "path = \"journal.sqlite\"",
        "",
    )
    .await;
    let client = reqwest::Client::new();
    let base = &svc.base;
    let name = "example";
    let read = Some(("bearer", "reader-token"));
    let operate = Some(("bearer", "operator-token"));
    let user = Some(("basic", "oncall:correct horse"));

    // Probes answer everyone.
    for path in ["/healthz", "/readyz"] {
        let (s, body) = call(&client, Method::GET, &format!("{base}{path}"), None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
    let reads = [
        "/metrics".to_string(),
        "/v1/provisioners".into(),
        format!("/v1/provisioners/{name}"),
        format!("/v1/provisioners/{name}/subjects/jdoe"),
        "/v1/events".into(),
        format!("/v1/dead-letters/{name}"),
        "/v1/config".into(),
        "/v1/openapi.json".into(),
    ];
    for path in &reads {
        let url = format!("{base}{path}");
        let (s, _) = call(&client, Method::GET, &url, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} without credentials");
        let (s, _) = call(&client, Method::GET, &url, Some(("bearer", "wrong"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} with a wrong token");
        let (s, _) = call(&client, Method::GET, &url, Some(("basic", "oncall:wrong"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} with a wrong password");
        for who in [read, operate, user] {
            let (s, body) = call(&client, Method::GET, &url, who).await;
            assert_eq!(s, StatusCode::OK, "{path} as {who:?}: {body}");
        }
    }
    let writes = [
        format!("/v1/provisioners/{name}/pause"),
        format!("/v1/provisioners/{name}/resume"),
        format!("/v1/provisioners/{name}/cache/clear"),
        format!("/v1/dead-letters/{name}/requeue"),
    ];
    for path in &writes {
        let url = format!("{base}{path}");
        let (s, _) = call(&client, Method::POST, &url, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} without credentials");
        let (s, body) = call(&client, Method::POST, &url, read).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{path} with the read role: {body}"
        );
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["status"], 403);
        assert!(err["error"].as_str().unwrap().contains("operate"), "{body}");
        for who in [operate, user] {
            let (s, body) = call(&client, Method::POST, &url, who).await;
            assert_eq!(s, StatusCode::OK, "{path} as {who:?}: {body}");
        }
    }
    // Errors are JSON with their status.
    let (s, body) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/provisioners/nope"),
        read,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], 404);
    let (s, body) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/events?result=maybe"),
        read,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/events?from=yesterday"),
        read,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The configuration shows no secret; the OpenAPI document lists every endpoint.
    let (_, config) = call(&client, Method::GET, &format!("{base}/v1/config"), read).await;
    for secret in [
        "reader-token",
        "operator-token",
        hash.as_str(),
        "guest:guest",
    ] {
        assert!(!config.contains(secret), "{secret} in {config}");
    }
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["provisioners"][0]["name"], name);
    let (_, doc) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/openapi.json"),
        read,
    )
    .await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/provisioners",
        "/v1/provisioners/{name}",
        "/v1/provisioners/{name}/pause",
        "/v1/provisioners/{name}/resume",
        "/v1/provisioners/{name}/cache/clear",
        "/v1/provisioners/{name}/subjects/{subject}",
        "/v1/events",
        "/v1/dead-letters/{name}",
        "/v1/dead-letters/{name}/requeue",
        "/v1/config",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} not in the OpenAPI document"
        );
    }
    svc.cleanup().await;
}

/// Events through the broker, then each outcome found through /v1/events
/// by subject, result, group, event id and time, page by page; the journal
/// survives a restart; /metrics parses and counts what was processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_found_in_the_journal_survive_a_restart_and_match_the_metrics() {
    let _broker = shared().await;
    journal_scenario("path = \"journal.sqlite\"").await;
}

/// The same with the journal in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_found_in_a_postgresql_journal_survive_a_restart_and_match_the_metrics() {
    let _broker = shared().await;
    let schema = crate::support::pg::Schema::create().await;
    journal_scenario(&format!("url = \"{}\"", schema.url())).await;
}

async fn journal_scenario(journal: &str) {
    let mut svc = Service::start(TOKENS, journal, "").await;
    let client = reqwest::Client::new();
    let mut batch: Vec<Value> = (0..5)
        .map(|i| {
            let mut e = add(
                USERS,
                &format!("jr{i}"),
                &format!("jr{i}@example.edu"),
                "J",
                "R",
            );
            e["id"] = json!(format!("ev-{i}"));
            e
        })
        .collect();
    batch.push(json!({"id": "ev-bad", "action": "rename", "group": USERS, "subject": "x"}));
    batch.push(json!({"id": "ev-other", "action": "add", "group": "app:other", "subject": "jr0"}));
    let before = provisioner::journal::now_ms();
    svc.publish(&batch).await;
    let base = svc.base.clone();
    let all = wait_events(&client, &base, "provisioner=example", 7).await;
    assert_eq!(all["events"].as_array().unwrap().len(), 7, "{all}");

    let one = events(&client, &base, "subject=JR3").await;
    let rows = one["events"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{one}");
    assert_eq!(rows[0]["event_id"], "ev-3");
    assert_eq!(rows[0]["result"], "applied");
    assert_eq!(rows[0]["action"], "add");
    let calls: Vec<String> = rows[0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["method"],
                c["path_template"].as_str().unwrap(),
                c["status"]
            )
        })
        .collect();
    assert_eq!(
        calls,
        ["\"GET\" /users/{{ match }} 404", "\"POST\" /users 201",],
        "the calls with their templates and statuses"
    );
    let dead = events(&client, &base, "result=dead-lettered").await;
    let dead = dead["events"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event_id"], "ev-bad");
    assert!(dead[0]["detail"]
        .as_str()
        .unwrap()
        .contains("unknown action"));
    let ignored = events(&client, &base, "result=ignored&group=app:other").await;
    assert_eq!(ignored["events"].as_array().unwrap().len(), 1, "{ignored}");
    let by_id = events(&client, &base, "event_id=ev-2").await;
    assert_eq!(by_id["events"][0]["subject"], "jr2");
    let from = provisioner::worker::status::rfc3339(u64::try_from(before).unwrap());
    let since = events(&client, &base, &format!("from={from}&provisioner=example")).await;
    assert_eq!(since["events"].as_array().unwrap().len(), 7);
    let none = events(&client, &base, &format!("to={from}")).await;
    assert!(none["events"].as_array().unwrap().is_empty(), "{none}");

    // Paging: 3 at a time, every row exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("provisioner=example&limit=3&cursor={c}"),
            None => "provisioner=example&limit=3".into(),
        };
        let page = events(&client, &base, &q).await;
        for row in page["events"].as_array().unwrap() {
            seen.push(row["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );

    // The metrics parse and count what was processed.
    let (_, text) = call(
        &client,
        Method::GET,
        &format!("{base}/metrics"),
        Some(("bearer", "reader-token")),
    )
    .await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut counted: BTreeMap<String, f64> = BTreeMap::new();
    for s in &scrape.samples {
        if s.metric == "provisioner_events_total" {
            let result = s.labels.get("result").unwrap_or_default().to_string();
            if let prometheus_parse::Value::Counter(v) = s.value {
                *counted.entry(result).or_default() += v;
            }
        }
    }
    assert_eq!(counted.get("applied"), Some(&5.0), "{counted:?}\n{text}");
    assert_eq!(counted.get("dead-lettered"), Some(&1.0), "{counted:?}");
    assert_eq!(counted.get("ignored"), Some(&1.0), "{counted:?}");
    let calls: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "provisioner_target_calls_total")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => Some(v),
            _ => None,
        })
        .sum();
    assert_eq!(
        calls as usize,
        svc.mock.requests().len(),
        "every call counted"
    );
    for name in [
        "provisioner_target_up",
        "provisioner_in_flight",
        "provisioner_account_cache_hits_total",
        "provisioner_journal_rows_dropped_total",
        "provisioner_pacing_rate",
        "provisioner_pacing_concurrency",
        "provisioner_target_throttled_total",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
    }
    // Nothing throttled: adaptive pacing allows the configured concurrency.
    let (_, view) = call(
        &client,
        Method::GET,
        &format!("{base}/v1/provisioners/example"),
        Some(("bearer", "reader-token")),
    )
    .await;
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["pacing"]["throttled"], 0, "{view}");
    assert!(
        view["pacing"]["concurrency"].as_u64().unwrap() >= 1,
        "{view}"
    );

    // The journal survives a restart.
    svc.restart().await;
    let again = events(&client, &base, "provisioner=example&limit=100").await;
    assert_eq!(again["events"].as_array().unwrap().len(), 7, "{again}");
    svc.cleanup().await;
}

/// Pause: new messages stay in the queue (the worker holds none); resume:
/// they are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_leaves_new_messages_in_the_queue_and_resume_applies_them() {
    let _broker = shared().await;
    let svc = Service::start(TOKENS, "path = \"journal.sqlite\"", "").await;
    let client = reqwest::Client::new();
    let base = &svc.base;
    let op = Some(("bearer", "operator-token"));
    let (s, body) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/provisioners/example/pause"),
        op,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(&client, Method::GET, &format!("{base}/readyz"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("paused"), "{body}");
    let events: Vec<Value> = (0..5)
        .map(|i| {
            add(
                USERS,
                &format!("pz{i}"),
                &format!("pz{i}@example.edu"),
                "P",
                "Z",
            )
        })
        .collect();
    svc.publish(&events).await;
    // The broker holds all five, none delivered.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let view = loop {
        let (_, body) = call(
            &client,
            Method::GET,
            &format!("{base}/v1/provisioners/example"),
            op,
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let q = &v["queues"][0];
        if q["messages"] == 5 && v["in_flight"] == 0 {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["state"], "paused", "{view}");
    assert!(
        svc.mock.requests().is_empty(),
        "nothing applied while paused"
    );
    let (s, _) = call(
        &client,
        Method::POST,
        &format!("{base}/v1/provisioners/example/resume"),
        op,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        svc.mock
            .wait_until(DEADLINE, |m| m.users().len() == 5)
            .await,
        "resumed and applied"
    );
    svc.cleanup().await;
}

/// The journal's store becomes unavailable (another connection holds
/// SQLite's write lock): every event is still applied, and the journal's
/// dropped rows are counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_apply_while_the_journal_store_is_unavailable_and_drops_are_counted() {
    use sqlx::Connection;
    let _broker = shared().await;
    let svc = Service::start(TOKENS, "path = \"journal.sqlite\"\nqueue = 5", "").await;
    let client = reqwest::Client::new();
    let db = svc.dir.path().join("journal.sqlite");
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let events: Vec<Value> = (0..40)
        .map(|i| {
            add(
                USERS,
                &format!("jd{i}"),
                &format!("jd{i}@example.edu"),
                "J",
                "D",
            )
        })
        .collect();
    svc.publish(&events).await;
    assert!(
        svc.mock
            .wait_until(DEADLINE, |m| m.users().len() == 40)
            .await,
        "every event applied although the journal cannot write"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, text) = call(
            &client,
            Method::GET,
            &format!("{}/metrics", svc.base),
            Some(("bearer", "reader-token")),
        )
        .await;
        let dropped = text
            .lines()
            .find(|l| l.starts_with("provisioner_journal_rows_dropped_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dropped rows counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);
    svc.cleanup().await;
}

/// An admin address already in use is a clear error before anything is
/// consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_in_use_is_a_startup_error() {
    let _broker = shared().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("inuse");
    std::fs::write(
        dir.path().join("example.toml"),
        example_provisioner(&mock.url(), &queue, ""),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        format!("provisioners = [\"example.toml\"]\n[amqp]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n", amqp_url()),
    )
    .unwrap();
    let config = provisioner::config::load(&dir.path().join("worker.toml")).unwrap();
    let e = tokio::time::timeout(
        DEADLINE,
        provisioner::assembly::run(config, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("listen"),
        "{e}"
    );
    drop(taken);
}

/// The PostgreSQL journal, shared by two worker processes on one queue:
/// the events of both are found through one admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_a_postgresql_journal() {
    let _broker = shared().await;
    let schema = crate::support::pg::Schema::create().await;
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("pgj");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("example.toml"),
        example_provisioner(&mock.url(), &queue, "concurrency = 2"),
    )
    .unwrap();
    let port = free_port();
    let journal = format!("[journal]\nurl = \"{}\"\n", schema.url());
    let a = format!(
        "provisioners = [\"example.toml\"]\n[amqp]\nurl = \"{}\"\nprefetch = 5\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{TOKENS}\n{journal}",
        amqp_url()
    );
    let b = format!(
        "provisioners = [\"example.toml\"]\n[amqp]\nurl = \"{}\"\nprefetch = 5\n{journal}",
        amqp_url()
    );
    std::fs::write(dir.path().join("a.toml"), a).unwrap();
    std::fs::write(dir.path().join("b.toml"), b).unwrap();
    let spawn = |file: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .arg("--config")
            .arg(dir.path().join(file))
            .arg("run")
            .env("AMQP_URL", amqp_url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut pa = spawn("a.toml");
    let mut pb = spawn("b.toml");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Both consume before anything is published, so both get deliveries.
    wait_consumers(&queue, 2).await;
    let events: Vec<Value> = (0..60)
        .map(|i| {
            add(
                USERS,
                &format!("pg{i}"),
                &format!("pg{i}@example.edu"),
                "P",
                "G",
            )
        })
        .collect();
    let conn = connect().await;
    let ch = provisioner::amqp::confirm_channel(&conn).await.unwrap();
    for e in &events {
        provisioner::amqp::publish_confirmed(
            &ch,
            &queue,
            e.to_string().as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let page = wait_events(&client, &base, "provisioner=example", 60).await;
    let workers: std::collections::BTreeSet<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["worker"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(workers.len(), 2, "rows of both processes: {workers:?}");
    assert_eq!(mock.users().len(), 60);
    let _ = pa.start_kill();
    let _ = pb.start_kill();
    let _ = pa.wait().await;
    let _ = pb.wait().await;
    for q in [queue.clone(), format!("{queue}.dead")] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// Until the broker counts `n` consumers on `queue`.
async fn wait_consumers(queue: &str, n: u32) {
    let conn = connect().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        if let Ok(q) = q {
            if q.consumer_count() >= n {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: fewer than {n} consumers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// The admin API over HTTPS: with `client_ca`, a client without a
/// certificate is refused at the handshake, one with a certificate signed by
/// the CA gets in (and still needs its token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_required_client_certificate() {
    let _broker = shared().await;
    let pki = crate::support::pki::Pki::new();
    let tls = format!(
        "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let svc = Service::start_probed(
        &format!("{TOKENS}{tls}"),
        "path = \"journal.sqlite\"",
        "",
        pki.client(true),
    )
    .await;
    let url = format!("{}/v1/provisioners", svc.base);
    let without = pki.client(false);
    let e = without.get(&url).bearer_auth("reader-token").send().await;
    assert!(e.is_err(), "a client without a certificate got in: {e:?}");
    let with = pki.client(true);
    let r = with.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a certificate is not a credential"
    );
    let r = with
        .get(&url)
        .bearer_auth("reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = with
        .get(format!("{}/healthz", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    svc.cleanup().await;
}
