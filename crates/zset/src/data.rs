//! The bound every value in a Z-set satisfies.

use std::fmt::Debug;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value that can live in a [`ZSet`](crate::ZSet) and in a store.
///
/// - `Eq + Hash` so equal rows consolidate; `Ord` so every rendering, every
///   `iter_by_index` tie and every oracle is deterministic.
/// - `Serialize + DeserializeOwned` so SQL stores can keep it as postcard
///   bytes. A row's stored identity is derived from those bytes, so the
///   serialization must be a function of the value: derive it, and keep
///   `HashMap`/`HashSet` fields out of rows (use `BTreeMap`/`BTreeSet`).
/// - `Send + Sync + 'static` so workers can share graphs and changes.
///
/// It is implemented for every type with those bounds; float fields use
/// [`F64`](crate::F64), since `f64` has no total order.
pub trait Data:
    Clone + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T> Data for T where
    T: Clone + Eq + Ord + Hash + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// A row given by value (moved) or by reference (cloned): what `insert`
/// and `remove` take, so that a caller holding `&[Row]` or `&Vec<Row>`
/// need not clone the rows first, and one holding owned rows pays nothing.
///
/// ```
/// use stepping_zset::{IntoRow, ZSet};
/// fn ones<T: std::hash::Hash + Eq>(rows: impl IntoIterator<Item = impl IntoRow<T>>) -> ZSet<T> {
///     rows.into_iter().map(|r| (r.into_row(), 1)).collect()
/// }
/// let names = vec!["ann".to_string(), "bob".to_string()];
/// assert_eq!(ones(&names), ones(names.clone())); // borrowed rows are cloned, owned ones moved
/// ```
pub trait IntoRow<T> {
    /// The row.
    fn into_row(self) -> T;
}

impl<T> IntoRow<T> for T {
    #[inline]
    fn into_row(self) -> T {
        self
    }
}

impl<T: Clone> IntoRow<T> for &T {
    #[inline]
    fn into_row(self) -> T {
        self.clone()
    }
}
