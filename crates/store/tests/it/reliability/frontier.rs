//! Identity collisions and waiting for the frontier on the SQL stores: a
//! refused iteration changes no table, and a serial or pipelined iteration
//! never reads or moves past an iteration half-committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graph::identity_of;
use operators::prelude::*;
use store::StoreError;

use super::codecs::encode_rows;
use super::values::names_and_doubled;
use super::{R, Target};
use crate::harness::{Kind, sql_kinds, with_pg_client};

/// A store of [`names_and_doubled`] after inserting "x", whose row in
/// `names_cache` then has its value rewritten to "y" under x's identity (a
/// collision waiting for the next write of "x"); and that table's name.
pub(super) fn x_holding_y(
    kind: Kind,
    graph: &Graph,
    input: &Input<String>,
) -> Result<(Target, String), GraphError> {
    let bytes = |v: &str| encode_rows(graph, "names_cache", vec![v.to_string()]).remove(0);
    let mut store = Target::open(kind, graph)?;
    graph.insert(&mut *store, input, ["x".to_string()])?;
    let table = store.table("names_cache");
    store.execute(&format!(
        "UPDATE {table} SET data = {} WHERE identity = {}",
        store.blob(&bytes("y")),
        identity_of(&bytes("x"))
    ));
    Ok((store, table))
}

/// Two values under one identity (a 64-bit collision, made here by
/// rewriting a stored row's value): the write is refused with a typed error
/// naming the table and the identity, no table of the iteration changes,
/// and the next iteration goes through. On Postgres the refusal comes from
/// the server (the iteration's `COMMIT` is pipelined behind its writes).
#[test]
fn an_identity_collision_is_a_typed_error_and_changes_no_table_on_every_sql_store() -> R {
    let (graph, (input, _, doubled)) = names_and_doubled()?;
    let bytes = |v: &str| encode_rows(&graph, "names_cache", vec![v.to_string()]).remove(0);
    for kind in sql_kinds() {
        let (mut store, table) = x_holding_y(kind, &graph, &input)?;
        let before = store.last_time()?;
        match graph.insert(&mut *store, &input, ["x".to_string(), "w".to_string()]) {
            Err(GraphError::Store(StoreError::IdentityCollision { table: t, identity })) => {
                assert_eq!(t, table, "{kind:?}");
                assert_eq!(identity, identity_of(&bytes("x")), "{kind:?}");
            }
            other => panic!("{kind:?}: expected an identity collision, got {other:?}"),
        }
        assert_eq!(store.last_time()?, before, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => 1 },
            "{kind:?}"
        );
        // Only the damaged row ("w" was not added with it).
        assert_eq!(
            store.scalar(&format!("SELECT count(*) FROM {table}")),
            1,
            "{kind:?}"
        );
        // Not wedged.
        graph.insert(&mut *store, &input, ["z".to_string()])?;
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "xx".to_string() => 1, "zz".to_string() => 1 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// The same collision in a pipelined iteration, where each table commits on
/// its own (on Postgres `BEGIN`, the writes, the time and `COMMIT` go out
/// together): the colliding table's transaction is refused whole, the error
/// is typed, and the connection goes back to the pool usable.
#[test]
fn an_identity_collision_in_a_pipelined_iteration_changes_not_its_table_on_every_sql_store() -> R {
    let (graph, (input, cache, doubled)) = names_and_doubled()?;
    let bytes = |v: &str| encode_rows(&graph, "names_cache", vec![v.to_string()]).remove(0);
    for kind in sql_kinds() {
        let (mut store, table) = x_holding_y(kind, &graph, &input)?;
        let next = store.next_time()?;
        let changes = Changes::new().insert(&input, ["x".to_string(), "w".to_string()]);
        match graph.iteration_at(&mut *store, changes, Time::new(next, next - 1).pipelined()) {
            Err(GraphError::Store(StoreError::IdentityCollision { table: t, identity })) => {
                assert_eq!(t, table, "{kind:?}");
                assert_eq!(identity, identity_of(&bytes("x")), "{kind:?}");
            }
            other => panic!("{kind:?}: expected an identity collision, got {other:?}"),
        }
        // Only the damaged row ("w" was not added with it).
        assert_eq!(
            store.scalar(&format!("SELECT count(*) FROM {table}")),
            1,
            "{kind:?}"
        );
        // Every connection is usable: reads through the pool go through,
        // more times than the pool has connections. (The damaged table
        // itself reads as corrupt, as it should.)
        for _ in 0..10 {
            assert!(
                doubled.zset(&mut *store)?.contains(&"xx".to_string()),
                "{kind:?}"
            );
        }
        assert!(
            matches!(
                cache.zset(&mut *store),
                Err(GraphError::Store(StoreError::Corrupt { .. }))
            ),
            "{kind:?}"
        );
    }
    Ok(())
}

/// A serial iteration (`Graph::insert`, at the store's next time) while an
/// earlier iteration has committed some tables and not yet the others (a
/// pipelined worker, simulated by moving one table's `last_update`): it
/// waits for the stragglers, then runs after every committed iteration.
/// (Postgres finds the time inside the iteration's transaction.)
#[test]
fn a_serial_iteration_waits_for_an_iteration_half_committed_on_every_sql_store() -> R {
    let (graph, (input, _, doubled)) = names_and_doubled()?;
    for kind in sql_kinds() {
        let mut store = Target::open(kind, &graph)?;
        graph.insert(&mut *store, &input, ["a".to_string()])?;
        let (names, doubled_table) = (store.table("names_cache"), store.table("doubled_cache"));
        let last_update = format!("{}0_last_update", store.prefix());
        let set = |table: &str, t: i64| {
            format!("UPDATE {last_update} SET t = {t} WHERE table_name = '{table}'")
        };
        store.execute(&set(&doubled_table, 2));
        with_straggler(kind, &mut store, set(&names, 2), |store| {
            graph.insert(&mut **store, &input, ["b".to_string()])?;
            Ok(())
        })?;
        assert_eq!(store.last_time()?, 3, "{kind:?}");
        assert_eq!(
            doubled.zset(&mut *store)?,
            zset! { "aa".to_string() => 1, "bb".to_string() => 1 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// A pipelined iteration whose tables are all behind its frontier (an
/// earlier worker not done yet, simulated by moving `last_update` later):
/// it waits before reading a state, and before moving a table with nothing
/// to write on in time (on Postgres one statement that moves it only if it
/// is at the frontier), then runs as if serial.
#[test]
fn a_pipelined_iteration_waits_for_its_frontier_before_reading_or_moving_on_every_sql_store() -> R {
    // Reading first: the sum's state is read before anything is written.
    let (summing, (numbers, sum)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.output("sum", x.reduce(0i64, |v| *v))?))
    })?;
    // Moving on first: an empty change leaves the cache nothing to write.
    let (caching, (cached, cache)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.cache("numbers", x, &[])?))
    })?;
    for kind in sql_kinds() {
        let mut store = Target::open(kind, &summing)?;
        graph_insert_then_behind(kind, &mut store, &summing, &numbers, |store| {
            let out = summing.iteration_at(
                &mut **store,
                Changes::new().insert(&numbers, [2]),
                Time::new(3, 2).pipelined(),
            )?;
            assert_eq!(out.get(&sum)?, &zset! { 1 => -1, 3 => 1 }, "{kind:?}");
            Ok(())
        })?;
        let mut store = Target::open(kind, &caching)?;
        graph_insert_then_behind(kind, &mut store, &caching, &cached, |store| {
            caching.iteration_at(&mut **store, Changes::new(), Time::new(3, 2).pipelined())?;
            assert_eq!(cache.zset(&mut **store)?, zset! { 1 => 1 }, "{kind:?}");
            Ok(())
        })?;
    }
    Ok(())
}

/// Inserts 1 (time 1), then runs `iteration` while every table's
/// `last_update` stays at 1 for 300 ms and only then reaches 2: checks the
/// iteration did not finish before, and that the store's time is then 3.
pub(super) fn graph_insert_then_behind(
    kind: Kind,
    store: &mut Target,
    graph: &Graph,
    input: &Input<i64>,
    iteration: impl FnOnce(&mut Target) -> R,
) -> R {
    graph.insert(&mut **store, input, [1])?;
    // Every table's time, not the query's generation (a row of the same
    // table, which only a migration moves).
    let p = store.prefix();
    let late = format!("UPDATE {p}0_last_update SET t = 2 WHERE table_name <> '{p}0_query'");
    with_straggler(kind, store, late, iteration)?;
    assert_eq!(store.last_time()?, 3, "{kind:?}");
    Ok(())
}

/// Runs `iteration` while a straggler thread waits 300 ms and then runs
/// `late` (SQL moving `last_update` on, as an earlier worker finishing
/// would) on its own connection; checks the iteration did not finish
/// before the straggler ran.
pub(super) fn with_straggler(
    kind: Kind,
    store: &mut Target,
    late: String,
    iteration: impl FnOnce(&mut Target) -> R,
) -> R {
    let bumped = Arc::new(AtomicBool::new(false));
    let sqlite = match &*store {
        Target::Sqlite { store, .. } => Some(store.path().to_path_buf()),
        Target::Harness(_) => None,
    };
    let straggler = std::thread::spawn({
        let bumped = Arc::clone(&bumped);
        move || {
            std::thread::sleep(Duration::from_millis(300));
            bumped.store(true, Ordering::SeqCst);
            match sqlite {
                Some(path) => rusqlite::Connection::open(path)
                    .and_then(|c| c.execute_batch(&late))
                    .expect("sqlite"),
                None => with_pg_client(async |c| c.batch_execute(&late).await).expect("postgres"),
            }
        }
    });
    iteration(store)?;
    assert!(
        bumped.load(Ordering::SeqCst),
        "{kind:?}: ran before its frontier"
    );
    straggler.join().expect("the straggler");
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Readers during a two-worker ingest.
