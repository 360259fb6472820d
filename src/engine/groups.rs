//! One membership: adding an account to a mapped target group (waiting
//! `target_group_retry_delay` for an account not there yet) and removing it.
//! An added membership is recorded as owned (adopted when it was there
//! already); a removed one is forgotten, and with `remove_only_owned` one
//! not owned is left alone.

use super::owned::{owned, LEFT_ALONE};
use super::ownership::Acquired;
use super::resolve::Resolved;
use super::{Engine, OutcomeStatus, Phase, Source, Step, Tally};
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
                self.own_members(
                    remote_name,
                    vec![owned(&id, &ctx.match_value, Acquired::Adopted)],
                )
                .await?;
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
            Ok(()) => {
                self.own_members(
                    remote_name,
                    vec![owned(&id, &ctx.match_value, Acquired::Created)],
                )
                .await?;
                Ok(format!("added {id} to {remote_name}"))
            }
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
                self.own_members(
                    remote_name,
                    vec![owned(&fresh, &ctx.match_value, Acquired::Created)],
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
    ) -> Step<(OutcomeStatus, String)> {
        let done = self.remove_member_of(tally, remote_name, ctx).await?;
        Ok(match done {
            Removed::Done(detail) => (OutcomeStatus::Applied, detail),
            Removed::LeftAlone(detail) => (OutcomeStatus::Ignored, detail),
        })
    }

    async fn remove_member_of(
        &self,
        tally: &mut Tally,
        remote_name: &str,
        ctx: &SubjectContext,
    ) -> Step<Removed> {
        let (group, group_source) = self.resolve_group(tally, remote_name).await?;
        let Some(Resolved {
            id,
            source: id_source,
            ..
        }) = self
            .resolve_account_from(tally, Phase::Member, ctx, true)
            .await?
        else {
            return Ok(Removed::Done("no such account; nothing to remove".into()));
        };
        if let Some(left) = self.leave_member(remote_name, ctx, &id).await? {
            return Ok(left);
        }
        if self.remove_one(tally, &group, &id, ctx).await? == Removal::Removed {
            return Ok(Removed::Done(format!("removed {id} from {remote_name}")));
        }
        // Absent under a cached ID proves nothing: the group or the account
        // may have been deleted and created again, membership included, under
        // a new ID. Look the cached ones up once more.
        let fresh_group = match group_source {
            Source::Cache => match self.refresh_group(tally, remote_name).await? {
                Some(g) => g,
                None => {
                    return Ok(Removed::Done(format!(
                        "`{remote_name}` is gone from the target; nothing to remove"
                    )))
                }
            },
            Source::Target => group.clone(),
        };
        let fresh = match id_source {
            Source::Cache => match self.refresh_account(tally, Phase::Member, ctx).await? {
                Some(fresh) => fresh,
                None => {
                    return Ok(Removed::Done(
                        "no such account any more; nothing to remove".into(),
                    ))
                }
            },
            Source::Target => id.clone(),
        };
        if fresh == id && fresh_group.api_id == group.api_id {
            return Ok(Removed::Done(format!(
                "{id} was not a member of {remote_name}"
            )));
        }
        if fresh != id {
            if let Some(left) = self.leave_member(remote_name, ctx, &fresh).await? {
                return Ok(left);
            }
        }
        self.remove_one(tally, &fresh_group, &fresh, ctx).await?;
        Ok(Removed::Done(format!("removed {fresh} from {remote_name}")))
    }

    /// With `remove_only_owned`, what a removal of a membership the worker
    /// does not own reports: nothing is sent.
    async fn leave_member(
        &self,
        remote_name: &str,
        ctx: &SubjectContext,
        id: &str,
    ) -> Step<Option<Removed>> {
        if self.may_remove_member(remote_name, id).await? {
            return Ok(None);
        }
        let what = format!(
            "membership of {id} (`{}`) in {remote_name}",
            ctx.match_value
        );
        self.report_left_alone(&what);
        Ok(Some(Removed::LeftAlone(format!("{what} {LEFT_ALONE}"))))
    }

    pub(super) async fn remove_one(
        &self,
        tally: &mut Tally,
        group: &RemoteGroup,
        id: &str,
        ctx: &SubjectContext,
    ) -> Step<Removal> {
        let removal = self
            .call(
                tally,
                Phase::Member,
                self.target.remove_member(group, id, ctx),
            )
            .await?;
        // Not a member any more either way.
        self.disown_members(&group.name, vec![id.to_string()])
            .await?;
        Ok(removal)
    }
}

/// What a single membership removal came to.
enum Removed {
    Done(String),
    LeftAlone(String),
}
