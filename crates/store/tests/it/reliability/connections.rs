//! A Postgres connection lost in the middle of an iteration: the iteration
//! fails, nothing is half-applied, and the pool recovers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use graph::StateStore;
use operators::prelude::*;
use store::StoreError;

use super::{Dropping, R};
use crate::harness::{pg_url, with_pg_client};

/// `url` with an `application_name`, in either connection-string form.
pub(super) fn with_application_name(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={name}")
    } else {
        format!("{url} application_name={name}")
    }
}

/// How many sessions called `name` the server has.
pub(super) fn sessions(name: &str) -> i64 {
    with_pg_client(async |c| {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
    })
}

/// Terminates every session called `name` (from a connection of its own)
/// and waits until the server has ended them all; returns how many it
/// terminated.
pub(super) fn cut_sessions(name: &str) -> usize {
    with_pg_client(async |c| {
        let cut = c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await
            .expect("pg_terminate_backend")
            .len();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if left == 0 {
                return cut;
            }
            assert!(Instant::now() < deadline, "{left} sessions survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Every row of every table in `tables`, and their `last_update` rows, as
/// another connection sees them.
pub(super) fn pg_snapshot(tables: &[String], last_update: &str) -> BTreeMap<String, Vec<String>> {
    with_pg_client(async |c| {
        let mut out = BTreeMap::new();
        for table in tables {
            let rows = c
                .query(
                    &format!("SELECT identity, data, c FROM {table} ORDER BY identity"),
                    &[],
                )
                .await
                .expect("a state table");
            let rows = rows
                .iter()
                .map(|r| {
                    let (id, data, c): (i64, Vec<u8>, i64) = (r.get(0), r.get(1), r.get(2));
                    format!("{id} {data:?} {c}")
                })
                .collect();
            out.insert(table.clone(), rows);
        }
        let rows = c
            .query(
                &format!("SELECT table_name, t FROM {last_update} ORDER BY table_name"),
                &[],
            )
            .await
            .expect("last_update");
        let rows = rows
            .iter()
            .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        out.insert(last_update.to_owned(), rows);
        out
    })
}

/// The store's connections are terminated by the server while an iteration
/// runs (from a `map` downstream of a keyed aggregate, so the iteration has
/// read state and computed its writes): the iteration fails with a backend
/// error, leaves every state table and `last_update` as they were, and the
/// same store (its pool replacing the dead connections) runs the next
/// iteration to the oracle's result.
#[test]
fn a_lost_postgres_connection_fails_the_iteration_and_the_pool_recovers() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    // Only this store's sessions carry this name, so the sessions of tests
    // running at the same time are left alone.
    let name = format!(
        "stepping_cut_{}",
        crate::harness::unique_prefix().trim_end_matches('_')
    );
    let armed = Arc::new(AtomicBool::new(false));
    // The map and this test meet twice: once the map is running (the cut
    // starts), once the sessions are gone (the map returns).
    let meet = Arc::new(Barrier::new(2));
    let (graph, (input, total, numbers, totals)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("numbers")?;
        let (armed, meet) = (Arc::clone(&armed), Arc::clone(&meet));
        let total = x.count().map(move |n| {
            if armed.swap(false, Ordering::SeqCst) {
                meet.wait();
                meet.wait();
            }
            *n
        });
        Ok((
            input,
            q.output("total", total)?,
            q.cache("number_cache", x, &[])?,
            q.cache("total_cache", total, &[])?,
        ))
    })?;
    let prefix = crate::harness::unique_prefix();
    let last_update = format!("{prefix}0_last_update");
    let options = store::OpenOptions {
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let cleanup = benches::pg::DropTablesOnExit {
        conn: url.clone(),
        prefix: prefix.clone(),
    };
    let mut store = Dropping {
        store: Some(store::Postgres::open(
            &with_application_name(&url, &name),
            &graph,
            options,
        )?),
        _cleanup: cleanup,
    };
    graph.insert(&mut *store, &input, [1, 2, 3])?;
    assert!(sessions(&name) > 0, "the store's sessions are named {name}");
    let tables: Vec<String> = store.table_names().into_iter().map(|(_, t)| t).collect();
    assert!(tables.len() >= 3, "{tables:?}");
    let before = pg_snapshot(&tables, &last_update);
    let t = store.next_time()?;

    let cut = std::thread::scope(|s| {
        let cutter = s.spawn(|| {
            meet.wait();
            let cut = cut_sessions(&name);
            meet.wait();
            cut
        });
        armed.store(true, Ordering::SeqCst);
        let result = graph.insert(&mut *store, &input, [4, 5, 6]);
        if armed.swap(false, Ordering::SeqCst) {
            // The map never ran: release the cutter before failing.
            meet.wait();
            meet.wait();
            panic!("the map after the count never ran: {result:?}");
        }
        let err = result.expect_err("the connection was cut mid-iteration");
        assert!(
            matches!(err, GraphError::Store(StoreError::Backend { .. })),
            "{err:?}"
        );
        assert!(!err.to_string().is_empty());
        cutter.join().expect("the cutter")
    });
    assert!(cut >= 1, "the store's sessions were terminated");
    assert_eq!(
        pg_snapshot(&tables, &last_update),
        before,
        "nothing of the failed iteration was committed"
    );

    // The same store object: its pool replaces the dead connections.
    let out = graph.insert(&mut *store, &input, [4, 5, 6])?;
    assert_eq!(
        out.get(&total)?,
        &zset! { 3 => -1, 6 => 1 },
        "the count state never saw the failed iteration"
    );
    assert!(sessions(&name) > 0, "new sessions");
    assert_eq!(store.next_time()?, t + 1);
    let oracle: ZSet<i64> = (1..=6).map(|n| (n, 1)).collect();
    assert_eq!(numbers.zset(&mut *store)?, oracle);
    assert_eq!(totals.zset(&mut *store)?, zset! { 6 => 1 });
    // And as a store on a pool of its own sees it.
    let mut other = store::Postgres::open(
        &url,
        &graph,
        store::OpenOptions {
            prefix,
            create_tables: false,
            ..store::OpenOptions::default()
        },
    )?;
    assert_eq!(numbers.zset(&mut other)?, oracle);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Damaged rows and arbitrary bytes: typed errors, never panics.
