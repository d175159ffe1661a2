//! Join and first-n of plain Z-sets: the relational operators' results for
//! Z-sets at hand, with no graph and no store (the `operators` crate keeps
//! them up to date incrementally; these compute them from scratch).

use std::hash::Hash;

use hashbrown::HashMap;

use crate::{Index, Pair, Weight, ZSet, weight};

impl<T: Clone + Eq + Hash> ZSet<T> {
    /// The equi-join of `self` and `other`: every pair `(l, r)` with
    /// `on_left(l) == on_right(r)`, of weight `w(l)·w(r)` (the bilinear
    /// join of DBSP §5; the `join` operator maintains it incrementally).
    ///
    /// ```
    /// use stepping_zset::{zset, Index, Pair, ZSet};
    /// let users: ZSet<(i64, &str)> = zset! { (1, "ann") => 1, (2, "bob") => 1 };
    /// let orders: ZSet<(i64, i64)> = zset! { (1, 100) => 2, (3, 300) => 1 };
    /// let joined = users.join(&orders, &Index::new("id", |u: &(i64, &str)| u.0), &Index::new("user", |o: &(i64, i64)| o.0));
    /// assert_eq!(joined, zset! { Pair::new((1, "ann"), (1, 100)) => 2 });
    /// ```
    ///
    /// A weight past `i64` saturates and is recorded for
    /// [`weight::take_overflow`](crate::weight::take_overflow), as in every
    /// Z-set operation.
    pub fn join<U: Clone + Eq + Hash, K: Eq + Hash>(
        &self,
        other: &ZSet<U>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> ZSet<Pair<T, U>> {
        let mut out = ZSet::new();
        if self.is_empty() || other.is_empty() {
            return out;
        }
        // The smaller side is indexed by key; the larger one probes it.
        if self.len() <= other.len() {
            let by_key = group(self, on_left);
            for (r, wr) in other.iter() {
                for (l, wl) in by_key.get(&on_right.key(r)).into_iter().flatten() {
                    out.update(Pair::new((*l).clone(), r.clone()), weight::mul(*wl, wr));
                }
            }
        } else {
            let by_key = group(other, on_right);
            for (l, wl) in self.iter() {
                for (r, wr) in by_key.get(&on_left.key(l)).into_iter().flatten() {
                    out.update(Pair::new(l.clone(), (*r).clone()), weight::mul(wl, *wr));
                }
            }
        }
        out
    }
}

fn group<'a, T, K: Eq + Hash>(
    z: &'a ZSet<T>,
    index: &Index<T, K>,
) -> HashMap<K, Vec<(&'a T, Weight)>> {
    let mut by_key: HashMap<K, Vec<(&T, Weight)>> = HashMap::new();
    for (v, w) in z.iter() {
        by_key.entry(index.key(v)).or_default().push((v, w));
    }
    by_key
}

impl<T: Clone + Ord + Hash> ZSet<T> {
    /// The first `n` rows in `index` order (ties by value), counting
    /// weights (a row of weight 3 is 3 rows; the last one taken is clipped)
    /// and ignoring rows whose weight is not positive: what the `first_n`
    /// operator keeps for a table.
    ///
    /// ```
    /// use stepping_zset::{zset, Desc, Index, ZSet};
    /// let scores: ZSet<(&str, i64)> = zset! { ("a", 1) => 1, ("b", 5) => 2, ("c", 3) => 1, ("d", 9) => -1 };
    /// let best = scores.first_n(&Index::new("score", |s: &(&str, i64)| Desc(s.1)), 3);
    /// assert_eq!(best, zset! { ("b", 5) => 2, ("c", 3) => 1 });
    /// ```
    pub fn first_n<K: Ord>(&self, index: &Index<T, K>, n: usize) -> ZSet<T> {
        self.first_n_by(|v| index.key(v), n)
    }

    /// [`first_n`](Self::first_n) in the order of `key(value)`, for a key
    /// that is no [`Index`] (e.g. a group key followed by an index's key).
    pub fn first_n_by<K: Ord>(&self, key: impl Fn(&T) -> K, n: usize) -> ZSet<T> {
        let mut sorted: Vec<(K, &T, Weight)> = self
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(v, w)| (key(v), v, w))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut left = i64::try_from(n).unwrap_or(i64::MAX);
        let mut out = ZSet::new();
        for (_, v, w) in sorted {
            if left <= 0 {
                break;
            }
            let take = w.min(left);
            out.update_ref(v, take);
            left -= take;
        }
        out
    }
}
