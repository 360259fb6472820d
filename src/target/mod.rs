//! Target adapters: one folder per `kind`, each implementing [`TargetApi`],
//! and [`build`], the one registry that turns a provisioner's configuration
//! into a target. Adapters know HTTP, URLs and payloads; they hold no strategy
//! (no caches, no retries, no decisions about what to call next).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{KindConfig, ProvisionerConfig};
use crate::event::Attributes;
use crate::http::HttpClient;

pub mod dry_run;
pub mod rest;
pub mod scim;

/// The identifier the remote API uses for an account or a group.
pub type ApiId = String;

/// A remote account as listed: its API ID and its match value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAccount {
    pub api_id: ApiId,
    pub match_value: String,
}

/// A remote group as listed: its name on the target and its API ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGroup {
    pub name: String,
    pub api_id: ApiId,
}

/// What the adapter knows of the local subject an operation is about; the
/// values the templates see (SPEC §4).
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

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Connect error, timeout, 5xx, 429, 401 after re-authentication: retry later.
    Transient,
    /// Other 4xx, a response that does not fit the description, configuration
    /// mismatch: retrying cannot help.
    Permanent,
}

/// A failed call to a target. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub class: FailureClass,
    pub message: String,
    /// HTTP status, when the target answered.
    pub status: Option<u16>,
    /// The target's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl TargetError {
    pub fn permanent(message: impl Into<String>) -> Self {
        TargetError {
            class: FailureClass::Permanent,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        TargetError {
            class: FailureClass::Transient,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// The one place where an HTTP status becomes a failure class (SPEC §5):
    /// 5xx, 429, 408 and 401/419 (after the auth layer re-authenticated once)
    /// are transient; every other status an operation did not accept is permanent.
    pub fn from_status(
        operation: &str,
        status: u16,
        body_excerpt: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let class = match status {
            408 | 429 | 401 | 419 | 500..=599 => FailureClass::Transient,
            _ => FailureClass::Permanent,
        };
        let message = if body_excerpt.is_empty() {
            format!("{operation}: target answered HTTP {status}")
        } else {
            format!("{operation}: target answered HTTP {status}: {body_excerpt}")
        };
        TargetError {
            class,
            message,
            status: Some(status),
            retry_after,
        }
    }

    /// The same decision for an authentication endpoint (token or login):
    /// there a 401 or 403 means the configured credentials are refused, which
    /// only the operator can fix, so it is permanent.
    pub fn from_credentials_status(operation: &str, status: u16) -> Self {
        let mut e = Self::from_status(operation, status, "", None);
        if matches!(status, 401 | 403) {
            e.class = FailureClass::Permanent;
        }
        e
    }

    pub fn is_transient(&self) -> bool {
        self.class == FailureClass::Transient
    }

    /// The target says the resource the call addressed (an account or a group,
    /// by API ID) does not exist: a cached ID may have gone stale.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

pub type TargetResult<T> = Result<T, TargetError>;

/// The operations every target kind offers the engine. Everything about the
/// wire (URLs, payloads, paging, auth) stays behind this trait.
#[async_trait]
pub trait TargetApi: Send + Sync {
    /// The local subject's match value (pure: no I/O).
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String>;

    /// Match value -> API ID, `None` when the target has no such account.
    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<ApiId>>;

    /// One account's match value by API ID, `None` when absent.
    async fn get_account(&self, api_id: &str) -> TargetResult<Option<RemoteAccount>>;

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created>;

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()>;

    /// Removes or disables the account; an account not there is
    /// [`Removal::Absent`], not an error.
    async fn deprovision_account(
        &self,
        api_id: &str,
        ctx: &SubjectContext,
    ) -> TargetResult<Removal>;

    /// Every remote account with its match value.
    async fn list_accounts(&self) -> TargetResult<Vec<RemoteAccount>>;

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
pub fn build(config: &ProvisionerConfig, http: HttpClient) -> Arc<dyn TargetApi> {
    match &config.kind {
        KindConfig::Rest(rest) => Arc::new(rest::RestTarget::new(rest.clone(), http)),
        KindConfig::Scim(scim) => Arc::new(scim::ScimTarget::new(scim.clone(), http)),
    }
}
