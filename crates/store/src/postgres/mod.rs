//! The Postgres store: state tables next to the application's own, written
//! through a connection pool.
//!
//! The API is synchronous: a call drives a runtime owned by this crate on
//! the calling thread (see `runtime`). From async code, call it inside `tokio::task::spawn_blocking`, or
//! run an iteration inside a transaction you already hold with
//! [`Postgres::iteration_in`].

mod bridge;
mod claims;
mod encode;
mod failed;
mod feed;
mod frontier;
mod notify;
mod reads;
mod runtime;
mod schema;
mod sequence;
mod sizes;
mod statements;
mod store;
mod tx;
mod vacuum;
mod verify;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use graph::{Changes, Graph, GraphError, Outputs, StoreError, Time};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls};
use zset::KeyValue;

use self::encode::{PgRow, key_from_row};
use self::failed::failed_table;
pub use self::feed::ack_in;
use self::frontier::{lock_times, set_last_update, times_of};
use self::notify::{Listener, Wake, channel, listen, wait_for};
use self::reads::{max_step, read_rows};
use self::runtime::{Borrowed, Conn, block_on, block_on_in, listener_runtime, on, pg};
use self::schema::{
    check_table, create_negative_indexes, create_table, create_views, drop_own_relations,
    lock_prefix, migrate_in, plan_of, record_query, rename_legacy_tables,
};
pub use self::sequence::PgSequence;
use self::statements::{PgSql, Tables};
use self::writes::{explain_refusal, refusal, write_rows};
use crate::check::{self, RowProblem};
use crate::sql::{self, TableSchema, check_prefix};
use crate::{OpenOptions, StoreStats};

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
    /// Leave dropped states' tables in place when migrating.
    keep_dropped: bool,
    /// Told each step of a migration.
    migration_steps: Option<crate::MigrationSteps>,
    /// The migration this open carried out.
    migration: Option<graph::MigrationPlan>,
    /// Whether this handle has made sure the feed consumers' table exists.
    consumers_ready: std::sync::atomic::AtomicBool,
    /// When to vacuum the tables whose rows churn.
    vacuum: vacuum::Vacuum,
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
        let mut pg_config: tokio_postgres::Config = config.parse().map_err(|e| {
            StoreError::backend(format!("parsing the connection string {config:?}"), e)
        })?;
        // Every statement planned for its own arguments and the tables as
        // they are now. A generic plan, made once a statement has run a few
        // times, is kept for good: made while a state table was small, it
        // scans the whole table for every read once the table has grown
        // (docs/scaling.md). The connection string's own options come
        // after, so an application can still set either.
        let options = pg_config.get_options().unwrap_or_default();
        pg_config.options(
            format!("-c plan_cache_mode=force_custom_plan -c random_page_cost=1.1 {options}")
                .trim(),
        );
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
            keep_dropped: options.keep_dropped,
            migration_steps: options.migration_steps.clone(),
            migration: None,
            consumers_ready: std::sync::atomic::AtomicBool::new(false),
            vacuum: vacuum::Vacuum::new(options.vacuum),
        };
        store.created = store.prepare_tables(options.create_tables)?;
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

    /// Closes the store: its `LISTEN` session ends and, unless another
    /// store shares its pool (see [`with_pool`](Self::with_pool)), the
    /// pool's connections are closed and the server's sessions end now
    /// rather than when the last handle drops.
    ///
    /// # Errors
    /// The store's runtime is gone (a close from inside an async context).
    pub fn close(self) -> Result<(), StoreError> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(listener);
        if Arc::strong_count(&self.pool.config) == 1 {
            self.pool.pool.close();
            // The connections' tasks live on a runtime driven only inside
            // store calls: drive it briefly so they say goodbye now.
            block_on(async { tokio::time::sleep(Duration::from_millis(10)).await })?;
        }
        Ok(())
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

    /// Drops every table and view of this graph and forgets them: the
    /// state is gone. When no other state is recorded under the prefix
    /// (the usual case: one query per prefix), the store's own tables and
    /// sequences (`<prefix>0_*`) go too, so the prefix is left as it was
    /// before the first open. One transaction, under the prefix's lock.
    ///
    /// # Errors
    /// A database failure; then nothing is dropped.
    pub fn drop_tables(self) -> Result<(), StoreError> {
        let tables = Arc::clone(&self.tables);
        block_on(async {
            let mut conn = self.client().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(pg("starting to drop tables"))?;
            lock_prefix(&*tx, &tables.prefix).await?;
            let names: Vec<String> = tables.schemas.iter().map(|s| s.name.clone()).collect();
            for s in &tables.schemas {
                if let Some(view) = &s.view {
                    tx.batch_execute(&format!("DROP VIEW IF EXISTS {view}"))
                        .await
                        .map_err(pg("dropping a view"))?;
                }
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", s.name))
                    .await
                    .map_err(pg("dropping a table"))?;
            }
            for meta in [tables.tables(), tables.last_update()] {
                tx.execute(
                    &format!("DELETE FROM {meta} WHERE table_name = ANY($1)"),
                    &[&names],
                )
                .await
                .map_err(pg("forgetting a table"))?;
            }
            let others: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {}", tables.tables()), &[])
                .await
                .map_err(pg("counting the tables left"))?
                .get(0);
            if others == 0 {
                drop_own_relations(&*tx, &tables.prefix).await?;
            }
            tx.commit().await.map_err(pg("committing dropped tables"))
        })?
    }

    fn prepare_tables(&mut self, create: bool) -> Result<usize, StoreError> {
        /// The store's query generation (0 until a first migration, or if
        /// the store has no tables yet).
        async fn read_generation<C: GenericClient>(
            tx: &C,
            tables: &Tables,
        ) -> Result<i64, StoreError> {
            let exists: bool = tx
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&tables.last_update()],
                )
                .await
                .and_then(|r| r.try_get(0))
                .map_err(pg("reading the catalog"))?;
            if !exists {
                return Ok(0);
            }
            let found = tx
                .query_opt(
                    &format!(
                        "SELECT t FROM {} WHERE table_name = $1",
                        tables.last_update()
                    ),
                    &[&tables.query()],
                )
                .await
                .map_err(pg("reading the query's generation"))?;
            found
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map(|g| g.unwrap_or(0))
                .map_err(pg("reading the query's generation"))
        }
        let tables = Arc::clone(&self.tables);
        let (graph, migrate, keep_dropped) = (self.graph.clone(), self.migrate, self.keep_dropped);
        let steps = self.migration_steps.clone();
        let step = |name: &str| crate::options::report_step(&steps, name);
        let stats = Arc::clone(&self.stats);
        let (created, migration, generation) = block_on(async {
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
                // The query's generation has a row from the start: every
                // writer locks it (see `Tables::generation_guard_sql`), so a
                // migration that bumps it waits for them, and they for it.
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {0} (table_name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL, definition TEXT NOT NULL DEFAULT '');
                     ALTER TABLE {0} ADD COLUMN IF NOT EXISTS definition TEXT NOT NULL DEFAULT '';
                     CREATE TABLE IF NOT EXISTS {1} (table_name TEXT PRIMARY KEY, t BIGINT NOT NULL);
                     CREATE TABLE IF NOT EXISTS {2} (table_name TEXT PRIMARY KEY);
                     {3};
                     INSERT INTO {1} (table_name, t) VALUES ('{2}', 0) ON CONFLICT (table_name) DO NOTHING;",
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
                    // Handles opened before the migration refuse to go on.
                    // First thing: the generation's row lock makes the
                    // migration wait for writers under way, and any writer
                    // after it wait for its commit and then see it.
                    let generation: i64 = tx
                        .query_one(
                            &format!(
                                "INSERT INTO {} AS l (table_name, t) VALUES ($1, 1) \
                                 ON CONFLICT (table_name) DO UPDATE SET t = l.t + 1 RETURNING t",
                                tables.last_update()
                            ),
                            &[&tables.query()],
                        )
                        .await
                        .and_then(|r| r.try_get(0))
                        .map_err(pg("recording the migration"))?;
                    step("locked");
                    let done = migrate_in(
                        &borrowed,
                        &tables,
                        &graph,
                        &stats,
                        plan,
                        keep_dropped,
                        &step,
                    )
                    .await?;
                    record_query(&*tx, &tables).await?;
                    create_views(&*tx, &tables).await?;
                    create_negative_indexes(&*tx, &tables).await?;
                    step("recorded");
                    return Ok((0, Some(done), generation));
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
                create_views(&*tx, &tables).await?;
                create_negative_indexes(&*tx, &tables).await?;
            }
            // In the transaction that checked the tables: a migration by
            // another process after it is seen at this handle's next write.
            let generation = read_generation(&*tx, &tables).await?;
                Ok((created, None, generation))
            }
            .await;
            match prepared {
                Ok(done) => {
                    let migrated = done.1.is_some();
                    if migrated {
                        step("committing");
                    }
                    tx.commit().await.map_err(pg("committing new tables"))?;
                    if migrated {
                        step("committed");
                    }
                    Ok(done)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })??;
        self.migration = migration;
        tables
            .generation
            .store(generation, std::sync::atomic::Ordering::Relaxed);
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
        let setup = self::bridge::Setup {
            tables: Arc::clone(&self.tables),
            stats: Arc::clone(&self.stats),
            max_wait: self.max_wait,
            poll: self.poll,
            wake,
        };
        self::bridge::run(client, setup, graph.clone(), changes, time).await
    }
}
