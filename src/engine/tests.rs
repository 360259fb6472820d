//! Unit tests of the reconciliation engine over [`MemoryTarget`], a simulated
//! target that keeps its accounts and groups in memory and records every call
//! the engine makes as a compact string (`"lookup jdoe"`, `"create jdoe"`,
//! `"update u-jdoe"`, `"add_member g-staff u-jdoe"`, ...), with the tokio
//! instant of the call. Tests assert exact call sequences.
//!
//! Conventions of the simulated target:
//! - an account seeded or created for match value `m` gets API ID `u-m`
//!   (`u-m.2`, ... when that is taken); a group `Name` gets API ID `g-name`;
//! - the match value is the subject lowercased, or (`match_from_mail`) the
//!   first `mail` attribute lowercased;
//! - create answers `AlreadyExists` when an account with the match value exists
//!   (unless `accept_duplicate_accounts`), update of an unknown API ID answers
//!   404, add_member of an unknown account answers 404;
//! - an account is in step with a subject's context when it holds exactly the
//!   context's attributes: look-ups say so, and so does list_accounts for the
//!   accounts its `desired` answers for;
//! - failures can be injected per call string (transient 503, permanent 400);
//! - like the adapters, a removal of something already gone (an unknown
//!   account, a non-member, an unknown group) answers "absent", not an error;
//! - with `batching(n)`, member changes go out as `add_members`/`remove_members`
//!   calls naming every API ID of the batch (`"remove_members g-staff u-a u-b"`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{ApplyError, Engine, Outcome, OutcomeStatus, Provisioner};
use crate::config::ProvisionerConfig;
use crate::event::{Attributes, Event, Subjects};
use crate::target::{
    ApiId, Created, Desired, Found, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
    TargetError, TargetResult,
};

mod accounts;
mod adaptive;
mod caching;
mod coalescing;
mod explain;
mod failures;
mod groups;
mod guard;
mod memory;
mod ownership;
mod pacing;
mod routing;
mod syncs;

// ------------------------------------------------------------ the target

#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    match_value: String,
    attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    api_id: ApiId,
    members: BTreeSet<ApiId>,
}

#[derive(Debug, Default)]
struct State {
    /// API ID -> account.
    accounts: BTreeMap<ApiId, Account>,
    /// Remote group name -> group.
    groups: BTreeMap<String, Group>,
    /// Match values that list_accounts leaves out.
    hidden: BTreeSet<String>,
}

impl State {
    fn id_of(&self, match_value: &str) -> Option<ApiId> {
        self.accounts
            .iter()
            .find(|(_, a)| a.match_value == match_value)
            .map(|(id, _)| id.clone())
    }

    fn fresh_id(&self, match_value: &str) -> ApiId {
        let base = format!("u-{match_value}");
        if !self.accounts.contains_key(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}.{n}"))
            .find(|id| !self.accounts.contains_key(id))
            .unwrap_or_else(|| panic!("no free id for {match_value}"))
    }

    fn group_by_id(&mut self, group_id: &str) -> Option<&mut Group> {
        self.groups.values_mut().find(|g| g.api_id == group_id)
    }

    /// Removes members of a group; how many were members (0 also when the
    /// group does not exist).
    fn remove_members(&mut self, group_id: &str, ids: &[&str]) -> usize {
        self.group_by_id(group_id)
            .map(|g| ids.iter().filter(|id| g.members.remove(**id)).count())
            .unwrap_or(0)
    }
}

/// How an injected failure fails.
#[derive(Debug, Clone, Copy)]
enum Fail {
    /// HTTP 503.
    Transient,
    /// HTTP 400.
    Permanent,
}

struct Injected {
    fail: Fail,
    /// `None`: every time.
    remaining: Option<usize>,
}

/// An out-of-band change made when a given call arrives, before the call sees
/// the state: what another worker or an administrator does meanwhile.
type Hook = Box<dyn FnOnce(&MemoryTarget) + Send>;

/// The simulated target.
struct MemoryTarget {
    state: Mutex<State>,
    calls: Mutex<Vec<(String, Instant)>>,
    failures: Mutex<HashMap<String, Injected>>,
    /// A server that accepts a create for a match value that already exists
    /// (making a duplicate) instead of answering "already exists".
    accept_duplicate_accounts: bool,
    /// A server that rejects (400) adding a member that is already a member.
    reject_duplicate_members: bool,
    /// Match value from the first `mail` attribute instead of the subject.
    match_from_mail: bool,
    /// A create that answers without naming the new account's API ID.
    create_without_id: bool,
    /// Members changed per `add_members`/`remove_members` call (1: one by one).
    batch_size: usize,
    /// How long list_accounts takes after it has read the accounts.
    listing_delay: Duration,
    hooks: Mutex<HashMap<String, Hook>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryTarget {
    fn new() -> Self {
        MemoryTarget {
            state: Mutex::new(State::default()),
            calls: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            accept_duplicate_accounts: false,
            reject_duplicate_members: false,
            match_from_mail: false,
            create_without_id: false,
            batch_size: 1,
            listing_delay: Duration::ZERO,
            hooks: Mutex::new(HashMap::new()),
        }
    }

    fn creating_without_ids(mut self) -> Self {
        self.create_without_id = true;
        self
    }

    fn batching(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// list_accounts reads the accounts at once, then takes `delay` to answer.
    fn with_slow_listing(mut self, delay: Duration) -> Self {
        self.listing_delay = delay;
        self
    }

    fn accepting_duplicate_accounts(mut self) -> Self {
        self.accept_duplicate_accounts = true;
        self
    }

    fn rejecting_duplicate_members(mut self) -> Self {
        self.reject_duplicate_members = true;
        self
    }

    fn matching_on_mail(mut self) -> Self {
        self.match_from_mail = true;
        self
    }

    /// Seeds accounts `u-<m>` with no attributes.
    fn with_accounts<S: AsRef<str>>(self, matches: impl IntoIterator<Item = S>) -> Self {
        for m in matches {
            self.insert_account(m.as_ref());
        }
        self
    }

    /// Seeds group `name` (API ID `g-<name lowercased>`) with the accounts of
    /// the given match values as members (they must be seeded first).
    fn with_group<S: AsRef<str>>(self, name: &str, members: impl IntoIterator<Item = S>) -> Self {
        {
            let mut s = lock(&self.state);
            let ids = members
                .into_iter()
                .map(|m| {
                    s.id_of(m.as_ref())
                        .unwrap_or_else(|| panic!("seed account {} first", m.as_ref()))
                })
                .collect();
            s.groups.insert(
                name.to_string(),
                Group {
                    api_id: format!("g-{}", name.to_lowercase()),
                    members: ids,
                },
            );
        }
        self
    }

    fn arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// Makes the call `call` (e.g. `"create bob"`) fail, every time.
    fn fail(&self, call: &str, fail: Fail) {
        lock(&self.failures).insert(
            call.to_string(),
            Injected {
                fail,
                remaining: None,
            },
        );
    }

    /// Makes the call `call` fail once.
    fn fail_once(&self, call: &str, fail: Fail) {
        lock(&self.failures).insert(
            call.to_string(),
            Injected {
                fail,
                remaining: Some(1),
            },
        );
    }

    /// Runs `change` once, when the call `call` arrives (before it is answered).
    fn before_call(&self, call: &str, change: impl FnOnce(&MemoryTarget) + Send + 'static) {
        lock(&self.hooks).insert(call.to_string(), Box::new(change));
    }

    /// Out-of-band change: group `name` is deleted and created again under
    /// `api_id`, with the accounts of the given match values as members.
    fn recreate_group<S: AsRef<str>>(
        &self,
        name: &str,
        api_id: &str,
        members: impl IntoIterator<Item = S>,
    ) {
        let mut s = lock(&self.state);
        let ids = members
            .into_iter()
            .map(|m| {
                s.id_of(m.as_ref())
                    .unwrap_or_else(|| panic!("no account {}", m.as_ref()))
            })
            .collect();
        s.groups.insert(
            name.to_string(),
            Group {
                api_id: api_id.to_string(),
                members: ids,
            },
        );
    }

    /// Out-of-band change: the account of `match_value` joins group `name`.
    fn join_group(&self, name: &str, match_value: &str) {
        let mut s = lock(&self.state);
        let id = s
            .id_of(match_value)
            .unwrap_or_else(|| panic!("no account {match_value}"));
        s.groups
            .get_mut(name)
            .unwrap_or_else(|| panic!("no group {name}"))
            .members
            .insert(id);
    }

    /// Out-of-band change (not a recorded call): an account appears.
    fn insert_account(&self, match_value: &str) -> ApiId {
        self.insert_account_with(match_value, Attributes::new())
    }

    /// Out-of-band change: an account appears with the given attributes.
    fn insert_account_with(&self, match_value: &str, attributes: Attributes) -> ApiId {
        let mut s = lock(&self.state);
        let id = s.fresh_id(match_value);
        s.accounts.insert(
            id.clone(),
            Account {
                match_value: match_value.to_string(),
                attributes,
            },
        );
        id
    }

    /// Leaves the account out of list_accounts (a listing that missed it).
    fn hide_from_listing(&self, match_value: &str) {
        lock(&self.state).hidden.insert(match_value.to_string());
    }

    /// Out-of-band change: an account appears under a given API ID.
    fn insert_account_with_id(&self, match_value: &str, api_id: &str) {
        lock(&self.state).accounts.insert(
            api_id.to_string(),
            Account {
                match_value: match_value.to_string(),
                attributes: Attributes::new(),
            },
        );
    }

    /// Out-of-band change: an account (and its memberships) disappears.
    fn remove_account(&self, match_value: &str) {
        let mut s = lock(&self.state);
        let ids: Vec<ApiId> = s
            .accounts
            .iter()
            .filter(|(_, a)| a.match_value == match_value)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            s.accounts.remove(&id);
            for g in s.groups.values_mut() {
                g.members.remove(&id);
            }
        }
    }

    /// The calls made since the last take, in order.
    fn take_calls(&self) -> Vec<String> {
        self.take_timed_calls()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    fn take_timed_calls(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// Match values of every account (with multiplicity kept by the Vec).
    fn account_list(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.state)
            .accounts
            .values()
            .map(|a| a.match_value.clone())
            .collect();
        v.sort();
        v
    }

    fn account_set(&self) -> BTreeSet<String> {
        self.account_list().into_iter().collect()
    }

    fn account(&self, match_value: &str) -> Option<(ApiId, Account)> {
        lock(&self.state)
            .accounts
            .iter()
            .find(|(_, a)| a.match_value == match_value)
            .map(|(id, a)| (id.clone(), a.clone()))
    }

    /// Match values of the members of remote group `name`.
    fn members(&self, name: &str) -> BTreeSet<String> {
        let s = lock(&self.state);
        let g = s
            .groups
            .get(name)
            .unwrap_or_else(|| panic!("no group {name}"));
        g.members
            .iter()
            .map(|id| {
                s.accounts
                    .get(id)
                    .map(|a| a.match_value.clone())
                    .unwrap_or_else(|| format!("<dangling {id}>"))
            })
            .collect()
    }

    /// Everything, for comparing states.
    fn snapshot(&self) -> (BTreeMap<ApiId, Account>, BTreeMap<String, Group>) {
        let s = lock(&self.state);
        (s.accounts.clone(), s.groups.clone())
    }

    /// Records a call and answers an injected failure if there is one.
    fn record(&self, call: String) -> TargetResult<()> {
        lock(&self.calls).push((call.clone(), Instant::now()));
        let hook = lock(&self.hooks).remove(&call);
        if let Some(change) = hook {
            change(self);
        }
        let mut failures = lock(&self.failures);
        let Some(inj) = failures.get_mut(&call) else {
            return Ok(());
        };
        let fail = inj.fail;
        match &mut inj.remaining {
            Some(0) => return Ok(()),
            Some(n) => *n -= 1,
            None => {}
        }
        let op = call.split(' ').next().unwrap_or_default().to_string();
        Err(match fail {
            Fail::Transient => TargetError::from_status(&op, 503, "service unavailable", None),
            Fail::Permanent => TargetError::from_status(&op, 400, "invalid value", None),
        })
    }
}

/// Absent when none of the members was there.
fn removal(members_removed: usize) -> Removal {
    if members_removed == 0 {
        Removal::Absent
    } else {
        Removal::Removed
    }
}

fn not_found(op: &str) -> TargetError {
    TargetError::from_status(op, 404, "not found", None)
}

#[async_trait]
impl TargetApi for MemoryTarget {
    fn match_value(&self, subject: &str, attributes: &Attributes) -> TargetResult<String> {
        if self.match_from_mail {
            attributes
                .get("mail")
                .and_then(|v| v.first())
                .map(|m| m.to_lowercase())
                .ok_or_else(|| TargetError::permanent("no `mail` attribute for the match value"))
        } else {
            Ok(subject.to_lowercase())
        }
    }

    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>> {
        self.record(format!("lookup {}", ctx.match_value))?;
        let s = lock(&self.state);
        Ok(s.id_of(&ctx.match_value).map(|api_id| Found {
            in_step: s.accounts.get(&api_id).map(|a| &a.attributes) == Some(&ctx.attributes),
            api_id,
        }))
    }

    async fn create_account(&self, ctx: &SubjectContext) -> TargetResult<Created> {
        self.record(format!("create {}", ctx.match_value))?;
        let mut s = lock(&self.state);
        if !self.accept_duplicate_accounts && s.id_of(&ctx.match_value).is_some() {
            return Ok(Created::AlreadyExists);
        }
        let id = s.fresh_id(&ctx.match_value);
        s.accounts.insert(
            id.clone(),
            Account {
                match_value: ctx.match_value.clone(),
                attributes: ctx.attributes.clone(),
            },
        );
        Ok(Created::New((!self.create_without_id).then_some(id)))
    }

    async fn update_account(&self, api_id: &str, ctx: &SubjectContext) -> TargetResult<()> {
        self.record(format!("update {api_id}"))?;
        match lock(&self.state).accounts.get_mut(api_id) {
            Some(a) => {
                a.attributes = ctx.attributes.clone();
                Ok(())
            }
            None => Err(not_found("update")),
        }
    }

    async fn deprovision_account(
        &self,
        api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        self.record(format!("deprovision {api_id}"))?;
        let mut s = lock(&self.state);
        if s.accounts.remove(api_id).is_none() {
            return Ok(Removal::Absent);
        }
        for g in s.groups.values_mut() {
            g.members.remove(api_id);
        }
        Ok(Removal::Removed)
    }

    async fn list_accounts(
        &self,
        desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        self.record("list_accounts".into())?;
        let listed: Vec<RemoteAccount> = {
            let s = lock(&self.state);
            s.accounts
                .iter()
                .filter(|(_, a)| !s.hidden.contains(&a.match_value))
                .map(|(id, a)| RemoteAccount {
                    api_id: id.clone(),
                    match_value: a.match_value.clone(),
                    in_step: desired
                        .and_then(|d| d(&a.match_value))
                        .is_some_and(|ctx| ctx.attributes == a.attributes),
                })
                .collect()
        };
        if !self.listing_delay.is_zero() {
            tokio::time::sleep(self.listing_delay).await;
        }
        Ok(listed)
    }

    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        self.record("list_groups".into())?;
        Ok(lock(&self.state)
            .groups
            .iter()
            .map(|(name, g)| RemoteGroup {
                name: name.clone(),
                api_id: g.api_id.clone(),
            })
            .collect())
    }

    async fn create_group(&self, name: &str) -> TargetResult<Option<ApiId>> {
        self.record(format!("create_group {name}"))?;
        Ok(None)
    }

    async fn list_members(&self, group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        self.record(format!("list_members {group_id}"))?;
        let mut s = lock(&self.state);
        let members = s
            .group_by_id(group_id)
            .ok_or_else(|| not_found("list_members"))?
            .members
            .clone();
        Ok(members
            .into_iter()
            .filter_map(|id| {
                s.accounts.get(&id).map(|a| RemoteAccount {
                    api_id: id.clone(),
                    match_value: a.match_value.clone(),
                    in_step: false,
                })
            })
            .collect())
    }

    async fn add_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<()> {
        self.record(format!("add_member {} {api_id}", group.api_id))?;
        let mut s = lock(&self.state);
        if !s.accounts.contains_key(api_id) {
            return Err(not_found("add_member"));
        }
        let reject = self.reject_duplicate_members;
        let g = s
            .group_by_id(&group.api_id)
            .ok_or_else(|| not_found("add_member"))?;
        if !g.members.insert(api_id.to_string()) && reject {
            return Err(TargetError::from_status(
                "add_member",
                400,
                "already a member",
                None,
            ));
        }
        Ok(())
    }

    async fn remove_member(
        &self,
        group: &RemoteGroup,
        api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        self.record(format!("remove_member {} {api_id}", group.api_id))?;
        Ok(removal(
            lock(&self.state).remove_members(&group.api_id, &[api_id]),
        ))
    }

    async fn add_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<()> {
        if self.batch_size <= 1 {
            for (api_id, ctx) in members {
                self.add_member(group, api_id, ctx).await?;
            }
            return Ok(());
        }
        let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
        self.record(format!("add_members {} {}", group.api_id, ids.join(" ")))?;
        let mut s = lock(&self.state);
        if ids.iter().any(|id| !s.accounts.contains_key(*id)) {
            return Err(not_found("add_members"));
        }
        let g = s
            .group_by_id(&group.api_id)
            .ok_or_else(|| not_found("add_members"))?;
        g.members.extend(ids.iter().map(|id| id.to_string()));
        Ok(())
    }

    async fn remove_members(
        &self,
        group: &RemoteGroup,
        members: &[(ApiId, SubjectContext)],
    ) -> TargetResult<Removal> {
        if self.batch_size <= 1 {
            let mut outcome = Removal::Absent;
            for (api_id, ctx) in members {
                if self.remove_member(group, api_id, ctx).await? == Removal::Removed {
                    outcome = Removal::Removed;
                }
            }
            return Ok(outcome);
        }
        let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
        self.record(format!("remove_members {} {}", group.api_id, ids.join(" ")))?;
        Ok(removal(
            lock(&self.state).remove_members(&group.api_id, &ids),
        ))
    }

    fn member_batch_size(&self) -> usize {
        self.batch_size
    }
}

// ------------------------------------------------------------ configuration

/// The `[rest]` description of the example provisioner (the engine never
/// uses it: the simulated target stands in for the REST adapter, but the
/// configuration must be valid).
fn rest_section() -> &'static str {
    const EXAMPLE: &str = include_str!("../../provisioners/example.toml");
    EXAMPLE
        .find("\n[rest]")
        .map(|i| &EXAMPLE[i..])
        .unwrap_or("")
}

/// The provision group of [`cfg`].
const PG: &str = "app:example:users";
/// The mapped local group of [`cfg`] (-> remote `Staff`, API ID `g-staff`).
const STAFF: &str = "app:example:staff";
/// A group this provisioner does not manage.
const OTHER: &str = "app:other:things";

/// A provisioner from its top-level keys (everything but `kind`, `url_prefix`
/// and `[rest]`).
fn config(top: &str) -> ProvisionerConfig {
    let text = format!(
        "kind = \"rest\"\nurl_prefix = \"https://api.example.com/v2\"\n{top}\n{}",
        rest_section()
    );
    let mut errors = Vec::new();
    let parsed = crate::config::parse_provisioner(Path::new("t.toml"), &text, &mut errors);
    match parsed {
        Some(c) if errors.is_empty() => c,
        _ => panic!("test configuration does not validate: {errors:#?}\n{text}"),
    }
}

/// The usual provisioner (provision group [`PG`], [`STAFF`] -> `Staff`) plus
/// `extra` top-level keys.
fn cfg(extra: &str) -> ProvisionerConfig {
    config(&format!(
        "provision_group = \"{PG}\"\ntarget_group_map = {{ \"{STAFF}\" = \"Staff\" }}\n{extra}"
    ))
}

/// Must be called inside the runtime (the pacers read tokio's clock).
fn engine(config: &ProvisionerConfig, target: &Arc<MemoryTarget>) -> Engine {
    Engine::new(config, target.clone())
}

// ------------------------------------------------------------ events

fn event(v: Value) -> Event {
    let body = v.to_string();
    crate::event::parse(body.as_bytes(), None)
        .unwrap_or_else(|e| panic!("test event does not parse: {e}: {body}"))
}

fn attrs_of(subject: &str) -> Value {
    let s = subject.to_lowercase();
    json!({"mail": [format!("{s}@example.edu")], "givenName": [format!("Given {s}")], "sn": ["Doe"]})
}

/// add / update / delete with attributes.
fn one(action: &str, group: &str, subject: &str) -> Event {
    event(
        json!({"action": action, "group": group, "subject": subject, "attributes": attrs_of(subject)}),
    )
}

/// add / update / delete without attributes.
fn bare(action: &str, group: &str, subject: &str) -> Event {
    event(json!({"action": action, "group": group, "subject": subject}))
}

/// membership_sync with attributes for every subject.
fn sync<S: AsRef<str>>(group: &str, subjects: impl IntoIterator<Item = S>) -> Event {
    let subjects: Vec<String> = subjects
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect();
    let mut attributes = Map::new();
    for s in &subjects {
        attributes.insert(s.clone(), attrs_of(s));
    }
    event(
        json!({"action": "membership_sync", "group": group, "subjects": subjects, "attributes": attributes}),
    )
}

// ------------------------------------------------------------ applying

/// Applies an event that must succeed; returns the outcome and the calls it
/// made, and checks the outcome counted them.
async fn ok(engine: &Engine, target: &MemoryTarget, event: &Event) -> (Outcome, Vec<String>) {
    let result = engine.apply(event).await;
    let calls = target.take_calls();
    match result {
        Ok(outcome) => {
            assert_eq!(
                outcome.api_calls as usize,
                calls.len(),
                "api_calls of {outcome:?} vs calls {calls:?}"
            );
            (outcome, calls)
        }
        Err(e) => panic!("apply of {event:?} failed: {e:?}; calls {calls:?}"),
    }
}

/// Applies an event that must be applied; returns the calls.
async fn applied(engine: &Engine, target: &MemoryTarget, event: &Event) -> Vec<String> {
    let (outcome, calls) = ok(engine, target, event).await;
    assert_eq!(outcome.status, OutcomeStatus::Applied, "{outcome:?}");
    calls
}

/// Applies an event that must be ignored; returns the calls.
async fn ignored(engine: &Engine, target: &MemoryTarget, event: &Event) -> Vec<String> {
    let (outcome, calls) = ok(engine, target, event).await;
    assert_eq!(outcome.status, OutcomeStatus::Ignored, "{outcome:?}");
    calls
}

/// Applies an event that must fail; returns the error and the calls.
async fn failed(
    engine: &Engine,
    target: &MemoryTarget,
    event: &Event,
) -> (ApplyError, Vec<String>) {
    let result = engine.apply(event).await;
    let calls = target.take_calls();
    match result {
        Ok(outcome) => panic!("apply of {event:?} succeeded: {outcome:?}; calls {calls:?}"),
        Err(e) => {
            assert_eq!(
                e.api_calls as usize,
                calls.len(),
                "api_calls of {e:?} vs calls {calls:?}"
            );
            (e, calls)
        }
    }
}

fn set<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.as_ref().to_string()).collect()
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(|s| s.as_ref().to_string()).collect()
}

/// Asserts consecutive instants are at least `min` apart.
fn assert_spaced(timed: &[(String, Instant)], min: Duration) {
    for w in timed.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap >= min,
            "`{}` came {gap:?} after `{}`, less than {min:?}",
            w[1].0,
            w[0].0
        );
    }
}

#[tokio::test]
async fn the_harness_records_calls_and_the_example_configuration_validates() {
    let c = cfg("");
    assert_eq!(c.provision_group.as_deref(), Some(PG));
    let t = MemoryTarget::new().with_accounts(["alice"]).arc();
    t.fail_once("lookup bob", Fail::Transient);
    let ctx = SubjectContext {
        subject: "bob".into(),
        match_value: "bob".into(),
        ..SubjectContext::default()
    };
    assert!(t.lookup_account(&ctx).await.is_err());
    assert_eq!(t.lookup_account(&ctx).await.ok(), Some(None));
    let alice = SubjectContext {
        match_value: "alice".into(),
        ..ctx.clone()
    };
    assert_eq!(
        t.lookup_account(&alice).await.ok().flatten(),
        Some(Found {
            api_id: "u-alice".into(),
            in_step: true
        }),
        "no attributes on either side"
    );
    assert_eq!(t.take_calls(), ["lookup bob", "lookup bob", "lookup alice"]);
    assert_eq!(t.account("alice").map(|a| a.0), Some("u-alice".to_string()));
}
