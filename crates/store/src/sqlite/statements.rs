//! The SQL text of each state table's reads and writes.

use graph::StateKind;

use crate::sql::{self, TableSchema};

/// The SQL of one table, built once.
pub(super) struct TableSql {
    pub(super) select: String,
    pub(super) by_index: Vec<String>,
    pub(super) by_identity: String,
    pub(super) first: Vec<String>,
    pub(super) ties: Vec<String>,
    /// Inserts a row, or combines it with the stored row of its primary key
    /// when that row holds the same data (a keyed table: the same key
    /// columns): it changes one row, or none when the caller must look
    /// closer ([`stored`](Self::stored)). No `RETURNING`: SQLite runs a
    /// statement with one in a statement journal, copying every page it
    /// touches, and buffers its rows in a temporary table.
    pub(super) upsert: String,
    /// The data and weight stored under a primary key.
    pub(super) stored: String,
    /// Deletes a row by primary key.
    pub(super) delete: String,
    /// Deletes a row by primary key if it holds exactly this data and
    /// weight: a removal that cancels a row in one statement.
    pub(super) cancel: String,
    pub(super) max_step: String,
}

impl TableSql {
    pub(super) fn of(s: &TableSchema) -> TableSql {
        let cols = if s.nested() {
            "identity, data, c, step"
        } else {
            "identity, data, c"
        };
        let select = format!("SELECT {cols} FROM {}", s.name);
        let eq = |range: std::ops::Range<usize>| -> String {
            s.columns[range]
                .iter()
                .map(|c| format!("{} IS ?", c.name))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let by_index = s
            .indexes
            .iter()
            .map(|ix| {
                if ix.columns.is_empty() {
                    select.clone()
                } else {
                    format!("{select} WHERE {}", eq(ix.columns.clone()))
                }
            })
            .collect();
        let order = |ix: &sql::IndexSchema| -> String {
            let cols: Vec<String> = s.columns[ix.columns.clone()]
                .iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c.name,
                        if c.key.descending { "DESC" } else { "ASC" }
                    )
                })
                .collect();
            if cols.is_empty() {
                String::new()
            } else {
                format!(" ORDER BY {}", cols.join(", "))
            }
        };
        let key_cols = |ix: &sql::IndexSchema| -> String {
            s.columns[ix.columns.clone()]
                .iter()
                .map(|c| format!(", {}", c.name))
                .collect()
        };
        let prefix_where = |ix: &sql::IndexSchema| -> String {
            let p = ix.columns.start..ix.columns.start + ix.prefix;
            if p.is_empty() {
                String::new()
            } else {
                format!("{} AND ", eq(p))
            }
        };
        let first = s
            .indexes
            .iter()
            .map(|ix| {
                format!(
                    "SELECT {cols}{} FROM {} WHERE {}c > 0{} LIMIT ?",
                    key_cols(ix),
                    s.name,
                    prefix_where(ix),
                    order(ix)
                )
            })
            .collect();
        let ties = s
            .indexes
            .iter()
            .map(|ix| {
                let all = if ix.columns.is_empty() {
                    String::new()
                } else {
                    format!("{} AND ", eq(ix.columns.clone()))
                };
                format!(
                    "SELECT {cols}{} FROM {} WHERE {all}c > 0",
                    key_cols(ix),
                    s.name
                )
            })
            .collect();
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        let mut insert_cols = vec!["identity"];
        if s.nested() {
            insert_cols.push("step");
        }
        insert_cols.push("data");
        insert_cols.extend(&names);
        insert_cols.extend(s.values.iter().map(|v| v.name.as_str()));
        insert_cols.push("c");
        let marks = vec!["?"; insert_cols.len()].join(", ");
        let pk = s.primary_key();
        let conflict = pk.join(", ");
        let by_pk = pk
            .iter()
            .map(|c| format!("{c} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let upsert = match s.kind {
            StateKind::Keyed => {
                let same_key: Vec<String> = names
                    .iter()
                    .map(|n| format!("{n} IS excluded.{n}"))
                    .collect();
                let guard = if same_key.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", same_key.join(" AND "))
                };
                format!(
                    "INSERT INTO {} ({}) VALUES ({marks}) ON CONFLICT ({conflict}) DO UPDATE SET data = excluded.data, c = excluded.c{guard}",
                    s.name,
                    insert_cols.join(", ")
                )
            }
            // A sum that is zero (the row must go) or overflows (SQLite
            // makes it a float) changes nothing, like a collision.
            _ => format!(
                "INSERT INTO {} ({}) VALUES ({marks}) ON CONFLICT ({conflict}) DO UPDATE SET c = c + excluded.c \
                 WHERE data = excluded.data AND typeof(c + excluded.c) = 'integer' AND c + excluded.c <> 0",
                s.name,
                insert_cols.join(", ")
            ),
        };
        let stored = format!("SELECT data, c FROM {} WHERE {by_pk}", s.name);
        let delete = format!("DELETE FROM {} WHERE {by_pk}", s.name);
        let cancel = format!("{delete} AND data = ? AND c = ?");
        TableSql {
            // Every step of a nested value.
            by_identity: format!(
                "{select} WHERE {}",
                pk.iter()
                    .filter(|c| **c != "step")
                    .map(|c| format!("{c} = ?"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
            select,
            by_index,
            first,
            ties,
            upsert,
            stored,
            delete,
            cancel,
            max_step: format!("SELECT MAX(step) FROM {}", s.name),
        }
    }
}
