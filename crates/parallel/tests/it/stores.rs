//! One shared store per test, opened once per worker.

use std::time::Duration;

use graph::{Graph, GraphError, StateStore};

/// The stores the parallel tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

pub(crate) fn pg_url() -> Option<String> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match std::env::var("STEPPING_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STEPPING_REQUIRE_PG").map_or(true, |v| v != "1"),
                "STEPPING_REQUIRE_PG is set but STEPPING_TEST_PG is not"
            );
            WARNED.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr()
                    .write_all(b"\n*** SKIPPING POSTGRES: STEPPING_TEST_PG is not set (run `cargo xtask test`) ***\n\n");
            });
            None
        }
    }
}

pub(crate) fn kinds() -> Vec<Kind> {
    let mut k = vec![Kind::Memory, Kind::Sqlite];
    if pg_url().is_some() {
        k.push(Kind::Postgres);
    }
    k
}

/// A store's shared state that workers open handles on.
pub(crate) enum Shared {
    Memory(store::Memory),
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        options: store::OpenOptions,
    },
    Postgres {
        pool: store::PgPool,
        options: store::OpenOptions,
    },
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Leave no tables behind on a long-lived server.
        if let Shared::Postgres { options, .. } = self
            && let Some(url) = pg_url()
            && let Err(e) = benches::pg::drop_tables_with_prefix(&url, &options.prefix)
        {
            eprintln!("could not drop the tables {}*: {e}", options.prefix);
        }
    }
}

/// One handle, whatever the store.
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

impl StateStore for Handle {
    fn fingerprint(&self) -> &str {
        (**self).fingerprint()
    }
    fn begin(
        &mut self,
        time: graph::Time,
    ) -> Result<Box<dyn graph::StateTx + '_>, graph::StoreError> {
        (**self).begin(time)
    }
    fn next_time(&mut self) -> Result<i64, graph::StoreError> {
        (**self).next_time()
    }
    fn begin_next(&mut self) -> Result<Box<dyn graph::StateTx + '_>, graph::StoreError> {
        (**self).begin_next()
    }
    fn last_time(&mut self) -> Result<i64, graph::StoreError> {
        (**self).last_time()
    }
    fn read_committed(
        &mut self,
        spec: &graph::StateSpec,
        read: &graph::Read<'_>,
        sink: &mut dyn std::any::Any,
    ) -> Result<(), graph::StoreError> {
        (**self).read_committed(spec, read, sink)
    }
    fn record_failure(
        &mut self,
        time: graph::Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<graph::FailedBatch, graph::StoreError> {
        (**self).record_failure(time, batch, changes, error)
    }
    fn failed_batches(&mut self) -> Result<Vec<graph::FailedBatch>, graph::StoreError> {
        (**self).failed_batches()
    }
    fn forget_failure(&mut self, input_time: i64) -> Result<(), graph::StoreError> {
        (**self).forget_failure(input_time)
    }
    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<graph::Time>,
    ) -> Result<Box<dyn graph::StateTx + '_>, graph::StoreError> {
        (**self).begin_retry(failed_input_time, time)
    }
    fn recover(&mut self) -> Result<Vec<graph::Rewound>, graph::StoreError> {
        (**self).recover()
    }
    fn state_rows(&mut self, spec: &graph::StateSpec) -> Result<u64, graph::StoreError> {
        (**self).state_rows(spec)
    }
}

fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("p{:x}_{n:x}_", std::process::id())
}

impl Shared {
    pub(crate) fn new(kind: Kind, graph: &Graph) -> Result<Shared, GraphError> {
        let d = store::OpenOptions::default();
        Shared::with_wait(kind, graph, d.max_wait, d.poll)
    }

    /// A fresh store (tables created) with the given waits.
    pub(crate) fn with_wait(
        kind: Kind,
        graph: &Graph,
        max_wait: Duration,
        poll: (Duration, Duration),
    ) -> Result<Shared, GraphError> {
        Ok(match kind {
            Kind::Memory => Shared::Memory(store::Memory::new(graph).with_max_wait(max_wait)),
            Kind::Sqlite => {
                let dir =
                    tempfile::tempdir().map_err(|e| graph::StoreError::backend("tempdir", e))?;
                let path = dir.path().join("p.db");
                let options = store::OpenOptions {
                    max_wait,
                    poll,
                    ..store::OpenOptions::default()
                };
                drop(store::Sqlite::open(&path, graph, options.clone())?);
                Shared::Sqlite {
                    _dir: dir,
                    path,
                    options: store::OpenOptions {
                        create_tables: false,
                        ..options
                    },
                }
            }
            Kind::Postgres => {
                let url = pg_url().expect("configured");
                let pool = store::Postgres::pool(&url, 24)?;
                let options = store::OpenOptions {
                    prefix: unique_prefix(),
                    max_wait,
                    poll,
                    ..store::OpenOptions::default()
                };
                drop(store::Postgres::with_pool(
                    pool.clone(),
                    graph,
                    options.clone(),
                )?);
                Shared::Postgres {
                    pool,
                    options: store::OpenOptions {
                        create_tables: false,
                        ..options
                    },
                }
            }
        })
    }

    /// A handle for one worker.
    pub(crate) fn open(&self, graph: &Graph) -> Result<Handle, GraphError> {
        Ok(match self {
            Shared::Memory(m) => Handle::Memory(m.handle()),
            Shared::Sqlite { path, options, .. } => {
                Handle::Sqlite(Box::new(store::Sqlite::open(path, graph, options.clone())?))
            }
            Shared::Postgres { pool, options } => Handle::Postgres(Box::new(
                store::Postgres::with_pool(pool.clone(), graph, options.clone())?,
            )),
        })
    }
}
