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
//! typed SQL columns), [`Pair`] (join and group outputs), [`row!`] (declaring
//! row types in one line) and [`F64`] (a float that can live in a Z-set).
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
mod relational;
mod set;
pub mod weight;

pub use data::{Data, IntoRow};
pub use display::{render_table, render_value};
pub use event_time::EventTime;
pub use float::F64;
pub use index::{Index, IndexOf, IndexSpec};
pub use key::{ColumnType, Desc, IndexKey, KeyColumn, KeyPart, KeyScan, KeyValue};
pub use pair::{OrEmpty, Pair};
pub use set::ZSet;

/// The weight type of every Z-set: how many times a value is present.
///
/// Negative weights are deletions (in a change) or "more removed than
/// inserted" (in an integral); zero is never stored.
pub type Weight = i64;

/// Declares row types: each struct or enum inside gets everything a
/// Z-set row (and a stored one) needs, the nine derives `Clone, PartialEq,
/// Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize`, in one line
/// and without a `serde` dependency of your own. Other attributes (`///`
/// docs, more derives, `#[serde(..)]`) are kept.
///
/// Floats: a row needs a total order and one representation per value,
/// which `f64` lacks (NaN, and `-0.0 == 0.0` with other bytes), so a float
/// field is an [`F64`] (`F64::new(x)`, `.get()`; NaN sorts last, `-0.0` is
/// stored as `0.0`). A field of type `f64` or `f32` is a compile error
/// saying so.
///
/// ```
/// use stepping_zset::{row, F64, ZSet, zset};
/// row! {
///     /// A meter read.
///     pub struct Read { pub meter: i64, pub value: F64 }
///     pub enum Unit { Kwh, Litre }
/// }
/// let r = Read { meter: 1, value: F64::new(2.5) };
/// let z: ZSet<Read> = zset! { r.clone() => 1 };
/// assert!(z.contains(&r) && Unit::Kwh < Unit::Litre);
/// ```
///
/// ```compile_fail
/// use stepping_zset::row;
/// row! { struct Read { meter: i64, value: f64 } } // use F64
/// ```
#[macro_export]
macro_rules! row {
    ($($item:tt)*) => {
        $crate::__private::row! { [$crate] $($item)* }
    };
}

#[doc(hidden)]
pub mod __private {
    //! What [`row!`](crate::row) expands to refers to, so that a user's
    //! crate needs no dependency of its own on serde.
    pub use derive::row;
    pub use serde;
    pub use serde::{Deserialize, Serialize};
}

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
