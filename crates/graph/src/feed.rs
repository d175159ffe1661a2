//! Change feeds: a stream's change, kept per committed iteration, for other
//! services to consume.
//!
//! [`Query::feed`] declares a feed of a stream. A feed is a state like any
//! other (so it commits in the iteration's own transaction, takes part in
//! the recorded query shape and in migrations): the integral of the stream's
//! changes tagged with the iteration's time, [`FeedRow`]s indexed by time.
//! Rows of different times never cancel, so the table is an append-only
//! log of `(time, row, weight)`; an iteration whose change is empty writes
//! nothing.
//!
//! A [`Consumer`] reads it through a [`FeedStore`]: the changes after its
//! cursor, up to the store's committed frontier ([`StateStore::last_time`]:
//! every time up to it is committed to every table, so with several
//! workers a consumer sees a time only once every earlier time committed),
//! grouped by time, in time order.
//!
//! [`StateStore::last_time`]: crate::StateStore::last_time

use std::any::type_name;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zset::{Data, Index, ZSet};

use crate::codec::{DynIndex, ZSetCodec};
use crate::error::At;
use crate::vertex::{Op, Vertex};
use crate::{Codec, GraphError, Query, ScopeId, StateSpec, StoreError, StoredRow, Stream, Value};

/// The position of a feed state's index by time (a `Vec<i64>` of times
/// reads it by [`Read::ByIndex`](crate::Read::ByIndex)) among its indexes.
pub const FEED_TIME_INDEX: usize = 0;

/// One row of a feed: a row of the stream's change at the iteration `time`
/// (its weight is the row's weight in that change).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeedRow<T> {
    /// The iteration's input time.
    pub time: i64,
    /// The row.
    pub row: T,
}

/// The prefix of every feed row's type name: how a state is recognized as
/// a feed (its table is an append-only log, which a migration starts empty
/// and `verify` does not recompute).
fn feed_type_prefix() -> &'static str {
    let name = type_name::<FeedRow<()>>();
    name.split('<').next().unwrap_or(name)
}

impl StateSpec {
    /// Whether this state is a feed ([`Query::feed`]).
    pub fn is_feed(&self) -> bool {
        self.codec().value_type().starts_with(feed_type_prefix())
    }
}

/// How long a feed keeps rows its consumers have acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedRetention {
    /// Rows every registered consumer has acknowledged are deleted (by the
    /// acknowledging consumer). The default.
    #[default]
    UntilAcked,
    /// Rows every registered consumer has acknowledged are kept at least
    /// this long after the acknowledging consumer saw them acknowledged
    /// (it keeps that moment in memory: after a restart rows are kept
    /// longer, never shorter), then deleted.
    KeepFor(Duration),
    /// Rows are never deleted.
    Forever,
}

/// A feed declared by [`Query::feed`]: the handle consumers are made from.
///
/// Like a [`Cache`](crate::Cache), it needs only the state's path and
/// shape, so a service that builds the same query can consume a feed that
/// another process writes.
pub struct Feed<T> {
    spec: StateSpec,
    name: String,
    retention: FeedRetention,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Self {
        Feed {
            spec: self.spec.clone(),
            name: self.name.clone(),
            retention: self.retention,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Feed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Feed({}, {:?})", self.name, self.spec)
    }
}

impl<T> Feed<T> {
    /// The feed's state: path (`feed_<name>`) and shape.
    pub fn spec(&self) -> &StateSpec {
        &self.spec
    }

    /// The name the feed was declared with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same feed, its consumers deleting acknowledged rows by
    /// `retention` (default [`FeedRetention::UntilAcked`]).
    pub fn with_retention(mut self, retention: FeedRetention) -> Self {
        self.retention = retention;
        self
    }
}

impl Query {
    /// Declares a feed named `name` of `stream`: every committed iteration
    /// appends the stream's change, tagged with the iteration's time, to the
    /// feed's state (table `<prefix>feed_<name>`), in the iteration's own
    /// transaction.
    ///
    /// The feed's state is at path `feed_<name>`, in the name space of
    /// inputs, caches and named streams.
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (graph, (input, feed)) = Graph::build(|q| {
    ///     let (input, numbers) = q.input::<i64>("numbers")?;
    ///     Ok((input, q.feed("number_changes", numbers)?))
    /// })?;
    /// assert_eq!(feed.spec().path().as_str(), "feed_number_changes");
    /// assert!(graph.states().iter().any(|s| s.is_feed()));
    /// # let _ = input;
    /// # Ok::<(), GraphError>(())
    /// ```
    ///
    /// # Errors
    /// An invalid name, or [`GraphError::DuplicatePath`] for a path an
    /// input, cache, feed or named stream already has.
    #[track_caller]
    pub fn feed<T: Data>(
        &self,
        name: &str,
        stream: Stream<'_, ZSet<T>>,
    ) -> Result<Feed<T>, GraphError> {
        let at = At(Location::caller());
        crate::builder::check_name(name, at)?;
        if name.contains('/') {
            return Err(GraphError::InvalidName {
                name: name.to_owned(),
                reason: "a feed's name cannot contain `/`",
                at,
            });
        }
        let path = self.named_path(&format!("feed_{name}"));
        self.claim(&path, at)?;
        let by_time: Arc<dyn DynIndex<FeedRow<T>>> =
            Arc::new(Index::new("time", |r: &FeedRow<T>| r.time));
        // Its only index: number `FEED_TIME_INDEX`.
        let codec: Arc<dyn Codec> = Arc::new(ZSetCodec::<FeedRow<T>>::feed(by_time, |r| r.time));
        let spec = StateSpec::new(path.clone(), Arc::clone(&codec));
        let state = self.declare(path.clone(), codec, at, false);
        self.b
            .borrow_mut()
            .cache_definitions
            .push((state, spec.definition_cell()));
        let tagged = stream.apply_ctx::<FeedRow<T>>(
            &[],
            "feed",
            Vec::new(),
            Some(path.child("tag")),
            |ctx, ins| {
                let change = ctx.zset::<T>(ins[0])?;
                if change.is_empty() {
                    return Ok(ZSet::new());
                }
                let time = ctx.time()?.input_time;
                Ok(change
                    .iter()
                    .map(|(row, w)| {
                        (
                            FeedRow {
                                time,
                                row: row.clone(),
                            },
                            w,
                        )
                    })
                    .collect())
            },
        );
        let integrated = tagged.integral_id(state, at);
        let sink = self.push_vertex(Vertex {
            path: path.child("sink"),
            label: "feed",
            inputs: vec![integrated],
            op: Op::Sink,
            scope: ScopeId(0),
            ty: "()",
            fns: None,
            at,
            states: Vec::new(),
        });
        self.b.borrow_mut().sinks.push(sink);
        Ok(Feed {
            spec,
            name: name.to_owned(),
            retention: FeedRetention::default(),
            _t: PhantomData,
        })
    }
}

/// What a store offers consumers of feeds: implemented by `store::Memory`,
/// `store::Sqlite` and `store::Postgres`. Rows cross it erased, as for
/// [`StateStore::read_committed`](crate::StateStore::read_committed);
/// [`Consumer`] is the typed face.
pub trait FeedStore {
    /// The committed frontier: every time up to it is committed to every
    /// table ([`StateStore::last_time`](crate::StateStore::last_time)).
    ///
    /// # Errors
    /// A read failure.
    fn feed_frontier(&mut self) -> Result<i64, StoreError>;

    /// Pushes the rows of the feed `spec` with `after < time <= upto` onto
    /// `sink` (a `Vec<StoredRow<FeedRow<T>>>`), at least those of the
    /// first `max_times` times that have rows (a store may push more; the
    /// consumer keeps what it asked for).
    ///
    /// # Errors
    /// No such feed, a shape mismatch, a read failure, a corrupt row.
    fn feed_read(
        &mut self,
        spec: &StateSpec,
        after: i64,
        upto: i64,
        max_times: usize,
        sink: &mut dyn std::any::Any,
    ) -> Result<(), StoreError>;

    /// Registers `consumer` of the feed `spec` (if it is not yet) and
    /// returns its cursor: the last time it acknowledged (0 when new).
    ///
    /// # Errors
    /// A read or write failure.
    fn feed_register(&mut self, spec: &StateSpec, consumer: &str) -> Result<i64, StoreError>;

    /// Stores `consumer`'s cursor as `time` (never moving it back) and
    /// returns the smallest cursor of the feed's registered consumers.
    ///
    /// # Errors
    /// A write failure.
    fn feed_ack(&mut self, spec: &StateSpec, consumer: &str, time: i64) -> Result<i64, StoreError>;

    /// Forgets `consumer`: its cursor no longer holds rows back.
    ///
    /// # Errors
    /// A write failure.
    fn feed_unregister(&mut self, spec: &StateSpec, consumer: &str) -> Result<(), StoreError>;

    /// Whether [`feed_trim`](Self::feed_trim) needs the rows it deletes (as
    /// a retraction): the memory store does, SQL stores delete by time.
    fn feed_trim_wants_rows(&self) -> bool {
        false
    }

    /// Deletes the feed's rows of times up to `upto`; `removal` is their
    /// retraction (a `ZSet<FeedRow<T>>`) when
    /// [`feed_trim_wants_rows`](Self::feed_trim_wants_rows).
    ///
    /// # Errors
    /// A write failure.
    fn feed_trim(
        &mut self,
        spec: &StateSpec,
        upto: i64,
        removal: Option<Value>,
    ) -> Result<(), StoreError>;

    /// Waits until the committed frontier passes `after`, or `timeout`;
    /// returns the frontier. Woken by commits (a condition variable in one
    /// process, Postgres `NOTIFY`), polling otherwise.
    ///
    /// # Errors
    /// A read failure.
    fn feed_wait(&mut self, after: i64, timeout: Duration) -> Result<i64, StoreError>;
}

macro_rules! forward_feed_store {
    ($($t:tt)*) => {
        impl<S: FeedStore + ?Sized> FeedStore for $($t)* {
            fn feed_frontier(&mut self) -> Result<i64, StoreError> {
                (**self).feed_frontier()
            }
            fn feed_read(
                &mut self,
                spec: &StateSpec,
                after: i64,
                upto: i64,
                max_times: usize,
                sink: &mut dyn std::any::Any,
            ) -> Result<(), StoreError> {
                (**self).feed_read(spec, after, upto, max_times, sink)
            }
            fn feed_register(&mut self, spec: &StateSpec, consumer: &str) -> Result<i64, StoreError> {
                (**self).feed_register(spec, consumer)
            }
            fn feed_ack(&mut self, spec: &StateSpec, consumer: &str, time: i64) -> Result<i64, StoreError> {
                (**self).feed_ack(spec, consumer, time)
            }
            fn feed_unregister(&mut self, spec: &StateSpec, consumer: &str) -> Result<(), StoreError> {
                (**self).feed_unregister(spec, consumer)
            }
            fn feed_trim_wants_rows(&self) -> bool {
                (**self).feed_trim_wants_rows()
            }
            fn feed_trim(&mut self, spec: &StateSpec, upto: i64, removal: Option<Value>) -> Result<(), StoreError> {
                (**self).feed_trim(spec, upto, removal)
            }
            fn feed_wait(&mut self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
                (**self).feed_wait(after, timeout)
            }
        }
    };
}

forward_feed_store!(&mut S);
forward_feed_store!(Box<S>);

/// The longest consumer name.
pub const MAX_CONSUMER_NAME: usize = 200;

/// A named, durable reader of a feed: [`poll`](Self::poll) returns the
/// changes after its position, [`ack`](Self::ack) stores its cursor in the
/// store, so a consumer made again with the same name (after a crash, in
/// another process) goes on after the last acknowledged time: delivery is
/// at least once. (On Postgres, acknowledging inside the application's own
/// transaction, `store::postgres::AckIn`, makes it exactly once.)
///
/// It owns its store handle `S` (a store, `&mut` a store, or a box). The
/// crate `stepping-store`'s documentation shows one at work.
pub struct Consumer<T, S> {
    store: S,
    spec: StateSpec,
    name: String,
    retention: FeedRetention,
    position: i64,
    acked: i64,
    trimmed: i64,
    /// With [`FeedRetention::KeepFor`]: when each horizon was seen.
    marks: VecDeque<(Instant, i64)>,
    _t: PhantomData<fn() -> T>,
}

impl<T, S> std::fmt::Debug for Consumer<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Consumer({} of {}, at {}, acked {})",
            self.name,
            self.spec.path(),
            self.position,
            self.acked
        )
    }
}

impl<T: Data> Feed<T> {
    /// The consumer called `name` of this feed, on `store`: registered if
    /// new (then starting at the oldest row the feed still keeps),
    /// otherwise going on after its last acknowledged time.
    ///
    /// # Errors
    /// A name that is empty, too long or has control characters
    /// ([`StoreError::InvalidName`]); a store failure.
    pub fn consumer<S: FeedStore>(
        &self,
        mut store: S,
        name: &str,
    ) -> Result<Consumer<T, S>, GraphError> {
        if name.is_empty() || name.len() > MAX_CONSUMER_NAME || name.chars().any(char::is_control) {
            return Err(StoreError::InvalidName {
                name: name.to_owned(),
                reason: format!(
                    "a consumer's name must be 1 to {MAX_CONSUMER_NAME} bytes without control \
                     characters"
                ),
            }
            .into());
        }
        let acked = store.feed_register(&self.spec, name)?;
        Ok(Consumer {
            store,
            spec: self.spec.clone(),
            name: name.to_owned(),
            retention: self.retention,
            position: acked,
            acked,
            trimmed: 0,
            marks: VecDeque::new(),
            _t: PhantomData,
        })
    }
}

impl<T: Data, S: FeedStore> Consumer<T, S> {
    /// The next changes after the consumer's position, at most `max` times,
    /// each `(time, change)` in time order, only times up to the store's
    /// committed frontier; moves the position past them. Times whose
    /// change was empty are skipped.
    ///
    /// # Errors
    /// A store failure (then the position does not move).
    pub fn poll(&mut self, max: usize) -> Result<Vec<(i64, ZSet<T>)>, GraphError> {
        let frontier = self.store.feed_frontier()?;
        if frontier <= self.position || max == 0 {
            return Ok(Vec::new());
        }
        let mut rows: Vec<StoredRow<FeedRow<T>>> = Vec::new();
        self.store
            .feed_read(&self.spec, self.position, frontier, max, &mut rows)?;
        let mut by_time: BTreeMap<i64, ZSet<T>> = BTreeMap::new();
        for r in rows {
            let FeedRow { time, row } = r.value;
            if time > self.position && time <= frontier {
                by_time.entry(time).or_default().update(row, r.weight);
            }
        }
        by_time.retain(|_, z| !z.is_empty());
        let changes: Vec<(i64, ZSet<T>)> = by_time.into_iter().take(max).collect();
        self.position = match changes.last() {
            Some((t, _)) if changes.len() == max => *t,
            _ => frontier,
        };
        Ok(changes)
    }

    /// Stores the cursor: every change up to `time` is processed (a later
    /// consumer of this name starts after it). Then deletes the rows every
    /// registered consumer has acknowledged, by the feed's [`FeedRetention`].
    ///
    /// # Errors
    /// [`StoreError::AckAhead`] for a time after the consumer's position
    /// (acknowledging changes never delivered); a store failure.
    pub fn ack(&mut self, time: i64) -> Result<(), GraphError> {
        if time > self.position {
            return Err(StoreError::AckAhead {
                feed: self.spec.path().to_string(),
                consumer: self.name.clone(),
                time,
                position: self.position,
            }
            .into());
        }
        let horizon = self.store.feed_ack(&self.spec, &self.name, time)?;
        self.acked = self.acked.max(time);
        self.retain(horizon)
    }

    /// Deletes the rows up to `horizon` (every consumer has acknowledged
    /// them) that the retention lets go.
    fn retain(&mut self, horizon: i64) -> Result<(), GraphError> {
        let upto = match self.retention {
            FeedRetention::Forever => return Ok(()),
            FeedRetention::UntilAcked => horizon,
            FeedRetention::KeepFor(keep) => {
                let now = Instant::now();
                if self.marks.back().is_none_or(|m| m.1 < horizon) {
                    self.marks.push_back((now, horizon));
                }
                let mut upto = self.trimmed;
                while let Some(&(seen, h)) = self.marks.front() {
                    if now.duration_since(seen) < keep {
                        break;
                    }
                    upto = upto.max(h);
                    self.marks.pop_front();
                }
                upto
            }
        };
        if upto <= self.trimmed {
            return Ok(());
        }
        let removal = if self.store.feed_trim_wants_rows() {
            let mut rows: Vec<StoredRow<FeedRow<T>>> = Vec::new();
            // The rows up to what this consumer trimmed are gone (and no
            // time that far back is ever written again); a new consumer
            // trims what its predecessors kept.
            let after = if self.trimmed > 0 {
                self.trimmed
            } else {
                i64::MIN
            };
            self.store
                .feed_read(&self.spec, after, upto, usize::MAX, &mut rows)?;
            let retraction: ZSet<FeedRow<T>> = rows
                .into_iter()
                .filter(|r| r.value.time <= upto)
                .map(|r| (r.value, -r.weight))
                .collect();
            Some(Box::new(retraction) as Value)
        } else {
            None
        };
        self.store.feed_trim(&self.spec, upto, removal)?;
        self.trimmed = upto;
        Ok(())
    }

    /// Deletes the rows every registered consumer has acknowledged that the
    /// feed's [`FeedRetention`] lets go (what [`ack`](Self::ack) does after
    /// storing the cursor; for cursors stored by other means).
    ///
    /// # Errors
    /// A store failure.
    pub fn apply_retention(&mut self) -> Result<(), GraphError> {
        // Acknowledging time 0 never moves a cursor back: it only reads
        // the smallest one.
        let horizon = self.store.feed_ack(&self.spec, &self.name, 0)?;
        self.retain(horizon)
    }

    /// Waits until the store's committed frontier passes the consumer's
    /// position (something may be new to [`poll`](Self::poll)), or
    /// `timeout`; returns whether it did.
    ///
    /// # Errors
    /// A store failure.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, GraphError> {
        Ok(self.store.feed_wait(self.position, timeout)? > self.position)
    }

    /// Moves the position back to the stored cursor, so that the changes
    /// after it are delivered again (after a transaction that was to
    /// acknowledge them rolled back).
    ///
    /// # Errors
    /// A store failure.
    pub fn rewind(&mut self) -> Result<(), GraphError> {
        self.acked = self.store.feed_register(&self.spec, &self.name)?;
        self.position = self.acked;
        Ok(())
    }

    /// Forgets this consumer in the store: its cursor no longer holds rows
    /// back. Returns the store.
    ///
    /// # Errors
    /// A store failure.
    pub fn unregister(mut self) -> Result<S, GraphError> {
        self.store.feed_unregister(&self.spec, &self.name)?;
        Ok(self.store)
    }

    /// The last time delivered by [`poll`](Self::poll) (or skipped as
    /// empty).
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The last time acknowledged through this handle (or stored before it
    /// was made).
    pub fn acked(&self) -> i64 {
        self.acked
    }

    /// Records that `time` was acknowledged by other means (e.g. inside an
    /// application's transaction that committed).
    pub fn acked_elsewhere(&mut self, time: i64) {
        self.acked = self.acked.max(time);
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feed's state.
    pub fn spec(&self) -> &StateSpec {
        &self.spec
    }

    /// The store handle.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }
}
