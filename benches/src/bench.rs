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
//! alternative (normalised tables, `GROUP BY` at read time). Last, on each
//! SQL store, changing the query: a migration beside a re-ingest, and what
//! keeping the inputs costs (see [`MigrationRun`]).

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::direct;
use crate::meter_reads::{self, Workload};

mod feeds;
pub mod memory;
pub mod retract;

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
    /// Memory: instructions per read of the ingest alone (callgrind; see
    /// [`memory`]).
    pub instructions_per_read: Option<f64>,
    /// Memory: resident bytes the store holds per read after ingesting
    /// [`memory::RSS_READS`] reads (see [`memory`]).
    pub rss_bytes_per_read: Option<f64>,
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
    /// Changing the query, per SQL store ([`MigrationRun`]).
    pub migrations: Vec<MigrationRun>,
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

mod classic;
mod migration;
mod parallel;
pub mod processes;
mod render;
pub mod scale;
mod serial;
mod target;

use classic::{postgres_classic, sqlite_classic};
pub use migration::MigrationRun;
use migration::migration_run;
use parallel::{direct_write, parallel_run, rows_per_s};
pub use render::{render, write_json, write_svg};
use serial::{memory_serial, serial, single_reads};

/// Only the figures of changing the query ([`MigrationRun`]), on SQLite and
/// (if configured) Postgres: `meter-bench migration`.
///
/// # Errors
/// A store or database failure, or a cache that disagrees with the data.
pub fn migrations(config: &Config) -> Result<Vec<MigrationRun>, BoxError> {
    let mut kinds = vec![Kind::Sqlite];
    if config.postgres.is_some() {
        kinds.push(Kind::Postgres);
    }
    kinds
        .into_iter()
        .map(|k| migration_run(k, config))
        .collect()
}

/// [`migrations`]' figures as a table.
pub fn render_migrations(runs: &[MigrationRun]) -> String {
    migration::render_migrations(runs)
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
            let (mut run, s, agrees) = memory_serial(config, &graph, &q)?;
            memory::annotate(&mut run, config.users, config.reads).map_err(|e| e.to_string())?;
            (run, s, agrees)
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
    let mut migrations = Vec::new();
    for &kind in &kinds {
        if kind == Kind::Memory || disagreeing.iter().any(|d| d == kind.name()) {
            continue;
        }
        migrations.push(migration_run(kind, config)?);
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
        migrations,
    })
}

/// The change feed's figures on the memory store, SQLite (and Postgres when
/// configured), and the async face's hop.
///
/// # Errors
/// A store or database failure.
pub fn feed_figures(config: &Config) -> Result<(Vec<FeedFigures>, Option<f64>), BoxError> {
    let mut kinds = vec![Kind::Memory, Kind::Sqlite];
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
