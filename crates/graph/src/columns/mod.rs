//! A row type as typed SQL columns: how a cache's rows become readable from
//! plain SQL (each field a column), derived through serde, never written by
//! hand per type.
//!
//! Two halves, both driven by the row type's own serde impls:
//!
//! - the **layout** ([`RowColumns::of`]) comes from the type's `Deserialize`
//!   impl, which a tracing deserializer walks without a value (so an
//!   `Option` field gives its inner type's columns even when every value is
//!   `None`, and an enum is known to be one whatever its variant);
//! - the **cells** ([`RowColumns::cells`]) come from a value's `Serialize`
//!   impl, written column by column along that layout.
//!
//! Mapping: `bool` → [`ValueType::Bool`]; `i8`..`i64`, `u8`..`u32` →
//! `Int`; `u64`, `i128`, `u128` → `Numeric` (decimal); `f32`, `f64` (and
//! [`F64`](zset::F64)) → `Float`; `String`, `char` → `Text`; `Vec<u8>`, byte
//! strings and `[u8; N]` → `Bytes`; `Uuid` → `Uuid`; `NaiveDate` → `Date`;
//! `NaiveDateTime` → `Timestamp`; structs, tuples and tuple structs are
//! flattened into their fields' columns, named `parent_child` (a tuple's
//! fields by position: `_0`, `pair_1`); newtypes are their inner type;
//! `Option` makes every column under it nullable (`None`: all `NULL`);
//! enums, sequences and maps are one `Json` column. A row that is not a
//! struct or tuple is one column, `value`. A type the tracer cannot walk
//! (a `Deserialize` impl that needs a self-describing format, a string type
//! that accepts none of the probes) is one `Json` column `value` holding
//! the whole row: nothing is refused.

mod cells;
mod json;
mod trace;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use chrono::{NaiveDate, NaiveDateTime};
use uuid::Uuid;

/// The SQL type of one value column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `BOOLEAN` (Postgres) / `INTEGER` 0 or 1 (SQLite).
    Bool,
    /// `BIGINT` / `INTEGER`.
    Int,
    /// `NUMERIC` / decimal `TEXT`: integers wider than `i64` may hold.
    Numeric,
    /// `DOUBLE PRECISION` / `REAL`.
    Float,
    /// `TEXT`.
    Text,
    /// `BYTEA` / `BLOB`.
    Bytes,
    /// `UUID` / 16-byte `BLOB`.
    Uuid,
    /// `DATE` / ISO-8601 `TEXT`.
    Date,
    /// `TIMESTAMP` / ISO-8601 `TEXT`.
    Timestamp,
    /// `JSONB` / JSON `TEXT`: enums, sequences and maps.
    Json,
}

impl ValueType {
    /// A short lowercase name, used in recorded shapes.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Numeric => "numeric",
            ValueType::Float => "float",
            ValueType::Text => "text",
            ValueType::Bytes => "bytes",
            ValueType::Uuid => "uuid",
            ValueType::Date => "date",
            ValueType::Timestamp => "timestamp",
            ValueType::Json => "json",
        }
    }
}

/// One value column of a row type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueColumn {
    /// The column's name: the field's path, `parent_child`, made of
    /// `[a-z0-9_]` (see [`sql_ident`](crate::sql_ident)) and unique in the
    /// row, at most [`MAX_COLUMN_NAME`] bytes.
    pub name: String,
    /// Its SQL type.
    pub ty: ValueType,
    /// Whether it can be `NULL` (it is under an `Option`).
    pub nullable: bool,
}

/// The longest column name [`RowColumns`] gives: room for a two-character
/// prefix in a 63-byte identifier.
pub const MAX_COLUMN_NAME: usize = 61;

/// One column's value for one row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Cell {
    /// `NULL`: a `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An integer wider than `i64` may hold, in decimal.
    Numeric(String),
    /// A float, exactly as the value held it (NaN and `-0.0` included).
    Float(f64),
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
    /// JSON text (an enum, a sequence or a map; see [`RowColumns`]).
    Json(String),
}

/// Where each column's cell comes from in a value: the layout as a tree
/// that the serializer walks beside the value.
#[derive(Clone, Debug, Default, PartialEq)]
enum Node {
    /// One column (`col`) of type `ty`.
    Leaf { col: usize, ty: ValueType },
    /// A struct, tuple or tuple struct: its fields in order (none: a unit).
    #[default]
    Unit,
    /// A struct, tuple or tuple struct with fields.
    Fields(Vec<Node>),
    /// An `Option`: `None` leaves its columns `NULL`.
    Opt(Box<Node>),
}

/// The typed columns of a row type, and how to fill them from a value.
#[derive(Clone, PartialEq)]
pub struct RowColumns {
    columns: Vec<ValueColumn>,
    root: Node,
}

impl fmt::Debug for RowColumns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowColumns({})", self.describe())
    }
}

impl RowColumns {
    /// The columns of row type `R`, traced through its `Deserialize` impl
    /// (see the `columns` module docs for the mapping).
    ///
    /// ```
    /// use stepping_graph::RowColumns;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Inner { b: i64, c: Option<String> }
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Row { a: f64, inner: Option<Inner>, tags: Vec<String> }
    /// let cols = RowColumns::of::<Row>();
    /// assert_eq!(cols.describe(), "a float, inner_b int?, inner_c text?, tags json");
    /// ```
    pub fn of<R: DeserializeOwned>() -> RowColumns {
        trace::trace::<R>().unwrap_or_else(RowColumns::whole_json)
    }

    /// The whole row as one JSON column `value`: for a type the tracer
    /// cannot walk.
    fn whole_json() -> RowColumns {
        RowColumns {
            columns: vec![ValueColumn {
                name: "value".into(),
                ty: ValueType::Json,
                nullable: false,
            }],
            root: Node::Leaf {
                col: 0,
                ty: ValueType::Json,
            },
        }
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[ValueColumn] {
        &self.columns
    }

    /// The layout as recorded in a shape: `name type[?]`, comma-separated
    /// (`?`: nullable).
    pub fn describe(&self) -> String {
        self.columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    c.ty.name(),
                    if c.nullable { "?" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Appends `value`'s cells, one per column, to `out`.
    ///
    /// # Errors
    /// A value whose `Serialize` impl does not match the layout its
    /// `Deserialize` impl gave (such a type cannot round-trip through any
    /// non-self-describing format either), naming the column.
    pub fn cells<R: Serialize + ?Sized>(
        &self,
        value: &R,
        out: &mut Vec<Cell>,
    ) -> Result<(), String> {
        let start = out.len();
        out.resize(start + self.columns.len(), Cell::Null);
        cells::write(&self.root, value, &mut out[start..]).map_err(|e| {
            let column = e
                .column
                .and_then(|c| self.columns.get(c))
                .map_or_else(|| "the row".to_owned(), |c| format!("column `{}`", c.name));
            format!("{column}: {}", e.message)
        })
    }
}

/// `value` as JSON text, as a `Json` column holds it: externally tagged
/// enums (`"Unit"`, `{"Variant": ...}`), sequences and tuples as arrays,
/// maps and structs as objects (a map key that is not a string is written
/// as its JSON text), bytes as arrays of numbers, dates, times and UUIDs as
/// their ISO-8601 and hyphenated text; NaN and infinities are `null` (JSON
/// has no such numbers) and a NUL character is U+FFFD (Postgres `jsonb`
/// cannot hold it).
///
/// # Errors
/// A `Serialize` impl that fails.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, String> {
    let mut out = String::new();
    json::write(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests;
