//! Target adapters: one folder per `kind`, each implementing [`TargetApi`],
//! and [`build`], the one registry that turns a provisioner's configuration
//! into a target. Adapters know HTTP, URLs and payloads; they hold no strategy
//! (no caches, no retries, no decisions about what to call next).

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::KindConfig;
use crate::event::Attributes;
use crate::http::HttpClient;

pub mod dry_run;
pub mod error;
pub mod rest;
pub mod scim;

pub use error::{FailureClass, TargetError, TargetResult};

/// The identifier the remote API uses for an account or a group.
pub type ApiId = String;

/// A remote account as listed: its API ID and its match value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteAccount {
    pub api_id: ApiId,
    pub match_value: String,
    /// Only from an account listing given [`Desired`] states: the listing
    /// showed this account, and the update its subject's context would send
    /// changes nothing on it (the kind's own comparison, see
    /// [`TargetApi::list_accounts`]). Never set for group members.
    pub in_step: bool,
}

/// An account a look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub api_id: ApiId,
    /// The look-up's answer showed the account, and the update the looked-up
    /// context would send changes nothing on it.
    pub in_step: bool,
}

/// The desired state of the subject with the given match value (lowercase),
/// for an account listing to compare each account it reads with; `None` for
/// a match value that no single subject wants. The engine builds each
/// context when asked, so a listing never holds them all.
pub type Desired<'a> = &'a (dyn Fn(&str) -> Option<SubjectContext> + Sync);

/// A remote group as listed: its name on the target and its API ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGroup {
    pub name: String,
    pub api_id: ApiId,
}

/// What the adapter knows of the local subject an operation is about; the
/// values the templates see (docs/configuration.md, docs/scim.md).
#[derive(Debug, Clone, Default)]
pub struct SubjectContext {
    pub subject: String,
    pub match_value: String,
    pub attributes: Attributes,
    pub actor: Option<String>,
}

/// The result of a create call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Created; the API ID if the response named it.
    New(Option<ApiId>),
    /// The target says the account already exists.
    AlreadyExists,
}

/// What a removal (a deprovision, a member taken out of a group) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It was there and is gone now.
    Removed,
    /// The target answered that there was nothing to remove under that ID;
    /// each kind decides which answers mean that. An ID that has gone stale
    /// gets the same answer as an account or membership that is really gone,
    /// so the engine, which knows where the ID came from, decides which it is.
    Absent,
}

/// The operations every target kind offers the engine. Everything about the
/// wire (URLs, payloads, paging, auth) stays behind this trait.
#[async_trait]
pub trait TargetApi: Send + Sync {
    /// The local subject's match value (pure: no I/O).
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String>;

    /// Match value -> API ID, `None` when the target has no such account;
    /// [`Found::in_step`] when the answer shows the account as `ctx` would
    /// have it.
    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>>;

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created>;

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()>;

    /// Removes or disables the account; an account not there is
    /// [`Removal::Absent`], not an error.
    async fn deprovision_account(
        &self,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal>;

    /// Every remote account with its match value. With `desired`, each
    /// account whose match value it answers is also compared with that
    /// subject's desired state: [`RemoteAccount::in_step`] when the update
    /// the context would send changes nothing on the account as listed (for
    /// `rest`, the rendered update body against the listed item; for `scim`,
    /// the mapped attributes against the listed resource, which the listing
    /// then asks for). The comparison is pure mapping; whether to skip the
    /// update is the engine's choice.
    async fn list_accounts(&self, desired: Option<Desired<'_>>)
        -> TargetResult<Vec<RemoteAccount>>;

    /// Every remote group (name and API ID).
    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>>;

    /// Creates a remote group when the kind supports it and is configured to.
    async fn create_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        let _ = name;
        Ok(None)
    }

    /// A group's members, each with its match value.
    async fn list_members(&self, group_id: &str) -> TargetResult<Vec<RemoteAccount>>;

    async fn add_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<()>;

    /// Adds several members; kinds that can batch override this.
    async fn add_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<()> {
        for (api_id, ctx) in members {
            self.add_member(group, api_id, ctx).await?;
        }
        Ok(())
    }

    /// Removes a member; a member (or a group) not there is
    /// [`Removal::Absent`], not an error.
    async fn remove_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal>;

    /// Removes several members; kinds that can batch override this.
    /// [`Removal::Absent`] only when the target said so of every member (an
    /// empty batch included): a group that is gone answers that way.
    async fn remove_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<Removal> {
        let mut outcome = Removal::Absent;
        for (api_id, ctx) in members {
            if self.remove_member(group, api_id, ctx).await? == Removal::Removed {
                outcome = Removal::Removed;
            }
        }
        Ok(outcome)
    }

    /// A read that shows whether the target answers at all, for probing a
    /// target that went down; never writes. Any answer counts, "not found"
    /// included; only a transient failure means it is still down. The
    /// default looks up an account that nobody has ([`PROBE_MATCH_VALUE`]).
    async fn probe(&self) -> TargetResult<()> {
        let ctx = SubjectContext {
            subject: PROBE_MATCH_VALUE.to_string(),
            match_value: PROBE_MATCH_VALUE.to_string(),
            ..SubjectContext::default()
        };
        self.lookup_account(&ctx).await.map(|_| ())
    }

    /// How many members one `add_members`/`remove_members` call changes in
    /// one request. The engine sends batches of this size during group syncs
    /// and paces each batch as one call; 1 means no batching.
    fn member_batch_size(&self) -> usize {
        1
    }
}

/// The match value probes look up: it shows in the target's access log as
/// the worker asking whether the target is back.
pub const PROBE_MATCH_VALUE: &str = "provisioner-health-probe";

/// The registry: builds the target of a provisioner from its `kind`.
pub fn build(kind: &KindConfig, http: HttpClient) -> Arc<dyn TargetApi> {
    match kind {
        KindConfig::Rest(rest) => Arc::new(rest::RestTarget::new(rest.clone(), http)),
        KindConfig::Scim(scim) => Arc::new(scim::ScimTarget::new(scim.clone(), http)),
    }
}
