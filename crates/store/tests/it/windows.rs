//! Tumbling, hopping and rolling windows against the oracle
//! (`oracle_ops.rs`), on every store, re-opened half-way, at the root and
//! inside `per_group` (all three); deleting a window's contents; the typed
//! errors.

use chrono::NaiveDate;
use operators::prelude::*;
use proptest::prelude::*;

use crate::harness::{batches, kinds, out, run1};
use crate::oracle::{self, Rel, bump};
use crate::oracle_ops;

/// 32 cases per property by default; `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// `(key, time, value)`.
type Ev = (i64, i64, i64);

/// Σ value·w and Σ w of a window.
fn sum_count(w: &ZSet<Ev>) -> (i64, i64) {
    w.iter().fold((0, 0), |(s, c), (r, n)| (s + r.2 * n, c + n))
}

proptest! {
    #![proptest_config(config())]

    /// Tumbling windows then a sum per (key, window), and hopping windows
    /// as tagged, at the root; tumbling windows inside `per_group`; times
    /// around 0 so windows cross it.
    #[test]
    fn tumbling_and_hopping(b in batches((0i64..2, -6i64..9, 0i64..3), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<Ev>("x")?;
                let by = Index::new("kw", |p: &Pair<Ev, i64>| (p.left.0, p.right));
                let sums = x.tumbling(|e| e.1, 4)
                    .group_reduce_flatten(&by, 0i64, |p| p.left.2)
                    .map(|p| (0, p.right.0, p.right.1, p.left, 0));
                let hops = x.hopping(|e| e.1, 5, 2)
                    .map(|p| (1, p.left.0, p.left.1, p.left.2, p.right));
                let by_key = Index::new("k", |e: &Ev| e.0);
                let inside = x.group(&by_key).per_group(|g| g.tumbling(|e| e.1, 3)).flatten()
                    .map(|p| (2, p.right, p.left.left.1, p.left.left.2, p.left.right));
                Ok((input, out(q, sums.add(hops).add(inside))?))
            }, |v| *v, |x| {
                let mut out = Rel::new();
                let tagged = oracle_ops::windows(x, |e| e.1, 4, 4);
                for ((sum, (k, start)), w) in oracle::group_sum(&tagged, |p| (p.0.0, p.1), 0i64, |p| p.0.2) {
                    bump(&mut out, &(0, k, start, sum, 0), w);
                }
                for (((k, t, v), start), w) in oracle_ops::windows(x, |e| e.1, 5, 2) {
                    bump(&mut out, &(1, k, t, v, start), w);
                }
                for (((k, t, v), start), w) in oracle_ops::windows(x, |e| e.1, 3, 3) {
                    bump(&mut out, &(2, k, t, v, start), w);
                }
                out
            }, &b)?;
        }
    }

    /// Hopping windows inside `per_group` (on the key): each row tagged
    /// with every window holding it, and a sum per window within each
    /// group (state kept per group), windows crossing 0.
    #[test]
    fn hopping_per_group(b in batches((0i64..2, -6i64..9, 0i64..3), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<Ev>("x")?;
                let by_key = Index::new("k", |e: &Ev| e.0);
                let by_start = Index::new("start", |p: &Pair<Ev, i64>| p.right);
                let inside = x.group(&by_key).per_group(|g| {
                    let tagged = g.hopping(|e| e.1, 5, 2);
                    let rows = tagged.map(|p| (0, p.left.1, p.left.2, p.right));
                    let sums = tagged.group_reduce_flatten(&by_start, 0i64, |p| p.left.2)
                        .map(|p| (1, 0, p.left, p.right));
                    rows.add(sums)
                }).flatten()
                .map(|p| (p.left.0, p.right, p.left.1, p.left.2, p.left.3));
                Ok((input, out(q, inside)?))
            }, |v| *v, |x| {
                let mut out = Rel::new();
                let tagged = oracle_ops::windows(x, |e| e.1, 5, 2);
                for (((k, t, v), start), w) in &tagged {
                    bump(&mut out, &(0, *k, *t, *v, *start), *w);
                }
                for ((sum, (k, start)), w) in oracle::group_sum(&tagged, |p| (p.0.0, p.1), 0i64, |p| p.0.2) {
                    bump(&mut out, &(1, k, 0, sum, start), w);
                }
                out
            }, &b)?;
        }
    }

    /// The rolling sum and count over the last 3 units per key, at the
    /// root and inside `per_group`.
    #[test]
    fn rolling(b in batches((0i64..2, -4i64..8, 0i64..4), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<Ev>("x")?;
                let by_key = Index::new("k", |e: &Ev| e.0);
                let root = x.rolling(&by_key, |e| e.1, 3, sum_count)
                    .map(|p| (0, p.right, p.left.0, p.left.1.0, p.left.1.1));
                let by_parity = Index::new("parity", |e: &Ev| e.2 % 2);
                let inside = x.group(&by_parity).per_group(|g| g.rolling(&by_key, |e| e.1, 3, sum_count))
                    .flatten()
                    .map(|p| (1 + p.right, p.left.right, p.left.left.0, p.left.left.1.0, p.left.left.1.1));
                Ok((input, out(q, root.add(inside))?))
            }, |v| *v, |x| {
                let mut out = Rel::new();
                for ((k, t, s, c), w) in oracle_ops::rolling_sums(x, |e| e.0, |e| e.1, |e| e.2, 3) {
                    bump(&mut out, &(0, k, t, s, c), w);
                }
                for parity in 0..2 {
                    let part = oracle::filter(x, |e| e.2 % 2 == parity);
                    for ((k, t, s, c), w) in oracle_ops::rolling_sums(&part, |e| e.0, |e| e.1, |e| e.2, 3) {
                        bump(&mut out, &(1 + parity, k, t, s, c), w);
                    }
                }
                out
            }, &b)?;
        }
    }
}

/// Deleting a window's contents: a tumbling window's sum goes when its
/// last row does; a rolling point goes with its row, and the points whose
/// windows held a deleted row change; on every store.
#[test]
fn deleting_window_contents() {
    let by_window = Index::new("window", |p: &Pair<Ev, i64>| p.right);
    let by_key = Index::new("k", |e: &Ev| e.0);
    let (graph, (input, sums, rolled)) = Graph::build(|q| {
        let (input, x) = q.input::<Ev>("x")?;
        let sums = x
            .tumbling(|e| e.1, 10)
            .group_reduce_flatten(&by_window, 0i64, |p| p.left.2);
        let rolled = x.rolling(&by_key, |e| e.1, 5, sum_count);
        Ok((input, q.output("sums", sums)?, q.output("rolled", rolled)?))
    })
    .unwrap();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        graph
            .insert(&mut *store, &input, [(1, 11, 5), (1, 13, 7), (1, 21, 1)])
            .unwrap();
        let out = graph.remove(&mut *store, &input, [(1, 11, 5)]).unwrap();
        assert_eq!(
            out.get(&sums).unwrap(),
            &zset! { Pair::new(12, 10) => -1, Pair::new(7, 10) => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&rolled).unwrap(),
            &zset! {
                Pair::new((11, (5, 1)), 1) => -1,
                Pair::new((13, (12, 2)), 1) => -1,
                Pair::new((13, (7, 1)), 1) => 1,
            },
            "{kind:?}"
        );
        let out = graph.remove(&mut *store, &input, [(1, 13, 7)]).unwrap();
        assert_eq!(
            out.get(&sums).unwrap(),
            &zset! { Pair::new(7, 10) => -1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&rolled).unwrap(),
            &zset! { Pair::new((13, (7, 1)), 1) => -1 },
            "{kind:?}"
        );
    }
}

/// A window of no width is refused when the query is built, and a window
/// start a date cannot hold fails the iteration, naming the vertex.
#[test]
fn window_errors_are_typed() {
    let err = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.output("w", x.tumbling(|t| *t, 0))?))
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::InvalidParameter {
                operator: "tumbling",
                ..
            }
        ),
        "{err}"
    );
    let (graph, (input, tagged)) = Graph::build(|q| {
        let (input, x) = q.input::<NaiveDate>("days")?;
        Ok((input, q.output("w", x.hopping(|d| *d, 7, 1))?))
    })
    .unwrap();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        let err = graph
            .insert(&mut *store, &input, [NaiveDate::MIN])
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::TimeOutOfRange { path, .. } if path.as_str().contains("hopping")),
            "{kind:?}: {err}"
        );
        // Nothing was written: the next iteration starts from nothing.
        let ok = graph
            .insert(
                &mut *store,
                &input,
                [NaiveDate::from_ymd_opt(2024, 1, 3).unwrap()],
            )
            .unwrap();
        assert_eq!(ok.get(&tagged).unwrap().len(), 7, "{kind:?}");
    }
}
