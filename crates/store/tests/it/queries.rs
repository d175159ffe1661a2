//! The correctness contract, per operator and for composed queries: after
//! every batch, the integral of the outputs equals the query evaluated from
//! scratch (by `oracle`) on the integral of the inputs, on every store, with
//! the store re-opened half-way.

use std::collections::BTreeMap;

use operators::prelude::*;
use proptest::prelude::*;

use crate::harness::{
    batches, batches2, check_cache_view, fail, kinds, out, out_named, run1, run2,
};
use crate::oracle::{self, Rel, bump, from_rows};

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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear_operators(b in batches(0i64..8, 6, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<i64>("x")?;
                let a = x.map(|v| v % 3);
                let m = x.filter(|v| v % 2 == 0).map_many(|v| vec![*v, v + 10]);
                Ok((input, out(q, a.add(m.neg()))?))
            }, |v| *v, |x| {
                let a = oracle::map(x, |v| v % 3);
                let evens = oracle::filter(x, |v| v % 2 == 0);
                let m = from_rows(evens.iter().flat_map(|(v, w)| [(*v, *w), (v + 10, *w)]));
                oracle::add(&a, &oracle::neg(&m))
            }, &b)?;
        }
    }

    #[test]
    fn join(b in batches2((0i64..3, 0i64..3), (0i64..3, 0i64..3), 6, 5)) {
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<(i64, i64)>("l")?;
                let (r, rs) = q.input::<(i64, i64)>("r")?;
                let k = Index::new("k", |x: &(i64, i64)| x.0);
                Ok((l, r, out(q, ls.join(rs, &k, &k))?))
            }, |p: &Pair<(i64, i64), (i64, i64)>| (p.left, p.right),
               |l, r| oracle::join(l, r, |x| x.0, |x| x.0), &b)?;
        }
    }

    #[test]
    fn join_map_equals_join_then_map(b in batches2((0i64..3, 0i64..3), (0i64..3, 0i64..3), 6, 5)) {
        // Rows that collide after the map (l.1 + r.1) add their weights.
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<(i64, i64)>("l")?;
                let (r, rs) = q.input::<(i64, i64)>("r")?;
                let k = Index::new("k", |x: &(i64, i64)| x.0);
                Ok((l, r, out(q, ls.join_map(rs, &k, &k, |l, r| (l.0, l.1 + r.1)))?))
            }, |v: &(i64, i64)| *v,
               |l, r| oracle::map(&oracle::join(l, r, |x| x.0, |x| x.0), |(a, b)| (a.0, a.1 + b.1)), &b)?;
        }
    }

    #[test]
    fn join_map_within_groups(b in batches2((0i64..2, 0i64..2, 0i64..2), (0i64..2, 0i64..2, 0i64..2), 6, 5)) {
        type Row = (i64, i64, i64);
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<Row>("l")?;
                let (r, rs) = q.input::<Row>("r")?;
                let g = Index::new("g", |x: &Row| x.0);
                let k = Index::new("k", |x: &Row| x.1);
                let joined = ls.group(&g).join_map(rs.group(&g), &k, &k, |l, r| l.2 - r.2).flatten();
                Ok((l, r, out(q, joined)?))
            }, |p: &Pair<i64, i64>| (p.left, p.right), |l, r| {
                oracle::map(&oracle::join(l, r, |x| (x.0, x.1), |x| (x.0, x.1)), |(a, b)| (a.2 - b.2, a.0))
            }, &b)?;
        }
    }

    #[test]
    fn outer_join(b in batches2((0i64..3, 0i64..3), (0i64..3, 0i64..2), 6, 5)) {
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<(i64, i64)>("l")?;
                let (r, rs) = q.input::<(i64, i64)>("r")?;
                let k = Index::new("k", |x: &(i64, i64)| x.0);
                Ok((l, r, out(q, ls.outer_join(rs, &k, &k))?))
            }, |p: &Pair<(i64, i64), OrEmpty<(i64, i64)>>| (p.left, p.right.as_option().copied()),
               |l, r| oracle::outer_join(l, r, |x| x.0, |x| x.0), &b)?;
        }
    }

    #[test]
    fn distinct_under_negative_weights(b in batches(0i64..5, 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<i64>("x")?;
                Ok((input, out(q, x.distinct())?))
            }, |v| *v, oracle::distinct, &b)?;
        }
    }

    #[test]
    fn reduce_and_count_at_the_root(b in batches(-3i64..5, 6, 5)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<i64>("x")?;
                let sum = x.reduce(0i64, |v| *v).map(|s| (0, *s));
                let count = x.count().map(|c| (1, *c));
                Ok((input, out(q, sum.add(count))?))
            }, |v| *v, |x| {
                let sum: i64 = x.iter().map(|(v, w)| v * w).sum();
                let count: i64 = x.values().sum();
                from_rows([((0, sum), 1), ((1, count), 1)])
            }, &b)?;
        }
    }

    #[test]
    fn group_reduce_flatten(b in batches((0i64..3, -3i64..4), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<(i64, i64)>("x")?;
                let by = Index::new("g", |r: &(i64, i64)| r.0);
                Ok((input, out(q, x.group_reduce_flatten(&by, 0i64, |r| r.1))?))
            }, |p: &Pair<i64, i64>| (p.left, p.right),
               |x| oracle::group_sum(x, |r| r.0, 0i64, |r| r.1), &b)?;
        }
    }

    #[test]
    fn first_n_under_deletes(b in batches((0i64..4, 0i64..4), 8, 5)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<(i64, i64)>("x")?;
                let by = Index::new("b", |r: &(i64, i64)| Desc(r.1));
                Ok((input, out(q, x.first_n(&by, 3))?))
            }, |v| *v, |x| oracle::first_n(x, |r| std::cmp::Reverse(r.1), 3), &b)?;
        }
    }

    #[test]
    fn first_n_per_group(b in batches((0i64..3, 0i64..4), 8, 5)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<(i64, i64)>("x")?;
                let g = Index::new("g", |r: &(i64, i64)| r.0);
                let by = Index::new("b", |r: &(i64, i64)| r.1);
                Ok((input, out(q, x.group(&g).first_n(&by, 2).flatten())?))
            }, |p: &Pair<(i64, i64), i64>| (p.left, p.right), |x| {
                let mut out = Rel::new();
                for g in 0..3 {
                    let part = oracle::filter(x, |r| r.0 == g);
                    for (v, w) in oracle::first_n(&part, |r| r.1, 2) {
                        bump(&mut out, &(v, g), w);
                    }
                }
                out
            }, &b)?;
        }
    }

    /// Spelled out, and with `group_reduce_flatten` (one operator) inside.
    #[test]
    fn nested_groups(b in batches((0i64..2, 0i64..3, -2i64..3), 8, 6)) {
        for (kind, fused) in kinds().into_iter().flat_map(|k| [(k, false), (k, true)]) {
            run1(kind, |q| {
                let (input, x) = q.input::<(i64, i64, i64)>("x")?;
                let outer = Index::new("a", |r: &(i64, i64, i64)| r.0);
                let inner = Index::new("b", |r: &(i64, i64, i64)| r.1);
                let sums = x.group(&outer).per_group(|g| if fused {
                    g.group_reduce_flatten(&inner, 0i64, |r| r.2)
                } else {
                    g.group(&inner).reduce(0i64, |r| r.2).flatten()
                }).flatten();
                Ok((input, out(q, sums)?))
            }, |p: &Pair<Pair<i64, i64>, i64>| (p.left.left, p.left.right, p.right), |x| {
                oracle::group_sum(x, |r| (r.0, r.1), 0i64, |r| r.2)
                    .into_iter()
                    .map(|((sum, (a, b)), w)| ((sum, b, a), w))
                    .collect()
            }, &b)?;
        }
    }

    #[test]
    fn join_within_groups(b in batches2((0i64..2, 0i64..2, 0i64..2), (0i64..2, 0i64..2, 0i64..2), 6, 5)) {
        type Row = (i64, i64, i64);
        for kind in kinds() {
            run2(kind, |q| {
                let (l, ls) = q.input::<Row>("l")?;
                let (r, rs) = q.input::<Row>("r")?;
                let g = Index::new("g", |x: &Row| x.0);
                let k = Index::new("k", |x: &Row| x.1);
                let joined = ls.group(&g).join(rs.group(&g), &k, &k).flatten();
                Ok((l, r, out(q, joined)?))
            }, |p: &Pair<Pair<Row, Row>, i64>| (p.left.left, p.left.right, p.right), |l, r| {
                oracle::join(l, r, |x| (x.0, x.1), |x| (x.0, x.1))
                    .into_iter()
                    .map(|((a, b), w)| ((a, b, a.0), w))
                    .collect()
            }, &b)?;
        }
    }

    #[test]
    fn transitive_closure_with_edge_deletions(toggles in prop::collection::vec(prop::collection::vec((0i64..5, 0i64..5), 0..5), 1..8)) {
        // Toggling keeps the edge relation a set: insert absent edges,
        // delete present ones.
        let mut present = std::collections::BTreeSet::new();
        let mut batches = Vec::new();
        for batch in toggles {
            let mut change: BTreeMap<(i64, i64), i64> = BTreeMap::new();
            for e in batch {
                let w = if present.contains(&e) { -1 } else { 1 };
                if w == 1 { present.insert(e); } else { present.remove(&e); }
                *change.entry(e).or_default() += w;
            }
            batches.push(change.into_iter().filter(|(_, w)| *w != 0).collect::<Vec<_>>());
        }
        for kind in kinds() {
            run1(kind, |q| {
                let (input, e) = q.input::<(i64, i64)>("edges")?;
                let paths = e.map(|(a, b)| Pair::new(*a, *b)).transitive_closure()?;
                Ok((input, out(q, paths)?))
            }, |p: &Pair<i64, i64>| (p.left, p.right), oracle::transitive_closure, &batches)?;
        }
    }

    #[test]
    fn delay_integrate_differentiate(b in batches(0i64..4, 6, 4)) {
        for kind in kinds() {
            let (graph, (input, outs)) = Graph::build(|q| {
                let (input, x) = q.input::<i64>("x")?;
                // Each output cached too (`<name>_cache`), read back
                // through its SQL view after every batch.
                let outs = [
                    out_named(q, "delay", x.delay())?,
                    out_named(q, "integrate", x.integrate())?,
                    out_named(q, "integrate_delay", x.integrate_delay())?,
                    out_named(q, "differentiate", x.differentiate())?,
                ];
                Ok((input, outs))
            }).map_err(fail)?;
            let mut store = kind.open(&graph).map_err(fail)?;
            let mut sum: Rel<i64> = Rel::new();
            let mut previous: Rel<i64> = Rel::new();
            for (i, batch) in b.iter().enumerate() {
                let now = from_rows(batch.iter().copied());
                let before = sum.clone();
                sum = oracle::add(&sum, &now);
                let out = graph.iteration(&mut *store, Changes::new().zset(&input, batch.iter().copied().collect())).map_err(fail)?;
                let got = |o: usize| -> Result<Rel<i64>, TestCaseError> {
                    Ok(out.get(&outs[o]).map_err(fail)?.iter().map(|(v, w)| (*v, w)).collect())
                };
                prop_assert_eq!(got(0)?, previous.clone(), "delay at {}", i);
                prop_assert_eq!(got(1)?, sum.clone(), "integrate at {}", i);
                prop_assert_eq!(got(2)?, before, "integrate_delay at {}", i);
                prop_assert_eq!(got(3)?, oracle::add(&now, &oracle::neg(&previous)), "differentiate at {}", i);
                for name in ["delay", "integrate", "integrate_delay", "differentiate"] {
                    let what = format!("{kind:?}: {name} at {i}");
                    check_cache_view::<i64>(&mut store, &graph, &format!("{name}_cache"), &what)?;
                }
                previous = now;
            }
        }
    }

    #[test]
    fn scalar_streams(b in batches(-3i64..4, 6, 4)) {
        for kind in kinds() {
            let (graph, (input, outs)) = Graph::build(|q| {
                let (input, x) = q.input::<i64>("x")?;
                // The current sum as a scalar stream.
                let total = x.reduce(0i64, |v| *v).integrate().make_scalar(0);
                let change = ScalarOps::differentiate(total);
                let again = ScalarOps::integrate(change);
                let before = ScalarOps::delay(total);
                let scalars = [("total", total), ("change", change), ("again", again), ("before", before)];
                let mut outs = Vec::new();
                let mut caches = Vec::new();
                for (name, s) in scalars {
                    outs.push(q.output_scalar(name, s)?);
                    // A scalar stream cannot be cached (`Query::cache` takes
                    // a stream of Z-sets): its value is, as the one-row set
                    // `differentiate(make_set(s))` integrates to.
                    let one_row = s.make_set().differentiate();
                    caches.push(q.cache(&format!("{name}_cache"), one_row, &[])?);
                }
                Ok((input, (outs, caches)))
            }).map_err(fail)?;
            let (outs, caches) = outs;
            let mut store = kind.open(&graph).map_err(fail)?;
            let (mut total, mut previous) = (0i64, 0i64);
            for (i, batch) in b.iter().enumerate() {
                total += batch.iter().map(|(v, w)| v * w).sum::<i64>();
                let out = graph.iteration(&mut *store, Changes::new().zset(&input, batch.iter().copied().collect())).map_err(fail)?;
                let got: Vec<i64> = outs.iter().map(|o| out.get(o).copied()).collect::<Result<_, _>>().map_err(fail)?;
                let expected = vec![total, total - previous, total, previous];
                prop_assert_eq!(&got, &expected);
                for ((cache, value), name) in caches.iter().zip(&expected).zip(["total", "change", "again", "before"]) {
                    let what = format!("{kind:?}: {name} at {i}");
                    prop_assert_eq!(cache.zset(&mut *store).map_err(fail)?, zset! { *value => 1 }, "{}", what);
                    let rows = check_cache_view::<i64>(&mut store, &graph, &format!("{name}_cache"), &what)?;
                    prop_assert_eq!(rows, usize::from(kind != crate::harness::Kind::Memory), "{}", what);
                }
                previous = total;
            }
        }
    }
}

/// `group_reduce_flatten` runs as one operator but keeps exactly the state of
/// `group → per_group(reduce) → flatten` spelled out: the same fingerprint and
/// tables, and either graph carries on from a SQLite file the other wrote.
#[test]
fn group_reduce_flatten_keeps_the_state_of_the_three_operator_form() {
    type Row = (i64, i64);
    let build = |fused: bool| {
        Graph::build(move |q| {
            let (input, x) = q.input::<Row>("x")?;
            let by = Index::new("g", |r: &Row| r.0);
            let sums = if fused {
                x.group_reduce_flatten(&by, 0i64, |r| r.1)
            } else {
                x.group(&by)
                    .per_group(|g| g.reduce(0i64, |r| r.1))
                    .flatten()
            };
            let cache = q.cache("sums", sums.map(|p| (p.right, p.left)), &[])?;
            Ok((input, q.output("out", sums)?, cache))
        })
        .unwrap()
    };
    let (fused, (f_in, f_out, f_cache)) = build(true);
    let (spelled, (s_in, s_out, s_cache)) = build(false);
    assert_eq!(fused.fingerprint(), spelled.fingerprint());
    let paths =
        |g: &Graph| -> Vec<String> { g.states().iter().map(|s| s.path().to_string()).collect() };
    assert_eq!(paths(&fused), paths(&spelled));
    assert!(
        paths(&fused).iter().any(|p| p.ends_with("/reduce")),
        "{:?}",
        paths(&fused)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sums.db");
    let batches: [&[(Row, i64)]; 4] = [
        &[((1, 5), 1), ((2, 7), 1), ((1, 1), 2)],
        &[((1, 5), -1), ((3, 4), 1)],
        &[((2, 7), -1), ((3, -4), 1)],
        &[((1, 2), 1), ((4, 0), 3)],
    ];
    // The reference: the spelled-out form on one memory store throughout.
    let mut reference = store::Memory::new(&spelled);
    // The file: written by each form in turn, re-opened between batches.
    for (i, batch) in batches.iter().enumerate() {
        let z: ZSet<Row> = batch.iter().copied().collect();
        let expected = spelled
            .iteration(&mut reference, Changes::new().zset(&s_in, z.clone()))
            .unwrap();
        let (graph, input, out) = if i % 2 == 0 {
            (&fused, &f_in, &f_out)
        } else {
            (&spelled, &s_in, &s_out)
        };
        // The two forms keep the same state (paths, rows, layout) but are
        // different definitions: switching is a migration, which computes
        // the state again from the kept input.
        let mut file_store =
            store::Sqlite::open(&file, graph, store::OpenOptions::default().migrate()).unwrap();
        let got = graph
            .iteration(&mut file_store, Changes::new().zset(input, z))
            .unwrap();
        assert_eq!(
            got.get(out).unwrap(),
            expected.get(&s_out).unwrap(),
            "batch {i}"
        );
    }
    let mut file_store =
        store::Sqlite::open(&file, &fused, store::OpenOptions::default().migrate()).unwrap();
    assert_eq!(
        f_cache.zset(&mut file_store).unwrap(),
        s_cache.zset(&mut reference).unwrap()
    );
}

/// Reading a cache by several keys, given in any order and repeated: the
/// rows of exactly those keys, each once, in key order (ties by value), on
/// every store.
#[test]
fn a_cache_read_by_several_keys_gives_their_rows_in_order_on_every_store() {
    type Row = (i64, i64);
    let by_group = Index::new("group", |r: &Row| r.0);
    let by = by_group.clone();
    let (graph, (input, cache)) = Graph::build(move |q| {
        let (input, x) = q.input::<Row>("x")?;
        Ok((input, q.cache("rows", x, &[&by])?))
    })
    .unwrap();
    let rows: Vec<Row> = (0..40).map(|i| ((i * 7) % 5, i)).collect();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        graph.insert(&mut *store, &input, rows.clone()).unwrap();
        let got = cache
            .iter_by_index(&mut *store, &by_group, Some(&[3, 1, 3, 9]))
            .unwrap();
        let mut expected: Vec<(i64, Row, i64)> = rows
            .iter()
            .filter(|r| r.0 == 1 || r.0 == 3)
            .map(|r| (r.0, *r, 1))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "{kind:?}");
    }
}
