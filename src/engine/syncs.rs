//! Full reconciliations (`membership_sync`): of the provisioned accounts,
//! and of one target group's members. Both decide what to remove before
//! removing anything, so the mass-deprovision guard can refuse in time.
//! Both adopt what the sync matches to its subjects in one write, and with
//! `remove_only_owned` read what the worker owns once and leave alone (and
//! report) what they would remove but the worker does not own.

use std::collections::{HashMap, HashSet};

use super::owned::{owned, LEFT_ALONE};
use super::ownership::{Acquired, Owned};
use super::progress::SyncProgress;
use super::{Engine, Phase, Step, Tally};
use crate::config::GroupSyncStrategy;
use crate::event::{Attributes, Event, SyncSubject};
use crate::target::{
    ApiId, Desired, FailureClass, RemoteAccount, Removal, SubjectContext, TargetError,
};

/// Above this many unknown account IDs, a group sync lists the accounts
/// once instead of looking each one up.
const BULK_RESOLVE_THRESHOLD: usize = 20;

/// A sync's subjects with their match values. Only the match values are
/// computed ahead; a subject's full context (its attributes unpacked) is
/// built when its turn comes and dropped after, so a sync of 100,000
/// subjects never holds 100,000 contexts.
struct Matched<'e> {
    subjects: &'e [SyncSubject],
    /// Per subject; `None` for one without a match value (its failure is
    /// recorded).
    matches: Vec<Option<String>>,
    /// How many have none: any of them might own any remote account, so
    /// removing is then unsafe and skipped.
    unmatched: usize,
}

impl Matched<'_> {
    /// The subjects that have a match value, with it.
    fn iter(&self) -> impl Iterator<Item = (&SyncSubject, &str)> {
        self.subjects
            .iter()
            .zip(&self.matches)
            .filter_map(|(s, m)| Some((s, m.as_deref()?)))
    }
}

impl Engine {
    /// Every subject's match value, computed before anything is read or
    /// changed: what is wanted decides what would be removed, and the guard
    /// must refuse before anything changes.
    fn match_all<'e>(
        &self,
        subjects: &'e [SyncSubject],
        failures: &mut Vec<String>,
    ) -> Step<Matched<'e>> {
        let mut matches = Vec::with_capacity(subjects.len());
        let mut unmatched = 0usize;
        for s in subjects {
            match super::attributes_of(s).and_then(|a| self.match_value(&s.subject, &a)) {
                Ok(m) => matches.push(Some(m)),
                Err(e) => {
                    unmatched += 1;
                    matches.push(None);
                    collect(Err::<(), _>(e), &s.subject, failures)?;
                }
            }
        }
        Ok(Matched {
            subjects,
            matches,
            unmatched,
        })
    }

    /// Full account reconciliation: every listed subject provisioned, every
    /// other managed remote account deprovisioned. With `full_sync_updates =
    /// "changed"` the listing compares each account with its subject's
    /// desired state, and an account already so gets no update.
    pub(super) async fn sync_accounts(
        &self,
        tally: &mut Tally,
        event: &Event,
        subjects: &[SyncSubject],
    ) -> Step<String> {
        let mut failures = Vec::new();
        let matched = self.match_all(subjects, &mut failures)?;
        // Match value -> the subject that has it; `None` when several do, as
        // there is then no one desired state to compare with.
        let mut by_match: HashMap<&str, Option<&SyncSubject>> =
            HashMap::with_capacity(subjects.len());
        for (s, m) in matched.iter() {
            by_match
                .entry(m)
                .and_modify(|one| *one = None)
                .or_insert(Some(s));
        }
        // Subjects without attributes are never updated, so not compared.
        let desired = |m: &str| {
            let s = (*by_match.get(m)?)?;
            s.attributes.as_ref()?;
            self.sync_context(event, s, m.to_string()).ok()
        };
        let compare = self.compares().then_some(&desired as Desired<'_>);
        let remote = self
            .list_accounts_in(tally, Phase::Account, compare)
            .await?;

        let managed: Vec<&RemoteAccount> = remote
            .iter()
            .filter(|a| !self.is_unmanaged(&a.match_value))
            .collect();
        let mine = self.owned_accounts().await?;
        let unlisted: Vec<&RemoteAccount> = if matched.unmatched > 0 {
            Vec::new()
        } else {
            managed
                .iter()
                .copied()
                .filter(|a| !by_match.contains_key(a.match_value.as_str()))
                .collect()
        };
        let (doomed, left_alone): (Vec<&RemoteAccount>, Vec<&RemoteAccount>) = unlisted
            .into_iter()
            .partition(|a| !self.leaves_alone(mine.as_ref(), &a.api_id));
        // With remove_only_owned, what the sync may remove is what the worker
        // owns: the guard weighs the removals against that.
        let (removable, what) = match &mine {
            Some(mine) if self.remove_only_owned => (
                managed.iter().filter(|a| mine.contains(&a.api_id)).count(),
                "owned accounts",
            ),
            _ => (managed.len(), "accounts"),
        };
        self.guard_removals(event, what, doomed.len(), removable)?;
        // The listed subjects' accounts already there are theirs: adopted.
        if self.records() {
            let adopted: Vec<Owned> = managed
                .iter()
                .filter(|a| by_match.contains_key(a.match_value.as_str()))
                .filter(|a| !mine.as_ref().is_some_and(|m| m.contains(&a.api_id)))
                .map(|a| owned(&a.api_id, &a.match_value, Acquired::Adopted))
                .collect();
            self.own_accounts(adopted).await?;
        }
        let remote_by_match: HashMap<&str, &RemoteAccount> =
            remote.iter().map(|a| (a.match_value.as_str(), a)).collect();

        let (mut created, mut updated, mut unchanged, mut removed) = (0u32, 0u32, 0u32, 0u32);
        let mut progress = SyncProgress::new("accounts", subjects.len() + doomed.len());
        for (s, m) in matched.iter() {
            progress.advance(1);
            if self.is_unmanaged(m) {
                continue;
            }
            let remote = remote_by_match.get(m);
            if remote.is_some_and(|r| self.skips(r.in_step)) {
                unchanged += 1;
                continue;
            }
            let ctx = match self.sync_context(event, s, m.to_string()) {
                Ok(ctx) => ctx,
                Err(e) => {
                    collect(Err::<(), _>(e), &s.subject, &mut failures)?;
                    continue;
                }
            };
            let result = match remote {
                // A sync that names a subject without attributes says nothing
                // to change about it; an update would blank its fields.
                Some(_) if ctx.attributes.is_empty() => Ok(()),
                Some(r) => self
                    .update(tally, &ctx, &r.api_id)
                    .await
                    .map(|()| updated += 1),
                None => self.create(tally, &ctx).await.map(|_| created += 1),
            };
            collect(result, &ctx.subject, &mut failures)?;
        }
        progress.advance(matched.unmatched);
        for account in doomed {
            progress.advance(1);
            let ctx = SubjectContext {
                subject: account.match_value.clone(),
                match_value: account.match_value.clone(),
                attributes: Attributes::new(),
                actor: event.actor.clone(),
            };
            let result = self
                .call(
                    tally,
                    Phase::Account,
                    self.target.deprovision_account(&account.api_id, &ctx),
                )
                .await
                // The ID is from this sync's listing: absent means gone.
                .map(|_| {
                    self.accounts.remove(&account.match_value);
                    removed += 1;
                });
            if result.is_ok() {
                self.disown_account(&account.api_id).await?;
            }
            collect(result, &account.match_value, &mut failures)?;
        }
        let left_alone: Vec<String> = left_alone
            .iter()
            .map(|a| {
                self.report_left_alone(&format!("account {} (`{}`)", a.api_id, a.match_value));
                a.match_value.clone()
            })
            .collect();
        let mut detail = format!("account sync: {created} created, {updated} updated");
        if self.compares() {
            detail.push_str(&format!(", {unchanged} already up to date"));
        }
        detail.push_str(&format!(", {removed} deprovisioned"));
        push_left_alone(&mut detail, &left_alone);
        finish_sync(detail, failures)
    }

    /// Makes the remote group's members exactly the listed subjects (unmanaged
    /// accounts aside). Whether a member is unmanaged is read from the member
    /// listing itself: no call per member.
    pub(super) async fn sync_group(
        &self,
        tally: &mut Tally,
        event: &Event,
        remote_name: &str,
        subjects: &[SyncSubject],
    ) -> Step<String> {
        let (group, group_source) = self.resolve_group(tally, remote_name).await?;
        let mut failures = Vec::new();
        let matched = self.match_all(subjects, &mut failures)?;
        let wanted_matches: HashSet<&str> = matched.iter().map(|(_, m)| m).collect();
        let wanted: Vec<(&SyncSubject, &str)> = matched
            .iter()
            .filter(|(_, m)| !self.is_unmanaged(m))
            .collect();

        // Both strategies read the group before changing it: the members it
        // has before the sync decide what is removed, and they are what the
        // mass-deprovision guard counts against (after the adds of
        // add-member-first the group would look up to twice as large), so the
        // guard refuses before anything changes.
        let (mut group, _, members) = self
            .members_of(tally, remote_name, group, group_source)
            .await?;
        let mine = self.owned_members(remote_name).await?;
        let (unlisted, left_alone): (Vec<&RemoteAccount>, Vec<&RemoteAccount>) = members
            .iter()
            .filter(|m| {
                matched.unmatched == 0
                    && !wanted_matches.contains(m.match_value.as_str())
                    && !self.is_unmanaged(&m.match_value)
            })
            .partition(|m| !self.leaves_alone(mine.as_ref(), &m.api_id));
        let to_remove: Vec<(ApiId, SubjectContext)> = unlisted
            .into_iter()
            .map(|m| {
                let ctx = SubjectContext {
                    subject: m.match_value.clone(),
                    match_value: m.match_value.clone(),
                    attributes: Attributes::new(),
                    actor: event.actor.clone(),
                };
                (m.api_id.clone(), ctx)
            })
            .collect();
        let managed = members
            .iter()
            .filter(|m| !self.is_unmanaged(&m.match_value))
            .filter(|m| match &mine {
                Some(mine) if self.remove_only_owned => mine.contains(&m.api_id),
                _ => true,
            })
            .count();
        let what = if self.remove_only_owned {
            "owned members"
        } else {
            "members"
        };
        self.guard_removals(event, what, to_remove.len(), managed)?;
        // The listed subjects already in the group are its members by this
        // sync's word: adopted.
        if self.records() {
            let adopted: Vec<Owned> = members
                .iter()
                .filter(|m| wanted_matches.contains(m.match_value.as_str()))
                .filter(|m| !self.is_unmanaged(&m.match_value))
                .filter(|m| !mine.as_ref().is_some_and(|o| o.contains(&m.api_id)))
                .map(|m| owned(&m.api_id, &m.match_value, Acquired::Adopted))
                .collect();
            self.own_members(remote_name, adopted).await?;
        }

        // add-member-first adds every listed subject, present or not.
        let present: HashSet<&str> = match self.group_sync_strategy {
            GroupSyncStrategy::QueryFirst => {
                members.iter().map(|m| m.match_value.as_str()).collect()
            }
            GroupSyncStrategy::AddMemberFirst => HashSet::new(),
        };

        // Many unknown IDs: one account listing is cheaper than a look-up each
        // (1,000 members are ~10 pages, not 1,000 calls). Targets without a
        // listing fall back to look-ups.
        let unknown = wanted
            .iter()
            .filter(|(_, m)| !present.contains(m))
            .filter(|(_, m)| self.accounts.peek(m).is_none())
            .count();
        let listing: Option<HashMap<String, ApiId>> = if unknown > BULK_RESOLVE_THRESHOLD {
            match self.list_accounts_in(tally, Phase::Member, None).await {
                Ok(all) => Some(all.into_iter().map(|a| (a.match_value, a.api_id)).collect()),
                Err(e) if e.class == FailureClass::Permanent => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };

        // Adds go out in batches of the target's size, each sent as soon as it
        // is full (so with no batching, each add follows its look-up).
        let batch = self.target.member_batch_size().max(1);
        let mut missing = Vec::new();
        let mut to_add: Vec<(ApiId, SubjectContext)> = Vec::new();
        let mut added = 0usize;
        let mut progress = SyncProgress::new("members", wanted.len());
        for (i, (s, m)) in wanted.iter().enumerate() {
            progress.advance(1);
            if !present.contains(m) {
                match self.sync_context(event, s, m.to_string()) {
                    Ok(ctx) => {
                        let resolved = match (&listing, self.accounts.peek(m)) {
                            (_, Some(id)) => Ok(Some(id)),
                            (Some(all), None) => Ok(all.get(*m).cloned()),
                            (None, None) => {
                                self.resolve_account(tally, Phase::Member, &ctx, true).await
                            }
                        };
                        match resolved {
                            Ok(Some(id)) => to_add.push((id, ctx)),
                            Ok(None) => missing.push(m.to_string()),
                            Err(e) => collect(Err::<(), _>(e), &s.subject, &mut failures)?,
                        }
                    }
                    Err(e) => collect(Err::<(), _>(e), &s.subject, &mut failures)?,
                }
            }
            let last = i + 1 == wanted.len();
            if to_add.len() >= batch || (last && !to_add.is_empty()) {
                let chunk = std::mem::take(&mut to_add);
                let result = self
                    .call(
                        tally,
                        Phase::Member,
                        self.target.add_members(&group, &chunk),
                    )
                    .await
                    .map(|()| added += chunk.len());
                if result.is_ok() && self.records() {
                    let created: Vec<Owned> = chunk
                        .iter()
                        .map(|(id, ctx)| owned(id, &ctx.match_value, Acquired::Created))
                        .collect();
                    self.own_members(remote_name, created).await?;
                }
                collect(result, &batch_label(&chunk), &mut failures)?;
            }
        }
        let (mut removed, mut gone) = (0usize, 0usize);
        let mut group_rechecked = false;
        for chunk in to_remove.chunks(batch) {
            let mut result = self
                .call(
                    tally,
                    Phase::Member,
                    self.target.remove_members(&group, chunk),
                )
                .await;
            // A batch absent as a whole may mean the group itself was deleted
            // and created again since it was read: look it up, once per sync.
            if matches!(result, Ok(Removal::Absent)) && !group_rechecked {
                group_rechecked = true;
                match self.refresh_group(tally, remote_name).await {
                    Ok(Some(fresh)) if fresh.api_id != group.api_id => {
                        group = fresh;
                        result = self
                            .call(
                                tally,
                                Phase::Member,
                                self.target.remove_members(&group, chunk),
                            )
                            .await;
                    }
                    Ok(_) => {}
                    Err(e) => result = Err(e),
                }
            }
            let result = result.map(|removal| match removal {
                Removal::Removed => removed += chunk.len(),
                Removal::Absent => gone += chunk.len(),
            });
            if result.is_ok() && self.records() {
                let ids: Vec<ApiId> = chunk.iter().map(|(id, _)| id.clone()).collect();
                self.disown_members(remote_name, ids).await?;
            }
            collect(result, &batch_label(chunk), &mut failures)?;
        }
        let left_alone: Vec<String> = left_alone
            .iter()
            .map(|m| {
                self.report_left_alone(&format!(
                    "membership of {} (`{}`) in {remote_name}",
                    m.api_id, m.match_value
                ));
                m.match_value.clone()
            })
            .collect();
        let mut detail = format!("group sync {remote_name}: {added} added, {removed} removed");
        if gone > 0 {
            detail.push_str(&format!(", {gone} already gone"));
        }
        if !missing.is_empty() {
            detail.push_str(&format!(
                ", {} without an account on the target: {}",
                missing.len(),
                abbreviate(&missing)
            ));
        }
        push_left_alone(&mut detail, &left_alone);
        finish_sync(detail, failures)
    }
}

/// Keeps going past a permanent failure of one subject in a sync (recording
/// it); stops the sync at a transient one, so the whole event is retried.
pub(super) fn collect(result: Step<impl Sized>, who: &str, failures: &mut Vec<String>) -> Step<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.class == FailureClass::Permanent => {
            failures.push(format!("{who}: {e}"));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Adds to a sync's outcome what it left alone under `remove_only_owned`:
/// how many, and the first of them by match value.
fn push_left_alone(detail: &mut String, left_alone: &[String]) {
    if !left_alone.is_empty() {
        detail.push_str(&format!(
            ", {} {LEFT_ALONE}: {}",
            left_alone.len(),
            abbreviate(left_alone)
        ));
    }
}

/// Names the subjects of a batch in failure reports.
pub(super) fn batch_label(chunk: &[(ApiId, SubjectContext)]) -> String {
    match chunk {
        [(_, only)] => only.subject.clone(),
        _ => {
            let names: Vec<String> = chunk.iter().map(|(_, c)| c.subject.clone()).collect();
            format!("batch [{}]", abbreviate(&names))
        }
    }
}

pub(super) fn finish_sync(detail: String, failures: Vec<String>) -> Step<String> {
    if failures.is_empty() {
        Ok(detail)
    } else {
        Err(TargetError::permanent(format!(
            "{detail}; {} failed: {}",
            failures.len(),
            abbreviate(&failures)
        )))
    }
}

pub(super) fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > SHOWN {
        s.push_str(&format!("; and {} more", items.len() - SHOWN));
    }
    s
}
