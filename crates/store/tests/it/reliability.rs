//! Reliability of the stores beyond the generic suite (DESIGN.md §6): a
//! Postgres connection lost in the middle of an iteration; stored rows and
//! metadata damaged in every way bytes and columns can be (fuzzed through
//! every decoding path, with and without a database); bad input on every
//! store (a million rows in one iteration, empty changes, rows removed
//! before they were inserted, NaN, `-0.0` and `None`, weights that
//! overflow); and readers racing a two-worker ingest, which must never see
//! an iteration half-applied.
//!
//! Errors are matched by variant and by the table and row they name.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use graph::{StateKind, StateStore, StoredRow, identity_of};
use operators::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};
use store::StoreError;

use crate::harness::{Kind, Opened, fail, kinds, pg_url, sql_kinds, with_pg_client};

type R = Result<(), GraphError>;

// ---------------------------------------------------------------------------
// Stores with raw SQL access.

/// A store plus raw SQL on its tables: the harness's store for memory and
/// Postgres, and a SQLite file opened here (the harness keeps its SQLite
/// path to itself, and these tests read tables with plain SQL).
enum Target {
    Harness(Opened),
    Sqlite {
        store: Box<store::Sqlite>,
        _dir: tempfile::TempDir,
    },
}

impl std::ops::Deref for Target {
    type Target = dyn StateStore;
    fn deref(&self) -> &Self::Target {
        match self {
            Target::Harness(o) => &**o,
            Target::Sqlite { store, .. } => &**store,
        }
    }
}

impl std::ops::DerefMut for Target {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Target::Harness(o) => &mut **o,
            Target::Sqlite { store, .. } => &mut **store,
        }
    }
}

/// A stored row as raw SQL sees it.
#[derive(Clone, Debug)]
struct RawRow {
    identity: i64,
    data: Vec<u8>,
    step: i64,
}

impl Target {
    fn open(kind: Kind, graph: &Graph) -> Result<Target, GraphError> {
        if kind != Kind::Sqlite {
            return Ok(Target::Harness(kind.open(graph)?));
        }
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
        let path = dir.path().join("state.db");
        let store = store::Sqlite::open(path, graph, store::OpenOptions::default())?;
        Ok(Target::Sqlite {
            store: Box::new(store),
            _dir: dir,
        })
    }

    /// The same state through a store dropped and opened again (attaching
    /// to the existing tables).
    fn reopen(self, graph: &Graph) -> Result<Target, GraphError> {
        Ok(match self {
            Target::Harness(o) => Target::Harness(o.reopen(graph)?),
            Target::Sqlite { store, _dir } => {
                let path = store.path().to_path_buf();
                drop(store);
                let store = store::Sqlite::open(path, graph, store::OpenOptions::attach())?;
                Target::Sqlite {
                    store: Box::new(store),
                    _dir,
                }
            }
        })
    }

    /// Whether the store has SQL tables at all.
    fn is_sql(&self) -> bool {
        match self {
            Target::Harness(o) => o.postgres().is_some(),
            Target::Sqlite { .. } => true,
        }
    }

    /// The table name prefix.
    fn prefix(&self) -> String {
        match self {
            Target::Harness(o) => o.prefix().to_owned(),
            Target::Sqlite { .. } => "st_".to_owned(),
        }
    }

    /// The SQL table of the state at `path`.
    fn table(&self, path: &str) -> String {
        let names = match self {
            Target::Harness(o) => o.postgres().expect("a SQL store").table_names(),
            Target::Sqlite { store, .. } => store.table_names(),
        };
        names
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, table)| table)
            .expect("a state of this graph")
    }

    /// A `bytea`/`BLOB` literal.
    fn blob(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Target::Harness(_) => format!("'\\x{hex}'::bytea"),
            Target::Sqlite { .. } => format!("x'{hex}'"),
        }
    }

    fn execute(&self, statements: &str) {
        self.try_execute(statements)
            .unwrap_or_else(|e| panic!("{statements}: {e}"));
    }

    /// Runs `statements`, returning the database's refusal (a constraint,
    /// a type it will not convert) as an error.
    fn try_execute(&self, statements: &str) -> Result<(), String> {
        match self {
            Target::Harness(_) => with_pg_client(async |c| {
                c.batch_execute(statements).await.map_err(|e| e.to_string())
            }),
            Target::Sqlite { store, .. } => store
                .connection()
                .execute_batch(statements)
                .map_err(|e| e.to_string()),
        }
    }

    /// One integer (`count(*)`, `sum(c)`, ...).
    fn scalar(&self, query: &str) -> i64 {
        match self {
            Target::Harness(_) => with_pg_client(async |c| {
                let row = c.query_one(query, &[]).await.expect("sql");
                row.get::<_, Option<i64>>(0).unwrap_or(0)
            }),
            Target::Sqlite { store, .. } => store
                .connection()
                .query_row(query, [], |r| r.get::<_, Option<i64>>(0))
                .expect("sql")
                .unwrap_or(0),
        }
    }

    /// The key columns (`k_...`) of `table` and their declared types.
    fn key_columns(&self, table: &str) -> Vec<(String, String)> {
        let all: Vec<(String, String)> = match self {
            Target::Harness(_) => with_pg_client(async |c| {
                c.query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_name = $1 ORDER BY ordinal_position",
                    &[&table],
                )
                .await
                .expect("information_schema")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
            }),
            Target::Sqlite { store, .. } => {
                let conn = store.connection();
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT name, type FROM pragma_table_info('{table}')"
                    ))
                    .expect("pragma");
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("pragma")
                    .collect::<Result<_, _>>()
                    .expect("pragma")
            }
        };
        all.into_iter()
            .filter(|(name, _)| name.starts_with("k_"))
            .collect()
    }

    /// Every row of `table`, by identity (and step).
    fn rows(&self, table: &str, nested: bool) -> Vec<RawRow> {
        let step = if nested { "step" } else { "0" };
        let query =
            format!("SELECT identity, data, CAST({step} AS BIGINT) FROM {table} ORDER BY 1, 3");
        match self {
            Target::Harness(_) => with_pg_client(async |c| {
                let rows = c.query(&query, &[]).await.expect("sql");
                rows.iter()
                    .map(|r| RawRow {
                        identity: r.get(0),
                        data: r.get(1),
                        step: r.get(2),
                    })
                    .collect()
            }),
            Target::Sqlite { store, .. } => {
                let conn = store.connection();
                let mut stmt = conn.prepare(&query).expect("sql");
                stmt.query_map([], |r| {
                    Ok(RawRow {
                        identity: r.get(0)?,
                        data: r.get(1)?,
                        step: r.get(2)?,
                    })
                })
                .expect("sql")
                .collect::<Result<_, _>>()
                .expect("sql")
            }
        }
    }
}

/// A Postgres store of this file's own, whose tables (every one under its
/// prefix) are dropped with it.
struct Dropping {
    store: Option<store::Postgres>,
    _cleanup: benches::pg::DropTablesOnExit,
}

impl std::ops::Deref for Dropping {
    type Target = store::Postgres;
    fn deref(&self) -> &store::Postgres {
        self.store.as_ref().expect("open")
    }
}

impl std::ops::DerefMut for Dropping {
    fn deref_mut(&mut self) -> &mut store::Postgres {
        self.store.as_mut().expect("open")
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        // The store's connections go first; then `_cleanup`, dropped after
        // this, drops the tables.
        drop(self.store.take());
    }
}

/// Whether `err` is a store error whose message names `table` (and, for a
/// corrupt row, the row's identity).
fn names_table(err: &GraphError, table: &str) -> bool {
    let shown = err.to_string();
    match err {
        GraphError::Store(StoreError::Corrupt {
            table: t, identity, ..
        }) => {
            t == table
                && !identity.is_empty()
                && shown.contains(table)
                && shown.contains(identity.as_str())
        }
        GraphError::Store(_) => shown.contains(table),
        _ => false,
    }
}

/// Runs `f`, turning a panic into an error message.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!("{what} panicked: {msg}")
    })
}

// ---------------------------------------------------------------------------
// 1. A Postgres connection lost in the middle of an iteration.

/// `url` with an `application_name`, in either connection-string form.
fn with_application_name(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={name}")
    } else {
        format!("{url} application_name={name}")
    }
}

/// How many sessions called `name` the server has.
fn sessions(name: &str) -> i64 {
    with_pg_client(async |c| {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
    })
}

/// Terminates every session called `name` (from a connection of its own)
/// and waits until the server has ended them all; returns how many it
/// terminated.
fn cut_sessions(name: &str) -> usize {
    with_pg_client(async |c| {
        let cut = c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .expect("pg_terminate_backend")
            .len();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if left == 0 {
                return cut;
            }
            assert!(Instant::now() < deadline, "{left} sessions survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Every row of every table in `tables`, and their `last_update` rows, as
/// another connection sees them.
fn pg_snapshot(tables: &[String], last_update: &str) -> BTreeMap<String, Vec<String>> {
    with_pg_client(async |c| {
        let mut out = BTreeMap::new();
        for table in tables {
            let rows = c
                .query(
                    &format!("SELECT identity, data, c FROM {table} ORDER BY identity"),
                    &[],
                )
                .await
                .expect("a state table");
            let rows = rows
                .iter()
                .map(|r| {
                    let (id, data, c): (i64, Vec<u8>, i64) = (r.get(0), r.get(1), r.get(2));
                    format!("{id} {data:?} {c}")
                })
                .collect();
            out.insert(table.clone(), rows);
        }
        let rows = c
            .query(
                &format!("SELECT table_name, t FROM {last_update} ORDER BY table_name"),
                &[],
            )
            .await
            .expect("last_update");
        let rows = rows
            .iter()
            .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        out.insert(last_update.to_owned(), rows);
        out
    })
}

/// The store's connections are terminated by the server while an iteration
/// runs (from a `map` downstream of a keyed aggregate, so the iteration has
/// read state and computed its writes): the iteration fails with a backend
/// error, leaves every state table and `last_update` as they were, and the
/// same store (its pool replacing the dead connections) runs the next
/// iteration to the oracle's result.
#[test]
fn a_lost_postgres_connection_fails_the_iteration_and_the_pool_recovers() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    // Only this store's sessions carry this name, so the sessions of tests
    // running at the same time are left alone.
    let name = format!(
        "stepping_cut_{}",
        crate::harness::unique_prefix().trim_end_matches('_')
    );
    let armed = Arc::new(AtomicBool::new(false));
    // The map and this test meet twice: once the map is running (the cut
    // starts), once the sessions are gone (the map returns).
    let meet = Arc::new(Barrier::new(2));
    let (graph, (input, total, numbers, totals)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        let (armed, meet) = (Arc::clone(&armed), Arc::clone(&meet));
        let total = x.count().map(move |n| {
            if armed.swap(false, Ordering::SeqCst) {
                meet.wait();
                meet.wait();
            }
            *n
        });
        Ok((
            input,
            q.output("total", total)?,
            q.cache("number_cache", x, &[])?,
            q.cache("total_cache", total, &[])?,
        ))
    })?;
    let prefix = crate::harness::unique_prefix();
    let last_update = format!("{prefix}0_last_update");
    let options = store::OpenOptions {
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let cleanup = benches::pg::DropTablesOnExit {
        conn: url.clone(),
        prefix: prefix.clone(),
    };
    let mut store = Dropping {
        store: Some(store::Postgres::open(
            &with_application_name(&url, &name),
            &graph,
            options,
        )?),
        _cleanup: cleanup,
    };
    graph.insert(&mut *store, &input, [1, 2, 3])?;
    assert!(sessions(&name) > 0, "the store's sessions are named {name}");
    let tables: Vec<String> = store.table_names().into_iter().map(|(_, t)| t).collect();
    assert!(tables.len() >= 3, "{tables:?}");
    let before = pg_snapshot(&tables, &last_update);
    let t = store.next_time()?;

    let cut = std::thread::scope(|s| {
        let cutter = s.spawn(|| {
            meet.wait();
            let cut = cut_sessions(&name);
            meet.wait();
            cut
        });
        armed.store(true, Ordering::SeqCst);
        let result = graph.insert(&mut *store, &input, [4, 5, 6]);
        if armed.swap(false, Ordering::SeqCst) {
            // The map never ran: release the cutter before failing.
            meet.wait();
            meet.wait();
            panic!("the map after the count never ran: {result:?}");
        }
        let err = result.expect_err("the connection was cut mid-iteration");
        assert!(
            matches!(err, GraphError::Store(StoreError::Backend { .. })),
            "{err:?}"
        );
        assert!(!err.to_string().is_empty());
        cutter.join().expect("the cutter")
    });
    assert!(cut >= 1, "the store's sessions were terminated");
    assert_eq!(
        pg_snapshot(&tables, &last_update),
        before,
        "nothing of the failed iteration was committed"
    );

    // The same store object: its pool replaces the dead connections.
    let out = graph.insert(&mut *store, &input, [4, 5, 6])?;
    assert_eq!(
        out.get(&total)?,
        &zset! { 3 => -1, 6 => 1 },
        "the count state never saw the failed iteration"
    );
    assert!(sessions(&name) > 0, "new sessions");
    assert_eq!(store.next_time()?, t + 1);
    let oracle: ZSet<i64> = (1..=6).map(|n| (n, 1)).collect();
    assert_eq!(numbers.zset(&mut *store)?, oracle);
    assert_eq!(totals.zset(&mut *store)?, zset! { 6 => 1 });
    // And as a store on a pool of its own sees it.
    let mut other = store::Postgres::open(
        &url,
        &graph,
        store::OpenOptions {
            prefix,
            create_tables: false,
            ..store::OpenOptions::default()
        },
    )?;
    assert_eq!(numbers.zset(&mut other)?, oracle);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Damaged rows and arbitrary bytes: typed errors, never panics.

/// Words, cached with an index on their length, and their distinct set
/// (which reads an integral of the words of its own, `words`).
struct Words {
    graph: Graph,
    input: Input<String>,
    cache: Cache<String>,
    distinct: Output<ZSet<String>>,
    by_len: Index<String, i64>,
}

fn words() -> Result<Words, GraphError> {
    let by_len = Index::new("len", |s: &String| s.len() as i64);
    let (graph, (input, cache, distinct)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let words = words.transient();
        Ok((
            input,
            q.cache("word_cache", words, &[&by_len])?,
            q.output("distinct", words.distinct())?,
        ))
    })?;
    Ok(Words {
        graph,
        input,
        cache,
        distinct,
        by_len,
    })
}

/// Damage that raw SQL can do to a cache's rows beyond what
/// `sql_stores::corrupt_rows_are_typed_errors_naming_table_and_row` tries
/// (there: a text weight on SQLite, `identity + 1`, weight 0, undecodable
/// bytes, through `Cache::zset`): values of the wrong type in every column
/// (SQLite keeps any type in any column; on Postgres the column's type is
/// changed), and a mismatched identity read through an index and through
/// an iteration. Every read is a store error naming the table (and the row,
/// when it is a corrupt row), never a panic.
#[test]
fn stored_values_of_the_wrong_type_are_typed_errors_naming_table_and_row() -> R {
    let w = words()?;
    for kind in sql_kinds() {
        let damages: &[&str] = if kind == Kind::Sqlite {
            &[
                "UPDATE {t} SET c = 1.5",
                "UPDATE {t} SET c = 1e30",
                "UPDATE {t} SET c = x'01'",
                "UPDATE {t} SET data = 'hello'",
                "UPDATE {t} SET identity = 'abc'",
                "UPDATE {t} SET identity = 2.5",
                "UPDATE {t} SET identity = identity + 1",
            ]
        } else {
            &[
                "ALTER TABLE {t} ALTER COLUMN c TYPE numeric",
                "ALTER TABLE {t} ALTER COLUMN c TYPE text",
                "ALTER TABLE {t} ALTER COLUMN c TYPE integer",
                "ALTER TABLE {t} ALTER COLUMN data TYPE text USING encode(data, 'hex')",
                "ALTER TABLE {t} ALTER COLUMN identity TYPE numeric",
                "UPDATE {t} SET identity = identity + 1",
            ]
        };
        for damage in damages {
            let mut store = Target::open(kind, &w.graph)?;
            w.graph
                .insert(&mut *store, &w.input, ["hello".to_string()])?;
            // The cache, and the integral `distinct` reads (its own state).
            let (table, integral) = (store.table("word_cache"), store.table("words"));
            store.execute(&damage.replace("{t}", &table));
            // Its primary key may be a rowid, which refuses what is no integer.
            let integral_damaged = store.try_execute(&damage.replace("{t}", &integral)).is_ok();
            let reads = [
                no_panic("Cache::zset", || w.cache.zset(&mut *store).map(drop)),
                no_panic("Cache::iter_by_index", || {
                    w.cache
                        .iter_by_index(&mut *store, &w.by_len, Some(&[5]))
                        .map(drop)
                }),
                // `distinct` reads the damaged integral to see "hello" again.
                no_panic("an iteration", || {
                    w.graph
                        .insert(&mut *store, &w.input, ["hello".to_string()])
                        .map(|out| assert!(out.get(&w.distinct).is_ok()))
                }),
            ];
            for (i, read) in reads.into_iter().enumerate() {
                let read = read.unwrap_or_else(|p| panic!("{kind:?} {damage}: {p}"));
                match read {
                    Err(e) => assert!(
                        names_table(&e, &table) || (i == 2 && names_table(&e, &integral)),
                        "{kind:?} {damage} #{i}: {e:?}"
                    ),
                    // A row moved to another identity is not found by its
                    // value's identity: `distinct` sees "hello" as new.
                    Ok(()) if i == 2 && (!integral_damaged || damage.contains("identity")) => {}
                    Ok(()) => panic!("{kind:?} {damage}: read #{i} took the damaged row"),
                }
            }
        }
    }
    Ok(())
}

/// The metadata tables damaged: a recorded shape that is not text, a
/// `last_update` time that is not an integer. Opening the store and running
/// an iteration give typed errors naming the state table, never a panic.
#[test]
fn damaged_metadata_is_a_typed_error_naming_the_table() -> R {
    let w = words()?;
    for kind in sql_kinds() {
        let store = Target::open(kind, &w.graph)?;
        let table = store.table("word_cache");
        let prefix = store.prefix();
        let tables = format!("{prefix}0_tables");
        let (damage, repair) = if kind == Kind::Sqlite {
            (
                format!("UPDATE {tables} SET shape = x'00ff' WHERE table_name = '{table}'"),
                None,
            )
        } else {
            (
                format!(
                    "ALTER TABLE {tables} ALTER COLUMN shape TYPE bytea USING convert_to(shape, 'UTF8')"
                ),
                Some(format!(
                    "ALTER TABLE {tables} ALTER COLUMN shape TYPE text USING convert_from(shape, 'UTF8')"
                )),
            )
        };
        store.execute(&damage);
        let opened = no_panic("opening a store", || match &store {
            Target::Harness(o) => o.open_again(&w.graph, false).map(drop),
            Target::Sqlite { store, .. } => {
                store::Sqlite::open(store.path(), &w.graph, store::OpenOptions::attach())
                    .map(drop)
                    .map_err(GraphError::from)
            }
        });
        if let Some(repair) = repair {
            // Before anything can fail: the harness drops the tables later.
            store.execute(&repair);
        }
        match opened {
            Ok(Err(e)) => assert!(names_table(&e, &table), "{kind:?}: {e:?}"),
            Ok(Ok(())) => panic!("{kind:?}: a damaged shape was accepted"),
            Err(p) => panic!("{kind:?}: {p}"),
        }

        let mut store = Target::open(kind, &w.graph)?;
        let table = store.table("word_cache");
        let last_update = format!("{}0_last_update", store.prefix());
        if kind == Kind::Sqlite {
            store.execute(&format!("UPDATE {last_update} SET t = 'soon'"));
        } else {
            store.execute(&format!(
                "ALTER TABLE {last_update} ALTER COLUMN t TYPE text USING 'soon'"
            ));
        }
        let out = no_panic("an iteration", || {
            w.graph.insert(&mut *store, &w.input, ["x".to_string()])
        })
        .unwrap_or_else(|p| panic!("{kind:?}: {p}"));
        let err = out.expect_err("a time that is no number");
        assert!(
            err.to_string().contains(&last_update) || names_table(&err, &table),
            "{kind:?}: {err:?}"
        );
    }
    Ok(())
}

/// A stored `ZSet` value (a row of a state of Z-sets) listing one element
/// twice with weights whose sum overflows `i64`: the engine never writes
/// one, only damage can. Decoding it must be an error, not a panic or a
/// wrapped weight.
///
/// (Until commit cb939c1, `ZSet`'s `Deserialize` added the weights with
/// `ZSet::update`, which panicked with "attempt to add with overflow" in
/// debug builds and wrapped in release.)
#[test]
fn a_stored_zset_whose_weights_overflow_is_an_error_not_a_panic() -> R {
    let f = codec_fixture();
    let rows: BagRows = vec![("c".into(), i64::MAX), ("c".into(), 1)];
    let bytes = encode_rows(&f.graph, "bag_row_cache", vec![rows]).remove(0);
    let codec = state(&f.graph, "bag_cache").codec();
    let decoded = no_panic("decoding", || {
        let mut sink: Vec<StoredRow<Bag>> = Vec::new();
        codec.decode(&bytes, 1, 0, &mut sink).map(|()| sink)
    });
    match decoded {
        Ok(Err(detail)) => assert!(detail.contains("decode"), "{detail}"),
        Ok(Ok(rows)) => panic!("weights that overflow decoded as {rows:?}"),
        Err(p) => panic!("{p}"),
    }
    // The same bytes in a SQLite table, read through a cache.
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, bags) = q.input::<Bag>("bags")?;
        Ok((input, q.cache("bag_cache", bags, &[])?))
    })?;
    let mut store = Target::open(Kind::Sqlite, &graph)?;
    graph.insert(&mut *store, &input, [zset! { "c".to_string() => 1 }])?;
    let table = store.table("bag_cache");
    store.execute(&format!(
        "UPDATE {table} SET data = {}, identity = {}",
        store.blob(&bytes),
        identity_of(&bytes)
    ));
    match no_panic("Cache::zset", || cache.zset(&mut *store)) {
        Ok(Err(e)) => assert!(names_table(&e, &table), "{e:?}"),
        Ok(Ok(z)) => panic!("weights that overflow read as {z:?}"),
        Err(p) => panic!("{p}"),
    }
    Ok(())
}

/// A change to some bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Append(Vec<u8>),
    Splice { at: usize, bytes: Vec<u8> },
    Replace(Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..12);
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        bytes().prop_map(Mutation::Append),
        (any::<usize>(), bytes()).prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(Mutation::Replace),
    ];
    prop::collection::vec(one, 0..4)
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        match m {
            Mutation::Flip { at, mask } => {
                if !out.is_empty() {
                    let i = at % out.len();
                    out[i] ^= mask;
                }
            }
            Mutation::Truncate { at } => out.truncate(at % (out.len() + 1)),
            Mutation::Append(more) => out.extend_from_slice(more),
            Mutation::Splice { at, bytes } => {
                let i = at % (out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Mutation::Replace(new) => out = new.clone(),
        }
    }
    out
}

/// Weights, the extremes included.
fn weights() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..=3,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX - 1),
        any::<i64>(),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Account {
    name: String,
    balance: F64,
    id: uuid::Uuid,
    nickname: Option<String>,
    limit: Option<F64>,
}

type Nested = Pair<Pair<i64, String>, Option<uuid::Uuid>>;
type Bag = ZSet<String>;
type Dated = (
    chrono::NaiveDate,
    chrono::NaiveDateTime,
    Vec<u8>,
    char,
    bool,
);
/// Serialized exactly like a `ZSet<String>`, but any list: duplicates,
/// zero weights, weights that overflow when summed.
type BagRows = Vec<(String, i64)>;

/// A graph caching one input of each row type, sample values of each, and
/// changes to all inputs encoded.
struct CodecFixture {
    graph: Graph,
    /// Per cache path, the encodings of sample rows.
    samples: BTreeMap<&'static str, Vec<Vec<u8>>>,
    changes: Vec<Vec<u8>>,
}

fn codec_fixture() -> &'static CodecFixture {
    static FIXTURE: std::sync::OnceLock<CodecFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| build_codec_fixture().expect("the codec fixture builds"))
}

fn encode_rows<T: Data>(graph: &Graph, path: &str, rows: Vec<T>) -> Vec<Vec<u8>> {
    let z: ZSet<T> = rows.into_iter().map(|r| (r, 1)).collect();
    let mut encoded = Vec::new();
    state(graph, path)
        .codec()
        .encode_delta(&z, &mut encoded)
        .expect("sample rows encode");
    encoded.into_iter().map(|r| r.data).collect()
}

fn state<'g>(graph: &'g Graph, path: &str) -> &'g graph::StateSpec {
    graph
        .states()
        .iter()
        .find(|s| s.path().as_str() == path)
        .expect("a state of the graph")
}

fn build_codec_fixture() -> Result<CodecFixture, GraphError> {
    let (graph, (accounts, nested, bags, dated)) = Graph::build(|q| {
        let (accounts, a) = q.input::<Account>("accounts")?;
        let (nested, n) = q.input::<Nested>("nested")?;
        let (bags, b) = q.input::<Bag>("bags")?;
        let (dated, d) = q.input::<Dated>("dated")?;
        let (_, rows) = q.input::<BagRows>("bag_rows")?;
        q.cache("account_cache", a, &[])?;
        q.cache("nested_cache", n, &[])?;
        q.cache("bag_cache", b, &[])?;
        q.cache("dated_cache", d, &[])?;
        q.cache("bag_row_cache", rows, &[])?;
        Ok((accounts, nested, bags, dated))
    })?;
    let account = |name: &str, balance: f64, nick: Option<&str>, limit: Option<f64>| Account {
        name: name.into(),
        balance: F64::new(balance),
        id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        nickname: nick.map(Into::into),
        limit: limit.map(F64::new),
    };
    let account_rows = vec![
        account("ann", 10.5, None, Some(f64::NAN)),
        account("ünïcode", -0.0, Some("bob"), None),
    ];
    let nested_rows: Vec<Nested> = vec![
        Pair::new(Pair::new(-1, "x".into()), None),
        Pair::new(Pair::new(i64::MAX, String::new()), Some(uuid::Uuid::nil())),
    ];
    let bag_rows: Vec<Bag> = vec![
        zset! { "a".to_string() => 2, "b".to_string() => -1 },
        ZSet::new(),
    ];
    let date = chrono::NaiveDate::from_ymd_opt(2023, 1, 2).expect("a date");
    let dated_rows: Vec<Dated> = vec![
        (
            date,
            date.and_hms_opt(3, 4, 5).expect("a time"),
            vec![0, 255],
            'é',
            true,
        ),
        (
            chrono::NaiveDate::MIN,
            chrono::NaiveDateTime::MAX,
            Vec::new(),
            '\0',
            false,
        ),
    ];
    let changes = vec![
        Changes::new()
            .insert(&accounts, account_rows.clone())
            .encode()?,
        Changes::new()
            .insert(&nested, nested_rows.clone())
            .remove(&bags, bag_rows.clone())
            .encode()?,
        Changes::new()
            .insert(&dated, dated_rows.clone())
            .insert(&accounts, account_rows.clone())
            .encode()?,
    ];
    let mut samples = BTreeMap::new();
    samples.insert(
        "account_cache",
        encode_rows(&graph, "account_cache", account_rows),
    );
    samples.insert(
        "nested_cache",
        encode_rows(&graph, "nested_cache", nested_rows),
    );
    samples.insert("bag_cache", encode_rows(&graph, "bag_cache", bag_rows));
    samples.insert(
        "dated_cache",
        encode_rows(&graph, "dated_cache", dated_rows),
    );
    Ok(CodecFixture {
        graph,
        samples,
        changes,
    })
}

/// Decoding `bytes` as a row of the state at `path` gives a row (which
/// encodes and decodes to itself) or an error message, never a panic.
fn decode_is_total<T: Data>(
    graph: &Graph,
    path: &str,
    bytes: &[u8],
    weight: i64,
    step: u32,
) -> Result<Option<T>, TestCaseError> {
    let codec = state(graph, path).codec();
    let mut sink: Vec<StoredRow<T>> = Vec::new();
    match codec.decode(bytes, weight, step, &mut sink) {
        Ok(()) => {
            prop_assert_eq!(sink.len(), 1, "{}", path);
            let row = sink.pop().expect("one row");
            prop_assert_eq!((row.weight, row.step), (weight, step));
            let mut encoded = Vec::new();
            codec
                .encode_delta(&ZSet::singleton(row.value.clone(), 1), &mut encoded)
                .map_err(fail)?;
            let mut again: Vec<StoredRow<T>> = Vec::new();
            codec
                .decode(&encoded[0].data, 1, 0, &mut again)
                .map_err(fail)?;
            prop_assert_eq!(&again[0].value, &row.value, "{} re-encoded", path);
            Ok(Some(row.value))
        }
        Err(detail) => {
            prop_assert!(sink.is_empty(), "{}: a failed decode pushed a row", path);
            prop_assert!(detail.contains("decode"), "{}: {}", path, detail);
            Ok(None)
        }
    }
}

fn sample<'f>(fixture: &'f CodecFixture, path: &str, pick: usize) -> &'f [u8] {
    let all = &fixture.samples[path];
    &all[pick % all.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every row type's codec, on mutated encodings of real rows and on
    /// arbitrary bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        pick in any::<usize>(),
        m in mutations(),
        weight in weights(),
        step in any::<u32>(),
    ) {
        let f = codec_fixture();
        let g = &f.graph;
        let bytes = mutate(sample(f, "account_cache", pick), &m);
        decode_is_total::<Account>(g, "account_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "nested_cache", pick), &m);
        decode_is_total::<Nested>(g, "nested_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "bag_cache", pick), &m);
        decode_is_total::<Bag>(g, "bag_cache", &bytes, weight, step)?;
        let bytes = mutate(sample(f, "dated_cache", pick), &m);
        decode_is_total::<Dated>(g, "dated_cache", &bytes, weight, step)?;
    }

    /// A stored Z-set value with repeated rows, zero weights and weights
    /// whose sum overflows: the exact sums, or an error.
    #[test]
    fn decoding_zset_values_sums_weights_exactly_or_fails(
        rows in prop::collection::vec(
            (prop_oneof![Just("a"), Just("b"), Just("c")], weights()),
            0..6,
        ),
    ) {
        let f = codec_fixture();
        let rows: BagRows = rows.into_iter().map(|(s, w)| (s.to_string(), w)).collect();
        // Running sums that overflow are the case of
        // `a_stored_zset_whose_weights_overflow_is_an_error_not_a_panic`.
        let mut running: BTreeMap<&str, i64> = BTreeMap::new();
        prop_assume!(rows.iter().all(|(s, w)| {
            let sum = running.entry(s.as_str()).or_default();
            sum.checked_add(*w).map(|n| *sum = n).is_some()
        }));
        let bytes = encode_rows(&f.graph, "bag_row_cache", vec![rows.clone()]).remove(0);
        let mut exact: BTreeMap<String, i128> = BTreeMap::new();
        for (s, w) in &rows {
            *exact.entry(s.clone()).or_default() += i128::from(*w);
        }
        exact.retain(|_, w| *w != 0);
        if let Some(bag) = decode_is_total::<Bag>(&f.graph, "bag_cache", &bytes, 1, 0)? {
            let got: BTreeMap<String, i128> =
                bag.iter().map(|(s, w)| (s.clone(), i128::from(w))).collect();
            prop_assert_eq!(got, exact, "a decoded Z-set holds the exact sums");
        }
    }

    /// Recorded changes (a failed batch's input), damaged.
    #[test]
    fn decoding_arbitrary_changes_never_panics(pick in any::<usize>(), m in mutations()) {
        let f = codec_fixture();
        let bytes = mutate(&f.changes[pick % f.changes.len()], &m);
        match f.graph.decode_changes(&bytes) {
            Ok(changes) => {
                // What decodes encodes again, and runs.
                let again = changes.encode().map_err(fail)?;
                prop_assert_eq!(
                    f.graph.decode_changes(&again).map_err(fail)?.len(),
                    changes.len()
                );
                let mut memory = store::Memory::new(&f.graph);
                f.graph.iteration(&mut memory, changes).map_err(fail)?;
            }
            Err(GraphError::Store(StoreError::Corrupt { table, .. })) => {
                prop_assert_eq!(table, "changes");
            }
            Err(GraphError::ForeignInput { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error: {:?}", other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Reading {
    id: i64,
    meter: String,
    value: F64,
    note: Option<String>,
}

/// A query with every kind of state and read: Z-set integrals read by index
/// (a join) and by value (distinct), keyed aggregates, first rows by index
/// (`first_n`), nested states (a recursion), and two caches.
struct FuzzQuery {
    readings: Input<Reading>,
    meters: Input<Pair<String, i64>>,
    edges: Input<Pair<i64, i64>>,
    reading_cache: Cache<Reading>,
    path_cache: Cache<Pair<i64, i64>>,
    by_meter: Index<Reading, String>,
    by_from: Index<Pair<i64, i64>, i64>,
}

/// Inner steps the fuzzed query's recursion may take.
const RECURSION_LIMIT: u32 = 24;

fn fuzz_query() -> Result<(Graph, FuzzQuery), GraphError> {
    let by_meter = Index::new("meter", |r: &Reading| r.meter.clone());
    let by_name = Index::new("name", |m: &Pair<String, i64>| m.left.clone());
    let by_value = Index::new("value", |r: &Reading| Desc(r.value));
    let by_from = Index::new("from", |p: &Pair<i64, i64>| p.left);
    let (graph, (readings, meters, edges, reading_cache, path_cache)) = Graph::build(|q| {
        let (readings, r) = q.input::<Reading>("readings")?;
        let (meters, m) = q.input::<Pair<String, i64>>("meters")?;
        let (edges, e) = q.input::<Pair<i64, i64>>("edges")?;
        // The transitive closure, with a small limit on inner steps: a
        // damaged `step` makes the recursion run up to its limit (see
        // `typed`), and with the default 10 000 steps of quadratic work
        // that takes minutes.
        let to = Index::new("to", |e: &Pair<i64, i64>| e.right);
        let from = Index::new("from", |e: &Pair<i64, i64>| e.left);
        let paths = e.recursive_with_limit(RECURSION_LIMIT, move |_rec, edges, paths| {
            let longer = edges
                .join(paths, &to, &from)
                .map(|p| Pair::new(p.left.left, p.right.right));
            Ok(edges.add(longer).distinct())
        })?;
        q.output("joined", r.join(m, &by_meter, &by_name))?;
        q.output(
            "totals",
            r.group_reduce_flatten(&by_meter, F64::new(0.0), |r| r.value),
        )?;
        q.output("top", r.first_n(&by_value, 2))?;
        q.output("owners", m.map(|m| m.right).distinct())?;
        q.output("paths", paths)?;
        Ok((
            readings,
            meters,
            edges,
            q.cache("reading_cache", r, &[&by_meter])?,
            q.cache("path_cache", paths, &[&by_from])?,
        ))
    })?;
    Ok((
        graph,
        FuzzQuery {
            readings,
            meters,
            edges,
            reading_cache,
            path_cache,
            by_meter,
            by_from,
        },
    ))
}

fn reading(id: i64, meter: &str, value: f64) -> Reading {
    Reading {
        id,
        meter: meter.into(),
        value: F64::new(value),
        note: (id % 2 == 0).then(|| format!("n{id}")),
    }
}

/// What to do to one stored row.
#[derive(Clone, Debug)]
struct Damage {
    state: usize,
    row: usize,
    data: Vec<Mutation>,
    identity: IdentityChoice,
    weight: i64,
    step: i32,
    /// A key column (by position among the table's `k_` columns) and the
    /// value to write into it.
    key: Option<(usize, KeyLiteral)>,
}

/// The damaged row's identity.
#[derive(Clone, Debug)]
enum IdentityChoice {
    /// The row's own (the row is damaged in place).
    Same,
    /// The hash of the damaged bytes, so the identity check passes and the
    /// bytes reach the decoder.
    OfData,
    Any(i64),
}

/// A value for a key column, of any type (SQLite stores it whatever the
/// column's type; Postgres converts it or refuses).
#[derive(Clone, Debug)]
enum KeyLiteral {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl KeyLiteral {
    fn sql(&self) -> String {
        match self {
            KeyLiteral::Null => "NULL".into(),
            KeyLiteral::Int(i) => i.to_string(),
            KeyLiteral::Float(f) => format!("{f:e}"),
            KeyLiteral::Text(t) => format!("'{}'", t.replace('\'', "''")),
        }
    }
}

fn damages() -> impl Strategy<Value = Damage> {
    let identity = prop_oneof![
        Just(IdentityChoice::Same),
        Just(IdentityChoice::OfData),
        Just(IdentityChoice::OfData),
        any::<i64>().prop_map(IdentityChoice::Any),
    ];
    let step = prop_oneof![0i32..4, any::<i32>()];
    let literal = prop_oneof![
        Just(KeyLiteral::Null),
        any::<i64>().prop_map(KeyLiteral::Int),
        (-1e6f64..1e6).prop_map(KeyLiteral::Float),
        "[a-c' é0-9]{0,6}".prop_map(KeyLiteral::Text),
    ];
    let key = prop::option::of((any::<usize>(), literal));
    // Weights whose products and sums stay far from overflow: extreme
    // weights are `extreme_stored_weights_are_errors_not_panics`'s case.
    let weight = prop_oneof![-3i64..=3, -1_000_000i64..=1_000_000];
    (
        (any::<usize>(), any::<usize>(), mutations()),
        (identity, weight, step, key),
    )
        .prop_map(
            |((state, row, data), (identity, weight, step, key))| Damage {
                state,
                row,
                data,
                identity,
                weight,
                step,
                key,
            },
        )
}

/// Whether `result` is fine after `table` was damaged: `Ok` (damaged key
/// columns or weights can make a read miss or count a row differently), or
/// a typed error naming `table`. A damaged `step` (or weight) in a nested
/// state can also keep a recursion from converging: it then stops at its
/// limit with `RecursionLimit`, which names the recursion, not the table.
fn typed<T: std::fmt::Debug>(
    result: &Result<T, GraphError>,
    table: &str,
    nested: bool,
    collision_allowed: bool,
) -> bool {
    match result {
        Ok(_) => true,
        Err(e @ GraphError::Store(StoreError::Corrupt { table: t, .. })) => {
            t == table && names_table(e, table)
        }
        Err(GraphError::Store(StoreError::IdentityCollision { table: t, .. })) => {
            collision_allowed && t == table
        }
        Err(GraphError::RecursionLimit { steps, .. }) => nested && *steps == RECURSION_LIMIT,
        Err(_) => false,
    }
}

/// Seeds `store`, damages one row of one table with raw SQL (its bytes,
/// identity, weight, step and a key column), then reads the caches (whole
/// and by index) and runs an iteration that reads every state.
fn damaged_row(kind: Kind, damage: &Damage) -> Result<(), TestCaseError> {
    let (graph, q) = fuzz_query().map_err(fail)?;
    let mut store = Target::open(kind, &graph).map_err(fail)?;
    let seed = Changes::new()
        .insert(
            &q.readings,
            [
                reading(1, "a", 1.5),
                reading(2, "a", -2.0),
                reading(3, "b", 7.0),
                reading(4, "c", f64::NAN),
            ],
        )
        .insert(
            &q.meters,
            [Pair::new("a".into(), 10), Pair::new("b".into(), 20)],
        )
        .insert(
            &q.edges,
            [Pair::new(1, 2), Pair::new(2, 3), Pair::new(3, 1)],
        );
    graph.iteration(&mut *store, seed).map_err(fail)?;
    let readings_before = q.reading_cache.zset(&mut *store).map_err(fail)?;
    let paths_before = q.path_cache.zset(&mut *store).map_err(fail)?;

    let spec = &graph.states()[damage.state % graph.states().len()];
    let table = store.table(spec.path().as_str());
    let nested = spec.kind() == StateKind::Nested;
    let rows = store.rows(&table, nested);
    prop_assert!(
        !rows.is_empty(),
        "{:?}: the seed leaves {} empty",
        kind,
        table
    );
    let old = &rows[damage.row % rows.len()];
    let data = mutate(&old.data, &damage.data);
    let identity = match damage.identity {
        IdentityChoice::Same => old.identity,
        IdentityChoice::OfData => identity_of(&data),
        IdentityChoice::Any(i) => i,
    };
    let (old_key, new_key, set_step) = if nested {
        (
            format!("identity = {} AND step = {}", old.identity, old.step),
            format!("identity = {identity} AND step = {}", damage.step),
            format!(", step = {}", damage.step),
        )
    } else {
        (
            format!("identity = {}", old.identity),
            format!("identity = {identity}"),
            String::new(),
        )
    };
    // Make room for the new primary key, then damage the row in place (its
    // key columns stay, so reads by index still find it).
    store.execute(&format!(
        "DELETE FROM {table} WHERE {new_key} AND NOT ({old_key});
         UPDATE {table} SET identity = {identity}, data = {}, c = {}{set_step} WHERE {old_key};",
        store.blob(&data),
        damage.weight
    ));
    if let Some((column, value)) = &damage.key {
        let columns = store.key_columns(&table);
        if !columns.is_empty() {
            let (column, _) = &columns[column % columns.len()];
            // Postgres refuses what its column cannot hold (and a key
            // column in the primary key refuses NULL): that damage cannot
            // happen there, so the row keeps its key.
            let _ = store.try_execute(&format!(
                "UPDATE {table} SET {column} = {} WHERE {new_key}",
                value.sql()
            ));
        }
    }

    let reading_table = store.table("reading_cache");
    let path_table = store.table("path_cache");
    let whole = q.reading_cache.zset(&mut *store);
    if table == reading_table {
        prop_assert!(
            typed(&whole, &table, false, false),
            "{:?}: {:?}",
            kind,
            whole.err()
        );
    } else {
        prop_assert_eq!(whole.map_err(fail)?, readings_before, "{:?}", kind);
    }
    let whole = q.path_cache.zset(&mut *store);
    if table == path_table {
        prop_assert!(
            typed(&whole, &table, false, false),
            "{:?}: {:?}",
            kind,
            whole.err()
        );
    } else {
        prop_assert_eq!(whole.map_err(fail)?, paths_before, "{:?}", kind);
    }
    let meters = ["a".to_string(), "b".to_string(), "c".to_string()];
    let by_key = q
        .reading_cache
        .iter_by_index(&mut *store, &q.by_meter, Some(&meters));
    prop_assert!(
        typed(&by_key, &reading_table, false, false),
        "{:?}: {:?}",
        kind,
        by_key.err()
    );
    let by_key = q
        .path_cache
        .iter_by_index(&mut *store, &q.by_from, Some(&[1, 2, 3]));
    prop_assert!(
        typed(&by_key, &path_table, false, false),
        "{:?}: {:?}",
        kind,
        by_key.err()
    );

    // An iteration touching every state: new rows for every meter and
    // group, a new owner, a removed reading, and an edge into the cycle.
    let changes = Changes::new()
        .insert(
            &q.readings,
            [
                reading(5, "a", 3.0),
                reading(6, "b", 9.5),
                reading(7, "c", 0.0),
            ],
        )
        .remove(&q.readings, [reading(3, "b", 7.0)])
        .insert(&q.meters, [Pair::new("c".into(), 30)])
        .insert(&q.edges, [Pair::new(4, 1)]);
    let out = graph.iteration(&mut *store, changes);
    prop_assert!(
        typed(&out, &table, nested, true),
        "{:?} ({}): {:?}",
        kind,
        table,
        out.err()
    );
    Ok(())
}

/// Every row of every state table given a weight of `i64::MAX` or
/// `i64::MIN` (only damage writes one: the engine's own sums fail first),
/// then an iteration that reads them all: an error or a result, never a
/// panic.
///
/// Such weights are valid `i64`s, so a store cannot call them corrupt; the
/// arithmetic that meets them (`distinct` adding, `first_n` negating, the
/// join multiplying, the stores summing) reports the overflow instead:
/// `GraphError::WeightOverflow` naming the operator, or a store error
/// naming the table, and the iteration rolls back.
#[test]
fn extreme_stored_weights_are_errors_not_panics() -> R {
    let mut problems = Vec::new();
    let (graph, q) = fuzz_query()?;
    for kind in sql_kinds() {
        for spec in graph.states() {
            for weight in [i64::MAX, i64::MIN] {
                let mut store = Target::open(kind, &graph)?;
                graph.iteration(
                    &mut *store,
                    Changes::new()
                        .insert(&q.readings, [reading(1, "a", 1.5), reading(2, "b", 2.0)])
                        .insert(&q.meters, [Pair::new("a".into(), 10)])
                        .insert(&q.edges, [Pair::new(1, 2), Pair::new(2, 1)]),
                )?;
                let table = store.table(spec.path().as_str());
                store.execute(&format!("UPDATE {table} SET c = {weight}"));
                let changes = Changes::new()
                    .insert(&q.readings, [reading(3, "a", 3.0)])
                    .remove(&q.readings, [reading(2, "b", 2.0)])
                    .insert(&q.meters, [Pair::new("b".into(), 20)])
                    .insert(&q.edges, [Pair::new(3, 1)]);
                match no_panic("an iteration", || graph.iteration(&mut *store, changes)) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if names_table(&e, &table) => {}
                    Ok(Err(GraphError::WeightOverflow { .. })) => {}
                    Ok(Err(GraphError::RecursionLimit { .. }))
                        if spec.kind() == StateKind::Nested => {}
                    Ok(Err(e)) => problems.push(format!("{kind:?} {table} c = {weight}: {e:?}")),
                    Err(p) => problems.push(format!("{kind:?} {table} c = {weight}: {p}")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Rows damaged with raw SQL (bytes, identities, weights, steps, key
    /// columns) in any state table of a SQL store.
    #[test]
    fn damaged_stored_rows_are_typed_errors(damage in damages()) {
        for kind in sql_kinds() {
            damaged_row(kind, &damage)?;
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Bad input on every store.

/// One insert of a million rows into a count, a sum and a small cache, on
/// every store; then the same million (and one) removed in one batch.
/// The iteration keeps a million rows in memory and writes a handful.
#[test]
fn a_million_rows_in_one_insert_on_every_store() -> R {
    const ROWS: i64 = 1_000_000;
    let (graph, (input, count, sum, sample)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        Ok((
            input,
            q.output("count", x.count())?,
            q.output("sum", x.reduce(0i64, |n| *n))?,
            q.cache("sample", x.filter(|n| n % 100_000 == 0), &[])?,
        ))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let start = Instant::now();
        let out = graph.insert(&mut *store, &input, 0..ROWS)?;
        let inserted = start.elapsed();
        assert_eq!(out.get(&count)?, &zset! { ROWS => 1 }, "{kind:?}");
        assert_eq!(out.get(&sum)?, &zset! { ROWS * (ROWS - 1) / 2 => 1 });
        store = store.reopen(&graph)?;
        assert_eq!(sample.zset(&mut *store)?.len(), 10, "{kind:?}");
        let out = graph.insert(&mut *store, &input, [ROWS])?;
        assert_eq!(out.get(&count)?, &zset! { ROWS => -1, ROWS + 1 => 1 });
        let start = Instant::now();
        let out = graph.remove(&mut *store, &input, 0..=ROWS)?;
        let removed = start.elapsed();
        // At the root an aggregate always has a value: 0 for no rows.
        assert_eq!(
            out.get(&count)?,
            &zset! { ROWS + 1 => -1, 0 => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sum)?,
            &zset! { ROWS * (ROWS + 1) / 2 => -1, 0 => 1 }
        );
        assert!(sample.zset(&mut *store)?.is_empty(), "{kind:?}");
        eprintln!("{kind:?}: 1,000,000 rows inserted in {inserted:.2?}, removed in {removed:.2?}");
        // Generous (a debug build on a loaded 2-core machine), but a
        // per-row round trip to the database or quadratic work would not
        // fit.
        assert!(
            inserted + removed < Duration::from_secs(120),
            "{kind:?}: {inserted:?} + {removed:?}"
        );
    }
    Ok(())
}

/// No changes, an input with no rows, an empty Z-set, and a row inserted
/// and removed in the same batch: empty outputs, no state written, and the
/// state (read now and after a re-open) as before.
#[test]
fn empty_changes_change_nothing_on_every_store() -> R {
    let (graph, (input, count, distinct, cache)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((
            input,
            q.output("count", x.count())?,
            q.output("distinct", x.map(|n| n % 2).distinct())?,
            q.cache("xs", x, &[])?,
        ))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1, 2, 3])?;
        let before = cache.zset(&mut *store)?;
        let empties = [
            Changes::new(),
            Changes::new().insert(&input, Vec::<i64>::new()),
            Changes::new().zset(&input, ZSet::new()),
            Changes::new().zset(
                &input,
                zset! { 4 => 1, 5 => -1 } + zset! { 4 => -1, 5 => 1 },
            ),
        ];
        for (i, changes) in empties.into_iter().enumerate() {
            store.reset_stats();
            let out = graph.iteration(&mut *store, changes)?;
            assert!(out.get(&count)?.is_empty(), "{kind:?} #{i}");
            assert!(out.get(&distinct)?.is_empty(), "{kind:?} #{i}");
            assert_eq!(store.stats().rows_written, 0, "{kind:?} #{i}");
            assert_eq!(cache.zset(&mut *store)?, before, "{kind:?} #{i}");
        }
        store = store.reopen(&graph)?;
        assert_eq!(cache.zset(&mut *store)?, before, "{kind:?}");
        let out = graph.insert(&mut *store, &input, [4])?;
        assert_eq!(out.get(&count)?, &zset! { 3 => -1, 4 => 1 }, "{kind:?}");
        assert!(out.get(&distinct)?.is_empty(), "{kind:?}");
    }
    Ok(())
}

/// Removing rows that were never inserted leaves negative weights, which
/// every store keeps as they are: through a re-open, through an index, as
/// the SQL weight column; and a later insert cancels them (no zero rows).
#[test]
fn rows_removed_before_they_were_inserted_keep_negative_weights_in_every_store() -> R {
    let by_len = Index::new("len", |s: &String| s.len() as i64);
    let (graph, (input, cache, count)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let words = words.transient();
        Ok((
            input,
            q.cache("word_cache", words, &[&by_len])?,
            q.output("count", words.count())?,
        ))
    })?;
    let s = |x: &str| x.to_string();
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let out = graph.remove(&mut *store, &input, [s("ghost")])?;
        assert_eq!(out.get(&count)?, &zset! { -1 => 1 }, "{kind:?}");
        let out = graph.iteration(
            &mut *store,
            Changes::new().zset(&input, zset! { s("phantom") => -3, s("real") => 2 }),
        )?;
        assert_eq!(out.get(&count)?, &zset! { -1 => -1, -2 => 1 }, "{kind:?}");
        let expected = zset! { s("ghost") => -1, s("phantom") => -3, s("real") => 2 };
        assert_eq!(cache.zset(&mut *store)?, expected, "{kind:?}");
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.zset(&mut *store)?,
            expected,
            "{kind:?} after a re-open"
        );
        assert_eq!(
            cache.iter_by_index(&mut *store, &by_len, Some(&[5, 7]))?,
            [(5, s("ghost"), -1), (7, s("phantom"), -3)],
            "{kind:?}"
        );
        if store.is_sql() {
            let table = store.table("word_cache");
            let weights = |store: &Target| {
                (
                    store.scalar(&format!("SELECT count(*) FROM {table}")),
                    store.scalar(&format!("SELECT CAST(min(c) AS BIGINT) FROM {table}")),
                    store.scalar(&format!("SELECT CAST(sum(c) AS BIGINT) FROM {table}")),
                )
            };
            assert_eq!(weights(&store), (3, -3, -2), "{kind:?}");
            // Inserting the ghost cancels it: no row of weight 0 is kept.
            let out = graph.insert(&mut *store, &input, [s("ghost")])?;
            assert_eq!(out.get(&count)?, &zset! { -2 => -1, -1 => 1 }, "{kind:?}");
            assert_eq!(weights(&store), (2, -3, -1), "{kind:?}");
        } else {
            graph.insert(&mut *store, &input, [s("ghost")])?;
        }
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.zset(&mut *store)?,
            zset! { s("phantom") => -3, s("real") => 2 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// `(name, value)` with a float in the data, not in a key.
type Measure = (String, F64);

/// NaN and `-0.0` as data: every NaN is one value (equal to itself), `-0.0`
/// is `0.0`, in caches, distinct, sums and joins on a float key, on every
/// store and after a re-open; and every store gives the same results.
#[test]
fn nan_and_negative_zero_in_data_are_one_value_each_in_every_store() -> R {
    let by_name = Index::new("name", |m: &Measure| m.0.clone());
    let by_value = Index::new("value", |m: &Measure| m.1);
    let by_key = Index::new("key", |l: &Pair<F64, String>| l.left);
    let (graph, (measures, labels, cache, distinct, sums, joined)) = Graph::build(|q| {
        let (measures, m) = q.input::<Measure>("measures")?;
        let (labels, l) = q.input::<Pair<F64, String>>("labels")?;
        Ok((
            measures,
            labels,
            q.cache("measure_cache", m, &[&by_name])?,
            q.output("distinct", m.map(|m| m.1).distinct())?,
            q.output(
                "sums",
                m.group_reduce_flatten(&by_name, F64::new(0.0), |m| m.1),
            )?,
            q.output("joined", m.join(l, &by_value, &by_key))?,
        ))
    })?;
    let f = F64::new;
    let m = |name: &str, v: f64| (name.to_string(), f(v));
    let nan_with_payload = f64::from_bits(0x7ff8_0000_0000_0001);
    let mut results = Vec::new();
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let mut seen = Vec::new();
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .insert(&measures, [m("z", -0.0), m("n", f64::NAN)])
                .insert(
                    &labels,
                    [
                        Pair::new(f(0.0), "zero".into()),
                        Pair::new(f(-f64::NAN), "nan".into()),
                    ],
                ),
        )?;
        assert_eq!(
            out.get(&distinct)?,
            &zset! { f(0.0) => 1, f(f64::NAN) => 1 },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                Pair::new(m("z", 0.0), Pair::new(f(-0.0), "zero".into())) => 1,
                Pair::new(m("n", nan_with_payload), Pair::new(f(f64::NAN), "nan".into())) => 1,
            },
            "{kind:?}: NaN joins NaN, -0.0 joins 0.0"
        );
        assert_eq!(
            out.get(&sums)?,
            &zset! { Pair::new(f(0.0), "z".to_string()) => 1, Pair::new(f(f64::NAN), "n".to_string()) => 1 },
            "{kind:?}"
        );
        seen.push(format!("{out:?}"));
        store = store.reopen(&graph)?;
        // The same values spelled differently: one value each.
        let out = graph.iteration(
            &mut *store,
            Changes::new().zset(
                &measures,
                zset! { m("z", 0.0) => 1, m("n", -f64::NAN) => 1, m("n", nan_with_payload) => 1 },
            ),
        )?;
        assert!(out.get(&distinct)?.is_empty(), "{kind:?}");
        // NaN + NaN is NaN and 0.0 + 0.0 is 0.0: no aggregate changed.
        assert!(out.get(&sums)?.is_empty(), "{kind:?}: {:?}", out.get(&sums));
        seen.push(format!("{out:?}"));
        let out = graph.remove(&mut *store, &measures, [m("z", -0.0)])?;
        seen.push(format!("{out:?}"));
        store = store.reopen(&graph)?;
        let cached = cache.zset(&mut *store)?;
        assert_eq!(
            cached,
            zset! { m("z", 0.0) => 1, m("n", f64::NAN) => 3 },
            "{kind:?}"
        );
        for ((name, value), _) in cached.iter() {
            let v = value.get();
            assert!(
                v.is_nan() || v.to_bits() == 0,
                "{kind:?}: {name} read back as {v:?}"
            );
        }
        let n = cache.iter_by_index(&mut *store, &by_name, Some(&["n".to_string()]))?;
        assert_eq!(n, [("n".to_string(), m("n", f64::NAN), 3)], "{kind:?}");
        seen.push(format!("{cached:?}"));
        results.push((kind, seen));
    }
    for (kind, seen) in &results[1..] {
        assert_eq!(
            seen, &results[0].1,
            "{kind:?} differs from {:?}",
            results[0].0
        );
    }
    Ok(())
}

type Member = (i64, Option<String>);
type Team = (Option<String>, String);

/// `None` keys join `None` keys and form their own group, distinct from
/// `Some("")`, in every store (a SQL `NULL` equals nothing, so a store that
/// compared key columns with `=` would lose them), through a re-open.
#[test]
fn none_keys_join_and_group_like_any_other_value_in_every_store() -> R {
    let member_team = Index::new("team", |m: &Member| m.1.clone());
    let team_key = Index::new("team", |t: &Team| t.0.clone());
    let (graph, (members, teams, joined, sizes, cache)) = Graph::build(|q| {
        let (members, m) = q.input::<Member>("members")?;
        let (teams, t) = q.input::<Team>("teams")?;
        Ok((
            members,
            teams,
            q.output("joined", m.join(t, &member_team, &team_key))?,
            q.output("sizes", m.group_reduce_flatten(&member_team, 0i64, |_| 1))?,
            q.cache("member_cache", m, &[&member_team])?,
        ))
    })?;
    let some = |s: &str| Some(s.to_string());
    let pair = |m: Member, t: Team| Pair::new(m, t);
    for kind in kinds() {
        let mut store = Target::open(kind, &graph)?;
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .insert(&members, [(1, None), (2, None), (3, some("a"))])
                .insert(&teams, [(None, "nobody".into()), (some("a"), "A".into())]),
        )?;
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                pair((1, None), (None, "nobody".into())) => 1,
                pair((2, None), (None, "nobody".into())) => 1,
                pair((3, some("a")), (some("a"), "A".into())) => 1,
            },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(2, None) => 1, Pair::new(1, some("a")) => 1 },
            "{kind:?}"
        );
        store = store.reopen(&graph)?;
        let out = graph.iteration(
            &mut *store,
            Changes::new()
                .remove(&members, [(1, None)])
                .insert(&members, [(4, some(""))])
                .remove(&teams, [(None, "nobody".into())])
                .insert(&teams, [(some(""), "empty".into())]),
        )?;
        assert_eq!(
            out.get(&joined)?,
            &zset! {
                pair((1, None), (None, "nobody".into())) => -1,
                pair((2, None), (None, "nobody".into())) => -1,
                pair((4, some("")), (some(""), "empty".into())) => 1,
            },
            "{kind:?}"
        );
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(2, None) => -1, Pair::new(1, None) => 1, Pair::new(1, some("")) => 1 },
            "{kind:?}"
        );
        store = store.reopen(&graph)?;
        assert_eq!(
            cache.iter_by_index(&mut *store, &member_team, Some(&[None]))?,
            [(None, (2, None), 1)],
            "{kind:?}"
        );
        assert_eq!(
            cache.iter_by_index(&mut *store, &member_team, Some(&[some("")]))?,
            [(some(""), (4, some("")), 1)],
            "{kind:?}"
        );
        // The None group goes when its last member does.
        let out = graph.remove(&mut *store, &members, [(2, None)])?;
        assert_eq!(
            out.get(&sizes)?,
            &zset! { Pair::new(1, None) => -1 },
            "{kind:?}"
        );
        assert!(out.get(&joined)?.is_empty(), "{kind:?}");
    }
    Ok(())
}

/// Weights near `i64::MAX` given by the caller: adding to them must be an
/// error (the iteration rolled back), not a panic and not a wrapped weight,
/// on every store.
///
/// (`distinct` reports `GraphError::WeightOverflow`; the stores' own sums
/// report a store error: the database's integer overflow, or
/// `StoreError::WeightOverflow`.)
#[test]
fn weights_that_overflow_are_errors_on_every_store() -> R {
    let w = words()?;
    let mut problems = Vec::new();
    for kind in kinds() {
        let mut store = kind.open(&w.graph)?;
        let huge = zset! { "w".to_string() => i64::MAX };
        w.graph
            .iteration(&mut *store, Changes::new().zset(&w.input, huge.clone()))?;
        let outcome = no_panic("adding 1 to i64::MAX", || {
            w.graph
                .insert(&mut *store, &w.input, ["w".to_string()])
                .map(drop)
        });
        match outcome {
            Err(p) => problems.push(format!("{kind:?}: {p}")),
            Ok(Ok(())) => problems.push(format!(
                "{kind:?}: accepted, the cache holds {:?}",
                w.cache.zset(&mut *store)
            )),
            Ok(Err(e)) => {
                if !matches!(e, GraphError::Store(_) | GraphError::WeightOverflow { .. }) {
                    problems.push(format!("{kind:?}: unexpected {e:?}"));
                }
                // Rolled back: the weight is still i64::MAX.
                match no_panic("reading", || w.cache.zset(&mut *store)) {
                    Ok(Ok(z)) if z == huge => {}
                    other => problems.push(format!("{kind:?}: after the error, {other:?}")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// Names cached twice: as they are, and doubled (`"ab"` → `"abab"`): two
/// tables every iteration writes together.
fn names_and_doubled() -> Result<(Graph, (Input<String>, Cache<String>, Cache<String>)), GraphError>
{
    Graph::build(|q| {
        let (input, x) = q.input::<String>("names")?;
        let x = x.transient();
        Ok((
            input,
            q.cache("names_cache", x, &[])?,
            q.cache("doubled_cache", x.map(|s| format!("{s}{s}")), &[])?,
        ))
    })
}

/// A weight that only the store itself sums (a cache, no operator reads
/// it): the store refuses the change, and with several tables written in
/// one iteration none of them changes. SQLite, which would silently turn
/// the sum into a float, reports `StoreError::WeightOverflow` naming the
/// table.
#[test]
fn a_stored_sum_that_overflows_changes_no_table_on_every_store() -> R {
    let (graph, (input, cache, doubled)) = names_and_doubled()?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let huge = zset! { "x".to_string() => i64::MAX };
        graph.iteration(&mut *store, Changes::new().zset(&input, huge.clone()))?;
        let outcome = no_panic("adding 1 to a stored i64::MAX", || {
            graph.insert(&mut *store, &input, ["x".to_string(), "y".to_string()])
        })
        .unwrap_or_else(|p| panic!("{kind:?}: {p}"));
        match outcome {
            Err(GraphError::Store(StoreError::WeightOverflow { table, .. }))
                if kind == Kind::Sqlite =>
            {
                assert!(table.ends_with("_cache"), "{kind:?}: {table}");
            }
            Err(GraphError::Store(e)) if kind != Kind::Sqlite => assert!(
                e.to_string().contains("cache") || e.to_string().contains("overflow"),
                "{kind:?}: {e}"
            ),
            other => panic!("{kind:?}: expected a store error, got {other:?}"),
        }
        assert_eq!(cache.zset(&mut *store)?, huge, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => i64::MAX },
            "{kind:?}"
        );
        // Not wedged: the next change is applied.
        graph.insert(&mut *store, &input, ["y".to_string()])?;
        assert_eq!(
            cache.zset(&mut *store)?.get(&"y".to_string()),
            1,
            "{kind:?}"
        );
    }
    Ok(())
}

/// A store of [`names_and_doubled`] after inserting "x", whose row in
/// `names_cache` then has its value rewritten to "y" under x's identity (a
/// collision waiting for the next write of "x"); and that table's name.
fn x_holding_y(
    kind: Kind,
    graph: &Graph,
    input: &Input<String>,
) -> Result<(Target, String), GraphError> {
    let bytes = |v: &str| encode_rows(graph, "names_cache", vec![v.to_string()]).remove(0);
    let mut store = Target::open(kind, graph)?;
    graph.insert(&mut *store, input, ["x".to_string()])?;
    let table = store.table("names_cache");
    store.execute(&format!(
        "UPDATE {table} SET data = {} WHERE identity = {}",
        store.blob(&bytes("y")),
        identity_of(&bytes("x"))
    ));
    Ok((store, table))
}

/// Two values under one identity (a 64-bit collision, made here by
/// rewriting a stored row's value): the write is refused with a typed error
/// naming the table and the identity, no table of the iteration changes,
/// and the next iteration goes through. On Postgres the refusal comes from
/// the server (the iteration's `COMMIT` is pipelined behind its writes).
#[test]
fn an_identity_collision_is_a_typed_error_and_changes_no_table_on_every_sql_store() -> R {
    let (graph, (input, _, doubled)) = names_and_doubled()?;
    let bytes = |v: &str| encode_rows(&graph, "names_cache", vec![v.to_string()]).remove(0);
    for kind in sql_kinds() {
        let (mut store, table) = x_holding_y(kind, &graph, &input)?;
        let before = store.last_time()?;
        match graph.insert(&mut *store, &input, ["x".to_string(), "w".to_string()]) {
            Err(GraphError::Store(StoreError::IdentityCollision { table: t, identity })) => {
                assert_eq!(t, table, "{kind:?}");
                assert_eq!(identity, identity_of(&bytes("x")), "{kind:?}");
            }
            other => panic!("{kind:?}: expected an identity collision, got {other:?}"),
        }
        assert_eq!(store.last_time()?, before, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => 1 },
            "{kind:?}"
        );
        // Only the damaged row ("w" was not added with it).
        assert_eq!(
            store.scalar(&format!("SELECT count(*) FROM {table}")),
            1,
            "{kind:?}"
        );
        // Not wedged.
        graph.insert(&mut *store, &input, ["z".to_string()])?;
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => 1, "zz".to_string() => 1 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// The same collision in a pipelined iteration, where each table commits on
/// its own (on Postgres `BEGIN`, the writes, the time and `COMMIT` go out
/// together): the colliding table's transaction is refused whole, the error
/// is typed, and the connection goes back to the pool usable.
#[test]
fn an_identity_collision_in_a_pipelined_iteration_changes_not_its_table_on_every_sql_store() -> R {
    let (graph, (input, cache, doubled)) = names_and_doubled()?;
    let bytes = |v: &str| encode_rows(&graph, "names_cache", vec![v.to_string()]).remove(0);
    for kind in sql_kinds() {
        let (mut store, table) = x_holding_y(kind, &graph, &input)?;
        let next = store.next_time()?;
        let changes = Changes::new().insert(&input, ["x".to_string(), "w".to_string()]);
        match graph.iteration_at(&mut *store, changes, Time::new(next, next - 1).pipelined()) {
            Err(GraphError::Store(StoreError::IdentityCollision { table: t, identity })) => {
                assert_eq!(t, table, "{kind:?}");
                assert_eq!(identity, identity_of(&bytes("x")), "{kind:?}");
            }
            other => panic!("{kind:?}: expected an identity collision, got {other:?}"),
        }
        // Only the damaged row ("w" was not added with it).
        assert_eq!(
            store.scalar(&format!("SELECT count(*) FROM {table}")),
            1,
            "{kind:?}"
        );
        // Every connection is usable: reads through the pool go through,
        // more times than the pool has connections. (The damaged table
        // itself reads as corrupt, as it should.)
        for _ in 0..10 {
            assert!(
                doubled.zset(&mut *store)?.contains(&"xx".to_string()),
                "{kind:?}"
            );
        }
        assert!(
            matches!(
                cache.zset(&mut *store),
                Err(GraphError::Store(StoreError::Corrupt { .. }))
            ),
            "{kind:?}"
        );
    }
    Ok(())
}

/// A serial iteration (`Graph::insert`, at the store's next time) while an
/// earlier iteration has committed some tables and not yet the others (a
/// pipelined worker, simulated by moving one table's `last_update`): it
/// waits for the stragglers, then runs after every committed iteration.
/// (Postgres finds the time inside the iteration's transaction.)
#[test]
fn a_serial_iteration_waits_for_an_iteration_half_committed_on_every_sql_store() -> R {
    let (graph, (input, _, doubled)) = names_and_doubled()?;
    for kind in sql_kinds() {
        let mut store = Target::open(kind, &graph)?;
        graph.insert(&mut *store, &input, ["a".to_string()])?;
        let (names, doubled_table) = (store.table("names_cache"), store.table("doubled_cache"));
        let last_update = format!("{}0_last_update", store.prefix());
        let set = |table: &str, t: i64| {
            format!("UPDATE {last_update} SET t = {t} WHERE table_name = '{table}'")
        };
        store.execute(&set(&doubled_table, 2));
        with_straggler(kind, &mut store, set(&names, 2), |store| {
            graph.insert(&mut **store, &input, ["b".to_string()])?;
            Ok(())
        })?;
        assert_eq!(store.last_time()?, 3, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "aa".to_string() => 1, "bb".to_string() => 1 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// A pipelined iteration whose tables are all behind its frontier (an
/// earlier worker not done yet, simulated by moving `last_update` later):
/// it waits before reading a state, and before moving a table with nothing
/// to write on in time (on Postgres one statement that moves it only if it
/// is at the frontier), then runs as if serial.
#[test]
fn a_pipelined_iteration_waits_for_its_frontier_before_reading_or_moving_on_every_sql_store() -> R {
    // Reading first: the sum's state is read before anything is written.
    let (summing, (numbers, sum)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.output("sum", x.reduce(0i64, |v| *v))?))
    })?;
    // Moving on first: an empty change leaves the cache nothing to write.
    let (caching, (cached, cache)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.cache("numbers", x, &[])?))
    })?;
    for kind in sql_kinds() {
        let mut store = Target::open(kind, &summing)?;
        graph_insert_then_behind(kind, &mut store, &summing, &numbers, |store| {
            let out = summing.iteration_at(
                &mut **store,
                Changes::new().insert(&numbers, [2]),
                Time::new(3, 2).pipelined(),
            )?;
            assert_eq!(out.get(&sum)?, &zset! { 1 => -1, 3 => 1 }, "{kind:?}");
            Ok(())
        })?;
        let mut store = Target::open(kind, &caching)?;
        graph_insert_then_behind(kind, &mut store, &caching, &cached, |store| {
            caching.iteration_at(&mut **store, Changes::new(), Time::new(3, 2).pipelined())?;
            assert_eq!(cache.zset(&mut **store)?, zset! { 1 => 1 }, "{kind:?}");
            Ok(())
        })?;
    }
    Ok(())
}

/// Inserts 1 (time 1), then runs `iteration` while every table's
/// `last_update` stays at 1 for 300 ms and only then reaches 2: checks the
/// iteration did not finish before, and that the store's time is then 3.
fn graph_insert_then_behind(
    kind: Kind,
    store: &mut Target,
    graph: &Graph,
    input: &Input<i64>,
    iteration: impl FnOnce(&mut Target) -> R,
) -> R {
    graph.insert(&mut **store, input, [1])?;
    let late = format!("UPDATE {}0_last_update SET t = 2", store.prefix());
    with_straggler(kind, store, late, iteration)?;
    assert_eq!(store.last_time()?, 3, "{kind:?}");
    Ok(())
}

/// Runs `iteration` while a straggler thread waits 300 ms and then runs
/// `late` (SQL moving `last_update` on, as an earlier worker finishing
/// would) on its own connection; checks the iteration did not finish
/// before the straggler ran.
fn with_straggler(
    kind: Kind,
    store: &mut Target,
    late: String,
    iteration: impl FnOnce(&mut Target) -> R,
) -> R {
    let bumped = Arc::new(AtomicBool::new(false));
    let sqlite = match &*store {
        Target::Sqlite { store, .. } => Some(store.path().to_path_buf()),
        Target::Harness(_) => None,
    };
    let straggler = std::thread::spawn({
        let bumped = Arc::clone(&bumped);
        move || {
            std::thread::sleep(Duration::from_millis(300));
            bumped.store(true, Ordering::SeqCst);
            match sqlite {
                Some(path) => rusqlite::Connection::open(path)
                    .and_then(|c| c.execute_batch(&late))
                    .expect("sqlite"),
                None => with_pg_client(async |c| c.batch_execute(&late).await).expect("postgres"),
            }
        }
    });
    iteration(store)?;
    assert!(
        bumped.load(Ordering::SeqCst),
        "{kind:?}: ran before its frontier"
    );
    straggler.join().expect("the straggler");
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Readers during a two-worker ingest.

/// Row `n` of batch `batch`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Entry {
    batch: i64,
    n: i64,
}

/// Rows per batch: more than one multi-row statement's worth, so a batch's
/// rows reach a table in several statements.
const BATCH: i64 = 1_100;
const BATCHES: i64 = 8;

/// Entries cached by batch, and their count cached (indexed by its value,
/// so a reader can see it with plain SQL): two tables that every iteration
/// writes together.
struct Ledger {
    graph: Graph,
    input: Input<Entry>,
    entries: Cache<Entry>,
    count: Cache<i64>,
}

fn ledger() -> Result<Ledger, GraphError> {
    let by_batch = Index::new("batch", |e: &Entry| e.batch);
    let by_total = Index::new("total", |n: &i64| *n);
    let (graph, (input, entries, count)) = Graph::build(|q| {
        let (input, x) = q.input::<Entry>("entries")?;
        // A pause in every iteration, so that readers see many states.
        let x = x.map(|e| {
            if e.n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            e.clone()
        });
        Ok((
            input,
            q.cache("entry_cache", x, &[&by_batch])?,
            q.cache("entry_count", x.count(), &[&by_total])?,
        ))
    })?;
    Ok(Ledger {
        graph,
        input,
        entries,
        count,
    })
}

/// One read of both caches through a store (in the order `count_first`
/// says), checking that whole batches are visible: every batch has all its
/// rows or none, and the count read before (after) the entries is at most
/// (at least) their number, both multiples of the batch size. Returns the
/// number of entries.
fn read_ledger(l: &Ledger, store: &mut dyn StateStore, count_first: bool) -> Result<i64, String> {
    let read_count = |store: &mut dyn StateStore| -> Result<i64, String> {
        let z = l.count.zset(store).map_err(|e| e.to_string())?;
        match z.iter().collect::<Vec<_>>()[..] {
            [] => Ok(0),
            [(n, 1)] => Ok(*n),
            ref other => Err(format!("the count cache holds {other:?}")),
        }
    };
    let read_entries = |store: &mut dyn StateStore| -> Result<i64, String> {
        let z = l.entries.zset(store).map_err(|e| e.to_string())?;
        let mut per_batch: BTreeMap<i64, i64> = BTreeMap::new();
        for (e, w) in z.iter() {
            if w != 1 {
                return Err(format!("{e:?} has weight {w}"));
            }
            *per_batch.entry(e.batch).or_default() += 1;
        }
        if let Some((batch, n)) = per_batch.iter().find(|(_, n)| **n != BATCH) {
            return Err(format!("batch {batch} is half there: {n} of {BATCH} rows"));
        }
        Ok(z.len() as i64)
    };
    let (count, entries) = if count_first {
        let c = read_count(store)?;
        let e = read_entries(store)?;
        if c > e {
            return Err(format!("count {c} read before {e} entries"));
        }
        (c, e)
    } else {
        let e = read_entries(store)?;
        let c = read_count(store)?;
        if c < e {
            return Err(format!("count {c} read after {e} entries"));
        }
        (c, e)
    };
    if count % BATCH != 0 || entries % BATCH != 0 {
        return Err(format!("{count} counted, {entries} entries"));
    }
    Ok(entries)
}

/// What one snapshot of the two tables (one read transaction of plain SQL)
/// shows: `sum(c)` of the entries, the count's key column, and the two
/// tables' `last_update` times.
fn check_snapshot(sum: i64, counts: &[i64], times: &[i64]) -> Result<(), String> {
    let count = match counts {
        [] => 0,
        [n] => *n,
        _ => return Err(format!("counts {counts:?}")),
    };
    if sum != count || sum % BATCH != 0 {
        return Err(format!("{sum} entries but a count of {count}"));
    }
    if times.len() == 2 && times[0] != times[1] {
        return Err(format!("the two tables were last updated at {times:?}"));
    }
    Ok(())
}

/// Runs the ingest of `BATCHES` batches on two workers (`open`) while
/// `read` polls from another thread, alternating the order of its reads;
/// checks every poll, and that the reader saw the ingest in progress.
fn race<S: StateStore>(
    l: &Ledger,
    open: impl Fn(usize) -> Result<S, GraphError> + Sync,
    times: &mut dyn parallel::TimeSource,
    read: impl FnMut(bool) -> Result<i64, String> + Send,
) -> Result<(), String> {
    let batches: Vec<Changes> = (0..BATCHES)
        .map(|b| Changes::new().insert(&l.input, (0..BATCH).map(|n| Entry { batch: b, n })))
        .collect();
    let done = AtomicBool::new(false);
    let mut read = read;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = BTreeSet::new();
            let mut polls = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let entries =
                    read(polls.is_multiple_of(2)).map_err(|e| format!("poll {polls}: {e}"))?;
                seen.insert(entries);
                polls += 1;
                if finished {
                    return Ok::<_, String>((polls, seen, entries));
                }
            }
        });
        let report = parallel::Ingest::new(&l.graph)
            .workers(2)
            .pipelined(false)
            .progress(parallel::Progress::Hidden)
            .run(open, batches, times);
        done.store(true, Ordering::SeqCst);
        let (polls, seen, last) = reader.join().expect("the reader thread")?;
        let report = report.map_err(|e| e.to_string())?;
        if !report.failures.is_empty() {
            return Err(format!("failed batches: {:?}", report.failures));
        }
        if last != BATCH * BATCHES {
            return Err(format!("the last read saw {last} entries"));
        }
        // The ingest was seen under way, not only before or after it.
        if seen.len() < 2 || polls < 3 {
            return Err(format!("{polls} polls saw only {seen:?}"));
        }
        eprintln!(
            "{polls} polls during {} saw {} states",
            report.summary(),
            seen.len()
        );
        Ok(())
    })
}

/// SQLite in WAL mode: two workers ingest into one file while a store of
/// its own on the same file reads both caches (and plain SQL reads both
/// tables in one read transaction); no read ever sees part of a batch.
#[test]
fn sqlite_readers_never_see_half_an_iteration_during_a_two_worker_ingest() -> R {
    let l = ledger()?;
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("ledger.db");
    let mut setup = store::Sqlite::open(&path, &l.graph, store::OpenOptions::default())?;
    let mut times = parallel::Counter::after(&mut setup)?;
    let names: BTreeMap<String, String> = setup.table_names().into_iter().collect();
    let (entries, count) = (&names["entry_cache"], &names["entry_count"]);
    let mut reader = store::Sqlite::open(&path, &l.graph, store::OpenOptions::attach())?;
    let snapshot = move |reader: &store::Sqlite| -> Result<(), String> {
        let tx = reader
            .connection()
            .unchecked_transaction()
            .map_err(|e| e.to_string())?;
        let sql = |e: rusqlite::Error| e.to_string();
        let sum: i64 = tx
            .query_row(
                &format!("SELECT coalesce(sum(c), 0) FROM {entries}"),
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let counts = tx
            .prepare(&format!("SELECT k_total FROM {count}"))
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()
            })
            .map_err(sql)?;
        let times = tx
            .prepare(&format!(
                "SELECT t FROM st_0_last_update WHERE table_name IN ('{entries}', '{count}')"
            ))
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()
            })
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        check_snapshot(sum, &counts, &times)
    };
    race(
        &l,
        |_worker| {
            store::Sqlite::open(&path, &l.graph, store::OpenOptions::attach()).map_err(Into::into)
        },
        &mut times,
        |count_first| {
            snapshot(&reader)?;
            read_ledger(&l, &mut reader, count_first)
        },
    )
    .unwrap_or_else(|e| panic!("SQLite: {e}"));
    Ok(())
}

/// Postgres: the same, the workers and the reader each with their own
/// store on the pool, plain SQL reading both tables in one repeatable-read
/// transaction.
#[test]
fn postgres_readers_never_see_half_an_iteration_during_a_two_worker_ingest() -> R {
    if pg_url().is_none() {
        return Ok(());
    }
    let l = ledger()?;
    let mut setup = Kind::Postgres.open(&l.graph)?;
    let prefix = setup.prefix().to_owned();
    let pg = setup.postgres().expect("a Postgres store");
    let pool = pg.connection_pool().clone();
    let names: BTreeMap<String, String> = pg.table_names().into_iter().collect();
    let (entries, count) = (names["entry_cache"].clone(), names["entry_count"].clone());
    let mut times = parallel::Counter::after(&mut *setup)?;
    let options = || store::OpenOptions {
        create_tables: false,
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let mut reader = store::Postgres::with_pool(pool.clone(), &l.graph, options())?;
    let url = pg_url().expect("configured");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::backend("a runtime", e))?;
    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    });
    let client = client.map_err(|e| StoreError::backend("connect", e))?;
    let last_update = format!("{prefix}0_last_update");
    let snapshot = || -> Result<(), String> {
        rt.block_on(async {
            let sql = |e: tokio_postgres::Error| e.to_string();
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(sql)?;
            let sum: i64 = client
                .query_one(
                    &format!("SELECT coalesce(sum(c), 0)::bigint FROM {entries}"),
                    &[],
                )
                .await
                .map_err(sql)?
                .get(0);
            let counts: Vec<i64> = client
                .query(&format!("SELECT k_total FROM {count}"), &[])
                .await
                .map_err(sql)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let times: Vec<i64> = client
                .query(
                    &format!("SELECT t FROM {last_update} WHERE table_name = ANY($1)"),
                    &[&vec![entries.clone(), count.clone()]],
                )
                .await
                .map_err(sql)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            client.batch_execute("COMMIT").await.map_err(sql)?;
            check_snapshot(sum, &counts, &times)
        })
    };
    race(
        &l,
        |_worker| store::Postgres::with_pool(pool.clone(), &l.graph, options()).map_err(Into::into),
        &mut times,
        |count_first| {
            snapshot()?;
            read_ledger(&l, &mut reader, count_first)
        },
    )
    .unwrap_or_else(|e| panic!("Postgres: {e}"));
    Ok(())
}
