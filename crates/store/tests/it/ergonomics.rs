//! The public API without friction: each test is a piece of friction a
//! user met writing queries, and shows it gone on every store.

use operators::prelude::*;

use crate::harness::kinds;

type R = Result<(), GraphError>;

/// Outputs have a name space of their own: an input and an output may
/// share a name. Inputs, caches and named streams share one (each names a
/// table), and a clash there says so and what to do.
#[test]
fn an_output_may_share_its_name_with_an_input() -> R {
    for kind in kinds() {
        let (graph, (input, out, cache)) = Graph::build(|q| {
            let (input, b) = q.input::<i64>("b")?;
            let cache = q.cache("doubled", b.map(|x| x * 2), &[])?;
            Ok((input, q.output("b", b)?, cache))
        })?;
        let mut store = kind.open(&graph)?;
        let change = graph.insert(&mut *store, &input, [1, 2])?;
        assert_eq!(change.get(&out)?, &zset! { 1 => 1, 2 => 1 }, "{kind:?}");
        assert_eq!(cache.zset(&mut *store)?, zset! { 2 => 1, 4 => 1 });
    }
    let err = Graph::build(|q| {
        let (_input, b) = q.input::<i64>("b")?;
        q.cache("b", b, &[])
    })
    .expect_err("an input and a cache of one name");
    let message = err.to_string();
    assert!(matches!(err, GraphError::DuplicatePath { .. }), "{err}");
    assert!(message.contains("share one name space"), "{message}");
    assert!(message.contains("another name"), "{message}");
    let err = Graph::build(|q| {
        let (_input, b) = q.input::<i64>("b")?;
        Ok((q.output("out", b)?, q.output("out", b)?))
    })
    .expect_err("two outputs of one name");
    assert!(matches!(err, GraphError::DuplicatePath { .. }), "{err}");
    Ok(())
}

/// A cache read through a descending index takes and returns plain keys
/// (`Desc` orders the index and is never seen), on every store.
#[test]
fn descending_keys_are_plain_in_reads() -> R {
    type Score = (String, i64, Option<i64>);
    let by_points = Index::new("points", |s: &Score| Desc(s.1));
    let by_both = Index::new("both", |s: &Score| (Desc(s.2), s.0.clone()));
    let row = |n: &str, p: i64, b: Option<i64>| (n.to_string(), p, b);
    for kind in kinds() {
        let (graph, (input, cache)) = Graph::build(|q| {
            let (input, scores) = q.input::<Score>("scores")?;
            Ok((
                input,
                q.cache("scores_cache", scores, &[&by_points, &by_both])?,
            ))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(
            &mut *store,
            &input,
            [
                row("a", 1, None),
                row("b", 5, Some(2)),
                row("c", 3, Some(7)),
            ],
        )?;
        let points: Vec<(i64, String)> = cache
            .iter_by_index(&mut *store, &by_points, Some(&[1, 5]))?
            .into_iter()
            .map(|(k, v, _)| (k, v.0))
            .collect();
        assert_eq!(points, [(5, "b".into()), (1, "a".into())], "{kind:?}");
        let all: Vec<(Option<i64>, String)> = cache
            .iter_by_index(&mut *store, &by_both, None)?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        let expected = [(Some(7), "c"), (Some(2), "b"), (None, "a")];
        let expected: Vec<(Option<i64>, String)> =
            expected.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(all, expected, "{kind:?}");
        let one = cache.iter_by_index(&mut *store, &by_both, Some(&[(None, "a".to_string())]))?;
        assert_eq!(one.len(), 1, "{kind:?}");
    }
    Ok(())
}

#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
struct User {
    id: i64,
    name: String,
}

#[derive(
    Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
struct Order {
    user_id: i64,
    amount: i64,
}

/// A function generic over stores, with only the operators' prelude in
/// scope (no `graph::StateStore` import): it inserts borrowed rows, twice
/// from one slice.
fn insert_twice<S: StateStore + ?Sized>(
    graph: &Graph,
    store: &mut S,
    input: &Input<Order>,
    rows: &[Order],
) -> Result<Outputs, GraphError> {
    graph.insert(store, input, rows)?;
    graph.insert(store, input, rows.iter())
}

/// Index closures need no argument types (`User::index`), `insert` and
/// `remove` take borrowed rows, and the plain `ZSet::join` and
/// `ZSet::first_n` give exactly what the operators keep, on every store.
#[test]
fn indexes_infer_rows_are_borrowed_and_plain_zsets_join() -> R {
    let by_id = User::index("id", |u| u.id);
    let by_user = Order::index("user_id", |o| o.user_id);
    let by_amount = Order::index("amount", |o| Desc(o.amount));
    let users = vec![
        User {
            id: 1,
            name: "ann".into(),
        },
        User {
            id: 2,
            name: "bob".into(),
        },
    ];
    let orders = vec![
        Order {
            user_id: 1,
            amount: 5,
        },
        Order {
            user_id: 1,
            amount: 9,
        },
        Order {
            user_id: 3,
            amount: 7,
        },
    ];
    for kind in kinds() {
        let (graph, (u_in, o_in, joined, top)) = Graph::build(|q| {
            let (u_in, u) = q.input::<User>("users")?;
            let (o_in, o) = q.input::<Order>("orders")?;
            let joined = q.cache("joined", u.join(o, &by_id, &by_user), &[])?;
            let top = q.cache("top", o.first_n(&by_amount, 2), &[])?;
            Ok((u_in, o_in, joined, top))
        })?;
        let mut store = kind.open(&graph)?;
        graph.insert(&mut *store, &u_in, &users)?;
        insert_twice(&graph, &mut *store, &o_in, &orders)?;
        graph.remove(&mut *store, &o_in, &orders[..1])?;
        graph.replace(
            &mut *store,
            &u_in,
            &users[1],
            User {
                id: 3,
                name: "cy".into(),
            },
        )?;
        let user_set: ZSet<User> = [
            users[0].clone(),
            User {
                id: 3,
                name: "cy".into(),
            },
        ]
        .into_iter()
        .map(|u| (u, 1))
        .collect();
        let mut order_set: ZSet<Order> = orders.iter().map(|o| (o.clone(), 2)).collect();
        order_set.update(orders[0].clone(), -1);
        assert_eq!(
            joined.zset(&mut *store)?,
            user_set.join(&order_set, &by_id, &by_user),
            "{kind:?}"
        );
        assert_eq!(
            top.zset(&mut *store)?,
            order_set.first_n(&by_amount, 2),
            "{kind:?}"
        );
        assert_eq!(
            top.zset(&mut *store)?,
            zset! { orders[1].clone() => 2 },
            "{kind:?}"
        );
    }
    Ok(())
}

/// A helper over sub-queries, typed with `StreamFn` (no `for<'q>`), takes
/// closures without annotations, and `stream_fn` keeps one in a `let`.
#[test]
fn sub_queries_need_no_higher_ranked_signatures() -> R {
    fn totals(
        per_row: impl StreamFn<i64, i64>,
    ) -> Result<(Graph, (Input<i64>, Output<ZSet<i64>>)), GraphError> {
        Graph::build(|q| {
            let (input, n) = q.input::<i64>("n")?;
            Ok((input, q.output("total", per_row(n).reduce(0i64, |x| *x))?))
        })
    }
    let doubled = stream_fn(|s: Stream<ZSet<i64>>| s.map(|x| x * 2));
    for kind in kinds() {
        for (graph, (input, total), expected) in [
            (totals(|s| s.filter(|x| *x > 1))?, 5),
            (totals(doubled)?, 12),
            (totals(|s| doubled(doubled(s)))?, 24),
        ]
        .map(|(built, e)| (built.0, built.1, e))
        {
            let mut store = kind.open(&graph)?;
            let change = graph.insert(&mut *store, &input, [1, 2, 3])?;
            assert_eq!(change.get(&total)?, &zset! { expected => 1 }, "{kind:?}");
        }
    }
    Ok(())
}

/// The SQL stores close explicitly: SQLite's write-ahead log is folded
/// into the file and removed, and what was written reads back after a
/// re-open; a Postgres store's sessions end at once.
#[test]
fn sql_stores_close_explicitly() -> R {
    let (graph, (input, cache)) = Graph::build(|q| {
        let (input, words) = q.input::<String>("words")?;
        Ok((input, q.cache("word_set", words.distinct(), &[])?))
    })?;
    let dir = tempfile::tempdir().map_err(|e| StoreError::backend("tempdir", e))?;
    let path = dir.path().join("state.db");
    let mut sqlite = store::Sqlite::open(&path, &graph, store::OpenOptions::default())?;
    graph.insert(&mut sqlite, &input, ["a".to_owned(), "b".to_owned()])?;
    let wal = dir.path().join("state.db-wal");
    assert!(wal.exists(), "an open store writes ahead");
    sqlite.close()?;
    assert!(!wal.exists(), "closing folds the log into the file");
    let mut sqlite = store::Sqlite::open(&path, &graph, store::OpenOptions::default())?;
    assert_eq!(cache.zset(&mut sqlite)?.len(), 2);
    sqlite.close()?;

    let Some(url) = crate::harness::pg_url() else {
        return Ok(());
    };
    let app = format!("close_{}", crate::harness::unique_prefix());
    let sessions = || -> i64 {
        crate::harness::with_pg_client(async |c| {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("count sessions")
            .get(0)
        })
    };
    let options = store::OpenOptions {
        prefix: crate::harness::unique_prefix(),
        ..store::OpenOptions::default()
    };
    let mut pg = store::Postgres::open(&format!("{url} application_name={app}"), &graph, options)?;
    graph.insert(&mut pg, &input, ["a".to_owned()])?;
    assert!(sessions() > 0, "the store holds sessions");
    pg.close()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sessions() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sessions(), 0, "closing ends the store's sessions");
    Ok(())
}
