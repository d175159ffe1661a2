//! The store crate's one integration-test binary: the generic suite run
//! against every store (see `harness::kinds`).

mod bad_input;
mod examples;
mod first_use;
mod harness;
mod oracle;
mod own_names;
mod postgres;
mod queries;
mod reliability;
mod sql_stores;
