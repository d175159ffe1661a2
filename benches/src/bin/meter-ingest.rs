//! `meter-ingest`: the meter-reads workload from the command line, against a
//! SQLite file or a Postgres database, so that several OS processes can
//! ingest into one store (and so that tests can start, stop and kill them).
//!
//! ```text
//! meter-ingest (--sqlite PATH | --postgres CONN) [--prefix P] [--users U] [--reads N] COMMAND
//!
//!   setup                 insert the users and meters, at time 1
//!   ingest [--batch B] [--workers W] [--pipelined] [--share K/S] [--from J --to J]
//!          [--batches b,b,...] [--sequence [--stall-after-times | --live-times]]
//!                         ingest reads J.. (default all) in batches of B (default 1000);
//!                         batch b runs at time b + 2 (after setup), so processes can split
//!                         the batches between them: with --share K/S this process runs
//!                         batches b with b mod S == K, with --batches only those listed.
//!                         With --sequence (Postgres) the times come from the tables'
//!                         sequence instead, each claimed for its batch b; a test hook,
//!                         --stall-after-times, then prints `taken T,...` and stops there
//!                         for good, running nothing (so that a test can kill it there);
//!                         with --live-times each time is claimed as its batch starts
//!   read-cache [--date YYYY-MM-DD]
//!                         print the daily-usage cache (one date or all) as CSV:
//!                         user_id,meter_id,date,value,weight
//!   last-time             print the last input time every table has committed
//!   failed                print the recorded failed batches: input_time,batch,error
//!   retry [--batch B] [--sequence]
//!                         re-run them (a batch whose changes the store lacks, taken by a
//!                         process that died, is fed again as batch b of size B), at times
//!                         after the last (or from the sequence); prints what stays lost
//!   consume --name N --out FILE --until T [--max M] [--pause-before-ack MS]
//!                         (with --feed) follow the feed `daily_changes` as consumer N:
//!                         append each change to FILE as a line `time;json`, flush, then
//!                         acknowledge it (after MS ms: a window for kill tests), until time
//!                         T is acknowledged. A line cut short by a kill is dropped on start
//!   graph [--svg FILE] [--profile [--batch B]]
//!                         the query's picture: DOT on standard output, or with --svg an
//!                         SVG file (laid out in Rust, no Graphviz needed). With --profile,
//!                         first set up and ingest the workload in batches of B with
//!                         profiling on, into the store given (a fresh one) or, without
//!                         --sqlite/--postgres, into memory; print the per-vertex profile
//!                         and each state's rows, and draw both onto the picture
//! ```

use std::process::ExitCode;

use benches::meter_reads::DailyUsage;
use benches::meter_reads::{self, MeterReads, Workload};
use chrono::NaiveDate;
use graph::{Changes, Feed, FeedStore, Graph, GraphError, Profile, StateStore, Time};
use parallel::{Counter, Given, Ingest, TimeSource};

/// Where the state lives.
#[derive(Clone)]
enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
    /// In this process only: `graph --profile` without a store.
    Memory,
}

struct Args {
    target: Target,
    prefix: String,
    workload: Workload,
    /// The query's next version: with the monthly cache.
    monthly: bool,
    /// The query with the feed `daily_changes`.
    feed: bool,
    command: Vec<String>,
}

fn usage() -> &'static str {
    "usage: meter-ingest (--sqlite PATH | --postgres CONN) [--prefix P] [--users U] [--reads N] [--monthly | --feed] \
     (setup | ingest [--batch B] [--workers W] [--pipelined | --serial] [--share K/S] [--from J] [--to J] \
     [--batches b,b,...] [--sequence [--stall-after-times | --live-times]] | read-cache [--date YYYY-MM-DD] | \
     last-time | recover | failed | retry [--batch B] [--sequence] | migrate [--dry-run] | \
     consume --name N --out FILE --until T [--max M] [--pause-before-ack MS]) \
     | meter-ingest [--sqlite PATH | --postgres CONN] graph [--svg FILE] [--profile [--batch B]]"
}

fn parse() -> Result<Args, String> {
    let mut target = None;
    let mut prefix = "st_".to_owned();
    let mut workload = Workload {
        users: 1000,
        reads: 100_000,
    };
    let mut it = std::env::args().skip(1);
    let mut command = Vec::new();
    let mut monthly = false;
    let mut feed = false;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--sqlite" => target = Some(Target::Sqlite(value("--sqlite")?.into())),
            "--postgres" => target = Some(Target::Postgres(value("--postgres")?)),
            "--prefix" => prefix = value("--prefix")?,
            "--users" => {
                workload.users = value("--users")?
                    .parse()
                    .map_err(|e| format!("--users: {e}"))?
            }
            "--reads" => {
                workload.reads = value("--reads")?
                    .parse()
                    .map_err(|e| format!("--reads: {e}"))?
            }
            "--monthly" => monthly = true,
            "--feed" => feed = true,
            _ => {
                command.push(a);
                command.extend(it.by_ref());
            }
        }
    }
    // Only the picture can do without a store (profiling in memory).
    let target = match target {
        Some(t) => t,
        None if command.first().is_some_and(|c| c == "graph") => Target::Memory,
        None => return Err("choose --sqlite PATH or --postgres CONN".into()),
    };
    Ok(Args {
        target,
        prefix,
        workload,
        monthly,
        feed,
        command,
    })
}

fn options(prefix: &str, create: bool) -> store::OpenOptions {
    store::OpenOptions {
        create_tables: create,
        prefix: prefix.to_owned(),
        ..Default::default()
    }
}

fn open(
    target: &Target,
    graph: &Graph,
    prefix: &str,
    create: bool,
) -> Result<Box<dyn StateStore>, GraphError> {
    let options = options(prefix, create);
    Ok(match target {
        Target::Sqlite(path) => Box::new(store::Sqlite::open(path, graph, options)?),
        Target::Postgres(conn) => Box::new(store::Postgres::open(conn, graph, options)?),
        Target::Memory => Box::new(store::Memory::new(graph)),
    })
}

/// The last input time every table has committed (`last_time`, the
/// smallest of the tables' times; with atomic iterations they are all
/// equal).
fn last_time(target: &Target, graph: &Graph, prefix: &str) -> Result<i64, GraphError> {
    let options = options(prefix, false);
    Ok(match target {
        Target::Sqlite(path) => store::Sqlite::open(path, graph, options)?.last_time()?,
        Target::Postgres(conn) => store::Postgres::open(conn, graph, options)?.last_time()?,
        Target::Memory => 0,
    })
}

fn flag(command: &[String], name: &str) -> Option<String> {
    command
        .iter()
        .position(|a| a == name)
        .and_then(|i| command.get(i + 1).cloned())
}

fn number(command: &[String], name: &str, default: u64) -> Result<u64, String> {
    flag(command, name).map_or(Ok(default), |v| {
        v.parse().map_err(|e| format!("{name}: {e}"))
    })
}

/// The time sequence of the Postgres tables (`--sequence`).
fn sequence(
    target: &Target,
    graph: &Graph,
    prefix: &str,
) -> Result<store::PgSequence, Box<dyn std::error::Error>> {
    let Target::Postgres(conn) = target else {
        return Err("--sequence needs --postgres".into());
    };
    let mut store = store::Postgres::open(conn, graph, options(prefix, false))?;
    Ok(store::PgSequence::of(&mut store)?)
}

/// Times from the tables' sequence, each claimed when its batch starts and
/// for the batch's number in the whole workload (`--live-times`).
struct LiveTimes {
    sequence: store::PgSequence,
    /// The workload's batch number of each of this process's batches.
    batch_numbers: Vec<i64>,
}

impl TimeSource for LiveTimes {
    fn next_time(&mut self) -> Result<i64, graph::StoreError> {
        self.sequence.next()
    }

    fn next_time_for(&mut self, batch: usize) -> Result<i64, graph::StoreError> {
        let b = self
            .batch_numbers
            .get(batch)
            .copied()
            .unwrap_or(batch as i64);
        self.sequence.next_for(b)
    }
}

/// The reads of batch `b` of size `batch`.
fn batch_reads(args: &Args, q: &MeterReads, batch: u64, b: u64) -> Option<Changes> {
    let j = b.checked_mul(batch)?;
    (j < args.workload.reads).then(|| {
        let end = (j + batch).min(args.workload.reads);
        Changes::new().insert(&q.reads, args.workload.reads(j..end))
    })
}

fn ingest(args: &Args, graph: &Graph, q: &MeterReads) -> Result<(), Box<dyn std::error::Error>> {
    let c = &args.command;
    let batch = number(c, "--batch", 1000)?.max(1);
    let only: Option<Vec<u64>> = flag(c, "--batches")
        .map(|l| l.split(',').map(str::parse).collect())
        .transpose()
        .map_err(|e| format!("--batches: {e}"))?;
    let workers = number(c, "--workers", 1)? as usize;
    let from = number(c, "--from", 0)?;
    let to = number(c, "--to", args.workload.reads)?.min(args.workload.reads);
    let (share, of) = match flag(c, "--share") {
        Some(s) => {
            let (k, n) = s.split_once('/').ok_or("--share is K/S")?;
            (k.parse::<u64>()?, n.parse::<u64>()?.max(1))
        }
        None => (0, 1),
    };
    let mut batches = Vec::new();
    let mut times = Vec::new();
    let mut b = 0;
    let mut j = 0;
    while j < args.workload.reads {
        let end = (j + batch).min(args.workload.reads);
        let listed = only.as_ref().is_none_or(|l| l.contains(&b));
        if b % of == share && j >= from && end <= to && listed {
            batches.push(Changes::new().insert(&q.reads, args.workload.reads(j..end)));
            times.push(b as i64 + 2);
        }
        j = end;
        b += 1;
    }
    if c.iter().any(|a| a == "--serial") {
        // Each batch through `graph.iteration` at the store's next time, as
        // an application's request handler would (several processes doing
        // so at once take turns).
        let mut store = open(&args.target, graph, &args.prefix, false)?;
        for changes in batches {
            graph.iteration(&mut *store, changes)?;
        }
        return Ok(());
    }
    let live = c.iter().any(|a| a == "--live-times");
    if live && !c.iter().any(|a| a == "--sequence") {
        return Err("--live-times needs --sequence".into());
    }
    if live {
        // Each batch's time is claimed as a worker starts it (as processes
        // serving requests would), so processes sharing the sequence
        // interleave their times instead of holding blocks of them.
        let target = args.target.clone();
        let mut times = LiveTimes {
            sequence: sequence(&args.target, graph, &args.prefix)?,
            batch_numbers: times.iter().map(|t| t - 2).collect(),
        };
        let report = Ingest::new(graph)
            .workers(workers)
            .pipelined(c.iter().any(|a| a == "--pipelined"))
            .run(
                |_| open(&target, graph, &args.prefix, false),
                batches,
                &mut times,
            )?;
        eprintln!("{}", report.summary());
        return if report.failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{} batches failed", report.failures.len()).into())
        };
    }
    if c.iter().any(|a| a == "--sequence") {
        // Batch number `b` is claimed with its time, in place of `b + 2`.
        let seq = sequence(&args.target, graph, &args.prefix)?;
        for t in &mut times {
            *t = seq.next_for(*t - 2)?;
        }
        if c.iter().any(|a| a == "--stall-after-times") {
            use std::io::Write;
            let list: Vec<String> = times.iter().map(i64::to_string).collect();
            println!("taken {}", list.join(","));
            std::io::stdout().flush()?;
            // Holding the times (and the sessions that claimed them) until killed.
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    let target = args.target.clone();
    let report = Ingest::new(graph)
        .workers(workers)
        .pipelined(c.iter().any(|a| a == "--pipelined"))
        .run(
            |_| open(&target, graph, &args.prefix, false),
            batches,
            &mut Given::new(times),
        )?;
    eprintln!("{}", report.summary());
    for f in &report.failures {
        eprintln!(
            "failed: batch {} at time {}: {}",
            f.batch, f.input_time, f.error
        );
    }
    Ok(())
}

fn retry(args: &Args, graph: &Graph, q: &MeterReads) -> Result<(), Box<dyn std::error::Error>> {
    let batch = number(&args.command, "--batch", 1000)?.max(1);
    let mut store = open(&args.target, graph, &args.prefix, false)?;
    let mut times: Box<dyn TimeSource> = if args.command.iter().any(|a| a == "--sequence") {
        Box::new(sequence(&args.target, graph, &args.prefix)?)
    } else {
        Box::new(Counter::after(&mut *store)?)
    };
    let report = parallel::retry_with(graph, &mut store, &mut *times, |failed| {
        let b = u64::try_from(failed.batch).ok()?;
        batch_reads(args, q, batch, b)
    })?;
    eprintln!(
        "retried {}, skipped {} (partially applied), lost {}",
        report.retried.len(),
        report.skipped.len(),
        report.lost.len()
    );
    for f in &report.lost {
        println!(
            "lost: batch {} at time {}: {}",
            f.batch, f.input_time, f.error
        );
    }
    Ok(())
}

/// Shows how the store's states compare with the query's (`--dry-run`),
/// or migrates the store to it, printing the plan carried out.
fn migrate(args: &Args, graph: &Graph) -> Result<(), Box<dyn std::error::Error>> {
    let dry_run = args.command.iter().any(|a| a == "--dry-run");
    let mut options = options(&args.prefix, true);
    if !dry_run {
        options = options.migrate();
    }
    // Each step on standard error; `METER_INGEST_PAUSE_AT=N` stops at step
    // N (from 0) for ten minutes, for the crash test to kill the process
    // there.
    let pause_at: Option<usize> = std::env::var("METER_INGEST_PAUSE_AT")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let reached = std::sync::atomic::AtomicUsize::new(0);
    options = options.on_migration_step(move |step| {
        let n = reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        eprintln!("migration step {n}: {step}");
        if pause_at == Some(n) {
            eprintln!("paused at step {n}");
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
    });
    let opened = match &args.target {
        Target::Sqlite(path) => {
            store::Sqlite::open(path, graph, options).map(|s| s.migration().cloned())
        }
        Target::Postgres(conn) => {
            store::Postgres::open(conn, graph, options).map(|s| s.migration().cloned())
        }
        Target::Memory => return Err("migrate needs --sqlite or --postgres".into()),
    };
    match opened {
        Ok(Some(plan)) => println!("migrated ({}):\n{plan}", plan.summary()),
        Ok(None) => println!("the store holds this query's states: nothing to migrate"),
        Err(graph::StoreError::QueryChanged { plan }) if dry_run => {
            println!("the plan ({}):\n{plan}", plan.summary())
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `graph`: the query's picture, as DOT or SVG, optionally with the
/// profile of an ingest of the workload and the states' sizes after it.
fn picture(args: &Args, graph: &Graph, q: &MeterReads) -> Result<(), Box<dyn std::error::Error>> {
    let c = &args.command;
    let svg = flag(c, "--svg");
    if c.iter().any(|a| a == "--svg") && svg.is_none() {
        return Err("--svg needs a file".into());
    }
    let mut annotations = None;
    if c.iter().any(|a| a == "--profile") {
        let batch = number(c, "--batch", 1000)?.max(1);
        let profiled = graph.profiled();
        let mut store = open(&args.target, graph, &args.prefix, true)?;
        let setup = Changes::new()
            .insert(&q.users, args.workload.all_users())
            .insert(&q.meters, args.workload.all_meters());
        profiled.iteration(&mut *store, setup)?;
        // The reads' batches, the part of the workload that repeats.
        let mut profiles = Vec::new();
        let mut b = 0;
        while let Some(changes) = batch_reads(args, q, batch, b) {
            let out = profiled.iteration(&mut *store, changes)?;
            profiles.extend(out.profile().cloned());
            b += 1;
        }
        let profile = Profile::sum(&profiles)?;
        let sizes = graph.state_sizes(&mut *store)?;
        if let Some(p) = &profile {
            println!("{p}");
        }
        println!("{sizes}");
        annotations = Some((profile, sizes));
    }
    match (svg, &annotations) {
        (Some(path), Some((profile, sizes))) => {
            std::fs::write(path, graph.to_svg_annotated(profile.as_ref(), Some(sizes)))?
        }
        (Some(path), None) => std::fs::write(path, graph.to_svg())?,
        (None, Some(_)) => {}
        (None, None) => print!("{}", graph.to_dot()),
    }
    Ok(())
}

/// A store to follow a feed in.
fn open_feed_store(
    target: &Target,
    graph: &Graph,
    prefix: &str,
) -> Result<Box<dyn FeedStore>, GraphError> {
    let options = options(prefix, false);
    Ok(match target {
        Target::Sqlite(path) => Box::new(store::Sqlite::open(path, graph, options)?),
        Target::Postgres(conn) => Box::new(store::Postgres::open(conn, graph, options)?),
        Target::Memory => Box::new(store::Memory::new(graph)),
    })
}

/// `consume`: follows the feed, writing each change before acknowledging
/// it (at least once: a kill between the two delivers it again).
fn consume(
    args: &Args,
    graph: &Graph,
    feed: Feed<DailyUsage>,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let c = &args.command;
    let name = flag(c, "--name").ok_or("consume needs --name")?;
    let out = flag(c, "--out").ok_or("consume needs --out")?;
    let until = number(c, "--until", 0)? as i64;
    let max = number(c, "--max", 4)?.max(1) as usize;
    let pause = std::time::Duration::from_millis(number(c, "--pause-before-ack", 0)?);
    // A line cut short by a kill is dropped: every line is one whole change.
    let kept = match std::fs::read(&out) {
        Ok(bytes) => bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1),
        Err(_) => 0,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)?;
    file.set_len(kept as u64)?;
    let store = open_feed_store(&args.target, graph, &args.prefix)?;
    let mut consumer = feed.consumer(store, &name)?;
    while consumer.acked() < until {
        let changes = consumer.poll(max)?;
        if changes.is_empty() {
            consumer.wait(std::time::Duration::from_millis(500))?;
            continue;
        }
        let mut lines = String::new();
        for (t, z) in &changes {
            let mut rows: Vec<_> = z.iter().map(|(d, w)| (d.clone(), w)).collect();
            rows.sort();
            lines.push_str(&format!("{t};{}\n", serde_json::to_string(&rows)?));
        }
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        std::thread::sleep(pause);
        let position = consumer.position();
        consumer.ack(position)?;
        println!("acked {position}");
    }
    Ok(())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (graph, q, feed) = if args.monthly {
        let (graph, q, _) = meter_reads::build_with_monthly()?;
        (graph, q, None)
    } else if args.feed {
        let (graph, q, feed) = meter_reads::build_with_feed()?;
        (graph, q, Some(feed))
    } else {
        let (graph, q) = meter_reads::build()?;
        (graph, q, None)
    };
    match args.command.first().map(String::as_str) {
        Some("migrate") => migrate(&args, &graph)?,
        Some("setup") => {
            let mut store = open(&args.target, &graph, &args.prefix, true)?;
            let changes = Changes::new()
                .insert(&q.users, args.workload.all_users())
                .insert(&q.meters, args.workload.all_meters());
            graph.iteration_at(&mut *store, changes, Time::new(1, 0))?;
        }
        Some("ingest") => ingest(&args, &graph, &q)?,
        Some("read-cache") => {
            let mut store = open(&args.target, &graph, &args.prefix, false)?;
            let dates: Option<Vec<NaiveDate>> = flag(&args.command, "--date")
                .map(|d| d.parse())
                .transpose()?
                .map(|d| vec![d]);
            for (_, d, w) in
                q.cache
                    .iter_by_index(&mut *store, &meter_reads::by_date(), dates.as_deref())?
            {
                println!("{},{},{},{},{w}", d.user_id, d.meter_id, d.date, d.value);
            }
        }
        Some("last-time") => println!("{}", last_time(&args.target, &graph, &args.prefix)?),
        // After a pipelined ingest was killed: rewind every table to the
        // last time all of them have, before feeding the batches after it.
        Some("recover") => {
            let mut store = open(&args.target, &graph, &args.prefix, false)?;
            for r in store.recover()? {
                eprintln!("rewound `{}` from time {} to {}", r.table, r.from, r.to);
            }
        }
        Some("failed") => {
            let mut store = open(&args.target, &graph, &args.prefix, false)?;
            for f in store.failed_batches()? {
                println!(
                    "{},{},{}",
                    f.input_time,
                    f.batch,
                    f.error.replace('\n', " ")
                );
            }
        }
        Some("retry") => retry(&args, &graph, &q)?,
        Some("graph") => picture(&args, &graph, &q)?,
        Some("consume") => consume(&args, &graph, feed.ok_or("consume needs --feed")?)?,
        _ => return Err(usage().into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
