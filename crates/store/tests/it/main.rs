//! The store crate's one integration-test binary: the generic suite run
//! against every store (see `harness::kinds`).

// The package is `stepping-store`; its code and docs call it `store`.
extern crate stepping_store as store;

mod bad_input;
mod bad_values;
mod concurrency;
mod ergonomics;
mod evolution;
mod examples;
mod extremes;
mod feed_harness;
mod feedback;
mod feeds;
#[cfg(feature = "async")]
mod feeds_async;
mod first_use;
mod harness;
mod migrations;
mod oracle;
mod oracle_ops;
mod own_names;
mod postgres;
mod profile;
mod queries;
mod reliability;
mod retention;
mod semi_joins;
mod sql_stores;
mod sql_views;
mod windows;
