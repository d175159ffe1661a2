//! Linear aggregates (§11.1): `reduce`, `count`, `group_reduce_flatten`.

use hashbrown::HashMap;
use std::hash::Hash;
use std::ops::{Add, Mul};

use graph::{FlatScope, KeyedDelta, Read, Slot, Stream};
use serde::{Deserialize, Serialize};
use zset::{Data, Index, IndexKey, Pair, ZSet, weight};

use crate::{GroupedOps, Grouping};

/// The stored state of an aggregate for one group: the aggregate and the
/// group's total weight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Aggregate<V> {
    /// `Σ pick_value(row) · weight` over the group's rows.
    pub value: V,
    /// `Σ weight` over the group's rows; the group exists while it is not 0.
    pub count: i64,
}

/// `reduce`, `count` and `group_reduce_flatten`.
pub trait Aggregates<'q, T: Data, S: FlatScope>: Sized {
    /// The linear aggregate `Σ pick_value(row) · weight`, maintained
    /// incrementally (§11.1): `differentiate(make_set(integrate(reduce(Δ))))`,
    /// fused into one operator with one keyed state per group (the integral
    /// and the differentiation's delay hold the same value, so one stored
    /// row per group serves both).
    ///
    /// At the root the result always holds exactly one value (`zero` for an
    /// empty input). Per group (after `group`), a group's value exists while
    /// the group's total weight is non-zero, and disappears when its rows
    /// cancel.
    ///
    /// ```
    /// use operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, prices) = q.input::<i64>("prices")?;
    ///     Ok((input, q.output("total", prices.reduce(0i64, |p| *p))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [3, 4])?.get(&out)?, &zset! { 7 => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [3])?.get(&out)?, &zset! { 7 => -1, 4 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn reduce<V>(
        self,
        zero: V,
        pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S>
    where
        V: Data + Add<Output = V> + Mul<i64, Output = V>;

    /// The number of rows (the sum of weights): `reduce(0, |_| 1)`.
    ///
    /// ```
    /// use operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<char>("a")?;
    ///     Ok((input, q.output("count", a.count())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, ['x', 'y'])?.get(&out)?, &zset! { 2 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn count(self) -> Stream<'q, ZSet<i64>, S>;

    /// `group(by)`, `reduce(zero, pick_value)` per group, `flatten`: one
    /// `Pair(aggregate, key)` per non-empty group.
    ///
    /// ```
    /// use operators::prelude::*;
    /// let by_len = Index::new("length", |s: &String| s.len() as i64);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, words) = q.input::<String>("words")?;
    ///     Ok((input, q.output("per_length", words.group_reduce_flatten(&by_len, 0i64, |_| 1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let words = ["foo", "bar", "hullo"].map(String::from);
    /// assert_eq!(graph.insert(&mut store, &input, words)?.get(&out)?, &zset! { Pair::new(2, 3) => 1, Pair::new(1, 5) => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, ["hullo".to_string()])?.get(&out)?, &zset! { Pair::new(1, 5) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_reduce_flatten<K, V>(
        self,
        by: &Index<T, K>,
        zero: V,
        pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S>
    where
        K: IndexKey + Hash,
        V: Data + Add<Output = V> + Mul<i64, Output = V>;
}

impl<'q, T: Data, S: FlatScope> Aggregates<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn reduce<V>(
        self,
        zero: V,
        pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S>
    where
        V: Data + Add<Output = V> + Mul<i64, Output = V>,
    {
        reduce_named(self, "reduce", zero, pick_value)
    }

    #[track_caller]
    fn count(self) -> Stream<'q, ZSet<i64>, S> {
        reduce_named(self, "count", 0i64, |_| 1)
    }

    #[track_caller]
    fn group_reduce_flatten<K, V>(
        self,
        by: &Index<T, K>,
        zero: V,
        pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S>
    where
        K: IndexKey + Hash,
        V: Data + Add<Output = V> + Mul<i64, Output = V>,
    {
        self.group(by)
            .per_group(|g| g.reduce(zero, pick_value))
            .flatten()
    }
}

/// `reduce` keeping its state at `stream/name`.
#[track_caller]
fn reduce_named<'q, T: Data, S: FlatScope, V>(
    stream: Stream<'q, ZSet<T>, S>,
    name: &'static str,
    zero: V,
    pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
) -> Stream<'q, ZSet<V>, S>
where
    V: Data + Add<Output = V> + Mul<i64, Output = V>,
{
    type Row<V, K> = Pair<Aggregate<V>, K>;
    let q = stream.query();
    let state_path = stream.path().child(name);
    let path = stream.path().suffixed(&format!(".{name}"));
    let parts = crate::group_parts(&stream);
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let key: Index<Row<V, S::Key>, S::Key> =
        Index::with_parts("group", &part_refs, |r: &Row<V, S::Key>| r.right.clone());
    let state = q.declare_keyed(state_path, key.clone());
    stream.apply_ctx(
        &[],
        name,
        vec![state],
        Some(path),
        move |ctx, ins: &[&Slot]| {
            let delta = ctx.zset::<S::Row<T>>(ins[0])?;
            // Per group: Σ pick·w and Σ w of this change.
            let mut changes: HashMap<S::Key, (V, i64)> = HashMap::new();
            for (row, w) in delta.iter() {
                let entry = changes
                    .entry(S::key(row))
                    .or_insert_with(|| (zero.clone(), 0));
                entry.0 = entry.0.clone() + pick_value(S::value(row)) * w;
                entry.1 = weight::add(entry.1, w);
            }
            if let (true, Some(root)) = (changes.is_empty(), S::root_key()) {
                // The root aggregate exists from the first iteration on.
                changes.insert(root, (zero.clone(), 0));
            }
            if changes.is_empty() {
                return Ok(ZSet::new());
            }
            let keys: Vec<S::Key> = changes.keys().cloned().collect();
            let stored = ctx.read::<Row<V, S::Key>>(
                state,
                Read::ByIndex {
                    index: 0,
                    keys: &keys,
                },
            )?;
            let mut old: HashMap<S::Key, Aggregate<V>> = stored
                .into_iter()
                .map(|r| (r.value.right, r.value.left))
                .collect();
            let mut out = ZSet::new();
            let mut writes: KeyedDelta<Row<V, S::Key>> = Vec::new();
            for (k, (dv, dc)) in changes {
                let before = old.remove(&k);
                let after = match &before {
                    Some(b) => Aggregate {
                        value: b.value.clone() + dv,
                        count: b.count + dc,
                    },
                    None => Aggregate {
                        value: zero.clone() + dv,
                        count: dc,
                    },
                };
                let present = |a: &Aggregate<V>| S::ROOT || a.count != 0;
                if before.as_ref() == Some(&after) {
                    continue;
                }
                if let Some(b) = before.as_ref().filter(|b| present(b)) {
                    out.update(S::wrap(b.value.clone(), k.clone()), -1);
                }
                if present(&after) {
                    out.update(S::wrap(after.value.clone(), k.clone()), 1);
                }
                // Keep a group's row while it has a count or a non-zero sum
                // (rows may cancel in count but not in value, or vice versa).
                let keep = S::ROOT || after.count != 0 || after.value != zero;
                writes.push((Pair::new(after, k), keep));
            }
            if !writes.is_empty() {
                ctx.write(state, Box::new(writes));
            }
            Ok(out)
        },
    )
}
