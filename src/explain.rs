//! One subject explained, for `provisioner explain` and the admin API's
//! `GET /v1/provisioners/{name}/subjects/{subject}`: what the journal
//! recorded of the subject's events, the account as the target holds it now,
//! its memberships in the mapped target groups, which of them the worker owns,
//! and the plan an `add` would execute now.
//!
//! Nothing here writes to the target. Everything goes through an
//! [`Explainer`] (built by `assembly::explainer`), whose target is the
//! dry-run wrapper: reads pass, writes are only recorded. The plan is the
//! engine's own decision on a synthetic event, so it is the real one; the
//! writes it would send are read back from the wrapper's log.
//!
//! The journal keeps no attributes, so the plan's event carries only the
//! attributes the caller gives; without them, a match value built from
//! attributes cannot be computed, and an update would be planned with
//! empty values (see docs/operations.md, "Explain one subject").

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{ProvisionStrategy, ProvisionerConfig};
use crate::engine::ownership::{group_key, Ownership as _};
use crate::engine::{OutcomeStatus, Provisioner};
use crate::event::{Action, Attributes, Event, Subjects};
use crate::journal::{Filter, Journal, PageRequest, StoredEntry};
use crate::target::dry_run::WriteLog;
use crate::target::{RemoteGroup, SubjectContext, TargetApi};
use crate::worker::status::rfc3339;

/// Journal events shown when the request names no limit.
pub const DEFAULT_EVENT_LIMIT: u32 = 20;
/// Most journal events one explanation shows, whatever the request asks.
pub const MAX_EVENT_LIMIT: u32 = 200;

/// The event id of the plan's synthetic event.
const PLAN_EVENT_ID: &str = "explain-plan";

/// What an explanation reads through: built by `assembly::explainer`, one
/// per explanation.
pub struct Explainer {
    /// The provisioner explained.
    pub config: ProvisionerConfig,
    /// Its target behind the dry-run wrapper: reads go to the target, writes
    /// only land in `writes`.
    pub target: Arc<dyn TargetApi>,
    /// An engine of its own over `target`, with fresh caches, for the plan.
    pub engine: Arc<dyn Provisioner>,
    /// The writes `target` was asked for instead of sending them.
    pub writes: WriteLog,
}

/// How the admin API gets an [`Explainer`] without knowing how one is
/// built; `Err` says why the provisioner's client could not be built.
pub type BuildExplainer = fn(&ProvisionerConfig) -> Result<Explainer, String>;

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The local subject, as events name it.
    pub subject: String,
    /// The attributes of the plan's synthetic event (the journal keeps none).
    pub attributes: Option<Attributes>,
    /// The local group of the plan's synthetic `add`; the provisioner's
    /// `provision_group` when none.
    pub group: Option<String>,
    /// Journal events shown: [`DEFAULT_EVENT_LIMIT`] when none, at most
    /// [`MAX_EVENT_LIMIT`].
    pub limit: Option<u32>,
}

/// Why a request cannot be explained at all.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The subject is empty.
    #[error("the subject is empty")]
    EmptySubject,
    /// `--attributes` (or `attributes=`) is not a JSON object of lists of strings.
    #[error("attributes: {0} (give a JSON object of name → list of strings, e.g. {{\"mail\": [\"jdoe@example.edu\"]}})")]
    Attributes(String),
}

/// Reads attributes given as JSON text: an object of name → list of strings.
pub fn parse_attributes(json: &str) -> Result<Attributes, ExplainError> {
    serde_json::from_str(json).map_err(|e| ExplainError::Attributes(e.to_string()))
}

/// One subject explained. Every part is filled even when another failed:
/// a part that could not be read says why in its `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    /// The provisioner.
    pub provisioner: String,
    /// The subject, as asked.
    pub subject: String,
    /// Whether attributes were given for the look-up and the plan.
    pub attributes_given: bool,
    /// The subject's recent events in the journal, newest first.
    pub history: History,
    /// The account as the target holds it now.
    pub account: Account,
    /// The subject's memberships in each mapped target group.
    pub memberships: Vec<Membership>,
    /// Whether the worker owns the account and its memberships (created or
    /// adopted them); `null` when the worker keeps no journal, whose store
    /// holds the records.
    pub ownership: Option<Ownership>,
    /// What an `add` of the subject would do now.
    pub plan: Plan,
}

/// What the worker owns of the subject on the target: what it would remove
/// when `remove_only_owned` is on (see docs/ownership.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ownership {
    /// The provisioner's `remove_only_owned`: whether deprovisions and full
    /// syncs leave alone what the worker does not own.
    pub remove_only_owned: bool,
    /// Whether the worker owns the account; `null` when there is no account
    /// (or it could not be read) or the records could not be read.
    pub account: Option<bool>,
    /// The mapped groups the subject is a member of, with whether the
    /// worker owns that membership.
    pub memberships: Vec<OwnedMembership>,
    /// Why the records could not be read.
    pub error: Option<String>,
}

/// One membership of the subject and whether the worker owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OwnedMembership {
    /// The remote group.
    pub target_group: String,
    /// Whether the worker owns the membership; `null` when unknown.
    pub owned: Option<bool>,
}

/// The subject's recent events, as the journal recorded them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Whether the worker keeps a journal (`[journal]` in the worker file).
    pub journal: bool,
    /// Why the journal could not be read.
    pub error: Option<String>,
    /// The most events shown.
    pub limit: u32,
    /// Whether the journal holds older events than those shown.
    pub more: bool,
    /// Newest first.
    pub events: Vec<HistoryEvent>,
}

/// One settled event of the subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEvent {
    /// When it was settled (RFC 3339).
    pub at: String,
    pub event_id: String,
    pub action: Option<String>,
    pub group: Option<String>,
    /// `applied`, `ignored`, `dead-lettered`, `returned` or `coalesced`.
    pub result: String,
    /// Why, in words.
    pub detail: String,
    pub attempts: u32,
    /// Calls made to the target, all attempts together.
    pub api_calls: u32,
}

impl From<StoredEntry> for HistoryEvent {
    fn from(row: StoredEntry) -> Self {
        let e = row.entry;
        HistoryEvent {
            at: rfc3339(u64::try_from(e.at_ms).unwrap_or(0)),
            event_id: e.event_id,
            action: e.action,
            group: e.group,
            result: e.result.as_str().to_string(),
            detail: e.detail,
            attempts: e.attempts,
            api_calls: e.api_calls,
        }
    }
}

/// Whether the target holds the subject's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    /// The look-up found it.
    Present,
    /// The target has no account with the subject's match value.
    Absent,
    /// Not known: no match value, or the look-up failed (see `error`).
    Unknown,
}

/// The account as one look-up on the target found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// The subject's match value (the target's key for it), when it could
    /// be computed.
    pub match_value: Option<String>,
    pub state: AccountState,
    /// The account's ID on the target, when present.
    pub api_id: Option<String>,
    /// When present: whether the update the given attributes would send
    /// changes nothing on it (the target kind's own comparison).
    pub in_step: Option<bool>,
    /// The match value is in `unmanaged_logins`: never changed by the worker.
    pub unmanaged: bool,
    /// Why the state is unknown.
    pub error: Option<String>,
}

/// Whether the account is a member of a mapped target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipState {
    Member,
    NotMember,
    /// The target has no group of that name.
    NoGroup,
    /// Not known: no match value, or a listing failed (see `error`).
    Unknown,
}

/// The subject in one mapped target group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    /// The local group (a key of `target_group_map`).
    pub group: String,
    /// The remote group it maps to.
    pub target_group: String,
    pub state: MembershipState,
    /// Why the state is unknown.
    pub error: Option<String>,
}

/// What the engine decided for the plan's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanStatus {
    /// The engine would apply it with `writes` (none: nothing to change).
    Planned,
    /// The engine would ignore it (unmapped group, unmanaged login).
    Ignored,
    /// Applying it would fail now (see `detail`).
    Failed,
    /// Nothing to plan: no group was given and the provisioner has no
    /// `provision_group`.
    NotPlanned,
}

/// The plan: a synthetic `add` of the subject run through the engine with
/// writes recorded instead of sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// Always `add` (an `update` is routed the same way).
    pub action: String,
    /// The local group of the synthetic event.
    pub group: Option<String>,
    pub status: PlanStatus,
    /// The engine's outcome in words, or why it would fail.
    pub detail: String,
    /// The writes it would send, in order (`would update account ...`); none when the target is already
    /// as the event would have it.
    pub writes: Vec<String>,
    /// The calls the engine counted for the plan: its reads, and the writes
    /// above, which were recorded instead of sent.
    pub api_calls: u32,
}

/// Explains `request.subject` for the explainer's provisioner: the journal's
/// events (when a journal is given), one look-up of the account, the mapped
/// groups' listings, and the plan. Never writes to the target.
pub async fn explain(
    explainer: &Explainer,
    journal: Option<&Journal>,
    request: &Request,
) -> Result<Explanation, ExplainError> {
    let subject = request.subject.trim();
    if subject.is_empty() {
        return Err(ExplainError::EmptySubject);
    }
    let config = &explainer.config;
    let attributes = request.attributes.clone().unwrap_or_default();
    let limit = request
        .limit
        .unwrap_or(DEFAULT_EVENT_LIMIT)
        .clamp(1, MAX_EVENT_LIMIT);
    let history = history(journal, &config.name, subject, limit).await;
    let match_value = explainer
        .target
        .match_value(subject, &attributes)
        .map(|m| m.to_lowercase());
    let (account, memberships) = match match_value {
        Ok(match_value) => {
            let ctx = SubjectContext {
                subject: subject.to_string(),
                match_value,
                attributes: attributes.clone(),
                actor: None,
            };
            let account = account(explainer, &ctx).await;
            let memberships = memberships(explainer, &ctx, account.api_id.as_deref()).await;
            (account, memberships)
        }
        Err(e) => {
            let why = if attributes.is_empty() {
                format!("{e}; give the subject's attributes to compute its match value")
            } else {
                e.to_string()
            };
            let account = Account {
                match_value: None,
                state: AccountState::Unknown,
                api_id: None,
                in_step: None,
                unmanaged: false,
                error: Some(why.clone()),
            };
            let memberships = mapped_groups(config)
                .map(|(group, target_group)| Membership {
                    group,
                    target_group,
                    state: MembershipState::Unknown,
                    error: Some(why.clone()),
                })
                .collect();
            (account, memberships)
        }
    };
    let mut plan = plan(explainer, subject, attributes, request.group.as_deref()).await;
    if account.state == AccountState::Present
        && config.provision_strategy == ProvisionStrategy::CreateFirst
        && plan
            .writes
            .first()
            .is_some_and(|w| w.starts_with("would create account"))
    {
        // The dry-run target answers every create as done; the real one
        // would say the account exists, and the engine would update it.
        plan.detail.push_str(
            "; create-first: the account exists, so the target would refuse the create and the engine would look it up and update it instead",
        );
    }
    let ownership = match journal {
        Some(journal) => Some(ownership(config, journal, &account, &memberships).await),
        None => None,
    };
    Ok(Explanation {
        provisioner: config.name.clone(),
        subject: subject.to_string(),
        attributes_given: request.attributes.is_some(),
        history,
        account,
        memberships,
        ownership,
        plan,
    })
}

/// The ownership records of the account and of its memberships.
async fn ownership(
    config: &ProvisionerConfig,
    journal: &Journal,
    account: &Account,
    memberships: &[Membership],
) -> Ownership {
    let store = journal.ownership();
    let mut view = Ownership {
        remove_only_owned: config.remove_only_owned,
        account: None,
        memberships: Vec::new(),
        error: None,
    };
    let Some(api_id) = account.api_id.as_deref() else {
        return view;
    };
    match store.owns_account(&config.name, api_id).await {
        Ok(owned) => view.account = Some(owned),
        Err(e) => view.error = Some(format!("reading the ownership records: {e}")),
    }
    for m in memberships
        .iter()
        .filter(|m| m.state == MembershipState::Member)
    {
        let owned = match store
            .owns_membership(&config.name, &group_key(&m.target_group), api_id)
            .await
        {
            Ok(owned) => Some(owned),
            Err(e) => {
                view.error = Some(format!("reading the ownership records: {e}"));
                None
            }
        };
        view.memberships.push(OwnedMembership {
            target_group: m.target_group.clone(),
            owned,
        });
    }
    view
}

async fn history(
    journal: Option<&Journal>,
    provisioner: &str,
    subject: &str,
    limit: u32,
) -> History {
    let mut history = History {
        journal: journal.is_some(),
        error: None,
        limit,
        more: false,
        events: Vec::new(),
    };
    let Some(journal) = journal else {
        return history;
    };
    let filter = Filter {
        provisioner: Some(provisioner.to_string()),
        subject: Some(subject.to_string()),
        ..Filter::default()
    };
    let page = PageRequest {
        cursor: None,
        limit: Some(limit),
    };
    match journal.query(&filter, &page).await {
        Ok(page) => {
            history.more = page.next_cursor.is_some();
            history.events = page.entries.into_iter().map(HistoryEvent::from).collect();
        }
        Err(e) => history.error = Some(e.to_string()),
    }
    history
}

/// One look-up of the account.
async fn account(explainer: &Explainer, ctx: &SubjectContext) -> Account {
    let unmanaged = explainer
        .config
        .unmanaged_logins
        .iter()
        .any(|l| l.to_lowercase() == ctx.match_value);
    let mut account = Account {
        match_value: Some(ctx.match_value.clone()),
        state: AccountState::Unknown,
        api_id: None,
        in_step: None,
        unmanaged,
        error: None,
    };
    match explainer.target.lookup_account(ctx).await {
        Ok(Some(found)) => {
            account.state = AccountState::Present;
            account.api_id = Some(found.api_id);
            account.in_step = Some(found.in_step);
        }
        Ok(None) => account.state = AccountState::Absent,
        Err(e) => account.error = Some(e.to_string()),
    }
    account
}

/// `target_group_map` as (local, remote) pairs, in the map's order.
fn mapped_groups(config: &ProvisionerConfig) -> impl Iterator<Item = (String, String)> + '_ {
    config
        .target_group_map
        .iter()
        .map(|(local, remote)| (local.clone(), remote.clone()))
}

/// The account in each mapped group: one listing of the groups, then each
/// mapped group's members. A member is the account when its API ID or its
/// match value is the subject's.
async fn memberships(
    explainer: &Explainer,
    ctx: &SubjectContext,
    api_id: Option<&str>,
) -> Vec<Membership> {
    let config = &explainer.config;
    if config.target_group_map.is_empty() {
        return Vec::new();
    }
    let groups = match explainer.target.list_groups().await {
        Ok(groups) => groups,
        Err(e) => {
            let why = format!("listing the target's groups: {e}");
            return mapped_groups(config)
                .map(|(group, target_group)| Membership {
                    group,
                    target_group,
                    state: MembershipState::Unknown,
                    error: Some(why.clone()),
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    for (group, target_group) in mapped_groups(config) {
        // Remote group names compare case-insensitively, as the engine's do.
        let remote: Option<&RemoteGroup> = groups
            .iter()
            .find(|g| g.name.to_lowercase() == target_group.to_lowercase());
        let (state, error) = match remote {
            None => (MembershipState::NoGroup, None),
            Some(remote) => match explainer.target.list_members(&remote.api_id).await {
                Ok(members) => {
                    let is_member = members.iter().any(|m| {
                        api_id == Some(m.api_id.as_str())
                            || m.match_value.to_lowercase() == ctx.match_value
                    });
                    let state = if is_member {
                        MembershipState::Member
                    } else {
                        MembershipState::NotMember
                    };
                    (state, None)
                }
                Err(e) => (
                    MembershipState::Unknown,
                    Some(format!("listing the members of `{target_group}`: {e}")),
                ),
            },
        };
        out.push(Membership {
            group,
            target_group,
            state,
            error,
        });
    }
    out
}

/// Runs a synthetic `add` through the explainer's engine, once, without
/// retries: what it would write is what the dry-run target recorded.
async fn plan(
    explainer: &Explainer,
    subject: &str,
    attributes: Attributes,
    group: Option<&str>,
) -> Plan {
    let group = group
        .map(str::to_lowercase)
        .or_else(|| explainer.config.provision_group.clone());
    let Some(group) = group else {
        return Plan {
            action: Action::Add.as_str().to_string(),
            group: None,
            status: PlanStatus::NotPlanned,
            detail: "the provisioner has no provision_group: name a mapped group to plan for"
                .to_string(),
            writes: Vec::new(),
            api_calls: 0,
        };
    };
    let event = Event {
        id: PLAN_EVENT_ID.to_string(),
        action: Action::Add,
        group: group.clone(),
        subjects: Subjects::One {
            subject: subject.to_string(),
            attributes,
        },
        actor: None,
        timestamp: None,
        allow_removals: false,
    };
    // Whatever earlier explanations left in the log is not this plan's.
    explainer.writes.take();
    let result = explainer.engine.apply(&event).await;
    let writes = explainer.writes.take();
    let (status, detail, api_calls) = match result {
        Ok(o) => {
            let status = match o.status {
                OutcomeStatus::Applied => PlanStatus::Planned,
                OutcomeStatus::Ignored => PlanStatus::Ignored,
            };
            (status, o.detail, o.api_calls)
        }
        Err(e) => (PlanStatus::Failed, e.error.to_string(), e.api_calls),
    };
    Plan {
        action: Action::Add.as_str().to_string(),
        group: Some(group),
        status,
        detail,
        writes,
        api_calls,
    }
}
