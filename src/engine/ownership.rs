//! Ownership: which remote accounts and memberships this worker created or
//! adopted, so that `remove_only_owned` can leave everything else alone.
//!
//! The engine records through [`Ownership`] and never knows where the
//! records live: the journal's store (`journal::OwnershipStore`, SQLite or
//! PostgreSQL) in a service, [`MemoryOwnership`] in tests and where no
//! journal is configured, [`Rehearsal`] in a dry run (reads the real
//! records, keeps its own writes). With `remove_only_owned` these writes are
//! part of the effect: a failed write fails the event (transiently), so it
//! is retried rather than acknowledged with its ownership forgotten; without
//! it they are observation (see `engine::owned`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::target::ApiId;

/// How the worker came to own an account or a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acquired {
    /// The worker created it.
    Created,
    /// It existed and a provision or add event (or a sync listing its
    /// subject) matched it to a subject.
    Adopted,
}

impl Acquired {
    /// The stored spelling: `created` or `adopted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Acquired::Created => "created",
            Acquired::Adopted => "adopted",
        }
    }
}

/// A remote account or a group member the worker owns: its API ID, the
/// match value of the subject it belongs to, and how it was acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub api_id: ApiId,
    /// The subject's match value (lowercase), for people reading the store.
    pub subject: String,
    pub how: Acquired,
}

/// Why the ownership records could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ownership records: {0}")]
pub struct OwnershipError(pub String);

/// The records of what each provisioner owns on its target. Groups are
/// named by their remote name, lowercased by the engine. Recording what is
/// already recorded keeps the first record (and how it was acquired).
/// The key of a remote group in the ownership records: its name, compared
/// case-insensitively as remote group names are everywhere.
pub fn group_key(remote_name: &str) -> String {
    remote_name.to_lowercase()
}

#[async_trait]
pub trait Ownership: Send + Sync {
    /// Records accounts as owned by `provisioner`.
    async fn record_accounts(
        &self,
        provisioner: &str,
        accounts: &[Owned],
    ) -> Result<(), OwnershipError>;

    /// Forgets accounts (removed from the target), and their memberships.
    async fn forget_accounts(
        &self,
        provisioner: &str,
        api_ids: &[ApiId],
    ) -> Result<(), OwnershipError>;

    /// Whether `provisioner` owns the account.
    async fn owns_account(&self, provisioner: &str, api_id: &str) -> Result<bool, OwnershipError>;

    /// Every account `provisioner` owns: one read for a whole sync.
    async fn owned_accounts(&self, provisioner: &str) -> Result<HashSet<ApiId>, OwnershipError>;

    /// Records members of `group` as owned by `provisioner`.
    async fn record_memberships(
        &self,
        provisioner: &str,
        group: &str,
        members: &[Owned],
    ) -> Result<(), OwnershipError>;

    /// Forgets memberships of `group` (taken out of it).
    async fn forget_memberships(
        &self,
        provisioner: &str,
        group: &str,
        member_ids: &[ApiId],
    ) -> Result<(), OwnershipError>;

    /// Whether `provisioner` owns the membership of `member_id` in `group`.
    async fn owns_membership(
        &self,
        provisioner: &str,
        group: &str,
        member_id: &str,
    ) -> Result<bool, OwnershipError>;

    /// Every member of `group` whose membership `provisioner` owns.
    async fn owned_members(
        &self,
        provisioner: &str,
        group: &str,
    ) -> Result<HashSet<ApiId>, OwnershipError>;
}

/// What one provisioner owns, in memory.
#[derive(Debug, Default, Clone)]
struct Holdings {
    /// API ID -> the record.
    accounts: HashMap<ApiId, Owned>,
    /// Group -> member ID -> the record.
    memberships: HashMap<String, HashMap<ApiId, Owned>>,
}

/// Ownership records in memory, kept for the life of the process: for
/// tests, and for a provisioner with `remove_only_owned` run without a
/// journal store (`replay` and `demo` without `[journal]`).
#[derive(Debug, Default, Clone)]
pub struct MemoryOwnership {
    held: Arc<Mutex<HashMap<String, Holdings>>>,
}

impl MemoryOwnership {
    fn with<T>(&self, provisioner: &str, f: impl FnOnce(&mut Holdings) -> T) -> T {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        f(held.entry(provisioner.to_string()).or_default())
    }

    /// The account record, if any (for tests and the dry run).
    pub fn account(&self, provisioner: &str, api_id: &str) -> Option<Owned> {
        self.with(provisioner, |h| h.accounts.get(api_id).cloned())
    }

    /// The membership record, if any.
    pub fn membership(&self, provisioner: &str, group: &str, member_id: &str) -> Option<Owned> {
        self.with(provisioner, |h| {
            h.memberships.get(group)?.get(member_id).cloned()
        })
    }
}

#[async_trait]
impl Ownership for MemoryOwnership {
    async fn record_accounts(
        &self,
        provisioner: &str,
        accounts: &[Owned],
    ) -> Result<(), OwnershipError> {
        self.with(provisioner, |h| {
            for a in accounts {
                h.accounts
                    .entry(a.api_id.clone())
                    .or_insert_with(|| a.clone());
            }
        });
        Ok(())
    }

    async fn forget_accounts(
        &self,
        provisioner: &str,
        api_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        self.with(provisioner, |h| {
            for id in api_ids {
                h.accounts.remove(id);
                for members in h.memberships.values_mut() {
                    members.remove(id);
                }
            }
        });
        Ok(())
    }

    async fn owns_account(&self, provisioner: &str, api_id: &str) -> Result<bool, OwnershipError> {
        Ok(self.with(provisioner, |h| h.accounts.contains_key(api_id)))
    }

    async fn owned_accounts(&self, provisioner: &str) -> Result<HashSet<ApiId>, OwnershipError> {
        Ok(self.with(provisioner, |h| h.accounts.keys().cloned().collect()))
    }

    async fn record_memberships(
        &self,
        provisioner: &str,
        group: &str,
        members: &[Owned],
    ) -> Result<(), OwnershipError> {
        self.with(provisioner, |h| {
            let held = h.memberships.entry(group.to_string()).or_default();
            for m in members {
                held.entry(m.api_id.clone()).or_insert_with(|| m.clone());
            }
        });
        Ok(())
    }

    async fn forget_memberships(
        &self,
        provisioner: &str,
        group: &str,
        member_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        self.with(provisioner, |h| {
            if let Some(held) = h.memberships.get_mut(group) {
                for id in member_ids {
                    held.remove(id);
                }
            }
        });
        Ok(())
    }

    async fn owns_membership(
        &self,
        provisioner: &str,
        group: &str,
        member_id: &str,
    ) -> Result<bool, OwnershipError> {
        Ok(self.with(provisioner, |h| {
            h.memberships
                .get(group)
                .is_some_and(|m| m.contains_key(member_id))
        }))
    }

    async fn owned_members(
        &self,
        provisioner: &str,
        group: &str,
    ) -> Result<HashSet<ApiId>, OwnershipError> {
        Ok(self.with(provisioner, |h| {
            h.memberships
                .get(group)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        }))
    }
}

/// What a dry run forgot: it must not show as owned again within the run.
#[derive(Debug, Default)]
struct Forgotten {
    accounts: HashSet<(String, ApiId)>,
    memberships: HashSet<(String, String, ApiId)>,
}

/// The ownership of a dry run (`replay --dry-run`): reads the real records,
/// and keeps what the run would record or forget to itself, so that later
/// events of the same run decide as the real run would, and the real
/// records never change.
pub struct Rehearsal {
    real: Arc<dyn Ownership>,
    recorded: MemoryOwnership,
    forgotten: Mutex<Forgotten>,
}

impl Rehearsal {
    pub fn new(real: Arc<dyn Ownership>) -> Self {
        Rehearsal {
            real,
            recorded: MemoryOwnership::default(),
            forgotten: Mutex::new(Forgotten::default()),
        }
    }

    fn forgotten<T>(&self, f: impl FnOnce(&mut Forgotten) -> T) -> T {
        f(&mut self.forgotten.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Ownership for Rehearsal {
    async fn record_accounts(
        &self,
        provisioner: &str,
        accounts: &[Owned],
    ) -> Result<(), OwnershipError> {
        self.forgotten(|f| {
            for a in accounts {
                f.accounts
                    .remove(&(provisioner.to_string(), a.api_id.clone()));
            }
        });
        self.recorded.record_accounts(provisioner, accounts).await
    }

    async fn forget_accounts(
        &self,
        provisioner: &str,
        api_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        self.forgotten(|f| {
            for id in api_ids {
                f.accounts.insert((provisioner.to_string(), id.clone()));
            }
        });
        self.recorded.forget_accounts(provisioner, api_ids).await
    }

    async fn owns_account(&self, provisioner: &str, api_id: &str) -> Result<bool, OwnershipError> {
        if self.forgotten(|f| {
            f.accounts
                .contains(&(provisioner.to_string(), api_id.to_string()))
        }) {
            return Ok(false);
        }
        Ok(self.recorded.owns_account(provisioner, api_id).await?
            || self.real.owns_account(provisioner, api_id).await?)
    }

    async fn owned_accounts(&self, provisioner: &str) -> Result<HashSet<ApiId>, OwnershipError> {
        let mut owned = self.real.owned_accounts(provisioner).await?;
        owned.extend(self.recorded.owned_accounts(provisioner).await?);
        self.forgotten(|f| {
            owned.retain(|id| !f.accounts.contains(&(provisioner.into(), id.clone())))
        });
        Ok(owned)
    }

    async fn record_memberships(
        &self,
        provisioner: &str,
        group: &str,
        members: &[Owned],
    ) -> Result<(), OwnershipError> {
        self.forgotten(|f| {
            for m in members {
                f.memberships
                    .remove(&(provisioner.into(), group.into(), m.api_id.clone()));
            }
        });
        self.recorded
            .record_memberships(provisioner, group, members)
            .await
    }

    async fn forget_memberships(
        &self,
        provisioner: &str,
        group: &str,
        member_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        self.forgotten(|f| {
            for id in member_ids {
                f.memberships
                    .insert((provisioner.into(), group.into(), id.clone()));
            }
        });
        self.recorded
            .forget_memberships(provisioner, group, member_ids)
            .await
    }

    async fn owns_membership(
        &self,
        provisioner: &str,
        group: &str,
        member_id: &str,
    ) -> Result<bool, OwnershipError> {
        if self.forgotten(|f| {
            f.memberships
                .contains(&(provisioner.into(), group.into(), member_id.into()))
        }) {
            return Ok(false);
        }
        Ok(self
            .recorded
            .owns_membership(provisioner, group, member_id)
            .await?
            || self
                .real
                .owns_membership(provisioner, group, member_id)
                .await?)
    }

    async fn owned_members(
        &self,
        provisioner: &str,
        group: &str,
    ) -> Result<HashSet<ApiId>, OwnershipError> {
        let mut owned = self.real.owned_members(provisioner, group).await?;
        owned.extend(self.recorded.owned_members(provisioner, group).await?);
        self.forgotten(|f| {
            owned.retain(|id| {
                !f.memberships
                    .contains(&(provisioner.into(), group.into(), id.clone()))
            })
        });
        Ok(owned)
    }
}
