//! Multi-worker batched ingest (DESIGN §5): split input into batches, give
//! each an input time, and run them on several workers, each with its own
//! store connection, so that the result equals the serial ingest.
//!
//! Correctness comes from the time protocol every store implements
//! ([`graph::Time`]): before touching a state table, an iteration waits
//! until the table's `last_update` has reached its frontier (the previous
//! batch's time); when it commits the table, it records its own time. With
//! `flush_every_set = Some(false)` a batch commits all tables at once, so
//! batches run one after another (workers overlap only what precedes the
//! first table); with `Some(true)` each table commits as soon as it is set,
//! so the next batch can run the early part of the graph while this one
//! finishes the rest (pipelining).
//!
//! Waiting never spins: stores sleep with exponential backoff, woken early
//! by commits of the same process (a condition variable) or, on Postgres,
//! by `LISTEN`/`NOTIFY`; past `max_wait` the wait fails with
//! [`StoreError::FrontierTimeout`](graph::StoreError) naming the table.
//!
//! A batch that fails (an error or a panic in a user function, a lost
//! connection) never wedges the batches after it: its transaction is rolled
//! back, the batch is recorded in the store's failed-batch table with its
//! input, and its time is marked done so that its successors proceed.
//! [`retry`] re-ingests recorded batches at new times. With a
//! [`store::PgSequence`], a time whose process died before committing it
//! is found by the waiters stuck behind it and recorded failed the same
//! way, naming the batch it held; [`retry_with`] feeds such a batch again.
//!
//! Start with [`Ingest`].
//!
//! ```
//! use operators::prelude::*;
//! use stepping_parallel::{Counter, Ingest, Progress};
//! let (graph, (input, total)) = Graph::build(|q| {
//!     let (input, n) = q.input::<i64>("n")?;
//!     Ok((input, q.cache("total", n.reduce(0i64, |x| *x), &[])?))
//! })?;
//! let store = store::Memory::new(&graph);
//! // A hundred batches on two workers: the serial result.
//! let batches: Vec<Changes> = (1..=100).map(|i| Changes::new().insert(&input, [i])).collect();
//! let report = Ingest::new(&graph)
//!     .workers(2)
//!     .progress(Progress::Hidden)
//!     .run(|_worker| Ok(store.handle()), batches, &mut Counter::starting_at(1))?;
//! assert!(report.failures.is_empty());
//! assert_eq!(total.zset(&mut store.handle())?, zset! { 5050 => 1 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod ingest;
mod time;

pub use ingest::{Failure, Ingest, Progress, Report, RetryReport, retry, retry_with};
pub use time::{Counter, Given, TimeSource};

/// What can go wrong in a parallel ingest (beyond a failed batch, which is
/// recorded and reported, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParallelError {
    /// A worker could not open its store.
    #[error("worker {worker} could not open its store: {source}")]
    Open {
        /// The worker.
        worker: usize,
        /// Why.
        #[source]
        source: graph::GraphError,
    },
    /// A batch failed and its failure could not be recorded, so its
    /// successors could not be released; the ingest stopped.
    #[error(
        "batch {batch} (time {input_time}) failed ({error}) and could not be recorded: {source}"
    )]
    Record {
        /// The batch.
        batch: usize,
        /// Its input time.
        input_time: i64,
        /// Why it failed.
        error: String,
        /// Why recording failed.
        #[source]
        source: graph::StoreError,
    },
    /// Assigning times failed.
    #[error("assigning input times: {0}")]
    Time(#[source] graph::StoreError),
    /// The engine or a store failed outside any batch.
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
}

/// A store's error is the engine's [`GraphError::Store`](graph::GraphError::Store),
/// so `?` on a store call works in a function returning `ParallelError`.
impl From<graph::StoreError> for ParallelError {
    fn from(e: graph::StoreError) -> Self {
        ParallelError::Graph(e.into())
    }
}

/// So that `?` on an ingest works in a function returning `GraphError`:
/// an engine or store error comes back as itself, anything else (a worker
/// that could not open its store, a failure that could not be recorded,
/// times that could not be assigned) as [`GraphError::Ingest`](graph::GraphError::Ingest),
/// whose source is this error.
///
/// ```
/// use graph::{GraphError, StoreError}; // the stepping-graph crate
/// use stepping_parallel::ParallelError;
/// fn ingest() -> Result<(), ParallelError> {
///     Err(ParallelError::Time(StoreError::backend("taking a time", "gone")))
/// }
/// fn caller() -> Result<(), GraphError> {
///     ingest()?;
///     Ok(())
/// }
/// let err = caller().unwrap_err();
/// assert!(matches!(err, GraphError::Ingest(_)));
/// assert!(err.to_string().contains("taking a time"));
/// ```
impl From<ParallelError> for graph::GraphError {
    fn from(e: ParallelError) -> Self {
        match e {
            ParallelError::Graph(g) => g,
            other => graph::GraphError::Ingest(Box::new(other)),
        }
    }
}

/// So that `?` on an ingest works in a function returning `StoreError`: a
/// store's error comes back as itself, anything else as
/// [`StoreError::Backend`](graph::StoreError::Backend) whose source is this
/// error.
impl From<ParallelError> for graph::StoreError {
    fn from(e: ParallelError) -> Self {
        match e {
            ParallelError::Graph(graph::GraphError::Store(s)) | ParallelError::Time(s) => s,
            other => graph::StoreError::backend("a parallel ingest", other),
        }
    }
}
