//! Stores: where a graph's state lives between iterations.
//!
//! - [`Memory`]: typed tables in memory; the reference store.
//! - [`Sqlite`]: a SQLite file, the embedded default.
//!
//! Every store implements [`graph::StateStore`] and gives the same results
//! for the same inputs; the SQL stores share their table layout and SQL
//! (see the `sql` module docs). Start with [`Sqlite::open`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod memory;
mod sql;
mod sqlite;
mod wait;

pub use graph::StoreError;
pub use memory::{DEFAULT_MAX_WAIT, Memory};
pub use sqlite::{OpenOptions, Sqlite};
