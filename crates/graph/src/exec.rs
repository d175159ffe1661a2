//! Running one iteration: the precomputed schedule, state writes at their
//! write points, and fixed-point loops for recursions.

use std::any::{Any, type_name};
use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use zset::{Data, Index, IndexKey, Weight, ZSet};

use crate::graph::{GraphInner, StateWriter};
use crate::profile::Meter;
use crate::vertex::{Op, Slot, Value, VertexId};
use crate::{GraphError, Path, Read, StateId, StateTx, StoredRow};

/// What an operator sees while it runs: the store (through the iteration's
/// transaction), the other vertices' values, and its scratch space.
pub struct Ctx<'a> {
    pub(crate) tx: &'a mut dyn StateTx,
    pub(crate) slots: &'a [Option<Slot>],
    pub(crate) graph: &'a GraphInner,
    pub(crate) pending: &'a mut Vec<Vec<Value>>,
    pub(crate) scratch: &'a mut HashMap<VertexId, Box<dyn Any + Send>>,
    pub(crate) vertex: VertexId,
    pub(crate) step: u32,
    /// With profiling on: where this vertex's state reads are counted.
    pub(crate) rows_read: Option<&'a mut u64>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ctx({}, step {})", self.path(), self.step)
    }
}

/// An input as an operator that understands states sees it.
pub enum Handle<'s, R> {
    /// A value computed this iteration.
    Owned(&'s ZSet<R>),
    /// A stored state plus, for an integral, this iteration's change.
    State {
        /// The state (as declared while building).
        state: StateId,
        /// The change to add on top of the stored rows.
        delta: Option<&'s ZSet<R>>,
    },
}

impl<R: Data> std::fmt::Debug for Handle<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::Owned(z) => write!(f, "Owned({} rows)", z.len()),
            Handle::State { state, delta } => write!(
                f,
                "State({state:?}, delta: {})",
                delta.map_or(0, |d| d.len())
            ),
        }
    }
}

impl<'a> Ctx<'a> {
    /// The running vertex's path.
    pub fn path(&self) -> &Path {
        &self.graph.vertices[self.vertex.ix()].path
    }

    /// The inner step of a recursion (0 outside recursions).
    pub fn step(&self) -> u32 {
        self.step
    }

    fn mismatch<R>(&self, found: &'static str) -> GraphError {
        GraphError::TypeMismatch {
            path: self.path().clone(),
            expected: type_name::<R>(),
            found,
        }
    }

    fn final_state(&self, state: StateId) -> StateId {
        self.graph.final_of[state.index()]
    }

    /// The iteration's [`Time`](crate::Time).
    ///
    /// # Errors
    /// A store failure finding it (see [`StateTx::time`]).
    pub fn time(&mut self) -> Result<crate::Time, GraphError> {
        Ok(self.tx.time()?)
    }

    /// A slot's Z-set, materializing a stored state if needed (which reads
    /// the whole state: operators that can avoid it use [`handle`](Self::handle)).
    ///
    /// # Errors
    /// A read failure, or a value of another type.
    pub fn zset<'s, R: Data>(&mut self, slot: &'s Slot) -> Result<Cow<'s, ZSet<R>>, GraphError>
    where
        'a: 's,
    {
        match slot {
            Slot::Value(v) => v
                .downcast_ref::<ZSet<R>>()
                .map(Cow::Borrowed)
                .ok_or_else(|| self.mismatch::<ZSet<R>>("another type")),
            Slot::State { state, delta } => {
                let mut z = self.read_all::<R>(*state)?;
                if let Some(d) = delta {
                    z += &*self.delta_of::<R>(*d)?;
                }
                Ok(Cow::Owned(z))
            }
        }
    }

    /// A scalar slot's value.
    ///
    /// # Errors
    /// A value of another type.
    pub fn scalar<'s, V: Data>(&self, slot: &'s Slot) -> Result<&'s V, GraphError> {
        match slot {
            Slot::Value(v) => v
                .downcast_ref::<V>()
                .ok_or_else(|| self.mismatch::<V>("another type")),
            Slot::State { .. } => Err(self.mismatch::<V>("a stored state")),
        }
    }

    fn delta_of<R: Data>(&self, vertex: VertexId) -> Result<Cow<'a, ZSet<R>>, GraphError> {
        match &self.slots[vertex.ix()] {
            Some(Slot::Value(v)) => v
                .downcast_ref::<ZSet<R>>()
                .map(Cow::Borrowed)
                .ok_or_else(|| self.mismatch::<ZSet<R>>("another type")),
            _ => Err(self.mismatch::<ZSet<R>>("a value not yet computed")),
        }
    }

    /// A slot as a [`Handle`]: the value, or the state and delta to read lazily.
    ///
    /// # Errors
    /// A value of another type.
    pub fn handle<'s, R: Data>(&self, slot: &'s Slot) -> Result<Handle<'s, R>, GraphError>
    where
        'a: 's,
    {
        match slot {
            Slot::Value(v) => v
                .downcast_ref::<ZSet<R>>()
                .map(Handle::Owned)
                .ok_or_else(|| self.mismatch::<ZSet<R>>("another type")),
            Slot::State { state, delta } => {
                let delta = match delta {
                    Some(d) => match &self.slots[d.ix()] {
                        Some(Slot::Value(v)) => Some(
                            v.downcast_ref::<ZSet<R>>()
                                .ok_or_else(|| self.mismatch::<ZSet<R>>("another type"))?,
                        ),
                        _ => return Err(self.mismatch::<ZSet<R>>("a delta not yet computed")),
                    },
                    None => None,
                };
                Ok(Handle::State {
                    state: *state,
                    delta,
                })
            }
        }
    }

    /// The position of `index` among `state`'s indexes.
    ///
    /// # Errors
    /// [`GraphError::MissingIndex`].
    pub fn index_position(
        &self,
        state: StateId,
        index: &zset::IndexSpec,
    ) -> Result<usize, GraphError> {
        let spec = &self.graph.states[self.final_state(state).index()];
        spec.index_position(index)
            .ok_or_else(|| GraphError::MissingIndex {
                path: spec.path().clone(),
                index: index.to_string(),
                available: spec
                    .indexes()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Reads committed rows of `state`.
    ///
    /// # Errors
    /// A store failure.
    pub fn read<R: Data>(
        &mut self,
        state: StateId,
        read: Read<'_>,
    ) -> Result<Vec<StoredRow<R>>, GraphError> {
        let mut rows: Vec<StoredRow<R>> = Vec::new();
        let fin = self.final_state(state);
        self.tx.read(fin, &read, &mut rows)?;
        if let Some(n) = self.rows_read.as_deref_mut() {
            *n += rows.len() as u64;
        }
        Ok(rows)
    }

    /// All committed rows of a (non-nested) `state` as a Z-set.
    ///
    /// # Errors
    /// A store failure.
    pub fn read_all<R: Data>(&mut self, state: StateId) -> Result<ZSet<R>, GraphError> {
        Ok(self
            .read::<R>(state, Read::All)?
            .into_iter()
            .map(|r| (r.value, r.weight))
            .collect())
    }

    /// The rows of `slot` whose key under `index` is in `keys` (with the
    /// iteration's delta for integrals), read through the index.
    ///
    /// # Errors
    /// [`GraphError::MissingIndex`] or a store failure.
    pub fn lookup<R: Data, K: IndexKey>(
        &mut self,
        slot: &Slot,
        index: &Index<R, K>,
        keys: Vec<K>,
    ) -> Result<ZSet<R>, GraphError> {
        Ok(self.lookup_rows(slot, index, keys)?.into_iter().collect())
    }

    /// [`lookup`](Self::lookup) as a list of `(value, weight)` that may
    /// name a value more than once (stored, and again in the iteration's
    /// delta): for bilinear operators such as a join, which need no
    /// consolidated input.
    ///
    /// # Errors
    /// [`GraphError::MissingIndex`] or a store failure.
    pub fn lookup_rows<R: Data, K: IndexKey>(
        &mut self,
        slot: &Slot,
        index: &Index<R, K>,
        keys: Vec<K>,
    ) -> Result<Vec<(R, Weight)>, GraphError> {
        let mut out: Vec<(R, Weight)> = Vec::new();
        self.lookup_each(slot, index, keys, |row, w| out.push((row.into_owned(), w)))?;
        Ok(out)
    }

    /// [`lookup_rows`](Self::lookup_rows) handing each row to `f` as it
    /// is found: lent where it is already in memory (the iteration's delta,
    /// a memory store's table), owned where it was read from a store, so
    /// that nothing is copied only to be dropped.
    ///
    /// # Errors
    /// [`GraphError::MissingIndex`] or a store failure.
    pub fn lookup_each<R: Data, K: IndexKey>(
        &mut self,
        slot: &Slot,
        index: &Index<R, K>,
        keys: Vec<K>,
        mut f: impl FnMut(Cow<'_, R>, Weight),
    ) -> Result<(), GraphError> {
        if keys.is_empty() {
            return Ok(());
        }
        let (state, delta) = match self.handle::<R>(slot)? {
            Handle::Owned(z) => (None, Some(z)),
            Handle::State { state, delta } => (Some(state), delta),
        };
        if let Some(z) = delta {
            let wanted: hashbrown::HashSet<&K> = keys.iter().collect();
            for (v, w) in z.iter() {
                if wanted.contains(&index.key(v)) {
                    f(Cow::Borrowed(v), w);
                }
            }
        }
        let Some(state) = state else {
            return Ok(());
        };
        let pos = self.index_position(state, index.spec())?;
        let read = Read::ByIndex {
            index: pos,
            keys: &keys,
        };
        let (mut lent, mut wrong) = (0u64, false);
        let visited = self
            .tx
            .visit(
                self.final_state(state),
                &read,
                &mut |row, w| match row.downcast_ref::<R>() {
                    Some(row) => {
                        lent += 1;
                        f(Cow::Borrowed(row), w);
                    }
                    None => wrong = true,
                },
            )?;
        if !visited {
            for row in self.read::<R>(state, read)? {
                f(Cow::Owned(row.value), row.weight);
            }
            return Ok(());
        }
        if wrong {
            return Err(crate::codec::wrong_type::<R>("a row lent by the store").into());
        }
        if let Some(n) = self.rows_read.as_deref_mut() {
            *n += lent;
        }
        Ok(())
    }

    /// The weights in `slot` of exactly `values` (with the iteration's delta
    /// for integrals); values with weight zero are absent.
    ///
    /// # Errors
    /// A store failure.
    pub fn weights<R: Data>(&mut self, slot: &Slot, values: Vec<R>) -> Result<ZSet<R>, GraphError> {
        if values.is_empty() {
            return Ok(ZSet::new());
        }
        match self.handle::<R>(slot)? {
            Handle::Owned(z) => Ok(values.iter().map(|v| (v.clone(), z.get(v))).collect()),
            Handle::State { state, delta } => {
                let mut out: ZSet<R> = match delta {
                    Some(d) => values.iter().map(|v| (v.clone(), d.get(v))).collect(),
                    None => ZSet::new(),
                };
                for r in self.read::<R>(state, Read::ByValues { values: &values })? {
                    out.update(r.value, r.weight);
                }
                Ok(out)
            }
        }
    }

    /// The largest inner step stored in nested `state`.
    ///
    /// # Errors
    /// A store failure.
    pub fn max_step(&mut self, state: StateId) -> Result<Option<u32>, GraphError> {
        let fin = self.final_state(state);
        Ok(self.tx.max_step(fin)?)
    }

    /// Registers `delta` to be applied to `state` at its write point (after
    /// every read of it in this iteration).
    pub fn write(&mut self, state: StateId, delta: Value) {
        let fin = self.final_state(state);
        self.pending[fin.index()].push(delta);
    }

    /// This vertex's scratch value for the current iteration (reset at the
    /// start of each iteration; kept across a recursion's inner steps).
    pub fn scratch<X: Default + Send + 'static>(&mut self) -> &mut X {
        let entry = self
            .scratch
            .entry(self.vertex)
            .or_insert_with(|| Box::new(X::default()));
        if !entry.is::<X>() {
            *entry = Box::new(X::default());
        }
        entry.downcast_mut::<X>().expect("just replaced by an X")
    }
}

/// `make_scalar`: the only value of a Z-set of at most one value, with
/// weight 1; `zero` when empty.
///
/// # Errors
/// [`GraphError::NotScalar`] naming `path` for anything else.
pub fn scalar_of<V: Data>(z: &ZSet<V>, zero: V, path: &Path) -> Result<V, GraphError> {
    match z.len() {
        0 => Ok(zero),
        1 => {
            let (v, w) = z.iter().next().expect("len is 1");
            if w == 1 {
                Ok(v.clone())
            } else {
                Err(GraphError::NotScalar {
                    path: path.clone(),
                    detail: format!("one value with weight {w}"),
                })
            }
        }
        n => Err(GraphError::NotScalar {
            path: path.clone(),
            detail: format!("{n} values"),
        }),
    }
}

/// The text of a panic's payload: what `panic!` was given when that is
/// text, else a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, which calls user code for `path`, turning a panic into
/// [`GraphError::UserPanic`]. What `f` leaves half done is dropped with the
/// iteration, whose transaction rolls back, so nothing it touched is kept.
/// (Catching costs nothing unless a panic happens.)
fn caught<T>(path: &Path, f: impl FnOnce() -> Result<T, GraphError>) -> Result<T, GraphError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(GraphError::UserPanic {
            path: path.clone(),
            message: panic_message(&*payload),
        })
    })
}

/// Mutable state of one iteration.
struct Run<'g, 't> {
    g: &'g GraphInner,
    tx: &'t mut dyn StateTx,
    slots: Vec<Option<Slot>>,
    pending: Vec<Vec<Value>>,
    scratch: HashMap<VertexId, Box<dyn Any + Send>>,
    /// `Some` when the iteration is profiled.
    meter: Option<Meter>,
}

impl Run<'_, '_> {
    fn ctx(&mut self, vertex: VertexId, step: u32) -> Ctx<'_> {
        Ctx {
            tx: &mut *self.tx,
            slots: &self.slots,
            graph: self.g,
            pending: &mut self.pending,
            scratch: &mut self.scratch,
            vertex,
            step,
            rows_read: self.meter.as_mut().map(|m| m.reads_of(vertex)),
        }
    }

    fn call(&mut self, v: VertexId, step: u32) -> Result<Value, GraphError> {
        let g = self.g;
        let vertex = &g.vertices[v.ix()];
        let f = match &vertex.op {
            Op::Func(f) | Op::Add(f) => f,
            other => unreachable!("call on a {} vertex", other.name()),
        };
        let slots = &self.slots;
        let ins: Vec<&Slot> = vertex
            .inputs
            .iter()
            .map(|i| {
                slots[i.ix()]
                    .as_ref()
                    .expect("the schedule computes inputs first")
            })
            .collect();
        let mut ctx = Ctx {
            tx: &mut *self.tx,
            slots,
            graph: g,
            pending: &mut self.pending,
            scratch: &mut self.scratch,
            vertex: v,
            step,
            rows_read: self.meter.as_mut().map(|m| m.reads_of(v)),
        };
        zset::weight::take_overflow();
        let out = caught(&vertex.path, || f(&mut ctx, &ins))?;
        if zset::weight::take_overflow() {
            return Err(GraphError::WeightOverflow {
                path: vertex.path.clone(),
            });
        }
        Ok(out)
    }

    fn exec(&mut self, v: VertexId, inputs: &mut [Option<Value>]) -> Result<Slot, GraphError> {
        let vertex = &self.g.vertices[v.ix()];
        Ok(match &vertex.op {
            Op::Input(i) => match inputs.get_mut(*i).and_then(Option::take) {
                Some(value) => Slot::Value(value),
                None => Slot::Value((vertex.fns.expect("inputs are Z-sets").empty)()),
            },
            // An output that is its input's last reader takes the value
            // (the copy it would make is all an output computes). Not when
            // profiling, whose row counts read the input afterwards.
            Op::Func(_) if self.g.output_takes[v.ix()] && self.meter.is_none() => {
                let input = vertex.inputs[0].ix();
                match self.slots[input].take() {
                    Some(Slot::Value(value)) => Slot::Value(value),
                    other => {
                        self.slots[input] = other;
                        Slot::Value(self.call(v, 0)?)
                    }
                }
            }
            Op::Func(_) | Op::Add(_) => Slot::Value(self.call(v, 0)?),
            Op::Delay(state) => Slot::State {
                state: *state,
                delta: None,
            },
            Op::Integrate { state, delayed } => Slot::State {
                state: *state,
                delta: if *delayed {
                    None
                } else {
                    Some(vertex.inputs[0])
                },
            },
            Op::Sink => Slot::Value(Box::new(())),
            Op::Recursive(_) => Slot::Value(self.recurse(v)?),
            other => unreachable!(
                "a {} vertex is never scheduled at the top level",
                other.name()
            ),
        })
    }

    /// Runs a recursion's body to a fixed point (DBSP §6–9 with nested
    /// time): inner step `k` computes the 2-D changes `d[t][k]`; the output
    /// is their sum over `k`. It stops once every inner change is zero and no
    /// stored state has rows at a later inner step.
    fn recurse(&mut self, r: VertexId) -> Result<Value, GraphError> {
        let g = self.g;
        let vertex = &g.vertices[r.ix()];
        let Op::Recursive(rop) = &vertex.op else {
            unreachable!("recurse on a recursive vertex")
        };
        let fns = vertex.fns.expect("recursions output Z-sets");
        let mut max_stored: Option<u32> = None;
        for state in &g.rec_states[r.ix()] {
            let m = self.tx.max_step(*state)?;
            if let Some(m) = m.filter(|m| *m >= rop.max_steps) {
                // No iteration can have stored it: it would have failed.
                return Err(GraphError::Store(crate::StoreError::Corrupt {
                    table: self
                        .tx
                        .table_name(*state)
                        .unwrap_or_else(|| g.states[state.index()].path().to_string()),
                    identity: format!("the row at step {m}"),
                    detail: format!(
                        "a row is stored at inner step {m}, past the limit of {} steps of \
                         recursion `{}`",
                        rop.max_steps, vertex.path
                    ),
                }));
            }
            max_stored = max_stored.max(m);
        }
        let mut acc = (fns.empty)();
        let mut prev: Option<Value> = None;
        let mut k: u32 = 0;
        loop {
            if k >= rop.max_steps {
                return Err(GraphError::RecursionLimit {
                    path: vertex.path.clone(),
                    steps: rop.max_steps,
                });
            }
            let mut all_zero = true;
            for &v in &rop.order {
                let started = self.meter.is_some().then(Instant::now);
                let inner = &g.vertices[v.ix()];
                let inner_fns = inner.fns.expect("recursion bodies carry Z-sets");
                let value = match &inner.op {
                    Op::Import if k == 0 => {
                        let outer = inner.inputs[0];
                        let slot = self.slots[outer.ix()]
                            .take()
                            .expect("imports are computed first");
                        let value = {
                            let mut ctx = self.ctx(v, k);
                            (inner_fns.materialize)(&mut ctx, &slot)
                        };
                        self.slots[outer.ix()] = Some(slot);
                        value?
                    }
                    Op::Import => (inner_fns.empty)(),
                    Op::Feedback => prev.take().unwrap_or_else(inner_fns.empty),
                    Op::Func(_) | Op::Add(_) => self.call(v, k)?,
                    other => unreachable!("a {} vertex in a recursion body", other.name()),
                };
                all_zero &= (inner_fns.is_empty)(&*value);
                let slot = Slot::Value(value);
                if let (Some(meter), Some(started)) = (self.meter.as_mut(), started) {
                    meter.ran(g, &self.slots, v, started, &slot);
                }
                self.slots[v.ix()] = Some(slot);
            }
            let result = match self.slots[rop.result.ix()].take() {
                Some(Slot::Value(v)) => v,
                _ => (fns.empty)(),
            };
            (fns.add_into)(&mut acc, &*result);
            prev = Some(result);
            if all_zero && max_stored.is_none_or(|m| k > m) {
                return Ok(acc);
            }
            k += 1;
        }
    }

    /// Hands `delta` to the store for `state`, once every store is known
    /// to be able to hold its rows: the check is here, not in each store,
    /// so that every store refuses the same values with the same error.
    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), GraphError> {
        let spec = &self.g.states[state.index()];
        if let Err(detail) = spec.codec().check_delta(&*delta) {
            let table = self
                .tx
                .table_name(state)
                .unwrap_or_else(|| spec.path().to_string());
            return Err(crate::StoreError::Unrepresentable { table, detail }.into());
        }
        if let Some(meter) = self.meter.as_mut() {
            meter.wrote(state, spec.codec().delta_rows(&*delta));
        }
        Ok(self.tx.apply(state, delta)?)
    }

    /// Applies everything written to `state` this iteration, at schedule
    /// position `pos` (its write point).
    fn write(&mut self, state: StateId, pos: usize) -> Result<(), GraphError> {
        let g = self.g;
        match &g.writers[state.index()] {
            StateWriter::Integral { delta } => {
                let fns = g.vertices[delta.ix()].fns.expect("integrals are of Z-sets");
                // Hand the delta over when nothing reads it later; else copy it.
                let last_reader = g.last_read[delta.ix()];
                let change: Option<Value> = match self.slots[delta.ix()].take() {
                    Some(Slot::Value(v)) if (fns.is_empty)(&*v) => {
                        self.slots[delta.ix()] = Some(Slot::Value(v));
                        None
                    }
                    Some(Slot::Value(v)) if last_reader <= pos => Some(v),
                    Some(Slot::Value(v)) => {
                        let copy = (fns.clone)(&*v);
                        self.slots[delta.ix()] = Some(Slot::Value(v));
                        Some(copy)
                    }
                    Some(slot @ Slot::State { .. }) => {
                        let value = {
                            let mut ctx = self.ctx(*delta, 0);
                            (fns.materialize)(&mut ctx, &slot)
                        };
                        self.slots[delta.ix()] = Some(slot);
                        Some(value?)
                    }
                    None => None,
                };
                if let Some(change) = change {
                    self.apply(state, change)?;
                }
            }
            StateWriter::Delay { delay, decl } => {
                let input = g.vertices[delay.ix()].inputs[0];
                let fns = g.vertices[delay.ix()].fns.expect("delays are of Z-sets");
                let slot = self.slots[input.ix()]
                    .take()
                    .expect("written after its input is computed");
                let result = {
                    let mut ctx = self.ctx(*delay, 0);
                    (fns.materialize)(&mut ctx, &slot)
                        .and_then(|new| (fns.diff)(&*new, &mut ctx, *decl))
                };
                self.slots[input.ix()] = Some(slot);
                let change = result?;
                if !(fns.is_empty)(&*change) {
                    self.apply(state, change)?;
                }
            }
            StateWriter::Operator => {}
        }
        for delta in std::mem::take(&mut self.pending[state.index()]) {
            self.apply(state, delta)?;
        }
        Ok(())
    }
}

/// Runs one iteration of `g` against `tx`; returns the outputs' values in
/// output order, and with `profile` what it measured. The caller commits
/// `tx` (or drops it to roll back).
pub(crate) fn run_iteration(
    g: &GraphInner,
    tx: &mut dyn StateTx,
    mut inputs: Vec<Option<Value>>,
    profile: bool,
) -> Result<(Vec<Value>, Option<Meter>), GraphError> {
    let mut run = Run {
        g,
        tx,
        slots: (0..g.vertices.len()).map(|_| None).collect(),
        pending: (0..g.states.len()).map(|_| Vec::new()).collect(),
        scratch: HashMap::new(),
        meter: profile.then(|| Meter::new(g)),
    };
    for (pos, &v) in g.order.iter().enumerate() {
        let started = run.meter.is_some().then(Instant::now);
        let slot = run.exec(v, &mut inputs)?;
        if let (Some(meter), Some(started)) = (run.meter.as_mut(), started) {
            meter.ran(g, &run.slots, v, started, &slot);
        }
        run.slots[v.ix()] = Some(slot);
        for &state in &g.writes_after[pos] {
            let started = run.meter.is_some().then(Instant::now);
            // An index's key function runs when a state's change is stored.
            caught(g.states[state.index()].path(), || run.write(state, pos))?;
            run.tx.flush(state)?;
            if let (Some(meter), Some(started)) = (run.meter.as_mut(), started) {
                meter.write_point(state, started);
            }
        }
    }
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for &o in &g.outputs {
        match run.slots[o.ix()].take() {
            Some(Slot::Value(v)) => outputs.push(v),
            _ => unreachable!("outputs are computed values"),
        }
    }
    Ok((outputs, run.meter))
}
