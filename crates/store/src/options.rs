//! How a store is opened.

use std::time::Duration;

/// How a SQL store is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Create missing tables (default `true`). With `false`, a missing
    /// table is an error: the way to attach to state written by another
    /// process ("weeks later, in another service, read the cache").
    pub create_tables: bool,
    /// Prefix of every table name (default `st_`), so that state tables sit
    /// beside the application's own: `[a-z0-9_]`, starting with a letter.
    pub prefix: String,
    /// How long an iteration waits for its frontier (default 30 s).
    pub max_wait: Duration,
    /// The first and longest pause between two polls of a frontier (default
    /// 1 ms and 100 ms, doubling in between). Waiters also wake as soon as
    /// another worker of the same process commits (SQLite), or when the
    /// database notifies them (Postgres `LISTEN`/`NOTIFY`), so polling is
    /// only the fallback.
    pub poll: (Duration, Duration),
    /// When the store holds the state of another version of the query:
    /// migrate it (default `false`: refuse with
    /// [`StoreError::QueryChanged`], carrying the plan). See
    /// [`migrate`](Self::migrate).
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create_tables: true,
            prefix: "st_".into(),
            max_wait: Duration::from_secs(30),
            poll: (Duration::from_millis(1), Duration::from_millis(100)),
            migrate: false,
        }
    }
}

impl OpenOptions {
    /// Migrate a store written by another version of the query, in one
    /// transaction: states the query computes as before are kept (no row
    /// rewritten); new and changed ones are computed from the inputs the
    /// store keeps and stamped with its current time; dropped ones'
    /// tables are removed. The plan carried out is the store's
    /// `migration()`.
    pub fn migrate(self) -> Self {
        OpenOptions {
            migrate: true,
            ..self
        }
    }

    /// Attach to existing tables only.
    pub fn attach() -> Self {
        OpenOptions {
            create_tables: false,
            ..OpenOptions::default()
        }
    }
}
