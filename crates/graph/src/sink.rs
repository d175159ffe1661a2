//! Sinks: vertices kept running although no output reads them, for
//! operators whose work is what they write to state.

use zset::{Data, ZSet};

use crate::{Scope, Stream};

impl<'q, T: Data, S: Scope> Stream<'q, ZSet<T>, S> {
    /// Keeps this stream's vertex running every iteration even if no output
    /// or cache depends on it (finalization drops such vertices otherwise):
    /// for an operator whose effect is its writes to state through
    /// [`Ctx::write`](crate::Ctx::write), such as a retention bound
    /// removing old rows from an integral. Its value is not used.
    ///
    /// ```
    /// # use stepping_graph::{Graph, GraphError};
    /// let (graph, input) = Graph::build(|q| {
    ///     let (input, x) = q.input::<i64>("x")?;
    ///     x.apply("side_effect", |z| z.clone()).raw_sink();
    ///     Ok(input)
    /// })?;
    /// assert!(graph.vertices().iter().any(|(_, op)| *op == "side_effect"));
    /// # Ok::<(), GraphError>(())
    /// ```
    pub fn raw_sink(self) {
        self.query().b.borrow_mut().sinks.push(self.id());
    }
}
