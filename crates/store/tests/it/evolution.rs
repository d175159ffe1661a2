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

mod carry;
mod verify;

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
    /// V1 summing `v * 2` without a version bump: the change the engine
    /// cannot see.
    DoubledSilently,
    /// The items cache alone: `sums` dropped.
    OnlyItems,
    /// V1 with the input transient, and a cache of the items' keys.
    TransientKeys,
    /// V1 with the input called `entries` and the cache `totals`, saying
    /// what they were called before.
    Renamed,
    /// `Renamed` once migrated: the old names no longer mentioned.
    RenamedSettled,
}

struct Query {
    graph: Graph,
    items: Input<Item>,
    sums: Option<Cache<Pair<i64, String>>>,
    all: Option<Cache<Item>>,
}

fn query(version: Version) -> Result<Query, GraphError> {
    let by_key = Index::new("k", |i: &Item| i.0.clone());
    let renamed = matches!(version, Version::Renamed | Version::RenamedSettled);
    let (input_name, sums_name) = if renamed {
        ("entries", "totals")
    } else {
        ("items", "sums")
    };
    let (graph, (items, sums, all)) = Graph::build(|q| {
        if version == Version::Renamed {
            q.renamed("items", "entries");
            q.renamed("sums", "totals");
        }
        let (input, items) = q.input::<Item>(input_name)?;
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
            Version::DoubledSilently => {
                let doubled = items.map(|i: &Item| (i.0.clone(), i.1 * 2));
                Some(doubled.group_reduce_flatten(&by_key, 0i64, |i: &Item| i.1))
            }
            _ => {
                let same = items.map(|i: &Item| (i.0.clone(), i.1));
                Some(same.group_reduce_flatten(&by_key, 0i64, |i: &Item| i.1))
            }
        };
        let sums = sums.map(|s| q.cache(sums_name, s, &[])).transpose()?;
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

/// Where a test's store lives: a SQLite file or a Postgres prefix (whose
/// tables are dropped when the place is).
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Drop for Place {
    fn drop(&mut self) {
        if let (Place::Postgres(prefix), Some(url)) = (&*self, crate::harness::pg_url()) {
            let _ = benches::pg::drop_tables_with_prefix(&url, prefix);
        }
    }
}

/// An open store, with the migration its open carried out.
struct Opened {
    store: Box<dyn graph::StateStore>,
    migration: Option<graph::MigrationPlan>,
    rows_written: u64,
}

impl Place {
    fn new(kind: Kind) -> Result<Place, GraphError> {
        Ok(match kind {
            Kind::Postgres => Place::Postgres(crate::harness::unique_prefix()),
            _ => Place::Sqlite(tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?),
        })
    }

    fn open(&self, q: &Query, migrate: bool) -> Result<Opened, GraphError> {
        self.open_with(q, migrate, store::OpenOptions::default())
    }

    /// Opens to read only, as another service would.
    fn attach(&self, q: &Query) -> Result<Opened, GraphError> {
        self.open_with(q, false, store::OpenOptions::attach())
    }

    fn open_with(
        &self,
        q: &Query,
        migrate: bool,
        options: store::OpenOptions,
    ) -> Result<Opened, GraphError> {
        self.open_graph(&q.graph, migrate, options)
    }

    fn open_graph(
        &self,
        graph: &Graph,
        migrate: bool,
        mut options: store::OpenOptions,
    ) -> Result<Opened, GraphError> {
        if migrate {
            options = options.migrate();
        }
        Ok(match self {
            Place::Sqlite(dir) => {
                let s = store::Sqlite::open(dir.path().join("state.db"), graph, options)?;
                Opened {
                    migration: s.migration().cloned(),
                    rows_written: s.stats().rows_written,
                    store: Box::new(s),
                }
            }
            Place::Postgres(prefix) => {
                let pool = crate::harness::pg_pool().expect("Postgres is configured");
                options.prefix = prefix.clone();
                let s = store::Postgres::with_pool(pool, graph, options)?;
                Opened {
                    migration: s.migration().cloned(),
                    rows_written: s.stats().rows_written,
                    store: Box::new(s),
                }
            }
        })
    }

    /// `verify` (or `repair`) of the store for `q`: on SQLite from the
    /// graph's side (`GraphVerify`), on Postgres from the store's.
    fn verify(&self, q: &Query, repair: bool) -> Result<store::Verification, GraphError> {
        use store::{GraphVerify, Verifiable};
        match self {
            Place::Sqlite(dir) => {
                let options = store::OpenOptions::default();
                let mut s = store::Sqlite::open(dir.path().join("state.db"), &q.graph, options)?;
                if repair {
                    q.graph.repair(&mut s)
                } else {
                    q.graph.verify(&mut s)
                }
            }
            Place::Postgres(prefix) => {
                let pool = crate::harness::pg_pool().expect("Postgres is configured");
                let options = store::OpenOptions {
                    prefix: prefix.clone(),
                    ..store::OpenOptions::default()
                };
                let mut s = store::Postgres::with_pool(pool, &q.graph, options)?;
                Ok(if repair { s.repair()? } else { s.verify()? })
            }
        }
    }

    /// Runs `sql` on the store's database, `{p}` standing for the prefix.
    fn execute(&self, sql: &str) {
        match self {
            Place::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("state.db")).expect("open");
                conn.execute_batch(&sql.replace("{p}", "st_"))
                    .expect("hand edit");
            }
            Place::Postgres(prefix) => {
                let sql = sql.replace("{p}", prefix);
                crate::harness::with_pg_client(async |c| {
                    c.batch_execute(&sql).await.expect("hand edit");
                })
            }
        }
    }

    /// Whether the store has a table named `table` (after the prefix).
    fn has_table(&self, table: &str) -> bool {
        match self {
            Place::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("state.db")).expect("open");
                conn.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                    [format!("st_{table}")],
                    |r| r.get::<_, i64>(0),
                )
                .expect("sqlite_master")
                    > 0
            }
            Place::Postgres(prefix) => {
                let name = format!("{prefix}{table}");
                crate::harness::with_pg_client(async |c| {
                    c.query_one(
                        "SELECT count(*) FROM pg_tables WHERE tablename = $1",
                        &[&name],
                    )
                    .await
                    .and_then(|r| r.try_get::<_, i64>(0))
                    .expect("pg_tables")
                        > 0
                })
            }
        }
    }
}

/// A store at `place` written by `version` of the query with `rows`.
fn seeded(place: &Place, version: Version, rows: &[Item]) -> Result<Query, GraphError> {
    let q = query(version)?;
    let mut o = place.open(&q, false)?;
    q.graph.insert(&mut *o.store, &q.items, rows.to_vec())?;
    Ok(q)
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
        let place = Place::new(kind)?;
        let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        let v1 = seeded(&place, Version::V1, &fed)?;
        let v2 = query(Version::AllItems)?;
        let err = place.open(&v2, false).err().expect("a changed query");
        let plan = plan_of(&err).unwrap_or_else(|| panic!("{kind:?}: {err}"));
        assert_eq!(
            action(plan, "all_items"),
            Some(&PlanAction::New),
            "{kind:?}: {plan}"
        );
        assert_eq!(
            action(plan, "sums"),
            Some(&PlanAction::Keep),
            "{kind:?}: {plan}"
        );
        assert_eq!(
            action(plan, "items"),
            Some(&PlanAction::Keep),
            "{kind:?}: {plan}"
        );
        assert!(err.to_string().contains("all_items"), "{err}");
        // Refusing changed nothing: the old query still runs.
        {
            let mut o = place.open(&v1, false)?;
            let cache = v1.sums.as_ref().expect("sums");
            assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        }
        let mut o = place.open(&v2, true)?;
        let done = o.migration.clone().expect("a migration");
        assert_eq!(
            done.entries
                .iter()
                .find(|e| e.path == "all_items")
                .and_then(|e| e.rows),
            Some(3),
            "{kind:?}: {done}"
        );
        // Only the new state was written: no row of a kept state.
        assert_eq!(o.rows_written, 3, "{kind:?}: {done}");
        let all = v2.all.as_ref().expect("the items cache");
        let expected: ZSet<Item> = fed.iter().map(|i| (i.clone(), 1)).collect();
        assert_eq!(all.zset(&mut *o.store)?, expected, "{kind:?}");
        // The ingest goes on, at once, with the oracle's answer.
        let more = items(&[("b", 5), ("c", 1)]);
        v2.graph.insert(&mut *o.store, &v2.items, more.clone())?;
        fed.extend(more);
        let expected: ZSet<Item> = fed.iter().map(|i| (i.clone(), 1)).collect();
        assert_eq!(all.zset(&mut *o.store)?, expected, "{kind:?}");
        let cache = v2.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 1), "{kind:?}");
        // Reopening finds nothing to migrate.
        drop(o);
        assert!(place.open(&v2, false)?.migration.is_none(), "{kind:?}");
    }
    Ok(())
}

/// Issue 22's second reproduction: a changed function served the old
/// sums. With its version bumped, the state is changed and computed again.
#[test]
fn a_changed_function_with_its_version_bumped_is_computed_again() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let mut fed = items(&[("a", 1), ("b", 2), ("a", 3)]);
        seeded(&place, Version::V1, &fed)?;
        let v3 = query(Version::Doubled)?;
        let err = place.open(&v3, false).err().expect("a changed query");
        let plan = plan_of(&err).unwrap_or_else(|| panic!("{kind:?}: {err}"));
        assert!(
            matches!(action(plan, "sums"), Some(PlanAction::Changed { .. })),
            "{kind:?}: {plan}"
        );
        assert_eq!(
            action(plan, "items"),
            Some(&PlanAction::Keep),
            "{kind:?}: {plan}"
        );
        let mut o = place.open(&v3, true)?;
        let cache = v3.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 2), "{kind:?}");
        let more = items(&[("a", -1), ("d", 4)]);
        v3.graph.insert(&mut *o.store, &v3.items, more.clone())?;
        fed.extend(more);
        assert_eq!(cache.zset(&mut *o.store)?, sums(&fed, 2), "{kind:?}");
    }
    Ok(())
}

/// A state the new query lacks is dropped, its table removed.
#[test]
fn a_dropped_state_loses_its_table() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        seeded(&place, Version::V1, &items(&[("a", 1), ("b", 2)]))?;
        assert!(place.has_table("sums"), "{kind:?}");
        let v4 = query(Version::OnlyItems)?;
        let mut o = place.open(&v4, true)?;
        let done = o.migration.clone().expect("a migration");
        assert!(
            done.entries
                .iter()
                .any(|e| e.path == "sums" && e.action == PlanAction::Drop),
            "{kind:?}: {done}"
        );
        assert!(!place.has_table("sums"), "{kind:?}");
        let all = v4.all.as_ref().expect("items");
        assert_eq!(all.zset(&mut *o.store)?.len(), 2, "{kind:?}");
        assert_eq!(o.store.last_time()?, 1, "{kind:?}");
    }
    Ok(())
}

/// A migration that needs an input the store does not keep is refused,
/// naming it, and changes nothing.
#[test]
fn a_transient_input_refuses_a_backfill_naming_it() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let v1 = seeded(
            &place,
            Version::TransientKeys,
            &items(&[("a", 1), ("b", 2)]),
        )?;
        let v2 = query(Version::AllItems)?;
        let err = place.open(&v2, true).err().expect("the input is not kept");
        assert!(
            matches!(&err, GraphError::Store(StoreError::InputNotKept { input, .. }) if input == "items"),
            "{kind:?}: {err}"
        );
        // Nothing changed: the old query still opens and runs.
        let mut o = place.open(&v1, false)?;
        v1.graph
            .insert(&mut *o.store, &v1.items, items(&[("c", 1)]))?;
    }
    Ok(())
}

/// A process still running the old query gets `QueryChanged` at its next
/// iteration after a migration, never a silent write into migrated tables.
#[test]
fn a_handle_of_the_old_query_is_refused_after_a_migration() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let v1 = query(Version::V1)?;
        let fed = items(&[("a", 1), ("b", 2)]);
        let mut old = place.open(&v1, false)?;
        v1.graph.insert(&mut *old.store, &v1.items, fed.clone())?;
        let v3 = query(Version::Doubled)?;
        let mut new = place.open(&v3, true)?;
        let err = v1
            .graph
            .insert(&mut *old.store, &v1.items, items(&[("a", 10)]))
            .expect_err("the store was migrated");
        assert!(plan_of(&err).is_some(), "{kind:?}: {err}");
        let cache = v3.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut *new.store)?, sums(&fed, 2), "{kind:?}");
        // The migrated store goes on.
        v3.graph
            .insert(&mut *new.store, &v3.items, items(&[("a", 10)]))?;
        let mut all = fed.clone();
        all.extend(items(&[("a", 10)]));
        assert_eq!(cache.zset(&mut *new.store)?, sums(&all, 2), "{kind:?}");
    }
    Ok(())
}

/// A reader built with another version of the query is refused rather
/// than served the old version's rows; one built with the same version
/// reads them.
#[test]
fn a_reader_of_another_version_is_refused_not_served_stale_rows() -> R {
    for kind in sql_kinds() {
        let place = Place::new(kind)?;
        let fed = items(&[("a", 1), ("b", 2)]);
        let v1 = seeded(&place, Version::V1, &fed)?;
        let v3 = query(Version::Doubled)?;
        let err = place.attach(&v3).err().expect("another version");
        assert!(plan_of(&err).is_some(), "{kind:?}: {err}");
        let mut reader = place.attach(&v1)?;
        let cache = v1.sums.as_ref().expect("sums");
        assert_eq!(cache.zset(&mut *reader.store)?, sums(&fed, 1), "{kind:?}");
    }
    Ok(())
}
