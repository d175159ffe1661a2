//! The Z-set itself and its group operations.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Add, AddAssign, Mul, Neg, Sub, SubAssign};

use hashbrown::HashMap;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Index, IndexKey, Weight, weight};

/// A map from values to non-zero weights (DBSP Def. 3.1 ff.).
///
/// Z-sets form an abelian group: `a + b` adds weights, `-a` negates them,
/// `a * n` scales them, and a value whose weight reaches zero is removed, so
/// [`len`](Self::len) counts exactly the values present. A *table* is a
/// Z-set with positive weights; a *change* is any Z-set.
///
/// Equality, ordering and hashing ignore insertion order, so a `ZSet` can
/// itself be a value (e.g. a per-group aggregate) and its serialization is
/// canonical (sorted).
///
/// ```
/// use stepping_zset::{zset, ZSet};
/// let a: ZSet<&str> = zset! { "x" => 2, "y" => 1 };
/// assert_eq!(a.get(&"x"), 2);
/// assert_eq!(a.get(&"z"), 0);
/// assert_eq!(&a * 3, zset! { "x" => 6, "y" => 3 });
/// assert!((&a + &-&a).is_empty());
/// ```
#[derive(Clone)]
pub struct ZSet<T> {
    map: HashMap<T, Weight>,
}

impl<T> ZSet<T> {
    /// The empty Z-set (the group's zero).
    pub fn new() -> Self {
        ZSet {
            map: HashMap::new(),
        }
    }

    /// The empty Z-set with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        ZSet {
            map: HashMap::with_capacity(capacity),
        }
    }

    /// How many values have a non-zero weight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no value has a non-zero weight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `(value, weight)` pairs in no particular order. See
    /// [`sorted`](Self::sorted) for a deterministic order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&T, Weight)> + '_ {
        self.map.iter().map(|(v, w)| (v, *w))
    }

    /// The values present, in no particular order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.map.keys()
    }

    /// The sum of all weights: the number of rows of a table, counting
    /// duplicates (what SQL's `COUNT(*)` would say).
    pub fn weight_sum(&self) -> Weight {
        weight::sum(self.map.values().copied())
    }
}

impl<T: Eq + Hash> ZSet<T> {
    /// A Z-set with one value.
    pub fn singleton(value: T, weight: Weight) -> Self {
        let mut z = ZSet::new();
        z.update(value, weight);
        z
    }

    /// Adds `weight` to `value`'s weight, removing it if the sum is zero.
    pub fn update(&mut self, value: T, weight: Weight) {
        if weight == 0 {
            return;
        }
        match self.map.entry(value) {
            hashbrown::hash_map::Entry::Occupied(mut e) => {
                let w = e.get_mut();
                *w = weight::add(*w, weight);
                if *w == 0 {
                    e.remove();
                }
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(weight);
            }
        }
    }

    /// Adds `weight` to the weight of the value equal to `value`, cloning
    /// it only if it is not yet present.
    pub fn update_ref(&mut self, value: &T, weight: Weight)
    where
        T: Clone,
    {
        if weight == 0 {
            return;
        }
        if let Some(w) = self.map.get_mut(value) {
            *w = weight::add(*w, weight);
            if *w == 0 {
                self.map.remove(value);
            }
        } else {
            self.map.insert(value.clone(), weight);
        }
    }

    /// The weight of `value` (zero when absent).
    pub fn get(&self, value: &T) -> Weight {
        self.map.get(value).copied().unwrap_or(0)
    }

    /// Whether `value` has a non-zero weight.
    pub fn contains(&self, value: &T) -> bool {
        self.map.contains_key(value)
    }

    /// Applies `f` to every value, summing the weights of values that map to
    /// the same result (a linear operator, DBSP §4).
    ///
    /// ```
    /// use stepping_zset::{zset, ZSet};
    /// let z: ZSet<i32> = zset! { 1 => 1, -1 => 2 };
    /// assert_eq!(z.map(|x| x.abs()), zset! { 1 => 3 });
    /// ```
    pub fn map<U: Eq + Hash>(&self, mut f: impl FnMut(&T) -> U) -> ZSet<U> {
        let mut out = ZSet::with_capacity(self.len());
        for (v, w) in self.iter() {
            out.update(f(v), w);
        }
        out
    }

    /// Applies `f` to every value and keeps each of its results with the
    /// value's weight (a flat map; linear).
    pub fn map_many<U: Eq + Hash, I: IntoIterator<Item = U>>(
        &self,
        mut f: impl FnMut(&T) -> I,
    ) -> ZSet<U> {
        let mut out = ZSet::with_capacity(self.len());
        for (v, w) in self.iter() {
            for u in f(v) {
                out.update(u, w);
            }
        }
        out
    }

    /// The values for which `keep` holds, with their weights (linear).
    pub fn filter(&self, mut keep: impl FnMut(&T) -> bool) -> ZSet<T>
    where
        T: Clone,
    {
        ZSet {
            map: self
                .map
                .iter()
                .filter(|(v, _)| keep(v))
                .map(|(v, w)| (v.clone(), *w))
                .collect(),
        }
    }

    /// Every weight multiplied by `factor` (scaling; `factor == 0` gives the
    /// empty Z-set).
    pub fn scale(&self, factor: Weight) -> ZSet<T>
    where
        T: Clone,
    {
        if factor == 0 {
            return ZSet::new();
        }
        ZSet {
            map: self
                .map
                .iter()
                .map(|(v, w)| (v.clone(), weight::mul(*w, factor)))
                .collect(),
        }
    }

    /// Adds every weight of `other` into `self`.
    pub fn add_assign_ref(&mut self, other: &ZSet<T>)
    where
        T: Clone,
    {
        self.map.reserve(other.len());
        for (v, w) in other.iter() {
            self.update_ref(v, w);
        }
    }
}

impl<T: Ord> ZSet<T> {
    /// `(value, weight)` pairs sorted by value.
    pub fn sorted(&self) -> Vec<(&T, Weight)> {
        let mut rows: Vec<(&T, Weight)> = self.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        rows
    }

    /// `(key, value, weight)` in key order (ties by value), for every value
    /// or only those whose key is in `match_keys`. Keys in and out are
    /// plain ([`IndexKey::Plain`]): a [`Desc`](crate::Desc) part orders the
    /// rows but is never seen.
    ///
    /// ```
    /// use stepping_zset::{zset, Index, ZSet};
    /// let by_first = Index::new("first", |s: &(i64, i64)| s.0);
    /// let z: ZSet<(i64, i64)> = zset! { (2, 0) => 1, (1, 5) => 1, (1, 3) => -1, (3, 3) => 1 };
    /// let rows = z.iter_by_index(&by_first, Some(&[1, 2]));
    /// let got: Vec<_> = rows.iter().map(|(k, v, w)| (*k, **v, *w)).collect();
    /// assert_eq!(got, [(1, (1, 3), -1), (1, (1, 5), 1), (2, (2, 0), 1)]);
    /// ```
    pub fn iter_by_index<K: IndexKey>(
        &self,
        index: &Index<T, K>,
        match_keys: Option<&[K::Plain]>,
    ) -> Vec<(K::Plain, &T, Weight)> {
        let wanted: Option<HashSet<K>> =
            match_keys.map(|keys| keys.iter().cloned().map(K::from_plain).collect());
        let mut rows: Vec<(K, &T, Weight)> = self
            .iter()
            .map(|(v, w)| (index.key(v), v, w))
            .filter(|(k, _, _)| wanted.as_ref().is_none_or(|set| set.contains(k)))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        rows.into_iter()
            .map(|(k, v, w)| (k.into_plain(), v, w))
            .collect()
    }
}

impl<T> Default for ZSet<T> {
    fn default() -> Self {
        ZSet::new()
    }
}

impl<T: Eq + Hash> PartialEq for ZSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<T: Eq + Hash> Eq for ZSet<T> {}

impl<T: Ord + Hash> PartialOrd for ZSet<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Z-sets compare as their sorted `(value, weight)` lists, so they can be
/// values of other Z-sets.
impl<T: Ord + Hash> Ord for ZSet<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sorted().cmp(&other.sorted())
    }
}

impl<T: Ord + Hash> Hash for ZSet<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let rows = self.sorted();
        rows.len().hash(state);
        for (v, w) in rows {
            v.hash(state);
            w.hash(state);
        }
    }
}

impl<T: Eq + Hash> FromIterator<(T, Weight)> for ZSet<T> {
    fn from_iter<I: IntoIterator<Item = (T, Weight)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut z = ZSet::with_capacity(iter.size_hint().0);
        z.extend(iter);
        z
    }
}

impl<T: Eq + Hash> Extend<(T, Weight)> for ZSet<T> {
    fn extend<I: IntoIterator<Item = (T, Weight)>>(&mut self, iter: I) {
        for (v, w) in iter {
            self.update(v, w);
        }
    }
}

impl<T> IntoIterator for ZSet<T> {
    type Item = (T, Weight);
    type IntoIter = hashbrown::hash_map::IntoIter<T, Weight>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}

impl<T: Eq + Hash + Clone> Add for &ZSet<T> {
    type Output = ZSet<T>;
    fn add(self, rhs: &ZSet<T>) -> ZSet<T> {
        let (big, small) = if self.len() >= rhs.len() {
            (self, rhs)
        } else {
            (rhs, self)
        };
        let mut out = big.clone();
        out.add_assign_ref(small);
        out
    }
}

impl<T: Eq + Hash> Add for ZSet<T> {
    type Output = ZSet<T>;
    fn add(self, rhs: ZSet<T>) -> ZSet<T> {
        let (mut big, small) = if self.len() >= rhs.len() {
            (self, rhs)
        } else {
            (rhs, self)
        };
        big += small;
        big
    }
}

impl<T: Eq + Hash> AddAssign for ZSet<T> {
    fn add_assign(&mut self, rhs: ZSet<T>) {
        self.map.reserve(rhs.len());
        for (v, w) in rhs {
            self.update(v, w);
        }
    }
}

impl<T: Eq + Hash + Clone> AddAssign<&ZSet<T>> for ZSet<T> {
    fn add_assign(&mut self, rhs: &ZSet<T>) {
        self.add_assign_ref(rhs);
    }
}

impl<T: Eq + Hash + Clone> Sub for &ZSet<T> {
    type Output = ZSet<T>;
    fn sub(self, rhs: &ZSet<T>) -> ZSet<T> {
        let mut out = self.clone();
        out -= rhs;
        out
    }
}

impl<T: Eq + Hash> Sub for ZSet<T> {
    type Output = ZSet<T>;
    fn sub(self, rhs: ZSet<T>) -> ZSet<T> {
        self + -rhs
    }
}

impl<T: Eq + Hash + Clone> SubAssign<&ZSet<T>> for ZSet<T> {
    fn sub_assign(&mut self, rhs: &ZSet<T>) {
        for (v, w) in rhs.iter() {
            self.update_ref(v, weight::neg(w));
        }
    }
}

impl<T: Eq + Hash + Clone> Neg for &ZSet<T> {
    type Output = ZSet<T>;
    fn neg(self) -> ZSet<T> {
        self.scale(-1)
    }
}

impl<T: Eq + Hash> Neg for ZSet<T> {
    type Output = ZSet<T>;
    fn neg(mut self) -> ZSet<T> {
        for w in self.map.values_mut() {
            *w = weight::neg(*w);
        }
        self
    }
}

impl<T: Eq + Hash + Clone> Mul<Weight> for &ZSet<T> {
    type Output = ZSet<T>;
    fn mul(self, rhs: Weight) -> ZSet<T> {
        self.scale(rhs)
    }
}

/// Scaling by a weight, so a `ZSet` can be a `reduce` aggregate. The
/// weights are scaled in place: an aggregate scales every row it adds, so
/// copying the set here would cost its whole size per row.
impl<T: Eq + Hash + Clone> Mul<Weight> for ZSet<T> {
    type Output = ZSet<T>;
    fn mul(mut self, rhs: Weight) -> ZSet<T> {
        if rhs == 0 {
            return ZSet::new();
        }
        if rhs != 1 {
            for w in self.map.values_mut() {
                *w = weight::mul(*w, rhs);
            }
        }
        self
    }
}

impl<T: fmt::Debug + Ord> fmt::Debug for ZSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.sorted()).finish()
    }
}

impl<T: Serialize + Ord> Serialize for ZSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows = self.sorted();
        let mut seq = serializer.serialize_seq(Some(rows.len()))?;
        for row in rows {
            seq.serialize_element(&row)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Eq + Hash> Deserialize<'de> for ZSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowsVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Eq + Hash> Visitor<'de> for RowsVisitor<T> {
            type Value = ZSet<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of (value, weight) pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ZSet<T>, A::Error> {
                let mut z = ZSet::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some((v, w)) = seq.next_element::<(T, Weight)>()? {
                    // Bytes from a store may repeat a value: its weights sum,
                    // and a sum that overflows is an error, not a panic.
                    if z.get(&v).checked_add(w).is_none() {
                        return Err(serde::de::Error::custom(
                            "the weights of a value overflow i64",
                        ));
                    }
                    z.update(v, w);
                }
                Ok(z)
            }
        }
        deserializer.deserialize_seq(RowsVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
