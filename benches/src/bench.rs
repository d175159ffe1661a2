//! The meter-reads benchmark, run by `cargo xtask bench`: every figure of
//! DESIGN §7 in one run, beside the ceilings that bound them.
//!
//! For each store (memory, SQLite, Postgres) it ingests the deterministic
//! workload ([`Workload`]) in batches of 1000, **checks the resulting cache
//! against the sums computed from the data before reporting anything**, and
//! measures reads/s (overall, first and last 10% of the ingest), iteration
//! latency at batch size 1, bytes on disk per read, and the latency of
//! reading one date from the cache (the memory ingest, a tenth of a second
//! long, runs five times and reports the median). It measures 2-worker ingests, atomic
//! and pipelined, against the serial one. The ceilings: right after each SQL
//! store's ingest, the same state rows written directly into tables laid out
//! like the store's ([`direct`](crate::direct)); and the plain-SQL
//! alternative (normalised tables, `GROUP BY` at read time).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use graph::{Changes, Graph, StateStore};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::direct;

mod feeds;
use crate::meter_reads::{self, MeterReads, Workload};
use crate::tally::{Tallied, Tally};
pub use feeds::FeedFigures;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Users (and meters).
    pub users: u64,
    /// Reads to ingest per run.
    pub reads: u64,
    /// A Postgres connection string, or none to skip Postgres.
    pub postgres: Option<String>,
    /// Where SQLite files go.
    pub scratch: PathBuf,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Run {
    /// `memory`, `sqlite` or `postgres`.
    pub store: String,
    /// Reads per batch.
    pub batch: u64,
    /// Worker threads.
    pub workers: usize,
    /// `None` for the store-default atomic iteration of a serial ingest.
    pub flush_every_set: Option<bool>,
    /// Reads per second over the whole ingest.
    pub reads_per_s: f64,
    /// Median iteration latency (batch size 1 runs).
    pub iter_p50_us: Option<f64>,
    /// 99th percentile iteration latency (batch size 1 runs).
    pub iter_p99_us: Option<f64>,
    /// Bytes on disk per ingested read.
    pub bytes_per_read: Option<f64>,
    /// Median latency of reading one date from the cache.
    pub cache_read_us: Option<f64>,
    /// Postgres: the server's own execution time of that read (`EXPLAIN
    /// ANALYZE` of the same query, median of 5, right after the timed
    /// reads): the part no client can save. Right after an ingest it
    /// includes the row versions autovacuum has not yet removed.
    pub cache_read_server_us: Option<f64>,
    /// Reads per second over the first 10% of the ingest.
    pub first10_reads_per_s: Option<f64>,
    /// Reads per second over the last 10% of the ingest.
    pub last10_reads_per_s: Option<f64>,
    /// Reads per second over the 10% of the ingest that starts at the first
    /// batch in which every daily sum already exists
    /// ([`Workload::first_settled_read`](crate::meter_reads::Workload::first_settled_read)):
    /// the same work per read as the last 10%, on tables that are still
    /// smaller. `None` when that window would reach the last 10%.
    pub settled10_reads_per_s: Option<f64>,
    /// State rows written per read over the serial ingest (SQL stores).
    pub state_rows_per_read: Option<f64>,
    /// SQLite parallel-scheduler runs: the share of the run's wall time
    /// that its workers held the file's single write lock, summed over
    /// workers ([`StoreStats::write_lock_held`](store::StoreStats)). No
    /// two workers hold it at once, so a lone worker's share `s` bounds
    /// what more workers can gain at `1 / s`, and a share near 1 means the
    /// writer is saturated.
    pub write_lock_share: Option<f64>,
}

/// The bounds our figures are compared with.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Ceilings {
    /// State rows per second written directly into SQLite tables laid out
    /// like the store's: the rows this ingest stores, computed by hand, one
    /// transaction per batch ([`direct::sqlite`](crate::direct::sqlite)),
    /// measured right after the SQLite ingest.
    pub sqlite_upsert_rows_per_s: f64,
    /// The same into Postgres ([`direct::postgres`](crate::direct::postgres)).
    pub postgres_upsert_rows_per_s: Option<f64>,
    /// The SQLite direct writes over their first and last 10% of batches,
    /// in reads/s (each batch's rows stand for its 1,000 reads): how much
    /// storing the same rows slows as the tables grow and the workload
    /// changes phase, with no engine in the way. This bounds our own
    /// last/first ratio.
    pub sqlite_direct_first10_reads_per_s: f64,
    /// See [`sqlite_direct_first10_reads_per_s`](Self::sqlite_direct_first10_reads_per_s).
    pub sqlite_direct_last10_reads_per_s: f64,
    /// The same for the Postgres direct writes.
    pub postgres_direct_first10_reads_per_s: Option<f64>,
    /// See [`postgres_direct_first10_reads_per_s`](Self::postgres_direct_first10_reads_per_s).
    pub postgres_direct_last10_reads_per_s: Option<f64>,
    /// State rows our serial SQLite ingest writes per read, counted over
    /// the whole timed ingest.
    pub state_rows_per_read: f64,
    /// Rows the direct writes write per read (the same rows, so about the
    /// same number).
    pub direct_rows_per_read: f64,
    /// Rows per second inserted into normalised tables (SQLite).
    pub classic_insert_rows_per_s: f64,
    /// The `GROUP BY` query over all dates (SQLite), ms.
    pub classic_query_all_ms: f64,
    /// The `GROUP BY` query for one date (SQLite), ms.
    pub classic_query_one_date_ms: f64,
    /// The same three on Postgres.
    pub postgres_classic_insert_rows_per_s: Option<f64>,
    /// The `GROUP BY` query over all dates (Postgres), ms.
    pub postgres_classic_query_all_ms: Option<f64>,
    /// The `GROUP BY` query for one date (Postgres), ms.
    pub postgres_classic_query_one_date_ms: Option<f64>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `meter_reads`.
    pub workload: &'static str,
    /// Users.
    pub users: u64,
    /// Reads per run.
    pub reads: u64,
    /// The runs.
    pub results: Vec<Run>,
    /// The ceilings.
    pub ceilings: Ceilings,
    /// Reads/s per batch over the serial B = 1000 ingests, per store:
    /// `(store, [(reads done, reads/s)])`.
    pub series: Vec<(String, Vec<(u64, f64)>)>,
    /// Stores whose results disagreed with the data (no figures reported).
    pub disagreeing: Vec<String>,
    /// What the change feed costs, per SQL store (issue 25).
    pub feeds: Vec<FeedFigures>,
    /// The async face's cost: median µs of one `AsyncStore` call.
    pub async_hop_us: Option<f64>,
}

type BoxError = Box<dyn std::error::Error>;

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:<34} {wide_bar} {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// The stores measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// A store for one run, and what is needed to open more handles on it.
struct Target {
    kind: Kind,
    file: PathBuf,
    prefix: String,
    pool: Option<store::PgPool>,
    memory: Option<store::Memory>,
}

impl Target {
    fn new(kind: Kind, config: &Config, graph: &Graph, tag: &str) -> Result<Target, BoxError> {
        let file = config.scratch.join(format!("bench-{tag}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let mut p = file.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        let prefix = format!("b_{tag}_");
        let pool = match (kind, &config.postgres) {
            (Kind::Postgres, Some(url)) => Some(store::Postgres::pool(url, 8)?),
            _ => None,
        };
        let memory = (kind == Kind::Memory).then(|| store::Memory::new(graph));
        let target = Target {
            kind,
            file,
            prefix,
            pool,
            memory,
        };
        if let Some(pool) = &target.pool {
            // Start from empty tables.
            let store = store::Postgres::with_pool(pool.clone(), graph, target.options(true))?;
            store.drop_tables()?;
        }
        Ok(target)
    }

    fn options(&self, create: bool) -> store::OpenOptions {
        store::OpenOptions {
            create_tables: create,
            prefix: self.prefix.clone(),
            ..Default::default()
        }
    }

    fn open(&self, graph: &Graph) -> Result<Box<dyn StateStore>, graph::GraphError> {
        Ok(match self.kind {
            Kind::Memory => Box::new(
                self.memory
                    .as_ref()
                    .map(store::Memory::handle)
                    .ok_or_else(|| graph::StoreError::backend("memory", "no memory store"))?,
            ),
            Kind::Sqlite => Box::new(store::Sqlite::open(&self.file, graph, self.options(true))?),
            Kind::Postgres => {
                let pool = self
                    .pool
                    .clone()
                    .ok_or_else(|| graph::StoreError::backend("postgres", "no pool"))?;
                Box::new(store::Postgres::with_pool(pool, graph, self.options(true))?)
            }
        })
    }

    /// Opens the store and a way to read its counters (SQL stores only).
    fn open_counted(&self, graph: &Graph) -> Result<Counted, graph::GraphError> {
        let options = self.options(true);
        Ok(match self.kind {
            Kind::Sqlite => {
                Counted::Sqlite(Box::new(store::Sqlite::open(&self.file, graph, options)?))
            }
            Kind::Postgres => {
                let pool = self
                    .pool
                    .clone()
                    .ok_or_else(|| graph::StoreError::backend("postgres", "no pool"))?;
                Counted::Postgres(Box::new(store::Postgres::with_pool(pool, graph, options)?))
            }
            Kind::Memory => Counted::Uncounted(self.open(graph)?),
        })
    }

    /// Postgres: the server's execution time of the store's one-date cache
    /// read (the query the store runs for `iter_by_index` with one key),
    /// from `EXPLAIN ANALYZE`, median of 5, in µs.
    fn cache_read_server_us(&self, date: chrono::NaiveDate) -> Result<Option<f64>, BoxError> {
        let Some(pool) = self.pool.as_ref().filter(|_| self.kind == Kind::Postgres) else {
            return Ok(None);
        };
        let sql = format!(
            "EXPLAIN ANALYZE SELECT t.identity, t.data, t.c FROM {}daily_cache AS t \
             JOIN unnest(ARRAY['{date}']::date[]) AS k(k0) ON t.k_date = k.k0",
            self.prefix
        );
        let mut times = pg(pool, async move |c| {
            let mut times = Vec::new();
            for _ in 0..5 {
                let mut ms = None;
                for line in c.query(&sql, &[]).await? {
                    let line: &str = line.try_get(0)?;
                    if let Some(t) = line.strip_prefix("Execution Time: ") {
                        ms = t.trim_end_matches(" ms").parse::<f64>().ok();
                    }
                }
                times.push(ms.ok_or("EXPLAIN ANALYZE gave no execution time")? * 1e3);
            }
            Ok(times)
        })?;
        times.sort_by(f64::total_cmp);
        Ok(Some(times[times.len() / 2]))
    }

    /// Bytes the state occupies on disk.
    fn bytes(&self) -> Result<Option<u64>, BoxError> {
        Ok(match self.kind {
            Kind::Memory => None,
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(&self.file)?;
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                Some(std::fs::metadata(&self.file)?.len())
            }
            Kind::Postgres => {
                let pool = self.pool.as_ref().ok_or("no pool")?;
                let like = format!("{}%", self.prefix);
                Some(pg(pool, async move |c| {
                    let row = c
                        .query_one(
                            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                             WHERE c.relkind = 'r' AND c.relname LIKE $1",
                            &[&like],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0) as u64)
                })?)
            }
        })
    }
}

/// A store whose rows written can be counted, if it is a SQL store.
enum Counted {
    Sqlite(Box<store::Sqlite>),
    Postgres(Box<store::Postgres>),
    Uncounted(Box<dyn StateStore>),
}

impl Counted {
    fn store(&mut self) -> &mut dyn StateStore {
        match self {
            Counted::Sqlite(s) => &mut **s,
            Counted::Postgres(s) => &mut **s,
            Counted::Uncounted(s) => &mut **s,
        }
    }

    fn stats(&self) -> Option<store::StoreStats> {
        match self {
            Counted::Sqlite(s) => Some(s.stats()),
            Counted::Postgres(s) => Some(s.stats()),
            Counted::Uncounted(_) => None,
        }
    }

    fn reset_stats(&self) {
        match self {
            Counted::Sqlite(s) => s.reset_stats(),
            Counted::Postgres(s) => s.reset_stats(),
            Counted::Uncounted(_) => {}
        }
    }
}

/// Runs `f` on a pooled Postgres connection, on a runtime of the bench's own.
fn pg<T>(
    pool: &store::PgPool,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, BoxError>,
) -> Result<T, BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // A fresh connection, not one of the store's (those live on its runtime).
        let config = pool_config(pool)?;
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        let out = f(&client).await;
        drop(client);
        let _ = task.await;
        out
    })
}

fn pool_config(pool: &store::PgPool) -> Result<tokio_postgres::Config, BoxError> {
    Ok(pool.connection_config().clone())
}

fn setup(
    graph: &Graph,
    q: &MeterReads,
    w: &Workload,
    store: &mut dyn StateStore,
) -> Result<(), BoxError> {
    graph.insert(store, &q.users, w.all_users())?;
    graph.insert(store, &q.meters, w.all_meters())?;
    Ok(())
}

/// How many times the memory ingest runs: it takes a tenth of a second, so
/// one run is at the mercy of whatever else the machine does in that time.
const MEMORY_RUNS: usize = 5;

/// [`serial`] on the memory store, [`MEMORY_RUNS`] times on fresh stores:
/// the run with the median throughput (every run's cache is checked).
fn memory_serial(config: &Config, graph: &Graph, q: &MeterReads) -> SerialResult {
    let mut runs = Vec::with_capacity(MEMORY_RUNS);
    for _ in 0..MEMORY_RUNS {
        let run = serial(Kind::Memory, config, graph, q)?;
        if !run.2 {
            return Ok(run);
        }
        runs.push(run);
    }
    runs.sort_by(|a, b| a.0.reads_per_s.total_cmp(&b.0.reads_per_s));
    let spread = format!(
        "{:.0}k–{:.0}k",
        runs[0].0.reads_per_s / 1e3,
        runs[runs.len() - 1].0.reads_per_s / 1e3
    );
    eprintln!("memory: {MEMORY_RUNS} runs, {spread} reads/s; the median is reported");
    Ok(runs.swap_remove(MEMORY_RUNS / 2))
}

type SerialResult = Result<(Run, Vec<(u64, f64)>, bool), BoxError>;

/// Serial ingest at batch 1000: reads/s, the series over the ingest, the
/// check of the cache, bytes per read, cache read latency.
fn serial(kind: Kind, config: &Config, graph: &Graph, q: &MeterReads) -> SerialResult {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let target = Target::new(kind, config, graph, "serial")?;
    let mut counted = target.open_counted(graph)?;
    setup(graph, q, &w, counted.store())?;
    // The state rows this very ingest writes, for the store-bound ceiling.
    counted.reset_stats();
    let batch = 1000u64;
    let batches = w.reads.div_ceil(batch);
    let progress = bar(batches, &format!("{}: ingest, batch {batch}", kind.name()));
    let mut per_batch = Vec::with_capacity(batches as usize);
    let mut series = Vec::new();
    for b in 0..batches {
        let reads = w.reads(b * batch..((b + 1) * batch).min(w.reads));
        let n = reads.len() as u64;
        let started = Instant::now();
        graph.insert(counted.store(), &q.reads, reads)?;
        let dt = started.elapsed();
        per_batch.push((n, dt));
        series.push(((b + 1) * batch, n as f64 / dt.as_secs_f64()));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let rows_written = counted.stats().map(|s| s.rows_written);
    let store = counted.store();
    let total: Duration = per_batch.iter().map(|(_, d)| *d).sum();
    let tenth = (per_batch.len() / 10).max(1);
    let rate = |slice: &[(u64, Duration)]| {
        let n: u64 = slice.iter().map(|(n, _)| n).sum();
        let t: f64 = slice.iter().map(|(_, d)| d.as_secs_f64()).sum();
        n as f64 / t.max(1e-9)
    };
    // Correctness before timing: the cache against the data.
    let cache = q.cache.zset(&mut *store)?;
    let agrees = w
        .check(&cache)
        .map_err(|e| eprintln!("{}: the cache disagrees with the data: {e}", kind.name()))
        .is_ok();
    let date = chrono::NaiveDate::from_ymd_opt(2023, 1, 2).ok_or("date")?;
    let mut reads = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let rows = q
            .cache
            .iter_by_index(&mut *store, &meter_reads::by_date(), Some(&[date]))?;
        reads.push(started.elapsed());
        assert!(!rows.is_empty());
    }
    reads.sort();
    drop(counted);
    let server_us = target.cache_read_server_us(date)?;
    let bytes = target.bytes()?;
    Ok((
        Run {
            store: kind.name().into(),
            batch,
            workers: 1,
            flush_every_set: Some(false),
            reads_per_s: w.reads as f64 / total.as_secs_f64(),
            bytes_per_read: bytes.map(|b| b as f64 / w.reads as f64),
            cache_read_us: Some(percentile(&reads, 0.5)),
            cache_read_server_us: server_us,
            first10_reads_per_s: Some(rate(&per_batch[..tenth])),
            last10_reads_per_s: Some(rate(&per_batch[per_batch.len() - tenth..])),
            settled10_reads_per_s: {
                let start = w.first_settled_read().div_ceil(batch) as usize;
                (start + tenth <= per_batch.len() - tenth)
                    .then(|| rate(&per_batch[start..start + tenth]))
            },
            state_rows_per_read: rows_written.map(|r| r as f64 / w.reads as f64),
            ..Run::default()
        },
        series,
        agrees,
    ))
}

/// Iteration latency at batch size 1, on a warm store.
fn single_reads(
    kind: Kind,
    config: &Config,
    graph: &Graph,
    q: &MeterReads,
) -> Result<Run, BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let target = Target::new(kind, config, graph, "single")?;
    let mut store = target.open(graph)?;
    setup(graph, q, &w, &mut *store)?;
    let warm = 10_000.min(w.reads);
    for b in 0..warm.div_ceil(1000) {
        graph.insert(
            &mut *store,
            &q.reads,
            w.reads(b * 1000..((b + 1) * 1000).min(warm)),
        )?;
    }
    let n = 1000u64;
    let progress = bar(n, &format!("{}: batch 1", kind.name()));
    let mut latencies = Vec::with_capacity(n as usize);
    for j in warm..warm + n {
        let read = w.read(j);
        let started = Instant::now();
        graph.insert(&mut *store, &q.reads, [read])?;
        latencies.push(started.elapsed());
        progress.inc(1);
    }
    progress.finish_and_clear();
    let total: Duration = latencies.iter().sum();
    latencies.sort();
    Ok(Run {
        store: kind.name().into(),
        batch: 1,
        workers: 1,
        flush_every_set: Some(false),
        reads_per_s: n as f64 / total.as_secs_f64(),
        iter_p50_us: Some(percentile(&latencies, 0.5)),
        iter_p99_us: Some(percentile(&latencies, 0.99)),
        ..Run::default()
    })
}

/// A parallel ingest with `workers` workers.
fn parallel_run(
    kind: Kind,
    config: &Config,
    graph: &Graph,
    q: &MeterReads,
    workers: usize,
    pipelined: bool,
) -> Result<Run, BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let target = Target::new(
        kind,
        config,
        graph,
        &format!("p{workers}{}", u8::from(pipelined)),
    )?;
    let mut store = target.open(graph)?;
    setup(graph, q, &w, &mut *store)?;
    let mut times = parallel::Counter::after(&mut *store)?;
    let batches: Vec<Changes> = (0..w.reads.div_ceil(1000))
        .map(|b| Changes::new().insert(&q.reads, w.reads(b * 1000..((b + 1) * 1000).min(w.reads))))
        .collect();
    eprintln!(
        "{}: {workers} workers, {} ...",
        kind.name(),
        if pipelined { "pipelined" } else { "atomic" }
    );
    let tally = Tally::default();
    let report = parallel::Ingest::new(graph)
        .workers(workers)
        .pipelined(pipelined)
        .run(
            |_| match kind {
                Kind::Sqlite => Ok(Box::new(Tallied::new(
                    store::Sqlite::open(&target.file, graph, target.options(true))?,
                    tally.clone(),
                )) as Box<dyn StateStore>),
                _ => target.open(graph),
            },
            batches,
            &mut times,
        )?;
    if !report.failures.is_empty() {
        return Err(format!(
            "{} batches failed: {:?}",
            report.failures.len(),
            report.failures[0]
        )
        .into());
    }
    w.check(&q.cache.zset(&mut *store)?)?;
    Ok(Run {
        store: kind.name().into(),
        batch: 1000,
        workers,
        flush_every_set: Some(pipelined),
        reads_per_s: w.reads as f64 / report.elapsed.as_secs_f64(),
        write_lock_share: (kind == Kind::Sqlite).then(|| {
            tally.total().write_lock_held.as_secs_f64() / report.elapsed.as_secs_f64().max(1e-9)
        }),
        ..Run::default()
    })
}

/// The store-bound ceiling of `kind`: `plan` (this ingest's state rows)
/// written directly ([`direct`](crate::direct)), in rows/s. The bench runs it
/// right after that store's own ingest, so both see the machine in the same
/// state (this VM's speed drifts by up to 2× within an hour).
fn direct_write(
    kind: Kind,
    config: &Config,
    plan: &[direct::BatchWrites],
) -> Result<Option<direct::Written>, BoxError> {
    let written = match (kind, &config.postgres) {
        (Kind::Sqlite, _) => direct::sqlite(&config.scratch.join("bench-direct.db"), plan)?,
        (Kind::Postgres, Some(url)) => {
            let pool = store::Postgres::pool(url, 1)?;
            pg(&pool, async |c| {
                let written = direct::postgres(c, "bench_direct_", plan).await?;
                c.batch_execute(
                    "DROP TABLE bench_direct_reads, bench_direct_sums, bench_direct_cache",
                )
                .await?;
                Ok(written)
            })?
        }
        _ => return Ok(None),
    };
    Ok(Some(written))
}

/// Rows per second over a whole direct write.
fn rows_per_s(written: &direct::Written) -> f64 {
    written.rows as f64 / written.elapsed.as_secs_f64().max(1e-9)
}

/// The plain-SQL alternative on SQLite: normalised tables, the aggregate
/// computed by a `GROUP BY` at read time.
fn sqlite_classic(config: &Config) -> Result<(f64, f64, f64), BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let file = config.scratch.join("bench-classic.db");
    let _ = std::fs::remove_file(&file);
    let (conn, _checkpoints) = direct::sqlite_connection(&file)?;
    conn.execute_batch(
        "CREATE TABLE users (user_id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE meters (meter_id BLOB PRIMARY KEY, user_id INTEGER NOT NULL);
         CREATE TABLE reads (meter_id BLOB NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL);
         CREATE INDEX reads_ts ON reads (ts);",
    )?;
    {
        let tx = conn.unchecked_transaction()?;
        for u in w.all_users() {
            tx.execute("INSERT INTO users VALUES (?, ?)", (u.user_id, &u.name))?;
        }
        for m in w.all_meters() {
            tx.execute(
                "INSERT INTO meters VALUES (?, ?)",
                (m.meter_id.as_bytes().to_vec(), m.user_id),
            )?;
        }
        tx.commit()?;
    }
    let started = Instant::now();
    for b in 0..w.reads.div_ceil(1000) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = conn.prepare_cached("INSERT INTO reads VALUES (?, ?, ?)")?;
            for r in w.reads(b * 1000..((b + 1) * 1000).min(w.reads)) {
                st.execute((
                    r.meter_id.as_bytes().to_vec(),
                    r.timestamp.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.value.get(),
                ))?;
            }
        }
        tx.commit()?;
    }
    let insert = w.reads as f64 / started.elapsed().as_secs_f64();
    let query = "SELECT u.user_id, m.meter_id, substr(r.ts, 1, 10) AS d, sum(r.value) FROM reads r \
                 JOIN meters m ON m.meter_id = r.meter_id JOIN users u ON u.user_id = m.user_id";
    let time = |sql: &str| -> Result<f64, BoxError> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut st = conn.prepare_cached(sql)?;
            let n = st.query_map([], |_| Ok(()))?.count();
            assert!(n > 0);
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(best)
    };
    let all = time(&format!("{query} GROUP BY 1, 2, 3"))?;
    let one = time(&format!(
        "{query} WHERE r.ts >= '2023-01-02' AND r.ts < '2023-01-03' GROUP BY 1, 2, 3"
    ))?;
    Ok((insert, all, one))
}

/// The plain-SQL alternative on Postgres.
fn postgres_classic(pool: &store::PgPool, config: &Config) -> Result<(f64, f64, f64), BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    pg(pool, async move |c| {
        c.batch_execute(
            "DROP TABLE IF EXISTS bench_reads, bench_meters, bench_users;
             CREATE TABLE bench_users (user_id BIGINT PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE bench_meters (meter_id UUID PRIMARY KEY, user_id BIGINT NOT NULL);
             CREATE TABLE bench_reads (meter_id UUID NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE PRECISION NOT NULL);
             CREATE INDEX bench_reads_ts ON bench_reads (ts);",
        )
        .await?;
        let ids: Vec<i64> = w.all_users().iter().map(|u| u.user_id).collect();
        let names: Vec<String> = w.all_users().into_iter().map(|u| u.name).collect();
        c.execute(
            "INSERT INTO bench_users SELECT * FROM unnest($1::int8[], $2::text[])",
            &[&ids, &names],
        )
        .await?;
        let meters: Vec<uuid::Uuid> = w.all_meters().iter().map(|m| m.meter_id).collect();
        c.execute(
            "INSERT INTO bench_meters SELECT * FROM unnest($1::uuid[], $2::int8[])",
            &[&meters, &ids],
        )
        .await?;
        let st = c.prepare("INSERT INTO bench_reads SELECT * FROM unnest($1::uuid[], $2::timestamp[], $3::float8[])").await?;
        let started = Instant::now();
        for b in 0..w.reads.div_ceil(1000) {
            let reads = w.reads(b * 1000..((b + 1) * 1000).min(w.reads));
            let m: Vec<uuid::Uuid> = reads.iter().map(|r| r.meter_id).collect();
            let t: Vec<chrono::NaiveDateTime> = reads.iter().map(|r| r.timestamp).collect();
            let v: Vec<f64> = reads.iter().map(|r| r.value.get()).collect();
            c.execute(&st, &[&m, &t, &v]).await?;
        }
        let insert = w.reads as f64 / started.elapsed().as_secs_f64();
        c.batch_execute("ANALYZE bench_reads, bench_meters, bench_users")
            .await?;
        let query = "SELECT u.user_id, m.meter_id, r.ts::date AS d, sum(r.value) FROM bench_reads r \
                     JOIN bench_meters m ON m.meter_id = r.meter_id JOIN bench_users u ON u.user_id = m.user_id";
        let mut timed = Vec::new();
        for sql in [
            format!("{query} GROUP BY 1, 2, 3"),
            format!("{query} WHERE r.ts >= '2023-01-02' AND r.ts < '2023-01-03' GROUP BY 1, 2, 3"),
        ] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let started = Instant::now();
                let rows = c.query(&sql, &[]).await?;
                assert!(!rows.is_empty());
                best = best.min(started.elapsed().as_secs_f64() * 1e3);
            }
            timed.push(best);
        }
        c.batch_execute("DROP TABLE bench_reads, bench_meters, bench_users")
            .await?;
        Ok((insert, timed[0], timed[1]))
    })
}

/// Runs everything.
///
/// # Errors
/// A store or database failure.
pub fn run(config: &Config) -> Result<Report, BoxError> {
    let (graph, q) = meter_reads::build()?;
    let mut kinds = vec![Kind::Memory, Kind::Sqlite];
    if config.postgres.is_some() {
        kinds.push(Kind::Postgres);
    }
    let mut results = Vec::new();
    let mut series = Vec::new();
    let mut disagreeing = Vec::new();
    let mut rows_per_read = None;
    let plan = direct::plan(
        &Workload {
            users: config.users,
            reads: config.reads,
        },
        1000,
    )?;
    let mut ceilings = Ceilings {
        direct_rows_per_read: plan.iter().map(|b| b.rows() as f64).sum::<f64>()
            / config.reads.max(1) as f64,
        ..Ceilings::default()
    };
    for &kind in &kinds {
        let (run, s, agrees) = if kind == Kind::Memory {
            memory_serial(config, &graph, &q)?
        } else {
            serial(kind, config, &graph, &q)?
        };
        match kind {
            Kind::Sqlite => {
                rows_per_read = run.state_rows_per_read;
                eprintln!("sqlite: the same rows written directly ...");
                if let Some(written) = direct_write(kind, config, &plan)? {
                    ceilings.sqlite_upsert_rows_per_s = rows_per_s(&written);
                    (
                        ceilings.sqlite_direct_first10_reads_per_s,
                        ceilings.sqlite_direct_last10_reads_per_s,
                    ) = written.first_and_last_tenth();
                }
            }
            Kind::Postgres => {
                eprintln!("postgres: the same rows written directly ...");
                if let Some(written) = direct_write(kind, config, &plan)? {
                    ceilings.postgres_upsert_rows_per_s = Some(rows_per_s(&written));
                    let (first, last) = written.first_and_last_tenth();
                    ceilings.postgres_direct_first10_reads_per_s = Some(first);
                    ceilings.postgres_direct_last10_reads_per_s = Some(last);
                }
            }
            Kind::Memory => {}
        }
        if !agrees {
            disagreeing.push(kind.name().to_owned());
            continue;
        }
        results.push(run);
        series.push((kind.name().to_owned(), s));
        results.push(single_reads(kind, config, &graph, &q)?);
    }
    for &kind in &kinds {
        if kind == Kind::Memory || disagreeing.iter().any(|d| d == kind.name()) {
            continue;
        }
        for pipelined in [false, true] {
            results.push(parallel_run(kind, config, &graph, &q, 2, pipelined)?);
        }
        if kind == Kind::Sqlite {
            // A lone pipelined worker: how much of its time holds the
            // write lock, which no second worker can share.
            results.push(parallel_run(kind, config, &graph, &q, 1, true)?);
        }
    }
    eprintln!("ceilings ...");
    ceilings.state_rows_per_read = rows_per_read.ok_or("the SQLite ingest counted no rows")?;
    let (insert, all, one) = sqlite_classic(config)?;
    ceilings.classic_insert_rows_per_s = insert;
    ceilings.classic_query_all_ms = all;
    ceilings.classic_query_one_date_ms = one;
    if let Some(url) = &config.postgres {
        let pool = store::Postgres::pool(url, 4)?;
        let (insert, all, one) = postgres_classic(&pool, config)?;
        ceilings.postgres_classic_insert_rows_per_s = Some(insert);
        ceilings.postgres_classic_query_all_ms = Some(all);
        ceilings.postgres_classic_query_one_date_ms = Some(one);
    }
    let (feeds, async_hop_us) = feed_figures(config)?;
    Ok(Report {
        workload: "meter_reads",
        users: config.users,
        reads: config.reads,
        results,
        ceilings,
        series,
        disagreeing,
        feeds,
        async_hop_us,
    })
}

/// The change feed's figures on SQLite (and Postgres when configured), and
/// the async face's hop.
///
/// # Errors
/// A store or database failure.
pub fn feed_figures(config: &Config) -> Result<(Vec<FeedFigures>, Option<f64>), BoxError> {
    let mut kinds = vec![Kind::Sqlite];
    if config.postgres.is_some() {
        kinds.push(Kind::Postgres);
    }
    let figures = kinds
        .into_iter()
        .map(|k| feeds::measure(k, config))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((figures, Some(feeds::async_hop_us()?)))
}

/// [`feed_figures`] as a table.
pub fn render_feeds(figures: &[FeedFigures], async_hop_us: Option<f64>) -> String {
    feeds::render(figures, async_hop_us)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

/// The report as tables: the runs, then the ceilings with ratios and the
/// targets of the bench issue.
pub fn render(report: &Report) -> String {
    let mut runs = comfy_table::Table::new();
    runs.set_header([
        "store",
        "batch",
        "workers",
        "flush_every_set",
        "reads/s",
        "p50 µs",
        "p99 µs",
        "bytes/read",
        "cache read µs",
        "first 10% r/s",
        "settled 10% r/s",
        "last 10% r/s",
        "write lock",
    ]);
    for r in &report.results {
        runs.add_row([
            r.store.clone(),
            r.batch.to_string(),
            r.workers.to_string(),
            r.flush_every_set.map_or("-".into(), |f| f.to_string()),
            format!("{:.0}", r.reads_per_s),
            fmt(r.iter_p50_us, 0),
            fmt(r.iter_p99_us, 0),
            fmt(r.bytes_per_read, 0),
            fmt(r.cache_read_us, 0),
            fmt(r.first10_reads_per_s, 0),
            fmt(r.settled10_reads_per_s, 0),
            fmt(r.last10_reads_per_s, 0),
            fmt(r.write_lock_share, 2),
        ]);
    }
    let c = &report.ceilings;
    let find = |store: &str, batch: u64, workers: usize, flush: Option<bool>| {
        report.results.iter().find(|r| {
            r.store == store
                && r.batch == batch
                && r.workers == workers
                && r.flush_every_set == flush
        })
    };
    let mut checks = comfy_table::Table::new();
    checks.set_header(["figure", "ours", "bound / target", "ratio", "target met"]);
    let mut row = |what: &str, ours: f64, bound: f64, ratio: Option<f64>, ok: bool| {
        checks.add_row([
            what.to_owned(),
            format!("{ours:.1}"),
            format!("{bound:.1}"),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            mark(ok).to_owned(),
        ]);
    };
    if let Some(m) = find("memory", 1000, 1, Some(false)) {
        row(
            "memory reads/s ≥ 1,000,000",
            m.reads_per_s,
            1e6,
            None,
            m.reads_per_s >= 1e6,
        );
    }
    let sqlite_ceiling = c.sqlite_upsert_rows_per_s / c.state_rows_per_read.max(1e-9);
    if let Some(s) = find("sqlite", 1000, 1, Some(false)) {
        row(
            "sqlite reads/s ≥ 50,000",
            s.reads_per_s,
            50_000.0,
            None,
            s.reads_per_s >= 50_000.0,
        );
        let ratio = s.reads_per_s / sqlite_ceiling;
        row(
            "sqlite vs store-bound ceiling ≥ 50%",
            s.reads_per_s,
            sqlite_ceiling,
            Some(ratio),
            ratio >= 0.5,
        );
        row(
            "sqlite bytes/read ≤ 200",
            s.bytes_per_read.unwrap_or(0.0),
            200.0,
            None,
            s.bytes_per_read.unwrap_or(f64::MAX) <= 200.0,
        );
    }
    if let (Some(p), Some(up)) = (
        find("postgres", 1000, 1, Some(false)),
        c.postgres_upsert_rows_per_s,
    ) {
        let ceiling = up / c.state_rows_per_read.max(1e-9);
        row(
            "postgres reads/s ≥ 25,000",
            p.reads_per_s,
            25_000.0,
            None,
            p.reads_per_s >= 25_000.0,
        );
        let ratio = p.reads_per_s / ceiling;
        row(
            "postgres vs store-bound ceiling ≥ 50%",
            p.reads_per_s,
            ceiling,
            Some(ratio),
            ratio >= 0.5,
        );
    }
    for store in ["memory", "sqlite", "postgres"] {
        if let Some(r) = find(store, 1000, 1, Some(false)) {
            let (first, last) = (
                r.first10_reads_per_s.unwrap_or(0.0),
                r.last10_reads_per_s.unwrap_or(0.0),
            );
            let ratio = last / first.max(1e-9);
            row(
                &format!("{store} last 10% ≥ 75% of first 10%"),
                last,
                first,
                Some(ratio),
                ratio >= 0.75,
            );
            let direct = match store {
                "sqlite" => Some((
                    c.sqlite_direct_first10_reads_per_s,
                    c.sqlite_direct_last10_reads_per_s,
                )),
                "postgres" => c
                    .postgres_direct_first10_reads_per_s
                    .zip(c.postgres_direct_last10_reads_per_s),
                _ => None,
            };
            if let Some((first, last)) = direct {
                row(
                    &format!(
                        "{store} direct writes of the same rows, last 10% vs first 10%: the bound, reported"
                    ),
                    last,
                    first,
                    Some(last / first.max(1e-9)),
                    true,
                );
            }
            if let Some(settled) = r.settled10_reads_per_s {
                row(
                    &format!(
                        "{store} last 10% vs 10% once every daily sum exists: reported, no target"
                    ),
                    last,
                    settled,
                    Some(last / settled.max(1e-9)),
                    true,
                );
            }
        }
    }
    for (store, limit) in [("memory", 20.0), ("sqlite", 150.0), ("postgres", 1500.0)] {
        if let Some(r) = find(store, 1, 1, Some(false)) {
            let p50 = r.iter_p50_us.unwrap_or(f64::MAX);
            row(
                &format!("{store} batch-1 p50 µs ≤ {limit}"),
                p50,
                limit,
                None,
                p50 <= limit,
            );
        }
    }
    for store in ["sqlite", "postgres"] {
        if let Some(r) = find(store, 1000, 1, Some(false)) {
            let us = r.cache_read_us.unwrap_or(f64::MAX);
            row(
                &format!("{store} cache read of one date µs ≤ 1000"),
                us,
                1000.0,
                None,
                us <= 1000.0,
            );
            if let Some(server) = r.cache_read_server_us {
                row(
                    &format!(
                        "{store} cache read of one date: the server's execution time (EXPLAIN ANALYZE) µs, the bound, reported"
                    ),
                    server,
                    us,
                    Some(server / us.max(1e-9)),
                    true,
                );
            }
        }
        let serial = find(store, 1000, 1, Some(false)).map_or(0.0, |r| r.reads_per_s);
        for flush in [false, true] {
            if let Some(r) = find(store, 1000, 2, Some(flush)) {
                let speedup = r.reads_per_s / serial.max(1e-9);
                // The bench issue sets 1.5× for pipelined iterations and
                // asks only for a report of all-or-nothing ones: those wait
                // for every table to reach the iteration before them, whose
                // writes become visible only when it commits as a whole, so
                // two workers overlap little more than staging their input.
                let target = if flush { 1.5 } else { 0.0 };
                let goal = if target > 0.0 {
                    format!("≥ {target}×")
                } else {
                    "reported, no target".to_owned()
                };
                row(
                    &format!("{store} 2 workers, flush_every_set {flush}: speedup {goal}"),
                    r.reads_per_s,
                    serial,
                    Some(speedup),
                    speedup >= target,
                );
            }
        }
        for workers in [1, 2] {
            if let Some(share) =
                find(store, 1000, workers, Some(true)).and_then(|r| r.write_lock_share)
            {
                let what = if workers == 1 {
                    format!(
                        "{store} 1 worker, flush_every_set true: share of time holding the write lock (bound on any speedup: {:.2}×), reported",
                        1.0 / share.max(1e-9)
                    )
                } else {
                    format!(
                        "{store} {workers} workers, flush_every_set true: share of time the write lock is held (1 = saturated), reported"
                    )
                };
                row(&what, share, 1.0, Some(share), true);
            }
        }
    }
    let mut ceil = comfy_table::Table::new();
    ceil.set_header(["ceiling", "value"]);
    ceil.add_row([
        "sqlite direct writes of the state rows, rows/s".to_owned(),
        format!("{:.0}", c.sqlite_upsert_rows_per_s),
    ]);
    if let Some(p) = c.postgres_upsert_rows_per_s {
        ceil.add_row([
            "postgres direct writes of the state rows, rows/s".to_owned(),
            format!("{p:.0}"),
        ]);
    }
    ceil.add_row([
        "state rows written per read".to_owned(),
        format!("{:.2}", c.state_rows_per_read),
    ]);
    ceil.add_row([
        "direct writes: rows per read".to_owned(),
        format!("{:.2}", c.direct_rows_per_read),
    ]);
    ceil.add_row([
        "plain SQL (sqlite): insert rows/s".to_owned(),
        format!("{:.0}", c.classic_insert_rows_per_s),
    ]);
    ceil.add_row([
        "plain SQL (sqlite): GROUP BY all dates ms".to_owned(),
        format!("{:.1}", c.classic_query_all_ms),
    ]);
    ceil.add_row([
        "plain SQL (sqlite): GROUP BY one date ms".to_owned(),
        format!("{:.1}", c.classic_query_one_date_ms),
    ]);
    if let (Some(i), Some(a), Some(o)) = (
        c.postgres_classic_insert_rows_per_s,
        c.postgres_classic_query_all_ms,
        c.postgres_classic_query_one_date_ms,
    ) {
        ceil.add_row([
            "plain SQL (postgres): insert rows/s".to_owned(),
            format!("{i:.0}"),
        ]);
        ceil.add_row([
            "plain SQL (postgres): GROUP BY all dates ms".to_owned(),
            format!("{a:.1}"),
        ]);
        ceil.add_row([
            "plain SQL (postgres): GROUP BY one date ms".to_owned(),
            format!("{o:.1}"),
        ]);
    }
    let mut out = format!(
        "meter reads: {} users, {} reads per run\n\n{runs}\n\n{ceil}\n\n{checks}\n",
        report.users, report.reads
    );
    if !report.feeds.is_empty() {
        out.push_str(&format!(
            "\n{}\n",
            feeds::render(&report.feeds, report.async_hop_us)
        ));
    }
    if !report.disagreeing.is_empty() {
        out.push_str(&format!(
            "\nNO FIGURES for stores whose results disagreed with the data: {:?}\n",
            report.disagreeing
        ));
    }
    out
}

/// Writes the report as JSON.
///
/// # Errors
/// An I/O failure.
pub fn write_json(report: &Report, path: &Path) -> Result<(), BoxError> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// Writes an SVG chart: reads/s per store (bars) and reads/s over the ingest
/// (one line per store, log scale).
///
/// # Errors
/// An I/O or drawing failure.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), BoxError> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(420);
    let serial: Vec<&Run> = report
        .results
        .iter()
        .filter(|r| r.batch == 1000 && r.workers == 1)
        .collect();
    let max = serial.iter().map(|r| r.reads_per_s).fold(1.0, f64::max);
    let mut bars = ChartBuilder::on(&left)
        .caption("reads/s, batch 1000 (log)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0..serial.len().max(1), (100f64..max * 2.0).log_scale())?;
    bars.configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|i| serial.get(*i).map_or(String::new(), |r| r.store.clone()))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let colors = [BLUE, GREEN, RED];
    bars.draw_series(serial.iter().enumerate().map(|(i, r)| {
        let mut bar = Rectangle::new(
            [(i, 100f64), (i + 1, r.reads_per_s)],
            colors[i % 3].mix(0.6).filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;
    let max_x = report.reads.max(1);
    let max_y = report
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max);
    let mut lines = ChartBuilder::on(&right)
        .caption(
            "reads/s per batch over the ingest (log)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0..max_x, (100f64..max_y * 2.0).log_scale())?;
    lines
        .configure_mesh()
        .x_desc("reads ingested")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (store, s)) in report.series.iter().enumerate() {
        let color = colors[i % 3];
        lines
            .draw_series(LineSeries::new(
                s.iter().map(|(x, y)| (*x, *y)),
                color.stroke_width(2),
            ))?
            .label(store.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    lines
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
