//! The harness: a worker running in-process on a fresh queue, fed through
//! the real broker, applying events to a fresh mock target.
//!
//! The test doubles live below, not in the product:
//! - [`mock_rest`]: `MockTarget`, the demo API of `provisioner demo` as a
//!   [`double::Double`];
//! - [`mock_scim`]: `MockScim`, a stateful SCIM 2.0 service provider, as a
//!   [`double::Double`] too;
//! - [`double`]: `Double`, an API behind the [`intercept`] layer, served on
//!   a loopback port;
//! - [`intercept`]: request log, scripted faults and hangs, authentication
//!   rules, route failures, waiting;
//! - [`recorded`]: `RecordedRequest`, one request as received;
//! - [`call`]: an HTTP client for the doubles' own tests;
//! - [`pki`]: a throwaway CA with server and client certificates;
//! - [`pg`]: a PostgreSQL schema of one test's own.

pub mod call;
pub mod double;
pub mod intercept;
pub mod mock_rest;
pub mod mock_scim;
pub mod pg;
pub mod pki;
pub mod recorded;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel, Connection};
use provisioner::config::{self, AmqpConfig, BrokerUrls};
use provisioner::worker::OutcomeRecord;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::mock_rest::MockTarget;

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn amqp_config() -> AmqpConfig {
    AmqpConfig {
        url: BrokerUrls::split(&amqp_url()),
        prefetch: 64,
        reconnect_max: Duration::from_secs(2),
        tls: None,
        queue_type: config::QueueType::Classic,
        delivery_limit: 20,
        ack_timeout: Duration::from_secs(1800),
        max_event_bytes: 32 * 1024 * 1024,
    }
}

/// A queue name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "test.{prefix}.{}.{}.{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// provisioners/example.toml with `url_prefix` pointed at `url`, the queue
/// set, and top-level keys overridden by `overrides` (TOML text).
/// `remove_only_owned` is off unless `overrides` turns it on: the tests seed
/// targets with accounts the worker never made and expect the original's
/// removals (tests/it/ownership.rs tests the option).
pub fn example_provisioner(url: &str, queue: &str, overrides: &str) -> String {
    let text = std::fs::read_to_string(repo_path("provisioners/example.toml")).unwrap();
    let (top, rest) = text.split_at(text.find("\n[rest]").unwrap());
    let mut table: toml::Table = toml::from_str(top).unwrap();
    table.insert("url_prefix".into(), toml::Value::String(url.into()));
    table.insert("queue".into(), toml::Value::String(queue.into()));
    table.insert("target_group_retry_delay".into(), toml::Value::Integer(1));
    table.insert("remove_only_owned".into(), toml::Value::Boolean(false));
    let extra: toml::Table = toml::from_str(overrides).unwrap();
    for (k, v) in extra {
        table.insert(k, v);
    }
    format!("{}\n{}", toml::to_string(&table).unwrap(), rest)
}

pub async fn connect() -> Connection {
    provisioner::amqp::connect(&amqp_config(), "provisioner:test")
        .await
        .expect("the tests need RabbitMQ on AMQP_URL (scripts/test.sh starts it)")
}

/// A worker over one provisioner file, a mock target, and a publishing channel.
pub struct Harness {
    pub mock: MockTarget,
    pub queue: String,
    pub outcomes: broadcast::Receiver<OutcomeRecord>,
    pub shutdown: CancellationToken,
    pub worker: Option<tokio::task::JoinHandle<()>>,
    /// A worker built but not started yet ([`Harness::prepare`]).
    idle: Option<provisioner::worker::Worker>,
    pub channel: Channel,
    _conn: Connection,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a mock target and a worker for the example provisioner with `overrides`.
    pub async fn start(overrides: &str) -> Harness {
        let mock = MockTarget::start().await.unwrap();
        let queue = unique("q");
        let text = example_provisioner(&mock.url(), &queue, overrides);
        Self::start_with(mock, queue, &text).await
    }

    /// Starts a worker for a given provisioner file text.
    pub async fn start_with(mock: MockTarget, queue: String, provisioner_text: &str) -> Harness {
        Self::start_configured(mock, queue, provisioner_text, amqp_config()).await
    }

    /// Starts a worker for a given provisioner file text and broker settings.
    pub async fn start_configured(
        mock: MockTarget,
        queue: String,
        provisioner_text: &str,
        amqp: AmqpConfig,
    ) -> Harness {
        let mut h = Self::prepare(mock, queue, provisioner_text, amqp).await;
        h.start_worker();
        h
    }

    /// Like [`Harness::start_configured`], with the queue declared but the
    /// worker not started: publish a backlog, then [`Harness::start_worker`].
    pub async fn prepare(
        mock: MockTarget,
        queue: String,
        provisioner_text: &str,
        amqp: AmqpConfig,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, provisioner_text).unwrap();
        let mut cfg = match config::from_provisioner_files(&[path]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        cfg.amqp = amqp;
        cfg.shutdown_grace = Duration::from_secs(10);
        let worker = provisioner::assembly::worker(cfg).unwrap();
        let outcomes = worker.subscribe();
        let shutdown = CancellationToken::new();
        let conn = connect().await;
        let channel = provisioner::amqp::confirm_channel(&conn).await.unwrap();
        provisioner::amqp::declare_queues(&channel, &queue, &format!("{queue}.dead"))
            .await
            .unwrap();
        Harness {
            mock,
            queue,
            outcomes,
            shutdown,
            worker: None,
            idle: Some(worker),
            channel,
            _conn: conn,
            _dir: dir,
        }
    }

    /// Each provisioner's live state, of the worker of [`Harness::prepare`]
    /// (before [`Harness::start_worker`]).
    pub fn statuses(&self) -> Vec<std::sync::Arc<provisioner::worker::ProvisionerStatus>> {
        self.idle.as_ref().map(|w| w.statuses()).unwrap_or_default()
    }

    /// Starts the worker of [`Harness::prepare`].
    pub fn start_worker(&mut self) {
        if let Some(worker) = self.idle.take() {
            self.worker = Some(tokio::spawn(worker.run(self.shutdown.clone())));
        }
    }

    pub async fn publish(&self, event: Value) {
        self.publish_raw(event.to_string().as_bytes()).await;
    }

    pub async fn publish_raw(&self, body: &[u8]) {
        provisioner::amqp::publish_confirmed(
            &self.channel,
            &self.queue,
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }

    /// Waits for `n` outcomes (of any verdict), failing the test at the deadline.
    pub async fn outcomes(&mut self, n: usize) -> Vec<OutcomeRecord> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Ok(o)) => got.push(o),
                Ok(Err(broadcast::error::RecvError::Lagged(k))) => panic!("lagged {k} outcomes"),
                Ok(Err(e)) => panic!("outcome channel: {e}"),
                Err(_) => panic!(
                    "only {} of {n} outcomes before the deadline: {got:#?}",
                    got.len()
                ),
            }
        }
        got
    }

    pub async fn outcome(&mut self) -> OutcomeRecord {
        self.outcomes(1).await.remove(0)
    }

    /// Takes every message parked in the dead-letter queue.
    pub async fn dead_letters(&self) -> Vec<(String, BasicProperties)> {
        take_all(&self.channel, &format!("{}.dead", self.queue)).await
    }

    /// Stops the worker and waits for it to drain.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.worker.take() {
            tokio::time::timeout(DEADLINE, h).await.unwrap().unwrap();
        }
    }

    pub async fn cleanup(mut self) {
        self.stop().await;
        for q in [self.queue.clone(), format!("{}.dead", self.queue)] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

pub async fn take_all(channel: &Channel, queue: &str) -> Vec<(String, BasicProperties)> {
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        out.push((
            String::from_utf8_lossy(&msg.delivery.data).to_string(),
            msg.delivery.properties.clone(),
        ));
        msg.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    out
}

/// Event builders.
pub fn add(group: &str, subject: &str, mail: &str, given: &str, sn: &str) -> Value {
    serde_json::json!({"action": "add", "group": group, "subject": subject,
        "attributes": {"mail": [mail], "givenName": [given], "sn": [sn]}})
}

pub fn delete(group: &str, subject: &str, mail: &str) -> Value {
    serde_json::json!({"action": "delete", "group": group, "subject": subject,
        "attributes": {"mail": [mail]}})
}

pub const USERS: &str = "app:example:users";
pub const STAFF: &str = "app:example:staff";

/// Tests that only use their own queues share the broker; tests that disrupt
/// it (closing every connection, stopping the app) take it alone.
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    BROKER.read().await
}

pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    BROKER.write().await
}
