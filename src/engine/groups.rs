//! One membership: adding an account to a mapped target group (waiting
//! `target_group_retry_delay` for an account not there yet) and removing it.

use super::resolve::Resolved;
use super::{Engine, Phase, Source, Step, Tally};
use crate::config::GroupSyncStrategy;
use crate::target::{RemoteGroup, Removal, SubjectContext, TargetError};

impl Engine {
    /// Adds a member; an account not there yet is looked for once more after
    /// `target_group_retry_delay`, as the original did.
    pub(super) async fn add_member(
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
            Some(found) => (found.id, found.source),
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

    pub(super) async fn remove_member(
        &self,
        tally: &mut Tally,
        remote_name: &str,
        ctx: &SubjectContext,
    ) -> Step<String> {
        let (group, group_source) = self.resolve_group(tally, remote_name).await?;
        let Some(Resolved {
            id,
            source: id_source,
            ..
        }) = self
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

    pub(super) async fn remove_one(
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
}
