//! `count_distinct` and `avg`, built from operators that retract cheaply:
//! `distinct` (Prop. 6.3) followed by `count`, and a linear sum of
//! `(value, 1)` (§11.1) divided at the end.

use std::hash::Hash;
use std::ops::{Add, Mul};

use graph::{FlatScope, Stream};
use serde::{Deserialize, Serialize};
use zset::{Data, F64, Index, IndexKey, Pair, ZSet};

use crate::{Aggregates, Distinct, GroupedOps, Grouping, Linear};

/// A value that [`avg`](Summaries::avg) can average: summed with `+` and
/// scaled by weights, then divided by the count.
///
/// Implemented for `i64` (the sum is exact, so the average of the same rows
/// is the same whatever changes led there) and [`F64`] (summed in floating
/// point, as `reduce` sums it: removing a value may leave a rounding error).
pub trait Mean: Data + Default + Add<Output = Self> + Mul<i64, Output = Self> {
    /// `sum / count` (`count` is never 0 here).
    fn mean(sum: &Self, count: i64) -> F64;
}

impl Mean for i64 {
    fn mean(sum: &i64, count: i64) -> F64 {
        F64::new(*sum as f64 / count as f64)
    }
}

impl Mean for F64 {
    fn mean(sum: &F64, count: i64) -> F64 {
        F64::new(sum.get() / count as f64)
    }
}

/// A sum and a count, summed together: the state of `avg`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct SumCount<V> {
    /// `Σ value · weight`.
    pub(crate) sum: V,
    /// `Σ weight`.
    pub(crate) count: i64,
}

impl<V: Add<Output = V>> Add for SumCount<V> {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        SumCount {
            sum: self.sum + other.sum,
            count: zset::weight::add(self.count, other.count),
        }
    }
}

impl<V: Mul<i64, Output = V>> Mul<i64> for SumCount<V> {
    type Output = Self;
    fn mul(self, w: i64) -> Self {
        SumCount {
            sum: self.sum * w,
            count: zset::weight::mul(self.count, w),
        }
    }
}

/// `count_distinct`, `avg` and their grouped forms.
pub trait Summaries<'q, T: Data, S: FlatScope>: Sized {
    /// The number of distinct `pick(row)` of positive weight:
    /// `count(distinct(map(pick)))`. Each change reads the stored weights of
    /// the values it touches (distinct's haitch, Prop. 6.3) and its groups'
    /// counts, never a whole group.
    ///
    /// At the root the result always holds exactly one value (0 for an
    /// empty input), as `count` does; per group (after `group`), a group's
    /// count exists while the group has a value of positive weight.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, visits) = q.input::<(String, i64)>("visits")?;
    ///     Ok((input, q.output("visitors", visits.count_distinct(|v| v.0.clone()))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let v = |who: &str, day| (who.to_string(), day);
    /// assert_eq!(graph.insert(&mut store, &input, [v("ann", 1), v("ann", 2), v("bob", 1)])?.get(&out)?, &zset! { 2 => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [v("ann", 1)])?.get(&out)?, &zset! {});
    /// assert_eq!(graph.remove(&mut store, &input, [v("ann", 2)])?.get(&out)?, &zset! { 2 => -1, 1 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn count_distinct<V: Data>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<i64>, S>;

    /// The mean of `pick(row)` over the rows, counting weights:
    /// `Σ pick·w / Σ w`, from one linear aggregate of the sum and the count
    /// (§11.1), so a change costs one stored row per group it touches.
    ///
    /// A group (or the root) has an average while its total weight is not
    /// 0; an empty input has none.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     Ok((input, q.output("mean", n.avg(|x| *x))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [1, 2])?.get(&out)?, &zset! { F64::new(1.5) => 1 });
    /// assert_eq!(graph.insert(&mut store, &input, [6])?.get(&out)?, &zset! { F64::new(1.5) => -1, F64::new(3.0) => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [1, 2, 6])?.get(&out)?, &zset! { F64::new(3.0) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn avg<V: Mean>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<F64>, S>;

    /// `group(by)`, `count_distinct(pick)` per group, `flatten`:
    /// `Pair(count, key)` per group with a value of positive weight.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_day = Index::new("day", |v: &(String, i64)| v.1);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, visits) = q.input::<(String, i64)>("visits")?;
    ///     Ok((input, q.output("per_day", visits.group_count_distinct(&by_day, |v| v.0.clone()))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let v = |who: &str, day| (who.to_string(), day);
    /// let change = graph.insert(&mut store, &input, [v("ann", 1), v("bob", 1), v("ann", 2)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(2, 1) => 1, Pair::new(1, 2) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_count_distinct<K: IndexKey + Hash, V: Data>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<i64, K>>, S>;

    /// `group(by)`, `avg(pick)` per group, `flatten`: `Pair(mean, key)` per
    /// group whose total weight is not 0.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_team = Index::new("team", |r: &(char, i64)| r.0.to_string());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, scores) = q.input::<(char, i64)>("scores")?;
    ///     Ok((input, q.output("means", scores.group_avg(&by_team, |r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [('a', 2), ('a', 4), ('b', 1)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(F64::new(3.0), "a".to_string()) => 1, Pair::new(F64::new(1.0), "b".to_string()) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_avg<K: IndexKey + Hash, V: Mean>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<F64, K>>, S>;
}

impl<'q, T: Data, S: FlatScope> Summaries<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn count_distinct<V: Data>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<i64>, S> {
        // The values get a path of their own under this stream, so that the
        // state of their distinct (their integral) is named after it.
        let base = self.path().child("count_distinct");
        self.map(pick).at(base).distinct().count()
    }

    #[track_caller]
    fn avg<V: Mean>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<F64>, S> {
        let base = self.path().child("avg");
        self.at(base)
            .reduce(SumCount::default(), move |r| SumCount {
                sum: pick(r),
                count: 1,
            })
            .map_many(|s: &SumCount<V>| (s.count != 0).then(|| V::mean(&s.sum, s.count)))
    }

    #[track_caller]
    fn group_count_distinct<K: IndexKey + Hash, V: Data>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<i64, K>>, S> {
        self.group(by)
            .per_group(|g| g.count_distinct(pick))
            .flatten()
    }

    #[track_caller]
    fn group_avg<K: IndexKey + Hash, V: Mean>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<F64, K>>, S> {
        self.group(by).per_group(|g| g.avg(pick)).flatten()
    }
}
