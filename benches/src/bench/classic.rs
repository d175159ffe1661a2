//! The plain-SQL alternative: normalised tables, `GROUP BY` at read time.

use std::time::Instant;

use super::target::pg;
use super::{BoxError, Config};
use crate::direct;
use crate::meter_reads::Workload;

/// The plain-SQL alternative on SQLite: normalised tables, the aggregate
/// computed by a `GROUP BY` at read time.
pub(super) fn sqlite_classic(config: &Config) -> Result<(f64, f64, f64), BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    let file = config.scratch.join("bench-classic.db");
    let _ = std::fs::remove_file(&file);
    let (conn, _checkpoints) = direct::sqlite_connection(&file)?;
    conn.execute_batch(
        "CREATE TABLE users (user_id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE meters (meter_id BLOB PRIMARY KEY, user_id INTEGER NOT NULL);
         CREATE TABLE reads (meter_id BLOB NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL);
         CREATE INDEX reads_ts ON reads (ts);",
    )?;
    {
        let tx = conn.unchecked_transaction()?;
        for u in w.all_users() {
            tx.execute("INSERT INTO users VALUES (?, ?)", (u.user_id, &u.name))?;
        }
        for m in w.all_meters() {
            tx.execute(
                "INSERT INTO meters VALUES (?, ?)",
                (m.meter_id.as_bytes().to_vec(), m.user_id),
            )?;
        }
        tx.commit()?;
    }
    let started = Instant::now();
    for b in 0..w.reads.div_ceil(1000) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = conn.prepare_cached("INSERT INTO reads VALUES (?, ?, ?)")?;
            for r in w.reads(b * 1000..((b + 1) * 1000).min(w.reads)) {
                st.execute((
                    r.meter_id.as_bytes().to_vec(),
                    r.timestamp.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.value.get(),
                ))?;
            }
        }
        tx.commit()?;
    }
    let insert = w.reads as f64 / started.elapsed().as_secs_f64();
    let query = "SELECT u.user_id, m.meter_id, substr(r.ts, 1, 10) AS d, sum(r.value) FROM reads r \
                 JOIN meters m ON m.meter_id = r.meter_id JOIN users u ON u.user_id = m.user_id";
    let time = |sql: &str| -> Result<f64, BoxError> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut st = conn.prepare_cached(sql)?;
            let n = st.query_map([], |_| Ok(()))?.count();
            assert!(n > 0);
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(best)
    };
    let all = time(&format!("{query} GROUP BY 1, 2, 3"))?;
    let one = time(&format!(
        "{query} WHERE r.ts >= '2023-01-02' AND r.ts < '2023-01-03' GROUP BY 1, 2, 3"
    ))?;
    Ok((insert, all, one))
}

/// The plain-SQL alternative on Postgres.
pub(super) fn postgres_classic(
    pool: &store::PgPool,
    config: &Config,
) -> Result<(f64, f64, f64), BoxError> {
    let w = Workload {
        users: config.users,
        reads: config.reads,
    };
    pg(pool, async move |c| {
        c.batch_execute(
            "DROP TABLE IF EXISTS bench_reads, bench_meters, bench_users;
             CREATE TABLE bench_users (user_id BIGINT PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE bench_meters (meter_id UUID PRIMARY KEY, user_id BIGINT NOT NULL);
             CREATE TABLE bench_reads (meter_id UUID NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE PRECISION NOT NULL);
             CREATE INDEX bench_reads_ts ON bench_reads (ts);",
        )
        .await?;
        let ids: Vec<i64> = w.all_users().iter().map(|u| u.user_id).collect();
        let names: Vec<String> = w.all_users().into_iter().map(|u| u.name).collect();
        c.execute(
            "INSERT INTO bench_users SELECT * FROM unnest($1::int8[], $2::text[])",
            &[&ids, &names],
        )
        .await?;
        let meters: Vec<uuid::Uuid> = w.all_meters().iter().map(|m| m.meter_id).collect();
        c.execute(
            "INSERT INTO bench_meters SELECT * FROM unnest($1::uuid[], $2::int8[])",
            &[&meters, &ids],
        )
        .await?;
        let st = c.prepare("INSERT INTO bench_reads SELECT * FROM unnest($1::uuid[], $2::timestamp[], $3::float8[])").await?;
        let started = Instant::now();
        for b in 0..w.reads.div_ceil(1000) {
            let reads = w.reads(b * 1000..((b + 1) * 1000).min(w.reads));
            let m: Vec<uuid::Uuid> = reads.iter().map(|r| r.meter_id).collect();
            let t: Vec<chrono::NaiveDateTime> = reads.iter().map(|r| r.timestamp).collect();
            let v: Vec<f64> = reads.iter().map(|r| r.value.get()).collect();
            c.execute(&st, &[&m, &t, &v]).await?;
        }
        let insert = w.reads as f64 / started.elapsed().as_secs_f64();
        c.batch_execute("ANALYZE bench_reads, bench_meters, bench_users")
            .await?;
        let query = "SELECT u.user_id, m.meter_id, r.ts::date AS d, sum(r.value) FROM bench_reads r \
                     JOIN bench_meters m ON m.meter_id = r.meter_id JOIN bench_users u ON u.user_id = m.user_id";
        let mut timed = Vec::new();
        for sql in [
            format!("{query} GROUP BY 1, 2, 3"),
            format!("{query} WHERE r.ts >= '2023-01-02' AND r.ts < '2023-01-03' GROUP BY 1, 2, 3"),
        ] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let started = Instant::now();
                let rows = c.query(&sql, &[]).await?;
                assert!(!rows.is_empty());
                best = best.min(started.elapsed().as_secs_f64() * 1e3);
            }
            timed.push(best);
        }
        c.batch_execute("DROP TABLE bench_reads, bench_meters, bench_users")
            .await?;
        Ok((insert, timed[0], timed[1]))
    })
}
