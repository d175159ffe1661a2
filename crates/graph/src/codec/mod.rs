//! Typed codecs: the [`Codec`] implementations the builder attaches to each
//! state, and the erased indexes they carry.

use std::any::{Any, type_name};

use zset::{Data, Index, IndexKey, IndexSpec, KeyScan, KeyValue, ZSet};

use crate::StoreError;

/// The identity of a row whose value (or key) serializes to `bytes`: the
/// 64-bit xxh3 hash, as SQL stores keep it in their `identity` column.
///
/// xxh3 is a fixed, specified function, so identities are stable across
/// processes, versions and machines.
pub fn identity_of(bytes: &[u8]) -> i64 {
    xxhash_rust::xxh3::xxh3_64(bytes) as i64
}

pub(crate) fn encode_value<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Unrepresentable {
        table: String::new(),
        detail: format!("cannot serialize a {}: {e}", type_name::<T>()),
    })
}

/// A delta for one inner step of a nested (recursive) state.
#[derive(Clone)]
pub struct Stepped<R> {
    /// The inner step.
    pub step: u32,
    /// The change at that step.
    pub delta: ZSet<R>,
}

impl<R: Data> std::fmt::Debug for Stepped<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stepped({}, {:?})", self.step, self.delta)
    }
}

/// A delta for a keyed state: for each row, `true` to set its key's row to
/// it, `false` to delete its key's row.
pub type KeyedDelta<R> = Vec<(R, bool)>;

/// An index of rows of type `R`, with its key type erased.
pub trait DynIndex<R>: Send + Sync {
    /// The index's identity.
    fn spec(&self) -> &IndexSpec;
    /// Appends `row`'s key column values.
    fn row_key_values(&self, row: &R, out: &mut Vec<KeyValue>);
    /// Adds `row`'s key to `scan` (what the stores' limits look at).
    fn row_key_scan(&self, row: &R, scan: &mut KeyScan);
    /// The column values of each key of `keys` (a `&[K]`), or `None` if
    /// `keys` has another type.
    fn key_values(&self, keys: &dyn Any) -> Option<Vec<Vec<KeyValue>>>;
    /// The column values of each prefix of `prefixes`, for prefix indexes.
    fn prefix_values(&self, prefixes: &dyn Any) -> Option<Vec<Vec<KeyValue>>>;
    /// How many leading key columns form the prefix (0 for plain indexes).
    fn prefix_columns(&self) -> usize;
    /// A new in-memory tree for this index.
    fn new_tree(&self) -> Box<dyn IndexTree<R>>;
    /// Computes `row`'s key and drops it: runs the user's key function
    /// where a panic in it can still fail the iteration cleanly.
    fn touch(&self, row: &R);
}

/// An in-memory index over row ids of a [`MemTable`](crate::MemTable), in key order.
pub trait IndexTree<R>: Send + Sync {
    /// Adds row `id` (whose value is `row`).
    fn insert(&mut self, row: &R, id: u32);
    /// Removes row `id` (whose value is `row`).
    fn remove(&mut self, row: &R, id: u32);
    /// Calls `f` with the ids of rows whose key is in `keys` (a `&[K]`);
    /// `false` if `keys` has another type.
    fn lookup(&self, keys: &dyn Any, f: &mut dyn FnMut(u32)) -> bool;
    /// Visits rows in key order: the whole tree as one group, or (prefix
    /// indexes) each given prefix as a group, announcing each group with
    /// [`ScanItem::Group`]. When `f` returns `false` for a row, the rest of
    /// that group is skipped. Returns `false` if `prefixes` has another type.
    fn scan(&self, prefixes: Option<&dyn Any>, f: &mut dyn FnMut(ScanItem) -> bool) -> bool;
}

/// What [`IndexTree::scan`] visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanItem {
    /// A new group (prefix) starts.
    Group,
    /// A row, and whether its key differs from the previous row's.
    Row {
        /// The row id.
        id: u32,
        /// Whether this row starts a new key.
        new_key: bool,
    },
}

fn values_of<K: IndexKey>(key: &K) -> Vec<KeyValue> {
    let mut out = Vec::new();
    key.values(&mut out);
    out
}

impl<R: Data, K: IndexKey> DynIndex<R> for Index<R, K> {
    fn spec(&self) -> &IndexSpec {
        Index::spec(self)
    }
    fn row_key_values(&self, row: &R, out: &mut Vec<KeyValue>) {
        self.key(row).values(out);
    }
    fn row_key_scan(&self, row: &R, scan: &mut KeyScan) {
        self.key(row).scan(scan);
    }
    fn key_values(&self, keys: &dyn Any) -> Option<Vec<Vec<KeyValue>>> {
        let keys = keys.downcast_ref::<Vec<K>>()?;
        Some(keys.iter().map(values_of).collect())
    }
    fn prefix_values(&self, _prefixes: &dyn Any) -> Option<Vec<Vec<KeyValue>>> {
        None
    }
    fn prefix_columns(&self) -> usize {
        0
    }
    fn touch(&self, row: &R) {
        drop(self.key(row));
    }
    fn new_tree(&self) -> Box<dyn IndexTree<R>> {
        Box::new(PlainTree {
            index: self.clone(),
            ids: hashbrown::HashMap::new(),
            order: std::collections::BTreeSet::new(),
            places: Places::default(),
        })
    }
}

mod index;
use index::{Places, PlainTree};
mod zsets;

pub use index::PrefixIndex;
pub use zsets::{KeyedCodec, ZSetCodec};

pub(crate) fn wrong_type<R>(what: &str) -> StoreError {
    StoreError::Unrepresentable {
        table: String::new(),
        detail: format!(
            "internal: {what} is not of the state's type {}",
            type_name::<R>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Places;

    /// Ids spread over a few keys, removed in a scrambled order (and some
    /// removed twice, or never added): every list always holds exactly the
    /// ids of its key still present.
    #[test]
    fn places_keep_every_list_exact_through_removals() {
        const KEYS: usize = 3;
        let mut places = Places::default();
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); KEYS];
        let mut model: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); KEYS];
        for id in 0..200u32 {
            let key = (id as usize * 7) % KEYS;
            places.insert(&mut lists[key], id);
            model[key].insert(id);
        }
        for step in 0..260u32 {
            let id = (step * 113) % 230;
            let key = (id as usize * 7) % KEYS;
            let empty = places.remove(&mut lists[key], id);
            model[key].remove(&id);
            assert_eq!(empty, model[key].is_empty());
            for (list, expected) in lists.iter().zip(&model) {
                let got: BTreeSet<u32> = list.iter().copied().collect();
                assert_eq!(got.len(), list.len(), "an id is listed twice");
                assert_eq!(&got, expected, "after removing {id}");
            }
        }
    }
}
