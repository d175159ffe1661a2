//! Linear aggregates (§11.1): `reduce`, `count`, `group_reduce_flatten`.

use hashbrown::HashMap;
use std::hash::Hash;
use std::ops::{Add, Mul};

use graph::{FlatScope, KeyedDelta, Read, Slot, Stream};
use serde::{Deserialize, Serialize};
use zset::{Data, Index, IndexKey, Pair, ZSet, weight};

use crate::Grouping;

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
    /// use stepping_operators::prelude::*;
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
    /// use stepping_operators::prelude::*;
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
    /// It runs as a single operator (rows are not copied into a grouped
    /// stream first) but keeps the same state, under the same path, as the
    /// three operators spelled out, so a store written by either form can
    /// be carried on by the other.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
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
        // One operator, reading this stream's rows directly, instead of
        // `group → reduce → flatten`: grouping would copy every row into a
        // `Pair(row, key)` only for the reduce to take its key and value.
        // The grouped stream is still built (and then left unread, so it is
        // dropped when the graph is finalized) so that the state's path, key
        // columns and row type, and the output's path, are exactly those of
        // the three-operator form: the same store serves either.
        let grouped = self.group(by);
        let parts = crate::group_parts(&grouped);
        let reduce_path = grouped.path().suffixed(".reduce");
        let by = by.clone();
        reduce_by(
            self,
            Reducer {
                name: "reduce",
                state_path: grouped.path().child("reduce"),
                path: reduce_path.suffixed(".flatten"),
                parts,
                root: None,
                key_of: move |row: &S::Row<T>| (S::key(row), by.key(S::value(row))),
                wrap: |v: V, (outer, k): (S::Key, K)| S::wrap(Pair::new(v, k), outer),
            },
            zero,
            pick_value,
        )
    }
}

/// Where [`reduce_by`] finds each row's group and puts each group's value.
struct Reducer<K, KF, WF> {
    name: &'static str,
    state_path: graph::Path,
    path: graph::Path,
    /// The key columns of the group key.
    parts: Vec<String>,
    /// The single group of the root, which exists from the first iteration
    /// on (`None` in a grouped scope: groups come and go with their rows).
    root: Option<K>,
    key_of: KF,
    wrap: WF,
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
    let reducer = Reducer {
        name,
        state_path: stream.path().child(name),
        path: stream.path().suffixed(&format!(".{name}")),
        parts: crate::group_parts(&stream),
        root: S::root_key(),
        key_of: |row: &S::Row<T>| S::key(row),
        wrap: |v: V, k: S::Key| S::wrap(v, k),
    };
    reduce_by(stream, reducer, zero, pick_value)
}

/// The linear aggregate of `stream` per group `r.key_of(row)`, with one
/// keyed state row per group; each group's value goes out as `r.wrap(value,
/// key)`.
#[track_caller]
fn reduce_by<'q, T, S, V, K, U, KF, WF>(
    stream: Stream<'q, ZSet<T>, S>,
    r: Reducer<K, KF, WF>,
    zero: V,
    pick_value: impl Fn(&T) -> V + Send + Sync + 'static,
) -> Stream<'q, ZSet<U>, S>
where
    T: Data,
    S: FlatScope,
    V: Data + Add<Output = V> + Mul<i64, Output = V>,
    K: IndexKey + Hash,
    U: Data,
    KF: Fn(&S::Row<T>) -> K + Send + Sync + 'static,
    WF: Fn(V, K) -> S::Row<U> + Send + Sync + 'static,
{
    type Row<V, K> = Pair<Aggregate<V>, K>;
    let q = stream.query();
    let part_refs: Vec<&str> = r.parts.iter().map(String::as_str).collect();
    let key: Index<Row<V, K>, K> =
        Index::with_parts("group", &part_refs, |r: &Row<V, K>| r.right.clone());
    let state = q.declare_keyed(r.state_path, key.clone());
    let (key_of, wrap) = (r.key_of, r.wrap);
    let root = r.root;
    stream.apply_ctx(
        &[],
        r.name,
        vec![state],
        Some(r.path),
        move |ctx, ins: &[&Slot]| {
            let delta = ctx.zset::<S::Row<T>>(ins[0])?;
            // Per group: Σ pick·w and Σ w of this change.
            let mut changes: HashMap<K, (V, i64)> = HashMap::with_capacity(delta.len());
            for (row, w) in delta.iter() {
                let entry = changes
                    .entry(key_of(row))
                    .or_insert_with(|| (zero.clone(), 0));
                // Taken out and put back, not cloned: for a set-valued
                // aggregate a clone per row costs the whole set each time.
                let sum = std::mem::replace(&mut entry.0, zero.clone());
                entry.0 = sum + pick_value(S::value(row)) * w;
                entry.1 = weight::add(entry.1, w);
            }
            if let (true, Some(root)) = (changes.is_empty(), &root) {
                // The root aggregate exists from the first iteration on.
                changes.insert(root.clone(), (zero.clone(), 0));
            }
            if changes.is_empty() {
                return Ok(ZSet::new());
            }
            let keys: Vec<K> = changes.keys().cloned().collect();
            let stored = ctx.read::<Row<V, K>>(
                state,
                Read::ByIndex {
                    index: 0,
                    keys: &keys,
                },
            )?;
            let mut old: HashMap<K, Aggregate<V>> = stored
                .into_iter()
                .map(|r| (r.value.right, r.value.left))
                .collect();
            let mut out = ZSet::with_capacity(2 * changes.len());
            let mut writes: KeyedDelta<Row<V, K>> = Vec::with_capacity(changes.len());
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
                let present = |a: &Aggregate<V>| root.is_some() || a.count != 0;
                if before.as_ref() == Some(&after) {
                    continue;
                }
                // The old value goes out as it is (moved, not copied).
                if let Some(b) = before.filter(|b| present(b)) {
                    out.update(wrap(b.value, k.clone()), -1);
                }
                if present(&after) {
                    out.update(wrap(after.value.clone(), k.clone()), 1);
                }
                // Keep a group's row while it has a count or a non-zero sum
                // (rows may cancel in count but not in value, or vice versa).
                let keep = root.is_some() || after.count != 0 || after.value != zero;
                writes.push((Pair::new(after, k), keep));
            }
            if !writes.is_empty() {
                ctx.write(state, Box::new(writes));
            }
            Ok(out)
        },
    )
}
