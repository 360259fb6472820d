//! A worker running as a separate OS process (`provisioner run`), for the
//! guarantees that only show across processes: kill -9, SIGTERM, two workers
//! on the same queues. Everything lives in a tempdir: `worker.toml`, the
//! provisioner file under `p/`, and one log file per spawned process.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use provisioner::amqp::Topology;
use provisioner::config::{self, Config, ProvisionerConfig};
use serde_json::Value;

use crate::support::amqp_url;

/// A worker configuration on disk: `worker.toml` plus one provisioner file.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub worker_toml: PathBuf,
    /// The broker's URLs (`AMQP_URL` of the processes spawned).
    pub broker: String,
    spawned: u32,
}

impl Deployment {
    /// `provisioner_text`: a whole provisioner file (see
    /// `support::example_provisioner`). `top`: extra top-level keys of the
    /// worker file (e.g. `shutdown_grace_s = 5`). `amqp`: extra keys of its
    /// `[amqp]` table (e.g. `queue_type = "quorum"`).
    pub fn new(provisioner_text: &str, top: &str, amqp: &str) -> Deployment {
        Deployment::on_broker(provisioner_text, top, amqp, &amqp_url())
    }

    /// [`Deployment::new`] on the broker at `broker` (its node URLs,
    /// comma-separated).
    pub fn on_broker(provisioner_text: &str, top: &str, amqp: &str, broker: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/example.toml"), provisioner_text).unwrap();
        let worker = format!(
            "provisioners = [\"p/example.toml\"]\n{top}\n\n[amqp]\nurl = \"{broker}\"\nreconnect_max_s = 2\n{amqp}\n\n[log]\nlevel = \"info\"\nformat = \"json\"\n"
        );
        let worker_toml = dir.path().join("worker.toml");
        std::fs::write(&worker_toml, worker).unwrap();
        Deployment {
            dir,
            worker_toml,
            broker: broker.to_string(),
            spawned: 0,
        }
    }

    /// The configuration as the worker process will load it.
    pub fn config(&self) -> Config {
        match config::load(&self.worker_toml) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn provisioner(&self) -> ProvisionerConfig {
        self.config().provisioners.remove(0)
    }

    /// The broker objects the worker declares and producers publish through.
    pub fn topology(&self) -> Topology {
        let c = self.config();
        Topology::of(&c.provisioners[0], &c.amqp)
    }

    /// Starts `provisioner run` with this configuration; its output goes to
    /// `<tempdir>/<label>-<n>.log`. The process is killed if the handle is dropped.
    pub fn spawn(&mut self, label: &str) -> WorkerProcess {
        self.spawned += 1;
        let log = self
            .dir
            .path()
            .join(format!("{label}-{}.log", self.spawned));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .arg("run")
            .arg("--config")
            .arg(&self.worker_toml)
            .env("AMQP_URL", &self.broker)
            .env_remove("RUST_LOG")
            .env_remove("PROVISIONER_CONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the provisioner binary");
        WorkerProcess {
            child,
            log,
            label: label.to_string(),
        }
    }
}

/// A running `provisioner run` process.
pub struct WorkerProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
    pub label: String,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is still running")
    }

    /// kill -9, and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a killed process goes away")
            .unwrap();
        assert!(!status.success(), "{status:?}");
    }

    /// Sends SIGTERM (through kill(1): no libc in the tests).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status, or `None` if the process still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// The JSON log records of this process, in order.
    pub fn records(&self) -> Vec<Value> {
        records(&self.log)
    }

    /// The per-event outcome records (message "event") of this process.
    pub fn outcomes(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["fields"]["message"] == "event")
            .collect()
    }

    /// Polls the log (every 50 ms) until `condition` holds on its records;
    /// `false` at the deadline.
    pub async fn wait_log(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&[Value]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(&self.records()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until each of `queues` is consumed ("consuming" logged for it).
    pub async fn wait_consuming(&self, queues: &[String]) {
        let ok = self
            .wait_log(Duration::from_secs(30), |records| {
                queues.iter().all(|q| {
                    records.iter().any(|r| {
                        r["fields"]["message"] == "consuming"
                            && r["fields"]["queue"].as_str() == Some(q)
                    })
                })
            })
            .await;
        assert!(
            ok,
            "{} did not start consuming {queues:?}:\n{}",
            self.label,
            self.log_text()
        );
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every line of a JSON log that parses (a line being written may not yet).
pub fn records(path: &Path) -> Vec<Value> {
    read_log(path)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}
