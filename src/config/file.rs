//! The two kinds of files as written: serde structs that refuse unknown keys,
//! with a doc comment on every key and a named function for every default.
//! Keys without which a file means nothing are `Option`s here: validation
//! reports them missing together with every other problem, where serde would
//! stop at the first. docs/configuration.md has a row for every key (checked
//! by tests/it/docs.rs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::admin::{AdminFile, JournalFile};
use super::auth::AuthFile;
use super::runtime::{FullSyncUpdates, GroupSyncStrategy, LogFormat, ProvisionStrategy, QueueType};
use crate::target::rest::config::RestFile;
use crate::target::scim::config::ScimFile;

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
    /// The admin HTTP API; without this table none is served (so several
    /// worker processes can share one file).
    pub admin: Option<AdminFile>,
    /// The outcome journal; without this table none is kept.
    pub journal: Option<JournalFile>,
}

pub(super) fn default_shutdown_grace_s() -> u64 {
    30
}

fn default_provisioners() -> PathOrList {
    PathOrList::One("../provisioners".into())
}

/// One path or a list of paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PathOrList {
    /// A directory of `*.toml` files, or one file.
    One(String),
    /// The files, each relative to the worker file.
    Many(Vec<String>),
}

/// `[amqp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpFile {
    /// Broker URL, `amqp://` or `amqps://`; for a cluster, the URL of each
    /// node, as a list or comma-separated (a comma in a password is written
    /// `%2C`), tried in order. The `AMQP_URL` environment variable (also
    /// comma-separated) overrides it.
    #[serde(default = "default_amqp_url")]
    pub url: StringOrList,
    /// Unacknowledged deliveries the broker may hand each provisioner at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Longest wait between reconnection attempts, in seconds.
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: u64,
    /// The type of the queues the worker declares; an existing queue keeps its own.
    #[serde(default)]
    pub queue_type: QueueType,
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
    pub tls: Option<TlsFile>,
}

impl Default for AmqpFile {
    fn default() -> Self {
        AmqpFile {
            url: default_amqp_url(),
            prefetch: default_prefetch(),
            reconnect_max_s: default_reconnect_max_s(),
            queue_type: QueueType::default(),
            delivery_limit: default_delivery_limit(),
            ack_timeout_s: default_ack_timeout_s(),
            max_event_bytes: default_max_event_bytes(),
            tls: None,
        }
    }
}

fn default_amqp_url() -> StringOrList {
    StringOrList::One("amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
fn default_prefetch() -> u16 {
    64
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
    /// How log lines are written.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

pub(super) fn default_log_level() -> String {
    "info".into()
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
    /// The kind of target (required).
    pub kind: Option<Kind>,
    /// Queue consumed; default `provisioner.<name>`.
    pub queue: Option<String>,
    /// Prefix of every API URL; a list means equivalent nodes tried in order (required).
    pub url_prefix: Option<StringOrList>,
    /// Connect to this `host:port` instead of the URL's own.
    pub endpoint: Option<String>,
    /// Local group whose events provision/deprovision the account itself.
    pub provision_group: Option<String>,
    /// Local group -> remote group name: an inline table or a path to a JSON/TOML file.
    pub target_group_map: Option<GroupMapSource>,
    /// Match values never managed: a list or a whitespace-separated string.
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
    /// How an account event creates or updates the account.
    #[serde(default)]
    pub provision_strategy: ProvisionStrategy,
    /// How a group's `membership_sync` adds members.
    #[serde(default)]
    pub group_sync_strategy: GroupSyncStrategy,
    /// Which accounts an account `membership_sync` updates: only those whose
    /// listing differs from the update, or every listed one. With `changed`,
    /// a single add or update whose look-up shows the account already so
    /// sends no update either.
    #[serde(default)]
    pub full_sync_updates: FullSyncUpdates,
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
    pub max_removals: usize,
    /// Deprovisions and full syncs remove only the remote accounts and
    /// memberships this worker created or adopted (recorded in the journal's
    /// store); every other one is left alone and reported. Needs `[journal]`
    /// in the worker file. false: remove whatever the event says, as the
    /// original did.
    #[serde(default = "default_remove_only_owned")]
    pub remove_only_owned: bool,
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
    /// Coalesce a backlog: when several add/update/delete events of one
    /// subject and group wait, apply only the last one's effect and
    /// acknowledge them all after it. Off where a subject's match value can
    /// change between its events.
    #[serde(default = "default_coalesce")]
    pub coalesce: bool,
    /// 0: one queue. N > 0: a consistent-hash exchange named `queue` spreads
    /// events by subject over N queues `<queue>.0` .. `<queue>.<N-1>`, each
    /// with a single active consumer, so several worker processes keep
    /// per-subject order (needs the rabbitmq_consistent_hash_exchange plugin).
    #[serde(default)]
    pub partitions: u16,
    /// Retry budget for transient failures.
    #[serde(default)]
    pub retry: RetryFile,
    /// Adaptive pacing: how the worker slows down when the target says it
    /// is asked too often (429 or `Retry-After`) and speeds up again.
    #[serde(default)]
    pub pacing: PacingFile,
    /// The API description for `kind = "rest"`.
    pub rest: Option<RestFile>,
    /// Overrides of the SCIM defaults for `kind = "scim"`.
    pub scim: Option<ScimFile>,
}

fn default_account_cache_size() -> usize {
    1000
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
fn default_max_removals() -> usize {
    500
}
/// The original's behaviour: removals do not ask who made the account.
fn default_remove_only_owned() -> bool {
    false
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
/// Enough calls in flight to hide a SaaS API's latency (at 20 ms, 32
/// events of 2 calls each apply about 30 times as fast as one at a time),
/// few enough for a target to bear; adaptive pacing lowers it on 429s.
fn default_concurrency() -> usize {
    32
}
fn default_coalesce() -> bool {
    true
}

/// `kind`: which adapter talks to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An API described without code in `[rest]`.
    Rest,
    /// A SCIM 2.0 service provider; `[scim]` overrides its defaults.
    Scim,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One value (for `unmanaged_logins`, whitespace-separated values; for
    /// `[amqp] url`, comma-separated).
    One(String),
    /// Each value on its own.
    Many(Vec<String>),
}

/// `target_group_map`: inline or from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GroupMapSource {
    /// Local group -> remote group name, written in the file.
    Inline(BTreeMap<String, String>),
    /// A JSON or TOML file of the same, relative to the provisioner file.
    Path(String),
}

/// `on_behalf_of`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnBehalfOfFile {
    /// Header name, e.g. `X-Caller-Id` (required).
    pub header: Option<String>,
    /// Template over `actor`, e.g. `choria={{ actor }}` (required).
    pub value: Option<String>,
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

/// `[pacing]`: adaptive pacing per target (AIMD). On a 429 or a
/// `Retry-After` the call rate and the events applied at once are cut by
/// `decrease`; while calls succeed they grow again by `increase`, never above
/// the configured limits (`account_sync_rate_limit_ms`,
/// `member_sync_rate_limit_ms`, `concurrency`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingFile {
    /// Whether the worker adapts its pace to the target's throttling; false
    /// keeps only the fixed limits.
    #[serde(default = "default_pacing_adaptive")]
    pub adaptive: bool,
    /// Factor (between 0 and 1, both excluded) the call rate and the
    /// concurrency are multiplied by when the target throttles.
    #[serde(default = "default_pacing_decrease")]
    pub decrease: f64,
    /// Calls per second the allowed rate grows by for each second of
    /// successful calls.
    #[serde(default = "default_pacing_increase")]
    pub increase: f64,
    /// Calls per second the allowed rate never goes below.
    #[serde(default = "default_pacing_min_rate")]
    pub min_rate: f64,
}

impl Default for PacingFile {
    fn default() -> Self {
        PacingFile {
            adaptive: default_pacing_adaptive(),
            decrease: default_pacing_decrease(),
            increase: default_pacing_increase(),
            min_rate: default_pacing_min_rate(),
        }
    }
}

fn default_pacing_adaptive() -> bool {
    true
}
fn default_pacing_decrease() -> f64 {
    0.7
}
fn default_pacing_increase() -> f64 {
    1.0
}
fn default_pacing_min_rate() -> f64 {
    1.0
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
