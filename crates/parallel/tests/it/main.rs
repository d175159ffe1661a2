//! The parallel crate's one integration-test binary: N workers against one
//! store give the serial result, on every store, in both commit modes; a
//! failed batch never wedges the rest and retries to the serial result;
//! waits time out, and wake up promptly.

// The package is `stepping-parallel`; its code and docs call it `parallel`.
extern crate stepping_parallel as parallel;

mod abandoned;
mod ergonomics;
mod stores;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::meter_reads::{self, Workload};
use graph::{Changes, Graph, GraphError, Output, StateStore, StoreError, Time};
use operators::prelude::*;
use parallel::{Counter, Ingest, Progress};

use crate::stores::{Handle, Shared, kinds};

type R = Result<(), Box<dyn std::error::Error>>;

/// Deterministic batch sizes in `1..=max` (a small LCG; no RNG state to seed).
fn sizes(total: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut x) = (total, seed);
    while left > 0 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = 1 + (x >> 33) as usize % max;
        out.push(n.min(left));
        left -= n.min(left);
    }
    out
}

/// The sum of every batch's output change.
fn total<T: Data>(
    report: &parallel::Report,
    output: &Output<ZSet<T>>,
) -> Result<ZSet<T>, GraphError> {
    let mut sum = ZSet::new();
    for o in report.outputs.iter().flatten() {
        sum += o.get(output)?;
    }
    Ok(sum)
}

fn meter_batches(q: &meter_reads::MeterReads, w: &Workload, seed: u64) -> Vec<Changes> {
    let mut batches = vec![
        Changes::new()
            .insert(&q.users, w.all_users())
            .insert(&q.meters, w.all_meters()),
    ];
    let mut j = 0u64;
    for n in sizes(w.reads as usize, 150, seed) {
        batches.push(Changes::new().insert(&q.reads, w.reads(j..j + n as u64)));
        j += n as u64;
    }
    batches
}

#[test]
fn n_workers_give_the_serial_result_for_meter_reads() -> R {
    let w = Workload {
        users: 40,
        reads: 1500,
    };
    let (graph, q) = meter_reads::build()?;
    let expected = w.expected_daily();
    for kind in kinds() {
        let serial = {
            let shared = Shared::new(kind, &graph)?;
            let batches = meter_batches(&q, &w, 7);
            let report = Ingest::new(&graph).progress(Progress::Hidden).run(
                |_| shared.open(&graph),
                batches,
                &mut Counter::starting_at(1),
            )?;
            let mut store = shared.open(&graph)?;
            (total(&report, &q.daily)?, q.cache.zset(&mut store)?)
        };
        assert_eq!(serial.1.len(), expected.len(), "{kind:?}");
        w.check(&serial.1)?;
        for pipelined in [false, true] {
            for workers in [2, 4, 8] {
                let shared = Shared::new(kind, &graph)?;
                let batches = meter_batches(&q, &w, 7 + workers as u64);
                let report = Ingest::new(&graph)
                    .workers(workers)
                    .pipelined(pipelined)
                    .progress(Progress::Hidden)
                    .run(
                        |_| shared.open(&graph),
                        batches,
                        &mut Counter::starting_at(1),
                    )?;
                assert!(
                    report.failures.is_empty(),
                    "{kind:?}: {:?}",
                    report.failures
                );
                let mut store = shared.open(&graph)?;
                let cache = q.cache.zset(&mut store)?;
                let what = format!("{kind:?}, {workers} workers, pipelined {pipelined}");
                w.check(&cache).map_err(|e| format!("{what}: {e}"))?;
                // Float sums depend on the order of additions; compare as sets
                // of (user, meter, date) and by the check above.
                let keys = |z: &ZSet<meter_reads::DailyUsage>| {
                    let mut k: Vec<_> = z
                        .iter()
                        .map(|(d, w)| (d.user_id, d.meter_id, d.date, w))
                        .collect();
                    k.sort();
                    k
                };
                assert_eq!(
                    keys(&total(&report, &q.daily)?),
                    keys(&serial.0),
                    "{what}: the outputs add up differently"
                );
                assert_eq!(keys(&cache), keys(&serial.1), "{what}");
            }
        }
    }
    Ok(())
}

/// The closure query's handles: edges in; paths and distinct sources out.
type ClosureHandles = (
    graph::Input<(i64, i64)>,
    Output<ZSet<Pair<i64, i64>>>,
    Output<ZSet<i64>>,
);

/// Edges in, the transitive closure and the distinct set of sources out.
fn closure_query() -> Result<(Graph, ClosureHandles), GraphError> {
    Graph::build(|q| {
        let (input, edges) = q.input::<(i64, i64)>("edges")?;
        let paths = edges.map(|(a, b)| Pair::new(*a, *b)).transitive_closure()?;
        let sources = edges.map(|(a, _)| *a).distinct();
        Ok((
            input,
            q.output("paths", paths)?,
            q.output("sources", sources)?,
        ))
    })
}

#[test]
fn n_workers_give_the_serial_result_for_distinct_and_recursion() -> R {
    let (graph, (input, paths, sources)) = closure_query()?;
    // Toggle edges of a small graph: inserts and deletions, cycles included.
    let mut present = std::collections::BTreeSet::new();
    let mut batches_spec = Vec::new();
    let mut x = 12345u64;
    for size in sizes(120, 6, 3) {
        let mut batch = std::collections::BTreeMap::new();
        for _ in 0..size {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let e = ((x >> 33) as i64 % 6, (x >> 40) as i64 % 6);
            let w = if present.remove(&e) {
                -1
            } else {
                present.insert(e);
                1
            };
            *batch.entry(e).or_insert(0i64) += w;
        }
        batches_spec.push(
            batch
                .into_iter()
                .filter(|(_, w)| *w != 0)
                .collect::<ZSet<(i64, i64)>>(),
        );
    }
    let batches = || {
        batches_spec
            .iter()
            .map(|z| Changes::new().zset(&input, z.clone()))
            .collect::<Vec<_>>()
    };
    for kind in kinds() {
        let shared = Shared::new(kind, &graph)?;
        let serial = Ingest::new(&graph).progress(Progress::Hidden).run(
            |_| shared.open(&graph),
            batches(),
            &mut Counter::starting_at(1),
        )?;
        for pipelined in [false, true] {
            for workers in [2, 4, 8] {
                let shared = Shared::new(kind, &graph)?;
                let report = Ingest::new(&graph)
                    .workers(workers)
                    .pipelined(pipelined)
                    .progress(Progress::Hidden)
                    .run(
                        |_| shared.open(&graph),
                        batches(),
                        &mut Counter::starting_at(1),
                    )?;
                let what = format!("{kind:?}, {workers} workers, pipelined {pipelined}");
                assert_eq!(total(&report, &paths)?, total(&serial, &paths)?, "{what}");
                assert_eq!(
                    total(&report, &sources)?,
                    total(&serial, &sources)?,
                    "{what}"
                );
                // Batch by batch too: each output is the serial one.
                for (i, (a, b)) in report.outputs.iter().zip(&serial.outputs).enumerate() {
                    let (a, b) = (a.as_ref().ok_or("missing")?, b.as_ref().ok_or("missing")?);
                    assert_eq!(a.get(&paths)?, b.get(&paths)?, "{what}, batch {i}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn a_failing_batch_is_recorded_and_later_batches_complete() -> R {
    for kind in kinds() {
        for pipelined in [false, true] {
            let failing = Arc::new(AtomicBool::new(true));
            let flag = Arc::clone(&failing);
            let (graph, (input, total_out, cache)) = Graph::build(move |q| {
                let (input, n) = q.input::<i64>("n")?;
                // Fails on 13 while the flag is up: a transient failure.
                let checked = n.try_map(move |x| {
                    if *x == 13 && flag.load(Ordering::SeqCst) {
                        Err(std::fmt::Error)
                    } else {
                        Ok(*x)
                    }
                });
                let cache = q.cache("numbers", checked, &[])?;
                Ok((
                    input,
                    q.output("total", checked.reduce(0i64, |x| *x))?,
                    cache,
                ))
            })?;
            let shared = Shared::new(kind, &graph)?;
            let batches: Vec<Changes> = (0..20)
                .map(|i| Changes::new().insert(&input, [i, 100 + i]))
                .collect();
            let report = Ingest::new(&graph)
                .workers(3)
                .pipelined(pipelined)
                .progress(Progress::Hidden)
                .run(
                    |_| shared.open(&graph),
                    batches,
                    &mut Counter::starting_at(1),
                )?;
            let what = format!("{kind:?}, pipelined {pipelined}");
            assert_eq!(report.failures.len(), 1, "{what}: {:?}", report.failures);
            let failure = &report.failures[0];
            assert_eq!(failure.batch, 13, "{what}");
            assert!(
                failure.error.contains("try_map"),
                "{what}: {}",
                failure.error
            );
            assert!(
                report.outputs[13].is_none() && report.outputs[19].is_some(),
                "{what}"
            );
            let mut store = shared.open(&graph)?;
            let recorded = store.failed_batches()?;
            assert_eq!(recorded.len(), 1, "{what}");
            assert_eq!(recorded[0].input_time, failure.input_time, "{what}");
            let decoded = graph.decode_changes(&recorded[0].changes)?;
            assert_eq!(decoded.len(), 2, "{what}: the recorded input");
            // Everything but the failed batch is in.
            let all: i64 = (0..20).map(|i| i + 100 + i).sum();
            assert_eq!(cache.zset(&mut store)?.len(), 38, "{what}");
            if failure.committed.is_empty() {
                // Retrying once the cause is gone gives the serial result.
                failing.store(false, Ordering::SeqCst);
                let retried = parallel::retry(&graph, &mut store)?;
                assert_eq!(retried.retried.len(), 1, "{what}");
                assert!(store.failed_batches()?.is_empty(), "{what}");
                assert_eq!(cache.zset(&mut store)?.len(), 40, "{what}");
                let out = graph.iteration(&mut store, Changes::new())?;
                let _ = out.get(&total_out)?;
                let sum: i64 = cache.zset(&mut store)?.iter().map(|(v, w)| v * w).sum();
                assert_eq!(sum, all, "{what}");
            } else {
                // Pipelined: the committed tables are named, and retry refuses.
                assert!(pipelined, "{what}: only pipelined batches are partial");
                let retried = parallel::retry(&graph, &mut store)?;
                assert_eq!(retried.skipped.len(), 1, "{what}");
            }
        }
    }
    Ok(())
}

#[test]
fn a_panicking_user_function_is_a_failed_batch() -> R {
    let (graph, input) = Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        let odd = n.map(|x| if *x == 3 { panic!("three") } else { *x });
        q.cache("odd", odd, &[])?;
        Ok(input)
    })?;
    for kind in kinds() {
        let shared = Shared::new(kind, &graph)?;
        let batches: Vec<Changes> = (0..6).map(|i| Changes::new().insert(&input, [i])).collect();
        let report = Ingest::new(&graph)
            .workers(2)
            .progress(Progress::Hidden)
            .run(
                |_| shared.open(&graph),
                batches,
                &mut Counter::starting_at(1),
            )?;
        assert_eq!(report.failures.len(), 1, "{kind:?}");
        assert!(
            report.failures[0]
                .error
                .contains("user function in `n.map` panicked: three"),
            "{kind:?}: {}",
            report.failures[0].error
        );
        assert!(report.outputs[5].is_some(), "{kind:?}");
    }
    Ok(())
}

/// Numbers in, cached as they are (table `numbers`, the only one: the
/// input is transient, the cache keeps it whole anyway).
fn numbers() -> Result<(Graph, graph::Input<i64>), GraphError> {
    Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        q.cache("numbers", n.transient(), &[])?;
        Ok(input)
    })
}

#[test]
fn a_frontier_that_never_arrives_times_out_naming_the_table() -> R {
    let (graph, input) = numbers()?;
    for kind in kinds() {
        let shared = Shared::with_wait(
            kind,
            &graph,
            Duration::from_millis(300),
            (Duration::from_millis(1), Duration::from_millis(50)),
        )?;
        let mut store = shared.open(&graph)?;
        let started = Instant::now();
        let err = graph
            .iteration_at(
                &mut store,
                Changes::new().insert(&input, [1]),
                Time::new(6, 5),
            )
            .expect_err("time 5 never comes");
        let waited = started.elapsed();
        match err {
            GraphError::Store(StoreError::FrontierTimeout {
                table,
                frontier,
                seen,
                ..
            }) => {
                assert!(table.contains("numbers"), "{kind:?}: {table}");
                assert_eq!((frontier, seen), (5, Some(0)), "{kind:?}");
            }
            other => panic!("{kind:?}: expected a frontier timeout, got {other}"),
        }
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{kind:?}: waited {waited:?}"
        );
    }
    Ok(())
}

/// With polls 10 s apart, a waiter still proceeds right after the batch it
/// waits for commits: it is woken (a condition variable in one process,
/// `LISTEN`/`NOTIFY` on Postgres), not polling.
#[test]
fn waiters_wake_when_the_frontier_commits() -> R {
    let (graph, input) = numbers()?;
    for kind in kinds() {
        let shared = Shared::with_wait(
            kind,
            &graph,
            Duration::from_secs(60),
            (Duration::from_secs(10), Duration::from_secs(10)),
        )?;
        let mut waiter = shared.open(&graph)?;
        let mut first = shared.open(&graph)?;
        // Start the listener (if any) before the commit it must hear.
        let _ = waiter.next_time()?;
        let waited = std::thread::scope(|s| {
            let handle = s.spawn(|| {
                let started = Instant::now();
                let out = graph.iteration_at(
                    &mut waiter,
                    Changes::new().insert(&input, [2]),
                    Time::new(2, 1),
                );
                (out.map(|_| ()), started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            graph
                .iteration_at(
                    &mut first,
                    Changes::new().insert(&input, [1]),
                    Time::new(1, 0),
                )
                .map(|_| ())?;
            let (out, waited) = handle.join().map_err(|_| "the waiter panicked")?;
            out?;
            Ok::<Duration, Box<dyn std::error::Error>>(waited)
        })?;
        assert!(
            waited >= Duration::from_millis(250),
            "{kind:?}: it did wait ({waited:?})"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{kind:?}: woke after {waited:?}, not promptly"
        );
    }
    Ok(())
}

/// Caches named like the stores' own tables (`tables`, `last_update`,
/// `failed_batches`, `time`, and the same after `_` or `0_`) are ordinary
/// states on every store: an ingest into one runs (on Postgres at times
/// from the time sequence), its failed batch is recorded and retried, and
/// the result is the serial one.
#[test]
fn caches_named_like_the_stores_own_tables_work() -> R {
    const NAMES: [&str; 10] = [
        "failed_batches",
        "time",
        "tables",
        "last_update",
        "_tables",
        "_failed_batches",
        "_time",
        "0_tables",
        "0_last_update",
        "0_time",
    ];
    for kind in kinds() {
        for name in NAMES {
            let what = format!("{kind:?}, cache `{name}`");
            let failing = Arc::new(AtomicBool::new(true));
            let flag = Arc::clone(&failing);
            let (graph, (input, cache)) = Graph::build(move |q| {
                let (input, n) = q.input::<i64>("n")?;
                // Fails on 13 while the flag is up.
                let checked = n.try_map(move |x| {
                    if *x == 13 && flag.load(Ordering::SeqCst) {
                        Err(std::fmt::Error)
                    } else {
                        Ok(*x)
                    }
                });
                Ok((input, q.cache(name, checked, &[])?))
            })?;
            let shared = Shared::new(kind, &graph)?;
            let mut times: Box<dyn parallel::TimeSource> = match shared.open(&graph)? {
                Handle::Postgres(mut store) => Box::new(store::PgSequence::of(&mut store)?),
                _ => Box::new(Counter::starting_at(1)),
            };
            let batches: Vec<Changes> = (0..20)
                .map(|i| Changes::new().insert(&input, [i, 100 + i]))
                .collect();
            let report = Ingest::new(&graph)
                .workers(3)
                .progress(Progress::Hidden)
                .run(|_| shared.open(&graph), batches, &mut *times)?;
            assert_eq!(report.failures.len(), 1, "{what}: {:?}", report.failures);
            assert_eq!(report.failures[0].batch, 13, "{what}");
            let mut store = shared.open(&graph)?;
            assert_eq!(store.failed_batches()?.len(), 1, "{what}");
            failing.store(false, Ordering::SeqCst);
            let retried = parallel::retry(&graph, &mut store)?;
            assert_eq!(retried.retried.len(), 1, "{what}");
            assert!(store.failed_batches()?.is_empty(), "{what}");
            let rows = cache.zset(&mut store)?;
            let sum: i64 = rows.iter().map(|(v, w)| v * w).sum();
            let all: i64 = (0..20).map(|i| i + 100 + i).sum();
            assert_eq!((rows.len(), sum), (40, all), "{what}");
        }
    }
    Ok(())
}
