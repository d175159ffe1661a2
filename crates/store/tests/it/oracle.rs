//! From-scratch evaluations of every operator over plain `BTreeMap`s,
//! written independently of the engine: no code shared with `graph`,
//! `operators` or `store`, only the definitions.
//!
//! A relation is a `BTreeMap<value, weight>` with no zero weights.

use std::collections::BTreeMap;

pub(crate) type Rel<T> = BTreeMap<T, i64>;

/// Adds `w` to `v`'s weight, dropping it at zero.
pub(crate) fn bump<T: Ord + Clone>(rel: &mut Rel<T>, v: &T, w: i64) {
    let entry = rel.entry(v.clone()).or_insert(0);
    *entry += w;
    if *entry == 0 {
        rel.remove(v);
    }
}

pub(crate) fn from_rows<T: Ord + Clone>(rows: impl IntoIterator<Item = (T, i64)>) -> Rel<T> {
    let mut rel = Rel::new();
    for (v, w) in rows {
        bump(&mut rel, &v, w);
    }
    rel
}

pub(crate) fn map<T, U: Ord + Clone>(rel: &Rel<T>, f: impl Fn(&T) -> U) -> Rel<U> {
    from_rows(rel.iter().map(|(v, w)| (f(v), *w)))
}

pub(crate) fn filter<T: Ord + Clone>(rel: &Rel<T>, f: impl Fn(&T) -> bool) -> Rel<T> {
    rel.iter()
        .filter(|(v, _)| f(v))
        .map(|(v, w)| (v.clone(), *w))
        .collect()
}

pub(crate) fn add<T: Ord + Clone>(a: &Rel<T>, b: &Rel<T>) -> Rel<T> {
    from_rows(a.iter().chain(b.iter()).map(|(v, w)| (v.clone(), *w)))
}

pub(crate) fn neg<T: Ord + Clone>(a: &Rel<T>) -> Rel<T> {
    a.iter().map(|(v, w)| (v.clone(), -w)).collect()
}

/// Every pair with equal keys, weight `wl · wr`.
pub(crate) fn join<L: Ord + Clone, R: Ord + Clone, K: Eq>(
    l: &Rel<L>,
    r: &Rel<R>,
    kl: impl Fn(&L) -> K,
    kr: impl Fn(&R) -> K,
) -> Rel<(L, R)> {
    let mut out = Rel::new();
    for (a, wa) in l {
        for (b, wb) in r {
            if kl(a) == kr(b) {
                bump(&mut out, &(a.clone(), b.clone()), wa * wb);
            }
        }
    }
    out
}

/// The join, plus `(l, None)` for each left row whose key's right rows have
/// a total weight that is not positive.
pub(crate) fn outer_join<L: Ord + Clone, R: Ord + Clone, K: Eq>(
    l: &Rel<L>,
    r: &Rel<R>,
    kl: impl Fn(&L) -> K,
    kr: impl Fn(&R) -> K,
) -> Rel<(L, Option<R>)> {
    let mut out: Rel<(L, Option<R>)> = Rel::new();
    for ((a, b), w) in join(l, r, &kl, &kr) {
        bump(&mut out, &(a, Some(b)), w);
    }
    for (a, wa) in l {
        let matched: i64 = r
            .iter()
            .filter(|(b, _)| kr(b) == kl(a))
            .map(|(_, w)| w)
            .sum();
        if matched <= 0 {
            bump(&mut out, &(a.clone(), None), *wa);
        }
    }
    out
}

/// Values of positive weight, each once.
pub(crate) fn distinct<T: Ord + Clone>(rel: &Rel<T>) -> Rel<T> {
    rel.iter()
        .filter(|(_, w)| **w > 0)
        .map(|(v, _)| (v.clone(), 1))
        .collect()
}

/// For each key whose rows' weights do not sum to zero: `(Σ pick·w, key)`.
pub(crate) fn group_sum<
    T,
    K: Ord + Clone,
    V: Ord + Clone + std::ops::Add<Output = V> + std::ops::Mul<i64, Output = V>,
>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> K,
    zero: V,
    pick: impl Fn(&T) -> V,
) -> Rel<(V, K)> {
    let mut groups: BTreeMap<K, (V, i64)> = BTreeMap::new();
    for (v, w) in rel {
        let g = groups.entry(key(v)).or_insert((zero.clone(), 0));
        g.0 = g.0.clone() + pick(v) * *w;
        g.1 += w;
    }
    groups
        .into_iter()
        .filter(|(_, (_, count))| *count != 0)
        .map(|(k, (sum, _))| ((sum, k), 1))
        .collect()
}

/// The first `n` units of the positive rows, by `(key, value)`.
pub(crate) fn first_n<T: Ord + Clone, K: Ord>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> K,
    n: i64,
) -> Rel<T> {
    let mut rows: Vec<(K, &T, i64)> = rel
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(v, w)| (key(v), v, *w))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let mut left = n;
    let mut out = Rel::new();
    for (_, v, w) in rows {
        if left <= 0 {
            break;
        }
        let take = w.min(left);
        bump(&mut out, v, take);
        left -= take;
    }
    out
}

/// The fixed point of `Y = distinct(E + E∘Y)` from `Y = ∅`: every `(a, b)`
/// joined by a path, computed by iterating the definition.
pub(crate) fn transitive_closure(edges: &Rel<(i64, i64)>) -> Rel<(i64, i64)> {
    let mut y: Rel<(i64, i64)> = Rel::new();
    loop {
        let mut next = edges.clone();
        for ((a, b), we) in edges {
            for ((c, d), wy) in &y {
                if b == c {
                    bump(&mut next, &(*a, *d), we * wy);
                }
            }
        }
        let next = distinct(&next);
        if next == y {
            return y;
        }
        y = next;
    }
}
