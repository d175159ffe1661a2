//! The async face (feature `async`): a thin layer over the synchronous
//! stores for tokio applications. [`AsyncStore`] runs iterations and cache
//! reads on tokio's blocking pool ([`tokio::task::spawn_blocking`]), and
//! [`ChangeStream`] is a feed consumer as a [`futures_util::Stream`].
//!
//! The cost is one `spawn_blocking` hop per call (a thread hand-off, some
//! microseconds; `cargo xtask bench` measures it), on top of the store's
//! own work; the store is shared behind a mutex, so calls on one
//! `AsyncStore` run one at a time (open several stores for parallel
//! workers).
//!
//! ```
//! # use graph::{Graph, GraphError};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! let (graph, (input, total, feed)) = Graph::build(|q| {
//!     let (input, n) = q.input::<i64>("n")?;
//!     Ok((input, q.cache("all", n, &[])?, q.feed("n_changes", n)?))
//! })?;
//! let memory = stepping_store::Memory::new(&graph);
//! let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let store = stepping_store::AsyncStore::new(memory.handle());
//!     let mut changes = stepping_store::ChangeStream::new(feed.consumer(memory.handle(), "tab")?);
//!     store.insert(&graph, &input, vec![1, 2]).await?;
//!     let (time, change) = changes.next().await.expect("a change")?;
//!     assert_eq!((time, change.len()), (1, 2));
//!     changes.ack(time).await?;
//!     assert_eq!(store.cache(&total).await?.len(), 2);
//!     Ok::<_, GraphError>(())
//! })?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use graph::{
    Cache, Changes, Consumer, FeedStore, Graph, GraphError, Input, Outputs, StateStore, StoreError,
};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use zset::{Data, ZSet};

fn joined(e: tokio::task::JoinError) -> GraphError {
    StoreError::backend("running a store call on tokio's blocking pool", e).into()
}

/// A store shared by async tasks: each call runs on tokio's blocking pool.
/// Cloning gives another handle to the same store.
#[derive(Debug)]
pub struct AsyncStore<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Clone for AsyncStore<S> {
    fn clone(&self) -> Self {
        AsyncStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: StateStore + Send + 'static> AsyncStore<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        AsyncStore {
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `f` with the store on tokio's blocking pool (after the calls
    /// before it on this store).
    ///
    /// # Errors
    /// `f`'s error, or [`StoreError::Backend`] if the blocking task failed.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<R, GraphError> + Send + 'static,
    ) -> Result<R, GraphError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut inner.lock()))
            .await
            .map_err(joined)?
    }

    /// One iteration ([`Graph::iteration`]).
    ///
    /// # Errors
    /// As for [`Graph::iteration`].
    pub async fn iteration(&self, graph: &Graph, changes: Changes) -> Result<Outputs, GraphError> {
        let graph = graph.clone();
        self.with(move |s| graph.iteration(s, changes)).await
    }

    /// One iteration inserting `rows` into `input` ([`Graph::insert`]).
    ///
    /// # Errors
    /// As for [`Graph::iteration`].
    pub async fn insert<T: Data>(
        &self,
        graph: &Graph,
        input: &Input<T>,
        rows: Vec<T>,
    ) -> Result<Outputs, GraphError> {
        self.iteration(graph, Changes::new().insert(input, rows))
            .await
    }

    /// The whole cache, as committed ([`Cache::zset`]).
    ///
    /// # Errors
    /// As for [`Cache::zset`].
    pub async fn cache<T: Data>(&self, cache: &Cache<T>) -> Result<ZSet<T>, GraphError> {
        let cache = cache.clone();
        self.with(move |s| cache.zset(s)).await
    }
}

type Polled<T, S> = (Consumer<T, S>, Result<Vec<(i64, ZSet<T>)>, GraphError>);

/// A feed [`Consumer`] as a [`futures_util::Stream`] of `(time, change)`:
/// polls on tokio's blocking pool, and when nothing is new waits there for
/// a commit ([`Consumer::wait`]) before polling again. Acknowledge with
/// [`ack`](Self::ack): delivery is at least once, as for the consumer.
pub struct ChangeStream<T, S> {
    consumer: Option<Consumer<T, S>>,
    ready: VecDeque<(i64, ZSet<T>)>,
    running: Option<JoinHandle<Polled<T, S>>>,
    max: usize,
    wait: Duration,
}

impl<T, S> std::fmt::Debug for ChangeStream<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChangeStream({} ready)", self.ready.len())
    }
}

impl<T: Data, S: FeedStore + Send + 'static> ChangeStream<T, S> {
    /// The stream of `consumer`'s changes, polling up to 256 times at once
    /// and waiting up to a second per wait.
    pub fn new(consumer: Consumer<T, S>) -> Self {
        ChangeStream {
            consumer: Some(consumer),
            ready: VecDeque::new(),
            running: None,
            max: 256,
            wait: Duration::from_secs(1),
        }
    }

    /// Sets how many times one poll fetches at most (default 256).
    pub fn batch(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self
    }

    /// The consumer, once no poll is running.
    async fn consumer(&mut self) -> Result<Consumer<T, S>, GraphError> {
        if let Some(running) = self.running.take() {
            let (consumer, got) = running.await.map_err(joined)?;
            self.consumer = Some(consumer);
            self.ready.extend(got?);
        }
        self.consumer.take().ok_or_else(|| {
            StoreError::backend("a change stream", "its consumer was lost to a failed task").into()
        })
    }

    /// Acknowledges `time` ([`Consumer::ack`]), on tokio's blocking pool.
    ///
    /// # Errors
    /// As for [`Consumer::ack`].
    pub async fn ack(&mut self, time: i64) -> Result<(), GraphError> {
        let mut consumer = self.consumer().await?;
        let (consumer, done) = tokio::task::spawn_blocking(move || {
            let done = consumer.ack(time);
            (consumer, done)
        })
        .await
        .map_err(joined)?;
        self.consumer = Some(consumer);
        done
    }

    /// The consumer back (waiting for a running poll to end); changes
    /// fetched and not yet yielded are delivered again by its next poll
    /// only after a [`Consumer::rewind`].
    ///
    /// # Errors
    /// The running poll's task failed.
    pub async fn into_consumer(mut self) -> Result<Consumer<T, S>, GraphError> {
        self.consumer().await
    }
}

// Nothing in it is pinned in place: the running poll is a `JoinHandle`.
impl<T, S> Unpin for ChangeStream<T, S> {}

impl<T: Data, S: FeedStore + Send + 'static> futures_util::Stream for ChangeStream<T, S> {
    type Item = Result<(i64, ZSet<T>), GraphError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            if let Some(running) = this.running.as_mut() {
                let (consumer, got) = match Pin::new(running).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(done)) => done,
                    Poll::Ready(Err(e)) => {
                        this.running = None;
                        return Poll::Ready(Some(Err(joined(e))));
                    }
                };
                this.running = None;
                this.consumer = Some(consumer);
                match got {
                    Ok(got) => this.ready.extend(got),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
                continue;
            }
            let Some(mut consumer) = this.consumer.take() else {
                return Poll::Ready(None);
            };
            let (max, wait) = (this.max, this.wait);
            this.running = Some(tokio::task::spawn_blocking(move || {
                let got = consumer.poll(max).and_then(|got| {
                    if !got.is_empty() || !consumer.wait(wait)? {
                        return Ok(got);
                    }
                    consumer.poll(max)
                });
                (consumer, got)
            }));
        }
    }
}
