//! Reads of state rows by key, by index order and by step.

use std::sync::Mutex;

use graph::{StateKind, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use zset::{ColumnType, KeyValue};

use super::encode::{PgArray, PgRow, key_arrays, key_from_row, pk_arrays, row_of, scalar_param};
use super::runtime::{Conn, on};
use super::statements::PgSql;
use crate::StoreStats;
use crate::sql::{self, SqlRead, TableSchema};

/// Runs the (cached) prepared read `text` on `schema`'s table, counting it.
pub(super) async fn query_rows<C: Conn>(
    conn: &C,
    schema: &TableSchema,
    stats: &Mutex<StoreStats>,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let stmt = conn.prepare(text).await.map_err(on(schema, "reading"))?;
    let rows = conn
        .client()
        .query(&stmt, params)
        .await
        .map_err(on(schema, "reading"))?;
    if let Ok(mut s) = stats.lock() {
        s.statements += 1;
        s.rows_read += rows.len() as u64;
    }
    Ok(rows)
}

pub(crate) async fn read_rows<C: Conn>(
    conn: &C,
    schema: &TableSchema,
    sql: &PgSql,
    read: &SqlRead,
    stats: &Mutex<StoreStats>,
) -> Result<Vec<PgRow>, StoreError> {
    let nested = schema.nested();
    let verify = schema.kind != StateKind::Keyed;
    let query = |text: String, params: Vec<Box<dyn ToSql + Sync + Send>>| async move {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        query_rows(conn, schema, stats, &text, &refs).await
    };
    let mut out = Vec::new();
    match read {
        SqlRead::All => {
            for r in query(sql.select.clone(), Vec::new()).await? {
                out.push(row_of(&schema.name, nested, verify, r)?);
            }
        }
        SqlRead::ByIndex { index, keys } => {
            let ix = schema
                .indexes
                .get(*index)
                .ok_or_else(|| bad_index(schema, *index))?;
            if ix.columns.is_empty() {
                if !keys.is_empty() {
                    for r in query(sql.select.clone(), Vec::new()).await? {
                        out.push(row_of(&schema.name, nested, verify, r)?);
                    }
                }
                return Ok(out);
            }
            // Keys with a NULL part cannot be matched with `=`: ask for them
            // one at a time with `IS NULL`.
            let (plain, nulls): (Vec<Vec<KeyValue>>, Vec<Vec<KeyValue>>) = keys
                .iter()
                .cloned()
                .partition(|k| !k.contains(&KeyValue::Null));
            if !plain.is_empty() {
                let arrays = key_arrays(schema, *index, &plain)?;
                let refs: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(PgArray::param).collect();
                for r in query_rows(conn, schema, stats, &sql.by_index[*index], &refs).await? {
                    out.push(row_of(&schema.name, nested, verify, r)?);
                }
            }
            for key in nulls {
                let cs = &schema.columns[ix.columns.clone()];
                let mut conds = Vec::new();
                let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
                for (c, v) in cs.iter().zip(&key) {
                    if matches!(v, KeyValue::Null) {
                        conds.push(format!("t.{} IS NULL", c.name));
                    } else {
                        params.push(scalar_param(v));
                        conds.push(format!("t.{} = ${}", c.name, params.len()));
                    }
                }
                for r in query(
                    format!("{} WHERE {}", sql.select, conds.join(" AND ")),
                    params,
                )
                .await?
                {
                    out.push(row_of(&schema.name, nested, verify, r)?);
                }
            }
        }
        SqlRead::ByIdentity { ids } => {
            if !ids.is_empty() {
                let keys: Vec<Vec<KeyValue>> = ids
                    .iter()
                    .map(|(_, k)| k[schema.clustered.clone()].to_vec())
                    .collect();
                let identities: Vec<i64> = ids.iter().map(|(i, _)| *i).collect();
                let arrays = pk_arrays(schema, &keys)?;
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    arrays.iter().map(PgArray::param).collect();
                params.push(&identities);
                for r in query_rows(conn, schema, stats, &sql.by_identity, &params).await? {
                    out.push(row_of(&schema.name, nested, verify, r)?);
                }
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
            let base = if nested { 4 } else { 3 };
            let types: Vec<ColumnType> = schema.columns[ix.columns.clone()]
                .iter()
                .map(|c| c.key.ty)
                .collect();
            for prefix in prefixes.clone().unwrap_or_else(|| vec![Vec::new()]) {
                let mut params: Vec<Box<dyn ToSql + Sync + Send>> = prefix
                    .iter()
                    .filter(|v| !matches!(v, KeyValue::Null))
                    .map(scalar_param)
                    .collect();
                params.push(Box::new(*limit as i64));
                let rows = query(sql.first(schema, *index, &prefix, false), params).await?;
                let got = rows.len();
                let mut last: Option<Vec<KeyValue>> = None;
                for r in rows {
                    let key = (0..width)
                        .map(|i| key_from_row(&r, base + i, types[i]))
                        .collect::<Result<_, _>>();
                    last = Some(key.map_err(on(schema, "reading"))?);
                    out.push(row_of(&schema.name, nested, true, r)?);
                }
                if got >= *limit
                    && let Some(last) = last
                {
                    let params: Vec<Box<dyn ToSql + Sync + Send>> = last
                        .iter()
                        .filter(|v| !matches!(v, KeyValue::Null))
                        .map(scalar_param)
                        .collect();
                    let seen: std::collections::HashSet<i64> =
                        out.iter().map(|r| r.identity).collect();
                    for r in query(sql.first(schema, *index, &last, true), params).await? {
                        let row = row_of(&schema.name, nested, true, r)?;
                        if !seen.contains(&row.identity) {
                            out.push(row);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

pub(crate) async fn max_step<C: Conn>(
    conn: &C,
    schema: &TableSchema,
    sql: &PgSql,
) -> Result<Option<u32>, StoreError> {
    let stmt = conn
        .prepare(&sql.max_step)
        .await
        .map_err(on(schema, "reading"))?;
    let row = conn
        .client()
        .query_one(&stmt, &[])
        .await
        .map_err(on(schema, "reading"))?;
    let max: Option<i32> = row.try_get(0).map_err(on(schema, "reading"))?;
    max.map(|m| sql::step_of(schema, i64::from(m))).transpose()
}

pub(super) fn bad_index(schema: &TableSchema, index: usize) -> StoreError {
    StoreError::SchemaMismatch {
        table: schema.name.clone(),
        detail: format!("no index number {index}"),
    }
}
