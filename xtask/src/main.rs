//! `cargo xtask <command>`: the project's only script (matklad's xtask
//! pattern). See `usage()` for the commands.

mod pg;
mod tidy;

use std::process::{Command, ExitCode};

fn usage() -> &'static str {
    "usage: cargo xtask <command>

commands:
  test    fmt check, clippy -D warnings, every test of the workspace (with a
          throwaway Postgres unless STEPPING_TEST_PG is set),
          `cargo bench --no-run`, `cargo doc` with warnings denied, each
          store feature alone (built with
          clippy; SQLite-only tested through the operators' suite) and a
          `cargo package` dry run of the library crates; what CI runs
    ci      the same as test
  bench   the meter-reads benchmark in release mode (a throwaway Postgres
          unless STEPPING_TEST_PG is set); prints a table and writes
          target/bench/meter_reads.json and .svg; extra arguments go to it
          (e.g. `cargo xtask bench --reads 1000000`); `--scale` first
          runs the scale bench instead: 10k to 10M reads per store,
          target/bench/scale.json and .svg (options: --sizes, --stores,
          --batch, --users); `--processes` the Postgres ingest
          processes curve (1, 2, 4 meter-ingest processes sharing a
          SEQUENCE; --counts, --reads)
  soak    the crash test (meter-ingest processes killed with SIGKILL at
          random points, the store checked after every kill) in release
          mode with many kills, on SQLite and a throwaway Postgres (unless
          STEPPING_TEST_PG is set); options --kills N (default 500),
          --reads N (default 20000), --batch B (default 10), --seed S
          (replays a schedule); also read from STEPPING_CRASH_KILLS,
          _READS, _BATCH, _SEED. With --migrate-kills N: instead, the
          migration crash test (`meter-ingest --monthly migrate` killed at
          every step of the migration), about N kills per store (rounds of
          11), on a store of --reads reads
  pg      start a throwaway Postgres and print its connection string;
          stops it on Enter"
}

/// The workspace root (the parent of this crate).
fn root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Runs `cargo args...` at the workspace root with `envs`, failing on a
/// non-zero exit.
fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("\n==> cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// A Postgres for tests: the one in `STEPPING_TEST_PG` if set, else a
/// throwaway server (stopped when the returned handle drops); and its
/// connection string.
fn test_postgres() -> Result<(Option<pg::Server>, String), String> {
    match std::env::var("STEPPING_TEST_PG") {
        Ok(url) if !url.is_empty() => {
            eprintln!("==> using Postgres from STEPPING_TEST_PG");
            Ok((None, url))
        }
        _ => {
            let server = pg::Server::start()?;
            let url = server.url();
            Ok((Some(server), url))
        }
    }
}

/// What every build of `cargo xtask test` runs with: no incremental caches,
/// which would double the target directory on a CI disk that has run out
/// before.
const LEAN: (&str, &str) = ("CARGO_INCREMENTAL", "0");

fn test() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[LEAN])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[LEAN],
    )?;
    // A throwaway Postgres unless the caller gave one; stopped on drop.
    let (server, url) = test_postgres()?;
    let envs = [
        LEAN,
        ("STEPPING_TEST_PG", url.as_str()),
        ("STEPPING_REQUIRE_PG", "1"),
    ];
    cargo(&["test", "--workspace", "--all-targets"], &envs)?;
    cargo(&["test", "--workspace", "--doc"], &envs)?;
    // The benches only have to build here: no debug info (the bench
    // profile keeps it for profiling), which keeps the whole run's target
    // directory under 3 GB (it had filled a CI disk).
    cargo(
        &["bench", "--workspace", "--no-run"],
        &[LEAN, ("CARGO_PROFILE_BENCH_DEBUG", "false")],
    )?;
    // The library crates' docs, every feature on, warnings (broken links)
    // denied.
    cargo(
        &[
            "doc",
            "--no-deps",
            "--workspace",
            "--all-features",
            "--exclude",
            "benches",
            "--exclude",
            "xtask",
        ],
        &[LEAN, ("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // Each store feature alone. The workspace build above has both on (the
    // benches enable them), so these are the only builds of one without the
    // other: a SQLite-only store and parallel, tested through the operators'
    // suite and doctests (their store dev-dependency has the default
    // features only), and a Postgres-only store.
    cargo(&["test", "-p", "stepping-operators"], &[LEAN])?;
    for (package, features) in [
        ("stepping-store", "sqlite"),
        ("stepping-store", "postgres"),
        ("stepping-store", ""),
        ("stepping-parallel", "sqlite"),
        ("stepping-parallel", "postgres"),
    ] {
        cargo(
            &[
                "clippy",
                "-p",
                package,
                "--no-default-features",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ],
            &[LEAN],
        )?;
    }
    // The library crates package for crates.io (a dry run: no upload, no
    // second build).
    cargo(
        &[
            "package",
            "--workspace",
            "--no-verify",
            "--allow-dirty",
            "--exclude",
            "benches",
            "--exclude",
            "xtask",
            "--exclude",
            "stepping-web-example",
        ],
        &[LEAN],
    )?;
    drop(server);
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let (server, url) = test_postgres()?;
    let mut cargo_args = vec![
        "run",
        "--release",
        "--package",
        "benches",
        "--bin",
        "meter-bench",
        "--",
    ];
    // `--scale` and `--processes` run those benches instead.
    cargo_args.extend(args.iter().map(|a| match a.as_str() {
        "--scale" => "scale",
        "--processes" => "processes",
        a => a,
    }));
    // `processes` starts `meter-ingest` processes: build them beside it.
    cargo(
        &["build", "--release", "--package", "benches", "--bins"],
        &[],
    )?;
    cargo(&cargo_args, &[("STEPPING_TEST_PG", url.as_str())])?;
    drop(server);
    Ok(())
}

/// `cargo xtask soak`: only the crash test (`benches/tests/it/crash.rs`),
/// in release mode, with many kills and reads.
fn soak(args: &[String]) -> Result<(), String> {
    let mut settings = [
        ("--kills", "STEPPING_CRASH_KILLS", "500".to_owned()),
        ("--reads", "STEPPING_CRASH_READS", "20000".to_owned()),
        ("--batch", "STEPPING_CRASH_BATCH", "10".to_owned()),
        ("--seed", "STEPPING_CRASH_SEED", String::new()),
        ("--migrate-kills", "STEPPING_MIGRATE_KILLS", String::new()),
    ];
    for (_, var, value) in &mut settings {
        if let Ok(v) = std::env::var(var) {
            *value = v;
        }
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (_, _, value) = settings
            .iter_mut()
            .find(|(flag, _, _)| flag == a)
            .ok_or(format!("soak: unknown option {a:?}\n{}", usage()))?;
        *value = it.next().ok_or(format!("soak: {a} needs a value"))?.clone();
        if value.parse::<u64>().is_err() {
            return Err(format!("soak: {a} {value:?} is not a number"));
        }
    }
    // The migration crash test kills every step once per round.
    let migrate_kills: Option<u64> = settings[4].2.parse().ok();
    let rounds = migrate_kills.map(|k| k.div_ceil(11).max(1).to_string());
    let (server, url) = test_postgres()?;
    let mut envs = vec![
        ("STEPPING_TEST_PG", url.as_str()),
        ("STEPPING_REQUIRE_PG", "1"),
    ];
    envs.extend(
        settings
            .iter()
            .map(|(_, var, value)| (*var, value.as_str())),
    );
    if let Some(rounds) = &rounds {
        envs.push(("STEPPING_MIGRATE_KILL_ROUNDS", rounds.as_str()));
    }
    // `crash::` also runs one round of the migration crash test.
    let filter = if rounds.is_some() {
        "migration_crash::"
    } else {
        "crash::"
    };
    cargo(
        &[
            "test",
            "--release",
            "--package",
            "benches",
            "--test",
            "it",
            "--",
            filter,
            "--nocapture",
        ],
        &envs,
    )?;
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test" | "ci") => test(),
        Some("pg") => pg::serve(),
        Some("bench") => bench(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e}");
            ExitCode::FAILURE
        }
    }
}
