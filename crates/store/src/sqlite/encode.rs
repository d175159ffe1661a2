//! Key values as SQLite values, and decoding a row; errors named after their
//! table.

use chrono::{Datelike, Timelike};
use graph::{Cell, StoreError, ValueType, identity_of};
use rusqlite::types::Value as SqlValue;
use zset::{ColumnType, KeyValue};

use crate::check::{self};
use crate::sql::{self, Dialect, SqlRow, TableSchema, four_digit_year};

pub(super) struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn renames_indexes(&self) -> bool {
        false
    }
    fn indexes_negative_weights(&self) -> bool {
        // Its writes look rows up one by one (see `writes.rs`), so nothing
        // would read the index.
        false
    }
    fn column_type(&self, ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Bool | ColumnType::Int => "INTEGER",
            ColumnType::Float => "REAL",
            ColumnType::Bytes | ColumnType::Uuid => "BLOB",
            _ => "TEXT",
        }
    }
    fn value_type(&self, ty: ValueType) -> &'static str {
        match ty {
            ValueType::Bool | ValueType::Int => "INTEGER",
            ValueType::Float => "REAL",
            ValueType::Bytes | ValueType::Uuid => "BLOB",
            // Numeric is decimal text: an INTEGER or NUMERIC column would
            // turn integers beyond `i64` into lossy floats.
            _ => "TEXT",
        }
    }
    fn bigint(&self) -> &'static str {
        "INTEGER"
    }
    fn blob(&self) -> &'static str {
        "BLOB"
    }
    fn nulls(&self, _descending: bool) -> &'static str {
        // SQLite already sorts NULL first ascending and last descending.
        ""
    }
    fn table_options(&self, schema: &TableSchema) -> &'static str {
        // A clustered table is its primary key's B-tree: no rowid beside it.
        if schema.clustered.is_empty() {
            ""
        } else {
            " WITHOUT ROWID"
        }
    }
    fn can_cluster(&self, columns: &[sql::Column]) -> bool {
        // WITHOUT ROWID primary keys cannot hold NULLs.
        columns.iter().all(|c| !c.key.nullable)
    }
}

/// A key value as SQLite keeps it. NaN is stored as the text `NaN`, which
/// SQLite sorts after every number (as Postgres and `F64` do); dates and
/// times are ISO-8601 text (years 0 to 9999).
pub(super) fn to_sqlite(table: &str, v: &KeyValue) -> Result<SqlValue, StoreError> {
    let bad = |detail: String| StoreError::Unrepresentable {
        table: table.to_owned(),
        detail,
    };
    Ok(match v {
        KeyValue::Null => SqlValue::Null,
        KeyValue::Bool(b) => SqlValue::Integer(i64::from(*b)),
        KeyValue::Int(i) => SqlValue::Integer(*i),
        KeyValue::Float(f) if f.get().is_nan() => SqlValue::Text("NaN".into()),
        KeyValue::Float(f) => SqlValue::Real(f.get()),
        KeyValue::Text(s) => SqlValue::Text(s.clone()),
        KeyValue::Bytes(b) => SqlValue::Blob(b.clone()),
        KeyValue::Uuid(u) => SqlValue::Blob(u.as_bytes().to_vec()),
        KeyValue::Date(d) => {
            if !four_digit_year(d.year()) {
                return Err(bad(format!("date {d} is outside years 0 to 9999")));
            }
            SqlValue::Text(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
        }
        KeyValue::Timestamp(t) => {
            if !four_digit_year(t.year()) {
                return Err(bad(format!("timestamp {t} is outside years 0 to 9999")));
            }
            SqlValue::Text(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            ))
        }
        other => return Err(bad(format!("unsupported key value {other:?}"))),
    })
}

/// Binds value cell `cell` as parameter `i` of `st`, as a cache's value
/// column keeps it: NaN as the text `NaN` (SQLite has no NaN: it would
/// store `NULL`, which is `None`), dates and timestamps as key columns
/// keep them (years 0 to 9999) or, outside those years, as chrono writes
/// them (`+10000-01-01`, `-0001-12-31`), UUIDs as 16 bytes.
pub(super) fn bind_cell(
    st: &mut rusqlite::Statement<'_>,
    i: usize,
    schema: &TableSchema,
    cell: &Cell,
) -> Result<(), StoreError> {
    let bound = match cell {
        Cell::Null => st.raw_bind_parameter(i, rusqlite::types::Null),
        Cell::Bool(b) => st.raw_bind_parameter(i, i64::from(*b)),
        Cell::Int(x) => st.raw_bind_parameter(i, x),
        Cell::Float(f) if f.is_nan() => st.raw_bind_parameter(i, "NaN"),
        Cell::Float(f) => st.raw_bind_parameter(i, f),
        Cell::Numeric(t) | Cell::Text(t) | Cell::Json(t) => st.raw_bind_parameter(i, t.as_str()),
        Cell::Bytes(b) => st.raw_bind_parameter(i, b.as_slice()),
        Cell::Uuid(u) => st.raw_bind_parameter(i, &u.as_bytes()[..]),
        Cell::Date(d) => st.raw_bind_parameter(i, date_text(*d)),
        Cell::Timestamp(t) => st.raw_bind_parameter(
            i,
            format!(
                "{} {:02}:{:02}:{:02}.{:09}",
                date_text(t.date()),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            ),
        ),
        other => {
            return Err(StoreError::Unrepresentable {
                table: schema.name.clone(),
                detail: format!("unsupported value cell {other:?}"),
            });
        }
    };
    bound.map_err(on(schema, "writing"))
}

/// A date as text: `YYYY-MM-DD` for years 0 to 9999, chrono's form (with
/// a sign) outside them.
fn date_text(d: chrono::NaiveDate) -> String {
    if four_digit_year(d.year()) {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        d.to_string()
    }
}

/// A SQLite value as a person reads it.
pub(super) fn show_sqlite(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Text(t) => format!("{t:?}"),
        SqlValue::Blob(b) => check::hex(b),
    }
}

pub(crate) fn backend(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::backend(context, e)
}

/// Errors while `doing` something to `schema`'s table; a table dropped
/// behind our back is reported as missing, not as a mystery.
pub(super) fn on<'s>(
    schema: &'s TableSchema,
    doing: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 's {
    move |e| {
        if e.to_string().contains("no such table") {
            StoreError::MissingTable {
                table: schema.name.clone(),
                path: schema.path.clone(),
            }
        } else {
            StoreError::backend(format!("{doing} `{}`", schema.name), e)
        }
    }
}

/// Binds key value `v` as parameter `i` of `st`, as [`to_sqlite`] stores it,
/// without copying text or bytes first.
pub(super) fn bind_key(
    st: &mut rusqlite::Statement<'_>,
    i: usize,
    schema: &TableSchema,
    v: &KeyValue,
) -> Result<(), StoreError> {
    let bound = match v {
        KeyValue::Int(x) => st.raw_bind_parameter(i, x),
        KeyValue::Text(t) => st.raw_bind_parameter(i, t.as_str()),
        KeyValue::Bytes(b) => st.raw_bind_parameter(i, b.as_slice()),
        KeyValue::Uuid(u) => st.raw_bind_parameter(i, &u.as_bytes()[..]),
        other => st.raw_bind_parameter(i, to_sqlite(&schema.name, other)?),
    };
    bound.map_err(on(schema, "writing"))
}

/// Reads a state row, checking every column's type and the identity.
pub(super) fn row_of(
    table: &str,
    nested: bool,
    verify: bool,
    r: &rusqlite::Row<'_>,
) -> Result<SqlRow, StoreError> {
    let identity: i64 = r.get(0).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        identity: "?".into(),
        detail: format!("identity is not an integer: {e}"),
    })?;
    let corrupt = |detail: String| StoreError::Corrupt {
        table: table.to_owned(),
        identity: identity.to_string(),
        detail,
    };
    let data: Vec<u8> = r
        .get(1)
        .map_err(|e| corrupt(format!("data is not a blob: {e}")))?;
    let weight: i64 = r
        .get(2)
        .map_err(|e| corrupt(format!("weight c is not an integer: {e}")))?;
    let step: i64 = if nested {
        r.get(3)
            .map_err(|e| corrupt(format!("step is not an integer: {e}")))?
    } else {
        0
    };
    if verify && identity_of(&data) != identity {
        return Err(corrupt("the identity does not match the row's data".into()));
    }
    if weight == 0 {
        return Err(corrupt("a stored weight is 0".into()));
    }
    let step = u32::try_from(step).map_err(|_| corrupt(format!("step {step} is out of range")))?;
    Ok(SqlRow {
        identity,
        data,
        weight,
        step,
    })
}
