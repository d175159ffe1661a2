//! Recursion scopes and groups.

use std::any::type_name;
use std::panic::Location;

use zset::{Data, IndexKey, ZSet};

use super::{Query, Stream, VertexDef};
use crate::error::At;
use crate::vertex::{Op, RecursiveOp, Vertex, ZSetFns};
use crate::{GraphError, Rec, Root, Scope, ScopeId, Value, VertexId};

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
