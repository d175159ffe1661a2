//! Stores: where a graph's state lives between iterations.
//!
//! - [`Memory`]: typed tables in memory; the reference store.
//!
//! Every store implements [`graph::StateStore`] and gives the same results
//! for the same inputs. Start with [`Memory`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod memory;

pub use graph::StoreError;
pub use memory::{DEFAULT_MAX_WAIT, Memory};
