//! The two stores behind one small interface: open and migrate, insert a
//! batch, select a page, prune, close. SQL is shared where the dialects agree
//! (`$N` parameters work in both); only the batch insert differs.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ColumnIndex, ConnectOptions, Decode, Row, Type};

use super::{
    Entry, EventResult, Filter, JournalError, JournalSettings, Pruned, Store, StoredEntry,
    TargetCall,
};

/// The table, in both stores.
const TABLE: &str = "provisioner_journal";

/// Connections per process: one for the writer, one for retention, the rest
/// for queries.
const MAX_CONNECTIONS: u32 = 4;

/// Rows deleted per statement, so that retention never holds the write lock
/// long enough to stall the writer.
const PRUNE_CHUNK: i64 = 5000;

/// Longest detail kept, in bytes.
const MAX_DETAIL_BYTES: usize = 4096;
/// Longest id, name or label kept, in bytes.
const MAX_LABEL_BYTES: usize = 512;
/// Most target calls kept per row.
const MAX_CALLS: usize = 1000;

// Embedded rather than read at run time, and listed by hand rather than with
// `sqlx::migrate!`, which would build a second copy of the drivers for the
// proc-macro. A test checks that this list matches the folders.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "journal",
        include_str!("../../migrations/sqlite/0001_journal.sql"),
    ),
    (
        2,
        "ownership",
        include_str!("../../migrations/sqlite/0002_ownership.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "journal",
        include_str!("../../migrations/postgres/0001_journal.sql"),
    ),
    (
        2,
        "ownership",
        include_str!("../../migrations/postgres/0002_ownership.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[cfg(test)]
pub(super) fn embedded_migrations(postgres: bool) -> Vec<(i64, &'static str)> {
    let list = if postgres {
        POSTGRES_MIGRATIONS
    } else {
        SQLITE_MIGRATIONS
    };
    list.iter().map(|(v, d, _)| (*v, *d)).collect()
}

#[derive(Clone)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open store. Cheap to clone.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: Pool,
    /// The store for messages, password redacted.
    shown: Arc<str>,
    /// What to scrub from error texts, as written and percent-decoded.
    secrets: Arc<[String]>,
    pub(super) write_timeout: Duration,
}

/// A row ready for the store: clipped, lowercased, calls as JSON.
pub(super) struct NewRow {
    pub(super) at_ms: i64,
    pub(super) provisioner: String,
    pub(super) event_id: String,
    pub(super) action: Option<String>,
    pub(super) group: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) result: &'static str,
    pub(super) detail: String,
    pub(super) attempts: i64,
    pub(super) api_calls: i64,
    pub(super) duration_ms: i64,
    pub(super) redelivered: bool,
    pub(super) worker: String,
    pub(super) calls: String,
}

impl NewRow {
    pub(super) fn from_entry(entry: Entry) -> NewRow {
        let calls: Vec<TargetCall> = entry
            .calls
            .into_iter()
            .take(MAX_CALLS)
            .map(|call| TargetCall {
                operation: clip(call.operation, MAX_LABEL_BYTES),
                method: clip(call.method, MAX_LABEL_BYTES),
                path_template: clip(call.path_template, MAX_LABEL_BYTES),
                ..call
            })
            .collect();
        // Serialising plain strings and numbers cannot fail; an empty list is
        // the harmless answer if it ever did.
        let calls = serde_json::to_string(&calls).unwrap_or_else(|_| "[]".into());
        NewRow {
            at_ms: entry.at_ms,
            provisioner: clip(entry.provisioner, MAX_LABEL_BYTES),
            event_id: clip(entry.event_id, MAX_LABEL_BYTES),
            action: entry.action.map(|a| clip(a, MAX_LABEL_BYTES)),
            group: entry.group.map(|g| clip(g, MAX_LABEL_BYTES)),
            subject: entry
                .subject
                .map(|s| clip(s.to_lowercase(), MAX_LABEL_BYTES)),
            result: entry.result.as_str(),
            detail: clip(entry.detail, MAX_DETAIL_BYTES),
            attempts: i64::from(entry.attempts),
            api_calls: i64::from(entry.api_calls),
            duration_ms: i64::try_from(entry.duration_ms).unwrap_or(i64::MAX),
            redelivered: entry.redelivered,
            worker: clip(entry.worker, MAX_LABEL_BYTES),
            calls,
        }
    }
}

/// `value` cut to at most `max` bytes on a character boundary, without NUL
/// characters, which PostgreSQL refuses in text (and would fail the batch).
fn clip(value: String, max: usize) -> String {
    let mut value = if value.contains('\0') {
        value.replace('\0', "")
    } else {
        value
    };
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// A bound parameter of a built query.
enum Value {
    Int(i64),
    Text(String),
}

// `Query::bind` has the same name but a different type per driver; a macro
// saves writing the loop twice.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
            };
        }
        query
    }};
}

const INSERT_ONE: &str = "INSERT INTO provisioner_journal \
    (at_ms, provisioner, event_id, action, group_name, subject, result, detail, \
     attempts, api_calls, duration_ms, redelivered, worker, calls) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

// One statement whatever the batch size: each column is bound as an array.
// ORDINALITY keeps the rows, and so their ids, in the order they were recorded.
const INSERT_UNNEST: &str = "INSERT INTO provisioner_journal \
    (at_ms, provisioner, event_id, action, group_name, subject, result, detail, \
     attempts, api_calls, duration_ms, redelivered, worker, calls) \
    SELECT at_ms, provisioner, event_id, action, group_name, subject, result, detail, \
     attempts, api_calls, duration_ms, redelivered, worker, calls \
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::bool[], \
     $13::text[], $14::text[]) WITH ORDINALITY AS t(at_ms, provisioner, event_id, action, \
     group_name, subject, result, detail, attempts, api_calls, duration_ms, redelivered, \
     worker, calls, ord) \
    ORDER BY ord";

const COLUMNS: &str = "id, at_ms, provisioner, event_id, action, group_name, subject, result, \
    detail, attempts, api_calls, duration_ms, redelivered, worker, calls";

impl Db {
    /// Connects, creating an SQLite file and its directory when missing, and
    /// runs the migrations.
    pub(super) async fn open(settings: &JournalSettings) -> Result<Db, JournalError> {
        let shown: Arc<str> = settings.store.redacted().into();
        let secrets: Arc<[String]> = match &settings.store {
            Store::Postgres(url) => secrets_of(url).into(),
            Store::Sqlite(_) => Arc::new([]),
        };
        let open_error = |e: sqlx::Error| JournalError::Open {
            store: shown.to_string(),
            reason: scrub(&e.to_string(), &secrets),
        };
        let (pool, migrations) = match &settings.store {
            Store::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(|source| {
                        JournalError::CreateDir {
                            path: dir.to_path_buf(),
                            source,
                        }
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // In WAL mode NORMAL cannot corrupt the file; a crash may
                    // lose the last transactions, which a journal can afford.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(settings.store_timeout)
                    .disable_statement_logging();
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(settings.store_timeout)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                (Pool::Sqlite(pool), SQLITE_MIGRATIONS)
            }
            Store::Postgres(url) => {
                let mut options = PgConnectOptions::from_str(url)
                    .map_err(open_error)?
                    .disable_statement_logging();
                if options.get_application_name().is_none() {
                    options = options.application_name("provisioner-journal");
                }
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(settings.store_timeout)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                (Pool::Postgres(pool), POSTGRES_MIGRATIONS)
            }
        };
        let migrate_error = |e: sqlx::migrate::MigrateError| JournalError::Migrate {
            store: shown.to_string(),
            reason: scrub(&e.to_string(), &secrets),
        };
        let migrator = Migrator::new(Embedded(migrations))
            .await
            .map_err(migrate_error)?;
        // Several processes may start together on one PostgreSQL database:
        // the migrator takes an advisory lock, so only one of them migrates.
        let migrated = match &pool {
            Pool::Sqlite(pool) => migrator.run(pool).await,
            Pool::Postgres(pool) => migrator.run(pool).await,
        };
        if let Err(e) = migrated {
            close_pool(&pool).await;
            return Err(migrate_error(e));
        }
        Ok(Db {
            pool,
            shown,
            secrets,
            // Past the store's own timeouts, so their errors come first; this
            // one only catches a connection that hangs.
            write_timeout: settings.store_timeout * 3,
        })
    }

    pub(super) fn error(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError::Store {
            store: self.shown.to_string(),
            reason: scrub(&e.to_string(), &self.secrets),
        }
    }

    /// Inserts `rows` in one transaction: all or none.
    pub(super) async fn insert(&self, rows: &[NewRow]) -> Result<(), JournalError> {
        if rows.is_empty() {
            return Ok(());
        }
        let write = async {
            match &self.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for row in rows {
                        sqlx::query(INSERT_ONE)
                            .bind(row.at_ms)
                            .bind(&row.provisioner)
                            .bind(&row.event_id)
                            .bind(&row.action)
                            .bind(&row.group)
                            .bind(&row.subject)
                            .bind(row.result)
                            .bind(&row.detail)
                            .bind(row.attempts)
                            .bind(row.api_calls)
                            .bind(row.duration_ms)
                            .bind(row.redelivered)
                            .bind(&row.worker)
                            .bind(&row.calls)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                Pool::Postgres(pool) => {
                    let column = |f: fn(&NewRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
                    let optional =
                        |f: fn(&NewRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
                    let number = |f: fn(&NewRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
                    sqlx::query(INSERT_UNNEST)
                        .bind(number(|r| r.at_ms))
                        .bind(column(|r| r.provisioner.clone()))
                        .bind(column(|r| r.event_id.clone()))
                        .bind(optional(|r| r.action.clone()))
                        .bind(optional(|r| r.group.clone()))
                        .bind(optional(|r| r.subject.clone()))
                        .bind(column(|r| r.result.to_string()))
                        .bind(column(|r| r.detail.clone()))
                        .bind(number(|r| r.attempts))
                        .bind(number(|r| r.api_calls))
                        .bind(number(|r| r.duration_ms))
                        .bind(rows.iter().map(|r| r.redelivered).collect::<Vec<_>>())
                        .bind(column(|r| r.worker.clone()))
                        .bind(column(|r| r.calls.clone()))
                        .execute(pool)
                        .await
                        .map(|_| ())
                }
            }
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.error(format!(
                "no answer within {} s",
                self.write_timeout.as_secs_f32()
            ))),
        }
    }

    /// Up to `limit` rows matching `filter` with an id below `before`, newest
    /// first.
    pub(super) async fn select(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, JournalError> {
        let mut sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE 1 = 1");
        let mut values = Vec::new();
        let mut add = |condition: &str, value: Value| {
            values.push(value);
            sql.push_str(&format!(" AND {condition} ${}", values.len()));
        };
        if let Some(v) = &filter.provisioner {
            add("provisioner =", Value::Text(v.clone()));
        }
        if let Some(v) = &filter.subject {
            // Stored lowercased, so an equality keeps the index usable.
            add("subject =", Value::Text(v.to_lowercase()));
        }
        if let Some(v) = &filter.group {
            add("group_name =", Value::Text(v.clone()));
        }
        if let Some(v) = filter.result {
            add("result =", Value::Text(v.as_str().into()));
        }
        if let Some(v) = filter.from_ms {
            add("at_ms >=", Value::Int(v));
        }
        if let Some(v) = filter.to_ms {
            add("at_ms <", Value::Int(v));
        }
        if let Some(v) = &filter.event_id {
            add("event_id =", Value::Text(v.clone()));
        }
        if let Some(v) = filter.id {
            add("id =", Value::Int(v));
        }
        if let Some(v) = before {
            add("id <", Value::Int(v));
        }
        values.push(Value::Int(i64::from(limit)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len()));

        match &self.pool {
            Pool::Sqlite(pool) => {
                let rows = bind_values!(sqlx::query(&sql), values)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.error(e))?;
                rows.iter().map(|row| self.decode(row)).collect()
            }
            Pool::Postgres(pool) => {
                let rows = bind_values!(sqlx::query(&sql), values)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.error(e))?;
                rows.iter().map(|row| self.decode(row)).collect()
            }
        }
    }

    fn decode<'r, R>(&self, row: &'r R) -> Result<StoredEntry, JournalError>
    where
        R: Row,
        &'r str: ColumnIndex<R>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        bool: Decode<'r, R::Database> + Type<R::Database>,
    {
        let id: i64 = row.try_get("id").map_err(|e| self.error(e))?;
        let fail = |reason: String| JournalError::Decode { id, reason };
        let text = |name: &'r str| {
            row.try_get::<String, _>(name)
                .map_err(|e| fail(e.to_string()))
        };
        let optional = |name: &'r str| {
            row.try_get::<Option<String>, _>(name)
                .map_err(|e| fail(e.to_string()))
        };
        let number = |name: &'r str| row.try_get::<i64, _>(name).map_err(|e| fail(e.to_string()));
        let result = text("result")?;
        let result = EventResult::from_str(&result).map_err(fail)?;
        let calls: Vec<TargetCall> =
            serde_json::from_str(&text("calls")?).map_err(|e| fail(format!("calls: {e}")))?;
        Ok(StoredEntry {
            id,
            entry: Entry {
                at_ms: number("at_ms")?,
                provisioner: text("provisioner")?,
                event_id: text("event_id")?,
                action: optional("action")?,
                group: optional("group_name")?,
                subject: optional("subject")?,
                result,
                detail: text("detail")?,
                attempts: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
                api_calls: u32::try_from(number("api_calls")?).unwrap_or(u32::MAX),
                duration_ms: u64::try_from(number("duration_ms")?).unwrap_or(0),
                redelivered: row
                    .try_get::<bool, _>("redelivered")
                    .map_err(|e| fail(e.to_string()))?,
                worker: text("worker")?,
                calls,
            },
        })
    }

    async fn execute(&self, sql: &str, values: Vec<Value>) -> Result<u64, JournalError> {
        let done = match &self.pool {
            Pool::Sqlite(pool) => bind_values!(sqlx::query(sql), values)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Pool::Postgres(pool) => bind_values!(sqlx::query(sql), values)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        done.map_err(|e| self.error(e))
    }

    async fn first_id(&self, sql: &str, values: Vec<Value>) -> Result<Option<i64>, JournalError> {
        let found = match &self.pool {
            Pool::Sqlite(pool) => bind_values!(sqlx::query(sql), values)
                .fetch_optional(pool)
                .await
                .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose()),
            Pool::Postgres(pool) => bind_values!(sqlx::query(sql), values)
                .fetch_optional(pool)
                .await
                .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose()),
        };
        found.map_err(|e| self.error(e))
    }

    /// Deletes rows settled before `now_ms - max_age`, then the oldest rows
    /// beyond `max_rows`, a chunk per statement.
    pub(super) async fn prune(
        &self,
        now_ms: i64,
        max_age: Duration,
        max_rows: u64,
    ) -> Result<Pruned, JournalError> {
        let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(age_ms);
        let by_age = self
            .delete_chunks(
                &format!(
                    "DELETE FROM {TABLE} WHERE id IN \
                     (SELECT id FROM {TABLE} WHERE at_ms < $1 ORDER BY id LIMIT $2)"
                ),
                cutoff,
            )
            .await?;
        // The newest row beyond the limit: it and every older row go.
        let keep = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let last_to_delete = self
            .first_id(
                &format!("SELECT id FROM {TABLE} ORDER BY id DESC LIMIT 1 OFFSET $1"),
                vec![Value::Int(keep)],
            )
            .await?;
        let by_count = match last_to_delete {
            None => 0,
            Some(id) => {
                self.delete_chunks(
                    &format!(
                        "DELETE FROM {TABLE} WHERE id IN \
                         (SELECT id FROM {TABLE} WHERE id <= $1 ORDER BY id LIMIT $2)"
                    ),
                    id,
                )
                .await?
            }
        };
        Ok(Pruned { by_age, by_count })
    }

    /// Runs `sql` (with `$1` = `bound`, `$2` = the chunk size) until a
    /// statement deletes less than a chunk.
    async fn delete_chunks(&self, sql: &str, bound: i64) -> Result<u64, JournalError> {
        let mut total = 0;
        loop {
            let deleted = self
                .execute(sql, vec![Value::Int(bound), Value::Int(PRUNE_CHUNK)])
                .await?;
            total += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Closes every connection (an SQLite file is checkpointed on the last).
    pub(super) async fn close(&self) {
        close_pool(&self.pool).await;
    }
}

async fn close_pool(pool: &Pool) {
    match pool {
        Pool::Sqlite(pool) => pool.close().await,
        Pool::Postgres(pool) => pool.close().await,
    }
}

/// The password of a URL as written and percent-decoded: error texts from
/// the driver are scrubbed of both.
pub(super) fn secrets_of(url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let Some(password) = parsed.password().filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let mut secrets = vec![password.to_string()];
    if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
        if decoded != password {
            secrets.push(decoded.into_owned());
        }
    }
    secrets
}

pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |text, secret| text.replace(secret, "***"))
}
