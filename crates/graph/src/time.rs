//! The time of an iteration, for parallel ingest (`Time` of the original).

/// When an iteration happens and what it waits for.
///
/// Times are integers that increase with each batch: an incrementing counter,
/// or a global sequence (e.g. a Postgres `SEQUENCE`).
///
/// - `input_time`: the time of this iteration's changes. After writing a
///   state table, the store records `last_update(table) = input_time`.
/// - `frontier`: before reading or writing a state table, the store waits
///   until its `last_update` has reached `frontier`, so every change up to
///   that time is in the table. A serial ingest uses `input_time - 1`.
/// - `flush_every_set`:
///   - `Some(false)` (the default): all tables commit together at the end of
///     the iteration: all or nothing.
///   - `Some(true)`: each table commits as soon as its state is set, so the
///     next batch can proceed through the early part of the graph while this
///     one finishes (pipelining). The iteration is then no longer atomic.
///   - `None`: never flush: the iteration computes its outputs and then
///     rolls back (a dry run; also what nested circuits do internally).
///
/// ```
/// use stepping_graph::Time;
/// let t = Time::new(7, 6);
/// assert_eq!(t.flush_every_set, Some(false));
/// assert_eq!(t.pipelined().flush_every_set, Some(true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Time {
    /// This iteration's time.
    pub input_time: i64,
    /// Wait until every table has been written up to this time.
    pub frontier: i64,
    /// When to commit; see the type's docs.
    pub flush_every_set: Option<bool>,
}

impl Time {
    /// An atomic iteration at `input_time` that waits for `frontier`.
    pub fn new(input_time: i64, frontier: i64) -> Self {
        Time {
            input_time,
            frontier,
            flush_every_set: Some(false),
        }
    }

    /// The same time, committing each table as soon as it is set.
    pub fn pipelined(self) -> Self {
        Time {
            flush_every_set: Some(true),
            ..self
        }
    }

    /// The same time, as a dry run that commits nothing.
    pub fn dry_run(self) -> Self {
        Time {
            flush_every_set: None,
            ..self
        }
    }
}
