//! Changing the query (issue 22), per SQL store: the meter-reads store,
//! ingested with the query, migrated to its next version (a cache of each
//! user's monthly totals, [`build_with_monthly`](crate::meter_reads::build_with_monthly)),
//! beside re-ingesting every read into an empty store with the new
//! version; the rows the migration writes to the states it keeps; and what
//! keeping the inputs costs the ingest (the query with `.transient()`
//! inputs beside the default).

use std::time::Instant;

use serde::Serialize;

use super::serial::setup;
use super::target::{Counted, Target};
use super::{BoxError, Config, Kind, bar};
use crate::meter_reads::{self, MeterReads, Workload};

/// The migration's figures on one store.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MigrationRun {
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Seconds to migrate the ingested store (the open with
    /// `OpenOptions::migrate`, from call to return).
    pub migrate_s: f64,
    /// Seconds to ingest the users, meters and every read, in batches of
    /// 1000, into an empty store with the new query.
    pub reingest_s: f64,
    /// `reingest_s / migrate_s` (target ≥ 10).
    pub speedup: f64,
    /// State rows the migration wrote.
    pub rows_written: u64,
    /// Of those, rows written to states the plan keeps (target 0): the rows
    /// written beyond the computed states' rows.
    pub rows_written_to_kept: u64,
    /// States the plan kept, and computed.
    pub kept_states: usize,
    /// States the plan computed.
    pub computed_states: usize,
    /// Ingest reads/s of the query as it is (inputs kept), the faster of two
    /// runs interleaved with those of the transient one.
    pub kept_inputs_reads_per_s: f64,
    /// Ingest reads/s of the same query with `.transient()` inputs.
    pub transient_inputs_reads_per_s: f64,
    /// `1 - kept / transient`: the share of throughput keeping the inputs
    /// costs (target ≤ 5%; negative when the kept run was the faster).
    pub kept_inputs_cost: f64,
    /// State rows written per read, inputs kept and transient.
    pub kept_inputs_rows_per_read: f64,
    /// See [`kept_inputs_rows_per_read`](Self::kept_inputs_rows_per_read).
    pub transient_inputs_rows_per_read: f64,
}

/// Ingests the users, meters and every read (batches of 1000) into
/// `target` with `graph`: seconds taken by the reads, and state rows
/// written per read.
fn ingest(
    kind: Kind,
    config: &Config,
    target: &Target,
    graph: &graph::Graph,
    q: &MeterReads,
    what: &str,
) -> Result<(f64, f64), BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let mut counted = target.open_counted(graph)?;
    setup(graph, q, &w, counted.store())?;
    counted.reset_stats();
    let batches = w.reads.div_ceil(1000);
    let progress = bar(batches, &format!("{}: {what}", kind.name()));
    let started = Instant::now();
    for b in 0..batches {
        let reads = w.reads(b * 1000..((b + 1) * 1000).min(w.reads));
        graph.insert(counted.store(), &q.reads, reads)?;
        progress.inc(1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let cache = q.cache.zset(counted.store())?;
    w.check(&cache).map_err(|e| {
        format!(
            "{}: {what}: the cache disagrees with the data: {e}",
            kind.name()
        )
    })?;
    let rows = counted.stats().map_or(0, |s| s.rows_written);
    Ok((elapsed, rows as f64 / w.reads.max(1) as f64))
}

/// The migration figures on `kind` (a SQL store).
pub(super) fn migration_run(kind: Kind, config: &Config) -> Result<MigrationRun, BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let (old, q) = meter_reads::build()?;
    let (new, qn, monthly) = meter_reads::build_with_monthly()?;
    let (transient, qt) = meter_reads::build_transient()?;
    // Inputs transient, then kept, twice over (the VM's speed moves from
    // minute to minute), each the fastest of its two; the last kept store
    // is the one migrated.
    let (mut transient_s, mut kept_s) = (f64::MAX, f64::MAX);
    let (mut transient_rows, mut kept_rows) = (0.0, 0.0);
    let mut target = None;
    for _ in 0..2 {
        let t = Target::new(kind, config, &transient, "transient")?;
        let (s, rows) = ingest(kind, config, &t, &transient, &qt, "inputs transient")?;
        (transient_s, transient_rows) = (transient_s.min(s), rows);
        drop(t);
        let t = Target::new(kind, config, &old, "migrate")?;
        let (s, rows) = ingest(kind, config, &t, &old, &q, "inputs kept")?;
        (kept_s, kept_rows) = (kept_s.min(s), rows);
        target = Some(t);
    }
    let target = target.ok_or("no ingest")?;
    eprintln!("{}: migrating to the monthly cache ...", kind.name());
    let options = target.options(true).migrate();
    let started = Instant::now();
    let mut migrated = match kind {
        Kind::Sqlite => {
            Counted::Sqlite(Box::new(store::Sqlite::open(&target.file, &new, options)?))
        }
        _ => {
            let pool = target.pool.clone().ok_or("no pool")?;
            Counted::Postgres(Box::new(store::Postgres::with_pool(pool, &new, options)?))
        }
    };
    let migrate_s = started.elapsed().as_secs_f64();
    let plan = match &migrated {
        Counted::Sqlite(s) => s.migration().cloned(),
        Counted::Postgres(s) => s.migration().cloned(),
        Counted::Uncounted(_) => None,
    }
    .ok_or("the store held the new query already: nothing migrated")?;
    let rows_written = migrated.stats().map_or(0, |s| s.rows_written);
    let computed: u64 = plan
        .entries
        .iter()
        .filter(|e| e.action.backfills())
        .map(|e| e.rows.unwrap_or(0))
        .sum();
    // Correctness before figures: both caches against the data.
    w.check(&qn.cache.zset(migrated.store())?)
        .map_err(|e| format!("{}: migrated daily cache: {e}", kind.name()))?;
    w.check_monthly(&monthly.zset(migrated.store())?)
        .map_err(|e| format!("{}: migrated monthly cache: {e}", kind.name()))?;
    drop(migrated);
    drop(target);
    let again = Target::new(kind, config, &new, "reingest")?;
    let started = Instant::now();
    ingest(kind, config, &again, &new, &qn, "re-ingest, new query")?;
    let reingest_s = started.elapsed().as_secs_f64();
    let (kept, transient) = (w.reads as f64 / kept_s, w.reads as f64 / transient_s);
    Ok(MigrationRun {
        store: kind.name().into(),
        migrate_s,
        reingest_s,
        speedup: reingest_s / migrate_s.max(1e-9),
        rows_written,
        rows_written_to_kept: rows_written.saturating_sub(computed),
        kept_states: plan
            .entries
            .iter()
            .filter(|e| !e.action.backfills() && e.action != graph::PlanAction::Drop)
            .count(),
        computed_states: plan.backfilled().count(),
        kept_inputs_reads_per_s: kept,
        transient_inputs_reads_per_s: transient,
        kept_inputs_cost: 1.0 - kept / transient.max(1e-9),
        kept_inputs_rows_per_read: kept_rows,
        transient_inputs_rows_per_read: transient_rows,
    })
}

/// The migration figures as a table, with their targets.
pub(super) fn render_migrations(runs: &[MigrationRun]) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "store",
        "migrate s",
        "re-ingest s",
        "speedup (≥ 10)",
        "rows written",
        "to kept states (0)",
        "kept / computed",
        "reads/s inputs kept",
        "reads/s transient",
        "cost (≤ 5%)",
        "rows/read kept / transient",
    ]);
    for m in runs {
        t.add_row([
            m.store.clone(),
            format!("{:.3}", m.migrate_s),
            format!("{:.2}", m.reingest_s),
            format!("{:.1}×", m.speedup),
            m.rows_written.to_string(),
            m.rows_written_to_kept.to_string(),
            format!("{} / {}", m.kept_states, m.computed_states),
            format!("{:.0}", m.kept_inputs_reads_per_s),
            format!("{:.0}", m.transient_inputs_reads_per_s),
            format!("{:.1}%", m.kept_inputs_cost * 100.0),
            format!(
                "{:.2} / {:.2}",
                m.kept_inputs_rows_per_read, m.transient_inputs_rows_per_read
            ),
        ]);
    }
    format!("changing the query: add the monthly cache and migrate\n{t}\n")
}
