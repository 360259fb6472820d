//! A target decorator for `provisioner replay --dry-run`: reads go to the
//! real target (so every decision is the real one), writes are only recorded
//! and answered as if they had succeeded.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    ApiId, Created, Desired, Found, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
    TargetResult,
};
use crate::event::Attributes;

/// The plan of a dry run, in order: the writes it would have made
/// (`would ...`), and what the engine would leave alone (noted by it).
#[derive(Clone, Default)]
pub struct WriteLog(Arc<Mutex<Vec<String>>>);

impl WriteLog {
    fn push(&self, write: String) {
        self.note(format!("would {write}"));
    }

    /// Adds a line to the plan as it is.
    pub fn note(&self, line: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }

    /// Takes the plan's lines recorded so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub struct DryRunTarget {
    inner: Arc<dyn TargetApi>,
    log: WriteLog,
}

impl DryRunTarget {
    pub fn new(inner: Arc<dyn TargetApi>, log: WriteLog) -> Self {
        DryRunTarget { inner, log }
    }
}

/// The ID a dry-run create hands out, so later steps can name the account.
fn planned_id(ctx: &SubjectContext) -> ApiId {
    format!("(new:{})", ctx.match_value)
}

#[async_trait]
impl TargetApi for DryRunTarget {
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String> {
        self.inner.match_value(subject, attributes)
    }

    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>> {
        self.inner.lookup_account(ctx).await
    }

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created> {
        self.log
            .push(format!("create account `{}`", ctx.match_value));
        Ok(Created::New(Some(planned_id(ctx))))
    }

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()> {
        self.log
            .push(format!("update account {api_id} (`{}`)", ctx.match_value));
        Ok(())
    }

    async fn deprovision_account(
        &self,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        self.log.push(format!(
            "deprovision account {api_id} (`{}`)",
            ctx.match_value
        ));
        Ok(Removal::Removed)
    }

    async fn list_accounts(
        &self,
        desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        self.inner.list_accounts(desired).await
    }

    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        self.inner.list_groups().await
    }

    async fn create_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        self.log.push(format!(
            "create group `{name}` (if the kind may create groups)"
        ));
        Ok(None)
    }

    async fn list_members(&self, group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        self.inner.list_members(group_id).await
    }

    async fn add_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<()> {
        self.log.push(format!(
            "add {api_id} (`{}`) to group `{}`",
            ctx.match_value, group.name
        ));
        Ok(())
    }

    async fn remove_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        self.log.push(format!(
            "remove {api_id} (`{}`) from group `{}`",
            ctx.match_value, group.name
        ));
        Ok(Removal::Removed)
    }

    fn member_batch_size(&self) -> usize {
        self.inner.member_batch_size()
    }
}
