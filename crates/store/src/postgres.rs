//! The Postgres store: state tables next to the application's own, written
//! through a connection pool.
//!
//! The API is synchronous: a call drives a runtime owned by this crate on
//! the calling thread (see `runtime`). From async code, call it inside `tokio::task::spawn_blocking`, or
//! run an iteration inside a transaction you already hold with
//! [`Postgres::iteration_in`].

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::LocalBoxFuture;
use graph::{
    Changes, EncodedRow, FailedBatch, Graph, GraphError, Outputs, Read, Rewound, StateId,
    StateKind, StateSpec, StateStore, StateTx, StoreError, Time, Value, identity_of,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row, Statement};
use uuid::Uuid;
use zset::{ColumnType, KeyValue};

use crate::check::{self, RowProblem};
use crate::claims;
use crate::sql::{self, Dialect, OwnNames, SqlRead, SqlRow, TableSchema, check_prefix};
use crate::wait::Backoff;
use crate::{OpenOptions, StoreStats};

mod sizes;

/// The runtime every Postgres store of this process runs its I/O on.
///
/// It has no threads of its own: a store's call drives the runtime on the
/// calling thread (`block_on`), so a query's request and every message of
/// its reply are handled where the caller waits, with no hand-off to
/// another thread and back (a one-date cache read of 1,000 rows: about
/// 0.9 ms to 0.78 ms). The pool's connections live on it, so they make
/// progress only inside a store's calls; with several threads calling, one
/// drives the I/O of all of them at a time (tokio's `current_thread`
/// scheduler). Listening connections run on [`listener_runtime`].
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::backend("starting the Postgres runtime", e.clone()))
}

/// The runtime of the connections that `LISTEN` for commit notifications:
/// one thread, so notifications are read as they come even while no store
/// call is running (an unread listener would hold the server's
/// notification queue back).
fn listener_runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("stepping-pg-listen")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::backend("starting the Postgres listener runtime", e.clone()))
}

/// Runs `f` to completion on the store's runtime.
fn block_on<F: Future>(f: F) -> Result<F::Output, StoreError> {
    block_on_in(runtime()?, f)
}

/// Runs `f` to completion on `rt`, refusing (rather than panicking) when
/// called from inside an async runtime.
fn block_on_in<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> Result<F::Output, StoreError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(StoreError::backend(
            "calling the synchronous Postgres store",
            "called from inside an async runtime: use tokio::task::spawn_blocking, or Postgres::iteration_in",
        ));
    }
    Ok(rt.block_on(f))
}

pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::backend(context, describe(e))
}

/// The driver's error with the server's message and SQLSTATE, which its
/// own `Display` leaves out.
fn describe(e: tokio_postgres::Error) -> graph::BoxError {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()).into(),
        None => Box::new(e),
    }
}

/// Errors while `doing` something to `schema`'s table (a dropped table is
/// reported as missing).
fn on(schema: &TableSchema, doing: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let writing = doing == "writing";
    let (table, path, context) = (
        schema.name.clone(),
        schema.path.clone(),
        format!("{doing} `{}`", schema.name),
    );
    move |e| {
        let undefined = e
            .as_db_error()
            .is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::UNDEFINED_TABLE);
        if undefined {
            StoreError::MissingTable { table, path }
        } else if let Some(identity) = collision(&e) {
            StoreError::IdentityCollision { table, identity }
        } else if writing
            && e.as_db_error().is_some_and(|d| {
                d.code() == &tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE
            })
        {
            // The only arithmetic a write does is summing weights; the
            // server names no row (see `explain_refusal`).
            StoreError::WeightOverflow {
                table,
                identity: "one of the rows written".into(),
            }
        } else {
            StoreError::backend(context, describe(e))
        }
    }
}

/// The identity of the row a write refused for holding a different value
/// under it: the upsert writes a `NULL` `data` then (see `PgSql::of`), and
/// the server names the failing row, identity first.
fn collision(e: &tokio_postgres::Error) -> Option<i64> {
    let db = e.as_db_error()?;
    if db.code() != &tokio_postgres::error::SqlState::NOT_NULL_VIOLATION
        || db.column() != Some("data")
    {
        return None;
    }
    // "Failing row contains (identity, ...)", in the server's language.
    let detail = db.detail().unwrap_or_default();
    let row = detail.split_once('(').map_or("", |(_, r)| r);
    let digits = row.split([',', ')']).next().unwrap_or_default();
    Some(digits.trim().parse().unwrap_or_default())
}

struct PgDialect;

impl Dialect for PgDialect {
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
    fn table_options(&self, _schema: &TableSchema) -> &'static str {
        ""
    }
}

fn array_type(ty: ColumnType) -> &'static str {
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
enum PgArray {
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
    fn new(ty: ColumnType, capacity: usize) -> Self {
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

    fn push(&mut self, table: &str, v: &KeyValue) -> Result<(), StoreError> {
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

    fn param(&self) -> &(dyn ToSql + Sync) {
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

/// One key value as a query parameter.
fn scalar_param(v: &KeyValue) -> Box<dyn ToSql + Sync + Send> {
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
fn key_from_row(row: &Row, i: usize, ty: ColumnType) -> Result<KeyValue, tokio_postgres::Error> {
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

/// The SQL of one table, built once.
#[derive(Debug)]
pub(crate) struct PgSql {
    cols: &'static str,
    select: String,
    by_index: Vec<String>,
    by_identity: String,
    upsert: String,
    delete: String,
    max_step: String,
}

impl PgSql {
    fn of(s: &TableSchema) -> PgSql {
        let cols = if s.nested() {
            "t.identity, t.data, t.c, t.step"
        } else {
            "t.identity, t.data, t.c"
        };
        let select = format!("SELECT {cols} FROM {} AS t", s.name);
        let by_index = s
            .indexes
            .iter()
            .map(|ix| {
                if ix.columns.is_empty() {
                    return select.clone();
                }
                let cs = &s.columns[ix.columns.clone()];
                let arrays: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("${}::{}", i + 1, array_type(c.key.ty)))
                    .collect();
                let names: Vec<String> = (0..cs.len()).map(|i| format!("k{i}")).collect();
                let on: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("t.{} = k.k{i}", c.name))
                    .collect();
                format!(
                    "SELECT {cols} FROM {} AS t JOIN unnest({}) AS k({}) ON {}",
                    s.name,
                    arrays.join(", "),
                    names.join(", "),
                    on.join(" AND ")
                )
            })
            .collect();
        let mut insert_cols: Vec<String> = vec!["identity".into()];
        let mut types: Vec<&str> = vec!["int8[]"];
        if s.nested() {
            insert_cols.push("step".into());
            types.push("int4[]");
        }
        insert_cols.push("data".into());
        types.push("bytea[]");
        for c in &s.columns {
            insert_cols.push(c.name.clone());
            types.push(array_type(c.key.ty));
        }
        insert_cols.push("c".into());
        types.push("int8[]");
        let params: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}", i + 1))
            .collect();
        let conflict = s.primary_key().join(", ");
        // An identity that already holds a different value gets a `NULL`
        // `data`, which the table refuses: the statement fails (and with it
        // the transaction) instead of silently skipping the row, so nothing
        // needs to come back to be checked.
        let upsert = match s.kind {
            StateKind::Keyed => {
                let same: Vec<String> = s
                    .columns
                    .iter()
                    .map(|c| format!("t.{0} IS NOT DISTINCT FROM excluded.{0}", c.name))
                    .collect();
                let data = if same.is_empty() {
                    "excluded.data".to_owned()
                } else {
                    format!("CASE WHEN {} THEN excluded.data END", same.join(" AND "))
                };
                format!(
                    "INSERT INTO {} AS t ({}) SELECT * FROM unnest({}) ON CONFLICT ({conflict}) DO UPDATE SET data = {data}, c = excluded.c",
                    s.name,
                    insert_cols.join(", "),
                    params.join(", ")
                )
            }
            _ => {
                // One statement: rows the delta cancels are deleted (no
                // update leaving a zero row behind for a second statement),
                // the rest are added.
                let pk: Vec<String> = s
                    .primary_key()
                    .iter()
                    .map(|c| format!("t.{c} = d.{c}"))
                    .collect();
                let same_step = if s.nested() {
                    " AND g.step = d.step"
                } else {
                    ""
                };
                let gone_returning = if s.nested() {
                    "t.identity, t.step"
                } else {
                    "t.identity"
                };
                format!(
                    "WITH d AS (SELECT * FROM unnest({params}) AS d({cols})), \
                     gone AS (DELETE FROM {name} AS t USING d WHERE {pk} AND t.c + d.c = 0 AND t.data = d.data RETURNING {gone_returning}) \
                     INSERT INTO {name} AS t ({cols}) SELECT * FROM d WHERE NOT EXISTS (SELECT 1 FROM gone AS g WHERE g.identity = d.identity{same_step}) \
                     ON CONFLICT ({conflict}) DO UPDATE SET c = t.c + excluded.c, data = CASE WHEN t.data = excluded.data THEN t.data END",
                    name = s.name,
                    cols = insert_cols.join(", "),
                    params = params.join(", "),
                    pk = pk.join(" AND "),
                )
            }
        };
        // Rows by primary key (`by_identity`: every step), from one array
        // per column: `$1..` the clustered key columns, then identities,
        // then steps.
        let located = |with_step: bool| -> (String, String) {
            let mut arrays = Vec::new();
            let mut on = Vec::new();
            for (i, c) in s.columns[s.clustered.clone()].iter().enumerate() {
                arrays.push(format!("${}::{}", i + 1, array_type(c.key.ty)));
                on.push(format!("t.{} = d.k{i}", c.name));
            }
            let mut names: Vec<String> = (0..arrays.len()).map(|i| format!("k{i}")).collect();
            arrays.push(format!("${}::int8[]", arrays.len() + 1));
            names.push("i".into());
            on.push("t.identity = d.i".into());
            if with_step {
                arrays.push(format!("${}::int4[]", arrays.len() + 1));
                names.push("s".into());
                on.push("t.step = d.s".into());
            }
            (
                format!("unnest({}) AS d({})", arrays.join(", "), names.join(", ")),
                on.join(" AND "),
            )
        };
        let (d, on) = located(s.nested());
        let delete = format!("DELETE FROM {} AS t USING {d} WHERE {on}", s.name);
        let (d, on) = located(false);
        PgSql {
            cols,
            by_identity: format!("{select} JOIN {d} ON {on}"),
            select,
            by_index,
            upsert,
            delete,
            max_step: format!("SELECT MAX(step) FROM {}", s.name),
        }
    }

    /// `first` (or, with `ties`, the rows equal to a key) for one prefix:
    /// built per pattern of `NULL`s in the values.
    fn first(&self, s: &TableSchema, index: usize, values: &[KeyValue], ties: bool) -> String {
        let ix = &s.indexes[index];
        let cs = &s.columns[ix.columns.clone()];
        let mut conds = Vec::new();
        let mut n = 0;
        for (c, v) in cs.iter().zip(values) {
            if matches!(v, KeyValue::Null) {
                conds.push(format!("t.{} IS NULL", c.name));
            } else {
                n += 1;
                conds.push(format!("t.{} = ${n}", c.name));
            }
        }
        conds.push("t.c > 0".into());
        let keys: String = cs.iter().map(|c| format!(", t.{}", c.name)).collect();
        let mut q = format!(
            "SELECT {}{keys} FROM {} AS t WHERE {}",
            self.cols,
            s.name,
            conds.join(" AND ")
        );
        if !ties {
            let order: Vec<String> = cs
                .iter()
                .map(|c| {
                    let dir = if c.key.descending {
                        "DESC NULLS LAST"
                    } else {
                        "ASC NULLS FIRST"
                    };
                    format!("t.{} {dir}", c.name)
                })
                .collect();
            if !order.is_empty() {
                q.push_str(&format!(" ORDER BY {}", order.join(", ")));
            }
            q.push_str(&format!(" LIMIT ${}", n + 1));
        }
        q
    }
}

/// The text of the error [`Tables::guard_sql`] raises.
const ALREADY_APPLIED: &str = "stepping: time already applied to";

/// Everything about one graph's tables.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) prefix: String,
    /// The store's own tables.
    pub(crate) own: OwnNames,
    /// The store's query generation when opened: a migration bumps it (a
    /// `last_update` row named after the query table), and a handle
    /// opened before one refuses to go on (`QueryChanged`).
    pub(crate) generation: std::sync::atomic::AtomicI64,
    pub(crate) specs: Vec<StateSpec>,
    pub(crate) schemas: Vec<TableSchema>,
    pub(crate) sql: Vec<PgSql>,
    /// The times of the tables `$1`.
    times_sql: String,
    /// [`times_sql`](Self::times_sql), locking the rows until the
    /// transaction ends: an all-or-nothing iteration's frontier check, so
    /// that iterations of several processes never overlap on a table.
    lock_times_sql: String,
    /// Locks the time of table `$1` and fails (aborting the transaction,
    /// `22P02` with [`ALREADY_APPLIED`] in its message) if it has already
    /// reached `$2`: the first statement of a pipelined table's flush.
    guard_sql: String,
    /// Keeps what undoes a pipelined flush of table `$2` at time `$1`
    /// (`$3`, see `sql::undo_of`).
    keep_undo_sql: String,
    /// Drops the undo entries of the times up to `$1`.
    clear_undo_sql: String,
    /// Records the times of the tables `$1` as `$2` (never moving one
    /// back), and notifies waiters on channel `$3` in the same transaction:
    /// they hear of it exactly when it commits.
    last_update_sql: String,
    /// [`last_update_sql`](Self::last_update_sql) only for a table already
    /// at a frontier (`$4`), counting it.
    bump_if_at_sql: String,
}

impl Tables {
    fn new(prefix: &str, specs: Vec<StateSpec>) -> Tables {
        let schemas: Vec<TableSchema> = specs
            .iter()
            .map(|s| TableSchema::of(s, prefix, &PgDialect))
            .collect();
        let sql = schemas.iter().map(PgSql::of).collect();
        let own = OwnNames::of(prefix);
        let last_update = own.last_update.clone();
        let query = OwnNames::name(prefix, "query");
        Tables {
            prefix: prefix.to_owned(),
            own,
            generation: std::sync::atomic::AtomicI64::new(0),
            specs,
            schemas,
            sql,
            // With the store's query generation (see `Tables::generation`).
            times_sql: format!(
                "SELECT table_name, t FROM {last_update} WHERE table_name = ANY($1) OR table_name = '{query}'"
            ),
            // In name order, so that two iterations lock in the same order.
            lock_times_sql: format!(
                "SELECT table_name, t FROM {last_update} WHERE table_name = ANY($1) OR table_name = '{query}' \
                 ORDER BY table_name FOR UPDATE"
            ),
            // Plain SQL cannot raise an error; a failing cast can, carrying
            // its text.
            keep_undo_sql: format!(
                "INSERT INTO {undo} (t, table_name, rows) VALUES ($1, $2, $3) \
                 ON CONFLICT (t, table_name) DO UPDATE SET rows = excluded.rows",
                undo = OwnNames::name(prefix, "undo")
            ),
            clear_undo_sql: format!(
                "DELETE FROM {} WHERE t <= $1",
                OwnNames::name(prefix, "undo")
            ),
            guard_sql: format!(
                "SELECT CASE WHEN t >= $2 THEN ('{ALREADY_APPLIED} ' || table_name || ' at ' || t)::bigint \
                 ELSE t END FROM {last_update} WHERE table_name = $1 FOR UPDATE"
            ),
            last_update_sql: format!(
                "WITH done AS (INSERT INTO {last_update} AS l (table_name, t) SELECT n, $2 FROM unnest($1::text[]) AS n \
                 ON CONFLICT (table_name) DO UPDATE SET t = GREATEST(l.t, excluded.t) RETURNING 1) \
                 SELECT pg_notify($3, (SELECT count(*) FROM done)::text)"
            ),
            bump_if_at_sql: format!(
                "WITH done AS (UPDATE {last_update} AS l SET t = GREATEST(l.t, $2) \
                 WHERE l.table_name = ANY($1::text[]) AND l.t >= $4 RETURNING 1) \
                 SELECT (SELECT count(*) FROM done), pg_notify($3, (SELECT count(*) FROM done)::text)"
            ),
        }
    }

    /// Every table's name, in state order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.schemas.iter().map(|s| s.name.clone()).collect()
    }
    fn last_update(&self) -> String {
        self.own.last_update.clone()
    }
    fn tables(&self) -> String {
        self.own.tables.clone()
    }
    fn query(&self) -> String {
        OwnNames::name(&self.prefix, "query")
    }
    fn undo(&self) -> String {
        OwnNames::name(&self.prefix, "undo")
    }
    fn create_undo_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (t BIGINT NOT NULL, table_name TEXT NOT NULL, \
             rows BYTEA NOT NULL, PRIMARY KEY (t, table_name))",
            self.undo()
        )
    }
}

/// A connection the store's SQL runs on: a pooled client, or an
/// application's own transaction.
pub(crate) trait Conn: Sync {
    type C: GenericClient + Sync;
    fn client(&self) -> &Self::C;
    fn prepare(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send;
    /// Statements run inside a transaction someone else ends: a
    /// transaction of the store's own is then a savepoint.
    fn nested(&self) -> bool;
}

impl Conn for deadpool_postgres::Object {
    type C = tokio_postgres::Client;
    fn client(&self) -> &tokio_postgres::Client {
        self
    }
    fn prepare(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send {
        self.prepare_cached(sql)
    }
    fn nested(&self) -> bool {
        false
    }
}

/// An application's connection or transaction, with our statement cache.
pub(crate) struct Borrowed<'a, C> {
    pub(crate) client: &'a C,
    pub(crate) cache: tokio::sync::Mutex<HashMap<String, Statement>>,
}

impl<C: GenericClient + Sync> Conn for Borrowed<'_, C> {
    type C = C;
    fn client(&self) -> &C {
        self.client
    }
    async fn prepare(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let mut cache = self.cache.lock().await;
        if let Some(s) = cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        cache.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
    fn nested(&self) -> bool {
        true
    }
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

fn row_of(table: &str, nested: bool, verify: bool, r: Row) -> Result<PgRow, StoreError> {
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

fn key_arrays(
    schema: &TableSchema,
    index: usize,
    keys: &[Vec<KeyValue>],
) -> Result<Vec<PgArray>, StoreError> {
    columns_arrays(schema, schema.indexes[index].columns.clone(), keys)
}

/// One array per clustered key column, of `keys` (each the clustered
/// columns' values).
fn pk_arrays(schema: &TableSchema, keys: &[Vec<KeyValue>]) -> Result<Vec<PgArray>, StoreError> {
    columns_arrays(schema, schema.clustered.clone(), keys)
}

fn columns_arrays(
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

/// Runs the (cached) prepared read `text` on `schema`'s table, counting it.
async fn query_rows<C: Conn>(
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
    schema: &TableSchema,
    sql: &PgSql,
    rows: &[EncodedRow],
    stats: &Mutex<StoreStats>,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    let result = send_rows(conn, schema, sql, rows, stats, failed).await;
    if result.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    result
}

/// [`write_rows`], but setting `failed` only for a statement that fails.
async fn send_rows<C: Conn>(
    conn: &C,
    schema: &TableSchema,
    sql: &PgSql,
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
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
    if schema.nested() {
        params.push(&steps);
    }
    params.push(&data);
    params.extend(keys.iter().map(PgArray::param));
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
    let upsert = prepared(!upserts.is_empty(), &sql.upsert).await?;
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
struct Located {
    keys: Vec<PgArray>,
    ids: Vec<i64>,
    steps: Option<Vec<i32>>,
}

impl Located {
    fn of(schema: &TableSchema, rows: &[&EncodedRow]) -> Result<Located, StoreError> {
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

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = self.keys.iter().map(PgArray::param).collect();
        params.push(&self.ids);
        if let Some(steps) = &self.steps {
            params.push(steps);
        }
        params
    }
}

/// The times of the tables `names`, in order, in one query.
pub(crate) async fn times_of<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let stmt = times_statement(conn, tables).await?;
    times_with(conn, &stmt, tables, names).await
}

/// [`times_of`], locking the tables' rows until the transaction ends.
pub(crate) async fn lock_times<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let stmt = conn
        .prepare(&tables.lock_times_sql)
        .await
        .map_err(pg(format!("locking `{}`", tables.last_update())))?;
    times_with(conn, &stmt, tables, names).await
}

/// The statement of [`times_of`], prepared (once per connection).
async fn times_statement<C: Conn>(conn: &C, tables: &Tables) -> Result<Statement, StoreError> {
    conn.prepare(&tables.times_sql)
        .await
        .map_err(pg(format!("reading `{}`", tables.last_update())))
}

/// [`times_of`] with its statement prepared: the query goes out when the
/// future is first polled.
async fn times_with<C: Conn>(
    conn: &C,
    stmt: &Statement,
    tables: &Tables,
    names: &[String],
) -> Result<Vec<i64>, StoreError> {
    let last_update = tables.last_update();
    let rows = conn
        .client()
        .query(stmt, &[&names])
        .await
        .map_err(pg(format!("reading `{last_update}`")))?;
    let mut found: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        let table: String = r
            .try_get(0)
            .map_err(pg(format!("reading `{last_update}`")))?;
        let t = r
            .try_get(1)
            .map_err(|e| sql::bad_time(&last_update, &table, e))?;
        found.insert(table, t);
    }
    let generation = found.get(&tables.query()).copied().unwrap_or(0);
    if generation != tables.generation.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(StoreError::QueryChanged {
            plan: Box::new(plan_of(conn.client(), tables).await?),
        });
    }
    names
        .iter()
        .map(|n| {
            found
                .get(n)
                .copied()
                .ok_or_else(|| sql::unknown_time(&last_update, n))
        })
        .collect()
}

/// The table furthest behind among `names`, and its time, if it is
/// before `frontier`.
async fn behind<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    frontier: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    let times = times_of(conn, tables, names).await?;
    Ok(names
        .iter()
        .zip(times)
        .min_by_key(|(_, t)| *t)
        .filter(|(_, t)| *t < frontier)
        .map(|(n, t)| (n.clone(), t)))
}

pub(crate) async fn set_last_update<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    t: i64,
) -> Result<(), StoreError> {
    let stmt = conn
        .prepare(&tables.last_update_sql)
        .await
        .map_err(pg("recording last_update"))?;
    let channel = channel(&tables.prefix);
    conn.client()
        .execute(&stmt, &[&names, &t, &channel])
        .await
        .map_err(pg("recording last_update"))?;
    Ok(())
}

/// [`set_last_update`] of table `name` if it is already at `frontier` (one
/// statement: the frontier check and the move in time together); `false`,
/// changing nothing, if it is behind. (A writer still in the middle of
/// moving it holds its row: the statement waits for that writer's commit
/// and then sees its time.)
async fn bump_if_at<C: Conn>(
    conn: &C,
    tables: &Tables,
    name: &String,
    t: i64,
    frontier: i64,
) -> Result<bool, StoreError> {
    let names = std::slice::from_ref(name);
    let stmt = conn
        .prepare(&tables.bump_if_at_sql)
        .await
        .map_err(pg("recording last_update"))?;
    let channel = channel(&tables.prefix);
    let row = conn
        .client()
        .query_one(&stmt, &[&names, &t, &channel, &frontier])
        .await
        .map_err(pg("recording last_update"))?;
    let moved: i64 = row.try_get(0).map_err(pg("recording last_update"))?;
    Ok(moved == 1)
}

/// Commits announced by Postgres `NOTIFY`, as a generation counter.
pub(crate) type Wake = tokio::sync::watch::Receiver<u64>;

/// The `LISTEN`/`NOTIFY` channel of the tables with `prefix`.
pub(crate) fn channel(prefix: &str) -> String {
    format!("stepping_{prefix}")
}

/// Waits until every table of `names` has been written up to `frontier`
/// (one query per poll): polls with backoff between `poll.0` and `poll.1`,
/// woken early by `wake`. Stuck for a while, it releases a time taken from
/// the tables' sequence whose taker is gone (see `claims`).
pub(crate) async fn wait_for<C: Conn>(
    conn: &C,
    tables: &Tables,
    names: &[String],
    frontier: i64,
    max_wait: Duration,
    poll: (Duration, Duration),
    mut wake: Option<Wake>,
) -> Result<(), StoreError> {
    let start = Instant::now();
    let mut backoff = Backoff::new(poll.0, poll.1);
    let mut watch = claims::Watch::new(max_wait);
    loop {
        if let Some(w) = wake.as_mut() {
            w.borrow_and_update();
        }
        let Some((table, seen)) = behind(conn, tables, names, frontier).await? else {
            return Ok(());
        };
        let waited = start.elapsed();
        if watch.due(waited) && watch.release(conn, tables, frontier, waited).await? {
            continue;
        }
        if start.elapsed() >= max_wait {
            return Err(StoreError::FrontierTimeout {
                table,
                frontier,
                seen: Some(seen),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        let pause = backoff.next(max_wait.saturating_sub(start.elapsed()));
        let woken = match wake.as_mut() {
            Some(w) => tokio::time::timeout(pause, w.changed()).await,
            None => {
                tokio::time::sleep(pause).await;
                Ok(Ok(()))
            }
        };
        if let Ok(Err(_)) = woken {
            // The listener is gone: poll only.
            wake = None;
        }
    }
}

/// A connection that `LISTEN`s to a channel and bumps a counter for every
/// notification.
struct Listener {
    wake: Wake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
) -> Result<Listener, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (bump, wake) = tokio::sync::watch::channel(0u64);
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<tokio_postgres::Client>();
    let task = tokio::spawn(async move {
        // Keep the client (and so the session and its LISTEN) alive.
        let mut ready = ready;
        let mut _client = None;
        loop {
            tokio::select! {
                c = &mut ready, if _client.is_none() => { _client = c.ok(); }
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => bump.send_modify(|g| *g += 1),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    let _ = ready_tx.send(client);
    Ok(Listener { wake, task })
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

fn bad_index(schema: &TableSchema, index: usize) -> StoreError {
    StoreError::SchemaMismatch {
        table: schema.name.clone(),
        detail: format!("no index number {index}"),
    }
}

/// A connection pool for [`Postgres`] stores, shareable by workers of one
/// process: deadpool-postgres, plus the configuration to open the extra
/// connection that listens for commit notifications.
///
/// Its connections belong to the stores' runtime, which runs only inside
/// a store's calls, so the pool is not handed out for other queries: for
/// the application's own, open connections (or a pool) of its own from
/// [`connection_config`](Self::connection_config), or run an iteration in
/// the application's transaction with [`Postgres::iteration_in`].
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    config: Arc<tokio_postgres::Config>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgPool({:?})", self.pool.status())
    }
}

impl PgPool {
    /// The connection configuration (e.g. to open a connection of one's own).
    pub fn connection_config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// The Postgres store: state tables (named `<prefix><path>`) in the
/// database of a connection pool, read through indexes and written as
/// multi-row upserts of the changed rows; an iteration is one transaction.
///
/// The store is synchronous (its calls drive its I/O on the calling
/// thread). Several
/// workers can share a pool ([`Postgres::with_pool`]).
///
/// ```no_run
/// # use graph::{Graph, GraphError};
/// # let (graph, _) = Graph::build(|q| Ok(q.input::<i64>("x")?.0))?;
/// let mut store = stepping_store::Postgres::open("host=/var/run/postgresql user=app dbname=app", &graph, stepping_store::OpenOptions::default())?;
/// # Ok::<(), GraphError>(())
/// ```
pub struct Postgres {
    pool: PgPool,
    fingerprint: String,
    tables: Arc<Tables>,
    max_wait: Duration,
    poll: (Duration, Duration),
    listener: Mutex<Option<Arc<Listener>>>,
    created: usize,
    attached: HashMap<String, Arc<(TableSchema, PgSql)>>,
    stats: Arc<Mutex<StoreStats>>,
    /// The graph the store was opened for (a migration runs a copy).
    graph: Graph,
    /// Migrate a store written by another version of the query.
    migrate: bool,
    /// The migration this open carried out.
    migration: Option<graph::MigrationPlan>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Postgres({} tables, prefix {:?})",
            self.tables.schemas.len(),
            self.tables.prefix
        )
    }
}

impl Postgres {
    /// A connection pool for `config` (a tokio-postgres connection string,
    /// `host=... user=... dbname=...` or `postgresql://...`) with up to
    /// `max_size` connections.
    ///
    /// # Errors
    /// An unparsable connection string.
    pub fn pool(config: &str, max_size: usize) -> Result<PgPool, StoreError> {
        let pg_config: tokio_postgres::Config = config.parse().map_err(|e| {
            StoreError::backend(format!("parsing the connection string {config:?}"), e)
        })?;
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend("building the connection pool", e))?;
        Ok(PgPool {
            pool,
            config: Arc::new(pg_config),
        })
    }

    /// Opens the store for `graph` on a new pool for `config`: creates
    /// missing tables (unless `options.create_tables` is false) and checks
    /// existing ones hold the same shape of state.
    ///
    /// # Errors
    /// A connection failure, [`StoreError::MissingTable`],
    /// [`StoreError::SchemaMismatch`] naming the table.
    pub fn open(config: &str, graph: &Graph, options: OpenOptions) -> Result<Postgres, StoreError> {
        Postgres::with_pool(Postgres::pool(config, 8)?, graph, options)
    }

    /// Opens the store for `graph` on an existing pool (shared by workers).
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn with_pool(
        pool: PgPool,
        graph: &Graph,
        options: OpenOptions,
    ) -> Result<Postgres, StoreError> {
        check_prefix(&options.prefix)?;
        let tables = Arc::new(Tables::new(&options.prefix, graph.states().to_vec()));
        let mut store = Postgres {
            pool,
            fingerprint: graph.fingerprint().to_owned(),
            tables,
            max_wait: options.max_wait,
            poll: options.poll,
            listener: Mutex::new(None),
            created: 0,
            attached: HashMap::new(),
            stats: Arc::new(Mutex::new(StoreStats::default())),
            graph: graph.clone(),
            migrate: options.migrate,
            migration: None,
        };
        store.created = store.prepare_tables(options.create_tables)?;
        let tables = Arc::clone(&store.tables);
        let generation = block_on(async {
            let conn = store.client().await?;
            conn.query_opt(
                &format!(
                    "SELECT t FROM {} WHERE table_name = $1",
                    tables.last_update()
                ),
                &[&tables.query()],
            )
            .await
            .and_then(|r| r.map(|r| r.try_get::<_, i64>(0)).transpose())
            .map_err(pg("reading the query's generation"))
        })??;
        tables.generation.store(
            generation.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(store)
    }

    /// The migration this open carried out (with
    /// [`OpenOptions::migrate`]), if the store held another version of the
    /// query: each state's action and the rows it holds.
    pub fn migration(&self) -> Option<&graph::MigrationPlan> {
        self.migration.as_ref()
    }

    /// The pool, to share with other workers.
    pub fn connection_pool(&self) -> &PgPool {
        &self.pool
    }

    /// A wake-up for frontier waits: notifications on this store's channel,
    /// from a connection that `LISTEN`s to it (started on first use; `None`
    /// if it cannot be, and waits then only poll).
    fn wake(&self) -> Option<Wake> {
        let mut listener = self.listener.lock().ok()?;
        if listener.is_none() {
            let config = Arc::clone(&self.pool.config);
            let channel = channel(&self.tables.prefix);
            *listener = listener_runtime()
                .and_then(|rt| block_on_in(rt, async move { listen(&config, &channel).await.ok() }))
                .ok()
                .flatten()
                .map(Arc::new);
        }
        listener.as_ref().map(|l| l.wake.clone())
    }

    /// How many tables this open created (0: all existed already).
    pub fn tables_created(&self) -> usize {
        self.created
    }

    /// The SQL table name of each state, by path.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.tables
            .schemas
            .iter()
            .map(|s| (s.path.clone(), s.name.clone()))
            .collect()
    }

    /// Checks every row of every state table against its own data: decodes
    /// `data` and recomputes the identity and every key column through the
    /// state's codec, returning each column that disagrees, row by row
    /// (empty when every row is consistent). Reads trust the key columns,
    /// so a row whose key column was changed behind the store's back is
    /// missing from reads by index while a read of the whole table shows
    /// it; this finds such rows. It reads every row of every table (one
    /// table at a time, streamed), outside any iteration.
    ///
    /// # Errors
    /// A table that cannot be read.
    pub fn check_rows(&self) -> Result<Vec<RowProblem>, StoreError> {
        block_on(async {
            use futures_util::TryStreamExt;
            let conn = self.client().await?;
            let mut out = Vec::new();
            for (spec, schema) in self.tables.specs.iter().zip(&self.tables.schemas) {
                let text = check::select_all(schema, "::int4");
                let stmt = conn.prepare(&text).await.map_err(on(schema, "checking"))?;
                let no_params: [&(dyn ToSql + Sync); 0] = [];
                let rows = conn
                    .query_raw(&stmt, no_params)
                    .await
                    .map_err(on(schema, "checking"))?;
                futures_util::pin_mut!(rows);
                while let Some(r) = rows.try_next().await.map_err(on(schema, "checking"))? {
                    // Every column is typed: only a step below 0 can be amiss.
                    let step: i32 = r.try_get(1).map_err(on(schema, "checking"))?;
                    let row = check::Stored {
                        identity: r.try_get(0).map_err(on(schema, "checking"))?,
                        step: u32::try_from(step).unwrap_or(u32::MAX),
                        data: r.try_get(2).map_err(on(schema, "checking"))?,
                        c: r.try_get(3).map_err(on(schema, "checking"))?,
                    };
                    let mut key = |i: usize, expected: &KeyValue| match key_from_row(
                        &r,
                        4 + i,
                        schema.columns[i].key.ty,
                    ) {
                        Ok(stored) if stored == *expected => None,
                        Ok(stored) => Some(check::show(&stored)),
                        Err(e) => Some(format!("unreadable: {e}")),
                    };
                    check::check_row(spec, schema, row, &mut key, &mut out);
                }
            }
            Ok(out)
        })?
    }

    /// Rows read and written and statements run (see [`StoreStats`]).
    pub fn stats(&self) -> StoreStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Zeroes the counters of [`stats`](Self::stats).
    pub fn reset_stats(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = StoreStats::default();
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .pool
            .get()
            .await
            .map_err(|e| StoreError::backend("getting a connection from the pool", e))
    }

    /// The last input time committed to every table (0 for new tables).
    ///
    /// # Errors
    /// A read failure or a missing `last_update` row.
    pub fn last_time(&self) -> Result<i64, StoreError> {
        block_on(async {
            let conn = self.client().await?;
            let times = times_of(&conn, &self.tables, &self.tables.names()).await?;
            Ok(times.into_iter().min().unwrap_or(0))
        })?
    }

    /// Drops every table of this graph (and its metadata rows): forgets the
    /// state.
    ///
    /// # Errors
    /// A database failure.
    pub fn drop_tables(self) -> Result<(), StoreError> {
        block_on(async {
            let conn = self.client().await?;
            for s in &self.tables.schemas {
                conn.batch_execute(&format!("DROP TABLE IF EXISTS {}", s.name))
                    .await
                    .map_err(pg("dropping a table"))?;
                let names = vec![s.name.clone()];
                for meta in [self.tables.tables(), self.tables.last_update()] {
                    conn.execute(
                        &format!("DELETE FROM {meta} WHERE table_name = ANY($1)"),
                        &[&names],
                    )
                    .await
                    .map_err(pg("forgetting a table"))?;
                }
            }
            Ok(())
        })?
    }

    fn prepare_tables(&mut self, create: bool) -> Result<usize, StoreError> {
        let tables = Arc::clone(&self.tables);
        let (graph, migrate) = (self.graph.clone(), self.migrate);
        let stats = Arc::clone(&self.stats);
        let (created, migration) = block_on(async {
            let mut conn = self.client().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("starting to create tables"))?;
            // On an error the transaction is rolled back here and now: a
            // dropped one only queues its `ROLLBACK` until the connection is
            // next driven, holding its locks meanwhile.
            let prepared = async {
            // Every open of this prefix, in any process, creates or checks
            // the tables in one transaction holding the prefix's lock: two
            // opens that both found a table missing would otherwise both
            // create it, and one would fail.
            lock_prefix(&*tx, &tables.prefix).await?;
            rename_legacy_tables(&*tx, &tables.prefix).await?;
            if create {
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {0} (table_name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL, definition TEXT NOT NULL DEFAULT '');
                     ALTER TABLE {0} ADD COLUMN IF NOT EXISTS definition TEXT NOT NULL DEFAULT '';
                     CREATE TABLE IF NOT EXISTS {1} (table_name TEXT PRIMARY KEY, t BIGINT NOT NULL);
                     CREATE TABLE IF NOT EXISTS {2} (table_name TEXT PRIMARY KEY);
                     {3};",
                    tables.tables(),
                    tables.last_update(),
                    tables.query(),
                    tables.create_undo_sql()
                ))
                .await
                .map_err(pg("creating the metadata tables"))?;
            }
            let borrowed = Borrowed {
                client: &*tx,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            };
            if create {
                let plan = plan_of(&*tx, &tables).await?;
                let written = tx
                    .query_one(
                        &format!("SELECT EXISTS (SELECT 1 FROM {} WHERE t > 0)", tables.last_update()),
                        &[],
                    )
                    .await
                    .and_then(|r| r.try_get::<_, bool>(0))
                    .map_err(pg(format!("reading `{}`", tables.last_update())))?;
                if written && !plan.is_unchanged() {
                    if !migrate {
                        return Err(StoreError::QueryChanged {
                            plan: Box::new(plan),
                        });
                    }
                    let done = migrate_in(&borrowed, &tables, &graph, &stats, plan).await?;
                    record_query(&*tx, &tables).await?;
                    // Handles opened before the migration refuse to go on.
                    tx.execute(
                        &format!(
                            "INSERT INTO {} AS l (table_name, t) VALUES ($1, 1) \
                             ON CONFLICT (table_name) DO UPDATE SET t = l.t + 1",
                            tables.last_update()
                        ),
                        &[&tables.query()],
                    )
                    .await
                    .map_err(pg("recording the migration"))?;
                    return Ok((0, Some(done)));
                }
            }
            if !create {
                let recorded = tx
                    .query_one(
                        "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_name = $1 \
                         AND column_name = 'definition' AND table_schema = ANY(current_schemas(false))) \
                         + (SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = $2 \
                         AND schemaname = ANY(current_schemas(false)))",
                        &[&tables.tables(), &tables.query()],
                    )
                    .await
                    .and_then(|r| r.try_get::<_, i64>(0))
                    .map_err(pg("reading the catalog"))?;
                // Metadata that cannot be decoded is left to the table
                // checks below, which name the table.
                if recorded == 2
                    && let Ok(plan) = plan_of(&*tx, &tables).await
                {
                    sql::reader_refusal(plan)?;
                }
            }
            let mut created = 0;
            for schema in &tables.schemas {
                if check_table(&borrowed, &tables, schema).await? {
                    continue;
                }
                if !create {
                    return Err(StoreError::MissingTable {
                        table: schema.name.clone(),
                        path: schema.path.clone(),
                    });
                }
                create_table(&*tx, &tables, schema, 0).await?;
                created += 1;
            }
            if create {
                record_query(&*tx, &tables).await?;
            }
                Ok((created, None))
            }
            .await;
            match prepared {
                Ok(done) => {
                    tx.commit().await.map_err(pg("committing new tables"))?;
                    Ok(done)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })??;
        self.migration = migration;
        Ok(created)
    }

    /// Runs one iteration inside `client`, a transaction (or connection) the
    /// application already holds, so that its own writes and the view's
    /// update commit or roll back together. The store never commits: the
    /// caller does. `time.flush_every_set` must not be `Some(true)` (a
    /// transaction cannot commit table by table).
    ///
    /// The iteration runs on a separate thread while this future executes
    /// its SQL on `client`.
    ///
    /// # Errors
    /// As for [`Graph::iteration_at`]; any error leaves the caller's
    /// transaction holding only what the caller wrote (roll it back).
    pub async fn iteration_in<C: GenericClient + Sync>(
        &self,
        client: &C,
        graph: &Graph,
        changes: Changes,
        time: Time,
    ) -> Result<Outputs, GraphError> {
        if graph.fingerprint() != self.fingerprint {
            return Err(GraphError::WrongStore {
                store: self.fingerprint.clone(),
                graph: graph.fingerprint().to_owned(),
            });
        }
        if time.flush_every_set == Some(true) {
            return Err(StoreError::backend(
                "running an iteration in the caller's transaction",
                "flush_every_set = Some(true) cannot commit tables one by one inside a transaction",
            )
            .into());
        }
        // A listener this store already runs wakes the waits; starting one
        // here would block the caller's runtime, so without one they poll.
        let wake = self
            .listener
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.wake.clone()));
        let setup = crate::bridge::Setup {
            tables: Arc::clone(&self.tables),
            stats: Arc::clone(&self.stats),
            max_wait: self.max_wait,
            poll: self.poll,
            wake,
        };
        crate::bridge::run(client, setup, graph.clone(), changes, time).await
    }
}

/// The key of the advisory lock under which the tables, the failed-batch
/// table and the time sequence of `prefix` are created and checked (a
/// hash: another prefix, or an application's own advisory lock, that
/// shares it only makes them take turns).
fn prefix_lock(prefix: &str) -> i64 {
    identity_of(format!("stepping-rs tables {prefix}").as_bytes())
}

/// Takes the lock of [`prefix_lock`] until the end of `client`'s
/// transaction.
async fn lock_prefix<C: GenericClient>(client: &C, prefix: &str) -> Result<(), StoreError> {
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({})",
            prefix_lock(prefix)
        ))
        .await
        .map_err(pg(format!("locking the tables of prefix `{prefix}`")))
}

/// A relation found in the catalog: its kind (`r` a table, `S` a
/// sequence), its columns in order, and its primary key's name.
struct Relation {
    kind: String,
    columns: Vec<String>,
    pkey: Option<String>,
}

/// Which of the relations `names` exist (where the search path finds
/// them), by name.
async fn relations<C: GenericClient>(
    client: &C,
    names: &[&str],
) -> Result<HashMap<String, Relation>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relkind::text, \
             ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
             (SELECT k.conname::text FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') \
             FROM pg_catalog.pg_class c \
             WHERE c.relname::text = ANY($1::text[]) AND pg_catalog.pg_table_is_visible(c.oid)",
            &[&names],
        )
        .await
        .map_err(pg("reading the catalog"))?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                Relation {
                    kind: r.try_get(1)?,
                    columns: r.try_get(2)?,
                    pkey: r.try_get(3)?,
                },
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(pg("reading the catalog"))
}

/// Gives the store's own tables of a store made by an earlier version
/// today's names ([`OwnNames::legacy_tables`]), in the caller's transaction
/// holding the prefix's lock: a table is renamed, with its primary key,
/// when it has the columns of that table and today's name is free.
async fn rename_legacy_tables<C: GenericClient>(
    client: &C,
    prefix: &str,
) -> Result<(), StoreError> {
    let legacy = OwnNames::legacy_tables(prefix);
    let names: Vec<&str> = legacy
        .iter()
        .flat_map(|l| [l.old.as_str(), l.new.as_str()])
        .collect();
    let found = relations(client, &names).await?;
    for l in &legacy {
        let old = found.get(&l.old).filter(|r| r.kind == "r");
        if !l.applies(old.map(|r| &r.columns[..]), found.contains_key(&l.new)) {
            continue;
        }
        let mut sql = format!("ALTER TABLE {} RENAME TO {};", l.old, l.new);
        // `<old>_pkey` is a name a state's table could have.
        if old.and_then(|r| r.pkey.as_deref()) == Some(&format!("{}_pkey", l.old)) {
            sql.push_str(&format!(
                " ALTER INDEX {}_pkey RENAME TO {}_pkey;",
                l.old, l.new
            ));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(pg(format!("renaming `{}` to `{}`", l.old, l.new)))?;
    }
    Ok(())
}

/// How the states recorded under `tables`' prefix compare with its graph's.
async fn plan_of<C: GenericClient>(
    tx: &C,
    tables: &Tables,
) -> Result<graph::MigrationPlan, StoreError> {
    let recorded = tx
        .query(
            &format!(
                "SELECT table_name, path, shape, definition FROM {}",
                tables.tables()
            ),
            &[],
        )
        .await
        .map_err(pg(format!("reading `{}`", tables.tables())))?
        .into_iter()
        .map(|r| {
            Ok(sql::Recorded {
                table: r.try_get(0)?,
                path: r.try_get(1)?,
                shape: r.try_get(2)?,
                definition: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(pg(format!("reading `{}`", tables.tables())))?;
    let query = tx
        .query(&format!("SELECT table_name FROM {}", tables.query()), &[])
        .await
        .map_err(pg("reading the query's tables"))?
        .into_iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()
        .map_err(pg("reading the query's tables"))?;
    Ok(sql::plan(&tables.schemas, &tables.specs, &recorded, &query))
}

/// Records `tables`' graph as the store's query: its tables, and each
/// one's definition.
async fn record_query<C: GenericClient>(tx: &C, tables: &Tables) -> Result<(), StoreError> {
    let names = tables.names();
    let definitions: Vec<String> = tables
        .specs
        .iter()
        .map(|s| s.definition().to_owned())
        .collect();
    tx.execute(
        &format!(
            "UPDATE {} AS t SET definition = d.definition FROM unnest($1::text[], $2::text[]) AS d(name, definition) \
             WHERE t.table_name = d.name",
            tables.tables()
        ),
        &[&names, &definitions],
    )
    .await
    .map_err(pg("recording the definitions"))?;
    tx.batch_execute(&format!("DELETE FROM {}", tables.query()))
        .await
        .map_err(pg("recording the query's tables"))?;
    tx.execute(
        &format!(
            "INSERT INTO {} (table_name) SELECT unnest($1::text[])",
            tables.query()
        ),
        &[&names],
    )
    .await
    .map_err(pg("recording the query's tables"))?;
    Ok(())
}

/// Creates `schema`'s table and records it, at time `t` (a time already
/// recorded for it is replaced).
async fn create_table<C: GenericClient>(
    client: &C,
    tables: &Tables,
    schema: &TableSchema,
    t: i64,
) -> Result<(), StoreError> {
    for stmt in sql::create_statements(&PgDialect, schema) {
        client
            .batch_execute(&stmt)
            .await
            .map_err(pg(format!("creating `{}`", schema.name)))?;
    }
    client
        .execute(
            &format!(
                "INSERT INTO {} (table_name, path, kind, shape) VALUES ($1, $2, $3, $4)",
                tables.tables()
            ),
            &[
                &schema.name,
                &schema.path,
                &schema.kind.name(),
                &schema.shape,
            ],
        )
        .await
        .map_err(pg(format!("recording `{}`", schema.name)))?;
    client
        .execute(
            &format!(
                "INSERT INTO {} AS l (table_name, t) VALUES ($1, $2) \
                 ON CONFLICT (table_name) DO UPDATE SET t = excluded.t",
                tables.last_update()
            ),
            &[&schema.name, &t],
        )
        .await
        .map_err(pg(format!("recording `{}`", schema.name)))?;
    Ok(())
}

/// Carries `plan` out in the open's transaction (see
/// `OpenOptions::migrate`); returns it with the rows of each state.
async fn migrate_in<C: Conn>(
    conn: &C,
    tables: &Tables,
    graph: &Graph,
    stats: &Mutex<StoreStats>,
    mut plan: graph::MigrationPlan,
) -> Result<graph::MigrationPlan, StoreError> {
    let client = conn.client();
    let (meta, last_update) = (tables.tables(), tables.last_update());
    let now: i64 = client
        .query_one(
            &format!("SELECT coalesce(max(t), 0) FROM {last_update}"),
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg(format!("reading `{last_update}`")))?;
    let memory = if plan.backfilled().next().is_some() {
        // The kept inputs, read whole first (the computation is not async).
        let mut inputs: HashMap<String, Vec<PgRow>> = HashMap::new();
        for e in &plan.entries {
            if e.action != graph::PlanAction::Keep {
                continue;
            }
            let Some(s) = tables.schemas.iter().position(|x| x.name == e.table) else {
                continue;
            };
            if graph.inputs().iter().any(|p| p.as_str() == e.path) {
                let rows = read_rows(
                    conn,
                    &tables.schemas[s],
                    &tables.sql[s],
                    &SqlRead::All,
                    stats,
                )
                .await?;
                inputs.insert(e.path.clone(), rows);
            }
        }
        let computed = crate::migrate::recompute(graph, &plan, |spec, sink| {
            let path = spec.path().to_string();
            let s = tables
                .specs
                .iter()
                .position(|x| x.path() == spec.path())
                .ok_or_else(|| StoreError::InputNotKept {
                    state: String::new(),
                    input: path.clone(),
                    why: "the store does not hold it".into(),
                })?;
            let rows = inputs
                .remove(&path)
                .ok_or_else(|| StoreError::InputNotKept {
                    state: String::new(),
                    input: path.clone(),
                    why: "the store holds it under another row type".into(),
                })?;
            sql::decode_rows(&tables.specs[s], &tables.schemas[s], rows, sink)
        });
        Some(computed.map_err(|e| match e {
            GraphError::Store(e) => e,
            other => StoreError::backend("computing the migrated states", other.to_string()),
        })?)
    } else {
        None
    };
    for entry in &mut plan.entries {
        if matches!(
            entry.action,
            graph::PlanAction::Drop | graph::PlanAction::Changed { .. }
        ) {
            let table = entry.table.clone();
            let rows: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .and_then(|r| r.try_get(0))
                .unwrap_or(0);
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table}; DELETE FROM {meta} WHERE table_name = '{table}'; \
                     DELETE FROM {last_update} WHERE table_name = '{table}'"
                ))
                .await
                .map_err(pg(format!("dropping `{table}`")))?;
            entry.rows = Some(rows as u64);
        }
    }
    for entry in &mut plan.entries {
        if !entry.action.backfills() {
            continue;
        }
        let Some(s) = tables.schemas.iter().position(|x| x.name == entry.table) else {
            continue;
        };
        let (spec, schema) = (&tables.specs[s], &tables.schemas[s]);
        create_table(client, tables, schema, now).await?;
        let mut written = 0;
        if let Some(memory) = &memory {
            for delta in memory.contents(s) {
                let rows = sql::encode_delta(spec, schema, &*delta)?;
                written += rows.len() as u64;
                let failed = AtomicBool::new(false);
                write_rows(conn, schema, &tables.sql[s], &rows, stats, &failed).await?;
            }
        }
        entry.rows = Some(written);
    }
    Ok(plan)
}

/// Whether `schema`'s table exists with the same shape.
async fn check_table<C: Conn>(
    conn: &C,
    tables: &Tables,
    schema: &TableSchema,
) -> Result<bool, StoreError> {
    let exists_meta = conn
        .client()
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = ANY(current_schemas(false))", &[&tables.tables()])
        .await
        .map_err(pg("reading the catalog"))?
        .is_some();
    let recorded: Option<(String, String)> = if exists_meta {
        conn.client()
            .query_opt(
                &format!(
                    "SELECT path, shape FROM {} WHERE table_name = $1",
                    tables.tables()
                ),
                &[&schema.name],
            )
            .await
            .map_err(pg(format!("reading the shape of `{}`", schema.name)))?
            .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(|e| StoreError::SchemaMismatch {
                table: schema.name.clone(),
                detail: format!(
                    "its recorded path and shape in `{}` are not text: {e}",
                    tables.tables()
                ),
            })?
    } else {
        None
    };
    let exists = conn
        .client()
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = ANY(current_schemas(false))", &[&schema.name])
        .await
        .map_err(pg("reading the catalog"))?
        .is_some();
    sql::table_state(schema, recorded, exists)
}

impl Postgres {
    /// A transaction at `time` (found in the transaction itself when
    /// `next`); nothing is sent yet.
    fn start(&mut self, time: Time, next: bool) -> Result<PostgresTx<'_>, StoreError> {
        let conn = block_on(self.client())??;
        let n = self.tables.schemas.len();
        let mut tx = PostgresTx {
            store: self,
            conn,
            time: Cell::new(time),
            next: Cell::new(next),
            atomic: time.flush_every_set != Some(true),
            pending: Cell::new(false),
            open: Cell::new(false),
            waited: vec![false; n],
            buffered: vec![Vec::new(); n],
            forget: None,
            done: false,
        };
        if tx.atomic {
            // All or nothing: one transaction, its writes held until the
            // commit. Nothing goes out yet: `BEGIN` and the frontier check
            // are pipelined with the iteration's first statement
            // (`PostgresTx::run`).
            tx.pending.set(true);
            tx.waited.fill(true);
        }
        Ok(tx)
    }
}

impl StateStore for Postgres {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        let wake = self.wake();
        let tables = Arc::clone(&self.tables);
        let (max_wait, poll) = (self.max_wait, self.poll);
        block_on(async {
            let mut conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            let names = tables.names();
            wait_for(&conn, &tables, &names, time.frontier, max_wait, poll, wake).await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("recording a failed batch"))?;
            let borrowed = Borrowed {
                client: &*tx,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            };
            let times = times_of(&borrowed, &tables, &names).await?;
            let committed: Vec<String> = tables
                .schemas
                .iter()
                .zip(times)
                .filter(|(_, t)| *t >= time.input_time)
                .map(|(s, _)| s.path.clone())
                .collect();
            set_last_update(&borrowed, &tables, &names, time.input_time).await?;
            // A record without changes is a waiter's, for a time it
            // released as abandoned (see `claims`): the tables it moved on
            // are not the batch's, so its list of committed tables stays.
            let row = tx.query_one(
                &format!(
                    "INSERT INTO {} AS f (input_time, batch, changes, error, committed) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (input_time) DO UPDATE SET batch = excluded.batch, changes = excluded.changes, \
                     error = excluded.error, \
                     committed = CASE WHEN length(f.changes) = 0 THEN f.committed ELSE excluded.committed END \
                     RETURNING committed",
                    failed_table(&tables)
                ),
                &[&time.input_time, &batch, &changes, &error, &committed.join("\n")],
            )
            .await
            .map_err(pg("recording a failed batch"))?;
            let committed: String = row.try_get(0).map_err(pg("recording a failed batch"))?;
            tx.commit().await.map_err(pg("recording a failed batch"))?;
            Ok(FailedBatch {
                input_time: time.input_time,
                batch,
                changes: changes.to_vec(),
                error: error.to_owned(),
                committed: committed.lines().map(str::to_owned).collect(),
            })
        })?
    }

    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            let rows = conn
                .query(
                    &format!(
                        "SELECT input_time, batch, changes, error, committed FROM {} ORDER BY input_time",
                        failed_table(&tables)
                    ),
                    &[],
                )
                .await
                .map_err(pg("reading failed batches"))?;
            rows.iter()
                .map(|r| {
                    let committed: String = r.try_get(4)?;
                    Ok(FailedBatch {
                        input_time: r.try_get(0)?,
                        batch: r.try_get(1)?,
                        changes: r.try_get(2)?,
                        error: r.try_get(3)?,
                        committed: committed.lines().map(str::to_owned).collect(),
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(pg("reading failed batches"))
        })?
    }

    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await?;
            conn.execute(
                &format!(
                    "DELETE FROM {} WHERE input_time = $1",
                    failed_table(&tables)
                ),
                &[&input_time],
            )
            .await
            .map_err(pg("forgetting a failed batch"))?;
            Ok(())
        })?
    }

    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.start(time, false)?))
    }

    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        // The time comes with the frontier check pipelined with the
        // iteration's first statement: no round trip of its own.
        Ok(Box::new(self.start(Time::new(1, 0), true)?))
    }

    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let conn = self.client().await?;
            create_failed_table(&conn, &tables).await
        })??;
        let mut tx = match time {
            Some(time) => self.start(Time::new(time.input_time, time.frontier), false)?,
            None => self.start(Time::new(1, 0), true)?,
        };
        tx.forget = Some(failed_input_time);
        Ok(Box::new(tx))
    }

    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        let tables = Arc::clone(&self.tables);
        let stats = Arc::clone(&self.stats);
        let rewound = block_on(async {
            let mut conn = self.client().await?;
            conn.batch_execute(&tables.create_undo_sql())
                .await
                .map_err(pg("creating the undo table"))?;
            let tx = conn.transaction().await.map_err(pg("recovering"))?;
            // Rolled back here and now on an error (see `prepare_tables`).
            let recovered = async {
            let borrowed = Borrowed {
                client: &*tx,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            };
            let names = tables.names();
            let times = lock_times(&borrowed, &tables, &names).await?;
            let low = times.iter().copied().min().unwrap_or(0);
            let mut rewound = Vec::new();
            for (s, &at) in times.iter().enumerate() {
                if at <= low {
                    continue;
                }
                let schema = &tables.schemas[s];
                let entries = tx
                    .query(
                        &format!(
                            "SELECT t, rows FROM {} WHERE table_name = $1 AND t > $2 ORDER BY t DESC",
                            tables.undo()
                        ),
                        &[&schema.name, &low],
                    )
                    .await
                    .map_err(pg(format!("reading the undo of `{}`", schema.name)))?;
                // Latest first: each entry undoes one time's write to the
                // table as it stood after that time.
                for entry in entries {
                    let (t, bytes): (i64, Vec<u8>) = (
                        entry.try_get(0).map_err(pg("reading an undo entry"))?,
                        entry.try_get(1).map_err(pg("reading an undo entry"))?,
                    );
                    let rows = sql::decode_undo(&schema.name, t, &bytes)?;
                    let failed = AtomicBool::new(false);
                    write_rows(&borrowed, schema, &tables.sql[s], &rows, &stats, &failed).await?;
                }
                tx.execute(
                    &format!(
                        "UPDATE {} SET t = $1 WHERE table_name = $2",
                        tables.last_update()
                    ),
                    &[&low, &schema.name],
                )
                .await
                .map_err(pg(format!("rewinding `{}`", schema.name)))?;
                rewound.push(Rewound {
                    table: schema.name.clone(),
                    from: at,
                    to: low,
                });
            }
            tx.execute(&format!("DELETE FROM {}", tables.undo()), &[])
                .await
                .map_err(pg("clearing the undo table"))?;
            Ok::<_, StoreError>(rewound)
            }
            .await;
            match recovered {
                Ok(rewound) => {
                    tx.commit().await.map_err(pg("committing a recovery"))?;
                    Ok(rewound)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })??;
        Ok(rewound)
    }

    fn next_time(&mut self) -> Result<i64, StoreError> {
        block_on(async {
            let conn = self.client().await?;
            let times = times_of(&conn, &self.tables, &self.tables.names()).await?;
            Ok(times.into_iter().fold(0, i64::max) + 1)
        })?
    }

    fn last_time(&mut self) -> Result<i64, StoreError> {
        Postgres::last_time(self)
    }

    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let sql_read = SqlRead::of(spec, read);
        let tables = Arc::clone(&self.tables);
        let mine = tables
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape());
        let attached = match mine {
            Some(_) => None,
            None => {
                let path = spec.path().to_string();
                if !self.attached.contains_key(&path) {
                    let schema = TableSchema::of(spec, &tables.prefix, &PgDialect);
                    let checked = block_on(async {
                        let conn = self.client().await?;
                        check_table(&conn, &tables, &schema).await
                    })??;
                    if !checked {
                        return Err(StoreError::MissingTable {
                            table: schema.name.clone(),
                            path,
                        });
                    }
                    let sql = PgSql::of(&schema);
                    self.attached.insert(path.clone(), Arc::new((schema, sql)));
                }
                Some(Arc::clone(&self.attached[&path]))
            }
        };
        let (schema, sql) = match (&mine, &attached) {
            (Some(i), _) => (&tables.schemas[*i], &tables.sql[*i]),
            (None, Some(a)) => (&a.0, &a.1),
            (None, None) => unreachable!("either ours or attached"),
        };
        let rows = block_on(async {
            let conn = self.client().await?;
            read_rows(&conn, schema, sql, &sql_read, &self.stats).await
        })??;
        sql::decode_rows(spec, schema, rows, sink)
    }

    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        self.count_state_rows(spec)
    }
}

struct PostgresTx<'s> {
    store: &'s Postgres,
    conn: deadpool_postgres::Object,
    time: Cell<Time>,
    /// `time` is to be found in the transaction: the next after every
    /// committed iteration ([`StateStore::begin_next`]).
    next: Cell<bool>,
    /// All or nothing: one transaction for the whole iteration.
    atomic: bool,
    /// An all-or-nothing iteration whose `BEGIN` has not gone out yet.
    pending: Cell<bool>,
    open: Cell<bool>,
    waited: Vec<bool>,
    buffered: Vec<Vec<EncodedRow>>,
    /// The failed batch this iteration retries, forgotten in its commit.
    forget: Option<i64>,
    done: bool,
}

/// A statement run by [`PostgresTx::run`]: built again for each attempt.
type TxStatement<'a, T> =
    dyn Fn(&'a deadpool_postgres::Object) -> LocalBoxFuture<'a, Result<T, StoreError>> + 'a;

impl PostgresTx<'_> {
    /// Runs `statement` on the iteration's connection. The first statement
    /// of an all-or-nothing iteration goes out pipelined behind `BEGIN` and
    /// the frontier check, so starting the transaction costs no round trip
    /// of its own; if a table turns out to be behind the frontier, the
    /// transaction (and what the statement read) is rolled back, the wait
    /// happens outside any transaction, and the statement runs again.
    fn run<'a, T>(&'a self, statement: &TxStatement<'a, T>) -> Result<T, StoreError> {
        if !self.pending.get() {
            return block_on(statement(&self.conn))?;
        }
        let tables = Arc::clone(&self.store.tables);
        let names = tables.names();
        loop {
            let conn = &self.conn;
            // The frontier check must reach the server before the
            // statement: prepared first (a cache hit after the first
            // iteration on this connection), it goes out on its first poll,
            // and `join!` polls in order. It locks every table's time until
            // the iteration ends: another process's iteration waits for this
            // one's commit, then reads what it wrote.
            let stmt = block_on(async {
                conn.prepare(&tables.lock_times_sql)
                    .await
                    .map_err(pg(format!("locking `{}`", tables.last_update())))
            })??;
            let (begun, times, result) = block_on(async {
                tokio::join!(
                    conn.batch_execute("BEGIN"),
                    times_with(conn, &stmt, &tables, &names),
                    statement(conn)
                )
            })?;
            begun.map_err(pg("starting an iteration"))?;
            self.open.set(true);
            // A statement that fails to parse (a dropped table) aborts the
            // transaction, failing the frontier check pipelined with it: its
            // own error is the one to report.
            let times = match (times, &result) {
                (Err(e), Err(_)) if aborted(&e) => {
                    // Unless the table was dropped by a migration: then the
                    // query changed, and that is what to report.
                    block_on(self.conn.batch_execute("ROLLBACK"))?
                        .map_err(pg("ending a failed iteration"))?;
                    self.open.set(false);
                    let names = tables.names();
                    if let Err(changed @ StoreError::QueryChanged { .. }) =
                        block_on(times_of(&self.conn, &tables, &names))?
                    {
                        return Err(changed);
                    }
                    return result;
                }
                (times, _) => times?,
            };
            if self.next.get() {
                // After every committed iteration, as `next_time` finds
                // it: this is the serial path (concurrent writers are
                // given their times, `iteration_at`).
                let last = times.iter().copied().fold(0, i64::max);
                self.time.set(Time::new(last + 1, last));
            }
            let time = self.time.get();
            if let Some(s) = times.iter().position(|t| *t >= time.input_time) {
                // Another iteration applied this time first (dropping the
                // transaction rolls back).
                return Err(StoreError::TimeAlreadyApplied {
                    table: names[s].clone(),
                    time: time.input_time,
                    recorded: times[s],
                });
            }
            let frontier = time.frontier;
            let behind = times.iter().position(|t| *t < frontier);
            let Some(behind) = behind else {
                self.pending.set(false);
                return result;
            };
            block_on(self.conn.batch_execute("ROLLBACK"))?
                .map_err(pg("waiting for the frontier"))?;
            self.open.set(false);
            let wake = self.store.wake();
            let (max_wait, poll) = (self.store.max_wait, self.store.poll);
            block_on(wait_for(
                &self.conn,
                &tables,
                &names[behind..],
                frontier,
                max_wait,
                poll,
                wake,
            ))??;
        }
    }

    /// `e`, explained by the stored rows when it is a refused write of
    /// `written` (see [`explain_refusal`]): the transaction is ended first,
    /// so that the rows read are the committed ones.
    fn explained(&self, e: StoreError, written: &[(usize, &[EncodedRow])]) -> StoreError {
        if !refusal(&e) {
            return e;
        }
        if self.open.get() {
            // A failed rollback leaves a broken connection, which the read
            // below reports by failing: `e` is kept then.
            let _ = block_on(self.conn.batch_execute("ROLLBACK"));
            self.open.set(false);
        }
        let tables = &self.store.tables;
        match block_on(explain_refusal(&self.conn, tables, written, e)) {
            Ok(e) | Err(e) => e,
        }
    }

    fn wait(&mut self, s: usize) -> Result<(), StoreError> {
        if !self.waited[s] {
            let tables = &self.store.tables;
            let wake = self.store.wake();
            block_on(wait_for(
                &self.conn,
                tables,
                std::slice::from_ref(&tables.schemas[s].name),
                self.time.get().frontier,
                self.store.max_wait,
                self.store.poll,
                wake,
            ))??;
            self.waited[s] = true;
        }
        Ok(())
    }
}

impl StateTx for PostgresTx<'_> {
    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let s = state.index();
        let store = self.store;
        let t = &store.tables;
        let sql_read = SqlRead::of(&t.specs[s], read);
        // Checked against the frontier first, on its own: when a pipelined
        // worker is behind the one before it, a read sent together with the
        // check would mostly be thrown away, and cost the server its work.
        self.wait(s)?;
        let rows = self.run(&|c| {
            Box::pin(read_rows(
                c,
                &t.schemas[s],
                &t.sql[s],
                &sql_read,
                &store.stats,
            ))
        })?;
        sql::decode_rows(&t.specs[s], &t.schemas[s], rows, sink)
    }

    fn table_name(&self, state: StateId) -> Option<String> {
        Some(self.store.tables.schemas.get(state.index())?.name.clone())
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        let s = state.index();
        self.wait(s)?;
        let t = &self.store.tables;
        self.run(&|c| Box::pin(max_step(c, &t.schemas[s], &t.sql[s])))
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let t = &self.store.tables;
        // Held until the table's flush (pipelined) or the commit, where the
        // writes of every table go out together.
        self.buffered[s].extend(sql::encode_delta(&t.specs[s], &t.schemas[s], &*delta)?);
        Ok(())
    }

    fn flush(&mut self, state: StateId) -> Result<(), StoreError> {
        if self.open.get() || self.time.get().flush_every_set != Some(true) {
            return Ok(());
        }
        let s = state.index();
        let t = Arc::clone(&self.store.tables);
        let stats = Arc::clone(&self.store.stats);
        let time = self.time.get();
        if self.buffered[s].is_empty() {
            // Only the time moves on: one statement, atomic on its own,
            // which also checks the frontier when that is still to do.
            let name = &t.schemas[s].name;
            if !self.waited[s] {
                if block_on(bump_if_at(
                    &self.conn,
                    &t,
                    name,
                    time.input_time,
                    time.frontier,
                ))?? {
                    return Ok(());
                }
                self.wait(s)?;
            }
            let name = std::slice::from_ref(name);
            return block_on(set_last_update(&self.conn, &t, name, time.input_time))?;
        }
        self.wait(s)?;
        let rows = std::mem::take(&mut self.buffered[s]);
        let time = time.input_time;
        let conn = &self.conn;
        let undo = block_on(undo_of(conn, self.store, s, &rows))??;
        // One transaction for this table, in one round trip: `BEGIN`, its
        // writes, its time and `COMMIT`, every statement prepared first so
        // that each goes out on its first poll, in order (as for the
        // iteration's commit). A write the server refuses aborts the
        // transaction and `COMMIT` rolls it back; one that fails in the
        // client is followed by `ROLLBACK` instead.
        block_on(prepare_writes(conn, &t, &[s]))??;
        let rows = &rows;
        let (guard, undo_sql) = block_on(async {
            let guard = conn.prepare(&t.guard_sql).await;
            let undo = conn.prepare(&t.keep_undo_sql).await;
            (guard, undo)
        })?;
        let guard = guard.map_err(pg("locking a table's time"))?;
        let undo_sql = undo_sql.map_err(pg("keeping an undo entry"))?;
        let flushed = block_on(async {
            let name = &t.schemas[s].name;
            let failed = AtomicBool::new(false);
            let failed = &failed;
            // The guard first: it locks the table's time, so a second
            // iteration at the same time waits, then fails it, writing
            // nothing.
            let guard_params: [&(dyn ToSql + Sync); 2] = [name, &time];
            let undo_params: [&(dyn ToSql + Sync); 3] = [&time, name, &undo];
            let (begun, guarded, kept, written, timed, ended) = tokio::join!(
                conn.batch_execute("BEGIN"),
                conn.query(&guard, &guard_params),
                conn.execute(&undo_sql, &undo_params),
                write_rows(conn, &t.schemas[s], &t.sql[s], rows, &stats, failed),
                set_last_update(conn, &t, std::slice::from_ref(name), time),
                end_transaction(conn, failed)
            );
            first_error(vec![
                begun.map_err(pg(format!("flushing `{name}`"))),
                guarded
                    .map(|_| ())
                    .map_err(pg(format!("locking the time of `{name}`"))),
                kept.map(|_| ())
                    .map_err(pg(format!("keeping the undo of `{name}`"))),
                written,
                timed,
            ])?;
            ended.map_err(pg(format!("committing `{name}`")))
        })?;
        match flushed {
            Err(e) if e.to_string().contains(ALREADY_APPLIED) => {
                let recorded =
                    block_on(times_of(conn, &t, std::slice::from_ref(&t.schemas[s].name)))??;
                Err(StoreError::TimeAlreadyApplied {
                    table: t.schemas[s].name.clone(),
                    time,
                    recorded: recorded.first().copied().unwrap_or(time),
                })
            }
            other => other.map_err(|e| self.explained(e, &[(s, rows.as_slice())])),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let t = Arc::clone(&self.store.tables);
        let names = t.names();
        if !self.atomic {
            for s in 0..self.buffered.len() {
                if !self.buffered[s].is_empty() {
                    self.flush(StateId(s as u32))?;
                }
            }
            // Tables no state was written to still move on in time; then,
            // the iteration being in every table, what would undo it goes.
            let time = self.time.get().input_time;
            let conn = &self.conn;
            let (timed, cleared) = block_on(async {
                let params: [&(dyn ToSql + Sync); 1] = [&time];
                tokio::join!(
                    set_last_update(conn, &t, &names, time),
                    conn.execute(&t.clear_undo_sql, &params)
                )
            })?;
            timed?;
            cleared.map_err(pg("dropping undo entries"))?;
            return Ok(());
        }
        if self.time.get().flush_every_set.is_none() {
            return Ok(()); // a dry run: dropping rolls back
        }
        if let Some(failed) = self.forget {
            // A retry: the record goes in this transaction, or nothing does.
            let t = Arc::clone(&t);
            let forgotten = self.run(&|conn| {
                let t = Arc::clone(&t);
                Box::pin(async move {
                    conn.execute(
                        &format!("DELETE FROM {} WHERE input_time = $1", failed_table(&t)),
                        &[&failed],
                    )
                    .await
                    .map_err(pg("forgetting a retried batch"))
                })
            })?;
            if forgotten == 0 {
                return Err(StoreError::NoSuchFailure { input_time: failed });
            }
        }
        // Every table's writes and the times, pipelined on the one
        // connection (the server runs them in order, in this transaction);
        // the first failure is the one reported.
        let buffered = std::mem::take(&mut self.buffered);
        if self.pending.get() && self.next.get() {
            // Nothing read yet, so the time is not known: it is needed
            // before the writes go out.
            let times = block_on(times_of(&self.conn, &t, &names))??;
            let last = times.into_iter().fold(0, i64::max);
            self.time.set(Time::new(last + 1, last));
            self.next.set(false);
        }
        let time = self.time.get().input_time;
        let written: Vec<usize> = (0..buffered.len())
            .filter(|&s| !buffered[s].is_empty())
            .collect();
        let (t, buffered, written) = (&t, &buffered, &written);
        // A write that fails in the client (before sending) says so here,
        // before `COMMIT` is polled.
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let store = self.store;
        let write_all = |conn| write_tables(conn, store, buffered, time, failed);
        if self.pending.get() {
            // Nothing read yet: `BEGIN` and the frontier check go out with
            // the writes, and a table behind the frontier means waiting and
            // writing again, so `COMMIT` waits for the check's answer.
            if let Err(e) = self.run(&|conn| Box::pin(write_all(conn))) {
                return Err(self.explained(e, &in_tables(buffered)));
            }
            block_on(self.conn.batch_execute("COMMIT"))?.map_err(pg("committing an iteration"))?;
        } else {
            // The transaction is open and past its frontier: `COMMIT` goes
            // out behind the writes, saving a round trip. Every statement
            // is prepared first so that each goes out on its first poll, in
            // order, before `COMMIT`. A write the server refuses aborts the
            // transaction, and `COMMIT` then rolls it back; one that fails
            // in the client is followed by `ROLLBACK` instead.
            let conn = &self.conn;
            block_on(prepare_writes(conn, t, written))??;
            let (result, ended) =
                block_on(async { tokio::join!(write_all(conn), end_transaction(conn, failed)) })?;
            self.open.set(false);
            result.map_err(|e| self.explained(e, &in_tables(buffered)))?;
            ended.map_err(pg("committing an iteration"))?;
        }
        self.done = true;
        Ok(())
    }
}

/// What undoes writing `rows` to table `s` (see [`sql::undo_of`]), as
/// bytes: a keyed table's rows are read first (the one extra round trip of
/// a pipelined flush, for keyed tables only).
async fn undo_of(
    conn: &deadpool_postgres::Object,
    store: &Postgres,
    s: usize,
    rows: &[EncodedRow],
) -> Result<Vec<u8>, StoreError> {
    let t = &store.tables;
    let schema = &t.schemas[s];
    let mut old = HashMap::new();
    if schema.kind == StateKind::Keyed {
        let ids = rows.iter().map(|r| (r.identity, r.keys.clone())).collect();
        let read = SqlRead::ByIdentity { ids };
        for r in read_rows(conn, schema, &t.sql[s], &read, &store.stats).await? {
            old.insert(r.identity, r.data.as_ref().to_vec());
        }
    }
    sql::encode_undo(&sql::undo_of(schema, rows, &old)?)
}

/// The tables with rows in `buffered`, each with its rows.
fn in_tables(buffered: &[Vec<EncodedRow>]) -> Vec<(usize, &[EncodedRow])> {
    (0..buffered.len())
        .filter(|&s| !buffered[s].is_empty())
        .map(|s| (s, buffered[s].as_slice()))
        .collect()
}

/// Writes the rows `buffered[s]` of each table `s` of `store` and records
/// every table at `time`, all pipelined; sets `failed` as soon as one write
/// fails.
async fn write_tables(
    conn: &deadpool_postgres::Object,
    store: &Postgres,
    buffered: &[Vec<EncodedRow>],
    time: i64,
    failed: &AtomicBool,
) -> Result<(), StoreError> {
    let (t, stats) = (&*store.tables, &*store.stats);
    let names = t.names();
    let written = (0..buffered.len()).filter(|&s| !buffered[s].is_empty());
    let writes =
        written.map(|s| write_rows(conn, &t.schemas[s], &t.sql[s], &buffered[s], stats, failed));
    let (written, timed) = tokio::join!(
        join_in_order(writes.collect()),
        set_last_update(conn, t, &names, time)
    );
    first_error(written.into_iter().chain([timed]).collect())
}

/// Prepares the write statements of tables `written` and the `last_update`
/// statement, so that a pipeline of them sends each on its first poll.
async fn prepare_writes(
    conn: &deadpool_postgres::Object,
    t: &Tables,
    written: &[usize],
) -> Result<(), StoreError> {
    for &s in written {
        let (schema, sql) = (&t.schemas[s], &t.sql[s]);
        for text in [&sql.upsert, &sql.delete] {
            conn.prepare(text).await.map_err(on(schema, "writing"))?;
        }
    }
    conn.prepare(&t.last_update_sql)
        .await
        .map_err(pg("recording last_update"))?;
    Ok(())
}

/// `COMMIT`, or `ROLLBACK` if a write of the pipeline before it failed in
/// the client (`failed`, set before this is first polled).
async fn end_transaction(
    conn: &deadpool_postgres::Object,
    failed: &AtomicBool,
) -> Result<(), tokio_postgres::Error> {
    let end = if failed.load(Ordering::SeqCst) {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    conn.batch_execute(end).await
}

/// Runs `futures` together, polling every unfinished one in order on every
/// poll: statements they send on their first poll go out in that order.
/// (`join_all` of many futures promises no order.)
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::future::{MaybeDone, maybe_done};
    let mut all: Vec<std::pin::Pin<Box<MaybeDone<F>>>> = futures
        .into_iter()
        .map(|f| Box::pin(maybe_done(f)))
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for f in &mut all {
            done &= f.as_mut().poll(cx).is_ready();
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    all.iter_mut()
        .filter_map(|f| f.as_mut().take_output())
        .collect()
}

/// Whether `e` is Postgres refusing a statement because an earlier one
/// failed in the same transaction (SQLSTATE 25P02).
fn aborted(e: &StoreError) -> bool {
    e.to_string().contains("(25P02)")
}

/// The error of pipelined statements: a statement after a failed one
/// fails only because the transaction is aborted, so the one reported is
/// the first that failed for a reason of its own.
fn first_error(results: Vec<Result<(), StoreError>>) -> Result<(), StoreError> {
    let mut errors: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
    match errors.iter().position(|e| !aborted(e)) {
        Some(first) => Err(errors.swap_remove(first)),
        None => errors.into_iter().next().map_or(Ok(()), Err),
    }
}

impl Drop for PostgresTx<'_> {
    fn drop(&mut self) {
        if self.open.get() && !self.done {
            // If even the rollback fails the connection is broken; the pool
            // discards it when it is next checked.
            let _ = block_on(self.conn.batch_execute("ROLLBACK"));
        }
    }
}

pub(crate) fn failed_table(tables: &Tables) -> String {
    tables.own.failed_batches.clone()
}

/// Creates the failed-batch table if it is missing, holding the prefix's
/// lock (see [`lock_prefix`]) so that workers recording their first
/// failures at once do not collide; the statements of one simple query run
/// in one transaction, which the lock lasts for.
async fn create_failed_table(
    conn: &deadpool_postgres::Object,
    tables: &Tables,
) -> Result<(), StoreError> {
    conn.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({}); \
         CREATE TABLE IF NOT EXISTS {} (input_time BIGINT PRIMARY KEY, batch BIGINT NOT NULL, \
         changes BYTEA NOT NULL, error TEXT NOT NULL, committed TEXT NOT NULL)",
        prefix_lock(&tables.prefix),
        failed_table(tables)
    ))
    .await
    .map_err(pg("creating the failed-batch table"))
}

/// A Postgres `SEQUENCE` handing out input times to workers in any number
/// of processes (`<prefix>0_time`), created on first use to start after the
/// store's last recorded time.
///
/// Taking a time also claims it, in the same statement, for the session
/// that took it (a connection of the store's pool) and for a batch number
/// if the caller gives one ([`next_for`](Self::next_for)). A process that
/// dies holding times it never committed leaves them claimed by sessions
/// that no longer exist: a frontier wait that is stuck on such a time marks
/// it failed (as [`StateStore::record_failure`] would, its changes unknown,
/// naming the claim's batch) so that the times after it proceed, and
/// [`StateStore::failed_batches`] lists it. So a process must keep its
/// store's pool (the sequence, or a store sharing its pool) open until
/// every time it took is committed or recorded as failed, and every time
/// of the tables must come from the sequence.
#[derive(Debug)]
pub struct PgSequence {
    pool: PgPool,
    name: String,
    /// Takes a time and claims it (see `claims::take_sql`).
    take: String,
    names: Vec<String>,
}

impl PgSequence {
    /// The time sequence of `store`'s tables, with its claims table.
    ///
    /// # Errors
    /// A database failure.
    pub fn of(store: &mut Postgres) -> Result<PgSequence, StoreError> {
        let next = store.next_time()?;
        let tables = Arc::clone(&store.tables);
        let name = store.tables.own.time.clone();
        let legacy = OwnNames::legacy_time(&store.tables.prefix);
        let pool = store.pool.clone();
        let prefix = store.tables.prefix.clone();
        block_on(async {
            let mut conn = store.client().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("creating the time sequence"))?;
            // Under the prefix's lock, as the tables are: handles creating
            // it at once would otherwise collide.
            lock_prefix(&*tx, &prefix).await?;
            // An earlier version's sequence carries on where it was.
            let found = relations(&*tx, &[legacy.as_str(), name.as_str()]).await?;
            let sql = if !found.contains_key(&name)
                && found.get(&legacy).is_some_and(|r| r.kind == "S")
            {
                format!("ALTER SEQUENCE {legacy} RENAME TO {name}")
            } else {
                format!("CREATE SEQUENCE IF NOT EXISTS {name} START WITH {next}")
            };
            tx.batch_execute(&sql)
                .await
                .map_err(pg("creating the time sequence"))?;
            tx.batch_execute(&claims::create_claims_sql(&prefix))
                .await
                .map_err(pg("creating the time claims table"))?;
            tx.commit()
                .await
                .map_err(pg("creating the time sequence"))?;
            create_failed_table(&conn, &tables).await
        })??;
        Ok(PgSequence {
            pool,
            name,
            take: claims::take_sql(&tables),
            names: tables.names(),
        })
    }

    /// The next time, claimed for no batch in particular.
    ///
    /// # Errors
    /// A database failure.
    pub fn next(&self) -> Result<i64, StoreError> {
        self.take(None)
    }

    /// The next time, claimed for batch `batch`: if the process dies before
    /// committing it, its failed-batch record names this batch.
    ///
    /// # Errors
    /// A database failure, or a time released by a waiter as abandoned
    /// before its claim could be recorded.
    pub fn next_for(&self, batch: i64) -> Result<i64, StoreError> {
        self.take(Some(batch))
    }

    fn take(&self, batch: Option<i64>) -> Result<i64, StoreError> {
        let context = format!("taking a time from `{}`", self.name);
        block_on(async {
            let conn = self
                .pool
                .pool
                .get()
                .await
                .map_err(|e| StoreError::backend("getting a connection", e))?;
            let stmt = conn
                .prepare_cached(&self.take)
                .await
                .map_err(pg(context.clone()))?;
            let row = conn
                .query_one(&stmt, &[&batch, &self.names])
                .await
                .map_err(|e| {
                    let released = e.as_db_error().is_some_and(|d| {
                        d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    });
                    if released {
                        StoreError::backend(
                            context.clone(),
                            "the time taken was released as abandoned by a waiter before its \
                             claim was recorded (see the failed batches); take another",
                        )
                    } else {
                        pg(context.clone())(e)
                    }
                })?;
            row.try_get::<_, i64>(0).map_err(pg(context.clone()))
        })?
    }
}
