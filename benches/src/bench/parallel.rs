//! The 2-worker ingests and the store-bound ceilings (direct writes).

use graph::{Changes, Graph, StateStore};

use super::serial::setup;
use super::target::{Target, pg};
use super::{BoxError, Config, Kind, Run};
use crate::direct;
use crate::meter_reads::{MeterReads, Workload};
use crate::tally::{Tallied, Tally};

/// A parallel ingest with `workers` workers.
pub(super) fn parallel_run(
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
pub(super) fn direct_write(
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
pub(super) fn rows_per_s(written: &direct::Written) -> f64 {
    written.rows as f64 / written.elapsed.as_secs_f64().max(1e-9)
}
