//! Typed codecs: the [`Codec`] implementations the builder attaches to each
//! state, and the erased indexes they carry.

use std::any::{Any, type_name};
use std::collections::BTreeMap;
use std::sync::Arc;

use zset::{Data, Index, IndexKey, IndexSpec, KeyValue, Weight, ZSet};

use crate::memtable::{MemKeyed, MemZSet};
use crate::{
    Cell, Codec, EncodedRow, MemTable, RowColumns, StateKind, StoreError, StoredRow, Value,
    index_needs_check, key_problem,
};

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

/// An in-memory index over row ids of a [`MemTable`], in key order.
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

/// Where each row id sits in the list of ids of its key, so that a row is
/// added by a push and removed by a swap with the last id of its list,
/// without a search or a hash however many rows share its key (a date index
/// holds thousands per key). Row ids are the dense slots of a state's rows.
#[derive(Debug, Default)]
struct Places {
    place: Vec<u32>,
}

impl Places {
    /// Adds `id` to `ids`.
    fn insert(&mut self, ids: &mut Vec<u32>, id: u32) {
        let slot = id as usize;
        if self.place.len() <= slot {
            self.place.resize(slot + 1, 0);
        }
        self.place[slot] = ids.len() as u32;
        ids.push(id);
    }

    /// Removes `id` from `ids` (if there); `true` when no id is left.
    fn remove(&mut self, ids: &mut Vec<u32>, id: u32) -> bool {
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
struct PlainTree<R, K> {
    index: Index<R, K>,
    ids: hashbrown::HashMap<K, Vec<u32>>,
    order: std::collections::BTreeSet<K>,
    places: Places,
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

/// The codec of a Z-set or nested state of rows `R`.
pub struct ZSetCodec<R> {
    kind: StateKind,
    indexes: Vec<Arc<dyn DynIndex<R>>>,
    specs: Vec<IndexSpec>,
    /// The indexes whose keys [`Codec::check_delta`] checks.
    checked: Vec<usize>,
    /// A cache's value columns ([`ZSetCodec::with_columns`]).
    columns: Option<Arc<RowColumns>>,
}

impl<R> std::fmt::Debug for ZSetCodec<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZSetCodec({:?}, {:?})", self.kind, self.specs)
    }
}

impl<R: Data> ZSetCodec<R> {
    /// A Z-set state (or, with `nested`, a nested state) with `indexes`.
    pub fn new(nested: bool, indexes: Vec<Arc<dyn DynIndex<R>>>) -> Self {
        let specs: Vec<IndexSpec> = indexes.iter().map(|i| i.spec().clone()).collect();
        let checked = (0..specs.len())
            .filter(|&i| index_needs_check(&specs[i]))
            .collect();
        let kind = if nested {
            StateKind::Nested
        } else {
            StateKind::ZSet
        };
        ZSetCodec {
            kind,
            indexes,
            specs,
            checked,
            columns: None,
        }
    }

    /// This codec with its rows' value columns ([`RowColumns::of`]
    /// `R`): SQL stores keep each row's fields as typed columns beside its
    /// bytes, readable from plain SQL. What a cache's codec has.
    pub fn with_columns(mut self) -> Self {
        self.columns = Some(Arc::new(RowColumns::of::<R>()));
        self
    }

    fn encode_rows(
        &self,
        delta: &ZSet<R>,
        step: u32,
        out: &mut Vec<EncodedRow>,
    ) -> Result<(), StoreError> {
        out.reserve(delta.len());
        for (value, weight) in delta.iter() {
            let data = encode_value(value)?;
            let mut keys = Vec::new();
            for ix in &self.indexes {
                ix.row_key_values(value, &mut keys);
            }
            let mut columns = Vec::new();
            if let Some(c) = &self.columns {
                c.cells(value, &mut columns)
                    .map_err(|detail| StoreError::Unrepresentable {
                        table: String::new(),
                        detail,
                    })?;
            }
            out.push(EncodedRow {
                identity: identity_of(&data),
                data,
                keys,
                weight,
                step,
                columns,
            });
        }
        Ok(())
    }
}

impl<R: Data> Codec for ZSetCodec<R> {
    fn kind(&self) -> StateKind {
        self.kind
    }
    fn value_type(&self) -> &'static str {
        type_name::<R>()
    }
    fn indexes(&self) -> &[IndexSpec] {
        &self.specs
    }
    fn new_table(&self) -> Box<dyn MemTable> {
        Box::new(MemZSet::<R>::new(
            self.kind == StateKind::Nested,
            self.indexes.clone(),
        ))
    }
    fn encode_delta(&self, delta: &dyn Any, out: &mut Vec<EncodedRow>) -> Result<(), StoreError> {
        if let Some(z) = delta.downcast_ref::<ZSet<R>>() {
            return self.encode_rows(z, 0, out);
        }
        if let Some(s) = delta.downcast_ref::<Stepped<R>>() {
            return self.encode_rows(&s.delta, s.step, out);
        }
        Err(wrong_type::<R>("a delta"))
    }
    fn check_delta(&self, delta: &dyn Any) -> Result<(), String> {
        if self.checked.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::new();
        for (value, _) in rows_of::<R>(delta).into_iter().flat_map(ZSet::iter) {
            for &i in &self.checked {
                keys.clear();
                self.indexes[i].row_key_values(value, &mut keys);
                if let Some(problem) = key_problem(&self.specs[i], &keys) {
                    return Err(problem);
                }
            }
        }
        Ok(())
    }
    fn compute_keys(&self, delta: &dyn Any) {
        for (value, _) in rows_of::<R>(delta).into_iter().flat_map(ZSet::iter) {
            for ix in &self.indexes {
                ix.touch(value);
            }
        }
    }
    fn key_values(&self, index: usize, keys: &dyn Any) -> Vec<Vec<KeyValue>> {
        self.indexes
            .get(index)
            .and_then(|ix| ix.key_values(keys))
            .unwrap_or_default()
    }
    fn prefix_values(&self, index: usize, prefixes: &dyn Any) -> Vec<Vec<KeyValue>> {
        self.indexes
            .get(index)
            .and_then(|ix| ix.prefix_values(prefixes))
            .unwrap_or_default()
    }
    fn prefix_columns(&self, index: usize) -> usize {
        self.indexes.get(index).map_or(0, |ix| ix.prefix_columns())
    }
    fn locate(&self, values: &dyn Any) -> Vec<(i64, Vec<KeyValue>)> {
        let Some(values) = values.downcast_ref::<Vec<R>>() else {
            return Vec::new();
        };
        values
            .iter()
            .filter_map(|v| {
                let identity = identity_of(&encode_value(v).ok()?);
                let mut keys = Vec::new();
                for ix in &self.indexes {
                    ix.row_key_values(v, &mut keys);
                }
                Some((identity, keys))
            })
            .collect()
    }
    fn locate_data(&self, data: &[u8]) -> Result<(i64, Vec<KeyValue>), String> {
        let value: R = decode_value(data)?;
        let identity = identity_of(&encode_value(&value).map_err(|e| e.to_string())?);
        let mut keys = Vec::new();
        for ix in &self.indexes {
            ix.row_key_values(&value, &mut keys);
        }
        Ok((identity, keys))
    }
    fn decode(
        &self,
        data: &[u8],
        weight: Weight,
        step: u32,
        sink: &mut dyn Any,
    ) -> Result<(), String> {
        decode_into::<R>(data, weight, step, sink)
    }
    fn show(&self, data: &[u8]) -> String {
        show::<R>(data)
    }
    fn merged(&self, other: &dyn Codec) -> Option<Arc<dyn Codec>> {
        let other = other.as_any().downcast_ref::<ZSetCodec<R>>()?;
        if other.kind != self.kind {
            return None;
        }
        let mut indexes = self.indexes.clone();
        for ix in &other.indexes {
            if !indexes.iter().any(|mine| mine.spec() == ix.spec()) {
                indexes.push(Arc::clone(ix));
            }
        }
        let mut merged = ZSetCodec::new(self.kind == StateKind::Nested, indexes);
        merged.columns = self.columns.clone().or_else(|| other.columns.clone());
        Some(Arc::new(merged))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn delta_rows(&self, delta: &dyn Any) -> usize {
        rows_of::<R>(delta).map_or(0, ZSet::len)
    }
    fn any_rows_sink(&self) -> Box<dyn Any + Send + Sync> {
        Box::new(Vec::<StoredRow<R>>::new())
    }
    fn sink_len(&self, sink: &dyn Any) -> usize {
        sink.downcast_ref::<Vec<StoredRow<R>>>().map_or(0, Vec::len)
    }
    fn columns(&self) -> Option<&RowColumns> {
        self.columns.as_deref()
    }
    fn value_cells(&self, data: &[u8], out: &mut Vec<Cell>) -> Result<(), String> {
        match &self.columns {
            Some(c) => c.cells(&decode_value::<R>(data)?, out),
            None => Ok(()),
        }
    }
    fn rows_sink(&self) -> Option<Box<dyn Any + Send + Sync>> {
        (self.kind == StateKind::ZSet)
            .then(|| Box::new(Vec::<StoredRow<R>>::new()) as Box<dyn Any + Send + Sync>)
    }
    fn sink_to_zset(&self, sink: Box<dyn Any + Send + Sync>) -> Option<Value> {
        let rows = sink.downcast::<Vec<StoredRow<R>>>().ok()?;
        let mut z = ZSet::with_capacity(rows.len());
        for r in *rows {
            z.update(r.value, r.weight);
        }
        Some(Box::new(z))
    }
}

/// The rows of a Z-set or nested state's delta (`None`: another type).
fn rows_of<R: Data>(delta: &dyn Any) -> Option<&ZSet<R>> {
    delta
        .downcast_ref::<ZSet<R>>()
        .or_else(|| delta.downcast_ref::<Stepped<R>>().map(|s| &s.delta))
}

/// The codec of a keyed state: at most one row `R` per key `K`.
pub struct KeyedCodec<R, K> {
    key: Index<R, K>,
    specs: Vec<IndexSpec>,
}

impl<R, K> std::fmt::Debug for KeyedCodec<R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyedCodec({:?})", self.specs)
    }
}

impl<R: Data, K: IndexKey> KeyedCodec<R, K> {
    /// A keyed state whose rows are identified by `key`.
    pub fn new(key: Index<R, K>) -> Self {
        let specs = vec![key.spec().clone()];
        KeyedCodec { key, specs }
    }
}

impl<R: Data, K: IndexKey> Codec for KeyedCodec<R, K> {
    fn kind(&self) -> StateKind {
        StateKind::Keyed
    }
    fn value_type(&self) -> &'static str {
        type_name::<R>()
    }
    fn indexes(&self) -> &[IndexSpec] {
        &self.specs
    }
    fn new_table(&self) -> Box<dyn MemTable> {
        Box::new(MemKeyed::new(self.key.clone()))
    }
    fn delta_rows(&self, delta: &dyn Any) -> usize {
        delta.downcast_ref::<KeyedDelta<R>>().map_or(0, Vec::len)
    }
    fn any_rows_sink(&self) -> Box<dyn Any + Send + Sync> {
        Box::new(Vec::<StoredRow<R>>::new())
    }
    fn sink_len(&self, sink: &dyn Any) -> usize {
        sink.downcast_ref::<Vec<StoredRow<R>>>().map_or(0, Vec::len)
    }
    fn encode_delta(&self, delta: &dyn Any, out: &mut Vec<EncodedRow>) -> Result<(), StoreError> {
        let delta = delta
            .downcast_ref::<KeyedDelta<R>>()
            .ok_or_else(|| wrong_type::<R>("a delta"))?;
        for (row, set) in delta {
            let key = self.key.key(row);
            let identity = identity_of(&encode_value(&key)?);
            let data = if *set { encode_value(row)? } else { Vec::new() };
            let keys = values_of(&key);
            out.push(EncodedRow {
                identity,
                data,
                keys,
                weight: i64::from(*set),
                step: 0,
                columns: Vec::new(),
            });
        }
        Ok(())
    }
    fn check_delta(&self, delta: &dyn Any) -> Result<(), String> {
        if !index_needs_check(&self.specs[0]) {
            return Ok(());
        }
        for (row, _) in delta.downcast_ref::<KeyedDelta<R>>().into_iter().flatten() {
            if let Some(problem) = key_problem(&self.specs[0], &values_of(&self.key.key(row))) {
                return Err(problem);
            }
        }
        Ok(())
    }
    fn compute_keys(&self, delta: &dyn Any) {
        for (row, _) in delta.downcast_ref::<KeyedDelta<R>>().into_iter().flatten() {
            drop(self.key.key(row));
        }
    }
    fn key_values(&self, _index: usize, keys: &dyn Any) -> Vec<Vec<KeyValue>> {
        keys.downcast_ref::<Vec<K>>()
            .map(|k| k.iter().map(values_of).collect())
            .unwrap_or_default()
    }
    fn prefix_values(&self, _index: usize, _prefixes: &dyn Any) -> Vec<Vec<KeyValue>> {
        Vec::new()
    }
    fn prefix_columns(&self, _index: usize) -> usize {
        0
    }
    fn locate(&self, values: &dyn Any) -> Vec<(i64, Vec<KeyValue>)> {
        let Some(values) = values.downcast_ref::<Vec<R>>() else {
            return Vec::new();
        };
        values
            .iter()
            .filter_map(|v| {
                let key = self.key.key(v);
                Some((identity_of(&encode_value(&key).ok()?), values_of(&key)))
            })
            .collect()
    }
    fn locate_data(&self, data: &[u8]) -> Result<(i64, Vec<KeyValue>), String> {
        let key = self.key.key(&decode_value::<R>(data)?);
        let identity = identity_of(&encode_value(&key).map_err(|e| e.to_string())?);
        Ok((identity, values_of(&key)))
    }
    fn decode(
        &self,
        data: &[u8],
        weight: Weight,
        step: u32,
        sink: &mut dyn Any,
    ) -> Result<(), String> {
        decode_into::<R>(data, weight, step, sink)
    }
    fn show(&self, data: &[u8]) -> String {
        show::<R>(data)
    }
    fn merged(&self, _other: &dyn Codec) -> Option<Arc<dyn Codec>> {
        None
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn show<R: Data>(data: &[u8]) -> String {
    match postcard::from_bytes::<R>(data) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("<not a row: {e}>"),
    }
}

fn decode_into<R: Data>(
    data: &[u8],
    weight: Weight,
    step: u32,
    sink: &mut dyn Any,
) -> Result<(), String> {
    let sink = sink.downcast_mut::<Vec<StoredRow<R>>>().ok_or_else(|| {
        format!(
            "internal: sink is not a Vec<StoredRow<{}>>",
            type_name::<R>()
        )
    })?;
    let value: R = decode_value(data)?;
    sink.push(StoredRow {
        value,
        weight,
        step,
    });
    Ok(())
}

/// A row's value from its stored bytes, or why they are not one.
fn decode_value<R: Data>(data: &[u8]) -> Result<R, String> {
    postcard::from_bytes(data).map_err(|e| {
        format!(
            "cannot decode a {} from {} bytes: {e}",
            type_name::<R>(),
            data.len()
        )
    })
}

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
