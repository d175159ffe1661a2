//! Creating, checking and migrating a prefix's tables: the recorded shapes and
//! legacy names.

use graph::StoreError;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::Sqlite;
use super::encode::{SqliteDialect, backend};
use crate::sql::{self, OwnNames, SqlRead, TableSchema};

impl Sqlite {
    /// Creates or checks every table; returns how many were created.
    pub(super) fn prepare_tables(&mut self, create: bool) -> Result<usize, StoreError> {
        let (tables, last_update) = self.meta();
        // An open that may create takes the write lock before it reads what
        // exists, so that opens of one file from several connections take
        // turns (waiting in the busy handler). A transaction that read first
        // could not write once another connection had committed: SQLite
        // fails it with `database is locked` at once, without waiting.
        // So does one that renames an earlier version's tables (checked
        // again once it holds the lock).
        let behavior = if create || !legacy_renames(&self.conn, &self.prefix)?.is_empty() {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = Transaction::new_unchecked(&self.conn, behavior)
            .map_err(backend("starting to create tables"))?;
        for l in legacy_renames(&tx, &self.prefix)? {
            tx.execute_batch(&format!("ALTER TABLE {} RENAME TO {}", l.old, l.new))
                .map_err(backend(format!("renaming `{}` to `{}`", l.old, l.new)))?;
        }
        if create {
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {tables} (table_name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT NOT NULL, shape TEXT NOT NULL, definition TEXT NOT NULL DEFAULT '');
                 CREATE TABLE IF NOT EXISTS {last_update} (table_name TEXT PRIMARY KEY, t INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS {query} (table_name TEXT PRIMARY KEY);",
                query = self.query_table()
            ))
            .map_err(backend("creating the metadata tables"))?;
            let columns: Vec<String> = tx
                .prepare(&format!("SELECT name FROM pragma_table_info('{tables}')"))
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .map_err(backend(format!("reading the columns of `{tables}`")))?;
            if !columns.iter().any(|c| c == "definition") {
                // Written by a version that kept no definitions.
                tx.execute_batch(&format!(
                    "ALTER TABLE {tables} ADD COLUMN definition TEXT NOT NULL DEFAULT ''"
                ))
                .map_err(backend(format!("adding definitions to `{tables}`")))?;
            }
            let plan = self.plan()?;
            let written: bool = tx
                .query_row(
                    &format!("SELECT EXISTS (SELECT 1 FROM {last_update} WHERE t > 0)"),
                    [],
                    |r| r.get(0),
                )
                .map_err(backend(format!("reading `{last_update}`")))?;
            if written && !plan.is_unchanged() {
                if !self.migrate {
                    return Err(StoreError::QueryChanged {
                        plan: Box::new(plan),
                    });
                }
                self.step("locked");
                let done = self.migrate_in(plan)?;
                self.record_query()?;
                self.create_views()?;
                self.step("recorded");
                // Handles opened before the migration refuse to go on.
                tx.execute(
                    &format!(
                        "INSERT INTO {last_update} (table_name, t) VALUES (?, 1) \
                         ON CONFLICT (table_name) DO UPDATE SET t = t + 1"
                    ),
                    [self.query_table()],
                )
                .map_err(backend("recording the migration"))?;
                self.generation = self.read_generation()?;
                self.step("committing");
                tx.commit().map_err(backend("committing a migration"))?;
                self.step("committed");
                self.migration = Some(done);
                return Ok(0);
            }
        }
        // (Metadata that cannot be read is left to the table checks below,
        // which name the table.)
        if !create
            && self.records_definitions()?
            && let Ok(plan) = self.plan()
        {
            sql::reader_refusal(plan)?;
        }
        let mut created = 0;
        for schema in &self.schemas {
            if check_table(&tx, &tables, schema)? {
                continue;
            }
            if !create {
                return Err(StoreError::MissingTable {
                    table: schema.name.clone(),
                    path: schema.path.clone(),
                });
            }
            self.create_table(schema, 0)?;
            created += 1;
        }
        if create {
            self.record_query()?;
            self.create_views()?;
        }
        // In the transaction that checked the tables: a migration by
        // another process after it is seen at this handle's next write.
        self.generation = self.read_generation()?;
        tx.commit().map_err(backend("committing new tables"))?;
        Ok(created)
    }

    /// Creates `schema`'s table and records it, at time `t`.
    pub(super) fn create_table(&self, schema: &TableSchema, t: i64) -> Result<(), StoreError> {
        let (tables, last_update) = self.meta();
        for stmt in sql::create_statements(&SqliteDialect, schema) {
            self.conn
                .execute_batch(&stmt)
                .map_err(backend(format!("creating `{}`", schema.name)))?;
        }
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {tables} (table_name, path, kind, shape) VALUES (?, ?, ?, ?)"
                ),
                (
                    &schema.name,
                    &schema.path,
                    schema.kind.name(),
                    &schema.shape,
                ),
            )
            .and_then(|_| {
                self.conn.execute(
                    &format!("INSERT OR IGNORE INTO {last_update} (table_name, t) VALUES (?, ?)"),
                    (&schema.name, t),
                )
            })
            .map(|_| ())
            .map_err(backend(format!("recording `{}`", schema.name)))
    }

    /// Creates the view of every cache, unless it is there already as this
    /// version makes it: changing the schema makes every other connection
    /// prepare its statements again.
    pub(super) fn create_views(&self) -> Result<(), StoreError> {
        for schema in &self.schemas {
            let (Some(view), Some(select)) = (&schema.view, schema.view_select()) else {
                continue;
            };
            let create = format!("CREATE VIEW {view} AS {select}");
            let made: Option<String> = self
                .conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?",
                    [view],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend("reading sqlite_master"))?;
            if made.as_deref() == Some(create.as_str()) {
                continue;
            }
            self.conn
                .execute_batch(&format!("DROP VIEW IF EXISTS {view}; {create}"))
                .map_err(backend(format!("creating the view `{view}`")))?;
        }
        Ok(())
    }

    /// The table listing the state tables of the query that last wrote
    /// this store.
    pub(super) fn query_table(&self) -> String {
        OwnNames::name(&self.prefix, "query")
    }

    /// Whether the store records definitions (a store written by an
    /// earlier version does not).
    pub(super) fn records_definitions(&self) -> Result<bool, StoreError> {
        let (tables, _) = self.meta();
        self.conn
            .query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM pragma_table_info('{tables}') WHERE name = 'definition') \
                     + (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?)"
                ),
                [self.query_table()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 2)
            .map_err(backend(format!("reading the columns of `{tables}`")))
    }

    /// How the store's recorded states compare with this graph's.
    pub(super) fn plan(&self) -> Result<graph::MigrationPlan, StoreError> {
        let (tables, _) = self.meta();
        let recorded: Vec<sql::Recorded> = self
            .conn
            .prepare(&format!(
                "SELECT table_name, path, shape, definition FROM {tables}"
            ))
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(sql::Recorded {
                        table: r.get(0)?,
                        path: r.get(1)?,
                        shape: r.get(2)?,
                        definition: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(backend(format!("reading `{tables}`")))?;
        let query: Vec<String> = self
            .conn
            .prepare(&format!("SELECT table_name FROM {}", self.query_table()))
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(backend("reading the query's tables"))?;
        Ok(sql::plan(
            &self.schemas,
            &self.specs,
            &recorded,
            &query,
            &self.prefix,
        ))
    }

    /// Records this graph as the store's query: its tables, and each one's
    /// definition.
    pub(super) fn record_query(&self) -> Result<(), StoreError> {
        let (tables, _) = self.meta();
        let query = self.query_table();
        self.conn
            .execute(&format!("DELETE FROM {query}"), [])
            .map_err(backend("recording the query's tables"))?;
        for (schema, spec) in self.schemas.iter().zip(&self.specs) {
            self.conn
                .execute(
                    &format!("UPDATE {tables} SET definition = ? WHERE table_name = ?"),
                    (spec.definition(), &schema.name),
                )
                .and_then(|_| {
                    self.conn.execute(
                        &format!("INSERT INTO {query} (table_name) VALUES (?)"),
                        [&schema.name],
                    )
                })
                .map_err(backend(format!("recording `{}`", schema.name)))?;
        }
        Ok(())
    }

    /// The rows of an input's `table`, stored as its old row type, carried
    /// over to the new one by `migrate` into `sink`.
    fn migrated_rows(
        &self,
        table: &str,
        migrate: &graph::InputMigration,
        sink: &mut dyn std::any::Any,
    ) -> Result<(), StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT identity, data, c FROM {table}"))
            .map_err(backend(format!("reading `{table}`")))?;
        let mut rows = st
            .query([])
            .map_err(backend(format!("reading `{table}`")))?;
        while let Some(r) = rows.next().map_err(backend(format!("reading `{table}`")))? {
            let (identity, data, weight): (i64, Vec<u8>, i64) =
                (|| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))()
                    .map_err(backend(format!("reading `{table}`")))?;
            migrate(&data, weight, sink)
                .map_err(|detail| sql::unmigratable(table, identity, detail))?;
        }
        Ok(())
    }

    /// The row type (see `sql::row_type`) the store recorded for `table`.
    fn recorded_row_type(&self, table: &str) -> Result<Option<String>, StoreError> {
        let (tables, _) = self.meta();
        let shape: Option<String> = self
            .conn
            .query_row(
                &format!("SELECT shape FROM {tables} WHERE table_name = ?"),
                [table],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend(format!("reading `{tables}`")))?;
        Ok(shape.map(|s| sql::row_type(&s).to_owned()))
    }

    /// The rows of state `s`'s table as stored under its recorded shape
    /// (the same row type, other indexes), decoded into `sink`.
    fn reindexed_rows(&self, s: usize, sink: &mut dyn std::any::Any) -> Result<(), StoreError> {
        let table = &self.schemas[s].name;
        let codec = self.specs[s].codec();
        let mut st = self
            .conn
            .prepare(&format!("SELECT identity, data, c FROM {table}"))
            .map_err(backend(format!("reading `{table}`")))?;
        let mut rows = st
            .query([])
            .map_err(backend(format!("reading `{table}`")))?;
        while let Some(r) = rows.next().map_err(backend(format!("reading `{table}`")))? {
            let (identity, data, weight): (i64, Vec<u8>, i64) =
                (|| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))()
                    .map_err(backend(format!("reading `{table}`")))?;
            codec
                .decode(&data, weight, 0, sink)
                .map_err(|detail| StoreError::Corrupt {
                    table: table.clone(),
                    identity: identity.to_string(),
                    detail,
                })?;
        }
        Ok(())
    }

    /// Renames the table of the state at `from` to `table`, the table of
    /// the same state under its new path, with its indexes and records.
    fn rename_table(&self, from: &str, table: &str) -> Result<(), StoreError> {
        let (tables, last_update) = self.meta();
        let Some(s) = self.schemas.iter().position(|x| x.name == table) else {
            return Ok(());
        };
        let new = &self.schemas[s];
        let old = TableSchema::at(&self.specs[s], from, &self.prefix, &SqliteDialect);
        for stmt in sql::rename_statements(&SqliteDialect, &old, new) {
            self.conn
                .execute_batch(&stmt)
                .map_err(backend(format!("renaming `{}` to `{table}`", old.name)))?;
        }
        self.conn
            .execute(
                &format!(
                    "UPDATE {tables} SET table_name = ?, path = ?, shape = ? WHERE table_name = ?"
                ),
                (table, &new.path, &new.shape, &old.name),
            )
            .and_then(|_| {
                self.conn.execute(
                    &format!("UPDATE {last_update} SET table_name = ? WHERE table_name = ?"),
                    (table, &old.name),
                )
            })
            .map(|_| ())
            .map_err(backend(format!("recording `{table}`")))
    }

    /// Rewinds, through their undo entries, the tables of the store's
    /// (old) query that a pipelined iteration left ahead of the others
    /// (one interrupted half way, or still under way in a process whose
    /// next flush then fails with `QueryChanged`), and returns the time
    /// every table of the old query is then at. A table to drop or compute
    /// again only has its time moved back; an input read under its old row
    /// type cannot be rewound (`InterruptedIteration`).
    pub(super) fn rewind_interrupted(
        &self,
        plan: &graph::MigrationPlan,
    ) -> Result<i64, StoreError> {
        let (_, last_update) = self.meta();
        let query = self.query_table();
        let undo = self.undo_table();
        let ctx = || backend(format!("reading `{last_update}`"));
        let times: Vec<(String, i64)> = self
            .conn
            .prepare(&format!(
                "SELECT l.table_name, l.t FROM {last_update} l JOIN {query} q ON q.table_name = l.table_name"
            ))
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(ctx())?;
        let Some(low) = times.iter().map(|(_, t)| *t).min() else {
            // Written by a version that recorded no query: its latest time.
            return self
                .conn
                .query_row(
                    &format!("SELECT coalesce(max(t), 0) FROM {last_update} WHERE table_name <> ?"),
                    [&query],
                    |r| r.get(0),
                )
                .map_err(ctx());
        };
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {undo} (t INTEGER NOT NULL, table_name TEXT NOT NULL, \
                 rows BLOB NOT NULL, PRIMARY KEY (t, table_name))"
            ))
            .map_err(backend("creating the undo table"))?;
        for (table, at) in times.iter().filter(|(_, t)| *t > low) {
            let kept = plan.entries.iter().find_map(|e| {
                let s = self.schemas.iter().position(|x| x.name == e.table)?;
                match &e.action {
                    graph::PlanAction::Keep if e.table == *table => Some(self.schemas[s].clone()),
                    graph::PlanAction::Renamed { from: Some(from) } => {
                        let old =
                            TableSchema::at(&self.specs[s], from, &self.prefix, &SqliteDialect);
                        (old.name == *table).then_some(old)
                    }
                    _ => None,
                }
                .map(|schema| (s, schema))
            });
            let read_as_old_type = plan.entries.iter().any(|e| {
                e.table == *table
                    && matches!(e.action, graph::PlanAction::Changed { .. })
                    && self.graph.input_migration(&e.path).is_some()
            });
            if read_as_old_type {
                return Err(StoreError::InterruptedIteration {
                    table: table.clone(),
                    at: *at,
                    low,
                });
            }
            if let Some((s, schema)) = kept {
                let entries: Vec<(i64, Vec<u8>)> = self
                    .conn
                    .prepare(&format!(
                        "SELECT t, rows FROM {undo} WHERE table_name = ? AND t > ? ORDER BY t DESC"
                    ))
                    .and_then(|mut st| {
                        st.query_map((table, low), |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect()
                    })
                    .map_err(backend(format!("reading the undo of `{table}`")))?;
                let table_sql = super::statements::TableSql::of(&schema);
                // Latest first, as `recover` does.
                for (t, bytes) in entries {
                    let rows = sql::decode_undo(table, t, &bytes)?;
                    self.write_rows(&self.specs[s], &schema, &table_sql, &rows)?;
                }
            }
            self.conn
                .execute(
                    &format!("UPDATE {last_update} SET t = ? WHERE table_name = ?"),
                    (low, table),
                )
                .map_err(backend(format!("rewinding `{table}`")))?;
        }
        self.conn
            .execute(&format!("DELETE FROM {undo}"), [])
            .map_err(backend("clearing the undo table"))?;
        Ok(low)
    }

    /// Carries `plan` out inside the open's transaction (see
    /// [`OpenOptions::migrate`]); returns it with the rows of each state it
    /// computed.
    pub(super) fn migrate_in(
        &self,
        mut plan: graph::MigrationPlan,
    ) -> Result<graph::MigrationPlan, StoreError> {
        let (tables, last_update) = self.meta();
        // A pipelined iteration of the old query left half done is undone
        // first: the new states are computed from whole iterations only.
        let now = self.rewind_interrupted(&plan)?;
        self.step("rewound");
        // Renamed tables first: the inputs among them are read below.
        for entry in &plan.entries {
            if let graph::PlanAction::Renamed { from: Some(from) } = &entry.action {
                self.rename_table(from, &entry.table)?;
            }
        }
        self.step("renamed");
        let graph = self.graph.clone();
        let memory = if plan.backfilled().next().is_some() {
            let keep: Vec<&str> = plan
                .entries
                .iter()
                .filter(|e| {
                    matches!(
                        e.action,
                        graph::PlanAction::Keep | graph::PlanAction::Renamed { .. }
                    )
                })
                .map(|e| e.path.as_str())
                .collect();
            let changed: Vec<&str> = plan
                .entries
                .iter()
                .filter(|e| matches!(e.action, graph::PlanAction::Changed { .. }))
                .map(|e| e.path.as_str())
                .collect();
            let store = self;
            let computed = crate::migrate::recompute(&graph, &plan, |spec, sink| {
                let path = spec.path().as_str();
                let s = store
                    .specs
                    .iter()
                    .position(|x| x.path() == spec.path())
                    .ok_or_else(|| sql::input_not_kept(path, "the store does not hold it"))?;
                if keep.contains(&path) {
                    let rows = store.run_read(&store.schemas[s], &store.sql[s], &SqlRead::All)?;
                    return sql::decode_rows(&store.specs[s], &store.schemas[s], rows, sink);
                }
                let table = &store.schemas[s].name;
                match graph.input_migration(path) {
                    Some(migrate) if changed.contains(&path) => {
                        store.migrated_rows(table, migrate, sink)
                    }
                    // The same rows, indexed differently (a join on the
                    // input shares its integral): read again, re-indexed.
                    None if changed.contains(&path)
                        && store.recorded_row_type(table)?.as_deref()
                            == Some(sql::row_type(&store.schemas[s].shape)) =>
                    {
                        store.reindexed_rows(s, sink)
                    }
                    _ if changed.contains(&path) => {
                        Err(sql::input_not_kept(path, sql::OTHER_ROW_TYPE))
                    }
                    _ => Err(sql::input_not_kept(path, sql::NOT_STORED)),
                }
            });
            Some(computed.map_err(|e| match e {
                graph::GraphError::Store(e) => e,
                other => StoreError::backend("computing the migrated states", other.to_string()),
            })?)
        } else {
            None
        };
        self.step("computed");
        for entry in &mut plan.entries {
            let table = entry.table.clone();
            match &entry.action {
                graph::PlanAction::Keep | graph::PlanAction::Renamed { .. } => {}
                graph::PlanAction::Drop | graph::PlanAction::Changed { .. } => {
                    let rows: i64 = self
                        .conn
                        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                        .unwrap_or(0);
                    let keep = self.keep_dropped && entry.action == graph::PlanAction::Drop;
                    let drop = if keep {
                        String::new()
                    } else {
                        format!(
                            "DROP VIEW IF EXISTS {}; DROP TABLE IF EXISTS {table}; ",
                            graph::view_ident(&table)
                        )
                    };
                    self.conn
                        .execute_batch(&format!(
                            "{drop}DELETE FROM {tables} WHERE table_name = '{table}'; \
                             DELETE FROM {last_update} WHERE table_name = '{table}'"
                        ))
                        .map_err(backend(format!("dropping `{table}`")))?;
                    entry.rows = Some(rows as u64);
                }
                graph::PlanAction::New => {}
            }
        }
        self.step("dropped");
        for entry in &mut plan.entries {
            if !entry.action.backfills() {
                continue;
            }
            let Some(s) = self.schemas.iter().position(|x| x.name == entry.table) else {
                continue;
            };
            let (spec, schema) = (&self.specs[s], &self.schemas[s]);
            self.create_table(schema, now)?;
            let mut written = 0;
            if let Some(memory) = &memory {
                for delta in memory.contents(s) {
                    let rows = sql::encode_delta(spec, schema, &*delta)?;
                    written += rows.len() as u64;
                    self.write_rows(spec, schema, &self.sql[s], &rows)?;
                }
            }
            entry.rows = Some(written);
            self.step(&format!("wrote {}", entry.table));
        }
        Ok(plan)
    }
}

/// The store's own tables of a store made by an earlier version that are
/// to get today's names ([`OwnNames::legacy_tables`]): those with the
/// columns of that table whose new name is free.
pub(super) fn legacy_renames(
    conn: &Connection,
    prefix: &str,
) -> Result<Vec<sql::Legacy>, StoreError> {
    let columns = |table: &str| -> Result<Option<Vec<String>>, StoreError> {
        let exists = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table],
                |_| Ok(()),
            )
            .optional()
            .map_err(backend("reading sqlite_master"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        conn.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .and_then(|mut s| {
                s.query_map([table], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map(Some)
            .map_err(backend(format!("reading the columns of `{table}`")))
    };
    let mut renames = Vec::new();
    for l in OwnNames::legacy_tables(prefix) {
        if let Some(old) = columns(&l.old)?
            && l.applies(Some(&old), columns(&l.new)?.is_some())
        {
            renames.push(l);
        }
    }
    Ok(renames)
}

/// Whether `schema`'s table exists with the same shape (`Ok(false)`: it
/// does not exist at all).
pub(super) fn check_table(
    conn: &Connection,
    tables: &str,
    schema: &TableSchema,
) -> Result<bool, StoreError> {
    let recorded: Option<(String, String)> = conn
        .query_row(
            &format!("SELECT path, shape FROM {tables} WHERE table_name = ?"),
            [&schema.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .or_else(|e| match e {
            // No metadata table yet: nothing was created here.
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                Ok(None)
            }
            e => Err(e),
        })
        .map_err(backend(format!("reading the shape of `{}`", schema.name)))?;
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            [&schema.name],
            |_| Ok(()),
        )
        .optional()
        .map_err(backend("reading sqlite_master"))?
        .is_some();
    sql::table_state(schema, recorded, exists)
}
