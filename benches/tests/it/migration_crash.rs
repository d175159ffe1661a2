//! Crash safety of migrations: `meter-ingest --monthly migrate` (the
//! meter-reads query's next version, which adds the monthly cache) killed
//! with SIGKILL at every step of the migration, on a SQLite file and on a
//! Postgres database. The tool stops at step `N` when told to
//! (`METER_INGEST_PAUSE_AT`, through `OpenOptions::on_migration_step`), and
//! the test kills it there; one more point kills the process before it
//! reaches the migration, and one lets it finish.
//!
//! After each kill the store holds the old query's state (the new query's
//! open is refused with `QueryChanged`, the old query's reads the whole
//! daily cache and no monthly table exists) or the new one's (the new
//! query opens, both caches the oracle's); never a mix. A last migration
//! finishes it, and the store then holds the oracle's answer, every state
//! consistent with the kept inputs (`verify`).
//!
//! Environment: `STEPPING_MIGRATE_KILL_ROUNDS` (how many times every point
//! is killed, default 1; `cargo xtask soak --migrate-kills` runs more), and
//! `STEPPING_CRASH_READS` (reads in the store, default 3000).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use benches::meter_reads::{self, Workload};
use graph::StoreError;
use store::Verifiable;

/// The migration's steps for this query (see `OpenOptions::on_migration_step`):
/// locked, rewound, renamed, computed, dropped, two states written,
/// recorded, committing, committed.
const STEPS: usize = 10;

const PATIENCE: Duration = Duration::from_secs(120);

/// Where a round's store lives: `meter-ingest`'s arguments, and how this
/// process opens it.
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres { conn: String, prefix: String },
}

impl Place {
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

    fn open(&self, graph: &graph::Graph, migrate: bool) -> Result<Box<dyn Opened>, StoreError> {
        let mut options = store::OpenOptions::default();
        if migrate {
            options = options.migrate();
        }
        Ok(match self {
            Place::Sqlite(path) => Box::new(store::Sqlite::open(path, graph, options)?),
            Place::Postgres { conn, prefix } => {
                options.prefix = prefix.clone();
                Box::new(store::Postgres::open(conn, graph, options)?)
            }
        })
    }
}

/// A store opened here: a state store that can be verified.
trait Opened: Verifiable {
    fn store(&mut self) -> &mut dyn graph::StateStore;
}

impl Opened for store::Sqlite {
    fn store(&mut self) -> &mut dyn graph::StateStore {
        self
    }
}

impl Opened for store::Postgres {
    fn store(&mut self) -> &mut dyn graph::StateStore {
        self
    }
}

fn meter_ingest(place: &Place, w: &Workload, args: &[&str], log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meter-ingest"));
    c.args(place.args())
        .args([
            "--users",
            &w.users.to_string(),
            "--reads",
            &w.reads.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    c
}

fn run(mut c: Command, log: &Path, what: &str) {
    let status = c.status().expect("spawn meter-ingest");
    assert!(
        status.success(),
        "{what} failed ({status}): {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Waits until `child` wrote `line` to its log (or exited).
fn wait_for_line(child: &mut Child, log: &Path, line: &str) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(line)
        {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no `{line}` within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the store at `place` holds the old query's state (`false`) or
/// the new one's (`true`), checking that it is wholly one or the other.
fn old_or_new(place: &Place, w: &Workload, ctx: &str) -> bool {
    let (old, q) = meter_reads::build().expect("build");
    let (new, qn, monthly) = meter_reads::build_with_monthly().expect("build");
    match place.open(&new, false) {
        Ok(mut s) => {
            let daily = qn.cache.zset(s.store()).expect("daily cache");
            w.check(&daily)
                .unwrap_or_else(|e| panic!("{ctx}: migrated daily cache: {e}"));
            let months = monthly.zset(s.store()).expect("monthly cache");
            w.check_monthly(&months)
                .unwrap_or_else(|e| panic!("{ctx}: monthly cache: {e}"));
            true
        }
        Err(StoreError::QueryChanged { plan }) => {
            assert!(
                plan.backfilled().count() == 2,
                "{ctx}: the old store's plan is not the whole migration:\n{plan}"
            );
            let mut s = place.open(&old, false).expect("the old query opens");
            let daily = q.cache.zset(s.store()).expect("daily cache");
            w.check(&daily)
                .unwrap_or_else(|e| panic!("{ctx}: old daily cache: {e}"));
            false
        }
        Err(e) => panic!("{ctx}: the store after a kill is neither: {e}"),
    }
}

fn rounds() -> u64 {
    std::env::var("STEPPING_MIGRATE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

#[test]
fn a_migration_killed_at_any_step_leaves_the_old_or_the_new_state_and_finishes() {
    let reads = std::env::var("STEPPING_CRASH_READS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(3000);
    let w = Workload {
        users: (reads / 100).clamp(20, 1000),
        reads,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = super::pg_url();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let unique = format!("m{:08x}_", (clock ^ u64::from(std::process::id())) as u32);
    let _cleanup = pg.as_ref().map(|conn| benches::pg::DropTablesOnExit {
        conn: conn.clone(),
        prefix: unique.clone(),
    });
    let mut stores = vec!["sqlite"];
    if pg.is_some() {
        stores.push("postgres");
    }
    for name in stores {
        let mut kills = 0;
        let mut seen = [0usize; 2];
        for round in 0..rounds() {
            // Step `STEPS` is never reached: the process finishes; `None`
            // kills it as soon as it runs.
            let points = std::iter::once(None).chain((0..=STEPS).map(Some));
            for (i, point) in points.enumerate() {
                let ctx = format!("{name}, round {round}, point {point:?}");
                let place = match name {
                    "sqlite" => Place::Sqlite(dir.path().join(format!("m{round}_{i}.db"))),
                    _ => Place::Postgres {
                        conn: pg.clone().expect("Postgres"),
                        prefix: format!("{unique}{round}_{i}_"),
                    },
                };
                let log = dir.path().join(format!("{name}-{round}-{i}.log"));
                run(meter_ingest(&place, &w, &["setup"], &log), &log, "setup");
                let ingest = ["ingest", "--from", "0", "--batch", "500"];
                run(meter_ingest(&place, &w, &ingest, &log), &log, "ingest");
                let mut migrate = meter_ingest(&place, &w, &["--monthly", "migrate"], &log);
                if let Some(n) = point {
                    migrate.env("METER_INGEST_PAUSE_AT", n.to_string());
                }
                let mut child = migrate.spawn().expect("spawn the migration");
                let paused = match point {
                    Some(n) => wait_for_line(&mut child, &log, &format!("paused at step {n}")),
                    None => true,
                };
                if paused {
                    child.kill().expect("SIGKILL");
                    let status = child.wait().expect("wait");
                    if status.signal() == Some(9) {
                        kills += 1;
                    }
                } else {
                    let status = child.wait().expect("wait");
                    assert!(
                        status.success() && point == Some(STEPS),
                        "{ctx}: the migration ended by itself ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let migrated = old_or_new(&place, &w, &ctx);
                // Killed once committed, the store holds the new state;
                // before, the old one.
                if let Some(n) = point {
                    assert_eq!(
                        migrated,
                        n + 1 >= STEPS,
                        "{ctx}: which state after the kill"
                    );
                }
                seen[usize::from(migrated)] += 1;
                // Finishing the migration gives the oracle's answer.
                let (new, _, _) = meter_reads::build_with_monthly().expect("build");
                let mut s = place
                    .open(&new, true)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let report = s.verify().unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
                assert!(
                    report.drifted().next().is_none(),
                    "{ctx}: drifted\n{report}"
                );
                drop(s);
                assert!(
                    old_or_new(&place, &w, &ctx),
                    "{ctx}: not migrated after finishing"
                );
                if let Place::Sqlite(path) = &place {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        eprintln!(
            "{name}: {kills} migrations killed; after the kill {} held the old state, {} the new",
            seen[0], seen[1]
        );
        assert!(kills as u64 >= 10 * rounds(), "{name}: only {kills} kills");
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "{name}: old {} / new {}",
            seen[0],
            seen[1]
        );
    }
}
