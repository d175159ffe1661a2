//! The async face on every store: iterations and cache reads through
//! `AsyncStore`, a feed followed as a `ChangeStream`, inside a tokio
//! runtime: the synchronous stores run on its blocking pool, and Postgres
//! called from a thread driving async tasks refuses with an error, never a
//! panic.

use futures_util::StreamExt;
use operators::prelude::*;
use store::{AsyncStore, ChangeStream};

use crate::feed_harness::Opener;
use crate::harness::kinds;

#[test]
fn the_async_face_ingests_reads_and_streams_a_feed_on_every_store() -> Result<(), GraphError> {
    let (graph, (input, cache, feed)) = Graph::build(|q| {
        let (input, n) = q.input::<i64>("n")?;
        Ok((input, q.cache("all", n, &[])?, q.feed("n_changes", n)?))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| StoreError::backend("runtime", e))?;
    for kind in kinds() {
        let first = kind.open(&graph)?;
        let opener = Opener::of(&first, kind);
        let ingest = opener.open(&graph)?;
        // Made outside the runtime: the synchronous stores block.
        let consumer = feed.consumer(opener.open(&graph)?, "async")?;
        rt.block_on(async {
            let store = AsyncStore::new(ingest);
            let mut changes = ChangeStream::new(consumer).batch(2);
            for i in 1..=5 {
                store.insert(&graph, &input, vec![i]).await?;
            }
            for i in 1..=5 {
                let (time, change) = changes.next().await.expect("an endless stream")?;
                assert_eq!((time, change), (i, zset! { i => 1 }), "{kind:?}");
                changes.ack(time).await?;
            }
            assert_eq!(store.cache(&cache).await?.len(), 5, "{kind:?}");
            // A change committed while the stream waits wakes it.
            let waiting = tokio::spawn(async move {
                let next = changes.next().await.expect("an endless stream");
                next.map(|(t, z)| (t, z, changes))
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            store.insert(&graph, &input, vec![6]).await?;
            let (time, change, _) = waiting
                .await
                .map_err(|e| StoreError::backend("join", e))??;
            assert_eq!((time, change), (6, zset! { 6 => 1 }), "{kind:?}");
            if kind == crate::harness::Kind::Postgres {
                let e = opener
                    .open(&graph)
                    .map(|_| ())
                    .expect_err("blocking an async thread");
                assert!(e.to_string().contains("spawn_blocking"), "{e}");
            }
            Ok::<_, GraphError>(())
        })?;
    }
    Ok(())
}
