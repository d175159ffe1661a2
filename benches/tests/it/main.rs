//! Separate OS processes against one store: `meter-ingest` processes share
//! an ingest, continue one another's, and read each other's cache; the
//! result is the serial one.

mod abandoned;
mod crash;
mod direct;
mod feeds;
mod migration_crash;
mod picture;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use benches::meter_reads::Workload;

const W: Workload = Workload {
    users: 30,
    reads: 1200,
};

fn pg_url() -> Option<String> {
    match std::env::var("STEPPING_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STEPPING_REQUIRE_PG").map_or(true, |v| v != "1"),
                "STEPPING_REQUIRE_PG is set but STEPPING_TEST_PG is not"
            );
            use std::io::Write;
            let _ = std::io::stderr()
                .write_all(b"\n*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set ***\n\n");
            None
        }
    }
}

/// One store to run against: `meter-ingest`'s arguments naming it, and on
/// Postgres what drops its tables when the test is done with it.
#[derive(Debug)]
struct Target {
    args: Vec<String>,
    _cleanup: Option<benches::pg::DropTablesOnExit>,
}

impl std::ops::Deref for Target {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.args
    }
}

/// The stores to run against: a fresh SQLite file, and a fresh table
/// prefix on the Postgres test server.
fn targets(dir: &tempfile::TempDir, name: &str) -> Vec<Target> {
    let mut t = vec![Target {
        args: vec![
            "--sqlite".to_owned(),
            dir.path().join(format!("{name}.db")).display().to_string(),
        ],
        _cleanup: None,
    }];
    if let Some(url) = pg_url() {
        let prefix = format!("x{:x}_{name}_", std::process::id());
        t.push(Target {
            args: vec![
                "--postgres".to_owned(),
                url.clone(),
                "--prefix".to_owned(),
                prefix.clone(),
            ],
            _cleanup: Some(benches::pg::DropTablesOnExit { conn: url, prefix }),
        });
    }
    t
}

fn ingest_cmd(target: &[String], args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meter-ingest"));
    c.args(target)
        .args([
            "--users",
            &W.users.to_string(),
            "--reads",
            &W.reads.to_string(),
        ])
        .args(args);
    c
}

fn run(target: &[String], args: &[&str]) -> Output {
    let out = ingest_cmd(target, args)
        .output()
        .expect("meter-ingest runs");
    assert!(
        out.status.success(),
        "meter-ingest {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The cache, read by another process, against the sums computed from the
/// data, and the last time, one per batch of 100 after the setup's.
fn check_cache(target: &[String]) {
    check_sums(target);
    let last = run(target, &["last-time"]);
    let batches = W.reads.div_ceil(100);
    assert_eq!(
        String::from_utf8_lossy(&last.stdout).trim(),
        (batches + 1).to_string(),
        "{target:?}: last time"
    );
}

/// The cache, read by another process, against the sums computed from the data.
fn check_sums(target: &[String]) {
    let out = run(target, &["read-cache"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut got: BTreeMap<(i64, String, String), f64> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[4], "1", "weight of {line}");
        got.insert(
            (
                f[0].parse().expect("user"),
                f[1].to_owned(),
                f[2].to_owned(),
            ),
            f[3].parse().expect("value"),
        );
    }
    let expected = W.expected_daily();
    assert_eq!(got.len(), expected.len(), "{target:?}: daily rows");
    for ((user, meter, date), sum) in expected {
        let value = got[&(user, meter.to_string(), date.to_string())];
        assert!(
            (value - sum).abs() < 1e-6 * sum.abs().max(1.0),
            "{target:?}: {user} {date}: {value} vs {sum}"
        );
    }
}

/// Runs `args` in two processes at once, the first with `0/2` appended,
/// the second with `1/2` (each takes half the batches), and checks that
/// both succeed.
fn run_halves(target: &[String], args: &[&str]) {
    let spawn = |share: &'static str| {
        let mut a = args.to_vec();
        a.push(share);
        ingest_cmd(target, &a)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn("0/2"), spawn("1/2"));
    for child in [a, b] {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{target:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn two_processes_share_an_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    for pipelined in [false, true] {
        for target in targets(&dir, if pipelined { "pipelined" } else { "atomic" }) {
            run(&target, &["setup"]);
            let mut args = vec!["ingest", "--batch", "100", "--share"];
            if pipelined {
                args.insert(1, "--pipelined");
            }
            run_halves(&target, &args);
            check_cache(&target);
        }
    }
}

/// Two processes calling `graph.iteration` (an application's request
/// handlers) on one store at once, each with its own batches: iterations
/// take turns, so the cache holds every batch once. (On Postgres two such
/// processes used to read the same old state and corrupt the sums.)
#[test]
fn two_processes_inserting_at_once_serialize() {
    let dir = tempfile::tempdir().expect("tempdir");
    for target in targets(&dir, "serial") {
        run(&target, &["setup"]);
        run_halves(
            &target,
            &["ingest", "--serial", "--batch", "100", "--share"],
        );
        check_cache(&target);
    }
}

#[test]
fn a_second_process_continues_where_the_first_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    for target in targets(&dir, "continue") {
        run(&target, &["setup"]);
        run(&target, &["ingest", "--batch", "100", "--to", "500"]);
        // A new process re-opens the same store and ingests the rest.
        run(&target, &["ingest", "--batch", "100", "--from", "500"]);
        check_cache(&target);
    }
}

/// The bench's "settled" window starts where the last new daily sum is
/// opened: every sum exists after that read and not before it.
#[test]
fn every_daily_sum_exists_from_the_first_settled_read_on() {
    for w in [
        Workload {
            users: 1000,
            reads: 100_000,
        },
        Workload {
            users: 7,
            reads: 500,
        },
        Workload {
            users: 1000,
            reads: 20_000,
        },
    ] {
        let settled = w.first_settled_read();
        let all = w.expected_daily().len();
        assert_eq!(w.expected_daily_upto(settled).len(), all, "{w:?}");
        assert!(
            settled > 0 && w.expected_daily_upto(settled - 1).len() < all,
            "{w:?}: {settled}"
        );
    }
    let w = Workload {
        users: 1000,
        reads: 100_000,
    };
    assert_eq!(w.first_settled_read(), 31 * 1000, "31 days of 1,000 meters");
}
