//! State integrity on every store: a user function that panics is a typed
//! error and rolls back; every store accepts and refuses the same values;
//! damaged rows are reported as corrupt, and `check_rows` finds rows whose
//! key columns disagree with their data.

use std::collections::BTreeMap;

use graph::{StoreError, Time};
use operators::prelude::*;

use crate::harness::{Kind, kinds, pg_url};

type R = Result<(), GraphError>;

// ---------------------------------------------------------------------------
// 1. A user function that panics.

/// Words through a map, a filter, a reduce and a cache with an index, each
/// of whose functions panics on one word (its own name).
struct Bombs {
    graph: Graph,
    input: Input<String>,
    total: Output<ZSet<i64>>,
    cache: Cache<String>,
}

fn bomb(word: &str, at: &str) {
    if word == at {
        panic!("boom in {at}");
    }
}

fn bombs() -> Result<Bombs, GraphError> {
    let first = Index::new("first", |w: &String| {
        bomb(w, "key");
        w.chars().next().map(String::from).unwrap_or_default()
    });
    // A key no store limits (so no check runs it before the memory store's
    // commit would).
    let length = Index::new("length", |w: &String| {
        bomb(w, "length");
        w.len() as i64
    });
    let (graph, (input, total, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        let mapped = words
            .map(|w| {
                bomb(w, "map");
                w.clone()
            })
            .named("mapped");
        let kept = mapped
            .filter(|w| {
                bomb(w, "filter");
                true
            })
            .named("kept");
        let total = kept.reduce(0i64, |w| {
            bomb(w, "reduce");
            w.len() as i64
        });
        Ok((
            input,
            q.output("total", total)?,
            q.cache("kept_cache", kept, &[&first, &length])?,
        ))
    })?;
    Ok(Bombs {
        graph,
        input,
        total,
        cache,
    })
}

/// Whether `result` is the panic of the function planted for `trigger`:
/// `UserPanic` naming its vertex (for a key function, the state it keys)
/// with the panic's message.
fn is_bomb<T>(result: &Result<T, GraphError>, trigger: &str) -> bool {
    let vertex = match trigger {
        "map" => "words.map",
        "filter" => "mapped.filter",
        "reduce" => "kept.reduce",
        _ => "kept_cache",
    };
    matches!(
        result,
        Err(GraphError::UserPanic { path, message })
            if path.as_str() == vertex && message == &format!("boom in {trigger}")
    )
}

/// A map, a filter, a reduce's pick and two indexes' key functions (one
/// with a text key, which every store checks, one with an integer key) that
/// panic fail the iteration with `GraphError::UserPanic` naming the vertex
/// (the state, for a key function) and carrying the panic's message, through
/// `insert`, `remove`, `replace` and `iteration_at`: nothing is committed
/// (the cache, the reduce's state and the time stay as they were), and the
/// store carries on equal to the oracle.
#[test]
fn a_panicking_user_function_is_a_typed_error_and_rolls_back_on_every_store() -> R {
    let b = bombs()?;
    for kind in kinds() {
        let mut store = kind.open(&b.graph)?;
        let mut words: BTreeMap<String, i64> = BTreeMap::new();
        let mut total = 0i64;
        for (n, trigger) in ["map", "filter", "reduce", "key", "length"]
            .into_iter()
            .enumerate()
        {
            let good = format!("good{n}");
            let t = trigger.to_string();
            let before = store.last_time()?;
            let insert = b
                .graph
                .insert(&mut *store, &b.input, [good.clone(), t.clone()]);
            assert!(is_bomb(&insert, trigger), "{kind:?} insert: {insert:?}");
            let remove = b.graph.remove(&mut *store, &b.input, [t.clone()]);
            assert!(is_bomb(&remove, trigger), "{kind:?} remove: {remove:?}");
            let replace = b
                .graph
                .replace(&mut *store, &b.input, good.clone(), t.clone());
            assert!(is_bomb(&replace, trigger), "{kind:?} replace: {replace:?}");
            let next = store.next_time()?;
            let at = b.graph.iteration_at(
                &mut *store,
                Changes::new().insert(&b.input, [t.clone()]),
                Time::new(next, next - 1),
            );
            assert!(is_bomb(&at, trigger), "{kind:?} iteration_at: {at:?}");
            assert_eq!(store.last_time()?, before, "{kind:?} {trigger}");
            let cached: BTreeMap<String, i64> = b.cache.zset(&mut *store)?.into_iter().collect();
            assert_eq!(cached, words, "{kind:?} {trigger}");
            // The store carries on: the good word goes in, and the total's
            // change is the oracle's.
            let out = b.graph.insert(&mut *store, &b.input, [good.clone()])?;
            let new_total = total + good.len() as i64;
            // (An empty input's total is no row, not a zero.)
            let mut expected = zset! { new_total => 1 };
            if !words.is_empty() {
                expected.update(total, -1);
            }
            assert_eq!(out.get(&b.total)?, &expected, "{kind:?} {trigger}");
            total = new_total;
            words.insert(good, 1);
            let cached: BTreeMap<String, i64> = b.cache.zset(&mut *store)?.into_iter().collect();
            assert_eq!(cached, words, "{kind:?} {trigger}");
        }
    }
    Ok(())
}

/// The same through `Postgres::iteration_in`, whose engine runs on a thread
/// of its own: the caller's transaction is left usable and holds nothing of
/// the iteration.
#[test]
fn a_panicking_user_function_in_the_callers_transaction_is_a_typed_error() -> R {
    let Some(url) = pg_url() else {
        return Ok(());
    };
    let b = bombs()?;
    let mut opened = Kind::Postgres.open(&b.graph)?;
    let t = opened.next_time()?;
    let mut reader = opened.open_again(&b.graph, false)?;
    let store = opened.postgres().expect("a Postgres store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for trigger in ["map", "filter", "reduce", "key", "length"] {
        let out = rt.block_on(async {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let task = tokio::spawn(connection);
            let tx = client.transaction().await.expect("begin");
            let changes = Changes::new().insert(&b.input, ["fine".to_string(), trigger.into()]);
            let out = store
                .iteration_in(&tx, &b.graph, changes, Time::new(t, t - 1))
                .await;
            // Still usable, and committing it commits nothing of the iteration.
            tx.execute("SELECT 1", &[]).await.expect("still usable");
            tx.commit().await.expect("commit");
            drop(client);
            let _ = task.await;
            out
        });
        assert!(is_bomb(&out, trigger), "{trigger}: {out:?}");
        assert!(b.cache.zset(&mut *reader)?.is_empty(), "{trigger}");
        assert_eq!(reader.next_time()?, t, "{trigger}");
    }
    let out = b
        .graph
        .insert(&mut *reader, &b.input, ["fine".to_string()])?;
    assert_eq!(out.get(&b.total)?, &zset! { 4 => 1 });
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Every store accepts and refuses the same values.

/// A row keyed three ways: by its text, its bytes and its date.
type Row = (String, Vec<u8>, chrono::NaiveDate);

struct Keys {
    graph: Graph,
    rows: Input<Row>,
    tags: Input<(String, i64)>,
    cache: Cache<Row>,
    tagged: Output<ZSet<Pair<Row, (String, i64)>>>,
}

/// Rows cached under a text, a bytes and a date index, and joined with
/// tags by their text (so the join reads the tags by the rows' text keys
/// before anything is written).
fn keys() -> Result<Keys, GraphError> {
    let by_name = Index::new("name", |r: &Row| r.0.clone());
    let by_blob = Index::new("blob", |r: &Row| r.1.clone());
    let by_day = Index::new("day", |r: &Row| r.2);
    let tag_name = Index::new("name", |t: &(String, i64)| t.0.clone());
    let (graph, (rows, tags, cache, tagged)) = Graph::build(|q| {
        let (rows, r) = q.input::<Row>("rows")?;
        let (tags, t) = q.input::<(String, i64)>("tags")?;
        let cache = q.cache("rows_cache", r, &[&by_name, &by_blob, &by_day])?;
        let tagged = q.output("tagged", r.join(t, &by_name, &tag_name))?;
        Ok((rows, tags, cache, tagged))
    })?;
    Ok(Keys {
        graph,
        rows,
        tags,
        cache,
        tagged,
    })
}

fn day(year: i32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(year, 1, 2).expect("a date")
}

/// A text key holding NUL, a 3 KB text key, a 3 KB bytes key and a date in
/// year 10000 are refused by every store alike, before anything is written:
/// `StoreError::Unrepresentable` naming the table, with the same detail
/// everywhere. Keys just under the limit are accepted by every store, read
/// back by index, and joined; after a refusal the store carries on.
#[test]
fn every_store_refuses_the_same_keys_with_the_same_error() -> R {
    let k = keys()?;
    let fine = |name: &str| -> Row { (name.to_string(), vec![0, 1, 2], day(2024)) };
    let bad: [(&str, Row); 4] = [
        ("NUL", ("a\0b".into(), vec![1], day(2024))),
        ("3 KB text", ("t".repeat(3000), vec![1], day(2024))),
        ("3 KB bytes", ("b".into(), vec![7; 3000], day(2024))),
        ("year 10000", ("d".into(), vec![1], day(10_000))),
    ];
    // Largest accepted: text and bytes of 2048 bytes each (in separate
    // indexes), a NUL byte in bytes, the last four-digit year.
    let big = ("é".repeat(1024), vec![0; graph::MAX_KEY_BYTES], day(9999));
    let mut details: BTreeMap<&str, Vec<(Kind, String)>> = BTreeMap::new();
    for kind in kinds() {
        let mut store = kind.open(&k.graph)?;
        let seed = Changes::new()
            .insert(&k.rows, [fine("a"), big.clone()])
            .insert(&k.tags, [("a".to_string(), 1), (big.0.clone(), 2)]);
        k.graph.iteration(&mut *store, seed)?;
        let by_name = Index::new("name", |r: &Row| r.0.clone());
        let found =
            k.cache
                .iter_by_index(&mut *store, &by_name, Some(std::slice::from_ref(&big.0)))?;
        assert_eq!(found.len(), 1, "{kind:?}: the largest key reads back");
        for (what, row) in &bad {
            // Reading by a key no store can hold finds nothing, everywhere.
            let found =
                k.cache
                    .iter_by_index(&mut *store, &by_name, Some(std::slice::from_ref(&row.0)))?;
            assert!(found.is_empty(), "{kind:?} {what}");
            let before = store.last_time()?;
            // Tagged too, so that the join looks the bad key up.
            let changes = Changes::new()
                .insert(&k.rows, [fine("b"), row.clone()])
                .insert(&k.tags, [(row.0.clone(), 3)]);
            match k.graph.iteration(&mut *store, changes) {
                Err(GraphError::Store(StoreError::Unrepresentable { table, detail })) => {
                    assert!(table.ends_with("rows_cache"), "{kind:?} {what}: {table}");
                    details.entry(what).or_default().push((kind, detail));
                }
                other => panic!("{kind:?} {what}: expected Unrepresentable, got {other:?}"),
            }
            assert_eq!(store.last_time()?, before, "{kind:?} {what}");
            assert_eq!(k.cache.zset(&mut *store)?.len(), 2, "{kind:?} {what}");
            // Removing it is refused alike (a removal of a row never
            // inserted would be stored with a negative weight).
            let removed = k.graph.remove(&mut *store, &k.rows, [row.clone()]);
            assert!(
                matches!(
                    removed,
                    Err(GraphError::Store(StoreError::Unrepresentable { .. }))
                ),
                "{kind:?} {what}: {removed:?}"
            );
        }
        // Not wedged: the next change is applied and joined.
        let out = k.graph.insert(&mut *store, &k.rows, [fine("c")])?;
        assert!(out.get(&k.tagged)?.is_empty(), "{kind:?}");
        let out = k
            .graph
            .insert(&mut *store, &k.tags, [("c".to_string(), 4)])?;
        assert_eq!(out.get(&k.tagged)?.len(), 1, "{kind:?}");
        assert_eq!(k.cache.zset(&mut *store)?.len(), 3, "{kind:?}");
    }
    for (what, seen) in &details {
        assert!(
            seen.windows(2).all(|w| w[0].1 == w[1].1),
            "{what}: the stores' details differ: {seen:?}"
        );
    }
    Ok(())
}

/// Adding to a stored weight of `i64::MAX` (a cache the store itself sums)
/// is `StoreError::WeightOverflow` naming the table on every store, and
/// changes nothing.
#[test]
fn a_stored_weight_that_overflows_is_the_same_error_on_every_store() -> R {
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, x) = q.input::<String>("names")?;
        let x = x.transient();
        Ok((input, q.cache("names_cache", x, &[])?))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let huge = zset! { "x".to_string() => i64::MAX };
        graph.iteration(&mut *store, Changes::new().zset(&input, huge.clone()))?;
        match graph.insert(&mut *store, &input, ["x".to_string(), "y".to_string()]) {
            Err(GraphError::Store(StoreError::WeightOverflow { table, identity })) => {
                assert!(table.ends_with("names_cache"), "{kind:?}: {table}");
                if kind != Kind::Memory {
                    let x = self::identity(&graph, "names_cache", "x");
                    assert_eq!(identity, x.to_string(), "{kind:?}");
                }
            }
            other => panic!("{kind:?}: expected WeightOverflow, got {other:?}"),
        }
        assert_eq!(cache.zset(&mut *store)?, huge, "{kind:?}");
        graph.insert(&mut *store, &input, ["y".to_string()])?;
        assert_eq!(cache.zset(&mut *store)?.len(), 2, "{kind:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Damaged rows.

/// Names, cached as they are.
fn names() -> Result<(Graph, (Input<String>, Cache<String>)), GraphError> {
    Graph::build(|q| {
        let (input, x) = q.input::<String>("names")?;
        let x = x.transient();
        Ok((input, q.cache("names_cache", x, &[])?))
    })
}

/// The identity of `value`'s row in the state at `path`.
fn identity(graph: &Graph, path: &str, value: &str) -> i64 {
    let spec = graph
        .states()
        .iter()
        .find(|s| s.path().as_str() == path)
        .expect("a state of this graph");
    spec.codec().locate(&vec![value.to_string()])[0].0
}

/// A feed's row whose identity the store already holds at that time under
/// another value (a row written behind the store's back: a write holds each
/// row once and writes a time once) is an `IdentityCollision` naming the
/// feed's table and the identity, however the iteration is written; nothing
/// changes.
#[test]
fn a_feed_row_whose_identity_holds_another_value_is_a_collision_on_every_sql_store() -> R {
    let (graph, input) = Graph::build(|q| {
        let (input, x) = q.input::<String>("names")?;
        q.feed("name_changes", x)?;
        Ok(input)
    })?;
    let spec = graph
        .states()
        .iter()
        .find(|s| s.path().as_str() == "feed_name_changes")
        .expect("the feed's state")
        .clone();
    for kind in crate::harness::sql_kinds() {
        for writer in writers(kind) {
            let mut store = kind.open(&graph)?;
            graph.insert(&mut *store, &input, ["a".to_string()])?;
            let before = store.last_time()?;
            let t = before + 1;
            let row = graph::FeedRow {
                time: t,
                row: "x".to_string(),
            };
            let x = spec.codec().locate(&vec![row])[0].0;
            // Another value's bytes (`a` at time 1) under `x` at time `t`.
            let table = store.table("feed_name_changes");
            store.sql(&format!(
                "INSERT INTO {table} (identity, data, k_time, c) \
                 SELECT {x}, data, {t}, 1 FROM {table}"
            ));
            let out = write(writer, &mut store, &graph, &input, &["x"]);
            let what = format!("{kind:?} {writer:?}");
            match &out {
                Err(GraphError::Store(StoreError::IdentityCollision {
                    table: found,
                    identity,
                })) => {
                    assert_eq!(found, &table, "{what}");
                    assert_eq!(*identity, x, "{what}");
                }
                _ => panic!("{what}: {out:?}"),
            }
            if !matches!(writer, Writer::Pipelined) {
                assert_eq!(store.last_time()?, before, "{what}");
            }
        }
    }
    Ok(())
}

/// How a damaged store is written to.
#[derive(Clone, Copy, Debug)]
enum Writer {
    /// `graph.insert`: one transaction.
    Serial,
    /// `iteration_at` with `flush_every_set = Some(true)`: each table on its own.
    Pipelined,
    /// Postgres only: `iteration_in` the caller's transaction.
    Callers,
}

/// Inserts `rows` into `input` with `writer`.
fn write(
    writer: Writer,
    store: &mut crate::harness::Opened,
    graph: &Graph,
    input: &Input<String>,
    rows: &[&str],
) -> Result<Outputs, GraphError> {
    let changes = Changes::new().insert(input, rows.iter().map(|r| r.to_string()));
    match writer {
        Writer::Serial => graph.iteration(&mut **store, changes),
        Writer::Pipelined => {
            let next = store.next_time()?;
            graph.iteration_at(&mut **store, changes, Time::new(next, next - 1).pipelined())
        }
        Writer::Callers => {
            let url = pg_url().expect("Postgres");
            let next = store.next_time()?;
            let pg = store.postgres().expect("a Postgres store");
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
                let out = pg
                    .iteration_in(&tx, graph, changes, Time::new(next, next - 1))
                    .await;
                if out.is_ok() {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback().await.expect("rollback");
                }
                drop(client);
                let _ = task.await;
                out
            })
        }
    }
}

/// The writers of a SQL store of `kind`.
fn writers(kind: Kind) -> Vec<Writer> {
    let mut w = vec![Writer::Serial, Writer::Pipelined];
    if kind == Kind::Postgres {
        w.push(Writer::Callers);
    }
    w
}

/// Garbage bytes in a row's `data`, met by a write to that row (the write
/// path of an integral: no read of the row comes first), are
/// `StoreError::Corrupt` naming the table and the identity on SQLite and
/// Postgres, however the iteration is written; a well-formed different
/// value under the identity stays an `IdentityCollision`. Nothing changes.
#[test]
fn garbage_bytes_met_by_a_write_are_corrupt_not_a_collision_on_every_sql_store() -> R {
    let (graph, (input, _cache)) = names()?;
    let x = identity(&graph, "names_cache", "x");
    for kind in crate::harness::sql_kinds() {
        for writer in writers(kind) {
            for (damage, garbage) in [("garbage", true), ("another value", false)] {
                let mut store = kind.open(&graph)?;
                graph.insert(&mut *store, &input, ["x".to_string()])?;
                let table = store.table("names_cache");
                let data = if garbage {
                    vec![0xff; 12]
                } else {
                    vec![1, b'y'] // "y", well formed
                };
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                let blob = match kind {
                    Kind::Postgres => format!("'\\x{hex}'::bytea"),
                    _ => format!("x'{hex}'"),
                };
                store.sql(&format!(
                    "UPDATE {table} SET data = {blob} WHERE identity = {x}"
                ));
                let before = store.last_time()?;
                let out = write(writer, &mut store, &graph, &input, &["x", "w"]);
                let what = format!("{kind:?} {writer:?} {damage}");
                match (&out, garbage) {
                    (
                        Err(GraphError::Store(StoreError::Corrupt {
                            table: t, identity, ..
                        })),
                        true,
                    ) => {
                        assert_eq!(t, &table, "{what}");
                        assert_eq!(identity, &x.to_string(), "{what}");
                    }
                    (
                        Err(GraphError::Store(StoreError::IdentityCollision {
                            table: t,
                            identity,
                        })),
                        false,
                    ) => {
                        assert_eq!(t, &table, "{what}");
                        assert_eq!(*identity, x, "{what}");
                    }
                    _ => panic!("{what}: {out:?}"),
                }
                if !matches!(writer, Writer::Pipelined) {
                    assert_eq!(store.last_time()?, before, "{what}");
                }
                let rows = store
                    .sqlite()
                    .map(|s| {
                        s.connection()
                            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                                r.get::<_, i64>(0)
                            })
                            .expect("count")
                    })
                    .unwrap_or_else(|| {
                        crate::harness::with_pg_client(async |c| {
                            c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                                .await
                                .expect("count")
                                .get(0)
                        })
                    });
                assert_eq!(rows, 1, "{what}: \"w\" was not written");
            }
        }
    }
    Ok(())
}

/// Rows keyed by text, number and date, and a count per name (a keyed
/// state).
type Dated = (String, i64, chrono::NaiveDate);

fn dated() -> Result<(Graph, (Input<Dated>, Cache<Dated>)), GraphError> {
    let by_name = Index::new("name", |r: &Dated| r.0.clone());
    let by_day = Index::new("day", |r: &Dated| (r.2, r.1));
    Graph::build(|q| {
        let (input, rows) = q.input::<Dated>("dated")?;
        let per_name = rows.group_reduce_flatten(&by_name, 0i64, |_| 1);
        q.output("per_name", per_name)?;
        Ok((input, q.cache("dated_cache", rows, &[&by_name, &by_day])?))
    })
}

/// Key columns damaged by hand (garbage text, a value of the wrong type,
/// another valid date) and garbage bytes in `data`: reads by index miss the
/// damaged rows while the whole table still shows them, and `check_rows`
/// reports every damaged column of every row (table, identity, column,
/// stored and expected values), on SQLite and Postgres. An undamaged store
/// reports nothing.
#[test]
fn check_rows_reports_every_damaged_column_on_every_sql_store() -> R {
    let (graph, (input, cache)) = dated()?;
    let rows: Vec<Dated> = ["ann", "bob", "cid", "dan"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i as i64, day(2024)))
        .collect();
    let id = |r: &Dated| {
        let spec = graph
            .states()
            .iter()
            .find(|s| s.path().as_str() == "dated_cache")
            .expect("the cache's state");
        spec.codec().locate(&vec![r.clone()])[0].0
    };
    for kind in crate::harness::sql_kinds() {
        let store = kind.open(&graph)?;
        let mut store = store;
        graph.insert(&mut *store, &input, rows.clone())?;
        let check = |s: &crate::harness::Opened| -> Result<Vec<store::RowProblem>, GraphError> {
            Ok(match (s.sqlite(), s.postgres()) {
                (Some(s), _) => s.check_rows()?,
                (_, Some(p)) => p.check_rows()?,
                _ => unreachable!("a SQL store"),
            })
        };
        assert_eq!(check(&store)?, [], "{kind:?}: an undamaged store");
        let table = store.table("dated_cache");
        let columns = crate::harness::key_columns(&store, &table);
        let (name, date, number) = (&columns[0], &columns[1], &columns[2]);
        // Garbage text, another valid date, and (SQLite, whose columns are
        // not typed) text where a number belongs, or else another number.
        let wrong_type = if kind == Kind::Sqlite { "'abc'" } else { "77" };
        store.sql(&format!(
            "UPDATE {table} SET {name} = 'zzz' WHERE identity = {ann};
             UPDATE {table} SET {date} = '2030-05-06' WHERE identity = {bob};
             UPDATE {table} SET {number} = {wrong_type}, {name} = 'q' WHERE identity = {cid};",
            ann = id(&rows[0]),
            bob = id(&rows[1]),
            cid = id(&rows[2]),
        ));
        let garbage = match kind {
            Kind::Postgres => "'\\xffffffffffff'::bytea",
            _ => "x'ffffffffffff'",
        };
        store.sql(&format!(
            "UPDATE {table} SET data = {garbage} WHERE identity = {}",
            id(&rows[3])
        ));
        // Reads by index miss the damaged keys; the whole table has them.
        let by_name = Index::new("name", |r: &Dated| r.0.clone());
        let found = cache.iter_by_index(&mut *store, &by_name, Some(&["ann".to_string()]))?;
        assert!(found.is_empty(), "{kind:?}: {found:?}");
        let mut problems = check(&store)?;
        problems.sort_by_key(|p| (p.identity, p.column.clone()));
        // SQLite keeps dates as text, and shows them so.
        let (stored_date, stored_number) = match kind {
            Kind::Sqlite => ("\"2030-05-06\"", "\"abc\""),
            _ => ("2030-05-06", "77"),
        };
        let mut expected: Vec<(i64, String, String, String)> = vec![
            (
                id(&rows[0]),
                name.clone(),
                "\"zzz\"".into(),
                "\"ann\"".into(),
            ),
            (
                id(&rows[1]),
                date.clone(),
                stored_date.into(),
                "2024-01-02".into(),
            ),
            (id(&rows[2]), name.clone(), "\"q\"".into(), "\"cid\"".into()),
            (
                id(&rows[2]),
                number.clone(),
                stored_number.into(),
                "2".into(),
            ),
        ];
        expected.sort();
        let mut seen: Vec<(i64, String, String, String)> = problems
            .iter()
            .filter(|p| p.column != "data")
            .map(|p| {
                assert_eq!(p.table, table, "{kind:?}");
                (
                    p.identity,
                    p.column.clone(),
                    p.stored.clone(),
                    p.expected.clone(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(seen, expected, "{kind:?}");
        let data: Vec<_> = problems.iter().filter(|p| p.column == "data").collect();
        assert_eq!(data.len(), 1, "{kind:?}: {problems:?}");
        assert_eq!(data[0].identity, id(&rows[3]), "{kind:?}");
    }
    Ok(())
}
