//! The engine's side of ownership: recording what it creates and adopts,
//! forgetting what it removes, and, with `remove_only_owned`, deciding what
//! to leave alone.
//!
//! With `remove_only_owned` the records are part of the effect: each write
//! is awaited, and a store that fails makes the event fail transiently (it
//! is retried). Acknowledging an effect whose ownership was not recorded
//! would later have the worker leave its own account behind. With the option
//! off they are observation, kept so that the option can be switched on
//! later: written in the background, a bounded number at a time, and
//! dropped (logged, counted) when the store cannot keep up, so that, like
//! the journal, they never slow or stop an event. A record dropped then
//! only makes the worker leave that account alone once the option is on.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ownership::{Acquired, Owned, Ownership, OwnershipError};
use super::{Engine, Step};
use crate::target::{ApiId, TargetError};

/// The words every report of a removal left out uses.
pub(super) const LEFT_ALONE: &str = "left alone: not owned";

/// Background writes in flight at most, per provisioner, with
/// `remove_only_owned` off; beyond, records are dropped.
pub(super) const BACKGROUND_WRITES: usize = 64;

fn store_failed(e: OwnershipError) -> TargetError {
    TargetError::transient(format!(
        "{e}; the change is retried so that what the worker owns stays recorded"
    ))
}

pub(super) use super::ownership::group_key;

/// An account or a member to record, for a match value.
pub(super) fn owned(api_id: &str, match_value: &str, how: Acquired) -> Owned {
    Owned {
        api_id: api_id.to_string(),
        subject: match_value.to_string(),
        how,
    }
}

/// One write to the ownership records.
enum Write {
    Accounts(Vec<Owned>),
    ForgetAccounts(Vec<ApiId>),
    /// Group key, members.
    Members(String, Vec<Owned>),
    ForgetMembers(String, Vec<ApiId>),
}

impl Write {
    fn is_empty(&self) -> bool {
        match self {
            Write::Accounts(v) | Write::Members(_, v) => v.is_empty(),
            Write::ForgetAccounts(v) | Write::ForgetMembers(_, v) => v.is_empty(),
        }
    }

    async fn apply(&self, store: &dyn Ownership, provisioner: &str) -> Result<(), OwnershipError> {
        match self {
            Write::Accounts(v) => store.record_accounts(provisioner, v).await,
            Write::ForgetAccounts(v) => store.forget_accounts(provisioner, v).await,
            Write::Members(g, v) => store.record_memberships(provisioner, g, v).await,
            Write::ForgetMembers(g, v) => store.forget_memberships(provisioner, g, v).await,
        }
    }
}

impl Engine {
    fn store(&self) -> Option<&dyn Ownership> {
        self.ownership.as_deref()
    }

    /// Whether anything is recorded (a store is configured).
    pub(super) fn records(&self) -> bool {
        self.ownership.is_some()
    }

    /// Makes one write: awaited with `remove_only_owned`, in the background
    /// without it (see the module's documentation).
    async fn write(&self, write: Write) -> Step<()> {
        let Some(store) = self.ownership.clone() else {
            return Ok(());
        };
        if write.is_empty() {
            return Ok(());
        }
        if self.remove_only_owned {
            return write
                .apply(store.as_ref(), &self.name)
                .await
                .map_err(store_failed);
        }
        match Arc::clone(&self.background).try_acquire_owned() {
            Ok(permit) => {
                let name = self.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = write.apply(store.as_ref(), &name).await {
                        tracing::warn!(provisioner = %name, error = %e, "ownership not recorded");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                let dropped = self.records_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per thousand: a store that is down drops many.
                if dropped % 1000 == 1 {
                    tracing::warn!(
                        provisioner = %self.name,
                        dropped_total = dropped,
                        "ownership records dropped: the store does not keep up"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records one account as owned (nothing without a store).
    pub(super) async fn own_account(
        &self,
        api_id: &str,
        match_value: &str,
        how: Acquired,
    ) -> Step<()> {
        self.own_accounts(vec![owned(api_id, match_value, how)])
            .await
    }

    /// Records accounts as owned, in one write.
    pub(super) async fn own_accounts(&self, accounts: Vec<Owned>) -> Step<()> {
        self.write(Write::Accounts(accounts)).await
    }

    /// Forgets an account removed from the target, with its memberships.
    pub(super) async fn disown_account(&self, api_id: &str) -> Step<()> {
        self.write(Write::ForgetAccounts(vec![api_id.to_string()]))
            .await
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

    /// The accounts the worker owns, read once for a sync; `None` without
    /// `remove_only_owned` (nothing is then read, so a store that is down
    /// never holds a sync up).
    pub(super) async fn owned_accounts(&self) -> Step<Option<HashSet<ApiId>>> {
        match self.store() {
            Some(s) if self.remove_only_owned => s
                .owned_accounts(&self.name)
                .await
                .map(Some)
                .map_err(store_failed),
            _ => Ok(None),
        }
    }

    /// Records members of a remote group as owned, in one write.
    pub(super) async fn own_members(&self, remote_name: &str, members: Vec<Owned>) -> Step<()> {
        self.write(Write::Members(group_key(remote_name), members))
            .await
    }

    /// Forgets members taken out of a remote group.
    pub(super) async fn disown_members(&self, remote_name: &str, ids: Vec<ApiId>) -> Step<()> {
        self.write(Write::ForgetMembers(group_key(remote_name), ids))
            .await
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
    /// once for a sync; `None` without `remove_only_owned`.
    pub(super) async fn owned_members(&self, remote_name: &str) -> Step<Option<HashSet<ApiId>>> {
        match self.store() {
            Some(s) if self.remove_only_owned => s
                .owned_members(&self.name, &group_key(remote_name))
                .await
                .map(Some)
                .map_err(store_failed),
            _ => Ok(None),
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
