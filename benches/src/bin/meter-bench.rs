//! `meter-bench`: the meter-reads benchmark (see `benches::bench`); run it
//! with `cargo xtask bench`, which builds it in release mode and provides a
//! Postgres server.
//!
//! ```text
//! meter-bench [--reads N] [--users U] [--out DIR]
//! meter-bench group-min [--sizes 1000,100000] [--groups 2] [--deletes 300]
//! meter-bench daily-max [--reads N] [--users U]
//! meter-bench feeds [--reads N] [--users U] [--out DIR]
//! meter-bench scale [--sizes 10000,100000,1000000,10000000] [--stores memory,sqlite,postgres]
//!                   [--batch B] [--users U] [--out DIR]
//! meter-bench processes [--counts 1,2,4] [--reads N] [--users U] [--batch B] [--out DIR]
//! meter-bench memory [--reads N] [--users U] [--batch B] [--runs R] [--instructions]
//! meter-bench retract [--groups G] [--names N] [--rounds R]
//! meter-bench migration [--reads N] [--users U] [--out DIR]
//! ```
//!
//! `group-min`, `daily-max`, `scale`, `processes`, `memory` and `retract`
//! are the benches of `benches::group_min`, `benches::meter_max` and
//! `benches::bench::{scale, processes, memory, retract}` (run them with
//! `--release`; `cargo xtask bench --scale` runs `scale`); `feeds` runs
//! only the change-feed figures of the main bench (writing
//! `DIR/feeds.json`), `migration` only those of changing the query (writing
//! `DIR/migration.json`).
//!
//! Postgres comes from `STEPPING_TEST_PG` (skipped, loudly, without it).
//! Writes `DIR/meter_reads.json` and `DIR/meter_reads.svg` (default
//! `target/bench`), then runs `group-min` and `daily-max` at their default
//! sizes and writes their figures to `DIR/operators.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use benches::bench::{self, Config};

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("group-min") => return benches::group_min::main(std::env::args().skip(2)),
        Some("daily-max") => return benches::meter_max::main(std::env::args().skip(2)),
        Some("feeds") => return feeds_only(),
        Some("migration") => return migration_only(),
        Some("scale") => return bench::scale::main(std::env::args().skip(2), default_config()),
        Some("processes") => return bench::processes::main(std::env::args().skip(2)),
        Some("memory") => return bench::memory::main(std::env::args().skip(2)),
        Some("retract") => return bench::retract::main(std::env::args().skip(2)),
        _ => {}
    }
    let Some((config, out)) = parse(std::env::args().skip(1)) else {
        return ExitCode::from(2);
    };
    if config.postgres.is_none() {
        eprintln!(
            "*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set (run `cargo xtask bench`) ***"
        );
    }
    let result = bench::run(&config).and_then(|report| {
        println!("{}", bench::render(&report));
        std::fs::create_dir_all(&out)?;
        bench::write_json(&report, &out.join("meter_reads.json"))?;
        bench::write_svg(&report, &out.join("meter_reads.svg"))?;
        println!(
            "wrote {0}/meter_reads.json and {0}/meter_reads.svg",
            out.display()
        );
        operator_figures(&config, &out).map_err(|e| -> Box<dyn std::error::Error> { e })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The figures of the operators users reach for next (issue 24), after the
/// main report: `group_min` under deletes of each group's minimum, and the
/// daily maximum beside the daily sum. Writes `DIR/operators.json`.
fn operator_figures(config: &Config, out: &std::path::Path) -> Result<(), graph::BoxError> {
    let group_min = benches::group_min::Config {
        postgres: config.postgres.clone(),
        scratch: config.scratch.clone(),
        ..Default::default()
    };
    let deletes = benches::group_min::run(&group_min)?;
    println!("\ngroup_min under deletes of each group's minimum (issue 24):");
    println!("{}", benches::group_min::render(&deletes));
    let workload = benches::meter_reads::Workload {
        users: config.users,
        reads: config.reads,
    };
    let daily = benches::meter_max::compare(&workload, &config.postgres, &config.scratch)?;
    println!("highest read per meter per day beside the daily sum (issue 24):");
    println!("{}", benches::meter_max::render(&daily));
    let json = serde_json::json!({ "group_min_deletes": deletes, "daily_max": daily });
    std::fs::write(
        out.join("operators.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}/operators.json", out.display());
    Ok(())
}

/// 1,000 users, 100,000 reads, Postgres from `STEPPING_TEST_PG`.
fn default_config() -> Config {
    Config {
        users: 1000,
        reads: 100_000,
        postgres: std::env::var("STEPPING_TEST_PG")
            .ok()
            .filter(|s| !s.is_empty()),
        scratch: std::env::temp_dir(),
    }
}

/// The options: `--reads`, `--users`, `--out`.
fn parse(mut args: impl Iterator<Item = String>) -> Option<(Config, PathBuf)> {
    let mut config = default_config();
    let mut out = PathBuf::from("target/bench");
    while let Some(a) = args.next() {
        let value = args.next();
        let parsed = match (a.as_str(), value) {
            ("--reads", Some(v)) => v.parse().map(|n| config.reads = n).is_ok(),
            ("--users", Some(v)) => v.parse().map(|n| config.users = n).is_ok(),
            ("--out", Some(v)) => {
                out = v.into();
                true
            }
            _ => false,
        };
        if !parsed {
            eprintln!("usage: meter-bench [--reads N] [--users U] [--out DIR]");
            return None;
        }
    }
    Some((config, out))
}

/// `meter-bench feeds`: only the change-feed figures.
fn feeds_only() -> ExitCode {
    let Some((config, out)) = parse(std::env::args().skip(2)) else {
        return ExitCode::from(2);
    };
    let result = bench::feed_figures(&config).and_then(|(figures, hop)| {
        println!("{}", bench::render_feeds(&figures, hop));
        std::fs::create_dir_all(&out)?;
        let json = serde_json::json!({ "feeds": figures, "async_hop_us": hop });
        std::fs::write(out.join("feeds.json"), serde_json::to_string_pretty(&json)?)?;
        println!("wrote {}/feeds.json", out.display());
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

/// `meter-bench migration`: only the figures of changing the query.
fn migration_only() -> ExitCode {
    let Some((config, out)) = parse(std::env::args().skip(2)) else {
        return ExitCode::from(2);
    };
    let result = bench::migrations(&config).and_then(|runs| {
        println!("{}", bench::render_migrations(&runs));
        std::fs::create_dir_all(&out)?;
        std::fs::write(
            out.join("migration.json"),
            serde_json::to_string_pretty(&runs)?,
        )?;
        println!("wrote {}/migration.json", out.display());
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
