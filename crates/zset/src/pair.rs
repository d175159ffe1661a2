//! Two values side by side: join outputs, group outputs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A left and a right value: the row type of a join (`Pair<L, R>`), of a
/// group (`Pair<V, K>`: value and group key) and of an outer join
/// (`Pair<L, OrEmpty<R>>`).
///
/// Tables render it as two columns, `left` and `right`.
///
/// ```
/// use stepping_zset::Pair;
/// let p = Pair::new(1, "one");
/// assert_eq!((p.left, p.right), (1, "one"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Pair<L, R> {
    /// The left value (a join's left row, a group's aggregate).
    pub left: L,
    /// The right value (a join's right row, a group's key).
    pub right: R,
}

impl<L, R> Pair<L, R> {
    /// Puts `left` and `right` side by side.
    pub fn new(left: L, right: R) -> Self {
        Pair { left, right }
    }
}

impl<L: fmt::Debug, R: fmt::Debug> fmt::Debug for Pair<L, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pair({:?}, {:?})", self.left, self.right)
    }
}

/// The right side of a left outer join row: a matching value, or `Empty`
/// when the left row had no match (the original's `Empty`).
///
/// `Empty` sorts before every value.
///
/// ```
/// use stepping_zset::OrEmpty;
/// let missing: OrEmpty<i32> = OrEmpty::Empty;
/// assert_eq!(missing.as_option(), None);
/// assert_eq!(OrEmpty::Value(3).as_option(), Some(&3));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum OrEmpty<R> {
    /// No matching right row.
    Empty,
    /// A matching right row.
    Value(R),
}

impl<R> OrEmpty<R> {
    /// `Some(value)`, or `None` for `Empty`.
    pub fn as_option(&self) -> Option<&R> {
        match self {
            OrEmpty::Empty => None,
            OrEmpty::Value(r) => Some(r),
        }
    }

    /// Whether this is `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, OrEmpty::Empty)
    }
}

impl<R> From<Option<R>> for OrEmpty<R> {
    fn from(value: Option<R>) -> Self {
        match value {
            None => OrEmpty::Empty,
            Some(r) => OrEmpty::Value(r),
        }
    }
}
