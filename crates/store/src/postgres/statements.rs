//! The SQL text of each state table's reads and writes, and the names of a
//! prefix's bookkeeping tables.

use graph::{StateKind, StateSpec};
use zset::KeyValue;

use super::encode::{PgDialect, array_type, value_array_type};
use super::writes::{ALREADY_APPLIED, QUERY_CHANGED};
use crate::sql::{OwnNames, TableSchema};

/// The SQL of one table, built once.
#[derive(Debug)]
pub(crate) struct PgSql {
    pub(super) cols: &'static str,
    pub(super) select: String,
    pub(super) by_index: Vec<String>,
    pub(super) by_identity: String,
    pub(super) upsert: String,
    /// A feed's write: its rows are new every time (the time is part of
    /// them), so nothing stored is looked for to cancel or add to.
    pub(super) append: String,
    pub(super) delete: String,
    pub(super) max_step: String,
}

impl PgSql {
    /// The statement that writes the rows of `spec`'s table: a feed's
    /// appends, any other state's upsert.
    pub(super) fn write(&self, spec: &StateSpec) -> &str {
        if spec.is_feed() {
            &self.append
        } else {
            &self.upsert
        }
    }

    pub(super) fn of(s: &TableSchema) -> PgSql {
        let cols = if s.nested() {
            "t.identity, t.data, t.c, t.step"
        } else {
            "t.identity, t.data, t.c"
        };
        let select = format!("SELECT {cols} FROM {} AS t", s.name);
        let by_index = s
            .indexes
            .iter()
            .map(|ix| {
                if ix.columns.is_empty() {
                    return select.clone();
                }
                let cs = &s.columns[ix.columns.clone()];
                let arrays: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("${}::{}", i + 1, array_type(c.key.ty)))
                    .collect();
                let names: Vec<String> = (0..cs.len()).map(|i| format!("k{i}")).collect();
                let on: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("t.{} = k.k{i}", c.name))
                    .collect();
                format!(
                    "SELECT {cols} FROM {} AS t JOIN unnest({}) AS k({}) ON {}",
                    s.name,
                    arrays.join(", "),
                    names.join(", "),
                    on.join(" AND ")
                )
            })
            .collect();
        let mut insert_cols: Vec<String> = vec!["identity".into()];
        let mut types: Vec<&str> = vec!["int8[]"];
        if s.nested() {
            insert_cols.push("step".into());
            types.push("int4[]");
        }
        insert_cols.push("data".into());
        types.push("bytea[]");
        for c in &s.columns {
            insert_cols.push(c.name.clone());
            types.push(array_type(c.key.ty));
        }
        for v in &s.values {
            insert_cols.push(v.name.clone());
            types.push(value_array_type(v.ty));
        }
        insert_cols.push("c".into());
        types.push("int8[]");
        let params: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}", i + 1))
            .collect();
        let conflict = s.primary_key().join(", ");
        // An identity that already holds a different value gets a `NULL`
        // `data`, which the table refuses: the statement fails (and with it
        // the transaction) instead of silently skipping the row, so nothing
        // needs to come back to be checked.
        let upsert = match s.kind {
            StateKind::Keyed => {
                let same: Vec<String> = s
                    .columns
                    .iter()
                    .map(|c| format!("t.{0} IS NOT DISTINCT FROM excluded.{0}", c.name))
                    .collect();
                let data = if same.is_empty() {
                    "excluded.data".to_owned()
                } else {
                    format!("CASE WHEN {} THEN excluded.data END", same.join(" AND "))
                };
                format!(
                    "INSERT INTO {} AS t ({}) SELECT * FROM unnest({}) ON CONFLICT ({conflict}) DO UPDATE SET data = {data}, c = excluded.c",
                    s.name,
                    insert_cols.join(", "),
                    params.join(", ")
                )
            }
            _ => {
                // One statement: rows the delta cancels are deleted (no
                // update leaving a zero row behind for a second statement),
                // the rest are added.
                let pk: Vec<String> = s
                    .primary_key()
                    .iter()
                    .map(|c| format!("t.{c} = d.{c}"))
                    .collect();
                let same_step = if s.nested() {
                    " AND g.step = d.step"
                } else {
                    ""
                };
                let gone_returning = if s.nested() {
                    "t.identity, t.step"
                } else {
                    "t.identity"
                };
                let delete = |which: &str| {
                    format!(
                        "DELETE FROM {name} AS t USING d WHERE {which}{pk} AND t.c + d.c = 0 AND t.data = d.data RETURNING {gone_returning}",
                        name = s.name,
                        pk = pk.join(" AND "),
                    )
                };
                // A row added with a positive weight cancels a stored one
                // only when some stored weight is negative, which is rare: one
                // look into the (almost always empty) index of negative
                // weights, a filter Postgres applies once before the delete
                // runs at all, spares looking each such row up. In a delete
                // of its own, so that the other's plan does not change with
                // it (in one delete, the rows it was thought to pass made the
                // cache's delete a scan of the table); ordered by `c`, so
                // that only that index answers it (an `EXISTS`, estimated
                // from a third of the rows matching, scanned the table).
                let gone = if s.negative_index(&PgDialect).is_some() {
                    format!(
                        "gone_added AS ({}), gone_removed AS ({}), \
                         gone AS (SELECT * FROM gone_added UNION ALL SELECT * FROM gone_removed)",
                        delete(&format!(
                            "(SELECT n.c FROM {} AS n WHERE n.c < 0 ORDER BY n.c LIMIT 1) IS NOT NULL AND d.c > 0 AND ",
                            s.name
                        )),
                        delete("d.c < 0 AND "),
                    )
                } else {
                    format!("gone AS ({})", delete(""))
                };
                format!(
                    "WITH d AS (SELECT * FROM unnest({params}) AS d({cols})), {gone} \
                     INSERT INTO {name} AS t ({cols}) SELECT * FROM d WHERE NOT EXISTS (SELECT 1 FROM gone AS g WHERE g.identity = d.identity{same_step}) \
                     ON CONFLICT ({conflict}) DO UPDATE SET c = t.c + excluded.c, data = CASE WHEN t.data = excluded.data THEN t.data END",
                    name = s.name,
                    cols = insert_cols.join(", "),
                    params = params.join(", "),
                )
            }
        };
        // A plain insert: an identity already stored at the time can only be
        // another value's (a write holds each row once, and a time is written
        // once), which the primary key refuses (`collision`).
        let append = format!(
            "INSERT INTO {name} ({cols}) SELECT * FROM unnest({params})",
            name = s.name,
            cols = insert_cols.join(", "),
            params = params.join(", "),
        );
        // Rows by primary key (`by_identity`: every step), from one array
        // per column: `$1..` the clustered key columns, then identities,
        // then steps.
        let located = |with_step: bool| -> (String, String) {
            let mut arrays = Vec::new();
            let mut on = Vec::new();
            for (i, c) in s.columns[s.clustered.clone()].iter().enumerate() {
                arrays.push(format!("${}::{}", i + 1, array_type(c.key.ty)));
                on.push(format!("t.{} = d.k{i}", c.name));
            }
            let mut names: Vec<String> = (0..arrays.len()).map(|i| format!("k{i}")).collect();
            arrays.push(format!("${}::int8[]", arrays.len() + 1));
            names.push("i".into());
            on.push("t.identity = d.i".into());
            if with_step {
                arrays.push(format!("${}::int4[]", arrays.len() + 1));
                names.push("s".into());
                on.push("t.step = d.s".into());
            }
            (
                format!("unnest({}) AS d({})", arrays.join(", "), names.join(", ")),
                on.join(" AND "),
            )
        };
        let (d, on) = located(s.nested());
        let delete = format!("DELETE FROM {} AS t USING {d} WHERE {on}", s.name);
        let (d, on) = located(false);
        PgSql {
            cols,
            by_identity: format!("{select} JOIN {d} ON {on}"),
            select,
            by_index,
            upsert,
            append,
            delete,
            max_step: format!("SELECT MAX(step) FROM {}", s.name),
        }
    }

    /// `first` (or, with `ties`, the rows equal to a key) for one prefix:
    /// built per pattern of `NULL`s in the values.
    pub(super) fn first(
        &self,
        s: &TableSchema,
        index: usize,
        values: &[KeyValue],
        ties: bool,
    ) -> String {
        let ix = &s.indexes[index];
        let cs = &s.columns[ix.columns.clone()];
        let mut conds = Vec::new();
        let mut n = 0;
        for (c, v) in cs.iter().zip(values) {
            if matches!(v, KeyValue::Null) {
                conds.push(format!("t.{} IS NULL", c.name));
            } else {
                n += 1;
                conds.push(format!("t.{} = ${n}", c.name));
            }
        }
        conds.push("t.c > 0".into());
        let keys: String = cs.iter().map(|c| format!(", t.{}", c.name)).collect();
        let mut q = format!(
            "SELECT {}{keys} FROM {} AS t WHERE {}",
            self.cols,
            s.name,
            conds.join(" AND ")
        );
        if !ties {
            // In the order of the index that serves it, as declared, or the
            // planner sorts the whole prefix instead: the primary key's
            // columns (never NULL, always ascending) in its default order,
            // a secondary index's with their `NULLS` placement.
            let primary = !ix.columns.is_empty() && ix.columns == s.clustered;
            let order: Vec<String> = cs
                .iter()
                .map(|c| {
                    let dir = match (primary, c.key.descending) {
                        (true, _) => "ASC",
                        (false, true) => "DESC NULLS LAST",
                        (false, false) => "ASC NULLS FIRST",
                    };
                    format!("t.{} {dir}", c.name)
                })
                .collect();
            if !order.is_empty() {
                q.push_str(&format!(" ORDER BY {}", order.join(", ")));
            }
            q.push_str(&format!(" LIMIT ${}", n + 1));
        }
        q
    }
}

/// Everything about one graph's tables.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) prefix: String,
    /// The store's own tables.
    pub(crate) own: OwnNames,
    /// The store's query generation when opened: a migration bumps it (a
    /// `last_update` row named after the query table), and a handle
    /// opened before one refuses to go on (`QueryChanged`).
    pub(crate) generation: std::sync::atomic::AtomicI64,
    pub(crate) specs: Vec<StateSpec>,
    pub(crate) schemas: Vec<TableSchema>,
    pub(crate) sql: Vec<PgSql>,
    /// The times of the tables `$1`.
    pub(super) times_sql: String,
    /// [`times_sql`](Self::times_sql), locking the rows until the
    /// transaction ends: an all-or-nothing iteration's frontier check, so
    /// that iterations of several processes never overlap on a table.
    pub(super) lock_times_sql: String,
    /// Locks the time of table `$1` and fails (aborting the transaction,
    /// `22P02` with [`ALREADY_APPLIED`] in its message) if it has already
    /// reached `$2`: the first statement of a pipelined table's flush.
    pub(super) guard_sql: String,
    /// Locks the store's query generation (its `last_update` row, `FOR
    /// SHARE`) and fails (aborting the transaction, with [`QUERY_CHANGED`]
    /// in its message) if it is not `$1`, the handle's: the first statement
    /// of a pipelined table's flush. A migration bumps the generation
    /// first thing, so it waits for a flush holding it, and a flush after
    /// it sees the new generation.
    pub(super) generation_guard_sql: String,
    /// Keeps what undoes a pipelined flush of table `$2` at time `$1`
    /// (`$3`, see `sql::undo_of`).
    pub(super) keep_undo_sql: String,
    /// Drops the undo entries of the times up to `$1`, unless the query's
    /// generation moved on from `$2` (a migration rewinds what they undo).
    pub(super) clear_undo_sql: String,
    /// Records the times of the tables `$1` as `$2` (never moving one
    /// back), and notifies waiters on channel `$3` in the same transaction:
    /// they hear of it exactly when it commits.
    pub(super) last_update_sql: String,
    /// [`last_update_sql`](Self::last_update_sql) only for a table already
    /// at a frontier (`$4`), counting it, and only while the query
    /// generation is `$5` (locked `FOR SHARE`).
    pub(super) bump_if_at_sql: String,
    /// [`last_update_sql`](Self::last_update_sql) only while the query
    /// generation is `$4` (locked `FOR SHARE` first); returns whether it
    /// was.
    pub(super) guarded_last_update_sql: String,
}

impl Tables {
    pub(super) fn new(prefix: &str, specs: Vec<StateSpec>) -> Tables {
        let schemas: Vec<TableSchema> = specs
            .iter()
            .map(|s| TableSchema::of(s, prefix, &PgDialect))
            .collect();
        let sql = schemas.iter().map(PgSql::of).collect();
        let own = OwnNames::of(prefix);
        let last_update = own.last_update.clone();
        let query = OwnNames::name(prefix, "query");
        Tables {
            prefix: prefix.to_owned(),
            own,
            generation: std::sync::atomic::AtomicI64::new(0),
            specs,
            schemas,
            sql,
            // With the store's query generation (see `Tables::generation`).
            times_sql: format!(
                "SELECT table_name, t FROM {last_update} WHERE table_name = ANY($1) OR table_name = '{query}'"
            ),
            // In name order, so that two iterations lock in the same order.
            lock_times_sql: format!(
                "SELECT table_name, t FROM {last_update} WHERE table_name = ANY($1) OR table_name = '{query}' \
                 ORDER BY table_name FOR UPDATE"
            ),
            // Plain SQL cannot raise an error; a failing cast can, carrying
            // its text.
            keep_undo_sql: format!(
                "INSERT INTO {undo} (t, table_name, rows) VALUES ($1, $2, $3) \
                 ON CONFLICT (t, table_name) DO UPDATE SET rows = excluded.rows",
                undo = OwnNames::name(prefix, "undo")
            ),
            clear_undo_sql: format!(
                "DELETE FROM {} WHERE t <= $1 AND coalesce((SELECT t FROM {last_update} \
                 WHERE table_name = '{query}'), 0) = $2",
                OwnNames::name(prefix, "undo")
            ),
            guard_sql: format!(
                "SELECT CASE WHEN t >= $2 THEN ('{ALREADY_APPLIED} ' || table_name || ' at ' || t)::bigint \
                 ELSE t END FROM {last_update} WHERE table_name = $1 FOR UPDATE"
            ),
            generation_guard_sql: format!(
                "SELECT CASE WHEN t <> $1 THEN ('{QUERY_CHANGED} ' || t)::bigint ELSE t END \
                 FROM {last_update} WHERE table_name = '{query}' FOR SHARE"
            ),
            guarded_last_update_sql: format!(
                "WITH g AS (SELECT t FROM {last_update} WHERE table_name = '{query}' FOR SHARE), \
                 ok AS (SELECT coalesce((SELECT t FROM g), 0) = $4 AS ok), \
                 done AS (INSERT INTO {last_update} AS l (table_name, t) SELECT n, $2 FROM unnest($1::text[]) AS n \
                 WHERE (SELECT ok FROM ok) \
                 ON CONFLICT (table_name) DO UPDATE SET t = GREATEST(l.t, excluded.t) RETURNING 1) \
                 SELECT (SELECT ok FROM ok), pg_notify($3, (SELECT count(*) FROM done)::text)"
            ),
            last_update_sql: format!(
                "WITH done AS (INSERT INTO {last_update} AS l (table_name, t) SELECT n, $2 FROM unnest($1::text[]) AS n \
                 ON CONFLICT (table_name) DO UPDATE SET t = GREATEST(l.t, excluded.t) RETURNING 1) \
                 SELECT pg_notify($3, (SELECT count(*) FROM done)::text)"
            ),
            bump_if_at_sql: format!(
                "WITH g AS (SELECT t FROM {last_update} WHERE table_name = '{query}' FOR SHARE), \
                 done AS (UPDATE {last_update} AS l SET t = GREATEST(l.t, $2) \
                 WHERE l.table_name = ANY($1::text[]) AND l.t >= $4 \
                 AND coalesce((SELECT t FROM g), 0) = $5 RETURNING 1) \
                 SELECT (SELECT count(*) FROM done), pg_notify($3, (SELECT count(*) FROM done)::text)"
            ),
        }
    }

    /// The store's query generation when this handle opened it.
    pub(crate) fn generation(&self) -> i64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every table's name, in state order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.schemas.iter().map(|s| s.name.clone()).collect()
    }
    pub(super) fn last_update(&self) -> String {
        self.own.last_update.clone()
    }
    pub(super) fn tables(&self) -> String {
        self.own.tables.clone()
    }
    pub(super) fn query(&self) -> String {
        OwnNames::name(&self.prefix, "query")
    }
    pub(super) fn undo(&self) -> String {
        OwnNames::name(&self.prefix, "undo")
    }
    pub(super) fn create_undo_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (t BIGINT NOT NULL, table_name TEXT NOT NULL, \
             rows BYTEA NOT NULL, PRIMARY KEY (t, table_name))",
            self.undo()
        )
    }
}
