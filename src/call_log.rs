//! The target calls one event made, collected while its task runs: the HTTP
//! client writes each call here and the consumer reads the list when the
//! event is settled, for the journal and the metrics. A task-local, so that
//! nothing between them (engine, adapters) carries it around; outside a
//! collecting task, recording does nothing.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Calls kept per event in full; a sync can make 100,000 calls, of which
/// the journal wants the first few and the count.
pub const KEPT_CALLS: usize = 100;

/// One call to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Operation name, e.g. `accounts.lookup` or `scim.users.get`.
    pub operation: Arc<str>,
    pub method: String,
    /// The URL as configured (a template), never the concrete URL: subjects
    /// stay out, and calls of one operation group together.
    pub path_template: Arc<str>,
    /// `None` when no answer came (connect error, timeout).
    pub status: Option<u16>,
    pub duration: Duration,
}

/// What an event's calls were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLog {
    /// The first [`KEPT_CALLS`] calls.
    pub calls: Vec<CallRecord>,
    /// How many more were made.
    pub omitted: u64,
}

/// Something told of every call as it ends (the metrics).
pub trait CallObserver: Send + Sync {
    fn observe(&self, call: &CallRecord);
}

struct Scope {
    log: CallLog,
    observer: Option<Arc<dyn CallObserver>>,
}

tokio::task_local! {
    static SCOPE: RefCell<Scope>;
}

/// Runs `fut`, collecting the calls it makes (in this task), each also shown
/// to `observer` as it ends.
pub async fn collect<F: Future>(
    observer: Option<Arc<dyn CallObserver>>,
    fut: F,
) -> (F::Output, CallLog) {
    let scope = RefCell::new(Scope {
        log: CallLog::default(),
        observer,
    });
    SCOPE
        .scope(scope, async move {
            let out = fut.await;
            let log = SCOPE
                .try_with(|s| std::mem::take(&mut s.borrow_mut().log))
                .unwrap_or_default();
            (out, log)
        })
        .await
}

/// Records a call, if the current task collects them.
pub fn record(call: CallRecord) {
    let _ = SCOPE.try_with(|s| {
        let mut s = s.borrow_mut();
        if let Some(o) = &s.observer {
            o.observe(&call);
        }
        if s.log.calls.len() < KEPT_CALLS {
            s.log.calls.push(call);
        } else {
            s.log.omitted += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn call(n: usize) -> CallRecord {
        CallRecord {
            operation: Arc::from("accounts.lookup"),
            method: "GET".into(),
            path_template: Arc::from("/users/{{ match }}"),
            status: Some(200),
            duration: Duration::from_millis(n as u64),
        }
    }

    struct Count(AtomicUsize);
    impl CallObserver for Count {
        fn observe(&self, _: &CallRecord) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn calls_are_collected_per_task_bounded_and_all_observed() {
        let seen = Arc::new(Count(AtomicUsize::new(0)));
        let ((), log) = collect(Some(seen.clone()), async {
            for n in 0..KEPT_CALLS + 5 {
                record(call(n));
            }
        })
        .await;
        assert_eq!(log.calls.len(), KEPT_CALLS);
        assert_eq!(log.calls[0], call(0));
        assert_eq!(log.omitted, 5);
        assert_eq!(seen.0.load(Ordering::Relaxed), KEPT_CALLS + 5);
        // Outside a collecting task, nothing happens (and nothing panics).
        record(call(0));
        let ((), other) = collect(None, async {}).await;
        assert_eq!(other, CallLog::default());
    }
}
