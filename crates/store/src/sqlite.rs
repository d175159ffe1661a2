//! The SQLite store (the embedded default): one table per state in a file,
//! next to whatever else the application keeps there.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, Timelike};
use graph::{
    EncodedRow, FailedBatch, Graph, Read, Rewound, StateId, StateKind, StateSpec, StateStore,
    StateTx, StoreError, Time, Value, identity_of,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params_from_iter};
use zset::{ColumnType, KeyValue};

use crate::StoreStats;
use crate::check::{self, RowProblem};
use crate::checkpoint::SqliteCheckpointer;
use crate::sql::{
    self, Dialect, OwnNames, SqlRead, SqlRow, TableSchema, check_prefix, four_digit_year,
};
use crate::wait::{Backoff, Notifier};

mod sizes;

/// How a SQL store is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Create missing tables (default `true`). With `false`, a missing
    /// table is an error: the way to attach to state written by another
    /// process ("weeks later, in another service, read the cache").
    pub create_tables: bool,
    /// Prefix of every table name (default `st_`), so that state tables sit
    /// beside the application's own: `[a-z0-9_]`, starting with a letter.
    pub prefix: String,
    /// How long an iteration waits for its frontier (default 30 s).
    pub max_wait: Duration,
    /// The first and longest pause between two polls of a frontier (default
    /// 1 ms and 100 ms, doubling in between). Waiters also wake as soon as
    /// another worker of the same process commits (SQLite), or when the
    /// database notifies them (Postgres `LISTEN`/`NOTIFY`), so polling is
    /// only the fallback.
    pub poll: (Duration, Duration),
    /// When the store holds the state of another version of the query:
    /// migrate it (default `false`: refuse with
    /// [`StoreError::QueryChanged`], carrying the plan). See
    /// [`migrate`](Self::migrate).
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create_tables: true,
            prefix: "st_".into(),
            max_wait: Duration::from_secs(30),
            poll: (Duration::from_millis(1), Duration::from_millis(100)),
            migrate: false,
        }
    }
}

impl OpenOptions {
    /// Migrate a store written by another version of the query, in one
    /// transaction: states the query computes as before are kept (no row
    /// rewritten); new and changed ones are computed from the inputs the
    /// store keeps and stamped with its current time; dropped ones'
    /// tables are removed. The plan carried out is the store's
    /// `migration()`.
    pub fn migrate(self) -> Self {
        OpenOptions {
            migrate: true,
            ..self
        }
    }

    /// Attach to existing tables only.
    pub fn attach() -> Self {
        OpenOptions {
            create_tables: false,
            ..OpenOptions::default()
        }
    }
}

struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn column_type(&self, ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Bool | ColumnType::Int => "INTEGER",
            ColumnType::Float => "REAL",
            ColumnType::Bytes | ColumnType::Uuid => "BLOB",
            _ => "TEXT",
        }
    }
    fn bigint(&self) -> &'static str {
        "INTEGER"
    }
    fn blob(&self) -> &'static str {
        "BLOB"
    }
    fn nulls(&self, _descending: bool) -> &'static str {
        // SQLite already sorts NULL first ascending and last descending.
        ""
    }
    fn table_options(&self, schema: &TableSchema) -> &'static str {
        // A clustered table is its primary key's B-tree: no rowid beside it.
        if schema.clustered.is_empty() {
            ""
        } else {
            " WITHOUT ROWID"
        }
    }
    fn can_cluster(&self, columns: &[sql::Column]) -> bool {
        // WITHOUT ROWID primary keys cannot hold NULLs.
        columns.iter().all(|c| !c.key.nullable)
    }
}

/// The SQL of one table, built once.
struct TableSql {
    select: String,
    by_index: Vec<String>,
    by_identity: String,
    first: Vec<String>,
    ties: Vec<String>,
    /// Inserts a row, or combines it with the stored row of its primary key
    /// when that row holds the same data (a keyed table: the same key
    /// columns): it changes one row, or none when the caller must look
    /// closer ([`stored`](Self::stored)). No `RETURNING`: SQLite runs a
    /// statement with one in a statement journal, copying every page it
    /// touches, and buffers its rows in a temporary table.
    upsert: String,
    /// The data and weight stored under a primary key.
    stored: String,
    /// Deletes a row by primary key.
    delete: String,
    /// Deletes a row by primary key if it holds exactly this data and
    /// weight: a removal that cancels a row in one statement.
    cancel: String,
    max_step: String,
}

impl TableSql {
    fn of(s: &TableSchema) -> TableSql {
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

/// A key value as SQLite keeps it. NaN is stored as the text `NaN`, which
/// SQLite sorts after every number (as Postgres and `F64` do); dates and
/// times are ISO-8601 text (years 0 to 9999).
fn to_sqlite(table: &str, v: &KeyValue) -> Result<SqlValue, StoreError> {
    let bad = |detail: String| StoreError::Unrepresentable {
        table: table.to_owned(),
        detail,
    };
    Ok(match v {
        KeyValue::Null => SqlValue::Null,
        KeyValue::Bool(b) => SqlValue::Integer(i64::from(*b)),
        KeyValue::Int(i) => SqlValue::Integer(*i),
        KeyValue::Float(f) if f.get().is_nan() => SqlValue::Text("NaN".into()),
        KeyValue::Float(f) => SqlValue::Real(f.get()),
        KeyValue::Text(s) => SqlValue::Text(s.clone()),
        KeyValue::Bytes(b) => SqlValue::Blob(b.clone()),
        KeyValue::Uuid(u) => SqlValue::Blob(u.as_bytes().to_vec()),
        KeyValue::Date(d) => {
            if !four_digit_year(d.year()) {
                return Err(bad(format!("date {d} is outside years 0 to 9999")));
            }
            SqlValue::Text(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
        }
        KeyValue::Timestamp(t) => {
            if !four_digit_year(t.year()) {
                return Err(bad(format!("timestamp {t} is outside years 0 to 9999")));
            }
            SqlValue::Text(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            ))
        }
        other => return Err(bad(format!("unsupported key value {other:?}"))),
    })
}

/// A SQLite value as a person reads it.
fn show_sqlite(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Text(t) => format!("{t:?}"),
        SqlValue::Blob(b) => check::hex(b),
    }
}

pub(crate) fn backend(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::backend(context, e)
}

/// Errors while `doing` something to `schema`'s table; a table dropped
/// behind our back is reported as missing, not as a mystery.
fn on<'s>(
    schema: &'s TableSchema,
    doing: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 's {
    move |e| {
        if e.to_string().contains("no such table") {
            StoreError::MissingTable {
                table: schema.name.clone(),
                path: schema.path.clone(),
            }
        } else {
            StoreError::backend(format!("{doing} `{}`", schema.name), e)
        }
    }
}

/// Binds key value `v` as parameter `i` of `st`, as [`to_sqlite`] stores it,
/// without copying text or bytes first.
fn bind_key(
    st: &mut rusqlite::Statement<'_>,
    i: usize,
    schema: &TableSchema,
    v: &KeyValue,
) -> Result<(), StoreError> {
    let bound = match v {
        KeyValue::Int(x) => st.raw_bind_parameter(i, x),
        KeyValue::Text(t) => st.raw_bind_parameter(i, t.as_str()),
        KeyValue::Bytes(b) => st.raw_bind_parameter(i, b.as_slice()),
        KeyValue::Uuid(u) => st.raw_bind_parameter(i, &u.as_bytes()[..]),
        other => st.raw_bind_parameter(i, to_sqlite(&schema.name, other)?),
    };
    bound.map_err(on(schema, "writing"))
}

/// Reads a state row, checking every column's type and the identity.
fn row_of(
    table: &str,
    nested: bool,
    verify: bool,
    r: &rusqlite::Row<'_>,
) -> Result<SqlRow, StoreError> {
    let identity: i64 = r.get(0).map_err(|e| StoreError::Corrupt {
        table: table.to_owned(),
        identity: "?".into(),
        detail: format!("identity is not an integer: {e}"),
    })?;
    let corrupt = |detail: String| StoreError::Corrupt {
        table: table.to_owned(),
        identity: identity.to_string(),
        detail,
    };
    let data: Vec<u8> = r
        .get(1)
        .map_err(|e| corrupt(format!("data is not a blob: {e}")))?;
    let weight: i64 = r
        .get(2)
        .map_err(|e| corrupt(format!("weight c is not an integer: {e}")))?;
    let step: i64 = if nested {
        r.get(3)
            .map_err(|e| corrupt(format!("step is not an integer: {e}")))?
    } else {
        0
    };
    if verify && identity_of(&data) != identity {
        return Err(corrupt("the identity does not match the row's data".into()));
    }
    if weight == 0 {
        return Err(corrupt("a stored weight is 0".into()));
    }
    let step = u32::try_from(step).map_err(|_| corrupt(format!("step {step} is out of range")))?;
    Ok(SqlRow {
        identity,
        data,
        weight,
        step,
    })
}

/// The SQLite store: state in a SQLite file (WAL mode, `synchronous =
/// NORMAL`), one table per state, read through indexes and written as
/// deltas; an iteration is one transaction.
///
/// ```
/// # use graph::{Graph, GraphError};
/// # use operators::prelude::*;
/// let dir = tempfile::tempdir().unwrap();
/// let (graph, (input, cache)) = Graph::build(|q| {
///     let (input, words) = q.input::<String>("words")?;
///     Ok((input, q.cache("word_set", words.distinct(), &[])?))
/// })?;
/// let mut store = stepping_store::Sqlite::open(dir.path().join("state.db"), &graph, stepping_store::OpenOptions::default())?;
/// graph.insert(&mut store, &input, ["hello".to_string()])?;
/// drop(store);
/// // Later, elsewhere: attach to the same file and read the cache.
/// let mut store = stepping_store::Sqlite::open(dir.path().join("state.db"), &graph, stepping_store::OpenOptions::attach())?;
/// assert_eq!(cache.zset(&mut store)?, zset! { "hello".to_string() => 1 });
/// # Ok::<(), GraphError>(())
/// ```
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    fingerprint: String,
    /// The graph the store was opened for (a migration runs a copy).
    graph: Graph,
    prefix: String,
    specs: Vec<StateSpec>,
    schemas: Vec<TableSchema>,
    sql: Vec<TableSql>,
    max_wait: Duration,
    poll: (Duration, Duration),
    notifier: Arc<Notifier>,
    /// After `conn`, so the connection closes before the thread stops.
    checkpointer: Arc<SqliteCheckpointer>,
    /// `SELECT` of every table's time, and `UPDATE` of them all.
    times_sql: String,
    set_all_sql: String,
    created: usize,
    /// Tables checked for `read_committed` from other graphs, by path.
    attached: HashMap<String, (TableSchema, TableSql)>,
    stats: std::cell::Cell<StoreStats>,
    /// The undo table is known to exist.
    undo_ready: std::cell::Cell<bool>,
    /// Migrate a store written by another version of the query.
    migrate: bool,
    /// The migration this open carried out.
    migration: Option<graph::MigrationPlan>,
    /// The store's query generation when opened: a migration bumps it,
    /// and a handle opened before one refuses to go on (QueryChanged).
    generation: i64,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sqlite({}, {} tables)",
            self.path.display(),
            self.schemas.len()
        )
    }
}

/// How long a writer waits for another connection's write lock before its
/// statement fails with `SQLITE_BUSY`.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The pause before try `count + 1` for a lock held by another connection:
/// 50 µs, doubling up to 500 µs. (SQLite's own `busy_timeout` handler
/// sleeps 1, 2, 5, 10, ... up to 100 ms between tries, so a lock freed
/// just after a try sits unused that long; writers here hold it for a few
/// milliseconds at a time, as each of several workers commits its tables.)
fn lock_pause(count: u32) -> Duration {
    Duration::from_micros(50 << count.min(4)).min(Duration::from_micros(500))
}

/// The pauses before try `count + 1`: 50 + 100 + 200 + 400 µs, then 500 µs
/// each.
fn paused_before(count: u32) -> Duration {
    (0..count.min(4)).map(lock_pause).sum::<Duration>() + lock_pause(4) * count.saturating_sub(4)
}

/// SQLite's busy handler (`count`: the tries so far for this lock): pauses
/// ([`lock_pause`]) and tries again, until the pauses add up to
/// [`LOCK_WAIT`].
fn on_busy(count: i32) -> bool {
    let count = u32::try_from(count).unwrap_or(0);
    if paused_before(count) >= LOCK_WAIT {
        return false;
    }
    std::thread::sleep(lock_pause(count));
    true
}

/// The page size of a new file (an existing one keeps its own): 8 KiB.
///
/// A batch of an ingest writes rows all over its tables, so its commit logs
/// every page it touched, whole. Larger pages mean fewer of them while the
/// tables are small, but once a table has more pages than a batch has rows,
/// each row touches its own page and a larger page is only more bytes to
/// log. Serial meter-reads ingest (`meter-ingest`, reads/s):
///
/// | page size | 100k reads (3 runs) | 1M reads |
/// |---|---|---|
/// | 4 KiB | 31.7k-37.2k | 22.5k, 25.3k |
/// | 8 KiB | 38.1k-40.4k | 22.5k-23.3k (3 runs) |
/// | 16 KiB | 39.8k-46.8k | 18.9k-21.6k (4 runs) |
///
/// 8 KiB is close to the best at both sizes.
pub const PAGE_SIZE: u32 = 8192;

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn =
        Connection::open(path).map_err(backend(format!("opening {}", path.display())))?;
    conn.busy_handler(Some(on_busy))
        .map_err(backend("setting the busy handler"))?;
    conn.set_prepared_statement_cache_capacity(512);
    // The page size applies to a new file only (see `PAGE_SIZE`), so it
    // goes before the switch to WAL, which writes the file's first page.
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
        .and_then(|()| retry_busy(|| conn.execute_batch("PRAGMA journal_mode = WAL;")))
        .and_then(|()| {
            conn.execute_batch(
                "PRAGMA synchronous = NORMAL;
                 PRAGMA cache_size = -65536;
                 PRAGMA temp_store = MEMORY;",
            )
        })
        .map_err(backend(format!("configuring {}", path.display())))?;
    Ok(conn)
}

/// Runs `f` again while it fails with `SQLITE_BUSY`, pausing as
/// [`on_busy`] does, for the statements SQLite fails that way without
/// calling the busy handler: switching a new file to WAL while another
/// connection is switching or creating it.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut count = 0;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && on_busy(count) =>
            {
                count = count.saturating_add(1);
            }
            other => return other,
        }
    }
}

impl Sqlite {
    /// Opens (creating if needed) the SQLite file at `path` for `graph`'s
    /// states: creates missing tables (unless `options.create_tables` is
    /// false) and checks that existing ones hold the same shape of state.
    ///
    /// # Errors
    /// [`StoreError::MissingTable`], [`StoreError::SchemaMismatch`] naming
    /// the table, an invalid prefix, or a SQLite failure.
    pub fn open(
        path: impl AsRef<Path>,
        graph: &Graph,
        options: OpenOptions,
    ) -> Result<Sqlite, StoreError> {
        check_prefix(&options.prefix)?;
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path)?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        // Checkpoints every 256 MiB of log at most, mostly on a thread of
        // their own (see `SqliteCheckpointer`); at SQLite's default, every
        // 1000 log pages, an ingest whose batches touch thousands of pages
        // would checkpoint after nearly every commit, and wait for it.
        let checkpointer = SqliteCheckpointer::attach(&mut conn)?;
        let notifier = Notifier::for_key(&notifier_key(&path));
        let specs = graph.states().to_vec();
        let schemas: Vec<TableSchema> = specs
            .iter()
            .map(|s| TableSchema::of(s, &options.prefix, &SqliteDialect))
            .collect();
        let mut store = Sqlite {
            conn,
            fingerprint: graph.fingerprint().to_owned(),
            graph: graph.clone(),
            prefix: options.prefix.clone(),
            sql: schemas.iter().map(TableSql::of).collect(),
            specs,
            schemas,
            max_wait: options.max_wait,
            poll: options.poll,
            times_sql: String::new(),
            set_all_sql: String::new(),
            path,
            notifier,
            checkpointer,
            created: 0,
            attached: HashMap::new(),
            stats: std::cell::Cell::new(StoreStats::default()),
            undo_ready: std::cell::Cell::new(false),
            migrate: options.migrate,
            migration: None,
            generation: 0,
        };
        // Table names are `[a-z0-9_]` (see `sql::ident`): safe as literals.
        let names: Vec<String> = store
            .schemas
            .iter()
            .map(|s| format!("'{}'", s.name))
            .collect();
        let (_, last_update) = store.meta();
        store.times_sql = format!(
            "SELECT table_name, t FROM {last_update} WHERE table_name IN ({}, '{}')",
            names.join(", "),
            store.query_table()
        );
        store.set_all_sql = format!(
            "UPDATE {last_update} SET t = max(t, ?) WHERE table_name IN ({})",
            names.join(", ")
        );
        store.created = store.prepare_tables(options.create_tables)?;
        store.generation = store.read_generation()?;
        Ok(store)
    }

    /// The store's query generation (0 until a first migration).
    fn read_generation(&self) -> Result<i64, StoreError> {
        Ok(self.last_update(&self.query_table())?.unwrap_or(0))
    }

    /// `table`'s time and the store's query generation, in one query.
    fn time_and_generation(&self, table: &str) -> Result<(i64, i64), StoreError> {
        let (_, last_update) = self.meta();
        let query = self.query_table();
        let ctx = || backend(format!("reading the last update of `{table}`"));
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT table_name, t FROM {last_update} WHERE table_name IN (?, ?)"
            ))
            .map_err(ctx())?;
        let mut rows = st.query([table, query.as_str()]).map_err(ctx())?;
        let mut found: HashMap<String, i64> = HashMap::with_capacity(2);
        while let Some(r) = rows.next().map_err(ctx())? {
            let name: String = r.get(0).map_err(ctx())?;
            let t = r
                .get(1)
                .map_err(|e| sql::bad_time(&last_update, &name, e))?;
            found.insert(name, t);
        }
        let at = found
            .get(table)
            .copied()
            .ok_or_else(|| sql::unknown_time(&last_update, table))?;
        Ok((at, found.get(&query).copied().unwrap_or(0)))
    }

    /// `QueryChanged` if the store was migrated since this handle opened it
    /// (`seen` is its generation now).
    fn check_generation(&self, seen: i64) -> Result<(), StoreError> {
        if seen == self.generation {
            return Ok(());
        }
        Err(StoreError::QueryChanged {
            plan: Box::new(self.plan()?),
        })
    }

    /// Rows read and written and statements run since the store was
    /// opened (or since [`reset_stats`](Self::reset_stats)).
    pub fn stats(&self) -> StoreStats {
        self.stats.get()
    }

    /// Zeroes the counters of [`stats`](Self::stats).
    pub fn reset_stats(&self) {
        self.stats.set(StoreStats::default());
    }

    fn count(&self, f: impl FnOnce(&mut StoreStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Adds the time since `since` to the write lock's time held.
    fn held_lock_since(&self, since: Instant) {
        self.count(|s| s.write_lock_held += since.elapsed());
    }

    /// The thread that runs this file's checkpoints.
    pub fn checkpointer(&self) -> &SqliteCheckpointer {
        &self.checkpointer
    }

    /// How many tables this open created (0: every table already existed).
    pub fn tables_created(&self) -> usize {
        self.created
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SQL table name of each state, by path.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.schemas
            .iter()
            .map(|s| (s.path.clone(), s.name.clone()))
            .collect()
    }

    /// The underlying connection, e.g. to query cache tables with plain SQL.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Checks every row of every state table against its own data: decodes
    /// `data` and recomputes the identity and every key column through the
    /// state's codec, returning each column that disagrees, row by row
    /// (empty when every row is consistent). Reads trust the key columns,
    /// so a row whose key column was changed behind the store's back is
    /// missing from reads by index while a read of the whole table shows
    /// it; this finds such rows. It reads every row of every table, outside
    /// any iteration.
    ///
    /// # Errors
    /// A table that cannot be read.
    pub fn check_rows(&self) -> Result<Vec<RowProblem>, StoreError> {
        let mut out = Vec::new();
        for (spec, schema) in self.specs.iter().zip(&self.schemas) {
            let text = check::select_all(schema, "");
            let ctx = || on(schema, "checking");
            let mut st = self.conn.prepare(&text).map_err(ctx())?;
            let mut rows = st.query([]).map_err(ctx())?;
            while let Some(r) = rows.next().map_err(ctx())? {
                let v: Vec<SqlValue> = (0..4 + schema.columns.len())
                    .map(|i| r.get::<_, SqlValue>(i))
                    .collect::<Result<_, _>>()
                    .map_err(ctx())?;
                let int = |v: &SqlValue| match v {
                    SqlValue::Integer(i) => Some(*i),
                    _ => None,
                };
                let identity = int(&v[0]);
                let step = int(&v[1]).and_then(|s| u32::try_from(s).ok());
                let data = match &v[2] {
                    SqlValue::Blob(b) => Some(b.as_slice()),
                    _ => None,
                };
                let c = int(&v[3]);
                // SQLite lets any column hold any type: a row whose own
                // columns are amiss is reported so, and checked no further.
                let typed = [
                    (identity.is_some(), "identity", "an integer"),
                    (step.is_some(), "step", "an integer from 0 to 2^32 - 1"),
                    (data.is_some(), "data", "bytes"),
                    (c.is_some(), "c", "an integer"),
                ];
                let (Some(identity), Some(step), Some(data), Some(c)) = (identity, step, data, c)
                else {
                    for (i, (fits, column, expected)) in typed.into_iter().enumerate() {
                        if !fits {
                            out.push(RowProblem {
                                table: schema.name.clone(),
                                identity: identity.unwrap_or_default(),
                                step: step.unwrap_or_default(),
                                column: column.into(),
                                stored: show_sqlite(&v[i]),
                                expected: expected.into(),
                            });
                        }
                    }
                    continue;
                };
                let row = check::Stored {
                    identity,
                    step,
                    data,
                    c,
                };
                let mut key = |i: usize, expected: &KeyValue| {
                    let stored = &v[4 + i];
                    match to_sqlite(&schema.name, expected) {
                        Ok(e) if e == *stored => None,
                        _ => Some(show_sqlite(stored)),
                    }
                };
                check::check_row(spec, schema, row, &mut key, &mut out);
            }
        }
        Ok(out)
    }

    /// The last input time committed to every table (the smallest
    /// `last_update`; 0 for a new store): every iteration up to it is
    /// fully applied.
    ///
    /// # Errors
    /// A read failure.
    pub fn last_time(&self) -> Result<i64, StoreError> {
        Ok(self.times()?.into_iter().min().unwrap_or(0))
    }

    fn meta(&self) -> (String, String) {
        (
            OwnNames::name(&self.prefix, "tables"),
            OwnNames::name(&self.prefix, "last_update"),
        )
    }

    /// Creates or checks every table; returns how many were created.
    fn prepare_tables(&mut self, create: bool) -> Result<usize, StoreError> {
        let (tables, last_update) = self.meta();
        // An open that may create takes the write lock before it reads what
        // exists, so that opens of one file from several connections take
        // turns (waiting in the busy handler). A transaction that read first
        // could not write once another connection had committed: SQLite
        // fails it with `database is locked` at once, without waiting.
        // So does one that renames an earlier version's tables (checked
        // again once it holds the lock).
        let behavior = if create || !legacy_renames(&self.conn, &self.prefix)?.is_empty() {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = Transaction::new_unchecked(&self.conn, behavior)
            .map_err(backend("starting to create tables"))?;
        for l in legacy_renames(&tx, &self.prefix)? {
            tx.execute_batch(&format!("ALTER TABLE {} RENAME TO {}", l.old, l.new))
                .map_err(backend(format!("renaming `{}` to `{}`", l.old, l.new)))?;
        }
        if create {
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {tables} (table_name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL, definition TEXT NOT NULL DEFAULT '');
                 CREATE TABLE IF NOT EXISTS {last_update} (table_name TEXT PRIMARY KEY, t INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS {query} (table_name TEXT PRIMARY KEY);",
                query = self.query_table()
            ))
            .map_err(backend("creating the metadata tables"))?;
            let columns: Vec<String> = tx
                .prepare(&format!("SELECT name FROM pragma_table_info('{tables}')"))
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .map_err(backend(format!("reading the columns of `{tables}`")))?;
            if !columns.iter().any(|c| c == "definition") {
                // Written by a version that kept no definitions.
                tx.execute_batch(&format!(
                    "ALTER TABLE {tables} ADD COLUMN definition TEXT NOT NULL DEFAULT ''"
                ))
                .map_err(backend(format!("adding definitions to `{tables}`")))?;
            }
            let plan = self.plan()?;
            let written: bool = tx
                .query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM {last_update} WHERE t > 0)"),
                    [],
                    |r| r.get(0),
                )
                .map_err(backend(format!("reading `{last_update}`")))?;
            if written && !plan.is_unchanged() {
                if !self.migrate {
                    return Err(StoreError::QueryChanged {
                        plan: Box::new(plan),
                    });
                }
                let done = self.migrate_in(plan)?;
                self.record_query()?;
                // Handles opened before the migration refuse to go on.
                tx.execute(
                    &format!(
                        "INSERT INTO {last_update} (table_name, t) VALUES (?, 1) \
                         ON CONFLICT (table_name) DO UPDATE SET t = t + 1"
                    ),
                    [self.query_table()],
                )
                .map_err(backend("recording the migration"))?;
                tx.commit().map_err(backend("committing a migration"))?;
                self.migration = Some(done);
                return Ok(0);
            }
        }
        // (Metadata that cannot be read is left to the table checks below,
        // which name the table.)
        if !create
            && self.records_definitions()?
            && let Ok(plan) = self.plan()
        {
            sql::reader_refusal(plan)?;
        }
        let mut created = 0;
        for schema in &self.schemas {
            if check_table(&tx, &tables, schema)? {
                continue;
            }
            if !create {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path: schema.path.clone(),
                });
            }
            self.create_table(schema, 0)?;
            created += 1;
        }
        if create {
            self.record_query()?;
        }
        tx.commit().map_err(backend("committing new tables"))?;
        Ok(created)
    }

    /// Creates `schema`'s table and records it, at time `t`.
    fn create_table(&self, schema: &TableSchema, t: i64) -> Result<(), StoreError> {
        let (tables, last_update) = self.meta();
        for stmt in sql::create_statements(&SqliteDialect, schema) {
            self.conn
                .execute_batch(&stmt)
                .map_err(backend(format!("creating `{}`", schema.name)))?;
        }
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {tables} (table_name, path, kind, shape) VALUES (?, ?, ?, ?)"
                ),
                (
                    &schema.name,
                    &schema.path,
                    schema.kind.name(),
                    &schema.shape,
                ),
            )
            .and_then(|_| {
                self.conn.execute(
                    &format!("INSERT OR IGNORE INTO {last_update} (table_name, t) VALUES (?, ?)"),
                    (&schema.name, t),
                )
            })
            .map(|_| ())
            .map_err(backend(format!("recording `{}`", schema.name)))
    }

    /// The table listing the state tables of the query that last wrote
    /// this store.
    fn query_table(&self) -> String {
        OwnNames::name(&self.prefix, "query")
    }

    /// Whether the store records definitions (a store written by an
    /// earlier version does not).
    fn records_definitions(&self) -> Result<bool, StoreError> {
        let (tables, _) = self.meta();
        self.conn
            .query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM pragma_table_info('{tables}') WHERE name = 'definition') \
                     + (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?)"
                ),
                [self.query_table()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 2)
            .map_err(backend(format!("reading the columns of `{tables}`")))
    }

    /// How the store's recorded states compare with this graph's.
    fn plan(&self) -> Result<graph::MigrationPlan, StoreError> {
        let (tables, _) = self.meta();
        let recorded: Vec<sql::Recorded> = self
            .conn
            .prepare(&format!(
                "SELECT table_name, path, shape, definition FROM {tables}"
            ))
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(sql::Recorded {
                        table: r.get(0)?,
                        path: r.get(1)?,
                        shape: r.get(2)?,
                        definition: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(backend(format!("reading `{tables}`")))?;
        let query: Vec<String> = self
            .conn
            .prepare(&format!("SELECT table_name FROM {}", self.query_table()))
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(backend("reading the query's tables"))?;
        Ok(sql::plan(&self.schemas, &self.specs, &recorded, &query))
    }

    /// Records this graph as the store's query: its tables, and each one's
    /// definition.
    fn record_query(&self) -> Result<(), StoreError> {
        let (tables, _) = self.meta();
        let query = self.query_table();
        self.conn
            .execute(&format!("DELETE FROM {query}"), [])
            .map_err(backend("recording the query's tables"))?;
        for (schema, spec) in self.schemas.iter().zip(&self.specs) {
            self.conn
                .execute(
                    &format!("UPDATE {tables} SET definition = ? WHERE table_name = ?"),
                    (spec.definition(), &schema.name),
                )
                .and_then(|_| {
                    self.conn.execute(
                        &format!("INSERT INTO {query} (table_name) VALUES (?)"),
                        [&schema.name],
                    )
                })
                .map_err(backend(format!("recording `{}`", schema.name)))?;
        }
        Ok(())
    }

    /// Carries `plan` out inside the open's transaction (see
    /// [`OpenOptions::migrate`]); returns it with the rows of each state it
    /// computed.
    fn migrate_in(
        &self,
        mut plan: graph::MigrationPlan,
    ) -> Result<graph::MigrationPlan, StoreError> {
        let (tables, last_update) = self.meta();
        let now: i64 = self
            .conn
            .query_row(
                &format!("SELECT coalesce(max(t), 0) FROM {last_update}"),
                [],
                |r| r.get(0),
            )
            .map_err(backend(format!("reading `{last_update}`")))?;
        let graph = self.graph.clone();
        let memory = if plan.backfilled().next().is_some() {
            let keep: Vec<&str> = plan
                .entries
                .iter()
                .filter(|e| e.action == graph::PlanAction::Keep)
                .map(|e| e.path.as_str())
                .collect();
            let store = self;
            let computed = crate::migrate::recompute(&graph, &plan, |spec, sink| {
                let s = store
                    .specs
                    .iter()
                    .position(|x| x.path() == spec.path())
                    .filter(|_| keep.contains(&spec.path().as_str()))
                    .ok_or_else(|| StoreError::InputNotKept {
                        state: String::new(),
                        input: spec.path().to_string(),
                        why: "the store holds it under another row type".into(),
                    })?;
                let rows = store.run_read(&store.schemas[s], &store.sql[s], &SqlRead::All)?;
                sql::decode_rows(&store.specs[s], &store.schemas[s], rows, sink)
            });
            Some(computed.map_err(|e| match e {
                graph::GraphError::Store(e) => e,
                other => StoreError::backend("computing the migrated states", other.to_string()),
            })?)
        } else {
            None
        };
        for entry in &mut plan.entries {
            let table = entry.table.clone();
            match &entry.action {
                graph::PlanAction::Keep => {}
                graph::PlanAction::Drop | graph::PlanAction::Changed { .. } => {
                    let rows: i64 = self
                        .conn
                        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                        .unwrap_or(0);
                    self.conn
                        .execute_batch(&format!(
                            "DROP TABLE IF EXISTS {table}; DELETE FROM {tables} WHERE table_name = '{table}'; \
                             DELETE FROM {last_update} WHERE table_name = '{table}'"
                        ))
                        .map_err(backend(format!("dropping `{table}`")))?;
                    entry.rows = Some(rows as u64);
                }
                graph::PlanAction::New => {}
            }
        }
        for entry in &mut plan.entries {
            if !entry.action.backfills() {
                continue;
            }
            let Some(s) = self.schemas.iter().position(|x| x.name == entry.table) else {
                continue;
            };
            let (spec, schema) = (&self.specs[s], &self.schemas[s]);
            self.create_table(schema, now)?;
            let mut written = 0;
            if let Some(memory) = &memory {
                for delta in memory.contents(s) {
                    let rows = sql::encode_delta(spec, schema, &*delta)?;
                    written += rows.len() as u64;
                    self.write_rows(spec, schema, &self.sql[s], &rows)?;
                }
            }
            entry.rows = Some(written);
        }
        Ok(plan)
    }

    /// The migration this open carried out (with
    /// [`OpenOptions::migrate`]), if the store held another version of the
    /// query: each state's action and the rows it holds.
    pub fn migration(&self) -> Option<&graph::MigrationPlan> {
        self.migration.as_ref()
    }

    /// `table`'s last update time; its row must exist (every table gets one
    /// when created).
    fn time_of(&self, table: &str) -> Result<i64, StoreError> {
        self.last_update(table)?
            .ok_or_else(|| sql::unknown_time(&self.meta().1, table))
    }

    fn last_update(&self, table: &str) -> Result<Option<i64>, StoreError> {
        let (_, last_update) = self.meta();
        self.conn
            .prepare_cached(&format!("SELECT t FROM {last_update} WHERE table_name = ?"))
            .and_then(|mut s| s.query_row([table], |r| r.get::<_, i64>(0)).optional())
            .map_err(backend(format!("reading the last update of `{table}`")))
    }

    fn run_read(
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
    fn first_rows(
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

    fn write_rows(
        &self,
        spec: &StateSpec,
        schema: &TableSchema,
        sql: &TableSql,
        rows: &[EncodedRow],
    ) -> Result<(), StoreError> {
        let ctx = || on(schema, "writing");
        let mut upsert = self.conn.prepare_cached(&sql.upsert).map_err(ctx())?;
        let mut delete = self.conn.prepare_cached(&sql.delete).map_err(ctx())?;
        let mut cancel = self.conn.prepare_cached(&sql.cancel).map_err(ctx())?;
        let keyed = schema.kind == StateKind::Keyed;
        let nested = schema.nested();
        // Binds the primary key; returns the next parameter's number.
        let bind_pk =
            |st: &mut rusqlite::Statement<'_>, row: &EncodedRow| -> Result<usize, StoreError> {
                let mut i = 1;
                for k in &row.keys[schema.clustered.clone()] {
                    bind_key(st, i, schema, k)?;
                    i += 1;
                }
                st.raw_bind_parameter(i, row.identity).map_err(ctx())?;
                if nested {
                    st.raw_bind_parameter(i + 1, row.step).map_err(ctx())?;
                    return Ok(i + 2);
                }
                Ok(i + 1)
            };
        let mut statements = 0;
        for row in rows {
            statements += 1;
            if keyed && row.weight == 0 {
                bind_pk(&mut delete, row)?;
                delete.raw_execute().map_err(ctx())?;
                continue;
            }
            if let (false, Some(cancels)) = (keyed || row.weight >= 0, row.weight.checked_neg()) {
                // Most removals cancel a stored row exactly: one statement.
                let i = bind_pk(&mut cancel, row)?;
                cancel
                    .raw_bind_parameter(i, row.data.as_slice())
                    .map_err(ctx())?;
                cancel.raw_bind_parameter(i + 1, cancels).map_err(ctx())?;
                if cancel.raw_execute().map_err(ctx())? == 1 {
                    continue;
                }
                statements += 1;
            }
            upsert.raw_bind_parameter(1, row.identity).map_err(ctx())?;
            let mut i = 2;
            if nested {
                upsert.raw_bind_parameter(i, row.step).map_err(ctx())?;
                i += 1;
            }
            upsert
                .raw_bind_parameter(i, row.data.as_slice())
                .map_err(ctx())?;
            i += 1;
            for k in &row.keys {
                bind_key(&mut upsert, i, schema, k)?;
                i += 1;
            }
            upsert.raw_bind_parameter(i, row.weight).map_err(ctx())?;
            if upsert.raw_execute().map_err(ctx())? == 1 {
                continue;
            }
            // The stored row holds other data (other key columns, if
            // keyed), or the weights sum to zero or overflow.
            statements += 1;
            let mut stored = self.conn.prepare_cached(&sql.stored).map_err(ctx())?;
            bind_pk(&mut stored, row)?;
            let (data, c): (Vec<u8>, i64) = {
                let mut q = stored.raw_query();
                let r = q.next().map_err(ctx())?.ok_or_else(|| {
                    StoreError::backend(
                        format!("writing `{}`", schema.name),
                        format!("an upsert of identity {} changed no row", row.identity),
                    )
                })?;
                (
                    r.get(0).map_err(ctx())?,
                    // Only this store writes weights, always as integers.
                    r.get(1).map_err(ctx())?,
                )
            };
            if let Some(refused) = sql::refused_write(spec, schema, row, &data, c) {
                return Err(refused);
            }
            match c.checked_add(row.weight) {
                None => {
                    return Err(StoreError::WeightOverflow {
                        table: schema.name.clone(),
                        identity: row.identity.to_string(),
                    });
                }
                Some(0) => {
                    statements += 1;
                    bind_pk(&mut delete, row)?;
                    delete.raw_execute().map_err(ctx())?;
                }
                Some(sum) => {
                    return Err(StoreError::backend(
                        format!("writing `{}`", schema.name),
                        format!(
                            "an upsert of identity {} changed no row, though its weights sum to {sum}",
                            row.identity
                        ),
                    ));
                }
            }
        }
        self.count(|s| {
            s.rows_written += rows.len() as u64;
            s.statements += statements;
        });
        Ok(())
    }

    fn set_last_update(&self, table: &str, t: i64) -> Result<(), StoreError> {
        let (_, last_update) = self.meta();
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {last_update} (table_name, t) VALUES (?, ?) ON CONFLICT (table_name) DO UPDATE SET t = max(t, excluded.t)"
            ))
            .and_then(|mut s| s.execute((table, t)))
            .map(|_| ())
            .map_err(backend(format!("recording the last update of `{table}`")))
    }

    /// Waits until `table` has been written up to `frontier`: polls with
    /// backoff, woken early by commits of this process.
    fn wait_for(&self, table: &str, frontier: i64, max_wait: Duration) -> Result<(), StoreError> {
        self.wait_until(frontier, max_wait, || {
            Ok(Some((table.to_owned(), self.time_of(table)?)))
        })
    }

    /// Waits until every table of this graph has been written up to
    /// `frontier`, with one query per poll.
    fn wait_all(&self, frontier: i64, max_wait: Duration) -> Result<(), StoreError> {
        self.wait_until(frontier, max_wait, || {
            let times = self.times()?;
            Ok(self
                .schemas
                .iter()
                .zip(times)
                .min_by_key(|(_, t)| *t)
                .map(|(s, t)| (s.name.clone(), t)))
        })
    }

    /// The time of every table of this graph, in order, in one query.
    fn times(&self) -> Result<Vec<i64>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&self.times_sql)
            .map_err(backend("reading the last updates"))?;
        let (_, last_update) = self.meta();
        let mut found: HashMap<String, i64> = HashMap::with_capacity(self.schemas.len());
        let mut rows = st
            .query([])
            .map_err(backend(format!("reading `{last_update}`")))?;
        while let Some(r) = rows
            .next()
            .map_err(backend(format!("reading `{last_update}`")))?
        {
            let table: String = r
                .get(0)
                .map_err(backend(format!("reading `{last_update}`")))?;
            let t = r
                .get(1)
                .map_err(|e| sql::bad_time(&last_update, &table, e))?;
            found.insert(table, t);
        }
        drop(rows);
        self.check_generation(found.get(&self.query_table()).copied().unwrap_or(0))?;
        self.schemas
            .iter()
            .map(|s| match found.get(&s.name) {
                Some(t) => Ok(*t),
                None => self.time_of(&s.name),
            })
            .collect()
    }

    /// Sets every table's time to (at least) `t`, in one statement.
    fn set_all(&self, t: i64) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(&self.set_all_sql)
            .and_then(|mut st| st.execute([t]))
            .map_err(backend("recording the last updates"))?;
        if changed != self.schemas.len() {
            // A row went missing: recreate it (the frontier checks report
            // it before this can be reached in an iteration).
            for s in &self.schemas {
                self.set_last_update(&s.name, t)?;
            }
        }
        Ok(())
    }

    /// Polls `seen` (the table furthest behind and its time) until it has
    /// reached `frontier`.
    fn wait_until(
        &self,
        frontier: i64,
        max_wait: Duration,
        seen: impl Fn() -> Result<Option<(String, i64)>, StoreError>,
    ) -> Result<(), StoreError> {
        let start = Instant::now();
        let mut backoff = Backoff::new(self.poll.0, self.poll.1);
        loop {
            let generation = self.notifier.generation();
            let Some((table, seen)) = seen()? else {
                return Ok(());
            };
            if seen >= frontier {
                return Ok(());
            }
            if start.elapsed() >= max_wait {
                return Err(StoreError::FrontierTimeout {
                    table,
                    frontier,
                    seen: Some(seen),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            self.notifier.wait(
                generation,
                backoff.next(max_wait.saturating_sub(start.elapsed())),
            );
        }
    }

    fn failed_table(&self) -> String {
        OwnNames::name(&self.prefix, "failed_batches")
    }

    /// The table of what undoes each pipelined table write, kept until its
    /// iteration has reached every table (see [`StateStore::recover`]).
    fn undo_table(&self) -> String {
        OwnNames::name(&self.prefix, "undo")
    }

    fn create_undo_table(&self) -> Result<(), StoreError> {
        if !self.undo_ready.get() {
            self.conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (t INTEGER NOT NULL, table_name TEXT NOT NULL, \
                     rows BLOB NOT NULL, PRIMARY KEY (t, table_name))",
                    self.undo_table()
                ))
                .map_err(backend("creating the undo table"))?;
            self.undo_ready.set(true);
        }
        Ok(())
    }

    /// Inside a pipelined flush of table `s` at time `t`: keeps what undoes
    /// writing `rows` (a keyed table's rows are read first, to be restored).
    fn keep_undo(&self, s: usize, t: i64, rows: &[EncodedRow]) -> Result<(), StoreError> {
        let schema = &self.schemas[s];
        let old: HashMap<i64, Vec<u8>> = if schema.kind == StateKind::Keyed {
            let ids = rows.iter().map(|r| (r.identity, r.keys.clone())).collect();
            self.run_read(schema, &self.sql[s], &SqlRead::ByIdentity { ids })?
                .into_iter()
                .map(|r| (r.identity, r.data))
                .collect()
        } else {
            HashMap::new()
        };
        let undo = sql::encode_undo(&sql::undo_of(schema, rows, &old)?)?;
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {} (t, table_name, rows) VALUES (?, ?, ?)",
                self.undo_table()
            ))
            .and_then(|mut st| st.execute((t, &schema.name, undo)))
            .map(|_| ())
            .map_err(backend(format!("keeping the undo of `{}`", schema.name)))
    }

    /// The first table among `times` (this graph's, in order) that has
    /// already recorded `time`, as the error an iteration at `time` gets.
    fn already_applied(&self, times: &[i64], time: i64) -> Option<StoreError> {
        self.schemas
            .iter()
            .zip(times)
            .find(|(_, t)| **t >= time)
            .map(|(s, t)| StoreError::TimeAlreadyApplied {
                table: s.name.clone(),
                time,
                recorded: *t,
            })
    }

    /// An iteration at `time` (all or nothing: with the write lock held and
    /// its time checked under it).
    fn begin_at(&mut self, time: Time) -> Result<SqliteTx<'_>, StoreError> {
        let n = self.schemas.len();
        let mut tx = SqliteTx {
            store: self,
            time,
            open_since: None,
            waited: vec![false; n],
            buffered: vec![Vec::new(); n],
            forget: None,
            done: false,
        };
        if time.flush_every_set != Some(true) {
            // All or nothing: wait for every table, then hold the write lock
            // for the whole iteration.
            tx.store.wait_all(time.frontier, tx.store.max_wait)?;
            tx.waited.fill(true);
            tx.store
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend("starting an iteration"))?;
            tx.open_since = Some(Instant::now());
            // Under the lock: another process may have applied this very
            // time since the wait (dropping `tx` rolls back).
            let times = tx.store.times()?;
            if let Some(e) = tx.store.already_applied(&times, time.input_time) {
                return Err(e);
            }
        }
        Ok(tx)
    }

    /// An all-or-nothing iteration after every committed one, its time read
    /// under the write lock, so that two processes never both take it;
    /// retrying the failed batch at `forget` when given.
    fn begin_serial(&mut self, forget: Option<i64>) -> Result<SqliteTx<'_>, StoreError> {
        if forget.is_some() {
            self.create_failed_table()?;
        }
        let last = loop {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend("starting an iteration"))?;
            let times = match self.times() {
                Ok(times) => times,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            let last = times.iter().copied().fold(0, i64::max);
            if times.iter().all(|t| *t == last) {
                break last;
            }
            // Tables at different times: a pipelined iteration is under
            // way. Wait for it outside the lock.
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(backend("waiting for the frontier"))?;
            self.wait_all(last, self.max_wait)?;
        };
        let n = self.schemas.len();
        Ok(SqliteTx {
            store: self,
            time: Time::new(last + 1, last),
            open_since: Some(Instant::now()),
            waited: vec![true; n],
            buffered: vec![Vec::new(); n],
            forget,
            done: false,
        })
    }

    fn create_failed_table(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (input_time INTEGER PRIMARY KEY, batch INTEGER NOT NULL, \
                 changes BLOB NOT NULL, error TEXT NOT NULL, committed TEXT NOT NULL)",
                self.failed_table()
            ))
            .map_err(backend("creating the failed-batch table"))
    }
}

fn bad_index(schema: &TableSchema, index: usize) -> StoreError {
    StoreError::SchemaMismatch {
        table: schema.name.clone(),
        detail: format!("no index number {index}"),
    }
}

/// The store's own tables of a store made by an earlier version that are
/// to get today's names ([`OwnNames::legacy_tables`]): those with the
/// columns of that table whose new name is free.
fn legacy_renames(conn: &Connection, prefix: &str) -> Result<Vec<sql::Legacy>, StoreError> {
    let columns = |table: &str| -> Result<Option<Vec<String>>, StoreError> {
        let exists = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table],
                |_| Ok(()),
            )
            .optional()
            .map_err(backend("reading sqlite_master"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        conn.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .and_then(|mut s| {
                s.query_map([table], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map(Some)
            .map_err(backend(format!("reading the columns of `{table}`")))
    };
    let mut renames = Vec::new();
    for l in OwnNames::legacy_tables(prefix) {
        if let Some(old) = columns(&l.old)?
            && l.applies(Some(&old), columns(&l.new)?.is_some())
        {
            renames.push(l);
        }
    }
    Ok(renames)
}

/// Whether `schema`'s table exists with the same shape (`Ok(false)`: it
/// does not exist at all).
fn check_table(conn: &Connection, tables: &str, schema: &TableSchema) -> Result<bool, StoreError> {
    let recorded: Option<(String, String)> = conn
        .query_row(
            &format!("SELECT path, shape FROM {tables} WHERE table_name = ?"),
            [&schema.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .or_else(|e| match e {
            // No metadata table yet: nothing was created here.
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                Ok(None)
            }
            e => Err(e),
        })
        .map_err(backend(format!("reading the shape of `{}`", schema.name)))?;
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            [&schema.name],
            |_| Ok(()),
        )
        .optional()
        .map_err(backend("reading sqlite_master"))?
        .is_some();
    sql::table_state(schema, recorded, exists)
}

impl StateStore for Sqlite {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.begin_at(time)?))
    }

    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        Ok(Box::new(self.begin_serial(None)?))
    }

    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let Some(time) = time else {
            return Ok(Box::new(self.begin_serial(Some(failed_input_time))?));
        };
        self.create_failed_table()?;
        let mut tx = self.begin_at(Time::new(time.input_time, time.frontier))?;
        tx.forget = Some(failed_input_time);
        Ok(Box::new(tx))
    }

    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        self.create_undo_table()?;
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(backend("recovering"))?;
        let times = self.times()?;
        let low = times.iter().copied().min().unwrap_or(0);
        let (_, last_update) = self.meta();
        let mut rewound = Vec::new();
        for (s, &t) in times.iter().enumerate() {
            if t <= low {
                continue;
            }
            let schema = &self.schemas[s];
            let entries: Vec<(i64, Vec<u8>)> = self
                .conn
                .prepare(&format!(
                    "SELECT t, rows FROM {} WHERE table_name = ? AND t > ? ORDER BY t DESC",
                    self.undo_table()
                ))
                .and_then(|mut st| {
                    st.query_map((&schema.name, low), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(backend(format!("reading the undo of `{}`", schema.name)))?;
            // Latest first: each entry undoes one time's write to the table
            // as it stood after that time.
            for (at, bytes) in entries {
                let rows = sql::decode_undo(&schema.name, at, &bytes)?;
                self.write_rows(&self.specs[s], schema, &self.sql[s], &rows)?;
            }
            self.conn
                .execute(
                    &format!("UPDATE {last_update} SET t = ? WHERE table_name = ?"),
                    (low, &schema.name),
                )
                .map_err(backend(format!("rewinding `{}`", schema.name)))?;
            rewound.push(Rewound {
                table: schema.name.clone(),
                from: t,
                to: low,
            });
        }
        self.conn
            .execute(&format!("DELETE FROM {}", self.undo_table()), [])
            .map_err(backend("clearing the undo table"))?;
        tx.commit().map_err(backend("committing a recovery"))?;
        self.notifier.notify();
        Ok(rewound)
    }

    fn next_time(&mut self) -> Result<i64, StoreError> {
        Ok(self.times()?.into_iter().fold(0, i64::max) + 1)
    }

    fn last_time(&mut self) -> Result<i64, StoreError> {
        Sqlite::last_time(self)
    }

    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let path = spec.path().as_str();
        let sql_read = SqlRead::of(spec, read);
        if let Some(i) = self
            .specs
            .iter()
            .position(|s| s.path() == spec.path() && s.shape() == spec.shape())
        {
            let rows = self.run_read(&self.schemas[i], &self.sql[i], &sql_read)?;
            return sql::decode_rows(spec, &self.schemas[i], rows, sink);
        }
        if !self.attached.contains_key(path) {
            let schema = TableSchema::of(spec, &self.prefix, &SqliteDialect);
            let (tables, _) = self.meta();
            if !check_table(&self.conn, &tables, &schema)? {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path: path.to_owned(),
                });
            }
            let sql = TableSql::of(&schema);
            self.attached.insert(path.to_owned(), (schema, sql));
        }
        let (schema, sql) = &self.attached[path];
        if schema.shape != TableSchema::of(spec, &self.prefix, &SqliteDialect).shape {
            return Err(StoreError::SchemaMismatch {
                table: schema.name.clone(),
                detail: "shape changed".into(),
            });
        }
        let rows = self.run_read(schema, sql, &sql_read)?;
        sql::decode_rows(spec, schema, rows, sink)
    }

    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        self.create_failed_table()?;
        for s in &self.schemas {
            self.wait_for(&s.name, time.frontier, self.max_wait)?;
        }
        // Immediate, as at open: a transaction that read the times first
        // could not write them once another connection had committed.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(backend("recording a failed batch"))?;
        let mut committed = Vec::new();
        for s in &self.schemas {
            if self.time_of(&s.name)? >= time.input_time {
                committed.push(s.path.clone());
            }
            self.set_last_update(&s.name, time.input_time)?;
        }
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {} (input_time, batch, changes, error, committed) VALUES (?, ?, ?, ?, ?)",
                self.failed_table()
            ),
            (time.input_time, batch, changes, error, committed.join("\n")),
        )
        .map_err(backend("recording a failed batch"))?;
        tx.commit().map_err(backend("recording a failed batch"))?;
        self.notifier.notify();
        Ok(FailedBatch {
            input_time: time.input_time,
            batch,
            changes: changes.to_vec(),
            error: error.to_owned(),
            committed,
        })
    }

    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        self.create_failed_table()?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT input_time, batch, changes, error, committed FROM {} ORDER BY input_time",
                self.failed_table()
            ))
            .map_err(backend("reading failed batches"))?;
        let rows = stmt
            .query_map([], |r| {
                let committed: String = r.get(4)?;
                Ok(FailedBatch {
                    input_time: r.get(0)?,
                    batch: r.get(1)?,
                    changes: r.get(2)?,
                    error: r.get(3)?,
                    committed: committed.lines().map(str::to_owned).collect(),
                })
            })
            .map_err(backend("reading failed batches"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading failed batches"))
    }

    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        self.create_failed_table()?;
        self.conn
            .execute(
                &format!("DELETE FROM {} WHERE input_time = ?", self.failed_table()),
                [input_time],
            )
            .map(|_| ())
            .map_err(backend("forgetting a failed batch"))
    }

    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        self.count_state_rows(spec)
    }
}

struct SqliteTx<'s> {
    store: &'s mut Sqlite,
    time: Time,
    /// A transaction spanning the iteration is open, holding the write
    /// lock since then.
    open_since: Option<Instant>,
    waited: Vec<bool>,
    /// With `flush_every_set = Some(true)`: writes held until their flush.
    buffered: Vec<Vec<EncodedRow>>,
    /// The failed batch this iteration retries, forgotten in its commit.
    forget: Option<i64>,
    done: bool,
}

impl SqliteTx<'_> {
    fn wait(&mut self, s: usize) -> Result<(), StoreError> {
        if !self.waited[s] {
            let max_wait = self.store.max_wait;
            self.store
                .wait_for(&self.store.schemas[s].name, self.time.frontier, max_wait)?;
            self.waited[s] = true;
        }
        Ok(())
    }
}

impl StateTx for SqliteTx<'_> {
    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let rows = store.run_read(
            &store.schemas[s],
            &store.sql[s],
            &SqlRead::of(&store.specs[s], read),
        )?;
        sql::decode_rows(&store.specs[s], &store.schemas[s], rows, sink)
    }

    fn table_name(&self, state: StateId) -> Option<String> {
        Some(self.store.schemas.get(state.index())?.name.clone())
    }

    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let max: Option<i64> = store
            .conn
            .prepare_cached(&store.sql[s].max_step)
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(on(&store.schemas[s], "reading"))?;
        max.map(|m| sql::step_of(&store.schemas[s], m)).transpose()
    }

    fn apply(&mut self, state: StateId, delta: Value) -> Result<(), StoreError> {
        let s = state.index();
        self.wait(s)?;
        let store = &*self.store;
        let rows = sql::encode_delta(&store.specs[s], &store.schemas[s], &*delta)?;
        if self.open_since.is_some() {
            store.write_rows(&store.specs[s], &store.schemas[s], &store.sql[s], &rows)
        } else {
            self.buffered[s].extend(rows);
            Ok(())
        }
    }

    fn flush(&mut self, state: StateId) -> Result<(), StoreError> {
        if self.open_since.is_some() || self.time.flush_every_set != Some(true) {
            return Ok(());
        }
        let s = state.index();
        self.wait(s)?;
        let rows = std::mem::take(&mut self.buffered[s]);
        let store = &*self.store;
        let name = &store.schemas[s].name;
        let time = self.time.input_time;
        store.create_undo_table()?;
        // Immediate: take the write lock now (waiting for it in the busy
        // handler), rather than at the first write.
        let tx = rusqlite::Transaction::new_unchecked(
            &store.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(backend(format!("flushing `{name}`")))?;
        let locked_at = Instant::now();
        // Under the lock: a table that has this time already (another
        // process at the same time, or a batch fed again) is not written
        // twice.
        let written = store
            .time_and_generation(name)
            .and_then(|(at, seen)| store.check_generation(seen).map(|()| at))
            .and_then(|at| match at >= time {
                true => Err(StoreError::TimeAlreadyApplied {
                    table: name.clone(),
                    time,
                    recorded: at,
                }),
                false => Ok(()),
            })
            .and_then(|()| store.keep_undo(s, time, &rows))
            .and_then(|()| {
                store.write_rows(&store.specs[s], &store.schemas[s], &store.sql[s], &rows)
            })
            .and_then(|()| store.set_last_update(name, time))
            .and_then(|()| tx.commit().map_err(backend(format!("committing `{name}`"))));
        // On an error, dropping the transaction has rolled it back.
        store.held_lock_since(locked_at);
        written?;
        store.notifier.notify();
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(open_since) = self.open_since else {
            // Pipelined: every table was committed at its flush; make sure
            // none was left behind (its time must still move on), and, the
            // iteration now being in every table, drop what would undo it.
            for s in 0..self.buffered.len() {
                if !self.buffered[s].is_empty() {
                    self.flush(StateId(s as u32))?;
                }
            }
            let store = &*self.store;
            let time = self.time.input_time;
            store.create_undo_table()?;
            let tx = rusqlite::Transaction::new_unchecked(
                &store.conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(backend("finishing an iteration"))?;
            let locked_at = Instant::now();
            let finished = store
                .set_all(time)
                .and_then(|()| {
                    store
                        .conn
                        .prepare_cached(&format!("DELETE FROM {} WHERE t <= ?", store.undo_table()))
                        .and_then(|mut st| st.execute([time]))
                        .map(|_| ())
                        .map_err(backend("dropping undo entries"))
                })
                .and_then(|()| tx.commit().map_err(backend("finishing an iteration")));
            store.held_lock_since(locked_at);
            finished?;
            store.notifier.notify();
            return Ok(());
        };
        if self.time.flush_every_set.is_none() {
            // A dry run: dropping rolls back.
            return Ok(());
        }
        self.store.set_all(self.time.input_time)?;
        if let Some(failed) = self.forget {
            let forgotten = self
                .store
                .conn
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE input_time = ?",
                        self.store.failed_table()
                    ),
                    [failed],
                )
                .map_err(backend("forgetting a retried batch"))?;
            if forgotten == 0 {
                return Err(StoreError::NoSuchFailure { input_time: failed });
            }
        }
        // On any error above, or if COMMIT fails, dropping rolls back.
        self.store
            .conn
            .execute_batch("COMMIT")
            .map_err(backend("committing an iteration"))?;
        self.done = true;
        self.store.held_lock_since(open_since);
        self.store.notifier.notify();
        Ok(())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if let Some(open_since) = self.open_since.filter(|_| !self.done) {
            // Best effort: an error here leaves SQLite to roll back when the
            // connection closes.
            let _ = self.store.conn.execute_batch("ROLLBACK");
            self.store.held_lock_since(open_since);
        }
    }
}

/// The in-process wake-up key of a SQLite file: its canonical path.
fn notifier_key(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{LOCK_WAIT, on_busy, paused_before};

    #[test]
    fn lock_pauses_start_short_and_add_up_to_the_lock_wait() {
        let us = |n| Duration::from_micros(n);
        assert_eq!(paused_before(0), us(0));
        assert_eq!(paused_before(1), us(50));
        assert_eq!(paused_before(4), us(750));
        assert_eq!(paused_before(6), us(1750));
        // 60 s of pauses: 750 µs, then 500 µs a try.
        let last = 4 + ((LOCK_WAIT - us(750)).as_micros() as u32).div_ceil(500);
        assert!(paused_before(last) >= LOCK_WAIT);
        assert!(paused_before(last - 1) < LOCK_WAIT);
        assert!(
            !on_busy(last as i32),
            "gives up once the pauses reach the wait"
        );
        assert!(on_busy(0), "tries again at first");
    }
}
