//! The raw Z-set and scalar primitives every operator is made of.

use std::any::type_name;
use std::panic::Location;
use std::sync::Arc;

use zset::{Data, ZSet};

use super::{AsDynIndex, Stream, VertexDef};
use crate::codec::{DynIndex, ZSetCodec};
use crate::error::At;
use crate::vertex::{Op, OpFn, ScalarDelayOp, Vertex, ZSetFns};
use crate::{Codec, Ctx, GraphError, Path, Root, Scope, ScopeId, Slot, StateId, Value, VertexId};

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

    pub(super) fn integral_with_state(self, state: StateId, at: At) -> (Self, Self) {
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
