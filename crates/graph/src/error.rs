//! What can go wrong while building or running a query, and in a store.

use std::error::Error as StdError;
use std::fmt;
use std::panic::Location;

use crate::Path;

/// A boxed error from a driver or a user function.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Where in the user's code a vertex was created (`#[track_caller]`).
#[derive(Clone, Copy)]
pub struct At(pub &'static Location<'static>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.file(), self.0.line())
    }
}

impl fmt::Debug for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An error from building a query or running an iteration.
///
/// Running an iteration is all-or-nothing: on any error the store's
/// transaction is dropped, which rolls it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two vertices or states would have the same path. Inputs, caches and
    /// named streams share one name space, because each names stored state
    /// (a table); outputs have one of their own.
    #[error(
        "duplicate path `{path}`: first created at {first}, again at {second}. Inputs, caches \
         and named streams share one name space (each names a stored table; outputs have their \
         own): give one of them another name (for state kept by an operator, name the stream \
         it is applied to with `.named(..)`)"
    )]
    DuplicatePath {
        /// The path.
        path: Path,
        /// Where the first one was created.
        first: At,
        /// Where the second one was created.
        second: At,
    },
    /// Two states whose SQL tables would have the same name: a table is
    /// named by [`table_ident`](crate::table_ident) of the state's path,
    /// which keeps only `[a-z0-9_]`, lower-cased, and is cut to fit the
    /// store's table prefix; or a state whose table would take the name
    /// of a cache's SQL view ([`view_ident`](crate::view_ident)) or of
    /// another table's index ([`index_idents`](crate::index_idents)). Refused
    /// on every store, so that a query runs on all of them or on none;
    /// checked for the longest prefix a store accepts.
    #[error(
        "states `{first}` and `{second}` (created at {at}) would have the same SQL name          `<prefix>{table}` (a table name keeps only the letters, digits and `_` of a path,          lower-cased, and is cut to fit the table prefix; a cache's view is its table's name          and `_view`, a table's indexes its name and `_pkey`, `__step` or `__neg`); name one of          them differently"
    )]
    TableNameCollision {
        /// The first state's path.
        first: Path,
        /// The second state's path.
        second: Path,
        /// The table (or view) name both would have after a prefix.
        table: String,
        /// Where the second state was created.
        at: At,
    },
    /// A name that cannot be a path segment.
    #[error("invalid name {name:?} at {at}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
        /// Where it was given.
        at: At,
    },
    /// An index whose part names do not match its key's columns.
    #[error("index `{index}` names {parts} key parts but its key has {columns} columns (at {at})")]
    InvalidIndex {
        /// The index.
        index: String,
        /// How many part names it has.
        parts: usize,
        /// How many columns its key has.
        columns: usize,
        /// Where it was used.
        at: At,
    },
    /// `transient` on a stream that is not an input.
    #[error("`{path}` is not an input: only inputs can be transient (at {at})")]
    NotAnInput {
        /// The stream.
        path: Path,
        /// Where `transient` was called.
        at: At,
    },
    /// A value of one type where another was expected.
    #[error("`{path}` expects {expected}, got {found}")]
    TypeMismatch {
        /// Where.
        path: Path,
        /// The type the graph was built with.
        expected: &'static str,
        /// The type that was given.
        found: &'static str,
    },
    /// A stream or handle from another query.
    #[error("a stream or handle from another query was used at {at}")]
    ForeignHandle {
        /// Where.
        at: At,
    },
    /// An input or output handle of another graph, or an output already taken.
    #[error("handle `{path}` does not belong to this graph (or the output was already taken)")]
    ForeignInput {
        /// The handle's path.
        path: Path,
    },
    /// `make_scalar` of a Z-set that is not a single value of weight 1.
    #[error("`{path}`: make_scalar needs at most one value, with weight 1; got {detail}")]
    NotScalar {
        /// The `make_scalar` vertex.
        path: Path,
        /// What the Z-set held.
        detail: String,
    },
    /// Reading a state through an index it does not have.
    #[error("state `{path}` has no index `{index}`; it has: {available}")]
    MissingIndex {
        /// The state.
        path: Path,
        /// The index asked for.
        index: String,
        /// The indexes it has.
        available: String,
    },
    /// A recursion that did not reach a fixed point.
    #[error("recursion `{path}` did not reach a fixed point within {steps} steps")]
    RecursionLimit {
        /// The recursive vertex.
        path: Path,
        /// The limit.
        steps: u32,
    },
    /// A fallible user function (`try_map`, ...) returned an error.
    #[error("user function in `{path}` failed: {source}")]
    User {
        /// The vertex.
        path: Path,
        /// The user's error.
        #[source]
        source: BoxError,
    },
    /// A user function (an operator's closure, an index's key function, or
    /// a user type's `Hash`, `Ord` or `Serialize`) panicked while running an
    /// iteration; the panic was caught and the iteration rolled back.
    #[error("user function in `{path}` panicked: {message}; the iteration was rolled back")]
    UserPanic {
        /// The vertex whose function panicked, or the state being written
        /// (an index's key function runs when a state's change is stored).
        path: Path,
        /// The panic's message (its payload, when that is text).
        message: String,
    },
    /// The store was opened for a query of a different shape.
    #[error(
        "this store was opened for another query (its states: {store}; this query's: {graph}); \
         open the store with this graph"
    )]
    WrongStore {
        /// The store's fingerprint.
        store: String,
        /// The graph's fingerprint.
        graph: String,
    },
    /// A weight left the range of `i64` (weights near ±9.2·10¹⁸, given by
    /// a caller or read from a damaged store); see [`zset::weight`].
    #[error(
        "a weight overflowed i64 in `{path}`; the iteration was rolled back (weights that large \
         come from the changes given or from damaged stored rows)"
    )]
    WeightOverflow {
        /// The vertex (or input) whose arithmetic overflowed.
        path: Path,
    },
    /// An operator given a parameter it cannot work with (a window of no
    /// width, a negative lateness), reported when the query is built.
    #[error("`{operator}` at {at}: {detail}")]
    InvalidParameter {
        /// The operator.
        operator: &'static str,
        /// What is wrong with which parameter.
        detail: String,
        /// Where it was called.
        at: At,
    },
    /// An event time whose window (or retention bound) lies outside what
    /// its type can hold; the iteration was rolled back.
    #[error("`{path}`: {detail}; the iteration was rolled back")]
    TimeOutOfRange {
        /// The vertex.
        path: Path,
        /// The time and what could not be computed from it.
        detail: String,
    },
    /// A change to a retained stream older than its retention bound (the
    /// watermark minus the allowed lateness), refused by its
    /// `Late::Refuse` policy: the rows it would meet have left the state.
    /// The iteration was rolled back; nothing was written.
    #[error(
        "`{path}`: a change at event time {time} is older than the retention bound {bound} \
         (the largest event time seen, {watermark}, minus the allowed lateness); the iteration \
         was rolled back. Drop such changes with `Late::Drop`, or allow more lateness"
    )]
    LateChange {
        /// The retained stream.
        path: Path,
        /// The change's event time.
        time: String,
        /// The bound it is older than.
        bound: String,
        /// The watermark the bound derives from.
        watermark: String,
    },
    /// A feedback handle (`Query::feedback`) dropped without being
    /// connected to the stream it delays.
    #[error(
        "feedback `{path}` (created at {at}) was never connected: call `connect` with the stream it delays"
    )]
    UnconnectedFeedback {
        /// The feedback stream.
        path: Path,
        /// Where it was created.
        at: At,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A multi-worker ingest failed outside any batch (the `parallel`
    /// crate's `ParallelError`, converted by `?`; this crate does not know
    /// its type): its source is that error, to downcast.
    #[error(transparent)]
    Ingest(BoxError),
}

/// An error from a store (memory, SQLite, Postgres), naming the table, row or
/// time it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A state table that should exist does not (opened without creating
    /// tables, or dropped behind our back).
    #[error(
        "state table `{table}` (for `{path}`) does not exist; open with table creation \
         enabled, or check that this is the right database"
    )]
    MissingTable {
        /// The table.
        table: String,
        /// The state's path.
        path: String,
    },
    /// A table that exists but was made by a different query shape.
    #[error("table `{table}` was created by a different query shape: {detail}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// What differs.
        detail: String,
    },
    /// A stored row that cannot be decoded or is inconsistent.
    #[error("corrupt row in `{table}` (identity {identity}): {detail}")]
    Corrupt {
        /// The table.
        table: String,
        /// The row's identity.
        identity: String,
        /// What is wrong.
        detail: String,
    },
    /// Two different values whose 64-bit identities collide.
    #[error(
        "identity collision in `{table}`: identity {identity} already holds a different value; \
         the iteration was rolled back"
    )]
    IdentityCollision {
        /// The table.
        table: String,
        /// The identity.
        identity: i64,
    },
    /// Waiting for a frontier took longer than allowed.
    #[error(
        "timed out after {waited_ms} ms waiting for `{table}` to reach time {frontier} \
         (last update seen: {seen:?})"
    )]
    FrontierTimeout {
        /// The table.
        table: String,
        /// The time awaited.
        frontier: i64,
        /// The last `last_update` seen (`None`: no row yet).
        seen: Option<i64>,
        /// How long we waited.
        waited_ms: u64,
    },
    /// An iteration at a time that a table has already recorded: applying
    /// it would apply a change twice (two processes given the same time, a
    /// batch fed again, or a pipelined ingest resumed without
    /// [`StateStore::recover`](crate::StateStore::recover)). Nothing was
    /// written.
    #[error(
        "time {time} was already applied to `{table}` (its last update is {recorded}); nothing \
         was written. Each time is applied once: take a new time (`graph.insert` does), and after \
         a pipelined ingest crashed call `store.recover()` before feeding its batches again"
    )]
    TimeAlreadyApplied {
        /// The table.
        table: String,
        /// The iteration's input time.
        time: i64,
        /// The table's recorded `last_update`.
        recorded: i64,
    },
    /// The store holds the state of another version of the query: states
    /// the query adds, changes or drops (`plan`). Opening it for writing
    /// refuses at once rather than wedge or serve a stale view; opening
    /// with `OpenOptions::migrate` carries the plan out.
    #[error(
        "the query changed since this store was written ({}); nothing was changed. Open it \
         with `OpenOptions::migrate()` to carry out this plan:\n{plan}",
        plan.summary()
    )]
    QueryChanged {
        /// What differs, state by state.
        plan: Box<crate::MigrationPlan>,
    },
    /// A migration that must compute state from an input the store does not
    /// keep (a transient input, or one whose row type changed).
    #[error(
        "cannot compute `{state}` from the stored inputs: input `{input}` is not kept by the \
         store ({why})"
    )]
    InputNotKept {
        /// The state to compute.
        state: String,
        /// The input.
        input: String,
        /// Why it is missing.
        why: String,
    },
    /// A migration that found an input it must read ahead of the store's
    /// other tables, with no way to rewind it: a pipelined iteration of the
    /// old query was interrupted half way. Nothing was changed.
    #[error(
        "cannot migrate: `{table}` is at time {at} while the store's other tables are at \
         {low} (a pipelined iteration of the old query was interrupted half way); run \
         `recover()` with the old query first; nothing was changed"
    )]
    InterruptedIteration {
        /// The table ahead of the others.
        table: String,
        /// Its time.
        at: i64,
        /// The others' (lowest) time.
        low: i64,
    },
    /// A retry of a failed batch that is no longer recorded (another
    /// process retried or forgot it first). Nothing was written.
    #[error(
        "no failed batch is recorded at time {input_time} (already retried or forgotten); \
         nothing was written"
    )]
    NoSuchFailure {
        /// The failed batch's input time.
        input_time: i64,
    },
    /// A value that a store cannot represent (e.g. a date outside years 0–9999 on SQLite).
    #[error("cannot store a key value in `{table}`: {detail}")]
    Unrepresentable {
        /// The table.
        table: String,
        /// What and why.
        detail: String,
    },
    /// Applying a change would take a stored weight out of the range of
    /// `i64`.
    #[error(
        "a weight in `{table}` would overflow i64 (identity {identity}); the iteration was \
         rolled back"
    )]
    WeightOverflow {
        /// The table.
        table: String,
        /// The row's identity (or value, for the memory store).
        identity: String,
    },
    /// A name that cannot be used for a table or column.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A feed consumer acknowledged a time it was never given: every
    /// change up to `time` would count as processed. Nothing was stored.
    #[error(
        "consumer `{consumer}` of `{feed}` acknowledged time {time}, after its position \
         {position}: acknowledge only times `poll` returned"
    )]
    AckAhead {
        /// The feed's path.
        feed: String,
        /// The consumer.
        consumer: String,
        /// The time acknowledged.
        time: i64,
        /// The last time delivered.
        position: i64,
    },
    /// The database or its driver failed.
    #[error("{context}: {source}")]
    Backend {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`] from a driver error and what we were doing.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}
