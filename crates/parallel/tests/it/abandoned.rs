//! Postgres only (the shared time source is a Postgres `SEQUENCE`): a time
//! taken from a `PgSequence` that nobody will commit (its taker's session
//! is gone, or it was never claimed) is released by the iteration waiting
//! behind it and recorded as failed, naming the batch its claim held; a
//! live taker, however slow, is waited for; the lost batch can be fed
//! again; claims of times every table has passed are forgotten.

use std::time::Duration;

use graph::{Changes, Graph, GraphError, StateStore, Time};
use parallel::{Ingest, Progress};
use store::PgSequence;

use crate::R;
use crate::stores::{Handle, Kind, Shared, pg_url};

type Numbers = (graph::Input<i64>, graph::Cache<i64>);

/// Numbers in, cached as they are.
fn numbers() -> Result<(Graph, Numbers), GraphError> {
    Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        let cache = q.cache("numbers", n, &[])?;
        Ok((input, cache))
    })
}

/// A Postgres store on the shared tables, and their prefix.
fn postgres(shared: &Shared, graph: &Graph) -> Result<(Box<store::Postgres>, String), GraphError> {
    let Shared::Postgres { options, .. } = shared else {
        unreachable!("a Postgres store")
    };
    match shared.open(graph)? {
        Handle::Postgres(p) => Ok((p, options.prefix.clone())),
        _ => unreachable!("a Postgres store"),
    }
}

fn cached(cache: &graph::Cache<i64>, store: &mut dyn StateStore) -> Result<Vec<i64>, GraphError> {
    let mut v: Vec<i64> = cache.zset(store)?.iter().map(|(n, _)| *n).collect();
    v.sort();
    Ok(v)
}

#[test]
fn a_time_whose_taker_is_gone_is_released_and_a_slow_taker_is_waited_for() -> R {
    let Some(url) = pg_url() else { return Ok(()) };
    let (graph, (input, cache)) = numbers()?;
    let shared = Shared::with_wait(
        Kind::Postgres,
        &graph,
        Duration::from_secs(20),
        (Duration::from_millis(1), Duration::from_millis(100)),
    )?;
    let (mut live, prefix) = postgres(&shared, &graph)?;
    let mut seq = PgSequence::of(&mut live)?;
    // Another process's sequence: a pool of one connection, whose session
    // ends (as when its process dies) after taking a time.
    let Shared::Postgres { options, .. } = &shared else {
        unreachable!("a Postgres store")
    };
    let mut other =
        store::Postgres::with_pool(store::Postgres::pool(&url, 1)?, &graph, options.clone())?;
    let other_seq = PgSequence::of(&mut other)?;
    let slow = seq.next_for(0)?;
    let dead = other_seq.next_for(1)?;
    let last = seq.next_for(2)?;
    benches::pg::execute(
        &url,
        &format!(
            "SELECT pg_terminate_backend(pid, 10000) FROM {prefix}0_time_claims WHERE t = {dead}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut waiter = shared.open(&graph)?;
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            graph.iteration_at(
                &mut waiter,
                Changes::new().insert(&input, [3]),
                Time::new(last, last - 1),
            )
        });
        // The waiter is stuck on the slow taker's time well past its grace
        // period; that taker is alive, so its time is not released.
        std::thread::sleep(Duration::from_secs(3));
        graph.iteration_at(
            &mut *live,
            Changes::new().insert(&input, [1]),
            Time::new(slow, slow - 1),
        )?;
        waiting.join().map_err(|_| "the waiter panicked")??;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let failed = live.failed_batches()?;
    assert_eq!(failed.len(), 1, "only the dead taker's time: {failed:?}");
    let f = &failed[0];
    assert_eq!((f.input_time, f.batch), (dead, 1), "{f:?}");
    assert!(f.changes.is_empty() && f.committed.is_empty(), "{f:?}");
    assert!(f.error.contains("ended before committing"), "{}", f.error);
    assert_eq!(cached(&cache, &mut *live)?, [1, 3]);
    // `retry` cannot re-run it, and says so.
    let report = parallel::retry(&graph, &mut *live)?;
    assert!(report.retried.is_empty() && report.skipped.is_empty());
    assert_eq!(report.lost, failed);
    assert_eq!(live.failed_batches()?, failed, "kept until fed again");
    // Fed again: the serial result, and nothing left recorded.
    let report = parallel::retry_with(&graph, &mut *live, &mut seq, |f| {
        (f.batch == 1).then(|| Changes::new().insert(&input, [2]))
    })?;
    assert_eq!(report.retried.len(), 1);
    assert!(report.lost.is_empty());
    assert!(live.failed_batches()?.is_empty());
    assert_eq!(cached(&cache, &mut *live)?, [1, 2, 3]);
    Ok(())
}

#[test]
fn a_time_taken_from_the_sequence_and_never_claimed_is_released() -> R {
    let Some(url) = pg_url() else { return Ok(()) };
    let (graph, (input, cache)) = numbers()?;
    let shared = Shared::with_wait(
        Kind::Postgres,
        &graph,
        Duration::from_secs(20),
        (Duration::from_millis(1), Duration::from_millis(100)),
    )?;
    let (mut store, prefix) = postgres(&shared, &graph)?;
    let seq = PgSequence::of(&mut store)?;
    // Taken behind the store's back, as a statement that fails between
    // taking and claiming would.
    let unclaimed = benches::pg::query_i64(&url, &format!("SELECT nextval('{prefix}0_time')"))
        .map_err(|e| e.to_string())?;
    let t = seq.next_for(7)?;
    graph.iteration_at(
        &mut *store,
        Changes::new().insert(&input, [7]),
        Time::new(t, t - 1),
    )?;
    let failed = store.failed_batches()?;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].input_time, failed[0].batch), (unclaimed, -1));
    assert!(
        failed[0].error.contains("never claimed"),
        "{}",
        failed[0].error
    );
    assert_eq!(cached(&cache, &mut *store)?, [7]);
    assert_eq!(parallel::retry(&graph, &mut *store)?.lost, failed);
    Ok(())
}

#[test]
fn an_ingest_claims_each_time_for_its_batch_and_passed_claims_are_forgotten() -> R {
    let Some(url) = pg_url() else { return Ok(()) };
    let (graph, (input, cache)) = numbers()?;
    let shared = Shared::new(Kind::Postgres, &graph)?;
    let (mut store, prefix) = postgres(&shared, &graph)?;
    let mut seq = PgSequence::of(&mut store)?;
    let claims = |sql: &str| {
        benches::pg::query_i64(
            &url,
            &sql.replace("CLAIMS", &format!("{prefix}0_time_claims")),
        )
        .map_err(|e| e.to_string())
    };
    let batches = |from: i64| -> Vec<Changes> {
        (from..from + 70)
            .map(|i| Changes::new().insert(&input, [i]))
            .collect()
    };
    let ingest = Ingest::new(&graph).workers(2).progress(Progress::Hidden);
    let report = ingest.run(|_| shared.open(&graph), batches(0), &mut seq)?;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // Times are taken in batch order: time 1 + b is claimed for batch b.
    assert_eq!(
        claims("SELECT count(*) FROM CLAIMS WHERE batch = t - 1")?,
        70
    );
    // The next ingest's 128th time forgets the claims of times 1..=70.
    let report = ingest.run(|_| shared.open(&graph), batches(70), &mut seq)?;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(claims("SELECT count(*) FROM CLAIMS")?, 70);
    assert_eq!(claims("SELECT min(t) FROM CLAIMS")?, 71);
    assert_eq!(cached(&cache, &mut *store)?.len(), 140);
    Ok(())
}
