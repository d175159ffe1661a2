//! State integrity when several handles (as several processes would) share
//! one store, when a time is applied twice, when a retry races or is cut
//! short, and when a pipelined iteration stops half-way: on every store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use graph::{Feed, FeedStore, Rewound, StateStore, Time};
use operators::prelude::*;
use store::StoreError;

use crate::harness::{Kind, kinds, sql_kinds};

type R = Result<(), GraphError>;

/// A running sum of every number inserted: one keyed state (the sum) and
/// its cache.
struct Summed {
    graph: Graph,
    input: Input<i64>,
    sum: Cache<i64>,
}

fn summed() -> Result<Summed, GraphError> {
    let (graph, (input, sum)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        let sum = x.reduce(0i64, |n: &i64| *n);
        Ok((input, q.cache("sum", sum, &[])?))
    })?;
    Ok(Summed { graph, input, sum })
}

fn sum_of(s: &Summed, store: &mut dyn StateStore) -> Result<ZSet<i64>, GraphError> {
    s.sum.zset(store)
}

fn is_already_applied(e: &GraphError) -> bool {
    matches!(e, GraphError::Store(StoreError::TimeAlreadyApplied { .. }))
}

/// Issue 21.1: two handles calling `graph.insert` at once must serialize;
/// Postgres ended with dozens of ±1 rows (both read the same old sum).
#[test]
fn concurrent_inserts_from_two_handles_serialize_on_every_store() -> R {
    const EACH: i64 = 60;
    let s = Arc::new(summed()?);
    for kind in kinds() {
        let first = kind.open(&s.graph)?;
        let handles = vec![first.twin(&s.graph)?, first.twin(&s.graph)?];
        let barrier = Arc::new(Barrier::new(handles.len()));
        let workers: Vec<_> = handles
            .into_iter()
            .map(|mut store| {
                let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
                std::thread::spawn(move || -> R {
                    barrier.wait();
                    for _ in 0..EACH {
                        s.graph.insert(&mut *store, &s.input, [1])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        let mut first = first;
        assert_eq!(
            sum_of(&s, &mut *first)?,
            zset! { 2 * EACH => 1 },
            "{kind:?}: the sum after {EACH} inserts of 1 from each of two handles"
        );
        assert_eq!(
            first.last_time()?,
            2 * EACH,
            "{kind:?}: one time per insert"
        );
    }
    Ok(())
}

/// Issue 21.1: two iterations given the same time (two processes each
/// counting times from the same start) never both apply, all or nothing
/// and pipelined, whether they overlap or follow each other.
#[test]
fn an_iteration_at_a_time_already_applied_is_refused_on_every_store() -> R {
    const ROUNDS: i64 = 15;
    let s = Arc::new(summed()?);
    for pipelined in [false, true] {
        for kind in kinds() {
            let first = kind.open(&s.graph)?;
            let handles = vec![first.twin(&s.graph)?, first.twin(&s.graph)?];
            let barrier = Arc::new(Barrier::new(handles.len()));
            let workers: Vec<_> = handles
                .into_iter()
                .map(|mut store| {
                    let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
                    std::thread::spawn(move || -> Result<i64, GraphError> {
                        let mut applied = 0;
                        for t in 1..=ROUNDS {
                            barrier.wait();
                            let mut time = Time::new(t, t - 1);
                            if pipelined {
                                time = time.pipelined();
                            }
                            let changes = Changes::new().insert(&s.input, [1]);
                            match s.graph.iteration_at(&mut *store, changes, time) {
                                Ok(_) => applied += 1,
                                Err(e) if is_already_applied(&e) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(applied)
                    })
                })
                .collect();
            let applied: i64 = workers
                .into_iter()
                .map(|w| w.join().expect("a worker panicked"))
                .sum::<Result<i64, _>>()?;
            let mut first = first;
            assert_eq!(
                applied, ROUNDS,
                "{kind:?} (pipelined: {pipelined}): one of the two iterations at each time applies"
            );
            assert_eq!(
                sum_of(&s, &mut *first)?,
                zset! { ROUNDS => 1 },
                "{kind:?} (pipelined: {pipelined})"
            );
            // And one after the other: the second is refused, naming the table.
            let mut again = first.twin(&s.graph)?;
            let err = s
                .graph
                .iteration_at(
                    &mut *again,
                    Changes::new().insert(&s.input, [1]),
                    Time::new(ROUNDS, ROUNDS - 1),
                )
                .expect_err("a time already applied");
            assert!(is_already_applied(&err), "{kind:?}: {err}");
            assert_eq!(sum_of(&s, &mut *first)?, zset! { ROUNDS => 1 });
        }
    }
    Ok(())
}

/// Issue 21.2: a retry forgets its record in the same transaction, so a
/// second retry (another process, or the same one after a crash between
/// the two steps) finds nothing to apply.
#[test]
fn a_failed_batch_is_retried_exactly_once_on_every_store() -> R {
    let s = summed()?;
    for kind in kinds() {
        let mut store = kind.open(&s.graph)?;
        s.graph.insert(&mut *store, &s.input, [10])?;
        let changes = Changes::new().insert(&s.input, [3]);
        let t = store.next_time()?;
        store.record_failure(Time::new(t, t - 1), 7, &changes.encode()?, "boom")?;
        let mut other = store.twin(&s.graph)?;
        // Both handles saw the record; the first retry applies it.
        let recorded = other.failed_batches()?;
        assert_eq!(recorded.len(), 1, "{kind:?}");
        let decoded = s.graph.decode_changes(&recorded[0].changes)?;
        s.graph.retry_failed(&mut *store, decoded, t, None)?;
        // The second finds it gone and writes nothing.
        let decoded = s.graph.decode_changes(&recorded[0].changes)?;
        let err = s
            .graph
            .retry_failed(&mut *other, decoded, t, None)
            .expect_err("the record is gone");
        assert!(
            matches!(err, GraphError::Store(StoreError::NoSuchFailure { input_time }) if input_time == t),
            "{kind:?}: {err}"
        );
        assert_eq!(sum_of(&s, &mut *store)?, zset! { 13 => 1 }, "{kind:?}");
        assert!(store.failed_batches()?.is_empty(), "{kind:?}");
        // `parallel::retry` from a handle that still believes in the record
        // passes over it.
        let report = parallel::retry(&s.graph, &mut *other)
            .map_err(|e| GraphError::Store(StoreError::backend("retrying", e)))?;
        assert!(report.retried.is_empty(), "{kind:?}");
        assert_eq!(sum_of(&s, &mut *store)?, zset! { 13 => 1 }, "{kind:?}");
    }
    Ok(())
}

/// Raw rows, their per-key sums, and those sums checked by a user function
/// that fails once when told to: a pipelined iteration that fails there has
/// committed the raw rows' table and the sums' keyed state, and not the
/// checked cache: what a crash half-way through leaves.
struct HalfWay {
    graph: Graph,
    input: Input<(i64, i64)>,
    raw: Cache<(i64, i64)>,
    checked: Cache<Pair<i64, i64>>,
    /// A feed of the raw rows (committed before the stop, as they are).
    fed: Feed<(i64, i64)>,
    fail: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped half-way on purpose")
    }
}

impl std::error::Error for Stop {}

fn half_way() -> Result<HalfWay, GraphError> {
    let fail = Arc::new(AtomicBool::new(false));
    let by_key = Index::new("k", |r: &(i64, i64)| r.0);
    let flag = Arc::clone(&fail);
    let (graph, (input, raw, fed, checked)) = Graph::build(|q| {
        let (input, rows) = q.input::<(i64, i64)>("rows")?;
        let raw = q.cache("raw", rows, &[])?;
        let fed = q.feed("fed", rows)?;
        let sums = rows.group_reduce_flatten(&by_key, 0i64, |r: &(i64, i64)| r.1);
        let checked = sums.try_map(move |p: &Pair<i64, i64>| {
            if flag.swap(false, Ordering::SeqCst) {
                Err(Stop)
            } else {
                Ok(*p)
            }
        });
        Ok((input, raw, fed, q.cache("checked", checked, &[])?))
    })?;
    Ok(HalfWay {
        graph,
        input,
        raw,
        checked,
        fed,
        fail,
    })
}

/// The sums the oracle expects of `rows`, as the checked cache holds them.
fn sums_of(rows: &[(i64, i64)]) -> ZSet<Pair<i64, i64>> {
    let mut by_key = std::collections::BTreeMap::new();
    for (k, v) in rows {
        *by_key.entry(*k).or_insert(0) += v;
    }
    by_key
        .into_iter()
        .map(|(k, v)| (Pair::new(v, k), 1))
        .collect()
}

/// Issue 21.3: after a pipelined iteration stopped half-way, feeding the
/// batch again at the same time is refused (it used to apply it again to
/// the tables that had it), and after `recover` it gives the result of an
/// ingest that never stopped; on the SQL stores, whose tables outlive the
/// process.
#[test]
fn a_pipelined_iteration_stopped_half_way_is_recovered_then_fed_again_on_every_sql_store() -> R {
    let h = half_way()?;
    for kind in sql_kinds() {
        let mut store = kind.open(&h.graph)?;
        let batches: Vec<Vec<(i64, i64)>> = vec![
            vec![(1, 5), (2, 7)],
            vec![(1, 1), (3, 2)],
            vec![(2, -7), (3, 4), (1, 10)],
        ];
        let mut fed = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            let t = i as i64 + 1;
            let time = Time::new(t, t - 1).pipelined();
            let changes = || Changes::new().insert(&h.input, batch.clone());
            if i == 1 {
                // Stop half-way: the raw rows and the sums are committed,
                // the checked cache is not.
                h.fail.store(true, Ordering::SeqCst);
                let err = h
                    .graph
                    .iteration_at(&mut *store, changes(), time)
                    .expect_err("stopped");
                assert!(err.to_string().contains("half-way"), "{kind:?}: {err}");
                assert_eq!(store.last_time()?, t - 1, "{kind:?}");
                // Feeding it again without recovering is refused...
                let again = h
                    .graph
                    .iteration_at(&mut *store, changes(), time)
                    .expect_err("already applied to some tables");
                assert!(is_already_applied(&again), "{kind:?}: {again}");
                // ...and after `recover` it applies once.
                let rewound = store.recover()?;
                assert!(!rewound.is_empty(), "{kind:?}: nothing rewound");
                assert!(
                    rewound
                        .iter()
                        .all(|r: &Rewound| r.from == t && r.to == t - 1),
                    "{kind:?}: {rewound:?}"
                );
                assert_eq!(
                    h.raw.zset(&mut *store)?.len(),
                    2,
                    "{kind:?}: rewound raw rows"
                );
                // The feed's write at t is undone too: no row of t is left
                // (not even one whose weights cancelled to zero).
                assert!(
                    rewound.iter().any(|r| r.table.contains("fed")),
                    "{kind:?}: the feed was not written before the stop: {rewound:?}"
                );
                assert!(fed_rows(&h, &store, kind, t - 1, t)?.is_empty(), "{kind:?}");
            }
            h.graph.iteration_at(&mut *store, changes(), time)?;
            fed.extend(batch.iter().copied());
            assert_eq!(
                h.checked.zset(&mut *store)?,
                sums_of(&fed),
                "{kind:?} after batch {i}"
            );
            let raw: ZSet<(i64, i64)> = fed.iter().map(|r| (*r, 1)).collect();
            assert_eq!(h.raw.zset(&mut *store)?, raw, "{kind:?} after batch {i}");
        }
        // Nothing is left to undo once every table has every iteration,
        // and the feed holds each batch once, at its time.
        assert!(store.recover()?.is_empty(), "{kind:?}");
        let rows = fed_rows(&h, &store, kind, 0, batches.len() as i64)?;
        let mut want: Vec<(i64, (i64, i64), i64)> = batches
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.iter().map(move |r| (i as i64 + 1, *r, 1)))
            .collect();
        want.sort();
        assert_eq!(rows, want, "{kind:?}: the feed's rows");
    }
    Ok(())
}

/// The rows of `h`'s feed with `after < time <= upto`, as `(time, row,
/// weight)` in order, read through another handle of `store`.
fn fed_rows(
    h: &HalfWay,
    store: &crate::harness::Opened,
    kind: Kind,
    after: i64,
    upto: i64,
) -> Result<Vec<(i64, (i64, i64), i64)>, GraphError> {
    let mut handle = crate::feed_harness::Opener::of(store, kind).open(&h.graph)?;
    let mut sink: Vec<graph::StoredRow<graph::FeedRow<(i64, i64)>>> = Vec::new();
    handle.feed_read(h.fed.spec(), after, upto, usize::MAX, &mut sink)?;
    let mut rows: Vec<_> = sink
        .into_iter()
        .map(|r| (r.value.time, r.value.row, r.weight))
        .collect();
    rows.sort();
    Ok(rows)
}

/// `recover` on a store whose tables are level changes nothing, and the
/// memory store (whose state does not outlive a crash) refuses only what
/// it cannot undo.
#[test]
fn recover_changes_nothing_when_tables_are_level_on_every_store() -> R {
    let s = summed()?;
    for kind in kinds() {
        let mut store = kind.open(&s.graph)?;
        s.graph.insert(&mut *store, &s.input, [4])?;
        let t = store.next_time()?;
        s.graph.iteration_at(
            &mut *store,
            Changes::new().insert(&s.input, [5]),
            Time::new(t, t - 1).pipelined(),
        )?;
        assert!(store.recover()?.is_empty(), "{kind:?}");
        assert_eq!(sum_of(&s, &mut *store)?, zset! { 9 => 1 }, "{kind:?}");
        assert!(matches!(kind, Kind::Memory | Kind::Sqlite | Kind::Postgres));
    }
    Ok(())
}
