//! Readers racing a two-worker ingest never see an iteration half-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graph::StateStore;
use operators::prelude::*;
use serde::{Deserialize, Serialize};
use store::StoreError;

use super::R;
use crate::harness::{Kind, pg_url};

/// Row `n` of batch `batch`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) batch: i64,
    pub(super) n: i64,
}

/// Rows per batch: more than one multi-row statement's worth, so a batch's
/// rows reach a table in several statements.
pub(super) const BATCH: i64 = 1_100;
pub(super) const BATCHES: i64 = 8;

/// Entries cached by batch, and their count cached (indexed by its value,
/// so a reader can see it with plain SQL): two tables that every iteration
/// writes together.
pub(super) struct Ledger {
    pub(super) graph: Graph,
    pub(super) input: Input<Entry>,
    pub(super) entries: Cache<Entry>,
    pub(super) count: Cache<i64>,
}

pub(super) fn ledger() -> Result<Ledger, GraphError> {
    let by_batch = Index::new("batch", |e: &Entry| e.batch);
    let by_total = Index::new("total", |n: &i64| *n);
    let (graph, (input, entries, count)) = Graph::build(|q| {
        let (input, x) = q.input::<Entry>("entries")?;
        // A pause in every iteration, so that readers see many states.
        let x = x.map(|e| {
            if e.n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            e.clone()
        });
        Ok((
            input,
            q.cache("entry_cache", x, &[&by_batch])?,
            q.cache("entry_count", x.count(), &[&by_total])?,
        ))
    })?;
    Ok(Ledger {
        graph,
        input,
        entries,
        count,
    })
}

/// One read of both caches through a store (in the order `count_first`
/// says), checking that whole batches are visible: every batch has all its
/// rows or none, and the count read before (after) the entries is at most
/// (at least) their number, both multiples of the batch size. Returns the
/// number of entries.
pub(super) fn read_ledger(
    l: &Ledger,
    store: &mut dyn StateStore,
    count_first: bool,
) -> Result<i64, String> {
    let read_count = |store: &mut dyn StateStore| -> Result<i64, String> {
        let z = l.count.zset(store).map_err(|e| e.to_string())?;
        match z.iter().collect::<Vec<_>>()[..] {
            [] => Ok(0),
            [(n, 1)] => Ok(*n),
            ref other => Err(format!("the count cache holds {other:?}")),
        }
    };
    let read_entries = |store: &mut dyn StateStore| -> Result<i64, String> {
        let z = l.entries.zset(store).map_err(|e| e.to_string())?;
        let mut per_batch: BTreeMap<i64, i64> = BTreeMap::new();
        for (e, w) in z.iter() {
            if w != 1 {
                return Err(format!("{e:?} has weight {w}"));
            }
            *per_batch.entry(e.batch).or_default() += 1;
        }
        if let Some((batch, n)) = per_batch.iter().find(|(_, n)| **n != BATCH) {
            return Err(format!("batch {batch} is half there: {n} of {BATCH} rows"));
        }
        Ok(z.len() as i64)
    };
    let (count, entries) = if count_first {
        let c = read_count(store)?;
        let e = read_entries(store)?;
        if c > e {
            return Err(format!("count {c} read before {e} entries"));
        }
        (c, e)
    } else {
        let e = read_entries(store)?;
        let c = read_count(store)?;
        if c < e {
            return Err(format!("count {c} read after {e} entries"));
        }
        (c, e)
    };
    if count % BATCH != 0 || entries % BATCH != 0 {
        return Err(format!("{count} counted, {entries} entries"));
    }
    Ok(entries)
}

/// What one snapshot of the two tables (one read transaction of plain SQL)
/// shows: `sum(c)` of the entries, the count's key column, and the two
/// tables' `last_update` times.
pub(super) fn check_snapshot(sum: i64, counts: &[i64], times: &[i64]) -> Result<(), String> {
    let count = match counts {
        [] => 0,
        [n] => *n,
        _ => return Err(format!("counts {counts:?}")),
    };
    if sum != count || sum % BATCH != 0 {
        return Err(format!("{sum} entries but a count of {count}"));
    }
    if times.len() == 2 && times[0] != times[1] {
        return Err(format!("the two tables were last updated at {times:?}"));
    }
    Ok(())
}

/// Runs the ingest of `BATCHES` batches on two workers (`open`) while
/// `read` polls from another thread, alternating the order of its reads;
/// checks every poll, and that the reader saw the ingest in progress.
pub(super) fn race<S: StateStore>(
    l: &Ledger,
    open: impl Fn(usize) -> Result<S, GraphError> + Sync,
    times: &mut dyn parallel::TimeSource,
    read: impl FnMut(bool) -> Result<i64, String> + Send,
) -> Result<(), String> {
    let batches: Vec<Changes> = (0..BATCHES)
        .map(|b| Changes::new().insert(&l.input, (0..BATCH).map(|n| Entry { batch: b, n })))
        .collect();
    let done = AtomicBool::new(false);
    let mut read = read;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = BTreeSet::new();
            let mut polls = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let entries =
                    read(polls.is_multiple_of(2)).map_err(|e| format!("poll {polls}: {e}"))?;
                seen.insert(entries);
                polls += 1;
                if finished {
                    return Ok::<_, String>((polls, seen, entries));
                }
            }
        });
        let report = parallel::Ingest::new(&l.graph)
            .workers(2)
            .pipelined(false)
            .progress(parallel::Progress::Hidden)
            .run(open, batches, times);
        done.store(true, Ordering::SeqCst);
        let (polls, seen, last) = reader.join().expect("the reader thread")?;
        let report = report.map_err(|e| e.to_string())?;
        if !report.failures.is_empty() {
            return Err(format!("failed batches: {:?}", report.failures));
        }
        if last != BATCH * BATCHES {
            return Err(format!("the last read saw {last} entries"));
        }
        // The ingest was seen under way, not only before or after it.
        if seen.len() < 2 || polls < 3 {
            return Err(format!("{polls} polls saw only {seen:?}"));
        }
        eprintln!(
            "{polls} polls during {} saw {} states",
            report.summary(),
            seen.len()
        );
        Ok(())
    })
}

/// SQLite in WAL mode: two workers ingest into one file while a store of
/// its own on the same file reads both caches (and plain SQL reads both
/// tables in one read transaction); no read ever sees part of a batch.
#[test]
fn sqlite_readers_never_see_half_an_iteration_during_a_two_worker_ingest() -> R {
    let l = ledger()?;
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("ledger.db");
    let mut setup = store::Sqlite::open(&path, &l.graph, store::OpenOptions::default())?;
    let mut times = parallel::Counter::after(&mut setup)?;
    let names: BTreeMap<String, String> = setup.table_names().into_iter().collect();
    let (entries, count) = (&names["entry_cache"], &names["entry_count"]);
    let mut reader = store::Sqlite::open(&path, &l.graph, store::OpenOptions::attach())?;
    let snapshot = move |reader: &store::Sqlite| -> Result<(), String> {
        let tx = reader
            .connection()
            .unchecked_transaction()
            .map_err(|e| e.to_string())?;
        let sql = |e: rusqlite::Error| e.to_string();
        let sum: i64 = tx
            .query_row(
                &format!("SELECT coalesce(sum(c), 0) FROM {entries}"),
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let counts = tx
            .prepare(&format!("SELECT k_total FROM {count}"))
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()
            })
            .map_err(sql)?;
        let times = tx
            .prepare(&format!(
                "SELECT t FROM st_0_last_update WHERE table_name IN ('{entries}', '{count}')"
            ))
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()
            })
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        check_snapshot(sum, &counts, &times)
    };
    race(
        &l,
        |_worker| {
            store::Sqlite::open(&path, &l.graph, store::OpenOptions::attach()).map_err(Into::into)
        },
        &mut times,
        |count_first| {
            snapshot(&reader)?;
            read_ledger(&l, &mut reader, count_first)
        },
    )
    .unwrap_or_else(|e| panic!("SQLite: {e}"));
    Ok(())
}

/// Postgres: the same, the workers and the reader each with their own
/// store on the pool, plain SQL reading both tables in one repeatable-read
/// transaction.
#[test]
fn postgres_readers_never_see_half_an_iteration_during_a_two_worker_ingest() -> R {
    if pg_url().is_none() {
        return Ok(());
    }
    let l = ledger()?;
    let mut setup = Kind::Postgres.open(&l.graph)?;
    let prefix = setup.prefix().to_owned();
    let pg = setup.postgres().expect("a Postgres store");
    let pool = pg.connection_pool().clone();
    let names: BTreeMap<String, String> = pg.table_names().into_iter().collect();
    let (entries, count) = (names["entry_cache"].clone(), names["entry_count"].clone());
    let mut times = parallel::Counter::after(&mut *setup)?;
    let options = || store::OpenOptions {
        create_tables: false,
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let mut reader = store::Postgres::with_pool(pool.clone(), &l.graph, options())?;
    let url = pg_url().expect("configured");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::backend("a runtime", e))?;
    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    });
    let client = client.map_err(|e| StoreError::backend("connect", e))?;
    let last_update = format!("{prefix}0_last_update");
    let snapshot = || -> Result<(), String> {
        rt.block_on(async {
            let sql = |e: tokio_postgres::Error| e.to_string();
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(sql)?;
            let sum: i64 = client
                .query_one(
                    &format!("SELECT coalesce(sum(c), 0)::bigint FROM {entries}"),
                    &[],
                )
                .await
                .map_err(sql)?
                .get(0);
            let counts: Vec<i64> = client
                .query(&format!("SELECT k_total FROM {count}"), &[])
                .await
                .map_err(sql)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let times: Vec<i64> = client
                .query(
                    &format!("SELECT t FROM {last_update} WHERE table_name = ANY($1)"),
                    &[&vec![entries.clone(), count.clone()]],
                )
                .await
                .map_err(sql)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            client.batch_execute("COMMIT").await.map_err(sql)?;
            check_snapshot(sum, &counts, &times)
        })
    };
    race(
        &l,
        |_worker| store::Postgres::with_pool(pool.clone(), &l.graph, options()).map_err(Into::into),
        &mut times,
        |count_first| {
            snapshot()?;
            read_ledger(&l, &mut reader, count_first)
        },
    )
    .unwrap_or_else(|e| panic!("Postgres: {e}"));
    Ok(())
}
