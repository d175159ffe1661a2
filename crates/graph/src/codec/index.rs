//! The erased index trees: plain and prefix indexes over a state's rows.

use std::any::Any;
use std::collections::BTreeMap;

use zset::{Data, Index, IndexKey, IndexSpec, KeyScan, KeyValue};

use super::{DynIndex, IndexTree, ScanItem, values_of};

/// Where each row id sits in the list of ids of its key, so that a row is
/// added by a push and removed by a swap with the last id of its list,
/// without a search or a hash however many rows share its key (a date index
/// holds thousands per key). Row ids are the dense slots of a state's rows.
#[derive(Debug, Default)]
pub(super) struct Places {
    place: Vec<u32>,
}

impl Places {
    /// Adds `id` to `ids`.
    pub(super) fn insert(&mut self, ids: &mut Vec<u32>, id: u32) {
        let slot = id as usize;
        if self.place.len() <= slot {
            self.place.resize(slot + 1, 0);
        }
        self.place[slot] = ids.len() as u32;
        ids.push(id);
    }

    /// Removes `id` from `ids` (if there); `true` when no id is left.
    pub(super) fn remove(&mut self, ids: &mut Vec<u32>, id: u32) -> bool {
        let at = match self.place.get(id as usize) {
            Some(&at) if ids.get(at as usize) == Some(&id) => Some(at as usize),
            _ => ids.iter().position(|x| *x == id),
        };
        if let Some(at) = at {
            ids.swap_remove(at);
            if let Some(&moved) = ids.get(at)
                && let Some(place) = self.place.get_mut(moved as usize)
            {
                *place = at as u32;
            }
        }
        ids.is_empty()
    }
}

/// Row ids by key: hashed for inserts and lookups, with the keys also in
/// order for scans.
pub(super) struct PlainTree<R, K> {
    pub(super) index: Index<R, K>,
    pub(super) ids: hashbrown::HashMap<K, Vec<u32>>,
    pub(super) order: std::collections::BTreeSet<K>,
    pub(super) places: Places,
}

/// Visits the ids of `groups` (in key order) as scan items; `false` if `f`
/// stopped.
fn scan_ids<'a>(
    groups: impl Iterator<Item = &'a Vec<u32>>,
    f: &mut dyn FnMut(ScanItem) -> bool,
) -> bool {
    for ids in groups {
        let mut first = true;
        let go_on = ids.iter().all(|&id| {
            let item = ScanItem::Row { id, new_key: first };
            first = false;
            f(item)
        });
        if !go_on {
            return false;
        }
    }
    true
}

impl<R: Data, K: IndexKey> IndexTree<R> for PlainTree<R, K> {
    fn insert(&mut self, row: &R, id: u32) {
        let ids = match self.ids.entry(self.index.key(row)) {
            hashbrown::hash_map::Entry::Occupied(e) => e.into_mut(),
            hashbrown::hash_map::Entry::Vacant(e) => {
                self.order.insert(e.key().clone());
                e.insert(Vec::new())
            }
        };
        self.places.insert(ids, id);
    }
    fn remove(&mut self, row: &R, id: u32) {
        let key = self.index.key(row);
        if let Some(ids) = self.ids.get_mut(&key)
            && self.places.remove(ids, id)
        {
            self.ids.remove(&key);
            self.order.remove(&key);
        }
    }
    fn lookup(&self, keys: &dyn Any, f: &mut dyn FnMut(u32)) -> bool {
        let Some(keys) = keys.downcast_ref::<Vec<K>>() else {
            return false;
        };
        for key in keys {
            for &id in self.ids.get(key).into_iter().flatten() {
                f(id);
            }
        }
        true
    }
    fn scan(&self, prefixes: Option<&dyn Any>, f: &mut dyn FnMut(ScanItem) -> bool) -> bool {
        if prefixes.is_some() {
            return false;
        }
        f(ScanItem::Group);
        scan_ids(self.order.iter().filter_map(|k| self.ids.get(k)), f);
        true
    }
}

/// An index whose key is `(prefix, rest)`, readable one prefix at a time in
/// key order: how `first_n` per group reads the first rows of each group.
///
/// Its columns are the prefix's, then the rest's.
pub struct PrefixIndex<R, P, K> {
    index: Index<R, (P, K)>,
    prefix_columns: usize,
}

impl<R, P: IndexKey, K: IndexKey> PrefixIndex<R, P, K> {
    /// Wraps `index`, whose key's first element is the prefix.
    pub fn new(index: Index<R, (P, K)>) -> Self {
        let mut cols = Vec::new();
        P::columns(&mut cols);
        PrefixIndex {
            index,
            prefix_columns: cols.len(),
        }
    }

    /// The underlying index.
    pub fn index(&self) -> &Index<R, (P, K)> {
        &self.index
    }
}

impl<R, P, K> Clone for PrefixIndex<R, P, K> {
    fn clone(&self) -> Self {
        PrefixIndex {
            index: self.index.clone(),
            prefix_columns: self.prefix_columns,
        }
    }
}

impl<R, P, K> std::fmt::Debug for PrefixIndex<R, P, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrefixIndex({:?})", self.index)
    }
}

impl<R: Data, P: IndexKey, K: IndexKey> DynIndex<R> for PrefixIndex<R, P, K> {
    fn spec(&self) -> &IndexSpec {
        self.index.spec()
    }
    fn row_key_values(&self, row: &R, out: &mut Vec<KeyValue>) {
        self.index.key(row).values(out);
    }
    fn row_key_scan(&self, row: &R, scan: &mut KeyScan) {
        self.index.key(row).scan(scan);
    }
    fn key_values(&self, keys: &dyn Any) -> Option<Vec<Vec<KeyValue>>> {
        let keys = keys.downcast_ref::<Vec<(P, K)>>()?;
        Some(keys.iter().map(values_of).collect())
    }
    fn prefix_values(&self, prefixes: &dyn Any) -> Option<Vec<Vec<KeyValue>>> {
        let prefixes = prefixes.downcast_ref::<Vec<P>>()?;
        Some(prefixes.iter().map(values_of).collect())
    }
    fn prefix_columns(&self) -> usize {
        self.prefix_columns
    }
    fn touch(&self, row: &R) {
        drop(self.index.key(row));
    }
    fn new_tree(&self) -> Box<dyn IndexTree<R>> {
        Box::new(PrefixTree {
            index: self.index.clone(),
            tree: BTreeMap::new(),
            places: Places::default(),
        })
    }
}

/// Per prefix, row ids ordered by the rest of the key.
struct PrefixTree<R, P, K> {
    index: Index<R, (P, K)>,
    tree: BTreeMap<P, BTreeMap<K, Vec<u32>>>,
    places: Places,
}

impl<R: Data, P: IndexKey, K: IndexKey> IndexTree<R> for PrefixTree<R, P, K> {
    fn insert(&mut self, row: &R, id: u32) {
        let (p, k) = self.index.key(row);
        let ids = self.tree.entry(p).or_default().entry(k).or_default();
        self.places.insert(ids, id);
    }
    fn remove(&mut self, row: &R, id: u32) {
        let (p, k) = self.index.key(row);
        if let Some(inner) = self.tree.get_mut(&p) {
            if let Some(ids) = inner.get_mut(&k)
                && self.places.remove(ids, id)
            {
                inner.remove(&k);
            }
            if inner.is_empty() {
                self.tree.remove(&p);
            }
        }
    }
    fn lookup(&self, keys: &dyn Any, f: &mut dyn FnMut(u32)) -> bool {
        let Some(keys) = keys.downcast_ref::<Vec<(P, K)>>() else {
            return false;
        };
        for (p, k) in keys {
            for &id in self
                .tree
                .get(p)
                .and_then(|inner| inner.get(k))
                .into_iter()
                .flatten()
            {
                f(id);
            }
        }
        true
    }
    fn scan(&self, prefixes: Option<&dyn Any>, f: &mut dyn FnMut(ScanItem) -> bool) -> bool {
        match prefixes {
            None => {
                f(ScanItem::Group);
                for inner in self.tree.values() {
                    if !scan_ids(inner.values(), f) {
                        break;
                    }
                }
            }
            Some(prefixes) => {
                let Some(prefixes) = prefixes.downcast_ref::<Vec<P>>() else {
                    return false;
                };
                for p in prefixes {
                    f(ScanItem::Group);
                    if let Some(inner) = self.tree.get(p) {
                        scan_ids(inner.values(), f);
                    }
                }
            }
        }
        true
    }
}
