//! Delays, integrals and derivatives of Z-set streams (DBSP §3).

use std::sync::Arc;

use graph::{AsDynIndex, DynIndex, FlatScope, Scope, Stream};
use zset::{Data, Index, IndexKey, ZSet};

/// An index usable on a stream in scope `S`: an [`Index`] over the user's
/// rows, lifted to the scope's run-time rows (in a grouped scope its key is
/// prefixed by the group key).
pub trait ScopedIndex<T: Data, S: Scope> {
    /// The index over `S::Row<T>`, with the scope's group key columns named
    /// `group_parts` first.
    fn lift(&self, group_parts: &[String]) -> Arc<dyn DynIndex<S::Row<T>>>;
}

impl<T: Data, K: IndexKey, S: Scope> ScopedIndex<T, S> for Index<T, K> {
    fn lift(&self, group_parts: &[String]) -> Arc<dyn DynIndex<S::Row<T>>> {
        Arc::new(S::lift_index(self, group_parts))
    }
}

fn lifted<T: Data, S: Scope>(
    stream: &Stream<'_, ZSet<T>, S>,
    indexes: &[&dyn ScopedIndex<T, S>],
) -> Vec<Arc<dyn DynIndex<S::Row<T>>>> {
    let parts = crate::group_parts(stream);
    indexes.iter().map(|ix| ix.lift(&parts)).collect()
}

fn as_dyn<R>(indexes: &[Arc<dyn DynIndex<R>>]) -> Vec<&dyn AsDynIndex<R>> {
    indexes.iter().map(|i| i as &dyn AsDynIndex<R>).collect()
}

/// `delay`, `integrate`, `integrate_delay`, `differentiate`, with optional
/// indexes on the stored state.
///
/// Every integral of a stream is one stored state (named after the stream)
/// whose store operation is "apply this iteration's change"; integrals of
/// the same stream share it, with the union of their indexes.
pub trait Integrals<'q, T: Data, S: FlatScope>: Sized {
    /// `z⁻¹(a)`: the previous iteration's value (empty at first).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<String>("a")?;
    ///     Ok((input, q.output("delayed", a.delay())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert!(graph.insert(&mut store, &input, ["first".to_string()])?.get(&out)?.is_empty());
    /// assert_eq!(graph.insert(&mut store, &input, ["second".to_string()])?.get(&out)?, &zset! { "first".to_string() => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    #[track_caller]
    fn delay(self) -> Stream<'q, ZSet<T>, S> {
        self.delay_indexed(&[])
    }

    /// [`delay`](Self::delay) whose state has `indexes`, so that a reader can
    /// read it through them lazily.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_len = Index::new("len", |s: &String| s.len() as i64);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<String>("a")?;
    ///     Ok((input, q.output("delayed", a.delay_indexed(&[&by_len]))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &input, ["x".to_string()])?;
    /// assert_eq!(graph.insert(&mut store, &input, ["y".to_string()])?.get(&out)?, &zset! { "x".to_string() => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn delay_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S>;

    /// `I(a) = a + z⁻¹(I(a))` (Def. 3.27): the running sum of the changes.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<char>("a")?;
    ///     Ok((input, q.output("integral", a.integrate())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let mut step = |z: ZSet<char>| graph.iteration(&mut store, Changes::new().zset(&input, z));
    /// assert_eq!(step(zset! { 'a' => 1 })?.get(&out)?, &zset! { 'a' => 1 });
    /// assert_eq!(step(zset! { 'b' => -1 })?.get(&out)?, &zset! { 'a' => 1, 'b' => -1 });
    /// assert_eq!(step(zset! { 'a' => 4 })?.get(&out)?, &zset! { 'a' => 5, 'b' => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    #[track_caller]
    fn integrate(self) -> Stream<'q, ZSet<T>, S> {
        self.integrate_indexed(&[])
    }

    /// [`integrate`](Self::integrate) whose state has `indexes`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_first = Index::new("first", |s: &String| s.chars().next().map(String::from).unwrap_or_default());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<String>("a")?;
    ///     Ok((input, q.output("integral", a.integrate_indexed(&[&by_first]))?))
    /// })?;
    /// assert_eq!(graph.states()[0].indexes()[0].name.as_ref(), "first");
    /// # let mut store = store::Memory::new(&graph);
    /// # graph.insert(&mut store, &input, ["ab".to_string()])?;
    /// # assert_eq!(graph.insert(&mut store, &input, ["cd".to_string()])?.get(&out)?.len(), 2);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn integrate_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S>;

    /// `z⁻¹(I(a))`: the integral up to the previous iteration.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("before", a.integrate_delay())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert!(graph.insert(&mut store, &input, [1])?.get(&out)?.is_empty());
    /// assert_eq!(graph.insert(&mut store, &input, [2])?.get(&out)?, &zset! { 1 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    #[track_caller]
    fn integrate_delay(self) -> Stream<'q, ZSet<T>, S> {
        self.integrate_delay_indexed(&[])
    }

    /// [`integrate_delay`](Self::integrate_delay) whose state has `indexes`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let ix = Index::new("value", |x: &i64| *x);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("before", a.integrate_delay_indexed(&[&ix]))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &input, [1])?;
    /// assert_eq!(graph.insert(&mut store, &input, [2])?.get(&out)?, &zset! { 1 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn integrate_delay_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S>;

    /// `D(a) = a − z⁻¹(a)` (Def. 3.25): the change since the previous iteration.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<char>("a")?;
    ///     Ok((input, q.output("derivative", a.differentiate())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let mut step = |z: ZSet<char>| graph.iteration(&mut store, Changes::new().zset(&input, z));
    /// assert_eq!(step(zset! { 'a' => 1 })?.get(&out)?, &zset! { 'a' => 1 });
    /// assert_eq!(step(zset! { 'a' => 1, 'b' => -1 })?.get(&out)?, &zset! { 'b' => -1 });
    /// assert_eq!(step(zset! { 'a' => 5, 'b' => -1 })?.get(&out)?, &zset! { 'a' => 4 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn differentiate(self) -> Stream<'q, ZSet<T>, S>;
}

impl<'q, T: Data, S: FlatScope> Integrals<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn delay_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S> {
        let ix = lifted(&self, indexes);
        self.raw_delay(&as_dyn(&ix))
    }

    #[track_caller]
    fn integrate_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S> {
        let ix = lifted(&self, indexes);
        self.raw_integrate(&as_dyn(&ix)).0
    }

    #[track_caller]
    fn integrate_delay_indexed(self, indexes: &[&dyn ScopedIndex<T, S>]) -> Stream<'q, ZSet<T>, S> {
        let ix = lifted(&self, indexes);
        self.raw_integrate(&as_dyn(&ix)).1
    }

    #[track_caller]
    fn differentiate(self) -> Stream<'q, ZSet<T>, S> {
        let before = self.raw_delay(&[]);
        self.raw_add(before.apply("neg", |z| -z))
    }
}
