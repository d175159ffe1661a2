//! A store for one run, the handles opened on it, and Postgres housekeeping.

use std::path::PathBuf;

use graph::{Graph, StateStore};

use super::{BoxError, Config, Kind};

/// A store for one run, and what is needed to open more handles on it.
pub(super) struct Target {
    pub(super) kind: Kind,
    pub(super) file: PathBuf,
    pub(super) prefix: String,
    pub(super) pool: Option<store::PgPool>,
    pub(super) memory: Option<store::Memory>,
}

impl Target {
    pub(super) fn new(
        kind: Kind,
        config: &Config,
        graph: &Graph,
        tag: &str,
    ) -> Result<Target, BoxError> {
        let file = config.scratch.join(format!("bench-{tag}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let mut p = file.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        let prefix = format!("b_{tag}_");
        let pool = match (kind, &config.postgres) {
            (Kind::Postgres, Some(url)) => Some(store::Postgres::pool(url, 8)?),
            _ => None,
        };
        let memory = (kind == Kind::Memory).then(|| store::Memory::new(graph));
        let target = Target {
            kind,
            file,
            prefix,
            pool,
            memory,
        };
        if let (Some(_), Some(url)) = (&target.pool, &config.postgres) {
            // Start from empty tables, whatever version of the bench left
            // them (a store opened on another version's tables would refuse
            // the query before it could drop them).
            crate::pg::drop_tables_with_prefix(url, &target.prefix).map_err(|e| e.to_string())?;
        }
        Ok(target)
    }

    pub(super) fn options(&self, create: bool) -> store::OpenOptions {
        store::OpenOptions {
            create_tables: create,
            prefix: self.prefix.clone(),
            ..Default::default()
        }
    }

    pub(super) fn open(&self, graph: &Graph) -> Result<Box<dyn StateStore>, graph::GraphError> {
        Ok(match self.kind {
            Kind::Memory => Box::new(
                self.memory
                    .as_ref()
                    .map(store::Memory::handle)
                    .ok_or_else(|| graph::StoreError::backend("memory", "no memory store"))?,
            ),
            Kind::Sqlite => Box::new(store::Sqlite::open(&self.file, graph, self.options(true))?),
            Kind::Postgres => {
                let pool = self
                    .pool
                    .clone()
                    .ok_or_else(|| graph::StoreError::backend("postgres", "no pool"))?;
                Box::new(store::Postgres::with_pool(pool, graph, self.options(true))?)
            }
        })
    }

    /// Opens the store and a way to read its counters (SQL stores only).
    pub(super) fn open_counted(&self, graph: &Graph) -> Result<Counted, graph::GraphError> {
        let options = self.options(true);
        Ok(match self.kind {
            Kind::Sqlite => {
                Counted::Sqlite(Box::new(store::Sqlite::open(&self.file, graph, options)?))
            }
            Kind::Postgres => {
                let pool = self
                    .pool
                    .clone()
                    .ok_or_else(|| graph::StoreError::backend("postgres", "no pool"))?;
                Counted::Postgres(Box::new(store::Postgres::with_pool(pool, graph, options)?))
            }
            Kind::Memory => Counted::Uncounted(self.open(graph)?),
        })
    }

    /// Postgres: the server's execution time of the store's one-date cache
    /// read (the query the store runs for `iter_by_index` with one key),
    /// from `EXPLAIN ANALYZE`, median of 5, in µs.
    pub(super) fn cache_read_server_us(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Option<f64>, BoxError> {
        let Some(pool) = self.pool.as_ref().filter(|_| self.kind == Kind::Postgres) else {
            return Ok(None);
        };
        let sql = format!(
            "EXPLAIN ANALYZE SELECT t.identity, t.data, t.c FROM {}daily_cache AS t \
             JOIN unnest(ARRAY['{date}']::date[]) AS k(k0) ON t.k_date = k.k0",
            self.prefix
        );
        let mut times = pg(pool, async move |c| {
            let mut times = Vec::new();
            for _ in 0..5 {
                let mut ms = None;
                for line in c.query(&sql, &[]).await? {
                    let line: &str = line.try_get(0)?;
                    if let Some(t) = line.strip_prefix("Execution Time: ") {
                        ms = t.trim_end_matches(" ms").parse::<f64>().ok();
                    }
                }
                times.push(ms.ok_or("EXPLAIN ANALYZE gave no execution time")? * 1e3);
            }
            Ok(times)
        })?;
        times.sort_by(f64::total_cmp);
        Ok(Some(times[times.len() / 2]))
    }

    /// Bytes the state occupies on disk.
    pub(super) fn bytes(&self) -> Result<Option<u64>, BoxError> {
        Ok(match self.kind {
            Kind::Memory => None,
            Kind::Sqlite => {
                let conn = rusqlite::Connection::open(&self.file)?;
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                Some(std::fs::metadata(&self.file)?.len())
            }
            Kind::Postgres => {
                let pool = self.pool.as_ref().ok_or("no pool")?;
                let like = format!("{}%", self.prefix);
                Some(pg(pool, async move |c| {
                    let row = c
                        .query_one(
                            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                             WHERE c.relkind = 'r' AND c.relname LIKE $1",
                            &[&like],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0) as u64)
                })?)
            }
        })
    }
}

/// A store whose rows written can be counted, if it is a SQL store.
pub(super) enum Counted {
    Sqlite(Box<store::Sqlite>),
    Postgres(Box<store::Postgres>),
    Uncounted(Box<dyn StateStore>),
}

impl Counted {
    pub(super) fn store(&mut self) -> &mut dyn StateStore {
        match self {
            Counted::Sqlite(s) => &mut **s,
            Counted::Postgres(s) => &mut **s,
            Counted::Uncounted(s) => &mut **s,
        }
    }

    pub(super) fn stats(&self) -> Option<store::StoreStats> {
        match self {
            Counted::Sqlite(s) => Some(s.stats()),
            Counted::Postgres(s) => Some(s.stats()),
            Counted::Uncounted(_) => None,
        }
    }

    pub(super) fn reset_stats(&self) {
        match self {
            Counted::Sqlite(s) => s.reset_stats(),
            Counted::Postgres(s) => s.reset_stats(),
            Counted::Uncounted(_) => {}
        }
    }
}

/// Runs `f` on a pooled Postgres connection, on a runtime of the bench's own.
pub(super) fn pg<T>(
    pool: &store::PgPool,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, BoxError>,
) -> Result<T, BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // A fresh connection, not one of the store's (those live on its runtime).
        let config = pool_config(pool)?;
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        let out = f(&client).await;
        drop(client);
        let _ = task.await;
        out
    })
}

pub(super) fn pool_config(pool: &store::PgPool) -> Result<tokio_postgres::Config, BoxError> {
    Ok(pool.connection_config().clone())
}
