//! Running queries against every store and comparing with the oracle.

use std::collections::BTreeMap;

use graph::{Changes, Graph, GraphError, Input, Output, Query, StateStore};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use zset::{Data, ZSet};

use crate::oracle::{Rel, bump};

/// A store to run the suite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

/// The Postgres server of the suite: `STEPPING_TEST_PG`, or none (loudly,
/// and an error when `STEPPING_REQUIRE_PG` is set, as `cargo xtask test`
/// does).
pub(crate) fn pg_url() -> Option<String> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match std::env::var("STEPPING_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("STEPPING_REQUIRE_PG").is_ok_and(|v| v == "1") {
                panic!(
                    "STEPPING_REQUIRE_PG is set but STEPPING_TEST_PG is not: no Postgres to test against"
                );
            }
            WARNED.call_once(|| {
                // Straight to stderr: the test harness does not capture it.
                use std::io::Write;
                let _ = std::io::stderr()
                    .write_all(b"\n*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set (run `cargo xtask test`) ***\n\n");
            });
            None
        }
    }
}

/// One pool for the whole test binary.
pub(crate) fn pg_pool() -> Option<store::PgPool> {
    static POOL: std::sync::OnceLock<Option<store::PgPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        pg_url().map(|url| store::Postgres::pool(&url, 16).expect("a valid STEPPING_TEST_PG"))
    })
    .clone()
}

/// A table prefix no other store of any test uses.
pub(crate) fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{:x}_{n:x}_", std::process::id())
}

/// The SQL stores available here.
pub(crate) fn sql_kinds() -> Vec<Kind> {
    kinds().into_iter().filter(|k| *k != Kind::Memory).collect()
}

/// Every store available here.
pub(crate) fn kinds() -> Vec<Kind> {
    let mut kinds = vec![Kind::Memory, Kind::Sqlite];
    if pg_pool().is_some() {
        kinds.push(Kind::Postgres);
    }
    kinds
}

enum Store {
    Memory(store::Memory),
    Sqlite(Box<store::Sqlite>),
    Postgres(Box<store::Postgres>),
}

/// An open store, with whatever keeps its state alive (a temporary
/// directory for SQLite files, a table prefix on Postgres).
pub(crate) struct Opened {
    store: Option<Store>,
    /// Keeps a SQLite file's directory until the store is done with it.
    _dir: Option<tempfile::TempDir>,
    prefix: String,
    /// Whether dropping this handle drops the (Postgres) tables.
    owns: bool,
}

impl std::ops::Deref for Opened {
    type Target = dyn StateStore;
    fn deref(&self) -> &Self::Target {
        match self.store.as_ref().expect("open") {
            Store::Memory(s) => s,
            Store::Sqlite(s) => &**s,
            Store::Postgres(s) => &**s,
        }
    }
}

impl std::ops::DerefMut for Opened {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self.store.as_mut().expect("open") {
            Store::Memory(s) => s,
            Store::Sqlite(s) => &mut **s,
            Store::Postgres(s) => &mut **s,
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        // Leave no tables behind on a long-lived server: the state tables,
        // the prefix's metadata and failed-batch tables, and any table a
        // test made beside them.
        if let (true, Some(Store::Postgres(s))) = (self.owns, self.store.take()) {
            drop(s);
            if let Some(url) = pg_url()
                && let Err(e) = benches::pg::drop_tables_with_prefix(&url, &self.prefix)
            {
                eprintln!("could not drop the tables {}*: {e}", self.prefix);
            }
        }
    }
}

fn sqlite(s: store::Sqlite) -> Store {
    Store::Sqlite(Box::new(s))
}

fn postgres(s: store::Postgres) -> Store {
    Store::Postgres(Box::new(s))
}

fn sqlite_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("state.db")
}

fn pg_options(prefix: &str, create_tables: bool) -> store::OpenOptions {
    store::OpenOptions {
        create_tables,
        prefix: prefix.to_owned(),
        ..store::OpenOptions::default()
    }
}

impl Kind {
    pub(crate) fn open(self, graph: &Graph) -> Result<Opened, GraphError> {
        Ok(match self {
            Kind::Memory => Opened {
                store: Some(Store::Memory(store::Memory::new(graph))),
                _dir: None,
                prefix: String::new(),
                owns: true,
            },
            Kind::Sqlite => {
                let dir =
                    tempfile::tempdir().map_err(|e| graph::StoreError::backend("tempdir", e))?;
                let store =
                    store::Sqlite::open(sqlite_file(&dir), graph, store::OpenOptions::default())?;
                Opened {
                    store: Some(Store::Sqlite(Box::new(store))),
                    _dir: Some(dir),
                    prefix: String::new(),
                    owns: true,
                }
            }
            Kind::Postgres => {
                let pool = pg_pool().expect("Postgres is in kinds() only when configured");
                let prefix = unique_prefix();
                let store = store::Postgres::with_pool(pool, graph, pg_options(&prefix, true))?;
                Opened {
                    store: Some(Store::Postgres(Box::new(store))),
                    _dir: None,
                    prefix,
                    owns: true,
                }
            }
        })
    }
}

impl Opened {
    /// Another handle on the same state, as another process would open it:
    /// the same memory store, SQLite file or Postgres prefix (this handle
    /// keeps owning the tables).
    pub(crate) fn twin(&self, graph: &Graph) -> Result<Opened, GraphError> {
        let store = match self.store.as_ref().expect("open") {
            Store::Memory(s) => Store::Memory(s.handle()),
            Store::Sqlite(s) => sqlite(store::Sqlite::open(
                s.path(),
                graph,
                store::OpenOptions::default(),
            )?),
            Store::Postgres(_) => {
                let pool = pg_pool().expect("a Postgres store was opened");
                postgres(store::Postgres::with_pool(
                    pool,
                    graph,
                    pg_options(&self.prefix, true),
                )?)
            }
        };
        Ok(Opened {
            store: Some(store),
            _dir: None,
            prefix: self.prefix.clone(),
            owns: false,
        })
    }
}

/// Runs `f` with a fresh connection to the test server, on a runtime of
/// its own (never a connection of a store's pool).
pub(crate) fn with_pg_client<T>(f: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    let url = pg_url().expect("Postgres is configured");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        let out = f(&client).await;
        drop(client);
        let _ = task.await;
        out
    })
}

impl Opened {
    /// The table name prefix (`st_` for SQLite files).
    pub(crate) fn prefix(&self) -> &str {
        if self.prefix.is_empty() {
            "st_"
        } else {
            &self.prefix
        }
    }

    /// Runs raw SQL on a SQL store's database (to damage it on purpose).
    pub(crate) fn sql(&self, statement: &str) {
        match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => s.connection().execute_batch(statement).expect("sql"),
            Store::Postgres(_) => {
                with_pg_client(async |c| c.batch_execute(statement).await.expect("sql"))
            }
            Store::Memory(_) => panic!("no SQL in memory"),
        }
    }

    /// The first column of `query`'s first row on a SQL store's database,
    /// as an integer (`NULL`: 0).
    pub(crate) fn scalar(&self, query: &str) -> i64 {
        match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => s
                .connection()
                .query_row(query, [], |r| r.get::<_, Option<i64>>(0))
                .expect("sql")
                .unwrap_or(0),
            Store::Postgres(_) => with_pg_client(async |c| {
                let row = c.query_one(query, &[]).await.expect("sql");
                row.get::<_, Option<i64>>(0).unwrap_or(0)
            }),
            Store::Memory(_) => panic!("no SQL in memory"),
        }
    }

    /// Rows read and written by a SQL store so far.
    pub(crate) fn stats(&self) -> store::StoreStats {
        match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => s.stats(),
            Store::Postgres(s) => s.stats(),
            Store::Memory(_) => store::StoreStats::default(),
        }
    }

    /// Zeroes [`stats`](Self::stats).
    pub(crate) fn reset_stats(&self) {
        match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => s.reset_stats(),
            Store::Postgres(s) => s.reset_stats(),
            Store::Memory(_) => {}
        }
    }

    /// The Postgres store, if this is one.
    pub(crate) fn postgres(&self) -> Option<&store::Postgres> {
        match self.store.as_ref() {
            Some(Store::Postgres(s)) => Some(s),
            _ => None,
        }
    }

    /// The memory store, if this is one.
    pub(crate) fn memory(&self) -> Option<&store::Memory> {
        match self.store.as_ref() {
            Some(Store::Memory(s)) => Some(s),
            _ => None,
        }
    }

    /// The SQLite store, if this is one.
    pub(crate) fn sqlite(&self) -> Option<&store::Sqlite> {
        match self.store.as_ref() {
            Some(Store::Sqlite(s)) => Some(s),
            _ => None,
        }
    }

    /// The SQL table of the state at `path` (a SQL store's).
    pub(crate) fn table(&self, path: &str) -> String {
        let names = match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => s.table_names(),
            Store::Postgres(s) => s.table_names(),
            Store::Memory(_) => panic!("no tables in memory"),
        };
        names
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, table)| table)
            .expect("a state of this graph")
    }

    /// Opens the same storage for `graph`, creating tables or only
    /// attaching, without closing this store.
    pub(crate) fn open_again(
        &self,
        graph: &Graph,
        create_tables: bool,
    ) -> Result<Opened, GraphError> {
        let store = match self.store.as_ref().expect("open") {
            Store::Sqlite(s) => {
                let options = store::OpenOptions {
                    create_tables,
                    ..store::OpenOptions::default()
                };
                Store::Sqlite(Box::new(store::Sqlite::open(s.path(), graph, options)?))
            }
            Store::Postgres(s) => {
                let pool = s.connection_pool().clone();
                postgres(store::Postgres::with_pool(
                    pool,
                    graph,
                    pg_options(&self.prefix, create_tables),
                )?)
            }
            Store::Memory(_) => {
                return Err(
                    graph::StoreError::backend("open_again", "memory is not shared").into(),
                );
            }
        };
        // A second handle: only the first one drops the tables.
        Ok(Opened {
            store: Some(store),
            _dir: None,
            prefix: self.prefix.clone(),
            owns: false,
        })
    }
}

impl Opened {
    /// The same state, through a store dropped and opened again (SQL stores:
    /// attaching to the existing tables; memory: the same tables).
    pub(crate) fn reopen(mut self, graph: &Graph) -> Result<Opened, GraphError> {
        let store = match self.store.take() {
            Some(Store::Sqlite(s)) => {
                let path = s.path().to_path_buf();
                drop(s);
                sqlite(store::Sqlite::open(
                    path,
                    graph,
                    store::OpenOptions::attach(),
                )?)
            }
            Some(Store::Postgres(s)) => {
                let pool = s.connection_pool().clone();
                drop(s);
                postgres(store::Postgres::with_pool(
                    pool,
                    graph,
                    pg_options(&self.prefix, false),
                )?)
            }
            other => other.expect("open"),
        };
        self.store = Some(store);
        Ok(self)
    }
}

pub(crate) fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Batches of `(row, ±1)` over `rows`: small domains, so rows repeat and
/// weights cancel.
pub(crate) fn batches<T: std::fmt::Debug + Clone>(
    rows: impl Strategy<Value = T> + Clone,
    max_batches: usize,
    max_rows: usize,
) -> impl Strategy<Value = Vec<Vec<(T, i64)>>> {
    let weight = prop_oneof![Just(1i64), Just(-1i64), Just(1i64), Just(2i64)];
    prop::collection::vec(
        prop::collection::vec((rows, weight), 0..=max_rows),
        1..=max_batches,
    )
}

fn accumulate<O: Data, P: Ord + Clone>(
    acc: &mut Rel<P>,
    out: &ZSet<O>,
    to_oracle: &impl Fn(&O) -> P,
) -> Result<(), TestCaseError> {
    for (v, w) in out.iter() {
        prop_assert!(w != 0, "zero weight in an output delta");
        bump(acc, &to_oracle(v), w);
    }
    Ok(())
}

/// Declares the query's output `out` and a cache of the same stream,
/// `out_cache`: [`run1`] and [`run2`] read every oracle query's result
/// back through the cache's SQL view too ([`check_view`]).
pub(crate) fn out<O: Data>(
    q: &Query,
    s: graph::Stream<'_, ZSet<O>>,
) -> Result<Output<ZSet<O>>, GraphError> {
    out_named(q, "out", s)
}

/// As [`out`], for a query with several outputs: the output `name` and
/// the cache `<name>_cache`, checked by [`check_cache_view`].
pub(crate) fn out_named<O: Data>(
    q: &Query,
    name: &str,
    s: graph::Stream<'_, ZSet<O>>,
) -> Result<Output<ZSet<O>>, GraphError> {
    q.cache(&format!("{name}_cache"), s, &[])?;
    q.output(name, s)
}

/// On a SQL store, the rows of the cache `out_cache` (which the query
/// must have: declare its output with [`out`]) as its view shows them
/// through a connection of its own, against the library's read of the
/// cache: each row's value flattened from serde_json's form of it (a crate
/// the library does not use) by the documented naming (`parent_child`,
/// tuples by position, enums as JSON, `NUMERIC` as decimal text).
pub(crate) fn check_view<O: Data>(
    store: &mut Opened,
    graph: &Graph,
    what: &str,
) -> Result<(), TestCaseError> {
    check_cache_view::<O>(store, graph, "out_cache", what).map(|_| ())
}

/// As [`check_view`] for the cache at `path`; the number of rows its view
/// shows (0 on the memory store).
pub(crate) fn check_cache_view<O: Data>(
    store: &mut Opened,
    graph: &Graph,
    path: &str,
    what: &str,
) -> Result<usize, TestCaseError> {
    let Some(spec) = graph.states().iter().find(|s| s.path().as_str() == path) else {
        return Err(fail(format!(
            "{what}: the query has no cache `{path}` (declare its output with `out`)"
        )));
    };
    if store.sqlite().is_none() && store.postgres().is_none() {
        return Ok(0);
    }
    let mut lib: Vec<graph::StoredRow<O>> = Vec::new();
    store
        .read_committed(spec, &graph::Read::All, &mut lib)
        .map_err(fail)?;
    let columns = spec
        .codec()
        .columns()
        .map(|c| c.columns())
        .unwrap_or_default();
    let of_type = |ty: graph::ValueType| -> Vec<String> {
        columns
            .iter()
            .filter(|c| c.ty == ty)
            .map(|c| c.name.clone())
            .collect()
    };
    let json = of_type(graph::ValueType::Json);
    let numeric = of_type(graph::ValueType::Numeric);
    let view = graph::view_ident(&store.table(path));
    let (names, mut got) = crate::sql_views::read_view(store, &view, &json);
    let fields = &names[..names.len().saturating_sub(1)];
    let kinds = Cells {
        json: &json,
        numeric: &numeric,
        pg: store.postgres().is_some(),
    };
    let mut expected: Vec<Vec<String>> = lib
        .iter()
        .map(|r| {
            let mut cells = BTreeMap::new();
            let v = serde_json::to_value(&r.value).expect("serde_json");
            flatten(&v, "", fields, &kinds, &mut cells);
            let mut row: Vec<String> = fields
                .iter()
                .map(|f| cells.remove(f).unwrap_or_else(|| format!("missing {f}")))
                .collect();
            row.push(format!("i:{}", r.weight));
            row
        })
        .collect();
    got.sort();
    expected.sort();
    prop_assert_eq!(
        &got,
        &expected,
        "{}: the view `{}` (columns {:?})",
        what,
        view,
        names
    );
    Ok(got.len())
}

/// How a view shows a cell: the JSON and `NUMERIC` (decimal text)
/// columns, and whether booleans are Postgres' own.
struct Cells<'a> {
    json: &'a [String],
    numeric: &'a [String],
    pg: bool,
}

/// `v`, at column name `name`, into `out` by column.
fn flatten(
    v: &serde_json::Value,
    name: &str,
    columns: &[String],
    kinds: &Cells<'_>,
    out: &mut BTreeMap<String, String>,
) {
    use serde_json::Value;
    let here = if name.is_empty() { "value" } else { name };
    if columns.iter().any(|c| c == here) {
        let cell = match v {
            _ if kinds.json.iter().any(|c| c == here) => format!("j:{v}"),
            Value::Null => "null".to_owned(),
            // Decimal text on both stores (Postgres' read as `::text`).
            Value::Number(n) if kinds.numeric.iter().any(|c| c == here) => {
                format!("t:{:?}", n.to_string())
            }
            Value::Bool(b) if kinds.pg => format!("bool:{b}"),
            Value::Bool(b) => format!("i:{}", i64::from(*b)),
            Value::Number(n) if n.is_i64() => format!("i:{n}"),
            Value::Number(n) => format!("f:{:?}", n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => format!("t:{s:?}"),
            other => format!("unexpected {other}"),
        };
        out.insert(here.to_owned(), cell);
        return;
    }
    let child = |c: &str| {
        if name.is_empty() {
            c.to_owned()
        } else {
            format!("{name}_{c}")
        }
    };
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                flatten(x, &child(k), columns, kinds, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, &format!("{name}_{i}"), columns, kinds, out);
            }
        }
        Value::Null => {
            let under = child("");
            for c in columns.iter().filter(|c| c.starts_with(&under)) {
                out.insert(c.clone(), "null".to_owned());
            }
        }
        _ => {}
    }
}

/// Runs `batches` into a one-input query on `kind` (re-opening the store
/// half-way), checking after every batch that the integral of the output
/// equals `oracle` of the integral of the input, and that a cache of the
/// output (see [`out`]) reads the same through SQL as through the library.
pub(crate) fn run1<I: Data, O: Data, P: Ord + Clone + std::fmt::Debug>(
    kind: Kind,
    build: impl FnOnce(&Query) -> Result<(Input<I>, Output<ZSet<O>>), GraphError>,
    to_oracle: impl Fn(&O) -> P,
    oracle: impl Fn(&Rel<I>) -> Rel<P>,
    batches: &[Vec<(I, i64)>],
) -> Result<(), TestCaseError> {
    let (graph, (input, output)) = Graph::build(build).map_err(fail)?;
    let mut store = kind.open(&graph).map_err(fail)?;
    let mut acc_in: Rel<I> = BTreeMap::new();
    let mut acc_out: Rel<P> = BTreeMap::new();
    for (i, batch) in batches.iter().enumerate() {
        if i == batches.len() / 2 {
            store = store.reopen(&graph).map_err(fail)?;
        }
        for (v, w) in batch {
            bump(&mut acc_in, v, *w);
        }
        let change: ZSet<I> = batch.iter().cloned().collect();
        let out = graph
            .iteration(&mut *store, Changes::new().zset(&input, change))
            .map_err(fail)?;
        accumulate(&mut acc_out, out.get(&output).map_err(fail)?, &to_oracle)?;
        prop_assert_eq!(&acc_out, &oracle(&acc_in), "{:?} after batch {}", kind, i);
        check_view::<O>(&mut store, &graph, &format!("{kind:?} after batch {i}"))?;
    }
    Ok(())
}

/// As [`run1`] for a query with two inputs.
#[allow(clippy::type_complexity)]
pub(crate) fn run2<A: Data, B: Data, O: Data, P: Ord + Clone + std::fmt::Debug>(
    kind: Kind,
    build: impl FnOnce(&Query) -> Result<(Input<A>, Input<B>, Output<ZSet<O>>), GraphError>,
    to_oracle: impl Fn(&O) -> P,
    oracle: impl Fn(&Rel<A>, &Rel<B>) -> Rel<P>,
    batches: &[(Vec<(A, i64)>, Vec<(B, i64)>)],
) -> Result<(), TestCaseError> {
    let (graph, (a, b, output)) = Graph::build(build).map_err(fail)?;
    let mut store = kind.open(&graph).map_err(fail)?;
    let mut acc_a: Rel<A> = BTreeMap::new();
    let mut acc_b: Rel<B> = BTreeMap::new();
    let mut acc_out: Rel<P> = BTreeMap::new();
    for (i, (ba, bb)) in batches.iter().enumerate() {
        if i == batches.len() / 2 {
            store = store.reopen(&graph).map_err(fail)?;
        }
        for (v, w) in ba {
            bump(&mut acc_a, v, *w);
        }
        for (v, w) in bb {
            bump(&mut acc_b, v, *w);
        }
        let za: ZSet<A> = ba.iter().cloned().collect();
        let zb: ZSet<B> = bb.iter().cloned().collect();
        let out = graph
            .iteration(&mut *store, Changes::new().zset(&a, za).zset(&b, zb))
            .map_err(fail)?;
        accumulate(&mut acc_out, out.get(&output).map_err(fail)?, &to_oracle)?;
        prop_assert_eq!(
            &acc_out,
            &oracle(&acc_a, &acc_b),
            "{:?} after batch {}",
            kind,
            i
        );
        check_view::<O>(&mut store, &graph, &format!("{kind:?} after batch {i}"))?;
    }
    Ok(())
}

/// Two-input batches.
#[allow(clippy::type_complexity)]
pub(crate) fn batches2<A: std::fmt::Debug + Clone, B: std::fmt::Debug + Clone>(
    a: impl Strategy<Value = A> + Clone,
    b: impl Strategy<Value = B> + Clone,
    max_batches: usize,
    max_rows: usize,
) -> impl Strategy<Value = Vec<(Vec<(A, i64)>, Vec<(B, i64)>)>> {
    let weight = prop_oneof![Just(1i64), Just(-1i64), Just(1i64)];
    let side_a = prop::collection::vec((a, weight.clone()), 0..=max_rows);
    let side_b = prop::collection::vec((b, weight), 0..=max_rows);
    prop::collection::vec((side_a, side_b), 1..=max_batches)
}

/// The key columns (`k_...`) of `table`, in order.
pub(crate) fn key_columns(store: &Opened, table: &str) -> Vec<String> {
    let all: Vec<String> = match (store.sqlite(), store.postgres()) {
        (Some(s), _) => {
            let conn = s.connection();
            let mut stmt = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .expect("pragma");
            stmt.query_map([], |r| r.get(0))
                .expect("pragma")
                .collect::<Result<_, _>>()
                .expect("pragma")
        }
        _ => with_pg_client(async |c| {
            c.query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .expect("information_schema")
            .iter()
            .map(|r| r.get(0))
            .collect()
        }),
    };
    all.into_iter().filter(|c| c.starts_with("k_")).collect()
}
