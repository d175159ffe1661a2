//! The state interface: what the engine asks of a store.
//!
//! Every stateful vertex keeps its state in one *state table*, described by
//! a [`StateSpec`] (its path, kind, value type and indexes). The engine
//! never asks for a whole table unless an operator truly needs it: it reads
//! rows by index key ([`Read::ByIndex`]), by value ([`Read::ByValues`]) or the
//! first rows in index order ([`Read::FirstByIndex`]), and it writes
//! *deltas* ([`StateTx::apply`]): "add these weights", never "here is the new
//! value". A SQL store can therefore serve each read with an indexed query
//! and each write with an upsert of the changed rows only.
//!
//! Values cross this interface type-erased (`&dyn Any`); each state's
//! [`Codec`], built by typed code when the query was built, knows the real
//! types. A store either keeps typed tables ([`Codec::new_table`]) or bytes
//! ([`Codec::encode_delta`], [`Codec::decode`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use zset::{IndexSpec, KeyValue, Weight};

use crate::{Path, StoreError, Time};

/// Identifies a state of a finalized graph (its position in
/// [`Graph::states`](crate::Graph::states)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

impl StateId {
    /// The position in the graph's state list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a state's rows are identified and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A Z-set: one row per value, identity = hash of the value's bytes;
    /// writes add weights (rows reaching zero are deleted).
    ZSet,
    /// One row per key, identity = hash of the key's bytes; writes replace
    /// or delete the row of a key (aggregates per group, scalars).
    Keyed,
    /// A Z-set with an inner time (`step`) per row, for recursion; the
    /// primary key is `(identity, step)`.
    Nested,
}

impl StateKind {
    /// `zset`, `keyed` or `nested`.
    pub fn name(self) -> &'static str {
        match self {
            StateKind::ZSet => "zset",
            StateKind::Keyed => "keyed",
            StateKind::Nested => "nested",
        }
    }
}

/// Everything a store needs to know about one state table.
#[derive(Clone)]
pub struct StateSpec {
    pub(crate) path: Path,
    pub(crate) codec: Arc<dyn Codec>,
    /// Set when the graph is finalized (see [`definition`](Self::definition)).
    pub(crate) definition: Arc<std::sync::OnceLock<String>>,
    /// The path and definition the store's older query gave this state,
    /// when the query renamed something upstream of it (or it); set at
    /// finalization.
    pub(crate) before: Arc<std::sync::OnceLock<(Path, String)>>,
}

impl StateSpec {
    /// A spec for the state at `path`, typed by `codec`.
    pub fn new(path: Path, codec: Arc<dyn Codec>) -> Self {
        StateSpec {
            path,
            codec,
            definition: Arc::default(),
            before: Arc::default(),
        }
    }

    /// A fingerprint of everything that produces this state: its shape and
    /// path, and every vertex upstream of it (operators, paths, row types,
    /// indexes, user [`version`](crate::Stream::version)s). Two queries
    /// whose states have the same definition hold the same rows for the
    /// same inputs (unless a closure changed without a version bump).
    /// Empty for a spec not (yet) part of a finalized graph.
    pub fn definition(&self) -> &str {
        self.definition.get().map_or("", String::as_str)
    }

    /// The path and definition this state had under the names the store's
    /// older query used, if the query renamed anything upstream of it (see
    /// [`Query::renamed`](crate::Query::renamed)): how a store recognizes
    /// a state it holds under an old name, or computed from something
    /// renamed since.
    pub fn before_renames(&self) -> Option<(&Path, &str)> {
        self.before.get().map(|(p, d)| (p, d.as_str()))
    }

    pub(crate) fn definition_cell(&self) -> Arc<std::sync::OnceLock<String>> {
        Arc::clone(&self.definition)
    }

    /// The state's stable path; SQL stores name its table from it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Z-set, keyed or nested.
    pub fn kind(&self) -> StateKind {
        self.codec.kind()
    }

    /// The Rust type of a row.
    pub fn value_type(&self) -> &'static str {
        self.codec.value_type()
    }

    /// The indexes, in the order of [`EncodedRow::keys`].
    pub fn indexes(&self) -> &[IndexSpec] {
        self.codec.indexes()
    }

    /// The typed operations on this state's rows.
    pub fn codec(&self) -> &dyn Codec {
        &*self.codec
    }

    /// The position of `index` among [`indexes`](Self::indexes).
    pub fn index_position(&self, index: &IndexSpec) -> Option<usize> {
        self.indexes().iter().position(|i| i == index)
    }

    /// A canonical one-line description of what the table holds: kind, row
    /// type and indexes. Stores record it and refuse to attach a table whose
    /// recorded shape differs.
    /// A cache's shape includes its value columns
    /// ([`Codec::columns`]): a row type whose fields change is another
    /// shape.
    pub fn shape(&self) -> String {
        shape_of(self.codec())
    }
}

/// [`StateSpec::shape`] of a state with `codec`.
pub(crate) fn shape_of(codec: &dyn Codec) -> String {
    let mut s = format!("{} {}", codec.kind().name(), codec.value_type());
    for ix in codec.indexes() {
        s.push_str(&format!(" | {ix}"));
    }
    if let Some(columns) = codec.columns() {
        s.push_str(&format!(" | columns ({})", columns.describe()));
    }
    s
}

impl fmt::Debug for StateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateSpec({}: {})", self.path, self.shape())
    }
}

/// A row as read from a state: the value, its weight and (for nested
/// states) its inner step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow<R> {
    /// The value.
    pub value: R,
    /// Its weight (keyed states: always 1).
    pub weight: Weight,
    /// The inner step (0 except in nested states).
    pub step: u32,
}

/// One row of a delta, encoded for a SQL store (serializable, so a store
/// can keep rows aside, e.g. in an undo log).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodedRow {
    /// The row's identity: a hash of the value's (keyed: the key's) postcard bytes.
    pub identity: i64,
    /// The value's postcard bytes.
    pub data: Vec<u8>,
    /// The values of every index's key columns, index after index.
    pub keys: Vec<KeyValue>,
    /// Z-set and nested: the weight to add. Keyed: 1 to upsert, 0 to delete.
    pub weight: Weight,
    /// The inner step (nested states).
    pub step: u32,
    /// A cache's value columns ([`Codec::columns`]), one cell each; empty
    /// for other states. Not kept with the row (an undo log): a store
    /// that needs them again computes them from `data`
    /// ([`Codec::value_cells`]).
    #[serde(skip)]
    pub columns: Vec<crate::Cell>,
}

/// What to read from a state.
///
/// The erased arguments are slices of the types the state's codec expects:
/// `keys` a `[K]` of that index's key type, `values` a `[R]` of row values,
/// `prefix` a `[P]` of a [`PrefixIndex`](crate::PrefixIndex)'s prefix type.
#[derive(Clone, Copy)]
pub enum Read<'a> {
    /// Every row.
    All,
    /// The rows whose key under index number `index` is one of `keys`.
    ByIndex {
        /// Position in [`StateSpec::indexes`].
        index: usize,
        /// A `&[K]`.
        keys: &'a dyn Any,
    },
    /// The rows with these values (all steps, for nested states).
    ByValues {
        /// A `&[R]`.
        values: &'a dyn Any,
    },
    /// For each prefix (or the whole table when `prefixes` is `None`), the
    /// first `limit` rows of positive weight in index order, plus every
    /// further positive row whose key equals the last one's (so ties can be
    /// broken exactly by the caller).
    FirstByIndex {
        /// Position in [`StateSpec::indexes`].
        index: usize,
        /// A `&[P]`, or `None` for the whole table.
        prefixes: Option<&'a dyn Any>,
        /// How many rows of positive weight.
        limit: usize,
    },
}

impl fmt::Debug for Read<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Read::All => f.write_str("All"),
            Read::ByIndex { index, .. } => write!(f, "ByIndex({index})"),
            Read::ByValues { .. } => f.write_str("ByValues"),
            Read::FirstByIndex { index, limit, .. } => write!(f, "FirstByIndex({index}, {limit})"),
        }
    }
}

/// The typed operations on one state's rows, behind an erased interface.
///
/// Built by typed code when the query is built (see [`ZSetCodec`](crate::ZSetCodec),
/// [`KeyedCodec`](crate::KeyedCodec)); stores use it to keep typed tables in
/// memory or to encode and decode rows as bytes.
pub trait Codec: Send + Sync + 'static {
    /// Z-set, keyed or nested.
    fn kind(&self) -> StateKind;
    /// The Rust type of a row.
    fn value_type(&self) -> &'static str;
    /// The indexes.
    fn indexes(&self) -> &[IndexSpec];
    /// A new, empty typed in-memory table for this state.
    fn new_table(&self) -> Box<dyn MemTable>;
    /// Appends the rows of `delta` (the engine's delta for this state) encoded.
    ///
    /// # Errors
    /// A value that cannot be serialized.
    fn encode_delta(&self, delta: &dyn Any, out: &mut Vec<EncodedRow>) -> Result<(), StoreError>;
    /// Checks that every store can hold the rows of `delta` (the engine's
    /// delta for this state): the text, bytes, date and timestamp parts of
    /// their index keys (see [`key_problem`](crate::key_problem)). `Err`
    /// says which key and why. The engine calls it before a store is given
    /// a delta, so that every store refuses the same values; codecs whose
    /// indexes have no such parts check nothing. By default, nothing.
    ///
    /// # Errors
    /// The first key that some store could not hold.
    fn check_delta(&self, _delta: &dyn Any) -> Result<(), String> {
        Ok(())
    }
    /// Runs every index's key function on every row of `delta` (the
    /// engine's delta for this state) that [`check_delta`](Self::check_delta),
    /// which the engine calls first, did not run, dropping the keys: a
    /// store that applies deltas only when it commits (memory) calls it
    /// when it is given a delta, so that a key function that panics fails
    /// the iteration before any table changes. By default, nothing.
    fn compute_keys(&self, _delta: &dyn Any) {}
    /// How many rows `delta` (the engine's delta for this state) writes,
    /// for profiles. By default, 0.
    fn delta_rows(&self, _delta: &dyn Any) -> usize {
        0
    }
    /// An empty sink for [`decode`](Self::decode) of any kind of state (a
    /// `Vec<StoredRow<R>>`), for code that counts a state's rows without
    /// knowing their type ([`StateStore::state_rows`]).
    fn any_rows_sink(&self) -> Box<dyn Any + Send + Sync>;
    /// How many rows a sink from [`any_rows_sink`](Self::any_rows_sink) holds.
    fn sink_len(&self, sink: &dyn Any) -> usize;
    /// The column values of each key in `keys` (a `&[K]` of index `index`).
    fn key_values(&self, index: usize, keys: &dyn Any) -> Vec<Vec<KeyValue>>;
    /// The column values of each prefix in `prefixes` (a `&[P]` of index
    /// `index`, which must be a prefix index).
    fn prefix_values(&self, index: usize, prefixes: &dyn Any) -> Vec<Vec<KeyValue>>;
    /// How many leading columns of index `index` form its prefix.
    fn prefix_columns(&self, index: usize) -> usize;
    /// The identity of each value in `values` (a `&[R]`) with the values of
    /// every index's key columns, as [`EncodedRow::keys`] holds them: where
    /// a SQL store finds the row of a value.
    fn locate(&self, values: &dyn Any) -> Vec<(i64, Vec<KeyValue>)>;
    /// Decodes a stored row's `data` and gives what its other columns must
    /// hold: its identity and every index's key column values (as
    /// [`locate`](Self::locate) does for a value). How a store tells bytes
    /// that are no row (`Err`, saying why) from a well-formed value, and
    /// checks a row's columns against its data.
    ///
    /// # Errors
    /// The bytes are not a row of this state's type.
    fn locate_data(&self, data: &[u8]) -> Result<(i64, Vec<KeyValue>), String>;
    /// Decodes one stored row and pushes it onto `sink` (a `Vec<StoredRow<R>>`).
    ///
    /// # Errors
    /// A message saying why the bytes are not a row of this type.
    fn decode(
        &self,
        data: &[u8],
        weight: Weight,
        step: u32,
        sink: &mut dyn Any,
    ) -> Result<(), String>;
    /// This codec with the union of its indexes and `other`'s (which must be
    /// a codec for the same row type): how two delays holding the same
    /// integral become one state.
    fn merged(&self, other: &dyn Codec) -> Option<Arc<dyn Codec>>;
    /// For downcasting in [`merged`](Self::merged).
    fn as_any(&self) -> &dyn Any;
    /// A stored row's `data` shown as its value (`Debug`), for reports
    /// such as a store's `verify`; bytes that are no row say so.
    fn show(&self, data: &[u8]) -> String {
        format!("<{} bytes>", data.len())
    }
    /// The typed value columns a SQL store keeps beside each row's bytes,
    /// so that plain SQL can read the rows: a cache's
    /// ([`ZSetCodec::with_columns`](crate::ZSetCodec::with_columns));
    /// `None` (the default) for states kept opaque.
    fn columns(&self) -> Option<&crate::RowColumns> {
        None
    }
    /// Appends the cells of the row whose bytes are `data`, one per
    /// [`columns`](Self::columns) column (nothing for a state without
    /// them): what [`EncodedRow::columns`] held, for rows read back from
    /// an undo log.
    ///
    /// # Errors
    /// The bytes are not a row of this state's type.
    fn value_cells(&self, _data: &[u8], _out: &mut Vec<crate::Cell>) -> Result<(), String> {
        Ok(())
    }
    /// An empty sink for [`decode`](Self::decode) (a `Vec<StoredRow<R>>`),
    /// for code that reads a state without knowing its row type (a
    /// migration reading the kept inputs). `None` for states that are not
    /// plain Z-sets.
    fn rows_sink(&self) -> Option<Box<dyn Any + Send + Sync>> {
        None
    }
    /// The rows of a [`rows_sink`](Self::rows_sink) as a `ZSet<R>`.
    fn sink_to_zset(&self, _sink: Box<dyn Any + Send + Sync>) -> Option<crate::Value> {
        None
    }
}

/// A typed in-memory state table (the memory store's tables, and the shape
/// of any cache a SQL store keeps).
pub trait MemTable: Send + Sync {
    /// Pushes the rows selected by `read` onto `sink` (a `Vec<StoredRow<R>>`).
    ///
    /// # Errors
    /// Arguments of the wrong type for this table.
    fn read(&self, read: &Read<'_>, sink: &mut dyn Any) -> Result<(), StoreError>;
    /// Calls `visit` with each row selected by `read` (an `&R`, erased)
    /// and its weight, lent rather than copied out; `false` (having
    /// visited nothing) for a read this table does not lend rows for, which
    /// the caller then makes with [`read`](Self::read). By default, none.
    ///
    /// # Errors
    /// Arguments of the wrong type for this table.
    fn visit(
        &self,
        _read: &Read<'_>,
        _visit: &mut dyn FnMut(&dyn Any, Weight),
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Applies a delta produced by the engine for this state, taking its
    /// rows: a new row is moved into the table, not copied.
    ///
    /// # Errors
    /// A delta of the wrong type for this table.
    fn apply(&mut self, delta: crate::Value) -> Result<(), StoreError>;
    /// Checks that [`apply`](Self::apply)ing `delta` keeps every weight
    /// within `i64` (so a store can check every table of an iteration
    /// before changing any); `Err` describes the first row that would
    /// overflow.
    fn check(&self, _delta: &dyn Any) -> Result<(), String> {
        Ok(())
    }
    /// How many rows.
    fn len(&self) -> usize;
    /// Whether the table has no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The largest inner step stored (nested states).
    fn max_step(&self) -> Option<u32>;
    /// The whole table as the deltas that write it into an empty one (what
    /// the engine hands [`StateTx::apply`] for this state: one Z-set, one
    /// keyed delta, or one delta per inner step): how a migration copies a
    /// state it computed in memory into a store.
    fn contents(&self) -> Vec<crate::Value>;
}

/// A batch whose iteration failed, as a store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedBatch {
    /// The batch's input time.
    pub input_time: i64,
    /// Its position in its ingest (or any number the caller chose).
    pub batch: i64,
    /// Its changes, [`Changes::encode`](crate::Changes::encode)d; empty
    /// when the store never had them (a time taken from a shared sequence
    /// by a process that died before running it, released by the
    /// iterations waiting behind it).
    pub changes: Vec<u8>,
    /// What went wrong.
    pub error: String,
    /// Tables that had already committed the batch's changes when it
    /// failed (only with `flush_every_set = Some(true)`): its state is then
    /// partially applied, and re-running it would apply those tables twice.
    pub committed: Vec<String>,
}

/// A store: where the state of a graph lives between iterations.
///
/// Implemented by `store::Memory`, `store::Sqlite` and `store::Postgres`.
pub trait StateStore {
    /// The fingerprint of the graph this store was opened for
    /// ([`Graph::fingerprint`](crate::Graph::fingerprint)).
    fn fingerprint(&self) -> &str;

    /// Starts one iteration at `time`. Dropping the returned transaction
    /// without [`StateTx::commit`] rolls it back.
    ///
    /// # Errors
    /// The store cannot start a transaction.
    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError>;

    /// The next input time for an iteration that was not given one: one
    /// more than the largest time recorded by any table.
    ///
    /// # Errors
    /// The store cannot be read.
    fn next_time(&mut self) -> Result<i64, StoreError>;

    /// Starts one iteration after every committed one: at
    /// `Time::new(t, t - 1)` with `t` the [`next_time`](Self::next_time).
    /// A store may find `t` inside the iteration's own transaction instead
    /// of asking for it first (Postgres saves a round trip so).
    ///
    /// # Errors
    /// As for [`begin`](Self::begin) and [`next_time`](Self::next_time).
    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        let t = self.next_time()?;
        self.begin(Time::new(t, t - 1))
    }

    /// The last input time committed to every table (the smallest
    /// `last_update`; 0 for a new store): every iteration up to it is fully
    /// applied, so after a crash an ingest resumes with the batches after
    /// it. (With `flush_every_set = Some(true)` some tables may also hold
    /// later iterations; [`next_time`](Self::next_time) is past all of them.)
    ///
    /// # Errors
    /// The store cannot be read.
    fn last_time(&mut self) -> Result<i64, StoreError>;

    /// Reads committed rows of the state described by `spec` (which need
    /// not belong to the graph the store was opened for, e.g. a cache read
    /// from another service), pushing them onto `sink`.
    ///
    /// # Errors
    /// No such state in this store, a shape mismatch, or a read failure.
    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError>;

    /// Records that the iteration at `time` failed (its transaction having
    /// been rolled back), and moves every table's `last_update` to
    /// `time.input_time` so that the batches after it proceed: a failed
    /// batch never wedges the ones that follow. It first waits for the
    /// frontier, like the iteration would have.
    ///
    /// # Errors
    /// A frontier timeout (then nothing is recorded) or a write failure.
    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError>;

    /// The failed batches recorded and not yet forgotten, by input time.
    ///
    /// # Errors
    /// A read failure.
    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError>;

    /// Forgets the failed batch recorded at `input_time` (after a retry).
    ///
    /// # Errors
    /// A write failure.
    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError>;

    /// Starts an all-or-nothing iteration that re-runs the failed batch
    /// recorded at `failed_input_time`, at `time` (e.g. from a shared time
    /// source) or, when `None`, after every committed one (as
    /// [`begin_next`](Self::begin_next)): its commit forgets that record in
    /// the same transaction, so a crash leaves either the batch unapplied
    /// and still recorded, or applied and forgotten, and two retries of one
    /// record never both apply.
    ///
    /// # Errors
    /// As for [`begin`](Self::begin) or [`begin_next`](Self::begin_next);
    /// the commit fails with [`StoreError::NoSuchFailure`] (writing
    /// nothing) if the record is gone.
    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError>;

    /// After a crash of a pipelined ingest (`flush_every_set = Some(true)`),
    /// some tables may hold iterations that others do not. This rewinds
    /// every table to [`last_time`](Self::last_time), undoing what those
    /// unfinished iterations wrote (each pipelined write keeps what undoes
    /// it until its iteration has reached every table), in one transaction,
    /// so that feeding the batches after `last_time` again gives the result
    /// of an ingest that never stopped. It changes nothing when every table
    /// is at the same time (always so after all-or-nothing iterations).
    ///
    /// Call it only while no other process ingests into the store: it
    /// cannot tell an unfinished iteration whose worker died from one still
    /// running.
    ///
    /// # Errors
    /// A read or write failure (then nothing changed).
    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError>;

    /// How many rows the store keeps for the state described by `spec`
    /// (committed ones; a nested state's rows at every inner step): the
    /// size of its table. By default every row is read and counted; stores
    /// that can count without reading (a SQL `count(*)`, a table's length)
    /// do so.
    ///
    /// # Errors
    /// As for [`read_committed`](Self::read_committed).
    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        let mut sink = spec.codec().any_rows_sink();
        self.read_committed(spec, &Read::All, &mut *sink)?;
        Ok(spec.codec().sink_len(&*sink) as u64)
    }
}

/// A table that [`StateStore::recover`] moved back in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewound {
    /// The table (the state's path on the memory store).
    pub table: String,
    /// Its time before.
    pub from: i64,
    /// Its time after: the store's [`last_time`](StateStore::last_time).
    pub to: i64,
}

/// One iteration's access to a store. It waits for the iteration's frontier
/// before it first touches a table, and records `last_update = input_time`
/// for every table it commits.
pub trait StateTx {
    /// Pushes rows of `state` selected by `read` onto `sink`: the committed
    /// rows, never this transaction's own pending writes to that state.
    ///
    /// # Errors
    /// A timeout waiting for the frontier, a read failure, a corrupt row.
    fn read(
        &mut self,
        state: StateId,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError>;

    /// As [`read`](Self::read), but lending each row to `visit` (an `&R`,
    /// erased, and its weight) where the store keeps rows typed in memory,
    /// so that none is copied; `false`, having visited nothing, where it
    /// does not (the caller reads instead). By default, `false`.
    ///
    /// # Errors
    /// As for [`read`](Self::read).
    fn visit(
        &mut self,
        _state: StateId,
        _read: &Read<'_>,
        _visit: &mut dyn FnMut(&dyn Any, Weight),
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The largest inner step stored in a nested `state`.
    ///
    /// # Errors
    /// As for [`read`](Self::read).
    fn max_step(&mut self, state: StateId) -> Result<Option<u32>, StoreError>;
    /// The iteration's time (a store that finds it in its transaction,
    /// Postgres after every committed iteration, finds it now).
    ///
    /// # Errors
    /// A store failure finding it.
    fn time(&mut self) -> Result<Time, StoreError>;

    /// The name under which the store keeps `state` (its SQL table), for
    /// errors; `None`: its path names it.
    fn table_name(&self, _state: StateId) -> Option<String> {
        None
    }

    /// Applies `delta` (typed for `state`'s codec). Called after every read
    /// of `state` in this iteration: once for an integral or a delay, once
    /// per inner step for nested states, once per operator write.
    ///
    /// # Errors
    /// A write failure, an identity collision.
    fn apply(&mut self, state: StateId, delta: crate::Value) -> Result<(), StoreError>;

    /// With `flush_every_set = Some(true)`: commits `state`'s writes now and
    /// records its `last_update`. Otherwise nothing.
    ///
    /// # Errors
    /// A commit failure.
    fn flush(&mut self, state: StateId) -> Result<(), StoreError>;

    /// Commits every write and records `last_update = input_time` for every
    /// table (also those this iteration did not change, so that the
    /// frontier moves on). With `flush_every_set = None`, rolls back instead.
    ///
    /// # Errors
    /// A commit failure (then nothing is committed, unless tables were
    /// already flushed one by one).
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A boxed store is a store (e.g. `Box<dyn StateStore>` chosen at run time).
impl<S: StateStore + ?Sized> StateStore for Box<S> {
    fn fingerprint(&self) -> &str {
        (**self).fingerprint()
    }
    fn begin(&mut self, time: Time) -> Result<Box<dyn StateTx + '_>, StoreError> {
        (**self).begin(time)
    }
    fn next_time(&mut self) -> Result<i64, StoreError> {
        (**self).next_time()
    }
    fn begin_next(&mut self) -> Result<Box<dyn StateTx + '_>, StoreError> {
        (**self).begin_next()
    }
    fn last_time(&mut self) -> Result<i64, StoreError> {
        (**self).last_time()
    }
    fn read_committed(
        &mut self,
        spec: &StateSpec,
        read: &Read<'_>,
        sink: &mut dyn Any,
    ) -> Result<(), StoreError> {
        (**self).read_committed(spec, read, sink)
    }
    fn record_failure(
        &mut self,
        time: Time,
        batch: i64,
        changes: &[u8],
        error: &str,
    ) -> Result<FailedBatch, StoreError> {
        (**self).record_failure(time, batch, changes, error)
    }
    fn failed_batches(&mut self) -> Result<Vec<FailedBatch>, StoreError> {
        (**self).failed_batches()
    }
    fn forget_failure(&mut self, input_time: i64) -> Result<(), StoreError> {
        (**self).forget_failure(input_time)
    }
    fn begin_retry(
        &mut self,
        failed_input_time: i64,
        time: Option<Time>,
    ) -> Result<Box<dyn StateTx + '_>, StoreError> {
        (**self).begin_retry(failed_input_time, time)
    }
    fn recover(&mut self) -> Result<Vec<Rewound>, StoreError> {
        (**self).recover()
    }
    fn state_rows(&mut self, spec: &StateSpec) -> Result<u64, StoreError> {
        (**self).state_rows(spec)
    }
}
