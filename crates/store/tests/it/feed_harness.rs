//! Opening several handles of one test store from several threads, as
//! feed consumers and parallel workers need: an `Opener` is `Send + Sync`
//! (a memory store's handle, a SQLite file's path, a Postgres prefix).

use graph::{FeedStore, Graph, GraphError, StateStore};

use crate::harness::{Kind, Opened, pg_pool};

/// How to open another handle of an [`Opened`] store.
#[derive(Clone)]
pub(crate) enum Opener {
    Memory(store::Memory),
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// A store handle that is both a state store and a feed store.
pub(crate) trait Both: StateStore + FeedStore + Send {}
impl<S: StateStore + FeedStore + Send> Both for S {}

impl Opener {
    pub(crate) fn of(opened: &Opened, kind: Kind) -> Opener {
        match kind {
            Kind::Memory => Opener::Memory(opened.memory().expect("a memory store").handle()),
            Kind::Sqlite => Opener::Sqlite(opened.sqlite().expect("a SQLite store").path().into()),
            Kind::Postgres => Opener::Postgres(opened.prefix().to_owned()),
        }
    }

    /// Another handle, as another process would open it.
    pub(crate) fn open(&self, graph: &Graph) -> Result<Box<dyn Both>, GraphError> {
        self.open_with(graph, store::OpenOptions::default())
    }

    /// Another handle, opened with `options` (their prefix replaced).
    pub(crate) fn open_with(
        &self,
        graph: &Graph,
        options: store::OpenOptions,
    ) -> Result<Box<dyn Both>, GraphError> {
        Ok(match self {
            Opener::Memory(m) => Box::new(m.handle()),
            Opener::Sqlite(path) => Box::new(store::Sqlite::open(path, graph, options)?),
            Opener::Postgres(prefix) => Box::new(store::Postgres::with_pool(
                pg_pool().expect("a Postgres store was opened"),
                graph,
                store::OpenOptions {
                    prefix: prefix.clone(),
                    ..options
                },
            )?),
        })
    }
}
