//! Scalar streams and the bridge between scalars and Z-sets.

use graph::{Root, Scalar, Stream, scalar_of};
use zset::{Data, ZSet};

/// `make_scalar`, on streams of Z-sets.
pub trait Scalars<'q, T: Data>: Sized {
    /// The only value of each iteration's Z-set (which must hold at most one
    /// value, with weight 1), or `zero` when it is empty.
    ///
    /// An iteration whose Z-set is not such a singleton fails with
    /// [`GraphError::NotScalar`](graph::GraphError::NotScalar) naming the vertex, and is rolled back.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("value", a.make_scalar(0))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [5])?.get(&out)?, &5);
    /// let err = graph.insert(&mut store, &input, [1, 2]).unwrap_err();
    /// assert!(matches!(err, GraphError::NotScalar { .. }));
    /// # Ok::<(), GraphError>(())
    /// ```
    fn make_scalar(self, zero: T) -> Stream<'q, T, Root>;
}

impl<'q, T: Data> Scalars<'q, T> for Stream<'q, ZSet<T>, Root> {
    #[track_caller]
    fn make_scalar(self, zero: T) -> Stream<'q, T, Root> {
        let path = self.path().suffixed(".make_scalar");
        let def = graph::VertexDef {
            label: "make_scalar",
            inputs: vec![self.id()],
            f: Box::new(move |ctx, ins| {
                let z = ctx.zset::<T>(ins[0])?;
                Ok(Box::new(scalar_of(&z, zero.clone(), &path)?) as graph::Value)
            }),
            states: Vec::new(),
            path: None,
        };
        self.vertex(
            def,
            std::any::type_name::<T>(),
            None,
            self.query().root_scope(),
        )
    }
}

/// Operators on scalar streams: `make_set`, `add`, `neg`, `delay`,
/// `integrate`, `integrate_delay`, `differentiate`.
///
/// A scalar's `z⁻¹` is stored as a one-row Z-set (finalization replaces the
/// scalar delay by `make_set → delay → make_scalar`).
pub trait ScalarOps<'q, V: Scalar>: Sized {
    /// A Z-set holding this value with weight 1.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("set", a.make_scalar(0).make_set())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &zset! { 4 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn make_set(self) -> Stream<'q, ZSet<V>, Root>;

    /// `a + b`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     let x = a.make_scalar(0);
    ///     Ok((input, q.output_scalar("twice", ScalarOps::add(x, x))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &8);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn add(self, other: Self) -> Self;

    /// `-a`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("neg", ScalarOps::neg(a.make_scalar(0)))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &-4);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn neg(self) -> Self;

    /// `z⁻¹(a)`: the previous value (`V::default()` at first).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("previous", ScalarOps::delay(a.make_scalar(0)))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &0);
    /// assert_eq!(graph.iteration(&mut store, Changes::new())?.get(&out)?, &4);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn delay(self) -> Self;

    /// `I(a) = a + z⁻¹(I(a))`: the running sum.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("sum", ScalarOps::integrate(a.make_scalar(0)))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &4);
    /// assert_eq!(graph.insert(&mut store, &input, [3])?.get(&out)?, &7);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn integrate(self) -> Self;

    /// `z⁻¹(I(a))`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("sum_before", ScalarOps::integrate_delay(a.make_scalar(0)))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &0);
    /// assert_eq!(graph.insert(&mut store, &input, [3])?.get(&out)?, &4);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn integrate_delay(self) -> Self;

    /// `a − z⁻¹(a)`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output_scalar("change", ScalarOps::differentiate(a.make_scalar(0)))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4])?.get(&out)?, &4);
    /// assert_eq!(graph.insert(&mut store, &input, [3])?.get(&out)?, &-1);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn differentiate(self) -> Self;
}

impl<'q, V: Scalar> ScalarOps<'q, V> for Stream<'q, V, Root> {
    #[track_caller]
    fn make_set(self) -> Stream<'q, ZSet<V>, Root> {
        let def = graph::VertexDef {
            label: "make_set",
            inputs: vec![self.id()],
            f: Box::new(|ctx, ins| {
                Ok(Box::new(ZSet::singleton(ctx.scalar::<V>(ins[0])?.clone(), 1)) as graph::Value)
            }),
            states: Vec::new(),
            path: None,
        };
        self.vertex(
            def,
            std::any::type_name::<ZSet<V>>(),
            Some(graph::ZSetFns::of::<V>()),
            self.query().root_scope(),
        )
    }

    #[track_caller]
    fn add(self, other: Self) -> Self {
        self.raw_add_scalar(other)
    }

    #[track_caller]
    fn neg(self) -> Self {
        self.apply_scalar("neg", |v| -v.clone())
    }

    #[track_caller]
    fn delay(self) -> Self {
        self.raw_delay_scalar()
    }

    #[track_caller]
    fn integrate(self) -> Self {
        self.raw_integrate_scalar().0
    }

    #[track_caller]
    fn integrate_delay(self) -> Self {
        self.raw_integrate_scalar().1
    }

    #[track_caller]
    fn differentiate(self) -> Self {
        let before = self.raw_delay_scalar();
        self.raw_add_scalar(ScalarOps::neg(before))
    }
}
