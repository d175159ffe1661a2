//! Sub-queries as values, without higher-ranked signatures.
//!
//! A [`Stream`] borrows the query it belongs to (`Stream<'q, ..>`), so a
//! function that works on the streams of *any* query is higher-ranked:
//! `for<'q> Fn(Stream<'q, ZSet<T>>) -> Stream<'q, ZSet<U>>`. [`StreamFn`]
//! names that bound once, and [`stream_fn`] gives a closure kept in a `let`
//! that signature (a closure's own inferred signature would tie the result
//! to one borrow).

use zset::ZSet;

use crate::{Root, Stream};

/// A sub-query from a stream of `ZSet<T>` to a stream of `ZSet<U>` (in scope
/// `S`, by default the root) of the same query, whichever query that is:
/// the bound for a helper that takes a sub-query, in place of
/// `for<'q> Fn(Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<U>, S>`.
/// Implemented by every closure and `fn` of that shape.
///
/// ```
/// use stepping_graph::{Graph, GraphError, StreamFn};
/// // A helper that builds a query around any sub-query of i64s.
/// fn around(f: impl StreamFn<i64, i64>) -> Result<Graph, GraphError> {
///     let (graph, _) = Graph::build(|q| {
///         let (_input, n) = q.input::<i64>("n")?;
///         q.output("out", f(n))
///     })?;
///     Ok(graph)
/// }
/// // A closure needs no annotation: the bound gives its signature.
/// around(|s| s.apply("same", |z| z.clone()))?;
/// // Sub-queries can be kept, boxed, as values.
/// let steps: Vec<Box<dyn StreamFn<i64, i64>>> = vec![Box::new(|s| s.apply("copy", |z| z.clone()))];
/// around(&*steps[0])?;
/// # Ok::<(), GraphError>(())
/// ```
pub trait StreamFn<T, U, S = Root>:
    for<'q> Fn(Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<U>, S>
{
}

impl<T, U, S, F> StreamFn<T, U, S> for F where
    F: for<'q> Fn(Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<U>, S>
{
}

/// `f`, as a [`StreamFn`]: how to keep a sub-query closure in a `let`
/// (without it, the closure's inferred signature ties its result to one
/// borrow of one query, and using it fails with "lifetime may not live
/// long enough").
///
/// ```
/// use stepping_graph::{Graph, GraphError, Stream, stream_fn};
/// use zset::ZSet; // the stepping-zset crate
/// let copy = stream_fn(|s: Stream<ZSet<i64>>| s.apply("copy", |z| z.clone()));
/// let (_graph, _out) = Graph::build(|q| {
///     let (_input, n) = q.input::<i64>("n")?;
///     q.output("out", copy(copy(n)))
/// })?;
/// # Ok::<(), GraphError>(())
/// ```
pub fn stream_fn<T, U, S, F>(f: F) -> F
where
    F: for<'q> Fn(Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<U>, S>,
{
    f
}
