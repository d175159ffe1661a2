//! Change feeds on every store: a feed holds exactly the stream's change of
//! every committed iteration (checked against a from-scratch oracle),
//! consumers at different speeds or starting late see all of it in time
//! order, retention deletes what every consumer acknowledged (or keeps it
//! for a while), several workers (pipelined or not) never show a consumer
//! a time before every earlier one committed, and on Postgres
//! acknowledging inside the application's transaction delivers nothing
//! twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use graph::{Consumer, Feed, FeedRetention, FeedStore, StateStore};
use operators::prelude::*;
use parallel::{Counter, Ingest, Progress};
use store::StoreError;

use crate::feed_harness::Opener;
use crate::harness::{Kind, kinds};

type R = Result<(), GraphError>;

/// Distinct `(key, value)` pairs, mapped to their keys: each key weighs
/// as many distinct values as it has (non-linear, so retractions matter).
struct Keys {
    graph: Graph,
    input: Input<(i64, i64)>,
    feed: Feed<i64>,
    out: Output<ZSet<i64>>,
}

fn keys() -> Result<Keys, GraphError> {
    let (graph, (input, feed, out)) = Graph::build(|q| {
        let (input, pairs) = q.input::<(i64, i64)>("pairs")?;
        let keys = pairs.distinct().map(|p: &(i64, i64)| p.0);
        Ok((input, q.feed("key_changes", keys)?, q.output("keys", keys)?))
    })?;
    Ok(Keys {
        graph,
        input,
        feed,
        out,
    })
}

/// The query from scratch: keys weighted by their distinct values.
fn oracle(acc: &BTreeMap<(i64, i64), i64>) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for ((k, _), w) in acc {
        if *w > 0 {
            *out.entry(*k).or_insert(0) += 1;
        }
    }
    out
}

/// `new - old`, zero weights dropped.
fn difference(new: &BTreeMap<i64, i64>, old: &BTreeMap<i64, i64>) -> ZSet<i64> {
    let mut z = ZSet::new();
    for (k, w) in new {
        z.update(*k, *w);
    }
    for (k, w) in old {
        z.update(*k, -*w);
    }
    z
}

/// A deterministic pseudo-random sequence (xorshift), so failures replay.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` random batches of inserts and removals over a small domain.
fn batches(seed: u64, n: usize) -> Vec<ZSet<(i64, i64)>> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let mut z = ZSet::new();
            for _ in 0..=rng.below(4) {
                let row = (rng.below(6) as i64, rng.below(4) as i64);
                z.update(row, if rng.below(3) == 0 { -1 } else { 1 });
            }
            z
        })
        .collect()
}

/// The oracle's change after each batch, by batch number.
fn expected_changes(batches: &[ZSet<(i64, i64)>]) -> Vec<ZSet<i64>> {
    let mut acc = BTreeMap::new();
    let mut before = BTreeMap::new();
    batches
        .iter()
        .map(|b| {
            for (row, w) in b.iter() {
                *acc.entry(*row).or_insert(0) += w;
            }
            let now = oracle(&acc);
            let change = difference(&now, &before);
            before = now;
            change
        })
        .collect()
}

/// Everything `consumer` delivers until it has seen time `last`.
fn drain<S: FeedStore>(
    consumer: &mut Consumer<i64, S>,
    last: i64,
    max: usize,
) -> Result<Vec<(i64, ZSet<i64>)>, GraphError> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.position() < last {
        assert!(Instant::now() < deadline, "time {last} never arrived");
        let got = consumer.poll(max)?;
        assert!(got.len() <= max, "poll({max}) returned {}", got.len());
        if !got.is_empty() {
            // Everything up to the position is delivered (empty times too).
            consumer.ack(consumer.position())?;
        } else {
            consumer.wait(Duration::from_millis(200))?;
        }
        seen.extend(got);
    }
    Ok(seen)
}

/// Checks that `seen` is exactly the non-empty `expected` changes, time `i + 1`
/// for batch `i`, in time order.
fn check_delivered(seen: &[(i64, ZSet<i64>)], expected: &[ZSet<i64>], what: &str) {
    let times: Vec<i64> = seen.iter().map(|(t, _)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "{what}: times out of order or repeated: {times:?}"
    );
    let want: Vec<(i64, ZSet<i64>)> = expected
        .iter()
        .enumerate()
        .filter(|(_, z)| !z.is_empty())
        .map(|(i, z)| (i as i64 + 1, z.clone()))
        .collect();
    assert_eq!(seen.len(), want.len(), "{what}: how many changes");
    for ((t, z), (wt, wz)) in seen.iter().zip(&want) {
        assert_eq!((t, z), (wt, wz), "{what}: the change at time {wt}");
    }
}

#[test]
fn a_feed_holds_each_iterations_change_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        for seed in [7u64, 1234, 99991] {
            let first = kind.open(&k.graph)?;
            let mut store = first.twin(&k.graph)?;
            let opener = Opener::of(&first, kind);
            let bs = batches(seed, 60);
            let expected = expected_changes(&bs);
            for (i, b) in bs.iter().enumerate() {
                if i == 30 && kind != Kind::Memory {
                    // A re-open half-way, as another process would.
                    store = first.twin(&k.graph)?;
                }
                let mut out = k
                    .graph
                    .iteration(&mut *store, Changes::new().zset(&k.input, b.clone()))?;
                assert_eq!(
                    out.take(&k.out)?,
                    expected[i],
                    "{kind:?} seed {seed} step {i}"
                );
            }
            let mut consumer = k.feed.consumer(opener.open(&k.graph)?, "checker")?;
            let seen = drain(&mut consumer, 60, 1000)?;
            check_delivered(&seen, &expected, &format!("{kind:?} seed {seed}"));
        }
    }
    Ok(())
}

#[test]
fn two_consumers_at_different_speeds_each_see_everything_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        let mut store = kind.open(&k.graph)?;
        let opener = Opener::of(&store, kind);
        let bs = batches(42, 40);
        let expected = expected_changes(&bs);
        let mut fast = k.feed.consumer(opener.open(&k.graph)?, "fast")?;
        let mut slow = k.feed.consumer(opener.open(&k.graph)?, "slow")?;
        let (mut fast_seen, mut slow_seen) = (Vec::new(), Vec::new());
        for (i, b) in bs.iter().enumerate() {
            k.graph
                .iteration(&mut *store, Changes::new().zset(&k.input, b.clone()))?;
            let got = fast.poll(100)?;
            if let Some((t, _)) = got.last() {
                fast.ack(*t)?;
            }
            fast_seen.extend(got);
            if i % 9 == 8 {
                let got = slow.poll(2)?;
                if let Some((t, _)) = got.last() {
                    slow.ack(*t)?;
                }
                slow_seen.extend(got);
            }
        }
        check_delivered(&fast_seen, &expected, &format!("{kind:?} fast"));
        // The slow consumer held the rows back; it still gets them all.
        assert!(
            store.state_rows(k.feed.spec())? > 0,
            "{kind:?}: rows kept for `slow`"
        );
        slow_seen.extend(drain(&mut slow, 40, 3)?);
        check_delivered(&slow_seen, &expected, &format!("{kind:?} slow"));
        fast.ack(fast.position())?;
        assert_eq!(
            store.state_rows(k.feed.spec())?,
            0,
            "{kind:?}: rows both consumers acknowledged are deleted"
        );
    }
    Ok(())
}

#[test]
fn a_consumer_starting_after_a_thousand_iterations_sees_them_all_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        let mut store = kind.open(&k.graph)?;
        let opener = Opener::of(&store, kind);
        let bs = batches(5, 1000);
        let expected = expected_changes(&bs);
        for b in &bs {
            k.graph
                .iteration(&mut *store, Changes::new().zset(&k.input, b.clone()))?;
        }
        let mut late = k.feed.consumer(opener.open(&k.graph)?, "late")?;
        let seen = drain(&mut late, 1000, 64)?;
        check_delivered(&seen, &expected, &format!("{kind:?} late consumer"));
        // Made again under its name, it goes on after its cursor.
        let mut again = k.feed.consumer(opener.open(&k.graph)?, "late")?;
        assert_eq!(again.acked(), 1000, "{kind:?}: the stored cursor");
        assert!(again.poll(10)?.is_empty(), "{kind:?}: nothing new");
    }
    Ok(())
}

#[test]
fn retention_deletes_acknowledged_rows_or_keeps_them_a_while_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        let mut store = kind.open(&k.graph)?;
        let opener = Opener::of(&store, kind);
        let rows = |store: &mut dyn StateStore| store.state_rows(k.feed.spec());
        for i in 0..4 {
            k.graph.insert(&mut *store, &k.input, [(i, 0)])?;
        }
        assert_eq!(rows(&mut *store)?, 4, "{kind:?}: one row per iteration");

        // Kept for a while: acknowledged rows stay until the time is up.
        let keep = k
            .feed
            .clone()
            .with_retention(FeedRetention::KeepFor(Duration::from_millis(300)));
        let mut keeper = keep.consumer(opener.open(&k.graph)?, "keeper")?;
        let got = keeper.poll(2)?;
        keeper.ack(got[1].0)?;
        assert_eq!(rows(&mut *store)?, 4, "{kind:?}: kept for 300 ms");
        std::thread::sleep(Duration::from_millis(350));
        keeper.apply_retention()?;
        assert_eq!(
            rows(&mut *store)?,
            2,
            "{kind:?}: times 1 and 2 gone after 300 ms"
        );

        // Until acknowledged: every registered consumer must have acked.
        let mut first = k.feed.consumer(opener.open(&k.graph)?, "first")?;
        let got = first.poll(100)?;
        assert_eq!(got.len(), 2, "{kind:?}: a new consumer sees what is kept");
        first.ack(got[1].0)?;
        assert_eq!(
            rows(&mut *store)?,
            2,
            "{kind:?}: `keeper` has not acked time 4"
        );
        let got = keeper.poll(100)?;
        keeper.ack(got[1].0)?;
        std::thread::sleep(Duration::from_millis(350));
        first.apply_retention()?;
        assert_eq!(rows(&mut *store)?, 0, "{kind:?}: everyone acked everything");

        // Forever: nothing is ever deleted; an unregistered consumer no
        // longer holds rows back.
        let forever = k.feed.clone().with_retention(FeedRetention::Forever);
        let mut archive = forever.consumer(opener.open(&k.graph)?, "archive")?;
        k.graph.insert(&mut *store, &k.input, [(9, 9)])?;
        let got = archive.poll(10)?;
        archive.ack(got[0].0)?;
        assert_eq!(rows(&mut *store)?, 1, "{kind:?}: kept forever");
        keeper.unregister()?;
        let got = first.poll(10)?;
        first.ack(got[0].0)?;
        assert_eq!(
            rows(&mut *store)?,
            0,
            "{kind:?}: acked by every registered consumer"
        );
    }
    Ok(())
}

#[test]
fn bad_acknowledgements_and_names_are_errors_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        let store = kind.open(&k.graph)?;
        let opener = Opener::of(&store, kind);
        let mut c = k.feed.consumer(opener.open(&k.graph)?, "c")?;
        let e = c.ack(5).expect_err("acknowledging a time never delivered");
        assert!(
            matches!(
                e,
                GraphError::Store(StoreError::AckAhead {
                    time: 5,
                    position: 0,
                    ..
                })
            ),
            "{kind:?}: {e}"
        );
        for bad in ["", "a\nb"] {
            let e = k
                .feed
                .consumer(opener.open(&k.graph)?, bad)
                .expect_err("a bad name");
            assert!(
                matches!(e, GraphError::Store(StoreError::InvalidName { .. })),
                "{kind:?}: {e}"
            );
        }
        // A consumer expecting another row type is refused, naming the table.
        let (_, other) = Graph::build(|q| {
            let (_, s) = q.input::<String>("pairs")?;
            q.feed("key_changes", s)
        })?;
        let e = other
            .consumer(opener.open(&k.graph)?, "typed")
            .expect_err("another row type");
        assert!(
            matches!(
                e,
                GraphError::Store(
                    StoreError::SchemaMismatch { .. } | StoreError::MissingTable { .. }
                )
            ),
            "{kind:?}: {e}"
        );
    }
    Ok(())
}

#[test]
fn a_waiting_consumer_wakes_on_commit_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        let mut store = kind.open(&k.graph)?;
        let opener = Opener::of(&store, kind);
        let mut c = k.feed.consumer(opener.open(&k.graph)?, "waiter")?;
        assert!(
            !c.wait(Duration::from_millis(50))?,
            "{kind:?}: nothing to wait for"
        );
        let graph = k.graph.clone();
        let waiter = std::thread::spawn(move || -> Result<Duration, GraphError> {
            let start = Instant::now();
            assert!(c.wait(Duration::from_secs(20))?, "woken by the commit");
            let got = c.poll(10)?;
            assert_eq!(got.len(), 1);
            Ok(start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        graph.insert(&mut *store, &k.input, [(1, 1)])?;
        let waited = waiter.join().expect("the waiter panicked")?;
        assert!(
            waited < Duration::from_secs(5),
            "{kind:?}: woke after {waited:?}"
        );
    }
    Ok(())
}

#[test]
fn two_workers_pipelined_or_not_feed_a_consumer_in_time_order_on_every_store() -> R {
    let k = keys()?;
    for kind in kinds() {
        for pipelined in [false, true] {
            let store = kind.open(&k.graph)?;
            let opener = Opener::of(&store, kind);
            let bs = batches(77, 80);
            let expected = expected_changes(&bs);
            let changes: Vec<Changes> = bs
                .iter()
                .map(|b| Changes::new().zset(&k.input, b.clone()))
                .collect();
            let mut consumer = k.feed.consumer(opener.open(&k.graph)?, "ordered")?;
            let reader = std::thread::spawn(move || drain(&mut consumer, 80, 5));
            let report = Ingest::new(&k.graph)
                .workers(2)
                .pipelined(pipelined)
                .progress(Progress::Hidden)
                .run(
                    |_| opener.open(&k.graph),
                    changes,
                    &mut Counter::starting_at(1),
                )
                .map_err(|e| StoreError::backend("ingest", e.to_string()))?;
            assert!(
                report.failures.is_empty(),
                "{kind:?}: {:?}",
                report.failures
            );
            let seen = reader.join().expect("the consumer panicked")?;
            check_delivered(&seen, &expected, &format!("{kind:?} pipelined {pipelined}"));
        }
    }
    Ok(())
}

#[test]
fn acknowledging_in_the_applications_transaction_delivers_nothing_twice_on_postgres() -> R {
    if !kinds().contains(&Kind::Postgres) {
        return Ok(());
    }
    let k = keys()?;
    let mut store = Kind::Postgres.open(&k.graph)?;
    let prefix = store.prefix().to_owned();
    let processed = format!("{}processed", store.prefix());
    store.sql(&format!(
        "CREATE TABLE {processed} (t BIGINT PRIMARY KEY, weight BIGINT NOT NULL)"
    ));
    let open_pg = || -> Result<store::Postgres, GraphError> {
        Ok(store::Postgres::with_pool(
            crate::harness::pg_pool().expect("Postgres"),
            &k.graph,
            store::OpenOptions {
                prefix: prefix.clone(),
                ..store::OpenOptions::default()
            },
        )?)
    };
    let bs = batches(3, 30);
    let expected = expected_changes(&bs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::backend("runtime", e))?;
    let url = crate::harness::pg_url().expect("Postgres");
    let mut client = rt
        .block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(client)
        })
        .map_err(|e| StoreError::backend("connecting", e))?;
    let mut consumer = k.feed.consumer(open_pg()?, "exactly_once")?;
    let mut rolled_back = 0;
    for (i, b) in bs.iter().enumerate() {
        k.graph
            .iteration(&mut *store, Changes::new().zset(&k.input, b.clone()))?;
        let got = consumer.poll(100)?;
        let Some(last) = got.last().map(|(t, _)| *t) else {
            continue;
        };
        // Every third delivery the application's transaction fails after
        // acknowledging; every fifth the consumer "crashes" after commit.
        let fail = i % 3 == 0;
        rt.block_on(async {
            let tx = client.transaction().await?;
            for (t, z) in &got {
                tx.execute(
                    &format!("INSERT INTO {processed} (t, weight) VALUES ($1, $2)"),
                    &[t, &z.weight_sum()],
                )
                .await?;
            }
            store::ack_in(&mut consumer, &tx, last)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if fail {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .map_err(|e| StoreError::backend("the application's transaction", e.to_string()))?;
        if fail {
            rolled_back += 1;
            consumer.rewind()?;
        } else if i % 5 == 0 {
            consumer = k.feed.consumer(open_pg()?, "exactly_once")?;
        }
    }
    // What is left after the last failure.
    let rest = consumer.poll(1000)?;
    let mut last_rest = None;
    rt.block_on(async {
        let tx = client.transaction().await?;
        for (t, z) in &rest {
            tx.execute(
                &format!("INSERT INTO {processed} (t, weight) VALUES ($1, $2)"),
                &[t, &z.weight_sum()],
            )
            .await?;
            last_rest = Some(*t);
        }
        if let Some(t) = last_rest {
            store::ack_in(&mut consumer, &tx, t)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        tx.commit().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .map_err(|e| StoreError::backend("the last transaction", e.to_string()))?;
    assert!(rolled_back > 0, "some transactions rolled back");
    // A primary key on `t`: a second delivery would have failed its
    // transaction; and every non-empty time is there once.
    let times: BTreeSet<i64> = rt
        .block_on(client.query(
            &format!("SELECT t, weight FROM {processed} ORDER BY t"),
            &[],
        ))
        .map_err(|e| StoreError::backend("reading", e))?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    let want: BTreeSet<i64> = expected
        .iter()
        .enumerate()
        .filter(|(_, z)| !z.is_empty())
        .map(|(i, _)| i as i64 + 1)
        .collect();
    assert_eq!(times, want, "each change processed exactly once");
    let _ = store.twin(&k.graph)?;
    Ok(())
}

#[test]
fn an_unchanged_feed_keeps_its_history_through_a_migration_on_every_sql_store() -> R {
    let k = keys()?;
    let (grown, _) = Graph::build(|q| {
        let (_, pairs) = q.input::<(i64, i64)>("pairs")?;
        let keys = pairs.distinct().map(|p: &(i64, i64)| p.0);
        q.feed("key_changes", keys)?;
        q.cache("pairs_cache", pairs, &[])
    })?;
    let (changed, (changed_input, changed_feed)) = Graph::build(|q| {
        let (input, pairs) = q.input::<(i64, i64)>("pairs")?;
        let keys = pairs.distinct().map(|p: &(i64, i64)| p.0 * 10).version(2);
        Ok((input, q.feed("key_changes", keys)?))
    })?;
    for kind in crate::harness::sql_kinds() {
        let mut store = kind.open(&k.graph)?;
        for i in 0..3 {
            k.graph.insert(&mut *store, &k.input, [(i, 0)])?;
        }
        let opener = Opener::of(&store, kind);
        drop(opener.open_with(&grown, store::OpenOptions::default().migrate())?);
        let mut c = k.feed.consumer(opener.open(&grown)?, "after_migration")?;
        let got = c.poll(10)?;
        let times: Vec<i64> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![1, 2, 3], "{kind:?}: the history is kept");
        // A changed feed starts empty: its history is not recomputed.
        drop(opener.open_with(&changed, store::OpenOptions::default().migrate())?);
        let mut c = changed_feed.consumer(opener.open(&changed)?, "after_change")?;
        assert!(
            c.poll(10)?.is_empty(),
            "{kind:?}: a changed feed starts empty"
        );
        let mut s = opener.open(&changed)?;
        changed.insert(&mut *s, &changed_input, [(7, 7)])?;
        let got = c.poll(10)?;
        assert_eq!(
            got,
            vec![(4, zset! { 70 => 1 })],
            "{kind:?}: the changed feed goes on"
        );
    }
    Ok(())
}

#[test]
fn a_feeds_name_shares_the_name_space_of_states() {
    let clash = Graph::build(|q| {
        let (_, s) = q.input::<i64>("feed_numbers")?;
        q.feed("numbers", s)
    });
    assert!(
        matches!(clash, Err(GraphError::DuplicatePath { .. })),
        "{clash:?}"
    );
    let slash = Graph::build(|q| {
        let (_, s) = q.input::<i64>("numbers")?;
        q.feed("a/b", s)
    });
    assert!(
        matches!(slash, Err(GraphError::InvalidName { .. })),
        "{slash:?}"
    );
}
