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
//! | [`Joins`] | `join`, `join_map`, `outer_join`, `stream_join` | Theorem 5.5 |
//! | [`SemiJoins`] | `semi_join`, `anti_join` | Theorem 5.5, Prop. 6.3 |
//! | [`Distinct`] | `distinct` | Prop. 6.3 |
//! | [`Aggregates`] | `reduce`, `count`, `group_reduce_flatten` | §11.1 |
//! | [`FirstN`] | `first_n` | §11.1 (not linear: re-computed over the integral) |
//! | [`Extremes`] | `min`, `max`, `arg_min`, `arg_max`, `group_min`, `group_max`, `group_arg_min`, `group_arg_max` | §11.1 (not linear: an ordered state read from its first rows) |
//! | [`Summaries`] | `count_distinct`, `avg`, `group_count_distinct`, `group_avg` | Prop. 6.3, §11.1 |
//! | [`Grouping`], [`GroupedOps`] | `group`, `per_group`, `flatten` | lifting (§6) |
//! | [`Windows`] | `tumbling`, `hopping`, `rolling` | window aggregates (tumbling and hopping are linear) |
//! | [`Retention`] | `retain` (with [`Late`]) | bounded state: a watermark minus a lateness, as dbsp's lateness |
//! | [`Recursion`], [`TransitiveClosure`] | `recursive`, `transitive_closure` | §§6–9 |
//! | [`Scalars`], [`ScalarOps`] | `make_set`, `make_scalar`, scalar `integrate`/`delay`/`differentiate` | §3 |
//!
//! The correctness contract of every operator, tested against a
//! from-scratch oracle in the `store` crate's suite: after any sequence of
//! changes, the integral of an operator's output equals the operator
//! evaluated from scratch on the integral of its input.
//!
//! ## Feedback in outer time
//!
//! [`Query::feedback`](graph::Query::feedback) refers to a stream before it
//! is defined, delayed by one iteration (`z⁻¹`, DBSP §3), so a loop can go
//! round once per iteration. The original's hand-written recursion: each
//! iteration joins the input with the previous iteration's `added`.
//!
//! ```
//! use stepping_operators::prelude::*;
//! let on_left = Index::new("right", |r: &Pair<i64, i64>| r.right);
//! let on_right = Index::new("left", |r: &Pair<i64, i64>| r.left);
//! let (graph, (input, out)) = Graph::build(|q| {
//!     let (input, z) = q.input::<Pair<i64, i64>>("z")?;
//!     let (feedback, delayed) = q.feedback::<Pair<i64, i64>>("delayed")?;
//!     let joined = z.join(delayed, &on_left, &on_right);
//!     let added = joined.map(|p| Pair::new(p.left.left, p.right.right)).add(z);
//!     feedback.connect(added);
//!     Ok((input, q.output("added", added)?))
//! })?;
//! let mut store = store::Memory::new(&graph);
//! let edges = [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5)].map(|(a, b)| Pair::new(a, b));
//! let mut last = ZSet::new();
//! for _ in 0..3 {
//!     last = graph.insert(&mut store, &input, edges)?.get(&out)?.clone();
//! }
//! let mut pairs: Vec<(i64, i64)> = last.values().map(|p| (p.left, p.right)).collect();
//! pairs.sort();
//! assert_eq!(pairs, [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 2), (1, 3), (1, 5), (2, 3)]);
//! // The weights grow from step to step, as in the original: at step 3,
//! // `added = E + 4·E² + 6·E³` for the edges `E`.
//! assert_eq!((last.get(&Pair::new(0, 1)), last.get(&Pair::new(0, 2)), last.get(&Pair::new(0, 3))), (1, 4, 6));
//! # Ok::<(), GraphError>(())
//! ```
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
mod extreme;
mod first_n;
mod group;
mod join;
mod linear;
mod recursive;
mod retention;
mod scalar;
mod semi_join;
mod summary;
mod temporal;
mod window;

pub use aggregate::{Aggregate, Aggregates};
pub use distinct::Distinct;
pub use extreme::Extremes;
pub use first_n::FirstN;
pub use group::{GroupedOps, Grouping};
pub use join::Joins;
pub use linear::Linear;
pub use recursive::{DEFAULT_MAX_STEPS, Recursion, TransitiveClosure};
pub use retention::{Late, Retention};
pub use scalar::{ScalarOps, Scalars};
pub use semi_join::SemiJoins;
pub use summary::{Mean, Summaries};
pub use temporal::{Integrals, ScopedIndex};
pub use window::Windows;

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
        Aggregate, Aggregates, Distinct, Extremes, FirstN, GroupedOps, Grouping, Integrals, Joins,
        Late, Linear, Mean, Recursion, Retention, ScalarOps, Scalars, ScopedIndex, SemiJoins,
        Summaries, TransitiveClosure, Windows,
    };
    pub use graph::{
        Cache, Changes, Feedback, Graph, GraphError, Input, Output, Outputs, Query, StateStore,
        StoreError, Stream, StreamFn, Time, stream_fn,
    };
    pub use zset::{Data, Desc, EventTime, F64, Index, IndexOf, OrEmpty, Pair, ZSet, row, zset};
}

/// The part names of the group keys of `stream`'s scope.
pub(crate) fn group_parts<T, S>(stream: &graph::Stream<'_, T, S>) -> Vec<String> {
    stream.query().key_parts(stream.scope_id())
}
