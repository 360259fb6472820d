//! Configuration (SPEC §3): the worker file and one provisioner file per
//! target. Each file is parsed into a `*File` struct (serde, unknown keys
//! rejected), then validated into a runtime struct, collecting every problem
//! of every file before reporting them together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod error;
mod secret;

pub use error::{ConfigError, ConfigErrors, Problems};
pub use secret::{Secret, SecretSource};

use crate::http::auth::{AuthConfig, AuthFile};
use crate::target::rest::config::{RestConfig, RestFile};
use crate::target::scim::config::{ScimConfig, ScimFile};

/// Default worker file location.
pub const DEFAULT_WORKER_FILE: &str = "config/worker.toml";

// ---------------------------------------------------------------- worker file

/// `config/worker.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    /// A directory of `*.toml` provisioner files, or a list of files.
    #[serde(default = "default_provisioners")]
    pub provisioners: PathOrList,
    /// The broker connection.
    #[serde(default)]
    pub amqp: AmqpFile,
    /// Logging.
    #[serde(default)]
    pub log: LogFile,
    /// Seconds in-flight events get to finish after SIGTERM/SIGINT before they go back to the queue.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
}

fn default_shutdown_grace_s() -> u64 {
    30
}

fn default_provisioners() -> PathOrList {
    PathOrList::One("../provisioners".into())
}

/// One path or a list of paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PathOrList {
    One(String),
    Many(Vec<String>),
}

/// `[amqp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpFile {
    /// Broker URL, `amqp://` or `amqps://`; the `AMQP_URL` environment variable overrides it.
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// Unacknowledged deliveries the broker may hand each provisioner at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Longest wait between reconnection attempts, in seconds.
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: u64,
    /// `classic` or `quorum` (replicated; recommended for production). Queues
    /// the worker declares get this type; an existing queue keeps its own.
    #[serde(default = "default_queue_type")]
    pub queue_type: String,
    /// Quorum queues only: deliveries of one message (crash loops included)
    /// before the broker parks it in the dead-letter queue itself.
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// Seconds the broker lets a delivery stay unacknowledged before it
    /// closes the channel (RabbitMQ's `consumer_timeout`, 30 minutes unless
    /// changed). The worker never holds a delivery that long: an event that
    /// waited 45 % of it without starting goes back to the queue, and one
    /// still running at 90 % is settled. Set it to the broker's value if
    /// that was changed.
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
    /// Largest message body accepted as an event, in bytes; a larger one is
    /// parked in the dead-letter queue unread, with the reason. A
    /// `membership_sync` of 100,000 subjects with a few attributes each is
    /// about 8 MB.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// TLS for `amqps://`.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

impl Default for AmqpFile {
    fn default() -> Self {
        AmqpFile {
            url: default_amqp_url(),
            prefetch: default_prefetch(),
            reconnect_max_s: default_reconnect_max_s(),
            queue_type: default_queue_type(),
            delivery_limit: default_delivery_limit(),
            ack_timeout_s: default_ack_timeout_s(),
            max_event_bytes: default_max_event_bytes(),
            tls: None,
        }
    }
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_prefetch() -> u16 {
    64
}
fn default_queue_type() -> String {
    "classic".into()
}
fn default_delivery_limit() -> u32 {
    20
}
fn default_reconnect_max_s() -> u64 {
    30
}
fn default_ack_timeout_s() -> u64 {
    1800
}
fn default_max_event_bytes() -> usize {
    32 * 1024 * 1024
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A `[tls]` table: custom CA and client certificate (mTLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM file of extra CA certificates to trust.
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) for mutual TLS.
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
}

// ----------------------------------------------------------- provisioner file

/// One provisioner file (`provisioners/<name>.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionerFile {
    /// Unique name; defaults to the file stem.
    pub name: Option<String>,
    /// `rest` (a REST API described in `[rest]`) or `scim`.
    pub kind: String,
    /// Queue consumed; default `provisioner.<name>`.
    pub queue: Option<String>,
    /// Prefix of every API URL; a list means equivalent nodes tried in order.
    pub url_prefix: StringOrList,
    /// Connect to this `host:port` instead of the URL's own.
    pub endpoint: Option<String>,
    /// Local group whose events provision/deprovision the account itself.
    pub provision_group: Option<String>,
    /// Local group -> remote group name: an inline table or a path to a JSON/TOML file.
    pub target_group_map: Option<GroupMapSource>,
    /// Match values never managed: a list or a whitespace-separated string.
    #[serde(default)]
    pub unmanaged_logins: Option<StringOrList>,
    /// LRU capacity of match value -> account API ID.
    #[serde(default = "default_account_cache_size")]
    pub account_cache_size: usize,
    /// Seconds a prefilled account cache is trusted absolutely (0 = never).
    #[serde(default)]
    pub account_cache_validity_period: u64,
    /// Minimum spacing of API calls during account reconciliation, ms.
    #[serde(default)]
    pub account_sync_rate_limit_ms: u64,
    /// Minimum spacing of API calls during membership reconciliation, ms.
    #[serde(default)]
    pub member_sync_rate_limit_ms: u64,
    /// `query-first` or `create-first`.
    #[serde(default = "default_provision_strategy")]
    pub provision_strategy: String,
    /// `add-member-first` (or `add-members-first`) or `query-first`.
    #[serde(default = "default_group_sync_strategy")]
    pub group_sync_strategy: String,
    /// LRU capacity of remote group name -> API ID.
    #[serde(default = "default_target_group_cache_size")]
    pub target_group_cache_size: usize,
    /// Seconds to wait before looking for a not-yet-provisioned account once more.
    #[serde(default = "default_target_group_retry_delay")]
    pub target_group_retry_delay: u64,
    /// Mass-deprovision guard: a membership_sync that would remove more than
    /// this share (0-1] of the managed remote accounts or members is refused
    /// and dead-lettered with the numbers. 1 turns the guard off.
    #[serde(default = "default_max_removal_share")]
    pub max_removal_share: f64,
    /// The guard applies only when at least this many managed accounts or
    /// members are on the target (small groups change wholesale legitimately).
    #[serde(default = "default_removal_guard_min")]
    pub removal_guard_min: usize,
    /// Mass-deprovision guard, absolute: a membership_sync that would remove
    /// more than this many accounts or members is refused whatever the share
    /// and whatever `removal_guard_min`. 0 = no absolute limit.
    #[serde(default = "default_max_removals")]
    pub max_removals: i64,
    /// How requests are authenticated.
    pub auth: Option<AuthFile>,
    /// Custom CA / client certificate for the target.
    pub tls: Option<TlsFile>,
    /// Carries the event's actor to the target, e.g. `{ header = "X-Caller-Id", value = "choria={{ actor }}" }`.
    pub on_behalf_of: Option<OnBehalfOfFile>,
    /// Timeout of every API call, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Largest response body accepted, bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Events applied at once (different subjects only; one subject's events stay in order).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// 0: one queue. N > 0: a consistent-hash exchange named `queue` spreads
    /// events by subject over N queues `<queue>.0` .. `<queue>.<N-1>`, each
    /// with a single active consumer, so several worker processes keep
    /// per-subject order (needs the rabbitmq_consistent_hash_exchange plugin).
    #[serde(default)]
    pub partitions: u16,
    /// Retry budget for transient failures.
    #[serde(default)]
    pub retry: RetryFile,
    /// The API description for `kind = "rest"`.
    pub rest: Option<RestFile>,
    /// Overrides of the SCIM defaults for `kind = "scim"`.
    pub scim: Option<ScimFile>,
}

fn default_account_cache_size() -> usize {
    1000
}
fn default_provision_strategy() -> String {
    "query-first".into()
}
fn default_group_sync_strategy() -> String {
    "add-member-first".into()
}
fn default_target_group_cache_size() -> usize {
    100
}
fn default_max_removal_share() -> f64 {
    0.5
}
fn default_removal_guard_min() -> usize {
    10
}
/// Like Entra ID's default accidental-deletions threshold.
fn default_max_removals() -> i64 {
    500
}
fn default_target_group_retry_delay() -> u64 {
    20
}
fn default_timeout_s() -> u64 {
    30
}
fn default_max_response_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_concurrency() -> usize {
    8
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `target_group_map`: inline or from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GroupMapSource {
    Inline(BTreeMap<String, String>),
    Path(String),
}

/// `on_behalf_of`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnBehalfOfFile {
    /// Header name, e.g. `X-Caller-Id`.
    pub header: String,
    /// Template over `actor`, e.g. `choria={{ actor }}`.
    pub value: String,
}

/// `[retry]`: how transient failures are retried before dead-lettering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts in all, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Give up after this many seconds since the message was received.
    #[serde(default = "default_max_elapsed_s")]
    pub max_elapsed_s: u64,
    /// First backoff, ms; doubled each attempt, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest backoff, seconds.
    #[serde(default = "default_max_backoff_s")]
    pub max_backoff_s: u64,
    /// Seconds before the first probe of a target that went down (most
    /// attempts failing, or an event out of budget while no other event was
    /// served). While it is down, no delivery is held.
    #[serde(default = "default_probe_first_s")]
    pub probe_first_s: u64,
    /// Longest wait between probes of a target that stays down, seconds;
    /// the wait doubles from `probe_first_s` up to this.
    #[serde(default = "default_probe_max_s")]
    pub probe_max_s: u64,
}

impl Default for RetryFile {
    fn default() -> Self {
        RetryFile {
            max_attempts: default_max_attempts(),
            max_elapsed_s: default_max_elapsed_s(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_s: default_max_backoff_s(),
            probe_first_s: default_probe_first_s(),
            probe_max_s: default_probe_max_s(),
        }
    }
}

fn default_max_attempts() -> u32 {
    10
}
fn default_max_elapsed_s() -> u64 {
    600
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_s() -> u64 {
    60
}
fn default_probe_first_s() -> u64 {
    5
}
fn default_probe_max_s() -> u64 {
    60
}

// ------------------------------------------------------------ runtime structs

/// The validated configuration of the whole process.
#[derive(Debug, Clone)]
pub struct Config {
    pub worker_file: Option<PathBuf>,
    pub amqp: AmqpConfig,
    pub log: LogConfig,
    pub shutdown_grace: Duration,
    pub provisioners: Vec<ProvisionerConfig>,
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: Secret,
    pub prefetch: u16,
    pub reconnect_max: Duration,
    pub tls: Option<TlsConfig>,
    pub queue_type: QueueType,
    pub delivery_limit: u32,
    /// The broker's acknowledgement timeout (`ack_timeout_s`).
    pub ack_timeout: Duration,
    pub max_event_bytes: usize,
}

impl AmqpConfig {
    /// Longest time the worker holds a delivery: 90 % of the broker's
    /// acknowledgement timeout, which the broker checks only once a minute.
    pub fn hold_limit(&self) -> Duration {
        self.ack_timeout.mul_f64(0.9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionStrategy {
    QueryFirst,
    CreateFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSyncStrategy {
    AddMemberFirst,
    QueryFirst,
}

#[derive(Debug, Clone)]
pub struct OnBehalfOf {
    pub header: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// First wait before probing a target that went down.
    pub probe_first: Duration,
    /// Longest wait between probes.
    pub probe_max: Duration,
}

/// The kind-specific part of a provisioner.
#[derive(Debug, Clone)]
pub enum KindConfig {
    Rest(RestConfig),
    Scim(ScimConfig),
}

impl KindConfig {
    pub fn name(&self) -> &'static str {
        match self {
            KindConfig::Rest(_) => "rest",
            KindConfig::Scim(_) => "scim",
        }
    }
}

/// The operations a provisioner's routing needs (for `check`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub accounts: bool,
    pub groups: bool,
}

/// One validated provisioner.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    pub file: PathBuf,
    pub name: String,
    pub queue: String,
    pub url_prefixes: Vec<String>,
    pub endpoint: Option<String>,
    /// Lowercased.
    pub provision_group: Option<String>,
    /// Lowercased local group -> remote group name.
    pub target_group_map: BTreeMap<String, String>,
    /// Lowercased match values.
    pub unmanaged_logins: Vec<String>,
    pub account_cache_size: usize,
    pub account_cache_validity_period: Duration,
    pub account_sync_rate_limit: Duration,
    pub member_sync_rate_limit: Duration,
    pub provision_strategy: ProvisionStrategy,
    pub group_sync_strategy: GroupSyncStrategy,
    pub target_group_cache_size: usize,
    pub target_group_retry_delay: Duration,
    pub max_removal_share: f64,
    pub removal_guard_min: usize,
    /// 0: no absolute limit.
    pub max_removals: usize,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub on_behalf_of: Option<OnBehalfOf>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub concurrency: usize,
    pub partitions: u16,
    pub retry: RetryPolicy,
    pub kind: KindConfig,
}

impl ProvisionerConfig {
    pub fn needs(&self) -> Needs {
        Needs {
            accounts: self.provision_group.is_some(),
            groups: !self.target_group_map.is_empty(),
        }
    }

    /// The dead-letter queue of this provisioner.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

// ---------------------------------------------------------------- loading

/// Reads the worker file and every provisioner file it names.
pub fn load(worker_file: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let text = match std::fs::read_to_string(worker_file) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: worker_file.to_path_buf(),
                key: String::new(),
                problem: format!("cannot read the worker file: {e}"),
                fix: "create it (see config/worker.toml) or pass --config PATH".into(),
            }]))
        }
    };
    let file: WorkerFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => return Err(ConfigErrors(vec![error::from_toml(worker_file, &text, &e)])),
    };
    let mut p = Problems::new(worker_file, &mut errors);
    let base = p.base_dir();
    let amqp = validate_amqp(file.amqp, &mut p);
    let log = LogConfig {
        level: file.log.level,
        format: file.log.format,
    };
    let paths = provisioner_paths(&file.provisioners, &base, &mut p);
    let provisioners = load_provisioners(&paths, &mut errors);
    check_retry_budgets(&amqp, &provisioners, &mut errors);
    if errors.is_empty() {
        Ok(Config {
            worker_file: Some(worker_file.to_path_buf()),
            amqp,
            log,
            shutdown_grace: Duration::from_secs(file.shutdown_grace_s),
            provisioners,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The worker defaults plus the given provisioner files (demo, replay, tests).
pub fn from_provisioner_files(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let provisioners = load_provisioners(paths, &mut errors);
    let mut dummy = Vec::new();
    let mut p = Problems::new(Path::new("<defaults>"), &mut dummy);
    let amqp = validate_amqp(AmqpFile::default(), &mut p);
    errors.extend(dummy);
    check_retry_budgets(&amqp, &provisioners, &mut errors);
    if errors.is_empty() {
        Ok(Config {
            worker_file: None,
            amqp,
            log: LogConfig {
                level: default_log_level(),
                format: LogFormat::Text,
            },
            shutdown_grace: Duration::from_secs(default_shutdown_grace_s()),
            provisioners,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn validate_amqp(file: AmqpFile, p: &mut Problems<'_>) -> AmqpConfig {
    let env_url = std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty());
    amqp_config(file, env_url, p)
}

/// `[amqp]` validated against the URL the worker will really use: `env_url`
/// (`AMQP_URL`) when set, else the file's. Taken as an argument so that tests
/// need not change the process environment, which other tests read.
fn amqp_config(file: AmqpFile, env_url: Option<String>, p: &mut Problems<'_>) -> AmqpConfig {
    let url_source = if env_url.is_some() {
        "AMQP_URL"
    } else {
        "amqp.url"
    };
    let url = env_url.unwrap_or(file.url);
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        p.add(
            "amqp.url",
            "the broker URL must start with amqp:// or amqps://",
            "write e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
        );
    }
    if file.prefetch == 0 {
        p.add("amqp.prefetch", "must be at least 1", "set prefetch = 64");
    }
    let queue_type = match file.queue_type.as_str() {
        "classic" => QueueType::Classic,
        "quorum" => QueueType::Quorum,
        other => {
            p.add(
                "amqp.queue_type",
                format!("unknown queue type `{other}`"),
                "use \"classic\" or \"quorum\"",
            );
            QueueType::Classic
        }
    };
    if file.ack_timeout_s < 10 {
        p.add(
            "amqp.ack_timeout_s",
            format!("{} s is too short to apply any event", file.ack_timeout_s),
            "set it to the broker's consumer_timeout in seconds (default 1800)",
        );
    }
    if file.max_event_bytes == 0 {
        p.add(
            "amqp.max_event_bytes",
            "must be at least 1",
            "set e.g. max_event_bytes = 33554432 (32 MiB)",
        );
    }
    if file.delivery_limit == 0 {
        p.add(
            "amqp.delivery_limit",
            "must be at least 1",
            "set e.g. delivery_limit = 20",
        );
    }
    let base = p.base_dir();
    let tls = file.tls.map(|t| validate_tls(t, "amqp.tls", &base, p));
    // An operator who wrote the table expects TLS; connecting in the clear
    // while it sits there unused would hide that the broker link is not encrypted.
    if tls.is_some() && url.starts_with("amqp://") {
        p.add(
            "amqp.tls",
            format!("the broker URL ({url_source}) is amqp://, which never uses TLS, so this table would be ignored"),
            format!("make {url_source} an amqps:// URL, or remove the [amqp.tls] table"),
        );
    }
    AmqpConfig {
        url: Secret::new(url),
        prefetch: file.prefetch,
        reconnect_max: Duration::from_secs(file.reconnect_max_s.max(1)),
        queue_type,
        delivery_limit: file.delivery_limit,
        ack_timeout: Duration::from_secs(file.ack_timeout_s),
        max_event_bytes: file.max_event_bytes,
        tls,
    }
}

/// A retry budget must end before the worker's hold limit: an event that
/// keeps failing while others are served is parked by its budget, not
/// returned to the broker again and again.
fn check_retry_budgets(
    amqp: &AmqpConfig,
    provisioners: &[ProvisionerConfig],
    errors: &mut Vec<ConfigError>,
) {
    let limit = amqp.hold_limit();
    for prov in provisioners {
        if prov.retry.max_elapsed >= limit {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "retry.max_elapsed_s".into(),
                problem: format!(
                    "{} s does not end before the worker returns a held delivery ({} s: 90 % of [amqp] ack_timeout_s = {} s)",
                    prov.retry.max_elapsed.as_secs(),
                    limit.as_secs(),
                    amqp.ack_timeout.as_secs()
                ),
                fix: format!("keep it below {} s", limit.as_secs()),
            });
        }
    }
}

fn validate_tls(t: TlsFile, key: &str, base: &Path, p: &mut Problems<'_>) -> TlsConfig {
    let mut check = |name: &str, v: Option<String>| -> Option<PathBuf> {
        let path = base.join(v?);
        if !path.is_file() {
            p.add(
                format!("{key}.{name}"),
                format!("file `{}` does not exist", path.display()),
                "point it at a PEM file (relative paths are relative to this file)",
            );
        }
        Some(path)
    };
    let tls = TlsConfig {
        ca_file: check("ca_file", t.ca_file),
        client_cert: check("client_cert", t.client_cert),
        client_key: check("client_key", t.client_key),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        p.add(
            key,
            "`client_cert` and `client_key` must be given together",
            "set both or neither",
        );
    }
    tls
}

fn provisioner_paths(spec: &PathOrList, base: &Path, p: &mut Problems<'_>) -> Vec<PathBuf> {
    match spec {
        PathOrList::Many(list) => list.iter().map(|f| base.join(f)).collect(),
        PathOrList::One(one) => {
            let path = base.join(one);
            if path.is_dir() {
                match std::fs::read_dir(&path) {
                    Ok(entries) => {
                        let mut files: Vec<PathBuf> = entries
                            .filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                            .collect();
                        files.sort();
                        if files.is_empty() {
                            p.add(
                                "provisioners",
                                format!("directory `{}` holds no *.toml files", path.display()),
                                "add a provisioner file (see provisioners/ in the repository)",
                            );
                        }
                        files
                    }
                    Err(e) => {
                        p.add(
                            "provisioners",
                            format!("cannot read directory `{}`: {e}", path.display()),
                            "point it at a directory of *.toml files or list the files",
                        );
                        Vec::new()
                    }
                }
            } else {
                vec![path]
            }
        }
    }
}

fn load_provisioners(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<ProvisionerConfig> {
    let mut out: Vec<ProvisionerConfig> = Vec::new();
    for path in paths {
        let before = errors.len();
        if let Some(prov) = load_provisioner(path, errors) {
            if errors.len() == before {
                out.push(prov);
            }
        }
    }
    let mut seen_names = BTreeMap::new();
    let mut seen_queues = BTreeMap::new();
    for prov in &out {
        if let Some(other) = seen_names.insert(prov.name.clone(), prov.file.clone()) {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "name".into(),
                problem: format!("name `{}` is also used by `{}`", prov.name, other.display()),
                fix: "give each provisioner a unique `name`".into(),
            });
        }
        if let Some(other) = seen_queues.insert(prov.queue.clone(), prov.file.clone()) {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "queue".into(),
                problem: format!(
                    "queue `{}` is also consumed by `{}`",
                    prov.queue,
                    other.display()
                ),
                fix: "give each provisioner its own `queue`".into(),
            });
        }
    }
    out
}

/// Parses and validates one provisioner file.
pub fn load_provisioner(path: &Path, errors: &mut Vec<ConfigError>) -> Option<ProvisionerConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                key: String::new(),
                problem: format!("cannot read the provisioner file: {e}"),
                fix: "check the path in the worker file's `provisioners`".into(),
            });
            return None;
        }
    };
    parse_provisioner(path, &text, errors)
}

/// Parses and validates a provisioner file's text (`path` is used for errors
/// and relative paths).
pub fn parse_provisioner(
    path: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ProvisionerConfig> {
    let file: ProvisionerFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(error::from_toml(path, text, &e));
            return None;
        }
    };
    let mut p = Problems::new(path, errors);
    validate_provisioner(file, &mut p)
}

fn validate_provisioner(f: ProvisionerFile, p: &mut Problems<'_>) -> Option<ProvisionerConfig> {
    let start = p.count();
    let base = p.base_dir();
    let stem = p
        .file()
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = f.name.unwrap_or(stem);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        p.add(
            "name",
            format!("`{name}` is not a valid name"),
            "use letters, digits, `-`, `_` and `.` only",
        );
    }
    let queue = f.queue.unwrap_or_else(|| format!("provisioner.{name}"));

    let url_prefixes = match f.url_prefix {
        StringOrList::One(u) => vec![u],
        StringOrList::Many(v) => v,
    };
    if url_prefixes.is_empty() {
        p.add(
            "url_prefix",
            "is empty",
            "give the API's base URL, e.g. \"https://api.example.com/v2\"",
        );
    }
    for (i, u) in url_prefixes.iter().enumerate() {
        match url::Url::parse(u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
            _ => p.add(
                if url_prefixes.len() > 1 {
                    format!("url_prefix[{i}]")
                } else {
                    "url_prefix".into()
                },
                format!("`{}` is not an http(s) URL", crate::http::redact_url(u)),
                "give the API's base URL, e.g. \"https://api.example.com/v2\"",
            ),
        }
    }
    let url_prefixes: Vec<String> = url_prefixes
        .into_iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    if let Some(ep) = &f.endpoint {
        let ok = ep
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            p.add(
                "endpoint",
                format!("`{ep}` is not host:port"),
                "write e.g. \"10.0.0.5:8443\"",
            );
        }
    }

    let provision_group = f.provision_group.map(|g| g.trim().to_lowercase());
    let target_group_map = match f.target_group_map {
        None => BTreeMap::new(),
        Some(GroupMapSource::Inline(m)) => m,
        Some(GroupMapSource::Path(rel)) => load_group_map(&base.join(&rel), p),
    };
    let target_group_map: BTreeMap<String, String> = target_group_map
        .into_iter()
        .map(|(k, v)| (k.trim().to_lowercase(), v))
        .collect();
    if provision_group.is_none() && target_group_map.is_empty() {
        p.add(
            "provision_group",
            "neither `provision_group` nor `target_group_map` is set, so no event would do anything",
            "set `provision_group = \"app:x:users\"` and/or `target_group_map`",
        );
    }
    if let Some(pg) = &provision_group {
        if target_group_map.contains_key(pg) {
            p.add(
                "target_group_map",
                format!("`{pg}` is the provision group and also a mapped group"),
                "map only groups other than `provision_group`",
            );
        }
    }

    let unmanaged_logins = match f.unmanaged_logins {
        None => Vec::new(),
        Some(StringOrList::One(s)) => s.split_whitespace().map(str::to_lowercase).collect(),
        Some(StringOrList::Many(v)) => v.iter().map(|s| s.trim().to_lowercase()).collect(),
    };

    let provision_strategy = match f.provision_strategy.as_str() {
        "query-first" => ProvisionStrategy::QueryFirst,
        "create-first" => ProvisionStrategy::CreateFirst,
        other => {
            p.add(
                "provision_strategy",
                format!("unknown strategy `{other}`"),
                "use \"query-first\" or \"create-first\"",
            );
            ProvisionStrategy::QueryFirst
        }
    };
    let group_sync_strategy = match f.group_sync_strategy.as_str() {
        "add-member-first" | "add-members-first" => GroupSyncStrategy::AddMemberFirst,
        "query-first" => GroupSyncStrategy::QueryFirst,
        other => {
            p.add(
                "group_sync_strategy",
                format!("unknown strategy `{other}`"),
                "use \"add-member-first\" or \"query-first\"",
            );
            GroupSyncStrategy::AddMemberFirst
        }
    };
    if f.account_cache_size == 0 {
        p.add(
            "account_cache_size",
            "must be at least 1",
            "set e.g. account_cache_size = 1000",
        );
    }
    if f.target_group_cache_size == 0 {
        p.add(
            "target_group_cache_size",
            "must be at least 1",
            "set e.g. target_group_cache_size = 100",
        );
    }
    if !(f.max_removal_share > 0.0 && f.max_removal_share <= 1.0) {
        p.add(
            "max_removal_share",
            format!(
                "{} is not a share between 0 (excluded) and 1",
                f.max_removal_share
            ),
            "set e.g. max_removal_share = 0.5, or 1 to turn the guard off",
        );
    }
    let max_removals = usize::try_from(f.max_removals).unwrap_or_else(|_| {
        p.add(
            "max_removals",
            format!("{} is negative", f.max_removals),
            "set e.g. max_removals = 500, or 0 for no absolute limit",
        );
        0
    });
    if f.timeout_s == 0 {
        p.add("timeout_s", "must be at least 1", "set e.g. timeout_s = 30");
    }
    if f.concurrency == 0 {
        p.add(
            "concurrency",
            "must be at least 1",
            "set e.g. concurrency = 8",
        );
    }
    if f.retry.max_attempts == 0 {
        p.add(
            "retry.max_attempts",
            "must be at least 1",
            "set e.g. max_attempts = 10",
        );
    }
    if f.retry.probe_first_s == 0 || f.retry.probe_max_s < f.retry.probe_first_s {
        p.add(
            "retry.probe_max_s",
            format!(
                "probes every {}..{} s: the first wait must be at least 1 s and the longest at least the first",
                f.retry.probe_first_s, f.retry.probe_max_s
            ),
            "set e.g. probe_first_s = 5 and probe_max_s = 60",
        );
    }

    let auth = AuthConfig::validate(f.auth, p);
    let tls = f.tls.map(|t| validate_tls(t, "tls", &base, p));
    let on_behalf_of = f.on_behalf_of.map(|o| {
        if let Err(e) = crate::template::check_syntax(&o.value) {
            p.add(
                "on_behalf_of.value",
                format!("bad template: {e}"),
                "fix the template syntax",
            );
        }
        OnBehalfOf {
            header: o.header,
            value: o.value,
        }
    });
    if let Some(o) = &on_behalf_of {
        if reqwest::header::HeaderName::from_bytes(o.header.as_bytes()).is_err() {
            p.add(
                "on_behalf_of.header",
                format!("`{}` is not a valid header name", o.header),
                "use e.g. \"X-Caller-Id\"",
            );
        }
    }

    if f.kind != "scim" && f.scim.is_some() {
        p.add(
            "scim",
            "`[scim]` is only for `kind = \"scim\"`",
            "remove the table or change `kind`",
        );
    }
    if f.kind != "rest" && f.rest.is_some() {
        p.add(
            "rest",
            "`[rest]` is only for `kind = \"rest\"`",
            "remove the table or change `kind`",
        );
    }
    let kind = match f.kind.as_str() {
        "rest" => match f.rest {
            Some(rest) => crate::target::rest::config::validate(rest, p).map(KindConfig::Rest),
            None => {
                p.add(
                    "rest",
                    "`kind = \"rest\"` needs a `[rest]` table describing the API",
                    "add `[rest]` with its operations (see provisioners/example.toml)",
                );
                None
            }
        },
        "scim" => crate::target::scim::config::validate(f.scim.unwrap_or_default(), p)
            .map(KindConfig::Scim),
        other => {
            p.add(
                "kind",
                format!("unknown kind `{other}`"),
                "use \"rest\" or \"scim\"",
            );
            None
        }
    };

    let kind = kind?;
    let config = ProvisionerConfig {
        file: p.file().to_path_buf(),
        name,
        queue,
        url_prefixes,
        endpoint: f.endpoint,
        provision_group,
        target_group_map,
        unmanaged_logins,
        account_cache_size: f.account_cache_size.max(1),
        account_cache_validity_period: Duration::from_secs(f.account_cache_validity_period),
        account_sync_rate_limit: Duration::from_millis(f.account_sync_rate_limit_ms),
        member_sync_rate_limit: Duration::from_millis(f.member_sync_rate_limit_ms),
        provision_strategy,
        group_sync_strategy,
        target_group_cache_size: f.target_group_cache_size.max(1),
        target_group_retry_delay: Duration::from_secs(f.target_group_retry_delay),
        max_removal_share: f.max_removal_share,
        removal_guard_min: f.removal_guard_min,
        max_removals,
        auth,
        tls,
        on_behalf_of,
        timeout: Duration::from_secs(f.timeout_s.max(1)),
        max_response_bytes: f.max_response_bytes,
        concurrency: f.concurrency.max(1),
        partitions: f.partitions,
        retry: RetryPolicy {
            max_attempts: f.retry.max_attempts.max(1),
            max_elapsed: Duration::from_secs(f.retry.max_elapsed_s),
            initial_backoff: Duration::from_millis(f.retry.initial_backoff_ms),
            max_backoff: Duration::from_secs(f.retry.max_backoff_s),
            probe_first: Duration::from_secs(f.retry.probe_first_s),
            probe_max: Duration::from_secs(f.retry.probe_max_s),
        },
        kind,
    };
    let missing = crate::target::missing_operations(&config);
    for m in missing {
        p.add(m.0, m.1, m.2);
    }
    if p.count() > start {
        None
    } else {
        Some(config)
    }
}

fn load_group_map(path: &Path, p: &mut Problems<'_>) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.add(
                "target_group_map",
                format!("cannot read `{}`: {e}", path.display()),
                "give an inline table or the path of a JSON/TOML file",
            );
            return BTreeMap::new();
        }
    };
    let parsed: Result<BTreeMap<String, String>, String> =
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        };
    match parsed {
        Ok(m) => m,
        Err(e) => {
            p.add(
                "target_group_map",
                format!(
                    "`{}` is not a map of group -> remote group name: {e}",
                    path.display()
                ),
                "write a flat JSON object or TOML table of strings",
            );
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests;
