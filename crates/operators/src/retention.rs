//! Bounded state: a retention bound on a stream's event time, so that the
//! integral an operator keeps of it (a join's side, a distinct's weights)
//! holds only the recent rows and stays the same size on an endless
//! stream. The bound is the *watermark* (the largest event time seen)
//! minus an allowed *lateness*, as dbsp's lateness-driven garbage
//! collection; changes older than it are refused or dropped.

use std::panic::Location;

use graph::{At, Ctx, FlatScope, GraphError, Handle, KeyedDelta, Read, Slot, StateId, Stream};
use zset::{Data, EventTime, Index, ZSet};

/// What [`retain`](Retention::retain) does with a change older than the
/// retention bound (its rows, or the rows it would meet, may have left the
/// state already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Late {
    /// Fail the iteration with [`GraphError::LateChange`] (nothing is
    /// written); the caller decides what to do with the batch.
    Refuse,
    /// Leave the late rows out of the stream, as if they never came.
    Drop,
}

/// `retain`.
pub trait Retention<'q, T: Data, S: FlatScope>: Sized {
    /// This stream, with its state bounded in event time `time(row)`: the
    /// integral any operator keeps of the returned stream (every integral of
    /// a stream is one stored state: a join's side, a distinct's weights, a
    /// cache) holds only rows whose time is at least the *bound*,
    /// `watermark − lateness`, where the watermark is the largest event time
    /// of any change so far (this iteration's included). Rows older than
    /// the bound leave the state when an iteration commits; no retraction is
    /// sent downstream (the rows stay counted in what was computed from them).
    ///
    /// A change (an insert or a removal) whose time is older than the bound
    /// is *late*: with [`Late::Refuse`] the iteration fails with
    /// [`GraphError::LateChange`] and writes nothing; with [`Late::Drop`]
    /// the late rows are left out of the stream. Changes within the
    /// lateness, in any order, are kept.
    ///
    /// Results stay exact as long as every row a change must meet is within
    /// the bound: e.g. a join on a key that includes the event time, or a
    /// lateness larger than how far apart joined rows can be. Rows of
    /// negative weight (removals of rows never added) are not removed.
    ///
    /// As equations, with `t_n` the largest event time of the changes of
    /// iterations `0..=n` and `L` the lateness, the stored integral after
    /// iteration `n` and the stream seen downstream are
    ///
    /// ```text
    /// bound_n   = t_n − L
    /// I'_n      = σ_{time ≥ bound_n}(I'_{n−1} + Δ'_n)       (I'_{−1} = 0)
    /// Δ'_n      = Δ_n                      if no row of Δ_n is older than bound_n
    ///           = σ_{time ≥ bound_n}(Δ_n)  with Late::Drop
    ///           = error                    with Late::Refuse
    /// ```
    ///
    /// which is the DBSP paper's integral `I` with the rows below the
    /// watermark garbage-collected, as dbsp's lateness does.
    ///
    /// Each iteration that moves the watermark reads, through an index by
    /// time on the integral, the rows that leave it (plus one read past
    /// them): the cost follows the rows removed, not the state's size. An
    /// input's own kept integral is not bounded by this: mark the input
    /// [`transient`](graph::Stream::transient) if it should not be kept.
    ///
    /// # Errors
    /// A negative lateness is reported when the query is built
    /// ([`GraphError::InvalidParameter`]).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let at = Index::new("at", |r: &(i64, char)| r.0);
    /// let key = Index::new("key", |r: &(i64, char)| (r.0, r.1.to_string()));
    /// let (graph, (left, right, out)) = Graph::build(|q| {
    ///     let (left, l) = q.input::<(i64, char)>("left")?;
    ///     let (right, r) = q.input::<(i64, char)>("right")?;
    ///     let l = l.transient().retain(&at, 10, Late::Refuse);
    ///     let r = r.transient().retain(&at, 10, Late::Refuse);
    ///     Ok((left, right, q.output("pairs", l.join(r, &key, &key))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &left, [(5, 'a')])?;
    /// graph.insert(&mut store, &left, [(30, 'b'), (25, 'c')])?; // out of order, within 10
    /// let change = graph.insert(&mut store, &right, [(30, 'b')])?;
    /// assert_eq!(change.get(&out)?.len(), 1);
    /// // On the left, time 5 has left the state; on the right it is older
    /// // than 30 − 10: refused, nothing written.
    /// let err = graph.insert(&mut store, &right, [(5, 'a')]).unwrap_err();
    /// assert!(matches!(err, GraphError::LateChange { .. }));
    /// # Ok::<(), GraphError>(())
    /// ```
    fn retain<E: EventTime>(
        self,
        time: &Index<T, E>,
        lateness: i64,
        late: Late,
    ) -> Stream<'q, ZSet<T>, S>;
}

/// The stored watermark, if any change came yet.
fn watermark<E: EventTime>(ctx: &mut Ctx<'_>, state: StateId) -> Result<Option<E>, GraphError> {
    let rows = ctx.read::<E>(
        state,
        Read::ByIndex {
            index: 0,
            keys: &vec![()],
        },
    )?;
    Ok(rows.into_iter().next().map(|r| r.value))
}

/// The bound of watermark `wm`: `wm − lateness`, in units.
fn bound_of<E: EventTime>(wm: &E, lateness: i64) -> i64 {
    wm.units().saturating_sub(lateness)
}

impl<'q, T: Data, S: FlatScope> Retention<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn retain<E: EventTime>(
        self,
        time: &Index<T, E>,
        lateness: i64,
        late: Late,
    ) -> Stream<'q, ZSet<T>, S> {
        let at = At(Location::caller());
        let q = self.query();
        if lateness < 0 {
            q.record_error(GraphError::InvalidParameter {
                operator: "retain",
                detail: format!("the lateness must be 0 or more units, not {lateness}"),
                at,
            });
        }
        let path = self.path().suffixed(".retain");
        let wm = q.declare_keyed::<E, ()>(
            path.child("watermark"),
            Index::with_parts("watermark", &[], |_: &E| ()),
        );
        // The change, checked against the bound of the watermark it moves.
        let check = time.clone();
        let retained = self.apply_ctx(
            &[],
            "retain",
            vec![wm],
            Some(path.clone()),
            move |ctx, ins: &[&Slot]| {
                let delta = ctx.zset::<S::Row<T>>(ins[0])?;
                if delta.is_empty() {
                    return Ok(ZSet::new());
                }
                let newest = delta.values().map(|r| check.key(S::value(r))).max();
                let Some(wm_now) = watermark::<E>(ctx, wm)?.max(newest) else {
                    return Ok(delta.into_owned());
                };
                let bound = bound_of(&wm_now, lateness);
                let is_late = |r: &S::Row<T>| check.key(S::value(r)).units() < bound;
                let first_late = match late {
                    Late::Refuse => delta.values().find(|r| is_late(r)).cloned(),
                    Late::Drop => None,
                };
                if let Some(r) = first_late {
                    return Err(GraphError::LateChange {
                        path: ctx.path().clone(),
                        time: format!("{:?}", check.key(S::value(&r))),
                        bound: E::from_units(bound)
                            .map_or_else(|| format!("{bound} units"), |b| format!("{b:?}")),
                        watermark: format!("{wm_now:?}"),
                    });
                }
                match late {
                    Late::Refuse => Ok(delta.into_owned()),
                    Late::Drop => Ok(delta.filter(|r| !is_late(r))),
                }
            },
        );
        // The retained stream's integral, with an index by time (whatever
        // other indexes its readers give it) to find its oldest rows.
        let by_time_key = time.clone();
        let parts: Vec<String> = time.spec().parts.iter().map(|p| p.to_string()).collect();
        let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let by_time: Index<S::Row<T>, E> =
            Index::with_parts(time.name(), &part_refs, move |r: &S::Row<T>| {
                by_time_key.key(S::value(r))
            });
        let (_, before) = retained.raw_integrate(&[&by_time]);
        let time = time.clone();
        let evict = retained.apply_ctx::<T>(
            &[before.id()],
            "evict",
            vec![wm],
            Some(path.child("evict")),
            move |ctx, ins: &[&Slot]| {
                let delta = ctx.zset::<S::Row<T>>(ins[0])?;
                let newest = delta.values().map(|r| time.key(S::value(r))).max();
                let old = watermark::<E>(ctx, wm)?;
                let wm_now = match (old, newest) {
                    (old, Some(n)) if old.as_ref().is_none_or(|o| n > *o) => n,
                    // The bound did not move: what is older left already.
                    _ => return Ok(ZSet::new()),
                };
                ctx.write(wm, Box::new(vec![(wm_now, true)] as KeyedDelta<E>));
                let Handle::State { state, .. } = ctx.handle::<S::Row<T>>(ins[1])? else {
                    return Ok(ZSet::new());
                };
                let bound = bound_of(&wm_now, lateness);
                let pos = ctx.index_position(state, by_time.spec())?;
                // The oldest rows, more each time until one is within the
                // bound or none is left: rows older than the bound are read
                // about once, when they leave.
                let mut limit = (2 * delta.len()).max(64);
                let leaving = loop {
                    let rows = ctx.read::<S::Row<T>>(
                        state,
                        Read::FirstByIndex {
                            index: pos,
                            prefixes: None,
                            limit,
                        },
                    )?;
                    let all = rows.len() < limit;
                    let past = rows
                        .iter()
                        .any(|r| time.key(S::value(&r.value)).units() >= bound);
                    if all || past {
                        break rows;
                    }
                    limit = limit.saturating_mul(2);
                };
                let gone: ZSet<S::Row<T>> = leaving
                    .into_iter()
                    .filter(|r| time.key(S::value(&r.value)).units() < bound)
                    .map(|r| (r.value, -r.weight))
                    .collect();
                if !gone.is_empty() {
                    ctx.write(state, Box::new(gone));
                }
                Ok(ZSet::new())
            },
        );
        evict.raw_sink();
        retained
    }
}
