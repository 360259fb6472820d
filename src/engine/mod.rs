//! The reconciliation engine: everything every target kind shares. It routes
//! an [`Event`] by group, applies the provisioning and group-sync strategies,
//! keeps the API-ID caches, paces calls and decides nothing about HTTP: it
//! talks to a target only through [`TargetApi`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{FullSyncUpdates, GroupSyncStrategy, ProvisionStrategy, ProvisionerConfig};
use crate::event::{Action, Attributes, Event, Subjects, SyncSubject};
use crate::target::dry_run::WriteLog;
use crate::target::{SubjectContext, TargetApi, TargetError, TargetResult};

mod accounts;
pub mod adaptive;
pub mod cache;
mod groups;
mod guard;
pub mod health;
mod owned;
pub mod ownership;
pub mod pace;
mod progress;
mod resolve;
pub mod retry;
mod syncs;

use adaptive::{AdaptivePace, PaceLimits};
use cache::{AccountCache, GroupCache, SubjectCache};
use ownership::{MemoryOwnership, Ownership};
use pace::Pacer;

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: OutcomeStatus,
    /// One line for logs and the journal: what changed.
    pub detail: String,
    /// API calls made.
    pub api_calls: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// The target is now in the state the event asked for.
    Applied,
    /// Nothing to do for this provisioner (unmapped group, unmanaged login,
    /// a removal of what the worker does not own under `remove_only_owned`).
    Ignored,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Applied => "applied",
            OutcomeStatus::Ignored => "ignored",
        }
    }
}

/// Why an event could not be applied (the target's error, or a mismatch
/// between the event and the configuration).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    pub error: TargetError,
    /// API calls made before failing.
    pub api_calls: u32,
}

impl ApplyError {
    pub fn is_transient(&self) -> bool {
        self.error.is_transient()
    }
    pub fn retry_after(&self) -> Option<Duration> {
        self.error.retry_after
    }
}

/// A provisioner as the consumer sees it: something that applies events.
/// Built from a provisioner's configuration by `assembly::provisioner`.
#[async_trait]
pub trait Provisioner: Send + Sync {
    fn name(&self) -> &str;
    async fn apply(&self, event: &Event) -> Result<Outcome, ApplyError>;
    /// Asks the target whether it answers, changing nothing (see
    /// [`TargetApi::probe`]): used while it is down.
    async fn probe(&self) -> Result<(), TargetError>;
    /// Counters for the metrics.
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }
    /// Forgets every cached ID (an operator's request after changes made on
    /// the target by hand).
    fn clear_caches(&self) {}
    /// The target's adaptive pace, when `[pacing] adaptive` is on: the
    /// consumers apply no more events at once than it allows.
    fn pacing(&self) -> Option<Arc<AdaptivePace>> {
        None
    }
}

/// What an engine has counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub account_cache_hits: u64,
    pub account_cache_misses: u64,
    /// Time calls spent waiting for the rate limits and adaptive pacing.
    pub rate_limit_wait: Duration,
}

/// Which rate limit a call counts against.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Account,
    Member,
}

/// Where an API ID came from. Only a cached one can have gone stale unseen:
/// the account or group deleted and created again under a new ID, out of band
/// or by another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Cache,
    Target,
}

/// Per-apply bookkeeping.
#[derive(Default)]
struct Tally {
    calls: u32,
}

type Step<T> = Result<T, TargetError>;

/// The shared reconciliation logic over one target.
pub struct Engine {
    name: String,
    target: Arc<dyn TargetApi>,
    provision_group: Option<String>,
    target_group_map: BTreeMap<String, String>,
    unmanaged: BTreeSet<String>,
    provision_strategy: ProvisionStrategy,
    group_sync_strategy: GroupSyncStrategy,
    full_sync_updates: FullSyncUpdates,
    target_group_retry_delay: Duration,
    max_removal_share: f64,
    removal_guard_min: usize,
    max_removals: usize,
    /// Removals leave alone what `ownership` does not say the worker owns.
    remove_only_owned: bool,
    /// Where what the worker creates and adopts is recorded; none when
    /// nothing is recorded (no journal store, `remove_only_owned` off).
    ownership: Option<Arc<dyn Ownership>>,
    /// A dry run's plan: what is left alone is noted there too.
    plan: Option<WriteLog>,
    /// Ownership writes in flight in the background (`remove_only_owned`
    /// off), at most `owned::BACKGROUND_WRITES`.
    background: Arc<tokio::sync::Semaphore>,
    /// Ownership records dropped because the background was full.
    records_dropped: AtomicU64,
    accounts: AccountCache,
    /// Subject -> match value, for events that come without attributes.
    subjects: SubjectCache,
    groups: GroupCache,
    account_pace: Option<Pacer>,
    member_pace: Option<Pacer>,
    /// Slows down when the target throttles (`[pacing]`); `None` when off.
    adaptive: Option<Arc<AdaptivePace>>,
    /// Microseconds calls waited for a pacer.
    paced_us: AtomicU64,
}

impl Engine {
    pub fn new(config: &ProvisionerConfig, target: Arc<dyn TargetApi>) -> Self {
        Engine {
            name: config.name.clone(),
            target,
            provision_group: config.provision_group.clone(),
            target_group_map: config.target_group_map.clone(),
            unmanaged: config.unmanaged_logins.iter().cloned().collect(),
            provision_strategy: config.provision_strategy,
            group_sync_strategy: config.group_sync_strategy,
            full_sync_updates: config.full_sync_updates,
            target_group_retry_delay: config.target_group_retry_delay,
            max_removal_share: config.max_removal_share,
            removal_guard_min: config.removal_guard_min,
            max_removals: config.max_removals,
            remove_only_owned: config.remove_only_owned,
            // Without a store given, what this process creates and adopts is
            // remembered for its life, so that the option keeps its promise
            // (never remove what it does not own) rather than removing all.
            ownership: config
                .remove_only_owned
                .then(|| Arc::new(MemoryOwnership::default()) as Arc<dyn Ownership>),
            plan: None,
            background: Arc::new(tokio::sync::Semaphore::new(owned::BACKGROUND_WRITES)),
            records_dropped: AtomicU64::new(0),
            accounts: AccountCache::new(
                config.account_cache_size,
                config.account_cache_validity_period,
            ),
            subjects: SubjectCache::new(config.account_cache_size),
            groups: GroupCache::new(config.target_group_cache_size),
            account_pace: Pacer::new(config.account_sync_rate_limit),
            member_pace: Pacer::new(config.member_sync_rate_limit),
            adaptive: config.pacing.adaptive.then(|| {
                Arc::new(AdaptivePace::new(
                    config.pacing,
                    pace_limits(config),
                    config.retry.max_backoff,
                ))
            }),
            paced_us: AtomicU64::new(0),
        }
    }

    /// Records ownership in `store` (the journal's, or a dry run's
    /// rehearsal of it): from now on whatever the engine creates or adopts.
    pub fn with_ownership(mut self, store: Arc<dyn Ownership>) -> Self {
        self.ownership = Some(store);
        self
    }

    /// Notes in a dry run's plan what is left alone, beside the writes.
    pub fn with_plan(mut self, plan: WriteLog) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Paces (per phase) and counts one API call.
    async fn call<T>(
        &self,
        tally: &mut Tally,
        phase: Phase,
        fut: impl std::future::Future<Output = TargetResult<T>>,
    ) -> TargetResult<T> {
        let pacer = match phase {
            Phase::Account => &self.account_pace,
            Phase::Member => &self.member_pace,
        };
        let mut waited = Duration::ZERO;
        if let Some(p) = pacer {
            waited += p.wait().await;
        }
        // After the fixed limit, so that the start it records is the call's.
        let admission = match &self.adaptive {
            Some(a) => Some(a.admit().await),
            None => None,
        };
        if let Some(a) = &admission {
            waited += a.waited;
        }
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.paced_us.fetch_add(us, Ordering::Relaxed);
        tally.calls += 1;
        let result = fut.await;
        if let (Some(pace), Some(a)) = (&self.adaptive, admission) {
            pace.record(a.started, &result);
        }
        result
    }

    fn context(
        &self,
        subject: &str,
        attributes: Attributes,
        actor: Option<&str>,
    ) -> Step<SubjectContext> {
        Ok(SubjectContext {
            match_value: self.match_value(subject, &attributes)?,
            subject: subject.to_string(),
            attributes,
            actor: actor.map(str::to_string),
        })
    }

    /// The context of one subject of a sync whose match value is known.
    fn sync_context(
        &self,
        event: &Event,
        s: &SyncSubject,
        match_value: String,
    ) -> Step<SubjectContext> {
        Ok(SubjectContext {
            subject: s.subject.clone(),
            match_value,
            attributes: attributes_of(s)?,
            actor: event.actor.clone(),
        })
    }

    /// Whether updates that would change nothing are left out
    /// (`full_sync_updates`), so that what the target shows is worth comparing.
    fn compares(&self) -> bool {
        self.full_sync_updates == FullSyncUpdates::Changed
    }

    /// Whether an update the target found needless is left out.
    fn skips(&self, in_step: bool) -> bool {
        in_step && self.compares()
    }

    /// The subject's match value, lowercase and never empty; remembered for
    /// the subject's later events that come without attributes.
    fn match_value(&self, subject: &str, attributes: &Attributes) -> Step<String> {
        let computed = self
            .target
            .match_value(subject, attributes)
            .map(|m| m.to_lowercase())
            .and_then(|m| {
                if m.is_empty() {
                    Err(TargetError::permanent(format!(
                        "`{subject}` has an empty match value"
                    )))
                } else {
                    Ok(m)
                }
            });
        match computed {
            Ok(m) => {
                self.subjects.put(subject, &m);
                Ok(m)
            }
            // An event may come without attributes (target-group events and
            // deletes often do, docs/events.md): the subject's match value is
            // then the one last seen with them.
            Err(e) if attributes.is_empty() => self.subjects.get(subject).ok_or_else(|| {
                TargetError::permanent(format!(
                    "{e}; the event has no attributes and no earlier event of `{subject}` was seen, so its match value is unknown: send the attributes with the event"
                ))
            }),
            Err(e) => Err(e),
        }
    }

    fn is_unmanaged(&self, match_value: &str) -> bool {
        self.unmanaged.contains(match_value)
    }

    async fn route(&self, tally: &mut Tally, event: &Event) -> Step<(OutcomeStatus, String)> {
        let applied = |d: String| (OutcomeStatus::Applied, d);
        let ignored = |d: String| (OutcomeStatus::Ignored, d);
        let is_provision_group = self.provision_group.as_deref() == Some(event.group.as_str());
        let remote_group = self.target_group_map.get(&event.group);
        if !is_provision_group && remote_group.is_none() {
            return Ok(ignored(format!(
                "group `{}` is not managed here",
                event.group
            )));
        }
        match &event.subjects {
            Subjects::One {
                subject,
                attributes,
            } => {
                let ctx = self.context(subject, attributes.clone(), event.actor.as_deref())?;
                if self.is_unmanaged(&ctx.match_value) {
                    return Ok(ignored(format!(
                        "`{}` is an unmanaged login",
                        ctx.match_value
                    )));
                }
                match (remote_group, event.action) {
                    (None, Action::Add | Action::Update) => {
                        self.provision(tally, &ctx).await.map(applied)
                    }
                    (None, Action::Delete) => self.deprovision(tally, &ctx).await,
                    (Some(g), Action::Add | Action::Update) => {
                        self.add_member(tally, g, &ctx).await.map(applied)
                    }
                    (Some(g), Action::Delete) => self.remove_member(tally, g, &ctx).await,
                    (_, Action::MembershipSync) => {
                        Err(TargetError::permanent("membership_sync needs `subjects`"))
                    }
                }
            }
            Subjects::All { subjects } => match remote_group {
                None => self
                    .sync_accounts(tally, event, subjects)
                    .await
                    .map(applied),
                Some(g) => self
                    .sync_group(tally, event, g, subjects)
                    .await
                    .map(applied),
            },
        }
    }
}

#[async_trait]
impl Provisioner for Engine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn probe(&self) -> Result<(), TargetError> {
        self.target.probe().await
    }

    fn stats(&self) -> EngineStats {
        let (hits, misses) = self.accounts.stats();
        EngineStats {
            account_cache_hits: hits,
            account_cache_misses: misses,
            rate_limit_wait: Duration::from_micros(self.paced_us.load(Ordering::Relaxed)),
        }
    }

    fn pacing(&self) -> Option<Arc<AdaptivePace>> {
        self.adaptive.clone()
    }

    fn clear_caches(&self) {
        self.accounts.clear();
        self.subjects.clear();
        self.groups.clear();
        tracing::info!(provisioner = %self.name, "caches cleared");
    }

    async fn apply(&self, event: &Event) -> Result<Outcome, ApplyError> {
        let mut tally = Tally::default();
        match self.route(&mut tally, event).await {
            Ok((status, detail)) => Ok(Outcome {
                status,
                detail,
                api_calls: tally.calls,
            }),
            Err(error) => Err(ApplyError {
                error,
                api_calls: tally.calls,
            }),
        }
    }
}

/// The ceilings of adaptive pacing: `concurrency`, and the fastest rate
/// the fixed limits allow over the phases this provisioner has (none when
/// one of them is unlimited: then only throttling paces the calls).
fn pace_limits(config: &ProvisionerConfig) -> PaceLimits {
    let needs = config.needs();
    let phases = [
        (needs.accounts, config.account_sync_rate_limit),
        (needs.groups, config.member_sync_rate_limit),
    ];
    let mut max_rate: Option<f64> = None;
    for (used, period) in phases {
        if !used {
            continue;
        }
        if period.is_zero() {
            max_rate = None;
            break;
        }
        let rate = 1.0 / period.as_secs_f64();
        max_rate = Some(max_rate.map_or(rate, |m| m.max(rate)));
    }
    PaceLimits {
        max_rate,
        max_concurrency: config.concurrency,
    }
}

/// A sync subject's attributes, none when the event gave none.
fn attributes_of(s: &SyncSubject) -> Step<Attributes> {
    s.attributes
        .as_ref()
        .map_or(Ok(Attributes::new()), |packed| {
            packed.unpack().map_err(TargetError::permanent)
        })
}

#[cfg(test)]
mod tests;
