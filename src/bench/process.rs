//! The worker under measurement as a child process (`provisioner run`), so
//! that the CPU time and peak memory read from `/proc/<pid>` are the
//! worker's alone: the mock target and the publisher stay in the bench
//! process. Its JSON log goes to a file, which is read as it grows: one
//! `"event"` line per settled event tells when and with how many calls.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::BenchError;

/// Linux reports utime and stime in clock ticks of `USER_HZ`, which is 100
/// on every architecture Linux runs on (`sysconf(_SC_CLK_TCK)` answers the
/// same), so no FFI call is needed to read it.
const TICKS_PER_SECOND: f64 = 100.0;

/// How often the log file is read while waiting.
const POLL: Duration = Duration::from_millis(5);

/// What a settled event's log line says.
#[derive(Debug, Clone)]
pub struct Settled {
    /// When the worker logged it, just after acknowledging the delivery.
    pub at: SystemTime,
    /// `applied`, `ignored` or `dead-lettered`.
    pub result: String,
    /// The calls the event made on the target.
    pub api_calls: u64,
    /// The outcome's detail (a sync's counts, a failure's reason).
    pub detail: String,
}

/// A running `provisioner run` and its log.
pub struct WorkerProcess {
    child: tokio::process::Child,
    pid: u32,
    log_path: PathBuf,
    stderr_path: PathBuf,
    offset: u64,
    partial: String,
    /// When the worker logged `consuming`.
    pub consuming_at: Option<SystemTime>,
    /// `consuming` lines after the first: the worker lost its broker
    /// connection and reconnected, and what it held was delivered again.
    pub reconnections: usize,
    settled: HashMap<String, Settled>,
}

/// The worker file of a benchmark run: one provisioner file beside it, JSON
/// logs, no admin API and no journal (neither is on the event path).
pub fn write_config(
    dir: &Path,
    amqp_url: &str,
    prefetch: u16,
    max_event_bytes: usize,
    provisioner: &toml::Table,
) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let provisioner_path = dir.join("bench.toml");
    let text = toml::to_string(provisioner)
        .map_err(|e| BenchError::Setup(format!("the bench provisioner file: {e}")))?;
    std::fs::write(&provisioner_path, text).map_err(|e| BenchError::io(&provisioner_path, e))?;
    let mut worker = toml::Table::new();
    worker.insert(
        "provisioners".into(),
        toml::Value::Array(vec![toml::Value::String("bench.toml".into())]),
    );
    worker.insert("shutdown_grace_s".into(), toml::Value::Integer(5));
    let mut amqp = toml::Table::new();
    amqp.insert("url".into(), toml::Value::String(amqp_url.into()));
    amqp.insert("prefetch".into(), toml::Value::Integer(prefetch.into()));
    amqp.insert(
        "max_event_bytes".into(),
        toml::Value::Integer(i64::try_from(max_event_bytes).unwrap_or(i64::MAX)),
    );
    worker.insert("amqp".into(), toml::Value::Table(amqp));
    let mut log = toml::Table::new();
    log.insert("level".into(), toml::Value::String("info".into()));
    log.insert("format".into(), toml::Value::String("json".into()));
    worker.insert("log".into(), toml::Value::Table(log));
    let worker_path = dir.join("worker.toml");
    let text = toml::to_string(&worker)
        .map_err(|e| BenchError::Setup(format!("the bench worker file: {e}")))?;
    std::fs::write(&worker_path, text).map_err(|e| BenchError::io(&worker_path, e))?;
    Ok(worker_path)
}

impl WorkerProcess {
    /// Starts `exe run --config worker_file`, its output in `<label>.log`
    /// and `<label>.stderr` beside the worker file.
    pub fn spawn(
        exe: &Path,
        wrapper: &[String],
        worker_file: &Path,
        amqp_url: &str,
        label: &str,
    ) -> Result<WorkerProcess, BenchError> {
        let dir = worker_file.parent().unwrap_or(Path::new("."));
        let log_path = dir.join(format!("{label}.log"));
        let stderr_path = dir.join(format!("{label}.stderr"));
        let out = std::fs::File::create(&log_path).map_err(|e| BenchError::io(&log_path, e))?;
        let err =
            std::fs::File::create(&stderr_path).map_err(|e| BenchError::io(&stderr_path, e))?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(exe);
                c
            }
            None => tokio::process::Command::new(exe),
        };
        let child = command
            .arg("--config")
            .arg(worker_file)
            .arg("run")
            // The worker file is the whole configuration: a RUST_LOG of the
            // caller's would change what the log says, and how much it costs.
            .env("AMQP_URL", amqp_url)
            .env_remove("RUST_LOG")
            .env_remove("PROVISIONER_CONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                BenchError::Setup(format!("cannot start the worker `{}`: {e}", exe.display()))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Setup("the worker exited at once".into()))?;
        Ok(WorkerProcess {
            child,
            pid,
            log_path,
            stderr_path,
            offset: 0,
            partial: String::new(),
            consuming_at: None,
            reconnections: 0,
            settled: HashMap::new(),
        })
    }

    /// Waits for the worker's `consuming` line.
    pub async fn wait_consuming(&mut self, limit: Duration) -> Result<SystemTime, BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            self.read_log()?;
            if let Some(at) = self.consuming_at {
                return Ok(at);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "the worker did not start consuming within {} s",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every id in `ids` is settled, or fails when nothing
    /// settles for `stall`; `progress` is asked whether the worker is still
    /// doing something (a long sync settles nothing for a while).
    pub async fn wait_settled(
        &mut self,
        ids: &[String],
        stall: Duration,
        mut progress: impl FnMut() -> u64,
    ) -> Result<Vec<Settled>, BenchError> {
        let mut last_count = usize::MAX;
        let mut last_progress = progress();
        let mut since = Instant::now();
        loop {
            self.read_log()?;
            let count = ids
                .iter()
                .filter(|id| self.settled.contains_key(*id))
                .count();
            if count == ids.len() {
                return Ok(ids
                    .iter()
                    .filter_map(|id| self.settled.get(id).cloned())
                    .collect());
            }
            let now_progress = progress();
            if count != last_count || now_progress != last_progress {
                last_count = count;
                last_progress = now_progress;
                since = Instant::now();
            }
            self.check_alive()?;
            if since.elapsed() > stall {
                return Err(self.failure(&format!(
                    "{count} of {} events settled, then nothing happened for {} s",
                    ids.len(),
                    stall.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration, BenchError> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
        // The command name (field 2) may hold spaces: count from after it.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| BenchError::Setup(format!("unexpected {path}")))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, utime field 14, stime field 15.
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => Ok(Duration::from_secs_f64(
                (user + system) as f64 / TICKS_PER_SECOND,
            )),
            _ => Err(BenchError::Setup(format!("unexpected {path}"))),
        }
    }

    /// Context switches so far (voluntary + involuntary), summed over the
    /// worker's threads (`/proc/<pid>/task/*/status`): each is a thread
    /// going to sleep or being preempted, what CPU time per event is made
    /// of when the work comes in small pieces.
    pub fn context_switches(&self) -> Result<u64, BenchError> {
        let dir = format!("/proc/{}/task", self.pid);
        let tasks = std::fs::read_dir(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let mut total = 0;
        for task in tasks.flatten() {
            // A thread that ended since the listing has nothing left to count.
            let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            total += text
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Result<u64, BenchError> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| BenchError::Setup(format!("no VmHWM in {path}")))
    }

    /// Stops the worker: SIGTERM, so that it exits the way it does in
    /// service (and a profiler it runs under writes its output), then a
    /// kill if it has not exited within a minute.
    pub async fn stop(mut self) {
        let terminated = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if terminated
            && tokio::time::timeout(Duration::from_secs(60), self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.kill().await;
    }

    /// The log file, for error messages.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failure(&format!("the worker exited ({status})"))),
            Err(e) => Err(self.failure(&format!("cannot watch the worker: {e}"))),
        }
    }

    fn failure(&self, what: &str) -> BenchError {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        };
        BenchError::Worker(format!(
            "{what}; its log is {} (last lines:\n{}\n{})",
            self.log_path.display(),
            tail(&self.log_path),
            tail(&self.stderr_path)
        ))
    }

    /// Reads what the log gained since the last call.
    fn read_log(&mut self) -> Result<(), BenchError> {
        let mut file =
            std::fs::File::open(&self.log_path).map_err(|e| BenchError::io(&self.log_path, e))?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| BenchError::io(&self.log_path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| BenchError::io(&self.log_path, e))?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let complete: String = self.partial.drain(..=end).collect();
        for line in complete.lines() {
            self.take_line(line);
        }
        Ok(())
    }

    fn take_line(&mut self, line: &str) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let Some(at) = value
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(parse_timestamp)
        else {
            return;
        };
        let fields = value.get("fields");
        let text = |key: &str| {
            fields
                .and_then(|f| f.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match text("message").as_str() {
            "consuming" if self.consuming_at.is_none() => self.consuming_at = Some(at),
            "consuming" => self.reconnections += 1,
            "event" => {
                let result = text("result");
                // A delivery given back is delivered again: not settled yet.
                if result == "returned" {
                    return;
                }
                let api_calls = fields
                    .and_then(|f| f.get("api_calls"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                self.settled.insert(
                    text("event_id"),
                    Settled {
                        at,
                        result,
                        api_calls,
                        detail: text("detail"),
                    },
                );
            }
            _ => {}
        }
    }
}

fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_are_read_to_the_microsecond() {
        let at = parse_timestamp("2025-01-02T03:04:05.123456Z").unwrap();
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.subsec_micros(), 123_456);
        assert_eq!(since.as_secs(), 1_735_787_045);
    }
}
