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
            q.cache("kept_cache", kept, &[&first])?,
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
/// `UserPanic` naming its vertex (for the key function, the state it keys)
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

/// A map, a filter, a reduce's pick and an index's key function that panic
/// fail the iteration with `GraphError::UserPanic` naming the vertex (the
/// state, for the key function) and carrying the panic's message, through
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
        for (n, trigger) in ["map", "filter", "reduce", "key"].into_iter().enumerate() {
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
    for trigger in ["map", "filter", "reduce", "key"] {
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
        let found = k
            .cache
            .iter_by_index(&mut *store, &by_name, Some(&[big.0.clone()]))?;
        assert_eq!(found.len(), 1, "{kind:?}: the largest key reads back");
        for (what, row) in &bad {
            // Reading by a key no store can hold finds nothing, everywhere.
            let found = k
                .cache
                .iter_by_index(&mut *store, &by_name, Some(&[row.0.clone()]))?;
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
        Ok((input, q.cache("names_cache", x, &[])?))
    })?;
    for kind in kinds() {
        let mut store = kind.open(&graph)?;
        let huge = zset! { "x".to_string() => i64::MAX };
        graph.iteration(&mut *store, Changes::new().zset(&input, huge.clone()))?;
        match graph.insert(&mut *store, &input, ["x".to_string(), "y".to_string()]) {
            Err(GraphError::Store(StoreError::WeightOverflow { table, identity })) => {
                assert!(table.ends_with("names_cache"), "{kind:?}: {table}");
                assert!(!identity.is_empty(), "{kind:?}");
            }
            other => panic!("{kind:?}: expected WeightOverflow, got {other:?}"),
        }
        assert_eq!(cache.zset(&mut *store)?, huge, "{kind:?}");
        graph.insert(&mut *store, &input, ["y".to_string()])?;
        assert_eq!(cache.zset(&mut *store)?.len(), 2, "{kind:?}");
    }
    Ok(())
}
