//! The ownership records in the journal's store: the engine's
//! [`Ownership`] over the same SQLite file or PostgreSQL database (and the
//! same pool) as the journal, in the tables of `migrations/*/0002_ownership.sql`.
//!
//! With `remove_only_owned`, unlike journal rows, these writes are made
//! while the event is applied and awaited: the engine fails the event
//! (transiently) when one fails, so none is ever dropped. Retention never
//! touches them.

use std::collections::HashSet;
use std::future::Future;

use async_trait::async_trait;
use sqlx::Row;

use super::store::{Db, Pool};
use super::{now_ms, Journal, JournalError, JournalSettings};
use crate::engine::ownership::{Owned, Ownership, OwnershipError};
use crate::target::ApiId;

const RECORD_ACCOUNT: &str = "INSERT INTO provisioner_owned_account \
    (provisioner, api_id, subject, how, at_ms) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (provisioner, api_id) DO NOTHING";
// PostgreSQL: a whole batch in one statement, each column bound as an array.
const RECORD_ACCOUNTS_UNNEST: &str = "INSERT INTO provisioner_owned_account \
    (provisioner, api_id, subject, how, at_ms) \
    SELECT $1, api_id, subject, how, $5 \
    FROM UNNEST($2::text[], $3::text[], $4::text[]) AS t(api_id, subject, how) \
    ON CONFLICT (provisioner, api_id) DO NOTHING";
const FORGET_ACCOUNT: &str =
    "DELETE FROM provisioner_owned_account WHERE provisioner = $1 AND api_id = $2";
const FORGET_ACCOUNT_MEMBERSHIPS: &str =
    "DELETE FROM provisioner_owned_membership WHERE provisioner = $1 AND member_id = $2";
const FORGET_ACCOUNTS_ANY: &str =
    "DELETE FROM provisioner_owned_account WHERE provisioner = $1 AND api_id = ANY($2::text[])";
const FORGET_ACCOUNTS_MEMBERSHIPS_ANY: &str = "DELETE FROM provisioner_owned_membership \
    WHERE provisioner = $1 AND member_id = ANY($2::text[])";
const OWNS_ACCOUNT: &str =
    "SELECT 1 FROM provisioner_owned_account WHERE provisioner = $1 AND api_id = $2";
const OWNED_ACCOUNTS: &str = "SELECT api_id FROM provisioner_owned_account WHERE provisioner = $1";

const RECORD_MEMBERSHIP: &str = "INSERT INTO provisioner_owned_membership \
    (provisioner, group_name, member_id, subject, how, at_ms) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (provisioner, group_name, member_id) DO NOTHING";
const RECORD_MEMBERSHIPS_UNNEST: &str = "INSERT INTO provisioner_owned_membership \
    (provisioner, group_name, member_id, subject, how, at_ms) \
    SELECT $1, $2, member_id, subject, how, $6 \
    FROM UNNEST($3::text[], $4::text[], $5::text[]) AS t(member_id, subject, how) \
    ON CONFLICT (provisioner, group_name, member_id) DO NOTHING";
const FORGET_MEMBERSHIP: &str = "DELETE FROM provisioner_owned_membership \
    WHERE provisioner = $1 AND group_name = $2 AND member_id = $3";
const FORGET_MEMBERSHIPS_ANY: &str = "DELETE FROM provisioner_owned_membership \
    WHERE provisioner = $1 AND group_name = $2 AND member_id = ANY($3::text[])";
const OWNS_MEMBERSHIP: &str = "SELECT 1 FROM provisioner_owned_membership \
    WHERE provisioner = $1 AND group_name = $2 AND member_id = $3";
const OWNED_MEMBERS: &str = "SELECT member_id FROM provisioner_owned_membership \
    WHERE provisioner = $1 AND group_name = $2";

/// The ownership records of a journal store. Cheap to clone.
#[derive(Clone)]
pub struct OwnershipStore {
    db: Db,
}

impl Journal {
    /// The ownership records in this journal's store, over its pool.
    pub fn ownership(&self) -> OwnershipStore {
        OwnershipStore {
            db: self.inner.db.clone(),
        }
    }
}

impl OwnershipStore {
    /// Opens the store of `settings` for its ownership records alone
    /// (`replay`, which keeps no journal), bringing its schema up to date.
    pub async fn open(settings: &JournalSettings) -> Result<OwnershipStore, JournalError> {
        settings.validate()?;
        Ok(OwnershipStore {
            db: Db::open(settings).await?,
        })
    }

    /// Closes the connections of a store opened with [`OwnershipStore::open`].
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// How an account was acquired, as stored (for tests of the store).
    #[cfg(test)]
    pub(super) async fn how_of(&self, provisioner: &str, api_id: &str) -> Option<String> {
        const HOW: &str =
            "SELECT how FROM provisioner_owned_account WHERE provisioner = $1 AND api_id = $2";
        let row = match &self.db.pool {
            Pool::Sqlite(pool) => sqlx::query(HOW)
                .bind(provisioner)
                .bind(api_id)
                .fetch_optional(pool)
                .await
                .ok()??
                .try_get::<String, _>(0),
            Pool::Postgres(pool) => sqlx::query(HOW)
                .bind(provisioner)
                .bind(api_id)
                .fetch_optional(pool)
                .await
                .ok()??
                .try_get::<String, _>(0),
        };
        row.ok()
    }

    /// Runs `work` within the store's write timeout; every failure as an
    /// [`OwnershipError`] whose text shows no password.
    async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, OwnershipError> {
        match tokio::time::timeout(self.db.write_timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(OwnershipError(self.db.error(e).to_string())),
            Err(_) => Err(OwnershipError(
                self.db
                    .error(format!(
                        "no answer within {} s",
                        self.db.write_timeout.as_secs_f32()
                    ))
                    .to_string(),
            )),
        }
    }
}

/// PostgreSQL refuses NUL in text; the same value is stored and looked up
/// without it.
fn text(value: &str) -> String {
    if value.contains('\0') {
        value.replace('\0', "")
    } else {
        value.to_string()
    }
}

fn texts(values: &[ApiId]) -> Vec<String> {
    values.iter().map(|v| text(v)).collect()
}

/// The three columns of a batch of records.
fn columns(records: &[Owned]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut ids = Vec::with_capacity(records.len());
    let mut subjects = Vec::with_capacity(records.len());
    let mut hows = Vec::with_capacity(records.len());
    for r in records {
        ids.push(text(&r.api_id));
        subjects.push(text(&r.subject));
        hows.push(r.how.as_str().to_string());
    }
    (ids, subjects, hows)
}

#[async_trait]
impl Ownership for OwnershipStore {
    async fn record_accounts(
        &self,
        provisioner: &str,
        accounts: &[Owned],
    ) -> Result<(), OwnershipError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let provisioner = text(provisioner);
        let at = now_ms();
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for a in accounts {
                        sqlx::query(RECORD_ACCOUNT)
                            .bind(&provisioner)
                            .bind(text(&a.api_id))
                            .bind(text(&a.subject))
                            .bind(a.how.as_str())
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                Pool::Postgres(pool) => {
                    let (ids, subjects, hows) = columns(accounts);
                    sqlx::query(RECORD_ACCOUNTS_UNNEST)
                        .bind(&provisioner)
                        .bind(ids)
                        .bind(subjects)
                        .bind(hows)
                        .bind(at)
                        .execute(pool)
                        .await
                        .map(|_| ())
                }
            }
        })
        .await
    }

    async fn forget_accounts(
        &self,
        provisioner: &str,
        api_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        if api_ids.is_empty() {
            return Ok(());
        }
        let provisioner = text(provisioner);
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for id in api_ids {
                        for sql in [FORGET_ACCOUNT, FORGET_ACCOUNT_MEMBERSHIPS] {
                            sqlx::query(sql)
                                .bind(&provisioner)
                                .bind(text(id))
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await
                }
                Pool::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    for sql in [FORGET_ACCOUNTS_ANY, FORGET_ACCOUNTS_MEMBERSHIPS_ANY] {
                        sqlx::query(sql)
                            .bind(&provisioner)
                            .bind(texts(api_ids))
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
            }
        })
        .await
    }

    async fn owns_account(&self, provisioner: &str, api_id: &str) -> Result<bool, OwnershipError> {
        let (provisioner, api_id) = (text(provisioner), text(api_id));
        self.run(async {
            let found = match &self.db.pool {
                Pool::Sqlite(pool) => sqlx::query(OWNS_ACCOUNT)
                    .bind(&provisioner)
                    .bind(&api_id)
                    .fetch_optional(pool)
                    .await?
                    .is_some(),
                Pool::Postgres(pool) => sqlx::query(OWNS_ACCOUNT)
                    .bind(&provisioner)
                    .bind(&api_id)
                    .fetch_optional(pool)
                    .await?
                    .is_some(),
            };
            Ok(found)
        })
        .await
    }

    async fn owned_accounts(&self, provisioner: &str) -> Result<HashSet<ApiId>, OwnershipError> {
        let provisioner = text(provisioner);
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => sqlx::query(OWNED_ACCOUNTS)
                    .bind(&provisioner)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect(),
                Pool::Postgres(pool) => sqlx::query(OWNED_ACCOUNTS)
                    .bind(&provisioner)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect(),
            }
        })
        .await
    }

    async fn record_memberships(
        &self,
        provisioner: &str,
        group: &str,
        members: &[Owned],
    ) -> Result<(), OwnershipError> {
        if members.is_empty() {
            return Ok(());
        }
        let (provisioner, group) = (text(provisioner), text(group));
        let at = now_ms();
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for m in members {
                        sqlx::query(RECORD_MEMBERSHIP)
                            .bind(&provisioner)
                            .bind(&group)
                            .bind(text(&m.api_id))
                            .bind(text(&m.subject))
                            .bind(m.how.as_str())
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                Pool::Postgres(pool) => {
                    let (ids, subjects, hows) = columns(members);
                    sqlx::query(RECORD_MEMBERSHIPS_UNNEST)
                        .bind(&provisioner)
                        .bind(&group)
                        .bind(ids)
                        .bind(subjects)
                        .bind(hows)
                        .bind(at)
                        .execute(pool)
                        .await
                        .map(|_| ())
                }
            }
        })
        .await
    }

    async fn forget_memberships(
        &self,
        provisioner: &str,
        group: &str,
        member_ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        if member_ids.is_empty() {
            return Ok(());
        }
        let (provisioner, group) = (text(provisioner), text(group));
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for id in member_ids {
                        sqlx::query(FORGET_MEMBERSHIP)
                            .bind(&provisioner)
                            .bind(&group)
                            .bind(text(id))
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await
                }
                Pool::Postgres(pool) => sqlx::query(FORGET_MEMBERSHIPS_ANY)
                    .bind(&provisioner)
                    .bind(&group)
                    .bind(texts(member_ids))
                    .execute(pool)
                    .await
                    .map(|_| ()),
            }
        })
        .await
    }

    async fn owns_membership(
        &self,
        provisioner: &str,
        group: &str,
        member_id: &str,
    ) -> Result<bool, OwnershipError> {
        let (provisioner, group, member_id) = (text(provisioner), text(group), text(member_id));
        self.run(async {
            let found = match &self.db.pool {
                Pool::Sqlite(pool) => sqlx::query(OWNS_MEMBERSHIP)
                    .bind(&provisioner)
                    .bind(&group)
                    .bind(&member_id)
                    .fetch_optional(pool)
                    .await?
                    .is_some(),
                Pool::Postgres(pool) => sqlx::query(OWNS_MEMBERSHIP)
                    .bind(&provisioner)
                    .bind(&group)
                    .bind(&member_id)
                    .fetch_optional(pool)
                    .await?
                    .is_some(),
            };
            Ok(found)
        })
        .await
    }

    async fn owned_members(
        &self,
        provisioner: &str,
        group: &str,
    ) -> Result<HashSet<ApiId>, OwnershipError> {
        let (provisioner, group) = (text(provisioner), text(group));
        self.run(async {
            match &self.db.pool {
                Pool::Sqlite(pool) => sqlx::query(OWNED_MEMBERS)
                    .bind(&provisioner)
                    .bind(&group)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect(),
                Pool::Postgres(pool) => sqlx::query(OWNED_MEMBERS)
                    .bind(&provisioner)
                    .bind(&group)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect(),
            }
        })
        .await
    }
}
