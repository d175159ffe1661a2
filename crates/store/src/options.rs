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
    /// [`StoreError::QueryChanged`](crate::StoreError::QueryChanged), carrying the plan). See
    /// [`migrate`](Self::migrate).
    pub migrate: bool,
    /// When migrating: leave the tables of dropped states in place
    /// (default `false`: drop them). They leave the store's records, so
    /// they are the application's to read or drop; a later state of the
    /// same name cannot be created while one is there.
    pub keep_dropped: bool,
    /// Called at each step of a migration (see
    /// [`on_migration_step`](Self::on_migration_step)); default none.
    pub migration_steps: Option<MigrationSteps>,
    /// Postgres: every 32 iterations, vacuum (in the background) the
    /// store's tables holding more dead rows than a fifth of their live
    /// ones (default `true`). A state whose rows are replaced as data
    /// arrives (a daily sum and its cache) deletes a row per change, and
    /// autovacuum, which looks once a minute, leaves such a table many
    /// times its size in between. `false` leaves vacuuming to the
    /// application and autovacuum. Ignored by the other stores.
    pub vacuum: bool,
}

/// A function called with the name of each step of a migration as it is
/// reached (see [`OpenOptions::on_migration_step`]).
#[derive(Clone)]
pub struct MigrationSteps(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for MigrationSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MigrationSteps(..)")
    }
}

/// Reports `step` to `steps`, if any.
pub(crate) fn report_step(steps: &Option<MigrationSteps>, step: &str) {
    if let Some(MigrationSteps(f)) = steps {
        f(step);
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create_tables: true,
            prefix: "st_".into(),
            max_wait: Duration::from_secs(30),
            poll: (Duration::from_millis(1), Duration::from_millis(100)),
            migrate: false,
            keep_dropped: false,
            migration_steps: None,
            vacuum: true,
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

    /// When migrating, leave the tables of dropped states in place (see
    /// [`keep_dropped`](Self::keep_dropped)).
    pub fn keep_dropped_tables(self) -> Self {
        OpenOptions {
            keep_dropped: true,
            ..self
        }
    }

    /// Calls `f` with the name of each step of a migration as it is
    /// reached, inside the migration's transaction (`locked`, `rewound`,
    /// `renamed`, `computed`, `dropped`, `wrote <table>` per computed
    /// state, `recorded`, `committing`), then `committed` after it: to show
    /// progress, or for a test to stop the process at a chosen step (a
    /// kill at any step leaves the old query's state, until `committed`).
    pub fn on_migration_step(self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        OpenOptions {
            migration_steps: Some(MigrationSteps(std::sync::Arc::new(f))),
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
