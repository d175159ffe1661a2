//! Scopes: where a stream lives, and so how its rows are represented.
//!
//! A query is built in the [`Root`] scope. `group` moves a stream into a
//! [`Grouped`] scope, where every operator runs *per key* (the original's
//! `per_group`): a grouped stream of `ZSet<T>` is carried at run time as the
//! flattened `ZSet<Pair<T, K>>`, and each operator is built in its per-key
//! form (a per-key join joins on `(group key, join key)`, a per-key
//! aggregate keeps one aggregate per key). Linear operators need no change
//! at all, which is why lifting a sub-query costs nothing at run time, and
//! why a group whose rows all cancel simply disappears (no lingering empty
//! groups). Grouped scopes nest: `Grouped<K2, Grouped<K1>>`.
//!
//! [`Rec`] is the body of a recursion: a nested time dimension (DBSP §6–9),
//! where `join` and `distinct` keep their state per inner step.

use std::marker::PhantomData;

use zset::{Data, Index, IndexKey, Pair};

/// A scope: how a stream's rows are represented and keyed.
pub trait Scope: Send + Sync + 'static {
    /// The key of a row's group (`()` at the root; `(parent key, K)` in a
    /// `Grouped<K, _>`).
    type Key: IndexKey;
    /// The run-time row of a stream of `ZSet<T>` in this scope.
    type Row<T: Data>: Data;
    /// The key of an index lifted into this scope: `K` at the root,
    /// `(group key, K)` in a grouped scope.
    type LiftedKey<K: IndexKey>: IndexKey;
    /// Whether this scope has an inner time (the body of a recursion).
    const NESTED: bool;
    /// Whether this is the root scope (one implicit group that always exists).
    const ROOT: bool;
    /// `index` lifted to run-time rows: the same index at the root; in a
    /// grouped scope, keyed by `(group key, key)` with the group key's
    /// columns (named `group_parts`) first.
    fn lift_index<T: Data, K: IndexKey>(
        index: &Index<T, K>,
        group_parts: &[String],
    ) -> Index<Self::Row<T>, Self::LiftedKey<K>>;
    /// The key of the root's single group (`Some(())` at the root, `None`
    /// elsewhere).
    fn root_key() -> Option<Self::Key>;
    /// The user's value in a row.
    fn value<T: Data>(row: &Self::Row<T>) -> &T;
    /// The row's group key.
    fn key<T: Data>(row: &Self::Row<T>) -> Self::Key;
    /// A row with `value` in group `key`.
    fn wrap<T: Data>(value: T, key: Self::Key) -> Self::Row<T>;
    /// The row with its value replaced by `f(value)`, in the same group.
    fn map_row<T: Data, U: Data>(row: &Self::Row<T>, f: impl FnOnce(&T) -> U) -> Self::Row<U>;
    /// The row taken apart into its value and its group key (the inverse
    /// of [`wrap`](Self::wrap)), without copying the value.
    fn unwrap<T: Data>(row: Self::Row<T>) -> (T, Self::Key);
}

/// The top-level scope: a stream of `ZSet<T>` carries `ZSet<T>`.
#[derive(Debug, Clone, Copy)]
pub struct Root;

impl Scope for Root {
    type Key = ();
    type Row<T: Data> = T;
    type LiftedKey<K: IndexKey> = K;
    const NESTED: bool = false;
    const ROOT: bool = true;
    fn lift_index<T: Data, K: IndexKey>(
        index: &Index<T, K>,
        _group_parts: &[String],
    ) -> Index<T, K> {
        index.clone()
    }
    fn root_key() -> Option<()> {
        Some(())
    }
    fn value<T: Data>(row: &T) -> &T {
        row
    }
    fn key<T: Data>(_row: &T) {}
    fn wrap<T: Data>(value: T, _key: ()) -> T {
        value
    }
    fn map_row<T: Data, U: Data>(row: &T, f: impl FnOnce(&T) -> U) -> U {
        f(row)
    }
    fn unwrap<T: Data>(row: T) -> (T, ()) {
        (row, ())
    }
}

/// The scope of a sub-query run per key `K` of a parent scope `P`.
#[derive(Debug)]
pub struct Grouped<K, P = Root>(PhantomData<fn() -> (K, P)>);

impl<K: IndexKey, P: Scope> Scope for Grouped<K, P> {
    type Key = (P::Key, K);
    type Row<T: Data> = P::Row<Pair<T, K>>;
    type LiftedKey<I: IndexKey> = ((P::Key, K), I);
    const NESTED: bool = P::NESTED;
    const ROOT: bool = false;
    fn lift_index<T: Data, I: IndexKey>(
        index: &Index<T, I>,
        group_parts: &[String],
    ) -> Index<Self::Row<T>, ((P::Key, K), I)> {
        let mut parts: Vec<&str> = group_parts.iter().map(String::as_str).collect();
        let own: Vec<String> = index.spec().parts.iter().map(|p| p.to_string()).collect();
        parts.extend(own.iter().map(String::as_str));
        let inner = index.clone();
        Index::with_parts(index.name(), &parts, move |row: &Self::Row<T>| {
            (Self::key(row), inner.key(Self::value(row)))
        })
    }
    fn root_key() -> Option<(P::Key, K)> {
        None
    }
    fn value<T: Data>(row: &Self::Row<T>) -> &T {
        &P::value(row).left
    }
    fn key<T: Data>(row: &Self::Row<T>) -> (P::Key, K) {
        (P::key(row), P::value(row).right.clone())
    }
    fn wrap<T: Data>(value: T, key: (P::Key, K)) -> Self::Row<T> {
        P::wrap(Pair::new(value, key.1), key.0)
    }
    fn map_row<T: Data, U: Data>(row: &Self::Row<T>, f: impl FnOnce(&T) -> U) -> Self::Row<U> {
        P::map_row(row, |pair: &Pair<T, K>| {
            Pair::new(f(&pair.left), pair.right.clone())
        })
    }
    fn unwrap<T: Data>(row: Self::Row<T>) -> (T, (P::Key, K)) {
        let (pair, outer) = P::unwrap(row);
        (pair.left, (outer, pair.right))
    }
}

/// A scope with flat time (the root and grouped scopes, not a recursion
/// body): where integrals, delays and aggregates can be used.
pub trait FlatScope: Scope {}

impl FlatScope for Root {}

impl<K: IndexKey, P: FlatScope> FlatScope for Grouped<K, P> {}

/// The body of a recursion: rows as at the root, plus an inner time.
#[derive(Debug, Clone, Copy)]
pub struct Rec;

impl Scope for Rec {
    type Key = ();
    type Row<T: Data> = T;
    type LiftedKey<K: IndexKey> = K;
    const NESTED: bool = true;
    const ROOT: bool = false;
    fn lift_index<T: Data, K: IndexKey>(
        index: &Index<T, K>,
        _group_parts: &[String],
    ) -> Index<T, K> {
        index.clone()
    }
    fn root_key() -> Option<()> {
        None
    }
    fn value<T: Data>(row: &T) -> &T {
        row
    }
    fn key<T: Data>(_row: &T) {}
    fn wrap<T: Data>(value: T, _key: ()) -> T {
        value
    }
    fn map_row<T: Data, U: Data>(row: &T, f: impl FnOnce(&T) -> U) -> U {
        f(row)
    }
    fn unwrap<T: Data>(row: T) -> (T, ()) {
        (row, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_groups_wrap_and_unwrap() {
        type G2 = Grouped<String, Grouped<i64>>;
        let row = <G2 as Scope>::wrap('v', (((), 7), "k".to_owned()));
        assert_eq!(row, Pair::new(Pair::new('v', "k".to_owned()), 7));
        assert_eq!(*G2::value(&row), 'v');
        assert_eq!(G2::key(&row), (((), 7), "k".to_owned()));
        assert_eq!(G2::unwrap(row.clone()), ('v', (((), 7), "k".to_owned())));
        let mapped = G2::map_row(&row, |v| v.len_utf8() as i64);
        assert_eq!(mapped, Pair::new(Pair::new(1, "k".to_owned()), 7));
        let by_len = Index::new("len", |v: &char| v.len_utf8() as i64);
        let lifted = G2::lift_index(&by_len, &["day".to_owned(), "name".to_owned()]);
        assert_eq!(lifted.key(&row), ((((), 7), "k".to_owned()), 1));
        let parts: Vec<&str> = lifted.spec().parts.iter().map(|p| &**p).collect();
        assert_eq!(parts, ["day", "name", "len"]);
    }
}
