//! The runtimes a Postgres store drives its I/O on, the connections it borrows,
//! and how server errors become `StoreError`s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;

use graph::StoreError;
use tokio_postgres::{GenericClient, Statement};

use crate::sql::TableSchema;

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
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
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
pub(super) fn listener_runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
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
pub(super) fn block_on<F: Future>(f: F) -> Result<F::Output, StoreError> {
    block_on_in(runtime()?, f)
}

/// Runs `f` to completion on `rt`, refusing (rather than panicking) when
/// called on a thread that drives async tasks (a blocking thread of a
/// runtime, `spawn_blocking`, may block).
pub(super) fn block_on_in<F: Future>(
    rt: &tokio::runtime::Runtime,
    f: F,
) -> Result<F::Output, StoreError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(rt.block_on(f));
    }
    // Inside a runtime's context: on one of its blocking threads
    // (`spawn_blocking`) blocking is fine, on a thread driving async tasks
    // tokio refuses with a panic. Tokio has no public way to tell the two
    // apart beforehand, so the refusal is caught and reported as an error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f))).map_err(|_| {
        StoreError::backend(
            "calling the synchronous Postgres store",
            "called from a thread that drives async tasks: use tokio::task::spawn_blocking \
             (or the `async` feature's AsyncStore), or Postgres::iteration_in",
        )
    })
}

pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let context = context.into();
    move |e| StoreError::backend(context, describe(e))
}

/// The driver's error with the server's message and SQLSTATE, which its
/// own `Display` leaves out.
pub(super) fn describe(e: tokio_postgres::Error) -> graph::BoxError {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()).into(),
        None => Box::new(e),
    }
}

/// Errors while `doing` something to `schema`'s table (a dropped table is
/// reported as missing).
pub(super) fn on(
    schema: &TableSchema,
    doing: &str,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
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
/// the server names the failing row, identity first; a feed's plain insert
/// breaks the primary key, whose values the server names, identity last.
pub(super) fn collision(e: &tokio_postgres::Error) -> Option<i64> {
    let db = e.as_db_error()?;
    if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
        // "Key (k_..., identity)=(..., 123) already exists."
        let detail = db.detail().unwrap_or_default();
        let values = detail.split_once(")=(").map_or("", |(_, v)| v);
        let values = values.rsplit_once(')').map_or(values, |(v, _)| v);
        let last = values.rsplit(',').next().unwrap_or_default();
        return Some(last.trim().parse().unwrap_or_default());
    }
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
