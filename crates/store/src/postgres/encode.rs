//! Key values and encoded rows as Postgres parameters and results: the dialect,
//! array parameters, and decoding a row.

use chrono::{NaiveDate, NaiveDateTime};
use graph::{Cell, StoreError, ValueType, identity_of};
use tokio_postgres::Row;
use tokio_postgres::types::{Date, Timestamp, ToSql};
use uuid::Uuid;
use zset::{ColumnType, KeyValue};

use crate::sql::{self, Dialect, SqlRow, TableSchema};

pub(super) struct PgDialect;

impl Dialect for PgDialect {
    fn renames_indexes(&self) -> bool {
        true
    }
    fn indexes_negative_weights(&self) -> bool {
        true
    }
    fn column_type(&self, ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Bool => "BOOLEAN",
            ColumnType::Int => "BIGINT",
            ColumnType::Float => "DOUBLE PRECISION",
            ColumnType::Text => "TEXT COLLATE \"C\"",
            ColumnType::Bytes => "BYTEA",
            ColumnType::Uuid => "UUID",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMP",
            _ => "BYTEA",
        }
    }
    fn value_type(&self, ty: ValueType) -> &'static str {
        match ty {
            ValueType::Bool => "BOOLEAN",
            ValueType::Int => "BIGINT",
            ValueType::Numeric => "NUMERIC",
            ValueType::Float => "DOUBLE PRECISION",
            ValueType::Text => "TEXT",
            ValueType::Bytes => "BYTEA",
            ValueType::Uuid => "UUID",
            ValueType::Date => "DATE",
            ValueType::Timestamp => "TIMESTAMP",
            _ => "JSONB",
        }
    }
    fn bigint(&self) -> &'static str {
        "BIGINT"
    }
    fn can_cluster(&self, columns: &[sql::Column]) -> bool {
        // A primary key's columns are never NULL and always ascending.
        columns.iter().all(|c| !c.key.nullable && !c.key.descending)
    }
    fn blob(&self) -> &'static str {
        "BYTEA"
    }
    fn nulls(&self, descending: bool) -> &'static str {
        // Rust order: `None` first ascending, so last descending.
        if descending {
            " NULLS LAST"
        } else {
            " NULLS FIRST"
        }
    }
    fn table_options(&self, schema: &TableSchema) -> &'static str {
        // A keyed row is replaced every time its key changes; room left on
        // its page lets the new version stay there without a new index
        // entry (a HOT update). Other tables' rows are added and deleted.
        if schema.kind == graph::StateKind::Keyed {
            " WITH (fillfactor = 70)"
        } else {
            ""
        }
    }
}

pub(super) fn array_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "bool[]",
        ColumnType::Int => "int8[]",
        ColumnType::Float => "float8[]",
        ColumnType::Text => "text[]",
        ColumnType::Uuid => "uuid[]",
        ColumnType::Date => "date[]",
        ColumnType::Timestamp => "timestamp[]",
        _ => "bytea[]",
    }
}

/// One typed array parameter (a column of many rows or keys).
#[derive(Debug)]
pub(super) enum PgArray {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Uuid(Vec<Option<Uuid>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamp(Vec<Option<NaiveDateTime>>),
}

impl PgArray {
    pub(super) fn new(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::Bool => PgArray::Bool(Vec::with_capacity(capacity)),
            ColumnType::Int => PgArray::Int(Vec::with_capacity(capacity)),
            ColumnType::Float => PgArray::Float(Vec::with_capacity(capacity)),
            ColumnType::Text => PgArray::Text(Vec::with_capacity(capacity)),
            ColumnType::Uuid => PgArray::Uuid(Vec::with_capacity(capacity)),
            ColumnType::Date => PgArray::Date(Vec::with_capacity(capacity)),
            ColumnType::Timestamp => PgArray::Timestamp(Vec::with_capacity(capacity)),
            _ => PgArray::Bytes(Vec::with_capacity(capacity)),
        }
    }

    pub(super) fn push(&mut self, table: &str, v: &KeyValue) -> Result<(), StoreError> {
        let mismatch = || StoreError::Unrepresentable {
            table: table.to_owned(),
            detail: format!("key value {v:?} does not fit its column"),
        };
        match (self, v) {
            (PgArray::Bool(a), KeyValue::Null) => a.push(None),
            (PgArray::Int(a), KeyValue::Null) => a.push(None),
            (PgArray::Float(a), KeyValue::Null) => a.push(None),
            (PgArray::Text(a), KeyValue::Null) => a.push(None),
            (PgArray::Bytes(a), KeyValue::Null) => a.push(None),
            (PgArray::Uuid(a), KeyValue::Null) => a.push(None),
            (PgArray::Date(a), KeyValue::Null) => a.push(None),
            (PgArray::Timestamp(a), KeyValue::Null) => a.push(None),
            (PgArray::Bool(a), KeyValue::Bool(b)) => a.push(Some(*b)),
            (PgArray::Int(a), KeyValue::Int(i)) => a.push(Some(*i)),
            (PgArray::Float(a), KeyValue::Float(f)) => a.push(Some(f.get())),
            (PgArray::Text(a), KeyValue::Text(s)) => a.push(Some(s.clone())),
            (PgArray::Bytes(a), KeyValue::Bytes(b)) => a.push(Some(b.clone())),
            (PgArray::Uuid(a), KeyValue::Uuid(u)) => a.push(Some(*u)),
            (PgArray::Date(a), KeyValue::Date(d)) => a.push(Some(*d)),
            (PgArray::Timestamp(a), KeyValue::Timestamp(t)) => a.push(Some(*t)),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    pub(super) fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            PgArray::Bool(a) => a,
            PgArray::Int(a) => a,
            PgArray::Float(a) => a,
            PgArray::Text(a) => a,
            PgArray::Bytes(a) => a,
            PgArray::Uuid(a) => a,
            PgArray::Date(a) => a,
            PgArray::Timestamp(a) => a,
        }
    }
}

/// A value column's array parameter type: numeric and JSON cells go as
/// text, cast by the server.
pub(super) fn value_array_type(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Bool => "bool[]",
        ValueType::Int => "int8[]",
        ValueType::Numeric => "text[]::numeric[]",
        ValueType::Float => "float8[]",
        ValueType::Text => "text[]",
        ValueType::Bytes => "bytea[]",
        ValueType::Uuid => "uuid[]",
        ValueType::Date => "date[]",
        ValueType::Timestamp => "timestamp[]",
        _ => "text[]::jsonb[]",
    }
}

/// The first day Postgres `DATE` and `TIMESTAMP` hold (Julian day 0, 24
/// November 4714 BC); earlier ones are written `-infinity`.
fn pg_first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(-4713, 11, 24).unwrap_or(NaiveDate::MIN)
}

/// Text as Postgres `TEXT` holds it: it cannot hold NUL, written U+FFFD.
fn pg_text(t: &str) -> std::borrow::Cow<'_, str> {
    if t.contains('\0') {
        std::borrow::Cow::Owned(t.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(t)
    }
}

/// One value column of many rows, as an array parameter, borrowing the
/// rows' text and bytes.
#[derive(Debug)]
pub(super) enum CellArray<'r> {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<std::borrow::Cow<'r, str>>>),
    Bytes(Vec<Option<&'r [u8]>>),
    Uuid(Vec<Option<Uuid>>),
    Date(Vec<Option<Date<NaiveDate>>>),
    Timestamp(Vec<Option<Timestamp<NaiveDateTime>>>),
}

impl<'r> CellArray<'r> {
    pub(super) fn new(ty: ValueType, capacity: usize) -> Self {
        match ty {
            ValueType::Bool => CellArray::Bool(Vec::with_capacity(capacity)),
            ValueType::Int => CellArray::Int(Vec::with_capacity(capacity)),
            ValueType::Float => CellArray::Float(Vec::with_capacity(capacity)),
            ValueType::Bytes => CellArray::Bytes(Vec::with_capacity(capacity)),
            ValueType::Uuid => CellArray::Uuid(Vec::with_capacity(capacity)),
            ValueType::Date => CellArray::Date(Vec::with_capacity(capacity)),
            ValueType::Timestamp => CellArray::Timestamp(Vec::with_capacity(capacity)),
            _ => CellArray::Text(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `cell`: dates and timestamps before the first day Postgres
    /// holds as `-infinity`.
    pub(super) fn push(&mut self, table: &str, cell: &'r Cell) -> Result<(), StoreError> {
        let first = pg_first_day();
        match (self, cell) {
            (CellArray::Bool(a), Cell::Null) => a.push(None),
            (CellArray::Int(a), Cell::Null) => a.push(None),
            (CellArray::Float(a), Cell::Null) => a.push(None),
            (CellArray::Text(a), Cell::Null) => a.push(None),
            (CellArray::Bytes(a), Cell::Null) => a.push(None),
            (CellArray::Uuid(a), Cell::Null) => a.push(None),
            (CellArray::Date(a), Cell::Null) => a.push(None),
            (CellArray::Timestamp(a), Cell::Null) => a.push(None),
            (CellArray::Bool(a), Cell::Bool(b)) => a.push(Some(*b)),
            (CellArray::Int(a), Cell::Int(i)) => a.push(Some(*i)),
            (CellArray::Float(a), Cell::Float(f)) => a.push(Some(*f)),
            (CellArray::Text(a), Cell::Text(t) | Cell::Numeric(t) | Cell::Json(t)) => {
                a.push(Some(pg_text(t)));
            }
            (CellArray::Bytes(a), Cell::Bytes(b)) => a.push(Some(b)),
            (CellArray::Uuid(a), Cell::Uuid(u)) => a.push(Some(*u)),
            (CellArray::Date(a), Cell::Date(d)) => a.push(Some(if *d < first {
                Date::NegInfinity
            } else {
                Date::Value(*d)
            })),
            (CellArray::Timestamp(a), Cell::Timestamp(t)) => a.push(Some(if t.date() < first {
                Timestamp::NegInfinity
            } else {
                Timestamp::Value(*t)
            })),
            (_, cell) => {
                return Err(StoreError::Unrepresentable {
                    table: table.to_owned(),
                    detail: format!("value cell {cell:?} does not fit its column"),
                });
            }
        }
        Ok(())
    }

    pub(super) fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            CellArray::Bool(a) => a,
            CellArray::Int(a) => a,
            CellArray::Float(a) => a,
            CellArray::Text(a) => a,
            CellArray::Bytes(a) => a,
            CellArray::Uuid(a) => a,
            CellArray::Date(a) => a,
            CellArray::Timestamp(a) => a,
        }
    }
}

/// One key value as a query parameter.
pub(super) fn scalar_param(v: &KeyValue) -> Box<dyn ToSql + Sync + Send> {
    match v {
        KeyValue::Null => Box::new(Option::<i64>::None),
        KeyValue::Bool(b) => Box::new(*b),
        KeyValue::Int(i) => Box::new(*i),
        KeyValue::Float(f) => Box::new(f.get()),
        KeyValue::Text(s) => Box::new(s.clone()),
        KeyValue::Bytes(b) => Box::new(b.clone()),
        KeyValue::Uuid(u) => Box::new(*u),
        KeyValue::Date(d) => Box::new(*d),
        KeyValue::Timestamp(t) => Box::new(*t),
        other => Box::new(format!("{other:?}")),
    }
}

/// A key column read back from a row (for tie-breaking reads).
pub(super) fn key_from_row(
    row: &Row,
    i: usize,
    ty: ColumnType,
) -> Result<KeyValue, tokio_postgres::Error> {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> KeyValue) -> KeyValue {
        v.map_or(KeyValue::Null, f)
    }
    Ok(match ty {
        ColumnType::Bool => opt(row.try_get::<_, Option<bool>>(i)?, KeyValue::Bool),
        ColumnType::Int => opt(row.try_get::<_, Option<i64>>(i)?, KeyValue::Int),
        ColumnType::Float => opt(row.try_get::<_, Option<f64>>(i)?, |f| {
            KeyValue::Float(zset::F64::new(f))
        }),
        ColumnType::Text => opt(row.try_get::<_, Option<String>>(i)?, KeyValue::Text),
        ColumnType::Uuid => opt(row.try_get::<_, Option<Uuid>>(i)?, KeyValue::Uuid),
        ColumnType::Date => opt(row.try_get::<_, Option<NaiveDate>>(i)?, KeyValue::Date),
        ColumnType::Timestamp => opt(
            row.try_get::<_, Option<NaiveDateTime>>(i)?,
            KeyValue::Timestamp,
        ),
        _ => opt(row.try_get::<_, Option<Vec<u8>>>(i)?, KeyValue::Bytes),
    })
}

/// A read row's encoded value, left in the row the server sent: decoding
/// borrows it rather than copying every row's bytes out first.
pub(crate) struct PgData(Row);

impl AsRef<[u8]> for PgData {
    fn as_ref(&self) -> &[u8] {
        // `row_of` checked that column 1 reads as bytes; were it not to,
        // the empty value fails to decode, naming the table and row.
        self.0.try_get(1).unwrap_or_default()
    }
}

/// A row read from Postgres.
pub(crate) type PgRow = SqlRow<PgData>;

pub(super) fn row_of(table: &str, nested: bool, verify: bool, r: Row) -> Result<PgRow, StoreError> {
    let identity: i64 = r.try_get(0).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        identity: "?".into(),
        detail: format!("identity: {e}"),
    })?;
    let corrupt = |detail: String| StoreError::Corrupt {
        table: table.to_owned(),
        identity: identity.to_string(),
        detail,
    };
    let data: &[u8] = r.try_get(1).map_err(|e| corrupt(format!("data: {e}")))?;
    if verify && identity_of(data) != identity {
        return Err(corrupt("the identity does not match the row's data".into()));
    }
    let weight: i64 = r
        .try_get(2)
        .map_err(|e| corrupt(format!("weight c: {e}")))?;
    let step: i32 = if nested {
        r.try_get(3).map_err(|e| corrupt(format!("step: {e}")))?
    } else {
        0
    };
    if weight == 0 {
        return Err(corrupt("a stored weight is 0".into()));
    }
    let step = u32::try_from(step).map_err(|_| corrupt(format!("step {step} is out of range")))?;
    Ok(SqlRow {
        identity,
        data: PgData(r),
        weight,
        step,
    })
}

pub(super) fn key_arrays(
    schema: &TableSchema,
    index: usize,
    keys: &[Vec<KeyValue>],
) -> Result<Vec<PgArray>, StoreError> {
    columns_arrays(schema, schema.indexes[index].columns.clone(), keys)
}

/// One array per clustered key column, of `keys` (each the clustered
/// columns' values).
pub(super) fn pk_arrays(
    schema: &TableSchema,
    keys: &[Vec<KeyValue>],
) -> Result<Vec<PgArray>, StoreError> {
    columns_arrays(schema, schema.clustered.clone(), keys)
}

pub(super) fn columns_arrays(
    schema: &TableSchema,
    columns: std::ops::Range<usize>,
    keys: &[Vec<KeyValue>],
) -> Result<Vec<PgArray>, StoreError> {
    let cs = &schema.columns[columns];
    let mut arrays: Vec<PgArray> = cs
        .iter()
        .map(|c| PgArray::new(c.key.ty, keys.len()))
        .collect();
    for key in keys {
        for (a, v) in arrays.iter_mut().zip(key) {
            a.push(&schema.name, v)?;
        }
    }
    Ok(arrays)
}
