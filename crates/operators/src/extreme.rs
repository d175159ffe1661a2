//! Extremes per group: `min`, `max`, `arg_min`, `arg_max`, and their
//! grouped forms (`group_min`, ...).
//!
//! None of them is linear, and a plain re-computation over the integral
//! (§11.1) would read a whole group whenever its extreme leaves. Instead
//! each keeps its groups' values in a state ordered by the value (an index
//! whose key is `(group, value)`) and each group's current extreme in a
//! keyed state beside it. A change reads the extremes of the groups it
//! touches (one read by key) and the stored weights of its own rows; only
//! for a group whose extreme it removes does it read the first few rows in
//! value order ([`Read::FirstByIndex`]) to find the next one. The cost of a
//! change does not depend on how many rows its groups hold.

use hashbrown::HashMap;
use std::cmp::Ordering;
use std::hash::Hash;
use std::sync::Arc;

use graph::{FlatScope, KeyedDelta, PrefixIndex, Read, Slot, Stream};
use serde::{Deserialize, Serialize};
use zset::{Data, Index, IndexKey, KeyColumn, KeyValue, Pair, ZSet};

use crate::Grouping;

/// `min`, `max`, `arg_min`, `arg_max` and their grouped forms.
///
/// Semantics, for a group (the root's one group, or each group of a
/// grouped scope): its *values* are `pick(row)` of its rows, each with the
/// total weight of the rows giving it; `min` is the least value of positive
/// weight (values of zero or negative weight are ignored, as `first_n`
/// ignores such rows). A group with no value of positive weight has no
/// extreme, so a group whose rows are all removed disappears from the
/// output, and `min` of an empty input is empty (not a zero).
///
/// As equations, for a Z-set `z` of one group, with `w_z(v) = Σ z[x]` over
/// the rows `x` with `pick(x) = v`:
///
/// ```text
/// min(z)     = { min { v : w_z(v) > 0 } ↦ 1 }         (empty if no such v)
/// max(z)     = { max { v : w_z(v) > 0 } ↦ 1 }
/// arg_min(z) = { least (pick(x), x) among x with z[x] > 0, by pick then x ↦ 1 }
/// arg_max(z) = { x with z[x] > 0 of greatest pick(x), least x on ties ↦ 1 }
/// ```
///
/// None is linear, so each is made incremental as the DBSP paper does for
/// any aggregate (§11.1, `Δ agg = agg(I(z)) − z⁻¹(agg(I(z)))` with `I` the
/// integral): the output of an iteration is the new extreme minus the old
/// one, for the groups the change touches. What differs from a
/// re-computation is only how `agg(I(z))` is found, through the ordered
/// state described above.
///
/// State: one row per (group, distinct value) for `min`/`max`, one per
/// (group, row) for `arg_min`/`arg_max`, ordered by value; and one row per
/// group holding its extreme.
pub trait Extremes<'q, T: Data, S: FlatScope>: Sized {
    /// The least `pick(row)` of positive weight: one value per group.
    ///
    /// Removing the current minimum reads the next one through the ordered
    /// state, never the whole group.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, prices) = q.input::<(String, i64)>("prices")?;
    ///     Ok((input, q.output("cheapest", prices.min(|p| p.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let p = |n: &str, v| (n.to_string(), v);
    /// assert_eq!(graph.insert(&mut store, &input, [p("a", 5), p("b", 3), p("c", 9)])?.get(&out)?, &zset! { 3 => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [p("b", 3)])?.get(&out)?, &zset! { 3 => -1, 5 => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [p("a", 5), p("c", 9)])?.get(&out)?, &zset! { 5 => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn min<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S>;

    /// The greatest `pick(row)` of positive weight: one value per group.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     Ok((input, q.output("largest", n.max(|x| *x))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [4, 8, 6])?.get(&out)?, &zset! { 8 => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [8])?.get(&out)?, &zset! { 8 => -1, 6 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn max<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S>;

    /// The whole row whose `pick(row)` is least, among rows of positive
    /// weight, with weight 1; of rows tied on `pick`, the least row (by the
    /// row's own order). One row per group.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, runs) = q.input::<(String, i64)>("runs")?;
    ///     Ok((input, q.output("fastest", runs.arg_min(|r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let r = |n: &str, t| (n.to_string(), t);
    /// // A tie on the time: the least row wins.
    /// let change = graph.insert(&mut store, &input, [r("bo", 12), r("al", 12), r("cy", 15)])?;
    /// assert_eq!(change.get(&out)?, &zset! { r("al", 12) => 1 });
    /// let change = graph.remove(&mut store, &input, [r("al", 12)])?;
    /// assert_eq!(change.get(&out)?, &zset! { r("al", 12) => -1, r("bo", 12) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn arg_min<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S>;

    /// The whole row whose `pick(row)` is greatest, among rows of positive
    /// weight, with weight 1; of rows tied on `pick`, the least row (by the
    /// row's own order). One row per group.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, bids) = q.input::<(String, i64)>("bids")?;
    ///     Ok((input, q.output("best", bids.arg_max(|b| b.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let b = |n: &str, v| (n.to_string(), v);
    /// assert_eq!(graph.insert(&mut store, &input, [b("x", 3), b("y", 7)])?.get(&out)?, &zset! { b("y", 7) => 1 });
    /// assert_eq!(graph.remove(&mut store, &input, [b("y", 7)])?.get(&out)?, &zset! { b("y", 7) => -1, b("x", 3) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn arg_max<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S>;

    /// `group(by)`, `min(pick)` per group, `flatten`: one `Pair(min, key)`
    /// per group with a value of positive weight.
    ///
    /// Like [`group_reduce_flatten`](crate::Aggregates::group_reduce_flatten),
    /// it runs as one operator reading this stream's rows directly, and
    /// keeps the state of the three operators spelled out, under the same
    /// path.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_day = Index::new("day", |r: &(i64, i64)| r.0);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, temps) = q.input::<(i64, i64)>("temps")?;
    ///     Ok((input, q.output("coldest", temps.group_min(&by_day, |r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [(1, 4), (1, -2), (2, 7)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(-2, 1) => 1, Pair::new(7, 2) => 1 });
    /// let change = graph.remove(&mut store, &input, [(1, -2), (2, 7)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(-2, 1) => -1, Pair::new(4, 1) => 1, Pair::new(7, 2) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_min<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S>;

    /// `group(by)`, `max(pick)` per group, `flatten`, as one operator (see
    /// [`group_min`](Self::group_min)).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_day = Index::new("day", |r: &(i64, i64)| r.0);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, temps) = q.input::<(i64, i64)>("temps")?;
    ///     Ok((input, q.output("warmest", temps.group_max(&by_day, |r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &input, [(1, 4), (1, 9)])?;
    /// let change = graph.remove(&mut store, &input, [(1, 9)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(9, 1) => -1, Pair::new(4, 1) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_max<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S>;

    /// `group(by)`, `arg_min(pick)` per group, `flatten`, as one operator
    /// (see [`group_min`](Self::group_min)): `Pair(row, key)`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_team = Index::new("team", |r: &(char, i64)| r.0.to_string());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, runs) = q.input::<(char, i64)>("runs")?;
    ///     Ok((input, q.output("fastest", runs.group_arg_min(&by_team, |r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [('a', 30), ('a', 20), ('b', 25)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(('a', 20), "a".to_string()) => 1, Pair::new(('b', 25), "b".to_string()) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_arg_min<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<T, K>>, S>;

    /// `group(by)`, `arg_max(pick)` per group, `flatten`, as one operator
    /// (see [`group_min`](Self::group_min)): `Pair(row, key)`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_team = Index::new("team", |r: &(char, i64)| r.0.to_string());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, scores) = q.input::<(char, i64)>("scores")?;
    ///     Ok((input, q.output("top", scores.group_arg_max(&by_team, |r| r.1))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &input, [('a', 3), ('a', 8)])?;
    /// let change = graph.remove(&mut store, &input, [('a', 8)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(('a', 8), "a".to_string()) => -1, Pair::new(('a', 3), "a".to_string()) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn group_arg_max<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<T, K>>, S>;
}

/// A key in reverse order: how `max` reads the greatest value first from an
/// index that every store reads in ascending key order. Each of the key's
/// columns is declared with the opposite direction, so SQL stores order it
/// as [`Ord`] does here (`NULL`s, first ascending, come last).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Rev<V>(pub(crate) V);

impl<V: Ord> PartialOrd for Rev<V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<V: Ord> Ord for Rev<V> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

impl<V: IndexKey> IndexKey for Rev<V> {
    type Plain = V::Plain;
    fn from_plain(plain: V::Plain) -> Self {
        Rev(V::from_plain(plain))
    }
    fn into_plain(self) -> V::Plain {
        self.0.into_plain()
    }
    fn columns(out: &mut Vec<KeyColumn>) {
        let from = out.len();
        V::columns(out);
        for c in &mut out[from..] {
            c.descending = !c.descending;
        }
    }
    fn values(&self, out: &mut Vec<KeyValue>) {
        self.0.values(out);
    }
    fn scan(&self, scan: &mut zset::KeyScan) {
        self.0.scan(scan);
    }
}

/// Where an extreme keeps its state and how it finds each row's group and
/// writes each group's extreme.
struct Extreme<KF, WF> {
    /// `min`, `max`, `arg_min` or `arg_max`: the state's last path segment
    /// and its index's name.
    name: &'static str,
    state_path: graph::Path,
    path: graph::Path,
    /// The key columns of the group key.
    parts: Vec<String>,
    key_of: KF,
    wrap: WF,
}

/// The column names of an order key `O`: `name`, or `name_0`, `name_1`, ...
fn order_parts<O: IndexKey>(name: &str) -> Vec<String> {
    let mut cols = Vec::new();
    O::columns(&mut cols);
    if cols.len() == 1 {
        vec![name.to_owned()]
    } else {
        (0..cols.len()).map(|i| format!("{name}_{i}")).collect()
    }
}

/// Keeps, per group `G`, the multiset of `extract(value)` in a state
/// ordered by `(G, order(x))`, and each group's extreme (the least `x` of
/// positive weight by `(order(x), x)`) in a keyed state beside it; outputs
/// each group's extreme as `wrap(x, group)`.
///
/// Per change: the extremes of the groups it touches (one read by key) and
/// the stored weights of its own rows (a change can revive a row whose
/// stored weight is not positive). A group's new extreme is the least of
/// its old one, if still positive, and the change's positive rows. Only a
/// group whose extreme the change removes reads its first `1 + r` rows of
/// positive weight in order (`r`: the change's rows of the group that
/// remove weight, so at least one read row is still positive afterwards,
/// unless the group runs out), plus every row tied with the last of them.
#[track_caller]
fn extreme_by<'q, T, S, X, O, G, U, KF, WF>(
    stream: Stream<'q, ZSet<T>, S>,
    spec: Extreme<KF, WF>,
    extract: impl Fn(&T) -> X + Send + Sync + 'static,
    order: impl Fn(&X) -> O + Send + Sync + 'static,
) -> Stream<'q, ZSet<U>, S>
where
    T: Data,
    S: FlatScope,
    X: Data,
    O: IndexKey,
    G: IndexKey + Hash,
    U: Data,
    KF: Fn(&S::Row<T>) -> G + Send + Sync + 'static,
    WF: Fn(X, G) -> S::Row<U> + Send + Sync + 'static,
{
    let q = stream.query();
    let group_refs: Vec<&str> = spec.parts.iter().map(String::as_str).collect();
    let mut parts = spec.parts.clone();
    parts.extend(order_parts::<O>(spec.name));
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let order = Arc::new(order);
    let key_order = Arc::clone(&order);
    let ordered: Index<Pair<X, G>, (G, O)> =
        Index::with_parts(spec.name, &part_refs, move |r: &Pair<X, G>| {
            (r.right.clone(), key_order(&r.left))
        });
    let prefix = PrefixIndex::new(ordered.clone());
    let current = q.declare_keyed(
        spec.state_path.child("current"),
        Index::with_parts("group", &group_refs, |r: &Pair<X, G>| r.right.clone()),
    );
    let state = q.declare_zset::<Pair<X, G>>(spec.state_path, false, vec![Arc::new(prefix)]);
    let (key_of, wrap) = (spec.key_of, spec.wrap);
    stream.apply_ctx(
        &[],
        spec.name,
        vec![state, current],
        Some(spec.path),
        move |ctx, ins: &[&Slot]| {
            let delta = ctx.zset::<S::Row<T>>(ins[0])?;
            let mut change: ZSet<Pair<X, G>> = ZSet::with_capacity(delta.len());
            for (row, w) in delta.iter() {
                change.update(Pair::new(extract(S::value(row)), key_of(row)), w);
            }
            if change.is_empty() {
                return Ok(ZSet::new());
            }
            let values: Vec<Pair<X, G>> = change.values().cloned().collect();
            let mut stored: HashMap<Pair<X, G>, i64> = HashMap::with_capacity(values.len());
            for r in ctx.read::<Pair<X, G>>(state, Read::ByValues { values: &values })? {
                stored.insert(r.value, r.weight);
            }
            // Per group: the change's rows with their weights after it, and
            // how many of them remove weight.
            let mut after: HashMap<G, (HashMap<X, i64>, usize)> = HashMap::new();
            for (r, w) in change.iter() {
                let now = zset::weight::add(stored.get(r).copied().unwrap_or(0), w);
                let group = after.entry(r.right.clone()).or_default();
                group.0.insert(r.left.clone(), now);
                group.1 += usize::from(w < 0);
            }
            let groups: Vec<G> = after.keys().cloned().collect();
            let mut before: HashMap<G, X> = HashMap::with_capacity(groups.len());
            for r in ctx.read::<Pair<X, G>>(
                current,
                Read::ByIndex {
                    index: 0,
                    keys: &groups,
                },
            )? {
                before.insert(r.value.right, r.value.left);
            }
            // The least of `rows` by (order, value), among positive weights.
            let least = |rows: &mut dyn Iterator<Item = (&X, i64)>| -> Option<X> {
                let mut best: Option<(O, &X)> = None;
                for (x, w) in rows {
                    if w <= 0 {
                        continue;
                    }
                    let o = order(x);
                    if best.as_ref().is_none_or(|(bo, bx)| (&o, x) < (bo, *bx)) {
                        best = Some((o, x));
                    }
                }
                best.map(|(_, x)| x.clone())
            };
            // The groups whose extreme the change removes read their first
            // rows, one read per distinct limit (so a group with many
            // removals does not make every other group read as many rows).
            let mut by_limit: HashMap<usize, Vec<G>> = HashMap::new();
            for (g, (changed, removals)) in &after {
                if let Some(old) = before.get(g)
                    && changed.get(old).is_some_and(|w| *w <= 0)
                {
                    by_limit.entry(1 + removals).or_default().push(g.clone());
                }
            }
            let mut first: HashMap<G, Vec<(X, i64)>> = HashMap::new();
            if !by_limit.is_empty() {
                let pos = ctx.index_position(state, ordered.spec())?;
                for (limit, groups) in by_limit {
                    let read = Read::FirstByIndex {
                        index: pos,
                        prefixes: Some(&groups),
                        limit,
                    };
                    for r in ctx.read::<Pair<X, G>>(state, read)? {
                        let Pair { left, right } = r.value;
                        first.entry(right).or_default().push((left, r.weight));
                    }
                }
            }
            let mut out = ZSet::new();
            let mut writes: KeyedDelta<Pair<X, G>> = Vec::new();
            for (g, (changed, _)) in after {
                let old = before.remove(&g);
                let changed_rows = changed.iter().map(|(x, w)| (x, *w));
                let now = match first.get(&g) {
                    // The old extreme left: the least of the first rows read
                    // (as the change leaves them) and the change's rows.
                    Some(read) => least(
                        &mut read
                            .iter()
                            .filter(|(x, _)| !changed.contains_key(x))
                            .map(|(x, w)| (x, *w))
                            .chain(changed_rows),
                    ),
                    // Still there (or none): it, or a change's row before it.
                    None => least(&mut old.iter().map(|x| (x, 1)).chain(changed_rows)),
                };
                if old == now {
                    continue;
                }
                match &now {
                    Some(n) => writes.push((Pair::new(n.clone(), g.clone()), true)),
                    None => {
                        if let Some(o) = &old {
                            writes.push((Pair::new(o.clone(), g.clone()), false));
                        }
                    }
                }
                if let Some(o) = old {
                    out.update(wrap(o, g.clone()), -1);
                }
                if let Some(n) = now {
                    out.update(wrap(n, g), 1);
                }
            }
            if !writes.is_empty() {
                ctx.write(current, Box::new(writes));
            }
            ctx.write(state, Box::new(change));
            Ok(out)
        },
    )
}

/// An extreme in this stream's own scope: per `S::Key`.
#[track_caller]
fn ungrouped<'q, T, S, X, O>(
    stream: Stream<'q, ZSet<T>, S>,
    name: &'static str,
    extract: impl Fn(&T) -> X + Send + Sync + 'static,
    order: impl Fn(&X) -> O + Send + Sync + 'static,
) -> Stream<'q, ZSet<X>, S>
where
    T: Data,
    S: FlatScope,
    X: Data,
    O: IndexKey,
{
    let spec = Extreme {
        name,
        state_path: stream.path().child(name),
        path: stream.path().suffixed(&format!(".{name}")),
        parts: crate::group_parts(&stream),
        key_of: |row: &S::Row<T>| S::key(row),
        wrap: |x: X, k: S::Key| S::wrap(x, k),
    };
    extreme_by(stream, spec, extract, order)
}

/// `group(by)`, the extreme per group, `flatten`, as one operator keeping
/// the state of the three spelled out (see `group_reduce_flatten`).
#[track_caller]
fn grouped<'q, T, S, X, O, K>(
    stream: Stream<'q, ZSet<T>, S>,
    name: &'static str,
    by: &Index<T, K>,
    extract: impl Fn(&T) -> X + Send + Sync + 'static,
    order: impl Fn(&X) -> O + Send + Sync + 'static,
) -> Stream<'q, ZSet<Pair<X, K>>, S>
where
    T: Data,
    S: FlatScope,
    X: Data,
    O: IndexKey,
    K: IndexKey + Hash,
{
    // The grouped stream is built only for its path and key columns; it is
    // left unread, and dropped when the graph is finalized.
    let grouped = stream.group(by);
    let by = by.clone();
    let extreme_path = grouped.path().suffixed(&format!(".{name}"));
    let spec = Extreme {
        name,
        state_path: grouped.path().child(name),
        path: extreme_path.suffixed(".flatten"),
        parts: crate::group_parts(&grouped),
        key_of: move |row: &S::Row<T>| (S::key(row), by.key(S::value(row))),
        wrap: |x: X, (outer, k): (S::Key, K)| S::wrap(Pair::new(x, k), outer),
    };
    extreme_by(stream, spec, extract, order)
}

impl<'q, T: Data, S: FlatScope> Extremes<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn min<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S> {
        ungrouped(self, "min", pick, |v: &V| v.clone())
    }

    #[track_caller]
    fn max<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S> {
        ungrouped(self, "max", pick, |v: &V| Rev(v.clone()))
    }

    #[track_caller]
    fn arg_min<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S> {
        ungrouped(self, "arg_min", T::clone, pick)
    }

    #[track_caller]
    fn arg_max<V: IndexKey>(
        self,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S> {
        ungrouped(self, "arg_max", T::clone, move |t: &T| Rev(pick(t)))
    }

    #[track_caller]
    fn group_min<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S> {
        grouped(self, "min", by, pick, |v: &V| v.clone())
    }

    #[track_caller]
    fn group_max<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<V, K>>, S> {
        grouped(self, "max", by, pick, |v: &V| Rev(v.clone()))
    }

    #[track_caller]
    fn group_arg_min<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<T, K>>, S> {
        grouped(self, "arg_min", by, T::clone, pick)
    }

    #[track_caller]
    fn group_arg_max<K: IndexKey + Hash, V: IndexKey>(
        self,
        by: &Index<T, K>,
        pick: impl Fn(&T) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<T, K>>, S> {
        grouped(self, "arg_max", by, T::clone, move |t: &T| Rev(pick(t)))
    }
}
