//! The engine's side of ownership: recording what it creates and adopts,
//! forgetting what it removes, and, with `remove_only_owned`, deciding what
//! to leave alone. A store that fails makes the event fail transiently (it
//! is retried): acknowledging an effect whose ownership was not recorded
//! would later have the worker leave its own account behind.

use std::collections::HashSet;

use super::ownership::{Acquired, Owned, Ownership, OwnershipError};
use super::{Engine, Step};
use crate::target::{ApiId, TargetError};

/// The words every report of a removal left out uses.
pub(super) const LEFT_ALONE: &str = "left alone: not owned";

fn store_failed(e: OwnershipError) -> TargetError {
    TargetError::transient(format!(
        "{e}; the change is retried so that what the worker owns stays recorded"
    ))
}

/// The key of a remote group in the ownership records.
pub(super) fn group_key(remote_name: &str) -> String {
    remote_name.to_lowercase()
}

/// An account or a member to record, for a match value.
pub(super) fn owned(api_id: &str, match_value: &str, how: Acquired) -> Owned {
    Owned {
        api_id: api_id.to_string(),
        subject: match_value.to_string(),
        how,
    }
}

impl Engine {
    fn store(&self) -> Option<&dyn Ownership> {
        self.ownership.as_deref()
    }

    /// Records one account as owned (nothing without a store).
    pub(super) async fn own_account(
        &self,
        api_id: &str,
        match_value: &str,
        how: Acquired,
    ) -> Step<()> {
        self.own_accounts(&[owned(api_id, match_value, how)]).await
    }

    /// Records accounts as owned, in one write.
    pub(super) async fn own_accounts(&self, accounts: &[Owned]) -> Step<()> {
        match self.store() {
            Some(s) if !accounts.is_empty() => s
                .record_accounts(&self.name, accounts)
                .await
                .map_err(store_failed),
            _ => Ok(()),
        }
    }

    /// Forgets an account removed from the target, with its memberships.
    pub(super) async fn disown_account(&self, api_id: &str) -> Step<()> {
        match self.store() {
            Some(s) => s
                .forget_accounts(&self.name, &[api_id.to_string()])
                .await
                .map_err(store_failed),
            None => Ok(()),
        }
    }

    /// Whether the account may be removed: always, unless
    /// `remove_only_owned` and the worker does not own it.
    pub(super) async fn may_remove_account(&self, api_id: &str) -> Step<bool> {
        match self.store() {
            Some(s) if self.remove_only_owned => s
                .owns_account(&self.name, api_id)
                .await
                .map_err(store_failed),
            _ => Ok(true),
        }
    }

    /// The accounts the worker owns, read once for a sync; `None` when
    /// nothing is recorded.
    pub(super) async fn owned_accounts(&self) -> Step<Option<HashSet<ApiId>>> {
        match self.store() {
            Some(s) => s
                .owned_accounts(&self.name)
                .await
                .map(Some)
                .map_err(store_failed),
            None => Ok(None),
        }
    }

    /// Records members of a remote group as owned, in one write.
    pub(super) async fn own_members(&self, remote_name: &str, members: &[Owned]) -> Step<()> {
        match self.store() {
            Some(s) if !members.is_empty() => s
                .record_memberships(&self.name, &group_key(remote_name), members)
                .await
                .map_err(store_failed),
            _ => Ok(()),
        }
    }

    /// Forgets members taken out of a remote group.
    pub(super) async fn disown_members(&self, remote_name: &str, ids: &[ApiId]) -> Step<()> {
        match self.store() {
            Some(s) if !ids.is_empty() => s
                .forget_memberships(&self.name, &group_key(remote_name), ids)
                .await
                .map_err(store_failed),
            _ => Ok(()),
        }
    }

    /// Whether the member may be taken out of the group: always, unless
    /// `remove_only_owned` and the worker does not own the membership.
    pub(super) async fn may_remove_member(&self, remote_name: &str, api_id: &str) -> Step<bool> {
        match self.store() {
            Some(s) if self.remove_only_owned => s
                .owns_membership(&self.name, &group_key(remote_name), api_id)
                .await
                .map_err(store_failed),
            _ => Ok(true),
        }
    }

    /// The members of a remote group whose membership the worker owns, read
    /// once for a sync; `None` when nothing is recorded.
    pub(super) async fn owned_members(&self, remote_name: &str) -> Step<Option<HashSet<ApiId>>> {
        match self.store() {
            Some(s) => s
                .owned_members(&self.name, &group_key(remote_name))
                .await
                .map(Some)
                .map_err(store_failed),
            None => Ok(None),
        }
    }

    /// Whether a removal of something not in `owned` is left out.
    pub(super) fn leaves_alone(&self, owned: Option<&HashSet<ApiId>>, api_id: &str) -> bool {
        self.remove_only_owned && !owned.is_some_and(|o| o.contains(api_id))
    }

    /// Reports one removal left out: in the log (at debug: a sync may
    /// leave thousands; its outcome counts and names them), and in a dry
    /// run's plan. `what` names it, e.g. ``account 42 (`jdoe`)``.
    pub(super) fn report_left_alone(&self, what: &str) {
        tracing::debug!(provisioner = %self.name, "{what} {LEFT_ALONE}");
        if let Some(plan) = &self.plan {
            plan.note(format!("{what} {LEFT_ALONE}"));
        }
    }
}
