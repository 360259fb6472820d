//! Backlog coalescing: when a subject's event is about to start and more
//! events of the same subject and group already wait behind it, one effect,
//! the last event's, stands for the whole run. Add, update, update becomes
//! one provisioning with the last attributes; in a mapped group, add,
//! delete, add becomes one add. The consumer still holds every delivery of
//! the run and acknowledges each only after that effect (docs/events.md,
//! "Coalescing").
//!
//! Which events may join is decided here, as a pure function over the
//! waiting events, so that the property test of the engine
//! (src/engine/tests/coalescing.rs) checks the very rule the consumer uses.
//! The run is cut so that the result equals applying the events one by one:
//!
//! - only add/update/delete of one subject and one managed group join;
//!   a membership_sync never does; in the provision group, deletes merge
//!   only with deletes, adds and updates only with adds and updates;
//! - the run ends at the first waiting event that shares a lock with it
//!   and cannot join: an event of the subject in another group, a
//!   membership_sync of the group (it may remove the subject) or one that
//!   lists the subject; events of other subjects are passed over, since
//!   the order between them and the run does not matter;
//! - a run does not end with an event without attributes when an earlier
//!   event of the run has some: such an event takes its match value from
//!   what the worker saw last, which one by one would be the earlier event
//!   of the run, but coalesced may be nothing at all (a worker that just
//!   started on a backlog), and the run would fail.
//!
//! A run that fails permanently all the same (its last event refused) is
//! applied again one event at a time by the consumer, so that each event
//! ends as it would have alone.
//!
//! Two assumptions make the last event's effect equal to the sequence's
//! (both in docs/events.md): an update sets every field a create would set
//! from the attributes, and a subject's match value stays the same across
//! its events (a `match` template reading an attribute that changes, such
//! as a mail, breaks it; `coalesce = false` turns coalescing off).

use std::collections::BTreeSet;

use super::order::{conflicts, locks_of, Locks, OrderedQueue};
use crate::config::ProvisionerConfig;
use crate::event::{Action, Event, Subjects};

/// What a provisioner may coalesce.
#[derive(Debug, Clone)]
pub struct Coalescing {
    enabled: bool,
    provision_group: Option<String>,
    /// The provision group and the mapped groups: events of any other group
    /// are ignored one by one, at no cost, and stay out of runs.
    managed: BTreeSet<String>,
}

impl Coalescing {
    pub fn of(config: &ProvisionerConfig) -> Self {
        Coalescing {
            enabled: config.coalesce,
            provision_group: config.provision_group.clone(),
            managed: config
                .provision_group
                .iter()
                .chain(config.target_group_map.keys())
                .cloned()
                .collect(),
        }
    }

    /// Takes the run of the item `ticket`, which has just started, out of
    /// `queue`: the waiting items that [`Coalescing::run`] lets join it,
    /// oldest first (none: it is applied alone). Items for which `alone`
    /// holds neither start a run nor join one. The consumer and the property
    /// test of the engine both take runs through here.
    pub fn take_run<T>(
        &self,
        queue: &mut OrderedQueue<T>,
        ticket: u64,
        first: &T,
        event: impl Fn(&T) -> &Event,
        alone: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        if !self.enabled || alone(first) {
            return Vec::new();
        }
        let behind: Vec<(u64, &Locks, &T)> = queue
            .waiting_after(ticket)
            .filter(|(_, _, item)| !alone(item))
            .collect();
        let chosen: Vec<u64> = self
            .run(
                event(first),
                behind.iter().map(|(_, l, item)| (*l, event(item))),
            )
            .into_iter()
            .filter_map(|i| behind.get(i).map(|(t, _, _)| *t))
            .collect();
        if chosen.is_empty() {
            return Vec::new();
        }
        queue.take(&chosen)
    }

    /// Whether `event` can be the start of a run, or a member of one.
    fn mergeable(&self, event: &Event) -> bool {
        matches!(event.action, Action::Add | Action::Update | Action::Delete)
            && matches!(event.subjects, Subjects::One { .. })
            && self.managed.contains(&event.group)
    }

    /// The run that `first` starts: which of `later` (the events waiting
    /// behind it, oldest first, each with its locks) are coalesced with it,
    /// as indices into `later`, in order. The last one named is the event
    /// whose effect is applied; none means `first` is applied alone.
    pub fn run<'a>(
        &self,
        first: &Event,
        later: impl IntoIterator<Item = (&'a Locks, &'a Event)>,
    ) -> Vec<usize> {
        if !self.enabled || !self.mergeable(first) {
            return Vec::new();
        }
        let own = locks_of(first);
        let mut run = Vec::new();
        // Whether the run so far has an event with attributes.
        let mut attributed = has_attributes(first);
        // The run's length at its last event with attributes (or at `first`).
        let mut cut = 0;
        for (i, (locks, event)) in later.into_iter().enumerate() {
            if !conflicts(&own, locks) {
                continue;
            }
            if !self.mergeable(event) || event.group != first.group || !self.same_kind(first, event)
            {
                break;
            }
            run.push(i);
            if has_attributes(event) {
                attributed = true;
                cut = run.len();
            } else if !attributed {
                cut = run.len();
            }
        }
        run.truncate(cut);
        run
    }
}

impl Coalescing {
    /// In the provision group, a delete and an add or update do not merge
    /// either way. Deprovisioning may disable the account rather than delete
    /// it (and it drops the account's memberships): a delete then an add
    /// leaves an account without its memberships, an add then a delete a
    /// disabled account, neither of which the last event alone gives.
    /// Membership changes are plain set operations and merge in any order.
    fn same_kind(&self, first: &Event, event: &Event) -> bool {
        self.provision_group.as_deref() != Some(first.group.as_str())
            || (first.action == Action::Delete) == (event.action == Action::Delete)
    }
}

fn has_attributes(event: &Event) -> bool {
    match &event.subjects {
        Subjects::One { attributes, .. } => !attributes.is_empty(),
        Subjects::All { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const USERS: &str = "app:example:users";
    const STAFF: &str = "app:example:staff";

    /// The example provisioner (`USERS` provisions, `STAFF` maps to `Staff`).
    fn coalescing(enabled: bool) -> Coalescing {
        const EXAMPLE: &str = include_str!("../../provisioners/example.toml");
        let text = format!("coalesce = {enabled}\n{EXAMPLE}");
        let mut errors = Vec::new();
        match crate::config::parse_provisioner(Path::new("t.toml"), &text, &mut errors) {
            Some(c) if errors.is_empty() => Coalescing::of(&c),
            _ => panic!("test configuration does not validate: {errors:#?}"),
        }
    }

    fn event(body: serde_json::Value) -> Event {
        crate::event::parse(body.to_string().as_bytes(), None)
            .unwrap_or_else(|e| panic!("test event: {e}"))
    }

    /// `"update users a"`, `"delete staff b -"` (`-`: no attributes),
    /// `"sync staff a b"`.
    fn ev(spec: &str) -> Event {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let group = match words[1] {
            "users" => USERS,
            "staff" => STAFF,
            other => other,
        };
        if words[0] == "sync" {
            return event(serde_json::json!({
                "action": "membership_sync", "group": group, "subjects": &words[2..]
            }));
        }
        let mut body = serde_json::json!({"action": words[0], "group": group, "subject": words[2]});
        if words.get(3) != Some(&"-") {
            body["attributes"] = serde_json::json!({"mail": [format!("{}@x", words[2])]});
        }
        event(body)
    }

    /// The run of the first spec over the rest, as indices into the rest.
    fn run_of(c: &Coalescing, specs: &[&str]) -> Vec<usize> {
        let events: Vec<Event> = specs.iter().map(|s| ev(s)).collect();
        let locks: Vec<Locks> = events.iter().map(locks_of).collect();
        c.run(&events[0], locks[1..].iter().zip(&events[1..]))
    }

    #[test]
    fn a_subjects_adjacent_events_of_one_group_merge_past_other_subjects() {
        let c = coalescing(true);
        let specs = [
            "add users a",
            "update users a",
            "update users b",
            "add staff b",
            "update users a",
            "add users a",
        ];
        assert_eq!(run_of(&c, &specs), [0, 3, 4]);
        assert_eq!(
            run_of(&c, &["add staff a", "delete staff a -", "add staff a"]),
            [0, 1],
            "mapped groups merge adds and deletes, with or without attributes"
        );
        assert_eq!(
            run_of(&c, &["delete users a", "delete users a", "add users b"]),
            [0],
            "deletes merge with deletes"
        );
    }

    #[test]
    fn in_the_provision_group_a_delete_and_an_add_or_update_never_merge() {
        let c = coalescing(true);
        assert_eq!(
            run_of(&c, &["add users a", "update users a", "delete users a"]),
            [0],
            "the add and the update merge; the delete comes on its own"
        );
        assert_eq!(
            run_of(&c, &["delete users a", "add users a"]),
            Vec::<usize>::new(),
            "a delete then an add is a new account, without the old memberships"
        );
    }

    #[test]
    fn another_group_of_the_subject_ends_the_run() {
        let c = coalescing(true);
        let specs = [
            "update users a",
            "update users a",
            "add staff a",
            "update users a",
        ];
        assert_eq!(run_of(&c, &specs), [0], "the staff event comes between");
        assert_eq!(
            run_of(&c, &["add staff a", "add users a", "delete staff a"]),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_sync_of_the_group_or_listing_the_subject_ends_the_run() {
        let c = coalescing(true);
        assert_eq!(
            run_of(
                &c,
                &[
                    "add staff a",
                    "sync staff b",
                    "delete staff a",
                    "add staff a"
                ]
            ),
            Vec::<usize>::new(),
            "a sync of the group removes `a`, whether it lists it or not"
        );
        assert_eq!(
            run_of(&c, &["update users a", "sync staff a", "update users a"]),
            Vec::<usize>::new(),
            "a sync of another group that lists `a`"
        );
        assert_eq!(
            run_of(&c, &["update users a", "sync staff b", "update users a"]),
            [1],
            "a sync of another group not listing `a` is passed over"
        );
    }

    #[test]
    fn different_subjects_never_merge() {
        let c = coalescing(true);
        assert_eq!(
            run_of(&c, &["update users a", "update users b", "update users c"]),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn syncs_unmanaged_groups_and_a_disabled_provisioner_never_merge() {
        assert_eq!(
            run_of(&coalescing(true), &["sync staff a", "sync staff a"]),
            Vec::<usize>::new()
        );
        assert_eq!(
            run_of(&coalescing(true), &["add other a", "add other a"]),
            Vec::<usize>::new()
        );
        assert_eq!(
            run_of(&coalescing(false), &["add users a", "add users a"]),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_run_does_not_end_on_an_event_without_attributes_after_one_with() {
        let c = coalescing(true);
        assert_eq!(
            run_of(&c, &["add staff a", "add staff a", "delete staff a -"]),
            [0],
            "the delete would need the match value the adds gave"
        );
        assert_eq!(
            run_of(
                &c,
                &[
                    "add staff a",
                    "delete staff a -",
                    "add staff a -",
                    "add staff a"
                ]
            ),
            [0, 1, 2],
            "events without attributes inside a run are fine"
        );
        assert_eq!(
            run_of(&c, &["delete staff a -", "add staff a -", "add staff a"]),
            [0, 1],
            "a run without attributes before one with them"
        );
        assert_eq!(
            run_of(&c, &["delete users a -", "delete users a -"]),
            [0],
            "a run without any attributes merges"
        );
    }
}
