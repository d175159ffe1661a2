//! The store-bound ceiling: the state rows a meter-reads ingest writes,
//! computed by hand and written straight into tables laid out like the
//! stores' state tables, with the fastest statements each database offers.
//!
//! Per batch of reads it writes what the engine writes: every read into the
//! reads table (the join needs all reads, in case a meter changes hands),
//! each touched `(user, meter, day)` sum, replaced in place, and for each
//! changed sum the cache row of its old value deleted and the new one
//! inserted. It reads nothing back (the old sums are kept in a hash map), so
//! it bounds any ingest that has to store the same rows: what is left between
//! it and ours is the engine, the state reads and the protocol.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use zset::F64;

use crate::meter_reads::{DailyUsage, Workload};

/// A boxed error: these measurements only report failures.
pub type BoxError = Box<dyn std::error::Error>;

/// One stored row's identity: a hash of its encoding, as the stores use.
fn identity(data: &[u8]) -> i64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish() as i64
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, BoxError> {
    Ok(postcard::to_allocvec(value)?)
}

/// A read, as the reads table holds it.
#[derive(Debug, Clone)]
pub struct ReadRow {
    /// Its identity.
    pub identity: i64,
    /// Its encoding.
    pub data: Vec<u8>,
    /// The join key: the meter.
    pub meter: Uuid,
}

/// A daily sum (or a cache row: the same value).
#[derive(Debug, Clone)]
pub struct SumRow {
    /// Its identity.
    pub identity: i64,
    /// Its encoding.
    pub data: Vec<u8>,
    /// The user.
    pub user: i64,
    /// The meter.
    pub meter: Uuid,
    /// The day.
    pub date: NaiveDate,
    /// The day as SQLite's key column holds it (ISO 8601 text).
    pub date_text: String,
}

/// The rows one batch writes.
#[derive(Debug, Clone, Default)]
pub struct BatchWrites {
    /// Reads inserted.
    pub reads: Vec<ReadRow>,
    /// Sums inserted or replaced, keyed by `(user, meter, date)`.
    pub sums: Vec<SumRow>,
    /// Cache rows deleted: the day, as text, and the identity of a sum's
    /// old value.
    pub cache_deletes: Vec<(NaiveDate, String, i64)>,
    /// Cache rows inserted: each changed sum's new value.
    pub cache_inserts: Vec<SumRow>,
}

impl BatchWrites {
    /// Rows this batch writes.
    pub fn rows(&self) -> usize {
        self.reads.len() + self.sums.len() + self.cache_deletes.len() + self.cache_inserts.len()
    }
}

/// Every batch's writes for `w`'s reads in batches of `batch`, the meters
/// owned as [`Workload::meter`] owns them.
///
/// # Errors
/// A row that does not encode.
pub fn plan(w: &Workload, batch: u64) -> Result<Vec<BatchWrites>, BoxError> {
    let owner: HashMap<Uuid, i64> = w
        .all_meters()
        .into_iter()
        .map(|m| (m.meter_id, m.user_id))
        .collect();
    let mut sums: HashMap<(i64, Uuid, NaiveDate), (f64, i64)> = HashMap::new();
    let mut out = Vec::new();
    for b in 0..w.reads.div_ceil(batch) {
        let mut writes = BatchWrites::default();
        let mut delta: HashMap<(i64, Uuid, NaiveDate), f64> = HashMap::new();
        let mut order = Vec::new();
        for read in w.reads(b * batch..((b + 1) * batch).min(w.reads)) {
            let data = encode(&read)?;
            let user = *owner
                .get(&read.meter_id)
                .ok_or("a read of an unknown meter")?;
            let group = (user, read.meter_id, read.timestamp.date());
            let d = delta.entry(group).or_insert_with(|| {
                order.push(group);
                0.0
            });
            *d += read.value.get();
            writes.reads.push(ReadRow {
                identity: identity(&data),
                data,
                meter: read.meter_id,
            });
        }
        for group in order {
            let (user, meter, date) = group;
            let old = sums.get(&group).copied();
            let value = old.map_or(0.0, |(v, _)| v) + delta[&group];
            let data = encode(&DailyUsage {
                user_id: user,
                meter_id: meter,
                date,
                value: F64::new(value),
            })?;
            let row = SumRow {
                identity: identity(&data),
                data,
                user,
                meter,
                date,
                date_text: date.to_string(),
            };
            if let Some((_, old_identity)) = old {
                writes
                    .cache_deletes
                    .push((date, row.date_text.clone(), old_identity));
            }
            sums.insert(group, (value, row.identity));
            writes.cache_inserts.push(row.clone());
            writes.sums.push(row);
        }
        out.push(writes);
    }
    Ok(out)
}

/// What writing a plan took.
#[derive(Debug, Clone)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Wall time, one transaction per batch.
    pub elapsed: Duration,
    /// The reads each batch stands for and its wall time, in order.
    pub batches: Vec<(u64, Duration)>,
}

impl Written {
    /// Reads per second (the rows the ingest of those reads stores, per
    /// second of writing them) over the first and the last 10% of the
    /// batches: how much storing an ingest's rows slows as the tables grow
    /// and as the workload changes phase, comparable with an ingest's own
    /// first and last 10%.
    pub fn first_and_last_tenth(&self) -> (f64, f64) {
        let tenth = (self.batches.len() / 10).max(1).min(self.batches.len());
        let rate = |slice: &[(u64, Duration)]| {
            let reads: u64 = slice.iter().map(|(n, _)| n).sum();
            let secs: f64 = slice.iter().map(|(_, d)| d.as_secs_f64()).sum();
            reads as f64 / secs.max(1e-9)
        };
        (
            rate(&self.batches[..tenth]),
            rate(&self.batches[self.batches.len() - tenth..]),
        )
    }
}

const SQLITE_TABLES: &str = "
    CREATE TABLE reads (identity INTEGER NOT NULL, data BLOB NOT NULL, k_meter_id BLOB NOT NULL,
        c INTEGER NOT NULL, PRIMARY KEY (k_meter_id, identity)) WITHOUT ROWID;
    CREATE TABLE sums (identity INTEGER NOT NULL, data BLOB NOT NULL, k_user_id INTEGER NOT NULL,
        k_meter_id BLOB NOT NULL, k_date TEXT NOT NULL, c INTEGER NOT NULL,
        PRIMARY KEY (k_user_id, k_meter_id, k_date)) WITHOUT ROWID;
    CREATE TABLE cache (identity INTEGER NOT NULL, data BLOB NOT NULL, k_date TEXT NOT NULL,
        c INTEGER NOT NULL, PRIMARY KEY (k_date, identity)) WITHOUT ROWID;";

/// Opens `file` as the SQLite store opens its file: the store's pragmas,
/// and checkpoints on a thread of their own (keep the handle as long as the
/// connection).
///
/// # Errors
/// Any SQLite error.
pub fn sqlite_connection(
    file: &Path,
) -> Result<(rusqlite::Connection, Arc<store::SqliteCheckpointer>), BoxError> {
    let mut conn = rusqlite::Connection::open(file)?;
    conn.execute_batch(&format!(
        "PRAGMA page_size = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -65536;",
        store::SQLITE_PAGE_SIZE,
    ))?;
    let checkpoints = store::SqliteCheckpointer::attach(&mut conn)?;
    Ok((conn, checkpoints))
}

/// Writes `plan` into a new SQLite file at `file` with the store's pragmas,
/// one prepared statement per kind of row and one transaction per batch.
///
/// # Errors
/// Any SQLite error.
pub fn sqlite(file: &Path, plan: &[BatchWrites]) -> Result<Written, BoxError> {
    let _ = std::fs::remove_file(file);
    let (conn, _checkpoints) = sqlite_connection(file)?;
    conn.execute_batch(SQLITE_TABLES)?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut batches = Vec::with_capacity(plan.len());
    for batch in plan {
        let batch_started = Instant::now();
        let tx = conn.unchecked_transaction()?;
        {
            let mut read = conn.prepare_cached(
                "INSERT INTO reads (identity, data, k_meter_id, c) VALUES (?, ?, ?, 1) \
                 ON CONFLICT (k_meter_id, identity) DO UPDATE SET c = c + excluded.c",
            )?;
            for r in &batch.reads {
                read.execute((r.identity, &r.data, r.meter.as_bytes()))?;
            }
            let mut sum = conn.prepare_cached(
                "INSERT INTO sums (identity, data, k_user_id, k_meter_id, k_date, c) \
                 VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (k_user_id, k_meter_id, k_date) \
                 DO UPDATE SET identity = excluded.identity, data = excluded.data",
            )?;
            for s in &batch.sums {
                sum.execute((
                    s.identity,
                    &s.data,
                    s.user,
                    s.meter.as_bytes(),
                    &s.date_text,
                ))?;
            }
            let mut delete =
                conn.prepare_cached("DELETE FROM cache WHERE k_date = ? AND identity = ?")?;
            for (_, date, id) in &batch.cache_deletes {
                delete.execute((date, id))?;
            }
            let mut insert = conn.prepare_cached(
                "INSERT INTO cache (identity, data, k_date, c) VALUES (?, ?, ?, 1)",
            )?;
            for s in &batch.cache_inserts {
                insert.execute((s.identity, &s.data, &s.date_text))?;
            }
        }
        tx.commit()?;
        rows += batch.rows() as u64;
        batches.push((batch.reads.len() as u64, batch_started.elapsed()));
    }
    Ok(Written {
        rows,
        elapsed: started.elapsed(),
        batches,
    })
}

/// Writes `plan` into new tables `{prefix}reads`, `{prefix}sums` and
/// `{prefix}cache` through `client` (replacing any of that name): per batch
/// one transaction of four multi-row statements (`unnest` of arrays, the
/// fastest upsert Postgres has: `COPY` cannot upsert), sent together in one
/// round trip. The tables stay for the caller to read or drop.
///
/// # Errors
/// Any Postgres error.
pub async fn postgres(
    client: &tokio_postgres::Client,
    prefix: &str,
    plan: &[BatchWrites],
) -> Result<Written, BoxError> {
    let (r, s, c) = (
        format!("{prefix}reads"),
        format!("{prefix}sums"),
        format!("{prefix}cache"),
    );
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {r}, {s}, {c};
             CREATE TABLE {r} (identity BIGINT NOT NULL, data BYTEA NOT NULL, k_meter_id UUID NOT NULL,
                 c BIGINT NOT NULL, PRIMARY KEY (k_meter_id, identity));
             CREATE TABLE {s} (identity BIGINT NOT NULL, data BYTEA NOT NULL, k_user_id BIGINT NOT NULL,
                 k_meter_id UUID NOT NULL, k_date DATE NOT NULL, c BIGINT NOT NULL,
                 PRIMARY KEY (k_user_id, k_meter_id, k_date));
             CREATE TABLE {c} (identity BIGINT NOT NULL, data BYTEA NOT NULL, k_date DATE NOT NULL,
                 c BIGINT NOT NULL, PRIMARY KEY (k_date, identity));"
        ))
        .await?;
    let read = client
        .prepare(&format!(
            "INSERT INTO {r} AS t (identity, data, k_meter_id, c) \
             SELECT i, d, k, 1 FROM unnest($1::int8[], $2::bytea[], $3::uuid[]) AS u(i, d, k) \
             ON CONFLICT (k_meter_id, identity) DO UPDATE SET c = t.c + excluded.c"
        ))
        .await?;
    let sum = client
        .prepare(&format!(
            "INSERT INTO {s} AS t (identity, data, k_user_id, k_meter_id, k_date, c) \
             SELECT i, d, u, m, day, 1 \
             FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::uuid[], $5::date[]) AS x(i, d, u, m, day) \
             ON CONFLICT (k_user_id, k_meter_id, k_date) \
             DO UPDATE SET identity = excluded.identity, data = excluded.data"
        ))
        .await?;
    let delete = client
        .prepare(&format!(
            "DELETE FROM {c} AS t USING unnest($1::date[], $2::int8[]) AS x(day, i) \
             WHERE t.k_date = x.day AND t.identity = x.i"
        ))
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {c} (identity, data, k_date, c) \
             SELECT i, d, day, 1 FROM unnest($1::int8[], $2::bytea[], $3::date[]) AS x(i, d, day)"
        ))
        .await?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut batches = Vec::with_capacity(plan.len());
    for batch in plan {
        let batch_started = Instant::now();
        let ids: Vec<i64> = batch.reads.iter().map(|x| x.identity).collect();
        let datas: Vec<&[u8]> = batch.reads.iter().map(|x| x.data.as_slice()).collect();
        let meters: Vec<Uuid> = batch.reads.iter().map(|x| x.meter).collect();
        let sum_ids: Vec<i64> = batch.sums.iter().map(|x| x.identity).collect();
        let sum_datas: Vec<&[u8]> = batch.sums.iter().map(|x| x.data.as_slice()).collect();
        let users: Vec<i64> = batch.sums.iter().map(|x| x.user).collect();
        let sum_meters: Vec<Uuid> = batch.sums.iter().map(|x| x.meter).collect();
        let dates: Vec<NaiveDate> = batch.sums.iter().map(|x| x.date).collect();
        let del_dates: Vec<NaiveDate> = batch.cache_deletes.iter().map(|x| x.0).collect();
        let del_ids: Vec<i64> = batch.cache_deletes.iter().map(|x| x.2).collect();
        let ins_ids: Vec<i64> = batch.cache_inserts.iter().map(|x| x.identity).collect();
        let ins_datas: Vec<&[u8]> = batch
            .cache_inserts
            .iter()
            .map(|x| x.data.as_slice())
            .collect();
        let ins_dates: Vec<NaiveDate> = batch.cache_inserts.iter().map(|x| x.date).collect();
        // One round trip: the statements are sent back to back, in order,
        // and their replies read together.
        let read_args: [&(dyn ToSql + Sync); 3] = [&ids, &datas, &meters];
        let sum_args: [&(dyn ToSql + Sync); 5] =
            [&sum_ids, &sum_datas, &users, &sum_meters, &dates];
        let delete_args: [&(dyn ToSql + Sync); 2] = [&del_dates, &del_ids];
        let insert_args: [&(dyn ToSql + Sync); 3] = [&ins_ids, &ins_datas, &ins_dates];
        tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(&read, &read_args),
            client.execute(&sum, &sum_args),
            client.execute(&delete, &delete_args),
            client.execute(&insert, &insert_args),
            client.batch_execute("COMMIT"),
        )?;
        rows += batch.rows() as u64;
        batches.push((batch.reads.len() as u64, batch_started.elapsed()));
    }
    Ok(Written {
        rows,
        elapsed: started.elapsed(),
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::Written;
    use std::time::Duration;

    #[test]
    fn the_first_and_last_tenth_are_rates_over_a_tenth_of_the_batches() {
        let ms = Duration::from_millis;
        // 20 batches of 100 reads: the first two take 10 ms each, the last
        // two 40 ms each, the rest 1 s (which must not count).
        let mut batches = vec![(100, ms(10)); 2];
        batches.extend(vec![(100, ms(1000)); 16]);
        batches.extend(vec![(100, ms(40)); 2]);
        let written = Written {
            rows: 2000,
            elapsed: ms(16100),
            batches,
        };
        let (first, last) = written.first_and_last_tenth();
        assert!((first - 10_000.0).abs() < 1e-6, "{first}");
        assert!((last - 2_500.0).abs() < 1e-6, "{last}");
        // Fewer than ten batches: the first and the last one.
        let few = Written {
            rows: 300,
            elapsed: ms(60),
            batches: vec![(100, ms(10)), (100, ms(30)), (100, ms(20))],
        };
        let (first, last) = few.first_and_last_tenth();
        assert!((first - 10_000.0).abs() < 1e-6 && (last - 5_000.0).abs() < 1e-6);
    }
}
