//! Linear operators (DBSP §4): they commute with `+`, so they apply to a
//! change as they would to a table (`Q^Δ = Q`) and keep no state.

use std::error::Error;

use graph::{GraphError, Scope, Stream};
use zset::{Data, ZSet, render_table};

/// `map`, `filter`, `map_many`, `neg`, `add` and debug taps.
pub trait Linear<'q, T: Data, S: Scope>: Sized {
    /// Applies `f` to every row; rows mapping to the same value add up.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (words, lengths)) = Graph::build(|q| {
    ///     let (input, words) = q.input::<String>("words")?;
    ///     Ok((input, q.output("lengths", words.map(|w| w.len() as i64))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let out = graph.insert(&mut store, &words, ["ab".to_string(), "cd".to_string(), "e".to_string()])?;
    /// assert_eq!(out.get(&lengths)?, &zset! { 2 => 2, 1 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn map<U: Data>(self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> Stream<'q, ZSet<U>, S>;

    /// Like [`map`](Self::map) for a function that can fail: an error fails
    /// the iteration with [`GraphError::User`] (and rolls it back).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, _out)) = Graph::build(|q| {
    ///     let (input, s) = q.input::<String>("numbers")?;
    ///     Ok((input, q.output("parsed", s.try_map(|s| s.parse::<i64>()))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// let err = graph.insert(&mut store, &input, ["x".to_string()]).unwrap_err();
    /// assert!(matches!(err, GraphError::User { .. }));
    /// # Ok::<(), GraphError>(())
    /// ```
    fn try_map<U: Data, E: Error + Send + Sync + 'static>(
        self,
        f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S>;

    /// The rows for which `keep` holds.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, evens)) = Graph::build(|q| {
    ///     let (input, n) = q.input::<i64>("n")?;
    ///     Ok((input, q.output("evens", n.filter(|x| x % 2 == 0))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [1, 2, 3, 4])?.get(&evens)?, &zset! { 2 => 1, 4 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn filter(self, keep: impl Fn(&T) -> bool + Send + Sync + 'static) -> Stream<'q, ZSet<T>, S>;

    /// A flat map: every result of `f(row)` with the row's weight.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, chars)) = Graph::build(|q| {
    ///     let (input, words) = q.input::<String>("words")?;
    ///     Ok((input, q.output("chars", words.map_many(|w| w.chars().collect::<Vec<_>>()))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, ["aab".to_string()])?.get(&chars)?, &zset! { 'a' => 2, 'b' => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn map_many<U: Data, I: IntoIterator<Item = U>>(
        self,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S>;

    /// Every weight negated: `-a`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("neg", a.neg())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [7])?.get(&out)?, &zset! { 7 => -1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn neg(self) -> Stream<'q, ZSet<T>, S>;

    /// `a + b`.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("doubled", a.add(a))?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [7])?.get(&out)?, &zset! { 7 => 2 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn add(self, other: Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<T>, S>;

    /// A debug tap: calls `f` with each iteration's value (rows as carried
    /// at run time: in a grouped scope, paired with their key) and passes the
    /// stream through unchanged.
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(0));
    /// let counter = Arc::clone(&seen);
    /// let (graph, (input, _out)) = Graph::build(move |q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     let tapped = a.inspect(move |z| *counter.lock().unwrap() += z.len());
    ///     Ok((input, q.output("tapped", tapped)?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// graph.insert(&mut store, &input, [1, 2])?;
    /// assert_eq!(*seen.lock().unwrap(), 2);
    /// # Ok::<(), GraphError>(())
    /// ```
    fn inspect(
        self,
        f: impl Fn(&ZSet<S::Row<T>>) + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S>;

    /// A debug tap printing the stream's path and each iteration's value as
    /// a table on standard output (the original's `identity_print`).
    ///
    /// ```
    /// use stepping_operators::prelude::*;
    /// let (graph, (input, out)) = Graph::build(|q| {
    ///     let (input, a) = q.input::<i64>("a")?;
    ///     Ok((input, q.output("printed", a.identity_print())?))
    /// })?;
    /// let mut store = store::Memory::new(&graph);
    /// assert_eq!(graph.insert(&mut store, &input, [1])?.get(&out)?, &zset! { 1 => 1 });
    /// # Ok::<(), GraphError>(())
    /// ```
    fn identity_print(self) -> Stream<'q, ZSet<T>, S>;
}

impl<'q, T: Data, S: Scope> Linear<'q, T, S> for Stream<'q, ZSet<T>, S> {
    #[track_caller]
    fn map<U: Data>(self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> Stream<'q, ZSet<U>, S> {
        self.apply("map", move |z| z.map(|row| S::map_row(row, &f)))
    }

    #[track_caller]
    fn try_map<U: Data, E: Error + Send + Sync + 'static>(
        self,
        f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S> {
        let path = self.path().suffixed(".try_map");
        self.try_apply("try_map", move |z| {
            let mut out = ZSet::with_capacity(z.len());
            for (row, w) in z.iter() {
                let u = f(S::value(row)).map_err(|e| GraphError::User {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                out.update(S::wrap(u, S::key(row)), w);
            }
            Ok(out)
        })
    }

    #[track_caller]
    fn filter(self, keep: impl Fn(&T) -> bool + Send + Sync + 'static) -> Stream<'q, ZSet<T>, S> {
        self.apply("filter", move |z| z.filter(|row| keep(S::value(row))))
    }

    #[track_caller]
    fn map_many<U: Data, I: IntoIterator<Item = U>>(
        self,
        f: impl Fn(&T) -> I + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<U>, S> {
        self.apply("map_many", move |z| {
            z.map_many(|row| {
                let key = S::key(row);
                f(S::value(row))
                    .into_iter()
                    .map(move |u| S::wrap(u, key.clone()))
            })
        })
    }

    #[track_caller]
    fn neg(self) -> Stream<'q, ZSet<T>, S> {
        self.apply("neg", |z| -z)
    }

    #[track_caller]
    fn add(self, other: Stream<'q, ZSet<T>, S>) -> Stream<'q, ZSet<T>, S> {
        self.raw_add(other)
    }

    #[track_caller]
    fn inspect(
        self,
        f: impl Fn(&ZSet<S::Row<T>>) + Send + Sync + 'static,
    ) -> Stream<'q, ZSet<T>, S> {
        self.apply("inspect", move |z| {
            f(z);
            z.clone()
        })
    }

    #[track_caller]
    fn identity_print(self) -> Stream<'q, ZSet<T>, S> {
        let path = self.path();
        self.inspect(move |z| println!("{path}\n{}", render_table(z.sorted())))
    }
}
