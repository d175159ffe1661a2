//! Reads of state rows by key, by index order and by step.

use graph::{StateKind, StoreError};
use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use zset::KeyValue;

use super::Sqlite;
use super::encode::{on, row_of, to_sqlite};
use super::statements::TableSql;
use crate::sql::{SqlRead, SqlRow, TableSchema};

impl Sqlite {
    pub(super) fn run_read(
        &self,
        schema: &TableSchema,
        sql: &TableSql,
        read: &SqlRead,
    ) -> Result<Vec<SqlRow>, StoreError> {
        let ctx = || on(schema, "reading");
        let verify = schema.kind != StateKind::Keyed;
        let nested = schema.nested();
        let mut rows = Vec::new();
        let collect =
            |stmt: &str, params: Vec<SqlValue>, rows: &mut Vec<SqlRow>| -> Result<(), StoreError> {
                let mut st = self.conn.prepare_cached(stmt).map_err(ctx())?;
                let mut q = st.query(params_from_iter(params)).map_err(ctx())?;
                let before = rows.len();
                while let Some(r) = q.next().map_err(ctx())? {
                    rows.push(row_of(&schema.name, nested, verify, r)?);
                }
                let read = (rows.len() - before) as u64;
                self.count(|s| {
                    s.statements += 1;
                    s.rows_read += read;
                });
                Ok(())
            };
        match read {
            SqlRead::All => collect(&sql.select, Vec::new(), &mut rows)?,
            SqlRead::ByIndex { index, keys } => {
                let stmt = sql
                    .by_index
                    .get(*index)
                    .ok_or_else(|| bad_index(schema, *index))?;
                for key in keys {
                    let params = key
                        .iter()
                        .map(|v| to_sqlite(&schema.name, v))
                        .collect::<Result<_, _>>()?;
                    collect(stmt, params, &mut rows)?;
                }
            }
            SqlRead::ByIdentity { ids } => {
                for (id, keys) in ids {
                    let mut params = Vec::with_capacity(schema.clustered.len() + 1);
                    for k in &keys[schema.clustered.clone()] {
                        params.push(to_sqlite(&schema.name, k)?);
                    }
                    params.push(SqlValue::Integer(*id));
                    collect(&sql.by_identity, params, &mut rows)?;
                }
            }
            SqlRead::First {
                index,
                prefixes,
                limit,
            } => {
                let ix = schema
                    .indexes
                    .get(*index)
                    .ok_or_else(|| bad_index(schema, *index))?;
                let width = ix.columns.len();
                let groups: Vec<Vec<KeyValue>> =
                    prefixes.clone().unwrap_or_else(|| vec![Vec::new()]);
                for prefix in groups {
                    let mut params: Vec<SqlValue> = prefix
                        .iter()
                        .map(|v| to_sqlite(&schema.name, v))
                        .collect::<Result<_, _>>()?;
                    params.push(SqlValue::Integer(*limit as i64));
                    let (first, last_key) =
                        self.first_rows(schema, &sql.first[*index], params, width)?;
                    let got = first.len();
                    rows.extend(first);
                    if got >= *limit
                        && let Some(last_key) = last_key
                    {
                        // Every further row tied with the last one, so the caller
                        // can break ties exactly.
                        let (ties, _) =
                            self.first_rows(schema, &sql.ties[*index], last_key, width)?;
                        let seen: std::collections::HashSet<i64> =
                            rows.iter().map(|r| r.identity).collect();
                        rows.extend(ties.into_iter().filter(|r| !seen.contains(&r.identity)));
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Rows of a `first`/`ties` query, and the key columns of the last one.
    pub(super) fn first_rows(
        &self,
        schema: &TableSchema,
        stmt: &str,
        params: Vec<SqlValue>,
        width: usize,
    ) -> Result<(Vec<SqlRow>, Option<Vec<SqlValue>>), StoreError> {
        let ctx = || on(schema, "reading the first rows of");
        let nested = schema.nested();
        let base = if nested { 4 } else { 3 };
        let mut st = self.conn.prepare_cached(stmt).map_err(ctx())?;
        let mut q = st.query(params_from_iter(params)).map_err(ctx())?;
        let mut rows = Vec::new();
        let mut last = None;
        self.count(|s| s.statements += 1);
        while let Some(r) = q.next().map_err(ctx())? {
            self.count(|s| s.rows_read += 1);
            rows.push(row_of(&schema.name, nested, true, r)?);
            let key: Vec<SqlValue> = (0..width)
                .map(|i| r.get::<_, SqlValue>(base + i))
                .collect::<Result<_, _>>()
                .map_err(ctx())?;
            last = Some(key);
        }
        Ok((rows, last))
    }
}

pub(super) fn bad_index(schema: &TableSchema, index: usize) -> StoreError {
    StoreError::SchemaMismatch {
        table: schema.name.clone(),
        detail: format!("no index number {index}"),
    }
}
