//! The SQLite store (the embedded default): one table per state in a file,
//! next to whatever else the application keeps there.

pub(crate) mod checkpoint;
mod connection;
mod encode;
mod feed;
mod frontier;
mod reads;
mod schema;
mod sizes;
mod statements;
mod store;
mod tx;
mod verify;
mod writes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use graph::{Graph, StateSpec, StoreError};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use zset::KeyValue;

pub(crate) use self::checkpoint::SqliteCheckpointer;
pub use self::connection::PAGE_SIZE;
use self::connection::{notifier_key, open_connection};
use self::encode::{SqliteDialect, backend, on, show_sqlite, to_sqlite};
use self::statements::TableSql;
use crate::OpenOptions;
use crate::StoreStats;
use crate::check::{self, RowProblem};
use crate::sql::{self, OwnNames, TableSchema, check_prefix};
use crate::wait::Notifier;

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
    /// Leave dropped states' tables in place when migrating.
    keep_dropped: bool,
    /// Told each step of a migration.
    migration_steps: Option<crate::MigrationSteps>,
    /// The migration this open carried out.
    migration: Option<graph::MigrationPlan>,
    /// Whether this handle has made sure the feed consumers' table exists.
    consumers_ready: std::cell::Cell<bool>,
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
            keep_dropped: options.keep_dropped,
            migration_steps: options.migration_steps.clone(),
            migration: None,
            consumers_ready: std::cell::Cell::new(false),
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
        Ok(store)
    }

    /// The store's query generation (0 until a first migration).
    /// Reports a migration's step (see `OpenOptions::on_migration_step`).
    fn step(&self, step: &str) {
        crate::options::report_step(&self.migration_steps, step);
    }

    fn read_generation(&self) -> Result<i64, StoreError> {
        let (_, last_update) = self.meta();
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
                [&last_update],
                |r| r.get(0),
            )
            .map_err(backend(format!("looking for `{last_update}`")))?;
        if !exists {
            return Ok(0);
        }
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

    /// Closes the file: the connection ends (SQLite checkpoints its
    /// write-ahead log into the database and removes it when the last
    /// connection to a file closes) and the background checkpointer stops.
    /// Dropping the store does the same but cannot report a failure.
    ///
    /// # Errors
    /// SQLite refused to close the connection.
    pub fn close(self) -> Result<(), StoreError> {
        let Sqlite {
            conn, checkpointer, ..
        } = self;
        let closed = conn
            .close()
            .map_err(|(_, e)| StoreError::backend("closing the SQLite file", e));
        drop(checkpointer);
        closed
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

    /// The migration this open carried out (with
    /// [`OpenOptions::migrate`]), if the store held another version of the
    /// query: each state's action and the rows it holds.
    pub fn migration(&self) -> Option<&graph::MigrationPlan> {
        self.migration.as_ref()
    }
}
