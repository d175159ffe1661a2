//! Index keys as typed columns.
//!
//! An index key is a tuple of *parts*; each part is one SQL column of a known
//! type (so a person can read and filter state with plain SQL) and a known
//! direction. The Rust order of a key ([`Ord`]) is the order every store
//! reads in: SQL stores declare each column so that their order never
//! disagrees with it (Postgres text is `COLLATE "C"`, `NULL`s sort first when
//! ascending, NaN sorts last), and the typed layer re-sorts ties exactly.

use std::cmp::Ordering;
use std::fmt;

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Data, F64};

/// The SQL type of one key column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ColumnType {
    /// `BOOLEAN` (Postgres) / `INTEGER` 0 or 1 (SQLite).
    Bool,
    /// `BIGINT`.
    Int,
    /// `DOUBLE PRECISION` / `REAL`.
    Float,
    /// `TEXT` (byte order).
    Text,
    /// `BYTEA` / `BLOB`.
    Bytes,
    /// `UUID` / 16-byte `BLOB`.
    Uuid,
    /// `DATE` / ISO-8601 `TEXT`.
    Date,
    /// `TIMESTAMP` / ISO-8601 `TEXT`.
    Timestamp,
}

impl ColumnType {
    /// A short lowercase name, used in stored shapes and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Text => "text",
            ColumnType::Bytes => "bytes",
            ColumnType::Uuid => "uuid",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// One key column: its type, direction and whether it can be `NULL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyColumn {
    /// The SQL type.
    pub ty: ColumnType,
    /// Whether the index orders this column descending ([`Desc`]).
    pub descending: bool,
    /// Whether the column holds `NULL` (an `Option` part).
    pub nullable: bool,
}

impl fmt::Display for KeyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ty.name())?;
        if self.nullable {
            f.write_str("?")?;
        }
        if self.descending {
            f.write_str(" desc")?;
        }
        Ok(())
    }
}

/// The value of one key column, as stores bind it (serializable, so a
/// store can keep encoded rows aside, e.g. in an undo log).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyValue {
    /// `NULL` (an `Option` part that is `None`).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(F64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A UUID.
    Uuid(Uuid),
    /// A calendar date.
    Date(NaiveDate),
    /// A date and time without zone.
    Timestamp(NaiveDateTime),
}

impl KeyValue {
    /// The year of a date or timestamp; `None` for other values.
    pub fn year(&self) -> Option<i32> {
        use chrono::Datelike;
        match self {
            KeyValue::Date(d) => Some(d.year()),
            KeyValue::Timestamp(t) => Some(t.year()),
            _ => None,
        }
    }
}

/// What the stores' limits look at in a key, gathered without building its
/// [`KeyValue`]s (which copy text and bytes): the checks run on every row a
/// state is given, so they must not allocate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyScan {
    /// The bytes of the key's text and bytes parts, together.
    pub bytes: usize,
    /// Whether a text part holds a NUL character.
    pub nul: bool,
    /// The smallest and largest year of its date and timestamp parts.
    pub years: Option<(i32, i32)>,
}

impl KeyScan {
    /// Adds one column value.
    pub fn value(&mut self, value: &KeyValue) {
        match value {
            KeyValue::Text(t) => self.text(t),
            KeyValue::Bytes(b) => self.bytes += b.len(),
            v => {
                if let Some(year) = v.year() {
                    self.year(year);
                }
            }
        }
    }

    /// Adds a text part.
    pub fn text(&mut self, text: &str) {
        self.bytes += text.len();
        self.nul |= text.contains('\0');
    }

    /// Adds a date or timestamp part's year.
    pub fn year(&mut self, year: i32) {
        self.years = Some(match self.years {
            None => (year, year),
            Some((lo, hi)) => (lo.min(year), hi.max(year)),
        });
    }
}

/// A type that is exactly one key column.
///
/// Implemented for `bool`, the signed integers and `u8`/`u16`/`u32`,
/// [`F64`], `String`, `Vec<u8>`, [`Uuid`], [`NaiveDate`], [`NaiveDateTime`],
/// and for `Option<P>` (nullable, `None` first) and [`Desc<P>`] (descending)
/// of those. `u64`/`usize` are left out on purpose: SQL `BIGINT` cannot keep
/// their order above `i64::MAX`.
pub trait KeyPart: Data {
    /// This part without its [`Desc`] wrappers (`Desc<i64>` → `i64`): what
    /// reads take and return, so that a descending order never leaks into
    /// the keys a caller handles.
    type Plain: Data;
    /// This part's column.
    fn column() -> KeyColumn;
    /// This part's value.
    fn value(&self) -> KeyValue;
    /// Adds this part to `scan` (by default through [`value`](Self::value)).
    fn scan(&self, scan: &mut KeyScan) {
        scan.value(&self.value());
    }
    /// The part of a plain key (wrapping it in `Desc` where the index does).
    fn from_plain(plain: Self::Plain) -> Self;
    /// The plain key of this part (unwrapping every `Desc`).
    fn into_plain(self) -> Self::Plain;
}

/// A key an [`Index`](crate::Index) extracts: one [`KeyPart`], or a tuple of
/// keys (flattened into consecutive columns), or `()` (no columns).
pub trait IndexKey: Data {
    /// This key without its [`Desc`] wrappers: the type reads by key take
    /// and return (`(i64, Desc<String>)` → `(i64, String)`; a key without
    /// `Desc` is its own plain key).
    type Plain: Data;
    /// Appends this key type's columns, in order.
    fn columns(out: &mut Vec<KeyColumn>);
    /// Appends this key's column values, in the order of [`columns`](Self::columns).
    fn values(&self, out: &mut Vec<KeyValue>);
    /// Adds this key's parts to `scan` (by default through
    /// [`values`](Self::values)).
    fn scan(&self, scan: &mut KeyScan) {
        let mut values = Vec::new();
        self.values(&mut values);
        for v in &values {
            scan.value(v);
        }
    }
    /// The key of a plain key (wrapping parts in `Desc` where the index does).
    fn from_plain(plain: Self::Plain) -> Self;
    /// The plain key of this key (unwrapping every `Desc`).
    fn into_plain(self) -> Self::Plain;
}

macro_rules! key_part {
    ($t:ty, $ty:ident, |$v:ident| $e:expr) => {
        key_part!($t, $ty, |$v| $e, |s, scan| scan.value(&KeyPart::value(s)));
    };
    ($t:ty, $ty:ident, |$v:ident| $e:expr, |$s:ident, $scan:ident| $sc:expr) => {
        impl KeyPart for $t {
            type Plain = $t;
            fn column() -> KeyColumn {
                KeyColumn {
                    ty: ColumnType::$ty,
                    descending: false,
                    nullable: false,
                }
            }
            fn value(&self) -> KeyValue {
                let $v = self;
                $e
            }
            fn scan(&self, $scan: &mut KeyScan) {
                let $s = self;
                $sc
            }
            fn from_plain(plain: $t) -> Self {
                plain
            }
            fn into_plain(self) -> $t {
                self
            }
        }
        impl IndexKey for $t {
            type Plain = $t;
            fn columns(out: &mut Vec<KeyColumn>) {
                out.push(<$t as KeyPart>::column());
            }
            fn values(&self, out: &mut Vec<KeyValue>) {
                out.push(KeyPart::value(self));
            }
            fn scan(&self, scan: &mut KeyScan) {
                KeyPart::scan(self, scan);
            }
            fn from_plain(plain: $t) -> Self {
                plain
            }
            fn into_plain(self) -> $t {
                self
            }
        }
    };
}

key_part!(bool, Bool, |v| KeyValue::Bool(*v));
key_part!(i8, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(i16, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(i32, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(i64, Int, |v| KeyValue::Int(*v));
key_part!(u8, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(u16, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(u32, Int, |v| KeyValue::Int(i64::from(*v)));
key_part!(F64, Float, |v| KeyValue::Float(*v));
key_part!(String, Text, |v| KeyValue::Text(v.clone()), |s, scan| {
    scan.text(s)
});
key_part!(Vec<u8>, Bytes, |v| KeyValue::Bytes(v.clone()), |s, scan| {
    scan.bytes += s.len()
});
key_part!(Uuid, Uuid, |v| KeyValue::Uuid(*v));
key_part!(NaiveDate, Date, |v| KeyValue::Date(*v), |s, scan| {
    scan.year(chrono::Datelike::year(s))
});
key_part!(
    NaiveDateTime,
    Timestamp,
    |v| KeyValue::Timestamp(*v),
    |s, scan| scan.year(chrono::Datelike::year(s))
);

impl<P: KeyPart> KeyPart for Option<P> {
    type Plain = Option<P::Plain>;
    fn column() -> KeyColumn {
        KeyColumn {
            nullable: true,
            ..P::column()
        }
    }
    fn value(&self) -> KeyValue {
        match self {
            None => KeyValue::Null,
            Some(p) => p.value(),
        }
    }
    fn scan(&self, scan: &mut KeyScan) {
        if let Some(p) = self {
            p.scan(scan);
        }
    }
    fn from_plain(plain: Option<P::Plain>) -> Self {
        plain.map(P::from_plain)
    }
    fn into_plain(self) -> Option<P::Plain> {
        self.map(P::into_plain)
    }
}

impl<P: KeyPart> IndexKey for Option<P> {
    type Plain = Option<P::Plain>;
    fn columns(out: &mut Vec<KeyColumn>) {
        out.push(<Self as KeyPart>::column());
    }
    fn values(&self, out: &mut Vec<KeyValue>) {
        out.push(KeyPart::value(self));
    }
    fn scan(&self, scan: &mut KeyScan) {
        KeyPart::scan(self, scan);
    }
    fn from_plain(plain: Option<P::Plain>) -> Self {
        <Self as KeyPart>::from_plain(plain)
    }
    fn into_plain(self) -> Option<P::Plain> {
        <Self as KeyPart>::into_plain(self)
    }
}

/// A key part ordered descending: `Index::new("newest", |r: &Read| Desc(r.at))`.
///
/// `Desc` only orders the index: reads by key take and return the plain
/// key ([`IndexKey::Plain`]), never `Desc(..)`.
///
/// ```
/// use stepping_zset::{Desc, Index, ZSet, zset};
/// let mut v = vec![Desc(1), Desc(3), Desc(2)];
/// v.sort();
/// assert_eq!(v, [Desc(3), Desc(2), Desc(1)]);
/// // Reads: plain keys in, plain keys out, in descending order.
/// let newest = Index::new("at", |r: &(i64, char)| Desc(r.0));
/// let z: ZSet<(i64, char)> = zset! { (1, 'a') => 1, (3, 'c') => 1, (2, 'b') => 1 };
/// let keys: Vec<i64> = z.iter_by_index(&newest, Some(&[1, 3])).into_iter().map(|r| r.0).collect();
/// assert_eq!(keys, [3, 1]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Desc<P>(pub P);

impl<P: Ord> PartialOrd for Desc<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P: Ord> Ord for Desc<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

impl<P: KeyPart> KeyPart for Desc<P> {
    type Plain = P::Plain;
    fn column() -> KeyColumn {
        let inner = P::column();
        KeyColumn {
            descending: !inner.descending,
            ..inner
        }
    }
    fn value(&self) -> KeyValue {
        self.0.value()
    }
    fn scan(&self, scan: &mut KeyScan) {
        self.0.scan(scan);
    }
    fn from_plain(plain: P::Plain) -> Self {
        Desc(P::from_plain(plain))
    }
    fn into_plain(self) -> P::Plain {
        self.0.into_plain()
    }
}

impl<P: KeyPart> IndexKey for Desc<P> {
    type Plain = P::Plain;
    fn columns(out: &mut Vec<KeyColumn>) {
        out.push(<Self as KeyPart>::column());
    }
    fn values(&self, out: &mut Vec<KeyValue>) {
        out.push(KeyPart::value(self));
    }
    fn scan(&self, scan: &mut KeyScan) {
        KeyPart::scan(self, scan);
    }
    fn from_plain(plain: P::Plain) -> Self {
        <Self as KeyPart>::from_plain(plain)
    }
    fn into_plain(self) -> P::Plain {
        <Self as KeyPart>::into_plain(self)
    }
}

impl IndexKey for () {
    type Plain = ();
    fn columns(_out: &mut Vec<KeyColumn>) {}
    fn values(&self, _out: &mut Vec<KeyValue>) {}
    fn scan(&self, _scan: &mut KeyScan) {}
    fn from_plain(_plain: ()) -> Self {}
    fn into_plain(self) {}
}

macro_rules! key_tuple {
    ($($name:ident),+) => {
        impl<$($name: IndexKey),+> IndexKey for ($($name,)+) {
            type Plain = ($($name::Plain,)+);
            fn columns(out: &mut Vec<KeyColumn>) {
                $($name::columns(out);)+
            }
            #[allow(non_snake_case)]
            fn values(&self, out: &mut Vec<KeyValue>) {
                let ($($name,)+) = self;
                $($name.values(out);)+
            }
            #[allow(non_snake_case)]
            fn scan(&self, scan: &mut KeyScan) {
                let ($($name,)+) = self;
                $($name.scan(scan);)+
            }
            #[allow(non_snake_case)]
            fn from_plain(plain: Self::Plain) -> Self {
                let ($($name,)+) = plain;
                ($($name::from_plain($name),)+)
            }
            #[allow(non_snake_case)]
            fn into_plain(self) -> Self::Plain {
                let ($($name,)+) = self;
                ($($name.into_plain(),)+)
            }
        }
    };
}

key_tuple!(A);
key_tuple!(A, B);
key_tuple!(A, B, C);
key_tuple!(A, B, C, D);
key_tuple!(A, B, C, D, E);
key_tuple!(A, B, C, D, E, F);
key_tuple!(A, B, C, D, E, F, G);
key_tuple!(A, B, C, D, E, F, G, H);

#[cfg(test)]
mod tests {
    use super::*;

    fn cols<K: IndexKey>() -> Vec<KeyColumn> {
        let mut out = Vec::new();
        K::columns(&mut out);
        out
    }

    #[test]
    fn tuples_flatten_and_units_vanish() {
        let c = cols::<((), (i64, Desc<Option<String>>), F64)>();
        let shown: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["int", "text? desc", "float"]);
        let mut v = Vec::new();
        ((), (3i64, Desc(None::<String>)), F64::new(1.5)).values(&mut v);
        assert_eq!(
            v,
            [
                KeyValue::Int(3),
                KeyValue::Null,
                KeyValue::Float(F64::new(1.5))
            ]
        );
    }

    #[test]
    fn option_sorts_none_first_and_desc_reverses_it() {
        let mut v = vec![Some(2), None, Some(1)];
        v.sort();
        assert_eq!(v, [None, Some(1), Some(2)]);
        let mut d = vec![Desc(Some(2)), Desc(None), Desc(Some(1))];
        d.sort();
        assert_eq!(d, [Desc(Some(2)), Desc(Some(1)), Desc(None)]);
    }
}
