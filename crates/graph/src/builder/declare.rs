//! Declaring inputs, outputs, caches and states.

use std::any::type_name;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

use zset::{Data, Index, IndexKey, ZSet};

use super::{AsDynIndex, Cache, Input, Output, Query, StateDecl, Stream, check_name};
use crate::codec::{DynIndex, KeyedCodec, ZSetCodec};
use crate::error::At;
use crate::vertex::{InputCodec, Op, OpFn, ScopeInfo, Vertex, ZSetFns};
use crate::{Codec, GraphError, Path, ScopeId, StateId, StateSpec, VertexId};

impl Query {
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

    pub(super) fn check_index(&self, spec: &zset::IndexSpec, at: At) -> Result<(), GraphError> {
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
