//! The store's own tables live where no state can be named: caches named
//! like them (`tables`, `last_update`, `failed_batches`, `time`) are
//! ordinary states; a store made when the store's own tables had those
//! names is renamed when opened and keeps working; and two states that a
//! SQL store would keep in one table are refused when the query is built,
//! whatever the store.

use graph::Time;
use operators::prelude::*;
use store::{PgSequence, Postgres};

use crate::harness::{Kind, Opened, kinds, sql_kinds};

type R = Result<(), GraphError>;

/// `Users` is cleaned into `users_` and a hash of it, `users_10aa8ba6`,
/// which is also a name a user may write: the query is refused when it is
/// built, naming both paths, so no store ever sees it (Memory, which has no
/// tables, took it, and the SQL stores refused it at open).
#[test]
fn states_whose_tables_would_share_a_name_are_a_build_error() -> R {
    let built = Graph::build(|q| {
        let (input, rows) = q.input::<i64>("rows")?;
        let users = q.cache("Users", rows, &[])?;
        let others = q.cache("users_10aa8ba6", rows.map(|x| x + 1), &[])?;
        Ok((input, users, others))
    });
    let (first, second, table) = collision(built);
    assert_eq!(
        (first.as_str(), second.as_str(), table.as_str()),
        ("Users", "users_10aa8ba6", "users_10aa8ba6")
    );
    // Names that differ once cleaned are kept apart on every store.
    for kind in kinds() {
        let (graph, (input, users, others)) = Graph::build(|q| {
            let (input, rows) = q.input::<i64>("rows")?;
            let users = q.cache("Users", rows, &[])?;
            let others = q.cache("users", rows.map(|x| x + 1), &[])?;
            Ok((input, users, others))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1])?;
        assert_eq!(
            users.zset(&mut *store)?,
            [(1, 1)].into_iter().collect(),
            "{kind:?}"
        );
        assert_eq!(
            others.zset(&mut *store)?,
            [(2, 1)].into_iter().collect(),
            "{kind:?}"
        );
    }
    Ok(())
}

/// A state whose table would take the name of another table's index (its
/// primary key's, or a Z-set's index of negative weights) is refused when
/// the query is built, as on Postgres the table could not be made.
#[test]
fn a_state_named_like_another_tables_index_is_a_build_error() -> R {
    for (name, index) in [("daily_pkey", "daily_pkey"), ("daily__neg", "daily__neg")] {
        let built = Graph::build(|q| {
            let (input, rows) = q.input::<i64>("rows")?;
            let daily = q.cache("daily", rows, &[])?;
            let other = q.cache(name, rows.map(|x| x + 1), &[])?;
            Ok((input, daily, other))
        });
        let (first, second, table) = collision(built);
        assert_eq!(first.as_str(), "daily", "{name}");
        assert_eq!(second.as_str(), name);
        assert!(table.starts_with(index), "{name}: {table}");
    }
    Ok(())
}

/// The two paths and the name of the collision `built` must be.
fn collision<T>(built: Result<T, GraphError>) -> (String, String, String) {
    match built {
        Err(GraphError::TableNameCollision {
            first,
            second,
            table,
            ..
        }) => (first.to_string(), second.to_string(), table),
        Err(other) => panic!("expected a table name collision, got {other}"),
        Ok(_) => panic!("the colliding states were accepted"),
    }
}

/// Whether `name` is a table or sequence of `store`'s database.
fn exists(kind: Kind, store: &Opened, name: &str) -> bool {
    let query = match kind {
        Kind::Sqlite => format!("SELECT count(*) FROM sqlite_master WHERE name = '{name}'"),
        _ => format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{name}' AND pg_table_is_visible(oid)"
        ),
    };
    store.scalar(&query) == 1
}

fn numbers() -> Result<(Graph, (Input<i64>, Cache<i64>)), GraphError> {
    Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        Ok((input, q.cache("numbers", n.transient(), &[])?))
    })
}

/// A store made when the store's own tables were `<prefix>tables`,
/// `<prefix>last_update`, `<prefix>failed_batches` and (Postgres) the
/// sequence `<prefix>time`: opening it, even only to attach, renames them
/// (with their primary keys) and it carries on: its state, times, failed
/// batches and time sequence are as they were.
#[test]
fn a_store_with_the_earlier_names_of_its_own_tables_keeps_working() -> R {
    for kind in sql_kinds() {
        let (graph, (input, cache)) = numbers()?;
        let mut store = kind.open(&graph)?;
        let p = store.prefix().to_owned();
        graph.insert(&mut *store, &input, [1, 2])?;
        let failed = Changes::new().insert(&input, [3]).encode()?;
        store.record_failure(Time::new(2, 1), 7, &failed, "it failed")?;
        // What the earlier version left: the same tables under its names.
        let mut earlier = String::new();
        for what in ["tables", "last_update", "failed_batches"] {
            earlier += &format!("ALTER TABLE {p}0_{what} RENAME TO {p}{what};");
            if kind == Kind::Postgres {
                earlier += &format!("ALTER INDEX {p}0_{what}_pkey RENAME TO {p}{what}_pkey;");
            }
        }
        // The earlier version recorded no definitions.
        earlier += &format!("ALTER TABLE {p}tables DROP COLUMN definition;");
        if kind == Kind::Postgres {
            // Times up to 9 handed out.
            earlier += &format!("CREATE SEQUENCE {p}time START WITH 10;");
        }
        store.sql(&earlier);
        let mut store = store.reopen(&graph)?;
        let what = format!("{kind:?}");
        for own in ["tables", "last_update", "failed_batches"] {
            assert!(
                exists(kind, &store, &format!("{p}0_{own}")),
                "{what}: {own}"
            );
            assert!(!exists(kind, &store, &format!("{p}{own}")), "{what}: {own}");
            if kind == Kind::Postgres {
                assert!(exists(kind, &store, &format!("{p}0_{own}_pkey")), "{what}");
            }
        }
        assert_eq!(store.last_time()?, 2, "{what}");
        let recorded = store.failed_batches()?;
        assert_eq!(recorded.len(), 1, "{what}");
        assert_eq!(
            (recorded[0].input_time, recorded[0].batch),
            (2, 7),
            "{what}"
        );
        assert_eq!(cache.zset(&mut *store)?.len(), 2, "{what}");
        let retried = parallel::retry(&graph, &mut *store)
            .map_err(|e| graph::StoreError::backend("retrying", e.to_string()))?;
        assert_eq!(retried.retried.len(), 1, "{what}");
        assert_eq!(cache.zset(&mut *store)?.len(), 3, "{what}");
        if let Some(pg) = store.postgres() {
            let options = store::OpenOptions {
                prefix: p.clone(),
                ..store::OpenOptions::default()
            };
            let mut other = Postgres::with_pool(pg.connection_pool().clone(), &graph, options)?;
            let seq = PgSequence::of(&mut other)?;
            assert_eq!(seq.next()?, 10, "{what}: the earlier sequence carries on");
            assert!(exists(kind, &store, &format!("{p}0_time")), "{what}");
            assert!(!exists(kind, &store, &format!("{p}time")), "{what}");
        }
        graph.insert(&mut *store, &input, [4])?;
        assert_eq!(cache.zset(&mut *store)?.len(), 4, "{what}");
    }
    Ok(())
}

/// A store made by the earlier version with a cache named
/// `failed_batches` (a state's table under the name the store's own table
/// had, so that its first failed batch could not be recorded): the state's
/// table is not mistaken for the store's own, and a failed batch is now
/// recorded beside it.
#[test]
fn a_state_under_an_earlier_name_of_the_stores_own_is_left_alone() -> R {
    for kind in sql_kinds() {
        let (graph, (input, cache)) = Graph::build(|q| {
            let (input, n) = q.input::<i64>("n")?;
            Ok((input, q.cache("failed_batches", n.transient(), &[])?))
        })?;
        let mut store = kind.open(&graph)?;
        let p = store.prefix().to_owned();
        graph.insert(&mut *store, &input, [1, 2])?;
        let mut earlier = String::new();
        for what in ["tables", "last_update"] {
            earlier += &format!("ALTER TABLE {p}0_{what} RENAME TO {p}{what};");
        }
        // The earlier version recorded no definitions.
        earlier += &format!("ALTER TABLE {p}tables DROP COLUMN definition;");
        store.sql(&earlier);
        let mut store = store.reopen(&graph)?;
        let what = format!("{kind:?}");
        assert_eq!(cache.zset(&mut *store)?.len(), 2, "{what}");
        let failed = Changes::new().insert(&input, [3]).encode()?;
        store.record_failure(Time::new(2, 1), 0, &failed, "it failed")?;
        assert_eq!(store.failed_batches()?.len(), 1, "{what}");
        assert!(
            exists(kind, &store, &format!("{p}0_failed_batches")),
            "{what}"
        );
        assert_eq!(cache.zset(&mut *store)?.len(), 2, "{what}");
    }
    Ok(())
}
