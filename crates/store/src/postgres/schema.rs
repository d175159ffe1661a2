//! Creating, checking and migrating a prefix's tables: the recorded shapes,
//! first-use locking and legacy names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use graph::{Graph, GraphError, StoreError, identity_of};
use tokio_postgres::GenericClient;

use super::encode::{PgDialect, PgRow};
use super::reads::read_rows;
use super::runtime::{Conn, pg};
use super::statements::Tables;
use super::writes::{undo_rows, write_rows};
use crate::StoreStats;
use crate::sql::{self, OwnNames, SqlRead, TableSchema};

/// The key of the advisory lock under which the tables, the failed-batch
/// table and the time sequence of `prefix` are created and checked (a
/// hash: another prefix, or an application's own advisory lock, that
/// shares it only makes them take turns).
pub(super) fn prefix_lock(prefix: &str) -> i64 {
    identity_of(format!("stepping-rs tables {prefix}").as_bytes())
}

/// Takes the lock of [`prefix_lock`] until the end of `client`'s
/// transaction.
pub(super) async fn lock_prefix<C: GenericClient>(
    client: &C,
    prefix: &str,
) -> Result<(), StoreError> {
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({})",
            prefix_lock(prefix)
        ))
        .await
        .map_err(pg(format!("locking the tables of prefix `{prefix}`")))
}

/// A relation found in the catalog: its kind (`r` a table, `S` a
/// sequence), its columns in order, and its primary key's name.
pub(super) struct Relation {
    pub(super) kind: String,
    pub(super) columns: Vec<String>,
    pub(super) pkey: Option<String>,
}

/// Which of the relations `names` exist (where the search path finds
/// them), by name.
pub(super) async fn relations<C: GenericClient>(
    client: &C,
    names: &[&str],
) -> Result<HashMap<String, Relation>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relkind::text, \
             ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
             (SELECT k.conname::text FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') \
             FROM pg_catalog.pg_class c \
             WHERE c.relname::text = ANY($1::text[]) AND pg_catalog.pg_table_is_visible(c.oid)",
            &[&names],
        )
        .await
        .map_err(pg("reading the catalog"))?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                Relation {
                    kind: r.try_get(1)?,
                    columns: r.try_get(2)?,
                    pkey: r.try_get(3)?,
                },
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(pg("reading the catalog"))
}

/// Gives the store's own tables of a store made by an earlier version
/// today's names ([`OwnNames::legacy_tables`]), in the caller's transaction
/// holding the prefix's lock: a table is renamed, with its primary key,
/// when it has the columns of that table and today's name is free.
pub(super) async fn rename_legacy_tables<C: GenericClient>(
    client: &C,
    prefix: &str,
) -> Result<(), StoreError> {
    let legacy = OwnNames::legacy_tables(prefix);
    let names: Vec<&str> = legacy
        .iter()
        .flat_map(|l| [l.old.as_str(), l.new.as_str()])
        .collect();
    let found = relations(client, &names).await?;
    for l in &legacy {
        let old = found.get(&l.old).filter(|r| r.kind == "r");
        if !l.applies(old.map(|r| &r.columns[..]), found.contains_key(&l.new)) {
            continue;
        }
        let mut sql = format!("ALTER TABLE {} RENAME TO {};", l.old, l.new);
        // `<old>_pkey` is a name a state's table could have.
        if old.and_then(|r| r.pkey.as_deref()) == Some(&format!("{}_pkey", l.old)) {
            sql.push_str(&format!(
                " ALTER INDEX {}_pkey RENAME TO {}_pkey;",
                l.old, l.new
            ));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(pg(format!("renaming `{}` to `{}`", l.old, l.new)))?;
    }
    Ok(())
}

/// How the states recorded under `tables`' prefix compare with its graph's.
pub(super) async fn plan_of<C: GenericClient>(
    tx: &C,
    tables: &Tables,
) -> Result<graph::MigrationPlan, StoreError> {
    let recorded = tx
        .query(
            &format!(
                "SELECT table_name, path, shape, definition FROM {}",
                tables.tables()
            ),
            &[],
        )
        .await
        .map_err(pg(format!("reading `{}`", tables.tables())))?
        .into_iter()
        .map(|r| {
            Ok(sql::Recorded {
                table: r.try_get(0)?,
                path: r.try_get(1)?,
                shape: r.try_get(2)?,
                definition: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(pg(format!("reading `{}`", tables.tables())))?;
    let query = tx
        .query(&format!("SELECT table_name FROM {}", tables.query()), &[])
        .await
        .map_err(pg("reading the query's tables"))?
        .into_iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()
        .map_err(pg("reading the query's tables"))?;
    Ok(sql::plan(
        &tables.schemas,
        &tables.specs,
        &recorded,
        &query,
        &tables.prefix,
    ))
}

/// Records `tables`' graph as the store's query: its tables, and each
/// one's definition.
pub(super) async fn record_query<C: GenericClient>(
    tx: &C,
    tables: &Tables,
) -> Result<(), StoreError> {
    let names = tables.names();
    let definitions: Vec<String> = tables
        .specs
        .iter()
        .map(|s| s.definition().to_owned())
        .collect();
    tx.execute(
        &format!(
            "UPDATE {} AS t SET definition = d.definition FROM unnest($1::text[], $2::text[]) AS d(name, definition) \
             WHERE t.table_name = d.name",
            tables.tables()
        ),
        &[&names, &definitions],
    )
    .await
    .map_err(pg("recording the definitions"))?;
    tx.batch_execute(&format!("DELETE FROM {}", tables.query()))
        .await
        .map_err(pg("recording the query's tables"))?;
    tx.execute(
        &format!(
            "INSERT INTO {} (table_name) SELECT unnest($1::text[])",
            tables.query()
        ),
        &[&names],
    )
    .await
    .map_err(pg("recording the query's tables"))?;
    Ok(())
}

/// Creates `schema`'s table and records it, at time `t` (a time already
/// recorded for it is replaced).
pub(super) async fn create_table<C: GenericClient>(
    client: &C,
    tables: &Tables,
    schema: &TableSchema,
    t: i64,
) -> Result<(), StoreError> {
    for stmt in sql::create_statements(&PgDialect, schema) {
        client
            .batch_execute(&stmt)
            .await
            .map_err(pg(format!("creating `{}`", schema.name)))?;
    }
    client
        .execute(
            &format!(
                "INSERT INTO {} (table_name, path, kind, shape) VALUES ($1, $2, $3, $4)",
                tables.tables()
            ),
            &[
                &schema.name,
                &schema.path,
                &schema.kind.name(),
                &schema.shape,
            ],
        )
        .await
        .map_err(pg(format!("recording `{}`", schema.name)))?;
    client
        .execute(
            &format!(
                "INSERT INTO {} AS l (table_name, t) VALUES ($1, $2) \
                 ON CONFLICT (table_name) DO UPDATE SET t = excluded.t",
                tables.last_update()
            ),
            &[&schema.name, &t],
        )
        .await
        .map_err(pg(format!("recording `{}`", schema.name)))?;
    Ok(())
}

/// Creates the index of negative weights ([`TableSchema::negative_index`])
/// of each of `tables` that lacks it: a table made by an earlier version
/// (its writes are right without it, but look the table through for a
/// negative weight). Only missing ones: `CREATE INDEX IF NOT EXISTS` would
/// wait for the table's writers even when there is nothing to make.
pub(super) async fn create_negative_indexes<C: GenericClient>(
    client: &C,
    tables: &Tables,
) -> Result<(), StoreError> {
    let wanted: Vec<(String, &str)> = tables
        .schemas
        .iter()
        .filter_map(|s| Some((s.negative_index(&PgDialect)?, s.name.as_str())))
        .collect();
    let names: Vec<&str> = wanted.iter().map(|(ix, _)| ix.as_str()).collect();
    let found = relations(client, &names).await?;
    for (index, table) in &wanted {
        if found.contains_key(index) {
            continue;
        }
        client
            .batch_execute(&sql::negative_index_statement(index, table))
            .await
            .map_err(pg(format!("indexing the negative weights of `{table}`")))?;
    }
    Ok(())
}

/// Creates (or makes again) the view of every cache of `tables`, unless it is
/// there already as this version made it (each view's comment records its
/// `SELECT`): an open does not take a view's lock, which a reader holds
/// for as long as its transaction runs, without need.
pub(super) async fn create_views<C: GenericClient>(
    client: &C,
    tables: &Tables,
) -> Result<(), StoreError> {
    for schema in &tables.schemas {
        let (Some(view), Some(select)) = (&schema.view, schema.view_select()) else {
            continue;
        };
        let made: Option<String> = client
            .query_opt(
                "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
                 WHERE c.relname = $1 AND c.relkind = 'v' AND pg_catalog.pg_table_is_visible(c.oid)",
                &[view],
            )
            .await
            .and_then(|r| r.map(|r| r.try_get(0)).transpose())
            .map_err(pg("reading the catalog"))?
            .flatten();
        if made.as_deref() == Some(select.as_str()) {
            continue;
        }
        // Made again rather than replaced: `CREATE OR REPLACE` cannot drop
        // or rename a column. The text is `[a-z0-9_]` names, quotes and
        // punctuation: no `'`.
        client
            .batch_execute(&format!(
                "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS {select}; \
                 COMMENT ON VIEW {view} IS '{select}'"
            ))
            .await
            .map_err(pg(format!("creating the view `{view}`")))?;
    }
    Ok(())
}

/// Carries `plan` out in the open's transaction (see
/// `OpenOptions::migrate`); returns it with the rows of each state.
pub(super) async fn migrate_in<C: Conn>(
    conn: &C,
    tables: &Tables,
    graph: &Graph,
    stats: &Mutex<StoreStats>,
    mut plan: graph::MigrationPlan,
    keep_dropped: bool,
    step: &dyn Fn(&str),
) -> Result<graph::MigrationPlan, StoreError> {
    let client = conn.client();
    let (meta, last_update) = (tables.tables(), tables.last_update());
    // A pipelined iteration of the old query left half done is undone
    // first: the new states are computed from whole iterations only.
    let now = rewind_interrupted(conn, tables, graph, stats, &plan).await?;
    step("rewound");
    // Renamed tables first: the inputs among them are read below.
    for entry in &plan.entries {
        if let graph::PlanAction::Renamed { from: Some(from) } = &entry.action {
            rename_table(client, tables, from, &entry.table).await?;
        }
    }
    step("renamed");
    let memory = if plan.backfilled().next().is_some() {
        // The kept inputs, read whole first (the computation is not async).
        let mut inputs: HashMap<String, Vec<PgRow>> = HashMap::new();
        // Inputs stored under an older row type, as (identity, data, weight).
        let mut old_rows: HashMap<String, Vec<(i64, Vec<u8>, i64)>> = HashMap::new();
        // Inputs stored with the same row type, other indexes.
        let mut reindexed: std::collections::HashSet<String> = Default::default();
        for e in &plan.entries {
            let Some(s) = tables.schemas.iter().position(|x| x.name == e.table) else {
                continue;
            };
            let is_input = graph.inputs().iter().any(|p| p.as_str() == e.path);
            let changed_input = is_input && matches!(e.action, graph::PlanAction::Changed { .. });
            if changed_input && graph.input_migration(&e.path).is_none() {
                // The same rows, indexed differently (a join on the input
                // shares its integral)? Then they are read again below.
                let recorded: Option<String> = client
                    .query_opt(
                        &format!("SELECT shape FROM {meta} WHERE table_name = $1"),
                        &[&e.table],
                    )
                    .await
                    .map_err(pg(format!("reading `{meta}`")))?
                    .map(|r| r.try_get(0))
                    .transpose()
                    .map_err(pg(format!("reading `{meta}`")))?;
                if recorded.as_deref().map(sql::row_type)
                    == Some(sql::row_type(&tables.schemas[s].shape))
                {
                    reindexed.insert(e.path.clone());
                }
            }
            if changed_input
                && (graph.input_migration(&e.path).is_some() || reindexed.contains(&e.path))
            {
                let table = &tables.schemas[s].name;
                let rows = client
                    .query(&format!("SELECT identity, data, c FROM {table}"), &[])
                    .await
                    .map_err(pg(format!("reading `{table}`")))?;
                let rows = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(pg(format!("reading `{table}`")))?;
                old_rows.insert(e.path.clone(), rows);
            }
            if !matches!(
                e.action,
                graph::PlanAction::Keep | graph::PlanAction::Renamed { .. }
            ) {
                continue;
            }
            if is_input {
                let rows = read_rows(
                    conn,
                    &tables.schemas[s],
                    &tables.sql[s],
                    &SqlRead::All,
                    stats,
                )
                .await?;
                inputs.insert(e.path.clone(), rows);
            }
        }
        let computed = crate::migrate::recompute(graph, &plan, |spec, sink| {
            let path = spec.path().to_string();
            let s = tables
                .specs
                .iter()
                .position(|x| x.path() == spec.path())
                .ok_or_else(|| sql::input_not_kept(&path, "the store does not hold it"))?;
            if let Some(rows) = inputs.remove(&path) {
                return sql::decode_rows(&tables.specs[s], &tables.schemas[s], rows, sink);
            }
            match (old_rows.remove(&path), graph.input_migration(&path)) {
                (Some(rows), Some(migrate)) => {
                    let table = &tables.schemas[s].name;
                    for (identity, data, weight) in rows {
                        migrate(&data, weight, sink)
                            .map_err(|detail| sql::unmigratable(table, identity, detail))?;
                    }
                    Ok(())
                }
                (Some(rows), None) => {
                    let table = &tables.schemas[s].name;
                    for (identity, data, weight) in rows {
                        tables.specs[s]
                            .codec()
                            .decode(&data, weight, 0, sink)
                            .map_err(|detail| StoreError::Corrupt {
                                table: table.clone(),
                                identity: identity.to_string(),
                                detail,
                            })?;
                    }
                    Ok(())
                }
                (None, _) if reindexed_or_changed(&plan, &path) => {
                    Err(sql::input_not_kept(&path, sql::OTHER_ROW_TYPE))
                }
                (None, _) => Err(sql::input_not_kept(&path, sql::NOT_STORED)),
            }
        });
        Some(computed.map_err(|e| match e {
            GraphError::Store(e) => e,
            other => StoreError::backend("computing the migrated states", other.to_string()),
        })?)
    } else {
        None
    };
    step("computed");
    for entry in &mut plan.entries {
        if matches!(
            entry.action,
            graph::PlanAction::Drop | graph::PlanAction::Changed { .. }
        ) {
            let table = entry.table.clone();
            let rows: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .and_then(|r| r.try_get(0))
                .unwrap_or(0);
            let keep = keep_dropped && entry.action == graph::PlanAction::Drop;
            // A cache's view goes first: Postgres refuses to drop a table
            // a view reads.
            let drop = if keep {
                String::new()
            } else {
                format!(
                    "DROP VIEW IF EXISTS {}; DROP TABLE IF EXISTS {table}; ",
                    graph::view_ident(&table)
                )
            };
            client
                .batch_execute(&format!(
                    "{drop}DELETE FROM {meta} WHERE table_name = '{table}'; \
                     DELETE FROM {last_update} WHERE table_name = '{table}'"
                ))
                .await
                .map_err(pg(format!("dropping `{table}`")))?;
            entry.rows = Some(rows as u64);
        }
    }
    step("dropped");
    for entry in &mut plan.entries {
        if !entry.action.backfills() {
            continue;
        }
        let Some(s) = tables.schemas.iter().position(|x| x.name == entry.table) else {
            continue;
        };
        let (spec, schema) = (&tables.specs[s], &tables.schemas[s]);
        create_table(client, tables, schema, now).await?;
        let mut written = 0;
        if let Some(memory) = &memory {
            for delta in memory.contents(s) {
                let rows = sql::encode_delta(spec, schema, &*delta)?;
                written += rows.len() as u64;
                let failed = AtomicBool::new(false);
                write_rows(conn, spec, schema, &tables.sql[s], &rows, stats, &failed).await?;
            }
        }
        entry.rows = Some(written);
        step(&format!("wrote {}", entry.table));
    }
    Ok(plan)
}

/// Whether the plan computes input `path` again for a change of its own
/// (rather than its being new to the store).
fn reindexed_or_changed(plan: &graph::MigrationPlan, path: &str) -> bool {
    plan.entries
        .iter()
        .any(|e| e.path == path && matches!(e.action, graph::PlanAction::Changed { .. }))
}

/// Rewinds, through their undo entries, the tables of the store's (old)
/// query that a pipelined iteration left ahead of the others (one
/// interrupted half way, or still under way in a process whose next flush
/// then fails with `QueryChanged`), and returns the time every table of the
/// old query is then at. A table to drop or compute again only has its time
/// moved back; an input read under its old row type cannot be rewound
/// (`InterruptedIteration`). Runs in the migration's transaction, after it
/// bumped the query's generation: every table's time is locked first, so a
/// flush under way finishes before.
async fn rewind_interrupted<C: Conn>(
    conn: &C,
    tables: &Tables,
    graph: &Graph,
    stats: &Mutex<StoreStats>,
    plan: &graph::MigrationPlan,
) -> Result<i64, StoreError> {
    let client = conn.client();
    let (last_update, query, undo) = (tables.last_update(), tables.query(), tables.undo());
    let ctx = || pg(format!("reading `{last_update}`"));
    client
        .query(
            &format!("SELECT t FROM {last_update} ORDER BY table_name FOR UPDATE"),
            &[],
        )
        .await
        .map_err(ctx())?;
    let times: Vec<(String, i64)> = client
        .query(
            &format!(
                "SELECT l.table_name, l.t FROM {last_update} l JOIN {query} q ON q.table_name = l.table_name"
            ),
            &[],
        )
        .await
        .map_err(ctx())?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(ctx())?;
    let Some(low) = times.iter().map(|(_, t)| *t).min() else {
        // Written by a version that recorded no query: its latest time.
        return client
            .query_one(
                &format!("SELECT coalesce(max(t), 0) FROM {last_update} WHERE table_name <> $1"),
                &[&query],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(ctx());
    };
    client
        .batch_execute(&tables.create_undo_sql())
        .await
        .map_err(pg("creating the undo table"))?;
    for (table, at) in times.iter().filter(|(_, t)| *t > low) {
        let kept = plan.entries.iter().find_map(|e| {
            let s = tables.schemas.iter().position(|x| x.name == e.table)?;
            match &e.action {
                graph::PlanAction::Keep if e.table == *table => Some(tables.schemas[s].clone()),
                graph::PlanAction::Renamed { from: Some(from) } => {
                    let old = TableSchema::at(&tables.specs[s], from, &tables.prefix, &PgDialect);
                    (old.name == *table).then_some(old)
                }
                _ => None,
            }
            .map(|schema| (s, schema))
        });
        let read_as_old_type = plan.entries.iter().any(|e| {
            e.table == *table
                && matches!(e.action, graph::PlanAction::Changed { .. })
                && graph.input_migration(&e.path).is_some()
        });
        if read_as_old_type {
            return Err(StoreError::InterruptedIteration {
                table: table.clone(),
                at: *at,
                low,
            });
        }
        if let Some((s, schema)) = kept {
            let entries = client
                .query(
                    &format!(
                        "SELECT t, rows FROM {undo} WHERE table_name = $1 AND t > $2 ORDER BY t DESC"
                    ),
                    &[table, &low],
                )
                .await
                .map_err(pg(format!("reading the undo of `{table}`")))?;
            let table_sql = super::statements::PgSql::of(&schema);
            // Latest first, as `recover` does.
            for entry in entries {
                let (t, bytes): (i64, Vec<u8>) = (
                    entry.try_get(0).map_err(pg("reading an undo entry"))?,
                    entry.try_get(1).map_err(pg("reading an undo entry"))?,
                );
                let rows = sql::decode_undo(table, t, &bytes)?;
                undo_rows(conn, &tables.specs[s], &schema, &table_sql, &rows, stats).await?;
            }
        }
        client
            .execute(
                &format!("UPDATE {last_update} SET t = $1 WHERE table_name = $2"),
                &[&low, table],
            )
            .await
            .map_err(pg(format!("rewinding `{table}`")))?;
    }
    client
        .execute(&format!("DELETE FROM {undo}"), &[])
        .await
        .map_err(pg("clearing the undo table"))?;
    Ok(low)
}

/// Renames the table of the state at `from` to `table`, the table of the
/// same state under its new path, with its indexes and records.
async fn rename_table<C: GenericClient>(
    client: &C,
    tables: &Tables,
    from: &str,
    table: &str,
) -> Result<(), StoreError> {
    let Some(s) = tables.schemas.iter().position(|x| x.name == table) else {
        return Ok(());
    };
    let new = &tables.schemas[s];
    let old = TableSchema::at(&tables.specs[s], from, &tables.prefix, &PgDialect);
    let context = || format!("renaming `{}` to `{table}`", old.name);
    for stmt in sql::rename_statements(&PgDialect, &old, new) {
        client.batch_execute(&stmt).await.map_err(pg(context()))?;
    }
    client
        .execute(
            &format!(
                "UPDATE {} SET table_name = $1, path = $2, shape = $3 WHERE table_name = $4",
                tables.tables()
            ),
            &[&table, &new.path, &new.shape, &old.name],
        )
        .await
        .map_err(pg(context()))?;
    client
        .execute(
            &format!(
                "UPDATE {} SET table_name = $1 WHERE table_name = $2",
                tables.last_update()
            ),
            &[&table, &old.name],
        )
        .await
        .map_err(pg(context()))?;
    Ok(())
}

/// Whether `schema`'s table exists with the same shape.
pub(super) async fn check_table<C: Conn>(
    conn: &C,
    tables: &Tables,
    schema: &TableSchema,
) -> Result<bool, StoreError> {
    let exists_meta = conn
        .client()
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = ANY(current_schemas(false))", &[&tables.tables()])
        .await
        .map_err(pg("reading the catalog"))?
        .is_some();
    let recorded: Option<(String, String)> = if exists_meta {
        conn.client()
            .query_opt(
                &format!(
                    "SELECT path, shape FROM {} WHERE table_name = $1",
                    tables.tables()
                ),
                &[&schema.name],
            )
            .await
            .map_err(pg(format!("reading the shape of `{}`", schema.name)))?
            .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(|e| StoreError::SchemaMismatch {
                table: schema.name.clone(),
                detail: format!(
                    "its recorded path and shape in `{}` are not text: {e}",
                    tables.tables()
                ),
            })?
    } else {
        None
    };
    let exists = conn
        .client()
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = $1 AND schemaname = ANY(current_schemas(false))", &[&schema.name])
        .await
        .map_err(pg("reading the catalog"))?
        .is_some();
    sql::table_state(schema, recorded, exists)
}

/// Drops the store's own tables, views and sequences under `prefix` (every
/// relation named `<prefix>0_…`, a name no state's table can have).
pub(super) async fn drop_own_relations<C: GenericClient>(
    client: &C,
    prefix: &str,
) -> Result<(), StoreError> {
    let own = OwnNames::name(prefix, "");
    let rows = client
        .query(
            "SELECT quote_ident(relname), relkind::text FROM pg_class \
             WHERE relnamespace = current_schema()::regnamespace \
             AND relkind IN ('r', 'p', 'v', 'S') AND left(relname, length($1)) = $1",
            &[&own],
        )
        .await
        .map_err(pg("listing the store's own tables"))?;
    for row in rows {
        let (name, kind): (String, String) = (row.get(0), row.get(1));
        let what = match kind.as_str() {
            "v" => "VIEW",
            "S" => "SEQUENCE",
            _ => "TABLE",
        };
        client
            .batch_execute(&format!("DROP {what} IF EXISTS {name} CASCADE"))
            .await
            .map_err(pg(format!("dropping the store's own {name}")))?;
    }
    Ok(())
}
