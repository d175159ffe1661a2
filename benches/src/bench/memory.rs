//! The in-memory engine alone: the meter-reads ingest on [`store::Memory`],
//! with the figures that bound it, which timing on a shared VM cannot give
//! reliably: instructions per read (callgrind, scoped to the ingest) and
//! bytes of resident memory per read held.
//!
//! Run: `cargo run --release -p benches --bin meter-bench -- memory`
//! (`--reads 100000 --users 1000 --batch 1000 --runs 5 [--instructions]`).
//! Every run's cache is checked against the data before anything is printed.

use std::process::ExitCode;
use std::time::Instant;

use graph::{BoxError, Graph, StateStore};

use crate::meter_reads::{self, MeterRead, MeterReads, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Users (and meters).
    pub users: u64,
    /// Reads to ingest per run.
    pub reads: u64,
    /// Reads per batch (iteration).
    pub batch: u64,
    /// Ingests timed, each on a fresh store.
    pub runs: usize,
}

/// What one configuration measured.
#[derive(Debug, Clone)]
pub struct Measure {
    /// Reads/s of every run, in run order.
    pub reads_per_s: Vec<f64>,
    /// Resident memory the store holds per read after the first run:
    /// `VmRSS` after the ingest minus `VmRSS` before the store was made,
    /// over the reads. `None` where `/proc/self/status` is missing.
    pub rss_bytes_per_read: Option<f64>,
}

impl Measure {
    /// The median of [`reads_per_s`](Self::reads_per_s).
    pub fn median_reads_per_s(&self) -> f64 {
        let mut v = self.reads_per_s.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

/// The process's resident set, in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Feeds every batch to `store`: the part of a run that callgrind counts
/// (`--toggle-collect` names this function, so it is never inlined).
#[inline(never)]
pub fn ingest_batches(
    graph: &Graph,
    q: &MeterReads,
    store: &mut dyn StateStore,
    batches: Vec<Vec<MeterRead>>,
) -> Result<(), BoxError> {
    for reads in batches {
        graph.insert(store, &q.reads, reads)?;
    }
    Ok(())
}

/// Runs `config.runs` ingests on fresh memory stores; each run's cache is
/// checked against the data.
///
/// # Errors
/// A store failure, or a cache that disagrees with the data.
pub fn measure(config: &Config) -> Result<Measure, BoxError> {
    let (graph, q) = meter_reads::build()?;
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let batch = config.batch.max(1);
    let mut reads_per_s = Vec::with_capacity(config.runs);
    let mut rss_bytes_per_read = None;
    for run in 0..config.runs.max(1) {
        let batches: Vec<Vec<MeterRead>> = (0..w.reads.div_ceil(batch))
            .map(|b| w.reads(b * batch..((b + 1) * batch).min(w.reads)))
            .collect();
        // Before the store exists, with the batches already made, so only
        // what the store keeps is counted.
        let rss_before = rss_bytes();
        let mut store = store::Memory::new(&graph);
        graph.insert(&mut store, &q.users, w.all_users())?;
        graph.insert(&mut store, &q.meters, w.all_meters())?;
        let started = Instant::now();
        ingest_batches(&graph, &q, &mut store, batches)?;
        let elapsed = started.elapsed().as_secs_f64();
        if run == 0
            && let (Some(before), Some(after)) = (rss_before, rss_bytes())
        {
            rss_bytes_per_read = Some(after.saturating_sub(before) as f64 / w.reads.max(1) as f64);
        }
        w.check(&q.cache.zset(&mut store)?)
            .map_err(|e| format!("memory: the cache disagrees with the data: {e}"))?;
        reads_per_s.push(w.reads as f64 / elapsed.max(1e-9));
    }
    Ok(Measure {
        reads_per_s,
        rss_bytes_per_read,
    })
}

/// Instructions per read of the ingest alone, counted by callgrind: this
/// program runs itself once under `valgrind --tool=callgrind`, collecting
/// only inside [`ingest_batches`]. `None` when valgrind is not installed.
///
/// # Errors
/// The child run failed, or its output could not be read.
pub fn instructions_per_read(config: &Config) -> Result<Option<f64>, BoxError> {
    let exe = std::env::current_exe()?;
    let out = std::env::temp_dir().join(format!("meter-bench-callgrind.{}", std::process::id()));
    let status = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*ingest_batches*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["memory", "--runs", "1"])
        .args(["--reads", &config.reads.to_string()])
        .args(["--users", &config.users.to_string()])
        .args(["--batch", &config.batch.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let status = match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    if !status.success() {
        return Err(format!("callgrind run failed: {status}").into());
    }
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_file(&out);
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or("no total in callgrind's output")?;
    Ok(Some(total as f64 / config.reads.max(1) as f64))
}

/// `meter-bench memory [--reads N] [--users U] [--batch B] [--runs R] [--instructions]`.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut config = Config {
        users: 1000,
        reads: 100_000,
        batch: 1000,
        runs: 5,
    };
    let mut instructions = false;
    let mut runs = config.runs as u64;
    let mut args = args;
    while let Some(a) = args.next() {
        let parsed = match a.as_str() {
            "--instructions" => {
                instructions = true;
                true
            }
            flag => {
                let value = args.next().and_then(|v| v.parse::<u64>().ok());
                let slot = match flag {
                    "--reads" => &mut config.reads,
                    "--users" => &mut config.users,
                    "--batch" => &mut config.batch,
                    "--runs" => &mut runs,
                    _ => return usage(),
                };
                value.map(|v| *slot = v).is_some()
            }
        };
        if !parsed {
            return usage();
        }
    }
    config.runs = runs as usize;
    let result = measure(&config).and_then(|m| {
        let runs: Vec<String> = m
            .reads_per_s
            .iter()
            .map(|r| format!("{:.0}k", r / 1e3))
            .collect();
        println!(
            "memory, {} reads, B = {}: median {:.0} reads/s (runs: {})",
            config.reads,
            config.batch,
            m.median_reads_per_s(),
            runs.join(", ")
        );
        if let Some(rss) = m.rss_bytes_per_read {
            println!("resident memory held: {rss:.0} bytes per read");
        }
        if instructions {
            match instructions_per_read(&config)? {
                Some(i) => println!("instructions per read (callgrind): {i:.0}"),
                None => println!("instructions per read: valgrind is not installed"),
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: meter-bench memory [--reads N] [--users U] [--batch B] [--runs R] [--instructions]"
    );
    ExitCode::from(2)
}

/// How many reads the resident-memory figure of `cargo xtask bench` holds.
pub const RSS_READS: u64 = 1_000_000;

/// Runs this program twice more, each time for one figure in a fresh
/// process: instructions per read under callgrind (at `reads`) and resident
/// bytes per read held after [`RSS_READS`] reads (a fresh process, so that
/// no memory freed by earlier runs is counted or re-used).
///
/// # Errors
/// A child run failed.
pub fn annotate(run: &mut super::Run, users: u64, reads: u64) -> Result<(), BoxError> {
    eprintln!("memory: instructions per read (callgrind) and resident memory at 1M reads ...");
    let config = Config {
        users,
        reads,
        batch: run.batch,
        runs: 1,
    };
    run.instructions_per_read = instructions_per_read(&config)?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["memory", "--runs", "1", "--reads", &RSS_READS.to_string()])
        .args(["--users", &users.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!("memory run at {RSS_READS} reads failed: {}", out.status).into());
    }
    run.rss_bytes_per_read = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("resident memory held: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Ok(())
}

/// The memory engine's targets (issue 26), as rows of the bench's checks:
/// `row(figure, ours, target, ratio, met)`.
pub fn checks(m: &super::Run, row: &mut impl FnMut(&str, f64, f64, Option<f64>, bool)) {
    if let Some(i) = m.instructions_per_read {
        row(
            "memory instructions/read ≤ 1,500",
            i,
            1500.0,
            None,
            i <= 1500.0,
        );
    }
    if let Some(b) = m.rss_bytes_per_read {
        row(
            "memory RSS bytes/read at 1M ≤ 200",
            b,
            200.0,
            None,
            b <= 200.0,
        );
    }
}
