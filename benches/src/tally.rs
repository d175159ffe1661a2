//! Counters of SQLite stores that the parallel scheduler opens and drops:
//! [`Tallied`] adds a store's [`StoreStats`] to a shared total when it is
//! dropped, so that a bench can tell how long the workers of a run held the
//! file's single write lock ([`StoreStats::write_lock_held`]).

use std::any::Any;
use std::sync::{Arc, Mutex};

use graph::{FailedBatch, Read, StateSpec, StateStore, StateTx, StoreError, Time};
use store::StoreStats;

/// The counters of every store [`Tallied`] wrapped with it, summed.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Mutex<StoreStats>>);

impl Tally {
    /// The sum so far (of the stores already dropped).
    pub fn total(&self) -> StoreStats {
        self.0.lock().map(|s| *s).unwrap_or_default()
    }

    fn add(&self, s: StoreStats) {
        if let Ok(mut t) = self.0.lock() {
            t.rows_read += s.rows_read;
            t.rows_written += s.rows_written;
            t.statements += s.statements;
            t.write_lock_held += s.write_lock_held;
        }
    }
}

/// A SQLite store that adds its counters to a [`Tally`] when dropped.
#[derive(Debug)]
pub struct Tallied {
    inner: store::Sqlite,
    tally: Tally,
}

impl Tallied {
    /// Wraps `inner`, counting into `tally`.
    pub fn new(inner: store::Sqlite, tally: Tally) -> Self {
        Tallied { inner, tally }
    }
}

impl Drop for Tallied {
    fn drop(&mut self) {
        self.tally.add(self.inner.stats());
    }
}

impl StateStore for Tallied {
    fn fingerprint(&self) -> &str {
        self.inner.fingerprint()
    }
    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        self.inner.begin(time)
    }
    fn next_time(&mut self) -> Result<i64, StoreError> {
        self.inner.next_time()
    }
    fn last_time(&mut self) -> Result<i64, StoreError> {
        StateStore::last_time(&mut self.inner)
    }
    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        self.inner.read_committed(spec, read, sink)
    }
    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        self.inner.record_failure(time, batch, changes, error)
    }
    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        self.inner.failed_batches()
    }
    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        self.inner.forget_failure(input_time)
    }
    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        self.inner.begin_next()
    }
    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        self.inner.begin_retry(failed_input_time, time)
    }
    fn recover(&mut self) -> Result<Vec<graph::Rewound>, StoreError> {
        self.inner.recover()
    }
    fn state_rows(&mut self, spec: &graph::StateSpec) -> Result<u64, StoreError> {
        self.inner.state_rows(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::{Changes, Graph, GraphError};
    use operators::prelude::*;
    use std::time::{Duration, Instant};

    /// Opens a SQLite store of a one-table graph in `dir`, tallied.
    fn words(
        dir: &std::path::Path,
        tally: &Tally,
    ) -> Result<(Graph, graph::Input<String>, Tallied), GraphError> {
        let (graph, input) = Graph::build(|q| {
            let (input, words) = q.input::<String>("words")?;
            q.cache("word_set", words.distinct(), &[])?;
            Ok(input)
        })?;
        let sqlite = store::Sqlite::open(dir.join("t.db"), &graph, store::OpenOptions::default())?;
        Ok((graph, input, Tallied::new(sqlite, tally.clone())))
    }

    #[test]
    fn dropped_stores_add_the_time_they_held_the_write_lock() -> Result<(), GraphError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
        for pipelined in [false, true] {
            let tally = Tally::default();
            let (graph, input, mut store) = words(dir.path(), &tally)?;
            let started = Instant::now();
            for t in 1..=5 {
                let time = Time::new(t, t - 1);
                let time = if pipelined { time.pipelined() } else { time };
                let changes = Changes::new().insert(&input, [format!("w{t}")]);
                graph.iteration_at(&mut store, changes, time)?;
            }
            assert_eq!(tally.total(), StoreStats::default(), "counted when dropped");
            drop(store);
            let wall = started.elapsed();
            let total = tally.total();
            assert!(total.rows_written >= 5, "{total:?}");
            assert!(total.write_lock_held > Duration::ZERO, "{total:?}");
            assert!(total.write_lock_held <= wall, "{total:?} in {wall:?}");
            std::fs::remove_file(dir.path().join("t.db"))
                .map_err(|e| StoreError::backend("removing", e))?;
        }
        Ok(())
    }
}
