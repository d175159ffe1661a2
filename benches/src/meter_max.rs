//! The meter-reads workload's variant "highest read per meter per day":
//! the same users, meters and reads, and the same joins as
//! [`meter_reads`](crate::meter_reads), with `group_max` where the daily
//! usage has `group_reduce_flatten`, and a cache of it by date.
//!
//! [`compare`] ingests the workload into both queries on every store, with
//! the same loop (batches of 1,000 reads), **checks both caches against
//! values computed directly from the data**, and reports each one's
//! reads/s. Run: `cargo run --release -p benches --bin meter-bench --
//! daily-max [--reads N] [--users U]` (Postgres from `STEPPING_TEST_PG`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use graph::{BoxError, Cache, Graph, GraphError, Input, Output, StateStore};
use operators::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::group_min::Kind;
use crate::meter_reads::{
    self, Meter, MeterRead, User, UserMeter, UserMeterRead, Workload, make_user_meter, with_date,
};

/// One meter's highest read on one day.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct DailyMax {
    /// The user.
    pub user_id: i64,
    /// The meter.
    pub meter_id: Uuid,
    /// The day.
    pub date: NaiveDate,
    /// The day's highest read.
    pub value: F64,
}

/// The handles of the built query.
#[derive(Debug, Clone)]
pub struct MeterMax {
    /// Users in.
    pub users: Input<User>,
    /// Meters in.
    pub meters: Input<Meter>,
    /// Reads in.
    pub reads: Input<MeterRead>,
    /// The change of the daily maxima, each iteration.
    pub daily: Output<ZSet<DailyMax>>,
    /// The daily maxima, stored, indexed by date.
    pub cache: Cache<DailyMax>,
}

/// Builds the query.
///
/// # Errors
/// None in practice (the query is fixed).
pub fn build() -> Result<(Graph, MeterMax), GraphError> {
    Graph::build(|q| {
        let (users, u) = q.input::<User>("users")?;
        let (meters, m) = q.input::<Meter>("meters")?;
        let (reads, r) = q.input::<MeterRead>("reads")?;
        let user_meters = u
            .join_map(
                m,
                &Index::new("user_id", |u: &User| u.user_id),
                &Index::new("user_id", |m: &Meter| m.user_id),
                make_user_meter,
            )
            .named("user_meters");
        let meter_reads = user_meters.join_map(
            r,
            &Index::new("meter_id", |u: &UserMeter| u.meter_id),
            &Index::new("meter_id", |r: &MeterRead| r.meter_id),
            with_date,
        );
        let day = Index::with_parts(
            "day",
            &["user_id", "meter_id", "date"],
            |r: &UserMeterRead| (r.user_id, r.meter_id, r.date),
        );
        let daily = meter_reads
            .group_max(&day, |r| r.value)
            .map(|p: &Pair<F64, (i64, Uuid, NaiveDate)>| DailyMax {
                user_id: p.right.0,
                meter_id: p.right.1,
                date: p.right.2,
                value: p.left,
            })
            .named("daily_max");
        let by_date = Index::new("date", |d: &DailyMax| d.date);
        let cache = q.cache("daily_max_cache", daily, &[&by_date])?;
        let daily = q.output("daily", daily)?;
        Ok(MeterMax {
            users,
            meters,
            reads,
            daily,
            cache,
        })
    })
}

/// The highest read of each `(user, meter, date)` among the first `n`
/// reads, computed directly from the data.
pub fn expected_max(w: &Workload, n: u64) -> BTreeMap<(i64, Uuid, NaiveDate), f64> {
    let mut max: BTreeMap<(i64, Uuid, NaiveDate), f64> = BTreeMap::new();
    for j in 0..n.min(w.reads) {
        let r = w.read(j);
        let user = (j * 7919 % w.users) as i64;
        let entry = max
            .entry((user, r.meter_id, r.timestamp.date()))
            .or_insert(f64::MIN);
        *entry = entry.max(r.value.get());
    }
    max
}

/// Whether `cache` holds exactly [`expected_max`] of all reads.
///
/// # Errors
/// A description of the first difference.
pub fn check(w: &Workload, cache: &ZSet<DailyMax>) -> Result<(), String> {
    let expected = expected_max(w, w.reads);
    let got: BTreeMap<(i64, Uuid, NaiveDate), f64> = cache
        .iter()
        .map(|(d, weight)| match weight {
            1 => Ok(((d.user_id, d.meter_id, d.date), d.value.get())),
            _ => Err(format!("{d:?} has weight {weight}")),
        })
        .collect::<Result<_, _>>()?;
    if got.len() != cache.len() || got != expected {
        return Err(format!(
            "{} rows, expected {}; first difference: {:?}",
            cache.len(),
            expected.len(),
            expected.iter().find(|(k, v)| got.get(*k) != Some(*v))
        ));
    }
    Ok(())
}

/// The reads/s of the daily sum and the daily maximum on one store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// `memory`, `sqlite` or `postgres`.
    pub store: &'static str,
    /// The daily sum's ingest (`meter_reads::build`), reads/s.
    pub sum_reads_per_s: f64,
    /// The daily maximum's ingest ([`build`]), reads/s.
    pub max_reads_per_s: f64,
}

/// Ingests `w`'s reads in batches of 1,000 after its users and meters;
/// returns the time the reads took.
fn ingest(
    graph: &Graph,
    store: &mut dyn StateStore,
    inputs: (&Input<User>, &Input<Meter>, &Input<MeterRead>),
    w: &Workload,
) -> Result<Duration, BoxError> {
    graph.insert(store, inputs.0, w.all_users())?;
    graph.insert(store, inputs.1, w.all_meters())?;
    let mut total = Duration::ZERO;
    let batch = 1000;
    for b in 0..w.reads.div_ceil(batch) {
        let reads = w.reads(b * batch..((b + 1) * batch).min(w.reads));
        let started = Instant::now();
        graph.insert(store, inputs.2, reads)?;
        total += started.elapsed();
    }
    Ok(total)
}

/// Both queries on every store: reads/s, each cache checked first.
///
/// # Errors
/// A store failure, or a cache that disagrees with the data.
pub fn compare(
    w: &Workload,
    postgres: &Option<String>,
    scratch: &std::path::Path,
) -> Result<Vec<Throughput>, BoxError> {
    let (sum_graph, sum) = meter_reads::build()?;
    let (max_graph, max) = build()?;
    let mut out = Vec::new();
    for kind in Kind::all(postgres) {
        eprintln!("{}: daily sum, then daily max", kind.name());
        let mut store = kind.open(&sum_graph, postgres, scratch, "daily_sum")?;
        let sum_time = ingest(
            &sum_graph,
            &mut *store,
            (&sum.users, &sum.meters, &sum.reads),
            w,
        )?;
        w.check(&sum.cache.zset(&mut *store)?)
            .map_err(|e| format!("{}: daily sums: {e}; not reporting", kind.name()))?;
        drop(store);
        kind.clean(postgres, scratch, "daily_sum");
        let mut store = kind.open(&max_graph, postgres, scratch, "daily_max")?;
        let max_time = ingest(
            &max_graph,
            &mut *store,
            (&max.users, &max.meters, &max.reads),
            w,
        )?;
        check(w, &max.cache.zset(&mut *store)?)
            .map_err(|e| format!("{}: daily maxima: {e}; not reporting", kind.name()))?;
        drop(store);
        kind.clean(postgres, scratch, "daily_max");
        out.push(Throughput {
            store: kind.name(),
            sum_reads_per_s: w.reads as f64 / sum_time.as_secs_f64(),
            max_reads_per_s: w.reads as f64 / max_time.as_secs_f64(),
        });
    }
    Ok(out)
}

/// The throughputs as a table.
pub fn render(rows: &[Throughput]) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "store",
        "daily sum, reads/s",
        "daily max, reads/s",
        "max / sum",
    ]);
    for t in rows {
        table.add_row([
            t.store.to_string(),
            format!("{:.0}", t.sum_reads_per_s),
            format!("{:.0}", t.max_reads_per_s),
            format!("{:.2}", t.max_reads_per_s / t.sum_reads_per_s),
        ]);
    }
    table.to_string()
}

/// `meter-bench daily-max [--reads N] [--users U]`.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut w = Workload {
        users: 1000,
        reads: 100_000,
    };
    let mut args = args;
    while let Some(a) = args.next() {
        let value = args.next();
        let parsed = match (a.as_str(), value) {
            ("--reads", Some(v)) => v.parse().map(|n| w.reads = n).is_ok(),
            ("--users", Some(v)) => v.parse().map(|n| w.users = n).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("usage: meter-bench daily-max [--reads N] [--users U]");
            return ExitCode::from(2);
        }
    }
    let postgres = std::env::var("STEPPING_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty());
    match compare(&w, &postgres, &std::env::temp_dir()) {
        Ok(rows) => {
            println!("{}", render(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
