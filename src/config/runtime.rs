//! The validated configuration the rest of the worker runs on. The choices a
//! file makes by name (`queue_type`, `provision_strategy`, ...) are serde
//! enums read straight from the file; everything else is built by validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::AuthConfig;
use super::needs::{MissingOperation, Needs};
use super::secret::Secret;
use crate::target::rest::config::RestConfig;
use crate::target::scim::config::ScimConfig;

/// The validated configuration of the whole process.
#[derive(Debug, Clone)]
pub struct Config {
    pub worker_file: Option<PathBuf>,
    pub amqp: AmqpConfig,
    pub log: LogConfig,
    pub shutdown_grace: Duration,
    pub provisioners: Vec<ProvisionerConfig>,
    /// The admin API, when the worker file has `[admin]`.
    pub admin: Option<super::admin::AdminConfig>,
    /// The outcome journal, when the worker file has `[journal]`.
    pub journal: Option<super::admin::JournalConfig>,
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: BrokerUrls,
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

/// `[amqp] url`: the broker's URL, or the URL of each node of one cluster,
/// in the order they are tried. Each is a secret (it holds a password);
/// [`BrokerUrls::shown`] masks the passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<Secret>);

impl BrokerUrls {
    pub fn new(urls: Vec<Secret>) -> BrokerUrls {
        BrokerUrls(urls)
    }

    /// The URLs of a comma-separated list, as `AMQP_URL` takes them; blank
    /// entries are dropped. One URL is a list of one.
    pub fn split(list: &str) -> BrokerUrls {
        BrokerUrls(
            split_list(list)
                .into_iter()
                .map(|u| Secret::new(u.to_string()))
                .collect(),
        )
    }

    /// The nodes' URLs, in the order they are tried.
    pub fn nodes(&self) -> &[Secret] {
        &self.0
    }

    /// Node `index`'s URL with its password masked, for logs and errors.
    pub fn shown_node(&self, index: usize) -> String {
        self.0
            .get(index)
            .map(|u| crate::redact::redact_url(u.expose()))
            .unwrap_or_default()
    }

    /// Every URL with its password masked, comma-separated.
    pub fn shown(&self) -> String {
        (0..self.0.len())
            .map(|i| self.shown_node(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The list as `AMQP_URL` takes it, passwords included: only for handing
    /// the broker to a child process.
    pub fn expose_list(&self) -> String {
        self.0
            .iter()
            .map(Secret::expose)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The entries of a comma-separated list, trimmed, blank ones dropped.
pub(super) fn split_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// `[amqp] queue_type`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A single-node queue.
    #[default]
    Classic,
    /// Replicated over the cluster (recommended in production); parks a
    /// message itself after `delivery_limit` deliveries.
    Quorum,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// `[log] format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// `provision_strategy`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvisionStrategy {
    /// Look the account up; update it if found, create it if not.
    #[default]
    QueryFirst,
    /// Create; if the target says it exists, look it up and update it.
    CreateFirst,
}

/// `group_sync_strategy`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupSyncStrategy {
    /// Add every member whether present or not, then remove the extras.
    #[default]
    #[serde(alias = "add-members-first")]
    AddMemberFirst,
    /// Add only who is missing (for targets that refuse duplicate adds),
    /// then remove the extras.
    QueryFirst,
}

/// `full_sync_updates`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FullSyncUpdates {
    /// Update only accounts that differ: an account whose listing (or
    /// look-up) shows it as the update would leave it gets no update, as
    /// Entra ID and Grouper write only changed attributes.
    #[default]
    Changed,
    /// Update every listed subject's account, equal or not (the original's
    /// behaviour: one update per listed subject).
    All,
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

/// Adaptive pacing (`[pacing]`), validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingPolicy {
    pub adaptive: bool,
    /// In (0, 1).
    pub decrease: f64,
    /// Calls/s gained per second of successful calls; positive.
    pub increase: f64,
    /// Calls/s; positive.
    pub min_rate: f64,
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

    /// The operations `needs` asks for that this kind's description lacks.
    pub fn missing_operations(&self, needs: Needs) -> Vec<MissingOperation> {
        match self {
            KindConfig::Rest(rest) => rest.missing_operations(needs),
            // SCIM defines every operation the engine uses.
            KindConfig::Scim(_) => Vec::new(),
        }
    }
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
    pub full_sync_updates: FullSyncUpdates,
    pub target_group_cache_size: usize,
    pub target_group_retry_delay: Duration,
    pub max_removal_share: f64,
    pub removal_guard_min: usize,
    /// 0: no absolute limit.
    pub max_removals: usize,
    /// Removals leave alone what the worker does not own (`engine::ownership`).
    pub remove_only_owned: bool,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub on_behalf_of: Option<OnBehalfOf>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub concurrency: usize,
    /// Waiting events of one subject and group applied as one (`worker::coalesce`).
    pub coalesce: bool,
    pub partitions: u16,
    pub retry: RetryPolicy,
    pub pacing: PacingPolicy,
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
