//! From-scratch evaluations of the operators of issue 24 (extremes,
//! distinct counts, averages, semi- and anti-joins, windows), over plain
//! `BTreeMap`s, written from the definitions alone: no code shared with
//! `graph`, `operators` or `store` (see `oracle.rs`).

use std::collections::BTreeMap;

use crate::oracle::{Rel, bump};

/// Per group, the total weight of each value `pick(row)`.
fn values_per_group<T, G: Ord, V: Ord>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> V,
) -> BTreeMap<G, BTreeMap<V, i64>> {
    let mut groups: BTreeMap<G, BTreeMap<V, i64>> = BTreeMap::new();
    for (row, w) in rel {
        *groups
            .entry(key(row))
            .or_default()
            .entry(pick(row))
            .or_default() += w;
    }
    groups
}

/// Per group with a value of positive weight: `(least such value, group)`.
pub(crate) fn group_min<T, G: Ord + Clone, V: Ord + Clone>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> V,
) -> Rel<(V, G)> {
    let mut out = Rel::new();
    for (g, values) in values_per_group(rel, key, pick) {
        if let Some((v, _)) = values.iter().find(|(_, w)| **w > 0) {
            bump(&mut out, &(v.clone(), g), 1);
        }
    }
    out
}

/// Per group with a value of positive weight: `(greatest such value, group)`.
pub(crate) fn group_max<T, G: Ord + Clone, V: Ord + Clone>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> V,
) -> Rel<(V, G)> {
    let mut out = Rel::new();
    for (g, values) in values_per_group(rel, key, pick) {
        if let Some((v, _)) = values.iter().rev().find(|(_, w)| **w > 0) {
            bump(&mut out, &(v.clone(), g), 1);
        }
    }
    out
}

/// Per group with a row of positive weight: `(row, group)` for the row of
/// positive weight whose `pick` is least (`greatest`: greatest), ties to
/// the least row.
pub(crate) fn group_arg<T: Ord + Clone, G: Ord + Clone, V: Ord>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> V,
    greatest: bool,
) -> Rel<(T, G)> {
    let mut best: BTreeMap<G, &T> = BTreeMap::new();
    for (row, w) in rel {
        if *w <= 0 {
            continue;
        }
        let g = key(row);
        let better = match best.get(&g) {
            None => true,
            Some(b) => {
                let (p, q) = (pick(row), pick(b));
                if p == q {
                    row < *b
                } else {
                    (p < q) != greatest
                }
            }
        };
        if better {
            best.insert(g, row);
        }
    }
    best.into_iter()
        .map(|(g, row)| ((row.clone(), g), 1))
        .collect()
}

/// Per group with a value of positive weight: `(how many such values, group)`.
pub(crate) fn group_count_distinct<T, G: Ord + Clone, V: Ord>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> V,
) -> Rel<(i64, G)> {
    let mut out = Rel::new();
    for (g, values) in values_per_group(rel, key, pick) {
        let n = values.values().filter(|w| **w > 0).count() as i64;
        if n > 0 {
            bump(&mut out, &(n, g), 1);
        }
    }
    out
}

/// Per group whose weights do not sum to 0: `(Σ pick·w / Σ w, group)`, the
/// division in `f64`, with no negative zero (a float key has one zero).
pub(crate) fn group_avg<T, G: Ord + Clone>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> G,
    pick: impl Fn(&T) -> i64,
) -> BTreeMap<G, f64> {
    let mut sums: BTreeMap<G, (i64, i64)> = BTreeMap::new();
    for (row, w) in rel {
        let s = sums.entry(key(row)).or_default();
        s.0 += pick(row) * w;
        s.1 += w;
    }
    sums.into_iter()
        .filter(|(_, (_, n))| *n != 0)
        .map(|(g, (s, n))| (g, s as f64 / n as f64 + 0.0))
        .collect()
}

/// The left rows, each with its weight, whose key's right rows have a
/// positive total weight (`matched`), or whose key's do not (`!matched`).
pub(crate) fn semi_join<L: Ord + Clone, R, K: Eq>(
    l: &Rel<L>,
    r: &Rel<R>,
    kl: impl Fn(&L) -> K,
    kr: impl Fn(&R) -> K,
    matched: bool,
) -> Rel<L> {
    l.iter()
        .filter(|(a, _)| {
            let total: i64 = r
                .iter()
                .filter(|(b, _)| kr(b) == kl(a))
                .map(|(_, w)| w)
                .sum();
            (total > 0) == matched
        })
        .map(|(a, w)| (a.clone(), *w))
        .collect()
}

/// Each row with the start of every window `[k·hop, k·hop + width)`
/// containing `time(row)`, found by trying every start near it.
pub(crate) fn windows<T: Ord + Clone>(
    rel: &Rel<T>,
    time: impl Fn(&T) -> i64,
    width: i64,
    hop: i64,
) -> Rel<(T, i64)> {
    let mut out = Rel::new();
    for (row, w) in rel {
        let t = time(row);
        let mut start = (t - width - hop).div_euclid(hop) * hop;
        while start <= t {
            if start <= t && t < start + width {
                bump(&mut out, &(row.clone(), start), *w);
            }
            start += hop;
        }
    }
    out
}

/// For each key and each time at which the key has a row of positive
/// weight: `(key, time, Σ value·w, Σ w)` over the key's rows with time in
/// `(time − width, time]`.
pub(crate) fn rolling_sums<T, K: Ord + Clone>(
    rel: &Rel<T>,
    key: impl Fn(&T) -> K,
    time: impl Fn(&T) -> i64,
    value: impl Fn(&T) -> i64,
    width: i64,
) -> Rel<(K, i64, i64, i64)> {
    let mut points: BTreeMap<(K, i64), ()> = BTreeMap::new();
    for (row, w) in rel {
        if *w > 0 {
            points.insert((key(row), time(row)), ());
        }
    }
    let mut out = Rel::new();
    for (k, t) in points.into_keys() {
        let (mut sum, mut count) = (0, 0);
        for (row, w) in rel {
            if key(row) == k && time(row) <= t && time(row) > t - width {
                sum += value(row) * w;
                count += w;
            }
        }
        bump(&mut out, &(k, t, sum, count), 1);
    }
    out
}
