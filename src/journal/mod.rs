//! The outcome journal: one row per settled event, kept in a database so that
//! operators can ask later what happened to a subject, a group or an event.
//!
//! - [`Journal::record`] never waits: it puts the row on a bounded channel and
//!   returns. A writer task takes rows off the channel and inserts them in
//!   batches (one transaction each). A full channel, or a batch the store
//!   refused, drops rows and counts them ([`Journal::dropped`]): the journal
//!   is a record for people, and never slows or stops event processing.
//! - A retention task deletes rows older than `max_age` and beyond `max_rows`,
//!   oldest first, at start and then periodically.
//! - [`Journal::query`] pages newest first with an opaque cursor built from
//!   the row id, so new rows never shift a page that is being read.
//!
//! Stores: an embedded SQLite file (WAL) by default, or PostgreSQL when
//! several worker processes share one journal. Both run the same SQL apart
//! from the batch insert; schemas are the files under `migrations/`.
//!
//! The same store keeps the ownership records ([`OwnershipStore`], the
//! engine's `Ownership`), never pruned; with `remove_only_owned` written
//! while an event is applied and awaited, never dropped.

mod ownership;
mod store;
mod writer;

pub use ownership::OwnershipStore;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use store::Db;
use writer::{Control, Counters, Writer};

/// Rows a page holds when the request names no limit.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Most rows one page holds, whatever the request asks.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Most rows one batch may hold: PostgreSQL binds each column of a batch as
/// one array, SQLite inserts row by row, so this only bounds a transaction.
pub const MAX_BATCH_SIZE: usize = 5000;

/// Where the journal lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Store {
    /// An SQLite file, created with its directory when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host/db?options=...`),
    /// for a journal shared by several worker processes.
    Postgres(String),
}

impl Store {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else is
    /// the path of an SQLite file (an optional `sqlite://` prefix is removed).
    pub fn parse(value: &str) -> Store {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Store::Postgres(value.to_string())
        } else {
            let path = value.strip_prefix("sqlite://").unwrap_or(value);
            Store::Sqlite(PathBuf::from(path))
        }
    }

    /// The store for messages and logs: a PostgreSQL password is replaced by
    /// `***`.
    pub fn redacted(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("sqlite {}", path.display()),
            Store::Postgres(url) => redact_url(url),
        }
    }
}

// Debug is written by hand so that settings printed with `{:?}` never show a
// database password.
impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Store::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

pub use crate::redact::redact_url;

/// How the journal is stored, kept and written. Build with
/// [`JournalSettings::new`] and change the fields that differ.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Where the rows go.
    pub store: Store,
    /// Rows older than this are deleted (30 days).
    pub max_age: Duration,
    /// Beyond this many rows the oldest are deleted (1,000,000).
    pub max_rows: u64,
    /// Rows waiting for the writer; a full channel drops new rows (10,000).
    pub channel_capacity: usize,
    /// Most rows per insert transaction (500, at most [`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
    /// Longest a row waits before its batch is written (100 ms).
    pub flush_interval: Duration,
    /// How often retention runs; it also runs at start (1 minute).
    pub retention_interval: Duration,
    /// How long a write may wait for the store (an SQLite lock, a PostgreSQL
    /// connection) before its batch is dropped (5 s).
    pub store_timeout: Duration,
}

impl JournalSettings {
    /// The defaults, for `store`.
    pub fn new(store: Store) -> Self {
        JournalSettings {
            store,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: 1_000_000,
            channel_capacity: 10_000,
            batch_size: 500,
            flush_interval: Duration::from_millis(100),
            retention_interval: Duration::from_secs(60),
            store_timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        let problem = if self.channel_capacity == 0 {
            "channel_capacity must be at least 1"
        } else if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            "batch_size must be between 1 and 5000"
        } else if self.max_rows == 0 {
            "max_rows must be at least 1"
        } else if self.max_age.is_zero() {
            "max_age must be more than zero"
        } else if self.flush_interval.is_zero()
            || self.retention_interval.is_zero()
            || self.store_timeout.is_zero()
        {
            "flush_interval, retention_interval and store_timeout must be more than zero"
        } else {
            return Ok(());
        };
        Err(JournalError::Settings(problem.into()))
    }
}

/// What became of a settled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventResult {
    /// The target now reflects the event.
    Applied,
    /// Nothing to do (not routed, unmanaged, already so).
    Ignored,
    /// Parked in the dead-letter queue.
    DeadLettered,
    /// Given back to the broker for a later delivery.
    Returned,
    /// Acknowledged with a later event of its subject whose effect stood
    /// for both (backlog coalescing).
    Coalesced,
}

impl EventResult {
    /// The stored spelling: `applied`, `ignored`, `dead-lettered`, `returned`,
    /// `coalesced`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventResult::Applied => "applied",
            EventResult::Ignored => "ignored",
            EventResult::DeadLettered => "dead-lettered",
            EventResult::Returned => "returned",
            EventResult::Coalesced => "coalesced",
        }
    }
}

impl fmt::Display for EventResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventResult {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "applied" => Ok(EventResult::Applied),
            "ignored" => Ok(EventResult::Ignored),
            "dead-lettered" => Ok(EventResult::DeadLettered),
            "returned" => Ok(EventResult::Returned),
            "coalesced" => Ok(EventResult::Coalesced),
            other => Err(format!("unknown result `{other}`")),
        }
    }
}

/// One call made to the target while settling an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCall {
    /// The operation, e.g. `accounts.lookup`.
    pub operation: String,
    /// The HTTP method.
    pub method: String,
    /// The URL template, never the concrete URL (which may carry values).
    pub path_template: String,
    /// The HTTP status; none when no answer came.
    pub status: Option<u16>,
    /// How long the call took.
    pub duration_ms: u64,
}

/// One settled event, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When the event was settled, unix milliseconds ([`now_ms`]).
    pub at_ms: i64,
    /// The provisioner that consumed the event.
    pub provisioner: String,
    /// The event's id.
    pub event_id: String,
    /// The event's action; none for an event that did not parse.
    pub action: Option<String>,
    /// The event's group, if it names one.
    pub group: Option<String>,
    /// The subject, or a label such as `300 subjects` for a membership sync.
    /// Stored lowercased.
    pub subject: Option<String>,
    /// What became of the event.
    pub result: EventResult,
    /// Why, in words (clipped to 4 KiB).
    pub detail: String,
    /// Attempts made (1 when the first one settled it).
    pub attempts: u32,
    /// Calls made to the target, all attempts together.
    pub api_calls: u32,
    /// From the start of the first attempt to the settlement.
    pub duration_ms: u64,
    /// Whether the broker had delivered the event before.
    pub redelivered: bool,
    /// Who wrote the row, e.g. `host:pid` ([`worker_name`]).
    pub worker: String,
    /// The target calls, in order (at most 1,000 are kept; `api_calls` has
    /// the true count).
    pub calls: Vec<TargetCall>,
}

/// A row read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// The row's id: increasing in the order rows were written.
    pub id: i64,
    /// The row.
    #[serde(flatten)]
    pub entry: Entry,
}

/// Which rows a query returns; every field set narrows it (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// This provisioner only.
    pub provisioner: Option<String>,
    /// This subject only, whatever its case.
    pub subject: Option<String>,
    /// This group only (exact).
    pub group: Option<String>,
    /// This result only.
    pub result: Option<EventResult>,
    /// Settled at or after this time (unix ms).
    pub from_ms: Option<i64>,
    /// Settled before this time (unix ms).
    pub to_ms: Option<i64>,
    /// This event only.
    pub event_id: Option<String>,
    /// The row with this id only.
    pub id: Option<i64>,
}

/// Which page to return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageRequest {
    /// The `next_cursor` of the previous page; none for the first page.
    pub cursor: Option<String>,
    /// Rows per page: [`DEFAULT_PAGE_LIMIT`] when none, at most
    /// [`MAX_PAGE_LIMIT`].
    pub limit: Option<u32>,
}

/// One page of rows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The rows.
    pub entries: Vec<StoredEntry>,
    /// The cursor of the next page; none when this page is the last.
    pub next_cursor: Option<String>,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows older than `max_age`.
    pub by_age: u64,
    /// Rows beyond `max_rows`.
    pub by_count: u64,
}

/// What can go wrong with the journal. Messages show a PostgreSQL URL only
/// with its password redacted.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A setting is out of range.
    #[error("journal settings: {0}")]
    Settings(String),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the journal directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be reached or opened.
    #[error("cannot open the journal store {store}: {reason}")]
    Open {
        /// The store, redacted.
        store: String,
        /// Why, redacted.
        reason: String,
    },
    /// The schema could not be created or brought up to date.
    #[error("cannot migrate the journal store {store}: {reason}")]
    Migrate {
        /// The store, redacted.
        store: String,
        /// Why, redacted.
        reason: String,
    },
    /// A query or a retention pass failed.
    #[error("journal store {store}: {reason}")]
    Store {
        /// The store, redacted.
        store: String,
        /// Why, redacted.
        reason: String,
    },
    /// A stored row could not be read back.
    #[error("journal row {id}: {reason}")]
    Decode {
        /// The row's id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// The cursor was not one this journal handed out.
    #[error("invalid journal cursor `{0}`")]
    BadCursor(String),
    /// The writer has stopped (the journal was closed).
    #[error("the journal writer has stopped")]
    Stopped,
    /// The deadline passed before the writer was done; rows not written by
    /// then are counted as dropped.
    #[error("the journal did not finish writing before the deadline")]
    Deadline,
}

struct Tasks {
    writer: JoinHandle<()>,
    retention: JoinHandle<()>,
}

struct Inner {
    rows: mpsc::Sender<Entry>,
    control: mpsc::Sender<Control>,
    counters: Arc<Counters>,
    db: Db,
    settings: JournalSettings,
    tasks: Mutex<Option<Tasks>>,
    // Stops the retention task when the last handle goes without `close`.
    _retention_guard: DropGuard,
    retention_stop: CancellationToken,
}

/// The outcome journal. Clones share one writer; [`Journal::close`] on any of
/// them stops it for all.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("store", &self.inner.settings.store)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Journal {
    /// Opens the store (creating an SQLite file and its directory when
    /// missing), brings its schema up to date, and starts the writer and the
    /// retention task. Must run inside a tokio runtime.
    pub async fn open(settings: JournalSettings) -> Result<Journal, JournalError> {
        settings.validate()?;
        let db = Db::open(&settings).await?;
        let (rows_tx, rows_rx) = mpsc::channel(settings.channel_capacity);
        // Flush and close requests: a handful at a time is plenty.
        let (control_tx, control_rx) = mpsc::channel(16);
        let counters = Arc::new(Counters::default());
        // The first retention pass runs before anything is written, so that a
        // long-stopped worker starts within its limits and never races it.
        match db
            .prune(now_ms(), settings.max_age, settings.max_rows)
            .await
        {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal retention failed; it runs again later"),
        }
        counters.retention_passes.fetch_add(1, Ordering::Relaxed);
        let writer = Writer::new(db.clone(), &settings, rows_rx, control_rx, counters.clone());
        let writer = tokio::spawn(writer.run());
        let retention_stop = CancellationToken::new();
        let retention = tokio::spawn(writer::retention(
            db.clone(),
            settings.clone(),
            counters.clone(),
            retention_stop.clone(),
        ));
        tracing::info!(store = %settings.store.redacted(), "journal open");
        Ok(Journal {
            inner: Arc::new(Inner {
                rows: rows_tx,
                control: control_tx,
                counters,
                db,
                _retention_guard: retention_stop.clone().drop_guard(),
                retention_stop,
                settings,
                tasks: Mutex::new(Some(Tasks { writer, retention })),
            }),
        })
    }

    /// Queues `entry` for the writer and returns at once. When the channel is
    /// full, or the journal is closed, the row is dropped and counted.
    pub fn record(&self, entry: Entry) {
        if self.inner.rows.try_send(entry).is_err() {
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rows dropped so far: channel full, journal closed, or refused by the
    /// store.
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Writes every row queued before this call, unless `deadline` comes
    /// first. A refused batch is not an error: its rows are counted as
    /// dropped, and the flush stops there, leaving the rest queued for the
    /// writer's next attempt.
    pub async fn flush(&self, deadline: Instant) -> Result<(), JournalError> {
        let (done_tx, done_rx) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.inner.control.send(Control::Flush(done_tx)))
            .await
        {
            Err(_) => return Err(JournalError::Deadline),
            Ok(Err(_)) => return Err(JournalError::Stopped),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, done_rx).await {
            Err(_) => Err(JournalError::Deadline),
            Ok(Err(_)) => Err(JournalError::Stopped),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes what is queued, stops the writer and the retention task, and
    /// closes the store, all before `deadline`. Rows still unwritten at the
    /// deadline are counted as dropped and the call returns
    /// [`JournalError::Deadline`]. Later `record`s on clones are dropped.
    pub async fn close(self, deadline: Instant) -> Result<(), JournalError> {
        let inner = &self.inner;
        inner.retention_stop.cancel();
        let tasks = match inner.tasks.lock() {
            Ok(mut tasks) => tasks.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(Tasks {
            mut writer,
            mut retention,
        }) = tasks
        else {
            return Err(JournalError::Stopped);
        };
        let (done_tx, done_rx) = oneshot::channel();
        let asked =
            tokio::time::timeout_at(deadline, inner.control.send(Control::Close(done_tx))).await;
        let mut outcome = match asked {
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, done_rx).await {
                Ok(_) => Ok(()),
                Err(_) => Err(JournalError::Deadline),
            },
            // The writer is gone already (it only stops on close or when
            // every handle is dropped): nothing left to wait for.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(JournalError::Deadline),
        };
        if outcome.is_ok()
            && tokio::time::timeout_at(deadline, &mut writer)
                .await
                .is_err()
        {
            outcome = Err(JournalError::Deadline);
        }
        if outcome.is_err() {
            // The writer counts what it held and what was queued as dropped
            // as it goes (see its Drop).
            writer.abort();
            let _ = (&mut writer).await;
            tracing::warn!(
                dropped_total = self.dropped(),
                "journal closed before all its rows were written"
            );
        }
        if tokio::time::timeout_at(deadline, &mut retention)
            .await
            .is_err()
        {
            retention.abort();
        }
        if tokio::time::timeout_at(deadline, inner.db.close())
            .await
            .is_err()
        {
            outcome = outcome.and(Err(JournalError::Deadline));
        }
        outcome
    }

    /// Rows matching `filter`, newest first, one page at a time.
    pub async fn query(&self, filter: &Filter, page: &PageRequest) -> Result<Page, JournalError> {
        let before = page.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = page
            .limit
            .unwrap_or(DEFAULT_PAGE_LIMIT)
            .clamp(1, MAX_PAGE_LIMIT);
        let mut entries = self.inner.db.select(filter, before, limit + 1).await?;
        let more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        let next_cursor = match entries.last() {
            Some(last) if more => Some(encode_cursor(last.id)),
            _ => None,
        };
        Ok(Page {
            entries,
            next_cursor,
        })
    }

    /// Every row of one event (an event may be settled more than once, e.g.
    /// returned then applied), newest first, at most [`MAX_PAGE_LIMIT`].
    pub async fn get(&self, event_id: &str) -> Result<Vec<StoredEntry>, JournalError> {
        let filter = Filter {
            event_id: Some(event_id.to_string()),
            ..Filter::default()
        };
        self.inner.db.select(&filter, None, MAX_PAGE_LIMIT).await
    }

    /// Runs one retention pass now, as if the time were `now_ms`: deletes
    /// rows older than `max_age`, then the oldest beyond `max_rows`. The
    /// retention task does the same on its own schedule.
    pub async fn prune(&self, now_ms: i64) -> Result<Pruned, JournalError> {
        let settings = &self.inner.settings;
        self.inner
            .db
            .prune(now_ms, settings.max_age, settings.max_rows)
            .await
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `host:pid`, for [`Entry::worker`].
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

// Cursors are opaque to clients so that their form can change; the prefix
// names the form.
const CURSOR_PREFIX: &str = "id1:";

fn encode_cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, JournalError> {
    let bad = || JournalError::BadCursor(cursor.chars().take(64).collect());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(CURSOR_PREFIX)
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(bad)
}
