//! Backlog coalescing (`worker::coalesce`) leaves the target as applying
//! every event one by one would: a property over random event sequences of
//! a few subjects, in the provision group, a mapped group and an unmanaged
//! one, with random attributes (or none), and now and then a
//! membership_sync. The coalesced side takes its runs through the very
//! function the consumer uses, from an [`OrderedQueue`] fed through a
//! window as the broker's prefetch would, and, like the consumer, applies a
//! run that fails permanently one event at a time.
//!
//! The match value comes from `mail`, which stays the same per subject: the
//! assumption coalescing documents. Events without attributes then need the
//! match value an earlier event gave, and an event whose attributes lack
//! `mail` fails for good, alone or as the last of a run: that is where the
//! run must be applied one event at a time after all.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::worker::coalesce::Coalescing;
use crate::worker::order::{locks_of, OrderedQueue};

const SUBJECTS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// The provisioner: matched on mail, `s3` unmanaged, no wait for an
/// account that a group event finds missing.
fn config() -> ProvisionerConfig {
    cfg("unmanaged_logins = [\"s3@example.edu\"]\ntarget_group_retry_delay = 0")
}

fn target() -> Arc<MemoryTarget> {
    MemoryTarget::new()
        .matching_on_mail()
        .with_group("Staff", Vec::<String>::new())
        .arc()
}

/// One generated event.
#[derive(Debug, Clone)]
enum Spec {
    One {
        action: &'static str,
        group: &'static str,
        subject: usize,
        attributes: Attrs,
    },
    Sync {
        group: &'static str,
        /// Which of [`SUBJECTS`] it lists.
        listed: u8,
    },
}

/// The attributes of a generated event.
#[derive(Debug, Clone, Copy)]
enum Attrs {
    None,
    /// `mail` and this givenName.
    Given(u8),
    /// A givenName but no `mail`: no match value, a permanent failure.
    NoMail,
}

fn attributes(subject: &str, given: u8) -> Value {
    json!({"mail": [format!("{subject}@example.edu")], "givenName": [format!("g{given}")], "sn": ["Doe"]})
}

impl Spec {
    fn event(&self, id: usize) -> Event {
        match self {
            Spec::One {
                action,
                group,
                subject,
                attributes: attrs,
            } => {
                let subject = SUBJECTS[*subject];
                let mut body = json!({"id": format!("e{id}"), "action": action, "group": group, "subject": subject});
                match attrs {
                    Attrs::None => {}
                    Attrs::Given(g) => body["attributes"] = attributes(subject, *g),
                    Attrs::NoMail => body["attributes"] = json!({"givenName": ["no mail"]}),
                }
                event(body)
            }
            Spec::Sync { group, listed } => {
                let subjects: Vec<&str> = SUBJECTS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| listed & (1 << i) != 0)
                    .map(|(_, s)| *s)
                    .collect();
                let mut attrs = Map::new();
                for s in &subjects {
                    attrs.insert((*s).to_string(), attributes(s, 9));
                }
                event(
                    json!({"id": format!("e{id}"), "action": "membership_sync", "group": group,
                    "subjects": subjects, "attributes": attrs}),
                )
            }
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let one = (
        prop::sample::select(vec!["add", "update", "delete"]),
        prop_oneof![6 => Just(PG), 5 => Just(STAFF), 1 => Just(OTHER)],
        0..SUBJECTS.len(),
        prop_oneof![
            4 => Just(Attrs::None),
            12 => (0u8..4).prop_map(Attrs::Given),
            1 => Just(Attrs::NoMail),
        ],
    )
        .prop_map(|(action, group, subject, attributes)| Spec::One {
            action,
            group,
            subject,
            attributes,
        });
    let sync = (prop_oneof![Just(PG), Just(STAFF)], 0u8..16)
        .prop_map(|(group, listed)| Spec::Sync { group, listed });
    prop_oneof![12 => one, 1 => sync]
}

/// The target's state by match value: accounts with their attributes, and
/// each group's members.
type Final = (
    BTreeMap<String, Attributes>,
    BTreeMap<String, BTreeSet<String>>,
);

fn final_state(t: &MemoryTarget) -> Final {
    let (accounts, groups) = t.snapshot();
    let name = |id: &ApiId| {
        accounts
            .get(id)
            .map_or_else(|| format!("<dangling {id}>"), |a| a.match_value.clone())
    };
    let members = groups
        .iter()
        .map(|(g, group)| (g.clone(), group.members.iter().map(name).collect()))
        .collect();
    let accounts = accounts
        .values()
        .map(|a| (a.match_value.clone(), a.attributes.clone()))
        .collect();
    (accounts, members)
}

/// Every event applied on its own, in order; failures leave the target as
/// it was, as a parked event does.
async fn one_by_one(events: &[Event]) -> Final {
    let t = target();
    let e = engine(&config(), &t);
    for event in events {
        let _ = e.apply(event).await;
    }
    final_state(&t)
}

/// A waiting event; `alone` as in the consumer: in a run that failed.
struct Item {
    event: Event,
    alone: bool,
}

/// What [`coalesced`] did: the target's state, how many events were
/// coalesced into another, and how many were applied.
struct Coalesced {
    state: Final,
    merged: usize,
    applied: usize,
}

/// Events arrive through a window of `window` held events and start
/// `concurrency` at a time, as in the consumer; each started event takes
/// its run, and only the run's last event is applied.
async fn coalesced(events: &[Event], window: usize, concurrency: usize) -> Coalesced {
    let t = target();
    let config = config();
    let e = engine(&config, &t);
    let coalescing = Coalescing::of(&config);
    let mut queue: OrderedQueue<Item> = OrderedQueue::default();
    let mut arriving = events.iter();
    let mut merged = 0;
    let mut applied = 0;
    loop {
        while queue.len() < window {
            let Some(event) = arriving.next() else { break };
            let item = Item {
                event: event.clone(),
                alone: false,
            };
            queue.push(locks_of(&item.event), item);
        }
        let started = queue.start_ready(concurrency);
        if started.is_empty() {
            assert!(queue.is_empty(), "nothing runs, yet events wait");
            break;
        }
        for (ticket, first) in started {
            let run = coalescing.take_run(&mut queue, ticket, &first, |i| &i.event, |i| i.alone);
            let last = run.last().unwrap_or(&first);
            applied += 1;
            match e.apply(&last.event).await {
                Err(error) if !error.is_transient() && !run.is_empty() => {
                    let items = std::iter::once(first)
                        .chain(run)
                        .map(|item| {
                            let locks = locks_of(&item.event);
                            (
                                locks,
                                Item {
                                    alone: true,
                                    ..item
                                },
                            )
                        })
                        .collect();
                    queue.replace(ticket, items);
                }
                _ => {
                    merged += run.len();
                    queue.finish(ticket);
                }
            }
        }
    }
    Coalesced {
        state: final_state(&t),
        merged,
        applied,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // Paused time: the engine's waits (none here, but pacing reads the
    // clock) cost nothing.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(f)
}

#[test]
fn coalesced_application_leaves_the_target_as_sequential_application() {
    let merged = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = (
        prop::collection::vec(spec(), 0..40),
        1usize..=16,
        1usize..=3,
    );
    let result = runner.run(&cases, |(mut specs, window, concurrency)| {
        // Two syncs of different groups listing the same subject hold only
        // shared locks on it, so the queue may run them in either order
        // (an account sync creating an account, a group sync adding it):
        // not a matter of coalescing. Where events run side by side, the
        // syncs are kept to one group.
        if concurrency > 1 {
            specs.retain(|s| !matches!(s, Spec::Sync { group, .. } if *group == PG));
        }
        let events: Vec<Event> = specs.iter().enumerate().map(|(i, s)| s.event(i)).collect();
        let (want, got) = block_on(async {
            (
                one_by_one(&events).await,
                coalesced(&events, window, concurrency).await,
            )
        });
        merged.fetch_add(got.merged, Ordering::Relaxed);
        prop_assert_eq!(got.state, want);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        merged.load(Ordering::Relaxed) > 100,
        "the cases should coalesce often; they coalesced {} events",
        merged.load(Ordering::Relaxed)
    );
}

#[test]
fn a_backlog_of_one_subject_is_applied_once_per_run() {
    let specs: Vec<Spec> = ["add", "update", "update", "delete", "add", "update"]
        .iter()
        .enumerate()
        .map(|(i, action)| Spec::One {
            action,
            group: PG,
            subject: 0,
            attributes: Attrs::Given(i as u8),
        })
        .collect();
    let events: Vec<Event> = specs.iter().enumerate().map(|(i, s)| s.event(i)).collect();
    let got = block_on(coalesced(&events, 64, 1));
    assert_eq!(
        (got.applied, got.merged),
        (3, 3),
        "add, update, update as one; the delete alone; add, update as one"
    );
    let (accounts, _) = &got.state;
    assert_eq!(
        accounts
            .get("s0@example.edu")
            .and_then(|a| a.get("givenName")),
        Some(&vec!["g5".to_string()])
    );
}
