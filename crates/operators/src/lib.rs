//! The typed operator library of stepping-rs: every operator of the
//! original `stepping`, incremental where the DBSP paper allows, as methods
//! on [`graph::Stream`].
//!
//! `use stepping_operators::prelude::*;` brings them into scope. Each family is a
//! trait implemented for streams of Z-sets:
//!
//! | trait | operators | paper |
//! |---|---|---|
//! | [`Linear`] | `map`, `filter`, `map_many`, `neg`, `add`, `inspect`, `identity_print` | §4 (linear: `Q^Δ = Q`) |
//! | [`Integrals`] | `delay`, `delay_indexed`, `integrate`, `integrate_indexed`, `integrate_delay`, `differentiate` | Defs. 3.25, 3.27 |
//! | [`Joins`] | `join`, `outer_join` | Theorem 5.5 |
//! | [`Distinct`] | `distinct` | Prop. 6.3 |
//! | [`Aggregates`] | `reduce`, `count`, `group_reduce_flatten` | §11.1 |
//! | [`FirstN`] | `first_n` | §11.1 (not linear: re-computed over the integral) |
//! | [`Grouping`], [`GroupedOps`] | `group`, `per_group`, `flatten` | lifting (§6) |
//! | [`Recursion`], [`TransitiveClosure`] | `recursive`, `transitive_closure` | §§6–9 |
//! | [`Scalars`], [`ScalarOps`] | `make_set`, `make_scalar`, scalar `integrate`/`delay`/`differentiate` | §3 |
//!
//! The correctness contract of every operator, tested against a
//! from-scratch oracle in the `store` crate's suite: after any sequence of
//! changes, the integral of an operator's output equals the operator
//! evaluated from scratch on the integral of its input.
//!
//! This crate sits beside `store` above `graph`; it never touches a store
//! directly (state goes through [`graph::Ctx`]).
//!
//! A tour: a word count kept up to date under inserts and removes.
//!
//! ```
//! use graph::{Graph, GraphError};
//! use stepping_operators::prelude::*;
//! let by_word = Index::new("word", |w: &String| w.clone());
//! let (graph, (words, counts)) = Graph::build(|q| {
//!     let (input, words) = q.input::<String>("words")?;
//!     let counts = words.group_reduce_flatten(&by_word, 0i64, |_| 1);
//!     Ok((input, q.output("counts", counts)?))
//! })?;
//! let mut store = store::Memory::new(&graph);
//! let w = |s: &str| s.to_string();
//! graph.insert(&mut store, &words, [w("a"), w("b"), w("a")])?;
//! // Removing one "a": its count goes from 2 to 1.
//! let change = graph.remove(&mut store, &words, [w("a")])?;
//! assert_eq!(
//!     change.get(&counts)?,
//!     &zset! { Pair::new(2i64, w("a")) => -1, Pair::new(1i64, w("a")) => 1 }
//! );
//! # Ok::<(), GraphError>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod aggregate;
mod distinct;
mod first_n;
mod group;
mod join;
mod linear;
mod recursive;
mod scalar;
mod temporal;

pub use aggregate::{Aggregate, Aggregates};
pub use distinct::Distinct;
pub use first_n::FirstN;
pub use group::{GroupedOps, Grouping};
pub use join::Joins;
pub use linear::Linear;
pub use recursive::{DEFAULT_MAX_STEPS, Recursion, TransitiveClosure};
pub use scalar::{ScalarOps, Scalars};
pub use temporal::{Integrals, ScopedIndex};

/// Everything needed to write queries: the operator traits and the types
/// they use, and [`StateStore`](graph::StateStore), so that a function
/// generic over stores needs no direct dependency on the graph crate.
///
/// ```
/// use stepping_operators::prelude::*;
/// // Works on Memory, Sqlite and Postgres alike.
/// fn count_rows<S: StateStore + ?Sized>(
///     graph: &Graph,
///     store: &mut S,
///     input: &Input<i64>,
///     rows: &[i64],
/// ) -> Result<usize, GraphError> {
///     graph.insert(store, input, rows)?;
///     Ok(rows.len())
/// }
/// let (graph, input) = Graph::build(|q| Ok(q.input::<i64>("n")?.0))?;
/// let mut store = store::Memory::new(&graph);
/// assert_eq!(count_rows(&graph, &mut store, &input, &[1, 2])?, 2);
/// # Ok::<(), GraphError>(())
/// ```
pub mod prelude {
    pub use crate::{
        Aggregate, Aggregates, Distinct, FirstN, GroupedOps, Grouping, Integrals, Joins, Linear,
        Recursion, ScalarOps, Scalars, ScopedIndex, TransitiveClosure,
    };
    pub use graph::{
        Cache, Changes, Graph, GraphError, Input, Output, Outputs, Query, StateStore, StoreError,
        Stream, StreamFn, Time, stream_fn,
    };
    pub use zset::{Data, Desc, F64, Index, IndexOf, OrEmpty, Pair, ZSet, row, zset};
}

/// The part names of the group keys of `stream`'s scope.
pub(crate) fn group_parts<T, S>(stream: &graph::Stream<'_, T, S>) -> Vec<String> {
    stream.query().key_parts(stream.scope_id())
}
