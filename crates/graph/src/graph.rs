//! The finalized graph and running it: changes in, outputs out.

use std::sync::Arc;
use std::time::Instant;

use zset::{Data, Index, IndexKey, IntoRow, Weight, ZSet};

use crate::builder::{Cache, Input, Output, Query};
use crate::exec::run_iteration;
use crate::vertex::{InputCodec, ScopeInfo, Value, Vertex, VertexId};
use crate::{
    GraphError, Path, Profile, Read, StateId, StateSpec, StateStore, StateTx, StoredRow, Time,
};

/// Who writes a state, at its write point.
pub(crate) enum StateWriter {
    /// A fused integral: apply the delta computed by `delta`.
    Integral { delta: VertexId },
    /// A `z⁻¹`: apply (new value − stored value); `decl` is the declared id.
    Delay { delay: VertexId, decl: StateId },
    /// An operator registered its writes through `Ctx::write`.
    Operator,
}

pub(crate) struct GraphInner {
    pub(crate) id: u64,
    pub(crate) vertices: Vec<Vertex>,
    pub(crate) scopes: Vec<ScopeInfo>,
    pub(crate) states: Vec<StateSpec>,
    /// Declared state → final state.
    pub(crate) final_of: Vec<StateId>,
    pub(crate) writers: Vec<StateWriter>,
    pub(crate) order: Vec<VertexId>,
    /// States written after the vertex at each position of `order`.
    pub(crate) writes_after: Vec<Vec<StateId>>,
    /// For each vertex, the last schedule position that reads its value
    /// (directly, or through an integral handle built on it).
    pub(crate) last_read: Vec<usize>,
    /// For each vertex, whether it is an output that takes its input's
    /// value rather than copying it (it is that value's last reader).
    pub(crate) output_takes: Vec<bool>,
    /// For each recursive vertex, the nested states of its body.
    pub(crate) rec_states: Vec<Vec<StateId>>,
    pub(crate) inputs: Vec<VertexId>,
    pub(crate) input_codecs: Vec<InputCodec>,
    pub(crate) outputs: Vec<VertexId>,
    pub(crate) fingerprint: String,
    pub(crate) input_migrations: std::collections::HashMap<crate::Path, crate::InputMigration>,
}

/// A finalized query: vertices keyed by stable paths, the states they keep,
/// and a precomputed schedule. Cheap to clone and shareable across threads.
///
/// ```
/// use stepping_graph::{Graph, GraphError};
/// let (graph, (input, output)) = Graph::build(|q| {
///     let (input, numbers) = q.input::<i64>("numbers")?;
///     let output = q.output("same", numbers)?;
///     Ok((input, output))
/// })?;
/// assert!(graph.to_dot().starts_with("digraph"));
/// // The input's integral is kept, so later queries can recompute from it...
/// assert_eq!(graph.states()[0].path().as_str(), "numbers");
/// // ...unless the input is transient.
/// let (firehose, _) = Graph::build(|q| {
///     let (input, numbers) = q.input::<i64>("numbers")?;
///     Ok((input, q.output("same", numbers.transient())?))
/// })?;
/// assert!(firehose.states().is_empty());
/// # let _ = (input, output);
/// # Ok::<(), GraphError>(())
/// ```
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Arc<GraphInner>,
    /// Whether iterations are profiled ([`Graph::profiled`]).
    pub(crate) profiling: bool,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Graph({} vertices, {} states, {})",
            self.inner.order.len(),
            self.inner.states.len(),
            self.inner.fingerprint
        )
    }
}

impl Graph {
    /// Builds a query: `build` declares inputs, applies operators and
    /// declares outputs and caches, returning the handles it wants to keep.
    /// Finalization then runs the graph transforms.
    ///
    /// # Errors
    /// The first problem recorded while building (duplicate paths, bad
    /// indexes, ...) or returned by `build`.
    pub fn build<R>(
        build: impl FnOnce(&Query) -> Result<R, GraphError>,
    ) -> Result<(Graph, R), GraphError> {
        let q = Query::new();
        let handles = build(&q)?;
        let id = q.id;
        let inner = crate::transform::finalize(q.b.into_inner(), id)?;
        Ok((
            Graph {
                inner: Arc::new(inner),
                profiling: false,
            },
            handles,
        ))
    }

    /// The states this graph keeps, in the order stores create their tables.
    pub fn states(&self) -> &[StateSpec] {
        &self.inner.states
    }

    /// A hash of the states' paths and shapes; a store opened for one graph
    /// refuses to run another.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The paths of the vertices in execution order, with their operators
    /// (for inspection and tests).
    pub fn vertices(&self) -> Vec<(Path, &'static str)> {
        self.inner
            .order
            .iter()
            .map(|v| {
                (
                    self.inner.vertices[v.ix()].path.clone(),
                    self.inner.vertices[v.ix()].label,
                )
            })
            .collect()
    }

    /// Runs one iteration at the store's next time: feeds `changes`, returns
    /// what changed in the outputs. All state writes commit together or not
    /// at all.
    ///
    /// # Errors
    /// A store opened for another graph, a foreign handle, an operator or
    /// store failure (the iteration is then rolled back).
    pub fn iteration<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        changes: Changes,
    ) -> Result<Outputs, GraphError> {
        self.run_in(store, changes, |s| s.begin_next())
    }

    /// Runs one iteration at an explicit [`Time`] (parallel ingest).
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration), and frontier timeouts.
    pub fn iteration_at<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        changes: Changes,
        time: Time,
    ) -> Result<Outputs, GraphError> {
        self.run_in(store, changes, |s| s.begin(time))
    }

    /// Re-runs the failed batch recorded at `failed_input_time` (its
    /// `changes`) at `time`, or at the store's next time when `None`,
    /// forgetting the record in the same transaction ([`StateStore::begin_retry`]): exactly once, even
    /// if the process dies or another one retries it at the same moment.
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration);
    /// [`StoreError::NoSuchFailure`](crate::StoreError::NoSuchFailure) if
    /// the record is gone (nothing is then written).
    pub fn retry_failed<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        changes: Changes,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Outputs, GraphError> {
        self.run_in(store, changes, |s| s.begin_retry(failed_input_time, time))
    }

    /// The paths of the inputs, in the order they were declared.
    pub fn inputs(&self) -> Vec<Path> {
        self.inner
            .inputs
            .iter()
            .map(|v| self.inner.vertices[v.ix()].path.clone())
            .collect()
    }

    /// Changes that insert every row the store keeps of each input (the
    /// input's integral, see [`Stream::transient`](crate::Stream::transient)),
    /// each state read whole by `read` into the sink it is given: what a
    /// migration feeds a fresh copy of the query to compute its states from
    /// scratch. `needed_by` names the state being computed, for the error.
    ///
    /// # Errors
    /// [`StoreError::InputNotKept`](crate::StoreError::InputNotKept) for an
    /// input whose integral the query does not keep, or `read`'s error.
    pub fn inputs_from_states(
        &self,
        needed_by: &str,
        mut read: impl FnMut(&StateSpec, &mut dyn std::any::Any) -> Result<(), crate::StoreError>,
    ) -> Result<Changes, GraphError> {
        let mut changes = Changes::new();
        for (index, &v) in self.inner.inputs.iter().enumerate() {
            let path = self.inner.vertices[v.ix()].path.clone();
            let codec = self.inner.input_codecs[index];
            let spec = self
                .inner
                .states
                .iter()
                .find(|s| s.path() == &path && s.kind() == crate::StateKind::ZSet)
                .ok_or_else(|| crate::StoreError::InputNotKept {
                    state: needed_by.to_owned(),
                    input: path.to_string(),
                    why: "it is transient".into(),
                })?;
            let not_kept = |why: &str| crate::StoreError::InputNotKept {
                state: needed_by.to_owned(),
                input: path.to_string(),
                why: why.to_owned(),
            };
            let mut sink = spec
                .codec()
                .rows_sink()
                .ok_or_else(|| not_kept("its state is not a Z-set"))?;
            read(spec, &mut *sink).map_err(|e| match e {
                // The reader knows the input; the states it is read for are
                // known here.
                crate::StoreError::InputNotKept { state, input, why } if state.is_empty() => {
                    crate::StoreError::InputNotKept {
                        state: needed_by.to_owned(),
                        input,
                        why,
                    }
                }
                other => other,
            })?;
            let value = spec
                .codec()
                .sink_to_zset(sink)
                .ok_or_else(|| not_kept("its state holds another row type"))?;
            changes.entries.push(ChangeEntry {
                graph: self.inner.id,
                index,
                path,
                value,
                codec,
            });
        }
        Ok(changes)
    }

    /// One iteration in the transaction `begin` starts on `store`.
    fn run_in<S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        changes: Changes,
        begin: impl FnOnce(&mut S) -> Result<Box<dyn StateTx + '_>, crate::StoreError>,
    ) -> Result<Outputs, GraphError> {
        if store.fingerprint() != self.fingerprint() {
            return Err(GraphError::WrongStore {
                store: store.fingerprint().to_owned(),
                graph: self.fingerprint().to_owned(),
            });
        }
        let started = self.profiling.then(Instant::now);
        let inputs = changes.into_inputs(self)?;
        let tx = begin(store)?;
        self.finish(tx, inputs, started)
    }

    /// Runs one iteration in `tx` and commits it, profiled when `started`
    /// is when the iteration began.
    fn finish(
        &self,
        mut tx: Box<dyn StateTx + '_>,
        inputs: Vec<Option<Value>>,
        started: Option<Instant>,
    ) -> Result<Outputs, GraphError> {
        let (values, meter) = run_iteration(&self.inner, &mut *tx, inputs, started.is_some())?;
        let committing = started.map(|_| Instant::now());
        tx.commit()?;
        let profile = match (meter, started, committing) {
            (Some(meter), Some(started), Some(committing)) => {
                let mut profile = meter.finish(&self.inner);
                profile.commit = committing.elapsed();
                profile.total = started.elapsed();
                Some(Box::new(profile))
            }
            _ => None,
        };
        Ok(Outputs {
            graph: self.inner.id,
            values: values.into_iter().map(Some).collect(),
            profile,
        })
    }

    /// Runs one iteration with a transaction a store has already begun, and
    /// commits it: for stores that run iterations inside transactions they
    /// do not own (e.g. an application's own Postgres transaction). The
    /// caller checks that the transaction belongs to a store opened for this
    /// graph.
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration).
    pub fn iteration_with(
        &self,
        tx: Box<dyn StateTx + '_>,
        changes: Changes,
    ) -> Result<Outputs, GraphError> {
        let started = self.profiling.then(Instant::now);
        let inputs = changes.into_inputs(self)?;
        self.finish(tx, inputs, started)
    }

    /// Changes encoded by [`Changes::encode`], for this graph's inputs
    /// (matched by path).
    ///
    /// # Errors
    /// Bytes that are not encoded changes, or an input this graph lacks.
    pub fn decode_changes(&self, bytes: &[u8]) -> Result<Changes, GraphError> {
        let corrupt = |detail: String| {
            GraphError::Store(crate::StoreError::Corrupt {
                table: "changes".into(),
                identity: String::new(),
                detail,
            })
        };
        let parts: Vec<(String, Vec<u8>)> =
            postcard::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?;
        let g = &self.inner;
        let mut changes = Changes::new();
        for (path, data) in parts {
            let index = g
                .inputs
                .iter()
                .position(|v| g.vertices[v.ix()].path.as_str() == path)
                .ok_or_else(|| GraphError::ForeignInput {
                    path: Path::new(&path),
                })?;
            let codec = g.input_codecs[index];
            let value =
                (codec.decode)(&data).map_err(|e| corrupt(format!("changes of `{path}`: {e}")))?;
            changes.entries.push(ChangeEntry {
                graph: g.id,
                index,
                path: Path::new(&path),
                value,
                codec,
            });
        }
        Ok(changes)
    }

    /// One iteration inserting `rows` into `input` (each with weight 1).
    /// Rows may be owned (moved) or borrowed (cloned): `[row]`, `&rows`,
    /// `rows.iter()` all work ([`IntoRow`]).
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration).
    pub fn insert<T: Data, S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        input: &Input<T>,
        rows: impl IntoIterator<Item = impl IntoRow<T>>,
    ) -> Result<Outputs, GraphError> {
        self.iteration(store, Changes::new().insert(input, rows))
    }

    /// One iteration removing `rows` from `input` (each with weight −1);
    /// owned or borrowed, as for [`insert`](Self::insert).
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration).
    pub fn remove<T: Data, S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        input: &Input<T>,
        rows: impl IntoIterator<Item = impl IntoRow<T>>,
    ) -> Result<Outputs, GraphError> {
        self.iteration(store, Changes::new().remove(input, rows))
    }

    /// One iteration replacing `old` by `new` in `input` (each owned or
    /// borrowed).
    ///
    /// # Errors
    /// As for [`iteration`](Self::iteration).
    pub fn replace<T: Data, S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        input: &Input<T>,
        old: impl IntoRow<T>,
        new: impl IntoRow<T>,
    ) -> Result<Outputs, GraphError> {
        self.iteration(store, Changes::new().replace(input, old, new))
    }
}

/// The changes of one iteration, per input.
///
/// ```
/// # use stepping_graph::{Graph, GraphError, Changes};
/// let (_graph, input) = Graph::build(|q| Ok(q.input::<char>("letters")?.0))?;
/// let changes = Changes::new().insert(&input, ['a', 'b']).remove(&input, ['a']);
/// assert!(!changes.is_empty());
/// # Ok::<(), GraphError>(())
/// ```
#[derive(Default)]
pub struct Changes {
    entries: Vec<ChangeEntry>,
}

struct ChangeEntry {
    graph: u64,
    index: usize,
    path: Path,
    value: Value,
    codec: InputCodec,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.path.as_str()))
            .finish()
    }
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Changes::default()
    }

    /// Whether no change was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the change `zset` to `input`.
    pub fn zset<T: Data>(mut self, input: &Input<T>, zset: ZSet<T>) -> Self {
        self.entries.push(ChangeEntry {
            graph: input.graph,
            index: input.index,
            path: input.path.clone(),
            value: Box::new(zset),
            codec: InputCodec::of::<T>(),
        });
        self
    }

    /// Inserts `rows` (weight +1 each), owned (moved) or borrowed (cloned).
    pub fn insert<T: Data>(
        self,
        input: &Input<T>,
        rows: impl IntoIterator<Item = impl IntoRow<T>>,
    ) -> Self {
        self.zset(input, rows.into_iter().map(|r| (r.into_row(), 1)).collect())
    }

    /// Removes `rows` (weight −1 each), owned (moved) or borrowed (cloned).
    pub fn remove<T: Data>(
        self,
        input: &Input<T>,
        rows: impl IntoIterator<Item = impl IntoRow<T>>,
    ) -> Self {
        self.zset(
            input,
            rows.into_iter().map(|r| (r.into_row(), -1)).collect(),
        )
    }

    /// Replaces `old` by `new` (each owned or borrowed).
    pub fn replace<T: Data>(
        self,
        input: &Input<T>,
        old: impl IntoRow<T>,
        new: impl IntoRow<T>,
    ) -> Self {
        self.zset(
            input,
            [(old.into_row(), -1), (new.into_row(), 1)]
                .into_iter()
                .collect(),
        )
    }

    /// A copy of these changes (to keep while an iteration consumes them).
    pub fn duplicate(&self) -> Changes {
        Changes {
            entries: self
                .entries
                .iter()
                .map(|e| ChangeEntry {
                    graph: e.graph,
                    index: e.index,
                    path: e.path.clone(),
                    value: (e.codec.clone)(&*e.value),
                    codec: e.codec,
                })
                .collect(),
        }
    }

    /// How many rows the changes hold, over all inputs.
    pub fn len(&self) -> usize {
        self.entries.iter().map(|e| (e.codec.len)(&*e.value)).sum()
    }

    /// The changes as bytes (postcard: each input's path and Z-set), e.g.
    /// to record a failed batch; [`Graph::decode_changes`] reads them back.
    ///
    /// # Errors
    /// A row that cannot be serialized.
    pub fn encode(&self) -> Result<Vec<u8>, GraphError> {
        let mut parts: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let bytes = (e.codec.encode)(&*e.value).map_err(|detail| {
                crate::StoreError::backend(format!("encoding the changes of `{}`", e.path), detail)
            })?;
            parts.push((e.path.to_string(), bytes));
        }
        postcard::to_allocvec(&parts)
            .map_err(|e| GraphError::Store(crate::StoreError::backend("encoding changes", e)))
    }

    fn into_inputs(self, graph: &Graph) -> Result<Vec<Option<Value>>, GraphError> {
        let g = &graph.inner;
        let mut inputs: Vec<Option<Value>> = (0..g.inputs.len()).map(|_| None).collect();
        for e in self.entries {
            let vertex = g.inputs.get(e.index).map(|v| &g.vertices[v.ix()]);
            let Some(vertex) = vertex.filter(|_| e.graph == g.id) else {
                return Err(GraphError::ForeignInput { path: e.path });
            };
            if vertex.ty != e.codec.type_name {
                return Err(GraphError::TypeMismatch {
                    path: e.path,
                    expected: vertex.ty,
                    found: e.codec.type_name,
                });
            }
            match &mut inputs[e.index] {
                Some(acc) => {
                    zset::weight::take_overflow();
                    (e.codec.add)(acc, e.value);
                    if zset::weight::take_overflow() {
                        return Err(GraphError::WeightOverflow { path: e.path });
                    }
                }
                slot @ None => *slot = Some(e.value),
            }
        }
        Ok(inputs)
    }
}

/// What changed in the outputs during one iteration.
#[derive(Debug)]
pub struct Outputs {
    graph: u64,
    values: Vec<Option<Value>>,
    profile: Option<Box<Profile>>,
}

impl Outputs {
    /// Where the iteration's time went, vertex by vertex, when it ran
    /// through a [`Graph::profiled`] graph (`None` otherwise).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_deref()
    }

    /// The change of `output` (borrowed).
    ///
    /// # Errors
    /// An output handle of another graph, or one already taken.
    pub fn get<X: 'static>(&self, output: &Output<X>) -> Result<&X, GraphError> {
        self.values
            .get(output.index)
            .filter(|_| output.graph == self.graph)
            .and_then(|v| v.as_ref())
            .and_then(|v| v.downcast_ref::<X>())
            .ok_or_else(|| GraphError::ForeignInput {
                path: output.path.clone(),
            })
    }

    /// The change of `output` (moved out).
    ///
    /// # Errors
    /// An output handle of another graph, or one already taken.
    pub fn take<X: 'static>(&mut self, output: &Output<X>) -> Result<X, GraphError> {
        let found = self
            .values
            .get_mut(output.index)
            .filter(|_| output.graph == self.graph)
            .and_then(Option::take)
            .and_then(|v| v.downcast::<X>().ok());
        found.map(|b| *b).ok_or_else(|| GraphError::ForeignInput {
            path: output.path.clone(),
        })
    }
}

impl<T: Data> Cache<T> {
    /// The whole cache, as committed in `store`.
    ///
    /// # Errors
    /// No such table, a shape mismatch, a read failure.
    pub fn zset<S: StateStore + ?Sized>(&self, store: &mut S) -> Result<ZSet<T>, GraphError> {
        let mut rows: Vec<StoredRow<T>> = Vec::new();
        store.read_committed(&self.spec, &Read::All, &mut rows)?;
        Ok(rows.into_iter().map(|r| (r.value, r.weight)).collect())
    }

    /// `(key, value, weight)` in key order (ties by value), for every row or
    /// only those whose key is in `match_keys`, read through `index`.
    ///
    /// Keys in and out are plain ([`IndexKey::Plain`]): an index on
    /// `Desc(r.at)` reads in descending order, but is given and returns
    /// `at`s, never `Desc(at)`s.
    ///
    /// # Errors
    /// [`GraphError::MissingIndex`] if the cache has no such index; store failures.
    pub fn iter_by_index<K: IndexKey, S: StateStore + ?Sized>(
        &self,
        store: &mut S,
        index: &Index<T, K>,
        match_keys: Option<&[K::Plain]>,
    ) -> Result<Vec<(K::Plain, T, Weight)>, GraphError> {
        let pos =
            self.spec
                .index_position(index.spec())
                .ok_or_else(|| GraphError::MissingIndex {
                    path: self.spec.path().clone(),
                    index: index.spec().to_string(),
                    available: self
                        .spec
                        .indexes()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let mut rows: Vec<StoredRow<T>> = Vec::new();
        match match_keys {
            None => store.read_committed(&self.spec, &Read::All, &mut rows)?,
            Some(keys) => {
                let mut keys: Vec<K> = keys.iter().cloned().map(K::from_plain).collect();
                keys.sort_unstable();
                keys.dedup();
                store.read_committed(
                    &self.spec,
                    &Read::ByIndex {
                        index: pos,
                        keys: &keys,
                    },
                    &mut rows,
                )?;
                rows.retain(|r| keys.binary_search(&index.key(&r.value)).is_ok());
            }
        }
        let mut out: Vec<(K, T, Weight)> = rows
            .into_iter()
            .map(|r| (index.key(&r.value), r.value, r.weight))
            .collect();
        // A cache is a set of distinct values: no two rows compare equal.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(out
            .into_iter()
            .map(|(k, v, w)| (k.into_plain(), v, w))
            .collect())
    }
}
