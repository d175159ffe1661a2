//! Writing an iteration's rows, and explaining a write the server refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::borrow::Cow;

use graph::{Cell, EncodedRow, StateKind, StateSpec, StoreError};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use zset::KeyValue;

use super::encode::{CellArray, PgArray, pk_arrays};
use super::runtime::{Conn, on};
use super::statements::{PgSql, Tables};
use crate::StoreStats;
use crate::sql::{self, TableSchema};

/// The text of the error [`Tables::guard_sql`] raises.
pub(super) const ALREADY_APPLIED: &str = "stepping: time already applied to";

/// The text of the error [`Tables::generation_guard_sql`] raises: the store
/// was migrated since this handle opened it.
pub(super) const QUERY_CHANGED: &str = "stepping: the query changed, generation";

/// Writes a delta with one multi-row upsert (and one delete for keyed rows
/// whose weight reached zero); no statement carries the same key twice.
///
/// Everything that can fail in the client (encoding the rows, preparing the
/// statements) happens before anything is sent, and both statements go out
/// on the future's first poll once their statements are cached: a caller
/// can pipeline `COMMIT` behind it (see [`PostgresTx::commit`]). A row whose
/// identity already holds a different value fails the statement (the
/// server refuses the `NULL` the upsert writes then), reported as
/// [`StoreError::IdentityCollision`]. Any failure sets `failed` as it
/// happens: a statement failing in the client while the other may still be
/// under way, and anything failing before a statement is sent within the
/// future's first poll (so a pipelined `COMMIT` polled after it sees it).
pub(crate) async fn write_rows<C: Conn>(
    conn: &C,
    spec: &StateSpec,
    schema: &TableSchema,
    sql: &PgSql,
    rows: &[EncodedRow],
    stats: &Mutex<StoreStats>,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    let result = send_rows(conn, spec, schema, sql, rows, stats, failed).await;
    if result.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    result
}

/// Writes the rows of an undo entry (see `sql::undo_of`): as
/// [`write_rows`], but with the upsert that cancels stored rows on every
/// table, a feed's too (undoing a feed's write removes its rows).
pub(crate) async fn undo_rows<C: Conn>(
    conn: &C,
    spec: &StateSpec,
    schema: &TableSchema,
    sql: &PgSql,
    rows: &[EncodedRow],
    stats: &Mutex<StoreStats>,
) -> Result<(), StoreError> {
    let failed = AtomicBool::new(false);
    send_with(conn, spec, schema, sql, &sql.upsert, rows, stats, &failed).await
}

/// [`write_rows`], but setting `failed` only for a statement that fails.
pub(super) async fn send_rows<C: Conn>(
    conn: &C,
    spec: &StateSpec,
    schema: &TableSchema,
    sql: &PgSql,
    rows: &[EncodedRow],
    stats: &Mutex<StoreStats>,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    send_with(
        conn,
        spec,
        schema,
        sql,
        sql.write(spec),
        rows,
        stats,
        failed,
    )
    .await
}

/// [`send_rows`] with `write` as the statement that adds the rows.
#[allow(clippy::too_many_arguments)]
async fn send_with<C: Conn>(
    conn: &C,
    spec: &StateSpec,
    schema: &TableSchema,
    sql: &PgSql,
    write: &str,
    rows: &[EncodedRow],
    stats: &Mutex<StoreStats>,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let keyed = schema.kind == StateKind::Keyed;
    let (mut upserts, deletes): (Vec<&EncodedRow>, Vec<&EncodedRow>) =
        rows.iter().partition(|r| !(keyed && r.weight == 0));
    // In primary-key order: the new row versions of one key land next to
    // each other in the heap (Postgres does not cluster tables), so a read
    // by the first index touches few pages; and concurrent writers lock
    // rows in one order.
    if !schema.clustered.is_empty() {
        upserts.sort_unstable_by(|a, b| {
            a.keys[schema.clustered.clone()]
                .cmp(&b.keys[schema.clustered.clone()])
                .then(a.identity.cmp(&b.identity))
                .then(a.step.cmp(&b.step))
        });
    }
    let deleted = Located::of(schema, &deletes)?;
    let n = upserts.len();
    let ids: Vec<i64> = upserts.iter().map(|r| r.identity).collect();
    let steps: Vec<i32> = upserts.iter().map(|r| r.step as i32).collect();
    let data: Vec<&[u8]> = upserts.iter().map(|r| r.data.as_slice()).collect();
    let weights: Vec<i64> = upserts.iter().map(|r| r.weight).collect();
    let mut keys: Vec<PgArray> = schema
        .columns
        .iter()
        .map(|c| PgArray::new(c.key.ty, n))
        .collect();
    for r in &upserts {
        for (a, v) in keys.iter_mut().zip(&r.keys) {
            a.push(&schema.name, v)?;
        }
    }
    // A cache's value columns (rows read back from an undo log carry
    // none: computed from their data).
    let computed: Vec<Cow<'_, [Cell]>> = if schema.values.is_empty() {
        Vec::new()
    } else {
        upserts
            .iter()
            .map(|r| crate::views::cells_of(spec, schema, r))
            .collect::<Result<_, _>>()?
    };
    let mut values: Vec<CellArray<'_>> = schema
        .values
        .iter()
        .map(|v| CellArray::new(v.ty, n))
        .collect();
    for cells in &computed {
        for (a, cell) in values.iter_mut().zip(cells.iter()) {
            a.push(&schema.name, cell)?;
        }
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
    if schema.nested() {
        params.push(&steps);
    }
    params.push(&data);
    params.extend(keys.iter().map(PgArray::param));
    params.extend(values.iter().map(CellArray::param));
    params.push(&weights);
    let prepared = async |needed: bool, text: &str| match needed {
        true => conn
            .prepare(text)
            .await
            .map(Some)
            .map_err(on(schema, "writing")),
        false => Ok(None),
    };
    let delete = prepared(!deletes.is_empty(), &sql.delete).await?;
    let upsert = prepared(!upserts.is_empty(), write).await?;
    if let Ok(mut s) = stats.lock() {
        s.rows_written += rows.len() as u64;
        s.statements += u64::from(upsert.is_some()) + u64::from(delete.is_some());
    }
    let marked = |result: Result<u64, tokio_postgres::Error>| {
        if result.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        result.map(drop)
    };
    let deleting = async {
        match &delete {
            Some(stmt) => marked(conn.client().execute(stmt, &deleted.params()).await),
            None => Ok(()),
        }
    };
    let upserting = async {
        match &upsert {
            Some(stmt) => marked(conn.client().execute(stmt, &params).await),
            None => Ok(()),
        }
    };
    let (deleted, upserted) = tokio::join!(deleting, upserting);
    deleted.map_err(on(schema, "writing"))?;
    upserted.map_err(on(schema, "writing"))
}

/// Whether [`explain_refusal`] can say more about `e`.
pub(crate) fn refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::IdentityCollision { .. } | StoreError::WeightOverflow { .. }
    )
}

/// What the stored rows say about a write the server refused (`e`, an
/// identity collision or a weight overflow, naming one of the tables of
/// `written`: each a table's position and the rows written to it), read
/// once the transaction has ended: garbage bytes where the write met a row
/// are `Corrupt`, not a collision, and an overflow gets its row's identity
/// (see [`sql::refused_write`]). Anything else, or a refusal the stored rows
/// do not explain, is `e` itself.
pub(crate) async fn explain_refusal<C: Conn>(
    conn: &C,
    tables: &Tables,
    written: &[(usize, &[EncodedRow])],
    e: StoreError,
) -> StoreError {
    let (table, named) = match &e {
        StoreError::IdentityCollision { table, identity } => (table, Some(*identity)),
        StoreError::WeightOverflow { table, .. } => (table, None),
        _ => return e,
    };
    let Some(&(s, rows)) = written
        .iter()
        .find(|(s, _)| tables.schemas.get(*s).is_some_and(|x| &x.name == table))
    else {
        return e;
    };
    let (spec, schema, sql) = (&tables.specs[s], &tables.schemas[s], &tables.sql[s]);
    let rows: Vec<&EncodedRow> = rows.iter().filter(|r| r.weight != 0).collect();
    let keys: Vec<Vec<KeyValue>> = rows
        .iter()
        .map(|r| r.keys[schema.clustered.clone()].to_vec())
        .collect();
    let identities: Vec<i64> = rows.iter().map(|r| r.identity).collect();
    let Ok(arrays) = pk_arrays(schema, &keys) else {
        return e;
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(PgArray::param).collect();
    params.push(&identities);
    let stored = match conn.prepare(&sql.by_identity).await {
        Ok(stmt) => conn.client().query(&stmt, &params).await,
        Err(err) => Err(err),
    };
    let Ok(stored) = stored else {
        return e;
    };
    let by_key: HashMap<(i64, u32), &EncodedRow> =
        rows.iter().map(|r| ((r.identity, r.step), *r)).collect();
    let mut found = None;
    for r in &stored {
        let step: i32 = if schema.nested() {
            r.try_get(3).unwrap_or(-1)
        } else {
            0
        };
        let (Ok(identity), Ok(data), Ok(c)) = (
            r.try_get::<_, i64>(0),
            r.try_get::<_, &[u8]>(1),
            r.try_get::<_, i64>(2),
        ) else {
            continue;
        };
        let Some(row) = u32::try_from(step)
            .ok()
            .and_then(|step| by_key.get(&(identity, step)))
        else {
            continue;
        };
        if let Some(refused) = sql::refused_write(spec, schema, row, data, c) {
            // The row the server named, if it named one.
            if named.is_none_or(|n| n == identity) {
                return refused;
            }
            found.get_or_insert(refused);
        }
    }
    found.unwrap_or(e)
}

/// Rows located by primary key, as the arrays of `PgSql::delete`.
pub(super) struct Located {
    pub(super) keys: Vec<PgArray>,
    pub(super) ids: Vec<i64>,
    pub(super) steps: Option<Vec<i32>>,
}

impl Located {
    pub(super) fn of(schema: &TableSchema, rows: &[&EncodedRow]) -> Result<Located, StoreError> {
        let keys: Vec<Vec<KeyValue>> = rows
            .iter()
            .map(|r| r.keys[schema.clustered.clone()].to_vec())
            .collect();
        Ok(Located {
            keys: pk_arrays(schema, &keys)?,
            ids: rows.iter().map(|r| r.identity).collect(),
            steps: schema
                .nested()
                .then(|| rows.iter().map(|r| r.step as i32).collect()),
        })
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = self.keys.iter().map(PgArray::param).collect();
        params.push(&self.ids);
        if let Some(steps) = &self.steps {
            params.push(steps);
        }
        params
    }
}
