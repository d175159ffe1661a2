//! The codecs of Z-set, nested and keyed states.

use std::any::{Any, type_name};
use std::sync::Arc;

use zset::{Data, Index, IndexKey, IndexSpec, KeyScan, KeyValue, Weight, ZSet};

use super::{DynIndex, KeyedDelta, Stepped, encode_value, identity_of, values_of, wrong_type};
use crate::memtable::{MemFeed, MemKeyed, MemZSet};
use crate::{
    Cell, Codec, EncodedRow, MemTable, RowColumns, StateKind, StoreError, StoredRow, Value,
    index_needs_check, key_fits, key_problem,
};

/// The codec of a Z-set or nested state of rows `R`.
pub struct ZSetCodec<R> {
    kind: StateKind,
    indexes: Vec<Arc<dyn DynIndex<R>>>,
    specs: Vec<IndexSpec>,
    /// The indexes whose keys [`Codec::check_delta`] checks.
    checked: Vec<usize>,
    /// A cache's value columns ([`ZSetCodec::with_columns`]).
    columns: Option<Arc<RowColumns>>,
    /// A feed's row time ([`ZSetCodec::feed`]): its memory table keeps
    /// each time's change whole.
    feed_time: Option<fn(&R) -> i64>,
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
            feed_time: None,
        }
    }

    /// A feed's state: a Z-set whose only index, `by_time`, is the time
    /// `time` gives each row; in memory, each time's change is kept whole.
    pub fn feed(by_time: Arc<dyn DynIndex<R>>, time: fn(&R) -> i64) -> Self {
        ZSetCodec {
            feed_time: Some(time),
            ..ZSetCodec::new(false, vec![by_time])
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
        if let Some(time) = self.feed_time {
            return Box::new(MemFeed::<R>::new(time));
        }
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
        for (value, _) in rows_of::<R>(delta).into_iter().flat_map(ZSet::iter) {
            for &i in &self.checked {
                let mut scan = KeyScan::default();
                self.indexes[i].row_key_scan(value, &mut scan);
                if !key_fits(&scan) {
                    let mut keys = Vec::new();
                    self.indexes[i].row_key_values(value, &mut keys);
                    if let Some(problem) = key_problem(&self.specs[i], &keys) {
                        return Err(problem);
                    }
                }
            }
        }
        Ok(())
    }
    fn compute_keys(&self, delta: &dyn Any) {
        // `check_delta` ran the checked indexes' key functions already.
        if self.checked.len() == self.indexes.len() {
            return;
        }
        for (value, _) in rows_of::<R>(delta).into_iter().flat_map(ZSet::iter) {
            for (i, ix) in self.indexes.iter().enumerate() {
                if !self.checked.contains(&i) {
                    ix.touch(value);
                }
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
    /// Whether [`Codec::check_delta`] checks the key (it has parts that
    /// some store cannot hold every value of).
    checked: bool,
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
        let checked = index_needs_check(&specs[0]);
        KeyedCodec {
            key,
            specs,
            checked,
        }
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
        if !self.checked {
            return Ok(());
        }
        for (row, _) in delta.downcast_ref::<KeyedDelta<R>>().into_iter().flatten() {
            let key = self.key.key(row);
            let mut scan = KeyScan::default();
            key.scan(&mut scan);
            if !key_fits(&scan)
                && let Some(problem) = key_problem(&self.specs[0], &values_of(&key))
            {
                return Err(problem);
            }
        }
        Ok(())
    }
    fn compute_keys(&self, delta: &dyn Any) {
        // `check_delta` ran the key function already.
        if self.checked {
            return;
        }
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
