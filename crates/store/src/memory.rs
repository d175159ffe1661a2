//! The in-memory store: typed tables, no serialization.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graph::{
    FailedBatch, Graph, MemTable, Path, PlanAction, PlanEntry, Read, Rewound, StateId, StateSpec,
    StateStore, StateTx, StoreError, Time, Value,
};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

#[path = "memory_feed.rs"]
mod feed;

/// How long a [`Memory`] iteration waits for a frontier by default.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

struct Shared {
    /// The graph the store was made for (`verify` runs a copy).
    graph: Graph,
    specs: Vec<StateSpec>,
    tables: Vec<RwLock<Box<dyn MemTable>>>,
    by_path: HashMap<Path, usize>,
    /// `last_update` per table; 0 for a new table.
    clock: Mutex<Vec<i64>>,
    tick: Condvar,
    /// Serializes commits so that readers see whole iterations.
    commit: Mutex<()>,
    /// Held by an iteration at the next time (`begin_next`) from its start
    /// to its end, so that two such iterations never read the same state.
    serial: Mutex<()>,
    failures: Mutex<Vec<FailedBatch>>,
    /// Set when [`Memory::migrate`] moved the state to another query's
    /// tables: handles of this one refuse to go on.
    migrated: Mutex<Option<graph::MigrationPlan>>,
    /// Feed consumers' cursors, by feed path and consumer name.
    consumers: Mutex<HashMap<(Path, String), i64>>,
}

/// A store that keeps every state in memory, typed (no serialization).
///
/// It implements the same protocol as the SQL stores: iterations are atomic
/// (writes are buffered and applied together at commit), [`Time`] frontiers
/// are waited for with a condition variable, and several workers can share
/// one store through [`Memory::handle`].
///
/// ```
/// # use graph::{Graph, GraphError};
/// # let (graph, _) = Graph::build(|q| Ok(q.input::<i64>("x")?.0))?;
/// let mut store = stepping_store::Memory::new(&graph);
/// assert_eq!(store.last_time(), 0);
/// # Ok::<(), GraphError>(())
/// ```
#[derive(Clone)]
pub struct Memory {
    shared: Arc<Shared>,
    fingerprint: String,
    max_wait: Duration,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Memory({} tables, last time {})",
            self.shared.tables.len(),
            self.last_time()
        )
    }
}

impl Memory {
    /// The table of `spec`'s path, checked to hold `spec`'s shape; an error
    /// says what `holder` holds and what `reader` expects.
    pub(crate) fn table_of(
        &self,
        spec: &StateSpec,
        holder: &str,
        reader: &str,
    ) -> Result<usize, StoreError> {
        let table = self
            .shared
            .by_path
            .get(spec.path())
            .copied()
            .ok_or_else(|| StoreError::MissingTable {
                table: spec.path().to_string(),
                path: spec.path().to_string(),
            })?;
        let mine = &self.shared.specs[table];
        if mine.shape() != spec.shape() {
            return Err(StoreError::SchemaMismatch {
                table: spec.path().to_string(),
                detail: format!(
                    "{holder} holds `{}`, {reader} expects `{}`",
                    mine.shape(),
                    spec.shape()
                ),
            });
        }
        Ok(table)
    }

    /// An empty store for `graph`'s states.
    pub fn new(graph: &Graph) -> Self {
        let specs = graph.states().to_vec();
        let tables = specs
            .iter()
            .map(|s| RwLock::new(s.codec().new_table()))
            .collect();
        let by_path = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path().clone(), i))
            .collect();
        let clock = Mutex::new(vec![0; specs.len()]);
        Memory {
            shared: Arc::new(Shared {
                graph: graph.clone(),
                specs,
                tables,
                by_path,
                clock,
                tick: Condvar::new(),
                commit: Mutex::new(()),
                serial: Mutex::new(()),
                failures: Mutex::new(Vec::new()),
                migrated: Mutex::new(None),
                consumers: Mutex::new(HashMap::new()),
            }),
            fingerprint: graph.fingerprint().to_owned(),
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    /// Another handle to the same tables, for another worker thread.
    pub fn handle(&self) -> Memory {
        self.clone()
    }

    /// Sets how long an iteration waits for its frontier before failing with
    /// [`StoreError::FrontierTimeout`] (default [`DEFAULT_MAX_WAIT`]).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The last input time committed to every table (the smallest
    /// `last_update`): every iteration up to it is fully applied.
    pub fn last_time(&self) -> i64 {
        self.shared.clock.lock().iter().copied().min().unwrap_or(0)
    }

    /// The whole of state number `s` as the deltas that write it into an
    /// empty table (see `MemTable::contents`).
    pub(crate) fn contents(&self, s: usize) -> Vec<Value> {
        self.shared.tables[s].read().contents()
    }

    /// How many rows each state holds, by path.
    pub fn row_counts(&self) -> Vec<(Path, usize)> {
        self.shared
            .specs
            .iter()
            .zip(&self.shared.tables)
            .map(|(s, t)| (s.path().clone(), t.read().len()))
            .collect()
    }
}

impl StateStore for Memory {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        self.shared.refuse_if_migrated()?;
        Ok(Box::new(MemoryTx::new(self, time, None)))
    }

    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        self.shared.refuse_if_migrated()?;
        Ok(Box::new(MemoryTx::serial(self)))
    }

    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let mut tx = match time {
            Some(time) => MemoryTx::new(self, Time::new(time.input_time, time.frontier), None),
            None => MemoryTx::serial(self),
        };
        tx.forget = Some(failed_input_time);
        Ok(Box::new(tx))
    }

    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        // Tables of a memory store are uneven only after a pipelined
        // iteration failed half-way and was not recorded (a crash loses
        // the store whole); it keeps no undo log.
        let clock = self.shared.clock.lock();
        let low = clock.iter().copied().min().unwrap_or(0);
        match clock.iter().position(|t| *t > low) {
            None => Ok(Vec::new()),
            Some(s) => Err(StoreError::backend(
                "recovering the memory store",
                format!(
                    "`{}` is at time {} and others at {low}: the memory store keeps no undo log; \
                     record the failed iteration with `record_failure` instead",
                    self.shared.specs[s].path(),
                    clock[s]
                ),
            )),
        }
    }

    fn next_time(&mut self) -> Result<i64, StoreError> {
        // As the SQL stores: a time for an iteration of a query that a
        // migration replaced is refused.
        self.shared.refuse_if_migrated()?;
        Ok(self.shared.clock.lock().iter().copied().max().unwrap_or(0) + 1)
    }

    fn last_time(&mut self) -> Result<i64, StoreError> {
        Ok(Memory::last_time(self))
    }

    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn std::any::Any,
    ) -> Result<(), StoreError> {
        let table = self.table_of(spec, "it", "the reader")?;
        let _whole_iterations = self.shared.commit.lock();
        self.shared.refuse_if_migrated()?;
        self.shared.tables[table].read().read(read, sink)
    }

    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        for s in 0..self.shared.tables.len() {
            wait_until(&self.shared, s, time.frontier, self.max_wait)?;
        }
        let _one_at_a_time = self.shared.commit.lock();
        // A migrated store's tables are the new query's: not written.
        self.shared.refuse_if_migrated()?;
        let mut clock = self.shared.clock.lock();
        let committed: Vec<String> = clock
            .iter()
            .zip(&self.shared.specs)
            .filter(|(t, _)| **t >= time.input_time)
            .map(|(_, s)| s.path().to_string())
            .collect();
        for t in clock.iter_mut() {
            *t = (*t).max(time.input_time);
        }
        drop(clock);
        self.shared.tick.notify_all();
        let failure = FailedBatch {
            input_time: time.input_time,
            batch,
            changes: changes.to_vec(),
            error: error.to_owned(),
            committed,
        };
        let mut failures = self.shared.failures.lock();
        failures.retain(|f| f.input_time != time.input_time);
        failures.push(failure.clone());
        failures.sort_by_key(|f| f.input_time);
        Ok(failure)
    }

    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        Ok(self.shared.failures.lock().clone())
    }

    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        self.shared
            .failures
            .lock()
            .retain(|f| f.input_time != input_time);
        Ok(())
    }

    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        let table = self
            .shared
            .by_path
            .get(spec.path())
            .copied()
            .filter(|t| self.shared.specs[*t].shape() == spec.shape());
        match table {
            Some(t) => {
                let _whole_iterations = self.shared.commit.lock();
                Ok(self.shared.tables[t].read().len() as u64)
            }
            // Not one of ours as it is: the read says why.
            None => {
                let mut sink = spec.codec().any_rows_sink();
                self.read_committed(spec, &Read::All, &mut *sink)?;
                Ok(spec.codec().sink_len(&*sink) as u64)
            }
        }
    }
}

struct MemoryTx<'s> {
    shared: &'s Shared,
    time: Time,
    max_wait: Duration,
    waited: Vec<bool>,
    pending: Vec<Vec<Value>>,
    /// Tables whose writes and time this iteration has published (each
    /// once: at its flush when pipelined, else at the commit).
    published: Vec<bool>,
    /// Held by an iteration at the next time, until it ends.
    _serial: Option<MutexGuard<'s, ()>>,
    /// The failed batch this iteration retries, forgotten when it commits.
    forget: Option<i64>,
}

impl<'s> MemoryTx<'s> {
    /// An iteration after every committed one, holding the serial lock
    /// until it ends.
    fn serial(store: &'s Memory) -> Self {
        let serial = store.shared.serial.lock();
        let t = store.shared.clock.lock().iter().copied().max().unwrap_or(0) + 1;
        MemoryTx::new(store, Time::new(t, t - 1), Some(serial))
    }

    fn new(store: &'s Memory, time: Time, serial: Option<MutexGuard<'s, ()>>) -> Self {
        let n = store.shared.tables.len();
        MemoryTx {
            shared: &store.shared,
            time,
            max_wait: store.max_wait,
            waited: vec![false; n],
            pending: (0..n).map(|_| Vec::new()).collect(),
            published: vec![false; n],
            _serial: serial,
            forget: None,
        }
    }

    /// Waits until `state`'s table has reached the frontier (once per iteration).
    fn wait(&mut self, state: StateId) -> Result<(), StoreError> {
        let s = state.index();
        if !self.waited[s] {
            wait_until(self.shared, s, self.time.frontier, self.max_wait)?;
            self.waited[s] = true;
        }
        Ok(())
    }

    /// Applies the pending writes of `states` and records their time.
    fn publish(&mut self, states: &[usize]) -> Result<(), StoreError> {
        let _one_at_a_time = self.shared.commit.lock();
        self.shared.refuse_if_migrated()?;
        // Every table is checked before any changes: all or nothing.
        let clock = self.shared.clock.lock();
        for &s in states {
            if clock[s] >= self.time.input_time {
                return Err(StoreError::TimeAlreadyApplied {
                    table: self.shared.specs[s].path().to_string(),
                    time: self.time.input_time,
                    recorded: clock[s],
                });
            }
        }
        drop(clock);
        let mut failures = self.shared.failures.lock();
        if let Some(t) = self.forget
            && !failures.iter().any(|f| f.input_time == t)
        {
            return Err(StoreError::NoSuchFailure { input_time: t });
        }
        for &s in states {
            let table = self.shared.tables[s].read();
            for delta in &self.pending[s] {
                table
                    .check(&**delta)
                    .map_err(|identity| StoreError::WeightOverflow {
                        table: self.shared.specs[s].path().to_string(),
                        identity,
                    })?;
            }
        }
        for &s in states {
            let mut table = self.shared.tables[s].write();
            for delta in self.pending[s].drain(..) {
                table.apply(delta)?;
            }
        }
        let mut clock = self.shared.clock.lock();
        for &s in states {
            clock[s] = clock[s].max(self.time.input_time);
            self.published[s] = true;
        }
        drop(clock);
        if let Some(t) = self.forget.take() {
            failures.retain(|f| f.input_time != t);
        }
        drop(failures);
        self.shared.tick.notify_all();
        Ok(())
    }
}

impl StateTx for MemoryTx<'_> {
    fn time(&mut self) -> Result<Time, StoreError> {
        Ok(self.time)
    }

    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn std::any::Any,
    ) -> Result<(), StoreError> {
        self.wait(state)?;
        self.shared.tables[state.index()].read().read(read, sink)
    }

    fn visit(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        visit: &mut dyn FnMut(&dyn std::any::Any, zset::Weight),
    ) -> Result<bool, StoreError> {
        self.wait(state)?;
        self.shared.tables[state.index()].read().visit(read, visit)
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        self.wait(state)?;
        Ok(self.shared.tables[state.index()].read().max_step())
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        self.wait(state)?;
        // The tables run the key functions only when the iteration commits,
        // too late to fail without leaving a table half changed: run them
        // now, where a panic fails the iteration.
        self.shared.specs[state.index()]
            .codec()
            .compute_keys(&*delta);
        self.pending[state.index()].push(delta);
        Ok(())
    }

    fn flush(&mut self, state: StateId) -> Result<(), StoreError> {
        if self.time.flush_every_set == Some(true) {
            self.wait(state)?;
            self.publish(&[state.index()])?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.time.flush_every_set.is_none() {
            return Ok(());
        }
        for s in 0..self.waited.len() {
            self.wait(StateId(s as u32))?;
        }
        let rest: Vec<usize> = (0..self.pending.len())
            .filter(|&s| !self.published[s])
            .collect();
        self.publish(&rest)
    }
}

/// Waits, without spinning, until table `s` has been written up to `frontier`.
fn wait_until(
    shared: &Shared,
    s: usize,
    frontier: i64,
    max_wait: Duration,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + max_wait;
    let mut clock = shared.clock.lock();
    while clock[s] < frontier {
        // A migration wakes the waiters: their query is gone, and the new
        // one's ingest never moves these tables on.
        shared.refuse_if_migrated()?;
        if shared.tick.wait_until(&mut clock, deadline).timed_out() && clock[s] < frontier {
            return Err(StoreError::FrontierTimeout {
                table: shared.specs[s].path().to_string(),
                frontier,
                seen: Some(clock[s]),
                waited_ms: max_wait.as_millis() as u64,
            });
        }
    }
    Ok(())
}

impl Shared {
    /// `QueryChanged` once [`Memory::migrate`] moved this store on.
    fn refuse_if_migrated(&self) -> Result<(), StoreError> {
        match &*self.migrated.lock() {
            Some(plan) => Err(StoreError::QueryChanged {
                plan: Box::new(plan.clone()),
            }),
            None => Ok(()),
        }
    }
}

impl Memory {
    /// Migrates this store to `graph`, a changed version of its query, the
    /// way a SQL store's open with `OpenOptions::migrate` does: states
    /// computed as before (also under a declared rename) are moved over as
    /// they are, new and changed ones are computed from the kept inputs
    /// (through `Query::migrate_input` for an input whose row type
    /// changed), dropped ones go. Every handle of the old query gets
    /// [`StoreError::QueryChanged`] from then on; this one becomes a store
    /// of `graph`. Returns the plan carried out.
    ///
    /// # Errors
    /// [`StoreError::InputNotKept`] if a state to compute needs an input
    /// the store does not keep; nothing changes then.
    pub fn migrate(&mut self, graph: &Graph) -> Result<graph::MigrationPlan, StoreError> {
        let old = Arc::clone(&self.shared);
        let _commits = whole_iterations(&old, self.max_wait)?;
        let mut plan = memory_plan(&old.specs, graph.states());
        // Per state of `graph`, the old table it takes as it is.
        let sources: Vec<Option<usize>> = plan
            .entries
            .iter()
            .take(graph.states().len())
            .map(|e| {
                let from = match &e.action {
                    PlanAction::Keep | PlanAction::Renamed { from: None } => e.path.as_str(),
                    PlanAction::Renamed { from: Some(from) } => from.as_str(),
                    _ => return None,
                };
                old.by_path.get(&Path::new(from)).copied()
            })
            .collect();
        let source = |path: &str| -> Option<usize> {
            let s = graph
                .states()
                .iter()
                .position(|x| x.path().as_str() == path)?;
            sources[s]
        };
        let computed = if plan.backfilled().next().is_some() {
            let expected = crate::migrate::recompute(graph, &plan, |spec, sink| {
                let path = spec.path().as_str();
                if let Some(s) = source(path) {
                    return old.tables[s].read().read(&Read::All, sink);
                }
                let changed = old.by_path.get(spec.path()).copied();
                match (changed, graph.input_migration(path)) {
                    (Some(s), Some(migrate)) => {
                        for row in crate::verify::rows_of(self, &old.specs[s], s)? {
                            migrate(&row.data, row.weight, sink)
                                .map_err(|detail| crate::sql::unmigratable(path, 0, detail))?;
                        }
                        Ok(())
                    }
                    // The same rows, indexed differently (a join on the
                    // input shares its integral): read again, re-indexed.
                    (Some(s), None)
                        if old.specs[s].kind() == spec.kind()
                            && old.specs[s].value_type() == spec.value_type() =>
                    {
                        for row in crate::verify::rows_of(self, &old.specs[s], s)? {
                            spec.codec()
                                .decode(&row.data, row.weight, row.step, sink)
                                .map_err(|detail| StoreError::Corrupt {
                                    table: path.to_owned(),
                                    identity: String::new(),
                                    detail,
                                })?;
                        }
                        Ok(())
                    }
                    (Some(_), None) => {
                        Err(crate::sql::input_not_kept(path, crate::sql::OTHER_ROW_TYPE))
                    }
                    (None, _) => Err(crate::sql::input_not_kept(path, crate::sql::NOT_STORED)),
                }
            });
            Some(expected.map_err(|e| match e {
                graph::GraphError::Store(e) => e,
                other => StoreError::backend("computing the migrated states", other.to_string()),
            })?)
        } else {
            None
        };
        let fresh = Memory::new(graph).with_max_wait(self.max_wait);
        let now = Memory::last_time(self);
        {
            let mut clock = fresh.shared.clock.lock();
            for (s, entry) in plan
                .entries
                .iter_mut()
                .enumerate()
                .take(fresh.shared.specs.len())
            {
                let taken = match (sources[s], &computed) {
                    (Some(from), _) => Some(&old.tables[from]),
                    (None, Some(c)) => Some(&c.shared.tables[s]),
                    (None, None) => None,
                };
                if let Some(table) = taken {
                    let codec = fresh.shared.specs[s].codec();
                    let rows = std::mem::replace(&mut *table.write(), codec.new_table());
                    if entry.action.backfills() {
                        entry.rows = Some(rows.len() as u64);
                    }
                    *fresh.shared.tables[s].write() = rows;
                }
                clock[s] = now;
            }
        }
        *fresh.shared.consumers.lock() = old.consumers.lock().clone();
        {
            // Under the clock's lock, so that no waiter misses it.
            let _clock = old.clock.lock();
            *old.migrated.lock() = Some(plan.clone());
        }
        old.tick.notify_all();
        *self = fresh;
        Ok(plan)
    }
}

/// The commit lock of `shared`, taken when every table is at the same time:
/// a pipelined iteration under way is waited for (up to `max_wait`), so
/// that a migration computes from whole iterations only.
fn whole_iterations(
    shared: &Shared,
    max_wait: Duration,
) -> Result<parking_lot::MutexGuard<'_, ()>, StoreError> {
    let deadline = Instant::now() + max_wait;
    loop {
        let commits = shared.commit.lock();
        shared.refuse_if_migrated()?;
        let mut clock = shared.clock.lock();
        let low = clock.iter().copied().min().unwrap_or(0);
        let high = clock.iter().copied().max().unwrap_or(0);
        if low == high {
            drop(clock);
            return Ok(commits);
        }
        drop(commits);
        if shared.tick.wait_until(&mut clock, deadline).timed_out() {
            let s = clock.iter().position(|t| *t == low).unwrap_or(0);
            return Err(StoreError::FrontierTimeout {
                table: shared.specs[s].path().to_string(),
                frontier: high,
                seen: Some(low),
                waited_ms: max_wait.as_millis() as u64,
            });
        }
    }
}

/// How a memory store's states (`old`) compare with a query's (`new`):
/// by path, shape and definition, renames included.
fn memory_plan(old: &[StateSpec], new: &[StateSpec]) -> graph::MigrationPlan {
    let mut entries = Vec::new();
    let mut carried = Vec::new();
    for spec in new {
        let same = |o: &StateSpec, definition: &str| {
            o.shape() == spec.shape() && o.definition() == definition
        };
        let before = spec.before_renames();
        let action = match old.iter().find(|o| o.path() == spec.path()) {
            Some(o) if same(o, spec.definition()) => PlanAction::Keep,
            Some(o) if before.is_some_and(|(_, d)| same(o, d)) => {
                PlanAction::Renamed { from: None }
            }
            Some(_) => PlanAction::Changed {
                why: crate::sql::DEFINITION_CHANGED.into(),
            },
            None => {
                match before.and_then(|(p, d)| old.iter().find(|o| o.path() == p && same(o, d))) {
                    Some(o) => {
                        carried.push(o.path().clone());
                        PlanAction::Renamed {
                            from: Some(o.path().to_string()),
                        }
                    }
                    None => PlanAction::New,
                }
            }
        };
        entries.push(PlanEntry {
            path: spec.path().to_string(),
            table: spec.path().to_string(),
            action,
            rows: None,
        });
    }
    for o in old {
        if !new.iter().any(|n| n.path() == o.path()) && !carried.contains(o.path()) {
            entries.push(PlanEntry {
                path: o.path().to_string(),
                table: o.path().to_string(),
                action: PlanAction::Drop,
                rows: None,
            });
        }
    }
    graph::MigrationPlan { entries }
}

impl crate::Verifiable for Memory {
    fn verify(&mut self) -> Result<crate::Verification, StoreError> {
        self.check(false)
    }

    fn repair(&mut self) -> Result<crate::Verification, StoreError> {
        self.check(true)
    }
}

impl Memory {
    /// `verify`, and with `repair` the drifted tables replaced by the
    /// computed ones, all under the commit lock (no iteration commits in
    /// between).
    fn check(&mut self, repair: bool) -> Result<crate::Verification, StoreError> {
        let shared = &*self.shared;
        let _commits = shared.commit.lock();
        let expected = crate::verify::expected(&shared.graph, |spec, sink| {
            let s = shared.by_path.get(spec.path()).copied().ok_or_else(|| {
                StoreError::backend("verifying", format!("no state `{}`", spec.path()))
            })?;
            shared.tables[s].read().read(&Read::All, sink)
        })?;
        let mut states = Vec::with_capacity(shared.specs.len());
        for (s, spec) in shared.specs.iter().enumerate() {
            if spec.is_feed() {
                // A feed is the history of the iterations it saw.
                continue;
            }
            let stored = crate::verify::rows_of(self, spec, s)?;
            let computed = crate::verify::rows_of(&expected, spec, s)?;
            let mut check =
                crate::verify::compare(spec, &spec.path().to_string(), stored, computed);
            if repair && !check.differences.is_empty() {
                let fresh = std::mem::replace(
                    &mut *expected.shared.tables[s].write(),
                    spec.codec().new_table(),
                );
                *shared.tables[s].write() = fresh;
                check.repaired = true;
            }
            states.push(check);
        }
        Ok(crate::Verification { states })
    }
}
