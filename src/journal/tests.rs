//! The journal against real stores: SQLite files in temporary directories,
//! and the PostgreSQL of the machine (127.0.0.1:5432, database `test`, or
//! `JOURNAL_TEST_POSTGRES_URL`), one schema per test. Without PostgreSQL the
//! PostgreSQL tests fail and say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn sqlite_settings(path: &Path) -> JournalSettings {
    JournalSettings::new(Store::Sqlite(path.to_path_buf()))
}

/// A row with every field set from `i`, so that rows differ in each column
/// the filters look at.
fn sample(i: usize, at_ms: i64) -> Entry {
    Entry {
        at_ms,
        provisioner: ["crm", "hr"][i % 2].into(),
        event_id: format!("ev-{}", i / 2),
        action: (!i.is_multiple_of(7)).then(|| "provision".to_string()),
        group: match i % 3 {
            0 => None,
            1 => Some("Sales".into()),
            _ => Some("sales".into()),
        },
        subject: match i % 5 {
            0 => Some("JDoe".into()),
            1 => Some("jdoe".into()),
            2 => Some("asmith".into()),
            3 => None,
            _ => Some("300 subjects".into()),
        },
        result: [
            EventResult::Applied,
            EventResult::Ignored,
            EventResult::DeadLettered,
            EventResult::Returned,
        ][i % 4],
        detail: format!("detail {i}"),
        attempts: (i % 3) as u32 + 1,
        api_calls: (i % 4) as u32,
        duration_ms: i as u64 * 10,
        redelivered: i % 2 == 1,
        worker: "host:1".into(),
        calls: (0..i % 3)
            .map(|c| TargetCall {
                operation: "accounts.lookup".into(),
                method: "GET".into(),
                path_template: "/users/{{ subject }}".into(),
                status: (c == 0).then_some(200),
                duration_ms: c as u64,
            })
            .collect(),
    }
}

/// What the journal should give back for `entry`.
fn stored_form(mut entry: Entry) -> Entry {
    entry.subject = entry.subject.map(|s| s.to_lowercase());
    entry
}

/// The filter as a plain predicate, to compare the SQL against.
fn matches(filter: &Filter, e: &Entry) -> bool {
    let same = |want: &Option<String>, got: &Option<String>| {
        want.as_ref().is_none_or(|w| got.as_deref() == Some(w))
    };
    same(&filter.provisioner, &Some(e.provisioner.clone()))
        && filter.subject.as_ref().is_none_or(|w| {
            e.subject
                .as_ref()
                .is_some_and(|s| s.to_lowercase() == w.to_lowercase())
        })
        && same(&filter.group, &e.group)
        && filter.result.is_none_or(|r| r == e.result)
        && filter.from_ms.is_none_or(|f| e.at_ms >= f)
        && filter.to_ms.is_none_or(|t| e.at_ms < t)
        && same(&filter.event_id, &Some(e.event_id.clone()))
}

/// Every row matching `filter`, through every page of `limit` rows.
async fn all_pages(journal: &Journal, filter: &Filter, limit: u32) -> Vec<StoredEntry> {
    let mut rows = Vec::new();
    let mut page = PageRequest {
        cursor: None,
        limit: Some(limit),
    };
    loop {
        let got = journal
            .query(filter, &page)
            .await
            .unwrap_or_else(|e| panic!("query {filter:?}: {e}"));
        assert!(got.entries.len() <= limit as usize);
        rows.extend(got.entries);
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return rows,
        }
    }
}

async fn count(journal: &Journal) -> u64 {
    all_pages(journal, &Filter::default(), MAX_PAGE_LIMIT)
        .await
        .len() as u64
}

async fn open(settings: JournalSettings) -> Journal {
    let shown = settings.store.redacted();
    Journal::open(settings)
        .await
        .unwrap_or_else(|e| panic!("open {shown}: {e}"))
}

async fn flush(journal: &Journal) {
    journal
        .flush(deadline(30))
        .await
        .unwrap_or_else(|e| panic!("flush: {e}"));
}

/// Polls `check` until it holds or `secs` pass.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = deadline(secs);
    while !check().await {
        assert!(Instant::now() < until, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Scenarios, run on both stores.

/// Rows written are found with each filter and with combinations, newest
/// first, and read back exactly as recorded (subject lowercased).
async fn filters_scenario(settings: JournalSettings) {
    let journal = open(settings).await;
    let base = now_ms() - 3600 * 1000;
    let input: Vec<Entry> = (0..40).map(|i| sample(i, base + i as i64 * 1000)).collect();
    for entry in &input {
        journal.record(entry.clone());
    }
    flush(&journal).await;
    assert_eq!(journal.dropped(), 0);

    // Everything, oldest last; ids follow the order of recording.
    let all = all_pages(&journal, &Filter::default(), 1000).await;
    let got: Vec<Entry> = all.iter().rev().map(|s| s.entry.clone()).collect();
    let want: Vec<Entry> = input.iter().cloned().map(stored_form).collect();
    assert_eq!(got, want);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");

    let at = |i: usize| base + i as i64 * 1000;
    let text = |s: &str| Some(s.to_string());
    let filters = vec![
        Filter {
            provisioner: text("crm"),
            ..Filter::default()
        },
        Filter {
            subject: text("JDOE"),
            ..Filter::default()
        },
        Filter {
            subject: text("asmith"),
            ..Filter::default()
        },
        Filter {
            subject: text("300 Subjects"),
            ..Filter::default()
        },
        Filter {
            group: text("Sales"),
            ..Filter::default()
        },
        Filter {
            group: text("sales"),
            ..Filter::default()
        },
        Filter {
            result: Some(EventResult::Applied),
            ..Filter::default()
        },
        Filter {
            result: Some(EventResult::Ignored),
            ..Filter::default()
        },
        Filter {
            result: Some(EventResult::DeadLettered),
            ..Filter::default()
        },
        Filter {
            result: Some(EventResult::Returned),
            ..Filter::default()
        },
        Filter {
            from_ms: Some(at(30)),
            ..Filter::default()
        },
        Filter {
            to_ms: Some(at(5)),
            ..Filter::default()
        },
        Filter {
            from_ms: Some(at(10)),
            to_ms: Some(at(20)),
            ..Filter::default()
        },
        Filter {
            event_id: text("ev-7"),
            ..Filter::default()
        },
        Filter {
            provisioner: text("hr"),
            subject: text("jdoe"),
            ..Filter::default()
        },
        Filter {
            subject: text("jdoe"),
            result: Some(EventResult::Applied),
            ..Filter::default()
        },
        Filter {
            group: text("sales"),
            from_ms: Some(at(3)),
            to_ms: Some(at(33)),
            ..Filter::default()
        },
        Filter {
            provisioner: text("crm"),
            result: Some(EventResult::DeadLettered),
            to_ms: Some(at(25)),
            ..Filter::default()
        },
        Filter {
            provisioner: text("crm"),
            subject: text("JDoe"),
            group: text("Sales"),
            result: Some(EventResult::Applied),
            from_ms: Some(at(0)),
            to_ms: Some(at(40)),
            event_id: text("ev-8"),
            id: None,
        },
        Filter {
            provisioner: text("nobody"),
            ..Filter::default()
        },
    ];
    for filter in &filters {
        let want: Vec<i64> = input
            .iter()
            .rev()
            .filter(|e| matches(filter, e))
            .map(|e| e.at_ms)
            .collect();
        // Pages of 3, so that paging and filters are checked together.
        let got: Vec<i64> = all_pages(&journal, filter, 3)
            .await
            .iter()
            .map(|s| s.entry.at_ms)
            .collect();
        assert_eq!(got, want, "{filter:?}");
    }
    // The combined filters above match something, or they prove little.
    assert!(input.iter().any(|e| matches(&filters[18], e)));

    let event = journal.get("ev-3").await.unwrap();
    let want: Vec<Entry> = [7, 6]
        .iter()
        .map(|i| stored_form(input[*i].clone()))
        .collect();
    assert_eq!(event.into_iter().map(|s| s.entry).collect::<Vec<_>>(), want);
    assert!(journal.get("ev-nothing").await.unwrap().is_empty());

    // One row by its id, and no other.
    let one = all_pages(
        &journal,
        &Filter {
            id: Some(all[5].id),
            ..Filter::default()
        },
        3,
    )
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, all[5].id);
    assert_eq!(one[0].entry, all[5].entry);

    journal.close(deadline(30)).await.unwrap();
}

/// Paging returns every row once, in order, while new rows arrive between
/// pages; the new rows do not show in the pages that follow.
async fn paging_scenario(settings: JournalSettings) {
    let journal = open(settings).await;
    let now = now_ms();
    for i in 0..50 {
        journal.record(sample(i, now));
    }
    flush(&journal).await;
    let before: Vec<i64> = all_pages(&journal, &Filter::default(), 1000)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(before.len(), 50);

    let mut seen = Vec::new();
    let mut page = PageRequest {
        cursor: None,
        limit: Some(7),
    };
    let mut added = 0;
    loop {
        let got = journal.query(&Filter::default(), &page).await.unwrap();
        seen.extend(got.entries.iter().map(|s| s.id));
        // New rows between pages.
        for i in 0..3 {
            journal.record(sample(100 + added + i, now));
        }
        added += 3;
        flush(&journal).await;
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, before);
    assert_eq!(count(&journal).await, 50 + added as u64);

    // The default page is 100 rows, and no limit goes past 1,000.
    let first = journal
        .query(&Filter::default(), &PageRequest::default())
        .await
        .unwrap();
    let total = 50 + added;
    assert_eq!(first.entries.len(), total.min(100));
    assert_eq!(first.next_cursor.is_some(), total > 100);
    for i in 0..1100 {
        journal.record(sample(i, now));
    }
    flush(&journal).await;
    let big = journal
        .query(
            &Filter::default(),
            &PageRequest {
                cursor: None,
                limit: Some(5000),
            },
        )
        .await
        .unwrap();
    assert_eq!(big.entries.len(), MAX_PAGE_LIMIT as usize);
    assert!(big.next_cursor.is_some());

    for bad in ["", "not a cursor", "aWQxOng"] {
        let err = journal
            .query(
                &Filter::default(),
                &PageRequest {
                    cursor: Some(bad.into()),
                    limit: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, JournalError::BadCursor(_)), "{bad}: {err}");
    }
    journal.close(deadline(30)).await.unwrap();
}

/// Retention by age, then by count, oldest first, with `now` an input.
async fn retention_scenario(mut settings: JournalSettings) {
    settings.max_rows = 10;
    settings.max_age = Duration::from_secs(30 * 24 * 3600);
    // The background pass runs at start, on an empty table, and not again
    // during the test; rows dated in the future are never old to it.
    settings.retention_interval = Duration::from_secs(3600);
    let journal = open(settings).await;
    let now = now_ms() + 1_000 * DAY_MS;
    let ages = [
        40 * DAY_MS,
        31 * DAY_MS,
        30 * DAY_MS + 1,
        30 * DAY_MS,
        DAY_MS,
        0,
    ];
    for (i, age) in ages.iter().enumerate() {
        journal.record(sample(i, now - age));
    }
    flush(&journal).await;
    let pruned = journal.prune(now).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            by_age: 3,
            by_count: 0
        }
    );
    let left: Vec<i64> = all_pages(&journal, &Filter::default(), 100)
        .await
        .iter()
        .map(|s| now - s.entry.at_ms)
        .collect();
    assert_eq!(left, vec![0, DAY_MS, 30 * DAY_MS]);

    // 3 + 12 rows: the 5 oldest go, whatever their time.
    for i in 0..12 {
        journal.record(sample(10 + i, now - DAY_MS));
    }
    flush(&journal).await;
    let ids: Vec<i64> = all_pages(&journal, &Filter::default(), 100)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    let pruned = journal.prune(now).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            by_age: 0,
            by_count: 5
        }
    );
    let kept: Vec<i64> = all_pages(&journal, &Filter::default(), 100)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(kept, ids[..10]);
    assert_eq!(journal.prune(now).await.unwrap(), Pruned::default());
    journal.close(deadline(30)).await.unwrap();
}

// ---------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_rows_are_found_with_each_filter_and_combination() {
    let dir = tempfile::tempdir().unwrap();
    filters_scenario(sqlite_settings(&dir.path().join("journal.db"))).await;
}

#[tokio::test]
async fn sqlite_cursor_paging_returns_each_row_once_while_rows_arrive() {
    let dir = tempfile::tempdir().unwrap();
    paging_scenario(sqlite_settings(&dir.path().join("journal.db"))).await;
}

#[tokio::test]
async fn sqlite_retention_by_age_and_count() {
    let dir = tempfile::tempdir().unwrap();
    retention_scenario(sqlite_settings(&dir.path().join("journal.db"))).await;
}

#[tokio::test]
async fn sqlite_retention_runs_at_start_and_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut keep_all = sqlite_settings(&path);
    keep_all.max_age = Duration::from_secs(100 * 365 * 24 * 3600);
    let journal = open(keep_all).await;
    // Rows from 1970: older than the default max_age, not than a century.
    for i in 0..30 {
        journal.record(sample(i, i as i64));
    }
    for i in 0..5 {
        journal.record(sample(i, now_ms()));
    }
    flush(&journal).await;
    assert_eq!(count(&journal).await, 35);
    journal.close(deadline(30)).await.unwrap();

    let mut settings = sqlite_settings(&path);
    settings.retention_interval = Duration::from_millis(50);
    let journal = open(settings).await;
    eventually(10, "the pass at start deletes the old rows", || async {
        count(&journal).await == 5
    })
    .await;
    // Passes that find nothing to delete do not stop the task.
    let counters = journal.inner.counters.clone();
    let passes = counters.retention_passes.load(Ordering::Relaxed);
    eventually(10, "two more passes", || async {
        counters.retention_passes.load(Ordering::Relaxed) >= passes + 2
    })
    .await;
    for i in 0..7 {
        journal.record(sample(i, 1));
    }
    flush(&journal).await;
    eventually(10, "a later pass deletes the new old rows", || async {
        count(&journal).await == 5
    })
    .await;
    journal.close(deadline(30)).await.unwrap();
}

#[tokio::test]
async fn sqlite_journal_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The directories do not exist yet: open creates them.
    let path = dir.path().join("state").join("journal").join("outcomes.db");
    let now = now_ms();
    let journal = open(sqlite_settings(&path)).await;
    for i in 0..20 {
        journal.record(sample(i, now));
    }
    // No flush: close writes what is queued.
    journal.close(deadline(30)).await.unwrap();
    assert!(path.exists());

    let journal = open(sqlite_settings(&path)).await;
    let first = all_pages(&journal, &Filter::default(), 100).await;
    assert_eq!(first.len(), 20);
    for i in 20..25 {
        journal.record(sample(i, now));
    }
    journal.close(deadline(30)).await.unwrap();

    let journal = open(sqlite_settings(&path)).await;
    let rows = all_pages(&journal, &Filter::default(), 100).await;
    let got: Vec<Entry> = rows.iter().rev().map(|s| s.entry.clone()).collect();
    let want: Vec<Entry> = (0..25).map(|i| stored_form(sample(i, now))).collect();
    assert_eq!(got, want);
    assert!(rows[0].id > first[0].id);
    assert_eq!(journal.dropped(), 0);
    journal.close(deadline(30)).await.unwrap();
}

/// Another connection holding SQLite's write lock: the journal's writes
/// wait for it (up to `store_timeout`), like a slow or stuck disk.
async fn lock_sqlite(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn unlock_sqlite(mut conn: SqliteConnection) {
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_full_channel_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut settings = sqlite_settings(&path);
    settings.channel_capacity = 4;
    settings.batch_size = 1;
    // Long enough that a `record` waiting on the store would show.
    settings.store_timeout = Duration::from_secs(30);
    let journal = open(settings).await;
    let lock = lock_sqlite(&path).await;

    journal.record(sample(0, now_ms()));
    let counters = journal.inner.counters.clone();
    // With batches of one row, the writer holding a row is stuck in its
    // insert, and takes nothing more off the channel.
    eventually(10, "the writer takes the first row", || async {
        counters.held.load(Ordering::Relaxed) == 1
    })
    .await;
    let started = Instant::now();
    for i in 1..=100 {
        journal.record(sample(i, now_ms()));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "100 records took {took:?}");
    assert_eq!(journal.dropped(), 96, "4 queued, the rest dropped");

    unlock_sqlite(lock).await;
    flush(&journal).await;
    assert_eq!(count(&journal).await, 5);
    assert_eq!(journal.dropped(), 96);
    journal.close(deadline(30)).await.unwrap();
}

#[tokio::test]
async fn sqlite_unavailable_store_keeps_record_non_blocking_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut settings = sqlite_settings(&path);
    settings.batch_size = 10;
    settings.flush_interval = Duration::from_millis(10);
    settings.store_timeout = Duration::from_secs(1);
    let journal = open(settings).await;
    journal.record(sample(0, now_ms()));
    flush(&journal).await;
    assert_eq!(count(&journal).await, 1);

    // Tests run as root (CI too), to whom a read-only directory is still
    // writable; another connection holding the write lock makes the store
    // refuse every batch instead (SQLITE_BUSY after store_timeout).
    let lock = lock_sqlite(&path).await;
    let mut recorded = 1u64;
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        for i in 0..10 {
            let started = Instant::now();
            journal.record(sample(round * 10 + i, now_ms()));
            slowest = slowest.max(started.elapsed());
            recorded += 1;
        }
        // A flush tries the store whatever the back-off; it refuses.
        flush(&journal).await;
    }
    // Far below store_timeout: no record waited on the store.
    assert!(
        slowest < Duration::from_millis(250),
        "a record took {slowest:?}"
    );
    assert!(journal.dropped() >= 10, "dropped {}", journal.dropped());

    // Back: new rows are written again.
    unlock_sqlite(lock).await;
    for i in 0..10 {
        journal.record(sample(100 + i, now_ms()));
        recorded += 1;
    }
    flush(&journal).await;
    let stored = count(&journal).await;
    assert!(stored >= 11, "stored {stored}");
    let probe = journal.clone();
    journal.close(deadline(30)).await.unwrap();
    // Every row is either stored or counted as dropped.
    let journal = open(sqlite_settings(&path)).await;
    assert_eq!(count(&journal).await + probe.dropped(), recorded);
    journal.close(deadline(30)).await.unwrap();
}

#[tokio::test]
async fn close_past_its_deadline_counts_what_was_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut settings = sqlite_settings(&path);
    settings.batch_size = 1;
    settings.store_timeout = Duration::from_secs(30);
    let journal = open(settings).await;
    let lock = lock_sqlite(&path).await;
    for i in 0..5 {
        journal.record(sample(i, now_ms()));
    }
    let probe = journal.clone();
    let started = Instant::now();
    let closed = journal
        .close(Instant::now() + Duration::from_millis(300))
        .await;
    assert!(matches!(closed, Err(JournalError::Deadline)), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(probe.dropped(), 5);
    // Closed: later records are counted too.
    probe.record(sample(9, now_ms()));
    assert_eq!(probe.dropped(), 6);
    unlock_sqlite(lock).await;
}

#[tokio::test]
async fn settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let broken: Vec<fn(&mut JournalSettings)> = vec![
        |s| s.channel_capacity = 0,
        |s| s.batch_size = 0,
        |s| s.batch_size = MAX_BATCH_SIZE + 1,
        |s| s.max_rows = 0,
        |s| s.max_age = Duration::ZERO,
        |s| s.flush_interval = Duration::ZERO,
    ];
    for change in broken {
        let mut settings = sqlite_settings(&path);
        change(&mut settings);
        let err = Journal::open(settings).await.unwrap_err();
        assert!(matches!(err, JournalError::Settings(_)), "{err}");
    }
    assert!(!path.exists(), "nothing is created for refused settings");
}

#[test]
fn passwords_never_show() {
    let store = Store::parse("postgres://journal:hunter2secret@db.example:5432/ops");
    assert_eq!(
        store,
        Store::Postgres("postgres://journal:hunter2secret@db.example:5432/ops".into())
    );
    for shown in [
        format!("{store:?}"),
        store.redacted(),
        format!("{:?}", JournalSettings::new(store.clone())),
    ] {
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    assert_eq!(
        Store::parse("sqlite:///var/lib/provisioner/journal.db"),
        Store::Sqlite("/var/lib/provisioner/journal.db".into())
    );
    assert_eq!(
        Store::parse("journal.db"),
        Store::Sqlite("journal.db".into())
    );
    let secrets = store::secrets_of("postgres://u:p%40ss%20word@h/db");
    assert_eq!(
        store::scrub("auth failed for p@ss word and p%40ss%20word", &secrets),
        "auth failed for *** and ***"
    );
}

#[test]
fn cursors_round_trip_and_results_parse() {
    for id in [1, 42, i64::MAX] {
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
    }
    for result in [
        EventResult::Applied,
        EventResult::Ignored,
        EventResult::DeadLettered,
        EventResult::Returned,
        EventResult::Coalesced,
    ] {
        assert_eq!(result.as_str().parse::<EventResult>().unwrap(), result);
        assert_eq!(
            serde_json::to_string(&result).unwrap(),
            format!("\"{}\"", result.as_str())
        );
    }
}

#[test]
fn embedded_migrations_match_the_folders() {
    for (postgres, folder) in [(false, "sqlite"), (true, "postgres")] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        let mut on_disk: Vec<(i64, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| {
                let stem = name.strip_suffix(".sql")?;
                let (version, description) = stem.split_once('_')?;
                Some((version.parse().ok()?, description.to_string()))
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(i64, String)> = store::embedded_migrations(postgres)
            .into_iter()
            .map(|(v, d)| (v, d.to_string()))
            .collect();
        assert_eq!(embedded, on_disk, "{folder}: list each file in store.rs");
    }
}

#[test]
fn long_and_odd_values_are_clipped_before_storing() {
    let mut entry = sample(1, 0);
    entry.detail = "é".repeat(5000);
    entry.subject = Some("A\0B".into());
    entry.calls = (0..1500)
        .map(|_| TargetCall {
            operation: "x".into(),
            method: "GET".into(),
            path_template: "/".into(),
            status: None,
            duration_ms: 0,
        })
        .collect();
    let row = store::NewRow::from_entry(entry);
    assert!(row.detail.len() <= 4096 && row.detail.starts_with("éé"));
    assert_eq!(row.subject.as_deref(), Some("ab"));
    let calls: Vec<TargetCall> = serde_json::from_str(&row.calls).unwrap();
    assert_eq!(calls.len(), 1000);
}

// ---------------------------------------------------------------------------
// PostgreSQL

fn postgres_base_url() -> String {
    std::env::var("JOURNAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test, dropped at the end (even on panic).
struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn create() -> PgSchema {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = postgres_base_url();
        let mut conn = PgConnection::connect(&base).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); the journal's PostgreSQL tests \
                 need it (start it, or set JOURNAL_TEST_POSTGRES_URL)",
                redact_url(&base)
            )
        });
        let name = format!(
            "journal_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            now_ms()
        );
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        PgSchema { name }
    }

    /// The URL of the test database with this schema first on the search
    /// path, through `host:port` if given (a proxy).
    fn url_via(&self, via: Option<SocketAddr>) -> String {
        let mut url = url::Url::parse(&postgres_base_url()).unwrap();
        if let Some(addr) = via {
            url.set_port(Some(addr.port())).unwrap();
            url.set_host(Some(&addr.ip().to_string())).unwrap();
        }
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={}", self.name));
        url.to_string()
    }

    fn settings(&self) -> JournalSettings {
        JournalSettings::new(Store::Postgres(self.url_via(None)))
    }

    async fn table_exists(&self) -> bool {
        let mut conn = PgConnection::connect(&postgres_base_url()).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'provisioner_journal'",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        n == 1
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread with its own runtime does the work.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_base_url()).await {
                    let _ = sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn postgres_rows_are_found_with_each_filter_and_combination() {
    let schema = PgSchema::create().await;
    filters_scenario(schema.settings()).await;
    assert!(
        schema.table_exists().await,
        "the rows went to the test schema"
    );
}

#[tokio::test]
async fn postgres_cursor_paging_returns_each_row_once_while_rows_arrive() {
    let schema = PgSchema::create().await;
    paging_scenario(schema.settings()).await;
}

#[tokio::test]
async fn postgres_retention_by_age_and_count() {
    let schema = PgSchema::create().await;
    retention_scenario(schema.settings()).await;
}

#[tokio::test]
async fn postgres_journal_survives_a_reopen() {
    let schema = PgSchema::create().await;
    let journal = open(schema.settings()).await;
    for i in 0..10 {
        journal.record(sample(i, now_ms()));
    }
    journal.close(deadline(30)).await.unwrap();
    let journal = open(schema.settings()).await;
    assert_eq!(count(&journal).await, 10);
    journal.close(deadline(30)).await.unwrap();
}

#[tokio::test]
async fn postgres_two_processes_share_one_journal() {
    let schema = PgSchema::create().await;
    // Opened together, so that both run the migrations at once.
    let (a, b) = tokio::join!(open(schema.settings()), open(schema.settings()));
    let now = now_ms();
    let write = |journal: Journal, worker: &'static str| {
        tokio::spawn(async move {
            for i in 0..600 {
                let mut entry = sample(i, now);
                entry.worker = worker.into();
                entry.event_id = format!("{worker}-{i}");
                journal.record(entry);
                if i.is_multiple_of(50) {
                    tokio::task::yield_now().await;
                }
            }
            journal.flush(deadline(30)).await.unwrap();
            journal
        })
    };
    let (a, b) = tokio::join!(write(a, "a"), write(b, "b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    for journal in [&a, &b] {
        let rows = all_pages(journal, &Filter::default(), 250).await;
        assert_eq!(rows.len(), 1200);
        let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 1200);
        for worker in ["a", "b"] {
            let mine: Vec<&StoredEntry> =
                rows.iter().filter(|r| r.entry.worker == worker).collect();
            // Each process's rows are all there, in the order it recorded them.
            let want: Vec<String> = (0..600).rev().map(|i| format!("{worker}-{i}")).collect();
            let got: Vec<String> = mine.iter().map(|r| r.entry.event_id.clone()).collect();
            assert_eq!(got, want);
        }
    }
    assert_eq!(a.dropped() + b.dropped(), 0);
    a.close(deadline(30)).await.unwrap();
    b.close(deadline(30)).await.unwrap();
}

#[tokio::test]
async fn postgres_unreachable_fails_to_open_without_showing_the_password() {
    // A port nothing listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut settings = JournalSettings::new(Store::Postgres(format!(
        "postgres://journal:hunter2secret@127.0.0.1:{port}/test"
    )));
    settings.store_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = Journal::open(settings).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, JournalError::Open { .. }), "{shown}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
    assert!(shown.contains("journal:***@127.0.0.1"), "{shown}");
}

/// A TCP proxy to PostgreSQL that can go down (dropping its connections and
/// refusing new ones) and come back, like a database restart.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let up = up.clone();
            let links = links.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Proxy {
            addr,
            up,
            links,
            accept,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

#[tokio::test]
async fn postgres_down_keeps_record_non_blocking_and_counts_drops() {
    let schema = PgSchema::create().await;
    let base = url::Url::parse(&postgres_base_url()).unwrap();
    let target = format!(
        "{}:{}",
        base.host_str().unwrap(),
        base.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target).await;
    let mut settings = JournalSettings::new(Store::Postgres(schema.url_via(Some(proxy.addr))));
    settings.batch_size = 10;
    settings.flush_interval = Duration::from_millis(10);
    settings.store_timeout = Duration::from_secs(1);
    let journal = open(settings.clone()).await;
    let mut recorded = 0u64;
    for i in 0..10 {
        journal.record(sample(i, now_ms()));
        recorded += 1;
    }
    flush(&journal).await;
    assert_eq!(count(&journal).await, 10);

    proxy.down();
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        for i in 0..10 {
            let started = Instant::now();
            journal.record(sample(round * 10 + i, now_ms()));
            slowest = slowest.max(started.elapsed());
            recorded += 1;
        }
        flush(&journal).await;
    }
    // Far below store_timeout: no record waited on the store.
    assert!(
        slowest < Duration::from_millis(250),
        "a record took {slowest:?}"
    );
    assert!(journal.dropped() >= 10, "dropped {}", journal.dropped());
    assert!(journal
        .query(&Filter::default(), &PageRequest::default())
        .await
        .is_err());

    // Back up: the pool reconnects and rows are written again.
    proxy.up();
    let marker = |n: usize| {
        let mut entry = sample(n, now_ms());
        entry.event_id = format!("after-{n}");
        entry
    };
    let mut n = 0;
    eventually(30, "writes resume once PostgreSQL is back", || {
        n += 1;
        journal.record(marker(n));
        recorded += 1;
        let journal = journal.clone();
        async move {
            let _ = journal.flush(deadline(10)).await;
            let found = journal
                .query(
                    &Filter {
                        event_id: Some(format!("after-{n}")),
                        ..Filter::default()
                    },
                    &PageRequest::default(),
                )
                .await;
            matches!(found, Ok(page) if page.entries.len() == 1)
        }
    })
    .await;
    let probe = journal.clone();
    journal.close(deadline(30)).await.unwrap();
    // Every row is either stored or counted as dropped.
    let journal = open(settings).await;
    assert_eq!(count(&journal).await + probe.dropped(), recorded);
    journal.close(deadline(30)).await.unwrap();
}

// ---------------------------------------------------------------------------
// Ownership records

mod owned {
    use super::*;
    use crate::engine::ownership::{Acquired, Owned, Ownership};

    fn rec(api_id: &str, how: Acquired) -> Owned {
        Owned {
            api_id: api_id.into(),
            subject: format!("subject of {api_id}"),
            how,
        }
    }

    fn ids<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> HashSet<String> {
        items.into_iter().map(|s| s.as_ref().to_string()).collect()
    }

    /// What every store must do with ownership records: record (the first
    /// record stays), answer one and all, forget, per provisioner and group,
    /// in batches, across a reopen, untouched by retention.
    pub(super) async fn scenario(settings: JournalSettings) {
        let journal = open(settings.clone()).await;
        let store = journal.ownership();
        store
            .record_accounts(
                "p1",
                &[rec("a1", Acquired::Created), rec("a2", Acquired::Adopted)],
            )
            .await
            .unwrap();
        // Recording again keeps the first record; another provisioner's are its own.
        store
            .record_accounts("p1", &[rec("a1", Acquired::Adopted)])
            .await
            .unwrap();
        store
            .record_accounts("p2", &[rec("a1", Acquired::Adopted)])
            .await
            .unwrap();
        assert_eq!(store.how_of("p1", "a1").await.as_deref(), Some("created"));
        assert_eq!(store.how_of("p1", "a2").await.as_deref(), Some("adopted"));
        assert_eq!(store.how_of("p2", "a1").await.as_deref(), Some("adopted"));
        assert!(store.owns_account("p1", "a1").await.unwrap());
        assert!(!store.owns_account("p1", "a3").await.unwrap());
        assert!(!store.owns_account("p3", "a1").await.unwrap());
        assert_eq!(store.owned_accounts("p1").await.unwrap(), ids(["a1", "a2"]));
        assert!(store.owned_accounts("p3").await.unwrap().is_empty());

        store
            .record_memberships(
                "p1",
                "staff",
                &[rec("a1", Acquired::Created), rec("a2", Acquired::Adopted)],
            )
            .await
            .unwrap();
        store
            .record_memberships("p1", "admins", &[rec("a1", Acquired::Created)])
            .await
            .unwrap();
        assert!(store.owns_membership("p1", "staff", "a2").await.unwrap());
        assert!(!store.owns_membership("p1", "staff", "a3").await.unwrap());
        assert!(!store.owns_membership("p2", "staff", "a1").await.unwrap());
        assert_eq!(
            store.owned_members("p1", "staff").await.unwrap(),
            ids(["a1", "a2"])
        );
        store
            .forget_memberships("p1", "staff", &["a2".into()])
            .await
            .unwrap();
        assert_eq!(
            store.owned_members("p1", "staff").await.unwrap(),
            ids(["a1"])
        );
        // An account forgotten takes its memberships along, in every group.
        store.forget_accounts("p1", &["a1".into()]).await.unwrap();
        assert_eq!(store.owned_accounts("p1").await.unwrap(), ids(["a2"]));
        assert!(store.owned_members("p1", "staff").await.unwrap().is_empty());
        assert!(store
            .owned_members("p1", "admins")
            .await
            .unwrap()
            .is_empty());
        assert!(store.owns_account("p2", "a1").await.unwrap(), "p2's stays");

        // A sync's batch is one call, whatever its size; odd values are kept
        // as the engine will look them up.
        let batch: Vec<Owned> = (0..3000)
            .map(|i| rec(&format!("b{i}"), Acquired::Adopted))
            .chain([rec("nul\0id", Acquired::Created)])
            .collect();
        store.record_accounts("p1", &batch).await.unwrap();
        store
            .record_memberships("p1", "staff", &batch)
            .await
            .unwrap();
        assert_eq!(store.owned_accounts("p1").await.unwrap().len(), 3002);
        assert_eq!(
            store.owned_members("p1", "staff").await.unwrap().len(),
            3001
        );
        assert!(store.owns_account("p1", "nul\0id").await.unwrap());
        let gone: Vec<String> = (0..1000).map(|i| format!("b{i}")).collect();
        store.forget_accounts("p1", &gone).await.unwrap();
        store
            .forget_memberships("p1", "staff", &["b1000".into()])
            .await
            .unwrap();
        assert_eq!(store.owned_accounts("p1").await.unwrap().len(), 2002);
        assert_eq!(
            store.owned_members("p1", "staff").await.unwrap().len(),
            2000
        );

        // Retention is for journal rows only.
        journal.prune(now_ms() + 10_000 * DAY_MS).await.unwrap();
        assert!(store.owns_account("p1", "a2").await.unwrap());
        journal.close(deadline(30)).await.unwrap();

        // Kept across a reopen; a store opened for its records alone reads them.
        let alone = OwnershipStore::open(&settings).await.unwrap();
        assert_eq!(alone.owned_accounts("p1").await.unwrap().len(), 2002);
        assert!(alone.owns_account("p2", "a1").await.unwrap());
        alone.close().await;
    }

    #[tokio::test]
    async fn sqlite_ownership_records_are_kept_queried_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        scenario(sqlite_settings(&dir.path().join("j.sqlite"))).await;
    }

    #[tokio::test]
    async fn postgres_ownership_records_are_kept_queried_and_forgotten() {
        let schema = PgSchema::create().await;
        scenario(schema.settings()).await;
    }

    /// A store that does not answer fails the call within the store's
    /// timeout, with an error, never silently.
    #[tokio::test]
    async fn postgres_down_fails_ownership_calls_with_an_error() {
        let schema = PgSchema::create().await;
        let base = url::Url::parse(&postgres_base_url()).unwrap();
        let proxy = Proxy::start(format!(
            "{}:{}",
            base.host_str().unwrap(),
            base.port().unwrap_or(5432)
        ))
        .await;
        let mut settings = JournalSettings::new(Store::Postgres(schema.url_via(Some(proxy.addr))));
        settings.store_timeout = Duration::from_secs(1);
        let journal = open(settings).await;
        let store = journal.ownership();
        store
            .record_accounts("p1", &[rec("a1", Acquired::Created)])
            .await
            .unwrap();
        proxy.down();
        let started = Instant::now();
        let err = store
            .record_accounts("p1", &[rec("a2", Acquired::Created)])
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(store.owned_accounts("p1").await.is_err());
        proxy.up();
        let _ = journal.close(deadline(5)).await;
    }
}
