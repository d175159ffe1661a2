//! One iteration's transaction: the write lock, buffered writes and the commit.

use std::any::Any;
use std::time::Instant;

use graph::{EncodedRow, Read, StateId, StateTx, StoreError, Time, Value};

use super::Sqlite;
use super::encode::{backend, on};
use crate::sql::{self, SqlRead};

impl Sqlite {
    /// An iteration at `time` (all or nothing: with the write lock held and
    /// its time checked under it).
    pub(super) fn begin_at(&mut self, time: Time) -> Result<SqliteTx<'_>, StoreError> {
        let n = self.schemas.len();
        let mut tx = SqliteTx {
            store: self,
            time,
            open_since: None,
            waited: vec![false; n],
            buffered: vec![Vec::new(); n],
            forget: None,
            done: false,
        };
        if time.flush_every_set != Some(true) {
            // All or nothing: wait for every table, then hold the write lock
            // for the whole iteration.
            tx.store.wait_all(time.frontier, tx.store.max_wait)?;
            tx.waited.fill(true);
            tx.store
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend("starting an iteration"))?;
            tx.open_since = Some(Instant::now());
            // Under the lock: another process may have applied this very
            // time since the wait (dropping `tx` rolls back).
            let times = tx.store.times()?;
            if let Some(e) = tx.store.already_applied(&times, time.input_time) {
                return Err(e);
            }
        }
        Ok(tx)
    }

    /// An all-or-nothing iteration after every committed one, its time read
    /// under the write lock, so that two processes never both take it;
    /// retrying the failed batch at `forget` when given.
    pub(super) fn begin_serial(&mut self, forget: Option<i64>) -> Result<SqliteTx<'_>, StoreError> {
        if forget.is_some() {
            self.create_failed_table()?;
        }
        let last = loop {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend("starting an iteration"))?;
            let times = match self.times() {
                Ok(times) => times,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            let last = times.iter().copied().fold(0, i64::max);
            if times.iter().all(|t| *t == last) {
                break last;
            }
            // Tables at different times: a pipelined iteration is under
            // way. Wait for it outside the lock.
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(backend("waiting for the frontier"))?;
            self.wait_all(last, self.max_wait)?;
        };
        let n = self.schemas.len();
        Ok(SqliteTx {
            store: self,
            time: Time::new(last + 1, last),
            open_since: Some(Instant::now()),
            waited: vec![true; n],
            buffered: vec![Vec::new(); n],
            forget,
            done: false,
        })
    }
}

pub(super) struct SqliteTx<'s> {
    pub(super) store: &'s mut Sqlite,
    pub(super) time: Time,
    /// A transaction spanning the iteration is open, holding the write
    /// lock since then.
    pub(super) open_since: Option<Instant>,
    pub(super) waited: Vec<bool>,
    /// With `flush_every_set = Some(true)`: writes held until their flush.
    pub(super) buffered: Vec<Vec<EncodedRow>>,
    /// The failed batch this iteration retries, forgotten in its commit.
    pub(super) forget: Option<i64>,
    pub(super) done: bool,
}

impl SqliteTx<'_> {
    pub(super) fn wait(&mut self, s: usize) -> Result<(), StoreError> {
        if !self.waited[s] {
            let max_wait = self.store.max_wait;
            self.store
                .wait_for(&self.store.schemas[s].name, self.time.frontier, max_wait)?;
            self.waited[s] = true;
        }
        Ok(())
    }
}

impl StateTx for SqliteTx<'_> {
    fn time(&mut self) -> Result<Time, StoreError> {
        Ok(self.time)
    }

    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let rows = store.run_read(
            &store.schemas[s],
            &store.sql[s],
            &SqlRead::of(&store.specs[s], read),
        )?;
        sql::decode_rows(&store.specs[s], &store.schemas[s], rows, sink)
    }

    fn table_name(&self, state: StateId) -> Option<String> {
        Some(self.store.schemas.get(state.index())?.name.clone())
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let max: Option<i64> = store
            .conn
            .prepare_cached(&store.sql[s].max_step)
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(on(&store.schemas[s], "reading"))?;
        max.map(|m| sql::step_of(&store.schemas[s], m)).transpose()
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let rows = sql::encode_delta(&store.specs[s], &store.schemas[s], &*delta)?;
        if self.open_since.is_some() {
            store.write_rows(&store.specs[s], &store.schemas[s], &store.sql[s], &rows)
        } else {
            self.buffered[s].extend(rows);
            Ok(())
        }
    }

    fn flush(&mut self, state: StateId) -> Result<(), StoreError> {
        if self.open_since.is_some() || self.time.flush_every_set != Some(true) {
            return Ok(());
        }
        let s = state.index();
        self.wait(s)?;
        let rows = std::mem::take(&mut self.buffered[s]);
        let store = &*self.store;
        let name = &store.schemas[s].name;
        let time = self.time.input_time;
        store.create_undo_table()?;
        // Immediate: take the write lock now (waiting for it in the busy
        // handler), rather than at the first write.
        let tx = rusqlite::Transaction::new_unchecked(
            &store.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(backend(format!("flushing `{name}`")))?;
        let locked_at = Instant::now();
        // Under the lock: a table that has this time already (another
        // process at the same time, or a batch fed again) is not written
        // twice.
        let written = store
            .time_and_generation(name)
            .and_then(|(at, seen)| store.check_generation(seen).map(|()| at))
            .and_then(|at| match at >= time {
                true => Err(StoreError::TimeAlreadyApplied {
                    table: name.clone(),
                    time,
                    recorded: at,
                }),
                false => Ok(()),
            })
            .and_then(|()| store.keep_undo(s, time, &rows))
            .and_then(|()| {
                store.write_rows(&store.specs[s], &store.schemas[s], &store.sql[s], &rows)
            })
            .and_then(|()| store.set_last_update(name, time))
            .and_then(|()| tx.commit().map_err(backend(format!("committing `{name}`"))));
        // On an error, dropping the transaction has rolled it back.
        store.held_lock_since(locked_at);
        written?;
        store.notifier.notify();
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(open_since) = self.open_since else {
            // Pipelined: every table was committed at its flush; make sure
            // none was left behind (its time must still move on), and, the
            // iteration now being in every table, drop what would undo it.
            for s in 0..self.buffered.len() {
                if !self.buffered[s].is_empty() {
                    self.flush(StateId(s as u32))?;
                }
            }
            let store = &*self.store;
            let time = self.time.input_time;
            store.create_undo_table()?;
            let tx = rusqlite::Transaction::new_unchecked(
                &store.conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(backend("finishing an iteration"))?;
            let locked_at = Instant::now();
            // Under the write lock, as every flush: a migration since the
            // handle opened the store refuses the times' move.
            let finished = store
                .read_generation()
                .and_then(|seen| store.check_generation(seen))
                .and_then(|()| store.set_all(time))
                .and_then(|()| {
                    store
                        .conn
                        .prepare_cached(&format!("DELETE FROM {} WHERE t <= ?", store.undo_table()))
                        .and_then(|mut st| st.execute([time]))
                        .map(|_| ())
                        .map_err(backend("dropping undo entries"))
                })
                .and_then(|()| tx.commit().map_err(backend("finishing an iteration")));
            store.held_lock_since(locked_at);
            finished?;
            store.notifier.notify();
            return Ok(());
        };
        if self.time.flush_every_set.is_none() {
            // A dry run: dropping rolls back.
            return Ok(());
        }
        self.store.set_all(self.time.input_time)?;
        if let Some(failed) = self.forget {
            let forgotten = self
                .store
                .conn
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE input_time = ?",
                        self.store.failed_table()
                    ),
                    [failed],
                )
                .map_err(backend("forgetting a retried batch"))?;
            if forgotten == 0 {
                return Err(StoreError::NoSuchFailure { input_time: failed });
            }
        }
        // On any error above, or if COMMIT fails, dropping rolls back.
        self.store
            .conn
            .execute_batch("COMMIT")
            .map_err(backend("committing an iteration"))?;
        self.done = true;
        self.store.held_lock_since(open_since);
        self.store.notifier.notify();
        Ok(())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if let Some(open_since) = self.open_since.filter(|_| !self.done) {
            // Best effort: an error here leaves SQLite to roll back when the
            // connection closes.
            let _ = self.store.conn.execute_batch("ROLLBACK");
            self.store.held_lock_since(open_since);
        }
    }
}
