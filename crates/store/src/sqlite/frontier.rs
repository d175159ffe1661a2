//! The frontier: each table's last applied time, read, waited for and moved on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use graph::StoreError;
use rusqlite::OptionalExtension;

use super::Sqlite;
use super::encode::backend;
use crate::sql::{self};
use crate::wait::Backoff;

impl Sqlite {
    /// `table`'s last update time; its row must exist (every table gets one
    /// when created).
    pub(super) fn time_of(&self, table: &str) -> Result<i64, StoreError> {
        self.last_update(table)?
            .ok_or_else(|| sql::unknown_time(&self.meta().1, table))
    }

    pub(super) fn last_update(&self, table: &str) -> Result<Option<i64>, StoreError> {
        let (_, last_update) = self.meta();
        self.conn
            .prepare_cached(&format!("SELECT t FROM {last_update} WHERE table_name = ?"))
            .and_then(|mut s| s.query_row([table], |r| r.get::<_, i64>(0)).optional())
            .map_err(backend(format!("reading the last update of `{table}`")))
    }

    pub(super) fn set_last_update(&self, table: &str, t: i64) -> Result<(), StoreError> {
        let (_, last_update) = self.meta();
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {last_update} (table_name, t) VALUES (?, ?) ON CONFLICT (table_name) DO UPDATE SET t = max(t, excluded.t)"
            ))
            .and_then(|mut s| s.execute((table, t)))
            .map(|_| ())
            .map_err(backend(format!("recording the last update of `{table}`")))
    }

    /// Waits until `table` has been written up to `frontier`: polls with
    /// backoff, woken early by commits of this process.
    pub(super) fn wait_for(
        &self,
        table: &str,
        frontier: i64,
        max_wait: Duration,
    ) -> Result<(), StoreError> {
        // With the query's generation: a handle of a query a migration
        // replaced is refused, rather than left waiting for a table the
        // new query's ingest may never move.
        self.wait_until(frontier, max_wait, || {
            let (at, seen) = self.time_and_generation(table)?;
            self.check_generation(seen)?;
            Ok(Some((table.to_owned(), at)))
        })
    }

    /// Waits until every table of this graph has been written up to
    /// `frontier`, with one query per poll.
    pub(super) fn wait_all(&self, frontier: i64, max_wait: Duration) -> Result<(), StoreError> {
        self.wait_until(frontier, max_wait, || {
            let times = self.times()?;
            Ok(self
                .schemas
                .iter()
                .zip(times)
                .min_by_key(|(_, t)| *t)
                .map(|(s, t)| (s.name.clone(), t)))
        })
    }

    /// The time of every table of this graph, in order, in one query.
    pub(super) fn times(&self) -> Result<Vec<i64>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&self.times_sql)
            .map_err(backend("reading the last updates"))?;
        let (_, last_update) = self.meta();
        let mut found: HashMap<String, i64> = HashMap::with_capacity(self.schemas.len());
        let mut rows = st
            .query([])
            .map_err(backend(format!("reading `{last_update}`")))?;
        while let Some(r) = rows
            .next()
            .map_err(backend(format!("reading `{last_update}`")))?
        {
            let table: String = r
                .get(0)
                .map_err(backend(format!("reading `{last_update}`")))?;
            let t = r
                .get(1)
                .map_err(|e| sql::bad_time(&last_update, &table, e))?;
            found.insert(table, t);
        }
        drop(rows);
        self.check_generation(found.get(&self.query_table()).copied().unwrap_or(0))?;
        self.schemas
            .iter()
            .map(|s| match found.get(&s.name) {
                Some(t) => Ok(*t),
                None => self.time_of(&s.name),
            })
            .collect()
    }

    /// Sets every table's time to (at least) `t`, in one statement.
    pub(super) fn set_all(&self, t: i64) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(&self.set_all_sql)
            .and_then(|mut st| st.execute([t]))
            .map_err(backend("recording the last updates"))?;
        if changed != self.schemas.len() {
            // A row went missing: recreate it (the frontier checks report
            // it before this can be reached in an iteration).
            for s in &self.schemas {
                self.set_last_update(&s.name, t)?;
            }
        }
        Ok(())
    }

    /// Polls `seen` (the table furthest behind and its time) until it has
    /// reached `frontier`.
    pub(super) fn wait_until(
        &self,
        frontier: i64,
        max_wait: Duration,
        seen: impl Fn() -> Result<Option<(String, i64)>, StoreError>,
    ) -> Result<(), StoreError> {
        let start = Instant::now();
        let mut backoff = Backoff::new(self.poll.0, self.poll.1);
        loop {
            let generation = self.notifier.generation();
            let Some((table, seen)) = seen()? else {
                return Ok(());
            };
            if seen >= frontier {
                return Ok(());
            }
            if start.elapsed() >= max_wait {
                return Err(StoreError::FrontierTimeout {
                    table,
                    frontier,
                    seen: Some(seen),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            self.notifier.wait(
                generation,
                backoff.next(max_wait.saturating_sub(start.elapsed())),
            );
        }
    }

    /// The first table among `times` (this graph's, in order) that has
    /// already recorded `time`, as the error an iteration at `time` gets.
    pub(super) fn already_applied(&self, times: &[i64], time: i64) -> Option<StoreError> {
        self.schemas
            .iter()
            .zip(times)
            .find(|(_, t)| **t >= time)
            .map(|(s, t)| StoreError::TimeAlreadyApplied {
                table: s.name.clone(),
                time,
                recorded: *t,
            })
    }
}
