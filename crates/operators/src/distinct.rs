//! `distinct`, incrementally (Prop. 6.3).

use hashbrown::HashMap;

use graph::{Read, Scope, Slot, Stepped, Stream};
use zset::{Data, ZSet, weight};

/// `distinct`.
pub trait Distinct<'q, T: Data, S: Scope>: Sized {
    /// The set of rows with positive weight, each with weight 1, maintained
    /// incrementally with the "haitch" operator of Prop. 6.3:
    ///
    /// `Δdistinct(a) = H(z⁻¹I(a), Δa)`, where for each value `v` of `Δa`,
    /// `H` is `+1` if `v`'s weight crosses from `≤ 0` to `> 0`, `−1` if it
    /// crosses back, else nothing.
    ///
    /// It reads only the stored weights of the values in the change.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<char>("a")?;
    ///     Ok((input, q.output("set", a.distinct())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let mut step = |z: ZSet<char>| graph.iteration(&mut store, Changes::new().zset(&input, z));
    /// assert_eq!(step(zset! { 'a' => 3, 'b' => -1 })?.get(&out)?, &zset! { 'a' => 1 });
    /// assert_eq!(step(zset! { 'b' => 2 })?.get(&out)?, &zset! { 'b' => 1 });
    /// assert_eq!(step(zset! { 'a' => -3 })?.get(&out)?, &zset! { 'a' => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn distinct(self) -> Stream<'q, ZSet<T>, S>;
}

/// `+1` when a weight crosses into positive, `−1` when it leaves it.
fn crossing(before: i64, after: i64) -> i64 {
    i64::from(after > 0) - i64::from(before > 0)
}

impl<'q, T: Data, S: Scope> Distinct<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn distinct(self) -> Stream<'q, ZSet<T>, S> {
        if S::NESTED {
            return nested_distinct(self);
        }
        let (_, before) = self.raw_integrate(&[]);
        let path = self.path().suffixed(".distinct");
        self.apply_ctx(
            &[before.id()],
            "distinct",
            Vec::new(),
            Some(path),
            |ctx, ins: &[&Slot]| {
                let delta = ctx.zset::<S::Row<T>>(ins[0])?;
                if delta.is_empty() {
                    return Ok(ZSet::new());
                }
                let old = ctx.weights(ins[1], delta.values().cloned().collect())?;
                let mut out = ZSet::new();
                for (v, w) in delta.iter() {
                    let before = old.get(v);
                    out.update_ref(v, crossing(before, weight::add(before, w)));
                }
                Ok(out)
            },
        )
    }
}

/// Scratch of a distinct inside a recursion.
struct NestedDistinctScratch<R> {
    /// The values changed so far in this outer iteration, with their stored
    /// weights per inner step and their running sums up to the last step.
    touched: HashMap<R, Touched>,
}

impl<R> Default for NestedDistinctScratch<R> {
    fn default() -> Self {
        NestedDistinctScratch {
            touched: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Touched {
    stored: Vec<(u32, i64)>,
    /// Σ stored weights over steps < k (the old 2-D integral at k − 1).
    old_before: i64,
    /// Σ (stored + this iteration's) weights over steps < k.
    new_before: i64,
}

/// `distinct` inside a recursion (nested time): at inner step `k`, for every
/// value changed so far this iteration, with `In_old`/`In_new` its input's
/// 2-D integral without/with this iteration,
///
/// `Δ[t][k] = (S(In_new[k]) − S(In_new[k−1])) − (S(In_old[k]) − S(In_old[k−1]))`
///
/// where `S(x) = 1 if x > 0 else 0`; the input is stored per inner step.
fn nested_distinct<'q, T: Data, S: Scope>(
    stream: Stream<'q, ZSet<T>, S>,
) -> Stream<'q, ZSet<T>, S> {
    let q = stream.query();
    let path = stream.path().suffixed(".distinct");
    let state = q.declare_zset::<S::Row<T>>(path.child("input"), true, Vec::new());
    stream.apply_ctx(
        &[],
        "distinct",
        vec![state],
        Some(path),
        move |ctx, ins: &[&Slot]| {
            let d = ctx.zset::<S::Row<T>>(ins[0])?.into_owned();
            let k = ctx.step();
            let mut scratch = std::mem::take(ctx.scratch::<NestedDistinctScratch<S::Row<T>>>());
            let new: Vec<S::Row<T>> = d
                .values()
                .filter(|v| !scratch.touched.contains_key(*v))
                .cloned()
                .collect();
            if !new.is_empty() {
                let mut fetched: HashMap<S::Row<T>, Touched> = new
                    .iter()
                    .map(|v| (v.clone(), Touched::default()))
                    .collect();
                for row in ctx.read::<S::Row<T>>(state, Read::ByValues { values: &new })? {
                    if let Some(t) = fetched.get_mut(&row.value) {
                        t.stored.push((row.step, row.weight));
                    }
                }
                for (v, mut t) in fetched {
                    // Untouched until now: old and new agree on every step < k.
                    let before: i64 = t
                        .stored
                        .iter()
                        .filter(|(s, _)| *s < k)
                        .map(|(_, w)| w)
                        .sum();
                    t.old_before = before;
                    t.new_before = before;
                    scratch.touched.insert(v, t);
                }
            }
            let mut out = ZSet::new();
            for (v, t) in &mut scratch.touched {
                let stored_k: i64 =
                    weight::sum(t.stored.iter().filter(|(s, _)| *s == k).map(|(_, w)| *w));
                let old_k = weight::add(t.old_before, stored_k);
                let new_k = weight::add(weight::add(t.new_before, stored_k), d.get(v));
                let w = crossing(t.new_before, new_k) - crossing(t.old_before, old_k);
                out.update_ref(v, w);
                t.old_before = old_k;
                t.new_before = new_k;
            }
            if !d.is_empty() {
                ctx.write(state, Box::new(Stepped { step: k, delta: d }));
            }
            *ctx.scratch::<NestedDistinctScratch<S::Row<T>>>() = scratch;
            Ok(out)
        },
    )
}
