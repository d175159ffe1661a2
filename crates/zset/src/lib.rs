//! Z-sets: maps from values to non-zero `i64` weights (DBSP §3.1), and the
//! [`Index`]es that read them in key order.
//!
//! A table is a Z-set whose weights are positive; a *change* to a table is a
//! Z-set whose negative weights are deletions. Z-sets form an abelian group
//! under `+`, so "apply a change" is just addition, and the incremental
//! operators of the `operators` crate are built from that algebra.
//!
//! This is the bottom layer of stepping-rs: no I/O, no graph, no async.
//! Start with [`ZSet`], then [`Index`] and [`IndexKey`] (how a key becomes
//! typed SQL columns), [`Pair`] (join and group outputs) and [`F64`] (a float
//! that can live in a Z-set).
//!
//! ```
//! use stepping_zset::{zset, ZSet};
//! let table: ZSet<&str> = zset! { "apple" => 2, "pear" => 1 };
//! let change: ZSet<&str> = zset! { "pear" => -1, "plum" => 1 };
//! let after = &table + &change;
//! assert_eq!(after, zset! { "apple" => 2, "plum" => 1 });
//! assert!((&after - &after).is_empty()); // zero weights are never stored
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod data;
mod display;
mod event_time;
mod float;
mod index;
mod key;
mod pair;
mod set;
pub mod weight;

pub use data::Data;
pub use display::{render_table, render_value};
pub use event_time::EventTime;
pub use float::F64;
pub use index::{Index, IndexSpec};
pub use key::{ColumnType, Desc, IndexKey, KeyColumn, KeyPart, KeyValue};
pub use pair::{OrEmpty, Pair};
pub use set::ZSet;

/// The weight type of every Z-set: how many times a value is present.
///
/// Negative weights are deletions (in a change) or "more removed than
/// inserted" (in an integral); zero is never stored.
pub type Weight = i64;

/// Builds a [`ZSet`] from `value => weight` pairs; weights of equal values
/// are summed and zeros dropped.
///
/// ```
/// use stepping_zset::zset;
/// let z = zset! { "a" => 1, "b" => -2, "a" => -1 };
/// assert_eq!(z.len(), 1);
/// assert_eq!(z.get(&"b"), -2);
/// ```
#[macro_export]
macro_rules! zset {
    () => { $crate::ZSet::new() };
    ($($value:expr => $weight:expr),+ $(,)?) => {
        <$crate::ZSet<_> as ::core::iter::FromIterator<_>>::from_iter([$(($value, $weight)),+])
    };
}
