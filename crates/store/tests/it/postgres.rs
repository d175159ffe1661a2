//! Postgres only: an iteration inside a transaction the application
//! already holds commits or rolls back with it.

use graph::Time;
use operators::prelude::*;

use crate::harness::{Kind, pg_url, with_pg_client};

type R = Result<(), GraphError>;

fn app_rows(table: &str) -> i64 {
    with_pg_client(async |c| {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0)
    })
}

#[test]
fn an_iteration_commits_or_rolls_back_with_the_callers_transaction() -> R {
    if pg_url().is_none() {
        return Ok(());
    }
    let (graph, (input, set, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let set = words.distinct();
        Ok((input, q.output("set", set)?, q.cache("word_set", set, &[])?))
    })?;
    let mut opened = Kind::Postgres.open(&graph)?;
    let app_table = format!("{}app_orders", opened.prefix());
    opened.sql(&format!("CREATE TABLE {app_table} (id BIGINT PRIMARY KEY)"));
    let t = opened.next_time()?;
    // A second handle on the same tables, to look at the state.
    let mut reader = opened.open_again(&graph, false)?;
    let store = opened.postgres().expect("a Postgres store");
    let url = pg_url().expect("configured");
    // The application's own connection and runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let run = |id: i64, words: &[&str], commit: bool| -> Result<Outputs, GraphError> {
        rt.block_on(async {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let task = tokio::spawn(connection);
            let tx = client.transaction().await.expect("begin");
            tx.execute(&format!("INSERT INTO {app_table} VALUES ($1)"), &[&id])
                .await
                .expect("app insert");
            let changes = Changes::new().insert(&input, words.iter().map(|w| w.to_string()));
            let out = store
                .iteration_in(&tx, &graph, changes, Time::new(t, t - 1))
                .await;
            if commit && out.is_ok() {
                tx.commit().await.expect("commit");
            } else {
                tx.rollback().await.expect("rollback");
            }
            drop(client);
            let _ = task.await;
            out
        })
    };
    // Rolled back: neither the application's row nor the view's state.
    let out = run(1, &["a", "b"], false)?;
    assert_eq!(
        out.get(&set)?.len(),
        2,
        "the outputs are computed either way"
    );
    assert_eq!(app_rows(&app_table), 0);
    assert!(cache.zset(&mut *reader)?.is_empty());
    assert_eq!(
        reader.next_time()?,
        t,
        "a rolled-back iteration leaves time where it was"
    );
    // Committed: both.
    run(2, &["a", "b"], true)?;
    assert_eq!(app_rows(&app_table), 1);
    assert_eq!(
        cache.zset(&mut *reader)?,
        zset! { "a".to_string() => 1, "b".to_string() => 1 }
    );
    assert_eq!(reader.next_time()?, t + 1);
    Ok(())
}

#[test]
fn a_failed_iteration_leaves_the_callers_transaction_usable() -> R {
    if pg_url().is_none() {
        return Ok(());
    }
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("numbers")?;
        let parsed = words.try_map(|w| w.parse::<i64>());
        Ok((input, q.cache("parsed", parsed, &[])?))
    })?;
    let mut opened = Kind::Postgres.open(&graph)?;
    let app_table = format!("{}app_log", opened.prefix());
    opened.sql(&format!("CREATE TABLE {app_table} (id BIGINT PRIMARY KEY)"));
    let t = opened.next_time()?;
    let mut reader = opened.open_again(&graph, false)?;
    let store = opened.postgres().expect("a Postgres store");
    let url = pg_url().expect("configured");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let failed = rt.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        let tx = client.transaction().await.expect("begin");
        let changes = Changes::new().insert(&input, ["1".to_string(), "x".to_string()]);
        let out = store
            .iteration_in(&tx, &graph, changes, Time::new(t, t - 1))
            .await;
        // The transaction is still usable: the application keeps its own write.
        tx.execute(&format!("INSERT INTO {app_table} VALUES (7)"), &[])
            .await
            .expect("still usable");
        tx.commit().await.expect("commit");
        drop(client);
        let _ = task.await;
        out
    });
    assert!(matches!(failed, Err(GraphError::User { .. })), "{failed:?}");
    assert_eq!(app_rows(&app_table), 1);
    assert!(
        cache.zset(&mut *reader)?.is_empty(),
        "the failed iteration left no state"
    );
    Ok(())
}

/// A time another process took from `opened`'s sequence for batch 4 and
/// will never commit: its store has a pool of one connection, whose
/// session is ended as when the process dies.
fn time_of_a_dead_taker(
    opened: &mut crate::harness::Opened,
    graph: &Graph,
    url: &str,
) -> Result<i64, GraphError> {
    let prefix = opened.prefix().to_owned();
    let options = store::OpenOptions {
        create_tables: false,
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let mut other = store::Postgres::with_pool(store::Postgres::pool(url, 1)?, graph, options)?;
    let dead = store::PgSequence::of(&mut other)?.next_for(4)?;
    opened.sql(&format!(
        "SELECT pg_terminate_backend(pid, 10000) FROM {prefix}0_time_claims WHERE t = {dead}"
    ));
    Ok(dead)
}

/// A time taken from the tables' sequence by a process that died before
/// committing it (its session ended) does not wedge an iteration run in
/// the application's transaction: the wait releases it there, and the
/// release commits with that transaction.
#[test]
fn an_iteration_in_the_callers_transaction_releases_a_time_whose_taker_is_gone() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        Ok((input, q.cache("numbers", n, &[])?))
    })?;
    let mut opened = Kind::Postgres.open(&graph)?;
    let dead = time_of_a_dead_taker(&mut opened, &graph, &url)?;
    let store = opened.postgres().expect("a Postgres store");
    let t = dead + 1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        let tx = client.transaction().await.expect("begin");
        let changes = Changes::new().insert(&input, [5]);
        let out = store
            .iteration_in(&tx, &graph, changes, Time::new(t, t - 1))
            .await;
        if out.is_ok() {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        drop(client);
        let _ = task.await;
        out.map(|_| ())
    })?;
    let failed = opened.failed_batches()?;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].input_time, failed[0].batch), (dead, 4));
    assert!(failed[0].changes.is_empty(), "{failed:?}");
    assert_eq!(cache.zset(&mut *opened)?, zset! { 5 => 1 });
    Ok(())
}

/// A time whose taker died is released by the wait behind it, but not
/// once a migration has replaced the waiter's query: the release locks the
/// query's generation first, as a migration does, and finding it moved on
/// changes nothing (no failed batch, no table moved to the time), and the
/// waiter fails with `QueryChanged`. A transaction moving the generation
/// on, begun while the waiter waits out its grace period and committed once
/// the release waits for it, stands in for the migration.
#[test]
fn a_release_once_the_query_changed_changes_nothing() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let connect = || {
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
            .expect("connect");
        rt.spawn(connection);
        client
    };
    let (mut migrating, client) = (connect(), connect());
    let count = |sql: &str, dead: i64| -> i64 {
        rt.block_on(client.query_one(sql, &[&dead]))
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    // The migration must begin after the waiter started waiting (else the
    // waiter's own frontier check waits for it, and no release is tried):
    // an attempt where that did not happen is made again.
    for attempt in 0..5 {
        let (graph, input) = Graph::build(|q| {
            let (input, n) = q.input::<i64>("n")?;
            q.cache("numbers", n, &[])?;
            Ok(input)
        })?;
        let mut opened = Kind::Postgres.open(&graph)?;
        let prefix = opened.prefix().to_owned();
        let dead = time_of_a_dead_taker(&mut opened, &graph, &url)?;
        let last_update = format!("{prefix}0_last_update");
        let failed_sql =
            format!("SELECT count(*) FROM {prefix}0_failed_batches WHERE input_time = $1");
        let t = dead + 1;
        let (waited, blocked_on) = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                graph.iteration_at(
                    &mut *opened,
                    Changes::new().insert(&input, [5]),
                    Time::new(t, t - 1),
                )
            });
            // Well inside the grace period (a second) of a wait that
            // begins after the spawn.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let migration = rt.block_on(migrating.transaction()).expect("begin");
            rt.block_on(migration.batch_execute(&format!(
                "UPDATE {last_update} SET t = t + 1 WHERE table_name = '{prefix}0_query'"
            )))
            .expect("the migration's first step");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let blocked_on = loop {
                let waiting = rt
                    .block_on(client.query(
                        "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                         AND query LIKE '%' || $1 || '%'",
                        &[&last_update],
                    ))
                    .expect("pg_stat_activity");
                if let Some(row) = waiting.first() {
                    break Some(row.get::<_, String>(0));
                }
                if waiter.is_finished() {
                    break None;
                }
                assert!(std::time::Instant::now() < deadline, "nothing waited");
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            // A release that did not wait for the generation is done by now.
            let released_early = count(&failed_sql, dead) > 0;
            rt.block_on(migration.commit()).expect("commit");
            let waited = waiter.join().expect("the waiter does not panic");
            assert!(
                !released_early,
                "time {dead} was released while the query changed"
            );
            (waited, blocked_on)
        });
        assert!(
            matches!(
                waited,
                Err(GraphError::Store(StoreError::QueryChanged { .. }))
            ),
            "{waited:?}"
        );
        assert_eq!(count(&failed_sql, dead), 0, "a failed batch at time {dead}");
        let moved = count(
            &format!(
                "SELECT count(*) FROM {last_update} WHERE table_name NOT LIKE '%0_query' AND t >= $1"
            ),
            dead,
        );
        assert_eq!(moved, 0, "tables moved to the released time {dead}");
        if blocked_on.is_some_and(|q| q.contains("FOR SHARE")) {
            return Ok(());
        }
        eprintln!("attempt {attempt}: the waiter had not begun waiting; again");
    }
    panic!("in five attempts the waiter never began waiting before the migration")
}

/// The store's sessions plan every statement for its own arguments and
/// the tables as they are (`plan_cache_mode = force_custom_plan`), so a
/// generic plan made while a state table was small (a scan of the whole
/// table) is never kept as it grows; and the connection string's own
/// options come after, so they can set even these. (The effect, measured:
/// docs/scaling.md.)
#[test]
fn store_sessions_plan_each_statement_for_its_arguments() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    let settings_of = |options: &str| -> Result<Vec<String>, GraphError> {
        let pool = store::Postgres::pool(&format!("{url} options='{options}'"), 1)?;
        let config = pool.connection_config().clone();
        Ok(with_pg_client(async |_| {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .expect("connect");
            let task = tokio::spawn(connection);
            let mut out = Vec::new();
            for name in ["plan_cache_mode", "random_page_cost", "work_mem"] {
                let row = client
                    .query_one(&format!("SHOW {name}"), &[])
                    .await
                    .expect("show");
                out.push(row.get::<_, String>(0));
            }
            drop(client);
            let _ = task.await;
            out
        }))
    };
    assert_eq!(
        settings_of("-c work_mem=8MB")?,
        ["force_custom_plan", "1.1", "8MB"]
    );
    assert_eq!(
        settings_of("-c plan_cache_mode=auto -c random_page_cost=4")?,
        ["auto", "4", "4MB"]
    );
    Ok(())
}

/// `drop_tables` leaves the prefix as it found it: no state table, view,
/// bookkeeping table or sequence of the store is left behind.
#[test]
fn dropping_the_tables_leaves_nothing_under_the_prefix() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    let (graph, (input, _)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_set", words.distinct(), &[])?))
    })?;
    let prefix = crate::harness::unique_prefix();
    let relations = || -> Vec<String> {
        with_pg_client(async |c| {
            c.query(
                "SELECT relname::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace \
                 AND left(relname, length($1)) = $1 ORDER BY 1",
                &[&prefix],
            )
            .await
            .expect("list relations")
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    };
    let options = store::OpenOptions {
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let mut store = store::Postgres::open(&url, &graph, options)?;
    graph.insert(&mut store, &input, ["a".to_owned(), "b".to_owned()])?;
    let before = relations();
    assert!(
        before.iter().any(|r| r.contains("0_tables"))
            && before.iter().any(|r| r.contains("word_set")),
        "the store made its tables: {before:?}"
    );
    store.drop_tables()?;
    assert_eq!(relations(), Vec::<String>::new());
    Ok(())
}

/// The heap and index bytes of `table`.
fn table_bytes(table: &str) -> i64 {
    with_pg_client(async |c| {
        c.query_one(&format!("SELECT pg_total_relation_size('{table}')"), &[])
            .await
            .expect("size")
            .get(0)
    })
}

/// A state whose rows are all replaced every batch: the store vacuums its
/// table in the background (once its dead rows pass a fifth of the live
/// ones), so it stays smaller than the same table of a store with
/// `vacuum = false`, left to autovacuum; and nothing of the state is lost.
#[test]
fn a_table_whose_rows_churn_is_vacuumed_and_stays_small() -> R {
    let (Some(pool), Some(url)) = (crate::harness::pg_pool(), pg_url()) else {
        return Ok(());
    };
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, rows) = q.input::<(i64, i64)>("versions")?;
        let cache = q.cache("latest", rows, &[])?;
        Ok((input, cache))
    })?;
    let open = |vacuum: bool| -> Result<(store::Postgres, String), GraphError> {
        let prefix = crate::harness::unique_prefix();
        let options = store::OpenOptions {
            prefix: prefix.clone(),
            vacuum,
            ..store::OpenOptions::default()
        };
        Ok((
            store::Postgres::with_pool(pool.clone(), &graph, options)?,
            prefix,
        ))
    };
    let (mut vacuumed, on) = open(true)?;
    let (mut left, off) = open(false)?;
    let keys = 200i64;
    let batch = |v: i64| -> Changes {
        let mut changes = Changes::new().insert(&input, (0..keys).map(|k| (k, v)));
        if v > 0 {
            changes = changes.remove(&input, (0..keys).map(|k| (k, v - 1)));
        }
        changes
    };
    let result = (|| -> R {
        // Until the store has vacuumed (the server's counts of dead rows
        // lag its commits by up to a second), then as long again.
        let mut v = 0;
        let mut until = None;
        while until.is_none_or(|u| v < u) {
            for store in [&mut vacuumed, &mut left] {
                graph.iteration(store, batch(v))?;
            }
            v += 1;
            if until.is_none() && vacuumed.stats().tables_vacuumed > 0 {
                until = Some(2 * v);
            }
            assert!(v < 2_000, "no vacuum after {v} batches");
        }
        assert_eq!(vacuumed.stats().vacuum_failures, 0);
        assert_eq!(left.stats().tables_vacuumed, 0, "vacuum = false");
        let want: ZSet<(i64, i64)> = (0..keys).map(|k| ((k, v - 1), 1)).collect();
        assert_eq!(cache.zset(&mut vacuumed)?, want);
        assert_eq!(cache.zset(&mut left)?, want);
        let (small, large) = (
            table_bytes(&format!("{on}latest")),
            table_bytes(&format!("{off}latest")),
        );
        eprintln!("churn: vacuumed {small} bytes, left {large} bytes, {v} batches");
        assert!(
            small < large,
            "vacuumed {small} bytes, left to autovacuum {large} bytes, after {v} batches"
        );
        Ok(())
    })();
    drop((vacuumed, left));
    for prefix in [on, off] {
        benches::pg::drop_tables_with_prefix(&url, &prefix)
            .map_err(|e| StoreError::backend("drop", e))?;
    }
    result
}

/// A keyed state's rows are replaced in place batch after batch, so its
/// table leaves room on each page (`fillfactor`) for the new version, which
/// then needs no index entry (a HOT update); Z-set tables, whose rows are
/// added and deleted rather than replaced, fill their pages.
#[test]
fn keyed_tables_leave_room_for_updates_in_place() -> R {
    let (Some(pool), Some(url)) = (crate::harness::pg_pool(), pg_url()) else {
        return Ok(());
    };
    let (graph, input) = Graph::build(|q| {
        let (input, rows) = q.input::<(i64, i64)>("rows")?;
        let by_key = Index::new("key", |r: &(i64, i64)| r.0);
        let sums = rows.group_reduce_flatten(&by_key, 0i64, |r: &(i64, i64)| r.1);
        q.output("sums", sums)?;
        Ok(input)
    })?;
    let prefix = crate::harness::unique_prefix();
    let options = store::OpenOptions {
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    let _cleanup = benches::pg::DropTablesOnExit {
        conn: url,
        prefix: prefix.clone(),
    };
    let mut store = store::Postgres::with_pool(pool, &graph, options)?;
    graph.insert(&mut store, &input, (0..10).map(|k| (k, 1)))?;
    let tables: Vec<(String, Option<String>)> = with_pg_client(async |c| {
        c.query(
            &format!(
                "SELECT t.kind, c.reloptions::text FROM {prefix}0_tables t \
                 JOIN pg_class c ON c.relname = t.table_name"
            ),
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    assert!(tables.iter().any(|(kind, _)| kind == "keyed"), "{tables:?}");
    assert!(tables.iter().any(|(kind, _)| kind == "zset"), "{tables:?}");
    for (kind, options) in &tables {
        let want = (kind == "keyed").then(|| "{fillfactor=70}".to_string());
        assert_eq!(options, &want, "a {kind} table's options");
    }
    Ok(())
}

/// A row added with a positive weight cancels a stored negative one (left
/// by removing a row never inserted): the write deletes the stored row, not
/// leaving a zero weight behind, whether the table has its index of
/// negative weights (which lets a write skip looking up rows it adds) or
/// lacks it, as a table made by an earlier version does; and an open makes
/// the missing index.
#[test]
fn a_row_added_cancels_a_stored_negative_weight_with_or_without_its_index() -> R {
    let (Some(pool), Some(url)) = (crate::harness::pg_pool(), pg_url()) else {
        return Ok(());
    };
    let (graph, (input, kept)) = Graph::build(|q| {
        let (input, rows) = q.input::<i64>("rows")?;
        Ok((input, q.cache("kept", rows, &[])?))
    })?;
    let prefix = crate::harness::unique_prefix();
    let table = format!("{prefix}kept");
    let options = store::OpenOptions {
        prefix: prefix.clone(),
        ..store::OpenOptions::default()
    };
    // (rows with a zero weight, rows, whether the index is there)
    let look = || -> (i64, i64, i64) {
        with_pg_client(async |c| {
            let r = c
                .query_one(
                    &format!(
                        "SELECT (SELECT count(*) FROM {table} WHERE c = 0), \
                         (SELECT count(*) FROM {table}), \
                         (SELECT count(*) FROM pg_class WHERE relname = '{table}__neg')"
                    ),
                    &[],
                )
                .await
                .expect("looking at the table");
            (r.get(0), r.get(1), r.get(2))
        })
    };
    let _cleanup = benches::pg::DropTablesOnExit {
        conn: url,
        prefix: prefix.clone(),
    };
    let mut store = store::Postgres::with_pool(pool.clone(), &graph, options.clone())?;
    graph.remove(&mut store, &input, [5])?;
    assert_eq!(kept.zset(&mut store)?, zset! { 5 => -1 });
    assert_eq!(look(), (0, 1, 1));
    graph.insert(&mut store, &input, [5, 6])?;
    assert_eq!(kept.zset(&mut store)?, zset! { 6 => 1 });
    assert_eq!(look(), (0, 1, 1));
    with_pg_client(async |c| {
        c.batch_execute(&format!("DROP INDEX {table}__neg"))
            .await
            .expect("dropping the index")
    });
    graph.remove(&mut store, &input, [7])?;
    graph.insert(&mut store, &input, [7, 8])?;
    assert_eq!(kept.zset(&mut store)?, zset! { 6 => 1, 8 => 1 });
    assert_eq!(look(), (0, 2, 0));
    drop(store);
    let mut store = store::Postgres::with_pool(pool, &graph, options)?;
    assert_eq!(look(), (0, 2, 1));
    graph.remove(&mut store, &input, [6, 9])?;
    graph.insert(&mut store, &input, [9])?;
    assert_eq!(kept.zset(&mut store)?, zset! { 8 => 1 });
    assert_eq!(look(), (0, 1, 1));
    Ok(())
}
