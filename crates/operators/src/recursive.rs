//! Recursion to a fixed point (§§6–9) and the transitive closure.

use std::hash::Hash;

use graph::{GraphError, Rec, RecScope, Root, Stream};
use zset::{Data, Index, IndexKey, Pair, ZSet};

use crate::{Distinct, Joins, Linear};

/// How many inner steps a recursion may take per iteration before failing
/// with [`GraphError::RecursionLimit`].
pub const DEFAULT_MAX_STEPS: u32 = 10_000;

/// `recursive` and `transitive_closure`.
pub trait Recursion<'q, T: Data>: Sized {
    /// The least fixed point of `body`: with `Y₀ = ∅` and
    /// `Yₖ₊₁ = body(this, Yₖ)`, the changes of `lim Yₖ`.
    ///
    /// `body` receives this stream (imported into the recursion) and the
    /// previous step's result, and may import more outer streams with
    /// [`RecScope::import`]. Inside, `map`, `filter`, `map_many`, `neg`,
    /// `add`, `join`, `outer_join` and `distinct` are available. It is
    /// incremental in both times (DBSP §9 with nested time): each iteration
    /// does work proportional to what changed, deletions included; the
    /// recursion's joins and distincts store their state per inner step.
    /// Use `distinct` so that the fixed point exists.
    ///
    /// # Errors
    /// Whatever `body` returns.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// // Numbers reachable from the input by repeatedly halving.
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     let halves = n.recursive(|_rec, start, prev| Ok(start.add(prev.map(|x| x / 2)).distinct()))?;
    ///     Ok((input, q.output("halves", halves)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [12])?;
    /// assert_eq!(change.get(&out)?, &zset! { 12 => 1, 6 => 1, 3 => 1, 1 => 1, 0 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn recursive(
        self,
        body: impl FnOnce(
            RecScope<'q>,
            Stream<'q, ZSet<T>, Rec>,
            Stream<'q, ZSet<T>, Rec>,
        ) -> Result<Stream<'q, ZSet<T>, Rec>, GraphError>,
    ) -> Result<Stream<'q, ZSet<T>, Root>, GraphError>;

    /// [`recursive`](Self::recursive) with a limit on inner steps.
    ///
    /// # Errors
    /// Whatever `body` returns.
    fn recursive_with_limit(
        self,
        max_steps: u32,
        body: impl FnOnce(
            RecScope<'q>,
            Stream<'q, ZSet<T>, Rec>,
            Stream<'q, ZSet<T>, Rec>,
        ) -> Result<Stream<'q, ZSet<T>, Rec>, GraphError>,
    ) -> Result<Stream<'q, ZSet<T>, Root>, GraphError>;
}

impl<'q, T: Data> Recursion<'q, T> for Stream<'q, ZSet<T>, Root> {
    #[track_caller]
    fn recursive(
        self,
        body: impl FnOnce(
            RecScope<'q>,
            Stream<'q, ZSet<T>, Rec>,
            Stream<'q, ZSet<T>, Rec>,
        ) -> Result<Stream<'q, ZSet<T>, Rec>, GraphError>,
    ) -> Result<Stream<'q, ZSet<T>, Root>, GraphError> {
        self.raw_recursive(DEFAULT_MAX_STEPS, body)
    }

    #[track_caller]
    fn recursive_with_limit(
        self,
        max_steps: u32,
        body: impl FnOnce(
            RecScope<'q>,
            Stream<'q, ZSet<T>, Rec>,
            Stream<'q, ZSet<T>, Rec>,
        ) -> Result<Stream<'q, ZSet<T>, Rec>, GraphError>,
    ) -> Result<Stream<'q, ZSet<T>, Root>, GraphError> {
        self.raw_recursive(max_steps, body)
    }
}

/// `transitive_closure`, on streams of edges.
pub trait TransitiveClosure<'q, N: IndexKey + Hash>: Sized {
    /// The transitive closure of a graph given as edges `Pair(from, to)`:
    /// every `Pair(a, b)` with a path of one or more edges from `a` to `b`,
    /// as the fixed point of `Y = distinct(E + π(E ⋈ Y))` (§9.1).
    ///
    /// Correct under edge deletions, cycles included: the recursion keeps
    /// its state per inner step, so a path that loses its support is
    /// retracted rather than kept alive by a cycle.
    ///
    /// # Errors
    /// None in practice (the body is fixed).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (edges, out)) = Graph::build(|q| {
    ///     let (input, e) = q.input::<Pair<i64, i64>>("edges")?;
    ///     Ok((input, q.output("paths", e.transitive_closure()?)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &edges, [Pair::new(1, 2), Pair::new(2, 3)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(1, 2) => 1, Pair::new(2, 3) => 1, Pair::new(1, 3) => 1 });
    /// let change = graph.remove(&mut store, &edges, [Pair::new(2, 3)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(2, 3) => -1, Pair::new(1, 3) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn transitive_closure(self) -> Result<Stream<'q, ZSet<Pair<N, N>>, Root>, GraphError>;
}

impl<'q, N: IndexKey + Hash> TransitiveClosure<'q, N> for Stream<'q, ZSet<Pair<N, N>>, Root> {
    #[track_caller]
    fn transitive_closure(self) -> Result<Stream<'q, ZSet<Pair<N, N>>, Root>, GraphError> {
        let to = Index::new("to", |e: &Pair<N, N>| e.right.clone());
        let from = Index::new("from", |e: &Pair<N, N>| e.left.clone());
        self.recursive(move |_rec, edges, paths| {
            let longer = edges
                .join(paths, &to, &from)
                .map(|p| Pair::new(p.left.left.clone(), p.right.right.clone()));
            Ok(edges.add(longer).distinct())
        })
    }
}
