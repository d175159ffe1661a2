//! The query graph of stepping-rs: a typed builder producing a [`Graph`] of
//! vertices keyed by stable [`Path`]s, the graph transforms that run when a
//! query is finalized, the state interface stores implement
//! ([`StateStore`]), and the executor that runs one *iteration* (DBSP §3:
//! one step of the circuit: input changes in, output changes out, delay
//! state advanced).
//!
//! This is the middle layer: it depends only on `zset`; the relational
//! operators live in `operators`, the stores in `store`. Start with
//! [`Graph::build`], [`Stream`] and [`StateStore`].
//!
//! ```
//! use stepping_graph::{Graph, GraphError};
//! // A query: one input, its integral kept as a cache any process can read.
//! let (graph, (input, cache)) = Graph::build(|q| {
//!     let (input, numbers) = q.input::<i64>("numbers")?;
//!     Ok((input, q.cache("all_numbers", numbers, &[])?))
//! })?;
//! assert_eq!(input.path().as_str(), "numbers");
//! assert_eq!(cache.spec().path().as_str(), "all_numbers");
//! // Its states, by stable path, and a picture of it.
//! assert!(graph.states().iter().any(|s| s.path().as_str() == "all_numbers"));
//! assert!(graph.to_dot().contains("numbers"));
//! # Ok::<(), GraphError>(())
//! ```
//!
//! ## How state works
//!
//! Every `z⁻¹` (delay) keeps its previous value in a store. The builder
//! writes an integral the way the paper does, `I = a + z⁻¹(I)`, and
//! finalization fuses that loop into one `integrate` vertex whose store
//! operation is "apply this delta". Operators that need stored state (joins,
//! distinct, aggregates) read it lazily through [`Ctx`]: only the keys
//! present in the other side's change, through an index.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod builder;
mod codec;
mod columns;
mod definition;
mod dot;
mod error;
mod exec;
mod feed;
mod feedback;
mod graph;
mod input_migration;
mod limits;
mod memtable;
mod names;
mod path;
mod plan;
mod profile;
mod rename;
mod scope;
mod sink;
mod state;
mod stream_fn;
mod svg;
mod time;
mod transform;
mod vertex;

pub use builder::{AsDynIndex, Cache, Input, Output, Query, RecScope, Scalar, Stream, VertexDef};
pub use codec::{
    DynIndex, IndexTree, KeyedCodec, KeyedDelta, PrefixIndex, ScanItem, Stepped, ZSetCodec,
    identity_of,
};
pub use columns::{Cell, MAX_COLUMN_NAME, RowColumns, ValueColumn, ValueType, to_json};
pub use error::{At, BoxError, GraphError, StoreError};
pub use exec::{Ctx, Handle, panic_message, scalar_of};
pub use feed::{
    Consumer, FEED_TIME_INDEX, Feed, FeedRetention, FeedRow, FeedStore, MAX_CONSUMER_NAME,
};
pub use feedback::Feedback;
pub use graph::{Changes, Graph, Outputs};
pub use input_migration::InputMigration;
pub use limits::{KEY_YEARS, MAX_KEY_BYTES, index_needs_check, key_fits, key_problem};
pub use names::{
    MAX_IDENT, MAX_TABLE_PREFIX, index_idents, negative_index_ident, sql_ident, table_ident,
    view_ident,
};
pub use path::Path;
pub use plan::{MigrationPlan, PlanAction, PlanEntry};
pub use profile::{Profile, StateSize, StateSizes, VertexProfile};
pub use scope::{FlatScope, Grouped, Rec, Root, Scope};
pub use state::{
    Codec, EncodedRow, FailedBatch, MemTable, Read, Rewound, StateId, StateKind, StateSpec,
    StateStore, StateTx, StoredRow,
};
pub use stream_fn::{StreamFn, stream_fn};
pub use time::Time;
pub use vertex::{OpFn, ScopeId, Slot, Value, VertexId, ZSetFns};
