//! How the states a store records compare with a query's: the migration plan and its refusals.

use super::{Dialect, TableSchema, create_statements};
use graph::{StateSpec, StoreError, table_ident};

/// What a store makes of `schema`'s table, from the shape recorded for it
/// (`(path, shape)`, if any) and whether the table exists: `Ok(false)` to
/// create, `Ok(true)` to use as it is, or the typed error naming the table.
pub(crate) fn table_state(
    schema: &TableSchema,
    recorded: Option<(String, String)>,
    exists: bool,
) -> Result<bool, StoreError> {
    match (recorded, exists) {
        (None, false) => Ok(false),
        (None, true) => Err(StoreError::SchemaMismatch {
            table: schema.name.clone(),
            detail: "the table exists but was not created by stepping-rs".into(),
        }),
        (Some(_), false) => Err(StoreError::MissingTable {
            table: schema.name.clone(),
            path: schema.path.clone(),
        }),
        (Some((path, shape)), true) => {
            if shape != schema.shape || path != schema.path {
                Err(StoreError::SchemaMismatch {
                    table: schema.name.clone(),
                    detail: format!(
                        "it holds `{path}`: `{shape}`; this query expects `{}`: `{}`",
                        schema.path, schema.shape
                    ),
                })
            } else {
                Ok(true)
            }
        }
    }
}

/// A state table as the store recorded it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) table: String,
    pub(crate) path: String,
    pub(crate) shape: String,
    /// Empty when recorded by a version that kept no definitions.
    pub(crate) definition: String,
}

/// How the states recorded in a store compare with a query's: `query` is
/// the tables of the query that last wrote the store (an earlier version's
/// store records none, and then nothing is dropped).
pub(crate) fn plan(
    schemas: &[TableSchema],
    specs: &[StateSpec],
    recorded: &[Recorded],
    query: &[String],
    prefix: &str,
) -> graph::MigrationPlan {
    let mut entries = Vec::new();
    // Tables carried over to a new name: not dropped.
    let mut carried: Vec<String> = Vec::new();
    for (schema, spec) in schemas.iter().zip(specs) {
        let before = spec.before_renames();
        let action = match recorded.iter().find(|r| r.table == schema.name) {
            None => match before.and_then(|(old_path, old_definition)| {
                let old_table = table_name(prefix, old_path.as_str());
                let r = recorded.iter().find(|r| r.table == old_table)?;
                let same = old_table != schema.name
                    && r.path == old_path.as_str()
                    // (The layout names the table's indexes after it.)
                    && r.shape.replace(&old_table, &schema.name) == schema.shape
                    && (r.definition.is_empty() || r.definition == old_definition);
                same.then_some((old_table, old_path))
            }) {
                Some((old_table, old_path)) => {
                    carried.push(old_table);
                    graph::PlanAction::Renamed {
                        from: Some(old_path.to_string()),
                    }
                }
                None => graph::PlanAction::New,
            },
            Some(r) if r.shape != schema.shape || r.path != schema.path => {
                graph::PlanAction::Changed {
                    why: format!("it held `{}`: `{}`", r.path, r.shape),
                }
            }
            Some(r) if !r.definition.is_empty() && r.definition != spec.definition() => {
                if before.is_some_and(|(_, d)| d == r.definition) {
                    graph::PlanAction::Renamed { from: None }
                } else {
                    graph::PlanAction::Changed {
                        why: DEFINITION_CHANGED.into(),
                    }
                }
            }
            Some(_) => graph::PlanAction::Keep,
        };
        entries.push(graph::PlanEntry {
            path: schema.path.clone(),
            table: schema.name.clone(),
            action,
            rows: None,
        });
    }
    for table in query {
        if schemas.iter().any(|s| &s.name == table) || carried.contains(table) {
            continue;
        }
        let path = recorded
            .iter()
            .find(|r| &r.table == table)
            .map_or_else(|| table.clone(), |r| r.path.clone());
        entries.push(graph::PlanEntry {
            path,
            table: table.clone(),
            action: graph::PlanAction::Drop,
            rows: None,
        });
    }
    graph::MigrationPlan { entries }
}

/// The table of the state at `path` under `prefix`.
pub(crate) fn table_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{}", table_ident(path, prefix.len()))
}

/// The statements that rename the table of `old` (the same state under its
/// old path) to `new`'s, with its indexes (their names follow the table's).
/// The store's records of it are the caller's to update.
pub(crate) fn rename_statements(
    d: &dyn Dialect,
    old: &TableSchema,
    new: &TableSchema,
) -> Vec<String> {
    let mut out = vec![
        format!("DROP VIEW IF EXISTS {}", graph::view_ident(&old.name)),
        format!("ALTER TABLE {} RENAME TO {}", old.name, new.name),
    ];
    let pairs = created_indexes(d, old)
        .into_iter()
        .zip(created_indexes(d, new));
    if d.renames_indexes() {
        out.push(format!(
            "ALTER INDEX IF EXISTS {}_pkey RENAME TO {}_pkey",
            old.name, new.name
        ));
        out.extend(pairs.map(|(o, n)| format!("ALTER INDEX IF EXISTS {o} RENAME TO {n}")));
    } else {
        out.extend(pairs.map(|(o, _)| format!("DROP INDEX IF EXISTS {o}")));
        out.extend(create_statements(d, new).into_iter().skip(1));
    }
    out
}

/// The names of the SQL indexes `create_statements` makes for `schema`.
fn created_indexes(d: &dyn Dialect, schema: &TableSchema) -> Vec<String> {
    let mut out: Vec<String> = schema
        .indexes
        .iter()
        .filter(|ix| !(ix.columns.is_empty() || ix.columns == schema.clustered))
        .map(|ix| ix.name.clone())
        .collect();
    if schema.nested() {
        out.push(format!("{}__step", schema.name));
    }
    out.extend(schema.negative_index(d));
    out
}

/// Why an input stored under another row type cannot be read, and what
/// to do about it.
pub(crate) const OTHER_ROW_TYPE: &str = "the store holds it under another row type; declare `Query::migrate_input` to carry its rows over";

/// Why an input the store's query did not keep cannot be read.
pub(crate) const NOT_STORED: &str =
    "the store's query did not keep it (a transient input, or one it did not have)";

/// The row type a recorded shape (`StateSpec::shape`, with a SQL store's
/// layout after it) stores: its kind and value type, without the indexes
/// and columns. Two shapes with the same row type hold the same rows,
/// indexed differently.
pub(crate) fn row_type(shape: &str) -> &str {
    let end = [" | ", "; layout"]
        .iter()
        .filter_map(|sep| shape.find(sep))
        .min()
        .unwrap_or(shape.len());
    &shape[..end]
}

/// A migration that needs `input`, which the store does not keep (`why`).
pub(crate) fn input_not_kept(input: &str, why: &str) -> StoreError {
    StoreError::InputNotKept {
        state: String::new(),
        input: input.to_owned(),
        why: why.to_owned(),
    }
}

/// A stored input row the query's input migration cannot read.
pub(crate) fn unmigratable(table: &str, identity: i64, detail: String) -> StoreError {
    StoreError::Corrupt {
        table: table.to_owned(),
        identity: identity.to_string(),
        detail: format!("the input migration cannot read it: {detail}"),
    }
}

/// A reader's refusal: a state the store holds with the same shape but
/// computed differently (another version of the query) would be served
/// stale. Shape differences are left to the table checks.
pub(crate) fn reader_refusal(plan: graph::MigrationPlan) -> Result<(), StoreError> {
    let stale = plan.entries.iter().any(
        |e| matches!(&e.action, graph::PlanAction::Changed { why } if why == DEFINITION_CHANGED),
    );
    if stale {
        return Err(StoreError::QueryChanged {
            plan: Box::new(plan),
        });
    }
    Ok(())
}

/// Why a state whose definition differs is changed.
pub(crate) const DEFINITION_CHANGED: &str = "what computes it";
