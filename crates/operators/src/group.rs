//! Groups: run a sub-query per key (`group`, `per_group`, `flatten`).

use graph::{Grouped, Scope, Stream};
use zset::{Data, Index, IndexKey, Pair, ZSet};

/// `group`.
pub trait Grouping<'q, T: Data, S: Scope>: Sized {
    /// This stream split by `by`: every operator applied to the result runs
    /// per key (a join joins within a group, an aggregate aggregates each
    /// group, `first_n` takes the first rows of each group). Leave the
    /// grouped scope with [`flatten`](GroupedOps::flatten).
    ///
    /// Lifting a sub-query this way costs nothing at run time: grouped rows
    /// are carried as `Pair(row, key)`, so linear operators are unchanged
    /// and stateful ones key their state by group.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_team = Index::new("team", |p: &(String, i64)| p.0.clone());
    /// let by_points = Index::new("points", |p: &(String, i64)| Desc(p.1));
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, players) = q.input::<(String, i64)>("players")?;
    ///     let best = players.group(&by_team).per_group(|team| team.first_n(&by_points, 1)).flatten();
    ///     Ok((input, q.output("best", best)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let p = |t: &str, n| (t.to_string(), n);
    /// let change = graph.insert(&mut store, &input, [p("red", 3), p("red", 7), p("blue", 1)])?;
    /// assert_eq!(change.get(&out)?, &zset! {
    ///     Pair::new(p("red", 7), "red".to_string()) => 1,
    ///     Pair::new(p("blue", 1), "blue".to_string()) => 1,
    /// });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group<K: IndexKey>(self, by: &Index<T, K>) -> Stream<'q, ZSet<T>, Grouped<K, S>>;
}

impl<'q, T: Data, S: Scope> Grouping<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn group<K: IndexKey>(self, by: &Index<T, K>) -> Stream<'q, ZSet<T>, Grouped<K, S>> {
        let by_key = by.clone();
        let parts = by.spec().parts.iter().map(|p| p.to_string()).collect();
        self.raw_group(
            format!("{} by {}", self.path(), by.name()),
            parts,
            move |v| by_key.key(v),
        )
    }
}

/// `per_group` and `flatten`, on grouped streams.
pub trait GroupedOps<'q, T: Data, K: IndexKey, S: Scope>: Sized {
    /// Applies `f`, a sub-query written for one group, to every group.
    /// (Any operator applied to a grouped stream already runs per group;
    /// this names the sub-query, as the original's `per_group` does.)
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_parity = Index::new("parity", |x: &i64| x % 2);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     let sums = n.group(&by_parity).per_group(|g| g.reduce(0i64, |x| *x)).flatten();
    ///     Ok((input, q.output("sums", sums)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [1, 2, 3])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(4, 1) => 1, Pair::new(2, 0) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn per_group<U: Data>(
        self,
        f: impl FnOnce(Stream<'q, ZSet<T>, Grouped<K, S>>) -> Stream<'q, ZSet<U>, Grouped<K, S>>,
    ) -> Stream<'q, ZSet<U>, Grouped<K, S>>;

    /// Leaves the grouped scope: every row paired with its group's key.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_first = Index::new("first", |s: &String| s.chars().next().map(String::from).unwrap_or_default());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, words) = q.input::<String>("words")?;
    ///     Ok((input, q.output("keyed", words.group(&by_first).flatten())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, ["ab".to_string()])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new("ab".to_string(), "a".to_string()) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn flatten(self) -> Stream<'q, ZSet<Pair<T, K>>, S>;
}

impl<'q, T: Data, K: IndexKey, S: Scope> GroupedOps<'q, T, K, S>
    for Stream<'q, ZSet<T>, Grouped<K, S>>
{
    fn per_group<U: Data>(
        self,
        f: impl FnOnce(Stream<'q, ZSet<T>, Grouped<K, S>>) -> Stream<'q, ZSet<U>, Grouped<K, S>>,
    ) -> Stream<'q, ZSet<U>, Grouped<K, S>> {
        f(self)
    }

    #[track_caller]
    fn flatten(self) -> Stream<'q, ZSet<Pair<T, K>>, S> {
        self.raw_flatten()
    }
}
