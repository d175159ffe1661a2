//! A query that changes under a store that keeps its state: the store
//! refuses the changed query with a plan, or migrates (keeping what is
//! unchanged untouched, computing new and changed states from the kept
//! inputs, dropping what went), and the ingest goes on with the oracle's
//! answer.

use graph::PlanAction;
use operators::prelude::*;
use store::StoreError;

use crate::harness::{Kind, sql_kinds};

type R = Result<(), GraphError>;

type Item = (String, i64);

/// The variants of one query: items summed per key into a cache `sums`,
/// with what each version adds or changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Version {
    /// `items → sum of v by k → cache "sums"`.
    V1,
    /// V1 and a cache of the items themselves.
    AllItems,
    /// V1 summing `v * 2`, its version bumped.
    Doubled,
    /// The items cache alone: `sums` dropped.
    OnlyItems,
    /// V1 with the input transient, and a cache of the items' keys.
    TransientKeys,
}

struct Query {
    graph: Graph,
    items: Input<Item>,
    sums: Option<Cache<Pair<i64, String>>>,
    all: Option<Cache<Item>>,
}

fn query(version: Version) -> Result<Query, GraphError> {
    let by_key = Index::new("k", |i: &Item| i.0.clone());
    let (graph, (items, sums, all)) = Graph::build(|q| {
        let (input, items) = q.input::<Item>("items")?;
        let items = if version == Version::TransientKeys {
            items.transient()
        } else {
            items
        };
        let sums = match version {
            Version::OnlyItems => None,
            Version::Doubled => {
                let doubled = items.map(|i: &Item| (i.0.clone(), i.1 * 2)).version(2);
                Some(doubled.group_reduce_flatten(&by_key, 0i64, |i: &Item| i.1))
            }
            _ => Some(items.group_reduce_flatten(&by_key, 0i64, |i: &Item| i.1)),
        };
        let sums = sums.map(|s| q.cache("sums", s, &[])).transpose()?;
        let all = match version {
            Version::AllItems | Version::OnlyItems => Some(q.cache("all_items", items, &[])?),
            Version::TransientKeys => {
                q.cache("keys", items.map(|i: &Item| i.0.clone()), &[])?;
                None
            }
            _ => None,
        };
        Ok((input, sums, all))
    })?;
    Ok(Query {
        graph,
        items,
        sums,
        all,
    })
}

fn items(rows: &[(&str, i64)]) -> Vec<Item> {
    rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The per-key sums of `rows`, times `factor`, as the `sums` cache holds them.
fn sums(rows: &[Item], factor: i64) -> ZSet<Pair<i64, String>> {
    let mut by_key = std::collections::BTreeMap::new();
    for (k, v) in rows {
        *by_key.entry(k.clone()).or_insert(0) += v * factor;
    }
    by_key
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (Pair::new(v, k), 1))
        .collect()
}

fn sqlite_at(
    path: &std::path::Path,
    q: &Query,
    migrate: bool,
) -> Result<store::Sqlite, GraphError> {
    let mut options = store::OpenOptions::default();
    if migrate {
        options = options.migrate();
    }
    Ok(store::Sqlite::open(path, &q.graph, options)?)
}

fn plan_of(e: &GraphError) -> Option<&graph::MigrationPlan> {
    match e {
        GraphError::Store(StoreError::QueryChanged { plan }) => Some(plan),
        _ => None,
    }
}

fn action<'p>(plan: &'p graph::MigrationPlan, path: &str) -> Option<&'p PlanAction> {
    plan.entries
        .iter()
        .find(|e| e.path == path)
        .map(|e| &e.action)
}

/// Issue 22's first reproduction: a new cache used to be created empty at
/// time 0, serve `{}` and wedge every insert after it (`FrontierTimeout`).
#[test]
fn a_new_cache_is_refused_with_a_plan_then_migrated_from_the_kept_input() -> R {
    for kind in sql_kinds() {
        if kind != Kind::Sqlite {
            continue;
        }
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
        let path = dir.path().join("state.db");
        let v1 = query(Version::V1)?;
        let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        {
            let mut store = sqlite_at(&path, &v1, false)?;
            v1.graph.insert(&mut store, &v1.items, fed.clone())?;
        }
        let v2 = query(Version::AllItems)?;
        let err = sqlite_at(&path, &v2, false).expect_err("a changed query");
        let plan = plan_of(&err).unwrap_or_else(|| panic!("{kind:?}: {err}"));
        assert_eq!(action(plan, "all_items"), Some(&PlanAction::New), "{plan}");
        assert_eq!(action(plan, "sums"), Some(&PlanAction::Keep), "{plan}");
        assert_eq!(action(plan, "items"), Some(&PlanAction::Keep), "{plan}");
        assert!(err.to_string().contains("all_items"), "{err}");
        // Refusing changed nothing: the old query still runs.
        {
            let mut store = sqlite_at(&path, &v1, false)?;
            assert_eq!(
                v1.sums.as_ref().map(|c| c.zset(&mut store)).transpose()?,
                Some(sums(&fed, 1))
            );
        }
        let mut store = sqlite_at(&path, &v2, true)?;
        let done = store.migration().cloned().expect("a migration");
        assert_eq!(
            done.entries
                .iter()
                .find(|e| e.path == "all_items")
                .and_then(|e| e.rows),
            Some(3),
            "{done}"
        );
        // Only the new state was written.
        assert_eq!(store.stats().rows_written, 3, "{done}");
        let all = v2.all.as_ref().expect("the items cache");
        let expected: ZSet<Item> = fed.iter().map(|i| (i.clone(), 1)).collect();
        assert_eq!(all.zset(&mut store)?, expected);
        // The ingest goes on, at once, with the oracle's answer.
        let more = items(&[("b", 5), ("c", 1)]);
        v2.graph.insert(&mut store, &v2.items, more.clone())?;
        fed.extend(more);
        let expected: ZSet<Item> = fed.iter().map(|i| (i.clone(), 1)).collect();
        assert_eq!(all.zset(&mut store)?, expected);
        let cache = v2.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut store)?, sums(&fed, 1));
        // Reopening finds nothing to migrate.
        drop(store);
        let store = sqlite_at(&path, &v2, false)?;
        assert!(store.migration().is_none());
    }
    Ok(())
}

/// Issue 22's second reproduction: a changed function served the old
/// sums. With its version bumped, the state is changed and computed again.
#[test]
fn a_changed_function_with_its_version_bumped_is_computed_again() -> R {
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("state.db");
    let v1 = query(Version::V1)?;
    let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
    {
        let mut store = sqlite_at(&path, &v1, false)?;
        v1.graph.insert(&mut store, &v1.items, fed.clone())?;
    }
    let v3 = query(Version::Doubled)?;
    let err = sqlite_at(&path, &v3, false).expect_err("a changed query");
    let plan = plan_of(&err).unwrap_or_else(|| panic!("{err}"));
    assert!(
        matches!(action(plan, "sums"), Some(PlanAction::Changed { .. })),
        "{plan}"
    );
    assert_eq!(action(plan, "items"), Some(&PlanAction::Keep), "{plan}");
    let mut store = sqlite_at(&path, &v3, true)?;
    let cache = v3.sums.as_ref().expect("sums");
    assert_eq!(cache.zset(&mut store)?, sums(&fed, 2));
    let more = items(&[("a", -1), ("d", 4)]);
    v3.graph.insert(&mut store, &v3.items, more.clone())?;
    fed.extend(more);
    assert_eq!(cache.zset(&mut store)?, sums(&fed, 2));
    Ok(())
}

/// A state the new query lacks is dropped, its table removed.
#[test]
fn a_dropped_state_loses_its_table() -> R {
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("state.db");
    let v1 = query(Version::V1)?;
    {
        let mut store = sqlite_at(&path, &v1, false)?;
        v1.graph
            .insert(&mut store, &v1.items, items(&[("a", 1), ("b", 2)]))?;
    }
    let v4 = query(Version::OnlyItems)?;
    let mut store = sqlite_at(&path, &v4, true)?;
    let done = store.migration().cloned().expect("a migration");
    assert!(
        done.entries
            .iter()
            .any(|e| e.path == "sums" && e.action == PlanAction::Drop),
        "{done}"
    );
    let tables: Vec<String> = store
        .connection()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| StoreError::backend("listing tables", e))?;
    assert!(!tables.iter().any(|t| t == "st_sums"), "{tables:?}");
    let all = v4.all.as_ref().expect("items");
    assert_eq!(all.zset(&mut store)?.len(), 2);
    assert_eq!(store.last_time()?, 1);
    Ok(())
}

/// A migration that needs an input the store does not keep is refused,
/// naming it, and changes nothing.
#[test]
fn a_transient_input_refuses_a_backfill_naming_it() -> R {
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("state.db");
    let v1 = query(Version::TransientKeys)?;
    {
        let mut store = sqlite_at(&path, &v1, false)?;
        v1.graph
            .insert(&mut store, &v1.items, items(&[("a", 1), ("b", 2)]))?;
    }
    let v2 = query(Version::AllItems)?;
    let err = sqlite_at(&path, &v2, true).expect_err("the input is not kept");
    assert!(
        matches!(&err, GraphError::Store(StoreError::InputNotKept { input, .. }) if input == "items"),
        "{err}"
    );
    // Nothing changed: the old query still opens and runs.
    let mut store = sqlite_at(&path, &v1, false)?;
    v1.graph.insert(&mut store, &v1.items, items(&[("c", 1)]))?;
    Ok(())
}
