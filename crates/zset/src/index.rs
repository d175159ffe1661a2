//! Named key extractors.

use std::fmt;
use std::sync::Arc;

use crate::{IndexKey, KeyColumn};

/// What identifies an index: its name, the names of its key parts and the
/// key's column types. Never the closure: two indexes with equal specs are
/// the same index (that is how two joins on the same stream end up sharing
/// one stored state).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexSpec {
    /// The index's name.
    pub name: Arc<str>,
    /// One name per key column.
    pub parts: Vec<Arc<str>>,
    /// The key's columns, in order.
    pub columns: Vec<KeyColumn>,
    /// The Rust key type, for messages.
    pub key_type: &'static str,
}

impl IndexSpec {
    /// Whether `parts` has one name per column. Graph building rejects
    /// indexes where it does not.
    pub fn is_well_formed(&self) -> bool {
        self.parts.len() == self.columns.len()
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        for (i, (part, col)) in self.parts.iter().zip(&self.columns).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{part}: {col}")?;
        }
        f.write_str(")")
    }
}

/// A named key extractor: how stored state is read in key order and looked
/// up by key.
///
/// `Index::new` needs the row type spelled in its closure (`|u: &User|`);
/// [`IndexOf`] names it from the type instead: `User::index("id", |u| u.id)`.
///
/// `K` is an [`IndexKey`]: one typed column, or a tuple of them. Wrap a part
/// in [`Desc`](crate::Desc) to order it descending; `Option` parts sort
/// `None` first.
///
/// ```
/// use stepping_zset::{Desc, Index, ZSet, zset};
/// let by_len = Index::new("len", |s: &String| Desc(s.len() as i64));
/// let z: ZSet<String> = zset! { "aa".to_string() => 1, "b".to_string() => 2, "ccc".to_string() => 1 };
/// let keys: Vec<i64> = z.iter_by_index(&by_len, None).into_iter().map(|(k, _, _)| k).collect();
/// assert_eq!(keys, [3, 2, 1]);
/// ```
pub struct Index<T, K> {
    inner: Arc<Inner<T, K>>,
}

type KeyFn<T, K> = dyn Fn(&T) -> K + Send + Sync;

struct Inner<T, K> {
    spec: IndexSpec,
    key: Box<KeyFn<T, K>>,
}

impl<T, K: IndexKey> Index<T, K> {
    /// An index called `name`. A one-column key's column is called `name`;
    /// the columns of a tuple key are `name_0`, `name_1`, ...
    pub fn new(name: &str, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Self {
        let columns = Self::key_columns();
        let parts = if columns.len() == 1 {
            vec![Arc::from(name)]
        } else {
            (0..columns.len())
                .map(|i| Arc::from(format!("{name}_{i}")))
                .collect()
        };
        Self::build(name, parts, columns, key)
    }

    /// An index called `name` whose key columns are called `parts` (one name
    /// per column; graph building reports a mismatch as an error).
    ///
    /// ```
    /// use stepping_zset::Index;
    /// let ix = Index::with_parts("group", &["user_id", "day"], |r: &(i64, i64, String)| (r.0, r.1));
    /// assert_eq!(ix.spec().parts.len(), 2);
    /// ```
    pub fn with_parts(
        name: &str,
        parts: &[&str],
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Self {
        let parts = parts.iter().map(|p| Arc::from(*p)).collect();
        Self::build(name, parts, Self::key_columns(), key)
    }

    fn key_columns() -> Vec<KeyColumn> {
        let mut columns = Vec::new();
        K::columns(&mut columns);
        columns
    }

    fn build(
        name: &str,
        parts: Vec<Arc<str>>,
        columns: Vec<KeyColumn>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> Self {
        let spec = IndexSpec {
            name: Arc::from(name),
            parts,
            columns,
            key_type: std::any::type_name::<K>(),
        };
        Index {
            inner: Arc::new(Inner {
                spec,
                key: Box::new(key),
            }),
        }
    }
}

impl<T, K> Index<T, K> {
    /// The key of `value`.
    pub fn key(&self, value: &T) -> K {
        (self.inner.key)(value)
    }

    /// The index's identity: names and column types.
    pub fn spec(&self) -> &IndexSpec {
        &self.inner.spec
    }

    /// The index's name.
    pub fn name(&self) -> &str {
        &self.inner.spec.name
    }
}

impl<T, K> Clone for Index<T, K> {
    fn clone(&self) -> Self {
        Index {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T, K> fmt::Debug for Index<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Index({})", self.inner.spec)
    }
}

impl<T, K> PartialEq for Index<T, K> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.spec == other.inner.spec
    }
}

impl<T, K> Eq for Index<T, K> {}

/// Indexes named from their row type, so that the key closure needs no
/// annotation: `User::index("user_id", |u| u.user_id)` in place of
/// `Index::new("user_id", |u: &User| u.user_id)` (Rust infers a closure's
/// argument type from where the closure is passed, and `Index::new` alone
/// does not say the row type). Implemented for every type.
///
/// ```
/// use stepping_zset::{Index, IndexOf, ZSet, zset};
/// #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
/// struct User { id: i64, name: String }
/// let by_id = User::index("id", |u| u.id);
/// let by_name_len = <(i64, String)>::index("len", |r| r.1.len() as i64);
/// assert_eq!(by_id.key(&User { id: 7, name: "ann".into() }), 7);
/// assert_eq!(by_name_len.key(&(1, "ann".into())), 3);
/// ```
pub trait IndexOf: Sized {
    /// [`Index::new`] for rows of this type.
    fn index<K: IndexKey>(
        name: &str,
        key: impl Fn(&Self) -> K + Send + Sync + 'static,
    ) -> Index<Self, K> {
        Index::new(name, key)
    }

    /// [`Index::with_parts`] for rows of this type.
    fn index_with_parts<K: IndexKey>(
        name: &str,
        parts: &[&str],
        key: impl Fn(&Self) -> K + Send + Sync + 'static,
    ) -> Index<Self, K> {
        Index::with_parts(name, parts, key)
    }
}

impl<T> IndexOf for T {}
