//! The serial ingests and batch-size-1 latency.

use std::time::{Duration, Instant};

use graph::{Graph, StateStore};

use super::target::Target;
use super::{BoxError, Config, Kind, Run, bar, percentile};
use crate::meter_reads::{self, MeterReads, Workload};

pub(super) fn setup(
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
pub(super) const MEMORY_RUNS: usize = 5;

/// [`serial`] on the memory store, [`MEMORY_RUNS`] times on fresh stores:
/// the run with the median throughput (every run's cache is checked).
pub(super) fn memory_serial(config: &Config, graph: &Graph, q: &MeterReads) -> SerialResult {
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

pub(super) type SerialResult = Result<(Run, Vec<(u64, f64)>, bool), BoxError>;

/// Serial ingest at batch 1000: reads/s, the series over the ingest, the
/// check of the cache, bytes per read, cache read latency.
pub(super) fn serial(kind: Kind, config: &Config, graph: &Graph, q: &MeterReads) -> SerialResult {
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
pub(super) fn single_reads(
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
