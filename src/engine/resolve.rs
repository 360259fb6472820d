//! Finding API IDs: the account and group caches first, the target when
//! they have nothing (or when an ID they held turned out stale), and the
//! listings that prefill them.

use std::collections::BTreeSet;

use super::cache::CachedAccount;
use super::{Engine, Phase, Source, Step, Tally};
use crate::target::{ApiId, Desired, RemoteAccount, RemoteGroup, SubjectContext, TargetError};

/// An account's API ID as resolved.
pub(super) struct Resolved {
    pub id: ApiId,
    pub source: Source,
    /// The look-up that found it showed it as the context would have it.
    pub in_step: bool,
}

impl Engine {
    /// The account's API ID: from the cache, from the trusted-absent window, or
    /// by asking the target. `trust_absent = false` always asks on a miss.
    pub(super) async fn resolve_account(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
        trust_absent: bool,
    ) -> Step<Option<ApiId>> {
        Ok(self
            .resolve_account_from(tally, phase, ctx, trust_absent)
            .await?
            .map(|r| r.id))
    }

    /// [`resolve_account`](Self::resolve_account), saying where the ID came
    /// from and what the look-up showed.
    pub(super) async fn resolve_account_from(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
        trust_absent: bool,
    ) -> Step<Option<Resolved>> {
        let mut source = Source::Cache;
        if trust_absent && self.accounts.wants_prefill() {
            // The validity period needs a complete listing before misses can be trusted.
            self.list_accounts(tally).await?;
            source = Source::Target;
        }
        match self.accounts.get(&ctx.match_value) {
            CachedAccount::Known(id) => {
                return Ok(Some(Resolved {
                    id,
                    source,
                    in_step: false,
                }))
            }
            CachedAccount::TrustedAbsent if trust_absent => return Ok(None),
            _ => {}
        }
        let found = self
            .call(tally, phase, self.target.lookup_account(ctx))
            .await?;
        if let Some(f) = &found {
            self.accounts.put(&ctx.match_value, &f.api_id);
        }
        Ok(found.map(|f| Resolved {
            id: f.api_id,
            source: Source::Target,
            in_step: f.in_step,
        }))
    }

    /// Forgets the cached ID and asks the target.
    pub(super) async fn refresh_account(
        &self,
        tally: &mut Tally,
        phase: Phase,
        ctx: &SubjectContext,
    ) -> Step<Option<ApiId>> {
        self.accounts.remove(&ctx.match_value);
        self.resolve_account(tally, phase, ctx, false).await
    }

    /// Lists every remote account and prefills the cache with it.
    pub(super) async fn list_accounts(&self, tally: &mut Tally) -> Step<Vec<RemoteAccount>> {
        self.list_accounts_in(tally, Phase::Account, None).await
    }

    /// Lists every remote account, each compared with `desired` when given,
    /// and prefills the cache with them.
    pub(super) async fn list_accounts_in(
        &self,
        tally: &mut Tally,
        phase: Phase,
        desired: Option<Desired<'_>>,
    ) -> Step<Vec<RemoteAccount>> {
        // Before the call: what other events cache while it runs is newer than it.
        let listing = self.accounts.begin_listing();
        let mut accounts = self
            .call(tally, phase, self.target.list_accounts(desired))
            .await?;
        for a in &mut accounts {
            a.match_value = a.match_value.to_lowercase();
        }
        self.accounts.prefill(listing, &accounts);
        Ok(accounts)
    }

    /// The remote group's API ID: from the cache, from a listing, or from
    /// creating the group (when the kind may).
    pub(super) async fn resolve_group(
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
    pub(super) async fn find_group(
        &self,
        tally: &mut Tally,
        remote_name: &str,
    ) -> Step<Option<RemoteGroup>> {
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
    pub(super) async fn refresh_group(
        &self,
        tally: &mut Tally,
        remote_name: &str,
    ) -> Step<Option<RemoteGroup>> {
        self.groups.remove(remote_name);
        self.find_group(tally, remote_name).await
    }

    /// The group's members. A cached group ID the target does not know is
    /// resolved once more (the group may have been re-created under a new
    /// ID); the group actually read is returned with them.
    pub(super) async fn members_of(
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

    pub(super) async fn list_members(
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
}
