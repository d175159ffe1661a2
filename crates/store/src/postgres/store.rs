//! `StateStore` for `Postgres`: starting iterations, failed batches, recovery
//! and committed reads.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use graph::{FailedBatch, Read, Rewound, StateSpec, StateStore, StateTx, StoreError, Time};

use super::Postgres;
use super::encode::PgDialect;
use super::failed::{create_failed_table, failed_table};
use super::frontier::{lock_times, set_last_update, times_of};
use super::notify::wait_for;
use super::reads::read_rows;
use super::runtime::{Borrowed, block_on, pg};
use super::schema::check_table;
use super::statements::PgSql;
use super::tx::PostgresTx;
use super::writes::undo_rows;
use crate::sql::{self, SqlRead, TableSchema};

impl Postgres {
    /// A transaction at `time` (found in the transaction itself when
    /// `next`); nothing is sent yet.
    pub(super) fn start(&mut self, time: Time, next: bool) -> Result<PostgresTx<'_>, StoreError> {
        let conn = block_on(self.client())??;
        let n = self.tables.schemas.len();
        let mut tx = PostgresTx {
            store: self,
            conn,
            time: Cell::new(time),
            next: Cell::new(next),
            atomic: time.flush_every_set != Some(true),
            pending: Cell::new(false),
            open: Cell::new(false),
            waited: vec![false; n],
            buffered: vec![Vec::new(); n],
            forget: None,
            done: false,
        };
        if tx.atomic {
            // All or nothing: one transaction, its writes held until the
            // commit. Nothing goes out yet: `BEGIN` and the frontier check
            // are pipelined with the iteration's first statement
            // (`PostgresTx::run`).
            tx.pending.set(true);
            tx.waited.fill(true);
        }
        Ok(tx)
    }
}

impl StateStore for Postgres {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        let wake = self.wake();
        let tables = Arc::clone(&self.tables);
        let (max_wait, poll) = (self.max_wait, self.poll);
        block_on(async {
            let mut conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            let names = tables.names();
            wait_for(&conn, &tables, &names, time.frontier, max_wait, poll, wake).await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("recording a failed batch"))?;
            let borrowed = Borrowed {
                client: &*tx,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            };
            // Locked, with the query's generation: a store migrated since
            // this handle opened it is not written.
            let times = lock_times(&borrowed, &tables, &names).await?;
            let committed: Vec<String> = tables
                .schemas
                .iter()
                .zip(times)
                .filter(|(_, t)| *t >= time.input_time)
                .map(|(s, _)| s.path.clone())
                .collect();
            set_last_update(&borrowed, &tables, &names, time.input_time).await?;
            // A record without changes is a waiter's, for a time it
            // released as abandoned (see `claims`): the tables it moved on
            // are not the batch's, so its list of committed tables stays.
            let row = tx.query_one(
                &format!(
                    "INSERT INTO {} AS f (input_time, batch, changes, error, committed) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (input_time) DO UPDATE SET batch = excluded.batch, changes = excluded.changes, \
                     error = excluded.error, \
                     committed = CASE WHEN length(f.changes) = 0 THEN f.committed ELSE excluded.committed END \
                     RETURNING committed",
                    failed_table(&tables)
                ),
                &[&time.input_time, &batch, &changes, &error, &committed.join("\n")],
            )
            .await
            .map_err(pg("recording a failed batch"))?;
            let committed: String = row.try_get(0).map_err(pg("recording a failed batch"))?;
            tx.commit().await.map_err(pg("recording a failed batch"))?;
            Ok(FailedBatch {
                input_time: time.input_time,
                batch,
                changes: changes.to_vec(),
                error: error.to_owned(),
                committed: committed.lines().map(str::to_owned).collect(),
            })
        })?
    }

    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            let rows = conn
                .query(
                    &format!(
                        "SELECT input_time, batch, changes, error, committed FROM {} ORDER BY input_time",
                        failed_table(&tables)
                    ),
                    &[],
                )
                .await
                .map_err(pg("reading failed batches"))?;
            rows.iter()
                .map(|r| {
                    let committed: String = r.try_get(4)?;
                    Ok(FailedBatch {
                        input_time: r.try_get(0)?,
                        batch: r.try_get(1)?,
                        changes: r.try_get(2)?,
                        error: r.try_get(3)?,
                        committed: committed.lines().map(str::to_owned).collect(),
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(pg("reading failed batches"))
        })?
    }

    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            conn.execute(
                &format!(
                    "DELETE FROM {} WHERE input_time = $1",
                    failed_table(&tables)
                ),
                &[&input_time],
            )
            .await
            .map_err(pg("forgetting a failed batch"))?;
            Ok(())
        })?
    }

    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.start(time, false)?))
    }

    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        // The time comes with the frontier check pipelined with the
        // iteration's first statement: no round trip of its own.
        Ok(Box::new(self.start(Time::new(1, 0), true)?))
    }

    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await
        })??;
        let mut tx = match time {
            Some(time) => self.start(Time::new(time.input_time, time.frontier), false)?,
            None => self.start(Time::new(1, 0), true)?,
        };
        tx.forget = Some(failed_input_time);
        Ok(Box::new(tx))
    }

    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        let tables = Arc::clone(&self.tables);
        let stats = Arc::clone(&self.stats);
        let rewound = block_on(async {
            let mut conn = self.client().await?;
            conn.batch_execute(&tables.create_undo_sql())
                .await
                .map_err(pg("creating the undo table"))?;
            let tx = conn.transaction().await.map_err(pg("recovering"))?;
            // Rolled back here and now on an error (see `prepare_tables`).
            let recovered = async {
            let borrowed = Borrowed {
                client: &*tx,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            };
            let names = tables.names();
            let times = lock_times(&borrowed, &tables, &names).await?;
            let low = times.iter().copied().min().unwrap_or(0);
            let mut rewound = Vec::new();
            for (s, &at) in times.iter().enumerate() {
                if at <= low {
                    continue;
                }
                let schema = &tables.schemas[s];
                let entries = tx
                    .query(
                        &format!(
                            "SELECT t, rows FROM {} WHERE table_name = $1 AND t > $2 ORDER BY t DESC",
                            tables.undo()
                        ),
                        &[&schema.name, &low],
                    )
                    .await
                    .map_err(pg(format!("reading the undo of `{}`", schema.name)))?;
                // Latest first: each entry undoes one time's write to the
                // table as it stood after that time.
                for entry in entries {
                    let (t, bytes): (i64, Vec<u8>) = (
                        entry.try_get(0).map_err(pg("reading an undo entry"))?,
                        entry.try_get(1).map_err(pg("reading an undo entry"))?,
                    );
                    let rows = sql::decode_undo(&schema.name, t, &bytes)?;
                    undo_rows(&borrowed, &tables.specs[s], schema, &tables.sql[s], &rows, &stats).await?;
                }
                tx.execute(
                    &format!(
                        "UPDATE {} SET t = $1 WHERE table_name = $2",
                        tables.last_update()
                    ),
                    &[&low, &schema.name],
                )
                .await
                .map_err(pg(format!("rewinding `{}`", schema.name)))?;
                rewound.push(Rewound {
                    table: schema.name.clone(),
                    from: at,
                    to: low,
                });
            }
            tx.execute(&format!("DELETE FROM {}", tables.undo()), &[])
                .await
                .map_err(pg("clearing the undo table"))?;
            Ok::<_, StoreError>(rewound)
            }
            .await;
            match recovered {
                Ok(rewound) => {
                    tx.commit().await.map_err(pg("committing a recovery"))?;
                    Ok(rewound)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })??;
        Ok(rewound)
    }

    fn next_time(&mut self) -> Result<i64, StoreError> {
        block_on(async {
            let conn = self.client().await?;
            let times = times_of(&conn, &self.tables, &self.tables.names()).await?;
            Ok(times.into_iter().fold(0, i64::max) + 1)
        })?
    }

    fn last_time(&mut self) -> Result<i64, StoreError> {
        Postgres::last_time(self)
    }

    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let sql_read = SqlRead::of(spec, read);
        let tables = Arc::clone(&self.tables);
        let mine = tables
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape());
        let attached = match mine {
            Some(_) => None,
            None => Some(self.attach(spec)?),
        };
        let (schema, sql) = match (&mine, &attached) {
            (Some(i), _) => (&tables.schemas[*i], &tables.sql[*i]),
            (None, Some(a)) => (&a.0, &a.1),
            (None, None) => unreachable!("either ours or attached"),
        };
        let rows = block_on(async {
            let conn = self.client().await?;
            read_rows(&conn, schema, sql, &sql_read, &self.stats).await
        })??;
        sql::decode_rows(spec, schema, rows, sink)
    }

    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        self.count_state_rows(spec)
    }
}

impl Postgres {
    /// The table of `spec` from another graph under this prefix, checked
    /// once to exist with `spec`'s shape and then remembered.
    pub(super) fn attach(
        &mut self,
        spec: &StateSpec,
    ) -> Result<Arc<(TableSchema, PgSql)>, StoreError> {
        let tables = Arc::clone(&self.tables);
        let path = spec.path().to_string();
        if !self.attached.contains_key(&path) {
            let schema = TableSchema::of(spec, &tables.prefix, &PgDialect);
            let checked = block_on(async {
                let conn = self.client().await?;
                check_table(&conn, &tables, &schema).await
            })??;
            if !checked {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path,
                });
            }
            let sql = PgSql::of(&schema);
            self.attached.insert(path.clone(), Arc::new((schema, sql)));
        }
        Ok(Arc::clone(&self.attached[&path]))
    }
}
