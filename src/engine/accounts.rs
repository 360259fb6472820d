//! One account: provisioning (per `provision_strategy`), updates and
//! deprovisioning, with a stale cached ID looked up again before a "not
//! found" is believed.

use super::cache::CachedAccount;
use super::resolve::Resolved;
use super::{Engine, Phase, Source, Step, Tally};
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
                Ok(format!("created {}", id.as_deref().unwrap_or("account")))
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
                    return Ok(format!("existed; {}", up_to_date(&found.id)));
                }
                self.update(tally, ctx, &found.id).await?;
                Ok(format!("existed; updated {}", found.id))
            }
        }
    }

    /// Updates an account whose ID came from the cache; a stale ID (one the
    /// target does not know) is dropped and the account looked up afresh.
    pub(super) async fn update_known(
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
    ) -> Step<String> {
        let Some(Resolved { id, source, .. }) = self
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
        Ok(removal)
    }
}

/// The outcome of an update left out because the look-up showed the account
/// as the event would have it.
fn up_to_date(id: &str) -> String {
    format!("{id} already up to date; not updated")
}
