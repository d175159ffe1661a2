//! `PgSequence`: batch numbers shared by processes through a Postgres sequence.

use std::sync::Arc;

use graph::{StateStore, StoreError};

use super::PgPool;
use super::Postgres;
use super::claims;
use super::failed::create_failed_table;
use super::runtime::{block_on, pg};
use super::schema::{lock_prefix, relations};
use crate::sql::OwnNames;

/// A Postgres `SEQUENCE` handing out input times to workers in any number
/// of processes (`<prefix>0_time`), created on first use to start after the
/// store's last recorded time.
///
/// Taking a time also claims it, in the same statement, for the session
/// that took it (a connection of the store's pool) and for a batch number
/// if the caller gives one ([`next_for`](Self::next_for)). A process that
/// dies holding times it never committed leaves them claimed by sessions
/// that no longer exist: a frontier wait that is stuck on such a time marks
/// it failed (as [`StateStore::record_failure`] would, its changes unknown,
/// naming the claim's batch) so that the times after it proceed, and
/// [`StateStore::failed_batches`] lists it. So a process must keep its
/// store's pool (the sequence, or a store sharing its pool) open until
/// every time it took is committed or recorded as failed, and every time
/// of the tables must come from the sequence.
#[derive(Debug)]
pub struct PgSequence {
    pub(super) pool: PgPool,
    pub(super) name: String,
    /// Takes a time and claims it (see `claims::take_sql`).
    pub(super) take: String,
    pub(super) names: Vec<String>,
}

impl PgSequence {
    /// The time sequence of `store`'s tables, with its claims table.
    ///
    /// # Errors
    /// A database failure.
    pub fn of(store: &mut Postgres) -> Result<PgSequence, StoreError> {
        let next = store.next_time()?;
        let tables = Arc::clone(&store.tables);
        let name = store.tables.own.time.clone();
        let legacy = OwnNames::legacy_time(&store.tables.prefix);
        let pool = store.pool.clone();
        let prefix = store.tables.prefix.clone();
        block_on(async {
            let mut conn = store.client().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("creating the time sequence"))?;
            // Under the prefix's lock, as the tables are: handles creating
            // it at once would otherwise collide.
            lock_prefix(&*tx, &prefix).await?;
            // An earlier version's sequence carries on where it was.
            let found = relations(&*tx, &[legacy.as_str(), name.as_str()]).await?;
            let sql = if !found.contains_key(&name)
                && found.get(&legacy).is_some_and(|r| r.kind == "S")
            {
                format!("ALTER SEQUENCE {legacy} RENAME TO {name}")
            } else {
                format!("CREATE SEQUENCE IF NOT EXISTS {name} START WITH {next}")
            };
            tx.batch_execute(&sql)
                .await
                .map_err(pg("creating the time sequence"))?;
            tx.batch_execute(&claims::create_claims_sql(&prefix))
                .await
                .map_err(pg("creating the time claims table"))?;
            tx.commit()
                .await
                .map_err(pg("creating the time sequence"))?;
            create_failed_table(&conn, &tables).await
        })??;
        Ok(PgSequence {
            pool,
            name,
            take: claims::take_sql(&tables),
            names: tables.names(),
        })
    }

    /// The next time, claimed for no batch in particular.
    ///
    /// # Errors
    /// A database failure.
    pub fn next(&self) -> Result<i64, StoreError> {
        self.take(None)
    }

    /// The next time, claimed for batch `batch`: if the process dies before
    /// committing it, its failed-batch record names this batch.
    ///
    /// # Errors
    /// A database failure, or a time released by a waiter as abandoned
    /// before its claim could be recorded.
    pub fn next_for(&self, batch: i64) -> Result<i64, StoreError> {
        self.take(Some(batch))
    }

    pub(super) fn take(&self, batch: Option<i64>) -> Result<i64, StoreError> {
        let context = format!("taking a time from `{}`", self.name);
        block_on(async {
            let conn = self
                .pool
                .pool
                .get()
                .await
                .map_err(|e| StoreError::backend("getting a connection", e))?;
            let stmt = conn
                .prepare_cached(&self.take)
                .await
                .map_err(pg(context.clone()))?;
            let row = conn
                .query_one(&stmt, &[&batch, &self.names])
                .await
                .map_err(|e| {
                    let released = e.as_db_error().is_some_and(|d| {
                        d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    });
                    if released {
                        StoreError::backend(
                            context.clone(),
                            "the time taken was released as abandoned by a waiter before its \
                             claim was recorded (see the failed batches); take another",
                        )
                    } else {
                        pg(context.clone())(e)
                    }
                })?;
            row.try_get::<_, i64>(0).map_err(pg(context.clone()))
        })?
    }
}
