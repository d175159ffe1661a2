//! Feeds on SQLite: a feed's rows read by a range of its time column (the
//! table is clustered on it), consumers' cursors in `<prefix>0_feed_consumers`,
//! waits woken by this process's commits and polling across processes.

use std::any::Any;
use std::time::{Duration, Instant};

use graph::{FeedStore, StateSpec, StoreError, Value};
use rusqlite::OptionalExtension;

use super::Sqlite;
use super::encode::{SqliteDialect, backend};
use super::schema::check_table;
use super::statements::TableSql;
use crate::sql::{self, OwnNames, SqlRow, TableSchema};
use crate::wait::Backoff;

impl Sqlite {
    /// The table of feed `spec` (this graph's, or attached and checked to
    /// have its shape).
    fn feed_schema(&mut self, spec: &StateSpec) -> Result<TableSchema, StoreError> {
        if let Some(i) = self
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape())
        {
            return Ok(self.schemas[i].clone());
        }
        let path = spec.path().to_string();
        let schema = TableSchema::of(spec, &self.prefix, &SqliteDialect);
        if !self.attached.contains_key(&path) {
            let (tables, _) = self.meta();
            if !check_table(&self.conn, &tables, &schema)? {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path,
                });
            }
            let sql = TableSql::of(&schema);
            self.attached.insert(path.clone(), (schema.clone(), sql));
        }
        Ok(schema)
    }

    fn consumers_table(&self) -> Result<String, StoreError> {
        let table = OwnNames::name(&self.prefix, "feed_consumers");
        if self.consumers_ready.get() {
            return Ok(table);
        }
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (feed TEXT NOT NULL, consumer TEXT NOT NULL, \
                 acked INTEGER NOT NULL, PRIMARY KEY (feed, consumer))"
            ))
            .map_err(backend(format!("creating `{table}`")))?;
        self.consumers_ready.set(true);
        Ok(table)
    }
}

impl FeedStore for Sqlite {
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
        let schema = self.feed_schema(spec)?;
        let (t, k) = (&schema.name, sql::first_column(&schema)?);
        let limit = i64::try_from(max_times).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT identity, data, c FROM {t} WHERE {k} > ?1 AND {k} <= \
                 coalesce((SELECT max({k}) FROM (SELECT DISTINCT {k} FROM {t} \
                 WHERE {k} > ?1 AND {k} <= ?2 ORDER BY {k} LIMIT ?3)), ?2) ORDER BY {k}"
            ))
            .map_err(backend(format!("reading feed `{t}`")))?;
        let rows = st
            .query_map((after, upto, limit), |r| {
                Ok(SqlRow {
                    identity: r.get(0)?,
                    data: r.get::<_, Vec<u8>>(1)?,
                    weight: r.get(2)?,
                    step: 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(backend(format!("reading feed `{t}`")))?;
        sql::decode_rows(spec, &schema, rows, sink)
    }

    fn feed_register(&mut self, spec: &StateSpec, consumer: &str) -> Result<i64, StoreError> {
        self.feed_schema(spec)?;
        let table = self.consumers_table()?;
        let feed = spec.path().as_str();
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {table} (feed, consumer, acked) VALUES (?1, ?2, 0) \
                 ON CONFLICT (feed, consumer) DO NOTHING"
            ))
            .and_then(|mut s| s.execute((feed, consumer)))
            .map_err(backend(format!(
                "registering consumer `{consumer}` of `{feed}`"
            )))?;
        let acked: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "SELECT acked FROM {table} WHERE feed = ?1 AND consumer = ?2"
            ))
            .and_then(|mut s| s.query_row((feed, consumer), |r| r.get(0)).optional())
            .map_err(backend(format!(
                "reading consumer `{consumer}` of `{feed}`"
            )))?;
        Ok(acked.unwrap_or(0))
    }

    fn feed_ack(&mut self, spec: &StateSpec, consumer: &str, time: i64) -> Result<i64, StoreError> {
        let table = self.consumers_table()?;
        let feed = spec.path().as_str();
        let what = || {
            backend(format!(
                "acknowledging time {time} for `{consumer}` of `{feed}`"
            ))
        };
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {table} (feed, consumer, acked) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (feed, consumer) DO UPDATE SET acked = max(acked, excluded.acked)"
            ))
            .and_then(|mut s| s.execute((feed, consumer, time)))
            .map_err(what())?;
        let horizon: Option<i64> = self
            .conn
            .prepare_cached(&format!("SELECT min(acked) FROM {table} WHERE feed = ?1"))
            .and_then(|mut s| s.query_row([feed], |r| r.get(0)))
            .map_err(what())?;
        Ok(horizon.unwrap_or(time))
    }

    fn feed_unregister(&mut self, spec: &StateSpec, consumer: &str) -> Result<(), StoreError> {
        let table = self.consumers_table()?;
        let feed = spec.path().as_str();
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE feed = ?1 AND consumer = ?2"
            ))
            .and_then(|mut s| s.execute((feed, consumer)))
            .map(|_| ())
            .map_err(backend(format!(
                "forgetting consumer `{consumer}` of `{feed}`"
            )))
    }

    fn feed_trim(
        &mut self,
        spec: &StateSpec,
        upto: i64,
        _removal: Option<Value>,
    ) -> Result<(), StoreError> {
        let schema = self.feed_schema(spec)?;
        let (t, k) = (&schema.name, sql::first_column(&schema)?);
        self.conn
            .prepare_cached(&format!("DELETE FROM {t} WHERE {k} <= ?1"))
            .and_then(|mut s| s.execute([upto]))
            .map(|_| ())
            .map_err(backend(format!("deleting acknowledged rows of feed `{t}`")))
    }

    fn feed_wait(&mut self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(self.poll.0, self.poll.1);
        loop {
            // Read before the frontier, so a commit in between still wakes.
            let seen = self.notifier.generation();
            let frontier = self.last_time()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if frontier > after || left.is_zero() {
                return Ok(frontier);
            }
            self.notifier.wait(seen, backoff.next(left));
        }
    }
}
