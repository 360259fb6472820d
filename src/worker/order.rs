//! Per-subject ordering with concurrency: events start in arrival order
//! unless an earlier, unfinished event holds a conflicting lock. An add,
//! update or delete locks its subject exclusively and its group shared; a
//! membership_sync locks its group exclusively and each listed subject
//! shared. So events of different subjects run side by side, one subject's
//! events run strictly in order (a sync listing a subject included), and a
//! group's sync never overlaps a change to that group.

use std::collections::{HashMap, VecDeque};

use crate::event::{Event, Subjects};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    Subject(String),
    Group(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// The locks of one event.
pub type Locks = HashMap<LockKey, Mode>;

/// The locks an event needs.
pub fn locks_of(event: &Event) -> Locks {
    match &event.subjects {
        Subjects::One { subject, .. } => Locks::from([
            (LockKey::Subject(subject.clone()), Mode::Exclusive),
            (LockKey::Group(event.group.clone()), Mode::Shared),
        ]),
        Subjects::All { subjects, .. } => {
            let mut locks: Locks = subjects
                .iter()
                .map(|s| (LockKey::Subject(s.subject.clone()), Mode::Shared))
                .collect();
            locks.insert(LockKey::Group(event.group.clone()), Mode::Exclusive);
            locks
        }
    }
}

/// Whether two events may not run at the same time (nor pass each other).
pub fn conflicts(a: &Locks, b: &Locks) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().any(|(k, m)| {
        large
            .get(k)
            .is_some_and(|other| *m == Mode::Exclusive || *other == Mode::Exclusive)
    })
}

struct Entry<T> {
    ticket: u64,
    locks: Locks,
    /// `Some` while waiting; taken when started.
    item: Option<T>,
}

/// The queue of accepted, unfinished events of one provisioner.
pub struct OrderedQueue<T> {
    entries: VecDeque<Entry<T>>,
    next_ticket: u64,
    running: usize,
}

impl<T> Default for OrderedQueue<T> {
    fn default() -> Self {
        OrderedQueue {
            entries: VecDeque::new(),
            next_ticket: 0,
            running: 0,
        }
    }
}

impl<T> OrderedQueue<T> {
    /// Accepts an item; returns its ticket.
    pub fn push(&mut self, locks: Locks, item: T) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.entries.push_back(Entry {
            ticket,
            locks,
            item: Some(item),
        });
        ticket
    }

    /// Items that may start now, at most `limit - running` of them, oldest first.
    pub fn start_ready(&mut self, limit: usize) -> Vec<(u64, T)> {
        let mut started = Vec::new();
        for i in 0..self.entries.len() {
            if self.running >= limit {
                break;
            }
            if self.entries[i].item.is_none() {
                continue;
            }
            let blocked = (0..i).any(|j| conflicts(&self.entries[j].locks, &self.entries[i].locks));
            if blocked {
                continue;
            }
            if let Some(item) = self.entries[i].item.take() {
                self.running += 1;
                started.push((self.entries[i].ticket, item));
            }
        }
        started
    }

    /// Marks a started item finished, releasing its locks.
    pub fn finish(&mut self, ticket: u64) {
        if let Some(pos) = self.entries.iter().position(|e| e.ticket == ticket) {
            if let Some(e) = self.entries.remove(pos) {
                if e.item.is_none() {
                    self.running = self.running.saturating_sub(1);
                }
            }
        }
    }

    /// The items waiting behind the (started) item `ticket`, oldest first,
    /// each with its ticket and locks: where the item's run is taken from
    /// (`worker::coalesce`).
    pub fn waiting_after(&self, ticket: u64) -> impl Iterator<Item = (u64, &Locks, &T)> {
        let start = self
            .entries
            .iter()
            .position(|e| e.ticket == ticket)
            .map_or(self.entries.len(), |p| p + 1);
        self.entries
            .iter()
            .skip(start)
            .filter_map(|e| e.item.as_ref().map(|item| (e.ticket, &e.locks, item)))
    }

    /// Removes the waiting items of these tickets, oldest first: they join
    /// a run that has started. Safe for order: each of them conflicts with
    /// the run's first item, whose locks every later conflicting item still
    /// waits for.
    pub fn take(&mut self, tickets: &[u64]) -> Vec<T> {
        let mut taken = Vec::with_capacity(tickets.len());
        self.entries.retain_mut(|e| {
            if e.item.is_some() && tickets.contains(&e.ticket) {
                taken.extend(e.item.take());
                false
            } else {
                true
            }
        });
        taken
    }

    /// Finishes the started item `ticket` by putting `items` in its place,
    /// waiting, in order: a run that is to be applied one event at a time
    /// after all. Nothing conflicting came before the item, so the first of
    /// them may start at once, and everything that waited for the item now
    /// waits for them.
    pub fn replace(&mut self, ticket: u64, items: Vec<(Locks, T)>) {
        let Some(pos) = self.entries.iter().position(|e| e.ticket == ticket) else {
            return;
        };
        if let Some(e) = self.entries.remove(pos) {
            if e.item.is_none() {
                self.running = self.running.saturating_sub(1);
            }
        }
        for (i, (locks, item)) in items.into_iter().enumerate() {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.entries.insert(
                pos + i,
                Entry {
                    ticket,
                    locks,
                    item: Some(item),
                },
            );
        }
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// The items not started yet, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|e| e.item.as_ref())
    }

    /// Removes every item not started yet, oldest first. Safe for order:
    /// an item waits only behind earlier conflicting ones, so every running
    /// item comes before every waiting item of the same subject or group.
    pub fn take_waiting(&mut self) -> Vec<T> {
        let mut taken = Vec::new();
        self.entries.retain_mut(|e| match e.item.take() {
            Some(item) => {
                taken.push(item);
                false
            }
            None => true,
        });
        taken
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(subject: &str, group: &str) -> Locks {
        Locks::from([
            (LockKey::Subject(subject.into()), Mode::Exclusive),
            (LockKey::Group(group.into()), Mode::Shared),
        ])
    }

    fn sync(group: &str) -> Locks {
        Locks::from([(LockKey::Group(group.into()), Mode::Exclusive)])
    }

    fn sync_of(group: &str, subjects: &[&str]) -> Locks {
        let mut l = sync(group);
        for s in subjects {
            l.insert(LockKey::Subject((*s).into()), Mode::Shared);
        }
        l
    }

    #[test]
    fn a_sync_waits_for_earlier_events_of_its_subjects_and_syncs_share_subjects() {
        let mut q = OrderedQueue::default();
        q.push(one("a", "users"), "add a");
        q.push(sync_of("admins", &["a", "b"]), "sync admins");
        q.push(sync_of("staff", &["b"]), "sync staff");
        q.push(one("b", "users"), "add b");
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            started,
            vec!["add a", "sync staff"],
            "syncs share subject b; add b waits for both"
        );
        q.finish(0);
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["sync admins"]);
    }

    #[test]
    fn locks_of_events() {
        let e = crate::event::parse(
            br#"{"action":"membership_sync","group":"G","subjects":["X","y"]}"#,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let l = locks_of(&e);
        assert_eq!(l.get(&LockKey::Group("g".into())), Some(&Mode::Exclusive));
        assert_eq!(l.get(&LockKey::Subject("x".into())), Some(&Mode::Shared));
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn different_subjects_run_together_same_subject_waits() {
        let mut q = OrderedQueue::default();
        q.push(one("a", "g"), "a1");
        q.push(one("b", "g"), "b1");
        q.push(one("a", "g"), "a2");
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["a1", "b1"]);
        assert!(q.start_ready(8).is_empty(), "a2 waits for a1");
        q.finish(0);
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["a2"]);
    }

    #[test]
    fn a_group_sync_is_a_barrier_for_its_group_only() {
        let mut q = OrderedQueue::default();
        q.push(one("a", "g"), "a1");
        q.push(sync("g"), "sync");
        q.push(one("b", "g"), "b1");
        q.push(one("c", "h"), "c1");
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            started,
            vec!["a1", "c1"],
            "sync waits for a1; b1 waits for sync"
        );
        q.finish(0);
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["sync"]);
        q.finish(1);
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["b1"]);
    }

    #[test]
    fn taking_the_waiting_items_leaves_the_running_ones_and_their_locks() {
        let mut q = OrderedQueue::default();
        q.push(one("a", "g"), "a1");
        q.push(one("a", "g"), "a2");
        q.push(one("b", "g"), "b1");
        let started: Vec<_> = q.start_ready(1).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["a1"]);
        assert_eq!(q.waiting().copied().collect::<Vec<_>>(), vec!["a2", "b1"]);
        assert_eq!(q.take_waiting(), vec!["a2", "b1"]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.running(), 1);
        q.push(one("a", "g"), "a2 again");
        assert!(q.start_ready(8).is_empty(), "a1 still holds subject a");
        q.finish(0);
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["a2 again"]);
    }

    #[test]
    fn a_run_is_taken_from_behind_its_first_item_and_put_back_in_its_place() {
        let mut q = OrderedQueue::default();
        q.push(one("a", "g"), "a1");
        q.push(one("b", "g"), "b1");
        q.push(one("a", "g"), "a2");
        q.push(one("a", "g"), "a3");
        q.push(sync("g"), "sync");
        let started = q.start_ready(1);
        assert_eq!(started, vec![(0, "a1")]);
        let behind: Vec<_> = q.waiting_after(0).map(|(t, _, i)| (t, *i)).collect();
        assert_eq!(behind, vec![(1, "b1"), (2, "a2"), (3, "a3"), (4, "sync")]);
        assert_eq!(q.take(&[2, 3]), vec!["a2", "a3"]);
        assert_eq!(q.len(), 3);
        assert!(
            q.start_ready(8).iter().all(|(_, i)| *i == "b1"),
            "the sync still waits for the run"
        );
        q.replace(0, vec![(one("a", "g"), "a1"), (one("a", "g"), "a2")]);
        let order: Vec<_> = q.waiting().copied().collect();
        assert_eq!(order, vec!["a1", "a2", "sync"], "in the run's place");
        assert_eq!(q.running(), 1, "b1");
        let started: Vec<_> = q.start_ready(8).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["a1"], "a2 and the sync wait for a1");
    }

    #[test]
    fn concurrency_limit() {
        let mut q = OrderedQueue::default();
        for s in ["a", "b", "c", "d"] {
            q.push(one(s, "g"), s);
        }
        assert_eq!(q.start_ready(2).len(), 2);
        assert_eq!(q.running(), 2);
        assert!(q.start_ready(2).is_empty(), "limit reached");
        q.finish(0);
        let started: Vec<_> = q.start_ready(2).into_iter().map(|(_, i)| i).collect();
        assert_eq!(started, vec!["c"]);
        assert_eq!(q.len(), 3);
    }
}
