//! The events being applied: their tasks, and what each task's end means.

use std::collections::HashMap;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Run;
use crate::call_log::CallLog;
use crate::engine::retry::Attempts;
use crate::engine::ApplyError;
use crate::target::TargetError;

/// How an event's task ended.
#[derive(Debug)]
pub(super) enum Finished {
    Attempted(Attempts),
    /// Still unfinished at the hold limit, and cancelled there.
    Overran {
        first_transient_failure: Option<Instant>,
    },
}

/// A finished task: how it ended and the calls it made.
pub(super) type TaskResult = (u64, Finished, CallLog);

/// The events being applied: their tasks, and their deliveries kept here, in
/// the loop, so that even a task that panics leaves its deliveries settleable.
#[derive(Default)]
pub(super) struct InFlight {
    tasks: JoinSet<TaskResult>,
    deliveries: HashMap<u64, Run>,
    tickets: HashMap<tokio::task::Id, u64>,
}

type Joined = Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>;

/// A finished task with its run's deliveries.
pub(super) type Done = (u64, Run, Finished, CallLog);

impl InFlight {
    /// Runs a run's task; its deliveries stay here, in the loop.
    pub(super) fn spawn<F>(&mut self, ticket: u64, run: Run, task: F)
    where
        F: std::future::Future<Output = TaskResult> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.tickets.insert(handle.id(), ticket);
        self.deliveries.insert(ticket, run);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next finished event. A task that panicked becomes a permanent
    /// failure of its event (parked with the reason), not a stuck subject.
    pub(super) async fn next(&mut self) -> Option<Done> {
        loop {
            let joined = self.tasks.join_next_with_id().await?;
            if let Some(done) = self.claim(joined) {
                return Some(done);
            }
        }
    }

    /// A finished event, if one is finished already.
    pub(super) fn try_next(&mut self) -> Option<Done> {
        loop {
            let joined = self.tasks.try_join_next_with_id()?;
            if let Some(done) = self.claim(joined) {
                return Some(done);
            }
        }
    }

    fn claim(&mut self, joined: Joined) -> Option<Done> {
        let (id, finished, calls) = match joined {
            Ok((id, (_, finished, calls))) => (id, finished, calls),
            Err(e) if e.is_cancelled() => return None,
            Err(e) => {
                tracing::error!(error = %e, "an event task panicked; its event is parked");
                let finished = Finished::Attempted(Attempts {
                    result: Err(ApplyError {
                        error: TargetError::permanent(
                            "the worker failed internally while applying this event (a bug: please report it with this event)",
                        ),
                        api_calls: 0,
                    }),
                    attempts: 1,
                    api_calls: 0,
                    first_transient_failure: None,
                });
                (e.id(), finished, CallLog::default())
            }
        };
        let ticket = self.tickets.remove(&id)?;
        let run = self.deliveries.remove(&ticket)?;
        Some((ticket, run, finished, calls))
    }

    pub(super) fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}
