//! The reconciliation engine: everything every target kind shares. It routes
//! an [`Event`] by group, applies the provisioning and group-sync strategies,
//! keeps the API-ID caches, paces calls and decides nothing about HTTP: it
//! talks to a target only through [`TargetApi`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{GroupSyncStrategy, ProvisionStrategy, ProvisionerConfig};
use crate::event::{Action, Attributes, Event, Subjects};
use crate::target::{
    ApiId, Created, FailureClass, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
    TargetError, TargetResult,
};

pub mod cache;
pub mod health;
pub mod pace;
pub mod retry;

use cache::{AccountCache, CachedAccount, GroupCache, SubjectCache};
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
    /// Nothing to do for this provisioner (unmapped group, unmanaged login).
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
/// Built by [`build`] from a provisioner's configuration.
#[async_trait]
pub trait Provisioner: Send + Sync {
    fn name(&self) -> &str;
    async fn apply(&self, event: &Event) -> Result<Outcome, ApplyError>;
    /// Asks the target whether it answers, changing nothing (see
    /// [`TargetApi::probe`]): used while it is down.
    async fn probe(&self) -> Result<(), TargetError>;
}

/// Builds the provisioner of a configuration: the kind's target under the engine.
pub fn build(
    config: &ProvisionerConfig,
) -> Result<Arc<dyn Provisioner>, crate::http::HttpSetupError> {
    let http = crate::http::HttpClient::new(config)?;
    let target = crate::target::build(config, http);
    Ok(Arc::new(Engine::new(config, target)))
}

/// Above this many unknown account IDs, a group sync lists the accounts
/// once instead of looking each one up.
const BULK_RESOLVE_THRESHOLD: usize = 20;

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
    target_group_retry_delay: Duration,
    max_removal_share: f64,
    removal_guard_min: usize,
    max_removals: usize,
    accounts: AccountCache,
    /// Subject -> match value, for events that come without attributes.
    subjects: SubjectCache,
    groups: GroupCache,
    account_pace: Option<Pacer>,
    member_pace: Option<Pacer>,
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
            target_group_retry_delay: config.target_group_retry_delay,
            max_removal_share: config.max_removal_share,
            removal_guard_min: config.removal_guard_min,
            max_removals: config.max_removals,
            accounts: AccountCache::new(
                config.account_cache_size,
                config.account_cache_validity_period,
            ),
            subjects: SubjectCache::new(config.account_cache_size),
            groups: GroupCache::new(config.target_group_cache_size),
            account_pace: Pacer::new(config.account_sync_rate_limit),
            member_pace: Pacer::new(config.member_sync_rate_limit),
        }
    }

    /// (hits, misses) of the account cache (for the cache hit ratio).
    pub fn account_cache_stats(&self) -> (u64, u64) {
        self.accounts.stats()
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
        if let Some(p) = pacer {
            p.wait().await;
        }
        tally.calls += 1;
        fut.await
    }

    fn context(
        &self,
        subject: &str,
        attributes: &Attributes,
        actor: Option<&str>,
    ) -> Step<SubjectContext> {
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
        let match_value = match computed {
            Ok(m) => {
                self.subjects.put(subject, &m);
                m
            }
            // Target-group events may come without attributes (SPEC §2): the
            // subject's match value is then the one last seen with them.
            Err(e) if attributes.is_empty() => self.subjects.get(subject).ok_or_else(|| {
                TargetError::permanent(format!(
                    "{e}; the event has no attributes and no earlier event of `{subject}` was seen, so its match value is unknown: send the attributes with the event"
                ))
            })?,
            Err(e) => return Err(e),
        };
        Ok(SubjectContext {
            subject: subject.to_string(),
            match_value,
            attributes: attributes.clone(),
            actor: actor.map(str::to_string),
        })
    }

    fn is_unmanaged(&self, match_value: &str) -> bool {
        self.unmanaged.contains(match_value)
    }

    /// The account's API ID: from the cache, from the trusted-absent window, or
    /// by asking the target. `trust_absent = false` always asks on a miss.
    async fn resolve_account(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
        trust_absent: bool,
    ) -> Step<Option<ApiId>> {
        Ok(self
            .resolve_account_from(tally, phase, ctx, trust_absent)
            .await?
            .map(|(id, _)| id))
    }

    /// [`resolve_account`](Self::resolve_account), saying where the ID came from.
    async fn resolve_account_from(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
        trust_absent: bool,
    ) -> Step<Option<(ApiId, Source)>> {
        let mut source = Source::Cache;
        if trust_absent && self.accounts.wants_prefill() {
            // The validity period needs a complete listing before misses can be trusted.
            self.list_accounts(tally).await?;
            source = Source::Target;
        }
        match self.accounts.get(&ctx.match_value) {
            CachedAccount::Known(id) => return Ok(Some((id, source))),
            CachedAccount::TrustedAbsent if trust_absent => return Ok(None),
            _ => {}
        }
        let found = self
            .call(tally, phase, self.target.lookup_account(ctx))
            .await?;
        if let Some(id) = &found {
            self.accounts.put(&ctx.match_value, id);
        }
        Ok(found.map(|id| (id, Source::Target)))
    }

    /// Forgets the cached ID and asks the target.
    async fn refresh_account(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
    ) -> Step<Option<ApiId>> {
        self.accounts.remove(&ctx.match_value);
        self.resolve_account(tally, phase, ctx, false).await
    }

    /// Lists every remote account and prefills the cache with it.
    async fn list_accounts(&self, tally: &mut Tally) -> Step<Vec<RemoteAccount>> {
        self.list_accounts_in(tally, Phase::Account).await
    }

    async fn list_accounts_in(&self, tally: &mut Tally, phase: Phase) -> Step<Vec<RemoteAccount>> {
        // Before the call: what other events cache while it runs is newer than it.
        let listing = self.accounts.begin_listing();
        let mut accounts = self.call(tally, phase, self.target.list_accounts()).await?;
        for a in &mut accounts {
            a.match_value = a.match_value.to_lowercase();
        }
        self.accounts.prefill(listing, &accounts);
        Ok(accounts)
    }

    /// The remote group's API ID: from the cache, from a listing, or from
    /// creating the group (when the kind may).
    async fn resolve_group(
        &self,
        tally: &mut Tally,
        remote_name: &str,
    ) -> Step<(RemoteGroup, Source)> {
        if let Some(api_id) = self.groups.get(remote_name) {
            let group = RemoteGroup {
                name: remote_name.to_string(),
                api_id,
            };
            return Ok((group, Source::Cache));
        }
        if let Some(g) = self.find_group(tally, remote_name).await? {
            return Ok((g, Source::Target));
        }
        if let Some(api_id) = self
            .call(tally, Phase::Member, self.target.create_group(remote_name))
            .await?
        {
            self.groups.put(remote_name, &api_id);
            let group = RemoteGroup {
                name: remote_name.to_string(),
                api_id,
            };
            return Ok((group, Source::Target));
        }
        Err(TargetError::permanent(format!(
            "target group `{remote_name}` does not exist on the target"
        )))
    }

    /// Lists the remote groups (caching the mapped ones) and finds one.
    async fn find_group(&self, tally: &mut Tally, remote_name: &str) -> Step<Option<RemoteGroup>> {
        let groups = self
            .call(tally, Phase::Member, self.target.list_groups())
            .await?;
        let mapped: BTreeSet<String> = self
            .target_group_map
            .values()
            .map(|n| n.to_lowercase())
            .collect();
        self.groups
            .fill(&groups, |n| mapped.contains(&n.to_lowercase()));
        // Remote group names compare case-insensitively, as in the original.
        let found = groups
            .into_iter()
            .find(|g| g.name.to_lowercase() == remote_name.to_lowercase());
        if let Some(g) = &found {
            self.groups.put(remote_name, &g.api_id);
        }
        Ok(found)
    }

    /// Forgets the cached group ID and lists the groups; `None` when the
    /// group is gone (it is not created: for a removal there is nothing to do).
    async fn refresh_group(
        &self,
        tally: &mut Tally,
        remote_name: &str,
    ) -> Step<Option<RemoteGroup>> {
        self.groups.remove(remote_name);
        self.find_group(tally, remote_name).await
    }

    // ------------------------------------------------------------ accounts

    async fn provision(&self, tally: &mut Tally, ctx: &SubjectContext) -> Step<String> {
        if let ProvisionStrategy::QueryFirst = self.provision_strategy {
            if let Some(id) = self
                .resolve_account(tally, Phase::Account, ctx, true)
                .await?
            {
                return self.update_known(tally, ctx, id).await;
            }
        } else if let CachedAccount::Known(id) = self.accounts.get(&ctx.match_value) {
            return self.update_known(tally, ctx, id).await;
        }
        self.create(tally, ctx).await
    }

    async fn create(&self, tally: &mut Tally, ctx: &SubjectContext) -> Step<String> {
        match self
            .call(tally, Phase::Account, self.target.create_account(ctx))
            .await?
        {
            Created::New(id) => {
                match &id {
                    Some(id) => self.accounts.put(&ctx.match_value, id),
                    None => self.accounts.put_unnamed(&ctx.match_value),
                }
                Ok(format!("created {}", id.as_deref().unwrap_or("account")))
            }
            Created::AlreadyExists => {
                let id = self
                    .resolve_account(tally, Phase::Account, ctx, false)
                    .await?
                    .ok_or_else(|| {
                        TargetError::transient(format!(
                            "create of `{}` says it exists but the look-up finds nothing",
                            ctx.match_value
                        ))
                    })?;
                self.update(tally, ctx, &id).await?;
                Ok(format!("existed; updated {id}"))
            }
        }
    }

    /// Updates an account whose ID came from the cache; a stale ID (one the
    /// target does not know) is dropped and the account looked up afresh.
    async fn update_known(
        &self,
        tally: &mut Tally,
        ctx: &SubjectContext,
        id: ApiId,
    ) -> Step<String> {
        match self.update(tally, ctx, &id).await {
            Ok(()) => Ok(format!("updated {id}")),
            Err(e) if e.is_not_found() => {
                match self.refresh_account(tally, Phase::Account, ctx).await? {
                    Some(fresh) => {
                        self.update(tally, ctx, &fresh).await?;
                        Ok(format!("updated {fresh}"))
                    }
                    None => self.create(tally, ctx).await,
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn update(&self, tally: &mut Tally, ctx: &SubjectContext, id: &str) -> Step<()> {
        self.call(tally, Phase::Account, self.target.update_account(id, ctx))
            .await
    }

    async fn deprovision(&self, tally: &mut Tally, ctx: &SubjectContext) -> Step<String> {
        let Some((id, source)) = self
            .resolve_account_from(tally, Phase::Account, ctx, true)
            .await?
        else {
            return Ok("no such account; nothing to deprovision".into());
        };
        if self.deprovision_id(tally, ctx, &id).await? == Removal::Removed {
            return Ok(format!("deprovisioned {id}"));
        }
        if source == Source::Cache {
            // Absent under a cached ID: the account may have been deleted and
            // created again since, under another ID that must go too.
            if let Some(fresh) = self.refresh_account(tally, Phase::Account, ctx).await? {
                self.accounts.remove(&ctx.match_value);
                if fresh != id {
                    self.deprovision_id(tally, ctx, &fresh).await?;
                    return Ok(format!(
                        "deprovisioned {fresh} (the cached ID {id} was stale)"
                    ));
                }
            }
        }
        Ok(format!("{id} was already gone; nothing to deprovision"))
    }

    async fn deprovision_id(
        &self,
        tally: &mut Tally,
        ctx: &SubjectContext,
        id: &str,
    ) -> Step<Removal> {
        let removal = self
            .call(
                tally,
                Phase::Account,
                self.target.deprovision_account(id, ctx),
            )
            .await?;
        self.accounts.remove(&ctx.match_value);
        Ok(removal)
    }

    /// Full account reconciliation: every listed subject provisioned, every
    /// other managed remote account deprovisioned.
    async fn sync_accounts(
        &self,
        tally: &mut Tally,
        event: &Event,
        subjects: &[String],
        attributes: &BTreeMap<String, Attributes>,
    ) -> Step<String> {
        let remote = self.list_accounts(tally).await?;
        let remote_by_match: HashMap<&str, &str> = remote
            .iter()
            .map(|a| (a.match_value.as_str(), a.api_id.as_str()))
            .collect();
        let empty = Attributes::new();
        let mut failures = Vec::new();
        // Match values first: what is wanted decides what would be removed,
        // and the guard must refuse before anything changes.
        let mut contexts = Vec::with_capacity(subjects.len());
        let mut wanted = BTreeSet::new();
        // A listed subject without a match value might own any remote account:
        // removing accounts is then unsafe, so that phase is skipped.
        let mut unmatched = 0usize;
        for subject in subjects {
            let attrs = attributes.get(subject).unwrap_or(&empty);
            match self.context(subject, attrs, event.actor.as_deref()) {
                Ok(ctx) => {
                    wanted.insert(ctx.match_value.clone());
                    contexts.push(ctx);
                }
                Err(e) => {
                    unmatched += 1;
                    collect(Err::<(), _>(e), subject, &mut failures)?;
                }
            }
        }
        let managed: Vec<&RemoteAccount> = remote
            .iter()
            .filter(|a| !self.is_unmanaged(&a.match_value))
            .collect();
        let doomed: Vec<&RemoteAccount> = if unmatched > 0 {
            Vec::new()
        } else {
            managed
                .iter()
                .copied()
                .filter(|a| !wanted.contains(&a.match_value))
                .collect()
        };
        self.guard_removals(event, "accounts", doomed.len(), managed.len())?;

        let (mut created, mut updated, mut removed) = (0u32, 0u32, 0u32);
        for ctx in &contexts {
            if self.is_unmanaged(&ctx.match_value) {
                continue;
            }
            let result = match remote_by_match.get(ctx.match_value.as_str()) {
                // A sync that names a subject without attributes says nothing
                // to change about it; an update would blank its fields.
                Some(_) if ctx.attributes.is_empty() => Ok(()),
                Some(id) => self.update(tally, ctx, id).await.map(|()| updated += 1),
                None => self.create(tally, ctx).await.map(|_| created += 1),
            };
            collect(result, &ctx.subject, &mut failures)?;
        }
        for account in doomed {
            let ctx = SubjectContext {
                subject: account.match_value.clone(),
                match_value: account.match_value.clone(),
                attributes: Attributes::new(),
                actor: event.actor.clone(),
            };
            let result = self
                .call(
                    tally,
                    Phase::Account,
                    self.target.deprovision_account(&account.api_id, &ctx),
                )
                .await
                // The ID is from this sync's listing: absent means gone.
                .map(|_| {
                    self.accounts.remove(&account.match_value);
                    removed += 1;
                });
            collect(result, &account.match_value, &mut failures)?;
        }
        finish_sync(
            format!("account sync: {created} created, {updated} updated, {removed} deprovisioned"),
            failures,
        )
    }

    // ------------------------------------------------------------- groups

    /// Adds a member; an account not there yet is looked for once more after
    /// `target_group_retry_delay`, as the original did.
    async fn add_member(
        &self,
        tally: &mut Tally,
        remote_name: &str,
        ctx: &SubjectContext,
    ) -> Step<String> {
        let (mut group, mut group_source) = self.resolve_group(tally, remote_name).await?;
        let (id, id_source) = match self
            .resolve_account_from(tally, Phase::Member, ctx, true)
            .await?
        {
            Some(found) => found,
            None => {
                tokio::time::sleep(self.target_group_retry_delay).await;
                let id = self
                    .resolve_account(tally, Phase::Member, ctx, false)
                    .await?
                    .ok_or_else(|| {
                        TargetError::permanent(format!(
                            "account `{}` not found on the target, also after waiting {} s; not added to `{remote_name}`",
                            ctx.match_value,
                            self.target_group_retry_delay.as_secs()
                        ))
                    })?;
                (id, Source::Target)
            }
        };
        if self.group_sync_strategy == GroupSyncStrategy::QueryFirst {
            let (read, read_source, members) = self
                .members_of(tally, remote_name, group, group_source)
                .await?;
            (group, group_source) = (read, read_source);
            if members.iter().any(|m| m.api_id == id) {
                return Ok(format!("already a member of {remote_name}"));
            }
        }
        match self
            .call(
                tally,
                Phase::Member,
                self.target.add_member(&group, &id, ctx),
            )
            .await
        {
            Ok(()) => Ok(format!("added {id} to {remote_name}")),
            // Not found may mean a cached ID is stale (the account or the
            // group was re-created): look the cached ones up afresh, and try
            // once more if either changed.
            Err(e)
                if e.is_not_found()
                    && (group_source == Source::Cache || id_source == Source::Cache) =>
            {
                let fresh_group = match group_source {
                    Source::Cache => {
                        self.groups.remove(remote_name);
                        self.resolve_group(tally, remote_name).await?.0
                    }
                    Source::Target => group.clone(),
                };
                let fresh = match id_source {
                    Source::Cache => self
                        .refresh_account(tally, Phase::Member, ctx)
                        .await?
                        .ok_or_else(|| e.clone())?,
                    Source::Target => id.clone(),
                };
                if fresh == id && fresh_group.api_id == group.api_id {
                    return Err(e);
                }
                self.call(
                    tally,
                    Phase::Member,
                    self.target.add_member(&fresh_group, &fresh, ctx),
                )
                .await?;
                Ok(format!("added {fresh} to {remote_name}"))
            }
            Err(e) => Err(e),
        }
    }

    async fn remove_member(
        &self,
        tally: &mut Tally,
        remote_name: &str,
        ctx: &SubjectContext,
    ) -> Step<String> {
        let (group, group_source) = self.resolve_group(tally, remote_name).await?;
        let Some((id, id_source)) = self
            .resolve_account_from(tally, Phase::Member, ctx, true)
            .await?
        else {
            return Ok("no such account; nothing to remove".into());
        };
        if self.remove_one(tally, &group, &id, ctx).await? == Removal::Removed {
            return Ok(format!("removed {id} from {remote_name}"));
        }
        // Absent under a cached ID proves nothing: the group or the account
        // may have been deleted and created again, membership included, under
        // a new ID. Look the cached ones up once more.
        let fresh_group = match group_source {
            Source::Cache => match self.refresh_group(tally, remote_name).await? {
                Some(g) => g,
                None => {
                    return Ok(format!(
                        "`{remote_name}` is gone from the target; nothing to remove"
                    ))
                }
            },
            Source::Target => group.clone(),
        };
        let fresh = match id_source {
            Source::Cache => match self.refresh_account(tally, Phase::Member, ctx).await? {
                Some(fresh) => fresh,
                None => return Ok("no such account any more; nothing to remove".into()),
            },
            Source::Target => id.clone(),
        };
        if fresh == id && fresh_group.api_id == group.api_id {
            return Ok(format!("{id} was not a member of {remote_name}"));
        }
        self.remove_one(tally, &fresh_group, &fresh, ctx).await?;
        Ok(format!("removed {fresh} from {remote_name}"))
    }

    async fn remove_one(
        &self,
        tally: &mut Tally,
        group: &RemoteGroup,
        id: &str,
        ctx: &SubjectContext,
    ) -> Step<Removal> {
        self.call(
            tally,
            Phase::Member,
            self.target.remove_member(group, id, ctx),
        )
        .await
    }

    /// The group's members. A cached group ID the target does not know is
    /// resolved once more (the group may have been re-created under a new
    /// ID); the group actually read is returned with them.
    async fn members_of(
        &self,
        tally: &mut Tally,
        remote_name: &str,
        group: RemoteGroup,
        source: Source,
    ) -> Step<(RemoteGroup, Source, Vec<RemoteAccount>)> {
        match self.list_members(tally, &group).await {
            Ok(members) => Ok((group, source, members)),
            Err(e) if e.is_not_found() && source == Source::Cache => {
                self.groups.remove(remote_name);
                let (fresh, _) = self.resolve_group(tally, remote_name).await?;
                if fresh.api_id == group.api_id {
                    return Err(e);
                }
                let members = self.list_members(tally, &fresh).await?;
                Ok((fresh, Source::Target, members))
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the remote group's members exactly the listed subjects (unmanaged
    /// accounts aside). Whether a member is unmanaged is read from the member
    /// listing itself: no call per member.
    async fn sync_group(
        &self,
        tally: &mut Tally,
        event: &Event,
        remote_name: &str,
        subjects: &[String],
        attributes: &BTreeMap<String, Attributes>,
    ) -> Step<String> {
        let (group, group_source) = self.resolve_group(tally, remote_name).await?;
        let empty = Attributes::new();
        let mut wanted = Vec::new();
        let mut wanted_matches = BTreeSet::new();
        let mut failures = Vec::new();
        let mut unmatched = 0usize;
        for subject in subjects {
            let attrs = attributes.get(subject).unwrap_or(&empty);
            let ctx = match self.context(subject, attrs, event.actor.as_deref()) {
                Ok(ctx) => ctx,
                Err(e) => {
                    unmatched += 1;
                    collect(Err::<(), _>(e), subject, &mut failures)?;
                    continue;
                }
            };
            wanted_matches.insert(ctx.match_value.clone());
            if !self.is_unmanaged(&ctx.match_value) {
                wanted.push(ctx);
            }
        }

        // Both strategies read the group before changing it: the members it
        // has before the sync decide what is removed, and they are what the
        // mass-deprovision guard counts against (after the adds of
        // add-member-first the group would look up to twice as large), so the
        // guard refuses before anything changes.
        let (mut group, _, members) = self
            .members_of(tally, remote_name, group, group_source)
            .await?;
        let to_remove: Vec<(ApiId, SubjectContext)> = members
            .iter()
            .filter(|m| {
                unmatched == 0
                    && !wanted_matches.contains(&m.match_value)
                    && !self.is_unmanaged(&m.match_value)
            })
            .map(|m| {
                let ctx = SubjectContext {
                    subject: m.match_value.clone(),
                    match_value: m.match_value.clone(),
                    attributes: Attributes::new(),
                    actor: event.actor.clone(),
                };
                (m.api_id.clone(), ctx)
            })
            .collect();
        let managed = members
            .iter()
            .filter(|m| !self.is_unmanaged(&m.match_value))
            .count();
        self.guard_removals(event, "members", to_remove.len(), managed)?;

        // add-member-first adds every listed subject, present or not.
        let present_matches: BTreeSet<String> = match self.group_sync_strategy {
            GroupSyncStrategy::QueryFirst => {
                members.iter().map(|m| m.match_value.clone()).collect()
            }
            GroupSyncStrategy::AddMemberFirst => BTreeSet::new(),
        };

        // Many unknown IDs: one account listing is cheaper than a look-up each
        // (1,000 members are ~10 pages, not 1,000 calls). Targets without a
        // listing fall back to look-ups.
        let unknown = wanted
            .iter()
            .filter(|c| !present_matches.contains(&c.match_value))
            .filter(|c| self.accounts.peek(&c.match_value).is_none())
            .count();
        let listing: Option<HashMap<String, ApiId>> = if unknown > BULK_RESOLVE_THRESHOLD {
            match self.list_accounts_in(tally, Phase::Member).await {
                Ok(all) => Some(all.into_iter().map(|a| (a.match_value, a.api_id)).collect()),
                Err(e) if e.class == FailureClass::Permanent => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };

        // Adds go out in batches of the target's size, each sent as soon as it
        // is full (so with no batching, each add follows its look-up).
        let batch = self.target.member_batch_size().max(1);
        let mut missing = Vec::new();
        let mut to_add: Vec<(ApiId, SubjectContext)> = Vec::new();
        let mut added = 0usize;
        for (i, ctx) in wanted.iter().enumerate() {
            if !present_matches.contains(&ctx.match_value) {
                let resolved = match (&listing, self.accounts.peek(&ctx.match_value)) {
                    (_, Some(id)) => Ok(Some(id)),
                    (Some(all), None) => Ok(all.get(&ctx.match_value).cloned()),
                    (None, None) => self.resolve_account(tally, Phase::Member, ctx, true).await,
                };
                match resolved {
                    Ok(Some(id)) => to_add.push((id, ctx.clone())),
                    Ok(None) => missing.push(ctx.match_value.clone()),
                    Err(e) => collect(Err::<(), _>(e), &ctx.subject, &mut failures)?,
                }
            }
            let last = i + 1 == wanted.len();
            if to_add.len() >= batch || (last && !to_add.is_empty()) {
                let chunk = std::mem::take(&mut to_add);
                let result = self
                    .call(
                        tally,
                        Phase::Member,
                        self.target.add_members(&group, &chunk),
                    )
                    .await
                    .map(|()| added += chunk.len());
                collect(result, &batch_label(&chunk), &mut failures)?;
            }
        }

        let (mut removed, mut gone) = (0usize, 0usize);
        let mut group_rechecked = false;
        for chunk in to_remove.chunks(batch) {
            let mut result = self
                .call(
                    tally,
                    Phase::Member,
                    self.target.remove_members(&group, chunk),
                )
                .await;
            // A batch absent as a whole may mean the group itself was deleted
            // and created again since it was read: look it up, once per sync.
            if matches!(result, Ok(Removal::Absent)) && !group_rechecked {
                group_rechecked = true;
                match self.refresh_group(tally, remote_name).await {
                    Ok(Some(fresh)) if fresh.api_id != group.api_id => {
                        group = fresh;
                        result = self
                            .call(
                                tally,
                                Phase::Member,
                                self.target.remove_members(&group, chunk),
                            )
                            .await;
                    }
                    Ok(_) => {}
                    Err(e) => result = Err(e),
                }
            }
            let result = result.map(|removal| match removal {
                Removal::Removed => removed += chunk.len(),
                Removal::Absent => gone += chunk.len(),
            });
            collect(result, &batch_label(chunk), &mut failures)?;
        }
        let mut detail = format!("group sync {remote_name}: {added} added, {removed} removed");
        if gone > 0 {
            detail.push_str(&format!(", {gone} already gone"));
        }
        if !missing.is_empty() {
            detail.push_str(&format!(
                ", {} without an account on the target: {}",
                missing.len(),
                abbreviate(&missing)
            ));
        }
        finish_sync(detail, failures)
    }

    async fn list_members(
        &self,
        tally: &mut Tally,
        group: &RemoteGroup,
    ) -> Step<Vec<RemoteAccount>> {
        let mut members = self
            .call(
                tally,
                Phase::Member,
                self.target.list_members(&group.api_id),
            )
            .await?;
        for m in &mut members {
            m.match_value = m.match_value.to_lowercase();
        }
        Ok(members)
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
                let ctx = self.context(subject, attributes, event.actor.as_deref())?;
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
                    (None, Action::Delete) => self.deprovision(tally, &ctx).await.map(applied),
                    (Some(g), Action::Add | Action::Update) => {
                        self.add_member(tally, g, &ctx).await.map(applied)
                    }
                    (Some(g), Action::Delete) => {
                        self.remove_member(tally, g, &ctx).await.map(applied)
                    }
                    (_, Action::MembershipSync) => {
                        Err(TargetError::permanent("membership_sync needs `subjects`"))
                    }
                }
            }
            Subjects::All {
                subjects,
                attributes,
            } => match remote_group {
                None => self
                    .sync_accounts(tally, event, subjects, attributes)
                    .await
                    .map(applied),
                Some(g) => self
                    .sync_group(tally, event, g, subjects, attributes)
                    .await
                    .map(applied),
            },
        }
    }
}

impl Engine {
    /// The mass-deprovision guard: refuses a sync that would remove more than
    /// the configured share of the managed remote entries (from
    /// `removal_guard_min` entries on), or more than `max_removals` of them
    /// however many there are. An operator who re-queued the event with
    /// `--allow-removals` has looked at the numbers: the sync proceeds, loudly.
    fn guard_removals(
        &self,
        event: &Event,
        what: &str,
        removing: usize,
        managed: usize,
    ) -> Step<()> {
        if removing == 0 {
            return Ok(());
        }
        let share = removing as f64 / managed.max(1) as f64;
        let mut exceeded = Vec::new();
        if managed >= self.removal_guard_min && share > self.max_removal_share {
            exceeded.push(("max_removal_share", self.max_removal_share.to_string()));
        }
        if self.max_removals > 0 && removing > self.max_removals {
            exceeded.push(("max_removals", self.max_removals.to_string()));
        }
        if exceeded.is_empty() {
            return Ok(());
        }
        if event.allow_removals {
            tracing::warn!(
                provisioner = %self.name,
                event_id = %event.id,
                entries = what,
                removing,
                managed,
                max_removal_share = self.max_removal_share,
                max_removals = self.max_removals,
                "mass-deprovision guard overridden by operator: removing {removing} of {managed} {what}"
            );
            return Ok(());
        }
        let limits: Vec<String> = exceeded
            .iter()
            .map(|(key, value)| format!("more than {key} = {value}"))
            .collect();
        let keys: Vec<&str> = exceeded.iter().map(|(key, _)| *key).collect();
        Err(TargetError::permanent(format!(
            "refused by the mass-deprovision guard: this sync would remove {removing} of {managed} {what} ({:.0}%, {}); nothing was removed. If the removal is intended, raise {} in the provisioner's configuration, or re-queue this event with `provisioner dead-letters requeue --provisioner {} --allow-removals`",
            share * 100.0,
            limits.join(" and "),
            keys.join(" and "),
            self.name
        )))
    }
}

/// Keeps going past a permanent failure of one subject in a sync (recording
/// it); stops the sync at a transient one, so the whole event is retried.
fn collect(result: Step<impl Sized>, who: &str, failures: &mut Vec<String>) -> Step<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.class == FailureClass::Permanent => {
            failures.push(format!("{who}: {e}"));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Names the subjects of a batch in failure reports.
fn batch_label(chunk: &[(ApiId, SubjectContext)]) -> String {
    match chunk {
        [(_, only)] => only.subject.clone(),
        _ => {
            let names: Vec<String> = chunk.iter().map(|(_, c)| c.subject.clone()).collect();
            format!("batch [{}]", abbreviate(&names))
        }
    }
}

fn finish_sync(detail: String, failures: Vec<String>) -> Step<String> {
    if failures.is_empty() {
        Ok(detail)
    } else {
        Err(TargetError::permanent(format!(
            "{detail}; {} failed: {}",
            failures.len(),
            abbreviate(&failures)
        )))
    }
}

fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > SHOWN {
        s.push_str(&format!("; and {} more", items.len() - SHOWN));
    }
    s
}

#[async_trait]
impl Provisioner for Engine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn probe(&self) -> Result<(), TargetError> {
        self.target.probe().await
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

#[cfg(test)]
mod tests;
