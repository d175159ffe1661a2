//! The declared SQL types of a cache's view and of its table's `v_` value
//! columns, read from each database's catalogue (Postgres: `pg_attribute`
//! through `format_type`, SQLite: `pragma_table_info`), against the table
//! of `docs/sql-views.md` for the `Rich` row type, column by column.

use graph::GraphError;
use operators::prelude::*;

use super::{RICH_COLUMNS, Rich, view_of};
use crate::harness::{Kind, Opened, sql_kinds, with_pg_client};

/// Each view column of `Rich`, its Rust field and its documented types:
/// Postgres (as `format_type` spells it: `TIMESTAMP` is `timestamp without
/// time zone`) and SQLite.
const RICH_TYPES: [(&str, &str, &str, &str); 17] = [
    ("id", "i64", "bigint", "INTEGER"),
    ("name", "String", "text", "TEXT"),
    ("score", "F64", "double precision", "REAL"),
    ("raw", "f64", "double precision", "REAL"),
    ("day", "NaiveDate", "date", "TEXT"),
    (
        "at",
        "Option<NaiveDateTime>",
        "timestamp without time zone",
        "TEXT",
    ),
    ("flag", "bool", "boolean", "INTEGER"),
    ("blob", "Vec<u8>", "bytea", "BLOB"),
    ("uid", "Uuid", "uuid", "BLOB"),
    ("big", "u64", "numeric", "TEXT"),
    ("inner_a", "Option<Inner>.a: i64", "bigint", "INTEGER"),
    ("inner_b", "Option<Inner>.b: Option<String>", "text", "TEXT"),
    ("pos_0", "(i32, _)", "bigint", "INTEGER"),
    ("pos_1", "(_, String)", "text", "TEXT"),
    ("tag", "an enum", "jsonb", "TEXT"),
    ("list", "Vec<i64>", "jsonb", "TEXT"),
    // Not a field: the weight (the doc names no type; an i64 is BIGINT).
    ("count", "the weight", "bigint", "INTEGER"),
];

/// `(column, declared type)` of `relation` (a table or a view), in order.
fn declared_types(store: &Opened, relation: &str) -> Vec<(String, String)> {
    if let Some(s) = store.sqlite() {
        let conn = rusqlite::Connection::open(s.path()).expect("open the file");
        let mut st = conn
            .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
            .expect("pragma_table_info");
        return st
            .query_map([relation], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
    }
    with_pg_client(async |c| {
        c.query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE r.relname = $1 AND n.nspname = current_schema() \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&relation],
        )
        .await
        .expect("pg_attribute")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    })
}

/// What the Postgres catalogue says of `relation`'s kind (`v` view, `r`
/// table), to be sure the names read are the view's and the table's.
fn pg_relkind(relation: &str) -> String {
    with_pg_client(async |c| {
        let kind: i8 = c
            .query_one(
                "SELECT r.relkind FROM pg_class r \
                 JOIN pg_namespace n ON n.oid = r.relnamespace \
                 WHERE r.relname = $1 AND n.nspname = current_schema()",
                &[&relation],
            )
            .await
            .expect("pg_class")
            .get(0);
        (kind as u8 as char).to_string()
    })
}

/// On every SQL store: the `Rich` cache's view has exactly the documented
/// type per column, and so have its table's `v_` columns (the weight, `c`,
/// as the view's `count`); on SQLite the view's declared types are its
/// table's (it selects the columns as they are).
#[test]
fn view_and_value_column_types_are_the_documented_ones() -> Result<(), GraphError> {
    let by_id = Index::new("id", |r: &Rich| r.id);
    let (graph, _) = Graph::build(|q| {
        let (input, x) = q.input::<Rich>("rich")?;
        q.cache("rich_cache", x, &[&by_id])?;
        Ok(input)
    })?;
    let names: Vec<&str> = RICH_TYPES.iter().map(|t| t.0).collect();
    assert_eq!(names, RICH_COLUMNS, "this table follows the view's columns");
    for kind in sql_kinds() {
        let store = kind.open(&graph)?;
        let table = store.table("rich_cache");
        let view = view_of(&store, "rich_cache");
        let expected = |column: &str, ty: &str| (column.to_owned(), ty.to_owned());
        let expected_view: Vec<(String, String)> = RICH_TYPES
            .iter()
            .map(|(c, _, pg, lite)| expected(c, if kind == Kind::Postgres { pg } else { lite }))
            .collect();
        // The table's value columns, `v_<column>`, and its weight `c`,
        // named as the view names them.
        let expected_table: Vec<(String, String)> = expected_view
            .iter()
            .map(|(c, ty)| match c.as_str() {
                "count" => ("c".to_owned(), ty.clone()),
                c => (format!("v_{c}"), ty.clone()),
            })
            .collect();
        let got_view = declared_types(&store, &view);
        let of_table = declared_types(&store, &table);
        let got_table: Vec<(String, String)> = expected_table
            .iter()
            .map(|(c, _)| {
                of_table
                    .iter()
                    .find(|(n, _)| n == c)
                    .cloned()
                    .unwrap_or_else(|| (c.clone(), format!("no column in {of_table:?}")))
            })
            .collect();
        if kind == Kind::Postgres {
            assert_eq!(pg_relkind(&view), "v", "{view} is a view");
            assert_eq!(pg_relkind(&table), "r", "{table} is a table");
        }
        // Field by field, so that a failure names the Rust type.
        for (((column, rust, _, _), want), got) in
            RICH_TYPES.iter().zip(&expected_view).zip(&got_view)
        {
            assert_eq!(got, want, "{kind:?}: view column {column} ({rust})");
        }
        assert_eq!(got_view, expected_view, "{kind:?}: {view}");
        for (((column, rust, _, _), want), got) in
            RICH_TYPES.iter().zip(&expected_table).zip(&got_table)
        {
            assert_eq!(got, want, "{kind:?}: table column for {column} ({rust})");
        }
        // No other `v_` column: the value columns are the view's.
        let v_columns = of_table.iter().filter(|(n, _)| n.starts_with("v_")).count();
        assert_eq!(v_columns, RICH_TYPES.len() - 1, "{kind:?}: {of_table:?}");
    }
    Ok(())
}
