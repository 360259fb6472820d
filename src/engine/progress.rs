//! Progress of a long sync in the log: done/total, rate and time left, at a
//! steady pace (not per subject), so that an operator watching a 100,000
//! subject reconciliation sees it move.

use std::time::Duration;

use tokio::time::Instant;

/// How often a sync says how far it is.
const EVERY: Duration = Duration::from_secs(10);

pub struct SyncProgress {
    what: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl SyncProgress {
    pub fn new(what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        SyncProgress {
            what,
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    /// `n` more done; logs when the last line is older than the pace.
    pub fn advance(&mut self, n: usize) {
        self.done += n;
        if self.last.elapsed() < EVERY {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / elapsed;
        let left = self.total.saturating_sub(self.done);
        let eta_s = if rate > 0.0 {
            (left as f64 / rate).round() as u64
        } else {
            0
        };
        tracing::info!(
            sync = self.what,
            done = self.done,
            total = self.total,
            per_s = (rate * 10.0).round() / 10.0,
            eta_s,
            "sync progress"
        );
    }
}
