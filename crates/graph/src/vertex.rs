//! Vertices: the erased core that the typed builder fills in.

use std::any::Any;
use std::borrow::Cow;

use zset::{Data, ZSet};

use crate::error::At;
use crate::{Ctx, GraphError, Path, StateId};

/// Identifies a vertex of a graph under construction or finalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexId(pub u32);

impl VertexId {
    pub(crate) fn ix(self) -> usize {
        self.0 as usize
    }
}

/// Identifies a scope (for rendering: DOT clusters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeId(pub u32);

/// A value flowing along an edge during one iteration.
pub type Value = Box<dyn Any + Send + Sync>;

/// The output of a vertex during one iteration.
pub enum Slot {
    /// A value computed this iteration.
    Value(Value),
    /// A lazy view of a stored state: its committed rows, plus (for an
    /// integral that includes this iteration's change) the delta held in
    /// another vertex's slot. Operators that understand states (joins,
    /// distinct, first_n) read only the rows they need; any other operator
    /// gets the materialized value.
    State {
        /// The state.
        state: StateId,
        /// The vertex whose value is added on top of the stored rows.
        delta: Option<VertexId>,
    },
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Value(_) => f.write_str("Value"),
            Slot::State { state, delta } => write!(f, "State({state:?}, {delta:?})"),
        }
    }
}

/// The signature of an operator's function: the context and its inputs'
/// slots, in order.
pub type OpFn = dyn Fn(&mut Ctx<'_>, &[&Slot]) -> Result<Value, GraphError> + Send + Sync;

/// Typed helpers for a vertex whose values are `ZSet<R>`, as plain function
/// pointers so erased code can materialize, compare and add them.
#[derive(Clone, Copy)]
pub struct ZSetFns {
    pub(crate) materialize: fn(&mut Ctx<'_>, &Slot) -> Result<Value, GraphError>,
    pub(crate) is_empty: fn(&dyn Any) -> bool,
    /// How many values (for profiles).
    pub(crate) len: fn(&dyn Any) -> usize,
    pub(crate) empty: fn() -> Value,
    pub(crate) add_into: fn(&mut Value, &dyn Any),
    pub(crate) clone: fn(&dyn Any) -> Value,
    pub(crate) diff: fn(&dyn Any, &mut Ctx<'_>, StateId) -> Result<Value, GraphError>,
    pub(crate) type_name: &'static str,
}

impl std::fmt::Debug for ZSetFns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZSetFns({})", self.type_name)
    }
}

impl ZSetFns {
    /// The helpers for `ZSet<R>`.
    pub fn of<R: Data>() -> Self {
        ZSetFns {
            materialize: |ctx, slot| Ok(Box::new(ctx.zset::<R>(slot)?.into_owned())),
            is_empty: |v| v.downcast_ref::<ZSet<R>>().is_none_or(ZSet::is_empty),
            len: |v| v.downcast_ref::<ZSet<R>>().map_or(0, ZSet::len),
            empty: || Box::new(ZSet::<R>::new()),
            add_into: |acc, v| {
                if let (Some(acc), Some(v)) =
                    (acc.downcast_mut::<ZSet<R>>(), v.downcast_ref::<ZSet<R>>())
                {
                    *acc += v;
                }
            },
            clone: |v| Box::new(v.downcast_ref::<ZSet<R>>().cloned().unwrap_or_default()),
            diff: |new, ctx, state| {
                let old = ctx.read_all::<R>(state)?;
                let new: Cow<'_, ZSet<R>> = match new.downcast_ref::<ZSet<R>>() {
                    Some(z) => Cow::Borrowed(z),
                    None => Cow::Owned(ZSet::new()),
                };
                Ok(Box::new(&*new - &old))
            },
            type_name: std::any::type_name::<ZSet<R>>(),
        }
    }
}

/// How an input's changes are added, encoded and decoded, typed for its
/// row type (for recording failed batches and retrying them).
#[derive(Clone, Copy)]
pub(crate) struct InputCodec {
    pub(crate) add: fn(&mut Value, Value),
    pub(crate) clone: fn(&dyn Any) -> Value,
    pub(crate) len: fn(&dyn Any) -> usize,
    pub(crate) encode: fn(&dyn Any) -> Result<Vec<u8>, String>,
    pub(crate) decode: fn(&[u8]) -> Result<Value, String>,
    pub(crate) type_name: &'static str,
}

impl InputCodec {
    pub(crate) fn of<T: Data>() -> Self {
        InputCodec {
            add: |acc, more| {
                if let (Some(acc), Ok(more)) =
                    (acc.downcast_mut::<ZSet<T>>(), more.downcast::<ZSet<T>>())
                {
                    *acc += *more;
                }
            },
            clone: |v| Box::new(v.downcast_ref::<ZSet<T>>().cloned().unwrap_or_default()),
            len: |v| v.downcast_ref::<ZSet<T>>().map_or(0, ZSet::len),
            encode: |v| match v.downcast_ref::<ZSet<T>>() {
                Some(z) => postcard::to_allocvec(z).map_err(|e| e.to_string()),
                None => Err(format!("not a {}", std::any::type_name::<ZSet<T>>())),
            },
            decode: |bytes| {
                postcard::from_bytes::<ZSet<T>>(bytes)
                    .map(|z| Box::new(z) as Value)
                    .map_err(|e| e.to_string())
            },
            type_name: std::any::type_name::<ZSet<T>>(),
        }
    }
}

/// A scalar delay, kept until finalization replaces it by
/// `make_set → delay → make_scalar` (the state is a one-row Z-set).
pub(crate) struct ScalarDelayOp {
    pub(crate) make_set: Box<OpFn>,
    pub(crate) make_scalar: Box<OpFn>,
    pub(crate) state: StateId,
    pub(crate) set_fns: ZSetFns,
    pub(crate) set_type: &'static str,
}

/// The body of a recursion, run to a fixed point inside one iteration.
pub(crate) struct RecursiveOp {
    pub(crate) scope: ScopeId,
    /// Import vertices (in the body), each reading one outer vertex.
    pub(crate) imports: Vec<VertexId>,
    /// The feedback vertex: the previous inner step's result.
    pub(crate) feedback: VertexId,
    /// The body's result.
    pub(crate) result: VertexId,
    pub(crate) max_steps: u32,
    /// Filled at finalization: the body's vertices in execution order.
    pub(crate) order: Vec<VertexId>,
}

/// What a vertex does.
pub(crate) enum Op {
    /// Input number `n`: this iteration's change.
    Input(usize),
    /// An operator.
    Func(Box<OpFn>),
    /// `a + b`; recognised by the integrate fusion.
    Add(Box<OpFn>),
    /// z⁻¹ of a Z-set stream (its state holds the previous value).
    Delay(StateId),
    /// z⁻¹ of a scalar stream (replaced at finalization).
    ScalarDelay(ScalarDelayOp),
    /// A fused integral (after finalization): `delayed` outputs z⁻¹I.
    Integrate { state: StateId, delayed: bool },
    /// Passes its input through; removed at finalization.
    Identity,
    /// Runs for its side effect on its input's state (a cache).
    Sink,
    /// A recursion.
    Recursive(RecursiveOp),
    /// In a recursion: an outer stream, at inner step 0.
    Import,
    /// In a recursion: the previous inner step's result.
    Feedback,
    /// Removed by a transform.
    Removed,
}

impl Op {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Func(_) => "func",
            Op::Add(_) => "add",
            Op::Delay(_) => "delay",
            Op::ScalarDelay(_) => "scalar_delay",
            Op::Integrate { delayed: false, .. } => "integrate",
            Op::Integrate { delayed: true, .. } => "integrate_delay",
            Op::Identity => "identity",
            Op::Sink => "sink",
            Op::Recursive(_) => "recursive",
            Op::Import => "import",
            Op::Feedback => "feedback",
            Op::Removed => "removed",
        }
    }
}

/// One vertex.
pub(crate) struct Vertex {
    pub(crate) path: Path,
    /// The operator's name, for rendering (`map`, `join`, ...).
    pub(crate) label: &'static str,
    pub(crate) inputs: Vec<VertexId>,
    pub(crate) op: Op,
    pub(crate) scope: ScopeId,
    /// The Rust type of the values this vertex outputs.
    pub(crate) ty: &'static str,
    /// Helpers when the output is a Z-set.
    pub(crate) fns: Option<ZSetFns>,
    pub(crate) at: At,
    /// States the operator reads or writes itself (besides lazy inputs).
    pub(crate) states: Vec<StateId>,
}

/// What a scope is, for rendering and for naming combined index columns.
#[derive(Clone, Debug)]
pub(crate) struct ScopeInfo {
    pub(crate) parent: Option<ScopeId>,
    pub(crate) label: String,
    /// The column names of this scope's group key (grouped scopes).
    pub(crate) key_parts: Vec<String>,
    /// Whether this is the body of a recursion.
    pub(crate) recursive: bool,
}
