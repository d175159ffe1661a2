//! Stores: where a graph's state lives between iterations.
//!
//! - [`Memory`]: typed tables in memory; the reference store.
//! - [`Sqlite`]: a SQLite file, the embedded default.
//! - [`Postgres`]: tables in a Postgres database, through a connection pool;
//!   iterations can also run inside the application's own transaction.
//!
//! Every store implements [`graph::StateStore`] and gives the same results
//! for the same inputs; the SQL stores share their table layout and SQL
//! (see the `sql` module docs). Start with [`Sqlite::open`].
//!
//! ```
//! use graph::{Graph, GraphError};
//! use operators::prelude::*;
//! let (graph, (input, cache)) = Graph::build(|q| {
//!     let (input, words) = q.input::<String>("words")?;
//!     Ok((input, q.cache("distinct_words", words.distinct(), &[])?))
//! })?;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.db");
//! let mut store = stepping_store::Sqlite::open(&path, &graph, stepping_store::OpenOptions::default())?;
//! graph.insert(&mut store, &input, ["hi".to_string(), "hi".to_string()])?;
//! drop(store);
//! // Another process, later: attach and read the cache.
//! let mut reader = stepping_store::Sqlite::open(&path, &graph, stepping_store::OpenOptions::attach())?;
//! assert_eq!(cache.zset(&mut reader)?, zset! { "hi".to_string() => 1 });
//! # Ok::<(), GraphError>(())
//! ```
//!
//! Every store accepts the same values: the engine refuses, before any
//! store sees them, index keys that some store could not hold (see
//! [`graph::key_problem`]), as [`StoreError::Unrepresentable`].
//!
//! Reads by index trust a SQL table's key columns. A row whose key column
//! was changed behind the store's back (by hand, by another program) is
//! found under the key its column holds, not the one its data says: it is
//! missing from reads by its true key while a read of the whole table
//! still shows it. [`Sqlite::check_rows`] and [`Postgres::check_rows`]
//! recompute every row's identity and key columns from its data and report
//! each column that disagrees ([`RowProblem`]).
#![deny(missing_docs)]
// Parts shared by the SQL stores go unused when a feature leaves one out;
// the build with every feature (the workspace's) still checks them.
#![cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(feature = "async")]
mod async_store;
mod check;
mod memory;
mod migrate;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod verify;
mod views;
mod wait;

pub use graph::{Consumer, Feed, FeedRetention, FeedStore, StoreError};

/// Counters of a SQL store's work, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// State rows read.
    pub rows_read: u64,
    /// State rows written (upserted or deleted).
    pub rows_written: u64,
    /// SQL statements run for state reads and writes.
    pub statements: u64,
    /// SQLite: how long this store's iterations held the file's write lock
    /// (from `BEGIN IMMEDIATE` to `COMMIT` or `ROLLBACK`: the whole
    /// iteration when it is all or nothing, each table's flush when it is
    /// pipelined). SQLite has one writer per file,
    /// so workers ingesting into one file can overlap everything but this.
    /// Zero on Postgres, which locks rows, not the database.
    pub write_lock_held: std::time::Duration,
    /// Postgres: tables this handle vacuumed because their deleted rows
    /// piled up (see [`OpenOptions::vacuum`]).
    pub tables_vacuumed: u64,
    /// Postgres: background vacuum checks that failed (the iterations went
    /// on; autovacuum still runs).
    pub vacuum_failures: u64,
}
#[cfg(feature = "async")]
pub use async_store::{AsyncStore, ChangeStream};
pub use check::RowProblem;
pub use memory::{DEFAULT_MAX_WAIT, Memory};
pub use options::{MigrationSteps, OpenOptions};
#[cfg(feature = "postgres")]
pub use postgres::{PgPool, PgSequence, Postgres, ack_in};
#[cfg(feature = "sqlite")]
pub use sqlite::checkpoint::{
    BACKGROUND_LOG_BYTES as SQLITE_BACKGROUND_LOG_BYTES,
    CHECKPOINT_LOG_BYTES as SQLITE_CHECKPOINT_LOG_BYTES, SqliteCheckpointer,
};
#[cfg(feature = "sqlite")]
pub use sqlite::{PAGE_SIZE as SQLITE_PAGE_SIZE, Sqlite};
pub use verify::{GraphVerify, RowDifference, StateCheck, Verifiable, Verification};
