//! Feeds on the memory store: consumers' cursors in a map, rows read by
//! time through the feed's index (the first times after the consumer's
//! position that hold rows), waits on the commit condition variable.
//!
//! ```
//! # use graph::{Graph, GraphError};
//! # fn run() -> Result<(), GraphError> {
//! let (graph, (input, feed)) = Graph::build(|q| {
//!     let (input, numbers) = q.input::<i64>("numbers")?;
//!     Ok((input, q.feed("number_changes", numbers)?))
//! })?;
//! let mut store = stepping_store::Memory::new(&graph);
//! let mut mailer = feed.consumer(store.handle(), "mailer")?;
//! graph.insert(&mut store, &input, [1, 2])?;
//! graph.remove(&mut store, &input, [1])?;
//! let changes = mailer.poll(10)?;
//! assert_eq!(changes.len(), 2);
//! assert_eq!(changes[1].1.get(&1), -1);
//! mailer.ack(changes[1].0)?;
//! assert!(mailer.poll(10)?.is_empty());
//! # Ok(()) }
//! # run().unwrap();
//! ```

use std::any::Any;
use std::time::{Duration, Instant};

use graph::{FEED_TIME_INDEX, FeedStore, Read, StateSpec, StoreError, Value};

use super::Memory;

impl Memory {
    /// The table of feed `spec`, checked to have its shape.
    fn feed_table(&self, spec: &StateSpec) -> Result<usize, StoreError> {
        self.table_of(spec, "the feed", "the consumer")
    }

    /// Empties every feed (a migration's freshly computed states: a feed's
    /// history is the iterations it saw, never recomputed).
    pub(crate) fn clear_feeds(&self) {
        for (spec, table) in self.shared.specs.iter().zip(&self.shared.tables) {
            if spec.is_feed() {
                *table.write() = spec.codec().new_table();
            }
        }
    }
}

impl FeedStore for Memory {
    fn feed_frontier(&mut self) -> Result<i64, StoreError> {
        Ok(self.last_time())
    }

    fn feed_read(
        &mut self,
        spec: &StateSpec,
        after: i64,
        upto: i64,
        max_times: usize,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        let s = self.feed_table(spec)?;
        let _whole_iterations = self.shared.commit.lock();
        self.shared.refuse_if_migrated()?;
        let table = self.shared.tables[s].read();
        // A consumer catching up asks for a few times of a long window: look
        // them up one by one in the time index, so that each poll costs the
        // rows it returns, not the window. Where the times outnumber the
        // rows held (most changed nothing), one pass over the rows is cheaper.
        let span = upto.saturating_sub(after);
        if span <= 0 {
            return Ok(());
        }
        if u64::try_from(span).unwrap_or(u64::MAX) > table.len() as u64 {
            return table.read(&Read::All, sink);
        }
        let mut times = Vec::new();
        for t in after + 1..=upto {
            if times.len() >= max_times {
                break;
            }
            let key = vec![t];
            let mut held = false;
            let by_time = Read::ByIndex {
                index: FEED_TIME_INDEX,
                keys: &key,
            };
            if !table.visit(&by_time, &mut |_, _| held = true)? {
                return table.read(&Read::All, sink);
            }
            if held {
                times.push(t);
            }
        }
        table.read(
            &Read::ByIndex {
                index: FEED_TIME_INDEX,
                keys: &times,
            },
            sink,
        )
    }

    fn feed_register(&mut self, spec: &StateSpec, consumer: &str) -> Result<i64, StoreError> {
        self.feed_table(spec)?;
        let mut consumers = self.shared.consumers.lock();
        Ok(*consumers
            .entry((spec.path().clone(), consumer.to_owned()))
            .or_insert(0))
    }

    fn feed_ack(&mut self, spec: &StateSpec, consumer: &str, time: i64) -> Result<i64, StoreError> {
        let mut consumers = self.shared.consumers.lock();
        let cursor = consumers
            .entry((spec.path().clone(), consumer.to_owned()))
            .or_insert(0);
        *cursor = (*cursor).max(time);
        Ok(consumers
            .iter()
            .filter(|((feed, _), _)| feed == spec.path())
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(time))
    }

    fn feed_unregister(&mut self, spec: &StateSpec, consumer: &str) -> Result<(), StoreError> {
        self.shared
            .consumers
            .lock()
            .remove(&(spec.path().clone(), consumer.to_owned()));
        Ok(())
    }

    fn feed_trim_wants_rows(&self) -> bool {
        true
    }

    fn feed_trim(
        &mut self,
        spec: &StateSpec,
        _upto: i64,
        removal: Option<Value>,
    ) -> Result<(), StoreError> {
        let s = self.feed_table(spec)?;
        let Some(removal) = removal else {
            return Ok(());
        };
        let _one_at_a_time = self.shared.commit.lock();
        self.shared.refuse_if_migrated()?;
        let mut table = self.shared.tables[s].write();
        table
            .check(&*removal)
            .map_err(|identity| StoreError::WeightOverflow {
                table: spec.path().to_string(),
                identity,
            })?;
        table.apply(removal)
    }

    fn feed_wait(&mut self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut clock = shared.clock.lock();
        loop {
            let frontier = clock.iter().copied().min().unwrap_or(0);
            if frontier > after || shared.tick.wait_until(&mut clock, deadline).timed_out() {
                return Ok(clock.iter().copied().min().unwrap_or(0));
            }
        }
    }
}
