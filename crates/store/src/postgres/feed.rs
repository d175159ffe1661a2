//! Feeds on Postgres: a feed's rows read by a range of its time column,
//! consumers' cursors in `<prefix>0_feed_consumers`, waits woken by the
//! `NOTIFY` every commit sends, and [`ack_in`]: a cursor stored inside the
//! application's own transaction, so processing and acknowledging commit
//! together (exactly once).

use std::any::Any;
use std::borrow::BorrowMut;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graph::{Consumer, FeedStore, GraphError, StateSpec, StoreError, Value};
use tokio_postgres::GenericClient;

use super::runtime::{block_on, pg};
use super::{PgSql, Postgres};
use crate::sql::{self, OwnNames, SqlRow, TableSchema};
use crate::wait::Backoff;

impl Postgres {
    /// The table of feed `spec` (this graph's, or attached and checked to
    /// have its shape).
    fn feed_schema(&mut self, spec: &StateSpec) -> Result<Arc<(TableSchema, PgSql)>, StoreError> {
        let tables = Arc::clone(&self.tables);
        if let Some(i) = tables
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape())
        {
            let schema = tables.schemas[i].clone();
            let sql = PgSql::of(&schema);
            return Ok(Arc::new((schema, sql)));
        }
        self.attach(spec)
    }

    fn consumers_table(&self) -> String {
        consumers_table(&self.tables.prefix)
    }

    /// Runs `statement` with `params` on a pooled connection, after creating
    /// the consumers' table if needed.
    fn consumers_query(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: String,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let table = self.consumers_table();
        let ready = &self.consumers_ready;
        block_on(async {
            let conn = self.client().await?;
            if !ready.load(std::sync::atomic::Ordering::Relaxed) {
                create_consumers_table(&**conn, &table).await?;
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            conn.query(statement, params).await.map_err(pg(what))
        })?
    }
}

fn consumers_table(prefix: &str) -> String {
    OwnNames::name(prefix, "feed_consumers")
}

async fn create_consumers_table<C: GenericClient>(conn: &C, table: &str) -> Result<(), StoreError> {
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (feed TEXT NOT NULL, consumer TEXT NOT NULL, \
         acked BIGINT NOT NULL, PRIMARY KEY (feed, consumer))"
    ))
    .await
    .or_else(|e| {
        // Two sessions creating it at once: one of them loses the race.
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            Ok(())
        } else {
            Err(pg(format!("creating `{table}`"))(e))
        }
    })
}

fn ack_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} AS f (feed, consumer, acked) VALUES ($1, $2, $3) \
         ON CONFLICT (feed, consumer) DO UPDATE SET acked = GREATEST(f.acked, excluded.acked)"
    )
}

impl FeedStore for Postgres {
    fn feed_frontier(&mut self) -> Result<i64, StoreError> {
        self.last_time()
    }

    fn feed_read(
        &mut self,
        spec: &StateSpec,
        after: i64,
        upto: i64,
        max_times: usize,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let table = self.feed_schema(spec)?;
        let schema = &table.0;
        let (t, k) = (&schema.name, crate::sql::first_column(schema)?);
        let limit = i64::try_from(max_times).unwrap_or(i64::MAX);
        let statement = format!(
            "SELECT identity, data, c FROM {t} WHERE {k} > $1 AND {k} <= \
             coalesce((SELECT max({k}) FROM (SELECT DISTINCT {k} FROM {t} \
             WHERE {k} > $1 AND {k} <= $2 ORDER BY {k} LIMIT $3) AS times), $2) ORDER BY {k}"
        );
        let rows = block_on(async {
            let conn = self.client().await?;
            conn.query(&statement, &[&after, &upto, &limit])
                .await
                .map_err(pg(format!("reading feed `{t}`")))
        })??;
        let rows = rows
            .into_iter()
            .map(|r| {
                Ok(SqlRow {
                    identity: r.try_get(0)?,
                    data: r.try_get::<_, Vec<u8>>(1)?,
                    weight: r.try_get(2)?,
                    step: 0,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(pg(format!("reading feed `{t}`")))?;
        sql::decode_rows(spec, schema, rows, sink)
    }

    fn feed_register(&mut self, spec: &StateSpec, consumer: &str) -> Result<i64, StoreError> {
        self.feed_schema(spec)?;
        let table = self.consumers_table();
        let feed = spec.path().as_str();
        let rows = self.consumers_query(
            &format!(
                "WITH new AS (INSERT INTO {table} (feed, consumer, acked) VALUES ($1, $2, 0) \
                 ON CONFLICT (feed, consumer) DO NOTHING RETURNING acked) \
                 SELECT acked FROM new UNION ALL \
                 SELECT acked FROM {table} WHERE feed = $1 AND consumer = $2"
            ),
            &[&feed, &consumer],
            format!("registering consumer `{consumer}` of `{feed}`"),
        )?;
        rows.iter()
            .map(|r| r.try_get::<_, i64>(0))
            .try_fold(0, |m, t| t.map(|t| m.max(t)))
            .map_err(pg(format!("reading consumer `{consumer}` of `{feed}`")))
    }

    fn feed_ack(&mut self, spec: &StateSpec, consumer: &str, time: i64) -> Result<i64, StoreError> {
        let table = self.consumers_table();
        let feed = spec.path().as_str();
        let what = format!("acknowledging time {time} for `{consumer}` of `{feed}`");
        let rows = self.consumers_query(
            &format!(
                "WITH acked AS ({} RETURNING acked) \
                 SELECT min(acked) FROM (SELECT acked FROM {table} WHERE feed = $1 AND consumer <> $2 \
                 UNION ALL SELECT acked FROM acked) AS a",
                ack_sql(&table)
            ),
            &[&feed, &consumer, &time],
            what.clone(),
        )?;
        let horizon: Option<i64> = match rows.first() {
            Some(r) => r.try_get(0).map_err(pg(what))?,
            None => None,
        };
        Ok(horizon.unwrap_or(time))
    }

    fn feed_unregister(&mut self, spec: &StateSpec, consumer: &str) -> Result<(), StoreError> {
        let table = self.consumers_table();
        let feed = spec.path().as_str();
        self.consumers_query(
            &format!("DELETE FROM {table} WHERE feed = $1 AND consumer = $2"),
            &[&feed, &consumer],
            format!("forgetting consumer `{consumer}` of `{feed}`"),
        )?;
        Ok(())
    }

    fn feed_trim(
        &mut self,
        spec: &StateSpec,
        upto: i64,
        _removal: Option<Value>,
    ) -> Result<(), StoreError> {
        let table = self.feed_schema(spec)?;
        let schema = &table.0;
        let (t, k) = (&schema.name, crate::sql::first_column(schema)?);
        block_on(async {
            let conn = self.client().await?;
            conn.execute(&format!("DELETE FROM {t} WHERE {k} <= $1"), &[&upto])
                .await
                .map(|_| ())
                .map_err(pg(format!("deleting acknowledged rows of feed `{t}`")))
        })?
    }

    fn feed_wait(&mut self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(self.poll.0, self.poll.1);
        let mut wake = self.wake();
        loop {
            // Marked seen before the frontier is read, so a commit in
            // between still wakes.
            if let Some(w) = wake.as_mut() {
                w.borrow_and_update();
            }
            let frontier = self.last_time()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if frontier > after || left.is_zero() {
                return Ok(frontier);
            }
            let pause = backoff.next(left);
            let woken = block_on(async {
                match wake.as_mut() {
                    Some(w) => tokio::time::timeout(pause, w.changed()).await,
                    None => {
                        tokio::time::sleep(pause).await;
                        Ok(Ok(()))
                    }
                }
            })?;
            if let Ok(Err(_)) = woken {
                // The listener is gone: poll only.
                wake = None;
            }
        }
    }
}

/// Acknowledges `time` for `consumer` inside the application's own
/// transaction (or any client of the consumer's database): the cursor moves
/// if and only if that transaction commits, so when the application writes
/// what it made of the changes in the same transaction, each change is
/// processed exactly once. After a rollback, call
/// [`Consumer::rewind`] to have the changes delivered again. Rows are
/// deleted by retention at the consumer's next [`Consumer::ack`] or
/// [`Consumer::apply_retention`].
///
/// ```no_run
/// # fn run(
/// #     consumer: &mut graph::Consumer<i64, stepping_store::Postgres>,
/// #     rt: &tokio::runtime::Runtime,
/// #     client: &mut tokio_postgres::Client,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// // The store is synchronous: poll outside the application's runtime
/// // (or in `spawn_blocking`).
/// let changes = consumer.poll(100)?;
/// if let Some((last, _)) = changes.last() {
///     rt.block_on(async {
///         let tx = client.transaction().await?;
///         // ... write what the changes mean with `tx` ...
///         stepping_store::ack_in(consumer, &tx, *last).await?;
///         tx.commit().await?;
///         Ok::<_, Box<dyn std::error::Error>>(())
///     })?;
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`StoreError::AckAhead`] for a time after the consumer's position; a
/// database failure.
pub async fn ack_in<T, S, C>(
    consumer: &mut Consumer<T, S>,
    client: &C,
    time: i64,
) -> Result<(), GraphError>
where
    T: zset::Data,
    S: BorrowMut<Postgres> + FeedStore,
    C: GenericClient,
{
    if time > consumer.position() {
        return Err(StoreError::AckAhead {
            feed: consumer.spec().path().to_string(),
            consumer: consumer.name().to_owned(),
            time,
            position: consumer.position(),
        }
        .into());
    }
    let prefix = consumer.store().borrow_mut().tables.prefix.clone();
    let table = consumers_table(&prefix);
    let feed = consumer.spec().path().to_string();
    let name = consumer.name().to_owned();
    client
        .execute(&ack_sql(&table), &[&feed, &name, &time])
        .await
        .map_err(pg(format!(
            "acknowledging time {time} for `{name}` of `{feed}` in the caller's transaction"
        )))?;
    Ok(())
}
