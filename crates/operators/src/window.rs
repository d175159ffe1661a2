//! Time windows over an event time (the DBSP paper's window aggregates):
//! tumbling and hopping windows, which tag each row with the start of every
//! window it falls in (linear, so free to maintain), and a rolling
//! aggregate over the last `W` units per key (as dbsp's
//! `partitioned_rolling_aggregate`).
//!
//! Times are any [`EventTime`] (integers, dates, timestamps); widths are in
//! its units (see [`EventTime`]).

use hashbrown::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::hash::Hash;
use std::panic::Location;

use graph::{At, Ctx, FlatScope, GraphError, Scope, Slot, Stream};
use zset::{Data, EventTime, Index, IndexKey, Pair, ZSet};

use crate::Grouping;

/// `tumbling`, `hopping` and `rolling`.
pub trait Windows<'q, T: Data, S: Scope>: Sized {
    /// Every row tagged with the start of the one window of `width` units
    /// it falls in: windows are `[k·width, (k + 1)·width)` in units of its
    /// event time `time(row)`. Group by the tag (with any other key) and
    /// apply any aggregate to get per-window results. Linear: nothing is
    /// stored.
    ///
    /// # Errors
    /// A width that is not positive is reported when the query is built
    /// ([`GraphError::InvalidParameter`]); a window start that the time's
    /// type cannot hold fails the iteration
    /// ([`GraphError::TimeOutOfRange`]).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_window = Index::new("window", |p: &Pair<(i64, i64), i64>| p.right);
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, sales) = q.input::<(i64, i64)>("sales")?; // (time, amount)
    ///     let per_window = sales.tumbling(|s| s.0, 10).group_reduce_flatten(&by_window, 0i64, |p| p.left.1);
    ///     Ok((input, q.output("per_window", per_window)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [(3, 5), (9, 1), (12, 7)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(6, 0) => 1, Pair::new(7, 10) => 1 });
    /// // Deleting a window's contents removes the window.
    /// let change = graph.remove(&mut store, &input, [(12, 7)])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(7, 10) => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn tumbling<E: EventTime>(
        self,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
    ) -> Stream<'q, ZSet<Pair<T, E>>, S>;

    /// Every row tagged with the start of each window of `width` units it
    /// falls in, windows starting every `hop` units: `[k·hop, k·hop + width)`
    /// for every integer `k`. A row is in about `width / hop` windows
    /// (`hop = width` is [`tumbling`](Self::tumbling)). Linear: nothing is
    /// stored.
    ///
    /// # Errors
    /// As for [`tumbling`](Self::tumbling), also for a `hop` that is not positive.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, events) = q.input::<i64>("events")?;
    ///     Ok((input, q.output("tagged", events.hopping(|t| *t, 10, 5))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let change = graph.insert(&mut store, &input, [7])?;
    /// assert_eq!(change.get(&out)?, &zset! { Pair::new(7, 0) => 1, Pair::new(7, 5) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn hopping<E: EventTime>(
        self,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
        hop: i64,
    ) -> Stream<'q, ZSet<Pair<T, E>>, S>;

    /// A rolling aggregate per key: for each key `by(row)` and each event
    /// time `t` at which the key has a row of positive weight, one row
    /// `Pair((t, aggregate(window)), key)`, where `window` holds the key's
    /// rows (with their weights) whose time is in `(t − width, t]`: SQL's
    /// `RANGE BETWEEN width − 1 PRECEDING AND CURRENT ROW` per key, one row
    /// per key and time.
    ///
    /// Incremental: the stream's integral is stored with an index by key
    /// and time bucket (`⌊t / width⌋`); a change at time `t` affects only
    /// the points in `[t, t + width)`, whose windows lie in the three
    /// buckets around `t`, so it reads those rows of its key, never the
    /// key's whole history.
    ///
    /// # Errors
    /// As for [`tumbling`](Self::tumbling).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_meter = Index::new("meter", |r: &(char, i64, i64)| r.0.to_string());
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, reads) = q.input::<(char, i64, i64)>("reads")?; // (meter, time, value)
    ///     let sums = reads.rolling(&by_meter, |r| r.1, 3, |w: &ZSet<(char, i64, i64)>| {
    ///         w.iter().map(|(r, n)| r.2 * n).sum::<i64>()
    ///     });
    ///     Ok((input, q.output("last3", sums)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let m = "m".to_string();
    /// let change = graph.insert(&mut store, &input, [('m', 1, 10), ('m', 2, 20), ('m', 5, 50)])?;
    /// assert_eq!(change.get(&out)?, &zset! {
    ///     Pair::new((1, 10), m.clone()) => 1,
    ///     Pair::new((2, 30), m.clone()) => 1,
    ///     Pair::new((5, 50), m.clone()) => 1,
    /// });
    /// // A late read at time 4 joins the windows ending at 4 and 5.
    /// let change = graph.insert(&mut store, &input, [('m', 4, 40)])?;
    /// assert_eq!(change.get(&out)?, &zset! {
    ///     Pair::new((4, 60), m.clone()) => 1,
    ///     Pair::new((5, 50), m.clone()) => -1,
    ///     Pair::new((5, 90), m.clone()) => 1,
    /// });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn rolling<K: IndexKey + Hash, E: EventTime, A: Data>(
        self,
        by: &Index<T, K>,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
        aggregate: impl Fn(&ZSet<T>) -> A + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<(E, A), K>>, S>
    where
        S: FlatScope;
}

/// Records an error for a width or hop that is not positive.
fn check_positive<T, S>(
    stream: &Stream<'_, T, S>,
    operator: &'static str,
    what: &str,
    n: i64,
    at: At,
) {
    if n <= 0 {
        stream.query().record_error(GraphError::InvalidParameter {
            operator,
            detail: format!("the {what} must be a positive number of units, not {n}"),
            at,
        });
    }
}

/// The time `units` units after the origin, or the error naming the
/// vertex and the event time (`row_units`) whose window needs it.
fn time_at<E: EventTime>(ctx: &Ctx<'_>, row_units: i128, units: i128) -> Result<E, GraphError> {
    i64::try_from(units)
        .ok()
        .and_then(E::from_units)
        .ok_or_else(|| GraphError::TimeOutOfRange {
            path: ctx.path().clone(),
            detail: format!(
                "the window of the event time at {row_units} units starts at {units} units, \
                 which a {} cannot hold",
                std::any::type_name::<E>()
            ),
        })
}

/// Tags each row with the starts of the windows `[k·hop, k·hop + width)`
/// containing its time.
#[track_caller]
fn windows<'q, T: Data, S: Scope, E: EventTime>(
    stream: Stream<'q, ZSet<T>, S>,
    label: &'static str,
    time: impl Fn(&T) -> E + Send + Sync + 'static,
    width: i64,
    hop: i64,
) -> Stream<'q, ZSet<Pair<T, E>>, S> {
    let at = At(Location::caller());
    check_positive(&stream, label, "width", width, at);
    check_positive(&stream, label, "hop", hop, at);
    let (width, hop) = (i128::from(width.max(1)), i128::from(hop.max(1)));
    stream.apply_ctx(&[], label, Vec::new(), None, move |ctx, ins: &[&Slot]| {
        let delta = ctx.zset::<S::Row<T>>(ins[0])?;
        let mut out = ZSet::with_capacity(delta.len());
        for (row, w) in delta.iter() {
            let t = time(S::value(row));
            let u = i128::from(t.units());
            // The windows containing u: k·hop ≤ u < k·hop + width.
            let last = u.div_euclid(hop);
            let first = (u - width).div_euclid(hop) + 1;
            for k in first..=last {
                let start = time_at(ctx, u, k * hop)?;
                out.update(S::map_row(row, |v| Pair::new(v.clone(), start)), w);
            }
        }
        Ok(out)
    })
}

impl<'q, T: Data, S: Scope> Windows<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn tumbling<E: EventTime>(
        self,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
    ) -> Stream<'q, ZSet<Pair<T, E>>, S> {
        windows(self, "tumbling", time, width, width)
    }

    #[track_caller]
    fn hopping<E: EventTime>(
        self,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
        hop: i64,
    ) -> Stream<'q, ZSet<Pair<T, E>>, S> {
        windows(self, "hopping", time, width, hop)
    }

    #[track_caller]
    fn rolling<K: IndexKey + Hash, E: EventTime, A: Data>(
        self,
        by: &Index<T, K>,
        time: impl Fn(&T) -> E + Send + Sync + 'static,
        width: i64,
        aggregate: impl Fn(&ZSet<T>) -> A + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<Pair<(E, A), K>>, S>
    where
        S: FlatScope,
    {
        let at = At(Location::caller());
        check_positive(&self, "rolling", "width", width, at);
        let w = i128::from(width.max(1));
        let grouped = self.group(by);
        let mut parts = crate::group_parts(&grouped);
        parts.push("bucket".to_owned());
        let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let time = std::sync::Arc::new(time);
        let (by_key, bucket_time) = (by.clone(), std::sync::Arc::clone(&time));
        // A bucket is an i64 however wide the time's units: W ≥ 1.
        let bucket_of = move |u: i64| (i128::from(u).div_euclid(w)) as i64;
        let buckets: Index<S::Row<T>, ((S::Key, K), i64)> = Index::with_parts(
            &format!("rolling_w{width}"),
            &part_refs,
            move |row: &S::Row<T>| {
                let value = S::value(row);
                (
                    (S::key(row), by_key.key(value)),
                    bucket_of(bucket_time(value).units()),
                )
            },
        );
        let (_, before) = self.raw_integrate(&[&buckets]);
        let path = grouped.path().suffixed(".rolling").suffixed(".flatten");
        let by = by.clone();
        self.apply_ctx(
            &[before.id()],
            "rolling",
            Vec::new(),
            Some(path),
            move |ctx, ins: &[&Slot]| {
                let delta = ctx.zset::<S::Row<T>>(ins[0])?;
                if delta.is_empty() {
                    return Ok(ZSet::new());
                }
                type Group<S, K> = (<S as Scope>::Key, K);
                // Per key: the points the change affects ([t, t + W) of
                // each changed time t), and the buckets to read.
                let mut spans: HashMap<Group<S, K>, Vec<(i128, i128)>> = HashMap::new();
                let mut keys: HashSet<(Group<S, K>, i64)> = HashSet::new();
                for row in delta.values() {
                    let g = (S::key(row), by.key(S::value(row)));
                    let u = i128::from(time(S::value(row)).units());
                    let b = u.div_euclid(w);
                    for nb in [b - 1, b, b + 1] {
                        if let Ok(nb) = i64::try_from(nb) {
                            keys.insert((g.clone(), nb));
                        }
                    }
                    spans.entry(g).or_default().push((u, u + w));
                }
                let stored = ctx.lookup_rows(ins[1], &buckets, keys.into_iter().collect())?;
                // Per key: its rows by time, before and after the change.
                let mut old: HashMap<Group<S, K>, BTreeMap<i128, ZSet<T>>> = HashMap::new();
                for (row, wt) in &stored {
                    let g = (S::key(row), by.key(S::value(row)));
                    let u = i128::from(time(S::value(row)).units());
                    old.entry(g)
                        .or_default()
                        .entry(u)
                        .or_default()
                        .update_ref(S::value(row), *wt);
                }
                let mut new = old.clone();
                for (row, wt) in delta.iter() {
                    let g = (S::key(row), by.key(S::value(row)));
                    let u = i128::from(time(S::value(row)).units());
                    let at_time = new.entry(g).or_default().entry(u).or_default();
                    at_time.update_ref(S::value(row), wt);
                }
                let empty = BTreeMap::new();
                let mut out = ZSet::new();
                for (g, ranges) in spans {
                    let (before, after) =
                        (old.get(&g).unwrap_or(&empty), new.get(&g).unwrap_or(&empty));
                    // Every point in an affected range, present before or after.
                    let mut points: Vec<i128> = Vec::new();
                    for (from, to) in ranges {
                        for rows in [before, after] {
                            points.extend(
                                rows.range(from..to)
                                    .filter(|(_, z)| z.iter().any(|(_, wt)| wt > 0))
                                    .map(|(u, _)| *u),
                            );
                        }
                    }
                    points.sort_unstable();
                    points.dedup();
                    for p in points {
                        let value = |rows: &BTreeMap<i128, ZSet<T>>| -> Option<A> {
                            let here = rows.get(&p)?;
                            if !here.iter().any(|(_, wt)| wt > 0) {
                                return None;
                            }
                            let mut window = ZSet::new();
                            for (_, z) in rows.range(p - w + 1..=p) {
                                window += z;
                            }
                            Some(aggregate(&window))
                        };
                        let (was, is) = (value(before), value(after));
                        if was == is {
                            continue;
                        }
                        let t = time_at::<E>(ctx, p, p)?;
                        let (outer, k) = g.clone();
                        if let Some(a) = was {
                            out.update(S::wrap(Pair::new((t, a), k.clone()), outer.clone()), -1);
                        }
                        if let Some(a) = is {
                            out.update(S::wrap(Pair::new((t, a), k), outer), 1);
                        }
                    }
                }
                Ok(out)
            },
        )
    }
}
