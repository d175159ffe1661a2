//! Semi-joins and anti-joins: the left rows with (or without) a match on
//! the right, built from the incremental join (Theorem 5.5) and
//! `distinct` (Prop. 6.3).

use std::hash::Hash;

use graph::{Scope, Stream};
use zset::{Data, Index, IndexKey, ZSet};

use crate::{Distinct, Joins, Linear};

/// `semi_join` and `anti_join`.
///
/// Multiplicities: a key is *matched* while the total weight of the right
/// rows with that key is positive (as in [`outer_join`](Joins::outer_join));
/// how many right rows match never multiplies anything. A left row keeps
/// its own weight, whatever it is (negative too): in the semi-join if its
/// key is matched, in the anti-join if not. So for every left stream `l`,
/// `semi_join(l, r) + anti_join(l, r) = l`.
pub trait SemiJoins<'q, T: Data, S: Scope>: Sized {
    /// The rows of this stream whose key `on_left(l)` has a match among
    /// `other`'s keys `on_right(r)` (SQL's `WHERE EXISTS` / `IN`), each with
    /// its own weight:
    ///
    /// `semi_join(l, r) = l ⋈ distinct(π_key(r))`, projected back onto `l`,
    ///
    /// incremental as its parts are: a change of `l` reads the stored keys
    /// of `r` at its own keys; a change of `r` that matches or unmatches a
    /// key reads the stored rows of `l` with that key.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_id = Index::new("id", |u: &(i64, String)| u.0);
    /// let by_user = Index::new("user", |o: &(i64, i64)| o.0);
    /// let (graph, (users, orders, out)) = Graph::build(|q| {
    ///     let (users, u) = q.input::<(i64, String)>("users")?;
    ///     let (orders, o) = q.input::<(i64, i64)>("orders")?;
    ///     Ok((users, orders, q.output("buyers", u.semi_join(o, &by_id, &by_user))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &users, [(1, "ann".to_string()), (2, "bob".to_string())])?;
    /// // Two orders of ann: she is in once.
    /// let change = graph.insert(&mut store, &orders, [(1, 10), (1, 11)])?;
    /// assert_eq!(change.get(&out)?, &zset! { (1, "ann".to_string()) => 1 });
    /// assert!(graph.remove(&mut store, &orders, [(1, 10)])?.get(&out)?.is_empty());
    /// let change = graph.remove(&mut store, &orders, [(1, 11)])?;
    /// assert_eq!(change.get(&out)?, &zset! { (1, "ann".to_string()) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn semi_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<T>, S>;

    /// The rows of this stream whose key has no match among `other`'s keys
    /// (SQL's `WHERE NOT EXISTS`), each with its own weight:
    ///
    /// `anti_join(l, r) = l − semi_join(l, r)`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_id = Index::new("id", |u: &(i64, String)| u.0);
    /// let by_user = Index::new("user", |o: &(i64, i64)| o.0);
    /// let (graph, (users, orders, out)) = Graph::build(|q| {
    ///     let (users, u) = q.input::<(i64, String)>("users")?;
    ///     let (orders, o) = q.input::<(i64, i64)>("orders")?;
    ///     Ok((users, orders, q.output("idle", u.anti_join(o, &by_id, &by_user))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &users, [(1, "ann".to_string()), (2, "bob".to_string())])?;
    /// assert_eq!(change.get(&out)?.len(), 2);
    /// let change = graph.insert(&mut store, &orders, [(1, 10)])?;
    /// assert_eq!(change.get(&out)?, &zset! { (1, "ann".to_string()) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn anti_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<T>, S>;
}

/// The left rows whose key is matched, with the paths of the internal
/// streams (and so of their states) under `base`.
#[track_caller]
fn matched<'q, T: Data, U: Data, K: IndexKey + Hash, S: Scope>(
    left: Stream<'q, ZSet<T>, S>,
    right: Stream<'q, ZSet<U>, S>,
    on_left: &Index<T, K>,
    on_right: &Index<U, K>,
    base: &graph::Path,
) -> Stream<'q, ZSet<T>, S> {
    let on_r = on_right.clone();
    let right_keys = right
        .map(move |r| on_r.key(r))
        .at(base.child("right_keys"))
        .distinct()
        .at(base.child("matched_keys"));
    let key_of_key = Index::new(on_left.name(), |k: &K| k.clone());
    left.join(right_keys, on_left, &key_of_key)
        .map(|p| p.left.clone())
}

impl<'q, T: Data, S: Scope> SemiJoins<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn semi_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<T>, S> {
        let base = self
            .path()
            .suffixed(&format!(".semi_join({})", other.path().last()));
        matched(self, other, on_left, on_right, &base).at(base)
    }

    #[track_caller]
    fn anti_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<T>, S> {
        let base = self
            .path()
            .suffixed(&format!(".anti_join({})", other.path().last()));
        let matched = matched(self, other, on_left, on_right, &base);
        self.add(matched.neg()).at(base)
    }
}
