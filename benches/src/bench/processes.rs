//! Ingest processes over TCP against one Postgres (`meter-bench
//! processes`): 1, 2, 4 `meter-ingest` processes share the batches of the
//! meter-reads workload (`--share K/N`), each claiming its times from the
//! tables' `SEQUENCE` as its batches start, pipelined. Reports reads/s and
//! the speed-up over one process; every run's cache is checked against
//! the data.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use super::BoxError;
use crate::meter_reads::{self, Workload};

/// One process count.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessPoint {
    /// Ingest processes.
    pub processes: usize,
    /// Reads per second, wall time from the first start to the last exit.
    pub reads_per_s: f64,
    /// Against one process.
    pub speedup: f64,
    /// CPU seconds the Postgres server's processes spent per batch (when
    /// the server runs on this machine; `None` otherwise): with `C` cores
    /// the server saturates near `C / this` batches per second.
    pub server_cpu_ms_per_batch: Option<f64>,
}

/// CPU seconds, from `/proc`, of the processes whose directory `pick`
/// accepts: the first `fields` of utime, stime, cutime and cstime (fields
/// 14 to 17 of `stat`), at Linux's 100 ticks per second.
fn cpu_seconds(pick: impl Fn(&Path) -> bool, fields: usize) -> Option<f64> {
    let mut total = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        if !pick(&dir) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the fields after the command's `)`.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            for f in rest.split_whitespace().skip(11).take(fields) {
                total += f.parse::<u64>().unwrap_or(0);
                found = true;
            }
        }
    }
    found.then(|| total as f64 / 100.0)
}

/// CPU time, in seconds, of the live server backends of this machine
/// connected to database `dbname` (their process titles name it): the
/// server's work for one store, while its sessions live.
pub(super) fn backend_cpu_seconds(dbname: &str) -> Option<f64> {
    let needle = format!(" {dbname} ");
    cpu_seconds(
        |dir| {
            std::fs::read(dir.join("cmdline")).is_ok_and(|t| {
                let title = String::from_utf8_lossy(&t);
                title.starts_with("postgres: ") && title.contains(&needle)
            })
        },
        2,
    )
}

/// The database a connection string names (`dbname=...`), if it does.
pub(super) fn dbname_of(url: &str) -> Option<String> {
    url.split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .map(|d| d.trim_matches('\'').to_owned())
}

/// CPU time, in seconds, of every process of this machine named
/// `postgres` (the server's backends and workers) and of the children they
/// reaped (the postmaster collects each exited backend's time).
fn postgres_cpu_seconds() -> Option<f64> {
    cpu_seconds(
        |dir| std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim_end() == "postgres"),
        4,
    )
}

/// The `meter-ingest` binary beside this one (`cargo build --release -p
/// benches --bins` builds both; `cargo xtask bench` does).
fn meter_ingest() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .ok_or("no directory around the running binary")?
        .join("meter-ingest");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p benches --bins`",
            path.display()
        )
        .into())
    }
}

fn ingest_command(bin: &Path, url: &str, prefix: &str, w: &Workload) -> Command {
    let mut c = Command::new(bin);
    c.args(["--postgres", url, "--prefix", prefix]).args([
        "--users",
        &w.users.to_string(),
        "--reads",
        &w.reads.to_string(),
    ]);
    c
}

/// Runs `counts` process counts, `w`'s reads each, in batches of `batch`.
///
/// # Errors
/// A process that fails, a cache that disagrees with the data, or a
/// database failure.
pub fn run(
    url: &str,
    counts: &[usize],
    w: &Workload,
    batch: u64,
) -> Result<Vec<ProcessPoint>, BoxError> {
    let bin = meter_ingest()?;
    let (graph, q) = meter_reads::build()?;
    let mut points: Vec<ProcessPoint> = Vec::new();
    for &n in counts {
        let prefix = format!("b_proc{n}_");
        crate::pg::drop_tables_with_prefix(url, &prefix).map_err(|e| e.to_string())?;
        let status = ingest_command(&bin, url, &prefix, w)
            .arg("setup")
            .status()?;
        if !status.success() {
            return Err(format!("meter-ingest setup failed ({status})").into());
        }
        eprintln!("postgres: {n} ingest processes ...");
        let cpu_before = postgres_cpu_seconds();
        let started = Instant::now();
        let children = (0..n)
            .map(|k| {
                ingest_command(&bin, url, &prefix, w)
                    .args(["ingest", "--batch", &batch.to_string()])
                    .args(["--share", &format!("{k}/{n}")])
                    .args(["--sequence", "--live-times", "--pipelined"])
                    .stdout(Stdio::null())
                    .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for mut child in children {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("an ingest process of {n} failed ({status})").into());
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let server_cpu = cpu_before.zip(postgres_cpu_seconds()).map(|(a, b)| b - a);
        let options = store::OpenOptions {
            create_tables: false,
            prefix: prefix.clone(),
            ..store::OpenOptions::default()
        };
        let mut store = store::Postgres::open(url, &graph, options)?;
        let cache = q.cache.zset(&mut store)?;
        w.check(&cache)
            .map_err(|e| format!("{n} processes: the cache disagrees with the data: {e}"))?;
        store.drop_tables()?;
        let reads_per_s = w.reads as f64 / elapsed.max(1e-9);
        let one = points.first().map_or(reads_per_s, |p| p.reads_per_s);
        eprintln!("postgres: {n} processes, {reads_per_s:.0} reads/s");
        points.push(ProcessPoint {
            processes: n,
            reads_per_s,
            speedup: reads_per_s / one,
            server_cpu_ms_per_batch: server_cpu
                .map(|cpu| cpu * 1e3 / w.reads.div_ceil(batch).max(1) as f64),
        });
    }
    Ok(points)
}

/// The curve as a table.
pub fn render(points: &[ProcessPoint]) -> String {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "processes",
        "reads/s",
        "× one process",
        "server CPU ms/batch",
    ]);
    for p in points {
        table.add_row([
            p.processes.to_string(),
            format!("{:.0}", p.reads_per_s),
            format!("{:.2}", p.speedup),
            p.server_cpu_ms_per_batch
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
        ]);
    }
    format!("Postgres, ingest processes over TCP sharing a SEQUENCE\n{table}")
}

/// `meter-bench processes [--counts 1,2,4] [--reads N] [--users U]
/// [--batch B] [--out DIR]`; Postgres from `STEPPING_TEST_PG`.
pub fn main(args: impl Iterator<Item = String>) -> std::process::ExitCode {
    let usage = "usage: meter-bench processes [--counts 1,2,4] [--reads N] [--users U] \
                 [--batch B] [--out DIR]";
    let mut counts = vec![1, 2, 4];
    let mut w = Workload {
        users: 1000,
        reads: 100_000,
    };
    let mut batch = 1000;
    let mut out = PathBuf::from("target/bench");
    let mut args = args;
    while let Some(a) = args.next() {
        let value = args.next();
        let ok = match (a.as_str(), value) {
            ("--counts", Some(v)) => v
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()
                .map(|c| counts = c)
                .is_ok(),
            ("--reads", Some(v)) => v.parse().map(|r| w.reads = r).is_ok(),
            ("--users", Some(v)) => v.parse().map(|u| w.users = u).is_ok(),
            ("--batch", Some(v)) => v.parse().map(|b| batch = b).is_ok() && batch > 0,
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
    let Some(url) = std::env::var("STEPPING_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        eprintln!("processes: STEPPING_TEST_PG is not set (run `cargo xtask bench --processes`)");
        return std::process::ExitCode::FAILURE;
    };
    let result = run(&url, &counts, &w, batch).and_then(|points| {
        println!("{}", render(&points));
        std::fs::create_dir_all(&out)?;
        std::fs::write(
            out.join("processes.json"),
            serde_json::to_string_pretty(&points)?,
        )?;
        println!("wrote {}/processes.json", out.display());
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
