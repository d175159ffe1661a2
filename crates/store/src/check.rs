//! Checking stored rows against their own data (`Sqlite::check_rows`,
//! `Postgres::check_rows`): the physical consistency of a SQL store's rows.
//!
//! A row's `identity` and key columns are derived from its `data` when it is
//! written. Reads trust them: a read by index finds a row under the key its
//! columns hold, not the one its data says, so a row whose key column was
//! changed behind the store's back (by hand, by another program) is missing
//! from reads by its true key while a read of the whole table still shows
//! it. Reads check what they can afford to (that `data` decodes, that a
//! Z-set row's identity matches its bytes); this check recomputes every
//! column from the data and reports each row that disagrees.

use zset::KeyValue;

use graph::StateSpec;

use crate::sql::TableSchema;

/// A stored row whose columns disagree with its data, as `check_rows`
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    /// The table.
    pub table: String,
    /// The row's identity, as stored.
    pub identity: i64,
    /// The row's inner step (nested states; 0 otherwise).
    pub step: u32,
    /// The column that disagrees: `data` when the bytes are no row of the
    /// state's type (nothing else can then be checked), `identity`, `c`, or
    /// a key column (`k_...`).
    pub column: String,
    /// What the column holds.
    pub stored: String,
    /// What the row's data says it should hold.
    pub expected: String,
}

/// The query reading every row of `schema`'s table for a check: identity,
/// step (`0` where the table has none, cast with `step_cast`), data, weight
/// and every key column, in that order.
pub(crate) fn select_all(schema: &TableSchema, step_cast: &str) -> String {
    let step = if schema.nested() { "step" } else { "0" };
    let keys: String = schema
        .columns
        .iter()
        .map(|c| format!(", {}", c.name))
        .collect();
    format!(
        "SELECT identity, {step}{step_cast}, data, c{keys} FROM {}",
        schema.name
    )
}

/// A key value as a person reads it in SQL.
pub(crate) fn show(v: &KeyValue) -> String {
    match v {
        KeyValue::Null => "NULL".into(),
        KeyValue::Bool(b) => b.to_string(),
        KeyValue::Int(i) => i.to_string(),
        KeyValue::Float(f) => f.get().to_string(),
        KeyValue::Text(t) => format!("{t:?}"),
        KeyValue::Bytes(b) => hex(b),
        KeyValue::Uuid(u) => u.to_string(),
        KeyValue::Date(d) => d.to_string(),
        KeyValue::Timestamp(t) => t.to_string(),
        other => format!("{other:?}"),
    }
}

/// Bytes as a SQL hex literal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("x'{digits}'")
}

/// One stored row, as read for the check.
pub(crate) struct Stored<'a> {
    pub(crate) identity: i64,
    pub(crate) step: u32,
    pub(crate) data: &'a [u8],
    pub(crate) c: i64,
}

/// Checks one stored row of `schema`'s table against its data, pushing a
/// [`RowProblem`] for each column that disagrees; `key(i, expected)` says
/// what key column `i` holds when that is not `expected` (`None`: it
/// holds it).
pub(crate) fn check_row(
    spec: &StateSpec,
    schema: &TableSchema,
    row: Stored<'_>,
    key: &mut dyn FnMut(usize, &KeyValue) -> Option<String>,
    out: &mut Vec<RowProblem>,
) {
    let mut problem = |column: &str, stored: String, expected: String| {
        out.push(RowProblem {
            table: schema.name.clone(),
            identity: row.identity,
            step: row.step,
            column: column.to_owned(),
            stored,
            expected,
        });
    };
    let keyed = schema.kind == graph::StateKind::Keyed;
    if row.c == 0 || (keyed && row.c != 1) {
        let expected = if keyed { "1" } else { "a weight other than 0" };
        problem("c", row.c.to_string(), expected.into());
    }
    let (identity, keys) = match spec.codec().locate_data(row.data) {
        Ok(found) => found,
        Err(detail) => {
            problem(
                "data",
                format!("{} bytes", row.data.len()),
                format!("a {} ({detail})", spec.value_type()),
            );
            return;
        }
    };
    if identity != row.identity {
        problem("identity", row.identity.to_string(), identity.to_string());
    }
    for (i, (column, expected)) in schema.columns.iter().zip(&keys).enumerate() {
        if let Some(stored) = key(i, expected) {
            problem(&column.name, stored, show(expected));
        }
    }
}
