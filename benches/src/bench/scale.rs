//! The scale bench (`cargo xtask bench --scale`): the meter-reads ingest
//! at growing sizes (10k to 10M reads by default) on each store, from an
//! empty store each time: reads/s overall and over the last 10%, bytes on
//! disk per read, and for the memory store the resident memory per read
//! held. Every run's cache is checked against the data before its figures
//! count. Figures go to a table, `scale.json` and `scale.svg` (reads/s
//! against reads, both axes logarithmic).

use std::path::Path;
use std::time::{Duration, Instant};

use graph::Graph;
use serde::Serialize;

use super::serial::setup;
use super::target::Target;
use super::{BoxError, Config, Kind, bar};
use crate::meter_reads::{self, MeterReads, Workload};

/// One store at one size.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// `memory`, `sqlite` or `postgres`.
    pub store: String,
    /// Reads ingested (from an empty store).
    pub reads: u64,
    /// Reads per second over the whole ingest.
    pub reads_per_s: f64,
    /// Reads per second over its last 10%: the rate at (nearly) this size.
    pub last10_reads_per_s: f64,
    /// Bytes on disk per read (SQL stores).
    pub bytes_per_read: Option<f64>,
    /// Resident memory per read held (memory store): the process's RSS
    /// after the ingest, less its RSS before the first run.
    pub rss_bytes_per_read: Option<f64>,
    /// The ingest's wall time, seconds.
    pub seconds: f64,
    /// Postgres: CPU milliseconds per batch of the server backends serving
    /// the store (when the server runs on this machine): one server with
    /// `C` cores saturates near `1000 · C / this` batches per second.
    pub server_cpu_ms_per_batch: Option<f64>,
}

/// What the scale bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Users (and meters).
    pub users: u64,
    /// Reads per batch.
    pub batch: u64,
    /// Every store at every size, in the order run.
    pub points: Vec<Point>,
    /// Runs whose cache disagreed with the data (no figures).
    pub disagreeing: Vec<String>,
}

/// The process's resident set, in bytes (Linux; `None` elsewhere).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// One ingest of `reads` reads into an empty `kind` store.
fn point(
    kind: Kind,
    config: &Config,
    graph: &Graph,
    q: &MeterReads,
    batch: u64,
    baseline_rss: Option<u64>,
) -> Result<Option<Point>, BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let target = Target::new(kind, config, graph, "scale")?;
    let mut store = target.open(graph)?;
    setup(graph, q, &w, &mut *store)?;
    let batches = w.reads.div_ceil(batch);
    let dbname = config
        .postgres
        .as_deref()
        .and_then(super::processes::dbname_of)
        .filter(|_| kind == Kind::Postgres);
    let cpu_before = dbname
        .as_deref()
        .and_then(super::processes::backend_cpu_seconds);
    let progress = bar(batches, &format!("{}: {} reads", kind.name(), w.reads));
    let mut per_batch = Vec::with_capacity(batches as usize);
    for b in 0..batches {
        let reads = w.reads(b * batch..((b + 1) * batch).min(w.reads));
        let n = reads.len() as u64;
        let started = Instant::now();
        graph.insert(&mut *store, &q.reads, reads)?;
        per_batch.push((n, started.elapsed()));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let server_cpu = cpu_before
        .zip(
            dbname
                .as_deref()
                .and_then(super::processes::backend_cpu_seconds),
        )
        .map(|(a, b)| (b - a) * 1e3 / batches.max(1) as f64);
    let rss = rss_bytes();
    let cache = q.cache.zset(&mut *store)?;
    if let Err(e) = w.check(&cache) {
        eprintln!(
            "{} at {} reads: the cache disagrees with the data: {e}",
            kind.name(),
            w.reads
        );
        return Ok(None);
    }
    drop(cache);
    drop(store);
    let total: Duration = per_batch.iter().map(|(_, d)| *d).sum();
    let tenth = (per_batch.len() / 10).max(1);
    let last = &per_batch[per_batch.len() - tenth..];
    let last_n: u64 = last.iter().map(|(n, _)| n).sum();
    let last_t: f64 = last.iter().map(|(_, d)| d.as_secs_f64()).sum();
    let per_read = |b: u64| b as f64 / w.reads.max(1) as f64;
    Ok(Some(Point {
        store: kind.name().to_owned(),
        reads: w.reads,
        reads_per_s: w.reads as f64 / total.as_secs_f64().max(1e-9),
        last10_reads_per_s: last_n as f64 / last_t.max(1e-9),
        bytes_per_read: target.bytes()?.map(per_read),
        rss_bytes_per_read: match (kind, rss, baseline_rss) {
            (Kind::Memory, Some(now), Some(before)) => Some(per_read(now.saturating_sub(before))),
            _ => None,
        },
        seconds: total.as_secs_f64(),
        server_cpu_ms_per_batch: server_cpu,
    }))
}

/// Runs every store at every size in `sizes` (smallest first), batch
/// `batch`.
///
/// # Errors
/// A store or database failure.
pub fn run(
    config: &Config,
    sizes: &[u64],
    stores: &[&str],
    batch: u64,
) -> Result<ScaleReport, BoxError> {
    let (graph, q) = meter_reads::build()?;
    let baseline_rss = rss_bytes();
    let mut points = Vec::new();
    let mut disagreeing = Vec::new();
    for kind in [Kind::Memory, Kind::Sqlite, Kind::Postgres] {
        if !stores.contains(&kind.name()) {
            continue;
        }
        if kind == Kind::Postgres && config.postgres.is_none() {
            eprintln!("*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set ***");
            continue;
        }
        let mut sizes = sizes.to_vec();
        sizes.sort_unstable();
        for reads in sizes {
            let config = Config {
                reads,
                ..config.clone()
            };
            match point(kind, &config, &graph, &q, batch, baseline_rss)? {
                Some(p) => {
                    eprintln!(
                        "{} {} reads: {:.0} reads/s ({:.0} over the last 10%)",
                        p.store, p.reads, p.reads_per_s, p.last10_reads_per_s
                    );
                    points.push(p);
                }
                None => disagreeing.push(format!("{} at {reads} reads", kind.name())),
            }
        }
    }
    Ok(ScaleReport {
        users: config.users,
        batch,
        points,
        disagreeing,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The report as a table: one row per store and size, with each rate as a
/// share of the same store's rate at 100k reads.
pub fn render(report: &ScaleReport) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "store",
        "reads",
        "reads/s",
        "last 10% reads/s",
        "vs 100k",
        "bytes/read (disk)",
        "RSS bytes/read",
        "server CPU ms/batch",
        "seconds",
    ]);
    for p in &report.points {
        let at_100k = report
            .points
            .iter()
            .find(|o| o.store == p.store && o.reads == 100_000)
            .map(|o| o.reads_per_s);
        table.add_row([
            p.store.clone(),
            p.reads.to_string(),
            format!("{:.0}", p.reads_per_s),
            format!("{:.0}", p.last10_reads_per_s),
            opt(at_100k.map(|r| p.reads_per_s / r), 2),
            opt(p.bytes_per_read, 0),
            opt(p.rss_bytes_per_read, 0),
            opt(p.server_cpu_ms_per_batch, 1),
            format!("{:.1}", p.seconds),
        ]);
    }
    let mut out = format!(
        "meter reads at scale: {} users, batch {}, each size from an empty store\n{table}",
        report.users, report.batch
    );
    for d in &report.disagreeing {
        out.push_str(&format!("\nDISAGREED WITH THE DATA: {d}"));
    }
    out
}

/// Writes the report as JSON.
///
/// # Errors
/// An I/O failure.
pub fn write_json(report: &ScaleReport, path: &Path) -> Result<(), BoxError> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// Draws reads/s against reads per store, both axes logarithmic.
///
/// # Errors
/// A drawing or I/O failure.
pub fn write_svg(report: &ScaleReport, path: &Path) -> Result<(), BoxError> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_reads = report
        .points
        .iter()
        .map(|p| p.reads)
        .max()
        .unwrap_or(10)
        .max(10);
    let min_reads = report
        .points
        .iter()
        .map(|p| p.reads)
        .min()
        .unwrap_or(1)
        .max(1);
    let max_rate = report
        .points
        .iter()
        .map(|p| p.reads_per_s)
        .fold(10.0, f64::max);
    let min_rate = report
        .points
        .iter()
        .map(|p| p.reads_per_s.min(p.last10_reads_per_s))
        .fold(max_rate, f64::min);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "reads/s against reads ingested (log–log)",
            ("sans-serif", 18),
        )
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (min_reads as f64 / 1.5..max_reads as f64 * 1.5).log_scale(),
            (min_rate / 2.0..max_rate * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("reads")
        .y_desc("reads/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (store, color) in [("memory", BLUE), ("sqlite", GREEN), ("postgres", RED)] {
        let line: Vec<(f64, f64)> = report
            .points
            .iter()
            .filter(|p| p.store == store)
            .map(|p| (p.reads as f64, p.reads_per_s))
            .collect();
        if line.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(store)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        let last10: Vec<(f64, f64)> = report
            .points
            .iter()
            .filter(|p| p.store == store)
            .map(|p| (p.reads as f64, p.last10_reads_per_s))
            .collect();
        chart.draw_series(DashedLineSeries::new(
            last10,
            4,
            4,
            color.mix(0.6).stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `meter-bench scale [--sizes 10000,100000,1000000,10000000]
/// [--stores memory,sqlite,postgres] [--batch 1000] [--users U] [--out DIR]`.
pub fn main(args: impl Iterator<Item = String>, mut config: Config) -> std::process::ExitCode {
    let usage = "usage: meter-bench scale [--sizes N,N,...] [--stores memory,sqlite,postgres] \
                 [--batch B] [--users U] [--out DIR]";
    let mut sizes = vec![10_000, 100_000, 1_000_000, 10_000_000];
    let mut stores = vec![
        "memory".to_owned(),
        "sqlite".to_owned(),
        "postgres".to_owned(),
    ];
    let mut batch = 1000;
    let mut out = std::path::PathBuf::from("target/bench");
    let mut args = args;
    while let Some(a) = args.next() {
        let value = args.next();
        let ok = match (a.as_str(), value) {
            ("--sizes", Some(v)) => v
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .map(|s| sizes = s)
                .is_ok(),
            ("--stores", Some(v)) => {
                stores = v.split(',').map(str::to_owned).collect();
                true
            }
            ("--batch", Some(v)) => v.parse().map(|b| batch = b).is_ok() && batch > 0,
            ("--users", Some(v)) => v.parse().map(|u| config.users = u).is_ok(),
            ("--out", Some(v)) => {
                out = v.into();
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("{usage}");
            return std::process::ExitCode::from(2);
        }
    }
    let stores: Vec<&str> = stores.iter().map(String::as_str).collect();
    let result = run(&config, &sizes, &stores, batch).and_then(|report| {
        println!("{}", render(&report));
        std::fs::create_dir_all(&out)?;
        write_json(&report, &out.join("scale.json"))?;
        write_svg(&report, &out.join("scale.svg"))?;
        println!("wrote {0}/scale.json and {0}/scale.svg", out.display());
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
