//! The writer task, which alone inserts rows, and the retention task.
//!
//! The writer takes rows off the channel into a batch and writes the batch
//! when it is full or when the flush interval ticks, one transaction per
//! batch. A batch the store refuses is dropped and counted, and the writer
//! backs off (doubling, up to [`MAX_BACKOFF`]) before the next one; meanwhile
//! rows wait on the channel, and once it is full `record` drops new ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::store::{Db, NewRow};
use super::{now_ms, Entry, JournalSettings};

/// Longest pause after failed batches before the writer tries again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// At most one warning of each kind per this period, so that a store down
/// for an hour does not flood the logs.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Requests from the handles to the writer.
pub(super) enum Control {
    /// Write what is queued, then answer.
    Flush(oneshot::Sender<()>),
    /// Write what is queued, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// Counts shared by the handles and the writer.
#[derive(Default)]
pub(super) struct Counters {
    /// Rows dropped: channel full, journal closed, refused by the store.
    pub(super) dropped: AtomicU64,
    /// Rows the writer has taken off the channel and not yet written or
    /// dropped: what is lost if the writer is aborted.
    pub(super) held: AtomicU64,
    /// Retention passes done, successful or not.
    pub(super) retention_passes: AtomicU64,
}

pub(super) struct Writer {
    db: Db,
    rows: mpsc::Receiver<Entry>,
    control: mpsc::Receiver<Control>,
    counters: Arc<Counters>,
    batch_size: usize,
    flush_interval: Duration,
    /// Failed batches in a row.
    failures: u32,
    /// No writes before this instant (backing off).
    resume_at: Option<Instant>,
    /// When a write failure was last logged, and how many failed batches
    /// went unlogged since.
    failure_warned_at: Option<Instant>,
    failures_unlogged: u64,
    /// The dropped count at the last warning about it, and when.
    drops_reported: u64,
    drops_reported_at: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        db: Db,
        settings: &JournalSettings,
        rows: mpsc::Receiver<Entry>,
        control: mpsc::Receiver<Control>,
        counters: Arc<Counters>,
    ) -> Writer {
        Writer {
            db,
            rows,
            control,
            counters,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
            failures: 0,
            resume_at: None,
            failure_warned_at: None,
            failures_unlogged: 0,
            drops_reported: 0,
            drops_reported_at: None,
        }
    }

    /// Runs until closed, or until every handle is gone; either way writes
    /// what is queued first.
    pub(super) async fn run(mut self) {
        let mut batch: Vec<Entry> = Vec::with_capacity(self.batch_size);
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            let resume_at = self.resume_at.filter(|t| *t > now);
            let paused = resume_at.is_some();
            tokio::select! {
                // Requests first, so that close is prompt under load.
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Flush(done)) => {
                        self.drain(&mut batch, false).await;
                        let _ = done.send(());
                    }
                    Some(Control::Close(done)) => {
                        self.rows.close();
                        self.drain(&mut batch, true).await;
                        let _ = done.send(());
                        break;
                    }
                    None => {
                        self.rows.close();
                        self.drain(&mut batch, true).await;
                        break;
                    }
                },
                row = self.rows.recv(), if !paused => match row {
                    Some(entry) => {
                        self.take(&mut batch, entry);
                        if batch.len() >= self.batch_size {
                            self.write(&mut batch).await;
                        }
                    }
                    None => {
                        self.drain(&mut batch, true).await;
                        break;
                    }
                },
                _ = tick.tick() => {
                    if !paused && !batch.is_empty() {
                        self.write(&mut batch).await;
                    }
                    self.report_drops(false);
                }
                _ = sleep_until_opt(resume_at) => {}
            }
        }
        self.report_drops(true);
    }

    fn take(&self, batch: &mut Vec<Entry>, entry: Entry) {
        self.counters.held.fetch_add(1, Ordering::Relaxed);
        batch.push(entry);
    }

    /// Writes the batch and what was queued when called, batch by batch,
    /// whether or not the writer is backing off: someone is waiting. When
    /// `closing`, rows left after a refused batch are counted as dropped
    /// rather than tried one batch at a time against a store that refuses.
    async fn drain(&mut self, batch: &mut Vec<Entry>, closing: bool) {
        // Bounded by what is queued now, so that a steady stream of new rows
        // cannot keep a flush from answering.
        let mut budget = self.rows.len();
        loop {
            while batch.len() < self.batch_size && budget > 0 {
                budget -= 1;
                match self.rows.try_recv() {
                    Ok(entry) => self.take(batch, entry),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            if !self.write(batch).await {
                break;
            }
        }
        if closing {
            let mut rest = 0u64;
            while self.rows.try_recv().is_ok() {
                rest += 1;
            }
            self.counters.dropped.fetch_add(rest, Ordering::Relaxed);
        }
    }

    /// Writes and empties the batch; false when the store refused it (its
    /// rows are then counted as dropped and the writer backs off).
    async fn write(&mut self, batch: &mut Vec<Entry>) -> bool {
        let count = batch.len() as u64;
        let rows: Vec<NewRow> = batch.drain(..).map(NewRow::from_entry).collect();
        let result = self.db.insert(&rows).await;
        self.counters.held.fetch_sub(count, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(
                        failed_batches = self.failures,
                        "journal store accepts writes again"
                    );
                }
                self.failures = 0;
                self.resume_at = None;
                true
            }
            Err(e) => {
                self.counters.dropped.fetch_add(count, Ordering::Relaxed);
                self.failures = self.failures.saturating_add(1);
                let backoff = self
                    .flush_interval
                    .saturating_mul(1 << self.failures.min(16))
                    .min(MAX_BACKOFF);
                self.resume_at = Some(Instant::now() + backoff);
                self.failures_unlogged += 1;
                let due = self
                    .failure_warned_at
                    .is_none_or(|at| at.elapsed() >= WARN_EVERY);
                if due {
                    tracing::warn!(
                        error = %e,
                        rows = count,
                        failed_batches = self.failures_unlogged,
                        retry_in_ms = backoff.as_millis() as u64,
                        "journal store refused a batch; its rows are dropped"
                    );
                    self.failure_warned_at = Some(Instant::now());
                    self.failures_unlogged = 0;
                }
                false
            }
        }
    }

    /// Warns about rows dropped since the last warning, at most once per
    /// [`WARN_EVERY`] unless `now`.
    fn report_drops(&mut self, now: bool) {
        let total = self.counters.dropped.load(Ordering::Relaxed);
        if total == self.drops_reported {
            return;
        }
        let due = now
            || self
                .drops_reported_at
                .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                dropped = total - self.drops_reported,
                dropped_total = total,
                "journal dropped rows (channel full, store refused, or closed)"
            );
            self.drops_reported = total;
            self.drops_reported_at = Some(Instant::now());
        }
    }
}

impl Drop for Writer {
    // Also runs when the task is aborted (close past its deadline): rows it
    // held or left queued will never be written.
    fn drop(&mut self) {
        self.rows.close();
        let mut lost = self.counters.held.swap(0, Ordering::Relaxed);
        while self.rows.try_recv().is_ok() {
            lost += 1;
        }
        if lost > 0 {
            self.counters.dropped.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Deletes old rows at start, then every `retention_interval`, until `stop`.
pub(super) async fn retention(
    db: Db,
    settings: JournalSettings,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.retention_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // `Journal::open` ran the first pass; the interval's first tick is now.
    tick.tick().await;
    let mut warned_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pass = db.prune(now_ms(), settings.max_age, settings.max_rows);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = pass => result,
        };
        counters.retention_passes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(pruned) if pruned.by_age + pruned.by_count > 0 => {
                tracing::debug!(
                    by_age = pruned.by_age,
                    by_count = pruned.by_count,
                    "journal retention deleted rows"
                );
            }
            Ok(_) => {}
            Err(e) => {
                if warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "journal retention failed; it runs again later");
                    warned_at = Some(Instant::now());
                }
            }
        }
    }
}
