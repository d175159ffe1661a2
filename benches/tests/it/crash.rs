//! Crash safety: `meter-ingest` processes killed with SIGKILL at random
//! points, against a SQLite file and a Postgres database, with all-or-nothing
//! iterations and with pipelined ones (`flush_every_set = Some(true)`).
//! After every kill the store, re-opened by this process
//! (`create_tables: false`; after a pipelined ingest, first `recover`ed, as
//! a user resuming one must), holds exactly the batches it committed, all or
//! nothing each: every table at the same last input time `t`, the
//! daily-usage cache equal to the sums of the reads of batches `0..t - 1`
//! computed directly from the data, nothing recorded as failed, and nothing
//! that was seen committed before the kill lost. Then a new process resumes
//! the ingest after `t` (`--from`) and is killed in its turn, until one
//! finishes; the final cache is the full oracle.
//!
//! Retries are killed too: a batch recorded as failed is retried by a
//! `meter-ingest retry` killed at a random point; the store then holds the
//! batch applied and its record gone, or neither, and a last retry finishes
//! it: applied exactly once.
//!
//! Kill points are random: very early (while the process starts, opens the
//! store and runs its first batch), or after a random number of commits
//! plus a random part of one more batch (so inside a batch, its reads and
//! writes, or its commit). The setup process (table creation, users and
//! meters) is killed at random too. Every choice comes from one seeded RNG,
//! printed at the start; timing still varies from run to run.
//!
//! Environment: `STEPPING_CRASH_KILLS` (kills of ingest processes over all
//! stores, default 24), `STEPPING_CRASH_READS` (reads per ingest, default
//! 2400), `STEPPING_CRASH_BATCH` (reads per batch, default 10),
//! `STEPPING_CRASH_SEED` (replays a schedule). `cargo xtask soak` runs this
//! test in release mode with many more kills and reads.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use benches::meter_reads::{self, MeterReads, Workload};
use graph::{Graph, StateStore, StoreError};

/// How long a child may go without finishing or committing before the test
/// calls it hung.
const PATIENCE: Duration = Duration::from_secs(120);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        _ => default,
    }
}

/// Where one ingest (one round) keeps its state.
#[derive(Debug, Clone)]
enum Place {
    Sqlite(PathBuf),
    Postgres { conn: String, prefix: String },
}

/// A store opened by this process.
enum Opened {
    Sqlite(Box<store::Sqlite>),
    Postgres(Box<store::Postgres>),
}

impl Opened {
    /// The last input time every table has committed.
    fn last_time(&mut self) -> Result<i64, StoreError> {
        self.store().last_time()
    }

    fn store(&mut self) -> &mut dyn StateStore {
        match self {
            Opened::Sqlite(s) => &mut **s,
            Opened::Postgres(s) => &mut **s,
        }
    }
}

impl Place {
    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "sqlite",
            Place::Postgres { .. } => "postgres",
        }
    }

    /// The arguments that point `meter-ingest` here.
    fn args(&self) -> Vec<String> {
        match self {
            Place::Sqlite(path) => vec!["--sqlite".into(), path.display().to_string()],
            Place::Postgres { conn, prefix } => vec![
                "--postgres".into(),
                conn.clone(),
                "--prefix".into(),
                prefix.clone(),
            ],
        }
    }

    /// Attaches to the existing tables, as another process would.
    fn open(&self, graph: &Graph) -> Result<Opened, StoreError> {
        let options = |prefix: &str| store::OpenOptions {
            create_tables: false,
            prefix: prefix.to_owned(),
            ..Default::default()
        };
        Ok(match self {
            Place::Sqlite(path) => {
                Opened::Sqlite(Box::new(store::Sqlite::open(path, graph, options("st_"))?))
            }
            Place::Postgres { conn, prefix } => Opened::Postgres(Box::new(store::Postgres::open(
                conn,
                graph,
                options(prefix),
            )?)),
        })
    }
}

fn random_upto(rng: &mut fastrand::Rng, d: Duration) -> Duration {
    Duration::from_micros(rng.u64(0..=d.as_micros() as u64))
}

/// Waits for `child` to exit, up to `PATIENCE`.
fn wait(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The kills over one store.
#[derive(Debug, Default)]
struct Tally {
    ingest_kills: u64,
    early_kills: u64,
    setup_kills: u64,
    children: u64,
    rounds: u64,
    retry_kills: u64,
}

/// The crash test against one store.
struct Crash<'a> {
    graph: &'a Graph,
    q: &'a MeterReads,
    w: Workload,
    batch: u64,
    rng: fastrand::Rng,
    /// Where children's standard error goes.
    logs: &'a Path,
    /// What every failure message starts with (store and seed).
    ctx: String,
    /// Estimates, from what was observed: process start to its first
    /// commit, one batch, a setup.
    startup: Duration,
    per_batch: Duration,
    setup: Duration,
    tally: Tally,
    /// The ingests run pipelined (`--pipelined`).
    pipelined: bool,
}

impl Crash<'_> {
    /// Batches in one ingest; batch `b` runs at input time `b + 2`.
    fn batches(&self) -> i64 {
        self.w.reads.div_ceil(self.batch) as i64
    }

    fn spawn(&mut self, place: &Place, args: &[&str]) -> (Child, PathBuf) {
        self.tally.children += 1;
        let log = self.logs.join(format!(
            "{}-{}-{}.log",
            place.name(),
            self.tally.rounds,
            self.tally.children
        ));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_meter-ingest"))
            .args(place.args())
            .args([
                "--users",
                &self.w.users.to_string(),
                "--reads",
                &self.w.reads.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn meter-ingest");
        (child, log)
    }

    /// A child that was not killed must have succeeded, with no failed batch.
    fn assert_clean_exit(&self, status: ExitStatus, log: &Path, what: &str) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            status.success(),
            "{}: {what} failed ({status}): {text}",
            self.ctx
        );
        assert!(
            !text.contains("failed:"),
            "{}: {what} reported failed batches: {text}",
            self.ctx
        );
    }

    /// Kills a child that was running a moment ago with SIGKILL: `true` if
    /// it died of it, `false` if it finished on its own in that moment
    /// (then it must have succeeded, as any child that is not killed).
    fn kill_now(&self, child: &mut Child, log: &Path, what: &str) -> bool {
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        if status.signal() == Some(9) {
            return true;
        }
        self.assert_clean_exit(status, log, what);
        false
    }

    /// Re-opens the store and checks that it holds exactly a prefix of the
    /// batches: returns its last committed input time.
    fn committed(&self, place: &Place) -> i64 {
        let ctx = &self.ctx;
        for _ in 0..100 {
            let mut s = place
                .open(self.graph)
                .unwrap_or_else(|e| panic!("{ctx}: re-opening the store after a kill: {e}"));
            if self.pipelined {
                // What a killed pipelined ingest left half-done is undone.
                let rewound = s
                    .store()
                    .recover()
                    .unwrap_or_else(|e| panic!("{ctx}: recovering after a kill: {e}"));
                if !rewound.is_empty() {
                    eprintln!("{ctx}: recover rewound {rewound:?}");
                }
            }
            let t = s.last_time().expect("last_time");
            let newest = s.store().next_time().expect("next_time") - 1;
            let cache = self.q.cache.zset(s.store()).expect("reading the cache");
            let failed = s.store().failed_batches().expect("failed_batches");
            if s.last_time().expect("last_time") != t {
                // A Postgres COMMIT the killed process had already sent
                // landed meanwhile: read again.
                continue;
            }
            assert_eq!(
                t, newest,
                "{ctx}: tables at different times (last committed by every table {t}, \
                 by some {newest}): an iteration was not atomic"
            );
            assert!(
                failed.is_empty(),
                "{ctx}: failed batches recorded: {failed:?}"
            );
            assert!(
                (1..=self.batches() + 1).contains(&t),
                "{ctx}: last time {t} outside 1..={}",
                self.batches() + 1
            );
            let reads = (t as u64 - 1) * self.batch;
            if let Err(e) = self.w.check_upto(&cache, reads) {
                panic!(
                    "{ctx}: at last time {t} the cache is not that of the first {} batches \
                     ({} reads): {e}",
                    t - 1,
                    reads.min(self.w.reads)
                );
            }
            return t;
        }
        panic!("{ctx}: the last committed time kept changing with no process running");
    }

    /// Records the meters' second insert as a failed batch (its changes
    /// kept, its time marked done), then retries it with `meter-ingest
    /// retry` killed at a random point: the store must hold the batch
    /// applied and its record gone, or neither. A last retry finishes it,
    /// and removing the meters again gives back the cache of the full
    /// ingest: the batch was applied exactly once.
    fn killed_retry(&mut self, place: &Place, last: i64) {
        let ctx = self.ctx.clone();
        let meters = self.w.all_meters();
        let mut s = place.open(self.graph).expect("open");
        let changes = graph::Changes::new()
            .insert(&self.q.meters, meters.clone())
            .encode()
            .expect("encode");
        let t = last + 1;
        s.store()
            .record_failure(
                graph::Time::new(t, t - 1),
                0,
                &changes,
                "recorded by the test",
            )
            .expect("record_failure");
        drop(s);
        let pause = random_upto(&mut self.rng, self.startup * 2);
        let (mut child, log) = self.spawn(place, &["retry"]);
        std::thread::sleep(pause);
        let running = child.try_wait().expect("try_wait").is_none();
        let killed = running && self.kill_now(&mut child, &log, "retry");
        if killed {
            self.tally.retry_kills += 1;
        } else {
            let status = child.wait().expect("wait");
            self.assert_clean_exit(status, &log, "retry");
        }
        // Applied with its record gone, or neither: the meters are doubled
        // exactly when the record is gone.
        let mut s = place.open(self.graph).expect("open");
        let pending = s.store().failed_batches().expect("failed_batches");
        let next = s.store().next_time().expect("next_time");
        assert!(
            pending.len() <= 1,
            "{ctx}: failed batches after a killed retry: {pending:?}"
        );
        let applied = next > t + 1;
        assert_eq!(
            applied,
            pending.is_empty(),
            "{ctx}: a retry killed after {pause:?} left the batch applied: {applied}, \
             its record: {pending:?}"
        );
        drop(s);
        let (mut child, log) = self.spawn(place, &["retry"]);
        let status = wait(&mut child, "retry");
        self.assert_clean_exit(status, &log, "retry");
        let mut s = place.open(self.graph).expect("open");
        assert!(
            s.store()
                .failed_batches()
                .expect("failed_batches")
                .is_empty(),
            "{ctx}"
        );
        // The meters were inserted twice in all (setup and the retry):
        // removing them once gives back the full ingest's cache.
        self.graph
            .iteration(
                s.store(),
                graph::Changes::new().remove(&self.q.meters, meters),
            )
            .expect("removing the meters once");
        let cache = self.q.cache.zset(s.store()).expect("reading the cache");
        if let Err(e) = self.w.check(&cache) {
            panic!("{ctx}: after a retry killed after {pause:?} and finished: {e}");
        }
        eprintln!(
            "{ctx}: retry {} after {pause:?}, then finished",
            if killed { "killed" } else { "not killed" }
        );
    }

    /// Creates the tables and inserts users and meters (time 1); half the
    /// time kills the first setup process at a random point, then recovers
    /// the way a user would: re-run setup unless it had committed.
    fn setup(&mut self, place: &Place) {
        let run = |me: &mut Self| {
            let started = Instant::now();
            let (mut child, log) = me.spawn(place, &["setup"]);
            let status = wait(&mut child, "setup");
            me.assert_clean_exit(status, &log, "setup");
            me.setup = (me.setup + started.elapsed()) / 2;
        };
        if !self.rng.bool() {
            run(self);
            return;
        }
        let pause = random_upto(&mut self.rng, self.setup * 3 / 2);
        let (mut child, log) = self.spawn(place, &["setup"]);
        std::thread::sleep(pause);
        let running = child.try_wait().expect("try_wait").is_none();
        if !(running && self.kill_now(&mut child, &log, "setup")) {
            let status = child.wait().expect("wait");
            self.assert_clean_exit(status, &log, "setup");
            return;
        }
        self.tally.setup_kills += 1;
        let state = match place.open(self.graph) {
            // Tables not (all) created: nothing committed.
            Err(e) => format!("tables incomplete ({e})"),
            Ok(mut s) => {
                let t = s.last_time().expect("last_time");
                let cache = self.q.cache.zset(s.store()).expect("reading the cache");
                match t {
                    1 => {
                        eprintln!(
                            "{}: setup killed after {pause:?}: it had committed",
                            self.ctx
                        );
                        return;
                    }
                    0 => {
                        assert!(
                            cache.is_empty(),
                            "{}: nothing committed, yet the cache has rows",
                            self.ctx
                        );
                        "tables created, nothing committed".to_owned()
                    }
                    t => panic!("{}: after setup, last time {t}", self.ctx),
                }
            }
        };
        eprintln!(
            "{}: setup killed after {pause:?}: {state}; setup again",
            self.ctx
        );
        run(self);
    }

    /// One whole ingest into a fresh store, killed `kills_left` times at
    /// most; returns how many kills it used.
    fn round(&mut self, place: &Place, kills_left: u64) -> u64 {
        self.tally.rounds += 1;
        self.setup(place);
        let last = self.batches() + 1;
        let mut t = self.committed(place);
        assert_eq!(t, 1, "{}: after setup", self.ctx);
        let mut poll = place.open(self.graph).expect("open for polling");
        let mut kills = 0;
        while t < last {
            let from = (t as u64 - 1) * self.batch;
            let started = Instant::now();
            let (batch, from) = (self.batch.to_string(), from.to_string());
            let mut args = vec!["ingest", "--batch", &batch, "--from", &from];
            if self.pipelined {
                args.push("--pipelined");
            }
            let (mut child, log) = self.spawn(place, &args);
            // The newest time seen committed while the child ran.
            let mut seen = t;
            let mut how = String::new();
            if kills < kills_left {
                if self.rng.u8(0..4) == 0 {
                    // Very early: starting, opening the store, first batch.
                    let pause = random_upto(&mut self.rng, self.startup * 3 / 2);
                    std::thread::sleep(pause);
                    how = format!("early, after {pause:?}");
                } else {
                    // After k commits, then part of one more batch.
                    let spread = 2 * (last - t) / (kills_left - kills + 1) as i64;
                    let k = self.rng.i64(1..=spread.max(1));
                    let mut first = None;
                    while seen < t + k && child.try_wait().expect("try_wait").is_none() {
                        assert!(
                            started.elapsed() < PATIENCE,
                            "{}: no progress in {PATIENCE:?} (time {seen}, log {})",
                            self.ctx,
                            log.display()
                        );
                        let now = poll.last_time().expect("polling last_time");
                        if now > seen {
                            first.get_or_insert(started.elapsed());
                            seen = now;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if let Some(first) = first {
                        self.startup = (self.startup + first) / 2;
                        let more = (seen - t - 1) as u32;
                        if more > 0 {
                            let each = (started.elapsed() - first) / more;
                            self.per_batch = (self.per_batch + each) / 2;
                        }
                    }
                    let pause = random_upto(&mut self.rng, self.per_batch * 3 / 2);
                    std::thread::sleep(pause);
                    how = format!("after {} commits and {pause:?}", seen - t);
                }
            }
            // `Child::kill` is SIGKILL on Unix: no unwinding, no destructors.
            let killed = !how.is_empty()
                && child.try_wait().expect("try_wait").is_none()
                && self.kill_now(&mut child, &log, "ingest");
            if killed {
                kills += 1;
                self.tally.ingest_kills += 1;
                if how.starts_with("early") {
                    self.tally.early_kills += 1;
                }
            } else {
                let status = wait(&mut child, "ingest");
                self.assert_clean_exit(status, &log, "ingest");
            }
            let now = self.committed(place);
            assert!(
                now >= seen,
                "{}: committed batches lost: time {seen} was committed before the kill, \
                 the store shows {now} after",
                self.ctx
            );
            if killed {
                eprintln!(
                    "{}: kill {} of round {} ({how}): time {t} -> {now} of {last}",
                    self.ctx, self.tally.ingest_kills, self.tally.rounds
                );
            } else {
                assert_eq!(
                    now, last,
                    "{}: an ingest finished without committing every batch",
                    self.ctx
                );
            }
            t = now;
        }
        drop(poll);
        // Finished: the whole oracle, and the same through the command line.
        let mut s = place.open(self.graph).expect("open");
        let cache = self.q.cache.zset(s.store()).expect("reading the cache");
        if let Err(e) = self.w.check(&cache) {
            panic!("{}: the final cache: {e}", self.ctx);
        }

        let out = Command::new(env!("CARGO_BIN_EXE_meter-ingest"))
            .args(place.args())
            .arg("last-time")
            .output()
            .expect("meter-ingest last-time");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            last.to_string(),
            "{}: meter-ingest last-time at the end ({})",
            self.ctx,
            String::from_utf8_lossy(&out.stderr)
        );
        drop(s);
        self.killed_retry(place, last);
        let s = place.open(self.graph).expect("open");
        if let (Opened::Postgres(s), Place::Postgres { conn, prefix }) = (s, place) {
            s.drop_tables().expect("drop_tables");
            benches::pg::drop_tables_with_prefix(conn, prefix)
                .expect("dropping the metadata tables");
        }
        kills
    }
}

#[test]
fn killed_ingests_leave_exactly_their_committed_batches() {
    let seed = match std::env::var("STEPPING_CRASH_SEED") {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().expect("STEPPING_CRASH_SEED"),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let total_kills = env_u64("STEPPING_CRASH_KILLS", 24);
    let reads = env_u64("STEPPING_CRASH_READS", 2400);
    let batch = env_u64("STEPPING_CRASH_BATCH", 10).max(1);
    // Few reads per (user, meter, day), so that a daily sum stays far below
    // 10 000 and one more read (at least 0.01) is always visible in it.
    let w = Workload {
        users: (reads / 100).clamp(20, 1000),
        reads,
    };
    eprintln!(
        "crash: seed {seed} (STEPPING_CRASH_SEED={seed} replays the kill schedule), \
         {total_kills} kills, {reads} reads in batches of {batch}, {} users",
        w.users
    );
    let (graph, q) = meter_reads::build().expect("build");
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = super::pg_url();
    // This run's Postgres tables: `k<8 hex digits>_r<round>_` (a table
    // prefix has at most 20 characters), unique by process and clock.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let unique = format!(
        "k{:08x}_",
        (clock ^ u64::from(std::process::id()).rotate_left(32)) as u32
    );
    let _cleanup = pg.as_ref().map(|conn| benches::pg::DropTablesOnExit {
        conn: conn.clone(),
        prefix: unique.clone(),
    });
    let stores: Vec<&str> = if pg.is_some() {
        vec!["sqlite", "postgres"]
    } else {
        vec!["sqlite"]
    };
    let started = Instant::now();
    let mut summary = Vec::new();
    let runs: Vec<(&str, bool)> = stores
        .iter()
        .flat_map(|s| [(*s, false), (*s, true)])
        .collect();
    for (i, &(name, pipelined)) in runs.iter().enumerate() {
        // Kills split between the runs, the first taking the remainder.
        let mine = total_kills / runs.len() as u64
            + u64::from((i as u64) < total_kills % runs.len() as u64);
        let mode = if pipelined { "pipelined" } else { "atomic" };
        let mut crash = Crash {
            graph: &graph,
            q: &q,
            w,
            batch,
            rng: fastrand::Rng::with_seed(
                seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            logs: dir.path(),
            ctx: format!("{name} {mode} (seed {seed})"),
            startup: Duration::from_millis(30),
            per_batch: Duration::from_millis(5),
            setup: Duration::from_millis(50),
            tally: Tally::default(),
            pipelined,
        };
        let mut left = mine;
        // Rounds of whole ingests, each into a fresh store, until every
        // kill is spent (at least one round).
        while left > 0 || crash.tally.rounds == 0 {
            let round = crash.tally.rounds;
            let place = match name {
                "sqlite" => Place::Sqlite(dir.path().join(format!("{mode}{round}.db"))),
                _ => Place::Postgres {
                    conn: pg.clone().unwrap_or_default(),
                    prefix: format!("{unique}{}{round}_", &mode[..1]),
                },
            };
            left -= crash.round(&place, left);
        }
        assert_eq!(crash.tally.ingest_kills, mine, "{name}: kills");
        summary.push(format!("{name} {mode}: {:?}", crash.tally));
    }
    if let Some(conn) = &pg {
        let left = benches::pg::drop_tables_with_prefix(conn, &unique).expect("dropping tables");
        assert_eq!(left, 0, "tables {unique}* left behind");
    }
    eprintln!("crash: {} in {:.1?}", summary.join("; "), started.elapsed());
}
