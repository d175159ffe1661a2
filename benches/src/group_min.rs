//! `group_min` under deletes of each group's minimum, on every store: the
//! time per delete for groups of 1,000 and of 100,000 rows. A delete of a
//! group's minimum must read the next one through the ordered state, not
//! the group, so the two sizes should cost about the same.
//!
//! Run: `cargo run --release -p benches --bin meter-bench -- group-min`
//! (`--sizes 1000,100000 --groups 2 --deletes 300`; Postgres from
//! `STEPPING_TEST_PG`, skipped loudly without it).
//!
//! Each store gets `groups` groups of `size` rows `(group, 0..size)`,
//! loaded in iterations of 10,000 rows (the input is transient, so only
//! `group_min`'s state is written); then `deletes` iterations each remove
//! the current minimum of one group, round robin, and **each output is
//! checked** to be exactly "the old minimum out, the next one in" before
//! any time is reported. Reported: the median and mean wall time of a
//! delete's iteration, and the ratio of the largest size's median to the
//! smallest's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use graph::{BoxError, Graph, Input, Output, StateStore};
use operators::prelude::*;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rows per group, one measurement each.
    pub sizes: Vec<i64>,
    /// Groups of each size.
    pub groups: i64,
    /// Deletes timed per store and size.
    pub deletes: i64,
    /// A Postgres connection string, or none to skip Postgres.
    pub postgres: Option<String>,
    /// Where SQLite files go.
    pub scratch: PathBuf,
}

impl Default for Config {
    /// Groups of 1,000 and 100,000 rows, two of each, 300 deletes; Postgres
    /// from `STEPPING_TEST_PG`, SQLite files in the temporary directory.
    fn default() -> Self {
        Config {
            sizes: vec![1_000, 100_000],
            groups: 2,
            deletes: 300,
            postgres: std::env::var("STEPPING_TEST_PG")
                .ok()
                .filter(|s| !s.is_empty()),
            scratch: std::env::temp_dir(),
        }
    }
}

/// One store and size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    /// `memory`, `sqlite` or `postgres`.
    pub store: &'static str,
    /// Rows per group.
    pub group_rows: i64,
    /// Deletes timed.
    pub deletes: i64,
    /// Median time of a delete's iteration, µs.
    pub median_us: f64,
    /// Mean time of a delete's iteration, µs.
    pub mean_us: f64,
}

/// The stores measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }

    /// The stores to run: Postgres only with a connection string.
    pub(crate) fn all(postgres: &Option<String>) -> Vec<Kind> {
        let mut kinds = vec![Kind::Memory, Kind::Sqlite];
        if postgres.is_some() {
            kinds.push(Kind::Postgres);
        } else {
            eprintln!(
                "*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set (run `cargo xtask bench`) ***"
            );
        }
        kinds
    }

    /// A fresh, empty store for `graph`: a new SQLite file under `scratch`,
    /// or tables under the prefix `b_{tag}_` (dropped first, and by
    /// [`clean`](Self::clean)).
    pub(crate) fn open(
        self,
        graph: &Graph,
        postgres: &Option<String>,
        scratch: &std::path::Path,
        tag: &str,
    ) -> Result<Box<dyn StateStore>, BoxError> {
        let options = store::OpenOptions {
            prefix: format!("b_{tag}_"),
            ..Default::default()
        };
        Ok(match (self, postgres) {
            (Kind::Memory, _) => Box::new(store::Memory::new(graph)),
            (Kind::Sqlite, _) => {
                let file = scratch.join(format!("bench-{tag}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = file.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
                Box::new(store::Sqlite::open(&file, graph, options)?)
            }
            (Kind::Postgres, Some(url)) => {
                // Whatever an earlier run (of any version) left there.
                crate::pg::drop_tables_with_prefix(url, &options.prefix)?;
                let pool = store::Postgres::pool(url, 4)?;
                Box::new(store::Postgres::with_pool(pool, graph, options)?)
            }
            (Kind::Postgres, None) => return Err("no Postgres configured".into()),
        })
    }

    /// Drops what [`open`](Self::open) made for `tag` (SQL stores).
    pub(crate) fn clean(self, postgres: &Option<String>, scratch: &std::path::Path, tag: &str) {
        match (self, postgres) {
            (Kind::Postgres, Some(url)) => {
                if let Err(e) = crate::pg::drop_tables_with_prefix(url, &format!("b_{tag}_")) {
                    eprintln!("could not drop the tables b_{tag}_*: {e}");
                }
            }
            (Kind::Sqlite, _) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(scratch.join(format!("bench-{tag}.db{suffix}")));
                }
            }
            _ => {}
        }
    }
}

type Row = (i64, i64);

/// The input of rows and the output of each group's minimum.
type Handles = (Input<Row>, Output<ZSet<Pair<i64, i64>>>);

fn query() -> Result<(Graph, Handles), graph::GraphError> {
    Graph::build(|q| {
        let (input, rows) = q.input::<Row>("rows")?;
        let by_group = Index::new("group", |r: &Row| r.0);
        let mins = rows.transient().group_min(&by_group, |r| r.1);
        Ok((input, q.output("mins", mins)?))
    })
}

/// Loads `groups × size` rows into a fresh `kind` store, then times
/// `deletes` deletes of a group's minimum, checking each output.
fn measure(kind: Kind, config: &Config, size: i64) -> Result<Measure, BoxError> {
    let (graph, (input, mins)) = query()?;
    let mut store = kind.open(&graph, &config.postgres, &config.scratch, "group_min")?;
    let rows: Vec<Row> = (0..config.groups)
        .flat_map(|g| (0..size).map(move |v| (g, v)))
        .collect();
    for chunk in rows.chunks(10_000) {
        graph.insert(&mut *store, &input, chunk.iter().copied())?;
    }
    let mut times = Vec::with_capacity(config.deletes as usize);
    for i in 0..config.deletes {
        let (g, v) = (i % config.groups, i / config.groups);
        let started = Instant::now();
        let out = graph.remove(&mut *store, &input, [(g, v)])?;
        times.push(started.elapsed());
        let expected = zset! { Pair::new(v, g) => -1, Pair::new(v + 1, g) => 1 };
        if out.get(&mins)? != &expected {
            return Err(format!(
                "{}: deleting ({g}, {v}) gave {:?}, expected {expected:?}; not timing",
                kind.name(),
                out.get(&mins)?
            )
            .into());
        }
    }
    drop(store);
    kind.clean(&config.postgres, &config.scratch, "group_min");
    times.sort();
    let total: Duration = times.iter().sum();
    Ok(Measure {
        store: kind.name(),
        group_rows: size,
        deletes: config.deletes,
        median_us: times[times.len() / 2].as_secs_f64() * 1e6,
        mean_us: total.as_secs_f64() * 1e6 / times.len() as f64,
    })
}

/// Every store at every size.
///
/// # Errors
/// A store failure, or a delete whose output is not the expected one.
pub fn run(config: &Config) -> Result<Vec<Measure>, BoxError> {
    if config.groups < 1
        || config.deletes < 1
        || config
            .sizes
            .iter()
            .any(|s| *s <= config.deletes / config.groups + 1)
    {
        return Err("every size must be larger than the deletes per group".into());
    }
    let mut out = Vec::new();
    for kind in Kind::all(&config.postgres) {
        for &size in &config.sizes {
            eprintln!("{}: groups of {size} rows", kind.name());
            out.push(measure(kind, config, size)?);
        }
    }
    Ok(out)
}

/// The bound on a delete's cost in a group of the largest size
/// against one of the smallest: independent of the group's size, within
/// noise.
pub const MAX_RATIO: f64 = 2.0;

/// The measures as a table, with each size's ratio to the store's smallest,
/// checked against [`MAX_RATIO`].
pub fn render(measures: &[Measure]) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "store",
        "rows per group",
        "deletes",
        "median µs/delete",
        "mean µs/delete",
        "vs smallest",
        "≤ 2×",
    ]);
    for m in measures {
        let smallest = measures
            .iter()
            .filter(|o| o.store == m.store)
            .min_by_key(|o| o.group_rows)
            .map_or(m.median_us, |o| o.median_us);
        table.add_row([
            m.store.to_string(),
            m.group_rows.to_string(),
            m.deletes.to_string(),
            format!("{:.1}", m.median_us),
            format!("{:.1}", m.mean_us),
            format!("{:.2}×", m.median_us / smallest),
            if m.median_us / smallest <= MAX_RATIO {
                "✓"
            } else {
                "✗"
            }
            .to_string(),
        ]);
    }
    table.to_string()
}

/// `meter-bench group-min [--sizes 1000,100000] [--groups 2] [--deletes 300]`.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut config = Config::default();
    let mut args = args;
    while let Some(a) = args.next() {
        let value = args.next();
        let parsed = match (a.as_str(), value) {
            ("--sizes", Some(v)) => v
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<i64>, _>>()
                .map(|s| config.sizes = s)
                .is_ok(),
            ("--groups", Some(v)) => v.parse().map(|n| config.groups = n).is_ok(),
            ("--deletes", Some(v)) => v.parse().map(|n| config.deletes = n).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!(
                "usage: meter-bench group-min [--sizes 1000,100000] [--groups 2] [--deletes 300]"
            );
            return ExitCode::from(2);
        }
    }
    match run(&config) {
        Ok(measures) => {
            println!("{}", render(&measures));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
