//! Benchmark workloads shared by `cargo xtask bench`, the examples and the
//! tests. Start with [`meter_reads`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod direct;
pub mod group_min;
pub mod meter_max;
pub mod meter_reads;
pub mod pg;
pub mod tally;
