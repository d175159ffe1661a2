//! Migrations between versions of a query, on every store: random pairs of
//! queries checked against the oracle after every batch (`pairs`), and a
//! worker still running the old query while and after another process
//! migrates (`during`).
//!
//! [`Place`] is where a test's store lives, opened by several "processes"
//! (handles): a memory store shared through `handle()`, a SQLite file or a
//! Postgres prefix.

mod during;
mod pairs;
mod regressions;

use graph::{Graph, GraphError, StateStore, StoreError};
use std::sync::Mutex;
use store::Verifiable;

use crate::harness::Kind;

/// Where a test's store lives.
pub(crate) enum Place {
    /// The current handle (after a migration: of the new query).
    Memory(Mutex<store::Memory>),
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Drop for Place {
    fn drop(&mut self) {
        if let (Place::Postgres(prefix), Some(url)) = (&*self, crate::harness::pg_url()) {
            let _ = benches::pg::drop_tables_with_prefix(&url, prefix);
        }
    }
}

/// One handle on a [`Place`], as one process holds it.
pub(crate) enum Handle {
    Memory(store::Memory),
    Sqlite(Box<store::Sqlite>),
    Postgres(Box<store::Postgres>),
}

impl std::ops::Deref for Handle {
    type Target = dyn StateStore;
    fn deref(&self) -> &Self::Target {
        match self {
            Handle::Memory(s) => s,
            Handle::Sqlite(s) => &**s,
            Handle::Postgres(s) => &**s,
        }
    }
}

impl std::ops::DerefMut for Handle {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Handle::Memory(s) => s,
            Handle::Sqlite(s) => &mut **s,
            Handle::Postgres(s) => &mut **s,
        }
    }
}

impl Handle {
    /// Every state computed again from the kept inputs and compared.
    pub(crate) fn verify(&mut self) -> Result<store::Verification, StoreError> {
        match self {
            Handle::Memory(s) => s.verify(),
            Handle::Sqlite(s) => s.verify(),
            Handle::Postgres(s) => s.verify(),
        }
    }

    /// State rows written since the handle opened (SQL stores; `None` on
    /// memory, which counts no writes).
    pub(crate) fn rows_written(&self) -> Option<u64> {
        match self {
            Handle::Memory(_) => None,
            Handle::Sqlite(s) => Some(s.stats().rows_written),
            Handle::Postgres(s) => Some(s.stats().rows_written),
        }
    }
}

/// The migration a handle's open carried out.
pub(crate) struct Migrated {
    pub(crate) handle: Handle,
    pub(crate) plan: graph::MigrationPlan,
}

impl Place {
    /// A new, empty place for `graph`'s store.
    pub(crate) fn new(kind: Kind, graph: &Graph) -> Result<Place, GraphError> {
        Ok(match kind {
            Kind::Memory => Place::Memory(Mutex::new(store::Memory::new(graph))),
            Kind::Sqlite => {
                Place::Sqlite(tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?)
            }
            Kind::Postgres => Place::Postgres(crate::harness::unique_prefix()),
        })
    }

    fn options(&self) -> store::OpenOptions {
        match self {
            Place::Postgres(prefix) => store::OpenOptions {
                prefix: prefix.clone(),
                ..store::OpenOptions::default()
            },
            _ => store::OpenOptions::default(),
        }
    }

    /// A handle for `graph`, the version of the query the store holds (or
    /// none yet): refused with `QueryChanged` if the store holds another.
    pub(crate) fn open(&self, graph: &Graph) -> Result<Handle, GraphError> {
        self.open_with(graph, self.options())
    }

    fn open_with(&self, graph: &Graph, options: store::OpenOptions) -> Result<Handle, GraphError> {
        Ok(match self {
            Place::Memory(m) => {
                let handle = m.lock().expect("lock").handle();
                if handle.fingerprint() != graph.fingerprint() {
                    return Err(StoreError::backend(
                        "opening a memory store",
                        "it holds another version of the query (migrate it)",
                    )
                    .into());
                }
                Handle::Memory(handle)
            }
            Place::Sqlite(dir) => Handle::Sqlite(Box::new(store::Sqlite::open(
                dir.path().join("state.db"),
                graph,
                options,
            )?)),
            Place::Postgres(_) => {
                let pool = crate::harness::pg_pool().expect("Postgres is configured");
                Handle::Postgres(Box::new(store::Postgres::with_pool(pool, graph, options)?))
            }
        })
    }

    /// Migrates the store to `graph` as another process would: an open
    /// with `OpenOptions::migrate` (memory: `Memory::migrate` on a new
    /// handle, which every later `open` shares).
    pub(crate) fn migrate(&self, graph: &Graph) -> Result<Migrated, GraphError> {
        if let Place::Memory(m) = self {
            let mut handle = m.lock().expect("lock").handle();
            let plan = handle.migrate(graph)?;
            *m.lock().expect("lock") = handle.handle();
            return Ok(Migrated {
                handle: Handle::Memory(handle),
                plan,
            });
        }
        let handle = self.open_with(graph, self.options().migrate())?;
        let plan = match &handle {
            Handle::Sqlite(s) => s.migration().cloned(),
            Handle::Postgres(s) => s.migration().cloned(),
            Handle::Memory(_) => None,
        }
        .unwrap_or_default();
        Ok(Migrated { handle, plan })
    }
}

/// Whether `e` is the typed refusal of a handle whose query changed.
pub(crate) fn is_query_changed(e: &GraphError) -> bool {
    matches!(e, GraphError::Store(StoreError::QueryChanged { .. }))
}
