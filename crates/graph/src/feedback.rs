//! Feedback in outer time: a delay of a stream that is defined later in
//! the query (DBSP's `z⁻¹` in a loop at the top level, §3), built with a
//! forward reference that is connected once the stream exists.

use std::any::type_name;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

use zset::{Data, ZSet};

use crate::builder::check_name;
use crate::codec::ZSetCodec;
use crate::error::At;
use crate::vertex::{Op, Vertex, ZSetFns};
use crate::{GraphError, Path, Query, ScopeId, Stream, VertexId};

/// The forward end of a feedback loop: the stream that
/// [`Query::feedback`] delays, to be given with [`connect`](Self::connect)
/// once it is built. Dropping it unconnected makes building the query fail
/// with [`GraphError::UnconnectedFeedback`].
#[must_use = "a feedback must be connected to the stream it delays"]
pub struct Feedback<'q, T> {
    q: &'q Query,
    delay: VertexId,
    path: Path,
    at: At,
    connected: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Feedback<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Feedback({})", self.path)
    }
}

impl Query {
    /// A stream whose value at each iteration is the value, one iteration
    /// earlier, of a stream defined later: `delayed[t] = s[t − 1]` (empty at
    /// the first iteration), where `s` is given to the returned handle's
    /// [`connect`](Feedback::connect). This is `z⁻¹` closing a loop in
    /// outer time (DBSP §3): `s` may be computed from `delayed` itself, as
    /// in the original's hand-written recursion
    ///
    /// `delayed = z⁻¹(added)`, `added = z + map(z ⋈ delayed)`,
    ///
    /// where each iteration's `added` feeds the next. Unlike
    /// [`raw_recursive`](Stream::raw_recursive), which runs to a fixed point
    /// within one iteration, the loop goes round once per iteration.
    ///
    /// The delayed stream is named `name` (its integrals are stored under
    /// it); the delay keeps the previous value at `name/feedback`.
    ///
    /// A feedback lives at the top level of the query (outer time), so it
    /// is a method of [`Query`], not of a grouped or recursive scope: inside
    /// `per_group` every operator already runs per group on the group's own
    /// rows, and a loop within one iteration is what
    /// [`raw_recursive`](Stream::raw_recursive) is for. A stream of the
    /// loop may still be grouped and flattened between `delayed` and
    /// `connect`.
    ///
    /// # Errors
    /// An invalid or duplicate name.
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// // A running total: total = x + z⁻¹(total) (which finalization
    /// // recognizes as an integral).
    /// let (graph, _) = Graph::build(|q| {
    ///     let (input, x) = q.input::<i64>("x")?;
    ///     let (total, before) = q.feedback::<i64>("before")?;
    ///     let now = x.raw_add(before);
    ///     total.connect(now);
    ///     Ok((input, q.output("total", now)?))
    /// })?;
    /// assert!(graph.states().iter().any(|s| s.path().as_str() == "before/feedback"));
    /// // A feedback dropped unconnected fails the build.
    /// let err = Graph::build(|q| {
    ///     let _ = q.feedback::<i64>("loose")?;
    ///     Ok(())
    /// })
    /// .unwrap_err();
    /// assert!(matches!(err, GraphError::UnconnectedFeedback { .. }));
    /// # Ok::<(), GraphError>(())
    /// ```
    ///
    /// The loop of the original's recursion, run over several iterations,
    /// is in the `stepping-operators` crate's documentation.
    #[track_caller]
    pub fn feedback<T: Data>(
        &self,
        name: &str,
    ) -> Result<(Feedback<'_, T>, Stream<'_, ZSet<T>>), GraphError> {
        let at = At(Location::caller());
        check_name(name, at)?;
        let path = self.named_path(name);
        self.claim(&path, at)?;
        let state = self.declare(
            path.child("feedback"),
            Arc::new(ZSetCodec::<T>::new(false, Vec::new())),
            at,
            false,
        );
        // Its input is set by `connect`: until then it is a delay of nothing.
        let delay = self.push_vertex(Vertex {
            path: path.clone(),
            label: "feedback",
            inputs: Vec::new(),
            op: Op::Delay(state),
            scope: ScopeId(0),
            ty: type_name::<ZSet<T>>(),
            fns: Some(ZSetFns::of::<T>()),
            at,
            states: Vec::new(),
        });
        let handle = Feedback {
            q: self,
            delay,
            path,
            at,
            connected: false,
            _t: PhantomData,
        };
        Ok((handle, Stream::from_parts(self, delay, ScopeId(0))))
    }
}

impl<'q, T: Data> Feedback<'q, T> {
    /// Closes the loop: the feedback stream is `stream` delayed by one
    /// iteration. A stream of another query is reported when building ends.
    #[track_caller]
    pub fn connect(mut self, stream: Stream<'q, ZSet<T>>) {
        self.connected = true;
        if !std::ptr::eq(self.q, stream.query()) {
            self.q.record_error(GraphError::ForeignHandle {
                at: At(Location::caller()),
            });
            return;
        }
        self.q.b.borrow_mut().vertices[self.delay.ix()].inputs = vec![stream.id()];
    }

    /// The feedback stream's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<T> Drop for Feedback<'_, T> {
    fn drop(&mut self) {
        if !self.connected {
            self.q.record_error(GraphError::UnconnectedFeedback {
                path: self.path.clone(),
                at: self.at,
            });
        }
    }
}
