//! What a change feed costs (issue 25), on SQLite and Postgres: the
//! meter-reads ingest (batches of 1,000) with and without the feed
//! `daily_changes` (target: at most 10% fewer reads/s), and the latency
//! from `insert` returning to a consumer waiting in another thread (its
//! own store handle, as another process would have) receiving the change
//! (targets: p50 at most 2 ms on SQLite, 5 ms on Postgres); and what one
//! `poll` costs a consumer catching up on every iteration of the ingest.
//! Also the async face's fixed cost: one `spawn_blocking` hop of
//! `AsyncStore`.
//!
//! Run alone: `meter-bench feeds [--reads N] [--users U] [--out DIR]`
//! (`cargo xtask bench` runs it as part of the whole bench).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use graph::{FeedStore, Graph, StateStore};
use serde::Serialize;

use super::{BoxError, Config, Kind, percentile};
use crate::meter_reads::{self, MeterReads, Workload};

/// The feed's figures on one store.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FeedFigures {
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Reads/s of the serial ingest without a feed (median of the runs).
    pub plain_reads_per_s: f64,
    /// Reads/s of the same ingest with the feed (median of the runs).
    pub feed_reads_per_s: f64,
    /// `1 - feed / plain`, in percent: what the feed costs.
    pub cost_pct: f64,
    /// Median latency from `insert` returning to the waiting consumer
    /// receiving the change, µs.
    pub latency_p50_us: f64,
    /// Its 99th percentile, µs.
    pub latency_p99_us: f64,
    /// The p50 target: 2,000 µs on SQLite, 5,000 µs on Postgres.
    pub latency_target_us: f64,
    /// Mean µs of one `poll(1)` and its `ack` by a consumer draining every
    /// iteration of an ingest of `--reads` reads (a window of one time per
    /// batch, about a thousand rows each): a poll should cost the rows it
    /// returns, not the window behind it.
    pub catch_up_poll_us: f64,
}

/// Runs of each ingest (alternating, so drift affects both alike).
const RUNS: usize = 3;
/// Inserts timed for the latency.
const SAMPLES: usize = 300;

/// A fresh place for one store: a SQLite file or a Postgres prefix.
struct Place {
    kind: Kind,
    file: PathBuf,
    prefix: String,
    url: Option<String>,
}

impl Place {
    fn new(kind: Kind, config: &Config, tag: &str) -> Place {
        let file = config.scratch.join(format!("bench-feed-{tag}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let mut p = file.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        Place {
            kind,
            file,
            prefix: format!("bf_{tag}_"),
            url: config.postgres.clone(),
        }
    }

    fn open(&self, graph: &Graph) -> Result<Box<dyn Both>, BoxError> {
        let options = store::OpenOptions {
            prefix: self.prefix.clone(),
            ..store::OpenOptions::default()
        };
        Ok(match (self.kind, &self.url) {
            (Kind::Postgres, Some(url)) => Box::new(store::Postgres::open(url, graph, options)?),
            _ => Box::new(store::Sqlite::open(&self.file, graph, options)?),
        })
    }

    /// A store to ingest into and another handle on the same tables for a
    /// consumer (the memory store's tables live in the first).
    fn open_pair(&self, graph: &Graph) -> Result<(Box<dyn Both>, Box<dyn Both>), BoxError> {
        if self.kind == Kind::Memory {
            let memory = store::Memory::new(graph);
            return Ok((Box::new(memory.handle()), Box::new(memory)));
        }
        Ok((self.open(graph)?, self.open(graph)?))
    }

    fn clean(&self) -> Result<(), BoxError> {
        if let (Kind::Postgres, Some(url)) = (self.kind, &self.url) {
            crate::pg::drop_tables_with_prefix(url, &self.prefix).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A store that is both.
trait Both: StateStore + FeedStore + Send {}
impl<S: StateStore + FeedStore + Send> Both for S {}

/// A fresh store at `place` with the workload's users and meters, and a
/// second handle on it for a consumer.
fn set_up(
    place: &Place,
    graph: &Graph,
    q: &MeterReads,
    w: &Workload,
) -> Result<(Box<dyn Both>, Box<dyn Both>), BoxError> {
    place.clean()?;
    let (mut store, reader) = place.open_pair(graph)?;
    graph.insert(&mut *store, &q.users, w.all_users())?;
    graph.insert(&mut *store, &q.meters, w.all_meters())?;
    Ok((store, reader))
}

/// Every read of `w`, in batches of 1,000, one iteration each.
fn insert_reads(
    graph: &Graph,
    q: &MeterReads,
    store: &mut dyn Both,
    w: &Workload,
) -> Result<(), BoxError> {
    let mut j = 0;
    while j < w.reads {
        let end = (j + 1000).min(w.reads);
        graph.insert(store, &q.reads, w.reads(j..end))?;
        j = end;
    }
    Ok(())
}

/// Reads/s of a serial ingest at batch 1000 into a fresh store.
fn ingest(
    kind: Kind,
    config: &Config,
    w: &Workload,
    feed: bool,
    run: usize,
) -> Result<f64, BoxError> {
    let (graph, q) = if feed {
        let (graph, q, _) = meter_reads::build_with_feed()?;
        (graph, q)
    } else {
        meter_reads::build()?
    };
    let place = Place::new(
        kind,
        config,
        &format!("{}{run}", if feed { "f" } else { "p" }),
    );
    let (mut store, _) = set_up(&place, &graph, &q, w)?;
    let start = Instant::now();
    insert_reads(&graph, &q, &mut *store, w)?;
    let rate = w.reads as f64 / start.elapsed().as_secs_f64();
    drop(store);
    place.clean()?;
    Ok(rate)
}

/// Latencies (µs) from `insert` returning to a waiting consumer receiving
/// the change, one insert of one read at a time.
fn latencies(kind: Kind, config: &Config, w: &Workload) -> Result<Vec<Duration>, BoxError> {
    let (graph, q, feed) = meter_reads::build_with_feed()?;
    let place = Place::new(kind, config, "latency");
    let (mut store, reader) = set_up(&place, &graph, &q, w)?;
    let mut consumer = feed.consumer(reader, "bench")?;
    // The setup changed no daily usage: start after it.
    consumer.poll(10)?;
    let start = consumer.position();
    consumer.ack(start)?;
    let (tx, rx) = mpsc::channel::<(i64, Instant)>();
    let follower = std::thread::spawn(move || -> Result<(), String> {
        let mut received = 0;
        while received < SAMPLES {
            let got = consumer.poll(16).map_err(|e| e.to_string())?;
            if got.is_empty() {
                consumer
                    .wait(Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                continue;
            }
            let at = Instant::now();
            for (t, _) in &got {
                tx.send((*t, at)).map_err(|e| e.to_string())?;
                received += 1;
            }
            let last = consumer.position();
            consumer.ack(last).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let mut out = Vec::with_capacity(SAMPLES);
    for j in 0..SAMPLES as u64 {
        graph.insert(&mut *store, &q.reads, w.reads(j..j + 1))?;
        let returned = Instant::now();
        let t = store.last_time()?;
        // One at a time: wait for this change before the next insert.
        loop {
            let (got, at) = rx.recv_timeout(Duration::from_secs(30))?;
            if got == t {
                out.push(at.saturating_duration_since(returned));
                break;
            }
        }
    }
    follower
        .join()
        .map_err(|_| "the consumer thread panicked")?
        .map_err(|e| format!("the consumer: {e}"))?;
    drop(store);
    place.clean()?;
    Ok(out)
}

/// Mean µs of a `poll(1)` and its `ack` by a consumer that starts behind
/// the whole ingest of `w` and drains it.
fn catch_up(kind: Kind, config: &Config, w: &Workload) -> Result<f64, BoxError> {
    let (graph, q, feed) = meter_reads::build_with_feed()?;
    let place = Place::new(kind, config, "catchup");
    let (mut store, reader) = set_up(&place, &graph, &q, w)?;
    insert_reads(&graph, &q, &mut *store, w)?;
    let last = store.last_time()?;
    let mut consumer = feed.consumer(reader, "late")?;
    let (start, mut polls, mut changes) = (Instant::now(), 0u32, 0usize);
    while consumer.position() < last {
        changes += consumer.poll(1)?.len();
        polls += 1;
        consumer.ack(consumer.position())?;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(polls.max(1));
    if changes as u64 != w.reads.div_ceil(1000) {
        return Err(format!("caught up on {changes} changes, not one per batch").into());
    }
    drop((store, consumer));
    place.clean()?;
    Ok(us)
}

/// The feed's figures on `kind`.
///
/// # Errors
/// A store or database failure.
pub(super) fn measure(kind: Kind, config: &Config) -> Result<FeedFigures, BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads.min(50_000),
    };
    let (mut plain, mut fed) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        eprintln!(
            "{}: ingest without and with a feed, run {} of {RUNS} ...",
            kind.name(),
            run + 1
        );
        plain.push(ingest(kind, config, &w, false, run)?);
        fed.push(ingest(kind, config, &w, true, run)?);
    }
    plain.sort_by(f64::total_cmp);
    fed.sort_by(f64::total_cmp);
    let (plain, fed) = (plain[RUNS / 2], fed[RUNS / 2]);
    eprintln!("{}: latency to a waiting consumer ...", kind.name());
    let mut lat = latencies(kind, config, &w)?;
    lat.sort();
    eprintln!("{}: a consumer catching up ...", kind.name());
    // Behind the whole ingest of `--reads` (one time per batch of 1,000).
    let whole = Workload {
        users: config.users,
        reads: config.reads,
    };
    let catch_up_poll_us = catch_up(kind, config, &whole)?;
    Ok(FeedFigures {
        store: kind.name().to_owned(),
        plain_reads_per_s: plain,
        feed_reads_per_s: fed,
        cost_pct: (1.0 - fed / plain) * 100.0,
        latency_p50_us: percentile(&lat, 0.50),
        latency_p99_us: percentile(&lat, 0.99),
        latency_target_us: match kind {
            Kind::Postgres => 5000.0,
            Kind::Sqlite => 2000.0,
            Kind::Memory => f64::NAN,
        },
        catch_up_poll_us,
    })
}

/// The async face's hop: median µs of an `AsyncStore` call doing nothing
/// (a `spawn_blocking` round trip and the store's mutex).
///
/// # Errors
/// The runtime cannot start.
pub(super) fn async_hop_us() -> Result<f64, BoxError> {
    let (graph, _) = meter_reads::build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = store::AsyncStore::new(store::Memory::new(&graph));
    let mut times = rt.block_on(async {
        let mut times = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let start = Instant::now();
            store.with(|_| Ok(())).await?;
            times.push(start.elapsed());
        }
        Ok::<_, graph::GraphError>(times)
    })?;
    times.sort();
    Ok(percentile(&times, 0.5))
}

/// The feed figures as a table, with the targets.
pub(super) fn render(figures: &[FeedFigures], async_hop_us: Option<f64>) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header([
        "store",
        "reads/s plain",
        "reads/s with feed",
        "feed cost",
        "≤ 10%",
        "latency p50 µs",
        "p99 µs",
        "p50 target",
        "catch-up µs/poll",
    ]);
    for f in figures {
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        t.add_row([
            f.store.clone(),
            format!("{:.0}", f.plain_reads_per_s),
            format!("{:.0}", f.feed_reads_per_s),
            format!("{:.1}%", f.cost_pct),
            mark(f.cost_pct <= 10.0).to_owned(),
            format!("{:.0}", f.latency_p50_us),
            format!("{:.0}", f.latency_p99_us),
            if f.latency_target_us.is_nan() {
                "-".to_owned()
            } else {
                format!(
                    "≤ {:.0} {}",
                    f.latency_target_us,
                    mark(f.latency_p50_us <= f.latency_target_us)
                )
            },
            format!("{:.0}", f.catch_up_poll_us),
        ]);
    }
    let hop = async_hop_us.map_or_else(String::new, |h| {
        format!("\nasync face: one AsyncStore call costs {h:.1} µs (a spawn_blocking hop), median")
    });
    format!("change feeds (issue 25):\n{t}{hop}")
}
