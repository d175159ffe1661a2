//! The store-bound ceiling writes the rows our ingest writes: as many of
//! them, and tables that end up holding the workload's sums.

use std::collections::BTreeMap;

use benches::direct;
use benches::meter_reads::{self, DailyUsage, Workload};
use chrono::NaiveDate;
use uuid::Uuid;

const W: Workload = Workload {
    users: 30,
    reads: 1200,
};
const BATCH: u64 = 100;

type Sums = BTreeMap<(i64, Uuid, NaiveDate), f64>;

fn decode_all(rows: impl IntoIterator<Item = Vec<u8>>) -> Sums {
    let mut sums = Sums::new();
    for data in rows {
        let d: DailyUsage = postcard::from_bytes(&data).expect("a stored DailyUsage");
        let old = sums.insert((d.user_id, d.meter_id, d.date), d.value.get());
        assert!(old.is_none(), "two rows for {d:?}");
    }
    sums
}

fn assert_same_sums(got: &Sums, what: &str) {
    let want = W.expected_daily();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the days differ"
    );
    for (k, v) in &want {
        assert!(
            (got[k] - v).abs() < 1e-6,
            "{what}: {k:?} is {} not {v}",
            got[k]
        );
    }
}

/// The rows the engine's SQLite store writes for the same batches, after
/// the users and meters are in.
fn engine_rows_written(dir: &tempfile::TempDir) -> u64 {
    let (graph, q) = meter_reads::build().expect("the query builds");
    let mut store = store::Sqlite::open(dir.path().join("engine.db"), &graph, Default::default())
        .expect("opens");
    graph
        .insert(&mut store, &q.users, W.all_users())
        .expect("users");
    graph
        .insert(&mut store, &q.meters, W.all_meters())
        .expect("meters");
    store.reset_stats();
    for b in 0..W.reads.div_ceil(BATCH) {
        graph
            .insert(
                &mut store,
                &q.reads,
                W.reads(b * BATCH..((b + 1) * BATCH).min(W.reads)),
            )
            .expect("a batch");
    }
    store.stats().rows_written
}

#[test]
fn direct_writes_are_the_engines_rows_and_hold_the_sums() {
    let plan = direct::plan(&W, BATCH).expect("plans");
    assert_eq!(plan.len(), 12);
    let planned: u64 = plan.iter().map(|b| b.rows() as u64).sum();
    let dir = tempfile::tempdir().expect("a temp dir");
    assert_eq!(
        planned,
        engine_rows_written(&dir),
        "the ceiling writes as many state rows as the engine"
    );

    let file = dir.path().join("direct.db");
    let written = direct::sqlite(&file, &plan).expect("writes to SQLite");
    assert_eq!(written.rows, planned);
    assert_batches_recorded(&written, &plan);
    let conn = rusqlite::Connection::open(&file).expect("opens");
    let column = |sql: &str| -> Vec<Vec<u8>> {
        let mut st = conn.prepare(sql).expect("prepares");
        st.query_map([], |r| r.get(0))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads")
    };
    assert_same_sums(
        &decode_all(column("SELECT data FROM cache")),
        "SQLite cache",
    );
    assert_same_sums(&decode_all(column("SELECT data FROM sums")), "SQLite sums");
    let reads: i64 = conn
        .query_row("SELECT sum(c) FROM reads", [], |r| r.get(0))
        .expect("counts");
    assert_eq!(reads as u64, W.reads);

    let Some(url) = crate::pg_url() else { return };
    let prefix = format!("dw{}_", std::process::id());
    let _cleanup = benches::pg::DropTablesOnExit {
        conn: url.clone(),
        prefix: prefix.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (cache, sums) = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connects");
        let task = tokio::spawn(connection);
        let written = direct::postgres(&client, &prefix, &plan)
            .await
            .expect("writes to Postgres");
        assert_eq!(written.rows, planned);
        assert_batches_recorded(&written, &plan);
        let mut out = Vec::new();
        for table in ["cache", "sums"] {
            let rows = client
                .query(&format!("SELECT data FROM {prefix}{table}"), &[])
                .await
                .expect("reads");
            out.push(
                rows.iter()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .collect::<Vec<_>>(),
            );
        }
        drop(client);
        let _ = task.await;
        (out.remove(0), out.remove(0))
    });
    assert_same_sums(&decode_all(cache), "Postgres cache");
    assert_same_sums(&decode_all(sums), "Postgres sums");
}

/// Every batch of the plan is timed, in order, with its reads.
fn assert_batches_recorded(written: &direct::Written, plan: &[direct::BatchWrites]) {
    let reads: Vec<u64> = written.batches.iter().map(|(n, _)| *n).collect();
    let planned: Vec<u64> = plan.iter().map(|b| b.reads.len() as u64).collect();
    assert_eq!(reads, planned);
    assert_eq!(reads.iter().sum::<u64>(), W.reads);
    let timed: std::time::Duration = written.batches.iter().map(|(_, d)| *d).sum();
    assert!(
        timed <= written.elapsed,
        "{timed:?} > {:?}",
        written.elapsed
    );
    let (first, last) = written.first_and_last_tenth();
    assert!(first > 0.0 && last > 0.0, "{first} {last}");
}
