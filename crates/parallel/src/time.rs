//! Where input times come from.

use graph::StoreError;

/// A source of input times: strictly increasing, with no gaps among the
/// times it hands out (each batch's frontier is the time before it).
pub trait TimeSource {
    /// The next input time.
    ///
    /// # Errors
    /// The source (e.g. a database sequence) failed.
    fn next_time(&mut self) -> Result<i64, StoreError>;

    /// The next input time, for batch `batch` of an ingest. A source that
    /// records who holds each time records the batch too (a
    /// [`store::PgSequence`] puts it in the time's claim, so that a batch
    /// lost with its process can be named and fed again); the default is
    /// [`next_time`](Self::next_time).
    ///
    /// # Errors
    /// As for [`next_time`](Self::next_time).
    fn next_time_for(&mut self, batch: usize) -> Result<i64, StoreError> {
        let _ = batch;
        self.next_time()
    }
}

/// Consecutive times from a starting point: batch `i` gets `start + i`.
///
/// ```
/// use stepping_parallel::{Counter, TimeSource};
/// let mut c = Counter::starting_at(5);
/// assert_eq!((c.next_time().unwrap(), c.next_time().unwrap()), (5, 6));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    next: i64,
}

impl Counter {
    /// Times `start`, `start + 1`, ...
    pub fn starting_at(start: i64) -> Self {
        Counter { next: start }
    }

    /// Times after the last one `store` has recorded.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn after<S: graph::StateStore + ?Sized>(store: &mut S) -> Result<Self, StoreError> {
        Ok(Counter {
            next: store.next_time()?,
        })
    }
}

impl TimeSource for Counter {
    fn next_time(&mut self) -> Result<i64, StoreError> {
        let t = self.next;
        self.next += 1;
        Ok(t)
    }
}

/// Times given in advance, e.g. every other batch's for one of two
/// processes sharing an ingest (`[2, 4, 6, ...]`): batch time `t` always
/// waits for `t - 1`, whoever runs it.
///
/// ```
/// use stepping_parallel::{Given, TimeSource};
/// let mut t = Given::new([2, 4, 6]);
/// assert_eq!(t.next_time().unwrap(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Given {
    times: std::collections::VecDeque<i64>,
}

impl Given {
    /// These times, in order.
    pub fn new(times: impl IntoIterator<Item = i64>) -> Self {
        Given {
            times: times.into_iter().collect(),
        }
    }
}

impl TimeSource for Given {
    fn next_time(&mut self) -> Result<i64, StoreError> {
        self.times
            .pop_front()
            .ok_or_else(|| StoreError::backend("assigning times", "more batches than given times"))
    }
}

/// A Postgres `SEQUENCE` as a global time source: workers in several
/// processes take times from it, each claimed for the batch it is for.
#[cfg(feature = "postgres")]
impl TimeSource for store::PgSequence {
    fn next_time(&mut self) -> Result<i64, StoreError> {
        store::PgSequence::next(self)
    }

    fn next_time_for(&mut self, batch: usize) -> Result<i64, StoreError> {
        store::PgSequence::next_for(self, batch as i64)
    }
}
