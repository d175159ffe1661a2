//! `first_n`: the top rows by an index, per group.

use hashbrown::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use graph::{FlatScope, Handle, PrefixIndex, Read, Slot, Stream};
use zset::{Data, Index, IndexKey, ZSet, weight};

/// `first_n`.
pub trait FirstN<'q, T: Data, S: FlatScope>: Sized {
    /// The first `n` rows in `index` order (ties by value), counting weights
    /// (a row of weight 3 is 3 rows; the last one taken is clipped) and
    /// ignoring rows whose weight is not positive.
    ///
    /// Not linear, so it is re-computed over the integral (§11.1): each
    /// iteration reads, for each group in the change, only its first rows
    /// through the index, and outputs the difference from the previous
    /// top `n` (kept as a state).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let by_score = Index::new("score", |s: &(String, i64)| Desc(s.1));
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, scores) = q.input::<(String, i64)>("scores")?;
    ///     Ok((input, q.output("top2", scores.first_n(&by_score, 2))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let row = |n: &str, s| (n.to_string(), s);
    /// graph.insert(&mut store, &input, [row("a", 1), row("b", 5), row("c", 3)])?;
    /// let change = graph.insert(&mut store, &input, [row("d", 4)])?;
    /// assert_eq!(change.get(&out)?, &zset! { row("d", 4) => 1, row("c", 3) => -1 });
    /// let change = graph.remove(&mut store, &input, [row("b", 5)])?;
    /// assert_eq!(change.get(&out)?, &zset! { row("b", 5) => -1, row("c", 3) => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn first_n<K: IndexKey + Hash>(self, index: &Index<T, K>, n: usize) -> Stream<'q, ZSet<T>, S>;
}

impl<'q, T: Data, S: FlatScope> FirstN<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn first_n<K: IndexKey + Hash>(self, index: &Index<T, K>, n: usize) -> Stream<'q, ZSet<T>, S> {
        let q = self.query();
        let group_parts = crate::group_parts(&self);
        let mut parts: Vec<&str> = group_parts.iter().map(String::as_str).collect();
        let own: Vec<String> = index.spec().parts.iter().map(|p| p.to_string()).collect();
        parts.extend(own.iter().map(String::as_str));
        let inner = index.clone();
        let ordered: Index<S::Row<T>, (S::Key, K)> =
            Index::with_parts(index.name(), &parts, move |row: &S::Row<T>| {
                (S::key(row), inner.key(S::value(row)))
            });
        let prefix = PrefixIndex::new(ordered.clone());
        let (integral, _) = self.raw_integrate(&[&prefix]);
        let path = self.path().suffixed(&format!(".first_n({n})"));
        let state_path = self.path().child(&format!("first_n({},{n})", index.name()));
        let group_refs: Vec<&str> = group_parts.iter().map(String::as_str).collect();
        let by_group: Index<S::Row<T>, S::Key> =
            Index::with_parts("group", &group_refs, |row: &S::Row<T>| S::key(row));
        let previous =
            q.declare_zset::<S::Row<T>>(state_path, false, vec![Arc::new(by_group.clone())]);
        self.apply_ctx(
            &[integral.id()],
            "first_n",
            vec![previous],
            Some(path),
            move |ctx, ins: &[&Slot]| {
                let delta = ctx.zset::<S::Row<T>>(ins[0])?;
                if delta.is_empty() {
                    return Ok(ZSet::new());
                }
                // The groups in the change, and how many of their rows it touches.
                let mut touched: HashMap<S::Key, usize> = HashMap::new();
                for row in delta.values() {
                    *touched.entry(S::key(row)).or_default() += 1;
                }
                let groups: Vec<S::Key> = touched.keys().cloned().collect();
                // Each touched stored row can leave the top, so read that many more.
                let limit = n + touched.values().copied().max().unwrap_or(0);
                let mut current: HashMap<S::Key, ZSet<S::Row<T>>> = HashMap::new();
                match ctx.handle::<S::Row<T>>(ins[1])? {
                    Handle::Owned(z) => {
                        for (row, w) in z.iter() {
                            if touched.contains_key(&S::key(row)) {
                                current.entry(S::key(row)).or_default().update_ref(row, w);
                            }
                        }
                    }
                    Handle::State { state, delta } => {
                        let pos = ctx.index_position(state, ordered.spec())?;
                        let delta = delta.cloned().unwrap_or_default();
                        // The change's rows with their exact stored weights: a
                        // row whose stored weight is not positive is not among
                        // the first rows read below, but the change may revive it.
                        let values: Vec<S::Row<T>> = delta.values().cloned().collect();
                        let mut exact: ZSet<S::Row<T>> = ZSet::new();
                        if !values.is_empty() {
                            let read = Read::ByValues { values: &values };
                            for r in ctx.read::<S::Row<T>>(state, read)? {
                                exact.update(r.value, r.weight);
                            }
                        }
                        for (row, w) in delta.iter() {
                            let entry = current.entry(S::key(row)).or_default();
                            entry.update_ref(row, weight::add(w, exact.get(row)));
                        }
                        let read = Read::FirstByIndex {
                            index: pos,
                            prefixes: Some(&groups),
                            limit,
                        };
                        for r in ctx.read::<S::Row<T>>(state, read)? {
                            if !delta.contains(&r.value) {
                                let entry = current.entry(S::key(&r.value)).or_default();
                                entry.update(r.value, r.weight);
                            }
                        }
                    }
                }
                let before = ctx.read::<S::Row<T>>(
                    previous,
                    Read::ByIndex {
                        index: 0,
                        keys: &groups,
                    },
                )?;
                let mut out: ZSet<S::Row<T>> = before
                    .into_iter()
                    .map(|r| (r.value, weight::neg(r.weight)))
                    .collect();
                for rows in current.values() {
                    out += rows.first_n_by(|r| ordered.key(r), n);
                }
                if !out.is_empty() {
                    ctx.write(previous, Box::new(out.clone()));
                }
                Ok(out)
            },
        )
    }
}
