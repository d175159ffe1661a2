//! What the SQL stores share: how a state becomes a table (names, columns,
//! indexes, the recorded shape), the SQL both dialects speak, and reads and
//! writes encoded as plain data (`SqlRead`, `EncodedRow`) so that any
//! backend, or a thread bridging to an application's own transaction, can
//! run them.
//!
//! Table layout, per state:
//!
//! | column | what |
//! |---|---|
//! | `identity` | xxh3 of the row's (keyed states: the key's) postcard bytes |
//! | `step` | nested (recursion) states only |
//! | `data` | the row, postcard bytes |
//! | one per index key part | typed: `BIGINT`, `DOUBLE`/`REAL`, `TEXT`, `BOOLEAN`, dates, UUIDs |
//! | `v_<field>` | caches only: each field of the row, typed ([`crate::views`]) |
//! | `c` | the weight |
//!
//! The primary key is *clustered* on the state's first index where the
//! dialect can do so (its key columns are never `NULL`; Postgres: all
//! ascending): `(first index's key columns, identity[, step])`, so rows
//! that are read together are stored together, and that index costs no
//! second B-tree. Otherwise it is `(identity[, step])` with the first index
//! beside it. Every further `Index` is one SQL index, in its key order.
//! Two shared tables: `<prefix>0_last_update(table_name, t)` and
//! `<prefix>0_tables(table_name, path, kind, shape)`; the recorded shape
//! includes the layout, so a table written by another layout is a
//! [`StoreError::SchemaMismatch`], never misread. The store's own names
//! ([`OwnNames`]) start with a digit after the prefix, which no state's
//! table name does.

use graph::{MAX_IDENT, MAX_TABLE_PREFIX, StateKind, StateSpec, StoreError, sql_ident as ident};
use zset::{ColumnType, KeyColumn};

/// The store's own tables (and Postgres time sequence) under a prefix:
/// `<prefix>0_tables`, `<prefix>0_last_update`, `<prefix>0_failed_batches`
/// and `<prefix>0_time`. A state's table is the prefix followed by
/// [`table_ident`] of its path, which never starts with a digit, so no
/// state, whatever its path, can be given one of these names.
#[derive(Clone, Debug)]
pub(crate) struct OwnNames {
    /// Every state table's path, kind and shape.
    pub(crate) tables: String,
    /// The time each state table was last written at.
    pub(crate) last_update: String,
    /// The batches that failed, with their input.
    pub(crate) failed_batches: String,
    /// The Postgres sequence of input times.
    pub(crate) time: String,
}

impl OwnNames {
    pub(crate) fn of(prefix: &str) -> OwnNames {
        OwnNames {
            tables: OwnNames::name(prefix, "tables"),
            last_update: OwnNames::name(prefix, "last_update"),
            failed_batches: OwnNames::name(prefix, "failed_batches"),
            time: OwnNames::name(prefix, "time"),
        }
    }

    /// One of them alone: `what` is `tables`, `last_update`,
    /// `failed_batches` or `time`.
    pub(crate) fn name(prefix: &str, what: &str) -> String {
        format!("{prefix}0_{what}")
    }

    /// The Postgres time sequence as earlier versions named it,
    /// `<prefix>time`: a name a state's table can have too.
    pub(crate) fn legacy_time(prefix: &str) -> String {
        format!("{prefix}time")
    }

    /// The store's own tables as earlier versions named them,
    /// `<prefix>tables`, `<prefix>last_update` and `<prefix>failed_batches`
    /// (names a state's table can have too), to be renamed when a store
    /// they made is opened.
    pub(crate) fn legacy_tables(prefix: &str) -> [Legacy; 3] {
        let own = OwnNames::of(prefix);
        [
            Legacy {
                old: format!("{prefix}tables"),
                new: own.tables,
                columns: &["table_name", "path", "kind", "shape"],
            },
            Legacy {
                old: format!("{prefix}last_update"),
                new: own.last_update,
                columns: &["table_name", "t"],
            },
            Legacy {
                old: format!("{prefix}failed_batches"),
                new: own.failed_batches,
                columns: &["input_time", "batch", "changes", "error", "committed"],
            },
        ]
    }
}

/// A table of the store's own under the name an earlier version gave it.
#[derive(Clone, Debug)]
pub(crate) struct Legacy {
    /// Its name then.
    pub(crate) old: String,
    /// Its name now.
    pub(crate) new: String,
    /// Its columns, in order: a state's table under the old name has
    /// others, and is left alone.
    pub(crate) columns: &'static [&'static str],
}

impl Legacy {
    /// Whether to rename the table: it exists with exactly these columns
    /// (`old_columns`; `None` if there is no table by the old name) and
    /// the new name is free.
    pub(crate) fn applies(&self, old_columns: Option<&[String]>, new_exists: bool) -> bool {
        !new_exists
            && old_columns.is_some_and(|c| {
                c.iter()
                    .map(String::as_str)
                    .eq(self.columns.iter().copied())
            })
    }
}

mod plan;
mod rows;

// A build with neither store feature uses none of these.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_imports)
)]
pub(crate) use plan::{
    DEFINITION_CHANGED, NOT_STORED, OTHER_ROW_TYPE, Recorded, input_not_kept, plan, reader_refusal,
    rename_statements, row_type, table_name, table_state, unmigratable,
};
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_imports)
)]
pub(crate) use rows::{
    SqlRead, SqlRow, decode_rows, decode_undo, encode_delta, encode_undo, refused_write, undo_of,
};

/// `table` has no row in `last_update`, so the time of its state is unknown.
pub(crate) fn unknown_time(last_update: &str, table: &str) -> StoreError {
    StoreError::Corrupt {
        table: last_update.to_owned(),
        identity: table.to_owned(),
        detail: "no last_update row for this table, so the time of its state is unknown".into(),
    }
}

/// `table`'s time in `last_update` is not an integer.
pub(crate) fn bad_time(last_update: &str, table: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table: last_update.to_owned(),
        identity: table.to_owned(),
        detail: format!("its time is not an integer: {e}"),
    }
}

/// Checks a user-given table prefix: `[a-z0-9_]*`, starting with a letter.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    let ok = prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix.len() <= MAX_TABLE_PREFIX;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: prefix.to_owned(),
            reason: format!(
                "a table prefix is up to {MAX_TABLE_PREFIX} characters of [a-z0-9_], starting with a letter"
            ),
        })
    }
}

/// The first key column of `schema`'s table: a feed's time.
pub(crate) fn first_column(schema: &TableSchema) -> Result<&str, StoreError> {
    schema
        .columns
        .first()
        .map(|c| c.name.as_str())
        .ok_or_else(|| StoreError::SchemaMismatch {
            table: schema.name.clone(),
            detail: "a feed's table has a time column; this one has no key column".into(),
        })
}

/// One typed key column of a state table.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) key: KeyColumn,
}

/// One SQL index: a contiguous run of the table's key columns.
#[derive(Clone, Debug)]
pub(crate) struct IndexSchema {
    pub(crate) name: String,
    pub(crate) columns: std::ops::Range<usize>,
    /// How many leading columns form the prefix of a prefix index.
    pub(crate) prefix: usize,
}

/// A state's table.
#[derive(Clone, Debug)]
pub(crate) struct TableSchema {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) kind: StateKind,
    pub(crate) shape: String,
    pub(crate) columns: Vec<Column>,
    /// A cache's value columns, after the key columns; none for other
    /// states.
    pub(crate) values: Vec<crate::views::ValueCol>,
    /// A cache's view ([`graph::view_ident`]).
    pub(crate) view: Option<String>,
    pub(crate) indexes: Vec<IndexSchema>,
    /// The key columns that lead the primary key (the first index's when
    /// the table is clustered on it; else empty).
    pub(crate) clustered: std::ops::Range<usize>,
    /// Whether it is a feed's table (rows appended, never cancelled).
    pub(crate) feed: bool,
}

impl TableSchema {
    /// The table for `spec` in `dialect`, its name prefixed by `prefix`.
    pub(crate) fn of(spec: &StateSpec, prefix: &str, dialect: &dyn Dialect) -> TableSchema {
        TableSchema::at(spec, spec.path().as_str(), prefix, dialect)
    }

    /// The table for `spec` were it at `path`.
    pub(crate) fn at(
        spec: &StateSpec,
        path: &str,
        prefix: &str,
        dialect: &dyn Dialect,
    ) -> TableSchema {
        let name = table_name(prefix, path);
        let mut columns: Vec<Column> = Vec::new();
        let mut indexes = Vec::new();
        for (i, ix) in spec.indexes().iter().enumerate() {
            let start = columns.len();
            for (part, key) in ix.parts.iter().zip(&ix.columns) {
                let raw = if ix.parts.len() == 1 && **part == *ix.name {
                    part.to_string()
                } else {
                    format!("{}__{part}", ix.name)
                };
                let mut col = ident(&raw, 40);
                if matches!(col.as_str(), "identity" | "data" | "c" | "step")
                    || columns.iter().any(|c: &Column| c.name == col)
                {
                    col = format!("{col}_{i}");
                }
                columns.push(Column {
                    name: format!("k_{col}"),
                    key: *key,
                });
            }
            indexes.push(IndexSchema {
                name: ident(&format!("{name}__ix_{i}_{}", ix.name), MAX_IDENT),
                columns: start..columns.len(),
                prefix: spec.codec().prefix_columns(i),
            });
        }
        let clustered = match indexes.first() {
            Some(ix)
                if !ix.columns.is_empty() && dialect.can_cluster(&columns[ix.columns.clone()]) =>
            {
                ix.columns.clone()
            }
            _ => 0..0,
        };
        let layout = if clustered.is_empty() {
            "by identity".to_owned()
        } else {
            format!("clustered on {}", indexes[0].name)
        };
        let (values, view) = crate::views::value_columns(spec, &name);
        TableSchema {
            name,
            path: path.to_owned(),
            kind: spec.kind(),
            shape: format!("{}; layout {layout}", spec.shape()),
            columns,
            values,
            view,
            indexes,
            clustered,
            feed: spec.is_feed(),
        }
    }

    pub(crate) fn nested(&self) -> bool {
        self.kind == StateKind::Nested
    }

    /// The index of the rows with a negative weight, where the dialect
    /// keeps one ([`Dialect::indexes_negative_weights`]): a Z-set's or
    /// nested state's table, not a feed's. Almost always empty, it tells a
    /// write in one look whether anything stored can be cancelled by a row
    /// added with a positive weight.
    pub(crate) fn negative_index(&self, d: &dyn Dialect) -> Option<String> {
        (d.indexes_negative_weights() && self.kind != StateKind::Keyed && !self.feed)
            .then(|| graph::negative_index_ident(&self.name))
    }

    /// The primary key's columns, in order.
    pub(crate) fn primary_key(&self) -> Vec<&str> {
        let mut pk: Vec<&str> = self.columns[self.clustered.clone()]
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        pk.push("identity");
        if self.nested() {
            pk.push("step");
        }
        pk
    }
}

/// The types a dialect gives key columns.
pub(crate) trait Dialect {
    /// The SQL type of a key column.
    fn column_type(&self, ty: ColumnType) -> &'static str;
    /// The SQL type of a cache's value column.
    fn value_type(&self, ty: graph::ValueType) -> &'static str;
    /// The type of `identity`, `c` and `t`.
    fn bigint(&self) -> &'static str;
    /// The type of `data`.
    fn blob(&self) -> &'static str;
    /// How an index orders `NULL`s, after `ASC`/`DESC` (Rust order: `None` first).
    fn nulls(&self, descending: bool) -> &'static str;
    /// Extra words after `CREATE TABLE ... (...)`.
    fn table_options(&self, schema: &TableSchema) -> &'static str;
    /// Whether a primary key can lead with these key columns.
    fn can_cluster(&self, columns: &[Column]) -> bool;
    /// Whether `ALTER INDEX .. RENAME` exists (else an index of a renamed
    /// table is made again under its new name).
    fn renames_indexes(&self) -> bool;
    /// Whether Z-set tables get [`TableSchema::negative_index`].
    fn indexes_negative_weights(&self) -> bool;
}

/// `CREATE TABLE` and `CREATE INDEX` statements for `schema`.
pub(crate) fn create_statements(d: &dyn Dialect, schema: &TableSchema) -> Vec<String> {
    let mut cols = vec![format!("identity {} NOT NULL", d.bigint())];
    if schema.nested() {
        cols.push("step INTEGER NOT NULL".into());
    }
    cols.push(format!("data {} NOT NULL", d.blob()));
    for c in &schema.columns {
        let null = if c.key.nullable { "" } else { " NOT NULL" };
        cols.push(format!("{} {}{null}", c.name, d.column_type(c.key.ty)));
    }
    cols.extend(crate::views::column_defs(d, schema));
    cols.push(format!("c {} NOT NULL", d.bigint()));
    let pk: Vec<String> = schema.columns[schema.clustered.clone()]
        .iter()
        .map(|c| {
            let dir = if c.key.descending { " DESC" } else { "" };
            format!("{}{dir}", c.name)
        })
        .chain(
            schema.primary_key()[schema.clustered.len()..]
                .iter()
                .map(|c| c.to_string()),
        )
        .collect();
    cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    let mut out = vec![format!(
        "CREATE TABLE {} (\n    {}\n){}",
        schema.name,
        cols.join(",\n    "),
        d.table_options(schema)
    )];
    for ix in &schema.indexes {
        if ix.columns.is_empty() || ix.columns == schema.clustered {
            continue;
        }
        let cols: Vec<String> = schema.columns[ix.columns.clone()]
            .iter()
            .map(|c| {
                let dir = if c.key.descending { "DESC" } else { "ASC" };
                format!("{} {dir}{}", c.name, d.nulls(c.key.descending))
            })
            .collect();
        out.push(format!(
            "CREATE INDEX {} ON {} ({})",
            ix.name,
            schema.name,
            cols.join(", ")
        ));
    }
    if schema.nested() {
        out.push(format!(
            "CREATE INDEX {}__step ON {} (step)",
            schema.name, schema.name
        ));
    }
    if let Some(negative) = schema.negative_index(d) {
        out.push(negative_index_statement(&negative, &schema.name));
    }
    out
}

/// Makes the index [`TableSchema::negative_index`] names.
pub(crate) fn negative_index_statement(index: &str, table: &str) -> String {
    format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (c) WHERE c < 0")
}

/// A stored inner step, which must fit a `u32`.
pub(crate) fn step_of(schema: &TableSchema, step: i64) -> Result<u32, StoreError> {
    u32::try_from(step).map_err(|_| StoreError::Corrupt {
        table: schema.name.clone(),
        identity: format!("the row at step {step}"),
        detail: format!("a row is stored at inner step {step}, not a step number"),
    })
}

/// SQLite and Postgres agree on dates written `YYYY-MM-DD`; SQLite keeps
/// them as text, which orders correctly only for years 0 to 9999.
pub(crate) fn four_digit_year(year: i32) -> bool {
    (0..=9999).contains(&year)
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::table_ident;

    /// No state path, however hostile, gives a state's table the name of
    /// one of the store's own, at any prefix length a store accepts.
    #[test]
    fn no_state_is_named_like_the_stores_own_tables() {
        let mut paths: Vec<String> = [
            "tables",
            "last_update",
            "failed_batches",
            "time",
            "_tables",
            "0_tables",
            "0tables",
            "0_last_update",
            "0_time",
            "/0_time",
            "\u{0}0_time",
            "Tables",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        paths.push(format!("{}0_time", "_".repeat(60)));
        paths.push(format!("0_{}", "x".repeat(60)));
        for prefix in ["a", "st_", "app1_", "x0", &"p".repeat(MAX_TABLE_PREFIX)] {
            assert!(check_prefix(prefix).is_ok(), "{prefix}");
            let own = OwnNames::of(prefix);
            let mut theirs = vec![own.tables, own.last_update, own.failed_batches, own.time];
            for name in &theirs {
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        && name.len() <= MAX_IDENT - "_pkey".len(),
                    "{name}"
                );
            }
            theirs.sort();
            for path in &paths {
                let table = format!("{prefix}{}", table_ident(path, prefix.len()));
                assert!(
                    theirs.binary_search(&table).is_err(),
                    "{path:?} after {prefix:?} is named {table}"
                );
            }
        }
    }

    #[test]
    fn legacy_tables_are_renamed_only_with_their_columns() {
        let [tables, ..] = OwnNames::legacy_tables("st_");
        assert_eq!(
            (tables.old.as_str(), tables.new.as_str()),
            ("st_tables", "st_0_tables")
        );
        let own: Vec<String> = tables.columns.iter().map(|c| c.to_string()).collect();
        let state: Vec<String> = ["identity", "data", "c"].map(String::from).to_vec();
        assert!(tables.applies(Some(&own), false));
        assert!(!tables.applies(Some(&own), true), "today's name is taken");
        assert!(!tables.applies(Some(&state), false), "a state's table");
        assert!(!tables.applies(None, false), "nothing to rename");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("st_").is_ok());
        assert!(check_prefix("app1_").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("x; drop").is_err());
        assert!(check_prefix("_x").is_err());
    }
}
