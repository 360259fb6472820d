//! One account: provisioning (per `provision_strategy`), updates and
//! deprovisioning, with a stale cached ID looked up again before a "not
//! found" is believed. A provisioned account is recorded as owned (created,
//! or adopted when it existed); a deprovisioned one is forgotten, and with
//! `remove_only_owned` one not owned is left alone.

use super::cache::CachedAccount;
use super::owned::LEFT_ALONE;
use super::ownership::Acquired;
use super::resolve::Resolved;
use super::{Engine, OutcomeStatus, Phase, Source, Step, Tally};
use crate::config::ProvisionStrategy;
use crate::target::{ApiId, Created, Removal, SubjectContext, TargetError};

impl Engine {
    pub(super) async fn provision(&self, tally: &mut Tally, ctx: &SubjectContext) -> Step<String> {
        if let ProvisionStrategy::QueryFirst = self.provision_strategy {
            if let Some(found) = self
                .resolve_account_from(tally, Phase::Account, ctx, true)
                .await?
            {
                if self.skips(found.in_step) {
                    self.own_account(&found.id, &ctx.match_value, Acquired::Adopted)
                        .await?;
                    return Ok(up_to_date(&found.id));
                }
                return self.update_known(tally, ctx, found.id).await;
            }
        } else if let CachedAccount::Known(id) = self.accounts.get(&ctx.match_value) {
            return self.update_known(tally, ctx, id).await;
        }
        self.create(tally, ctx).await
    }

    pub(super) async fn create(&self, tally: &mut Tally, ctx: &SubjectContext) -> Step<String> {
        match self
            .call(tally, Phase::Account, self.target.create_account(ctx))
            .await?
        {
            Created::New(id) => {
                match &id {
                    Some(id) => self.accounts.put(&ctx.match_value, id),
                    None => self.accounts.put_unnamed(&ctx.match_value),
                }
                let recorded = match &id {
                    Some(id) => Some(id.clone()),
                    // Ownership is recorded by API ID: a create whose answer
                    // names none is followed by a look-up when the record
                    // matters now; with the option off the account waits
                    // for a later event to adopt it rather than cost a call.
                    None if self.remove_only_owned && self.records() => Some(
                        self.refresh_account(tally, Phase::Account, ctx)
                            .await?
                            .ok_or_else(|| {
                                TargetError::transient(format!(
                                    "`{}` was created but the look-up finds nothing to record as owned",
                                    ctx.match_value
                                ))
                            })?,
                    ),
                    None => None,
                };
                if let Some(id) = &recorded {
                    self.own_account(id, &ctx.match_value, Acquired::Created)
                        .await?;
                }
                Ok(format!(
                    "created {}",
                    recorded.or(id).as_deref().unwrap_or("account")
                ))
            }
            Created::AlreadyExists => {
                let found = self
                    .resolve_account_from(tally, Phase::Account, ctx, false)
                    .await?
                    .ok_or_else(|| {
                        TargetError::transient(format!(
                            "create of `{}` says it exists but the look-up finds nothing",
                            ctx.match_value
                        ))
                    })?;
                if self.skips(found.in_step) {
                    self.own_account(&found.id, &ctx.match_value, Acquired::Adopted)
                        .await?;
                    return Ok(format!("existed; {}", up_to_date(&found.id)));
                }
                self.update(tally, ctx, &found.id).await?;
                self.own_account(&found.id, &ctx.match_value, Acquired::Adopted)
                    .await?;
                Ok(format!("existed; updated {}", found.id))
            }
        }
    }

    /// Updates an account whose ID came from the cache; a stale ID (one the
    /// target does not know) is dropped and the account looked up afresh.
    /// The account, matched to the subject, is adopted.
    pub(super) async fn update_known(
        &self,
        tally: &mut Tally,
        ctx: &SubjectContext,
        id: ApiId,
    ) -> Step<String> {
        match self.update(tally, ctx, &id).await {
            Ok(()) => {
                self.own_account(&id, &ctx.match_value, Acquired::Adopted)
                    .await?;
                Ok(format!("updated {id}"))
            }
            Err(e) if e.is_not_found() => {
                match self.refresh_account(tally, Phase::Account, ctx).await? {
                    Some(fresh) => {
                        self.update(tally, ctx, &fresh).await?;
                        self.own_account(&fresh, &ctx.match_value, Acquired::Adopted)
                            .await?;
                        Ok(format!("updated {fresh}"))
                    }
                    None => self.create(tally, ctx).await,
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn update(
        &self,
        tally: &mut Tally,
        ctx: &SubjectContext,
        id: &str,
    ) -> Step<()> {
        self.call(tally, Phase::Account, self.target.update_account(id, ctx))
            .await
    }

    pub(super) async fn deprovision(
        &self,
        tally: &mut Tally,
        ctx: &SubjectContext,
    ) -> Step<(OutcomeStatus, String)> {
        let applied = |d: String| Ok((OutcomeStatus::Applied, d));
        let Some(Resolved { id, source, .. }) = self
            .resolve_account_from(tally, Phase::Account, ctx, true)
            .await?
        else {
            return applied("no such account; nothing to deprovision".into());
        };
        if let Some(left) = self.leave_account(ctx, &id).await? {
            return Ok(left);
        }
        if self.deprovision_id(tally, ctx, &id).await? == Removal::Removed {
            return applied(format!("deprovisioned {id}"));
        }
        if source == Source::Cache {
            // Absent under a cached ID: the account may have been deleted and
            // created again since, under another ID that must go too.
            if let Some(fresh) = self.refresh_account(tally, Phase::Account, ctx).await? {
                self.accounts.remove(&ctx.match_value);
                if fresh != id {
                    if let Some(left) = self.leave_account(ctx, &fresh).await? {
                        return Ok(left);
                    }
                    self.deprovision_id(tally, ctx, &fresh).await?;
                    return applied(format!(
                        "deprovisioned {fresh} (the cached ID {id} was stale)"
                    ));
                }
            }
        }
        applied(format!("{id} was already gone; nothing to deprovision"))
    }

    /// With `remove_only_owned`, the outcome of a deprovision of an account
    /// the worker does not own: nothing is sent.
    async fn leave_account(
        &self,
        ctx: &SubjectContext,
        id: &str,
    ) -> Step<Option<(OutcomeStatus, String)>> {
        if self.may_remove_account(id).await? {
            return Ok(None);
        }
        let what = format!("account {id} (`{}`)", ctx.match_value);
        self.report_left_alone(&what);
        Ok(Some((
            OutcomeStatus::Ignored,
            format!("{what} {LEFT_ALONE}"),
        )))
    }

    pub(super) async fn deprovision_id(
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
        // Gone either way: it is no longer the worker's.
        self.disown_account(id).await?;
        Ok(removal)
    }
}

/// The outcome of an update left out because the look-up showed the account
/// as the event would have it.
fn up_to_date(id: &str) -> String {
    format!("{id} already up to date; not updated")
}
