//! Typed in-memory state tables: a slab of rows, a hash table from value to
//! row, and one ordered tree per index.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use zset::{Data, Index, IndexKey, Weight, ZSet};

use crate::codec::{DynIndex, IndexTree, KeyedDelta, ScanItem, Stepped, wrong_type};
use crate::{MemTable, Read, StoreError, StoredRow};

/// The weights of one value: one weight (Z-set states) or one per inner
/// step (nested states).
enum Weights {
    One(Weight),
    Steps(Vec<(u32, Weight)>),
}

struct Entry<R> {
    value: R,
    weights: Weights,
}

/// A Z-set (or nested) state kept in memory.
pub(crate) struct MemZSet<R> {
    rows: Vec<Option<Entry<R>>>,
    free: Vec<u32>,
    /// `(row id, the value's hash)`: the hash is kept so that growing the
    /// table never reads (or hashes) the rows again.
    by_value: HashTable<(u32, u32)>,
    hasher: DefaultHashBuilder,
    trees: Vec<Box<dyn IndexTree<R>>>,
    nested: bool,
    max_step: Option<u32>,
    live: usize,
    /// At least the largest `|weight|` ever stored: while it plus a
    /// delta's largest stays within `i64`, no weight can overflow.
    max_abs: u64,
}

impl<R: Data> MemZSet<R> {
    pub(crate) fn new(nested: bool, indexes: Vec<Arc<dyn DynIndex<R>>>) -> Self {
        let trees = indexes.iter().map(|ix| ix.new_tree()).collect();
        MemZSet {
            rows: Vec::new(),
            free: Vec::new(),
            by_value: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            trees,
            nested,
            max_step: None,
            live: 0,
            max_abs: 0,
        }
    }

    /// `value`'s hash, folded to the 32 bits kept beside each row id.
    fn hash32(&self, value: &R) -> u32 {
        let h = self.hasher.hash_one(value);
        (h ^ (h >> 32)) as u32
    }

    fn find(&self, value: &R) -> Option<u32> {
        let h = self.hash32(value);
        let rows = &self.rows;
        self.by_value
            .find(spread(h), |&(id, stored)| {
                stored == h
                    && rows[id as usize]
                        .as_ref()
                        .is_some_and(|e| &e.value == value)
            })
            .map(|&(id, _)| id)
    }

    /// Adds `weight` at `step` to `value`, creating (with `value` itself,
    /// moved in) or deleting its row.
    fn add(&mut self, value: R, step: u32, weight: Weight) {
        if weight == 0 {
            return;
        }
        if self.nested {
            self.max_step = Some(self.max_step.map_or(step, |m| m.max(step)));
        }
        // Sums are checked before a delta is applied (`check`); saturating
        // keeps this path free of panics whatever happens.
        self.max_abs = self.max_abs.saturating_add(weight.unsigned_abs());
        let h = self.hash32(&value);
        let rows = &self.rows;
        let entry = self.by_value.entry(
            spread(h),
            |&(id, stored)| {
                stored == h && rows[id as usize].as_ref().is_some_and(|e| e.value == value)
            },
            |&(_, stored)| spread(stored),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(found) => {
                let id = found.get().0;
                let Some(entry) = self.rows[id as usize].as_mut() else {
                    return;
                };
                let now_empty = match &mut entry.weights {
                    Weights::One(w) => {
                        *w = w.saturating_add(weight);
                        *w == 0
                    }
                    Weights::Steps(steps) => {
                        match steps.iter_mut().find(|(s, _)| *s == step) {
                            Some((_, w)) => *w = w.saturating_add(weight),
                            None => steps.push((step, weight)),
                        }
                        steps.retain(|(_, w)| *w != 0);
                        steps.is_empty()
                    }
                };
                if now_empty {
                    found.remove();
                    self.free_row(id);
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let id = match self.free.pop() {
                    Some(id) => id,
                    None => self.rows.len() as u32,
                };
                vacant.insert((id, h));
                let weights = if self.nested {
                    Weights::Steps(vec![(step, weight)])
                } else {
                    Weights::One(weight)
                };
                for tree in &mut self.trees {
                    tree.insert(&value, id);
                }
                let entry = Some(Entry { value, weights });
                if id as usize == self.rows.len() {
                    self.rows.push(entry);
                } else {
                    self.rows[id as usize] = entry;
                }
                self.live += 1;
            }
        }
    }

    /// Removes row `id` from the slab and the indexes (its hash table entry
    /// is already gone).
    fn free_row(&mut self, id: u32) {
        let Some(entry) = self.rows[id as usize].take() else {
            return;
        };
        for tree in &mut self.trees {
            tree.remove(&entry.value, id);
        }
        self.free.push(id);
        self.live -= 1;
    }

    fn push(&self, id: u32, out: &mut Vec<StoredRow<R>>) {
        let Some(entry) = self.rows[id as usize].as_ref() else {
            return;
        };
        match &entry.weights {
            Weights::One(w) => out.push(StoredRow {
                value: entry.value.clone(),
                weight: *w,
                step: 0,
            }),
            Weights::Steps(steps) => {
                for (step, w) in steps {
                    out.push(StoredRow {
                        value: entry.value.clone(),
                        weight: *w,
                        step: *step,
                    });
                }
            }
        }
    }

    fn positive(&self, id: u32) -> bool {
        match self.rows[id as usize].as_ref().map(|e| &e.weights) {
            Some(Weights::One(w)) => *w > 0,
            Some(Weights::Steps(steps)) => steps.iter().map(|(_, w)| w).sum::<Weight>() > 0,
            None => false,
        }
    }
}

/// The table hash of a kept 32-bit hash: multiplying by an odd constant
/// carries all its bits into the top bits hashbrown tags entries with, and
/// keeps the low bits (the bucket) a one-to-one function of the hash's own.
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn bad_read<R>() -> StoreError {
    wrong_type::<R>("a read argument")
}

impl<R: Data> MemTable for MemZSet<R> {
    fn read(&self, read: &Read<'_>, sink: &mut dyn Any) -> Result<(), StoreError> {
        let out = sink
            .downcast_mut::<Vec<StoredRow<R>>>()
            .ok_or_else(bad_read::<R>)?;
        match *read {
            Read::All => {
                out.reserve(self.live);
                for id in 0..self.rows.len() as u32 {
                    self.push(id, out);
                }
            }
            Read::ByIndex { index, keys } => {
                let tree = self.trees.get(index).ok_or_else(bad_read::<R>)?;
                let mut ids = Vec::new();
                if !tree.lookup(keys, &mut |id| ids.push(id)) {
                    return Err(bad_read::<R>());
                }
                out.reserve(ids.len());
                for id in ids {
                    self.push(id, out);
                }
            }
            Read::ByValues { values } => {
                let values = values.downcast_ref::<Vec<R>>().ok_or_else(bad_read::<R>)?;
                out.reserve(values.len());
                for v in values {
                    if let Some(id) = self.find(v) {
                        self.push(id, out);
                    }
                }
            }
            Read::FirstByIndex {
                index,
                prefixes,
                limit,
            } => {
                let tree = self.trees.get(index).ok_or_else(bad_read::<R>)?;
                let mut ids = Vec::new();
                let mut taken = 0usize;
                let ok = tree.scan(prefixes, &mut |item| match item {
                    ScanItem::Group => {
                        taken = 0;
                        true
                    }
                    ScanItem::Row { id, new_key } => {
                        if taken >= limit && new_key {
                            // Past the limit and past the last key's ties.
                            return false;
                        }
                        if self.positive(id) {
                            ids.push(id);
                            taken += 1;
                        }
                        true
                    }
                });
                if !ok {
                    return Err(bad_read::<R>());
                }
                for id in ids {
                    self.push(id, out);
                }
            }
        }
        Ok(())
    }

    fn visit(
        &self,
        read: &Read<'_>,
        visit: &mut dyn FnMut(&dyn Any, Weight),
    ) -> Result<bool, StoreError> {
        // A nested row has a weight per step: such reads copy rows out.
        let (Read::ByIndex { index, keys }, false) = (*read, self.nested) else {
            return Ok(false);
        };
        let tree = self.trees.get(index).ok_or_else(bad_read::<R>)?;
        let rows = &self.rows;
        let found = tree.lookup(keys, &mut |id| {
            if let Some(Entry {
                value,
                weights: Weights::One(w),
            }) = rows[id as usize].as_ref()
            {
                visit(value, *w);
            }
        });
        if !found {
            return Err(bad_read::<R>());
        }
        Ok(true)
    }

    fn apply(&mut self, delta: crate::Value) -> Result<(), StoreError> {
        let delta = match delta.downcast::<ZSet<R>>() {
            Ok(z) => {
                self.by_value
                    .reserve(z.len(), |&(_, stored)| spread(stored));
                for (v, w) in *z {
                    self.add(v, 0, w);
                }
                return Ok(());
            }
            Err(other) => other,
        };
        if let Ok(s) = delta.downcast::<Stepped<R>>() {
            let Stepped { step, delta } = *s;
            for (v, w) in delta {
                self.add(v, step, w);
            }
            return Ok(());
        }
        Err(wrong_type::<R>("a delta"))
    }

    fn contents(&self) -> Vec<crate::Value> {
        let mut rows: Vec<StoredRow<R>> = Vec::with_capacity(self.live);
        for id in 0..self.rows.len() as u32 {
            self.push(id, &mut rows);
        }
        if !self.nested {
            let z: ZSet<R> = rows.into_iter().map(|r| (r.value, r.weight)).collect();
            return vec![Box::new(z)];
        }
        let mut by_step: std::collections::BTreeMap<u32, ZSet<R>> = Default::default();
        for r in rows {
            by_step.entry(r.step).or_default().update(r.value, r.weight);
        }
        by_step
            .into_iter()
            .map(|(step, delta)| Box::new(crate::Stepped { step, delta }) as crate::Value)
            .collect()
    }

    fn check(&self, delta: &dyn Any) -> Result<(), String> {
        let (z, step) = if let Some(z) = delta.downcast_ref::<ZSet<R>>() {
            (z, None)
        } else if let Some(s) = delta.downcast_ref::<Stepped<R>>() {
            (&s.delta, Some(s.step))
        } else {
            return Ok(());
        };
        let largest = z.iter().map(|(_, w)| w.unsigned_abs()).max().unwrap_or(0);
        if self.max_abs.saturating_add(largest) <= i64::MAX as u64 {
            return Ok(());
        }
        for (v, w) in z.iter() {
            let stored = match (
                self.find(v).and_then(|id| self.rows[id as usize].as_ref()),
                step,
            ) {
                (None, _) => 0,
                (
                    Some(Entry {
                        weights: Weights::One(s),
                        ..
                    }),
                    _,
                ) => *s,
                (
                    Some(Entry {
                        weights: Weights::Steps(steps),
                        ..
                    }),
                    step,
                ) => steps
                    .iter()
                    .find(|(s, _)| Some(*s) == step)
                    .map_or(0, |(_, w)| *w),
            };
            if stored.checked_add(w).is_none() {
                return Err(format!("{v:?}: stored weight {stored}, adding {w}"));
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.live
    }

    fn max_step(&self) -> Option<u32> {
        self.max_step
    }
}

/// A feed kept in memory: each time's change as it was written, by time.
/// A feed's rows are appended one time at a time and trimmed from the
/// oldest, never updated, so an iteration's change is moved in whole
/// rather than hashed into a table and an index row by row.
pub(crate) struct MemFeed<R> {
    by_time: BTreeMap<i64, ZSet<R>>,
    time: fn(&R) -> i64,
    live: usize,
}

impl<R: Data> MemFeed<R> {
    pub(crate) fn new(time: fn(&R) -> i64) -> Self {
        MemFeed {
            by_time: BTreeMap::new(),
            time,
            live: 0,
        }
    }

    fn times<'k>(&self, keys: &'k dyn Any) -> Result<&'k Vec<i64>, StoreError> {
        keys.downcast_ref::<Vec<i64>>().ok_or_else(bad_read::<R>)
    }

    /// Adds `delta`'s rows of `time` to that time's change.
    fn add(&mut self, time: i64, delta: ZSet<R>) {
        match self.by_time.entry(time) {
            std::collections::btree_map::Entry::Vacant(v) => {
                self.live += delta.len();
                v.insert(delta);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let before = o.get().len();
                for (v, w) in delta {
                    o.get_mut().update(v, w);
                }
                self.live = self.live + o.get().len() - before;
                if o.get().is_empty() {
                    o.remove();
                }
            }
        }
    }
}

impl<R: Data> MemTable for MemFeed<R> {
    fn read(&self, read: &Read<'_>, sink: &mut dyn Any) -> Result<(), StoreError> {
        let out = sink
            .downcast_mut::<Vec<StoredRow<R>>>()
            .ok_or_else(bad_read::<R>)?;
        let row = |(value, weight): (&R, Weight)| StoredRow {
            value: value.clone(),
            weight,
            step: 0,
        };
        match *read {
            Read::All => {
                out.reserve(self.live);
                out.extend(self.by_time.values().flat_map(ZSet::iter).map(row));
            }
            Read::ByIndex { keys, .. } => {
                for t in self.times(keys)? {
                    out.extend(
                        self.by_time
                            .get(t)
                            .into_iter()
                            .flat_map(ZSet::iter)
                            .map(row),
                    );
                }
            }
            Read::ByValues { values } => {
                let values = values.downcast_ref::<Vec<R>>().ok_or_else(bad_read::<R>)?;
                for v in values {
                    let w = self.by_time.get(&(self.time)(v)).map_or(0, |z| z.get(v));
                    if w != 0 {
                        out.push(row((v, w)));
                    }
                }
            }
            Read::FirstByIndex { .. } => return Err(bad_read::<R>()),
        }
        Ok(())
    }

    fn visit(
        &self,
        read: &Read<'_>,
        visit: &mut dyn FnMut(&dyn Any, Weight),
    ) -> Result<bool, StoreError> {
        let Read::ByIndex { keys, .. } = *read else {
            return Ok(false);
        };
        for t in self.times(keys)? {
            for (value, w) in self.by_time.get(t).into_iter().flat_map(ZSet::iter) {
                visit(value, w);
            }
        }
        Ok(true)
    }

    fn apply(&mut self, delta: crate::Value) -> Result<(), StoreError> {
        let delta = *delta
            .downcast::<ZSet<R>>()
            .map_err(|_| wrong_type::<R>("a delta"))?;
        // An iteration's write holds one time: moved in as it is.
        let time = self.time;
        let single = {
            let mut times = delta.iter().map(|(v, _)| time(v));
            times.next().filter(|&t| times.all(|other| other == t))
        };
        if let Some(t) = single {
            self.add(t, delta);
            return Ok(());
        }
        let mut by_time: BTreeMap<i64, ZSet<R>> = BTreeMap::new();
        for (v, w) in delta {
            by_time.entry((self.time)(&v)).or_default().update(v, w);
        }
        for (t, z) in by_time {
            self.add(t, z);
        }
        Ok(())
    }

    fn check(&self, delta: &dyn Any) -> Result<(), String> {
        let Some(z) = delta.downcast_ref::<ZSet<R>>() else {
            return Ok(());
        };
        // Rows come a time at a time: the time's change is looked up once.
        let mut change: Option<(i64, Option<&ZSet<R>>)> = None;
        for (v, w) in z.iter() {
            let t = (self.time)(v);
            let stored_at = match change {
                Some((at, c)) if at == t => c,
                _ => {
                    let c = self.by_time.get(&t);
                    change = Some((t, c));
                    c
                }
            };
            let stored = stored_at.map_or(0, |s| s.get(v));
            if stored.checked_add(w).is_none() {
                return Err(format!("{v:?}: stored weight {stored}, adding {w}"));
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.live
    }

    fn max_step(&self) -> Option<u32> {
        None
    }

    fn contents(&self) -> Vec<crate::Value> {
        let z: ZSet<R> = self
            .by_time
            .values()
            .flat_map(ZSet::iter)
            .map(|(v, w)| (v.clone(), w))
            .collect();
        vec![Box::new(z)]
    }
}

/// A keyed state kept in memory.
pub(crate) struct MemKeyed<R, K> {
    key: Index<R, K>,
    rows: HashMap<K, R>,
}

impl<R: Data, K: IndexKey> MemKeyed<R, K> {
    pub(crate) fn new(key: Index<R, K>) -> Self {
        MemKeyed {
            key,
            rows: HashMap::new(),
        }
    }
}

impl<R: Data, K: IndexKey + Hash> MemTable for MemKeyed<R, K> {
    fn read(&self, read: &Read<'_>, sink: &mut dyn Any) -> Result<(), StoreError> {
        let out = sink
            .downcast_mut::<Vec<StoredRow<R>>>()
            .ok_or_else(bad_read::<R>)?;
        let row = |r: &R| StoredRow {
            value: r.clone(),
            weight: 1,
            step: 0,
        };
        match *read {
            Read::All => out.extend(self.rows.values().map(row)),
            Read::ByIndex { keys, .. } => {
                let keys = keys.downcast_ref::<Vec<K>>().ok_or_else(bad_read::<R>)?;
                out.extend(keys.iter().filter_map(|k| self.rows.get(k)).map(row));
            }
            Read::ByValues { values } => {
                let values = values.downcast_ref::<Vec<R>>().ok_or_else(bad_read::<R>)?;
                out.extend(
                    values
                        .iter()
                        .filter_map(|v| self.rows.get(&self.key.key(v)))
                        .map(row),
                );
            }
            Read::FirstByIndex { .. } => return Err(bad_read::<R>()),
        }
        Ok(())
    }

    fn apply(&mut self, delta: crate::Value) -> Result<(), StoreError> {
        let delta = delta
            .downcast::<KeyedDelta<R>>()
            .map_err(|_| wrong_type::<R>("a delta"))?;
        for (row, set) in *delta {
            let key = self.key.key(&row);
            if set {
                self.rows.insert(key, row);
            } else {
                self.rows.remove(&key);
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn max_step(&self) -> Option<u32> {
        None
    }

    fn contents(&self) -> Vec<crate::Value> {
        let delta: KeyedDelta<R> = self.rows.values().map(|r| (r.clone(), true)).collect();
        vec![Box::new(delta)]
    }
}
