//! `StateStore` for `Sqlite`: starting iterations, failed batches, recovery and
//! committed reads.

use std::any::Any;

use graph::{FailedBatch, Read, Rewound, StateSpec, StateStore, StateTx, StoreError, Time};
use rusqlite::{Transaction, TransactionBehavior};

use super::Sqlite;
use super::encode::{SqliteDialect, backend};
use super::schema::check_table;
use super::statements::TableSql;
use crate::sql::{self, OwnNames, SqlRead, TableSchema};

impl Sqlite {
    pub(super) fn failed_table(&self) -> String {
        OwnNames::name(&self.prefix, "failed_batches")
    }

    pub(super) fn create_failed_table(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (input_time INTEGER PRIMARY KEY, batch INTEGER NOT NULL, \
                 changes BLOB NOT NULL, error TEXT NOT NULL, committed TEXT NOT NULL)",
                self.failed_table()
            ))
            .map_err(backend("creating the failed-batch table"))
    }
}

impl StateStore for Sqlite {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.begin_at(time)?))
    }

    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.begin_serial(None)?))
    }

    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let Some(time) = time else {
            return Ok(Box::new(self.begin_serial(Some(failed_input_time))?));
        };
        self.create_failed_table()?;
        let mut tx = self.begin_at(Time::new(time.input_time, time.frontier))?;
        tx.forget = Some(failed_input_time);
        Ok(Box::new(tx))
    }

    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        self.create_undo_table()?;
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(backend("recovering"))?;
        let times = self.times()?;
        let low = times.iter().copied().min().unwrap_or(0);
        let (_, last_update) = self.meta();
        let mut rewound = Vec::new();
        for (s, &t) in times.iter().enumerate() {
            if t <= low {
                continue;
            }
            let schema = &self.schemas[s];
            let entries: Vec<(i64, Vec<u8>)> = self
                .conn
                .prepare(&format!(
                    "SELECT t, rows FROM {} WHERE table_name = ? AND t > ? ORDER BY t DESC",
                    self.undo_table()
                ))
                .and_then(|mut st| {
                    st.query_map((&schema.name, low), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(backend(format!("reading the undo of `{}`", schema.name)))?;
            // Latest first: each entry undoes one time's write to the table
            // as it stood after that time.
            for (at, bytes) in entries {
                let rows = sql::decode_undo(&schema.name, at, &bytes)?;
                self.write_rows(&self.specs[s], schema, &self.sql[s], &rows)?;
            }
            self.conn
                .execute(
                    &format!("UPDATE {last_update} SET t = ? WHERE table_name = ?"),
                    (low, &schema.name),
                )
                .map_err(backend(format!("rewinding `{}`", schema.name)))?;
            rewound.push(Rewound {
                table: schema.name.clone(),
                from: t,
                to: low,
            });
        }
        self.conn
            .execute(&format!("DELETE FROM {}", self.undo_table()), [])
            .map_err(backend("clearing the undo table"))?;
        tx.commit().map_err(backend("committing a recovery"))?;
        self.notifier.notify();
        Ok(rewound)
    }

    fn next_time(&mut self) -> Result<i64, StoreError> {
        Ok(self.times()?.into_iter().fold(0, i64::max) + 1)
    }

    fn last_time(&mut self) -> Result<i64, StoreError> {
        Sqlite::last_time(self)
    }

    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let path = spec.path().as_str();
        let sql_read = SqlRead::of(spec, read);
        if let Some(i) = self
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape())
        {
            let rows = self.run_read(&self.schemas[i], &self.sql[i], &sql_read)?;
            return sql::decode_rows(spec, &self.schemas[i], rows, sink);
        }
        if !self.attached.contains_key(path) {
            let schema = TableSchema::of(spec, &self.prefix, &SqliteDialect);
            let (tables, _) = self.meta();
            if !check_table(&self.conn, &tables, &schema)? {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path: path.to_owned(),
                });
            }
            let sql = TableSql::of(&schema);
            self.attached.insert(path.to_owned(), (schema, sql));
        }
        let (schema, sql) = &self.attached[path];
        if schema.shape != TableSchema::of(spec, &self.prefix, &SqliteDialect).shape {
            return Err(StoreError::SchemaMismatch {
                table: schema.name.clone(),
                detail: "shape changed".into(),
            });
        }
        let rows = self.run_read(schema, sql, &sql_read)?;
        sql::decode_rows(spec, schema, rows, sink)
    }

    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        self.create_failed_table()?;
        for s in &self.schemas {
            self.wait_for(&s.name, time.frontier, self.max_wait)?;
        }
        // Immediate, as at open: a transaction that read the times first
        // could not write them once another connection had committed.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(backend("recording a failed batch"))?;
        // Under the write lock: a store migrated since this handle opened
        // it is not written (dropping `tx` rolls back).
        self.check_generation(self.read_generation()?)?;
        let mut committed = Vec::new();
        for s in &self.schemas {
            if self.time_of(&s.name)? >= time.input_time {
                committed.push(s.path.clone());
            }
            self.set_last_update(&s.name, time.input_time)?;
        }
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {} (input_time, batch, changes, error, committed) VALUES (?, ?, ?, ?, ?)",
                self.failed_table()
            ),
            (time.input_time, batch, changes, error, committed.join("\n")),
        )
        .map_err(backend("recording a failed batch"))?;
        tx.commit().map_err(backend("recording a failed batch"))?;
        self.notifier.notify();
        Ok(FailedBatch {
            input_time: time.input_time,
            batch,
            changes: changes.to_vec(),
            error: error.to_owned(),
            committed,
        })
    }

    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        self.create_failed_table()?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT input_time, batch, changes, error, committed FROM {} ORDER BY input_time",
                self.failed_table()
            ))
            .map_err(backend("reading failed batches"))?;
        let rows = stmt
            .query_map([], |r| {
                let committed: String = r.get(4)?;
                Ok(FailedBatch {
                    input_time: r.get(0)?,
                    batch: r.get(1)?,
                    changes: r.get(2)?,
                    error: r.get(3)?,
                    committed: committed.lines().map(str::to_owned).collect(),
                })
            })
            .map_err(backend("reading failed batches"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading failed batches"))
    }

    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        self.create_failed_table()?;
        self.conn
            .execute(
                &format!("DELETE FROM {} WHERE input_time = ?", self.failed_table()),
                [input_time],
            )
            .map(|_| ())
            .map_err(backend("forgetting a failed batch"))
    }

    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        self.count_state_rows(spec)
    }
}
