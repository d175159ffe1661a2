//! First use of a store from several handles at once, each with a
//! connection of its own as separate processes would have: opening a fresh
//! SQLite file or Postgres prefix, and creating the Postgres time sequence,
//! never fail because another handle is doing the same; every table is
//! created once, and an ingest from all the handles gives the serial result.

use std::sync::Barrier;

use benches::meter_reads::{self, MeterReads, Workload};
use graph::{Changes, Graph, GraphError, StateStore, Time};
use store::{OpenOptions, PgSequence, Postgres, Sqlite};

use crate::harness::{Kind, pg_url, sql_kinds, unique_prefix};

type R = Result<(), GraphError>;

/// Handles opened at once.
const HANDLES: usize = 4;

/// Batches of the ingest that follows the opens: users and meters, then
/// reads.
const BATCHES: u64 = 8;

const WORKLOAD: Workload = Workload {
    users: 12,
    reads: 245,
};

/// Batch `b`: the users and meters (`b = 0`), or a slice of the reads.
fn batch(q: &MeterReads, b: u64) -> Changes {
    let w = WORKLOAD;
    if b == 0 {
        Changes::new()
            .insert(&q.users, w.all_users())
            .insert(&q.meters, w.all_meters())
    } else {
        let per = w.reads / (BATCHES - 1);
        Changes::new().insert(&q.reads, w.reads((b - 1) * per..b * per))
    }
}

/// Handle `h`'s share of the batches: every `HANDLES`-th.
fn share(h: usize) -> impl Iterator<Item = u64> {
    (h as u64..BATCHES).step_by(HANDLES)
}

/// Runs `HANDLES` threads that meet at a barrier and then each call
/// `open(h)` at once; returns each thread's result, in order.
fn at_once<T: Send>(open: impl Fn(usize) -> Result<T, String> + Sync) -> Vec<Result<T, String>> {
    let start = Barrier::new(HANDLES);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..HANDLES)
            .map(|h| {
                let (start, open) = (&start, &open);
                s.spawn(move || {
                    start.wait();
                    open(h)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the thread panicked".into()))
            })
            .collect()
    })
}

/// Runs handle `h`'s share, batch `b` at time `b + 1`: the handles wait for
/// each other's batches through the stores' frontier waits.
fn ingest_share(graph: &Graph, q: &MeterReads, store: &mut dyn StateStore, h: usize) -> R {
    for b in share(h) {
        let t = b as i64 + 1;
        graph.iteration_at(store, batch(q, b), Time::new(t, t - 1))?;
    }
    Ok(())
}

/// Every thread's result, or a panic naming every thread that failed.
fn all_ok<T>(what: &str, results: Vec<Result<T, String>>) -> Vec<T> {
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("handle {h}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{what}: {}", failed.join("; "));
    results.into_iter().flatten().collect()
}

/// `created` (tables each open created) adds up to one per state, and
/// `store` holds the serial result.
fn check_once_and_serial(
    what: &str,
    graph: &Graph,
    q: &MeterReads,
    created: &[usize],
    store: &mut dyn StateStore,
) -> R {
    assert_eq!(
        created.iter().sum::<usize>(),
        graph.states().len(),
        "{what}: tables created by each open: {created:?}"
    );
    let cache = q.cache.zset(store)?;
    if let Err(e) = WORKLOAD.check(&cache) {
        panic!("{what}: the ingest from every handle is not the serial result: {e}");
    }
    Ok(())
}

/// Opening a file that does not exist yet from several connections at
/// once: the journal mode, the pages and the tables are set up once, the
/// others wait instead of failing with `database is locked`.
#[test]
fn concurrent_first_opens_of_a_sqlite_file_all_succeed() -> R {
    let (graph, q) = meter_reads::build()?;
    for round in 0..100 {
        let dir = tempfile::tempdir().map_err(|e| graph::StoreError::backend("tempdir", e))?;
        let path = dir.path().join("fresh.db");
        let results = at_once(|h| {
            let mut store =
                Sqlite::open(&path, &graph, OpenOptions::default()).map_err(|e| e.to_string())?;
            ingest_share(&graph, &q, &mut store, h).map_err(|e| e.to_string())?;
            Ok(store.tables_created())
        });
        let what = format!("round {round}");
        let created = all_ok(&what, results);
        let mut store = Sqlite::open(&path, &graph, OpenOptions::attach())?;
        check_once_and_serial(&what, &graph, &q, &created, &mut store)?;
    }
    Ok(())
}

/// A fresh prefix (its tables dropped when the test ends) and the options
/// to open it.
fn fresh_prefix(url: &str) -> (benches::pg::DropTablesOnExit, OpenOptions) {
    let prefix = unique_prefix();
    let options = OpenOptions {
        prefix: prefix.clone(),
        ..OpenOptions::default()
    };
    let cleanup = benches::pg::DropTablesOnExit {
        conn: url.to_owned(),
        prefix,
    };
    (cleanup, options)
}

/// A handle with a pool of its own, as another process would have.
fn pg_handle(url: &str, graph: &Graph, options: &OpenOptions) -> Result<Postgres, String> {
    let pool = Postgres::pool(url, 2).map_err(|e| e.to_string())?;
    Postgres::with_pool(pool, graph, options.clone()).map_err(|e| e.to_string())
}

/// Opening a fresh prefix from several handles at once: the tables (the
/// store's own included) are created once, under a lock, and every open
/// succeeds and then ingests its share.
#[test]
fn concurrent_first_opens_of_a_postgres_prefix_all_succeed() -> R {
    let Some(url) = pg_url() else { return Ok(()) };
    let (graph, q) = meter_reads::build()?;
    for round in 0..10 {
        let (_cleanup, options) = fresh_prefix(&url);
        let what = format!("round {round}, prefix {}", options.prefix);
        let results = at_once(|h| {
            let mut store = pg_handle(&url, &graph, &options)?;
            ingest_share(&graph, &q, &mut store, h).map_err(|e| e.to_string())?;
            Ok(store.tables_created())
        });
        let created = all_ok(&what, results);
        let mut store = pg_handle(&url, &graph, &options)
            .map_err(|e| graph::StoreError::backend("opening the store again", e))?;
        check_once_and_serial(&what, &graph, &q, &created, &mut store)?;
    }
    Ok(())
}

/// Creating the time sequence of a fresh prefix from several handles at
/// once: every call succeeds, the sequences are one (their times never
/// repeat), and an ingest at those times gives the serial result.
#[test]
fn concurrent_first_time_sequences_of_a_postgres_prefix_are_one() -> R {
    let Some(url) = pg_url() else { return Ok(()) };
    let (graph, q) = meter_reads::build()?;
    for round in 0..10 {
        let (_cleanup, options) = fresh_prefix(&url);
        let what = format!("round {round}, prefix {}", options.prefix);
        let (mut stores, mut created) = (Vec::new(), Vec::new());
        for h in 0..HANDLES {
            let store = pg_handle(&url, &graph, &options)
                .unwrap_or_else(|e| panic!("{what}: open {h}: {e}"));
            created.push(store.tables_created());
            stores.push(std::sync::Mutex::new(store));
        }
        let times = at_once(|h| {
            let mut store = stores[h].lock().map_err(|e| e.to_string())?;
            let seq = PgSequence::of(&mut store).map_err(|e| e.to_string())?;
            // Each handle runs its share of the batches at times from the
            // one sequence; the batches commute, so whatever order they
            // run in ends in the serial result.
            let mut times = Vec::new();
            for b in share(h) {
                let t = seq.next().map_err(|e| e.to_string())?;
                times.push(t);
                graph
                    .iteration_at(&mut *store, batch(&q, b), Time::new(t, t - 1))
                    .map_err(|e| e.to_string())?;
            }
            Ok(times)
        });
        let mut times: Vec<i64> = all_ok(&what, times).into_iter().flatten().collect();
        times.sort_unstable();
        assert_eq!(
            times,
            (1..=BATCHES as i64).collect::<Vec<_>>(),
            "{what}: one sequence"
        );
        let mut store = pg_handle(&url, &graph, &options)
            .map_err(|e| graph::StoreError::backend("opening the store again", e))?;
        check_once_and_serial(&what, &graph, &q, &created, &mut store)?;
    }
    Ok(())
}

/// A store no handle has opened yet: a file that does not exist, or a
/// prefix with no tables.
enum Fresh {
    Sqlite(tempfile::TempDir),
    Postgres {
        url: String,
        options: OpenOptions,
        _cleanup: benches::pg::DropTablesOnExit,
    },
}

impl Fresh {
    fn new(kind: Kind) -> Fresh {
        match kind {
            Kind::Sqlite => Fresh::Sqlite(tempfile::tempdir().expect("a temporary directory")),
            Kind::Postgres => {
                let url = pg_url().expect("Postgres is configured");
                let (cleanup, options) = fresh_prefix(&url);
                Fresh::Postgres {
                    url,
                    options,
                    _cleanup: cleanup,
                }
            }
            Kind::Memory => unreachable!("only SQL stores are opened here"),
        }
    }

    /// A handle with a connection of its own.
    fn open(&self, graph: &Graph) -> Result<Box<dyn StateStore + Send>, String> {
        Ok(match self {
            Fresh::Sqlite(dir) => Box::new(
                Sqlite::open(dir.path().join("fresh.db"), graph, OpenOptions::default())
                    .map_err(|e| e.to_string())?,
            ),
            Fresh::Postgres { url, options, .. } => Box::new(pg_handle(url, graph, options)?),
        })
    }
}

/// Handles of one store recording their first failed batches at once: the
/// failed-batch table is created once, and every batch is recorded.
#[test]
fn concurrent_first_failures_are_all_recorded() -> R {
    let (graph, _) = meter_reads::build()?;
    for kind in sql_kinds() {
        for round in 0..10 {
            let fresh = Fresh::new(kind);
            let what = format!("{kind:?}, round {round}");
            let stores: Vec<std::sync::Mutex<Box<dyn StateStore + Send>>> = (0..HANDLES)
                .map(|h| {
                    let store = fresh
                        .open(&graph)
                        .unwrap_or_else(|e| panic!("{what}: open {h}: {e}"));
                    std::sync::Mutex::new(store)
                })
                .collect();
            let results = at_once(|h| {
                let mut store = stores[h].lock().map_err(|e| e.to_string())?;
                let t = h as i64 + 1;
                store
                    .record_failure(Time::new(t, t - 1), h as i64, b"changes", "it failed")
                    .map_err(|e| e.to_string())
            });
            all_ok(&what, results);
            let mut store = stores[0].lock().expect("not poisoned");
            let recorded: Vec<(i64, i64)> = store
                .failed_batches()?
                .iter()
                .map(|f| (f.input_time, f.batch))
                .collect();
            assert_eq!(recorded, [(1, 0), (2, 1), (3, 2), (4, 3)], "{what}");
        }
    }
    Ok(())
}
