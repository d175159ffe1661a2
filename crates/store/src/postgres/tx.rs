//! One iteration's transaction: buffered writes, pipelined flushes, undo
//! entries and the commit.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::LocalBoxFuture;
use graph::{EncodedRow, Read, StateId, StateKind, StateTx, StoreError, Time, Value};
use tokio_postgres::types::ToSql;

use super::Postgres;
use super::failed::failed_table;
use super::frontier::{
    bump_if_at, query_changed, set_last_update, set_last_update_guarded, times_of, times_with,
};
use super::notify::wait_for;
use super::reads::{max_step, read_rows};
use super::runtime::{Conn, block_on, on, pg};
use super::statements::Tables;
use super::writes::{ALREADY_APPLIED, QUERY_CHANGED, explain_refusal, refusal, write_rows};
use crate::sql::{self, SqlRead};

pub(super) struct PostgresTx<'s> {
    pub(super) store: &'s Postgres,
    pub(super) conn: deadpool_postgres::Object,
    pub(super) time: Cell<Time>,
    /// `time` is to be found in the transaction: the next after every
    /// committed iteration ([`StateStore::begin_next`]).
    pub(super) next: Cell<bool>,
    /// All or nothing: one transaction for the whole iteration.
    pub(super) atomic: bool,
    /// An all-or-nothing iteration whose `BEGIN` has not gone out yet.
    pub(super) pending: Cell<bool>,
    pub(super) open: Cell<bool>,
    pub(super) waited: Vec<bool>,
    pub(super) buffered: Vec<Vec<EncodedRow>>,
    /// The failed batch this iteration retries, forgotten in its commit.
    pub(super) forget: Option<i64>,
    pub(super) done: bool,
}

/// A statement run by [`PostgresTx::run`]: built again for each attempt.
pub(super) type TxStatement<'a, T> =
    dyn Fn(&'a deadpool_postgres::Object) -> LocalBoxFuture<'a, Result<T, StoreError>> + 'a;

impl PostgresTx<'_> {
    /// Runs `statement` on the iteration's connection. The first statement
    /// of an all-or-nothing iteration goes out pipelined behind `BEGIN` and
    /// the frontier check, so starting the transaction costs no round trip
    /// of its own; if a table turns out to be behind the frontier, the
    /// transaction (and what the statement read) is rolled back, the wait
    /// happens outside any transaction, and the statement runs again.
    pub(super) fn run<'a, T>(&'a self, statement: &TxStatement<'a, T>) -> Result<T, StoreError> {
        if !self.pending.get() {
            return block_on(statement(&self.conn))?;
        }
        let tables = Arc::clone(&self.store.tables);
        let names = tables.names();
        loop {
            let conn = &self.conn;
            // The frontier check must reach the server before the
            // statement: prepared first (a cache hit after the first
            // iteration on this connection), it goes out on its first poll,
            // and `join!` polls in order. It locks every table's time until
            // the iteration ends: another process's iteration waits for this
            // one's commit, then reads what it wrote.
            let stmt = block_on(async {
                conn.prepare(&tables.lock_times_sql)
                    .await
                    .map_err(pg(format!("locking `{}`", tables.last_update())))
            })??;
            let (begun, times, result) = block_on(async {
                tokio::join!(
                    conn.batch_execute("BEGIN"),
                    times_with(conn, &stmt, &tables, &names),
                    statement(conn)
                )
            })?;
            begun.map_err(pg("starting an iteration"))?;
            self.open.set(true);
            // A statement that fails to parse (a dropped table) aborts the
            // transaction, failing the frontier check pipelined with it: its
            // own error is the one to report.
            let times = match (times, &result) {
                (Err(e), Err(_)) if aborted(&e) => {
                    // Unless the table was dropped by a migration: then the
                    // query changed, and that is what to report.
                    block_on(self.conn.batch_execute("ROLLBACK"))?
                        .map_err(pg("ending a failed iteration"))?;
                    self.open.set(false);
                    let names = tables.names();
                    if let Err(changed @ StoreError::QueryChanged { .. }) =
                        block_on(times_of(&self.conn, &tables, &names))?
                    {
                        return Err(changed);
                    }
                    return result;
                }
                (times, _) => times?,
            };
            if self.next.get() {
                // After every committed iteration, as `next_time` finds
                // it: this is the serial path (concurrent writers are
                // given their times, `iteration_at`).
                let last = times.iter().copied().fold(0, i64::max);
                self.time.set(Time::new(last + 1, last));
            }
            let time = self.time.get();
            if let Some(s) = times.iter().position(|t| *t >= time.input_time) {
                // Another iteration applied this time first (dropping the
                // transaction rolls back).
                return Err(StoreError::TimeAlreadyApplied {
                    table: names[s].clone(),
                    time: time.input_time,
                    recorded: times[s],
                });
            }
            let frontier = time.frontier;
            let behind = times.iter().position(|t| *t < frontier);
            let Some(behind) = behind else {
                self.pending.set(false);
                return result;
            };
            block_on(self.conn.batch_execute("ROLLBACK"))?
                .map_err(pg("waiting for the frontier"))?;
            self.open.set(false);
            let wake = self.store.wake();
            let (max_wait, poll) = (self.store.max_wait, self.store.poll);
            block_on(wait_for(
                &self.conn,
                &tables,
                &names[behind..],
                frontier,
                max_wait,
                poll,
                wake,
            ))??;
        }
    }

    /// `e`, explained by the stored rows when it is a refused write of
    /// `written` (see [`explain_refusal`]): the transaction is ended first,
    /// so that the rows read are the committed ones.
    pub(super) fn explained(
        &self,
        e: StoreError,
        written: &[(usize, &[EncodedRow])],
    ) -> StoreError {
        if !refusal(&e) {
            return e;
        }
        if self.open.get() {
            // A failed rollback leaves a broken connection, which the read
            // below reports by failing: `e` is kept then.
            let _ = block_on(self.conn.batch_execute("ROLLBACK"));
            self.open.set(false);
        }
        let tables = &self.store.tables;
        match block_on(explain_refusal(&self.conn, tables, written, e)) {
            Ok(e) | Err(e) => e,
        }
    }

    pub(super) fn wait(&mut self, s: usize) -> Result<(), StoreError> {
        if !self.waited[s] {
            let tables = &self.store.tables;
            let wake = self.store.wake();
            block_on(wait_for(
                &self.conn,
                tables,
                std::slice::from_ref(&tables.schemas[s].name),
                self.time.get().frontier,
                self.store.max_wait,
                self.store.poll,
                wake,
            ))??;
            self.waited[s] = true;
        }
        Ok(())
    }
}

impl StateTx for PostgresTx<'_> {
    fn time(&mut self) -> Result<Time, StoreError> {
        if self.pending.get() && self.next.get() {
            // The time comes with the frontier check, which goes out with
            // the first statement: send one that does nothing.
            self.run(&|c| {
                Box::pin(async move {
                    c.batch_execute("SELECT 1")
                        .await
                        .map_err(pg("finding the iteration's time"))
                })
            })?;
        }
        Ok(self.time.get())
    }

    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let s = state.index();
        let store = self.store;
        let t = &store.tables;
        let sql_read = SqlRead::of(&t.specs[s], read);
        // Checked against the frontier first, on its own: when a pipelined
        // worker is behind the one before it, a read sent together with the
        // check would mostly be thrown away, and cost the server its work.
        self.wait(s)?;
        let rows = self.run(&|c| {
            Box::pin(read_rows(
                c,
                &t.schemas[s],
                &t.sql[s],
                &sql_read,
                &store.stats,
            ))
        })?;
        sql::decode_rows(&t.specs[s], &t.schemas[s], rows, sink)
    }

    fn table_name(&self, state: StateId) -> Option<String> {
        Some(self.store.tables.schemas.get(state.index())?.name.clone())
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        let s = state.index();
        self.wait(s)?;
        let t = &self.store.tables;
        self.run(&|c| Box::pin(max_step(c, &t.schemas[s], &t.sql[s])))
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let t = &self.store.tables;
        // Held until the table's flush (pipelined) or the commit, where the
        // writes of every table go out together.
        self.buffered[s].extend(sql::encode_delta(&t.specs[s], &t.schemas[s], &*delta)?);
        Ok(())
    }

    fn flush(&mut self, state: StateId) -> Result<(), StoreError> {
        if self.open.get() || self.time.get().flush_every_set != Some(true) {
            return Ok(());
        }
        let s = state.index();
        let t = Arc::clone(&self.store.tables);
        let stats = Arc::clone(&self.store.stats);
        let time = self.time.get();
        if self.buffered[s].is_empty() {
            // Only the time moves on: one statement, atomic on its own,
            // which also checks the frontier when that is still to do.
            let name = &t.schemas[s].name;
            if !self.waited[s] {
                if block_on(bump_if_at(
                    &self.conn,
                    &t,
                    name,
                    time.input_time,
                    time.frontier,
                ))?? {
                    return Ok(());
                }
                self.wait(s)?;
            }
            let name = std::slice::from_ref(name);
            return block_on(set_last_update_guarded(
                &self.conn,
                &t,
                name,
                time.input_time,
            ))?;
        }
        self.wait(s)?;
        let rows = std::mem::take(&mut self.buffered[s]);
        let time = time.input_time;
        let conn = &self.conn;
        let undo = block_on(undo_of(conn, self.store, s, &rows))??;
        // One transaction for this table, in one round trip: `BEGIN`, its
        // writes, its time and `COMMIT`, every statement prepared first so
        // that each goes out on its first poll, in order (as for the
        // iteration's commit). A write the server refuses aborts the
        // transaction and `COMMIT` rolls it back; one that fails in the
        // client is followed by `ROLLBACK` instead.
        block_on(prepare_writes(conn, &t, &[s]))??;
        let rows = &rows;
        let (generation_guard, guard, undo_sql) = block_on(async {
            let generation_guard = conn.prepare(&t.generation_guard_sql).await;
            let guard = conn.prepare(&t.guard_sql).await;
            let undo = conn.prepare(&t.keep_undo_sql).await;
            (generation_guard, guard, undo)
        })?;
        let generation_guard = generation_guard.map_err(pg("locking the query's generation"))?;
        let guard = guard.map_err(pg("locking a table's time"))?;
        let undo_sql = undo_sql.map_err(pg("keeping an undo entry"))?;
        let flushed = block_on(async {
            let name = &t.schemas[s].name;
            let failed = AtomicBool::new(false);
            let failed = &failed;
            // The guards first. The query's generation: a migration since
            // this handle opened the store fails the flush, writing nothing
            // (and one under way is waited for). Then the table's time, so
            // a second iteration at the same time waits, then fails it,
            // writing nothing.
            let generation = t.generation();
            let generation_params: [&(dyn ToSql + Sync); 1] = [&generation];
            let guard_params: [&(dyn ToSql + Sync); 2] = [name, &time];
            let undo_params: [&(dyn ToSql + Sync); 3] = [&time, name, &undo];
            let (begun, current, guarded, kept, written, timed, ended) = tokio::join!(
                conn.batch_execute("BEGIN"),
                conn.query(&generation_guard, &generation_params),
                conn.query(&guard, &guard_params),
                conn.execute(&undo_sql, &undo_params),
                write_rows(
                    conn,
                    &t.specs[s],
                    &t.schemas[s],
                    &t.sql[s],
                    rows,
                    &stats,
                    failed
                ),
                set_last_update(conn, &t, std::slice::from_ref(name), time),
                end_transaction(conn, failed)
            );
            first_error(vec![
                begun.map_err(pg(format!("flushing `{name}`"))),
                current
                    .map(|_| ())
                    .map_err(pg("locking the query's generation")),
                guarded
                    .map(|_| ())
                    .map_err(pg(format!("locking the time of `{name}`"))),
                kept.map(|_| ())
                    .map_err(pg(format!("keeping the undo of `{name}`"))),
                written,
                timed,
            ])?;
            ended.map_err(pg(format!("committing `{name}`")))
        })?;
        match flushed {
            Err(e) if e.to_string().contains(QUERY_CHANGED) => {
                Err(block_on(query_changed(conn, &t))?)
            }
            Err(e) if e.to_string().contains(ALREADY_APPLIED) => {
                let recorded =
                    block_on(times_of(conn, &t, std::slice::from_ref(&t.schemas[s].name)))??;
                Err(StoreError::TimeAlreadyApplied {
                    table: t.schemas[s].name.clone(),
                    time,
                    recorded: recorded.first().copied().unwrap_or(time),
                })
            }
            other => other.map_err(|e| self.explained(e, &[(s, rows.as_slice())])),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let t = Arc::clone(&self.store.tables);
        let names = t.names();
        if !self.atomic {
            for s in 0..self.buffered.len() {
                if !self.buffered[s].is_empty() {
                    self.flush(StateId(s as u32))?;
                }
            }
            // Tables no state was written to still move on in time; then,
            // the iteration being in every table, what would undo it goes.
            let time = self.time.get().input_time;
            let conn = &self.conn;
            let (timed, cleared) = block_on(async {
                let generation = t.generation();
                let params: [&(dyn ToSql + Sync); 2] = [&time, &generation];
                tokio::join!(
                    set_last_update_guarded(conn, &t, &names, time),
                    conn.execute(&t.clear_undo_sql, &params)
                )
            })?;
            timed?;
            cleared.map_err(pg("dropping undo entries"))?;
            self.store.committed();
            return Ok(());
        }
        if self.time.get().flush_every_set.is_none() {
            return Ok(()); // a dry run: dropping rolls back
        }
        if let Some(failed) = self.forget {
            // A retry: the record goes in this transaction, or nothing does.
            let t = Arc::clone(&t);
            let forgotten = self.run(&|conn| {
                let t = Arc::clone(&t);
                Box::pin(async move {
                    conn.execute(
                        &format!("DELETE FROM {} WHERE input_time = $1", failed_table(&t)),
                        &[&failed],
                    )
                    .await
                    .map_err(pg("forgetting a retried batch"))
                })
            })?;
            if forgotten == 0 {
                return Err(StoreError::NoSuchFailure { input_time: failed });
            }
        }
        // Every table's writes and the times, pipelined on the one
        // connection (the server runs them in order, in this transaction);
        // the first failure is the one reported.
        let buffered = std::mem::take(&mut self.buffered);
        if self.pending.get() && self.next.get() {
            // Nothing read yet, so the time is not known: it is needed
            // before the writes go out.
            let times = block_on(times_of(&self.conn, &t, &names))??;
            let last = times.into_iter().fold(0, i64::max);
            self.time.set(Time::new(last + 1, last));
            self.next.set(false);
        }
        let time = self.time.get().input_time;
        let written: Vec<usize> = (0..buffered.len())
            .filter(|&s| !buffered[s].is_empty())
            .collect();
        let (t, buffered, written) = (&t, &buffered, &written);
        // A write that fails in the client (before sending) says so here,
        // before `COMMIT` is polled.
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let store = self.store;
        let write_all = |conn| write_tables(conn, store, buffered, time, failed);
        if self.pending.get() {
            // Nothing read yet: `BEGIN` and the frontier check go out with
            // the writes, and a table behind the frontier means waiting and
            // writing again, so `COMMIT` waits for the check's answer.
            if let Err(e) = self.run(&|conn| Box::pin(write_all(conn))) {
                return Err(self.explained(e, &in_tables(buffered)));
            }
            block_on(self.conn.batch_execute("COMMIT"))?.map_err(pg("committing an iteration"))?;
        } else {
            // The transaction is open and past its frontier: `COMMIT` goes
            // out behind the writes, saving a round trip. Every statement
            // is prepared first so that each goes out on its first poll, in
            // order, before `COMMIT`. A write the server refuses aborts the
            // transaction, and `COMMIT` then rolls it back; one that fails
            // in the client is followed by `ROLLBACK` instead.
            let conn = &self.conn;
            block_on(prepare_writes(conn, t, written))??;
            let (result, ended) =
                block_on(async { tokio::join!(write_all(conn), end_transaction(conn, failed)) })?;
            self.open.set(false);
            result.map_err(|e| self.explained(e, &in_tables(buffered)))?;
            ended.map_err(pg("committing an iteration"))?;
        }
        self.done = true;
        self.store.committed();
        Ok(())
    }
}

/// What undoes writing `rows` to table `s` (see [`sql::undo_of`]), as
/// bytes: a keyed table's rows are read first (the one extra round trip of
/// a pipelined flush, for keyed tables only).
pub(super) async fn undo_of(
    conn: &deadpool_postgres::Object,
    store: &Postgres,
    s: usize,
    rows: &[EncodedRow],
) -> Result<Vec<u8>, StoreError> {
    let t = &store.tables;
    let schema = &t.schemas[s];
    let mut old = HashMap::new();
    if schema.kind == StateKind::Keyed {
        let ids = rows.iter().map(|r| (r.identity, r.keys.clone())).collect();
        let read = SqlRead::ByIdentity { ids };
        for r in read_rows(conn, schema, &t.sql[s], &read, &store.stats).await? {
            old.insert(r.identity, r.data.as_ref().to_vec());
        }
    }
    sql::encode_undo(&sql::undo_of(schema, rows, &old)?)
}

/// The tables with rows in `buffered`, each with its rows.
pub(super) fn in_tables(buffered: &[Vec<EncodedRow>]) -> Vec<(usize, &[EncodedRow])> {
    (0..buffered.len())
        .filter(|&s| !buffered[s].is_empty())
        .map(|s| (s, buffered[s].as_slice()))
        .collect()
}

/// Writes the rows `buffered[s]` of each table `s` of `store` and records
/// every table at `time`, all pipelined; sets `failed` as soon as one write
/// fails.
pub(super) async fn write_tables(
    conn: &deadpool_postgres::Object,
    store: &Postgres,
    buffered: &[Vec<EncodedRow>],
    time: i64,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    let (t, stats) = (&*store.tables, &*store.stats);
    let names = t.names();
    let written = (0..buffered.len()).filter(|&s| !buffered[s].is_empty());
    let writes = written.map(|s| {
        write_rows(
            conn,
            &t.specs[s],
            &t.schemas[s],
            &t.sql[s],
            &buffered[s],
            stats,
            failed,
        )
    });
    let (written, timed) = tokio::join!(
        join_in_order(writes.collect()),
        set_last_update(conn, t, &names, time)
    );
    first_error(written.into_iter().chain([timed]).collect())
}

/// Prepares the write statements of tables `written` and the `last_update`
/// statement, so that a pipeline of them sends each on its first poll.
pub(super) async fn prepare_writes(
    conn: &deadpool_postgres::Object,
    t: &Tables,
    written: &[usize],
) -> Result<(), StoreError> {
    for &s in written {
        let (schema, sql) = (&t.schemas[s], &t.sql[s]);
        // Exactly the statements `write_rows` sends: one not prepared here
        // would be prepared there, a round trip that lets the pipelined
        // `COMMIT` go out before the write.
        for text in [sql.write(&t.specs[s]), &sql.delete] {
            conn.prepare(text).await.map_err(on(schema, "writing"))?;
        }
    }
    conn.prepare(&t.last_update_sql)
        .await
        .map_err(pg("recording last_update"))?;
    Ok(())
}

/// `COMMIT`, or `ROLLBACK` if a write of the pipeline before it failed in
/// the client (`failed`, set before this is first polled).
pub(super) async fn end_transaction(
    conn: &deadpool_postgres::Object,
    failed: &AtomicBool,
) -> Result<(), tokio_postgres::Error> {
    let end = if failed.load(Ordering::SeqCst) {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    conn.batch_execute(end).await
}

/// Runs `futures` together, polling every unfinished one in order on every
/// poll: statements they send on their first poll go out in that order.
/// (`join_all` of many futures promises no order.)
pub(super) async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::future::{MaybeDone, maybe_done};
    let mut all: Vec<std::pin::Pin<Box<MaybeDone<F>>>> = futures
        .into_iter()
        .map(|f| Box::pin(maybe_done(f)))
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for f in &mut all {
            done &= f.as_mut().poll(cx).is_ready();
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    all.iter_mut()
        .filter_map(|f| f.as_mut().take_output())
        .collect()
}

/// Whether `e` is Postgres refusing a statement because an earlier one
/// failed in the same transaction (SQLSTATE 25P02).
pub(super) fn aborted(e: &StoreError) -> bool {
    e.to_string().contains("(25P02)")
}

/// The error of pipelined statements: a statement after a failed one
/// fails only because the transaction is aborted, so the one reported is
/// the first that failed for a reason of its own.
pub(super) fn first_error(results: Vec<Result<(), StoreError>>) -> Result<(), StoreError> {
    let mut errors: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
    match errors.iter().position(|e| !aborted(e)) {
        Some(first) => Err(errors.swap_remove(first)),
        None => errors.into_iter().next().map_or(Ok(()), Err),
    }
}

impl Drop for PostgresTx<'_> {
    fn drop(&mut self) {
        if self.open.get() && !self.done {
            // If even the rollback fails the connection is broken; the pool
            // discards it when it is next checked.
            let _ = block_on(self.conn.batch_execute("ROLLBACK"));
        }
    }
}
