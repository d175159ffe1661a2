//! What the SQL stores promise beyond the generic suite: reads through
//! indexes, shapes checked on attach, corrupt rows and missing tables as
//! typed errors, hostile names stored safely, caches readable as plain SQL.

use benches::meter_reads::{self, Workload};
use graph::Time;
use graph::{Cache, Input};
use operators::prelude::*;
use store::{OpenOptions, Sqlite, StoreError};

use crate::harness::{Kind, kinds, sql_kinds};

type R = Result<(), GraphError>;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// One new read among thousands touches a handful of rows: joins and
/// aggregates read only the keys present in the change, through indexes.
#[test]
fn reads_only_the_keys_a_change_needs() -> R {
    for kind in sql_kinds() {
        let (graph, q) = meter_reads::build()?;
        let mut store = kind.open(&graph)?;
        let w = Workload {
            users: 300,
            reads: 3000,
        };
        graph.insert(&mut *store, &q.users, w.all_users())?;
        graph.insert(&mut *store, &q.meters, w.all_meters())?;
        for chunk in 0..3 {
            graph.insert(
                &mut *store,
                &q.reads,
                w.reads(chunk * 1000..(chunk + 1) * 1000),
            )?;
        }
        store.reset_stats();
        graph.insert(&mut *store, &q.reads, w.reads(5000..5001))?;
        let stats = store.stats();
        // The user's meter (1 row) and the day's aggregate (at most 1 row).
        assert!(
            (1..=2).contains(&stats.rows_read),
            "{kind:?}: one read made the store read {} rows: {stats:?}",
            stats.rows_read
        );
        // The read itself, the aggregate, and the cache's old and new row.
        assert!(stats.rows_written <= 4, "{kind:?}: {stats:?}");
        // Deleting a user reads its meters and their reads, not every read.
        store.reset_stats();
        graph.remove(&mut *store, &q.users, [w.user(7)])?;
        let stats = store.stats();
        assert!(
            (1..100).contains(&stats.rows_read),
            "{kind:?}: removing one user read {} rows: {stats:?}",
            stats.rows_read
        );
    }
    Ok(())
}

fn words_cached(
    index: &Index<String, i64>,
) -> Result<(Graph, (Input<String>, Cache<String>)), GraphError> {
    Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_cache", words.transient(), &[index])?))
    })
}

#[test]
fn attaching_a_different_shape_names_the_table() -> R {
    for kind in sql_kinds() {
        let by_len = Index::new("len", |s: &String| s.len() as i64);
        let (g1, (input, _)) = words_cached(&by_len)?;
        let mut store = kind.open(&g1)?;
        g1.insert(&mut *store, &input, ["a".to_string()])?;
        let table = format!("{}word_cache", store.prefix());
        // Same paths, but the cache is now indexed differently.
        let by_first = Index::new("first", |s: &String| s.len() as i64 * 2);
        let (g2, _) = words_cached(&by_first)?;
        for create in [false, true] {
            match store.open_again(&g2, create) {
                Err(GraphError::Store(StoreError::SchemaMismatch { table: t, detail })) => {
                    assert_eq!(t, table, "{kind:?}");
                    assert!(
                        detail.contains("len(") && detail.contains("first("),
                        "{detail}"
                    );
                }
                // A writer is told the query changed, with the plan.
                Err(GraphError::Store(StoreError::QueryChanged { plan })) if create => {
                    let entry = plan.entries.iter().find(|e| e.table == table);
                    assert!(
                        matches!(entry.map(|e| &e.action), Some(graph::PlanAction::Changed { why }) if why.contains("len(")),
                        "{kind:?}: {plan}"
                    );
                }
                other => panic!(
                    "{kind:?}: expected a schema mismatch, got {:?}",
                    other.err()
                ),
            }
        }
        // A different row type under the same path.
        let (g3, _) = Graph::build(|q| {
            let (input, words) = q.input::<i64>("words")?;
            Ok((input, q.cache("word_cache", words.transient(), &[])?))
        })?;
        let err = store.open_again(&g3, true).err();
        assert!(
            matches!(
                err,
                Some(GraphError::Store(
                    StoreError::SchemaMismatch { .. } | StoreError::QueryChanged { .. }
                ))
            ),
            "{kind:?}: {err:?}"
        );
    }
    Ok(())
}

#[test]
fn missing_tables_and_times_are_typed_errors() -> R {
    for kind in sql_kinds() {
        let by_len = Index::new("len", |s: &String| s.len() as i64);
        let (graph, (input, cache)) = words_cached(&by_len)?;
        // Storage with nothing of this graph in it.
        let (empty, _) = Graph::build(|q| Ok(q.input::<i64>("nothing")?.0))?;
        let store = kind.open(&empty)?;
        match store.open_again(&graph, false) {
            Err(GraphError::Store(StoreError::MissingTable { table, path })) => {
                assert_eq!(
                    (table, path.as_str()),
                    (format!("{}word_cache", store.prefix()), "word_cache"),
                    "{kind:?}"
                );
            }
            other => panic!("{kind:?}: expected a missing table, got {:?}", other.err()),
        }
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, ["x".to_string()])?;
        let table = format!("{}word_cache", store.prefix());
        // (A cache's view goes first: Postgres keeps a table a view reads.)
        store.sql(&format!(
            "DROP VIEW IF EXISTS {table}_view; DROP TABLE {table}"
        ));
        match graph.insert(&mut *store, &input, ["y".to_string()]) {
            Err(GraphError::Store(StoreError::MissingTable { table: t, .. })) => {
                assert_eq!(t, table, "{kind:?}")
            }
            other => panic!("{kind:?}: expected a missing table, got {other:?}"),
        }
        assert!(matches!(
            cache.zset(&mut *store),
            Err(GraphError::Store(StoreError::MissingTable { .. }))
        ));
        // A deleted last_update row: the table's time is unknown.
        let mut store = kind.open(&graph)?;
        let (table, last_update) = (
            format!("{}word_cache", store.prefix()),
            format!("{}0_last_update", store.prefix()),
        );
        store.sql(&format!(
            "DELETE FROM {last_update} WHERE table_name = '{table}'"
        ));
        match graph.insert(&mut *store, &input, ["z".to_string()]) {
            Err(GraphError::Store(StoreError::Corrupt {
                table: t, identity, ..
            })) => {
                assert_eq!((t, identity), (last_update, table), "{kind:?}");
            }
            other => panic!("{kind:?}: expected a corrupt last_update, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn corrupt_rows_are_typed_errors_naming_table_and_row() -> R {
    for kind in sql_kinds() {
        let by_len = Index::new("len", |s: &String| s.len() as i64);
        let (graph, (input, cache)) = words_cached(&by_len)?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, ["hello".to_string()])?;
        let table = format!("{}word_cache", store.prefix());
        let expect_corrupt =
            |store: &mut crate::harness::Opened, what: &str| match cache.zset(&mut **store) {
                Err(GraphError::Store(StoreError::Corrupt {
                    table: t,
                    identity,
                    detail,
                })) => {
                    assert_eq!(t, table, "{kind:?}");
                    assert!(!identity.is_empty());
                    assert!(detail.contains(what), "{kind:?}: {detail}");
                }
                other => panic!("{kind:?}: expected a corrupt row ({what}), got {other:?}"),
            };
        if kind == Kind::Sqlite {
            // SQLite columns hold any type: a weight that is not a number.
            store.sql(&format!("UPDATE {table} SET c = 'many'"));
            expect_corrupt(&mut store, "weight");
            store.sql(&format!("UPDATE {table} SET c = 1"));
        }
        store.sql(&format!("UPDATE {table} SET identity = identity + 1"));
        expect_corrupt(&mut store, "identity");
        store.sql(&format!(
            "UPDATE {table} SET identity = identity - 1, c = 0"
        ));
        expect_corrupt(&mut store, "weight is 0");
        // Garbage whose identity matches: the bytes themselves do not decode.
        let garbage = [0xffu8, 0xff, 0xff, 0xff, 0xff];
        let literal = if kind == Kind::Sqlite {
            "x'ffffffffff'"
        } else {
            "'\\xffffffffff'::bytea"
        };
        store.sql(&format!(
            "UPDATE {table} SET c = 1, data = {literal}, identity = {}",
            graph::identity_of(&garbage)
        ));
        expect_corrupt(&mut store, "decode");
    }
    Ok(())
}

/// Names with quotes, semicolons, unicode, and very long ones are stored
/// under sanitized table and column names; the data round-trips.
#[test]
fn hostile_names_are_stored_safely() -> R {
    for kind in sql_kinds() {
        let long = "ü".repeat(300);
        let evil_index = Index::with_parts(
            "k\"; DROP TABLE st_x; --",
            &["part'name"],
            |r: &(i64, String)| r.0,
        );
        let build = || {
            Graph::build(|q| {
                let (input, rows) =
                    q.input::<(i64, String)>("users'; DROP TABLE st_0_last_update; --")?;
                let named = rows.named(&long);
                Ok((
                    input,
                    q.cache("cache \"quoted\" ñ", named.distinct(), &[&evil_index])?,
                ))
            })
        };
        let (graph, (input, cache)) = build()?;
        let mut store = kind.open(&graph)?;
        graph.insert(
            &mut *store,
            &input,
            [(1, "a".to_string()), (2, "b".to_string())],
        )?;
        let (graph2, (input2, cache2)) = build()?;
        let mut again = store.open_again(&graph2, false)?;
        graph2.insert(&mut *again, &input2, [(3, "c".to_string())])?;
        let rows = cache2.iter_by_index(&mut *again, &evil_index, Some(&[1, 3]))?;
        assert_eq!(
            rows,
            [(1, (1, "a".to_string()), 1), (3, (3, "c".to_string()), 1)],
            "{kind:?}"
        );
        assert_eq!(cache.zset(&mut *store)?.len(), 3, "{kind:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (graph, _) = Graph::build(|q| {
        let (input, rows) = q.input::<i64>("a'; DROP TABLE x; --")?;
        Ok((input, q.cache(&"ñ".repeat(100), rows, &[])?))
    })?;
    let store = Sqlite::open(dir.path().join("h.db"), &graph, OpenOptions::default())?;
    for (_path, table) in store.table_names() {
        assert!(
            table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{table}"
        );
        assert!(table.len() <= 58, "{table}");
    }
    Ok(())
}

/// A cache is an ordinary table: typed columns a person can filter with SQL.
#[test]
fn caches_are_readable_with_plain_sql() -> R {
    let dir = temp();
    let (graph, q) = meter_reads::build()?;
    let mut store = Sqlite::open(dir.path().join("m.db"), &graph, OpenOptions::default())?;
    let w = Workload {
        users: 10,
        reads: 200,
    };
    graph.insert(&mut store, &q.users, w.all_users())?;
    graph.insert(&mut store, &q.meters, w.all_meters())?;
    graph.insert(&mut store, &q.reads, w.reads(0..200))?;
    let (rows, total): (i64, i64) = store
        .connection()
        .query_row(
            "SELECT count(*), sum(c) FROM st_daily_cache WHERE k_date = '2023-01-02'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| StoreError::backend("sql", e))?;
    let expected = w
        .expected_daily()
        .keys()
        .filter(|(_, _, d)| d.to_string() == "2023-01-02")
        .count() as i64;
    assert_eq!((rows, total), (expected, expected));
    Ok(())
}

/// `Option` keys sort `None` first, floats are canonical with NaN last and
/// `-0.0 == 0.0`, descending parts reverse all of it, and every store reads
/// in the same order and finds `None` and NaN keys.
#[test]
fn key_order_with_nulls_and_nans_is_the_same_in_every_store() -> R {
    type Row = (Option<i64>, F64, String);
    let by_opt = Index::new("opt", |r: &Row| r.0);
    let by_float_desc = Index::new("float", |r: &Row| Desc(r.1));
    let row = |o: Option<i64>, f: f64, s: &str| (o, F64::new(f), s.to_string());
    let rows = vec![
        row(None, 1.0, "a"),
        row(Some(-5), f64::NAN, "b"),
        row(Some(3), -0.0, "c"),
        row(Some(3), 0.0, "d"),
        row(None, f64::NEG_INFINITY, "e"),
        row(Some(0), 2.5, "f"),
        row(Some(-5), f64::INFINITY, "g"),
    ];
    let mut results = Vec::new();
    for kind in kinds() {
        let (graph, (input, cache)) = Graph::build(|q| {
            let (input, x) = q.input::<Row>("rows")?;
            Ok((input, q.cache("ordered", x, &[&by_opt, &by_float_desc])?))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, rows.clone())?;
        let by_o: Vec<String> = cache
            .iter_by_index(&mut *store, &by_opt, None)?
            .into_iter()
            .map(|r| r.1.2)
            .collect();
        let by_f: Vec<String> = cache
            .iter_by_index(&mut *store, &by_float_desc, None)?
            .into_iter()
            .map(|r| r.1.2)
            .collect();
        let nones = cache
            .iter_by_index(&mut *store, &by_opt, Some(&[None]))?
            .len();
        let nan = cache.iter_by_index(&mut *store, &by_float_desc, Some(&[F64::new(f64::NAN)]))?;
        let zero = cache
            .iter_by_index(&mut *store, &by_float_desc, Some(&[F64::new(-0.0)]))?
            .len();
        assert_eq!(nones, 2, "{kind:?}");
        assert_eq!(nan.len(), 1, "{kind:?}");
        assert_eq!(zero, 2, "{kind:?}: -0.0 and 0.0 are one key");
        results.push((by_o, by_f));
    }
    let (by_o, by_f) = &results[0];
    assert_eq!(by_o, &["e", "a", "g", "b", "f", "c", "d"]);
    assert_eq!(by_f, &["b", "g", "f", "a", "c", "d", "e"]);
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    Ok(())
}

/// A dry run computes the outputs and commits nothing.
#[test]
fn dry_runs_commit_nothing() -> R {
    for kind in kinds() {
        let (graph, (input, out, cache)) = Graph::build(|q| {
            let (input, x) = q.input::<i64>("x")?;
            Ok((
                input,
                q.output("sum", x.reduce(0i64, |v| *v))?,
                q.cache("xs", x, &[])?,
            ))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &input, [1])?;
        let t = store.next_time()?;
        let dry = graph.iteration_at(
            &mut *store,
            Changes::new().insert(&input, [10]),
            Time::new(t, t - 1).dry_run(),
        )?;
        assert_eq!(dry.get(&out)?, &zset! { 1 => -1, 11 => 1 });
        assert_eq!(cache.zset(&mut *store)?, zset! { 1 => 1 });
        assert_eq!(
            store.next_time()?,
            t,
            "{kind:?}: a dry run does not move time"
        );
        assert_eq!(
            graph.insert(&mut *store, &input, [2])?.get(&out)?,
            &zset! { 1 => -1, 3 => 1 }
        );
    }
    Ok(())
}

/// `last_time` (through the `StateStore` trait) is the time of the last
/// committed iteration, on every store, and survives re-opening; a failed
/// iteration does not move it.
#[test]
fn last_time_is_the_last_committed_iteration() -> R {
    for kind in kinds() {
        let (graph, (input, _out)) = Graph::build(|q| {
            let (input, x) = q.input::<i64>("x")?;
            Ok((input, q.output("sum", x.reduce(0i64, |v| *v))?))
        })?;
        let mut store = kind.open(&graph)?;
        assert_eq!(store.last_time()?, 0, "{kind:?}: a new store");
        for v in 1..=3 {
            graph.insert(&mut *store, &input, [v])?;
        }
        assert_eq!(store.last_time()?, 3, "{kind:?}: after three iterations");
        let dry = store.next_time()?;
        graph.iteration_at(
            &mut *store,
            Changes::new().insert(&input, [10]),
            Time::new(dry, dry - 1).dry_run(),
        )?;
        assert_eq!(store.last_time()?, 3, "{kind:?}: a dry run commits nothing");
        if kind != Kind::Memory {
            let mut store = store.reopen(&graph)?;
            assert_eq!(store.last_time()?, 3, "{kind:?}: re-opened");
        }
    }
    Ok(())
}

/// A SQLite writer that finds another connection holding the file's write
/// lock waits for it (SQLite's busy handler, here short pauses) and then
/// commits, instead of failing with `SQLITE_BUSY`.
#[test]
fn a_sqlite_writer_waits_for_another_connections_write_lock() -> R {
    let (graph, (input, out)) = Graph::build(|q| {
        let (input, x) = q.input::<i64>("x")?;
        Ok((input, q.output("sum", x.reduce(0i64, |v| *v))?))
    })?;
    let dir = temp();
    let path = dir.path().join("locked.db");
    let mut store = Sqlite::open(&path, &graph, OpenOptions::default())?;
    graph.insert(&mut store, &input, [1])?;
    let other = rusqlite::Connection::open(&path).expect("a second connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let (locked, unlocked) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        locked.send(()).expect("the test waits");
        std::thread::sleep(std::time::Duration::from_millis(200));
        other.execute_batch("COMMIT").expect("released");
    });
    unlocked.recv().expect("the holder started");
    let change = graph.insert(&mut store, &input, [2])?;
    assert_eq!(change.get(&out)?, &zset! { 1 => -1, 3 => 1 });
    holder.join().expect("the holder");
    Ok(())
}

/// SQLite's checkpoints run on a thread of their own: a few megabytes of
/// log, far below the 256 MiB at which a writer checkpoints itself, are
/// copied into the file by the thread, one-row commits after that do not
/// wake it one by one, and the state reads back whole after the store
/// closes and opens again.
#[test]
fn sqlite_checkpoints_run_on_a_thread_of_their_own() -> R {
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_set", words.distinct(), &[])?))
    })?;
    let dir = temp();
    let path = dir.path().join("checkpointed.db");
    let mut store = Sqlite::open(&path, &graph, OpenOptions::default())?;
    assert_eq!(store.checkpointer().checkpoints(), 0);
    let filler = "x".repeat(1000);
    let batches =
        usize::try_from(store::SQLITE_BACKGROUND_LOG_BYTES).expect("bytes") / 1_000_000 + 2;
    for b in 0..batches {
        let words: Vec<String> = (0..1000).map(|i| format!("{b}/{i}/{filler}")).collect();
        graph.insert(&mut store, &input, words)?;
    }
    let waited = std::time::Instant::now();
    while store.checkpointer().checkpoints() == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "no checkpoint ran on the thread after {batches} batches of ~1 MB"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Small commits past the threshold wake the thread once per
    // threshold's worth of log, not once each. (A reader holding its
    // snapshot keeps the log from starting again at its beginning.)
    let reader = rusqlite::Connection::open(&path).expect("a reader");
    reader
        .execute_batch("BEGIN")
        .and_then(|()| reader.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
        .expect("a read transaction");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = store.checkpointer().checkpoints();
    for i in 0..100 {
        graph.insert(&mut store, &input, [format!("small/{i}")])?;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let during = store.checkpointer().checkpoints() - before;
    reader.execute_batch("COMMIT").expect("the reader ends");
    assert!(during <= 1, "{during} checkpoints for 100 one-row commits");
    drop(store);
    let mut store = Sqlite::open(&path, &graph, OpenOptions::attach())?;
    assert_eq!(cache.zset(&mut store)?.len(), batches * 1000 + 100);
    Ok(())
}

/// A connection with no file has no checkpoints to hand over: a typed
/// error, not a thread that never runs.
#[test]
fn a_checkpoint_thread_needs_a_file() {
    let mut conn = rusqlite::Connection::open_in_memory().expect("an in-memory database");
    let err = store::SqliteCheckpointer::attach(&mut conn).expect_err("no file");
    assert!(err.to_string().contains("no file"), "{err}");
}
