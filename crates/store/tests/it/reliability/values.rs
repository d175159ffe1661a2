//! Bad and extreme input on every store: a million rows in one iteration, empty
//! changes, rows removed before they were inserted, NaN, `-0.0` and `None`,
//! weights that overflow.

use std::time::{Duration, Instant};

use graph::StateKind;
use operators::prelude::*;
use store::StoreError;

use super::codecs::{fuzz_query, reading};
use super::damaged::words;
use super::{R, Target, names_table, no_panic};
use crate::harness::{Kind, kinds, sql_kinds};

/// Every row of every state table given a weight of `i64::MAX` or
/// `i64::MIN` (only damage writes one: the engine's own sums fail first),
/// then an iteration that reads them all: an error or a result, never a
/// panic.
///
/// Such weights are valid `i64`s, so a store cannot call them corrupt; the
/// arithmetic that meets them (`distinct` adding, `first_n` negating, the
/// join multiplying, the stores summing) reports the overflow instead:
/// `GraphError::WeightOverflow` naming the operator, or a store error
/// naming the table, and the iteration rolls back.
#[test]
fn extreme_stored_weights_are_errors_not_panics() -> R {
    let mut problems = Vec::new();
    let (graph, q) = fuzz_query()?;
    for kind in sql_kinds() {
        for spec in graph.states() {
            for weight in [i64::MAX, i64::MIN] {
                let mut store = Target::open(kind, &graph)?;
                graph.iteration(
                    &mut *store,
                    Changes::new()
                        .insert(&q.readings, [reading(1, "a", 1.5), reading(2, "b", 2.0)])
                        .insert(&q.meters, [Pair::new("a".into(), 10)])
                        .insert(&q.edges, [Pair::new(1, 2), Pair::new(2, 1)]),
                )?;
                let table = store.table(spec.path().as_str());
                store.execute(&format!("UPDATE {table} SET c = {weight}"));
                let changes = Changes::new()
                    .insert(&q.readings, [reading(3, "a", 3.0)])
                    .remove(&q.readings, [reading(2, "b", 2.0)])
                    .insert(&q.meters, [Pair::new("b".into(), 20)])
                    .insert(&q.edges, [Pair::new(3, 1)]);
                match no_panic("an iteration", || graph.iteration(&mut *store, changes)) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if names_table(&e, &table) => {}
                    Ok(Err(GraphError::WeightOverflow { .. })) => {}
                    Ok(Err(GraphError::RecursionLimit { .. }))
                        if spec.kind() == StateKind::Nested => {}
                    Ok(Err(e)) => problems.push(format!("{kind:?} {table} c = {weight}: {e:?}")),
                    Err(p) => problems.push(format!("{kind:?} {table} c = {weight}: {p}")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// One insert of a million rows into a count, a sum and a small cache, on
/// every store; then the same million (and one) removed in one batch.
/// The iteration keeps a million rows in memory and writes a handful.
#[test]
fn a_million_rows_in_one_insert_on_every_store() -> R {
    const ROWS: i64 = 1_000_000;
    let (graph, (input, count, sum, sample)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        Ok((
            input,
            q.output("count", x.count())?,
            q.output("sum", x.reduce(0i64, |n| *n))?,
            q.cache("sample", x.filter(|n| n % 100_000 == 0), &[])?,
        ))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let start = Instant::now();
        let out = graph.insert(&mut *store, &input, 0..ROWS)?;
        let inserted = start.elapsed();
        assert_eq!(out.get(&count)?, &zset! { ROWS => 1 }, "{kind:?}");
        assert_eq!(out.get(&sum)?, &zset! { ROWS * (ROWS - 1) / 2 => 1 });
        store = store.reopen(&graph)?;
        assert_eq!(sample.zset(&mut *store)?.len(), 10, "{kind:?}");
        let out = graph.insert(&mut *store, &input, [ROWS])?;
        assert_eq!(out.get(&count)?, &zset! { ROWS => -1, ROWS + 1 => 1 });
        let start = Instant::now();
        let out = graph.remove(&mut *store, &input, 0..=ROWS)?;
        let removed = start.elapsed();
        // At the root an aggregate always has a value: 0 for no rows.
        assert_eq!(
            out.get(&count)?,
            &zset! { ROWS + 1 => -1, 0 => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sum)?,
            &zset! { ROWS * (ROWS + 1) / 2 => -1, 0 => 1 }
        );
        assert!(sample.zset(&mut *store)?.is_empty(), "{kind:?}");
        eprintln!("{kind:?}: 1,000,000 rows inserted in {inserted:.2?}, removed in {removed:.2?}");
        // Generous (a debug build on a loaded 2-core machine), but a
        // per-row round trip to the database or quadratic work would not
        // fit.
        assert!(
            inserted + removed < Duration::from_secs(120),
            "{kind:?}: {inserted:?} + {removed:?}"
        );
    }
    Ok(())
}

/// No changes, an input with no rows, an empty Z-set, and a row inserted
/// and removed in the same batch: empty outputs, no state written, and the
/// state (read now and after a re-open) as before.
#[test]
fn empty_changes_change_nothing_on_every_store() -> R {
    let (graph, (input, count, distinct, cache)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((
            input,
            q.output("count", x.count())?,
            q.output("distinct", x.map(|n| n % 2).distinct())?,
            q.cache("xs", x, &[])?,
        ))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1, 2, 3])?;
        let before = cache.zset(&mut *store)?;
        let empties = [
            Changes::new(),
            Changes::new().insert(&input, Vec::<i64>::new()),
            Changes::new().zset(&input, ZSet::new()),
            Changes::new().zset(
                &input,
                zset! { 4 => 1, 5 => -1 } + zset! { 4 => -1, 5 => 1 },
            ),
        ];
        for (i, changes) in empties.into_iter().enumerate() {
            store.reset_stats();
            let out = graph.iteration(&mut *store, changes)?;
            assert!(out.get(&count)?.is_empty(), "{kind:?} #{i}");
            assert!(out.get(&distinct)?.is_empty(), "{kind:?} #{i}");
            assert_eq!(store.stats().rows_written, 0, "{kind:?} #{i}");
            assert_eq!(cache.zset(&mut *store)?, before, "{kind:?} #{i}");
        }
        store = store.reopen(&graph)?;
        assert_eq!(cache.zset(&mut *store)?, before, "{kind:?}");
        let out = graph.insert(&mut *store, &input, [4])?;
        assert_eq!(out.get(&count)?, &zset! { 3 => -1, 4 => 1 }, "{kind:?}");
        assert!(out.get(&distinct)?.is_empty(), "{kind:?}");
    }
    Ok(())
}

/// Removing rows that were never inserted leaves negative weights, which
/// every store keeps as they are: through a re-open, through an index, as
/// the SQL weight column; and a later insert cancels them (no zero rows).
#[test]
fn rows_removed_before_they_were_inserted_keep_negative_weights_in_every_store() -> R {
    let by_len = Index::new("len", |s: &String| s.len() as i64);
    let (graph, (input, cache, count)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let words = words.transient();
        Ok((
            input,
            q.cache("word_cache", words, &[&by_len])?,
            q.output("count", words.count())?,
        ))
    })?;
    let s = |x: &str| x.to_string();
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let out = graph.remove(&mut *store, &input, [s("ghost")])?;
        assert_eq!(out.get(&count)?, &zset! { -1 => 1 }, "{kind:?}");
        let out = graph.iteration(
            &mut *store,
            Changes::new().zset(&input, zset! { s("phantom") => -3, s("real") => 2 }),
        )?;
        assert_eq!(out.get(&count)?, &zset! { -1 => -1, -2 => 1 }, "{kind:?}");
        let expected = zset! { s("ghost") => -1, s("phantom") => -3, s("real") => 2 };
        assert_eq!(cache.zset(&mut *store)?, expected, "{kind:?}");
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.zset(&mut *store)?,
            expected,
            "{kind:?} after a re-open"
        );
        assert_eq!(
            cache.iter_by_index(&mut *store, &by_len, Some(&[5, 7]))?,
            [(5, s("ghost"), -1), (7, s("phantom"), -3)],
            "{kind:?}"
        );
        if store.is_sql() {
            let table = store.table("word_cache");
            let weights = |store: &Target| {
                (
                    store.scalar(&format!("SELECT count(*) FROM {table}")),
                    store.scalar(&format!("SELECT CAST(min(c) AS BIGINT) FROM {table}")),
                    store.scalar(&format!("SELECT CAST(sum(c) AS BIGINT) FROM {table}")),
                )
            };
            assert_eq!(weights(&store), (3, -3, -2), "{kind:?}");
            // Inserting the ghost cancels it: no row of weight 0 is kept.
            let out = graph.insert(&mut *store, &input, [s("ghost")])?;
            assert_eq!(out.get(&count)?, &zset! { -2 => -1, -1 => 1 }, "{kind:?}");
            assert_eq!(weights(&store), (2, -3, -1), "{kind:?}");
        } else {
            graph.insert(&mut *store, &input, [s("ghost")])?;
        }
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.zset(&mut *store)?,
            zset! { s("phantom") => -3, s("real") => 2 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// `(name, value)` with a float in the data, not in a key.
pub(super) type Measure = (String, F64);

/// NaN and `-0.0` as data: every NaN is one value (equal to itself), `-0.0`
/// is `0.0`, in caches, distinct, sums and joins on a float key, on every
/// store and after a re-open; and every store gives the same results.
#[test]
fn nan_and_negative_zero_in_data_are_one_value_each_in_every_store() -> R {
    let by_name = Index::new("name", |m: &Measure| m.0.clone());
    let by_value = Index::new("value", |m: &Measure| m.1);
    let by_key = Index::new("key", |l: &Pair<F64, String>| l.left);
    let (graph, (measures, labels, cache, distinct, sums, joined)) = Graph::build(|q| {
        let (measures, m) = q.input::<Measure>("measures")?;
        let (labels, l) = q.input::<Pair<F64, String>>("labels")?;
        Ok((
            measures,
            labels,
            q.cache("measure_cache", m, &[&by_name])?,
            q.output("distinct", m.map(|m| m.1).distinct())?,
            q.output(
                "sums",
                m.group_reduce_flatten(&by_name, F64::new(0.0), |m| m.1),
            )?,
            q.output("joined", m.join(l, &by_value, &by_key))?,
        ))
    })?;
    let f = F64::new;
    let m = |name: &str, v: f64| (name.to_string(), f(v));
    let nan_with_payload = f64::from_bits(0x7ff8_0000_0000_0001);
    let mut results = Vec::new();
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let mut seen = Vec::new();
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .insert(&measures, [m("z", -0.0), m("n", f64::NAN)])
                .insert(
                    &labels,
                    [
                        Pair::new(f(0.0), "zero".into()),
                        Pair::new(f(-f64::NAN), "nan".into()),
                    ],
                ),
        )?;
        assert_eq!(
            out.get(&distinct)?,
            &zset! { f(0.0) => 1, f(f64::NAN) => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                Pair::new(m("z", 0.0), Pair::new(f(-0.0), "zero".into())) => 1,
                Pair::new(m("n", nan_with_payload), Pair::new(f(f64::NAN), "nan".into())) => 1,
            },
            "{kind:?}: NaN joins NaN, -0.0 joins 0.0"
        );
        assert_eq!(
            out.get(&sums)?,
            &zset! { Pair::new(f(0.0), "z".to_string()) => 1, Pair::new(f(f64::NAN), "n".to_string()) => 1 },
            "{kind:?}"
        );
        seen.push(format!("{out:?}"));
        store = store.reopen(&graph)?;
        // The same values spelled differently: one value each.
        let out = graph.iteration(
            &mut *store,
            Changes::new().zset(
                &measures,
                zset! { m("z", 0.0) => 1, m("n", -f64::NAN) => 1, m("n", nan_with_payload) => 1 },
            ),
        )?;
        assert!(out.get(&distinct)?.is_empty(), "{kind:?}");
        // NaN + NaN is NaN and 0.0 + 0.0 is 0.0: no aggregate changed.
        assert!(out.get(&sums)?.is_empty(), "{kind:?}: {:?}", out.get(&sums));
        seen.push(format!("{out:?}"));
        let out = graph.remove(&mut *store, &measures, [m("z", -0.0)])?;
        seen.push(format!("{out:?}"));
        store = store.reopen(&graph)?;
        let cached = cache.zset(&mut *store)?;
        assert_eq!(
            cached,
            zset! { m("z", 0.0) => 1, m("n", f64::NAN) => 3 },
            "{kind:?}"
        );
        for ((name, value), _) in cached.iter() {
            let v = value.get();
            assert!(
                v.is_nan() || v.to_bits() == 0,
                "{kind:?}: {name} read back as {v:?}"
            );
        }
        let n = cache.iter_by_index(&mut *store, &by_name, Some(&["n".to_string()]))?;
        assert_eq!(n, [("n".to_string(), m("n", f64::NAN), 3)], "{kind:?}");
        seen.push(format!("{cached:?}"));
        results.push((kind, seen));
    }
    for (kind, seen) in &results[1..] {
        assert_eq!(
            seen, &results[0].1,
            "{kind:?} differs from {:?}",
            results[0].0
        );
    }
    Ok(())
}

pub(super) type Member = (i64, Option<String>);
pub(super) type Team = (Option<String>, String);

/// `None` keys join `None` keys and form their own group, distinct from
/// `Some("")`, in every store (a SQL `NULL` equals nothing, so a store that
/// compared key columns with `=` would lose them), through a re-open.
#[test]
fn none_keys_join_and_group_like_any_other_value_in_every_store() -> R {
    let member_team = Index::new("team", |m: &Member| m.1.clone());
    let team_key = Index::new("team", |t: &Team| t.0.clone());
    let (graph, (members, teams, joined, sizes, cache)) = Graph::build(|q| {
        let (members, m) = q.input::<Member>("members")?;
        let (teams, t) = q.input::<Team>("teams")?;
        Ok((
            members,
            teams,
            q.output("joined", m.join(t, &member_team, &team_key))?,
            q.output("sizes", m.group_reduce_flatten(&member_team, 0i64, |_| 1))?,
            q.cache("member_cache", m, &[&member_team])?,
        ))
    })?;
    let some = |s: &str| Some(s.to_string());
    let pair = |m: Member, t: Team| Pair::new(m, t);
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .insert(&members, [(1, None), (2, None), (3, some("a"))])
                .insert(&teams, [(None, "nobody".into()), (some("a"), "A".into())]),
        )?;
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                pair((1, None), (None, "nobody".into())) => 1,
                pair((2, None), (None, "nobody".into())) => 1,
                pair((3, some("a")), (some("a"), "A".into())) => 1,
            },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(2, None) => 1, Pair::new(1, some("a")) => 1 },
            "{kind:?}"
        );
        store = store.reopen(&graph)?;
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .remove(&members, [(1, None)])
                .insert(&members, [(4, some(""))])
                .remove(&teams, [(None, "nobody".into())])
                .insert(&teams, [(some(""), "empty".into())]),
        )?;
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                pair((1, None), (None, "nobody".into())) => -1,
                pair((2, None), (None, "nobody".into())) => -1,
                pair((4, some("")), (some(""), "empty".into())) => 1,
            },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(2, None) => -1, Pair::new(1, None) => 1, Pair::new(1, some("")) => 1 },
            "{kind:?}"
        );
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.iter_by_index(&mut *store, &member_team, Some(&[None]))?,
            [(None, (2, None), 1)],
            "{kind:?}"
        );
        assert_eq!(
            cache.iter_by_index(&mut *store, &member_team, Some(&[some("")]))?,
            [(some(""), (4, some("")), 1)],
            "{kind:?}"
        );
        // The None group goes when its last member does.
        let out = graph.remove(&mut *store, &members, [(2, None)])?;
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(1, None) => -1 },
            "{kind:?}"
        );
        assert!(out.get(&joined)?.is_empty(), "{kind:?}");
    }
    Ok(())
}

/// Weights near `i64::MAX` given by the caller: adding to them must be an
/// error (the iteration rolled back), not a panic and not a wrapped weight,
/// on every store.
///
/// (`distinct` reports `GraphError::WeightOverflow`; the stores' own sums
/// report a store error: the database's integer overflow, or
/// `StoreError::WeightOverflow`.)
#[test]
fn weights_that_overflow_are_errors_on_every_store() -> R {
    let w = words()?;
    let mut problems = Vec::new();
    for kind in kinds() {
        let mut store = kind.open(&w.graph)?;
        let huge = zset! { "w".to_string() => i64::MAX };
        w.graph
            .iteration(&mut *store, Changes::new().zset(&w.input, huge.clone()))?;
        let outcome = no_panic("adding 1 to i64::MAX", || {
            w.graph
                .insert(&mut *store, &w.input, ["w".to_string()])
                .map(drop)
        });
        match outcome {
            Err(p) => problems.push(format!("{kind:?}: {p}")),
            Ok(Ok(())) => problems.push(format!(
                "{kind:?}: accepted, the cache holds {:?}",
                w.cache.zset(&mut *store)
            )),
            Ok(Err(e)) => {
                if !matches!(e, GraphError::Store(_) | GraphError::WeightOverflow { .. }) {
                    problems.push(format!("{kind:?}: unexpected {e:?}"));
                }
                // Rolled back: the weight is still i64::MAX.
                match no_panic("reading", || w.cache.zset(&mut *store)) {
                    Ok(Ok(z)) if z == huge => {}
                    other => problems.push(format!("{kind:?}: after the error, {other:?}")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// Names cached twice: as they are, and doubled (`"ab"` → `"abab"`): two
/// tables every iteration writes together.
pub(super) fn names_and_doubled()
-> Result<(Graph, (Input<String>, Cache<String>, Cache<String>)), GraphError> {
    Graph::build(|q| {
        let (input, x) = q.input::<String>("names")?;
        let x = x.transient();
        Ok((
            input,
            q.cache("names_cache", x, &[])?,
            q.cache("doubled_cache", x.map(|s| format!("{s}{s}")), &[])?,
        ))
    })
}

/// A weight that only the store itself sums (a cache, no operator reads
/// it): the store refuses the change, and with several tables written in
/// one iteration none of them changes. SQLite, which would silently turn
/// the sum into a float, reports `StoreError::WeightOverflow` naming the
/// table.
#[test]
fn a_stored_sum_that_overflows_changes_no_table_on_every_store() -> R {
    let (graph, (input, cache, doubled)) = names_and_doubled()?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let huge = zset! { "x".to_string() => i64::MAX };
        graph.iteration(&mut *store, Changes::new().zset(&input, huge.clone()))?;
        let outcome = no_panic("adding 1 to a stored i64::MAX", || {
            graph.insert(&mut *store, &input, ["x".to_string(), "y".to_string()])
        })
        .unwrap_or_else(|p| panic!("{kind:?}: {p}"));
        match outcome {
            Err(GraphError::Store(StoreError::WeightOverflow { table, .. }))
                if kind == Kind::Sqlite =>
            {
                assert!(table.ends_with("_cache"), "{kind:?}: {table}");
            }
            Err(GraphError::Store(e)) if kind != Kind::Sqlite => assert!(
                e.to_string().contains("cache") || e.to_string().contains("overflow"),
                "{kind:?}: {e}"
            ),
            other => panic!("{kind:?}: expected a store error, got {other:?}"),
        }
        assert_eq!(cache.zset(&mut *store)?, huge, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => i64::MAX },
            "{kind:?}"
        );
        // Not wedged: the next change is applied.
        graph.insert(&mut *store, &input, ["y".to_string()])?;
        assert_eq!(
            cache.zset(&mut *store)?.get(&"y".to_string()),
            1,
            "{kind:?}"
        );
    }
    Ok(())
}
