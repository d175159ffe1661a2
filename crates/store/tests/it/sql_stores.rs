//! What the SQL stores promise beyond the generic suite: reads through
//! indexes, shapes checked on attach, corrupt rows and missing tables as
//! typed errors, hostile names stored safely, caches readable as plain SQL.

use benches::meter_reads::{self, Workload};
use graph::{StateStore, Time};
use operators::prelude::*;
use store::{OpenOptions, Sqlite, StoreError};

use crate::harness::kinds;

type R = Result<(), GraphError>;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// One new read among thousands touches a handful of rows: joins and
/// aggregates read only the keys present in the change, through indexes.
#[test]
fn reads_only_the_keys_a_change_needs() -> R {
    let dir = temp();
    let (graph, q) = meter_reads::build()?;
    let mut store = Sqlite::open(dir.path().join("m.db"), &graph, OpenOptions::default())?;
    let w = Workload {
        users: 300,
        reads: 3000,
    };
    graph.insert(&mut store, &q.users, w.all_users())?;
    graph.insert(&mut store, &q.meters, w.all_meters())?;
    for chunk in 0..3 {
        graph.insert(
            &mut store,
            &q.reads,
            w.reads(chunk * 1000..(chunk + 1) * 1000),
        )?;
    }
    store.reset_stats();
    graph.insert(&mut store, &q.reads, w.reads(5000..5001))?;
    let stats = store.stats();
    // The user's meter (1 row) and the day's aggregate (at most 1 row).
    assert!(
        stats.rows_read <= 2,
        "one read made the store read {} rows: {stats:?}",
        stats.rows_read
    );
    // The read itself, the aggregate, and the cache's old and new row.
    assert!(stats.rows_written <= 4, "{stats:?}");
    // Deleting a user reads its meters and their reads, not every read.
    store.reset_stats();
    graph.remove(&mut store, &q.users, [w.user(7)])?;
    let stats = store.stats();
    assert!(
        stats.rows_read < 100,
        "removing one user read {} rows: {stats:?}",
        stats.rows_read
    );
    Ok(())
}

#[test]
fn attaching_a_different_shape_names_the_table() -> R {
    let dir = temp();
    let file = dir.path().join("s.db");
    let by_len = Index::new("len", |s: &String| s.len() as i64);
    let (g1, (input, _)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_cache", words, &[&by_len])?))
    })?;
    let mut store = Sqlite::open(&file, &g1, OpenOptions::default())?;
    g1.insert(&mut store, &input, ["a".to_string()])?;
    drop(store);
    // Same paths, but the cache is now indexed differently.
    let by_first = Index::new("first", |s: &String| {
        s.chars().next().map(String::from).unwrap_or_default()
    });
    let (g2, _) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_cache", words, &[&by_first])?))
    })?;
    for options in [OpenOptions::attach(), OpenOptions::default()] {
        match Sqlite::open(&file, &g2, options) {
            Err(StoreError::SchemaMismatch { table, detail }) => {
                assert_eq!(table, "st_word_cache");
                assert!(
                    detail.contains("len(") && detail.contains("first("),
                    "{detail}"
                );
            }
            other => panic!("expected a schema mismatch, got {other:?}"),
        }
    }
    // A different row type under the same path.
    let (g3, _) = Graph::build(|q| {
        let (input, words) = q.input::<i64>("words")?;
        Ok((input, q.cache("word_cache", words, &[])?))
    })?;
    assert!(matches!(
        Sqlite::open(&file, &g3, OpenOptions::default()),
        Err(StoreError::SchemaMismatch { .. })
    ));
    Ok(())
}

#[test]
fn missing_tables_are_typed_errors() -> R {
    let dir = temp();
    let file = dir.path().join("m.db");
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_cache", words, &[])?))
    })?;
    match Sqlite::open(&file, &graph, OpenOptions::attach()) {
        Err(StoreError::MissingTable { table, .. }) => assert!(table.starts_with("st_"), "{table}"),
        other => panic!("expected a missing table, got {other:?}"),
    }
    let mut store = Sqlite::open(&file, &graph, OpenOptions::default())?;
    graph.insert(&mut store, &input, ["x".to_string()])?;
    store
        .connection()
        .execute_batch("DROP TABLE st_word_cache")
        .map_err(|e| StoreError::backend("drop", e))?;
    match graph.insert(&mut store, &input, ["y".to_string()]) {
        Err(GraphError::Store(StoreError::MissingTable { table, .. })) => {
            assert_eq!(table, "st_word_cache")
        }
        other => panic!("expected a missing table, got {other:?}"),
    }
    assert!(matches!(
        cache.zset(&mut store),
        Err(GraphError::Store(StoreError::MissingTable { .. }))
    ));
    // A deleted last_update row: the table's time is unknown.
    let dir = temp();
    let mut store = Sqlite::open(dir.path().join("m.db"), &graph, OpenOptions::default())?;
    store
        .connection()
        .execute_batch("DELETE FROM st_last_update WHERE table_name = 'st_word_cache'")
        .map_err(|e| StoreError::backend("delete", e))?;
    match graph.insert(&mut store, &input, ["z".to_string()]) {
        Err(GraphError::Store(StoreError::Corrupt {
            table, identity, ..
        })) => {
            assert_eq!(
                (table.as_str(), identity.as_str()),
                ("st_last_update", "st_word_cache")
            );
        }
        other => panic!("expected a corrupt last_update, got {other:?}"),
    }
    Ok(())
}

#[test]
fn corrupt_rows_are_typed_errors_naming_table_and_row() -> R {
    let dir = temp();
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_cache", words, &[])?))
    })?;
    let mut store = Sqlite::open(dir.path().join("c.db"), &graph, OpenOptions::default())?;
    graph.insert(&mut store, &input, ["hello".to_string()])?;
    let sql = |store: &Sqlite, stmt: &str| {
        store
            .connection()
            .execute_batch(stmt)
            .map_err(|e| StoreError::backend("sql", e))
    };
    let expect_corrupt = |store: &mut Sqlite, what: &str| match cache.zset(store) {
        Err(GraphError::Store(StoreError::Corrupt {
            table,
            identity,
            detail,
        })) => {
            assert_eq!(table, "st_word_cache");
            assert!(!identity.is_empty());
            assert!(detail.contains(what), "{detail}");
        }
        other => panic!("expected a corrupt row ({what}), got {other:?}"),
    };
    sql(&store, "UPDATE st_word_cache SET c = 'many'")?;
    expect_corrupt(&mut store, "weight");
    sql(
        &store,
        "UPDATE st_word_cache SET c = 1, identity = identity + 1",
    )?;
    expect_corrupt(&mut store, "identity");
    sql(
        &store,
        "UPDATE st_word_cache SET identity = identity - 1, data = x'ffffffffffff'",
    )?;
    expect_corrupt(&mut store, "identity");
    // Garbage whose identity matches: the bytes themselves do not decode.
    let garbage = [0xffu8, 0xff, 0xff, 0xff, 0xff];
    let id = graph::identity_of(&garbage);
    store
        .connection()
        .execute(
            "UPDATE st_word_cache SET data = ?, identity = ?",
            (garbage.to_vec(), id),
        )
        .map_err(|e| StoreError::backend("sql", e))?;
    expect_corrupt(&mut store, "decode");
    Ok(())
}

/// Names with quotes, semicolons, unicode, and very long ones are stored
/// under sanitized table and column names; the data round-trips.
#[test]
fn hostile_names_are_stored_safely() -> R {
    let dir = temp();
    let file = dir.path().join("h.db");
    let long = "ü".repeat(300);
    let evil_index = Index::with_parts(
        "k\"; DROP TABLE st_x; --",
        &["part'name"],
        |r: &(i64, String)| r.0,
    );
    let build = || {
        Graph::build(|q| {
            let (input, rows) =
                q.input::<(i64, String)>("users'; DROP TABLE st_last_update; --")?;
            let named = rows.named(&long);
            Ok((
                input,
                q.cache("cache \"quoted\" ñ", named.distinct(), &[&evil_index])?,
            ))
        })
    };
    let (graph, (input, cache)) = build()?;
    let mut store = Sqlite::open(&file, &graph, OpenOptions::default())?;
    graph.insert(
        &mut store,
        &input,
        [(1, "a".to_string()), (2, "b".to_string())],
    )?;
    for (_path, table) in store.table_names() {
        assert!(
            table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{table}"
        );
        assert!(table.len() <= 58, "{table}");
    }
    drop(store);
    let (graph, (input, cache2)) = build()?;
    let mut store = Sqlite::open(&file, &graph, OpenOptions::attach())?;
    graph.insert(&mut store, &input, [(3, "c".to_string())])?;
    let rows = cache2.iter_by_index(&mut store, &evil_index, Some(&[1, 3]))?;
    assert_eq!(
        rows,
        [(1, (1, "a".to_string()), 1), (3, (3, "c".to_string()), 1)]
    );
    assert_eq!(cache.zset(&mut store)?.len(), 3);
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
        let nan = cache.iter_by_index(
            &mut *store,
            &by_float_desc,
            Some(&[Desc(F64::new(f64::NAN))]),
        )?;
        let zero = cache
            .iter_by_index(&mut *store, &by_float_desc, Some(&[Desc(F64::new(-0.0))]))?
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
