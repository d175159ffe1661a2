//! The typed query builder.
//!
//! [`Graph::build`](crate::Graph::build) hands the user's closure a
//! [`Query`]; streams are [`Stream`] handles (`Copy`: a vertex id, the
//! query it belongs to, and phantom types), and every operator adds a vertex.
//! Nothing fails eagerly: problems (duplicate paths, bad indexes, misuse)
//! are recorded and reported by [`Graph::build`](crate::Graph::build) as a
//! [`GraphError`] naming the user's line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zset::{Data, Index, IndexKey};

use crate::codec::DynIndex;
use crate::error::At;
use crate::vertex::{InputCodec, ScopeInfo, Vertex};
use crate::{Codec, GraphError, Path, Root, ScopeId, StateId, StateSpec, VertexId};

mod declare;
mod ops;
mod recursive;
mod stream;

pub use ops::Scalar;
pub use recursive::RecScope;
pub use stream::VertexDef;

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
}
