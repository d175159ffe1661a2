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

mod codecs;
mod connections;
mod damaged;
mod frontier;
mod readers;
mod values;

use std::panic::{AssertUnwindSafe, catch_unwind};

use graph::StateStore;
use operators::prelude::*;
use store::StoreError;

use crate::harness::{Kind, Opened, with_pg_client};

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
