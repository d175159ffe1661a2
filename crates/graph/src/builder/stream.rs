//! A stream's identity: its path, version and vertex definition.

use std::marker::PhantomData;
use std::panic::Location;

use super::{Query, Stream, check_name};
use crate::error::At;
use crate::vertex::{Op, OpFn, Vertex, ZSetFns};
use crate::{GraphError, Path, ScopeId, StateId, VertexId};

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
    /// States the function reads or writes through [`Ctx`](crate::Ctx).
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
    pub(super) fn derived_vertex(
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
