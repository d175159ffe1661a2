//! Running an iteration inside a transaction the application holds.
//!
//! The engine is synchronous; the application's transaction is async. So
//! the iteration runs on its own thread with a [`StateTx`] that sends every
//! read and write, already encoded as plain data, to the caller's future,
//! which runs them on the caller's transaction and sends the rows back.
//! Everything happens inside a savepoint: an error rolls back to it, leaving
//! the caller's transaction holding only the caller's own writes.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graph::{
    Changes, EncodedRow, Graph, GraphError, Outputs, Read, StateId, StateTx, StoreError, Time,
    Value,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::GenericClient;

use super::{
    Borrowed, Conn, PgRow, Tables, Wake, explain_refusal, lock_times, max_step, pg, read_rows,
    refusal, set_last_update, wait_for, write_rows,
};
use crate::StoreStats;
use crate::sql::{self, SqlRead};

const SAVEPOINT: &str = "stepping_iteration";

enum Request {
    Read {
        table: usize,
        read: SqlRead,
        reply: oneshot::Sender<Result<Vec<PgRow>, StoreError>>,
    },
    MaxStep {
        table: usize,
        reply: oneshot::Sender<Result<Option<u32>, StoreError>>,
    },
    Write {
        table: usize,
        rows: Vec<EncodedRow>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Commit {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The iteration's side: every call is a request to the caller's future.
struct BridgeTx {
    requests: mpsc::UnboundedSender<Request>,
    tables: Arc<Tables>,
    time: Time,
}

fn gone() -> StoreError {
    StoreError::backend(
        "running an iteration in the caller's transaction",
        "the caller's future stopped",
    )
}

impl BridgeTx {
    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(make(reply)).map_err(|_| gone())?;
        answer.blocking_recv().map_err(|_| gone())?
    }
}

impl StateTx for BridgeTx {
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
        let read = SqlRead::of(&self.tables.specs[s], read);
        let rows = self.ask(|reply| Request::Read {
            table: s,
            read,
            reply,
        })?;
        sql::decode_rows(&self.tables.specs[s], &self.tables.schemas[s], rows, sink)
    }

    fn table_name(&self, state: StateId) -> Option<String> {
        Some(self.tables.schemas.get(state.index())?.name.clone())
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        self.ask(|reply| Request::MaxStep {
            table: state.index(),
            reply,
        })
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        let s = state.index();
        let rows = sql::encode_delta(&self.tables.specs[s], &self.tables.schemas[s], &*delta)?;
        self.ask(|reply| Request::Write {
            table: s,
            rows,
            reply,
        })
    }

    fn flush(&mut self, _state: StateId) -> Result<(), StoreError> {
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        if self.time.flush_every_set.is_none() {
            return Ok(());
        }
        self.ask(|reply| Request::Commit { reply })
    }
}

/// Runs `request`; returns the table and rows of a write the server
/// refused, for [`explain_refusal`] once the savepoint is rolled back.
async fn serve<C: Conn>(
    conn: &C,
    tables: &Tables,
    stats: &Mutex<StoreStats>,
    time: Time,
    request: Request,
) -> Option<(usize, Vec<EncodedRow>)> {
    match request {
        Request::Read { table, read, reply } => {
            let _ = reply.send(
                read_rows(
                    conn,
                    &tables.schemas[table],
                    &tables.sql[table],
                    &read,
                    stats,
                )
                .await,
            );
        }
        Request::MaxStep { table, reply } => {
            let _ = reply.send(max_step(conn, &tables.schemas[table], &tables.sql[table]).await);
        }
        Request::Write { table, rows, reply } => {
            let written = write_rows(
                conn,
                &tables.specs[table],
                &tables.schemas[table],
                &tables.sql[table],
                &rows,
                stats,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .await;
            let refused = written.as_ref().is_err_and(refusal);
            let _ = reply.send(written);
            if refused {
                return Some((table, rows));
            }
        }
        Request::Commit { reply } => {
            let names = tables.names();
            let _ = reply.send(set_last_update(conn, tables, &names, time.input_time).await);
        }
    }
    None
}

/// What a bridged iteration needs from its store.
pub(crate) struct Setup {
    pub(crate) tables: Arc<Tables>,
    pub(crate) stats: Arc<Mutex<StoreStats>>,
    pub(crate) max_wait: Duration,
    pub(crate) poll: (Duration, Duration),
    pub(crate) wake: Option<Wake>,
}

/// Runs one iteration of `graph` on `client` (see the module docs).
pub(crate) async fn run<C: GenericClient + Sync>(
    client: &C,
    setup: Setup,
    graph: Graph,
    changes: Changes,
    time: Time,
) -> Result<Outputs, GraphError> {
    let Setup {
        tables,
        stats,
        max_wait,
        poll,
        wake,
    } = setup;
    let conn = Borrowed {
        client,
        cache: tokio::sync::Mutex::new(HashMap::new()),
    };
    wait_for(
        &conn,
        &tables,
        &tables.names(),
        time.frontier,
        max_wait,
        poll,
        wake,
    )
    .await?;
    client
        .batch_execute(&format!("SAVEPOINT {SAVEPOINT}"))
        .await
        .map_err(pg("opening a savepoint"))?;
    // Lock every table's time until the caller's transaction ends, so that
    // an iteration of another process waits for it; under the lock, a time
    // another iteration applied first is refused.
    let names = tables.names();
    let times = lock_times(&conn, &tables, &names).await?;
    if let Some(s) = times.iter().position(|t| *t >= time.input_time) {
        client
            .batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}"
            ))
            .await
            .map_err(pg("closing the savepoint"))?;
        return Err(StoreError::TimeAlreadyApplied {
            table: names[s].clone(),
            time: time.input_time,
            recorded: times[s],
        }
        .into());
    }
    let (requests, mut incoming) = mpsc::unbounded_channel();
    let (done, result) = oneshot::channel();
    let bridge = BridgeTx {
        requests,
        tables: Arc::clone(&tables),
        time,
    };
    std::thread::Builder::new()
        .name("stepping-iteration".into())
        .spawn(move || {
            // User functions' panics are `GraphError::UserPanic` already;
            // anything else that panics still answers the caller, typed.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                graph.iteration_with(Box::new(bridge), changes)
            }))
            .unwrap_or_else(|panic| {
                Err(StoreError::backend(
                    "running an iteration in the caller's transaction",
                    format!(
                        "the iteration's thread panicked: {}",
                        graph::panic_message(&*panic)
                    ),
                )
                .into())
            });
            let _ = done.send(outcome);
        })
        .map_err(|e| StoreError::backend("starting the iteration thread", e))?;
    // Serve requests until the iteration drops its sender (it finished).
    let mut refused = None;
    while let Some(request) = incoming.recv().await {
        if let Some(write) = serve(&conn, &tables, &stats, time, request).await {
            refused = Some(write);
        }
    }
    let outcome = result
        .await
        .map_err(|_| gone())
        .map_err(GraphError::from)
        .and_then(|r| r);
    let keep = outcome.is_ok() && time.flush_every_set.is_some();
    let end = if keep {
        format!("RELEASE SAVEPOINT {SAVEPOINT}")
    } else {
        format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
    };
    client
        .batch_execute(&end)
        .await
        .map_err(pg("closing the savepoint"))?;
    match (outcome, refused) {
        (Err(GraphError::Store(e)), Some((s, rows))) => {
            Err(explain_refusal(&conn, &tables, &[(s, rows.as_slice())], e)
                .await
                .into())
        }
        (outcome, _) => outcome,
    }
}
