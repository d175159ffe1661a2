//! The typed query builder.
//!
//! [`Graph::build`](crate::Graph::build) hands the user's closure a
//! [`Query`]; streams are [`Stream`] handles (`Copy`: a vertex id, the
//! query it belongs to, and phantom types), and every operator adds a vertex.
//! Nothing fails eagerly: problems (duplicate paths, bad indexes, misuse)
//! are recorded and reported by [`Graph::build`](crate::Graph::build) as a
//! [`GraphError`] naming the user's line.

use std::any::type_name;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zset::{Data, Index, IndexKey, ZSet};

use crate::codec::{DynIndex, KeyedCodec, ZSetCodec};
use crate::error::At;
use crate::vertex::{InputCodec, Op, OpFn, RecursiveOp, ScalarDelayOp, ScopeInfo, Vertex, ZSetFns};
use crate::{
    Codec, Ctx, GraphError, Path, Rec, Root, Scope, ScopeId, Slot, StateId, StateSpec, Value,
    VertexId,
};

static NEXT_QUERY_ID: AtomicU64 = AtomicU64::new(1);

/// A state declared while building; finalization may merge declarations
/// that hold the same integral.
pub(crate) struct StateDecl {
    pub(crate) path: Path,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) at: At,
    /// Whether another integral of the same stream may share it.
    pub(crate) shareable: bool,
}

/// Everything recorded while building.
pub(crate) struct Builder {
    pub(crate) vertices: Vec<Vertex>,
    pub(crate) states: Vec<StateDecl>,
    pub(crate) inputs: Vec<VertexId>,
    pub(crate) input_codecs: Vec<InputCodec>,
    pub(crate) outputs: Vec<VertexId>,
    pub(crate) sinks: Vec<VertexId>,
    pub(crate) scopes: Vec<ScopeInfo>,
    prefix: Vec<String>,
    /// Paths of inputs, named streams, caches and derived vertices: one
    /// name space, since each can name a stored state (a table).
    paths: HashMap<Path, At>,
    /// Output names: a name space of their own, since an output keeps no
    /// state (so `input("b")` and `output("b", ..)` can live side by side).
    output_paths: HashMap<Path, At>,
    pub(crate) errors: Vec<GraphError>,
    /// User-given versions of vertices (`Stream::version`), for what the
    /// engine cannot see: closures.
    pub(crate) versions: HashMap<VertexId, u32>,
    /// Per input, the sink that keeps its integral (`None`: transient).
    pub(crate) input_sinks: Vec<Option<VertexId>>,
    /// The definition cells of cache handles, filled at finalization.
    pub(crate) cache_definitions: Vec<(StateId, Arc<std::sync::OnceLock<String>>)>,
    /// Names the store's older query used (`Query::renamed`): (old, new).
    pub(crate) renames: Vec<(String, String)>,
    /// How to carry an input's rows over from an older row type
    /// (`Query::migrate_input`), by input path.
    pub(crate) input_migrations: HashMap<Path, crate::InputMigration>,
}

/// The query being built: the argument of [`Graph::build`](crate::Graph::build)'s closure.
pub struct Query {
    pub(crate) b: RefCell<Builder>,
    pub(crate) id: u64,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Query({} vertices)", self.b.borrow().vertices.len())
    }
}

/// A stream of values of type `T` in scope `S`: a handle to the vertex that
/// computes it. Operators (from the `operators` crate) are methods on it.
///
/// In a [`Grouped`](crate::Grouped) scope, a `Stream<ZSet<T>, Grouped<K>>`
/// is "a `ZSet<T>` per key `K`".
pub struct Stream<'q, T, S = Root> {
    q: &'q Query,
    id: VertexId,
    scope: ScopeId,
    _t: PhantomData<fn() -> (T, S)>,
}

impl<T, S> Clone for Stream<'_, T, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, S> Copy for Stream<'_, T, S> {}

impl<T, S> std::fmt::Debug for Stream<'_, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({})", self.path())
    }
}

/// A handle to an input of a built graph, for feeding it changes.
#[derive(Debug)]
pub struct Input<T> {
    pub(crate) graph: u64,
    pub(crate) index: usize,
    pub(crate) path: Path,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Input<T> {
    fn clone(&self) -> Self {
        Input {
            graph: self.graph,
            index: self.index,
            path: self.path.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Input<T> {
    /// The input's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A handle to an output of a built graph, for reading an iteration's result.
#[derive(Debug)]
pub struct Output<X> {
    pub(crate) graph: u64,
    pub(crate) index: usize,
    pub(crate) path: Path,
    _t: PhantomData<fn() -> X>,
}

impl<X> Clone for Output<X> {
    fn clone(&self) -> Self {
        Output {
            graph: self.graph,
            index: self.index,
            path: self.path.clone(),
            _t: PhantomData,
        }
    }
}

impl<X> Output<X> {
    /// The output's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A named integral inside a query whose state any process can read later
/// through a store: `cache.zset(&mut store)`, `cache.iter_by_index(...)`.
///
/// It needs only the state's path and shape, so a service that builds the
/// same query can read a cache written by another.
pub struct Cache<T> {
    pub(crate) spec: StateSpec,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            spec: self.spec.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({:?})", self.spec)
    }
}

impl<T> Cache<T> {
    /// The cache's state: path and shape.
    pub fn spec(&self) -> &StateSpec {
        &self.spec
    }
}

/// Something usable as an index of rows `R`: an [`Index`] of any key type,
/// or a [`PrefixIndex`](crate::PrefixIndex).
pub trait AsDynIndex<R> {
    /// The index with its key type erased.
    fn dyn_index(&self) -> Arc<dyn DynIndex<R>>;
}

impl<R: Data, K: IndexKey> AsDynIndex<R> for Index<R, K> {
    fn dyn_index(&self) -> Arc<dyn DynIndex<R>> {
        Arc::new(self.clone())
    }
}

impl<R> AsDynIndex<R> for Arc<dyn DynIndex<R>> {
    fn dyn_index(&self) -> Arc<dyn DynIndex<R>> {
        Arc::clone(self)
    }
}

impl<R: Data, P: IndexKey, K: IndexKey> AsDynIndex<R> for crate::PrefixIndex<R, P, K> {
    fn dyn_index(&self) -> Arc<dyn DynIndex<R>> {
        Arc::new(self.clone())
    }
}

pub(crate) fn check_name(name: &str, at: At) -> Result<(), GraphError> {
    let reason = if name.is_empty() {
        "names cannot be empty"
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        "`/` separates scopes; a name cannot start or end with it or repeat it"
    } else if name.chars().any(char::is_control) {
        "names cannot contain control characters"
    } else {
        return Ok(());
    };
    Err(GraphError::InvalidName {
        name: name.to_owned(),
        reason,
        at,
    })
}

impl Query {
    pub(crate) fn new() -> Self {
        let root = ScopeInfo {
            parent: None,
            label: String::new(),
            key_parts: Vec::new(),
            recursive: false,
        };
        Query {
            b: RefCell::new(Builder {
                vertices: Vec::new(),
                states: Vec::new(),
                inputs: Vec::new(),
                input_codecs: Vec::new(),
                outputs: Vec::new(),
                sinks: Vec::new(),
                scopes: vec![root],
                prefix: Vec::new(),
                paths: HashMap::new(),
                output_paths: HashMap::new(),
                errors: Vec::new(),
                versions: HashMap::new(),
                input_sinks: Vec::new(),
                cache_definitions: Vec::new(),
                renames: Vec::new(),
                input_migrations: HashMap::new(),
            }),
            id: NEXT_QUERY_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Records an error to be reported when building ends.
    pub fn record_error(&self, error: GraphError) {
        self.b.borrow_mut().errors.push(error);
    }

    /// The root scope.
    pub fn root_scope(&self) -> ScopeId {
        ScopeId(0)
    }

    /// Runs `f` with `name` as a scope: paths named inside (inputs, named
    /// streams, caches, outputs) are prefixed `name/`.
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (_graph, input) = Graph::build(|q| {
    ///     q.scope("billing", || Ok(q.input::<i64>("amounts")?.0))
    /// })?;
    /// assert_eq!(input.path().as_str(), "billing/amounts");
    /// # Ok::<(), GraphError>(())
    /// ```
    pub fn scope<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.b.borrow_mut().prefix.push(name.to_owned());
        let r = f();
        self.b.borrow_mut().prefix.pop();
        r
    }

    pub(crate) fn named_path(&self, name: &str) -> Path {
        let b = self.b.borrow();
        let mut p = Path::new(&b.prefix.join("/"));
        for seg in name.split('/') {
            p = p.child(seg);
        }
        p
    }

    /// Claims `path` for a vertex named by the user; a second claim is an error.
    pub(crate) fn claim(&self, path: &Path, at: At) -> Result<(), GraphError> {
        Self::claim_in(&mut self.b.borrow_mut().paths, path, at)
    }

    fn claim_in(paths: &mut HashMap<Path, At>, path: &Path, at: At) -> Result<(), GraphError> {
        if let Some(first) = paths.get(path) {
            return Err(GraphError::DuplicatePath {
                path: path.clone(),
                first: *first,
                second: at,
            });
        }
        paths.insert(path.clone(), at);
        Ok(())
    }

    /// A unique path for a derived vertex: `path`, or `path#2`, `path#3`...
    fn unique(&self, path: Path, at: At) -> Path {
        let mut b = self.b.borrow_mut();
        let mut candidate = path.clone();
        let mut n = 2;
        while b.paths.contains_key(&candidate) {
            candidate = path.suffixed(&format!("#{n}"));
            n += 1;
        }
        b.paths.insert(candidate.clone(), at);
        candidate
    }

    pub(crate) fn path_of(&self, id: VertexId) -> Path {
        self.b.borrow().vertices[id.ix()].path.clone()
    }

    pub(crate) fn push_vertex(&self, vertex: Vertex) -> VertexId {
        let mut b = self.b.borrow_mut();
        b.vertices.push(vertex);
        VertexId((b.vertices.len() - 1) as u32)
    }

    /// Declares an input of rows `T`, returning the handle to feed it and
    /// the stream of its changes.
    ///
    /// Inputs, caches and [`named`](Stream::named) streams share one name
    /// space, since each names stored state (a table); outputs have a name
    /// space of their own (see [`output`](Self::output)).
    ///
    /// # Errors
    /// An invalid name, or [`GraphError::DuplicatePath`] for a name an
    /// input, cache or named stream already has.
    #[track_caller]
    pub fn input<T: Data>(
        &self,
        name: &str,
    ) -> Result<(Input<T>, Stream<'_, ZSet<T>>), GraphError> {
        let at = At(Location::caller());
        check_name(name, at)?;
        let path = self.named_path(name);
        self.claim(&path, at)?;
        let index = self.b.borrow().inputs.len();
        let id = self.push_vertex(Vertex {
            path: path.clone(),
            label: "input",
            inputs: Vec::new(),
            op: Op::Input(index),
            scope: ScopeId(0),
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<T>()),
            at,
            states: Vec::new(),
        });
        self.b.borrow_mut().inputs.push(id);
        self.b.borrow_mut().input_codecs.push(InputCodec::of::<T>());
        let stream = Stream::from_parts(self, id, ScopeId(0));
        // The input's integral is kept (shared with any other integral of
        // it, e.g. a join's), so that state added or changed later can be
        // computed again from it: see `Stream::transient`.
        let (kept, _) = stream.raw_integrate(&[]);
        let sink = self.push_vertex(Vertex {
            path: path.child("kept"),
            label: "kept input",
            inputs: vec![kept.id],
            op: Op::Sink,
            scope: ScopeId(0),
            ty: "()",
            fns: None,
            at,
            states: Vec::new(),
        });
        self.b.borrow_mut().sinks.push(sink);
        self.b.borrow_mut().input_sinks.push(Some(sink));
        let input = Input {
            graph: self.id,
            index,
            path,
            _t: PhantomData,
        };
        Ok((input, stream))
    }

    /// Declares an output: each iteration returns this stream's value.
    ///
    /// Outputs have a name space of their own: an output keeps no state,
    /// so it may share its name with an input, a cache or a named stream
    /// (only two outputs of one name are refused).
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (graph, (input, output)) = Graph::build(|q| {
    ///     let (input, b) = q.input::<i64>("b")?;
    ///     Ok((input, q.output("b", b)?))
    /// })?;
    /// assert_eq!((input.path().as_str(), output.path().as_str()), ("b", "b"));
    /// # let _ = graph;
    /// # Ok::<(), GraphError>(())
    /// ```
    ///
    /// # Errors
    /// An invalid name, or another output of the same name.
    #[track_caller]
    pub fn output<T: Data>(
        &self,
        name: &str,
        stream: Stream<'_, ZSet<T>>,
    ) -> Result<Output<ZSet<T>>, GraphError> {
        let fns = ZSetFns::of::<T>();
        self.output_with(
            name,
            stream.id,
            type_name::<ZSet<T>>(),
            Some(fns),
            Box::new(move |ctx, ins| (fns.materialize)(ctx, ins[0])),
        )
    }

    /// Declares an output of a scalar stream (outputs have their own name
    /// space, as for [`output`](Self::output)).
    ///
    /// # Errors
    /// An invalid name, or another output of the same name.
    #[track_caller]
    pub fn output_scalar<V: Data>(
        &self,
        name: &str,
        stream: Stream<'_, V>,
    ) -> Result<Output<V>, GraphError> {
        self.output_with(
            name,
            stream.id,
            type_name::<V>(),
            None,
            Box::new(|ctx, ins| Ok(Box::new(ctx.scalar::<V>(ins[0])?.clone()))),
        )
    }

    #[track_caller]
    fn output_with<X>(
        &self,
        name: &str,
        input: VertexId,
        ty: &'static str,
        fns: Option<ZSetFns>,
        f: Box<OpFn>,
    ) -> Result<Output<X>, GraphError> {
        let at = At(Location::caller());
        check_name(name, at)?;
        let path = self.named_path(name);
        Self::claim_in(&mut self.b.borrow_mut().output_paths, &path, at)?;
        let index = self.b.borrow().outputs.len();
        let id = self.push_vertex(Vertex {
            path: path.clone(),
            label: "output",
            inputs: vec![input],
            op: Op::Func(f),
            scope: ScopeId(0),
            ty,
            fns,
            at,
            states: Vec::new(),
        });
        self.b.borrow_mut().outputs.push(id);
        Ok(Output {
            graph: self.id,
            index,
            path,
            _t: PhantomData,
        })
    }

    /// Declares a cache: a named integral of `stream` with `indexes`, kept
    /// in the store so that any process can read it later.
    ///
    /// Its name is its state's (and table's) name, so it shares a name
    /// space with inputs and named streams (not with outputs).
    ///
    /// # Errors
    /// An invalid name, a name an input, cache or named stream already has
    /// ([`GraphError::DuplicatePath`]), or a malformed index.
    #[track_caller]
    pub fn cache<T: Data>(
        &self,
        name: &str,
        stream: Stream<'_, ZSet<T>>,
        indexes: &[&dyn AsDynIndex<T>],
    ) -> Result<Cache<T>, GraphError> {
        let at = At(Location::caller());
        check_name(name, at)?;
        let path = self.named_path(name);
        self.claim(&path, at)?;
        let indexes: Vec<Arc<dyn DynIndex<T>>> = indexes.iter().map(|i| i.dyn_index()).collect();
        for ix in &indexes {
            self.check_index(ix.spec(), at)?;
        }
        // A cache's rows are readable from plain SQL: typed columns beside
        // the bytes.
        let codec: Arc<dyn Codec> = Arc::new(ZSetCodec::<T>::new(false, indexes).with_columns());
        let spec = StateSpec::new(path.clone(), Arc::clone(&codec));
        let state = self.declare(path.clone(), codec, at, false);
        self.b
            .borrow_mut()
            .cache_definitions
            .push((state, spec.definition_cell()));
        let (integrated, _) = stream.integral_with_state(state, at);
        let sink = self.push_vertex(Vertex {
            path: path.child("sink"),
            label: "cache",
            inputs: vec![integrated.id],
            op: Op::Sink,
            scope: ScopeId(0),
            ty: "()",
            fns: None,
            at,
            states: Vec::new(),
        });
        self.b.borrow_mut().sinks.push(sink);
        Ok(Cache {
            spec,
            _t: PhantomData,
        })
    }

    fn check_index(&self, spec: &zset::IndexSpec, at: At) -> Result<(), GraphError> {
        if spec.is_well_formed() {
            Ok(())
        } else {
            Err(GraphError::InvalidIndex {
                index: spec.name.to_string(),
                parts: spec.parts.len(),
                columns: spec.columns.len(),
                at,
            })
        }
    }

    pub(crate) fn declare(
        &self,
        path: Path,
        codec: Arc<dyn Codec>,
        at: At,
        shareable: bool,
    ) -> StateId {
        let mut b = self.b.borrow_mut();
        b.states.push(StateDecl {
            path,
            codec,
            at,
            shareable,
        });
        StateId((b.states.len() - 1) as u32)
    }

    /// Declares a keyed state (one row per key of `key`) at `path`, for an
    /// operator that reads and writes it itself (aggregates per group).
    #[track_caller]
    pub fn declare_keyed<R: Data, K: IndexKey + std::hash::Hash>(
        &self,
        path: Path,
        key: Index<R, K>,
    ) -> StateId {
        let at = At(Location::caller());
        if let Err(e) = self.check_index(key.spec(), at) {
            self.record_error(e);
        }
        self.declare(path, Arc::new(KeyedCodec::new(key)), at, false)
    }

    /// Declares a Z-set state at `path` with `indexes`, for an operator that
    /// reads and writes it itself; `nested` gives it an inner step (recursion).
    #[track_caller]
    pub fn declare_zset<R: Data>(
        &self,
        path: Path,
        nested: bool,
        indexes: Vec<Arc<dyn DynIndex<R>>>,
    ) -> StateId {
        let at = At(Location::caller());
        for ix in &indexes {
            if let Err(e) = self.check_index(ix.spec(), at) {
                self.record_error(e);
            }
        }
        self.declare(
            path,
            Arc::new(ZSetCodec::<R>::new(nested, indexes)),
            at,
            false,
        )
    }

    /// The column names of a scope's group keys, outermost first: the part
    /// names of each `group` index on the way from the root.
    pub fn key_parts(&self, scope: ScopeId) -> Vec<String> {
        let b = self.b.borrow();
        let mut chain = Vec::new();
        let mut s = Some(scope);
        while let Some(id) = s {
            let info = &b.scopes[id.0 as usize];
            chain.push(info.key_parts.clone());
            s = info.parent;
        }
        chain.into_iter().rev().flatten().collect()
    }

    pub(crate) fn new_scope(
        &self,
        parent: ScopeId,
        label: String,
        key_parts: Vec<String>,
        recursive: bool,
    ) -> ScopeId {
        let mut b = self.b.borrow_mut();
        b.scopes.push(ScopeInfo {
            parent: Some(parent),
            label,
            key_parts,
            recursive,
        });
        ScopeId((b.scopes.len() - 1) as u32)
    }
}

/// What a new vertex is: its label, inputs, function and the states it
/// touches. Paths are derived from the first input (`in.label` or, with two
/// inputs, `left.label(right)`) unless given.
pub struct VertexDef {
    /// The operator's name (`map`, `join`, ...).
    pub label: &'static str,
    /// Input vertices, in the order the function receives their slots.
    pub inputs: Vec<VertexId>,
    /// The function.
    pub f: Box<OpFn>,
    /// States the function reads or writes through [`Ctx`].
    pub states: Vec<StateId>,
    /// An explicit path, instead of the derived one.
    pub path: Option<Path>,
}

impl std::fmt::Debug for VertexDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VertexDef({}, {:?})", self.label, self.inputs)
    }
}

impl<'q, T, S> Stream<'q, T, S> {
    pub(crate) fn from_parts(q: &'q Query, id: VertexId, scope: ScopeId) -> Self {
        Stream {
            q,
            id,
            scope,
            _t: PhantomData,
        }
    }

    /// The vertex computing this stream.
    pub fn id(&self) -> VertexId {
        self.id
    }

    /// The query this stream belongs to.
    pub fn query(&self) -> &'q Query {
        self.q
    }

    /// The scope this stream lives in.
    pub fn scope_id(&self) -> ScopeId {
        self.scope
    }

    /// The stream's path.
    pub fn path(&self) -> Path {
        self.q.path_of(self.id)
    }

    /// The same stream under a name of the user's choosing, so that state
    /// derived from it (integrals, aggregates) has a stable, readable path.
    /// A duplicate name is reported when building ends.
    #[track_caller]
    pub fn named(self, name: &str) -> Self {
        let at = At(Location::caller());
        if let Err(e) = check_name(name, at) {
            self.q.record_error(e);
            return self;
        }
        let path = self.q.named_path(name);
        if let Err(e) = self.q.claim(&path, at) {
            self.q.record_error(e);
            return self;
        }
        let (ty, fns) = {
            let b = self.q.b.borrow();
            let v = &b.vertices[self.id.ix()];
            (v.ty, v.fns)
        };
        let id = self.q.push_vertex(Vertex {
            path,
            label: "named",
            inputs: vec![self.id],
            op: Op::Identity,
            scope: self.scope,
            ty,
            fns,
            at,
            states: Vec::new(),
        });
        Stream::from_parts(self.q, id, self.scope)
    }

    /// The same stream under `path` for naming derived state, like
    /// [`named`](Self::named) but made unique (`path#2`) instead of failing:
    /// how composite operators give their internal streams stable paths
    /// under their own.
    #[track_caller]
    pub fn at(self, path: Path) -> Self {
        let at = At(Location::caller());
        let path = self.q.unique(path, at);
        let (ty, fns) = {
            let b = self.q.b.borrow();
            let v = &b.vertices[self.id.ix()];
            (v.ty, v.fns)
        };
        let id = self.q.push_vertex(Vertex {
            path,
            label: "named",
            inputs: vec![self.id],
            op: Op::Identity,
            scope: self.scope,
            ty,
            fns,
            at,
            states: Vec::new(),
        });
        Stream::from_parts(self.q, id, self.scope)
    }

    /// Marks what this stream computes as version `version`: every state
    /// downstream of it records a different definition, so a store holding
    /// state from another version is told the query changed (see
    /// `StoreError::QueryChanged`). Bump it when a closure changes in a
    /// way the engine cannot see (`map(|r| r.v * 2)` instead of `r.v`):
    /// the one change a store cannot detect by itself.
    pub fn version(self, version: u32) -> Self {
        self.q.b.borrow_mut().versions.insert(self.id, version);
        self
    }

    /// Marks this input as transient: its integral is not kept for its own
    /// sake (only if an operator needs it, e.g. a join). For an append-only
    /// firehose whose rows need not be stored; a later migration that needs
    /// to recompute state from it is then refused, naming it.
    #[track_caller]
    pub fn transient(self) -> Self {
        let at = At(Location::caller());
        let mut b = self.q.b.borrow_mut();
        match b.vertices[self.id.ix()].op {
            Op::Input(n) => {
                if let Some(sink) = b.input_sinks[n].take() {
                    b.sinks.retain(|s| *s != sink);
                }
            }
            _ => {
                let path = b.vertices[self.id.ix()].path.clone();
                b.errors.push(GraphError::NotAnInput { path, at });
            }
        }
        drop(b);
        self
    }

    /// Checks that `other` belongs to the same query, recording an error if not.
    #[track_caller]
    pub fn same_query<U, S2>(&self, other: &Stream<'_, U, S2>) -> bool {
        if std::ptr::eq(self.q, other.q) {
            true
        } else {
            self.q.record_error(GraphError::ForeignHandle {
                at: At(Location::caller()),
            });
            false
        }
    }

    /// Adds a vertex in scope `scope` computing a value of type `U` in
    /// scope `S2` (the building block of every operator).
    #[track_caller]
    pub fn vertex<U, S2>(
        &self,
        def: VertexDef,
        ty: &'static str,
        fns: Option<ZSetFns>,
        scope: ScopeId,
    ) -> Stream<'q, U, S2> {
        let id = self.q.derived_vertex(
            def.label,
            def.inputs,
            Op::Func(def.f),
            ty,
            fns,
            scope,
            def.states,
            def.path,
        );
        Stream::from_parts(self.q, id, scope)
    }
}

impl Query {
    /// Adds a vertex whose path is `path` or derived from its inputs:
    /// `in.label`, or `left.label(right)` with two inputs.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    fn derived_vertex(
        &self,
        label: &'static str,
        inputs: Vec<VertexId>,
        op: Op,
        ty: &'static str,
        fns: Option<ZSetFns>,
        scope: ScopeId,
        states: Vec<StateId>,
        path: Option<Path>,
    ) -> VertexId {
        let at = At(Location::caller());
        let path = match path {
            Some(p) => self.unique(p, at),
            None => {
                let first = inputs
                    .first()
                    .map_or_else(|| Path::new("vertex"), |i| self.path_of(*i));
                let derived = match inputs.get(1) {
                    Some(second) => {
                        first.suffixed(&format!(".{label}({})", self.path_of(*second).last()))
                    }
                    None => first.suffixed(&format!(".{label}")),
                };
                self.unique(derived, at)
            }
        };
        self.push_vertex(Vertex {
            path,
            label,
            inputs,
            op,
            scope,
            ty,
            fns,
            at,
            states,
        })
    }
}

impl<'q, T: Data, S: Scope> Stream<'q, ZSet<T>, S> {
    /// A stateless vertex computing `f` of this stream's Z-set (given as
    /// run-time rows `S::Row<T>`).
    #[track_caller]
    pub fn apply<U: Data>(
        self,
        label: &'static str,
        f: impl Fn(&ZSet<S::Row<T>>) -> ZSet<S::Row<U>> + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S> {
        self.try_apply(label, move |z| Ok(f(z)))
    }

    /// Like [`apply`](Self::apply) for a function that can fail.
    #[track_caller]
    pub fn try_apply<U: Data>(
        self,
        label: &'static str,
        f: impl Fn(&ZSet<S::Row<T>>) -> Result<ZSet<S::Row<U>>, GraphError> + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S> {
        let def = VertexDef {
            label,
            inputs: vec![self.id],
            f: Box::new(move |ctx, ins| {
                let z = ctx.zset::<S::Row<T>>(ins[0])?;
                Ok(Box::new(f(&z)?) as Value)
            }),
            states: Vec::new(),
            path: None,
        };
        self.vertex(
            def,
            type_name::<ZSet<U>>(),
            Some(ZSetFns::of::<S::Row<U>>()),
            self.scope,
        )
    }

    /// A stateless vertex computing `f` of this stream's and `other`'s Z-sets.
    #[track_caller]
    pub fn apply2<U: Data, V: Data>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        label: &'static str,
        f: impl Fn(&ZSet<S::Row<T>>, &ZSet<S::Row<U>>) -> ZSet<S::Row<V>> + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S> {
        self.same_query(&other);
        let def = VertexDef {
            label,
            inputs: vec![self.id, other.id],
            f: Box::new(move |ctx, ins| {
                let a = ctx.zset::<S::Row<T>>(ins[0])?;
                let b = ctx.zset::<S::Row<U>>(ins[1])?;
                Ok(Box::new(f(&a, &b)) as Value)
            }),
            states: Vec::new(),
            path: None,
        };
        self.vertex(
            def,
            type_name::<ZSet<V>>(),
            Some(ZSetFns::of::<S::Row<V>>()),
            self.scope,
        )
    }

    /// A vertex with full access to the iteration context: `inputs` are this
    /// stream followed by `others`, passed as raw [`Slot`]s (lazy states
    /// included), and `states` are states the function reads or writes.
    #[track_caller]
    pub fn apply_ctx<U: Data>(
        self,
        others: &[VertexId],
        label: &'static str,
        states: Vec<StateId>,
        path: Option<Path>,
        f: impl Fn(&mut Ctx<'_>, &[&Slot]) -> Result<ZSet<S::Row<U>>, GraphError>
        + Send
        + Sync
        + 'static,
    ) -> Stream<'q, ZSet<U>, S> {
        let mut inputs = vec![self.id];
        inputs.extend_from_slice(others);
        let def = VertexDef {
            label,
            inputs,
            f: Box::new(move |ctx, ins| Ok(Box::new(f(ctx, ins)?) as Value)),
            states,
            path,
        };
        self.vertex(
            def,
            type_name::<ZSet<U>>(),
            Some(ZSetFns::of::<S::Row<U>>()),
            self.scope,
        )
    }

    /// The `+` vertex (recognised by the integrate fusion).
    #[track_caller]
    pub fn raw_add(self, other: Self) -> Self {
        self.same_query(&other);
        let f: Box<OpFn> = Box::new(|ctx, ins| {
            let a = ctx.zset::<S::Row<T>>(ins[0])?;
            let b = ctx.zset::<S::Row<T>>(ins[1])?;
            Ok(Box::new(&*a + &*b) as Value)
        });
        let fns = Some(ZSetFns::of::<S::Row<T>>());
        let id = self.q.derived_vertex(
            "add",
            vec![self.id, other.id],
            Op::Add(f),
            type_name::<ZSet<T>>(),
            fns,
            self.scope,
            Vec::new(),
            None,
        );
        Stream::from_parts(self.q, id, self.scope)
    }

    /// z⁻¹ of this stream: its value one iteration earlier (empty at first).
    /// The state holds the previous value, with `indexes` so that readers
    /// can read it lazily; writes are the difference.
    #[track_caller]
    pub fn raw_delay(self, indexes: &[&dyn AsDynIndex<S::Row<T>>]) -> Self {
        let at = At(Location::caller());
        self.refuse_nested("delay", at);
        let path = self.path().child("delay");
        let indexes: Vec<Arc<dyn DynIndex<S::Row<T>>>> =
            indexes.iter().map(|i| i.dyn_index()).collect();
        for ix in &indexes {
            if let Err(e) = self.q.check_index(ix.spec(), at) {
                self.q.record_error(e);
            }
        }
        // Two delays of one stream hold the same value: they share the state.
        let state = self.q.declare(
            path,
            Arc::new(ZSetCodec::<S::Row<T>>::new(false, indexes)),
            at,
            true,
        );
        let id = self.q.push_vertex(Vertex {
            path: self.q.unique(self.path().suffixed(".delay"), at),
            label: "delay",
            inputs: vec![self.id],
            op: Op::Delay(state),
            scope: self.scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<S::Row<T>>()),
            at,
            states: Vec::new(),
        });
        Stream::from_parts(self.q, id, self.scope)
    }

    fn refuse_nested(&self, what: &str, at: At) {
        if S::NESTED {
            self.q.record_error(GraphError::InvalidName {
                name: what.to_owned(),
                reason: "this operator cannot be used inside a recursion (only map, filter, map_many, neg, add, join and distinct can)",
                at,
            });
        }
    }

    /// The integral of this stream as the paper builds it: `I = a + z⁻¹(I)`,
    /// an `add` vertex and a `delay` vertex in a loop (finalization fuses
    /// them into one vertex whose store operation is "apply this delta").
    /// Returns `(I, z⁻¹I)`. The state is named after this stream and shared
    /// with every other integral of it; its indexes are the union of all.
    #[track_caller]
    pub fn raw_integrate(self, indexes: &[&dyn AsDynIndex<S::Row<T>>]) -> (Self, Self) {
        let at = At(Location::caller());
        self.refuse_nested("integrate", at);
        let indexes: Vec<Arc<dyn DynIndex<S::Row<T>>>> =
            indexes.iter().map(|i| i.dyn_index()).collect();
        for ix in &indexes {
            if let Err(e) = self.q.check_index(ix.spec(), at) {
                self.q.record_error(e);
            }
        }
        let codec: Arc<dyn Codec> = Arc::new(ZSetCodec::<S::Row<T>>::new(false, indexes));
        let state = self.q.declare(self.path(), codec, at, true);
        self.integral_with_state(state, at)
    }

    /// The integral of this stream kept in `state`: its vertex (a feed's).
    pub(crate) fn integral_id(self, state: StateId, at: At) -> VertexId {
        self.integral_with_state(state, at).0.id
    }

    fn integral_with_state(self, state: StateId, at: At) -> (Self, Self) {
        let base = self.path();
        let delay = self.q.push_vertex(Vertex {
            path: self.q.unique(base.suffixed(".integrate_delay"), at),
            label: "delay",
            inputs: Vec::new(),
            op: Op::Delay(state),
            scope: self.scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<S::Row<T>>()),
            at,
            states: Vec::new(),
        });
        let f: Box<OpFn> = Box::new(|ctx, ins| {
            let a = ctx.zset::<S::Row<T>>(ins[0])?;
            let b = ctx.zset::<S::Row<T>>(ins[1])?;
            Ok(Box::new(&*a + &*b) as Value)
        });
        let add = self.q.push_vertex(Vertex {
            path: self.q.unique(base.suffixed(".integrate"), at),
            label: "add",
            inputs: vec![self.id, delay],
            op: Op::Add(f),
            scope: self.scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<S::Row<T>>()),
            at,
            states: Vec::new(),
        });
        self.q.b.borrow_mut().vertices[delay.ix()].inputs = vec![add];
        (
            Stream::from_parts(self.q, add, self.scope),
            Stream::from_parts(self.q, delay, self.scope),
        )
    }
}

/// A scalar value for scalar streams (`make_scalar`, scalar `integrate`):
/// a group under `+` with `Default` as zero. Implemented for the signed
/// integers and [`F64`](zset::F64); implement it for your own aggregates.
pub trait Scalar:
    Data + Default + std::ops::Add<Output = Self> + std::ops::Neg<Output = Self>
{
}

impl Scalar for i64 {}
impl Scalar for i32 {}
impl Scalar for zset::F64 {}

impl<'q, V: Scalar> Stream<'q, V, Root> {
    /// A stateless vertex computing a scalar from this scalar.
    #[track_caller]
    pub fn apply_scalar<U: Data>(
        self,
        label: &'static str,
        f: impl Fn(&V) -> U + Send + Sync + 'static,
    ) -> Stream<'q, U, Root> {
        let def = VertexDef {
            label,
            inputs: vec![self.id],
            f: Box::new(move |ctx, ins| Ok(Box::new(f(ctx.scalar::<V>(ins[0])?)) as Value)),
            states: Vec::new(),
            path: None,
        };
        self.vertex(def, type_name::<U>(), None, ScopeId(0))
    }

    /// `a + b` of two scalar streams.
    #[track_caller]
    pub fn raw_add_scalar(self, other: Self) -> Self {
        self.same_query(&other);
        let f: Box<OpFn> = Box::new(|ctx, ins| {
            let a = ctx.scalar::<V>(ins[0])?.clone();
            let b = ctx.scalar::<V>(ins[1])?.clone();
            Ok(Box::new(a + b) as Value)
        });
        let id = self.q.derived_vertex(
            "add",
            vec![self.id, other.id],
            Op::Add(f),
            type_name::<V>(),
            None,
            ScopeId(0),
            Vec::new(),
            None,
        );
        Stream::from_parts(self.q, id, ScopeId(0))
    }

    /// z⁻¹ of a scalar stream (`V::default()` at first). Finalization
    /// replaces it by `make_set → delay → make_scalar`, storing the scalar as
    /// a one-row Z-set.
    #[track_caller]
    pub fn raw_delay_scalar(self) -> Self {
        let d = self.scalar_delay_vertex(At(Location::caller()), self.path());
        self.q.b.borrow_mut().vertices[d.id.ix()].inputs = vec![self.id];
        d
    }

    /// The integral of a scalar stream, `I = a + z⁻¹(I)`: returns `(I, z⁻¹I)`.
    #[track_caller]
    pub fn raw_integrate_scalar(self) -> (Self, Self) {
        let at = At(Location::caller());
        let d = self.scalar_delay_vertex(at, self.path().suffixed(".integrate"));
        let f: Box<OpFn> = Box::new(|ctx, ins| {
            let a = ctx.scalar::<V>(ins[0])?.clone();
            let b = ctx.scalar::<V>(ins[1])?.clone();
            Ok(Box::new(a + b) as Value)
        });
        let path = self.q.unique(self.path().suffixed(".integrate"), at);
        let add = self.q.derived_vertex(
            "add",
            vec![self.id, d.id],
            Op::Add(f),
            type_name::<V>(),
            None,
            ScopeId(0),
            Vec::new(),
            Some(path),
        );
        self.q.b.borrow_mut().vertices[d.id.ix()].inputs = vec![add];
        (Stream::from_parts(self.q, add, ScopeId(0)), d)
    }

    fn scalar_delay_vertex(&self, at: At, base: Path) -> Self {
        let path = base.child("delay");
        // Two delays of one stream hold the same value: they share the state.
        let state = self.q.declare(
            path.clone(),
            Arc::new(ZSetCodec::<V>::new(false, Vec::new())),
            at,
            true,
        );
        let vpath = self.q.unique(base.suffixed(".delay"), at);
        let id = self.q.push_vertex(Vertex {
            path: vpath,
            label: "delay",
            inputs: Vec::new(),
            op: Op::ScalarDelay(ScalarDelayOp {
                make_set: Box::new(|ctx, ins| {
                    Ok(Box::new(ZSet::singleton(ctx.scalar::<V>(ins[0])?.clone(), 1)) as Value)
                }),
                make_scalar: Box::new(move |ctx, ins| {
                    let z = ctx.zset::<V>(ins[0])?;
                    Ok(Box::new(crate::exec::scalar_of(&z, V::default(), &path)?) as Value)
                }),
                state,
                set_fns: ZSetFns::of::<V>(),
                set_type: type_name::<ZSet<V>>(),
            }),
            scope: ScopeId(0),
            ty: type_name::<V>(),
            fns: None,
            at,
            states: Vec::new(),
        });
        Stream::from_parts(self.q, id, ScopeId(0))
    }
}

/// Building the body of a recursion: import outer streams into it.
#[derive(Debug, Clone, Copy)]
pub struct RecScope<'q> {
    q: &'q Query,
    scope: ScopeId,
    vertex: VertexId,
}

impl<'q> RecScope<'q> {
    /// `outer` inside the recursion: at every inner step its value is the
    /// outer stream's (so its change enters at inner step 0).
    #[track_caller]
    pub fn import<T: Data>(&self, outer: Stream<'q, ZSet<T>, Root>) -> Stream<'q, ZSet<T>, Rec> {
        let at = At(Location::caller());
        let rec_path = self.q.path_of(self.vertex);
        let path = self.q.unique(rec_path.child(outer.path().last()), at);
        let id = self.q.push_vertex(Vertex {
            path,
            label: "import",
            inputs: vec![outer.id],
            op: Op::Import,
            scope: self.scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<T>()),
            at,
            states: Vec::new(),
        });
        let mut b = self.q.b.borrow_mut();
        if let Op::Recursive(r) = &mut b.vertices[self.vertex.ix()].op {
            r.imports.push(id);
        }
        b.vertices[self.vertex.ix()].inputs.push(outer.id);
        Stream::from_parts(self.q, id, self.scope)
    }
}

impl<'q, T: Data> Stream<'q, ZSet<T>, Root> {
    /// The fixed point of `body`: with `Y₀ = ∅` and `Yₖ₊₁ = body(this, Yₖ)`,
    /// the stream of changes of `lim Yₖ` (DBSP §6, made incremental per §9
    /// with nested time). `body` gets this stream imported into the
    /// recursion and the previous step's result; it may import more streams.
    /// At most `max_steps` inner steps per iteration.
    ///
    /// # Errors
    /// Whatever `body` returns.
    #[track_caller]
    pub fn raw_recursive(
        self,
        max_steps: u32,
        body: impl FnOnce(
            RecScope<'q>,
            Stream<'q, ZSet<T>, Rec>,
            Stream<'q, ZSet<T>, Rec>,
        ) -> Result<Stream<'q, ZSet<T>, Rec>, GraphError>,
    ) -> Result<Self, GraphError> {
        let at = At(Location::caller());
        let q = self.q;
        let rpath = q.unique(self.path().suffixed(".recursive"), at);
        let scope = q.new_scope(self.scope, rpath.to_string(), Vec::new(), true);
        let rvertex = q.push_vertex(Vertex {
            path: rpath.clone(),
            label: "recursive",
            inputs: Vec::new(),
            op: Op::Removed,
            scope: self.scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<T>()),
            at,
            states: Vec::new(),
        });
        let feedback = q.push_vertex(Vertex {
            path: q.unique(rpath.child("prev"), at),
            label: "feedback",
            inputs: Vec::new(),
            op: Op::Feedback,
            scope,
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<T>()),
            at,
            states: Vec::new(),
        });
        q.b.borrow_mut().vertices[rvertex.ix()].op = Op::Recursive(RecursiveOp {
            scope,
            imports: Vec::new(),
            feedback,
            result: feedback,
            max_steps,
            order: Vec::new(),
        });
        let rec = RecScope {
            q,
            scope,
            vertex: rvertex,
        };
        let imported = rec.import(self);
        let prev = Stream::from_parts(q, feedback, scope);
        let result = body(rec, imported, prev);
        let result = result?;
        if result.scope != scope {
            return Err(GraphError::ForeignHandle { at });
        }
        let mut b = q.b.borrow_mut();
        b.vertices[feedback.ix()].inputs = vec![result.id];
        if let Op::Recursive(r) = &mut b.vertices[rvertex.ix()].op {
            r.result = result.id;
        }
        drop(b);
        Ok(Stream::from_parts(q, rvertex, self.scope))
    }
}

impl<'q, T: Data, S: Scope> Stream<'q, ZSet<T>, S> {
    /// Moves this stream into a new grouped scope keyed by `key` (a
    /// function of the row), returning the grouped stream. Used by
    /// `operators`' `group`; `key_parts` names the key's columns.
    #[track_caller]
    pub fn raw_group<K: IndexKey>(
        self,
        label: String,
        key_parts: Vec<String>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, crate::Grouped<K, S>> {
        let scope = self.q.new_scope(self.scope, label, key_parts, S::NESTED);
        let def = VertexDef {
            label: "group",
            inputs: vec![self.id],
            f: Box::new(move |ctx, ins| {
                let z = ctx.zset::<S::Row<T>>(ins[0])?;
                let out: ZSet<<crate::Grouped<K, S> as Scope>::Row<T>> =
                    z.map(|row| S::map_row(row, |v| zset::Pair::new(v.clone(), key(v))));
                Ok(Box::new(out) as Value)
            }),
            states: Vec::new(),
            path: None,
        };
        self.vertex(
            def,
            type_name::<ZSet<T>>(),
            Some(ZSetFns::of::<<crate::Grouped<K, S> as Scope>::Row<T>>()),
            scope,
        )
    }
}

impl<'q, T: Data, K: IndexKey, S: Scope> Stream<'q, ZSet<T>, crate::Grouped<K, S>> {
    /// Leaves the grouped scope: the rows, each paired with its key. At run
    /// time this is the identity (grouped rows already are such pairs).
    #[track_caller]
    pub fn raw_flatten(self) -> Stream<'q, ZSet<zset::Pair<T, K>>, S> {
        let at = At(Location::caller());
        let parent = self.q.b.borrow().scopes[self.scope.0 as usize]
            .parent
            .unwrap_or(ScopeId(0));
        let path = self.q.unique(self.path().suffixed(".flatten"), at);
        let id = self.q.push_vertex(Vertex {
            path,
            label: "flatten",
            inputs: vec![self.id],
            op: Op::Identity,
            scope: parent,
            ty: type_name::<ZSet<zset::Pair<T, K>>>(),
            fns: Some(ZSetFns::of::<S::Row<zset::Pair<T, K>>>()),
            at,
            states: Vec::new(),
        });
        Stream::from_parts(self.q, id, parent)
    }
}
