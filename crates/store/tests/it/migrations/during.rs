//! A worker still running the old query while another process migrates the
//! store, and after: it gets `QueryChanged` at its next iteration (and when
//! it records a failure), never a silent write into the migrated tables; the
//! migrated store holds whole batches of the old query only, every state
//! consistent with its kept inputs, and the new query goes on from there.
//! On every store, all or nothing and pipelined.

use std::collections::BTreeMap;

use operators::prelude::*;
use store::StoreError;

use super::{Handle, Place, is_query_changed};
use crate::harness::kinds;

type R = Result<(), GraphError>;

type Item = (String, i64);

struct Query {
    graph: Graph,
    items: Input<Item>,
    sums: Cache<Pair<i64, String>>,
    /// The new version's cache of every item (computed by the migration
    /// from the kept input, so it shows what the input holds).
    all: Option<Cache<Item>>,
}

/// `items → sum of v by k → cache "sums"`; `new` adds a cache of the items.
fn query(new: bool) -> Result<Query, GraphError> {
    let by_key = Index::new("k", |i: &Item| i.0.clone());
    let (graph, (items, sums, all)) = Graph::build(|q| {
        let (input, items) = q.input::<Item>("items")?;
        let sums =
            items
                .map(|i: &Item| i.clone())
                .group_reduce_flatten(&by_key, 0i64, |i: &Item| i.1);
        let sums = q.cache("sums", sums, &[])?;
        let all = if new {
            Some(q.cache("all_items", items, &[])?)
        } else {
            None
        };
        Ok((input, sums, all))
    })?;
    Ok(Query {
        graph,
        items,
        sums,
        all,
    })
}

/// Batch `i`: a row for one of three keys, and a row of its own (so that
/// the items show which batches went in).
fn batch(i: i64) -> Vec<Item> {
    vec![(format!("k{}", i % 3), i), (format!("u{i}"), 1)]
}

fn changes(q: &Query, i: i64) -> Changes {
    Changes::new().insert(&q.items, batch(i))
}

/// The oracle: the per-key sums of batches `1..=n`.
fn sums(n: i64) -> ZSet<Pair<i64, String>> {
    let mut by_key = BTreeMap::new();
    for (k, v) in (1..=n).flat_map(batch) {
        *by_key.entry(k).or_insert(0) += v;
    }
    by_key
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (Pair::new(v, k), 1))
        .collect()
}

fn items(n: i64) -> ZSet<Item> {
    (1..=n).flat_map(batch).map(|i| (i, 1)).collect()
}

fn time(t: i64, pipelined: bool) -> Time {
    let time = Time::new(t, t - 1);
    if pipelined { time.pipelined() } else { time }
}

fn ingest(
    q: &Query,
    store: &mut Handle,
    batches: std::ops::RangeInclusive<i64>,
    pipelined: bool,
) -> R {
    for i in batches {
        q.graph
            .iteration_at(&mut **store, changes(q, i), time(i, pipelined))?;
    }
    Ok(())
}

/// The store after batches `1..=n`: the caches are the oracle's and every
/// state is what its kept inputs give.
fn check(q: &Query, store: &mut Handle, n: i64, what: &str) -> R {
    assert_eq!(q.sums.zset(&mut **store)?, sums(n), "{what}: sums");
    if let Some(all) = &q.all {
        assert_eq!(all.zset(&mut **store)?, items(n), "{what}: all_items");
    }
    let report = store.verify()?;
    let drifted: Vec<&str> = report.drifted().map(|s| s.path.as_str()).collect();
    assert!(
        drifted.is_empty(),
        "{what}: drifted states {drifted:?}\n{report}"
    );
    Ok(())
}

#[test]
fn a_worker_with_the_old_query_after_a_migration_gets_the_typed_error_and_writes_nothing() -> R {
    for kind in kinds() {
        for pipelined in [false, true] {
            let what = format!("{kind:?}, pipelined {pipelined}");
            let (v1, v2) = (query(false)?, query(true)?);
            let place = Place::new(kind, &v1.graph)?;
            // Two processes of the old query.
            let mut old = place.open(&v1.graph)?;
            let mut other = place.open(&v1.graph)?;
            ingest(&v1, &mut old, 1..=3, pipelined)?;
            let mut new = place.migrate(&v2.graph)?.handle;
            let written = new.rows_written();
            for handle in [&mut old, &mut other] {
                let err = v1
                    .graph
                    .iteration_at(&mut **handle, changes(&v1, 4), time(4, pipelined))
                    .map(|_| ())
                    .expect_err(&format!("{what}: the store was migrated"));
                assert!(is_query_changed(&err), "{what}: {err}");
                // Nor is the batch's failure recorded (it would move the
                // migrated tables' times).
                let err = handle
                    .record_failure(time(4, pipelined), 4, &[], "failed")
                    .map(|_| ())
                    .expect_err(&format!("{what}: the store was migrated"));
                assert!(
                    matches!(err, StoreError::QueryChanged { .. }),
                    "{what}: {err}"
                );
                // And reading for an iteration is refused too.
                let err = handle
                    .next_time()
                    .map(|_| ())
                    .expect_err(&format!("{what}: the store was migrated"));
                assert!(
                    matches!(err, StoreError::QueryChanged { .. }),
                    "{what}: {err}"
                );
            }
            assert_eq!(new.rows_written(), written, "{what}: rows written since");
            assert_eq!(new.last_time()?, 3, "{what}: the store's time moved");
            check(&v2, &mut new, 3, &what)?;
            // The new query goes on from there.
            ingest(&v2, &mut new, 4..=6, pipelined)?;
            check(&v2, &mut new, 6, &what)?;
            // Opening the store with the old query is refused too.
            let err = place.open(&v1.graph).map(|_| ()).expect_err("migrated");
            assert!(
                is_query_changed(&err) || kind == crate::harness::Kind::Memory,
                "{what}: {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_worker_with_the_old_query_during_a_migration_stops_with_the_typed_error_at_a_whole_batch() -> R
{
    for kind in kinds() {
        for pipelined in [false, true] {
            let what = format!("{kind:?}, pipelined {pipelined}");
            let (v1, v2) = (query(false)?, query(true)?);
            let place = Place::new(kind, &v1.graph)?;
            let mut old = place.open(&v1.graph)?;
            let mut watch = place.open(&v1.graph)?;
            let (migrated, ingested) = std::thread::scope(|s| {
                let v1 = &v1;
                let old = &mut old;
                // Runs until the migration stops it (a bound, not a goal).
                let worker = s.spawn(move || {
                    parallel::Ingest::new(&v1.graph)
                        .pipelined(pipelined)
                        .run_on(&mut **old, (1..=1_000_000).map(|i| changes(v1, i)))
                });
                // A few batches in, the other process migrates.
                while watch.last_time().unwrap_or(0) < 5 && !worker.is_finished() {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let migrated = place.migrate(&v2.graph);
                (migrated, worker.join().expect("the worker panicked"))
            });
            let migrated = migrated?;
            match ingested {
                Err(parallel::ParallelError::Graph(e)) if is_query_changed(&e) => {}
                Err(e) => panic!("{what}: the old worker failed otherwise: {e}"),
                Ok(report) => panic!(
                    "{what}: the old worker ran {} batches past the migration",
                    report.times.len()
                ),
            }
            let mut new = migrated.handle;
            // Whole batches of the old query only: its items are batches
            // 1..=n for some n, and every state agrees with them.
            let all = v2.all.as_ref().expect("the new query caches the items");
            let held = all.zset(&mut *new)?;
            let n = held.iter().filter(|(i, _)| i.0.starts_with('u')).count() as i64;
            assert!(n >= 5, "{what}: {n} batches before the migration");
            assert_eq!(held, items(n), "{what}: a partial batch");
            check(&v2, &mut new, n, &what)?;
            // Nothing of the old query's arrives later.
            std::thread::sleep(std::time::Duration::from_millis(50));
            check(&v2, &mut new, n, &what)?;
            ingest(&v2, &mut new, n + 1..=n + 3, pipelined)?;
            check(&v2, &mut new, n + 3, &what)?;
        }
    }
    Ok(())
}
