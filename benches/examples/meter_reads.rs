//! The meter-reads example of the original's documentation, on a store of
//! your choice: by default the SQLite file `./meter_reads.db`.
//!
//! ```text
//! cargo run --release --example meter_reads [-- --sqlite PATH | --postgres URL | --memory] [--keep]
//! ```
//!
//! Each run starts from empty state (the file or the tables are
//! re-created) unless `--keep` asks to re-use it, in which case the same changes are applied
//! again on top of the stored state.
//!
//! It inserts a user, their meter and six half-hourly reads (one for an
//! unknown meter), printing what changed in the daily usage after each
//! iteration; reads the cache for 2023-01-02 and 2023-01-03; removes one
//! read; and reads the cache again.

use std::process::ExitCode;

use benches::meter_reads::{self, DailyUsage, Meter, MeterRead, MeterReads, User};
use chrono::NaiveDate;
use graph::{Graph, GraphError, StateStore};
use uuid::Uuid;
use zset::{F64, render_table};

fn usage() -> &'static str {
    "usage: meter_reads [--sqlite PATH | --postgres URL | --memory] [--keep]"
}

fn read(meter: Uuid, day: u32, hour: u32, value: f64) -> MeterRead {
    let timestamp = NaiveDate::from_ymd_opt(2023, 1, day)
        .and_then(|d| d.and_hms_opt(hour, 0, 0))
        .expect("a valid time");
    MeterRead {
        meter_id: meter,
        timestamp,
        value: F64::new(value),
    }
}

fn print_cache(graph_handles: &MeterReads, store: &mut dyn StateStore) -> Result<(), GraphError> {
    let dates = [
        NaiveDate::from_ymd_opt(2023, 1, 2),
        NaiveDate::from_ymd_opt(2023, 1, 3),
    ];
    let dates: Vec<NaiveDate> = dates.into_iter().flatten().collect();
    let rows = graph_handles
        .cache
        .iter_by_index(store, &meter_reads::by_date(), Some(&dates))?;
    println!("daily_cache for 2023-01-02 and 2023-01-03:");
    let table: Vec<(&DailyUsage, i64)> = rows.iter().map(|(_, d, w)| (d, *w)).collect();
    println!("{}", render_table(table));
    Ok(())
}

fn run(graph: &Graph, q: &MeterReads, store: &mut dyn StateStore) -> Result<(), GraphError> {
    let meter_1: Uuid = "00000001-b3fb-47ef-b22f-a45ba5b7b645"
        .parse()
        .expect("a valid uuid");
    let meter_2: Uuid = "00000002-b3fb-47ef-b22f-a45ba5b7b645"
        .parse()
        .expect("a valid uuid");
    let reads = [
        read(meter_1, 1, 2, 24.0),
        read(meter_1, 1, 3, 0.0),
        read(meter_1, 2, 4, 12.5),
        read(meter_1, 3, 5, 8.0),
        read(meter_1, 2, 6, 6.0),
        read(meter_2, 2, 6, 100.0),
    ];
    let show = |what: &str, out: graph::Outputs| -> Result<(), GraphError> {
        println!("{what}: daily usage changed by");
        println!("{}", out.get(&q.daily)?);
        Ok(())
    };
    show(
        "insert user 1",
        graph.insert(
            store,
            &q.users,
            [User {
                user_id: 1,
                name: "oli".into(),
            }],
        )?,
    )?;
    show(
        "insert meter 1",
        graph.insert(
            store,
            &q.meters,
            [Meter {
                meter_id: meter_1,
                user_id: 1,
            }],
        )?,
    )?;
    show(
        "insert 6 reads",
        graph.insert(store, &q.reads, reads.clone())?,
    )?;
    print_cache(q, store)?;
    show(
        "remove the 12.5 read",
        graph.remove(store, &q.reads, [reads[2].clone()])?,
    )?;
    print_cache(q, store)
}

enum Choice {
    Memory,
    Sqlite(std::path::PathBuf),
    /// A libpq-style connection string, e.g. `host=/var/run/postgresql dbname=app`.
    Postgres(String),
}

fn parse(args: &[String]) -> Option<(Choice, bool)> {
    let mut choice = Choice::Sqlite("meter_reads.db".into());
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--memory" => choice = Choice::Memory,
            "--sqlite" => choice = Choice::Sqlite(it.next()?.into()),
            "--postgres" => choice = Choice::Postgres(it.next()?.clone()),
            "--keep" => keep = true,
            _ => return None,
        }
    }
    Some((choice, keep))
}

fn open_and_run(choice: Choice, keep: bool) -> Result<(), GraphError> {
    let (graph, q) = meter_reads::build()?;
    match choice {
        Choice::Memory => {
            println!("store: memory (nothing persists)\n");
            let mut store = store::Memory::new(&graph);
            run(&graph, &q, &mut store)
        }
        Choice::Sqlite(path) => {
            let existed = path.exists();
            if existed && !keep {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            let mut store = store::Sqlite::open(&path, &graph, store::OpenOptions::default())?;
            let how = match (existed, keep) {
                (true, true) => format!("re-used, {} tables created", store.tables_created()),
                (true, false) => "re-created (pass --keep to re-use it)".to_owned(),
                (false, _) => "created".to_owned(),
            };
            println!("store: sqlite {} ({how})\n", path.display());
            run(&graph, &q, &mut store)?;
            print_tables(&store.table_names());
            Ok(())
        }
        Choice::Postgres(url) => {
            let open = || store::Postgres::open(&url, &graph, store::OpenOptions::default());
            let mut store = open()?;
            let (created, all) = (store.tables_created(), store.table_names().len());
            let how = if created == all {
                "created".to_owned()
            } else if keep {
                format!("re-used, {created} tables created")
            } else {
                store.drop_tables()?;
                store = open()?;
                "re-created (pass --keep to re-use them)".to_owned()
            };
            println!("store: postgres `{url}` ({how})\n");
            run(&graph, &q, &mut store)?;
            print_tables(&store.table_names());
            Ok(())
        }
    }
}

fn print_tables(tables: &[(String, String)]) {
    println!("state tables:");
    for (path, table) in tables {
        println!("  {table:<40} {path}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((choice, keep)) = parse(&args) else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    match open_and_run(choice, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
