//! A cache's value columns and view: each field of its row type a typed
//! column `v_<field>` of its table (see [`graph::RowColumns`]), and the view
//! `<table>_view` that shows them under the fields' names with the weight as
//! `count`. Other states have neither.

use std::borrow::Cow;

use graph::{Cell, EncodedRow, StateSpec, StoreError, ValueType};

use crate::sql::{Dialect, TableSchema};

/// One value column of a cache's table (see [`graph::RowColumns`]).
#[derive(Clone, Debug)]
pub(crate) struct ValueCol {
    /// In the table: `v_` and the field's name.
    pub(crate) name: String,
    /// In the view: the field's name.
    pub(crate) field: String,
    pub(crate) ty: ValueType,
    pub(crate) nullable: bool,
}

/// The value columns and view name of `spec`'s table `table` (none for a
/// state that is no cache).
pub(crate) fn value_columns(spec: &StateSpec, table: &str) -> (Vec<ValueCol>, Option<String>) {
    let Some(columns) = spec.codec().columns() else {
        return (Vec::new(), None);
    };
    let values = columns
        .columns()
        .iter()
        .map(|c| ValueCol {
            name: format!("v_{}", c.name),
            field: c.name.clone(),
            ty: c.ty,
            nullable: c.nullable,
        })
        .collect();
    (values, Some(graph::view_ident(table)))
}

/// The value columns' definitions in `CREATE TABLE`: `NULL` only under an
/// `Option`.
pub(crate) fn column_defs<'s>(
    d: &'s dyn Dialect,
    schema: &'s TableSchema,
) -> impl Iterator<Item = String> + 's {
    schema.values.iter().map(move |v| {
        let null = if v.nullable { "" } else { " NOT NULL" };
        format!("{} {}{null}", v.name, d.value_type(v.ty))
    })
}

impl TableSchema {
    /// The view's `SELECT`: each value column under its field's name, and
    /// the weight as `count` (`count_`, ... when a field has that name);
    /// `None` for a state that is no cache.
    pub(crate) fn view_select(&self) -> Option<String> {
        self.view.as_ref()?;
        let mut count = "count".to_owned();
        while self.values.iter().any(|v| v.field == count) {
            count.push('_');
        }
        let cols: Vec<String> = self
            .values
            .iter()
            .map(|v| format!("{} AS \"{}\"", v.name, v.field))
            .chain(std::iter::once(format!("c AS \"{count}\"")))
            .collect();
        Some(format!("SELECT {} FROM {}", cols.join(", "), self.name))
    }
}

/// The value cells of `row` for `schema`'s table: those it carries, or
/// (a row read back from an undo log, which keeps none) computed from its
/// data.
pub(crate) fn cells_of<'r>(
    spec: &StateSpec,
    schema: &TableSchema,
    row: &'r EncodedRow,
) -> Result<Cow<'r, [Cell]>, StoreError> {
    if row.columns.len() == schema.values.len() {
        return Ok(Cow::Borrowed(&row.columns));
    }
    let mut cells = Vec::with_capacity(schema.values.len());
    spec.codec()
        .value_cells(&row.data, &mut cells)
        .map_err(|detail| StoreError::Corrupt {
            table: schema.name.clone(),
            identity: row.identity.to_string(),
            detail: format!("its value columns cannot be computed: {detail}"),
        })?;
    Ok(Cow::Owned(cells))
}
