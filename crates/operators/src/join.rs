//! Joins: the incremental equi-join (Theorem 5.5) and the left outer join.

use hashbrown::HashMap;
use std::borrow::Cow;
use std::hash::Hash;

use graph::{Ctx, GraphError, Read, Scope, Slot, StateId, Stepped, StoredRow, Stream};
use zset::{Data, Index, IndexKey, OrEmpty, Pair, Weight, ZSet, weight};

use crate::{Distinct, Linear};

/// `join` and `outer_join`.
pub trait Joins<'q, T: Data, S: Scope>: Sized {
    /// The equi-join of this stream and `other` on `on_left(l) == on_right(r)`,
    /// maintained incrementally (Theorem 5.5):
    ///
    /// `Δ(l ⋈ r) = I(l) ⋈ Δr + Δl ⋈ z⁻¹I(r)`
    ///
    /// Both integrals are stored, indexed by the join key; each iteration
    /// reads only the rows whose keys appear in the other side's change.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_id = Index::new("id", |u: &(i64, String)| u.0);
    /// let by_user = Index::new("user_id", |o: &(i64, i64)| o.0);
    /// let (graph, (users, orders, joined)) = Graph::build(|q| {
    ///     let (users, u) = q.input::<(i64, String)>("users")?;
    ///     let (orders, o) = q.input::<(i64, i64)>("orders")?;
    ///     Ok((users, orders, q.output("joined", u.join(o, &by_id, &by_user))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &users, [(1, "ann".to_string())])?;
    /// let change = graph.insert(&mut store, &orders, [(1, 100), (2, 200)])?;
    /// assert_eq!(change.get(&joined)?, &zset! { Pair::new((1, "ann".to_string()), (1, 100)) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    ///
    /// Key types are checked when the query compiles: joining an `i64` key
    /// with a `String` key does not build.
    ///
    /// ```compile_fail
    /// use stepping_operators::prelude::*;
    /// let _ = Graph::build(|q| {
    ///     let (_a, a) = q.input::<(i64, String)>("a")?;
    ///     let (_b, b) = q.input::<(String, i64)>("b")?;
    ///     let by_int = Index::new("k", |x: &(i64, String)| x.0);
    ///     let by_text = Index::new("k", |x: &(String, i64)| x.0.clone());
    ///     Ok(a.join(b, &by_int, &by_text))
    /// });
    /// ```
    fn join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, U>>, S>;

    /// The [`join`](Self::join) followed by a `map` of each pair, as one
    /// operator: `f(l, r)` for every matching pair, without building the
    /// `Pair`s (no copy of either row into a pair, no Z-set of pairs hashed
    /// and freed). The states kept are the join's.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_id = Index::new("id", |u: &(i64, String)| u.0);
    /// let by_user = Index::new("user_id", |o: &(i64, i64)| o.0);
    /// let (graph, (users, orders, named)) = Graph::build(|q| {
    ///     let (users, u) = q.input::<(i64, String)>("users")?;
    ///     let (orders, o) = q.input::<(i64, i64)>("orders")?;
    ///     let named = u.join_map(o, &by_id, &by_user, |u, o| (u.1.clone(), o.1));
    ///     Ok((users, orders, q.output("named", named)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &users, [(1, "ann".to_string())])?;
    /// let change = graph.insert(&mut store, &orders, [(1, 100), (1, 200)])?;
    /// assert_eq!(change.get(&named)?, &zset! { ("ann".to_string(), 100) => 1, ("ann".to_string(), 200) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn join_map<U: Data, K: IndexKey + Hash, V: Data>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
        f: impl Fn(&T, &U) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S>;

    /// The left outer join: every pair of the [`join`](Self::join), plus
    /// `Pair(l, Empty)` for each left row whose key has no right rows.
    ///
    /// A key counts as matched while the total weight of the right rows with
    /// that key is positive; a left row with several matches never produces
    /// an `Empty` row (the original's negative-weight bug does not exist).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let key = Index::new("k", |x: &(i64, char)| x.0);
    /// let (graph, (left, right, outer)) = Graph::build(|q| {
    ///     let (left, l) = q.input::<(i64, char)>("left")?;
    ///     let (right, r) = q.input::<(i64, char)>("right")?;
    ///     Ok((left, right, q.output("outer", l.outer_join(r, &key, &key))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &left, [(1, 'a')])?;
    /// assert_eq!(change.get(&outer)?, &zset! { Pair::new((1, 'a'), OrEmpty::Empty) => 1 });
    /// let change = graph.insert(&mut store, &right, [(1, 'x'), (1, 'y')])?;
    /// assert_eq!(change.get(&outer)?, &zset! {
    ///     Pair::new((1, 'a'), OrEmpty::Empty) => -1,
    ///     Pair::new((1, 'a'), OrEmpty::Value((1, 'x'))) => 1,
    ///     Pair::new((1, 'a'), OrEmpty::Value((1, 'y'))) => 1,
    /// });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn outer_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, OrEmpty<U>>>, S>;

    /// The join of this iteration's values of the two streams, not
    /// incremental: `stream_join(a, b)[t] = a[t] ⋈ b[t]` (the per-batch
    /// join, as dbsp's `stream_join`). Applied to integrals and followed by
    /// `differentiate` it equals [`join`](Self::join), at the cost of
    /// reading both whole integrals every iteration.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let k = Index::new("k", |x: &(i64, char)| x.0);
    /// let (graph, (a, b, out)) = Graph::build(|q| {
    ///     let (a, x) = q.input::<(i64, char)>("a")?;
    ///     let (b, y) = q.input::<(i64, char)>("b")?;
    ///     Ok((a, b, q.output("pairs", x.stream_join(y, &k, &k))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.iteration(&mut store, Changes::new().insert(&a, [(1, 'x')]).insert(&b, [(1, 'y')]))?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new((1, 'x'), (1, 'y')) => 1 });
    /// // Nothing is remembered: the next iteration joins only its own values.
    /// assert!(graph.insert(&mut store, &b, [(1, 'z')])?.get(&out)?.is_empty());
    /// # Ok::<(), GraphError>(())
    /// ```
    fn stream_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, U>>, S>;
}

/// Joins rows of two Z-sets that share a key: `Σ l·r` over matching pairs.
fn join_rows<S: Scope, T: Data, U: Data, LK: IndexKey + Hash>(
    left: &ZSet<S::Row<T>>,
    right: &ZSet<S::Row<U>>,
    lkey: &Index<S::Row<T>, LK>,
    rkey: &Index<S::Row<U>, LK>,
    out: &mut ZSet<S::Row<Pair<T, U>>>,
) {
    join_slices::<S, T, U, LK>(
        &left.iter().collect::<Vec<_>>(),
        &right.iter().collect::<Vec<_>>(),
        lkey,
        rkey,
        out,
    );
}

/// [`join_rows`] of rows given as lists (a row may appear more than once:
/// the join is bilinear, so the sum is the same). The smaller side is
/// indexed by key, without an allocation per key.
fn join_slices<S: Scope, T: Data, U: Data, LK: IndexKey + Hash>(
    left: &[(&S::Row<T>, Weight)],
    right: &[(&S::Row<U>, Weight)],
    lkey: &Index<S::Row<T>, LK>,
    rkey: &Index<S::Row<U>, LK>,
    out: &mut ZSet<S::Row<Pair<T, U>>>,
) {
    if left.is_empty() || right.is_empty() {
        return;
    }
    let mut emit = |l: &S::Row<T>, r: &S::Row<U>, w: Weight| {
        let pair = Pair::new(S::value(l).clone(), S::value(r).clone());
        out.update(S::wrap(pair, S::key(l)), w);
    };
    if left.len() <= right.len() {
        let chains = KeyChains::new(left.iter().map(|(l, _)| lkey.key(l)));
        for (r, wr) in right {
            chains.for_each(&rkey.key(r), |i| {
                let (l, wl) = left[i];
                emit(l, r, weight::mul(wl, *wr));
            });
        }
    } else {
        let chains = KeyChains::new(right.iter().map(|(r, _)| rkey.key(r)));
        for (l, wl) in left {
            chains.for_each(&lkey.key(l), |i| {
                let (r, wr) = right[i];
                emit(l, r, weight::mul(*wl, wr));
            });
        }
    }
}

/// The positions of a list's rows by key: one hash entry per key, and the
/// rows sharing a key chained through `next`.
struct KeyChains<K> {
    heads: HashMap<K, usize>,
    next: Vec<usize>,
}

impl<K: Eq + Hash> KeyChains<K> {
    const END: usize = usize::MAX;

    fn new(keys: impl ExactSizeIterator<Item = K>) -> Self {
        let mut heads: HashMap<K, usize> = HashMap::with_capacity(keys.len());
        let mut next = vec![Self::END; keys.len()];
        for (i, k) in keys.enumerate() {
            match heads.entry(k) {
                hashbrown::hash_map::Entry::Occupied(mut e) => {
                    next[i] = *e.get();
                    *e.get_mut() = i;
                }
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        KeyChains { heads, next }
    }

    /// The distinct keys.
    fn keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.heads.keys().cloned().collect()
    }

    /// `f(row, i)` for the position `i` of every row with `key`: `row`
    /// lent to all but the last, which takes it if it is owned.
    fn each_taking_last<A: Clone>(
        &self,
        key: &K,
        row: Cow<'_, A>,
        mut f: impl FnMut(Cow<'_, A>, usize),
    ) {
        let mut i = self.heads.get(key).copied().unwrap_or(Self::END);
        match row {
            Cow::Borrowed(row) => {
                while i != Self::END {
                    f(Cow::Borrowed(row), i);
                    i = self.next[i];
                }
            }
            Cow::Owned(row) => {
                while i != Self::END {
                    let next = self.next[i];
                    if next == Self::END {
                        f(Cow::Owned(row), i);
                        return;
                    }
                    f(Cow::Borrowed(&row), i);
                    i = next;
                }
            }
        }
    }

    fn for_each(&self, key: &K, mut f: impl FnMut(usize)) {
        let mut i = self.heads.get(key).copied().unwrap_or(Self::END);
        while i != Self::END {
            f(i);
            i = self.next[i];
        }
    }
}

impl<'q, T: Data, S: Scope> Joins<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, U>>, S> {
        let parts = crate::group_parts(&self);
        let li = S::lift_index(on_left, &parts);
        let ri = S::lift_index(on_right, &parts);
        if S::NESTED {
            return nested_join(self, other, li, ri);
        }
        let path = self
            .path()
            .suffixed(&format!(".join({})", other.path().last()));
        // A stored row read out of a store is moved into its (last) pair;
        // a lent one, and the change row, are copied.
        join_vertex(
            self,
            other,
            li,
            ri,
            ("join", path),
            |l: Cow<'_, T>, r: &U| Pair::new(l.into_owned(), r.clone()),
            |r: Cow<'_, U>, l: &T| Pair::new(l.clone(), r.into_owned()),
        )
    }

    #[track_caller]
    fn join_map<U: Data, K: IndexKey + Hash, V: Data>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
        f: impl Fn(&T, &U) -> V + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<V>, S> {
        let parts = crate::group_parts(&self);
        let li = S::lift_index(on_left, &parts);
        let ri = S::lift_index(on_right, &parts);
        if S::NESTED {
            // Inside a recursion the join keeps its rows per inner step;
            // the pairs it builds there are mapped as they come.
            return nested_join(self, other, li, ri).map(move |p| f(&p.left, &p.right));
        }
        let path = self
            .path()
            .suffixed(&format!(".join_map({})", other.path().last()));
        let f = std::sync::Arc::new(f);
        let g = f.clone();
        join_vertex(
            self,
            other,
            li,
            ri,
            ("join_map", path),
            move |l: Cow<'_, T>, r: &U| f(&l, r),
            move |r: Cow<'_, U>, l: &T| g(l, &r),
        )
    }

    #[track_caller]
    fn stream_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, U>>, S> {
        let parts = crate::group_parts(&self);
        let li = S::lift_index(on_left, &parts);
        let ri = S::lift_index(on_right, &parts);
        self.apply2(other, "stream_join", move |a, b| {
            let mut out = ZSet::new();
            join_rows::<S, T, U, _>(a, b, &li, &ri, &mut out);
            out
        })
    }

    #[track_caller]
    fn outer_join<U: Data, K: IndexKey + Hash>(
        self,
        other: Stream<'q, ZSet<U>, S>,
        on_left: &Index<T, K>,
        on_right: &Index<U, K>,
    ) -> Stream<'q, ZSet<Pair<T, OrEmpty<U>>>, S> {
        let base = self
            .path()
            .suffixed(&format!(".outer_join({})", other.path().last()));
        let joined = self.join(other, on_left, on_right);
        // The keys present on the right (total weight positive), as a set.
        let on_r = on_right.clone();
        let right_keys = other
            .map(move |r| on_r.key(r))
            .at(base.child("right_keys"))
            .distinct();
        let key_of_key = Index::new(on_left.name(), |k: &K| k.clone());
        let matched = self
            .join(
                right_keys.at(base.child("matched_keys")),
                on_left,
                &key_of_key,
            )
            .map(|p| p.left.clone());
        let unmatched = self
            .add(matched.neg())
            .map(|l| Pair::new(l.clone(), OrEmpty::Empty));
        let paired = joined.map(|p| Pair::new(p.left.clone(), OrEmpty::Value(p.right.clone())));
        unmatched.add(paired).at(base)
    }
}

/// The incremental join's vertex (Theorem 5.5) outside a recursion, each
/// matching pair combined into an output row: `stored_left(l, r)` for a
/// stored left row meeting a change row of the right, and
/// `stored_right(r, l)` the other way round. A stored row comes lent where
/// the store keeps it in memory, else owned, and then moved into the last
/// pair it is part of (a stored row usually meets one change row).
#[track_caller]
fn join_vertex<'q, T: Data, U: Data, V: Data, S: Scope, K: IndexKey + Hash>(
    left: Stream<'q, ZSet<T>, S>,
    right: Stream<'q, ZSet<U>, S>,
    li: Index<S::Row<T>, K>,
    ri: Index<S::Row<U>, K>,
    (label, path): (&'static str, graph::Path),
    stored_left: impl Fn(Cow<'_, T>, &U) -> V + Send + Sync + 'static,
    stored_right: impl Fn(Cow<'_, U>, &T) -> V + Send + Sync + 'static,
) -> Stream<'q, ZSet<V>, S> {
    let (l_integral, _) = left.raw_integrate(&[&li]);
    let (_, r_before) = right.raw_integrate(&[&ri]);
    left.apply_ctx(
        &[right.id(), l_integral.id(), r_before.id()],
        label,
        Vec::new(),
        Some(path),
        move |ctx, ins| {
            let dl = ctx.zset::<S::Row<T>>(ins[0])?;
            let dr = ctx.zset::<S::Row<U>>(ins[1])?;
            let mut out = ZSet::with_capacity(dl.len() + dr.len());
            // I(l) ⋈ Δr: the left integral (with Δl) at Δr's keys.
            if !dr.is_empty() {
                let change: Vec<(&S::Row<U>, Weight)> = dr.iter().collect();
                let chains = KeyChains::new(change.iter().map(|(r, _)| ri.key(r)));
                ctx.lookup_each(ins[2], &li, chains.keys(), |l, wl| {
                    let key = li.key(&l);
                    let (l, group) = split::<S, T>(l);
                    chains.each_taking_last(&key, l, |l, j| {
                        let (r, wr) = change[j];
                        let v = stored_left(l, S::value(r));
                        out.update(S::wrap(v, group.clone()), weight::mul(wl, wr));
                    });
                })?;
            }
            // Δl ⋈ z⁻¹I(r): the previous right integral at Δl's keys.
            if !dl.is_empty() {
                let change: Vec<(&S::Row<T>, Weight)> = dl.iter().collect();
                let chains = KeyChains::new(change.iter().map(|(l, _)| li.key(l)));
                ctx.lookup_each(ins[3], &ri, chains.keys(), |r, wr| {
                    let key = ri.key(&r);
                    let (r, _) = split::<S, U>(r);
                    chains.each_taking_last(&key, r, |r, j| {
                        let (l, wl) = change[j];
                        let v = stored_right(r, S::value(l));
                        out.update(S::wrap(v, S::key(l)), weight::mul(wl, wr));
                    });
                })?;
            }
            Ok(out)
        },
    )
}

/// A row taken apart into its value and its group key, still lent if it
/// was.
fn split<S: Scope, T: Data>(row: Cow<'_, S::Row<T>>) -> (Cow<'_, T>, S::Key) {
    match row {
        Cow::Borrowed(row) => (Cow::Borrowed(S::value(row)), S::key(row)),
        Cow::Owned(row) => {
            let (value, key) = S::unwrap(row);
            (Cow::Owned(value), key)
        }
    }
}

/// Scratch of a join inside a recursion, kept across the inner steps of one
/// outer iteration.
struct NestedJoinScratch<LR, RR, LK> {
    /// This iteration's changes of each side, per inner step.
    cur_l: Vec<ZSet<LR>>,
    cur_r: Vec<ZSet<RR>>,
    /// Stored rows fetched so far, per key.
    stored_l: HashMap<LK, Vec<StoredRow<LR>>>,
    stored_r: HashMap<LK, Vec<StoredRow<RR>>>,
}

impl<LR, RR, LK> Default for NestedJoinScratch<LR, RR, LK> {
    fn default() -> Self {
        NestedJoinScratch {
            cur_l: Vec::new(),
            cur_r: Vec::new(),
            stored_l: HashMap::new(),
            stored_r: HashMap::new(),
        }
    }
}

/// Fetches the stored rows of `keys` not fetched yet.
fn fetch<R: Data, K: IndexKey + Hash>(
    ctx: &mut Ctx<'_>,
    state: StateId,
    index: &Index<R, K>,
    keys: impl IntoIterator<Item = K>,
    cache: &mut HashMap<K, Vec<StoredRow<R>>>,
) -> Result<(), GraphError> {
    let missing: Vec<K> = keys
        .into_iter()
        .filter(|k| !cache.contains_key(k))
        .collect::<hashbrown::HashSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let pos = ctx.index_position(state, index.spec())?;
    for k in &missing {
        cache.insert(k.clone(), Vec::new());
    }
    for row in ctx.read::<R>(
        state,
        Read::ByIndex {
            index: pos,
            keys: &missing,
        },
    )? {
        if let Some(rows) = cache.get_mut(&index.key(&row.value)) {
            rows.push(row);
        }
    }
    Ok(())
}

/// The stored rows of `keys` at inner steps selected by `steps`, as a Z-set.
fn stored_at<R: Data, K: IndexKey + Hash>(
    cache: &HashMap<K, Vec<StoredRow<R>>>,
    keys: impl IntoIterator<Item = K>,
    steps: impl Fn(u32) -> bool,
) -> ZSet<R> {
    let mut out = ZSet::new();
    let unique: hashbrown::HashSet<K> = keys.into_iter().collect();
    for k in unique {
        for row in cache.get(&k).into_iter().flatten() {
            if steps(row.step) {
                out.update_ref(&row.value, row.weight);
            }
        }
    }
    out
}

fn sum_steps<R: Data>(steps: &[ZSet<R>]) -> ZSet<R> {
    let mut out = ZSet::new();
    for z in steps {
        out += z;
    }
    out
}

/// A join inside a recursion body, with nested time (DBSP §9): at inner
/// step `k` of outer iteration `t`, with `a`, `b` this iteration's changes
/// per step and `A`, `B` the stored integrals over earlier iterations,
///
/// `Δ[t][k] = a[k] ⋈ (B + b)[≤k] + a[<k] ⋈ (B + b)[k] + A[k] ⋈ b[≤k] + A[<k] ⋈ b[k]`
///
/// (the four ways two 2-D changes can meet at `(t, k)`); `A` and `B` keep
/// one row per value per inner step.
fn nested_join<'q, T: Data, U: Data, S: Scope, LK: IndexKey + Hash>(
    left: Stream<'q, ZSet<T>, S>,
    right: Stream<'q, ZSet<U>, S>,
    li: Index<S::Row<T>, LK>,
    ri: Index<S::Row<U>, LK>,
) -> Stream<'q, ZSet<Pair<T, U>>, S> {
    let q = left.query();
    let path = left
        .path()
        .suffixed(&format!(".join({})", right.path().last()));
    let l_state = q.declare_zset::<S::Row<T>>(
        path.child("left"),
        true,
        vec![std::sync::Arc::new(li.clone())],
    );
    let r_state = q.declare_zset::<S::Row<U>>(
        path.child("right"),
        true,
        vec![std::sync::Arc::new(ri.clone())],
    );
    left.apply_ctx(
        &[right.id()],
        "join",
        vec![l_state, r_state],
        Some(path),
        move |ctx, ins: &[&Slot]| {
            let a_k = ctx.zset::<S::Row<T>>(ins[0])?.into_owned();
            let b_k = ctx.zset::<S::Row<U>>(ins[1])?.into_owned();
            let k = ctx.step();
            let mut scratch =
                std::mem::take(ctx.scratch::<NestedJoinScratch<S::Row<T>, S::Row<U>, LK>>());
            scratch.cur_l.push(a_k.clone());
            scratch.cur_r.push(b_k.clone());
            let a_before = sum_steps(&scratch.cur_l[..k as usize]);
            let b_upto = sum_steps(&scratch.cur_r);
            // Fetch stored rows for every key this step can meet.
            let l_keys: Vec<LK> = a_before
                .values()
                .chain(a_k.values())
                .map(|v| li.key(v))
                .collect();
            let r_keys: Vec<LK> = b_upto.values().map(|v| ri.key(v)).collect();
            fetch(
                ctx,
                r_state,
                &ri,
                l_keys.iter().cloned(),
                &mut scratch.stored_r,
            )?;
            fetch(
                ctx,
                l_state,
                &li,
                r_keys.iter().cloned(),
                &mut scratch.stored_l,
            )?;
            let mut out = ZSet::new();
            // a[k] ⋈ (B + b)[≤k]
            let mut b_full_upto =
                stored_at(&scratch.stored_r, a_k.values().map(|v| li.key(v)), |s| {
                    s <= k
                });
            b_full_upto += &b_upto;
            join_rows::<S, T, U, _>(&a_k, &b_full_upto, &li, &ri, &mut out);
            // a[<k] ⋈ (B + b)[k]
            let mut b_full_k = stored_at(
                &scratch.stored_r,
                a_before.values().map(|v| li.key(v)),
                |s| s == k,
            );
            b_full_k += &b_k;
            join_rows::<S, T, U, _>(&a_before, &b_full_k, &li, &ri, &mut out);
            // A[k] ⋈ b[≤k]
            let a_stored_k =
                stored_at(&scratch.stored_l, b_upto.values().map(|v| ri.key(v)), |s| {
                    s == k
                });
            join_rows::<S, T, U, _>(&a_stored_k, &b_upto, &li, &ri, &mut out);
            // A[<k] ⋈ b[k]
            let a_stored_before =
                stored_at(&scratch.stored_l, b_k.values().map(|v| ri.key(v)), |s| {
                    s < k
                });
            join_rows::<S, T, U, _>(&a_stored_before, &b_k, &li, &ri, &mut out);
            if !a_k.is_empty() {
                ctx.write(
                    l_state,
                    Box::new(Stepped {
                        step: k,
                        delta: a_k,
                    }),
                );
            }
            if !b_k.is_empty() {
                ctx.write(
                    r_state,
                    Box::new(Stepped {
                        step: k,
                        delta: b_k,
                    }),
                );
            }
            *ctx.scratch::<NestedJoinScratch<S::Row<T>, S::Row<U>, LK>>() = scratch;
            Ok(out)
        },
    )
}
