//! `min`, `max`, `arg_min`, `arg_max`, `count_distinct`, `avg` and their
//! grouped forms against the oracle (`oracle_ops.rs`), on every store, with
//! the store re-opened half-way, at the root, per group and inside
//! `per_group`; and what a change reads: deleting a group's minimum reads a
//! few rows, however large the group.

use operators::prelude::*;
use proptest::prelude::*;

use crate::harness::{batches, fail, kinds, out, run1, sql_kinds};
use crate::oracle::{Rel, bump};
use crate::oracle_ops;

type Row = (i64, i64);

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

/// Tags each of the four extremes' output rows with which one it is.
fn tagged<V>(rel: Rel<(V, ())>, tag: i64, f: impl Fn(&V) -> (i64, i64)) -> Rel<(i64, i64, i64)> {
    rel.keys()
        .map(|(v, ())| ((tag, f(v).0, f(v).1), 1))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// All four at the root, where the input's one group comes and goes.
    #[test]
    fn extremes_at_the_root(b in batches((0i64..3, 0i64..5), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<Row>("x")?;
                let min = x.min(|r| r.1).map(|v| (0, *v, 0));
                let max = x.max(|r| r.1).map(|v| (1, *v, 0));
                let arg_min = x.arg_min(|r| r.1).map(|r| (2, r.0, r.1));
                let arg_max = x.arg_max(|r| r.1).map(|r| (3, r.0, r.1));
                Ok((input, out(q, min.add(max).add(arg_min).add(arg_max))?))
            }, |v| *v, |x| {
                let mut out = tagged(oracle_ops::group_min(x, |_| (), |r| r.1), 0, |v| (*v, 0));
                out.extend(tagged(oracle_ops::group_max(x, |_| (), |r| r.1), 1, |v| (*v, 0)));
                out.extend(tagged(oracle_ops::group_arg(x, |_| (), |r| r.1, false), 2, |r| *r));
                out.extend(tagged(oracle_ops::group_arg(x, |_| (), |r| r.1, true), 3, |r| *r));
                out
            }, &b)?;
        }
    }

    /// The grouped forms, and the same spelled out inside `per_group`.
    #[test]
    fn extremes_per_group(b in batches((0i64..3, 0i64..4, 0i64..3), 8, 6)) {
        type R3 = (i64, i64, i64);
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<R3>("x")?;
                let g = Index::new("g", |r: &R3| r.0);
                let pick = |r: &R3| r.1;
                let min = x.group_min(&g, pick).map(|p| (0, p.right, p.left, 0));
                let max = x.group_max(&g, pick).map(|p| (1, p.right, p.left, 0));
                let arg_min = x.group_arg_min(&g, pick).map(|p| (2, p.right, p.left.1, p.left.2));
                let arg_max = x.group_arg_max(&g, pick).map(|p| (3, p.right, p.left.1, p.left.2));
                let spelled = x.group(&g).per_group(|grp| grp.min(pick)).flatten()
                    .map(|p| (4, p.right, p.left, 0));
                let spelled_arg = x.group(&g).per_group(|grp| grp.arg_max(pick)).flatten()
                    .map(|p| (5, p.right, p.left.1, p.left.2));
                let all = min.add(max).add(arg_min).add(arg_max).add(spelled).add(spelled_arg);
                Ok((input, out(q, all)?))
            }, |v| *v, |x| {
                let mut out: Rel<(i64, i64, i64, i64)> = Rel::new();
                let key = |r: &R3| r.0;
                for ((v, g), w) in oracle_ops::group_min(x, key, |r| r.1) {
                    bump(&mut out, &(0, g, v, 0), w);
                    bump(&mut out, &(4, g, v, 0), w);
                }
                for ((v, g), w) in oracle_ops::group_max(x, key, |r| r.1) {
                    bump(&mut out, &(1, g, v, 0), w);
                }
                for ((r, g), w) in oracle_ops::group_arg(x, key, |r| r.1, false) {
                    bump(&mut out, &(2, g, r.1, r.2), w);
                }
                for ((r, g), w) in oracle_ops::group_arg(x, key, |r| r.1, true) {
                    bump(&mut out, &(3, g, r.1, r.2), w);
                    bump(&mut out, &(5, g, r.1, r.2), w);
                }
                out
            }, &b)?;
        }
    }

    /// `group_min` and `group_max` inside `per_group` (groups of groups).
    #[test]
    fn extremes_in_nested_groups(b in batches((0i64..2, 0i64..2, 0i64..4), 8, 6)) {
        type R3 = (i64, i64, i64);
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<R3>("x")?;
                let outer = Index::new("a", |r: &R3| r.0);
                let inner = Index::new("b", |r: &R3| r.1);
                let both = x.group(&outer).per_group(|g| {
                    let min = g.group_min(&inner, |r| r.2).map(|p| (0, p.right, p.left));
                    let max = g.group_max(&inner, |r| r.2).map(|p| (1, p.right, p.left));
                    min.add(max)
                }).flatten();
                Ok((input, out(q, both)?))
            }, |p: &Pair<(i64, i64, i64), i64>| (p.right, p.left.0, p.left.1, p.left.2), |x| {
                let mut out = Rel::new();
                for ((v, (a, b)), w) in oracle_ops::group_min(x, |r| (r.0, r.1), |r| r.2) {
                    bump(&mut out, &(a, 0, b, v), w);
                }
                for ((v, (a, b)), w) in oracle_ops::group_max(x, |r| (r.0, r.1), |r| r.2) {
                    bump(&mut out, &(a, 1, b, v), w);
                }
                out
            }, &b)?;
        }
    }

    /// The rest inside an outer `per_group` (on `a`): `max`, `arg_min`,
    /// `count_distinct` and `avg` of each outer group, and `group_arg_min`,
    /// `group_arg_max`, `group_count_distinct` and `group_avg` of its inner
    /// groups (on `b`); ties on `c` go to the least row (`d` decides).
    #[test]
    fn extremes_and_summaries_in_nested_groups(
        b in batches((0i64..2, 0i64..2, 0i64..3, 0i64..2), 8, 6),
    ) {
        type R4 = (i64, i64, i64, i64);
        /// `(tag, inner group or -1, value, value, float bits)`.
        type Tagged = (i64, i64, i64, i64, u64);
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<R4>("x")?;
                let outer = Index::new("a", |r: &R4| r.0);
                let inner = Index::new("b", |r: &R4| r.1);
                let all = x.group(&outer).per_group(|g| {
                    let max = g.max(|r| r.2).map(|v| (0, -1, *v, 0, 0u64));
                    let arg_min = g.arg_min(|r| r.2).map(|r| (1, -1, r.1 * 10 + r.2, r.3, 0u64));
                    let g_arg_min = g.group_arg_min(&inner, |r| r.2)
                        .map(|p| (2, p.right, p.left.2, p.left.3, 0u64));
                    let g_arg_max = g.group_arg_max(&inner, |r| r.2)
                        .map(|p| (3, p.right, p.left.2, p.left.3, 0u64));
                    let distinct = g.count_distinct(|r| r.2).map(|n| (4, -1, *n, 0, 0u64));
                    let g_distinct = g.group_count_distinct(&inner, |r| r.2)
                        .map(|p| (5, p.right, p.left, 0, 0u64));
                    let avg = g.avg(|r| r.2 - r.3).map(|a| (6, -1, 0, 0, a.get().to_bits()));
                    let g_avg = g.group_avg(&inner, |r| r.2 + r.3)
                        .map(|p| (7, p.right, 0, 0, p.left.get().to_bits()));
                    max.add(arg_min).add(g_arg_min).add(g_arg_max)
                        .add(distinct).add(g_distinct).add(avg).add(g_avg)
                }).flatten();
                Ok((input, out(q, all)?))
            }, |p: &Pair<Tagged, i64>| {
                let (tag, b, v, u, f) = p.left;
                (p.right, tag, b, v, u, f)
            }, |x| {
                let mut out: Rel<(i64, i64, i64, i64, i64, u64)> = Rel::new();
                let a = |r: &R4| r.0;
                let ab = |r: &R4| (r.0, r.1);
                for ((v, a), w) in oracle_ops::group_max(x, a, |r| r.2) {
                    bump(&mut out, &(a, 0, -1, v, 0, 0), w);
                }
                for ((r, a), w) in oracle_ops::group_arg(x, a, |r| r.2, false) {
                    bump(&mut out, &(a, 1, -1, r.1 * 10 + r.2, r.3, 0), w);
                }
                for (greatest, tag) in [(false, 2), (true, 3)] {
                    for ((r, (a, b)), w) in oracle_ops::group_arg(x, ab, |r| r.2, greatest) {
                        bump(&mut out, &(a, tag, b, r.2, r.3, 0), w);
                    }
                }
                for ((n, a), w) in oracle_ops::group_count_distinct(x, a, |r| r.2) {
                    bump(&mut out, &(a, 4, -1, n, 0, 0), w);
                }
                for ((n, (a, b)), w) in oracle_ops::group_count_distinct(x, ab, |r| r.2) {
                    bump(&mut out, &(a, 5, b, n, 0, 0), w);
                }
                for (a, m) in oracle_ops::group_avg(x, a, |r| r.2 - r.3) {
                    bump(&mut out, &(a, 6, -1, 0, 0, m.to_bits()), 1);
                }
                for ((a, b), m) in oracle_ops::group_avg(x, ab, |r| r.2 + r.3) {
                    bump(&mut out, &(a, 7, b, 0, 0, m.to_bits()), 1);
                }
                out
            }, &b)?;
        }
    }

    /// `count_distinct` and `avg` at the root, per group, and inside `per_group`.
    #[test]
    fn count_distinct_and_avg(b in batches((0i64..3, 0i64..4), 8, 6)) {
        for kind in kinds() {
            run1(kind, |q| {
                let (input, x) = q.input::<Row>("x")?;
                let g = Index::new("g", |r: &Row| r.0);
                let distinct = x.count_distinct(|r| r.1).map(|n| (0, -1, (*n as f64).to_bits()));
                let avg = x.avg(|r| r.1).map(|a| (1, -1, a.get().to_bits()));
                let g_distinct = x.group_count_distinct(&g, |r| r.1)
                    .map(|p| (2, p.right, (p.left as f64).to_bits()));
                let g_avg = x.group_avg(&g, |r| r.1).map(|p| (3, p.right, p.left.get().to_bits()));
                let inside = x.group(&g).per_group(|grp| grp.avg(|r| r.1)).flatten()
                    .map(|p| (4, p.right, p.left.get().to_bits()));
                let all = distinct.add(avg).add(g_distinct).add(g_avg).add(inside);
                Ok((input, out(q, all)?))
            }, |v| *v, |x| {
                let mut out: Rel<(i64, i64, u64)> = Rel::new();
                let root_count = oracle_ops::group_count_distinct(x, |_| (), |r| r.1)
                    .keys().map(|(n, ())| *n).next().unwrap_or(0);
                bump(&mut out, &(0, -1, (root_count as f64).to_bits()), 1);
                for a in oracle_ops::group_avg(x, |_| (), |r| r.1).values() {
                    bump(&mut out, &(1, -1, a.to_bits()), 1);
                }
                for ((n, g), w) in oracle_ops::group_count_distinct(x, |r| r.0, |r| r.1) {
                    bump(&mut out, &(2, g, (n as f64).to_bits()), w);
                }
                for (g, a) in oracle_ops::group_avg(x, |r| r.0, |r| r.1) {
                    bump(&mut out, &(3, g, a.to_bits()), 1);
                    bump(&mut out, &(4, g, a.to_bits()), 1);
                }
                out
            }, &b)?;
        }
    }
}

/// Deleting a group's minimum (and then its maximum) gives the next one,
/// and a group whose rows are all deleted leaves the output and the state,
/// on every store.
#[test]
fn deleting_the_extremes_and_then_the_group() {
    let g = Index::new("g", |r: &Row| r.0);
    let (graph, (input, mins, maxes)) = Graph::build(|q| {
        let (input, x) = q.input::<Row>("x")?;
        let mins = q.output("mins", x.group_min(&g, |r| r.1))?;
        let maxes = q.output("maxes", x.group_max(&g, |r| r.1))?;
        Ok((input, mins, maxes))
    })
    .unwrap();
    for kind in kinds() {
        let mut store = kind.open(&graph).unwrap();
        let rows: Vec<Row> = (1..=5).map(|v| (7, v * 10)).chain([(8, 1)]).collect();
        graph.insert(&mut *store, &input, rows).unwrap();
        let out = graph.remove(&mut *store, &input, [(7, 10)]).unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(10, 7) => -1, Pair::new(20, 7) => 1 },
            "{kind:?}"
        );
        assert!(out.get(&maxes).unwrap().is_empty(), "{kind:?}");
        let out = graph
            .remove(&mut *store, &input, [(7, 50), (7, 20)])
            .unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(20, 7) => -1, Pair::new(30, 7) => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&maxes).unwrap(),
            &zset! { Pair::new(50, 7) => -1, Pair::new(40, 7) => 1 },
            "{kind:?}"
        );
        let out = graph
            .remove(&mut *store, &input, [(7, 30), (7, 40)])
            .unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(30, 7) => -1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&maxes).unwrap(),
            &zset! { Pair::new(40, 7) => -1 },
            "{kind:?}"
        );
        // Inserting again after the group emptied brings it back.
        let out = graph.insert(&mut *store, &input, [(7, 3)]).unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(3, 7) => 1 },
            "{kind:?}"
        );
        let out = graph.remove(&mut *store, &input, [(7, 3), (8, 1)]).unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(3, 7) => -1, Pair::new(1, 8) => -1 },
            "{kind:?}"
        );
        if kind != crate::harness::Kind::Memory {
            for path in [
                "x.group/min",
                "x.group/min/current",
                "x.group#2/max",
                "x.group#2/max/current",
            ] {
                let table = store.table(path);
                let rows = store.scalar(&format!("SELECT COUNT(*) FROM {table}"));
                assert_eq!(rows, 0, "{kind:?}: {path} keeps rows of empty groups");
            }
        }
    }
}

/// Removing a group's minimum reads a handful of rows through the ordered
/// index, not the group: the same few rows for a group of 2,000 as of 20.
#[test]
fn deleting_the_minimum_reads_a_few_rows_whatever_the_group_size() {
    let g = Index::new("g", |r: &Row| r.0);
    let (graph, (input, mins)) = Graph::build(|q| {
        let (input, x) = q.input::<Row>("x")?;
        Ok((
            input,
            q.output("mins", x.transient().group_min(&g, |r| r.1))?,
        ))
    })
    .unwrap();
    for kind in sql_kinds() {
        let mut reads = Vec::new();
        for size in [20, 2000] {
            let mut store = kind.open(&graph).unwrap();
            graph
                .insert(&mut *store, &input, (0..size).map(|v| (1, v)))
                .unwrap();
            store.reset_stats();
            for v in 0..3 {
                let out = graph.remove(&mut *store, &input, [(1, v)]).unwrap();
                assert_eq!(
                    out.get(&mins).unwrap(),
                    &zset! { Pair::new(v, 1) => -1, Pair::new(v + 1, 1) => 1 },
                    "{kind:?}"
                );
            }
            reads.push(store.stats().rows_read);
        }
        assert_eq!(reads[0], reads[1], "{kind:?}: rows read per size {reads:?}");
        assert!(reads[1] <= 3 * 6, "{kind:?}: {} rows read", reads[1]);
    }
}

/// `group_min` keeps exactly the state of `group → min → flatten` spelled
/// out, as `group_reduce_flatten` does for `reduce`.
#[test]
fn group_min_keeps_the_state_of_the_spelled_out_form() {
    let build = |fused: bool| {
        Graph::build(move |q| {
            let (input, x) = q.input::<Row>("x")?;
            let by = Index::new("g", |r: &Row| r.0);
            let mins = if fused {
                x.group_min(&by, |r| r.1)
            } else {
                x.group(&by).min(|r| r.1).flatten()
            };
            Ok((input, q.output("out", mins)?))
        })
        .map_err(fail)
        .unwrap()
    };
    let (fused, _) = build(true);
    let (spelled, _) = build(false);
    assert_eq!(fused.fingerprint(), spelled.fingerprint());
}

/// Postgres: the read of a group's first rows after its minimum is deleted
/// goes through the table's primary key, not a scan and sort of the table
/// (it ordered by `NULLS FIRST`, which a primary key's index does not
/// declare, so the planner could not use it and the cost grew with the
/// group). Seen from inside the iteration's own transaction, whose
/// statistics count every scan of the table.
#[test]
fn deleting_the_minimum_on_postgres_scans_no_table() {
    if crate::harness::pg_url().is_none() {
        return;
    }
    let g = Index::new("g", |r: &Row| r.0);
    let (graph, (input, mins)) = Graph::build(|q| {
        let (input, x) = q.input::<Row>("x")?;
        Ok((
            input,
            q.output("mins", x.transient().group_min(&g, |r| r.1))?,
        ))
    })
    .unwrap();
    let mut opened = crate::harness::Kind::Postgres.open(&graph).unwrap();
    for chunk in (0..20_000).collect::<Vec<i64>>().chunks(5_000) {
        graph
            .insert(&mut *opened, &input, chunk.iter().map(|v| (1, *v)))
            .unwrap();
    }
    let table = opened.table("x.group/min");
    opened.sql(&format!("ANALYZE {table}"));
    let t = opened.next_time().unwrap();
    let store = opened.postgres().expect("a Postgres store");
    let url = crate::harness::pg_url().expect("configured");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        let tx = client.transaction().await.expect("begin");
        let changes = graph::Changes::new().remove(&input, [(1, 0)]);
        let out = store
            .iteration_in(&tx, &graph, changes, graph::Time::new(t, t - 1))
            .await
            .unwrap();
        assert_eq!(
            out.get(&mins).unwrap(),
            &zset! { Pair::new(0, 1) => -1, Pair::new(1, 1) => 1 }
        );
        let scans: i64 = tx
            .query_one(
                "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = $1",
                &[&table],
            )
            .await
            .expect("statistics")
            .get(0);
        assert_eq!(scans, 0, "sequential scans of {table}");
        tx.rollback().await.expect("rollback");
        drop(client);
        let _ = task.await;
    });
}
